//! `keeplb run` with a `vrrp_sync_group`: each director runs VI_1 on eth0 and VI_2 on
//! eth1 in one group.
//!
//! - Unplugging the master's eth1 puts VI_2 in FAULT, and the group puts VI_1 in FAULT
//!   with it, so the backup director takes both VIPs; plugging it back brings both back
//!   to the master (both its members preempt, so the group goes MASTER as one, and the
//!   backup director's group follows its beaten members to BACKUP). The group's notify
//!   scripts see the group's transitions.
//! - keepalived's `vrrp_sync_can_goto_master`: with priorities that differ between
//!   members, a member that could preempt on its own waits while another member of its
//!   group is held by a better master, so the group does not split across directors. The
//!   same test runs real keepalived in that director's place and requires the same.

mod common;
use common::*;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keeplb_testlab::{Host, Lab, Process};

const VIP1: &str = "10.62.0.100";
const VIP2: &str = "10.64.0.100";

fn instance(name: &str, interface: &str, vrid: u8, priority: u8, vip: &str) -> String {
    format!(
        "vrrp_instance {name} {{\n    state BACKUP\n    interface {interface}\n    virtual_router_id {vrid}\n    priority {priority}\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {vip}/24\n    }}\n}}\n"
    )
}

/// The configuration of director `name`: group G of VI_1 (`priorities.0`) and VI_2
/// (`priorities.1`), whose notify scripts log the group's states.
fn config(lab: &Lab, name: &str, priorities: (u8, u8)) -> PathBuf {
    config_with(lab, name, priorities, "", "")
}

/// [`config`] with `top` before the group and `in_group` added to the group's block.
fn config_with(lab: &Lab, name: &str, priorities: (u8, u8), top: &str, in_group: &str) -> PathBuf {
    let dir = lab.dir().display().to_string();
    let path = lab.dir().join(format!("{name}.conf"));
    let text = format!(
        "{top}vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_2\n    }}\n{in_group}    notify_master \"{dir}/state.sh {dir}/{name}.states MASTER\"\n    notify_backup \"{dir}/state.sh {dir}/{name}.states BACKUP\"\n    notify_fault \"{dir}/state.sh {dir}/{name}.states FAULT\"\n    notify_stop \"{dir}/state.sh {dir}/{name}.states STOP\"\n    notify \"{dir}/notify.sh {dir}/{name}.notify\"\n}}\n{}{}",
        instance("VI_1", "eth0", 62, priorities.0, VIP1),
        instance("VI_2", "eth1", 64, priorities.1, VIP2),
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

/// A lab of two directors on two switches (eth0: 10.62.0.0/24, eth1: 10.64.0.0/24),
/// with the notify scripts written; the link of director one's eth1 is returned.
fn lab(name: &str) -> (Lab, Host, Host, keeplb_testlab::Link) {
    let lab = Lab::new(name).expect("lab (needs root and iproute2)");
    let dir = lab.dir().to_owned();
    write_script(&dir.join("state.sh"), "echo \"$2\" >> \"$1\"");
    write_script(&dir.join("notify.sh"), "f=$1; shift; echo \"$*\" >> \"$f\"");
    let lan = lab.switch("lan").expect("switch");
    let side = lab.switch("side").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.62.0.1/24"]).expect("link");
    let link = one.attach(&side, "eth1", &["10.64.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.62.0.2/24"]).expect("link");
    two.attach(&side, "eth1", &["10.64.0.2/24"]).expect("link");
    (lab, one, two, link)
}

#[test]
fn a_faulted_member_takes_its_sync_group_with_it() {
    let (lab, one, two, unplugged) = lab("run-sync-group");
    let dir = lab.dir().to_owned();
    let master_conf = config(&lab, "master", (150, 150));
    let backup_conf = config(&lab, "backup", (100, 100));
    let states = dir.join("master.states");
    let notify = dir.join("master.notify");

    // The backup starts once the master is master: started together, either may time
    // out first (process start-up under load), and the backup's brief mastership would
    // be one more transition in its notify log.
    let master = start(&one, &master_conf);
    wait_for("the master director takes both VIPs", &master, || {
        holds_both(&one) && read(&states) == "BACKUP\nMASTER\n"
    });
    let backup = start(&two, &backup_conf);
    wait_for("the backup's group enters BACKUP", &backup, || {
        read(&dir.join("backup.states")) == "BACKUP\n"
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

    // Plugged back: both members preempt, so the group goes MASTER as one; the backup's
    // group follows the first of its members beaten to BACKUP.
    unplugged.set_up().expect("eth1 up");
    wait_for("the master director takes both VIPs back", &master, || {
        holds_both(&one) && holds_none(&two)
    });
    wait_for("the backup's group notify_backup runs", &backup, || {
        read(&dir.join("backup.states")) == "BACKUP\nMASTER\nBACKUP\n"
    });
    let out = backup.output_so_far();
    assert!(
        out.stderr.contains("follows to BACKUP") || out.stdout.contains("follows to BACKUP"),
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

/// Director two is master of both (priority 120 each); director one then starts with
/// VI_1 at 150 (it would preempt) and VI_2 at 100 (it cannot). `start_one` starts
/// director one's daemon: keeplb, or keepalived as the reference.
/// Returns director one's output.
fn no_split(
    name: &str,
    start_one: impl Fn(&Host, &std::path::Path) -> Process,
) -> keeplb_testlab::CapturedOutput {
    let (lab, one, two, _) = lab(name);
    let dir = lab.dir().to_owned();
    let one_conf = config(&lab, "one", (150, 100));
    let two_conf = config(&lab, "two", (120, 120));
    let two_states = dir.join("two.states");

    let second = start(&two, &two_conf);
    wait_for("director two takes both VIPs", &second, || {
        holds_both(&two) && read(&two_states) == "BACKUP\nMASTER\n"
    });
    let first = start_one(&one, &one_conf);
    wait_for("director one's group enters BACKUP", &first, || {
        read(&dir.join("one.states")) == "BACKUP\n"
    });
    // Three seconds are more than three Master_Down_Intervals of director one's VI_1
    // (0.6 s + skew): without the group rule it would have taken VIP1 long before.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(3) {
        assert!(
            holds_both(&two) && holds_none(&one),
            "the group split after {:?}\n{}\n{}",
            watched.elapsed(),
            first.output_so_far(),
            second.output_so_far()
        );
        std::thread::sleep(POLL);
    }
    assert_eq!(read(&dir.join("one.states")), "BACKUP\n");
    assert_eq!(read(&two_states), "BACKUP\nMASTER\n");
    first
        .signal(keeplb_testlab::Signal::SIGTERM)
        .expect("SIGTERM");
    first.wait_timeout(TIMEOUT).expect("wait").expect("exits");
    stop(&second);
    first.output_so_far()
}

#[test]
fn a_member_that_could_preempt_waits_for_its_group() {
    let out = no_split("run-sync-nosplit", start);
    let held = "waiting in backup until every member of its sync group can";
    assert!(
        out.stderr.contains(held) || out.stdout.contains(held),
        "{out}"
    );
}

#[test]
fn keepalived_holds_the_same_member_back() {
    no_split("run-sync-nosplit-ka", |host, conf| {
        host.spawn_keepalived(conf).expect("spawn keepalived")
    });
}

/// The group's own `track_file` (weight 50) applies to both members: writing 1 into it
/// raises director one's two instances from 100 to 150, above director two's 120, so
/// director one's group takes both VIPs; writing 0 gives them back.
fn group_tracking(name: &str, start_one: impl Fn(&Host, &std::path::Path) -> Process) {
    let (lab, one, two, _) = lab(name);
    let dir = lab.dir().to_owned();
    let flag = dir.join("flag");
    std::fs::write(&flag, "0\n").expect("track file");
    let top = format!(
        "track_file flag {{\n    file {}\n    weight 50\n}}\n",
        flag.display()
    );
    let in_group = "    track_file {\n        flag\n    }\n";
    let one_conf = config_with(&lab, "one", (100, 100), &top, in_group);
    let two_conf = config(&lab, "two", (120, 120));

    let second = start(&two, &two_conf);
    wait_for("director two takes both VIPs", &second, || holds_both(&two));
    let first = start_one(&one, &one_conf);
    wait_for("director one's group enters BACKUP", &first, || {
        read(&dir.join("one.states")) == "BACKUP\n"
    });
    assert!(holds_none(&one));

    std::fs::write(&flag, "1\n").expect("track file");
    wait_for("director one takes both VIPs", &first, || {
        holds_both(&one) && holds_none(&two)
    });
    wait_for("director one's group is MASTER", &first, || {
        read(&dir.join("one.states")) == "BACKUP\nMASTER\n"
    });

    std::fs::write(&flag, "0\n").expect("track file");
    wait_for("director two takes both VIPs back", &second, || {
        holds_both(&two) && holds_none(&one)
    });
    first
        .signal(keeplb_testlab::Signal::SIGTERM)
        .expect("SIGTERM");
    first.wait_timeout(TIMEOUT).expect("wait").expect("exits");
    stop(&second);
    assert_eq!(
        read(&dir.join("one.states")),
        "BACKUP\nMASTER\nBACKUP\nSTOP\n"
    );
}

#[test]
fn the_groups_track_file_weighs_on_every_member() {
    group_tracking("run-sync-track", start);
}

#[test]
fn keepalived_weighs_the_groups_track_file_on_every_member() {
    group_tracking("run-sync-track-ka", |host, conf| {
        host.spawn_keepalived(conf).expect("spawn keepalived")
    });
}
