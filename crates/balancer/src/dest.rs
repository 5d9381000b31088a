//! The destination (real server) model: weight, connection counters, thresholds.
//!
//! Mirrors `struct ip_vs_dest` as far as scheduling needs it, with the counter and
//! overload-flag logic of `ip_vs_bind_dest` / `ip_vs_unbind_dest` (net/netfilter/ipvs/
//! ip_vs_conn.c) and the state accounting of the TCP state machine (a connection counts
//! as *active* only while ESTABLISHED).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::DestError;
use crate::stats::Stats;

/// The largest weight IPVS accepts (`ip_vs_add_dest` rejects anything above `INT_MAX`).
pub const MAX_WEIGHT: u32 = i32::MAX as u32;

/// Upper and lower connection thresholds (`ipvsadm -x` / `-y`, keepalived's
/// `uthreshold` / `lthreshold`). Zero means "not set".
///
/// A destination becomes *overloaded* when its total connection count (active plus
/// inactive) reaches `upper`, and stays so until the count drops below `lower`, or below
/// three quarters of `upper` when `lower` is zero. The gap is a hysteresis so that a
/// server at its limit does not flap between accepting and refusing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Thresholds {
    /// Total connections at which the destination stops receiving new ones; 0 = no limit.
    pub upper: u32,
    /// Total connections below which it receives new ones again; 0 = 3/4 of `upper`.
    pub lower: u32,
}

impl Thresholds {
    /// No thresholds: the destination is never overloaded.
    pub const NONE: Self = Self { upper: 0, lower: 0 };

    /// The overloaded flag after re-evaluating `total` connections against these
    /// thresholds, given the flag's current value (needed for the hysteresis band).
    ///
    /// This is the kernel's `ip_vs_dest_update_overload` (2026 form). Its default lower
    /// bound `upper - upper / 4` keeps the integer rounding of the older test
    /// `total * 4 < upper * 3`, so both kernel generations agree with it.
    fn evaluate(self, total: u64, overloaded: bool) -> bool {
        if self.upper == 0 {
            return false;
        }
        let upper = u64::from(self.upper);
        if total >= upper {
            return true;
        }
        let lower = if self.lower == 0 {
            upper - upper / 4
        } else {
            u64::from(self.lower)
        };
        overloaded && total >= lower
    }

    fn pack(self) -> u64 {
        (u64::from(self.upper) << 32) | u64::from(self.lower)
    }

    fn unpack(bits: u64) -> Self {
        Self {
            upper: (bits >> 32) as u32,
            lower: bits as u32,
        }
    }
}

/// Whether a connection currently counts as active or inactive.
///
/// Which TCP states are active is the caller's rule; [`crate::ConnTable`] applies the
/// kernel's ([`crate::ActiveStates`]: ESTABLISHED, and since Linux 4.8 also SYN_SENT,
/// SYN_RECV and SYNACK). Closing connections (FIN_WAIT, CLOSE_WAIT, TIME_WAIT…) count as
/// inactive, and UDP connections stay inactive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Counted in [`Load::inactive`].
    Inactive,
    /// Counted in [`Load::active`].
    Active,
}

/// A consistent snapshot of a destination's connection counters and overloaded flag.
///
/// All three come from one atomic word, so a scheduler never sees a connection counted
/// twice (or not at all) while it moves from inactive to active.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Load {
    /// ESTABLISHED connections (ipvsadm's `ActiveConn`).
    pub active: u32,
    /// All other connections (ipvsadm's `InActConn`).
    pub inactive: u32,
    /// Set by the thresholds: no new connections while true.
    pub overloaded: bool,
}

impl Load {
    /// Active plus inactive connections (`ip_vs_dest_totalconns`).
    pub fn total(&self) -> u64 {
        u64::from(self.active) + u64::from(self.inactive)
    }

    /// The load estimate IPVS compares: `active * 256 + inactive`
    /// (`ip_vs_dest_conn_overhead`). An active connection is taken to cost 256 times an
    /// inactive one, which is what makes (w)lc prefer servers with fewer live sessions
    /// over servers that merely hold many TIME_WAIT entries.
    pub fn overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }
}

// Layout of `Dest::conns`: one word so that counters and flag change together.
const OVERLOAD_BIT: u64 = 1 << 63;
const ACTIVE_SHIFT: u32 = 32;
const ACTIVE_MAX: u64 = (1 << 31) - 1;
const INACTIVE_MASK: u64 = u32::MAX as u64;

fn unpack_load(bits: u64) -> Load {
    Load {
        active: ((bits >> ACTIVE_SHIFT) & ACTIVE_MAX) as u32,
        inactive: (bits & INACTIVE_MASK) as u32,
        overloaded: bits & OVERLOAD_BIT != 0,
    }
}

fn pack_load(load: Load, thresholds: Thresholds) -> u64 {
    let overloaded = thresholds.evaluate(load.total(), load.overloaded);
    (u64::from(load.active) << ACTIVE_SHIFT)
        | u64::from(load.inactive)
        | if overloaded { OVERLOAD_BIT } else { 0 }
}

/// A real server of one virtual service.
///
/// Shared as `Arc<Dest>` between the control plane (which owns it in a [`crate::Pool`])
/// and every connection of the data plane (which reports its life cycle here). A
/// destination removed from its pool lives on until its last connection is gone, like a
/// kernel destination in the trash list, so late `on_close` calls stay harmless.
///
/// Weight changes go through [`crate::Pool::set_weight`] because schedulers derive state
/// from weights (wrr's gcd, sh's buckets, mh's table) and must be told.
#[derive(Debug)]
pub struct Dest {
    addr: SocketAddr,
    /// Like `conns`, accessed sequentially consistently: the least-connection index
    /// reasons about one order of all counter, weight and tree accesses.
    weight: AtomicU32,
    /// Latest non-zero weight; mh builds its table from it so that quiescing a server
    /// (weight 0) does not reshuffle everybody else's clients.
    last_weight: AtomicU32,
    thresholds: AtomicU64,
    conns: AtomicU64,
    /// Persistence templates bound here (`persistconns`); not part of the load.
    persist_conns: AtomicU32,
    /// In its service's pool: see [`Dest::in_pool`].
    in_pool: AtomicBool,
    stats: Stats,
    observers: Observers,
}

impl Dest {
    /// A destination with the given weight, no thresholds and no connections.
    ///
    /// Weight 0 is allowed: the server is *quiesced* and gets no new connections.
    pub fn new(addr: SocketAddr, weight: u32) -> Result<Self, DestError> {
        check_weight(weight)?;
        Ok(Self {
            addr,
            weight: AtomicU32::new(weight),
            last_weight: AtomicU32::new(weight),
            thresholds: AtomicU64::new(0),
            conns: AtomicU64::new(0),
            persist_conns: AtomicU32::new(0),
            in_pool: AtomicBool::new(false),
            stats: Stats::new(),
            observers: Observers::default(),
        })
    }

    /// Whether this very destination is in its service's pool (the kernel's
    /// `IP_VS_DEST_F_AVAILABLE`): a connection or persistence template bound to it finds
    /// this false once it is removed, even when another destination at the same address
    /// has been added since. A flag rather than a search of the pool, so that the data
    /// path can ask on every datagram without the service's lock.
    pub fn in_pool(&self) -> bool {
        self.in_pool.load(Ordering::Acquire)
    }

    /// Taken in by a pool: false when another pool already holds it.
    pub(crate) fn claim_for_pool(&self) -> bool {
        self.in_pool
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Let go by its pool.
    pub(crate) fn leave_pool(&self) {
        self.in_pool.store(false, Ordering::Release);
    }

    /// Builder form of [`Dest::set_thresholds`].
    #[must_use]
    pub fn with_thresholds(self, thresholds: Thresholds) -> Self {
        self.set_thresholds(thresholds);
        self
    }

    /// Address and port of the real server; unique within a service.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Current weight; 0 means quiesced.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::SeqCst)
    }

    /// The latest non-zero weight (or the initial weight if it was never non-zero).
    pub fn last_weight(&self) -> u32 {
        self.last_weight.load(Ordering::Relaxed)
    }

    /// Changes the weight. Crate-private: [`crate::Pool`] pairs it with a scheduler
    /// update, as the kernel pairs `atomic_set(&dest->weight)` with `upd_dest`.
    pub(crate) fn set_weight(&self, weight: u32) -> Result<(), DestError> {
        check_weight(weight)?;
        if weight != 0 {
            self.last_weight.store(weight, Ordering::Relaxed);
        }
        self.weight.store(weight, Ordering::SeqCst);
        Ok(())
    }

    /// Puts back both weights after a refused edit (crate-private, for
    /// [`crate::Pool`]'s rollback).
    pub(crate) fn restore_weights(&self, weight: u32, last_weight: u32) {
        self.last_weight.store(last_weight, Ordering::Relaxed);
        self.weight.store(weight, Ordering::SeqCst);
    }

    /// The current connection thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds::unpack(self.thresholds.load(Ordering::Relaxed))
    }

    /// Changes the thresholds and re-evaluates the overloaded flag against the current
    /// connection count at once (`ipvsadm -e … -x U -y L`). No scheduler update is
    /// needed: schedulers read the flag live.
    pub fn set_thresholds(&self, thresholds: Thresholds) {
        self.thresholds.store(thresholds.pack(), Ordering::Relaxed);
        self.modify_conns(Some);
    }

    /// Counters and overloaded flag, read together.
    pub fn load(&self) -> Load {
        unpack_load(self.conns.load(Ordering::SeqCst))
    }

    /// ESTABLISHED connections.
    pub fn active_conns(&self) -> u32 {
        self.load().active
    }

    /// Connections in any other state.
    pub fn inactive_conns(&self) -> u32 {
        self.load().inactive
    }

    /// Persistence templates pointing here (ipvsadm `--persistent-conn`'s
    /// `PersistConn`). The kernel keeps them out of the active/inactive counters and out
    /// of the thresholds, and so does keeplb.
    pub fn persistent_conns(&self) -> u32 {
        self.persist_conns.load(Ordering::Relaxed)
    }

    /// Traffic counters and rates of this destination (ipvsadm `--stats` / `--rate`).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A persistence template was bound to this destination (crate-private, for
    /// [`crate::ConnTable`]).
    pub(crate) fn on_template_bind(&self) {
        self.persist_conns.fetch_add(1, Ordering::Relaxed);
    }

    /// A persistence template bound here expired.
    pub(crate) fn on_template_unbind(&self) {
        let result = self
            .persist_conns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        debug_assert!(
            result.is_ok(),
            "template counter of {} underflow",
            self.addr
        );
    }

    /// Whether the thresholds currently forbid new connections.
    pub fn is_overloaded(&self) -> bool {
        self.load().overloaded
    }

    /// Whether IPVS would hand this destination a new connection at all: weight above
    /// zero and not overloaded. (Membership of the service, the kernel's
    /// `IP_VS_DEST_F_AVAILABLE`, is membership of the slice given to the scheduler.)
    pub fn available(&self) -> bool {
        self.weight() > 0 && !self.is_overloaded()
    }

    /// A new connection was bound to this destination; it starts inactive, as IPVS
    /// binds connections with `IP_VS_CONN_F_INACTIVE`. May set the overloaded flag.
    pub fn on_connect(&self) {
        self.modify_conns(|load| {
            Some(Load {
                inactive: load.inactive.checked_add(1)?,
                ..load
            })
        });
    }

    /// A connection reached ESTABLISHED: it moves from inactive to active. The total is
    /// unchanged, so the overloaded flag is too.
    pub fn on_established(&self) {
        self.modify_conns(|load| {
            Some(Load {
                active: checked_active(load.active.checked_add(1)?)?,
                inactive: load.inactive.checked_sub(1)?,
                ..load
            })
        });
    }

    /// A connection left ESTABLISHED (FIN_WAIT, CLOSE_WAIT…) but still exists: it moves
    /// from active to inactive.
    pub fn on_closing(&self) {
        self.modify_conns(|load| {
            Some(Load {
                active: load.active.checked_sub(1)?,
                inactive: load.inactive.checked_add(1)?,
                ..load
            })
        });
    }

    /// A connection in `state` is gone. May clear the overloaded flag.
    pub fn on_close(&self, state: ConnState) {
        self.modify_conns(|load| match state {
            ConnState::Active => Some(Load {
                active: load.active.checked_sub(1)?,
                ..load
            }),
            ConnState::Inactive => Some(Load {
                inactive: load.inactive.checked_sub(1)?,
                ..load
            }),
        });
    }

    /// Binds a new connection and returns a guard that reports its state changes and
    /// closes it when dropped, so that a panicking or early-returning connection task
    /// cannot leak a count.
    #[must_use = "dropping the guard closes the connection at once"]
    pub fn connect(self: &Arc<Self>) -> ConnGuard {
        self.on_connect();
        ConnGuard {
            dest: Arc::clone(self),
            state: ConnState::Inactive,
        }
    }

    /// Applies `change` to the counters and re-evaluates the overloaded flag, atomically,
    /// then tells the observers. A change that would underflow or overflow a counter is a
    /// bug in the caller; it is ignored (and asserted in debug builds) rather than
    /// corrupting the other counter.
    ///
    /// Sequentially consistent, together with the observers' flag: see [`Observers`].
    fn modify_conns(&self, change: impl Fn(Load) -> Option<Load>) {
        let thresholds = self.thresholds();
        let result = self
            .conns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                change(unpack_load(bits)).map(|load| pack_load(load, thresholds))
            });
        debug_assert!(
            result.is_ok(),
            "connection counter of {} out of range",
            self.addr
        );
        if let Ok(bits) = result
            && self.observers.any.load(Ordering::SeqCst)
        {
            let before = unpack_load(bits);
            // `change` is pure: this is the value just stored.
            let after = change(before).map(|load| unpack_load(pack_load(load, thresholds)));
            if let Some(after) = after {
                self.observers.notify(before, after);
            }
        }
    }

    /// Registers `observer`, to which this destination is the one at `position`, to hear
    /// of every later change of the counters or the overloaded flag (crate-private, for
    /// the least-connection index). Replaces an earlier registration of the same
    /// observer.
    ///
    /// An observer that reads the counters after this returns sees every change it is
    /// not told about.
    pub(crate) fn attach(&self, observer: Arc<dyn LoadObserver>, position: usize) {
        let mut list = self.observers.write();
        list.retain(|o| !o.is(observer.as_ref()));
        list.push(Registration { observer, position });
        self.observers.any.store(true, Ordering::SeqCst);
    }

    /// Unregisters `observer`; harmless if it was not registered.
    pub(crate) fn detach(&self, observer: &dyn LoadObserver) {
        let mut list = self.observers.write();
        list.retain(|o| !o.is(observer));
        self.observers.any.store(!list.is_empty(), Ordering::SeqCst);
    }

    /// How many observers are registered (for tests of attachment bookkeeping).
    #[cfg(test)]
    pub(crate) fn observer_count(&self) -> usize {
        self.observers.write().len()
    }
}

/// Derived state over destinations' loads (the least-connection index), which must hear
/// of every change of a destination's counters or overloaded flag.
pub(crate) trait LoadObserver: Send + Sync {
    /// The counters or the overloaded flag of the destination registered at `position`
    /// changed from `before` to `after`. Called from whichever thread made the change,
    /// after it was made (the destination may have changed again since).
    fn load_changed(&self, position: usize, before: Load, after: Load);
}

/// One observer of a destination and the destination's position in it.
struct Registration {
    observer: Arc<dyn LoadObserver>,
    position: usize,
}

impl Registration {
    fn is(&self, observer: &dyn LoadObserver) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.observer), observer)
    }
}

/// The observers of one destination.
///
/// Why no change goes unseen by a new observer: a counter change is a sequentially
/// consistent read-modify-write of `conns` followed by a sequentially consistent load of
/// `any`; [`Dest::attach`] stores `any` after registering, and the observer then reads
/// `conns`. In the single order of these operations, either the load of `any` comes
/// after the store (the change is reported) or the change comes before the observer's
/// read (the observer sees it). When `any` was already set, the lock orders them
/// instead: a change whose thread read the list before the registration happens before
/// the registration, so before the observer's read. A destination nobody observes pays
/// one load per change.
#[derive(Default)]
struct Observers {
    any: AtomicBool,
    list: RwLock<Vec<Registration>>,
}

impl Observers {
    /// Tells every observer; the caller checked `any` (after its change).
    fn notify(&self, before: Load, after: Load) {
        // Reading the list cannot be poisoned (only writers poison), and a writer that
        // panicked left a list of whole registrations.
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        for registration in list.iter() {
            registration
                .observer
                .load_changed(registration.position, before, after);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Registration>> {
        self.list.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Observers {
    /// Only the count: an observer refers back to its destinations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.list.read().map_or(0, |list| list.len());
        write!(f, "{count} observer(s)")
    }
}

fn check_weight(weight: u32) -> Result<(), DestError> {
    if weight > MAX_WEIGHT {
        return Err(DestError::WeightOutOfRange { weight });
    }
    Ok(())
}

fn checked_active(active: u32) -> Option<u32> {
    (u64::from(active) <= ACTIVE_MAX).then_some(active)
}

/// One connection bound to a destination; see [`Dest::connect`].
#[derive(Debug)]
pub struct ConnGuard {
    dest: Arc<Dest>,
    state: ConnState,
}

impl ConnGuard {
    /// The destination this connection is bound to.
    pub fn dest(&self) -> &Arc<Dest> {
        &self.dest
    }

    /// Whether the connection currently counts as active.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The connection reached ESTABLISHED. Idempotent.
    pub fn established(&mut self) {
        if self.state == ConnState::Inactive {
            self.dest.on_established();
            self.state = ConnState::Active;
        }
    }

    /// The connection left ESTABLISHED but is not gone yet. Idempotent.
    pub fn closing(&mut self) {
        if self.state == ConnState::Active {
            self.dest.on_closing();
            self.state = ConnState::Inactive;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.dest.on_close(self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(weight: u32, upper: u32, lower: u32) -> Arc<Dest> {
        let addr = SocketAddr::from(([10, 0, 0, 1], 80));
        Arc::new(
            Dest::new(addr, weight)
                .unwrap()
                .with_thresholds(Thresholds { upper, lower }),
        )
    }

    #[test]
    fn counters_follow_the_connection_life_cycle() {
        let d = dest(1, 0, 0);
        d.on_connect();
        d.on_connect();
        assert_eq!(
            d.load(),
            Load {
                active: 0,
                inactive: 2,
                overloaded: false
            }
        );
        d.on_established();
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 1));
        assert_eq!(d.load().overhead(), 257);
        d.on_closing();
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 2));
        d.on_close(ConnState::Inactive);
        d.on_close(ConnState::Inactive);
        assert_eq!(d.load(), Load::default());
    }

    #[test]
    fn guard_closes_in_its_current_state() {
        let d = dest(1, 0, 0);
        let mut a = d.connect();
        let b = d.connect();
        a.established();
        a.established();
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 1));
        drop(a);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
        drop(b);
        assert_eq!(d.load(), Load::default());
    }

    #[test]
    fn overloaded_at_upper_cleared_below_lower() {
        let d = dest(1, 4, 2);
        for _ in 0..3 {
            d.on_connect();
        }
        assert!(!d.is_overloaded());
        d.on_connect();
        assert!(d.is_overloaded() && !d.available());
        // The band [lower, upper) keeps the flag.
        d.on_close(ConnState::Inactive);
        d.on_close(ConnState::Inactive);
        assert!(d.is_overloaded(), "2 connections are not below lower=2");
        d.on_close(ConnState::Inactive);
        assert!(!d.is_overloaded() && d.available());
    }

    #[test]
    fn default_lower_is_three_quarters_of_upper_rounded_up() {
        // upper 10: cleared below 8 (10 - 10/4 = 8, i.e. 4*total < 30).
        let d = dest(1, 10, 0);
        for _ in 0..10 {
            d.on_connect();
        }
        assert!(d.is_overloaded());
        d.on_close(ConnState::Inactive);
        d.on_close(ConnState::Inactive);
        assert!(d.is_overloaded(), "8 is not below 7.5");
        d.on_close(ConnState::Inactive);
        assert!(!d.is_overloaded());
        // upper 2: cleared at 1 (4*1 < 6), as the kernel's old test did.
        let d = dest(1, 2, 0);
        d.on_connect();
        d.on_connect();
        assert!(d.is_overloaded());
        d.on_close(ConnState::Inactive);
        assert!(!d.is_overloaded());
    }

    #[test]
    fn active_and_inactive_both_count_towards_thresholds() {
        let d = dest(1, 2, 0);
        d.on_connect();
        d.on_established();
        d.on_connect();
        assert!(d.is_overloaded());
    }

    #[test]
    fn editing_thresholds_re_evaluates_the_flag() {
        let d = dest(1, 0, 0);
        for _ in 0..5 {
            d.on_connect();
        }
        assert!(!d.is_overloaded());
        d.set_thresholds(Thresholds { upper: 5, lower: 0 });
        assert!(d.is_overloaded());
        d.set_thresholds(Thresholds { upper: 6, lower: 4 });
        assert!(d.is_overloaded(), "5 is inside the hysteresis band [4, 6)");
        d.set_thresholds(Thresholds::NONE);
        assert!(!d.is_overloaded());
    }

    #[test]
    fn weight_zero_is_quiesced_and_last_weight_remembers() {
        let d = dest(5, 0, 0);
        d.set_weight(0).unwrap();
        assert!(!d.available());
        assert_eq!((d.weight(), d.last_weight()), (0, 5));
        d.set_weight(7).unwrap();
        assert_eq!((d.weight(), d.last_weight()), (7, 7));
        assert!(d.set_weight(MAX_WEIGHT + 1).is_err());
        assert!(Dest::new(d.addr(), u32::MAX).is_err());
    }

    #[test]
    fn counters_stay_exact_across_threads() {
        let d = dest(1, 0, 0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let mut c = d.connect();
                        c.established();
                        c.closing();
                    }
                });
            }
        });
        assert_eq!(d.load(), Load::default());
    }
}
