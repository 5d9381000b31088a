//! Selection loops shared by several schedulers, so that each kernel rule (skip
//! overloaded, skip weight 0, compare without floats, first in list order wins ties) is
//! written once.

use std::sync::Arc;

use crate::dest::{Dest, Load};

/// What a least-connection style scheduler minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cost {
    /// lc: the overhead `active * 256 + inactive`, ignoring weights (other than 0).
    Overhead,
    /// wlc (and the fallback of lblc / lblcr): overhead divided by weight.
    WeightedOverhead,
    /// sed: `(active + 1) / weight`, the expected delay of the new job; inactive
    /// connections are ignored.
    ExpectedDelay,
    /// nq: the first idle server (no active connection) in list order, else as sed.
    NeverQueue,
}

/// A destination able to take a connection, as a least-cost comparison sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The numerator of the cost; the denominator is `weight` (except for lc).
    cost: u64,
    weight: u32,
}

impl Cost {
    /// What `dest` offers to this comparison now, or `None` when it cannot take a
    /// connection (weight 0 or overloaded).
    ///
    /// nq's idle servers cost 0: the first of them then wins over every busy server
    /// (whose sed cost is at least 1) and over every later idle one, which is the
    /// kernel's "first idle server" rule expressed as a minimum.
    pub(crate) fn candidate(self, dest: &Dest) -> Option<Candidate> {
        let weight = dest.weight();
        let load = dest.load();
        if weight == 0 || load.overloaded {
            return None;
        }
        let cost = match self {
            Self::Overhead | Self::WeightedOverhead => load.overhead(),
            Self::NeverQueue if load.active == 0 => 0,
            Self::ExpectedDelay | Self::NeverQueue => u64::from(load.active) + 1,
        };
        Some(Candidate { cost, weight })
    }

    /// Whether a destination's candidate can differ between loads `a` and `b` (its
    /// weight being the same).
    pub(crate) fn distinguishes(self, a: Load, b: Load) -> bool {
        a.overloaded != b.overloaded
            || match self {
                Self::Overhead | Self::WeightedOverhead => a.overhead() != b.overhead(),
                Self::ExpectedDelay | Self::NeverQueue => a.active != b.active,
            }
    }

    /// Whether `a` costs strictly less than `b`.
    ///
    /// Ratios are compared by cross-multiplying, `cost_a * weight_b` against
    /// `cost_b * weight_a`, in 128 bits so that no counter or weight can overflow. This
    /// is the kernel's comparison, and like the kernel's it is exact, which is what makes
    /// tie breaking reproducible.
    pub(crate) fn prefers(self, a: Candidate, b: Candidate) -> bool {
        match self {
            Self::Overhead => a.cost < b.cost,
            Self::WeightedOverhead | Self::ExpectedDelay | Self::NeverQueue => {
                u128::from(a.cost) * u128::from(b.weight)
                    < u128::from(b.cost) * u128::from(a.weight)
            }
        }
    }
}

/// The candidate minimising `cost`, among those with weight above zero that are not
/// overloaded; the first in iteration order wins ties. This is the kernel's linear scan,
/// and the reference the least-connection index is tested against.
pub(crate) fn least_cost<'a>(
    candidates: impl IntoIterator<Item = (usize, &'a Arc<Dest>)>,
    cost: Cost,
) -> Option<usize> {
    let mut best: Option<(usize, Candidate)> = None;
    for (i, dest) in candidates {
        let Some(candidate) = cost.candidate(dest) else {
            continue;
        };
        if cost == Cost::NeverQueue && candidate.cost == 0 {
            // Nothing can beat an idle server; the kernel stops here too.
            return Some(i);
        }
        if best.is_none_or(|(_, best)| cost.prefers(candidate, best)) {
            best = Some((i, candidate));
        }
    }
    best.map(|(i, _)| i)
}

/// Indices of destinations with weight above zero, heaviest first, list order among
/// equals: the order in which fo and ovf consider them.
///
/// The kernel scans the whole list on every connection for the heaviest qualifying
/// server; scanning this precomputed order and stopping at the first qualifying one gives
/// the same answer (weights only change together with a scheduler update) in O(1) when
/// the heaviest server can take the connection.
pub(crate) fn by_weight_desc(dests: &[Arc<Dest>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..dests.len())
        .filter(|&i| dests[i].weight() > 0)
        .collect();
    // Stable sort: list order is kept among equal weights.
    order.sort_by_key(|&i| std::cmp::Reverse(dests[i].weight()));
    order
}

/// Greatest common divisor; `gcd(0, x) == x`.
pub(crate) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The gcd of all positive values, or 0 when there is none.
pub(crate) fn gcd_of(values: impl IntoIterator<Item = u32>) -> u32 {
    values.into_iter().filter(|&w| w > 0).fold(0, gcd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcd_of_positive_values_only() {
        assert_eq!(gcd_of([0, 12, 18, 0, 30]), 6);
        assert_eq!(gcd_of([0, 0]), 0);
        assert_eq!(gcd_of([7]), 7);
    }
}
