//! `keeplb demo`: two directors running `keeplb run` on one LAN (network namespaces on this
//! machine) share a VIP and balance a service on it over two real servers; a client sends
//! requests; the master is SIGKILLed and the client's outage is measured. Needs root and
//! iproute2 only; nothing leaves the namespaces it creates.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keeplb_testlab::{Host, Lab, Process, wait_until};

const VIP: &str = "10.63.0.100";
const SERVICE_PORT: u16 = 80;
const REAL_SERVERS: [(&str, &str); 2] = [("rs1", "10.63.0.21"), ("rs2", "10.63.0.22")];
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
/// Bounds of the client's probe loop, whatever happens.
const MAX_PROBE_TIME: Duration = Duration::from_secs(30);

fn config(priority: u8, state: &str, advert_int: &str, version: u8) -> String {
    let real_servers: String = REAL_SERVERS
        .iter()
        .map(|(_, ip)| {
            format!(
                "    real_server {ip} {SERVICE_PORT} {{\n        TCP_CHECK {{\n            connect_timeout 1\n        }}\n    }}\n"
            )
        })
        .collect();
    format!(
        "vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 63\n    priority {priority}\n    version {version}\n    advert_int {advert_int}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\n\
         virtual_server {VIP} {SERVICE_PORT} {{\n    delay_loop 2\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n{real_servers}}}\n"
    )
}

/// A real server in `host`: answers every connection with its name.
fn serve_name(host: &Host, name: &'static str, ip: &str) -> anyhow::Result<()> {
    let addr = SocketAddr::new(ip.parse()?, SERVICE_PORT);
    let listener = host.in_netns(|| TcpListener::bind(addr))??;
    std::thread::spawn(move || {
        // Lives as long as the demo; each answer is one short write.
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(format!("{name}\n").as_bytes());
        }
    });
    Ok(())
}

/// One request from the client to the service: which real server answered.
fn request(client: &Host) -> Option<String> {
    let vip = SocketAddr::new(VIP.parse().ok()?, SERVICE_PORT);
    client
        .in_netns(|| -> std::io::Result<String> {
            let stream = TcpStream::connect_timeout(&vip, PROBE_TIMEOUT)?;
            stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
            let mut name = String::new();
            BufReader::new(stream).read_line(&mut name)?;
            Ok(name.trim_end().to_owned())
        })
        .ok()?
        .ok()
        .filter(|name| !name.is_empty())
}

fn spread(probes: &[Probe]) -> String {
    let mut counts = BTreeMap::new();
    for (_, answer) in probes {
        if let Some(name) = answer {
            *counts.entry(name.as_str()).or_insert(0) += 1;
        }
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn addresses(host: &Host) -> anyhow::Result<String> {
    let out = host.run(&["ip", "-br", "-4", "addr", "show", "eth0"])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn neighbour(host: &Host) -> anyhow::Result<String> {
    let out = host.run(&["ip", "neigh", "show", VIP])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One request: when, and which real server answered (none: it failed).
type Probe = (Instant, Option<String>);

pub fn run(advert_int: &str, version: u8) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the keeplb binary")?;
    let exe = exe
        .to_str()
        .context("keeplb's path is not UTF-8")?
        .to_owned();
    let lab = Lab::new("demo").context("building the lab (needs root and iproute2)")?;
    let lan = lab.switch("lan")?;
    let dir1 = lab.host("dir1")?;
    let dir2 = lab.host("dir2")?;
    let client = lab.host("client")?;
    let dir1_cable = dir1.attach(&lan, "eth0", &["10.63.0.1/24"])?;
    dir2.attach(&lan, "eth0", &["10.63.0.2/24"])?;
    client.attach(&lan, "eth0", &["10.63.0.10/24"])?;
    for (name, ip) in REAL_SERVERS {
        let host = lab.host(name)?;
        host.attach(&lan, "eth0", &[&format!("{ip}/24")])?;
        serve_name(&host, name, ip)?;
    }

    step(&format!(
        "two directors run keeplb with an unmodified keepalived.conf (VRRPv{version}, advert_int {advert_int}; a virtual server on the VIP over rs1 and rs2)"
    ));
    let master_conf = config(150, "MASTER", advert_int, version);
    println!("{master_conf}");
    let mut daemons: Vec<(&Host, Process)> = Vec::new();
    let mut interval_in_force = None;
    for (host, priority, state) in [(&dir1, 150, "MASTER"), (&dir2, 100, "BACKUP")] {
        let path = lab.dir().join(format!("{}.conf", host.name()));
        std::fs::write(&path, config(priority, state, advert_int, version))?;
        if interval_in_force.is_none() {
            interval_in_force = Some(advert_int_in_force(&path)?);
        }
        let path = path.to_str().context("lab path is not UTF-8")?.to_owned();
        // Each director its own control socket: they share this machine's /run.
        let control = lab.dir().join(format!("{}.sock", host.name()));
        let control = control
            .to_str()
            .context("lab path is not UTF-8")?
            .to_owned();
        daemons.push((
            host,
            host.spawn(&[
                exe.as_str(),
                "run",
                "-f",
                path.as_str(),
                "--control",
                control.as_str(),
            ])?,
        ));
        println!(
            "{}: keeplb run -f {} (priority {priority})",
            host.name(),
            path
        );
    }
    wait_until(Duration::from_secs(15), PROBE_INTERVAL, || {
        dir1.has_address(VIP).unwrap_or(false)
    })
    .context("dir1 never became master")?;
    step("the VIP is on the master");
    println!("dir1: {}\ndir2: {}", addresses(&dir1)?, addresses(&dir2)?);
    wait_until(Duration::from_secs(15), PROBE_INTERVAL, || {
        request(&client).is_some()
    })
    .context("the client never reached the service on the VIP")?;
    println!(
        "client -> {VIP}:{SERVICE_PORT}: answered; {}",
        neighbour(&client)?
    );

    step(
        "the client sends a request to the VIP every 20 ms; dir1 dies (keeplb SIGKILLed, cable pulled)",
    );
    let killed = Arc::new(AtomicBool::new(false));
    let prober = {
        let client = client.clone();
        let killed = Arc::clone(&killed);
        std::thread::spawn(move || -> Vec<Probe> {
            let started = Instant::now();
            let mut probes = Vec::new();
            let mut answered_since_kill = 0;
            // Bounded: stops once the VIP has answered 10 times after the kill, or at the
            // time limit.
            while answered_since_kill < 10 && started.elapsed() < MAX_PROBE_TIME {
                let answer = request(&client);
                let ok = answer.is_some();
                probes.push((Instant::now(), answer));
                if killed.load(Ordering::Relaxed) {
                    answered_since_kill = if ok { answered_since_kill + 1 } else { 0 };
                }
                std::thread::sleep(PROBE_INTERVAL);
            }
            probes
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    daemons[0].1.kill()?;
    dir1_cable.unplug()?;
    killed.store(true, Ordering::Relaxed);
    let probes = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;

    let outage = outage_after(&probes, killed_at);
    let (before, after): (Vec<Probe>, Vec<Probe>) =
        probes.iter().cloned().partition(|(at, _)| *at < killed_at);
    step("result");
    println!("requests answered before the failure: {}", spread(&before));
    println!("requests answered after it, by dir2: {}", spread(&after));
    println!("dir2: {}", addresses(&dir2)?);
    println!(
        "client's ARP entry for the VIP now: {}",
        neighbour(&client)?
    );
    let Some(outage) = outage else {
        bail!("the client never reached the VIP again");
    };
    println!(
        "the client could not reach {VIP} for {} ms after the master died ({} requests; VRRPv{version} Master_Down at priority 100 is {} ms)",
        outage.as_millis(),
        probes.len(),
        master_down_ms(interval_in_force.unwrap_or(1.0), version)
    );
    Ok(())
}

/// The advertisement interval keeplb runs the demo's configuration at `path` with, in
/// seconds: as written, or as keepalived rounds it (whole seconds for VRRPv2).
fn advert_int_in_force(path: &std::path::Path) -> anyhow::Result<f64> {
    let loaded = keeplb_config::load(
        path,
        &keeplb_config::LoadOptions {
            config_id: String::new(),
        },
    )?;
    for diagnostic in loaded.diagnostics.iter() {
        if diagnostic.code == "advert-int-rounded" {
            println!("note: {}", diagnostic.message);
        }
    }
    loaded
        .config
        .vrrp_instance
        .first()
        .map(|instance| instance.advert_int)
        .context("the demo's configuration has no vrrp_instance")
}

/// 3 × interval + skew for priority 100 (RFC 5798), the interval in seconds.
fn master_down_ms(advert_int: f64, version: u8) -> u64 {
    let interval_ms = advert_int * 1000.0;
    let skew_ms = if version == 3 {
        interval_ms * 156.0 / 256.0
    } else {
        156.0 / 256.0 * 1000.0
    };
    (3.0 * interval_ms + skew_ms) as u64
}

/// From the kill to the first successful probe after it.
fn outage_after(probes: &[Probe], killed_at: Instant) -> Option<Duration> {
    probes
        .iter()
        .filter(|(at, _)| *at >= killed_at)
        .skip_while(|(_, answer)| answer.is_some())
        .find(|(_, answer)| answer.is_some())
        .map(|(at, _)| at.duration_since(killed_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_runs_from_the_kill_to_the_first_answer_after_a_failure() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let ok = || Some("rs1".to_owned());
        let probes = [
            (at(0), ok()),
            (at(100), ok()),
            (at(200), None),
            (at(300), None),
            (at(400), ok()),
        ];
        assert_eq!(
            outage_after(&probes, at(150)),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            outage_after(&probes[..4], at(150)),
            None,
            "never answered again"
        );
    }

    #[test]
    fn master_down_interval() {
        assert_eq!(master_down_ms(1.0, 2), 3609);
        assert_eq!(master_down_ms(0.1, 3), 360);
    }
}
