//! When data last moved on a connection or flow: updated on the data path for the cost
//! of a clock read and a relaxed store, read by an idle timer that re-arms only when it
//! fires (never on every transfer).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub(crate) struct LastActivity {
    start: Instant,
    last_ms: AtomicU64,
}

impl LastActivity {
    /// Activity now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records activity now; returns the time since [`LastActivity::new`], so a caller
    /// needing the time too does not read the clock twice.
    pub(crate) fn touch(&self) -> Duration {
        let elapsed = self.start.elapsed();
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        elapsed
    }

    /// When data last moved.
    pub(crate) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Fires once nothing has moved for its timeout.
///
/// The timer is armed with the deadline the last activity gives and looked at again
/// only when it fires: if something moved meanwhile, it is re-armed for the new
/// deadline. So a transfer costs a relaxed store ([`LastActivity::touch`]), never a
/// visit to the timer wheel.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    /// Polled since its last reset, so it will wake the task when it fires.
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            armed: false,
        }
    }

    /// Ready once `activity` has been idle for the timeout; otherwise the task is woken
    /// when the timer next fires.
    pub(crate) fn poll_idle(&mut self, cx: &mut Context<'_>, activity: &LastActivity) -> Poll<()> {
        if self.armed && !self.sleep.is_elapsed() {
            return Poll::Pending;
        }
        let deadline = activity.last() + self.timeout;
        if deadline <= Instant::now() {
            return Poll::Ready(());
        }
        self.sleep.as_mut().reset(deadline);
        // Registers the waker; the deadline is in the future, so it is pending. Polled
        // outside tokio's cooperative budget: with the task's budget spent, a plain poll
        // would return before registering, and since an armed timer is not polled
        // again, it would never wake the task.
        let _ = Pin::new(&mut tokio::task::unconstrained(self.sleep.as_mut())).poll(cx);
        self.armed = true;
        Poll::Pending
    }

    /// Completes once `activity` has been idle for the timeout.
    pub(crate) async fn idle(&mut self, activity: &LastActivity) {
        std::future::poll_fn(|cx| self.poll_idle(cx, activity)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_touch() {
        let activity = LastActivity::new();
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.touch();
        IdleTimer::new(Duration::from_secs(10))
            .idle(&activity)
            .await;
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_armed_with_the_task_budget_spent_still_fires() {
        let activity = LastActivity::new();
        let started = Instant::now();
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        // Spend the task's cooperative budget (128 units) on ready operations.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..200 {
            tx.send(i).unwrap();
        }
        let idle = std::future::poll_fn(|cx| {
            while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {}
            timer.poll_idle(cx, &activity)
        });
        tokio::time::timeout(Duration::from_secs(3600), idle)
            .await
            .expect("the idle timer fired");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn activity_while_armed_postpones_the_timeout() {
        let activity = LastActivity::new();
        let started = Instant::now();
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        let toucher = async {
            tokio::time::sleep(Duration::from_secs(7)).await;
            activity.touch();
        };
        // The timer is armed for 10 s before the touch at 7 s; it fires, sees the
        // touch, and waits until 17 s.
        let ((), ()) = tokio::join!(timer.idle(&activity), toucher);
        assert_eq!(started.elapsed(), Duration::from_secs(17));
    }
}
