//! Moving bytes between a client and a real server, both directions at once, with
//! half-close and zero-copy `splice` once a direction carries bulk data.
//!
//! The relay is plain code over two non-blocking sockets and what epoll last said
//! about them: it never waits. The worker's [`RelayHub`](crate::hub::RelayHub) calls
//! it when one of the sockets is ready, so moving a request or a response wakes no
//! async task.
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
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use keeplb_balancer::Direction;
use socket2::SockRef;

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
    fn moved(&mut self, dir: Direction, bytes: usize, elapsed: Duration);
    /// The sender of `dir` closed its side and the close was passed on.
    fn half_closed(&mut self, dir: Direction);
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

/// Closes `stream` with a reset rather than a FIN, so the peer learns the
/// connection failed (as it would through a kernel NAT director).
pub(crate) fn reset_on_close(stream: &impl AsFd) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// One socket of a relay, with the readiness epoll reported for it since the relay
/// last found it drained or full.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) socket: TcpStream,
    readable: bool,
    writable: bool,
    /// The peer's FIN was seen: a short read no longer means drained, since the next
    /// read must return the end of stream.
    read_closed: bool,
}

impl Endpoint {
    /// A socket just handed over, with room to write. Whether it is worth reading
    /// before epoll says so is the caller's guess.
    fn new(socket: TcpStream, readable: bool) -> Self {
        Self {
            socket,
            readable,
            writable: true,
            read_closed: false,
        }
    }

    /// Records an (edge-triggered) readiness event.
    pub(crate) fn saw(&mut self, event: Readiness) {
        self.readable |= event.readable || event.read_closed || event.failed;
        self.writable |= event.writable || event.failed;
        self.read_closed |= event.read_closed;
    }
}

/// What an epoll event said about a socket. An error or hang-up (`failed`) makes both
/// ways ready, so the next read or write returns what happened.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) read_closed: bool,
    pub(crate) failed: bool,
}

impl Readiness {
    /// Adds a later event's news.
    pub(crate) fn merge(&mut self, later: Readiness) {
        self.readable |= later.readable;
        self.writable |= later.writable;
        self.read_closed |= later.read_closed;
        self.failed |= later.failed;
    }
}

/// Both directions of one connection.
#[derive(Debug)]
pub(crate) struct Relay {
    /// Client, then real server.
    pub(crate) ends: [Endpoint; 2],
    /// Input (client to real server), then Output.
    pumps: [Pump; 2],
    reads_per_advance: usize,
}

/// Reads a direction makes per [`Relay::advance`] at most: a fast transfer then gives
/// the worker's other connections their turn (and can move a few MiB meanwhile).
const READS_PER_ADVANCE: usize = 16;

/// What one [`Relay::advance`] did.
#[derive(Debug)]
pub(crate) struct Advance {
    /// Bytes moved, or an end of stream was read.
    pub(crate) active: bool,
    /// A direction stopped at [`READS_PER_ADVANCE`] with more to read: advance it again
    /// without waiting for an event (epoll reports only new arrivals).
    pub(crate) more: bool,
    /// The relay is over.
    pub(crate) end: Option<RelayEnd>,
}

impl Relay {
    /// `preamble` goes to the real server first.
    ///
    /// The client has usually sent its request while the real server was connecting,
    /// so it is read at once; a real server rarely speaks first, so it is read once
    /// epoll says so (the hub passes on what its socket reported while connecting).
    pub(crate) fn new(client: TcpStream, server: TcpStream, preamble: Vec<u8>) -> Self {
        let mut input = Pump::new(Direction::Input);
        input.unsent = preamble;
        Self {
            ends: [Endpoint::new(client, true), Endpoint::new(server, false)],
            pumps: [input, Pump::new(Direction::Output)],
            reads_per_advance: READS_PER_ADVANCE,
        }
    }

    /// Moves whatever can move now, in both directions, `elapsed` after the relay
    /// started.
    pub(crate) fn advance(
        &mut self,
        observer: &mut dyn RelayObserver,
        elapsed: Duration,
    ) -> Advance {
        let [client, server] = &mut self.ends;
        let (mut active, mut more) = (false, false);
        for index in 0..2 {
            let other_done = self.pumps[1 - index].done;
            let pump = &mut self.pumps[index];
            if pump.done {
                continue;
            }
            let (from, to) = if index == 0 {
                (&mut *client, &mut *server)
            } else {
                (&mut *server, &mut *client)
            };
            match pump.advance(
                from,
                to,
                observer,
                elapsed,
                other_done,
                self.reads_per_advance,
            ) {
                Ok(progress) => {
                    active |= progress.active;
                    more |= progress.more;
                }
                Err(e) => {
                    return Advance {
                        active,
                        more: false,
                        end: Some(RelayEnd::Failed(e)),
                    };
                }
            }
        }
        let closed = self.pumps.iter().all(|pump| pump.done);
        Advance {
            active,
            more,
            end: closed.then_some(RelayEnd::Closed),
        }
    }
}

/// One direction: from `from` to `to` until `from` closes, then half-close `to`.
#[derive(Debug)]
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

    /// Moves what can be moved now, up to `reads` reads. Marks the pump done once
    /// `from` closed and the close was passed on.
    ///
    /// When the other direction is already done (`other_done`), the relay ends with
    /// this one and both sockets are closed at once: the close sends `to` its FIN, so no
    /// `shutdown` call is spent on it (`to` already sent its own FIN, so no data can
    /// come after the close and turn it into a reset).
    fn advance(
        &mut self,
        from: &mut Endpoint,
        to: &mut Endpoint,
        observer: &mut dyn RelayObserver,
        elapsed: Duration,
        other_done: bool,
        reads: usize,
    ) -> io::Result<Advance> {
        let mut progress = Advance {
            active: false,
            more: false,
            end: None,
        };
        for _ in 0..reads {
            if !self.flush(to)? || !from.readable {
                return Ok(progress);
            }
            let moved = match self.bulk.as_mut() {
                Some(pipe) => match pipe.fill(&from.socket) {
                    Ok(moved) => {
                        if moved < SCRATCH_SIZE {
                            self.bulk_ending = true;
                        }
                        moved
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        from.readable = false;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                None => match self.copy(from, to)? {
                    Some(moved) => moved,
                    None => continue,
                },
            };
            progress.active = true;
            if moved == 0 {
                if !self.flush(to)? {
                    // The end of stream is read again once `to` has taken the rest.
                    return Ok(progress);
                }
                if let Some(pipe) = self.bulk.take() {
                    pipe::recycle(pipe);
                }
                if !other_done {
                    match to.socket.shutdown(Shutdown::Write) {
                        Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                        _ => {}
                    }
                }
                observer.half_closed(self.dir);
                self.done = true;
                return Ok(progress);
            }
            observer.moved(self.dir, moved, elapsed);
        }
        progress.more = from.readable;
        Ok(progress)
    }

    /// Reads once into the worker's scratch buffer and writes at once what `to` takes;
    /// the rest waits in `unsent`. `None` when `from` had nothing after all. A read
    /// that fills the buffer makes the direction bulk: it is spliced from then on.
    ///
    /// A read shorter than the buffer means the socket is drained, so it is marked
    /// not readable until the next event, saving the read that would return `EAGAIN`.
    /// Epoll reports every arrival, so data coming after the read still raises one.
    fn copy(&mut self, from: &mut Endpoint, to: &mut Endpoint) -> io::Result<Option<usize>> {
        SCRATCH.with_borrow_mut(|buf| {
            let read = match (&from.socket).read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    from.readable = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
                Err(e) => return Err(e),
            };
            if read == 0 {
                return Ok(Some(0));
            }
            if read < buf.len() && !from.read_closed {
                from.readable = false;
            }
            let written = write_some(to, &buf[..read])?;
            self.unsent.extend_from_slice(&buf[written..read]);
            if read == buf.len() {
                // Without a pipe (descriptors exhausted) copying goes on.
                self.bulk = Pipe::take().ok();
                self.bulk_ending = false;
            }
            Ok(Some(read))
        })
    }

    /// Writes out what waits (copied bytes, or bytes in the pipe); true once nothing
    /// does, false while `to` has no room.
    fn flush(&mut self, to: &mut Endpoint) -> io::Result<bool> {
        while self.sent < self.unsent.len() {
            if !to.writable {
                return Ok(false);
            }
            self.sent += write_some(to, &self.unsent[self.sent..])?;
        }
        if !self.unsent.is_empty() {
            // An idle connection keeps no buffer.
            self.unsent = Vec::new();
            self.sent = 0;
        }
        if let Some(pipe) = self.bulk.as_mut() {
            while pipe.buffered() > 0 {
                if !to.writable {
                    return Ok(false);
                }
                match pipe.drain(&to.socket) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable = false,
                    Err(e) => return Err(e),
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
        Ok(true)
    }
}

/// Writes what `to` takes now (nothing when it is full, which marks it so).
fn write_some(to: &mut Endpoint, bytes: &[u8]) -> io::Result<usize> {
    if !to.writable {
        return Ok(0);
    }
    match (&to.socket).write(bytes) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            to.writable = false;
            Ok(0)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    struct Count(usize);

    impl RelayObserver for Count {
        fn moved(&mut self, _: Direction, bytes: usize, _: Duration) {
            self.0 += bytes;
        }

        fn half_closed(&mut self, _: Direction) {}
    }

    /// A connected pair on loopback: the far end blocking, the near one not.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (near, _) = listener.accept().unwrap();
        near.set_nonblocking(true).unwrap();
        (far, near)
    }

    #[test]
    fn a_direction_stops_at_its_share_of_reads_and_says_there_is_more() {
        let (mut client, client_near) = pair();
        let (mut server, server_near) = pair();
        let mut relay = Relay::new(client_near, server_near, Vec::new());
        relay.reads_per_advance = 2;
        let sent = vec![7; 64 * 1024];
        client.write_all(&sent).unwrap();
        // Everything is queued before the relay reads: the first read fills the scratch
        // buffer, the second splices; the third would have found the socket drained.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut peek = vec![0; sent.len()];
        while relay.ends[0].socket.peek(&mut peek).unwrap_or(0) < sent.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "the bytes never arrived"
            );
            std::thread::yield_now();
        }
        let mut count = Count(0);
        let first = relay.advance(&mut count, Duration::ZERO);
        assert!(
            first.more,
            "stopped at its share with the socket still readable"
        );
        let second = relay.advance(&mut count, Duration::ZERO);
        assert!(!second.more && second.end.is_none(), "{second:?}");
        assert_eq!(count.0, sent.len());
        let mut got = vec![0; sent.len()];
        server.read_exact(&mut got).unwrap();
        assert!(got == sent);
    }
}
