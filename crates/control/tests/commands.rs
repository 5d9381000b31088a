//! What ipvsadm command lines mean once parsed: defaults, the order-dependent rules, and
//! the round trip of `-S -n`, `-C`, `-R`.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use keeplb_control::command::{ListFormat, ListTarget};
use keeplb_control::model::{
    DestConfig, Family, ForwardMethod, Netmask, Protocol, SchedFlags, ServiceConfig, ServiceKey,
    Timeouts, Tunnel, TunnelChecksum, TunnelType,
};
use keeplb_control::names::NoNames;
use keeplb_control::parse::parse_args;
use keeplb_control::table::MemoryTable;
use keeplb_control::{AdmCommand, AdmOutput, format, run};

fn parse(line: &str) -> AdmCommand {
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    parse_args("ipvsadm", &args, &NoNames).unwrap_or_else(|e| panic!("{line}: {e:?}"))
}

fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Addr {
        protocol: Protocol::Tcp,
        address: addr.parse().unwrap(),
        port,
    }
}

#[test]
fn add_service_takes_ipvsadm_defaults() {
    assert_eq!(
        parse("-A -t 10.0.0.1:80"),
        AdmCommand::AddService {
            service: ServiceConfig {
                key: tcp("10.0.0.1", 80),
                scheduler: "wlc".into(),
                sched_flags: SchedFlags::default(),
                persistent: None,
                netmask: Netmask::V4(Ipv4Addr::BROADCAST),
                one_packet: false,
                persistence_engine: None,
            }
        }
    );
    let AdmCommand::AddService { service } =
        parse("-A -t 10.0.0.1:80 -p -s sh -b sh-port -M 255.255.255.0")
    else {
        panic!()
    };
    assert_eq!(service.persistent, Some(300), "bare -p is 300 s");
    assert_eq!(service.scheduler, "sh");
    assert_eq!(
        service.sched_flags,
        SchedFlags {
            flag_1: false,
            flag_2: true,
            flag_3: false
        }
    );
    assert_eq!(
        service.netmask,
        Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
    );
    let AdmCommand::AddService { service } = parse("-A -t 10.0.0.1:80 -s verylongschedulername")
    else {
        panic!()
    };
    assert_eq!(
        service.scheduler, "verylongschedul",
        "the kernel keeps 15 bytes"
    );
}

#[test]
fn ipv6_and_fwmark_services() {
    let AdmCommand::AddService { service } = parse("-A -t [2001:db8::1]:443 -p 60 -M 64") else {
        panic!()
    };
    assert_eq!(
        service.key,
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            address: "2001:db8::1".parse().unwrap(),
            port: 443
        }
    );
    assert_eq!(service.netmask, Netmask::Prefix(64));
    // -M before the IPv6 address: the address resets the mask to /128, as in ipvsadm
    let AdmCommand::AddService { service } = parse("-A -M 64 -t [2001:db8::1]:443 -p") else {
        panic!()
    };
    assert_eq!(service.netmask, Netmask::Prefix(128));
    let AdmCommand::AddService { service } = parse("-A -f 7 -6 -s rr") else {
        panic!()
    };
    assert_eq!(
        service.key,
        ServiceKey::Fwmark {
            mark: 7,
            family: Family::Ipv6
        }
    );
    assert_eq!(service.netmask, Netmask::Prefix(128));
    assert_eq!(parse("-A -u 10.0.0.1:53 -o -s rr"), {
        let AdmCommand::AddService { mut service } = parse("-A -u 10.0.0.1:53 -s rr") else {
            panic!()
        };
        service.one_packet = true;
        AdmCommand::AddService { service }
    });
}

#[test]
fn real_servers_route_by_default_and_take_the_service_port() {
    let dest = |line: &str| match parse(line) {
        AdmCommand::AddDest { dest, .. } | AdmCommand::EditDest { dest, .. } => dest,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        dest("-a -t 10.0.0.1:80 -r 10.0.1.1:8080"),
        DestConfig {
            address: "10.0.1.1".parse().unwrap(),
            port: 80,
            forward: ForwardMethod::Route,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel::default(),
        },
        "direct routing cannot change the port"
    );
    let nat = dest("-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 3 -x 10 -y 5");
    assert_eq!(
        (nat.port, nat.forward, nat.weight),
        (8080, ForwardMethod::Masq, 3)
    );
    assert_eq!((nat.upper_threshold, nat.lower_threshold), (10, 5));
    assert_eq!(
        dest("-a -t 10.0.0.1:80 -r 10.0.1.1 -m").port,
        80,
        "no port: the service's"
    );
    assert_eq!(
        dest("-a -f 5 -r 10.0.1.1:8080").port,
        8080,
        "fwmark services keep the port"
    );
    let gue = dest("-a -t 10.0.0.1:80 -r 10.0.1.1 -i --tun-type gue --tun-port 6080 --tun-csum");
    assert_eq!(
        gue.tunnel,
        Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            checksum: TunnelChecksum::Csum
        }
    );
    // -e sends every field: the forwarding method falls back to -g when not given
    assert_eq!(
        dest("-e -t 10.0.0.1:80 -r 10.0.1.1 -w 5").forward,
        ForwardMethod::Route
    );
    // -d keeps the port it is given (no copy for deletions)
    assert_eq!(
        parse("-d -t 10.0.0.1:80 -r 10.0.1.1:8080"),
        AdmCommand::DeleteDest {
            service: tcp("10.0.0.1", 80),
            address: IpAddr::from([10, 0, 1, 1]),
            port: 8080
        }
    );
}

#[test]
fn listing_options_and_other_commands() {
    assert_eq!(
        parse("-Ln --stats --exact"),
        AdmCommand::List {
            target: ListTarget::All,
            format: ListFormat {
                numeric: true,
                stats: true,
                exact: true,
                ..ListFormat::default()
            }
        }
    );
    assert_eq!(
        parse("-l -c -n"),
        AdmCommand::List {
            target: ListTarget::Connections,
            format: ListFormat {
                numeric: true,
                ..ListFormat::default()
            }
        }
    );
    assert_eq!(
        parse("-L -n -t 10.0.0.1:80"),
        AdmCommand::List {
            target: ListTarget::Service {
                service: tcp("10.0.0.1", 80)
            },
            format: ListFormat {
                numeric: true,
                ..ListFormat::default()
            }
        }
    );
    assert!(matches!(
        parse("-L --timeout"),
        AdmCommand::List {
            target: ListTarget::Timeouts,
            ..
        }
    ));
    assert_eq!(parse("-S -n"), AdmCommand::Save { numeric: true });
    assert_eq!(parse("-Z"), AdmCommand::Zero { service: None });
    assert_eq!(
        parse("--zero -t 10.0.0.1:80"),
        AdmCommand::Zero {
            service: Some(tcp("10.0.0.1", 80))
        }
    );
    assert_eq!(
        parse("--set 900 120 0"),
        AdmCommand::SetTimeouts {
            timeouts: Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 0
            }
        }
    );
    assert_eq!(parse("--clear"), AdmCommand::Flush);
    assert_eq!(parse("-h -Q"), AdmCommand::Help);
    assert_eq!(parse("-v"), AdmCommand::Version);
    assert_eq!(parse("-R"), AdmCommand::Restore);
}

/// Runs `ipvsadm LINE` against `table` with `stdin` as standard input.
fn adm(table: &mut MemoryTable, line: &str, stdin: &str) -> AdmOutput {
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    run("ipvsadm", &args, &mut stdin.as_bytes(), table, &NoNames)
}

fn numeric_listing(table: &MemoryTable) -> String {
    let numeric = ListFormat {
        numeric: true,
        ..ListFormat::default()
    };
    format::list_all(table.content(), numeric, &NoNames)
}

#[test]
fn save_then_clear_then_restore_gives_back_the_table() {
    let mut table = MemoryTable::new();
    let setup = "-A -t 10.0.0.1:80 -s wrr -p 600 -M 255.255.255.0\n\
                 -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 3\n\
                 -a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 0\n\
                 -A -u 10.0.0.1:53 -s sh -b sh-fallback,sh-port -o\n\
                 -a -u 10.0.0.1:53 -r 10.0.2.1 -g\n\
                 -A -f 7 -6 -s mh -b mh-port --pe sip -p\n\
                 -a -f 7 -6 -r [2001:db8::5]:0 -i --tun-type gue --tun-port 6080 --tun-remcsum\n\
                 -a -f 7 -6 -r 192.0.2.9:0 -i --tun-type gre --tun-csum\n\
                 -A --sctp-service 10.0.0.3:9999\n";
    let restore = adm(&mut table, "-R", setup);
    assert_eq!((restore.exit_code, restore.stderr.as_str()), (0, ""));
    let saved = adm(&mut table, "-S -n", "");
    assert_eq!(saved.stdout.lines().count(), 9);
    let before = numeric_listing(&table);

    assert_eq!(adm(&mut table, "-C", "").exit_code, 0);
    assert!(table.content().services.is_empty());

    let back = adm(&mut table, "-R", &saved.stdout);
    assert_eq!((back.exit_code, back.stderr.as_str()), (0, ""));
    assert_eq!(adm(&mut table, "-S -n", "").stdout, saved.stdout);
    assert_eq!(numeric_listing(&table), before);
}

#[test]
fn restore_goes_on_after_kernel_errors_and_stops_at_parse_errors() {
    let mut table = MemoryTable::new();
    let input = "-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n-a -t 10.0.0.9:80 -r 10.0.1.1\n\
                 -A -t 10.0.0.2:80 -s nosuch\n-A -t 10.0.0.3:80\n";
    let out = adm(&mut table, "-R", input);
    let refusals =
        "Service already exists\nService not defined\nScheduler or persistence engine not found\n";
    assert_eq!(
        (out.exit_code, out.stderr.as_str()),
        (0, refusals),
        "the last line succeeded"
    );
    assert_eq!(table.content().services.len(), 2);

    let out = adm(
        &mut table,
        "-R",
        "-A -t 10.0.0.4:80\n-A -t 10.0.0.5\n-A -t 10.0.0.6:80\n",
    );
    let zero_port = "Zero port specified for non-persistent service\n";
    assert_eq!((out.exit_code, out.stderr.as_str()), (2, zero_port));
    assert_eq!(
        table.content().services.len(),
        3,
        "lines before the bad one stay applied"
    );

    let out = adm(
        &mut table,
        "-R",
        "-A -t 10.0.0.7:80\n-A -t\n-A -t 10.0.0.8:80\n",
    );
    assert_eq!(
        (out.exit_code, out.stderr.as_str()),
        (0, "-t: missing argument\n")
    );
    assert_eq!(
        table.content().services.len(),
        5,
        "a scanner error only skips its line"
    );
}

#[test]
fn kernel_checks_on_real_servers() {
    let mut table = MemoryTable::new();
    let mut refusal = |line: &str| {
        let out = adm(&mut table, line, "");
        (out.exit_code, out.stderr)
    };
    assert_eq!(refusal("-A -t 10.0.0.1:80"), (0, String::new()));
    let range = "Numerical result out of range\n".to_owned();
    assert_eq!(refusal("-a -t 10.0.0.1:80 -r 10.0.1.1 -y 5"), (255, range));
    assert_eq!(
        refusal("-a -t 10.0.0.1:80 -r 10.0.1.1 -x 10 -y 5"),
        (0, String::new())
    );
    let exists = "Destination already exists\n".to_owned();
    assert_eq!(refusal("-a -t 10.0.0.1:80 -r 10.0.1.1"), (255, exists));
    let absent = "No such destination\n".to_owned();
    assert_eq!(refusal("-d -t 10.0.0.1:80 -r 10.0.1.2"), (255, absent));
    assert_eq!(
        refusal("-Ln -t 10.0.0.2:80"),
        (1, "No such service\n".to_owned())
    );
    assert_eq!(refusal("--set 0 60 0"), (0, String::new()));
    let timeouts = adm(&mut table, "-L --timeout", "");
    assert_eq!(timeouts.stdout, "Timeout (tcp tcpfin udp): 900 60 300\n");
}
