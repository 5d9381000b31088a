//! The whole driver against loopback listeners, in real time (waits bounded): servers
//! leave the pool when they stop answering and return when they answer again.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use keeplb_check::{Action, Checks, RunOptions};
use keeplb_config::model::Config;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(text: &str) -> Config {
    common::load(text)
}

/// Waits (at most `limit`) for the next pool change.
/// The next pool change (verdicts on real servers, which come with them, are skipped).
async fn next(rx: &mut mpsc::UnboundedReceiver<Action>, limit: Duration) -> Action {
    next_where(rx, limit, |a| !matches!(a, Action::RealServerAlive { .. })).await
}

/// The next verdict on a real server (pool changes are skipped).
async fn next_verdict(rx: &mut mpsc::UnboundedReceiver<Action>, limit: Duration) -> Action {
    next_where(rx, limit, |a| matches!(a, Action::RealServerAlive { .. })).await
}

async fn next_where(
    rx: &mut mpsc::UnboundedReceiver<Action>,
    limit: Duration,
    wanted: impl Fn(&Action) -> bool,
) -> Action {
    tokio::time::timeout(limit, async {
        loop {
            let action = rx.recv().await.expect("channel open");
            if wanted(&action) {
                return action;
            }
        }
    })
    .await
    .expect("an action in time")
}

/// Accepts and drops connections until aborted.
fn serve(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

#[tokio::test]
async fn servers_leave_and_return_with_their_listeners() {
    let live = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let live_addr = live.local_addr().expect("addr");
    let dead_addr = {
        let l = std::net::TcpListener::bind((LOCALHOST, 0)).expect("bind");
        l.local_addr().expect("addr")
    };
    let mut server = serve(live);
    let text = format!(
        r#"
virtual_server 10.0.0.1 80 {{
    protocol TCP
    delay_loop 1
    real_server {live_ip} {live_port} {{
        TCP_CHECK {{
            connect_timeout 1
            retry 1
            delay_before_retry 1
            warmup 0
        }}
    }}
    real_server {dead_ip} {dead_port} {{
        TCP_CHECK {{
            connect_timeout 1
            warmup 0
        }}
    }}
}}
"#,
        live_ip = live_addr.ip(),
        live_port = live_addr.port(),
        dead_ip = dead_addr.ip(),
        dead_port = dead_addr.port(),
    );
    let (checks, problems) = Checks::new(&config(&text), RunOptions::default());
    assert!(problems.is_empty());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(checks.run(tx, async move {
        let _ = stopped.await;
    }));
    let add = |dest: SocketAddr| Action::AddDest {
        vs: 0,
        dest,
        weight: 1,
    };
    // Both start in the pool; the dead one leaves at its first probe (1 s after start).
    assert_eq!(next(&mut rx, Duration::from_secs(5)).await, add(live_addr));
    assert_eq!(next(&mut rx, Duration::from_secs(5)).await, add(dead_addr));
    assert_eq!(
        next(&mut rx, Duration::from_secs(5)).await,
        Action::RemoveDest {
            vs: 0,
            dest: dead_addr
        }
    );

    // The live one stops answering: refused, retried once 1 s later, then removed —
    // within delay_loop + retry × delay_before_retry + connect_timeout (3 s; refusals are
    // immediate, so 2 s is expected) plus slack for a loaded machine.
    server.abort();
    let _ = (&mut server).await;
    let stopped_at = Instant::now();
    assert_eq!(
        next(&mut rx, Duration::from_secs(6)).await,
        Action::RemoveDest {
            vs: 0,
            dest: live_addr
        }
    );
    let took = stopped_at.elapsed();
    assert!(
        took <= Duration::from_millis(3500),
        "removed after {took:?}, keepalived's bound is 1 + 1×1 + 1 s"
    );

    // It answers again: back at the next probe (at most delay_loop later).
    let again = TcpListener::bind(live_addr).await.expect("rebind");
    let server = serve(again);
    let back_at = Instant::now();
    assert_eq!(next(&mut rx, Duration::from_secs(5)).await, add(live_addr));
    assert!(back_at.elapsed() <= Duration::from_millis(2500));

    // Shutdown takes it out of the pool.
    stop.send(()).expect("runner alive");
    assert_eq!(
        next(&mut rx, Duration::from_secs(5)).await,
        Action::RemoveDest {
            vs: 0,
            dest: live_addr
        }
    );
    let health = tokio::time::timeout(Duration::from_secs(5), runner)
        .await
        .expect("runner ends")
        .expect("join");
    assert!(health.real_servers(0).iter().all(|rs| !rs.in_pool));
    server.abort();
}

#[tokio::test]
async fn a_file_check_follows_its_file() {
    let path = std::env::temp_dir().join(format!("keeplb-check-file-{}", std::process::id()));
    let text = format!(
        r#"
track_file maintenance {{
    file {path}
    weight 0
    init_file 0 overwrite
}}
virtual_server 10.0.0.1 80 {{
    protocol TCP
    real_server 192.168.0.1 80 {{
        FILE_CHECK {{
            track_file maintenance
        }}
    }}
}}
"#,
        path = path.display()
    );
    let (checks, problems) = Checks::new(&config(&text), RunOptions::default());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("init_file").trim(),
        "0"
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(checks.run(tx, async move {
        let _ = stopped.await;
    }));
    let dest: SocketAddr = "192.168.0.1:80".parse().expect("addr");
    assert_eq!(
        next(&mut rx, Duration::from_secs(5)).await,
        Action::AddDest {
            vs: 0,
            dest,
            weight: 1
        }
    );
    assert_eq!(
        next_verdict(&mut rx, Duration::from_secs(5)).await,
        Action::RealServerAlive {
            vs: 0,
            dest,
            alive: true
        },
        "the verdict at start"
    );
    std::fs::write(&path, "1\n").expect("write");
    assert_eq!(
        next(&mut rx, Duration::from_secs(3)).await,
        Action::RemoveDest { vs: 0, dest }
    );
    assert_eq!(
        next_verdict(&mut rx, Duration::from_secs(3)).await,
        Action::RealServerAlive {
            vs: 0,
            dest,
            alive: false
        }
    );
    std::fs::write(&path, "0\n").expect("write");
    assert_eq!(
        next(&mut rx, Duration::from_secs(3)).await,
        Action::AddDest {
            vs: 0,
            dest,
            weight: 1
        }
    );
    stop.send(()).expect("runner alive");
    let _ = tokio::time::timeout(Duration::from_secs(5), runner).await;
    let _ = std::fs::remove_file(&path);
}
