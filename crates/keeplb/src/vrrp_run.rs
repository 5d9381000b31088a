//! `keeplb run`'s VRRP part: each `vrrp_instance` of the configuration becomes a VRRP
//! engine (`keeplb_vrrp`) on its interface, until SIGTERM or SIGINT makes the masters
//! resign.

use std::time::Duration;

use anyhow::{Context, bail};
use keeplb_config::model::{self, AuthType, GlobalDefs, VrrpInstance};
use keeplb_vrrp::{
    AdverInterval, Auth, AuthPassword, ChecksumForm, DriverOptions, GarpConfig, InitialState,
    InstanceConfig, Transport, UnicastPeer, Version,
};
use tokio::sync::watch;

/// The engine's view of one `vrrp_instance`, as keepalived would run it.
pub fn instance_config(
    instance: &VrrpInstance,
    global: &GlobalDefs,
) -> anyhow::Result<(InstanceConfig, DriverOptions)> {
    let Some(interface) = instance.interface.clone() else {
        bail!("vrrp_instance {} has no interface", instance.name);
    };
    let version = if instance.version == 3 {
        Version::V3
    } else {
        Version::V2
    };
    let vips = instance
        .virtual_ipaddress
        .iter()
        .map(|v| v.address)
        .collect();
    let mut config = InstanceConfig::new(&instance.name, instance.virtual_router_id, version, vips);
    config.priority = instance.priority;
    config.adver_int = match version {
        // VRRPv2 carries whole seconds; the configuration has already been rounded.
        Version::V2 => AdverInterval::from_secs(instance.advert_int.clamp(1.0, 255.0) as u8),
        Version::V3 => AdverInterval::from_centis((instance.advert_int * 100.0).round() as u16),
    };
    config.initial_state = match instance.state {
        model::InitialState::Master => InitialState::Master,
        model::InitialState::Backup => InitialState::Backup,
    };
    config.preempt = !instance.nopreempt;
    config.preempt_delay = Duration::from_secs_f64(instance.preempt_delay);
    config.accept = instance.accept;
    config.lower_prio_no_advert = instance.lower_prio_no_advert;
    config.higher_prio_send_advert = instance.higher_prio_send_advert;
    config.auth = match &instance.authentication {
        None => Auth::None,
        Some(a) if a.auth_type == AuthType::Pass => {
            Auth::Password(AuthPassword::new(a.auth_pass.as_bytes()))
        }
        Some(_) => bail!(
            "vrrp_instance {}: AH authentication is not supported",
            instance.name
        ),
    };
    if global.v3_checksum_as_v2 {
        config.checksum_form = ChecksumForm::MessageOnly;
    }
    config.excluded_vips = instance
        .virtual_ipaddress_excluded
        .iter()
        .map(|v| v.address)
        .collect();
    config.src_addr = instance.unicast_src_ip.or(instance.mcast_src_ip);
    config.transport = if instance.unicast_peer.is_empty() {
        Transport::Multicast {
            group: match config.family() {
                keeplb_vrrp::Family::Ipv4 => global.vrrp_mcast_group4.into(),
                keeplb_vrrp::Family::Ipv6 => global.vrrp_mcast_group6.into(),
            },
        }
    } else {
        Transport::Unicast {
            peers: instance
                .unicast_peer
                .iter()
                .map(|p| UnicastPeer {
                    addr: p.address,
                    min_ttl: p.min_ttl.unwrap_or(0),
                    max_ttl: p.max_ttl.unwrap_or(255),
                })
                .collect(),
            ttl: instance.unicast_ttl,
            check_src: instance.check_unicast_src
                || instance
                    .unicast_peer
                    .iter()
                    .any(|p| p.min_ttl.is_some() || p.max_ttl.is_some()),
        }
    };
    config.garp = GarpConfig {
        master_delay: Duration::from_secs(u64::from(instance.garp_master_delay)),
        master_repeat: instance.garp_master_repeat,
        master_refresh: Duration::from_secs(u64::from(instance.garp_master_refresh)),
        master_refresh_repeat: instance.garp_master_refresh_repeat,
        lower_prio_delay: Duration::from_secs(u64::from(
            instance
                .garp_lower_prio_delay
                .unwrap_or(instance.garp_master_delay),
        )),
        lower_prio_repeat: instance
            .garp_lower_prio_repeat
            .unwrap_or(instance.garp_master_repeat),
    };
    config
        .validate()
        .with_context(|| format!("vrrp_instance {}", instance.name))?;
    let mut options = DriverOptions::new(interface);
    options.vip_prefixes = instance
        .virtual_ipaddress
        .iter()
        .map(|v| (v.address, v.prefix))
        .collect();
    Ok((config, options))
}

/// Runs every instance until SIGTERM/SIGINT, then lets them resign and waits for them.
/// An instance that cannot start is reported and the others keep running.
pub async fn run(config: &model::Config) -> anyhow::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let mut engines = tokio::task::JoinSet::new();
    for instance in &config.vrrp_instance {
        let (engine, options) = match instance_config(instance, &config.global_defs) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!("not running vrrp_instance {}: {e:#}", instance.name);
                continue;
            }
        };
        let name = instance.name.clone();
        let stopped = stopped.clone();
        engines.spawn(async move {
            let result = keeplb_vrrp::run_instance_with(engine, options, stopped).await;
            (name, result)
        });
    }
    if engines.is_empty() {
        bail!("no vrrp_instance could be started");
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: resigning"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: resigning"),
        Some(joined) = engines.join_next() => report(joined),
    }
    let _ = stop.send(true);
    while let Some(joined) = engines.join_next().await {
        report(joined);
    }
    Ok(())
}

fn report(
    joined: Result<
        (String, Result<keeplb_vrrp::Stats, keeplb_vrrp::IoError>),
        tokio::task::JoinError,
    >,
) {
    match joined {
        Ok((name, Ok(_))) => tracing::info!("vrrp_instance {name} stopped"),
        Ok((name, Err(e))) => tracing::error!("vrrp_instance {name} failed: {e}"),
        Err(e) => tracing::error!("a vrrp_instance task failed: {e}"),
    }
}
