//! The scheduling core of keeplb: which real server gets the next connection.
//!
//! keeplb reproduces Linux IPVS in userspace, so the kernel's behaviour is the
//! specification here, down to iteration order and tie-breaking: an operator moving a
//! `keepalived.conf` from a kernel director to keeplb should see the same real servers
//! chosen for the same connections. Every scheduler documents the kernel file it mirrors
//! and each place where we deliberately differ.
//!
//! # Design
//!
//! Nothing here does I/O, reads a clock or spawns a task; time comes in as an explicit
//! `now` so expiry logic is testable without sleeping.
//!
//! - [`Dest`] is a real server: address, weight, connection counters and the
//!   upper/lower connection thresholds with IPVS's *overloaded* flag. The counters are
//!   atomics, shared by every worker thread of the data plane, which reports connection
//!   life-cycle events through [`Dest::on_connect`], [`Dest::on_established`],
//!   [`Dest::on_closing`] and [`Dest::on_close`] (or the RAII [`ConnGuard`]). Sharing
//!   one set of counters is what keeps least-connection scheduling exact across workers.
//! - [`Scheduler`] is one IPVS scheduling algorithm. [`Scheduler::pick`] takes `&self`
//!   so that many workers can schedule at once: stateless schedulers (lc, wlc, sh, mh…)
//!   take no lock at all, round-robin state advances with compare-and-swap, and only the
//!   locality tables (lblc, lblcr) sit behind a mutex, as they do behind a spinlock in the
//!   kernel. [`Scheduler::update`] takes `&mut self`: like the kernel's
//!   `add_dest`/`del_dest`/`upd_dest` hooks it rebuilds derived state (tables, gcd,
//!   positions) whenever the destination list or a weight changes.
//! - [`Pool`] keeps the destination list in the kernel's order (a newly added server goes
//!   to the front, as `list_add_rcu` puts it there) and calls [`Scheduler::update`] after
//!   every change, so the two can never disagree. The data plane is expected to hold a
//!   `Pool` behind a read-write lock.
//! - [`Service`] is a virtual service: its [`ServiceAddr`], its `Pool`, optional
//!   [`Persistence`] (timeout and client [`Granularity`]) and its [`Stats`].
//! - [`ConnTable`] is the kernel's connection table: connections with their TCP/UDP
//!   state and timeout (the kernel's state table and default timeouts), persistence
//!   templates with the kernel's reuse and expiry rules, the destinations'
//!   ActiveConn/InActConn/PersistConn counters kept as the kernel keeps them, and
//!   `ipvsadm -Lnc` rows ([`ConnEntry`]). Expiry runs from explicit `now` values.
//! - [`Stats`] holds the per-service and per-destination counters (conns, packets,
//!   bytes) and IPVS's 2-second EWMA rate estimator.
//! - [`sync`] is the kernel's connection-sync wire format (keepalived's
//!   `lvs_sync_daemon`): [`ConnTable::export_templates`] and
//!   [`ConnTable::import_template`] carry persistence templates from the MASTER to
//!   the BACKUP through it, so persistent clients keep their real server after a
//!   failover.
//! - [`from_name`] (also reachable as `<dyn Scheduler>::from_name`) and
//!   [`SchedulerKind`] map ipvsadm's scheduler names and `-b` flags ([`SchedFlags`])
//!   to implementations.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use keeplb_balancer::{Dest, Flow, Pool, SchedFlags, from_name};
//!
//! let mut pool = Pool::new(from_name("wrr", SchedFlags::EMPTY)?);
//! pool.add(Arc::new(Dest::new("10.0.0.1:80".parse()?, 3)?))?;
//! pool.add(Arc::new(Dest::new("10.0.0.2:80".parse()?, 1)?))?;
//! let flow = Flow::new("192.0.2.7:40000".parse()?, "198.51.100.1:80".parse()?);
//! let dest = pool.pick(&flow, Duration::ZERO).expect("a destination");
//! let mut conn = dest.connect(); // counted, inactive
//! conn.established(); // now active
//! assert_eq!(dest.active_conns(), 1);
//! drop(conn); // closed
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where we differ from the kernel, on purpose
//!
//! - `lblc` honours a cached server's upper connection threshold (the kernel keeps using
//!   a cached server that crossed `u_threshold`; every other scheduler refuses it).
//! - `twos` draws its two candidates from a seedable, deterministic generator with an
//!   unbiased range (the kernel uses `prandom` and a range one too wide, which favours the
//!   first server very slightly).
//! - Thresholds follow the 2026 kernel fix that re-evaluates the overloaded flag when
//!   thresholds are edited, rather than the older behaviour of clearing it.
//! - lblc / lblcr garbage collection runs from `pick` when its 60 s deadline has passed
//!   (catching up missed passes with the current `now`) instead of from a timer.
//!
//! Not a difference: mh hashes with the kernel's own fixed-key SipHash, so keeplb and
//! kernel directors build identical Maglev tables (see [`scheduler::maglev`]).

pub mod conn;
mod dest;
mod error;
mod flow;
mod hash;
mod pool;
pub mod scheduler;
mod service;
pub mod sip;
pub mod stats;
pub mod sync;
mod tunnel;

pub use conn::{
    ActiveStates, Conn, ConnEntry, ConnKey, ConnSettings, ConnTable, Direction, Imported,
    ProtoState, TcpFlags, TcpState, Timeouts, Unscheduled,
};
pub use dest::{ConnGuard, ConnState, Dest, Load, MAX_WEIGHT, Thresholds};
pub use error::{
    DestError, PoolError, SchedulerError, SyncDecodeError, SyncEncodeError, SyncImportError,
};
pub use flow::Flow;
pub use pool::Pool;
pub use scheduler::{SchedFlags, Scheduler, SchedulerKind, from_name};
pub use service::{
    EngineKey, FTP_PORT, Granularity, Persistence, PersistenceEngine, Protocol, Service,
    ServiceAddr,
};
pub use stats::{Counters, Rates, Stats};
pub use sync::{Encoded, SkipReason, Skipped, SyncConn, SyncMessage};
pub use tunnel::{Tunnel, TunnelChecksum, TunnelType};
