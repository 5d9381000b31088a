//! `keeplb run` serving virtual servers from an unmodified keepalived.conf, in network
//! namespaces: a client, a director and three real servers that answer with their
//! name. The spread per scheduler is what IPVS gives; UDP flows stick; bulk data and
//! half-close pass intact; a real server that dies costs the client nothing.

mod common;
use common::*;

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use keeplb_proxy::{ProxyProtocol, Transport};
use keeplb_testlab::Process;

const DIRECTOR: &str = "10.62.0.1";
const VIP: &str = "10.62.0.10";
const CLIENT: &str = "10.62.0.100";
const REAL_SERVERS: [(&str, &str); 3] = [
    ("rs1", "10.62.0.11"),
    ("rs2", "10.62.0.12"),
    ("rs3", "10.62.0.13"),
];

fn site(name: &str) -> Site {
    Site::new(name, CLIENT, &[DIRECTOR, VIP], &REAL_SERVERS)
}

impl Site {
    /// Starts TCP name servers on `port` on every real server.
    fn serve_tcp(&self, port: u16) -> Vec<NameServer> {
        self.real_servers
            .iter()
            .map(|(host, name, ip)| NameServer::start(host, name, sa(ip, port)))
            .collect()
    }

    /// A TCP connection from the client to the VIP, once the service answers.
    fn connect(&self, port: u16, keeplb: &Process) -> BufReader<TcpStream> {
        connect_when_served(&self.client, sa(VIP, port), keeplb)
    }

    /// The real server names of `n` successive connections, each closed in order.
    fn spread(&self, port: u16, n: usize, keeplb: &Process) -> Vec<String> {
        (0..n)
            .map(|_| served_by(&self.client, sa(VIP, port), keeplb))
            .collect()
    }
}

#[test]
fn tcp_spread_is_what_ipvs_gives_per_scheduler() {
    let site = site("lvs-spread");
    let _servers: Vec<_> = [80, 81, 82, 83]
        .into_iter()
        .flat_map(|port| site.serve_tcp(port))
        .collect();
    let rs = |port: u16, weights: [u32; 3]| -> String {
        REAL_SERVERS
            .iter()
            .zip(weights)
            .map(|((_, ip), w)| {
                format!("    real_server {ip} {port} {{\n        weight {w}\n    }}\n")
            })
            .collect()
    };
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n{}}}\n\
         virtual_server {VIP} 81 {{\n    lb_algo wrr\n    protocol TCP\n{}}}\n\
         virtual_server {VIP} 82 {{\n    lb_algo sh\n    protocol TCP\n{}}}\n\
         virtual_server {VIP} 83 {{\n    lb_algo rr\n    persistence_timeout 300\n    protocol TCP\n{}}}\n",
        rs(80, [1, 1, 0]),
        rs(81, [3, 2, 1]),
        rs(82, [1, 1, 1]),
        rs(83, [1, 1, 1]),
    );
    let keeplb = site.run(&conf);

    // rr over the config's order a, b, c: IPVS lists the last added first. Weight 0
    // (rs3) is quiesced and never chosen.
    assert_eq!(
        site.spread(80, 6, &keeplb),
        ["rs2", "rs1", "rs2", "rs1", "rs2", "rs1"]
    );
    let wrr = site.spread(81, 12, &keeplb);
    assert_eq!(
        counts(&wrr),
        HashMap::from([("rs1", 6), ("rs2", 4), ("rs3", 2)]),
        "{wrr:?}"
    );
    let sh = site.spread(82, 5, &keeplb);
    assert!(
        sh.iter().all(|n| *n == sh[0]),
        "sh keeps one client on one server: {sh:?}"
    );
    let persistent = site.spread(83, 5, &keeplb);
    assert!(
        persistent.iter().all(|n| *n == persistent[0]),
        "persistence keeps the client: {persistent:?}"
    );
    let log = keeplb.output_so_far().stderr;
    assert!(
        log.contains("lb_kind DR requested") && log.contains("FULLNAT"),
        "the forwarding in effect is logged: {log}"
    );
    stop(&keeplb);
}

/// A UDP service's flows stick to their real server; on an `ops` service (one-packet
/// scheduling) over the same real servers, each datagram is scheduled on its own; with
/// `persistence_engine sip`, by its SIP Call-ID; with `proxy_protocol v2`, each datagram
/// tells the real server who sent it.
#[test]
fn udp_flows_stick_to_their_real_server_unless_ops() {
    let site = site("lvs-udp");
    for (host, name, ip) in site.real_servers.iter().take(2) {
        let socket = host
            .in_netns(|| UdpSocket::bind(sa(ip, 53)))
            .expect("netns")
            .expect("bind");
        let name = name.to_owned();
        thread::spawn(move || {
            let mut buf = [0; 1500];
            while let Ok((len, from)) = socket.recv_from(&mut buf) {
                let reply = [name.as_bytes(), b":", &buf[..len]].concat();
                let _ = socket.send_to(&reply, from);
            }
        });
    }
    let sip_engine = "    ops\n    persistence_timeout 60\n    persistence_granularity 0.0.0.0\n    persistence_engine sip\n";
    let conf = [
        (53, ""),
        (54, "    ops\n"),
        (55, "    proxy_protocol v2\n"),
        (5060, sip_engine),
    ]
        .map(|(port, ops)| format!(
            "virtual_server {VIP} {port} {{\n    lb_algo rr\n    protocol UDP\n{ops}    real_server {} 53 {{\n    }}\n    real_server {} 53 {{\n    }}\n}}\n",
            REAL_SERVERS[0].1, REAL_SERVERS[1].1
        ))
        .concat();
    let keeplb = site.run(&conf);
    let ask_at = |vip: SocketAddr, socket: &UdpSocket, what: &str| -> Option<String> {
        socket.send_to(what.as_bytes(), vip).ok()?;
        let mut buf = [0; 1500];
        let (len, from) = socket.recv_from(&mut buf).ok()?;
        assert_eq!(from, vip, "replies come from the VIP");
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    let ask = |socket: &UdpSocket, what: &str| ask_at(sa(VIP, 53), socket, what);
    let client_socket = || {
        let socket = site
            .client
            .in_netns(|| UdpSocket::bind(sa(CLIENT, 0)))
            .expect("netns")
            .expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        socket
    };
    let first = client_socket();
    let mut answer = None;
    wait_for("the UDP service answers", &keeplb, || {
        answer = ask(&first, "q1");
        answer.is_some()
    });
    let answer = answer.expect("answer");
    let (server, payload) = answer.split_once(':').expect("name:payload");
    assert_eq!(payload, "q1");
    for i in 2..5 {
        let again = ask(&first, &format!("q{i}"))
            .unwrap_or_else(|| panic!("no answer to q{i}\n{}", keeplb.output_so_far()));
        assert_eq!(again, format!("{server}:q{i}"), "one flow, one real server");
    }
    let second = client_socket();
    let other = ask(&second, "x").expect("answer");
    assert!(
        !other.starts_with(server),
        "a new flow goes to the next real server: {other}"
    );
    let servers: Vec<String> = (0..4)
        .map(|i| {
            let answer = ask_at(sa(VIP, 54), &first, &format!("o{i}"))
                .unwrap_or_else(|| panic!("no answer to o{i}\n{}", keeplb.output_so_far()));
            let (server, payload) = answer.split_once(':').expect("name:payload");
            assert_eq!(payload, format!("o{i}"));
            server.to_owned()
        })
        .collect();
    assert_ne!(servers[0], servers[1], "ops: one client, every real server");
    assert_eq!([&servers[0], &servers[1]], [&servers[2], &servers[3]], "rr");

    // `persistence_engine sip`: every message of a call reaches one real server, whichever
    // client sends it; another call is scheduled (rr) to the other.
    let sip = |socket: &UdpSocket, call: &str| -> String {
        let message = format!("BYE sip:x@y SIP/2.0\r\nCall-ID: {call}\r\nCSeq: 2 BYE\r\n\r\n");
        let answer = ask_at(sa(VIP, 5060), socket, &message)
            .unwrap_or_else(|| panic!("no answer for {call}\n{}", keeplb.output_so_far()));
        answer.split_once(':').expect("name:message").0.to_owned()
    };
    let call_1 = sip(&first, "call-1@h");
    let call_2 = sip(&first, "call-2@h");
    assert_ne!(call_1, call_2, "a new call is scheduled");
    assert_eq!(sip(&second, "call-1@h"), call_1, "the call, not the client");
    assert_eq!(sip(&second, "call-2@h"), call_2);

    // keeplb's `proxy_protocol v2`: the real server (which echoes) is told who asked.
    let proxied = sa(VIP, 55);
    first.send_to(b"pp", proxied).expect("send");
    let mut buf = [0; 1500];
    let (len, from) = first.recv_from(&mut buf).expect("answer");
    assert_eq!(from, proxied);
    // The header's bytes are checked against the specification in keeplb-proxy's tests.
    let header = ProxyProtocol::V2.header(
        Transport::Datagram,
        first.local_addr().expect("addr"),
        proxied,
    );
    let reply = &buf[..len];
    let name_end = reply.iter().position(|&b| b == b':').expect("name:") + 1;
    assert_eq!(&reply[name_end..], [&header[..], b"pp"].concat());
    stop(&keeplb);
}

#[test]
fn bulk_half_close_and_a_dead_real_server_cost_the_client_nothing() {
    const SIZE: u64 = 1 << 30;
    let site = site("lvs-bulk");
    let servers = site.serve_tcp(80);
    let conf = format!(
        "virtual_server {VIP} 80 {{\n    lb_algo rr\n    protocol TCP\n    real_server {} 80 {{\n    }}\n    real_server {} 80 {{\n    }}\n}}\n",
        REAL_SERVERS[0].1, REAL_SERVERS[1].1
    );
    let keeplb = site.run(&conf);

    // 1 GiB out and back (the real server echoes), compared byte for byte on the fly.
    let stream = site.connect(80, &keeplb);
    let mut reader = stream;
    let _name = read_name(&mut reader);
    let mut writer = reader.get_ref().try_clone().expect("clone");
    let started = Instant::now();
    let sender = thread::spawn(move || {
        let mut block = vec![0; 1 << 16];
        let mut offset = 0;
        while offset < SIZE {
            fill_pattern(&mut block, offset);
            writer.write_all(&block).expect("send");
            offset += block.len() as u64;
        }
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut received = 0;
    let mut expected = vec![0; 1 << 16];
    let mut got = vec![0; 1 << 16];
    loop {
        let n = reader.read(&mut got).expect("receive");
        if n == 0 {
            break;
        }
        let mut checked = 0;
        while checked < n {
            let at = received + checked as u64;
            let block_offset = at - at % (1 << 16);
            fill_pattern(&mut expected, block_offset);
            let start = (at - block_offset) as usize;
            let len = (n - checked).min(expected.len() - start);
            assert!(
                got[checked..checked + len] == expected[start..start + len],
                "byte mismatch near offset {at}"
            );
            checked += len;
        }
        received += n as u64;
    }
    sender.join().expect("sender");
    assert_eq!(
        received, SIZE,
        "every byte came back, then an orderly close"
    );
    eprintln!(
        "1 GiB each way in {:?} ({:.0} MiB/s)",
        started.elapsed(),
        2.0 * 1024.0 / started.elapsed().as_secs_f64()
    );

    // One real server dies: every new connection still gets an answer.
    servers[0].kill(&site.director);
    let names = site.spread(80, 6, &keeplb);
    assert_eq!(names, vec!["rs2"; 6]);
    stop(&keeplb);
}

/// A pattern that differs in every 8-byte word, so lost, duplicated or reordered data
/// cannot match.
fn fill_pattern(block: &mut [u8], offset: u64) {
    for (i, chunk) in block.chunks_mut(8).enumerate() {
        let word = (offset / 8 + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}
