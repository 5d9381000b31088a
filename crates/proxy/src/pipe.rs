//! Kernel pipes for zero-copy relaying with `splice(2)`: socket → pipe → socket, the
//! bytes never entering userspace.
//!
//! Pipes cost two descriptors each, so a connection only takes one when it starts
//! moving bulk data, and gives it back to a small per-thread pool when it ends.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};

/// Bytes a pipe holds; bigger than the default 64 KiB so one splice moves a whole
/// typical socket buffer.
const PIPE_CAPACITY: usize = 256 * 1024;
/// Idle pipes kept per worker thread for reuse.
const POOL_LIMIT: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// One pipe, both ends non-blocking, and how many bytes sit in it.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    buffered: usize,
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one.
    pub(crate) fn take() -> io::Result<Self> {
        if let Some(pipe) = POOL.with_borrow_mut(Vec::pop) {
            return Ok(pipe);
        }
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // The kernel may refuse the size (pipe-max-size, or a user over
        // pipe-user-pages-soft gets one page): ask what the pipe really holds.
        if let Ok(size) = PIPE_CAPACITY.try_into() {
            let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size));
        }
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|size| usize::try_from(size).ok())
            .unwrap_or(4096);
        Ok(Self {
            read,
            write,
            capacity,
            buffered: 0,
        })
    }

    /// Bytes waiting in the pipe.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    /// Moves what `from` has (up to the pipe's capacity) into the empty pipe. 0 means
    /// end of stream. `WouldBlock` means `from` has nothing, because the pipe is
    /// empty when this is called and so cannot be what is full.
    pub(crate) fn fill(&mut self, from: impl AsFd) -> io::Result<usize> {
        debug_assert_eq!(self.buffered, 0, "fill only an empty pipe");
        let moved = splice(
            from,
            None,
            &self.write,
            None,
            self.capacity,
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
        )?;
        self.buffered += moved;
        Ok(moved)
    }

    /// Moves buffered bytes out to `to`.
    pub(crate) fn drain(&mut self, to: impl AsFd) -> io::Result<usize> {
        let moved = splice(
            &self.read,
            None,
            to,
            None,
            self.buffered,
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
        )?;
        self.buffered -= moved;
        Ok(moved)
    }
}

/// Returns an empty pipe to the pool. A pipe with bytes left (its connection broke
/// mid-transfer) is closed instead, which discards them.
pub(crate) fn recycle(pipe: Pipe) {
    if pipe.buffered == 0 {
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOL_LIMIT {
                pool.push(pipe);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn bytes_cross_a_pipe_between_two_sockets_and_the_pipe_is_reused() {
        let (mut a_in, a_out) = UnixStream::pair().unwrap();
        let (b_in, mut b_out) = UnixStream::pair().unwrap();
        a_out.set_nonblocking(true).unwrap();
        b_in.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::take().unwrap();
        assert!(pipe.capacity >= 64 * 1024);
        assert_eq!(
            pipe.fill(&a_out).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a_in.write_all(b"spliced bytes").unwrap();
        assert_eq!(pipe.fill(&a_out).unwrap(), 13);
        assert_eq!(pipe.buffered(), 13);
        assert_eq!(pipe.drain(&b_in).unwrap(), 13);
        assert_eq!(pipe.buffered(), 0);
        let mut got = [0; 13];
        b_out.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"spliced bytes");
        drop(a_in);
        assert_eq!(pipe.fill(&a_out).unwrap(), 0, "end of stream");
        recycle(pipe);
        assert_eq!(POOL.with_borrow(Vec::len), 1);
        let _again = Pipe::take().unwrap();
        assert_eq!(POOL.with_borrow(Vec::len), 0);
    }
}
