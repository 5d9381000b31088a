//! `global_defs`.

use super::args::{Cx, set, set_some};
use super::other;
use crate::diagnostic::Diagnostic;
use crate::model::{GlobalDefs, NotifyFifo, ScriptUser, SmtpServer};
use crate::syntax::Node;

pub fn global_defs(cx: &mut Cx, node: &Node, g: &mut GlobalDefs) {
    for child in node.children() {
        match child.name() {
            "router_id" => set_some(&mut g.router_id, cx.string(child)),
            "notification_email" => {
                if cx.needs_block(child) {
                    // A word-list block: every word of every line is an address.
                    g.notification_email
                        .extend(child.children().iter().flat_map(|e| {
                            std::iter::once(&e.keyword)
                                .chain(&e.args)
                                .map(|t| t.text.clone())
                        }));
                    if child.children().is_empty() {
                        cx.error(
                            Diagnostic::warning("empty-block", "empty notification_email block")
                                .at(child.keyword.span, "no address to notify"),
                        );
                    }
                }
            }
            "notification_email_from" => set_some(&mut g.notification_email_from, cx.string(child)),
            "smtp_server" => {
                let Some(address) = cx.arg_allowing_more(child) else {
                    continue;
                };
                let port = match child.args.get(1) {
                    Some(t) => cx.port_token(child, t),
                    None => Some(25),
                };
                if let Some(port) = port {
                    g.smtp_server = Some(SmtpServer {
                        address: address.text.clone(),
                        port,
                    });
                }
            }
            // keepalived ignores a bare smtp_helo_name without a word.
            "smtp_helo_name" => {
                if !child.args.is_empty() {
                    set_some(&mut g.smtp_helo_name, cx.string(child));
                }
            }
            "vrrp_vmac_garp_intvl" => {
                cx.error(
                    Diagnostic::warning(
                        "deprecated-keyword",
                        "`vrrp_vmac_garp_intvl` is deprecated",
                    )
                    .at(child.keyword.span, "use `vrrp_garp_extra_if`"),
                );
                other(cx, &mut g.other, child);
            }
            "smtp_connect_timeout" => match cx.int(child, 0..=4294u32) {
                Some(0) => {
                    cx.error(
                        Diagnostic::warning(
                            "out-of-range",
                            "smtp_connect_timeout must be greater than 0",
                        )
                        .at(child.line_span(), "set to 1 second"),
                    );
                    g.smtp_connect_timeout = 1.0;
                }
                Some(seconds) => g.smtp_connect_timeout = f64::from(seconds),
                None => {}
            },
            "enable_script_security" => g.enable_script_security = cx.flag_only(child),
            "script_user" => {
                if let Some(user) = cx.arg_allowing_more(child) {
                    if cx.env.user_exists(&user.text) == Some(false) {
                        cx.error(
                            Diagnostic::warning(
                                "script-user",
                                format!("script user `{}` does not exist", user.text),
                            )
                            .at(user.span, "keepalived cannot run scripts as this user"),
                        );
                    }
                    g.script_user = Some(ScriptUser {
                        user: user.text.clone(),
                        group: child.args.get(1).map(|t| t.text.clone()),
                    });
                    cx.no_extra_args(child, 2);
                }
            }
            "vrrp_mcast_group4" => {
                if let Some(ip) = cx.ip(child) {
                    match ip {
                        std::net::IpAddr::V4(v4) if v4.is_multicast() => g.vrrp_mcast_group4 = v4,
                        _ => cx.error(
                            Diagnostic::error(
                                "invalid-address",
                                "vrrp_mcast_group4 must be an IPv4 multicast address",
                            )
                            .at(child.line_span(), "not an IPv4 multicast address"),
                        ),
                    }
                }
            }
            "vrrp_mcast_group6" => {
                if let Some(ip) = cx.ip(child) {
                    match ip {
                        std::net::IpAddr::V6(v6) if v6.is_multicast() => {
                            // ff02::/16: adverts must not leave the link.
                            if v6.segments()[0] & 0xff0f != 0xff02 {
                                cx.error(
                                    Diagnostic::warning(
                                        "mcast-scope",
                                        format!(
                                            "vrrp_mcast_group6 {v6} is not link-local multicast"
                                        ),
                                    )
                                    .at(
                                        child.line_span(),
                                        "VRRP adverts should stay on the link (ff02::/16)",
                                    ),
                                );
                            }
                            g.vrrp_mcast_group6 = v6;
                        }
                        _ => cx.error(
                            Diagnostic::error(
                                "invalid-address",
                                "vrrp_mcast_group6 must be an IPv6 multicast address",
                            )
                            .at(child.line_span(), "not an IPv6 multicast address"),
                        ),
                    }
                }
            }
            "vrrp_version" => set(&mut g.vrrp_version, cx.int(child, 2..=3u8)),
            "default_interface" => set_some(&mut g.default_interface, cx.string(child)),
            "vrrp_garp_master_delay" => {
                set(&mut g.vrrp_garp_master_delay, cx.int(child, 0..=u32::MAX))
            }
            "vrrp_garp_master_repeat" => {
                set(&mut g.vrrp_garp_master_repeat, cx.repeat_count(child))
            }
            "vrrp_garp_master_refresh" => {
                set(&mut g.vrrp_garp_master_refresh, cx.int(child, 0..=u32::MAX))
            }
            "vrrp_garp_master_refresh_repeat" => set(
                &mut g.vrrp_garp_master_refresh_repeat,
                cx.repeat_count(child),
            ),
            "vrrp_garp_lower_prio_delay" => set_some(
                &mut g.vrrp_garp_lower_prio_delay,
                cx.int(child, 0..=u32::MAX),
            ),
            "vrrp_garp_lower_prio_repeat" => set_some(
                &mut g.vrrp_garp_lower_prio_repeat,
                cx.int(child, 0..=u32::MAX),
            ),
            "vrrp_garp_interval" | "vrrp_gna_interval" => {
                let Some(token) = cx.arg(child) else { continue };
                let value = cx.seconds_in(child, token, 0.000_001, 4_294.967_295);
                let slot = if child.name() == "vrrp_garp_interval" {
                    &mut g.vrrp_garp_interval
                } else {
                    &mut g.vrrp_gna_interval
                };
                set(slot, value);
            }
            "vrrp_lower_prio_no_advert" => set(&mut g.vrrp_lower_prio_no_advert, cx.flag(child)),
            "vrrp_higher_prio_send_advert" => {
                set(&mut g.vrrp_higher_prio_send_advert, cx.flag(child))
            }
            "vrrp_skip_check_adv_addr" => g.vrrp_skip_check_adv_addr = cx.flag_only(child),
            "vrrp_strict" => g.vrrp_strict = cx.flag_only(child),
            "vrrp_check_unicast_src" => g.vrrp_check_unicast_src = cx.flag_only(child),
            "vrrp_startup_delay" => set(&mut g.vrrp_startup_delay, cx.seconds(child, 3600.0)),
            // keepalived 2.2.8 added it; 2.2.7, the reference, rejects it.
            "v3_checksum_as_v2" => {
                g.v3_checksum_as_v2 = cx.flag_only(child);
                cx.error(
                    Diagnostic::warning(
                        "newer-keyword",
                        "`v3_checksum_as_v2` needs keepalived 2.2.8 or later",
                    )
                    .at(
                        child.keyword.span,
                        "keeplb honours it; keepalived 2.2.7 reports an unknown keyword",
                    ),
                );
            }
            "notify_fifo" => set_some(&mut g.notify_fifo, fifo(cx, child)),
            "vrrp_notify_fifo" => set_some(&mut g.vrrp_notify_fifo, fifo(cx, child)),
            "lvs_notify_fifo" => set_some(&mut g.lvs_notify_fifo, fifo(cx, child)),
            "notify_fifo_script" => fifo_script(cx, child, &mut g.notify_fifo),
            "vrrp_notify_fifo_script" => fifo_script(cx, child, &mut g.vrrp_notify_fifo),
            "lvs_notify_fifo_script" => fifo_script(cx, child, &mut g.lvs_notify_fifo),
            "startup_script" => set_some(&mut g.startup_script, cx.script(child)),
            "shutdown_script" => set_some(&mut g.shutdown_script, cx.script(child)),
            // This keepalived (Debian's) is built with nftables, not iptables.
            "vrrp_iptables" | "vrrp_ipsets" => {
                cx.error(
                    Diagnostic::warning(
                        "unsupported",
                        format!("`{}` is not supported: use `nftables`", child.name()),
                    )
                    .at(
                        child.keyword.span,
                        "keepalived built with nftables reports this too",
                    ),
                );
                other(cx, &mut g.other, child);
            }
            "dynamic_interfaces" => {
                g.dynamic_interfaces = true;
                if let Some(option) = child.args.first().filter(|t| t.text != "allow_if_changes") {
                    cx.error(
                        Diagnostic::warning(
                            "invalid-value",
                            format!("unknown dynamic_interfaces option `{}`", option.text),
                        )
                        .at(option.span, "expected `allow_if_changes` or nothing"),
                    );
                }
            }
            "max_auto_priority" => {
                g.max_auto_priority = match child.args.first() {
                    Some(t) => cx.number(child, t, -1..=99),
                    None => Some(99),
                }
            }
            "lvs_sync_daemon" => super::sync_daemon::global_keyword(cx, child),
            name if super::known::GLOBAL_DEFS.contains(&name) => other(cx, &mut g.other, child),
            _ => cx.unknown(child, "global_defs"),
        }
    }
}

fn fifo(cx: &mut Cx, node: &Node) -> Option<NotifyFifo> {
    let path = cx.arg_allowing_more(node)?;
    Some(NotifyFifo {
        path: path.text.clone(),
        script: None,
    })
}

fn fifo_script(cx: &mut Cx, node: &Node, fifo: &mut Option<NotifyFifo>) {
    let script = cx.script(node);
    match fifo {
        Some(f) => f.script = script,
        None => cx.error(
            Diagnostic::note(
                "fifo-script-without-fifo",
                format!("`{}` without its fifo", node.name()),
            )
            .at(
                node.keyword.span,
                "no fifo is configured before this script; it is ignored",
            ),
        ),
    }
}
