//! A virtual service as the data plane serves it: the balancer's [`Service`] and
//! [`ConnTable`] behind locks shared by every worker, plus the proxy's own options.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use keeplb_balancer::{
    ConnEntry, ConnGuard, ConnKey, ConnSettings, ConnTable, Dest, Direction, Flow, Imported,
    Protocol, SchedFlags, Service, ServiceAddr, Stats, SyncConn, SyncImportError, TcpFlags,
    TcpState, Tunnel, Unscheduled,
};
use tokio::time::Instant;

use crate::error::ProxyError;
use crate::proxy_protocol::ProxyProtocol;

/// The forwarding method a configuration asked for (`lb_kind`, ipvsadm `-g/-m/-i`).
///
/// The userspace data plane always proxies both directions (FULLNAT); the requested
/// method is kept for listings and logged once per service, so that nobody believes a
/// DR service is doing direct return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// `NAT` / `-m` (masquerading): keepalived's default.
    #[default]
    Masq,
    /// `DR` / `-g` (direct routing, "gatewaying"): ipvsadm's default.
    Route,
    /// `TUN` / `-i` (tunnelling), with the tunnel's settings (kept for listings: the
    /// proxy does not tunnel).
    Tunnel(Tunnel),
}

impl Forwarding {
    /// The word ipvsadm prints in its Forward column.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Masq => "Masq",
            Self::Route => "Route",
            Self::Tunnel(_) => "Tunnel",
        }
    }

    /// The word keepalived.conf uses (`lb_kind`).
    pub const fn keepalived_name(self) -> &'static str {
        match self {
            Self::Masq => "NAT",
            Self::Route => "DR",
            Self::Tunnel(_) => "TUN",
        }
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keepalived_name())
    }
}

/// The proxy's settings of one service, beyond what IPVS knows.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// How long a connect to a real server may take before the next one is tried.
    pub connect_timeout: Duration,
    /// Where connections go when no real server can take them (`sorry_server`).
    pub sorry_server: Option<Arc<Dest>>,
    /// A PROXY protocol header sent to real servers first, carrying the client's
    /// address that the full proxy otherwise hides.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// The forwarding method requested by the configuration.
    pub forwarding: Forwarding,
    /// Real servers whose forwarding method differs from `forwarding` (ipvsadm sets
    /// it per real server with `-a`/`-e … -g|-m|-i`); kept for listings.
    pub dest_forwarding: HashMap<SocketAddr, Forwarding>,
    /// The scheduler flags the service's scheduler was built with (`-b`, `lb_flags`);
    /// the scheduler does not report them back, listings need them.
    pub sched_flags: SchedFlags,
    /// One-packet scheduling (ipvsadm `-o`, keepalived `ops`): every datagram of a UDP
    /// service is scheduled on its own and leaves no connection entry. TCP services
    /// keep the flag for listings and ignore it, as the kernel does.
    pub one_packet: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            sorry_server: None,
            proxy_protocol: None,
            forwarding: Forwarding::default(),
            dest_forwarding: HashMap::new(),
            sched_flags: SchedFlags::EMPTY,
            one_packet: false,
        }
    }
}

impl ServiceOptions {
    /// Real server `dest` asks for `method`: kept only where it differs from the
    /// service's own.
    pub fn set_forwarding_of(&mut self, dest: SocketAddr, method: Forwarding) {
        if method == self.forwarding {
            self.dest_forwarding.remove(&dest);
        } else {
            self.dest_forwarding.insert(dest, method);
        }
    }

    /// The forwarding method requested for real server `dest`.
    pub fn forwarding_of(&self, dest: SocketAddr) -> Forwarding {
        self.dest_forwarding
            .get(&dest)
            .copied()
            .unwrap_or(self.forwarding)
    }
}

/// Where a client's connection to the sorry server counts besides the sorry server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SorryCount {
    /// Nothing counted it yet: the service counts it too.
    AlsoOnService,
    /// The service counted it when a real server that failed was tried first.
    SorryOnly,
}

/// keepalived's checkers default to a 5 s connect timeout; the proxy uses the same.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One virtual service, shared by every worker of the data plane.
///
/// Scheduling state lives in the balancer's [`Service`] (behind a read-write lock:
/// picks read, `ipvsadm -a/-e/-d` edits write) and [`ConnTable`] (behind a mutex,
/// taken once per connection event, never per byte). Lock order is table, then
/// service; nothing takes them the other way round.
#[derive(Debug)]
pub struct VirtualService {
    protocol: Protocol,
    vip: SocketAddr,
    service: RwLock<Service>,
    conns: Mutex<ConnTable>,
    options: ArcSwap<ServiceOptions>,
    epoch: Instant,
    /// The service's counters (the `Arc` the service holds for its whole life), so
    /// connections count without taking the service's lock.
    stats: Arc<Stats>,
    /// ESTABLISHED timeout in milliseconds: a connection's idle timeout, read once per
    /// connection without taking the table's lock.
    idle_timeout_ms: AtomicU64,
    /// Seconds since `epoch` of the last warning of each [`Refusal`], so an outage
    /// logs once a second, not once per refused client.
    last_refusal_warning: [AtomicU64; 3],
    /// Bumped by every [`VirtualService::edit`]: lets a reader of the pool tell that
    /// nothing was added, removed or reweighted since it last looked.
    edits: AtomicU64,
}

/// Why a new connection or flow was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No real server, nor the sorry server, could take it.
    Unavailable,
    /// The worker already holds [`crate::udp::MAX_FLOWS`] flows of the service.
    FlowTableFull,
    /// The persistence engine found nothing to key on (no SIP Call-ID): the kernel
    /// drops such a packet, so it does not go to the sorry server either.
    NoEngineKey,
}

/// What a new connection was bound to.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// The connection table entry, or `None` for the sorry server.
    pub key: Option<ConnKey>,
    pub dest: Arc<Dest>,
    /// Where to connect: the destination's address, or for port-zero services its
    /// address with the port the client asked for.
    pub target: SocketAddr,
}

impl VirtualService {
    /// Wraps a balancer service for the data plane.
    ///
    /// Firewall-mark services are refused: marks are set by netfilter rules on packets,
    /// which a userspace proxy never sees. They need the kernel data path.
    pub fn new(
        service: Service,
        settings: ConnSettings,
        options: ServiceOptions,
    ) -> Result<Self, ProxyError> {
        let (protocol, vip) = match service.addr() {
            ServiceAddr::Addr(protocol @ (Protocol::Tcp | Protocol::Udp), vip) => (protocol, vip),
            ServiceAddr::Addr(Protocol::Ip, vip) => {
                return Err(ProxyError::UnsupportedProtocol { vip });
            }
            ServiceAddr::Fwmark(mark) => return Err(ProxyError::Fwmark { mark }),
        };
        let stats = Arc::clone(service.stats());
        Ok(Self {
            protocol,
            vip,
            service: RwLock::new(service),
            conns: Mutex::new(ConnTable::new(settings)),
            options: ArcSwap::from_pointee(options),
            epoch: Instant::now(),
            stats,
            idle_timeout_ms: AtomicU64::new(idle_timeout_ms(&settings)),
            last_refusal_warning: [const { AtomicU64::new(u64::MAX) }; 3],
            edits: AtomicU64::new(0),
        })
    }

    /// TCP or UDP.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The virtual address and port.
    pub fn vip(&self) -> SocketAddr {
        self.vip
    }

    /// Time since this service started, the clock of its connection table.
    pub fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }

    /// Reads the balancer's service (destinations, scheduler, persistence, stats).
    pub fn read<R>(&self, f: impl FnOnce(&Service) -> R) -> R {
        f(&self.service.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Edits the balancer's service (`ipvsadm -E/-a/-e/-d`, health checks). Existing
    /// connections keep their destinations.
    pub fn edit<R>(&self, f: impl FnOnce(&mut Service) -> R) -> R {
        let mut service = self.service.write().unwrap_or_else(PoisonError::into_inner);
        let result = f(&mut service);
        self.edits.fetch_add(1, Ordering::Release);
        result
    }

    /// How many edits the service has had ([`VirtualService::edit`]).
    pub(crate) fn edits(&self) -> u64 {
        // Acquire: a look at the pool made after this reads a pool at least this new.
        self.edits.load(Ordering::Acquire)
    }

    /// Whether no real server of the pool would take a new client now.
    pub(crate) fn no_real_server_available(&self) -> bool {
        self.read(|s| !s.pool.dests().iter().any(|d| d.available()))
    }

    /// The proxy options in force.
    pub fn options(&self) -> Arc<ServiceOptions> {
        self.options.load_full()
    }

    /// Whether the service schedules every datagram on its own (`ops`); asked once per
    /// datagram, so without taking a reference to the options.
    pub(crate) fn one_packet(&self) -> bool {
        self.options.load().one_packet
    }

    /// Replaces the proxy options; connections already made keep theirs.
    pub fn set_options(&self, options: ServiceOptions) {
        self.options.store(Arc::new(options));
    }

    /// Changes some proxy options (`ipvsadm -E -b`, `-a … -m`); the others stay.
    pub fn edit_options(&self, edit: impl Fn(&mut ServiceOptions)) {
        self.options.rcu(|current| {
            let mut options = ServiceOptions::clone(current);
            edit(&mut options);
            options
        });
    }

    /// Connection-table settings (timeouts, active states).
    pub fn conn_settings(&self) -> ConnSettings {
        *self.table().settings()
    }

    /// `ipvsadm --set`: new timeouts apply to entries from their next state change.
    pub fn set_conn_settings(&self, settings: ConnSettings) {
        self.table().set_settings(settings);
        self.idle_timeout_ms
            .store(idle_timeout_ms(&settings), Ordering::Relaxed);
    }

    /// How long a TCP connection may stay idle (IPVS's ESTABLISHED timeout).
    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }

    /// The service's counters and rates.
    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Every connection and template, as `ipvsadm -Lnc` lists them.
    pub fn conn_entries(&self) -> Vec<ConnEntry> {
        let now = self.now();
        self.table().entries(now)
    }

    /// Connections in the table (closed ones linger in TIME_WAIT, as in IPVS).
    pub fn conn_count(&self) -> usize {
        self.table().len()
    }

    /// Housekeeping, called about once a second: expires idle entries (so counters
    /// drop without traffic) and runs the rate estimators.
    pub fn tick(&self) {
        let now = self.now();
        self.table().expire(now);
        self.read(|svc| {
            svc.stats().estimate(now);
            for dest in svc.pool.dests() {
                dest.stats().estimate(now);
            }
        });
        if let Some(sorry) = &self.options().sorry_server {
            sorry.stats().estimate(now);
        }
    }

    /// For the sync daemon of the MASTER: the persistence templates made or re-armed
    /// since the last call, or with `all` every live one (on becoming MASTER, so that
    /// a director that restarted learns the templates of idle clients too).
    pub fn templates_to_sync(&self, all: bool) -> Vec<SyncConn> {
        let now = self.now();
        let mut table = self.table();
        if all {
            table.export_all_templates(now)
        } else {
            table.export_templates(now)
        }
    }

    /// Whether a template received by the sync daemon belongs to this service.
    pub fn owns_synced(&self, conn: &SyncConn) -> bool {
        conn.matches_service(ServiceAddr::Addr(self.protocol, self.vip))
    }

    /// For the sync daemon of a BACKUP: the master's template `conn`, entered in this
    /// service's table, bound to its real server here.
    pub fn import_template(&self, conn: &SyncConn) -> Result<Imported, SyncImportError> {
        let now = self.now();
        let mut table = self.table();
        let service = self.service.read().unwrap_or_else(PoisonError::into_inner);
        table.import_template(&service, conn, now)
    }

    fn table(&self) -> MutexGuard<'_, ConnTable> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Schedules a new connection (or UDP flow) whose first packet carries `payload`
    /// (nothing for TCP, the datagram for UDP), which a persistence engine may read.
    pub(crate) fn schedule(&self, flow: &Flow, payload: &[u8]) -> Result<Binding, Unscheduled> {
        let now = self.now();
        let mut table = self.table();
        let service = self.service.read().unwrap_or_else(PoisonError::into_inner);
        let key = table.connect_with_payload(&service, self.protocol, flow, payload, now)?;
        binding(&table, key).ok_or(Unscheduled::NoDestination)
    }

    /// Schedules one `datagram` of a one-packet service on its own, counting it as a
    /// connection and an incoming packet; no entry is made.
    pub(crate) fn schedule_one_packet(
        &self,
        flow: &Flow,
        datagram: &[u8],
    ) -> Result<Binding, Unscheduled> {
        let now = self.now();
        let mut table = self.table();
        let service = self.service.read().unwrap_or_else(PoisonError::into_inner);
        let (dest, target) =
            table.schedule_one_packet(&service, self.protocol, flow, datagram, now)?;
        Ok(Binding {
            key: None,
            dest,
            target,
        })
    }

    /// Binds connection `key` elsewhere after its destination failed.
    pub(crate) fn reschedule(&self, key: &ConnKey, tried: &[SocketAddr]) -> Option<Binding> {
        let now = self.now();
        let mut table = self.table();
        let service = self.service.read().unwrap_or_else(PoisonError::into_inner);
        let key = table.reschedule(&service, key, tried, now)?;
        binding(&table, key)
    }

    /// The sorry server, bound like a destination (counted, but not in the table:
    /// keepalived only enters it into IPVS while it is in use).
    pub(crate) fn sorry_binding(&self) -> Option<Binding> {
        let dest = self.options().sorry_server.clone()?;
        Some(Binding {
            key: None,
            target: dest.addr(),
            dest,
        })
    }

    /// A TCP segment with `flags` went through connection `key` in `dir`: moves the
    /// entry through IPVS's state table.
    pub(crate) fn tcp_event(&self, key: &ConnKey, dir: Direction, flags: TcpFlags) {
        let now = self.now();
        self.table().packet(key, dir, flags, 0, now);
    }

    /// Data moved on connection `key`: its entry lives on for its state's timeout, as
    /// every packet keeps an IPVS entry alive.
    pub(crate) fn refresh(&self, key: &ConnKey) {
        let now = self.now();
        self.table().touch(key, now);
    }

    /// Forgets connection `key` at once (a UDP flow that could not be opened).
    pub(crate) fn forget(&self, key: &ConnKey) {
        self.table().remove(key);
    }

    /// The proxy's connection to the real server is up: the entry is ESTABLISHED.
    pub(crate) fn established(&self, key: &ConnKey) {
        let now = self.now();
        self.table().set_tcp_state(key, TcpState::Established, now);
    }

    /// A UDP datagram of `bytes` went through flow `key` in `dir`: counts it and keeps
    /// the entry alive for the UDP timeout. Returns false when the entry is gone.
    pub(crate) fn udp_datagram(&self, key: &ConnKey, dir: Direction, bytes: usize) -> bool {
        let now = self.now();
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.table()
            .packet(key, dir, TcpFlags::default(), bytes, now)
            .is_some()
    }

    /// Counts a datagram of a flow that has no table entry (one on the sorry server)
    /// in its destination's and the service's statistics.
    pub(crate) fn untracked_datagram(&self, dest: &Dest, dir: Direction, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        for stats in [dest.stats(), &self.stats] {
            if dir == Direction::Output {
                stats.count_out(bytes);
            } else {
                stats.count_in(bytes);
            }
        }
    }

    /// A connection (or UDP flow) to the sorry server: counted in its destination's and
    /// the service's statistics, as IPVS counts one to the sorry server keepalived
    /// enters, and active or inactive on it while the guard lives.
    pub(crate) fn connect_sorry_server(&self, sorry: &Arc<Dest>, count: SorryCount) -> ConnGuard {
        self.count_sorry_connection(sorry, count);
        sorry.connect()
    }

    /// Counts a datagram of `bytes` bytes of a one-packet service that went to the
    /// sorry server as a connection of its own, as [`Self::schedule_one_packet`] counts
    /// those scheduled to a real server.
    pub(crate) fn one_packet_on_sorry_server(&self, sorry: &Dest, bytes: usize) {
        self.count_sorry_connection(sorry, SorryCount::AlsoOnService);
        self.untracked_datagram(sorry, Direction::Input, bytes);
    }

    fn count_sorry_connection(&self, sorry: &Dest, count: SorryCount) {
        sorry.stats().count_conn();
        if count == SorryCount::AlsoOnService {
            self.stats.count_conn();
        }
    }

    /// Logs why a client was turned away, at most once a second for each reason.
    pub(crate) fn warn_refused(&self, client: SocketAddr, why: Refusal) {
        let second = self.now().as_secs();
        let last = &self.last_refusal_warning[why as usize];
        if last.swap(second, Ordering::Relaxed) == second {
            return;
        }
        match why {
            Refusal::Unavailable => tracing::warn!(
                service = %self.vip,
                %client,
                "no real server can take the connection; closing it"
            ),
            Refusal::NoEngineKey => tracing::warn!(
                service = %self.vip,
                %client,
                "the persistence engine found no SIP Call-ID (and reads none over TCP); dropped"
            ),
            Refusal::FlowTableFull => tracing::warn!(
                service = %self.vip,
                %client,
                max_flows = crate::udp::MAX_FLOWS,
                "UDP flow table of this worker full; datagram dropped"
            ),
        }
    }
}

fn idle_timeout_ms(settings: &ConnSettings) -> u64 {
    let timeout = settings.timeouts.tcp(TcpState::Established);
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

fn binding(table: &ConnTable, key: ConnKey) -> Option<Binding> {
    let conn = table.get(&key)?;
    Some(Binding {
        key: Some(key),
        dest: Arc::clone(conn.dest()),
        target: conn.dest_addr(),
    })
}
