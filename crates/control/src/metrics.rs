//! Prometheus metrics of the daemon: VRRP instances, the IPVS table, health checks.
//!
//! [`Metrics`] owns its own prometheus-client [`Registry`] (no process-wide globals). The
//! daemon hands it plain values — the table as a [`Snapshot`], each VRRP instance as
//! [`VrrpInstanceMetrics`], each real server's health as [`RealServerHealth`] — and every
//! scrape encodes the latest of them, so counters the table and the VRRP core already keep
//! are exposed as counters without being copied into prometheus-client's atomics. Only
//! check latencies are observed here ([`Metrics::record_check`]), because a histogram
//! cannot be rebuilt from a snapshot.
//!
//! Label values: `service` is ipvsadm's numeric listing name without the padding
//! (`TCP 10.0.0.10:80`, `UDP [2001:db8::1]:53`, `FWM 1`, `FWM 1 IPv6`, see
//! [`service_label`]); `real_server` is `10.0.0.11:80` or `[2001:db8::11]:80`; VRRP
//! families use `vrrp_instance`, not `instance`, which Prometheus itself sets to the
//! scraped target and would rename to `exported_instance`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{Family, ServiceKey};
use crate::snapshot::{DestEntry, ServiceEntry, Snapshot, Stats};

/// Prefix of every metric name.
const PREFIX: &str = "keeplb";

/// Upper bounds (seconds) of the check latency buckets: from a loopback TCP connect to
/// keepalived's longest usual timeouts.
const CHECK_LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`Metrics::render`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A VRRP state, as keepalived names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VrrpState {
    /// Not started, or shut down.
    #[default]
    Init,
    /// Backup.
    Backup,
    /// Master.
    Master,
    /// Fault.
    Fault,
}

impl VrrpState {
    /// Every state, in the order the `keeplb_vrrp_state` series are written.
    pub const ALL: [VrrpState; 4] = [
        VrrpState::Init,
        VrrpState::Backup,
        VrrpState::Master,
        VrrpState::Fault,
    ];

    /// keepalived's name: `INIT`, `BACKUP`, `MASTER`, `FAULT`.
    pub const fn name(self) -> &'static str {
        match self {
            VrrpState::Init => "INIT",
            VrrpState::Backup => "BACKUP",
            VrrpState::Master => "MASTER",
            VrrpState::Fault => "FAULT",
        }
    }
}

/// One VRRP instance as the metrics see it. Counts are totals since the daemon started
/// (monotonic), as the VRRP core keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VrrpInstanceMetrics {
    /// `vrrp_instance` name.
    pub name: String,
    /// Current state.
    pub state: VrrpState,
    /// Configured priority.
    pub priority: u8,
    /// Priority after tracking adjustments.
    pub effective_priority: u8,
    /// Advertisement and transition counters.
    pub counters: crate::api::VrrpCounters,
}

/// One real server's health as the checkers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerHealth {
    /// The virtual service, as [`service_label`] names it.
    pub service: String,
    /// The real server.
    pub real_server: SocketAddr,
    /// keepalived's `alive`: its checks say it is up (or it has none).
    pub up: bool,
    /// The keys its checkers' results are recorded under; records under other keys are
    /// dropped by [`Metrics::set_health`]. (The `service` of a check key may differ from
    /// the real server's: a `virtual_server group` names its checks after the group.)
    pub checks: Vec<CheckKey>,
}

/// Names one checker of one real server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckKey {
    /// The virtual service, as [`service_label`] names it.
    pub service: String,
    /// The real server checked.
    pub real_server: SocketAddr,
    /// The checker, e.g. `HTTP_GET`; give several checkers of one kind on one real server
    /// distinct names (`TCP_CHECK#2`).
    pub checker: String,
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckResult {
    /// The check passed.
    Passed,
    /// The check failed (refused, bad status, digest mismatch, script exit status…).
    Failed,
    /// The check ran out of time (connect, read/write or script timeout).
    TimedOut,
}

impl CheckResult {
    const ALL: [CheckResult; 3] = [
        CheckResult::Passed,
        CheckResult::Failed,
        CheckResult::TimedOut,
    ];

    /// The value of the `result` label.
    pub const fn name(self) -> &'static str {
        match self {
            CheckResult::Passed => "passed",
            CheckResult::Failed => "failed",
            CheckResult::TimedOut => "timeout",
        }
    }

    const fn index(self) -> usize {
        match self {
            CheckResult::Passed => 0,
            CheckResult::Failed => 1,
            CheckResult::TimedOut => 2,
        }
    }
}

/// The `service` label of a virtual service: ipvsadm's numeric name for it without the
/// column padding (`TCP 10.0.0.10:80`, `TCP [2001:db8::1]:443`, `FWM 7`, `FWM 7 IPv6`).
pub fn service_label(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr {
            protocol,
            address,
            port,
        } => format!(
            "{} {}",
            protocol.listing_name(),
            SocketAddr::new(*address, *port)
        ),
        ServiceKey::Fwmark {
            mark,
            family: Family::Ipv4,
        } => format!("FWM {mark}"),
        ServiceKey::Fwmark {
            mark,
            family: Family::Ipv6,
        } => format!("FWM {mark} IPv6"),
    }
}

/// What one checker has reported so far.
#[derive(Debug)]
struct CheckRecord {
    last: CheckResult,
    results: [u64; CheckResult::ALL.len()],
    latency: Histogram,
}

impl CheckRecord {
    fn new(first: CheckResult) -> CheckRecord {
        CheckRecord {
            last: first,
            results: [0; CheckResult::ALL.len()],
            latency: Histogram::new(CHECK_LATENCY_BUCKETS),
        }
    }
}

/// The latest inputs, read at each scrape.
#[derive(Debug, Default)]
struct Inputs {
    services: Vec<ServiceEntry>,
    vrrp: Vec<VrrpInstanceMetrics>,
    health: Vec<RealServerHealth>,
    checks: BTreeMap<CheckKey, CheckRecord>,
}

/// The collector registered in the registry; shares the inputs with [`Metrics`].
#[derive(Debug, Default)]
struct State(RwLock<Inputs>);

impl State {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inputs> {
        // A panic while updating leaves whole values behind (each update is one
        // assignment), so the data is still worth serving.
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inputs> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The daemon's metrics: a registry and the latest state it describes. Share it as
/// `Arc<Metrics>`; every method takes `&self` and holds a lock only briefly.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    state: Arc<State>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics: no services, instances or checks until they are set.
    pub fn new() -> Metrics {
        let state = Arc::new(State::default());
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(Arc::clone(&state)));
        Metrics { registry, state }
    }

    /// The registry, to register further metrics (before sharing the [`Metrics`]); they
    /// get the `keeplb_` prefix too.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Replaces the table: services, real servers, their connection counts, weights and
    /// counters. Connection entries are not kept.
    pub fn set_ipvs(&self, snapshot: Snapshot) {
        self.state.write().services = snapshot.services;
    }

    /// Replaces the VRRP instances.
    pub fn set_vrrp(&self, instances: Vec<VrrpInstanceMetrics>) {
        self.state.write().vrrp = instances;
    }

    /// Replaces the real servers' health. Check records of checkers no longer listed are
    /// forgotten (a reload removed them or their real server), so their series go.
    pub fn set_health(&self, real_servers: Vec<RealServerHealth>) {
        let mut inputs = self.state.write();
        inputs
            .checks
            .retain(|key, _| real_servers.iter().any(|rs| rs.checks.contains(key)));
        inputs.health = real_servers;
    }

    /// Counts one check's result and observes how long it took.
    pub fn record_check(&self, key: &CheckKey, result: CheckResult, latency: Duration) {
        let mut inputs = self.state.write();
        let record = match inputs.checks.get_mut(key) {
            Some(record) => record,
            None => inputs
                .checks
                .entry(key.clone())
                .or_insert_with(|| CheckRecord::new(result)),
        };
        record.last = result;
        record.results[result.index()] += 1;
        record.latency.observe(latency.as_secs_f64());
    }

    /// The OpenMetrics text exposition, ending in `# EOF`
    /// ([`OPENMETRICS_CONTENT_TYPE`]). Encoding into memory does not fail; if it ever
    /// did, the error is logged and the text is returned without `# EOF`, which
    /// Prometheus rejects rather than storing a partial scrape.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "metrics encoding failed");
        }
        text
    }
}

/// How a family's samples are typed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// A metric family's name (without prefix and suffixes), help and type.
struct Descriptor<'a> {
    name: &'a str,
    help: &'a str,
    unit: Option<Unit>,
    kind: Kind,
}

const fn counter<'a>(name: &'a str, help: &'a str) -> Descriptor<'a> {
    Descriptor {
        name,
        help,
        unit: None,
        kind: Kind::Counter,
    }
}

const fn gauge<'a>(name: &'a str, help: &'a str) -> Descriptor<'a> {
    Descriptor {
        name,
        help,
        unit: None,
        kind: Kind::Gauge,
    }
}

/// A family with one sample per `T`, and how to read the sample from it.
type Field<T> = (Descriptor<'static>, fn(&T) -> u64);

/// Writes one family with one sample per label set.
fn family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    descriptor: &Descriptor,
    samples: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let metric_type = match descriptor.kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
    };
    let mut metric = encoder.encode_descriptor(
        descriptor.name,
        descriptor.help,
        descriptor.unit.as_ref(),
        metric_type,
    )?;
    for (labels, value) in samples {
        let mut sample = metric.encode_family(&labels)?;
        match descriptor.kind {
            Kind::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            Kind::Gauge => sample.encode_gauge(&value)?,
        }
    }
    Ok(())
}

/// A service's labels and entry, computed once per scrape.
struct ServiceRow<'a> {
    label: String,
    entry: &'a ServiceEntry,
    dests: Vec<(String, &'a DestEntry)>,
}

/// The traffic counters of a service or real server: name, help, unit, field.
type TrafficField = (&'static str, &'static str, Option<Unit>, fn(&Stats) -> u64);

/// Traffic counters; the name follows `service_` or `real_server_`.
fn traffic_fields() -> [TrafficField; 5] {
    [
        ("connections", "Connections scheduled.", None, |s| s.conns),
        ("incoming_packets", "Packets in.", None, |s| s.in_pkts),
        ("outgoing_packets", "Packets out.", None, |s| s.out_pkts),
        ("incoming", "Bytes in.", Some(Unit::Bytes), |s| s.in_bytes),
        ("outgoing", "Bytes out.", Some(Unit::Bytes), |s| s.out_bytes),
    ]
}

fn encode_vrrp(encoder: &mut DescriptorEncoder, vrrp: &[VrrpInstanceMetrics]) -> fmt::Result {
    family(
        encoder,
        &gauge(
            "vrrp_state",
            "VRRP state: 1 for the instance's current state, 0 for the others.",
        ),
        vrrp.iter().flat_map(|instance| {
            VrrpState::ALL.into_iter().map(move |state| {
                (
                    [
                        ("vrrp_instance", instance.name.as_str()),
                        ("state", state.name()),
                    ],
                    u64::from(instance.state == state),
                )
            })
        }),
    )?;
    let per_instance: [Field<VrrpInstanceMetrics>; 9] = [
        (gauge("vrrp_priority", "Configured priority."), |i| {
            u64::from(i.priority)
        }),
        (
            gauge(
                "vrrp_effective_priority",
                "Priority after tracking adjustments.",
            ),
            |i| u64::from(i.effective_priority),
        ),
        (counter("vrrp_transitions", "State changes."), |i| {
            i.counters.transitions
        }),
        (
            counter("vrrp_became_master", "Transitions to MASTER."),
            |i| i.counters.became_master,
        ),
        (
            counter("vrrp_released_master", "Transitions out of MASTER."),
            |i| i.counters.released_master,
        ),
        (counter("vrrp_adverts_sent", "Advertisements sent."), |i| {
            i.counters.adverts_sent
        }),
        (
            counter(
                "vrrp_adverts_received",
                "Advertisements received that passed every check.",
            ),
            |i| i.counters.adverts_received,
        ),
        (
            counter("vrrp_priority_zero_sent", "Priority 0 advertisements sent."),
            |i| i.counters.priority_zero_sent,
        ),
        (
            counter(
                "vrrp_priority_zero_received",
                "Priority 0 advertisements received.",
            ),
            |i| i.counters.priority_zero_received,
        ),
    ];
    for (descriptor, value) in &per_instance {
        family(
            encoder,
            descriptor,
            vrrp.iter()
                .map(|instance| ([("vrrp_instance", instance.name.as_str())], value(instance))),
        )?;
    }
    family(
        encoder,
        &counter(
            "vrrp_adverts_dropped",
            "Received VRRP datagrams dropped, by reason.",
        ),
        vrrp.iter().flat_map(|instance| {
            instance.counters.drops.iter().map(move |(reason, count)| {
                (
                    [
                        ("vrrp_instance", instance.name.as_str()),
                        ("reason", reason.as_str()),
                    ],
                    *count,
                )
            })
        }),
    )
}

fn encode_ipvs(encoder: &mut DescriptorEncoder, services: &[ServiceEntry]) -> fmt::Result {
    let rows: Vec<ServiceRow> = services
        .iter()
        .map(|entry| ServiceRow {
            label: service_label(&entry.config.key),
            entry,
            dests: entry
                .dests
                .iter()
                .map(|dest| {
                    let addr = SocketAddr::new(dest.config.address, dest.config.port);
                    (addr.to_string(), dest)
                })
                .collect(),
        })
        .collect();
    let dests = || {
        rows.iter().flat_map(|row| {
            row.dests.iter().map(move |(label, dest)| {
                (
                    [
                        ("service", row.label.as_str()),
                        ("real_server", label.as_str()),
                    ],
                    *dest,
                )
            })
        })
    };
    for (suffix, help, unit, field) in traffic_fields() {
        let name = format!("service_{suffix}");
        let descriptor = Descriptor {
            unit: unit.clone(),
            ..counter(&name, help)
        };
        family(
            encoder,
            &descriptor,
            rows.iter()
                .map(|row| ([("service", row.label.as_str())], field(&row.entry.stats))),
        )?;
        let name = format!("real_server_{suffix}");
        let descriptor = Descriptor {
            unit,
            ..counter(&name, help)
        };
        family(
            encoder,
            &descriptor,
            dests().map(|(labels, dest)| (labels, field(&dest.stats))),
        )?;
    }
    let per_dest: [Field<DestEntry>; 4] = [
        (gauge("real_server_weight", "Weight in the table."), |d| {
            u64::from(d.config.weight)
        }),
        (
            gauge(
                "real_server_active_connections",
                "ActiveConn: established connections.",
            ),
            |d| u64::from(d.active_conns),
        ),
        (
            gauge(
                "real_server_inactive_connections",
                "InActConn: connections in any other state.",
            ),
            |d| u64::from(d.inactive_conns),
        ),
        (
            gauge(
                "real_server_persistent_connections",
                "PersistConn: persistence templates pointing to the real server.",
            ),
            |d| u64::from(d.persistent_conns),
        ),
    ];
    for (descriptor, value) in &per_dest {
        family(
            encoder,
            descriptor,
            dests().map(|(labels, dest)| (labels, value(dest))),
        )?;
    }
    Ok(())
}

/// A check's labels: its real server's text, and its key.
fn check_labels<'a>(
    (real_server, key, _): &'a (String, &CheckKey, &CheckRecord),
) -> [(&'static str, &'a str); 3] {
    [
        ("service", key.service.as_str()),
        ("real_server", real_server.as_str()),
        ("checker", key.checker.as_str()),
    ]
}

fn encode_health(encoder: &mut DescriptorEncoder, inputs: &Inputs) -> fmt::Result {
    let real_servers: Vec<(&str, String, bool)> = inputs
        .health
        .iter()
        .map(|rs| (rs.service.as_str(), rs.real_server.to_string(), rs.up))
        .collect();
    family(
        encoder,
        &gauge(
            "real_server_up",
            "1 while the real server's checks say it is up (keepalived's alive), 0 while they say it is down.",
        ),
        real_servers.iter().map(|(service, real_server, up)| {
            (
                [("service", *service), ("real_server", real_server.as_str())],
                u64::from(*up),
            )
        }),
    )?;
    let checks: Vec<(String, &CheckKey, &CheckRecord)> = inputs
        .checks
        .iter()
        .map(|(key, record)| (key.real_server.to_string(), key, record))
        .collect();
    family(
        encoder,
        &gauge("check_up", "1 when the checker's last check passed."),
        checks.iter().map(|check| {
            (
                check_labels(check),
                u64::from(check.2.last == CheckResult::Passed),
            )
        }),
    )?;
    family(
        encoder,
        &counter("check_results", "Checks run, by result."),
        checks.iter().flat_map(|check| {
            let [service, real_server, checker] = check_labels(check);
            CheckResult::ALL.into_iter().map(move |result| {
                (
                    [service, real_server, checker, ("result", result.name())],
                    check.2.results[result.index()],
                )
            })
        }),
    )?;
    let mut metric = encoder.encode_descriptor(
        "check_duration",
        "How long checks took.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for check in &checks {
        check
            .2
            .latency
            .encode(metric.encode_family(&check_labels(check))?)?;
    }
    Ok(())
}

impl Collector for State {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let inputs = self.read();
        encode_vrrp(&mut encoder, &inputs.vrrp)?;
        encode_ipvs(&mut encoder, &inputs.services)?;
        encode_health(&mut encoder, &inputs)
    }
}
