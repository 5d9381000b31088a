//! keeplb's ipvsadm against the real one: every case in tests/golden/*.cases was run through
//! Debian's ipvsadm 1.31 with a stand-in for the kernel (tests/golden/capture.sh,
//! fake_ipvs.c) serving the table in tests/golden/table.txt, the connections in conn.txt
//! and the host names in hosts.txt, and its standard output, standard error and exit
//! status recorded in the .out files. Here the same command lines
//! run through `keeplb_control::run` against the same table and must give the same bytes.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::PathBuf;

use keeplb_control::model::{
    DestConfig, Family, ForwardMethod, Netmask, Protocol, SchedFlags, ServiceConfig, ServiceKey,
    Timeouts, Tunnel, TunnelChecksum, TunnelType,
};
use keeplb_control::names::NameFiles;
use keeplb_control::snapshot::{ConnEntry, DestEntry, ServiceEntry, Stats};
use keeplb_control::{AdmBackend, AdmCommand, KernelError, Snapshot, run};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(golden_dir().join(name)).expect("golden file")
}

/// The lines of /etc/services the table's ports need, the host names fake_ipvs.so gave
/// ipvsadm's reverse lookups (hosts.txt), and `localhost`, which a case resolves.
fn names() -> NameFiles {
    NameFiles::parse(
        "domain 53/tcp\ndomain 53/udp\nhttp 80/tcp www\nhttps 443/tcp\nhttps 443/udp\n\
         sip 5060/tcp\nsip 5060/udp\nmdns 5353/udp\nhttp-alt 8080/tcp webcache\n",
        &format!("{}127.0.0.1 localhost\n", read("hosts.txt")),
    )
}

/// An address as /proc/net/ip_vs_conn writes it: IPv4 in hex, IPv6 in full.
fn proc_address(text: &str) -> IpAddr {
    if text.contains(':') {
        text.parse().unwrap()
    } else {
        IpAddr::from(std::net::Ipv4Addr::from(
            u32::from_str_radix(text, 16).unwrap(),
        ))
    }
}

/// conn.txt, which fake_ipvs.so serves as /proc/net/ip_vs_conn.
fn connections() -> Vec<ConnEntry> {
    read("conn.txt")
        .lines()
        .skip(1)
        .map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let port = |i: usize| u16::from_str_radix(w[i], 16).unwrap();
            ConnEntry {
                protocol: w[0].to_owned(),
                client: proc_address(w[1]),
                client_port: port(2),
                virtual_address: proc_address(w[3]),
                virtual_port: port(4),
                dest: proc_address(w[5]),
                dest_port: port(6),
                state: w[7].to_owned(),
                expires: w[8].parse().unwrap(),
                persistence_engine: (w.len() == 11).then(|| (w[9].to_owned(), w[10].to_owned())),
            }
        })
        .collect()
}

fn stats(values: &[&str]) -> Stats {
    let n: Vec<u64> = values.iter().map(|v| v.parse().expect("number")).collect();
    Stats {
        conns: n[0],
        in_pkts: n[1],
        out_pkts: n[2],
        in_bytes: n[3],
        out_bytes: n[4],
        cps: n[5],
        in_pps: n[6],
        out_pps: n[7],
        in_bps: n[8],
        out_bps: n[9],
    }
}

/// table.txt as a Snapshot (its format is described in the file).
fn table() -> Snapshot {
    let mut snapshot = Snapshot {
        connections: connections(),
        ..Snapshot::default()
    };
    for line in read("table.txt").lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first() {
            Some(&"T") => {
                snapshot.timeouts = Timeouts {
                    tcp: w[1].parse().unwrap(),
                    tcp_fin: w[2].parse().unwrap(),
                    udp: w[3].parse().unwrap(),
                }
            }
            Some(&"S") => {
                let address: IpAddr = w[2].parse().unwrap();
                let family = Family::of(address);
                let fwmark: u32 = w[4].parse().unwrap();
                let key = if fwmark != 0 {
                    ServiceKey::Fwmark {
                        mark: fwmark,
                        family,
                    }
                } else {
                    let protocol = match w[1] {
                        "6" => Protocol::Tcp,
                        "17" => Protocol::Udp,
                        _ => Protocol::Sctp,
                    };
                    ServiceKey::Addr {
                        protocol,
                        address,
                        port: w[3].parse().unwrap(),
                    }
                };
                let flags: u32 = w[6].parse().unwrap();
                let netmask = match family {
                    Family::Ipv4 => Netmask::V4(w[8].parse().unwrap()),
                    Family::Ipv6 => Netmask::Prefix(w[8].parse().unwrap()),
                };
                snapshot.services.push(ServiceEntry {
                    config: ServiceConfig {
                        key,
                        scheduler: w[5].to_owned(),
                        sched_flags: SchedFlags {
                            flag_1: flags & 8 != 0,
                            flag_2: flags & 16 != 0,
                            flag_3: flags & 32 != 0,
                        },
                        persistent: (flags & 1 != 0).then(|| w[7].parse().unwrap()),
                        netmask,
                        one_packet: flags & 4 != 0,
                        persistence_engine: (w[9] != "-").then(|| w[9].to_owned()),
                    },
                    stats: stats(&w[10..20]),
                    dests: Vec::new(),
                });
            }
            Some(&"D") => {
                let n = |i: usize| -> u32 { w[i].parse().unwrap() };
                let dest = DestEntry {
                    config: DestConfig {
                        address: w[1].parse().unwrap(),
                        port: w[2].parse().unwrap(),
                        forward: [
                            ForwardMethod::Masq,
                            ForwardMethod::Local,
                            ForwardMethod::Tunnel,
                            ForwardMethod::Route,
                        ][w[3].parse::<usize>().unwrap()],
                        weight: n(4),
                        upper_threshold: n(5),
                        lower_threshold: n(6),
                        tunnel: Tunnel {
                            kind: [TunnelType::Ipip, TunnelType::Gue, TunnelType::Gre]
                                [w[10].parse::<usize>().unwrap()],
                            port: w[11].parse().unwrap(),
                            checksum: [
                                TunnelChecksum::NoCsum,
                                TunnelChecksum::Csum,
                                TunnelChecksum::RemCsum,
                            ][w[12].parse::<usize>().unwrap()],
                        },
                    },
                    active_conns: n(7),
                    inactive_conns: n(8),
                    persistent_conns: n(9),
                    stats: stats(&w[13..23]),
                };
                snapshot
                    .services
                    .last_mut()
                    .expect("S before D")
                    .dests
                    .push(dest);
            }
            _ => {}
        }
    }
    snapshot
}

/// The kernel stand-in fake_ipvs.so plays: the table, and every change failing with
/// `errno` when the case sets one.
struct FakeKernel {
    table: Snapshot,
    errno: Option<i32>,
    applied: Vec<AdmCommand>,
}

impl AdmBackend for FakeKernel {
    fn apply(&mut self, command: &AdmCommand) -> Result<(), KernelError> {
        self.applied.push(command.clone());
        match self.errno {
            Some(errno) => Err(KernelError::from_errno(errno)),
            None => Ok(()),
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        Ok(self.table.clone())
    }
}

struct Case {
    line: String,
    rc: i32,
    stdout: String,
    stderr: String,
}

fn cases(file: &str) -> Vec<Case> {
    let text = read(file);
    text.split("=== ")
        .skip(1)
        .map(|block| {
            let (line, rest) = block.split_once('\n').expect("case line");
            let (rc, rest) = rest.split_once("\n--- stdout\n").expect("rc");
            let (stdout, rest) = rest.split_once("--- stderr\n").expect("stderr");
            let stderr = rest.strip_suffix("--- end\n").expect("end");
            Case {
                line: line.to_owned(),
                rc: rc.trim_start_matches("rc ").parse().expect("rc"),
                stdout: stdout.to_owned(),
                stderr: stderr.to_owned(),
            }
        })
        .collect()
}

/// Runs a case line as capture.sh does: `errno=N` prefix, `< FILE` stdin.
fn run_case(line: &str) -> (keeplb_control::AdmOutput, Vec<AdmCommand>) {
    let mut words = line;
    let mut errno = None;
    if let Some(rest) = words.strip_prefix("errno=") {
        let (n, rest) = rest.split_once(' ').expect("errno value");
        errno = Some(n.parse().expect("errno"));
        words = rest;
    }
    let mut stdin = String::new();
    if let Some((args, file)) = words.split_once(" < ") {
        stdin = read(file);
        words = args;
    }
    let args: Vec<String> = words.split_whitespace().map(str::to_owned).collect();
    let mut kernel = FakeKernel {
        table: table(),
        errno,
        applied: Vec::new(),
    };
    let output = run(
        "ipvsadm",
        &args,
        &mut stdin.as_bytes(),
        &mut kernel,
        &names(),
    );
    (output, kernel.applied)
}

fn check(file: &str) {
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in cases(file) {
        compared += 1;
        let (output, _) = run_case(&case.line);
        if output.stdout != case.stdout
            || output.stderr != case.stderr
            || output.exit_code != case.rc
        {
            failures.push(format!(
                "=== {}\nexpected rc {} stdout {:?} stderr {:?}\n     got rc {} stdout {:?} stderr {:?}",
                case.line, case.rc, case.stdout, case.stderr, output.exit_code, output.stdout, output.stderr
            ));
        }
    }
    eprintln!("{file}: {compared} cases compared");
    assert!(compared > 20, "{file}: only {compared} cases");
    assert!(
        failures.is_empty(),
        "{} of {compared} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn listings_match_ipvsadm() {
    check("listings.out");
}

#[test]
fn command_lines_match_ipvsadm() {
    check("errors.out");
}

#[test]
fn restore_applies_what_ipvsadm_applies() {
    // weight 70000 is within Debian's limit (INT_MAX; upstream's is 65535): all three apply
    let (output, applied) = run_case("-R < restore-parse-error.txt");
    assert_eq!(output.exit_code, 0);
    assert_eq!(applied.len(), 3);
    // a `#` line is a command without an option: the hint, and nothing applied after it
    let (output, applied) = run_case("-R < restore-comment.txt");
    assert_eq!(output.exit_code, 255);
    assert!(applied.is_empty());
}
