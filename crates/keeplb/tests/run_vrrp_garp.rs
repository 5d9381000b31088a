//! `vrrp_garp_interval`: gratuitous ARPs on an interface are paced as keepalived paces
//! them. A director (the address owner, so it is master at once) with two VIPs, three
//! rounds per burst and no delayed second burst, announces with a 0.5 s interval; a
//! client on the LAN captures the ARPs with tcpdump. keepalived's rule: the first frame
//! goes, every further frame waits for the interval, and an address waits at most once
//! (the other rounds are dropped), so the frames are VIP1, VIP1, VIP2, 0.5 s apart. The
//! same test runs real keepalived in the director's place and requires the same.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keeplb_testlab::{Host, Lab, Process, Signal};

const VIP1: &str = "10.62.0.101";
const VIP2: &str = "10.62.0.102";

fn config(lab: &Lab) -> PathBuf {
    let path = lab.dir().join("director.conf");
    let text = format!(
        "global_defs {{\n    vrrp_garp_interval 0.5\n}}\nvrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 62\n    priority 255\n    advert_int 1\n    garp_master_delay 0\n    garp_master_repeat 3\n    virtual_ipaddress {{\n        {VIP1}/24\n        {VIP2}/24\n    }}\n}}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `(seconds, address)` of each gratuitous ARP tcpdump printed
/// (`T ARP, Request who-has X (ff:ff:ff:ff:ff:ff) tell X, length N`).
fn gratuitous_arps(tcpdump_out: &str) -> Vec<(f64, String)> {
    tcpdump_out
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at: f64 = words.first()?.parse().ok()?;
            let who = words.iter().position(|w| *w == "who-has")?;
            let tell = words.iter().position(|w| *w == "tell")?;
            let target = words.get(who + 1)?;
            let sender = words.get(tell + 1)?.trim_end_matches(',');
            (*target == sender).then(|| (at, target.to_string()))
        })
        .collect()
}

fn paced(name: &str, start_director: impl Fn(&Host, &Path) -> Process) {
    let lab = Lab::new(name).expect("lab (needs root and iproute2)");
    let lan = lab.switch("lan").expect("switch");
    let director = lab.host("dir").expect("host");
    let client = lab.host("client").expect("host");
    director
        .attach(&lan, "eth0", &["10.62.0.1/24"])
        .expect("link");
    client
        .attach(&lan, "eth0", &["10.62.0.9/24"])
        .expect("link");
    let conf = config(&lab);

    let tcpdump = client
        .spawn(&["tcpdump", "-l", "-n", "-tt", "-i", "eth0", "arp"])
        .expect("spawn tcpdump");
    wait_for("tcpdump listens", &tcpdump, || {
        tcpdump.output_so_far().stderr.contains("listening on")
    });
    let daemon = start_director(&director, &conf);
    wait_for("the director holds both VIPs", &daemon, || {
        holds(&director, VIP1) && holds(&director, VIP2)
    });
    // The last frame is due 1 s after the first; wait for three, then a little longer
    // to see that no fourth comes.
    wait_for("three gratuitous ARPs", &tcpdump, || {
        gratuitous_arps(&tcpdump.output_so_far().stdout).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(800));
    tcpdump.signal(Signal::SIGTERM).expect("stop tcpdump");
    tcpdump.wait_timeout(TIMEOUT).expect("wait").expect("exits");
    daemon.signal(Signal::SIGTERM).expect("SIGTERM");
    daemon.wait_timeout(TIMEOUT).expect("wait").expect("exits");

    let frames = gratuitous_arps(&tcpdump.output_so_far().stdout);
    let addresses: Vec<&str> = frames.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(addresses, [VIP1, VIP1, VIP2], "{frames:?}");
    for pair in frames.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            (0.45..0.9).contains(&gap),
            "{gap} s between frames: {frames:?}"
        );
    }
}

#[test]
fn gratuitous_arps_are_paced_by_vrrp_garp_interval() {
    paced("run-garp-interval", start);
}

#[test]
fn keepalived_paces_them_the_same() {
    paced("run-garp-interval-ka", |host, conf| {
        host.spawn_keepalived(conf).expect("spawn keepalived")
    });
}
