//! The relays of one worker thread, driven straight from an epoll set of their own.
//!
//! Why not one async task per connection: with small requests and responses, most of
//! the proxy's own (user-space) time per request went to the async machinery, twice
//! per request: the reactor waking the connection's task, the scheduler running it,
//! the future checking readiness through its registration and re-arming it. Here a
//! worker has one hub task. Its epoll descriptor sits in tokio's reactor like any
//! other socket; when it is ready the hub takes the events itself and moves the bytes
//! at once, one clock read per batch. Accepting and scheduling stay async; the real
//! server's socket is created here and connected from the hub's epoll set (its
//! connect awaited by the connection's task), so it never enters tokio's reactor.
//!
//! Idle timeouts are a heap of deadlines, looked at once per batch and whenever the
//! earliest one falls due. A deadline is checked against the connection's last
//! activity when it falls due, so moving data never touches the heap.
//!
//! A relay moves a bounded amount per turn; one with more to move waits for the next
//! turn in a queue of its own (epoll, edge-triggered, would not report it again), so
//! one fast transfer cannot hold the worker's other connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll as TaskPoll, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::relay::{Readiness, Relay, RelayEnd, RelayObserver};

/// Events taken per batch; a full batch yields to the worker's other tasks before
/// the next.
const BATCH: usize = 256;

/// Stale idle deadlines (of relays already over) tolerated beyond the live ones
/// before the heap is swept.
const STALE_DEADLINES: usize = 1024;

/// The connection a relay belongs to: it is told what moves and how the relay ended,
/// and is dropped with it.
pub(crate) trait RelayOwner: RelayObserver + Send {
    /// The relay is over; the sockets are closed once this returns.
    fn ended(self: Box<Self>, end: RelayEnd, client: &TcpStream, server: &TcpStream);
}

/// One worker's relays. Created on the worker's thread, run by [`RelayHub::run`].
pub(crate) struct RelayHub {
    state: Mutex<HubState>,
    /// False once [`RelayHub::run`] gave up: nothing would drive a new relay.
    running: AtomicBool,
}

impl std::fmt::Debug for RelayHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayHub").finish_non_exhaustive()
    }
}

struct HubState {
    poll: Poll,
    events: Events,
    ready: Vec<(Token, Readiness)>,
    /// Relays by slot.
    relays: Vec<Slot>,
    free: Vec<usize>,
    /// Relays that stopped at their share of a turn with more to move.
    again: Vec<(usize, u32)>,
    /// (deadline, slot, generation), for relays and for those already over: a slot
    /// reused since is recognised by its generation.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Relays (not connects) in `relays`.
    live: usize,
    generations: u32,
}

/// What a slot holds. Its sockets' epoll tokens carry the slot, the side and the
/// generation ([`token`]), so an event for a socket of an earlier occupant (still
/// open in a child between fork and exec) is recognised and dropped.
enum Slot {
    Vacant,
    /// A real server's socket connecting, before its relay starts.
    Connecting {
        generation: u32,
        /// Events seen so far (the first one ends the connect).
        seen: Option<Readiness>,
        waker: Option<Waker>,
    },
    Relaying(Box<Entry>),
}

impl Slot {
    fn generation(&self) -> Option<u32> {
        match self {
            Slot::Vacant => None,
            Slot::Connecting { generation, .. } => Some(*generation),
            Slot::Relaying(entry) => Some(entry.generation),
        }
    }
}

struct Entry {
    relay: Relay,
    owner: Box<dyn RelayOwner>,
    started: Instant,
    last_active: Instant,
    idle_timeout: Duration,
    generation: u32,
}

/// Side 0 is the client, side 1 the real server.
fn token(slot: usize, side: usize, generation: u32) -> Token {
    Token((usize::try_from(generation).unwrap_or(0) << 32) | (slot << 1) | side)
}

/// (slot, side, generation) of a token.
fn untoken(token: Token) -> (usize, usize, u32) {
    let Token(raw) = token;
    let generation = u32::try_from(raw >> 32).unwrap_or(u32::MAX);
    ((raw & 0xffff_ffff) >> 1, raw & 1, generation)
}

impl RelayHub {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        let poll = Poll::new()?;
        Ok(Arc::new(Self {
            state: Mutex::new(HubState {
                poll,
                events: Events::with_capacity(BATCH),
                ready: Vec::with_capacity(BATCH),
                relays: Vec::new(),
                free: Vec::new(),
                again: Vec::new(),
                deadlines: BinaryHeap::new(),
                live: 0,
                generations: 0,
            }),
            running: AtomicBool::new(true),
        }))
    }

    /// Starts connecting to `target`, from this hub's epoll set, where the socket
    /// stays for its relay: it never enters tokio's reactor.
    pub(crate) fn connect(self: &Arc<Self>, target: SocketAddr) -> io::Result<Connecting> {
        if !self.running.load(Ordering::Relaxed) {
            return Err(io::Error::other("the worker's relay hub has stopped"));
        }
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let socket = TcpStream::from(socket);
        let mut state = self.state();
        let (slot, generation) = state.vacant_slot();
        state
            .poll
            .registry()
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                token(slot, 1, generation),
                Interest::READABLE | Interest::WRITABLE,
            )
            .inspect_err(|_| state.free.push(slot))?;
        state.relays[slot] = Slot::Connecting {
            generation,
            seen: None,
            waker: None,
        };
        Ok(Connecting {
            hub: Arc::clone(self),
            slot,
            socket: Some(socket),
        })
    }

    /// Relays between `client` (non-blocking, in no other reactor) and the real
    /// server `connected` to until both have closed, one fails, or nothing has moved
    /// for `idle_timeout`; then tells `owner` how it ended. `preamble` goes to the real
    /// server before anything from the client (a PROXY protocol header).
    pub(crate) fn start(
        &self,
        client: TcpStream,
        mut connected: Connecting,
        preamble: Vec<u8>,
        owner: Box<dyn RelayOwner>,
        idle_timeout: Duration,
    ) {
        let slot = connected.slot;
        let Some(server) = connected.socket.take() else {
            return;
        };
        let now = Instant::now();
        let mut state = self.state();
        let (generation, seen) = match std::mem::replace(&mut state.relays[slot], Slot::Vacant) {
            Slot::Connecting {
                generation, seen, ..
            } => (generation, seen.unwrap_or_default()),
            _ => (0, Readiness::default()),
        };
        let registered = state.poll.registry().register(
            &mut SourceFd(&client.as_raw_fd()),
            token(slot, 0, generation),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            state.free.push(slot);
            drop(state);
            owner.ended(RelayEnd::Failed(e), &client, &server);
            return;
        }
        state
            .deadlines
            .push(Reverse((now + idle_timeout, slot, generation)));
        let mut relay = Relay::new(client, server, preamble);
        // What the real server's socket reported while connecting (data, if it
        // speaks first) is not lost.
        relay.ends[1].saw(seen);
        state.relays[slot] = Slot::Relaying(Box::new(Entry {
            relay,
            owner,
            started: now,
            last_active: now,
            idle_timeout,
            generation,
        }));
        state.live += 1;
        // The client may have sent its request while the real server was connecting.
        state.advance(slot, now);
        // No need to wake the hub for a deadline earlier than its timer's: a socket
        // just registered for writability raises an event at once, and the hub re-arms
        // its timer after every batch.
    }

    /// Drives the relays: takes epoll's events as they come and ends idle relays.
    /// Runs until the worker's runtime stops.
    pub(crate) async fn run(self: Arc<Self>) {
        if let Err(e) = self.drive().await {
            self.running.store(false, Ordering::Relaxed);
            tracing::error!(
                "the relay hub cannot wait for its sockets: {e}; the worker relays no more TCP connections"
            );
        }
    }

    async fn drive(&self) -> io::Result<()> {
        let ready = self.reactor_registration()?;
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let next = self.state().next_deadline();
            if let Some(deadline) = next.filter(|&deadline| armed != Some(deadline)) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            tokio::select! {
                biased;
                guard = ready.readable() => {
                    let mut guard = guard?;
                    let more = {
                        let mut state = self.state();
                        state.turn() == BATCH || !state.again.is_empty()
                    };
                    if more {
                        // Readiness is kept: the next turn comes once the worker's
                        // other tasks had theirs.
                        drop(guard);
                        tokio::task::yield_now().await;
                    } else {
                        guard.clear_ready();
                    }
                }
                () = &mut timer, if next.is_some() => {
                    armed = None;
                    self.state().expire(Instant::now());
                }
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hub's epoll set, in tokio's reactor: a descriptor of its own (a duplicate)
    /// that becomes readable when any relay socket has an event.
    #[allow(unsafe_code)]
    fn reactor_registration(&self) -> io::Result<AsyncFd<OwnedFd>> {
        let state = self.state();
        // SAFETY: the descriptor is the open epoll set of `state.poll`, which the guard
        // keeps alive for as long as the borrow is used.
        let epoll = unsafe { BorrowedFd::borrow_raw(state.poll.as_raw_fd()) };
        let epoll = epoll.try_clone_to_owned()?;
        drop(state);
        // SAFETY: the AsyncFd owns the duplicate, so it stays open and the same file
        // until the AsyncFd itself closes it.
        let registered =
            unsafe { AsyncFd::register_with_interest(epoll, tokio::io::Interest::READABLE) };
        registered.map_err(io::Error::from)
    }
}

impl HubState {
    /// Advances the relays left with more to move, then takes what epoll has now and
    /// advances the relays it names; the number of events taken.
    fn turn(&mut self) -> usize {
        let now = Instant::now();
        for (slot, generation) in std::mem::take(&mut self.again) {
            if self.relays.get(slot).and_then(Slot::generation) == Some(generation) {
                self.advance(slot, now);
            }
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::warn!("relay hub: epoll failed: {e}");
            }
            return 0;
        }
        // Copied out of the event list: advancing a relay needs `self`.
        let mut ready = std::mem::take(&mut self.ready);
        ready.extend(
            self.events
                .iter()
                .map(|event| (event.token(), readiness(event))),
        );
        for &(token, event) in &ready {
            let (slot, side, generation) = untoken(token);
            let Some(occupant) = self.relays.get_mut(slot) else {
                continue;
            };
            if occupant.generation() != Some(generation) {
                continue;
            }
            match occupant {
                Slot::Relaying(entry) => {
                    entry.relay.ends[side].saw(event);
                    self.advance(slot, now);
                }
                Slot::Connecting { seen, waker, .. } => {
                    seen.get_or_insert_default().merge(event);
                    if let Some(waker) = waker.take() {
                        waker.wake();
                    }
                }
                Slot::Vacant => {}
            }
        }
        let taken = ready.len();
        ready.clear();
        self.ready = ready;
        self.expire(now);
        taken
    }

    /// Moves what `slot`'s relay can move; ends it if it is over.
    fn advance(&mut self, slot: usize, now: Instant) {
        let Some(Slot::Relaying(entry)) = self.relays.get_mut(slot) else {
            return;
        };
        let advance = entry.relay.advance(
            entry.owner.as_mut(),
            now.saturating_duration_since(entry.started),
        );
        if advance.active {
            entry.last_active = now;
        }
        if let Some(end) = advance.end {
            self.finish(slot, end);
        } else if advance.more {
            self.again.push((slot, entry.generation));
        }
    }

    fn finish(&mut self, slot: usize, end: RelayEnd) {
        let Some(taken) = self.relays.get_mut(slot) else {
            return;
        };
        if let Slot::Relaying(entry) = std::mem::replace(taken, Slot::Vacant) {
            self.free.push(slot);
            self.live -= 1;
            // The relay's deadline stays in the heap until it falls due (up to the
            // idle timeout, 15 minutes by default): with many short connections, the
            // stale ones are swept out once they outnumber the live ones.
            if self.deadlines.len() > 2 * self.live + STALE_DEADLINES {
                let relays = &self.relays;
                self.deadlines.retain(|Reverse((_, slot, generation))| {
                    matches!(relays.get(*slot), Some(Slot::Relaying(e)) if e.generation == *generation)
                });
            }
            let [client, server] = &entry.relay.ends;
            // Closing the sockets takes them out of the epoll set.
            entry.owner.ended(end, &client.socket, &server.socket);
        }
    }

    /// A vacant slot and the generation for its next occupant.
    fn vacant_slot(&mut self) -> (usize, u32) {
        self.generations = self.generations.wrapping_add(1);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.relays.push(Slot::Vacant);
            self.relays.len() - 1
        });
        (slot, self.generations)
    }

    /// Ends the relays idle for their timeout; re-arms the others' deadlines from
    /// their last activity.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, slot, generation))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(Slot::Relaying(entry)) = self.relays.get(slot) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            let due = entry.last_active + entry.idle_timeout;
            if due > now {
                self.deadlines.push(Reverse((due, slot, generation)));
            } else {
                self.finish(slot, RelayEnd::Idle);
            }
        }
    }

    /// The earliest deadline, for the hub's timer.
    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .peek()
            .map(|Reverse((deadline, ..))| *deadline)
    }
}

fn readiness(event: &mio::event::Event) -> Readiness {
    Readiness {
        readable: event.is_readable(),
        writable: event.is_writable(),
        read_closed: event.is_read_closed(),
        failed: event.is_error() || event.is_read_closed() && event.is_write_closed(),
    }
}

/// A real server's socket connecting in a hub; [`RelayHub::start`] relays it once
/// [`Connecting::established`]. Dropping it closes the socket.
pub(crate) struct Connecting {
    hub: Arc<RelayHub>,
    slot: usize,
    socket: Option<TcpStream>,
}

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connecting")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl Connecting {
    /// Waits until the connect completed: Ok once connected, the connect's error
    /// otherwise.
    pub(crate) async fn established(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut state = self.hub.state();
            let Some(Slot::Connecting { seen, waker, .. }) = state.relays.get_mut(self.slot) else {
                return TaskPoll::Ready(Err(io::Error::other("connect slot lost")));
            };
            if seen.is_none() {
                *waker = Some(cx.waker().clone());
                return TaskPoll::Pending;
            }
            let socket = self
                .socket
                .as_ref()
                .ok_or_else(|| io::Error::other("no socket"))?;
            TaskPoll::Ready(match socket.take_error()? {
                Some(e) => Err(e),
                None => Ok(()),
            })
        })
        .await
    }

    /// Gives up on the connection with a reset rather than a FIN.
    pub(crate) fn reset(self) {
        if let Some(socket) = &self.socket {
            crate::relay::reset_on_close(socket);
        }
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if self.socket.take().is_some() {
            let mut state = self.hub.state();
            if let Some(slot) = state.relays.get_mut(self.slot) {
                *slot = Slot::Vacant;
                state.free.push(self.slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keeplb_balancer::Direction;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream as AsyncTcpStream};
    use tokio::sync::oneshot;

    use super::*;

    /// How a relay ended, when, bytes moved per direction, and the halves closed.
    type Ended = (String, Instant, [usize; 2], Vec<Direction>);

    /// Records what the hub reports about one relay.
    struct Recorder {
        moved: [usize; 2],
        half_closed: Vec<Direction>,
        ended: Option<oneshot::Sender<Ended>>,
    }

    impl RelayObserver for Recorder {
        fn moved(&mut self, dir: Direction, bytes: usize, _elapsed: Duration) {
            self.moved[usize::from(dir == Direction::Output)] += bytes;
        }

        fn half_closed(&mut self, dir: Direction) {
            self.half_closed.push(dir);
        }
    }

    impl RelayOwner for Recorder {
        fn ended(mut self: Box<Self>, end: RelayEnd, _: &TcpStream, _: &TcpStream) {
            let kind = match end {
                RelayEnd::Closed => "closed".to_string(),
                RelayEnd::Idle => "idle".to_string(),
                RelayEnd::Failed(e) => format!("failed: {e}"),
            };
            let report = (kind, Instant::now(), self.moved, self.half_closed.clone());
            if let Some(ended) = self.ended.take() {
                let _ = ended.send(report);
            }
        }
    }

    type Report = oneshot::Receiver<Ended>;

    /// Sets small fixed buffers, so a test can fill them.
    fn small_buffers(socket: socket2::SockRef<'_>) {
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.set_send_buffer_size(64 * 1024).unwrap();
    }

    /// A client connection and a real server's, the latter connected from the hub,
    /// not yet relayed.
    struct Ends {
        client: AsyncTcpStream,
        client_near: AsyncTcpStream,
        server: AsyncTcpStream,
        server_near: Connecting,
    }

    async fn connect_ends(hub: &Arc<RelayHub>) -> Ends {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = AsyncTcpStream::connect(address).await.unwrap();
        let (client_near, _) = listener.accept().await.unwrap();
        let mut server_near = hub.connect(address).unwrap();
        server_near.established().await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        Ends {
            client,
            client_near,
            server,
            server_near,
        }
    }

    /// Relays `client_near` and `server_near` with a recorder; its report.
    fn relay(
        hub: &RelayHub,
        client_near: AsyncTcpStream,
        server_near: Connecting,
        idle_timeout: Duration,
    ) -> Report {
        let (ended, report) = oneshot::channel();
        let recorder = Recorder {
            moved: [0; 2],
            half_closed: Vec::new(),
            ended: Some(ended),
        };
        let client_near = client_near.into_std().unwrap();
        hub.start(
            client_near,
            server_near,
            Vec::new(),
            Box::new(recorder),
            idle_timeout,
        );
        report
    }

    /// Starts a relay between a new client and a new real server, connected from the
    /// hub, with small buffers; their far ends.
    async fn start(
        hub: &Arc<RelayHub>,
        idle_timeout: Duration,
    ) -> (AsyncTcpStream, AsyncTcpStream, Report) {
        let ends = connect_ends(hub).await;
        small_buffers(socket2::SockRef::from(&ends.client));
        small_buffers(socket2::SockRef::from(&ends.client_near));
        small_buffers(socket2::SockRef::from(&ends.server));
        small_buffers(socket2::SockRef::from(
            ends.server_near.socket.as_ref().unwrap(),
        ));
        let report = relay(hub, ends.client_near, ends.server_near, idle_timeout);
        (ends.client, ends.server, report)
    }

    fn running_hub() -> Arc<RelayHub> {
        let hub = RelayHub::new().unwrap();
        tokio::spawn(Arc::clone(&hub).run());
        hub
    }

    /// Fails a test that waits longer than any of these relays should take.
    async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), what)
            .await
            .expect("the relay got stuck")
    }

    #[tokio::test]
    async fn data_and_fin_sent_together_both_arrive_and_both_halves_close() {
        within(data_and_fin_together()).await;
    }

    async fn data_and_fin_together() {
        let hub = running_hub();
        let (mut client, mut server, report) = start(&hub, Duration::from_secs(60)).await;
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "the data, then the end of stream");
        // The half-closed client still hears the answer.
        server.write_all(b"answer").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"answer");
        let (end, _, moved, half_closed) = report.await.unwrap();
        assert_eq!(end, "closed");
        assert_eq!(moved, [7, 6]);
        assert_eq!(half_closed, [Direction::Input, Direction::Output]);
    }

    #[tokio::test]
    async fn a_sink_that_stops_reading_holds_the_rest_until_it_reads_again() {
        within(stalled_sink()).await;
    }

    async fn stalled_sink() {
        let hub = running_hub();
        let (mut client, mut server, report) = start(&hub, Duration::from_secs(60)).await;
        // Far more than both socket buffers hold: the relay must wait for room.
        let sent: Vec<u8> = (0..8 * 1024 * 1024_u32).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            (client, sent)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !writer.is_finished(),
            "the relay took everything without a reader"
        );
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        let (_client, sent) = writer.await.unwrap();
        assert!(got == sent, "{} bytes arrived of {}", got.len(), sent.len());
        drop(server);
        let (end, _, moved, _) = report.await.unwrap();
        assert_eq!(end, "closed");
        assert_eq!(moved[0], sent.len());
    }

    /// The one relay of `hub` whose deadline the test turns by hand: when it started.
    fn started_at(hub: &RelayHub) -> Instant {
        let state = hub.state();
        let mut relays = state.relays.iter().filter_map(|slot| match slot {
            Slot::Relaying(entry) => Some(entry.started),
            _ => None,
        });
        relays.next().expect("a relay")
    }

    #[tokio::test]
    async fn an_idle_deadline_is_checked_against_the_last_activity() {
        // The hub runs (it connects the real server), but its own timer is 10 s away:
        // the test moves the clock by calling `expire` with instants of its own.
        let hub = running_hub();
        let (_client, _server, mut report) = start(&hub, Duration::from_secs(10)).await;
        let t0 = started_at(&hub);
        {
            let mut state = hub.state();
            for slot in &mut state.relays {
                if let Slot::Relaying(entry) = slot {
                    entry.last_active = t0 + Duration::from_secs(7);
                }
            }
            state.expire(t0 + Duration::from_secs(10));
            assert_eq!(
                state.next_deadline(),
                Some(t0 + Duration::from_secs(17)),
                "re-armed from the activity at 7 s"
            );
        }
        assert!(
            report.try_recv().is_err(),
            "ended at 10 s despite the activity"
        );
        hub.state().expire(t0 + Duration::from_secs(17));
        let (end, ..) = report.try_recv().expect("ended at 17 s");
        assert_eq!(end, "idle");
    }

    #[tokio::test]
    async fn a_relay_with_an_earlier_deadline_ends_on_time_while_the_hub_waits_for_a_later_one() {
        let hub = running_hub();
        let (_client, _server, mut long) = start(&hub, Duration::from_secs(30)).await;
        let started = Instant::now();
        let (_client2, _server2, short) = start(&hub, Duration::from_millis(200)).await;
        let (end, at, ..) = within(short).await.unwrap();
        assert_eq!(end, "idle");
        let after = at - started;
        assert!(
            after >= Duration::from_millis(200) && after < Duration::from_secs(3),
            "ended after {after:?}"
        );
        assert!(long.try_recv().is_err(), "the 30 s relay is still on");
    }

    #[tokio::test]
    async fn deadlines_of_relays_that_ended_are_swept_once_they_outnumber_the_live_ones() {
        let hub = running_hub();
        let (_client, _server, _report) = start(&hub, Duration::from_secs(60)).await;
        {
            // What a burst of short connections leaves: deadlines of relays long over.
            let mut state = hub.state();
            let later = Instant::now() + Duration::from_secs(60);
            for _ in 0..2 * STALE_DEADLINES {
                state.deadlines.push(Reverse((later, 12_345, 7)));
            }
        }
        let (client, server, report) = start(&hub, Duration::from_secs(60)).await;
        drop((client, server));
        let (end, ..) = within(report).await.unwrap();
        assert_eq!(end, "closed");
        assert_eq!(
            hub.state().deadlines.len(),
            1,
            "only the live relay's deadline"
        );
    }

    #[test]
    fn a_token_carries_slot_side_and_generation() {
        for (slot, side, generation) in [(0, 0, 1), (5, 1, 77), (1 << 30, 1, u32::MAX)] {
            assert_eq!(
                untoken(token(slot, side, generation)),
                (slot, side, generation)
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connect_says_so_and_gives_its_slot_back() {
        let hub = running_hub();
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut connecting = hub.connect(nobody).unwrap();
        let refused = within(connecting.established()).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        drop(connecting);
        let state = hub.state();
        assert!(matches!(state.relays[..], [Slot::Vacant]));
        assert_eq!(state.free, [0]);
    }

    #[tokio::test]
    async fn a_real_server_that_speaks_first_is_heard_though_it_spoke_while_connecting() {
        within(banner_before_the_relay()).await;
    }

    async fn banner_before_the_relay() {
        let hub = running_hub();
        let Ends {
            mut client,
            client_near,
            mut server,
            server_near,
        } = connect_ends(&hub).await;
        server.write_all(b"220 ready\r\n").await.unwrap();
        // Wait until the hub took the banner's event for the connecting socket: after
        // that, nothing new happens on it until the client speaks.
        while !matches!(
            hub.state().relays[server_near.slot],
            Slot::Connecting {
                seen: Some(Readiness { readable: true, .. }),
                ..
            }
        ) {
            tokio::task::yield_now().await;
        }
        let _report = relay(&hub, client_near, server_near, Duration::from_secs(60));
        let mut banner = [0; 11];
        client.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"220 ready\r\n");
    }
}
