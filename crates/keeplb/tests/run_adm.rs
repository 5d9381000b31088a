//! `keeplb adm` against a live `keeplb run`, end to end, in network namespaces.
//!
//! The reference for every listing and message is the same command line run through
//! `keeplb_control::run` against a [`MemoryTable`] (the IPVS table with the kernel's
//! rules, whose listings match ipvsadm 1.31 byte for byte): the daemon and the reference
//! must print the same bytes and exit with the same code. Traffic tests then check that
//! the commands act on the live data plane at once: a service added with `-A`/`-a`
//! answers clients, `--stats` counts them, `-e -w 0` quiesces, `-d` and `-D` drain, and
//! `-S -n`, `-C`, `-R` give the same table back.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use keeplb_control::names::NoNames;
use keeplb_control::table::MemoryTable;
use keeplb_testlab::{Host, Lab, Process};

const VIP: &str = "10.63.0.10";
const CLIENT: &str = "10.63.0.100";
const RS1: &str = "10.63.0.11";
const RS2: &str = "10.63.0.12";

/// Client, director (holding the VIP) and two real servers on one LAN.
struct Site {
    lab: Lab,
    client: Host,
    director: Host,
    real_servers: [Host; 2],
}

impl Site {
    fn new(name: &str) -> Self {
        let lab = Lab::new(name).expect("lab (needs root and iproute2)");
        let lan = lab.switch("lan").expect("switch");
        let host = |name: &str, addrs: &[&str]| {
            let host = lab.host(name).expect("host");
            let cidrs: Vec<String> = addrs.iter().map(|a| format!("{a}/24")).collect();
            let cidrs: Vec<&str> = cidrs.iter().map(String::as_str).collect();
            host.attach(&lan, "eth0", &cidrs).expect("link");
            host
        };
        let client = host("client", &[CLIENT]);
        let director = host("director", &["10.63.0.1", VIP]);
        let real_servers = [host("rs1", &[RS1]), host("rs2", &[RS2])];
        Self {
            lab,
            client,
            director,
            real_servers,
        }
    }

    fn control(&self) -> PathBuf {
        self.lab.dir().join("ctl.sock")
    }

    /// `keeplb run -f CONF --control <lab>/ctl.sock`, once it answers `adm -Ln`.
    fn run(&self, conf: &str) -> Process {
        let path = self.lab.dir().join("keepalived.conf");
        std::fs::write(&path, conf).expect("write config");
        let control = self.control();
        let keeplb = self
            .director
            .spawn(&[
                KEEPLB,
                "run",
                "-f",
                path.to_str().unwrap(),
                "--workers",
                "2",
                "--control",
                control.to_str().unwrap(),
            ])
            .expect("spawn keeplb run");
        wait_for("the control socket answers", &keeplb, || {
            adm_raw(&control, &["-Ln"], "").status.success()
        });
        keeplb
    }

    /// A connection from the client to `VIP:port`, with the real server's greeting.
    fn connect(&self, port: u16) -> Option<(BufReader<TcpStream>, String)> {
        let vip = sa(VIP, port);
        let stream = self
            .client
            .in_netns(|| TcpStream::connect_timeout(&vip, TIMEOUT))
            .expect("netns")
            .ok()?;
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let mut reader = BufReader::new(stream);
        let mut name = String::new();
        reader.read_line(&mut name).ok()?;
        (!name.is_empty()).then(|| (reader, name.trim_end().to_owned()))
    }

    /// The real servers of `n` successive connections, each closed in order.
    fn names(&self, port: u16, n: usize) -> Vec<String> {
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            let (stream, name) = self.connect(port).expect("the service answers");
            close_in_order(stream);
            names.push(name);
        }
        names
    }
}

/// Half-closes, then reads to the real server's close.
fn close_in_order(mut stream: BufReader<TcpStream>) {
    stream
        .get_ref()
        .shutdown(Shutdown::Write)
        .expect("half-close");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("orderly close");
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn adm_raw(control: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(KEEPLB)
        .arg("adm")
        .arg("--control")
        .arg(control)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keeplb adm");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("keeplb adm")
}

/// What one command printed and returned.
#[derive(Debug, PartialEq, Eq)]
struct Printed {
    stdout: String,
    stderr: String,
    code: i32,
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// `keeplb adm LINE` against the daemon.
fn adm(control: &Path, line: &str, stdin: &str) -> Printed {
    let out = adm_raw(control, &words(line), stdin);
    Printed {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().expect("exit code"),
    }
}

/// The same line against the reference table.
fn reference(table: &mut MemoryTable, line: &str, stdin: &str) -> Printed {
    let args: Vec<String> = words(line).into_iter().map(str::to_owned).collect();
    let out = keeplb_control::run("ipvsadm", &args, &mut stdin.as_bytes(), table, &NoNames);
    Printed {
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.exit_code,
    }
}

/// Runs `line` on both, then `-Ln` on both: every byte and exit code must agree.
fn both(control: &Path, table: &mut MemoryTable, line: &str) -> Printed {
    let ours = adm(control, line, "");
    assert_eq!(ours, reference(table, line, ""), "{line}");
    for listing in [
        "-Ln",
        "-L -n --stats --exact",
        "-L -n --thresholds",
        "-L -n --persistent-conn",
        "-S -n",
    ] {
        assert_eq!(
            adm(control, listing, ""),
            reference(table, listing, ""),
            "{listing} after {line}"
        );
    }
    ours
}

/// The seeds' ipvsadm sessions (000: NAT, DR and the command reference; 003: NAT with
/// persistence), then the errors operators meet, on a daemon started with an empty
/// configuration.
#[test]
fn seed_sessions_list_and_fail_like_ipvsadm() {
    let site = Site::new("adm-seeds");
    let keeplb = site.run("");
    let control = site.control();
    let mut table = MemoryTable::new();
    let sessions = [
        // seed 000, NAT
        "-A -t 192.168.11.33:80 -s rr",
        "-a -t 192.168.11.33:80 -r 192.168.13.129:80 -m",
        "-a -t 192.168.11.33:80 -r 192.168.13.131:80 -m",
        // seed 000, DR
        "-C",
        "-A -t 192.168.11.123:80 -s rr",
        "-a -t 192.168.11.123:80 -r 192.168.11.34:80 -g",
        "-a -t 192.168.11.123:80 -r 192.168.11.35:80 -g",
        // seed 000, command reference
        "-A -t 192.168.11.100:80 -s rr",
        "-E -t 192.168.11.100:80 -s wrr",
        "-a -t 192.168.11.100:80 -r 192.168.11.11 -g -w 2",
        "-e -t 192.168.11.100:80 -r 192.168.11.11 -g -w 3",
        "-e -t 192.168.11.100:80 -r 192.168.11.11 -m -w 2 -x 10 -y 5",
        "-d -t 192.168.11.100:80 -r 192.168.11.11",
        "-D -t 192.168.11.100:80",
        // seed 003, NAT with persistence
        "-C",
        "-A -t 192.168.109.128:80 -s wlc -p 300",
        "-a -t 192.168.109.128:80 -r 192.168.126.131:80 -m -w 1",
        "-a -t 192.168.109.128:80 -r 192.168.126.132:80 -m -w 1",
        // more of what the table holds: UDP, flags, netmask, another scheduler
        "-A -u 192.168.109.128:53 -s sh -b sh-port",
        "-a -u 192.168.109.128:53 -r 192.168.126.131:53 -m -w 5",
        "-E -t 192.168.109.128:80 -s wlc -p 600 -M 255.255.255.0",
        // one-packet scheduling: -E without -o turns it off, as in ipvsadm
        "-A -u 192.168.109.128:5353 -s rr -o",
        "-E -u 192.168.109.128:5353 -s rr",
        "-E -u 192.168.109.128:5353 -s wrr -o",
        // the SIP persistence engine, persistent or not (the kernel keeps it either way)
        "-A -u 192.168.109.128:5060 -s rr -p 60 -M 0.0.0.0 -o --pe sip",
        "-A -u 192.168.109.128:5061 -s rr --pe sip",
        "-E -u 192.168.109.128:5061 -s rr",
        "-Z",
    ];
    for line in sessions {
        let printed = both(&control, &mut table, line);
        assert_eq!((printed.code, printed.stderr.as_str()), (0, ""), "{line}");
    }
    let listing = adm(&control, "-Ln", "").stdout;
    assert!(
        listing.contains("TCP  192.168.109.128:80 wlc persistent 600 mask 255.255.255.0\n"),
        "{listing}"
    );
    assert!(
        listing.contains("UDP  192.168.109.128:53 sh (sh-port)"),
        "{listing}"
    );
    assert!(
        listing.contains("UDP  192.168.109.128:5353 wrr ops\n"),
        "{listing}"
    );
    assert!(
        listing.contains("UDP  192.168.109.128:5060 rr persistent 60 mask 0.0.0.0 pe sip ops\n"),
        "{listing}"
    );
    for port in [5353, 5060, 5061] {
        both(
            &control,
            &mut table,
            &format!("-D -u 192.168.109.128:{port}"),
        );
    }

    // The errors operators meet, with ipvsadm's words and exit codes.
    let failures = [
        (
            "-a -t 10.9.9.9:80 -r 192.168.126.131:80 -m",
            "Service not defined\n",
        ),
        (
            "-a -t 192.168.109.128:80 -r 192.168.126.131:80 -m",
            "Destination already exists\n",
        ),
        ("-D -t 10.9.9.9:80", "No such service\n"),
        (
            "-e -t 192.168.109.128:80 -r 192.168.126.199:80 -m",
            "No such destination\n",
        ),
        ("-A -t 192.168.109.128:80 -s rr", "Service already exists\n"),
        (
            "-A -t 10.9.9.9:80 -s nosuch",
            "Scheduler or persistence engine not found\n",
        ),
        (
            "-A -u 10.9.9.9:5060 -s rr -p --pe nosuch",
            "Scheduler or persistence engine not found\n",
        ),
        ("-L -n -t 10.9.9.9:80", "No such service\n"),
    ];
    for (line, message) in failures {
        let printed = both(&control, &mut table, line);
        assert_eq!(printed.stderr, message, "{line}");
        assert_ne!(printed.code, 0, "{line}");
    }
    // Parse errors never reach the daemon, and exit as ipvsadm does.
    both(&control, &mut table, "-A -t 10.9.9.9 -s rr");
    both(&control, &mut table, "-a -t 192.168.109.128:80 -w 3");
    let tcp_ops = both(&control, &mut table, "-A -t 10.9.9.9:80 -s rr -o");
    assert!(
        tcp_ops
            .stderr
            .contains("One-Packet Scheduling is only for UDP virtual services"),
        "{tcp_ops:?}"
    );

    // Timeouts: the kernel's defaults, then --set.
    both(&control, &mut table, "-L --timeout");
    both(&control, &mut table, "--set 100 20 50");
    both(&control, &mut table, "--set 0 30 0");
    both(&control, &mut table, "-L --timeout");

    // What the userspace proxy cannot serve is refused with a clear message.
    let fwmark = adm(&control, "-A -f 1 -s rr", "");
    assert_eq!(fwmark.code, 255);
    assert!(
        fwmark
            .stderr
            .starts_with("Firewall-mark services need kernel IPVS"),
        "{fwmark:?}"
    );
    let unchanged = adm(&control, "-Ln", "");
    assert_eq!(unchanged, reference(&mut table, "-Ln", ""));

    // No daemon: a clear message and exit 2.
    let nobody = adm(&site.lab.dir().join("nobody.sock"), "-Ln", "");
    assert_eq!(nobody.code, 2, "{nobody:?}");
    assert!(
        nobody.stderr.contains("cannot reach the keeplb daemon"),
        "{nobody:?}"
    );
    assert_eq!(nobody.stdout, "");

    // `keeplb status` shows the same table.
    let status = Command::new(KEEPLB)
        .args(["status", "--json", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let services = status["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{status}");
    assert_eq!(status["vrrp_instances"], serde_json::json!([]));
    stop(&keeplb);
}

/// A real server that greets each connection with its name and echoes until the
/// client half-closes.
struct NameServer {
    running: Arc<AtomicBool>,
}

impl NameServer {
    fn start(host: &Host, name: &str, addr: SocketAddr) -> Self {
        let listener = host
            .in_netns(|| TcpListener::bind(addr))
            .expect("netns")
            .expect("bind real server");
        listener.set_nonblocking(true).unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let alive = Arc::clone(&running);
        let greeting = format!("{name}\n");
        thread::spawn(move || {
            while alive.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let greeting = greeting.clone();
                thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    if stream.write_all(greeting.as_bytes()).is_ok() {
                        let mut input = stream.try_clone().unwrap();
                        let _ = std::io::copy(&mut input, &mut stream);
                    }
                });
            }
        });
        Self { running }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

/// Whether an open connection still carries data both ways.
fn echoes(stream: &mut BufReader<TcpStream>, text: &str) -> bool {
    let sent = stream.get_mut().write_all(format!("{text}\n").as_bytes());
    let mut line = String::new();
    sent.is_ok() && stream.read_line(&mut line).is_ok() && line.trim_end() == text
}

/// The Conns column of `-Ln --stats --exact` for the service or real server `what`.
fn conns(listing: &str, what: &str) -> u64 {
    listing
        .lines()
        .find(|line| line.split_whitespace().any(|w| w == what))
        .and_then(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|w| *w == what)?;
            fields.get(at + 1)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("{what} in {listing}"))
}

/// A service added with `adm` serves clients at once, counts them, quiesces, drains,
/// and survives `-S -n`, `-C`, `-R`; beside a service from the configuration.
#[test]
fn adm_changes_act_on_live_traffic() {
    let site = Site::new("adm-traffic");
    let _servers: Vec<NameServer> = [80, 81]
        .into_iter()
        .flat_map(|port| {
            [
                NameServer::start(&site.real_servers[0], "rs1", sa(RS1, port)),
                NameServer::start(&site.real_servers[1], "rs2", sa(RS2, port)),
            ]
        })
        .collect();
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    real_server {RS1} 80 {{\n        weight 1\n    }}\n}}\n"
    );
    let keeplb = site.run(&conf);
    let control = site.control();
    let config_service = format!("{VIP}:80");
    wait_for(
        "the configured real server is in the table",
        &keeplb,
        || {
            adm(&control, "-Ln", "")
                .stdout
                .contains(&format!("{RS1}:80"))
        },
    );
    assert_eq!(site.names(80, 2), ["rs1", "rs1"]);

    // -A and -a: listening and balancing at once.
    let service = format!("{VIP}:81");
    for line in [
        format!("-A -t {service} -s rr"),
        format!("-a -t {service} -r {RS1}:81 -m"),
        format!("-a -t {service} -r {RS2}:81 -m"),
    ] {
        let printed = adm(&control, &line, "");
        assert_eq!((printed.code, printed.stderr.as_str()), (0, ""), "{line}");
    }
    let names = site.names(81, 4);
    assert_eq!(names, ["rs2", "rs1", "rs2", "rs1"], "rr, last added first");

    // --stats counts what went through.
    let stats = adm(&control, "-Ln --stats --exact", "").stdout;
    assert_eq!(conns(&stats, &service), 4, "{stats}");
    assert_eq!(conns(&stats, &format!("{RS1}:81")), 2, "{stats}");
    assert_eq!(conns(&stats, &format!("{RS2}:81")), 2, "{stats}");
    assert_eq!(conns(&stats, &config_service), 2, "{stats}");
    let status = Command::new(KEEPLB)
        .args(["status", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    let status = String::from_utf8(status.stdout).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("TCP  {service} ")))
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(words(line)[2..5], ["rr", "-", "4"], "{status}");

    // -S -n, -C, -R: the same table back, listing as the reference restores it.
    let saved = adm(&control, "-S -n", "");
    assert_eq!(saved.code, 0);
    assert!(
        saved.stdout.contains(&format!("-A -t {service} -s rr")),
        "{saved:?}"
    );
    assert_eq!(adm(&control, "-C", "").code, 0);
    assert_eq!(
        adm(&control, "-Ln", "").stdout.lines().count(),
        3,
        "only the header"
    );
    wait_for("-C stops accepting", &keeplb, || site.connect(81).is_none());
    let restored = adm(&control, "-R", &saved.stdout);
    assert_eq!((restored.code, restored.stderr.as_str()), (0, ""));
    assert_eq!(adm(&control, "-S -n", "").stdout, saved.stdout);
    let mut table = MemoryTable::new();
    reference(&mut table, "-R", &saved.stdout);
    assert_eq!(adm(&control, "-Ln", ""), reference(&mut table, "-Ln", ""));
    let mut restored_names = site.names(81, 2);
    restored_names.sort();
    assert_eq!(restored_names, ["rs1", "rs2"]);

    // -e -w 0 quiesces rs1 without touching its open connection.
    let mut open: Vec<_> = (0..2)
        .map(|_| site.connect(81).expect("connects"))
        .collect();
    open.sort_by(|a, b| a.1.cmp(&b.1));
    let [(mut on_rs1, first), (mut on_rs2, second)] = <[_; 2]>::try_from(open).unwrap();
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("rs1", "rs2"),
        "rr alternates"
    );
    let quiesce = adm(
        &control,
        &format!("-e -t {service} -r {RS1}:81 -m -w 0"),
        "",
    );
    assert_eq!(quiesce.code, 0, "{quiesce:?}");
    assert_eq!(site.names(81, 3), ["rs2", "rs2", "rs2"]);
    assert!(
        echoes(&mut on_rs1, "still here"),
        "quiescing keeps connections"
    );
    let listing = adm(&control, "-Ln", "").stdout;
    let rs1_line = listing
        .lines()
        .find(|l| l.contains(&format!("{RS1}:81")))
        .unwrap();
    assert_eq!(
        words(rs1_line)[2..5],
        ["Masq", "0", "1"],
        "weight 0, one active connection: {listing}"
    );

    // -d: rs2 leaves; its open connection drains, new ones find nobody but quiesced rs1.
    let delete = adm(&control, &format!("-d -t {service} -r {RS2}:81"), "");
    assert_eq!(delete.code, 0, "{delete:?}");
    assert!(echoes(&mut on_rs2, "draining"), "-d keeps open connections");
    let entries = adm(&control, "-Lnc", "").stdout;
    assert!(
        entries.lines().any(|l| l.starts_with("TCP")
            && l.contains("ESTABLISHED")
            && l.contains(&format!("{RS2}:81"))),
        "{entries}"
    );
    assert!(site.connect(81).is_none(), "no real server can take it");
    adm(
        &control,
        &format!("-e -t {service} -r {RS1}:81 -m -w 1"),
        "",
    );
    assert_eq!(site.names(81, 2), ["rs1", "rs1"]);

    // -D: the service stops accepting; its connections drain.
    assert_eq!(adm(&control, &format!("-D -t {service}"), "").code, 0);
    wait_for("-D stops accepting", &keeplb, || site.connect(81).is_none());
    assert!(echoes(&mut on_rs1, "after -D"), "-D drains");
    assert!(echoes(&mut on_rs2, "after -D"), "-D drains");
    assert_eq!(site.names(80, 1), ["rs1"], "the other service is untouched");
    stop(&keeplb);
}

/// A tiny HTTP/1.0 server on loopback answering every request with `body`.
fn http_server(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

/// `keeplb genhash` prints what keepalived's genhash prints, for a page and for a
/// closed port.
#[test]
fn genhash_agrees_with_keepalived() {
    const GENHASH: &str = "/usr/bin/genhash";
    if !Path::new(GENHASH).exists() {
        eprintln!("{GENHASH} is not installed (scripts/setup.sh installs keepalived); skipped");
        return;
    }
    let server = http_server("<html>keeplb genhash</html>\n");
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    for (addr, url) in [(server, "/index.html"), (server, "/other"), (closed, "/")] {
        let args = [
            "-s".to_owned(),
            addr.ip().to_string(),
            "-p".to_owned(),
            addr.port().to_string(),
            "-u".to_owned(),
            url.to_owned(),
        ];
        let theirs = Command::new(GENHASH).args(&args).output().unwrap();
        let ours = Command::new(KEEPLB)
            .arg("genhash")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{addr}{url}"
        );
        assert_eq!(ours.status.code(), theirs.status.code(), "{addr}{url}");
    }
    // A bad command line: the complaint and the usage on standard error, exit 1.
    let bad = ["-s", "bogus", "-p", "80", "-u", "/"];
    let theirs = Command::new(GENHASH).args(bad).output().unwrap();
    let ours = Command::new(KEEPLB)
        .arg("genhash")
        .args(bad)
        .output()
        .unwrap();
    assert_eq!(ours.status.code(), theirs.status.code());
    let first_line = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .next()
            .map(str::to_owned)
    };
    assert_eq!(first_line(&ours.stderr), first_line(&theirs.stderr));
}

/// The table as the JSON API gives it (`{"request":"snapshot"}` on the control socket).
fn snapshot_json(control: &Path) -> serde_json::Value {
    let mut stream = std::os::unix::net::UnixStream::connect(control).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
        .write_all(b"{\"version\":1,\"request\":\"snapshot\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// The `tunnel` object the JSON API gives for real server `ip`.
fn json_tunnel(snapshot: &serde_json::Value, ip: &str) -> serde_json::Value {
    snapshot["snapshot"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["dests"].as_array().into_iter().flatten())
        .find(|d| d["address"] == ip)
        .map(|d| d["tunnel"].clone())
        .unwrap_or_else(|| panic!("{ip} in {snapshot}"))
}

/// The lines of a listing, sorted: IPVS lists real servers newest first, and health
/// checks add a configuration's real servers in no fixed order.
fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

/// `-a`/`-e … -i --tun-*`: the tunnel settings come back in `-Ln --tun-info`, `-S -n`
/// and the JSON API as ipvsadm and the kernel give them, and `-R` restores them.
#[test]
fn tunnel_settings_list_and_save_like_ipvsadm() {
    let site = Site::new("adm-tun");
    let keeplb = site.run("");
    let control = site.control();
    let mut table = MemoryTable::new();
    let service = format!("{VIP}:80");
    for line in [
        format!("-A -t {service} -s rr"),
        format!("-a -t {service} -r {RS1}:80 -i --tun-type gue --tun-port 6080 --tun-csum"),
        format!("-a -t {service} -r {RS2}:80 -i --tun-type gre --tun-remcsum"),
        format!("-a -t {service} -r {RS2}:80 -i --tun-type gre --tun-csum"),
        format!("-a -t {service} -r 10.63.0.13:80 -i -w 3"),
        format!("-a -t {service} -r 10.63.0.14:80 -m"),
        format!("-e -t {service} -r 10.63.0.14:80 -i --tun-type gue --tun-port 1 --tun-remcsum"),
    ] {
        let printed = both(&control, &mut table, &line);
        // ipvsadm refuses --tun-remcsum with gre before asking the kernel
        let refused = line.contains("gre --tun-remcsum");
        assert_eq!(printed.code != 0, refused, "{line}: {printed:?}");
        assert_eq!(
            adm(&control, "-Ln --tun-info", ""),
            reference(&mut table, "-Ln --tun-info", ""),
            "-Ln --tun-info after {line}"
        );
    }
    let listing = adm(&control, "-Ln --tun-info", "").stdout;
    let line_of = |ip: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!(" {ip}:80 ")))
            .map(words)
            .unwrap_or_else(|| panic!("{ip} in {listing}"))
    };
    assert_eq!(line_of(RS1)[2..4], ["Tunnel", "gue:6080:+c"], "{listing}");
    assert_eq!(line_of(RS2)[2..4], ["Tunnel", "gre:+c"], "{listing}");
    assert_eq!(
        line_of("10.63.0.13")[2..5],
        ["Tunnel", "ipip", "3"],
        "{listing}"
    );
    assert_eq!(
        line_of("10.63.0.14")[2..4],
        ["Tunnel", "gue:1:r+c"],
        "{listing}"
    );
    let saved = adm(&control, "-S -n", "").stdout;
    assert!(
        saved.contains(&format!(
            "-a -t {service} -r {RS1}:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n"
        )),
        "{saved}"
    );
    let json = snapshot_json(&control);
    assert_eq!(
        json_tunnel(&json, RS1),
        serde_json::json!({"type": "gue", "port": 6080, "checksum": "csum"})
    );

    // -e back to -m: the tunnel settings go with the method.
    both(
        &control,
        &mut table,
        &format!("-e -t {service} -r {RS1}:80 -m"),
    );
    assert_eq!(
        json_tunnel(&snapshot_json(&control), RS1),
        serde_json::json!({"type": "ipip", "port": 0, "checksum": "nocsum"})
    );
    // -C then -R of the save: the same table back.
    let saved = adm(&control, "-S -n", "").stdout;
    assert_eq!(adm(&control, "-C", "").code, 0);
    let restored = adm(&control, "-R", &saved);
    assert_eq!((restored.code, restored.stderr.as_str()), (0, ""));
    assert_eq!(adm(&control, "-S -n", "").stdout, saved);
    assert_eq!(
        adm(&control, "-Ln --tun-info", ""),
        reference(&mut table, "-Ln --tun-info", "")
    );
    stop(&keeplb);
}

/// keepalived.conf's `lb_kind TUN type gue port 6080 csum` reaches the service's real
/// servers, and a real server's own `lvs_method` its own: `-Ln --tun-info` and `-S -n`
/// list what ipvsadm lists after keepalived set the same table up.
#[test]
fn keepalived_tunnel_options_list_like_ipvsadm() {
    let site = Site::new("adm-tun-conf");
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind TUN type gue port 6080 csum\n    protocol TCP\n\
         \x20   real_server {RS1} 80 {{\n        weight 1\n    }}\n\
         \x20   real_server {RS2} 80 {{\n        weight 2\n        lvs_method TUN type gre\n    }}\n\
         \x20   real_server 10.63.0.13 80 {{\n        weight 3\n        lvs_method NAT\n    }}\n}}\n"
    );
    let keeplb = site.run(&conf);
    let control = site.control();
    wait_for("the three real servers are in the table", &keeplb, || {
        adm(&control, "-Ln", "")
            .stdout
            .matches("  -> 10.63.")
            .count()
            == 3
    });
    // What keepalived asks IPVS for, through ipvsadm.
    let mut table = MemoryTable::new();
    let service = format!("{VIP}:80");
    for line in [
        format!("-A -t {service} -s rr"),
        format!("-a -t {service} -r {RS1}:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum"),
        format!("-a -t {service} -r {RS2}:80 -i -w 2 --tun-type gre --tun-nocsum"),
        format!("-a -t {service} -r 10.63.0.13:80 -m -w 3"),
    ] {
        let printed = reference(&mut table, &line, "");
        assert_eq!((printed.code, printed.stderr.as_str()), (0, ""), "{line}");
    }
    for listing in ["-Ln --tun-info", "-S -n"] {
        let ours = adm(&control, listing, "");
        let theirs = reference(&mut table, listing, "");
        assert_eq!(ours.code, 0, "{ours:?}");
        assert_eq!(
            sorted_lines(&ours.stdout),
            sorted_lines(&theirs.stdout),
            "{listing}"
        );
    }
    let listing = adm(&control, "-Ln --tun-info", "").stdout;
    assert!(
        listing.lines().any(|l| words(l)[..]
            == [
                "->",
                &format!("{RS1}:80"),
                "Tunnel",
                "gue:6080:+c",
                "1",
                "0",
                "0"
            ]),
        "{listing}"
    );
    assert_eq!(
        json_tunnel(&snapshot_json(&control), RS1),
        serde_json::json!({"type": "gue", "port": 6080, "checksum": "csum"})
    );
    stop(&keeplb);
}
