//! Health checks in `keeplb run`, seen by a client of the VIP: real servers are nginx
//! (HTTP and HTTPS, with a certificate made here) in their own namespaces; pulling one,
//! breaking its health URL or killing them all behaves as keepalived does, within the
//! configured timings.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keeplb_testlab::{Process, Signal};

const DIRECTOR: &str = "10.63.0.1";
const VIP: &str = "10.63.0.10";
const CLIENT: &str = "10.63.0.100";
const REAL_SERVERS: [(&str, &str); 3] = [
    ("rs1", "10.63.0.11"),
    ("rs2", "10.63.0.12"),
    ("rs3", "10.63.0.13"),
];

fn site(name: &str) -> Site {
    let site = Site::new(name, CLIENT, &[DIRECTOR, VIP], &REAL_SERVERS);
    site.make_certificate();
    site
}

impl Site {
    fn path(&self, name: &str) -> PathBuf {
        self.lab.dir().join(name)
    }

    /// `keeplb adm -Ln` against the daemon [`Site::run`] started.
    fn adm_list(&self) -> String {
        let out = std::process::Command::new(KEEPLB)
            .arg("adm")
            .arg("--control")
            .arg(self.path("keepalived.sock"))
            .arg("-Ln")
            .output()
            .expect("keeplb adm");
        assert!(out.status.success(), "keeplb adm -Ln: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn make_certificate(&self) {
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args([
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=keeplb-test",
                "-keyout",
            ])
            .arg(self.path("key.pem"))
            .arg("-out")
            .arg(self.path("cert.pem"))
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (scripts/setup.sh installs it)");
        assert!(status.success(), "openssl req failed");
    }

    /// Starts nginx on real server `index`: HTTP on 80 and HTTPS on 443, serving
    /// `/name` (its name) and `/health.txt` from its own root.
    fn start_nginx(&self, index: usize) -> Process {
        let (host, name, ip) = &self.real_servers[index];
        let root = self.path(&format!("{name}-root"));
        std::fs::create_dir_all(&root).expect("root");
        std::fs::write(root.join("name"), format!("{name}\n")).expect("name file");
        if !root.join("health.txt").exists() {
            set_health(&root, "healthy\n");
        }
        let conf = self.path(&format!("{name}-nginx.conf"));
        let dir = self.lab.dir().display().to_string();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nuser root;\npid {dir}/{name}.pid;\n\
                 error_log {dir}/{name}.error.log;\nevents {{}}\nhttp {{\n    access_log off;\n\
                 client_body_temp_path {dir}/{name}-tmp;\n\
                 server {{\n        listen {ip}:80;\n        listen {ip}:443 ssl;\n\
                 ssl_certificate {dir}/cert.pem;\n        ssl_certificate_key {dir}/key.pem;\n\
                 root {};\n    }}\n}}\n",
                root.display()
            ),
        )
        .expect("nginx conf");
        let nginx = host
            .spawn(&["nginx", "-p", &dir, "-c", conf.to_str().expect("utf-8")])
            .expect("spawn nginx");
        let addr = sa(ip, 80);
        keeplb_testlab::wait_until(TIMEOUT, POLL, || {
            host.in_netns(|| TcpStream::connect_timeout(&addr, TIMEOUT).is_ok())
                .expect("netns")
        })
        .unwrap_or_else(|e| panic!("nginx on {name}: {e}\n{}", nginx.output_so_far()));
        nginx
    }

    fn root(&self, index: usize) -> PathBuf {
        self.path(&format!("{}-root", self.real_servers[index].1))
    }

    /// Which real server answers `GET /name` through the VIP; panics on any error, as
    /// no check transition may cost the client a request.
    fn ask(&self, port: u16) -> String {
        self.try_ask(port).expect("the client's request succeeds")
    }

    fn try_ask(&self, port: u16) -> std::io::Result<String> {
        let vip = sa(VIP, port);
        let body = self
            .client
            .in_netns(|| -> std::io::Result<String> {
                let mut stream = TcpStream::connect_timeout(&vip, TIMEOUT)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                stream.write_all(b"GET /name HTTP/1.0\r\n\r\n")?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                Ok(response)
            })
            .expect("netns")?;
        Ok(body.lines().last().unwrap_or_default().to_owned())
    }

    /// Waits until the service answers and `n` requests reach `servers` distinct real
    /// servers.
    fn wait_serving(&self, keeplb: &Process, port: u16, n: usize, servers: usize) {
        wait_for("the real servers serve", keeplb, || {
            (0..n)
                .map(|_| self.try_ask(port))
                .collect::<std::io::Result<std::collections::HashSet<_>>>()
                .is_ok_and(|names| names.len() == servers)
        });
    }

    fn spread(&self, port: u16, n: usize) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            *counts.entry(self.ask(port)).or_default() += 1;
        }
        counts
    }
}

fn set_health(root: &Path, body: &str) {
    // Written aside and renamed, so nginx never serves a half-written file.
    let tmp = root.join("health.tmp");
    std::fs::write(&tmp, body).expect("health file");
    std::fs::rename(&tmp, root.join("health.txt")).expect("rename");
}

/// Waits until keeplb has logged `line` (keepalived's wording); returns when.
fn logged(keeplb: &Process, line: &str) -> Instant {
    wait_for(&format!("log line {line:?}"), keeplb, || {
        keeplb.output_so_far().stderr.contains(line)
    });
    Instant::now()
}

fn real_server_block(ip: &str, port: u16, weight: u32, check: &str) -> String {
    format!("    real_server {ip} {port} {{\n        weight {weight}\n{check}    }}\n")
}

#[test]
fn tcp_check_removes_a_dead_server_within_its_timings_and_restores_it() {
    let site = site("check-tcp");
    let mut nginx: Vec<Process> = (0..2).map(|i| site.start_nginx(i)).collect();
    let check = "        TCP_CHECK {\n            connect_timeout 1\n            retry 1\n            delay_before_retry 1\n        }\n";
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo rr\n    protocol TCP\n{}{}}}\n",
        real_server_block(REAL_SERVERS[0].1, 80, 1, check),
        real_server_block(REAL_SERVERS[1].1, 80, 1, check),
    );
    let keeplb = site.run(&conf);
    site.wait_serving(&keeplb, 80, 4, 2);

    let killed = Instant::now();
    nginx[0].kill().expect("kill nginx on rs1");
    let removed = logged(
        &keeplb,
        "Removing service [10.63.0.11]:tcp:80 from VS [10.63.0.10]:tcp:80",
    );
    // keepalived's bound: delay_loop + retry x delay_before_retry + connect_timeout.
    let bound = Duration::from_secs(1 + 1 + 1);
    let took = removed - killed;
    eprintln!("removed {took:?} after the kill (bound {bound:?})");
    assert!(took <= bound + Duration::from_millis(1500), "took {took:?}");
    assert_eq!(site.spread(80, 4), HashMap::from([("rs2".to_owned(), 4)]));

    nginx[0] = site.start_nginx(0);
    logged(
        &keeplb,
        "Adding service [10.63.0.11]:tcp:80 to VS [10.63.0.10]:tcp:80",
    );
    assert_eq!(site.spread(80, 4).len(), 2, "rs1 serves again");
    stop(&keeplb);
}

#[test]
fn http_and_ssl_checks_follow_status_and_digest() {
    let site = site("check-http");
    let _nginx: Vec<Process> = (0..2).map(|i| site.start_nginx(i)).collect();
    let healthy_digest = md5_hex(&site.root(0).join("health.txt"));
    let url = format!(
        "            url {{\n                path /health.txt\n                digest {healthy_digest}\n            }}\n"
    );
    let http = format!(
        "        HTTP_GET {{\n{url}            connect_timeout 1\n            retry 0\n            delay_before_retry 1\n        }}\n"
    );
    let ssl = format!(
        "        SSL_GET {{\n{url}            connect_timeout 1\n            retry 0\n            delay_before_retry 1\n        }}\n"
    );
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo rr\n    protocol TCP\n{}{}}}\n\
         virtual_server {VIP} 443 {{\n    delay_loop 1\n    lb_algo rr\n    protocol TCP\n{}{}}}\n",
        real_server_block(REAL_SERVERS[0].1, 80, 1, &http),
        real_server_block(REAL_SERVERS[1].1, 80, 1, &http),
        real_server_block(REAL_SERVERS[0].1, 443, 1, &ssl),
        real_server_block(REAL_SERVERS[1].1, 443, 1, &ssl),
    );
    let keeplb = site.run(&conf);
    site.wait_serving(&keeplb, 80, 4, 2);

    // Same status, other body: the digest no longer matches, over HTTP and HTTPS.
    set_health(&site.root(0), "sick\n");
    logged(
        &keeplb,
        "Removing service [10.63.0.11]:tcp:80 from VS [10.63.0.10]:tcp:80",
    );
    logged(
        &keeplb,
        "Removing service [10.63.0.11]:tcp:443 from VS [10.63.0.10]:tcp:443",
    );
    assert_eq!(site.spread(80, 4), HashMap::from([("rs2".to_owned(), 4)]));
    set_health(&site.root(0), "healthy\n");
    logged(
        &keeplb,
        "Adding service [10.63.0.11]:tcp:80 to VS [10.63.0.10]:tcp:80",
    );
    logged(
        &keeplb,
        "Adding service [10.63.0.11]:tcp:443 to VS [10.63.0.10]:tcp:443",
    );

    // A 404 (the file gone) is a failure too.
    std::fs::remove_file(site.root(1).join("health.txt")).expect("remove health file");
    logged(
        &keeplb,
        "Removing service [10.63.0.12]:tcp:80 from VS [10.63.0.10]:tcp:80",
    );
    assert_eq!(site.spread(80, 4), HashMap::from([("rs1".to_owned(), 4)]));
    stop(&keeplb);
}

#[test]
fn misc_dynamic_weights_and_inhibit_on_failure() {
    let site = site("check-misc");
    let _nginx: Vec<Process> = (0..2).map(|i| site.start_nginx(i)).collect();
    let code = site.path("rs1-exit-code");
    std::fs::write(&code, "5\n").expect("exit code file");
    let script = site.path("misc.sh");
    write_script(&script, &format!("exit $(cat {})", code.display()));
    let misc = format!(
        "        MISC_CHECK {{\n            misc_path \"{}\"\n            misc_timeout 2\n            misc_dynamic\n        }}\n",
        script.display()
    );
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo wrr\n    protocol TCP\n{}{}}}\n",
        real_server_block(
            REAL_SERVERS[0].1,
            80,
            1,
            &format!("        inhibit_on_failure\n{misc}")
        ),
        real_server_block(REAL_SERVERS[1].1, 80, 1, ""),
    );
    let keeplb = site.run(&conf);
    // Exit code 5 gives weight 3: rs1 takes three connections for each of rs2's.
    site.wait_serving(&keeplb, 80, 4, 2);
    wait_for("misc_dynamic weight 3", &keeplb, || {
        site.spread(80, 8) == HashMap::from([("rs1".to_owned(), 6), ("rs2".to_owned(), 2)])
    });
    // Exit 1 is a failure; inhibit_on_failure keeps rs1 listed at weight 0.
    std::fs::write(&code, "1\n").expect("exit code file");
    logged(
        &keeplb,
        "Disabling service [10.63.0.11]:tcp:80 of VS [10.63.0.10]:tcp:80",
    );
    assert_eq!(site.spread(80, 4), HashMap::from([("rs2".to_owned(), 4)]));
    std::fs::write(&code, "0\n").expect("exit code file");
    logged(
        &keeplb,
        "Enabling service [10.63.0.11]:tcp:80 of VS [10.63.0.10]:tcp:80",
    );
    stop(&keeplb);
}

#[test]
fn losing_quorum_switches_to_the_sorry_server_and_back() {
    let site = site("check-quorum");
    let mut nginx: Vec<Process> = (0..3).map(|i| site.start_nginx(i)).collect();
    let check =
        "        TCP_CHECK {\n            connect_timeout 1\n            retry 0\n        }\n";
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    quorum 2\n    sorry_server {} 80\n    sorry_server_lvs_method DR\n{}{}}}\n",
        REAL_SERVERS[2].1,
        real_server_block(REAL_SERVERS[0].1, 80, 1, check),
        real_server_block(REAL_SERVERS[1].1, 80, 1, check),
    );
    let keeplb = site.run(&conf);
    site.wait_serving(&keeplb, 80, 4, 2);
    nginx[0].kill().expect("kill nginx on rs1");
    logged(&keeplb, "Lost quorum");
    wait_for("the sorry server takes over", &keeplb, || {
        site.spread(80, 3) == HashMap::from([("rs3".to_owned(), 3)])
    });
    // Listed as keepalived puts it in IPVS: weight 1, with its own forwarding method.
    let sorry_line = format!("{}:80", REAL_SERVERS[2].1);
    let listing = site.adm_list();
    let listed: Vec<&str> = listing
        .lines()
        .find(|line| line.contains(&sorry_line))
        .map(|line| line.split_whitespace().take(4).collect())
        .unwrap_or_default();
    assert_eq!(listed, ["->", &sorry_line, "Route", "1"], "{listing}");
    nginx[0] = site.start_nginx(0);
    logged(&keeplb, "Gained quorum");
    wait_for("the real servers are back", &keeplb, || {
        let spread = site.spread(80, 4);
        spread.len() == 2 && !spread.contains_key("rs3")
    });
    stop(&keeplb);
}

/// A reload (SIGHUP) keeps what the checks knew, as keepalived's migrate_checkers does:
/// the weight a `misc_dynamic` script gave stays (no flap back to the configured weight),
/// and a live real server the new file drops gets its `notify_down`.
#[test]
fn a_reload_keeps_misc_dynamic_weights_and_notifies_dropped_servers() {
    let site = site("check-reload");
    let _nginx: Vec<Process> = (0..2).map(|i| site.start_nginx(i)).collect();
    let runs = site.path("misc-runs");
    let script = site.path("misc.sh");
    // Exit 5: weight 3.
    write_script(&script, &format!("echo run >> {}\nexit 5", runs.display()));
    let dropped = site.path("notify-down");
    let notify = site.path("notify-down.sh");
    write_script(&notify, &format!("echo \"$@\" >> {}", dropped.display()));
    let misc = format!(
        "        MISC_CHECK {{\n            misc_path \"{}\"\n            misc_timeout 2\n            misc_dynamic\n            warmup 0\n        }}\n",
        script.display()
    );
    let tcp = format!(
        "        notify_down \"{} rs2\"\n        TCP_CHECK {{\n            connect_timeout 1\n            warmup 0\n        }}\n",
        notify.display()
    );
    let conf = |with_rs2: bool| {
        format!(
            "virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo wrr\n    protocol TCP\n{}{}}}\n",
            real_server_block(REAL_SERVERS[0].1, 80, 1, &misc),
            if with_rs2 {
                real_server_block(REAL_SERVERS[1].1, 80, 1, &tcp)
            } else {
                String::new()
            },
        )
    };
    let keeplb = site.run(&conf(true));
    site.wait_serving(&keeplb, 80, 4, 2);
    let weighed = "Changing weight from 1 to 3 for active service [10.63.0.11]:tcp:80 of VS [10.63.0.10]:tcp:80";
    logged(&keeplb, weighed);

    write_config(&site.path("keepalived.conf"), &conf(false));
    keeplb.signal(Signal::SIGHUP).expect("SIGHUP");
    logged(&keeplb, "keepalived.conf applied");
    let runs_at_reload = read(&runs).lines().count();
    wait_for("rs2's notify_down", &keeplb, || {
        std::fs::read_to_string(&dropped).is_ok_and(|text| text == "rs2\n")
    });
    // The new checks ran the script twice since: the weight never left 3.
    wait_for("two misc runs after the reload", &keeplb, || {
        read(&runs).lines().count() >= runs_at_reload + 2
    });
    let log = keeplb.output_so_far().stderr;
    assert_eq!(log.matches(weighed).count(), 1, "{log}");
    assert!(!log.contains("Changing weight from 3 to 1"), "{log}");
    let listing = site.adm_list();
    let rs1 = format!("{}:80", REAL_SERVERS[0].1);
    let weight: Vec<&str> = listing
        .lines()
        .find(|line| line.contains(&rs1))
        .map(|line| line.split_whitespace().skip(3).take(1).collect())
        .unwrap_or_default();
    assert_eq!(weight, ["3"], "{listing}");
    assert!(
        !listing.contains(&format!("{}:80", REAL_SERVERS[1].1)),
        "{listing}"
    );
    stop(&keeplb);
}

/// MD5 of a file, as keepalived's `digest` wants it (lower-case hex).
fn md5_hex(file: &Path) -> String {
    let out = std::process::Command::new("md5sum")
        .arg(file)
        .output()
        .expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}
