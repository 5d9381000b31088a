//! `vrrp_notify_fifo_script` and `vrrp_notify_priority_changes`: keepalived creates the
//! FIFO, starts the script once with the FIFO's path as its last argument and lets it
//! read; with priority notifications on, every change of the effective priority (here a
//! `track_file` with weight 10) writes `INSTANCE "VI_1" MASTER_PRIORITY N`. At shutdown
//! the script gets SIGTERM before anything else happens (so it never reads the STOP
//! line), and the FIFO keepalived created is removed. The same test runs real keepalived
//! and requires the same lines.

mod common;
use common::*;

use std::path::Path;

use keeplb_testlab::{Host, Lab, Process, Signal};

const VIP: &str = "10.62.0.100";

fn fifo_script(name: &str, start_director: impl Fn(&Host, &Path) -> Process) {
    let lab = Lab::new(name).expect("lab (needs root and iproute2)");
    let dir = lab.dir().to_owned();
    let lan = lab.switch("lan").expect("switch");
    let director = lab.host("dir").expect("host");
    director
        .attach(&lan, "eth0", &["10.62.0.1/24"])
        .expect("link");
    let fifo = dir.join("vrrp.fifo");
    let lines = dir.join("lines");
    let track = dir.join("tf");
    std::fs::write(&track, "0\n").expect("track file");
    write_script(
        &dir.join("reader.sh"),
        "out=$1; fifo=$2\ntrap 'echo TERM >> \"$out\"; exit' TERM\nwhile read -r line; do echo \"$line\" >> \"$out\"; done < \"$fifo\"\necho EOF >> \"$out\"",
    );
    let conf = dir.join("director.conf");
    let text = format!(
        "global_defs {{\n    vrrp_notify_fifo {fifo}\n    vrrp_notify_fifo_script \"{dir}/reader.sh {lines}\"\n    vrrp_notify_priority_changes\n}}\ntrack_file tf {{\n    file {track}\n    weight 10\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 62\n    priority 100\n    version 3\n    advert_int 0.2\n    track_file {{\n        tf\n    }}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n",
        fifo = fifo.display(),
        dir = dir.display(),
        lines = lines.display(),
        track = track.display(),
    );
    std::fs::write(&conf, text).expect("write config");

    let daemon = start_director(&director, &conf);
    let line = |l: &str| format!("INSTANCE \"VI_1\" {l}\n");
    let so_far = |parts: &[&str]| parts.iter().map(|p| line(p)).collect::<String>();
    wait_for("the script reads MASTER", &daemon, || {
        read(&lines) == so_far(&["BACKUP 100", "MASTER 100"])
    });
    assert!(holds(&director, VIP));
    std::fs::write(&track, "1\n").expect("track file");
    wait_for("the priority rises to 110", &daemon, || {
        read(&lines) == so_far(&["BACKUP 100", "MASTER 100", "MASTER_PRIORITY 110"])
    });
    std::fs::write(&track, "0\n").expect("track file");
    let changed = [
        "BACKUP 100",
        "MASTER 100",
        "MASTER_PRIORITY 110",
        "MASTER_PRIORITY 100",
    ];
    wait_for("the priority falls back to 100", &daemon, || {
        read(&lines) == so_far(&changed)
    });

    daemon.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = daemon.wait_timeout(TIMEOUT).expect("wait").expect("exits");
    assert!(status.success(), "{}", daemon.output_so_far());
    // keepalived terminates the script first: it sees SIGTERM, not the STOP line.
    wait_for("the script gets SIGTERM", &daemon, || {
        read(&lines).ends_with("TERM\n")
    });
    let mut all = so_far(&changed);
    all.push_str("TERM\n");
    assert_eq!(read(&lines), all);
    assert!(!fifo.exists(), "the FIFO it created is removed");
}

#[test]
fn the_fifo_script_reads_every_line_priority_changes_included() {
    fifo_script("run-fifo-script", start);
}

#[test]
fn keepalived_writes_the_same_lines() {
    fifo_script("run-fifo-script-ka", |host, conf| {
        host.spawn_keepalived(conf).expect("spawn keepalived")
    });
}
