//! mh: Maglev consistent hashing (ip_vs_mh.c; Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each destination derives a permutation of the lookup table's slots from two hashes of
//! its own address (an `offset` and a `skip`); the table is filled by letting the
//! destinations take turns claiming their next preferred free slot, a destination taking
//! as many slots per turn as its (scaled) weight. A client maps to the slot its address
//! hashes to. Because each destination's preferences do not depend on the others,
//! adding or removing one moves few slots between the remaining ones, and because every
//! input is fixed, every director builds the same table.
//!
//! # Hash keys: the kernel's, on purpose
//!
//! The kernel hashes with `hsiphash` under two **constant** keys (`generate_hash_secret`
//! in ip_vs_mh.c), not random ones. We use the same function and keys, so a keeplb
//! director builds exactly the table a 64-bit kernel director builds for the same
//! destination list: a mixed kernel/keeplb cluster, or a migration from one to the
//! other, sends each client to the same real server. A fixed general-purpose hash
//! (xxh3 with a constant seed) would have been as stable across restarts and directors,
//! but not compatible with the kernel.
//!
//! # Weights
//!
//! The table is built from each destination's *last non-zero* weight. Quiescing a server
//! (weight 0) therefore keeps the table as it is: only that server's clients are
//! refused, or with `mh-fallback` rehashed elsewhere, and everybody else stays put.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::hash::{SipKey, fold_addr, hsiphash_u32};
use crate::scheduler::select::gcd_of;
use crate::scheduler::{Scheduler, SchedulerKind};

/// The table sizes the kernel offers (`primes[]` in ip_vs_mh.c), selected there by
/// `CONFIG_IP_VS_MH_TAB_INDEX` 8..=17.
pub const MH_TABLE_SIZES: [usize; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// The kernel's default `CONFIG_IP_VS_MH_TAB_INDEX` (12): a table of 4093 slots.
pub const DEFAULT_TABLE_SIZE: usize = MH_TABLE_SIZES[DEFAULT_TABLE_INDEX - FIRST_TABLE_INDEX];

const DEFAULT_TABLE_INDEX: usize = 12;
const FIRST_TABLE_INDEX: usize = 8;

/// `generate_hash_secret`: slot preferences (and client lookup) use the first key, the
/// skip the second.
const KEY1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
const KEY2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

const EMPTY: u32 = u32::MAX;

/// `ip_vs_mh_hashkey`: the folded address plus port plus offset, hashed.
fn hash(ip: IpAddr, port: u16, key: SipKey, offset: u32) -> u32 {
    let v = offset
        .wrapping_add(u32::from(port))
        .wrapping_add(fold_addr(ip));
    hsiphash_u32(key, v)
}

/// Maglev hashing scheduler (`mh`).
#[derive(Clone)]
pub struct Maglev {
    fallback: bool,
    port: bool,
    /// Weights are scaled down so that the largest uses at most this many bits
    /// (`IP_VS_MH_TAB_BITS`: half the table index), keeping turns short.
    weight_bits: u32,
    /// Slot → destination index, `EMPTY` when no destination has a weight.
    lookup: Vec<u32>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("fallback", &self.fallback)
            .field("port", &self.port)
            .field("table_size", &self.lookup.len())
            .finish_non_exhaustive()
    }
}

impl Maglev {
    /// A scheduler with the kernel's default table of 4093 slots. `fallback`: rehash to
    /// another slot when the hashed destination cannot take the connection
    /// (`mh-fallback`). `port`: hash the client port too (`mh-port`).
    pub fn new(fallback: bool, port: bool) -> Self {
        Self::build(fallback, port, DEFAULT_TABLE_INDEX)
    }

    /// As [`Maglev::new`] with another of the kernel's table sizes
    /// ([`MH_TABLE_SIZES`]). A table should have many more slots than there are
    /// destinations (the paper uses 100 times more) for an even spread.
    pub fn with_table_size(
        fallback: bool,
        port: bool,
        size: usize,
    ) -> Result<Self, SchedulerError> {
        let position = MH_TABLE_SIZES
            .iter()
            .position(|&s| s == size)
            .ok_or(SchedulerError::InvalidTableSize { size })?;
        Ok(Self::build(fallback, port, position + FIRST_TABLE_INDEX))
    }

    fn build(fallback: bool, port: bool, table_index: usize) -> Self {
        let size = MH_TABLE_SIZES[table_index - FIRST_TABLE_INDEX];
        Self {
            fallback,
            port,
            weight_bits: (table_index / 2) as u32,
            lookup: vec![EMPTY; size],
        }
    }

    /// Number of slots in the lookup table.
    pub fn table_size(&self) -> usize {
        self.lookup.len()
    }

    /// The lookup table: for each slot the index of the destination that owns it, or
    /// `None` when no destination has a weight. For tests and diagnostics.
    pub fn slots(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.lookup
            .iter()
            .map(|&i| (i != EMPTY).then_some(i as usize))
    }

    fn slot(&self, ip: IpAddr, port: u16, offset: u32) -> usize {
        // u32 → usize is lossless on every target keeplb runs on.
        hash(ip, port, KEY1, offset) as usize % self.lookup.len()
    }

    fn usable(&self, dests: &[Arc<Dest>], slot: usize) -> Result<usize, bool> {
        // Err(true): slot empty, stop; Err(false): destination unavailable, go on.
        let index = self.lookup[slot];
        if index == EMPTY {
            return Err(true);
        }
        let index = index as usize;
        match dests.get(index) {
            Some(d) if d.available() => Ok(index),
            _ => Err(false),
        }
    }
}

/// A destination's walk through the table (`struct ip_vs_mh_dest_setup`).
struct Preference {
    next: usize,
    skip: usize,
    turns: u32,
}

impl Scheduler for Maglev {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Mh
    }

    /// Rebuilds the table (`ip_vs_mh_reassign`). Fails, leaving the table unchanged, when
    /// there are more destinations than slots, as the kernel does.
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        let size = self.lookup.len();
        if dests.len() > size {
            return Err(SchedulerError::TooManyDestinations {
                count: dests.len(),
                table_size: size,
            });
        }
        self.lookup.fill(EMPTY);
        let gcd = gcd_of(dests.iter().map(|d| d.last_weight()));
        if gcd == 0 {
            return Ok(());
        }
        let max = dests.iter().map(|d| d.last_weight()).max().unwrap_or(0) / gcd;
        let shift = (u32::BITS - max.leading_zeros()).saturating_sub(self.weight_bits);
        let mut prefs: Vec<Preference> = dests
            .iter()
            .map(|d| {
                let (ip, port) = (d.addr().ip(), d.addr().port());
                let weight = d.last_weight();
                let scaled = (weight / gcd) >> shift;
                Preference {
                    next: hash(ip, port, KEY1, 0) as usize % size,
                    skip: hash(ip, port, KEY2, 0) as usize % (size - 1) + 1,
                    turns: if scaled == 0 {
                        u32::from(weight != 0)
                    } else {
                        scaled
                    },
                }
            })
            .collect();
        // Destinations take turns, in list order, each claiming `turns` free slots from
        // its permutation; `skip` is coprime with the prime size, so the walk visits
        // every slot and always finds a free one.
        let mut filled = 0;
        while filled < size {
            for (index, pref) in prefs.iter_mut().enumerate() {
                for _ in 0..pref.turns {
                    while self.lookup[pref.next] != EMPTY {
                        pref.next = (pref.next + pref.skip) % size;
                    }
                    self.lookup[pref.next] = index as u32;
                    filled += 1;
                    if filled == size {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// With fallback, the probe sequence is the kernel's: the client hash recomputed with
    /// offsets from the original slot onwards, so every director falls back alike.
    fn pick(&self, dests: &[Arc<Dest>], flow: &Flow, _now: Duration) -> Option<usize> {
        let ip = flow.client.ip();
        let port = if self.port { flow.client.port() } else { 0 };
        let first = self.slot(ip, port, 0);
        match self.usable(dests, first) {
            Ok(index) => return Some(index),
            Err(true) => return None,
            Err(false) if !self.fallback => return None,
            Err(false) => {}
        }
        let size = self.lookup.len();
        for offset in 0..size {
            // Both are below the table size, so the sum fits u32.
            let offset = ((offset + first) % size) as u32;
            match self.usable(dests, self.slot(ip, port, offset)) {
                Ok(index) => return Some(index),
                Err(true) => return None,
                Err(false) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, flow, overload};

    fn mh(d: &[Arc<Dest>]) -> Maglev {
        let mut m = Maglev::new(false, false);
        m.update(d).unwrap();
        m
    }

    fn counts(m: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for i in m.slots().flatten() {
            c[i] += 1;
        }
        c
    }

    #[test]
    fn default_table_is_the_kernels_4093_slots() {
        assert_eq!(Maglev::new(false, false).table_size(), 4093);
        assert_eq!(
            Maglev::with_table_size(false, false, 65521)
                .unwrap()
                .table_size(),
            65521
        );
        assert_eq!(
            Maglev::with_table_size(false, false, 65537).unwrap_err(),
            SchedulerError::InvalidTableSize { size: 65537 }
        );
    }

    #[test]
    fn equal_weights_share_the_table_within_one_slot() {
        let d = dests(&[1, 1, 1, 1, 1, 1, 1]);
        let c = counts(&mh(&d), d.len());
        assert_eq!(c.iter().sum::<usize>(), 4093);
        let (min, max) = (c.iter().min().unwrap(), c.iter().max().unwrap());
        assert!(max - min <= 1, "{c:?}");
    }

    #[test]
    fn weights_scale_the_share_of_slots() {
        let d = dests(&[1, 2, 3]);
        let c = counts(&mh(&d), d.len());
        // Turns of 1, 2 and 3 slots per round: 4093 = 682 rounds of 6 + 1.
        assert_eq!(c, vec![683, 1364, 2046]);
    }

    #[test]
    fn large_weights_are_scaled_to_the_table_bits() {
        // 1000 / gcd 1 needs 10 bits; the default table allows 6, so shift by 4:
        // turns 62 and 1 (1 >> 4 = 0, raised to 1 because the weight is not 0).
        let d = dests(&[1000, 1]);
        let c = counts(&mh(&d), d.len());
        assert_eq!(c[0] + c[1], 4093);
        assert!((4029..=4031).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn no_weight_means_an_empty_table_and_no_destination() {
        let d = dests(&[0, 0]);
        let m = mh(&d);
        assert!(m.slots().all(|s| s.is_none()));
        assert_eq!(m.pick(&d, &flow(1, 1), Duration::ZERO), None);
        assert_eq!(mh(&[]).pick(&[], &flow(1, 1), Duration::ZERO), None);
    }

    #[test]
    fn more_destinations_than_slots_is_refused_and_leaves_the_table() {
        let mut m = Maglev::with_table_size(false, false, 251).unwrap();
        let few = dests(&[1, 1]);
        m.update(&few).unwrap();
        let before: Vec<_> = m.slots().collect();
        let many = dests(&[1; 252]);
        assert_eq!(
            m.update(&many),
            Err(SchedulerError::TooManyDestinations {
                count: 252,
                table_size: 251
            })
        );
        assert_eq!(m.slots().collect::<Vec<_>>(), before);
    }

    #[test]
    fn quiescing_keeps_the_table_and_fallback_moves_only_its_clients() {
        let d = dests(&[1, 1, 1, 1]);
        let mut plain = mh(&d);
        let mut fb = Maglev::new(true, false);
        fb.update(&d).unwrap();
        let before: Vec<_> = (0..=255u8)
            .map(|n| fb.pick(&d, &flow(n, 1), Duration::ZERO))
            .collect();
        let table: Vec<_> = fb.slots().collect();
        d[2].set_weight(0).unwrap();
        plain.update(&d).unwrap();
        fb.update(&d).unwrap();
        assert_eq!(
            fb.slots().collect::<Vec<_>>(),
            table,
            "built from last weights"
        );
        for (n, old) in (0..=255u8).zip(before) {
            let f = flow(n, 1);
            let (p, b) = (
                plain.pick(&d, &f, Duration::ZERO),
                fb.pick(&d, &f, Duration::ZERO),
            );
            if old == Some(2) {
                assert_eq!(p, None);
                assert!(b.is_some() && b != Some(2));
            } else {
                assert_eq!((p, b), (old, old));
            }
        }
        for dest in &d {
            overload(dest);
        }
        assert_eq!(fb.pick(&d, &flow(1, 1), Duration::ZERO), None);
    }

    #[test]
    fn mh_port_spreads_one_client_over_destinations() {
        let d = dests(&[1, 1, 1, 1]);
        let mut m = Maglev::new(false, true);
        m.update(&d).unwrap();
        let mut seen = [false; 4];
        for port in 1000..1100 {
            seen[m.pick(&d, &flow(1, port), Duration::ZERO).unwrap()] = true;
        }
        assert_eq!(seen, [true; 4]);
        let plain = mh(&d);
        let first = plain.pick(&d, &flow(1, 1000), Duration::ZERO);
        assert!((1000..1100).all(|p| plain.pick(&d, &flow(1, p), Duration::ZERO) == first));
    }
}
