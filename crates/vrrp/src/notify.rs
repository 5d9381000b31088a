//! State-change notifications as keepalived 2.2.7 sends them (`vrrp_notify.c`), without
//! its races (keepalived issues #996, #584, #2389: notify scripts started concurrently
//! finish out of order).
//!
//! - [`Notifier`]: one per instance (or sync group). On every
//!   [`Action::StateChanged`] it queues the transition; a single worker task runs, per
//!   transition and strictly in transition order, the state's script (`notify_master`,
//!   `notify_backup`, `notify_fault`, `notify_stop`, which get no extra arguments) and
//!   then the generic `notify` script with `INSTANCE|GROUP name MASTER|BACKUP|FAULT|STOP
//!   priority` appended. Never two scripts of one notifier at once; each is bounded by a
//!   timeout (its process group is killed). The FIFO line is written when the transition
//!   is queued, so FIFO readers never wait on scripts. A master that receives a
//!   lower-priority advertisement ([`Action::MasterReceivedLowerPriority`]) queues its
//!   `notify_master_rx_lower_pri` script (no extra arguments) the same way, between the
//!   transitions around it, with a `MASTER_RX_LOWER_PRI` FIFO line (keepalived's
//!   `send_event_notify`). Unlike the transitions, these runs are coalesced: while one
//!   is still waiting behind the last queued job, further adverts only write their FIFO
//!   line. keepalived forks the script for every advert; queued one per advert here, a
//!   cut-off backup advertising every second and a script that takes seconds would grow
//!   the queue for as long as the partition lasts and hold a later `notify_backup` or
//!   `notify_fault` back by minutes. Coalesced, the script still runs after the last
//!   advert (at most one run waits while another runs) and transitions wait behind at
//!   most that one.
//! - [`FifoWriter`]: `notify_fifo` / `vrrp_notify_fifo`, one line per event in keepalived's
//!   format ([`fifo_line`]): `INSTANCE "VI_1" MASTER 100`; [`FifoScript`]: its
//!   `notify_fifo_script`, started once with the FIFO's path.
//! - [`check_script_security`]: `enable_script_security`: keepalived's rule, shared with
//!   the health checks and `check-config` (`keeplb_script`); refuses a script that a
//!   non-root user could modify, naming the file or directory at fault (keepalived just
//!   disables such scripts with a terse log line, issues #742, #842, #1372).
//!
//! State names: [`State::Initialize`] as a target is keepalived's STOP (the instance was
//! shut down). A group's priority is always 0 (keepalived).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::event::{Action, State};
use crate::track::{ScriptCommand, run_command};
use keeplb_script::spawn_in_group;
pub use keeplb_script::{FifoWriter, ScriptSecurityError, check_script_security};

/// keepalived's name for a state in notifications: INIT as a target means STOP.
pub const fn notify_state_name(state: State) -> &'static str {
    match state {
        State::Initialize => "STOP",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    }
}

/// Whether a notification is about a `vrrp_instance` or a `vrrp_sync_group`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotifyKind {
    Instance,
    Group,
}

impl NotifyKind {
    pub const fn keyword(self) -> &'static str {
        match self {
            NotifyKind::Instance => "INSTANCE",
            NotifyKind::Group => "GROUP",
        }
    }
}

impl fmt::Display for NotifyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// One FIFO line, newline included: `INSTANCE "name" MASTER 100\n`. `state` is a
/// [`notify_state_name`] or one of keepalived's events (`MASTER_RX_LOWER_PRI`,
/// `MASTER_PRIORITY`, `BACKUP_PRIORITY`).
pub fn fifo_line(kind: NotifyKind, name: &str, state: &str, priority: u8) -> String {
    format!("{} \"{}\" {} {}\n", kind.keyword(), name, state, priority)
}

/// The arguments the generic `notify` script gets after its own.
pub fn notify_args(kind: NotifyKind, name: &str, state: State, priority: u8) -> [String; 4] {
    [
        kind.keyword().to_owned(),
        name.to_owned(),
        notify_state_name(state).to_owned(),
        priority.to_string(),
    ]
}

/// The notify scripts of one instance or sync group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyScripts {
    pub master: Option<ScriptCommand>,
    pub backup: Option<ScriptCommand>,
    pub fault: Option<ScriptCommand>,
    pub stop: Option<ScriptCommand>,
    /// Generic `notify`: gets `INSTANCE|GROUP name STATE priority` appended.
    pub notify: Option<ScriptCommand>,
    /// `notify_master_rx_lower_pri` (instances only): run as it is each time the master
    /// receives a lower-priority advertisement, e.g. to take back cloud-assigned
    /// addresses that a backup, cut off for a while, grabbed when it became master.
    pub master_rx_lower_pri: Option<ScriptCommand>,
}

impl NotifyScripts {
    /// The state-specific script for a transition to `state`.
    pub fn for_state(&self, state: State) -> Option<&ScriptCommand> {
        match state {
            State::Master => self.master.as_ref(),
            State::Backup => self.backup.as_ref(),
            State::Fault => self.fault.as_ref(),
            State::Initialize => self.stop.as_ref(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ScriptCommand> {
        [
            &self.master,
            &self.backup,
            &self.fault,
            &self.stop,
            &self.notify,
            &self.master_rx_lower_pri,
        ]
        .into_iter()
        .flatten()
    }

    /// `enable_script_security`: every script must pass [`check_script_security`].
    pub fn check_security(&self) -> Result<(), ScriptSecurityError> {
        self.iter().try_for_each(check_script_security)
    }

    /// The commands to run, in order, for a transition to `state`.
    pub fn commands(
        &self,
        kind: NotifyKind,
        name: &str,
        state: State,
        priority: u8,
    ) -> Vec<ScriptCommand> {
        let mut out = Vec::new();
        if let Some(s) = self.for_state(state) {
            out.push(s.clone());
        }
        if let Some(n) = &self.notify {
            out.push(n.with_args(notify_args(kind, name, state, priority)));
        }
        out
    }
}

/// A `notify_fifo_script` / `vrrp_notify_fifo_script`: keepalived starts it once with
/// the FIFO's path as its last argument, with no time limit, and lets it run (a reader
/// of the FIFO); it is not restarted when it ends. At shutdown keepalived sends SIGTERM
/// to it first, before the instances resign ([`FifoScript::stop`]).
#[derive(Debug)]
pub struct FifoScript {
    command: String,
    pgid: Pid,
    reaped: Arc<AtomicBool>,
    wait: JoinHandle<()>,
}

impl FifoScript {
    /// Starts `cmd` with `fifo` appended (needs a tokio runtime).
    pub fn spawn(cmd: &ScriptCommand, fifo: &Path) -> io::Result<Self> {
        let cmd = cmd.with_args([fifo.display().to_string()]);
        let (mut child, pid) = spawn_in_group(&cmd)?;
        let command = cmd.to_string();
        let reaped = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&reaped);
        let logged = command.clone();
        let wait = tokio::task::spawn_blocking(move || {
            let status = child.wait();
            done.store(true, Ordering::SeqCst);
            match status {
                Ok(status) => {
                    let outcome = keeplb_script::RunOutcome::from_status(status);
                    tracing::info!(command = %logged, %outcome, "notify fifo script terminated");
                }
                Err(error) => {
                    tracing::warn!(command = %logged, %error, "waiting for notify fifo script")
                }
            }
        });
        Ok(FifoScript {
            command,
            pgid: Pid::from_raw(pid),
            reaped,
            wait,
        })
    }

    /// SIGTERM to the script's process group, as keepalived's shutdown does; SIGKILL if
    /// it is still there after `grace`.
    pub async fn stop(self, grace: Duration) {
        let mut wait = self.wait;
        if !self.reaped.load(Ordering::SeqCst) {
            let _ = killpg(self.pgid, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, &mut wait).await.is_err() {
            tracing::warn!(command = %self.command, "notify fifo script ignores SIGTERM; killing it");
            if !self.reaped.load(Ordering::SeqCst) {
                let _ = killpg(self.pgid, Signal::SIGKILL);
            }
            let _ = wait.await;
        }
    }
}

/// What a [`Notifier`] notifies about, and how.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub kind: NotifyKind,
    /// The instance's (or group's) name.
    pub name: String,
    pub scripts: NotifyScripts,
    /// Each script's time limit.
    pub timeout: Duration,
    /// `notify_fifo` / `vrrp_notify_fifo` (one writer per FIFO, shared).
    pub fifos: Vec<Arc<FifoWriter>>,
}

/// What the worker runs the scripts of, in the order queued.
#[derive(Debug)]
enum Job {
    /// A transition to `state`.
    State { state: State, priority: u8 },
    /// `MASTER_RX_LOWER_PRI`; the number is the job's [`RxLowerCoalescer`] ticket.
    MasterRxLowerPri(u64),
}

/// Keeps at most one `notify_master_rx_lower_pri` run waiting at the tail of the queue.
/// Each such job gets a ticket; `tail` holds the ticket of the one that later adverts
/// may merge into, or [`RxLowerCoalescer::NONE`]. The worker clears it when it takes
/// that job (so an advert during the run queues one more), and a transition clears it
/// (so an advert after the transition runs the script after the transition's scripts,
/// not before).
#[derive(Debug, Default)]
struct RxLowerCoalescer {
    tail: AtomicU64,
    last_ticket: AtomicU64,
}

impl RxLowerCoalescer {
    const NONE: u64 = 0;

    /// A ticket for a new job, or `None` when a waiting job already covers this advert.
    fn ticket(&self) -> Option<u64> {
        let ticket = self.last_ticket.fetch_add(1, Ordering::Relaxed) + 1;
        self.tail
            .compare_exchange(Self::NONE, ticket, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ticket)
    }

    /// The worker took the job with `ticket`: it no longer absorbs adverts.
    fn taken(&self, ticket: u64) {
        let _ = self
            .tail
            .compare_exchange(ticket, Self::NONE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A transition was queued behind the waiting job, if any.
    fn transition_queued(&self) {
        self.tail.store(Self::NONE, Ordering::Release);
    }
}

impl Job {
    fn commands(
        &self,
        scripts: &NotifyScripts,
        kind: NotifyKind,
        name: &str,
    ) -> Vec<ScriptCommand> {
        match *self {
            Job::State { state, priority } => scripts.commands(kind, name, state, priority),
            Job::MasterRxLowerPri(_) => scripts.master_rx_lower_pri.iter().cloned().collect(),
        }
    }
}

/// Runs one instance's notifications in transition order (see the module docs).
#[derive(Debug)]
pub struct Notifier {
    kind: NotifyKind,
    name: String,
    fifos: Vec<Arc<FifoWriter>>,
    /// Whether `notify_master_rx_lower_pri` is configured (else adverts queue nothing).
    has_rx_lower_script: bool,
    rx_lower: Arc<RxLowerCoalescer>,
    tx: mpsc::UnboundedSender<Job>,
    worker: JoinHandle<()>,
}

impl Notifier {
    /// Starts the worker task (needs a tokio runtime).
    pub fn spawn(config: NotifyConfig) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let NotifyConfig {
            kind,
            name,
            scripts,
            timeout,
            fifos,
        } = config;
        let worker_name = name.clone();
        let has_rx_lower_script = scripts.master_rx_lower_pri.is_some();
        let rx_lower = Arc::new(RxLowerCoalescer::default());
        let worker_rx_lower = Arc::clone(&rx_lower);
        let worker = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                if let Job::MasterRxLowerPri(ticket) = job {
                    worker_rx_lower.taken(ticket);
                }
                for cmd in job.commands(&scripts, kind, &worker_name) {
                    match run_command(&cmd, timeout).await {
                        Ok(outcome) if outcome.success() => {
                            tracing::debug!(instance = %worker_name, command = %cmd, "notify script succeeded");
                        }
                        Ok(outcome) => {
                            tracing::warn!(instance = %worker_name, command = %cmd, %outcome, "notify script");
                        }
                        Err(error) => {
                            tracing::warn!(instance = %worker_name, command = %cmd, %error, "notify script cannot be started");
                        }
                    }
                }
            }
        });
        Self {
            kind,
            name,
            fifos,
            has_rx_lower_script,
            rx_lower,
            tx,
            worker,
        }
    }

    /// Queues the notifications for a transition to `to`; `priority` is the effective
    /// priority now. Writes the FIFO line at once.
    pub fn state_changed(&self, to: State, priority: u8) {
        let priority = if self.kind == NotifyKind::Group {
            0
        } else {
            priority
        };
        let line = fifo_line(self.kind, &self.name, notify_state_name(to), priority);
        for fifo in &self.fifos {
            fifo.send(&line);
        }
        let _ = self.tx.send(Job::State {
            state: to,
            priority,
        });
        self.rx_lower.transition_queued();
    }

    /// The master received a lower-priority advertisement; `priority` is its effective
    /// priority. Writes the `MASTER_RX_LOWER_PRI` FIFO line at once and queues
    /// `notify_master_rx_lower_pri` behind the scripts already queued, unless a run
    /// queued for an earlier advert is still waiting last in the queue (see the module
    /// docs).
    pub fn master_rx_lower_priority(&self, priority: u8) {
        self.fifo_event("MASTER_RX_LOWER_PRI", priority);
        if !self.has_rx_lower_script {
            return;
        }
        match self.rx_lower.ticket() {
            Some(ticket) => {
                let _ = self.tx.send(Job::MasterRxLowerPri(ticket));
            }
            None => {
                tracing::trace!(instance = %self.name, "notify_master_rx_lower_pri already queued");
            }
        }
    }

    /// [`Notifier::state_changed`] for an [`Action::StateChanged`],
    /// [`Notifier::master_rx_lower_priority`] for an
    /// [`Action::MasterReceivedLowerPriority`]; other actions are ignored. Returns
    /// whether the action was notified.
    pub fn on_action(&self, action: &Action, priority: u8) -> bool {
        match action {
            Action::StateChanged { to, .. } => {
                self.state_changed(*to, priority);
                true
            }
            Action::MasterReceivedLowerPriority { .. } => {
                self.master_rx_lower_priority(priority);
                true
            }
            _ => false,
        }
    }

    /// A FIFO-only event (`MASTER_PRIORITY`, `BACKUP_PRIORITY`).
    pub fn fifo_event(&self, event: &str, priority: u8) {
        let line = fifo_line(self.kind, &self.name, event, priority);
        for fifo in &self.fifos {
            fifo.send(&line);
        }
    }

    /// Stops accepting transitions and waits until every queued script has run (so
    /// `notify_stop` finishes before keeplb exits).
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.worker.await;
    }
}

#[cfg(test)]
mod tests {
    use super::RxLowerCoalescer;

    #[test]
    fn one_waiting_rx_lower_job_absorbs_adverts_until_taken_or_passed() {
        let coalescer = RxLowerCoalescer::default();
        let first = coalescer.ticket().expect("nothing waits: a job is queued");
        assert_eq!(
            coalescer.ticket(),
            None,
            "the waiting job covers this advert"
        );
        coalescer.taken(first);
        let second = coalescer
            .ticket()
            .expect("the first one runs: one more waits");
        assert_ne!(second, first);
        assert_eq!(coalescer.ticket(), None);
        // Taking an older job does not release the one waiting now.
        coalescer.taken(first);
        assert_eq!(coalescer.ticket(), None);
        // A transition behind it does: the next advert queues behind the transition.
        coalescer.transition_queued();
        let third = coalescer.ticket().expect("queued after the transition");
        coalescer.taken(second);
        assert_eq!(coalescer.ticket(), None, "the third job still waits");
        coalescer.taken(third);
        assert!(coalescer.ticket().is_some());
    }
}
