//! The IPVS table as ipvsadm sees it: what commands carry and what listings show.
//!
//! These types are the control API's vocabulary (they serialise to JSON) and mirror the
//! fields the kernel's IPVS netlink family exchanges with ipvsadm, so that every ipvsadm
//! command and listing can be expressed without loss.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// Tunnel settings (`--tun-type`, `--tun-port`, `--tun-[no|rem]csum`), shared with the
/// data plane and the configuration.
pub use keeplb_balancer::{Tunnel, TunnelChecksum, TunnelType};

/// Transport protocol of a virtual service (`-t`, `-u`, `--sctp-service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `-t`, `--tcp-service`.
    Tcp,
    /// `-u`, `--udp-service`.
    Udp,
    /// `--sctp-service`.
    Sctp,
}

impl Protocol {
    /// The name ipvsadm prints in listings (`TCP`, `UDP`, `SCTP`).
    pub fn listing_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The option ipvsadm writes in `-S` rules.
    pub fn option(self) -> &'static str {
        match self {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            Protocol::Sctp => "--sctp-service",
        }
    }

    /// The protocol column of /etc/services.
    pub fn services_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// IANA protocol number, the order in which ipvsadm sorts services.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// Address family of a firewall-mark service (`-6` makes it IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// AF_INET.
    Ipv4,
    /// AF_INET6.
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The kernel's AF_* number, which orders services in listings.
    pub fn number(self) -> u16 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }
}

/// Identifies a virtual service, as `-t/-u/--sctp-service ADDR:PORT` or `-f MARK [-6]` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceKey {
    /// A protocol, address and port (port 0 only for persistent services).
    Addr {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual address.
        address: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// A firewall mark.
    Fwmark {
        /// The mark, 1 to 2^32-1.
        mark: u32,
        /// IPv4 unless `-6` was given.
        family: Family,
    },
}

impl ServiceKey {
    /// The service's address family.
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Addr { address, .. } => Family::of(*address),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }

    /// The protocol, which firewall-mark services do not have.
    pub fn protocol(&self) -> Option<Protocol> {
        match self {
            ServiceKey::Addr { protocol, .. } => Some(*protocol),
            ServiceKey::Fwmark { .. } => None,
        }
    }

    /// The virtual port (0 for firewall-mark services).
    pub fn port(&self) -> u16 {
        match self {
            ServiceKey::Addr { port, .. } => *port,
            ServiceKey::Fwmark { .. } => 0,
        }
    }
}

/// The scheduler flags of `-b` (`IP_VS_SVC_F_SCHED1..3`). Their names depend on the
/// scheduler: `sh-fallback`/`sh-port` for sh, `mh-fallback`/`mh-port` for mh, else `flag-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SchedFlags {
    /// Flag 1 (`sh-fallback`, `mh-fallback`).
    #[serde(default)]
    pub flag_1: bool,
    /// Flag 2 (`sh-port`, `mh-port`).
    #[serde(default)]
    pub flag_2: bool,
    /// Flag 3.
    #[serde(default)]
    pub flag_3: bool,
}

impl SchedFlags {
    /// True when any flag is set.
    pub fn any(&self) -> bool {
        self.flag_1 || self.flag_2 || self.flag_3
    }

    /// The flags' names for `scheduler`, comma-separated, as ipvsadm prints them.
    pub fn names(&self, scheduler: &str) -> String {
        let (one, two, three) = match scheduler {
            "sh" => (Some("sh-fallback"), Some("sh-port"), None),
            "mh" => (Some("mh-fallback"), Some("mh-port"), None),
            _ => (Some("flag-1"), Some("flag-2"), Some("flag-3")),
        };
        [(self.flag_1, one), (self.flag_2, two), (self.flag_3, three)]
            .into_iter()
            .filter_map(|(set, name)| if set { name } else { None })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Persistence granularity (`-M`): a dotted mask for IPv4 services, a prefix length for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Netmask {
    /// IPv4 mask, `255.255.255.255` by default.
    V4(Ipv4Addr),
    /// IPv6 prefix length, 128 by default.
    Prefix(u8),
}

impl Netmask {
    /// The default for a family: /32 or /128.
    pub fn full(family: Family) -> Netmask {
        match family {
            Family::Ipv4 => Netmask::V4(Ipv4Addr::BROADCAST),
            Family::Ipv6 => Netmask::Prefix(128),
        }
    }
}

/// A virtual service's settings: what `-A`/`-E` set and listings show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Which service.
    #[serde(flatten)]
    pub key: ServiceKey,
    /// Scheduler name (`-s`, default `wlc`), at most 15 bytes as the kernel keeps it.
    pub scheduler: String,
    /// Scheduler flags (`-b`).
    #[serde(default)]
    pub sched_flags: SchedFlags,
    /// Persistence timeout in seconds (`-p`), `None` when not persistent.
    #[serde(default)]
    pub persistent: Option<u32>,
    /// Persistence granularity (`-M`).
    pub netmask: Netmask,
    /// One-packet scheduling (`-o`, UDP and fwmark services only).
    #[serde(default)]
    pub one_packet: bool,
    /// Persistence engine (`--pe`, e.g. `sip`).
    #[serde(default)]
    pub persistence_engine: Option<String>,
}

/// Forwarding method of a real server (`-g`, `-m`, `-i`; Local is the kernel's own choice
/// for addresses of the director itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// `-m`: NAT.
    Masq,
    /// Local node.
    Local,
    /// `-i`: IP tunnelling.
    Tunnel,
    /// `-g`: direct routing, ipvsadm's default.
    Route,
}

impl ForwardMethod {
    /// The Forward column of listings.
    pub fn listing_name(self) -> &'static str {
        match self {
            ForwardMethod::Masq => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::Route => "Route",
        }
    }

    /// The switch `-S` writes (Local is saved as `-g`).
    pub fn option(self) -> &'static str {
        match self {
            ForwardMethod::Masq => "-m",
            ForwardMethod::Tunnel => "-i",
            ForwardMethod::Local | ForwardMethod::Route => "-g",
        }
    }
}

/// A real server's settings: what `-a`/`-e` set. Like ipvsadm, an edit carries every field,
/// so options left out take their defaults (`-g`, weight 1, thresholds 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestConfig {
    /// Real server address (its family may differ from the service's only when tunnelling).
    pub address: IpAddr,
    /// Real server port (the service's port for `-g`/`-i` on non-fwmark services).
    pub port: u16,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Weight, 0 (quiesced) to 2^31-1.
    pub weight: u32,
    /// Upper connection threshold (`-x`, 0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`).
    pub lower_threshold: u32,
    /// Tunnel settings, meaningful for `Tunnel` forwarding only.
    #[serde(default)]
    pub tunnel: Tunnel,
}

/// Connection timeouts (`--set tcp tcpfin udp`, `-L --timeout`), seconds; 0 = unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// Role of a connection-synchronisation daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncRole {
    /// Sends connection updates.
    Master,
    /// Receives them.
    Backup,
}

impl SyncRole {
    /// The name ipvsadm uses.
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        }
    }
}

/// A connection-synchronisation daemon (`--start-daemon`, `-L --daemon`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDaemon {
    /// Master or backup.
    pub role: SyncRole,
    /// Multicast interface (default `eth0`).
    pub mcast_interface: String,
    /// Sync id, 0-255.
    pub sync_id: u8,
    /// Maximum message length (0 = kernel default).
    #[serde(default)]
    pub sync_maxlen: u16,
    /// Multicast group (None = kernel default).
    #[serde(default)]
    pub mcast_group: Option<IpAddr>,
    /// Multicast port (0 = kernel default).
    #[serde(default)]
    pub mcast_port: u16,
    /// Multicast TTL (0 = kernel default).
    #[serde(default)]
    pub mcast_ttl: u8,
}
