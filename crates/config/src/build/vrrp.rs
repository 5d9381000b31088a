//! `vrrp_script`, `track_file`, `vrrp_instance` and `vrrp_sync_group` blocks.

use std::net::IpAddr;

use super::args::{Cx, set, set_some};
use super::{other, track_refs};
use crate::diagnostic::Diagnostic;
use crate::env::InterfaceState;
use crate::model::{
    AuthType, Authentication, Broadcast, DerivedBroadcast, GlobalDefs, InitFile, InitialState,
    TrackFile, UnicastPeer, VirtualIp, VrrpInstance, VrrpScript, VrrpSyncGroup,
};
use crate::source::Span;
use crate::syntax::{Node, Token};

/// keepalived sends at most 8 bytes of a PASS password and drops the rest.
const AUTH_PASS_MAX: usize = 8;
const PRIORITY_OWNER: u8 = 255;
/// Linux interface names (and address labels) hold at most 15 bytes.
const MAX_IFNAME_LEN: usize = 15;
/// The advertisement's address count is one byte.
const MAX_VIPS_PER_ADVERT: usize = 255;

pub fn vrrp_script(cx: &mut Cx, node: &Node) -> Option<VrrpScript> {
    let name = cx.string(node)?;
    let mut s = VrrpScript {
        name,
        script: String::new(),
        interval: 1.0,
        timeout: 0.0,
        weight: 0,
        weight_reverse: false,
        rise: 1,
        fall: 1,
        user: None,
        group: None,
        init_fail: false,
    };
    let mut script_seen = false;
    for child in node.children() {
        match child.name() {
            "script" => {
                if let Some(token) = cx.arg_allowing_more(child) {
                    s.script = token.text.clone();
                    script_seen = true;
                    // Checked once instances are known: keepalived judges only the scripts
                    // its VRRP process will load.
                    cx.pending_track_scripts
                        .push((s.name.clone(), token.text.clone(), token.span));
                }
            }
            "interval" => match cx.int(child, 0..=u32::MAX) {
                Some(0) => cx.error(
                    Diagnostic::warning(
                        "script-interval",
                        "a vrrp_script interval must be greater than 0",
                    )
                    .at(child.line_span(), "set to 1 second"),
                ),
                Some(seconds) => s.interval = f64::from(seconds),
                None => {}
            },
            "timeout" => match cx.int(child, 0..=u32::MAX) {
                Some(0) => {
                    cx.error(
                        Diagnostic::warning(
                            "out-of-range",
                            "a vrrp_script timeout must be greater than 0",
                        )
                        .at(child.line_span(), "set to 1 second"),
                    );
                    s.timeout = 1.0;
                }
                Some(seconds) => s.timeout = f64::from(seconds),
                None => {}
            },
            "weight" => {
                if let Some((weight, reverse)) = weight_with_reverse(cx, child, -253..=253) {
                    s.weight = weight;
                    s.weight_reverse = reverse;
                }
            }
            "rise" => set(&mut s.rise, cx.int(child, 1..=u32::MAX)),
            "fall" => set(&mut s.fall, cx.int(child, 1..=u32::MAX)),
            "user" => {
                s.user = child.args.first().map(|t| t.text.clone());
                s.group = child.args.get(1).map(|t| t.text.clone());
                if s.user.is_none() {
                    cx.arg(child);
                }
            }
            "init_fail" => s.init_fail = cx.flag_only(child),
            _ => cx.unknown(child, "vrrp_script"),
        }
    }
    if !script_seen {
        cx.error(
            Diagnostic::error(
                "missing-keyword",
                format!("vrrp_script `{}` has no `script`", s.name),
            )
            .at(
                node.line_span(),
                "add `script \"/path/to/check\"` to this block",
            ),
        );
        return None;
    }
    Some(s)
}

/// `weight N [reverse]`.
fn weight_with_reverse(
    cx: &mut Cx,
    node: &Node,
    range: std::ops::RangeInclusive<i32>,
) -> Option<(i32, bool)> {
    let token = node.args.first();
    let weight = match token {
        Some(t) => cx.number(node, t, range)?,
        None => {
            cx.arg(node)?;
            return None;
        }
    };
    let reverse = match node.args.get(1) {
        Some(t) if t.text == "reverse" => true,
        Some(t) => {
            cx.error(
                Diagnostic::warning(
                    "extra-arguments",
                    format!("unexpected `{}` after weight", t.text),
                )
                .at(t.span, "only `reverse` may follow the weight"),
            );
            false
        }
        None => false,
    };
    Some((weight, reverse))
}

pub fn track_file(cx: &mut Cx, node: &Node) -> Option<TrackFile> {
    let name = cx.string(node)?;
    let mut t = TrackFile {
        name,
        file: String::new(),
        weight: 1,
        weight_reverse: false,
        init_file: None,
    };
    for child in node.children() {
        match child.name() {
            "file" if !t.file.is_empty() => cx.error(
                Diagnostic::warning("duplicate-keyword", "`file` is already set")
                    .at(child.keyword.span, "ignored: keepalived keeps the first"),
            ),
            "file" => set(&mut t.file, cx.string(child)),
            "weight" => {
                if let Some((weight, reverse)) = weight_with_reverse(cx, child, -254..=254) {
                    t.weight = weight;
                    t.weight_reverse = reverse;
                }
            }
            "init_file" => {
                let value = match child.args.first() {
                    Some(tok) => cx.number(child, tok, i64::MIN..=i64::MAX),
                    None => Some(0),
                };
                let overwrite = child.args.iter().any(|a| a.text == "overwrite");
                t.init_file = value.map(|value| InitFile { value, overwrite });
            }
            _ => cx.unknown(child, "track_file"),
        }
    }
    if t.file.is_empty() {
        cx.error(
            Diagnostic::error(
                "missing-keyword",
                format!("track_file `{}` has no `file`", t.name),
            )
            .at(node.line_span(), "add `file /path` to this block"),
        );
        return None;
    }
    Some(t)
}

pub fn vrrp_instance(cx: &mut Cx, node: &Node, global: &GlobalDefs) -> Option<VrrpInstance> {
    let mut seen = Seen::default();
    let name = cx.string(node)?;
    let mut i = VrrpInstance {
        name,
        state: InitialState::Backup,
        // keepalived uses default_interface only for static addresses, never for instances.
        interface: None,
        virtual_router_id: 0,
        priority: 100,
        advert_int: 1.0,
        version: global.vrrp_version,
        authentication: None,
        virtual_ipaddress: Vec::new(),
        virtual_ipaddress_excluded: Vec::new(),
        virtual_routes: Vec::new(),
        virtual_rules: Vec::new(),
        unicast_src_ip: None,
        unicast_peer: Vec::new(),
        mcast_src_ip: None,
        unicast_ttl: 255,
        track_interface: Vec::new(),
        track_script: Vec::new(),
        track_file: Vec::new(),
        nopreempt: false,
        preempt_delay: 0.0,
        notify_master: None,
        notify_backup: None,
        notify_fault: None,
        notify_stop: None,
        notify: None,
        notify_master_rx_lower_pri: None,
        garp_master_delay: global.vrrp_garp_master_delay,
        garp_master_repeat: global.vrrp_garp_master_repeat,
        garp_master_refresh: global.vrrp_garp_master_refresh,
        garp_master_refresh_repeat: global.vrrp_garp_master_refresh_repeat,
        garp_lower_prio_delay: global.vrrp_garp_lower_prio_delay,
        garp_lower_prio_repeat: global.vrrp_garp_lower_prio_repeat,
        lower_prio_no_advert: global.vrrp_lower_prio_no_advert,
        higher_prio_send_advert: global.vrrp_higher_prio_send_advert,
        accept: false,
        strict_mode: global.vrrp_strict,
        skip_check_adv_addr: global.vrrp_skip_check_adv_addr,
        check_unicast_src: global.vrrp_check_unicast_src,
        use_vmac: None,
        dont_track_primary: false,
        smtp_alert: false,
        other: Default::default(),
    };
    let mut family = InstanceFamily::default();
    for child in node.children() {
        match child.name() {
            "state" => {
                let Some(token) = cx.arg(child) else { continue };
                match token.text.as_str() {
                    "MASTER" => i.state = InitialState::Master,
                    "BACKUP" if seen.state.is_some() && i.state == InitialState::Master => cx
                        .error(
                            Diagnostic::warning(
                                "duplicate-keyword",
                                "state was already set to MASTER",
                            )
                            .at(token.span, "ignored: keepalived keeps MASTER"),
                        ),
                    "BACKUP" => i.state = InitialState::Backup,
                    other => cx.error(
                        Diagnostic::error("invalid-value", format!("unknown state `{other}`"))
                            .at(token.span, "expected MASTER or BACKUP"),
                    ),
                }
                seen.state = Some(token.span);
            }
            "interface" => set_some(&mut i.interface, cx.string(child)),
            "virtual_router_id" => {
                if let Some(vrid) = cx.int(child, 1..=255u8) {
                    i.virtual_router_id = vrid;
                    seen.virtual_router_id = true;
                }
            }
            "priority" => {
                seen.priority = true;
                set(&mut i.priority, cx.int(child, 1..=255u8));
            }
            "advert_int" => {
                seen.advert_int = Some(child.keyword.span);
                if let Some(t) = cx.arg(child) {
                    set(&mut i.advert_int, cx.seconds_in(child, t, 0.01, 255.0));
                }
            }
            "version" => {
                seen.version = Some(child.keyword.span);
                set(&mut i.version, cx.int(child, 2..=3u8));
            }
            "authentication" => {
                seen.authentication = Some(child.keyword.span);
                i.authentication = authentication(cx, child);
            }
            "virtual_ipaddress" => {
                i.virtual_ipaddress
                    .extend(vip_block(cx, child, Some(&mut family)))
            }
            "virtual_ipaddress_excluded" => i
                .virtual_ipaddress_excluded
                .extend(vip_block(cx, child, None)),
            "virtual_routes" => i.virtual_routes.extend(raw_entries(cx, child)),
            "virtual_rules" => i.virtual_rules.extend(raw_entries(cx, child)),
            "unicast_src_ip" | "mcast_src_ip" => {
                let Some(token) = cx.arg(child) else { continue };
                let Some(ip) = cx.host_ip_token(child, token) else {
                    continue;
                };
                if !family.admits(cx, ip, token.span, "source address") {
                    continue;
                }
                if child.name() == "unicast_src_ip" {
                    i.unicast_src_ip = Some(ip);
                } else {
                    i.mcast_src_ip = Some(ip);
                }
            }
            "unicast_peer" => {
                seen.unicast_keyword = true;
                i.unicast_peer.extend(unicast_peers(cx, child, &mut family));
            }
            "notify_master_rx_lower_pri" => {
                cx.script_once(child, &mut i.notify_master_rx_lower_pri);
            }
            "notify_deleted" => {
                // Not run by keeplb yet, but keepalived checks the script like the others
                // (`notify_deleted` alone is a flag).
                if !child.args.is_empty() {
                    let mut script = None;
                    cx.script_once(child, &mut script);
                }
                other(cx, &mut i.other, child);
            }
            "old_unicast_checksum" => {
                seen.old_unicast_checksum = Some(child.keyword.span);
                other(cx, &mut i.other, child);
            }
            "promote_secondaries" => {
                seen.promote_secondaries = Some(child.keyword.span);
                other(cx, &mut i.other, child);
            }
            "native_ipv6" => {
                seen.native_ipv6 = Some(child.keyword.span);
                other(cx, &mut i.other, child);
            }
            "vmac_xmit_base" => {
                seen.vmac_xmit_base = Some(child.keyword.span);
                other(cx, &mut i.other, child);
            }
            "unicast_ttl" => {
                seen.unicast_ttl = Some(child.keyword.span);
                set(&mut i.unicast_ttl, cx.int(child, 0..=255u8));
            }
            "track_interface" => i.track_interface.extend(track_refs(cx, child)),
            "track_script" => i.track_script.extend(track_refs(cx, child)),
            "track_file" => i.track_file.extend(track_refs(cx, child)),
            "nopreempt" => {
                i.nopreempt = cx.flag_only(child);
                seen.nopreempt = Some(child.keyword.span);
            }
            "preempt" => i.nopreempt = !cx.flag_only(child),
            "preempt_delay" => {
                seen.preempt_delay = Some(child.keyword.span);
                set(&mut i.preempt_delay, cx.seconds(child, 1000.0));
            }
            "notify_master" => cx.script_once(child, &mut i.notify_master),
            "notify_backup" => cx.script_once(child, &mut i.notify_backup),
            "notify_fault" => cx.script_once(child, &mut i.notify_fault),
            "notify_stop" => cx.script_once(child, &mut i.notify_stop),
            "notify" => cx.script_once(child, &mut i.notify),
            "garp_master_delay" => set(&mut i.garp_master_delay, cx.int(child, 0..=u32::MAX)),
            "garp_master_repeat" => set(&mut i.garp_master_repeat, cx.repeat_count(child)),
            "garp_master_refresh" => set(&mut i.garp_master_refresh, cx.int(child, 0..=u32::MAX)),
            "garp_master_refresh_repeat" => {
                set(&mut i.garp_master_refresh_repeat, cx.repeat_count(child))
            }
            "garp_lower_prio_delay" => {
                set_some(&mut i.garp_lower_prio_delay, cx.int(child, 0..=u32::MAX))
            }
            "garp_lower_prio_repeat" => {
                set_some(&mut i.garp_lower_prio_repeat, cx.int(child, 0..=u32::MAX))
            }
            "lower_prio_no_advert" => set(&mut i.lower_prio_no_advert, cx.flag(child)),
            "higher_prio_send_advert" => set(&mut i.higher_prio_send_advert, cx.flag(child)),
            "accept" => seen.accept = Some((cx.flag_only(child), child.keyword.span)),
            "no_accept" => seen.accept = Some((!cx.flag_only(child), child.keyword.span)),
            "strict_mode" => set(&mut i.strict_mode, cx.flag(child)),
            // keepalived sets it for any valid BOOL, `off` included.
            "skip_check_adv_addr" => {
                if cx.flag(child).is_some() {
                    i.skip_check_adv_addr = true;
                }
            }
            "check_unicast_src" => {
                seen.unicast_keyword = true;
                i.check_unicast_src = cx.flag_only(child);
            }
            // Deprecated keywords keepalived still takes, with a report.
            "lvs_sync_daemon_interface" | "linkbeat_use_polling" | "vmac_garp_intvl" => {
                cx.error(
                    Diagnostic::warning(
                        "deprecated-keyword",
                        format!("`{}` is deprecated in vrrp_instance", child.name()),
                    )
                    .at(
                        child.keyword.span,
                        match child.name() {
                            "lvs_sync_daemon_interface" => "use global_defs `lvs_sync_daemon`",
                            "linkbeat_use_polling" => "use the global `linkbeat_use_polling`",
                            _ => "use `garp_extra_if`",
                        },
                    ),
                );
                if child.name() == "lvs_sync_daemon_interface" {
                    super::sync_daemon::instance_keyword(cx, child, &i.name);
                } else {
                    other(cx, &mut i.other, child)
                }
            }
            // The default name depends on the VRID, which may come later in the block.
            "use_vmac" => seen.use_vmac = Some(child.args.first().map(|t| t.text.clone())),
            "dont_track_primary" => i.dont_track_primary = cx.flag_only(child),
            "debug" => {
                if cx.int(child, 0..=4u8).is_some() {
                    other(cx, &mut i.other, child);
                }
            }
            "smtp_alert" => set(&mut i.smtp_alert, cx.flag(child)),
            name if super::known::VRRP_INSTANCE.contains(&name) => other(cx, &mut i.other, child),
            _ => cx.unknown(child, "vrrp_instance"),
        }
    }
    finish_instance(cx, node, &mut i, &seen, global).then_some(i)
}

/// Which keywords an instance set, and where: keepalived's defaults and its consistency
/// checks depend on what was written, not only on the values.
#[derive(Default)]
struct Seen {
    virtual_router_id: bool,
    priority: bool,
    state: Option<Span>,
    advert_int: Option<Span>,
    version: Option<Span>,
    authentication: Option<Span>,
    nopreempt: Option<Span>,
    preempt_delay: Option<Span>,
    unicast_ttl: Option<Span>,
    /// `unicast_peer` (even empty), `check_unicast_src`, `unicast_fault_no_peer`.
    unicast_keyword: bool,
    native_ipv6: Option<Span>,
    promote_secondaries: Option<Span>,
    old_unicast_checksum: Option<Span>,
    vmac_xmit_base: Option<Span>,
    accept: Option<(bool, Span)>,
    use_vmac: Option<Option<String>>,
}

/// keepalived's `vrrp_complete_instance`: derived defaults and the combinations it refuses
/// or corrects. False when the instance cannot run at all.
fn finish_instance(
    cx: &mut Cx,
    node: &Node,
    i: &mut VrrpInstance,
    seen: &Seen,
    global: &GlobalDefs,
) -> bool {
    let at = node.line_span();
    if !seen.virtual_router_id {
        cx.error(
            Diagnostic::error(
                "missing-keyword",
                format!("vrrp_instance `{}` has no `virtual_router_id`", i.name),
            )
            .at(at, "add `virtual_router_id N` (1-255) to this block"),
        );
        return false;
    }
    // A MASTER without a priority is the address owner; a priority-255 instance without a
    // state starts as MASTER.
    if !seen.priority && i.state == InitialState::Master {
        i.priority = PRIORITY_OWNER;
    }
    if seen.state.is_none() && i.priority == PRIORITY_OWNER {
        i.state = InitialState::Master;
    }
    if i.strict_mode && (i.state == InitialState::Master) != (i.priority == PRIORITY_OWNER) {
        cx.error(
            Diagnostic::warning(
                "strict-state",
                "with vrrp_strict, only the address owner (priority 255) may start as MASTER",
            )
            .at(
                seen.state.unwrap_or(at),
                "state is taken from the priority instead",
            ),
        );
        i.state = if i.priority == PRIORITY_OWNER {
            InitialState::Master
        } else {
            InitialState::Backup
        };
    }
    if let Some(span) = seen.nopreempt {
        if i.priority == PRIORITY_OWNER {
            cx.error(
                Diagnostic::warning(
                    "nopreempt-owner",
                    "`nopreempt` does not apply to the address owner (priority 255)",
                )
                .at(span, "nopreempt is cleared"),
            );
            i.nopreempt = false;
        } else if i.state == InitialState::Master {
            cx.error(
                Diagnostic::warning("nopreempt-master", "`nopreempt` does not work with `state MASTER`")
                    .at(span, "nopreempt is cleared, as keepalived does")
                    .with_secondary(seen.state.unwrap_or(at), "initial state MASTER")
                    .with_note("to stop this node taking the VIP back, use `state BACKUP` on every node with `nopreempt`"),
            );
            i.nopreempt = false;
        }
    }
    if let Some(span) = seen.preempt_delay
        && i.preempt_delay > 0.0
        && (i.state == InitialState::Master || i.nopreempt || i.strict_mode)
    {
        cx.error(
            Diagnostic::warning(
                "preempt-delay-ignored",
                "`preempt_delay` does not work with `state MASTER`, `nopreempt` or strict mode",
            )
            .at(span, "preempt_delay is cleared"),
        );
        i.preempt_delay = 0.0;
    }
    match &i.interface {
        None if i.unicast_src_ip.is_none() => {
            cx.error(
                Diagnostic::error(
                    "missing-keyword",
                    format!("vrrp_instance `{}` has no `interface`", i.name),
                )
                .at(
                    at,
                    "add `interface IFNAME` (or a default_interface in global_defs)",
                ),
            );
            return false;
        }
        None => {}
        Some(name) => match cx.env.interface(name) {
            InterfaceState::Loopback => {
                cx.error(
                    Diagnostic::error(
                        "loopback-interface",
                        format!("VRRP cannot run on the loopback interface `{name}`"),
                    )
                    .at(at, "choose an interface on the LAN shared with the peers"),
                );
                return false;
            }
            InterfaceState::Missing if !global.dynamic_interfaces => cx.error(
                Diagnostic::warning(
                    "missing-interface",
                    format!("interface `{name}` does not exist on this machine"),
                )
                .at(
                    at,
                    format!(
                        "vrrp_instance `{}` stays in FAULT until {name} appears",
                        i.name
                    ),
                ),
            ),
            _ => {}
        },
    }
    let is_v6 = i
        .virtual_ipaddress
        .first()
        .is_some_and(|v| v.address.is_ipv6());
    if is_v6 && i.version == 2 {
        if seen.version.is_some() && i.strict_mode {
            cx.error(
                Diagnostic::warning(
                    "ipv6-needs-v3",
                    "VRRP version 2 cannot carry IPv6; version 3 is used",
                )
                .at(seen.version.unwrap_or(at), "version 2 with IPv6 addresses"),
            );
        }
        i.version = 3;
    }
    if i.virtual_ipaddress.is_empty() {
        if i.version == 3 || i.strict_mode {
            cx.error(
                Diagnostic::error(
                    "no-vip",
                    format!("vrrp_instance `{}` has no virtual_ipaddress", i.name),
                )
                .at(at, "VRRPv3 needs at least one address to advertise"),
            );
            return false;
        }
        cx.error(
            Diagnostic::warning(
                "no-vip",
                format!("vrrp_instance `{}` has no virtual_ipaddress", i.name),
            )
            .at(at, "no address moves with this instance"),
        );
    }
    if i.virtual_ipaddress.len() > MAX_VIPS_PER_ADVERT {
        cx.error(
            Diagnostic::warning("too-many-vips", format!("{} virtual addresses do not fit one advertisement", i.virtual_ipaddress.len()))
                .at(at, format!("addresses after the first {MAX_VIPS_PER_ADVERT} are not advertised (keepalived moves them to virtual_ipaddress_excluded)")),
        );
        let excess = i.virtual_ipaddress.split_off(MAX_VIPS_PER_ADVERT);
        i.virtual_ipaddress_excluded.extend(excess);
    }
    if let Some(span) = seen.advert_int {
        fix_advert_int(cx, i, span);
    }
    if let (Some(span), Some(auth)) = (seen.authentication, &i.authentication) {
        let problem = if i.version == 3 {
            Some("VRRP version 3 has no authentication")
        } else if i.strict_mode {
            Some("strict mode does not allow authentication")
        } else {
            None
        };
        if let Some(problem) = problem {
            cx.error(
                Diagnostic::warning("authentication-ignored", problem)
                    .at(span, "this block is ignored, as keepalived ignores it"),
            );
            i.authentication = None;
        } else if auth.auth_type == AuthType::Ah
            && i.state == InitialState::Master
            && i.priority != PRIORITY_OWNER
        {
            cx.error(
                Diagnostic::warning("ah-master", "AH authentication cannot start as MASTER")
                    .at(span, "the instance starts as BACKUP"),
            );
            i.state = InitialState::Backup;
        }
    }
    if let Some(span) = seen.native_ipv6
        && i.virtual_ipaddress
            .first()
            .is_some_and(|v| v.address.is_ipv4())
    {
        cx.error(
            Diagnostic::warning("native-ipv6", "`native_ipv6` with IPv4 virtual addresses").at(
                span,
                "keepalived ignores the IPv4 addresses of an IPv6 instance",
            ),
        );
    }
    if let (Some(span), true) = (seen.old_unicast_checksum, i.unicast_peer.is_empty()) {
        cx.error(
            Diagnostic::warning(
                "unicast-only",
                "`old_unicast_checksum` without unicast peers",
            )
            .at(span, "ignored: it applies to unicast adverts only"),
        );
    }
    if let (Some(span), Some(_)) = (seen.promote_secondaries, &seen.use_vmac) {
        cx.error(
            Diagnostic::warning(
                "promote-secondaries-vmac",
                "`promote_secondaries` is implied by `use_vmac`",
            )
            .at(span, "ignored, as keepalived ignores it"),
        );
    }
    match (&seen.use_vmac, seen.vmac_xmit_base) {
        (None, Some(span)) => cx.error(
            Diagnostic::warning("vmac-xmit-base", "`vmac_xmit_base` without `use_vmac`")
                .at(span, "ignored"),
        ),
        (Some(_), None) if !i.unicast_peer.is_empty() => cx.error(
            Diagnostic::warning(
                "vmac-unicast",
                "`use_vmac` with unicast peers needs `vmac_xmit_base`",
            )
            .at(
                at,
                "keepalived sends unicast adverts from the base interface only with vmac_xmit_base",
            ),
        ),
        _ => {}
    }
    if let Some(name) = &seen.use_vmac {
        i.use_vmac = Some(
            name.clone()
                .unwrap_or_else(|| format!("vrrp.{}", i.virtual_router_id)),
        );
    }
    // keepalived decides accept mode last: the owner always accepts; otherwise it follows
    // strict mode unless the instance says.
    i.accept = match seen.accept {
        Some((true, span)) if i.strict_mode && i.version == 2 && i.priority != PRIORITY_OWNER => {
            cx.error(
                Diagnostic::warning(
                    "accept-strict-v2",
                    "`accept` is not allowed in strict mode with VRRPv2",
                )
                .at(span, "accept mode is turned off"),
            );
            false
        }
        Some((accept, _)) => accept || i.priority == PRIORITY_OWNER,
        None => i.priority == PRIORITY_OWNER || !i.strict_mode,
    };
    if let (Some(span), true) = (seen.unicast_ttl, i.unicast_peer.is_empty()) {
        cx.error(
            Diagnostic::warning(
                "unicast-ttl-without-peers",
                "`unicast_ttl` without any `unicast_peer`",
            )
            .at(span, "ignored: multicast adverts always use TTL 255"),
        );
        i.unicast_ttl = 255;
    }
    if let Some(interface) = i.interface.clone() {
        let before = i.track_interface.len();
        i.track_interface.retain(|t| t.name != interface);
        if i.track_interface.len() != before {
            cx.error(
                Diagnostic::warning(
                    "track-own-interface",
                    format!("track_interface {interface} is the instance's own interface"),
                )
                .at(
                    at,
                    "ignored: the instance already goes to FAULT when its interface fails",
                ),
            );
        }
    }
    if i.unicast_peer.is_empty() && (i.unicast_src_ip.is_some() || seen.unicast_keyword) {
        cx.error(
            Diagnostic::warning("unicast-without-peers", "`unicast_src_ip` without any `unicast_peer`")
                .at(at, "keepalived falls back to multicast (a deprecated usage)")
                .with_note("add `unicast_peer { ADDRESS }`, or use `mcast_src_ip` for a multicast source address"),
        );
    }
    true
}

/// The rounding keepalived applies to advertisement intervals the wire format cannot carry.
fn fix_advert_int(cx: &mut Cx, i: &mut VrrpInstance, span: Span) {
    let secs = i.advert_int;
    if i.version == 2 && secs.fract() != 0.0 {
        let rounded = secs.round().max(1.0);
        cx.error(
            Diagnostic::warning("advert-int-rounded", format!("VRRPv2 advertisement intervals are whole seconds: {secs} is rounded to {rounded}"))
                .at(span, "use `version 3` for sub-second intervals"),
        );
        i.advert_int = rounded;
    } else if i.version == 3 && secs >= 40.96 {
        cx.error(
            Diagnostic::warning(
                "advert-int-range",
                format!(
                    "VRRPv3 advertisement intervals must be below 40.96 s: {secs} is set to 40.95"
                ),
            )
            .at(span, "too long for the 12-bit centisecond field"),
        );
        i.advert_int = 40.95;
    } else if i.version == 3 && ((secs * 100.0).round() - secs * 100.0).abs() > 1e-6 {
        let rounded = (secs * 100.0).round() / 100.0;
        cx.error(
            Diagnostic::warning("advert-int-rounded", format!("VRRPv3 advertisement intervals are in units of 10 ms: {secs} is rounded to {rounded}"))
                .at(span, "rounded"),
        );
        i.advert_int = rounded;
    }
}

fn authentication(cx: &mut Cx, node: &Node) -> Option<Authentication> {
    if !cx.needs_block(node) {
        return None;
    }
    let mut auth_type = None;
    let mut auth_pass = None;
    for child in node.children() {
        match child.name() {
            "auth_type" => {
                let Some(token) = cx.arg(child) else { continue };
                match token.text.as_str() {
                    "PASS" => auth_type = Some(AuthType::Pass),
                    "AH" => auth_type = Some(AuthType::Ah),
                    other => cx.error(
                        Diagnostic::error("invalid-value", format!("unknown auth_type `{other}`"))
                            .at(token.span, "expected PASS or AH"),
                    ),
                }
            }
            "auth_pass" => {
                let Some(token) = cx.arg(child) else { continue };
                let mut pass = token.text.clone();
                if pass.len() > AUTH_PASS_MAX {
                    let mut cut = AUTH_PASS_MAX;
                    while !pass.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    pass.truncate(cut);
                    cx.error(
                        Diagnostic::warning(
                            "auth-pass-truncated",
                            format!("auth_pass is longer than {AUTH_PASS_MAX} characters and is cut to `{pass}`"),
                        )
                        .at(token.span, "only the first 8 bytes are sent")
                        .with_note("keepalived cuts it too; every peer must use the same first 8 characters"),
                    );
                }
                auth_pass = Some(pass);
            }
            _ => cx.unknown(child, "authentication"),
        }
    }
    let Some(auth_type) = auth_type else {
        // keepalived's auth_type defaults to none: the password alone authenticates nothing.
        cx.error(
            Diagnostic::note(
                "no-auth-type",
                "authentication without `auth_type` sends no authentication",
            )
            .at(
                node.keyword.span,
                "add `auth_type PASS` to use the password",
            ),
        );
        return None;
    };
    let Some(auth_pass) = auth_pass.filter(|p| !p.is_empty()) else {
        cx.error(
            Diagnostic::error("missing-keyword", "authentication without `auth_pass`").at(
                node.keyword.span,
                "keepalived ignores this block and sends adverts without authentication",
            ),
        );
        return None;
    };
    Some(Authentication {
        auth_type,
        auth_pass,
    })
}

/// Entries of a `virtual_ipaddress` block; every entry is one line of the block.
/// The address family an instance advertises, fixed by the first address that names one
/// (a VIP, a source address or a peer), as keepalived fixes it.
#[derive(Default)]
struct InstanceFamily(Option<(bool, Span)>);

impl InstanceFamily {
    /// Whether `address` (written at `span`) fits; reports it when it does not.
    fn admits(&mut self, cx: &mut Cx, address: IpAddr, span: Span, what: &str) -> bool {
        let is_v4 = address.is_ipv4();
        match self.0 {
            None => {
                self.0 = Some((is_v4, span));
                true
            }
            Some((v4, _)) if v4 == is_v4 => true,
            Some((_, first)) => {
                cx.error(
                    Diagnostic::error("mixed-families", format!("{what} {address} is not of the instance's address family"))
                        .at(span, "ignored: of the other family")
                        .with_secondary(first, "this address sets the instance's family")
                        .with_note("a VRRP instance advertises one family: use a second instance for the other"),
                );
                false
            }
        }
    }
}

/// Entries of a `virtual_ipaddress` block; `family` is None for the excluded addresses,
/// which may mix families since they are never advertised.
fn vip_block(cx: &mut Cx, node: &Node, mut family: Option<&mut InstanceFamily>) -> Vec<VirtualIp> {
    if !cx.needs_block(node) {
        return Vec::new();
    }
    let mut vips: Vec<VirtualIp> = Vec::new();
    for entry in node.children() {
        let Some(vip) = virtual_ip(cx, entry) else {
            continue;
        };
        if let Some(family) = family.as_deref_mut()
            && !family.admits(cx, vip.address, entry.keyword.span, "virtual address")
        {
            continue;
        }
        vips.push(vip);
    }
    vips
}

fn virtual_ip(cx: &mut Cx, entry: &Node) -> Option<VirtualIp> {
    let (address, prefix) = address_with_prefix(cx, &entry.keyword)?;
    let is_v6 = address.is_ipv6();
    let mut vip = VirtualIp {
        address,
        prefix,
        brd: None,
        dev: None,
        scope: None,
        label: None,
        noprefixroute: false,
        nodad: false,
        home: false,
        peer: None,
        track_group: None,
        no_track: false,
    };
    let mut words = entry.args.iter();
    while let Some(word) = words.next() {
        let mut value = |cx: &mut Cx| -> Option<Token> {
            let v = words.next().cloned();
            if v.is_none() {
                cx.error(
                    Diagnostic::error("missing-value", format!("`{}` needs a value", word.text))
                        .at(word.span, "value missing"),
                );
            }
            v
        };
        match word.text.as_str() {
            "brd" | "broadcast" => {
                vip.brd = value(cx).and_then(|t| match t.text.as_str() {
                    "+" => Some(Broadcast::Derived(DerivedBroadcast::HostBitsSet)),
                    "-" => Some(Broadcast::Derived(DerivedBroadcast::HostBitsClear)),
                    _ => cx.ip_token(entry, &t).map(Broadcast::Address),
                })
            }
            "dev" => {
                vip.dev = value(cx).map(|t| {
                    cx.check_interface(&t.text, t.span, "interface");
                    t.text
                })
            }
            "scope" => {
                let Some(t) = value(cx) else { continue };
                let named =
                    ["global", "site", "link", "host", "nowhere"].contains(&t.text.as_str());
                if named || t.text.parse::<u8>().is_ok() {
                    vip.scope = Some(t.text);
                } else {
                    cx.error(
                        Diagnostic::warning("invalid-value", format!("invalid scope `{}`", t.text))
                            .at(
                                t.span,
                                "ignored: expected global, site, link, host, nowhere or 0-255",
                            ),
                    );
                }
            }
            "label" => {
                let Some(t) = value(cx) else { continue };
                if t.text.len() > MAX_IFNAME_LEN {
                    cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!(
                                "label `{}` is longer than {MAX_IFNAME_LEN} characters",
                                t.text
                            ),
                        )
                        .at(t.span, "keepalived drops this address"),
                    );
                    return None;
                }
                if is_v6 {
                    cx.error(
                        Diagnostic::warning("ipv6-label", "IPv6 addresses take no label")
                            .at(t.span, "ignored"),
                    );
                    continue;
                }
                vip.label = Some(t.text);
            }
            "peer" => vip.peer = value(cx).and_then(|t| cx.ip_token(entry, &t)),
            "track_group" => vip.track_group = value(cx).map(|t| t.text),
            "noprefixroute" => vip.noprefixroute = true,
            "-nodad" => vip.nodad = true,
            "home" => vip.home = true,
            "preferred_lft" => {
                value(cx);
            }
            "no_track" => vip.no_track = true,
            "autojoin" | "mngtmpaddr" | "use_vmac" => {}
            other => cx.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("unknown virtual_ipaddress option `{other}`"),
                )
                .at(
                    word.span,
                    "expected brd, dev, scope, label, peer, noprefixroute, -nodad, home…",
                ),
            ),
        }
    }
    cx.no_block(entry);
    Some(vip)
}

/// `ADDR[/PREFIX]`; the prefix defaults to the whole address (/32 or /128).
pub fn address_with_prefix(cx: &mut Cx, token: &Token) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match token.text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (token.text.as_str(), None),
    };
    let Ok(address) = addr.parse::<IpAddr>() else {
        cx.error(
            Diagnostic::error(
                "invalid-address",
                format!("`{}` is not a valid IP address", token.text),
            )
            .at(
                token.span,
                "expected an IPv4 or IPv6 address, optionally with /prefix",
            ),
        );
        return None;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => {
                cx.error(
                    Diagnostic::error("invalid-address", format!("invalid prefix length `/{p}`"))
                        .at(token.span, format!("must be 0 to {max}")),
                );
                return None;
            }
        },
    };
    Some((address, prefix))
}

/// A `static_ipaddress` entry: virtual-address syntax (plus `track_group`).
pub fn check_static_address(cx: &mut Cx, entry: &Node) {
    let _ = virtual_ip(cx, entry);
}

fn raw_entries(cx: &mut Cx, node: &Node) -> Vec<Vec<String>> {
    if !cx.needs_block(node) {
        return Vec::new();
    }
    for entry in node.children() {
        if node.name() == "virtual_routes" {
            super::routes::check_route(cx, entry);
        } else {
            super::routes::check_rule(cx, entry);
        }
    }
    node.children()
        .iter()
        .map(|e| {
            std::iter::once(&e.keyword)
                .chain(&e.args)
                .map(|t| t.text.clone())
                .collect()
        })
        .collect()
}

fn unicast_peers(cx: &mut Cx, node: &Node, family: &mut InstanceFamily) -> Vec<UnicastPeer> {
    if !cx.needs_block(node) {
        return Vec::new();
    }
    let mut peers = Vec::new();
    for entry in node.children() {
        let Some(address) = cx.host_ip_token(entry, &entry.keyword) else {
            continue;
        };
        if !family.admits(cx, address, entry.keyword.span, "unicast peer") {
            continue;
        }
        let mut peer = UnicastPeer {
            address,
            min_ttl: None,
            max_ttl: None,
        };
        let mut words = entry.args.iter();
        while let Some(word) = words.next() {
            let slot = match word.text.as_str() {
                "min_ttl" => &mut peer.min_ttl,
                "max_ttl" => &mut peer.max_ttl,
                other => {
                    cx.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("unknown unicast_peer option `{other}`"),
                        )
                        .at(word.span, "expected min_ttl or max_ttl"),
                    );
                    continue;
                }
            };
            match words.next() {
                Some(v) => *slot = cx.number(entry, v, 0..=255u8),
                None => cx.error(
                    Diagnostic::error("missing-value", format!("`{}` needs a value", word.text))
                        .at(word.span, "value missing"),
                ),
            }
        }
        if let (Some(min), Some(max)) = (peer.min_ttl, peer.max_ttl)
            && min > max
        {
            cx.error(
                Diagnostic::warning("ttl-range", format!("min_ttl {min} is above max_ttl {max}"))
                    .at(entry.line_span(), "no advert from this peer can pass"),
            );
        }
        peers.push(peer);
    }
    peers
}

pub fn vrrp_sync_group(cx: &mut Cx, node: &Node) -> Option<VrrpSyncGroup> {
    let name = cx.string(node)?;
    let mut g = VrrpSyncGroup {
        name,
        group: Vec::new(),
        track_interface: Vec::new(),
        track_script: Vec::new(),
        track_file: Vec::new(),
        notify_master: None,
        notify_backup: None,
        notify_fault: None,
        notify_stop: None,
        notify: None,
        smtp_alert: false,
        global_tracking: false,
        other: Default::default(),
    };
    for child in node.children() {
        match child.name() {
            "group" => {
                if cx.needs_block(child) {
                    g.group.extend(child.children().iter().flat_map(|e| {
                        std::iter::once(e.keyword.text.clone())
                            .chain(e.args.iter().map(|t| t.text.clone()))
                    }));
                    if child.children().is_empty() {
                        cx.error(
                            Diagnostic::warning(
                                "empty-block",
                                format!("sync group `{}` has an empty group block", g.name),
                            )
                            .at(
                                child.keyword.span,
                                "keepalived removes a sync group without members",
                            ),
                        );
                    }
                }
            }
            "track_interface" => g.track_interface.extend(track_refs(cx, child)),
            "track_script" => g.track_script.extend(track_refs(cx, child)),
            "track_file" => g.track_file.extend(track_refs(cx, child)),
            "notify_master" => g.notify_master = cx.script(child),
            "notify_backup" => g.notify_backup = cx.script(child),
            "notify_fault" => g.notify_fault = cx.script(child),
            "notify_stop" => g.notify_stop = cx.script(child),
            "notify" => g.notify = cx.script(child),
            "smtp_alert" => set(&mut g.smtp_alert, cx.flag(child)),
            "global_tracking" => {
                g.global_tracking = cx.flag_only(child);
                cx.error(
                    Diagnostic::warning("deprecated-keyword", "`global_tracking` is deprecated")
                        .at(
                            child.keyword.span,
                            "use track_interface / track_script / track_file on the sync group",
                        ),
                );
            }
            name if super::known::VRRP_SYNC_GROUP.contains(&name) => other(cx, &mut g.other, child),
            _ => cx.unknown(child, "vrrp_sync_group"),
        }
    }
    Some(g)
}
