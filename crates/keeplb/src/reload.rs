//! Reloading the configuration (SIGHUP, `keeplb reload`), as keepalived does on SIGHUP
//! but without its side effects: the new file is read and validated first; an invalid
//! one is reported with `file:line:column` and changes nothing. A valid one is applied
//! as a difference: virtual servers through [`crate::lvs_run::Director::reconcile`]
//! (unchanged services keep listeners, connections and persistence; health checks carry
//! their state over), VRRP untouched when its part of the configuration is unchanged.

use std::sync::Arc;
use std::time::Duration;

use keeplb_config::model;
use tokio::sync::{mpsc, oneshot};

use crate::ConfigArgs;
use crate::lvs_run::Reload;

/// How long a reload waits for the virtual servers to be reconciled before it answers
/// (the health checks of the old configuration finish what they are doing first).
const APPLY_WAIT: Duration = Duration::from_secs(30);

/// A reload to do, and where to say how it went.
#[derive(Debug)]
pub struct Request {
    pub reply: Option<oneshot::Sender<Result<(), ReloadError>>>,
}

/// Why a reload did not apply the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The file is invalid (its diagnostics): nothing changed.
    Rejected(String),
    /// The daemon is stopping: nothing changed.
    Stopping,
    /// The file was applied, but these parts of it could not be served (a virtual
    /// server whose port is taken, say), as keepalived applies the rest and logs them.
    PartlyApplied(Vec<String>),
    /// VRRP has the new file, but the virtual servers were still being reconciled when
    /// the wait ended ([`APPLY_WAIT`]); what they could not serve goes to the log.
    Pending,
}

/// Asks the running daemon to reload.
#[derive(Debug, Clone)]
pub struct Reloader(mpsc::UnboundedSender<Request>);

impl Reloader {
    /// Reloads and waits for the outcome.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let stopping = || ReloadError::Stopping;
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(Request { reply: Some(reply) })
            .map_err(|_| stopping())?;
        outcome.await.unwrap_or_else(|_| Err(stopping()))
    }
}

/// The channel reload requests travel on.
pub fn channel() -> (Reloader, mpsc::UnboundedReceiver<Request>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Reloader(tx), rx)
}

/// Serves reload requests (and SIGHUP) until `stopped`: each new valid configuration
/// goes to each part of the daemon ([`Parts`]).
pub async fn serve(
    args: ConfigArgs,
    started_with: Arc<model::Config>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    parts: Parts,
    stopped: impl std::future::Future<Output = ()>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::pin!(stopped);
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(e) => {
            tracing::error!("cannot handle SIGHUP: {e}");
            None
        }
    };
    loop {
        let request = tokio::select! {
            () = &mut stopped => return,
            Some(request) = requests.recv() => request,
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                tracing::info!("SIGHUP: reloading {}", args.file.display());
                Request { reply: None }
            }
        };
        crate::config_cmd::notify_systemd(&[sd_notify::NotifyState::Reloading]);
        let outcome = apply(&args, &started_with, &parts).await;
        crate::config_cmd::notify_systemd(&[sd_notify::NotifyState::Ready]);
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
    }
}

/// Where a new configuration goes: each part works out what changed for it (VRRP per
/// instance, the director per service, the sync daemon its settings), so each gets the
/// whole configuration.
pub struct Parts {
    pub virtual_servers: mpsc::UnboundedSender<Reload>,
    pub vrrp: mpsc::UnboundedSender<Arc<model::Config>>,
    pub sync: mpsc::UnboundedSender<Arc<model::Config>>,
}

/// Reads, validates and applies the configuration file again, and says what of it could
/// not be served.
async fn apply(
    args: &ConfigArgs,
    started_with: &model::Config,
    parts: &Parts,
) -> Result<(), ReloadError> {
    let loaded = crate::config_cmd::load(args, &args.file)
        .map_err(|e| ReloadError::Rejected(format!("{e:#}")))?;
    let diagnostics = crate::config_cmd::render_diagnostics(&loaded);
    if !loaded.is_valid() {
        tracing::error!(
            "reload: {} is invalid; the running configuration stays in force\n{diagnostics}",
            args.file.display()
        );
        return Err(ReloadError::Rejected(diagnostics));
    }
    if !diagnostics.is_empty() {
        tracing::warn!("reload: {}\n{diagnostics}", args.file.display());
    }
    let new = Arc::new(loaded.config);
    if crate::fifo_run::NotifyFifos::changed(&started_with.global_defs, &new.global_defs) {
        tracing::warn!(
            "reload: notify_fifo / vrrp_notify_fifo / lvs_notify_fifo changes apply at the next restart"
        );
    }
    if parts.vrrp.send(Arc::clone(&new)).is_err() && !new.vrrp_instance.is_empty() {
        // VRRP does not run (the configuration keeplb started with had no instance).
        tracing::warn!("reload: VRRP instances start at the next restart");
    }
    let _ = parts.sync.send(Arc::clone(&new));
    let (applied, mut failures) = oneshot::channel();
    let reload = Reload {
        config: new,
        applied: Some(applied),
    };
    if parts.virtual_servers.send(reload).is_err() {
        return Err(ReloadError::Stopping);
    }
    let failures = match tokio::time::timeout(APPLY_WAIT, &mut failures).await {
        Ok(Ok(failures)) => failures,
        Ok(Err(_)) => return Err(ReloadError::Stopping),
        Err(_) => {
            let file = args.file.display().to_string();
            tracing::warn!(
                "reload: {file}: the virtual servers are still being reconciled after {APPLY_WAIT:?}"
            );
            tokio::spawn(async move {
                if let Ok(failures) = failures.await {
                    for failure in failures {
                        tracing::error!("reload: {file}: {failure}");
                    }
                }
            });
            return Err(ReloadError::Pending);
        }
    };
    if !failures.is_empty() {
        tracing::error!("reload: {} applied in part", args.file.display());
        return Err(ReloadError::PartlyApplied(failures));
    }
    tracing::info!("reload: {} applied", args.file.display());
    Ok(())
}
