//! lc, wlc, sed and nq: the server with the least (weighted) load.
//!
//! They differ only in the cost they minimise ([`Cost`]); the selection rule is shared.
//! [`Scheduler::pick`] takes no lock, and is exact across worker threads because every
//! worker reads the same atomic counters.
//!
//! Cost: the kernel scans the whole list per connection. Here, from
//! [`INDEX_MIN_DESTS`] destinations on, a tournament tree kept up to date by the
//! destinations' counter changes (see the private `load_index` module) names the same
//! destination the scan would, in constant time per pick and `log2(n)` comparisons per
//! connection event. Smaller lists are scanned, which is cheaper than keeping the tree.

use std::sync::Arc;
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::scheduler::load_index::{LoadIndex, MAX_INDEXED};
use crate::scheduler::select::least_cost;
use crate::scheduler::{Scheduler, SchedulerKind};

pub use crate::scheduler::select::Cost;

/// From this many destinations on, [`LeastConn::new`] keeps an index instead of
/// scanning: a scan of 32 costs about as much as one pick should (under 100 ns), and
/// below that the index's work on every connection event would not pay for itself.
pub const INDEX_MIN_DESTS: usize = 32;

/// Least-connection family scheduler (ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c).
///
/// The index registers itself with the destinations of the list given to
/// [`Scheduler::update`] and unregisters when replaced or dropped. A destination reports
/// each counter change to every index registered with it, so destinations shared by
/// several schedulers (rather than owned by one [`crate::Pool`]) stay exact but make
/// each change cost more.
#[derive(Debug)]
pub struct LeastConn {
    cost: Cost,
    index_min_dests: usize,
    index: Option<Arc<LoadIndex>>,
}

impl LeastConn {
    /// `Cost::Overhead` is lc, `WeightedOverhead` wlc, `ExpectedDelay` sed and
    /// `NeverQueue` nq. Indexes lists of [`INDEX_MIN_DESTS`] or more.
    pub fn new(cost: Cost) -> Self {
        Self::with_index_min_dests(cost, INDEX_MIN_DESTS)
    }

    /// Like [`LeastConn::new`], indexing lists of `min_dests` destinations or more
    /// (0: always; `usize::MAX`: never, the kernel's scan on every pick).
    pub fn with_index_min_dests(cost: Cost, min_dests: usize) -> Self {
        Self {
            cost,
            index_min_dests: min_dests,
            index: None,
        }
    }

    /// Whether the current list is indexed rather than scanned.
    pub fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    #[cfg(test)]
    pub(crate) fn index(&self) -> Option<&LoadIndex> {
        self.index.as_deref()
    }
}

impl Clone for LeastConn {
    /// The clone has no index until its first [`Scheduler::update`]; until then it scans.
    fn clone(&self) -> Self {
        Self::with_index_min_dests(self.cost, self.index_min_dests)
    }
}

impl Drop for LeastConn {
    fn drop(&mut self) {
        // The destinations hold the index alive (and report to it) until told otherwise.
        if let Some(index) = self.index.take() {
            index.detach();
        }
    }
}

impl Scheduler for LeastConn {
    fn kind(&self) -> SchedulerKind {
        match self.cost {
            Cost::Overhead => SchedulerKind::Lc,
            Cost::WeightedOverhead => SchedulerKind::Wlc,
            Cost::ExpectedDelay => SchedulerKind::Sed,
            Cost::NeverQueue => SchedulerKind::Nq,
        }
    }

    /// Builds a new index over the list (the old one's positions no longer match it).
    /// Destinations in both lists report to both indexes for a moment, so no change is
    /// missed in between.
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        let wanted = dests.len() >= self.index_min_dests && dests.len() <= MAX_INDEXED;
        let index = wanted.then(|| LoadIndex::attach(self.cost, dests));
        if let Some(old) = std::mem::replace(&mut self.index, index) {
            old.detach();
        }
        Ok(())
    }

    /// Takes the index's answer when it is a destination that can take the connection
    /// now, and its "none available" as it is. Otherwise (a pick racing the change that
    /// made the answer unusable, or a list that is not the one last given to `update`)
    /// it scans, as the kernel always does.
    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
        if let Some(index) = &self.index
            && index.len() == dests.len()
        {
            match index.best() {
                None => return None,
                Some(i) if index.holds(i, &dests[i]) && dests[i].available() => return Some(i),
                Some(_) => {}
            }
        }
        least_cost(dests.iter().enumerate(), self.cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, overload, picks, set_conns};

    fn pick(cost: Cost, d: &[Arc<Dest>]) -> Option<usize> {
        picks(&LeastConn::new(cost), d, 1)[0]
    }

    #[test]
    fn lc_minimises_overhead_and_ignores_weight() {
        let d = dests(&[1, 5, 1]);
        set_conns(&d[0], 1, 0); // 256
        set_conns(&d[1], 0, 300); // 300
        set_conns(&d[2], 0, 10); // 10
        assert_eq!(pick(Cost::Overhead, &d), Some(2));
        // A heavier weight does not help lc: 256 < 300.
        overload(&d[2]);
        assert_eq!(pick(Cost::Overhead, &d), Some(0));
    }

    #[test]
    fn wlc_minimises_overhead_per_weight() {
        let d = dests(&[1, 2, 3]);
        set_conns(&d[0], 1, 0); // 256 / 1
        set_conns(&d[1], 1, 44); // 300 / 2 = 150
        set_conns(&d[2], 2, 88); // 600 / 3 = 200
        assert_eq!(pick(Cost::WeightedOverhead, &d), Some(1));
    }

    #[test]
    fn ties_go_to_the_first_in_list_order() {
        let d = dests(&[1, 2, 1]);
        set_conns(&d[0], 0, 100); // 100 / 1
        set_conns(&d[1], 0, 200); // 200 / 2
        set_conns(&d[2], 0, 100);
        assert_eq!(pick(Cost::WeightedOverhead, &d), Some(0));
        assert_eq!(pick(Cost::Overhead, &dests(&[1, 1, 1])), Some(0));
    }

    #[test]
    fn sed_counts_the_new_job_and_only_active_connections() {
        let d = dests(&[1, 3]);
        set_conns(&d[0], 0, 1000); // (0 + 1) / 1
        set_conns(&d[1], 1, 0); // (1 + 1) / 3
        assert_eq!(pick(Cost::ExpectedDelay, &d), Some(1));
        // wlc on the same servers prefers the one with fewer sessions per weight.
        assert_eq!(pick(Cost::WeightedOverhead, &d), Some(1));
        let d = dests(&[1, 1]);
        set_conns(&d[0], 0, 1000);
        set_conns(&d[1], 1, 0);
        assert_eq!(
            pick(Cost::ExpectedDelay, &d),
            Some(0),
            "inactive ones are free"
        );
    }

    #[test]
    fn nq_takes_the_first_idle_server_else_behaves_as_sed() {
        let d = dests(&[1, 3, 9]);
        set_conns(&d[0], 2, 0);
        assert_eq!(
            pick(Cost::NeverQueue, &d),
            Some(1),
            "first idle, not the heaviest"
        );
        assert_eq!(pick(Cost::ExpectedDelay, &d), Some(2));
        set_conns(&d[1], 2, 0); // 3 / 3 = 1
        set_conns(&d[2], 17, 0); // 18 / 9 = 2
        assert_eq!(pick(Cost::NeverQueue, &d), Some(1));
    }

    #[test]
    fn weight_zero_and_overloaded_are_skipped_and_none_when_nothing_is_left() {
        for cost in [
            Cost::Overhead,
            Cost::WeightedOverhead,
            Cost::ExpectedDelay,
            Cost::NeverQueue,
        ] {
            let d = dests(&[0, 1, 1]);
            set_conns(&d[2], 5, 5);
            overload(&d[1]);
            assert_eq!(pick(cost, &d), Some(2), "{cost:?}");
            overload(&d[2]);
            assert_eq!(pick(cost, &d), None, "{cost:?}");
            assert_eq!(pick(cost, &[]), None, "{cost:?}");
        }
    }
}
