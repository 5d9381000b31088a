//! `lvs_notify_fifo` and its script in `keeplb run`: the health checks write their
//! `RS …` and `VS …` lines to the FIFO, as keepalived's checker process does, and the
//! script started on it reads them.

mod common;
use common::*;

const DIRECTOR: &str = "10.69.0.1";
const VIP: &str = "10.69.0.10";
const CLIENT: &str = "10.69.0.100";
const REAL_SERVER: (&str, &str) = ("rs1", "10.69.0.11");

#[test]
fn health_check_events_reach_the_lvs_notify_fifo() {
    let site = Site::new("run-lvs-fifo", CLIENT, &[DIRECTOR, VIP], &[REAL_SERVER]);
    let dir = site.lab.dir().to_owned();
    let (host, name, ip) = &site.real_servers[0];
    let server = NameServer::start(host, name, sa(ip, 80));
    let fifo = dir.join("lvs.fifo");
    let lines = dir.join("lines");
    write_script(
        &dir.join("reader.sh"),
        "out=$1; fifo=$2\nwhile read -r line; do echo \"$line\" >> \"$out\"; done < \"$fifo\"",
    );
    let keeplb = site.run(&format!(
        "global_defs {{\n    lvs_notify_fifo {fifo}\n    lvs_notify_fifo_script \"{dir}/reader.sh {lines}\"\n}}\n\
         virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo rr\n    protocol TCP\n    \
         real_server {ip} 80 {{\n        TCP_CHECK {{\n            connect_timeout 1\n            retry 0\n        }}\n    }}\n}}\n",
        fifo = fifo.display(),
        dir = dir.display(),
        lines = lines.display(),
    ));
    server.kill(&site.client);
    let down = |text: String| {
        text.lines()
            .any(|l| l.starts_with("RS ") && l.contains(ip) && l.ends_with(" DOWN"))
    };
    wait_for(
        "the script reads the real server going DOWN",
        &keeplb,
        || down(read(&lines)),
    );
    assert!(
        read(&lines)
            .lines()
            .any(|l| l.starts_with("VS ") && l.ends_with(" DOWN")),
        "the service lost its quorum too: {}",
        read(&lines)
    );

    // Without VRRP too, a reload naming another FIFO says the change waits for a
    // restart (the FIFOs are opened at start).
    let conf = dir.join("keepalived.conf");
    let text = read(&conf).replace("lvs.fifo", "other.fifo");
    write_config(&conf, &text);
    keeplb
        .signal(keeplb_testlab::Signal::SIGHUP)
        .expect("SIGHUP");
    wait_for("the reload says the FIFO change waits", &keeplb, || {
        keeplb
            .output_so_far()
            .stderr
            .contains("lvs_notify_fifo changes apply at the next restart")
    });
    stop(&keeplb);
}
