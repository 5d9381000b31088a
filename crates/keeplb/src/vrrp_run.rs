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
//!
//! A reload is applied unit by unit (an instance, or a sync group with its members),
//! comparing what each unit is made of ([`UnitSpec`]): unchanged units keep running
//! untouched, removed ones stop as on SIGTERM, new ones start, changed ones restart
//! (see [`Vrrp::apply`] for how a master stays master). Tracked objects are shared
//! through a [`TrackHub`], so a restarted instance joins the running checkers.
//! Each driver's [`InstanceReport`] feeds the status board: state, last transition
//! with its cause, and the current master's address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use keeplb_config::model::{self, AuthType, GlobalDefs, Script, VrrpInstance};
use keeplb_control::api::{Transition, VrrpCounters, VrrpInstanceStatus};
use keeplb_vrrp::io::run_interface_tracker;
use keeplb_vrrp::notify::{
    FifoScript, FifoWriter, Notifier, NotifyConfig, NotifyKind, NotifyScripts,
};
use keeplb_vrrp::pace::AnnounceIntervals;
use keeplb_vrrp::sync::{SyncCommand, SyncGroup};
use keeplb_vrrp::track::{
    self, ScriptCommand, ScriptSpec, TrackInput, Tracker, TrackingUpdate, Weight, init_track_file,
    read_track_file,
};
use keeplb_vrrp::{
    AdverInterval, Auth, AuthPassword, ChecksumForm, DriverOptions, GarpConfig, InitialState,
    InstanceConfig, InstanceReport, InterfacePaces, MemberReport, Notification, State, SyncLink,
    SyncRequest, Transport, UnicastPeer, Version, VipBroadcast, VipOptions,
};
use tokio::sync::{mpsc, watch};

use crate::termination::Termination;

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
    options.no_track = vip.no_track;
    options.nodad = vip.nodad;
    options
}

/// How often `track_file`s and `track_interface`s are looked at.
const TRACK_POLL: Duration = Duration::from_millis(200);
/// The time limit of each notify script.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// A script line of the configuration as it will run: parsed, as `user` (else
/// `script_user`), and vetted as keepalived does at start (missing or not runnable:
/// refused; insecure: refused with `enable_script_security`, else only reported).
pub(crate) fn script_command(
    line: &str,
    user: Option<&str>,
    group: Option<&str>,
    global: &GlobalDefs,
) -> anyhow::Result<ScriptCommand> {
    let cmd = ScriptCommand::configured(
        line,
        user.map(|u| (u, group)),
        global.script_user.as_ref().map(model::ScriptUser::names),
    )?;
    keeplb_script::vet_script(&cmd, global.enable_script_security)?;
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

/// An instance's or group's `notify_master`, `notify_backup`, `notify_fault`,
/// `notify_stop` and `notify`, in that order, as they will run.
fn notify_scripts(
    scripts: [&Option<Script>; 5],
    global: &GlobalDefs,
    owner: &str,
) -> NotifyScripts {
    let [master, backup, fault, stop, notify] = scripts;
    NotifyScripts {
        master: model_script(master, global, "notify_master", owner),
        backup: model_script(backup, global, "notify_backup", owner),
        fault: model_script(fault, global, "notify_fault", owner),
        stop: model_script(stop, global, "notify_stop", owner),
        notify: model_script(notify, global, "notify", owner),
        master_rx_lower_pri: None,
    }
}

/// An instance's notify scripts as they will run: the five of [`notify_scripts`], and
/// `notify_master_rx_lower_pri`, which only instances have.
fn instance_notify_scripts(i: &VrrpInstance, global: &GlobalDefs) -> NotifyScripts {
    let scripts = [
        &i.notify_master,
        &i.notify_backup,
        &i.notify_fault,
        &i.notify_stop,
        &i.notify,
    ];
    NotifyScripts {
        master_rx_lower_pri: model_script(
            &i.notify_master_rx_lower_pri,
            global,
            "notify_master_rx_lower_pri",
            &i.name,
        ),
        ..notify_scripts(scripts, global, &i.name)
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

/// One instance's [`Tracker`] over `objects`, subscribing `input` to each of them
/// (through `hub`, which starts those not running yet; their keys go to `tracked`).
fn tracker(
    instance: &VrrpInstance,
    objects: TrackedObjects,
    config: &model::Config,
    specs: &HashMap<String, ScriptSpec>,
    input: &mpsc::UnboundedSender<TrackInput>,
    hub: &mut TrackHub,
    tracked: &mut Vec<ObjectKey>,
) -> Tracker {
    let name = &instance.name;
    let mut tracker = Tracker::new(instance.priority);
    for (script, weight) in objects.scripts {
        let (Some(spec), Some(definition)) = (
            specs.get(&script),
            config.vrrp_script.iter().find(|s| s.name == script),
        ) else {
            tracing::warn!("vrrp_instance {name}: not tracking disabled vrrp_script {script}");
            continue;
        };
        tracker.track_script(&script, weight, spec.initial_status());
        let spawn = |tx| {
            tokio::spawn(track::run_script_checker(spec.clone(), vec![tx]));
        };
        let definition = ObjectDefinition::Script(definition.clone());
        tracked.push(hub.subscribe(&script, definition, spawn, input));
    }
    for (file, weight) in objects.files {
        let Some(definition) = config.track_file.iter().find(|f| f.name == file) else {
            continue;
        };
        let path = PathBuf::from(&definition.file);
        tracker.track_file(&file, weight, read_track_file(&path));
        let spawn = |tx| {
            tokio::spawn(track::run_file_tracker(
                file.clone(),
                path,
                TRACK_POLL,
                vec![tx],
            ));
        };
        let definition = ObjectDefinition::File(definition.clone());
        tracked.push(hub.subscribe(&file, definition, spawn, input));
    }
    for (interface, weight) in objects.interfaces {
        tracker.track_interface(&interface, weight);
        let spawn = |tx| {
            tokio::spawn(run_interface_tracker(
                interface.clone(),
                TRACK_POLL,
                vec![tx],
            ));
        };
        tracked.push(hub.subscribe(&interface, ObjectDefinition::Interface, spawn, input));
    }
    tracker
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

/// An instance restarted by a reload, on its way back to the state it had: keepalived
/// keeps a reloaded instance's state and notifies nothing, so the transitions that only
/// lead back there are not notified either.
struct Resumed {
    /// The state before the reload (MASTER or BACKUP).
    state: State,
    /// A master's startup BACKUP, notified only if it does not become MASTER again.
    held: Option<Notification>,
}

impl Resumed {
    fn new(state: State) -> Self {
        Resumed { state, held: None }
    }

    /// The notifications to pass on for `notification`, and whether the instance is
    /// past its restart (every later notification passes).
    fn filter(&mut self, notification: Notification) -> (Vec<Notification>, bool) {
        match notification {
            Notification::State { state, .. } if state == self.state => {
                self.held = None;
                (Vec::new(), true)
            }
            Notification::State {
                state: State::Backup,
                ..
            } if self.held.is_none() => {
                self.held = Some(notification);
                (Vec::new(), false)
            }
            Notification::State { .. } => {
                let mut out: Vec<_> = self.held.take().into_iter().collect();
                out.push(notification);
                (out, true)
            }
            other => (vec![other], false),
        }
    }
}

/// Passes one instance's notifications to its notifier until its driver is gone; for
/// an instance `resumed` by a reload, the transitions back to its old state are not
/// notified (a held one is, once `grace` passes without that state).
async fn notify_instance(
    notifier: Notifier,
    mut notifications: mpsc::UnboundedReceiver<Notification>,
    priority_changes: bool,
    resumed: Option<(State, Duration)>,
) {
    if let Some((state, grace)) = resumed {
        let mut resumed = Resumed::new(state);
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                notification = notifications.recv() => {
                    let Some(notification) = notification else { break };
                    let (pass, done) = resumed.filter(notification);
                    for notification in pass {
                        notify(&notifier, notification, priority_changes);
                    }
                    if done {
                        break;
                    }
                }
                () = &mut deadline => {
                    if let Some(held) = resumed.held.take() {
                        notify(&notifier, held, priority_changes);
                    }
                    break;
                }
            }
        }
    }
    while let Some(notification) = notifications.recv().await {
        notify(&notifier, notification, priority_changes);
    }
    notifier.close().await;
}

fn notify(notifier: &Notifier, notification: Notification, priority_changes: bool) {
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
            notifier.master_rx_lower_priority(priority);
        }
    }
}

/// The objects the running instances track, by kind and name: one checker (script) or
/// poller (file, interface) each, shared by the instances that track it through a
/// fan-out that instances join as they start (a late one gets the last value at once).
#[derive(Default)]
struct TrackHub {
    objects: HashMap<ObjectKey, HubObject>,
}

/// A tracked object's kind and name.
type ObjectKey = (ObjectKind, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ObjectKind {
    Script,
    File,
    Interface,
}

/// What a tracked object was started from: a changed definition restarts it.
#[derive(Debug, PartialEq)]
enum ObjectDefinition {
    Script(model::VrrpScript),
    File(model::TrackFile),
    Interface,
}

impl ObjectDefinition {
    fn kind(&self) -> ObjectKind {
        match self {
            ObjectDefinition::Script(_) => ObjectKind::Script,
            ObjectDefinition::File(_) => ObjectKind::File,
            ObjectDefinition::Interface => ObjectKind::Interface,
        }
    }
}

/// A running object: its checker (or poller) reports to `fan_out`; stopping the fan-out
/// closes the checker's only channel, so the checker ends after its current run (a
/// running script is not cut short).
struct HubObject {
    definition: ObjectDefinition,
    joins: mpsc::UnboundedSender<mpsc::UnboundedSender<TrackInput>>,
    fan_out: tokio::task::AbortHandle,
}

impl TrackHub {
    /// Subscribes `input` to the object `name`, starting it (with `spawn`, given the
    /// channel its checker reports on) unless it already runs with this `definition`.
    fn subscribe(
        &mut self,
        name: &str,
        definition: ObjectDefinition,
        spawn: impl FnOnce(mpsc::UnboundedSender<TrackInput>),
        input: &mpsc::UnboundedSender<TrackInput>,
    ) -> ObjectKey {
        let key = (definition.kind(), name.to_owned());
        if self
            .objects
            .get(&key)
            .is_some_and(|o| o.definition != definition)
            && let Some(old) = self.objects.remove(&key)
        {
            old.stop();
        }
        let object = self.objects.entry(key.clone()).or_insert_with(|| {
            let (inputs_tx, inputs) = mpsc::unbounded_channel();
            let (joins, joins_rx) = mpsc::unbounded_channel();
            spawn(inputs_tx);
            HubObject {
                definition,
                joins,
                fan_out: tokio::spawn(fan_out(inputs, joins_rx)).abort_handle(),
            }
        });
        let _ = object.joins.send(input.clone());
        key
    }

    /// Stops the objects no running instance tracks any more.
    fn keep_only(&mut self, tracked: &std::collections::HashSet<&ObjectKey>) {
        self.objects.retain(|key, object| {
            let keep = tracked.contains(key);
            if !keep {
                object.stop();
            }
            keep
        });
    }
}

impl HubObject {
    fn stop(&self) {
        self.fan_out.abort();
    }
}

/// Passes a tracked object's inputs to its subscribers; a new subscriber first gets the
/// last input (the tracker it feeds started from the object's initial value).
async fn fan_out(
    mut inputs: mpsc::UnboundedReceiver<TrackInput>,
    mut joins: mpsc::UnboundedReceiver<mpsc::UnboundedSender<TrackInput>>,
) {
    let mut subscribers: Vec<mpsc::UnboundedSender<TrackInput>> = Vec::new();
    let mut last: Option<TrackInput> = None;
    loop {
        tokio::select! {
            Some(input) = inputs.recv() => {
                subscribers.retain(|s| s.send(input.clone()).is_ok());
                last = Some(input);
            }
            Some(subscriber) = joins.recv() => {
                if last.as_ref().is_none_or(|l| subscriber.send(l.clone()).is_ok()) {
                    subscribers.push(subscriber);
                }
            }
            else => return,
        }
    }
}

/// The `global_defs` keys an instance is made from (the notify FIFOs excepted: they are
/// opened once at startup).
#[derive(Debug, PartialEq)]
struct VrrpGlobals {
    enable_script_security: bool,
    script_user: Option<model::ScriptUser>,
    vrrp_mcast_group4: std::net::Ipv4Addr,
    vrrp_mcast_group6: std::net::Ipv6Addr,
    vrrp_garp_master_delay: u32,
    vrrp_garp_master_repeat: u32,
    vrrp_garp_interval: f64,
    vrrp_gna_interval: f64,
    vrrp_strict: bool,
    v3_checksum_as_v2: bool,
    vrrp_notify_priority_changes: Option<Vec<String>>,
}

impl VrrpGlobals {
    fn of(global: &GlobalDefs) -> Self {
        VrrpGlobals {
            enable_script_security: global.enable_script_security,
            script_user: global.script_user.clone(),
            vrrp_mcast_group4: global.vrrp_mcast_group4,
            vrrp_mcast_group6: global.vrrp_mcast_group6,
            vrrp_garp_master_delay: global.vrrp_garp_master_delay,
            vrrp_garp_master_repeat: global.vrrp_garp_master_repeat,
            vrrp_garp_interval: global.vrrp_garp_interval,
            vrrp_gna_interval: global.vrrp_gna_interval,
            vrrp_strict: global.vrrp_strict,
            v3_checksum_as_v2: global.v3_checksum_as_v2,
            vrrp_notify_priority_changes: global.other.get("vrrp_notify_priority_changes").cloned(),
        }
    }
}

/// Everything a unit's instances are made of: when it is the same in a new
/// configuration, the unit keeps running untouched.
#[derive(Debug, PartialEq)]
struct UnitSpec {
    /// Each member's block with the `vrrp_script`s and `track_file`s it (or its group)
    /// names.
    members: Vec<(VrrpInstance, Vec<model::VrrpScript>, Vec<model::TrackFile>)>,
    group: Option<model::VrrpSyncGroup>,
    global: VrrpGlobals,
}

impl UnitSpec {
    fn of(
        members: &[&VrrpInstance],
        group: Option<&model::VrrpSyncGroup>,
        config: &model::Config,
    ) -> Self {
        let named = |own: &[model::TrackRef], in_group: Option<&[model::TrackRef]>, name: &str| {
            own.iter()
                .chain(in_group.into_iter().flatten())
                .any(|r| r.name == name)
        };
        let members = members
            .iter()
            .map(|i| {
                let group_scripts = group.map(|g| &g.track_script[..]);
                let group_files = group.map(|g| &g.track_file[..]);
                let scripts = (config.vrrp_script.iter())
                    .filter(|s| named(&i.track_script, group_scripts, &s.name))
                    .cloned()
                    .collect();
                let files = (config.track_file.iter())
                    .filter(|f| named(&i.track_file, group_files, &f.name))
                    .cloned()
                    .collect();
                ((*i).clone(), scripts, files)
            })
            .collect();
        UnitSpec {
            members,
            group: group.cloned(),
            global: VrrpGlobals::of(&config.global_defs),
        }
    }
}

/// Instances that start and stop together: one instance, or the running members of a
/// sync group (whose coordinator needs all of them from the start).
struct UnitPlan<'a> {
    key: String,
    spec: UnitSpec,
    members: Vec<(&'a VrrpInstance, (InstanceConfig, DriverOptions))>,
    group: Option<GroupSetup>,
}

/// The units `config` runs, in configuration order; instances that cannot run are
/// reported and left out.
fn plan(config: &model::Config) -> Vec<UnitPlan<'_>> {
    let configured: Vec<_> = config
        .vrrp_instance
        .iter()
        .filter_map(
            |instance| match instance_config(instance, &config.global_defs) {
                Ok(engine) => Some((instance, engine)),
                Err(e) => {
                    tracing::error!("not running vrrp_instance {}: {e:#}", instance.name);
                    None
                }
            },
        )
        .collect();
    let running: Vec<&str> = configured.iter().map(|(i, _)| i.name.as_str()).collect();
    let mut groups = sync_groups(config, &running);
    let mut units: Vec<UnitPlan> = Vec::new();
    for (instance, engine) in configured {
        let name = &instance.name;
        let joined = |u: &&mut UnitPlan| u.group.as_ref().is_some_and(|g| g.names(name));
        if let Some(unit) = units.iter_mut().find(joined) {
            unit.members.push((instance, engine));
            continue;
        }
        let group = groups
            .iter()
            .position(|g| g.names(name))
            .map(|g| groups.swap_remove(g));
        units.push(UnitPlan {
            key: match &group {
                Some(group) => format!("vrrp_sync_group {}", group.config.name),
                None => format!("vrrp_instance {name}"),
            },
            spec: UnitSpec::of(&[], None, config),
            members: vec![(instance, engine)],
            group,
        });
    }
    for unit in &mut units {
        let members: Vec<&VrrpInstance> = unit.members.iter().map(|(i, _)| *i).collect();
        unit.spec = UnitSpec::of(&members, unit.group.as_ref().map(|g| &g.config), config);
        let owners = unit.group.is_some()
            && keeplb_vrrp::sync::is_group_of_owners(
                unit.members.iter().map(|(_, (engine, _))| engine),
            );
        for (_, (engine, _)) in &mut unit.members {
            engine.sync_group_owners = owners;
        }
        if let Some(group) = &mut unit.group {
            group.owners = owners;
        }
    }
    units
}

/// Which units a new configuration stops and starts (a changed unit does both); the
/// others keep running untouched.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    stop: Vec<String>,
    start: Vec<String>,
}

fn changes(running: &[(&str, &UnitSpec)], planned: &[(&str, &UnitSpec)]) -> Changes {
    let missing_from = |units: &[(&str, &UnitSpec)], (key, spec): &(&str, &UnitSpec)| {
        !units.iter().any(|(k, s)| k == key && s == spec)
    };
    let keys_missing = |from: &[(&str, &UnitSpec)], units: &[(&str, &UnitSpec)]| {
        from.iter()
            .filter(|unit| missing_from(units, unit))
            .map(|(key, _)| (*key).to_owned())
            .collect()
    };
    Changes {
        stop: keys_missing(running, planned),
        start: keys_missing(planned, running),
    }
}

/// How a member of a quietly restarted unit starts again.
struct Resume {
    /// Its state before the reload (MASTER or BACKUP).
    state: State,
    /// For a master that resumes as such: the addresses it held.
    held: Option<Vec<VipOptions>>,
}

/// The addresses `member` of a running unit holds as master, with their options.
fn held_addresses(spec: &UnitSpec, member: &str) -> Vec<VipOptions> {
    spec.members
        .iter()
        .filter(|(instance, _, _)| instance.name == member)
        .flat_map(|(instance, _, _)| {
            (instance.virtual_ipaddress.iter())
                .chain(&instance.virtual_ipaddress_excluded)
                .map(vip_options)
        })
        .collect()
}

/// Whether a changed unit can be replaced without its masters resigning (keepalived
/// keeps a reloaded instance's state and only diffs its addresses): every old member is
/// still in it with the same interface and router id. A master that resumes keeps the
/// addresses still configured, adds the new ones and removes those no longer
/// configured, as keepalived's `clear_diff_vrrp_vip` does.
fn can_restart_quietly(old: &UnitSpec, new: &UnitSpec) -> bool {
    old.members.iter().all(|(old, _, _)| {
        new.members.iter().any(|(new, _, _)| {
            new.name == old.name
                && new.interface == old.interface
                && new.virtual_router_id == old.virtual_router_id
        })
    })
}

/// Whether every address the old members may hold is still configured in `new`.
fn keeps_addresses(old: &UnitSpec, new: &UnitSpec) -> bool {
    let held = |i: &VrrpInstance| -> Vec<(IpAddr, Option<String>)> {
        i.virtual_ipaddress
            .iter()
            .chain(&i.virtual_ipaddress_excluded)
            .map(|v| (v.address, v.dev.clone()))
            .collect()
    };
    old.members.iter().all(|(old, _, _)| {
        new.members
            .iter()
            .filter(|(new, _, _)| new.name == old.name)
            .any(|(new, _, _)| {
                let still_held = held(new);
                held(old).iter().all(|a| still_held.contains(a))
            })
    })
}

/// A unit that runs: its spec, its members, the switches that stop it (resigning, or
/// quietly for a restart), its task (which ends once its engines and their notifiers
/// are done) and the objects it tracks.
struct RunningUnit {
    spec: UnitSpec,
    members: Vec<String>,
    stop: watch::Sender<bool>,
    quiet_stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    tracked: Vec<ObjectKey>,
}

/// Everything `keeplb run` runs for VRRP, changed unit by unit at each reload.
struct Vrrp {
    board: StatusBoard,
    /// Opened once at startup, for every notifier.
    fifos: Vec<Arc<FifoWriter>>,
    /// One pacing state per interface for all instances (vrrp_garp_interval).
    paces: InterfacePaces,
    hub: TrackHub,
    units: Vec<(String, RunningUnit)>,
    /// Told when an engine ends without being stopped.
    ended: mpsc::UnboundedSender<()>,
}

impl Vrrp {
    /// Makes the running units those of `config`: stops (and waits for) the units it
    /// no longer has or has changed, then starts the new and changed ones.
    ///
    /// A removed unit stops as on SIGTERM. A changed one that
    /// [`can_restart_quietly`] is dropped where it stands instead: no priority-0
    /// advertisement, no notify_stop, its addresses left in place; its members that
    /// were MASTER resume as MASTER at once, keeping the addresses the new configuration
    /// still has (keepalived's `reload_master`: [`DriverOptions::resume_master`]) and
    /// advertising at once, so the peers see no change, and the master keeps its role
    /// unless the new configuration makes a peer better, which then preempts as the
    /// protocol says. (In a sync group, only if every member was MASTER, as keepalived
    /// resumes a group as MASTER only then; otherwise they start with `state MASTER`.)
    /// Members that were BACKUP start as `state BACKUP`. Neither notifies the way back
    /// to its old state ([`Resumed`]), as keepalived, which keeps the state, notifies
    /// nothing.
    /// Any other changed unit stops as on SIGTERM and starts again.
    async fn apply(&mut self, config: &model::Config) {
        let plans = plan(config);
        let running: Vec<_> = self
            .units
            .iter()
            .map(|(k, u)| (k.as_str(), &u.spec))
            .collect();
        let planned: Vec<_> = plans.iter().map(|p| (p.key.as_str(), &p.spec)).collect();
        let changes = changes(&running, &planned);
        let (stopping, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.units)
            .into_iter()
            .partition(|(key, _)| changes.stop.contains(key));
        self.units = kept;
        let mut resumed = HashMap::new();
        for (key, unit) in &stopping {
            let plan = plans
                .iter()
                .find(|p| &p.key == key && can_restart_quietly(&unit.spec, &p.spec));
            let states: Vec<_> = {
                let board = self
                    .board
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                unit.members
                    .iter()
                    .map(|name| {
                        let state = board.get(name).map(|s| s.state.as_str());
                        let state = [State::Master, State::Backup]
                            .into_iter()
                            .find(|s| state == Some(s.keepalived_name()));
                        (name, state)
                    })
                    .collect()
            };
            let masters = states
                .iter()
                .filter(|(_, s)| *s == Some(State::Master))
                .count();
            let all_master = masters == states.len();
            // Only masters that resume as such remove the addresses a reload dropped
            // (their held ones): a group with masters and others must resign to clean up.
            let quietly = plan.is_some_and(|plan| {
                all_master || masters == 0 || keeps_addresses(&unit.spec, &plan.spec)
            });
            if quietly {
                for (name, state) in states {
                    let Some(state) = state else { continue };
                    let held = (state == State::Master && all_master)
                        .then(|| held_addresses(&unit.spec, name));
                    resumed.insert(name.clone(), Resume { state, held });
                }
                tracing::info!("{key}: restarting with its new configuration");
                let _ = unit.quiet_stop.send(true);
            } else {
                tracing::info!("{key}: stopping");
                let _ = unit.stop.send(true);
            }
        }
        for (key, unit) in stopping {
            if let Err(e) = unit.task.await {
                tracing::error!("{key}: {e}");
            }
            let mut board = self
                .board
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in &unit.members {
                board.remove(name);
            }
        }
        for plan in plans {
            if changes.start.contains(&plan.key) {
                tracing::info!("{}: starting", plan.key);
                let key = plan.key.clone();
                let unit = self.start(plan, config, &resumed);
                self.units.push((key, unit));
            }
        }
        let tracked = self.units.iter().flat_map(|(_, u)| &u.tracked).collect();
        self.hub.keep_only(&tracked);
    }

    /// Starts a unit's instances with their tracking, notifications, status and group;
    /// those `resumed` after a quiet stop start in the state they had (MASTER as
    /// `state MASTER`), without notifying the way back to it.
    fn start(
        &mut self,
        plan: UnitPlan,
        config: &model::Config,
        resumed: &HashMap<String, Resume>,
    ) -> RunningUnit {
        let global = &config.global_defs;
        let specs = script_specs(config);
        let (stop, stopped) = watch::channel(false);
        let (quiet_stop, quiet_stopped) = watch::channel(false);
        let mut engines = tokio::task::JoinSet::new();
        let mut followers = tokio::task::JoinSet::new();
        let mut tracked = Vec::new();
        let mut members = Vec::new();
        let mut group = plan.group;
        for (instance, (mut engine, mut options)) in plan.members {
            let name = instance.name.clone();
            members.push(name.clone());
            let resumed = resumed.get(&name).map(|resume| {
                let state = resume.state;
                options.resume_master = resume.held.clone();
                engine.initial_state = if state == State::Master {
                    InitialState::Master
                } else {
                    InitialState::Backup
                };
                // Past its startup wait (at most an interval and a skew) with room.
                let grace = engine.adver_int.as_duration() * 3 + Duration::from_secs(1);
                (state, grace)
            });
            options.paces = self.paces.clone();
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
                &mut self.hub,
                &mut tracked,
            );
            drop(input_tx);
            // A sync group member's tracking also carries the FAULT its group forces on it.
            let (watch_tx, watch_rx) = watch::channel(tracker.current());
            let (update_tx, update_rx) = mpsc::unbounded_channel();
            tokio::spawn(track::run_tracker(tracker, input_rx, update_tx));
            if let Some(group) = &mut group {
                let (link, forced) = group.join(&name);
                engine.sync_group = true;
                options.sync = Some(link);
                tokio::spawn(forward_tracking(update_rx, Some(forced), watch_tx));
            } else {
                tokio::spawn(forward_tracking(update_rx, None, watch_tx));
            }
            let (report_tx, report_rx) = watch::channel(InstanceReport::default());
            options.report = Some(report_tx);
            followers.spawn(publish_status(
                Arc::clone(&self.board),
                initial_status(instance),
                report_rx,
                watch_rx.clone(),
            ));
            options.tracking = Some(watch_rx);

            // Notifications, in transition order, until the engine is gone.
            let scripts = instance_notify_scripts(instance, global);
            if scripts.iter().next().is_some() || !self.fifos.is_empty() {
                let (notify_tx, notify_rx) = mpsc::unbounded_channel();
                options.notify = Some(notify_tx);
                let notifier = Notifier::spawn(NotifyConfig {
                    kind: NotifyKind::Instance,
                    name: name.clone(),
                    scripts,
                    timeout: NOTIFY_TIMEOUT,
                    fifos: self.fifos.clone(),
                });
                let priority_changes = notify_priority_changes(instance, group_config, global);
                followers.spawn(notify_instance(
                    notifier,
                    notify_rx,
                    priority_changes,
                    resumed,
                ));
            }

            let stopped = stopped.clone();
            engines.spawn(async move {
                let result = keeplb_vrrp::run_instance_with(engine, options, stopped).await;
                (name, result)
            });
        }
        if let Some(group) = group {
            // keepalived: a group whose members all resume as MASTER is MASTER at once,
            // and notifies nothing for it.
            let resumed_master = members
                .iter()
                .all(|name| resumed.get(name).is_some_and(|r| r.held.is_some()));
            followers.spawn(group.start(config, &self.fifos, resumed_master));
        }
        let task = tokio::spawn(run_unit(
            engines,
            followers,
            stopped,
            quiet_stopped,
            self.ended.clone(),
        ));
        RunningUnit {
            spec: plan.spec,
            members,
            stop,
            quiet_stop,
            task,
            tracked,
        }
    }

    /// Stops every unit (the masters resign) and waits for them.
    async fn stop(self) {
        for (_, unit) in &self.units {
            let _ = unit.stop.send(true);
        }
        for (key, unit) in self.units {
            if let Err(e) = unit.task.await {
                tracing::error!("{key}: {e}");
            }
        }
        for object in self.hub.objects.values() {
            object.stop();
        }
    }
}

/// Waits for a unit's engines (reporting how each ended, and telling `ended` about one
/// that ended unasked), or drops them on `quiet_stop`; then waits for its notifiers,
/// status publishers and group coordinator.
async fn run_unit(
    mut engines: tokio::task::JoinSet<(String, Result<keeplb_vrrp::Stats, keeplb_vrrp::IoError>)>,
    mut followers: tokio::task::JoinSet<()>,
    stopping: watch::Receiver<bool>,
    mut quiet_stop: watch::Receiver<bool>,
    ended: mpsc::UnboundedSender<()>,
) {
    let mut quiet_open = true;
    loop {
        tokio::select! {
            joined = engines.join_next() => match joined {
                Some(joined) => {
                    report(joined);
                    if !*stopping.borrow() {
                        let _ = ended.send(());
                    }
                }
                None => break,
            },
            quiet = async { quiet_stop.wait_for(|quiet| *quiet).await.is_ok() }, if quiet_open => {
                if !quiet {
                    quiet_open = false;
                    continue;
                }
                // Dropped mid-flight: no Shutdown event, so no resignation, and the
                // addresses stay for the engines that replace these.
                engines.abort_all();
                while engines.join_next().await.is_some() {}
                break;
            }
        }
    }
    // Every engine is gone, so every notify channel is closed: the notifiers finish
    // their queues (notify_stop last) and end.
    while let Some(joined) = followers.join_next().await {
        if let Err(e) = joined {
            tracing::error!("a notify task failed: {e}");
        }
    }
}

/// Runs every instance until SIGTERM/SIGINT, then lets them resign and waits for them
/// (and for their notify scripts, `notify_stop` included).
/// An instance that cannot start is reported and the others keep running.
/// Each configuration from `reloads` is applied as a difference, unit by unit (an
/// instance, or a sync group with its members): an unchanged unit keeps running
/// untouched (no transition, no missed advertisement); a removed one stops as on
/// SIGTERM (a master resigns, its VIPs go, notify_stop runs); a new one starts; a
/// changed one stops and starts again.
pub async fn run(
    config: Arc<model::Config>,
    board: &StatusBoard,
    mut reloads: mpsc::UnboundedReceiver<Arc<model::Config>>,
    fifos: Vec<Arc<FifoWriter>>,
    fifo_scripts: Vec<FifoScript>,
    termination: &mut Termination,
) -> anyhow::Result<()> {
    for file in &config.track_file {
        if let Some(init) = &file.init_file
            && let Err(e) = init_track_file(Path::new(&file.file), init.value, init.overwrite)
        {
            tracing::error!("track_file {}: init_file {}: {e}", file.name, file.file);
        }
    }
    let (ended, mut engine_ended) = mpsc::unbounded_channel();
    let mut vrrp = Vrrp {
        board: Arc::clone(board),
        fifos,
        paces: InterfacePaces::default(),
        hub: TrackHub::default(),
        units: Vec::new(),
        ended,
    };
    vrrp.apply(&config).await;
    if vrrp.units.is_empty() {
        bail!("no vrrp_instance could be started");
    }
    loop {
        tokio::select! {
            signal = termination.recv() => {
                tracing::info!("{signal}: resigning");
                break;
            }
            Some(()) = engine_ended.recv() => break,
            Some(new) = reloads.recv() => vrrp.apply(&new).await,
        }
    }
    // keepalived terminates its scripts first, the notify FIFO scripts included (they
    // do not see the STOP lines).
    crate::fifo_run::NotifyFifos::stop_scripts(fifo_scripts).await;
    // The last writer closes each FIFO and removes those keeplb created.
    vrrp.stop().await;
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
        counters: VrrpCounters::default(),
    }
}

/// Keeps `board` up to date with one instance's state, last transition (with its
/// cause), master and effective priority until the instance is gone.
async fn publish_status(
    board: StatusBoard,
    mut status: VrrpInstanceStatus,
    mut report: watch::Receiver<InstanceReport>,
    tracking: watch::Receiver<TrackingUpdate>,
) {
    let publish = |status: &VrrpInstanceStatus| {
        board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(status.name.clone(), status.clone());
    };
    publish(&status);
    let mut transitions_seen = 0;
    // Tracking ends early when nothing is tracked; its last value stays in force.
    let mut tracking = Some(tracking);
    loop {
        tokio::select! {
            changed = report.changed() => {
                if changed.is_err() {
                    return;
                }
                let report = report.borrow_and_update().clone();
                status.state = report.state.keepalived_name().to_owned();
                status.master = report.master;
                let stats = &report.stats;
                status.counters = VrrpCounters {
                    transitions: report.transitions,
                    became_master: stats.became_master,
                    released_master: stats.released_master,
                    adverts_sent: stats.adverts_sent,
                    adverts_received: stats.adverts_received,
                    priority_zero_sent: stats.priority_zero_sent,
                    priority_zero_received: stats.priority_zero_received,
                    drops: stats
                        .all_drops()
                        .iter()
                        .map(|(reason, n)| (reason.label().to_owned(), *n))
                        .collect(),
                };
                if let Some((from, to, cause)) = report.last_transition
                    && report.transitions != transitions_seen
                {
                    transitions_seen = report.transitions;
                    status.last_transition = Some(transition(from, to, cause));
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

/// A state change as the status shows it, dated now.
fn transition(from: State, to: State, cause: keeplb_vrrp::Cause) -> Transition {
    let at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Transition {
        at_unix_ms,
        from: from.keepalived_name().to_owned(),
        to: to.keepalived_name().to_owned(),
        cause: cause.label().to_owned(),
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
    /// Every member is an address owner with `state MASTER`: the group starts MASTER.
    owners: bool,
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
            owners: false,
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

    /// The group's coordinator, to run until every member has stopped; in MASTER from
    /// the start for a group of owners, or when every member `resumed_master` after a
    /// reload.
    fn start(
        self,
        config: &model::Config,
        fifos: &[Arc<FifoWriter>],
        resumed_master: bool,
    ) -> impl Future<Output = ()> + Send + 'static {
        let name = self.config.name.clone();
        let global = &config.global_defs;
        let g = &self.config;
        let what = format!("vrrp_sync_group {name}");
        let scripts = [
            &g.notify_master,
            &g.notify_backup,
            &g.notify_fault,
            &g.notify_stop,
            &g.notify,
        ];
        let scripts = notify_scripts(scripts, global, &what);
        let notifier = (scripts.iter().next().is_some() || !fifos.is_empty()).then(|| {
            Notifier::spawn(NotifyConfig {
                kind: NotifyKind::Group,
                name: name.clone(),
                scripts,
                timeout: NOTIFY_TIMEOUT,
                fifos: fifos.to_vec(),
            })
        });
        let mut group = SyncGroup::new(name, self.members.iter().map(|m| m.name.clone()));
        if self.owners || resumed_master {
            group = group.starting_master();
        }
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
        let commands = group.member_report(
            i,
            report.state,
            report.wants_master,
            report.lower_priority_received,
        );
        for command in commands {
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
                SyncCommand::LowerPriorityGarp { member } => {
                    let _ = outputs[member].1.send(SyncRequest::LowerPriorityGarp);
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

    /// The units a reload from `old` to `new` stops and starts.
    fn reload_changes(old: &str, new: &str) -> Changes {
        let (old, new) = (load(old), load(new));
        let (old, new) = (plan(&old), plan(&new));
        let old: Vec<_> = old.iter().map(|p| (p.key.as_str(), &p.spec)).collect();
        let new: Vec<_> = new.iter().map(|p| (p.key.as_str(), &p.spec)).collect();
        changes(&old, &new)
    }

    /// The `instance`s of `list` (name, priority, extra lines).
    fn instances(list: &[(&str, u8, &str)]) -> String {
        list.iter()
            .map(|(n, p, body)| instance(n, *p, body))
            .collect()
    }

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("vrrp_instance {n}")).collect()
    }

    #[test]
    fn a_reload_stops_and_starts_only_what_changed() {
        let old = instances(&[("VI_1", 100, ""), ("VI_2", 101, ""), ("VI_4", 104, "")]);
        let new = instances(&[
            ("VI_1", 100, ""),
            ("VI_2", 101, " virtual_ipaddress { 10.0.1.1 }\n"),
            ("VI_3", 103, ""),
        ]);
        assert_eq!(
            reload_changes(&old, &new),
            Changes {
                stop: keys(&["VI_2", "VI_4"]),
                start: keys(&["VI_2", "VI_3"]),
            }
        );
        assert_eq!(reload_changes(&old, &old), Changes::default());
    }

    #[test]
    fn a_reload_restarts_the_instances_tracking_a_changed_script_only() {
        let instances = instances(&[
            ("VI_1", 100, " track_script { chk }\n"),
            ("VI_2", 101, " track_file { tf }\n"),
            ("VI_3", 102, ""),
        ]);
        let old = format!("{SCRIPTS}{instances}");
        let changed_script = SCRIPTS.replace("weight -20", "weight -30");
        assert_eq!(
            reload_changes(&old, &format!("{changed_script}{instances}")),
            Changes {
                stop: keys(&["VI_1"]),
                start: keys(&["VI_1"]),
            }
        );
        // `other` is tracked by nobody; the file by VI_2 only.
        let unrelated = SCRIPTS
            .replace("weight 0", "weight 5")
            .replace("weight 7", "weight 8");
        assert_eq!(
            reload_changes(&old, &format!("{unrelated}{instances}")),
            Changes {
                stop: keys(&["VI_2"]),
                start: keys(&["VI_2"]),
            }
        );
    }

    #[test]
    fn a_reload_restarts_everything_only_for_the_global_keys_vrrp_uses() {
        let instances = instances(&[("VI_1", 100, ""), ("VI_2", 101, "")]);
        let global = |body: &str| format!("global_defs {{\n{body}}}\n{instances}");
        assert_eq!(
            reload_changes(&global(" router_id a\n"), &global(" router_id b\n")),
            Changes::default()
        );
        assert_eq!(
            reload_changes(&instances, &global(" vrrp_garp_interval 0.5\n")),
            Changes {
                stop: keys(&["VI_1", "VI_2"]),
                start: keys(&["VI_1", "VI_2"]),
            }
        );
    }

    #[test]
    fn a_sync_group_restarts_as_a_whole() {
        let instances = instances(&[("VI_1", 100, ""), ("VI_2", 101, ""), ("VI_3", 102, "")]);
        let group = |members: &str| {
            format!("{instances}vrrp_sync_group G {{\n group {{ {members} }}\n}}\n")
        };
        let g = "vrrp_sync_group G".to_owned();
        let old = group("VI_1 VI_2");
        assert_eq!(reload_changes(&old, &old), Changes::default());
        // VI_3 joins: the group restarts with it; VI_3 alone stops.
        assert_eq!(
            reload_changes(&old, &group("VI_1 VI_2 VI_3")),
            Changes {
                stop: vec![g.clone(), "vrrp_instance VI_3".to_owned()],
                start: vec![g.clone()],
            }
        );
        // A member's change restarts the group, not the instance outside it.
        let changed = group("VI_1 VI_2").replace("priority 101", "priority 99");
        assert_eq!(
            reload_changes(&old, &changed),
            Changes {
                stop: vec![g.clone()],
                start: vec![g],
            }
        );
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_last_input_first() {
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let (joins, joins_rx) = mpsc::unbounded_channel();
        tokio::spawn(fan_out(inputs, joins_rx));
        let input = |up| TrackInput::Interface {
            name: "eth1".to_owned(),
            up,
        };
        let (early_tx, mut early) = mpsc::unbounded_channel();
        joins.send(early_tx).expect("fan-out runs");
        inputs_tx.send(input(false)).expect("fan-out runs");
        assert_eq!(early.recv().await, Some(input(false)));
        let (late_tx, mut late) = mpsc::unbounded_channel();
        joins.send(late_tx).expect("fan-out runs");
        assert_eq!(late.recv().await, Some(input(false)), "the replay");
        inputs_tx.send(input(true)).expect("fan-out runs");
        assert_eq!(early.recv().await, Some(input(true)));
        assert_eq!(late.recv().await, Some(input(true)));
        // A subscriber that left is dropped; the others keep getting inputs.
        drop(early);
        inputs_tx.send(input(false)).expect("fan-out runs");
        assert_eq!(late.recv().await, Some(input(false)));
    }

    #[test]
    fn a_master_restarts_quietly_unless_its_interface_or_router_id_changes() {
        let text = |interface: &str, vrid: u8, priority: u8, vips: &str| {
            format!(
                "vrrp_instance VI_1 {{\n interface {interface}\n virtual_router_id {vrid}\n priority {priority}\n virtual_ipaddress {{\n{vips}\n}}\n}}\n"
            )
        };
        let old = load(&text("eth0", 1, 100, "10.0.0.100"));
        let quietly = |new: String| {
            let new = load(&new);
            can_restart_quietly(&plan(&old)[0].spec, &plan(&new)[0].spec)
        };
        // Other addresses or priorities: quietly (the addresses are diffed).
        assert!(quietly(text("eth0", 1, 90, "10.0.0.100")));
        assert!(quietly(text("eth0", 1, 100, "10.0.0.100\n10.0.0.7")));
        assert!(quietly(text("eth0", 1, 100, "10.0.0.7")));
        // Another interface or router id: the old one must resign.
        assert!(!quietly(text("eth1", 1, 100, "10.0.0.100")));
        // Whether the addresses stay decides for groups whose members are not all MASTER.
        let keeps = |new: String| keeps_addresses(&plan(&old)[0].spec, &plan(&load(&new))[0].spec);
        assert!(keeps(text("eth0", 1, 90, "10.0.0.100\n10.0.0.7")));
        assert!(!keeps(text("eth0", 1, 100, "10.0.0.7")));
        assert!(!quietly(text("eth0", 2, 100, "10.0.0.100")));
    }

    #[test]
    fn a_resumed_instance_notifies_only_what_differs_from_before() {
        let state = |state| Notification::State {
            state,
            priority: 100,
        };
        let priority = Notification::Priority {
            state: State::Backup,
            priority: 90,
        };
        // A master back to MASTER: nothing; later transitions pass.
        let mut master = Resumed::new(State::Master);
        assert_eq!(master.filter(state(State::Backup)), (vec![], false));
        assert_eq!(master.filter(priority), (vec![priority], false));
        assert_eq!(master.filter(state(State::Master)), (vec![], true));
        // A master that faults instead: the held BACKUP, then FAULT.
        let mut faulted = Resumed::new(State::Master);
        assert_eq!(faulted.filter(state(State::Backup)), (vec![], false));
        assert_eq!(
            faulted.filter(state(State::Fault)),
            (vec![state(State::Backup), state(State::Fault)], true)
        );
        // A backup back to BACKUP: nothing.
        let mut backup = Resumed::new(State::Backup);
        assert_eq!(backup.filter(state(State::Backup)), (vec![], true));
        // One that goes elsewhere at once: notified.
        let mut other = Resumed::new(State::Backup);
        assert_eq!(
            other.filter(state(State::Fault)),
            (vec![state(State::Fault)], true)
        );
    }

    #[test]
    fn only_a_group_of_owners_with_state_master_starts_master() {
        let owner = |name: &str, vrid: u8, priority: u8| {
            format!(
                "vrrp_instance {name} {{\n state MASTER\n interface eth0\n virtual_router_id {vrid}\n priority {priority}\n virtual_ipaddress {{ 10.0.0.{vrid} }}\n}}\n"
            )
        };
        let group = "vrrp_sync_group G {\n group { VI_1 VI_2 }\n}\n";
        for (second, expected) in [(255, true), (200, false)] {
            let text = format!(
                "{}{}{}{group}",
                owner("VI_1", 1, 255),
                owner("VI_2", 2, second),
                owner("VI_3", 3, 255),
            );
            let config = load(&text);
            let flags: Vec<(&str, bool)> = plan(&config)
                .iter()
                .flat_map(|unit| &unit.members)
                .map(|(i, (engine, _))| (i.name.as_str(), engine.sync_group_owners))
                .collect();
            // VI_3 is an owner outside any group: not concerned.
            assert_eq!(
                flags,
                [("VI_1", expected), ("VI_2", expected), ("VI_3", false)],
                "second member priority {second}"
            );
            let groups: Vec<bool> = plan(&config)
                .iter()
                .filter_map(|unit| unit.group.as_ref().map(|g| g.owners))
                .collect();
            assert_eq!(groups, [expected]);
        }
    }

    #[test]
    fn notify_master_rx_lower_pri_runs_as_configured() {
        let text = format!(
            "{}{}",
            instance(
                "VI_1",
                100,
                " notify_master_rx_lower_pri \"/bin/echo lower 'two words'\"\n"
            ),
            instance("VI_2", 101, ""),
        );
        let config = load(&text);
        let global = &config.global_defs;
        let script_of = |i: &VrrpInstance| instance_notify_scripts(i, global).master_rx_lower_pri;
        let script = script_of(&config.vrrp_instance[0]).expect("VI_1's script");
        assert_eq!(script.argv, ["/bin/echo", "lower", "two words"]);
        assert_eq!(script.uid, None);
        assert_eq!(script_of(&config.vrrp_instance[1]), None);
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
