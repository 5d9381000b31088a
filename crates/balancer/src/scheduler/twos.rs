//! twos: power of two choices (ip_vs_twos.c).
//!
//! Draw two destinations at random, each with probability proportional to its weight
//! among the usable ones, and take the one with the lower overhead per weight (the first
//! on a tie). Nearly as balanced as least connection, at constant cost.
//!
//! # Randomness: deterministic, on purpose
//!
//! The kernel draws from `prandom`. We draw from a SplitMix64 sequence with a seed fixed
//! at construction, advanced with one atomic add per draw, so tests can predict every
//! choice and no worker ever waits for another. The kernel also draws from a range one
//! wider than the total weight, which hands the first destination one extra chance;
//! our range is exact.
//!
//! # Cost
//!
//! The kernel walks the list twice per connection. We keep the cumulative weights from
//! the last update and binary-search them, retrying a few draws that land on an
//! unusable destination; that keeps the kernel's distribution (a retry is a draw
//! conditioned on usability) and falls back to the kernel's walk over usable
//! destinations only when most of the weight is unusable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::scheduler::{Scheduler, SchedulerKind};

/// The seed [`crate::SchedulerKind::build`] uses: fixed, so a restarted director
/// repeats its choices for the same load.
pub const DEFAULT_SEED: u64 = 0x6b65_6570_6c62_7332;

/// Draws before giving up on the cumulative table and walking the usable destinations.
const ATTEMPTS: usize = 4;

/// SplitMix64 (Steele, Lea and Flood), shared by all workers through one atomic.
#[derive(Debug)]
struct SplitMix(AtomicU64);

impl SplitMix {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), by multiply-and-shift; the bias is below
    /// `bound / 2^64`.
    fn below(&self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

/// Power of two choices scheduler (`twos`).
#[derive(Debug)]
pub struct TwoChoices {
    rng: SplitMix,
    /// Running totals of the positive weights, in list order…
    cumulative: Vec<u64>,
    /// …and the destination each total ends with.
    indices: Vec<usize>,
}

impl TwoChoices {
    /// A scheduler drawing from the sequence started by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix(AtomicU64::new(seed)),
            cumulative: Vec::new(),
            indices: Vec::new(),
        }
    }

    /// One destination drawn by weight among the usable ones.
    fn draw(&self, dests: &[Arc<Dest>]) -> Option<usize> {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total > 0 {
            for _ in 0..ATTEMPTS {
                let r = self.rng.below(total);
                let k = self.cumulative.partition_point(|&c| c <= r);
                let i = self.indices[k];
                if dests.get(i).is_some_and(|d| d.available()) {
                    return Some(i);
                }
            }
        }
        self.walk(dests)
    }

    /// The kernel's method: total the usable weight, draw, walk.
    fn walk(&self, dests: &[Arc<Dest>]) -> Option<usize> {
        let usable = |d: &Arc<Dest>| {
            if d.available() {
                u64::from(d.weight())
            } else {
                0
            }
        };
        let total: u64 = dests.iter().map(usable).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.below(total);
        for (i, dest) in dests.iter().enumerate() {
            let w = usable(dest);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

impl Scheduler for TwoChoices {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Twos
    }

    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        self.cumulative.clear();
        self.indices.clear();
        let mut total = 0u64;
        for (i, dest) in dests.iter().enumerate() {
            let weight = dest.weight();
            if weight > 0 {
                total += u64::from(weight);
                self.cumulative.push(total);
                self.indices.push(i);
            }
        }
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
        let first = self.draw(dests)?;
        let Some(second) = self.draw(dests) else {
            return Some(first);
        };
        let cost = |i: usize| {
            (
                u128::from(dests[i].load().overhead()),
                u128::from(dests[i].weight()),
            )
        };
        let ((oh1, w1), (oh2, w2)) = (cost(first), cost(second));
        Some(if w2 * oh1 > w1 * oh2 { second } else { first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, overload, picks, set_conns};

    fn twos(d: &[Arc<Dest>], seed: u64) -> TwoChoices {
        let mut s = TwoChoices::new(seed);
        s.update(d).unwrap();
        s
    }

    fn histogram(s: &TwoChoices, d: &[Arc<Dest>], n: usize) -> Vec<usize> {
        let mut h = vec![0; d.len()];
        for i in picks(s, d, n).into_iter().flatten() {
            h[i] += 1;
        }
        h
    }

    #[test]
    fn the_same_seed_gives_the_same_choices() {
        let d = dests(&[1, 2, 3, 4]);
        set_conns(&d[3], 5, 0);
        let a = picks(&twos(&d, 7), &d, 100);
        assert_eq!(a, picks(&twos(&d, 7), &d, 100));
        assert_ne!(a, picks(&twos(&d, 8), &d, 100));
    }

    #[test]
    fn idle_servers_are_drawn_in_proportion_to_weight() {
        let d = dests(&[1, 3]);
        let h = histogram(&twos(&d, DEFAULT_SEED), &d, 8000);
        assert!((1800..2200).contains(&h[0]), "{h:?}");
    }

    #[test]
    fn the_less_loaded_of_the_two_wins() {
        let d = dests(&[1, 1]);
        set_conns(&d[0], 10, 0);
        // A wins only when both draws are A: a quarter of the time.
        let h = histogram(&twos(&d, DEFAULT_SEED), &d, 8000);
        assert!((1800..2200).contains(&h[0]), "{h:?}");
    }

    #[test]
    fn never_weight_zero_or_overloaded_even_when_most_weight_is_unusable() {
        let d = dests(&[0, 1000, 1, 1000]);
        overload(&d[1]);
        overload(&d[3]);
        let s = twos(&d, DEFAULT_SEED);
        assert_eq!(histogram(&s, &d, 100), vec![0, 0, 100, 0]);
        overload(&d[2]);
        assert_eq!(picks(&s, &d, 1), vec![None]);
        assert_eq!(picks(&twos(&[], 1), &[], 1), vec![None]);
    }
}
