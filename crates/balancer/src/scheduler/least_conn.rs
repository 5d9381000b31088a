//! lc, wlc, sed and nq: the server with the least (weighted) load.
//!
//! They differ only in the cost they minimise ([`Cost`]); the selection rule is shared.
//! Stateless, so [`Scheduler::pick`] takes no lock, and exact across worker threads
//! because every worker reads the same atomic counters.
//!
//! Cost: a linear scan of the destination list per connection, as in the kernel.

use std::sync::Arc;
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::scheduler::select::least_cost;
use crate::scheduler::{Scheduler, SchedulerKind};

pub use crate::scheduler::select::Cost;

/// Least-connection family scheduler (ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c).
#[derive(Debug, Clone)]
pub struct LeastConn {
    cost: Cost,
}

impl LeastConn {
    /// `Cost::Overhead` is lc, `WeightedOverhead` wlc, `ExpectedDelay` sed and
    /// `NeverQueue` nq.
    pub fn new(cost: Cost) -> Self {
        Self { cost }
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

    fn update(&mut self, _dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
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
