//! The resolved configuration: keepalived's defaults applied, inheritance resolved.
//!
//! Field names are keepalived's keywords, so `keeplb dump-config` prints JSON that reads like
//! the configuration file, and the control API can carry the same types. Keywords keepalived
//! knows but keeplb does not act on yet are kept verbatim in `other`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// keepalived keywords keeplb accepts but does not model, with their words (a block's
/// words follow its keyword's), under the key `other`.
pub type OtherKeywords = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub global_defs: GlobalDefs,
    pub vrrp_script: Vec<VrrpScript>,
    pub track_file: Vec<TrackFile>,
    pub vrrp_instance: Vec<VrrpInstance>,
    pub vrrp_sync_group: Vec<VrrpSyncGroup>,
    pub virtual_server_group: Vec<VirtualServerGroup>,
    pub virtual_server: Vec<VirtualServer>,
}

/// A script with its arguments as keepalived runs it, optionally as another user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Script {
    pub script: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `script_user USER [GROUP]`: who scripts run as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptUser {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl ScriptUser {
    /// User and group as the script runner takes them.
    pub fn names(&self) -> (&str, Option<&str>) {
        (&self.user, self.group.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmtpServer {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyFifo {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<Script>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalDefs {
    pub router_id: Option<String>,
    pub notification_email: Vec<String>,
    pub notification_email_from: Option<String>,
    pub smtp_server: Option<SmtpServer>,
    pub smtp_helo_name: Option<String>,
    pub smtp_connect_timeout: f64,
    pub enable_script_security: bool,
    pub script_user: Option<ScriptUser>,
    pub vrrp_mcast_group4: Ipv4Addr,
    pub vrrp_mcast_group6: Ipv6Addr,
    pub vrrp_version: u8,
    pub default_interface: Option<String>,
    pub vrrp_garp_master_delay: u32,
    pub vrrp_garp_master_repeat: u32,
    pub vrrp_garp_master_refresh: u32,
    pub vrrp_garp_master_refresh_repeat: u32,
    pub vrrp_garp_lower_prio_delay: Option<u32>,
    pub vrrp_garp_lower_prio_repeat: Option<u32>,
    pub vrrp_garp_interval: f64,
    pub vrrp_gna_interval: f64,
    pub vrrp_lower_prio_no_advert: bool,
    pub vrrp_higher_prio_send_advert: bool,
    pub vrrp_skip_check_adv_addr: bool,
    pub vrrp_strict: bool,
    pub vrrp_check_unicast_src: bool,
    pub vrrp_startup_delay: f64,
    pub v3_checksum_as_v2: bool,
    pub notify_fifo: Option<NotifyFifo>,
    pub vrrp_notify_fifo: Option<NotifyFifo>,
    pub lvs_notify_fifo: Option<NotifyFifo>,
    pub startup_script: Option<Script>,
    pub shutdown_script: Option<Script>,
    pub dynamic_interfaces: bool,
    pub max_auto_priority: Option<i32>,
    /// `lvs_sync_daemon` (or a vrrp_instance's deprecated `lvs_sync_daemon_interface`), as
    /// keepalived runs it: `None` when absent, invalid, or naming a VRRP instance that does
    /// not exist (keepalived then clears it).
    pub lvs_sync_daemon: Option<LvsSyncDaemon>,
    #[serde(default, skip_serializing_if = "OtherKeywords::is_empty")]
    pub other: OtherKeywords,
}

/// IPVS connection synchronisation (the kernel's sync daemon), with every default resolved.
///
/// Tied to a VRRP instance, the daemon is a sync master (sends) while the instance is
/// MASTER and a sync backup (receives) otherwise; without one, keepalived's checker runs
/// both at once from start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LvsSyncDaemon {
    /// Where sync messages are sent and received (the kernel's `mcast_ifn`).
    pub interface: String,
    /// The VRRP instance whose state decides master or backup; it exists.
    pub vrrp_instance: Option<String>,
    /// `id`: sync messages carrying another id are dropped. Defaults to the instance's
    /// `virtual_router_id`; 0 without an instance, and with `lvs_sync_daemon_interface`.
    pub sync_id: u8,
    /// `maxlen`: the largest sync message payload, 1..=65507. `None`: the kernel derives it
    /// from the interface MTU (less the IP and UDP headers).
    pub maxlen: Option<u16>,
    /// `port`: UDP port of the sync messages, 8848 by default (the kernel's `IP_VS_SYNC_PORT`).
    pub port: u16,
    /// `ttl`: multicast TTL of the sync messages, 1 by default (the kernel's).
    pub ttl: u8,
    /// `group`: the multicast group, IPv4 or IPv6; 224.0.0.81 by default (the kernel's
    /// `IP_VS_SYNC_GROUP`). The sync family is the group's: IPv6 needs an explicit group.
    pub group: IpAddr,
}

impl Default for GlobalDefs {
    fn default() -> Self {
        GlobalDefs {
            router_id: None,
            notification_email: Vec::new(),
            notification_email_from: None,
            smtp_server: None,
            smtp_helo_name: None,
            smtp_connect_timeout: 30.0,
            enable_script_security: false,
            script_user: None,
            vrrp_mcast_group4: Ipv4Addr::new(224, 0, 0, 18),
            vrrp_mcast_group6: Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12),
            vrrp_version: 2,
            default_interface: None,
            vrrp_garp_master_delay: 5,
            vrrp_garp_master_repeat: 5,
            vrrp_garp_master_refresh: 0,
            vrrp_garp_master_refresh_repeat: 1,
            vrrp_garp_lower_prio_delay: None,
            vrrp_garp_lower_prio_repeat: None,
            vrrp_garp_interval: 0.0,
            vrrp_gna_interval: 0.0,
            vrrp_lower_prio_no_advert: false,
            vrrp_higher_prio_send_advert: false,
            vrrp_skip_check_adv_addr: false,
            vrrp_strict: false,
            vrrp_check_unicast_src: false,
            vrrp_startup_delay: 0.0,
            v3_checksum_as_v2: false,
            notify_fifo: None,
            vrrp_notify_fifo: None,
            lvs_notify_fifo: None,
            startup_script: None,
            shutdown_script: None,
            dynamic_interfaces: false,
            max_auto_priority: None,
            lvs_sync_daemon: None,
            other: OtherKeywords::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpScript {
    pub name: String,
    pub script: String,
    pub interval: f64,
    pub timeout: f64,
    /// Added to (or with `reverse`, subtracted from) the priority while the script succeeds
    /// (positive) or fails (negative); 0 puts the instance in FAULT on failure.
    pub weight: i32,
    pub weight_reverse: bool,
    pub rise: u32,
    pub fall: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub init_fail: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackFile {
    pub name: String,
    pub file: String,
    pub weight: i32,
    pub weight_reverse: bool,
    pub init_file: Option<InitFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitFile {
    pub value: i64,
    pub overwrite: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InitialState {
    Master,
    Backup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthType {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "AH")]
    Ah,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    pub auth_type: AuthType,
    /// At most 8 bytes: keepalived cuts longer passwords, and so do we (with a warning).
    pub auth_pass: String,
}

/// `brd` of a virtual address: an address, or `+` / `-` (all host bits set / clear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Broadcast {
    Address(IpAddr),
    Derived(DerivedBroadcast),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DerivedBroadcast {
    #[serde(rename = "+")]
    HostBitsSet,
    #[serde(rename = "-")]
    HostBitsClear,
}

/// One `virtual_ipaddress` entry: `addr[/prefix] [brd X] [dev IF] [scope S] [label L] …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualIp {
    pub address: IpAddr,
    pub prefix: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brd: Option<Broadcast>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub noprefixroute: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub nodad: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub home: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_group: Option<String>,
    /// `no_track`: its removal from the interface by someone else is not the instance's
    /// concern (keepalived does not give up mastership for it).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub no_track: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnicastPeer {
    pub address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u8>,
}

/// A reference from an instance or group to something it tracks, with an optional weight
/// that overrides the tracked object's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackRef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpInstance {
    pub name: String,
    pub state: InitialState,
    pub interface: Option<String>,
    pub virtual_router_id: u8,
    pub priority: u8,
    pub advert_int: f64,
    pub version: u8,
    pub authentication: Option<Authentication>,
    pub virtual_ipaddress: Vec<VirtualIp>,
    pub virtual_ipaddress_excluded: Vec<VirtualIp>,
    pub virtual_routes: Vec<Vec<String>>,
    pub virtual_rules: Vec<Vec<String>>,
    pub unicast_src_ip: Option<IpAddr>,
    pub unicast_peer: Vec<UnicastPeer>,
    pub mcast_src_ip: Option<IpAddr>,
    pub unicast_ttl: u8,
    pub track_interface: Vec<TrackRef>,
    pub track_script: Vec<TrackRef>,
    pub track_file: Vec<TrackRef>,
    pub nopreempt: bool,
    pub preempt_delay: f64,
    pub notify_master: Option<Script>,
    pub notify_backup: Option<Script>,
    pub notify_fault: Option<Script>,
    pub notify_stop: Option<Script>,
    pub notify: Option<Script>,
    /// Run on each lower-priority advertisement received as master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_master_rx_lower_pri: Option<Script>,
    pub garp_master_delay: u32,
    pub garp_master_repeat: u32,
    pub garp_master_refresh: u32,
    pub garp_master_refresh_repeat: u32,
    pub garp_lower_prio_delay: Option<u32>,
    pub garp_lower_prio_repeat: Option<u32>,
    pub lower_prio_no_advert: bool,
    pub higher_prio_send_advert: bool,
    pub accept: bool,
    pub strict_mode: bool,
    pub skip_check_adv_addr: bool,
    pub check_unicast_src: bool,
    pub use_vmac: Option<String>,
    pub dont_track_primary: bool,
    pub smtp_alert: bool,
    #[serde(default, skip_serializing_if = "OtherKeywords::is_empty")]
    pub other: OtherKeywords,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VrrpSyncGroup {
    pub name: String,
    pub group: Vec<String>,
    pub track_interface: Vec<TrackRef>,
    pub track_script: Vec<TrackRef>,
    pub track_file: Vec<TrackRef>,
    pub notify_master: Option<Script>,
    pub notify_backup: Option<Script>,
    pub notify_fault: Option<Script>,
    pub notify_stop: Option<Script>,
    pub notify: Option<Script>,
    pub smtp_alert: bool,
    pub global_tracking: bool,
    #[serde(default, skip_serializing_if = "OtherKeywords::is_empty")]
    pub other: OtherKeywords,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

/// IPVS forwarding method (`lb_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LbKind {
    Nat,
    Dr,
    Tun,
}

/// The settings of TUN forwarding (keepalived 2.2: `lb_kind TUN [type ipip|gue|gre]
/// [port N] [nocsum|csum|remcsum]`), with keepalived's defaults; port 0 is none.
pub use keeplb_balancer::{Tunnel, TunnelChecksum, TunnelType};

/// IPVS scheduler names (`lb_algo`): the balancer's own list, so the two cannot differ.
pub use keeplb_balancer::SchedulerKind;

/// IPVS persistence engines (`persistence_engine`): the balancer's own list.
pub use keeplb_balancer::PersistenceEngine;

/// How a virtual server is addressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VirtualServerKey {
    Address { ip: IpAddr, port: u16 },
    Fwmark { fwmark: u32 },
    Group { group: String },
}

/// An entry of a `virtual_server_group`: an address range (`10.0.0.1-10 80`) or a fwmark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupEntry {
    Range {
        ip: IpAddr,
        /// The last address of the range (equal to `ip` for a single address).
        last: IpAddr,
        port: u16,
    },
    Fwmark {
        fwmark: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualServerGroup {
    pub name: String,
    pub entries: Vec<GroupEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SorryServer {
    pub ip: IpAddr,
    pub port: Option<u16>,
    /// `sorry_server_lvs_method`, or else the virtual server's `lb_kind` (as keepalived:
    /// the one in effect at the `sorry_server` line, or the final one if none was yet).
    #[serde(rename = "lvs_method")]
    pub lb_kind: LbKind,
    /// The tunnel settings of a TUN sorry server; `None` with NAT and DR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VirtualServer {
    #[serde(flatten)]
    pub key: VirtualServerKey,
    pub delay_loop: f64,
    pub lb_algo: SchedulerKind,
    /// Scheduler flags: `sh-port`, `sh-fallback`, `mh-port`, `mh-fallback`, `ops`, `flag-N`.
    pub lb_flags: Vec<String>,
    pub lb_kind: LbKind,
    /// The tunnel settings of `lb_kind TUN`; `None` with NAT and DR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    pub persistence_timeout: Option<u32>,
    pub persistence_granularity: Option<String>,
    /// What else keys persistence templates (`sip`: the SIP Call-ID of UDP datagrams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_engine: Option<PersistenceEngine>,
    pub protocol: Protocol,
    pub sorry_server: Option<SorryServer>,
    pub sorry_server_inhibit: bool,
    pub quorum: u32,
    pub hysteresis: u32,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    pub inhibit_on_failure: bool,
    pub alpha: bool,
    pub omega: bool,
    pub virtualhost: Option<String>,
    pub ha_suspend: bool,
    /// keeplb extension: PROXY protocol version (1 or 2) sent to real servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<u8>,
    pub real_server: Vec<RealServer>,
    #[serde(default, skip_serializing_if = "OtherKeywords::is_empty")]
    pub other: OtherKeywords,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealServer {
    pub ip: IpAddr,
    pub port: u16,
    pub weight: u32,
    /// keepalived's real_server keyword for the forwarding method.
    #[serde(rename = "lvs_method")]
    pub lb_kind: LbKind,
    /// The tunnel settings of `lvs_method TUN` (or the virtual server's, inherited with
    /// its TUN); `None` with NAT and DR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
    pub inhibit_on_failure: bool,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub uthreshold: u32,
    pub lthreshold: u32,
    pub alpha: bool,
    pub checkers: Vec<Checker>,
    #[serde(default, skip_serializing_if = "OtherKeywords::is_empty")]
    pub other: OtherKeywords,
}

/// Options every checker has; absent ones are inherited from the real server, then the
/// virtual server, then keepalived's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckCommon {
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub bind_port: Option<u16>,
    pub bind_if: Option<String>,
    pub connect_timeout: f64,
    pub retry: u32,
    pub delay_before_retry: f64,
    pub delay_loop: f64,
    pub warmup: Option<f64>,
    pub alpha: bool,
    pub log_all_failures: bool,
    pub fwmark: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpUrl {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Accepted status codes as inclusive ranges; default 200-299.
    pub status_code: Vec<(u16, u16)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtualhost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub regex_no_match: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCheck {
    pub url: Vec<HttpUrl>,
    pub virtualhost: Option<String>,
    pub http_protocol: Option<String>,
    pub enable_sni: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiscCheck {
    pub misc_path: String,
    pub misc_timeout: Option<f64>,
    pub misc_dynamic: bool,
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmtpCheck {
    pub helo_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsCheck {
    #[serde(rename = "type")]
    pub query_type: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpCheck {
    pub payload: Option<String>,
    pub require_reply: Option<String>,
    pub min_reply_length: Option<u32>,
    pub max_reply_length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCheck {
    pub track_file: String,
    pub weight: Option<i32>,
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CheckKind {
    #[serde(rename = "TCP_CHECK")]
    Tcp,
    #[serde(rename = "HTTP_GET")]
    Http(HttpCheck),
    #[serde(rename = "SSL_GET")]
    Ssl(HttpCheck),
    #[serde(rename = "MISC_CHECK")]
    Misc(MiscCheck),
    #[serde(rename = "SMTP_CHECK")]
    Smtp(SmtpCheck),
    #[serde(rename = "DNS_CHECK")]
    Dns(DnsCheck),
    #[serde(rename = "UDP_CHECK")]
    Udp(UdpCheck),
    #[serde(rename = "PING_CHECK")]
    Ping,
    #[serde(rename = "FILE_CHECK")]
    File(FileCheck),
}

impl CheckKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "TCP_CHECK",
            CheckKind::Http(_) => "HTTP_GET",
            CheckKind::Ssl(_) => "SSL_GET",
            CheckKind::Misc(_) => "MISC_CHECK",
            CheckKind::Smtp(_) => "SMTP_CHECK",
            CheckKind::Dns(_) => "DNS_CHECK",
            CheckKind::Udp(_) => "UDP_CHECK",
            CheckKind::Ping => "PING_CHECK",
            CheckKind::File(_) => "FILE_CHECK",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checker {
    #[serde(flatten)]
    pub kind: CheckKind,
    #[serde(flatten)]
    pub common: CheckCommon,
    #[serde(default, skip_serializing_if = "OtherKeywords::is_empty")]
    pub other: OtherKeywords,
}
