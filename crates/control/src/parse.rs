//! ipvsadm's command line (`ipvsadm COMMAND [OPTIONS]`), parsed as ipvsadm 1.31 parses it:
//! same options, same defaults, same checks in the same order, same messages and exit codes.
//!
//! The parser keeps ipvsadm's working record (the service and real server being described)
//! and applies each option to it in order, because ipvsadm's results depend on that order
//! (`-M` before or after an IPv6 `-t`, `-r` before or after `-t`). The record then becomes an
//! [`AdmCommand`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::command::{AdmCommand, ListFormat, ListTarget};
use crate::cstr::{atoi, inet_aton, is_all_digits, string_to_number};
use crate::model::{
    DestConfig, Family, ForwardMethod, Netmask, Protocol, SchedFlags, ServiceConfig, ServiceKey,
    SyncDaemon, SyncRole, Timeouts, Tunnel, TunnelChecksum, TunnelType,
};
use crate::names::Names;
use crate::popt::{ArgKind, OptDef, Popt};

/// ipvsadm's limit for timeouts (31 days).
const MAX_TIMEOUT: i64 = 86400 * 31;
/// ipvsadm's persistence timeout when `-p` has no value.
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 300;
/// ipvsadm's scheduler when `-s` is not given.
pub const DEFAULT_SCHEDULER: &str = "wlc";
/// Longest scheduler name the kernel keeps (IP_VS_SCHEDNAME_MAXLEN - 1).
const SCHEDULER_NAME_MAX: usize = 15;
/// Longest persistence engine name ipvsadm copies (IP_VS_PENAME_MAXLEN).
const PE_NAME_MAX: usize = 32;
/// Longest interface name ipvsadm copies (IP_VS_IFNAME_MAXLEN - 1).
const IFNAME_MAX: usize = 15;
/// Largest weight: Debian's ipvsadm 1.31 accepts up to INT_MAX (upstream stops at 65535).
const MAX_WEIGHT: i64 = i32::MAX as i64;

/// Why a command line was not turned into a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseFailure {
    /// ipvsadm stops at once with this exit code and message (its `fail()` and the
    /// "Try `ipvsadm -h'" hint); inside `-R` this ends the whole restore.
    Exit {
        /// Exit status (2, or 255 for the hint).
        code: i32,
        /// Text for standard error, newline included.
        stderr: String,
    },
    /// The option scanner rejected a word: ipvsadm prints this and the command fails with
    /// status 255, but inside `-R` the next line still runs.
    Rejected {
        /// Text for standard error, newline included.
        stderr: String,
    },
}

impl ParseFailure {
    fn fail(message: impl Into<String>) -> ParseFailure {
        let mut stderr = message.into();
        stderr.push('\n');
        ParseFailure::Exit { code: 2, stderr }
    }
}

/// The hint ipvsadm prints for a command line it cannot start on.
pub fn try_help(program: &str) -> ParseFailure {
    ParseFailure::Exit {
        code: 255,
        stderr: format!("Try `{program} -h' or '{program} --help' for more information.\n"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    ListLower,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNoCsum,
    TunCsum,
    TunRemCsum,
}

const fn def(long: &'static str, short: Option<char>, arg: ArgKind, id: Opt) -> OptDef<Opt> {
    OptDef {
        long,
        short,
        arg,
        id,
    }
}

use ArgKind::{None as NoArg, Optional, Required};

/// ipvsadm's option table, in its order (popt finds `--list` as `-L`, the first entry).
static OPTIONS: &[OptDef<Opt>] = &[
    def("add-service", Some('A'), NoArg, Opt::AddService),
    def("edit-service", Some('E'), NoArg, Opt::EditService),
    def("delete-service", Some('D'), NoArg, Opt::DeleteService),
    def("clear", Some('C'), NoArg, Opt::Clear),
    def("list", Some('L'), NoArg, Opt::List),
    def("list", Some('l'), NoArg, Opt::ListLower),
    def("zero", Some('Z'), NoArg, Opt::Zero),
    def("add-server", Some('a'), NoArg, Opt::AddServer),
    def("edit-server", Some('e'), NoArg, Opt::EditServer),
    def("delete-server", Some('d'), NoArg, Opt::DeleteServer),
    def("set", None, NoArg, Opt::Set),
    def("help", Some('h'), NoArg, Opt::Help),
    def("version", Some('v'), NoArg, Opt::Version),
    def("restore", Some('R'), NoArg, Opt::Restore),
    def("save", Some('S'), NoArg, Opt::Save),
    def("start-daemon", None, Required, Opt::StartDaemon),
    def("stop-daemon", None, Required, Opt::StopDaemon),
    def("tcp-service", Some('t'), Required, Opt::Tcp),
    def("udp-service", Some('u'), Required, Opt::Udp),
    def("sctp-service", None, Required, Opt::Sctp),
    def("fwmark-service", Some('f'), Required, Opt::Fwmark),
    def("scheduler", Some('s'), Required, Opt::Scheduler),
    def("persistent", Some('p'), Optional, Opt::Persistent),
    def("netmask", Some('M'), Required, Opt::Netmask),
    def("real-server", Some('r'), Required, Opt::RealServer),
    def("masquerading", Some('m'), NoArg, Opt::Masquerading),
    def("ipip", Some('i'), NoArg, Opt::Ipip),
    def("gatewaying", Some('g'), NoArg, Opt::Gatewaying),
    def("weight", Some('w'), Required, Opt::Weight),
    def("u-threshold", Some('x'), Required, Opt::UThreshold),
    def("l-threshold", Some('y'), Required, Opt::LThreshold),
    def("numeric", Some('n'), NoArg, Opt::Numeric),
    def("connection", Some('c'), NoArg, Opt::Connection),
    def("mcast-interface", None, Required, Opt::McastInterface),
    def("syncid", None, Required, Opt::SyncId),
    def("timeout", None, NoArg, Opt::Timeout),
    def("daemon", None, NoArg, Opt::Daemon),
    def("stats", None, NoArg, Opt::Stats),
    def("rate", None, NoArg, Opt::Rate),
    def("thresholds", None, NoArg, Opt::Thresholds),
    def("persistent-conn", None, NoArg, Opt::PersistentConn),
    def("nosort", None, NoArg, Opt::NoSort),
    def("sort", None, NoArg, Opt::Sort),
    def("exact", Some('X'), NoArg, Opt::Exact),
    def("ipv6", Some('6'), NoArg, Opt::Ipv6),
    def("ops", Some('o'), NoArg, Opt::Ops),
    def("pe", None, Required, Opt::Pe),
    def("sched-flags", Some('b'), Required, Opt::SchedFlags),
    def("mcast-group", None, Required, Opt::McastGroup),
    def("mcast-port", None, Required, Opt::McastPort),
    def("mcast-ttl", None, Required, Opt::McastTtl),
    def("sync-maxlen", None, Required, Opt::SyncMaxlen),
    def("tun-info", None, NoArg, Opt::TunInfo),
    def("tun-type", None, Required, Opt::TunType),
    def("tun-port", None, Required, Opt::TunPort),
    def("tun-nocsum", None, NoArg, Opt::TunNoCsum),
    def("tun-csum", None, NoArg, Opt::TunCsum),
    def("tun-remcsum", None, NoArg, Opt::TunRemCsum),
];

/// ipvsadm's commands, in the order of its legality table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Which options the command takes, one character per option column (`OPTC_*` order):
    /// `+` required, `x` refused, `1` at most one of the `1`s, ` ` optional.
    fn legality(self) -> &'static [u8; OPTION_COUNT] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxxx11       xxxxxxx xxxxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::StartDaemon => b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
            Cmd::StopDaemon => b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

const OPTION_COUNT: usize = 34;

/// ipvsadm's option columns (`OPTC_*`), named as its messages name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Col {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    OnePacket,
    PersistenceEngine,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNoCsum,
    TunCsum,
    TunRemCsum,
}

const COLUMN_NAMES: [&str; OPTION_COUNT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Options(u64);

impl Options {
    fn has(self, col: Col) -> bool {
        self.0 & (1 << col as usize) != 0
    }
    fn has_index(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
    /// ipvsadm's `set_option`: each option at most once.
    fn set(&mut self, col: Col) -> Result<(), ParseFailure> {
        if self.has(col) {
            return Err(ParseFailure::fail(format!(
                "multiple '{}' options specified",
                COLUMN_NAMES[col as usize]
            )));
        }
        self.0 |= 1 << col as usize;
        Ok(())
    }
}

const AF_UNSPEC: u16 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

const FLAG_PERSISTENT: u32 = 0x1;
const FLAG_ONEPACKET: u32 = 0x4;
const FLAG_SCHED1: u32 = 0x8;
const FLAG_SCHED2: u32 = 0x10;
const FLAG_SCHED3: u32 = 0x20;

const PROTO_NONE: u16 = 0;
const PROTO_TCP: u16 = 6;
const PROTO_UDP: u16 = 17;
const PROTO_SCTP: u16 = 132;

/// ipvsadm's `ipvs_service_t` while options are applied.
#[derive(Debug, Clone)]
struct ServiceRecord {
    af: u16,
    protocol: u16,
    addr: IpAddr,
    port: u16,
    fwmark: u32,
    scheduler: String,
    flags: u32,
    timeout: u32,
    /// An IPv4 mask (as `u32::from(Ipv4Addr)`) or an IPv6 prefix length, like the kernel's.
    netmask: u32,
    pe_name: String,
}

/// ipvsadm's `ipvs_dest_t` while options are applied.
#[derive(Debug, Clone)]
struct DestRecord {
    af: u16,
    addr: IpAddr,
    port: u16,
    forward: ForwardMethod,
    weight: u32,
    upper_threshold: u32,
    lower_threshold: u32,
    tunnel_type: TunnelType,
    tunnel_port: u16,
    tunnel_checksum: TunnelChecksum,
}

#[derive(Debug, Clone, Default)]
struct DaemonRecord {
    role: Option<SyncRole>,
    mcast_interface: String,
    sync_id: u8,
    sync_maxlen: u16,
    mcast_group: Option<IpAddr>,
    mcast_port: u16,
    mcast_ttl: u8,
}

const SERVICE_ADDR: u8 = 1;
const SERVICE_PORT: u8 = 2;

fn protocol_of(number: u16) -> Option<Protocol> {
    match number {
        PROTO_TCP => Some(Protocol::Tcp),
        PROTO_UDP => Some(Protocol::Udp),
        PROTO_SCTP => Some(Protocol::Sctp),
        _ => None,
    }
}

/// ipvsadm's `parse_service`: `host[:port]`, `[ipv6]:port` or a bare IPv6 address; returns
/// which parts were set (0 on error), updating `svc` as ipvsadm does.
fn parse_service(buf: &str, svc: &mut ServiceRecord, names: &dyn Names) -> u8 {
    if is_all_digits(buf) {
        return 0;
    }
    let mut host = buf;
    let mut port_text: Option<&str> = None;
    if let Some(inner) = buf.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return 0;
        };
        let Some(port) = after.strip_prefix(':') else {
            return 0;
        };
        host = addr;
        port_text = Some(port);
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        svc.addr = IpAddr::V6(v6);
        svc.af = AF_INET6;
        svc.netmask = 128;
    } else {
        // ipvsadm looks for the port again in what is left, so `[1.2.3.4]:80` loses its port
        port_text = None;
        if let Some((addr, port)) = host.rsplit_once(':') {
            host = addr;
            port_text = Some(port);
        }
        match inet_aton(host).or_else(|| names.addr_by_host(host)) {
            Some(v4) => {
                svc.addr = IpAddr::V4(v4);
                svc.af = AF_INET;
            }
            None => return 0,
        }
    }
    let Some(port_text) = port_text else {
        return SERVICE_ADDR;
    };
    let port = string_to_number(port_text, 0, 65535)
        .and_then(|p| u16::try_from(p).ok())
        .or_else(|| protocol_of(svc.protocol).and_then(|p| names.port_by_service(port_text, p)));
    match port {
        Some(port) => {
            svc.port = port;
            SERVICE_ADDR | SERVICE_PORT
        }
        None => 0,
    }
}

fn parse_timeout(value: Option<&str>, min: i64, max: i64) -> Result<u32, ParseFailure> {
    let Some(value) = value else {
        return Ok(DEFAULT_PERSISTENT_TIMEOUT);
    };
    string_to_number(value, min, max)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| ParseFailure::fail(format!("invalid timeout value `{value}' specified")))
}

fn parse_fwmark(value: &str) -> Result<u32, ParseFailure> {
    string_to_number(value, 1, i64::from(u32::MAX))
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| ParseFailure::fail(format!("invalid fwmark value `{value}' specified")))
}

fn parse_number(value: &str, min: i64, max: i64, what: &str) -> Result<i64, ParseFailure> {
    string_to_number(value, min, max)
        .ok_or_else(|| ParseFailure::fail(format!("illegal {what} specified")))
}

/// ipvsadm's `parse_sched_flags` (the scheduler is the one given so far, default wlc).
fn parse_sched_flags(scheduler: &str, value: &str) -> Result<u32, ParseFailure> {
    let scheduler = if scheduler.is_empty() {
        DEFAULT_SCHEDULER
    } else {
        scheduler
    };
    let mut flags = 0;
    let mut words = value.split(',').filter(|w| !w.is_empty()).peekable();
    if words.peek().is_none() {
        // ipvsadm dereferences a null pointer here; refuse the value instead
        return Err(ParseFailure::fail(format!(
            "invalid scheduler flag `{value}'"
        )));
    }
    for flag in words {
        let (bit, only_for) = match flag {
            "flag-1" => (FLAG_SCHED1, None),
            "flag-2" => (FLAG_SCHED2, None),
            "flag-3" => (FLAG_SCHED3, None),
            "sh-fallback" => (FLAG_SCHED1, Some("sh")),
            "sh-port" => (FLAG_SCHED2, Some("sh")),
            "mh-fallback" => (FLAG_SCHED1, Some("mh")),
            "mh-port" => (FLAG_SCHED2, Some("mh")),
            _ => {
                return Err(ParseFailure::fail(format!(
                    "invalid scheduler flag `{flag}'"
                )));
            }
        };
        if only_for.is_some_and(|s| s != scheduler) {
            return Err(ParseFailure::fail(format!(
                "incompatible scheduler flag `{flag}'"
            )));
        }
        flags |= bit;
    }
    Ok(flags)
}

fn truncated(value: &str, max: usize) -> String {
    let mut end = value.len().min(max);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

fn parse_mcast_group(value: &str) -> Result<IpAddr, ParseFailure> {
    if value.contains(':') {
        match value.parse::<Ipv6Addr>() {
            Ok(group) if group.is_multicast() => Ok(IpAddr::V6(group)),
            _ => Err(ParseFailure::fail(format!(
                "invalid IPv6 mcast-group `{value}'"
            ))),
        }
    } else {
        match value.parse::<Ipv4Addr>() {
            Ok(group) if group.is_multicast() => Ok(IpAddr::V4(group)),
            _ => Err(ParseFailure::fail(format!(
                "invalid IPv4 mcast-group `{value}'"
            ))),
        }
    }
}

/// ipvsadm's legality tables (`generic_opt_check`, `tunnel_opt_check`): the first option,
/// in column order, that `subject` (e.g. "'add-server' command") requires but lacks,
/// refuses, or takes together with another exclusive one. `rules` pairs each column with
/// `+` required, `x` refused, `1` at most one of the `1`s, or ` ` optional.
fn check_legality(
    rules: impl IntoIterator<Item = (usize, u8)>,
    options: Options,
    subject: &str,
) -> Result<(), ParseFailure> {
    let mut exclusive: Option<usize> = None;
    for (column, rule) in rules {
        let name = COLUMN_NAMES[column];
        if !options.has_index(column) {
            if rule == b'+' {
                return Err(ParseFailure::fail(format!(
                    "You need to supply the '{name}' option for the {subject}"
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(ParseFailure::fail(format!(
                "Illegal '{name}' option with the {subject}"
            )));
        }
        if rule == b'1' {
            if let Some(first) = exclusive {
                return Err(ParseFailure::fail(format!(
                    "The option '{name}' conflicts with the '{}' option in the {subject}",
                    COLUMN_NAMES[first]
                )));
            }
            exclusive = Some(column);
        }
    }
    Ok(())
}

fn check_options(cmd: Cmd, options: Options) -> Result<(), ParseFailure> {
    let rules = cmd.legality().iter().copied().enumerate();
    check_legality(rules, options, &format!("'{}' command", cmd.name()))
}

fn check_tunnel_options(kind: TunnelType, options: Options) -> Result<(), ParseFailure> {
    let columns = [Col::TunPort, Col::TunNoCsum, Col::TunCsum, Col::TunRemCsum];
    let legality: &[u8; 4] = match kind {
        TunnelType::Ipip => b"xxxx",
        TunnelType::Gue => b"+111",
        TunnelType::Gre => b"x11x",
    };
    let rules = columns
        .into_iter()
        .map(|c| c as usize)
        .zip(legality.iter().copied());
    check_legality(rules, options, &format!("'{}' tunnel type", kind.name()))
}

/// Everything ipvsadm gathers from one command line before acting on it.
struct Record {
    cmd: Cmd,
    options: Options,
    format: ListFormat,
    svc: ServiceRecord,
    dest: DestRecord,
    timeouts: Timeouts,
    daemon: DaemonRecord,
}

impl Record {
    fn new(cmd: Cmd) -> Record {
        Record {
            cmd,
            options: Options::default(),
            format: ListFormat::default(),
            svc: ServiceRecord {
                af: AF_UNSPEC,
                protocol: PROTO_NONE,
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 0,
                fwmark: 0,
                scheduler: String::new(),
                flags: 0,
                timeout: 0,
                netmask: u32::MAX,
                pe_name: String::new(),
            },
            dest: DestRecord {
                af: AF_UNSPEC,
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 0,
                forward: ForwardMethod::Route,
                weight: 1,
                upper_threshold: 0,
                lower_threshold: 0,
                tunnel_type: TunnelType::Ipip,
                tunnel_port: 0,
                tunnel_checksum: TunnelChecksum::NoCsum,
            },
            timeouts: Timeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 0,
            },
            daemon: DaemonRecord::default(),
        }
    }

    /// Applies one option (ipvsadm's `parse_options` loop body).
    fn apply(&mut self, opt: Opt, arg: Option<&str>, names: &dyn Names) -> Result<(), Reject> {
        let value = arg.unwrap_or("");
        let o = &mut self.options;
        match opt {
            Opt::Tcp | Opt::Udp | Opt::Sctp => {
                o.set(Col::Service)?;
                self.svc.protocol = match opt {
                    Opt::Tcp => PROTO_TCP,
                    Opt::Udp => PROTO_UDP,
                    _ => PROTO_SCTP,
                };
                if parse_service(value, &mut self.svc, names) & SERVICE_ADDR == 0 {
                    return Err(ParseFailure::fail(
                        "illegal virtual server address[:port] specified",
                    )
                    .into());
                }
            }
            Opt::Fwmark => {
                o.set(Col::Service)?;
                self.svc.af = AF_INET;
                self.svc.protocol = PROTO_TCP;
                self.svc.fwmark = parse_fwmark(value)?;
            }
            Opt::Scheduler => {
                o.set(Col::Scheduler)?;
                self.svc.scheduler = truncated(value, SCHEDULER_NAME_MAX);
            }
            Opt::Persistent => {
                o.set(Col::Persistent)?;
                self.svc.flags |= FLAG_PERSISTENT;
                self.svc.timeout = parse_timeout(arg, 1, MAX_TIMEOUT)?;
            }
            Opt::Netmask => {
                o.set(Col::Netmask)?;
                if self.svc.af != AF_INET6 {
                    let mask = inet_aton(value).or_else(|| names.addr_by_host(value));
                    let mask = mask.ok_or_else(|| {
                        ParseFailure::fail("illegal virtual server persistent mask specified")
                    })?;
                    self.svc.netmask = u32::from(mask);
                } else {
                    let prefix = atoi(value);
                    if !(1..=128).contains(&prefix) {
                        return Err(ParseFailure::fail("illegal ipv6 netmask specified").into());
                    }
                    self.svc.netmask = prefix as u32;
                }
            }
            Opt::RealServer => {
                o.set(Col::Server)?;
                let mut target = self.svc.clone();
                let parsed = parse_service(value, &mut target, names);
                self.dest.af = target.af;
                self.dest.addr = target.addr;
                self.dest.port = target.port;
                if parsed & SERVICE_ADDR == 0 {
                    return Err(
                        ParseFailure::fail("illegal real server address[:port] specified").into(),
                    );
                }
                if parsed == SERVICE_ADDR {
                    self.dest.port = self.svc.port;
                }
            }
            Opt::Ipip | Opt::Gatewaying | Opt::Masquerading => {
                o.set(Col::Forward)?;
                self.dest.forward = match opt {
                    Opt::Ipip => ForwardMethod::Tunnel,
                    Opt::Gatewaying => ForwardMethod::Route,
                    _ => ForwardMethod::Masq,
                };
            }
            Opt::Weight => {
                o.set(Col::Weight)?;
                self.dest.weight = parse_number(value, 0, MAX_WEIGHT, "weight")? as u32;
            }
            Opt::UThreshold => {
                o.set(Col::UThreshold)?;
                self.dest.upper_threshold =
                    parse_number(value, 0, i64::from(i32::MAX), "u_threshold")? as u32;
            }
            Opt::LThreshold => {
                o.set(Col::LThreshold)?;
                self.dest.lower_threshold =
                    parse_number(value, 0, i64::from(i32::MAX), "l_threshold")? as u32;
            }
            Opt::Connection => o.set(Col::Connection)?,
            Opt::Numeric => {
                o.set(Col::Numeric)?;
                self.format.numeric = true;
            }
            Opt::McastInterface => {
                o.set(Col::Mcast)?;
                self.daemon.mcast_interface = truncated(value, IFNAME_MAX);
            }
            Opt::SyncId => {
                o.set(Col::SyncId)?;
                self.daemon.sync_id = parse_number(value, 0, 255, "syncid")? as u8;
            }
            Opt::Timeout => o.set(Col::Timeout)?,
            Opt::Daemon => o.set(Col::Daemon)?,
            Opt::Stats => {
                o.set(Col::Stats)?;
                self.format.stats = true;
            }
            Opt::Rate => {
                o.set(Col::Rate)?;
                self.format.rate = true;
            }
            Opt::Thresholds => {
                o.set(Col::Thresholds)?;
                self.format.thresholds = true;
            }
            Opt::PersistentConn => {
                o.set(Col::PersistentConn)?;
                self.format.persistent_conn = true;
            }
            Opt::NoSort => {
                o.set(Col::NoSort)?;
                self.format.nosort = true;
            }
            Opt::Sort => {}
            Opt::Exact => {
                o.set(Col::Exact)?;
                self.format.exact = true;
            }
            Opt::Ipv6 => {
                if self.svc.fwmark == 0 {
                    return Err(ParseFailure::fail("-6 used before -f\n").into());
                }
                self.svc.af = AF_INET6;
                self.svc.netmask = 128;
            }
            Opt::Ops => {
                o.set(Col::OnePacket)?;
                self.svc.flags |= FLAG_ONEPACKET;
            }
            Opt::Pe => {
                o.set(Col::PersistenceEngine)?;
                self.svc.pe_name = truncated(value, PE_NAME_MAX);
            }
            Opt::SchedFlags => {
                o.set(Col::SchedFlags)?;
                return Err(Reject::SchedFlags(value.to_owned()));
            }
            Opt::McastGroup => {
                o.set(Col::McastGroup)?;
                self.daemon.mcast_group = Some(parse_mcast_group(value)?);
            }
            Opt::McastPort => {
                o.set(Col::McastPort)?;
                self.daemon.mcast_port = parse_number(value, 1, 65535, "mcast-port")? as u16;
            }
            Opt::McastTtl => {
                o.set(Col::McastTtl)?;
                self.daemon.mcast_ttl = parse_number(value, 1, 255, "mcast-ttl")? as u8;
            }
            Opt::SyncMaxlen => {
                o.set(Col::SyncMaxlen)?;
                self.daemon.sync_maxlen =
                    parse_number(value, 1, 65535 - 20 - 8, "sync-maxlen")? as u16;
            }
            Opt::TunInfo => {
                o.set(Col::TunInfo)?;
                self.format.tun_info = true;
            }
            Opt::TunType => {
                o.set(Col::TunType)?;
                self.dest.tunnel_type = TunnelType::from_name(value)
                    .ok_or_else(|| ParseFailure::fail("illegal tunnel type specified"))?;
            }
            Opt::TunPort => {
                o.set(Col::TunPort)?;
                self.dest.tunnel_port = parse_number(value, 1, 65535, "tunnel port")? as u16;
            }
            Opt::TunNoCsum => o.set(Col::TunNoCsum)?,
            Opt::TunCsum => {
                o.set(Col::TunCsum)?;
                self.dest.tunnel_checksum = TunnelChecksum::Csum;
            }
            Opt::TunRemCsum => {
                o.set(Col::TunRemCsum)?;
                self.dest.tunnel_checksum = TunnelChecksum::RemCsum;
            }
            Opt::AddService
            | Opt::EditService
            | Opt::DeleteService
            | Opt::Clear
            | Opt::List
            | Opt::ListLower
            | Opt::Zero
            | Opt::AddServer
            | Opt::EditServer
            | Opt::DeleteServer
            | Opt::Set
            | Opt::Help
            | Opt::Version
            | Opt::Restore
            | Opt::Save
            | Opt::StartDaemon
            | Opt::StopDaemon => return Err(Reject::SecondCommand),
        }
        Ok(())
    }

    fn service_key(&self) -> Option<ServiceKey> {
        if self.svc.fwmark != 0 {
            let family = if self.svc.af == AF_INET6 {
                Family::Ipv6
            } else {
                Family::Ipv4
            };
            return Some(ServiceKey::Fwmark {
                mark: self.svc.fwmark,
                family,
            });
        }
        if !self.options.has(Col::Service) {
            return None;
        }
        Some(ServiceKey::Addr {
            protocol: protocol_of(self.svc.protocol)?,
            address: self.svc.addr,
            port: self.svc.port,
        })
    }

    fn required_service(&self) -> Result<ServiceKey, ParseFailure> {
        self.service_key().ok_or_else(|| {
            ParseFailure::fail(format!(
                "You need to supply the 'service-address' option for the '{}' command",
                self.cmd.name()
            ))
        })
    }

    fn service_config(&self) -> Result<ServiceConfig, ParseFailure> {
        let key = self.required_service()?;
        let netmask = match key.family() {
            Family::Ipv4 => Netmask::V4(Ipv4Addr::from(self.svc.netmask)),
            Family::Ipv6 => Netmask::Prefix(u8::try_from(self.svc.netmask).unwrap_or(128)),
        };
        let flags = self.svc.flags;
        Ok(ServiceConfig {
            key,
            scheduler: self.svc.scheduler.clone(),
            sched_flags: SchedFlags {
                flag_1: flags & FLAG_SCHED1 != 0,
                flag_2: flags & FLAG_SCHED2 != 0,
                flag_3: flags & FLAG_SCHED3 != 0,
            },
            persistent: (flags & FLAG_PERSISTENT != 0).then_some(self.svc.timeout),
            netmask,
            one_packet: flags & FLAG_ONEPACKET != 0,
            persistence_engine: (!self.svc.pe_name.is_empty()).then(|| self.svc.pe_name.clone()),
        })
    }

    fn dest_config(&self) -> DestConfig {
        DestConfig {
            address: self.dest.addr,
            port: self.dest.port,
            forward: self.dest.forward,
            weight: self.dest.weight,
            upper_threshold: self.dest.upper_threshold,
            lower_threshold: self.dest.lower_threshold,
            tunnel: Tunnel {
                kind: self.dest.tunnel_type,
                port: self.dest.tunnel_port,
                checksum: self.dest.tunnel_checksum,
            },
        }
    }

    /// ipvsadm's `process_options` checks, then the command.
    fn finish(mut self) -> Result<AdmCommand, ParseFailure> {
        check_options(self.cmd, self.options)?;
        if matches!(self.cmd, Cmd::Add | Cmd::Edit) {
            if self.svc.fwmark == 0 && self.svc.port == 0 && self.svc.flags & FLAG_PERSISTENT == 0 {
                return Err(ParseFailure::fail(
                    "Zero port specified for non-persistent service",
                ));
            }
            if self.svc.flags & FLAG_ONEPACKET != 0
                && self.svc.fwmark == 0
                && self.svc.protocol != PROTO_UDP
            {
                return Err(ParseFailure::fail(
                    "One-Packet Scheduling is only for UDP virtual services",
                ));
            }
            if self.svc.scheduler.is_empty() {
                self.svc.scheduler = DEFAULT_SCHEDULER.to_owned();
            }
        }
        if self.cmd == Cmd::StartDaemon && self.daemon.mcast_interface.is_empty() {
            self.daemon.mcast_interface = "eth0".to_owned();
        }
        if matches!(self.cmd, Cmd::AddDest | Cmd::EditDest) {
            let forward = self.dest.forward;
            if self.svc.fwmark == 0
                && matches!(forward, ForwardMethod::Tunnel | ForwardMethod::Route)
            {
                self.dest.port = self.svc.port;
            }
            if self.dest.af != self.svc.af && forward != ForwardMethod::Tunnel {
                return Err(ParseFailure::fail(
                    "Different address family is allowed only for tunneling servers",
                ));
            }
            let tunnel_options = [
                Col::TunType,
                Col::TunPort,
                Col::TunNoCsum,
                Col::TunCsum,
                Col::TunRemCsum,
            ];
            if tunnel_options.iter().any(|c| self.options.has(*c))
                && forward != ForwardMethod::Tunnel
            {
                return Err(ParseFailure::fail(
                    "Tunnel options conflict with forward method",
                ));
            }
            check_tunnel_options(self.dest.tunnel_type, self.options)?;
        }
        let o = self.options;
        Ok(match self.cmd {
            Cmd::List => {
                let conflicting_columns =
                    (o.has(Col::Connection) || o.has(Col::Timeout) || o.has(Col::Daemon))
                        && (o.has(Col::Stats) || o.has(Col::Rate) || o.has(Col::Thresholds));
                let conflicting_persistence =
                    (o.has(Col::Timeout) || o.has(Col::Daemon)) && o.has(Col::PersistentConn);
                if conflicting_columns || conflicting_persistence {
                    return Err(ParseFailure::fail("options conflicts in the list command"));
                }
                let target = if o.has(Col::Connection) {
                    ListTarget::Connections
                } else if o.has(Col::Service) {
                    ListTarget::Service {
                        service: self.required_service()?,
                    }
                } else if o.has(Col::Timeout) {
                    ListTarget::Timeouts
                } else if o.has(Col::Daemon) {
                    ListTarget::Daemons
                } else {
                    ListTarget::All
                };
                AdmCommand::List {
                    target,
                    format: self.format,
                }
            }
            Cmd::Restore => AdmCommand::Restore,
            Cmd::Save => AdmCommand::Save {
                numeric: self.format.numeric,
            },
            Cmd::Flush => AdmCommand::Flush,
            Cmd::Add => AdmCommand::AddService {
                service: self.service_config()?,
            },
            Cmd::Edit => AdmCommand::EditService {
                service: self.service_config()?,
            },
            Cmd::Del => AdmCommand::DeleteService {
                service: self.required_service()?,
            },
            Cmd::Zero => AdmCommand::Zero {
                service: self.service_key(),
            },
            Cmd::AddDest => AdmCommand::AddDest {
                service: self.required_service()?,
                dest: self.dest_config(),
            },
            Cmd::EditDest => AdmCommand::EditDest {
                service: self.required_service()?,
                dest: self.dest_config(),
            },
            Cmd::DelDest => AdmCommand::DeleteDest {
                service: self.required_service()?,
                address: self.dest.addr,
                port: self.dest.port,
            },
            Cmd::Timeout => AdmCommand::SetTimeouts {
                timeouts: self.timeouts,
            },
            Cmd::StartDaemon | Cmd::StopDaemon => {
                let role = self.daemon.role.unwrap_or(SyncRole::Master);
                if self.cmd == Cmd::StopDaemon {
                    let sync_id = o.has(Col::SyncId).then_some(self.daemon.sync_id);
                    AdmCommand::StopDaemon { role, sync_id }
                } else {
                    AdmCommand::StartDaemon {
                        daemon: SyncDaemon {
                            role,
                            mcast_interface: self.daemon.mcast_interface,
                            sync_id: self.daemon.sync_id,
                            sync_maxlen: self.daemon.sync_maxlen,
                            mcast_group: self.daemon.mcast_group,
                            mcast_port: self.daemon.mcast_port,
                            mcast_ttl: self.daemon.mcast_ttl,
                        },
                    }
                }
            }
        })
    }
}

/// Why applying an option stopped.
enum Reject {
    Failure(ParseFailure),
    /// A second command option (`invalid option`), blamed on the word popt names.
    SecondCommand,
    /// `-b` is kept and parsed after the other options, as ipvsadm does.
    SchedFlags(String),
}

impl From<ParseFailure> for Reject {
    fn from(failure: ParseFailure) -> Self {
        Reject::Failure(failure)
    }
}

fn role_of(value: &str) -> Option<SyncRole> {
    match value {
        "master" => Some(SyncRole::Master),
        "backup" => Some(SyncRole::Backup),
        _ => None,
    }
}

/// Parses one ipvsadm command line. `args` excludes the program name; `program` is what
/// ipvsadm's messages call the program (its `argv[0]`). `names` resolves host and service
/// names, as ipvsadm does when an address or port is not numeric.
pub fn parse_args(
    program: &str,
    args: &[String],
    names: &dyn Names,
) -> Result<AdmCommand, ParseFailure> {
    let mut popt = Popt::new(OPTIONS, args);
    let Ok(Some((first, first_arg))) = popt.next_opt() else {
        return Err(try_help(program));
    };
    let daemon_role = |value: Option<&str>, message: &str| {
        role_of(value.unwrap_or("")).ok_or_else(|| ParseFailure::fail(message))
    };
    let mut record = match first {
        Opt::AddService => Record::new(Cmd::Add),
        Opt::EditService => Record::new(Cmd::Edit),
        Opt::DeleteService => Record::new(Cmd::Del),
        Opt::AddServer => Record::new(Cmd::AddDest),
        Opt::EditServer => Record::new(Cmd::EditDest),
        Opt::DeleteServer => Record::new(Cmd::DelDest),
        Opt::Clear => Record::new(Cmd::Flush),
        Opt::List | Opt::ListLower => Record::new(Cmd::List),
        Opt::Zero => Record::new(Cmd::Zero),
        Opt::Set => Record::new(Cmd::Timeout),
        Opt::Restore => Record::new(Cmd::Restore),
        Opt::Save => Record::new(Cmd::Save),
        Opt::StartDaemon => {
            let mut record = Record::new(Cmd::StartDaemon);
            record.daemon.role = Some(daemon_role(
                first_arg.as_deref(),
                "illegal start-daemon parameter specified",
            )?);
            record
        }
        Opt::StopDaemon => {
            let mut record = Record::new(Cmd::StopDaemon);
            record.daemon.role = Some(daemon_role(
                first_arg.as_deref(),
                "illegal start_daemon specified",
            )?);
            record
        }
        Opt::Help => return Ok(AdmCommand::Help),
        Opt::Version => return Ok(AdmCommand::Version),
        _ => return Err(try_help(program)),
    };
    let mut sched_flags: Option<String> = None;
    loop {
        match popt.next_opt() {
            Ok(Some((opt, arg))) => match record.apply(opt, arg.as_deref(), names) {
                Ok(()) => {}
                Err(Reject::Failure(failure)) => return Err(failure),
                Err(Reject::SecondCommand) => {
                    return Err(ParseFailure::fail(format!(
                        "invalid option `{}'",
                        popt.last_word()
                    )));
                }
                Err(Reject::SchedFlags(value)) => sched_flags = Some(value),
            },
            Ok(None) => break,
            Err(error) => {
                return Err(ParseFailure::Rejected {
                    stderr: format!("{}\n", error.message()),
                });
            }
        }
    }
    if record.cmd == Cmd::Timeout {
        let mut value = || popt.next_leftover();
        let (Some(tcp), Some(tcp_fin), Some(udp)) = (value(), value(), value()) else {
            return Err(ParseFailure::fail("--set option requires 3 timeout values"));
        };
        record.timeouts = Timeouts {
            tcp: parse_timeout(Some(tcp), 0, MAX_TIMEOUT)?,
            tcp_fin: parse_timeout(Some(tcp_fin), 0, MAX_TIMEOUT)?,
            udp: parse_timeout(Some(udp), 0, MAX_TIMEOUT)?,
        };
    }
    if let Some(extra) = popt.next_leftover() {
        return Err(ParseFailure::fail(format!("unexpected argument {extra}")));
    }
    if let Some(value) = sched_flags {
        record.svc.flags &= !(FLAG_SCHED1 | FLAG_SCHED2 | FLAG_SCHED3);
        record.svc.flags |= parse_sched_flags(&record.svc.scheduler, &value)?;
    }
    record.finish()
}
