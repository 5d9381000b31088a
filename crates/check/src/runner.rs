//! The I/O driver: runs due probes concurrently (bounded by a semaphore), feeds their
//! results to [`Health`], logs, runs notify scripts, and hands pool changes to the caller.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keeplb_config::model::{Config, GlobalDefs};
use keeplb_script::FifoWriter;
use keeplb_script::{init_track_file, read_track_file, run_command};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::action::{Action, VsIndex};
use crate::health::{CheckerId, Health, Probe};
use crate::outcome::{Outcome, Reason};
use crate::probe::{self, Probes, SpecProblem};

/// How often FILE_CHECK files are read (keepalived reacts to inotify at once).
const FILE_POLL: Duration = Duration::from_secs(1);

/// How the checks run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Probes in flight at most (each holds a socket or a process). Probes beyond wait
    /// for a slot; their timeouts start when they run. Keep it below RLIMIT_NOFILE.
    pub max_in_flight: usize,
    /// Where real server and virtual server state lines go: the `notify_fifo` and
    /// `lvs_notify_fifo` writers (shared with VRRP for `notify_fifo`).
    pub fifos: Vec<Arc<FifoWriter>>,
    /// Gets every probe's result and duration (for metrics), if set.
    pub reports: Option<mpsc::UnboundedSender<ProbeReport>>,
}

/// One probe's result, for metrics.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Which checker ran.
    pub checker: CheckerId,
    /// How it went.
    pub outcome: Outcome,
    /// From the start of the probe (after waiting for a slot) to its result.
    pub duration: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_in_flight: 4096,
            fifos: Vec::new(),
            reports: None,
        }
    }
}

/// Every health checker of a configuration, ready to run.
#[derive(Debug)]
pub struct Checks {
    health: Health,
    probes: Arc<Probes>,
    global: GlobalDefs,
    options: RunOptions,
    /// FILE_CHECKs and their files, with each file's last value.
    files: Vec<(CheckerId, PathBuf)>,
    file_values: HashMap<PathBuf, i64>,
    control: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
}

/// How running checks stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The daemon exits: every destination leaves its pool, `omega` scripts run.
    Exit,
    /// A new configuration takes over: the pools stay as they are.
    Reload,
}

/// What the rest of keeplb tells running checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `ha_suspend`: virtual server `vs`'s address came to (or left) this host.
    AddressPresent { vs: VsIndex, present: bool },
}

/// A small xorshift for warmup spreading (no cryptographic need).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Jitter(seed | 1)
    }

    /// A uniformly spread share of `max`.
    fn share(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
}

impl Checks {
    /// The checkers of `config`'s virtual servers, and what in their configuration cannot
    /// be used as written (to log as warnings).
    pub fn new(config: &Config, options: RunOptions) -> (Checks, Vec<SpecProblem>) {
        let (probes, problems) = Probes::new(config);
        let mut health = Health::new(config);
        let files = probes.files();
        // keepalived writes init_file values, then reads every tracked file before it
        // fills the pools.
        for track in &config.track_file {
            if let Some(init) = &track.init_file
                && files
                    .iter()
                    .any(|(_, path)| path.as_os_str() == track.file.as_str())
                && let Err(e) = init_track_file(Path::new(&track.file), init.value, init.overwrite)
            {
                tracing::warn!("cannot initialise track file {}: {e}", track.file);
            }
        }
        let mut file_values = HashMap::new();
        for (id, path) in &files {
            let value = read_track_file(path);
            health.set_initial_file_value(*id, value);
            file_values.insert(path.clone(), value);
        }
        let (control, control_rx) = mpsc::unbounded_channel();
        let checks = Checks {
            control,
            control_rx,
            health,
            probes: Arc::new(probes),
            global: config.global_defs.clone(),
            options,
            files,
            file_values,
        };
        (checks, problems)
    }

    /// A sender of [`Control`] messages to these checks once they run.
    pub fn controller(&self) -> mpsc::UnboundedSender<Control> {
        self.control.clone()
    }

    /// Runs until `shutdown` resolves: fills the pools, probes, and sends every pool change
    /// ([`Action::AddDest`], [`Action::RemoveDest`], [`Action::SetWeight`]) to `pool`, in
    /// the order to apply them. Logs and notify scripts are handled here. At shutdown,
    /// every destination is removed (and `omega` scripts run); returns the final state.
    pub async fn run(
        self,
        pool: mpsc::UnboundedSender<Action>,
        shutdown: impl Future<Output = ()>,
    ) -> Health {
        self.run_until(pool, async {
            shutdown.await;
            Stop::Exit
        })
        .await
    }

    /// Before running, on reload: carries over the previous checks' state (the
    /// [`Health`] their `run_until` returned); see [`Health::inherit`].
    pub fn inherit(&mut self, previous: &Health) {
        self.health.inherit(previous);
    }

    /// Like [`Checks::run`], until `stop` says how to stop: [`Stop::Exit`] empties the
    /// pools as `run` does; [`Stop::Reload`] only stops probing and leaves the pools as
    /// they are, for the next configuration's checks to take over.
    pub async fn run_until(
        mut self,
        pool: mpsc::UnboundedSender<Action>,
        stop: impl Future<Output = Stop>,
    ) -> Health {
        let mut scripts = JoinSet::new();
        let mut jitter = Jitter::new();
        let actions = self.health.start(Instant::now(), |max| jitter.share(max));
        self.dispatch(actions, &pool, &mut scripts);
        let limit = Arc::new(Semaphore::new(self.options.max_in_flight.max(1)));
        let mut running: JoinSet<(Probe, Outcome, Duration)> = JoinSet::new();
        let mut in_flight: HashMap<tokio::task::Id, Probe> = HashMap::new();
        tokio::pin!(stop);
        let mut file_poll = tokio::time::interval(FILE_POLL);
        file_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopping = loop {
            let next = self.health.next_due();
            tokio::select! {
                biased;
                how = &mut stop => break how,
                // Reap finished notify scripts as they end, so the set stays small.
                Some(_) = scripts.join_next(), if !scripts.is_empty() => {}
                Some(control) = self.control_rx.recv() => {
                    let actions = match control {
                        Control::AddressPresent { vs, present } => {
                            self.health.set_address_present(vs, present)
                        }
                    };
                    self.dispatch(actions, &pool, &mut scripts);
                }
                _ = file_poll.tick(), if !self.files.is_empty() => {
                    let actions = self.poll_files();
                    self.dispatch(actions, &pool, &mut scripts);
                }
                Some(joined) = running.join_next_with_id() => {
                    let (probe, outcome) = match joined {
                        Ok((id, (probe, outcome, duration))) => {
                            in_flight.remove(&id);
                            if let Some(reports) = &self.options.reports {
                                let _ = reports.send(ProbeReport {
                                    checker: probe.id,
                                    outcome: outcome.clone(),
                                    duration,
                                });
                            }
                            (probe, outcome)
                        }
                        Err(e) => {
                            let Some(probe) = in_flight.remove(&e.id()) else { continue };
                            (probe, Outcome::Down(Reason::Protocol(format!("probe failed: {e}"))))
                        }
                    };
                    let actions = self.health.on_outcome(Instant::now(), probe, outcome);
                    self.dispatch(actions, &pool, &mut scripts);
                }
                () = sleep_until(next) => {
                    for probe in self.health.take_due(Instant::now()) {
                        let probes = Arc::clone(&self.probes);
                        let limit = Arc::clone(&limit);
                        let handle = running.spawn(async move {
                            let _permit = limit.acquire_owned().await;
                            let started = Instant::now();
                            let outcome = match probes.get(probe.id) {
                                Some(spec) => probe::run(spec, probe.url).await,
                                None => Outcome::Down(Reason::Protocol("no such probe".into())),
                            };
                            (probe, outcome, started.elapsed())
                        });
                        in_flight.insert(handle.id(), probe);
                    }
                }
            }
        };
        // Dropping the probes kills their sockets and scripts' process groups.
        running.shutdown().await;
        if stopping == Stop::Reload {
            // Notify scripts of the old configuration run on to their end, as in
            // keepalived.
            scripts.detach_all();
            return self.health;
        }
        let actions = self.health.stop();
        self.dispatch(actions, &pool, &mut scripts);
        // Shutdown scripts have one second each; notify scripts still running are killed.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while scripts.join_next().await.is_some() {}
        })
        .await;
        self.health
    }

    /// Reads every tracked file; a changed value goes to its checkers.
    fn poll_files(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut changed = HashMap::new();
        for (_, path) in &self.files {
            if changed.contains_key(path) {
                continue;
            }
            let value = read_track_file(path);
            if self.file_values.get(path) != Some(&value) {
                changed.insert(path.clone(), value);
            }
        }
        for (id, path) in &self.files {
            if let Some(value) = changed.get(path) {
                actions.extend(self.health.on_file_value(*id, *value));
            }
        }
        self.file_values.extend(changed);
        actions
    }

    fn dispatch(
        &self,
        actions: Vec<Action>,
        pool: &mpsc::UnboundedSender<Action>,
        scripts: &mut JoinSet<()>,
    ) {
        for action in actions {
            match action {
                Action::Log { message, reason } => match reason {
                    Some(reason) => tracing::info!(%reason, "{message}"),
                    None => tracing::info!("{message}"),
                },
                Action::RunScript {
                    script, timeout, ..
                } => match probe::script_command(
                    &script.script,
                    script.user.as_deref(),
                    script.group.as_deref(),
                    &self.global,
                ) {
                    Ok(command) => {
                        scripts.spawn(async move {
                            let limit = timeout.unwrap_or(Duration::MAX);
                            if let Err(e) = run_command(&command, limit).await {
                                tracing::warn!("cannot run {}: {e}", command.program());
                            }
                        });
                    }
                    Err(e) => tracing::warn!("cannot run `{}`: {e}", script.script),
                },
                Action::NotifyFifo { line } => {
                    for fifo in &self.options.fifos {
                        fifo.send(&line);
                    }
                }
                change => {
                    // A closed channel means the caller is shutting down.
                    let _ = pool.send(change);
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
