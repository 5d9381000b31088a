//! lblc and lblcr: remember which server(s) handled each destination address.
//!
//! Made for cache clusters: requests for the same destination address (the origin
//! server, or here the virtual address) should keep hitting the same cache. lblc
//! (ip_vs_lblc.c) remembers one server per address, lblcr (ip_vs_lblcr.c) a set of them
//! that grows when its members are busy and shrinks again when it has not changed for a
//! long time. New addresses, and addresses whose server is unusable or busy, are
//! scheduled by weighted least connection.
//!
//! *Busy* is the kernel's own test: more active connections than its weight while some
//! server of the service has less than half its weight in active connections.
//!
//! The tables and their garbage collection mirror the kernel's: 1024 buckets hashed with
//! `hash_32`; every 60 s a collection pass (here run lazily by the first `pick` after the
//! deadline, from the `now` it is given) removes entries idle for 6 minutes when the
//! table holds more than 16384 of them, and every 30 passes a full pass removes entries
//! idle for longer than the expiration (24 h, the `lblc_expiration` /
//! `lblcr_expiration` sysctls).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::hash::{fold_addr, hash_32};
use crate::scheduler::select::{Cost, least_cost};
use crate::scheduler::{Scheduler, SchedulerKind};

const TAB_BITS: u32 = 10;
const TAB_SIZE: usize = 1 << TAB_BITS;
/// Above this many entries the periodic pass starts evicting idle ones.
const MAX_ENTRIES: usize = TAB_SIZE * 16;
const CHECK_EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
/// Idle time after which an entry may be evicted when the table is over-full.
const ENTRY_TIMEOUT: Duration = Duration::from_secs(6 * 60);
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
/// At most this many missed 60 s passes are caught up in one `pick`; more would only
/// repeat the same work with the same `now`.
const MAX_CATCH_UP: u32 = 2 * COUNT_FOR_FULL_EXPIRATION;

/// Default for [`Lblc::with_expiration`] and [`Lblcr::with_expiration`]: 24 hours, the
/// kernel's `DEFAULT_EXPIRATION`.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The busy test shared by lblc and lblcr (`is_overloaded` in both kernel files).
fn busy(dests: &[Arc<Dest>], index: usize) -> bool {
    let Some(dest) = dests.get(index) else {
        return true;
    };
    dest.active_conns() > dest.weight()
        && dests
            .iter()
            .any(|d| u64::from(d.active_conns()) * 2 < u64::from(d.weight()))
}

fn table_key(flow: &Flow) -> IpAddr {
    flow.vip.ip().to_canonical()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a table half-updated in a way that
    // matters for scheduling, so a poisoned lock is simply taken over.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the hash table needs to know of an entry.
trait Entry {
    fn addr(&self) -> IpAddr;
    fn last_use(&self) -> Duration;
    fn set_last_use(&mut self, now: Duration);
}

/// The kernel's locality table: buckets, entry count and collection state.
#[derive(Debug)]
struct Table<E> {
    buckets: Vec<Vec<E>>,
    entries: usize,
    /// Bucket where the last collection pass stopped; the next one continues after it.
    rover: usize,
    /// Passes since the last full expiration pass.
    counter: u32,
    next_check: Option<Duration>,
}

impl<E: Entry> Table<E> {
    fn new() -> Self {
        Self {
            buckets: (0..TAB_SIZE).map(|_| Vec::new()).collect(),
            entries: 0,
            rover: 0,
            counter: 1,
            next_check: None,
        }
    }

    fn bucket(addr: IpAddr) -> usize {
        hash_32(fold_addr(addr), TAB_BITS) as usize
    }

    fn get_mut(&mut self, addr: IpAddr) -> Option<&mut E> {
        self.buckets[Self::bucket(addr)]
            .iter_mut()
            .find(|e| e.addr() == addr)
    }

    fn insert(&mut self, entry: E) {
        self.buckets[Self::bucket(entry.addr())].push(entry);
        self.entries += 1;
    }

    /// The entry for `addr`, marked used at `now`, after the collection passes due by
    /// `now`: how every pick starts.
    fn use_entry(&mut self, addr: IpAddr, now: Duration, expiration: Duration) -> Option<&mut E> {
        self.collect_garbage(now, expiration);
        let entry = self.get_mut(addr)?;
        entry.set_last_use(now);
        Some(entry)
    }

    fn entries_mut(&mut self) -> impl Iterator<Item = &mut E> {
        self.buckets.iter_mut().flatten()
    }

    /// Runs the collection passes the kernel's 60 s timer would have run by `now`.
    fn collect_garbage(&mut self, now: Duration, expiration: Duration) {
        let mut next = *self.next_check.get_or_insert(now + CHECK_EXPIRE_INTERVAL);
        let mut passes = 0;
        while now >= next && passes < MAX_CATCH_UP {
            self.pass(now, expiration);
            next += CHECK_EXPIRE_INTERVAL;
            passes += 1;
        }
        if now >= next {
            next = now + CHECK_EXPIRE_INTERVAL;
        }
        self.next_check = Some(next);
    }

    /// One timer pass (`ip_vs_lblc_check_expire`).
    fn pass(&mut self, now: Duration, expiration: Duration) {
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            self.sweep(now, expiration, usize::MAX);
            self.counter = 1;
        } else if self.entries <= MAX_ENTRIES {
            self.counter += 1;
        } else {
            let goal = ((self.entries - MAX_ENTRIES) * 4 / 3).min(MAX_ENTRIES / 2);
            self.sweep(now, ENTRY_TIMEOUT, goal);
        }
    }

    /// Removes entries idle for at least `idle`, bucket by bucket after the rover, until
    /// `goal` entries are gone or every bucket was visited.
    fn sweep(&mut self, now: Duration, idle: Duration, goal: usize) {
        let mut removed = 0;
        let mut j = self.rover;
        for _ in 0..TAB_SIZE {
            j = (j + 1) % TAB_SIZE;
            let bucket = &mut self.buckets[j];
            let before = bucket.len();
            bucket.retain(|e| now.saturating_sub(e.last_use()) < idle);
            removed += before - bucket.len();
            if removed >= goal {
                break;
            }
        }
        self.entries -= removed;
        self.rover = j;
    }
}

/// Declares a locality scheduler: its table of `$entry`, its expiration and the
/// constructors and accessors lblc and lblcr share. `$expiration_doc` documents
/// `with_expiration`, where the two differ.
macro_rules! locality_scheduler {
    ($(#[$doc:meta])* $name:ident($entry:ty), $(#[$expiration_doc:meta])*) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            table: Mutex<Table<$entry>>,
            expiration: Duration,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// A scheduler with the kernel's default expiration of 24 hours.
            pub fn new() -> Self {
                Self::with_expiration(DEFAULT_EXPIRATION)
            }

            $(#[$expiration_doc])*
            pub fn with_expiration(expiration: Duration) -> Self {
                Self {
                    table: Mutex::new(Table::new()),
                    expiration,
                }
            }

            /// Number of destination addresses remembered.
            pub fn len(&self) -> usize {
                lock(&self.table).entries
            }

            /// Whether no destination address is remembered.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
}

/// lblc's entry: destination address → one server.
#[derive(Debug)]
struct LblcEntry {
    addr: IpAddr,
    dest: SocketAddr,
    /// Index of `dest` in the current list; `None` once it was removed.
    index: Option<usize>,
    last_use: Duration,
}

impl Entry for LblcEntry {
    fn addr(&self) -> IpAddr {
        self.addr
    }

    fn last_use(&self) -> Duration {
        self.last_use
    }

    fn set_last_use(&mut self, now: Duration) {
        self.last_use = now;
    }
}

locality_scheduler!(
    /// Locality-based least connection (`lblc`).
    Lblc(LblcEntry),
    /// A scheduler whose full expiration pass drops entries idle for `expiration`
    /// (the `net.ipv4.vs.lblc_expiration` sysctl).
);

impl Scheduler for Lblc {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lblc
    }

    /// Entries keep pointing at their server by address; one that was removed makes its
    /// entries invalid, so they are rescheduled on next use (the kernel's
    /// `IP_VS_DEST_F_AVAILABLE` test).
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        let index = index_by_addr(dests);
        let table = self.table.get_mut().unwrap_or_else(PoisonError::into_inner);
        for entry in table.entries_mut() {
            entry.index = index.get(&entry.dest).copied();
        }
        Ok(())
    }

    /// Deliberate difference: the kernel keeps using a cached server that crossed its
    /// upper connection threshold (it only checks weight and the busy test); here such a
    /// server is rescheduled like an unusable one, because every other scheduler treats
    /// the threshold as a hard limit and operators set it as one.
    fn pick(&self, dests: &[Arc<Dest>], flow: &Flow, now: Duration) -> Option<usize> {
        let key = table_key(flow);
        {
            let mut table = lock(&self.table);
            if let Some(entry) = table.use_entry(key, now, self.expiration)
                && let Some(i) = entry.index
                && dests.get(i).is_some_and(|d| d.available())
                && !busy(dests, i)
            {
                return Some(i);
            }
        }
        // Scan without holding the lock, as the kernel does.
        let chosen = least_cost(dests.iter().enumerate(), Cost::WeightedOverhead)?;
        let dest = dests[chosen].addr();
        let mut table = lock(&self.table);
        match table.get_mut(key) {
            Some(entry) => {
                entry.dest = dest;
                entry.index = Some(chosen);
            }
            None => table.insert(LblcEntry {
                addr: key,
                dest,
                index: Some(chosen),
                last_use: now,
            }),
        }
        Some(chosen)
    }
}

/// A server of an lblcr set. The `Arc` keeps a removed server's counters readable, as
/// the kernel keeps a removed destination alive in its trash while sets refer to it.
#[derive(Debug)]
struct Member {
    dest: Arc<Dest>,
    /// Index in the current list; `None` once the server was removed.
    index: Option<usize>,
}

/// lblcr's entry: destination address → a set of servers, newest first.
#[derive(Debug)]
struct LblcrEntry {
    addr: IpAddr,
    set: Vec<Member>,
    last_modified: Duration,
    last_use: Duration,
}

impl Entry for LblcrEntry {
    fn addr(&self) -> IpAddr {
        self.addr
    }

    fn last_use(&self) -> Duration {
        self.last_use
    }

    fn set_last_use(&mut self, now: Duration) {
        self.last_use = now;
    }
}

impl LblcrEntry {
    /// The least loaded usable member (`ip_vs_dest_set_min`).
    fn least_loaded(&self, dests: &[Arc<Dest>]) -> Option<usize> {
        let members = self
            .set
            .iter()
            .filter_map(|m| m.index.and_then(|i| dests.get(i).map(|d| (i, d))));
        least_cost(members, Cost::WeightedOverhead)
    }

    /// Position in the set of the member with the highest overhead per weight, removed
    /// or not, first among equals (`ip_vs_dest_set_max`).
    fn most_loaded(&self) -> Option<usize> {
        let mut most: Option<(usize, u64, u32)> = None;
        for (pos, member) in self.set.iter().enumerate() {
            let weight = member.dest.weight();
            if weight == 0 {
                continue;
            }
            let overhead = member.dest.load().overhead();
            let heavier = most.is_none_or(|(_, most_overhead, most_weight)| {
                u128::from(most_overhead) * u128::from(weight)
                    < u128::from(overhead) * u128::from(most_weight)
            });
            if heavier {
                most = Some((pos, overhead, weight));
            }
        }
        most.map(|(pos, _, _)| pos)
    }
}

locality_scheduler!(
    /// Locality-based least connection with replication (`lblcr`).
    Lblcr(LblcrEntry),
    /// A scheduler whose sets shrink, and whose entries expire, after `expiration`
    /// without change or use (the `net.ipv4.vs.lblcr_expiration` sysctl).
);

impl Lblcr {
    /// The servers remembered for destination address `addr`, newest first.
    pub fn server_set(&self, addr: IpAddr) -> Vec<SocketAddr> {
        lock(&self.table)
            .get_mut(addr.to_canonical())
            .map(|e| e.set.iter().map(|m| m.dest.addr()).collect())
            .unwrap_or_default()
    }
}

impl Scheduler for Lblcr {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lblcr
    }

    /// Members follow their server by address; removed servers stay in their sets as
    /// unusable members until the set shrinks them away.
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        let index = index_by_addr(dests);
        let table = self.table.get_mut().unwrap_or_else(PoisonError::into_inner);
        for entry in table.entries_mut() {
            for member in &mut entry.set {
                member.index = index.get(&member.dest.addr()).copied();
                if let Some(&i) = member.index.as_ref() {
                    member.dest = Arc::clone(&dests[i]);
                }
            }
        }
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], flow: &Flow, now: Duration) -> Option<usize> {
        let key = table_key(flow);
        {
            let mut table = lock(&self.table);
            if let Some(entry) = table.use_entry(key, now, self.expiration) {
                let least = entry.least_loaded(dests);
                // A set that has not changed for the expiration time loses its most
                // loaded member, so sets grown during a burst shrink back.
                if entry.set.len() > 1
                    && now.saturating_sub(entry.last_modified) > self.expiration
                    && let Some(pos) = entry.most_loaded()
                {
                    entry.set.remove(pos);
                    entry.last_modified = now;
                }
                if let Some(i) = least
                    && !busy(dests, i)
                {
                    return Some(i);
                }
            }
        }
        let chosen = least_cost(dests.iter().enumerate(), Cost::WeightedOverhead)?;
        let member = Member {
            dest: Arc::clone(&dests[chosen]),
            index: Some(chosen),
        };
        let mut table = lock(&self.table);
        match table.get_mut(key) {
            Some(entry) => {
                if !entry.set.iter().any(|m| m.index == Some(chosen)) {
                    entry.set.insert(0, member);
                    entry.last_modified = now;
                }
            }
            None => table.insert(LblcrEntry {
                addr: key,
                set: vec![member],
                last_modified: now,
                last_use: now,
            }),
        }
        Some(chosen)
    }
}

fn index_by_addr(dests: &[Arc<Dest>]) -> HashMap<SocketAddr, usize> {
    dests
        .iter()
        .enumerate()
        .map(|(i, d)| (d.addr(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{addr, dests, overload, set_conns};

    const HOUR: Duration = Duration::from_secs(3600);

    fn to(vip: u8) -> Flow {
        Flow::new(
            SocketAddr::from(([192, 0, 2, 1], 1000)),
            SocketAddr::from(([198, 51, 100, vip], 80)),
        )
    }

    fn pick(s: &dyn Scheduler, d: &[Arc<Dest>], vip: u8, now: Duration) -> Option<usize> {
        s.pick(d, &to(vip), now)
    }

    fn lblc(d: &[Arc<Dest>]) -> Lblc {
        let mut s = Lblc::new();
        s.update(d).unwrap();
        s
    }

    fn lblcr(d: &[Arc<Dest>]) -> Lblcr {
        let mut s = Lblcr::new();
        s.update(d).unwrap();
        s
    }

    #[test]
    fn lblc_remembers_the_server_of_each_destination_address() {
        let d = dests(&[1, 1, 1]);
        set_conns(&d[0], 1, 0);
        let s = lblc(&d);
        assert_eq!(
            pick(&s, &d, 1, Duration::ZERO),
            Some(1),
            "wlc: B and C tie, B first"
        );
        set_conns(&d[1], 1, 0);
        assert_eq!(
            pick(&s, &d, 1, Duration::ZERO),
            Some(1),
            "cached although C is idle"
        );
        assert_eq!(
            pick(&s, &d, 2, Duration::ZERO),
            Some(2),
            "another address: wlc"
        );
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn lblc_reschedules_when_the_cached_server_is_busy() {
        let d = dests(&[2, 2, 2]);
        let s = lblc(&d);
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(0));
        set_conns(&d[0], 3, 0); // 3 active > weight 2
        set_conns(&d[1], 1, 0); // 2 * 1 < 2 is false
        set_conns(&d[2], 1, 0);
        assert_eq!(
            pick(&s, &d, 1, Duration::ZERO),
            Some(0),
            "nobody is less loaded"
        );
        d[2].on_close(crate::ConnState::Active); // C: 0 active, 2 * 0 < 2
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(2));
        assert_eq!(
            pick(&s, &d, 1, Duration::ZERO),
            Some(2),
            "the entry moved to C"
        );
    }

    #[test]
    fn lblc_reschedules_quiesced_overloaded_and_removed_servers() {
        let d = dests(&[1, 1, 1]);
        let mut s = lblc(&d);
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(0));
        overload(&d[0]);
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(1));
        d[1].set_weight(0).unwrap();
        s.update(&d).unwrap();
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(2));
        let without_c = vec![d[0].clone(), d[1].clone()];
        s.update(&without_c).unwrap();
        assert_eq!(pick(&s, &without_c, 1, Duration::ZERO), None);
    }

    #[test]
    fn lblc_entries_expire_after_a_day_of_disuse() {
        let d = dests(&[1, 1]);
        let s = lblc(&d);
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(0));
        set_conns(&d[0], 1, 0);
        assert_eq!(pick(&s, &d, 2, 20 * HOUR), Some(1));
        // Within the passes caught up at 24 h 31 min is a full pass: entry 1 is older
        // than a day, entry 2 is not.
        let later = 24 * HOUR + Duration::from_secs(31 * 60);
        assert_eq!(pick(&s, &d, 3, later), Some(1));
        assert_eq!(s.len(), 2);
        // Address 1 is scheduled afresh (B, by wlc); its old entry would have kept A,
        // which is not busy.
        assert_eq!(pick(&s, &d, 1, later), Some(1));
    }

    #[test]
    fn lblc_evicts_idle_entries_when_over_full() {
        let d = dests(&[1]);
        let s = lblc(&d);
        let addresses = MAX_ENTRIES + 300;
        for n in 0..addresses {
            let vip = SocketAddr::new(IpAddr::from(u32::try_from(n).unwrap().to_be_bytes()), 80);
            let f = Flow::new(addr(0), vip);
            assert_eq!(s.pick(&d, &f, Duration::ZERO), Some(0));
        }
        assert_eq!(s.len(), addresses);
        // Idle for 7 minutes: the first pass evicts at least excess * 4/3 idle entries,
        // whole buckets at a time; later passes see a table within bounds.
        assert_eq!(pick(&s, &d, 1, Duration::from_secs(7 * 60)), Some(0));
        assert!(s.len() <= MAX_ENTRIES + 1, "{}", s.len());
        assert!(s.len() >= MAX_ENTRIES - MAX_ENTRIES / 2);
    }

    #[test]
    fn lblcr_grows_the_set_when_its_members_are_busy() {
        let d = dests(&[2, 2, 2]);
        let s = lblcr(&d);
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(0));
        set_conns(&d[0], 3, 0);
        assert_eq!(
            pick(&s, &d, 1, Duration::ZERO),
            Some(1),
            "A busy: wlc adds B"
        );
        assert_eq!(s.server_set(to(1).vip.ip()), vec![addr(1), addr(0)]);
        set_conns(&d[1], 1, 0);
        // The set's least loaded member is B (1 active vs 3); B is not busy.
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(1));
        assert_eq!(s.server_set(to(1).vip.ip()).len(), 2);
    }

    #[test]
    fn lblcr_shrinks_an_unchanged_set_after_the_expiration() {
        let d = dests(&[2, 2, 2]);
        let s = lblcr(&d);
        pick(&s, &d, 1, Duration::ZERO);
        set_conns(&d[0], 3, 0);
        assert_eq!(pick(&s, &d, 1, HOUR), Some(1));
        // Used every hour, but unchanged for more than a day: A (most loaded) goes.
        for h in 2..=25 {
            assert_eq!(pick(&s, &d, 1, h * HOUR), Some(1));
        }
        assert_eq!(pick(&s, &d, 1, 25 * HOUR + Duration::from_secs(1)), Some(1));
        assert_eq!(s.server_set(to(1).vip.ip()), vec![addr(1)]);
    }

    #[test]
    fn lblcr_skips_removed_and_unavailable_members() {
        let d = dests(&[1, 1, 1]);
        let mut s = lblcr(&d);
        assert_eq!(pick(&s, &d, 1, Duration::ZERO), Some(0));
        let without_a = vec![d[1].clone(), d[2].clone()];
        s.update(&without_a).unwrap();
        assert_eq!(
            pick(&s, &without_a, 1, Duration::ZERO),
            Some(0),
            "B, now index 0"
        );
        assert_eq!(s.server_set(to(1).vip.ip()), vec![addr(1), addr(0)]);
        overload(&d[1]);
        overload(&d[2]);
        assert_eq!(pick(&s, &without_a, 1, Duration::ZERO), None);
    }
}
