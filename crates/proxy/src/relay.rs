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
use std::io;
use std::net::Shutdown;
use std::time::Duration;

use keeplb_balancer::Direction;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::activity::LastActivity;
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
    let both = async {
        tokio::try_join!(
            pump(client, server, Direction::Input, observer, &activity),
            pump(server, client, Direction::Output, observer, &activity),
        )
    };
    // Biased: polling in a fixed order saves a random draw on every wake-up.
    tokio::select! {
        biased;
        result = both => match result {
            Ok(_) => RelayEnd::Closed,
            Err(e) => RelayEnd::Failed(e),
        },
        () = activity.idle_for(idle_timeout) => RelayEnd::Idle,
    }
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

/// One direction: from `from` to `to` until `from` closes, then half-close `to`.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    dir: Direction,
    observer: &impl RelayObserver,
    activity: &LastActivity,
) -> io::Result<()> {
    let mut bulk: Option<Pipe> = None;
    let result = async {
        loop {
            let moved = match bulk.as_mut() {
                Some(pipe) => {
                    let moved = splice_once(from, to, pipe).await?;
                    if moved < SCRATCH_SIZE {
                        // The burst is over: give the pipe back (two descriptors and
                        // its pages) until the next one.
                        if let Some(pipe) = bulk.take() {
                            pipe::recycle(pipe);
                        }
                    }
                    moved
                }
                None => {
                    let (moved, filled) = copy_once(from, to).await?;
                    if filled {
                        // A full buffer: bulk data. Without a pipe (descriptors
                        // exhausted) copying goes on.
                        bulk = Pipe::take().ok();
                    }
                    moved
                }
            };
            if moved == 0 {
                break;
            }
            let elapsed = activity.touch();
            observer.moved(dir, moved, elapsed);
        }
        match SockRef::from(to).shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
            _ => {}
        }
        observer.half_closed(dir);
        Ok(())
    }
    .await;
    if let Some(pipe) = bulk {
        pipe::recycle(pipe);
    }
    result
}

/// Copies one read's worth from `from` to `to`. Returns the bytes moved (0 at end of
/// stream) and whether the read filled the scratch buffer.
async fn copy_once(from: &TcpStream, to: &TcpStream) -> io::Result<(usize, bool)> {
    let mut unsent = Vec::new();
    let (read, filled) = loop {
        from.readable().await?;
        let step = SCRATCH.with_borrow_mut(|buf| -> io::Result<Option<(usize, bool)>> {
            let read = match read_draining(from, buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            if read == 0 {
                return Ok(Some((0, false)));
            }
            let written = match to.try_write(&buf[..read]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            unsent.extend_from_slice(&buf[written..read]);
            Ok(Some((read, read == buf.len())))
        })?;
        if let Some(step) = step {
            break step;
        }
    };
    write_all(to, &unsent).await?;
    Ok((read, filled))
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
    let result = from.try_io(Interest::READABLE, || {
        let n = from.try_read(buf)?;
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

/// Splices one pipe-load from `from` to `to`. Returns the bytes moved, 0 at end of
/// stream.
async fn splice_once(from: &TcpStream, to: &TcpStream, pipe: &mut Pipe) -> io::Result<usize> {
    let moved = loop {
        from.readable().await?;
        match from.try_io(Interest::READABLE, || pipe.fill(from)) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    };
    while pipe.buffered() > 0 {
        match to.try_io(Interest::WRITABLE, || pipe.drain(to)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}
