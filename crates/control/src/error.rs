//! Errors the IPVS table reports, with the messages ipvsadm prints for them.
//!
//! ipvsadm turns the kernel's errno into a message that depends on the operation that failed
//! (libipvs `ipvs_strerror`): ESRCH is "Service not defined" when adding a real server but
//! "No such service" when editing a service. The daemon answers with a [`KernelError`]; the
//! client prints [`KernelError::message`] for the operation it asked for.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The operation that failed, which selects ipvsadm's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `-A`.
    AddService,
    /// `-E`.
    EditService,
    /// `-D`.
    DeleteService,
    /// `-Z`.
    ZeroService,
    /// `-a`.
    AddDest,
    /// `-e`.
    EditDest,
    /// `-d`.
    DeleteDest,
    /// `-C` (libipvs does not record it, so only the generic messages apply).
    Flush,
    /// `--set`.
    SetTimeout,
    /// `--start-daemon`.
    StartDaemon,
    /// `--stop-daemon`.
    StopDaemon,
    /// Listing all services.
    GetServices,
    /// Listing one service (`-L -t …`).
    GetService,
    /// Listing a service's real servers.
    GetDests,
    /// `-L --timeout`.
    GetTimeout,
    /// `-L --daemon`.
    GetDaemon,
}

/// An error from the IPVS table, named after the errno the kernel uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelError {
    /// ESRCH: the service does not exist (also: no sync daemon running).
    #[error("no such service")]
    NoSuchService,
    /// EEXIST: the service, real server or sync daemon already exists.
    #[error("already exists")]
    Exists,
    /// ENOENT: no such real server, or unknown scheduler / persistence engine.
    #[error("not found")]
    NotFound,
    /// EPERM.
    #[error("permission denied")]
    PermissionDenied,
    /// EINVAL: the request is not valid (bad address, scheduler refusing the service, …).
    #[error("invalid argument")]
    InvalidArgument,
    /// ENOMEM.
    #[error("out of memory")]
    NoMemory,
    /// EOPNOTSUPP.
    #[error("operation not supported")]
    NotSupported,
    /// EAFNOSUPPORT.
    #[error("address family not supported")]
    AddressFamilyNotSupported,
    /// EOPNOTSUPP from keeplb's userspace data plane: the kernel would accept the
    /// command, but a proxy cannot serve what it asks for.
    #[error("needs kernel IPVS: {0:?}")]
    NeedsKernel(Unsupported),
    /// Any other errno.
    #[error("errno {0}")]
    Errno(i32),
}

/// What the userspace data plane cannot serve, unlike kernel IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsupported {
    /// `-f`: marks are set on packets by netfilter, which a proxy never sees.
    Fwmark,
    /// `--sctp-service`.
    Sctp,
    /// Port 0: a service on every port of an address.
    AllPorts,
    /// `--start-daemon`: connection synchronisation.
    SyncDaemon,
}

impl Unsupported {
    /// The message keeplb prints instead of ipvsadm's (which has none for this case).
    pub fn message(self) -> &'static str {
        match self {
            Unsupported::Fwmark => {
                "Firewall-mark services need kernel IPVS: keeplb's userspace proxy never sees packet marks"
            }
            Unsupported::Sctp => {
                "SCTP services need kernel IPVS: keeplb's userspace proxy serves TCP and UDP"
            }
            Unsupported::AllPorts => {
                "Port-zero services need kernel IPVS: keeplb's userspace proxy listens on one port per service"
            }
            Unsupported::SyncDaemon => {
                "keeplb runs its sync daemon (persistence templates) as lvs_sync_daemon in the configuration says; starting or stopping one by hand needs kernel IPVS"
            }
        }
    }
}

impl KernelError {
    /// The errno value.
    pub fn errno(self) -> i32 {
        match self {
            KernelError::NoSuchService => 3,
            KernelError::Exists => 17,
            KernelError::NotFound => 2,
            KernelError::PermissionDenied => 1,
            KernelError::InvalidArgument => 22,
            KernelError::NoMemory => 12,
            KernelError::NotSupported => 95,
            KernelError::AddressFamilyNotSupported => 97,
            KernelError::NeedsKernel(_) => 95,
            KernelError::Errno(errno) => errno,
        }
    }

    /// The error for an errno value.
    pub fn from_errno(errno: i32) -> KernelError {
        [
            KernelError::NoSuchService,
            KernelError::Exists,
            KernelError::NotFound,
            KernelError::PermissionDenied,
            KernelError::InvalidArgument,
            KernelError::NoMemory,
            KernelError::NotSupported,
            KernelError::AddressFamilyNotSupported,
        ]
        .into_iter()
        .find(|e| e.errno() == errno)
        .unwrap_or(KernelError::Errno(errno))
    }

    /// What ipvsadm prints (without the newline) when `operation` fails with this error.
    pub fn message(self, operation: Operation) -> String {
        if let KernelError::NeedsKernel(what) = self {
            return what.message().to_owned();
        }
        let errno = self.errno();
        let specific = SPECIFIC
            .iter()
            .find(|(op, e, _)| *op == operation && *e == errno)
            .or_else(|| GENERIC.iter().find(|(_, e, _)| *e == errno))
            .map(|(_, _, message)| *message);
        match specific {
            Some(message) => message.to_owned(),
            None => strerror(errno),
        }
    }
}

const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;

/// libipvs's table of operation-specific messages.
const SPECIFIC: &[(Operation, i32, &str)] = &[
    (Operation::AddService, EEXIST, "Service already exists"),
    (
        Operation::AddService,
        ENOENT,
        "Scheduler or persistence engine not found",
    ),
    (Operation::EditService, ESRCH, "No such service"),
    (
        Operation::EditService,
        ENOENT,
        "Scheduler or persistence engine not found",
    ),
    (Operation::DeleteService, ESRCH, "No such service"),
    (Operation::ZeroService, ESRCH, "No such service"),
    (Operation::AddDest, ESRCH, "Service not defined"),
    (Operation::AddDest, EEXIST, "Destination already exists"),
    (Operation::EditDest, ESRCH, "Service not defined"),
    (Operation::EditDest, ENOENT, "No such destination"),
    (Operation::DeleteDest, ESRCH, "Service not defined"),
    (Operation::DeleteDest, ENOENT, "No such destination"),
    (Operation::StartDaemon, EEXIST, "Daemon has already run"),
    (Operation::StopDaemon, ESRCH, "No daemon is running"),
    (Operation::GetServices, ESRCH, "No such service"),
    (Operation::GetDests, ESRCH, "No such service"),
    (Operation::GetService, ESRCH, "No such service"),
];

/// libipvs's messages for any operation (the operation column is unused).
const GENERIC: &[(Operation, i32, &str)] = &[
    (Operation::Flush, 1, "Permission denied (you must be root)"),
    (
        Operation::Flush,
        22,
        "Invalid operation.  Possibly wrong module version, address not unicast, ...",
    ),
    (Operation::Flush, 92, "Protocol not available"),
    (Operation::Flush, 12, "Memory allocation problem"),
    (Operation::Flush, 95, "Operation not supported with IPv6"),
    (
        Operation::Flush,
        97,
        "Operation not supported with specified address family",
    ),
    (Operation::Flush, 90, "Module is wrong version"),
];

/// glibc's `strerror` for the errno values the table does not cover.
fn strerror(errno: i32) -> String {
    let text = match errno {
        2 => "No such file or directory",
        3 => "No such process",
        4 => "Interrupted system call",
        5 => "Input/output error",
        6 => "No such device or address",
        11 => "Resource temporarily unavailable",
        13 => "Permission denied",
        16 => "Device or resource busy",
        17 => "File exists",
        19 => "No such device",
        28 => "No space left on device",
        34 => "Numerical result out of range",
        98 => "Address already in use",
        99 => "Cannot assign requested address",
        105 => "No buffer space available",
        _ => return format!("Unknown error {errno}"),
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_errno_reads_differently_per_operation() {
        let e = KernelError::NoSuchService;
        assert_eq!(e.message(Operation::AddDest), "Service not defined");
        assert_eq!(e.message(Operation::EditService), "No such service");
        assert_eq!(e.message(Operation::StopDaemon), "No daemon is running");
        // libipvs has no ESRCH entry for adding a service: plain strerror
        assert_eq!(e.message(Operation::AddService), "No such process");
        assert_eq!(
            KernelError::Exists.message(Operation::AddDest),
            "Destination already exists"
        );
        assert_eq!(KernelError::Exists.message(Operation::Flush), "File exists");
        assert_eq!(
            KernelError::NotFound.message(Operation::DeleteDest),
            "No such destination"
        );
        assert_eq!(
            KernelError::NoMemory.message(Operation::AddDest),
            "Memory allocation problem"
        );
        assert_eq!(
            KernelError::Errno(200).message(Operation::AddDest),
            "Unknown error 200"
        );
    }

    #[test]
    fn userspace_refusals_say_why() {
        let e = KernelError::NeedsKernel(Unsupported::Fwmark);
        assert_eq!(e.errno(), 95);
        assert!(
            e.message(Operation::AddService)
                .starts_with("Firewall-mark services need kernel IPVS"),
            "{}",
            e.message(Operation::AddService)
        );
        assert_eq!(KernelError::from_errno(95), KernelError::NotSupported);
    }

    #[test]
    fn errno_round_trips() {
        for errno in [1, 2, 3, 12, 16, 17, 22, 95, 97, 4242] {
            assert_eq!(KernelError::from_errno(errno).errno(), errno);
        }
        assert_eq!(KernelError::from_errno(17), KernelError::Exists);
    }
}
