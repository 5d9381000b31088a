//! The connection table: connections, persistence templates, TCP states and timeouts.
//!
//! Mirrors net/netfilter/ipvs/ip_vs_conn.c (entries, templates, expiry),
//! `ip_vs_sched_persist` in ip_vs_core.c (persistence) and the state machines of
//! ip_vs_proto_tcp.c and ip_vs_proto_udp.c. Time is an explicit `now` (a [`Duration`]
//! since the caller's epoch, as for [`crate::Scheduler::pick`]); kernel timers become a
//! queue of deadlines that every call first runs up to `now`, in time order, so expiry
//! happens exactly when the kernel's timers would fire, without sleeping.
//!
//! # Persistence, as the kernel does it
//!
//! A persistent service schedules a client once and records the choice in a *template*
//! keyed by ⟨protocol, client address masked by the granularity, virtual address,
//! virtual port⟩. The port is 0 for port-zero services and for FTP (port 21); fwmark
//! services use protocol `IP` and the mark (as an address) instead of the virtual
//! address. A new connection that finds a template goes to its destination, unless the
//! destination has left the service (or, with `expire_quiescent_template`, has weight
//! 0): then the template is *invalidated* (its ports become 65535 so nobody finds it,
//! and it lives on until it expires) and the client is scheduled afresh. By default a
//! quiesced (weight 0) or overloaded destination keeps its persistent clients.
//!
//! Each connection created through a template is *controlled* by it. Every such
//! connection re-arms the template's timer for its timeout (the persistence timeout).
//! When the timer fires while the template still controls connections, it is re-armed
//! for 60 s (and 60 s becomes its timeout from then on); when it fires and no
//! connection is left, the template goes. So a template outlives its last connection
//! by between 0 and one timeout, not by exactly one timeout.
//!
//! # Connection counters
//!
//! A new connection is bound inactive. On each TCP state change the kernel moves it
//! between the destination's `activeconns` and `inactconns`. Since Linux 4.8
//! ("ipvs: count pre-established TCP states as active") the active states are
//! ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK; older kernels counted ESTABLISHED only.
//! [`ActiveStates`] selects either rule (the modern one by default). UDP connections
//! stay inactive. Templates are counted apart (`persistconns`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::dest::{ConnState, Dest};
use crate::error::SyncImportError;
use crate::flow::Flow;
use crate::service::{
    EngineKey, FTP_PORT, Persistence, PersistenceEngine, Protocol, Service, ServiceAddr,
};
use crate::stats::Stats;
use crate::sync::{DEFAULT_TEMPLATE_TIMEOUT, SyncConn, TEMPLATE_FLAGS, TEMPLATE_STATE};

/// The port the kernel gives invalidated templates so that lookups miss them.
pub const INVALID_TEMPLATE_PORT: u16 = 0xffff;

/// How long a template that still controls connections is kept when its timer fires.
pub const TEMPLATE_RETRY: Duration = Duration::from_secs(60);

/// IPVS's TCP states (`IP_VS_TCP_S_*`), in the kernel's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    /// No packet seen yet.
    None,
    /// Three-way handshake completed.
    Established,
    /// SYN seen from the real server.
    SynSent,
    /// SYN seen from the client.
    SynRecv,
    /// A FIN was seen.
    FinWait,
    /// FINs in both directions.
    TimeWait,
    /// Reset, or closed.
    Close,
    /// The client closed first.
    CloseWait,
    /// Last ACK awaited.
    LastAck,
    /// Listening (FTP data connections set up in advance).
    Listen,
    /// SYN-ACK seen (secure_tcp mode and input-only forwarding).
    SynAck,
}

impl TcpState {
    /// Every state, in the kernel's order.
    pub const ALL: [Self; 11] = [
        Self::None,
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::SynAck,
    ];

    /// The name ipvsadm `-Lnc` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait => "FIN_WAIT",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::SynAck => "SYNACK",
        }
    }

    /// The kernel's default timeout for this state (`tcp_timeouts`).
    pub const fn default_timeout(self) -> Duration {
        Duration::from_secs(match self {
            Self::None => 2,
            Self::Established => 15 * 60,
            Self::SynSent | Self::FinWait | Self::TimeWait | Self::Listen | Self::SynAck => 2 * 60,
            Self::SynRecv | Self::CloseWait => 60,
            Self::Close => 10,
            Self::LastAck => 30,
        })
    }

    const fn index(self) -> usize {
        self as usize
    }

    /// The state after a packet with `flags` travelling in `dir`, per the kernel's
    /// normal (not `secure_tcp`) table. Flags are read in the kernel's precedence:
    /// RST, then SYN, then FIN, then ACK; a packet with none of them closes the entry.
    pub fn next(self, dir: Direction, flags: TcpFlags) -> Self {
        use TcpState::{
            Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA,
            Listen as LI, SynRecv as SR, SynSent as SS, TimeWait as TW,
        };
        // Rows: the next state for each current state, in `TcpState::ALL` order.
        const IN_SYN: [TcpState; 11] = [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR];
        const IN_FIN: [TcpState; 11] = [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW];
        const IN_ACK: [TcpState; 11] = [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES];
        const IN_RST: [TcpState; 11] = [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR];
        const OUT_SYN: [TcpState; 11] = [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR];
        const OUT_FIN: [TcpState; 11] = [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW];
        const OUT_ACK: [TcpState; 11] = [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES];
        const OUT_RST: [TcpState; 11] = [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL];
        const ONLY_FIN: [TcpState; 11] = [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW];
        const ONLY_RST: [TcpState; 11] = [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL];
        let row = match (dir, flags.event()) {
            (_, None) => return Self::Close,
            (Direction::Input | Direction::InputOnly, Some(TcpEvent::Syn)) => &IN_SYN,
            (Direction::Input, Some(TcpEvent::Fin)) => &IN_FIN,
            (Direction::InputOnly, Some(TcpEvent::Fin)) => &ONLY_FIN,
            (Direction::Input | Direction::InputOnly, Some(TcpEvent::Ack)) => &IN_ACK,
            (Direction::Input, Some(TcpEvent::Rst)) => &IN_RST,
            (Direction::InputOnly, Some(TcpEvent::Rst)) => &ONLY_RST,
            (Direction::Output, Some(TcpEvent::Syn)) => &OUT_SYN,
            (Direction::Output, Some(TcpEvent::Fin)) => &OUT_FIN,
            (Direction::Output, Some(TcpEvent::Ack)) => &OUT_ACK,
            (Direction::Output, Some(TcpEvent::Rst)) => &OUT_RST,
        };
        row[self.index()]
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which way a packet travels, as IPVS's state tables distinguish it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to real server, on a connection whose replies pass through us (NAT,
    /// proxy).
    Input,
    /// Real server to client.
    Output,
    /// Client to real server when replies bypass us (DR, tunnel: the kernel's
    /// `IP_VS_CONN_F_NOOUTPUT`).
    InputOnly,
}

/// The TCP header flags IPVS looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// FIN.
    pub fin: bool,
    /// ACK.
    pub ack: bool,
    /// RST.
    pub rst: bool,
}

impl TcpFlags {
    /// A bare SYN.
    pub const SYN: Self = Self {
        syn: true,
        fin: false,
        ack: false,
        rst: false,
    };
    /// SYN+ACK.
    pub const SYN_ACK: Self = Self {
        syn: true,
        ack: true,
        ..Self::NONE
    };
    /// A bare ACK.
    pub const ACK: Self = Self {
        ack: true,
        ..Self::NONE
    };
    /// FIN+ACK.
    pub const FIN_ACK: Self = Self {
        fin: true,
        ack: true,
        ..Self::NONE
    };
    /// RST.
    pub const RST: Self = Self {
        rst: true,
        ..Self::NONE
    };
    /// No flag at all.
    pub const NONE: Self = Self {
        syn: false,
        fin: false,
        ack: false,
        rst: false,
    };

    fn event(self) -> Option<TcpEvent> {
        if self.rst {
            Some(TcpEvent::Rst)
        } else if self.syn {
            Some(TcpEvent::Syn)
        } else if self.fin {
            Some(TcpEvent::Fin)
        } else if self.ack {
            Some(TcpEvent::Ack)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpEvent {
    Syn,
    Fin,
    Ack,
    Rst,
}

/// The protocol state of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtoState {
    /// A TCP connection in this state.
    Tcp(TcpState),
    /// A UDP "connection" (IPVS has the single state `UDP`).
    Udp,
}

impl ProtoState {
    /// The name ipvsadm `-Lnc` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp(state) => state.name(),
            Self::Udp => "UDP",
        }
    }
}

/// Which TCP states count in `ActiveConn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ActiveStates {
    /// Linux ≥ 4.8: ESTABLISHED, SYN_SENT, SYN_RECV and SYNACK.
    #[default]
    PreEstablished,
    /// Older kernels: ESTABLISHED only.
    EstablishedOnly,
}

impl ActiveStates {
    /// Whether a TCP connection in `state` counts as active.
    pub fn is_active(self, state: TcpState) -> bool {
        match self {
            Self::PreEstablished => matches!(
                state,
                TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
            ),
            Self::EstablishedOnly => state == TcpState::Established,
        }
    }
}

/// Connection timeouts per state (the kernel's per-netns timeout tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    tcp: [Duration; 11],
    udp: Duration,
}

impl Default for Timeouts {
    /// The kernel's defaults: ESTABLISHED 15 min, UDP 5 min, and so on.
    fn default() -> Self {
        Self {
            tcp: TcpState::ALL.map(TcpState::default_timeout),
            udp: Duration::from_secs(300),
        }
    }
}

impl Timeouts {
    /// The timeout of a TCP state.
    pub fn tcp(&self, state: TcpState) -> Duration {
        self.tcp[state.index()]
    }

    /// Changes the timeout of a TCP state.
    pub fn set_tcp(&mut self, state: TcpState, timeout: Duration) {
        self.tcp[state.index()] = timeout;
    }

    /// The UDP timeout.
    pub fn udp(&self) -> Duration {
        self.udp
    }

    /// `ipvsadm --set TCP TCPFIN UDP`: ESTABLISHED, FIN_WAIT and UDP timeouts; zero
    /// leaves a value unchanged, as in ipvsadm.
    pub fn set_ipvsadm(&mut self, tcp: Duration, tcp_fin: Duration, udp: Duration) {
        if !tcp.is_zero() {
            self.set_tcp(TcpState::Established, tcp);
        }
        if !tcp_fin.is_zero() {
            self.set_tcp(TcpState::FinWait, tcp_fin);
        }
        if !udp.is_zero() {
            self.udp = udp;
        }
    }

    /// The timeout of a protocol state.
    pub fn of(&self, state: ProtoState) -> Duration {
        match state {
            ProtoState::Tcp(state) => self.tcp(state),
            ProtoState::Udp => self.udp,
        }
    }
}

/// Settings of a [`ConnTable`] (the kernel's sysctls and timeout tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnSettings {
    /// Per-state timeouts.
    pub timeouts: Timeouts,
    /// Which TCP states are active.
    pub active_states: ActiveStates,
    /// `net.ipv4.vs.expire_quiescent_template`: templates pointing to a weight-0
    /// destination are dropped on use (default off: persistent clients stay).
    pub expire_quiescent_template: bool,
}

/// Identifies a connection: protocol, client address and the address it reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port the client connected to.
    pub vip: SocketAddr,
}

/// A connection entry.
#[derive(Debug)]
pub struct Conn {
    key: ConnKey,
    dest: Arc<Dest>,
    dport: u16,
    state: ProtoState,
    active: bool,
    expires: Duration,
    queued: Duration,
    control: Option<u64>,
    svc_stats: Arc<Stats>,
}

impl Conn {
    /// Protocol, client and virtual address.
    pub fn key(&self) -> ConnKey {
        self.key
    }

    /// The real server.
    pub fn dest(&self) -> &Arc<Dest> {
        &self.dest
    }

    /// The real server's address as this connection uses it (port-zero services keep
    /// the client's destination port).
    pub fn dest_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dest.addr().ip(), self.dport)
    }

    /// The protocol state.
    pub fn state(&self) -> ProtoState {
        self.state
    }

    /// Whether the connection counts in `ActiveConn`.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// When the entry expires unless more packets come.
    pub fn expires(&self) -> Duration {
        self.expires
    }

    /// Whether a persistence template controls this connection.
    pub fn is_persistent(&self) -> bool {
        self.control.is_some()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TemplateKey {
    proto: Protocol,
    caddr: IpAddr,
    vaddr: IpAddr,
    vport: u16,
    /// What the service's persistence engine adds to the key (`pe_data`), with the
    /// engine, which the kernel compares too.
    pe: Option<EngineData>,
}

#[derive(Debug)]
struct Template {
    key: TemplateKey,
    /// False once invalidated (ports shown as 65535, no longer found).
    hashed: bool,
    dest: Arc<Dest>,
    dport: u16,
    timeout: Duration,
    expires: Duration,
    queued: Duration,
    n_control: u32,
    /// Created or re-armed since the last [`ConnTable::export_templates`].
    unexported: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerTarget {
    // Connections sort first: at equal deadlines a connection goes before the template
    // it may be the last of.
    Conn(ConnKey),
    Template(u64),
}

/// One row of `ipvsadm -Lnc`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnEntry {
    /// `TCP`, `UDP`, or `IP` for fwmark templates.
    pub proto: Protocol,
    /// Time left before expiry.
    pub expire: Duration,
    /// State name (`NONE` for templates).
    pub state: &'static str,
    /// Client address (masked, port 0, for templates).
    pub source: SocketAddr,
    /// Virtual address (the mark as an address for fwmark templates).
    pub virtual_addr: SocketAddr,
    /// Real server.
    pub destination: SocketAddr,
    /// Whether this is a persistence template.
    pub template: bool,
    /// The persistence engine and its key for this entry (`--persistent-conn`).
    pub persistence_engine: Option<(PersistenceEngine, Arc<[u8]>)>,
}

impl ConnEntry {
    /// The lines ipvsadm prints before the rows.
    pub const HEADER: &'static str = "IPVS connection entries\npro expire state       source             virtual            destination";

    /// Expiry as ipvsadm prints it: whole minutes and seconds, `MM:SS`.
    pub fn expire_mmss(&self) -> String {
        let secs = self.expire.as_secs();
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

impl fmt::Display for ConnEntry {
    /// ipvsadm's row format `"%-3s %-6s %-11s %-18s %-18s %s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            self.proto.name(),
            self.expire_mmss(),
            self.state,
            self.source.to_string(),
            self.virtual_addr.to_string(),
            self.destination
        )
    }
}

/// Every connection and persistence template of the director (the kernel's
/// `ip_vs_conn_tab`). See the [module documentation](self) for the kernel rules it
/// follows.
///
/// Each method taking `now` first runs every expiry due by then, in time order. The
/// data plane holds the table behind a lock and calls [`ConnTable::expire`] now and
/// then (every second, say) so that idle entries leave and their destinations'
/// counters drop even when no traffic comes.
#[derive(Debug, Default)]
pub struct ConnTable {
    settings: ConnSettings,
    conns: HashMap<ConnKey, Conn>,
    templates: HashMap<u64, Template>,
    template_index: HashMap<TemplateKey, u64>,
    next_template: u64,
    timers: BinaryHeap<Reverse<(Duration, TimerTarget)>>,
    /// The templates made or re-armed since the last export, once something exports
    /// (the sync daemon of a master): an export then reads these, not the whole table.
    /// `None` until the first export, so that nothing piles up without a sync daemon.
    unexported: Option<Vec<u64>>,
}

impl ConnTable {
    /// An empty table.
    pub fn new(settings: ConnSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &ConnSettings {
        &self.settings
    }

    /// Changes timeouts and sysctls; existing entries keep their current deadlines.
    pub fn set_settings(&mut self, settings: ConnSettings) {
        self.settings = settings;
    }

    /// Connections in the table (templates not included).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether there is no connection.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Persistence templates in the table (invalidated ones included).
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// The connection `key`, if it exists.
    pub fn get(&self, key: &ConnKey) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// A new connection's first packet (a SYN for TCP) arrived at `svc`: schedules it,
    /// through a persistence template if the service is persistent, and enters it in
    /// the table. Returns its key, or `None` when no destination is available (or
    /// `proto` is [`Protocol::Ip`], which only templates use).
    ///
    /// An entry already present for the same key is returned as is, without
    /// scheduling: the packet belongs to it. The exception is the kernel's
    /// `conn_reuse_mode`: a TCP entry in TIME_WAIT or CLOSE is a finished connection
    /// whose client port is being reused, so it is expired and the new connection is
    /// scheduled afresh. A TCP entry starts in SYN_RECV (the kernel's transition for
    /// the client's SYN), a UDP entry in `UDP`; both count a connection in the
    /// service's and the destination's statistics.
    pub fn connect(
        &mut self,
        svc: &Service,
        proto: Protocol,
        flow: &Flow,
        now: Duration,
    ) -> Option<ConnKey> {
        self.connect_with_payload(svc, proto, flow, &[], now).ok()
    }

    /// [`ConnTable::connect`] for a first packet carrying `payload` (a UDP datagram),
    /// which a persistence engine reads, and saying why nothing was scheduled: with the
    /// SIP engine, a datagram without a Call-ID ([`crate::sip::call_id`]) is
    /// [`Unscheduled::EngineRefused`], and the kernel drops it. A TCP connection's first
    /// packet (the SYN) carries nothing.
    pub fn connect_with_payload(
        &mut self,
        svc: &Service,
        proto: Protocol,
        flow: &Flow,
        payload: &[u8],
        now: Duration,
    ) -> Result<ConnKey, Unscheduled> {
        self.expire(now);
        let key = ConnKey {
            proto,
            client: flow.client,
            vip: flow.vip,
        };
        if let Some(conn) = self.conns.get(&key) {
            if !matches!(
                conn.state,
                ProtoState::Tcp(TcpState::TimeWait | TcpState::Close)
            ) {
                return Ok(key);
            }
            self.remove_conn(&key);
        }
        let pe = engine_template_key(svc, proto, payload)?;
        let attempt = Attempt {
            avoid: &[],
            counting: Counting::Both,
        };
        self.schedule(svc, key, flow, pe, now, attempt)
            .ok_or(Unscheduled::NoDestination)
    }

    /// The connection `key` could not be used (a proxy's connect to its destination
    /// was refused or timed out): unbinds it and schedules it again, avoiding every
    /// destination in `tried` (which should include the one that failed). A
    /// persistence template pointing to a tried destination is invalidated, so the
    /// client's next connections follow the new choice.
    ///
    /// Where the scheduler's own choice is a tried destination (hashing schedulers
    /// always give the same answer), the next available destination after it in list
    /// order is used, as `sh-fallback` does. Returns `None`, leaving no entry, when
    /// every available destination has been tried. IPVS has no such step: it is what
    /// a full proxy can add, since the client has not seen an error yet.
    pub fn reschedule(
        &mut self,
        svc: &Service,
        key: &ConnKey,
        tried: &[SocketAddr],
        now: Duration,
    ) -> Option<ConnKey> {
        self.expire(now);
        let control = self.conns.get(key)?.control;
        self.remove_conn(key);
        if let Some(template) = control.and_then(|id| self.templates.get_mut(&id))
            && template.hashed
            && tried.contains(&template.dest.addr())
        {
            template.hashed = false;
            self.template_index.remove(&template.key);
        }
        let flow = Flow::new(key.client, key.vip);
        let pe = control
            .and_then(|id| self.templates.get(&id))
            .and_then(|t| t.key.pe.clone());
        let attempt = Attempt {
            avoid: tried,
            counting: Counting::DestOnly,
        };
        self.schedule(svc, *key, &flow, pe, now, attempt)
    }

    /// Schedules a new entry `key` for `flow`, avoiding the destinations in `avoid`,
    /// and enters it in the table.
    fn schedule(
        &mut self,
        svc: &Service,
        key: ConnKey,
        flow: &Flow,
        pe: Option<EngineData>,
        now: Duration,
        attempt: Attempt<'_>,
    ) -> Option<ConnKey> {
        let state = match key.proto {
            Protocol::Tcp => ProtoState::Tcp(TcpState::None.next(Direction::Input, TcpFlags::SYN)),
            Protocol::Udp => ProtoState::Udp,
            Protocol::Ip => return None,
        };
        let (dest, dport, control) = self.bind(svc, key.proto, flow, pe, now, attempt.avoid)?;
        dest.on_connect();
        let active = match state {
            ProtoState::Tcp(tcp) => self.settings.active_states.is_active(tcp),
            ProtoState::Udp => false,
        };
        if active {
            dest.on_established();
        }
        dest.stats().count_conn();
        if attempt.counting == Counting::Both {
            svc.stats().count_conn();
        }
        let expires = now + self.settings.timeouts.of(state);
        self.conns.insert(
            key,
            Conn {
                key,
                dest,
                dport,
                state,
                active,
                expires,
                queued: expires,
                control,
                svc_stats: Arc::clone(svc.stats()),
            },
        );
        self.timers.push(Reverse((expires, TimerTarget::Conn(key))));
        Some(key)
    }

    /// The destination of a new entry of `flow`, avoiding those in `avoid`, chosen
    /// through a persistence template when the service is persistent (the template
    /// then controls one more connection); with the port the entry reaches it on
    /// (port-zero services keep the client's destination port).
    fn bind(
        &mut self,
        svc: &Service,
        proto: Protocol,
        flow: &Flow,
        pe: Option<EngineData>,
        now: Duration,
        avoid: &[SocketAddr],
    ) -> Option<(Arc<Dest>, u16, Option<u64>)> {
        let (dest, control) = match svc.persistence() {
            Some(persistence) => {
                let template = TemplateParams {
                    persistence,
                    proto,
                    pe,
                };
                let (dest, id) = self.sched_persist(svc, template, flow, now, avoid)?;
                (dest, Some(id))
            }
            None => (pick_avoiding(svc, flow, now, avoid)?, None),
        };
        let dport = if flow.vip.port() == svc.addr().port() && dest.addr().port() != 0 {
            dest.addr().port()
        } else {
            flow.vip.port()
        };
        Some((dest, dport, control))
    }

    /// A datagram of `bytes` bytes arrived at `svc`, a UDP service with one-packet
    /// scheduling (ipvsadm `-o`, keepalived `ops`): schedules it as a connection of its
    /// own, through the persistence template when the service is persistent (found
    /// and refreshed, or created, exactly as for [`ConnTable::connect`]), and counts
    /// one connection and one incoming packet in the service's and the destination's
    /// statistics. Returns the destination and the address to send the datagram to, or
    /// why there is none (`proto` [`Protocol::Ip`] has no destination either).
    ///
    /// No entry is left behind: the kernel never hashes a one-packet connection
    /// (`IP_VS_CONN_F_ONE_PACKET`) and expires it as soon as the packet is forwarded,
    /// so `ipvsadm -Lnc` never shows it, the destination's `ActiveConn`/`InActConn`
    /// stay as they were, and a template it went through controls no more connection
    /// than before. Any existing entry for the same client is neither used nor
    /// touched. The kernel ignores the flag for TCP; so should the caller.
    pub fn schedule_one_packet(
        &mut self,
        svc: &Service,
        proto: Protocol,
        flow: &Flow,
        payload: &[u8],
        now: Duration,
    ) -> Result<(Arc<Dest>, SocketAddr), Unscheduled> {
        self.expire(now);
        if proto == Protocol::Ip {
            return Err(Unscheduled::NoDestination);
        }
        let bytes = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        let pe = engine_template_key(svc, proto, payload)?;
        let (dest, dport, control) = self
            .bind(svc, proto, flow, pe, now, &[])
            .ok_or(Unscheduled::NoDestination)?;
        // The connection expired at once: its template controls it no more.
        if let Some(template) = control.and_then(|id| self.templates.get_mut(&id)) {
            template.n_control = template.n_control.saturating_sub(1);
        }
        for stats in [dest.stats(), svc.stats()] {
            stats.count_conn();
            stats.count_in(bytes);
        }
        let addr = SocketAddr::new(dest.addr().ip(), dport);
        Ok((dest, addr))
    }

    /// A packet of `bytes` bytes of connection `key` went through in direction `dir`:
    /// counts it in the service's and destination's statistics, applies the TCP state
    /// transition for `flags` (ignored for UDP) and re-arms the entry's timer with the
    /// timeout of its state. Returns the new state, or `None` for an unknown key.
    pub fn packet(
        &mut self,
        key: &ConnKey,
        dir: Direction,
        flags: TcpFlags,
        bytes: u64,
        now: Duration,
    ) -> Option<ProtoState> {
        self.expire(now);
        let conn = self.conns.get(key)?;
        match dir {
            Direction::Input | Direction::InputOnly => {
                conn.dest.stats().count_in(bytes);
                conn.svc_stats.count_in(bytes);
            }
            Direction::Output => {
                conn.dest.stats().count_out(bytes);
                conn.svc_stats.count_out(bytes);
            }
        }
        let next = match conn.state {
            ProtoState::Tcp(state) => ProtoState::Tcp(state.next(dir, flags)),
            ProtoState::Udp => ProtoState::Udp,
        };
        self.transition(key, next, now);
        Some(next)
    }

    /// Puts TCP connection `key` in `state` (for a proxy that follows its sockets
    /// rather than packets), moving it between the destination's active and inactive
    /// counters as the kernel does, and re-arms its timer. Returns false for an unknown
    /// key or a UDP connection.
    pub fn set_tcp_state(&mut self, key: &ConnKey, state: TcpState, now: Duration) -> bool {
        self.expire(now);
        match self.conns.get(key).map(|c| c.state) {
            Some(ProtoState::Tcp(_)) => {
                self.transition(key, ProtoState::Tcp(state), now);
                true
            }
            _ => false,
        }
    }

    /// Removes connection `key` at once, releasing its destination and template (a
    /// flow the data plane could not open after all). Returns false for an unknown key.
    pub fn remove(&mut self, key: &ConnKey) -> bool {
        let known = self.conns.contains_key(key);
        self.remove_conn(key);
        known
    }

    /// Connection `key` is alive (a proxy moved data on it): re-arms its timer with
    /// the timeout of its current state, as every packet does in IPVS, without
    /// counting anything. Returns false for an unknown key.
    pub fn touch(&mut self, key: &ConnKey, now: Duration) -> bool {
        self.expire(now);
        match self.conns.get(key).map(|c| c.state) {
            Some(state) => {
                self.transition(key, state, now);
                true
            }
            None => false,
        }
    }

    fn transition(&mut self, key: &ConnKey, state: ProtoState, now: Duration) {
        let timeout = self.settings.timeouts.of(state);
        let active_states = self.settings.active_states;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let ProtoState::Tcp(tcp) = state
            && state != conn.state
        {
            let active = active_states.is_active(tcp);
            if conn.active && !active {
                conn.dest.on_closing();
            } else if !conn.active && active {
                conn.dest.on_established();
            }
            conn.active = active;
        }
        conn.state = state;
        conn.expires = now + timeout;
        if conn.expires < conn.queued {
            conn.queued = conn.expires;
            self.timers
                .push(Reverse((conn.expires, TimerTarget::Conn(*key))));
        }
    }

    /// Runs every expiry due by `now`, in time order: connections leave (and their
    /// destinations' counters drop), templates without connections leave, templates
    /// still controlling connections are kept 60 s more.
    pub fn expire(&mut self, now: Duration) {
        while let Some(&Reverse((at, target))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match target {
                TimerTarget::Conn(key) => self.fire_conn(key, at),
                TimerTarget::Template(id) => self.fire_template(id, at),
            }
        }
    }

    fn fire_conn(&mut self, key: ConnKey, at: Duration) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.queued != at {
            return; // a stale timer; an earlier one was queued since
        }
        if conn.expires > at {
            conn.queued = conn.expires;
            self.timers
                .push(Reverse((conn.expires, TimerTarget::Conn(key))));
            return;
        }
        self.remove_conn(&key);
    }

    /// Takes connection `key` out of the table, releasing its destination's counter
    /// and its template. Its queued timer becomes stale and is skipped when it fires.
    fn remove_conn(&mut self, key: &ConnKey) {
        let Some(conn) = self.conns.remove(key) else {
            return;
        };
        conn.dest.on_close(if conn.active {
            ConnState::Active
        } else {
            ConnState::Inactive
        });
        if let Some(template) = conn.control.and_then(|id| self.templates.get_mut(&id)) {
            template.n_control = template.n_control.saturating_sub(1);
        }
    }

    fn fire_template(&mut self, id: u64, at: Duration) {
        let Some(template) = self.templates.get_mut(&id) else {
            return;
        };
        if template.queued != at {
            return;
        }
        if template.expires <= at && template.n_control > 0 {
            template.timeout = TEMPLATE_RETRY;
            template.expires = at + TEMPLATE_RETRY;
            mark_unexported(template, id, &mut self.unexported);
        }
        if template.expires > at {
            template.queued = template.expires;
            self.timers
                .push(Reverse((template.expires, TimerTarget::Template(id))));
            return;
        }
        let Some(template) = self.templates.remove(&id) else {
            return;
        };
        template.dest.on_template_unbind();
        if template.hashed {
            self.template_index.remove(&template.key);
        }
    }

    /// `ip_vs_sched_persist`: the destination for a new connection of a persistent
    /// service and the template that will control it.
    fn sched_persist(
        &mut self,
        svc: &Service,
        template: TemplateParams,
        flow: &Flow,
        now: Duration,
        avoid: &[SocketAddr],
    ) -> Option<(Arc<Dest>, u64)> {
        let TemplateParams {
            persistence,
            proto,
            pe,
        } = template;
        let svc_port = svc.addr().port();
        let caddr = persistence.granularity.mask(flow.client.ip());
        let (tproto, vaddr, vport) = if flow.vip.port() == svc_port {
            let vport = if svc_port == FTP_PORT { 0 } else { svc_port };
            (proto, flow.vip.ip(), vport)
        } else if let ServiceAddr::Fwmark(mark) = svc.addr() {
            (Protocol::Ip, mark_addr(mark, flow.vip.ip()), 0)
        } else {
            (proto, flow.vip.ip(), 0)
        };
        let key = TemplateKey {
            proto: tproto,
            caddr,
            vaddr,
            vport,
            pe,
        };
        if let Some(&id) = self.template_index.get(&key) {
            let expire_quiescent = self.settings.expire_quiescent_template;
            if let Some(template) = self.templates.get_mut(&id) {
                let in_service = template.dest.in_pool();
                let avoided = avoid.contains(&template.dest.addr());
                if in_service && !avoided && !(expire_quiescent && template.dest.weight() == 0) {
                    template.n_control += 1;
                    template.expires = now + template.timeout;
                    mark_unexported(template, id, &mut self.unexported);
                    if template.expires < template.queued {
                        template.queued = template.expires;
                        self.timers
                            .push(Reverse((template.expires, TimerTarget::Template(id))));
                    }
                    return Some((Arc::clone(&template.dest), id));
                }
                // ip_vs_check_template: invalidate, keep until its timer.
                template.hashed = false;
                self.template_index.remove(&key);
            }
        }
        let dest = pick_avoiding(svc, flow, now, avoid)?;
        let dport = if flow.vip.port() == svc_port && svc_port != FTP_PORT {
            dest.addr().port()
        } else {
            0
        };
        dest.on_template_bind();
        let id = self.next_template;
        self.next_template += 1;
        let expires = now + persistence.timeout;
        self.template_index.insert(key.clone(), id);
        self.templates.insert(
            id,
            Template {
                key,
                hashed: true,
                dest: Arc::clone(&dest),
                dport,
                timeout: persistence.timeout,
                expires,
                queued: expires,
                n_control: 1,
                unexported: true,
            },
        );
        if let Some(unexported) = &mut self.unexported {
            unexported.push(id);
        }
        self.timers
            .push(Reverse((expires, TimerTarget::Template(id))));
        Some((dest, id))
    }

    /// Every connection and template as `ipvsadm -Lnc` lists them (connections first,
    /// each group sorted by source), with the time left at `now`. Expired entries are
    /// removed first.
    pub fn entries(&mut self, now: Duration) -> Vec<ConnEntry> {
        self.expire(now);
        let mut conns: Vec<ConnEntry> = self
            .conns
            .values()
            .map(|c| ConnEntry {
                proto: c.key.proto,
                expire: c.expires.saturating_sub(now),
                state: c.state.name(),
                source: c.key.client,
                virtual_addr: c.key.vip,
                destination: c.dest_addr(),
                template: false,
                // The kernel gives only templates the engine's data.
                persistence_engine: None,
            })
            .collect();
        conns.sort_by_key(|e| (e.source, e.virtual_addr));
        let mut templates: Vec<ConnEntry> = self
            .templates
            .values()
            .map(|t| {
                let (vport, dport) = if t.hashed {
                    (t.key.vport, t.dport)
                } else {
                    (INVALID_TEMPLATE_PORT, INVALID_TEMPLATE_PORT)
                };
                ConnEntry {
                    proto: t.key.proto,
                    expire: t.expires.saturating_sub(now),
                    state: TcpState::None.name(),
                    source: SocketAddr::new(t.key.caddr, 0),
                    virtual_addr: SocketAddr::new(t.key.vaddr, vport),
                    destination: SocketAddr::new(t.dest.addr().ip(), dport),
                    template: true,
                    persistence_engine: t.key.pe.clone(),
                }
            })
            .collect();
        templates.sort_by_key(|e| (e.source, e.virtual_addr, e.destination));
        conns.extend(templates);
        conns
    }

    /// For the sync daemon of a MASTER (keepalived's `lvs_sync_daemon`): the
    /// persistence templates created or re-armed since the previous call, as sync
    /// entries ([`crate::sync::encode`] puts them on the wire). Call it every second or
    /// so and send what it returns: a template that nothing renewed is not sent again,
    /// and an invalidated one (ports 65535) is never sent.
    ///
    /// Each entry carries the template's timeout, not the time it has left, as the
    /// kernel sends `cp->timeout`: the backup's copy then lives one timeout from its
    /// arrival (at most one export period longer than the master's), and a backup that
    /// becomes master re-arms it with that same timeout. Flags and state are those of
    /// a kernel template of a NAT destination ([`crate::sync::TEMPLATE_FLAGS`],
    /// [`crate::sync::TEMPLATE_STATE`]). The kernel syncs a template whenever a
    /// connection it controls is synced; keeplb syncs no connection, so a template is
    /// also sent when its timer keeps it 60 s more for the connections it controls.
    pub fn export_templates(&mut self, now: Duration) -> Vec<SyncConn> {
        self.export(now, false)
    }

    /// Every live persistence template, as [`ConnTable::export_templates`] gives the
    /// changed ones (and clearing their changes). The kernel has no such dump: it
    /// syncs a template only when traffic renews it, so a backup that starts empty (a
    /// rebooted former master) learns an idle client's template only when the client
    /// comes back. A caller may send this when it becomes MASTER, or when a peer
    /// appears, to close that gap.
    pub fn export_all_templates(&mut self, now: Duration) -> Vec<SyncConn> {
        self.export(now, true)
    }

    fn export(&mut self, now: Duration, all: bool) -> Vec<SyncConn> {
        self.expire(now);
        let mut ids: Vec<u64> = match self.unexported.replace(Vec::new()) {
            Some(changed) if !all => changed,
            _ => self
                .templates
                .iter()
                .filter(|(_, t)| all || t.unexported)
                .map(|(&id, _)| id)
                .collect(),
        };
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let template = self.templates.get_mut(&id)?;
                template.unexported = false;
                template.hashed.then(|| template.to_sync())
            })
            .collect()
    }

    /// For the sync daemon of a BACKUP: enters the received template `conn` of
    /// service `svc` (the caller finds it with [`SyncConn::matches_service`]), bound
    /// to its real server in the service's pool, found as the kernel's
    /// `ip_vs_find_dest` does (address and port, then the address with port 0) and,
    /// for templates of port 0 (port-zero and FTP services), the first real server of
    /// that address in list order. The template counts in the real server's
    /// persistent connections and expires `conn.timeout` from `now` (3 minutes when
    /// none was sent, as in `ip_vs_proc_conn`) unless connections come through it: a
    /// new connection of that client, should this director become master, finds it and
    /// goes to its real server exactly as through a template made here.
    ///
    /// A template already present for the same key is refreshed with the received
    /// timeout; if it points to another real server it is rebound to the received one
    /// (the kernel keeps the old binding, see [`Imported::Rebound`]). Connections are
    /// refused ([`SyncImportError::NotATemplate`]): a proxy's connections cannot move.
    pub fn import_template(
        &mut self,
        svc: &Service,
        conn: &SyncConn,
        now: Duration,
    ) -> Result<Imported, SyncImportError> {
        self.expire(now);
        if !conn.is_template() {
            return Err(SyncImportError::NotATemplate {
                client: conn.client,
            });
        }
        let dest = synced_dest(svc, conn.dest).ok_or(SyncImportError::UnknownDest(conn.dest))?;
        let timeout = if conn.timeout.is_zero() {
            DEFAULT_TEMPLATE_TIMEOUT
        } else {
            conn.timeout
        };
        let expires = now + timeout;
        let key = TemplateKey {
            proto: conn.protocol,
            caddr: conn.client.ip(),
            vaddr: conn.vip.ip(),
            vport: conn.vip.port(),
            pe: conn.persistence_engine.clone(),
        };
        let existing = self.template_index.get(&key).copied();
        if let Some(id) = existing
            && let Some(template) = self.templates.get_mut(&id)
        {
            let outcome = if Arc::ptr_eq(&template.dest, &dest) {
                Imported::Refreshed
            } else {
                let from = template.dest.addr();
                template.dest.on_template_unbind();
                dest.on_template_bind();
                template.dest = dest;
                Imported::Rebound { from }
            };
            template.dport = conn.dest.port();
            template.timeout = timeout;
            template.expires = expires;
            if expires < template.queued {
                template.queued = expires;
                self.timers
                    .push(Reverse((expires, TimerTarget::Template(id))));
            }
            return Ok(outcome);
        }
        dest.on_template_bind();
        let id = self.next_template;
        self.next_template += 1;
        self.template_index.insert(key.clone(), id);
        self.templates.insert(
            id,
            Template {
                key,
                hashed: true,
                dest,
                dport: conn.dest.port(),
                timeout,
                expires,
                queued: expires,
                n_control: 0,
                // Received, not made here: the peer has it already.
                unexported: false,
            },
        );
        self.timers
            .push(Reverse((expires, TimerTarget::Template(id))));
        Ok(Imported::Created)
    }
}

/// Marks `template` (`id`) as made or re-armed since the last export, listing it for the
/// next one when exports are being made.
fn mark_unexported(template: &mut Template, id: u64, unexported: &mut Option<Vec<u64>>) {
    if !template.unexported {
        template.unexported = true;
        if let Some(unexported) = unexported {
            unexported.push(id);
        }
    }
}

impl Template {
    /// This template as a sync entry.
    fn to_sync(&self) -> SyncConn {
        SyncConn {
            protocol: self.key.proto,
            client: SocketAddr::new(self.key.caddr, 0),
            vip: SocketAddr::new(self.key.vaddr, self.key.vport),
            dest: SocketAddr::new(self.dest.addr().ip(), self.dport),
            fwmark: if self.key.proto == Protocol::Ip {
                mark_of(self.key.vaddr)
            } else {
                0
            },
            flags: TEMPLATE_FLAGS,
            state: TEMPLATE_STATE,
            timeout: self.timeout,
            persistence_engine: self.key.pe.clone(),
        }
    }
}

/// What [`ConnTable::import_template`] did with a received template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imported {
    /// A new template.
    Created,
    /// The template was there, bound to the same real server: its timer was re-armed.
    Refreshed,
    /// The template was there, bound to real server `from`: it now points to the
    /// received one, and the persistent-connection counts moved with it. The kernel's
    /// `ip_vs_proc_conn` would keep `from` (it only updates flags, state and timeout
    /// of an existing template), which leaves the backup on a choice the master has
    /// abandoned for as long as syncs keep refreshing it; keeplb follows the master.
    Rebound {
        /// The real server the template pointed to before.
        from: SocketAddr,
    },
}

/// The real server of a received template in `svc`'s pool (see
/// [`ConnTable::import_template`]).
fn synced_dest(svc: &Service, addr: SocketAddr) -> Option<Arc<Dest>> {
    let pool = &svc.pool;
    pool.get(addr)
        .or_else(|| pool.get(SocketAddr::new(addr.ip(), 0)))
        .or_else(|| {
            (addr.port() == 0)
                .then(|| pool.dests().iter().find(|d| d.addr().ip() == addr.ip()))
                .flatten()
        })
        .cloned()
}

/// The firewall mark a fwmark template carries as its virtual address (the inverse of
/// [`mark_addr`]).
fn mark_of(vaddr: IpAddr) -> u32 {
    match vaddr {
        IpAddr::V4(v4) => v4.to_bits(),
        IpAddr::V6(v6) => u32::try_from(v6.to_bits() >> 96).unwrap_or(0),
    }
}

/// A persistence engine and what it adds to a template's key (the kernel's `pe`
/// and `pe_data`).
type EngineData = (PersistenceEngine, Arc<[u8]>);

/// Why a new connection (or one-packet datagram) was not scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unscheduled {
    /// No destination is available.
    NoDestination,
    /// The persistence engine found nothing to key on ([`EngineKey::Refused`]): the
    /// kernel drops the packet, so no sorry server should take it either.
    EngineRefused,
}

/// What the persistence engine adds to the template key of a first packet carrying
/// `payload`, or the refusal that stops its scheduling.
fn engine_template_key(
    svc: &Service,
    proto: Protocol,
    payload: &[u8],
) -> Result<Option<EngineData>, Unscheduled> {
    match svc.engine_key(proto, payload) {
        EngineKey::Refused => Err(Unscheduled::EngineRefused),
        engine_key => Ok(engine_key.into_key()),
    }
}

/// What a persistence template of a new connection is made of.
struct TemplateParams {
    persistence: Persistence,
    proto: Protocol,
    pe: Option<EngineData>,
}

/// How a new entry is scheduled: avoiding which destinations, counted where.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    avoid: &'a [SocketAddr],
    counting: Counting,
}

/// Which statistics a newly scheduled entry counts a connection in: a rescheduled one
/// is the same client connection to the service, so only its new destination counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counting {
    Both,
    DestOnly,
}

/// The scheduler's choice for `flow`, or, when that is a destination to avoid, the
/// next available one after it in list order (wrapping) that is not.
fn pick_avoiding(
    svc: &Service,
    flow: &Flow,
    now: Duration,
    avoid: &[SocketAddr],
) -> Option<Arc<Dest>> {
    let dests = svc.pool.dests();
    let chosen = svc.pool.pick(flow, now)?;
    if !avoid.contains(&chosen.addr()) {
        return Some(Arc::clone(chosen));
    }
    let start = dests.iter().position(|d| Arc::ptr_eq(d, chosen))?;
    dests[start..]
        .iter()
        .chain(&dests[..start])
        .find(|d| d.available() && !avoid.contains(&d.addr()))
        .cloned()
}

/// A firewall mark as the kernel stores it in a template's virtual address: the mark
/// in the first 32 bits, in the family of the connection.
fn mark_addr(mark: u32, family: IpAddr) -> IpAddr {
    match family {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(mark)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(u128::from(mark) << 96)),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::pool::Pool;
    use crate::scheduler::{SchedFlags, from_name};
    use crate::service::Granularity;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// An rr service on 198.51.100.1:80 with real servers 10.0.0.1:80 and 10.0.0.2:80;
    /// rr hands out 10.0.0.1 first.
    fn service(persistence: Option<Persistence>) -> Service {
        service_for(Protocol::Tcp, persistence)
    }

    /// [`service`] for protocol `proto`.
    fn service_for(proto: Protocol, persistence: Option<Persistence>) -> Service {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).expect("rr"));
        for d in ["10.0.0.2:80", "10.0.0.1:80"] {
            pool.add(Arc::new(Dest::new(sa(d), 1).expect("dest")))
                .expect("add");
        }
        let svc = Service::new(ServiceAddr::Addr(proto, sa("198.51.100.1:80")), pool);
        match persistence {
            Some(p) => svc.with_persistence(p),
            None => svc,
        }
    }

    fn flow(client: &str) -> Flow {
        Flow::new(sa(client), sa("198.51.100.1:80"))
    }

    fn dest_of(table: &ConnTable, key: &ConnKey) -> SocketAddr {
        table.get(key).expect("connection").dest().addr()
    }

    fn counts(svc: &Service, dest: &str) -> (u32, u32, u32) {
        let d = svc.pool.get(sa(dest)).expect("dest");
        (d.active_conns(), d.inactive_conns(), d.persistent_conns())
    }

    #[test]
    fn a_reused_client_port_after_time_wait_is_scheduled_afresh() {
        let svc = service(None);
        let mut t = ConnTable::default();
        let f = flow("192.0.2.1:1000");
        let a = t.connect(&svc, Protocol::Tcp, &f, secs(0)).expect("a");
        assert_eq!(dest_of(&t, &a), sa("10.0.0.1:80"));
        assert!(t.set_tcp_state(&a, TcpState::TimeWait, secs(1)));
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 1, 0));
        let b = t.connect(&svc, Protocol::Tcp, &f, secs(2)).expect("b");
        assert_eq!(dest_of(&t, &b), sa("10.0.0.2:80"), "rr moved on");
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0), "old entry released");
        assert_eq!(counts(&svc, "10.0.0.2:80"), (1, 0, 0));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn touch_keeps_a_busy_connection_alive_past_its_state_timeout() {
        let svc = service(None);
        let mut t = ConnTable::default();
        let key = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("key");
        assert!(t.set_tcp_state(&key, TcpState::Established, secs(0)));
        assert!(t.touch(&key, secs(800)));
        t.expire(secs(1000));
        assert!(
            t.get(&key).is_some(),
            "900 s after the last touch, not the first"
        );
        assert_eq!(counts(&svc, "10.0.0.1:80"), (1, 0, 0));
        t.expire(secs(1701));
        assert!(t.get(&key).is_none());
        assert!(!t.touch(&key, secs(1702)));
    }

    #[test]
    fn reschedule_avoids_tried_destinations_and_gives_up_when_all_are() {
        let svc = service(None);
        let mut t = ConnTable::default();
        let key = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("key");
        let first = dest_of(&t, &key);
        let key = t
            .reschedule(&svc, &key, &[first], secs(0))
            .expect("another destination");
        let second = dest_of(&t, &key);
        assert_ne!(first, second);
        assert_eq!(counts(&svc, &first.to_string()), (0, 0, 0));
        assert_eq!(counts(&svc, &second.to_string()), (1, 0, 0));
        assert_eq!(svc.stats().counters().conns, 1, "one client connection");
        assert_eq!(t.reschedule(&svc, &key, &[first, second], secs(0)), None);
        assert!(t.is_empty());
        assert_eq!(counts(&svc, &second.to_string()), (0, 0, 0));
    }

    #[test]
    fn reschedule_falls_back_in_list_order_for_hashing_schedulers() {
        let mut pool = Pool::new(from_name("sh", SchedFlags::EMPTY).expect("sh"));
        for d in ["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"] {
            pool.add(Arc::new(Dest::new(sa(d), 1).expect("dest")))
                .expect("add");
        }
        let svc = Service::new(
            ServiceAddr::Addr(Protocol::Tcp, sa("198.51.100.1:80")),
            pool,
        );
        let mut t = ConnTable::default();
        let key = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.9:1000"), secs(0))
            .expect("key");
        let hashed = dest_of(&t, &key);
        let order: Vec<SocketAddr> = svc.pool.dests().iter().map(|d| d.addr()).collect();
        let at = order.iter().position(|a| *a == hashed).expect("in list");
        let key = t
            .reschedule(&svc, &key, &[hashed], secs(0))
            .expect("fallback");
        assert_eq!(dest_of(&t, &key), order[(at + 1) % order.len()]);
    }

    #[test]
    fn reschedule_rebinds_a_persistent_client() {
        let svc = service(Some(Persistence::new(secs(300))));
        let mut t = ConnTable::default();
        let key = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("key");
        let failed = dest_of(&t, &key);
        let key = t
            .reschedule(&svc, &key, &[failed], secs(0))
            .expect("rebound");
        let chosen = dest_of(&t, &key);
        assert_ne!(chosen, failed);
        // The client's next connection follows the new template.
        let next = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(1))
            .expect("next");
        assert_eq!(dest_of(&t, &next), chosen);
        assert_eq!(counts(&svc, &chosen.to_string()).2, 1, "one live template");
    }

    #[test]
    fn without_persistence_each_connection_is_scheduled() {
        let svc = service(None);
        let mut t = ConnTable::default();
        let a = t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0));
        let b = t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(0));
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert_eq!(dest_of(&t, &a), sa("10.0.0.1:80"));
        assert_eq!(dest_of(&t, &b), sa("10.0.0.2:80"));
        // The same key again is the same connection, not a new schedule.
        assert_eq!(
            t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(1)),
            Some(a)
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.template_count(), 0);
        assert_eq!(svc.stats().counters().conns, 2);
    }

    #[test]
    fn persistence_holds_a_client_then_expires() {
        let svc = service(Some(Persistence::new(secs(300))));
        let mut t = ConnTable::default();
        let a1 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("a1");
        // rr's next pick would be 10.0.0.2; the template keeps client 1 on 10.0.0.1
        // (and rr is not even asked).
        let a2 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(1))
            .expect("a2");
        let b = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.2:1000"), secs(2))
            .expect("b");
        assert_eq!(dest_of(&t, &a1), sa("10.0.0.1:80"));
        assert_eq!(dest_of(&t, &a2), sa("10.0.0.1:80"));
        assert_eq!(dest_of(&t, &b), sa("10.0.0.2:80"));
        assert!(t.get(&a2).expect("a2").is_persistent());
        assert_eq!(
            counts(&svc, "10.0.0.1:80").2,
            1,
            "one template for client 1"
        );
        assert_eq!(t.template_count(), 2);

        // The SYN_RECV entries time out after 60 s; the templates, armed at their last
        // connection (t=1 for client 1, t=2 for client 2), last until 301 and 302.
        t.expire(secs(100));
        assert_eq!(t.len(), 0);
        assert_eq!(t.template_count(), 2);
        let a3 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1002"), secs(200))
            .expect("a3");
        assert_eq!(dest_of(&t, &a3), sa("10.0.0.1:80"));
        // Re-armed at t=200: alive at 499, gone at 500 (its connection left at 260).
        t.expire(secs(499));
        assert_eq!(t.template_count(), 1);
        t.expire(secs(500));
        assert_eq!(t.template_count(), 0);
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0));
        // Client 1 is scheduled afresh: rr gives 10.0.0.1 to client 3, then 10.0.0.2.
        let c = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.3:1000"), secs(501))
            .expect("c");
        let a4 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1003"), secs(501))
            .expect("a4");
        assert_ne!(dest_of(&t, &c), dest_of(&t, &a4));
        assert_eq!(dest_of(&t, &a4), sa("10.0.0.2:80"));
    }

    #[test]
    fn template_is_controlled_by_its_connections() {
        let svc = service(Some(Persistence::new(secs(300))));
        let mut t = ConnTable::default();
        let key = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("conn");
        t.packet(&key, Direction::Input, TcpFlags::ACK, 40, secs(0));
        // Last packet at t=100: the ESTABLISHED entry lives until 1000.
        t.packet(&key, Direction::Input, TcpFlags::ACK, 40, secs(100));
        // The template fires at 300 with a connection left: kept 60 s at a time
        // (360, 420, …, 960, 1020).
        t.expire(secs(999));
        assert_eq!((t.len(), t.template_count()), (1, 1));
        let row = t
            .entries(secs(999))
            .into_iter()
            .find(|e| e.template)
            .expect("template row");
        assert_eq!(row.expire, secs(21));
        t.expire(secs(1000));
        assert_eq!((t.len(), t.template_count()), (0, 1));
        t.expire(secs(1019));
        assert_eq!(t.template_count(), 1);
        t.expire(secs(1020));
        assert_eq!(t.template_count(), 0);
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0));
    }

    #[test]
    fn granularity_groups_a_subnet() {
        let g = Granularity::v4_netmask(Ipv4Addr::new(255, 255, 255, 0));
        let svc = service(Some(Persistence::new(secs(300)).with_granularity(g)));
        let mut t = ConnTable::default();
        let dests: Vec<SocketAddr> = [
            "192.0.2.1:1000",
            "192.0.2.200:1000",
            "192.0.3.1:1000",
            "192.0.2.99:5",
        ]
        .iter()
        .map(|c| {
            let key = t
                .connect(&svc, Protocol::Tcp, &flow(c), secs(0))
                .expect("conn");
            dest_of(&t, &key)
        })
        .collect();
        assert_eq!(dests[0], sa("10.0.0.1:80"));
        assert_eq!(dests[1], dests[0]);
        assert_eq!(dests[2], sa("10.0.0.2:80"));
        assert_eq!(dests[3], dests[0]);
        assert_eq!(t.template_count(), 2);
        let templates: Vec<String> = t
            .entries(secs(0))
            .iter()
            .filter(|e| e.template)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            templates,
            [
                "TCP 05:00  NONE        192.0.2.0:0        198.51.100.1:80    10.0.0.1:80",
                "TCP 05:00  NONE        192.0.3.0:0        198.51.100.1:80    10.0.0.2:80",
            ]
        );
    }

    #[test]
    fn quiesced_destination_keeps_persistent_clients_by_default() {
        let mut svc = service(Some(Persistence::new(secs(300))));
        let mut t = ConnTable::default();
        let a = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("a");
        assert_eq!(dest_of(&t, &a), sa("10.0.0.1:80"));
        svc.pool.set_weight(sa("10.0.0.1:80"), 0).expect("weight");
        let a2 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(1))
            .expect("a2");
        assert_eq!(
            dest_of(&t, &a2),
            sa("10.0.0.1:80"),
            "weight 0 keeps its template"
        );
        // New clients avoid it.
        let b = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.2:1000"), secs(1))
            .expect("b");
        assert_eq!(dest_of(&t, &b), sa("10.0.0.2:80"));
        // Overloaded is no reason either: ip_vs_check_template only looks at
        // membership (and weight with expire_quiescent_template).
        svc.pool.set_weight(sa("10.0.0.1:80"), 1).expect("weight");
        svc.pool
            .set_thresholds(sa("10.0.0.1:80"), crate::Thresholds { upper: 1, lower: 0 })
            .expect("thresholds");
        let a3 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1002"), secs(2))
            .expect("a3");
        assert_eq!(dest_of(&t, &a3), sa("10.0.0.1:80"));
        // Removing the destination from the service does reschedule.
        svc.pool.remove(sa("10.0.0.1:80")).expect("remove");
        let a4 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1003"), secs(3))
            .expect("a4");
        assert_eq!(dest_of(&t, &a4), sa("10.0.0.2:80"));
    }

    #[test]
    fn expire_quiescent_template_reschedules_and_invalidates() {
        let mut svc = service(Some(Persistence::new(secs(300))));
        let mut t = ConnTable::new(ConnSettings {
            expire_quiescent_template: true,
            ..ConnSettings::default()
        });
        let a = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("a");
        assert_eq!(dest_of(&t, &a), sa("10.0.0.1:80"));
        svc.pool.set_weight(sa("10.0.0.1:80"), 0).expect("weight");
        let a2 = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(10))
            .expect("a2");
        assert_eq!(dest_of(&t, &a2), sa("10.0.0.2:80"));
        // The old template stays, unreachable (ports 65535), until its timer.
        let rows: Vec<String> = t
            .entries(secs(10))
            .iter()
            .filter(|e| e.template)
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rows,
            [
                "TCP 05:00  NONE        192.0.2.1:0        198.51.100.1:80    10.0.0.2:80",
                "TCP 04:50  NONE        192.0.2.1:0        198.51.100.1:65535 10.0.0.1:65535",
            ]
        );
        t.expire(secs(300));
        assert_eq!(t.template_count(), 1);
        assert_eq!(counts(&svc, "10.0.0.2:80").2, 1);
    }

    #[test]
    fn fwmark_and_port_zero_templates() {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).expect("rr"));
        pool.add(Arc::new(Dest::new(sa("10.0.0.1:0"), 1).expect("dest")))
            .expect("add");
        let fw =
            Service::new(ServiceAddr::Fwmark(1), pool).with_persistence(Persistence::new(secs(60)));
        let mut t = ConnTable::default();
        let web = Flow::new(sa("192.0.2.1:1000"), sa("198.51.100.1:80"));
        let tls = Flow::new(sa("192.0.2.1:1001"), sa("198.51.100.1:443"));
        let dns = Flow::new(sa("192.0.2.1:1002"), sa("198.51.100.1:53"));
        t.connect(&fw, Protocol::Tcp, &web, secs(0)).expect("web");
        t.connect(&fw, Protocol::Tcp, &tls, secs(0)).expect("tls");
        let d = t.connect(&fw, Protocol::Udp, &dns, secs(0)).expect("dns");
        assert_eq!(
            t.template_count(),
            1,
            "one IP template for every protocol and port"
        );
        assert_eq!(t.get(&d).expect("dns").dest_addr(), sa("10.0.0.1:53"));
        let rows: Vec<String> = t.entries(secs(0)).iter().map(ToString::to_string).collect();
        assert_eq!(
            rows,
            [
                "TCP 01:00  SYN_RECV    192.0.2.1:1000     198.51.100.1:80    10.0.0.1:80",
                "TCP 01:00  SYN_RECV    192.0.2.1:1001     198.51.100.1:443   10.0.0.1:443",
                "UDP 05:00  UDP         192.0.2.1:1002     198.51.100.1:53    10.0.0.1:53",
                "IP  01:00  NONE        192.0.2.1:0        0.0.0.1:0          10.0.0.1:0",
            ]
        );

        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).expect("rr"));
        pool.add(Arc::new(Dest::new(sa("10.0.0.1:0"), 1).expect("dest")))
            .expect("add");
        let zero = Service::new(ServiceAddr::Addr(Protocol::Tcp, sa("198.51.100.1:0")), pool)
            .with_persistence(Persistence::new(secs(60)));
        let mut t = ConnTable::default();
        t.connect(&zero, Protocol::Tcp, &web, secs(0)).expect("web");
        t.connect(&zero, Protocol::Tcp, &tls, secs(0)).expect("tls");
        let rows = t.entries(secs(0));
        let template = rows.iter().find(|e| e.template).expect("template");
        assert_eq!(t.template_count(), 1);
        assert_eq!(template.virtual_addr, sa("198.51.100.1:0"));
        assert_eq!(template.proto, Protocol::Tcp);
    }

    #[test]
    fn counters_follow_tcp_states() {
        let svc = service(None);
        let mut t = ConnTable::default();
        let d = "10.0.0.1:80";
        let k = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("conn");
        let step =
            |t: &mut ConnTable, dir, flags| t.packet(&k, dir, flags, 60, secs(1)).expect("known");
        // Linux >= 4.8: SYN_RECV already counts as active.
        assert_eq!(
            t.get(&k).expect("c").state(),
            ProtoState::Tcp(TcpState::SynRecv)
        );
        assert_eq!(counts(&svc, d), (1, 0, 0));
        assert_eq!(
            step(&mut t, Direction::Output, TcpFlags::SYN_ACK),
            ProtoState::Tcp(TcpState::SynRecv)
        );
        assert_eq!(
            step(&mut t, Direction::Input, TcpFlags::ACK),
            ProtoState::Tcp(TcpState::Established)
        );
        assert_eq!(counts(&svc, d), (1, 0, 0));
        assert_eq!(
            step(&mut t, Direction::Input, TcpFlags::FIN_ACK),
            ProtoState::Tcp(TcpState::CloseWait)
        );
        assert_eq!(counts(&svc, d), (0, 1, 0));
        assert_eq!(
            step(&mut t, Direction::Output, TcpFlags::FIN_ACK),
            ProtoState::Tcp(TcpState::TimeWait)
        );
        assert_eq!(
            step(&mut t, Direction::Input, TcpFlags::ACK),
            ProtoState::Tcp(TcpState::TimeWait)
        );
        assert_eq!(counts(&svc, d), (0, 1, 0));
        // TIME_WAIT lasts 120 s from the last packet.
        t.expire(secs(120));
        assert_eq!(t.len(), 1);
        t.expire(secs(121));
        assert_eq!(t.len(), 0);
        assert_eq!(counts(&svc, d), (0, 0, 0));
        let stats = svc.pool.get(sa(d)).expect("dest").stats().counters();
        assert_eq!(
            (stats.conns, stats.in_pkts, stats.out_pkts, stats.in_bytes),
            (1, 3, 2, 180)
        );
        assert_eq!(svc.stats().counters().out_bytes, 120);
    }

    #[test]
    fn established_only_rule_and_resets() {
        let svc = service(None);
        let mut t = ConnTable::new(ConnSettings {
            active_states: ActiveStates::EstablishedOnly,
            ..ConnSettings::default()
        });
        let d = "10.0.0.1:80";
        let k = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("conn");
        assert_eq!(counts(&svc, d), (0, 1, 0));
        assert!(t.set_tcp_state(&k, TcpState::Established, secs(1)));
        assert_eq!(counts(&svc, d), (1, 0, 0));
        assert_eq!(t.get(&k).expect("c").expires(), secs(901));
        // A reset from the server closes the entry: CLOSE, 10 s.
        t.packet(&k, Direction::Output, TcpFlags::RST, 40, secs(2));
        assert_eq!(
            t.get(&k).expect("c").state(),
            ProtoState::Tcp(TcpState::Close)
        );
        assert_eq!(counts(&svc, d), (0, 1, 0));
        t.expire(secs(12));
        assert!(t.is_empty());
        assert_eq!(counts(&svc, d), (0, 0, 0));
        // A flagless segment also means CLOSE in the kernel's table.
        let k = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(20))
            .expect("conn");
        t.packet(&k, Direction::Input, TcpFlags::NONE, 40, secs(20));
        assert_eq!(
            t.get(&k).expect("c").state(),
            ProtoState::Tcp(TcpState::Close)
        );
    }

    #[test]
    fn udp_stays_inactive_and_lives_300_s_after_its_last_packet() {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).expect("rr"));
        pool.add(Arc::new(Dest::new(sa("10.0.0.1:53"), 1).expect("dest")))
            .expect("add");
        let svc = Service::new(
            ServiceAddr::Addr(Protocol::Udp, sa("198.51.100.1:53")),
            pool,
        );
        let mut t = ConnTable::default();
        let f = Flow::new(sa("192.0.2.1:5353"), sa("198.51.100.1:53"));
        let k = t.connect(&svc, Protocol::Udp, &f, secs(0)).expect("conn");
        t.packet(&k, Direction::Output, TcpFlags::NONE, 100, secs(10));
        assert!(!t.set_tcp_state(&k, TcpState::Established, secs(10)));
        assert_eq!(counts(&svc, "10.0.0.1:53"), (0, 1, 0));
        t.expire(secs(309));
        assert_eq!(t.len(), 1);
        t.expire(secs(310));
        assert_eq!(counts(&svc, "10.0.0.1:53"), (0, 0, 0));
    }

    /// The real server each datagram of `client` went to, one datagram of 10 bytes a
    /// second from `start`.
    fn one_packet_dests(
        t: &mut ConnTable,
        svc: &Service,
        client: &str,
        start: u64,
        datagrams: u64,
    ) -> Vec<SocketAddr> {
        (start..start + datagrams)
            .map(|at| {
                let (dest, addr) = t
                    .schedule_one_packet(svc, Protocol::Udp, &flow(client), &[0; 10], secs(at))
                    .expect("a destination");
                assert_eq!(
                    dest.addr(),
                    addr,
                    "a port-80 service sends to the dest's port"
                );
                addr
            })
            .collect()
    }

    #[test]
    fn one_packet_schedules_every_datagram_and_leaves_no_entry() {
        let svc = service_for(Protocol::Udp, None);
        let mut t = ConnTable::default();
        let (a, b) = (sa("10.0.0.1:80"), sa("10.0.0.2:80"));
        assert_eq!(
            one_packet_dests(&mut t, &svc, "192.0.2.1:5353", 0, 4),
            [a, b, a, b],
            "one client, yet rr moves on at each datagram"
        );
        let on_service = svc.stats().counters();
        assert_eq!(
            (on_service.conns, on_service.in_pkts, on_service.in_bytes),
            (4, 4, 40)
        );
        for dest in ["10.0.0.1:80", "10.0.0.2:80"] {
            let d = svc.pool.get(sa(dest)).expect("dest").stats().counters();
            assert_eq!((d.conns, d.in_pkts, d.out_pkts), (2, 2, 0), "{dest}");
            assert_eq!(counts(&svc, dest), (0, 0, 0), "no ActiveConn/InActConn");
        }
        assert!(t.is_empty());
        assert_eq!(t.template_count(), 0);
        assert!(t.entries(secs(4)).is_empty(), "ipvsadm -Lnc shows nothing");
    }

    #[test]
    fn one_packet_follows_the_persistence_template_and_refreshes_it() {
        let svc = service_for(Protocol::Udp, Some(Persistence::new(secs(300))));
        let mut t = ConnTable::default();
        let (a, b) = (sa("10.0.0.1:80"), sa("10.0.0.2:80"));
        assert_eq!(
            one_packet_dests(&mut t, &svc, "192.0.2.1:5353", 0, 3),
            [a; 3]
        );
        assert_eq!(one_packet_dests(&mut t, &svc, "192.0.2.2:5353", 3, 1), [b]);
        // Client 1 again from another port, at t=100: same template, re-armed.
        assert_eq!(
            one_packet_dests(&mut t, &svc, "192.0.2.1:6000", 100, 1),
            [a]
        );
        assert_eq!(svc.stats().counters().conns, 5);
        assert!(t.is_empty());
        let entries = t.entries(secs(101));
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.template), "only the templates");
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 1));
        // Controlling no connection, each template goes one timeout after its last
        // datagram: client 2's at 303, client 1's at 400.
        t.expire(secs(399));
        assert_eq!(t.template_count(), 1);
        assert_eq!(counts(&svc, "10.0.0.2:80"), (0, 0, 0));
        t.expire(secs(400));
        assert_eq!(t.template_count(), 0);
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0));
    }

    #[test]
    fn one_packet_leaves_an_existing_entry_alone_and_needs_a_destination() {
        let mut svc = service_for(Protocol::Udp, None);
        let mut t = ConnTable::default();
        let f = flow("192.0.2.1:5353");
        let key = t.connect(&svc, Protocol::Udp, &f, secs(0)).expect("conn");
        assert_eq!(dest_of(&t, &key), sa("10.0.0.1:80"));
        assert_eq!(
            one_packet_dests(&mut t, &svc, "192.0.2.1:5353", 1, 1),
            [sa("10.0.0.2:80")]
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.get(&key).expect("conn").expires(),
            secs(300),
            "not refreshed"
        );
        for dest in ["10.0.0.1:80", "10.0.0.2:80"] {
            svc.pool.set_weight(sa(dest), 0).expect("quiesce");
        }
        assert!(
            t.schedule_one_packet(&svc, Protocol::Udp, &f, &[0; 10], secs(2))
                .is_err()
        );
    }

    #[test]
    fn ipvsadm_lnc_row_format() {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).expect("rr"));
        pool.add(Arc::new(
            Dest::new(sa("192.168.11.34:80"), 1).expect("dest"),
        ))
        .expect("add");
        let svc = Service::new(
            ServiceAddr::Addr(Protocol::Tcp, sa("192.168.11.123:80")),
            pool,
        );
        let mut t = ConnTable::default();
        let f = Flow::new(sa("192.168.11.30:10932"), sa("192.168.11.123:80"));
        let k = t.connect(&svc, Protocol::Tcp, &f, secs(0)).expect("conn");
        assert!(t.set_tcp_state(&k, TcpState::FinWait, secs(0)));
        let rows = t.entries(Duration::from_millis(5_500));
        assert_eq!(
            rows[0].to_string(),
            "TCP 01:54  FIN_WAIT    192.168.11.30:10932 192.168.11.123:80  192.168.11.34:80"
        );
        let rows = t.entries(secs(5));
        assert_eq!(
            rows[0].to_string(),
            "TCP 01:55  FIN_WAIT    192.168.11.30:10932 192.168.11.123:80  192.168.11.34:80"
        );
        assert!(ConnEntry::HEADER.ends_with("destination"));
    }

    #[test]
    fn state_table_spot_checks() {
        use TcpState as S;
        // Client-side close seen in NAT: FIN in, then FIN out, then the last ACK.
        assert_eq!(
            S::Established.next(Direction::Input, TcpFlags::FIN_ACK),
            S::CloseWait
        );
        assert_eq!(
            S::Established.next(Direction::Output, TcpFlags::FIN_ACK),
            S::FinWait
        );
        assert_eq!(
            S::FinWait.next(Direction::Input, TcpFlags::FIN_ACK),
            S::TimeWait
        );
        // DR (input only): a FIN from the client means FIN_WAIT.
        assert_eq!(
            S::Established.next(Direction::InputOnly, TcpFlags::FIN_ACK),
            S::FinWait
        );
        assert_eq!(
            S::SynAck.next(Direction::InputOnly, TcpFlags::RST),
            S::Close
        );
        assert_eq!(S::SynAck.next(Direction::Input, TcpFlags::RST), S::SynRecv);
        // RST beats SYN, SYN beats FIN.
        let syn_rst = TcpFlags {
            syn: true,
            rst: true,
            ..TcpFlags::NONE
        };
        assert_eq!(S::Established.next(Direction::Input, syn_rst), S::Close);
        let syn_fin = TcpFlags {
            syn: true,
            fin: true,
            ..TcpFlags::NONE
        };
        assert_eq!(S::None.next(Direction::Input, syn_fin), S::SynRecv);
        assert_eq!(S::None.next(Direction::Output, TcpFlags::SYN), S::SynSent);
        assert_eq!(
            S::Listen.next(Direction::Output, TcpFlags::ACK),
            S::Established
        );
        let mut timeouts = Timeouts::default();
        timeouts.set_ipvsadm(secs(7200), Duration::ZERO, secs(60));
        assert_eq!(timeouts.tcp(S::Established), secs(7200));
        assert_eq!(timeouts.tcp(S::FinWait), secs(120));
        assert_eq!(timeouts.udp(), secs(60));
        assert_eq!(timeouts.tcp(S::Close), secs(10));
    }

    /// A SIP message of call `call_id`.
    fn sip(call_id: &str) -> Vec<u8> {
        format!("OPTIONS sip:x@y SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\r\n")
            .into_bytes()
    }

    /// A UDP rr service over 10.0.0.1 and 10.0.0.2 whose templates are keyed by the
    /// SIP Call-ID alone (granularity 0.0.0.0: every client shares them).
    fn sip_service() -> Service {
        let persistence = Persistence::new(secs(60))
            .with_granularity(Granularity::v4_netmask(Ipv4Addr::UNSPECIFIED));
        let mut svc = service_for(Protocol::Udp, Some(persistence));
        svc.set_persistence_engine(Some(PersistenceEngine::Sip));
        svc
    }

    #[test]
    fn the_sip_engine_sends_every_message_of_a_call_to_one_real_server() {
        let svc = sip_service();
        let mut t = ConnTable::default();
        let (a, b) = (sa("10.0.0.1:80"), sa("10.0.0.2:80"));
        let mut send = |client: &str, message: &[u8], at: u64| {
            t.schedule_one_packet(&svc, Protocol::Udp, &flow(client), message, secs(at))
                .ok()
                .map(|(dest, _)| dest.addr())
        };
        // Without the engine, rr would alternate; and the clients differ.
        assert_eq!(send("192.0.2.1:5060", &sip("call-1@h"), 0), Some(a));
        assert_eq!(send("192.0.2.1:5060", &sip("call-2@h"), 1), Some(b));
        assert_eq!(send("192.0.2.7:5060", &sip("call-1@h"), 2), Some(a));
        assert_eq!(send("192.0.2.9:5062", &sip("call-2@h"), 3), Some(b));
        assert_eq!(send("192.0.2.1:5060", &sip("call-1@h"), 4), Some(a));
        // No Call-ID, no scheduling: the kernel drops such a datagram.
        assert_eq!(send("192.0.2.1:5060", b"not SIP", 5), None);
        let entries = t.entries(secs(5));
        let calls: Vec<(SocketAddr, Option<&[u8]>)> = entries
            .iter()
            .map(|e| {
                let data = e.persistence_engine.as_ref().map(|(engine, data)| {
                    assert_eq!(engine.name(), "sip");
                    &data[..]
                });
                (e.destination, data)
            })
            .collect();
        assert_eq!(
            calls,
            [(a, Some(&b"call-1@h"[..])), (b, Some(&b"call-2@h"[..]))],
            "one template per call, listed with its Call-ID"
        );
    }

    #[test]
    fn a_udp_flow_of_a_sip_service_is_listed_with_its_call_id() {
        let svc = sip_service();
        let mut t = ConnTable::default();
        let f = flow("192.0.2.1:5060");
        let key = t
            .connect_with_payload(&svc, Protocol::Udp, &f, &sip("c@h"), secs(0))
            .expect("scheduled");
        assert!(t.get(&key).expect("entry").is_persistent());
        let entries = t.entries(secs(0));
        let listed: Vec<(bool, Option<&[u8]>)> = entries
            .iter()
            .map(|e| {
                (
                    e.template,
                    e.persistence_engine.as_ref().map(|(_, id)| &id[..]),
                )
            })
            .collect();
        // As the kernel lists them: the engine's data on the template only.
        assert_eq!(listed, [(false, None), (true, Some(&b"c@h"[..]))]);
        assert_eq!(
            t.connect_with_payload(&svc, Protocol::Udp, &flow("192.0.2.2:5060"), b"?", secs(0))
                .ok(),
            None
        );
    }

    #[test]
    fn without_persistence_the_engine_keys_nothing() {
        let mut svc = service_for(Protocol::Udp, None);
        svc.set_persistence_engine(Some(PersistenceEngine::Sip));
        assert_eq!(
            svc.engine_key(Protocol::Udp, b"not SIP"),
            EngineKey::NoEngine
        );
        let mut t = ConnTable::default();
        let f = flow("192.0.2.1:5060");
        assert!(
            t.connect_with_payload(&svc, Protocol::Udp, &f, b"not SIP", secs(0))
                .is_ok(),
            "scheduled as without an engine"
        );
    }

    #[test]
    fn the_sip_engine_schedules_no_tcp_connection() {
        let mut svc = service(Some(Persistence::new(secs(60))));
        svc.set_persistence_engine(Some(PersistenceEngine::Sip));
        let mut t = ConnTable::default();
        // The kernel reads SIP from UDP only: a SYN fails the engine and is dropped.
        assert_eq!(
            t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0)),
            None
        );
    }

    /// Connects TCP client `client` to `svc` at `at` through `t`: its real server.
    fn connect_dest(t: &mut ConnTable, svc: &Service, client: &str, at: u64) -> SocketAddr {
        let key = t
            .connect(svc, Protocol::Tcp, &flow(client), secs(at))
            .expect("conn");
        dest_of(t, &key)
    }

    /// A persistent (300 s) rr service at `addr` over `dests` (the last added first).
    fn persistent_service(addr: ServiceAddr, dests: &[&str]) -> Service {
        let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).expect("rr"));
        for d in dests {
            pool.add(Arc::new(Dest::new(sa(d), 1).expect("dest")))
                .expect("add");
        }
        Service::new(addr, pool).with_persistence(Persistence::new(secs(300)))
    }

    /// The templates `t` would send now, as (client, real server) pairs.
    fn exported(t: &mut ConnTable, at: u64) -> Vec<(SocketAddr, SocketAddr)> {
        t.export_templates(secs(at))
            .into_iter()
            .map(|c| (c.client, c.dest))
            .collect()
    }

    #[test]
    fn export_sends_only_templates_created_or_rearmed_since_the_last_call() {
        let mut svc = service(Some(Persistence::new(secs(300))));
        let mut t = ConnTable::default();
        let (a, b) = (sa("10.0.0.1:80"), sa("10.0.0.2:80"));
        let (c1, c2) = (sa("192.0.2.1:0"), sa("192.0.2.2:0"));
        assert_eq!(exported(&mut t, 0), []);
        t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("conn");
        t.connect(&svc, Protocol::Tcp, &flow("192.0.2.2:1000"), secs(0))
            .expect("conn");
        assert_eq!(exported(&mut t, 1), [(c1, a), (c2, b)]);
        assert_eq!(exported(&mut t, 2), [], "nothing changed");
        // Client 1 again: its template is re-armed, and only it is sent.
        t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1001"), secs(3))
            .expect("conn");
        let sent = t.export_templates(secs(3));
        assert_eq!(sent.len(), 1);
        let entry = &sent[0];
        assert_eq!((entry.client, entry.dest), (c1, a));
        assert_eq!(entry.protocol, Protocol::Tcp);
        assert_eq!(entry.vip, sa("198.51.100.1:80"));
        assert_eq!(entry.timeout, secs(300), "the timeout, as cp->timeout");
        assert_eq!(
            (entry.flags, entry.state, entry.fwmark),
            (0x1100, 0, 0),
            "TEMPLATE | INACTIVE, IP_VS_CTPL_S_NONE"
        );
        assert!(entry.is_template() && entry.persistence_engine.is_none());
        // Real server 1 leaves: client 1's template is invalidated and a new one, to
        // the other server, is made; only the new one is sent.
        svc.pool.remove(a).expect("removed");
        t.connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1002"), secs(4))
            .expect("conn");
        assert_eq!(exported(&mut t, 4), [(c1, b)]);
        assert_eq!(t.template_count(), 3, "the invalidated one is still there");
        // The full dump: both live templates, never the invalidated one.
        let all: Vec<(SocketAddr, SocketAddr)> = t
            .export_all_templates(secs(5))
            .into_iter()
            .map(|c| (c.client, c.dest))
            .collect();
        assert_eq!(all, [(c2, b), (c1, b)]);
        assert_eq!(exported(&mut t, 5), []);
    }

    #[test]
    fn export_resends_a_template_its_connections_keep_alive() {
        let svc = service(Some(Persistence::new(secs(30))));
        let mut t = ConnTable::default();
        let key = t
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("conn");
        assert!(t.set_tcp_state(&key, TcpState::Established, secs(0)));
        assert_eq!(exported(&mut t, 0).len(), 1);
        assert_eq!(exported(&mut t, 29), []);
        // At 30 s the timer fires with a connection left: 60 s more, sent again.
        let sent = t.export_templates(secs(30));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].timeout, TEMPLATE_RETRY);
    }

    #[test]
    fn an_imported_template_sends_the_client_to_the_synced_server() {
        let svc = service(Some(Persistence::new(secs(300))));
        let mut backup = ConnTable::default();
        let synced = SyncConn {
            protocol: Protocol::Tcp,
            client: sa("192.0.2.1:0"),
            vip: sa("198.51.100.1:80"),
            // rr would pick 10.0.0.1 first.
            dest: sa("10.0.0.2:80"),
            fwmark: 0,
            flags: TEMPLATE_FLAGS,
            state: TEMPLATE_STATE,
            timeout: secs(100),
            persistence_engine: None,
        };
        assert!(synced.matches_service(svc.addr()));
        assert_eq!(
            backup.import_template(&svc, &synced, secs(0)),
            Ok(Imported::Created)
        );
        assert_eq!(counts(&svc, "10.0.0.2:80"), (0, 0, 1), "a persistent conn");
        assert_eq!(
            exported(&mut backup, 0),
            [],
            "received templates are not sent back"
        );
        // This director becomes master: the client's new connection follows the
        // template, and re-arms it with the received timeout.
        assert_eq!(
            connect_dest(&mut backup, &svc, "192.0.2.1:2000", 50),
            sa("10.0.0.2:80")
        );
        let sent = backup.export_templates(secs(50));
        assert_eq!(sent.len(), 1);
        assert_eq!((sent[0].dest, sent[0].timeout), (synced.dest, secs(100)));
        // Another client is scheduled as usual.
        assert_eq!(
            connect_dest(&mut backup, &svc, "192.0.2.9:2000", 50),
            sa("10.0.0.1:80")
        );
    }

    #[test]
    fn an_imported_template_expires_after_its_timeout() {
        let (svc, mut backup, mut synced) = backup_with_template();
        synced.timeout = secs(100);
        backup
            .import_template(&svc, &synced, secs(0))
            .expect("imported");
        backup.expire(secs(99));
        assert_eq!(backup.template_count(), 1);
        backup.expire(secs(100));
        assert_eq!(backup.template_count(), 0);
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0));
        // A refresh re-arms it from its arrival; no timeout (version 0) means 180 s.
        synced.timeout = Duration::ZERO;
        backup
            .import_template(&svc, &synced, secs(200))
            .expect("imported");
        assert_eq!(
            backup.import_template(&svc, &synced, secs(300)),
            Ok(Imported::Refreshed)
        );
        backup.expire(secs(479));
        assert_eq!(backup.template_count(), 1);
        backup.expire(secs(480));
        assert_eq!(backup.template_count(), 0);
    }

    /// A backup's service and empty table, and the template of client 192.0.2.1 that a
    /// master with the same configuration sent (to 10.0.0.1:80, for 300 s).
    fn backup_with_template() -> (Service, ConnTable, SyncConn) {
        (
            service(Some(Persistence::new(secs(300)))),
            ConnTable::default(),
            master_template("192.0.2.1:1000"),
        )
    }

    /// The template a master with its own copy of the persistent (300 s) [`service`]
    /// makes for `client`, as it exports it.
    fn master_template(client: &str) -> SyncConn {
        let svc = service(Some(Persistence::new(secs(300))));
        let mut master = ConnTable::default();
        master
            .connect(&svc, Protocol::Tcp, &flow(client), secs(0))
            .expect("conn");
        let mut sent = master.export_templates(secs(0));
        assert_eq!(sent.len(), 1);
        sent.remove(0)
    }

    #[test]
    fn a_template_for_a_client_already_known_is_rebound_to_the_received_server() {
        let (svc, mut backup, to_a) = backup_with_template();
        assert_eq!(to_a.dest, sa("10.0.0.1:80"));
        backup.import_template(&svc, &to_a, secs(0)).expect("a");
        let to_b = SyncConn {
            dest: sa("10.0.0.2:80"),
            ..to_a.clone()
        };
        assert_eq!(
            backup.import_template(&svc, &to_b, secs(10)),
            Ok(Imported::Rebound {
                from: sa("10.0.0.1:80")
            })
        );
        assert_eq!(backup.template_count(), 1);
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0));
        assert_eq!(counts(&svc, "10.0.0.2:80"), (0, 0, 1));
        assert_eq!(
            connect_dest(&mut backup, &svc, "192.0.2.1:1001", 11),
            sa("10.0.0.2:80")
        );
    }

    #[test]
    fn imports_refuse_connections_and_unknown_real_servers() {
        let (svc, mut backup, template) = backup_with_template();
        let unknown = SyncConn {
            dest: sa("10.0.0.9:80"),
            ..template.clone()
        };
        assert_eq!(
            backup.import_template(&svc, &unknown, secs(0)),
            Err(SyncImportError::UnknownDest(sa("10.0.0.9:80")))
        );
        let connection = SyncConn {
            flags: crate::sync::flags::INACTIVE,
            ..template
        };
        assert_eq!(
            backup.import_template(&svc, &connection, secs(0)),
            Err(SyncImportError::NotATemplate {
                client: sa("192.0.2.1:0")
            })
        );
        assert_eq!(backup.template_count(), 0);
        assert_eq!(counts(&svc, "10.0.0.1:80"), (0, 0, 0));
    }

    #[test]
    fn port_zero_templates_find_their_server_by_address() {
        let ftp_service = || {
            persistent_service(
                ServiceAddr::Addr(Protocol::Tcp, sa("198.51.100.1:21")),
                &["10.0.0.2:21", "10.0.0.1:21"],
            )
        };
        let (master_svc, svc) = (ftp_service(), ftp_service());
        let f = Flow::new(sa("192.0.2.1:1000"), sa("198.51.100.1:21"));
        let mut master = ConnTable::default();
        master
            .connect(&master_svc, Protocol::Tcp, &f, secs(0))
            .expect("conn");
        let sent = master.export_templates(secs(0));
        assert_eq!(
            (sent[0].vip, sent[0].dest),
            (sa("198.51.100.1:0"), sa("10.0.0.1:0")),
            "FTP templates have ports 0"
        );
        assert!(sent[0].matches_service(svc.addr()));
        let mut backup = ConnTable::default();
        backup
            .import_template(&svc, &sent[0], secs(0))
            .expect("imported");
        assert_eq!(counts(&svc, "10.0.0.1:21"), (0, 0, 1));
        let key = backup
            .connect(&svc, Protocol::Tcp, &f, secs(1))
            .expect("conn");
        assert_eq!(dest_of(&backup, &key), sa("10.0.0.1:21"));
        assert_eq!(backup.template_count(), 1, "the synced template was used");
    }

    #[test]
    fn templates_survive_the_wire_between_two_tables() {
        // Master and backup with the same configuration: SIP over UDP and a fwmark
        // service.
        let master_svc = sip_service();
        let backup_svc = sip_service();
        let mut master = ConnTable::default();
        let sent_to = |t: &mut ConnTable, svc: &Service, client: &str, call: &str, at: u64| {
            t.schedule_one_packet(svc, Protocol::Udp, &flow(client), &sip(call), secs(at))
                .map(|(dest, _)| dest.addr())
                .expect("scheduled")
        };
        let first = sent_to(&mut master, &master_svc, "192.0.2.1:5060", "call-1@h", 0);
        let second = sent_to(&mut master, &master_svc, "192.0.2.1:5060", "call-2@h", 0);
        assert_ne!(first, second);
        let datagrams = crate::sync::encode(4, &master.export_templates(secs(0)), 1472).datagrams;
        let mut backup = ConnTable::default();
        for datagram in &datagrams {
            let message = crate::sync::decode(datagram).expect("decoded");
            assert!(message.accepted_by(4));
            for conn in &message.conns {
                backup
                    .import_template(&backup_svc, conn, secs(1))
                    .expect("imported");
            }
        }
        // After failover, each call's next message goes where the master sent it,
        // whatever the backup's own rr would have chosen.
        assert_eq!(
            sent_to(&mut backup, &backup_svc, "192.0.2.7:5060", "call-2@h", 2),
            second
        );
        assert_eq!(
            sent_to(&mut backup, &backup_svc, "192.0.2.7:5060", "call-1@h", 3),
            first
        );
    }

    #[test]
    fn fwmark_templates_carry_their_mark() {
        let svc = persistent_service(ServiceAddr::Fwmark(7), &["10.0.0.1:0"]);
        let mut master = ConnTable::default();
        master
            .connect(&svc, Protocol::Tcp, &flow("192.0.2.1:1000"), secs(0))
            .expect("conn");
        let sent = master.export_templates(secs(0));
        assert_eq!(
            (sent[0].protocol, sent[0].fwmark, sent[0].vip),
            (Protocol::Ip, 7, sa("0.0.0.7:0"))
        );
        assert!(sent[0].matches_service(svc.addr()));
        let mut backup = ConnTable::default();
        assert_eq!(
            backup.import_template(&svc, &sent[0], secs(0)),
            Ok(Imported::Created)
        );
        let key = backup
            .connect(&svc, Protocol::Udp, &flow("192.0.2.1:53"), secs(1))
            .expect("conn");
        assert!(backup.get(&key).expect("conn").is_persistent());
        assert_eq!(backup.template_count(), 1, "the synced template was used");
    }
}
