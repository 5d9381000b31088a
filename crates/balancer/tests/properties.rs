//! Properties every scheduler must keep, on random destination sets.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keeplb_balancer::scheduler::maglev::Maglev;
use keeplb_balancer::{Dest, Flow, SchedFlags, Scheduler, SchedulerKind, Thresholds, from_name};
use proptest::prelude::*;

/// A destination as generated: weight, overloaded, active and inactive connections.
#[derive(Clone, Debug)]
struct Spec {
    weight: u32,
    overloaded: bool,
    active: u32,
    inactive: u32,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u32..=5, prop::bool::weighted(0.25), 0u32..6, 0u32..6).prop_map(
        |(weight, overloaded, active, inactive)| Spec {
            weight,
            overloaded,
            active,
            inactive,
        },
    )
}

fn addr(i: usize, v6: bool) -> SocketAddr {
    let i = u32::try_from(i).unwrap() + 1;
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::try_from(i).unwrap(),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    };
    SocketAddr::new(ip, 8080)
}

fn build(specs: &[Spec], v6: bool) -> Vec<Arc<Dest>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = Arc::new(Dest::new(addr(i, v6), s.weight).unwrap());
            for _ in 0..s.active + s.inactive {
                d.on_connect();
            }
            for _ in 0..s.active {
                d.on_established();
            }
            if s.overloaded {
                let total = s.active + s.inactive;
                d.set_thresholds(Thresholds {
                    upper: total.max(1),
                    lower: 0,
                });
                if !d.is_overloaded() {
                    d.on_connect();
                }
            }
            d
        })
        .collect()
}

fn flow_strategy() -> impl Strategy<Value = Flow> {
    (any::<bool>(), any::<u32>(), any::<u16>(), 0u8..4).prop_map(|(v6, ip, port, vip)| {
        let client = if v6 {
            IpAddr::V6(Ipv6Addr::from(u128::from(ip) << 64 | u128::from(ip)))
        } else {
            IpAddr::V4(Ipv4Addr::from(ip))
        };
        Flow::new(
            SocketAddr::new(client, port),
            SocketAddr::from(([198, 51, 100, vip], 80)),
        )
    })
}

fn sched_flags() -> impl Strategy<Value = SchedFlags> {
    (any::<bool>(), any::<bool>()).prop_map(|(fallback, port)| {
        let mut f = SchedFlags::EMPTY;
        if fallback {
            f |= SchedFlags::FLAG_1;
        }
        if port {
            f |= SchedFlags::FLAG_2;
        }
        f
    })
}

fn scheduler(kind: SchedulerKind, flags: SchedFlags, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
    let mut s = from_name(kind.name(), flags).unwrap();
    s.update(dests).unwrap();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the scheduler, a choice is a destination with a weight that is not
    /// overloaded; and schedulers that search the whole list (all but hashing without
    /// fallback) find one whenever one exists.
    #[test]
    fn never_quiesced_or_overloaded_and_none_only_when_nothing_qualifies(
        specs in prop::collection::vec(spec(), 0..12),
        v6 in any::<bool>(),
        flags in sched_flags(),
        flows in prop::collection::vec(flow_strategy(), 1..8),
    ) {
        let dests = build(&specs, v6);
        let usable = |i: usize| dests[i].weight() > 0 && !dests[i].is_overloaded();
        let any_usable = (0..dests.len()).any(usable);
        let any_under_weight = (0..dests.len())
            .any(|i| usable(i) && dests[i].active_conns() <= dests[i].weight());
        let fallback = flags.contains(SchedFlags::FLAG_1);
        for kind in SchedulerKind::ALL {
            let s = scheduler(kind, flags, &dests);
            for (t, flow) in flows.iter().enumerate() {
                let now = Duration::from_secs(u64::try_from(t).unwrap() * 3600);
                let chosen = s.pick(&dests, flow, now);
                if let Some(i) = chosen {
                    prop_assert!(i < dests.len() && usable(i), "{kind} chose {i}: {specs:?}");
                }
                let must_find = match kind {
                    SchedulerKind::Dh => false,
                    SchedulerKind::Sh | SchedulerKind::Mh => fallback && any_usable,
                    SchedulerKind::Ovf => any_under_weight,
                    _ => any_usable,
                };
                prop_assert!(!must_find || chosen.is_some(), "{kind} found nothing: {specs:?}");
            }
        }
    }

    /// Over one full cycle, wrr gives every destination exactly weight / gcd turns.
    #[test]
    fn wrr_hands_out_exactly_the_weights_per_cycle(weights in prop::collection::vec(0u32..12, 1..8)) {
        let specs: Vec<Spec> = weights
            .iter()
            .map(|&weight| Spec { weight, overloaded: false, active: 0, inactive: 0 })
            .collect();
        let dests = build(&specs, false);
        let s = scheduler(SchedulerKind::Wrr, SchedFlags::EMPTY, &dests);
        let gcd = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
        let flow = Flow::new(addr(100, false), addr(200, false));
        if gcd == 0 {
            prop_assert_eq!(s.pick(&dests, &flow, Duration::ZERO), None);
            return Ok(());
        }
        let cycle: u32 = weights.iter().map(|w| w / gcd).sum();
        for _ in 0..2 {
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..cycle {
                counts[s.pick(&dests, &flow, Duration::ZERO).unwrap()] += 1;
            }
            let expected: Vec<u32> = weights.iter().map(|w| w / gcd).collect();
            prop_assert_eq!(counts, expected);
        }
    }

    /// rr gives each usable destination exactly one turn per round.
    #[test]
    fn rr_gives_one_turn_each_per_round(specs in prop::collection::vec(spec(), 1..10)) {
        let dests = build(&specs, false);
        let usable: Vec<usize> = (0..dests.len()).filter(|&i| dests[i].available()).collect();
        let s = scheduler(SchedulerKind::Rr, SchedFlags::EMPTY, &dests);
        let flow = Flow::new(addr(100, false), addr(200, false));
        let round: Vec<Option<usize>> =
            (0..usable.len()).map(|_| s.pick(&dests, &flow, Duration::ZERO)).collect();
        prop_assert_eq!(round, usable.iter().copied().map(Some).collect::<Vec<_>>());
    }

    /// sh and mh depend only on their inputs: two directors (or one before and after a
    /// restart) with the same destination list send every client to the same server.
    #[test]
    fn hashing_is_identical_across_independent_instances(
        specs in prop::collection::vec(spec(), 1..12),
        v6 in any::<bool>(),
        flags in sched_flags(),
        flows in prop::collection::vec(flow_strategy(), 1..32),
    ) {
        let (one, two) = (build(&specs, v6), build(&specs, v6));
        for kind in [SchedulerKind::Sh, SchedulerKind::Mh, SchedulerKind::Dh] {
            let (a, b) = (scheduler(kind, flags, &one), scheduler(kind, flags, &two));
            for flow in &flows {
                prop_assert_eq!(
                    a.pick(&one, flow, Duration::ZERO),
                    b.pick(&two, flow, Duration::ZERO),
                    "{}", kind
                );
            }
        }
    }

    /// Maglev's table is balanced as the kernel's population loop guarantees: with
    /// per-round turns t_i summing to T over a table of M slots, destination i owns
    /// between floor(M / T) * t_i and (floor(M / T) + 1) * t_i slots.
    #[test]
    fn maglev_table_is_balanced(weights in prop::collection::vec(1u32..=8, 1..40)) {
        let specs: Vec<Spec> = weights
            .iter()
            .map(|&weight| Spec { weight, overloaded: false, active: 0, inactive: 0 })
            .collect();
        let dests = build(&specs, false);
        let mut m = Maglev::new(false, false);
        m.update(&dests).unwrap();
        let g = weights.iter().copied().fold(0, gcd);
        let turns: Vec<usize> = weights.iter().map(|w| (w / g) as usize).collect();
        let rounds = m.table_size() / turns.iter().sum::<usize>();
        let mut counts = vec![0usize; dests.len()];
        for i in m.slots().flatten() {
            counts[i] += 1;
        }
        for (c, t) in counts.iter().zip(&turns) {
            prop_assert!((rounds * t..=(rounds + 1) * t).contains(c), "{counts:?} {turns:?}");
        }
    }

    /// Removing a destination moves all of its clients and only a few others (Maglev
    /// is minimally, not perfectly, disruptive: the remaining destinations' turns
    /// interleave differently); quiescing it instead (weight 0, with mh-fallback) moves
    /// exactly its own clients.
    #[test]
    fn maglev_moves_little_besides_the_removed_destination(
        weights in prop::collection::vec(1u32..=4, 2..16),
        victim in any::<prop::sample::Index>(),
        flows in prop::collection::vec(flow_strategy(), 64..128),
    ) {
        let specs: Vec<Spec> = weights
            .iter()
            .map(|&weight| Spec { weight, overloaded: false, active: 0, inactive: 0 })
            .collect();
        let dests = build(&specs, false);
        let victim = victim.index(dests.len());
        let mut m = Maglev::new(true, false);
        m.update(&dests).unwrap();
        let before: Vec<Option<usize>> = m.slots().collect();
        let picks_before: Vec<usize> =
            flows.iter().map(|f| m.pick(&dests, f, Duration::ZERO).unwrap()).collect();

        // Removal.
        let mut rest = dests.clone();
        rest.remove(victim);
        let mut removed = Maglev::new(true, false);
        removed.update(&rest).unwrap();
        let renumber = |i: usize| if i > victim { i - 1 } else { i };
        let (mut others, mut moved) = (0usize, 0usize);
        for (old, new) in before.iter().flatten().zip(removed.slots().flatten()) {
            if *old != victim {
                others += 1;
                moved += usize::from(renumber(*old) != new);
            }
        }
        prop_assert!(moved * 20 <= others, "{moved} of {others} other slots moved");

        // Quiescing.
        let quiesced = build(&specs, false);
        let mut q = Maglev::new(true, false);
        q.update(&quiesced).unwrap();
        let mut pool = keeplb_balancer::Pool::new(Box::new(q));
        for d in quiesced.iter().rev() {
            pool.add(Arc::clone(d)).unwrap();
        }
        pool.set_weight(quiesced[victim].addr(), 0).unwrap();
        for (flow, &old) in flows.iter().zip(&picks_before) {
            let now = pool.pick(flow, Duration::ZERO).unwrap().addr();
            if old == victim {
                prop_assert_ne!(now, quiesced[victim].addr());
            } else {
                prop_assert_eq!(now, quiesced[old].addr());
            }
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
