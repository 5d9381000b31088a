//! The notify FIFOs of `global_defs`, shared by the VRRP part and the health checks:
//! `notify_fifo` gets both parts' events, `vrrp_notify_fifo` the VRRP ones and
//! `lvs_notify_fifo` the checkers' (`RS …` / `VS …` lines), as keepalived's VRRP and
//! checker processes write them. Each path is opened once, even when two keywords name
//! it, and its `*_notify_fifo_script` is started on it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keeplb_config::model::{GlobalDefs, NotifyFifo};
use keeplb_vrrp::notify::{FifoScript, FifoWriter};

/// How long a notify FIFO script may take to end after SIGTERM before it is killed.
const FIFO_SCRIPT_GRACE: Duration = Duration::from_secs(1);

/// The opened FIFOs, by the part that writes them, and the scripts reading them.
#[derive(Default)]
pub struct NotifyFifos {
    /// `notify_fifo` and `vrrp_notify_fifo`.
    pub vrrp: Vec<Arc<FifoWriter>>,
    /// `notify_fifo` and `lvs_notify_fifo`.
    pub lvs: Vec<Arc<FifoWriter>>,
    pub scripts: Vec<FifoScript>,
}

impl NotifyFifos {
    /// Whether `new` names other notify FIFOs than `running`: the FIFOs are opened once,
    /// at start, so such a change waits for the next restart.
    pub fn changed(running: &GlobalDefs, new: &GlobalDefs) -> bool {
        let fifos = |global: &GlobalDefs| {
            [
                global.notify_fifo.clone(),
                global.vrrp_notify_fifo.clone(),
                global.lvs_notify_fifo.clone(),
            ]
        };
        fifos(running) != fifos(new)
    }

    /// Opens the FIFOs `global` names and starts their scripts; one that cannot be
    /// opened is reported and left out.
    pub fn open(global: &GlobalDefs) -> Self {
        let mut fifos = NotifyFifos::default();
        let mut opened: Vec<Arc<FifoWriter>> = Vec::new();
        let mut writer = |fifo: &NotifyFifo| -> Option<Arc<FifoWriter>> {
            if let Some(writer) = opened.iter().find(|f| f.path() == Path::new(&fifo.path)) {
                return Some(Arc::clone(writer));
            }
            let writer = match FifoWriter::open(&fifo.path) {
                Ok(writer) => Arc::new(writer),
                Err(e) => {
                    tracing::error!("notify fifo {}: {e}", fifo.path);
                    return None;
                }
            };
            opened.push(Arc::clone(&writer));
            if let Some(script) = &fifo.script {
                let user = script.user.as_deref();
                let command = crate::vrrp_run::script_command(
                    &script.script,
                    user,
                    script.group.as_deref(),
                    global,
                );
                match command {
                    Ok(cmd) => match FifoScript::spawn(&cmd, Path::new(&fifo.path)) {
                        Ok(script) => fifos.scripts.push(script),
                        Err(e) => tracing::error!("notify fifo {} script {cmd}: {e}", fifo.path),
                    },
                    Err(e) => tracing::error!("notify fifo {} script disabled: {e:#}", fifo.path),
                }
            }
            Some(writer)
        };
        let common = global.notify_fifo.as_ref().and_then(&mut writer);
        let vrrp = global.vrrp_notify_fifo.as_ref().and_then(&mut writer);
        let lvs = global.lvs_notify_fifo.as_ref().and_then(&mut writer);
        fifos.vrrp = distinct([common.clone(), vrrp]);
        fifos.lvs = distinct([common, lvs]);
        fifos
    }

    /// Ends the FIFO scripts: keepalived terminates its scripts first at shutdown, so
    /// they do not see the lines written while stopping.
    pub async fn stop_scripts(scripts: Vec<FifoScript>) {
        for script in scripts {
            script.stop(FIFO_SCRIPT_GRACE).await;
        }
    }
}

/// The writers, each once (two keywords may name one FIFO).
fn distinct(writers: [Option<Arc<FifoWriter>>; 2]) -> Vec<Arc<FifoWriter>> {
    let mut distinct: Vec<Arc<FifoWriter>> = Vec::new();
    for writer in writers.into_iter().flatten() {
        if !distinct.iter().any(|w| Arc::ptr_eq(w, &writer)) {
            distinct.push(writer);
        }
    }
    distinct
}
