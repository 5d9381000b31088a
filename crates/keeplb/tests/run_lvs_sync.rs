//! `lvs_sync_daemon` end to end, in network namespaces: two directors share a VIP
//! (VRRP) and a persistent virtual server from an unmodified keepalived.conf. The
//! master hands its persistence templates to the backup, so after the master dies a
//! client stays on the real server it had, not on the backup's own scheduling choice.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use keeplb_testlab::{Lab, Signal};

const VIP: &str = "10.66.0.100";
const DIRECTORS: [&str; 2] = ["10.66.0.1", "10.66.0.2"];
const CLIENT_A: &str = "10.66.0.50";
const CLIENT_B: &str = "10.66.0.51";
const REAL_SERVERS: [(&str, &str); 2] = [("rs1", "10.66.0.11"), ("rs2", "10.66.0.12")];

fn config(lab: &Lab, name: &str, state: &str, priority: u8) -> PathBuf {
    let path = lab.dir().join(format!("{name}.conf"));
    let real_servers: String = REAL_SERVERS
        .iter()
        .map(|(_, ip)| format!("    real_server {ip} 80 {{\n    }}\n"))
        .collect();
    let text = format!(
        "global_defs {{\n    lvs_sync_daemon eth0 VI_1\n}}\n\
         vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 66\n    \
         priority {priority}\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\
         virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    \
         persistence_timeout 300\n{real_servers}}}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `keeplb adm ARGS` against the daemon whose control socket is `control`: its
/// standard output and error.
fn adm(control: &Path, args: &[&str]) -> (String, String) {
    let out = adm_output(control, args);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keeplb adm -Lnc`: the connection entries.
fn connection_entries(control: &Path) -> String {
    adm(control, &["-Lnc"]).0
}

/// `keeplb adm -L --daemon`: the sync daemons in force.
fn daemons(control: &Path) -> String {
    adm(control, &["-L", "--daemon"]).0
}

#[test]
fn persistent_clients_keep_their_real_server_across_a_failover() {
    let lab = Lab::new("run-lvs-sync").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let attach = |name: &str, ip: &str| {
        let host = lab.host(name).expect("host");
        host.attach(&lan, "eth0", &[&format!("{ip}/24")])
            .expect("link");
        host
    };
    let one = attach("dir1", DIRECTORS[0]);
    let two = attach("dir2", DIRECTORS[1]);
    let client_a = attach("client-a", CLIENT_A);
    let client_b = attach("client-b", CLIENT_B);
    let _real_servers: Vec<NameServer> = REAL_SERVERS
        .iter()
        .map(|&(name, ip)| NameServer::start(&attach(name, ip), name, sa(ip, 80)))
        .collect();

    let master_conf = config(&lab, "master", "MASTER", 150);
    let backup_conf = config(&lab, "backup", "BACKUP", 100);
    let master = start(&one, &master_conf);
    let backup = start(&two, &backup_conf);
    wait_for("the priority-150 director takes the VIP", &master, || {
        holds(&one, VIP)
    });

    // rr gives B the first real server and A the second; a fresh director would give
    // A the first one.
    let b_served_by = served_by(&client_b, sa(VIP, 80), &master);
    let a_served_by = served_by(&client_a, sa(VIP, 80), &master);
    assert_ne!(a_served_by, b_served_by, "rr alternates");
    let a_real_server = REAL_SERVERS
        .iter()
        .find(|(name, _)| *name == a_served_by)
        .map(|(_, ip)| *ip)
        .expect("a known real server");

    // The backup learns A's template: client address with port 0, as IPVS lists it.
    let backup_control = backup_conf.with_extension("sock");
    let template = format!("{CLIENT_A}:0");
    wait_for("the backup receives A's template", &backup, || {
        connection_entries(&backup_control)
            .lines()
            .any(|l| l.contains(&template) && l.contains(&format!("{a_real_server}:80")))
    });

    // As ipvsadm lists the kernel daemons keepalived starts: the master daemon on the
    // MASTER, the backup daemon on the BACKUP; neither can be stopped by hand.
    let master_control = master_conf.with_extension("sock");
    let master_daemon = daemons(&master_control);
    assert!(
        master_daemon.starts_with("master sync daemon (mcast=eth0, syncid=")
            && master_daemon.contains("group=224.0.0.81, port=8848, ttl=1)")
            && master_daemon.lines().count() == 1,
        "{master_daemon}"
    );
    assert_eq!(
        daemons(&backup_control),
        master_daemon.replacen("master", "backup", 1)
    );
    let (_, refused) = adm(&master_control, &["--stop-daemon", "master"]);
    assert!(refused.contains("lvs_sync_daemon"), "{refused}");
    assert_eq!(daemons(&master_control), master_daemon, "still running");

    // A reload that leaves the sync settings alone leaves the daemon alone too (its
    // socket stays open; it does not send everything again).
    master.signal(Signal::SIGHUP).expect("SIGHUP");
    wait_for("the reload is applied", &master, || {
        master
            .output_so_far()
            .stderr
            .contains("master.conf applied")
    });
    assert_eq!(
        master
            .output_so_far()
            .stderr
            .matches("lvs_sync_daemon: persistence templates on")
            .count(),
        1,
        "{}",
        master.output_so_far()
    );

    master.kill().expect("kill the master");
    wait_for("the backup takes over", &backup, || holds(&two, VIP));
    wait_for("the new master lists the master daemon", &backup, || {
        daemons(&backup_control) == master_daemon
    });
    assert_eq!(
        served_by(&client_a, sa(VIP, 80), &backup),
        a_served_by,
        "A stays on its real server after the failover\n{}",
        connection_entries(&backup_control)
    );
    assert_eq!(
        served_by(&client_b, sa(VIP, 80), &backup),
        b_served_by,
        "B too\n{}",
        connection_entries(&backup_control)
    );
    stop(&backup);
}
