//! What the health core asks of the outside world.

use std::net::SocketAddr;
use std::time::Duration;

use keeplb_config::model::Script;

use crate::Reason;

/// Identifies a virtual server by its index in `Config::virtual_server`.
pub type VsIndex = usize;

/// One instruction from the health core, in the order it must be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put `dest` in the virtual server's pool with this weight (keepalived's ADDDEST).
    AddDest {
        vs: VsIndex,
        dest: SocketAddr,
        weight: u32,
    },
    /// Take `dest` out of the pool (DELDEST).
    RemoveDest { vs: VsIndex, dest: SocketAddr },
    /// Change the weight of a `dest` already in the pool (EDITDEST); weight 0 keeps it
    /// listed (existing connections live on) but sends it no new ones: this is how
    /// `inhibit_on_failure` takes a server down and how the sorry server waits with
    /// `sorry_server_inhibit`.
    SetWeight {
        vs: VsIndex,
        dest: SocketAddr,
        weight: u32,
    },
    /// Run a notify script (asynchronously; its exit status does not matter).
    RunScript {
        script: Script,
        event: ScriptEvent,
        /// keepalived gives shutdown scripts one second, others no limit.
        timeout: Option<Duration>,
    },
    /// A line for `notify_fifo` / `lvs_notify_fifo`, in keepalived's format
    /// (`RS [192.168.0.1]:tcp:80 [10.0.0.1]:tcp:80 UP\n`, `VS [10.0.0.1]:tcp:80 DOWN\n`).
    NotifyFifo { line: String },
    /// The checks' verdict on a real server changed, or is told at start: keepalived's
    /// `alive`. It changes no pool (the actions around it do); it is what status and
    /// metrics report, which the pool alone cannot tell (a live real server is out of
    /// the pool while the sorry server serves, say).
    RealServerAlive {
        vs: VsIndex,
        dest: SocketAddr,
        alive: bool,
    },
    /// A log line in keepalived's words, with the failure that caused it when there is one.
    Log {
        message: String,
        reason: Option<Reason>,
    },
}

/// Why a notify script runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptEvent {
    /// `notify_up` of a real server.
    RealServerUp { vs: VsIndex, dest: SocketAddr },
    /// `notify_down` of a real server.
    RealServerDown { vs: VsIndex, dest: SocketAddr },
    /// `quorum_up` of a virtual server.
    QuorumUp { vs: VsIndex },
    /// `quorum_down` of a virtual server.
    QuorumDown { vs: VsIndex },
}

impl Action {
    /// The pool changes only (what the data plane applies), without logs and scripts.
    pub fn is_pool_change(&self) -> bool {
        matches!(
            self,
            Action::AddDest { .. } | Action::RemoveDest { .. } | Action::SetWeight { .. }
        )
    }
}
