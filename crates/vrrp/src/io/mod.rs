//! The thin I/O layer around [`Instance`]: sockets, netlink and timers, driven by tokio.
//!
//! One task per instance ([`run_instance`]) owns the [`Instance`] and feeds it, one at a
//! time: [`Event::InterfaceUp`] with the interface's primary address and
//! [`Event::Startup`]; every datagram of its VRID ([`Event::AdvertReceived`]); timer
//! expiries ([`Event::TimerExpired`], from the deadlines of [`Action::ArmTimer`], on
//! `tokio::time::Instant`); and [`Event::Shutdown`] when the shutdown signal flips (a
//! master then resigns with priority 0 and removes its addresses). It carries out the
//! actions in order: advertisements on a raw socket (`socket::VrrpSocketV4`), virtual
//! addresses through rtnetlink ([`netlink::Netlink`]), gratuitous ARP / unsolicited NA
//! through `AF_PACKET`.
//!
//! Nothing in the loop waits on anything but the socket, the timers, the tracking channel
//! ([`DriverOptions::tracking`]), its sync group's requests ([`DriverOptions::sync`]) and
//! the shutdown signal, and the netlink requests it makes (answered by the local kernel
//! at once, each bounded by [`netlink::REQUEST_TIMEOUT`]); frame sends are non-blocking
//! syscalls, and scripts (tracking and notify) run in other tasks. Gratuitous ARPs / NAs
//! are paced per interface ([`DriverOptions::announce_intervals`], [`crate::pace`]).
//!
//! Both families: IPv4 (VRRPv2 and VRRPv3) and IPv6 (VRRPv3), multicast and unicast. The
//! source of IPv6 advertisements is the interface's link-local address.
//!
//! The interface is looked at every [`LINK_POLL`] (its index, flags and addresses): an
//! interface that is missing, administratively down or without carrier (`IFF_RUNNING`
//! clear: the cable is pulled) is [`Event::InterfaceDown`], so the instance waits in
//! FAULT, having given up its addresses; when it is back, [`Event::InterfaceUp`] with its
//! current primary address (also sent whenever that address changes). The sockets are
//! (re)opened whenever the interface (re)appears with a new index.
//!
//! Address removals in the namespace arrive at once from an rtnetlink subscription
//! ([`netlink::AddressWatch`]); one of a master's own addresses that is gone (checked
//! against the kernel, since the notification may be about a removal of ours, since
//! undone) becomes [`Event::AddressRemoved`].

pub mod netlink;
mod socket;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::LinkAddr;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use crate::announce::{MacAddr, UnsolicitedNa, gratuitous_arp};
use crate::event::{Action, Cause, Event, OutgoingAdvert, Received, State, TimerKind};
use crate::instance::{ConfigError, Instance, InstanceConfig, Stats, Transport};
use crate::pace::{AnnounceIntervals, AnnounceQueue, InterfacePace};
use crate::packet::Family;
use crate::track::{TrackInput, TrackingUpdate};

use netlink::{
    AddrAttrs, AddressWatch, IFA_F_NODAD, IFA_F_NOPREFIXROUTE, InterfaceAddr, Netlink,
    NetlinkError, RemovedAddr,
};
use socket::{PacketSocket, VrrpSocket, VrrpSocketV4, VrrpSocketV6};

/// How often the driver looks at its interface (presence, up, carrier, addresses).
pub const LINK_POLL: Duration = Duration::from_millis(200);
/// IPv6 address flags: duplicate address detection failed / still running.
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;

/// Why an instance could not start (once running, I/O errors are logged and the
/// instance carries on: a lost advertisement is what VRRP is built to survive; a missing
/// or failed interface is not an error but FAULT, until it comes back).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No longer returned: IPv6 instances run.
    #[error("IPv6 instances are not supported by the I/O layer yet")]
    Ipv6Unsupported,
    #[error("interface {interface}: {errno}")]
    NoInterface { interface: String, errno: Errno },
    #[error("interface {interface} has no link-layer address")]
    NoLinkAddress { interface: String },
    #[error("{what} on {interface}: {source}")]
    Socket {
        what: &'static str,
        interface: String,
        source: io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// `brd` of a `virtual_ipaddress` entry (IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipBroadcast {
    Address(Ipv4Addr),
    /// `brd +`: the address with its host bits set.
    HostBitsSet,
    /// `brd -`: the address with its host bits clear.
    HostBitsClear,
}

/// How one virtual address is put on an interface: a `virtual_ipaddress` entry,
/// `addr[/prefix] [brd X] [dev IF] [scope S] [label L] [noprefixroute] [-nodad]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipOptions {
    pub address: IpAddr,
    pub prefix: u8,
    pub broadcast: Option<VipBroadcast>,
    /// `RT_SCOPE_*`: 0 global (the default), 200 site, 253 link, 254 host, 255 nowhere.
    pub scope: u8,
    /// `IFA_LABEL` (IPv4 only).
    pub label: Option<String>,
    /// `dev IF`: the address goes on this interface instead of the instance's.
    pub dev: Option<String>,
    /// `IFA_F_NOPREFIXROUTE`.
    pub noprefixroute: bool,
    /// `-nodad`: `IFA_F_NODAD` (IPv6 VIPs always get it: they must be usable at once).
    pub nodad: bool,
    /// `no_track`: removed by someone else, it is left alone (no transition).
    pub no_track: bool,
}

impl VipOptions {
    /// `address/prefix` with no other option.
    pub fn new(address: IpAddr, prefix: u8) -> Self {
        VipOptions {
            address,
            prefix,
            broadcast: None,
            scope: 0,
            label: None,
            dev: None,
            noprefixroute: false,
            nodad: false,
            no_track: false,
        }
    }

    /// `address` with a host prefix (/32, /128), as keepalived gives a bare address.
    pub fn host(address: IpAddr) -> Self {
        Self::new(address, if address.is_ipv4() { 32 } else { 128 })
    }

    /// A `scope` word as `ip` and keepalived read it: a name or a number.
    pub fn parse_scope(word: &str) -> Option<u8> {
        match word {
            "global" | "universe" => Some(0),
            "site" => Some(200),
            "link" => Some(253),
            "host" => Some(254),
            "nowhere" => Some(255),
            n => n.parse().ok(),
        }
    }

    /// The broadcast address to set, if any (IPv4 only).
    pub fn broadcast_address(&self) -> Option<Ipv4Addr> {
        let IpAddr::V4(addr) = self.address else {
            return None;
        };
        let host_bits = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
        match self.broadcast? {
            VipBroadcast::Address(a) => Some(a),
            VipBroadcast::HostBitsSet => Some(Ipv4Addr::from(u32::from(addr) | host_bits)),
            VipBroadcast::HostBitsClear => Some(Ipv4Addr::from(u32::from(addr) & !host_bits)),
        }
    }

    fn attrs(&self) -> AddrAttrs {
        let mut flags = 0;
        if self.nodad || self.address.is_ipv6() {
            flags |= IFA_F_NODAD;
        }
        if self.noprefixroute {
            flags |= IFA_F_NOPREFIXROUTE;
        }
        AddrAttrs {
            flags,
            scope: self.scope,
            broadcast: self.broadcast_address(),
            label: self.label.clone().filter(|_| self.address.is_ipv4()),
        }
    }
}

/// What a sync-group member's driver tells its group: sent on every state change, every
/// change of [`Action::WantsMaster`], after every tracking update (so that the group
/// sees a member it released from FAULT confirm its state), and when the member, as
/// master, receives a lower-priority advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberReport {
    pub state: State,
    pub wants_master: bool,
    /// Sent for [`Action::MasterReceivedLowerPriority`]: the other members are to send
    /// their lower-priority gratuitous bursts
    /// ([`crate::sync::SyncGroup::lower_priority_received`]).
    pub lower_priority_received: bool,
}

/// What the driver tells its notifier, in order (keepalived's notify events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {
    /// The instance entered `state`; `priority` is its effective priority.
    State { state: State, priority: u8 },
    /// The effective priority changed to `priority` while in `state` (the FIFO's
    /// `MASTER_PRIORITY` / `BACKUP_PRIORITY` lines, with `notify_priority_changes`).
    Priority { state: State, priority: u8 },
    /// The master received a lower-priority advertisement (`MASTER_RX_LOWER_PRI`).
    MasterRxLowerPriority { priority: u8 },
}

/// What the driver publishes for status reporting ([`DriverOptions::report`]), after
/// every event it handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceReport {
    pub state: State,
    /// The last state change with its cause, and how many there have been (so that a
    /// reader that missed intermediate values still sees each new change).
    pub last_transition: Option<(State, State, Cause)>,
    pub transitions: u64,
    /// The current master's address when known: the instance's own source address
    /// while it is master, else the last master it heard.
    pub master: Option<IpAddr>,
    pub stats: Stats,
}

impl Default for InstanceReport {
    fn default() -> Self {
        InstanceReport {
            state: State::Initialize,
            last_transition: None,
            transitions: 0,
            master: None,
            stats: Stats::default(),
        }
    }
}

/// A `vrrp_sync_group`'s request to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncRequest {
    /// [`Event::SyncBackup`].
    Backup,
    /// [`Event::SyncMaster`].
    Master,
    /// [`Event::SyncLowerPriorityGarp`].
    LowerPriorityGarp,
}

/// Every interface's [`InterfacePace`] by name, shared (cloned) by the drivers of one
/// process, as keepalived keeps one `garp_delay` per interface for all its instances.
#[derive(Clone, Debug, Default)]
pub struct InterfacePaces(Arc<Mutex<HashMap<String, InterfacePace>>>);

impl InterfacePaces {
    /// Runs `f` on `interface`'s pace. The lock is held only for `f`, which must not block.
    fn with<T>(&self, interface: &str, f: impl FnOnce(&mut InterfacePace) -> T) -> T {
        let mut paces = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(paces.entry(interface.to_owned()).or_default())
    }
}

/// A sync-group member's two channels to its group's coordinator.
#[derive(Debug)]
pub struct SyncLink {
    pub reports: mpsc::UnboundedSender<MemberReport>,
    pub requests: mpsc::UnboundedReceiver<SyncRequest>,
}

/// How the driver runs one instance, beyond the protocol configuration.
#[derive(Debug)]
pub struct DriverOptions {
    /// The `interface` of the `vrrp_instance`.
    pub interface: String,
    /// How the virtual addresses (and excluded ones) are configured
    /// (`virtual_ipaddress { 10.0.0.100/24 label eth0:vip }`); an address not listed
    /// gets a host prefix (/32, /128) and no options, as in keepalived.
    pub vips: Vec<VipOptions>,
    /// Receives every state the instance enters (for status reporting, sync groups and
    /// tests), and the current state again after each tracking update is applied.
    pub state: Option<watch::Sender<State>>,
    /// What tracking (`track_script`, `track_interface`, `track_file`) currently asks
    /// for, from [`crate::track::run_tracker`]. The value present at start is applied
    /// before [`Event::Startup`]; every change becomes [`Event::PriorityChanged`] /
    /// [`Event::ForceFault`] / [`Event::ClearFault`] ([`TrackingUpdate::events_since`]).
    /// Scripts run in their own tasks: the driver only reads this channel.
    pub tracking: Option<watch::Receiver<TrackingUpdate>>,
    /// The link to the instance's `vrrp_sync_group` coordinator, for a member
    /// ([`InstanceConfig::sync_group`]).
    pub sync: Option<SyncLink>,
    /// `vrrp_garp_interval` / `vrrp_gna_interval` (zero: announcements are not paced).
    pub announce_intervals: AnnounceIntervals,
    /// The pacing state of each interface, shared by the instances of one process.
    pub paces: InterfacePaces,
    /// Gets every [`Notification`], in order (for a [`crate::notify::Notifier`]); the
    /// last one is the state [`State::Initialize`] (keepalived's STOP) when the instance
    /// shuts down.
    pub notify: Option<mpsc::UnboundedSender<Notification>>,
    /// Gets the instance's state, last transition (with its cause), current master and
    /// counters whenever one of them changes.
    pub report: Option<watch::Sender<InstanceReport>>,
    /// For an instance that a configuration reload restarts while it was master: the
    /// addresses it held (its previous configuration's, still on the interfaces). The
    /// driver keeps those the new configuration still has (where it would otherwise
    /// remove them as stale at startup), removes the others, and starts the instance
    /// with [`Event::ResumeMaster`] instead of [`Event::Startup`], as keepalived keeps a
    /// reloaded master's state and addresses.
    pub resume_master: Option<Vec<VipOptions>>,
}

impl DriverOptions {
    pub fn new(interface: impl Into<String>) -> Self {
        DriverOptions {
            interface: interface.into(),
            vips: Vec::new(),
            state: None,
            tracking: None,
            sync: None,
            announce_intervals: AnnounceIntervals::default(),
            paces: InterfacePaces::default(),
            notify: None,
            report: None,
            resume_master: None,
        }
    }
}

/// Runs one VRRP instance on `interface` until `shutdown` becomes true (or its sender
/// is dropped); returns the instance's counters. Must be called in the network namespace
/// of the interface, inside a tokio runtime with I/O and time enabled.
pub async fn run_instance(
    config: InstanceConfig,
    interface: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, IoError> {
    run_instance_with(config, DriverOptions::new(interface), shutdown).await
}

/// [`run_instance`] with all options.
pub async fn run_instance_with(
    config: InstanceConfig,
    options: DriverOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Stats, IoError> {
    let mut tracking = options.tracking.clone();
    let mut options = options;
    let (group_tx, mut sync_requests) = match options.sync.take() {
        Some(SyncLink { reports, requests }) => (Some(reports), Some(requests)),
        None => (None, None),
    };
    let mut driver = Driver::new(config, options)?;
    driver.group_tx = group_tx;
    let mut tracked: Option<TrackingUpdate> = None;
    if let Some(rx) = &mut tracking {
        let update = *rx.borrow_and_update();
        driver.apply_tracking(&update, tracked.as_ref()).await;
        tracked = Some(update);
    }
    // Tells the instance whether the interface is there (InterfaceDown before Startup
    // starts it in FAULT) and its primary address.
    driver.refresh_link().await;
    match driver.keep.take() {
        Some(held) => {
            driver.remove_unconfigured(&held).await;
            let held = held.iter().map(|v| v.address).collect();
            driver.handle(Event::ResumeMaster { held }).await;
        }
        None => driver.handle(Event::Startup).await,
    }

    let stop = async move {
        // A dropped sender means nobody can stop us any more: stop now.
        let _ = shutdown.wait_for(|&stop| stop).await;
    };
    tokio::pin!(stop);
    let mut link_poll = interval_at(Instant::now() + LINK_POLL, LINK_POLL);
    link_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut buf = vec![0; 4096];
    loop {
        let next_timer = driver.timers.iter().flatten().min().copied();
        tokio::select! {
            biased;
            () = &mut stop => break,
            received = recv(driver.port.as_ref().map(|p| &p.sock), &mut buf) => match received {
                Ok(Some(rx)) => {
                    if crate::event::peek_vrid(&rx.payload) == Some(driver.instance.config().vrid) {
                        driver.handle(Event::AdvertReceived(rx)).await;
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    instance = %driver.instance.config().name, %error, "receiving advertisement"
                ),
            },
            () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                let now = Instant::now();
                for kind in TimerKind::ALL {
                    if driver.timers[kind.index()].is_some_and(|at| at <= now) {
                        driver.timers[kind.index()] = None;
                        driver.handle(Event::TimerExpired(kind)).await;
                    }
                }
            }
            () = sleep_until(driver.announce_at.unwrap_or_else(Instant::now)), if driver.announce_at.is_some() => {
                driver.announce_due();
            }
            removed = address_removed(driver.address_watch.as_mut()) => match removed {
                Some(removed) => driver.address_removed(removed).await,
                None => {
                    // The subscription ended (a netlink overrun, say): from now on a VIP
                    // taken away is noticed only by the link poll's FAULT handling.
                    tracing::warn!(
                        instance = %driver.instance.config().name,
                        "address notifications ended: a virtual address removed by someone else will go unnoticed"
                    );
                    driver.address_watch = None;
                }
            },
            _ = link_poll.tick() => driver.refresh_link().await,
            changed = tracking_changed(tracking.as_mut()) => {
                if changed {
                    if let Some(rx) = &mut tracking {
                        let update = *rx.borrow_and_update();
                        driver.apply_tracking(&update, tracked.as_ref()).await;
                        tracked = Some(update);
                        // Confirms the state once tracking is applied, changed or not
                        // (a sync group waits for this after lifting a forced FAULT).
                        if let Some(tx) = &driver.state_tx {
                            tx.send_replace(driver.instance.state());
                        }
                        driver.report_to_group();
                    }
                } else {
                    // Tracking is gone: keep the last update in force.
                    tracking = None;
                }
            }
            request = sync_requested(sync_requests.as_mut()) => match request {
                Some(SyncRequest::Backup) => driver.handle(Event::SyncBackup).await,
                Some(SyncRequest::Master) => driver.handle(Event::SyncMaster).await,
                Some(SyncRequest::LowerPriorityGarp) => {
                    driver.handle(Event::SyncLowerPriorityGarp).await
                }
                None => sync_requests = None,
            },
        }
    }
    driver.handle(Event::Shutdown).await;
    Ok(driver.instance.stats().clone())
}

/// Waits for a new tracking update: true when there is one, false when the sender is
/// gone; never, without tracking.
async fn tracking_changed(rx: Option<&mut watch::Receiver<TrackingUpdate>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The next address removal in the namespace; `None` when the subscription is gone;
/// never, without one.
async fn address_removed(watch: Option<&mut AddressWatch>) -> Option<RemovedAddr> {
    match watch {
        Some(watch) => watch.next_removed().await,
        None => std::future::pending().await,
    }
}

/// The sync group's next request; `None` when the group is gone; never, outside a group.
async fn sync_requested(
    rx: Option<&mut mpsc::UnboundedReceiver<SyncRequest>>,
) -> Option<SyncRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether `interface` exists, is administratively up and has carrier.
pub fn interface_is_up(interface: &str) -> bool {
    matches!(probe_link(interface), Ok(Some(LinkInfo { up: true, .. })))
}

/// `track_interface`: looks at `interface` every `poll` and sends
/// [`TrackInput::Interface`] at start and whenever it goes up or down, until every
/// subscriber is gone.
pub async fn run_interface_tracker(
    interface: String,
    poll: Duration,
    subscribers: Vec<mpsc::UnboundedSender<TrackInput>>,
) {
    let mut last: Option<bool> = None;
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if subscribers.iter().all(mpsc::UnboundedSender::is_closed) {
            return;
        }
        let up = interface_is_up(&interface);
        if last != Some(up) {
            if last.is_some() {
                tracing::info!(%interface, up, "tracked interface changed");
            }
            last = Some(up);
            for s in &subscribers {
                let _ = s.send(TrackInput::Interface {
                    name: interface.clone(),
                    up,
                });
            }
        }
    }
}

/// The next datagram of `sock`; never, without a socket.
async fn recv(sock: Option<&VrrpSocket>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    match sock {
        Some(sock) => sock.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// What the driver saw of its interface.
struct LinkInfo {
    ifindex: u32,
    link: LinkAddr,
    /// Administratively up and running (carrier).
    up: bool,
}

/// Looks the interface up: `None` when it does not exist.
fn probe_link(interface: &str) -> Result<Option<LinkInfo>, Errno> {
    let Ok(ifindex) = nix::net::if_::if_nametoindex(interface) else {
        return Ok(None);
    };
    let found = nix::ifaddrs::getifaddrs()?
        .filter(|a| a.interface_name == interface)
        .find_map(|a| {
            let link = a.address.and_then(|s| s.as_link_addr().copied())?;
            Some((link, a.flags))
        });
    Ok(found.map(|(link, flags)| LinkInfo {
        ifindex,
        link,
        up: flags.contains(InterfaceFlags::IFF_UP) && flags.contains(InterfaceFlags::IFF_RUNNING),
    }))
}

/// The sockets of the interface, opened when it appears.
struct Port {
    ifindex: u32,
    mac: MacAddr,
    sock: VrrpSocket,
    packet: PacketSocket,
}

struct Driver {
    instance: Instance,
    interface: String,
    family: Family,
    /// `None` while the interface is missing (or its sockets could not be opened).
    port: Option<Port>,
    /// What the instance was last told: interface usable, and its primary address.
    link_up: bool,
    primary: Option<IpAddr>,
    /// The last problem with the interface, logged once rather than every poll.
    link_problem: Option<String>,
    netlink: Netlink,
    /// The namespace's address removals, if the subscription could be opened.
    address_watch: Option<AddressWatch>,
    /// Advertised and excluded addresses with their options.
    vips: Vec<VipOptions>,
    /// Until startup, for a master resumed after a reload: the addresses it held
    /// ([`DriverOptions::resume_master`]).
    keep: Option<Vec<VipOptions>>,
    timers: [Option<Instant>; TimerKind::ALL.len()],
    state_tx: Option<watch::Sender<State>>,
    notify_tx: Option<mpsc::UnboundedSender<Notification>>,
    group_tx: Option<mpsc::UnboundedSender<MemberReport>>,
    /// Announcements waiting for the interface's pacing, and when to look again.
    announce: AnnounceQueue,
    announce_at: Option<Instant>,
    paces: InterfacePaces,
    report_tx: Option<watch::Sender<InstanceReport>>,
    last_transition: Option<(State, State, Cause)>,
    transitions: u64,
}

impl Driver {
    fn new(config: InstanceConfig, options: DriverOptions) -> Result<Self, IoError> {
        let instance = Instance::new(config)?;
        let config = instance.config();
        let vips: Vec<VipOptions> = config
            .vips
            .iter()
            .chain(&config.excluded_vips)
            .map(|addr| {
                options
                    .vips
                    .iter()
                    .find(|v| v.address == *addr)
                    .cloned()
                    .unwrap_or_else(|| VipOptions::host(*addr))
            })
            .collect();
        Ok(Driver {
            family: config.family(),
            interface: options.interface,
            port: None,
            // As the instance assumes until told otherwise.
            link_up: true,
            primary: None,
            link_problem: None,
            netlink: Netlink::open()?,
            address_watch: match AddressWatch::open() {
                Ok(watch) => Some(watch),
                Err(error) => {
                    tracing::warn!(
                        instance = %config.name, %error,
                        "cannot watch address removals: a virtual address removed by someone else will go unnoticed"
                    );
                    None
                }
            },
            vips,
            keep: options.resume_master,
            timers: [None; TimerKind::ALL.len()],
            state_tx: options.state,
            notify_tx: options.notify,
            group_tx: None,
            announce: AnnounceQueue::new(options.announce_intervals),
            announce_at: None,
            paces: options.paces,
            report_tx: options.report,
            last_transition: None,
            transitions: 0,
            instance,
        })
    }

    /// Sends one gratuitous ARP (IPv4) or unsolicited NA (IPv6) per address, in order.
    fn announce(&self, addresses: &[IpAddr]) {
        let Some(port) = &self.port else { return };
        for addr in addresses {
            let result = match addr {
                IpAddr::V4(a) => port.packet.send(&gratuitous_arp(port.mac, *a)),
                IpAddr::V6(a) => port.packet.send(
                    &UnsolicitedNa {
                        src_mac: port.mac,
                        src_ip: *a,
                        target: *a,
                        router: false,
                    }
                    .frame(),
                ),
            };
            if let Err(error) = result {
                tracing::warn!(
                    instance = %self.instance.config().name, %addr, %error,
                    "sending announcement"
                );
            }
        }
    }

    /// Sends the queued announcements the interface's pacing now allows.
    fn announce_due(&mut self) {
        let now = Instant::now();
        let paces = self.paces.clone();
        let send = paces.with(&self.interface, |pace| {
            let send = self.announce.due(now, pace);
            self.announce_at = self.announce.next_wake(pace);
            send
        });
        self.announce(&send);
    }

    fn notify(&self, notification: Notification) {
        if let Some(tx) = &self.notify_tx {
            let _ = tx.send(notification);
        }
    }

    /// Tells the sync group (if any) the instance's state and wish.
    fn report_to_group(&self) {
        self.send_to_group(false);
    }

    fn send_to_group(&self, lower_priority_received: bool) {
        if let Some(tx) = &self.group_tx {
            let _ = tx.send(MemberReport {
                state: self.instance.state(),
                wants_master: self.instance.wants_master(),
                lower_priority_received,
            });
        }
    }

    fn note_link_problem(&mut self, problem: String) {
        if self.link_problem.as_ref() != Some(&problem) {
            tracing::warn!(
                instance = %self.instance.config().name, interface = %self.interface,
                "{problem}"
            );
            self.link_problem = Some(problem);
        }
    }

    /// Looks at the interface and tells the instance what changed.
    async fn refresh_link(&mut self) {
        let info = match probe_link(&self.interface) {
            Ok(info) => info,
            Err(errno) => {
                self.note_link_problem(format!("listing interfaces: {errno}"));
                return;
            }
        };
        let ifindex = info.as_ref().map(|i| i.ifindex);
        if self.port.as_ref().map(|p| p.ifindex) != ifindex {
            if self.port.take().is_some() {
                // The interface went away (or was replaced by another of the same name).
                self.link_down().await;
            }
            if let Some(info) = &info {
                match self.open_port(info).await {
                    Ok(port) => self.port = Some(port),
                    Err(error) => self.note_link_problem(error.to_string()),
                }
            }
        }
        let Some(info) = info.filter(|_| self.port.is_some()) else {
            if self.port.is_none() && ifindex.is_none() {
                self.note_link_problem("interface does not exist".to_owned());
            }
            self.link_down().await;
            return;
        };
        if !info.up {
            self.note_link_problem("interface is down or has no carrier".to_owned());
            self.link_down().await;
            return;
        }
        let primary = match self.netlink.addresses(info.ifindex).await {
            Ok(present) => self.pick_primary(&present),
            Err(error) => {
                self.note_link_problem(format!("listing addresses: {error}"));
                return;
            }
        };
        if !self.link_up || primary != self.primary {
            if self.link_problem.take().is_some() {
                tracing::info!(
                    instance = %self.instance.config().name, interface = %self.interface,
                    ?primary, "interface usable"
                );
            }
            self.link_up = true;
            self.primary = primary;
            self.handle(Event::InterfaceUp { primary }).await;
        }
    }

    async fn link_down(&mut self) {
        if self.link_up {
            self.link_up = false;
            self.handle(Event::InterfaceDown).await;
        }
    }

    /// The address to advertise from: the primary IPv4 address, or the link-local IPv6
    /// address once duplicate address detection has passed; never a virtual address.
    fn pick_primary(&self, present: &[InterfaceAddr]) -> Option<IpAddr> {
        let not_vip = |a: &&InterfaceAddr| !self.vips.iter().any(|v| v.address == a.addr);
        match self.family {
            Family::Ipv4 => present
                .iter()
                .filter(|a| a.addr.is_ipv4() && !a.is_secondary())
                .find(not_vip)
                .map(|a| a.addr),
            Family::Ipv6 => present
                .iter()
                .filter(|a| match a.addr {
                    IpAddr::V6(v6) => is_link_local(&v6),
                    IpAddr::V4(_) => false,
                })
                .filter(|a| a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0)
                .find(not_vip)
                .map(|a| a.addr),
        }
    }

    /// Opens the sockets of a (re)appeared interface, first removing virtual addresses
    /// left on it (by a previous run that did not shut down cleanly: a backup must not
    /// hold them). The instance is not master here: it was told the interface was gone.
    async fn open_port(&mut self, info: &LinkInfo) -> Result<Port, IoError> {
        let config = self.instance.config();
        let interface = &self.interface;
        let ifindex = info.ifindex;
        let present = self.netlink.addresses(ifindex).await?;
        // Addresses held before a reload are not stale: they stay, or the reload's
        // clear_diff removes them (`remove_unconfigured`), once.
        for stale in present.iter().filter(|a| {
            self.vips.iter().any(|v| {
                v.dev.is_none() && v.address == a.addr && !self.was_held(a.addr, a.prefix_len, None)
            })
        }) {
            tracing::warn!(
                instance = %config.name, interface, address = %stale.addr,
                "removing stale virtual address"
            );
            self.netlink
                .del_address(ifindex, stale.addr, stale.prefix_len)
                .await?;
        }
        // Addresses on other interfaces (`dev IF`) left by a previous run.
        for vip in self
            .vips
            .iter()
            .filter(|v| v.dev.is_some() && !self.is_kept(v))
        {
            let Some(dev_index) = vip_dev_index(vip) else {
                continue;
            };
            let Ok(present) = self.netlink.addresses(dev_index).await else {
                continue;
            };
            let stale = present.iter().find(|a| {
                a.addr == vip.address && !self.was_held(a.addr, a.prefix_len, vip.dev.as_deref())
            });
            if let Some(stale) = stale {
                tracing::warn!(
                    instance = %config.name, interface = ?vip.dev, address = %stale.addr,
                    "removing stale virtual address"
                );
                self.netlink
                    .del_address(dev_index, stale.addr, stale.prefix_len)
                    .await?;
            }
        }
        let mac = info.link.addr().ok_or_else(|| IoError::NoLinkAddress {
            interface: interface.clone(),
        })?;
        let socket_error = |what| {
            let interface = interface.clone();
            move |source| IoError::Socket {
                what,
                interface,
                source,
            }
        };
        let packet = PacketSocket::open(info.link).map_err(socket_error("AF_PACKET socket"))?;
        let group = match &config.transport {
            Transport::Multicast { group } => Some(*group),
            _ => None,
        };
        let sock = match self.family {
            Family::Ipv4 => VrrpSocket::V4(
                VrrpSocketV4::open(
                    interface,
                    ifindex,
                    group.and_then(|g| match g {
                        IpAddr::V4(g) => Some(g),
                        IpAddr::V6(_) => None,
                    }),
                )
                .map_err(socket_error("VRRP socket"))?,
            ),
            Family::Ipv6 => VrrpSocket::V6(
                VrrpSocketV6::open(
                    interface,
                    ifindex,
                    group.and_then(|g| match g {
                        IpAddr::V6(g) => Some(g),
                        IpAddr::V4(_) => None,
                    }),
                )
                .map_err(socket_error("VRRP socket"))?,
            ),
        };
        tracing::info!(
            instance = %config.name, vrid = config.vrid, interface, ifindex,
            "VRRP sockets opened"
        );
        Ok(Port {
            ifindex,
            mac,
            sock,
            packet,
        })
    }

    /// Whether `vip` was held before a reload and stays (same address, prefix and
    /// interface), so it is no stale address.
    fn is_kept(&self, vip: &VipOptions) -> bool {
        self.keep.as_ref().is_some_and(|held| {
            held.iter()
                .any(|h| h.address == vip.address && h.prefix == vip.prefix && h.dev == vip.dev)
        })
    }

    /// Whether `address`/`prefix` on `dev` (None: the instance's interface) was held
    /// before a reload.
    fn was_held(&self, address: IpAddr, prefix: u8, dev: Option<&str>) -> bool {
        self.keep.as_ref().is_some_and(|held| {
            held.iter()
                .any(|h| h.address == address && h.prefix == prefix && h.dev.as_deref() == dev)
        })
    }

    /// Removes the addresses a master held before a reload that the new configuration
    /// no longer has (keepalived's `clear_diff_vrrp_vip`).
    async fn remove_unconfigured(&self, held: &[VipOptions]) {
        let name = &self.instance.config().name;
        let port_index = self.port.as_ref().map(|p| p.ifindex);
        for old in held.iter().filter(|h| {
            !self
                .vips
                .iter()
                .any(|v| v.address == h.address && v.prefix == h.prefix && v.dev == h.dev)
        }) {
            let ifindex = match &old.dev {
                None => port_index,
                Some(_) => vip_dev_index(old),
            };
            let Some(ifindex) = ifindex else { continue };
            tracing::info!(
                instance = %name, address = %old.address, prefix = old.prefix,
                "removing a virtual address the new configuration no longer has"
            );
            if let Err(error) = self
                .netlink
                .del_address(ifindex, old.address, old.prefix)
                .await
            {
                tracing::error!(instance = %name, address = %old.address, %error, "removing VIP");
            }
        }
    }

    /// An address left an interface: if it is one of ours, on its interface, and still
    /// missing (the notification may be about our own removal, since undone), the
    /// instance decides what to do.
    async fn address_removed(&mut self, removed: RemovedAddr) {
        if self.instance.state() != State::Master {
            return;
        }
        if !interface_is_up(&self.interface) {
            // The interface went down (taking its IPv6 addresses with it): that is
            // FAULT, which the link poll decides, not a removal.
            self.refresh_link().await;
            return;
        }
        let port_index = self.port.as_ref().map(|p| p.ifindex);
        let Some(vip) = self.vips.iter().filter(|v| !v.no_track).find(|v| {
            let ifindex = match &v.dev {
                None => port_index,
                Some(_) => vip_dev_index(v),
            };
            v.address == removed.addr.addr && ifindex == Some(removed.ifindex)
        }) else {
            return;
        };
        let addr = vip.address;
        match self.netlink.addresses(removed.ifindex).await {
            Ok(present) if present.iter().any(|a| a.addr == addr) => return,
            Ok(_) => {}
            // Trust the kernel's notification, as keepalived does.
            Err(error) => tracing::warn!(
                instance = %self.instance.config().name, %addr, %error,
                "cannot confirm the removal of a virtual address"
            ),
        }
        tracing::info!(
            instance = %self.instance.config().name, %addr, ifindex = removed.ifindex,
            "virtual address removed from its interface"
        );
        self.handle(Event::AddressRemoved(addr)).await;
    }

    /// Feeds the instance what changed in tracking since `previous`.
    async fn apply_tracking(&mut self, update: &TrackingUpdate, previous: Option<&TrackingUpdate>) {
        let events = update.events_since(previous);
        if !events.is_empty() {
            tracing::info!(
                instance = %self.instance.config().name,
                priority = update.effective_priority, fault = update.fault,
                "tracking changed"
            );
        }
        for event in events {
            self.handle(event).await;
        }
    }

    async fn handle(&mut self, event: Event) {
        let actions = self.instance.handle(event, Instant::now());
        for action in actions {
            self.execute(action).await;
        }
        self.publish_report();
    }

    /// Sends the [`InstanceReport`] if it changed.
    fn publish_report(&self) {
        let Some(tx) = &self.report_tx else { return };
        let state = self.instance.state();
        let master = if state == State::Master {
            self.instance.config().src_addr.or(self.primary)
        } else {
            self.instance.master().map(|m| m.addr)
        };
        let report = InstanceReport {
            state,
            last_transition: self.last_transition,
            transitions: self.transitions,
            master,
            stats: self.instance.stats().clone(),
        };
        tx.send_if_modified(|current| {
            let modified = *current != report;
            *current = report;
            modified
        });
    }

    async fn execute(&mut self, action: Action) {
        let name = self.instance.config().name.clone();
        match action {
            Action::SendAdvert(out) => self.send_advert(&out),
            Action::AddVips => {
                let Some(port) = &self.port else {
                    tracing::error!(instance = %name, "no interface to add the VIPs to");
                    return;
                };
                let port_index = port.ifindex;
                for vip in &self.vips {
                    let addr = vip.address;
                    let ifindex = match &vip.dev {
                        None => port_index,
                        Some(dev) => match vip_dev_index(vip) {
                            Some(i) => i,
                            None => {
                                tracing::error!(
                                    instance = %name, %addr, dev, "adding VIP: no such interface"
                                );
                                continue;
                            }
                        },
                    };
                    let attrs = vip.attrs();
                    match self
                        .netlink
                        .add_address_with(ifindex, addr, vip.prefix, &attrs)
                        .await
                    {
                        Ok(()) => {
                            tracing::debug!(instance = %name, %addr, prefix = vip.prefix, "added")
                        }
                        Err(error) => {
                            tracing::error!(instance = %name, %addr, %error, "adding VIP")
                        }
                    }
                }
            }
            Action::RemoveVips => {
                // keepalived sends queued announcements only while master.
                self.announce.clear();
                self.announce_at = None;
                // Without a port the interface is gone, and its addresses with it (but
                // not those on other interfaces, `dev IF`).
                let port_index = self.port.as_ref().map(|p| p.ifindex);
                for vip in &self.vips {
                    let ifindex = match &vip.dev {
                        None => port_index,
                        Some(_) => vip_dev_index(vip),
                    };
                    let Some(ifindex) = ifindex else { continue };
                    let addr = vip.address;
                    if let Err(error) = self.netlink.del_address(ifindex, addr, vip.prefix).await {
                        tracing::error!(instance = %name, %addr, %error, "removing VIP");
                    }
                }
            }
            Action::SendGratuitous { addresses, repeat } => {
                let now = Instant::now();
                let paces = self.paces.clone();
                let send = paces.with(&self.interface, |pace| {
                    let send = self.announce.burst(&addresses, repeat, now, pace);
                    self.announce_at = self.announce.next_wake(pace);
                    send
                });
                self.announce(&send);
            }
            Action::ArmTimer { kind, at } => self.timers[kind.index()] = Some(at),
            Action::CancelTimer(kind) => self.timers[kind.index()] = None,
            Action::StateChanged { from, to, cause } => {
                tracing::info!(
                    instance = %name, interface = %self.interface, %from, %to, %cause,
                    "VRRP state changed"
                );
                if let Some(tx) = &self.state_tx {
                    tx.send_replace(to);
                }
                self.last_transition = Some((from, to, cause));
                self.transitions += 1;
                self.notify(Notification::State {
                    state: to,
                    priority: self.instance.effective_priority(),
                });
                self.report_to_group();
            }
            Action::CountDrop(reason) => {
                if reason.is_misconfiguration() {
                    tracing::info!(instance = %name, %reason, "advertisement dropped");
                } else {
                    tracing::debug!(instance = %name, %reason, "advertisement dropped");
                }
            }
            Action::WantsMaster(_) => self.report_to_group(),
            Action::EffectivePriorityChanged { to, .. } => self.notify(Notification::Priority {
                state: self.instance.state(),
                priority: to,
            }),
            Action::MasterReceivedLowerPriority { from, priority } => {
                tracing::debug!(instance = %name, %from, priority, "lower-priority advertisement");
                self.notify(Notification::MasterRxLowerPriority {
                    priority: self.instance.effective_priority(),
                });
                self.send_to_group(true);
            }
        }
    }

    fn send_advert(&self, out: &OutgoingAdvert) {
        let name = &self.instance.config().name;
        let Some(port) = &self.port else {
            tracing::debug!(instance = %name, "no interface to send the advertisement on");
            return;
        };
        for &dst in &out.destinations {
            let bytes = match out.encode(dst) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(instance = %name, %error, "encoding advertisement");
                    continue;
                }
            };
            if let Err(error) = port.sock.send(&bytes, out.src, dst, out.ttl) {
                tracing::warn!(instance = %name, %dst, %error, "sending advertisement");
            }
        }
    }
}

/// The index of a VIP's own interface (`dev IF`), if it has one and it exists.
fn vip_dev_index(vip: &VipOptions) -> Option<u32> {
    nix::net::if_::if_nametoindex(vip.dev.as_deref()?).ok()
}

/// fe80::/10.
fn is_link_local(addr: &Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_options_broadcast_scope_and_flags() {
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED));
        let mut vip = VipOptions::new(v4("10.0.1.100"), 23);
        assert_eq!(vip.broadcast_address(), None);
        vip.broadcast = Some(VipBroadcast::HostBitsSet);
        assert_eq!(vip.broadcast_address(), Some(Ipv4Addr::new(10, 0, 1, 255)));
        vip.broadcast = Some(VipBroadcast::HostBitsClear);
        assert_eq!(vip.broadcast_address(), Some(Ipv4Addr::new(10, 0, 0, 0)));
        vip.prefix = 32;
        vip.broadcast = Some(VipBroadcast::HostBitsSet);
        assert_eq!(vip.broadcast_address(), Some(Ipv4Addr::new(10, 0, 1, 100)));
        vip.noprefixroute = true;
        assert_eq!(vip.attrs().flags, IFA_F_NOPREFIXROUTE);
        vip.nodad = true;
        assert_eq!(vip.attrs().flags, IFA_F_NOPREFIXROUTE | IFA_F_NODAD);
        let v6 = VipOptions::host(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!((v6.prefix, v6.attrs().flags), (128, IFA_F_NODAD));
        for (word, scope) in [
            ("global", Some(0)),
            ("site", Some(200)),
            ("link", Some(253)),
            ("host", Some(254)),
            ("nowhere", Some(255)),
            ("42", Some(42)),
            ("galaxy", None),
        ] {
            assert_eq!(VipOptions::parse_scope(word), scope, "{word}");
        }
    }
}
