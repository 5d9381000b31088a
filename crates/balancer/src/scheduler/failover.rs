//! fo and ovf: keep traffic on the heaviest server, move on only when it cannot take it.
//!
//! Both choose the heaviest qualifying destination, the first in list order among equal
//! weights. fo (ip_vs_fo.c) qualifies any destination that is not overloaded; ovf
//! (ip_vs_ovf.c) also requires that its active connections not exceed its weight, so the
//! weight doubles as a connection budget and traffic overflows to the next server.

use std::sync::Arc;
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::scheduler::select::by_weight_desc;
use crate::scheduler::{Scheduler, SchedulerKind};

/// The first destination in `order` (heaviest first) that `qualifies`.
fn heaviest(
    dests: &[Arc<Dest>],
    order: &[usize],
    qualifies: impl Fn(&Dest) -> bool,
) -> Option<usize> {
    order
        .iter()
        .copied()
        .find(|&i| dests.get(i).is_some_and(|d| d.weight() > 0 && qualifies(d)))
}

/// Weighted failover (`fo`).
#[derive(Debug, Clone, Default)]
pub struct WeightedFailover {
    order: Vec<usize>,
}

impl WeightedFailover {
    /// A scheduler with no destinations yet; call [`Scheduler::update`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl Scheduler for WeightedFailover {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Fo
    }

    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        self.order = by_weight_desc(dests);
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
        heaviest(dests, &self.order, |d| !d.is_overloaded())
    }
}

/// Weighted overflow (`ovf`).
#[derive(Debug, Clone, Default)]
pub struct Overflow {
    order: Vec<usize>,
}

impl Overflow {
    /// A scheduler with no destinations yet; call [`Scheduler::update`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl Scheduler for Overflow {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ovf
    }

    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        self.order = by_weight_desc(dests);
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], _flow: &Flow, _now: Duration) -> Option<usize> {
        heaviest(dests, &self.order, |d| {
            let load = d.load();
            !load.overloaded && load.active <= d.weight()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, overload, picks, set_conns};

    fn build<S: Scheduler>(mut s: S, d: &[Arc<Dest>]) -> S {
        s.update(d).unwrap();
        s
    }

    #[test]
    fn fo_sticks_to_the_first_heaviest_and_fails_over_in_weight_order() {
        let d = dests(&[2, 5, 5, 1, 0]);
        let fo = build(WeightedFailover::new(), &d);
        set_conns(&d[1], 1000, 1000);
        assert_eq!(picks(&fo, &d, 3), vec![Some(1); 3], "load does not matter");
        overload(&d[1]);
        assert_eq!(picks(&fo, &d, 1), vec![Some(2)]);
        overload(&d[2]);
        assert_eq!(picks(&fo, &d, 1), vec![Some(0)]);
        overload(&d[0]);
        overload(&d[3]);
        assert_eq!(picks(&fo, &d, 1), vec![None], "weight 0 is never chosen");
    }

    #[test]
    fn ovf_overflows_when_active_connections_exceed_the_weight() {
        let d = dests(&[3, 5, 1]);
        let ovf = build(Overflow::new(), &d);
        assert_eq!(picks(&ovf, &d, 1), vec![Some(1)]);
        set_conns(&d[1], 5, 100);
        assert_eq!(picks(&ovf, &d, 1), vec![Some(1)], "5 active <= weight 5");
        d[1].on_connect();
        d[1].on_established();
        assert_eq!(picks(&ovf, &d, 1), vec![Some(0)], "6 active > weight 5");
        overload(&d[0]);
        assert_eq!(picks(&ovf, &d, 1), vec![Some(2)]);
        set_conns(&d[2], 2, 0);
        assert_eq!(picks(&ovf, &d, 1), vec![None]);
    }

    #[test]
    fn weight_changes_take_effect_on_update() {
        let d = dests(&[1, 2]);
        let mut fo = build(WeightedFailover::new(), &d);
        assert_eq!(picks(&fo, &d, 1), vec![Some(1)]);
        d[0].set_weight(3).unwrap();
        fo.update(&d).unwrap();
        assert_eq!(picks(&fo, &d, 1), vec![Some(0)]);
    }
}
