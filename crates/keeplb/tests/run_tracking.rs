//! `keeplb run` with keepalived's tracking and notifications: the master tracks a
//! `vrrp_script` (weight −60) checking a flag file; removing the flag hands the VIP to the
//! backup (150 − 60 < 100), restoring it takes it back. Notify scripts and the notify FIFO
//! record every transition with keepalived's arguments and format. As in keepalived 2.x,
//! an instance configured `state MASTER` enters BACKUP first ("Entering BACKUP STATE
//! (init)"), so its notify_backup runs before its first notify_master.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use keeplb_testlab::{Host, Lab};

const VIP: &str = "10.62.0.100";

/// A director's configuration; `track` adds the flag-checking script to it.
fn config(lab: &Lab, name: &str, state: &str, priority: u8, track: bool) -> PathBuf {
    let dir = lab.dir().display().to_string();
    let path = lab.dir().join(format!("{name}.conf"));
    let (script, track_block) = if track {
        (
            format!(
                "vrrp_script chk {{\n    script \"{dir}/chk.sh\"\n    interval 1\n    weight -60\n    fall 1\n    rise 1\n}}\n"
            ),
            "    track_script {\n        chk\n    }\n".to_owned(),
        )
    } else {
        (String::new(), String::new())
    };
    let text = format!(
        "global_defs {{\n    vrrp_notify_fifo {dir}/{name}.fifo\n}}\n{script}vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 62\n    priority {priority}\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n{track_block}    notify_master \"{dir}/state.sh {dir}/{name}.states MASTER\"\n    notify_backup \"{dir}/state.sh {dir}/{name}.states BACKUP\"\n    notify_fault \"{dir}/state.sh {dir}/{name}.states FAULT\"\n    notify_stop \"{dir}/state.sh {dir}/{name}.states STOP\"\n    notify \"{dir}/notify.sh {dir}/{name}.notify\"\n}}\n"
    );
    std::fs::write(&path, text).expect("write config");
    // A regular file as the FIFO: the writer appends to it.
    std::fs::write(lab.dir().join(format!("{name}.fifo")), "").expect("create fifo file");
    path
}

#[test]
fn track_script_moves_the_vip_and_notify_scripts_see_every_transition() {
    let lab = Lab::new("run-tracking").expect("lab (needs root and iproute2)");
    let dir = lab.dir().to_owned();
    let flag = dir.join("flag");
    std::fs::write(&flag, "").expect("flag");
    write_script(&dir.join("chk.sh"), &format!("test -e {}", flag.display()));
    write_script(&dir.join("state.sh"), "echo \"$2\" >> \"$1\"");
    write_script(&dir.join("notify.sh"), "f=$1; shift; echo \"$*\" >> \"$f\"");

    let lan = lab.switch("lan").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.62.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.62.0.2/24"]).expect("link");
    let master_conf = config(&lab, "master", "MASTER", 150, true);
    let backup_conf = config(&lab, "backup", "BACKUP", 100, false);
    let states = dir.join("master.states");
    let notify = dir.join("master.notify");

    let master = start(&one, &master_conf);
    let backup = start(&two, &backup_conf);
    wait_for("the priority-150 director takes the VIP", &master, || {
        holds_vip_of(&one) && read(&states) == "BACKUP\nMASTER\n"
    });
    assert!(!holds_vip_of(&two), "exactly one master");

    // The check fails: 150 − 60 = 90 < 100, the backup preempts.
    std::fs::remove_file(&flag).expect("remove flag");
    wait_for(
        "the backup takes the VIP when the check fails",
        &backup,
        || holds_vip_of(&two) && !holds_vip_of(&one),
    );
    wait_for("notify_backup runs on the master", &master, || {
        read(&states) == "BACKUP\nMASTER\nBACKUP\n"
    });

    // The check succeeds again: 150 > 100, the master preempts back.
    std::fs::write(&flag, "").expect("restore flag");
    wait_for("the master takes the VIP back", &master, || {
        holds_vip_of(&one) && !holds_vip_of(&two)
    });
    wait_for("notify_master runs again", &master, || {
        read(&states) == "BACKUP\nMASTER\nBACKUP\nMASTER\n"
    });

    // SIGTERM: notify_stop runs before keeplb exits.
    stop(&master);
    assert_eq!(read(&states), "BACKUP\nMASTER\nBACKUP\nMASTER\nSTOP\n");
    assert_eq!(
        read(&notify),
        "INSTANCE VI_1 BACKUP 150\nINSTANCE VI_1 MASTER 150\nINSTANCE VI_1 BACKUP 90\nINSTANCE VI_1 MASTER 150\nINSTANCE VI_1 STOP 150\n"
    );
    assert_eq!(
        read(&dir.join("master.fifo")),
        "INSTANCE \"VI_1\" BACKUP 150\nINSTANCE \"VI_1\" MASTER 150\nINSTANCE \"VI_1\" BACKUP 90\nINSTANCE \"VI_1\" MASTER 150\nINSTANCE \"VI_1\" STOP 150\n"
    );
    wait_for(
        "the backup takes over after the resignation",
        &backup,
        || holds_vip_of(&two),
    );
}

#[test]
fn insecure_script_is_refused_and_track_interface_faults_the_master() {
    let lab = Lab::new("run-track-intf").expect("lab (needs root and iproute2)");
    let dir = lab.dir().to_owned();
    // World-writable: refused with enable_script_security. It would fail (and cost the
    // master 60) if it ran.
    let chk = dir.join("chk.sh");
    write_script(&chk, "exit 1");
    std::fs::set_permissions(&chk, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let lan = lab.switch("lan").expect("switch");
    let side = lab.switch("side").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.62.0.1/24"]).expect("link");
    let uplink = one.attach(&side, "eth1", &["10.64.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.62.0.2/24"]).expect("link");

    let master_conf = dir.join("master.conf");
    std::fs::write(
        &master_conf,
        format!(
            "global_defs {{\n    enable_script_security\n}}\nvrrp_script chk {{\n    script \"{}\"\n    interval 1\n    weight -60\n    fall 1\n    rise 1\n}}\nvrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 62\n    priority 150\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n    track_script {{\n        chk\n    }}\n    track_interface {{\n        eth1\n    }}\n}}\n",
            chk.display()
        ),
    )
    .expect("write config");
    let backup_conf = dir.join("backup.conf");
    std::fs::write(
        &backup_conf,
        format!(
            "vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 62\n    priority 100\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
        ),
    )
    .expect("write config");

    let master = start(&one, &master_conf);
    let backup = start(&two, &backup_conf);
    let refused = format!(
        "vrrp_script chk disabled: script `{}` is insecure",
        chk.display()
    );
    wait_for(
        "the insecure script is refused, naming the file",
        &master,
        || {
            let out = master.output_so_far();
            out.stdout.contains(&refused) || out.stderr.contains(&refused)
        },
    );
    let out = master.output_so_far();
    assert!(
        out.stderr.contains("writable by everyone") || out.stdout.contains("writable by everyone"),
        "{out}"
    );
    wait_for("the master runs without the script", &master, || {
        holds_vip_of(&one) && !holds_vip_of(&two)
    });

    // track_interface with weight 0: the tracked interface going down means FAULT.
    uplink.set_down().expect("eth1 down");
    wait_for(
        "the backup takes over from the faulted master",
        &backup,
        || holds_vip_of(&two) && !holds_vip_of(&one),
    );
    uplink.set_up().expect("eth1 up");
    wait_for("the master takes the VIP back", &master, || {
        holds_vip_of(&one) && !holds_vip_of(&two)
    });

    stop(&master);
}

fn holds_vip_of(host: &Host) -> bool {
    holds(host, VIP)
}
