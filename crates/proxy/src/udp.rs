//! UDP services: one flow per client address, each with its own socket connected to
//! the real server chosen for it, kept while datagrams pass and closed after the UDP
//! timeout (IPVS's 300 s by default) of silence.
//!
//! Replies are sent from the service's own socket, so the client sees them come from
//! the VIP. Datagrams are never queued: when a socket's buffer is full the datagram is
//! dropped, as the network would drop it. Each worker holds at most [`MAX_FLOWS`]
//! flows per service (each costs a socket); beyond that, new clients' datagrams are
//! dropped until flows expire. Removing the service ends its flows with it, so no
//! socket of it lingers in the port's `SO_REUSEPORT` group.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keeplb_balancer::{ConnGuard, ConnKey, Direction, Flow};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use crate::activity::{IdleTimer, LastActivity};
use crate::service::{Refusal, VirtualService};

/// Largest UDP payload over IPv4 or IPv6 without jumbograms.
const MAX_DATAGRAM: usize = 65_535;

/// Flows per service and worker at most.
pub(crate) const MAX_FLOWS: usize = 16_384;

/// How long a datagram may wait for room in a socket before it is dropped.
const SEND_PATIENCE: Duration = Duration::from_millis(10);

thread_local! {
    /// Replies are read into one buffer per worker thread, so a flow owns no buffer
    /// while it waits.
    static REPLY_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpFlow>>>>;

/// One client's flow.
#[derive(Debug)]
struct UdpFlow {
    /// The connection table entry; `None` on the sorry server.
    key: Option<ConnKey>,
    upstream: UdpSocket,
    activity: LastActivity,
    /// Counts a sorry-server flow on its destination.
    sorry: Option<ConnGuard>,
}

/// Receives the clients' datagrams of `svc` on `socket` until the task is aborted.
pub(crate) async fn serve(socket: UdpSocket, svc: Arc<VirtualService>) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    // Owned here, so aborting this task (the service removed) ends every flow too.
    let mut replies = JoinSet::new();
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            Some(_) = replies.join_next() => continue,
        };
        let (len, client) = match received {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(service = %svc.vip(), "receive failed: {e}");
                continue;
            }
        };
        let existing = flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client)
            .cloned();
        // A flow whose table entry expired (or was flushed) is scheduled afresh.
        let flow = match existing {
            Some(flow) if counted(&svc, &flow, Direction::Input, len) => flow,
            _ => match open_flow(&svc, &socket, &flows, &mut replies, client).await {
                Ok(flow) => {
                    counted(&svc, &flow, Direction::Input, len);
                    flow
                }
                Err(why) => {
                    svc.warn_refused(client, why);
                    continue;
                }
            },
        };
        let _ = flow.activity.touch();
        // A new socket's writability is only known after the first event: wait for
        // it rather than drop. A full buffer later on drops, as a network would.
        let sent = match flow.upstream.try_send(&buf[..len]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(SEND_PATIENCE, flow.upstream.send(&buf[..len]))
                    .await
                    .unwrap_or(Err(e))
            }
            other => other,
        };
        if let Err(e) = sent {
            tracing::debug!(%client, "datagram to the real server dropped: {e}");
        }
    }
}

/// Counts a datagram on `flow`'s table entry (or, on the sorry server, on its
/// destination); false when the entry is gone.
fn counted(svc: &VirtualService, flow: &UdpFlow, dir: Direction, len: usize) -> bool {
    match (&flow.key, &flow.sorry) {
        (Some(key), _) => svc.udp_datagram(key, dir, len),
        (None, Some(sorry)) => {
            svc.untracked_datagram(sorry.dest(), dir, len);
            true
        }
        (None, None) => true,
    }
}

/// Schedules a new client, connects a socket to its real server (or the sorry
/// server) and starts relaying the replies.
async fn open_flow(
    svc: &Arc<VirtualService>,
    listener: &Arc<UdpSocket>,
    flows: &Flows,
    replies: &mut JoinSet<()>,
    client: SocketAddr,
) -> Result<Arc<UdpFlow>, Refusal> {
    if flows.lock().unwrap_or_else(PoisonError::into_inner).len() >= MAX_FLOWS {
        return Err(Refusal::FlowTableFull);
    }
    let (binding, sorry) = match svc.schedule(&Flow::new(client, svc.vip())) {
        Some(binding) => (binding, None),
        None => {
            let binding = svc.sorry_binding().ok_or(Refusal::Unavailable)?;
            let guard = binding.dest.connect();
            (binding, Some(guard))
        }
    };
    let upstream = match connected_socket(binding.target).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!(real_server = %binding.target, "cannot open a UDP flow: {e}");
            if let Some(key) = &binding.key {
                svc.forget(key);
            }
            return Err(Refusal::Unavailable);
        }
    };
    let flow = Arc::new(UdpFlow {
        key: binding.key,
        upstream,
        activity: LastActivity::new(),
        sorry,
    });
    flows
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(client, Arc::clone(&flow));
    replies.spawn(relay_replies(
        Arc::clone(svc),
        Arc::clone(listener),
        Arc::clone(flows),
        client,
        Arc::clone(&flow),
    ));
    Ok(flow)
}

async fn connected_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let any = if target.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Sends the real server's replies to `client` from the service's socket, until the
/// flow has been silent for the UDP timeout.
async fn relay_replies(
    svc: Arc<VirtualService>,
    listener: Arc<UdpSocket>,
    flows: Flows,
    client: SocketAddr,
    flow: Arc<UdpFlow>,
) {
    let mut idle = IdleTimer::new(svc.conn_settings().timeouts.udp());
    loop {
        tokio::select! {
            ready = flow.upstream.readable() => {
                if ready.is_err() {
                    break;
                }
                let blocked = REPLY_BUFFER
                    .with_borrow_mut(|buf| forward_replies(&svc, &listener, client, &flow, buf));
                if let Some(reply) = blocked {
                    let sent = tokio::time::timeout(SEND_PATIENCE, listener.send_to(&reply, client)).await;
                    if !matches!(sent, Ok(Ok(_))) {
                        tracing::debug!(%client, "reply dropped: no room");
                    }
                }
            }
            () = idle.idle(&flow.activity) => break,
        }
    }
    let mut flows = flows.lock().unwrap_or_else(PoisonError::into_inner);
    if flows.get(&client).is_some_and(|f| Arc::ptr_eq(f, &flow)) {
        flows.remove(&client);
    }
}

/// Sends every reply waiting on `flow`'s socket to `client`. Returns a reply that
/// found no room in the service's socket, for the caller to wait with.
fn forward_replies(
    svc: &VirtualService,
    listener: &UdpSocket,
    client: SocketAddr,
    flow: &UdpFlow,
    buf: &mut [u8],
) -> Option<Vec<u8>> {
    loop {
        match flow.upstream.try_recv(buf) {
            Ok(len) => {
                counted(svc, flow, Direction::Output, len);
                let _ = flow.activity.touch();
                match listener.try_send_to(&buf[..len], client) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Some(buf[..len].to_vec());
                    }
                    Err(e) => tracing::debug!(%client, "reply dropped: {e}"),
                    Ok(_) => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            // An ICMP error from the real server (port unreachable): the next datagram
            // may fare better; health checks decide about the server.
            Err(e) => {
                tracing::debug!(%client, "real server: {e}");
                return None;
            }
        }
    }
}
