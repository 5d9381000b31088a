//! The control socket: a Unix stream socket (mode 0600) carrying one JSON [`Request`] per
//! line and answering each with one JSON [`Response`] line.
//!
//! The server side runs in the daemon on tokio; the client side is blocking, because
//! `keeplb adm` is a one-shot command that sends a few requests and exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::api::{ApiError, Request, Response, Transport, decode_request};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_CONTROL_PATH: &str = "/run/keeplb/control.sock";

/// Longest request line the server reads; longer ones end the connection.
const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// A bound control socket, not yet serving.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file bound: the one to remove at the end, and not
    /// another daemon's that has replaced it at the same path since.
    file: (u64, u64),
    /// An exclusive lock on `<path>.lock`, held while the server lives (the kernel
    /// releases it when the process dies, however it dies).
    _lock: File,
}

impl ControlServer {
    /// Binds `path` and restricts it to its owner (mode 0600). A socket nobody answers
    /// on (left by a daemon that was killed) is replaced; one a daemon answers on is not
    /// taken over: that is [`io::ErrorKind::AddrInUse`]. Must be called inside a tokio
    /// runtime.
    ///
    /// Two daemons started at once cannot both take the path: whoever binds first holds
    /// a lock on `<path>.lock` until it exits, and the other is refused with
    /// [`io::ErrorKind::AddrInUse`] without looking at the socket, which the first may
    /// not have bound yet. The lock file is left in place: removing it would let a third
    /// daemon lock a new file while the first still holds the old one.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        let lock = open_lock(path)?;
        let already_running = || {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("a daemon is already running at {}", path.display()),
            )
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(already_running()),
            Err(TryLockError::Error(e)) => return Err(e),
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                // A daemon that takes no lock (an older keeplb) may still answer.
                if daemon_answers(path) {
                    return Err(already_running());
                }
                std::fs::remove_file(path)?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            file: (meta.dev(), meta.ino()),
            _lock: lock,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests with `handler` until `shutdown` completes, then removes the socket
    /// (as dropping the server does).
    /// Each connection is served on its own task, its requests one after the other.
    pub async fn serve<H, F>(self, handler: H, shutdown: impl Future<Output = ()>)
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response> + Send,
    {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            if let Err(error) = serve_connection(stream, handler).await {
                                tracing::debug!(%error, "control connection ended");
                            }
                        });
                    }
                    Err(error) => tracing::warn!(%error, "control socket accept failed"),
                },
            }
        }
    }
}

impl Drop for ControlServer {
    /// Removes the socket: a daemon that stops, or fails to start after binding, leaves
    /// no stale path behind.
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.file);
        if !ours {
            tracing::debug!(path = %self.path.display(), "control socket replaced or gone; left alone");
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::debug!(%error, path = %self.path.display(), "control socket not removed");
        }
    }
}

/// Opens (creating it, mode 0600) the lock file of the control socket at `path`.
fn open_lock(path: &Path) -> io::Result<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(PathBuf::from(name))
}

/// True when something accepts connections on the Unix socket at `path`: a running
/// daemon, as opposed to a stale socket file (refused) or no file at all.
pub fn daemon_answers(path: &Path) -> bool {
    StdUnixStream::connect(path).is_ok()
}

async fn serve_connection<H, F>(stream: UnixStream, handler: H) -> io::Result<()>
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let (read, mut write) = stream.into_split();
    let mut read = AsyncBufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut read)
            .take(MAX_REQUEST_BYTES)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with('\n') && n as u64 == MAX_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request line too long",
            ));
        }
        let response = match decode_request(line.trim_end()) {
            Ok(request) => handler(request).await,
            Err(response) => response,
        };
        let mut json = serde_json::to_string(&response).map_err(io::Error::other)?;
        json.push('\n');
        write.write_all(json.as_bytes()).await?;
    }
}

/// A blocking client of the control socket.
#[derive(Debug)]
pub struct ControlClient {
    reader: BufReader<StdUnixStream>,
}

impl ControlClient {
    /// Connects to the daemon at `path`; each answer must come within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<ControlClient> {
        let stream = StdUnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(ControlClient {
            reader: BufReader::new(stream),
        })
    }

    fn exchange(&mut self, request: &Request) -> io::Result<Response> {
        let mut json = serde_json::to_string(request).map_err(io::Error::other)?;
        json.push('\n');
        self.reader.get_mut().write_all(json.as_bytes())?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "daemon closed the socket",
            ));
        }
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl Transport for ControlClient {
    fn call(&mut self, request: &Request) -> Result<Response, ApiError> {
        self.exchange(request).map_err(|e| ApiError::BadRequest {
            message: e.to_string(),
        })
    }
}
