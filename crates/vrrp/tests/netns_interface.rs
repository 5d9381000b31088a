//! The VRRP driver when its interface is missing or fails: the instance waits in FAULT
//! (without its VIP) and recovers when the interface appears or comes back. The driver
//! looks at the interface every `LINK_POLL` (200 ms).
//!
//! VRRPv3, 0.2 s advertisement interval, alone on the LAN: after each recovery the
//! instance is backup for Master_Down_Interval (3 * 0.2 s + skew) and becomes master.

mod io_lab;

use std::time::{Duration, Instant};

use io_lab::{Router, has_vip, v3_config, wait_for_no_vip, wait_for_vip};
use keeplb_testlab::Lab;
use keeplb_vrrp::State;

const CENTIS: u16 = 20;
const SETTLE: Duration = Duration::from_secs(5);
/// One link poll plus a Master_Down_Interval and scheduling slack.
const RECOVERY: Duration = Duration::from_millis(200 + 722 + 300);

#[test]
fn missing_interface_is_fault_until_it_appears() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp-absent")?;
    let lan = lab.switch("lan")?;
    let a = lab.host("a")?;

    let ra = Router::start(&a, "eth0", v3_config("a", 150, CENTIS));
    ra.wait_for_state(State::Fault, SETTLE);
    io_lab::wait_for_state_for(&ra, State::Fault, Duration::from_millis(500));

    let t0 = Instant::now();
    let link = a.attach(&lan, "eth0", &["10.0.0.1/24"])?;
    ra.wait_for_state(State::Master, SETTLE);
    let appeared = wait_for_vip(&a, t0, SETTLE);
    eprintln!("master with the VIP {appeared:?} after the interface appeared");
    assert!(appeared < RECOVERY, "took {appeared:?}");

    // The interface disappears: FAULT; it comes back (new index): master again.
    link.delete()?;
    ra.wait_for_state(State::Fault, SETTLE);
    let t1 = Instant::now();
    a.attach(&lan, "eth0", &["10.0.0.1/24"])?;
    ra.wait_for_state(State::Master, SETTLE);
    let reappeared = wait_for_vip(&a, t1, SETTLE);
    eprintln!("master with the VIP {reappeared:?} after the interface reappeared");

    let stats = ra.stop();
    assert_eq!(stats.became_master, 2);
    assert!(!has_vip(&a));
    Ok(())
}

#[test]
fn carrier_loss_and_admin_down_are_fault() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::new("vrrp-carrier")?;
    let lan = lab.switch("lan")?;
    let a = lab.host("a")?;
    let link = a.attach(&lan, "eth0", &["10.0.0.1/24"])?;

    let ra = Router::start(&a, "eth0", v3_config("a", 150, CENTIS));
    ra.wait_for_state(State::Master, SETTLE);
    wait_for_vip(&a, Instant::now(), SETTLE);

    // Cable pulled: eth0 stays up but loses carrier.
    let t0 = Instant::now();
    link.unplug()?;
    assert!(!link.has_carrier()?);
    ra.wait_for_state(State::Fault, SETTLE);
    wait_for_no_vip(&a, SETTLE);
    let fault = t0.elapsed();
    eprintln!("FAULT without the VIP {fault:?} after the cable was pulled");
    assert!(fault < Duration::from_millis(200 + 150), "took {fault:?}");
    // It stays there while the cable is out.
    io_lab::wait_for_state_for(&ra, State::Fault, Duration::from_millis(500));
    assert!(!has_vip(&a));

    let t1 = Instant::now();
    link.plug()?;
    ra.wait_for_state(State::Master, SETTLE);
    let back = wait_for_vip(&a, t1, SETTLE);
    eprintln!("master with the VIP {back:?} after the cable was plugged back");
    assert!(back < RECOVERY, "took {back:?}");

    // Administratively down, then up.
    link.set_down()?;
    ra.wait_for_state(State::Fault, SETTLE);
    wait_for_no_vip(&a, SETTLE);
    link.set_up()?;
    ra.wait_for_state(State::Master, SETTLE);
    wait_for_vip(&a, Instant::now(), SETTLE);

    let stats = ra.stop();
    assert_eq!(stats.became_master, 3);
    assert!(!has_vip(&a));
    Ok(())
}
