//! Property tests: decoding never panics, and encode -> decode round-trips.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keeplb_vrrp::ip::Ipv4Header;
use keeplb_vrrp::packet::{MULTICAST_V4, MULTICAST_V6};
use keeplb_vrrp::{
    AdverInterval, Advertisement, Auth, AuthPassword, ChecksumForm, DecodeContext, EncodeContext,
    Version,
};
use proptest::prelude::*;

fn any_ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn any_ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any_ipv4().prop_map(IpAddr::V4),
        any_ipv6().prop_map(IpAddr::V6)
    ]
}

/// Destinations as they occur: the multicast group (often) or a unicast peer.
fn dst4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![Just(MULTICAST_V4), any_ipv4()]
}

fn dst6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![Just(MULTICAST_V6), any_ipv6()]
}

fn any_auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        Just(Auth::None),
        any::<[u8; 8]>().prop_map(|b| Auth::Password(AuthPassword::from_wire(b))),
        any::<[u8; 8]>().prop_map(Auth::Ah),
    ]
}

fn any_form() -> impl Strategy<Value = ChecksumForm> {
    prop_oneof![
        Just(ChecksumForm::PseudoHeader),
        Just(ChecksumForm::MessageOnly),
        Just(ChecksumForm::LegacyUnicast),
    ]
}

fn v2_advert() -> impl Strategy<Value = Advertisement> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any_auth(),
        prop::collection::vec(any_ipv4().prop_map(IpAddr::V4), 0..=20),
    )
        .prop_map(|(vrid, priority, secs, auth, addresses)| Advertisement {
            version: Version::V2,
            vrid,
            priority,
            adver_int: AdverInterval::from_secs(secs),
            auth,
            addresses,
        })
}

fn v3_advert<S: Strategy<Value = IpAddr>>(addr: S) -> impl Strategy<Value = Advertisement> {
    (
        any::<u8>(),
        any::<u8>(),
        0..=AdverInterval::V3_MAX.centis(),
        prop::collection::vec(addr, 0..=20),
    )
        .prop_map(|(vrid, priority, centis, addresses)| Advertisement {
            version: Version::V3,
            vrid,
            priority,
            adver_int: AdverInterval::from_centis(centis),
            auth: Auth::None,
            addresses,
        })
}

/// Encodes, decodes, and checks both the advertisement and the bytes survive.
fn roundtrip(advert: &Advertisement, ctx: &EncodeContext) -> Result<(), TestCaseError> {
    let bytes = advert
        .encode(ctx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        bytes.len(),
        advert.encoded_len(keeplb_vrrp::Family::of(&ctx.src))
    );
    let dctx = DecodeContext {
        src: ctx.src,
        dst: ctx.dst,
    };
    let (decoded, form) =
        Advertisement::decode(&bytes, &dctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, advert);
    // The reported form reproduces the bytes. It is the requested one unless two forms
    // coincide (legacy unicast sent to the group itself, or a pseudo-header summing to 0).
    let again = decoded
        .encode(&EncodeContext {
            checksum_form: form,
            ..*ctx
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(again, bytes);
    Ok(())
}

proptest! {
    #[test]
    fn decode_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        src in any_ip(),
        dst in any_ip(),
    ) {
        let _ = Advertisement::decode(&bytes, &DecodeContext { src, dst });
        let _ = Ipv4Header::parse(&bytes);
    }

    /// Random bytes rarely get past the version check; these start with a plausible
    /// header and have about the right length, so later checks get exercised too.
    #[test]
    fn decode_plausible_headers_never_panics(
        version in 0u8..=4,
        packet_type in 0u8..=2,
        count in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..300),
        v6 in any::<bool>(),
    ) {
        let mut bytes = vec![version << 4 | packet_type, 1, 100, count];
        bytes.extend_from_slice(&rest);
        let ctx = if v6 {
            DecodeContext { src: IpAddr::V6(Ipv6Addr::LOCALHOST), dst: IpAddr::V6(MULTICAST_V6) }
        } else {
            DecodeContext { src: IpAddr::V4(Ipv4Addr::LOCALHOST), dst: IpAddr::V4(MULTICAST_V4) }
        };
        let _ = Advertisement::decode(&bytes, &ctx);
    }

    /// Damaged valid packets never panic, and whatever still decodes re-encodes to
    /// something that decodes to the same advertisement.
    #[test]
    fn mutated_packets(
        advert in v3_advert(any_ipv4().prop_map(IpAddr::V4)),
        src in any_ipv4(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let ctx = EncodeContext {
            src: IpAddr::V4(src),
            dst: IpAddr::V4(MULTICAST_V4),
            checksum_form: ChecksumForm::PseudoHeader,
        };
        let mut bytes = advert.encode(&ctx).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, xor) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let dctx = DecodeContext { src: ctx.src, dst: ctx.dst };
        if let Ok((decoded, form)) = Advertisement::decode(&bytes, &dctx) {
            let again = decoded
                .encode(&EncodeContext { checksum_form: form, ..ctx })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(Advertisement::decode(&again, &dctx), Ok((decoded, form)));
        }
    }

    #[test]
    fn v2_roundtrip(advert in v2_advert(), src in any_ipv4(), dst in dst4(), form in any_form()) {
        roundtrip(&advert, &EncodeContext { src: IpAddr::V4(src), dst: IpAddr::V4(dst), checksum_form: form })?;
    }

    #[test]
    fn v3_ipv4_roundtrip(
        advert in v3_advert(any_ipv4().prop_map(IpAddr::V4)),
        src in any_ipv4(),
        dst in dst4(),
        form in any_form(),
    ) {
        roundtrip(&advert, &EncodeContext { src: IpAddr::V4(src), dst: IpAddr::V4(dst), checksum_form: form })?;
    }

    #[test]
    fn v3_ipv6_roundtrip(
        advert in v3_advert(any_ipv6().prop_map(IpAddr::V6)),
        src in any_ipv6(),
        dst in dst6(),
        form in any_form(),
    ) {
        roundtrip(&advert, &EncodeContext { src: IpAddr::V6(src), dst: IpAddr::V6(dst), checksum_form: form })?;
    }
}
