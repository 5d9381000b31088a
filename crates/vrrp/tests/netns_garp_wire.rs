//! The gratuitous ARP as it arrives at a neighbour: keeplb's driver and a real
//! keepalived 2.2.7, each the address owner on the same veth, are captured on the peer
//! end with an `AF_PACKET` socket. Both frames must be the same 42 bytes (Ethernet header
//! and ARP payload, no padding: a veth delivers what was sent), and equal the capture
//! in tests/fixtures/garp-keepalived.txt, taken with the same MAC and VIP.

mod common;
mod io_lab;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::Fixture;
use io_lab::Router;
use keeplb_testlab::{Host, Lab, Signal};
use keeplb_vrrp::announce::{GARP_FRAME_LEN, gratuitous_arp};
use keeplb_vrrp::{InitialState, InstanceConfig, Version};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

/// The sender's MAC and VIP of the keepalived capture in the fixture.
const MAC: [u8; 6] = [0x02, 0x77, 0x00, 0x00, 0x00, 0x01];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const SETTLE: Duration = Duration::from_secs(15);

/// An `AF_PACKET` socket seeing every frame of `host`'s namespace, opened before the
/// sender starts so that its first burst is not missed.
fn capture_socket(host: &Host) -> Result<OwnedFd, Box<dyn std::error::Error>> {
    let fd = host.in_netns(|| {
        socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
    })??;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000))?;
    Ok(fd)
}

/// The first ARP frame announcing [`VIP`] that reaches the socket within `timeout`,
/// exactly as received (its length included).
fn first_garp(fd: &OwnedFd, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    // Bounded: one frame or one 200 ms receive timeout per round.
    for _ in 0..10_000 {
        assert!(
            Instant::now() < deadline,
            "no gratuitous ARP for {VIP} within {timeout:?}"
        );
        let Ok(len) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
            continue;
        };
        let frame = &buf[..len];
        if frame.get(12..14) == Some(&ETHERTYPE_ARP[..])
            && frame.get(28..32) == Some(&VIP.octets()[..])
        {
            return frame.to_vec();
        }
    }
    panic!("too many frames without a gratuitous ARP for {VIP}");
}

/// Two hosts on a veth pair; `a`'s end has the fixture's MAC and 10.77.0.1/24.
fn veth_lab(name: &str) -> Result<(Lab, Host, Host), Box<dyn std::error::Error>> {
    let lab = Lab::new(name)?;
    let a = lab.host("a")?;
    let b = lab.host("b")?;
    let (here, there) = a.link_to("eth0", &b, "eth0")?;
    let mac = MAC.map(|byte| format!("{byte:02x}")).join(":");
    a.run(&["ip", "link", "set", "dev", "eth0", "address", &mac])?;
    here.add_address("10.77.0.1/24")?;
    there.add_address("10.77.0.2/24")?;
    Ok((lab, a, b))
}

#[test]
fn keeplb_sends_keepalived_s_unpadded_garp() -> Result<(), Box<dyn std::error::Error>> {
    let golden = Fixture::load("garp-keepalived").hex("frame");
    assert_eq!(golden.len(), GARP_FRAME_LEN);

    // keepalived first: what it puts on the wire today, with this lab's MAC and VIP.
    let (lab, a, b) = veth_lab("vrrp-garp-ka")?;
    let fd = capture_socket(&b)?;
    let ka = io_lab::start_keepalived(
        &lab,
        &a,
        &format!(
            "    state MASTER\n    interface eth0\n    virtual_router_id 51\n    \
             priority 255\n    advert_int 1\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n"
        ),
    )?;
    let from_keepalived = first_garp(&fd, SETTLE);
    ka.signal(Signal::SIGTERM)?;
    assert!(
        ka.wait_timeout(SETTLE)?.is_some(),
        "keepalived did not exit"
    );
    drop(fd);
    lab.close()?;
    assert_eq!(from_keepalived, golden, "keepalived sent other bytes");

    // keeplb, the same owner on the same link.
    let (lab, a, b) = veth_lab("vrrp-garp-kl")?;
    let fd = capture_socket(&b)?;
    let mut config = InstanceConfig::new("VI_1", 51, Version::V2, vec![IpAddr::V4(VIP)]);
    config.priority = 255;
    config.initial_state = InitialState::Master;
    let router = Router::start(&a, "eth0", config);
    let from_keeplb = first_garp(&fd, SETTLE);
    router.stop();
    drop(fd);
    lab.close()?;
    assert_eq!(
        from_keeplb.len(),
        GARP_FRAME_LEN,
        "padded: {from_keeplb:02x?}"
    );
    assert_eq!(from_keeplb, from_keepalived);
    assert_eq!(from_keeplb, gratuitous_arp(MAC, VIP));
    Ok(())
}
