//! A virtual service's destinations together with its scheduler.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dest::{Dest, Thresholds};
use crate::error::PoolError;
use crate::flow::Flow;
use crate::scheduler::Scheduler;

/// The destinations of one virtual service, in the kernel's list order, and the
/// scheduler that chooses among them.
///
/// Every edit mirrors an ipvsadm command and is followed by [`Scheduler::update`], so
/// scheduler state never lags the list. An edit the scheduler refuses (mh beyond its
/// table size) is rolled back and reported, leaving the pool as it was.
///
/// Picking takes `&self`; edits take `&mut self`. A data plane shares a pool between
/// workers behind a read-write lock: edits are rare and short, and keeping the one
/// scheduler (rather than building a fresh one per edit) preserves what the kernel
/// preserves across edits, such as the round-robin position and the lblc tables.
#[derive(Debug)]
pub struct Pool {
    dests: Vec<Arc<Dest>>,
    scheduler: Box<dyn Scheduler>,
}

impl Pool {
    /// An empty service using `scheduler`.
    pub fn new(scheduler: Box<dyn Scheduler>) -> Self {
        Self {
            dests: Vec::new(),
            scheduler,
        }
    }

    /// The destinations, in scheduling order.
    pub fn dests(&self) -> &[Arc<Dest>] {
        &self.dests
    }

    /// The destination with address `addr`.
    pub fn get(&self, addr: SocketAddr) -> Option<&Arc<Dest>> {
        self.dests.iter().find(|d| d.addr() == addr)
    }

    /// The scheduler in use.
    pub fn scheduler(&self) -> &dyn Scheduler {
        self.scheduler.as_ref()
    }

    /// Chooses the destination for a new connection; see [`Scheduler::pick`].
    pub fn pick(&self, flow: &Flow, now: Duration) -> Option<&Arc<Dest>> {
        let index = self.scheduler.pick(&self.dests, flow, now)?;
        self.dests.get(index)
    }

    /// `ipvsadm -a`: adds a destination at the **front** of the list, where the kernel's
    /// `list_add_rcu` puts it. So after adding A, B, C in that order the list is C, B, A,
    /// and rr starts with C, as a kernel director does.
    pub fn add(&mut self, dest: Arc<Dest>) -> Result<(), PoolError> {
        if self.get(dest.addr()).is_some() {
            return Err(PoolError::Duplicate(dest.addr()));
        }
        if !dest.claim_for_pool() {
            return Err(PoolError::InAnotherPool(dest.addr()));
        }
        self.dests.insert(0, dest);
        if let Err(err) = self.scheduler.update(&self.dests) {
            self.dests.remove(0).leave_pool();
            self.resync();
            return Err(err.into());
        }
        Ok(())
    }

    /// `ipvsadm -D`: the service is deleted, so every destination is out of service
    /// ([`Dest::in_pool`]) for the connections that drain, as the kernel unlinks them.
    pub fn withdraw_all(&self) {
        for dest in &self.dests {
            dest.leave_pool();
        }
    }

    /// `ipvsadm -d`: removes a destination. Its connections keep their `Arc` and may go
    /// on reporting to it.
    pub fn remove(&mut self, addr: SocketAddr) -> Result<Arc<Dest>, PoolError> {
        let index = self.position(addr)?;
        let dest = self.dests.remove(index);
        if let Err(err) = self.scheduler.update(&self.dests) {
            self.dests.insert(index, dest);
            self.resync();
            return Err(err.into());
        }
        dest.leave_pool();
        Ok(dest)
    }

    /// `ipvsadm -e -w`: changes a weight in place (list order is kept). Weight 0
    /// quiesces the destination.
    pub fn set_weight(&mut self, addr: SocketAddr, weight: u32) -> Result<(), PoolError> {
        let index = self.position(addr)?;
        let dest = &self.dests[index];
        let (old_weight, old_last) = (dest.weight(), dest.last_weight());
        dest.set_weight(weight)?;
        if let Err(err) = self.scheduler.update(&self.dests) {
            // Restore both weights exactly; set_weight alone would not undo last_weight.
            self.dests[index].restore_weights(old_weight, old_last);
            self.resync();
            return Err(err.into());
        }
        Ok(())
    }

    /// `ipvsadm -e -x -y`: changes connection thresholds. Schedulers read the overloaded
    /// flag live, so no update is needed.
    pub fn set_thresholds(
        &mut self,
        addr: SocketAddr,
        thresholds: Thresholds,
    ) -> Result<(), PoolError> {
        self.dests[self.position(addr)?].set_thresholds(thresholds);
        Ok(())
    }

    /// `ipvsadm -E -s`: switches scheduler, which starts from the current list.
    pub fn set_scheduler(&mut self, mut scheduler: Box<dyn Scheduler>) -> Result<(), PoolError> {
        scheduler.update(&self.dests)?;
        self.scheduler = scheduler;
        Ok(())
    }

    fn position(&self, addr: SocketAddr) -> Result<usize, PoolError> {
        self.dests
            .iter()
            .position(|d| d.addr() == addr)
            .ok_or(PoolError::NotFound(addr))
    }

    /// Re-runs the scheduler on the restored list after a refused edit. It accepted this
    /// list before, so this cannot fail; were it to, the error is the one already
    /// being reported.
    fn resync(&mut self) {
        let _ = self.scheduler.update(&self.dests);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SchedulerError;
    use crate::scheduler::maglev::Maglev;
    use crate::scheduler::testutil::{addr, flow};
    use crate::scheduler::{SchedFlags, from_name};

    fn dest(i: usize, weight: u32) -> Arc<Dest> {
        Arc::new(Dest::new(addr(i), weight).unwrap())
    }

    fn rr_sequence(pool: &Pool, n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|_| pool.pick(&flow(1, 1), Duration::ZERO).unwrap().addr())
            .collect()
    }

    #[test]
    fn added_destinations_go_first_like_the_kernel_list() {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).unwrap());
        for i in 0..3 {
            pool.add(dest(i, 1)).unwrap();
        }
        assert_eq!(
            rr_sequence(&pool, 4),
            vec![addr(2), addr(1), addr(0), addr(2)]
        );
        assert_eq!(pool.add(dest(1, 5)), Err(PoolError::Duplicate(addr(1))));
    }

    #[test]
    fn a_destination_knows_while_it_is_in_the_pool() {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).unwrap());
        let first = dest(0, 1);
        assert!(!first.in_pool());
        pool.add(Arc::clone(&first)).unwrap();
        assert!(first.in_pool());
        pool.remove(addr(0)).unwrap();
        assert!(!first.in_pool());
        // Another destination at the same address is not the removed one.
        let second = dest(0, 1);
        pool.add(Arc::clone(&second)).unwrap();
        assert!(second.in_pool() && !first.in_pool());
        let mut other = Pool::new(from_name("rr", SchedFlags::EMPTY).unwrap());
        assert_eq!(
            other.add(Arc::clone(&second)),
            Err(PoolError::InAnotherPool(addr(0))),
            "a destination belongs to one pool"
        );
        pool.withdraw_all();
        assert!(
            !second.in_pool(),
            "a deleted service's destinations are out too"
        );
    }

    #[test]
    fn edits_update_the_scheduler() {
        let mut pool = Pool::new(from_name("wrr", SchedFlags::EMPTY).unwrap());
        pool.add(dest(0, 1)).unwrap();
        pool.add(dest(1, 1)).unwrap();
        pool.set_weight(addr(0), 0).unwrap();
        assert_eq!(rr_sequence(&pool, 3), vec![addr(1); 3]);
        pool.remove(addr(1)).unwrap();
        assert!(pool.pick(&flow(1, 1), Duration::ZERO).is_none());
        assert_eq!(
            pool.remove(addr(1)).unwrap_err(),
            PoolError::NotFound(addr(1))
        );
        assert_eq!(
            pool.set_weight(addr(0), u32::MAX),
            Err(PoolError::Dest(crate::DestError::WeightOutOfRange {
                weight: u32::MAX
            }))
        );
        pool.set_scheduler(from_name("fo", SchedFlags::EMPTY).unwrap())
            .unwrap();
        pool.set_weight(addr(0), 3).unwrap();
        assert_eq!(
            pool.pick(&flow(1, 1), Duration::ZERO).unwrap().addr(),
            addr(0)
        );
    }

    #[test]
    fn thresholds_apply_without_an_update() {
        let mut pool = Pool::new(from_name("lc", SchedFlags::EMPTY).unwrap());
        pool.add(dest(0, 1)).unwrap();
        let d = Arc::clone(pool.get(addr(0)).unwrap());
        let _conn = d.connect();
        pool.set_thresholds(addr(0), Thresholds { upper: 1, lower: 0 })
            .unwrap();
        assert!(pool.pick(&flow(1, 1), Duration::ZERO).is_none());
    }

    #[test]
    fn a_refused_edit_leaves_the_pool_unchanged() {
        let mh = Maglev::with_table_size(false, false, 251).unwrap();
        let mut pool = Pool::new(Box::new(mh));
        for i in 0..251 {
            pool.add(dest(i, 1)).unwrap();
        }
        let before = pool.pick(&flow(9, 1), Duration::ZERO).map(|d| d.addr());
        assert_eq!(
            pool.add(dest(251, 1)),
            Err(PoolError::Scheduler(SchedulerError::TooManyDestinations {
                count: 252,
                table_size: 251
            }))
        );
        assert_eq!(pool.dests().len(), 251);
        assert_eq!(
            pool.pick(&flow(9, 1), Duration::ZERO).map(|d| d.addr()),
            before
        );
    }
}
