//! The [`Scheduler`] trait and the 14 IPVS algorithms behind it.
//!
//! One module per family, sharing the selection loops of the private `select` module:
//!
//! | module | schedulers | kernel files |
//! |---|---|---|
//! | [`round_robin`] | rr, wrr | ip_vs_rr.c, ip_vs_wrr.c |
//! | [`least_conn`] | lc, wlc, sed, nq | ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c |
//! | [`failover`] | fo, ovf | ip_vs_fo.c, ip_vs_ovf.c |
//! | [`hashing`] | sh, dh | ip_vs_sh.c, ip_vs_dh.c |
//! | [`maglev`] | mh | ip_vs_mh.c |
//! | [`locality`] | lblc, lblcr | ip_vs_lblc.c, ip_vs_lblcr.c |
//! | [`twos`] | twos | ip_vs_twos.c |
//!
//! The slice of destinations plays the role of the kernel's `svc->destinations` list:
//! its order is the kernel's iteration order, which decides ties and round-robin
//! sequences. [`crate::Pool`] keeps that order the way the kernel does.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;

pub mod failover;
pub mod hashing;
pub mod least_conn;
mod load_index;
pub mod locality;
pub mod maglev;
pub mod round_robin;
mod select;
pub mod twos;

pub use maglev::MH_TABLE_SIZES;

/// One IPVS scheduling algorithm.
///
/// Contract: [`Scheduler::pick`] must be given the same slice (same destinations, same
/// order) that was last given to [`Scheduler::update`]; only the destinations' counters
/// and thresholds may change in between. Weight changes and list changes call
/// [`Scheduler::update`] first, as the kernel calls a scheduler's `upd_dest`,
/// `add_dest` and `del_dest` hooks. [`crate::Pool`] enforces this.
pub trait Scheduler: Send + Sync + fmt::Debug {
    /// Which algorithm this is.
    fn kind(&self) -> SchedulerKind;

    /// Rebuilds derived state after the destination list or a weight changed. Position
    /// state (rr) carries over the way the kernel carries it.
    ///
    /// Fails only where the kernel refuses the change (mh with more destinations than
    /// table entries); the scheduler is then unchanged.
    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError>;

    /// The index in `dests` of the destination for a new connection, or `None` when the
    /// kernel would report "no destination available".
    ///
    /// `now` is monotonic time since an epoch of the caller's choice (for instance
    /// `tokio::time::Instant::now() - start`); only lblc and lblcr use it, to expire
    /// their tables, so tests can move time without sleeping.
    fn pick(&self, dests: &[Arc<Dest>], flow: &Flow, now: Duration) -> Option<usize>;
}

impl dyn Scheduler {
    /// Builds the scheduler ipvsadm calls `name` (`-s`), with `-b` flags. Shorthand for
    /// [`from_name`].
    pub fn from_name(name: &str, flags: SchedFlags) -> Result<Box<dyn Scheduler>, SchedulerError> {
        from_name(name, flags)
    }
}

/// Builds the scheduler ipvsadm calls `name` (`-s`), with `-b` flags.
///
/// Unknown names fail with [`SchedulerError::UnknownScheduler`], whose message lists the
/// valid ones.
pub fn from_name(name: &str, flags: SchedFlags) -> Result<Box<dyn Scheduler>, SchedulerError> {
    Ok(name.parse::<SchedulerKind>()?.build(flags))
}

/// The scheduler names IPVS knows (serialised as those names, as keepalived's `lb_algo`
/// and ipvsadm's `-s` write them).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection; the default of ipvsadm and keepalived.
    #[default]
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
    /// Power of two choices.
    Twos,
}

impl SchedulerKind {
    /// Every scheduler, in the order ipvsadm's manual lists them.
    pub const ALL: [Self; 14] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Lblc,
        Self::Lblcr,
        Self::Dh,
        Self::Sh,
        Self::Sed,
        Self::Nq,
        Self::Fo,
        Self::Ovf,
        Self::Mh,
        Self::Twos,
    ];

    /// The ipvsadm / keepalived name (`lb_algo`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Mh => "mh",
            Self::Twos => "twos",
        }
    }

    /// A fresh scheduler of this kind with default parameters (the kernel's defaults;
    /// a fixed seed for twos). Flags that do not concern this kind are ignored, as the
    /// kernel ignores them.
    pub fn build(self, flags: SchedFlags) -> Box<dyn Scheduler> {
        use least_conn::{Cost, LeastConn};
        match self {
            Self::Rr => Box::new(round_robin::RoundRobin::new()),
            Self::Wrr => Box::new(round_robin::WeightedRoundRobin::new()),
            Self::Lc => Box::new(LeastConn::new(Cost::Overhead)),
            Self::Wlc => Box::new(LeastConn::new(Cost::WeightedOverhead)),
            Self::Sed => Box::new(LeastConn::new(Cost::ExpectedDelay)),
            Self::Nq => Box::new(LeastConn::new(Cost::NeverQueue)),
            Self::Lblc => Box::new(locality::Lblc::new()),
            Self::Lblcr => Box::new(locality::Lblcr::new()),
            Self::Dh => Box::new(hashing::DestinationHash::new()),
            Self::Sh => Box::new(hashing::SourceHash::new(
                flags.contains(SchedFlags::SH_FALLBACK),
                flags.contains(SchedFlags::SH_PORT),
            )),
            Self::Fo => Box::new(failover::WeightedFailover::new()),
            Self::Ovf => Box::new(failover::Overflow::new()),
            Self::Mh => Box::new(maglev::Maglev::new(
                flags.contains(SchedFlags::MH_FALLBACK),
                flags.contains(SchedFlags::MH_PORT),
            )),
            Self::Twos => Box::new(twos::TwoChoices::new(twos::DEFAULT_SEED)),
        }
    }

    /// "rr, wrr, …", for error messages.
    pub(crate) fn valid_names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
        names.join(", ")
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    /// Exact, case-sensitive names, as the kernel matches them.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| SchedulerError::UnknownScheduler {
                name: name.to_owned(),
            })
    }
}

/// Scheduler flags (`ipvsadm -b`, keepalived's `flag-1`, `sh-port`…), with the kernel's
/// bit values (`IP_VS_SVC_F_SCHED1..3`).
///
/// The kernel has three generic bits that each scheduler interprets its own way: for sh
/// and mh, bit 1 means *fallback* (pick another server when the hashed one is
/// unavailable) and bit 2 means *port* (hash the client port as well as its address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchedFlags(u32);

impl SchedFlags {
    /// No flags.
    pub const EMPTY: Self = Self(0);
    /// `IP_VS_SVC_F_SCHED1`.
    pub const FLAG_1: Self = Self(0x0008);
    /// `IP_VS_SVC_F_SCHED2`.
    pub const FLAG_2: Self = Self(0x0010);
    /// `IP_VS_SVC_F_SCHED3`.
    pub const FLAG_3: Self = Self(0x0020);
    /// sh: rehash to another server when the hashed one is unavailable.
    pub const SH_FALLBACK: Self = Self::FLAG_1;
    /// sh: hash the client port as well.
    pub const SH_PORT: Self = Self::FLAG_2;
    /// mh: rehash to another server when the hashed one is unavailable.
    pub const MH_FALLBACK: Self = Self::FLAG_1;
    /// mh: hash the client port as well.
    pub const MH_PORT: Self = Self::FLAG_2;

    const ALL_BITS: u32 = 0x0038;

    /// The kernel bit values.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from kernel bit values; bits that are not scheduler flags are dropped.
    pub const fn from_bits_truncate(bits: u32) -> Self {
        Self(bits & Self::ALL_BITS)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses ipvsadm's comma-separated `-b` list for scheduler `kind`.
    ///
    /// `sh-*` flags are refused for other schedulers than sh, `mh-*` ones for other than
    /// mh (ipvsadm does the same); `flag-N` is accepted for any.
    pub fn parse(list: &str, kind: SchedulerKind) -> Result<Self, SchedulerError> {
        let mut flags = Self::EMPTY;
        for flag in list.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (bit, owner) = match flag {
                "flag-1" => (Self::FLAG_1, None),
                "flag-2" => (Self::FLAG_2, None),
                "flag-3" => (Self::FLAG_3, None),
                "sh-fallback" => (Self::SH_FALLBACK, Some(SchedulerKind::Sh)),
                "sh-port" => (Self::SH_PORT, Some(SchedulerKind::Sh)),
                "mh-fallback" => (Self::MH_FALLBACK, Some(SchedulerKind::Mh)),
                "mh-port" => (Self::MH_PORT, Some(SchedulerKind::Mh)),
                _ => {
                    return Err(SchedulerError::UnknownFlag {
                        flag: flag.to_owned(),
                    });
                }
            };
            if let Some(expected) = owner.filter(|&owner| owner != kind) {
                return Err(SchedulerError::IncompatibleFlag {
                    flag: flag.to_owned(),
                    expected,
                    actual: kind,
                });
            }
            flags |= bit;
        }
        Ok(flags)
    }
}

impl BitOr for SchedFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for SchedFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Small destination sets for the per-scheduler tests.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::dest::{Dest, Thresholds};
    use crate::flow::Flow;
    use crate::scheduler::Scheduler;

    /// Destinations 10.0.0.1:80, 10.0.0.2:80… with the given weights.
    pub fn dests(weights: &[u32]) -> Vec<Arc<Dest>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Arc::new(Dest::new(addr(i), w).unwrap()))
            .collect()
    }

    pub fn addr(i: usize) -> SocketAddr {
        let i = u32::try_from(i).unwrap() + 1;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 80)
    }

    /// Sets a destination's counters (fresh destinations only).
    pub fn set_conns(d: &Dest, active: u32, inactive: u32) {
        for _ in 0..active + inactive {
            d.on_connect();
        }
        for _ in 0..active {
            d.on_established();
        }
    }

    /// Marks a destination overloaded through its thresholds.
    pub fn overload(d: &Dest) {
        let total = u32::try_from(d.load().total()).unwrap();
        d.set_thresholds(Thresholds {
            upper: total.max(1),
            lower: 0,
        });
        if !d.is_overloaded() {
            d.on_connect();
        }
        assert!(d.is_overloaded());
    }

    /// A flow from 192.0.2.`n`:`port` to 198.51.100.1:80.
    pub fn flow(n: u8, port: u16) -> Flow {
        Flow::new(
            SocketAddr::from(([192, 0, 2, n], port)),
            SocketAddr::from(([198, 51, 100, 1], 80)),
        )
    }

    /// Picks `count` times for the same flow and returns the indices.
    pub fn picks(s: &dyn Scheduler, d: &[Arc<Dest>], count: usize) -> Vec<Option<usize>> {
        (0..count)
            .map(|_| s.pick(d, &flow(1, 1000), Duration::ZERO))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_builds_its_kind() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.name().parse::<SchedulerKind>(), Ok(kind));
            let sched = from_name(kind.name(), SchedFlags::EMPTY).unwrap();
            assert_eq!(sched.kind(), kind);
        }
        assert_eq!(SchedulerKind::default(), SchedulerKind::Wlc);
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = <dyn Scheduler>::from_name("wrrr", SchedFlags::EMPTY).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown scheduler `wrrr` (valid: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, \
             fo, ovf, mh, twos)"
        );
        assert!(
            from_name("RR", SchedFlags::EMPTY).is_err(),
            "names are case-sensitive"
        );
    }

    #[test]
    fn flags_parse_like_ipvsadm() {
        let sh = SchedFlags::parse("sh-port, sh-fallback", SchedulerKind::Sh).unwrap();
        assert_eq!(sh, SchedFlags::SH_PORT | SchedFlags::SH_FALLBACK);
        assert_eq!(sh.bits(), 0x18);
        assert_eq!(
            SchedFlags::parse("flag-3", SchedulerKind::Rr).unwrap(),
            SchedFlags::FLAG_3
        );
        assert_eq!(
            SchedFlags::parse("mh-port", SchedulerKind::Sh),
            Err(SchedulerError::IncompatibleFlag {
                flag: "mh-port".into(),
                expected: SchedulerKind::Mh,
                actual: SchedulerKind::Sh,
            })
        );
        assert!(matches!(
            SchedFlags::parse("sh-sticky", SchedulerKind::Sh),
            Err(SchedulerError::UnknownFlag { .. })
        ));
        assert_eq!(SchedFlags::from_bits_truncate(0xffff).bits(), 0x38);
    }
}
