//! UDP services: one flow per client address, each with its own socket connected to
//! the real server chosen for it, kept while datagrams pass and closed after the UDP
//! timeout (IPVS's 300 s by default) of silence.
//!
//! Replies are sent from the service's own socket, so the client sees them come from
//! the VIP. Datagrams are never queued: when a socket's buffer is full the datagram is
//! dropped, as the network would drop it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use keeplb_balancer::{ConnGuard, ConnKey, Direction, Flow};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::service::VirtualService;

/// Largest UDP payload over IPv4 or IPv6 without jumbograms.
const MAX_DATAGRAM: usize = 65_535;

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
    started: Instant,
    last_ms: AtomicU64,
    /// Counts a sorry-server flow on its destination.
    _sorry: Option<ConnGuard>,
}

impl UdpFlow {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Receives the clients' datagrams of `svc` on `socket` until the task is aborted.
pub(crate) async fn serve(socket: UdpSocket, svc: Arc<VirtualService>) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
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
            _ => match open_flow(&svc, &socket, &flows, client).await {
                Some(flow) => {
                    counted(&svc, &flow, Direction::Input, len);
                    flow
                }
                None => {
                    svc.warn_unavailable(client);
                    continue;
                }
            },
        };
        flow.touch();
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

/// Counts a datagram on `flow`'s table entry; false when the entry is gone.
fn counted(svc: &VirtualService, flow: &UdpFlow, dir: Direction, len: usize) -> bool {
    match &flow.key {
        Some(key) => svc.udp_datagram(key, dir, len),
        None => true,
    }
}

/// Schedules a new client, connects a socket to its real server (or the sorry
/// server) and starts relaying the replies.
async fn open_flow(
    svc: &Arc<VirtualService>,
    listener: &Arc<UdpSocket>,
    flows: &Flows,
    client: SocketAddr,
) -> Option<Arc<UdpFlow>> {
    let (binding, sorry) = match svc.schedule(&Flow::new(client, svc.vip())) {
        Some(binding) => (binding, None),
        None => {
            let binding = svc.sorry_binding()?;
            let guard = binding.dest.connect();
            (binding, Some(guard))
        }
    };
    let upstream = match connected_socket(binding.target).await {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(real_server = %binding.target, "cannot open a UDP flow: {e}");
            return None;
        }
    };
    let flow = Arc::new(UdpFlow {
        key: binding.key,
        upstream,
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        _sorry: sorry,
    });
    flows
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(client, Arc::clone(&flow));
    tokio::spawn(relay_replies(
        Arc::clone(svc),
        Arc::clone(listener),
        Arc::clone(flows),
        client,
        Arc::clone(&flow),
    ));
    Some(flow)
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
    let timeout = svc.conn_settings().timeouts.udp();
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
            () = tokio::time::sleep_until(flow.last() + timeout) => {
                if flow.last() + timeout <= Instant::now() {
                    break;
                }
            }
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
                flow.touch();
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
