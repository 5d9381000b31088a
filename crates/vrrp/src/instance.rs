//! The VRRP state machine of one virtual router (RFC 5798 section 6, RFC 3768 section 6),
//! with keepalived 2.2.7's behaviour where the two differ.
//!
//! Sans-I/O: [`Instance::handle`] takes an [`Event`] and the current time and returns the
//! [`Action`]s to carry out. Time only enters through that argument, and timers leave as
//! absolute deadlines ([`Action::ArmTimer`]), so a test drives the machine with a virtual
//! clock and the daemon with tokio's.
//!
//! Where keepalived and the RFC differ, keepalived wins (the routers must agree with the
//! keepalived boxes on the same LAN):
//!
//! - `state MASTER` without priority 255 starts in Backup but waits only one advertisement
//!   interval plus the minimum skew before taking over, not Master_Down_Interval.
//! - `preempt_delay`: the first lower-priority advertisement starts the delay; until it
//!   ends, such advertisements still reset the Master_Down timer; after it, they are
//!   discarded, so the takeover happens Master_Down_Interval after the last one accepted.
//! - A master answers a lower-priority advertisement with its own at once (forcing the
//!   other router back to Backup) unless `lower_prio_no_advert`, and sends a gratuitous
//!   ARP burst (`garp_lower_prio_repeat`) to win back the neighbours' caches.
//! - `higher_prio_send_advert`: a master sends one last advertisement before yielding.
//! - The address list is checked and a mismatch drops the advertisement (RFC: MAY check,
//!   log only) unless configured otherwise ([`AddressCheck`]).
//! - Unicast: the TTL is not checked (only the optional per-peer range is).
//! - Two address owners: the one that hears the other lowers itself to 254.
//! - The effective priority is clamped to 1..=254 and the owner ignores tracking.
//! - VRRPv3 unicast over IPv4 switches to the old (multicast-address) checksum when a
//!   peer uses it.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::debug::Debug;
use crate::event::{Action, Cause, DropReason, Event, OutgoingAdvert, Received, State, TimerKind};
use crate::packet::{
    AdverInterval, Advertisement, Auth, ChecksumForm, DecodeContext, Family, MULTICAST_V4,
    MULTICAST_V6, PRIORITY_OWNER, PRIORITY_RESIGN, TTL, Version,
};

/// keepalived's `state` keyword: what the instance wants to be at startup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InitialState {
    /// With priority 255: Master at once. Otherwise: Backup for one advertisement interval
    /// (plus the minimum skew) to hear any existing master, then Master.
    Master,
    /// Backup, taking over after Master_Down_Interval without a master.
    #[default]
    Backup,
}

/// One `unicast_peer` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnicastPeer {
    pub addr: IpAddr,
    /// Accepted TTL / hop-limit range of its advertisements (`min_ttl`/`max_ttl`, checked
    /// only with `check_src`). Defaults 0 and 255.
    pub min_ttl: u8,
    pub max_ttl: u8,
}

impl UnicastPeer {
    pub const fn new(addr: IpAddr) -> Self {
        UnicastPeer {
            addr,
            min_ttl: 0,
            max_ttl: u8::MAX,
        }
    }
}

/// Where advertisements go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// To a group ([`MULTICAST_V4`] / [`MULTICAST_V6`] unless `vrrp_mcast_group4/6` or
    /// `mcast_dst_ip` say otherwise), TTL 255.
    Multicast { group: IpAddr },
    /// To each peer (`unicast_peer`).
    Unicast {
        peers: Vec<UnicastPeer>,
        /// `unicast_ttl` (keepalived's default 255).
        ttl: u8,
        /// Drop advertisements from addresses that are not peers, and check their TTL
        /// range (`check_unicast_src`, `vrrp_check_unicast_src`, or any `min_ttl`/`max_ttl`).
        check_src: bool,
    },
}

impl Transport {
    pub fn is_unicast(&self) -> bool {
        matches!(self, Transport::Unicast { .. })
    }
}

/// What to do when an advertisement's address list differs from our virtual addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddressCheck {
    /// keepalived's default: drop it ([`DropReason::AddressListMismatch`]). Two routers with
    /// different lists then both become Master, as with keepalived.
    #[default]
    Drop,
    /// keepalived's `skip_check_adv_addr`: like `Drop`, but a backup skips the check (and
    /// the unicast source check) for advertisements from the master it last accepted.
    SkipFromMaster,
    /// RFC 5798 section 7.1 read literally: log and count it, then process the
    /// advertisement.
    LogOnly,
}

/// Gratuitous ARP / unsolicited NA plan (keepalived's `garp_*` keywords).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GarpConfig {
    /// Delay of the second burst after becoming Master (`garp_master_delay`, 5 s; zero:
    /// no second burst).
    pub master_delay: Duration,
    /// Rounds per burst (`garp_master_repeat`, 5).
    pub master_repeat: u32,
    /// Period of refresh bursts while Master (`garp_master_refresh`; zero: none, the
    /// default).
    pub master_refresh: Duration,
    /// Rounds per refresh burst (`garp_master_refresh_repeat`, 1).
    pub master_refresh_repeat: u32,
    /// Delay of the second burst after answering a lower-priority advertisement
    /// (`garp_lower_prio_delay`, defaults to `master_delay`).
    pub lower_prio_delay: Duration,
    /// Rounds per burst after a lower-priority advertisement (`garp_lower_prio_repeat`,
    /// defaults to `master_repeat`; zero: none).
    pub lower_prio_repeat: u32,
}

impl Default for GarpConfig {
    fn default() -> Self {
        GarpConfig {
            master_delay: Duration::from_secs(5),
            master_repeat: 5,
            master_refresh: Duration::ZERO,
            master_refresh_repeat: 1,
            lower_prio_delay: Duration::from_secs(5),
            lower_prio_repeat: 5,
        }
    }
}

/// Everything the state machine needs to know about one `vrrp_instance`, with keepalived's
/// defaults from [`InstanceConfig::new`]. Field names follow the keepalived keywords.
///
/// From keeplb-config's `VrrpInstance` (the conversion lives in the binary, so that this
/// crate does not depend on the configuration crate):
///
/// | field | from |
/// |---|---|
/// | `name`, `vrid`, `priority` | `name`, `virtual_router_id`, `priority` |
/// | `version` | `version` (2 or 3) |
/// | `adver_int` | `advert_int`: v2 `AdverInterval::from_secs`, v3 `from_centis(round(s * 100))` |
/// | `initial_state` | `state` |
/// | `preempt`, `preempt_delay` | `!nopreempt`, `preempt_delay` seconds |
/// | `accept`, `lower_prio_no_advert`, `higher_prio_send_advert` | same names |
/// | `auth` | `authentication` PASS: `Auth::Password(AuthPassword::new(auth_pass))`; AH is refused |
/// | `checksum_form` | `v3_checksum_as_v2`: `MessageOnly`; `old_unicast_checksum`: `LegacyUnicast` |
/// | `auto_legacy_checksum` | false for `old_unicast_checksum never` |
/// | `vips`, `excluded_vips` | addresses of `virtual_ipaddress`, `virtual_ipaddress_excluded` |
/// | `src_addr` | `unicast_src_ip`, else `mcast_src_ip` |
/// | `transport` | `unicast_peer` non-empty: `Unicast { peers (min_ttl/max_ttl or 0/255), ttl: unicast_ttl, check_src: check_unicast_src or vrrp_check_unicast_src or any min/max_ttl }`; else `Multicast { group: mcast_dst_ip or vrrp_mcast_group4/6 }` |
/// | `address_check` | `skip_check_adv_addr`: `SkipFromMaster` |
/// | `down_timer_adverts` | `down_timer_adverts` / `vrrp_down_timer_adverts` (3) |
/// | `garp` | `garp_master_delay/_repeat/_refresh/_refresh_repeat`; `garp_lower_prio_delay/_repeat`, unset: the global `vrrp_garp_master_delay/_repeat` (0 in strict mode) |
/// | `sync_group` | member of a `vrrp_sync_group` with two or more running members |
///
/// Tracking (`track_script`, `track_interface`, `track_file`) stays in the I/O layer: it
/// sends [`Event::PriorityChanged`] with `priority` plus the weights in force, and
/// [`Event::ForceFault`] / [`Event::ClearFault`] for weight-0 failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The `vrrp_instance` name, for logs.
    pub name: String,
    /// `virtual_router_id`, 1..=255.
    pub vrid: u8,
    /// `version` (IPv6 instances are always VRRPv3).
    pub version: Version,
    /// `priority`, 1..=255; 255 makes this router the address owner.
    pub priority: u8,
    /// `advert_int`: whole seconds for VRRPv2, centiseconds (at most 40.95 s) for VRRPv3.
    pub adver_int: AdverInterval,
    /// `state`.
    pub initial_state: InitialState,
    /// false with `nopreempt`.
    pub preempt: bool,
    /// `preempt_delay` (0..=1000 s).
    pub preempt_delay: Duration,
    /// `accept` / `no_accept`: for the I/O layer, which installs or omits the filter that
    /// keeps a non-owner master from answering packets to the addresses.
    pub accept: bool,
    /// `lower_prio_no_advert`.
    pub lower_prio_no_advert: bool,
    /// `higher_prio_send_advert`.
    pub higher_prio_send_advert: bool,
    /// `authentication` (VRRPv2 only): [`Auth::None`] or [`Auth::Password`]. AH is not
    /// supported.
    pub auth: Auth,
    /// Checksum sent by VRRPv3 over IPv4: [`ChecksumForm::PseudoHeader`] (keepalived's
    /// default), `MessageOnly` (`v3_checksum_as_v2`) or `LegacyUnicast`
    /// (`old_unicast_checksum`). Every form is accepted on receipt.
    pub checksum_form: ChecksumForm,
    /// Switch to [`ChecksumForm::LegacyUnicast`] when a unicast VRRPv3/IPv4 peer sends it
    /// and we send the default form (keepalived's automatic mode; false with
    /// `old_unicast_checksum never`).
    pub auto_legacy_checksum: bool,
    /// `virtual_ipaddress` addresses, in order: advertised, installed and announced.
    pub vips: Vec<IpAddr>,
    /// `virtual_ipaddress_excluded` addresses: installed and announced, not advertised.
    pub excluded_vips: Vec<IpAddr>,
    /// `unicast_src_ip` / `mcast_src_ip`. `None`: the interface's primary address
    /// ([`Event::InterfaceUp`]).
    pub src_addr: Option<IpAddr>,
    pub transport: Transport,
    /// `skip_check_adv_addr` gives [`AddressCheck::SkipFromMaster`].
    pub address_check: AddressCheck,
    /// `down_timer_adverts` (1..=100, 3): how many advertisement intervals make
    /// Master_Down_Interval.
    pub down_timer_adverts: u8,
    pub garp: GarpConfig,
    /// Member of a running `vrrp_sync_group`: as keepalived's `vrrp_sync_can_goto_master`,
    /// a backup whose Master_Down timer expires does not become Master on its own. It
    /// waits in Backup wanting Master ([`Action::WantsMaster`]`(true)`, the timer re-armed
    /// for another Master_Down_Interval) until its group, seeing every member want Master,
    /// sends [`Event::SyncMaster`]; an advertisement it accepts from a master ends the
    /// wish. The group coordinator is [`crate::sync::SyncGroup`].
    pub sync_group: bool,
    /// With `sync_group`: every member of the group is the address owner with `state
    /// MASTER`. keepalived then starts the group in MASTER (`vrrp_sync_set_group`), so
    /// such a member becomes Master at once at startup, like an owner outside a group,
    /// instead of waiting an interval to ask its group (`vrrp_init_state`).
    pub sync_group_owners: bool,
}

impl InstanceConfig {
    /// keepalived's defaults for an instance advertising `vips`: priority 100, interval
    /// 1 s, `state BACKUP`, preempt without delay, multicast to the family's group.
    pub fn new(name: impl Into<String>, vrid: u8, version: Version, vips: Vec<IpAddr>) -> Self {
        let group = match vips.first().map(Family::of) {
            Some(Family::Ipv6) => IpAddr::V6(MULTICAST_V6),
            _ => IpAddr::V4(MULTICAST_V4),
        };
        InstanceConfig {
            name: name.into(),
            vrid,
            version,
            priority: 100,
            adver_int: AdverInterval::from_secs(1),
            initial_state: InitialState::Backup,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept: true,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            auth: Auth::None,
            checksum_form: ChecksumForm::PseudoHeader,
            auto_legacy_checksum: true,
            vips,
            excluded_vips: Vec::new(),
            src_addr: None,
            transport: Transport::Multicast { group },
            address_check: AddressCheck::Drop,
            down_timer_adverts: 3,
            garp: GarpConfig::default(),
            sync_group: false,
            sync_group_owners: false,
        }
    }

    /// The instance's address family: that of its first advertised address, else of its
    /// source address, peers or group (as keepalived, the first address it meets decides).
    pub fn family(&self) -> Family {
        let first =
            self.vips
                .first()
                .or(self.src_addr.as_ref())
                .copied()
                .or(match &self.transport {
                    Transport::Multicast { group } => Some(*group),
                    Transport::Unicast { peers, .. } => peers.first().map(|p| p.addr),
                });
        first.as_ref().map_or(Family::Ipv4, Family::of)
    }

    /// Whether this router owns the addresses (priority 255).
    pub fn is_owner(&self) -> bool {
        self.priority == PRIORITY_OWNER
    }

    /// Checks what the state machine relies on (the configuration crate reports the rest,
    /// with keepalived's messages, before conversion).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if self.priority == 0 {
            return Err(ConfigError::Priority);
        }
        let family = self.family();
        let interval_ok = match self.version {
            Version::V2 => self.adver_int.whole_secs().is_some_and(|s| s > 0),
            Version::V3 => self.adver_int.centis() > 0 && self.adver_int <= AdverInterval::V3_MAX,
        };
        if !interval_ok {
            return Err(ConfigError::Interval {
                version: self.version,
                interval: self.adver_int,
            });
        }
        match (self.version, family) {
            (Version::V2, Family::Ipv6) => return Err(ConfigError::V2OverIpv6),
            (Version::V3, _) if self.auth != Auth::None => return Err(ConfigError::AuthInV3),
            _ => {}
        }
        if matches!(self.auth, Auth::Ah(_)) {
            return Err(ConfigError::AhUnsupported);
        }
        if self.vips.len() > usize::from(u8::MAX) {
            return Err(ConfigError::TooManyAddresses {
                count: self.vips.len(),
            });
        }
        let mut addresses: Vec<(&'static str, IpAddr)> =
            self.vips.iter().map(|a| ("virtual address", *a)).collect();
        addresses.extend(self.src_addr.map(|a| ("source address", a)));
        match &self.transport {
            Transport::Multicast { group } => {
                if !group.is_multicast() {
                    return Err(ConfigError::NotMulticast { group: *group });
                }
                addresses.push(("multicast group", *group));
            }
            Transport::Unicast { peers, .. } => {
                if peers.is_empty() {
                    return Err(ConfigError::NoUnicastPeers);
                }
                addresses.extend(peers.iter().map(|p| ("unicast peer", p.addr)));
            }
        }
        if let Some((what, addr)) = addresses.iter().find(|(_, a)| Family::of(a) != family) {
            return Err(ConfigError::FamilyMismatch {
                what,
                addr: *addr,
                family,
            });
        }
        if !(1..=100).contains(&self.down_timer_adverts) {
            return Err(ConfigError::DownTimerAdverts {
                value: self.down_timer_adverts,
            });
        }
        Ok(())
    }
}

/// Why an [`InstanceConfig`] cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("virtual_router_id must be 1-255")]
    Vrid,
    #[error("priority must be 1-255")]
    Priority,
    #[error("{version} cannot advertise an interval of {interval}")]
    Interval {
        version: Version,
        interval: AdverInterval,
    },
    #[error("VRRPv2 is IPv4 only")]
    V2OverIpv6,
    #[error("VRRPv3 has no authentication")]
    AuthInV3,
    #[error("auth_type AH is not supported")]
    AhUnsupported,
    #[error("{count} virtual addresses do not fit one advertisement (at most 255)")]
    TooManyAddresses { count: usize },
    #[error("the {what} {addr} is not {family} like the instance")]
    FamilyMismatch {
        what: &'static str,
        addr: IpAddr,
        family: Family,
    },
    #[error("multicast group {group} is not a multicast address")]
    NotMulticast { group: IpAddr },
    #[error("unicast transport without peers")]
    NoUnicastPeers,
    #[error("down_timer_adverts {value} is outside 1-100")]
    DownTimerAdverts { value: u8 },
}

/// The router an instance last heard as master (or as a would-be master it discarded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MasterInfo {
    pub addr: IpAddr,
    pub priority: u8,
}

/// Counters of one instance (the RFC 6527 / keepalived statistics that the state machine
/// can know).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Advertisements that passed every check.
    pub adverts_received: u64,
    pub adverts_sent: u64,
    pub priority_zero_received: u64,
    pub priority_zero_sent: u64,
    pub became_master: u64,
    pub released_master: u64,
    /// Address list mismatches, dropped or (with [`AddressCheck::LogOnly`]) not.
    pub address_list_errors: u64,
    drops: Vec<(DropReason, u64)>,
}

impl Stats {
    /// Datagrams dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Every reason with a non-zero count.
    pub fn all_drops(&self) -> &[(DropReason, u64)] {
        &self.drops
    }

    fn count_drop(&mut self, reason: DropReason) {
        match self.drops.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.drops.push((reason, 1)),
        }
    }
}

/// One virtual router: configuration, protocol state and armed timers.
#[derive(Clone, Debug)]
pub struct Instance {
    config: InstanceConfig,
    family: Family,
    state: State,
    /// The configured priority, unless lowered to 254 after meeting another owner.
    base_priority: u8,
    effective_priority: u8,
    /// Master_Adver_Interval: our own while Master, the master's (VRRPv3) while Backup.
    master_adver_int: AdverInterval,
    link_up: bool,
    tracking_fault: bool,
    primary: Option<IpAddr>,
    send_checksum_form: ChecksumForm,
    /// When a running preempt delay ends (keepalived's `preempt_time`).
    preempt_until: Option<Instant>,
    master: Option<MasterInfo>,
    /// A sync-group member held in Backup although it would be Master (keepalived's
    /// `wantstate` MASTER while in BACKUP).
    wants_master: bool,
    timers: [Option<Instant>; TimerKind::ALL.len()],
    stats: Stats,
}

impl Instance {
    /// A stopped instance (in Initialize). The interface is assumed up until
    /// [`Event::InterfaceDown`] says otherwise.
    pub fn new(config: InstanceConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Instance {
            family: config.family(),
            state: State::Initialize,
            base_priority: config.priority,
            effective_priority: config.priority,
            master_adver_int: config.adver_int,
            link_up: true,
            tracking_fault: false,
            primary: None,
            send_checksum_form: config.checksum_form,
            preempt_until: None,
            master: None,
            wants_master: false,
            timers: [None; TimerKind::ALL.len()],
            stats: Stats::default(),
            config,
        })
    }

    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority advertised: configured plus tracking, clamped to 1..=254, or 255
    /// for the owner.
    pub fn effective_priority(&self) -> u8 {
        self.effective_priority
    }

    pub fn is_owner(&self) -> bool {
        self.base_priority == PRIORITY_OWNER
    }

    pub fn master_adver_int(&self) -> AdverInterval {
        self.master_adver_int
    }

    /// Whether this sync-group member is held in Backup waiting for its group to let it
    /// become Master ([`InstanceConfig::sync_group`]).
    pub fn wants_master(&self) -> bool {
        self.wants_master
    }

    /// The router last heard as master, while Backup.
    pub fn master(&self) -> Option<MasterInfo> {
        self.master
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The deadline of an armed timer.
    pub fn timer(&self, kind: TimerKind) -> Option<Instant> {
        self.timers[kind.index()]
    }

    /// The address advertisements are sent from.
    pub fn source_address(&self) -> Option<IpAddr> {
        self.config.src_addr.or(self.primary)
    }

    /// Skew_Time for the current effective priority.
    pub fn skew_time(&self) -> Duration {
        self.skew(256 - u32::from(self.effective_priority))
    }

    /// Master_Down_Interval: `down_timer_adverts` (3) * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_int.as_duration() * u32::from(self.config.down_timer_adverts)
            + self.skew_time()
    }

    /// keepalived's VRRP_TIMER_SKEW_CALC in microseconds, rounded down as keepalived does:
    /// VRRPv2 `pri_val/256` s, VRRPv3 `pri_val * Master_Adver_Interval/256`.
    fn skew(&self, pri_val: u32) -> Duration {
        let micros = match self.config.version {
            Version::V2 => u64::from(pri_val) * 1_000_000 / 256,
            Version::V3 => {
                u64::from(pri_val) * u64::from(self.master_adver_int.centis()) * 625 / 16
            }
        };
        Duration::from_micros(micros)
    }

    /// Processes one event at time `now` and returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Startup => self.on_startup(now, &mut out),
            Event::ResumeMaster { held } => self.on_resume_master(&held, now, &mut out),
            Event::AddressRemoved(addr) => self.on_address_removed(addr, now, &mut out),
            Event::Shutdown => self.on_shutdown(&mut out),
            Event::AdvertReceived(rx) => self.on_advert(&rx, now, &mut out),
            Event::TimerExpired(kind) => self.on_timer(kind, now, &mut out),
            Event::InterfaceUp { primary } => self.on_interface_up(primary, now, &mut out),
            Event::InterfaceDown => {
                self.link_up = false;
                self.enter_fault(Cause::InterfaceDown, &mut out);
            }
            Event::PriorityChanged(total) => self.on_priority(total, now, &mut out),
            Event::ForceFault => {
                self.tracking_fault = true;
                self.enter_fault(Cause::TrackingFault, &mut out);
            }
            Event::ClearFault => {
                self.tracking_fault = false;
                self.leave_fault(Cause::TrackingRecovered, now, &mut out);
            }
            Event::SyncBackup => {
                if self.state == State::Master {
                    self.leave_master(Cause::SyncGroup, now, &mut out);
                }
            }
            Event::SyncLowerPriorityGarp => {
                if self.state == State::Master {
                    self.lower_priority_garp(now, &mut out);
                } else {
                    self.log(Debug::EventIgnored {
                        event: "sync lower-priority gratuitous ARP",
                        state: self.state,
                    });
                }
            }
            Event::SyncMaster => {
                if self.state == State::Backup && self.fault_cause().is_none() {
                    self.become_master(Cause::SyncGroup, now, &mut out);
                } else {
                    self.log(Debug::EventIgnored {
                        event: "sync master",
                        state: self.state,
                    });
                }
            }
        }
        out
    }

    fn log(&self, line: Debug<'_>) {
        line.log(&self.config.name, self.config.vrid);
    }

    /// Why the instance cannot run now, if it cannot.
    fn fault_cause(&self) -> Option<Cause> {
        if !self.link_up {
            Some(Cause::InterfaceDown)
        } else if self.tracking_fault {
            Some(Cause::TrackingFault)
        } else if self.source_address().is_none() {
            Some(Cause::NoSourceAddress)
        } else {
            None
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, State::Backup | State::Master)
    }

    // ===== events =====

    /// What [`Event::Startup`] and [`Event::ResumeMaster`] do first: nothing unless in
    /// Initialize, and Fault if the instance cannot run (giving up the addresses it
    /// still `holds` from before a reload). Whether to go on starting.
    fn begin_start(&mut self, event: &'static str, holds: bool, out: &mut Vec<Action>) -> bool {
        if self.state != State::Initialize {
            self.log(Debug::EventIgnored {
                event,
                state: self.state,
            });
            return false;
        }
        self.master_adver_int = self.config.adver_int;
        let Some(cause) = self.fault_cause() else {
            return true;
        };
        if cause == Cause::NoSourceAddress {
            self.log(Debug::NoSourceAddress);
        }
        if holds {
            // keepalived: an instance that cannot run after a reload goes through its
            // initial state, which removes the addresses it held.
            out.push(Action::RemoveVips);
        }
        self.set_state(State::Fault, cause, out);
        false
    }

    fn on_startup(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.begin_start("startup", false, out) {
            return;
        }
        if self.is_owner()
            && self.config.initial_state == InitialState::Master
            && (!self.config.sync_group || self.config.sync_group_owners)
        {
            // RFC 5798 6.4.1: the owner goes straight to Master (keepalived: 1 µs in
            // Backup, without notifying it). In a sync group only when every member is
            // an owner (keepalived's group then starts MASTER); otherwise it waits like
            // `state MASTER` below and then asks its group.
            self.become_master(Cause::Startup, now, out);
        } else {
            let wait = if self.config.initial_state == InitialState::Master {
                // keepalived: "allow one adver_int to pass to ensure there is no other
                // master", with the smallest skew.
                self.master_adver_int.as_duration() + self.skew(1)
            } else {
                self.master_down_interval()
            };
            self.arm(TimerKind::MasterDown, now + wait, out);
            self.set_state(State::Backup, Cause::Startup, out);
        }
    }

    /// keepalived's reload of a master (`restore_vrrp_state`, then `vrrp_init_state` with
    /// `reload_master`): the state is kept, the addresses too (the new ones are added and
    /// announced), and the first advertisement goes out at once.
    fn on_resume_master(&mut self, held: &[IpAddr], now: Instant, out: &mut Vec<Action>) {
        if !self.begin_start("resume master", true, out) {
            return;
        }
        // Adds only what is missing: the held addresses are replaced in place.
        self.advertise_and_add_vips(now, out);
        let garp = self.config.garp;
        let added = (self.config.vips.iter())
            .chain(&self.config.excluded_vips)
            .any(|a| !held.contains(a));
        if added {
            // keepalived announces every address when any was added.
            self.send_gratuitous(garp.master_repeat, out);
        }
        if !garp.master_refresh.is_zero() {
            self.arm(TimerKind::GarpRefresh, now + garp.master_refresh, out);
        }
        self.set_state(State::Master, Cause::Reload, out);
    }

    /// keepalived's `set_vrrp_backup` for a deleted VIP/eVIP: `vrrp_state_leave_master`
    /// with a priority-0 advertisement, then the Master_Down timer set to Skew_Time ("we
    /// want a quick transition back to master"). The backups, told by the priority 0 to
    /// wait only their own (longer) skew, hear us again first.
    fn on_address_removed(&mut self, addr: IpAddr, now: Instant, out: &mut Vec<Action>) {
        let ours = self.config.vips.contains(&addr) || self.config.excluded_vips.contains(&addr);
        if self.state != State::Master || !ours {
            self.log(Debug::EventIgnored {
                event: "address removed",
                state: self.state,
            });
            return;
        }
        self.log(Debug::VirtualAddressRemoved { addr: &addr });
        self.cancel_all(out);
        self.send_advert(PRIORITY_RESIGN, out);
        out.push(Action::RemoveVips);
        self.stats.released_master += 1;
        self.preempt_until = None;
        self.master = None;
        self.arm(TimerKind::MasterDown, now + self.skew_time(), out);
        self.set_state(State::Backup, Cause::AddressRemoved, out);
    }

    fn on_shutdown(&mut self, out: &mut Vec<Action>) {
        if self.state == State::Initialize {
            self.log(Debug::EventIgnored {
                event: "shutdown",
                state: self.state,
            });
            return;
        }
        self.cancel_all(out);
        if self.state == State::Master {
            // Priority 0 tells the backups to take over after Skew_Time instead of
            // Master_Down_Interval.
            self.send_advert(PRIORITY_RESIGN, out);
            out.push(Action::RemoveVips);
            self.stats.released_master += 1;
        }
        self.preempt_until = None;
        self.master = None;
        self.set_state(State::Initialize, Cause::Shutdown, out);
    }

    fn on_interface_up(&mut self, primary: Option<IpAddr>, now: Instant, out: &mut Vec<Action>) {
        self.link_up = true;
        self.primary = primary;
        if self.running() && self.source_address().is_none() {
            self.log(Debug::NoSourceAddress);
            self.enter_fault(Cause::NoSourceAddress, out);
        } else {
            self.leave_fault(Cause::InterfaceUp, now, out);
        }
    }

    fn on_priority(&mut self, total: i32, now: Instant, out: &mut Vec<Action>) {
        if self.is_owner() {
            self.log(Debug::OwnerIgnoresTracking { requested: total });
            return;
        }
        let clamped = total.clamp(1, i32::from(PRIORITY_OWNER) - 1);
        let new = u8::try_from(clamped).unwrap_or(PRIORITY_OWNER - 1);
        if new == self.effective_priority {
            return;
        }
        self.log(Debug::PriorityChanged {
            from: self.effective_priority,
            to: new,
        });
        let old_down = self.master_down_interval();
        out.push(Action::EffectivePriorityChanged {
            from: self.effective_priority,
            to: new,
        });
        self.effective_priority = new;
        // keepalived moves a running Master_Down deadline by the change in Skew_Time, so
        // a backup that gained priority takes over sooner (and one that lost it later).
        if self.state == State::Backup
            && let Some(deadline) = self.timer(TimerKind::MasterDown)
        {
            let new_down = self.master_down_interval();
            let at = if new_down >= old_down {
                deadline + (new_down - old_down)
            } else {
                deadline
                    .checked_sub(old_down - new_down)
                    .map_or(now, |at| at.max(now))
            };
            self.arm(TimerKind::MasterDown, at, out);
        }
    }

    fn on_timer(&mut self, kind: TimerKind, now: Instant, out: &mut Vec<Action>) {
        match self.timer(kind) {
            Some(deadline) if deadline <= now => self.timers[kind.index()] = None,
            _ => {
                self.log(Debug::StaleTimer { kind });
                return;
            }
        }
        match (kind, self.state) {
            (TimerKind::MasterDown, State::Backup) if self.config.sync_group => {
                // keepalived's vrrp_sync_can_goto_master: wait, and look again after
                // another Master_Down_Interval, until the group lets us go.
                if !self.wants_master {
                    self.log(Debug::HeldBySyncGroup);
                }
                self.set_wants_master(true, out);
                self.arm(
                    TimerKind::MasterDown,
                    now + self.master_down_interval(),
                    out,
                );
            }
            (TimerKind::MasterDown, State::Backup) => {
                self.become_master(Cause::MasterDown, now, out)
            }
            (TimerKind::Advert, State::Master) => {
                self.send_advert(self.effective_priority, out);
                self.arm(
                    TimerKind::Advert,
                    now + self.config.adver_int.as_duration(),
                    out,
                );
            }
            (TimerKind::GarpDelayed, State::Master) => {
                self.send_gratuitous(self.config.garp.master_repeat, out);
            }
            (TimerKind::GarpRefresh, State::Master) => {
                self.send_gratuitous(self.config.garp.master_refresh_repeat, out);
                self.arm(
                    TimerKind::GarpRefresh,
                    now + self.config.garp.master_refresh,
                    out,
                );
            }
            (TimerKind::GarpLowerPrio, State::Master) => {
                self.send_gratuitous(self.config.garp.lower_prio_repeat, out);
            }
            // Every state change cancels the timers of the state left, so this is a
            // deadline the I/O layer delivered although it was cancelled.
            _ => self.log(Debug::StaleTimer { kind }),
        }
    }

    // ===== receipt =====

    fn drop_advert(
        &mut self,
        reason: DropReason,
        src: &IpAddr,
        detail: String,
        out: &mut Vec<Action>,
    ) {
        self.log(Debug::AdvertDropped {
            reason,
            src,
            detail,
        });
        self.stats.count_drop(reason);
        out.push(Action::CountDrop(reason));
    }

    fn on_advert(&mut self, rx: &Received, now: Instant, out: &mut Vec<Action>) {
        let src = &rx.src;
        if !self.running() {
            let detail = format!("not listening in {} state", self.state);
            return self.drop_advert(DropReason::Inactive, src, detail, out);
        }
        if Some(rx.src) == self.source_address() {
            let detail = "sent from our own address".to_owned();
            return self.drop_advert(DropReason::OwnAdvert, src, detail, out);
        }
        if Family::of(&rx.src) != self.family || Family::of(&rx.dst) != self.family {
            let detail = format!("{} -> {} on an {} instance", rx.src, rx.dst, self.family);
            return self.drop_advert(DropReason::FamilyMismatch, src, detail, out);
        }
        let unicast = self.config.transport.is_unicast();
        // RFC 5798 7.1 requires TTL 255; keepalived skips the check for unicast, where a
        // peer may legitimately be routed (per-peer ranges are checked below instead).
        if !unicast && let Some(ttl) = rx.ttl.filter(|&t| t != TTL) {
            let detail = format!("TTL/hop limit {ttl}, expected {TTL}");
            return self.drop_advert(DropReason::Ttl, src, detail, out);
        }
        let ctx = DecodeContext {
            src: rx.src,
            dst: rx.dst,
        };
        let (advert, form) = match Advertisement::decode(&rx.payload, &ctx) {
            Ok(decoded) => decoded,
            Err(e) => {
                return self.drop_advert(DropReason::from_decode(&e), src, e.to_string(), out);
            }
        };
        if let Some((reason, detail)) = self.check_advert(rx, &advert) {
            return self.drop_advert(reason, src, detail, out);
        }
        self.stats.adverts_received += 1;
        if advert.priority == PRIORITY_RESIGN {
            self.stats.priority_zero_received += 1;
        }
        if form == ChecksumForm::LegacyUnicast
            && unicast
            && self.config.auto_legacy_checksum
            && self.send_checksum_form == ChecksumForm::PseudoHeader
        {
            self.log(Debug::LegacyChecksumAdopted { src });
            self.send_checksum_form = ChecksumForm::LegacyUnicast;
        }
        match self.state {
            State::Backup => self.backup_receive(rx.src, &advert, now, out),
            State::Master => self.master_receive(rx.src, &advert, now, out),
            State::Initialize | State::Fault => {}
        }
    }

    /// The configuration-dependent receive checks, in keepalived's order; the first that
    /// fails, with a description.
    fn check_advert(
        &mut self,
        rx: &Received,
        advert: &Advertisement,
    ) -> Option<(DropReason, String)> {
        let cfg = &self.config;
        if advert.version != cfg.version {
            let detail = format!("{}, expected {}", advert.version, cfg.version);
            return Some((DropReason::VersionMismatch, detail));
        }
        if advert.vrid != cfg.vrid {
            let detail = format!("VRID {}, expected {}", advert.vrid, cfg.vrid);
            return Some((DropReason::VridMismatch, detail));
        }
        if cfg.version == Version::V2 {
            if advert.auth.type_code() != cfg.auth.type_code() {
                let detail = format!(
                    "auth type {}, expected {}",
                    advert.auth.type_code(),
                    cfg.auth.type_code()
                );
                return Some((DropReason::AuthTypeMismatch, detail));
            }
            if let (Auth::Password(theirs), Auth::Password(ours)) = (&advert.auth, &cfg.auth)
                && !constant_time_eq(theirs.as_bytes(), ours.as_bytes())
            {
                return Some((DropReason::AuthFailure, "wrong password".to_owned()));
            }
            // RFC 3768 7.1 MUST; keepalived: "to prevent concurrent VRID running". VRRPv3
            // adopts the master's interval instead (RFC 5798 6.4.2).
            if advert.adver_int != cfg.adver_int {
                let detail = format!("interval {}, ours {}", advert.adver_int, cfg.adver_int);
                return Some((DropReason::IntervalMismatch, detail));
            }
        }
        let unicast = cfg.transport.is_unicast();
        if rx.dst.is_multicast() == unicast {
            let detail = format!(
                "sent to {}, expected {}",
                rx.dst,
                if unicast { "unicast" } else { "multicast" }
            );
            return Some((DropReason::WrongDestination, detail));
        }
        let skip = cfg.address_check == AddressCheck::SkipFromMaster
            && self.state == State::Backup
            && self.master.is_some_and(|m| m.addr == rx.src);
        if skip {
            return None;
        }
        let same_list = advert.addresses.len() == cfg.vips.len()
            && cfg.vips.iter().all(|v| advert.addresses.contains(v));
        if !same_list {
            self.stats.address_list_errors += 1;
            if self.config.address_check == AddressCheck::LogOnly {
                self.log(Debug::AddressListMismatchTolerated {
                    src: &rx.src,
                    count: advert.addresses.len(),
                });
            } else {
                let detail = format!(
                    "advertised addresses {:?} differ from ours {:?}",
                    advert.addresses, self.config.vips
                );
                return Some((DropReason::AddressListMismatch, detail));
            }
        }
        if let Transport::Unicast {
            peers,
            check_src: true,
            ..
        } = &self.config.transport
        {
            let Some(peer) = peers.iter().find(|p| p.addr == rx.src) else {
                let detail = "source is not a unicast peer".to_owned();
                return Some((DropReason::UnknownUnicastPeer, detail));
            };
            if let Some(ttl) = rx.ttl
                && !(peer.min_ttl..=peer.max_ttl).contains(&ttl)
            {
                let detail = format!("TTL {ttl} outside {}-{}", peer.min_ttl, peer.max_ttl);
                return Some((DropReason::Ttl, detail));
            }
        }
        None
    }

    /// RFC 5798 6.4.2 "If an ADVERTISEMENT is received", with keepalived's preempt_delay.
    fn backup_receive(
        &mut self,
        src: IpAddr,
        advert: &Advertisement,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let ours = self.effective_priority;
        if advert.priority == PRIORITY_RESIGN {
            self.log(Debug::PriorityZeroReceived {
                src: &src,
                state: self.state,
            });
            self.arm(TimerKind::MasterDown, now + self.skew_time(), out);
            return;
        }
        let delay = self.config.preempt_delay;
        let delaying = !delay.is_zero() && self.preempt_until.is_none_or(|until| until > now);
        if !self.config.preempt || advert.priority >= ours || delaying {
            if self.config.version == Version::V3 && advert.adver_int != self.master_adver_int {
                self.log(Debug::MasterIntervalAdopted {
                    from: self.master_adver_int,
                    to: advert.adver_int,
                });
                self.master_adver_int = advert.adver_int;
            }
            self.master = Some(MasterInfo {
                addr: src,
                priority: advert.priority,
            });
            self.arm(
                TimerKind::MasterDown,
                now + self.master_down_interval(),
                out,
            );
            // keepalived: a member held back by its group no longer wants Master once it
            // accepts a master's advertisement.
            self.set_wants_master(false, out);
            if !delay.is_zero() {
                if advert.priority >= ours {
                    if self.preempt_until.take().is_some() {
                        self.log(Debug::PreemptDelayStopped);
                    }
                } else if self.preempt_until.is_none() {
                    self.log(Debug::PreemptDelayStarted { delay });
                    self.preempt_until = Some(now + delay);
                }
            }
        } else {
            // Preempting: let the Master_Down timer run out.
            self.log(Debug::LowerPriorityDiscarded {
                src: &src,
                priority: advert.priority,
                ours,
            });
            self.master = Some(MasterInfo {
                addr: src,
                priority: advert.priority,
            });
        }
    }

    /// RFC 5798 6.4.3 "If an ADVERTISEMENT is received", as keepalived's
    /// vrrp_state_master_rx.
    fn master_receive(
        &mut self,
        src: IpAddr,
        advert: &Advertisement,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let prio = advert.priority;
        // The caller checked that a source address exists and differs from `src`.
        let addr_cmp = self
            .source_address()
            .map_or(Ordering::Greater, |ours| src.cmp(&ours));
        let ours = self.effective_priority;
        let outranks = prio > ours || (prio == ours && addr_cmp == Ordering::Greater);
        if prio == PRIORITY_RESIGN || (self.config.higher_prio_send_advert && outranks) {
            self.send_advert(self.effective_priority, out);
            self.arm(
                TimerKind::Advert,
                now + self.config.adver_int.as_duration(),
                out,
            );
            if prio == PRIORITY_RESIGN {
                self.log(Debug::PriorityZeroReceived {
                    src: &src,
                    state: self.state,
                });
                return;
            }
        }
        if prio == ours && ours == PRIORITY_OWNER {
            // Both claim the addresses; keepalived steps down to 254 so that the tie is
            // broken by address like any other.
            self.log(Debug::OwnerConflict { src: &src });
            self.base_priority = PRIORITY_OWNER - 1;
            self.effective_priority = PRIORITY_OWNER - 1;
        }
        let ours = self.effective_priority;
        if prio < ours || (prio == ours && addr_cmp == Ordering::Less) {
            let answering = !self.config.lower_prio_no_advert;
            self.log(Debug::LowerPriorityReceived {
                src: &src,
                priority: prio,
                ours,
                answering,
            });
            if answering {
                // Forces the other router, which presumably missed our advertisements,
                // back to Backup now rather than after its own Master_Down timer.
                self.send_advert(ours, out);
                self.arm(
                    TimerKind::Advert,
                    now + self.config.adver_int.as_duration(),
                    out,
                );
            }
            self.lower_priority_garp(now, out);
            out.push(Action::MasterReceivedLowerPriority {
                from: src,
                priority: prio,
            });
            return;
        }
        self.log(Debug::HigherPriorityReceived {
            src: &src,
            priority: prio,
            ours,
        });
        if self.config.version == Version::V3 && advert.adver_int != self.master_adver_int {
            self.log(Debug::MasterIntervalAdopted {
                from: self.master_adver_int,
                to: advert.adver_int,
            });
            self.master_adver_int = advert.adver_int;
        }
        self.master = Some(MasterInfo {
            addr: src,
            priority: prio,
        });
        let cause = if prio > ours {
            Cause::HigherPriority
        } else {
            Cause::EqualPriorityGreaterAddress
        };
        self.leave_master(cause, now, out);
    }

    // ===== transitions =====

    /// Backup (or Initialize, for the owner) to Master. keepalived's order: advertise
    /// first so the old master drops the addresses, then add and announce them; the state
    /// change is reported last, once the addresses are in place, so notify scripts see
    /// them.
    fn become_master(&mut self, cause: Cause, now: Instant, out: &mut Vec<Action>) {
        self.cancel(TimerKind::MasterDown, out);
        self.master_adver_int = self.config.adver_int;
        self.preempt_until = None;
        self.master = None;
        self.advertise_and_add_vips(now, out);
        let garp = self.config.garp;
        self.send_gratuitous(garp.master_repeat, out);
        if !garp.master_delay.is_zero() {
            self.arm(TimerKind::GarpDelayed, now + garp.master_delay, out);
        }
        if !garp.master_refresh.is_zero() {
            self.arm(TimerKind::GarpRefresh, now + garp.master_refresh, out);
        }
        self.stats.became_master += 1;
        self.set_state(State::Master, cause, out);
    }

    /// How every way into Master begins: advertise at once (so that an old master drops
    /// the addresses first), arm the Adver_Timer, then add the addresses.
    fn advertise_and_add_vips(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.send_advert(self.effective_priority, out);
        self.arm(
            TimerKind::Advert,
            now + self.config.adver_int.as_duration(),
            out,
        );
        out.push(Action::AddVips);
    }

    /// Master to Backup after a better advertisement (or with its sync group).
    fn leave_master(&mut self, cause: Cause, now: Instant, out: &mut Vec<Action>) {
        self.cancel_all(out);
        out.push(Action::RemoveVips);
        self.stats.released_master += 1;
        self.preempt_until = None;
        self.arm(
            TimerKind::MasterDown,
            now + self.master_down_interval(),
            out,
        );
        self.set_state(State::Backup, cause, out);
    }

    /// Backup or Master to Fault. A master resigns with priority 0 if it still can send.
    fn enter_fault(&mut self, cause: Cause, out: &mut Vec<Action>) {
        if !self.running() {
            return;
        }
        self.cancel_all(out);
        if self.state == State::Master {
            if self.link_up {
                self.send_advert(PRIORITY_RESIGN, out);
            }
            out.push(Action::RemoveVips);
            self.stats.released_master += 1;
        }
        self.preempt_until = None;
        self.master = None;
        self.set_state(State::Fault, cause, out);
    }

    /// Fault to Backup (or Master for the owner) once nothing holds it there.
    fn leave_fault(&mut self, cause: Cause, now: Instant, out: &mut Vec<Action>) {
        if self.state != State::Fault || self.fault_cause().is_some() {
            return;
        }
        self.master_adver_int = self.config.adver_int;
        self.preempt_until = None;
        if self.config.transport.is_unicast()
            && let Some(src) = self.source_address()
        {
            // keepalived: a unicast master may have lost us from its ARP cache and could
            // not reach us before our Master_Down timer fires; announce ourselves.
            out.push(Action::SendGratuitous {
                addresses: vec![src],
                repeat: 1,
            });
        }
        let owner_master = self.is_owner() && self.config.initial_state == InitialState::Master;
        if owner_master && !self.config.sync_group {
            self.become_master(cause, now, out);
        } else {
            // keepalived's try_up_instance: an owner in a sync group waits one interval
            // and its skew, then asks its group like any member.
            let wait = if owner_master {
                self.master_adver_int.as_duration() + self.skew_time()
            } else {
                self.master_down_interval()
            };
            self.arm(TimerKind::MasterDown, now + wait, out);
            self.set_state(State::Backup, cause, out);
        }
    }

    fn set_state(&mut self, to: State, cause: Cause, out: &mut Vec<Action>) {
        if to != State::Backup {
            self.set_wants_master(false, out);
        }
        let from = self.state;
        self.state = to;
        self.log(Debug::StateChange { from, to, cause });
        out.push(Action::StateChanged { from, to, cause });
    }

    // ===== output helpers =====

    fn set_wants_master(&mut self, wants: bool, out: &mut Vec<Action>) {
        if self.wants_master != wants {
            self.wants_master = wants;
            out.push(Action::WantsMaster(wants));
        }
    }

    fn send_advert(&mut self, priority: u8, out: &mut Vec<Action>) {
        let Some(src) = self.source_address() else {
            // fault_cause() keeps an instance without a source out of Backup and Master.
            self.log(Debug::NoSourceAddress);
            return;
        };
        let cfg = &self.config;
        let (destinations, ttl) = match &cfg.transport {
            Transport::Multicast { group } => (vec![*group], TTL),
            Transport::Unicast { peers, ttl, .. } => (peers.iter().map(|p| p.addr).collect(), *ttl),
        };
        out.push(Action::SendAdvert(OutgoingAdvert {
            advert: Advertisement {
                version: cfg.version,
                vrid: cfg.vrid,
                priority,
                adver_int: cfg.adver_int,
                auth: cfg.auth,
                addresses: cfg.vips.clone(),
            },
            src,
            destinations,
            checksum_form: self.send_checksum_form,
            ttl,
        }));
        self.stats.adverts_sent += 1;
        if priority == PRIORITY_RESIGN {
            self.stats.priority_zero_sent += 1;
        }
    }

    /// After a lower-priority advertisement (ours or, in a sync group, another member's):
    /// `garp_lower_prio_repeat` rounds now and again after `garp_lower_prio_delay`, to
    /// win back neighbours that the other router may have taken.
    fn lower_priority_garp(&mut self, now: Instant, out: &mut Vec<Action>) {
        let garp = self.config.garp;
        if garp.lower_prio_repeat > 0 {
            self.send_gratuitous(garp.lower_prio_repeat, out);
            if !garp.lower_prio_delay.is_zero() {
                self.arm(TimerKind::GarpLowerPrio, now + garp.lower_prio_delay, out);
            }
        }
    }

    fn send_gratuitous(&self, repeat: u32, out: &mut Vec<Action>) {
        let addresses: Vec<IpAddr> = self
            .config
            .vips
            .iter()
            .chain(&self.config.excluded_vips)
            .copied()
            .collect();
        if repeat > 0 && !addresses.is_empty() {
            out.push(Action::SendGratuitous { addresses, repeat });
        }
    }

    fn arm(&mut self, kind: TimerKind, at: Instant, out: &mut Vec<Action>) {
        self.timers[kind.index()] = Some(at);
        out.push(Action::ArmTimer { kind, at });
    }

    fn cancel(&mut self, kind: TimerKind, out: &mut Vec<Action>) {
        if self.timers[kind.index()].take().is_some() {
            out.push(Action::CancelTimer(kind));
        }
    }

    fn cancel_all(&mut self, out: &mut Vec<Action>) {
        for kind in TimerKind::ALL {
            self.cancel(kind, out);
        }
    }
}

/// Compares passwords without an early exit, as keepalived's memcmp_constant_time, so the
/// time taken does not tell how many leading bytes were right.
fn constant_time_eq(a: &[u8; 8], b: &[u8; 8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(version: Version, priority: u8, centis: u16) -> Instance {
        let mut cfg = InstanceConfig::new("t", 1, version, vec!["10.0.0.100".parse().expect("ip")]);
        cfg.priority = priority;
        cfg.adver_int = AdverInterval::from_centis(centis);
        Instance::new(cfg).expect("valid")
    }

    #[test]
    fn v2_skew_and_master_down() {
        // (256 - 100) / 256 s = 0.609375 s exactly.
        let i = instance(Version::V2, 100, 100);
        assert_eq!(i.skew_time(), Duration::from_micros(609_375));
        assert_eq!(i.master_down_interval(), Duration::from_micros(3_609_375));
        // keepalived rounds microseconds down: 1/256 s = 3906.25 µs.
        let owner = instance(Version::V2, 255, 100);
        assert_eq!(owner.skew_time(), Duration::from_micros(3_906));
    }

    #[test]
    fn v3_skew_scales_with_interval() {
        // ((256 - 200) * 50 cs) / 256 = 10.9375 cs.
        let i = instance(Version::V3, 200, 50);
        assert_eq!(i.skew_time(), Duration::from_micros(109_375));
        assert_eq!(i.master_down_interval(), Duration::from_micros(1_609_375));
        let one_sec = instance(Version::V3, 100, 100);
        assert_eq!(one_sec.skew_time(), Duration::from_micros(609_375));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret\0\0", b"secret\0\0"));
        assert!(!constant_time_eq(b"secret\0\0", b"secreT\0\0"));
    }

    #[test]
    fn validation() {
        let ok = InstanceConfig::new("t", 1, Version::V2, vec!["10.0.0.1".parse().expect("ip")]);
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.adver_int = AdverInterval::from_centis(50);
        assert!(matches!(c.validate(), Err(ConfigError::Interval { .. })));
        let mut c = ok.clone();
        c.vips.push("fe80::1".parse().expect("ip"));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::FamilyMismatch { .. })
        ));
        let mut c = ok.clone();
        c.transport = Transport::Unicast {
            peers: vec![],
            ttl: 255,
            check_src: false,
        };
        assert_eq!(c.validate(), Err(ConfigError::NoUnicastPeers));
        let mut c = ok.clone();
        c.vrid = 0;
        assert_eq!(c.validate(), Err(ConfigError::Vrid));
        let v6 = InstanceConfig::new("t", 1, Version::V2, vec!["fe80::1".parse().expect("ip")]);
        assert_eq!(v6.validate(), Err(ConfigError::V2OverIpv6));
        let mut c = InstanceConfig::new("t", 1, Version::V3, vec!["fe80::1".parse().expect("ip")]);
        assert_eq!(c.family(), Family::Ipv6);
        assert_eq!(c.validate(), Ok(()));
        c.auth = Auth::Password(crate::AuthPassword::new(b"x"));
        assert_eq!(c.validate(), Err(ConfigError::AuthInV3));
    }
}
