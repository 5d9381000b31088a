//! UDP services on loopback: per-client flows, replies from the VIP, counters.

mod common;

use std::sync::Arc;

use common::*;
use keeplb_balancer::{Dest, Protocol};
use keeplb_proxy::ServiceOptions;
use tokio::net::UdpSocket;

async fn ask(socket: &UdpSocket, vip: std::net::SocketAddr, question: &str) -> String {
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

#[tokio::test]
async fn each_client_is_one_flow_on_one_real_server() {
    let (a, b) = (udp_server("a").await, udp_server("b").await);
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Udp, &[(a, 1), (b, 1)])
        .port(53)
        .start();
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3 {
        assert_eq!(ask(&first, vip, &format!("q{i}")).await, format!("b:q{i}"));
    }
    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
    let sorry_addr = udp_server("sorry").await;
    let sorry = Arc::new(Dest::new(sorry_addr, 1).unwrap());
    let options = ServiceOptions {
        sorry_server: Some(Arc::clone(&sorry)),
        ..ServiceOptions::default()
    };
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Udp, &[(udp_server("quiesced").await, 0)])
        .port(53)
        .options(options)
        .start();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
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
}
