//! A tiny in-memory LAN for state-machine tests: several [`Instance`]s, a virtual clock,
//! and delivery of every advertisement to the other routers.
//!
//! Advertisements go through the real codec: each one is encoded for its destination
//! (multicast group or unicast peer) and the receivers decode those bytes, so checksums,
//! including the VRRPv3 pseudo-header, are exercised on every hop. Delivery takes no time
//! but happens after the sender's event has been handled, in sending order; routers get
//! only advertisements for their own VRID, as the daemon routes them.
//!
//! The LAN keeps a log of what each router does (state changes, advertisements sent,
//! addresses added/removed, gratuitous ARP bursts, drops) for tests to compare.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use keeplb_vrrp::sync::{SyncCommand, SyncGroup};
use keeplb_vrrp::{Action, Event, Instance, InstanceConfig, Received, State, TimerKind};
use tokio::time::Instant;

/// One line of the LAN log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub at: Duration,
    pub router: String,
    pub text: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", fmt_time(self.at), self.router, self.text)
    }
}

/// Seconds with microseconds, as scenario files write times.
pub fn fmt_time(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

/// Parses `12`, `3.5`, `3.609375` (at most nanoseconds) without float rounding.
pub fn parse_time(s: &str) -> Option<Duration> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(secs, nanos))
}

pub struct Router {
    pub name: String,
    pub config: InstanceConfig,
    /// The address the interface has (sent as `InterfaceUp` primary).
    pub addr: IpAddr,
    /// `None` when crashed or never started.
    pub instance: Option<Instance>,
    timers: HashMap<TimerKind, Duration>,
    pub holds_vips: bool,
}

enum Pending {
    Timer { router: usize, kind: TimerKind },
    Deliver { router: usize, rx: Received },
}

pub struct Lan {
    base: Instant,
    now: Duration,
    pub routers: Vec<Router>,
    queue: BTreeMap<(Duration, u64), Pending>,
    seq: u64,
    cuts: HashSet<(usize, usize)>,
    /// Sync groups: the coordinator and its members' router indices. Reports reach the
    /// coordinator, and its requests the members, without delay (in the daemon they
    /// cross a channel between tasks).
    groups: Vec<(SyncGroup, Vec<usize>)>,
    pub log: Vec<LogLine>,
}

impl Default for Lan {
    fn default() -> Self {
        Lan::new()
    }
}

impl Lan {
    pub fn new() -> Self {
        Lan {
            base: Instant::now(),
            now: Duration::ZERO,
            routers: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            cuts: HashSet::new(),
            groups: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Adds a router (not started).
    pub fn add(&mut self, name: &str, addr: IpAddr, config: InstanceConfig) -> usize {
        self.routers.push(Router {
            name: name.to_owned(),
            config,
            addr,
            instance: None,
            timers: HashMap::new(),
            holds_vips: false,
        });
        self.routers.len() - 1
    }

    pub fn index(&self, name: &str) -> usize {
        self.routers
            .iter()
            .position(|r| r.name == name)
            .unwrap_or_else(|| panic!("no router {name}"))
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn instant(&self, at: Duration) -> Instant {
        self.base + at
    }

    pub fn state(&self, router: usize) -> Option<State> {
        self.routers[router].instance.as_ref().map(Instance::state)
    }

    /// The routers currently holding the virtual addresses.
    pub fn vip_holders(&self) -> Vec<&str> {
        self.routers
            .iter()
            .filter(|r| r.holds_vips)
            .map(|r| r.name.as_str())
            .collect()
    }

    /// Creates the instance if needed, tells it the interface is up, and starts it.
    pub fn start(&mut self, router: usize) {
        let r = &mut self.routers[router];
        if r.instance.is_none() {
            let instance = Instance::new(r.config.clone())
                .unwrap_or_else(|e| panic!("{}: invalid config: {e}", r.name));
            r.instance = Some(instance);
        }
        let primary = Some(r.addr);
        self.event(router, Event::InterfaceUp { primary });
        self.event(router, Event::Startup);
    }

    /// The machine dies: nothing is sent, its addresses vanish with it.
    pub fn crash(&mut self, router: usize) {
        let r = &mut self.routers[router];
        r.instance = None;
        r.timers.clear();
        r.holds_vips = false;
        let name = r.name.clone();
        self.push_log(&name, "crashed".to_owned());
    }

    /// Makes `members` (not started yet) a `vrrp_sync_group` called `name`, configured
    /// as the daemon does (a group of owners with `state MASTER` is marked as such).
    pub fn sync_group(&mut self, name: &str, members: &[usize]) {
        let owners =
            keeplb_vrrp::sync::is_group_of_owners(members.iter().map(|&m| &self.routers[m].config));
        for &m in members {
            assert!(
                self.routers[m].instance.is_none(),
                "add members before starting"
            );
            self.routers[m].config.sync_group = true;
            self.routers[m].config.sync_group_owners = owners;
        }
        let names = members.iter().map(|&m| self.routers[m].name.clone());
        let mut group = SyncGroup::new(name, names);
        if owners {
            group = group.starting_master();
        }
        self.groups.push((group, members.to_vec()));
    }

    /// The state of sync group `group` (in the order added).
    pub fn group_state(&self, group: usize) -> State {
        self.groups[group].0.state()
    }

    /// Tells `router`'s sync group (if any) its state and wish (and, with
    /// `lower_priority`, that it received a lower-priority advertisement as master), and
    /// carries out what the group asks.
    fn report_to_group(&mut self, router: usize, lower_priority: bool) {
        let Some(instance) = self.routers[router].instance.as_ref() else {
            return;
        };
        let (state, wants) = (instance.state(), instance.wants_master());
        let Some(g) = self.groups.iter().position(|(_, m)| m.contains(&router)) else {
            return;
        };
        let (group, members) = &mut self.groups[g];
        let Some(index) = members.iter().position(|&m| m == router) else {
            return;
        };
        let members = members.clone();
        let name = group.name().to_owned();
        let commands = group.member_report(index, state, wants, lower_priority);
        for command in commands {
            match command {
                SyncCommand::ForceFault { member, fault } => {
                    let event = if fault {
                        Event::ForceFault
                    } else {
                        Event::ClearFault
                    };
                    self.event(members[member], event);
                }
                SyncCommand::Backup { member } => self.event(members[member], Event::SyncBackup),
                SyncCommand::Master { member } => self.event(members[member], Event::SyncMaster),
                SyncCommand::LowerPriorityGarp { member } => {
                    self.event(members[member], Event::SyncLowerPriorityGarp)
                }
                SyncCommand::GroupState(to) => self.push_log(&name, format!("group {to}")),
            }
        }
    }

    /// No advertisements between `a` and `b`, either way.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cuts.insert((a.min(b), a.max(b)));
    }

    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Feeds one event to a router now and carries out the actions.
    pub fn event(&mut self, router: usize, event: Event) {
        let now = self.base + self.now;
        let Some(instance) = self.routers[router].instance.as_mut() else {
            return;
        };
        let actions = instance.handle(event, now);
        self.apply(router, actions);
    }

    /// Runs everything due up to and including `to`, then sets the clock to `to`.
    pub fn run_until(&mut self, to: Duration) {
        assert!(
            to >= self.now,
            "time goes backwards: {to:?} < {:?}",
            self.now
        );
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > to {
                break;
            }
            let ((at, _), pending) = entry.remove_entry();
            self.now = at;
            match pending {
                Pending::Timer { router, kind } => {
                    let r = &mut self.routers[router];
                    // Only the latest deadline of each kind fires, as with one re-armed
                    // tokio timer per kind in the daemon.
                    if r.timers.get(&kind) == Some(&at) {
                        r.timers.remove(&kind);
                        self.event(router, Event::TimerExpired(kind));
                    }
                }
                Pending::Deliver { router, rx } => {
                    self.event(router, Event::AdvertReceived(rx));
                }
            }
        }
        self.now = to;
    }

    fn push(&mut self, at: Duration, pending: Pending) {
        self.seq += 1;
        self.queue.insert((at, self.seq), pending);
    }

    fn push_log(&mut self, router: &str, text: String) {
        self.log.push(LogLine {
            at: self.now,
            router: router.to_owned(),
            text,
        });
    }

    fn apply(&mut self, router: usize, actions: Vec<Action>) {
        let name = self.routers[router].name.clone();
        for action in actions {
            match action {
                Action::SendAdvert(out) => {
                    // VRRPv3 intervals differ between routers; v2 ones cannot.
                    let text = match out.advert.version {
                        keeplb_vrrp::Version::V2 => format!("advert prio={}", out.priority()),
                        keeplb_vrrp::Version::V3 => {
                            format!(
                                "advert prio={} int={}",
                                out.priority(),
                                out.advert.adver_int
                            )
                        }
                    };
                    self.push_log(&name, text);
                    for dst in &out.destinations {
                        let payload = out
                            .encode(*dst)
                            .unwrap_or_else(|e| panic!("{name}: encode: {e}"));
                        for to in self.receivers(router, *dst, out.advert.vrid) {
                            let rx = Received {
                                src: out.src,
                                dst: *dst,
                                ttl: Some(out.ttl),
                                payload: payload.clone(),
                            };
                            self.push(self.now, Pending::Deliver { router: to, rx });
                        }
                    }
                }
                Action::AddVips => {
                    self.routers[router].holds_vips = true;
                    self.push_log(&name, "vips add".to_owned());
                }
                Action::RemoveVips => {
                    self.routers[router].holds_vips = false;
                    self.push_log(&name, "vips remove".to_owned());
                }
                Action::SendGratuitous { addresses, repeat } => {
                    let cfg = &self.routers[router].config;
                    let all: Vec<IpAddr> =
                        cfg.vips.iter().chain(&cfg.excluded_vips).copied().collect();
                    let text = if addresses == all {
                        format!("garp x{repeat}")
                    } else {
                        let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                        format!("garp x{repeat} {}", list.join(","))
                    };
                    self.push_log(&name, text);
                }
                Action::ArmTimer { kind, at } => {
                    let at = at.duration_since(self.base);
                    self.routers[router].timers.insert(kind, at);
                    self.push(at, Pending::Timer { router, kind });
                }
                Action::CancelTimer(kind) => {
                    self.routers[router].timers.remove(&kind);
                }
                Action::StateChanged { from, to, cause } => {
                    self.push_log(&name, format!("state {from}->{to} {cause}"));
                    self.report_to_group(router, false);
                }
                // Routers in FAULT/INIT keep receiving; counting that is not news.
                Action::CountDrop(keeplb_vrrp::DropReason::Inactive) => {}
                Action::CountDrop(reason) => self.push_log(&name, format!("drop {reason}")),
                Action::MasterReceivedLowerPriority { from, priority } => {
                    self.push_log(&name, format!("rx-lower-prio from={from} prio={priority}"));
                    self.report_to_group(router, true);
                }
                // The scenario files predate this action; the adverts show the priority.
                Action::EffectivePriorityChanged { .. } => {}
                Action::WantsMaster(wants) => {
                    self.push_log(&name, format!("wants-master {wants}"));
                    self.report_to_group(router, false);
                }
            }
        }
    }

    /// Who gets a datagram sent by `from` to `dst` for `vrid`.
    fn receivers(&self, from: usize, dst: IpAddr, vrid: u8) -> Vec<usize> {
        (0..self.routers.len())
            .filter(|&to| to != from)
            .filter(|&to| !self.cuts.contains(&(from.min(to), from.max(to))))
            .filter(|&to| {
                let r = &self.routers[to];
                r.instance.is_some()
                    && r.config.vrid == vrid
                    && (dst.is_multicast() || r.addr == dst)
            })
            .collect()
    }
}
