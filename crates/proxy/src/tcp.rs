//! TCP services: accepting clients, choosing and connecting a real server (moving on
//! to the next when one refuses or times out), and relaying.

use std::io;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use keeplb_balancer::{ConnGuard, ConnKey, Direction, Flow, Stats, TcpFlags, Unscheduled};
use tokio::net::{TcpListener, TcpStream};

use crate::hub::{Connecting, RelayHub, RelayOwner};
use crate::proxy_protocol::Transport;
use crate::relay::{self, RelayEnd, RelayObserver};
use crate::service::{Binding, Refusal, ServiceOptions, SorryCount, VirtualService};

/// Pause after a failed accept (descriptors exhausted, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts clients of `svc` on `listener` until the task is aborted (the service was
/// removed: connections already made go on and drain). Established connections are
/// relayed by the worker's `hub`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    svc: Arc<VirtualService>,
    hub: Arc<RelayHub>,
) {
    let wildcard = svc.vip().ip().is_unspecified();
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                // Without a wildcard address the VIP is known; asking the kernel would
                // cost a system call per connection.
                let vip = if wildcard {
                    client.local_addr().unwrap_or(svc.vip())
                } else {
                    svc.vip()
                };
                let flow = Flow::new(peer, vip);
                tokio::spawn(serve(Arc::clone(&svc), client, flow, Arc::clone(&hub)));
            }
            Err(e) => {
                tracing::warn!(service = %svc.vip(), "accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client connection, from scheduling to handing it to the hub.
async fn serve(svc: Arc<VirtualService>, client: TcpStream, flow: Flow, hub: Arc<RelayHub>) {
    let _ = client.set_nodelay(true);
    let options = svc.options();
    let upstream = connect_upstream(&svc, &flow, &options, &hub).await;
    let (server, binding, mut sorry_guard) = match upstream {
        Ok(upstream) => upstream,
        Err(why) => {
            svc.warn_refused(flow.client, why);
            relay::reset_on_close(&client);
            return;
        }
    };
    if let Some(guard) = &mut sorry_guard {
        guard.established();
    }
    if let Some(key) = &binding.key {
        svc.established(key);
    }
    let preamble = options
        .proxy_protocol
        .map(|version| version.header(Transport::Stream, flow.client, flow.vip))
        .unwrap_or_default();
    let client = match client.into_std() {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!(client = %flow.client, real_server = %binding.target, "cannot hand the connection to the relay: {e}");
            // As close_failed: both sides get a reset, the entry goes to CLOSE.
            server.reset();
            if let Some(key) = &binding.key {
                svc.tcp_event(key, Direction::Input, TcpFlags::RST);
            }
            return;
        }
    };
    let idle_timeout = svc.idle_timeout();
    let connection = Established::new(svc, binding, sorry_guard, flow.client, idle_timeout);
    hub.start(client, server, preamble, Box::new(connection), idle_timeout);
}

/// Connects to the scheduler's choice, then to the next ones while connects fail,
/// then to the sorry server, which has no table entry: a guard counts a connection to
/// it instead. Why not, when nothing answered.
async fn connect_upstream(
    svc: &VirtualService,
    flow: &Flow,
    options: &ServiceOptions,
    hub: &Arc<RelayHub>,
) -> Result<(Connecting, Binding, Option<ConnGuard>), Refusal> {
    let mut tried = Vec::new();
    // A SYN carries nothing for a persistence engine to read.
    let mut next = match svc.schedule(flow, &[]) {
        Ok(binding) => Some(binding),
        Err(Unscheduled::EngineRefused) => return Err(Refusal::NoEngineKey),
        Err(Unscheduled::NoDestination) => None,
    };
    while let Some(binding) = next {
        match connect(hub, binding.target, options.connect_timeout).await {
            Ok(stream) => return Ok((stream, binding, None)),
            Err(e) if real_server_failed(&e) => {
                tracing::debug!(
                    service = %svc.vip(),
                    real_server = %binding.target,
                    "connect failed: {e}; trying the next real server"
                );
                tried.push(binding.dest.addr());
                next = binding.key.and_then(|key| svc.reschedule(&key, &tried));
            }
            Err(e) => {
                // Our own failure (descriptors, ports): no other real server would do
                // better, and this one must not lose its persistent clients for it.
                tracing::warn!(service = %svc.vip(), "cannot connect to a real server: {e}");
                if let Some(key) = &binding.key {
                    svc.forget(key);
                }
                return Err(Refusal::Unavailable);
            }
        }
    }
    let sorry = svc.sorry_binding().ok_or(Refusal::Unavailable)?;
    match connect(hub, sorry.target, options.connect_timeout).await {
        Ok(stream) => {
            let count = if tried.is_empty() {
                SorryCount::AlsoOnService
            } else {
                SorryCount::SorryOnly
            };
            let guard = svc.connect_sorry_server(&sorry.dest, count);
            Ok((stream, sorry, Some(guard)))
        }
        Err(e) => {
            tracing::debug!(sorry_server = %sorry.target, "connect failed: {e}");
            Err(Refusal::Unavailable)
        }
    }
}

/// Whether a connect error says the real server (or the path to it) is down, so the
/// next one should be tried.
fn real_server_failed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

async fn connect(
    hub: &Arc<RelayHub>,
    target: SocketAddr,
    timeout: Duration,
) -> io::Result<Connecting> {
    let mut connecting = hub.connect(target)?;
    tokio::time::timeout(timeout, connecting.established())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(connecting)
}

/// Ends a connection that did not close in order: both sides get a reset and the
/// entry goes to CLOSE, as a reset would put it in IPVS.
fn close_failed(
    svc: &VirtualService,
    key: Option<&ConnKey>,
    client: &impl AsFd,
    server: &impl AsFd,
) {
    relay::reset_on_close(client);
    relay::reset_on_close(server);
    if let Some(key) = key {
        svc.tcp_event(key, Direction::Input, TcpFlags::RST);
    }
}

/// An established connection in the hub: feeds the relay's progress to the statistics
/// and the connection table, and closes it as it ended.
///
/// Traffic is counted here and added to the shared statistics once a second and at
/// the end (rates are estimated over 2 s, so nothing reads them finer), which keeps
/// atomic operations on counters shared by every worker off the per-read path. The
/// same once-a-second tick keeps the table entry alive.
struct Established {
    svc: Arc<VirtualService>,
    binding: Binding,
    /// Counts a connection to the sorry server while it lasts.
    _sorry_guard: Option<ConnGuard>,
    client: SocketAddr,
    idle_timeout: Duration,
    service_stats: Arc<Stats>,
    /// Unflushed packets and bytes, per direction (input, output).
    pending: [(u64, u64); 2],
    /// Second of the relay (since it started) of the last flush.
    flushed_at: u64,
}

impl Established {
    fn new(
        svc: Arc<VirtualService>,
        binding: Binding,
        sorry_guard: Option<ConnGuard>,
        client: SocketAddr,
        idle_timeout: Duration,
    ) -> Self {
        let service_stats = Arc::clone(svc.stats());
        Self {
            svc,
            binding,
            _sorry_guard: sorry_guard,
            client,
            idle_timeout,
            service_stats,
            pending: Default::default(),
            flushed_at: 0,
        }
    }

    /// Adds what was counted to the shared statistics.
    fn flush(&mut self) {
        let dest = self.binding.dest.stats();
        for (index, (packets, bytes)) in self.pending.iter_mut().enumerate() {
            let (packets, bytes) = (std::mem::take(packets), std::mem::take(bytes));
            if packets == 0 {
                continue;
            }
            if index == 0 {
                dest.count_in_batch(packets, bytes);
                self.service_stats.count_in_batch(packets, bytes);
            } else {
                dest.count_out_batch(packets, bytes);
                self.service_stats.count_out_batch(packets, bytes);
            }
        }
    }
}

impl Drop for Established {
    fn drop(&mut self) {
        self.flush();
    }
}

impl RelayObserver for Established {
    fn moved(&mut self, dir: Direction, bytes: usize, elapsed: Duration) {
        // IPVS counts packets; a proxy sees reads, and counts each as one packet.
        let (packets, total) = &mut self.pending[usize::from(dir == Direction::Output)];
        *packets += 1;
        *total = total.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
        let second = elapsed.as_secs();
        if self.flushed_at != second {
            self.flushed_at = second;
            self.flush();
            if let Some(key) = &self.binding.key {
                self.svc.refresh(key);
            }
        }
    }

    fn half_closed(&mut self, dir: Direction) {
        if let Some(key) = &self.binding.key {
            self.svc.tcp_event(key, dir, TcpFlags::FIN_ACK);
        }
    }
}

impl RelayOwner for Established {
    fn ended(self: Box<Self>, end: RelayEnd, client: &StdTcpStream, server: &StdTcpStream) {
        match end {
            RelayEnd::Closed => return,
            RelayEnd::Idle => {
                tracing::debug!(client = %self.client, "idle for {:?}; closing", self.idle_timeout);
            }
            RelayEnd::Failed(e) => {
                tracing::debug!(client = %self.client, real_server = %self.binding.target, "relay ended: {e}");
            }
        }
        close_failed(&self.svc, self.binding.key.as_ref(), client, server);
    }
}
