//! Error types of the lab.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Everything that can go wrong while building, using or tearing down a lab.
///
/// The messages are meant to be read in a failing test's output, so they name the
/// command, the namespace and the stderr of whatever failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Network namespaces, veths and bridges need root. A test that cannot build its
    /// lab must fail loudly rather than skip, hence this dedicated variant.
    #[error(
        "keeplb-testlab needs root to create network namespaces (effective uid is {euid}); \
         run the end-to-end tests as root, e.g. `sudo -E cargo test`"
    )]
    NotRoot {
        /// The effective uid the test ran with.
        euid: u32,
    },

    /// A required external tool (iproute2's `ip`) is missing.
    #[error("required tool `{tool}` is not runnable ({source}); install the `{package}` package")]
    MissingTool {
        /// The binary that could not be run.
        tool: &'static str,
        /// The Debian/Ubuntu package providing it.
        package: &'static str,
        /// Why running it failed.
        #[source]
        source: io::Error,
    },

    /// A name, address or argument was rejected before anything was touched.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// What kind of argument (e.g. "host name", "address").
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// Host and switch names share one namespace per lab and must be unique.
    #[error("name {0:?} is already used by another host or switch of this lab")]
    DuplicateName(String),

    /// Hosts, switches and links of two different labs cannot be connected: each lab's
    /// teardown must be able to remove everything it created.
    #[error("cannot connect {0:?} and {1:?}: they belong to different labs")]
    ForeignLab(String, String),

    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for humans.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard output (lossily decoded).
        stdout: String,
        /// Its standard error (lossily decoded, trimmed).
        stderr: String,
    },

    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A failed system call, with what we were doing.
    #[error("{context}: {source}")]
    Sys {
        /// What we were doing.
        context: String,
        /// The underlying errno.
        #[source]
        source: nix::errno::Errno,
    },

    /// The lab was already torn down (its namespaces are gone).
    #[error("lab {0} has already been torn down")]
    Closed(String),

    /// The process is no longer running (it was already reaped).
    #[error("process {pid} ({label}) has already exited with {status}")]
    ProcessExited {
        /// Its pid when it ran.
        pid: u32,
        /// The label used for its log files.
        label: String,
        /// How it ended.
        status: ExitStatus,
    },

    /// A bounded wait ran out.
    #[error(transparent)]
    Timeout(#[from] Timeout),
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn sys(context: impl Into<String>, source: nix::errno::Errno) -> Self {
        Self::Sys {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            what,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A condition did not become true before its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}")]
pub struct Timeout {
    /// What was being waited for.
    pub what: String,
    /// How long we waited.
    pub waited: Duration,
}
