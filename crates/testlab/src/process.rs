//! Long-lived processes (daemons) inside a host.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::error::{LabError, Result};
use crate::lab::describe;
use crate::netns::Ns;

/// How often [`Process::wait_timeout`] polls.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// A process started with [`Host::spawn`](crate::Host::spawn), in its own process group.
///
/// Dropping it SIGKILLs the whole group and reaps the process; so does dropping the lab.
/// Stdout and stderr are written to files in the lab dir, readable at any time with
/// [`Process::output_so_far`] — print that when a test fails.
///
/// Run daemons in the foreground (keepalived: `--dont-fork`, `--log-console`), so that
/// the process stays the group leader and its output is captured.
#[derive(Debug)]
pub struct Process {
    slot: Arc<ProcSlot>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

/// The part of a process the lab can reach too, to kill it at teardown.
#[derive(Debug)]
pub(crate) struct ProcSlot {
    /// Held while signalling: the child is not reaped while we hold it, so its pid (and
    /// process group id) cannot have been reused by an unrelated process.
    child: Mutex<Child>,
    pid: u32,
    label: String,
}

impl ProcSlot {
    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pid(&self) -> Pid {
        // Linux pids fit in i32 (pid_max <= 2^22).
        Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX))
    }

    /// SIGKILLs the process group unless the leader was already reaped, then reaps it.
    pub(crate) fn kill_and_reap(&self) -> io::Result<ExitStatus> {
        let mut child = self.lock();
        if let Some(status) = child.try_wait()? {
            // Reaped: the pid may belong to someone else by now, do not signal it.
            // Stragglers of the group are killed with the namespace at teardown.
            return Ok(status);
        }
        // The group id is the leader's pid, still ours since the leader is not reaped.
        // ESRCH cannot happen (a zombie leader still counts); ignore errors anyway, the
        // wait below is what matters.
        let _ = killpg(self.pid(), Signal::SIGKILL);
        child.wait()
    }
}

impl Process {
    pub(crate) fn spawn(ns: &Ns, mut cmd: Command) -> Result<Self> {
        let label = label_of(&cmd);
        let mut state = ns.shared.lock();
        if state.closed {
            return Err(LabError::Closed(ns.shared.id.clone()));
        }
        state.counter += 1;
        let base = format!("{}.{label}.{}", ns.short, state.counter);
        let stdout_path = ns.shared.dir.join(format!("{base}.stdout"));
        let stderr_path = ns.shared.dir.join(format!("{base}.stderr"));
        let stdout = create(&stdout_path)?;
        let stderr = create(&stderr_path)?;
        // Own process group, so that kill() reaches the daemon's children too.
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("spawning `{}`", describe(&cmd)), e))?;
        let slot = Arc::new(ProcSlot {
            pid: child.id(),
            child: Mutex::new(child),
            label,
        });
        // Registered while holding the state lock, so that a concurrent teardown either
        // refused the spawn above or will find the process.
        state.processes.retain(|p| p.strong_count() > 0);
        state.processes.push(Arc::downgrade(&slot));
        Ok(Self {
            slot,
            stdout_path,
            stderr_path,
        })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.slot.pid
    }

    /// The label used in log file names: the program's file name.
    pub fn label(&self) -> &str {
        &self.slot.label
    }

    /// Sends `signal` to the process itself (not its group), e.g. `Signal::SIGHUP` to make
    /// a daemon reload. Fails with [`LabError::ProcessExited`] if it already exited.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let mut child = self.slot.lock();
        if let Some(status) = self.try_status(&mut child)? {
            return Err(self.exited(status));
        }
        kill(self.slot.pid(), signal)
            .map_err(|e| LabError::sys(format!("sending {signal} to {}", self.slot.pid), e))
    }

    /// SIGKILLs the whole process group and reaps the process (no-op if it already
    /// exited); returns its exit status.
    pub fn kill(&self) -> Result<ExitStatus> {
        self.slot
            .kill_and_reap()
            .map_err(|e| LabError::io(format!("killing process {}", self.slot.pid), e))
    }

    /// Whether the process is still running (not yet exited).
    pub fn is_running(&self) -> Result<bool> {
        let mut child = self.slot.lock();
        Ok(self.try_status(&mut child)?.is_none())
    }

    /// Waits up to `timeout` for the process to exit (polling every 10 ms); returns its
    /// status, or `None` if it is still running. Use it after sending SIGTERM.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let mut status = None;
        let mut error = None;
        let _ = crate::wait_until(timeout, EXIT_POLL, || {
            let mut child = self.slot.lock();
            match self.try_status(&mut child) {
                Ok(Some(s)) => status = Some(s),
                Ok(None) => {}
                Err(e) => error = Some(e),
            }
            status.is_some() || error.is_some()
        });
        match error {
            Some(e) => Err(e),
            None => Ok(status),
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output_so_far(&self) -> CapturedOutput {
        CapturedOutput {
            label: format!("{} (pid {})", self.slot.label, self.slot.pid),
            stdout: read_lossy(&self.stdout_path),
            stderr: read_lossy(&self.stderr_path),
        }
    }

    /// The file receiving the process's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// The file receiving the process's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    fn try_status(&self, child: &mut Child) -> Result<Option<ExitStatus>> {
        child
            .try_wait()
            .map_err(|e| LabError::io(format!("checking process {}", self.slot.pid), e))
    }

    fn exited(&self, status: ExitStatus) -> LabError {
        LabError::ProcessExited {
            pid: self.slot.pid,
            label: self.slot.label.clone(),
            status,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Errors only mean there is nothing left to kill.
        let _ = self.slot.kill_and_reap();
    }
}

/// Output captured from a [`Process`]; `Display` prints both streams with headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedOutput {
    /// Which process this came from.
    pub label: String,
    /// Standard output so far (lossily decoded).
    pub stdout: String,
    /// Standard error so far (lossily decoded).
    pub stderr: String,
}

impl fmt::Display for CapturedOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "----- {} stdout -----", self.label)?;
        writeln!(f, "{}", self.stdout.trim_end())?;
        writeln!(f, "----- {} stderr -----", self.label)?;
        write!(f, "{}", self.stderr.trim_end())
    }
}

fn create(path: &Path) -> Result<File> {
    File::create(path).map_err(|e| LabError::io(format!("creating {}", path.display()), e))
}

fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The program's file name, for log file names: for `ip netns exec <ns> <program>`
/// commands (built by `Host::cmd`) that is `<program>`.
fn label_of(cmd: &Command) -> String {
    let args: Vec<_> = cmd.get_args().collect();
    let program = match args.as_slice() {
        [netns, exec, _, program, ..]
            if cmd.get_program() == "ip" && *netns == "netns" && *exec == "exec" =>
        {
            *program
        }
        _ => cmd.get_program(),
    };
    let name = Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy();
    let label: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if label.is_empty() {
        "process".to_owned()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_commands() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", "klb-1-0-x-a", "/usr/sbin/keepalived", "-n"]);
        assert_eq!(label_of(&cmd), "keepalived");
        assert_eq!(label_of(&Command::new("/bin/sleep")), "sleep");
    }
}
