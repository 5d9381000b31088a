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

/// Why a received IPVS sync datagram was dropped as a whole (the kernel's
/// `ip_vs_process_message` and the negative returns of `ip_vs_proc_sync_conn` in
/// net/netfilter/ipvs/ip_vs_sync.c). Entries the kernel skips one by one, leaving the
/// rest of the datagram in force, are [`crate::sync::SkipReason`]s instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncDecodeError {
    /// Shorter than the 4-byte version 0 header ("message header too short").
    #[error("sync message of {len} bytes is shorter than its header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The header's size field is not the datagram's length ("bogus message size").
    #[error("sync message size field says {size} bytes, {len} received")]
    SizeMismatch {
        /// The size field.
        size: u16,
        /// Bytes received.
        len: usize,
    },
    /// The header counts more entries than the datagram holds ("too small").
    #[error("sync entry {index} starts past the end of the message")]
    Truncated {
        /// Index of the first missing entry.
        index: usize,
    },
    /// An entry's size runs past the datagram ("msg > buffer").
    #[error("sync entry {index} of {size} bytes runs past the end of the message")]
    EntryOverrun {
        /// Index of the entry.
        index: usize,
        /// Its size field.
        size: u16,
    },
    /// An entry's version nibble is not 0 ("Unknown version").
    #[error("sync entry {index} has unknown version {version}")]
    UnknownEntryVersion {
        /// Index of the entry.
        index: usize,
        /// The version nibble.
        version: u8,
    },
    /// An entry's type is neither IPv4 (0) nor has the IPv6 bit (kernel error -10).
    #[error("sync entry {index} has unknown type {entry_type:#04x}")]
    UnknownType {
        /// Index of the entry.
        index: usize,
        /// The type byte.
        entry_type: u8,
    },
    /// An entry's size is smaller than its fixed part (kernel error -20).
    #[error("sync entry {index} of {size} bytes is shorter than its {needed}-byte layout")]
    EntryTooShort {
        /// Index of the entry.
        index: usize,
        /// Its size field.
        size: u16,
        /// The fixed part of its family.
        needed: usize,
    },
    /// One byte left where an option header needs two (kernel error -30).
    #[error("sync entry {index} ends inside an option header")]
    OptionTruncated {
        /// Index of the entry.
        index: usize,
    },
    /// An option of length 0 or running past its entry (kernel error -40).
    #[error("sync entry {index} has option {option} of bad length {len}")]
    BadOptionLength {
        /// Index of the entry.
        index: usize,
        /// Option type.
        option: u8,
        /// Option length.
        len: u8,
    },
    /// A sequence option not 24 bytes long, or given twice (kernel error -50).
    #[error("sync entry {index} has a bad or repeated sequence option")]
    BadSeqOption {
        /// Index of the entry.
        index: usize,
    },
    /// A persistence-engine data option given twice (kernel error -60).
    #[error("sync entry {index} has persistence-engine data twice")]
    DuplicateEngineData {
        /// Index of the entry.
        index: usize,
    },
    /// A persistence-engine name longer than 16 bytes or given twice (kernel error -70).
    #[error("sync entry {index} has a bad or repeated persistence-engine name")]
    BadEngineName {
        /// Index of the entry.
        index: usize,
    },
}

/// Sync entries that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncEncodeError {
    /// Client, virtual and real-server addresses must share a family (the kernel sends
    /// one family per entry).
    #[error("sync entry {index} mixes IPv4 and IPv6 addresses")]
    MixedFamilies {
        /// Index of the entry.
        index: usize,
    },
    /// Persistence-engine data travels in an option of 1 to 255 bytes.
    #[error("sync entry {index} has {len} bytes of persistence-engine data (1..=255)")]
    EngineData {
        /// Index of the entry.
        index: usize,
        /// Its length.
        len: usize,
    },
}

/// A received sync entry the connection table does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncImportError {
    /// keeplb's connections are proxied sockets that cannot move: only persistence
    /// templates are imported.
    #[error("sync entry for {client} is a connection, not a persistence template")]
    NotATemplate {
        /// The entry's client.
        client: SocketAddr,
    },
    /// The entry's real server is not in the service (the kernel would keep it
    /// unbound, which makes it useless at failover).
    #[error("real server {0} of a synced template is not in the service")]
    UnknownDest(SocketAddr),
}
