//! Reloading the configuration (SIGHUP, `keeplb reload`), as keepalived does on SIGHUP
//! but without its side effects: the new file is read and validated first; an invalid
//! one is reported with `file:line:column` and changes nothing. A valid one is applied
//! as a difference: virtual servers through [`crate::lvs_run::Director::reconcile`]
//! (unchanged services keep listeners, connections and persistence; health checks carry
//! their state over), VRRP untouched when its part of the configuration is unchanged.

use std::sync::Arc;

use keeplb_config::model;
use tokio::sync::{mpsc, oneshot};

use crate::ConfigArgs;

/// A reload to do, and where to say how it went.
#[derive(Debug)]
pub struct Request {
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// Asks the running daemon to reload.
#[derive(Debug, Clone)]
pub struct Reloader(mpsc::UnboundedSender<Request>);

impl Reloader {
    /// Reloads and waits for the outcome: `Err` carries the diagnostics of an invalid
    /// configuration.
    pub async fn reload(&self) -> Result<(), String> {
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(Request { reply: Some(reply) })
            .map_err(|_| "the daemon is stopping".to_owned())?;
        outcome
            .await
            .unwrap_or_else(|_| Err("the daemon is stopping".to_owned()))
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
        let outcome = apply(&args, &parts);
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
    pub virtual_servers: mpsc::UnboundedSender<Arc<model::Config>>,
    pub vrrp: mpsc::UnboundedSender<Arc<model::Config>>,
    pub sync: mpsc::UnboundedSender<Arc<model::Config>>,
}

/// Reads, validates and applies the configuration file again.
fn apply(args: &ConfigArgs, parts: &Parts) -> Result<(), String> {
    let loaded = crate::config_cmd::load(args, &args.file).map_err(|e| format!("{e:#}"))?;
    let diagnostics = crate::config_cmd::render_diagnostics(&loaded);
    if !loaded.is_valid() {
        tracing::error!(
            "reload: {} is invalid; the running configuration stays in force\n{diagnostics}",
            args.file.display()
        );
        return Err(diagnostics);
    }
    if !diagnostics.is_empty() {
        tracing::warn!("reload: {}\n{diagnostics}", args.file.display());
    }
    let new = Arc::new(loaded.config);
    if parts.vrrp.send(Arc::clone(&new)).is_err() && !new.vrrp_instance.is_empty() {
        // VRRP does not run (the configuration keeplb started with had no instance).
        tracing::warn!("reload: VRRP instances start at the next restart");
    }
    let _ = parts.sync.send(Arc::clone(&new));
    let _ = parts.virtual_servers.send(new);
    tracing::info!("reload: {} applied", args.file.display());
    Ok(())
}
