//! Memory of idle connections: opens N client connections through `keeplb run` (one
//! worker) to backends that accept and hold them, checks that every one reached a
//! backend, then reads keeplb's resident memory.
//!
//!   cargo run --release --bin idle -- [CONNECTIONS]      (default 100000; needs root)
//!
//! `KEEPLB_BIN=/path/to/keeplb` skips building keeplb and uses that binary.
//!
//! keeplb holds two descriptors per proxied connection. When the hard RLIMIT_NOFILE
//! cannot be raised (no CAP_SYS_RESOURCE), one keeplb process only fits
//! (limit - 200) / 2 connections, so the connections are spread over K keeplb processes
//! ("shards"), each with its own virtual server; the sum of their resident memory is an
//! upper bound of what one process would need (it counts K baselines). This program's
//! own ends of the connections are spread the same way: it re-executes itself as one
//! backend process (`--role backend`) and one client process (`--role client`) per
//! shard, which report over their stdout and exit when their stdin closes.
//!
//! Loopback only. Clients bind 127.0.1.x source addresses with IP_BIND_ADDRESS_NO_PORT
//! and every shard has its own backend ports, so no side runs out of ephemeral ports.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use tokio::signal::unix::{SignalKind, signal};

const FIRST_VIP_PORT: u16 = 29001;
const FIRST_BACKEND_PORT: u16 = 28000;
const BACKEND_PORTS_PER_SHARD: u16 = 8;
/// Source addresses each serve at most this many clients (the ephemeral range has 28k).
const PER_SOURCE_ADDRESS: usize = 20_000;
/// Descriptors a keeplb process needs besides its connections (listeners, runtime...).
const SPARE_DESCRIPTORS: u64 = 200;
const BATCH: usize = 500;
const START_DEADLINE: Duration = Duration::from_secs(60);
const OPEN_DEADLINE: Duration = Duration::from_secs(300);
const SETTLE_POLL: Duration = Duration::from_millis(100);
const SETTLED_READINGS: usize = 5;
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--role") {
        exit_when_stdin_closes();
        current_thread_runtime().block_on(run_role(&args[1..]));
        return;
    }
    let wanted: usize = args
        .first()
        .map(|n| n.parse().expect("CONNECTIONS is a number"))
        .unwrap_or(100_000);
    assert!(wanted > 0, "CONNECTIONS must be positive");
    measure(wanted);
}

// ---- child processes ----------------------------------------------------------------

/// A child's parent holds its stdin: EOF means the parent finished or died.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

/// Reports a failure to the parent and exits.
fn fail(message: String) -> ! {
    println!("error {message}");
    std::process::exit(1);
}

fn number<T: std::str::FromStr>(arg: Option<&String>) -> T {
    arg.and_then(|a| a.parse().ok())
        .unwrap_or_else(|| fail(format!("bad role argument {arg:?}")))
}

async fn run_role(args: &[String]) {
    match args.first().map(String::as_str) {
        Some("backend") => backend(args[1..].iter().map(|p| number(Some(p))).collect()).await,
        Some("client") => {
            let vip: SocketAddr = number(args.get(1));
            clients(vip, number(args.get(2)), number(args.get(3))).await;
        }
        other => fail(format!("unknown role {other:?}")),
    }
}

/// Accepts and holds connections on 127.0.0.1 at `ports`; prints `ready`, then
/// `accepted N` whenever the count changes.
async fn backend(ports: Vec<u16>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    for port in ports {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| fail(format!("backend port {port}: {e}")));
        let accepted = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => held.push(stream),
                    Err(e) => fail(format!("accept on {port}: {e}")),
                }
                accepted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    println!("ready");
    let mut reported = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = accepted.load(Ordering::Relaxed);
        if now != reported {
            println!("accepted {now}");
            reported = now;
        }
    }
}

/// Opens `count` connections to `vip` from source addresses numbered from
/// `first_source`, prints `connected N` and holds them.
async fn clients(vip: SocketAddr, first_source: usize, count: usize) {
    let mut held = Vec::with_capacity(count);
    for batch_start in (0..count).step_by(BATCH) {
        let batch: Vec<_> = (batch_start..(batch_start + BATCH).min(count))
            .map(|i| {
                let source = source_address(first_source + i / PER_SOURCE_ADDRESS);
                tokio::spawn(async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    // The port is then chosen at connect time, unique per 4-tuple, instead
                    // of reserving one of the 28k ephemeral ports for good at bind time.
                    setsockopt(&socket, IpBindAddressNoPort, &true)?;
                    socket.bind(source)?;
                    socket.connect(vip).await
                })
            })
            .collect();
        for task in batch {
            match task.await {
                Ok(Ok(stream)) => held.push(stream),
                Ok(Err(e)) => fail(format!("connect to {vip}: {e}")),
                Err(e) => fail(format!("connect task: {e}")),
            }
        }
    }
    println!("connected {}", held.len());
    std::future::pending::<()>().await;
}

fn source_address(index: usize) -> SocketAddr {
    let last = u8::try_from(index + 1)
        .ok()
        .filter(|&b| b < 255)
        .unwrap_or_else(|| fail(format!("no source address #{index}")));
    SocketAddr::from((Ipv4Addr::new(127, 0, 1, last), 0))
}

// ---- the measurement ----------------------------------------------------------------

/// A child process killed (and reaped) when dropped, even on panic.
struct Killed {
    child: Child,
    /// Held so that the child sees EOF when the parent goes away.
    _stdin: Option<ChildStdin>,
}

impl Killed {
    fn new(mut child: Child) -> Self {
        let stdin = child.stdin.take();
        Self {
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signal ends this process without running the `Killed` guards or removing the
/// temporary directory. The children end anyway (the keeplb shards by their parent-death
/// signal, the others when their stdin closes); the directory is removed here.
fn clean_up_on_signal() {
    let runtime = current_thread_runtime();
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ];
    let streams: Vec<_> = {
        let _context = runtime.enter();
        kinds
            .into_iter()
            .map(|kind| (kind, signal(kind).expect("signal handler")))
            .collect()
    };
    std::thread::spawn(move || {
        runtime.block_on(async {
            for (kind, mut stream) in streams {
                tokio::spawn(async move {
                    stream.recv().await;
                    eprintln!("signal {}: stopping", kind.as_raw_value());
                    let _ = std::fs::remove_dir_all(temp_dir());
                    std::process::exit(128 + kind.as_raw_value());
                });
            }
            std::future::pending::<()>().await;
        });
    });
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Where the shards' configurations and control sockets go.
fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("keeplb-idle-{}", std::process::id()))
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Backend,
    Client,
}

/// A line from a child's stdout, or `None` when the child closed it.
struct Report {
    role: Role,
    shard: usize,
    line: Option<String>,
}

/// What the children have reported so far, per shard.
#[derive(Debug)]
struct Progress {
    backend_ready: Vec<bool>,
    accepted: Vec<usize>,
    connected: Vec<Option<usize>>,
}

impl Progress {
    fn new(shards: usize) -> Self {
        Self {
            backend_ready: vec![false; shards],
            accepted: vec![0; shards],
            connected: vec![None; shards],
        }
    }

    fn apply(&mut self, report: Report) {
        let Report { role, shard, line } = report;
        let line = line.unwrap_or_else(|| panic!("{role:?} process of shard {shard} exited"));
        let count = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{role:?} process of shard {shard}: {line}"))
        };
        match role {
            Role::Backend if line == "ready" => self.backend_ready[shard] = true,
            Role::Backend => self.accepted[shard] = count("accepted "),
            Role::Client => self.connected[shard] = Some(count("connected ")),
        }
    }
}

/// The bench's child processes and the channel carrying their reports.
struct Fleet {
    exe: PathBuf,
    reports: Sender<Report>,
    children: Vec<Killed>,
}

impl Fleet {
    fn spawn(&mut self, role: Role, shard: usize, args: &[String]) {
        let name = match role {
            Role::Backend => "backend",
            Role::Client => "client",
        };
        let mut child = Command::new(&self.exe)
            .args(["--role", name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a bench child process");
        let stdout = child.stdout.take().expect("child stdout");
        let reports = self.reports.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = Some(line);
                if reports.send(Report { role, shard, line }).is_err() {
                    return;
                }
            }
            let _ = reports.send(Report {
                role,
                shard,
                line: None,
            });
        });
        self.children.push(Killed::new(child));
    }
}

/// Applies reports until `done` holds, failing if a keeplb shard exits or `deadline` passes.
fn wait_until(
    what: &str,
    deadline: Instant,
    reports: &Receiver<Report>,
    progress: &mut Progress,
    keeplbs: &mut [Killed],
    done: impl Fn(&Progress) -> bool,
) {
    while !done(progress) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {progress:?}"
        );
        check_alive(keeplbs);
        match reports.recv_timeout(Duration::from_millis(100)) {
            Ok(report) => progress.apply(report),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("report channel closed"),
        }
    }
}

fn check_alive(keeplbs: &mut [Killed]) {
    for (shard, keeplb) in keeplbs.iter_mut().enumerate() {
        if let Ok(Some(status)) = keeplb.child.try_wait() {
            panic!("keeplb shard {shard} exited: {status}");
        }
    }
}

/// Raises the descriptor limit as far as allowed; returns it and why it stopped there.
fn raise_descriptor_limit() -> (u64, String) {
    const WANTED: u64 = 1 << 20;
    match setrlimit(Resource::RLIMIT_NOFILE, WANTED, WANTED) {
        Ok(()) => (WANTED, format!("raised to {WANTED}")),
        Err(e) => {
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft limit");
            let why = format!("hard limit {hard}, cannot raise it ({e}: no CAP_SYS_RESOURCE)");
            (hard, why)
        }
    }
}

fn keeplb_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KEEPLB_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "keeplb"])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(status.success(), "building keeplb failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    target.join("release/keeplb")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Each process's RSS once it has stopped changing: read every [`SETTLE_POLL`] until
/// [`SETTLED_READINGS`] readings in a row are identical (keeplb may still be setting up
/// what follows the last accepted connection), or [`SETTLE_DEADLINE`] passes, which
/// is reported rather than hidden.
fn settled_rss_kib(pids: &[u32], keeplbs: &mut [Killed]) -> Vec<u64> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut last: Vec<u64> = pids.iter().map(|&pid| rss_kib(pid)).collect();
    let mut same = 1;
    while same < SETTLED_READINGS {
        if Instant::now() >= deadline {
            println!("RSS still changing after {SETTLE_DEADLINE:?}: reporting the last reading");
            break;
        }
        std::thread::sleep(SETTLE_POLL);
        check_alive(keeplbs);
        let reading: Vec<u64> = pids.iter().map(|&pid| rss_kib(pid)).collect();
        same = if reading == last { same + 1 } else { 1 };
        last = reading;
    }
    last
}

fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn backend_ports(shard: usize) -> Vec<u16> {
    let first = u16::try_from(shard)
        .ok()
        .and_then(|s| s.checked_mul(BACKEND_PORTS_PER_SHARD))
        .map(|offset| FIRST_BACKEND_PORT + offset)
        .filter(|&p| p + BACKEND_PORTS_PER_SHARD <= FIRST_VIP_PORT)
        .expect("too many shards for the backend port range");
    (first..first + BACKEND_PORTS_PER_SHARD).collect()
}

fn vip(shard: usize) -> SocketAddr {
    let port = u16::try_from(shard).expect("shard number") + FIRST_VIP_PORT;
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn write_config(path: &Path, vip: SocketAddr, backend_ports: &[u16]) {
    let real_servers: String = backend_ports
        .iter()
        .map(|p| format!("    real_server 127.0.0.1 {p} {{\n    }}\n"))
        .collect();
    let (address, port) = (vip.ip(), vip.port());
    let conf = format!(
        "virtual_server {address} {port} {{\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n{real_servers}}}\n"
    );
    std::fs::write(path, conf).expect("write config");
}

fn measure(wanted: usize) {
    clean_up_on_signal();
    let (limit, why) = raise_descriptor_limit();
    let per_process =
        usize::try_from(limit.saturating_sub(SPARE_DESCRIPTORS) / 2).unwrap_or(usize::MAX);
    assert!(per_process > 0, "descriptor limit {limit} is too low");
    let shards = wanted.div_ceil(per_process);
    let per_shard = wanted.div_ceil(shards);
    let counts: Vec<usize> = (0..shards)
        .map(|k| per_shard.min(wanted - (k * per_shard).min(wanted)))
        .collect();
    let sources_per_shard = per_shard.div_ceil(PER_SOURCE_ADDRESS);
    println!(
        "descriptor limit per process: {limit} ({why}); keeplb holds 2 per connection, \
         so one process fits {per_process}: {shards} keeplb process(es) of up to {per_shard}"
    );

    let keeplb_bin = keeplb_binary();
    let dir = TempDir(temp_dir());
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let (reports_tx, reports) = mpsc::channel();
    let mut fleet = Fleet {
        exe: std::env::current_exe().expect("own executable"),
        reports: reports_tx,
        children: Vec::new(),
    };
    let mut keeplbs: Vec<Killed> = Vec::new();
    let mut progress = Progress::new(shards);

    let deadline = Instant::now() + START_DEADLINE;
    for shard in 0..shards {
        let ports: Vec<String> = backend_ports(shard).iter().map(u16::to_string).collect();
        fleet.spawn(Role::Backend, shard, &ports);
    }
    wait_until(
        "backends",
        deadline,
        &reports,
        &mut progress,
        &mut keeplbs,
        |p| p.backend_ready.iter().all(|&r| r),
    );
    for shard in 0..shards {
        let conf = dir.0.join(format!("shard{shard}.conf"));
        write_config(&conf, vip(shard), &backend_ports(shard));
        // setpriv (util-linux) keeps the pid and has the kernel kill keeplb if this
        // bench dies, even by SIGKILL, when no handler of ours can run.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&keeplb_bin)
            .args(["run", "--workers", "1", "-f"])
            .arg(&conf)
            .arg("--control")
            .arg(dir.0.join(format!("shard{shard}.sock")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start keeplb");
        keeplbs.push(Killed::new(child));
    }
    // One probe per shard, held open: it proves the shard listens and proxies.
    let mut probes = Vec::with_capacity(shards);
    for shard in 0..shards {
        loop {
            assert!(
                Instant::now() < deadline,
                "keeplb shard {shard} did not listen"
            );
            check_alive(&mut keeplbs);
            match TcpStream::connect_timeout(&vip(shard), Duration::from_millis(500)) {
                Ok(stream) => break probes.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    wait_until(
        "each shard's probe to reach a backend (does another program listen on a VIP?)",
        deadline,
        &reports,
        &mut progress,
        &mut keeplbs,
        |p| p.accepted.iter().all(|&a| a >= 1),
    );
    let pids: Vec<u32> = keeplbs.iter().map(|k| k.child.id()).collect();
    let baselines = settled_rss_kib(&pids, &mut keeplbs);

    let started = Instant::now();
    for (shard, &count) in counts.iter().enumerate() {
        let args = [
            vip(shard).to_string(),
            (shard * sources_per_shard).to_string(),
            count.to_string(),
        ];
        fleet.spawn(Role::Client, shard, &args);
    }
    // A shard's backends hold its clients' connections and its probe.
    let all_open = |p: &Progress| {
        counts
            .iter()
            .enumerate()
            .all(|(k, &count)| p.connected[k] == Some(count) && p.accepted[k] > count)
    };
    let deadline = started + OPEN_DEADLINE;
    wait_until(
        "connections",
        deadline,
        &reports,
        &mut progress,
        &mut keeplbs,
        all_open,
    );
    let opened = started.elapsed();
    let rss = settled_rss_kib(&pids, &mut keeplbs);
    let fds: Vec<usize> = pids.iter().map(|&pid| descriptors(pid)).collect();

    let held: usize = progress.accepted.iter().sum();
    println!(
        "\n{wanted} idle client connections opened in {opened:.1?}, each established end to end: \
         the backends accepted {held} ({wanted} + 1 readiness probe per shard)"
    );
    println!("shard  VIP               connections  descriptors  baseline MiB  RSS MiB");
    for k in 0..shards {
        println!(
            "{k:>5}  {:<16}  {:>11}  {:>11}  {:>12.1}  {:>7.1}",
            vip(k).to_string(),
            counts[k],
            fds[k],
            mib(baselines[k]),
            mib(rss[k])
        );
    }
    let (total, baseline): (u64, u64) = (rss.iter().sum(), baselines.iter().sum());
    println!(
        "{:>5}  {:<16}  {wanted:>11}  {:>11}  {:>12.1}  {:>7.1}",
        "sum",
        "",
        fds.iter().sum::<usize>(),
        mib(baseline),
        mib(total)
    );
    let per_connection = total.saturating_sub(baseline) as f64 * 1024.0 / wanted as f64;
    println!(
        "bytes per connection: {per_connection:.0} ((RSS - baseline) / connections, summed over shards)"
    );
    if shards > 1 {
        println!(
            "the {wanted} connections are spread over {shards} keeplb processes because of the \
             descriptor limit ({limit} per process); their summed RSS is an upper bound for one \
             process (it counts {shards} baselines; with one baseline: {:.1} MiB)",
            mib(total.saturating_sub(baseline) + baselines.iter().max().copied().unwrap_or(0))
        );
    }
    println!(
        "keeplb RSS for {wanted} idle connections: {:.1} MiB in {shards} process(es); \
         goal (under 1024 MiB): {}",
        mib(total),
        if mib(total) < 1024.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    drop(probes);
    drop(keeplbs);
    drop(fleet);
}
