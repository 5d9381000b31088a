//! UDP services on loopback: per-client flows, one-packet scheduling, replies from the
//! VIP, counters.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use keeplb_balancer::{Dest, Granularity, Persistence, PersistenceEngine, Protocol, Thresholds};
use keeplb_proxy::{ProxyProtocol, ServiceOptions};
use tokio::net::UdpSocket;

async fn ask(socket: &UdpSocket, vip: SocketAddr, question: &str) -> String {
    socket
        .send_to(question.as_bytes(), vip)
        .await
        .expect("send");
    let mut buf = [0; 1500];
    let (len, from) = tokio::time::timeout(PATIENCE, socket.recv_from(&mut buf))
        .await
        .expect("answer in time")
        .expect("receive");
    assert_eq!(from, vip, "the reply comes from the VIP");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// A UDP service on port 53 over `dests` (real server, weight).
fn dns(dests: &[(SocketAddr, u32)]) -> Setup {
    Setup::new(Protocol::Udp, dests).port(53)
}

/// Two real servers that answer with their names, `a` and `b`.
async fn real_servers_a_and_b() -> (SocketAddr, SocketAddr) {
    (udp_server("a").await, udp_server("b").await)
}

/// `dns` rr over `a` and `b`, started (rr starts with `b`).
async fn rr_over_a_and_b() -> (SocketAddr, SocketAddr, Served) {
    let (a, b) = real_servers_a_and_b().await;
    (a, b, dns(&[(a, 1), (b, 1)]).start())
}

/// A client socket of its own (a flow of its own).
async fn new_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("client socket")
}

#[tokio::test]
async fn ipv6_clients_reach_ipv6_real_servers_as_ipv4_ones_do() {
    let (a, b) = (
        udp_server_on("[::1]:0", "a").await,
        udp_server_on("[::1]:0", "b").await,
    );
    let vip = unused_ipv6_vip(Protocol::Udp);
    let _served = dns(&[(a, 1), (b, 1)]).vip(vip).start();
    let first = UdpSocket::bind("[::1]:0").await.expect("client socket");
    let second = UdpSocket::bind("[::1]:0").await.expect("client socket");
    assert_eq!(ask(&first, vip, "q1").await, "b:q1");
    assert_eq!(ask(&second, vip, "q2").await, "a:q2");
    assert_eq!(ask(&first, vip, "q3").await, "b:q3", "the flow stays");
}

#[tokio::test]
async fn each_client_is_one_flow_on_one_real_server() {
    let (_, b, served) = rr_over_a_and_b().await;
    let (svc, vip) = (&served.svc, served.vip);
    let first = new_client().await;
    for i in 0..3 {
        assert_eq!(ask(&first, vip, &format!("q{i}")).await, format!("b:q{i}"));
    }
    let second = new_client().await;
    assert_eq!(ask(&second, vip, "x").await, "a:x");
    let counters = svc.read(|s| s.stats().counters());
    assert_eq!(
        (counters.conns, counters.in_pkts, counters.out_pkts),
        (2, 4, 4)
    );
    let entries = svc.conn_entries();
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.state == "UDP"));
    svc.read(|s| {
        let b = s.pool.get(b).unwrap();
        assert_eq!(
            (b.active_conns(), b.inactive_conns()),
            (0, 1),
            "UDP is inactive"
        );
    });
}

#[tokio::test]
async fn the_sorry_server_answers_and_is_counted() {
    sorry_server_answers_and_is_counted(false).await;
}

#[tokio::test]
async fn the_sorry_server_answers_one_packet_services_too() {
    sorry_server_answers_and_is_counted(true).await;
}

async fn sorry_server_answers_and_is_counted(one_packet: bool) {
    let sorry_addr = udp_server("sorry").await;
    let sorry = Arc::new(Dest::new(sorry_addr, 1).expect("sorry dest"));
    let options = ServiceOptions {
        sorry_server: Some(Arc::clone(&sorry)),
        one_packet,
        ..ServiceOptions::default()
    };
    let Served {
        plane: _plane,
        svc,
        vip,
    } = dns(&[(udp_server("quiesced").await, 0)])
        .options(options)
        .start();
    let client = new_client().await;
    for question in ["q1", "q2"] {
        assert_eq!(
            ask(&client, vip, question).await,
            format!("sorry:{question}")
        );
    }
    let on_sorry = sorry.stats().counters();
    assert_eq!((on_sorry.in_pkts, on_sorry.out_pkts), (2, 2));
    assert_eq!((on_sorry.in_bytes, on_sorry.out_bytes), (4, 16));
    let on_service = svc.read(|s| s.stats().counters());
    assert_eq!((on_service.in_pkts, on_service.out_pkts), (2, 2));
    assert!(
        svc.conn_entries().is_empty(),
        "the sorry server has no table entry"
    );
    // A flow is one connection, inactive while it lasts; under one-packet scheduling
    // every datagram is one, and none stays.
    let (conns, inactive) = if one_packet { (2, 0) } else { (1, 1) };
    assert_eq!(
        (on_sorry.conns, on_service.conns),
        (conns, conns),
        "connections"
    );
    assert_eq!(
        (sorry.active_conns(), sorry.inactive_conns()),
        (0, inactive),
        "on the sorry server"
    );
}

#[tokio::test]
async fn a_client_leaves_a_removed_real_server_at_its_next_datagram() {
    let (a, b, served) = rr_over_a_and_b().await;
    let (svc, vip) = (&served.svc, served.vip);
    let client = new_client().await;
    assert_eq!(ask(&client, vip, "q1").await, "b:q1");
    svc.edit(|s| s.pool.remove(b).map(drop)).expect("remove b");
    // A syslog-like client that never pauses would otherwise stay on b for good.
    for question in ["q2", "q3"] {
        assert_eq!(ask(&client, vip, question).await, format!("a:{question}"));
    }
    let entries = svc.conn_entries();
    assert_eq!(entries.len(), 1, "the entry on b went with it");
    assert_eq!(entries[0].destination, a);
}

/// A service over one real server "real" of `weight`, with a sorry server "sorry".
async fn one_real_server_and_a_sorry_server(weight: u32) -> (SocketAddr, Served) {
    let real = udp_server("real").await;
    let options = ServiceOptions {
        sorry_server: Some(Arc::new(
            Dest::new(udp_server("sorry").await, 1).expect("sorry dest"),
        )),
        ..ServiceOptions::default()
    };
    (real, dns(&[(real, weight)]).options(options).start())
}

/// `client` asks `questions`, each answered by the sorry server.
async fn answered_by_the_sorry_server(client: &UdpSocket, vip: SocketAddr, questions: &[&str]) {
    for question in questions {
        assert_eq!(
            ask(client, vip, question).await,
            format!("sorry:{question}")
        );
    }
}

#[tokio::test]
async fn a_client_leaves_the_sorry_server_once_a_real_server_is_back() {
    let (
        real,
        Served {
            plane: _plane,
            svc,
            vip,
        },
    ) = one_real_server_and_a_sorry_server(0).await;
    let client = new_client().await;
    answered_by_the_sorry_server(&client, vip, &["q0", "q1"]).await;
    // At once: the edit tells the flow to look at the pool again.
    svc.edit(|s| s.pool.set_weight(real, 1))
        .expect("weight back");
    assert_eq!(ask(&client, vip, "q2").await, "real:q2");
}

#[tokio::test]
async fn a_client_leaves_the_sorry_server_once_a_real_server_is_no_longer_overloaded() {
    let (
        real,
        Served {
            plane: _plane,
            svc,
            vip,
        },
    ) = one_real_server_and_a_sorry_server(1).await;
    svc.edit(|s| {
        s.pool
            .set_thresholds(real, Thresholds { upper: 1, lower: 0 })
    })
    .expect("thresholds");
    let dest = svc
        .read(|s| s.pool.get(real).cloned())
        .expect("real server");
    let other_client = dest.connect();
    let client = new_client().await;
    answered_by_the_sorry_server(&client, vip, &["q0", "q1"]).await;
    // The real server frees up without any edit of the service, as when one of its
    // connections ends: the flow must still look at the pool again.
    drop(other_client);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for i in 2.. {
        let question = format!("q{i}");
        let answer = ask(&client, vip, &question).await;
        if answer == format!("real:{question}") {
            break;
        }
        assert_eq!(answer, format!("sorry:{question}"));
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client stayed on the sorry server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An rr service on port 53 with one-packet scheduling over `a` and `b` (rr starts
/// with `b`).
fn one_packet_service(a: SocketAddr, b: SocketAddr) -> Setup {
    let options = ServiceOptions {
        one_packet: true,
        ..ServiceOptions::default()
    };
    dns(&[(a, 1), (b, 1)]).options(options)
}

#[tokio::test]
async fn one_packet_scheduling_spreads_one_client_s_datagrams() {
    let (a, b) = real_servers_a_and_b().await;
    let Served {
        plane: _plane,
        svc,
        vip,
    } = one_packet_service(a, b).start();
    let client = new_client().await;
    let mut answers = Vec::new();
    for i in 0..4 {
        answers.push(ask(&client, vip, &format!("q{i}")).await);
    }
    assert_eq!(answers, ["b:q0", "a:q1", "b:q2", "a:q3"]);
    let counters = svc.read(|s| s.stats().counters());
    assert_eq!(
        (counters.conns, counters.in_pkts, counters.out_pkts),
        (4, 4, 4),
        "every datagram is a connection"
    );
    assert!(svc.conn_entries().is_empty(), "no entry is left");
    svc.read(|s| {
        for dest in [a, b] {
            let d = s.pool.get(dest).unwrap();
            let on_dest = d.stats().counters();
            assert_eq!(
                (on_dest.conns, on_dest.in_pkts, on_dest.out_pkts),
                (2, 2, 2),
                "{dest}: replies count on the real server that sent them"
            );
            assert_eq!((d.active_conns(), d.inactive_conns()), (0, 0));
        }
    });
}

#[tokio::test]
async fn one_packet_scheduling_follows_persistence() {
    let (a, b) = real_servers_a_and_b().await;
    let Served {
        plane: _plane,
        svc,
        vip,
    } = one_packet_service(a, b)
        .persistence(Persistence::new(Duration::from_secs(300)))
        .start();
    let client = new_client().await;
    for i in 0..3 {
        assert_eq!(ask(&client, vip, &format!("q{i}")).await, format!("b:q{i}"));
    }
    assert_eq!(svc.read(|s| s.stats().counters().conns), 3);
    let entries = svc.conn_entries();
    assert_eq!(entries.len(), 1);
    assert!(entries[0].template, "only the persistence template");
}

#[tokio::test]
async fn a_flow_from_before_one_packet_scheduling_goes_on_until_it_expires() {
    let (_, _, served) = rr_over_a_and_b().await;
    let (svc, vip) = (&served.svc, served.vip);
    let earlier = new_client().await;
    assert_eq!(ask(&earlier, vip, "q0").await, "b:q0");
    svc.set_options(ServiceOptions {
        one_packet: true,
        ..ServiceOptions::default()
    });
    // rr would give `a` next: the client's table entry is found first, as in the kernel.
    for i in 1..3 {
        assert_eq!(
            ask(&earlier, vip, &format!("q{i}")).await,
            format!("b:q{i}")
        );
    }
    assert_eq!(svc.read(|s| s.stats().counters().conns), 1);
    let newcomer = new_client().await;
    let answers = [
        ask(&newcomer, vip, "x0").await,
        ask(&newcomer, vip, "x1").await,
    ];
    assert_eq!(answers, ["a:x0", "b:x1"], "new clients are one-packet");
}

#[tokio::test]
async fn proxy_protocol_v2_starts_every_datagram_to_the_real_server() {
    let options = ServiceOptions {
        proxy_protocol: Some(ProxyProtocol::V2),
        ..ServiceOptions::default()
    };
    let Served {
        plane: _plane,
        svc: _svc,
        vip,
    } = dns(&[(udp_server("a").await, 1)]).options(options).start();
    let client = new_client().await;
    let (SocketAddr::V4(me), SocketAddr::V4(vip4)) = (client.local_addr().unwrap(), vip) else {
        panic!("IPv4 loopback");
    };
    // The v2 signature, PROXY, AF_INET over DGRAM, 12 address bytes, then the client
    // and the VIP it wrote to.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c".to_vec();
    header.extend_from_slice(&me.ip().octets());
    header.extend_from_slice(&vip4.ip().octets());
    header.extend_from_slice(&me.port().to_be_bytes());
    header.extend_from_slice(&vip4.port().to_be_bytes());
    for question in [&b"q1"[..], b"second"] {
        client.send_to(question, vip).await.expect("send");
        let mut buf = [0; 1500];
        let (len, from) = tokio::time::timeout(PATIENCE, client.recv_from(&mut buf))
            .await
            .expect("answer in time")
            .expect("receive");
        assert_eq!(from, vip);
        // The real server echoes what it got after its name; its reply goes back as is.
        let expected = [&b"a:"[..], &header, question].concat();
        assert_eq!(&buf[..len], &expected[..]);
    }
}

/// A SIP message of call `call_id`, as a client would send it over UDP.
fn sip_message(call_id: &str) -> String {
    format!(
        "OPTIONS sip:pbx@example.com SIP/2.0\r\nVia: SIP/2.0/UDP client\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn the_sip_engine_keeps_each_call_on_one_real_server_whoever_sends() {
    let (a, b) = real_servers_a_and_b().await;
    let sorry = Arc::new(Dest::new(udp_server("sorry").await, 1).expect("sorry dest"));
    // One-packet scheduling, templates shared by every client: the Call-ID decides.
    let persistence = Persistence::new(Duration::from_secs(60))
        .with_granularity(Granularity::v4_netmask(std::net::Ipv4Addr::UNSPECIFIED));
    let served = dns(&[(a, 1), (b, 1)])
        .persistence(persistence)
        .options(ServiceOptions {
            one_packet: true,
            sorry_server: Some(Arc::clone(&sorry)),
            ..ServiceOptions::default()
        })
        .start();
    let vip = served.vip;
    served
        .svc
        .edit(|s| s.set_persistence_engine(Some(PersistenceEngine::Sip)));
    let (alice, bob) = (new_client().await, new_client().await);
    let answered_by = |answer: String| answer.split_once(':').map(|(name, _)| name.to_owned());
    let first = answered_by(ask(&alice, vip, &sip_message("call-1@example.com")).await);
    let other = answered_by(ask(&alice, vip, &sip_message("call-2@example.com")).await);
    assert_ne!(first, other, "a new call is scheduled (rr)");
    for (client, call, expected) in [
        (&bob, "call-1@example.com", &first),
        (&bob, "call-2@example.com", &other),
        (&alice, "call-1@example.com", &first),
    ] {
        let by = answered_by(ask(client, vip, &sip_message(call)).await);
        assert_eq!(&by, expected, "{call}");
    }
    // Without a Call-ID the datagram cannot be scheduled, and is dropped, as the kernel
    // drops it: it goes to no real server and not to the sorry server either.
    let conns = || served.svc.read(|s| s.stats().counters().conns);
    let scheduled = conns();
    alice.send_to(b"not SIP", vip).await.expect("send");
    let mut buf = [0; 1500];
    let silence = tokio::time::timeout(Duration::from_millis(300), alice.recv_from(&mut buf)).await;
    assert!(
        silence.is_err(),
        "no answer to a datagram without a Call-ID"
    );
    assert_eq!(conns(), scheduled, "nothing was scheduled");
    assert_eq!(
        sorry.stats().counters().conns,
        0,
        "nor sent to the sorry server"
    );
}
