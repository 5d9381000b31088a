//! Traffic counters and IPVS's rate estimator (`ipvsadm -L --stats` / `--rate`).
//!
//! The counters mirror `struct ip_vs_kstats`: connections scheduled, packets and bytes
//! in each direction. The data plane increments them (one set per service, one per
//! destination, as `ip_vs_in_stats` / `ip_vs_out_stats` / `ip_vs_conn_stats` do).
//!
//! The rates are IPVS's estimator (net/netfilter/ipvs/ip_vs_est.c): every 2 seconds it
//! takes the counters' growth over the tick and folds it into an exponentially weighted
//! moving average with weight 1/4 (`avg += (rate - avg) >> 2`). Connection and packet
//! rates are kept scaled by 2^10 (the growth over 2 s shifted left by 9), byte rates by
//! 2^5 (shifted left by 4); reading rounds to the nearest unit. Nothing here reads a
//! clock: [`Stats::estimate`] is called with `now` and runs the ticks that are due.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The estimator's period (`2 * HZ` in the kernel).
pub const ESTIMATOR_PERIOD: Duration = Duration::from_secs(2);

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counters {
    /// Connections scheduled (ipvsadm's `Conns`).
    pub conns: u64,
    /// Packets from clients (`InPkts`).
    pub in_pkts: u64,
    /// Packets to clients (`OutPkts`).
    pub out_pkts: u64,
    /// Bytes from clients (`InBytes`).
    pub in_bytes: u64,
    /// Bytes to clients (`OutBytes`).
    pub out_bytes: u64,
}

/// Estimated rates, per second, as ipvsadm `--rate` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Incoming packets per second.
    pub in_pps: u64,
    /// Outgoing packets per second.
    pub out_pps: u64,
    /// Incoming bytes per second.
    pub in_bps: u64,
    /// Outgoing bytes per second.
    pub out_bps: u64,
}

/// The estimator state of one counter set (`struct ip_vs_estimator`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Estimator {
    /// When the next tick is due; `None` until the first [`Stats::estimate`].
    next_tick: Option<Duration>,
    last: Counters,
    /// Scaled averages: cps/pps by 2^10, bps by 2^5.
    cps: i64,
    in_pps: i64,
    out_pps: i64,
    in_bps: i64,
    out_bps: i64,
}

/// Growth of a counter over one tick, scaled as the kernel scales it, as a signed value.
fn scaled(delta: u64, shift: u32) -> i64 {
    i64::try_from(delta.saturating_mul(1 << shift)).unwrap_or(i64::MAX)
}

/// One EWMA step with weight 1/4 (an arithmetic shift, like the kernel's signed `>> 2`).
fn ewma(avg: &mut i64, rate: i64) {
    *avg += (rate - *avg) >> 2;
}

fn read(avg: i64, round: i64, shift: u32) -> u64 {
    u64::try_from((avg + round) >> shift).unwrap_or(0)
}

impl Estimator {
    fn tick(&mut self, delta: Counters) {
        ewma(&mut self.cps, scaled(delta.conns, 9));
        ewma(&mut self.in_pps, scaled(delta.in_pkts, 9));
        ewma(&mut self.out_pps, scaled(delta.out_pkts, 9));
        ewma(&mut self.in_bps, scaled(delta.in_bytes, 4));
        ewma(&mut self.out_bps, scaled(delta.out_bytes, 4));
    }

    fn rates(&self) -> Rates {
        Rates {
            cps: read(self.cps, 0x1ff, 10),
            in_pps: read(self.in_pps, 0x1ff, 10),
            out_pps: read(self.out_pps, 0x1ff, 10),
            in_bps: read(self.in_bps, 0xf, 5),
            out_bps: read(self.out_bps, 0xf, 5),
        }
    }
}

/// Counters and rate estimator of a service or a destination.
///
/// Counting is lock-free (relaxed atomics, shared by every worker); the estimator sits
/// behind a mutex taken only by [`Stats::estimate`], [`Stats::rates`] and
/// [`Stats::zero`].
#[derive(Debug, Default)]
pub struct Stats {
    conns: AtomicU64,
    in_pkts: AtomicU64,
    out_pkts: AtomicU64,
    in_bytes: AtomicU64,
    out_bytes: AtomicU64,
    est: Mutex<Estimator>,
}

impl Stats {
    /// Zeroed counters; the estimator starts at the first [`Stats::estimate`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection was scheduled (`ip_vs_conn_stats`).
    pub fn count_conn(&self) {
        self.conns.fetch_add(1, Ordering::Relaxed);
    }

    /// A packet of `bytes` bytes came from the client (`ip_vs_in_stats`).
    pub fn count_in(&self, bytes: u64) {
        self.in_pkts.fetch_add(1, Ordering::Relaxed);
        self.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A packet of `bytes` bytes went to the client (`ip_vs_out_stats`).
    pub fn count_out(&self, bytes: u64) {
        self.out_pkts.fetch_add(1, Ordering::Relaxed);
        self.out_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Several packets from the client at once (a data path that counts locally and
    /// adds up now and then, rather than touching shared counters per packet).
    pub fn count_in_batch(&self, packets: u64, bytes: u64) {
        self.in_pkts.fetch_add(packets, Ordering::Relaxed);
        self.in_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Several packets to the client at once; see [`Stats::count_in_batch`].
    pub fn count_out_batch(&self, packets: u64, bytes: u64) {
        self.out_pkts.fetch_add(packets, Ordering::Relaxed);
        self.out_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            conns: self.conns.load(Ordering::Relaxed),
            in_pkts: self.in_pkts.load(Ordering::Relaxed),
            out_pkts: self.out_pkts.load(Ordering::Relaxed),
            in_bytes: self.in_bytes.load(Ordering::Relaxed),
            out_bytes: self.out_bytes.load(Ordering::Relaxed),
        }
    }

    /// Runs the estimator ticks due by `now` (monotonic time since the caller's epoch,
    /// as for [`crate::Scheduler::pick`]).
    ///
    /// The first call only takes the starting point; ticks then fall every
    /// [`ESTIMATOR_PERIOD`] after it. Called at least every 2 s this is exactly the
    /// kernel's estimator. When several ticks are due at once (the caller was late) the
    /// growth since the last tick is spread evenly over them, rather than credited to a
    /// single 2 s interval, so a late caller does not create a spike.
    pub fn estimate(&self, now: Duration) {
        let current = self.counters();
        let mut est = self.est.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(next) = est.next_tick else {
            est.last = current;
            est.next_tick = Some(now + ESTIMATOR_PERIOD);
            return;
        };
        if now < next {
            return;
        }
        let due = (now - next).as_nanos() / ESTIMATOR_PERIOD.as_nanos() + 1;
        let ticks = u64::try_from(due).unwrap_or(u64::MAX);
        let total = Counters {
            conns: current.conns.wrapping_sub(est.last.conns),
            in_pkts: current.in_pkts.wrapping_sub(est.last.in_pkts),
            out_pkts: current.out_pkts.wrapping_sub(est.last.out_pkts),
            in_bytes: current.in_bytes.wrapping_sub(est.last.in_bytes),
            out_bytes: current.out_bytes.wrapping_sub(est.last.out_bytes),
        };
        // Catching up on a very long gap: ticks beyond ~64 with zero growth leave every
        // average at its floor anyway, so cap the loop.
        let run = ticks.min(64);
        for i in 0..run {
            let share = |v: u64| v / run + u64::from(i < v % run);
            est.tick(Counters {
                conns: share(total.conns),
                in_pkts: share(total.in_pkts),
                out_pkts: share(total.out_pkts),
                in_bytes: share(total.in_bytes),
                out_bytes: share(total.out_bytes),
            });
        }
        est.last = current;
        let advance = u32::try_from(ticks).unwrap_or(u32::MAX);
        est.next_tick = Some(next + ESTIMATOR_PERIOD * advance);
    }

    /// The estimated rates (`ip_vs_read_estimator`).
    pub fn rates(&self) -> Rates {
        self.est
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rates()
    }

    /// `ipvsadm -Z`: counters back to zero, rates too (`ip_vs_zero_stats`). The tick
    /// schedule is kept.
    pub fn zero(&self) {
        let mut est = self.est.lock().unwrap_or_else(PoisonError::into_inner);
        for counter in [
            &self.conns,
            &self.in_pkts,
            &self.out_pkts,
            &self.in_bytes,
            &self.out_bytes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        *est = Estimator {
            next_tick: est.next_tick,
            ..Estimator::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn counters_add_up() {
        let s = Stats::new();
        s.count_conn();
        s.count_in(60);
        s.count_in(40);
        s.count_out(1500);
        assert_eq!(
            s.counters(),
            Counters {
                conns: 1,
                in_pkts: 2,
                out_pkts: 1,
                in_bytes: 100,
                out_bytes: 1500
            }
        );
        s.zero();
        assert_eq!(s.counters(), Counters::default());
    }

    /// Feeds `per_tick` of everything each 2 s tick for `ticks` ticks.
    fn feed(s: &Stats, start: u64, ticks: u64, conns: u64, pkts: u64, bytes: u64) {
        for t in 1..=ticks {
            for _ in 0..conns {
                s.count_conn();
            }
            for _ in 0..pkts {
                s.count_in(bytes / pkts);
                s.count_out(2 * bytes / pkts);
            }
            s.estimate(secs(start + 2 * t));
        }
    }

    #[test]
    fn converges_to_a_steady_rate() {
        let s = Stats::new();
        s.estimate(Duration::ZERO);
        // 100 connections, 1000 packets, 100 000 bytes in (200 000 out) per 2 s.
        feed(&s, 0, 80, 100, 1000, 100_000);
        assert_eq!(
            s.rates(),
            Rates {
                cps: 50,
                in_pps: 500,
                out_pps: 500,
                in_bps: 50_000,
                out_bps: 100_000
            }
        );
    }

    #[test]
    fn first_ticks_follow_the_kernel_ewma() {
        let s = Stats::new();
        s.estimate(Duration::ZERO);
        for _ in 0..100 {
            s.count_conn();
        }
        s.estimate(secs(2));
        // rate = 100 << 9 = 51200; avg = 51200 / 4 = 12800; read (12800 + 511) >> 10 = 12.
        assert_eq!(s.rates().cps, 12);
        for _ in 0..100 {
            s.count_conn();
        }
        s.estimate(secs(4));
        // avg = 12800 + (51200 - 12800) / 4 = 22400; (22400 + 511) >> 10 = 22.
        assert_eq!(s.rates().cps, 22);
        // Nothing is due before the next 2 s boundary.
        for _ in 0..100 {
            s.count_conn();
        }
        s.estimate(secs(5));
        assert_eq!(s.rates().cps, 22);
    }

    #[test]
    fn decays_when_traffic_stops_and_late_calls_spread_growth() {
        let s = Stats::new();
        s.estimate(Duration::ZERO);
        feed(&s, 0, 40, 100, 10, 1000);
        assert_eq!(s.rates().cps, 50);
        s.estimate(secs(80 + 60));
        assert_eq!(s.rates(), Rates::default());

        // 300 connections over 6 s reported in one late call: 100 per tick, no spike.
        let late = Stats::new();
        late.estimate(Duration::ZERO);
        feed(&late, 0, 40, 100, 10, 1000);
        for _ in 0..300 {
            late.count_conn();
        }
        late.estimate(secs(86));
        assert_eq!(late.rates().cps, 50);
    }
}
