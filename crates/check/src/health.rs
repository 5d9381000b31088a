//! The health core: every checker's retry machine, each real server's alive state, each
//! virtual server's quorum and sorry server; pure (no I/O, time passed in).
//!
//! It follows keepalived's ipwrapper.c: a real server is alive while none of its checkers
//! failed; an alive one is in the pool with its effective weight, a dead one is removed, or
//! kept at weight 0 with `inhibit_on_failure`. A virtual server has quorum while the live
//! weight sum stays at or above `quorum − hysteresis` (once gained at
//! `quorum + hysteresis`); without it the sorry server replaces the live real servers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use keeplb_config::model::{
    CheckKind, Checker, Config, OtherKeywords, RealServer, Script, TrackFile, VirtualServer,
    VirtualServerKey,
};
use tokio::time::Instant;

use crate::action::{Action, ScriptEvent, VsIndex};
use crate::checker::{
    FILE_FAULT, FileState, Flavor, HttpState, Machine, MiscState, SimpleKind, Step, UrlInfo,
    WeightChange,
};
use crate::names;
use crate::outcome::Outcome;

/// keepalived's BOOTSTRAP_DELAY: checkers start one second after the daemon.
const BOOTSTRAP_DELAY: Duration = Duration::from_secs(1);
/// keepalived gives notify scripts run at shutdown one second.
const SHUTDOWN_SCRIPT_TIMEOUT: Duration = Duration::from_secs(1);
/// IPVS weights are ints; keepalived clamps effective weights into 0..=i32::MAX.
const WEIGHT_LIMIT: i64 = i32::MAX as i64;

/// Names one checker: indices into `Config::virtual_server`, its `real_server`, its
/// `checkers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckerId {
    pub vs: usize,
    pub rs: usize,
    pub checker: usize,
}

/// A probe to run now: which checker, and for HTTP_GET/SSL_GET which url (index into its
/// `url` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub id: CheckerId,
    pub url: usize,
}

/// A pool member as keepalived tracks it (real_server_t): in the pool (`set`), alive,
/// weight.
#[derive(Debug, Clone)]
struct Dest {
    addr: SocketAddr,
    name: String,
    inhibit: bool,
    set: bool,
    alive: bool,
    effective_weight: i64,
    num_failed_checkers: u32,
    /// Taken over from the previous configuration on reload (keepalived's `reloaded`):
    /// its effective weight there, which the new one replaces at start.
    previous_weight: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Del,
    /// Removal even with `inhibit_on_failure` (shutdown).
    ForceDel,
    Edit,
}

fn real_weight(effective: i64) -> u32 {
    u32::try_from(effective.clamp(0, WEIGHT_LIMIT)).unwrap_or(0)
}

impl Dest {
    /// keepalived's clear_service_rs log line (`verb`: "Removing" or "Shutting down").
    fn clearing_log(&self, verb: &str, vs_name: &str) -> Action {
        Action::Log {
            message: format!(
                "{verb} {}service {} from VS {vs_name}",
                if self.inhibit && !self.alive {
                    "(inhibited) "
                } else {
                    ""
                },
                self.name
            ),
            reason: None,
        }
    }

    /// keepalived's `ipvs_cmd` for a destination: inhibit turns removal into weight 0 and
    /// re-adding into a weight change.
    fn cmd(&mut self, vs: VsIndex, cmd: Cmd, out: &mut Vec<Action>) {
        let dest = self.addr;
        let weight = real_weight(self.effective_weight);
        match cmd {
            Cmd::Del if self.inhibit => out.push(Action::SetWeight {
                vs,
                dest,
                weight: 0,
            }),
            Cmd::Add if self.inhibit && self.set => {
                out.push(Action::SetWeight { vs, dest, weight })
            }
            Cmd::Add if !self.set => {
                self.set = true;
                let weight = if self.inhibit && self.num_failed_checkers > 0 {
                    0
                } else {
                    weight
                };
                out.push(Action::AddDest { vs, dest, weight });
            }
            Cmd::Del | Cmd::ForceDel if self.set => {
                self.set = false;
                out.push(Action::RemoveDest { vs, dest });
            }
            Cmd::Edit if self.set => out.push(Action::SetWeight { vs, dest, weight }),
            // Already so: the kernel would refuse it and keepalived only logs the error.
            Cmd::Add | Cmd::Del | Cmd::ForceDel | Cmd::Edit => {}
        }
    }
}

/// What makes two checkers the same checker across a reload, as keepalived's `compare`
/// functions see it: what it probes and how it connects (not its timings or retries).
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    kind: CheckKind,
    connect_ip: Option<IpAddr>,
    connect_port: Option<u16>,
    bindto: Option<IpAddr>,
    bind_port: Option<u16>,
    bind_if: Option<String>,
    connect_timeout: f64,
    fwmark: Option<u32>,
}

impl Identity {
    fn of(checker: &Checker) -> Self {
        let c = &checker.common;
        // keepalived does not compare these: changing them keeps the checker's state.
        let mut kind = checker.kind.clone();
        match &mut kind {
            CheckKind::Misc(misc) => misc.misc_timeout = None,
            CheckKind::Http(http) | CheckKind::Ssl(http) => {
                http.http_protocol = None;
                http.enable_sni = false;
            }
            _ => {}
        }
        Identity {
            kind,
            connect_ip: c.connect_ip,
            connect_port: c.connect_port,
            bindto: c.bindto,
            bind_port: c.bind_port,
            bind_if: c.bind_if.clone(),
            connect_timeout: c.connect_timeout,
            fwmark: c.fwmark,
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    machine: Machine,
    identity: Identity,
    /// When the next probe is due; None while one runs (or before start / after stop).
    due: Option<Instant>,
    started: Option<Instant>,
}

#[derive(Debug, Clone)]
struct RsHealth {
    dest: Dest,
    notify_up: Option<Script>,
    notify_down: Option<Script>,
    checkers: Vec<Slot>,
}

#[derive(Debug, Clone)]
struct VsHealth {
    name: String,
    quorum: i64,
    hysteresis: i64,
    quorum_state_up: bool,
    quorum_up: Option<Script>,
    quorum_down: Option<Script>,
    omega: bool,
    /// `ha_suspend`: checks run only while the virtual server's address is on this host.
    ha_suspend: bool,
    suspended: bool,
    sorry: Option<Dest>,
    real_servers: Vec<RsHealth>,
}

impl VsHealth {
    /// Real servers' changes reach the pool only with quorum, or when no sorry server
    /// stands in for them.
    fn pool_follows_servers(&self) -> bool {
        self.quorum_state_up || !self.sorry.as_ref().is_some_and(|s| s.alive)
    }
}

/// A snapshot of one real server, for status output and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerStatus {
    pub dest: SocketAddr,
    pub alive: bool,
    /// In the pool (possibly at weight 0 with `inhibit_on_failure`).
    pub in_pool: bool,
    pub weight: u32,
    pub failed_checkers: u32,
}

/// Every checker's state and what it means for the pools.
#[derive(Debug, Clone)]
pub struct Health {
    virtual_servers: Vec<VsHealth>,
    queue: BinaryHeap<Reverse<(Instant, CheckerId)>>,
    /// What a reload decided before [`Health::start`] (real servers the new configuration
    /// dropped): emitted first by `start`.
    pending: Vec<Action>,
    /// `rs_init_notifies`: real servers added alive at start get their `notify_up`.
    rs_init_notifies: bool,
}

/// Seconds from the configuration as a Duration (negative or not a number: zero).
pub(crate) fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

fn vs_port(vs: &VirtualServer) -> u16 {
    match vs.key {
        VirtualServerKey::Address { port, .. } => port,
        VirtualServerKey::Fwmark { .. } | VirtualServerKey::Group { .. } => 0,
    }
}

/// The url's last test, which keepalived names when a down server passes it.
fn passed_test(url: &keeplb_config::model::HttpUrl) -> &'static str {
    if url.regex.is_some() {
        "Regex match"
    } else if url.digest.is_some() {
        "MD5 digest"
    } else {
        "HTTP status code"
    }
}

/// A keyword keeplb's configuration keeps without a field of its own, as a BOOL that
/// may be left out (`fast_recovery`, `checker_log_all_failures [true]`).
fn optional_flag(other: &OtherKeywords, keyword: &str) -> bool {
    other.get(keyword).is_some_and(|words| {
        words
            .first()
            .is_none_or(|w| matches!(w.as_str(), "on" | "true" | "yes"))
    })
}

fn machine(
    vs: &VirtualServer,
    rs: &RealServer,
    checker: &Checker,
    track_files: &[TrackFile],
    log_all_failures: bool,
) -> Machine {
    let rs_name = names::real_server_name(rs.ip, rs.port, vs.protocol);
    let flavor = match &checker.kind {
        CheckKind::Tcp => Flavor::Simple(SimpleKind::Tcp),
        CheckKind::Udp(_) => Flavor::Simple(SimpleKind::Udp),
        CheckKind::Ping => Flavor::Simple(SimpleKind::Ping),
        CheckKind::Dns(_) => Flavor::Simple(SimpleKind::Dns),
        CheckKind::Smtp(_) => Flavor::Simple(SimpleKind::Smtp),
        CheckKind::File(f) => {
            let (weight, reverse) = match f.weight {
                Some(weight) => (weight, f.reverse),
                None => track_files
                    .iter()
                    .find(|t| t.name == f.track_file)
                    .map_or((1, false), |t| (t.weight, t.weight_reverse)),
            };
            Flavor::File(FileState {
                weight: i64::from(weight),
                reverse,
                status: 0,
            })
        }
        CheckKind::Http(h) | CheckKind::Ssl(h) => Flavor::Http(HttpState {
            ssl: matches!(checker.kind, CheckKind::Ssl(_)),
            urls: h
                .url
                .iter()
                .map(|u| UrlInfo {
                    path: u.path.clone(),
                    passed_test: passed_test(u),
                })
                .collect(),
            url_it: 0,
            failed_url: None,
            fast_recovery: optional_flag(&checker.other, "fast_recovery"),
        }),
        CheckKind::Misc(m) => Flavor::Misc(MiscState {
            dynamic: m.misc_dynamic,
            script: m
                .misc_path
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
            initial_weight: i64::from(rs.weight),
            cur_weight: 0,
            last_exit_code: 0,
        }),
    };
    let common = &checker.common;
    let delay_loop = seconds(common.delay_loop);
    // A file's state is known at once: no alpha, nothing to run first.
    let is_file = matches!(flavor, Flavor::File(_));
    Machine {
        flavor,
        is_up: true,
        has_run: is_file,
        alpha: common.alpha && !is_file,
        retry: common.retry,
        // "For non alpha mode, one failure is enough initially."
        retry_it: common.retry,
        delay_loop,
        delay_before_retry: seconds(common.delay_before_retry),
        warmup: common.warmup.map_or(delay_loop, seconds),
        log_all_failures: common.log_all_failures || log_all_failures,
        rs_name,
        vs_name: names::virtual_server_name(vs),
    }
}

impl Health {
    /// The state of every virtual server's real servers and checkers, before anything ran:
    /// real servers alive unless one of their checkers has `alpha`.
    pub fn new(config: &Config) -> Self {
        let track_files = &config.track_file;
        let log_all_failures = optional_flag(&config.global_defs.other, "checker_log_all_failures");
        let virtual_servers = config
            .virtual_server
            .iter()
            .map(|vs| {
                let real_servers = vs
                    .real_server
                    .iter()
                    .map(|rs| {
                        let checkers: Vec<Slot> = rs
                            .checkers
                            .iter()
                            .map(|c| Slot {
                                machine: machine(vs, rs, c, track_files, log_all_failures),
                                identity: Identity::of(c),
                                due: None,
                                started: None,
                            })
                            .collect();
                        let mut dest = Dest {
                            addr: SocketAddr::new(rs.ip, rs.port),
                            name: names::real_server_name(rs.ip, rs.port, vs.protocol),
                            inhibit: rs.inhibit_on_failure,
                            set: false,
                            alive: false,
                            effective_weight: i64::from(rs.weight),
                            num_failed_checkers: 0,
                            previous_weight: None,
                        };
                        let mut checkers = checkers;
                        for slot in &mut checkers {
                            if slot.machine.alpha {
                                slot.machine.is_up = false;
                                dest.num_failed_checkers += 1;
                            }
                        }
                        RsHealth {
                            dest,
                            notify_up: rs.notify_up.clone(),
                            notify_down: rs.notify_down.clone(),
                            checkers,
                        }
                    })
                    .collect();
                let sorry = vs.sorry_server.as_ref().map(|s| {
                    let port = s.port.unwrap_or_else(|| vs_port(vs));
                    Dest {
                        addr: SocketAddr::new(s.ip, port),
                        name: names::real_server_name(s.ip, port, vs.protocol),
                        inhibit: vs.sorry_server_inhibit,
                        set: false,
                        alive: false,
                        effective_weight: 1,
                        num_failed_checkers: 0,
                        previous_weight: None,
                    }
                });
                VsHealth {
                    name: names::virtual_server_name(vs),
                    quorum: i64::from(vs.quorum),
                    hysteresis: i64::from(vs.hysteresis),
                    quorum_state_up: false,
                    quorum_up: vs.quorum_up.clone(),
                    quorum_down: vs.quorum_down.clone(),
                    omega: vs.omega,
                    ha_suspend: vs.ha_suspend,
                    // Until told the address is here.
                    suspended: vs.ha_suspend,
                    sorry,
                    real_servers,
                }
            })
            .collect();
        Health {
            virtual_servers,
            queue: BinaryHeap::new(),
            pending: Vec::new(),
            rs_init_notifies: optional_flag(&config.global_defs.other, "rs_init_notifies"),
        }
    }

    /// On reload, before [`Health::start`]: carries over what the previous
    /// configuration's checks knew, as keepalived's `clear_diff_services` and
    /// `migrate_checkers` do. Virtual servers match by name, real servers by address,
    /// checkers by what they probe (kind, urls, script, connection options: a checker
    /// whose probe changed is a new checker).
    ///
    /// - A matched checker keeps its up/down state (once it has run), whether it has run,
    ///   its retries so far (at most one short of the new `retry`), and a MISC_CHECK its
    ///   last exit status and `misc_dynamic` weight.
    /// - Every other checker starts up with its retries unspent (keepalived's "one
    ///   failure is enough" holds only at first start), except on a real server with a
    ///   failed checker, or one out of the pool whose checkers never ran: there an
    ///   `alpha` checker starts down and one failure is enough.
    /// - A matched real server keeps being in the pool or not; `start` adds one left
    ///   with no failed checker, takes out one with a failed checker, and moves its
    ///   weight to the new configuration's. Quorum and the sorry server keep their state.
    /// - A real server the new configuration dropped (or whose virtual server it
    ///   dropped) that was alive gets its `notify_down` and FIFO line at `start` (a
    ///   dropped virtual server with quorum its `quorum_down`), in the previous
    ///   configuration's terms (`vs` indices are the previous configuration's). Taking
    ///   them out of the pools is the caller's.
    ///
    /// FILE_CHECKs are not carried over: their state comes from the file.
    pub fn inherit(&mut self, old: &Health) {
        self.pending = Self::dropped(&self.virtual_servers, old);
        for vs in &mut self.virtual_servers {
            let old_vs = old.virtual_servers.iter().find(|o| o.name == vs.name);
            if let Some(old_vs) = old_vs {
                vs.quorum_state_up = old_vs.quorum_state_up;
                if let (Some(sorry), Some(old_sorry)) = (&mut vs.sorry, &old_vs.sorry)
                    && sorry.addr == old_sorry.addr
                {
                    sorry.set = old_sorry.set;
                    sorry.alive = old_sorry.alive;
                }
            }
            for rs in &mut vs.real_servers {
                // keepalived sets alpha checkers down and spends their retries only at
                // first start; on reload every checker starts up, with its retries.
                for slot in rs.checkers.iter_mut().filter(|s| s.machine.is_probed()) {
                    slot.machine.is_up = true;
                    slot.machine.retry_it = 0;
                }
                let old_rs = old_vs
                    .and_then(|o| o.real_servers.iter().find(|o| o.dest.addr == rs.dest.addr));
                match old_rs {
                    Some(old_rs) => Self::migrate_checkers(rs, old_rs),
                    None => {
                        // keepalived's check_new_rs_state.
                        for slot in rs.checkers.iter_mut().filter(|s| s.machine.alpha) {
                            slot.machine.is_up = false;
                        }
                    }
                }
                rs.dest.num_failed_checkers =
                    u32::try_from(rs.checkers.iter().filter(|s| !s.machine.is_up).count())
                        .unwrap_or(u32::MAX);
            }
        }
    }

    /// keepalived's `migrate_checkers` for a real server in both configurations.
    fn migrate_checkers(rs: &mut RsHealth, old_rs: &RsHealth) {
        let mut taken = vec![false; old_rs.checkers.len()];
        for slot in rs.checkers.iter_mut().filter(|s| s.machine.is_probed()) {
            let Some(index) = old_rs
                .checkers
                .iter()
                .enumerate()
                .position(|(i, o)| !taken[i] && o.identity == slot.identity)
            else {
                continue;
            };
            taken[index] = true;
            let old = &old_rs.checkers[index].machine;
            let new = &mut slot.machine;
            if old.has_run {
                new.is_up = old.is_up;
            }
            new.has_run = old.has_run;
            if old.retry_it > 0 && new.retry > 0 {
                new.retry_it = old.retry_it.min(new.retry - 1);
            }
            if let (Flavor::Misc(misc), Flavor::Misc(old_misc)) = (&mut new.flavor, &old.flavor) {
                misc.last_exit_code = old_misc.last_exit_code;
                // The weight the last exit status gave, against the new configured
                // weight. (keepalived's migrate_misc_check computes −weight for a last
                // status 0, a weight of 0 its checks never give: status 0 keeps the
                // configured weight here, as every check does.)
                if misc.dynamic && old_misc.last_exit_code >= 2 {
                    misc.cur_weight = i64::from(old_misc.last_exit_code) - 2 - misc.initial_weight;
                    rs.dest.effective_weight += misc.cur_weight;
                }
            }
        }
        let probed = || rs.checkers.iter().filter(|s| s.machine.is_probed());
        let failed = probed()
            .filter(|s| s.machine.has_run && !s.machine.is_up)
            .count();
        let any_ran = probed().any(|s| s.machine.has_run);
        if failed > 0 || (!old_rs.dest.alive && !any_ran) {
            for slot in rs
                .checkers
                .iter_mut()
                .filter(|s| s.machine.is_probed() && !s.machine.has_run)
            {
                if slot.machine.alpha {
                    slot.machine.is_up = false;
                }
                // One failure is enough.
                slot.machine.retry_it = slot.machine.retry;
            }
        }
        rs.dest.set = old_rs.dest.set;
        rs.dest.alive = old_rs.dest.alive;
        rs.dest.previous_weight = Some(old_rs.dest.effective_weight);
    }

    /// Real servers of the previous configuration that the new one no longer has:
    /// keepalived's `clear_service_rs` (and `update_vs_notifies` of a dropped virtual
    /// server) without the pool changes.
    fn dropped(new: &[VsHealth], old: &Health) -> Vec<Action> {
        let mut out = Vec::new();
        for (old_index, old_vs) in old.virtual_servers.iter().enumerate() {
            let kept = new.iter().find(|v| v.name == old_vs.name);
            if kept.is_none() {
                out.push(Action::Log {
                    message: format!("Removing Virtual Server {}", old_vs.name),
                    reason: None,
                });
            }
            for rs in &old_vs.real_servers {
                if kept.is_some_and(|v| v.real_servers.iter().any(|r| r.dest.addr == rs.dest.addr))
                {
                    continue;
                }
                if kept.is_some() {
                    out.push(Action::Log {
                        message: format!("service {} no longer exist", rs.dest.name),
                        reason: None,
                    });
                }
                if !rs.dest.set {
                    continue;
                }
                out.push(rs.dest.clearing_log("Removing", &old_vs.name));
                if rs.dest.alive {
                    let mut gone = rs.clone();
                    gone.dest.alive = false;
                    Self::do_rs_notifies(old_index, &old_vs.name, &gone, false, &mut out);
                }
            }
            if kept.is_none() && old_vs.quorum_state_up {
                let mut gone = old_vs.clone();
                gone.quorum_state_up = false;
                Self::do_vs_notifies(old_index, &gone, false, &mut out);
            }
        }
        out
    }

    /// Fills the pools (keepalived's `init_services`) and schedules every checker's first
    /// probe at `now` + 1 s + a random part of its `warmup` (`warmup_share(warmup)` returns
    /// that part, between zero and `warmup`; keepalived spreads first checks this way).
    pub fn start(
        &mut self,
        now: Instant,
        mut warmup_share: impl FnMut(Duration) -> Duration,
    ) -> Vec<Action> {
        let mut out = std::mem::take(&mut self.pending);
        for vs_index in 0..self.virtual_servers.len() {
            let vs = &mut self.virtual_servers[vs_index];
            for rs in &mut vs.real_servers {
                for slot in rs
                    .checkers
                    .iter_mut()
                    .filter(|s| !matches!(s.machine.flavor, Flavor::File(_)))
                {
                    out.push(Action::Log {
                        message: format!(
                            "{}ctivating healthchecker for service {} for VS {}",
                            if vs.suspended { "Dea" } else { "A" },
                            rs.dest.name,
                            vs.name
                        ),
                        reason: None,
                    });
                    let warmup = slot.machine.warmup;
                    let due = now + BOOTSTRAP_DELAY + warmup_share(warmup).min(warmup);
                    slot.due = Some(due);
                }
            }
            // The end of keepalived's migrate_checkers, for real servers taken over on
            // reload: one with no failed checker belongs in the pool, one with a failed
            // checker does not (or at weight 0 with inhibit_on_failure).
            for rs_index in 0..self.virtual_servers[vs_index].real_servers.len() {
                let dest = &mut self.virtual_servers[vs_index].real_servers[rs_index].dest;
                let Some(previous) = dest.previous_weight else {
                    continue;
                };
                if dest.num_failed_checkers == 0 && !dest.alive {
                    // With the weight it had; the new one follows below, as in keepalived.
                    let weight = std::mem::replace(&mut dest.effective_weight, previous);
                    self.perform_svr_state(vs_index, rs_index, true, &mut out);
                    self.virtual_servers[vs_index].real_servers[rs_index]
                        .dest
                        .effective_weight = weight;
                } else if dest.num_failed_checkers > 0 && dest.set != dest.inhibit {
                    let dest = &mut self.virtual_servers[vs_index].real_servers[rs_index].dest;
                    let cmd = if dest.inhibit { Cmd::Add } else { Cmd::Del };
                    dest.cmd(vs_index, cmd, &mut out);
                }
            }
            // init_service_rs
            for rs_index in 0..self.virtual_servers[vs_index].real_servers.len() {
                let dest = &mut self.virtual_servers[vs_index].real_servers[rs_index].dest;
                if let Some(previous) = dest.previous_weight {
                    // Taken over on reload: only its weight moves to the new one's.
                    let weight = dest.effective_weight;
                    if weight != previous {
                        dest.effective_weight = previous;
                        self.update_svr_wgt(vs_index, rs_index, weight, false, &mut out);
                    }
                    continue;
                }
                if (dest.num_failed_checkers == 0 && !dest.alive) || (dest.inhibit && !dest.set) {
                    dest.cmd(vs_index, Cmd::Add, &mut out);
                    if dest.num_failed_checkers == 0 {
                        dest.alive = true;
                        if self.rs_init_notifies {
                            let vs = &self.virtual_servers[vs_index];
                            let rs = &vs.real_servers[rs_index];
                            Self::do_rs_notifies(vs_index, &vs.name, rs, false, &mut out);
                        }
                    }
                }
            }
            self.update_quorum_state(vs_index, true, &mut out);
            let vs = &mut self.virtual_servers[vs_index];
            if let Some(sorry) = &mut vs.sorry
                && sorry.inhibit
                && !sorry.set
            {
                // Listed at weight 0 until needed.
                sorry.num_failed_checkers = 1;
                sorry.cmd(vs_index, Cmd::Add, &mut out);
                sorry.num_failed_checkers = 0;
            }
        }
        for (vs, virtual_server) in self.virtual_servers.iter().enumerate() {
            for rs in &virtual_server.real_servers {
                out.push(Action::RealServerAlive {
                    vs,
                    dest: rs.dest.addr,
                    alive: rs.dest.alive,
                });
            }
        }
        self.rebuild_queue();
        out
    }

    fn rebuild_queue(&mut self) {
        self.queue.clear();
        for (vs, v) in self.virtual_servers.iter().enumerate() {
            for (rs, r) in v.real_servers.iter().enumerate() {
                for (checker, slot) in r.checkers.iter().enumerate() {
                    if let Some(due) = slot.due {
                        self.queue
                            .push(Reverse((due, CheckerId { vs, rs, checker })));
                    }
                }
            }
        }
    }

    fn slot(&self, id: CheckerId) -> Option<&Slot> {
        self.virtual_servers
            .get(id.vs)?
            .real_servers
            .get(id.rs)?
            .checkers
            .get(id.checker)
    }

    fn slot_mut(&mut self, id: CheckerId) -> Option<&mut Slot> {
        self.virtual_servers
            .get_mut(id.vs)?
            .real_servers
            .get_mut(id.rs)?
            .checkers
            .get_mut(id.checker)
    }

    /// When the next probe is due (None: nothing scheduled).
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((due, _))| *due)
    }

    /// The probes due at `now`; each is in flight until its [`Health::on_outcome`].
    pub fn take_due(&mut self, now: Instant) -> Vec<Probe> {
        let mut probes = Vec::new();
        while let Some(Reverse((due, id))) = self.queue.peek().copied() {
            if due > now {
                break;
            }
            self.queue.pop();
            let suspended = self.virtual_servers.get(id.vs).is_some_and(|v| v.suspended);
            if let Some(slot) = self.slot_mut(id)
                && slot.due == Some(due)
            {
                if suspended {
                    // A suspended checker only comes round again (keepalived's disabled
                    // checker).
                    let next = now + slot.machine.delay_loop;
                    slot.due = Some(next);
                    self.queue.push(Reverse((next, id)));
                    continue;
                }
                slot.due = None;
                slot.started = Some(now);
                probes.push(Probe {
                    id,
                    url: slot.machine.next_url(),
                });
            }
        }
        probes
    }

    /// `ha_suspend`: whether virtual server `vs`'s address is on this host now. Its checks
    /// run only while it is (keepalived follows the addresses through netlink); the pool
    /// stays as it is meanwhile.
    pub fn set_address_present(&mut self, vs: VsIndex, present: bool) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(v) = self.virtual_servers.get_mut(vs) else {
            return out;
        };
        if !v.ha_suspend || v.suspended != present {
            return out;
        }
        v.suspended = !present;
        for rs in &v.real_servers {
            for _ in rs
                .checkers
                .iter()
                .filter(|s| !matches!(s.machine.flavor, Flavor::File(_)))
            {
                out.push(Action::Log {
                    message: format!(
                        "{}ing healthchecker for service {} for VS {}",
                        if present { "Activat" } else { "Suspend" },
                        rs.dest.name,
                        v.name
                    ),
                    reason: None,
                });
            }
        }
        out
    }

    /// Digests a probe's result at `now`: the checker's retries, the real server's state,
    /// the virtual server's quorum; schedules the checker's next probe. Returns what to do,
    /// in order.
    pub fn on_outcome(&mut self, now: Instant, probe: Probe, outcome: Outcome) -> Vec<Action> {
        let mut out = Vec::new();
        let id = probe.id;
        let Some(slot) = self.slot_mut(id) else {
            return out;
        };
        if slot.due.is_some() || slot.started.is_none() {
            // Not in flight (stopped meanwhile, or a stray result).
            return out;
        }
        let step = slot.machine.step(probe.url, outcome);
        let started = slot.started.take().unwrap_or(now);
        let (has_run_after, from_start, delay) = (step.has_run_after, step.from_start, step.delay);
        self.apply(id, step, &mut out);
        if let Some(slot) = self.slot_mut(id) {
            if has_run_after {
                slot.machine.has_run = true;
            }
            let base = if from_start { started } else { now };
            // keepalived never schedules in the past: at the earliest, right away.
            let due = (base + delay).max(now);
            slot.due = Some(due);
            self.queue.push(Reverse((due, id)));
        }
        out
    }

    /// Applies a checker's step: its logs, its weight change, its state change.
    fn apply(&mut self, id: CheckerId, step: Step, out: &mut Vec<Action>) {
        out.extend(step.logs);
        match step.weight {
            WeightChange::None => {}
            WeightChange::Dynamic { old, new } => {
                let rs = &self.virtual_servers[id.vs].real_servers[id.rs];
                let weight = rs.dest.effective_weight - old + new;
                self.update_svr_wgt(id.vs, id.rs, weight, true, out);
            }
            WeightChange::Silent { old, new } => {
                let dest = &mut self.virtual_servers[id.vs].real_servers[id.rs].dest;
                dest.effective_weight += new - old;
            }
        }
        if let Some(alive) = step.transition {
            self.update_svr_checker_state(id, alive, out);
        }
    }

    /// A FILE_CHECK's file holds `value` before [`Health::start`]: the real server starts
    /// with that weight share, or down (keepalived reads track files before filling pools).
    pub fn set_initial_file_value(&mut self, id: CheckerId, value: i64) {
        let Some(rs) = self
            .virtual_servers
            .get_mut(id.vs)
            .and_then(|vs| vs.real_servers.get_mut(id.rs))
        else {
            return;
        };
        let Some(Slot { machine, .. }) = rs.checkers.get_mut(id.checker) else {
            return;
        };
        let Flavor::File(file) = &mut machine.flavor else {
            return;
        };
        let previous = file.status;
        file.status = file.status_of(value);
        if previous == FILE_FAULT {
            return;
        }
        if file.status == FILE_FAULT {
            machine.is_up = false;
            rs.dest.num_failed_checkers += 1;
            rs.dest.effective_weight -= previous;
        } else {
            rs.dest.effective_weight += file.status - previous;
        }
    }

    /// A FILE_CHECK's file now holds `value`: its real server's weight follows, or it goes
    /// down (fault) or comes back.
    pub fn on_file_value(&mut self, id: CheckerId, value: i64) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(slot) = self.slot_mut(id) {
            let step = slot.machine.file_value(value);
            self.apply(id, step, &mut out);
        }
        out
    }

    /// keepalived's `update_svr_checker_state`.
    fn update_svr_checker_state(&mut self, id: CheckerId, alive: bool, out: &mut Vec<Action>) {
        let vs = &mut self.virtual_servers[id.vs];
        let rs = &mut vs.real_servers[id.rs];
        let machine = &mut rs.checkers[id.checker].machine;
        if machine.is_up == alive {
            if !machine.has_run {
                let notify = machine.alpha || !alive;
                machine.has_run = true;
                if notify {
                    Self::do_rs_notifies(id.vs, &vs.name, rs, false, out);
                }
            }
            return;
        }
        machine.has_run = true;
        let failed = rs.dest.num_failed_checkers;
        if (alive && failed <= 1) || (!alive && failed == 0) {
            self.perform_svr_state(id.vs, id.rs, alive, out);
        }
        let rs = &mut self.virtual_servers[id.vs].real_servers[id.rs];
        rs.checkers[id.checker].machine.is_up = alive;
        if !alive {
            rs.dest.num_failed_checkers += 1;
        } else {
            rs.dest.num_failed_checkers = rs.dest.num_failed_checkers.saturating_sub(1);
        }
    }

    /// keepalived's `perform_svr_state`: a real server comes up or goes down.
    fn perform_svr_state(
        &mut self,
        vs_index: usize,
        rs_index: usize,
        alive: bool,
        out: &mut Vec<Action>,
    ) {
        let vs = &mut self.virtual_servers[vs_index];
        let may_change_pool = vs.pool_follows_servers();
        let vs_name = vs.name.clone();
        let rs = &mut vs.real_servers[rs_index];
        if rs.dest.alive == alive {
            return;
        }
        let inhibit = rs.dest.inhibit;
        out.push(Action::Log {
            message: format!(
                "{}ing service {} {} VS {}",
                match (alive, inhibit) {
                    (true, true) => "Enabl",
                    (true, false) => "Add",
                    (false, true) => "Disabl",
                    (false, false) => "Remov",
                },
                rs.dest.name,
                match (inhibit, alive) {
                    (true, _) => "of",
                    (false, true) => "to",
                    (false, false) => "from",
                },
                vs_name
            ),
            reason: None,
        });
        if may_change_pool {
            let cmd = if alive { Cmd::Add } else { Cmd::Del };
            rs.dest.cmd(vs_index, cmd, out);
        }
        rs.dest.alive = alive;
        out.push(Action::RealServerAlive {
            vs: vs_index,
            dest: rs.dest.addr,
            alive,
        });
        Self::do_rs_notifies(vs_index, &vs_name, rs, false, out);
        self.update_quorum_state(vs_index, false, out);
    }

    fn do_rs_notifies(
        vs: VsIndex,
        vs_name: &str,
        rs: &RsHealth,
        stopping: bool,
        out: &mut Vec<Action>,
    ) {
        let dest = rs.dest.addr;
        let (script, event) = if rs.dest.alive {
            (&rs.notify_up, ScriptEvent::RealServerUp { vs, dest })
        } else {
            (&rs.notify_down, ScriptEvent::RealServerDown { vs, dest })
        };
        Self::notify(script.as_ref(), event, stopping, out);
        out.push(Action::NotifyFifo {
            line: format!(
                "RS {} {vs_name} {}\n",
                rs.dest.name,
                if rs.dest.alive { "UP" } else { "DOWN" }
            ),
        });
    }

    /// A notify script (one second at shutdown).
    fn notify(script: Option<&Script>, event: ScriptEvent, stopping: bool, out: &mut Vec<Action>) {
        if let Some(script) = script {
            out.push(Action::RunScript {
                script: script.clone(),
                event,
                timeout: stopping.then_some(SHUTDOWN_SCRIPT_TIMEOUT),
            });
        }
    }

    fn do_vs_notifies(vs_index: VsIndex, vs: &VsHealth, stopping: bool, out: &mut Vec<Action>) {
        if stopping && !vs.omega {
            return;
        }
        let (script, event) = if vs.quorum_state_up {
            (&vs.quorum_up, ScriptEvent::QuorumUp { vs: vs_index })
        } else {
            (&vs.quorum_down, ScriptEvent::QuorumDown { vs: vs_index })
        };
        Self::notify(script.as_ref(), event, stopping, out);
        out.push(Action::NotifyFifo {
            line: format!(
                "VS {} {}\n",
                vs.name,
                if vs.quorum_state_up { "UP" } else { "DOWN" }
            ),
        });
    }

    fn live_weight(vs: &VsHealth) -> i64 {
        vs.real_servers
            .iter()
            .filter(|rs| rs.dest.alive)
            .map(|rs| i64::from(real_weight(rs.dest.effective_weight)))
            .sum()
    }

    /// keepalived's `perform_quorum_state`: all live real servers in or out of the pool.
    fn perform_quorum_state(
        vs_index: VsIndex,
        vs: &mut VsHealth,
        add: bool,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Log {
            message: format!(
                "{} the pool for VS {}",
                if add {
                    "Adding alive servers to"
                } else {
                    "Removing alive servers from"
                },
                vs.name
            ),
            reason: None,
        });
        for rs in vs.real_servers.iter_mut().filter(|rs| rs.dest.alive) {
            rs.dest
                .cmd(vs_index, if add { Cmd::Add } else { Cmd::Del }, out);
        }
    }

    /// keepalived's `update_quorum_state`, with its hysteresis.
    fn update_quorum_state(&mut self, vs_index: VsIndex, init: bool, out: &mut Vec<Action>) {
        let vs = &mut self.virtual_servers[vs_index];
        let weight_sum = Self::live_weight(vs);
        let threshold = if vs.quorum_state_up {
            vs.quorum - vs.hysteresis
        } else {
            vs.quorum + vs.hysteresis
        };
        let sorry_alive = vs.sorry.as_ref().map(|s| s.alive);
        if !vs.quorum_state_up && weight_sum >= threshold {
            vs.quorum_state_up = true;
            out.push(Action::Log {
                message: format!(
                    "Gained quorum {}+{}={} <= {} for VS {}",
                    vs.quorum, vs.hysteresis, threshold, weight_sum, vs.name
                ),
                reason: None,
            });
            if sorry_alive == Some(true)
                && let Some(sorry) = &mut vs.sorry
            {
                out.push(Action::Log {
                    message: format!(
                        "{} sorry server {} from VS {}",
                        if sorry.inhibit {
                            "Disabling"
                        } else {
                            "Removing"
                        },
                        sorry.name,
                        vs.name
                    ),
                    reason: None,
                });
                sorry.cmd(vs_index, Cmd::Del, out);
                sorry.alive = false;
                Self::perform_quorum_state(vs_index, vs, true, out);
            }
            Self::do_vs_notifies(vs_index, vs, false, out);
        } else if (vs.quorum_state_up && (weight_sum == 0 || weight_sum < threshold))
            || (init && !vs.quorum_state_up && sorry_alive == Some(false))
        {
            vs.quorum_state_up = false;
            out.push(Action::Log {
                message: format!(
                    "{} {}-{}={} > {} for VS {}",
                    if init {
                        "Starting with quorum down"
                    } else {
                        "Lost quorum"
                    },
                    vs.quorum,
                    vs.hysteresis,
                    threshold,
                    weight_sum,
                    vs.name
                ),
                reason: None,
            });
            if sorry_alive == Some(false) {
                Self::perform_quorum_state_with_sorry(vs_index, vs, out);
            }
            Self::do_vs_notifies(vs_index, vs, false, out);
        }
    }

    fn perform_quorum_state_with_sorry(
        vs_index: VsIndex,
        vs: &mut VsHealth,
        out: &mut Vec<Action>,
    ) {
        let Some(sorry) = &vs.sorry else { return };
        out.push(Action::Log {
            message: format!(
                "{} sorry server {} to VS {}",
                if sorry.inhibit { "Enabling" } else { "Adding" },
                sorry.name,
                vs.name
            ),
            reason: None,
        });
        Self::perform_quorum_state(vs_index, vs, false, out);
        if let Some(sorry) = &mut vs.sorry {
            sorry.cmd(vs_index, Cmd::Add, out);
            sorry.alive = true;
        }
    }

    /// keepalived's `update_svr_wgt`.
    fn update_svr_wgt(
        &mut self,
        vs_index: usize,
        rs_index: usize,
        weight: i64,
        update_quorum: bool,
        out: &mut Vec<Action>,
    ) {
        let vs = &mut self.virtual_servers[vs_index];
        let may_edit = vs.pool_follows_servers();
        let vs_name = vs.name.clone();
        let dest = &mut vs.real_servers[rs_index].dest;
        let old = real_weight(dest.effective_weight);
        let new = real_weight(weight);
        dest.effective_weight = weight;
        if old == new {
            return;
        }
        out.push(Action::Log {
            message: format!(
                "Changing weight from {old} to {new} for {}active service {} of VS {vs_name}",
                if dest.alive { "" } else { "in" },
                dest.name
            ),
            reason: None,
        });
        if dest.set && dest.alive && may_edit {
            dest.cmd(vs_index, Cmd::Edit, out);
        }
        if update_quorum {
            self.update_quorum_state(vs_index, false, out);
        }
    }

    /// Shutdown (keepalived's `clear_services` without `lvs_flush`): every destination
    /// leaves the pool (even inhibited ones); with `omega`, live real servers' `notify_down`
    /// and the virtual server's `quorum_down` run (one second each). No probe is due after.
    pub fn stop(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.queue.clear();
        for (vs_index, vs) in self.virtual_servers.iter_mut().enumerate() {
            for rs in &mut vs.real_servers {
                for slot in &mut rs.checkers {
                    slot.due = None;
                    slot.started = None;
                }
            }
            if let Some(sorry) = &mut vs.sorry
                && sorry.set
            {
                sorry.cmd(vs_index, Cmd::ForceDel, &mut out);
                sorry.alive = false;
            }
            for rs in &mut vs.real_servers {
                out.push(rs.dest.clearing_log("Shutting down", &vs.name));
                if !rs.dest.set {
                    continue;
                }
                rs.dest.cmd(vs_index, Cmd::ForceDel, &mut out);
                if !rs.dest.alive {
                    continue;
                }
                rs.dest.alive = false;
                if vs.omega {
                    Self::do_rs_notifies(vs_index, &vs.name, rs, true, &mut out);
                }
            }
            vs.quorum_state_up = false;
            Self::do_vs_notifies(vs_index, vs, true, &mut out);
        }
        out
    }

    /// The real servers of virtual server `vs` as they stand.
    pub fn real_servers(&self, vs: VsIndex) -> Vec<RealServerStatus> {
        self.virtual_servers.get(vs).map_or_else(Vec::new, |v| {
            v.real_servers
                .iter()
                .map(|rs| RealServerStatus {
                    dest: rs.dest.addr,
                    alive: rs.dest.alive,
                    in_pool: rs.dest.set,
                    weight: real_weight(rs.dest.effective_weight),
                    failed_checkers: rs.dest.num_failed_checkers,
                })
                .collect()
        })
    }

    /// Whether virtual server `vs` has quorum.
    pub fn has_quorum(&self, vs: VsIndex) -> bool {
        self.virtual_servers
            .get(vs)
            .is_some_and(|v| v.quorum_state_up)
    }

    /// Whether virtual server `vs`'s sorry server is serving.
    pub fn sorry_server_active(&self, vs: VsIndex) -> bool {
        self.virtual_servers
            .get(vs)
            .and_then(|v| v.sorry.as_ref())
            .is_some_and(|s| s.alive)
    }

    /// When checker `id`'s next probe is due (None while it runs).
    pub fn due(&self, id: CheckerId) -> Option<Instant> {
        self.slot(id).and_then(|s| s.due)
    }

    /// The address the real server `rs` of `vs` is known by.
    pub fn dest(&self, vs: VsIndex, rs: usize) -> Option<SocketAddr> {
        Some(
            self.virtual_servers
                .get(vs)?
                .real_servers
                .get(rs)?
                .dest
                .addr,
        )
    }
}
