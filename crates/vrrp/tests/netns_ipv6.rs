//! VRRPv3 over IPv6 in network namespaces: keeplb routers (and keepalived 2.2.7) on one
//! bridge, advertising from their link-local addresses to ff02::12.
//!
//! The VIPs: a link-local one first (RFC 5798 section 5.2.9, which keepalived insists
//! on for VRRPv3 over IPv6) and a global one. 0.2 s advertisement interval; for the
//! backup (priority 100): Skew_Time = 0.122 s, Master_Down_Interval = 0.722 s.

mod io_lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use io_lab::Router;
use keeplb_testlab::{Host, Lab, Process, Signal, wait_until};
use keeplb_vrrp::{AdverInterval, InstanceConfig, State, Version};

const VIP_LL: &str = "fe80::100";
const VIP_GLOBAL: &str = "fd00::100";
const MASTER_DOWN_BACKUP: Duration = Duration::from_micros(600_000 + 121_875);
const SETTLE: Duration = Duration::from_secs(10);

fn vips() -> Vec<IpAddr> {
    [VIP_LL, VIP_GLOBAL]
        .iter()
        .map(|a| a.parse().expect("VIP literal"))
        .collect()
}

fn v6_config(name: &str, priority: u8) -> InstanceConfig {
    let mut config = InstanceConfig::new(name, 51, Version::V3, vips());
    config.priority = priority;
    config.adver_int = AdverInterval::from_centis(20);
    config
}

/// A host on `lan` with `fd00::N/64`; DAD is off in it, so its link-local address (the
/// advertisement source) is usable at once.
fn host(
    lab: &Lab,
    lan: &keeplb_testlab::Switch,
    name: &str,
    n: u8,
) -> keeplb_testlab::Result<Host> {
    let host = lab.host(name)?;
    host.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    host.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    host.attach(lan, "eth0", &[&format!("fd00::{n}/64")])?;
    Ok(host)
}

fn has(host: &Host, addr: &str) -> bool {
    host.has_address(addr).expect("ip addr")
}

/// Waits until `host` holds both VIPs; returns the time since `since`.
fn wait_for_vips(host: &Host, since: Instant, timeout: Duration) -> Duration {
    wait_until(timeout, io_lab::POLL, || {
        has(host, VIP_LL) && has(host, VIP_GLOBAL)
    })
    .unwrap_or_else(|_| panic!("{} did not get the VIPs within {timeout:?}", host.name()));
    since.elapsed()
}

fn wait_for_no_vips(host: &Host, timeout: Duration) {
    wait_until(timeout, io_lab::POLL, || {
        !has(host, VIP_LL) && !has(host, VIP_GLOBAL)
    })
    .unwrap_or_else(|_| panic!("{} still holds a VIP after {timeout:?}", host.name()));
}

/// A word following `key` in `ip` output of `argv` run in `host`.
fn word_after(host: &Host, argv: &[&str], key: &str) -> Option<String> {
    let out = host.run(argv).ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .map(str::to_owned)
}

fn mac(host: &Host) -> String {
    word_after(host, &["ip", "-o", "link", "show", "eth0"], "link/ether").expect("MAC of eth0")
}

fn neighbour_mac(host: &Host, addr: &str) -> Option<String> {
    word_after(
        host,
        &["ip", "-6", "neigh", "show", addr, "dev", "eth0"],
        "lladdr",
    )
}

#[test]
fn ipv6_election_and_takeover_on_shutdown() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp6-elect")?;
    let lan = lab.switch("lan")?;
    let a = host(&lab, &lan, "a", 1)?;
    let b = host(&lab, &lan, "b", 2)?;
    let client = host(&lab, &lan, "client", 9)?;

    let t0 = Instant::now();
    let ra = Router::start(&a, "eth0", v6_config("a", 150));
    let rb = Router::start(&b, "eth0", v6_config("b", 100));
    ra.wait_for_state(State::Master, SETTLE);
    rb.wait_for_state(State::Backup, SETTLE);
    let elected = wait_for_vips(&a, t0, SETTLE);
    eprintln!("IPv6 master with both VIPs {elected:?} after start");
    // The backup hears the master (hop limit 255, checksum, VRID all accepted) for
    // several Master_Down intervals.
    io_lab::wait_for_state_for(&rb, State::Backup, 4 * MASTER_DOWN_BACKUP);
    assert!(
        !has(&b, VIP_LL) && !has(&b, VIP_GLOBAL),
        "the backup holds a VIP"
    );
    let out = a.run(&["ip", "-o", "-6", "addr", "show", "dev", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inet6 fd00::100/128"), "{text}");
    assert!(text.contains("inet6 fe80::100/128"), "{text}");

    assert!(
        client.ping(VIP_GLOBAL, SETTLE)?,
        "VIP unreachable on the master"
    );
    assert_eq!(neighbour_mac(&client, VIP_GLOBAL), Some(mac(&a)));

    let t1 = Instant::now();
    let stats_a = ra.stop();
    let failover = wait_for_vips(&b, t1, SETTLE);
    eprintln!("IPv6 failover after a priority-0 resignation: {failover:?}");
    assert_eq!(stats_a.priority_zero_sent, 1);
    assert!(
        failover < MASTER_DOWN_BACKUP,
        "took {failover:?}, Master_Down is {MASTER_DOWN_BACKUP:?}"
    );
    assert_eq!(rb.state(), State::Master);
    assert!(!has(&a, VIP_LL) && !has(&a, VIP_GLOBAL));
    // The new master's unsolicited neighbour advertisement (override) moved the
    // client's entry without the client asking.
    let mac_b = mac(&b);
    wait_until(SETTLE, io_lab::POLL, || {
        neighbour_mac(&client, VIP_GLOBAL).as_deref() == Some(mac_b.as_str())
    })
    .map_err(|_| {
        format!(
            "client still maps {VIP_GLOBAL} to {:?}",
            neighbour_mac(&client, VIP_GLOBAL)
        )
    })?;
    assert!(
        client.ping(VIP_GLOBAL, SETTLE)?,
        "VIP unreachable on the new master"
    );

    let stats_b = rb.stop();
    assert!(stats_b.adverts_received >= 4, "backup heard {stats_b:?}");
    assert_eq!(stats_b.became_master, 1);
    Ok(())
}

/// Starts keepalived (foreground, console log, VRRP only) in `host` with one IPv6
/// VRRPv3 instance on eth0, VRID 51, 0.2 s.
fn start_keepalived(
    lab: &Lab,
    host: &Host,
    priority: u8,
) -> Result<Process, Box<dyn std::error::Error>> {
    io_lab::start_keepalived(
        lab,
        host,
        &format!(
            "    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    \
             version 3\n    priority {priority}\n    advert_int 0.2\n    \
             virtual_ipaddress {{\n        {VIP_LL}\n        {VIP_GLOBAL}\n    }}\n"
        ),
    )
}

fn keepalived_logged(ka: &Process, needle: &str) -> bool {
    let out = ka.output_so_far();
    out.stdout.contains(needle) || out.stderr.contains(needle)
}

fn wait_for_keepalived_state(ka: &Process, state: &str, timeout: Duration) {
    let needle = format!("(VI_1) Entering {state} STATE");
    wait_until(timeout, io_lab::POLL, || keepalived_logged(ka, &needle)).unwrap_or_else(|_| {
        panic!(
            "keepalived never logged {needle:?}:\n{}",
            ka.output_so_far()
        )
    });
}

/// keeplb (150) is master and keepalived (100) accepts its IPv6 advertisements and backs
/// up; keeplb shuts down and keepalived takes over; a new keeplb backup (100) accepts
/// keepalived's advertisements and stays backup.
#[test]
fn ipv6_interoperates_with_keepalived() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp6-ka")?;
    let lan = lab.switch("lan")?;
    let ka_host = host(&lab, &lan, "ka", 1)?;
    let kl_host = host(&lab, &lan, "kl", 2)?;

    let kl = Router::start(&kl_host, "eth0", v6_config("kl", 150));
    kl.wait_for_state(State::Master, SETTLE);
    wait_for_vips(&kl_host, Instant::now(), SETTLE);
    let ka = start_keepalived(&lab, &ka_host, 100)?;
    wait_for_keepalived_state(&ka, "BACKUP", SETTLE);
    io_lab::wait_for_state_for(&kl, State::Master, 3 * MASTER_DOWN_BACKUP);
    assert!(
        !keepalived_logged(&ka, "Entering MASTER STATE"),
        "keepalived became master next to keeplb:\n{}",
        ka.output_so_far()
    );
    assert!(!has(&ka_host, VIP_GLOBAL));

    let t0 = Instant::now();
    let stats = kl.stop();
    let failover = wait_for_vips(&ka_host, t0, SETTLE);
    eprintln!("keeplb stopped -> keepalived IPv6 master after {failover:?}");
    assert_eq!(stats.priority_zero_sent, 1);
    assert!(
        failover < MASTER_DOWN_BACKUP,
        "took {failover:?}, Master_Down is {MASTER_DOWN_BACKUP:?}"
    );
    wait_for_no_vips(&kl_host, SETTLE);
    wait_for_keepalived_state(&ka, "MASTER", SETTLE);

    let kl = Router::start(&kl_host, "eth0", v6_config("kl2", 100));
    kl.wait_for_state(State::Backup, SETTLE);
    io_lab::wait_for_state_for(&kl, State::Backup, 3 * MASTER_DOWN_BACKUP);
    assert!(!has(&kl_host, VIP_GLOBAL));
    let stats = kl.stop();
    assert!(stats.adverts_received >= 3, "keeplb heard {stats:?}");

    ka.signal(Signal::SIGTERM)?;
    assert!(
        ka.wait_timeout(SETTLE)?.is_some(),
        "keepalived did not exit"
    );
    Ok(())
}

/// With duplicate address detection on, the link-local address is tentative for about a
/// second after the interface comes up: the instance waits (FAULT, no source address)
/// and becomes master once the address is usable, without being restarted.
#[test]
fn ipv6_waits_for_a_tentative_link_local_address() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp6-dad")?;
    let lan = lab.switch("lan")?;
    let a = lab.host("a")?;
    a.sysctl("net.ipv6.conf.default.accept_dad", "1")?;
    let t0 = Instant::now();
    a.attach(&lan, "eth0", &["fd00::1/64"])?;
    let ra = Router::start(&a, "eth0", v6_config("a", 150));
    ra.wait_for_state(State::Master, SETTLE);
    let elected = wait_for_vips(&a, t0, SETTLE);
    eprintln!("IPv6 master {elected:?} after the interface came up with DAD on");
    let stats = ra.stop();
    assert_eq!(stats.became_master, 1);
    Ok(())
}
