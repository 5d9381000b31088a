//! Running scripts as keepalived does: the script line split by keepalived's tokenizer,
//! run in its own process group as its user, with a time limit, killed with its whole
//! group when it times out or is no longer wanted.

use std::fmt;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Splits a `script` line into program and arguments as keepalived's script tokenizer
/// does: words separated by blanks, `'…'` and `"…"` quote, `\` escapes the next character.
pub fn split_command(line: &str) -> Result<Vec<String>, CommandError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (q, '\\') if q != Some('\'') => {
                let next = chars.next().ok_or_else(|| CommandError::Syntax {
                    line: line.to_owned(),
                    reason: "trailing backslash",
                })?;
                word.push(next);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(CommandError::Syntax {
            line: line.to_owned(),
            reason: "unterminated quote",
        });
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(CommandError::Syntax {
            line: line.to_owned(),
            reason: "empty command",
        });
    }
    Ok(words)
}

/// A script to run: program, arguments, and optionally who runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptCommand {
    pub argv: Vec<String>,
    /// Run as this uid/gid instead of keeplb's own.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl ScriptCommand {
    /// From a keepalived `script` line.
    pub fn parse(line: &str) -> Result<Self, CommandError> {
        Ok(Self {
            argv: split_command(line)?,
            uid: None,
            gid: None,
        })
    }

    /// Runs as `user` (and `group`, else the user's primary group), resolved by name.
    pub fn with_user(mut self, user: &str, group: Option<&str>) -> Result<Self, CommandError> {
        let u = nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .ok_or_else(|| CommandError::UnknownUser(user.to_owned()))?;
        let gid = match group {
            Some(g) => {
                nix::unistd::Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| CommandError::UnknownGroup(g.to_owned()))?
                    .gid
            }
            None => u.gid,
        };
        self.uid = Some(u.uid.as_raw());
        self.gid = Some(gid.as_raw());
        Ok(self)
    }

    /// A configured script as keepalived runs it: as its own `user` (and `group`) if it
    /// names one, else as the configuration's `script_user` (`default`), else as keeplb.
    pub fn configured(
        line: &str,
        own: Option<(&str, Option<&str>)>,
        default: Option<(&str, Option<&str>)>,
    ) -> Result<Self, CommandError> {
        let command = Self::parse(line)?;
        match own.or(default) {
            Some((user, group)) => command.with_user(user, group),
            None => Ok(command),
        }
    }

    /// The command as keepalived's `cmd_str` shows it in its logs: each word in single
    /// quotes, except a first word starting with `<` or `>` (a redirection-only test).
    pub fn keepalived_quoted(&self) -> String {
        self.argv
            .iter()
            .enumerate()
            .map(|(index, word)| {
                if index == 0 && word.starts_with(['<', '>']) {
                    word.clone()
                } else {
                    format!("'{word}'")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The program, as written (first word).
    pub fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// The same command with more arguments appended (notify's `INSTANCE name STATE prio`).
    pub fn with_args<I, S>(&self, extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut c = self.clone();
        c.argv.extend(extra.into_iter().map(Into::into));
        c
    }
}

impl fmt::Display for ScriptCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv.join(" "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot parse script `{line}`: {reason}")]
    Syntax { line: String, reason: &'static str },
    #[error("unknown user `{0}` for script")]
    UnknownUser(String),
    #[error("unknown group `{0}` for script")]
    UnknownGroup(String),
}

/// How one script run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Exited with this status (0 = success).
    Exited(i32),
    /// Killed by this signal (not by us).
    Signalled(i32),
    /// Still running at the timeout: its process group was killed.
    TimedOut,
}

impl RunOutcome {
    pub const fn success(self) -> bool {
        matches!(self, RunOutcome::Exited(0))
    }

    pub fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(c), _) => RunOutcome::Exited(c),
            (None, Some(s)) => RunOutcome::Signalled(s),
            (None, None) => RunOutcome::Exited(-1),
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunOutcome::Exited(0) => f.write_str("succeeded"),
            RunOutcome::Exited(c) => write!(f, "failed (exited with status {c})"),
            RunOutcome::Signalled(s) => write!(f, "failed (killed by signal {s})"),
            RunOutcome::TimedOut => f.write_str("timed out"),
        }
    }
}

/// Kills the child's process group unless it has been reaped (kill on drop / timeout).
struct GroupGuard {
    pgid: Pid,
    reaped: Arc<AtomicBool>,
}

impl GroupGuard {
    fn kill(&self) {
        if !self.reaped.load(Ordering::SeqCst) {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cmd` as the leader of a new process group (stdin/stdout/stderr to /dev/null,
/// as its uid/gid if set); returns the child and its pid (= the group's id).
pub fn spawn_in_group(cmd: &ScriptCommand) -> io::Result<(std::process::Child, i32)> {
    let (program, args) = cmd
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some(gid) = cmd.gid {
        command.gid(gid);
    }
    if let Some(uid) = cmd.uid {
        command.uid(uid);
    }
    let child = command.spawn()?;
    let pid = i32::try_from(child.id()).map_err(|_| io::Error::other("child pid out of range"))?;
    Ok((child, pid))
}

/// Runs `cmd` once in its own process group (stdin/stdout/stderr to /dev/null, as its
/// uid/gid if set) and waits at most `timeout`; on timeout, or if this future is dropped,
/// the whole group is killed with SIGKILL. Err only when the program cannot be started.
///
/// The wait happens on tokio's blocking pool, which keeps a paused test clock from
/// jumping ahead while the process runs.
pub async fn run_command(cmd: &ScriptCommand, timeout: Duration) -> io::Result<RunOutcome> {
    let (mut child, pid) = spawn_in_group(cmd)?;
    let reaped = Arc::new(AtomicBool::new(false));
    let guard = GroupGuard {
        pgid: Pid::from_raw(pid),
        reaped: Arc::clone(&reaped),
    };
    let mut wait = tokio::task::spawn_blocking(move || {
        let status = child.wait();
        reaped.store(true, Ordering::SeqCst);
        status
    });
    let joined = match tokio::time::timeout(timeout, &mut wait).await {
        Ok(joined) => joined,
        Err(_) => {
            guard.kill();
            // Reap it so no zombie is left behind.
            let _ = wait.await;
            return Ok(RunOutcome::TimedOut);
        }
    };
    drop(guard);
    let status = joined.map_err(io::Error::other)??;
    Ok(RunOutcome::from_status(status))
}
