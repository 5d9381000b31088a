//! `keeplb status [--json] [--control PATH]`: the cluster at a glance, from the running
//! daemon: every VRRP instance and every virtual service with its real servers, weights
//! and counters. Also `keeplb reload`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use keeplb_control::api::{ApiError, Request, RequestBody, ResponseBody, StatusReport, Transport};
use keeplb_control::model::ServiceKey;
use keeplb_control::socket::ControlClient;

use crate::adm_cmd::EXIT_UNREACHABLE;

const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon's control socket, or the reason it cannot be reached, said as
/// `keeplb adm` says it.
fn connect(control: &Path) -> Result<ControlClient, ExitCode> {
    ControlClient::connect(control, ANSWER_TIMEOUT).map_err(|error| {
        eprintln!(
            "keeplb: cannot reach the keeplb daemon at {}: {error} (is `keeplb run` running, with this --control path?)",
            control.display()
        );
        ExitCode::from(EXIT_UNREACHABLE)
    })
}

/// Runs `keeplb reload`: the daemon reads its configuration file again. Exit 1 with
/// the diagnostics when the file is invalid (the daemon keeps the old one).
pub fn reload(control: &Path) -> anyhow::Result<ExitCode> {
    let mut client = match connect(control) {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let response = client
        .call(&Request::new(RequestBody::Reload))
        .context("asking the daemon to reload")?;
    match response.body {
        ResponseBody::Reloaded => {
            eprintln!("keeplb: configuration reloaded");
            Ok(ExitCode::SUCCESS)
        }
        ResponseBody::Error {
            error: error @ (ApiError::PartlyApplied { .. } | ApiError::ReloadPending),
        } => {
            eprintln!("keeplb: {error}");
            Ok(ExitCode::FAILURE)
        }
        ResponseBody::Error { error } => {
            eprintln!("keeplb: reload refused; the running configuration stays\n{error}");
            Ok(ExitCode::FAILURE)
        }
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

/// Runs `keeplb status`.
pub fn run(control: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = match connect(control) {
        Ok(client) => client,
        Err(code) => return Ok(code),
    };
    let response = client
        .call(&Request::new(RequestBody::Status))
        .context("asking the daemon for its status")?;
    let status = match response.body {
        ResponseBody::Status { status } => status,
        ResponseBody::Error { error } => bail!("the daemon refused: {error}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    };
    let text = if json {
        let mut text = serde_json::to_string_pretty(&status).context("serialising the status")?;
        text.push('\n');
        text
    } else {
        human(&status)
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn service_name(key: &ServiceKey) -> String {
    match *key {
        ServiceKey::Addr {
            protocol,
            address,
            port,
        } => format!(
            "{:<4} {}",
            protocol.listing_name(),
            SocketAddr::new(address, port)
        ),
        ServiceKey::Fwmark { mark, .. } => format!("FWM  {mark}"),
    }
}

/// The status as a table: one line per service, one per real server under it.
pub fn human(status: &StatusReport) -> String {
    let mut out = String::new();
    out.push_str("VRRP instances\n");
    if status.vrrp_instances.is_empty() {
        out.push_str("  (none reported)\n");
    }
    for vrrp in &status.vrrp_instances {
        let _ = write!(
            out,
            "  {:<20} {:<7} priority {} (effective {}) VIPs {}",
            vrrp.name,
            vrrp.state,
            vrrp.priority,
            vrrp.effective_priority,
            vrrp.virtual_addresses.join(" ")
        );
        if let Some(master) = vrrp.master {
            let _ = write!(out, ", master {master}");
        }
        if let Some(last) = &vrrp.last_transition {
            let _ = write!(out, "; {} -> {}", last.from, last.to);
            if !last.cause.is_empty() {
                let _ = write!(out, " ({})", last.cause);
            }
        }
        out.push('\n');
    }
    out.push_str("\nVirtual services\n");
    if status.services.is_empty() {
        out.push_str("  (none)\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<30} {:<9} {:<8} {:>10} {:>12} {:>12}",
        "Prot Service", "Scheduler", "Persist", "Conns", "InBytes", "OutBytes"
    );
    let _ = writeln!(
        out,
        "  -> {:<25} {:<7} {:<6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "Real server",
        "Forward",
        "Health",
        "Weight",
        "Config",
        "ActiveConn",
        "InActConn",
        "Conns",
        "InBytes",
        "OutBytes"
    );
    for service in &status.services {
        let config = &service.service;
        let persist = config
            .persistent
            .map_or_else(|| "-".to_owned(), |t| format!("{t}s"));
        let _ = writeln!(
            out,
            "{:<30} {:<9} {:<8} {:>10} {:>12} {:>12}",
            service_name(&config.key),
            config.scheduler,
            persist,
            service.stats.conns,
            service.stats.in_bytes,
            service.stats.out_bytes
        );
        if service.real_servers.is_empty() {
            out.push_str("  (no real server)\n");
        }
        for rs in &service.real_servers {
            // the weight in the table, none when the real server is out of it
            let weight = if rs.in_table {
                rs.effective_weight.to_string()
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "  -> {:<25} {:<7} {:<6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>12} {:>12}",
                SocketAddr::new(rs.address, rs.port).to_string(),
                rs.forward.listing_name(),
                if rs.healthy { "up" } else { "down" },
                weight,
                rs.weight,
                rs.active_conns,
                rs.inactive_conns,
                rs.stats.conns,
                rs.stats.in_bytes,
                rs.stats.out_bytes
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use keeplb_control::api::{RealServerStatus, ServiceStatus};
    use keeplb_control::model::{
        Family, ForwardMethod, Netmask, Protocol, SchedFlags, ServiceConfig,
    };
    use keeplb_control::snapshot::{Snapshot, Stats};
    use keeplb_control::table::MemoryTable;

    #[test]
    fn every_service_and_real_server_gets_a_line() {
        let mut table = MemoryTable::new();
        for line in [
            "-A -t 10.0.0.1:80 -s wrr -p 60",
            "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -m -w 3",
            "-a -t 10.0.0.1:80 -r 10.0.0.3:80 -m -w 0",
            "-A -u 10.0.0.1:53",
        ] {
            let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            let out = keeplb_control::run(
                "ipvsadm",
                &args,
                &mut std::io::empty(),
                &mut table,
                &keeplb_control::names::NoNames,
            );
            assert_eq!(out.exit_code, 0, "{line}: {}", out.stderr);
        }
        // the table lists the last added real server (10.0.0.3) first
        table.content_mut().services[0].dests[1].active_conns = 7;
        let snapshot: Snapshot = table.content().clone();
        let status = StatusReport {
            vrrp_instances: Vec::new(),
            services: StatusReport::services_from(&snapshot),
        };
        let text = human(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(text.contains("(none reported)"), "{text}");
        let service = lines
            .iter()
            .position(|l| l.starts_with("TCP  10.0.0.1:80"))
            .expect(&text);
        assert!(lines[service].contains("wrr") && lines[service].contains("60s"));
        let rs3 = lines[service + 1];
        assert!(
            rs3.contains("10.0.0.3:80") && rs3.contains("Masq"),
            "{text}"
        );
        let rs2: Vec<&str> = lines[service + 2].split_whitespace().collect();
        assert_eq!(
            rs2[1..8],
            ["10.0.0.2:80", "Masq", "up", "3", "3", "7", "0"],
            "{text}"
        );
        assert!(text.contains("UDP  10.0.0.1:53"), "{text}");
        assert!(text.contains("(no real server)"), "{text}");
    }

    #[test]
    fn failed_real_servers_show_down_with_their_configured_weight() {
        let rs = |address: &str, healthy, effective_weight, in_table| RealServerStatus {
            address: address.parse().unwrap(),
            port: 8080,
            healthy,
            weight: 2,
            effective_weight,
            in_table,
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            forward: ForwardMethod::Masq,
            tunnel: None,
            stats: Stats::default(),
        };
        let status = StatusReport {
            vrrp_instances: Vec::new(),
            services: vec![ServiceStatus {
                service: ServiceConfig {
                    key: ServiceKey::Addr {
                        protocol: Protocol::Tcp,
                        address: "10.99.0.1".parse().unwrap(),
                        port: 80,
                    },
                    scheduler: "rr".into(),
                    sched_flags: SchedFlags::default(),
                    persistent: None,
                    netmask: Netmask::full(Family::Ipv4),
                    one_packet: false,
                    persistence_engine: None,
                },
                stats: Stats::default(),
                real_servers: vec![
                    rs("10.99.1.1", true, 2, true),
                    rs("10.99.1.2", false, 0, false),
                    rs("10.99.1.3", false, 0, true),
                ],
            }],
        };
        let text = human(&status);
        let columns = |address: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.contains(address)).expect(&text);
            line.split_whitespace()
                .skip(1)
                .take(5)
                .map(str::to_owned)
                .collect()
        };
        let expect = |v: [&str; 5]| v.map(str::to_owned).to_vec();
        assert_eq!(
            columns("10.99.1.1"),
            expect(["10.99.1.1:8080", "Masq", "up", "2", "2"])
        );
        assert_eq!(
            columns("10.99.1.2"),
            expect(["10.99.1.2:8080", "Masq", "down", "-", "2"])
        );
        assert_eq!(
            columns("10.99.1.3"),
            expect(["10.99.1.3:8080", "Masq", "down", "0", "2"])
        );
    }
}
