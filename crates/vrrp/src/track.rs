//! Tracking: `vrrp_script`, `track_file` and `track_interface`, with keepalived 2.2.7's
//! semantics, turned into the effective priority and FAULT switch of one instance.
//!
//! # Layers
//!
//! - Pure core, no processes and no clock:
//!   - [`ScriptState`]: one `vrrp_script`'s rise/fall counter ([`ScriptState::record`]).
//!   - [`Tracker`]: one instance's tracked objects with their weights; folds
//!     [`TrackInput`]s and computes [`TrackingUpdate`] (effective priority, fault).
//!   - [`Weight`], [`split_command`], [`parse_track_file`].
//! - A small tokio runner:
//!   - [`run_command`]: runs one script (own process group, optional uid/gid, timeout,
//!     killed with its group when it times out or the future is dropped).
//!   - [`run_script_checker`]: runs a `vrrp_script` every `interval` and sends
//!     [`TrackInput::Script`] on every status change to each subscribed instance.
//!   - [`run_file_tracker`]: polls a `track_file` and sends [`TrackInput::File`].
//!   - [`run_tracker`]: one instance's tracking task: [`TrackInput`]s in,
//!     [`TrackingUpdate`]s out (first the initial one, then one per change). The I/O
//!     layer feeds interface state as [`TrackInput::Interface`] into the same channel and
//!     turns updates into events with [`TrackingUpdate::events_since`].
//!
//! # keepalived semantics reproduced
//!
//! - Script result: exit status 0 is success; any other status, death by a signal, a
//!   failure to start and a timeout (the process group is killed) are failures.
//! - rise/fall (`vrrp_scheduler.c`): a failed script becomes OK after `rise` consecutive
//!   successes, an OK script fails after `fall` consecutive failures. Before its first
//!   result a script is *unknown* and its very first result decides at once, whatever
//!   rise/fall say. `init_fail` starts it as failed instead of unknown.
//! - Weights (`vrrp_track.c`), with `m` = −1 for `reverse`, else 1: a script (or tracked
//!   interface) with weight `w > 0` adds `w·m` while OK (up); with `w < 0` it adds `w·m`
//!   while failed (down); an unknown script adds nothing. Weight 0: FAULT while failed
//!   (down).
//! - track_file: the integer in the file (0 if absent or unreadable, as `strtol` gives)
//!   times `w·m` is added; with weight 0 a non-zero value means FAULT; a product below
//!   −253 also means FAULT.
//! - Effective priority = base + sum, clamped to 1..=254; the address owner (base 255)
//!   keeps 255 and ignores weights (weight-0 faults still apply).
//!
//! Deliberate differences: keepalived keeps an instance in INIT while a weight-0 script is
//! still unknown; here it is not a fault ([`Tracker::is_initialising`] tells the driver).
//! keepalived watches track files with inotify; [`run_file_tracker`] polls.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::event::Event;

pub use keeplb_script::{
    CommandError, RunOutcome, ScriptCommand, init_track_file, parse_track_file, read_track_file,
    run_command, split_command,
};

/// The priority of the address owner, which tracking weights never change.
pub const OWNER_PRIORITY: u8 = 255;

/// keepalived: a track_file product below this puts the instance in FAULT.
pub const TRACK_FILE_FAULT_BELOW: i64 = -253;

/// A tracking weight as configured (`weight W [reverse]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Weight {
    pub weight: i32,
    pub reverse: bool,
}

impl Weight {
    pub const fn new(weight: i32, reverse: bool) -> Self {
        Self { weight, reverse }
    }

    /// Weight 0: the tracked object causes FAULT instead of changing the priority.
    pub const fn is_fault_only(self) -> bool {
        self.weight == 0
    }

    const fn signed(self) -> i64 {
        let w = self.weight as i64;
        if self.reverse { -w } else { w }
    }

    /// What a binary object (script, interface) adds to the priority: `Some(true)` = OK /
    /// up, `Some(false)` = failed / down, `None` = not known yet (adds nothing).
    pub const fn contribution(self, ok: Option<bool>) -> i64 {
        match ok {
            Some(true) if self.weight > 0 => self.signed(),
            Some(false) if self.weight < 0 => self.signed(),
            _ => 0,
        }
    }

    /// What a track_file value adds to the priority.
    pub const fn file_contribution(self, value: i64) -> i64 {
        value.saturating_mul(self.signed())
    }
}

/// The status of a `vrrp_script`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptStatus {
    /// No result yet (and no `init_fail`).
    Unknown,
    Ok,
    Failed,
}

impl ScriptStatus {
    /// `Some(true)` for OK, `Some(false)` for failed, `None` for unknown.
    pub const fn as_ok(self) -> Option<bool> {
        match self {
            ScriptStatus::Unknown => None,
            ScriptStatus::Ok => Some(true),
            ScriptStatus::Failed => Some(false),
        }
    }
}

impl fmt::Display for ScriptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScriptStatus::Unknown => "unknown",
            ScriptStatus::Ok => "ok",
            ScriptStatus::Failed => "failed",
        })
    }
}

/// The rise/fall counter of one `vrrp_script`, as keepalived keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptState {
    rise: u32,
    fall: u32,
    /// keepalived's `result`: OK when `>= rise`, range `0..=rise+fall-1`.
    result: u32,
    status: ScriptStatus,
}

impl ScriptState {
    /// `rise`/`fall` below 1 are taken as 1 (keepalived's default and minimum).
    pub fn new(rise: u32, fall: u32, init_fail: bool) -> Self {
        let rise = rise.max(1);
        let fall = fall.max(1);
        if init_fail {
            Self {
                rise,
                fall,
                result: 0,
                status: ScriptStatus::Failed,
            }
        } else {
            Self {
                rise,
                fall,
                result: rise - 1,
                status: ScriptStatus::Unknown,
            }
        }
    }

    pub fn status(&self) -> ScriptStatus {
        self.status
    }

    fn max(&self) -> u32 {
        self.rise + self.fall - 1
    }

    /// Counts one run's result; returns the new status when it changed.
    pub fn record(&mut self, success: bool) -> Option<ScriptStatus> {
        let before = self.status;
        if success {
            if self.status != ScriptStatus::Unknown && self.result < self.rise - 1 {
                self.result += 1;
            } else {
                self.result = self.max();
                self.status = ScriptStatus::Ok;
            }
        } else if self.status != ScriptStatus::Unknown && self.result > self.rise {
            self.result -= 1;
        } else {
            self.result = 0;
            self.status = ScriptStatus::Failed;
        }
        (self.status != before).then_some(self.status)
    }
}

/// What one instance's tracking currently asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackingUpdate {
    /// Base priority plus the applied weights, clamped to 1..=254 (255 for the owner).
    pub effective_priority: u8,
    /// Some weight-0 object failed (or a track_file is below −253): FAULT.
    pub fault: bool,
}

impl TrackingUpdate {
    /// The events that move the state machine from `previous` (`None`: nothing sent yet)
    /// to this update: [`Event::PriorityChanged`] and [`Event::ForceFault`] /
    /// [`Event::ClearFault`], only for what changed. The fault switch comes first when it
    /// is set, last when it is cleared, so a recovering instance starts with its new
    /// priority.
    pub fn events_since(&self, previous: Option<&TrackingUpdate>) -> Vec<Event> {
        let mut events = Vec::new();
        let fault_changed = previous.is_none_or(|p| p.fault != self.fault);
        if fault_changed && self.fault {
            events.push(Event::ForceFault);
        }
        if previous.is_none_or(|p| p.effective_priority != self.effective_priority) {
            events.push(Event::PriorityChanged(i32::from(self.effective_priority)));
        }
        if fault_changed && !self.fault && previous.is_some() {
            events.push(Event::ClearFault);
        }
        events
    }
}

/// An input to a [`Tracker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackInput {
    /// A `vrrp_script`'s status changed.
    Script { name: String, status: ScriptStatus },
    /// A `track_file`'s value (read again).
    File { name: String, value: i64 },
    /// A tracked interface went up or down (from the I/O layer's netlink view).
    Interface { name: String, up: bool },
}

#[derive(Clone, Debug)]
struct Binary {
    weight: Weight,
    ok: Option<bool>,
}

/// One instance's tracked objects and the priority they yield.
#[derive(Clone, Debug)]
pub struct Tracker {
    base_priority: u8,
    scripts: HashMap<String, Binary>,
    interfaces: HashMap<String, Binary>,
    files: HashMap<String, (Weight, i64)>,
}

impl Tracker {
    pub fn new(base_priority: u8) -> Self {
        Self {
            base_priority,
            scripts: HashMap::new(),
            interfaces: HashMap::new(),
            files: HashMap::new(),
        }
    }

    /// Tracks a `vrrp_script` with the instance's weight; `initial` is the script's
    /// status at startup ([`ScriptState::status`]: unknown, or failed with `init_fail`).
    pub fn track_script(
        &mut self,
        name: impl Into<String>,
        weight: Weight,
        initial: ScriptStatus,
    ) -> &mut Self {
        self.scripts.insert(
            name.into(),
            Binary {
                weight,
                ok: initial.as_ok(),
            },
        );
        self
    }

    /// Tracks an interface, assumed up until the I/O layer says otherwise.
    pub fn track_interface(&mut self, name: impl Into<String>, weight: Weight) -> &mut Self {
        self.interfaces.insert(
            name.into(),
            Binary {
                weight,
                ok: Some(true),
            },
        );
        self
    }

    /// Tracks a `track_file` whose current value is `value`.
    pub fn track_file(&mut self, name: impl Into<String>, weight: Weight, value: i64) -> &mut Self {
        self.files.insert(name.into(), (weight, value));
        self
    }

    /// Some weight-0 script has no result yet (keepalived holds such an instance in INIT).
    pub fn is_initialising(&self) -> bool {
        self.scripts
            .values()
            .any(|s| s.weight.is_fault_only() && s.ok.is_none())
    }

    /// Sum of the weights currently applied (unclamped, ignoring the owner rule).
    pub fn weight_sum(&self) -> i64 {
        let binary = self
            .scripts
            .values()
            .chain(self.interfaces.values())
            .map(|b| b.weight.contribution(b.ok));
        let files = self
            .files
            .values()
            .filter(|(w, _)| !w.is_fault_only())
            .map(|&(w, v)| w.file_contribution(v));
        binary.chain(files).fold(0i64, i64::saturating_add)
    }

    /// Whether tracking asks for FAULT.
    pub fn fault(&self) -> bool {
        let binary = self
            .scripts
            .values()
            .chain(self.interfaces.values())
            .any(|b| b.weight.is_fault_only() && b.ok == Some(false));
        let files = self.files.values().any(|&(w, v)| {
            if w.is_fault_only() {
                v != 0
            } else {
                w.file_contribution(v) < TRACK_FILE_FAULT_BELOW
            }
        });
        binary || files
    }

    pub fn effective_priority(&self) -> u8 {
        if self.base_priority == OWNER_PRIORITY {
            return OWNER_PRIORITY;
        }
        let p = i64::from(self.base_priority).saturating_add(self.weight_sum());
        // Clamped to 1..=254, so the conversion cannot fail.
        u8::try_from(p.clamp(1, 254)).unwrap_or(254)
    }

    pub fn current(&self) -> TrackingUpdate {
        TrackingUpdate {
            effective_priority: self.effective_priority(),
            fault: self.fault(),
        }
    }

    /// Applies one input; returns the new update if priority or fault changed. Inputs for
    /// objects this instance does not track are ignored.
    pub fn apply(&mut self, input: &TrackInput) -> Option<TrackingUpdate> {
        let before = self.current();
        match input {
            TrackInput::Script { name, status } => {
                if let Some(s) = self.scripts.get_mut(name) {
                    s.ok = status.as_ok();
                }
            }
            TrackInput::Interface { name, up } => {
                if let Some(i) = self.interfaces.get_mut(name) {
                    i.ok = Some(*up);
                }
            }
            TrackInput::File { name, value } => {
                if let Some(f) = self.files.get_mut(name) {
                    f.1 = *value;
                }
            }
        }
        let after = self.current();
        (after != before).then_some(after)
    }
}

/// A `vrrp_script` to run periodically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptSpec {
    pub name: String,
    pub command: ScriptCommand,
    /// keepalived default 1 s.
    pub interval: Duration,
    /// keepalived: 0 means the interval.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub init_fail: bool,
}

impl ScriptSpec {
    /// From keepalived's values in seconds (`timeout` 0 = `interval`; values below 1 s
    /// taken as 1 s, as keepalived does for 0).
    pub fn from_keepalived(
        name: impl Into<String>,
        command: ScriptCommand,
        interval_s: f64,
        timeout_s: f64,
        rise: u32,
        fall: u32,
        init_fail: bool,
    ) -> Self {
        let secs = |s: f64| Duration::from_secs_f64(if s.is_finite() { s.max(1.0) } else { 1.0 });
        let interval = secs(interval_s);
        let timeout = if timeout_s <= 0.0 {
            interval
        } else {
            secs(timeout_s)
        };
        Self {
            name: name.into(),
            command,
            interval,
            timeout,
            rise,
            fall,
            init_fail,
        }
    }

    /// The status before the first run.
    pub fn initial_status(&self) -> ScriptStatus {
        ScriptState::new(self.rise, self.fall, self.init_fail).status()
    }
}

/// Runs a `vrrp_script` forever (until every subscriber is gone): first run at once, then
/// one every `interval` from the previous start (delayed when a run takes longer). Sends
/// [`TrackInput::Script`] to each subscriber whenever the status changes.
pub async fn run_script_checker(
    spec: ScriptSpec,
    subscribers: Vec<mpsc::UnboundedSender<TrackInput>>,
) {
    let mut state = ScriptState::new(spec.rise, spec.fall, spec.init_fail);
    let mut ticks = tokio::time::interval(spec.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if subscribers.iter().all(mpsc::UnboundedSender::is_closed) {
            return;
        }
        let success = match run_command(&spec.command, spec.timeout).await {
            Ok(outcome) => {
                tracing::debug!(script = %spec.name, %outcome, "VRRP_Script run");
                outcome.success()
            }
            Err(error) => {
                tracing::warn!(script = %spec.name, command = %spec.command, %error, "VRRP_Script cannot be started");
                false
            }
        };
        if let Some(status) = state.record(success) {
            tracing::info!(script = %spec.name, %status, "VRRP_Script status changed");
            for s in &subscribers {
                let _ = s.send(TrackInput::Script {
                    name: spec.name.clone(),
                    status,
                });
            }
        }
    }
}

/// Polls a `track_file` every `poll` and sends [`TrackInput::File`] when its value
/// changes (and once at start), until every subscriber is gone.
pub async fn run_file_tracker(
    name: String,
    path: PathBuf,
    poll: Duration,
    subscribers: Vec<mpsc::UnboundedSender<TrackInput>>,
) {
    let mut last: Option<i64> = None;
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if subscribers.iter().all(mpsc::UnboundedSender::is_closed) {
            return;
        }
        let value = read_track_file(&path);
        if last != Some(value) {
            last = Some(value);
            for s in &subscribers {
                let _ = s.send(TrackInput::File {
                    name: name.clone(),
                    value,
                });
            }
        }
    }
}

/// One instance's tracking task: sends the initial [`TrackingUpdate`], then one per change
/// caused by an input; ends when every input sender is dropped or the output is closed.
pub async fn run_tracker(
    mut tracker: Tracker,
    mut inputs: mpsc::UnboundedReceiver<TrackInput>,
    output: mpsc::UnboundedSender<TrackingUpdate>,
) {
    if output.send(tracker.current()).is_err() {
        return;
    }
    while let Some(input) = inputs.recv().await {
        if let Some(update) = tracker.apply(&input)
            && output.send(update).is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_contributions() {
        let plus = Weight::new(10, false);
        assert_eq!(plus.contribution(Some(true)), 10);
        assert_eq!(plus.contribution(Some(false)), 0);
        assert_eq!(plus.contribution(None), 0);
        let minus = Weight::new(-10, false);
        assert_eq!(minus.contribution(Some(true)), 0);
        assert_eq!(minus.contribution(Some(false)), -10);
        let plus_rev = Weight::new(10, true);
        assert_eq!(plus_rev.contribution(Some(true)), -10);
        assert_eq!(plus_rev.contribution(Some(false)), 0);
        let minus_rev = Weight::new(-10, true);
        assert_eq!(minus_rev.contribution(Some(false)), 10);
        assert_eq!(Weight::new(3, true).file_contribution(5), -15);
    }
}
