//! The control socket of `keeplb run`: ipvsadm's commands applied at once to the live
//! data plane, and listings read from it.
//!
//! [`LiveTable`] implements the primitive table edits ([`TableOps`]) over the
//! [`DataPlane`]; the kernel's checks and errnos come from
//! [`keeplb_control::table::apply_rules`], the same code the reference [`MemoryTable`]
//! runs, so the daemon refuses exactly what the kernel refuses. On top, it refuses what a
//! userspace proxy cannot serve (firewall marks, SCTP, port zero, `-o`, `--pe`, sync
//! daemons started or stopped by hand: `-L --daemon` lists the one `lvs_sync_daemon`
//! runs) with [`KernelError::NeedsKernel`].
//!
//! What each command does to traffic: `-A` listens at once; `-E` swaps the scheduler
//! (only when it or its flags change, so rr positions and lblc tables survive a
//! persistence edit) and persistence in place; `-D` and `-C` stop accepting and let
//! connections drain; `-a/-e/-d` edit the pool, never touching connections already bound
//! (`-d`'s connections go on to their end); `-Z` zeroes counters and rates; `--set`
//! applies to every service and to services added later.
//!
//! [`MemoryTable`]: keeplb_control::table::MemoryTable

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::health_book::HealthWatch;
use anyhow::Context;
use keeplb_balancer::{
    self as balancer, ConnSettings, Dest, Granularity, Persistence, PersistenceEngine, Pool,
    PoolError, SchedulerKind, Service, ServiceAddr, TcpState, Thresholds,
};
use keeplb_control::api::{
    ApiError, Request, RequestBody, Response, ResponseBody, ServiceHealth, StatusReport,
    VrrpInstanceStatus,
};
use keeplb_control::error::Unsupported;
use keeplb_control::http::HttpServer;
use keeplb_control::metrics::{
    Metrics, RealServerHealth, VrrpInstanceMetrics, VrrpState, service_label,
};
use keeplb_control::model::{
    DestConfig, Family, ForwardMethod, Netmask, Protocol, SchedFlags, ServiceConfig, ServiceKey,
    SyncDaemon, SyncRole, Timeouts, Tunnel,
};
use keeplb_control::snapshot::{ConnEntry, DestEntry, ServiceEntry, Snapshot, Stats};
use keeplb_control::socket::ControlServer;
use keeplb_control::table::{TableOps, apply_rules};
use keeplb_control::{AdmCommand, KernelError, Operation};
use keeplb_proxy::{DataPlane, Forwarding, ProxyError, ServiceOptions, VirtualService};

/// ERANGE, the kernel's answer to a weight it cannot hold.
const ERANGE: i32 = 34;

/// The live IPVS table: the data plane's services seen and edited as ipvsadm sees them.
#[derive(Debug)]
pub struct LiveTable {
    plane: Arc<DataPlane>,
    /// Connection settings of services added from now on (and `-L --timeout`).
    settings: ConnSettings,
    /// The VRRP instances' state, for `keeplb status` and the metrics.
    vrrp: crate::vrrp_run::StatusBoard,
    /// The configured real servers' health, once the director says where it is.
    health: Option<HealthWatch>,
    /// The sync daemon in force (`-L --daemon`).
    sync: crate::sync_run::SyncView,
}

impl LiveTable {
    /// The table over `plane`, whose services were started with `settings`; VRRP
    /// instances report to `vrrp`, the sync daemon to `sync`.
    pub fn new(
        plane: Arc<DataPlane>,
        settings: ConnSettings,
        vrrp: crate::vrrp_run::StatusBoard,
        sync: crate::sync_run::SyncView,
    ) -> Self {
        Self {
            plane,
            settings,
            vrrp,
            health: None,
            sync,
        }
    }

    /// Reads the configured real servers' health from `health` from now on.
    pub fn watch_health(&mut self, health: HealthWatch) {
        self.health = Some(health);
    }

    /// What the health checks say of each service's configured real servers now.
    fn health(&self) -> Vec<ServiceHealth> {
        self.health
            .as_ref()
            .map(|watch| watch.borrow().clone())
            .unwrap_or_default()
    }

    /// Every service with its configured real servers (in the table or not) and those
    /// added by hand, from `snapshot`.
    fn services_status(&self, snapshot: &Snapshot) -> Vec<keeplb_control::api::ServiceStatus> {
        StatusReport::services_with_health(snapshot, &self.health(), |key, address| {
            let forwarding = self.service(key).map_or(Forwarding::Route, |svc| {
                svc.options().forwarding_of(address)
            });
            forward_method(forwarding)
        })
    }

    /// Every VRRP instance's status, by name.
    pub fn vrrp_instances(&self) -> Vec<VrrpInstanceStatus> {
        self.vrrp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn service(&self, key: &ServiceKey) -> Option<Arc<VirtualService>> {
        let (protocol, vip) = service_id(key).ok()?;
        self.plane.get(protocol, vip)
    }

    fn existing(&self, key: &ServiceKey) -> Result<Arc<VirtualService>, KernelError> {
        self.service(key).ok_or(KernelError::NoSuchService)
    }

    /// The table now: services with counters, rates and real servers, connection
    /// entries and timeouts.
    pub fn snapshot(&self) -> Snapshot {
        let services = self.plane.services_sorted();
        Snapshot {
            services: services.iter().map(|svc| service_entry(svc)).collect(),
            connections: services
                .iter()
                .flat_map(|svc| svc.conn_entries())
                .map(conn_entry)
                .collect(),
            timeouts: self.timeouts(),
            daemons: self.sync.listed(&self.vrrp),
            ..Snapshot::default()
        }
    }

    /// Answers one control request.
    pub fn handle(&mut self, request: &Request) -> Response {
        match &request.body {
            RequestBody::Adm { command } => self.adm(command),
            RequestBody::Snapshot => Response::new(ResponseBody::Snapshot {
                snapshot: self.snapshot(),
            }),
            RequestBody::Status => Response::new(ResponseBody::Status {
                status: StatusReport {
                    vrrp_instances: self.vrrp_instances(),
                    services: self.services_status(&self.snapshot()),
                },
            }),
            // Answered by `serve`, which can wait for the reload to finish.
            RequestBody::Reload => bad_request("reload requests are answered by the server"),
        }
    }

    fn adm(&mut self, command: &AdmCommand) -> Response {
        if !command.modifies_table() {
            return bad_request("listings are made from a snapshot request");
        }
        match apply_rules(self, command) {
            Ok(()) => {
                tracing::info!("control: applied {}", describe(command));
                Response::new(ResponseBody::Done)
            }
            Err(error) => {
                tracing::info!("control: refused {}: {error}", describe(command));
                Response::kernel_error(error, command.operation().unwrap_or(Operation::Flush))
            }
        }
    }
}

fn bad_request(message: &str) -> Response {
    Response::new(ResponseBody::Error {
        error: ApiError::BadRequest {
            message: message.to_owned(),
        },
    })
}

/// One line for the log: the command's JSON form names everything it changes.
fn describe(command: &AdmCommand) -> String {
    serde_json::to_string(command).unwrap_or_else(|_| format!("{command:?}"))
}

impl TableOps for LiveTable {
    fn has_service(&self, key: &ServiceKey) -> bool {
        self.service(key).is_some()
    }

    fn has_dest(&self, key: &ServiceKey, address: IpAddr, port: u16) -> bool {
        let dest = SocketAddr::new(address, port);
        self.service(key)
            .is_some_and(|svc| svc.read(|s| s.pool.get(dest).is_some()))
    }

    fn add_service(&mut self, config: &ServiceConfig) -> Result<(), KernelError> {
        let (protocol, vip) = service_id(&config.key)?;
        let flags = sched_flags(config.sched_flags);
        let mut service = Service::new(
            ServiceAddr::Addr(protocol, vip),
            Pool::new(scheduler_kind(&config.scheduler)?.build(flags)),
        );
        service.set_persistence(persistence(config));
        service.set_persistence_engine(persistence_engine(config));
        let options = ServiceOptions {
            // ipvsadm has no service-wide method: real servers without one say -g.
            forwarding: Forwarding::Route,
            sched_flags: flags,
            one_packet: config.one_packet,
            ..ServiceOptions::default()
        };
        let svc = VirtualService::new(service, self.settings, options).map_err(proxy_error)?;
        self.plane.add(Arc::new(svc)).map_err(proxy_error)
    }

    fn edit_service(&mut self, config: &ServiceConfig) -> Result<(), KernelError> {
        let svc = self.existing(&config.key)?;
        let flags = sched_flags(config.sched_flags);
        let kind = scheduler_kind(&config.scheduler)?;
        let unchanged =
            svc.options().sched_flags == flags && svc.read(|s| s.pool.scheduler().kind() == kind);
        svc.edit(|s| {
            if !unchanged {
                s.pool
                    .set_scheduler(kind.build(flags))
                    .map_err(pool_error)?;
            }
            s.set_persistence(persistence(config));
            s.set_persistence_engine(persistence_engine(config));
            Ok(())
        })?;
        svc.edit_options(|options| {
            options.sched_flags = flags;
            options.one_packet = config.one_packet;
        });
        Ok(())
    }

    fn delete_service(&mut self, key: &ServiceKey) {
        if let Ok((protocol, vip)) = service_id(key) {
            self.plane.remove(protocol, vip);
        }
    }

    fn flush(&mut self) {
        for svc in self.plane.services_sorted() {
            self.plane.remove(svc.protocol(), svc.vip());
        }
    }

    fn zero(&mut self, key: Option<&ServiceKey>) {
        let services = match key {
            Some(key) => self.service(key).into_iter().collect(),
            None => self.plane.services_sorted(),
        };
        for svc in services {
            svc.read(|s| {
                s.stats().zero();
                s.pool.dests().iter().for_each(|d| d.stats().zero());
            });
        }
    }

    fn add_dest(&mut self, key: &ServiceKey, dest: &DestConfig) -> Result<(), KernelError> {
        let svc = self.existing(key)?;
        let addr = SocketAddr::new(dest.address, dest.port);
        let added = Dest::new(addr, dest.weight)
            .map_err(|_| KernelError::Errno(ERANGE))?
            .with_thresholds(thresholds(dest));
        svc.edit(|s| s.pool.add(Arc::new(added)))
            .map_err(pool_error)?;
        set_forwarding(&svc, addr, dest);
        Ok(())
    }

    fn edit_dest(&mut self, key: &ServiceKey, dest: &DestConfig) -> Result<(), KernelError> {
        let svc = self.existing(key)?;
        let addr = SocketAddr::new(dest.address, dest.port);
        svc.edit(|s| {
            let changed = s.pool.get(addr).is_some_and(|d| d.weight() != dest.weight);
            if changed {
                s.pool.set_weight(addr, dest.weight)?;
            }
            s.pool.set_thresholds(addr, thresholds(dest))
        })
        .map_err(pool_error)?;
        set_forwarding(&svc, addr, dest);
        Ok(())
    }

    fn delete_dest(&mut self, key: &ServiceKey, address: IpAddr, port: u16) {
        let Some(svc) = self.service(key) else { return };
        let addr = SocketAddr::new(address, port);
        if let Err(e) = svc.edit(|s| s.pool.remove(addr)) {
            tracing::warn!("{} {}: {e}", svc.protocol(), svc.vip());
        }
        svc.edit_options(|options| {
            options.dest_forwarding.remove(&addr);
        });
    }

    fn timeouts(&self) -> Timeouts {
        let t = &self.settings.timeouts;
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Timeouts {
            tcp: secs(t.tcp(TcpState::Established)),
            tcp_fin: secs(t.tcp(TcpState::FinWait)),
            udp: secs(t.udp()),
        }
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) {
        let secs = |s: u32| Duration::from_secs(s.into());
        let apply = |settings: &mut ConnSettings| {
            settings.timeouts.set_ipvsadm(
                secs(timeouts.tcp),
                secs(timeouts.tcp_fin),
                secs(timeouts.udp),
            );
        };
        apply(&mut self.settings);
        for svc in self.plane.services_sorted() {
            let mut settings = svc.conn_settings();
            apply(&mut settings);
            svc.set_conn_settings(settings);
        }
    }

    fn has_daemon(&self, role: SyncRole) -> bool {
        self.sync.listed(&self.vrrp).iter().any(|d| d.role == role)
    }

    fn start_daemon(&mut self, _daemon: &SyncDaemon) -> Result<(), KernelError> {
        Err(KernelError::NeedsKernel(Unsupported::SyncDaemon))
    }

    fn stop_daemon(&mut self, _role: SyncRole) -> Result<(), KernelError> {
        Err(KernelError::NeedsKernel(Unsupported::SyncDaemon))
    }
}

/// The data plane's identity of a service the proxy can serve.
fn service_id(key: &ServiceKey) -> Result<(balancer::Protocol, SocketAddr), KernelError> {
    match *key {
        ServiceKey::Fwmark { .. } => Err(KernelError::NeedsKernel(Unsupported::Fwmark)),
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            ..
        } => Err(KernelError::NeedsKernel(Unsupported::Sctp)),
        ServiceKey::Addr { port: 0, .. } => Err(KernelError::NeedsKernel(Unsupported::AllPorts)),
        ServiceKey::Addr {
            protocol,
            address,
            port,
        } => {
            let protocol = match protocol {
                Protocol::Udp => balancer::Protocol::Udp,
                _ => balancer::Protocol::Tcp,
            };
            Ok((protocol, SocketAddr::new(address, port)))
        }
    }
}

fn scheduler_kind(name: &str) -> Result<SchedulerKind, KernelError> {
    name.parse().map_err(|_| KernelError::NotFound)
}

fn sched_flags(flags: SchedFlags) -> balancer::SchedFlags {
    [
        (flags.flag_1, balancer::SchedFlags::FLAG_1),
        (flags.flag_2, balancer::SchedFlags::FLAG_2),
        (flags.flag_3, balancer::SchedFlags::FLAG_3),
    ]
    .into_iter()
    .filter(|(set, _)| *set)
    .fold(balancer::SchedFlags::EMPTY, |all, (_, bit)| all | bit)
}

fn listed_flags(flags: balancer::SchedFlags) -> SchedFlags {
    SchedFlags {
        flag_1: flags.contains(balancer::SchedFlags::FLAG_1),
        flag_2: flags.contains(balancer::SchedFlags::FLAG_2),
        flag_3: flags.contains(balancer::SchedFlags::FLAG_3),
    }
}

fn persistence(config: &ServiceConfig) -> Option<Persistence> {
    let timeout = Duration::from_secs(config.persistent?.into());
    let granularity = match config.netmask {
        Netmask::V4(mask) => Granularity::v4_netmask(mask),
        Netmask::Prefix(prefix) => Granularity::v6_prefix(prefix),
    };
    Some(Persistence::new(timeout).with_granularity(granularity))
}

/// The service's persistence engine (check_service let through only those IPVS has).
fn persistence_engine(config: &ServiceConfig) -> Option<PersistenceEngine> {
    config
        .persistence_engine
        .as_deref()
        .and_then(PersistenceEngine::from_name)
}

fn thresholds(dest: &DestConfig) -> Thresholds {
    Thresholds {
        upper: dest.upper_threshold,
        lower: dest.lower_threshold,
    }
}

/// The method (and tunnel settings) `-a`/`-e` asked for, as the proxy records it.
fn forwarding(dest: &DestConfig) -> Forwarding {
    match dest.forward {
        ForwardMethod::Masq => Forwarding::Masq,
        ForwardMethod::Tunnel => Forwarding::Tunnel(dest.tunnel),
        ForwardMethod::Route | ForwardMethod::Local => Forwarding::Route,
    }
}

/// The method and tunnel settings listings show for what the proxy recorded; other
/// methods than Tunnel carry ipvsadm's tunnel defaults, as the kernel reports them.
fn forward_method(forwarding: Forwarding) -> (ForwardMethod, Tunnel) {
    match forwarding {
        Forwarding::Masq => (ForwardMethod::Masq, Tunnel::default()),
        Forwarding::Route => (ForwardMethod::Route, Tunnel::default()),
        Forwarding::Tunnel(tunnel) => (ForwardMethod::Tunnel, tunnel),
    }
}

fn set_forwarding(svc: &VirtualService, addr: SocketAddr, dest: &DestConfig) {
    let wanted = forwarding(dest);
    svc.edit_options(|options| options.set_forwarding_of(addr, wanted));
}

fn proxy_error(error: ProxyError) -> KernelError {
    match error {
        ProxyError::Fwmark { .. } => KernelError::NeedsKernel(Unsupported::Fwmark),
        ProxyError::UnsupportedProtocol { .. } => KernelError::NeedsKernel(Unsupported::Sctp),
        ProxyError::Duplicate { .. } => KernelError::Exists,
        ProxyError::Listen { error, .. } => error
            .raw_os_error()
            .map_or(KernelError::InvalidArgument, KernelError::from_errno),
        ProxyError::Worker { .. } | ProxyError::Stopped => KernelError::NoMemory,
    }
}

fn pool_error(error: PoolError) -> KernelError {
    match error {
        // control commands make a destination of their own, so never another pool's
        PoolError::Duplicate(_) | PoolError::InAnotherPool(_) => KernelError::Exists,
        PoolError::NotFound(_) => KernelError::NotFound,
        PoolError::Dest(_) => KernelError::Errno(ERANGE),
        // the kernel's mh refuses more real servers than its table has entries
        PoolError::Scheduler(_) => KernelError::InvalidArgument,
    }
}

fn stats(stats: &balancer::Stats) -> Stats {
    let counters = stats.counters();
    let rates = stats.rates();
    Stats {
        conns: counters.conns,
        in_pkts: counters.in_pkts,
        out_pkts: counters.out_pkts,
        in_bytes: counters.in_bytes,
        out_bytes: counters.out_bytes,
        cps: rates.cps,
        in_pps: rates.in_pps,
        out_pps: rates.out_pps,
        in_bps: rates.in_bps,
        out_bps: rates.out_bps,
    }
}

fn service_entry(svc: &VirtualService) -> ServiceEntry {
    let options = svc.options();
    let vip = svc.vip();
    let family = Family::of(vip.ip());
    let protocol = match svc.protocol() {
        balancer::Protocol::Udp => Protocol::Udp,
        _ => Protocol::Tcp,
    };
    svc.read(|s| {
        let persistence = s.persistence();
        let netmask = match (persistence, family) {
            (None, _) => Netmask::full(family),
            (Some(p), Family::Ipv4) => Netmask::V4(p.granularity.netmask()),
            (Some(p), Family::Ipv6) => Netmask::Prefix(p.granularity.prefix()),
        };
        ServiceEntry {
            config: ServiceConfig {
                key: ServiceKey::Addr {
                    protocol,
                    address: vip.ip(),
                    port: vip.port(),
                },
                scheduler: s.pool.scheduler().kind().name().to_owned(),
                sched_flags: listed_flags(options.sched_flags),
                persistent: persistence
                    .map(|p| u32::try_from(p.timeout.as_secs()).unwrap_or(u32::MAX)),
                netmask,
                one_packet: options.one_packet,
                persistence_engine: s.persistence_engine().map(|pe| pe.name().to_owned()),
            },
            stats: stats(s.stats()),
            dests: s
                .pool
                .dests()
                .iter()
                .map(|d| dest_entry(d, &options))
                .collect(),
        }
    })
}

fn dest_entry(dest: &Dest, options: &ServiceOptions) -> DestEntry {
    let load = dest.load();
    let thresholds = dest.thresholds();
    let (forward, tunnel) = forward_method(options.forwarding_of(dest.addr()));
    DestEntry {
        config: DestConfig {
            address: dest.addr().ip(),
            port: dest.addr().port(),
            forward,
            weight: dest.weight(),
            upper_threshold: thresholds.upper,
            lower_threshold: thresholds.lower,
            tunnel,
        },
        active_conns: load.active,
        inactive_conns: load.inactive,
        persistent_conns: dest.persistent_conns(),
        stats: stats(dest.stats()),
    }
}

fn conn_entry(entry: balancer::ConnEntry) -> ConnEntry {
    ConnEntry {
        protocol: entry.proto.name().to_owned(),
        client: entry.source.ip(),
        client_port: entry.source.port(),
        virtual_address: entry.virtual_addr.ip(),
        virtual_port: entry.virtual_addr.port(),
        dest: entry.destination.ip(),
        dest_port: entry.destination.port(),
        state: entry.state.to_owned(),
        expires: u32::try_from(entry.expire.as_secs()).unwrap_or(u32::MAX),
        persistence_engine: entry.persistence_engine.map(|(engine, data)| {
            (
                engine.name().to_owned(),
                String::from_utf8_lossy(&data).into_owned(),
            )
        }),
    }
}

/// Binds the control socket at `path` (mode 0600), creating its directory, unless a
/// daemon answers there: then keeplb is already running, and this one must not start
/// (as keepalived refuses to when its pid file names a live daemon). Must run inside the
/// tokio runtime.
pub fn bind(path: &Path) -> anyhow::Result<ControlServer> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the directory of {}", path.display()))?;
    }
    let server = ControlServer::bind(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "daemon is already running: another keeplb answers on the control socket {}; not starting (stop it first, or give each daemon its own --control)",
                path.display()
            )
        } else {
            anyhow::Error::new(error)
                .context(format!("binding the control socket {}", path.display()))
        }
    })?;
    tracing::info!("control socket: {}", path.display());
    Ok(server)
}

/// Binds the HTTP listener at `address`, with the bearer token read from `token_file`.
pub async fn bind_http(
    address: std::net::SocketAddr,
    token_file: Option<&Path>,
) -> anyhow::Result<HttpServer> {
    let token = match token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the HTTP token from {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let server = HttpServer::bind(address, token)
        .await
        .with_context(|| format!("HTTP listener on {address}"))?;
    tracing::info!("HTTP API and metrics: http://{address}");
    Ok(server)
}

/// Serves the control API over `table` on the Unix socket, and on the HTTP listener
/// (with `/metrics`) when there is one, until `stopped` turns true; reload requests go
/// to `reloader`. `reports` brings where the real servers' health is published, then
/// every check's result.
pub async fn serve(
    server: ControlServer,
    http: Option<HttpServer>,
    table: LiveTable,
    reloader: crate::reload::Reloader,
    mut reports: tokio::sync::mpsc::UnboundedReceiver<crate::lvs_run::DirectorReport>,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let metrics = {
        let mut metrics = Metrics::new();
        table.sync.register(metrics.registry_mut());
        Arc::new(metrics)
    };
    let table = Arc::new(Mutex::new(table));
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let handler = {
        let table = Arc::clone(&table);
        move |request: Request| handle(Arc::clone(&table), reloader.clone(), request)
    };
    let record = async {
        while let Some(report) = reports.recv().await {
            match report {
                crate::lvs_run::DirectorReport::Check((key, result, latency)) => {
                    metrics.record_check(&key, result, latency);
                }
                crate::lvs_run::DirectorReport::Health(watch) => table
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .watch_health(watch),
            }
        }
    };
    let http = async {
        let Some(http) = http else { return };
        let scrape = {
            let table = Arc::clone(&table);
            let metrics = Arc::clone(&metrics);
            move || {
                let text = {
                    let table = table.lock().unwrap_or_else(PoisonError::into_inner);
                    let snapshot = table.snapshot();
                    let health = table.health();
                    let services = table.services_status(&snapshot);
                    metrics.set_health(real_server_metrics(&services, &health));
                    metrics.set_ipvs(snapshot);
                    metrics.set_vrrp(table.vrrp_instances().iter().map(vrrp_metrics).collect());
                    metrics.render()
                };
                async move { text }
            }
        };
        http.serve(handler.clone(), scrape, until_stopped(stopped.clone()))
            .await;
    };
    let record = async {
        tokio::select! {
            () = record => {}
            () = until_stopped(stopped.clone()) => {}
        }
    };
    tokio::join!(
        server.serve(handler.clone(), until_stopped(stopped.clone())),
        http,
        record
    );
}

/// The `keeplb_real_server_up` series: every real server of every service as the
/// status lists it (up by keepalived's `alive`; one added by hand is up), with the keys
/// of its checks (the records of other checks are forgotten).
fn real_server_metrics(
    services: &[keeplb_control::api::ServiceStatus],
    health: &[ServiceHealth],
) -> Vec<RealServerHealth> {
    services
        .iter()
        .flat_map(|service| {
            let key = &service.service.key;
            let configured = ServiceHealth::real_servers_of(health, key);
            let label = service_label(key);
            service.real_servers.iter().map(move |rs| {
                let real_server = SocketAddr::new(rs.address, rs.port);
                RealServerHealth {
                    service: label.clone(),
                    real_server,
                    up: rs.healthy,
                    checks: configured
                        .iter()
                        .find(|c| c.address == real_server)
                        .map(|c| c.checks.clone())
                        .unwrap_or_default(),
                }
            })
        })
        .collect()
}

/// One request, from either listener.
async fn handle(
    table: Arc<Mutex<LiveTable>>,
    reloader: crate::reload::Reloader,
    request: Request,
) -> Response {
    if matches!(request.body, RequestBody::Reload) {
        let error = match reloader.reload().await {
            Ok(()) => return Response::new(ResponseBody::Reloaded),
            Err(crate::reload::ReloadError::Rejected(diagnostics)) => ApiError::ConfigRejected {
                diagnostics: vec![diagnostics],
            },
            Err(crate::reload::ReloadError::PartlyApplied(failures)) => {
                ApiError::PartlyApplied { failures }
            }
            Err(crate::reload::ReloadError::Pending) => ApiError::ReloadPending,
            Err(crate::reload::ReloadError::Stopping) => ApiError::Stopping,
        };
        return Response::new(ResponseBody::Error { error });
    }
    table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .handle(&request)
}

/// The metrics' view of a VRRP instance.
fn vrrp_metrics(status: &VrrpInstanceStatus) -> VrrpInstanceMetrics {
    VrrpInstanceMetrics {
        name: status.name.clone(),
        state: match status.state.as_str() {
            "MASTER" => VrrpState::Master,
            "BACKUP" => VrrpState::Backup,
            "FAULT" => VrrpState::Fault,
            _ => VrrpState::Init,
        },
        priority: status.priority,
        effective_priority: status.effective_priority,
        counters: status.counters.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keeplb_control::api::ConfiguredRealServer;
    use keeplb_control::metrics::CheckKey;
    use keeplb_control::model::{TunnelChecksum, TunnelType};

    fn tunnelled(
        address: &str,
        kind: TunnelType,
        port: u16,
        checksum: TunnelChecksum,
    ) -> DestConfig {
        DestConfig {
            address: address.parse().unwrap(),
            port: 80,
            forward: ForwardMethod::Tunnel,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: Tunnel {
                kind,
                port,
                checksum,
            },
        }
    }

    /// What `-L` lists of each real server (by address; IPVS lists the newest first):
    /// its method and tunnel settings.
    fn listed(svc: &VirtualService) -> Vec<(IpAddr, ForwardMethod, Tunnel)> {
        let mut listed: Vec<_> = service_entry(svc)
            .dests
            .iter()
            .map(|d| (d.config.address, d.config.forward, d.config.tunnel))
            .collect();
        listed.sort_by_key(|(address, ..)| *address);
        listed
    }

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn real_server_up_series_cover_configured_and_hand_added_real_servers() {
        let key = ServiceKey::Addr {
            protocol: Protocol::Tcp,
            address: "10.99.0.1".parse().unwrap(),
            port: 80,
        };
        let check = |rs: &str| CheckKey {
            service: service_label(&key),
            real_server: sa(rs),
            checker: "TCP_CHECK".into(),
        };
        let configured = |rs: &str, up| ConfiguredRealServer {
            address: sa(rs),
            weight: 1,
            up,
            checks: vec![check(rs)],
        };
        let health = [ServiceHealth {
            service: key,
            real_servers: vec![
                configured("10.99.1.1:8080", true),
                configured("10.99.1.2:8080", false),
            ],
        }];
        let dest = |rs: &str| DestEntry {
            config: DestConfig {
                address: sa(rs).ip(),
                port: 8080,
                forward: ForwardMethod::Masq,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
                tunnel: Tunnel::default(),
            },
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: Stats::default(),
        };
        // rs2 failed and left the table; rs9 was added with `keeplb adm -a`
        let snapshot = Snapshot {
            services: vec![ServiceEntry {
                config: ServiceConfig {
                    key,
                    scheduler: "rr".into(),
                    sched_flags: SchedFlags::default(),
                    persistent: None,
                    netmask: Netmask::full(Family::Ipv4),
                    one_packet: false,
                    persistence_engine: None,
                },
                stats: Stats::default(),
                dests: vec![dest("10.99.1.9:8080"), dest("10.99.1.1:8080")],
            }],
            ..Snapshot::default()
        };
        let services = StatusReport::services_with_health(&snapshot, &health, |_, _| {
            (ForwardMethod::Masq, Tunnel::default())
        });
        let rows = real_server_metrics(&services, &health);
        let seen: Vec<_> = rows
            .iter()
            .map(|r| (r.service.as_str(), r.real_server, r.up, r.checks.clone()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "TCP 10.99.0.1:80",
                    sa("10.99.1.1:8080"),
                    true,
                    vec![check("10.99.1.1:8080")]
                ),
                (
                    "TCP 10.99.0.1:80",
                    sa("10.99.1.2:8080"),
                    false,
                    vec![check("10.99.1.2:8080")]
                ),
                ("TCP 10.99.0.1:80", sa("10.99.1.9:8080"), true, vec![]),
            ]
        );
    }

    #[test]
    fn tunnel_settings_of_add_and_edit_come_back_in_listings() {
        let vip: SocketAddr = "10.0.0.100:80".parse().unwrap();
        let service = Service::new(
            ServiceAddr::Addr(balancer::Protocol::Tcp, vip),
            Pool::new(SchedulerKind::Rr.build(balancer::SchedFlags::EMPTY)),
        );
        let options = ServiceOptions {
            forwarding: Forwarding::Route,
            ..ServiceOptions::default()
        };
        let svc = VirtualService::new(service, ConnSettings::default(), options).unwrap();
        let dests = [
            tunnelled("10.0.1.1", TunnelType::Gue, 6080, TunnelChecksum::Csum),
            tunnelled("10.0.1.2", TunnelType::Gre, 0, TunnelChecksum::Csum),
            tunnelled("10.0.1.3", TunnelType::Gue, 5555, TunnelChecksum::RemCsum),
            tunnelled("10.0.1.4", TunnelType::Ipip, 0, TunnelChecksum::NoCsum),
        ];
        for dest in &dests {
            let addr = SocketAddr::new(dest.address, dest.port);
            svc.edit(|s| s.pool.add(Arc::new(Dest::new(addr, 1).unwrap())))
                .unwrap();
            set_forwarding(&svc, addr, dest);
        }
        let expected: Vec<_> = dests
            .iter()
            .map(|d| (d.address, ForwardMethod::Tunnel, d.tunnel))
            .collect();
        assert_eq!(listed(&svc), expected);

        // -e … -g: the real server leaves the tunnel, its settings go back to defaults
        let routed = DestConfig {
            forward: ForwardMethod::Route,
            tunnel: Tunnel::default(),
            ..dests[0]
        };
        set_forwarding(&svc, SocketAddr::new(routed.address, 80), &routed);
        // -e … -i --tun-type gre: the settings are replaced, not merged
        let regre = tunnelled("10.0.1.3", TunnelType::Gre, 0, TunnelChecksum::NoCsum);
        set_forwarding(&svc, SocketAddr::new(regre.address, 80), &regre);
        let now = listed(&svc);
        assert_eq!(
            now[0],
            (routed.address, ForwardMethod::Route, Tunnel::default())
        );
        assert_eq!(now[2], (regre.address, ForwardMethod::Tunnel, regre.tunnel));
        assert_eq!(
            svc.options().dest_forwarding.len(),
            3,
            "a real server with the service's own method needs no entry"
        );
    }
}
