//! The VRRP driver in network namespaces: two keeplb routers on one bridge.
//!
//! VRRPv3 with a 0.2 s advertisement interval keeps the tests fast. For the backup
//! (priority 100): Skew_Time = 156 * 0.2 / 256 s = 0.122 s, Master_Down_Interval =
//! 3 * 0.2 s + Skew_Time = 0.722 s.

mod io_lab;

use std::time::{Duration, Instant};

use io_lab::{Router, has_vip, v3_config, wait_for_no_vip, wait_for_vip};
use keeplb_testlab::Lab;
use keeplb_vrrp::State;

const CENTIS: u16 = 20;
const MASTER_DOWN_BACKUP: Duration = Duration::from_micros(600_000 + 121_875);
const SKEW_BACKUP: Duration = Duration::from_micros(121_875);
const SETTLE: Duration = Duration::from_secs(5);

#[test]
fn higher_priority_becomes_master_and_holds_the_vip() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp-elect")?;
    let lan = lab.switch("lan")?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    a.attach(&lan, "eth0", &["10.0.0.1/24"])?;
    b.attach(&lan, "eth0", &["10.0.0.2/24"])?;
    // A VIP left behind by a crashed run: the backup must remove it at startup.
    b.add_address("eth0", "10.0.0.100/32")?;

    let ra = Router::start(&a, "eth0", v3_config("a", 150, CENTIS));
    let rb = Router::start(&b, "eth0", v3_config("b", 100, CENTIS));
    wait_for_vip(&a, Instant::now(), SETTLE);
    ra.wait_for_state(State::Master, SETTLE);
    rb.wait_for_state(State::Backup, SETTLE);
    assert!(!has_vip(&b), "the backup still holds the VIP");

    let out = a.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inet 10.0.0.100/32"),
        "VIP not /32 on eth0: {text}"
    );

    // The backup keeps hearing the master: it stays backup for several Master_Down
    // intervals' worth of advertisements.
    let heard_before = Instant::now();
    io_lab::wait_for_state_for(&rb, State::Backup, 4 * MASTER_DOWN_BACKUP);
    assert!(heard_before.elapsed() >= 4 * MASTER_DOWN_BACKUP);

    let stats_b = rb.stop();
    let stats_a = ra.stop();
    assert!(stats_b.adverts_received >= 4, "backup heard {stats_b:?}");
    assert_eq!(stats_b.became_master, 0);
    assert_eq!(stats_a.became_master, 1);
    // Shutdown removed the master's VIP.
    assert!(!has_vip(&a));
    Ok(())
}

#[test]
fn backup_takes_over_quickly_when_the_master_resigns() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp-resign")?;
    let lan = lab.switch("lan")?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let client = lab.host("client")?;
    a.attach(&lan, "eth0", &["10.0.0.1/24"])?;
    b.attach(&lan, "eth0", &["10.0.0.2/24"])?;
    client.attach(&lan, "eth0", &["10.0.0.9/24"])?;
    // Let gratuitous ARP replace a fresh neighbour entry (default: not within 1 s).
    client.sysctl("net.ipv4.neigh.eth0.locktime", "0")?;

    let ra = Router::start(&a, "eth0", v3_config("a", 150, CENTIS));
    let rb = Router::start(&b, "eth0", v3_config("b", 100, CENTIS));
    ra.wait_for_state(State::Master, SETTLE);
    rb.wait_for_state(State::Backup, SETTLE);
    wait_for_vip(&a, Instant::now(), SETTLE);
    assert!(
        client.ping(io_lab::VIP, SETTLE)?,
        "VIP unreachable on the master"
    );
    assert_eq!(neighbour_mac(&client)?, mac(&a)?);

    let t0 = Instant::now();
    let stats_a = ra.stop();
    let failover = wait_for_vip(&b, t0, SETTLE);
    eprintln!("failover after a priority-0 resignation: {failover:?}");
    assert_eq!(stats_a.priority_zero_sent, 1);
    // A resignation makes the backup wait only Skew_Time, well inside Master_Down.
    assert!(
        failover < MASTER_DOWN_BACKUP,
        "took {failover:?}, Master_Down is {MASTER_DOWN_BACKUP:?}"
    );
    assert_eq!(rb.state(), State::Master);
    assert!(!has_vip(&a), "the resigned master kept the VIP");
    // The new master's gratuitous ARP moved the client's neighbour entry, without the
    // client asking.
    let mac_b = mac(&b)?;
    keeplb_testlab::wait_until(SETTLE, io_lab::POLL, || {
        neighbour_mac(&client).is_ok_and(|m| m == mac_b)
    })
    .map_err(|_| format!("client still maps the VIP to {:?}", neighbour_mac(&client)))?;
    Ok(())
}

/// The MAC address of eth0 in `host`.
fn mac(host: &keeplb_testlab::Host) -> Result<String, Box<dyn std::error::Error>> {
    let out = host.run(&["ip", "-o", "link", "show", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| format!("no MAC in {text}"))?;
    Ok(mac.to_owned())
}

/// The MAC address `host` has for the VIP in its neighbour table.
fn neighbour_mac(host: &keeplb_testlab::Host) -> Result<String, Box<dyn std::error::Error>> {
    let out = host.run(&["ip", "neigh", "show", io_lab::VIP, "dev", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .ok_or_else(|| format!("no neighbour entry: {text:?}"))?;
    Ok(mac.to_owned())
}

#[test]
fn backup_takes_over_within_master_down_when_the_master_goes_silent()
-> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp-silent")?;
    let lan = lab.switch("lan")?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let link_a = a.attach(&lan, "eth0", &["10.0.0.1/24"])?;
    b.attach(&lan, "eth0", &["10.0.0.2/24"])?;

    let ra = Router::start(&a, "eth0", v3_config("a", 150, CENTIS));
    let rb = Router::start(&b, "eth0", v3_config("b", 100, CENTIS));
    ra.wait_for_state(State::Master, SETTLE);
    rb.wait_for_state(State::Backup, SETTLE);

    let t0 = Instant::now();
    link_a.unplug()?;
    let failover = wait_for_vip(&b, t0, SETTLE);
    eprintln!("failover after the master went silent: {failover:?}");
    // The last advertisement left at most one interval before the cable was pulled;
    // allow 150 ms for scheduling and the 10 ms polling of `ip addr`.
    assert!(
        failover <= MASTER_DOWN_BACKUP + Duration::from_millis(150),
        "took {failover:?}, Master_Down is {MASTER_DOWN_BACKUP:?}"
    );
    assert!(
        failover > SKEW_BACKUP + Duration::from_millis(200),
        "took only {failover:?}: not a Master_Down expiry"
    );

    // Cable back: the higher priority preempts and the backup gives the VIP up.
    link_a.plug()?;
    rb.wait_for_state(State::Backup, SETTLE);
    wait_for_no_vip(&b, SETTLE);
    assert_eq!(ra.state(), State::Master);
    assert!(has_vip(&a));
    Ok(())
}
