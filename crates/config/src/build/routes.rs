//! `virtual_routes` / `static_routes` and `virtual_rules` / `static_rules` entries: kept
//! verbatim in the model (they are `ip route` / `ip rule` syntax the I/O layer hands to
//! netlink), but checked here the way keepalived checks them.

use std::net::IpAddr;

use super::args::Cx;
use crate::diagnostic::Diagnostic;
use crate::syntax::{Node, Token};

/// Route options that take one value, as keepalived's route parser knows them.
const ROUTE_VALUE_OPTIONS: &[&str] = &[
    "src",
    "via",
    "gw",
    "dev",
    "scope",
    "table",
    "metric",
    "preference",
    "pref",
    "protocol",
    "proto",
    "tos",
    "dsfield",
    "mtu",
    "advmss",
    "rtt",
    "rttvar",
    "reordering",
    "window",
    "cwnd",
    "ssthresh",
    "realms",
    "initcwnd",
    "initrwnd",
    "features",
    "quickack",
    "congctl",
    "expires",
    "fastopen_no_cookie",
    "ttl-propagate",
    "weight",
    "encap",
    "or",
    "nexthop",
    "lock",
];
const ROUTE_FLAGS: &[&str] = &["onlink", "no_track", "pervasive"];
const ROUTE_TYPES: &[&str] = &[
    "unicast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "local",
    "broadcast",
    "anycast",
    "multicast",
    "nat",
];

/// One line of a routes block: `[src ADDR] [TYPE] DEST [option value]…`.
pub fn check_route(cx: &mut Cx, entry: &Node) {
    let words: Vec<&Token> = std::iter::once(&entry.keyword).chain(&entry.args).collect();
    let mut i = 0;
    let mut destination_seen = false;
    let mut has_dev = false;
    let mut untracked = false;
    let mut protocol: Option<&Token> = None;
    while let Some(word) = words.get(i) {
        let text = word.text.as_str();
        if ROUTE_VALUE_OPTIONS.contains(&text) {
            let Some(value) = words.get(i + 1) else {
                cx.error(
                    Diagnostic::error(
                        "missing-value",
                        format!("route option `{text}` needs a value"),
                    )
                    .at(word.span, "value missing"),
                );
                return;
            };
            match text {
                "gw" | "or" => cx.error(
                    Diagnostic::warning(
                        "deprecated-keyword",
                        format!("`{text}` in routes is deprecated"),
                    )
                    .at(
                        word.span,
                        if text == "gw" {
                            "use `via`"
                        } else {
                            "use `nexthop`"
                        },
                    ),
                ),
                "dev" => has_dev = true,
                "protocol" | "proto" => protocol = Some(value),
                // `via inet6 ADDR` names the gateway's family first.
                "via" if matches!(value.text.as_str(), "inet" | "inet6") => {
                    match words.get(i + 2) {
                        Some(gateway) if is_address(&gateway.text) => {}
                        Some(gateway) => invalid_address(cx, gateway),
                        None => invalid_address(cx, value),
                    }
                    i += 3;
                    continue;
                }
                "src" | "via" if !is_address(&value.text) => {
                    invalid_address(cx, value);
                }
                _ => {}
            }
            i += 2;
            continue;
        }
        if text == "no_track" {
            untracked = true;
        }
        if ROUTE_FLAGS.contains(&text) || (!destination_seen && ROUTE_TYPES.contains(&text)) {
            i += 1;
            continue;
        }
        if !destination_seen && (is_address(text) || text == "default" || text == "default6") {
            destination_seen = true;
            i += 1;
            continue;
        }
        // keepalived takes an unknown word for the destination address and rejects it.
        invalid_address(cx, word);
        return;
    }
    if let Some(protocol) = protocol
        .filter(|p| has_dev && !untracked && !["keepalived", "18"].contains(&p.text.as_str()))
    {
        cx.error(
            Diagnostic::warning(
                "route-protocol",
                "a tracked route must have protocol keepalived",
            )
            .at(
                protocol.span,
                "keepalived resets it (add `no_track` to keep it)",
            ),
        );
    }
    if !has_dev {
        cx.error(
            Diagnostic::warning(
                "route-without-dev",
                "a route without `dev` cannot be tracked",
            )
            .at(
                entry.line_span(),
                "keepalived does not watch this route's interface",
            ),
        );
    }
}

const RULE_VALUE_OPTIONS: &[&str] = &[
    "from",
    "to",
    "table",
    "priority",
    "preference",
    "pref",
    "tos",
    "dsfield",
    "fwmark",
    "iif",
    "oif",
    "realms",
    "goto",
    "suppress_prefixlength",
    "suppress_ifgroup",
    "uidrange",
    "sport",
    "dport",
    "ipproto",
    "protocol",
    "l3mdev",
    "no_track",
];
const RULE_FLAGS: &[&str] = &[
    "not",
    "no_track",
    "l3mdev",
    "unicast",
    "blackhole",
    "unreachable",
    "prohibit",
    "nat",
];

/// One line of a rules block: `from X to Y table N priority P …`.
pub fn check_rule(cx: &mut Cx, entry: &Node) {
    let words: Vec<&Token> = std::iter::once(&entry.keyword).chain(&entry.args).collect();
    let mut i = 0;
    let mut has_priority = false;
    while let Some(word) = words.get(i) {
        let text = word.text.as_str();
        if RULE_FLAGS.contains(&text) && !RULE_VALUE_OPTIONS.contains(&text) {
            i += 1;
            continue;
        }
        if !RULE_VALUE_OPTIONS.contains(&text) {
            cx.error(
                Diagnostic::error("invalid-value", format!("unknown rule option `{text}`"))
                    .at(word.span, "keepalived ignores this rule"),
            );
            return;
        }
        let Some(value) = words.get(i + 1) else {
            cx.error(
                Diagnostic::error(
                    "missing-value",
                    format!("rule option `{text}` needs a value"),
                )
                .at(word.span, "value missing"),
            );
            return;
        };
        match text {
            "from" | "to" if value.text != "all" && !is_address(&value.text) => {
                invalid_address(cx, value);
                return;
            }
            "priority" | "preference" | "pref" => has_priority = true,
            _ => {}
        }
        i += 2;
    }
    if !has_priority {
        cx.error(
            Diagnostic::warning("rule-without-priority", "a rule without `priority`").at(
                entry.line_span(),
                "keepalived gives it priority 16384, which is probably not what you want",
            ),
        );
    }
}

/// `ADDR` or `ADDR/PREFIX` with a prefix that fits the family.
fn is_address(text: &str) -> bool {
    let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_empty() || prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

fn invalid_address(cx: &mut Cx, token: &Token) {
    cx.error(
        Diagnostic::error(
            "invalid-address",
            format!("`{}` is not a valid address", token.text),
        )
        .at(token.span, "keepalived skips this entry"),
    );
}
