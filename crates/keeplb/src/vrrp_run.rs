//! `keeplb run`'s VRRP part: each `vrrp_instance` of the configuration becomes a VRRP
//! engine (`keeplb_vrrp`) on its interface, until SIGTERM or SIGINT makes the masters
//! resign. Each instance also gets its tracking (`track_script`, `track_file`,
//! `track_interface`: script checkers and pollers shared by the instances, one
//! [`Tracker`] per instance feeding the driver) and its notifications (`notify_*`,
//! `notify`, `notify_fifo` / `vrrp_notify_fifo`, one [`Notifier`] per instance).
//! Each `vrrp_sync_group` gets a coordinator watching its members' states: FAULT spreads
//! to the whole group (forced through the members' tracking), a master going to BACKUP
//! takes the others with it ([`keeplb_vrrp::Event::SyncBackup`]), and the group's
//! notify scripts (`GROUP name STATE 0`) follow the group's state.
//! With `enable_script_security`, a script a non-root user could change is refused at
//! startup with an error naming the file; the instance runs without it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keeplb_config::model::{self, AuthType, GlobalDefs, Script, VrrpInstance};
use keeplb_vrrp::io::run_interface_tracker;
use keeplb_vrrp::notify::{
    FifoWriter, Notifier, NotifyConfig, NotifyKind, NotifyScripts, check_script_security,
};
use keeplb_vrrp::track::{
    self, ScriptCommand, ScriptSpec, TrackInput, Tracker, TrackingUpdate, Weight, init_track_file,
    read_track_file,
};
use keeplb_vrrp::{
    AdverInterval, Auth, AuthPassword, ChecksumForm, DriverOptions, GarpConfig, InitialState,
    InstanceConfig, State, Transport, UnicastPeer, Version, VipBroadcast, VipOptions,
};
use tokio::sync::{mpsc, watch};

/// The engine's view of one `vrrp_instance`, as keepalived would run it.
pub fn instance_config(
    instance: &VrrpInstance,
    global: &GlobalDefs,
) -> anyhow::Result<(InstanceConfig, DriverOptions)> {
    let Some(interface) = instance.interface.clone() else {
        bail!("vrrp_instance {} has no interface", instance.name);
    };
    let version = if instance.version == 3 {
        Version::V3
    } else {
        Version::V2
    };
    let vips = instance
        .virtual_ipaddress
        .iter()
        .map(|v| v.address)
        .collect();
    let mut config = InstanceConfig::new(&instance.name, instance.virtual_router_id, version, vips);
    config.priority = instance.priority;
    config.adver_int = match version {
        // VRRPv2 carries whole seconds; the configuration has already been rounded.
        Version::V2 => AdverInterval::from_secs(instance.advert_int.clamp(1.0, 255.0) as u8),
        Version::V3 => AdverInterval::from_centis((instance.advert_int * 100.0).round() as u16),
    };
    config.initial_state = match instance.state {
        model::InitialState::Master => InitialState::Master,
        model::InitialState::Backup => InitialState::Backup,
    };
    config.preempt = !instance.nopreempt;
    config.preempt_delay = Duration::from_secs_f64(instance.preempt_delay);
    config.accept = instance.accept;
    config.lower_prio_no_advert = instance.lower_prio_no_advert;
    config.higher_prio_send_advert = instance.higher_prio_send_advert;
    config.auth = match &instance.authentication {
        None => Auth::None,
        Some(a) if a.auth_type == AuthType::Pass => {
            Auth::Password(AuthPassword::new(a.auth_pass.as_bytes()))
        }
        Some(_) => bail!(
            "vrrp_instance {}: AH authentication is not supported",
            instance.name
        ),
    };
    if global.v3_checksum_as_v2 {
        config.checksum_form = ChecksumForm::MessageOnly;
    }
    config.excluded_vips = instance
        .virtual_ipaddress_excluded
        .iter()
        .map(|v| v.address)
        .collect();
    config.src_addr = instance.unicast_src_ip.or(instance.mcast_src_ip);
    config.transport = if instance.unicast_peer.is_empty() {
        Transport::Multicast {
            group: match config.family() {
                keeplb_vrrp::Family::Ipv4 => global.vrrp_mcast_group4.into(),
                keeplb_vrrp::Family::Ipv6 => global.vrrp_mcast_group6.into(),
            },
        }
    } else {
        Transport::Unicast {
            peers: instance
                .unicast_peer
                .iter()
                .map(|p| UnicastPeer {
                    addr: p.address,
                    min_ttl: p.min_ttl.unwrap_or(0),
                    max_ttl: p.max_ttl.unwrap_or(255),
                })
                .collect(),
            ttl: instance.unicast_ttl,
            check_src: instance.check_unicast_src
                || instance
                    .unicast_peer
                    .iter()
                    .any(|p| p.min_ttl.is_some() || p.max_ttl.is_some()),
        }
    };
    config.garp = GarpConfig {
        master_delay: Duration::from_secs(u64::from(instance.garp_master_delay)),
        master_repeat: instance.garp_master_repeat,
        master_refresh: Duration::from_secs(u64::from(instance.garp_master_refresh)),
        master_refresh_repeat: instance.garp_master_refresh_repeat,
        lower_prio_delay: Duration::from_secs(u64::from(
            instance
                .garp_lower_prio_delay
                .unwrap_or(instance.garp_master_delay),
        )),
        lower_prio_repeat: instance
            .garp_lower_prio_repeat
            .unwrap_or(instance.garp_master_repeat),
    };
    config
        .validate()
        .with_context(|| format!("vrrp_instance {}", instance.name))?;
    let mut options = DriverOptions::new(interface);
    options.vips = instance
        .virtual_ipaddress
        .iter()
        .chain(&instance.virtual_ipaddress_excluded)
        .map(vip_options)
        .collect();
    Ok((config, options))
}

/// A `virtual_ipaddress` entry as the driver puts it on an interface.
fn vip_options(vip: &model::VirtualIp) -> VipOptions {
    let mut options = VipOptions::new(vip.address, vip.prefix);
    options.broadcast = vip.brd.as_ref().and_then(|b| match b {
        model::Broadcast::Address(IpAddr::V4(a)) => Some(VipBroadcast::Address(*a)),
        model::Broadcast::Address(IpAddr::V6(_)) => None,
        model::Broadcast::Derived(model::DerivedBroadcast::HostBitsSet) => {
            Some(VipBroadcast::HostBitsSet)
        }
        model::Broadcast::Derived(model::DerivedBroadcast::HostBitsClear) => {
            Some(VipBroadcast::HostBitsClear)
        }
    });
    // The configuration checker has reported (and dropped) invalid scopes.
    options.scope = vip
        .scope
        .as_deref()
        .and_then(VipOptions::parse_scope)
        .unwrap_or(0);
    options.label = vip.label.clone();
    options.dev = vip.dev.clone();
    options.noprefixroute = vip.noprefixroute;
    options.nodad = vip.nodad;
    options
}

/// How often `track_file`s and `track_interface`s are looked at.
const TRACK_POLL: Duration = Duration::from_millis(200);
/// The time limit of each notify script.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// A script line of the configuration as it will run: parsed, as `user` (else
/// `script_user`), and checked with `enable_script_security`.
fn script_command(
    line: &str,
    user: Option<&str>,
    group: Option<&str>,
    global: &GlobalDefs,
) -> anyhow::Result<ScriptCommand> {
    let mut cmd = ScriptCommand::parse(line)?;
    let (user, group) = match (user, &global.script_user) {
        (Some(u), _) => (Some(u), group),
        (None, Some(su)) => (Some(su.user.as_str()), su.group.as_deref()),
        (None, None) => (None, None),
    };
    if let Some(user) = user {
        cmd = cmd.with_user(user, group)?;
    }
    if global.enable_script_security {
        check_script_security(&cmd)?;
    }
    Ok(cmd)
}

fn model_script(
    script: &Option<Script>,
    global: &GlobalDefs,
    what: &str,
    instance: &str,
) -> Option<ScriptCommand> {
    let script = script.as_ref()?;
    match script_command(
        &script.script,
        script.user.as_deref(),
        script.group.as_deref(),
        global,
    ) {
        Ok(cmd) => Some(cmd),
        Err(e) => {
            tracing::error!("vrrp_instance {instance}: {what} disabled: {e:#}");
            None
        }
    }
}

/// The `vrrp_script`s that can run (the others are reported and disabled, as keepalived
/// does: instances tracking them ignore them).
fn script_specs(config: &model::Config) -> HashMap<String, ScriptSpec> {
    let global = &config.global_defs;
    let mut specs = HashMap::new();
    for s in &config.vrrp_script {
        match script_command(&s.script, s.user.as_deref(), s.group.as_deref(), global) {
            Ok(cmd) => {
                let spec = ScriptSpec::from_keepalived(
                    &s.name,
                    cmd,
                    s.interval,
                    s.timeout,
                    s.rise,
                    s.fall,
                    s.init_fail,
                );
                specs.insert(s.name.clone(), spec);
            }
            Err(e) => tracing::error!("vrrp_script {} disabled: {e:#}", s.name),
        }
    }
    specs
}

/// Subscribers of each tracked object, by name.
#[derive(Default)]
struct Subscribers {
    scripts: HashMap<String, Vec<mpsc::UnboundedSender<TrackInput>>>,
    files: HashMap<String, Vec<mpsc::UnboundedSender<TrackInput>>>,
    interfaces: HashMap<String, Vec<mpsc::UnboundedSender<TrackInput>>>,
}

/// One instance's [`Tracker`] from its `track_*` references (a reference's weight
/// overrides the tracked object's own), subscribing `input` to what it tracks.
fn tracker(
    instance: &VrrpInstance,
    config: &model::Config,
    specs: &HashMap<String, ScriptSpec>,
    input: &mpsc::UnboundedSender<TrackInput>,
    subscribers: &mut Subscribers,
) -> Tracker {
    let name = &instance.name;
    let mut tracker = Tracker::new(instance.priority);
    for r in &instance.track_script {
        let Some(script) = config.vrrp_script.iter().find(|s| s.name == r.name) else {
            tracing::error!(
                "vrrp_instance {name}: track_script {} is not a vrrp_script",
                r.name
            );
            continue;
        };
        let Some(spec) = specs.get(&r.name) else {
            tracing::warn!(
                "vrrp_instance {name}: not tracking disabled vrrp_script {}",
                r.name
            );
            continue;
        };
        let weight = r
            .weight
            .map_or(Weight::new(script.weight, script.weight_reverse), |w| {
                Weight::new(w, r.reverse)
            });
        tracker.track_script(&r.name, weight, spec.initial_status());
        subscribers
            .scripts
            .entry(r.name.clone())
            .or_default()
            .push(input.clone());
    }
    for r in &instance.track_file {
        let Some(file) = config.track_file.iter().find(|f| f.name == r.name) else {
            tracing::error!(
                "vrrp_instance {name}: track_file {} is not a track_file",
                r.name
            );
            continue;
        };
        let weight = r
            .weight
            .map_or(Weight::new(file.weight, file.weight_reverse), |w| {
                Weight::new(w, r.reverse)
            });
        let value = read_track_file(Path::new(&file.file));
        tracker.track_file(&r.name, weight, value);
        subscribers
            .files
            .entry(r.name.clone())
            .or_default()
            .push(input.clone());
    }
    for r in &instance.track_interface {
        tracker.track_interface(&r.name, Weight::new(r.weight.unwrap_or(0), r.reverse));
        subscribers
            .interfaces
            .entry(r.name.clone())
            .or_default()
            .push(input.clone());
    }
    tracker
}

/// The notify FIFOs (`notify_fifo`, `vrrp_notify_fifo`), each opened once.
fn notify_fifos(global: &GlobalDefs) -> Vec<Arc<FifoWriter>> {
    let mut fifos: Vec<Arc<FifoWriter>> = Vec::new();
    for fifo in [&global.notify_fifo, &global.vrrp_notify_fifo]
        .into_iter()
        .flatten()
    {
        if fifos.iter().any(|f| f.path() == Path::new(&fifo.path)) {
            continue;
        }
        match FifoWriter::open(&fifo.path) {
            Ok(w) => fifos.push(Arc::new(w)),
            Err(e) => tracing::error!("notify fifo {}: {e}", fifo.path),
        }
    }
    fifos
}

/// Runs every instance until SIGTERM/SIGINT, then lets them resign and waits for them
/// (and for their notify scripts, `notify_stop` included).
/// An instance that cannot start is reported and the others keep running.
pub async fn run(config: &model::Config) -> anyhow::Result<()> {
    let global = &config.global_defs;
    let (stop, stopped) = watch::channel(false);
    let mut engines = tokio::task::JoinSet::new();
    let mut notifiers = tokio::task::JoinSet::new();
    let specs = script_specs(config);
    let fifos = notify_fifos(global);
    let mut subscribers = Subscribers::default();
    for file in &config.track_file {
        if let Some(init) = &file.init_file
            && let Err(e) = init_track_file(Path::new(&file.file), init.value, init.overwrite)
        {
            tracing::error!("track_file {}: init_file {}: {e}", file.name, file.file);
        }
    }
    let mut groups = sync_groups(config);
    for instance in &config.vrrp_instance {
        let (engine, mut options) = match instance_config(instance, global) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!("not running vrrp_instance {}: {e:#}", instance.name);
                continue;
            }
        };
        let name = instance.name.clone();

        // Tracking: objects -> inputs -> run_tracker -> updates -> the driver's watch.
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let tracker = tracker(instance, config, &specs, &input_tx, &mut subscribers);
        drop(input_tx);
        // A sync group member's tracking also carries the FAULT its group forces on it.
        let (watch_tx, watch_rx) = watch::channel(tracker.current());
        let (update_tx, update_rx) = mpsc::unbounded_channel();
        tokio::spawn(track::run_tracker(tracker, input_rx, update_tx));
        let membership = groups.iter_mut().find_map(|g| g.join(&name));
        if let Some(m) = membership {
            options.state = Some(m.state);
            options.sync_backup = Some(m.sync_backup);
            tokio::spawn(forward_tracking(update_rx, Some(m.forced), watch_tx));
        } else {
            tokio::spawn(forward_tracking(update_rx, None, watch_tx));
        }
        options.tracking = Some(watch_rx);

        // Notifications, in transition order, until the engine is gone.
        let scripts = NotifyScripts {
            master: model_script(&instance.notify_master, global, "notify_master", &name),
            backup: model_script(&instance.notify_backup, global, "notify_backup", &name),
            fault: model_script(&instance.notify_fault, global, "notify_fault", &name),
            stop: model_script(&instance.notify_stop, global, "notify_stop", &name),
            notify: model_script(&instance.notify, global, "notify", &name),
        };
        if scripts.iter().next().is_some() || !fifos.is_empty() {
            let (notify_tx, mut notify_rx) = mpsc::unbounded_channel();
            options.notify = Some(notify_tx);
            let notifier = Notifier::spawn(NotifyConfig {
                kind: NotifyKind::Instance,
                name: name.clone(),
                scripts,
                timeout: NOTIFY_TIMEOUT,
                fifos: fifos.clone(),
            });
            notifiers.spawn(async move {
                while let Some((state, priority)) = notify_rx.recv().await {
                    notifier.state_changed(state, priority);
                }
                notifier.close().await;
            });
        }

        let stopped = stopped.clone();
        engines.spawn(async move {
            let result = keeplb_vrrp::run_instance_with(engine, options, stopped).await;
            (name, result)
        });
    }
    if engines.is_empty() {
        bail!("no vrrp_instance could be started");
    }
    spawn_trackers(config, specs, subscribers);
    for group in groups {
        if let Some(coordinator) = group.start(config, &fifos) {
            notifiers.spawn(coordinator);
        }
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: resigning"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: resigning"),
        Some(joined) = engines.join_next() => report(joined),
    }
    let _ = stop.send(true);
    while let Some(joined) = engines.join_next().await {
        report(joined);
    }
    // Every engine is gone, so every notify channel is closed: the notifiers finish
    // their queues (notify_stop last) and end.
    while let Some(joined) = notifiers.join_next().await {
        if let Err(e) = joined {
            tracing::error!("a notify task failed: {e}");
        }
    }
    Ok(())
}

/// One checker per `vrrp_script`, one poller per `track_file` and tracked interface,
/// each shared by the instances that track it.
fn spawn_trackers(
    config: &model::Config,
    mut specs: HashMap<String, ScriptSpec>,
    subscribers: Subscribers,
) {
    for (name, subs) in subscribers.scripts {
        if let Some(spec) = specs.remove(&name) {
            tokio::spawn(track::run_script_checker(spec, subs));
        }
    }
    for (name, subs) in subscribers.files {
        let Some(file) = config.track_file.iter().find(|f| f.name == name) else {
            continue;
        };
        let path = PathBuf::from(&file.file);
        tokio::spawn(track::run_file_tracker(name, path, TRACK_POLL, subs));
    }
    for (name, subs) in subscribers.interfaces {
        tokio::spawn(run_interface_tracker(name, TRACK_POLL, subs));
    }
}

fn report(
    joined: Result<
        (String, Result<keeplb_vrrp::Stats, keeplb_vrrp::IoError>),
        tokio::task::JoinError,
    >,
) {
    match joined {
        Ok((name, Ok(_))) => tracing::info!("vrrp_instance {name} stopped"),
        Ok((name, Err(e))) => tracing::error!("vrrp_instance {name} failed: {e}"),
        Err(e) => tracing::error!("a vrrp_instance task failed: {e}"),
    }
}

/// Passes a member's tracking updates to its driver, with the FAULT its sync group forces
/// on it (`forced`) added to its own.
async fn forward_tracking(
    updates: mpsc::UnboundedReceiver<TrackingUpdate>,
    mut forced: Option<watch::Receiver<bool>>,
    tx: watch::Sender<TrackingUpdate>,
) {
    let mut own = *tx.borrow();
    // An instance tracking nothing has its tracker end at once; the group still counts.
    let mut updates = Some(updates);
    while updates.is_some() || forced.is_some() {
        let group_fault = forced.as_ref().is_some_and(|f| *f.borrow());
        let update = TrackingUpdate {
            fault: own.fault || group_fault,
            ..own
        };
        tx.send_if_modified(|current| {
            let modified = *current != update;
            *current = update;
            modified
        });
        tokio::select! {
            update = async { updates.as_mut().expect("guarded").recv().await }, if updates.is_some() => match update {
                Some(update) => own = update,
                None => updates = None,
            },
            changed = async { forced.as_mut().expect("guarded").changed().await }, if forced.is_some() => {
                if changed.is_err() {
                    forced = None;
                }
            }
        }
    }
}

/// A `vrrp_sync_group` being set up: its members that run, each with the sender of its
/// state and the switch forcing it into FAULT.
struct SyncGroup {
    config: model::VrrpSyncGroup,
    members: Vec<Member>,
}

struct Member {
    name: String,
    state: watch::Receiver<State>,
    forced: watch::Sender<bool>,
    sync_backup: watch::Sender<u64>,
}

/// A member's side of its group: where its driver reports its states, and how the group
/// forces FAULT on it (through its tracking) and asks it to leave MASTER.
struct Membership {
    state: watch::Sender<State>,
    forced: watch::Receiver<bool>,
    sync_backup: watch::Receiver<u64>,
}

/// The sync groups, as keepalived takes them: an instance belongs to the first group
/// naming it.
fn sync_groups(config: &model::Config) -> Vec<SyncGroup> {
    let mut taken: Vec<&str> = Vec::new();
    let mut groups = Vec::new();
    for group in &config.vrrp_sync_group {
        let mut group = group.clone();
        let this = group.name.clone();
        group.group.retain(|name| {
            if taken.contains(&name.as_str()) {
                tracing::warn!(
                    "vrrp_sync_group {this}: {name} is already in vrrp_sync_group {}; ignored here",
                    group_name_of(config, name)
                );
                false
            } else {
                true
            }
        });
        for name in &group.group {
            if let Some(i) = config.vrrp_instance.iter().position(|v| &v.name == name) {
                taken.push(&config.vrrp_instance[i].name);
            }
        }
        groups.push(SyncGroup {
            config: group,
            members: Vec::new(),
        });
    }
    groups
}

fn group_name_of<'a>(config: &'a model::Config, instance: &str) -> &'a str {
    config
        .vrrp_sync_group
        .iter()
        .find(|g| g.group.iter().any(|n| n == instance))
        .map_or("?", |g| g.name.as_str())
}

impl SyncGroup {
    /// Makes `instance` a member if the group names it.
    fn join(&mut self, instance: &str) -> Option<Membership> {
        if !self.config.group.iter().any(|n| n == instance) {
            return None;
        }
        let (state_tx, state) = watch::channel(State::Initialize);
        let (forced, forced_rx) = watch::channel(false);
        let (sync_backup, sync_backup_rx) = watch::channel(0);
        self.members.push(Member {
            name: instance.to_owned(),
            state,
            forced,
            sync_backup,
        });
        Some(Membership {
            state: state_tx,
            forced: forced_rx,
            sync_backup: sync_backup_rx,
        })
    }

    /// The group's coordinator, to run until every member has stopped; `None` when fewer
    /// than two members run (keepalived removes such a group).
    fn start(
        self,
        config: &model::Config,
        fifos: &[Arc<FifoWriter>],
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let name = self.config.name.clone();
        if self.members.len() < 2 {
            tracing::warn!(
                "vrrp_sync_group {name} has only {} running instance(s); not synchronising",
                self.members.len()
            );
            return None;
        }
        let global = &config.global_defs;
        let g = &self.config;
        let what = format!("vrrp_sync_group {name}");
        let scripts = NotifyScripts {
            master: model_script(&g.notify_master, global, "notify_master", &what),
            backup: model_script(&g.notify_backup, global, "notify_backup", &what),
            fault: model_script(&g.notify_fault, global, "notify_fault", &what),
            stop: model_script(&g.notify_stop, global, "notify_stop", &what),
            notify: model_script(&g.notify, global, "notify", &what),
        };
        let notifier = (scripts.iter().next().is_some() || !fifos.is_empty()).then(|| {
            Notifier::spawn(NotifyConfig {
                kind: NotifyKind::Group,
                name: name.clone(),
                scripts,
                timeout: NOTIFY_TIMEOUT,
                fifos: fifos.to_vec(),
            })
        });
        Some(coordinate(name, self.members, notifier))
    }
}

/// What the members' states make of the group: FAULT if one is in FAULT, MASTER when
/// all are, BACKUP when all run and one is BACKUP, stopped when all are; `None` in
/// between (the group keeps its state).
fn group_state(states: &[State]) -> Option<State> {
    if states.contains(&State::Fault) {
        Some(State::Fault)
    } else if states.iter().all(|&s| s == State::Master) {
        Some(State::Master)
    } else if states
        .iter()
        .all(|&s| matches!(s, State::Master | State::Backup))
    {
        Some(State::Backup)
    } else if states.iter().all(|&s| s == State::Initialize) {
        Some(State::Initialize)
    } else {
        None
    }
}

/// Which members the group forces into FAULT: all but the ones in FAULT on their own,
/// if there is one (`states`, `forced` and `pending` by member; a member whose forced
/// FAULT was just lifted is `pending` until it reports its state again).
fn members_to_force(states: &[State], forced: &[bool], pending: &[bool]) -> Vec<bool> {
    let own_fault: Vec<bool> = (0..states.len())
        .map(|i| states[i] == State::Fault && !forced[i] && !pending[i])
        .collect();
    let any = own_fault.contains(&true);
    own_fault.iter().map(|&own| any && !own).collect()
}

/// Keeps a sync group's members together, as keepalived's `vrrp_sync.c`: a member in
/// FAULT puts the others in FAULT until it recovers; a master going to BACKUP takes the
/// other masters with it; group notifications follow the group's state. Ends when every member's driver is gone.
async fn coordinate(name: String, members: Vec<Member>, notifier: Option<Notifier>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut forcers = Vec::new();
    for (i, member) in members.into_iter().enumerate() {
        let mut state = member.state;
        let tx = tx.clone();
        tokio::spawn(async move {
            while state.changed().await.is_ok() {
                let s = *state.borrow_and_update();
                if tx.send((i, s)).is_err() {
                    return;
                }
            }
        });
        forcers.push((member.name, member.forced, member.sync_backup));
    }
    drop(tx);
    let n = forcers.len();
    let mut states = vec![State::Initialize; n];
    let mut forced = vec![false; n];
    let mut pending = vec![false; n];
    let mut current = State::Initialize;
    while let Some((i, state)) = rx.recv().await {
        let previous = std::mem::replace(&mut states[i], state);
        pending[i] = false;
        if previous == State::Master && state == State::Backup {
            // keepalived's vrrp_sync_backup: the other masters follow it to BACKUP.
            for (j, (member, _, sync_backup)) in forcers.iter().enumerate() {
                if j != i && states[j] == State::Master {
                    tracing::info!("vrrp_sync_group {name}: {member} follows to BACKUP");
                    sync_backup.send_modify(|n| *n += 1);
                }
            }
        }
        let stopping = states.contains(&State::Initialize);
        let force = if stopping {
            vec![false; n]
        } else {
            members_to_force(&states, &forced, &pending)
        };
        for (j, (member, tx, _)) in forcers.iter().enumerate() {
            if force[j] != forced[j] {
                if force[j] {
                    tracing::info!("vrrp_sync_group {name}: forcing {member} to FAULT");
                } else {
                    tracing::info!("vrrp_sync_group {name}: {member} leaves the group FAULT");
                    pending[j] = true;
                }
                forced[j] = force[j];
                let _ = tx.send(force[j]);
            }
        }
        if let Some(to) = group_state(&states)
            && to != current
        {
            tracing::info!("vrrp_sync_group {name}: {current} -> {to}");
            current = to;
            if let Some(notifier) = &notifier {
                notifier.state_changed(to, 0);
            }
        }
    }
    if let Some(notifier) = notifier {
        notifier.close().await;
    }
}
