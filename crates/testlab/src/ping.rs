//! A minimal ICMP echo ("ping") over raw sockets, run inside a namespace.
//!
//! Built in rather than shelling out to `ping`: iputils is not installed everywhere, and
//! its output and exit codes differ between implementations.

use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, recvfrom,
    sendto, setsockopt, sockopt,
};
use nix::sys::time::TimeVal;

use crate::error::{LabError, Result};

/// Interval between echo requests.
const RESEND: Duration = Duration::from_millis(200);

/// Makes echo identifiers differ between concurrent pings (raw sockets see every ICMP
/// packet of the namespace).
static NEXT_IDENT: AtomicU16 = AtomicU16::new(0);

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const MAGIC: &[u8] = b"keeplb-testlab";

/// Must run on a thread inside the namespace. Returns whether `dst` answered in time.
pub(crate) fn ping(dst: IpAddr, timeout: Duration) -> Result<bool> {
    // Truncation intended: only uniqueness among concurrent pings matters.
    #[allow(clippy::cast_possible_truncation)]
    let ident = (std::process::id() as u16) ^ NEXT_IDENT.fetch_add(1, Ordering::Relaxed);
    let (family, protocol, request_type) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, ECHO_REQUEST_V4),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, ECHO_REQUEST_V6),
    };
    let fd = nix::sys::socket::socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)
        .map_err(|e| LabError::sys("opening a raw ICMP socket", e))?;

    let start = Instant::now();
    let deadline = start + timeout;
    let mut seq: u16 = 0;
    loop {
        seq = seq.wrapping_add(1);
        let packet = echo_request(request_type, ident, seq);
        send(&fd, dst, &packet)?;
        // Listen for a reply until the next resend or the deadline.
        let resend_at = (Instant::now() + RESEND).min(deadline);
        while let Some(left) = resend_at.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            if receive_reply(&fd, dst, ident, left)? {
                return Ok(true);
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

fn echo_request(kind: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![kind, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(MAGIC);
    if kind == ECHO_REQUEST_V4 {
        // The kernel fills in the checksum for ICMPv6 raw sockets, not for ICMPv4.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn send(fd: &OwnedFd, dst: IpAddr, packet: &[u8]) -> Result<()> {
    let sent = match dst {
        IpAddr::V4(a) => sendto(
            fd.as_raw_fd(),
            packet,
            &SockaddrIn::from(SocketAddrV4::new(a, 0)),
            MsgFlags::empty(),
        ),
        IpAddr::V6(a) => sendto(
            fd.as_raw_fd(),
            packet,
            &SockaddrIn6::from(SocketAddrV6::new(a, 0, 0, 0)),
            MsgFlags::empty(),
        ),
    };
    match sent {
        Ok(_) => Ok(()),
        // No route / neighbour unreachable: that is "no reply", not a test error.
        Err(Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::EHOSTDOWN | Errno::ENETDOWN) => {
            Ok(())
        }
        Err(e) => Err(LabError::sys(
            format!("sending an echo request to {dst}"),
            e,
        )),
    }
}

/// Waits up to `wait` for one packet; true if it is the reply we want.
fn receive_reply(fd: &OwnedFd, dst: IpAddr, ident: u16, wait: Duration) -> Result<bool> {
    // SO_RCVTIMEO of zero means "block forever": use at least 1 ms.
    let micros = i64::try_from(wait.as_micros().max(1_000)).unwrap_or(i64::MAX);
    let timeout = TimeVal::new(micros / 1_000_000, micros % 1_000_000);
    setsockopt(fd, sockopt::ReceiveTimeout, &timeout)
        .map_err(|e| LabError::sys("setting SO_RCVTIMEO", e))?;
    let mut buf = [0u8; 1500];
    let received = match dst {
        IpAddr::V4(_) => recvfrom::<SockaddrIn>(fd.as_raw_fd(), &mut buf)
            .map(|(n, from)| (n, from.map(|a| IpAddr::V4(a.ip())))),
        IpAddr::V6(_) => recvfrom::<SockaddrIn6>(fd.as_raw_fd(), &mut buf)
            .map(|(n, from)| (n, from.map(|a| IpAddr::V6(a.ip())))),
    };
    let (len, from) = match received {
        Ok(r) => r,
        Err(Errno::EAGAIN | Errno::EINTR) => return Ok(false),
        // ICMP errors (e.g. unreachable) may be reported on the socket.
        Err(Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::ECONNREFUSED) => return Ok(false),
        Err(e) => return Err(LabError::sys(format!("receiving from {dst}"), e)),
    };
    if from != Some(dst) {
        return Ok(false);
    }
    let packet = &buf[..len];
    let icmp = match dst {
        // IPv4 raw sockets deliver the IP header too.
        IpAddr::V4(_) => {
            let header_len = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
            packet.get(header_len..).unwrap_or_default()
        }
        IpAddr::V6(_) => packet,
    };
    let reply_type = if dst.is_ipv4() {
        ECHO_REPLY_V4
    } else {
        ECHO_REPLY_V6
    };
    Ok(icmp.len() >= 8 + MAGIC.len()
        && icmp[0] == reply_type
        && icmp[4..6] == ident.to_be_bytes()
        && &icmp[8..8 + MAGIC.len()] == MAGIC)
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[allow(clippy::cast_possible_truncation)] // Folded to 16 bits above.
    let folded = sum as u16;
    !folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_request_verifies() {
        let packet = echo_request(ECHO_REQUEST_V4, 0x1234, 1);
        // A packet including its checksum sums to zero.
        assert_eq!(checksum(&packet), 0);
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }
}
