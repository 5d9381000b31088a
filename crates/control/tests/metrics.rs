//! The metrics exposition from fixed inputs: exact lines of chosen series, label escaping,
//! counters typed as counters, and the OpenMetrics framing.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use keeplb_control::api::VrrpCounters;
use keeplb_control::metrics::{
    CheckKey, CheckResult, Metrics, RealServerHealth, VrrpInstanceMetrics, VrrpState, service_label,
};
use keeplb_control::names::NoNames;
use keeplb_control::snapshot::Stats;
use keeplb_control::table::MemoryTable;
use keeplb_control::{Snapshot, run};

/// A table built by ipvsadm command lines, with counters as the data plane would leave
/// them.
fn table() -> Snapshot {
    let mut table = MemoryTable::new();
    for line in [
        "-A -t 10.0.0.10:80 -s rr",
        "-a -t 10.0.0.10:80 -r 10.0.0.11:80 -m -w 3",
        "-a -t 10.0.0.10:80 -r 10.0.0.12:80 -m -w 0",
        "-A -u [2001:db8::1]:53 -s wlc",
        "-a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -m",
        "-A -f 7 -s rr",
    ] {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let output = run(
            "ipvsadm",
            &args,
            &mut std::io::empty(),
            &mut table,
            &NoNames,
        );
        assert_eq!(output.exit_code, 0, "{line}: {output:?}");
    }
    let snapshot = table.content_mut();
    let web = &mut snapshot.services[0];
    web.stats = Stats {
        conns: 1234,
        in_pkts: 10,
        out_pkts: 20,
        in_bytes: 5_000_000_000,
        out_bytes: 7,
        cps: 99,
        ..Stats::default()
    };
    for dest in &mut web.dests {
        if dest.config.address.to_string() == "10.0.0.11" {
            dest.active_conns = 5;
            dest.inactive_conns = 6;
            dest.persistent_conns = 1;
            dest.stats.conns = 1000;
            dest.stats.in_bytes = 4_000_000_000;
        } else {
            dest.stats.conns = 234;
        }
    }
    snapshot.clone()
}

fn rs(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// A real server of the web service with its checkers.
fn health(real_server: &str, up: bool, checkers: &[&str]) -> RealServerHealth {
    RealServerHealth {
        service: "TCP 10.0.0.10:80".into(),
        real_server: rs(real_server),
        up,
        checks: checkers
            .iter()
            .map(|c| CheckKey {
                service: "TCP 10.0.0.10:80".into(),
                real_server: rs(real_server),
                checker: (*c).to_owned(),
            })
            .collect(),
    }
}

fn vrrp() -> Vec<VrrpInstanceMetrics> {
    vec![
        VrrpInstanceMetrics {
            name: "VI_1".into(),
            state: VrrpState::Master,
            priority: 150,
            effective_priority: 140,
            counters: VrrpCounters {
                transitions: 3,
                became_master: 2,
                released_master: 1,
                adverts_sent: 4000,
                adverts_received: 12,
                priority_zero_sent: 1,
                priority_zero_received: 0,
                drops: vec![("auth_failure".into(), 2), ("ttl".into(), 5)],
            },
        },
        VrrpInstanceMetrics {
            name: "odd \"name\"\\with\nnewline".into(),
            state: VrrpState::Fault,
            ..VrrpInstanceMetrics::default()
        },
    ]
}

fn metrics() -> Metrics {
    let metrics = Metrics::new();
    metrics.set_ipvs(table());
    metrics.set_vrrp(vrrp());
    metrics.set_health(vec![
        health("10.0.0.11:80", true, &["HTTP_GET"]),
        health("10.0.0.12:80", false, &["TCP_CHECK"]),
    ]);
    let http = CheckKey {
        service: "TCP 10.0.0.10:80".into(),
        real_server: rs("10.0.0.11:80"),
        checker: "HTTP_GET".into(),
    };
    metrics.record_check(&http, CheckResult::Failed, Duration::from_millis(30));
    metrics.record_check(&http, CheckResult::Passed, Duration::from_micros(800));
    metrics.record_check(&http, CheckResult::Passed, Duration::from_secs(3));
    let tcp = CheckKey {
        service: "TCP 10.0.0.10:80".into(),
        real_server: rs("10.0.0.12:80"),
        checker: "TCP_CHECK".into(),
    };
    metrics.record_check(&tcp, CheckResult::TimedOut, Duration::from_secs(5));
    metrics
}

/// Asserts that `text` has every one of `expected` as a whole line.
fn assert_lines(text: &str, expected: &[&str]) {
    let lines: Vec<&str> = text.lines().collect();
    for line in expected {
        assert!(lines.contains(line), "missing line {line:?} in:\n{text}");
    }
}

/// The sample lines (not comments) of one family.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .collect()
}

#[test]
fn service_labels_follow_ipvsadm_numeric_names() {
    let snapshot = table();
    let labels: Vec<String> = snapshot
        .services
        .iter()
        .map(|s| service_label(&s.config.key))
        .collect();
    assert_eq!(
        labels,
        ["TCP 10.0.0.10:80", "UDP [2001:db8::1]:53", "FWM 7"]
    );
}

#[test]
fn vrrp_series() {
    let text = metrics().render();
    assert_lines(
        &text,
        &[
            "# HELP keeplb_vrrp_state VRRP state: 1 for the instance's current state, 0 for the others.",
            "# TYPE keeplb_vrrp_state gauge",
            r#"keeplb_vrrp_state{vrrp_instance="VI_1",state="INIT"} 0"#,
            r#"keeplb_vrrp_state{vrrp_instance="VI_1",state="MASTER"} 1"#,
            r#"keeplb_vrrp_priority{vrrp_instance="VI_1"} 150"#,
            r#"keeplb_vrrp_effective_priority{vrrp_instance="VI_1"} 140"#,
            "# TYPE keeplb_vrrp_transitions counter",
            r#"keeplb_vrrp_transitions_total{vrrp_instance="VI_1"} 3"#,
            r#"keeplb_vrrp_became_master_total{vrrp_instance="VI_1"} 2"#,
            r#"keeplb_vrrp_released_master_total{vrrp_instance="VI_1"} 1"#,
            r#"keeplb_vrrp_adverts_sent_total{vrrp_instance="VI_1"} 4000"#,
            r#"keeplb_vrrp_adverts_received_total{vrrp_instance="VI_1"} 12"#,
            r#"keeplb_vrrp_priority_zero_sent_total{vrrp_instance="VI_1"} 1"#,
            "# TYPE keeplb_vrrp_adverts_dropped counter",
            r#"keeplb_vrrp_adverts_dropped_total{vrrp_instance="VI_1",reason="auth_failure"} 2"#,
            r#"keeplb_vrrp_adverts_dropped_total{vrrp_instance="VI_1",reason="ttl"} 5"#,
        ],
    );
    // one series per state and instance, exactly one of them set per instance
    let states = samples(&text, "keeplb_vrrp_state");
    assert_eq!(states.len(), 8, "{states:#?}");
    assert_eq!(states.iter().filter(|l| l.ends_with(" 1")).count(), 2);
}

#[test]
fn label_values_are_escaped() {
    let text = metrics().render();
    assert_lines(
        &text,
        &[
            r#"keeplb_vrrp_state{vrrp_instance="odd \"name\"\\with\nnewline",state="FAULT"} 1"#,
            r#"keeplb_vrrp_priority{vrrp_instance="odd \"name\"\\with\nnewline"} 0"#,
        ],
    );
    // the raw newline never reaches the exposition: every line is a comment or a sample
    for line in text.lines() {
        assert!(
            line.starts_with("# ") || line.starts_with("keeplb_"),
            "stray line {line:?}"
        );
    }
}

#[test]
fn table_series() {
    let text = metrics().render();
    assert_lines(
        &text,
        &[
            "# TYPE keeplb_service_connections counter",
            r#"keeplb_service_connections_total{service="TCP 10.0.0.10:80"} 1234"#,
            r#"keeplb_service_connections_total{service="UDP [2001:db8::1]:53"} 0"#,
            r#"keeplb_service_connections_total{service="FWM 7"} 0"#,
            r#"keeplb_service_incoming_packets_total{service="TCP 10.0.0.10:80"} 10"#,
            r#"keeplb_service_outgoing_packets_total{service="TCP 10.0.0.10:80"} 20"#,
            "# TYPE keeplb_service_incoming_bytes counter",
            "# UNIT keeplb_service_incoming_bytes bytes",
            r#"keeplb_service_incoming_bytes_total{service="TCP 10.0.0.10:80"} 5000000000"#,
            r#"keeplb_service_outgoing_bytes_total{service="TCP 10.0.0.10:80"} 7"#,
            r#"keeplb_real_server_connections_total{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 1000"#,
            r#"keeplb_real_server_connections_total{service="TCP 10.0.0.10:80",real_server="10.0.0.12:80"} 234"#,
            r#"keeplb_real_server_incoming_bytes_total{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 4000000000"#,
            "# TYPE keeplb_real_server_weight gauge",
            r#"keeplb_real_server_weight{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 3"#,
            r#"keeplb_real_server_weight{service="TCP 10.0.0.10:80",real_server="10.0.0.12:80"} 0"#,
            r#"keeplb_real_server_weight{service="UDP [2001:db8::1]:53",real_server="[2001:db8::11]:53"} 1"#,
            r#"keeplb_real_server_active_connections{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 5"#,
            r#"keeplb_real_server_inactive_connections{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 6"#,
            r#"keeplb_real_server_persistent_connections{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 1"#,
        ],
    );
    // rates are the kernel's estimates: Prometheus derives its own from the counters
    assert!(!text.contains(" 99\n"), "{text}");
    // three real servers in the table, three weight series
    assert_eq!(samples(&text, "keeplb_real_server_weight").len(), 3);
}

#[test]
fn health_and_check_series() {
    let text = metrics().render();
    assert_lines(
        &text,
        &[
            r#"keeplb_real_server_up{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80"} 1"#,
            r#"keeplb_real_server_up{service="TCP 10.0.0.10:80",real_server="10.0.0.12:80"} 0"#,
            r#"keeplb_check_up{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 1"#,
            r#"keeplb_check_up{service="TCP 10.0.0.10:80",real_server="10.0.0.12:80",checker="TCP_CHECK"} 0"#,
            r#"keeplb_check_results_total{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET",result="passed"} 2"#,
            r#"keeplb_check_results_total{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET",result="failed"} 1"#,
            r#"keeplb_check_results_total{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET",result="timeout"} 0"#,
            r#"keeplb_check_results_total{service="TCP 10.0.0.10:80",real_server="10.0.0.12:80",checker="TCP_CHECK",result="timeout"} 1"#,
            "# TYPE keeplb_check_duration_seconds histogram",
            "# UNIT keeplb_check_duration_seconds seconds",
            r#"keeplb_check_duration_seconds_count{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 3"#,
            r#"keeplb_check_duration_seconds_bucket{le="0.0005",service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 0"#,
            r#"keeplb_check_duration_seconds_bucket{le="0.001",service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 1"#,
            r#"keeplb_check_duration_seconds_bucket{le="0.05",service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 2"#,
            r#"keeplb_check_duration_seconds_bucket{le="2.5",service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 2"#,
            r#"keeplb_check_duration_seconds_bucket{le="5.0",service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 3"#,
            r#"keeplb_check_duration_seconds_bucket{le="+Inf",service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 3"#,
        ],
    );
    let sum = samples(&text, "keeplb_check_duration_seconds_sum");
    let http_sum: f64 = sum[0].rsplit(' ').next().unwrap().parse().unwrap();
    assert!((http_sum - 3.0308).abs() < 1e-9, "{sum:?}");
}

#[test]
fn exposition_is_framed_and_ordered() {
    let text = metrics().render();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    // every family is described once, HELP then TYPE, before its samples
    let mut seen = std::collections::HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(seen.insert(name.to_owned()), "{name} described twice");
            assert!(
                lines[i + 1].starts_with(&format!("# TYPE {name} ")),
                "{name}: {}",
                lines[i + 1]
            );
        }
    }
    // the same inputs give the same text
    assert_eq!(text, metrics().render());
}

#[test]
fn updates_replace_and_forget() {
    let metrics = metrics();
    // a checker replaced on the same real server: its records go
    metrics.set_health(vec![
        health("10.0.0.11:80", true, &["HTTP_GET"]),
        health("10.0.0.12:80", true, &["MISC_CHECK"]),
    ]);
    let text = metrics.render();
    assert!(!text.contains("TCP_CHECK"), "{text}");
    assert_lines(
        &text,
        &[r#"keeplb_real_server_up{service="TCP 10.0.0.10:80",real_server="10.0.0.12:80"} 1"#],
    );
    // a reload removed 10.0.0.12, and gave 10.0.0.11 a second checker: the removed
    // server's health and check records go, the others stay
    metrics.set_health(vec![health(
        "10.0.0.11:80",
        true,
        &["HTTP_GET", "TCP_CHECK"],
    )]);
    metrics.set_ipvs(Snapshot::default());
    metrics.set_vrrp(Vec::new());
    let text = metrics.render();
    assert!(!text.contains("10.0.0.12"), "{text}");
    assert!(!text.contains("TCP_CHECK"), "{text}");
    assert!(!text.contains("keeplb_vrrp_state{"), "{text}");
    assert!(!text.contains("keeplb_real_server_weight{"), "{text}");
    assert_lines(
        &text,
        &[
            r#"keeplb_check_up{service="TCP 10.0.0.10:80",real_server="10.0.0.11:80",checker="HTTP_GET"} 1"#,
            // families stay described when empty
            "# TYPE keeplb_real_server_weight gauge",
        ],
    );
}

#[test]
fn extra_metrics_registered_by_the_daemon_share_the_prefix() {
    let mut metrics = Metrics::new();
    let reloads =
        keeplb_control::metrics::prometheus_client::metrics::counter::Counter::<u64>::default();
    metrics
        .registry_mut()
        .register("reloads", "Configuration reloads.", reloads.clone());
    reloads.inc();
    assert_lines(&metrics.render(), &["keeplb_reloads_total 1"]);
}
