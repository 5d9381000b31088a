//! Pacing of gratuitous ARPs and unsolicited NAs on an interface (keepalived's
//! `vrrp_garp_interval` / `vrrp_gna_interval`, its per-interface `garp_delay`).
//!
//! Sans-I/O: the driver offers each burst ([`AnnounceQueue::burst`]) and asks for what is
//! due when its wake-up time ([`AnnounceQueue::next_wake`]) comes ([`AnnounceQueue::due`]);
//! both return the addresses to announce now. keepalived's behaviour, kept here:
//!
//! - Without an interval for the family, every frame goes at once.
//! - With one, a frame goes at once if the interface's previous frame of that family was
//!   at least the interval ago (or there was none), and sets the interface's next allowed
//!   time; otherwise its address is queued. The interface's time is shared by every
//!   instance announcing on it ([`InterfacePace`]).
//! - An address is queued at most once per instance: the rounds of a burst
//!   (`garp_master_repeat`) that find it already queued are dropped. So with an interval,
//!   a burst yields each address's first frame and at most one more.
//! - Queued frames go one per interval, in the order of the instance's address list;
//!   they are dropped when the instance stops being master ([`AnnounceQueue::clear`]).

use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// The minimum time between two frames of a family on one interface; zero: no pacing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AnnounceIntervals {
    /// `vrrp_garp_interval` (gratuitous ARP, IPv4).
    pub arp: Duration,
    /// `vrrp_gna_interval` (unsolicited NA, IPv6).
    pub na: Duration,
}

impl AnnounceIntervals {
    fn of(&self, addr: &IpAddr) -> Duration {
        if addr.is_ipv4() { self.arp } else { self.na }
    }
}

/// One interface's pacing state, shared by every instance announcing on it: when its
/// next frame of each family may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfacePace {
    next_arp: Option<Instant>,
    next_na: Option<Instant>,
}

impl InterfacePace {
    fn next(&mut self, addr: &IpAddr) -> &mut Option<Instant> {
        if addr.is_ipv4() {
            &mut self.next_arp
        } else {
            &mut self.next_na
        }
    }
}

/// One instance's announcements waiting for their interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceQueue {
    intervals: AnnounceIntervals,
    pending: Vec<IpAddr>,
}

impl AnnounceQueue {
    pub fn new(intervals: AnnounceIntervals) -> Self {
        AnnounceQueue {
            intervals,
            pending: Vec::new(),
        }
    }

    /// `repeat` rounds over `addresses` at `now`: the frames to send now, in order; the
    /// others are queued.
    pub fn burst(
        &mut self,
        addresses: &[IpAddr],
        repeat: u32,
        now: Instant,
        pace: &mut InterfacePace,
    ) -> Vec<IpAddr> {
        let mut send = Vec::new();
        for _ in 0..repeat {
            for addr in addresses {
                let interval = self.intervals.of(addr);
                if interval.is_zero() {
                    send.push(*addr);
                    continue;
                }
                let next = pace.next(addr);
                if next.is_some_and(|at| now < at) {
                    if !self.pending.contains(addr) {
                        self.pending.push(*addr);
                    }
                } else {
                    *next = Some(now + interval);
                    send.push(*addr);
                }
            }
        }
        // keepalived sends what waits in the order of the instance's address list.
        self.pending
            .sort_by_key(|a| addresses.iter().position(|x| x == a).unwrap_or(usize::MAX));
        send
    }

    /// The queued frames whose interface allows them at `now`, in order.
    pub fn due(&mut self, now: Instant, pace: &mut InterfacePace) -> Vec<IpAddr> {
        let intervals = self.intervals;
        let mut send = Vec::new();
        self.pending.retain(|addr| {
            let next = pace.next(addr);
            if next.is_some_and(|at| now < at) {
                return true;
            }
            *next = Some(now + intervals.of(addr));
            send.push(*addr);
            false
        });
        send
    }

    /// When [`AnnounceQueue::due`] may next have something; `None` with nothing queued.
    pub fn next_wake(&self, pace: &InterfacePace) -> Option<Instant> {
        self.pending
            .iter()
            .filter_map(|addr| {
                if addr.is_ipv4() {
                    pace.next_arp
                } else {
                    pace.next_na
                }
            })
            .min()
    }

    /// Drops what is queued (the instance is no longer master).
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// The queued addresses, in order.
    pub fn pending(&self) -> &[IpAddr] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_interval_every_round_goes_at_once() {
        let mut q = AnnounceQueue::new(AnnounceIntervals::default());
        let mut pace = InterfacePace::default();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let sent = q.burst(&[a, b], 3, Instant::now(), &mut pace);
        assert_eq!(sent, [a, b, a, b, a, b]);
        assert_eq!(q.next_wake(&pace), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_paces_the_interface_and_collapses_repeats() {
        let half = Duration::from_millis(500);
        let mut q = AnnounceQueue::new(AnnounceIntervals {
            arp: half,
            na: Duration::ZERO,
        });
        let mut pace = InterfacePace::default();
        let (a, b, v6) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("fe80::1"));
        let t0 = Instant::now();
        // keepalived: the first frame goes; the rest of the 5 rounds queue each address once.
        assert_eq!(
            q.burst(&[a, b, v6], 5, t0, &mut pace),
            [a, v6, v6, v6, v6, v6]
        );
        assert_eq!(q.pending(), [a, b]);
        assert_eq!(q.next_wake(&pace), Some(t0 + half));
        assert!(q.due(t0 + half / 2, &mut pace).is_empty());
        tokio::time::advance(half).await;
        assert_eq!(q.due(Instant::now(), &mut pace), [a]);
        assert_eq!(q.next_wake(&pace), Some(t0 + 2 * half));
        tokio::time::advance(half).await;
        assert_eq!(q.due(Instant::now(), &mut pace), [b]);
        assert_eq!(q.next_wake(&pace), None);
    }

    #[tokio::test(start_paused = true)]
    async fn instances_share_their_interfaces_pace() {
        let second = Duration::from_secs(1);
        let intervals = AnnounceIntervals {
            arp: second,
            na: second,
        };
        let (mut one, mut two) = (AnnounceQueue::new(intervals), AnnounceQueue::new(intervals));
        let mut pace = InterfacePace::default();
        let t0 = Instant::now();
        assert_eq!(
            one.burst(&[ip("10.0.0.1")], 1, t0, &mut pace),
            [ip("10.0.0.1")]
        );
        assert!(two.burst(&[ip("10.0.1.1")], 1, t0, &mut pace).is_empty());
        assert_eq!(two.next_wake(&pace), Some(t0 + second));
        two.clear();
        assert_eq!(two.next_wake(&pace), None);
    }
}
