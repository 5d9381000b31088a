//! The control API: versioned JSON requests and responses, one object per line on the
//! control socket.
//!
//! ```json
//! {"version":1,"request":"adm","command":{"command":"add_service","service":{…}}}
//! {"version":1,"response":"done"}
//! {"version":1,"response":"error","error":{"kind":"kernel","error":"no_such_service","operation":"add_dest","message":"Service not defined"}}
//! ```

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::adm::AdmBackend;
use crate::command::AdmCommand;
use crate::error::{KernelError, Operation};
use crate::model::{ForwardMethod, ServiceKey};
use crate::snapshot::Snapshot;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What is asked.
    #[serde(flatten)]
    pub body: RequestBody,
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum RequestBody {
    /// Apply one table-changing ipvsadm command.
    Adm {
        /// The command.
        command: AdmCommand,
    },
    /// The current table, for listings.
    Snapshot,
    /// The state of the cluster (`keeplb status`).
    Status,
    /// Re-read the configuration and apply the difference (`keeplb reload`).
    Reload,
}

impl RequestBody {
    /// True when answering the request may change the daemon (its table, its
    /// configuration): everything but status, snapshots and the adm commands that only
    /// read (listings, `--save`, help, version). The HTTP listener answers these only to
    /// a client holding the bearer token.
    pub fn changes_state(&self) -> bool {
        match self {
            RequestBody::Snapshot | RequestBody::Status => false,
            RequestBody::Adm { command } => command.modifies_table(),
            RequestBody::Reload => true,
        }
    }
}

impl Request {
    /// A request of the current version.
    pub fn new(body: RequestBody) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// A response from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The answer.
    #[serde(flatten)]
    pub body: ResponseBody,
}

impl Response {
    /// A response of the current version.
    pub fn new(body: ResponseBody) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            body,
        }
    }

    /// The error response for a failed table operation.
    pub fn kernel_error(error: KernelError, operation: Operation) -> Response {
        Response::new(ResponseBody::Error {
            error: ApiError::Kernel {
                error,
                operation,
                message: error.message(operation),
            },
        })
    }
}

/// What a response says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum ResponseBody {
    /// The command was applied.
    Done,
    /// The table.
    Snapshot {
        /// Its content.
        snapshot: Snapshot,
    },
    /// The cluster's state.
    Status {
        /// Its content.
        status: StatusReport,
    },
    /// The new configuration is running.
    Reloaded,
    /// The request failed.
    Error {
        /// Why.
        error: ApiError,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApiError {
    /// The table refused the operation; `message` is what ipvsadm prints.
    #[error("{message}")]
    Kernel {
        /// The error.
        error: KernelError,
        /// The operation that failed.
        operation: Operation,
        /// ipvsadm's message for it.
        message: String,
    },
    /// The new configuration is invalid; the daemon keeps running the old one.
    #[error("configuration rejected: {}", diagnostics.join("; "))]
    ConfigRejected {
        /// Diagnostics with file:line.
        diagnostics: Vec<String>,
    },
    /// The new configuration was applied, but these parts of it could not be served
    /// (a virtual server whose port is taken, say); the rest is in force.
    #[error("configuration applied in part: {}", failures.join("; "))]
    PartlyApplied {
        /// What could not be served, and why.
        failures: Vec<String>,
    },
    /// The daemon is stopping and takes no more changes.
    #[error("the daemon is stopping")]
    Stopping,
    /// The reload is still being applied when the daemon answers (the health checks of
    /// the old configuration take long to finish): its outcome goes to the daemon's log.
    #[error("reload still being applied; its outcome goes to the daemon's log")]
    ReloadPending,
    /// The request could not be read.
    #[error("bad request: {message}")]
    BadRequest {
        /// Why.
        message: String,
    },
    /// The request's protocol version is not spoken here.
    #[error("unsupported protocol version {requested} (this daemon speaks {supported})")]
    UnsupportedVersion {
        /// Version asked for.
        requested: u32,
        /// Version spoken.
        supported: u32,
    },
    /// The request would change the daemon, and the client may not (over HTTP: no
    /// bearer token is configured, so the API is read-only).
    #[error("forbidden: {message}")]
    Forbidden {
        /// Why, and how to allow it.
        message: String,
    },
}

/// The state of the cluster at a glance (`keeplb status`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatusReport {
    /// Every VRRP instance.
    #[serde(default)]
    pub vrrp_instances: Vec<VrrpInstanceStatus>,
    /// Every virtual service with its real servers.
    #[serde(default)]
    pub services: Vec<ServiceStatus>,
}

impl StatusReport {
    /// The services part of a status read from the table alone, for a table without
    /// health checks: every real server listed counts as up, at its weight in the table.
    pub fn services_from(snapshot: &Snapshot) -> Vec<ServiceStatus> {
        Self::services_with_health(snapshot, &[], |_, _| {
            (ForwardMethod::Route, crate::model::Tunnel::default())
        })
    }

    /// The services part of a status: every service of the table, with first every real
    /// server the configuration gives it (`health`: its configured weight and what its
    /// checks say, whether the checks keep it in the table or not), then the real servers
    /// of the table the configuration does not give it (added with `keeplb adm -a`: no
    /// checks, so up, at their weight in the table). `forward_of` gives the forwarding
    /// method asked for a configured real server that is not in the table.
    pub fn services_with_health(
        snapshot: &Snapshot,
        health: &[ServiceHealth],
        forward_of: impl Fn(&ServiceKey, SocketAddr) -> (ForwardMethod, crate::model::Tunnel),
    ) -> Vec<ServiceStatus> {
        snapshot
            .services
            .iter()
            .map(|service| {
                let key = &service.config.key;
                let configured = ServiceHealth::real_servers_of(health, key);
                let in_table = |address: SocketAddr| {
                    service
                        .dests
                        .iter()
                        .find(|d| SocketAddr::new(d.config.address, d.config.port) == address)
                };
                let checked = configured.iter().map(|rs| match in_table(rs.address) {
                    Some(dest) => RealServerStatus {
                        healthy: rs.up,
                        weight: rs.weight,
                        ..RealServerStatus::listed(dest)
                    },
                    None => {
                        let (forward, tunnel) = forward_of(key, rs.address);
                        RealServerStatus {
                            address: rs.address.ip(),
                            port: rs.address.port(),
                            healthy: rs.up,
                            weight: rs.weight,
                            effective_weight: 0,
                            in_table: false,
                            active_conns: 0,
                            inactive_conns: 0,
                            persistent_conns: 0,
                            forward,
                            tunnel: (forward == ForwardMethod::Tunnel).then_some(tunnel),
                            stats: crate::snapshot::Stats::default(),
                        }
                    }
                });
                let added_by_hand = service
                    .dests
                    .iter()
                    .filter(|d| {
                        let address = SocketAddr::new(d.config.address, d.config.port);
                        !configured.iter().any(|rs| rs.address == address)
                    })
                    .map(RealServerStatus::listed);
                ServiceStatus {
                    service: service.config.clone(),
                    stats: service.stats,
                    real_servers: checked.chain(added_by_hand).collect(),
                }
            })
            .collect()
    }
}

/// What the health checks say of the real servers the configuration gives one service
/// (whether they are in the table now or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The service.
    pub service: ServiceKey,
    /// Its configured real servers, in the configuration's order.
    pub real_servers: Vec<ConfiguredRealServer>,
}

impl ServiceHealth {
    /// The configured real servers of `service` in `health` (none when it has none).
    pub fn real_servers_of<'a>(
        health: &'a [ServiceHealth],
        service: &ServiceKey,
    ) -> &'a [ConfiguredRealServer] {
        health
            .iter()
            .find(|h| h.service == *service)
            .map_or(&[], |h| h.real_servers.as_slice())
    }
}

/// A configured real server and what its checks say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredRealServer {
    /// Its address and port.
    pub address: SocketAddr,
    /// Its configured `weight`.
    pub weight: u32,
    /// keepalived's `alive`: its checks pass (or it has none).
    pub up: bool,
    /// The keys its checkers' results are recorded under in the metrics.
    pub checks: Vec<crate::metrics::CheckKey>,
}

/// One VRRP instance's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpInstanceStatus {
    /// `vrrp_instance` name.
    pub name: String,
    /// `INIT`, `BACKUP`, `MASTER`, `FAULT`.
    pub state: String,
    /// Configured priority.
    pub priority: u8,
    /// Priority after tracking adjustments.
    pub effective_priority: u8,
    /// Address of the current master, when known.
    #[serde(default)]
    pub master: Option<IpAddr>,
    /// Virtual addresses.
    #[serde(default)]
    pub virtual_addresses: Vec<String>,
    /// Last transition, when there was one.
    #[serde(default)]
    pub last_transition: Option<Transition>,
    /// Advertisement and transition counters since the instance started.
    #[serde(default)]
    pub counters: VrrpCounters,
}

/// A VRRP instance's counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpCounters {
    /// State changes.
    pub transitions: u64,
    /// Times it became master.
    pub became_master: u64,
    /// Times it left master.
    pub released_master: u64,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Advertisements received that passed every check.
    pub adverts_received: u64,
    /// Priority 0 advertisements sent (resigning).
    pub priority_zero_sent: u64,
    /// Priority 0 advertisements received.
    pub priority_zero_received: u64,
    /// Received datagrams dropped, by reason (`ttl`, `auth_failure`, …).
    #[serde(default)]
    pub drops: Vec<(String, u64)>,
}

/// A VRRP state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// State left.
    pub from: String,
    /// State entered.
    pub to: String,
    /// Why (e.g. "master down timer expired", "higher priority advert").
    pub cause: String,
}

/// A virtual service's health view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service as listings show it.
    #[serde(flatten)]
    pub service: crate::model::ServiceConfig,
    /// Its counters and rates.
    #[serde(default)]
    pub stats: crate::snapshot::Stats,
    /// Its real servers.
    #[serde(default)]
    pub real_servers: Vec<RealServerStatus>,
}

/// A real server's health view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerStatus {
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// Passing its checks (or unchecked): keepalived's `alive`.
    pub healthy: bool,
    /// Configured weight (for a real server added with `keeplb adm`, its weight in the
    /// table).
    pub weight: u32,
    /// Weight in the table now (0 while quiesced by `inhibit_on_failure`, or out of it).
    pub effective_weight: u32,
    /// In the table now (a failed real server without `inhibit_on_failure` is not).
    #[serde(default = "listed_by_default")]
    pub in_table: bool,
    /// ActiveConn.
    pub active_conns: u32,
    /// InActConn.
    pub inactive_conns: u32,
    /// PersistConn.
    #[serde(default)]
    pub persistent_conns: u32,
    /// Forwarding method asked for.
    pub forward: crate::model::ForwardMethod,
    /// The tunnel settings, for a tunnelled real server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<crate::model::Tunnel>,
    /// Counters and rates.
    #[serde(default)]
    pub stats: crate::snapshot::Stats,
}

/// Daemons that did not say listed only the real servers of their table.
fn listed_by_default() -> bool {
    true
}

impl RealServerStatus {
    /// A real server of the table, up, at its weight there.
    fn listed(dest: &crate::snapshot::DestEntry) -> RealServerStatus {
        RealServerStatus {
            address: dest.config.address,
            port: dest.config.port,
            healthy: true,
            weight: dest.config.weight,
            effective_weight: dest.config.weight,
            in_table: true,
            active_conns: dest.active_conns,
            inactive_conns: dest.inactive_conns,
            persistent_conns: dest.persistent_conns,
            forward: dest.config.forward,
            tunnel: (dest.config.forward == ForwardMethod::Tunnel).then_some(dest.config.tunnel),
            stats: dest.stats,
        }
    }
}

/// Reads one request line, or the error response to send back instead.
pub fn decode_request(line: &str) -> Result<Request, Response> {
    let bad = |message: String| {
        Response::new(ResponseBody::Error {
            error: ApiError::BadRequest { message },
        })
    };
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    match version {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(Response::new(ResponseBody::Error {
                error: ApiError::UnsupportedVersion {
                    requested: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: PROTOCOL_VERSION,
                },
            }));
        }
        None => return Err(bad("missing \"version\"".to_owned())),
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// Sends requests somewhere and returns the responses (the control socket client).
pub trait Transport {
    /// One request, one response.
    fn call(&mut self, request: &Request) -> Result<Response, ApiError>;
}

/// An [`AdmBackend`] that asks the daemon through a [`Transport`]: `keeplb adm` is
/// `adm::run(…, &mut ApiBackend(transport), …)`.
#[derive(Debug)]
pub struct ApiBackend<T>(pub T);

/// What the client makes of a failed exchange: the table operation failed with a kernel
/// error when the daemon said so, else with EINVAL (ipvsadm's "Invalid operation…").
fn as_kernel_error(error: &ApiError) -> KernelError {
    match error {
        ApiError::Kernel { error, .. } => *error,
        _ => KernelError::InvalidArgument,
    }
}

impl<T: Transport> AdmBackend for ApiBackend<T> {
    fn apply(&mut self, command: &AdmCommand) -> Result<(), KernelError> {
        let request = Request::new(RequestBody::Adm {
            command: command.clone(),
        });
        match self.0.call(&request).map(|r| r.body) {
            Ok(ResponseBody::Done) => Ok(()),
            Ok(ResponseBody::Error { error }) | Err(error) => Err(as_kernel_error(&error)),
            Ok(_) => Err(KernelError::InvalidArgument),
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        match self
            .0
            .call(&Request::new(RequestBody::Snapshot))
            .map(|r| r.body)
        {
            Ok(ResponseBody::Snapshot { snapshot }) => Ok(snapshot),
            Ok(ResponseBody::Error { error }) | Err(error) => Err(as_kernel_error(&error)),
            Ok(_) => Err(KernelError::InvalidArgument),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ListFormat, ListTarget};
    use crate::model::{
        DestConfig, ForwardMethod, Netmask, Protocol, SchedFlags, ServiceConfig, ServiceKey, Tunnel,
    };
    use crate::snapshot::{DestEntry, ServiceEntry, Stats};

    fn service() -> ServiceConfig {
        ServiceConfig {
            key: ServiceKey::Addr {
                protocol: Protocol::Tcp,
                address: "192.168.11.123".parse().unwrap(),
                port: 80,
            },
            scheduler: "rr".into(),
            sched_flags: SchedFlags::default(),
            persistent: Some(300),
            netmask: Netmask::V4("255.255.255.0".parse().unwrap()),
            one_packet: false,
            persistence_engine: None,
        }
    }

    fn dest() -> DestConfig {
        DestConfig {
            address: "192.168.11.34".parse().unwrap(),
            port: 80,
            forward: ForwardMethod::Route,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel::default(),
        }
    }

    fn round_trip<T>(value: &T) -> String
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, value, "{json}");
        json
    }

    #[test]
    fn requests_round_trip() {
        let key = service().key;
        for command in [
            AdmCommand::AddService { service: service() },
            AdmCommand::EditService { service: service() },
            AdmCommand::DeleteService { service: key },
            AdmCommand::Flush,
            AdmCommand::Zero { service: None },
            AdmCommand::AddDest {
                service: key,
                dest: dest(),
            },
            AdmCommand::DeleteDest {
                service: key,
                address: dest().address,
                port: 80,
            },
            AdmCommand::List {
                target: ListTarget::Service { service: key },
                format: ListFormat {
                    numeric: true,
                    ..ListFormat::default()
                },
            },
        ] {
            round_trip(&Request::new(RequestBody::Adm { command }));
        }
        for body in [
            RequestBody::Snapshot,
            RequestBody::Status,
            RequestBody::Reload,
        ] {
            round_trip(&Request::new(body));
        }
    }

    #[test]
    fn request_json_is_flat_and_readable() {
        let json = round_trip(&Request::new(RequestBody::Adm {
            command: AdmCommand::DeleteService {
                service: service().key,
            },
        }));
        assert_eq!(
            json,
            r#"{"version":1,"request":"adm","command":{"command":"delete_service","service":{"kind":"addr","protocol":"tcp","address":"192.168.11.123","port":80}}}"#
        );
        let json = round_trip(&service());
        assert!(json.contains(r#""netmask":"255.255.255.0""#), "{json}");
    }

    #[test]
    fn status_shows_the_tunnel_settings_of_tunnelled_real_servers_only() {
        let tunnelled = DestConfig {
            forward: ForwardMethod::Tunnel,
            tunnel: Tunnel {
                kind: crate::model::TunnelType::Gue,
                port: 6080,
                checksum: crate::model::TunnelChecksum::Csum,
            },
            ..dest()
        };
        let entry = |config| DestEntry {
            config,
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: Stats::default(),
        };
        let snapshot = Snapshot {
            services: vec![ServiceEntry {
                config: service(),
                stats: Stats::default(),
                dests: vec![entry(tunnelled), entry(dest())],
            }],
            ..Snapshot::default()
        };
        let services = StatusReport::services_from(&snapshot);
        let tunnels: Vec<_> = services[0].real_servers.iter().map(|r| r.tunnel).collect();
        assert_eq!(tunnels, [Some(tunnelled.tunnel), None]);
        let json = round_trip(&StatusReport {
            vrrp_instances: Vec::new(),
            services,
        });
        assert!(
            json.contains(r#""tunnel":{"type":"gue","port":6080,"checksum":"csum"}"#),
            "{json}"
        );
        assert_eq!(json.matches(r#""tunnel":{"#).count(), 1, "{json}");
    }

    fn configured(address: &str, weight: u32, up: bool) -> ConfiguredRealServer {
        ConfiguredRealServer {
            address: address.parse().unwrap(),
            weight,
            up,
            checks: Vec::new(),
        }
    }

    #[test]
    fn status_lists_every_configured_real_server_with_its_health_then_those_added_by_hand() {
        let in_table = |address: &str, weight| DestEntry {
            config: DestConfig {
                address: address.parse().unwrap(),
                weight,
                forward: ForwardMethod::Masq,
                ..dest()
            },
            active_conns: 4,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: Stats::default(),
        };
        // rs1 up at weight 3; rs2 down and out of the table; rs3 down with
        // inhibit_on_failure (in the table at weight 0); rs9 added with `keeplb adm -a`
        let snapshot = Snapshot {
            services: vec![ServiceEntry {
                config: service(),
                stats: Stats::default(),
                dests: vec![
                    in_table("10.0.0.9", 5),
                    in_table("10.0.0.3", 0),
                    in_table("10.0.0.1", 3),
                ],
            }],
            ..Snapshot::default()
        };
        let health = [ServiceHealth {
            service: service().key,
            real_servers: vec![
                configured("10.0.0.1:80", 3, true),
                configured("10.0.0.2:80", 2, false),
                configured("10.0.0.3:80", 2, false),
            ],
        }];
        let services = StatusReport::services_with_health(&snapshot, &health, |key, _| {
            assert_eq!(*key, service().key);
            (ForwardMethod::Masq, Tunnel::default())
        });
        let seen: Vec<_> = services[0]
            .real_servers
            .iter()
            .map(|rs| {
                (
                    SocketAddr::new(rs.address, rs.port).to_string(),
                    rs.healthy,
                    rs.weight,
                    rs.effective_weight,
                    rs.in_table,
                    rs.active_conns,
                    rs.forward,
                )
            })
            .collect();
        let expect = |a: &str, healthy, weight, effective, in_table, active| {
            (
                a.to_owned(),
                healthy,
                weight,
                effective,
                in_table,
                active,
                ForwardMethod::Masq,
            )
        };
        assert_eq!(
            seen,
            [
                expect("10.0.0.1:80", true, 3, 3, true, 4),
                expect("10.0.0.2:80", false, 2, 0, false, 0),
                expect("10.0.0.3:80", false, 2, 0, true, 4),
                expect("10.0.0.9:80", true, 5, 5, true, 4),
            ]
        );
        let json = round_trip(&StatusReport {
            vrrp_instances: Vec::new(),
            services,
        });
        assert_eq!(json.matches(r#""in_table":false"#).count(), 1, "{json}");
    }

    #[test]
    fn status_of_a_daemon_that_did_not_say_in_table_lists_table_real_servers() {
        let old = r#"{"address":"10.0.0.1","port":80,"healthy":true,"weight":1,"effective_weight":1,"active_conns":0,"inactive_conns":0,"forward":"masq"}"#;
        let rs: RealServerStatus = serde_json::from_str(old).unwrap();
        assert!(rs.in_table);
    }

    #[test]
    fn responses_round_trip() {
        let snapshot = Snapshot {
            services: vec![ServiceEntry {
                config: service(),
                stats: Stats {
                    conns: u64::MAX,
                    ..Stats::default()
                },
                dests: vec![DestEntry {
                    config: dest(),
                    active_conns: 1,
                    inactive_conns: 2,
                    persistent_conns: 3,
                    stats: Stats::default(),
                }],
            }],
            ..Snapshot::default()
        };
        round_trip(&Response::new(ResponseBody::Snapshot { snapshot }));
        round_trip(&Response::new(ResponseBody::Done));
        round_trip(&Response::new(ResponseBody::Reloaded));
        round_trip(&Response::new(ResponseBody::Status {
            status: StatusReport::default(),
        }));
        round_trip(&Response::new(ResponseBody::Error {
            error: ApiError::ConfigRejected {
                diagnostics: vec!["keepalived.conf:3:1: error".into()],
            },
        }));
        let json = round_trip(&Response::kernel_error(
            KernelError::NoSuchService,
            Operation::AddDest,
        ));
        assert!(
            json.contains(r#""message":"Service not defined""#),
            "{json}"
        );
    }

    #[test]
    fn decode_refuses_other_versions_and_garbage() {
        let ok = decode_request(r#"{"version":1,"request":"snapshot"}"#).unwrap();
        assert_eq!(ok.body, RequestBody::Snapshot);
        let Err(response) = decode_request(r#"{"version":2,"request":"snapshot"}"#) else {
            panic!("version 2 accepted")
        };
        assert_eq!(
            response.body,
            ResponseBody::Error {
                error: ApiError::UnsupportedVersion {
                    requested: 2,
                    supported: 1
                }
            }
        );
        for bad in [
            "",
            "{",
            r#"{"request":"snapshot"}"#,
            r#"{"version":1,"request":"bogus"}"#,
        ] {
            let Err(response) = decode_request(bad) else {
                panic!("{bad} accepted")
            };
            assert!(
                matches!(
                    response.body,
                    ResponseBody::Error {
                        error: ApiError::BadRequest { .. }
                    }
                ),
                "{bad}"
            );
        }
    }

    struct Scripted(Vec<Response>);

    impl Transport for Scripted {
        fn call(&mut self, _request: &Request) -> Result<Response, ApiError> {
            Ok(self.0.remove(0))
        }
    }

    #[test]
    fn api_backend_turns_responses_into_table_results() {
        let mut backend = ApiBackend(Scripted(vec![
            Response::new(ResponseBody::Done),
            Response::kernel_error(KernelError::Exists, Operation::AddDest),
            Response::new(ResponseBody::Snapshot {
                snapshot: Snapshot::default(),
            }),
        ]));
        let command = AdmCommand::Flush;
        assert_eq!(backend.apply(&command), Ok(()));
        assert_eq!(backend.apply(&command), Err(KernelError::Exists));
        assert_eq!(backend.snapshot(), Ok(Snapshot::default()));
    }
}
