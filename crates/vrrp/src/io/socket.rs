//! Sockets: the raw `IPPROTO_VRRP` sockets advertisements travel on (IPv4 and IPv6), and
//! the `AF_PACKET` socket gratuitous ARP / unsolicited NA frames leave by.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, recv, recvmsg, sendmsg, sendto, setsockopt, socket, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::event::Received;
use crate::ip::Ipv4Header;
use crate::packet::IPPROTO_VRRP;

/// IP precedence "internetwork control", as keepalived sends.
const TOS_INTERNETWORK_CONTROL: u32 = 0xc0;

/// The raw IPv4 VRRP socket of one interface: bound to it with `SO_BINDTODEVICE`,
/// member of the multicast group on it (by index), with `IP_MULTICAST_ALL` off so that
/// groups joined by other sockets do not leak in, and TTL 255. `IP_HDRINCL` stays off:
/// the kernel builds the IP header; the source address is set per datagram with
/// `IP_PKTINFO`, so the socket stays unbound and receives both multicast and unicast.
#[derive(Debug)]
pub struct VrrpSocketV4 {
    /// tokio's datagram socket is only readiness plus `recv`/`sendmsg` on a file
    /// descriptor: it serves a raw IP socket as well, without `unsafe`.
    fd: UdpSocket,
    ifindex: u32,
}

impl VrrpSocketV4 {
    /// Must run in the network namespace of the interface (a tokio runtime must be
    /// current, for the reactor registration).
    pub fn open(interface: &str, ifindex: u32, group: Option<Ipv4Addr>) -> io::Result<Self> {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW.cloexec(),
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        sock.bind_device(Some(interface.as_bytes()))?;
        sock.set_multicast_all_v4(false)?;
        sock.set_multicast_ttl_v4(255)?;
        sock.set_ttl_v4(255)?;
        // Our own adverts are not for us (the state machine would drop them anyway).
        sock.set_multicast_loop_v4(false)?;
        sock.set_tos_v4(TOS_INTERNETWORK_CONTROL)?;
        if let Some(group) = group {
            sock.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        sock.set_nonblocking(true)?;
        Ok(VrrpSocketV4 {
            fd: UdpSocket::from_std(std::net::UdpSocket::from(sock))?,
            ifindex,
        })
    }

    /// Waits for the next datagram and returns it with the fields of its IPv4 header.
    /// Datagrams without a usable IPv4 header come back as `Ok(None)`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let n = self
            .fd
            .async_io(Interest::READABLE, || {
                recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            })
            .await?;
        let Some(datagram) = buf.get(..n) else {
            return Ok(None);
        };
        match Ipv4Header::parse(datagram) {
            Ok((header, payload)) => Ok(Some(Received {
                src: IpAddr::V4(header.src),
                dst: IpAddr::V4(header.dst),
                ttl: Some(header.ttl),
                payload: payload.to_vec(),
            })),
            Err(error) => {
                tracing::debug!(%error, "dropping datagram without a usable IPv4 header");
                Ok(None)
            }
        }
    }

    /// Sends one VRRP message from `src` to `dst` with `ttl` (unicast; multicast always
    /// goes with TTL 255).
    pub fn send(&self, payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> io::Result<()> {
        let sock = &self.fd;
        if !dst.is_multicast() {
            sock.set_ttl(u32::from(ttl))?;
        }
        let pktinfo = nix::libc::in_pktinfo {
            ipi_ifindex: i32::try_from(self.ifindex).unwrap_or(0),
            ipi_spec_dst: nix::libc::in_addr {
                s_addr: u32::from(src).to_be(),
            },
            ipi_addr: nix::libc::in_addr { s_addr: 0 },
        };
        let to = SockaddrIn::from(SocketAddrV4::new(dst, 0));
        send_datagram(
            sock,
            payload,
            &[ControlMessage::Ipv4PacketInfo(&pktinfo)],
            &to,
        )
    }
}

/// The raw IPv6 VRRP socket of one interface: bound to it with `SO_BINDTODEVICE`, member
/// of the multicast group on it (by index), `IPV6_MULTICAST_ALL` off, hop limit 255 for
/// multicast and unicast, multicast loop off (our own adverts do not come back).
///
/// Raw IPv6 sockets deliver no IP header: the source comes from the socket address, the
/// destination from `IPV6_PKTINFO` and the hop limit from `IPV6_HOPLIMIT` ancillary data.
/// The source is set per datagram with `IPV6_PKTINFO`.
///
/// The VRRPv3 checksum (over the IPv6 pseudo-header) is computed by the codec on send and
/// verified by the codec on receipt, not by the kernel: `IPV6_CHECKSUM` has no safe
/// setter in nix/socket2 and the crate denies `unsafe`. The bytes on the wire are the same.
#[derive(Debug)]
pub struct VrrpSocketV6 {
    fd: UdpSocket,
    ifindex: u32,
}

impl VrrpSocketV6 {
    /// Must run in the network namespace of the interface, in a tokio runtime.
    pub fn open(interface: &str, ifindex: u32, group: Option<Ipv6Addr>) -> io::Result<Self> {
        let sock = Socket::new(
            Domain::IPV6,
            Type::RAW.cloexec(),
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )?;
        sock.bind_device(Some(interface.as_bytes()))?;
        sock.set_multicast_all_v6(false)?;
        sock.set_multicast_hops_v6(255)?;
        sock.set_unicast_hops_v6(255)?;
        sock.set_multicast_loop_v6(false)?;
        if let Some(group) = group {
            sock.join_multicast_v6(&group, ifindex)?;
        }
        setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)?;
        setsockopt(&sock, sockopt::Ipv6RecvHopLimit, &true)?;
        sock.set_nonblocking(true)?;
        Ok(VrrpSocketV6 {
            fd: UdpSocket::from_std(std::net::UdpSocket::from(sock))?,
            ifindex,
        })
    }

    /// Waits for the next datagram; its source, destination (`IPV6_PKTINFO`) and hop
    /// limit (`IPV6_HOPLIMIT`). Datagrams without a destination come back as `Ok(None)`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let (n, src, dst, hops) = self
            .fd
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let mut space = nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::c_int);
                let msg = recvmsg::<SockaddrIn6>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                let src = msg.address.map(|a| a.ip());
                let (mut dst, mut hops) = (None, None);
                for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                    match cmsg {
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                        }
                        ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
                        _ => {}
                    }
                }
                Ok((msg.bytes, src, dst, hops))
            })
            .await?;
        let (Some(src), Some(dst), Some(payload)) = (src, dst, buf.get(..n)) else {
            tracing::debug!("dropping IPv6 datagram without source or destination");
            return Ok(None);
        };
        Ok(Some(Received {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            ttl: hops,
            payload: payload.to_vec(),
        }))
    }

    /// Sends one VRRP message from `src` to `dst` with hop limit `hops` (unicast;
    /// multicast always goes with 255).
    pub fn send(&self, payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr, hops: u8) -> io::Result<()> {
        let sock = &self.fd;
        if !dst.is_multicast() {
            socket2::SockRef::from(sock).set_unicast_hops_v6(u32::from(hops))?;
        }
        let pktinfo = nix::libc::in6_pktinfo {
            ipi6_addr: nix::libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: self.ifindex,
        };
        // Link-local and multicast destinations need the interface as scope.
        let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, self.ifindex));
        send_datagram(
            sock,
            payload,
            &[ControlMessage::Ipv6PacketInfo(&pktinfo)],
            &to,
        )
    }
}

/// One non-blocking datagram with its ancillary data (the source address to use),
/// retried only when a signal interrupts it.
fn send_datagram<A: nix::sys::socket::SockaddrLike>(
    sock: &impl AsRawFd,
    payload: &[u8],
    cmsgs: &[ControlMessage<'_>],
    to: &A,
) -> io::Result<()> {
    let iov = [IoSlice::new(payload)];
    loop {
        match sendmsg(
            sock.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
            Some(to),
        ) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop).map_err(io::Error::from),
        }
    }
}

/// The VRRP socket of an instance, in its family.
#[derive(Debug)]
pub enum VrrpSocket {
    V4(VrrpSocketV4),
    V6(VrrpSocketV6),
}

impl VrrpSocket {
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        match self {
            VrrpSocket::V4(s) => s.recv(buf).await,
            VrrpSocket::V6(s) => s.recv(buf).await,
        }
    }

    /// Sends from `src` to `dst`, which must be of the socket's family.
    pub fn send(&self, payload: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> io::Result<()> {
        match (self, src, dst) {
            (VrrpSocket::V4(s), IpAddr::V4(src), IpAddr::V4(dst)) => s.send(payload, src, dst, ttl),
            (VrrpSocket::V6(s), IpAddr::V6(src), IpAddr::V6(dst)) => s.send(payload, src, dst, ttl),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{src} -> {dst} on the wrong socket family"),
            )),
        }
    }
}

/// An `AF_PACKET` socket for complete Ethernet frames, sent to the interface whose
/// link-layer address (from `getifaddrs`) it was given.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    link: LinkAddr,
}

impl PacketSocket {
    pub fn open(link: LinkAddr) -> io::Result<Self> {
        // Protocol 0: send only, nothing is queued for reception.
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        Ok(PacketSocket { fd, link })
    }

    /// Sends `frame` as it is. A gratuitous ARP leaves as its 42 bytes, not padded to
    /// the 60-byte Ethernet minimum: keepalived's send_arp hands the kernel exactly the
    /// Ethernet header and the ARP payload, and a NIC pads short frames on the wire
    /// (virtual links such as veth deliver them unpadded).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        sendto(
            self.fd.as_fd().as_raw_fd(),
            frame,
            &self.link,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(drop)
        .map_err(io::Error::from)
    }
}
