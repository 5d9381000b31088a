//! VRRP advertisement codec: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798, RFC 9568).
//!
//! The codec only sees the VRRP message (what follows the IP header). The IP addresses
//! are needed anyway, for two reasons: the address family decides how long each entry of
//! the address list is (the VRRP header does not say), and the VRRPv3 checksum covers a
//! pseudo-header made of them.
//!
//! Decoding checks, in order, and fails with a distinct [`DecodeError`] for each: the
//! fixed header is present, the version fits the family, the type is Advertisement, the
//! length matches the address count, the checksum is right, the v2 auth type is known.
//! Everything else (TTL 255, VRID configured, password, interval) needs configuration and
//! belongs to the state machine; the decoded [`Advertisement`] carries all of it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::checksum::Checksum;

/// IP protocol number of VRRP, in both IPv4 and IPv6.
pub const IPPROTO_VRRP: u8 = 112;
/// Multicast group VRRP advertisements go to over IPv4.
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Multicast group VRRP advertisements go to over IPv6.
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit on send, and the only one accepted on receive for multicast: a router
/// cannot forward a packet and keep TTL 255, so this proves the sender is on-link.
pub const TTL: u8 = 255;
/// Priority a master sends when it gives up the role, so backups take over after Skew
/// time instead of the full Master_Down interval.
pub const PRIORITY_RESIGN: u8 = 0;
/// Priority of the router that owns the virtual addresses; it always preempts.
pub const PRIORITY_OWNER: u8 = 255;

/// The only VRRP packet type defined by either version.
const TYPE_ADVERTISEMENT: u8 = 1;
/// Version/type, VRID, priority, count, two version-specific bytes, checksum.
const FIXED_LEN: usize = 8;
const V2_AUTH_DATA_LEN: usize = 8;
const CHECKSUM_RANGE: std::ops::Range<usize> = 6..8;

/// VRRP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, optional authentication.
    V2,
    /// RFC 5798 / RFC 9568: IPv4 or IPv6, interval in centiseconds, no authentication.
    V3,
}

impl Version {
    /// The number carried in the high nibble of the first byte.
    pub const fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRPv{}", self.number())
    }
}

/// Address family of a VRRP packet: that of the IP header, and of every advertised address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family of `addr`.
    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Octets per entry in the address list.
    pub const fn addr_len(self) -> usize {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        }
    }

    /// The family shared by a packet's source and destination, if they share one.
    fn of_pair(src: &IpAddr, dst: &IpAddr) -> Option<Self> {
        let family = Family::of(src);
        (family == Family::of(dst)).then_some(family)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// Advertisement interval, in centiseconds (VRRPv3's unit).
///
/// VRRPv2 carries whole seconds in 8 bits (at most 255 s); VRRPv3 carries centiseconds in
/// 12 bits (at most 40.95 s). One type covers both so the state machine never converts;
/// whether a value fits a version is checked when encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdverInterval(u16);

impl AdverInterval {
    /// The largest interval VRRPv3's 12-bit field can carry.
    pub const V3_MAX: AdverInterval = AdverInterval(0x0fff);

    pub const fn from_centis(centis: u16) -> Self {
        AdverInterval(centis)
    }

    /// Whole seconds, as VRRPv2 carries them. 255 s is 25 500 cs, so every u8 fits.
    pub const fn from_secs(secs: u8) -> Self {
        AdverInterval(secs as u16 * 100)
    }

    pub const fn centis(self) -> u16 {
        self.0
    }

    /// The value of VRRPv2's field, if this interval is a whole number of seconds below 256.
    pub const fn whole_secs(self) -> Option<u8> {
        if !self.0.is_multiple_of(100) || self.0 / 100 > u8::MAX as u16 {
            return None;
        }
        Some((self.0 / 100) as u8)
    }

    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.0 as u64 * 10)
    }
}

impl fmt::Display for AdverInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}cs", self.0)
    }
}

/// A VRRPv2 simple-text password (keepalived's `auth_type PASS`): exactly 8 bytes.
///
/// Debug output hides the bytes so that logging an advertisement does not log the password.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthPassword([u8; 8]);

impl AuthPassword {
    pub const LEN: usize = 8;

    /// The password as keepalived puts it on the wire: shorter ones NUL-padded, longer ones
    /// cut to 8 bytes (keepalived only logs "Truncating auth_pass to 8 characters"; callers
    /// that want to warn check `password.len() > AuthPassword::LEN` themselves).
    pub fn new(password: &[u8]) -> Self {
        let mut bytes = [0; Self::LEN];
        let n = password.len().min(Self::LEN);
        bytes[..n].copy_from_slice(&password[..n]);
        AuthPassword(bytes)
    }

    /// The 8 bytes exactly as carried in the Authentication Data field.
    pub const fn from_wire(bytes: [u8; 8]) -> Self {
        AuthPassword(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Debug for AuthPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthPassword(<redacted>)")
    }
}

/// VRRPv2 authentication (Auth Type and Authentication Data). VRRPv3 has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    /// Auth Type 0. The data field is sent as zeros and ignored on receipt (RFC 3768 5.3.6).
    None,
    /// Auth Type 1: clear-text password (RFC 2338; RFC 3768 deprecated it but keepalived's
    /// `PASS` still sends it).
    Password(AuthPassword),
    /// Auth Type 2: IPsec AH (RFC 2338). Decoded so it can be told apart and counted, not
    /// implemented: with AH the VRRP message follows an AH header (IP protocol 51). The
    /// 8 data bytes are kept as received so re-encoding is faithful.
    Ah([u8; 8]),
}

impl Auth {
    /// The Auth Type field.
    pub const fn type_code(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Password(_) => 1,
            Auth::Ah(_) => 2,
        }
    }

    const fn data(&self) -> [u8; 8] {
        match self {
            Auth::None => [0; 8],
            Auth::Password(p) => p.0,
            Auth::Ah(data) => *data,
        }
    }
}

// What the VRRPv3 checksum covers, beyond the message itself.
//
// IPv4 pseudo-header (as for UDP, RFC 768), prepended to the message for the sum:
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                       Source Address                          |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                    Destination Address                        |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |      zero     | Protocol (112)|       VRRP message length     |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// IPv6 pseudo-header (RFC 8200 section 8.1): source (16 octets), destination (16 octets),
// 32-bit upper-layer length, 24 zero bits, next header 112.
//
// The destination is the one on the wire: 224.0.0.18 / ff02::12, or the unicast peer.

/// Which bytes a VRRP checksum covers.
///
/// VRRPv2 always covers the message only and VRRPv3 over IPv6 always includes the IPv6
/// pseudo-header; only VRRPv3 over IPv4 has a choice, because the RFC's IPv4 wording was
/// read differently by different implementations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ChecksumForm {
    /// Pseudo-header (with the packet's real destination) plus message. keepalived's
    /// default, and what keepalived 2.2.7 always sends; also FRR's default.
    #[default]
    PseudoHeader,
    /// The message only, like VRRPv2: keepalived's `v3_checksum_as_v2` (2.2.8 and later).
    MessageOnly,
    /// keepalived <= 1.3.6 for unicast VRRPv3 over IPv4, still sent by later versions with
    /// `old_unicast_checksum`: the pseudo-header names 224.0.0.18 as destination although
    /// the packet went to a unicast peer.
    LegacyUnicast,
}

/// What encoding needs besides the advertisement: the IP addresses the packet will carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeContext {
    /// The source address the kernel will put in the IP header (the pseudo-header must
    /// match it, so bind or pass it explicitly when sending).
    pub src: IpAddr,
    /// [`MULTICAST_V4`] / [`MULTICAST_V6`], or a unicast peer.
    pub dst: IpAddr,
    /// Consulted for VRRPv3 over IPv4 only; see [`ChecksumForm`].
    pub checksum_form: ChecksumForm,
}

/// What decoding needs besides the bytes: the received packet's IP addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeContext {
    pub src: IpAddr,
    pub dst: IpAddr,
}

//
// VRRPv2 advertisement (RFC 3768 section 5.1):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |   Auth Type   |   Adver Int   |          Checksum             |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                         IP Address (1)                        |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                            .                                  |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                         IP Address (n)                        |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                     Authentication Data (1)                   |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                     Authentication Data (2)                   |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Adver Int is in seconds. The checksum covers the VRRP message only. The auth data
// trails the address list, so the message length alone gives no hint of where the
// addresses end: Count decides, and the length must agree with it exactly.
//
// VRRPv3 advertisement (RFC 9568 section 5.1):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |Version| Type  | Virtual Rtr ID|   Priority    |IPvX Addr Count|
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |(rsvd) |     Max Adver Int     |          Checksum             |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                                                               |
// +                                                               +
// |                       IPvX Address(es)                        |
// +                                                               +
// |                                                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Max Adver Int is 12 bits of centiseconds; the reserved bits are sent as zero and
// ignored on receipt. All addresses are of the IP header's family (4 or 16 octets each);
// an IPv6 VRRP router's first address is its link-local one. The checksum includes a
// pseudo-header, see `ChecksumForm`.
//
/// A VRRP advertisement, either version.
///
/// Type (always Advertisement) and Checksum are not stored: encoding computes the checksum,
/// decoding verifies it and reports which [`ChecksumForm`] matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Advertisement {
    pub version: Version,
    /// Virtual Router ID. Valid ones are 1-255; 0 is decoded anyway so the state machine
    /// can count it as an unconfigured VRID.
    pub vrid: u8,
    /// 1-254 for backups, [`PRIORITY_OWNER`] for the address owner, [`PRIORITY_RESIGN`] for
    /// a master stepping down.
    pub priority: u8,
    /// VRRPv2: must be whole seconds. VRRPv3: at most [`AdverInterval::V3_MAX`].
    pub adver_int: AdverInterval,
    /// Always [`Auth::None`] for VRRPv3.
    pub auth: Auth,
    /// The virtual addresses, all of the packet's family. At most 255 (Count is one byte).
    pub addresses: Vec<IpAddr>,
}

/// Why an [`Advertisement`] cannot be put on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("source {src} and destination {dst} are of different address families")]
    ContextFamilies { src: IpAddr, dst: IpAddr },
    #[error("the advertised addresses mix IPv4 and IPv6")]
    MixedFamilies,
    #[error("an {addresses} address cannot be advertised in an {packet} packet")]
    FamilyMismatch { packet: Family, addresses: Family },
    #[error("{count} addresses do not fit the one-byte address count (at most 255)")]
    TooManyAddresses { count: usize },
    #[error("VRRPv2 is IPv4 only")]
    V2OverIpv6,
    #[error("VRRPv3 carries no authentication, but the advertisement has auth type {auth_type}")]
    AuthInV3 { auth_type: u8 },
    #[error("{version} cannot carry an advertisement interval of {interval}")]
    IntervalNotRepresentable {
        version: Version,
        interval: AdverInterval,
    },
}

/// Why received bytes are not a valid advertisement. One variant per receive check, so
/// each can have its own drop counter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Caller bug rather than a bad packet: a packet has one family.
    #[error("source {src} and destination {dst} are of different address families")]
    ContextFamilies { src: IpAddr, dst: IpAddr },
    #[error("{len} bytes is shorter than the 8-byte VRRP header")]
    TooShort { len: usize },
    /// Neither 2 nor 3, or 2 over IPv6 (VRRPv2 is IPv4 only).
    #[error("version {version} is not valid over {family}")]
    BadVersion { version: u8, family: Family },
    #[error("type {packet_type} is not Advertisement (1)")]
    BadType { packet_type: u8 },
    /// The length does not match Count. Also what an address list of the wrong family
    /// looks like (for instance IPv4-sized entries in a packet received over IPv6).
    #[error("{actual} bytes, but {count} addresses need exactly {expected}")]
    BadLength {
        count: u8,
        expected: usize,
        actual: usize,
    },
    #[error("bad checksum {received:#06x}")]
    BadChecksum { received: u16 },
    #[error("unknown VRRPv2 auth type {auth_type}")]
    UnknownAuthType { auth_type: u8 },
}

impl DecodeError {
    /// A stable snake_case name for the check that failed, for drop-counter labels.
    pub const fn label(&self) -> &'static str {
        match self {
            DecodeError::ContextFamilies { .. } => "context_families",
            DecodeError::TooShort { .. } => "too_short",
            DecodeError::BadVersion { .. } => "bad_version",
            DecodeError::BadType { .. } => "bad_type",
            DecodeError::BadLength { .. } => "bad_length",
            DecodeError::BadChecksum { .. } => "bad_checksum",
            DecodeError::UnknownAuthType { .. } => "unknown_auth_type",
        }
    }
}

impl Advertisement {
    /// The encoded length of the VRRP message.
    pub fn encoded_len(&self, family: Family) -> usize {
        let auth = match self.version {
            Version::V2 => V2_AUTH_DATA_LEN,
            Version::V3 => 0,
        };
        FIXED_LEN + self.addresses.len() * family.addr_len() + auth
    }

    /// The VRRP message (without IP header), checksum filled in.
    pub fn encode(&self, ctx: &EncodeContext) -> Result<Vec<u8>, EncodeError> {
        let family = Family::of_pair(&ctx.src, &ctx.dst).ok_or(EncodeError::ContextFamilies {
            src: ctx.src,
            dst: ctx.dst,
        })?;
        let count =
            u8::try_from(self.addresses.len()).map_err(|_| EncodeError::TooManyAddresses {
                count: self.addresses.len(),
            })?;
        check_address_families(&self.addresses, family)?;

        // The two version-specific bytes between Count and Checksum.
        let second_word = match self.version {
            Version::V2 => {
                if family == Family::Ipv6 {
                    return Err(EncodeError::V2OverIpv6);
                }
                let secs =
                    self.adver_int
                        .whole_secs()
                        .ok_or(EncodeError::IntervalNotRepresentable {
                            version: self.version,
                            interval: self.adver_int,
                        })?;
                [self.auth.type_code(), secs]
            }
            Version::V3 => {
                if self.auth != Auth::None {
                    return Err(EncodeError::AuthInV3 {
                        auth_type: self.auth.type_code(),
                    });
                }
                if self.adver_int > AdverInterval::V3_MAX {
                    return Err(EncodeError::IntervalNotRepresentable {
                        version: self.version,
                        interval: self.adver_int,
                    });
                }
                // Reserved nibble zero, then 12 bits of centiseconds.
                self.adver_int.centis().to_be_bytes()
            }
        };

        let mut buf = Vec::with_capacity(self.encoded_len(family));
        buf.push((self.version.number() << 4) | TYPE_ADVERTISEMENT);
        buf.push(self.vrid);
        buf.push(self.priority);
        buf.push(count);
        buf.extend_from_slice(&second_word);
        buf.extend_from_slice(&[0, 0]);
        for addr in &self.addresses {
            match addr {
                IpAddr::V4(a) => buf.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => buf.extend_from_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            buf.extend_from_slice(&self.auth.data());
        }

        let form = effective_form(self.version, family, ctx.checksum_form);
        let checksum = sum(form, &buf, ctx.src, ctx.dst).finish();
        buf[CHECKSUM_RANGE].copy_from_slice(&checksum.to_be_bytes());
        Ok(buf)
    }

    /// Decodes and validates a VRRP message (without IP header).
    ///
    /// The length must match the address count exactly: on Linux the kernel has already
    /// cut Ethernet padding off for raw sockets, and [`crate::ip::Ipv4Header::parse`]
    /// trims to the IP total length.
    pub fn decode(bytes: &[u8], ctx: &DecodeContext) -> Result<(Self, ChecksumForm), DecodeError> {
        let family = Family::of_pair(&ctx.src, &ctx.dst).ok_or(DecodeError::ContextFamilies {
            src: ctx.src,
            dst: ctx.dst,
        })?;
        let header: &[u8; FIXED_LEN] = bytes
            .first_chunk()
            .ok_or(DecodeError::TooShort { len: bytes.len() })?;
        let [ver_type, vrid, priority, count, b4, b5, ck_hi, ck_lo] = *header;

        let version = match (ver_type >> 4, family) {
            (2, Family::Ipv4) => Version::V2,
            (3, _) => Version::V3,
            (version, family) => return Err(DecodeError::BadVersion { version, family }),
        };
        let packet_type = ver_type & 0x0f;
        if packet_type != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType { packet_type });
        }

        let auth_len = match version {
            Version::V2 => V2_AUTH_DATA_LEN,
            Version::V3 => 0,
        };
        let addr_len = family.addr_len();
        let expected = FIXED_LEN + usize::from(count) * addr_len + auth_len;
        if bytes.len() != expected {
            return Err(DecodeError::BadLength {
                count,
                expected,
                actual: bytes.len(),
            });
        }

        let form =
            verify_checksum(version, family, bytes, ctx).ok_or(DecodeError::BadChecksum {
                received: u16::from_be_bytes([ck_hi, ck_lo]),
            })?;

        let (adver_int, auth) = match version {
            Version::V2 => {
                let data = bytes
                    .last_chunk::<V2_AUTH_DATA_LEN>()
                    .copied()
                    .unwrap_or_default();
                let auth = match b4 {
                    0 => Auth::None,
                    1 => Auth::Password(AuthPassword(data)),
                    2 => Auth::Ah(data),
                    auth_type => return Err(DecodeError::UnknownAuthType { auth_type }),
                };
                (AdverInterval::from_secs(b5), auth)
            }
            Version::V3 => (
                AdverInterval::from_centis(u16::from_be_bytes([b4 & 0x0f, b5])),
                Auth::None,
            ),
        };

        let list = &bytes[FIXED_LEN..expected - auth_len];
        let addresses = list
            .chunks_exact(addr_len)
            .map(|chunk| address_from(family, chunk))
            .collect();

        Ok((
            Advertisement {
                version,
                vrid,
                priority,
                adver_int,
                auth,
                addresses,
            },
            form,
        ))
    }
}

fn check_address_families(addresses: &[IpAddr], packet: Family) -> Result<(), EncodeError> {
    let has_v4 = addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = addresses.iter().any(IpAddr::is_ipv6);
    match (has_v4, has_v6) {
        (true, true) => Err(EncodeError::MixedFamilies),
        (true, false) if packet == Family::Ipv6 => Err(EncodeError::FamilyMismatch {
            packet,
            addresses: Family::Ipv4,
        }),
        (false, true) if packet == Family::Ipv4 => Err(EncodeError::FamilyMismatch {
            packet,
            addresses: Family::Ipv6,
        }),
        _ => Ok(()),
    }
}

/// `chunk` is exactly `family.addr_len()` bytes long (it comes from `chunks_exact`).
fn address_from(family: Family, chunk: &[u8]) -> IpAddr {
    match family {
        Family::Ipv4 => {
            let mut octets = [0; 4];
            octets.copy_from_slice(chunk);
            IpAddr::from(octets)
        }
        Family::Ipv6 => {
            let mut octets = [0; 16];
            octets.copy_from_slice(chunk);
            IpAddr::from(octets)
        }
    }
}

/// The form the RFCs impose, except for VRRPv3 over IPv4 where the caller chooses.
fn effective_form(version: Version, family: Family, requested: ChecksumForm) -> ChecksumForm {
    match (version, family) {
        (Version::V2, _) => ChecksumForm::MessageOnly,
        (Version::V3, Family::Ipv6) => ChecksumForm::PseudoHeader,
        (Version::V3, Family::Ipv4) => requested,
    }
}

/// Which accepted form `bytes` (checksum included) verifies under, if any.
///
/// For VRRPv3 over IPv4 the forms are tried in order: keepalived's default first, then
/// message-only, then (for unicast only; for multicast it is the same as the first) the
/// legacy unicast form. A packet could verify under two forms only if its pseudo-header
/// sums to zero; the first one is reported.
fn verify_checksum(
    version: Version,
    family: Family,
    bytes: &[u8],
    ctx: &DecodeContext,
) -> Option<ChecksumForm> {
    let candidates: &[ChecksumForm] = match (version, family) {
        (Version::V2, _) => &[ChecksumForm::MessageOnly],
        (Version::V3, Family::Ipv6) => &[ChecksumForm::PseudoHeader],
        (Version::V3, Family::Ipv4) if ctx.dst == IpAddr::V4(MULTICAST_V4) => {
            &[ChecksumForm::PseudoHeader, ChecksumForm::MessageOnly]
        }
        (Version::V3, Family::Ipv4) => &[
            ChecksumForm::PseudoHeader,
            ChecksumForm::MessageOnly,
            ChecksumForm::LegacyUnicast,
        ],
    };
    candidates
        .iter()
        .copied()
        .find(|&form| sum(form, bytes, ctx.src, ctx.dst).finish() == 0)
}

/// The checksum accumulator over `form`'s pseudo-header (if any) and `message`.
fn sum(form: ChecksumForm, message: &[u8], src: IpAddr, dst: IpAddr) -> Checksum {
    let mut ck = Checksum::new();
    // At most 8 + 255 * 16 + 8 bytes, so the length always fits 16 bits.
    let len = message.len() as u16;
    match (form, src, dst) {
        (ChecksumForm::MessageOnly, _, _) => {}
        (ChecksumForm::PseudoHeader, IpAddr::V4(s), IpAddr::V4(d)) => {
            ck.add(&s.octets()).add(&d.octets());
            ck.add(&[0, IPPROTO_VRRP]).add(&len.to_be_bytes());
        }
        (ChecksumForm::LegacyUnicast, IpAddr::V4(s), _) => {
            ck.add(&s.octets()).add(&MULTICAST_V4.octets());
            ck.add(&[0, IPPROTO_VRRP]).add(&len.to_be_bytes());
        }
        (_, IpAddr::V6(s), IpAddr::V6(d)) => {
            ck.add(&s.octets()).add(&d.octets());
            ck.add(&u32::from(len).to_be_bytes())
                .add(&[0, 0, 0, IPPROTO_VRRP]);
        }
        // Mixed families are rejected before any checksum is computed.
        _ => {}
    }
    ck.add(message);
    ck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_conversions() {
        assert_eq!(AdverInterval::from_secs(1).centis(), 100);
        assert_eq!(AdverInterval::from_secs(255).centis(), 25_500);
        assert_eq!(AdverInterval::from_centis(300).whole_secs(), Some(3));
        assert_eq!(AdverInterval::from_centis(50).whole_secs(), None);
        assert_eq!(AdverInterval::from_centis(25_600).whole_secs(), None);
        assert_eq!(
            AdverInterval::from_centis(50).as_duration(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn password_padding_and_truncation() {
        assert_eq!(AuthPassword::new(b"secret").as_bytes(), b"secret\0\0");
        assert_eq!(AuthPassword::new(b"longpassword9").as_bytes(), b"longpass");
        assert_eq!(AuthPassword::new(b"").as_bytes(), &[0; 8]);
        assert_eq!(
            format!("{:?}", AuthPassword::new(b"secret")),
            "AuthPassword(<redacted>)"
        );
    }
}
