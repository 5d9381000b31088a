//! Loopback fixtures: real servers that say who they are, and services in front of them.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keeplb_balancer::{
    ConnSettings, Dest, Persistence, Pool, Protocol, SchedFlags, Service, ServiceAddr, from_name,
};
use keeplb_proxy::{DataPlane, ServiceOptions, VirtualService};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Every awaited event of these tests must happen within this.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A loopback address no other test of this run uses, so services never collide.
pub fn unique_vip(port: u16) -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id() % 200 * 256;
    let [_, b, c, d] = n.to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(127, b.max(1), c, d.max(1)), port))
}

/// A port of `::1` nobody uses, for a service of `protocol` (IPv6 has one loopback
/// address for every test, so services differ by port).
pub fn unused_ipv6_vip(protocol: Protocol) -> SocketAddr {
    let local = match protocol {
        Protocol::Udp => std::net::UdpSocket::bind("[::1]:0").and_then(|s| s.local_addr()),
        _ => std::net::TcpListener::bind("[::1]:0").and_then(|l| l.local_addr()),
    };
    local.unwrap()
}

/// A TCP real server: sends `NAME\n` on connect, then echoes until the client
/// half-closes, then closes.
pub async fn tcp_server(name: &str) -> SocketAddr {
    tcp_server_on("127.0.0.1:0", name).await
}

/// A [`tcp_server`] bound to `address` (`[::1]:0` for IPv6).
pub async fn tcp_server_on(address: &str, name: &str) -> SocketAddr {
    let listener = TcpListener::bind(address).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let greeting = format!("{name}\n");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(greeting.as_bytes()).await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Sends `words` on a connection to a [`tcp_server`], half-closes it, and checks that
/// the words come back before the end of the stream: both directions got through.
pub async fn echoes_after_half_close(stream: &mut BufReader<TcpStream>, words: &[u8]) {
    stream.get_mut().write_all(words).await.unwrap();
    stream.get_mut().shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut echoed))
        .await
        .expect("echo and end of stream in time")
        .unwrap();
    assert_eq!(echoed, words);
}

/// A UDP real server answering every datagram with `NAME:` and the datagram.
pub async fn udp_server(name: &str) -> SocketAddr {
    udp_server_on("127.0.0.1:0", name).await
}

/// A [`udp_server`] bound to `address` (`[::1]:0` for IPv6).
pub async fn udp_server_on(address: &str, name: &str) -> SocketAddr {
    let socket = UdpSocket::bind(address).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut buf = vec![0; 65_535];
        loop {
            let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let reply = [name.as_bytes(), b":", &buf[..len]].concat();
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

/// A free loopback port that refuses connections (nothing listens on it).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A service to start on a fresh data plane, on a loopback address of its own: rr
/// over `dests` on port 80 with one worker unless told otherwise. Destinations are
/// added in the given order (IPVS puts each new one first, so rr starts from the last).
pub struct Setup {
    proto: Protocol,
    dests: Vec<(SocketAddr, u32)>,
    scheduler: &'static str,
    workers: usize,
    port: u16,
    persistence: Option<Persistence>,
    options: ServiceOptions,
    vip: Option<SocketAddr>,
}

/// A started service: keep `plane` alive for as long as the service should run.
pub struct Served {
    pub plane: DataPlane,
    pub svc: Arc<VirtualService>,
    pub vip: SocketAddr,
}

impl Setup {
    pub fn new(proto: Protocol, dests: &[(SocketAddr, u32)]) -> Self {
        Self {
            proto,
            dests: dests.to_vec(),
            scheduler: "rr",
            workers: 1,
            port: 80,
            persistence: None,
            options: ServiceOptions::default(),
            vip: None,
        }
    }

    /// Serves on `vip` instead of a loopback address of its own (IPv6 has one).
    pub fn vip(self, vip: SocketAddr) -> Self {
        Self {
            vip: Some(vip),
            ..self
        }
    }

    pub fn scheduler(self, scheduler: &'static str) -> Self {
        Self { scheduler, ..self }
    }

    pub fn workers(self, workers: usize) -> Self {
        Self { workers, ..self }
    }

    pub fn port(self, port: u16) -> Self {
        Self { port, ..self }
    }

    pub fn persistence(self, persistence: Persistence) -> Self {
        Self {
            persistence: Some(persistence),
            ..self
        }
    }

    pub fn options(self, options: ServiceOptions) -> Self {
        Self { options, ..self }
    }

    /// The service, not yet served.
    pub fn build(self) -> (Arc<VirtualService>, SocketAddr) {
        let vip = self.vip.unwrap_or_else(|| unique_vip(self.port));
        let mut pool = Pool::new(from_name(self.scheduler, SchedFlags::EMPTY).unwrap());
        for (addr, weight) in self.dests {
            pool.add(Arc::new(Dest::new(addr, weight).unwrap()))
                .unwrap();
        }
        let mut svc = Service::new(ServiceAddr::Addr(self.proto, vip), pool);
        svc.set_persistence(self.persistence);
        let svc = VirtualService::new(svc, ConnSettings::default(), self.options).unwrap();
        (Arc::new(svc), vip)
    }

    /// The service, listening on a data plane of its own.
    pub fn start(self) -> Served {
        let plane = DataPlane::start(NonZeroUsize::new(self.workers).unwrap()).unwrap();
        let (svc, vip) = self.build();
        plane.add(Arc::clone(&svc)).unwrap();
        Served { plane, svc, vip }
    }
}

/// Connects to `vip` (retrying while the workers start listening) and reads the
/// real server's name.
pub async fn who(vip: SocketAddr) -> (String, BufReader<TcpStream>) {
    let stream = connect(vip).await;
    let mut reader = BufReader::new(stream);
    let mut name = String::new();
    tokio::time::timeout(PATIENCE, reader.read_line(&mut name))
        .await
        .expect("greeting in time")
        .expect("greeting");
    (name.trim_end().to_owned(), reader)
}

pub async fn connect(vip: SocketAddr) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(vip))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// The names of `n` successive connections' real servers, each closed in order.
pub async fn spread(vip: SocketAddr, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let (name, mut stream) = who(vip).await;
        stream.get_mut().shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
            .await
            .expect("close in time")
            .unwrap();
        names.push(name);
    }
    names
}

/// Polls `condition` until it holds, failing the test after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
