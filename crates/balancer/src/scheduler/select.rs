//! Selection loops shared by several schedulers, so that each kernel rule (skip
//! overloaded, skip weight 0, compare without floats, first in list order wins ties) is
//! written once.

use std::sync::Arc;

use crate::dest::Dest;

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

/// The candidate minimising `cost`, among those with weight above zero that are not
/// overloaded; the first in iteration order wins ties.
///
/// Ratios are compared by cross-multiplying, `cost_a * weight_b` against
/// `cost_b * weight_a`, in 128 bits so that no counter or weight can overflow. This is
/// the kernel's comparison, and like the kernel's it is exact, which is what makes tie
/// breaking reproducible.
pub(crate) fn least_cost<'a>(
    candidates: impl IntoIterator<Item = (usize, &'a Arc<Dest>)>,
    cost: Cost,
) -> Option<usize> {
    // (index, cost, weight) of the best so far.
    let mut best: Option<(usize, u64, u32)> = None;
    for (i, dest) in candidates {
        let weight = dest.weight();
        let load = dest.load();
        if weight == 0 || load.overloaded {
            continue;
        }
        let c = match cost {
            Cost::Overhead | Cost::WeightedOverhead => load.overhead(),
            Cost::NeverQueue if load.active == 0 => return Some(i),
            Cost::ExpectedDelay | Cost::NeverQueue => u64::from(load.active) + 1,
        };
        let better = match best {
            None => true,
            Some((_, best_cost, _)) if cost == Cost::Overhead => c < best_cost,
            Some((_, best_cost, best_weight)) => {
                u128::from(best_cost) * u128::from(weight) > u128::from(c) * u128::from(best_weight)
            }
        };
        if better {
            best = Some((i, c, weight));
        }
    }
    best.map(|(i, _, _)| i)
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
