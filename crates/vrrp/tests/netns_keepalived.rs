//! Interoperability of the VRRP driver with a real keepalived 2.2.7 on the same bridge:
//! exactly one master, and each takes over when the other stops.

mod io_lab;

use std::time::{Duration, Instant};

use io_lab::{Router, VIP, has_vip, v3_config, wait_for_no_vip, wait_for_vip};
use keeplb_testlab::{Host, Lab, Process, Signal, wait_until};
use keeplb_vrrp::{AdverInterval, InstanceConfig, State, Version};

const SETTLE: Duration = Duration::from_secs(10);

/// Writes a keepalived.conf for one instance on eth0, VRID 51, and starts keepalived
/// (foreground, console log, VRRP only) in `host`.
fn start_keepalived(
    lab: &Lab,
    host: &Host,
    priority: u8,
    version: u8,
    advert_int: &str,
) -> Result<Process, Box<dyn std::error::Error>> {
    io_lab::start_keepalived(
        lab,
        host,
        &format!(
            "    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    \
             version {version}\n    priority {priority}\n    advert_int {advert_int}\n    \
             virtual_ipaddress {{\n        {VIP}/32\n    }}\n"
        ),
    )
}

/// Waits until keepalived's log says it entered `state` (e.g. "BACKUP").
fn wait_for_keepalived_state(ka: &Process, state: &str, timeout: Duration) {
    let needle = format!("(VI_1) Entering {state} STATE");
    wait_until(timeout, io_lab::POLL, || {
        let out = ka.output_so_far();
        out.stdout.contains(&needle) || out.stderr.contains(&needle)
    })
    .unwrap_or_else(|_| {
        panic!(
            "keepalived never logged {needle:?}:\n{}",
            ka.output_so_far()
        )
    });
}

fn lan(name: &str) -> Result<(Lab, Host, Host), Box<dyn std::error::Error>> {
    let lab = Lab::new(name)?;
    let lan = lab.switch("lan")?;
    let ka = lab.host("ka")?;
    let kl = lab.host("kl")?;
    ka.attach(&lan, "eth0", &["10.0.0.1/24"])?;
    kl.attach(&lan, "eth0", &["10.0.0.2/24"])?;
    Ok((lab, ka, kl))
}

/// VRRPv2, 1 s: keepalived (150) is master, keeplb (100) backs up and takes over when
/// keepalived stops. keeplb's Master_Down_Interval: 3 s + 156/256 s = 3.609 s.
#[test]
fn keepalived_master_keeplb_backup_v2() -> Result<(), Box<dyn std::error::Error>> {
    let (lab, ka_host, kl_host) = lan("vrrp-ka-master")?;
    let master_down = Duration::from_micros(3_609_375);

    let ka = start_keepalived(&lab, &ka_host, 150, 2, "1")?;
    let mut config = InstanceConfig::new("kl", 51, Version::V2, vec![io_lab::vip()]);
    config.adver_int = AdverInterval::from_secs(1);
    let kl = Router::start(&kl_host, "eth0", config);

    wait_for_keepalived_state(&ka, "MASTER", SETTLE);
    wait_for_vip(&ka_host, Instant::now(), SETTLE);
    kl.wait_for_state(State::Backup, SETTLE);
    // Exactly one master: keeplb hears keepalived and stays backup for longer than its
    // Master_Down_Interval.
    io_lab::wait_for_state_for(&kl, State::Backup, master_down + Duration::from_millis(500));
    assert!(
        !has_vip(&kl_host),
        "keeplb holds the VIP next to keepalived"
    );
    assert!(has_vip(&ka_host));

    let t0 = Instant::now();
    ka.signal(Signal::SIGTERM)?;
    let failover = wait_for_vip(&kl_host, t0, SETTLE);
    eprintln!("keepalived stopped -> keeplb master after {failover:?}");
    assert!(
        failover < master_down,
        "took {failover:?}, Master_Down is {master_down:?}"
    );
    assert_eq!(kl.state(), State::Master);
    assert!(
        ka.wait_timeout(SETTLE)?.is_some(),
        "keepalived did not exit"
    );
    wait_for_no_vip(&ka_host, SETTLE);
    let stats = kl.stop();
    assert!(stats.priority_zero_received >= 1, "{stats:?}");
    Ok(())
}

/// VRRPv3, 0.2 s (IPv4 pseudo-header checksum, keepalived's form): keeplb (150) is
/// master, keepalived (100) backs up and takes over when keeplb shuts down.
/// keepalived's Master_Down_Interval: 0.6 s + 156 * 0.2 / 256 s = 0.722 s.
#[test]
fn keeplb_master_keepalived_backup_v3() -> Result<(), Box<dyn std::error::Error>> {
    let (lab, ka_host, kl_host) = lan("vrrp-kl-master")?;
    let master_down = Duration::from_micros(721_875);

    let kl = Router::start(&kl_host, "eth0", v3_config("kl", 150, 20));
    let ka = start_keepalived(&lab, &ka_host, 100, 3, "0.2")?;

    kl.wait_for_state(State::Master, SETTLE);
    wait_for_vip(&kl_host, Instant::now(), SETTLE);
    wait_for_keepalived_state(&ka, "BACKUP", SETTLE);
    // keepalived stays backup: it accepts keeplb's advertisements.
    io_lab::wait_for_state_for(&kl, State::Master, 3 * master_down);
    assert!(
        !has_vip(&ka_host),
        "keepalived holds the VIP next to keeplb"
    );
    let out = ka.output_so_far();
    assert!(
        !out.stdout.contains("Entering MASTER STATE")
            && !out.stderr.contains("Entering MASTER STATE"),
        "keepalived became master:\n{out}"
    );

    let t0 = Instant::now();
    let stats = kl.stop();
    let failover = wait_for_vip(&ka_host, t0, SETTLE);
    eprintln!("keeplb stopped -> keepalived master after {failover:?}");
    assert!(
        failover < master_down,
        "took {failover:?}, Master_Down is {master_down:?}"
    );
    assert_eq!(stats.priority_zero_sent, 1);
    assert!(!has_vip(&kl_host));
    wait_for_keepalived_state(&ka, "MASTER", SETTLE);
    Ok(())
}
