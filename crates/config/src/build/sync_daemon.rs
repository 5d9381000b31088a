//! global_defs `lvs_sync_daemon` (and the deprecated `vrrp_instance` keyword
//! `lvs_sync_daemon_interface`), read word by word as keepalived 2.2.7's `lvs_syncd_handler`
//! reads them, then tied to its VRRP instance once every instance is known, as keepalived's
//! `vrrp_complete_init` does.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use super::args::Cx;
use crate::diagnostic::Diagnostic;
use crate::env::InterfaceState;
use crate::model::{LvsSyncDaemon, VrrpInstance};
use crate::source::Span;
use crate::syntax::{Node, Token};

/// The kernel's sync defaults (`IP_VS_SYNC_PORT`, `IP_VS_SYNC_GROUP`, TTL 1): keepalived
/// leaves unset options at 0 and `start_sync_thread` fills them in.
pub const DEFAULT_PORT: u16 = 8848;
pub const DEFAULT_TTL: u8 = 1;
pub const DEFAULT_GROUP: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81));

/// `IP_VS_IFNAME_MAXLEN`: the kernel's interface name buffer, with its NUL.
const IFNAME_MAXLEN: usize = 16;

/// A sync daemon as written, before its instance is looked up.
#[derive(Debug, Clone)]
pub struct PendingSyncDaemon {
    interface: String,
    interface_span: Span,
    /// The instance name and where it was written.
    instance: Option<(String, Span)>,
    /// `None`: the instance's VRID (keepalived's `PARAMETER_UNSET`).
    sync_id: Option<u8>,
    maxlen: Option<u16>,
    port: u16,
    ttl: u8,
    group: IpAddr,
    /// Where the keyword stands, for the second-definition report.
    keyword: Span,
}

/// Reads `lvs_sync_daemon INTERFACE [VRRP_INSTANCE] [id N] [maxlen N] [port N] [ttl N]
/// [group ADDR] [inst VRRP_INSTANCE]` into `cx.lvs_sync_daemon`.
pub fn global_keyword(cx: &mut Cx, node: &Node) {
    if let Some(first) = &cx.lvs_sync_daemon {
        let first = first.keyword;
        cx.error(
            Diagnostic::warning(
                "duplicate-keyword",
                "lvs_sync_daemon has already been specified",
            )
            .at(node.keyword.span, "ignored: keepalived keeps the first")
            .with_secondary(first, "first specified here"),
        );
        return;
    }
    let Some(interface) = node.args.first() else {
        cx.error(
            Diagnostic::error("missing-value", "lvs_sync_daemon requires interface").at(
                node.keyword.span,
                "ignored: no interface after this keyword",
            ),
        );
        return;
    };
    if interface.text.len() >= IFNAME_MAXLEN {
        cx.error(
            Diagnostic::error(
                "invalid-value",
                format!(
                    "lvs_sync_daemon interface name '{}' too long - ignoring",
                    interface.text
                ),
            )
            .at(
                interface.span,
                format!("at most {} bytes", IFNAME_MAXLEN - 1),
            ),
        );
        return;
    }
    let mut daemon = PendingSyncDaemon {
        interface: interface.text.clone(),
        interface_span: interface.span,
        instance: None,
        sync_id: None,
        maxlen: None,
        port: DEFAULT_PORT,
        ttl: DEFAULT_TTL,
        group: DEFAULT_GROUP,
        keyword: node.keyword.span,
    };
    // Indices into `node.args`: keepalived's word position minus one.
    let mut at = 1;
    while let Some(word) = node.args.get(at) {
        let value = node.args.get(at + 1);
        let option = word.text.as_str();
        match (option, value) {
            ("inst", None) => {
                // keepalived stops reading the file ("missing a parameter").
                cx.error(
                    Diagnostic::error("missing-value", "`inst` needs a VRRP instance name")
                        .at(word.span, "value missing after this option"),
                );
            }
            ("inst", Some(name)) => match &daemon.instance {
                Some((first, first_at)) => {
                    let first_at = *first_at;
                    cx.error(
                        Diagnostic::warning(
                            "duplicate-keyword",
                            format!(
                                "lvs_sync_daemon vrrp instance has already been specified as {first}"
                            ),
                        )
                        .at(name.span, "ignored")
                        .with_secondary(first_at, "specified here"),
                    );
                }
                None => daemon.instance = Some((name.text.clone(), name.span)),
            },
            ("id", None) => cx.error(
                Diagnostic::warning(
                    "missing-value",
                    "No value specified for lvs_sync_daemon id, defaulting to vrid",
                )
                .at(word.span, "the sync id is the instance's virtual_router_id"),
            ),
            ("id", Some(token)) => {
                if let Some(id) = number(cx, token, "syncid", 0..=255, "the instance's vrid") {
                    daemon.sync_id = Some(id);
                }
            }
            ("maxlen" | "port" | "ttl" | "group", None) => cx.error(
                Diagnostic::error(
                    "missing-value",
                    format!("No value specified for lvs_sync_daemon {option} - ignoring"),
                )
                .at(word.span, "value missing after this option"),
            ),
            ("maxlen", Some(token)) => {
                // 65535 less the IPv4 and UDP headers.
                let range = 1..=65507;
                if let Some(n) = number(cx, token, "lvs_sync_daemon maxlen", range, "ignored") {
                    daemon.maxlen = Some(n);
                }
            }
            ("port", Some(token)) => {
                let port = number(cx, token, "lvs_sync_daemon port", 1..=65535, "ignored");
                daemon.port = port.unwrap_or(daemon.port);
            }
            ("ttl", Some(token)) => {
                let ttl = number(cx, token, "lvs_sync_daemon ttl", 1..=255, "ignored");
                daemon.ttl = ttl.unwrap_or(daemon.ttl);
            }
            // keepalived forgets an earlier group when a later one is invalid.
            ("group", Some(token)) => daemon.group = group(cx, token).unwrap_or(DEFAULT_GROUP),
            // keepalived 1.x's positional form: INTERFACE VRRP_INSTANCE [SYNC_ID].
            (_, _) if at == 1 => {
                daemon.instance = Some((word.text.clone(), word.span));
                at += 1;
                continue;
            }
            (_, _) if at == 2 => {
                if let Some(id) = number(cx, word, "syncid", 0..=255, "the instance's vrid") {
                    daemon.sync_id = Some(id);
                    cx.error(
                        Diagnostic::warning(
                            "deprecated-syntax",
                            "Please use keyword \"id\" before lvs_sync_daemon SYNCID",
                        )
                        .at(word.span, format!("write `id {}`", word.text)),
                    );
                }
                at += 1;
                continue;
            }
            (_, _) => {
                cx.error(
                    Diagnostic::warning(
                        "unknown-option",
                        format!("Unknown option {option} specified for lvs_sync_daemon"),
                    )
                    .at(word.span, "ignored")
                    .with_note("options: id, maxlen, port, ttl, group, inst"),
                );
                at += 1;
                continue;
            }
        }
        // An option and its value.
        at += 2;
    }
    cx.lvs_sync_daemon = Some(daemon);
}

/// vrrp_instance `lvs_sync_daemon_interface INTERFACE` (deprecated, reported by the caller):
/// the sync daemon follows this instance, with sync id 0 (keepalived sets the instance
/// itself, not its name, so the VRID default does not apply).
pub fn instance_keyword(cx: &mut Cx, node: &Node, instance: &str) {
    let Some(interface) = cx.arg(node) else {
        return;
    };
    if let Some(first) = &cx.lvs_sync_daemon {
        let message = format!(
            "({instance}) lvs_sync_daemon_interface has already been specified as {}",
            first.interface
        );
        let first_at = first.interface_span;
        cx.error(
            Diagnostic::warning("duplicate-keyword", message)
                .at(interface.span, "ignored")
                .with_secondary(first_at, "specified here"),
        );
        return;
    }
    cx.lvs_sync_daemon = Some(PendingSyncDaemon {
        interface: interface.text.clone(),
        interface_span: interface.span,
        instance: Some((instance.to_owned(), node.keyword.span)),
        sync_id: Some(0),
        maxlen: None,
        port: DEFAULT_PORT,
        ttl: DEFAULT_TTL,
        group: DEFAULT_GROUP,
        keyword: node.keyword.span,
    });
}

/// The effective sync daemon once every instance is known: keepalived drops the whole
/// configuration when the instance does not exist, and takes the sync id from its VRID.
/// `keepalived -t` stops before this lookup and the interface is only checked by the kernel
/// when the daemon starts, so both are notes.
pub fn resolve(cx: &mut Cx, instances: &[VrrpInstance]) -> Option<LvsSyncDaemon> {
    let daemon = cx.lvs_sync_daemon.take()?;
    if cx.env.interface(&daemon.interface) == InterfaceState::Missing {
        cx.error(
            Diagnostic::note(
                "missing-interface",
                format!(
                    "lvs_sync_daemon interface `{}` does not exist on this machine",
                    daemon.interface
                ),
            )
            .at(
                daemon.interface_span,
                "the kernel refuses to start the sync daemon on it (keepalived -t does not check)",
            ),
        );
    }
    let (vrrp_instance, default_id) = match &daemon.instance {
        None => (None, 0),
        Some((name, span)) => match instances.iter().find(|i| &i.name == name) {
            Some(instance) => (Some(name.clone()), instance.virtual_router_id),
            None => {
                cx.error(
                    Diagnostic::note(
                        "undefined-reference",
                        format!(
                            "Unable to find vrrp instance {name} for lvs_syncd - clearing lvs_syncd config"
                        ),
                    )
                    .at(*span, "no vrrp_instance has this name")
                    .with_note(
                        "keepalived -t accepts this; the running keepalived logs it and runs no sync daemon",
                    ),
                );
                return None;
            }
        },
    };
    Some(LvsSyncDaemon {
        interface: daemon.interface,
        vrrp_instance,
        sync_id: daemon.sync_id.unwrap_or(default_id),
        maxlen: daemon.maxlen,
        port: daemon.port,
        ttl: daemon.ttl,
        group: daemon.group,
    })
}

/// keepalived's `read_unsigned`: decimal, no sign; a report naming `what` and what happens
/// instead (`outcome`) when the word is not a number in `range`.
fn number<T>(
    cx: &mut Cx,
    token: &Token,
    what: &str,
    range: RangeInclusive<T>,
    outcome: &str,
) -> Option<T>
where
    T: TryFrom<u64> + Into<u64> + Copy + std::fmt::Display,
{
    let (low, high) = ((*range.start()).into(), (*range.end()).into());
    let text = token.text.strip_prefix('+').unwrap_or(&token.text);
    let parsed = if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        text.parse::<u64>().ok()
    } else {
        None
    };
    let (code, label) = match parsed {
        Some(n) if (low..=high).contains(&n) => return T::try_from(n).ok(),
        Some(_) => ("out-of-range", format!("outside range [{low}, {high}]")),
        None => (
            "invalid-number",
            format!("expected an integer in [{low}, {high}]"),
        ),
    };
    cx.error(
        Diagnostic::error(code, format!("Invalid {what} ({})", token.text))
            .at(token.span, format!("{label}; {outcome}")),
    );
    None
}

/// A multicast group, IPv4 or IPv6 (a `:` makes it IPv6); keepalived cuts a `/mask` or
/// `-range` suffix before reading it.
fn group(cx: &mut Cx, token: &Token) -> Option<IpAddr> {
    let text = token.text.as_str();
    let address = text.split(['-', '/']).next().unwrap_or(text);
    let parsed = if text.contains(':') {
        address.parse().ok().map(IpAddr::V6)
    } else {
        address.parse().ok().map(IpAddr::V4)
    };
    match parsed {
        None => {
            cx.error(
                Diagnostic::error(
                    "invalid-address",
                    format!("Invalid lvs_sync_daemon group ({text}) - ignoring"),
                )
                .at(token.span, "not an IP address; the group is 224.0.0.81"),
            );
            None
        }
        Some(ip) if !ip.is_multicast() => {
            cx.error(
                Diagnostic::error(
                    "invalid-address",
                    format!("lvs_sync_daemon group address {text} is not multicast - ignoring"),
                )
                .at(
                    token.span,
                    "not a multicast address; the group is 224.0.0.81",
                ),
            );
            None
        }
        Some(ip) => Some(ip),
    }
}
