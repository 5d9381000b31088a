//! `keeplb run` with a `vrrp_sync_group`: each director runs VI_1 on eth0 and VI_2 on
//! eth1 in one group. Unplugging the master's eth1 puts VI_2 in FAULT, and the group puts
//! VI_1 in FAULT with it, so the backup director takes both VIPs; plugging it back brings
//! both back to the master. The master's VI_1 is `nopreempt` (all instances start in
//! BACKUP, as keepalived requires for it), so it only gets VI_1 back because the backup
//! director's group follows its VI_2 (preempted by the master's) to BACKUP. The group's
//! notify scripts see the group's transitions.

mod common;
use common::*;

use std::path::PathBuf;

use keeplb_testlab::{Host, Lab};

const VIP1: &str = "10.62.0.100";
const VIP2: &str = "10.64.0.100";

fn instance(name: &str, state: &str, interface: &str, vrid: u8, priority: u8, vip: &str) -> String {
    let nopreempt = if name == "VI_1" && priority == 150 {
        "    nopreempt\n"
    } else {
        ""
    };
    format!(
        "vrrp_instance {name} {{\n    state {state}\n    interface {interface}\n    virtual_router_id {vrid}\n    priority {priority}\n{nopreempt}    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {vip}/24\n    }}\n}}\n"
    )
}

fn config(lab: &Lab, name: &str, state: &str, priority: u8) -> PathBuf {
    let dir = lab.dir().display().to_string();
    let path = lab.dir().join(format!("{name}.conf"));
    let text = format!(
        "vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_2\n    }}\n    notify_master \"{dir}/state.sh {dir}/{name}.states MASTER\"\n    notify_backup \"{dir}/state.sh {dir}/{name}.states BACKUP\"\n    notify_fault \"{dir}/state.sh {dir}/{name}.states FAULT\"\n    notify_stop \"{dir}/state.sh {dir}/{name}.states STOP\"\n    notify \"{dir}/notify.sh {dir}/{name}.notify\"\n}}\n{}{}",
        instance("VI_1", state, "eth0", 62, priority, VIP1),
        instance("VI_2", state, "eth1", 64, priority, VIP2),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn holds_both(host: &Host) -> bool {
    holds(host, VIP1) && holds(host, VIP2)
}

fn holds_none(host: &Host) -> bool {
    !holds(host, VIP1) && !holds(host, VIP2)
}

#[test]
fn a_faulted_member_takes_its_sync_group_with_it() {
    let lab = Lab::new("run-sync-group").expect("lab (needs root and iproute2)");
    let dir = lab.dir().to_owned();
    write_script(&dir.join("state.sh"), "echo \"$2\" >> \"$1\"");
    write_script(&dir.join("notify.sh"), "f=$1; shift; echo \"$*\" >> \"$f\"");

    let lan = lab.switch("lan").expect("switch");
    let side = lab.switch("side").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.62.0.1/24"]).expect("link");
    let unplugged = one.attach(&side, "eth1", &["10.64.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.62.0.2/24"]).expect("link");
    two.attach(&side, "eth1", &["10.64.0.2/24"]).expect("link");
    let master_conf = config(&lab, "master", "BACKUP", 150);
    let backup_conf = config(&lab, "backup", "BACKUP", 100);
    let states = dir.join("master.states");
    let notify = dir.join("master.notify");

    let master = start(&one, &master_conf);
    let backup = start(&two, &backup_conf);
    wait_for("the master director takes both VIPs", &master, || {
        holds_both(&one) && read(&states) == "BACKUP\nMASTER\n"
    });
    assert!(holds_none(&two), "the backup holds no VIP");

    // eth1 unplugged: VI_2 goes to FAULT, and VI_1 with it although eth0 is fine.
    unplugged.set_down().expect("eth1 down");
    wait_for("the backup director takes both VIPs", &backup, || {
        holds_both(&two) && holds_none(&one)
    });
    wait_for("the group's notify_fault runs", &master, || {
        read(&states) == "BACKUP\nMASTER\nFAULT\n"
    });
    assert!(holds_none(&one), "VI_1 left MASTER with VI_2");

    // Plugged back: VI_2 preempts; the backup's VI_1 follows its VI_2 to BACKUP, which
    // lets the master's (nopreempt) VI_1 take over.
    unplugged.set_up().expect("eth1 up");
    wait_for("the master director takes both VIPs back", &master, || {
        holds_both(&one) && holds_none(&two)
    });
    wait_for("the backup's group notify_backup runs", &backup, || {
        read(&dir.join("backup.states")) == "BACKUP\nMASTER\nBACKUP\n"
    });
    let out = backup.output_so_far();
    assert!(
        out.stderr.contains("VI_1 follows to BACKUP")
            || out.stdout.contains("VI_1 follows to BACKUP"),
        "{out}"
    );
    wait_for("the group's notify_master runs again", &master, || {
        read(&states) == "BACKUP\nMASTER\nFAULT\nBACKUP\nMASTER\n"
    });

    stop(&master);
    assert_eq!(
        read(&states),
        "BACKUP\nMASTER\nFAULT\nBACKUP\nMASTER\nSTOP\n"
    );
    assert_eq!(
        read(&notify),
        "GROUP G BACKUP 0\nGROUP G MASTER 0\nGROUP G FAULT 0\nGROUP G BACKUP 0\nGROUP G MASTER 0\nGROUP G STOP 0\n"
    );
    wait_for(
        "the backup takes both VIPs after the resignation",
        &backup,
        || holds_both(&two),
    );
}
