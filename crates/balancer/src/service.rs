//! A virtual service: its address, its [`Pool`], persistence settings and statistics.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::pool::Pool;
use crate::stats::Stats;

/// The FTP control port: IPVS never puts it in a persistence template's key, so that
/// the control and data connections of one client share a template.
pub const FTP_PORT: u16 = 21;

/// The transport protocol of a connection or a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// No transport: the protocol of fwmark services' persistence templates
    /// (`IPPROTO_IP`), which cover every protocol the mark matches.
    Ip,
}

impl Protocol {
    /// The name ipvsadm prints (`ip_vs_proto_name`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Ip => "IP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What identifies a virtual service (`ipvsadm -t|-u ADDR:PORT` or `-f MARK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceAddr {
    /// A protocol, address and port; port 0 makes a port-zero service, matching every
    /// port of the address.
    Addr(Protocol, SocketAddr),
    /// A firewall mark.
    Fwmark(u32),
}

impl ServiceAddr {
    /// The service's port (0 for fwmark services, as the kernel stores it).
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(_, addr) => addr.port(),
            Self::Fwmark(_) => 0,
        }
    }
}

/// The client-address granularity of persistence: keepalived's
/// `persistence_granularity`, ipvsadm's `-M`. IPv4 clients are masked with a netmask,
/// IPv6 clients with a prefix length (the kernel keeps one `netmask` word and reads it
/// either way depending on the service's family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Granularity {
    v4: Ipv4Addr,
    v6_prefix: u8,
}

impl Default for Granularity {
    /// One client per address: 255.255.255.255 and /128.
    fn default() -> Self {
        Self {
            v4: Ipv4Addr::BROADCAST,
            v6_prefix: 128,
        }
    }
}

impl Granularity {
    /// IPv4 netmask (as ipvsadm `-M 255.255.255.0`); IPv6 clients stay per-address.
    pub fn v4_netmask(mask: Ipv4Addr) -> Self {
        Self {
            v4: mask,
            ..Self::default()
        }
    }

    /// IPv6 prefix length (ipvsadm `-M 64` on an IPv6 service), clamped to 128; IPv4
    /// clients stay per-address.
    pub fn v6_prefix(prefix: u8) -> Self {
        Self {
            v6_prefix: prefix.min(128),
            ..Self::default()
        }
    }

    /// The IPv4 netmask.
    pub fn netmask(&self) -> Ipv4Addr {
        self.v4
    }

    /// The IPv6 prefix length.
    pub fn prefix(&self) -> u8 {
        self.v6_prefix
    }

    /// `ip` with its host bits cleared.
    pub fn mask(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & self.v4.to_bits())),
            IpAddr::V6(v6) => {
                let keep = match self.v6_prefix {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p)),
                };
                IpAddr::V6(Ipv6Addr::from(v6.to_bits() & keep))
            }
        }
    }
}

/// A persistence engine (`ipvsadm --pe`, keepalived `persistence_engine`): what keys a
/// persistence template besides the client's (masked) address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PersistenceEngine {
    /// The SIP Call-ID of the datagram ([`crate::sip`]); UDP only.
    Sip,
}

impl PersistenceEngine {
    /// Every engine IPVS has.
    pub const ALL: [Self; 1] = [Self::Sip];

    /// The engine's name, as ipvsadm and keepalived write it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sip => "sip",
        }
    }

    /// The engine named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|engine| engine.name() == name)
    }
}

/// What a service's persistence engine makes of a new connection's first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineKey {
    /// No engine in use: none is named, or the service is not persistent.
    NoEngine,
    /// What the engine adds to the persistence template's key (the kernel's `pe_data`).
    Key(PersistenceEngine, Arc<[u8]>),
    /// The engine found nothing to key on (a datagram without a SIP Call-ID, or any TCP
    /// connection for the SIP engine): the kernel drops the packet.
    Refused,
}

impl EngineKey {
    /// The engine and its key, when there is one.
    pub fn into_key(self) -> Option<(PersistenceEngine, Arc<[u8]>)> {
        match self {
            Self::Key(engine, key) => Some((engine, key)),
            Self::NoEngine | Self::Refused => None,
        }
    }
}

/// Persistence settings (`ipvsadm -p T -M MASK`, keepalived `persistence_timeout` and
/// `persistence_granularity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// How long a template outlives its connections (see [`crate::ConnTable`] for the
    /// kernel's exact rule).
    pub timeout: Duration,
    /// Which clients share a template.
    pub granularity: Granularity,
}

impl Persistence {
    /// ipvsadm's default `-p` without a value: 300 s (keepalived's bare
    /// `persistence_timeout` is 360 s; the config layer supplies that).
    pub const IPVSADM_DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

    /// Persistence for `timeout`, per client address.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            granularity: Granularity::default(),
        }
    }

    /// Builder: sets the granularity.
    #[must_use]
    pub fn with_granularity(self, granularity: Granularity) -> Self {
        Self {
            granularity,
            ..self
        }
    }
}

/// One virtual service: address, destinations and scheduler, persistence, counters.
#[derive(Debug)]
pub struct Service {
    addr: ServiceAddr,
    /// The destinations and the scheduler; edits go through it as before.
    pub pool: Pool,
    persistence: Option<Persistence>,
    /// Kept apart from the persistence, as the kernel keeps it: a service may name an
    /// engine without being persistent, and listings show it.
    engine: Option<PersistenceEngine>,
    stats: Arc<Stats>,
}

impl Service {
    /// A service without persistence.
    pub fn new(addr: ServiceAddr, pool: Pool) -> Self {
        Self {
            addr,
            pool,
            persistence: None,
            engine: None,
            stats: Arc::new(Stats::new()),
        }
    }

    /// Builder form of [`Service::set_persistence`].
    #[must_use]
    pub fn with_persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = Some(persistence);
        self
    }

    /// What identifies the service.
    pub fn addr(&self) -> ServiceAddr {
        self.addr
    }

    /// Persistence settings, if the service is persistent.
    pub fn persistence(&self) -> Option<Persistence> {
        self.persistence
    }

    /// `ipvsadm -E -p/-M`: existing templates keep the timeout they were created with,
    /// as in the kernel.
    pub fn set_persistence(&mut self, persistence: Option<Persistence>) {
        self.persistence = persistence;
    }

    /// The persistence engine (`--pe`), which keys the templates of a persistent
    /// service.
    pub fn persistence_engine(&self) -> Option<PersistenceEngine> {
        self.engine
    }

    /// `ipvsadm -A/-E --pe`: existing templates keep the key they were made with.
    pub fn set_persistence_engine(&mut self, engine: Option<PersistenceEngine>) {
        self.engine = engine;
    }

    /// What the persistence engine makes of the first packet of a new `proto`
    /// connection, carrying `payload` (a UDP datagram; nothing for a TCP SYN). The engine
    /// is used only by a persistent service, as in the kernel.
    pub fn engine_key(&self, proto: Protocol, payload: &[u8]) -> EngineKey {
        match self.persistence.and(self.engine) {
            None => EngineKey::NoEngine,
            Some(PersistenceEngine::Sip) => match crate::sip::call_id(payload) {
                Some(id) if proto == Protocol::Udp => {
                    EngineKey::Key(PersistenceEngine::Sip, Arc::from(id))
                }
                _ => EngineKey::Refused,
            },
        }
    }

    /// The service's counters and rates (ipvsadm `--stats` / `--rate`).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularity_masks_each_family() {
        let g = Granularity::v4_netmask(Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            g.mask("192.0.2.77".parse().unwrap()),
            "192.0.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            g.mask("2001:db8::1".parse().unwrap()),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        let g = Granularity::v6_prefix(64);
        assert_eq!(
            g.mask("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            Granularity::v6_prefix(0).mask("2001:db8::1".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
        assert_eq!(Granularity::v6_prefix(200).prefix(), 128);
    }
}
