//! Traffic through lab topologies: bridges, direct links, routing, link failures.
//!
//! Only lab addresses (10.x, fd00::/8) inside lab namespaces are used; nothing is sent to
//! the root namespace. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use keeplb_testlab::{Host, Lab, LabError, Switch, wait_until};

const PING_OK: Duration = Duration::from_secs(5);
/// How long a ping must stay unanswered to count as "unreachable".
const PING_FAIL: Duration = Duration::from_millis(600);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn new_lab(test: &str) -> Lab {
    Lab::new(test).unwrap_or_else(|e| panic!("cannot create the test lab: {e}"))
}

/// A switch with two hosts: `a` (10.0.0.1, fd00::1) and `b` (10.0.0.2, fd00::2).
fn two_hosts(lab: &Lab) -> (Switch, Host, Host) {
    let lan = lab.switch("lan").expect("create switch lan");
    let a = lab.host("a").expect("create host a");
    let b = lab.host("b").expect("create host b");
    a.attach(&lan, "eth0", &["10.0.0.1/24", "fd00::1/64"])
        .expect("attach a");
    b.attach(&lan, "eth0", &["10.0.0.2/24", "fd00::2/64"])
        .expect("attach b");
    (lan, a, b)
}

/// `server` listens on `addr`, `client` connects from its namespace; bytes go both ways.
/// Returns the client address the server saw.
fn tcp_exchange(server: &Host, client: &Host, addr: SocketAddr) -> SocketAddr {
    let listener = server
        .in_netns(|| TcpListener::bind(addr))
        .expect("enter server namespace")
        .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", server.name()));
    let mut outgoing = client
        .in_netns(|| TcpStream::connect_timeout(&addr, IO_TIMEOUT))
        .expect("enter client namespace")
        .unwrap_or_else(|e| panic!("connect to {addr} from {}: {e}", client.name()));
    // The connection is established, so accept returns at once.
    let (mut incoming, seen_client) = listener.accept().expect("accept");
    for stream in [&outgoing, &incoming] {
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set read timeout");
    }

    outgoing.write_all(b"ping").expect("client write");
    let mut buf = [0u8; 4];
    incoming.read_exact(&mut buf).expect("server read");
    assert_eq!(&buf, b"ping");
    incoming.write_all(b"pong").expect("server write");
    outgoing.read_exact(&mut buf).expect("client read");
    assert_eq!(&buf, b"pong");
    seen_client
}

#[test]
fn bridge_carries_ipv4_ping_and_tcp() {
    let lab = new_lab("bridge_ipv4");
    let (_lan, a, b) = two_hosts(&lab);

    assert!(a.ping("10.0.0.2", PING_OK).unwrap(), "a cannot ping b");
    assert!(b.ping("10.0.0.1", PING_OK).unwrap(), "b cannot ping a");

    let seen = tcp_exchange(&a, &b, "10.0.0.1:7000".parse().unwrap());
    assert_eq!(
        seen.ip().to_string(),
        "10.0.0.2",
        "the connection came from b"
    );
}

#[test]
fn bridge_carries_ipv6() {
    let lab = new_lab("bridge_ipv6");
    let (_lan, a, b) = two_hosts(&lab);
    // DAD is off: the addresses are usable at once, this must not have to wait.
    a.wait_for_address("eth0", "fd00::1", Duration::from_millis(200))
        .unwrap();
    assert!(b.has_address("fd00::2").unwrap());
    assert!(!b.has_address("fd00::1").unwrap());

    assert!(a.ping("fd00::2", PING_OK).unwrap(), "a cannot ping6 b");
    let seen = tcp_exchange(&b, &a, "[fd00::2]:7000".parse().unwrap());
    assert_eq!(seen.ip().to_string(), "fd00::1");
}

#[test]
fn link_failures_cut_and_restore_traffic() {
    let lab = new_lab("link_failures");
    let lan = lab.switch("lan").unwrap();
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    a.attach(&lan, "eth0", &["10.0.0.1/24", "fd00::1/64"])
        .unwrap();
    let b_eth0 = b
        .attach(&lan, "eth0", &["10.0.0.2/24", "fd00::2/64"])
        .unwrap();
    assert!(a.ping("10.0.0.2", PING_OK).unwrap());
    assert!(b_eth0.has_carrier().unwrap());

    // Cable pulled at the switch: b's interface stays up but loses carrier.
    b_eth0.unplug().unwrap();
    assert!(!b_eth0.has_carrier().unwrap());
    assert!(
        !a.ping("10.0.0.2", PING_FAIL).unwrap(),
        "b answered unplugged"
    );
    assert!(
        !a.ping("fd00::2", PING_FAIL).unwrap(),
        "b answered unplugged"
    );
    b_eth0.plug().unwrap();
    wait_until(PING_OK, Duration::from_millis(10), || {
        b_eth0.has_carrier().unwrap()
    })
    .unwrap();
    assert!(
        a.ping("10.0.0.2", PING_OK).unwrap(),
        "b unreachable after plug"
    );
    assert!(
        a.ping("fd00::2", PING_OK).unwrap(),
        "b unreachable after plug"
    );

    // Administratively down and up: addresses survive (keep_addr_on_down).
    b_eth0.set_down().unwrap();
    assert!(
        !a.ping("10.0.0.2", PING_FAIL).unwrap(),
        "b answered while down"
    );
    b_eth0.set_up().unwrap();
    b.wait_for_address("eth0", "fd00::2", PING_OK).unwrap();
    assert!(
        a.ping("10.0.0.2", PING_OK).unwrap(),
        "b unreachable after up"
    );
    assert!(
        a.ping("fd00::2", PING_OK).unwrap(),
        "b lost its IPv6 address"
    );

    // Deleted: gone for good, on both ends.
    b_eth0.delete().unwrap();
    assert!(
        !a.ping("10.0.0.2", PING_FAIL).unwrap(),
        "b answered deleted"
    );
    assert!(!b.has_address("10.0.0.2").unwrap());
    let ports = lan
        .run(&["ip", "-o", "link", "show", "master", "br0"])
        .unwrap();
    let ports = String::from_utf8_lossy(&ports.stdout).into_owned();
    assert_eq!(ports.lines().count(), 1, "one port left: {ports}");
}

#[test]
fn direct_link_between_hosts() {
    let lab = new_lab("direct_link");
    let a = lab.host("a").unwrap();
    let b = lab.host("b").unwrap();
    let (a_end, b_end) = a.link_to("xover", &b, "xover").unwrap();
    a_end.add_address("10.9.0.1/30").unwrap();
    b_end.add_address("10.9.0.2/30").unwrap();
    a_end.add_address("fd00:9::1/64").unwrap();
    b_end.add_address("fd00:9::2/64").unwrap();
    assert!(a.ping("10.9.0.2", PING_OK).unwrap());
    assert!(b.ping("fd00:9::1", PING_OK).unwrap());

    // Pulling the cable from a's side cuts b off too.
    a_end.unplug().unwrap();
    assert!(!a_end.has_carrier().unwrap());
    assert!(!b_end.has_carrier().unwrap(), "b's end was set down");
    assert!(!a.ping("10.9.0.2", PING_FAIL).unwrap());
    a_end.plug().unwrap();
    assert!(a.ping("10.9.0.2", PING_OK).unwrap());
}

#[test]
fn two_switches_joined_by_a_router() {
    let lab = new_lab("two_switches");
    let clients = lab.switch("clients").unwrap();
    let servers = lab.switch("servers").unwrap();
    let client = lab.host("client").unwrap();
    let router = lab.host("router").unwrap();
    let server = lab.host("server").unwrap();
    client
        .attach(&clients, "eth0", &["10.1.0.10/24", "fd00:1::10/64"])
        .unwrap();
    router
        .attach(&clients, "eth0", &["10.1.0.1/24", "fd00:1::1/64"])
        .unwrap();
    router
        .attach(&servers, "eth1", &["10.2.0.1/24", "fd00:2::1/64"])
        .unwrap();
    server
        .attach(&servers, "eth0", &["10.2.0.10/24", "fd00:2::10/64"])
        .unwrap();

    // Without routes and forwarding, the server LAN is out of reach.
    assert!(!client.ping("10.2.0.10", PING_FAIL).unwrap());

    router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    router.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
    client
        .run(&["ip", "route", "add", "default", "via", "10.1.0.1"])
        .unwrap();
    client
        .run(&["ip", "-6", "route", "add", "default", "via", "fd00:1::1"])
        .unwrap();
    server
        .run(&["ip", "route", "add", "default", "via", "10.2.0.1"])
        .unwrap();
    server
        .run(&["ip", "-6", "route", "add", "default", "via", "fd00:2::1"])
        .unwrap();

    assert!(client.ping("10.2.0.10", PING_OK).unwrap());
    assert!(client.ping("fd00:2::10", PING_OK).unwrap());
    let seen = tcp_exchange(&server, &client, "10.2.0.10:8080".parse().unwrap());
    assert_eq!(seen.ip().to_string(), "10.1.0.10");
}

#[test]
fn labs_in_parallel_threads_do_not_collide() {
    // Same host names and addresses in every lab: they must stay isolated.
    let labs: Vec<Vec<String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|i| {
                scope.spawn(move || {
                    let lab = new_lab(&format!("parallel{i}"));
                    let (_lan, a, b) = two_hosts(&lab);
                    assert!(a.ping("10.0.0.2", PING_OK).unwrap());
                    tcp_exchange(&b, &a, "10.0.0.2:9000".parse().unwrap());
                    lab.namespaces()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<&String> = labs.iter().flatten().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "namespace names collided: {labs:?}");
}

#[test]
fn addresses_and_waits() {
    let lab = new_lab("addresses");
    let (_lan, a, _b) = two_hosts(&lab);
    a.add_address("lo", "10.0.0.100/32").unwrap();
    a.wait_for_address("lo", "10.0.0.100", PING_OK).unwrap();
    assert!(a.has_address("10.0.0.100").unwrap());

    let err = a
        .wait_for_address("eth0", "10.0.0.99", Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, LabError::Timeout(_)), "{err}");
    assert!(err.to_string().contains("10.0.0.99"), "{err}");
    // A missing interface is reported as such, not as a timeout.
    let err = a
        .wait_for_address("nosuch0", "10.0.0.1", Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, LabError::CommandFailed { .. }), "{err}");

    assert!(matches!(
        a.add_address("eth0", "10.0.0.300/24"),
        Err(LabError::InvalidArgument { .. })
    ));
    let err = a.run(&["ip", "link", "show", "nosuch0"]).unwrap_err();
    assert!(err.to_string().contains("nosuch0"), "{err}");
}
