//! Sockets: the raw `IPPROTO_VRRP` socket advertisements travel on, and the `AF_PACKET`
//! socket gratuitous ARP frames leave by.

use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessage, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrIn, recv,
    sendmsg, sendto, socket,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::event::Received;
use crate::ip::Ipv4Header;
use crate::packet::IPPROTO_VRRP;

/// IP precedence "internetwork control", as keepalived sends.
const TOS_INTERNETWORK_CONTROL: u32 = 0xc0;
/// Ethernet minimum frame length without FCS: frames are padded up to it.
const ETH_MIN_FRAME: usize = 60;

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
        let iov = [IoSlice::new(payload)];
        let cmsgs = [ControlMessage::Ipv4PacketInfo(&pktinfo)];
        loop {
            match sendmsg(
                sock.as_raw_fd(),
                &iov,
                &cmsgs,
                MsgFlags::MSG_DONTWAIT,
                Some(&to),
            ) {
                Err(Errno::EINTR) => continue,
                other => return other.map(drop).map_err(io::Error::from),
            }
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

    /// Sends `frame`, padded to the Ethernet minimum.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut padded = frame.to_vec();
        if padded.len() < ETH_MIN_FRAME {
            padded.resize(ETH_MIN_FRAME, 0);
        }
        sendto(
            self.fd.as_fd().as_raw_fd(),
            &padded,
            &self.link,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(drop)
        .map_err(io::Error::from)
    }
}
