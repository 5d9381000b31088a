//! The lab: naming, creation, garbage collection of stale labs, and teardown.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};

use crate::error::{LabError, Result};
use crate::netns::{Host, Ns, NsKind, Switch};
use crate::process::ProcSlot;

/// Prefix of every namespace (and temp dir) this crate creates; garbage collection only
/// ever looks at names with this prefix.
const PREFIX: &str = "klb-";

/// Where `ip netns` keeps its named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// The only global state: makes lab names unique within this process.
static LAB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A set of network namespaces torn down together when the lab is dropped.
///
/// Create hosts with [`Lab::host`] and switches with [`Lab::switch`]. The handles they
/// return are cheap to clone and may be sent to other threads; they do not keep the lab
/// alive: once the lab is dropped, using them fails (the namespaces are gone).
///
/// Dropping the lab (also during a panic) kills the processes spawned in it, then every
/// process still inside its namespaces, deletes the namespaces (which deletes their veths
/// and bridges) and removes the lab's temp dir — unless the thread is panicking, in which
/// case the temp dir (process logs) is kept and its path printed.
#[derive(Debug)]
pub struct Lab {
    shared: Arc<Shared>,
}

/// State shared by the lab and the handles of its hosts, switches and processes.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `klb-<pid>-<counter>-<test>`: prefix of every namespace name of this lab.
    pub(crate) id: String,
    /// Per-lab temp dir for process logs and test files.
    pub(crate) dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Set by teardown; no namespace or process may be created afterwards.
    pub(crate) closed: bool,
    /// Full namespace names, in creation order.
    pub(crate) namespaces: Vec<String>,
    /// Short names of hosts and switches (they map to namespace names, so must be unique).
    pub(crate) names: HashSet<String>,
    /// Names of bridge ports already used (all switches of the lab share this set).
    pub(crate) port_names: HashSet<String>,
    /// Processes spawned via [`Host::spawn`]; weak so that dropping a `Process` frees it.
    pub(crate) processes: Vec<Weak<ProcSlot>>,
    /// Numbers ports and processes, for unique names.
    pub(crate) counter: u64,
}

impl Shared {
    /// Locks the state; a panic while holding the lock must not prevent teardown.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lab {
    /// Creates an empty lab for the test `test_name` (used in namespace and temp dir names,
    /// sanitised and shortened, so `ip netns list` shows which test a namespace belongs to).
    ///
    /// Fails with [`LabError::NotRoot`] when not running as root and with
    /// [`LabError::MissingTool`] when `ip` is missing: let the test fail with that message.
    ///
    /// Also deletes namespaces left behind by earlier test processes that died without
    /// tearing down (their names carry their pid, which is no longer alive), and such
    /// processes' temp dirs once they are a day old.
    pub fn new(test_name: &str) -> Result<Self> {
        let euid = geteuid();
        if !euid.is_root() {
            return Err(LabError::NotRoot {
                euid: euid.as_raw(),
            });
        }
        check_ip_available()?;

        let pid = std::process::id();
        let counter = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        collect_garbage(pid, counter);

        let id = format!("{PREFIX}{pid}-{counter}-{}", sanitize_test_name(test_name));
        let dir = std::env::temp_dir().join(&id);
        // A directory with this name can only be a leftover of a dead process whose pid
        // we inherited: our counter value is fresh.
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io(format!("removing stale {}", dir.display()), e)),
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("creating lab dir {}", dir.display()), e))?;

        Ok(Self {
            shared: Arc::new(Shared {
                id,
                dir,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// Creates a host: a namespace with `lo` up, IPv6 duplicate address detection off
    /// (addresses are usable at once) and IPv6 addresses kept when a link goes down (so a
    /// "pulled cable" does not silently lose them).
    ///
    /// `name` is 1-15 characters of ASCII letters, digits, `_` and `-`, unique in the lab.
    pub fn host(&self, name: &str) -> Result<Host> {
        Ns::create(&self.shared, name, NsKind::Host).map(Host::new)
    }

    /// Creates a switch: a namespace holding a single bridge `br0` (no STP, no multicast
    /// snooping, IPv6 disabled so the switch itself sends nothing). Attach hosts with
    /// [`Host::attach`]. Same naming rules as [`Lab::host`].
    pub fn switch(&self, name: &str) -> Result<Switch> {
        Ns::create(&self.shared, name, NsKind::Switch).map(Switch::new)
    }

    /// The lab's id, `klb-<pid>-<counter>-<test>`; every namespace name starts with it.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// A per-lab temp dir (process logs live here); tests may put config files in it.
    /// Removed at teardown unless the test panicked.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Names of the namespaces created so far (as shown by `ip netns list`).
    pub fn namespaces(&self) -> Vec<String> {
        self.shared.lock().namespaces.clone()
    }

    /// Tears the lab down now and reports the first error, if any (dropping the lab does
    /// the same but can only print errors).
    pub fn close(self) -> Result<()> {
        let result = teardown(&self.shared);
        drop(self); // Nothing left to do: teardown is idempotent.
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = teardown(&self.shared) {
            eprintln!(
                "keeplb-testlab: teardown of {} incomplete: {e}",
                self.shared.id
            );
        }
    }
}

/// Kills the lab's processes, deletes its namespaces and temp dir. Idempotent.
fn teardown(shared: &Shared) -> Result<()> {
    let (processes, namespaces) = {
        let mut state = shared.lock();
        state.closed = true;
        (
            std::mem::take(&mut state.processes),
            std::mem::take(&mut state.namespaces),
        )
    };
    for slot in processes.iter().filter_map(Weak::upgrade) {
        // An error means the child was reaped elsewhere: nothing left to kill.
        let _ = slot.kill_and_reap();
    }
    let mut first_error = None;
    for name in namespaces.iter().rev() {
        if let Err(e) = destroy_netns(name) {
            first_error.get_or_insert(e);
        }
    }
    if std::thread::panicking() {
        eprintln!(
            "keeplb-testlab: lab {} torn down after a panic; process logs kept in {}",
            shared.id,
            shared.dir.display()
        );
    } else {
        match std::fs::remove_dir_all(&shared.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(LabError::io(
                    format!("removing {}", shared.dir.display()),
                    e,
                ));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Kills every process inside namespace `name`, then deletes it. Deleting the last
/// reference to a network namespace destroys its interfaces, so veth peers in other
/// namespaces disappear too.
fn destroy_netns(name: &str) -> Result<()> {
    kill_netns_processes(name)?;
    match ip(["netns", "del", name]) {
        Ok(_) => Ok(()),
        // Already gone (never created, or another process's garbage collection won).
        Err(_) if !Path::new(NETNS_DIR).join(name).exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// SIGKILLs the processes living in namespace `name` — daemons that escaped their
/// process group, or commands the test spawned itself — until none is left.
///
/// Without this, a deleted namespace would live on (invisible to `ip netns list`) for
/// as long as such a process runs.
fn kill_netns_processes(name: &str) -> Result<()> {
    let own_pid = std::process::id();
    let mut last_error = None;
    let outcome = crate::wait_for(
        || format!("processes in namespace {name} to die"),
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            let output = match ip(["netns", "pids", name]) {
                Ok(output) => output,
                Err(e) => {
                    // A namespace that no longer exists has no processes.
                    let gone = !Path::new(NETNS_DIR).join(name).exists();
                    if !gone {
                        last_error = Some(e);
                    }
                    return gone;
                }
            };
            let pids: Vec<u32> = String::from_utf8_lossy(&output.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|&p| p != own_pid)
                .collect();
            for &pid in &pids {
                if let Ok(raw) = i32::try_from(pid) {
                    // ESRCH just means it died meanwhile; anything else shows up as a
                    // timeout below.
                    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
                }
            }
            pids.is_empty()
        },
    );
    match (outcome, last_error) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(t), None) => Err(t.into()),
    }
}

/// Deletes namespaces of earlier test processes that died without teardown.
///
/// A `klb-<pid>-<counter>-…` namespace is stale when `<pid>` is dead, or when `<pid>` is
/// our own pid and `<counter>` is the value this process just took: we have not created
/// anything with it yet, so it must come from a dead process whose pid we inherited.
/// Errors are ignored: another process may be collecting the same namespace.
fn collect_garbage(own_pid: u32, own_counter: u64) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return; // No named namespaces at all.
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((pid, counter)) = parse_name(name) else {
            continue;
        };
        let stale = if pid == own_pid {
            counter == own_counter
        } else {
            !pid_alive(pid)
        };
        if stale && let Err(e) = destroy_netns(name) {
            eprintln!("keeplb-testlab: could not remove stale namespace {name}: {e}");
        }
    }
    collect_stale_dirs(own_pid);
}

/// Deletes temp dirs of dead test processes once they are a day old.
///
/// Not at once: a panicking test keeps its lab dir (process logs) for inspection, and
/// the next test binary of the same `cargo test` run would otherwise delete it.
fn collect_stale_dirs(own_pid: u32) {
    const KEEP_LOGS_FOR: Duration = Duration::from_secs(24 * 3600);
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, _)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > KEEP_LOGS_FOR);
        // Only directories: never follow or delete anything else with our prefix.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && old && pid != own_pid && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Extracts pid and lab counter from `klb-<pid>-<counter>-…`.
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.splitn(3, '-');
    let pid = parts.next()?.parse().ok()?;
    let counter = parts.next()?.parse().ok()?;
    Some((pid, counter))
}

fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    !matches!(kill(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Makes a test name fit into a namespace name: lowercase ASCII letters, digits and `_`,
/// at most 20 characters.
fn sanitize_test_name(test_name: &str) -> String {
    let name: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    if name.is_empty() {
        "lab".to_owned()
    } else {
        name
    }
}

fn check_ip_available() -> Result<()> {
    match Command::new("ip").arg("-V").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(LabError::MissingTool {
            tool: "ip",
            package: "iproute2",
            source: io::Error::other(format!(
                "`ip -V` exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }),
        Err(source) => Err(LabError::MissingTool {
            tool: "ip",
            package: "iproute2",
            source,
        }),
    }
}

/// Runs `ip <args>` and fails with its stderr when it exits unsuccessfully.
pub(crate) fn ip<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_checked(&mut cmd)
}

/// Runs `cmd` to completion, failing with its stderr when it exits unsuccessfully.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<Output> {
    let command = describe(cmd);
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("running `{command}`"), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::CommandFailed {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse_name("klb-123-4-smoke-dir1"), Some((123, 4)));
        assert_eq!(parse_name("klb-123-4-smoke-a-b"), Some((123, 4)));
        assert_eq!(parse_name("klb-123-x-smoke"), None);
        assert_eq!(parse_name("other-123-4-smoke"), None);
        assert_eq!(parse_name("klb-"), None);
    }

    #[test]
    fn sanitizes_test_names() {
        assert_eq!(sanitize_test_name("Fail-over::IPv6"), "fail_over__ipv6");
        assert_eq!(sanitize_test_name(""), "lab");
        assert_eq!(sanitize_test_name(&"x".repeat(40)).len(), 20);
    }

    #[test]
    fn own_pid_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
