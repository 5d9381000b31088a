//! Throw-away network labs in Linux network namespaces, for keeplb's end-to-end tests.
//!
//! A [`Lab`] owns a set of network namespaces: [`Host`]s (directors, clients, real
//! servers) and [`Switch`]es (a bridge living in its *own* namespace, so nothing ever
//! touches the host's network). Hosts are wired to switches, or directly to each other,
//! with veth pairs ([`Link`]). Programs run inside a host with [`Host::cmd`],
//! [`Host::run`] or [`Host::spawn`] (long-lived daemons, see [`Process`]); Rust code runs
//! inside a host with [`Host::in_netns`] (e.g. to open sockets there).
//!
//! Dropping the lab kills its processes and deletes its namespaces, also when the test
//! panics. Namespace names are `klb-<pid>-<lab counter>-<test>-<host>`, unique per process
//! and per lab so tests may run in parallel threads and processes; a new lab also deletes
//! namespaces left behind by test processes that were SIGKILLed (their pid is dead).
//!
//! The lab needs root and iproute2's `ip`; [`Lab::new`] fails with
//! [`LabError::NotRoot`] / [`LabError::MissingTool`] otherwise. Tests must not skip in that
//! case: propagate the error so the failure says what is missing.
//!
//! Synchronise with [`wait_until`] and the `wait_for_*` helpers, never with bare sleeps.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//! use keeplb_testlab::Lab;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lab = Lab::new("example")?;
//! let lan = lab.switch("lan")?;
//! let server = lab.host("server")?;
//! let client = lab.host("client")?;
//! server.attach(&lan, "eth0", &["10.0.0.1/24", "fd00::1/64"])?;
//! client.attach(&lan, "eth0", &["10.0.0.2/24", "fd00::2/64"])?;
//! assert!(client.ping("10.0.0.1", Duration::from_secs(5))?);
//!
//! // Sockets opened inside a namespace stay there and can be used from any thread.
//! let listener = server.in_netns(|| TcpListener::bind("10.0.0.1:8080"))??;
//! let mut stream = client.in_netns(|| TcpStream::connect("10.0.0.1:8080"))??;
//! let (mut accepted, _) = listener.accept()?;
//! stream.write_all(b"hi")?;
//! let mut buf = [0; 2];
//! accepted.read_exact(&mut buf)?;
//!
//! // Daemons: killed with their process group when dropped, output captured.
//! let daemon = server.spawn(&["sleep", "1000"])?;
//! println!("{}", daemon.output_so_far());
//! # Ok(())
//! # }
//! ```

mod error;
mod lab;
mod netns;
mod ping;
mod process;

use std::time::{Duration, Instant};

pub use error::{LabError, Result, Timeout};
pub use lab::Lab;
pub use netns::{Host, Link, Switch};
pub use nix::sys::signal::Signal;
pub use process::{CapturedOutput, Process};

/// Polls `condition` every `poll_interval` until it returns true or `timeout` elapses.
///
/// This is the only sanctioned way to wait for something in lab tests: a deadline keeps
/// a broken test from hanging, and polling (rather than sleeping a guessed duration)
/// keeps a working test fast and not flaky. The condition is always evaluated at least
/// once, and once more at the deadline.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), Timeout> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if condition() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Timeout {
                what: "condition".to_owned(),
                waited: now - start,
            });
        }
        std::thread::sleep(poll_interval.min(deadline - now));
    }
}

/// Like [`wait_until`], with a description of what is awaited for the error message.
pub(crate) fn wait_for(
    what: impl FnOnce() -> String,
    timeout: Duration,
    poll_interval: Duration,
    condition: impl FnMut() -> bool,
) -> Result<(), Timeout> {
    wait_until(timeout, poll_interval, condition).map_err(|t| Timeout {
        what: what(),
        waited: t.waited,
    })
}
