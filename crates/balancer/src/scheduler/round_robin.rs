//! rr and wrr: take turns, in list order.
//!
//! The kernel keeps the round-robin position under a spinlock. Here the whole position
//! fits one atomic word and advances by compare-and-swap: every successful swap is
//! exactly one kernel scheduling step, so the sequence stays exact however many workers
//! pick at once, and nobody blocks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::scheduler::select::gcd_of;
use crate::scheduler::{Scheduler, SchedulerKind};

/// Round robin (ip_vs_rr.c): the next destination after the previous choice that has a
/// weight and is not overloaded.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// 0: the list head (start from the first destination); i + 1: after index i.
    pos: AtomicUsize,
    /// Addresses as of the last update, to carry the position over list changes.
    addrs: Vec<SocketAddr>,
}

impl RoundRobin {
    /// A scheduler positioned at the list head.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first usable destination after position `pos`, wrapping around the list and
    /// examining the previous choice last.
    fn next_after(dests: &[Arc<Dest>], pos: usize) -> Option<usize> {
        let start = if pos > dests.len() { 0 } else { pos };
        (start..dests.len())
            .chain(0..start)
            .find(|&i| dests[i].available())
    }
}

impl Scheduler for RoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Rr
    }

    /// Keeps the position on the same destination. When that destination was removed,
    /// the position moves to its predecessor, so the turn passes to the one that
    /// followed it, as `ip_vs_rr_del_dest` does. Added destinations do not move it.
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        let pos = self.pos.get_mut();
        let new_index: HashMap<SocketAddr, usize> = dests
            .iter()
            .enumerate()
            .map(|(i, d)| (d.addr(), i))
            .collect();
        let old = pos.checked_sub(1).and_then(|i| self.addrs.get(..=i));
        *pos = old
            .and_then(|prefix| {
                prefix
                    .iter()
                    .rev()
                    .find_map(|addr| new_index.get(addr).map(|&i| i + 1))
            })
            .unwrap_or(0);
        self.addrs = dests.iter().map(|d| d.addr()).collect();
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
        let mut pos = self.pos.load(Ordering::Relaxed);
        loop {
            let chosen = Self::next_after(dests, pos)?;
            match self.pos.compare_exchange_weak(
                pos,
                chosen + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(chosen),
                Err(current) => pos = current,
            }
        }
    }
}

/// Weighted round robin (ip_vs_wrr.c).
///
/// The kernel walks the list repeatedly with a falling *current weight* `cw`: each pass
/// hands a turn to every destination whose weight is at least `cw`, then lowers `cw` by
/// the gcd of all weights. With weights 3:2:1 one cycle is A A B A B C. The first pass
/// starts at `max - (gcd - 1)` rather than `max` so that the last pass runs at `cw = 1`
/// and still finds a destination whose weight dropped below the gcd.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Position (high half; 0 = list head, i + 1 = after index i) and current weight
    /// (low half), swapped together.
    state: AtomicU64,
    /// First-pass weight: max weight - (gcd - 1); 0 when no destination has a weight.
    mw: u32,
    /// Step between passes: the gcd of the positive weights (1 if none).
    di: u32,
}

fn pack(pos: usize, cw: i64) -> u64 {
    // pos <= number of destinations + 1 and 0 < cw <= mw, both fit 32 bits.
    ((pos as u64) << 32) | (cw as u64 & 0xffff_ffff)
}

fn unpack(state: u64) -> (usize, i64) {
    ((state >> 32) as usize, i64::from(state as u32))
}

impl WeightedRoundRobin {
    /// A scheduler with no destinations yet; call [`Scheduler::update`].
    pub fn new() -> Self {
        Self::default()
    }

    /// One kernel scheduling step from position `pos` and current weight `cw`: the choice
    /// and the new position and current weight.
    fn step(&self, dests: &[Arc<Dest>], pos: usize, mut cw: i64) -> (Option<usize>, usize, i64) {
        let (mw, di) = (i64::from(self.mw), i64::from(self.di));
        let n = dests.len();
        let last = if pos > n { 0 } else { pos };
        let mut from = last;
        // Once every destination has been tried at cw = 1 we give up. Starting from the
        // head that is one descent; starting mid-list the final pass must wrap round to
        // `stop`, the destination we started after.
        let mut stop = None;
        let mut last_pass = false;
        let mut restarted = false;
        loop {
            for (i, dest) in dests.iter().enumerate().skip(from) {
                if !dest.is_overloaded() && i64::from(dest.weight()) >= cw {
                    return (Some(i), i + 1, cw);
                }
                if stop == Some(i) {
                    return (None, i + 1, cw);
                }
            }
            from = 0;
            cw -= di;
            if cw <= 0 {
                cw = mw;
                if last_pass || last == 0 {
                    return (None, 0, cw);
                }
                restarted = true;
            }
            last_pass = cw <= di;
            if last_pass && restarted && last != 0 {
                stop = Some(last - 1);
            }
        }
    }
}

impl Scheduler for WeightedRoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wrr
    }

    /// As `ip_vs_wrr_dest_changed`: restart from the list head, recompute gcd and first
    /// pass weight, and keep the current weight where still meaningful (rounded onto the
    /// new gcd grid).
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        let di = gcd_of(dests.iter().map(|d| d.weight())).max(1);
        let max = dests.iter().map(|d| d.weight()).max().unwrap_or(0);
        self.di = di;
        self.mw = max.saturating_sub(di - 1);
        let (_, cw) = unpack(*self.state.get_mut());
        let (mw, di) = (i64::from(self.mw), i64::from(di));
        let cw = if cw > mw || cw == 0 {
            mw
        } else if di > 1 {
            (cw / di) * di + 1
        } else {
            cw
        };
        *self.state.get_mut() = pack(0, cw);
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let (pos, cw) = unpack(state);
            let (chosen, pos, cw) = self.step(dests, pos, cw);
            let next = pack(pos, cw);
            if next == state {
                return chosen;
            }
            match self.state.compare_exchange_weak(
                state,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return chosen,
                Err(current) => state = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, overload, picks};

    fn built<S: Scheduler + Default>(d: &[Arc<Dest>]) -> S {
        let mut s = S::default();
        s.update(d).unwrap();
        s
    }

    fn some(v: &[usize]) -> Vec<Option<usize>> {
        v.iter().copied().map(Some).collect()
    }

    #[test]
    fn rr_cycles_in_list_order() {
        let d = dests(&[1, 1, 1]);
        let rr: RoundRobin = built(&d);
        assert_eq!(picks(&rr, &d, 7), some(&[0, 1, 2, 0, 1, 2, 0]));
    }

    #[test]
    fn rr_ignores_weights_but_skips_weight_zero_and_overloaded() {
        let d = dests(&[5, 0, 1, 1]);
        let rr: RoundRobin = built(&d);
        overload(&d[3]);
        assert_eq!(picks(&rr, &d, 4), some(&[0, 2, 0, 2]));
        overload(&d[0]);
        overload(&d[2]);
        assert_eq!(picks(&rr, &d, 2), vec![None, None]);
        assert_eq!(picks(&rr, &[], 1), vec![None]);
    }

    #[test]
    fn rr_keeps_its_turn_across_updates() {
        let d = dests(&[1, 1, 1]);
        let mut rr: RoundRobin = built(&d);
        assert_eq!(picks(&rr, &d, 2), some(&[0, 1]));
        // Removing the last choice (B) hands the turn to its successor, C.
        let without_b = vec![d[0].clone(), d[2].clone()];
        rr.update(&without_b).unwrap();
        assert_eq!(picks(&rr, &without_b, 3), some(&[1, 0, 1]));
        // A destination added at the front (the kernel's order) is reached after C.
        let new = dests(&[1, 1, 1, 1]).pop().unwrap();
        let with_d = vec![new, d[0].clone(), d[2].clone()];
        rr.update(&with_d).unwrap();
        assert_eq!(picks(&rr, &with_d, 4), some(&[0, 1, 2, 0]));
    }

    #[test]
    fn wrr_3_2_1_gives_a_a_b_a_b_c() {
        let d = dests(&[3, 2, 1]);
        let wrr: WeightedRoundRobin = built(&d);
        assert_eq!(
            picks(&wrr, &d, 12),
            some(&[0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1, 2])
        );
    }

    #[test]
    fn wrr_steps_by_the_gcd() {
        let d = dests(&[4, 2]);
        let wrr: WeightedRoundRobin = built(&d);
        assert_eq!((wrr.mw, wrr.di), (3, 2));
        assert_eq!(picks(&wrr, &d, 6), some(&[0, 0, 1, 0, 0, 1]));
    }

    #[test]
    fn wrr_skips_weight_zero_and_overloaded_and_gives_up_when_none_is_left() {
        let d = dests(&[2, 0, 1]);
        let wrr: WeightedRoundRobin = built(&d);
        assert_eq!(picks(&wrr, &d, 3), some(&[0, 0, 2]));
        overload(&d[0]);
        assert_eq!(picks(&wrr, &d, 2), some(&[2, 2]));
        overload(&d[2]);
        assert_eq!(picks(&wrr, &d, 2), vec![None, None]);
        let zero = dests(&[0, 0]);
        let wrr: WeightedRoundRobin = built(&zero);
        assert_eq!(picks(&wrr, &zero, 1), vec![None]);
        assert_eq!(picks(&wrr, &[], 1), vec![None]);
    }

    #[test]
    fn wrr_update_restarts_from_the_head_and_keeps_the_current_weight() {
        let d = dests(&[3, 2, 1]);
        let mut wrr: WeightedRoundRobin = built(&d);
        assert_eq!(picks(&wrr, &d, 3), some(&[0, 0, 1])); // now at B with cw = 2
        d[2].set_weight(2).unwrap();
        wrr.update(&d).unwrap();
        // From the head at cw = 2: A, B, C, then cw = 1: A, B, C, then cw = 3: A.
        assert_eq!(picks(&wrr, &d, 7), some(&[0, 1, 2, 0, 1, 2, 0]));
    }

    #[test]
    fn wrr_update_rounds_the_current_weight_onto_the_new_gcd() {
        let d = dests(&[3, 1]);
        let mut wrr: WeightedRoundRobin = built(&d);
        assert_eq!(picks(&wrr, &d, 2), some(&[0, 0])); // cw = 2
        d[0].set_weight(6).unwrap();
        d[1].set_weight(2).unwrap();
        wrr.update(&d).unwrap(); // di = 2, mw = 5, cw = 2 / 2 * 2 + 1 = 3
        let (_, cw) = unpack(wrr.state.load(Ordering::Relaxed));
        assert_eq!((wrr.mw, wrr.di, cw), (5, 2, 3));
    }

    #[test]
    fn concurrent_picks_stay_an_exact_rotation() {
        let d = dests(&[3, 2, 1]);
        let wrr: WeightedRoundRobin = built(&d);
        let rr: RoundRobin = built(&d);
        let counts = |s: &dyn Scheduler| {
            let mut counts = [0usize; 3];
            let all: Vec<Vec<Option<usize>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| picks(s, &d, 600))).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for i in all.into_iter().flatten().flatten() {
                counts[i] += 1;
            }
            counts
        };
        assert_eq!(counts(&wrr), [1200, 800, 400]);
        assert_eq!(counts(&rr), [800, 800, 800]);
    }
}
