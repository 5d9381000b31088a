//! Nanoseconds per `pick` for every scheduler, at 10 and 10,000 destinations.
//!
//! Destinations get weights 1..=5 and a spread of connection counts, so that
//! least-connection comparisons are not all ties; flows cycle through 1024 clients and 16
//! virtual addresses, so hashing schedulers do not hit one cached line and locality
//! tables hold a realistic handful of entries.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keeplb_balancer::scheduler::maglev::Maglev;
use keeplb_balancer::{Dest, Flow, SchedFlags, Scheduler, SchedulerKind, from_name};

fn dests(n: usize) -> Vec<Arc<Dest>> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).expect("small") + 1);
            let weight = 1 + u32::try_from(i % 5).expect("small");
            let d =
                Arc::new(Dest::new(SocketAddr::new(IpAddr::V4(ip), 80), weight).expect("weight"));
            // Active counts 2..=8, so no destination is idle (nq scans) and ovf's first
            // choices are full (it has to look further).
            let active = 2 + (i * 7919) % 7;
            for _ in 0..active + i % 3 {
                d.on_connect();
            }
            for _ in 0..active {
                d.on_established();
            }
            d
        })
        .collect()
}

fn flows() -> Vec<Flow> {
    (0..1024u32)
        .map(|i| {
            let client = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i * 7)),
                1024 + (i as u16),
            );
            let vip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 16) as u8)), 80);
            Flow::new(client, vip)
        })
        .collect()
}

fn scheduler(kind: SchedulerKind, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
    let mut s: Box<dyn Scheduler> = if kind == SchedulerKind::Mh && dests.len() > 4093 {
        // The kernel's default table (4093) cannot hold 10,000 destinations.
        Box::new(Maglev::with_table_size(false, false, 131_071).expect("kernel prime"))
    } else {
        from_name(kind.name(), SchedFlags::EMPTY).expect("known scheduler")
    };
    s.update(dests).expect("update");
    s
}

fn pick(c: &mut Criterion) {
    let flows = flows();
    for n in [10usize, 10_000] {
        let dests = dests(n);
        let mut group = c.benchmark_group(format!("pick/{n}"));
        for kind in SchedulerKind::ALL {
            let s = scheduler(kind, &dests);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(s.pick(&dests, &flows[i], Duration::ZERO))
                })
            });
        }
        group.finish();
    }
    let d = Arc::new(Dest::new(SocketAddr::from(([10, 0, 0, 1], 80)), 1).expect("weight"));
    connect_establish_close(c, "dest/connect-establish-close", &d);
    // The same three events on destinations of a wlc service: at 10,000 an index
    // observes them and each event recomputes it from the destination's leaf to the root;
    // at 10 (below `INDEX_MIN_DESTS`) the list is scanned and events cost what they did.
    for n in [10usize, 10_000] {
        let dests = dests(n);
        let _wlc = scheduler(SchedulerKind::Wlc, &dests);
        let name = format!("dest/connect-establish-close/wlc-{n}");
        connect_establish_close(c, &name, &dests[n / 2]);
    }
}

fn connect_establish_close(c: &mut Criterion, name: &str, d: &Arc<Dest>) {
    c.bench_function(name, |b| {
        b.iter(|| {
            let mut conn = d.connect();
            conn.established();
            black_box(&conn);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = pick
}
criterion_main!(benches);
