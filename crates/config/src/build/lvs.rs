//! `virtual_server_group`, `virtual_server`, `real_server` and the health checkers.

use std::net::IpAddr;

use super::args::{Cx, ScriptRole, set, set_some};
use super::other;
use crate::diagnostic::Diagnostic;
use crate::model::{
    CheckCommon, CheckKind, Checker, DnsCheck, FileCheck, GroupEntry, HttpCheck, HttpUrl, LbKind,
    MiscCheck, PersistenceEngine, Protocol, RealServer, SchedulerKind, SmtpCheck, SorryServer,
    Tunnel, TunnelChecksum, TunnelType, UdpCheck, VirtualServer, VirtualServerGroup,
    VirtualServerKey,
};
use crate::syntax::{Node, Token};

/// keepalived's `persistence_timeout` when the keyword has no value.
const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
const DEFAULT_DELAY_LOOP: f64 = 60.0;
const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;
const DEFAULT_RETRY: u32 = 1;
/// IPVS keeps persistence templates for at most 31 days.
const MAX_PERSISTENCE_TIMEOUT: u32 = 2_678_400;
const MAX_WEIGHT: u32 = i32::MAX as u32;

/// Where an inheritable checker option is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Server,
    Checker,
}

impl Level {
    fn min_retry(self) -> u32 {
        match self {
            Level::Server => 1,
            Level::Checker => 0,
        }
    }
}

/// Checker options that a virtual server passes to its real servers, and a real server to
/// its checkers, when they don't set them themselves.
#[derive(Debug, Clone, Default)]
struct Inherited {
    connect_timeout: Option<f64>,
    retry: Option<u32>,
    delay_before_retry: Option<f64>,
    warmup: Option<f64>,
    delay_loop: Option<f64>,
}

impl Inherited {
    /// Reads one inheritable option; false if `node` is not one.
    fn read(&mut self, cx: &mut Cx, node: &Node, level: Level) -> bool {
        match node.name() {
            "connect_timeout" => set_some(&mut self.connect_timeout, cx.positive_seconds(node)),
            // A server-level retry of 0 is refused; a checker may say 0.
            "retry" => set_some(&mut self.retry, cx.int(node, level.min_retry()..=u32::MAX)),
            "nb_get_retry" => {
                deprecated_retry(cx, node);
                set_some(&mut self.retry, cx.int(node, 0..=u32::MAX));
            }
            "delay_before_retry" => set_some(
                &mut self.delay_before_retry,
                cx.seconds(node, f64::from(u32::MAX)),
            ),
            "warmup" => set_some(&mut self.warmup, cx.seconds(node, f64::from(u32::MAX))),
            "delay_loop" => set_some(&mut self.delay_loop, cx.positive_seconds(node)),
            _ => return false,
        }
        true
    }

    fn over(&self, outer: &Inherited) -> Inherited {
        Inherited {
            connect_timeout: self.connect_timeout.or(outer.connect_timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            warmup: self.warmup.or(outer.warmup),
            delay_loop: self.delay_loop.or(outer.delay_loop),
        }
    }
}

fn deprecated_retry(cx: &mut Cx, node: &Node) {
    cx.error(
        Diagnostic::warning(
            "deprecated-keyword",
            "`nb_get_retry` is the old name of `retry`",
        )
        .at(node.keyword.span, "read as `retry`"),
    );
}

pub fn virtual_server_group(cx: &mut Cx, node: &Node) -> Option<VirtualServerGroup> {
    let name = cx.string(node)?;
    let mut entries = Vec::new();
    for entry in node.children() {
        if entry.name() == "fwmark" {
            if let Some(fwmark) = cx.int(entry, 1..=u32::MAX) {
                entries.push(GroupEntry::Fwmark { fwmark });
            }
            continue;
        }
        // `IP [PORT]`: no port (or 0) means the group's services have none.
        let port = match entry.args.first() {
            Some(port) => cx.port_token(entry, port),
            None => Some(0),
        };
        cx.no_extra_args(entry, 1);
        let (Some((ip, last)), Some(port)) = (address_range(cx, &entry.keyword), port) else {
            continue;
        };
        entries.push(GroupEntry::Range { ip, last, port });
    }
    if entries.is_empty() {
        cx.error(
            Diagnostic::warning(
                "empty-block",
                format!("virtual_server_group `{name}` has no entries"),
            )
            .at(node.line_span(), "keepalived removes it"),
        );
    }
    if entries
        .iter()
        .all(|e| matches!(e, GroupEntry::Fwmark { .. }))
        && !entries.is_empty()
    {
        cx.fwmark_groups.push(name.clone());
    }
    Some(VirtualServerGroup { name, entries })
}

/// A group entry's addresses: `10.0.0.1`, a range of the last part (`10.0.0.1-10`,
/// `fd00::1-ff`), a range of whole addresses (`10.0.0.1-10.0.0.5`) or a network
/// (`10.0.0.0/29`).
fn address_range(cx: &mut Cx, token: &Token) -> Option<(IpAddr, IpAddr)> {
    let text = token.text.as_str();
    let parsed = if let Some((first, prefix)) = text.split_once('/') {
        network_range(first, prefix)
    } else if let Some((first, last)) = text.split_once('-') {
        first
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| range_end(ip, last).map(|end| (ip, end)))
    } else {
        text.parse::<IpAddr>().ok().map(|ip| (ip, ip))
    };
    let Some((ip, last)) = parsed else {
        cx.error(
            Diagnostic::error(
                "invalid-address",
                format!("invalid address or range `{text}`"),
            )
            .at(
                token.span,
                "expected ADDRESS, ADDRESS-LAST, ADDRESS-ADDRESS or NETWORK/PREFIX",
            ),
        );
        return None;
    };
    if text.contains('-') && last <= ip {
        cx.error(
            Diagnostic::error(
                "invalid-address",
                format!("address range `{text}` does not go up"),
            )
            .at(
                token.span,
                "keepalived skips a range whose end is not above its start",
            ),
        );
        return None;
    }
    Some((ip, last))
}

/// The end of `ip-last`: a whole address, or the last octet (IPv4) / group (IPv6).
fn range_end(ip: IpAddr, last: &str) -> Option<IpAddr> {
    if let Ok(end) = last.parse::<IpAddr>() {
        return (end.is_ipv4() == ip.is_ipv4()).then_some(end);
    }
    match ip {
        IpAddr::V4(v4) => last.parse::<u8>().ok().map(|l| {
            let mut o = v4.octets();
            o[3] = l;
            IpAddr::from(o)
        }),
        IpAddr::V6(v6) => u16::from_str_radix(last, 16).ok().map(|l| {
            let mut s = v6.segments();
            s[7] = l;
            IpAddr::from(s)
        }),
    }
}

fn network_range(first: &str, prefix: &str) -> Option<(IpAddr, IpAddr)> {
    let ip: IpAddr = first.parse().ok()?;
    let prefix: u32 = prefix.parse().ok()?;
    match ip {
        IpAddr::V4(v4) if prefix <= 32 => {
            let host_bits = u32::MAX.checked_shr(prefix).unwrap_or(0);
            let base = u32::from(v4) & !host_bits;
            Some((
                IpAddr::from(base.to_be_bytes()),
                IpAddr::from((base | host_bits).to_be_bytes()),
            ))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let host_bits = u128::MAX.checked_shr(prefix).unwrap_or(0);
            let base = u128::from(v6) & !host_bits;
            Some((
                IpAddr::from(base.to_be_bytes()),
                IpAddr::from((base | host_bits).to_be_bytes()),
            ))
        }
        _ => None,
    }
}

pub fn virtual_server(cx: &mut Cx, node: &Node) -> Option<VirtualServer> {
    let key = virtual_server_key(cx, node)?;
    let mut vs = VirtualServer {
        key,
        delay_loop: DEFAULT_DELAY_LOOP,
        lb_algo: SchedulerKind::Wlc,
        lb_flags: Vec::new(),
        lb_kind: LbKind::Nat,
        tunnel: None,
        persistence_timeout: None,
        persistence_granularity: None,
        persistence_engine: None,
        protocol: Protocol::Tcp,
        sorry_server: None,
        sorry_server_inhibit: false,
        quorum: 1,
        hysteresis: 0,
        quorum_up: None,
        quorum_down: None,
        inhibit_on_failure: false,
        alpha: false,
        omega: false,
        virtualhost: None,
        ha_suspend: false,
        proxy_protocol: None,
        real_server: Vec::new(),
        other: Default::default(),
    };
    let mut inherited = Inherited::default();
    let mut real_server_nodes = Vec::new();
    let mut seen_protocol = None;
    let mut default_weight = 1;
    let mut seen_algo = false;
    let mut seen_kind = false;
    let mut tunnel = Tunnel::default();
    let mut sorry: Option<SorryLines> = None;
    let mut proxy_protocol_v1 = None;
    let mut persistence_engine_at = None;
    for child in node.children() {
        if inherited.read(cx, child, Level::Server) {
            continue;
        }
        match child.name() {
            "lb_algo" | "lvs_sched" => {
                seen_algo = true;
                let Some(token) = cx.arg(child) else { continue };
                match token.text.parse::<SchedulerKind>() {
                    Ok(algo) => vs.lb_algo = algo,
                    Err(_) => cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("unknown lb_algo `{}`", token.text),
                        )
                        .at(token.span, "unknown scheduler")
                        .with_note(format!(
                            "IPVS schedulers: {}",
                            SchedulerKind::ALL.map(SchedulerKind::name).join(", ")
                        )),
                    ),
                }
            }
            "lb_kind" | "lvs_method" => {
                seen_kind = true;
                set(&mut vs.lb_kind, lb_kind(cx, child, &mut tunnel));
            }
            "persistence_timeout" => {
                vs.persistence_timeout = match child.args.first() {
                    Some(t) => cx.number(child, t, 1..=MAX_PERSISTENCE_TIMEOUT),
                    None => Some(DEFAULT_PERSISTENCE_TIMEOUT),
                }
            }
            "persistence_granularity" => {
                let Some(token) = cx.arg(child) else { continue };
                // keepalived takes any IPv4 address as a mask, or an IPv6 prefix length.
                let valid = token.text.parse::<std::net::Ipv4Addr>().is_ok()
                    || token
                        .text
                        .parse::<u8>()
                        .is_ok_and(|p| (1..=128).contains(&p));
                if !valid {
                    cx.error(
                        Diagnostic::error("invalid-value", format!("invalid persistence_granularity `{}`", token.text))
                            .at(token.span, "expected an IPv4 netmask (255.255.255.0) or an IPv6 prefix length (1-128)"),
                    );
                    continue;
                }
                vs.persistence_granularity = Some(token.text.clone());
                vs.persistence_timeout
                    .get_or_insert(DEFAULT_PERSISTENCE_TIMEOUT);
            }
            "persistence_engine" => {
                let Some(token) = cx.arg(child) else { continue };
                match PersistenceEngine::from_name(&token.text) {
                    Some(engine) => {
                        vs.persistence_engine = Some(engine);
                        persistence_engine_at = Some(token.span);
                    }
                    // keepalived takes any name (and `keepalived -t` says nothing); the kernel then
                    // refuses the service.
                    None => cx.error(
                        Diagnostic::note(
                            "unknown-persistence-engine",
                            format!("unknown persistence engine `{}`", token.text),
                        )
                        .at(
                            token.span,
                            "ignored: IPVS would refuse the service (ENOENT)",
                        )
                        .with_note("IPVS has one persistence engine: sip"),
                    ),
                }
            }
            "protocol" => {
                seen_protocol = Some(child.keyword.span);
                let Some(token) = cx.arg(child) else { continue };
                match token.text.to_ascii_uppercase().as_str() {
                    "TCP" => vs.protocol = Protocol::Tcp,
                    "UDP" => vs.protocol = Protocol::Udp,
                    "SCTP" => vs.protocol = Protocol::Sctp,
                    other => cx.error(
                        Diagnostic::error("invalid-value", format!("unknown protocol `{other}`"))
                            .at(token.span, "expected TCP, UDP or SCTP"),
                    ),
                }
            }
            "sorry_server_lvs_method" if sorry.is_none() => cx.error(
                Diagnostic::warning(
                    "order",
                    "`sorry_server_lvs_method` before or without `sorry_server`",
                )
                .at(
                    child.keyword.span,
                    "ignored: keepalived applies it only after a sorry_server line",
                ),
            ),
            "sorry_server_lvs_method" => {
                let Some(sorry) = &mut sorry else { continue };
                if let Some(kind) = lb_kind(cx, child, &mut sorry.tunnel) {
                    sorry.lb_kind = Some(kind);
                }
            }
            "sorry_server" => {
                let Some(ip) = cx
                    .arg_allowing_more(child)
                    .and_then(|t| cx.host_ip_token(child, t))
                else {
                    continue;
                };
                let port = match child.args.get(1) {
                    Some(t) => cx.port_token(child, t),
                    None => None,
                };
                cx.no_extra_args(child, 2);
                sorry = Some(SorryLines {
                    ip,
                    port,
                    line: child.line_span(),
                    lb_kind: seen_kind.then_some(vs.lb_kind),
                    tunnel,
                });
            }
            "sorry_server_inhibit" => {
                if sorry.is_some() {
                    vs.sorry_server_inhibit = cx.flag_only(child);
                } else {
                    cx.error(
                        Diagnostic::warning(
                            "order",
                            "`sorry_server_inhibit` before or without `sorry_server`",
                        )
                        .at(
                            child.keyword.span,
                            "ignored: keepalived applies it only after a sorry_server line",
                        ),
                    );
                }
            }
            "weight" => set(&mut default_weight, cx.int(child, 1..=MAX_WEIGHT)),
            "quorum" => set(&mut vs.quorum, cx.int(child, 1..=u32::MAX)),
            "alpha" => vs.alpha = cx.flag_only(child),
            "omega" => vs.omega = cx.flag_only(child),
            "inhibit_on_failure" => vs.inhibit_on_failure = cx.flag_only(child),
            "ha_suspend" => vs.ha_suspend = cx.flag_only(child),
            "hysteresis" => set(&mut vs.hysteresis, cx.int(child, 0..=u32::MAX)),
            "quorum_up" => vs.quorum_up = cx.script(child),
            "quorum_down" => vs.quorum_down = cx.script(child),
            "virtualhost" => set_some(&mut vs.virtualhost, cx.string(child)),
            "ip_family" => {
                if let Some(t) = cx.arg(child)
                    && !["inet", "inet6"].contains(&t.text.as_str())
                {
                    cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("unknown address family `{}`", t.text),
                        )
                        .at(t.span, "expected inet or inet6"),
                    );
                }
            }
            flag @ ("sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" | "hashed")
                if !(flag.starts_with(vs.lb_algo.name())
                    || flag == "hashed"
                        && matches!(vs.lb_algo, SchedulerKind::Sh | SchedulerKind::Mh)) =>
            {
                cx.error(
                    Diagnostic::warning(
                        "scheduler-flag",
                        format!("`{flag}` applies only to the scheduler it names (sh or mh)"),
                    )
                    .at(
                        child.keyword.span,
                        "ignored (keepalived needs lb_algo set earlier in the block)",
                    ),
                );
            }
            "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" | "ops" | "hashed" | "flag-1"
            | "flag-2" | "flag-3" => vs.lb_flags.push(child.name().to_owned()),
            "real_server" => real_server_nodes.push(child),
            // keeplb's own: the userspace proxy can tell real servers who the client is.
            "proxy_protocol" => {
                let Some(token) = cx.arg(child) else { continue };
                match token.text.to_ascii_lowercase().as_str() {
                    "v1" | "1" => {
                        vs.proxy_protocol = Some(1);
                        proxy_protocol_v1 = Some(token.span);
                    }
                    "v2" | "2" => vs.proxy_protocol = Some(2),
                    other => {
                        cx.error(
                            Diagnostic::error(
                                "invalid-value",
                                format!("unknown PROXY protocol version `{other}`"),
                            )
                            .at(token.span, "expected v1 or v2"),
                        );
                        continue;
                    }
                }
                cx.error(
                    Diagnostic::warning(
                        "keeplb-extension",
                        "`proxy_protocol` is a keeplb extension",
                    )
                    .at(
                        child.keyword.span,
                        "keeplb sends a PROXY protocol header to the real servers; keepalived reports an unknown keyword",
                    ),
                );
            }
            "nat_mask" => cx.error(
                Diagnostic::warning(
                    "obsolete-keyword",
                    "`nat_mask` is not a keepalived 2.x keyword",
                )
                .at(child.keyword.span, "ignored: it has no effect on IPVS")
                .with_note("keepalived 2.x reports it as an unknown keyword; delete the line"),
            ),
            name if super::known::VIRTUAL_SERVER.contains(&name) => other(cx, &mut vs.other, child),
            _ => cx.unknown(child, "virtual_server"),
        }
    }
    if let Some(delay_loop) = inherited.delay_loop {
        vs.delay_loop = delay_loop;
    }
    vs.tunnel = (vs.lb_kind == LbKind::Tun).then_some(tunnel);
    if let Some(sorry) = sorry {
        vs.sorry_server = sorry_server(cx, &vs, sorry, tunnel);
    }
    check_scheduling_defaults(cx, node, &mut vs, seen_protocol, seen_algo, seen_kind);
    if let (Some(PersistenceEngine::Sip), Some(span)) =
        (vs.persistence_engine, persistence_engine_at)
    {
        check_sip_engine(cx, &vs, span);
    }
    if vs.protocol == Protocol::Udp
        && vs.proxy_protocol == Some(1)
        && let Some(span) = proxy_protocol_v1
    {
        vs.proxy_protocol = None;
        cx.error(
            Diagnostic::warning(
                "proxy-protocol-v1-udp",
                "PROXY protocol v1 has no form for UDP",
            )
            .at(span, "ignored for this UDP service")
            .with_note("`proxy_protocol v2` starts every datagram with a header, as dnsdist and the PowerDNS Recursor read it"),
        );
    }
    let defaults = VsDefaults {
        weight: default_weight,
        port: match vs.key {
            VirtualServerKey::Address { port, .. } => port,
            _ => 0,
        },
        lb_kind: vs.lb_kind,
        tunnel,
        inhibit_on_failure: vs.inhibit_on_failure,
        alpha: vs.alpha,
        delay_loop: vs.delay_loop,
        inherited,
    };
    for rs_node in real_server_nodes {
        let Some(rs) = real_server(cx, rs_node, &defaults, &vs.key) else {
            continue;
        };
        if vs
            .real_server
            .iter()
            .any(|other| other.ip == rs.ip && other.port == rs.port)
        {
            cx.error(
                Diagnostic::warning(
                    "duplicate-real-server",
                    format!("real_server {} {} is listed twice", rs.ip, rs.port),
                )
                .at(rs_node.line_span(), "the second one is removed"),
            );
            continue;
        }
        vs.real_server.push(rs);
    }
    check_real_servers(cx, node, &mut vs);
    Some(vs)
}

/// The SIP engine keys templates by the Call-ID of UDP datagrams: without persistence
/// it does nothing, and on any other protocol the kernel finds no Call-ID in the first
/// packet and drops every connection. keepalived says nothing of either: notes.
fn check_sip_engine(cx: &mut Cx, vs: &VirtualServer, span: crate::source::Span) {
    if vs.persistence_timeout.is_none() {
        cx.error(
            Diagnostic::note(
                "sip-engine-needs-persistence",
                "persistence_engine sip has no effect without persistence_timeout",
            )
            .at(
                span,
                "the engine keys persistence templates, and this service makes none",
            ),
        );
    } else if vs.protocol != Protocol::Udp {
        cx.error(
            Diagnostic::note(
                "sip-engine-needs-udp",
                "persistence_engine sip reads SIP over UDP only",
            )
            .at(
                span,
                "IPVS (and keeplb) drop every new connection of this service",
            )
            .with_note("use `protocol UDP`, or remove persistence_engine"),
        );
    }
}

/// The sorry server as the block's lines leave it.
struct SorryLines {
    ip: IpAddr,
    port: Option<u16>,
    /// The `sorry_server` line.
    line: crate::source::Span,
    /// Its own method: from `sorry_server_lvs_method`, or the virtual server's `lb_kind`
    /// when one came before the `sorry_server` line (keepalived copies it there). `None`:
    /// not known yet when the block ends; the virtual server's final one then.
    lb_kind: Option<LbKind>,
    tunnel: Tunnel,
}

/// The sorry server, unless keepalived skips it: only a tunnelled one may be of the
/// other address family. keepalived checks that when the block ends, before a sorry
/// server without a method of its own takes the virtual server's, so such a one is
/// never tunnelled for this check.
fn sorry_server(
    cx: &mut Cx,
    vs: &VirtualServer,
    lines: SorryLines,
    vs_tunnel: Tunnel,
) -> Option<SorryServer> {
    if let VirtualServerKey::Address { ip: vip, .. } = vs.key
        && vip.is_ipv4() != lines.ip.is_ipv4()
        && lines.lb_kind != Some(LbKind::Tun)
    {
        cx.error(
            Diagnostic::error(
                "mixed-families",
                format!(
                    "sorry_server {} is not of the virtual server's address family",
                    lines.ip
                ),
            )
            .at(lines.line, "keepalived skips this sorry server")
            .with_note("only a sorry server with its own TUN method may be of the other family"),
        );
        return None;
    }
    let (lb_kind, tunnel) = match lines.lb_kind {
        Some(kind) => (kind, lines.tunnel),
        None => (vs.lb_kind, vs_tunnel),
    };
    Some(SorryServer {
        ip: lines.ip,
        port: lines.port,
        lb_kind,
        tunnel: (lb_kind == LbKind::Tun).then_some(tunnel),
    })
}

/// keepalived reports every scheduling default it has to apply, and a missing protocol
/// defaults to UDP, which is rarely what the author meant.
fn check_scheduling_defaults(
    cx: &mut Cx,
    node: &Node,
    vs: &mut VirtualServer,
    seen_protocol: Option<crate::source::Span>,
    seen_algo: bool,
    seen_kind: bool,
) {
    let at = node.line_span();
    let is_fwmark = match &vs.key {
        VirtualServerKey::Fwmark { .. } => true,
        VirtualServerKey::Group { group } => cx.fwmark_groups.contains(group),
        VirtualServerKey::Address { .. } => false,
    };
    match (is_fwmark, seen_protocol) {
        (true, Some(span)) => cx.error(
            Diagnostic::warning("fwmark-protocol", "a fwmark virtual server has no protocol")
                .at(span, "ignored: the firewall mark selects the traffic"),
        ),
        (false, None) => {
            vs.protocol = Protocol::Udp;
            cx.error(
                Diagnostic::warning("default-protocol", "virtual_server has no `protocol`: keepalived defaults to UDP")
                    .at(at, "add `protocol TCP` (or UDP) to say which")
                    .with_note("ipvsadm's -t/-u always say it; keepalived 2.2 uses UDP when the keyword is absent"),
            );
        }
        _ => {}
    }
    if vs.lb_flags.iter().any(|f| f == "ops") && vs.protocol != Protocol::Udp {
        vs.lb_flags.retain(|f| f != "ops");
        cx.error(
            Diagnostic::warning(
                "ops-needs-udp",
                "one-packet scheduling (`ops`) needs `protocol UDP`",
            )
            .at(at, "ops is turned off"),
        );
    }
    if !seen_algo {
        cx.error(
            Diagnostic::warning(
                "default-lb-algo",
                "virtual_server has no `lb_algo`: using wlc",
            )
            .at(at, "keepalived reports this default too"),
        );
    }
    if !seen_kind {
        cx.error(
            Diagnostic::warning(
                "default-lb-kind",
                "virtual_server has no `lb_kind`: using NAT",
            )
            .at(at, "keepalived's default is NAT; ipvsadm's is DR (-g)"),
        );
    }
    if let VirtualServerKey::Address { port: 0, .. } = vs.key
        && vs.persistence_timeout.is_none()
    {
        vs.persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT);
        cx.error(
            Diagnostic::warning("zero-port", "port 0 is only valid for a persistent service").at(
                at,
                "keepalived makes it persistent (360 s); add `persistence_timeout` or give a port",
            ),
        );
    }
}

fn check_real_servers(cx: &mut Cx, node: &Node, vs: &mut VirtualServer) {
    let at = node.line_span();
    if let Some(sorry) = &vs.sorry_server
        && vs.real_server.iter().any(|rs| {
            rs.ip == sorry.ip
                && Some(rs.port) == sorry.port
                && rs.inhibit_on_failure != vs.sorry_server_inhibit
        })
    {
        cx.error(
            Diagnostic::warning(
                "sorry-is-real",
                format!("sorry_server {} is also a real_server", sorry.ip),
            )
            .at(at, "keepalived removes the sorry server"),
        );
    }
    if vs.real_server.is_empty() {
        cx.error(
            Diagnostic::warning("no-real-servers", "virtual_server has no real_server").at(
                at,
                "keepalived ignores a virtual server without real servers",
            ),
        );
        return;
    }
    if vs.hysteresis >= vs.quorum {
        let lowered = vs.quorum.saturating_sub(1);
        cx.error(
            Diagnostic::warning(
                "hysteresis",
                format!(
                    "hysteresis {} is not below quorum {}",
                    vs.hysteresis, vs.quorum
                ),
            )
            .at(at, format!("hysteresis is set to {lowered}")),
        );
        vs.hysteresis = lowered;
    }
    let total_weight: u64 = vs.real_server.iter().map(|rs| u64::from(rs.weight)).sum();
    if u64::from(vs.quorum) > total_weight {
        cx.error(
            Diagnostic::warning(
                "quorum-unreachable",
                format!(
                    "quorum {} exceeds the total weight of the real servers ({total_weight})",
                    vs.quorum
                ),
            )
            .at(
                at,
                format!("keepalived lowers the quorum to {total_weight}"),
            ),
        );
    }
}

/// `NAT`, `DR` or `TUN [type ipip|gue|gre] [port N] [nocsum|csum|remcsum]`: keepalived reads
/// the whole line, so anything else after the method is reported. Like keepalived, a line
/// whose options are all valid and consistent sets `tunnel` (to the defaults when it has
/// none); any other keeps the settings `tunnel` had.
fn lb_kind(cx: &mut Cx, node: &Node, tunnel: &mut Tunnel) -> Option<LbKind> {
    let token = cx.arg_allowing_more(node)?;
    let kind = match token.text.as_str() {
        "NAT" => LbKind::Nat,
        "DR" => LbKind::Dr,
        "TUN" => LbKind::Tun,
        other => {
            cx.error(
                Diagnostic::error("invalid-value", format!("unknown lb_kind `{other}`"))
                    .at(token.span, "expected NAT, DR or TUN"),
            );
            return None;
        }
    };
    let mut options = Tunnel::default();
    let mut words = node.args.iter().skip(1);
    while let Some(word) = words.next() {
        let valid =
            kind == LbKind::Tun && tunnel_option(&mut options, word.text.as_str(), &mut words);
        if !valid {
            cx.error(
                Diagnostic::warning(
                    "invalid-value",
                    format!("invalid tunnel option `{}`", word.text),
                )
                .at(
                    word.span,
                    "keepalived reports it; TUN takes type, port and a checksum option",
                ),
            );
            return Some(kind);
        }
    }
    if let Some(conflict) = tunnel_conflict(options) {
        cx.error(Diagnostic::warning("invalid-value", conflict).at(
            node.line_span(),
            "keepalived reports it and ignores these tunnel options",
        ));
        return Some(kind);
    }
    *tunnel = options;
    Some(kind)
}

/// Reads one tunnel option into `tunnel`: `word`, and for `type` and `port` their value
/// taken from `rest`. False when it is not one.
fn tunnel_option<'a>(
    tunnel: &mut Tunnel,
    word: &str,
    rest: &mut impl Iterator<Item = &'a Token>,
) -> bool {
    let mut value = || rest.next().map(|t| t.text.as_str());
    match word {
        "type" => {
            let Some(kind) = value().and_then(TunnelType::from_name) else {
                return false;
            };
            tunnel.kind = kind;
        }
        // keepalived takes 1 to 65535
        "port" => match value()
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|p| *p != 0)
        {
            Some(port) => tunnel.port = port,
            None => return false,
        },
        "nocsum" => tunnel.checksum = TunnelChecksum::NoCsum,
        "csum" => tunnel.checksum = TunnelChecksum::Csum,
        "remcsum" => tunnel.checksum = TunnelChecksum::RemCsum,
        _ => return false,
    }
    true
}

/// keepalived's complaint about tunnel options that do not go together, if any.
fn tunnel_conflict(tunnel: Tunnel) -> Option<&'static str> {
    if (tunnel.kind == TunnelType::Gue) != (tunnel.port != 0) {
        return Some("gue tunnels require port, otherwise cannot have port");
    }
    match (tunnel.kind, tunnel.checksum) {
        (TunnelType::Ipip, TunnelChecksum::Csum | TunnelChecksum::RemCsum) => {
            Some("ipip tunnels do not support checksum option")
        }
        (TunnelType::Gre, TunnelChecksum::RemCsum) => {
            Some("gre tunnels do not support remote checksum option")
        }
        _ => None,
    }
}

fn virtual_server_key(cx: &mut Cx, node: &Node) -> Option<VirtualServerKey> {
    let first = cx.arg_allowing_more(node)?;
    match first.text.as_str() {
        "fwmark" => {
            let token = node.args.get(1);
            let fwmark = match token {
                Some(t) => cx.number(node, t, 1..=u32::MAX)?,
                None => {
                    cx.error(
                        Diagnostic::error("missing-value", "`virtual_server fwmark` needs a mark")
                            .at(first.span, "expected `fwmark N`"),
                    );
                    return None;
                }
            };
            cx.no_extra_args(node, 2);
            Some(VirtualServerKey::Fwmark { fwmark })
        }
        "group" => {
            let Some(name) = node.args.get(1) else {
                cx.error(
                    Diagnostic::error("missing-value", "`virtual_server group` needs a group name")
                        .at(first.span, "expected `group NAME`"),
                );
                return None;
            };
            cx.no_extra_args(node, 2);
            Some(VirtualServerKey::Group {
                group: name.text.clone(),
            })
        }
        _ => {
            let ip = cx.host_ip_token(node, first)?;
            let Some(port) = node.args.get(1) else {
                cx.error(
                    Diagnostic::error(
                        "missing-value",
                        "`virtual_server` needs `IP PORT`, `fwmark N` or `group NAME`",
                    )
                    .at(first.span, "port missing after the address"),
                );
                return None;
            };
            let port = cx.port_token(node, port)?;
            cx.no_extra_args(node, 2);
            Some(VirtualServerKey::Address { ip, port })
        }
    }
}

/// What a real server takes from its virtual server.
struct VsDefaults {
    /// The virtual server's `weight`: its real servers' default.
    weight: u32,
    port: u16,
    lb_kind: LbKind,
    /// The tunnel settings a real server starts from, TUN or not, as in keepalived.
    tunnel: Tunnel,
    inhibit_on_failure: bool,
    alpha: bool,
    delay_loop: f64,
    inherited: Inherited,
}

fn real_server(
    cx: &mut Cx,
    node: &Node,
    vs: &VsDefaults,
    key: &VirtualServerKey,
) -> Option<RealServer> {
    let ip = cx
        .arg_allowing_more(node)
        .and_then(|t| cx.host_ip_token(node, t))?;
    let port = match node.args.get(1) {
        Some(t) => cx.port_token(node, t)?,
        None => vs.port,
    };
    cx.no_extra_args(node, 2);
    let mut rs = RealServer {
        ip,
        port,
        weight: vs.weight,
        lb_kind: vs.lb_kind,
        tunnel: None,
        inhibit_on_failure: vs.inhibit_on_failure,
        notify_up: None,
        notify_down: None,
        uthreshold: 0,
        lthreshold: 0,
        alpha: vs.alpha,
        checkers: Vec::new(),
        other: Default::default(),
    };
    let mut inherited = Inherited::default();
    let mut checker_nodes = Vec::new();
    let mut tunnel = vs.tunnel;
    for child in node.children() {
        if inherited.read(cx, child, Level::Server) {
            continue;
        }
        match child.name() {
            "weight" => set(&mut rs.weight, cx.int(child, 0..=MAX_WEIGHT)),
            // keepalived knows `lb_kind` only at the virtual server level.
            "lvs_method" => set(&mut rs.lb_kind, lb_kind(cx, child, &mut tunnel)),
            "inhibit_on_failure" => set(&mut rs.inhibit_on_failure, cx.flag(child)),
            "notify_up" => rs.notify_up = cx.script(child),
            "notify_down" => rs.notify_down = cx.script(child),
            "uthreshold" => set(&mut rs.uthreshold, cx.int(child, 0..=u32::MAX)),
            "lthreshold" => set(&mut rs.lthreshold, cx.int(child, 0..=u32::MAX)),
            "alpha" => set(&mut rs.alpha, cx.flag(child)),
            name if super::known::CHECKERS.contains(&name) => {
                if cx.needs_block(child) {
                    checker_nodes.push(child);
                }
            }
            "BFD_CHECK" => {
                cx.error(
                    Diagnostic::note("unsupported", "keeplb does not run BFD_CHECK")
                        .at(child.keyword.span, "kept in the model, not acted on"),
                );
                other(cx, &mut rs.other, child);
            }
            name if super::known::REAL_SERVER.contains(&name) => other(cx, &mut rs.other, child),
            _ => cx.unknown(child, "real_server"),
        }
    }
    rs.tunnel = (rs.lb_kind == LbKind::Tun).then_some(tunnel);
    check_real_server_address(cx, node, &mut rs, vs, key, node.args.get(1).is_some())
        .then_some(())?;
    let inherited = inherited.over(&vs.inherited);
    rs.checkers = checker_nodes
        .into_iter()
        .filter_map(|n| checker(cx, n, &inherited, vs.delay_loop, rs.alpha))
        .collect();
    Some(rs)
}

/// keepalived's checks of a real server against its virtual server, made once the real
/// server's own `lvs_method` is known. False when the real server is skipped.
fn check_real_server_address(
    cx: &mut Cx,
    node: &Node,
    rs: &mut RealServer,
    vs: &VsDefaults,
    key: &VirtualServerKey,
    port_written: bool,
) -> bool {
    match key {
        // A tunnel may carry one family inside the other.
        VirtualServerKey::Address { ip: vip, .. }
            if vip.is_ipv4() != rs.ip.is_ipv4() && rs.lb_kind != LbKind::Tun =>
        {
            cx.error(
                Diagnostic::error(
                    "mixed-families",
                    format!(
                        "real_server {} is not of the virtual server's address family",
                        rs.ip
                    ),
                )
                .at(node.line_span(), "this real server is skipped"),
            );
            return false;
        }
        VirtualServerKey::Fwmark { .. } if port_written && rs.port != 0 => {
            cx.error(
                Diagnostic::warning(
                    "fwmark-real-server-port",
                    "a real server of a fwmark service takes no port",
                )
                .at(node.line_span(), "the port is cleared"),
            );
            rs.port = 0;
        }
        _ => {}
    }
    if matches!(rs.lb_kind, LbKind::Dr | LbKind::Tun) && rs.port != vs.port && vs.port != 0 {
        cx.error(
            Diagnostic::warning(
                "port-mismatch",
                format!(
                    "with DR or TUN the real server port must be the virtual server's ({})",
                    vs.port
                ),
            )
            .at(
                node.line_span(),
                format!("port {} is reset to {}", rs.port, vs.port),
            )
            .with_note("DR and TUN forward packets unchanged; only NAT can translate ports"),
        );
        rs.port = vs.port;
    }
    true
}

fn checker(
    cx: &mut Cx,
    node: &Node,
    outer: &Inherited,
    delay_loop: f64,
    alpha: bool,
) -> Option<Checker> {
    let mut own = Inherited::default();
    let mut common = CheckCommon {
        connect_ip: None,
        connect_port: None,
        bindto: None,
        bind_port: None,
        bind_if: None,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        retry: DEFAULT_RETRY,
        delay_before_retry: 1.0,
        delay_loop,
        warmup: None,
        alpha,
        log_all_failures: false,
        fwmark: None,
    };
    let mut kind = match node.name() {
        "TCP_CHECK" => CheckKind::Tcp,
        "HTTP_GET" => CheckKind::Http(http_check()),
        "SSL_GET" => CheckKind::Ssl(http_check()),
        "MISC_CHECK" => CheckKind::Misc(MiscCheck {
            misc_path: String::new(),
            misc_timeout: None,
            misc_dynamic: false,
            user: None,
            group: None,
        }),
        "SMTP_CHECK" => CheckKind::Smtp(SmtpCheck { helo_name: None }),
        "DNS_CHECK" => CheckKind::Dns(DnsCheck {
            query_type: "SOA".to_owned(),
            name: ".".to_owned(),
        }),
        "UDP_CHECK" => CheckKind::Udp(UdpCheck {
            payload: None,
            require_reply: None,
            min_reply_length: None,
            max_reply_length: None,
        }),
        "PING_CHECK" => CheckKind::Ping,
        _ => CheckKind::File(FileCheck {
            track_file: String::new(),
            weight: None,
            reverse: false,
        }),
    };
    let mut others = crate::model::OtherKeywords::new();
    for child in node.children() {
        if !checker_takes(&kind, child.name()) {
            cx.unknown(child, node.name());
            continue;
        }
        if own.read(cx, child, Level::Checker) {
            continue;
        }
        match (child.name(), &mut kind) {
            ("connect_ip", _) => set_some(&mut common.connect_ip, cx.ip(child)),
            ("connect_port", _) => set_some(&mut common.connect_port, cx.int(child, 1..=65535u16)),
            ("bindto", _) => set_some(&mut common.bindto, cx.ip(child)),
            ("bind_port", _) => set_some(&mut common.bind_port, cx.int(child, 1..=65535u16)),
            ("bind_if", _) => set_some(&mut common.bind_if, cx.string(child)),
            ("alpha", _) => set(&mut common.alpha, cx.flag(child)),
            ("log_all_failures", _) => set(&mut common.log_all_failures, cx.flag(child)),
            ("fwmark", _) => set_some(&mut common.fwmark, cx.int(child, 0..=u32::MAX)),
            ("url", CheckKind::Http(h) | CheckKind::Ssl(h)) => {
                if let Some(url) = http_url(cx, child) {
                    h.url.push(url);
                }
            }
            ("virtualhost", CheckKind::Http(h) | CheckKind::Ssl(h)) => {
                set_some(&mut h.virtualhost, cx.string(child))
            }
            ("http_protocol", CheckKind::Http(h) | CheckKind::Ssl(h)) => {
                let Some(token) = cx.arg(child) else { continue };
                if ["1.0", "1.1", "1.0C", "1.0c"].contains(&token.text.as_str()) {
                    h.http_protocol = Some(token.text.clone());
                } else {
                    cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("invalid http_protocol `{}`", token.text),
                        )
                        .at(token.span, "expected 1.0, 1.1 or 1.0C"),
                    );
                }
            }
            ("enable_sni", CheckKind::Http(h) | CheckKind::Ssl(h)) => {
                set(&mut h.enable_sni, cx.flag(child))
            }
            // keepalived runs the first word only (quote a command with arguments).
            ("misc_path", CheckKind::Misc(m)) => {
                if let Some(token) = cx.arg(child) {
                    m.misc_path = token.text.clone();
                    cx.check_script(&token.text, token.span, ScriptRole::Check);
                }
            }
            ("misc_timeout", CheckKind::Misc(m)) => set_some(
                &mut m.misc_timeout,
                cx.int(child, 0..=u32::MAX).map(f64::from),
            ),
            ("misc_dynamic", CheckKind::Misc(m)) => m.misc_dynamic = cx.flag_only(child),
            ("user", CheckKind::Misc(m)) => {
                m.user = cx.arg_allowing_more(child).map(|t| t.text.clone());
                m.group = child.args.get(1).map(|t| t.text.clone());
            }
            ("helo_name", CheckKind::Smtp(s)) => set_some(&mut s.helo_name, cx.string(child)),
            ("type", CheckKind::Dns(d)) => {
                let Some(token) = cx.arg(child) else { continue };
                let upper = token.text.to_ascii_uppercase();
                if [
                    "A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA", "RRSIG", "DNSKEY",
                ]
                .contains(&upper.as_str())
                {
                    d.query_type = upper;
                } else {
                    cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("unknown DNS_CHECK type `{}`", token.text),
                        )
                        .at(token.span, "expected A, NS, CNAME, SOA, MX, TXT or AAAA"),
                    );
                }
            }
            ("name", CheckKind::Dns(d)) => set(&mut d.name, cx.string(child)),
            ("payload", CheckKind::Udp(u)) => {
                let hex: String = child.args.iter().map(|t| t.text.as_str()).collect();
                if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    cx.error(
                        Diagnostic::error("invalid-value", "UDP_CHECK payload must be hexadecimal")
                            .at(child.line_span(), "e.g. `payload 0a1b2c`"),
                    );
                } else {
                    u.payload = Some(hex.to_ascii_lowercase());
                }
            }
            ("require_reply", CheckKind::Udp(u)) => {
                // keepalived joins every word (make_strvec_str): blanks may split the hex.
                let words: Vec<&str> = child.args.iter().map(|t| t.text.as_str()).collect();
                u.require_reply = Some(words.join(" "))
            }
            ("min_reply_length", CheckKind::Udp(u)) => {
                set_some(&mut u.min_reply_length, cx.int(child, 0..=65535))
            }
            ("max_reply_length", CheckKind::Udp(u)) => {
                set_some(&mut u.max_reply_length, cx.int(child, 0..=65535))
            }
            ("track_file", CheckKind::File(f)) => {
                let Some(token) = cx.arg(child) else { continue };
                if cx.track_files.contains(&token.text) {
                    f.track_file = token.text.clone();
                } else {
                    cx.error(
                        Diagnostic::error(
                            "undefined-reference",
                            format!("track_file `{}` is not defined", token.text),
                        )
                        .at(
                            token.span,
                            "define the track_file block before the virtual_server that uses it",
                        ),
                    );
                }
            }
            ("weight", CheckKind::File(f)) => {
                f.weight = cx
                    .arg_allowing_more(child)
                    .and_then(|t| cx.number(child, t, -i32::MAX..=i32::MAX));
                f.reverse = child.args.get(1).is_some_and(|t| t.text == "reverse");
            }
            ("host", CheckKind::Smtp(_)) => {
                cx.error(
                    Diagnostic::note(
                        "deprecated-keyword",
                        "the SMTP_CHECK `host` block is deprecated",
                    )
                    .at(child.keyword.span, "define one SMTP_CHECK per host instead"),
                );
                other(cx, &mut others, child)
            }
            (name, CheckKind::Http(_) | CheckKind::Ssl(_))
                if super::known::HTTP_CHECKER.contains(&name) =>
            {
                other(cx, &mut others, child)
            }
            _ => cx.unknown(child, node.name()),
        }
    }
    let resolved = own.over(outer);
    set(&mut common.connect_timeout, resolved.connect_timeout);
    set(&mut common.delay_loop, resolved.delay_loop);
    // Per-type defaults, used only when neither the checker, its real server nor the
    // virtual server set them.
    let (default_retry, default_delay_before_retry) = match kind {
        CheckKind::Http(_) | CheckKind::Ssl(_) => (DEFAULT_RETRY, 3.0),
        CheckKind::Misc(_) => (0, 1.0),
        CheckKind::Dns(_) => (3, common.delay_loop),
        _ => (DEFAULT_RETRY, 1.0),
    };
    common.retry = resolved.retry.unwrap_or(default_retry);
    common.delay_before_retry = resolved
        .delay_before_retry
        .unwrap_or(default_delay_before_retry);
    common.warmup = resolved.warmup;
    if !checker_is_complete(cx, node, &kind) {
        return None;
    }
    Some(Checker {
        kind,
        common,
        other: others,
    })
}

/// MISC_CHECK connects nowhere, and FILE_CHECK neither connects nor retries: keepalived
/// does not know those keywords there.
fn checker_takes(kind: &CheckKind, keyword: &str) -> bool {
    const CONNECTION: &[&str] = &[
        "connect_ip",
        "connect_port",
        "bindto",
        "bind_port",
        "bind_if",
        "fwmark",
        "connect_timeout",
    ];
    let common = super::known::CHECKER_COMMON.contains(&keyword) || keyword == "nb_get_retry";
    match kind {
        CheckKind::Misc(_) => !CONNECTION.contains(&keyword),
        CheckKind::File(_) => !common,
        _ => true,
    }
}

fn checker_is_complete(cx: &mut Cx, node: &Node, kind: &CheckKind) -> bool {
    if let CheckKind::Udp(u) = kind
        && let (Some(min), Some(max)) = (u.min_reply_length, u.max_reply_length)
        && min > max
    {
        cx.error(
            Diagnostic::warning(
                "reply-length",
                format!("UDP_CHECK min_reply_length {min} is above max_reply_length {max}"),
            )
            .at(node.keyword.span, "this check will always fail"),
        );
    }
    if let CheckKind::Http(h) | CheckKind::Ssl(h) = kind {
        let digests: Vec<&str> = h.url.iter().filter_map(|u| u.digest.as_deref()).collect();
        if let Some(dup) = digests
            .iter()
            .enumerate()
            .find_map(|(i, d)| digests[..i].contains(d).then_some(*d))
        {
            cx.error(
                Diagnostic::warning("duplicate-digest", format!("digest {dup} is given twice"))
                    .at(node.keyword.span, "keepalived reports duplicate digests"),
            );
        }
    }
    let missing = match kind {
        CheckKind::Http(h) | CheckKind::Ssl(h) if h.url.is_empty() => {
            Some("`url { path … }` block")
        }
        CheckKind::Misc(m) if m.misc_path.is_empty() => Some("`misc_path`"),
        CheckKind::File(f) if f.track_file.is_empty() => Some("`track_file`"),
        _ => None,
    };
    if let Some(missing) = missing {
        cx.error(
            Diagnostic::error(
                "missing-keyword",
                format!("{} has no {missing}", node.name()),
            )
            .at(node.keyword.span, "this checker is ignored"),
        );
        return false;
    }
    true
}

fn http_check() -> HttpCheck {
    HttpCheck {
        url: Vec::new(),
        virtualhost: None,
        http_protocol: None,
        enable_sni: false,
    }
}

fn http_url(cx: &mut Cx, node: &Node) -> Option<HttpUrl> {
    if !cx.needs_block(node) {
        return None;
    }
    let mut url = HttpUrl {
        path: String::new(),
        digest: None,
        status_code: Vec::new(),
        virtualhost: None,
        regex: None,
        regex_no_match: false,
    };
    for child in node.children() {
        match child.name() {
            "path" => set(&mut url.path, cx.string(child)),
            "digest" => {
                let Some(token) = cx.arg(child) else { continue };
                if token.text.len() == 32 && token.text.chars().all(|c| c.is_ascii_hexdigit()) {
                    url.digest = Some(token.text.to_ascii_lowercase());
                } else {
                    cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`{}` is not an MD5 digest", token.text),
                        )
                        .at(
                            token.span,
                            "expected 32 hexadecimal digits (see `keeplb genhash`)",
                        ),
                    );
                }
            }
            "status_code" => {
                if child.args.is_empty() {
                    cx.error(
                        Diagnostic::note("missing-value", "`status_code` without codes")
                            .at(child.keyword.span, "the default 200-299 applies"),
                    );
                }
                for token in &child.args {
                    if let Some(range) = status_range(cx, token) {
                        url.status_code.push(range);
                    }
                }
            }
            "virtualhost" => set_some(&mut url.virtualhost, cx.string(child)),
            "regex" => match child.args.as_slice() {
                [pattern] => url.regex = Some(pattern.text.clone()),
                _ => cx.error(
                    Diagnostic::note("regex-words", "`regex` takes exactly one (quoted) pattern")
                        .at(child.keyword.span, "ignored, as keepalived ignores it"),
                ),
            },
            "regex_no_match" => url.regex_no_match = true,
            name if super::known::URL.contains(&name) => {}
            _ => cx.unknown(child, "url"),
        }
    }
    if url.path.is_empty() {
        cx.error(
            Diagnostic::error("missing-keyword", "url block has no `path`")
                .at(node.keyword.span, "add `path /health` to this block"),
        );
        return None;
    }
    if url.status_code.is_empty() {
        url.status_code.push((200, 299));
    }
    Some(url)
}

/// `200` or `200-299`.
fn status_range(cx: &mut Cx, token: &Token) -> Option<(u16, u16)> {
    let (low, high) = token
        .text
        .split_once('-')
        .unwrap_or((&token.text, &token.text));
    match (low.parse::<u16>(), high.parse::<u16>()) {
        (Ok(l), Ok(h)) if (100..=599).contains(&l) && (l..=599).contains(&h) => Some((l, h)),
        _ => {
            cx.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("invalid status_code `{}`", token.text),
                )
                .at(
                    token.span,
                    "expected a code 100-599 or a range like 200-299",
                ),
            );
            None
        }
    }
}
