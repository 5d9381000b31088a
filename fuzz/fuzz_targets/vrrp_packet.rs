//! VRRP reception as the daemon does it: the IPv4 header of a raw-socket datagram
//! (`Ipv4Header::parse`), or the addresses an IPv6 socket reports, then
//! `Advertisement::decode`. Must never panic; whatever decodes must re-encode and decode
//! to the same advertisement.
//!
//! Run from fuzz/: `cargo fuzz run -s none vrrp_packet corpus/vrrp_packet seeds/vrrp_packet -- -max_total_time=300`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keeplb_vrrp::ip::Ipv4Header;
use keeplb_vrrp::packet::{Advertisement, DecodeContext, EncodeContext, MULTICAST_V4};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        // A whole IPv4 datagram from the raw socket.
        0 => {
            if let Ok((header, payload)) = Ipv4Header::parse(rest) {
                assert!(header.header_len >= Ipv4Header::MIN_LEN);
                assert_eq!(
                    payload.len() + header.header_len,
                    usize::from(header.total_len)
                );
                decode(payload, IpAddr::V4(header.src), IpAddr::V4(header.dst));
            }
        }
        // An IPv6 datagram: source and destination come from the socket, not the bytes.
        1 => {
            let Some((addrs, payload)) = rest.split_first_chunk::<32>() else {
                return;
            };
            let (src, dst) = addrs.split_at(16);
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(src).unwrap_or_default());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(dst).unwrap_or_default());
            decode(payload, IpAddr::V6(src), IpAddr::V6(dst));
        }
        // The VRRP message alone over IPv4, to multicast or to a unicast peer.
        2 => {
            let Some((addrs, payload)) = rest.split_first_chunk::<4>() else {
                return;
            };
            let src = IpAddr::V4(Ipv4Addr::from(*addrs));
            decode(payload, src, IpAddr::V4(MULTICAST_V4));
            decode(payload, src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        }
        // A caller mixing families gets an error, not a panic.
        _ => {
            let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
            decode(rest, src, IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }
});

fn decode(payload: &[u8], src: IpAddr, dst: IpAddr) {
    let _ = keeplb_vrrp::event::peek_vrid(payload);
    let ctx = DecodeContext { src, dst };
    let (advert, form) = match Advertisement::decode(payload, &ctx) {
        Ok(decoded) => decoded,
        Err(error) => {
            let _ = (error.label(), error.to_string());
            return;
        }
    };
    let _ = format!("{advert:?}");
    let encoded = advert
        .encode(&EncodeContext {
            src,
            dst,
            checksum_form: form,
        })
        .expect("a decoded advertisement encodes");
    assert_eq!(encoded.len(), payload.len());
    let (again, _) =
        Advertisement::decode(&encoded, &ctx).expect("re-encoded advertisement decodes");
    assert_eq!(again, advert);
}
