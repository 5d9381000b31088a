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

/// Fails with `AddrInUse` when another program already uses `vip` for `kind`.
///
/// The workers' sockets share the address through `SO_REUSEPORT`, which would just as
/// quietly share it with another program that set it too (HAProxy does by default) and
/// split the clients between them. A socket bound without it meets any other user of
/// the address first; it is closed at once.
pub(crate) fn ensure_free(vip: SocketAddr, kind: Type) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(vip), kind, None)?;
    if vip.is_ipv6() {
        probe.set_only_v6(true)?;
        probe.set_freebind_v6(true)?;
    } else {
        probe.set_freebind_v4(true)?;
    }
    if kind == Type::STREAM {
        // Connections left in TIME_WAIT by an earlier service on the address must not
        // count as a user; another listener then shows at listen().
        probe.set_reuse_address(true)?;
        probe.bind(&vip.into())?;
        probe.listen(1)?;
    } else {
        probe.bind(&vip.into())?;
    }
    Ok(())
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
