//! TCP services end to end on loopback: scheduling as IPVS does it, failover to the
//! next real server, half-close, bulk transfer, counters and connection states.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use keeplb_balancer::{ConnSettings, Dest, Persistence, Protocol, TcpState};
use keeplb_proxy::{ProxyProtocol, ServiceOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn counts(names: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn rr_across_two_workers_follows_the_kernel_order() {
    let (a, b, c) = (
        tcp_server("a").await,
        tcp_server("b").await,
        tcp_server("c").await,
    );
    let served = Setup::new(Protocol::Tcp, &[(a, 1), (b, 1), (c, 1)])
        .workers(2)
        .start();
    let vip = served.vip;
    // IPVS lists the last added first, and rr starts at the head.
    assert_eq!(spread(vip, 6).await, ["c", "b", "a", "c", "b", "a"]);
}

#[tokio::test]
async fn wrr_hands_out_the_weights_over_a_cycle() {
    let (a, b, c) = (
        tcp_server("a").await,
        tcp_server("b").await,
        tcp_server("c").await,
    );
    let served = Setup::new(Protocol::Tcp, &[(a, 3), (b, 2), (c, 1)])
        .scheduler("wrr")
        .start();
    let vip = served.vip;
    let names = spread(vip, 12).await;
    assert_eq!(
        counts(&names),
        HashMap::from([("a", 6), ("b", 4), ("c", 2)])
    );
}

#[tokio::test]
async fn a_refusing_real_server_costs_the_client_nothing() {
    let live = tcp_server("live").await;
    let dead = closed_port();
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(live, 1), (dead, 1)]).start();
    assert_eq!(spread(vip, 6).await, vec!["live"; 6]);
    // Every failed attempt was released: nothing counts on the dead server.
    svc.read(|s| {
        let dead = s.pool.get(dead).unwrap();
        assert_eq!((dead.active_conns(), dead.inactive_conns()), (0, 0));
    });
}

#[tokio::test]
async fn the_sorry_server_takes_what_nobody_else_can() {
    let sorry = Arc::new(Dest::new(tcp_server("sorry").await, 1).unwrap());
    let options = ServiceOptions {
        sorry_server: Some(Arc::clone(&sorry)),
        ..ServiceOptions::default()
    };
    let dead = closed_port();
    let served = Setup::new(
        Protocol::Tcp,
        &[(dead, 1), (tcp_server("quiesced").await, 0)],
    )
    .scheduler("wlc")
    .options(options)
    .start();
    let vip = served.vip;
    let conns = || {
        let on_service = served.svc.read(|s| s.stats().counters().conns);
        (sorry.stats().counters().conns, on_service)
    };
    assert_eq!(spread(vip, 2).await, ["sorry", "sorry"]);
    // Counted as IPVS counts connections to the sorry server keepalived enters; the
    // service counted each client once, when the dead real server was tried first.
    assert_eq!(conns(), (2, 2));
    // With no real server to try, the sorry server's connections are the service's.
    served.svc.edit(|s| s.pool.set_weight(dead, 0)).unwrap();
    assert_eq!(spread(vip, 2).await, ["sorry", "sorry"]);
    assert_eq!(conns(), (4, 4));
}

#[tokio::test]
async fn without_any_server_the_client_is_reset() {
    let served = Setup::new(Protocol::Tcp, &[(closed_port(), 1)]).start();
    let vip = served.vip;
    // On loopback the reset can come before the client's connect has returned: then
    // the connect reports it.
    let reset = match tokio::time::timeout(PATIENCE, TcpStream::connect(vip))
        .await
        .expect("connect in time")
    {
        Err(e) => e,
        Ok(mut stream) => {
            let mut buf = [0; 1];
            tokio::time::timeout(PATIENCE, stream.read(&mut buf))
                .await
                .expect("closed in time")
                .expect_err("a reset, not an orderly close")
        }
    };
    assert_eq!(reset.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn half_close_lets_the_server_answer_after_the_client_finished() {
    let served = Setup::new(Protocol::Tcp, &[(tcp_server("echo").await, 1)]).start();
    let vip = served.vip;
    let (name, mut stream) = who(vip).await;
    assert_eq!(name, "echo");
    echoes_after_half_close(&mut stream, b"last words").await;
}

#[tokio::test]
async fn bulk_data_arrives_byte_identical_both_ways() {
    const SIZE: usize = 48 << 20;
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(tcp_server("echo").await, 1)]).start();
    let (_, stream) = who(vip).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    // A pattern no shifted or repeated chunk can reproduce.
    let data: Vec<u8> = (0..SIZE as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sent = data.clone();
    let send = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
    });
    let mut echoed = Vec::with_capacity(SIZE);
    tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut echoed))
        .await
        .expect("in time")
        .unwrap();
    send.await.unwrap();
    assert_eq!(echoed.len(), SIZE);
    assert!(echoed == data, "bytes differ");
    let counters = svc.read(|s| s.stats().counters());
    assert_eq!(counters.in_bytes, SIZE as u64);
    assert_eq!(counters.out_bytes, SIZE as u64 + "echo\n".len() as u64);
}

#[tokio::test]
async fn counters_and_states_follow_the_connection_as_ipvs_counts_them() {
    let server = tcp_server("a").await;
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(server, 1)]).start();
    let (_, mut stream) = who(vip).await;
    let dest = svc.read(|s| Arc::clone(s.pool.get(server).unwrap()));
    assert_eq!((dest.active_conns(), dest.inactive_conns()), (1, 0));
    let entries = svc.conn_entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, "ESTABLISHED");
    assert_eq!(entries[0].destination, server);
    stream.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    // Both FINs passed: IPVS's table puts the entry in TIME_WAIT, an inactive state.
    eventually("the entry reaches TIME_WAIT", || {
        svc.conn_entries()
            .first()
            .is_some_and(|e| e.state == TcpState::TimeWait.name())
    })
    .await;
    assert_eq!((dest.active_conns(), dest.inactive_conns()), (0, 1));
    assert_eq!(svc.read(|s| s.stats().counters().conns), 1);
}

#[tokio::test]
async fn persistence_holds_a_client_then_expires() {
    let (a, b) = (tcp_server("a").await, tcp_server("b").await);
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(a, 1), (b, 1)])
        .persistence(Persistence::new(Duration::from_secs(1)))
        .start();
    // Closed connections leave at once, so only the template's own timeout counts.
    let mut settings = ConnSettings::default();
    settings
        .timeouts
        .set_tcp(TcpState::TimeWait, Duration::ZERO);
    svc.set_conn_settings(settings);
    let first = spread(vip, 4).await;
    assert!(first.iter().all(|n| *n == first[0]), "{first:?}");
    eventually("template expired", || {
        svc.tick();
        svc.conn_entries().is_empty()
    })
    .await;
    let second = spread(vip, 1).await;
    assert_ne!(
        second[0], first[0],
        "rr moved on after the template expired"
    );
}

#[tokio::test]
async fn weight_zero_quiesces_without_cutting_existing_connections() {
    let (a, b) = (tcp_server("a").await, tcp_server("b").await);
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(a, 1), (b, 1)]).start();
    let (name, mut kept) = who(vip).await;
    assert_eq!(name, "b");
    svc.edit(|s| s.pool.set_weight(b, 0)).unwrap();
    assert_eq!(spread(vip, 3).await, ["a", "a", "a"]);
    echoes_after_half_close(&mut kept, b"still here").await;
}

#[tokio::test]
async fn a_removed_service_drains() {
    let Served { plane, svc, vip } = Setup::new(Protocol::Tcp, &[(tcp_server("a").await, 1)])
        .workers(2)
        .start();
    let (_, mut kept) = who(vip).await;
    assert!(plane.remove(Protocol::Tcp, vip).is_some());
    assert!(
        svc.read(|s| s.pool.dests().iter().all(|d| !d.in_pool())),
        "its real servers are out of service"
    );
    eventually("listeners closed", || {
        std::net::TcpStream::connect(vip).is_err()
    })
    .await;
    echoes_after_half_close(&mut kept, b"drain").await;
}

#[tokio::test]
async fn proxy_protocol_v1_tells_the_real_server_who_the_client_is() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let options = ServiceOptions {
        proxy_protocol: Some(ProxyProtocol::V1),
        ..ServiceOptions::default()
    };
    let served = Setup::new(Protocol::Tcp, &[(server, 1)])
        .port(8080)
        .options(options)
        .start();
    let vip = served.vip;
    let client = connect(vip).await;
    let (accepted, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("in time")
        .unwrap();
    let mut line = String::new();
    BufReader::new(accepted).read_line(&mut line).await.unwrap();
    let me = client.local_addr().unwrap();
    assert_eq!(
        line,
        format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            me.ip(),
            vip.ip(),
            me.port(),
            vip.port()
        )
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_established_timeout() {
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(tcp_server("a").await, 1)]).start();
    let mut settings = ConnSettings::default();
    settings
        .timeouts
        .set_tcp(TcpState::Established, Duration::from_millis(300));
    svc.set_conn_settings(settings);
    let (_, mut stream) = who(vip).await;
    let mut buf = [0; 1];
    let started = tokio::time::Instant::now();
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(read.is_err() || read.is_ok_and(|n| n == 0));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn traffic_keeps_a_connection_in_the_table_past_its_state_timeout() {
    let server = tcp_server("a").await;
    let Served {
        plane: _plane,
        svc,
        vip,
    } = Setup::new(Protocol::Tcp, &[(server, 1)]).start();
    let mut settings = ConnSettings::default();
    settings
        .timeouts
        .set_tcp(TcpState::Established, Duration::from_secs(2));
    svc.set_conn_settings(settings);
    let (_, mut stream) = who(vip).await;
    // Bounded: 25 round trips 200 ms apart, 2.5 times the ESTABLISHED timeout (the
    // proxy refreshes the entry at most once a second).
    for i in 0..25u8 {
        stream.get_mut().write_all(&[i]).await.unwrap();
        let mut echoed = [0; 1];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed[0], i);
        tokio::time::sleep(Duration::from_millis(200)).await;
        svc.tick();
    }
    let dest = svc.read(|s| Arc::clone(s.pool.get(server).unwrap()));
    assert_eq!(
        dest.active_conns(),
        1,
        "still counted while it carries data"
    );
    assert_eq!(svc.conn_entries()[0].state, "ESTABLISHED");
}

#[tokio::test]
async fn an_address_another_program_listens_on_is_refused() {
    let (svc, vip) = Setup::new(Protocol::Tcp, &[(tcp_server("a").await, 1)]).build();
    // Another program that set SO_REUSEPORT, as HAProxy does: sharing would silently
    // split the clients.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other.bind(&vip.into()).unwrap();
    other.listen(16).unwrap();
    let plane = keeplb_proxy::DataPlane::start(std::num::NonZeroUsize::MIN).unwrap();
    let error = plane
        .add(Arc::clone(&svc))
        .expect_err("the address is taken");
    assert!(error.to_string().contains("in use"), "{error}");
    drop(other);
    plane.add(svc).expect("free again");
}

#[tokio::test]
async fn ipv6_clients_reach_ipv6_real_servers_as_ipv4_ones_do() {
    let (a, b) = (
        tcp_server_on("[::1]:0", "a").await,
        tcp_server_on("[::1]:0", "b").await,
    );
    let vip = unused_ipv6_vip(Protocol::Tcp);
    let served = Setup::new(Protocol::Tcp, &[(a, 1), (b, 1)])
        .vip(vip)
        .start();
    assert_eq!(spread(vip, 4).await, ["b", "a", "b", "a"]);
    let (name, mut stream) = who(vip).await;
    assert_eq!(name, "b");
    echoes_after_half_close(&mut stream, b"over IPv6").await;
    drop(served);
}
