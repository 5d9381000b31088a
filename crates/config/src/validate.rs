//! Checks across blocks: references, duplicates, and combinations keepalived refuses.

use std::collections::HashMap;

use crate::build::Origins;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Config, VirtualServerKey, VrrpInstance};
use crate::source::Span;

pub fn validate(config: &Config, origins: &Origins, diagnostics: &mut Diagnostics) {
    duplicate_names(
        "vrrp_script",
        config
            .vrrp_script
            .iter()
            .map(|s| s.name.as_str())
            .zip(origins.vrrp_script.iter().copied()),
        diagnostics,
    );
    duplicate_names(
        "vrrp_instance",
        config
            .vrrp_instance
            .iter()
            .map(|i| i.name.as_str())
            .zip(origins.vrrp_instance.iter().map(|o| o.name)),
        diagnostics,
    );
    duplicate_names(
        "vrrp_sync_group",
        config
            .vrrp_sync_group
            .iter()
            .map(|g| g.name.as_str())
            .zip(origins.vrrp_sync_group.iter().map(|o| o.name)),
        diagnostics,
    );
    track_references(config, origins, diagnostics);
    sync_groups(config, origins, diagnostics);
    duplicate_vrids(config, origins, diagnostics);
    duplicate_vmacs(config, origins, diagnostics);
    virtual_server_groups(config, origins, diagnostics);
}

fn duplicate_names<'a>(
    what: &str,
    names: impl Iterator<Item = (&'a str, Span)>,
    diagnostics: &mut Diagnostics,
) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (name, span) in names {
        if let Some(first) = seen.get(name) {
            diagnostics.push(
                Diagnostic::error(
                    "duplicate-name",
                    format!("{what} `{name}` is defined twice"),
                )
                .at(span, "defined again here")
                .with_secondary(*first, "first defined here"),
            );
        } else {
            seen.insert(name, span);
        }
    }
}

fn track_references(config: &Config, origins: &Origins, diagnostics: &mut Diagnostics) {
    for (instance, origin) in config.vrrp_instance.iter().zip(&origins.vrrp_instance) {
        for (r, span) in instance.track_script.iter().zip(&origin.track_script) {
            if !config.vrrp_script.iter().any(|s| s.name == r.name) {
                diagnostics.push(
                    Diagnostic::error(
                        "undefined-reference",
                        format!("track_script `{}` is not defined", r.name),
                    )
                    .at(*span, "no vrrp_script has this name")
                    .with_note(defined_list(
                        "vrrp_script",
                        config.vrrp_script.iter().map(|s| s.name.as_str()),
                    )),
                );
            }
        }
        for (r, span) in instance.track_file.iter().zip(&origin.track_file) {
            if !config.track_file.iter().any(|t| t.name == r.name) {
                diagnostics.push(
                    Diagnostic::error(
                        "undefined-reference",
                        format!("track_file `{}` is not defined", r.name),
                    )
                    .at(*span, "no track_file block has this name"),
                );
            }
        }
    }
}

fn defined_list<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        format!("no {what} is defined")
    } else {
        format!("defined: {}", names.join(", "))
    }
}

fn sync_groups(config: &Config, origins: &Origins, diagnostics: &mut Diagnostics) {
    let mut member_of: HashMap<&str, (&str, Span)> = HashMap::new();
    for (group, origin) in config.vrrp_sync_group.iter().zip(&origins.vrrp_sync_group) {
        let existing = group
            .group
            .iter()
            .filter(|m| config.vrrp_instance.iter().any(|i| &i.name == *m))
            .count();
        for tracked in &group.track_interface {
            let clash = config.vrrp_instance.iter().find(|i| {
                group.group.contains(&i.name)
                    && (i.interface.as_deref() == Some(tracked.name.as_str())
                        || i.track_interface.iter().any(|t| t.name == tracked.name))
            });
            if let Some(instance) = clash {
                diagnostics.push(
                    Diagnostic::warning(
                        "tracked-twice",
                        format!("interface {} is tracked by sync group `{}` and is also vrrp_instance `{}`'s interface or tracked interface", tracked.name, group.name, instance.name),
                    )
                    .at(origin.name, "keepalived reports this; track it in one place"),
                );
            }
        }
        if existing == 1 {
            diagnostics.push(
                Diagnostic::warning(
                    "lonely-sync-group",
                    format!("sync group `{}` has only one instance", group.name),
                )
                .at(
                    origin.name,
                    "a sync group moves several instances together; one alone needs no group",
                ),
            );
        }
        for (member, span) in group.group.iter().zip(&origin.members) {
            if !config.vrrp_instance.iter().any(|i| &i.name == member) {
                diagnostics.push(
                    Diagnostic::error(
                        "undefined-reference",
                        format!(
                            "vrrp_sync_group `{}` names an undefined vrrp_instance `{member}`",
                            group.name
                        ),
                    )
                    .at(*span, "no vrrp_instance has this name")
                    .with_note(defined_list(
                        "vrrp_instance",
                        config.vrrp_instance.iter().map(|i| i.name.as_str()),
                    )),
                );
                continue;
            }
            if let Some((other_group, other_span)) = member_of.get(member.as_str()) {
                diagnostics.push(
                    Diagnostic::error(
                        "duplicate-sync-group-member",
                        format!("vrrp_instance `{member}` is in two sync groups (`{other_group}` and `{}`)", group.name),
                    )
                    .at(*span, "second membership")
                    .with_secondary(*other_span, "first membership"),
                );
            } else {
                member_of.insert(member, (&group.name, *span));
            }
        }
    }
}

/// Two instances with the same VRID on the same interface and family would take each
/// other's adverts, so keepalived refuses it: for multicast always, for unicast only when
/// they share a source address and a peer.
fn duplicate_vrids(config: &Config, origins: &Origins, diagnostics: &mut Diagnostics) {
    let instances: Vec<_> = config
        .vrrp_instance
        .iter()
        .zip(&origins.vrrp_instance)
        .collect();
    for (n, (instance, origin)) in instances.iter().enumerate() {
        let Some(interface) = instance.interface.as_deref() else {
            continue;
        };
        let earlier = instances[..n].iter().find(|(other, _)| {
            other.interface.as_deref() == Some(interface)
                && other.virtual_router_id == instance.virtual_router_id
                && family_is_v6(other) == family_is_v6(instance)
                && adverts_meet(other, instance)
        });
        if let Some((other, other_origin)) = earlier {
            diagnostics.push(
                Diagnostic::error(
                    "duplicate-vrid",
                    format!(
                        "virtual_router_id {} is used twice on interface {interface} (`{}` and `{}`)",
                        instance.virtual_router_id, other.name, instance.name
                    ),
                )
                .at(origin.virtual_router_id.unwrap_or(origin.name), "second use")
                .with_secondary(other_origin.virtual_router_id.unwrap_or(other_origin.name), "first use"),
            );
        }
    }
}

fn duplicate_vmacs(config: &Config, origins: &Origins, diagnostics: &mut Diagnostics) {
    // An IPv4 and an IPv6 instance may share a vmac name (keepalived keeps them apart).
    let mut seen: HashMap<(&str, bool), &str> = HashMap::new();
    for (instance, origin) in config.vrrp_instance.iter().zip(&origins.vrrp_instance) {
        // keepalived derives distinct names for default vmacs; only given names can clash.
        let default_name = format!("vrrp.{}", instance.virtual_router_id);
        let Some(vmac) = instance.use_vmac.as_deref().filter(|n| *n != default_name) else {
            continue;
        };
        let key = (vmac, family_is_v6(instance));
        if let Some(first) = seen.get(&key) {
            diagnostics.push(
                Diagnostic::warning(
                    "duplicate-vmac",
                    format!("vrrp_instance `{first}` already uses the vmac `{vmac}`"),
                )
                .at(origin.name, "keepalived ignores this name"),
            );
        } else {
            seen.insert(key, &instance.name);
        }
    }
}

fn family_is_v6(instance: &VrrpInstance) -> bool {
    instance
        .virtual_ipaddress
        .first()
        .map(|v| v.address)
        .or(instance.unicast_src_ip)
        .is_some_and(|a| a.is_ipv6())
}

/// Whether two instances' adverts reach each other.
fn adverts_meet(a: &VrrpInstance, b: &VrrpInstance) -> bool {
    match (a.unicast_peer.is_empty(), b.unicast_peer.is_empty()) {
        (true, true) => true,
        (false, false) => {
            a.unicast_src_ip == b.unicast_src_ip
                && a.unicast_peer
                    .iter()
                    .any(|p| b.unicast_peer.iter().any(|q| q.address == p.address))
        }
        _ => false,
    }
}

fn virtual_server_groups(config: &Config, origins: &Origins, diagnostics: &mut Diagnostics) {
    for (vs, span) in config.virtual_server.iter().zip(&origins.virtual_server) {
        if let VirtualServerKey::Group { group } = &vs.key
            && !config.virtual_server_group.iter().any(|g| &g.name == group)
        {
            // keepalived -t accepts this; the service simply has no addresses.
            diagnostics.push(
                Diagnostic::note(
                    "undefined-reference",
                    format!("virtual_server_group `{group}` is not defined"),
                )
                .at(*span, "this virtual server listens on nothing"),
            );
        }
    }
}
