//! Benchmark, not run by default (`cargo test -p keeplb-check --test bench -- --ignored
//! --nocapture`): N real servers (127.0.0.0/8 addresses, one listener on the wildcard)
//! with TCP_CHECK at delay_loop 1. Prints the CPU this process used (checkers and the
//! listener together) and how far probe intervals stray from 1 s.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keeplb_check::{Checks, RunOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// utime + stime of this process, in clock ticks (100 Hz).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After the command name: state is field 0; utime 11, stime 12.
    field(11) + field(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn five_thousand_tcp_checks_at_delay_loop_one() {
    let servers: u32 = std::env::var("KEEPLB_BENCH_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<HashMap<IpAddr, Vec<Instant>>>> = Arc::default();
    let record = Arc::clone(&seen);
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok(local) = stream.local_addr() {
                record
                    .lock()
                    .expect("lock")
                    .entry(local.ip())
                    .or_default()
                    .push(Instant::now());
            }
        }
    });
    let mut text = String::from("virtual_server 10.0.0.1 80 {\n protocol TCP\n delay_loop 1\n");
    for i in 0..servers {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + i);
        text.push_str(&format!(
            " real_server {ip} {port} {{\n TCP_CHECK {{\n connect_timeout 1\n }}\n }}\n"
        ));
    }
    text.push_str("}\n");
    let config = common::load(&text);
    let (checks, _) = Checks::new(&config, RunOptions::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let removed = tokio::spawn(async move {
        let mut removed = 0;
        while let Some(action) = rx.recv().await {
            if matches!(action, keeplb_check::Action::RemoveDest { .. }) {
                removed += 1;
            }
        }
        removed
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(checks.run(tx, async move {
        let _ = stopped.await;
    }));
    // Warmup spreads first probes over one delay_loop; measure after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(10);
    let (cpu_before, t_before) = (cpu_ticks(), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (cpu_ticks() - cpu_before) as f64 / 100.0;
    let wall = t_before.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = runner.await;
    server.abort();
    let removed_during_run = removed.await.unwrap_or(0);
    let mut deviations: Vec<f64> = seen
        .lock()
        .expect("lock")
        .values()
        .flat_map(|times| {
            times
                .windows(2)
                .map(|w| ((w[1] - w[0]).as_secs_f64() - 1.0).abs() * 1000.0)
                .collect::<Vec<_>>()
        })
        .collect();
    deviations.sort_by(f64::total_cmp);
    let pick = |q: f64| deviations[((deviations.len() - 1) as f64 * q) as usize];
    println!(
        "{servers} TCP_CHECKs at delay_loop 1: CPU {:.3} cores over {wall:.1} s; \
         interval deviation ms p50 {:.2} p99 {:.2} max {:.2} ({} intervals); \
         removals {} (shutdown removes all)",
        cpu / wall,
        pick(0.5),
        pick(0.99),
        pick(1.0),
        deviations.len(),
        removed_during_run
    );
}
