//! What the end-to-end tests of `keeplb run` share: starting keeplb in a lab host, and
//! waiting on what can be observed there.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use keeplb_testlab::{Host, Process, Signal, wait_until};

pub const KEEPLB: &str = env!("CARGO_BIN_EXE_keeplb");
pub const TIMEOUT: Duration = Duration::from_secs(15);
pub const POLL: Duration = Duration::from_millis(20);

/// `keeplb run -f CONF` inside `host`.
pub fn start(host: &Host, conf: &Path) -> Process {
    host.spawn(&[KEEPLB, "run", "-f", conf.to_str().expect("utf-8 path")])
        .expect("spawn keeplb run")
}

pub fn holds(host: &Host, vip: &str) -> bool {
    host.has_address(vip).unwrap_or(false)
}

/// A file's contents, or nothing while it does not exist yet.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// An executable `sh` script.
pub fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Waits for `condition`; on timeout fails with `process`'s output, which tells why.
pub fn wait_for(what: &str, process: &Process, condition: impl FnMut() -> bool) {
    let started = Instant::now();
    if let Err(e) = wait_until(TIMEOUT, POLL, condition) {
        panic!("{what}: {e}\n{}", process.output_so_far());
    }
    eprintln!("{what}: {:?}", started.elapsed());
}

/// SIGTERM, then the process must exit successfully within [`TIMEOUT`].
pub fn stop(process: &Process) {
    process.signal(Signal::SIGTERM).expect("SIGTERM");
    let status = process
        .wait_timeout(TIMEOUT)
        .expect("wait")
        .expect("exits after SIGTERM");
    assert!(status.success(), "{}", process.output_so_far());
}
