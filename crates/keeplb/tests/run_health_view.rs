//! What `keeplb status` and `/metrics` say of real servers whose checks fail: a failed
//! real server stays listed with its configured weight and `healthy: false` (out of the
//! table without `inhibit_on_failure`, at weight 0 in it with), and
//! `keeplb_real_server_up` is 0 for it and 1 for the others, until it comes back.

mod common;
use common::*;

use std::path::PathBuf;

use keeplb_testlab::Process;
use serde_json::Value;

const DIRECTOR: &str = "10.99.0.2";
const VIP: &str = "10.99.0.1";
const CLIENT: &str = "10.99.0.100";
const REAL_SERVERS: [(&str, &str); 3] = [
    ("rs1", "10.99.0.11"),
    ("rs2", "10.99.0.12"),
    ("rs3", "10.99.0.13"),
];
const HTTP: &str = "127.0.0.1:9900";

/// A real server as the status shows it: healthy, weight, effective_weight, in_table.
type Shown = (bool, u64, u64, bool);

/// Port 80 without `inhibit_on_failure`, port 81 with it; rs2 has weight 2 in both.
fn config() -> String {
    let check =
        "        TCP_CHECK {\n            connect_timeout 1\n            retry 0\n        }\n";
    let real_server = |ip: &str, weight: u32, inhibit: bool| {
        format!(
            "    real_server {ip} 8080 {{\n        weight {weight}\n{}{check}    }}\n",
            if inhibit {
                "        inhibit_on_failure\n"
            } else {
                ""
            }
        )
    };
    let virtual_server = |port: u16, inhibit: bool| {
        format!(
            "virtual_server {VIP} {port} {{\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n{}{}}}\n",
            real_server(REAL_SERVERS[0].1, 1, inhibit),
            real_server(REAL_SERVERS[1].1, 2, inhibit),
        )
    };
    format!("{}{}", virtual_server(80, false), virtual_server(81, true))
}

struct Daemon {
    site: Site,
    keeplb: Process,
}

impl Daemon {
    fn control(&self) -> PathBuf {
        self.site.lab.dir().join("keepalived.sock")
    }

    fn keeplb(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(KEEPLB)
            .arg(args[0])
            .arg("--control")
            .arg(self.control())
            .args(&args[1..])
            .output()
            .expect("run keeplb")
    }

    /// The status, or null while the daemon does not answer yet.
    fn status(&self) -> Value {
        let out = self.keeplb(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        scrape_metrics(&self.site.director, HTTP).unwrap_or_default()
    }

    /// Waits until the real servers of the service on `port` are, by address (in any
    /// order), as `expected` says: (healthy, weight, effective_weight, in_table).
    fn wait_for_status(&self, port: u16, expected: &[(&str, Shown)]) {
        let mut last = Value::Null;
        let seen = |status: &Value| -> Vec<(String, Shown)> {
            let services = status["services"].as_array().cloned().unwrap_or_default();
            let Some(service) = services.iter().find(|s| s["port"] == port) else {
                return Vec::new();
            };
            service["real_servers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|rs| {
                    (
                        format!("{}:{}", rs["address"].as_str().unwrap_or("?"), rs["port"]),
                        (
                            rs["healthy"].as_bool().unwrap_or(true),
                            rs["weight"].as_u64().unwrap_or(u64::MAX),
                            rs["effective_weight"].as_u64().unwrap_or(u64::MAX),
                            rs["in_table"].as_bool().unwrap_or(true),
                        ),
                    )
                })
                .collect::<Vec<_>>()
        };
        let sorted = |mut list: Vec<(String, Shown)>| {
            list.sort();
            list
        };
        let expected = sorted(
            expected
                .iter()
                .map(|(address, state)| ((*address).to_owned(), *state))
                .collect(),
        );
        let reached = keeplb_testlab::wait_until(TIMEOUT, POLL, || {
            last = self.status();
            sorted(seen(&last)) == expected
        });
        assert!(
            reached.is_ok(),
            "port {port}: want {expected:?}, status says {:?}\n{last:#}\n{}",
            seen(&last),
            self.keeplb.output_so_far()
        );
    }

    /// Waits until `/metrics` has every one of `lines`.
    fn wait_for_metrics(&self, lines: &[String]) {
        let mut last = String::new();
        let reached = keeplb_testlab::wait_until(TIMEOUT, POLL, || {
            last = self.metrics();
            lines.iter().all(|l| last.lines().any(|have| have == l))
        });
        assert!(
            reached.is_ok(),
            "want {lines:#?} in\n{last}\n{}",
            self.keeplb.output_so_far()
        );
    }
}

/// The `keeplb_real_server_up` lines of both services: rs1 up, rs2 as `rs2_up` says.
fn up_lines(rs2_up: u8) -> Vec<String> {
    let line = |port: u16, (_, real_server): (&str, &str), up: u8| {
        format!(
            "keeplb_real_server_up{{service=\"TCP {VIP}:{port}\",real_server=\"{real_server}:8080\"}} {up}"
        )
    };
    [80, 81]
        .into_iter()
        .flat_map(|port| {
            [
                line(port, REAL_SERVERS[0], 1),
                line(port, REAL_SERVERS[1], rs2_up),
            ]
        })
        .collect()
}

#[test]
fn failed_real_servers_stay_in_status_and_metrics_with_their_health() {
    let site = Site::new("health-view", CLIENT, &[DIRECTOR, VIP], &REAL_SERVERS);
    let servers: Vec<NameServer> = site.real_servers[..2]
        .iter()
        .map(|(host, name, ip)| NameServer::start(host, name, sa(ip, 8080)))
        .collect();
    let conf = site.lab.dir().join("keepalived.conf");
    std::fs::write(&conf, config()).expect("write config");
    let control = conf.with_extension("sock");
    let keeplb = site
        .director
        .spawn(&[
            KEEPLB,
            "run",
            "-f",
            conf.to_str().expect("utf-8"),
            "--control",
            control.to_str().expect("utf-8"),
            "--http",
            HTTP,
        ])
        .expect("spawn keeplb");
    let daemon = Daemon { site, keeplb };
    let [rs1, rs2, rs3] = REAL_SERVERS.map(|(_, ip)| ip);
    let (rs1_port, rs2_port) = (format!("{rs1}:8080"), format!("{rs2}:8080"));
    let (rs1_port, rs2_port) = (rs1_port.as_str(), rs2_port.as_str());
    let both_up = |port| {
        daemon.wait_for_status(
            port,
            &[
                (rs1_port, (true, 1, 1, true)),
                (rs2_port, (true, 2, 2, true)),
            ],
        );
    };
    both_up(80);
    both_up(81);
    daemon.wait_for_metrics(&up_lines(1));

    // A real server added by hand has no checks: listed, up, at its weight.
    let vip80 = format!("{VIP}:80");
    let added = daemon.keeplb(&[
        "adm",
        "-a",
        "-t",
        &vip80,
        "-r",
        &format!("{rs3}:8080"),
        "-m",
        "-w",
        "4",
    ]);
    assert!(added.status.success(), "keeplb adm -a: {added:?}");
    let rs3_port = format!("{rs3}:8080");
    daemon.wait_for_status(
        80,
        &[
            (rs1_port, (true, 1, 1, true)),
            (rs2_port, (true, 2, 2, true)),
            (rs3_port.as_str(), (true, 4, 4, true)),
        ],
    );
    let removed = daemon.keeplb(&["adm", "-d", "-t", &vip80, "-r", &rs3_port]);
    assert!(removed.status.success(), "keeplb adm -d: {removed:?}");

    // rs2 dies: listed still, down, with its configured weight; out of the table on 80,
    // at weight 0 in it on 81 (inhibit_on_failure).
    servers[1].kill(&daemon.site.director);
    daemon.wait_for_status(
        80,
        &[
            (rs1_port, (true, 1, 1, true)),
            (rs2_port, (false, 2, 0, false)),
        ],
    );
    daemon.wait_for_status(
        81,
        &[
            (rs1_port, (true, 1, 1, true)),
            (rs2_port, (false, 2, 0, true)),
        ],
    );
    daemon.wait_for_metrics(&up_lines(0));
    let human = daemon.keeplb(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    let rs2_lines: Vec<&str> = text.lines().filter(|l| l.contains(rs2)).collect();
    assert_eq!(rs2_lines.len(), 2, "{text}");
    assert!(
        rs2_lines.iter().all(|l| l.contains(" down ")),
        "rs2 shows down: {text}"
    );

    // rs2 comes back: up again everywhere.
    let back = NameServer::start(&daemon.site.real_servers[1].0, "rs2", sa(rs2, 8080));
    both_up(80);
    both_up(81);
    daemon.wait_for_metrics(&up_lines(1));
    drop(back);
    stop(&daemon.keeplb);
}
