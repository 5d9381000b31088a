//! The IPv4 header in front of each datagram read from a raw IPv4 socket.
//!
//! Linux raw IPv4 sockets deliver the IP header with the payload; raw IPv6 sockets do
//! not (the hop limit arrives as an `IPV6_HOPLIMIT` control message instead), so there is
//! no IPv6 counterpart here.

use std::net::Ipv4Addr;

use crate::checksum::Checksum;

//
// IPv4 header (RFC 791 section 3.1):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |Version|  IHL  |Type of Service|          Total Length         |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |         Identification        |Flags|      Fragment Offset    |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |  Time to Live |    Protocol   |         Header Checksum       |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                       Source Address                          |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                    Destination Address                        |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                    Options                    |    Padding    |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// IHL counts 32-bit words and may exceed 5 when options are present (Router Alert, for
// one), so the payload starts at IHL * 4, never at a fixed 20. Total Length, not the
// number of bytes read, says where the payload ends: anything after it is link padding.
//
/// The fields of a received IPv4 header that VRRP reception needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Header {
    /// IHL * 4: where the payload starts.
    pub header_len: usize,
    /// DSCP and ECN (keepalived sends 0xc0, precedence "internetwork control").
    pub tos: u8,
    /// Header plus payload, in bytes.
    pub total_len: u16,
    pub identification: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    /// Must be 255 for multicast VRRP (checked by the state machine, which knows whether
    /// the instance is unicast).
    pub ttl: u8,
    /// 112 for VRRP; 51 (AH) when VRRPv2 uses IPsec AH.
    pub protocol: u8,
    /// Whether the header checksum verifies. The Linux kernel drops bad ones before raw
    /// sockets see them, so this is informational.
    pub checksum_ok: bool,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// Why a buffer does not start with a usable IPv4 header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    #[error("{len} bytes is shorter than the 20-byte minimum IPv4 header")]
    TooShort { len: usize },
    #[error("IP version {version}, expected 4")]
    NotIpv4 { version: u8 },
    #[error("IHL {ihl} ({} bytes) is below 5 or exceeds the {len} bytes received", usize::from(*ihl) * 4)]
    BadHeaderLength { ihl: u8, len: usize },
    #[error(
        "total length {total_len} is below the {header_len}-byte header or exceeds the {len} bytes received"
    )]
    BadTotalLength {
        total_len: u16,
        header_len: usize,
        len: usize,
    },
}

impl Ipv4Header {
    /// Minimum header length (IHL 5).
    pub const MIN_LEN: usize = 20;

    /// Parses the header at the start of `buf` and returns it with the payload, which is
    /// trimmed to Total Length (trailing link padding is dropped, not an error).
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), Ipv4Error> {
        let fixed: &[u8; Self::MIN_LEN] = buf
            .first_chunk()
            .ok_or(Ipv4Error::TooShort { len: buf.len() })?;
        let version = fixed[0] >> 4;
        if version != 4 {
            return Err(Ipv4Error::NotIpv4 { version });
        }
        let ihl = fixed[0] & 0x0f;
        let header_len = usize::from(ihl) * 4;
        if header_len < Self::MIN_LEN || header_len > buf.len() {
            return Err(Ipv4Error::BadHeaderLength {
                ihl,
                len: buf.len(),
            });
        }
        let total_len = u16::from_be_bytes([fixed[2], fixed[3]]);
        if usize::from(total_len) < header_len || usize::from(total_len) > buf.len() {
            return Err(Ipv4Error::BadTotalLength {
                total_len,
                header_len,
                len: buf.len(),
            });
        }
        let flags_fragment = u16::from_be_bytes([fixed[6], fixed[7]]);
        let header = Ipv4Header {
            header_len,
            tos: fixed[1],
            total_len,
            identification: u16::from_be_bytes([fixed[4], fixed[5]]),
            dont_fragment: flags_fragment & 0x4000 != 0,
            more_fragments: flags_fragment & 0x2000 != 0,
            fragment_offset: flags_fragment & 0x1fff,
            ttl: fixed[8],
            protocol: fixed[9],
            checksum_ok: Checksum::new().add(&buf[..header_len]).finish() == 0,
            src: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
            dst: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
        };
        Ok((header, &buf[header_len..usize::from(total_len)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keepalived's v3 advert from tests/fixtures/v3-ipv4.txt, IP header included.
    const CAPTURED: &str =
        "45c00020 00010000 ff70d04c 0a4d0001 e0000012 31347801 006460ce 0a4d006e";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn parses_captured_header() {
        let buf = hex(CAPTURED);
        let (h, payload) = Ipv4Header::parse(&buf).expect("parse");
        assert_eq!(h.header_len, 20);
        assert_eq!(h.tos, 0xc0);
        assert_eq!(h.total_len, 32);
        assert_eq!(h.identification, 1);
        assert!(!h.dont_fragment && !h.more_fragments);
        assert_eq!(h.fragment_offset, 0);
        assert_eq!(h.ttl, 255);
        assert_eq!(h.protocol, 112);
        assert!(h.checksum_ok);
        assert_eq!(h.src, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(h.dst, Ipv4Addr::new(224, 0, 0, 18));
        assert_eq!(payload, &buf[20..]);
    }

    #[test]
    fn options_move_the_payload() {
        // Same packet with a Router Alert option (94 04 00 00): IHL 6, total length 36.
        let mut buf = hex(CAPTURED);
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&36u16.to_be_bytes());
        buf[10..12].copy_from_slice(&[0, 0]);
        buf.splice(20..20, [0x94, 0x04, 0x00, 0x00]);
        let ck = Checksum::new().add(&buf[..24]).finish();
        buf[10..12].copy_from_slice(&ck.to_be_bytes());

        let (h, payload) = Ipv4Header::parse(&buf).expect("parse");
        assert_eq!(h.header_len, 24);
        assert!(h.checksum_ok);
        assert_eq!(payload, &hex(CAPTURED)[20..]);
    }

    #[test]
    fn padding_after_total_length_is_trimmed() {
        let mut buf = hex(CAPTURED);
        buf.extend_from_slice(&[0; 14]);
        let (h, payload) = Ipv4Header::parse(&buf).expect("parse");
        assert_eq!(h.total_len, 32);
        assert_eq!(payload.len(), 12);
    }

    #[test]
    fn flags_and_fragment_offset() {
        let mut buf = hex(CAPTURED);
        buf[6..8].copy_from_slice(&0x6005u16.to_be_bytes());
        let (h, _) = Ipv4Header::parse(&buf).expect("parse");
        assert!(h.dont_fragment && h.more_fragments);
        assert_eq!(h.fragment_offset, 5);
        assert!(!h.checksum_ok);
    }

    #[test]
    fn errors() {
        let good = hex(CAPTURED);
        assert_eq!(
            Ipv4Header::parse(&good[..19]),
            Err(Ipv4Error::TooShort { len: 19 })
        );

        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Header::parse(&v6),
            Err(Ipv4Error::NotIpv4 { version: 6 })
        );

        let mut small_ihl = good.clone();
        small_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Header::parse(&small_ihl),
            Err(Ipv4Error::BadHeaderLength { ihl: 4, len: 32 })
        );

        let mut big_ihl = good.clone();
        big_ihl[0] = 0x4f;
        assert_eq!(
            Ipv4Header::parse(&big_ihl),
            Err(Ipv4Error::BadHeaderLength { ihl: 15, len: 32 })
        );

        let mut long = good.clone();
        long[2..4].copy_from_slice(&33u16.to_be_bytes());
        assert_eq!(
            Ipv4Header::parse(&long),
            Err(Ipv4Error::BadTotalLength {
                total_len: 33,
                header_len: 20,
                len: 32
            })
        );

        let mut short = good;
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Header::parse(&short),
            Err(Ipv4Error::BadTotalLength {
                total_len: 19,
                header_len: 20,
                len: 32
            })
        );
    }
}
