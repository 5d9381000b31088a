//! The signals that stop the daemon, listened to from its first moment.

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT. Listened to before the control socket answers, so one that
/// arrives while the daemon is still starting (a test, or systemd, seeing it answer)
/// stops it in order once it has started: without a listener it would kill the daemon
/// with no clean-up, and a listener made later would not see it.
#[derive(Debug)]
pub struct Termination {
    terminate: Signal,
    interrupt: Signal,
}

impl Termination {
    /// Starts listening; must be called inside the runtime.
    pub fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for either signal (one that came before is not missed); its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
