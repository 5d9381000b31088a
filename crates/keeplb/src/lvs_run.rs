//! The configuration's `virtual_server` blocks, served by the userspace data plane.
//!
//! keepalived turns each `virtual_server` into IPVS commands; keeplb turns it into the
//! same balancer state (scheduler, real servers in IPVS's list order, persistence,
//! thresholds) and serves it with the proxy. A `virtual_server group` becomes one
//! service per address of the group, as keepalived makes one IPVS service per entry.
//! Firewall-mark services need the kernel path: each is reported and skipped, and the
//! rest are served.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::health_book::{HealthBook, HealthWatch};
use anyhow::{Context, bail};
use keeplb_balancer::{
    ConnSettings, Dest, Granularity, Persistence, Pool, Protocol, SchedFlags, SchedulerKind,
    Service, ServiceAddr, Thresholds,
};
use keeplb_check::{Action, CheckerId, Checks, Control, Health, Outcome, Reason, RunOptions, Stop};
use keeplb_config::model;
use keeplb_control::metrics::{CheckKey, CheckResult, service_label};
use keeplb_control::model::{Protocol as ControlProtocol, ServiceKey};
use keeplb_proxy::{
    DataPlane, Forwarding, ProxyProtocol, ServiceId, ServiceOptions, VirtualService,
};
use keeplb_script::{FifoWriter, ScriptCommand, ScriptSecurityError, vet_script};
use tokio::sync::{mpsc, oneshot};

/// Group ranges wider than this are refused rather than expanded.
const MAX_GROUP_RANGE: u128 = 65_536;

/// Checks in flight at most; each holds a descriptor or a process.
const MAX_CHECKS_IN_FLIGHT: usize = 4096;

/// How often `ha_suspend` virtual servers' addresses are looked for on this host.
const ADDRESS_POLL: Duration = Duration::from_secs(1);

/// The served virtual servers: the data plane, and which of its services each
/// `virtual_server` block of the configuration became.
#[derive(Debug)]
pub struct Director {
    /// Shared with the control socket; dropping the last holder closes every listener
    /// and connection.
    plane: Arc<DataPlane>,
    layout: RwLock<Layout>,
    /// Real servers that left a pool. One that comes back gets the same destination
    /// again, with its connections' counters and its persistent clients, as IPVS takes
    /// a destination back from its trash.
    trash: Mutex<HashMap<(ServiceId, SocketAddr), Arc<Dest>>>,
    /// Where each check's result goes, for the metrics.
    check_results: OnceLock<mpsc::UnboundedSender<DirectorReport>>,
    /// Each configured real server's health, published for status and metrics.
    health: Mutex<HealthBook>,
    /// The notify FIFOs the checkers write their `RS …` / `VS …` lines to.
    fifos: OnceLock<Vec<Arc<FifoWriter>>>,
}

/// A new configuration for the virtual servers, and where to say what of it could not
/// be served once it is applied.
pub struct Reload {
    pub config: Arc<model::Config>,
    pub applied: Option<oneshot::Sender<Vec<String>>>,
}

/// One check's result as the metrics record it.
pub type CheckMetric = (CheckKey, CheckResult, Duration);

/// What the director tells the control plane.
#[derive(Debug)]
pub enum DirectorReport {
    /// One check's result.
    Check(CheckMetric),
    /// Where the configured real servers' health is published (sent first, once).
    Health(HealthWatch),
}

/// What the configuration in force made of the data plane.
#[derive(Debug, Default)]
struct Layout {
    /// Indexed like `config.virtual_server`; a group gives several services, a service
    /// that could not start none.
    by_block: Vec<Vec<Arc<VirtualService>>>,
    /// Thresholds of each block's real servers, applied when checks add them.
    thresholds: Vec<Vec<(SocketAddr, Thresholds)>>,
    /// Services the configuration made (those added with `keeplb adm` are left alone
    /// by reloads, as keepalived leaves services it did not create).
    owned: HashSet<ServiceId>,
    /// The real servers the configuration gives each service it made: a reload removes
    /// only those the previous configuration had (keepalived's `clear_diff_rs`), so real
    /// servers added with `keeplb adm -a` stay.
    configured: HashMap<ServiceId, Vec<SocketAddr>>,
}

impl Director {
    /// Starts the data plane with every virtual server of `config` that can be served,
    /// each with no real server yet: the health checks add them ([`Director::serve`]),
    /// as keepalived's checkers fill IPVS. With no virtual server the data plane still
    /// runs, for `keeplb adm -A`.
    pub fn start(config: &model::Config, workers: NonZeroUsize) -> anyhow::Result<Self> {
        let director = Self {
            plane: Arc::new(DataPlane::start(workers).context("starting the data plane")?),
            layout: RwLock::default(),
            trash: Mutex::default(),
            check_results: OnceLock::new(),
            health: Mutex::default(),
            fifos: OnceLock::new(),
        };
        director.reconcile(config);
        Ok(director)
    }

    /// The data plane, for the control socket.
    pub fn plane(&self) -> Arc<DataPlane> {
        Arc::clone(&self.plane)
    }

    /// Sends every health check's result to `results` from now on (once), after where
    /// the configured real servers' health is published.
    pub fn report_checks_to(&self, results: mpsc::UnboundedSender<DirectorReport>) {
        let watch = self
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subscribe();
        let _ = results.send(DirectorReport::Health(watch));
        let _ = self.check_results.set(results);
    }

    /// Has the checkers write their events to `fifos` (`notify_fifo`, `lvs_notify_fifo`).
    pub fn notify_to(&self, fifos: Vec<Arc<FifoWriter>>) {
        let _ = self.fifos.set(fifos);
    }

    /// Makes the served services those of `config`. A service that stays keeps its
    /// listeners, connections, persistence templates and real servers; its scheduler,
    /// persistence, timeouts and options change in place, and real servers the new
    /// configuration dropped leave its pool. New services start listening; services
    /// the configuration no longer has stop accepting and drain. Returns what could not
    /// be served (logged too), so that a reload can say so.
    pub fn reconcile(&self, config: &model::Config) -> Vec<String> {
        let mut failures = Vec::new();
        let settings = conn_settings(&config.global_defs);
        let before = std::mem::take(
            &mut self
                .layout
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .configured,
        );
        let mut layout = Layout::default();
        for vs in &config.virtual_server {
            let name = describe(&vs.key);
            let addresses = addresses(vs, config).unwrap_or_else(|e| {
                let failure = format!("virtual_server {name}: {e:#}");
                tracing::error!("{failure}");
                failures.push(failure);
                Vec::new()
            });
            let configured: Vec<SocketAddr> = vs
                .real_server
                .iter()
                .map(|rs| SocketAddr::new(rs.ip, rs.port))
                .collect();
            let mut services = Vec::new();
            for vip in addresses {
                match self.serve_block_address(vs, vip, settings, &configured, &before) {
                    Ok((svc, refused)) => {
                        if let Some(refused) = refused {
                            let failure = format!("virtual_server {name} ({vip}): {refused}");
                            tracing::error!("{failure}");
                            failures.push(failure);
                        }
                        let id = (svc.protocol(), svc.vip());
                        layout.owned.insert(id);
                        layout.configured.insert(id, configured.clone());
                        services.push(svc);
                    }
                    Err(e) => {
                        let failure = format!("virtual_server {name} ({vip}): not served: {e:#}");
                        tracing::error!("{failure}");
                        failures.push(failure);
                    }
                }
            }
            layout.by_block.push(services);
            layout.thresholds.push(
                vs.real_server
                    .iter()
                    .map(|rs| {
                        let thresholds = Thresholds {
                            upper: rs.uthreshold,
                            lower: rs.lthreshold,
                        };
                        (SocketAddr::new(rs.ip, rs.port), thresholds)
                    })
                    .collect(),
            );
        }
        let mut current = self.layout.write().unwrap_or_else(PoisonError::into_inner);
        for gone in current.owned.difference(&layout.owned) {
            if self.plane.remove(gone.0, gone.1).is_some() {
                tracing::info!(
                    "{} {}: removed from the configuration; draining",
                    gone.0,
                    gone.1
                );
            }
        }
        *current = layout;
        failures
    }

    /// The service of block `vs` on `vip`: the running one, brought to the block's
    /// settings (the real servers the configuration gave it `before` and no longer
    /// gives it leave it), or a new one.
    fn serve_block_address(
        &self,
        vs: &model::VirtualServer,
        vip: SocketAddr,
        settings: ConnSettings,
        configured: &[SocketAddr],
        before: &HashMap<ServiceId, Vec<SocketAddr>>,
    ) -> anyhow::Result<(Arc<VirtualService>, Option<String>)> {
        let (service, mut options) = service(vs, vip)?;
        let protocol = match service.addr() {
            ServiceAddr::Addr(protocol, _) => protocol,
            ServiceAddr::Fwmark(mark) => bail!(keeplb_proxy::ProxyError::Fwmark { mark }),
        };
        let previously = before.get(&(protocol, vip)).map_or(&[][..], Vec::as_slice);
        let Some(running) = self.plane.get(protocol, vip) else {
            let svc = Arc::new(VirtualService::new(service, settings, options)?);
            self.plane.add(Arc::clone(&svc))?;
            return Ok((svc, None));
        };
        let sorry = options.sorry_server.as_ref().map(|d| d.addr());
        // A running service stays served whatever part of its new settings is refused.
        let (removed, refused) = running.edit(|live| {
            let mut refused = None;
            let (kind, flags) = (vs.lb_algo, options.sched_flags);
            if (live.pool.scheduler().kind() != kind || running.options().sched_flags != flags)
                && let Err(e) = live.pool.set_scheduler(kind.build(flags))
            {
                refused = Some(format!(
                    "the new scheduler is refused ({e}); the previous one stays"
                ));
            }
            live.set_persistence(service.persistence());
            live.set_persistence_engine(service.persistence_engine());
            let dropped: Vec<SocketAddr> = live
                .pool
                .dests()
                .iter()
                .map(|d| d.addr())
                .filter(|a| previously.contains(a) && !configured.contains(a) && Some(*a) != sorry)
                .collect();
            let removed: Vec<Arc<Dest>> = dropped
                .into_iter()
                .filter_map(|addr| live.pool.remove(addr).ok())
                .collect();
            (removed, refused)
        });
        self.throw_away(&running, removed);
        if running.conn_settings() != settings {
            running.set_conn_settings(settings);
        }
        // An unchanged sorry server keeps its counters, and the connections counted on it.
        if let (Some(new), Some(old)) = (&options.sorry_server, &running.options().sorry_server)
            && new.addr() == old.addr()
        {
            options.sorry_server = Some(Arc::clone(old));
        }
        running.set_options(options);
        Ok((running, refused))
    }

    fn throw_away(&self, svc: &VirtualService, dests: Vec<Arc<Dest>>) {
        let mut trash = self.trash.lock().unwrap_or_else(PoisonError::into_inner);
        for dest in dests {
            trash.insert(((svc.protocol(), svc.vip()), dest.addr()), dest);
        }
    }

    /// Runs the health checks until `stopped` resolves, applying every pool change
    /// they decide. Each configuration `reloads` delivers is reconciled, and the new
    /// checks carry over the old ones' state. At the end they empty the pools (and run
    /// `omega` scripts).
    pub async fn serve(
        &self,
        config: Arc<model::Config>,
        mut reloads: mpsc::UnboundedReceiver<Reload>,
        stopped: impl Future<Output = ()>,
    ) {
        tokio::pin!(stopped);
        let mut config = config;
        let mut previous: Option<Health> = None;
        loop {
            let (reports, mut probe_reports) = mpsc::unbounded_channel();
            let checked = runnable_scripts(&config);
            // Named from what the checks run (a refused MISC_CHECK is not among them).
            self.publish_configured(&checked);
            let (mut checks, problems) = Checks::new(
                &checked,
                RunOptions {
                    max_in_flight: MAX_CHECKS_IN_FLIGHT,
                    reports: self.check_results.get().map(|_| reports),
                    fifos: self.fifos.get().cloned().unwrap_or_default(),
                },
            );
            let labels = CheckLabels::new(&checked);
            let forward_reports = async {
                while let Some(report) = probe_reports.recv().await {
                    if let (Some(results), Some(key)) =
                        (self.check_results.get(), labels.key(report.checker))
                    {
                        let result = (key, check_result(&report.outcome), report.duration);
                        let _ = results.send(DirectorReport::Check(result));
                    }
                }
            };
            for problem in problems {
                tracing::warn!("{problem}");
            }
            if let Some(previous) = &previous {
                checks.inherit(previous);
            }
            let controller = checks.controller();
            let mut next_config = None;
            let stop = async {
                tokio::select! {
                    () = &mut stopped => Stop::Exit,
                    Some(new) = reloads.recv() => {
                        next_config = Some(new);
                        Stop::Reload
                    }
                }
            };
            let (actions, mut pending) = mpsc::unbounded_channel();
            let apply = async {
                while let Some(action) = pending.recv().await {
                    self.apply(&action);
                    // A burst (every verdict at the checks' start) is published once.
                    while let Ok(action) = pending.try_recv() {
                        self.apply(&action);
                    }
                    self.health
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .publish();
                }
            };
            let presence = report_addresses(&config, &controller);
            // The checks end first; the channel then closes and the last changes apply.
            let health = tokio::select! {
                (health, (), ()) = async {
                    tokio::join!(checks.run_until(actions, stop), apply, forward_reports)
                } => health,
                () = presence => unreachable!("the address poll never ends"),
            };
            let Some(Reload {
                config: new,
                applied,
            }) = next_config
            else {
                return;
            };
            let failures = self.reconcile(&new);
            if let Some(applied) = applied {
                let _ = applied.send(failures);
            }
            config = new;
            previous = Some(health);
        }
    }

    /// Applies one pool change to every service of its block; a verdict on a real server
    /// goes to the health book instead.
    fn apply(&self, action: &Action) {
        let (vs, dest) = match action {
            Action::AddDest { vs, dest, .. }
            | Action::RemoveDest { vs, dest }
            | Action::SetWeight { vs, dest, .. } => (*vs, *dest),
            Action::RealServerAlive { .. } => {
                self.health
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(action);
                return;
            }
            _ => return,
        };
        let layout = self.layout.read().unwrap_or_else(PoisonError::into_inner);
        let thresholds = layout
            .thresholds
            .get(vs)
            .and_then(|t| t.iter().find(|(addr, _)| *addr == dest))
            .map_or(Thresholds::NONE, |(_, t)| *t);
        for svc in layout.by_block.get(vs).into_iter().flatten() {
            let id = (svc.protocol(), svc.vip());
            let result = svc.edit(|service| match *action {
                Action::AddDest { weight, .. } => {
                    let trashed = self
                        .trash
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&(id, dest));
                    match trashed {
                        Some(back) => {
                            service.pool.add(back)?;
                            service.pool.set_weight(dest, weight)?;
                            service.pool.set_thresholds(dest, thresholds)
                        }
                        None => {
                            let added = Dest::new(dest, weight)?.with_thresholds(thresholds);
                            service.pool.add(Arc::new(added))
                        }
                    }
                }
                Action::RemoveDest { .. } => {
                    let removed = service.pool.remove(dest)?;
                    self.trash
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((id, dest), removed);
                    Ok(())
                }
                Action::SetWeight { weight, .. } => service.pool.set_weight(dest, weight),
                _ => Ok(()),
            });
            if let Err(e) = result {
                tracing::error!("{} {}: {e}", svc.protocol(), svc.vip());
            }
        }
    }

    /// Publishes the real servers `config` (the one in force, as the checks run it) gives
    /// each service (kept: the health of those the previous configuration had too, as the
    /// checks keep theirs).
    fn publish_configured(&self, config: &model::Config) {
        let labels = CheckLabels::new(config);
        let layout = self.layout.read().unwrap_or_else(PoisonError::into_inner);
        let services = layout
            .by_block
            .iter()
            .map(|block| block.iter().map(|s| (s.protocol(), s.vip())).collect())
            .collect();
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .configure(config, services, |id| labels.key(id));
    }
}

/// The configuration the health checks run, without the scripts keepalived's checker
/// disables (`check_check_script_security`, check_data.c; `check_script_secure`,
/// lib/notify.c): a MISC_CHECK whose script may not run is removed from its real server
/// (`check_misc_script_security`, check_misc.c), a real server's `notify_up` /
/// `notify_down` or a virtual server's `quorum_up` / `quorum_down` that may not run is
/// dropped. A script may not run when it is missing, not executable by its user, or,
/// with `enable_script_security`, modifiable by a non-root user while it runs as root.
/// Scripts that cannot even be parsed, or name an unknown user, are left to the checks,
/// which report them.
fn runnable_scripts(config: &model::Config) -> model::Config {
    let global = &config.global_defs;
    let runs = |line: &str, user: Option<&str>, group: Option<&str>| {
        script_verdict(line, user.map(|u| (u, group)), global)
    };
    let runs_script = |script: &Option<model::Script>| {
        script
            .as_ref()
            .is_none_or(|s| runs(&s.script, s.user.as_deref(), s.group.as_deref()).is_ok())
    };
    let mut checked = config.clone();
    for vs in &mut checked.virtual_server {
        for quorum in [&mut vs.quorum_up, &mut vs.quorum_down] {
            if !runs_script(quorum) {
                *quorum = None;
            }
        }
        for rs in &mut vs.real_server {
            for notify in [&mut rs.notify_up, &mut rs.notify_down] {
                if !runs_script(notify) {
                    *notify = None;
                }
            }
            rs.checkers.retain(|checker| {
                let model::CheckKind::Misc(misc) = &checker.kind else {
                    return true;
                };
                let Err((command, refusal)) =
                    runs(&misc.misc_path, misc.user.as_deref(), misc.group.as_deref())
                else {
                    return true;
                };
                match refusal {
                    ScriptSecurityError::NotFound { .. }
                    | ScriptSecurityError::PathPermission { .. } => {
                        tracing::warn!("Disabling misc script {command} since not found/accessible")
                    }
                    ScriptSecurityError::Insecure { .. }
                    | ScriptSecurityError::WrongType { .. } => {
                        tracing::warn!("Disabling misc script {command} due to insecure")
                    }
                    // keepalived says no more than check_script_secure's warning.
                    ScriptSecurityError::NotExecutable { .. } => {}
                }
                false
            });
        }
    }
    checked
}

/// Whether a checker-side script may run, as keepalived's `check_script_secure` decides
/// (see [`runnable_scripts`]), logging its line; Err with the command and why not.
fn script_verdict(
    line: &str,
    own_user: Option<(&str, Option<&str>)>,
    global: &model::GlobalDefs,
) -> Result<(), (String, ScriptSecurityError)> {
    let script_user = global.script_user.as_ref().map(model::ScriptUser::names);
    let Ok(command) = ScriptCommand::configured(line, own_user, script_user) else {
        return Ok(());
    };
    vet_script(&command, global.enable_script_security)
        .map_err(|refusal| (command.keepalived_quoted(), refusal))
}

/// The metrics' names of every checker of a configuration.
struct CheckLabels {
    /// Per virtual server: its label, and per real server its address and checker names.
    blocks: Vec<(String, Vec<RealServerLabels>)>,
}

/// A real server's address and its checkers' names (`TCP_CHECK`, `TCP_CHECK#2`…).
type RealServerLabels = (SocketAddr, Vec<String>);

impl CheckLabels {
    fn new(config: &model::Config) -> Self {
        let blocks = config
            .virtual_server
            .iter()
            .map(|vs| {
                let protocol = match vs.protocol {
                    model::Protocol::Tcp => ControlProtocol::Tcp,
                    model::Protocol::Udp => ControlProtocol::Udp,
                    model::Protocol::Sctp => ControlProtocol::Sctp,
                };
                let service = match &vs.key {
                    model::VirtualServerKey::Address { ip, port } => {
                        service_label(&ServiceKey::Addr {
                            protocol,
                            address: *ip,
                            port: *port,
                        })
                    }
                    other => describe(other),
                };
                let real_servers = vs
                    .real_server
                    .iter()
                    .map(|rs| {
                        let mut seen: HashMap<&str, usize> = HashMap::new();
                        let names = rs
                            .checkers
                            .iter()
                            .map(|c| {
                                let kind = c.kind.keyword();
                                let n = seen.entry(kind).or_default();
                                *n += 1;
                                if *n == 1 {
                                    kind.to_owned()
                                } else {
                                    format!("{kind}#{n}")
                                }
                            })
                            .collect();
                        (SocketAddr::new(rs.ip, rs.port), names)
                    })
                    .collect();
                (service, real_servers)
            })
            .collect();
        Self { blocks }
    }

    fn key(&self, id: CheckerId) -> Option<CheckKey> {
        let (service, real_servers) = self.blocks.get(id.vs)?;
        let (real_server, checkers) = real_servers.get(id.rs)?;
        Some(CheckKey {
            service: service.clone(),
            real_server: *real_server,
            checker: checkers.get(id.checker)?.clone(),
        })
    }
}

/// How the metrics classify a probe's outcome.
fn check_result(outcome: &Outcome) -> CheckResult {
    match outcome {
        Outcome::Up => CheckResult::Passed,
        // MISC_CHECK: 0 is up, 1 down, 2-255 up with a weight (misc_dynamic).
        Outcome::Exited(1) => CheckResult::Failed,
        Outcome::Exited(_) => CheckResult::Passed,
        Outcome::Down(Reason::ConnectTimeout | Reason::IoTimeout | Reason::ScriptTimeout) => {
            CheckResult::TimedOut
        }
        Outcome::Down(_) => CheckResult::Failed,
    }
}

/// Tells the checks of `ha_suspend` virtual servers whether their address is on this
/// host, now and whenever that changes (polled: VRRP moves addresses in and out).
async fn report_addresses(config: &model::Config, checks: &mpsc::UnboundedSender<Control>) {
    let watched: Vec<(usize, IpAddr)> = config
        .virtual_server
        .iter()
        .enumerate()
        .filter(|(_, vs)| vs.ha_suspend)
        .filter_map(|(index, vs)| match vs.key {
            model::VirtualServerKey::Address { ip, .. } => Some((index, ip)),
            _ => None,
        })
        .collect();
    let mut known: HashMap<usize, bool> = HashMap::new();
    let mut poll = tokio::time::interval(ADDRESS_POLL);
    loop {
        poll.tick().await;
        if watched.is_empty() {
            continue;
        }
        let local = local_addresses();
        for &(vs, ip) in &watched {
            let present = local.contains(&ip);
            if known.insert(vs, present) != Some(present) {
                let _ = checks.send(Control::AddressPresent { vs, present });
            }
        }
    }
}

/// Every address configured on this host's interfaces.
fn local_addresses() -> HashSet<IpAddr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    addresses
        .filter_map(|a| a.address)
        .filter_map(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// The forwarding method of keepalived's `lb_kind` / `lvs_method`, with TUN's settings
/// (keepalived's defaults, ipip, when the model has none).
pub fn forwarding(kind: model::LbKind, tunnel: Option<model::Tunnel>) -> Forwarding {
    match kind {
        model::LbKind::Nat => Forwarding::Masq,
        model::LbKind::Dr => Forwarding::Route,
        model::LbKind::Tun => Forwarding::Tunnel(tunnel.unwrap_or_default()),
    }
}

fn describe(key: &model::VirtualServerKey) -> String {
    match key {
        model::VirtualServerKey::Address { ip, port } => SocketAddr::new(*ip, *port).to_string(),
        model::VirtualServerKey::Fwmark { fwmark } => format!("fwmark {fwmark}"),
        model::VirtualServerKey::Group { group } => format!("group {group}"),
    }
}

/// The addresses a virtual server serves.
fn addresses(vs: &model::VirtualServer, config: &model::Config) -> anyhow::Result<Vec<SocketAddr>> {
    let group = match &vs.key {
        model::VirtualServerKey::Address { ip, port } => {
            return Ok(vec![SocketAddr::new(*ip, *port)]);
        }
        model::VirtualServerKey::Fwmark { fwmark } => {
            bail!(keeplb_proxy::ProxyError::Fwmark { mark: *fwmark })
        }
        model::VirtualServerKey::Group { group } => group,
    };
    let Some(group) = config
        .virtual_server_group
        .iter()
        .find(|g| &g.name == group)
    else {
        bail!("virtual_server_group {group} is not defined");
    };
    let mut addresses = Vec::new();
    for entry in &group.entries {
        match entry {
            model::GroupEntry::Range { ip, last, port } => {
                addresses.extend(range(*ip, *last)?.map(|ip| SocketAddr::new(ip, *port)));
            }
            model::GroupEntry::Fwmark { fwmark } => tracing::error!(
                "virtual_server_group {}: {}",
                group.name,
                keeplb_proxy::ProxyError::Fwmark { mark: *fwmark }
            ),
        }
    }
    Ok(addresses)
}

/// Every address from `first` to `last`, inclusive.
fn range(first: IpAddr, last: IpAddr) -> anyhow::Result<impl Iterator<Item = IpAddr>> {
    let (start, end, v4) = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), true),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), false),
        _ => bail!("range {first}-{last} mixes address families"),
    };
    if end < start || end - start >= MAX_GROUP_RANGE {
        bail!("range {first}-{last} is empty or too wide");
    }
    Ok((start..=end).map(move |bits| match u32::try_from(bits) {
        Ok(v4_bits) if v4 => IpAddr::V4(Ipv4Addr::from_bits(v4_bits)),
        _ => IpAddr::V6(std::net::Ipv6Addr::from_bits(bits)),
    }))
}

/// The balancer service (with no real server yet) and proxy options of `vs` on `vip`.
fn service(
    vs: &model::VirtualServer,
    vip: SocketAddr,
) -> anyhow::Result<(Service, ServiceOptions)> {
    let protocol = match vs.protocol {
        model::Protocol::Tcp => Protocol::Tcp,
        model::Protocol::Udp => Protocol::Udp,
        model::Protocol::Sctp => bail!("SCTP services need the kernel data path"),
    };
    let kind = vs.lb_algo;
    let mut flags = SchedFlags::EMPTY;
    // keepalived sets IP_VS_SVC_F_ONEPACKET for UDP services only (the configuration
    // already drops `ops` elsewhere, with a warning).
    let one_packet = protocol == Protocol::Udp && vs.lb_flags.iter().any(|f| f == "ops");
    for flag in vs.lb_flags.iter().filter(|f| *f != "ops") {
        // keepalived sets the generic bit whatever the scheduler; so does keeplb.
        flags |= [kind, SchedulerKind::Sh, SchedulerKind::Mh]
            .into_iter()
            .find_map(|k| SchedFlags::parse(flag, k).ok())
            .with_context(|| format!("unknown scheduler flag {flag}"))?;
    }
    let pool = Pool::new(kind.build(flags));
    let mut service = Service::new(ServiceAddr::Addr(protocol, vip), pool);
    service.set_persistence_engine(vs.persistence_engine);
    if let Some(timeout) = vs.persistence_timeout {
        let mut persistence = Persistence::new(Duration::from_secs(timeout.into()));
        if let Some(granularity) = &vs.persistence_granularity {
            persistence = persistence.with_granularity(granularity_of(granularity)?);
        }
        service.set_persistence(Some(persistence));
    }
    let sorry_server = match &vs.sorry_server {
        Some(sorry) => {
            let addr = SocketAddr::new(sorry.ip, sorry.port.unwrap_or(vip.port()));
            Some(Arc::new(Dest::new(addr, 1)?))
        }
        None => None,
    };
    let proxy_protocol = match vs.proxy_protocol {
        Some(1) => Some(ProxyProtocol::V1),
        Some(_) => Some(ProxyProtocol::V2),
        None => None,
    };
    // a real server's own `lvs_method` (or its own TUN settings) may differ from the
    // service's, and so may the sorry server's (`sorry_server_lvs_method`); a real server
    // that is also the sorry server is listed with its own
    let sorry_forwarding = vs
        .sorry_server
        .as_ref()
        .zip(sorry_server.as_ref())
        .map(|(sorry, dest)| (dest.addr(), forwarding(sorry.lb_kind, sorry.tunnel)));
    let mut options = ServiceOptions {
        sorry_server,
        proxy_protocol,
        forwarding: forwarding(vs.lb_kind, vs.tunnel),
        sched_flags: flags,
        one_packet,
        ..ServiceOptions::default()
    };
    let requested = vs.real_server.iter().map(|rs| {
        let addr = SocketAddr::new(rs.ip, rs.port);
        (addr, forwarding(rs.lb_kind, rs.tunnel))
    });
    for (addr, method) in sorry_forwarding.into_iter().chain(requested) {
        options.set_forwarding_of(addr, method);
    }
    Ok((service, options))
}

/// `persistence_granularity`: a netmask for IPv4, a prefix length for IPv6.
fn granularity_of(text: &str) -> anyhow::Result<Granularity> {
    if let Ok(mask) = text.parse::<Ipv4Addr>() {
        return Ok(Granularity::v4_netmask(mask));
    }
    let prefix = text
        .trim_start_matches('/')
        .parse::<u8>()
        .with_context(|| format!("invalid persistence_granularity {text}"))?;
    Ok(Granularity::v6_prefix(prefix))
}

/// Connection timeouts, with `lvs_timeouts tcp T tcpfin T udp T` from global_defs.
pub fn conn_settings(global: &model::GlobalDefs) -> ConnSettings {
    let mut settings = ConnSettings::default();
    let Some(values) = global.other.get("lvs_timeouts") else {
        return settings;
    };
    let words: Vec<&str> = values.iter().flat_map(|v| v.split_whitespace()).collect();
    let mut timeouts = [Duration::ZERO; 3];
    for pair in words.chunks(2) {
        let [name, value] = pair else { break };
        let slot = match *name {
            "tcp" => 0,
            "tcpfin" => 1,
            "udp" => 2,
            _ => continue,
        };
        if let Ok(seconds) = value.parse::<u64>() {
            timeouts[slot] = Duration::from_secs(seconds);
        }
    }
    let [tcp, tcp_fin, udp] = timeouts;
    settings.timeouts.set_ipvsadm(tcp, tcp_fin, udp);
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ranges_expand_inclusively_and_refuse_nonsense() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4: Vec<_> = range(ip("10.0.0.254"), ip("10.0.1.1")).unwrap().collect();
        assert_eq!(
            v4,
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"].map(ip)
        );
        let v6: Vec<_> = range(ip("2001:db8::1"), ip("2001:db8::2"))
            .unwrap()
            .collect();
        assert_eq!(v6, ["2001:db8::1", "2001:db8::2"].map(ip));
        assert!(range(ip("10.0.0.2"), ip("10.0.0.1")).is_err());
        assert!(range(ip("10.0.0.1"), ip("2001:db8::1")).is_err());
        assert!(range(ip("::"), ip("::1:0:0")).is_err());
    }

    #[test]
    fn granularity_is_a_netmask_or_a_prefix() {
        let v4 = granularity_of("255.255.255.0").unwrap();
        assert_eq!(v4.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(granularity_of("/64").unwrap().prefix(), 64);
        assert!(granularity_of("wide").is_err());
    }
}

#[cfg(test)]
mod reload_tests {
    use super::*;
    use crate::test_config::parse as config;

    #[tokio::test]
    async fn a_service_whose_new_scheduler_is_refused_stays_served() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let text = |algo: &str| {
            format!(
                "virtual_server 127.0.0.1 {port} {{\n    lb_algo {algo}\n    protocol TCP\n}}\n"
            )
        };
        let director = Director::start(&config(&text("rr")), NonZeroUsize::MIN).expect("director");
        let vip = SocketAddr::from(([127, 0, 0, 1], port));
        let svc = director.plane.get(Protocol::Tcp, vip).expect("served");
        // More real servers than the default Maglev table holds (4093): mh refuses them.
        const REAL_SERVERS: u16 = 4094;
        for i in 0..REAL_SERVERS {
            let dest = Dest::new(SocketAddr::from(([127, 0, 1, 1], 1000 + i)), 1).expect("dest");
            svc.edit(|s| s.pool.add(Arc::new(dest))).expect("added");
        }
        let failures = director.reconcile(&config(&text("mh")));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("scheduler is refused"), "{failures:?}");
        let still = director
            .plane
            .get(Protocol::Tcp, vip)
            .expect("still served");
        assert!(Arc::ptr_eq(&svc, &still));
        assert_eq!(
            still.read(|s| s.pool.dests().len()),
            usize::from(REAL_SERVERS)
        );
    }
}
