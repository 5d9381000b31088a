//! When data last moved on a connection or flow: updated on the data path for the cost
//! of a clock read and a relaxed store, read by an idle timer that re-arms only when it
//! fires (never on every transfer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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

    /// Completes once nothing has moved for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            tokio::time::sleep_until(self.last() + timeout).await;
            if self.last() + timeout <= Instant::now() {
                return;
            }
        }
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
        activity.idle_for(Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }
}
