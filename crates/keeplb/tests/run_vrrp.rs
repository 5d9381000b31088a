//! `keeplb run` as a user runs it: two directors in network namespaces share a VIP from an
//! unmodified keepalived.conf; the master is SIGKILLed, restarted, and stopped cleanly.

mod common;
use common::*;

use std::path::PathBuf;

use keeplb_testlab::{Host, Lab, Signal};

const VIP: &str = "10.61.0.100";

fn config(lab: &Lab, name: &str, state: &str, priority: u8) -> PathBuf {
    let path = lab.dir().join(format!("{name}.conf"));
    let text = format!(
        "vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 61\n    priority {priority}\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn master_failover_recovery_and_clean_stop() {
    let lab = Lab::new("run-vrrp").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.61.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.61.0.2/24"]).expect("link");
    let master_conf = config(&lab, "master", "MASTER", 150);
    let backup_conf = config(&lab, "backup", "BACKUP", 100);

    let master = start(&one, &master_conf);
    let backup = start(&two, &backup_conf);
    wait_for("the priority-150 director takes the VIP", &master, || {
        holds_vip_of(&one)
    });
    assert!(!holds_vip_of(&two), "exactly one master");

    // SIGKILL: no resignation, the VIP stays behind on the dead master's interface.
    master.kill().expect("kill the master");
    wait_for("the backup takes over", &backup, || holds_vip_of(&two));
    assert!(
        holds_vip_of(&one),
        "a SIGKILLed keeplb cannot remove its VIP"
    );

    // Restarted, it first removes the VIP the killed run left, then preempts back.
    let master = start(&one, &master_conf);
    wait_for("the master preempts back", &master, || {
        holds_vip_of(&one) && !holds_vip_of(&two)
    });

    // SIGTERM: the master resigns (priority 0) and removes its VIP; the backup takes over.
    master.signal(Signal::SIGTERM).expect("SIGTERM");
    wait_for("the master removes its VIP on SIGTERM", &master, || {
        !holds_vip_of(&one)
    });
    wait_for(
        "the backup takes over after the resignation",
        &backup,
        || holds_vip_of(&two),
    );
    let status = master
        .wait_timeout(TIMEOUT)
        .expect("wait for keeplb")
        .expect("keeplb exits after SIGTERM");
    assert!(status.success(), "{}", master.output_so_far());
}

#[test]
fn demo_reports_an_outage_within_the_master_down_interval() {
    let out = std::process::Command::new(KEEPLB)
        .args(["demo", "--vrrp-version", "3", "--advert-int", "0.2"])
        .output()
        .expect("run keeplb demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outage_ms: u64 = stdout
        .split("could not reach 10.63.0.100 for ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no outage line in:\n{stdout}"));
    // Master_Down is 720 ms at 0.2 s; the probes add up to 70 ms of granularity.
    assert!(outage_ms < 720 + 200, "outage {outage_ms} ms\n{stdout}");
    assert!(
        stdout.contains("dir2: ") && stdout.contains("10.63.0.100/24"),
        "{stdout}"
    );
}

fn holds_vip_of(host: &Host) -> bool {
    holds(host, VIP)
}
