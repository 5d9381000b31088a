//! Turns the block tree into the typed [`Config`], applying keepalived's defaults.

mod args;
mod global;
mod known;
mod lvs;
mod routes;
mod sync_daemon;
mod vrrp;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Config, OtherKeywords, TrackRef};
use crate::syntax::Node;
pub use args::Cx;
use args::ScriptRole;

/// Where each named object was defined, for cross-reference checks and duplicate reports.
#[derive(Debug, Default)]
pub struct Origins {
    pub vrrp_script: Vec<crate::source::Span>,
    pub track_file: Vec<crate::source::Span>,
    pub vrrp_instance: Vec<InstanceOrigin>,
    pub vrrp_sync_group: Vec<SyncGroupOrigin>,
    pub virtual_server_group: Vec<crate::source::Span>,
    pub virtual_server: Vec<crate::source::Span>,
}

/// Spans inside a `vrrp_instance` that validation points at.
#[derive(Debug, Clone)]
pub struct InstanceOrigin {
    pub name: crate::source::Span,
    pub virtual_router_id: Option<crate::source::Span>,
    pub track_script: Vec<crate::source::Span>,
    pub track_file: Vec<crate::source::Span>,
    pub virtual_ipaddress: Option<crate::source::Span>,
}

#[derive(Debug, Clone)]
pub struct SyncGroupOrigin {
    pub name: crate::source::Span,
    pub members: Vec<crate::source::Span>,
}

pub fn build(
    nodes: &[Node],
    env: &dyn crate::env::Environment,
    diagnostics: &mut Diagnostics,
) -> (Config, Origins) {
    let mut cx = Cx {
        diagnostics,
        env,
        script_security: false,
        first_existing_script: None,
        track_files: Vec::new(),
        fwmark_groups: Vec::new(),
        pending_track_scripts: Vec::new(),
        first_configured_script: None,
        lvs_sync_daemon: None,
    };
    report_slash_comments(&mut cx, nodes, None);
    report_list_block_headers(&mut cx, nodes, true);
    report_blocks_on_values(&mut cx, nodes);
    let mut config = Config::default();
    let mut origins = Origins::default();
    // global_defs sets defaults that instances inherit, wherever it stands in the file.
    for node in nodes.iter().filter(|n| n.name() == "global_defs") {
        if cx.needs_block(node) {
            global::global_defs(&mut cx, node, &mut config.global_defs);
        }
    }
    cx.script_security = config.global_defs.enable_script_security;
    for node in nodes {
        let name = node.name();
        let opens_block = matches!(
            name,
            "vrrp_script"
                | "track_file"
                | "vrrp_track_file"
                | "vrrp_instance"
                | "vrrp_sync_group"
                | "virtual_server_group"
                | "virtual_server"
        );
        if opens_block && !cx.needs_block(node) {
            continue;
        }
        if opens_block
            && name != "virtual_server"
            && let Some(extra) = node.args.get(1)
        {
            cx.error(
                Diagnostic::warning("extra-arguments", format!("`{name}` takes a single name")).at(
                    extra.span,
                    "keepalived refuses the block (\"must have a name\")",
                ),
            );
        }
        match name {
            "global_defs" => {}
            "vrrp_script" => {
                if let Some(s) = vrrp::vrrp_script(&mut cx, node) {
                    origins.vrrp_script.push(name_span(node));
                    config.vrrp_script.push(s);
                }
            }
            "track_file" | "vrrp_track_file" => {
                if let Some(t) = vrrp::track_file(&mut cx, node) {
                    cx.track_files.push(t.name.clone());
                    origins.track_file.push(name_span(node));
                    config.track_file.push(t);
                }
            }
            "vrrp_instance" => {
                if let Some(i) = vrrp::vrrp_instance(&mut cx, node, &config.global_defs) {
                    origins.vrrp_instance.push(instance_origin(node));
                    config.vrrp_instance.push(i);
                }
            }
            "vrrp_sync_group" => {
                if let Some(g) = vrrp::vrrp_sync_group(&mut cx, node) {
                    origins.vrrp_sync_group.push(SyncGroupOrigin {
                        name: name_span(node),
                        members: node
                            .children()
                            .iter()
                            .filter(|c| c.name() == "group")
                            .flat_map(|c| c.children())
                            .flat_map(|e| {
                                std::iter::once(e.keyword.span).chain(e.args.iter().map(|a| a.span))
                            })
                            .collect(),
                    });
                    config.vrrp_sync_group.push(g);
                }
            }
            "virtual_server_group" => {
                if let Some(g) = lvs::virtual_server_group(&mut cx, node) {
                    origins.virtual_server_group.push(name_span(node));
                    config.virtual_server_group.push(g);
                }
            }
            "virtual_server" => {
                if let Some(vs) = lvs::virtual_server(&mut cx, node) {
                    origins.virtual_server.push(node.line_span());
                    config.virtual_server.push(vs);
                }
            }
            "bfd_instance" => {
                if !node.children().iter().any(|c| c.name() == "neighbor_ip") {
                    cx.error(
                        Diagnostic::warning("bfd-neighbor", "bfd_instance has no `neighbor_ip`")
                            .at(node.line_span(), "keepalived disables this BFD instance"),
                    );
                }
            }
            "garp_group" => {
                let has_delay = node
                    .children()
                    .iter()
                    .any(|c| matches!(c.name(), "garp_interval" | "gna_interval"));
                if !has_delay {
                    cx.error(
                        Diagnostic::warning(
                            "garp-group-delay",
                            "garp_group has no garp_interval or gna_interval",
                        )
                        .at(node.keyword.span, "keepalived removes it"),
                    );
                }
            }
            "static_routes" | "static_rules" | "static_ipaddress" => {
                if cx.needs_block(node) {
                    for entry in node.children() {
                        match name {
                            "static_routes" => routes::check_route(&mut cx, entry),
                            "static_rules" => routes::check_rule(&mut cx, entry),
                            _ => vrrp::check_static_address(&mut cx, entry),
                        }
                    }
                }
            }
            name if known::TOP_LEVEL.contains(&name) => {
                // Kept nowhere yet; still checked for a missing value.
                other(&mut cx, &mut OtherKeywords::new(), node);
            }
            _ => cx.unknown(node, "the top level"),
        }
    }
    config.global_defs.lvs_sync_daemon = sync_daemon::resolve(&mut cx, &config.vrrp_instance);
    check_track_scripts(&mut cx, &config);
    check_script_security(&mut cx, &config);
    drop_weighted_tracking(&mut cx, &mut config, &origins);
    (config, origins)
}

/// keepalived does not let tracking weights move the priority of an address owner
/// (priority 255) or of a sync-group member (unless the group says
/// `sync_group_tracking_weight`): such entries are dropped, or their weight zeroed, with a
/// report. The engine must see the configuration keepalived would run.
fn drop_weighted_tracking(cx: &mut Cx, config: &mut Config, origins: &Origins) {
    let synced: Vec<String> = config
        .vrrp_sync_group
        .iter()
        .filter(|g| !g.other.contains_key("sync_group_tracking_weight"))
        .flat_map(|g| g.group.iter().cloned())
        .collect();
    let scripts: Vec<(String, i32)> = config
        .vrrp_script
        .iter()
        .map(|s| (s.name.clone(), s.weight))
        .collect();
    for (instance, origin) in config.vrrp_instance.iter_mut().zip(&origins.vrrp_instance) {
        let reason = if instance.priority == 255 {
            "it is the address owner (priority 255)"
        } else if synced.contains(&instance.name) {
            "it is in a sync group"
        } else {
            continue;
        };
        let mut spans = origin.track_script.iter();
        instance.track_script.retain(|r| {
            let span = spans.next().copied();
            let weight = r
                .weight
                .or_else(|| scripts.iter().find(|(n, _)| *n == r.name).map(|(_, w)| *w))
                .unwrap_or(0);
            if weight == 0 {
                return true;
            }
            let mut diagnostic = Diagnostic::warning(
                "weighted-tracking-ignored",
                format!("track_script `{}` has a weight, but {reason}", r.name),
            );
            if let Some(span) = span {
                diagnostic = diagnostic.at(span, "keepalived ignores this tracked script");
            }
            cx.error(diagnostic.with_note("a weight would change a priority keepalived keeps fixed; use weight 0 (fault on failure)"));
            false
        });
        // An owner drops weighted interfaces; a sync-group member keeps them at weight 0.
        let owner = instance.priority == 255;
        instance.track_interface.retain_mut(|r| {
            if r.weight.is_none_or(|w| w == 0) {
                return true;
            }
            cx.error(
                Diagnostic::warning(
                    "weighted-tracking-ignored",
                    format!("track_interface `{}` has a weight, but {reason}", r.name),
                )
                .at(
                    origin.name,
                    if owner {
                        "this tracked interface is ignored"
                    } else {
                        "its weight is ignored"
                    },
                ),
            );
            r.weight = Some(0);
            !owner
        });
    }
}

/// keepalived's VRRP process loads every vrrp_script, used or not, when it has instances
/// to run.
fn check_track_scripts(cx: &mut Cx, config: &Config) {
    let pending = std::mem::take(&mut cx.pending_track_scripts);
    if config.vrrp_instance.is_empty() {
        return;
    }
    for (_, command, span) in pending {
        cx.check_script(&command, span, ScriptRole::Track);
    }
}

/// keepalived refuses to run scripts as root unless `enable_script_security` says the
/// author has checked them (`keepalived -t` exits 6 for this alone).
fn check_script_security(cx: &mut Cx, config: &Config) {
    let g = &config.global_defs;
    // Even a missing script needs the script user keepalived would run it as.
    if let (true, None, Some(span)) = (
        g.enable_script_security,
        &g.script_user,
        cx.first_configured_script,
    ) {
        let user = "keepalived_script";
        if cx.env.user_exists(user) == Some(false) {
            cx.error(
                Diagnostic::warning("script-user", format!("default script user `{user}` does not exist"))
                    .at(span, "keepalived cannot run this script")
                    .with_note("without `script_user`, keepalived runs scripts as `keepalived_script`; add `script_user USER` to global_defs"),
            );
        }
    }
    let Some(span) = cx.first_existing_script else {
        return;
    };
    if !g.enable_script_security {
        cx.error(
            Diagnostic::warning(
                "script-security",
                "scripts are configured but `enable_script_security` is not set",
            )
            .at(
                span,
                "this script would run as root without any check of who can modify it",
            )
            .with_note("add `enable_script_security` and `script_user USER` to global_defs"),
        );
    }
}

/// Keywords that open a block (`{` … `}`) in keepalived.conf.
const BLOCK_KEYWORDS: &[&str] = &[
    "global_defs",
    "vrrp_script",
    "track_file",
    "vrrp_track_file",
    "vrrp_track_process",
    "vrrp_instance",
    "vrrp_sync_group",
    "virtual_server_group",
    "virtual_server",
    "real_server",
    "BFD_CHECK",
    "url",
    "authentication",
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "virtual_routes",
    "virtual_rules",
    "unicast_peer",
    "track_interface",
    "track_script",
    "track_process",
    "track_bfd",
    "group",
    "notification_email",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "garp_group",
    "linkbeat_interfaces",
    "interface_up_down_delays",
    "SSL",
    "bfd_instance",
    "host",
    "track_group",
    "lvs_sync_daemon",
    "nftables",
];

/// A value keyword followed by `{`: keepalived says "Unexpected '{'" and reads the block's
/// lines as keywords of the enclosing block.
fn report_blocks_on_values(cx: &mut Cx, nodes: &[Node]) {
    for node in nodes {
        if let Some(block) = &node.block
            && !BLOCK_KEYWORDS.contains(&node.name())
            && !known::CHECKERS.contains(&node.name())
            && known::is_keyword(node.name())
        {
            cx.error(
                Diagnostic::error(
                    "unexpected-block",
                    format!("`{}` does not take a block", node.name()),
                )
                .at(block.open, "unexpected `{`: its contents are ignored"),
            );
        }
        report_blocks_on_values(cx, node.children());
    }
}

/// Blocks whose lines are entries; keepalived refuses words after their keyword.
const LIST_BLOCKS: &[&str] = &[
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "virtual_routes",
    "virtual_rules",
    "unicast_peer",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "static_ipaddress",
    "static_routes",
    "static_rules",
];

/// At the top level only the `static_*` blocks are lists; `track_file NAME {` there
/// defines a tracked file.
fn report_list_block_headers(cx: &mut Cx, nodes: &[Node], top_level: bool) {
    for node in nodes {
        if LIST_BLOCKS.contains(&node.name())
            && top_level == node.name().starts_with("static_")
            && node.block.is_some()
            && let (Some(first), Some(last)) = (node.args.first(), node.args.last())
        {
            cx.error(
                Diagnostic::warning(
                    "extra-arguments",
                    format!("block `{}` has extra words", node.name()),
                )
                .at(
                    first.span.to(last.span),
                    "keepalived refuses words between the keyword and `{`",
                ),
            );
        }
        report_list_block_headers(cx, node.children(), false);
    }
}

/// Keywords after which keepalived parses the rest of the line, so a `//` "comment" there
/// is an error for it rather than ignored words.
const PARSES_WHOLE_LINE: &[&str] = &[
    "lb_kind",
    "lvs_method",
    "smtp_server",
    "sorry_server",
    "status_code",
];
/// Blocks whose lines are entries with options: a `//` there is read as an option.
const ENTRY_BLOCKS: &[&str] = &[
    "virtual_ipaddress",
    "virtual_ipaddress_excluded",
    "virtual_routes",
    "virtual_rules",
    "unicast_peer",
    "track_interface",
    "track_script",
    "track_file",
    "track_process",
    "virtual_server_group",
    "group",
];

/// `//` is no comment in keepalived.conf, but tutorials write it as one and the intent is
/// plain: keeplb drops it, and says whether keepalived would have minded.
fn report_slash_comments(cx: &mut Cx, nodes: &[Node], parent: Option<&str>) {
    for node in nodes {
        if let Some(span) = node.slash_comment {
            let rejected = parent.is_some_and(|p| ENTRY_BLOCKS.contains(&p))
                || PARSES_WHOLE_LINE.contains(&node.name());
            let diagnostic = if rejected {
                Diagnostic::warning(
                    "double-slash-comment",
                    "`//` does not start a comment in keepalived.conf",
                )
                .at(span, "keeplb ignores this as a comment")
                .with_note(format!(
                    "keepalived would read it as more options of `{}` and reject them; use `#`",
                    node.name()
                ))
            } else if node.name() == "script" {
                Diagnostic::note(
                    "double-slash-comment",
                    "`//` does not start a comment in keepalived.conf",
                )
                .at(span, "keeplb ignores this as a comment")
                .with_note("keepalived would pass these words to the script as arguments; use `#`")
            } else {
                Diagnostic::note(
                    "double-slash-comment",
                    "`//` does not start a comment in keepalived.conf",
                )
                .at(span, "keeplb ignores this as a comment")
                .with_note(format!(
                    "keepalived ignores extra words after `{}` too; use `#`",
                    node.name()
                ))
            };
            cx.error(diagnostic);
        }
        report_slash_comments(cx, node.children(), Some(node.name()));
    }
}

fn name_span(node: &Node) -> crate::source::Span {
    node.args.first().map_or(node.keyword.span, |t| t.span)
}

fn instance_origin(node: &Node) -> InstanceOrigin {
    let find = |kw: &str| node.children().iter().find(|c| c.name() == kw);
    let entries = |kw: &str| -> Vec<crate::source::Span> {
        node.children()
            .iter()
            .filter(|c| c.name() == kw)
            .flat_map(|c| c.children().iter().map(|e| e.keyword.span))
            .collect()
    };
    InstanceOrigin {
        name: name_span(node),
        virtual_router_id: find("virtual_router_id").map(|n| n.line_span()),
        track_script: entries("track_script"),
        track_file: entries("track_file"),
        virtual_ipaddress: find("virtual_ipaddress").map(|n| n.keyword.span),
    }
}

/// keepalived keywords that may stand alone: flags, optional BOOLs and optional values.
/// Every other keyword needs a value (keepalived stops with "missing a parameter").
const VALUE_OPTIONAL: &[&str] = &[
    "accept",
    "alpha",
    "bfd_no_swap",
    "check_unicast_src",
    "checker_log_all_failures",
    "checker_no_swap",
    "dont_track_primary",
    "enable_dbus",
    "enable_snmp_checker",
    "enable_snmp_keepalived",
    "enable_snmp_rfc",
    "enable_snmp_rfcv2",
    "enable_snmp_rfcv3",
    "enable_snmp_vrrp",
    "enable_sni",
    "enable_traps",
    "fast_recovery",
    "fifo_write_vrrp_states_on_reload",
    "flag-1",
    "flag-2",
    "flag-3",
    "global_tracking",
    "ha_suspend",
    "hashed",
    "include_check",
    "inhibit_on_failure",
    "init_fail",
    "linkbeat_use_polling",
    "log_all_failures",
    "log_unknown_vrids",
    "lvs_flush",
    "lvs_flush_on_stop",
    "lvs_flush_onstop",
    "max_auto_priority",
    "mh-fallback",
    "mh-port",
    "namespace_with_ipsets",
    "native_ipv6",
    "net_namespace_ipvs",
    "nftables",
    "nftables_counters",
    "nftables_ifindex",
    "no_accept",
    "no_checker_emails",
    "no_email_faults",
    "nopreempt",
    "notify_deleted",
    "notify_priority_changes",
    "old_unicast_checksum",
    "omega",
    "ops",
    "preempt",
    "process_names",
    "promote_secondaries",
    "regex_no_match",
    "reload_repeat",
    "rs_init_notifies",
    "sh-fallback",
    "sh-port",
    "smtp_alert",
    "smtp_alert_checker",
    "smtp_alert_vrrp",
    "sorry_server_inhibit",
    "sync_group_tracking_weight",
    "track_src_ip",
    "unicast_fault_no_peer",
    "use_pid_dir",
    "use_vmac",
    "use_vmac_addr",
    "vmac_xmit_base",
    "vrrp_check_unicast_src",
    "vrrp_min_garp",
    "vrrp_no_swap",
    "vrrp_notify_priority_changes",
    "vrrp_skip_check_adv_addr",
    "vrrp_strict",
    "enable_script_security",
    "dynamic_interfaces",
    "use_ipvlan",
    "persistence_timeout",
    "vrrp_higher_prio_send_advert",
    "vrrp_lower_prio_no_advert",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "skip_check_adv_addr",
    "strict_mode",
    "debug",
    "disable_local_igmp",
    "nftables_ipvs",
    "data_use_instance",
    "reload_check_config",
    "reload_file",
    "vrrp_netlink_cmd_rcv_bufs_force",
    "vrrp_netlink_monitor_rcv_bufs_force",
    "lvs_netlink_cmd_rcv_bufs_force",
    "lvs_netlink_monitor_rcv_bufs_force",
    "process_monitor_rcv_bufs_force",
];

/// Of those, the ones whose optional value is a BOOL.
const BOOL_OPTIONAL: &[&str] = &[
    "smtp_alert",
    "smtp_alert_checker",
    "smtp_alert_vrrp",
    "checker_log_all_failures",
    "vrrp_min_garp",
    "vrrp_notify_priority_changes",
    "notify_priority_changes",
    "fast_recovery",
    "enable_sni",
    "log_all_failures",
];

/// Keeps a keyword keeplb accepts without acting on it, so dump-config still shows it.
fn other(cx: &mut Cx, others: &mut OtherKeywords, node: &Node) {
    if node.args.is_empty()
        && node.block.is_none()
        && !VALUE_OPTIONAL.contains(&node.name())
        && !BLOCK_KEYWORDS.contains(&node.name())
    {
        cx.error(
            Diagnostic::error("missing-value", format!("`{}` needs a value", node.name()))
                .at(node.keyword.span, "value missing after this keyword"),
        );
        return;
    }
    if BOOL_OPTIONAL.contains(&node.name()) && cx.flag(node).is_none() {
        return;
    }
    let mut words: Vec<String> = node.args.iter().map(|t| t.text.clone()).collect();
    for child in node.children() {
        words.push(child.keyword.text.clone());
        words.extend(child.args.iter().map(|t| t.text.clone()));
    }
    others.insert(node.name().to_owned(), words);
}

/// `track_script { NAME [weight N [reverse|noreverse]] … }` and its siblings. keepalived
/// allows ±254 in the syntax but runs with ±253 (and says so).
fn track_refs(cx: &mut Cx, node: &Node) -> Vec<TrackRef> {
    if !cx.needs_block(node) {
        return Vec::new();
    }
    // keepalived caps script and interface weights at ±253, not file weights.
    let capped = node.name() != "track_file";
    let mut refs = Vec::new();
    for entry in node.children() {
        let mut r = TrackRef {
            name: entry.keyword.text.clone(),
            weight: None,
            reverse: false,
        };
        if node.name() == "track_interface" {
            cx.check_interface(&entry.keyword.text, entry.keyword.span, "tracked interface");
        }
        let mut words = entry.args.iter();
        while let Some(word) = words.next() {
            match word.text.as_str() {
                "weight" => match words.next() {
                    Some(v) => {
                        r.weight = cx.number(entry, v, -254i32..=254).map(|w| {
                            if capped && w.abs() == 254 {
                                cx.error(
                                    Diagnostic::warning(
                                        "out-of-range",
                                        "a tracking weight cannot be ±254",
                                    )
                                    .at(v.span, "set to ±253, as keepalived does"),
                                );
                                w.signum() * 253
                            } else {
                                w
                            }
                        })
                    }
                    None => cx.error(
                        Diagnostic::error("missing-value", "`weight` needs a value")
                            .at(word.span, "value missing"),
                    ),
                },
                "reverse" => r.reverse = true,
                "noreverse" => r.reverse = false,
                other => cx.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!(
                            "unexpected `{other}` after `{}` in {}",
                            entry.name(),
                            node.name()
                        ),
                    )
                    .at(word.span, "expected `weight N [reverse]`"),
                ),
            }
        }
        refs.push(r);
    }
    refs
}
