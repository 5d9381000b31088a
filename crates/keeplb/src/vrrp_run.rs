//! `keeplb run`'s VRRP part: each `vrrp_instance` of the configuration becomes a VRRP
//! engine (`keeplb_vrrp`) on its interface, until SIGTERM or SIGINT makes the masters
//! resign. Each instance also gets its tracking (`track_script`, `track_file`,
//! `track_interface`, its own and its sync group's: script checkers and pollers shared by
//! the instances, one [`Tracker`] per instance feeding the driver) and its notifications
//! (`notify_*`, `notify`, `notify_fifo` / `vrrp_notify_fifo` with their
//! `*_notify_fifo_script`, and the FIFO's priority lines with `notify_priority_changes`;
//! one [`Notifier`] per instance). Gratuitous ARPs / NAs are paced per interface
//! (`vrrp_garp_interval`, `vrrp_gna_interval`).
//! Each `vrrp_sync_group` gets a coordinator ([`SyncGroup`]) over its members' reports:
//! FAULT spreads to the whole group (forced through the members' tracking), a master
//! going to BACKUP takes the others with it, a member becomes MASTER only when every
//! member can (keepalived's `vrrp_sync_can_goto_master`), and the group's notify scripts
//! (`GROUP name STATE 0`) follow the group's state.
//! With `enable_script_security`, a script a non-root user could change is refused at
//! startup with an error naming the file; the instance runs without it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keeplb_config::model::{self, AuthType, GlobalDefs, Script, VrrpInstance};
use keeplb_control::api::{Transition, VrrpInstanceStatus};
use keeplb_vrrp::io::run_interface_tracker;
use keeplb_vrrp::notify::{
    FifoScript, FifoWriter, Notifier, NotifyConfig, NotifyKind, NotifyScripts,
    check_script_security,
};
use keeplb_vrrp::pace::AnnounceIntervals;
use keeplb_vrrp::sync::{SyncCommand, SyncGroup};
use keeplb_vrrp::track::{
    self, ScriptCommand, ScriptSpec, TrackInput, Tracker, TrackingUpdate, Weight, init_track_file,
    read_track_file,
};
use keeplb_vrrp::{
    AdverInterval, Auth, AuthPassword, ChecksumForm, DriverOptions, GarpConfig, InitialState,
    InstanceConfig, InterfacePaces, MemberReport, Notification, State, SyncLink, SyncRequest,
    Transport, UnicastPeer, Version, VipBroadcast, VipOptions,
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
    // keepalived: unset lower_prio values come from the global (not the instance's)
    // master values; strict mode sends no lower-priority bursts.
    let strict = instance.strict_mode || global.vrrp_strict;
    let lower_prio = |own: Option<u32>, global_default: u32| {
        if strict {
            0
        } else {
            own.unwrap_or(global_default)
        }
    };
    config.garp = GarpConfig {
        master_delay: Duration::from_secs(u64::from(instance.garp_master_delay)),
        master_repeat: instance.garp_master_repeat,
        master_refresh: Duration::from_secs(u64::from(instance.garp_master_refresh)),
        master_refresh_repeat: instance.garp_master_refresh_repeat,
        lower_prio_delay: Duration::from_secs(u64::from(lower_prio(
            instance.garp_lower_prio_delay,
            global.vrrp_garp_master_delay,
        ))),
        lower_prio_repeat: lower_prio(
            instance.garp_lower_prio_repeat,
            global.vrrp_garp_master_repeat,
        ),
    };
    config
        .validate()
        .with_context(|| format!("vrrp_instance {}", instance.name))?;
    let mut options = DriverOptions::new(interface);
    options.announce_intervals = AnnounceIntervals {
        arp: Duration::from_secs_f64(global.vrrp_garp_interval.max(0.0)),
        na: Duration::from_secs_f64(global.vrrp_gna_interval.max(0.0)),
    };
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
/// How long a notify FIFO script may take to end after SIGTERM before it is killed.
const FIFO_SCRIPT_GRACE: Duration = Duration::from_secs(1);

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

/// What one instance tracks, by kind: each object's name and the weight in force.
#[derive(Default)]
struct TrackedObjects {
    scripts: Vec<(String, Weight)>,
    files: Vec<(String, Weight)>,
    interfaces: Vec<(String, Weight)>,
}

/// Adds `refs` (of `owner`, an instance or group) to `list` with the weights they resolve
/// to (`default` gives a named object's own weight, `None` for an unknown name). An
/// object already there (tracked by the instance and by its group) keeps weight 0 if it
/// has it, and otherwise takes the group's weight, as keepalived.
fn add_refs(
    list: &mut Vec<(String, Weight)>,
    refs: &[model::TrackRef],
    zero_weights: bool,
    what: &str,
    owner: &str,
    default: &dyn Fn(&str) -> Option<Weight>,
) {
    for r in refs {
        let Some(own) = default(&r.name) else {
            tracing::error!("{owner}: {what} {} is not defined", r.name);
            continue;
        };
        let mut weight = r.weight.map_or(own, |w| Weight::new(w, r.reverse));
        if zero_weights {
            weight = Weight::new(0, false);
        }
        match list.iter_mut().find(|(name, _)| *name == r.name) {
            Some((_, existing)) => {
                tracing::warn!(
                    "{owner}: {what} {} is configured on a member and its sync group",
                    r.name
                );
                if !existing.is_fault_only() {
                    *existing = weight;
                }
            }
            None => list.push((r.name.clone(), weight)),
        }
    }
}

/// Everything `instance` tracks: its own `track_*` references (a reference's weight
/// overrides the tracked object's own), then its sync group's, which apply to every
/// member (with weight 0 when a member of the group is the address owner).
fn tracked_objects(
    instance: &VrrpInstance,
    group: Option<&model::VrrpSyncGroup>,
    config: &model::Config,
) -> TrackedObjects {
    let script_weight = |name: &str| {
        config
            .vrrp_script
            .iter()
            .find(|s| s.name == name)
            .map(|s| Weight::new(s.weight, s.weight_reverse))
    };
    let file_weight = |name: &str| {
        config
            .track_file
            .iter()
            .find(|f| f.name == name)
            .map(|f| Weight::new(f.weight, f.weight_reverse))
    };
    let interface_weight = |_: &str| Some(Weight::new(0, false));
    let mut objects = TrackedObjects::default();
    let mut add = |refs: [&[model::TrackRef]; 3], zero: bool, owner: &str| {
        add_refs(
            &mut objects.scripts,
            refs[0],
            zero,
            "track_script",
            owner,
            &script_weight,
        );
        add_refs(
            &mut objects.files,
            refs[1],
            zero,
            "track_file",
            owner,
            &file_weight,
        );
        let what = "track_interface";
        add_refs(
            &mut objects.interfaces,
            refs[2],
            zero,
            what,
            owner,
            &interface_weight,
        );
    };
    add(
        [
            &instance.track_script,
            &instance.track_file,
            &instance.track_interface,
        ],
        false,
        &format!("vrrp_instance {}", instance.name),
    );
    if let Some(group) = group {
        let has_owner = config
            .vrrp_instance
            .iter()
            .any(|i| i.priority == 255 && group.group.contains(&i.name));
        add(
            [
                &group.track_script,
                &group.track_file,
                &group.track_interface,
            ],
            has_owner,
            &format!("vrrp_sync_group {}", group.name),
        );
    }
    objects
}

/// One instance's [`Tracker`] over `objects`, subscribing `input` to each of them.
fn tracker(
    instance: &VrrpInstance,
    objects: TrackedObjects,
    config: &model::Config,
    specs: &HashMap<String, ScriptSpec>,
    input: &mpsc::UnboundedSender<TrackInput>,
    subscribers: &mut Subscribers,
) -> Tracker {
    let name = &instance.name;
    let mut tracker = Tracker::new(instance.priority);
    for (script, weight) in objects.scripts {
        let Some(spec) = specs.get(&script) else {
            tracing::warn!("vrrp_instance {name}: not tracking disabled vrrp_script {script}");
            continue;
        };
        tracker.track_script(&script, weight, spec.initial_status());
        subscribers
            .scripts
            .entry(script)
            .or_default()
            .push(input.clone());
    }
    for (file, weight) in objects.files {
        let Some(path) = config.track_file.iter().find(|f| f.name == file) else {
            continue;
        };
        let value = read_track_file(Path::new(&path.file));
        tracker.track_file(&file, weight, value);
        subscribers
            .files
            .entry(file)
            .or_default()
            .push(input.clone());
    }
    for (interface, weight) in objects.interfaces {
        tracker.track_interface(&interface, weight);
        subscribers
            .interfaces
            .entry(interface)
            .or_default()
            .push(input.clone());
    }
    tracker
}

/// The notify FIFOs (`notify_fifo`, `vrrp_notify_fifo`), each opened once, and their
/// `notify_fifo_script` / `vrrp_notify_fifo_script`s, started with the FIFO's path.
fn notify_fifos(global: &GlobalDefs) -> (Vec<Arc<FifoWriter>>, Vec<FifoScript>) {
    let mut fifos: Vec<Arc<FifoWriter>> = Vec::new();
    let mut scripts = Vec::new();
    for fifo in [&global.notify_fifo, &global.vrrp_notify_fifo]
        .into_iter()
        .flatten()
    {
        if fifos.iter().any(|f| f.path() == Path::new(&fifo.path)) {
            continue;
        }
        match FifoWriter::open(&fifo.path) {
            Ok(w) => fifos.push(Arc::new(w)),
            Err(e) => {
                tracing::error!("notify fifo {}: {e}", fifo.path);
                continue;
            }
        }
        let Some(script) = &fifo.script else { continue };
        let user = script.user.as_deref();
        match script_command(&script.script, user, script.group.as_deref(), global) {
            Ok(cmd) => match FifoScript::spawn(&cmd, Path::new(&fifo.path)) {
                Ok(script) => scripts.push(script),
                Err(e) => tracing::error!("notify fifo {} script {cmd}: {e}", fifo.path),
            },
            Err(e) => tracing::error!("notify fifo {} script disabled: {e:#}", fifo.path),
        }
    }
    (fifos, scripts)
}

/// keepalived's `notify_priority_changes` for `instance`: its own keyword, else its sync
/// group's, else the global `vrrp_notify_priority_changes`; a bare keyword means true.
fn notify_priority_changes(
    instance: &VrrpInstance,
    group: Option<&model::VrrpSyncGroup>,
    global: &GlobalDefs,
) -> bool {
    let flag = |other: &model::OtherKeywords, keyword: &str| {
        other.get(keyword).map(|words| {
            words
                .first()
                .is_none_or(|w| matches!(w.to_ascii_lowercase().as_str(), "true" | "yes" | "on"))
        })
    };
    flag(&instance.other, "notify_priority_changes")
        .or_else(|| group.and_then(|g| flag(&g.other, "notify_priority_changes")))
        .or_else(|| flag(&global.other, "vrrp_notify_priority_changes"))
        .unwrap_or(false)
}

/// Passes one instance's notifications to its notifier until its driver is gone.
async fn notify_instance(
    notifier: Notifier,
    mut notifications: mpsc::UnboundedReceiver<Notification>,
    priority_changes: bool,
) {
    while let Some(notification) = notifications.recv().await {
        match notification {
            Notification::State { state, priority } => notifier.state_changed(state, priority),
            Notification::Priority { state, priority } if priority_changes => {
                let event = if state == State::Master {
                    "MASTER_PRIORITY"
                } else {
                    "BACKUP_PRIORITY"
                };
                notifier.fifo_event(event, priority);
            }
            Notification::Priority { .. } => {}
            Notification::MasterRxLowerPriority { priority } => {
                notifier.fifo_event("MASTER_RX_LOWER_PRI", priority);
            }
        }
    }
    notifier.close().await;
}

/// Runs every instance until SIGTERM/SIGINT, then lets them resign and waits for them
/// (and for their notify scripts, `notify_stop` included).
/// An instance that cannot start is reported and the others keep running.
pub async fn run(config: &model::Config, board: &StatusBoard) -> anyhow::Result<()> {
    let global = &config.global_defs;
    let (stop, stopped) = watch::channel(false);
    let mut engines = tokio::task::JoinSet::new();
    let mut notifiers = tokio::task::JoinSet::new();
    let specs = script_specs(config);
    let (fifos, fifo_scripts) = notify_fifos(global);
    let mut subscribers = Subscribers::default();
    for file in &config.track_file {
        if let Some(init) = &file.init_file
            && let Err(e) = init_track_file(Path::new(&file.file), init.value, init.overwrite)
        {
            tracing::error!("track_file {}: init_file {}: {e}", file.name, file.file);
        }
    }
    let configured: Vec<_> = config
        .vrrp_instance
        .iter()
        .filter_map(|instance| match instance_config(instance, global) {
            Ok(engine) => Some((instance, engine)),
            Err(e) => {
                tracing::error!("not running vrrp_instance {}: {e:#}", instance.name);
                None
            }
        })
        .collect();
    let running: Vec<&str> = configured.iter().map(|(i, _)| i.name.as_str()).collect();
    let mut groups = sync_groups(config, &running);
    // One pacing state per interface for all instances (vrrp_garp_interval).
    let paces = InterfacePaces::default();
    for (instance, (mut engine, mut options)) in configured {
        let name = instance.name.clone();
        options.paces = paces.clone();
        let group = groups.iter_mut().find(|g| g.names(&name));
        let group_config = group.as_ref().map(|g| g.config.clone());
        let group_config = group_config.as_ref();

        // Tracking: objects -> inputs -> run_tracker -> updates -> the driver's watch.
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let objects = tracked_objects(instance, group_config, config);
        let tracker = tracker(
            instance,
            objects,
            config,
            &specs,
            &input_tx,
            &mut subscribers,
        );
        drop(input_tx);
        // A sync group member's tracking also carries the FAULT its group forces on it.
        let (watch_tx, watch_rx) = watch::channel(tracker.current());
        let (update_tx, update_rx) = mpsc::unbounded_channel();
        tokio::spawn(track::run_tracker(tracker, input_rx, update_tx));
        if let Some(group) = group {
            let (link, forced) = group.join(&name);
            engine.sync_group = true;
            options.sync = Some(link);
            tokio::spawn(forward_tracking(update_rx, Some(forced), watch_tx));
        } else {
            tokio::spawn(forward_tracking(update_rx, None, watch_tx));
        }
        let (state_tx, state_rx) = watch::channel(State::Initialize);
        options.state = Some(state_tx);
        tokio::spawn(publish_status(
            Arc::clone(board),
            initial_status(instance),
            state_rx,
            watch_rx.clone(),
        ));
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
            let (notify_tx, notify_rx) = mpsc::unbounded_channel();
            options.notify = Some(notify_tx);
            let notifier = Notifier::spawn(NotifyConfig {
                kind: NotifyKind::Instance,
                name: name.clone(),
                scripts,
                timeout: NOTIFY_TIMEOUT,
                fifos: fifos.clone(),
            });
            let priority_changes = notify_priority_changes(instance, group_config, global);
            notifiers.spawn(notify_instance(notifier, notify_rx, priority_changes));
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
        notifiers.spawn(group.start(config, &fifos));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: resigning"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: resigning"),
        Some(joined) = engines.join_next() => report(joined),
    }
    // keepalived terminates its scripts first, the notify FIFO scripts included (they
    // do not see the STOP lines).
    for script in fifo_scripts {
        script.stop(FIFO_SCRIPT_GRACE).await;
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
    // The last writer closes each FIFO and removes those keeplb created.
    drop(fifos);
    Ok(())
}

/// Every instance's state as `keeplb status` and the metrics show it, by name.
pub type StatusBoard =
    Arc<std::sync::Mutex<std::collections::BTreeMap<String, VrrpInstanceStatus>>>;

fn initial_status(instance: &VrrpInstance) -> VrrpInstanceStatus {
    VrrpInstanceStatus {
        name: instance.name.clone(),
        state: State::Initialize.keepalived_name().to_owned(),
        priority: instance.priority,
        effective_priority: instance.priority,
        master: None,
        virtual_addresses: instance
            .virtual_ipaddress
            .iter()
            .map(|vip| format!("{}/{}", vip.address, vip.prefix))
            .collect(),
        last_transition: None,
    }
}

/// Keeps `board` up to date with one instance's state and effective priority until
/// the instance is gone.
async fn publish_status(
    board: StatusBoard,
    mut status: VrrpInstanceStatus,
    mut state: watch::Receiver<State>,
    tracking: watch::Receiver<TrackingUpdate>,
) {
    let publish = |status: &VrrpInstanceStatus| {
        board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(status.name.clone(), status.clone());
    };
    publish(&status);
    // Tracking ends early when nothing is tracked; its last value stays in force.
    let mut tracking = Some(tracking);
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let to = state.borrow_and_update().keepalived_name().to_owned();
                if to != status.state {
                    let at_unix_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    status.last_transition = Some(Transition {
                        at_unix_ms,
                        from: std::mem::replace(&mut status.state, to.clone()),
                        to,
                        cause: String::new(),
                    });
                }
            }
            changed = async { tracking.as_mut()?.changed().await.ok() }, if tracking.is_some() => {
                match (changed, &mut tracking) {
                    (Some(()), Some(updates)) => {
                        status.effective_priority = updates.borrow_and_update().effective_priority;
                    }
                    _ => tracking = None,
                }
            }
        }
        publish(&status);
    }
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

/// A `vrrp_sync_group` being set up, with two or more members that run: the channels of
/// the members that joined.
struct GroupSetup {
    config: model::VrrpSyncGroup,
    members: Vec<MemberChannels>,
}

/// The coordinator's side of one member: its reports, the switch forcing it into FAULT
/// (through its tracking), and its requests.
struct MemberChannels {
    name: String,
    reports: mpsc::UnboundedReceiver<MemberReport>,
    forced: watch::Sender<bool>,
    requests: mpsc::UnboundedSender<SyncRequest>,
}

/// The sync groups to run, as keepalived takes them: an instance belongs to the first
/// group naming it; a group with fewer than two members that run is not synchronised.
fn sync_groups(config: &model::Config, running: &[&str]) -> Vec<GroupSetup> {
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
        let members = group
            .group
            .iter()
            .filter(|n| running.contains(&n.as_str()))
            .count();
        if members < 2 {
            tracing::warn!(
                "vrrp_sync_group {this} has only {members} running instance(s); not synchronising"
            );
            continue;
        }
        groups.push(GroupSetup {
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

impl GroupSetup {
    /// Whether the group names `instance`.
    fn names(&self, instance: &str) -> bool {
        self.config.group.iter().any(|n| n == instance)
    }

    /// Makes `instance` a member: its driver's link to the group, and the switch of the
    /// FAULT the group forces on it.
    fn join(&mut self, instance: &str) -> (SyncLink, watch::Receiver<bool>) {
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (forced, forced_rx) = watch::channel(false);
        let (requests, requests_rx) = mpsc::unbounded_channel();
        self.members.push(MemberChannels {
            name: instance.to_owned(),
            reports,
            forced,
            requests,
        });
        let link = SyncLink {
            reports: reports_tx,
            requests: requests_rx,
        };
        (link, forced_rx)
    }

    /// The group's coordinator, to run until every member has stopped.
    fn start(
        self,
        config: &model::Config,
        fifos: &[Arc<FifoWriter>],
    ) -> impl Future<Output = ()> + Send + 'static {
        let name = self.config.name.clone();
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
        let group = SyncGroup::new(name, self.members.iter().map(|m| m.name.clone()));
        coordinate(group, self.members, notifier)
    }
}

/// Runs a sync group's [`SyncGroup`] over its members' channels: their reports in, the
/// forced FAULTs, requests and group notifications out. Ends when every member's driver
/// is gone.
async fn coordinate(
    mut group: SyncGroup,
    members: Vec<MemberChannels>,
    notifier: Option<Notifier>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut outputs = Vec::new();
    for (i, member) in members.into_iter().enumerate() {
        let mut reports = member.reports;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(report) = reports.recv().await {
                if tx.send((i, report)).is_err() {
                    return;
                }
            }
        });
        outputs.push((member.forced, member.requests));
    }
    drop(tx);
    while let Some((i, report)) = rx.recv().await {
        for command in group.report(i, report.state, report.wants_master) {
            match command {
                SyncCommand::ForceFault { member, fault } => {
                    let _ = outputs[member].0.send(fault);
                }
                SyncCommand::Backup { member } => {
                    let _ = outputs[member].1.send(SyncRequest::Backup);
                }
                SyncCommand::Master { member } => {
                    let _ = outputs[member].1.send(SyncRequest::Master);
                }
                SyncCommand::GroupState(to) => {
                    if let Some(notifier) = &notifier {
                        notifier.state_changed(to, 0);
                    }
                }
            }
        }
    }
    if let Some(notifier) = notifier {
        notifier.close().await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use keeplb_config::{LoadOptions, MemoryLoader, env::AssumeValid, load_with};

    use super::*;

    fn load(text: &str) -> model::Config {
        let main = "/etc/keepalived/keepalived.conf";
        let loaded = load_with(
            &MemoryLoader::new().with(main, text),
            &AssumeValid,
            Path::new(main),
            &LoadOptions {
                config_id: "node1".to_owned(),
            },
        )
        .expect("loads");
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        loaded.config
    }

    const SCRIPTS: &str = "vrrp_script chk { script /bin/true\n weight -20 }\nvrrp_script other { script /bin/true\n weight 0 }\ntrack_file tf { file /nonexistent\n weight 7 }\n";

    fn instance(name: &str, priority: u8, body: &str) -> String {
        format!(
            "vrrp_instance {name} {{\n interface eth0\n virtual_router_id {priority}\n priority {priority}\n virtual_ipaddress {{ 10.0.0.{priority} }}\n{body}}}\n"
        )
    }

    fn objects(text: &str, member: &str) -> TrackedObjects {
        let config = load(text);
        let instance = config
            .vrrp_instance
            .iter()
            .find(|i| i.name == member)
            .expect("instance");
        let group = config
            .vrrp_sync_group
            .iter()
            .find(|g| g.group.iter().any(|n| n == member));
        tracked_objects(instance, group, &config)
    }

    #[test]
    fn a_groups_tracking_applies_to_every_member_with_its_weights() {
        let text = format!(
            "{SCRIPTS}{}{}vrrp_sync_group G {{\n group {{ VI_1 VI_2 }}\n track_script {{ chk\n other }}\n track_file {{ tf weight 3 reverse }}\n track_interface {{ eth1 weight 10 }}\n}}\n",
            instance("VI_1", 100, " track_script { other }\n"),
            instance("VI_2", 101, ""),
        );
        let chk = ("chk".to_owned(), Weight::new(-20, false));
        let other = ("other".to_owned(), Weight::new(0, false));
        // VI_1 tracks `other` itself (weight 0, which the group's reference keeps).
        for (member, scripts) in [("VI_1", [&other, &chk]), ("VI_2", [&chk, &other])] {
            let o = objects(&text, member);
            assert_eq!(o.scripts, scripts.map(Clone::clone), "{member}");
            assert_eq!(o.files, [("tf".to_owned(), Weight::new(3, true))]);
            assert_eq!(o.interfaces, [("eth1".to_owned(), Weight::new(10, false))]);
        }
    }

    #[test]
    fn announcement_settings_follow_keepalived() {
        let text = format!(
            "global_defs {{\n vrrp_garp_interval 0.25\n vrrp_gna_interval 0.5\n vrrp_garp_master_delay 7\n vrrp_garp_master_repeat 2\n}}\n{}{}",
            instance("VI_1", 100, " garp_master_delay 3\n garp_master_repeat 4\n"),
            instance(
                "VI_2",
                101,
                " garp_lower_prio_delay 1\n garp_lower_prio_repeat 9\n"
            ),
        );
        let config = load(&text);
        let global = &config.global_defs;
        let (one, options) = instance_config(&config.vrrp_instance[0], global).expect("runs");
        assert_eq!(
            options.announce_intervals,
            AnnounceIntervals {
                arp: Duration::from_millis(250),
                na: Duration::from_millis(500),
            }
        );
        // Unset lower_prio values come from the global master values, not the instance's.
        let g = one.garp;
        assert_eq!(
            (g.master_delay, g.master_repeat),
            (Duration::from_secs(3), 4)
        );
        assert_eq!(
            (g.lower_prio_delay, g.lower_prio_repeat),
            (Duration::from_secs(7), 2)
        );
        let (two, _) = instance_config(&config.vrrp_instance[1], global).expect("runs");
        let g = two.garp;
        assert_eq!(
            (g.lower_prio_delay, g.lower_prio_repeat),
            (Duration::from_secs(1), 9)
        );
    }

    #[test]
    fn an_owner_in_the_group_zeroes_the_groups_weights() {
        let text = format!(
            "{SCRIPTS}{}{}vrrp_sync_group G {{\n group {{ VI_1 VI_2 }}\n track_script {{ chk }}\n track_file {{ tf }}\n track_interface {{ eth1 weight 10 }}\n}}\n",
            instance("VI_1", 255, ""),
            instance("VI_2", 100, ""),
        );
        let o = objects(&text, "VI_2");
        let zero = Weight::new(0, false);
        assert_eq!(o.scripts, [("chk".to_owned(), zero)]);
        assert_eq!(o.files, [("tf".to_owned(), zero)]);
        assert_eq!(o.interfaces, [("eth1".to_owned(), zero)]);
    }

    #[test]
    fn outside_a_group_only_the_instances_own_tracking_counts() {
        let text = format!(
            "{SCRIPTS}{}vrrp_sync_group G {{\n group {{ VI_2 VI_3 }}\n track_script {{ chk }}\n}}\n{}{}",
            instance("VI_1", 100, " track_script { chk weight 5 }\n"),
            instance("VI_2", 101, ""),
            instance("VI_3", 102, ""),
        );
        let o = objects(&text, "VI_1");
        assert_eq!(o.scripts, [("chk".to_owned(), Weight::new(5, false))]);
        assert!(o.files.is_empty() && o.interfaces.is_empty());
    }
}
