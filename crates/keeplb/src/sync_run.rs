//! `lvs_sync_daemon`: IPVS's connection synchronisation between directors, for what a
//! full proxy can hand over: persistence templates. The director that is MASTER of the
//! named VRRP instance multicasts, once a second, the templates made or re-armed since
//! it last did, in the kernel's sync protocol (version 1); the others take them into
//! their own tables, so that after a failover a persistent client finds its real server
//! again. Connections themselves cannot move: a proxy's sockets end with it.
//!
//! keepalived runs the kernel's master daemon on the MASTER and its backup daemon on
//! the BACKUP (both, when no instance is named); here one socket does both, and the
//! instance's state (read from the status board at each sync period) says which part
//! is in force.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use keeplb_balancer::sync;
use keeplb_config::model::{self, LvsSyncDaemon};
use keeplb_control::model::{SyncDaemon, SyncRole};
use keeplb_proxy::DataPlane;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::vrrp_run::StatusBoard;

/// How often the master sends what changed (the kernel's master thread also wakes
/// about once a second when traffic is light).
const SYNC_PERIOD: Duration = Duration::from_secs(1);

/// Wait before opening the socket again after it failed (an interface not there yet).
const RETRY: Duration = Duration::from_secs(5);

/// The sync daemon's settings in force, for the control socket: `ipvsadm -L --daemon`
/// lists the kernel daemons running, and keepalived runs the master daemon on the
/// instance's MASTER and the backup daemon elsewhere (both with no instance named).
/// It also counts what the daemon sends, takes in and drops, for the metrics.
#[derive(Debug, Clone, Default)]
pub struct SyncView {
    settings: Arc<std::sync::Mutex<Option<LvsSyncDaemon>>>,
    counters: SyncCounters,
}

/// The sync daemon's counters (`keeplb_sync_…_total`).
#[derive(Debug, Clone, Default)]
struct SyncCounters {
    templates_sent: Counter,
    templates_received: Counter,
    /// Templates of messages taken in that this director could not enter, by why.
    templates_dropped: Family<Vec<(String, String)>, Counter>,
    /// Messages dropped whole, by why.
    messages_dropped: Family<Vec<(String, String)>, Counter>,
}

impl SyncCounters {
    fn drop_message(&self, reason: &str) {
        let labels = vec![("reason".to_owned(), reason.to_owned())];
        self.messages_dropped.get_or_create(&labels).inc();
    }

    fn drop_template(&self, reason: &str) {
        let labels = vec![("reason".to_owned(), reason.to_owned())];
        self.templates_dropped.get_or_create(&labels).inc();
    }
}

impl SyncView {
    fn set(&self, settings: Option<LvsSyncDaemon>) {
        *self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    /// Registers the daemon's counters with the daemon's metrics.
    pub fn register(&self, registry: &mut Registry) {
        let counters = &self.counters;
        registry.register(
            "sync_templates_sent",
            "Persistence templates multicast by the lvs_sync_daemon master.",
            counters.templates_sent.clone(),
        );
        registry.register(
            "sync_templates_received",
            "Persistence templates received and entered in the table.",
            counters.templates_received.clone(),
        );
        registry.register(
            "sync_templates_dropped",
            "Received templates not entered, by reason.",
            counters.templates_dropped.clone(),
        );
        registry.register(
            "sync_messages_dropped",
            "Sync messages dropped whole (malformed, or of another sync id), by reason.",
            counters.messages_dropped.clone(),
        );
    }

    /// The daemons in force now, as `ipvsadm -L --daemon` would list the kernel's: the
    /// multicast settings with the kernel's defaults filled in.
    pub fn listed(&self, board: &StatusBoard) -> Vec<SyncDaemon> {
        let Some(settings) = self
            .settings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        else {
            return Vec::new();
        };
        let roles: &[SyncRole] = match role(board, settings.vrrp_instance.as_deref()) {
            Role::Master => &[SyncRole::Master],
            Role::Backup => &[SyncRole::Backup],
            Role::Both => &[SyncRole::Master, SyncRole::Backup],
        };
        let maxlen =
            sync::master_max_len(settings.maxlen.map(usize::from), settings.group.is_ipv6());
        roles
            .iter()
            .map(|&role| SyncDaemon {
                role,
                mcast_interface: settings.interface.clone(),
                sync_id: settings.sync_id,
                sync_maxlen: u16::try_from(maxlen).unwrap_or(u16::MAX),
                mcast_group: Some(settings.group),
                mcast_port: settings.port,
                mcast_ttl: settings.ttl,
            })
            .collect()
    }
}

/// Runs the sync daemon of `config` (if it has one) until `stopped`, starting it again
/// with the new settings when a reload changes them; `view` follows the settings.
pub async fn serve(
    config: &model::Config,
    plane: Arc<DataPlane>,
    board: StatusBoard,
    view: SyncView,
    mut reloads: mpsc::UnboundedReceiver<Arc<model::Config>>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut settings = config.global_defs.lvs_sync_daemon.clone();
    view.set(settings.clone());
    // Kept across reloads that leave the settings alone: replacing it would close the
    // socket and make a master send every template again.
    let counters = view.counters.clone();
    let mut daemon = Box::pin(daemon(
        settings.clone(),
        Arc::clone(&plane),
        board.clone(),
        counters.clone(),
    ));
    loop {
        tokio::select! {
            () = &mut stopped => return,
            Some(new) = reloads.recv() => {
                let new = new.global_defs.lvs_sync_daemon.clone();
                if new != settings {
                    tracing::info!("lvs_sync_daemon: restarting with the new configuration");
                    settings = new;
                    view.set(settings.clone());
                    daemon = Box::pin(self::daemon(
                        settings.clone(),
                        Arc::clone(&plane),
                        board.clone(),
                        counters.clone(),
                    ));
                }
            }
            () = &mut daemon => {}
        }
    }
}

/// Runs the daemon of `settings` (none: nothing) for good, opening its socket again
/// after a failure.
async fn daemon(
    settings: Option<LvsSyncDaemon>,
    plane: Arc<DataPlane>,
    board: StatusBoard,
    counters: SyncCounters,
) {
    let Some(settings) = settings else {
        return std::future::pending().await;
    };
    loop {
        if let Err(e) = run(&settings, &plane, &board, &counters).await {
            tracing::error!(
                "lvs_sync_daemon on {}: {e}; trying again in {RETRY:?}",
                settings.interface
            );
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Which parts of the daemon are in force.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    /// The instance is MASTER: send.
    Master,
    /// The instance is in any other state: receive.
    Backup,
    /// No instance is named (`lvs_sync_daemon eth0`): keepalived then runs the master
    /// and the backup daemon at once.
    Both,
}

impl Role {
    fn sends(self) -> bool {
        matches!(self, Role::Master | Role::Both)
    }

    fn receives(self) -> bool {
        matches!(self, Role::Backup | Role::Both)
    }
}

fn role(board: &StatusBoard, instance: Option<&str>) -> Role {
    let Some(instance) = instance else {
        return Role::Both;
    };
    let board = board
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match board.get(instance) {
        Some(status) if status.state == "MASTER" => Role::Master,
        _ => Role::Backup,
    }
}

/// Sends and receives until the socket fails.
async fn run(
    settings: &LvsSyncDaemon,
    plane: &DataPlane,
    board: &StatusBoard,
    counters: &SyncCounters,
) -> io::Result<()> {
    let group = SocketAddr::new(settings.group, settings.port);
    let socket = open_socket(settings)?;
    let instance = settings.vrrp_instance.as_deref();
    tracing::info!(
        "lvs_sync_daemon: persistence templates on {} with {group} (syncid {}), following \
         vrrp_instance {}",
        settings.interface,
        settings.sync_id,
        instance.unwrap_or("(none: sending and receiving)")
    );
    let max_len = sync::master_max_len(settings.maxlen.map(usize::from), settings.group.is_ipv6());
    let mut period = tokio::time::interval(SYNC_PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0; sync::MAX_DATAGRAM];
    let mut sent_before = false;
    loop {
        tokio::select! {
            _ = period.tick() => {
                let sends = role(board, instance).sends();
                // A new master sends every template once, for a backup that restarted;
                // so does one whose last send failed (what it held is marked sent).
                sent_before = sends
                    && send_templates(&socket, group, settings.sync_id, max_len, plane, !sent_before)
                        .await
                        .inspect(|&sent| {
                            counters.templates_sent.inc_by(sent);
                        })
                        .is_some();
            }
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received?;
                if role(board, instance).receives() {
                    take_in(&buf[..len], from, settings.sync_id, plane, counters);
                }
            }
        }
    }
}

/// The templates of every service that changed since the last period (or `all` of
/// them), to the group. The two address families travel in separate messages, as a
/// message is of one family. How many templates went; None when a send failed.
async fn send_templates(
    socket: &UdpSocket,
    group: SocketAddr,
    sync_id: u8,
    max_len: usize,
    plane: &DataPlane,
    all: bool,
) -> Option<u64> {
    let (v4, v6): (Vec<_>, Vec<_>) = plane
        .services_sorted()
        .iter()
        .flat_map(|svc| svc.templates_to_sync(all))
        .partition(|conn| conn.client.is_ipv4());
    let mut count = v4.len() + v6.len();
    let mut datagrams = Vec::new();
    for templates in [v4, v6] {
        let encoded = sync::encode(sync_id, &templates, max_len);
        for refused in encoded.refused {
            count -= 1;
            tracing::warn!("lvs_sync_daemon: a template not sent: {refused}");
        }
        datagrams.extend(encoded.datagrams);
    }
    for datagram in datagrams {
        if let Err(e) = socket.send_to(&datagram, group).await {
            tracing::warn!("lvs_sync_daemon: sending to {group}: {e}");
            return None;
        }
    }
    if count > 0 {
        tracing::debug!("lvs_sync_daemon: sent {count} template(s)");
    }
    Some(u64::try_from(count).unwrap_or(u64::MAX))
}

/// A sync message from `from`: each template goes to its service's table. Malformed
/// messages, other sync ids and templates for services or real servers this director
/// does not have are dropped, as the kernel's backup drops them.
fn take_in(
    datagram: &[u8],
    from: SocketAddr,
    sync_id: u8,
    plane: &DataPlane,
    counters: &SyncCounters,
) {
    let message = match sync::decode(datagram) {
        Ok(message) => message,
        Err(e) => {
            counters.drop_message("malformed");
            tracing::debug!("lvs_sync_daemon: dropped a message from {from}: {e}");
            return;
        }
    };
    if !message.accepted_by(sync_id) {
        counters.drop_message("other_sync_id");
        tracing::debug!(
            "lvs_sync_daemon: ignored syncid {} from {from}",
            message.sync_id
        );
        return;
    }
    for skipped in &message.skipped {
        counters.drop_template("not_a_template");
        tracing::debug!("lvs_sync_daemon: entry from {from} skipped: {skipped:?}");
    }
    let services = plane.services_sorted();
    for conn in &message.conns {
        let imported = services
            .iter()
            .find(|svc| svc.owns_synced(conn))
            .ok_or_else(|| format!("no virtual server {}", conn.vip))
            .and_then(|svc| svc.import_template(conn).map_err(|e| e.to_string()));
        if imported.is_ok() {
            counters.templates_received.inc();
        }
        if let Err(why) = imported {
            counters.drop_template("not_served");
            tracing::debug!(
                "lvs_sync_daemon: template {} -> {} from {from} dropped: {why}",
                conn.client,
                conn.dest
            );
        }
    }
}

/// One UDP socket on the interface: bound to the group and port (so it receives only
/// sync messages), a member of the group, sending with the configured TTL and not
/// hearing itself.
fn open_socket(settings: &LvsSyncDaemon) -> io::Result<UdpSocket> {
    let ifindex = nix::net::if_::if_nametoindex(settings.interface.as_str())
        .map_err(|e| io::Error::other(format!("interface {}: {e}", settings.interface)))?;
    let group = settings.group;
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(group, 0)),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(settings.interface.as_bytes()))?;
    match group {
        IpAddr::V4(group) => {
            socket.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))?;
            socket.set_multicast_ttl_v4(u32::from(settings.ttl))?;
            socket.set_multicast_loop_v4(false)?;
        }
        IpAddr::V6(group) => {
            socket.join_multicast_v6(&group, ifindex)?;
            socket.set_multicast_if_v6(ifindex)?;
            socket.set_multicast_hops_v6(u32::from(settings.ttl))?;
            socket.set_multicast_loop_v6(false)?;
        }
    }
    let bound = match group {
        // A link-local group is only a group on one link: name it.
        IpAddr::V6(group) => SocketAddr::V6(SocketAddrV6::new(group, settings.port, 0, ifindex)),
        IpAddr::V4(_) => SocketAddr::new(group, settings.port),
    };
    socket.bind(&bound.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use keeplb_balancer::Protocol as IpvsProtocol;
    use keeplb_balancer::sync::{SyncConn, TEMPLATE_FLAGS, TEMPLATE_STATE};

    use super::*;

    fn template() -> SyncConn {
        SyncConn {
            protocol: IpvsProtocol::Tcp,
            client: "10.0.0.5:0".parse().unwrap(),
            vip: "10.0.0.100:80".parse().unwrap(),
            dest: "10.0.0.21:80".parse().unwrap(),
            fwmark: 0,
            flags: TEMPLATE_FLAGS,
            state: TEMPLATE_STATE,
            timeout: Duration::from_secs(300),
            persistence_engine: None,
        }
    }

    fn count(family: &Family<Vec<(String, String)>, Counter>, reason: &str) -> u64 {
        family
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .get()
    }

    #[test]
    fn what_the_backup_drops_is_counted_by_why() {
        let plane = DataPlane::start(NonZeroUsize::MIN).unwrap();
        let counters = SyncCounters::default();
        let from: SocketAddr = "10.0.0.1:8848".parse().unwrap();
        take_in(b"not a sync message", from, 7, &plane, &counters);
        assert_eq!(count(&counters.messages_dropped, "malformed"), 1);

        let message = sync::encode(9, &[template()], 1500).datagrams.remove(0);
        take_in(&message, from, 7, &plane, &counters);
        assert_eq!(count(&counters.messages_dropped, "other_sync_id"), 1);

        // Our sync id, but a virtual server this director does not serve.
        let message = sync::encode(7, &[template()], 1500).datagrams.remove(0);
        take_in(&message, from, 7, &plane, &counters);
        assert_eq!(count(&counters.templates_dropped, "not_served"), 1);
        assert_eq!(counters.templates_received.get(), 0);
    }

    #[test]
    fn the_counters_are_exposed_under_keeplbs_prefix() {
        let view = SyncView::default();
        let mut registry = Registry::with_prefix("keeplb");
        view.register(&mut registry);
        view.counters.templates_sent.inc_by(3);
        view.counters.drop_message("malformed");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("keeplb_sync_templates_sent_total 3"),
            "{text}"
        );
        assert!(
            text.contains(r#"keeplb_sync_messages_dropped_total{reason="malformed"} 1"#),
            "{text}"
        );
    }
}
