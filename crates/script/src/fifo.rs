//! Notify FIFOs: the line-oriented pipes keepalived writes state changes to
//! (`notify_fifo`, `vrrp_notify_fifo`, `lvs_notify_fifo`).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A notify FIFO, shared by every notifier (each line is one `write`, so lines from
/// different instances never interleave). Opened read-write and non-blocking, as
/// keepalived does, so a missing reader never blocks VRRP; a line that does not fit in a
/// full pipe is dropped with a warning.
#[derive(Debug)]
pub struct FifoWriter {
    path: PathBuf,
    file: Mutex<File>,
    /// We made the FIFO, so it goes when we do (keepalived unlinks the FIFOs it created).
    created: bool,
}

impl FifoWriter {
    /// Opens `path`, creating the FIFO (mode 0644, as keepalived) when it does not exist;
    /// a FIFO created here is removed when the writer is dropped. An existing regular
    /// file is appended to (handy for tests and for logging).
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let mut created = false;
        if !path.exists() {
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644))
                .map_err(io::Error::from)?;
            created = true;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(error) => {
                if created {
                    let _ = std::fs::remove_file(&path);
                }
                return Err(error);
            }
        };
        Ok(Self {
            path,
            file: Mutex::new(file),
            created,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line in one `write`.
    pub fn write_line(&self, line: &str) -> io::Result<()> {
        let mut file = self
            .file
            .lock()
            .map_err(|_| io::Error::other("notify fifo lock poisoned"))?;
        let n = file.write(line.as_bytes())?;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to notify fifo",
            ));
        }
        Ok(())
    }

    /// Writes `line`, logging (not returning) a failure.
    pub fn send(&self, line: &str) {
        if let Err(error) = self.write_line(line) {
            tracing::warn!(fifo = %self.path.display(), %error, line = line.trim_end(), "notify fifo line dropped");
        }
    }
}

impl Drop for FifoWriter {
    fn drop(&mut self) {
        // Unlinked before the descriptor closes, as keepalived, so that a reader that
        // reopens the FIFO on EOF cannot reopen this one.
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
