//! Listening sockets for virtual services.
//!
//! Every worker gets its own socket on the service's address (`SO_REUSEPORT`), so the
//! kernel spreads new connections and datagram flows over the workers without a
//! shared accept queue. `IP_FREEBIND` lets a backup director listen on a VIP it does
//! not hold yet: when VRRP moves the address here, the service is already open.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Pending connections per listening socket (the kernel caps it at somaxconn).
const BACKLOG: i32 = 4096;

fn socket(vip: SocketAddr, kind: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(vip), kind, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if vip.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&vip.into())?;
    Ok(socket)
}

/// A listening TCP socket on `vip`.
pub(crate) fn tcp(vip: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket(vip, Type::STREAM)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A UDP socket bound to `vip`.
pub(crate) fn udp(vip: SocketAddr) -> io::Result<std::net::UdpSocket> {
    Ok(socket(vip, Type::DGRAM)?.into())
}
