//! PING_CHECK: one ICMP echo, answered within `connect_timeout`. An unprivileged ping
//! socket when the system allows it (net.ipv4.ping_group_range), a raw socket otherwise.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;

use crate::outcome::Reason;
use crate::probe::{ProbeSpec, prepare};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8] = b"keeplb PING_CHECK";

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request (IPv4 checksum filled in; the kernel fills ICMPv6's).
pub(crate) fn echo_request(v4: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![if v4 { ECHO_REQUEST_V4 } else { ECHO_REQUEST_V6 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if v4 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

fn open(domain: Domain, protocol: Protocol) -> Result<(Socket, bool), Reason> {
    match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(socket) => Ok((socket, false)),
        Err(_) => Socket::new(domain, Type::RAW, Some(protocol))
            .map(|s| (s, true))
            .map_err(|e| Reason::ConnectError(format!("ICMP socket: {e}"))),
    }
}

pub(crate) async fn probe(spec: &ProbeSpec) -> Result<(), Reason> {
    let v4 = spec.target.is_ipv4();
    let (domain, protocol) = if v4 {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    let (socket, raw) = open(domain, protocol)?;
    prepare(SockRef::from(&socket), spec, false)?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Reason::ConnectError(e.to_string()))?;
    // A datagram socket's plain send/receive calls suit ICMP sockets too.
    let socket =
        UdpSocket::from_std(socket.into()).map_err(|e| Reason::ConnectError(e.to_string()))?;
    let id = (std::process::id() as u16) ^ 0x4b4c;
    let seq = 1;
    let target = SocketAddr::new(spec.target.ip(), 0);
    socket
        .send_to(&echo_request(v4, id, seq), target)
        .await
        .map_err(|e| Reason::ConnectError(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let mut buf = vec![0u8; 2048];
    for _ in 0..1024 {
        let (n, from) = match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Err(Reason::ConnectTimeout),
            Ok(Err(e)) => return Err(Reason::ConnectError(e.to_string())),
            Ok(Ok(got)) => got,
        };
        if from.ip() != spec.target.ip() {
            continue;
        }
        let mut icmp = &buf[..n];
        if raw && v4 {
            // Raw IPv4 sockets deliver the IP header.
            let header = usize::from(icmp.first().map_or(0, |b| b & 0x0f)) * 4;
            icmp = icmp.get(header..).unwrap_or_default();
        }
        let [kind, _, _, _, id_hi, id_lo, seq_hi, seq_lo, ..] = *icmp else {
            continue;
        };
        let reply = if v4 { ECHO_REPLY_V4 } else { ECHO_REPLY_V6 };
        // Ping sockets rewrite the id; raw ones see everyone's replies.
        let ours = !raw || u16::from_be_bytes([id_hi, id_lo]) == id;
        if kind == reply && ours && u16::from_be_bytes([seq_hi, seq_lo]) == seq {
            return Ok(());
        }
    }
    Err(Reason::Protocol("no echo reply".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksums_to_zero() {
        let packet = echo_request(true, 0x1234, 1);
        assert_eq!(checksum(&packet), 0);
        assert_eq!(&packet[..2], &[8, 0]);
    }
}
