//! Real advertisements captured from keepalived 2.2.7 (see the header of each fixture
//! for the configuration and the lab): each must decode to the expected advertisement,
//! with the expected checksum form, and re-encode to identical bytes.

mod common;

use std::net::IpAddr;

use common::Fixture;
use keeplb_vrrp::ip::Ipv4Header;
use keeplb_vrrp::packet::{IPPROTO_VRRP, TTL};
use keeplb_vrrp::{
    AdverInterval, Advertisement, Auth, AuthPassword, ChecksumForm, DecodeContext, DecodeError,
    EncodeContext, Version,
};

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().expect("address")).collect()
}

/// Checks the IP-level facts of a capture and returns the VRRP message with its context.
fn open(fixture: &Fixture) -> (Vec<u8>, DecodeContext) {
    let src = fixture.ip("src");
    let dst = fixture.ip("dst");
    let vrrp = fixture.hex("vrrp");
    match fixture.str("family") {
        "ipv4" => {
            // What a raw IPv4 socket returns: header then message.
            let mut datagram = fixture.hex("ip-header");
            datagram.extend_from_slice(&vrrp);
            let (header, payload) = Ipv4Header::parse(&datagram).expect("IPv4 header");
            assert_eq!(IpAddr::V4(header.src), src);
            assert_eq!(IpAddr::V4(header.dst), dst);
            assert_eq!(header.ttl, fixture.u8("ttl"));
            assert_eq!(
                header.ttl, TTL,
                "keepalived sends TTL 255, unicast included"
            );
            assert_eq!(header.protocol, IPPROTO_VRRP);
            assert_eq!(header.tos, 0xc0);
            assert!(header.checksum_ok);
            assert_eq!(payload, vrrp.as_slice());
        }
        "ipv6" => assert_eq!(fixture.u8("hop-limit"), TTL),
        other => panic!("{}: family {other}", fixture.name),
    }
    (vrrp, DecodeContext { src, dst })
}

fn check(name: &str, expected: Advertisement, expected_form: ChecksumForm) {
    let fixture = Fixture::load(name);
    let (bytes, ctx) = open(&fixture);

    let (decoded, form) = Advertisement::decode(&bytes, &ctx).expect("decode");
    assert_eq!(decoded, expected, "{name}: decoded advertisement");
    assert_eq!(form, expected_form, "{name}: checksum form");

    let encoded = decoded
        .encode(&EncodeContext {
            src: ctx.src,
            dst: ctx.dst,
            checksum_form: form,
        })
        .expect("encode");
    assert_eq!(encoded, bytes, "{name}: re-encoded bytes");

    // Any single flipped bit must be caught (by the checksum or an earlier check).
    for i in 0..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[i] ^= 0x01;
        assert!(
            Advertisement::decode(&corrupt, &ctx).is_err(),
            "{name}: bit flip at byte {i} accepted"
        );
    }
}

fn v2(vrid: u8, priority: u8, auth: Auth, addresses: &[&str]) -> Advertisement {
    Advertisement {
        version: Version::V2,
        vrid,
        priority,
        adver_int: AdverInterval::from_secs(1),
        auth,
        addresses: ips(addresses),
    }
}

fn v3(vrid: u8, priority: u8, centis: u16, addresses: &[&str]) -> Advertisement {
    Advertisement {
        version: Version::V3,
        vrid,
        priority,
        adver_int: AdverInterval::from_centis(centis),
        auth: Auth::None,
        addresses: ips(addresses),
    }
}

#[test]
fn v2_pass_two_vips() {
    let auth = Auth::Password(AuthPassword::new(b"secret"));
    check(
        "v2-pass-2vips",
        v2(51, 150, auth, &["10.77.0.100", "10.77.0.101"]),
        ChecksumForm::MessageOnly,
    );
    // The password is NUL-padded on the wire.
    let bytes = Fixture::load("v2-pass-2vips").hex("vrrp");
    assert_eq!(&bytes[bytes.len() - 8..], b"secret\0\0");
}

#[test]
fn v2_pass_resignation() {
    let auth = Auth::Password(AuthPassword::new(b"secret"));
    check(
        "v2-pass-prio0",
        v2(51, 0, auth, &["10.77.0.100", "10.77.0.101"]),
        ChecksumForm::MessageOnly,
    );
}

#[test]
fn v2_pass_truncated_to_eight_bytes() {
    let auth = Auth::Password(AuthPassword::new(b"longpassword9"));
    assert_eq!(auth, Auth::Password(AuthPassword::from_wire(*b"longpass")));
    check(
        "v2-pass-truncated",
        v2(57, 150, auth, &["10.77.0.150"]),
        ChecksumForm::MessageOnly,
    );
}

#[test]
fn v2_unicast_without_auth() {
    check(
        "v2-unicast-noauth",
        v2(56, 100, Auth::None, &["10.77.0.140"]),
        ChecksumForm::MessageOnly,
    );
}

#[test]
fn v3_ipv4_default_checksum_includes_pseudo_header() {
    check(
        "v3-ipv4",
        v3(52, 120, 100, &["10.77.0.110"]),
        ChecksumForm::PseudoHeader,
    );
}

#[test]
fn v3_ipv4_two_vips_two_seconds() {
    check(
        "v3-ipv4-2vips-200cs",
        v3(53, 120, 200, &["10.77.0.120", "10.77.0.121"]),
        ChecksumForm::PseudoHeader,
    );
}

#[test]
fn v3_ipv4_unicast_pseudo_header_uses_real_destination() {
    check(
        "v3-ipv4-unicast",
        v3(55, 100, 100, &["10.77.0.130"]),
        ChecksumForm::PseudoHeader,
    );
}

#[test]
fn v3_ipv4_unicast_old_checksum() {
    check(
        "v3-ipv4-unicast-old-checksum",
        v3(58, 100, 100, &["10.77.0.160"]),
        ChecksumForm::LegacyUnicast,
    );
}

#[test]
fn v3_ipv6_link_local_first() {
    check(
        "v3-ipv6",
        v3(54, 200, 50, &["fe80::77:54", "fd77::54"]),
        ChecksumForm::PseudoHeader,
    );
}

#[test]
fn v3_ipv6_resignation() {
    check(
        "v3-ipv6-prio0",
        v3(54, 0, 50, &["fe80::77:54", "fd77::54"]),
        ChecksumForm::PseudoHeader,
    );
}

#[test]
fn v3_ipv4_message_only_form_roundtrips_and_is_reported() {
    let fixture = Fixture::load("v3-ipv4");
    let (bytes, ctx) = open(&fixture);
    let (advert, _) = Advertisement::decode(&bytes, &ctx).expect("decode");
    let message_only = advert
        .encode(&EncodeContext {
            src: ctx.src,
            dst: ctx.dst,
            checksum_form: ChecksumForm::MessageOnly,
        })
        .expect("encode");
    assert_ne!(message_only, bytes, "the forms differ in the checksum");
    assert_eq!(message_only[..6], bytes[..6]);
    assert_eq!(message_only[8..], bytes[8..]);
    assert_eq!(
        Advertisement::decode(&message_only, &ctx),
        Ok((advert, ChecksumForm::MessageOnly))
    );
}

#[test]
fn v3_ipv4_pseudo_header_binds_the_addresses() {
    let fixture = Fixture::load("v3-ipv4-unicast");
    let (bytes, ctx) = open(&fixture);
    let other_src = DecodeContext {
        src: "10.77.0.3".parse().expect("address"),
        dst: ctx.dst,
    };
    assert!(matches!(
        Advertisement::decode(&bytes, &other_src),
        Err(DecodeError::BadChecksum { received: 0x4a7b })
    ));
}

#[test]
fn v3_ipv4_capture_read_as_ipv6_is_a_length_error() {
    let fixture = Fixture::load("v3-ipv4");
    let (bytes, _) = open(&fixture);
    let ctx = DecodeContext {
        src: "fe80::77:ff:fe00:1".parse().expect("address"),
        dst: "ff02::12".parse().expect("address"),
    };
    assert_eq!(
        Advertisement::decode(&bytes, &ctx),
        Err(DecodeError::BadLength {
            count: 1,
            expected: 24,
            actual: 12
        })
    );
}
