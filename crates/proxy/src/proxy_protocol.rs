//! The PROXY protocol header (HAProxy's spec, versions 1 and 2) that tells a real
//! server who the client is, since a full proxy connects from its own address.

use std::net::{IpAddr, SocketAddr};

/// Which PROXY protocol version to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// The human-readable line (`PROXY TCP4 …\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const V2_VERSION_PROXY: u8 = 0x21;

/// The longest v2 header [`ProxyProtocol::header`] writes (IPv6 addresses): UDP
/// flows write the header in place before each datagram, in this much room.
pub(crate) const V2_MAX_HEADER: usize = 16 + 36;

/// Transport carried, for the v2 family byte's low nibble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// SOCK_STREAM.
    Stream,
    /// SOCK_DGRAM.
    Datagram,
}

impl ProxyProtocol {
    /// The header announcing a connection from `client` to `vip`.
    ///
    /// IPv4-mapped IPv6 addresses are written as IPv4. When the two addresses are of
    /// different families, v1 says `UNKNOWN` and v2 uses the LOCAL command, as the
    /// specification asks.
    pub fn header(self, transport: Transport, client: SocketAddr, vip: SocketAddr) -> Vec<u8> {
        let client = canonical(client);
        let vip = canonical(vip);
        match self {
            Self::V1 => v1(client, vip).into_bytes(),
            Self::V2 => v2(transport, client, vip),
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn v1(client: SocketAddr, vip: SocketAddr) -> String {
    let family = match (client.ip(), vip.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
        _ => return "PROXY UNKNOWN\r\n".to_owned(),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        vip.ip(),
        client.port(),
        vip.port()
    )
}

fn v2(transport: Transport, client: SocketAddr, vip: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let transport_bits = match transport {
        Transport::Stream => 0x1,
        Transport::Datagram => 0x2,
    };
    let mut addresses = Vec::with_capacity(36);
    let family = match (client.ip(), vip.ip()) {
        (IpAddr::V4(c), IpAddr::V4(v)) => {
            addresses.extend_from_slice(&c.octets());
            addresses.extend_from_slice(&v.octets());
            0x10
        }
        (IpAddr::V6(c), IpAddr::V6(v)) => {
            addresses.extend_from_slice(&c.octets());
            addresses.extend_from_slice(&v.octets());
            0x20
        }
        _ => {
            // LOCAL command, unspecified family, no addresses.
            out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
            return out;
        }
    };
    addresses.extend_from_slice(&client.port().to_be_bytes());
    addresses.extend_from_slice(&vip.port().to_be_bytes());
    out.push(V2_VERSION_PROXY);
    out.push(family | transport_bits);
    let len = u16::try_from(addresses.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&addresses);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_lines_match_the_specification_examples() {
        assert_eq!(
            ProxyProtocol::V1.header(
                Transport::Stream,
                sa("192.168.0.1:56324"),
                sa("192.168.0.11:443")
            ),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        assert_eq!(
            ProxyProtocol::V1.header(Transport::Stream, sa("[2001:db8::1]:1000"), sa("[::1]:80")),
            b"PROXY TCP6 2001:db8::1 ::1 1000 80\r\n"
        );
        assert_eq!(
            ProxyProtocol::V1.header(
                Transport::Stream,
                sa("[::ffff:10.0.0.1]:5"),
                sa("10.0.0.2:6")
            ),
            b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n",
            "mapped addresses are IPv4"
        );
        assert_eq!(
            ProxyProtocol::V1.header(Transport::Stream, sa("10.0.0.1:5"), sa("[2001:db8::1]:6")),
            b"PROXY UNKNOWN\r\n"
        );
    }

    #[test]
    fn v2_ipv4_tcp_header_bytes() {
        let header =
            ProxyProtocol::V2.header(Transport::Stream, sa("10.1.2.3:4660"), sa("10.9.8.7:80"));
        let expected: Vec<u8> = [
            &V2_SIGNATURE[..],
            &[0x21, 0x11, 0x00, 0x0c],
            &[10, 1, 2, 3, 10, 9, 8, 7],
            &[0x12, 0x34, 0x00, 0x50],
        ]
        .concat();
        assert_eq!(header, expected);
    }

    #[test]
    fn v2_ipv6_udp_and_mixed_families() {
        let header = ProxyProtocol::V2.header(
            Transport::Datagram,
            sa("[2001:db8::1]:1"),
            sa("[2001:db8::2]:2"),
        );
        assert_eq!(&header[12..16], &[0x21, 0x22, 0x00, 36]);
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(
            header.len(),
            V2_MAX_HEADER,
            "UDP flows keep room for the longest header before each datagram"
        );
        assert_eq!(header[16 + 15], 1);
        assert_eq!(&header[16 + 32..], &[0, 1, 0, 2]);
        let local =
            ProxyProtocol::V2.header(Transport::Stream, sa("10.0.0.1:1"), sa("[2001:db8::2]:2"));
        assert_eq!(&local[12..], &[0x20, 0x00, 0x00, 0x00]);
    }
}
