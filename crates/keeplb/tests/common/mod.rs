//! What the end-to-end tests of `keeplb run` share: starting keeplb in a lab host, and
//! waiting on what can be observed there.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use keeplb_testlab::{Host, Process, Signal, wait_until};

pub const KEEPLB: &str = env!("CARGO_BIN_EXE_keeplb");
pub const TIMEOUT: Duration = Duration::from_secs(15);
pub const POLL: Duration = Duration::from_millis(20);

/// `keeplb run -f CONF` inside `host`, with its control socket beside `conf`, so that
/// daemons of parallel tests never share one.
pub fn start(host: &Host, conf: &Path) -> Process {
    let control = conf.with_extension("sock");
    host.spawn(&[
        KEEPLB,
        "run",
        "-f",
        conf.to_str().expect("utf-8 path"),
        "--control",
        control.to_str().expect("utf-8 path"),
    ])
    .expect("spawn keeplb run")
}

pub fn holds(host: &Host, vip: &str) -> bool {
    host.has_address(vip).unwrap_or(false)
}

/// Writes a configuration aside and renames it into place, so a reload never reads
/// half a file.
pub fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
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

pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), port)
}

pub fn read_name(stream: &mut BufReader<TcpStream>) -> String {
    let mut name = String::new();
    stream.read_line(&mut name).expect("greeting");
    name.trim_end().to_owned()
}

pub fn counts(names: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    counts
}

/// A real server: greets each connection with its name, echoes what it receives until
/// the client half-closes, then closes. Stops listening when dropped or `kill`ed.
pub struct NameServer {
    running: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl NameServer {
    pub fn start(host: &Host, name: &str, addr: SocketAddr) -> Self {
        let listener = host
            .in_netns(|| TcpListener::bind(addr))
            .expect("netns")
            .expect("bind real server");
        listener.set_nonblocking(true).expect("nonblocking");
        let running = Arc::new(AtomicBool::new(true));
        let greeting = format!("{name}\n");
        let alive = Arc::clone(&running);
        thread::spawn(move || {
            // Polls so that `kill` closes the listener promptly; bounded by the flag.
            while alive.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let greeting = greeting.clone();
                        thread::spawn(move || echo(stream, &greeting));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { running, addr }
    }

    /// Stops accepting and closes the listening socket: connects are refused.
    pub fn kill(&self, from: &Host) {
        self.running.store(false, Ordering::Relaxed);
        let addr = self.addr;
        wait_until_refused(from, addr);
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

pub fn wait_until_refused(from: &Host, addr: SocketAddr) {
    keeplb_testlab::wait_until(TIMEOUT, POLL, || {
        from.in_netns(|| TcpStream::connect_timeout(&addr, TIMEOUT).is_err())
            .expect("netns")
    })
    .expect("real server stopped");
}

pub fn echo(mut stream: TcpStream, greeting: &str) {
    stream.set_nonblocking(false).expect("blocking");
    if stream.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut reader = stream.try_clone().expect("clone");
    let _ = std::io::copy(&mut reader, &mut stream);
    let _ = stream.shutdown(Shutdown::Write);
}

/// A LAN lab: a client, a director (holding the VIP itself, no VRRP) and real servers,
/// at the addresses the test gives (with their /24 prefix added).
pub struct Site {
    pub lab: keeplb_testlab::Lab,
    pub client: Host,
    pub director: Host,
    /// Each real server's host, name and address.
    pub real_servers: Vec<(Host, &'static str, &'static str)>,
}

impl Site {
    pub fn new(
        name: &str,
        client: &str,
        director: &[&str],
        real_servers: &[(&'static str, &'static str)],
    ) -> Self {
        let lab = keeplb_testlab::Lab::new(name).expect("lab (needs root and iproute2)");
        let lan = lab.switch("lan").expect("switch");
        let cidr = |ip: &str| format!("{ip}/24");
        let client_host = lab.host("client").expect("host");
        client_host
            .attach(&lan, "eth0", &[&cidr(client)])
            .expect("link");
        let director_host = lab.host("director").expect("host");
        let director_cidrs: Vec<String> = director.iter().map(|ip| cidr(ip)).collect();
        let director_cidrs: Vec<&str> = director_cidrs.iter().map(String::as_str).collect();
        director_host
            .attach(&lan, "eth0", &director_cidrs)
            .expect("link");
        let real_servers = real_servers
            .iter()
            .map(|&(name, ip)| {
                let host = lab.host(name).expect("host");
                host.attach(&lan, "eth0", &[&cidr(ip)]).expect("link");
                (host, name, ip)
            })
            .collect();
        Self {
            lab,
            client: client_host,
            director: director_host,
            real_servers,
        }
    }

    /// Writes `conf` and starts `keeplb run` with it on the director.
    pub fn run(&self, conf: &str) -> Process {
        let path = self.lab.dir().join("keepalived.conf");
        std::fs::write(&path, conf).expect("write config");
        start(&self.director, &path)
    }
}

/// `GET /metrics` from the daemon's HTTP listener at `address`, from inside `host`: the
/// whole HTTP response.
pub fn scrape_metrics(host: &Host, address: &str) -> std::io::Result<String> {
    host.in_netns(|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect(address)?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response)?;
        Ok(response)
    })
    .expect("netns")
}

/// A TCP connection from `client` to `vip`, once it accepts (waiting on `process`),
/// with [`TIMEOUT`] as its read timeout.
pub fn connect_when_served(
    client: &Host,
    vip: SocketAddr,
    process: &Process,
) -> BufReader<TcpStream> {
    let mut stream = None;
    wait_for("the service accepts", process, || {
        stream = client
            .in_netns(|| TcpStream::connect_timeout(&vip, TIMEOUT))
            .expect("netns")
            .ok();
        stream.is_some()
    });
    let stream = stream.expect("connected");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    BufReader::new(stream)
}

/// The name of the real server that answers `client`'s next connection to `vip`; the
/// connection is then closed in order.
pub fn served_by(client: &Host, vip: SocketAddr, process: &Process) -> String {
    let mut stream = connect_when_served(client, vip, process);
    let name = read_name(&mut stream);
    stream
        .get_ref()
        .shutdown(Shutdown::Write)
        .expect("shutdown");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut rest).expect("orderly close");
    name
}

/// `keeplb adm ARGS` against the daemon whose control socket is `control`.
pub fn adm_output(control: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(KEEPLB)
        .arg("adm")
        .arg("--control")
        .arg(control)
        .args(args)
        .output()
        .expect("keeplb adm")
}
