//! Reload (SIGHUP) as a user runs it, in network namespaces: two directors share a VIP
//! by VRRP and serve a virtual server on it; the master's configuration changes under
//! continuous client traffic. No request fails, no connection is cut, no VRRP
//! transition happens; a broken configuration changes nothing and says where it is
//! wrong.

mod common;
use common::*;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use keeplb_testlab::{Host, Lab, Process, Signal};

const VIP: &str = "10.64.0.10";
const REAL_SERVERS: [(&str, &str); 3] = [
    ("rs1", "10.64.0.11"),
    ("rs2", "10.64.0.12"),
    ("rs3", "10.64.0.13"),
];

fn config(priority: u8, real_servers: &[&str]) -> String {
    let real_servers: String = real_servers
        .iter()
        .map(|ip| format!("    real_server {ip} 80 {{\n        weight 1\n    }}\n"))
        .collect();
    format!(
        "vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 64\n    priority {priority}\n    version 3\n    advert_int 0.2\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n\
         virtual_server {VIP} 80 {{\n    lb_algo rr\n    protocol TCP\n{real_servers}}}\n"
    )
}

/// One request: which real server answered.
fn ask(client: &Host) -> std::io::Result<String> {
    let vip = sa(VIP, 80);
    client
        .in_netns(|| -> std::io::Result<String> {
            let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut reader = BufReader::new(stream);
            let mut name = String::new();
            reader.read_line(&mut name)?;
            let name = name.trim_end().to_owned();
            reader.get_ref().shutdown(Shutdown::Write)?;
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            Ok(name)
        })
        .expect("netns")
}

fn transitions(process: &Process) -> usize {
    process.output_so_far().stderr.matches("entering").count()
}

#[test]
fn reload_under_traffic_fails_nothing_and_a_broken_file_changes_nothing() {
    let lab = Lab::new("reload").expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let dir1 = lab.host("dir1").expect("host");
    let dir2 = lab.host("dir2").expect("host");
    let client = lab.host("client").expect("host");
    dir1.attach(&lan, "eth0", &["10.64.0.1/24"]).expect("link");
    dir2.attach(&lan, "eth0", &["10.64.0.2/24"]).expect("link");
    client
        .attach(&lan, "eth0", &["10.64.0.100/24"])
        .expect("link");
    let _servers: Vec<NameServer> = REAL_SERVERS
        .iter()
        .map(|&(name, ip)| {
            let host = lab.host(name).expect("host");
            host.attach(&lan, "eth0", &[&format!("{ip}/24")])
                .expect("link");
            let server = NameServer::start(&host, name, sa(ip, 80));
            std::mem::forget(host);
            server
        })
        .collect();
    let master_conf: PathBuf = lab.dir().join("dir1.conf");
    let backup_conf: PathBuf = lab.dir().join("dir2.conf");
    write_config(&master_conf, &config(150, &["10.64.0.11", "10.64.0.12"]));
    write_config(&backup_conf, &config(100, &["10.64.0.11", "10.64.0.12"]));
    let control = lab.dir().join("dir1.sock");
    let master = dir1
        .spawn(&[
            KEEPLB,
            "run",
            "-f",
            master_conf.to_str().expect("utf-8"),
            "--control",
            control.to_str().expect("utf-8"),
        ])
        .expect("spawn keeplb");
    wait_for("dir1 becomes master", &master, || holds(&dir1, VIP));
    let backup = start(&dir2, &backup_conf);
    wait_for("dir2 is backup", &backup, || transitions(&backup) == 1);
    wait_for("the service answers", &master, || ask(&client).is_ok());
    let (master_transitions, backup_transitions) = (transitions(&master), transitions(&backup));

    // Continuous traffic, and one connection held open across the reloads.
    let held = client
        .in_netns(|| TcpStream::connect_timeout(&sa(VIP, 80), TIMEOUT))
        .expect("netns")
        .expect("held connection");
    let running = Arc::new(AtomicBool::new(true));
    let answers = Arc::new(AtomicUsize::new(0));
    // Lets at least `n` more requests through.
    let traffic_for = |n: usize| {
        let target = answers.load(Ordering::Relaxed) + n;
        wait_for("client traffic", &master, || {
            answers.load(Ordering::Relaxed) >= target
        });
    };
    let traffic = {
        let client = client.clone();
        let running = Arc::clone(&running);
        let answers = Arc::clone(&answers);
        thread::spawn(move || {
            let started = Instant::now();
            let (mut answered, mut failed) = (Vec::new(), Vec::new());
            // Bounded by the flag and by a minute, whatever happens.
            while running.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                match ask(&client) {
                    Ok(name) => answered.push(name),
                    Err(e) => failed.push(e.to_string()),
                }
                answers.fetch_add(1, Ordering::Relaxed);
            }
            (answered, failed)
        })
    };

    traffic_for(30);
    // rs2 leaves, rs3 joins: a valid reload.
    write_config(&master_conf, &config(150, &["10.64.0.11", "10.64.0.13"]));
    master.signal(Signal::SIGHUP).expect("SIGHUP");
    wait_for("the reload is applied", &master, || {
        master.output_so_far().stderr.contains("dir1.conf applied")
    });
    wait_for("rs3 answers", &master, || {
        ask(&client).is_ok_and(|n| n == "rs3")
    });

    // A real server added by hand to the configured service survives a reload that
    // does not concern it, as keepalived removes only what the old configuration had.
    let hand_added = "10.64.0.12:80";
    let service = format!("{VIP}:80");
    adm(
        &control,
        &["-a", "-t", &service, "-r", hand_added, "-m", "-w", "1"],
    );
    master.signal(Signal::SIGHUP).expect("SIGHUP");
    wait_for("the second reload is applied", &master, || {
        master
            .output_so_far()
            .stderr
            .matches("dir1.conf applied")
            .count()
            == 2
    });
    assert!(
        adm(&control, &["-Ln"]).contains(hand_added),
        "the reload kept the real server added by hand"
    );
    adm(&control, &["-d", "-t", &service, "-r", hand_added]);

    // A broken file: reported with its line, and nothing changes.
    write_config(
        &master_conf,
        &config(150, &["10.64.0.11", "10.64.0.13"]).replace("lb_algo rr", "lb_algo fastest"),
    );
    // `keeplb reload` this time: it fails and shows the diagnostic with file:line:column.
    let refused = std::process::Command::new(KEEPLB)
        .args(["reload", "--control", control.to_str().expect("utf-8")])
        .output()
        .expect("keeplb reload");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("dir1.conf:13:13: unknown lb_algo"), "{said}");
    assert!(
        master
            .output_so_far()
            .stderr
            .contains("dir1.conf is invalid")
    );

    traffic_for(30);
    running.store(false, Ordering::Relaxed);
    let (answered, failed) = traffic.join().expect("traffic thread");
    assert!(
        failed.is_empty(),
        "requests failed during reloads: {failed:?}"
    );
    let after_reload: HashSet<&str> = answered[answered.len().saturating_sub(4)..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        after_reload,
        HashSet::from(["rs1", "rs3"]),
        "the broken reload changed nothing: {answered:?}"
    );
    eprintln!(
        "{} requests through two reloads, none failed",
        answered.len()
    );

    // The connection made before the reloads still works.
    let mut held = BufReader::new(held);
    let name = read_name(&mut held);
    held.get_ref().write_all(b"still here").expect("write");
    held.get_ref()
        .shutdown(Shutdown::Write)
        .expect("half-close");
    let mut echoed = String::new();
    held.read_to_string(&mut echoed).expect("read");
    assert_eq!(echoed, "still here", "connection to {name} survived");

    assert_eq!(
        transitions(&master),
        master_transitions,
        "no VRRP transition on dir1"
    );
    assert_eq!(
        transitions(&backup),
        backup_transitions,
        "no VRRP transition on dir2"
    );
    stop(&master);
    stop(&backup);
}

/// `keeplb adm ARGS` against the daemon at `control`, which must succeed: its output.
fn adm(control: &std::path::Path, args: &[&str]) -> String {
    let out = adm_output(control, args);
    assert!(out.status.success(), "adm {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
