//! UDP services: one flow per client address, each with its own socket connected to
//! the real server chosen for it, kept while datagrams pass and closed after the UDP
//! timeout (IPVS's 300 s by default) of silence. A client whose real server left the
//! service (or who is on the sorry server while a real server is available again) is
//! scheduled afresh at its next datagram, as IPVS does with `expire_nodest_conn`:
//! datagrams carry no connection worth draining.
//!
//! Replies are sent from the service's own socket, so the client sees them come from
//! the VIP. Datagrams are never queued: when a socket's buffer is full the datagram is
//! dropped, as the network would drop it. Each worker holds at most [`MAX_FLOWS`]
//! flows per service (each costs a socket); beyond that, new clients' datagrams are
//! dropped until flows expire. Removing the service ends its flows with it, so no
//! socket of it lingers in the port's `SO_REUSEPORT` group.
//!
//! With one-packet scheduling (ipvsadm `-o`, keepalived `ops`) every datagram is
//! scheduled on its own and counted as a connection, leaving no table entry, as IPVS
//! does. A flow then belongs to a client *and* a real server: datagrams of a client
//! that go to the same real server share its socket, and replies come back through it
//! as for any flow.
//!
//! With PROXY protocol v2 (keeplb's `proxy_protocol v2`) every datagram to a real
//! server starts with a v2 header for UDP, as dnsdist and the PowerDNS Recursor expect
//! it: a datagram has no stream to announce once. Version 1 has no UDP form.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keeplb_balancer::{ConnGuard, ConnKey, Dest, Direction, Flow, Unscheduled};
use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::activity::{IdleTimer, LastActivity};
use crate::proxy_protocol::{ProxyProtocol, Transport, V2_MAX_HEADER};
use crate::service::{Binding, Refusal, SorryCount, VirtualService};

/// Largest UDP payload over IPv4 or IPv6 without jumbograms.
const MAX_DATAGRAM: usize = 65_535;

/// Flows per service and worker at most.
pub(crate) const MAX_FLOWS: usize = 16_384;

/// How long a datagram may wait for room in a socket before it is dropped.
const SEND_PATIENCE: Duration = Duration::from_millis(10);

/// How long a one-packet flow waits for replies after its last datagram. IPVS keeps
/// no state at all for one-packet scheduling; the proxy keeps a socket only so that
/// replies come back from the VIP, and a request/response protocol (DNS, the reason
/// for `ops`) answers within seconds. Holding such flows for the whole UDP timeout
/// would fill the flow table with one socket per client port.
const ONE_PACKET_REPLY_WINDOW: Duration = Duration::from_secs(10);

thread_local! {
    /// Replies are read into one buffer per worker thread, so a flow owns no buffer
    /// while it waits.
    static REPLY_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

/// A service's flows on one worker, each with the task relaying its replies.
type Flows = Arc<Mutex<HashMap<FlowId, (Arc<UdpFlow>, AbortHandle)>>>;

/// The flows, also after a panic elsewhere (the map stays consistent: every change
/// is one insert or remove).
fn lock(flows: &Flows) -> MutexGuard<'_, HashMap<FlowId, (Arc<UdpFlow>, AbortHandle)>> {
    flows.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which flow a datagram belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowId {
    client: SocketAddr,
    /// The real server of a one-packet service's flow, whose datagrams are scheduled
    /// before their flow is looked up; `None` for a client's only flow.
    upstream: Option<SocketAddr>,
}

/// Where a flow's datagrams are counted.
#[derive(Debug)]
enum Tally {
    /// In the connection table entry of the client, which they keep alive, bound to
    /// `dest`.
    Entry { key: ConnKey, dest: Arc<Dest> },
    /// A one-packet service's flow: each datagram in was counted when it was
    /// scheduled; replies count on the destination.
    OnePacket(Arc<Dest>),
    /// The sorry server, counted as a connection on its destination while the flow
    /// lasts.
    Sorry(ConnGuard),
    /// The sorry server of a one-packet service: counted as [`Tally::OnePacket`].
    OnePacketSorry(Arc<Dest>),
}

/// One client's flow to one real server.
#[derive(Debug)]
struct UdpFlow {
    tally: Tally,
    upstream: UdpSocket,
    activity: LastActivity,
    /// The PROXY protocol header each datagram to the real server starts with.
    proxy_header: Option<Box<[u8]>>,
}

impl UdpFlow {
    /// The datagram to send for the client's `len` bytes, received at
    /// `buf[V2_MAX_HEADER..]`: the PROXY header, if any, is written just before them.
    /// (A datagram of the UDP maximum has no room left for a header: its send fails
    /// with `EMSGSIZE` and it is dropped.)
    fn outgoing<'b>(&self, buf: &'b mut [u8], len: usize) -> &'b [u8] {
        framed(buf, self.proxy_header.as_deref().unwrap_or_default(), len)
    }
}

/// `len` bytes received at `buf[V2_MAX_HEADER..]`, with `header` (at most
/// `V2_MAX_HEADER` bytes, as every PROXY header is) written just before them.
fn framed<'b>(buf: &'b mut [u8], header: &[u8], len: usize) -> &'b [u8] {
    let start = V2_MAX_HEADER - header.len();
    buf[start..V2_MAX_HEADER].copy_from_slice(header);
    &buf[start..V2_MAX_HEADER + len]
}

/// One worker's share of a service: its socket and flows.
struct Worker {
    svc: Arc<VirtualService>,
    socket: Arc<UdpSocket>,
    flows: Flows,
    /// Owned here, so aborting the worker's task (the service removed) ends every
    /// flow too.
    replies: JoinSet<()>,
    /// Whether no real server was available, as last found for a flow on the sorry
    /// server.
    sorry_check: Option<SorryCheck>,
}

/// How often a flow on the sorry server looks at the pool again when the service was
/// not edited: a real server's thresholds free up without an edit.
const SORRY_RECHECK: Duration = Duration::from_millis(100);

/// The last look at the pool for flows on the sorry server. Every datagram of such a
/// flow asks whether a real server is available again; the answer is taken from the
/// pool (a scan of every real server) only after an edit of the service or once per
/// [`SORRY_RECHECK`].
#[derive(Clone, Copy)]
struct SorryCheck {
    edits: u64,
    at: Instant,
    none_available: bool,
}

/// Receives the clients' datagrams of `svc` on `socket` until the task is aborted.
pub(crate) async fn serve(socket: UdpSocket, svc: Arc<VirtualService>) {
    let mut worker = Worker {
        svc,
        socket: Arc::new(socket),
        flows: Arc::default(),
        replies: JoinSet::new(),
        sorry_check: None,
    };
    // Room before the datagram for a PROXY protocol header.
    let mut buf = vec![0; V2_MAX_HEADER + MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            received = worker.socket.recv_from(&mut buf[V2_MAX_HEADER..]) => received,
            Some(_) = worker.replies.join_next() => continue,
        };
        let (len, client) = match received {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(service = %worker.svc.vip(), "receive failed: {e}");
                continue;
            }
        };
        let datagram = &buf[V2_MAX_HEADER..V2_MAX_HEADER + len];
        let flow = if worker.svc.one_packet() {
            worker.one_packet_flow(client, datagram).await
        } else {
            worker.client_flow(client, datagram).await
        };
        let flow = match flow {
            Ok(flow) => flow,
            Err(why) => {
                worker.svc.warn_refused(client, why);
                continue;
            }
        };
        let _ = flow.activity.touch();
        let datagram = flow.outgoing(&mut buf, len);
        // A new socket's writability is only known after the first event: wait for
        // it rather than drop. A full buffer later on drops, as a network would.
        let sent = match flow.upstream.try_send(datagram) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(SEND_PATIENCE, flow.upstream.send(datagram))
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

impl Worker {
    /// The flow of `client`'s `datagram`, counted: the client's flow, or a new one when
    /// it has none or its table entry expired (or was flushed).
    async fn client_flow(
        &mut self,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Result<Arc<UdpFlow>, Refusal> {
        let len = datagram.len();
        let id = FlowId {
            client,
            upstream: None,
        };
        if let Some(flow) = self.counted_existing(id, len) {
            return Ok(flow);
        }
        self.ensure_room()?;
        match self
            .svc
            .schedule(&Flow::new(client, self.svc.vip()), datagram)
        {
            Ok(Binding {
                key: Some(key),
                target,
                dest,
            }) => {
                let flow = self.open(id, target, Tally::Entry { key, dest }).await?;
                counted(&self.svc, &flow, Direction::Input, len);
                Ok(flow)
            }
            Err(Unscheduled::EngineRefused) => Err(Refusal::NoEngineKey),
            _ => self.sorry_flow(id, len).await,
        }
    }

    /// One-packet scheduling: the datagram is scheduled (and counted) on its own, then
    /// goes through the flow of its client and real server, opened if need be, so
    /// that replies still reach the client from the VIP.
    async fn one_packet_flow(
        &mut self,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Result<Arc<UdpFlow>, Refusal> {
        let len = datagram.len();
        // A flow from before the service became one-packet (`-E -o`) goes on until it
        // expires, as the kernel goes on finding its entry in the table.
        let before = FlowId {
            client,
            upstream: None,
        };
        if let Some(flow) = self.counted_existing(before, len) {
            return Ok(flow);
        }
        let flow = Flow::new(client, self.svc.vip());
        let (target, tally) = match self.svc.schedule_one_packet(&flow, datagram) {
            Ok(binding) => (binding.target, Tally::OnePacket(binding.dest)),
            Err(Unscheduled::EngineRefused) => return Err(Refusal::NoEngineKey),
            Err(Unscheduled::NoDestination) => {
                let sorry = self.svc.sorry_binding().ok_or(Refusal::Unavailable)?;
                self.svc.one_packet_on_sorry_server(&sorry.dest, len);
                (sorry.target, Tally::OnePacketSorry(sorry.dest))
            }
        };
        let id = FlowId {
            client,
            upstream: Some(target),
        };
        match self.bound(id) {
            Some(flow) => Ok(flow),
            None => {
                self.ensure_room()?;
                self.open(id, target, tally).await
            }
        }
    }

    /// A new flow `id` to the sorry server, with its first datagram of `len` bytes
    /// counted.
    async fn sorry_flow(&mut self, id: FlowId, len: usize) -> Result<Arc<UdpFlow>, Refusal> {
        let sorry = self.svc.sorry_binding().ok_or(Refusal::Unavailable)?;
        self.ensure_room()?;
        let tally = Tally::Sorry(
            self.svc
                .connect_sorry_server(&sorry.dest, SorryCount::AlsoOnService),
        );
        let flow = self.open(id, sorry.target, tally).await?;
        counted(&self.svc, &flow, Direction::Input, len);
        Ok(flow)
    }

    /// Flow `id` with a datagram of `len` bytes counted on it, unless it does not exist,
    /// is no longer bound ([`Worker::bound`]) or its table entry is gone.
    fn counted_existing(&mut self, id: FlowId, len: usize) -> Option<Arc<UdpFlow>> {
        self.bound(id)
            .filter(|flow| counted(&self.svc, flow, Direction::Input, len))
    }

    /// Flow `id`, if it exists and may carry its client's next datagram: its real server
    /// is still in the service, or, on the sorry server, no real server is available
    /// yet. A flow that may not is ended (with its table entry), so that the datagram is
    /// scheduled afresh: a removed real server is left at once, as IPVS does with
    /// `expire_nodest_conn`, rather than kept for as long as the client keeps talking.
    fn bound(&mut self, id: FlowId) -> Option<Arc<UdpFlow>> {
        let flow = lock(&self.flows)
            .get(&id)
            .map(|(flow, _)| Arc::clone(flow))?;
        let bound = match &flow.tally {
            Tally::Entry { dest, .. } | Tally::OnePacket(dest) => dest.in_pool(),
            Tally::Sorry(_) | Tally::OnePacketSorry(_) => self.no_real_server_available(),
        };
        if bound {
            return Some(flow);
        }
        if let Tally::Entry { key, .. } = &flow.tally {
            self.svc.forget(key);
        }
        let ended = lock(&self.flows).remove(&id);
        if let Some((_, relay)) = ended {
            relay.abort();
        }
        None
    }

    /// Whether no real server is available, from the pool when it may have changed
    /// ([`SorryCheck`]).
    fn no_real_server_available(&mut self) -> bool {
        let edits = self.svc.edits();
        let now = Instant::now();
        match self.sorry_check {
            Some(last) if last.edits == edits && now < last.at + SORRY_RECHECK => {
                last.none_available
            }
            _ => {
                let none_available = self.svc.no_real_server_available();
                self.sorry_check = Some(SorryCheck {
                    edits,
                    at: now,
                    none_available,
                });
                none_available
            }
        }
    }

    fn ensure_room(&self) -> Result<(), Refusal> {
        if lock(&self.flows).len() >= MAX_FLOWS {
            return Err(Refusal::FlowTableFull);
        }
        Ok(())
    }

    /// Connects a socket to `target` for flow `id` and starts relaying the replies.
    async fn open(
        &mut self,
        id: FlowId,
        target: SocketAddr,
        tally: Tally,
    ) -> Result<Arc<UdpFlow>, Refusal> {
        let upstream = match connected_socket(target).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(real_server = %target, "cannot open a UDP flow: {e}");
                if let Tally::Entry { key, .. } = &tally {
                    self.svc.forget(key);
                }
                return Err(Refusal::Unavailable);
            }
        };
        let proxy_header = match self.svc.options().proxy_protocol {
            Some(ProxyProtocol::V2) => Some(
                ProxyProtocol::V2
                    .header(Transport::Datagram, id.client, self.svc.vip())
                    .into_boxed_slice(),
            ),
            Some(ProxyProtocol::V1) | None => None,
        };
        let flow = Arc::new(UdpFlow {
            tally,
            upstream,
            activity: LastActivity::new(),
            proxy_header,
        });
        let relay = self.replies.spawn(relay_replies(
            Arc::clone(&self.svc),
            Arc::clone(&self.socket),
            Arc::clone(&self.flows),
            id,
            Arc::clone(&flow),
        ));
        let replaced = lock(&self.flows).insert(id, (Arc::clone(&flow), relay));
        // A flow whose table entry expired or was flushed is replaced: its socket and
        // its replies end here rather than at its idle timeout.
        if let Some((_, relay)) = replaced {
            relay.abort();
        }
        Ok(flow)
    }
}

/// Counts a datagram of `flow`; false when its table entry is gone.
fn counted(svc: &VirtualService, flow: &UdpFlow, dir: Direction, len: usize) -> bool {
    match &flow.tally {
        Tally::Entry { key, .. } => svc.udp_datagram(key, dir, len),
        Tally::OnePacket(dest) | Tally::OnePacketSorry(dest) => {
            // Datagrams in were counted as they were scheduled.
            if dir == Direction::Output {
                svc.untracked_datagram(dest, dir, len);
            }
            true
        }
        Tally::Sorry(sorry) => {
            svc.untracked_datagram(sorry.dest(), dir, len);
            true
        }
    }
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
    id: FlowId,
    flow: Arc<UdpFlow>,
) {
    let client = id.client;
    let udp_timeout = svc.conn_settings().timeouts.udp();
    let mut idle = IdleTimer::new(match flow.tally {
        Tally::OnePacket(_) | Tally::OnePacketSorry(_) => udp_timeout.min(ONE_PACKET_REPLY_WINDOW),
        _ => udp_timeout,
    });
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
    let mut flows = lock(&flows);
    if flows.get(&id).is_some_and(|(f, _)| Arc::ptr_eq(f, &flow)) {
        flows.remove(&id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_header_fits_before_the_largest_datagram() {
        let client: SocketAddr = "[2001:db8::1]:5353".parse().unwrap();
        let vip: SocketAddr = "[2001:db8::53]:53".parse().unwrap();
        let header = ProxyProtocol::V2.header(Transport::Datagram, client, vip);
        let mut buf = vec![0; V2_MAX_HEADER + MAX_DATAGRAM];
        buf[V2_MAX_HEADER..].fill(7);
        let datagram = framed(&mut buf, &header, MAX_DATAGRAM);
        assert_eq!(datagram.len(), header.len() + MAX_DATAGRAM);
        assert_eq!(&datagram[..header.len()], &header[..]);
        assert!(datagram[header.len()..].iter().all(|&b| b == 7));
    }

    #[test]
    fn without_a_header_the_datagram_goes_as_received() {
        let mut buf = vec![0; V2_MAX_HEADER + 3];
        buf[V2_MAX_HEADER..].copy_from_slice(b"abc");
        assert_eq!(framed(&mut buf, &[], 3), b"abc");
    }
}
