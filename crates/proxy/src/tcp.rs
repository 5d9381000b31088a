//! TCP services: accepting clients, choosing and connecting a real server (moving on
//! to the next when one refuses or times out), and relaying.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keeplb_balancer::{ConnGuard, ConnKey, Direction, Flow, Stats, TcpFlags, Unscheduled};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::proxy_protocol::Transport;
use crate::relay::{self, RelayEnd, RelayObserver};
use crate::service::{Binding, Refusal, ServiceOptions, SorryCount, VirtualService};

/// Pause after a failed accept (descriptors exhausted, say) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts clients of `svc` on `listener` until the task is aborted (the service was
/// removed: connections already made go on and drain).
pub(crate) async fn accept_loop(listener: TcpListener, svc: Arc<VirtualService>) {
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
                tokio::spawn(serve(Arc::clone(&svc), client, Flow::new(peer, vip)));
            }
            Err(e) => {
                tracing::warn!(service = %svc.vip(), "accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One client connection, from scheduling to the end of the relay.
async fn serve(svc: Arc<VirtualService>, client: TcpStream, flow: Flow) {
    let _ = client.set_nodelay(true);
    let options = svc.options();
    let (server, binding, mut sorry_guard) = match connect_upstream(&svc, &flow, &options).await {
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
    if let Some(version) = options.proxy_protocol {
        let header = version.header(Transport::Stream, flow.client, flow.vip);
        if let Err(e) = relay::write_all(&server, &header).await {
            tracing::debug!(real_server = %binding.target, "PROXY header not sent: {e}");
            close_failed(&svc, binding.key.as_ref(), &client, &server);
            return;
        }
    }
    let tally = Tally::new(&svc, &binding);
    let idle_timeout = svc.idle_timeout();
    match relay::relay(&client, &server, &tally, idle_timeout).await {
        RelayEnd::Closed => {}
        RelayEnd::Idle => {
            tracing::debug!(client = %flow.client, "idle for {idle_timeout:?}; closing");
            close_failed(&svc, binding.key.as_ref(), &client, &server);
        }
        RelayEnd::Failed(e) => {
            tracing::debug!(client = %flow.client, real_server = %binding.target, "relay ended: {e}");
            close_failed(&svc, binding.key.as_ref(), &client, &server);
        }
    }
}

/// Connects to the scheduler's choice, then to the next ones while connects fail,
/// then to the sorry server, which has no table entry: a guard counts a connection to
/// it instead. Why not, when nothing answered.
async fn connect_upstream(
    svc: &VirtualService,
    flow: &Flow,
    options: &ServiceOptions,
) -> Result<(TcpStream, Binding, Option<ConnGuard>), Refusal> {
    let mut tried = Vec::new();
    // A SYN carries nothing for a persistence engine to read.
    let mut next = match svc.schedule(flow, &[]) {
        Ok(binding) => Some(binding),
        Err(Unscheduled::EngineRefused) => return Err(Refusal::NoEngineKey),
        Err(Unscheduled::NoDestination) => None,
    };
    while let Some(binding) = next {
        match connect(binding.target, options.connect_timeout).await {
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
    match connect(sorry.target, options.connect_timeout).await {
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

async fn connect(target: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let stream = tokio::time::timeout(timeout, socket.connect(target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Ends a connection that did not close in order: both sides get a reset and the
/// entry goes to CLOSE, as a reset would put it in IPVS.
fn close_failed(
    svc: &VirtualService,
    key: Option<&ConnKey>,
    client: &TcpStream,
    server: &TcpStream,
) {
    relay::reset_on_close(client);
    relay::reset_on_close(server);
    if let Some(key) = key {
        svc.tcp_event(key, Direction::Input, TcpFlags::RST);
    }
}

/// Feeds the relay's progress to the statistics and the connection table.
///
/// Traffic is counted here and added to the shared statistics once a second and at
/// the end (rates are estimated over 2 s, so nothing reads them finer), which keeps
/// atomic operations on counters shared by every worker off the per-read path. The
/// same once-a-second tick keeps the table entry alive.
struct Tally<'a> {
    svc: &'a VirtualService,
    binding: &'a Binding,
    service_stats: Arc<Stats>,
    /// Unflushed packets and bytes, per direction (input, output); each direction has
    /// one writer, its pump, so plain loads and stores suffice.
    pending: [(AtomicU64, AtomicU64); 2],
    /// Second of the relay (since it started) of the last flush.
    flushed_at: AtomicU64,
}

impl<'a> Tally<'a> {
    fn new(svc: &'a VirtualService, binding: &'a Binding) -> Self {
        Self {
            svc,
            binding,
            service_stats: Arc::clone(svc.stats()),
            pending: Default::default(),
            flushed_at: AtomicU64::new(0),
        }
    }

    /// Adds what was counted to the shared statistics.
    fn flush(&self) {
        let dest = self.binding.dest.stats();
        for (index, (packets, bytes)) in self.pending.iter().enumerate() {
            let (packets, bytes) = (
                packets.swap(0, Ordering::Relaxed),
                bytes.swap(0, Ordering::Relaxed),
            );
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

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl RelayObserver for Tally<'_> {
    fn moved(&self, dir: Direction, bytes: usize, elapsed: Duration) {
        // IPVS counts packets; a proxy sees reads, and counts each as one packet.
        let (packets, total) = &self.pending[usize::from(dir == Direction::Output)];
        packets.store(packets.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        total.store(
            total.load(Ordering::Relaxed).saturating_add(bytes),
            Ordering::Relaxed,
        );
        let second = elapsed.as_secs();
        if self.flushed_at.load(Ordering::Relaxed) != second {
            self.flushed_at.store(second, Ordering::Relaxed);
            self.flush();
            if let Some(key) = &self.binding.key {
                self.svc.refresh(key);
            }
        }
    }

    fn half_closed(&self, dir: Direction) {
        if let Some(key) = &self.binding.key {
            self.svc.tcp_event(key, dir, TcpFlags::FIN_ACK);
        }
    }
}
