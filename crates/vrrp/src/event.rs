//! What goes into the state machine ([`Event`]) and what comes out of it ([`Action`]).
//!
//! The I/O layer turns sockets, netlink notifications, tracking results and timers into
//! events, feeds them to [`crate::Instance::handle`] one at a time, and carries out the
//! actions in the order returned (the order matters: a new master sends its advertisement
//! before it adds the addresses and announces them, as keepalived does, so that the old
//! master drops them first).

use std::fmt;
use std::net::IpAddr;

use tokio::time::Instant;

use crate::packet::{Advertisement, ChecksumForm, DecodeError, EncodeContext, EncodeError};

/// An input to [`crate::Instance::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Leave Initialize: the address owner with `state MASTER` becomes Master at once,
    /// everyone else Backup (or Fault if the interface is down, tracking says so, or there
    /// is no source address).
    Startup,
    /// Startup of an instance that a configuration reload restarted while it was master
    /// (keepalived's `reload_master`): its addresses are still in place and it goes
    /// straight to Master, advertising at once, without passing through Backup (or to
    /// Fault, giving them up, if it cannot run). `held` are the addresses it held before
    /// the reload; if the new configuration has others, all are announced.
    ResumeMaster { held: Vec<IpAddr> },
    /// One of the instance's virtual addresses (advertised or excluded) disappeared from
    /// its interface although the instance did not remove it (`ip addr del`). A master
    /// does what keepalived does (keepalived_netlink.c, "If one of our VIPs/eVIPs has been
    /// deleted, transition to backup"): it resigns with priority 0, removes the rest, goes
    /// to Backup and takes over again after its Skew_Time, before any backup's, putting
    /// the addresses back. Ignored in any other state.
    AddressRemoved(IpAddr),
    /// Stop: a master resigns (priority 0 advertisement, addresses removed); every state
    /// ends in Initialize with all timers cancelled.
    Shutdown,
    /// A datagram for this instance's VRID arrived.
    AdvertReceived(Received),
    /// A deadline from an earlier [`Action::ArmTimer`] passed. Stale expiries (the timer
    /// was re-armed or cancelled since) are recognised and ignored.
    TimerExpired(TimerKind),
    /// The interface is up. `primary` is its primary address of the instance's family
    /// (IPv4, or the link-local IPv6 address), used as the source address when the
    /// configuration names none (`unicast_src_ip` / `mcast_src_ip`). Send it again when
    /// the primary address changes.
    InterfaceUp { primary: Option<IpAddr> },
    /// The interface went down: the instance goes to Fault.
    InterfaceDown,
    /// Configured priority plus the tracking weights currently applied (track_script,
    /// track_interface, track_file), unclamped. The instance clamps it to 1..=254 and, as
    /// keepalived does, ignores it entirely for the address owner (priority 255).
    PriorityChanged(i32),
    /// Tracking puts the instance in FAULT (a weight-0 script failed, a weight-0 tracked
    /// interface is down, ...). The I/O layer aggregates the sources into this one switch.
    ForceFault,
    /// Tracking no longer asks for FAULT.
    ClearFault,
    /// Another member of the instance's `vrrp_sync_group` went to BACKUP: a master
    /// leaves for Backup with it (keepalived's `vrrp_sync_backup`); ignored in any other
    /// state.
    SyncBackup,
    /// Every member of the instance's `vrrp_sync_group` wants Master (keepalived's
    /// `vrrp_sync_master`): a backup becomes Master; ignored in any other state.
    SyncMaster,
    /// Another member of the instance's `vrrp_sync_group`, as master, received a
    /// lower-priority advertisement: keepalived's `vrrp_state_master_rx` then announces
    /// every member's addresses, so a master sends its own `garp_lower_prio_repeat`
    /// burst and arms the `garp_lower_prio_delay` one, as if it had received the
    /// advertisement itself; ignored in any other state.
    SyncLowerPriorityGarp,
}

/// A received datagram, as the I/O layer read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Source address of the IP header.
    pub src: IpAddr,
    /// Destination address of the IP header: the multicast group or our unicast address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit; `None` if the socket did not report it (then, like
    /// keepalived, the TTL check is skipped).
    pub ttl: Option<u8>,
    /// The VRRP message: what follows the IPv4 header (see [`crate::ip::Ipv4Header::parse`])
    /// or the whole IPv6 payload.
    pub payload: Vec<u8>,
}

/// The VRID of a VRRP message, so the I/O layer can route it to its instance before
/// anything is decoded.
pub fn peek_vrid(payload: &[u8]) -> Option<u8> {
    payload.get(1).copied()
}

/// The timers an instance uses. Each kind has at most one deadline at a time; arming it
/// again replaces the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Backup: Master_Down_Timer. Expiry makes the instance Master.
    MasterDown,
    /// Master: Adver_Timer. Expiry sends an advertisement.
    Advert,
    /// Master: the second gratuitous ARP / NA burst, `garp_master_delay` after becoming Master.
    GarpDelayed,
    /// Master: periodic gratuitous ARP / NA refresh (`garp_master_refresh`).
    GarpRefresh,
    /// Master: the second burst after answering a lower-priority advertisement
    /// (`garp_lower_prio_delay`).
    GarpLowerPrio,
}

impl TimerKind {
    pub const ALL: [TimerKind; 5] = [
        TimerKind::MasterDown,
        TimerKind::Advert,
        TimerKind::GarpDelayed,
        TimerKind::GarpRefresh,
        TimerKind::GarpLowerPrio,
    ];

    pub(crate) const fn index(self) -> usize {
        match self {
            TimerKind::MasterDown => 0,
            TimerKind::Advert => 1,
            TimerKind::GarpDelayed => 2,
            TimerKind::GarpRefresh => 3,
            TimerKind::GarpLowerPrio => 4,
        }
    }

    /// A stable snake_case name, for logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            TimerKind::MasterDown => "master_down",
            TimerKind::Advert => "advert",
            TimerKind::GarpDelayed => "garp_delayed",
            TimerKind::GarpRefresh => "garp_refresh",
            TimerKind::GarpLowerPrio => "garp_lower_prio",
        }
    }
}

/// VRRP states (RFC 5798 section 6.4), plus keepalived's FAULT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or shut down.
    Initialize,
    Backup,
    Master,
    /// Cannot take part: interface down, tracking failed, or no source address. Nothing
    /// is sent and received advertisements are ignored.
    Fault,
}

impl State {
    /// keepalived's name for the state, as notify scripts receive it.
    pub const fn keepalived_name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keepalived_name())
    }
}

/// Why a state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// [`Event::Startup`]: Initialize to Backup, or to Master for the address owner.
    Startup,
    /// The Master_Down timer expired: no (acceptable) advertisement from a master for
    /// Master_Down_Interval, or Skew_Time after a priority-0 advertisement.
    MasterDown,
    /// A master received an advertisement with a higher priority.
    HigherPriority,
    /// A master received an advertisement with its own priority from a greater address.
    EqualPriorityGreaterAddress,
    /// [`Event::Shutdown`].
    Shutdown,
    InterfaceDown,
    InterfaceUp,
    /// [`Event::ForceFault`].
    TrackingFault,
    /// [`Event::ClearFault`].
    TrackingRecovered,
    /// [`Event::SyncBackup`] / [`Event::SyncMaster`]: the sync group moved the member.
    SyncGroup,
    /// The interface has no address to send from and none is configured (keepalived:
    /// "entering FAULT state (src address not configured)").
    NoSourceAddress,
    /// [`Event::ResumeMaster`]: a master restarted by a configuration reload.
    Reload,
    /// [`Event::AddressRemoved`]: a virtual address was removed behind the master's back.
    AddressRemoved,
}

impl Cause {
    /// A stable snake_case name, for logs and notifications.
    pub const fn label(self) -> &'static str {
        match self {
            Cause::Startup => "startup",
            Cause::MasterDown => "master_down",
            Cause::HigherPriority => "higher_priority",
            Cause::EqualPriorityGreaterAddress => "equal_priority_greater_address",
            Cause::Shutdown => "shutdown",
            Cause::InterfaceDown => "interface_down",
            Cause::InterfaceUp => "interface_up",
            Cause::TrackingFault => "tracking_fault",
            Cause::TrackingRecovered => "tracking_recovered",
            Cause::SyncGroup => "sync_group",
            Cause::NoSourceAddress => "no_source_address",
            Cause::Reload => "reload",
            Cause::AddressRemoved => "address_removed",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a received datagram was dropped. One reason per receive check, so each gets its
/// own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The instance is in Initialize or Fault and does not listen (keepalived ignores
    /// these silently; counted here so that a stuck FAULT shows).
    Inactive,
    /// Sent from our own source address (a looped-back copy of our advertisement).
    OwnAdvert,
    /// Source or destination is not of the instance's address family.
    FamilyMismatch,
    /// Multicast received with TTL / hop limit other than 255, or a unicast peer's TTL
    /// outside its configured `min_ttl`..`max_ttl`.
    Ttl,
    /// Shorter than the 8-byte header ([`DecodeError::TooShort`]).
    TooShort,
    /// Length does not match the address count ([`DecodeError::BadLength`]).
    BadLength,
    /// [`DecodeError::BadChecksum`].
    BadChecksum,
    /// Not an Advertisement ([`DecodeError::BadType`]).
    BadType,
    /// Neither VRRPv2 nor VRRPv3, or VRRPv2 over IPv6 ([`DecodeError::BadVersion`]).
    BadVersion,
    /// A valid version, but not the one this instance runs.
    VersionMismatch,
    /// VRID other than ours (the I/O layer routes by VRID, so this means a routing bug
    /// or a misdirected datagram).
    VridMismatch,
    /// VRRPv2 auth type unknown ([`DecodeError::UnknownAuthType`]).
    UnknownAuthType,
    /// VRRPv2 auth type differs from ours.
    AuthTypeMismatch,
    /// VRRPv2 password differs from ours.
    AuthFailure,
    /// VRRPv2 advertisement interval differs from ours (RFC 3768 7.1: MUST discard;
    /// VRRPv3 never drops for this).
    IntervalMismatch,
    /// The advertised address list differs from our virtual addresses (keepalived drops;
    /// see [`crate::AddressCheck`]).
    AddressListMismatch,
    /// Multicast received by a unicast instance, or unicast by a multicast one.
    WrongDestination,
    /// Unicast from an address that is not a configured peer (`check_unicast_src`).
    UnknownUnicastPeer,
}

impl DropReason {
    /// A stable snake_case name, for drop-counter labels.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Inactive => "inactive",
            DropReason::OwnAdvert => "own_advert",
            DropReason::FamilyMismatch => "family_mismatch",
            DropReason::Ttl => "ttl",
            DropReason::TooShort => "too_short",
            DropReason::BadLength => "bad_length",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::BadType => "bad_type",
            DropReason::BadVersion => "bad_version",
            DropReason::VersionMismatch => "version_mismatch",
            DropReason::VridMismatch => "vrid_mismatch",
            DropReason::UnknownAuthType => "unknown_auth_type",
            DropReason::AuthTypeMismatch => "auth_type_mismatch",
            DropReason::AuthFailure => "auth_failure",
            DropReason::IntervalMismatch => "interval_mismatch",
            DropReason::AddressListMismatch => "address_list_mismatch",
            DropReason::WrongDestination => "wrong_destination",
            DropReason::UnknownUnicastPeer => "unknown_unicast_peer",
        }
    }

    /// Whether the drop points at a configuration disagreement between routers (worth a
    /// log line at info level, as keepalived logs them) rather than noise.
    pub const fn is_misconfiguration(self) -> bool {
        matches!(
            self,
            DropReason::Ttl
                | DropReason::VersionMismatch
                | DropReason::AuthTypeMismatch
                | DropReason::AuthFailure
                | DropReason::IntervalMismatch
                | DropReason::AddressListMismatch
                | DropReason::WrongDestination
                | DropReason::UnknownUnicastPeer
        )
    }

    pub(crate) const fn from_decode(error: &DecodeError) -> Self {
        match error {
            DecodeError::ContextFamilies { .. } => DropReason::FamilyMismatch,
            DecodeError::TooShort { .. } => DropReason::TooShort,
            DecodeError::BadVersion { .. } => DropReason::BadVersion,
            DecodeError::BadType { .. } => DropReason::BadType,
            DecodeError::BadLength { .. } => DropReason::BadLength,
            DecodeError::BadChecksum { .. } => DropReason::BadChecksum,
            DecodeError::UnknownAuthType { .. } => DropReason::UnknownAuthType,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An advertisement to send, with what the socket needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingAdvert {
    /// `advert.priority` is the priority sent: the effective priority, or 0 when resigning.
    pub advert: Advertisement,
    /// The source address to send from (the pseudo-header of the VRRPv3 checksum covers
    /// it, so the socket must use exactly this one).
    pub src: IpAddr,
    /// The multicast group, or every unicast peer (one datagram each).
    pub destinations: Vec<IpAddr>,
    pub checksum_form: ChecksumForm,
    /// TTL / hop limit to send with: 255, or `unicast_ttl`.
    pub ttl: u8,
}

impl OutgoingAdvert {
    /// The priority this advertisement carries.
    pub fn priority(&self) -> u8 {
        self.advert.priority
    }

    /// The VRRP message for one destination (the checksum may depend on it).
    pub fn encode(&self, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
        self.advert.encode(&EncodeContext {
            src: self.src,
            dst,
            checksum_form: self.checksum_form,
        })
    }
}

/// An output of [`crate::Instance::handle`], to be carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert(OutgoingAdvert),
    /// Install the instance's virtual addresses (advertised and excluded), routes and
    /// rules, and apply accept mode. The I/O layer holds their full description.
    AddVips,
    /// Remove everything [`Action::AddVips`] installed.
    RemoveVips,
    /// Send `repeat` rounds of gratuitous ARP (IPv4) / unsolicited NA (IPv6), one frame per
    /// address per round, paced by the global `vrrp_garp_interval` / `vrrp_gna_interval`.
    SendGratuitous {
        addresses: Vec<IpAddr>,
        repeat: u32,
    },
    /// Deliver [`Event::TimerExpired`]`(kind)` at `at`, replacing any deadline for `kind`.
    ArmTimer {
        kind: TimerKind,
        at: Instant,
    },
    CancelTimer(TimerKind),
    /// Comes after the actions that realise the new state (advertisement sent, addresses
    /// added or removed), so a notify script started on it sees them in place.
    StateChanged {
        from: State,
        to: State,
        cause: Cause,
    },
    /// A received datagram was dropped; count it.
    CountDrop(DropReason),
    /// The master received an advertisement with a lower priority (or the same priority
    /// from a lower address): keepalived's `notify_master_rx_lower_pri` event.
    MasterReceivedLowerPriority {
        from: IpAddr,
        priority: u8,
    },
    /// The effective priority changed (tracking), not for the address owner:
    /// keepalived's `MASTER_PRIORITY` / `BACKUP_PRIORITY` notify-FIFO events.
    EffectivePriorityChanged {
        from: u8,
        to: u8,
    },
    /// A sync-group member ([`crate::InstanceConfig::sync_group`]) now waits in Backup for
    /// its group to let it become Master (true), or no longer does (false: it accepted a
    /// master's advertisement, or left Backup). The group coordinator needs every change.
    WantsMaster(bool),
}
