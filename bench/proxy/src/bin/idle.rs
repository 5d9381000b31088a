//! Memory of idle connections: opens N client connections through `keeplb run` (one
//! worker) to backends that accept and hold them, then reads keeplb's resident memory.
//!
//!   cargo run --release --bin idle -- [CONNECTIONS]      (default 100000; needs root)
//!
//! Loopback only. Clients bind to 127.0.1.x source addresses and keeplb connects to six
//! backend ports, so neither side runs out of ephemeral ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const VIP: &str = "127.0.0.1:29001";
const BACKEND_PORTS: [u16; 6] = [28081, 28082, 28083, 28084, 28085, 28086];
const PER_SOURCE_ADDRESS: usize = 20_000;
const BATCH: usize = 500;
const DEADLINE: Duration = Duration::from_secs(300);

fn keeplb_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "keeplb"])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(status.success(), "building keeplb failed");
    root.join("target/release/keeplb")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wanted: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("CONNECTIONS is a number"))
        .unwrap_or(100_000);
    // keeplb holds two descriptors per connection, and so does this program (client and
    // backend ends). Without CAP_SYS_RESOURCE the hard limit caps how many fit: then
    // measure what fits and extrapolate.
    let limit = match setrlimit(Resource::RLIMIT_NOFILE, 1 << 20, 1 << 20) {
        Ok(()) => 1 << 20,
        Err(e) => {
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft limit");
            eprintln!("cannot raise the descriptor limit beyond {hard} ({e}: no CAP_SYS_RESOURCE)");
            hard
        }
    };
    let fits = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(200) / 2;
    let connections = wanted.min(fits);

    let accepted = Arc::new(AtomicUsize::new(0));
    for port in BACKEND_PORTS {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("backend port");
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let dir = std::env::temp_dir().join(format!("keeplb-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let conf = dir.join("keepalived.conf");
    let real_servers: String = BACKEND_PORTS
        .iter()
        .map(|p| format!("    real_server 127.0.0.1 {p} {{\n    }}\n"))
        .collect();
    std::fs::write(
        &conf,
        format!("virtual_server 127.0.0.1 29001 {{\n    lb_algo rr\n    protocol TCP\n{real_servers}}}\n"),
    )
    .expect("write config");
    let keeplb = Killed(
        Command::new(keeplb_binary())
            .args(["run", "--workers", "1", "-f"])
            .arg(&conf)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start keeplb"),
    );
    let pid = keeplb.0.id();
    let vip: SocketAddr = VIP.parse().expect("vip");
    let started = Instant::now();
    while TcpStream::connect(vip).await.is_err() {
        assert!(started.elapsed() < DEADLINE, "keeplb did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let that probe connection finish before measuring the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = rss_kib(pid);

    let mut clients = Vec::with_capacity(connections);
    let started = Instant::now();
    for batch_start in (0..connections).step_by(BATCH) {
        let batch: Vec<_> = (batch_start..(batch_start + BATCH).min(connections))
            .map(|i| {
                let third = u8::try_from(i / PER_SOURCE_ADDRESS + 1).expect("source address");
                let source = SocketAddr::from((Ipv4Addr::new(127, 0, 1, third), 0));
                tokio::spawn(async move {
                    let socket = TcpSocket::new_v4()?;
                    socket.bind(source)?;
                    socket.connect(vip).await
                })
            })
            .collect();
        for task in batch {
            clients.push(task.await.expect("task").expect("client connect"));
        }
        assert!(started.elapsed() < DEADLINE, "connecting took too long");
    }
    while accepted.load(Ordering::Relaxed) < connections + 1 {
        assert!(
            started.elapsed() < DEADLINE,
            "backends saw {} of {connections}",
            accepted.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = started.elapsed();
    let rss = rss_kib(pid);
    let per_conn = (rss.saturating_sub(baseline) * 1024) as f64 / connections as f64;
    println!("idle client connections: {connections} (each with its real-server connection), opened in {opened:.1?}");
    println!("keeplb RSS: {:.1} MiB (baseline {:.1} MiB), {per_conn:.0} bytes per connection", rss as f64 / 1024.0, baseline as f64 / 1024.0);
    let projected = baseline as f64 / 1024.0 + per_conn * wanted as f64 / (1024.0 * 1024.0);
    if connections < wanted {
        println!(
            "projected for {wanted}: {projected:.0} MiB (only {connections} fit under this machine's descriptor limit)"
        );
    }
    println!(
        "goal: {wanted} idle connections under 1024 MiB -> {}",
        if projected < 1024.0 { "met" } else { "NOT met" }
    );
    drop(clients);
    drop(keeplb);
    let _ = std::fs::remove_dir_all(&dir);
}
