//! Reload (SIGHUP) of the VRRP part, in network namespaces: two directors run two
//! instances; both change one of them (a second VIP: peers must agree on the address
//! list) and the master adds a third. The unchanged instance makes no transition on
//! either director (keepalived keeps it too), the changed one gets its new VIP without
//! its peer noticing (the master restarts as master within the peer's
//! Master_Down_Interval), the new one starts; a second reload removes the new instance
//! again and its VIP goes.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use keeplb_testlab::{Host, Lab, Process, Signal};

const VIP1: &str = "10.65.0.100";
const VIP2: &str = "10.65.0.101";
const VIP2_ADDED: &str = "10.65.0.102";
const VIP3: &str = "10.65.0.103";

fn instance(name: &str, vrid: u8, priority: u8, vips: &[&str]) -> String {
    let vips: String = vips.iter().map(|v| format!("        {v}/24\n")).collect();
    format!(
        "vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority {priority}\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n{vips}    }}\n}}\n"
    )
}

/// How many transitions `process` has logged for `instance` so far.
fn transitions(process: &Process, instance: &str) -> usize {
    // The name is the only quoted value of those lines (and colours do not split it).
    let tag = format!("\"{instance}\"");
    process
        .output_so_far()
        .stderr
        .lines()
        .filter(|line| line.contains("entering") && line.contains(&tag))
        .count()
}

/// Sends SIGHUP and waits for `process`'s `n`th "applied" line.
fn reload(process: &Process, n: usize) {
    process.signal(Signal::SIGHUP).expect("SIGHUP");
    wait_for("the reload is applied", process, || {
        process
            .output_so_far()
            .stderr
            .matches("conf applied")
            .count()
            >= n
    });
}

/// A lab with one director (`dir1`) on a LAN at `address`, and where its configuration
/// goes.
fn one_director(test: &str, address: &str) -> (Lab, Host, PathBuf) {
    let lab = Lab::new(test).expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let one = lab.host("dir1").expect("host");
    one.attach(&lan, "eth0", &[address]).expect("link");
    let conf = lab.dir().join("dir1.conf");
    (lab, one, conf)
}

/// Looks for a VIP on a host every [`POLL`] in a thread, counting the polls that miss it.
struct VipWatch {
    watching: Arc<AtomicBool>,
    missing: Arc<AtomicUsize>,
    thread: thread::JoinHandle<()>,
}

impl VipWatch {
    fn start(host: &Host, vip: &'static str) -> Self {
        let watching = Arc::new(AtomicBool::new(true));
        let missing = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (watching, missing) = (Arc::clone(&watching), Arc::clone(&missing));
            let host = host.clone();
            thread::spawn(move || {
                // Bounded: the tests end well within this.
                for _ in 0..3000 {
                    if !watching.load(Ordering::Relaxed) {
                        return;
                    }
                    if !holds(&host, vip) {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::sleep(POLL);
                }
            })
        };
        VipWatch {
            watching,
            missing,
            thread,
        }
    }

    /// Stops looking; how many polls missed the VIP.
    fn stop(self) -> usize {
        self.watching.store(false, Ordering::Relaxed);
        self.thread.join().expect("watcher");
        self.missing.load(Ordering::Relaxed)
    }
}

/// `keeplb status` of the daemon started with `conf`: the line of `instance`.
fn status_line(conf: &Path, instance: &str) -> String {
    let out = std::process::Command::new(KEEPLB)
        .args(["status", "--control"])
        .arg(conf.with_extension("sock"))
        .output()
        .expect("keeplb status");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let prefix = format!("{instance} ");
    text.lines()
        .find(|l| l.trim_start().starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {instance} in:\n{text}"))
        .to_owned()
}

#[test]
fn reload_keeps_unchanged_instances_and_applies_the_others() {
    let lab = Lab::new("run-vrrp-reload").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.65.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.65.0.2/24"]).expect("link");
    let master_conf = lab.dir().join("dir1.conf");
    let backup_conf = lab.dir().join("dir2.conf");
    let vi1 = |p| instance("VI_1", 65, p, &[VIP1]);
    // The master's VI_2 notifies its states ("$3" of `notify`).
    let states = lab.dir().join("vi2.states");
    let script = lab.dir().join("notify.sh");
    write_script(&script, &format!("echo \"$3\" >> {}", states.display()));
    let master_vi2 = |vips: &[&str]| {
        instance("VI_2", 66, 150, vips).replace(
            "    state BACKUP\n",
            &format!("    state BACKUP\n    notify {}\n", script.display()),
        )
    };
    write_config(
        &master_conf,
        &format!("{}{}", vi1(150), master_vi2(&[VIP2])),
    );
    write_config(
        &backup_conf,
        &format!("{}{}", vi1(100), instance("VI_2", 66, 100, &[VIP2])),
    );

    let master = start(&one, &master_conf);
    let backup = start(&two, &backup_conf);
    wait_for("the master takes both VIPs", &master, || {
        holds(&one, VIP1) && holds(&one, VIP2) && !holds(&two, VIP1) && !holds(&two, VIP2)
    });
    wait_for("VI_2 notifies BACKUP then MASTER", &master, || {
        read(&states) == "BACKUP\nMASTER\n"
    });
    // VI_1 must hold its VIP on director one through both reloads.
    let watcher = VipWatch::start(&one, VIP1);
    let vi1_before = (transitions(&master, "VI_1"), transitions(&backup, "VI_1"));
    // The count sees the transitions made so far (INIT to BACKUP to MASTER; to BACKUP).
    assert!(vi1_before.0 >= 2 && vi1_before.1 >= 1, "{vi1_before:?}");

    // VI_1 unchanged, VI_2 gets a second VIP (on both), VI_3 is new (on the master).
    write_config(
        &backup_conf,
        &format!(
            "{}{}",
            vi1(100),
            instance("VI_2", 66, 100, &[VIP2, VIP2_ADDED])
        ),
    );
    let vi2_backup = transitions(&backup, "VI_2");
    reload(&backup, 1);
    wait_for("the backup's VI_2 restarts as BACKUP", &backup, || {
        transitions(&backup, "VI_2") == vi2_backup + 1
    });
    write_config(
        &master_conf,
        &format!(
            "{}{}{}",
            vi1(150),
            master_vi2(&[VIP2, VIP2_ADDED]),
            instance("VI_3", 67, 150, &[VIP3])
        ),
    );
    reload(&master, 1);
    wait_for("VI_2's new VIP and VI_3's VIP appear", &master, || {
        holds(&one, VIP2) && holds(&one, VIP2_ADDED) && holds(&one, VIP3)
    });
    let vi2_after_first = transitions(&master, "VI_2");

    // VI_3 removed: its VIP goes; VI_1 and VI_2 are unchanged this time.
    write_config(
        &master_conf,
        &format!("{}{}", vi1(150), master_vi2(&[VIP2, VIP2_ADDED])),
    );
    reload(&master, 2);
    wait_for("VI_3's VIP goes", &master, || !holds(&one, VIP3));
    wait_for("VI_3 stops", &master, || {
        master
            .output_so_far()
            .stderr
            .contains("vrrp_instance VI_3 stopped")
    });
    // Longer than the Master_Down_Interval (0.6 s + skew): a missed advertisement
    // would have shown on the backup.
    thread::sleep(Duration::from_secs(1));
    let missing = watcher.stop();

    assert_eq!(
        (transitions(&master, "VI_1"), transitions(&backup, "VI_1")),
        vi1_before,
        "VI_1 was unchanged: no transition on either director\n{}\n{}",
        master.output_so_far(),
        backup.output_so_far()
    );
    assert_eq!(missing, 0, "VI_1's VIP left director one");
    // The master's VI_2 restarted as MASTER within the backup's Master_Down_Interval.
    assert_eq!(
        transitions(&backup, "VI_2"),
        vi2_backup + 1,
        "the backup's VI_2 saw no change of master\n{}",
        backup.output_so_far()
    );
    assert!(!holds(&two, VIP2) && !holds(&two, VIP2_ADDED));
    assert_eq!(
        transitions(&master, "VI_2"),
        vi2_after_first,
        "the second reload left VI_2 alone"
    );
    assert!(holds(&one, VIP2) && holds(&one, VIP2_ADDED) && holds(&one, VIP1));
    // keepalived keeps a reloaded instance's state and notifies nothing; so does keeplb.
    assert_eq!(
        read(&states),
        "BACKUP\nMASTER\n",
        "VI_2's restart notified nothing"
    );
    // The status shows each transition's cause and the master's address.
    let line = status_line(&master_conf, "VI_1");
    assert!(
        line.contains("MASTER")
            && line.contains("master 10.65.0.1")
            && line.contains("BACKUP -> MASTER (master_down)"),
        "{line}"
    );
    let line = status_line(&backup_conf, "VI_1");
    assert!(
        line.contains("master 10.65.0.1") && line.contains("-> BACKUP ("),
        "{line}"
    );
    let line = status_line(&backup_conf, "VI_2");
    assert!(line.contains("INIT -> BACKUP (startup)"), "{line}");
    stop(&master);
    stop(&backup);
}

/// A reload that changes a master's priority (150 to 170) keeps its VIP throughout, as
/// keepalived does (it keeps a reloaded master's state and addresses): polled every
/// 20 ms, the VIP never leaves, no stale address is removed and the instance resumes
/// as MASTER straight away, without passing through BACKUP.
#[test]
fn a_reloaded_master_keeps_its_vip_throughout() {
    // The lab lives (and its namespaces with it) until the end of the test.
    let (_lab, one, conf) = one_director("run-vrrp-reload-master", "10.66.0.1/24");
    write_config(&conf, &instance("VI_1", 70, 150, &[VIP1]));
    let master = start(&one, &conf);
    wait_for("the master takes its VIP", &master, || holds(&one, VIP1));
    let before = transitions(&master, "VI_1");
    let watcher = VipWatch::start(&one, VIP1);
    write_config(&conf, &instance("VI_1", 70, 170, &[VIP1]));
    reload(&master, 1);
    wait_for("VI_1 restarts", &master, || {
        transitions(&master, "VI_1") > before
    });
    // Longer than the old way's gap (an interval and its skew).
    thread::sleep(Duration::from_secs(1));
    let missing = watcher.stop();

    let log = master.output_so_far().stderr;
    assert_eq!(missing, 0, "the VIP left during the reload\n{log}");
    assert!(holds(&one, VIP1));
    assert!(!log.contains("removing stale virtual address"), "{log}");
    // One transition, straight back to MASTER.
    assert_eq!(transitions(&master, "VI_1"), before + 1, "{log}");
    let line = status_line(&conf, "VI_1");
    assert!(
        line.contains("MASTER") && line.contains("INIT -> MASTER (reload)"),
        "{line}"
    );
    stop(&master);
}

/// A reload that replaces a master's address: the new one is added and the old one
/// removed while the instance stays MASTER (keepalived's `clear_diff_vrrp_vip`), with
/// no resignation a peer would act on.
#[test]
fn a_reloaded_master_swaps_its_addresses_without_resigning() {
    let (_lab, one, conf) = one_director("run-vrrp-reload-swap", "10.68.0.1/24");
    write_config(&conf, &instance("VI_1", 73, 150, &[VIP1]));
    let master = start(&one, &conf);
    wait_for("the master takes its VIP", &master, || holds(&one, VIP1));
    let before = transitions(&master, "VI_1");
    write_config(&conf, &instance("VI_1", 73, 150, &[VIP2]));
    reload(&master, 1);
    wait_for("the new address replaces the old one", &master, || {
        holds(&one, VIP2) && !holds(&one, VIP1)
    });
    let log = master.output_so_far().stderr;
    assert_eq!(transitions(&master, "VI_1"), before + 1, "{log}");
    assert!(
        log.contains("VI_1: restarting with its new configuration")
            && !log.contains("VI_1: stopping"),
        "restarted quietly, not resigned\n{log}"
    );
    let line = status_line(&conf, "VI_1");
    assert!(line.contains("INIT -> MASTER (reload)"), "{line}");
    stop(&master);
}

/// A reload changing only a VIP's prefix replaces the address once: no error for a
/// second removal, no warning about a stale address.
#[test]
fn a_reloaded_master_changes_a_vip_prefix_in_one_step() {
    let (_lab, one, conf) = one_director("run-vrrp-reload-prefix", "10.69.0.1/24");
    write_config(&conf, &instance("VI_1", 74, 150, &[VIP1]));
    let master = start(&one, &conf);
    wait_for("the master takes its VIP", &master, || holds(&one, VIP1));
    write_config(
        &conf,
        &instance("VI_1", 74, 150, &[VIP1]).replace("/24", "/25"),
    );
    reload(&master, 1);
    let with_new_prefix = format!("{VIP1}/25");
    wait_for("the VIP has its new prefix", &master, || {
        one.run(&["ip", "-o", "addr", "show", "dev", "eth0"])
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(&with_new_prefix))
    });
    let log = master.output_so_far().stderr;
    assert!(
        log.contains("removing a virtual address the new configuration no longer has"),
        "{log}"
    );
    for wrong in ["removing VIP", "removing stale virtual address", "ERROR"] {
        assert!(!log.contains(wrong), "{wrong}\n{log}");
    }
    stop(&master);
}

/// The same for a `vrrp_sync_group` whose members are all MASTER: a reload changing one
/// member's priority keeps both VIPs throughout, the members resume as MASTER straight
/// away, and the group, MASTER again at once as with keepalived, notifies nothing.
#[test]
fn a_reloaded_master_sync_group_keeps_its_vips_throughout() {
    let (lab, one, conf) = one_director("run-vrrp-reload-group", "10.67.0.1/24");
    let states = lab.dir().join("group.states");
    let script = lab.dir().join("notify.sh");
    write_script(&script, &format!("echo \"$3\" >> {}", states.display()));
    let text = |priority: u8| {
        format!(
            "vrrp_sync_group G {{\n    group {{\n        VI_1\n        VI_2\n    }}\n    notify {}\n}}\n{}{}",
            script.display(),
            instance("VI_1", 71, priority, &[VIP1]),
            instance("VI_2", 72, 150, &[VIP2])
        )
    };
    write_config(&conf, &text(150));
    let master = start(&one, &conf);
    wait_for("the group takes both VIPs", &master, || {
        holds(&one, VIP1) && holds(&one, VIP2)
    });
    wait_for("the group notifies MASTER", &master, || {
        read(&states).ends_with("MASTER\n")
    });
    let notified = read(&states);
    let before = (transitions(&master, "VI_1"), transitions(&master, "VI_2"));

    let first = VipWatch::start(&one, VIP1);
    let second = VipWatch::start(&one, VIP2);
    write_config(&conf, &text(170));
    reload(&master, 1);
    wait_for("both members restart", &master, || {
        transitions(&master, "VI_1") > before.0 && transitions(&master, "VI_2") > before.1
    });
    // Longer than the old way's gap (an interval and its skew) and the group's wait.
    thread::sleep(Duration::from_secs(1));
    let missing = (first.stop(), second.stop());

    let log = master.output_so_far().stderr;
    assert_eq!(missing, (0, 0), "a VIP left during the reload\n{log}");
    assert_eq!(
        (transitions(&master, "VI_1"), transitions(&master, "VI_2")),
        (before.0 + 1, before.1 + 1),
        "{log}"
    );
    assert_eq!(read(&states), notified, "the group notified its restart");
    stop(&master);
}
