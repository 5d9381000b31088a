//! Moving bytes between a client and a real server, both directions at once, with
//! half-close, an idle timeout, and zero-copy `splice` once a direction carries bulk
//! data.
//!
//! Each direction is a pump: read what the source has, write it to the sink at once,
//! keep only what the sink would not take. Reads go into one scratch buffer per worker
//! thread, so an idle connection owns no buffer at all (100,000 idle connections cost
//! sockets, not memory). A read that fills the scratch buffer marks the direction as
//! bulk: from then on it is spliced through a kernel pipe instead of copied.
//!
//! Two system-call savings matter for small request/response traffic, where the
//! syscalls are nearly all the cost: a read shorter than the buffer means the socket
//! is drained, so the direction waits for the next readiness event instead of reading
//! again only to get `EAGAIN` (HAProxy does the same); and writes are attempted
//! straight after the read, without waiting for a writability event first.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use keeplb_balancer::Direction;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::activity::{IdleTimer, LastActivity};
use crate::pipe::{self, Pipe};

/// Size of the per-thread scratch buffer, and so of the largest copied read; a read
/// that fills it switches its direction to splicing.
const SCRATCH_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// What the relay reports as it goes: the connection table and the statistics
/// follow from it.
pub(crate) trait RelayObserver {
    /// `bytes` crossed in `dir` (Input: client to real server), `elapsed` after the
    /// relay started.
    fn moved(&self, dir: Direction, bytes: usize, elapsed: Duration);
    /// The sender of `dir` closed its side and the close was passed on.
    fn half_closed(&self, dir: Direction);
}

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both sides closed in order.
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
    /// A socket failed (reset, for instance).
    Failed(io::Error),
}

/// Relays between `client` and `server` until both have closed, one fails, or nothing
/// has moved for `idle_timeout`.
pub(crate) async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    observer: &impl RelayObserver,
    idle_timeout: Duration,
) -> RelayEnd {
    let activity = LastActivity::new();
    Bidirectional {
        client,
        server,
        pumps: [Pump::new(Direction::Input), Pump::new(Direction::Output)],
        observer,
        activity: &activity,
        idle: IdleTimer::new(idle_timeout),
    }
    .await
}

/// Writes all of `bytes` to `to`, waiting for room as needed.
pub(crate) async fn write_all(to: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        match to.try_write(&bytes[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes `stream` with a reset rather than a FIN, so the peer learns the
/// connection failed (as it would through a kernel NAT director).
pub(crate) fn reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Both directions of one connection, driven by hand rather than as two async
/// functions joined: on the data path this saves the state machines' bookkeeping on
/// every wake-up, which is most of the proxy's own (user-space) time per request.
///
/// The idle timer is polled only to arm it and when it has fired: a wake-up for data
/// does not touch the timer wheel.
struct Bidirectional<'a, O> {
    client: &'a TcpStream,
    server: &'a TcpStream,
    pumps: [Pump; 2],
    observer: &'a O,
    activity: &'a LastActivity,
    idle: IdleTimer,
}

impl<O: RelayObserver> Future for Bidirectional<'_, O> {
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.idle.poll_idle(cx, this.activity).is_ready() {
            return Poll::Ready(RelayEnd::Idle);
        }
        let ends = [(this.client, this.server), (this.server, this.client)];
        let mut finished = true;
        for (index, (from, to)) in ends.into_iter().enumerate() {
            let other_done = this.pumps[1 - index].done;
            let pump = &mut this.pumps[index];
            if pump.done {
                continue;
            }
            match pump.poll_pump(cx, from, to, this.observer, this.activity, other_done) {
                Poll::Ready(Ok(())) => pump.done = true,
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEnd::Failed(e)),
                Poll::Pending => finished = false,
            }
        }
        if finished {
            Poll::Ready(RelayEnd::Closed)
        } else {
            Poll::Pending
        }
    }
}

/// One direction: from `from` to `to` until `from` closes, then half-close `to`.
struct Pump {
    dir: Direction,
    /// Bytes read but not yet taken by `to`, and how many of them went since.
    unsent: Vec<u8>,
    sent: usize,
    /// A pipe while the direction carries bulk data (spliced, not copied).
    bulk: Option<Pipe>,
    /// The burst is over: give the pipe back once it is empty.
    bulk_ending: bool,
    done: bool,
}

impl Pump {
    fn new(dir: Direction) -> Self {
        Self {
            dir,
            unsent: Vec::new(),
            sent: 0,
            bulk: None,
            bulk_ending: false,
            done: false,
        }
    }

    /// Moves what can be moved now. Ready(Ok) once `from` closed and the close was
    /// passed on; Pending while waiting for either socket.
    ///
    /// When the other direction is already done (`other_done`), the relay ends with
    /// this one and both sockets are closed at once: the close sends `to` its FIN, so no
    /// `shutdown` call is spent on it (`to` already sent its own FIN, so no data can
    /// come after the close and turn it into a reset).
    fn poll_pump(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        observer: &impl RelayObserver,
        activity: &LastActivity,
        other_done: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Err(e) = ready!(self.poll_flush(cx, to)) {
                return Poll::Ready(Err(e));
            }
            if let Err(e) = ready!(from.poll_read_ready(cx)) {
                return Poll::Ready(Err(e));
            }
            let moved = match self.bulk.as_mut() {
                Some(pipe) => match from.try_io(Interest::READABLE, || pipe.fill(from)) {
                    Ok(moved) => {
                        if moved < SCRATCH_SIZE {
                            self.bulk_ending = true;
                        }
                        moved
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
                None => match self.copy(from, to) {
                    Ok(Some(moved)) => moved,
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                },
            };
            if moved == 0 {
                if let Err(e) = ready!(self.poll_flush(cx, to)) {
                    return Poll::Ready(Err(e));
                }
                if let Some(pipe) = self.bulk.take() {
                    pipe::recycle(pipe);
                }
                if !other_done {
                    match SockRef::from(to).shutdown(Shutdown::Write) {
                        Err(e) if e.kind() != io::ErrorKind::NotConnected => {
                            return Poll::Ready(Err(e));
                        }
                        _ => {}
                    }
                }
                observer.half_closed(self.dir);
                return Poll::Ready(Ok(()));
            }
            let elapsed = activity.touch();
            observer.moved(self.dir, moved, elapsed);
        }
    }

    /// Reads once into the worker's scratch buffer and writes at once what `to` takes;
    /// the rest waits in `unsent`. `None` when `from` had nothing after all. A read
    /// that fills the buffer makes the direction bulk: it is spliced from then on.
    fn copy(&mut self, from: &TcpStream, to: &TcpStream) -> io::Result<Option<usize>> {
        SCRATCH.with_borrow_mut(|buf| {
            let read = match read_draining(from, buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            if read == 0 {
                return Ok(Some(0));
            }
            let written = match to.try_write(&buf[..read]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            self.unsent.extend_from_slice(&buf[written..read]);
            if read == buf.len() {
                // Without a pipe (descriptors exhausted) copying goes on.
                self.bulk = Pipe::take().ok();
                self.bulk_ending = false;
            }
            Ok(Some(read))
        })
    }

    /// Writes out what waits (copied bytes, or bytes in the pipe); Ready once nothing
    /// does.
    fn poll_flush(&mut self, cx: &mut Context<'_>, to: &TcpStream) -> Poll<io::Result<()>> {
        while self.sent < self.unsent.len() {
            match to.try_write(&self.unsent[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(to.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if !self.unsent.is_empty() {
            // An idle connection keeps no buffer.
            self.unsent = Vec::new();
            self.sent = 0;
        }
        if let Some(pipe) = self.bulk.as_mut() {
            while pipe.buffered() > 0 {
                match to.try_io(Interest::WRITABLE, || pipe.drain(to)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(to.poll_write_ready(cx))?;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.bulk_ending {
                // The burst is over: give the pipe back (two descriptors and its
                // pages) until the next one.
                if let Some(pipe) = self.bulk.take() {
                    pipe::recycle(pipe);
                }
                self.bulk_ending = false;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads from a stream socket; a read shorter than `buf` means the socket has nothing
/// more right now, so its read readiness is cleared and the next read waits for the
/// next event instead of costing a system call that returns `EAGAIN`.
///
/// The read runs inside `try_io` so that readiness is cleared against the readiness
/// event seen *before* the read: an event arriving meanwhile (on any thread) survives.
/// Tokio keeps the read-closed flag, so an end of stream that came with the data is
/// not missed.
fn read_draining(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short_read = None;
    let socket = SockRef::from(from);
    let result = from.try_io(Interest::READABLE, || {
        let n = (&*socket).read(buf)?;
        if n == 0 || n == buf.len() {
            return Ok(n);
        }
        short_read = Some(n);
        Err(io::Error::from(io::ErrorKind::WouldBlock))
    });
    match (result, short_read) {
        (_, Some(n)) => Ok(n),
        (result, None) => result,
    }
}
