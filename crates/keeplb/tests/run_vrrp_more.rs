//! More of `keeplb run` in network namespaces: `virtual_ipaddress` options (label, scope,
//! brd, noprefixroute, dev) as `ip -d addr` shows them, `nopreempt`, unicast peers, and
//! interoperability with keepalived (VRRPv2 with PASS authentication, and unicast).
//!
//! Every wait polls observable state (addresses, keepalived's log) with a deadline; the
//! only fixed-length waits are observation windows in which something must *not* happen,
//! each longer than the Master_Down_Interval it guards.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keeplb_testlab::{Host, Lab, Process, Signal, wait_until};

/// VRRPv3 at 0.2 s: Master_Down_Interval is at most 0.6 s + 0.2 s = 0.8 s.
const WINDOW_V3: Duration = Duration::from_millis(1500);
/// VRRPv2 at 1 s: Master_Down_Interval is at most 3 s + 1 s = 4 s (3.61 s for priority 100).
const WINDOW_V2: Duration = Duration::from_millis(4200);

/// A keepalived.conf with one `vrrp_instance VI_1` on eth0 made of `body` lines.
fn write_conf(lab: &Lab, name: &str, global: &str, body: &str) -> PathBuf {
    let path = lab.dir().join(format!("{name}.conf"));
    let text = format!(
        "global_defs {{\n    router_id {name}\n{global}}}\nvrrp_instance VI_1 {{\n    interface eth0\n{body}}}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// keepalived in the foreground, logging to the console, VRRP only.
fn start_keepalived(host: &Host, conf: &Path) -> Process {
    host.spawn_keepalived(conf).expect("spawn keepalived")
}

/// Whether `needle` is in the process's output (colour escapes removed).
fn logged(process: &Process, needle: &str) -> bool {
    let out = process.output_so_far();
    strip_ansi(&out.stdout).contains(needle) || strip_ansi(&out.stderr).contains(needle)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Watches for `window`: panics if `bad` becomes true in that time.
fn stays(what: &str, process: &Process, window: Duration, mut bad: impl FnMut() -> bool) {
    if wait_until(window, POLL, &mut bad).is_ok() {
        panic!("{what}: broken\n{}", process.output_so_far());
    }
}

/// `ip -d addr show dev IF`'s line for `addr`.
fn addr_line(host: &Host, dev: &str, addr: &str) -> String {
    let out = host
        .run(&["ip", "-d", "-o", "addr", "show", "dev", dev])
        .expect("ip addr show");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains(&format!("inet {addr}/")))
        .map(str::to_owned)
        .unwrap_or_default()
}

#[test]
fn vip_options_reach_the_kernel_and_dev_addresses_are_removed() {
    let lab = Lab::new("run-vip-opts").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let side = lab.switch("side").expect("switch");
    let one = lab.host("dir1").expect("host");
    one.attach(&lan, "eth0", &["10.71.0.1/24"]).expect("link");
    one.attach(&side, "eth1", &["10.72.0.1/24"]).expect("link");
    // Scopes other than global go on subnets of their own: the kernel requires a
    // secondary address to have its primary's scope.
    let conf = write_conf(
        &lab,
        "dir1",
        "",
        "    state MASTER\n    virtual_router_id 71\n    priority 150\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {\n        10.79.0.100/24 brd + label eth0:vip scope site noprefixroute\n        10.79.1.101/24 brd 10.79.1.200 scope link\n        10.71.0.102/25 brd -\n        10.73.0.100/24 dev eth1 label eth1:x scope 200\n    }\n",
    );
    let kl = start(&one, &conf);
    wait_for("the lone master adds its VIPs", &kl, || {
        ["10.79.0.100", "10.79.1.101", "10.71.0.102", "10.73.0.100"]
            .iter()
            .all(|vip| holds(&one, vip))
    });
    let line = addr_line(&one, "eth0", "10.79.0.100");
    for want in [
        "10.79.0.100/24",
        "brd 10.79.0.255",
        "scope site",
        "noprefixroute",
        "eth0:vip",
    ] {
        assert!(line.contains(want), "{want:?} missing in {line:?}");
    }
    let line = addr_line(&one, "eth0", "10.79.1.101");
    for want in ["10.79.1.101/24", "brd 10.79.1.200", "scope link"] {
        assert!(line.contains(want), "{want:?} missing in {line:?}");
    }
    assert!(!line.contains("noprefixroute"), "{line:?}");
    let line = addr_line(&one, "eth0", "10.71.0.102");
    for want in ["10.71.0.102/25", "brd 10.71.0.0", "scope global"] {
        assert!(line.contains(want), "{want:?} missing in {line:?}");
    }
    // `dev eth1`: on the other interface, not on the instance's.
    assert!(
        addr_line(&one, "eth0", "10.73.0.100").is_empty(),
        "dev VIP on eth0"
    );
    let line = addr_line(&one, "eth1", "10.73.0.100");
    for want in ["10.73.0.100/24", "scope site", "eth1:x"] {
        assert!(line.contains(want), "{want:?} missing in {line:?}");
    }

    // SIGTERM: every VIP goes, the one on eth1 too.
    stop(&kl);
    for vip in ["10.79.0.100", "10.79.1.101", "10.71.0.102", "10.73.0.100"] {
        assert!(!holds(&one, vip), "{vip} left behind");
    }
}

/// Two BACKUP directors with `nopreempt`: the higher priority, started second, leaves
/// the VIP where it is; it takes over only when the master goes.
#[test]
fn nopreempt_higher_priority_started_second_does_not_take_the_vip() {
    const VIP: &str = "10.74.0.100";
    let lab = Lab::new("run-nopreempt").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    one.attach(&lan, "eth0", &["10.74.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.74.0.2/24"]).expect("link");
    let body = |priority: u8| {
        format!(
            "    state BACKUP\n    nopreempt\n    virtual_router_id 74\n    priority {priority}\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n"
        )
    };
    let low = start(&one, &write_conf(&lab, "dir1", "", &body(100)));
    wait_for("the only director takes the VIP", &low, || holds(&one, VIP));
    let high = start(&two, &write_conf(&lab, "dir2", "", &body(150)));
    wait_for("the higher priority starts as backup", &high, || {
        logged(&high, "to=BACKUP")
    });
    stays(
        "nopreempt: the VIP stays with the lower priority",
        &high,
        WINDOW_V3,
        || holds(&two, VIP) || !holds(&one, VIP),
    );
    stop(&low);
    wait_for("the backup takes over on resignation", &high, || {
        holds(&two, VIP) && !holds(&one, VIP)
    });
}

/// Unicast peers (`unicast_src_ip`, `unicast_peer`): election, and failover when the
/// master is SIGKILLed and its cable pulled.
#[test]
fn unicast_election_and_failover() {
    const VIP: &str = "10.75.0.100";
    let lab = Lab::new("run-unicast").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let one = lab.host("dir1").expect("host");
    let two = lab.host("dir2").expect("host");
    let cable = one.attach(&lan, "eth0", &["10.75.0.1/24"]).expect("link");
    two.attach(&lan, "eth0", &["10.75.0.2/24"]).expect("link");
    let body = |state: &str, priority: u8, me: &str, peer: &str| {
        format!(
            "    state {state}\n    virtual_router_id 75\n    priority {priority}\n    version 3\n    advert_int 0.2\n    unicast_src_ip {me}\n    unicast_peer {{\n        {peer}\n    }}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n"
        )
    };
    let backup = start(
        &two,
        &write_conf(
            &lab,
            "dir2",
            "",
            &body("BACKUP", 100, "10.75.0.2", "10.75.0.1"),
        ),
    );
    let master = start(
        &one,
        &write_conf(
            &lab,
            "dir1",
            "",
            &body("MASTER", 150, "10.75.0.1", "10.75.0.2"),
        ),
    );
    wait_for("the priority-150 director takes the VIP", &master, || {
        holds(&one, VIP) && !holds(&two, VIP)
    });
    stays(
        "exactly one master over unicast",
        &backup,
        WINDOW_V3,
        || holds(&two, VIP) || !holds(&one, VIP),
    );
    master.kill().expect("SIGKILL the master");
    cable.unplug().expect("unplug");
    wait_for("the backup takes over", &backup, || holds(&two, VIP));
    stop(&backup);
}

/// A keepalived.conf body for VRRPv2 at 1 s with PASS authentication.
fn v2_auth_body(state: &str, priority: u8, vip: &str) -> String {
    format!(
        "    state {state}\n    virtual_router_id 76\n    priority {priority}\n    version 2\n    advert_int 1\n    authentication {{\n        auth_type PASS\n        auth_pass secret\n    }}\n    virtual_ipaddress {{\n        {vip}/24\n    }}\n"
    )
}

fn two_hosts(lab: &Lab, net: u8) -> (Host, Host) {
    let lan = lab.switch("lan").expect("switch");
    let ka = lab.host("ka").expect("host");
    let kl = lab.host("kl").expect("host");
    ka.attach(&lan, "eth0", &[&format!("10.{net}.0.1/24")])
        .expect("link");
    kl.attach(&lan, "eth0", &[&format!("10.{net}.0.2/24")])
        .expect("link");
    (ka, kl)
}

/// VRRPv2 with `auth_type PASS`: keepalived master, keeplb backup; keepalived stops
/// (SIGTERM, priority 0) and keeplb takes over.
#[test]
fn keepalived_master_keeplb_backup_v2_pass_auth() {
    const VIP: &str = "10.76.0.100";
    let lab = Lab::new("run-ka-v2-auth").expect("lab (needs root and iproute2)");
    let (ka_host, kl_host) = two_hosts(&lab, 76);
    let ka = start_keepalived(
        &ka_host,
        &write_conf(&lab, "ka", "", &v2_auth_body("MASTER", 150, VIP)),
    );
    let kl = start(
        &kl_host,
        &write_conf(&lab, "kl", "", &v2_auth_body("BACKUP", 100, VIP)),
    );
    wait_for("keepalived becomes master", &ka, || {
        logged(&ka, "(VI_1) Entering MASTER STATE") && holds(&ka_host, VIP)
    });
    // keeplb accepts keepalived's authenticated advertisements: it stays backup past its
    // Master_Down_Interval (it would take the VIP if it dropped them).
    stays("keeplb stays backup", &kl, WINDOW_V2, || {
        holds(&kl_host, VIP)
    });
    assert!(logged(&kl, "to=BACKUP"), "{}", kl.output_so_far());
    ka.signal(Signal::SIGTERM).expect("SIGTERM keepalived");
    wait_for("keeplb takes over from keepalived", &kl, || {
        holds(&kl_host, VIP)
    });
    wait_for("keepalived removes its VIP", &ka, || !holds(&ka_host, VIP));
    stop(&kl);
}

/// VRRPv2 with `auth_type PASS`: keeplb master, keepalived backup; keeplb stops
/// (SIGTERM, priority 0) and keepalived takes over.
#[test]
fn keeplb_master_keepalived_backup_v2_pass_auth() {
    const VIP: &str = "10.77.0.100";
    let lab = Lab::new("run-kl-v2-auth").expect("lab (needs root and iproute2)");
    let (ka_host, kl_host) = two_hosts(&lab, 77);
    let kl = start(
        &kl_host,
        &write_conf(&lab, "kl", "", &v2_auth_body("MASTER", 150, VIP)),
    );
    let ka = start_keepalived(
        &ka_host,
        &write_conf(&lab, "ka", "", &v2_auth_body("BACKUP", 100, VIP)),
    );
    wait_for("keeplb becomes master", &kl, || holds(&kl_host, VIP));
    wait_for("keepalived starts as backup", &ka, || {
        logged(&ka, "(VI_1) Entering BACKUP STATE")
    });
    // keepalived accepts keeplb's authenticated advertisements.
    stays("keepalived stays backup", &ka, WINDOW_V2, || {
        holds(&ka_host, VIP) || logged(&ka, "(VI_1) Entering MASTER STATE")
    });
    stop(&kl);
    assert!(!holds(&kl_host, VIP), "keeplb left its VIP");
    wait_for("keepalived takes over from keeplb", &ka, || {
        logged(&ka, "(VI_1) Entering MASTER STATE") && holds(&ka_host, VIP)
    });
    stop(&ka);
}

/// Unicast with keepalived (VRRPv3, 0.2 s): keepalived, alone, becomes master; keeplb
/// (higher priority) preempts it over unicast; keeplb stops and keepalived takes over.
#[test]
fn unicast_interop_with_keepalived() {
    const VIP: &str = "10.78.0.100";
    let lab = Lab::new("run-ka-unicast").expect("lab (needs root and iproute2)");
    let (ka_host, kl_host) = two_hosts(&lab, 78);
    let body = |priority: u8, me: &str, peer: &str| {
        format!(
            "    state BACKUP\n    virtual_router_id 78\n    priority {priority}\n    version 3\n    advert_int 0.2\n    unicast_src_ip {me}\n    unicast_peer {{\n        {peer}\n    }}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n"
        )
    };
    let ka = start_keepalived(
        &ka_host,
        &write_conf(&lab, "ka", "", &body(100, "10.78.0.1", "10.78.0.2")),
    );
    wait_for("keepalived, alone, becomes master", &ka, || {
        logged(&ka, "(VI_1) Entering MASTER STATE") && holds(&ka_host, VIP)
    });
    let kl = start(
        &kl_host,
        &write_conf(&lab, "kl", "", &body(150, "10.78.0.2", "10.78.0.1")),
    );
    wait_for("keeplb preempts keepalived over unicast", &kl, || {
        holds(&kl_host, VIP) && !holds(&ka_host, VIP)
    });
    stays("keepalived stays backup", &ka, WINDOW_V3, || {
        holds(&ka_host, VIP)
    });
    stop(&kl);
    wait_for("keepalived takes over from keeplb", &ka, || {
        holds(&ka_host, VIP) && !holds(&kl_host, VIP)
    });
    stop(&ka);
}

/// A VIP removed behind keeplb's back (`ip addr del`) while it is master, with keepalived
/// as backup: keeplb does what keepalived does (keepalived_netlink.c: a deleted VIP
/// makes the master go to BACKUP with a priority-0 advertisement and take over again
/// after its Skew_Time), so the VIP is back at once and the backup, whose skew is
/// longer, never becomes master.
#[test]
fn a_vip_removed_behind_the_masters_back_comes_back() {
    const VIP: &str = "10.98.0.100";
    const UNTRACKED: &str = "10.98.0.101";
    let lab = Lab::new("run-vip-removed").expect("lab (needs root and iproute2)");
    let (ka_host, kl_host) = two_hosts(&lab, 98);
    // VRRPv2 at 1 s: keeplb's skew (256 - 250)/256 s = 23 ms, keepalived's
    // (256 - 50)/256 s = 805 ms: a wide margin under load.
    let body = |state: &str, priority: u8| {
        format!(
            "    state {state}\n    virtual_router_id 98\n    priority {priority}\n    version 2\n    advert_int 1\n    virtual_ipaddress {{\n        {VIP}/24\n        {UNTRACKED}/24 no_track\n    }}\n"
        )
    };
    let kl = start(&kl_host, &write_conf(&lab, "kl", "", &body("MASTER", 250)));
    let ka = start_keepalived(&ka_host, &write_conf(&lab, "ka", "", &body("BACKUP", 50)));
    wait_for("keeplb becomes master", &kl, || holds(&kl_host, VIP));
    wait_for("keepalived starts as backup", &ka, || {
        logged(&ka, "(VI_1) Entering BACKUP STATE")
    });
    let takeovers = || {
        let out = kl.output_so_far();
        strip_ansi(&out.stderr).matches("cause=master_down").count()
    };
    let before = takeovers();
    // A `no_track` address taken away is left alone, as keepalived leaves it.
    wait_for("keeplb holds the untracked address", &kl, || {
        holds(&kl_host, UNTRACKED)
    });
    let out = kl_host
        .run(&[
            "ip",
            "addr",
            "del",
            &format!("{UNTRACKED}/24"),
            "dev",
            "eth0",
        ])
        .expect("ip addr del");
    assert!(out.status.success(), "{out:?}");
    stays(
        "keeplb stays master without its untracked address",
        &kl,
        Duration::from_secs(2),
        || logged(&kl, "cause=address_removed") || holds(&kl_host, UNTRACKED),
    );
    let out = kl_host
        .run(&["ip", "addr", "del", &format!("{VIP}/24"), "dev", "eth0"])
        .expect("ip addr del");
    assert!(out.status.success(), "{out:?}");
    wait_for("keeplb notices and goes to BACKUP", &kl, || {
        logged(&kl, "cause=address_removed")
    });
    wait_for("keeplb puts the VIP back as master", &kl, || {
        holds(&kl_host, VIP) && takeovers() > before
    });
    // keepalived heard the priority 0, then keeplb's advertisement before its own skew
    // ran out.
    stays(
        "keepalived stays backup",
        &ka,
        Duration::from_secs(2),
        || holds(&ka_host, VIP) || logged(&ka, "(VI_1) Entering MASTER STATE"),
    );
    assert!(holds(&kl_host, VIP));
    stop(&kl);
    stop(&ka);
}
