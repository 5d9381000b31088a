//! Error types. Each variant is one reason, so callers (config validation, the control
//! socket) can report it precisely.

use std::net::SocketAddr;

use crate::scheduler::SchedulerKind;

/// Invalid destination parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestError {
    /// IPVS accepts weights from 0 to `INT_MAX`.
    #[error("weight {weight} out of range (0..={max})", max = crate::MAX_WEIGHT)]
    WeightOutOfRange {
        /// The rejected weight.
        weight: u32,
    },
}

/// Scheduler construction or update failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// `-s NAME` with a name IPVS does not know.
    #[error("unknown scheduler `{name}` (valid: {valid})", valid = SchedulerKind::valid_names())]
    UnknownScheduler {
        /// The rejected name.
        name: String,
    },
    /// `-b FLAG` with a flag ipvsadm does not know.
    #[error(
        "unknown scheduler flag `{flag}` (valid: flag-1, flag-2, flag-3, sh-fallback, sh-port, \
         mh-fallback, mh-port)"
    )]
    UnknownFlag {
        /// The rejected flag.
        flag: String,
    },
    /// A scheduler-specific flag given to another scheduler (`sh-port` with `rr`).
    #[error("scheduler flag `{flag}` belongs to the {expected} scheduler, not {actual}")]
    IncompatibleFlag {
        /// The rejected flag.
        flag: String,
        /// The scheduler the flag belongs to.
        expected: SchedulerKind,
        /// The scheduler it was given to.
        actual: SchedulerKind,
    },
    /// Maglev cannot place more destinations than its table has entries (the kernel
    /// refuses such a destination with `EINVAL`).
    #[error("{count} destinations do not fit a Maglev table of {table_size} entries")]
    TooManyDestinations {
        /// Destinations in the service.
        count: usize,
        /// Entries in the lookup table.
        table_size: usize,
    },
    /// Maglev table sizes are the kernel's `CONFIG_IP_VS_MH_TAB_INDEX` primes.
    #[error("Maglev table size {size} is not one of {valid:?}", valid = crate::scheduler::MH_TABLE_SIZES)]
    InvalidTableSize {
        /// The rejected size.
        size: usize,
    },
}

/// Destination-set edits refused by a [`crate::Pool`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `ipvsadm -a` for an address already in the service (`EEXIST`).
    #[error("destination {0} already exists")]
    Duplicate(SocketAddr),
    /// `ipvsadm -e` / `-d` for an address not in the service (`ENOENT`).
    #[error("destination {0} does not exist")]
    NotFound(SocketAddr),
    /// The destination is in another service's pool: a destination belongs to one.
    #[error("destination {0} belongs to another service")]
    InAnotherPool(SocketAddr),
    /// Invalid destination parameters.
    #[error(transparent)]
    Dest(#[from] DestError),
    /// The scheduler refused the new destination set; the pool is unchanged.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}
