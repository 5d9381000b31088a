//! Failover benchmark: how long a client cannot reach the VIP after the VRRP master dies,
//! for keeplb and for keepalived running the same keepalived.conf.
//!
//! For each implementation × {VRRPv2 advert_int 1, VRRPv3 advert_int 0.1} and each run: a
//! fresh lab (two directors and a client on one switch, in network namespaces), both
//! daemons started, wait until the master holds the VIP and the client reaches it, then a
//! bounded probe loop (ICMP echo every 10 ms, 20 ms timeout) while the master daemon is
//! SIGKILLed and its cable pulled at the same moment. The outage is the time from the kill
//! to the first answered probe after it. Only addresses inside the lab (10.64.0.0/24).
//!
//! Usage: `cargo run --release -- [--runs N] [--only keeplb|keepalived] [--only-config v2|v3]`
//! Environment: `KEEPLB=path` (default: build it with `cargo build --release -p keeplb` in
//! the workspace), `KEEPALIVED=path` (default `/usr/sbin/keepalived`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keeplb_testlab::{Host, Lab, Process, wait_until};
use socket2::{Domain, Protocol, Socket, Type};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const VIP: &str = "10.64.0.100";
const MASTER_ADDR: &str = "10.64.0.1";
const CLIENT_ADDR: &str = "10.64.0.10";
const VRRP_GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);
const IPPROTO_VRRP: i32 = 112;
const VRID: u8 = 64;
const MASTER_PRIORITY: u8 = 150;
const BACKUP_PRIORITY: u8 = 100;
/// A probe starts every PROBE_PERIOD (or at once when the previous one took longer).
const PROBE_PERIOD: Duration = Duration::from_millis(10);
/// A probe counts as lost when no echo reply came within this time.
const PROBE_TIMEOUT: Duration = Duration::from_millis(20);
/// The probe loop stops at this time limit, whatever happens.
const MAX_PROBE_TIME: Duration = Duration::from_secs(30);
/// ... or once the VIP answered this many probes in a row after the kill.
const ANSWERS_TO_STOP: usize = 20;
/// Time allowed for the master to take the VIP and the client to reach it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Implementation {
    Keeplb,
    Keepalived,
}

impl Implementation {
    fn name(self) -> &'static str {
        match self {
            Self::Keeplb => "keeplb",
            Self::Keepalived => "keepalived",
        }
    }
}

#[derive(Clone, Copy)]
struct VrrpConfig {
    version: u8,
    advert_int: &'static str,
}

impl VrrpConfig {
    fn label(self) -> String {
        format!("VRRPv{} advert_int {}", self.version, self.advert_int)
    }

    fn advert_int(self) -> Duration {
        Duration::from_secs_f64(self.advert_int.parse().unwrap_or(1.0))
    }

    /// Master_Down_Interval of the backup: 3 × advert_int + skew, where the skew is
    /// (256 − priority)/256 s in VRRPv2 (RFC 3768) and (256 − priority) × advert_int/256 in
    /// VRRPv3 (RFC 5798), as keepalived computes it.
    fn master_down(self, priority: u8) -> Duration {
        let interval = self.advert_int().as_secs_f64();
        let share = f64::from(256 - u16::from(priority)) / 256.0;
        let skew = if self.version == 3 {
            share * interval
        } else {
            share
        };
        Duration::from_secs_f64(3.0 * interval + skew)
    }

    fn keepalived_conf(self, state: &str, priority: u8) -> String {
        format!(
            "vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id {VRID}\n    priority {priority}\n    version {}\n    advert_int {}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n",
            self.version, self.advert_int
        )
    }
}

const CONFIGS: [VrrpConfig; 2] = [
    VrrpConfig {
        version: 2,
        advert_int: "1",
    },
    VrrpConfig {
        version: 3,
        advert_int: "0.1",
    },
];

struct Options {
    runs: usize,
    implementations: Vec<Implementation>,
    configs: Vec<VrrpConfig>,
}

fn parse_args() -> Result<Options> {
    let mut options = Options {
        runs: 5,
        implementations: vec![Implementation::Keeplb, Implementation::Keepalived],
        configs: CONFIGS.to_vec(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" | "-n" => {
                options.runs = value()?.parse()?;
                if options.runs == 0 {
                    return Err("--runs must be at least 1".into());
                }
            }
            "--only" => {
                options.implementations = match value()?.as_str() {
                    "keeplb" => vec![Implementation::Keeplb],
                    "keepalived" => vec![Implementation::Keepalived],
                    other => return Err(format!("--only {other}: keeplb or keepalived").into()),
                }
            }
            "--only-config" => {
                let wanted = value()?;
                options.configs = match wanted.as_str() {
                    "v2" => vec![CONFIGS[0]],
                    "v3" => vec![CONFIGS[1]],
                    other => return Err(format!("--only-config {other}: v2 or v3").into()),
                }
            }
            "--help" | "-h" => {
                println!(
                    "usage: cargo run --release -- [--runs N] [--only keeplb|keepalived] [--only-config v2|v3]\n\
                     environment: KEEPLB=path (default: cargo build --release -p keeplb), KEEPALIVED=path (default /usr/sbin/keepalived)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)").into()),
        }
    }
    Ok(options)
}

/// `KEEPLB`, or the workspace's release binary after `cargo build --release -p keeplb`.
fn keeplb_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("KEEPLB") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("KEEPLB={} is not a file", path.display()).into());
        }
        return Ok(std::path::absolute(path)?);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building keeplb: cargo build --release -p keeplb (in {})",
        workspace.display()
    );
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "keeplb"])
        .current_dir(&workspace)
        // Our own `cargo run` sets these for this package; do not let them leak.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MANIFEST_DIR")
        .status()?;
    if !status.success() {
        return Err(format!(
            "cargo build --release -p keeplb failed ({status}); or set KEEPLB=path"
        )
        .into());
    }
    Ok(workspace.join("target/release/keeplb"))
}

/// One probe: when it was sent, when it finished, whether the VIP answered.
#[derive(Clone, Copy)]
struct Probe {
    sent: Instant,
    done: Instant,
    ok: bool,
}

/// From the kill to the first answered probe sent after the first unanswered one (probes
/// that are still answered right after the kill, before the failure shows, do not end the
/// outage). `Some(ZERO)` if no probe was lost at all, `None` if the VIP never answered again.
fn outage_after(probes: &[Probe], killed_at: Instant) -> Option<Duration> {
    let after: Vec<&Probe> = probes.iter().filter(|p| p.sent >= killed_at).collect();
    let Some(first_lost) = after.iter().position(|p| !p.ok) else {
        return if after.is_empty() {
            None
        } else {
            Some(Duration::ZERO)
        };
    };
    after[first_lost..]
        .iter()
        .find(|p| p.ok)
        .map(|p| p.done.duration_since(killed_at))
}

/// Probes lost after the VIP answered again (a flapping takeover); should be 0.
fn lost_after_recovery(probes: &[Probe], killed_at: Instant, outage: Duration) -> usize {
    let recovered = killed_at + outage;
    probes
        .iter()
        .filter(|p| p.sent > recovered && !p.ok)
        .count()
}

/// A pseudo-random fraction in [0, 1), to spread the kill over the advertisement phase.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (mixed as f64) / ((1u64 << 53) as f64)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn daemon_output(process: &Process) -> String {
    let out = process.output_so_far();
    format!(
        "--- {} stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
        process.label(),
        tail(&out.stdout, 15),
        tail(&out.stderr, 15)
    )
}

fn spawn_daemon(
    lab: &Lab,
    host: &Host,
    implementation: Implementation,
    conf: &str,
    keeplb: &Path,
    keepalived: &Path,
) -> Result<Process> {
    let dir = lab.dir();
    let conf_path = dir.join(format!("{}.conf", host.name()));
    std::fs::write(&conf_path, conf)?;
    let conf_path = conf_path
        .to_str()
        .ok_or("lab path is not UTF-8")?
        .to_owned();
    let process = match implementation {
        Implementation::Keeplb => {
            let exe = keeplb.to_str().ok_or("keeplb path is not UTF-8")?;
            host.spawn(&[exe, "run", "-f", conf_path.as_str()])?
        }
        Implementation::Keepalived => {
            let exe = keepalived.to_str().ok_or("keepalived path is not UTF-8")?;
            let pid = dir.join(format!("{}.keepalived.pid", host.name()));
            let vrrp_pid = dir.join(format!("{}.vrrp.pid", host.name()));
            let pid = pid.to_str().ok_or("lab path is not UTF-8")?;
            let vrrp_pid = vrrp_pid.to_str().ok_or("lab path is not UTF-8")?;
            host.spawn(&[
                exe,
                "-n",
                "-l",
                "-D",
                "-f",
                conf_path.as_str(),
                "-p",
                pid,
                "-r",
                vrrp_pid,
            ])?
        }
    };
    Ok(process)
}

/// A raw VRRP socket in the client's namespace, joined to 224.0.0.18, to timestamp the
/// master's advertisements as the client sees them.
fn vrrp_listener(client: &Host) -> Result<Socket> {
    let socket = client.in_netns(|| -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))?;
        socket.join_multicast_v4(&VRRP_GROUP, &CLIENT_ADDR.parse().expect("valid address"))?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(socket)
    })??;
    Ok(socket)
}

/// Receives on `socket` until `stop`; returns when each advertisement from the master
/// arrived.
fn watch_adverts(socket: &Socket, stop: &AtomicBool) -> Vec<Instant> {
    let master: std::net::Ipv4Addr = MASTER_ADDR.parse().expect("valid address");
    let mut seen = Vec::new();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            let at = Instant::now();
            if from.as_socket_ipv4().is_some_and(|a| *a.ip() == master) {
                seen.push(at);
            }
        }
    }
    seen
}

/// What one failover measured.
struct Measured {
    /// From the kill to the first answered probe.
    outage: Duration,
    /// From the master's last advertisement (as the client saw it) to the first answered
    /// probe: the outage without the random phase of the kill in the advert cycle.
    since_advert: Option<Duration>,
    /// Probes lost after the VIP answered again.
    flaps: usize,
}

/// One failover.
fn run_once(
    implementation: Implementation,
    config: VrrpConfig,
    keeplb: &Path,
    keepalived: &Path,
) -> Result<Measured> {
    let lab = Lab::new("failover")?;
    let lan = lab.switch("lan")?;
    let dir1 = lab.host("dir1")?;
    let dir2 = lab.host("dir2")?;
    let client = lab.host("client")?;
    let dir1_cable = dir1.attach(&lan, "eth0", &["10.64.0.1/24"])?;
    dir2.attach(&lan, "eth0", &["10.64.0.2/24"])?;
    client.attach(&lan, "eth0", &[&format!("{CLIENT_ADDR}/24")])?;

    let master = spawn_daemon(
        &lab,
        &dir1,
        implementation,
        &config.keepalived_conf("MASTER", MASTER_PRIORITY),
        keeplb,
        keepalived,
    )?;
    let backup = spawn_daemon(
        &lab,
        &dir2,
        implementation,
        &config.keepalived_conf("BACKUP", BACKUP_PRIORITY),
        keeplb,
        keepalived,
    )?;
    let fail = |what: &str| -> Error {
        format!(
            "{what}\n{}\n{}",
            daemon_output(&master),
            daemon_output(&backup)
        )
        .into()
    };

    wait_until(STARTUP_TIMEOUT, PROBE_PERIOD, || {
        dir1.has_address(VIP).unwrap_or(false)
    })
    .map_err(|_| fail("dir1 never took the VIP"))?;
    wait_until(STARTUP_TIMEOUT, PROBE_PERIOD, || {
        client
            .ping(VIP, Duration::from_millis(100))
            .unwrap_or(false)
    })
    .map_err(|_| fail("the client never reached the VIP"))?;
    if dir2.has_address(VIP)? {
        return Err(fail("dir2 holds the VIP too"));
    }

    // Bounded probe loop on its own thread, the advertisement watcher on another.
    let listener = vrrp_listener(&client)?;
    let killed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let stop_watching = AtomicBool::new(false);
    let (probes, killed_at, adverts) =
        std::thread::scope(|scope| -> Result<(Vec<Probe>, Instant, Vec<Instant>)> {
            let watcher = scope.spawn(|| watch_adverts(&listener, &stop_watching));
            let prober = scope.spawn(|| {
                let started = Instant::now();
                let mut probes = Vec::new();
                let mut answered_since_kill = 0;
                let mut next = started;
                while answered_since_kill < ANSWERS_TO_STOP
                    && started.elapsed() < MAX_PROBE_TIME
                    && !stop.load(Ordering::Relaxed)
                {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += PROBE_PERIOD;
                    let killed_before = killed.load(Ordering::Acquire);
                    let sent = Instant::now();
                    let ok = client.ping(VIP, PROBE_TIMEOUT).unwrap_or(false);
                    let done = Instant::now();
                    probes.push(Probe { sent, done, ok });
                    if killed_before {
                        answered_since_kill = if ok { answered_since_kill + 1 } else { 0 };
                    }
                    if next < done {
                        next = done;
                    }
                }
                probes
            });
            // Let the backup settle (several adverts received) and spread the kill over the
            // advertisement phase.
            let settle = Duration::from_millis(500)
                + config.advert_int() * 2
                + config.advert_int().mul_f64(jitter());
            std::thread::sleep(settle);
            // The master dies: SIGKILL to its whole process group (keepalived's VRRP child
            // included) and its cable pulled, concurrently.
            let killed_at = Instant::now();
            let killing = scope.spawn(|| master.kill());
            let unplugged = dir1_cable.unplug();
            killed.store(true, Ordering::Release);
            let killed_result = killing.join().map_err(|_| "the kill thread panicked")?;
            if let Err(e) = unplugged
                .map_err(Error::from)
                .and(killed_result.map(|_| ()).map_err(Error::from))
            {
                stop.store(true, Ordering::Relaxed);
                stop_watching.store(true, Ordering::Relaxed);
                let _ = prober.join();
                let _ = watcher.join();
                return Err(e);
            }
            let probes = prober.join().map_err(|_| "the probe thread panicked")?;
            stop_watching.store(true, Ordering::Relaxed);
            let adverts = watcher.join().map_err(|_| "the advert watcher panicked")?;
            Ok((probes, killed_at, adverts))
        })?;

    let before_kill: Vec<&Probe> = probes.iter().filter(|p| p.sent < killed_at).collect();
    if before_kill.iter().any(|p| !p.ok) {
        eprintln!(
            "  note: {} of {} probes before the kill were lost",
            before_kill.iter().filter(|p| !p.ok).count(),
            before_kill.len()
        );
    }
    let outage = outage_after(&probes, killed_at)
        .ok_or_else(|| fail("the client never reached the VIP again"))?;
    if !dir2.has_address(VIP)? {
        return Err(fail("the VIP answered but dir2 does not hold it"));
    }
    let flaps = lost_after_recovery(&probes, killed_at, outage);
    let recovered = killed_at + outage;
    let since_advert = adverts
        .iter()
        .rev()
        .find(|&&at| at <= killed_at)
        .map(|&at| recovered.duration_since(at));
    drop(backup);
    lab.close()?;
    Ok(Measured {
        outage,
        since_advert,
        flaps,
    })
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

struct Cell {
    outages: Vec<Duration>,
    since_advert: Vec<Duration>,
    failures: usize,
}

/// Median, minimum, maximum.
fn stats(values: &[Duration]) -> Option<(Duration, Duration, Duration)> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let (min, max) = (*sorted.first()?, *sorted.last()?);
    Some((median(&sorted), min, max))
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let options = parse_args()?;
    if !nix_is_root() {
        return Err("needs root (network namespaces, raw sockets)".into());
    }
    let keepalived = PathBuf::from(
        std::env::var_os("KEEPALIVED").unwrap_or_else(|| "/usr/sbin/keepalived".into()),
    );
    if options
        .implementations
        .contains(&Implementation::Keepalived)
        && !keepalived.is_file()
    {
        return Err(format!(
            "{} not found: apt-get install keepalived, or set KEEPALIVED=path",
            keepalived.display()
        )
        .into());
    }
    let keeplb = if options.implementations.contains(&Implementation::Keeplb) {
        keeplb_binary()?
    } else {
        PathBuf::new()
    };
    println!("keeplb:     {}", keeplb.display());
    println!("keepalived: {}", keepalived.display());
    println!(
        "probe: ICMP echo to {VIP} every {} ms, {} ms timeout; master SIGKILLed and unplugged; {} runs per cell\n",
        PROBE_PERIOD.as_millis(),
        PROBE_TIMEOUT.as_millis(),
        options.runs
    );

    let mut summary = Vec::new();
    for &config in &options.configs {
        println!("== {}", config.label());
        let mut cells: Vec<(Implementation, Cell)> = options
            .implementations
            .iter()
            .map(|&i| {
                (
                    i,
                    Cell {
                        outages: Vec::new(),
                        since_advert: Vec::new(),
                        failures: 0,
                    },
                )
            })
            .collect();
        // Interleaved, so that drift on the machine affects both alike.
        for run in 1..=options.runs {
            for (implementation, cell) in &mut cells {
                match run_once(*implementation, config, &keeplb, &keepalived) {
                    Ok(m) => {
                        let flaps = if m.flaps > 0 {
                            format!(" ({} probes lost after recovery)", m.flaps)
                        } else {
                            String::new()
                        };
                        let since = m.since_advert.map_or("?".to_owned(), ms);
                        println!(
                            "  run {run}: {:<10} outage {:>5} ms   (since the master's last advert: {since:>5} ms){flaps}",
                            implementation.name(),
                            ms(m.outage)
                        );
                        cell.outages.push(m.outage);
                        cell.since_advert.extend(m.since_advert);
                    }
                    Err(e) => {
                        println!("  run {run}: {:<10} FAILED: {e}", implementation.name());
                        cell.failures += 1;
                    }
                }
            }
        }
        summary.push((config, cells));
        println!();
    }

    println!(
        "== summary: median [min–max] in ms; master-down interval of the backup at priority {BACKUP_PRIORITY}"
    );
    for (config, cells) in &summary {
        let mdi = config.master_down(BACKUP_PRIORITY);
        let goal = mdi + Duration::from_millis(100);
        println!(
            "{}: master-down interval {} ms, goal ≤ {} ms",
            config.label(),
            ms(mdi),
            ms(goal)
        );
        for (title, from_kill) in [
            ("outage from the kill", true),
            ("from the master's last advert seen by the client", false),
        ] {
            println!("  {title}:");
            let mut medians = Vec::new();
            for (implementation, cell) in cells {
                let values = if from_kill {
                    &cell.outages
                } else {
                    &cell.since_advert
                };
                let failed = if cell.failures > 0 {
                    format!(", {} failed runs", cell.failures)
                } else {
                    String::new()
                };
                match stats(values) {
                    Some((med, min, max)) => {
                        println!(
                            "    {:<10} median {:>5}  [{}–{}]  n={}{failed}",
                            implementation.name(),
                            ms(med),
                            ms(min),
                            ms(max),
                            values.len()
                        );
                        medians.push((*implementation, med, max));
                    }
                    None => println!(
                        "    {:<10} no successful run{failed}",
                        implementation.name()
                    ),
                }
            }
            let get = |i| medians.iter().find(|(x, _, _)| *x == i).copied();
            if let Some((_, med, max)) = get(Implementation::Keeplb) {
                println!(
                    "    keeplb within master-down + 100 ms: median {}, max {}",
                    if med <= goal { "yes" } else { "NO" },
                    if max <= goal { "yes" } else { "NO" }
                );
            }
            if let (Some((_, a, _)), Some((_, b, _))) =
                (get(Implementation::Keeplb), get(Implementation::Keepalived))
            {
                println!(
                    "    ratio keeplb/keepalived (medians): {:.2}{}",
                    a.as_secs_f64() / b.as_secs_f64(),
                    if a <= b { "" } else { "  (keeplb slower)" }
                );
            }
        }
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // Avoids a direct libc/nix dependency: /proc/self/status has "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes(t0: Instant, spec: &[(u64, bool)]) -> Vec<Probe> {
        spec.iter()
            .map(|&(ms, ok)| Probe {
                sent: t0 + Duration::from_millis(ms),
                done: t0 + Duration::from_millis(ms + 1),
                ok,
            })
            .collect()
    }

    #[test]
    fn outage_runs_from_the_kill_to_the_first_answer_after_a_loss() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let p = probes(
            t0,
            &[
                (0, true),
                (100, true),
                (200, false),
                (300, false),
                (400, true),
                (500, false),
            ],
        );
        assert_eq!(outage_after(&p, at(50)), Some(Duration::from_millis(351)));
        assert_eq!(
            lost_after_recovery(&p, at(50), Duration::from_millis(351)),
            1
        );
        assert_eq!(outage_after(&p[..4], at(50)), None);
        assert_eq!(outage_after(&p[..2], at(50)), Some(Duration::ZERO));
        assert_eq!(outage_after(&p[..1], at(50)), None);
    }

    #[test]
    fn master_down_interval() {
        assert_eq!(CONFIGS[0].master_down(100).as_millis(), 3609);
        assert_eq!(CONFIGS[1].master_down(100).as_millis(), 360);
    }

    #[test]
    fn medians() {
        let d = Duration::from_millis;
        assert_eq!(median(&[d(1), d(2), d(9)]), d(2));
        assert_eq!(median(&[d(1), d(3)]), d(2));
    }
}
