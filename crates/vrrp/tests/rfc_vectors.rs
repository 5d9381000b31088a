//! Hand-built vectors from the RFC 3768 / RFC 9568 formats, checksums worked out by hand
//! (one's-complement sums of 16-bit words, shown next to each vector), and one test per
//! decode and encode error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keeplb_vrrp::packet::MULTICAST_V4;
use keeplb_vrrp::{
    AdverInterval, Advertisement, Auth, AuthPassword, ChecksumForm, DecodeContext, DecodeError,
    EncodeContext, EncodeError, Family, Version,
};

const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const DST4: IpAddr = IpAddr::V4(MULTICAST_V4);
const SRC6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
const DST6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12));
const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x100));

fn ctx4() -> DecodeContext {
    DecodeContext {
        src: SRC4,
        dst: DST4,
    }
}

fn ctx6() -> DecodeContext {
    DecodeContext {
        src: SRC6,
        dst: DST6,
    }
}

fn enc(src: IpAddr, dst: IpAddr, checksum_form: ChecksumForm) -> EncodeContext {
    EncodeContext {
        src,
        dst,
        checksum_form,
    }
}

fn advert(version: Version, adver_int: AdverInterval, addresses: Vec<IpAddr>) -> Advertisement {
    Advertisement {
        version,
        vrid: 1,
        priority: 100,
        adver_int,
        auth: Auth::None,
        addresses,
    }
}

/// Internet checksum, written independently of the crate's, to build invalid packets with
/// otherwise valid checksums (message-only form).
fn fix_checksum(bytes: &mut [u8]) {
    bytes[6] = 0;
    bytes[7] = 0;
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    bytes[6..8].copy_from_slice(&ck.to_be_bytes());
}

/// VRRPv2, VRID 1, priority 100, one address 192.0.2.1, no auth, 1 s.
///
/// ```text
/// Sum:  2101 + 6401 + 0001 + 0000 + c000 + 0201 + 4 * 0000 = 1_4704
/// Fold: 4704 + 1 = 4705; checksum = !4705 = b8fa
/// ```
const V2_NONE: [u8; 20] = [
    0x21, 0x01, 0x64, 0x01, // version 2, type 1 | VRID 1 | priority 100 | count 1
    0x00, 0x01, 0xb8, 0xfa, // auth type 0 | adver int 1 s | checksum
    0xc0, 0x00, 0x02, 0x01, // 192.0.2.1
    0, 0, 0, 0, 0, 0, 0, 0, // auth data: zero for type 0
];

#[test]
fn v2_no_auth() {
    let expected = advert(Version::V2, AdverInterval::from_secs(1), vec![VIP4]);
    assert_eq!(
        Advertisement::decode(&V2_NONE, &ctx4()),
        Ok((expected.clone(), ChecksumForm::MessageOnly))
    );
    // The requested form does not matter for v2: its checksum never has a pseudo-header.
    for form in [ChecksumForm::PseudoHeader, ChecksumForm::MessageOnly] {
        assert_eq!(
            expected.encode(&enc(SRC4, DST4, form)),
            Ok(V2_NONE.to_vec())
        );
    }
}

#[test]
fn v2_auth_data_ignored_for_type_zero() {
    // RFC 3768 5.3.6.1: "ignored on reception" — only the checksum covers it.
    let mut bytes = V2_NONE;
    bytes[12..20].copy_from_slice(b"junkjunk");
    fix_checksum(&mut bytes);
    let (advert, _) = Advertisement::decode(&bytes, &ctx4()).expect("decode");
    assert_eq!(advert.auth, Auth::None);
}

#[test]
fn v2_simple_password() {
    let mut bytes = V2_NONE;
    bytes[4] = 1;
    bytes[12..20].copy_from_slice(b"abc\0\0\0\0\0");
    fix_checksum(&mut bytes);
    let (advert, _) = Advertisement::decode(&bytes, &ctx4()).expect("decode");
    assert_eq!(advert.auth, Auth::Password(AuthPassword::new(b"abc")));
    assert_eq!(
        advert.encode(&enc(SRC4, DST4, ChecksumForm::default())),
        Ok(bytes.to_vec())
    );
}

#[test]
fn v2_ah_is_decoded_as_its_own_type() {
    let mut bytes = V2_NONE;
    bytes[4] = 2;
    bytes[12..20].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    fix_checksum(&mut bytes);
    let (advert, _) = Advertisement::decode(&bytes, &ctx4()).expect("decode");
    assert_eq!(advert.auth, Auth::Ah([1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(advert.auth.type_code(), 2);
    assert_eq!(
        advert.encode(&enc(SRC4, DST4, ChecksumForm::default())),
        Ok(bytes.to_vec())
    );
}

/// VRRPv3 over IPv4, VRID 1, priority 100, 100 cs, one address 192.0.2.1, from
/// 192.0.2.10 to 224.0.0.18.
///
/// ```text
/// Message sum:   3101 + 6401 + 0064 + 0000 + c000 + 0201 = 1_5767
/// Message only:  fold 5767 + 1 = 5768; checksum = !5768 = a897
/// Pseudo-header: c000 + 020a (src) + e000 + 0012 (dst) + 0070 (0, proto 112)
///                + 000c (length 12) = 1_a298
/// With it:       1_5767 + 1_a298 = 2_f9ff; fold f9ff + 2 = fa01; checksum = !fa01 = 05fe
/// ```
const V3_IPV4_MESSAGE: [u8; 12] = [
    0x31, 0x01, 0x64, 0x01, // version 3, type 1 | VRID 1 | priority 100 | count 1
    0x00, 0x64, 0x00, 0x00, // reserved 0 | max adver int 100 cs | checksum (below)
    0xc0, 0x00, 0x02, 0x01, // 192.0.2.1
];

fn with_checksum(mut bytes: Vec<u8>, checksum: u16) -> Vec<u8> {
    bytes[6..8].copy_from_slice(&checksum.to_be_bytes());
    bytes
}

#[test]
fn v3_ipv4_both_checksum_forms() {
    let expected = advert(Version::V3, AdverInterval::from_centis(100), vec![VIP4]);
    let pseudo = with_checksum(V3_IPV4_MESSAGE.to_vec(), 0x05fe);
    let message_only = with_checksum(V3_IPV4_MESSAGE.to_vec(), 0xa897);

    assert_eq!(
        expected.encode(&enc(SRC4, DST4, ChecksumForm::PseudoHeader)),
        Ok(pseudo.clone())
    );
    assert_eq!(
        expected.encode(&enc(SRC4, DST4, ChecksumForm::MessageOnly)),
        Ok(message_only.clone())
    );
    // Sent to 224.0.0.18, the legacy unicast form is the pseudo-header form.
    assert_eq!(
        expected.encode(&enc(SRC4, DST4, ChecksumForm::LegacyUnicast)),
        Ok(pseudo.clone())
    );

    assert_eq!(
        Advertisement::decode(&pseudo, &ctx4()),
        Ok((expected.clone(), ChecksumForm::PseudoHeader))
    );
    assert_eq!(
        Advertisement::decode(&message_only, &ctx4()),
        Ok((expected, ChecksumForm::MessageOnly))
    );
}

#[test]
fn v3_ipv4_legacy_unicast_form() {
    // Same advert unicast to 192.0.2.20, but checksummed as if sent to 224.0.0.18.
    let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
    let expected = advert(Version::V3, AdverInterval::from_centis(100), vec![VIP4]);
    let legacy = with_checksum(V3_IPV4_MESSAGE.to_vec(), 0x05fe);
    assert_eq!(
        expected.encode(&enc(SRC4, peer, ChecksumForm::LegacyUnicast)),
        Ok(legacy.clone())
    );
    let ctx = DecodeContext {
        src: SRC4,
        dst: peer,
    };
    assert_eq!(
        Advertisement::decode(&legacy, &ctx),
        Ok((expected.clone(), ChecksumForm::LegacyUnicast))
    );
    // The current form differs: the real destination is in the pseudo-header.
    let current = expected
        .encode(&enc(SRC4, peer, ChecksumForm::PseudoHeader))
        .expect("encode");
    assert_ne!(current, legacy);
    assert_eq!(
        Advertisement::decode(&current, &ctx),
        Ok((expected, ChecksumForm::PseudoHeader))
    );
}

#[test]
fn v3_reserved_bits_ignored_on_receipt() {
    // RFC 9568 5.2.5: reserved bits MUST be ignored on receipt.
    let mut bytes = with_checksum(V3_IPV4_MESSAGE.to_vec(), 0);
    bytes[4] = 0xf0;
    fix_checksum(&mut bytes);
    let (advert, form) = Advertisement::decode(&bytes, &ctx4()).expect("decode");
    assert_eq!(form, ChecksumForm::MessageOnly);
    assert_eq!(advert.adver_int, AdverInterval::from_centis(100));
}

/// VRRPv3 over IPv6, VRID 1, priority 100, 100 cs, one address fe80::100, from fe80::1
/// to ff02::12.
///
/// ```text
/// Message sum:   3101 + 6401 + 0064 + 0000 + fe80 + 0100 = 1_94e6
/// Pseudo-header: fe80 + 0001 (src) + ff02 + 0012 (dst) + 0000 + 0018 (length 24)
///                + 0000 + 0070 (next header 112) = 1_fe1d
/// Total:         1_94e6 + 1_fe1d = 3_9303; fold 9303 + 3 = 9306; checksum = !9306 = 6cf9
/// ```
const V3_IPV6: [u8; 24] = [
    0x31, 0x01, 0x64, 0x01, // version 3, type 1 | VRID 1 | priority 100 | count 1
    0x00, 0x64, 0x6c, 0xf9, // reserved 0 | max adver int 100 cs | checksum
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, // fe80::100
];

#[test]
fn v3_ipv6() {
    let expected = advert(Version::V3, AdverInterval::from_centis(100), vec![VIP6]);
    assert_eq!(
        Advertisement::decode(&V3_IPV6, &ctx6()),
        Ok((expected.clone(), ChecksumForm::PseudoHeader))
    );
    // IPv6 always carries the pseudo-header, whatever was requested.
    for form in [ChecksumForm::PseudoHeader, ChecksumForm::MessageOnly] {
        assert_eq!(
            expected.encode(&enc(SRC6, DST6, form)),
            Ok(V3_IPV6.to_vec())
        );
    }
}

#[test]
fn v3_ipv6_message_only_checksum_is_rejected() {
    let mut bytes = V3_IPV6;
    fix_checksum(&mut bytes);
    assert!(matches!(
        Advertisement::decode(&bytes, &ctx6()),
        Err(DecodeError::BadChecksum { .. })
    ));
}

#[test]
fn v3_limits() {
    let max = advert(Version::V3, AdverInterval::V3_MAX, vec![VIP4]);
    let bytes = max
        .encode(&enc(SRC4, DST4, ChecksumForm::PseudoHeader))
        .expect("encode");
    assert_eq!(bytes[4..6], [0x0f, 0xff]);
    assert_eq!(
        Advertisement::decode(&bytes, &ctx4()),
        Ok((max, ChecksumForm::PseudoHeader))
    );

    let many: Vec<IpAddr> = (0..=254u8)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(i))))
        .collect();
    let full = advert(Version::V3, AdverInterval::from_centis(100), many);
    let bytes = full
        .encode(&enc(SRC6, DST6, ChecksumForm::PseudoHeader))
        .expect("encode");
    assert_eq!(bytes.len(), 8 + 255 * 16);
    assert_eq!(bytes[3], 255);
    assert_eq!(
        Advertisement::decode(&bytes, &ctx6()),
        Ok((full, ChecksumForm::PseudoHeader))
    );
}

#[test]
fn zero_addresses_roundtrip() {
    // RFC 9568 asks for at least one address, but the count check belongs with the rest
    // of the configuration-aware checks; the wire format can carry zero.
    let empty = advert(Version::V3, AdverInterval::from_centis(100), vec![]);
    let bytes = empty
        .encode(&enc(SRC4, DST4, ChecksumForm::PseudoHeader))
        .expect("encode");
    assert_eq!(bytes.len(), 8);
    assert_eq!(
        Advertisement::decode(&bytes, &ctx4()),
        Ok((empty, ChecksumForm::PseudoHeader))
    );
}

// ===== decode errors, one per receive check =====

#[test]
fn too_short() {
    for len in 0..8 {
        assert_eq!(
            Advertisement::decode(&V2_NONE[..len], &ctx4()),
            Err(DecodeError::TooShort { len })
        );
    }
}

#[test]
fn bad_version() {
    for version in [0u8, 1, 4, 15] {
        let mut bytes = V2_NONE;
        bytes[0] = version << 4 | 1;
        assert_eq!(
            Advertisement::decode(&bytes, &ctx4()),
            Err(DecodeError::BadVersion {
                version,
                family: Family::Ipv4
            })
        );
    }
    // VRRPv2 is IPv4 only.
    let mut bytes = V3_IPV6;
    bytes[0] = 0x21;
    assert_eq!(
        Advertisement::decode(&bytes, &ctx6()),
        Err(DecodeError::BadVersion {
            version: 2,
            family: Family::Ipv6
        })
    );
}

#[test]
fn bad_type() {
    let mut bytes = V2_NONE;
    bytes[0] = 0x22;
    fix_checksum(&mut bytes);
    assert_eq!(
        Advertisement::decode(&bytes, &ctx4()),
        Err(DecodeError::BadType { packet_type: 2 })
    );
}

#[test]
fn bad_length() {
    // Count says 2, one address present.
    let mut bytes = V2_NONE;
    bytes[3] = 2;
    assert_eq!(
        Advertisement::decode(&bytes, &ctx4()),
        Err(DecodeError::BadLength {
            count: 2,
            expected: 24,
            actual: 20
        })
    );
    // A trailing byte.
    let mut long = V2_NONE.to_vec();
    long.push(0);
    assert_eq!(
        Advertisement::decode(&long, &ctx4()),
        Err(DecodeError::BadLength {
            count: 1,
            expected: 20,
            actual: 21
        })
    );
    // v2 without its auth data.
    assert_eq!(
        Advertisement::decode(&V2_NONE[..12], &ctx4()),
        Err(DecodeError::BadLength {
            count: 1,
            expected: 20,
            actual: 12
        })
    );
    // An IPv4-sized address list received over IPv6.
    let v4_list = with_checksum(V3_IPV4_MESSAGE.to_vec(), 0x05fe);
    assert_eq!(
        Advertisement::decode(&v4_list, &ctx6()),
        Err(DecodeError::BadLength {
            count: 1,
            expected: 24,
            actual: 12
        })
    );
    // An IPv6-sized list received over IPv4 (4 entries' worth of bytes, count 1).
    assert_eq!(
        Advertisement::decode(&V3_IPV6, &ctx4()),
        Err(DecodeError::BadLength {
            count: 1,
            expected: 12,
            actual: 24
        })
    );
}

#[test]
fn bad_checksum() {
    let mut bytes = V2_NONE;
    bytes[7] ^= 0xff;
    assert_eq!(
        Advertisement::decode(&bytes, &ctx4()),
        Err(DecodeError::BadChecksum { received: 0xb805 })
    );
}

#[test]
fn unknown_auth_type() {
    for auth_type in [3u8, 254, 255] {
        let mut bytes = V2_NONE;
        bytes[4] = auth_type;
        fix_checksum(&mut bytes);
        assert_eq!(
            Advertisement::decode(&bytes, &ctx4()),
            Err(DecodeError::UnknownAuthType { auth_type })
        );
    }
}

#[test]
fn checks_run_in_rfc_order() {
    // Version before length, length before checksum, checksum before auth type.
    let mut bytes = V2_NONE.to_vec();
    bytes[0] = 0x41;
    bytes.push(0);
    assert!(matches!(
        Advertisement::decode(&bytes, &ctx4()),
        Err(DecodeError::BadVersion { .. })
    ));
    let mut bytes = V2_NONE.to_vec();
    bytes[7] ^= 1;
    bytes.push(0);
    assert!(matches!(
        Advertisement::decode(&bytes, &ctx4()),
        Err(DecodeError::BadLength { .. })
    ));
    let mut bytes = V2_NONE;
    bytes[4] = 9;
    assert!(matches!(
        Advertisement::decode(&bytes, &ctx4()),
        Err(DecodeError::BadChecksum { .. })
    ));
}

#[test]
fn labels_are_distinct() {
    let errors = [
        DecodeError::ContextFamilies {
            src: SRC4,
            dst: DST6,
        },
        DecodeError::TooShort { len: 0 },
        DecodeError::BadVersion {
            version: 0,
            family: Family::Ipv4,
        },
        DecodeError::BadType { packet_type: 0 },
        DecodeError::BadLength {
            count: 0,
            expected: 0,
            actual: 0,
        },
        DecodeError::BadChecksum { received: 0 },
        DecodeError::UnknownAuthType { auth_type: 0 },
    ];
    let labels: std::collections::BTreeSet<_> = errors.iter().map(DecodeError::label).collect();
    assert_eq!(labels.len(), errors.len());
}

#[test]
fn mixed_context_families() {
    let ctx = DecodeContext {
        src: SRC4,
        dst: DST6,
    };
    assert_eq!(
        Advertisement::decode(&V2_NONE, &ctx),
        Err(DecodeError::ContextFamilies {
            src: SRC4,
            dst: DST6
        })
    );
}

// ===== encode errors =====

#[test]
fn encode_errors() {
    let ok = enc(SRC4, DST4, ChecksumForm::PseudoHeader);
    let ok6 = enc(SRC6, DST6, ChecksumForm::PseudoHeader);
    let v3 = |addresses| advert(Version::V3, AdverInterval::from_centis(100), addresses);
    let v2 = |adver_int, addresses| advert(Version::V2, adver_int, addresses);

    assert_eq!(
        v3(vec![VIP4, VIP6]).encode(&ok),
        Err(EncodeError::MixedFamilies)
    );
    assert_eq!(
        v3(vec![VIP6]).encode(&ok),
        Err(EncodeError::FamilyMismatch {
            packet: Family::Ipv4,
            addresses: Family::Ipv6
        })
    );
    assert_eq!(
        v3(vec![VIP4]).encode(&ok6),
        Err(EncodeError::FamilyMismatch {
            packet: Family::Ipv6,
            addresses: Family::Ipv4
        })
    );
    assert_eq!(
        v3(vec![VIP4; 256]).encode(&ok),
        Err(EncodeError::TooManyAddresses { count: 256 })
    );
    assert_eq!(
        v2(AdverInterval::from_secs(1), vec![]).encode(&ok6),
        Err(EncodeError::V2OverIpv6)
    );
    for centis in [150, 25_600, 65_535] {
        let interval = AdverInterval::from_centis(centis);
        assert_eq!(
            v2(interval, vec![VIP4]).encode(&ok),
            Err(EncodeError::IntervalNotRepresentable {
                version: Version::V2,
                interval
            })
        );
    }
    let interval = AdverInterval::from_centis(4096);
    assert_eq!(
        advert(Version::V3, interval, vec![VIP4]).encode(&ok),
        Err(EncodeError::IntervalNotRepresentable {
            version: Version::V3,
            interval
        })
    );
    let mut with_auth = v3(vec![VIP4]);
    with_auth.auth = Auth::Password(AuthPassword::new(b"x"));
    assert_eq!(
        with_auth.encode(&ok),
        Err(EncodeError::AuthInV3 { auth_type: 1 })
    );
    assert_eq!(
        v3(vec![VIP4]).encode(&enc(SRC4, DST6, ChecksumForm::PseudoHeader)),
        Err(EncodeError::ContextFamilies {
            src: SRC4,
            dst: DST6
        })
    );
}

#[test]
fn v2_whole_second_intervals_encode() {
    for secs in [1u8, 3, 255] {
        let a = advert(Version::V2, AdverInterval::from_secs(secs), vec![VIP4]);
        let bytes = a
            .encode(&enc(SRC4, DST4, ChecksumForm::default()))
            .expect("encode");
        assert_eq!(bytes[5], secs);
        assert_eq!(
            Advertisement::decode(&bytes, &ctx4()),
            Ok((a, ChecksumForm::MessageOnly))
        );
    }
}
