//! The two ends of the UDP benchmark (`bench/proxy/udp.sh`), DNS-like: small queries,
//! each answered by one small reply.
//!
//!   udp echo PORT...                  echo servers on 127.0.0.1:PORT, one thread each
//!   udp load ADDR CLIENTS SECONDS     CLIENTS closed-loop clients against ADDR
//!
//! Each client has its own socket (so the proxy sees CLIENTS flows), sends one query,
//! waits for its answer, checks that the answer is the query it sent and came from
//! ADDR, and sends the next. A query unanswered within `PATIENCE` counts as lost and
//! is sent anew. `load` prints one line: `requests N lost N seconds S rps R`.
//!
//! Loopback only; the load is bounded by SECONDS.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket as AsyncUdpSocket;

const QUERY_SIZE: usize = 32;
const PATIENCE: Duration = Duration::from_millis(200);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") if args.len() > 1 => echo(&args[1..]),
        Some("load") if args.len() == 4 => {
            let target: SocketAddr = parse(&args[1], "ADDR");
            let clients: usize = parse(&args[2], "CLIENTS");
            let seconds: u64 = parse(&args[3], "SECONDS");
            assert!(
                clients > 0 && seconds > 0,
                "CLIENTS and SECONDS must be positive"
            );
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(load(target, clients, Duration::from_secs(seconds)));
        }
        _ => {
            eprintln!("usage: udp echo PORT... | udp load ADDR CLIENTS SECONDS");
            std::process::exit(2);
        }
    }
}

fn parse<T: std::str::FromStr>(text: &str, what: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| panic!("{what}: not a valid value: {text}"))
}

/// Answers every datagram with itself, until killed.
fn echo(ports: &[String]) {
    let threads: Vec<_> = ports
        .iter()
        .map(|port| {
            let port: u16 = parse(port, "PORT");
            let socket = UdpSocket::bind(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("echo port {port}: {e}"));
            std::thread::spawn(move || {
                let mut buf = [0; 2048];
                loop {
                    let (len, from) = socket.recv_from(&mut buf).expect("receive");
                    let _ = socket.send_to(&buf[..len], from);
                }
            })
        })
        .collect();
    println!("ready");
    for thread in threads {
        let _ = thread.join();
    }
}

#[derive(Default)]
struct Tally {
    answered: u64,
    lost: u64,
}

async fn load(target: SocketAddr, clients: usize, duration: Duration) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| tokio::spawn(client_loop(target, client, deadline)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("client task");
        total.answered += tally.answered;
        total.lost += tally.lost;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "requests {} lost {} seconds {seconds:.3} rps {:.0}",
        total.answered,
        total.lost,
        total.answered as f64 / seconds
    );
}

async fn client_loop(target: SocketAddr, client: usize, deadline: tokio::time::Instant) -> Tally {
    let socket = AsyncUdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut tally = Tally::default();
    let mut query = [0u8; QUERY_SIZE];
    query[..8].copy_from_slice(&(client as u64).to_be_bytes());
    let mut answer = [0u8; 2048];
    let mut sequence: u64 = 0;
    while tokio::time::Instant::now() < deadline {
        sequence += 1;
        query[8..16].copy_from_slice(&sequence.to_be_bytes());
        socket.send_to(&query, target).await.expect("send");
        let wait_until = (tokio::time::Instant::now() + PATIENCE).min(deadline);
        loop {
            match tokio::time::timeout_at(wait_until, socket.recv_from(&mut answer)).await {
                Ok(Ok((len, from))) => {
                    assert_eq!(from, target, "the answer comes from the address asked");
                    // A late answer to an earlier, lost query: keep waiting for ours.
                    if answer[..len] != query {
                        continue;
                    }
                    tally.answered += 1;
                }
                Ok(Err(e)) => panic!("receive: {e}"),
                // Cut short by the end of the run: not lost.
                Err(_) if wait_until == deadline => {}
                Err(_) => tally.lost += 1,
            }
            break;
        }
    }
    tally
}
