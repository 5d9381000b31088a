//! The IPVS connection-synchronisation protocol, version 1 (and version 0 on receipt),
//! byte for byte as net/netfilter/ipvs/ip_vs_sync.c puts it on the wire.
//!
//! keepalived's `lvs_sync_daemon` makes the kernel of the VRRP MASTER multicast its
//! connections and persistence templates (UDP to 224.0.0.81:8848, TTL 1, by default)
//! and the BACKUP enter them in its own table, so that persistent clients stay on their
//! real server after a failover. keeplb proxies TCP in userspace, so its connections
//! cannot move; it syncs persistence templates only, which is what keeps persistence
//! across a failover. It still decodes whatever a kernel master sends, connections
//! included, so the caller may log and skip them.
//!
//! This module is the wire format alone: [`encode`] packs [`SyncConn`]s into datagrams,
//! [`decode`] parses one. [`crate::ConnTable::export_templates`] and
//! [`crate::ConnTable::import_template`] turn templates into [`SyncConn`]s and back.
//!
//! # Wire format (all integers big-endian)
//!
//! Message header, 8 bytes (`struct ip_vs_sync_mesg`): `reserved` (0, where version 0
//! put its entry count, so that version 0 receivers drop version 1 messages), `syncid`,
//! `size` (u16, the whole datagram), `nr_conns`, `version` (1), `spare` (u16, 0).
//!
//! Entry (`struct ip_vs_sync_v4`, 36 bytes; `ip_vs_sync_v6`, 72 bytes): `type` (bit 0
//! `STYPE_F_INET6`), `protocol` (IP protocol number, 0 for fwmark templates),
//! `ver_size` (u16: entry version in the top 4 bits, always 0, and the entry's length
//! in the low 12, options included, padding excluded), `flags` (u32, `IP_VS_CONN_F_*`),
//! `state` (u16), `cport`, `vport`, `dport` (u16 each), `fwmark` (u32), `timeout`
//! (u32, seconds: the kernel sends `cp->timeout / HZ`), then `caddr`, `vaddr`, `daddr`
//! (4 or 16 bytes each). Options follow as type (u8), length (u8, never 0), data:
//! `IPVS_OPT_SEQ_DATA` (1, 24 bytes of TCP sequence adjustment, skipped here),
//! `IPVS_OPT_PE_DATA` (2, the persistence engine's key: the SIP Call-ID) and
//! `IPVS_OPT_PE_NAME` (3, the engine's name, at most 16 bytes). An option type with bit
//! 6 (`IPVS_OPT_F_PARAM`) set may be ignored by a receiver that does not know it; an
//! unknown one without it makes the receiver skip the entry.
//!
//! Padding: each entry after the first starts on a 4-byte boundary of the message; the
//! zero bytes before it count in the message size but not in any entry's size, and the
//! last entry is not padded (`ip_vs_sync_conn` pads *before* an entry, never after).
//!
//! # Message length
//!
//! keepalived's `maxlen` is the kernel's `sync_maxlen`, the UDP payload of a sync
//! message. Unset, the kernel's master uses a 1500-byte MTU whatever the interface:
//! [`DEFAULT_MAX_LEN_V4`] (1500 − 20 − 8) for an IPv4 group, [`DEFAULT_MAX_LEN_V6`]
//! (1500 − 40 − 8) for IPv6; a given value is clamped to `1..=65535 − headers`. A
//! receiver should read with a buffer of [`MAX_DATAGRAM`] bytes: a kernel backup reads
//! `max(MTU, 1500) − headers`, which is enough for any kernel master at default
//! settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{SyncDecodeError, SyncEncodeError};
use crate::service::{FTP_PORT, PersistenceEngine, Protocol, ServiceAddr};

/// The kernel's default multicast group (`IP_VS_SYNC_GROUP`).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The kernel's default UDP port (`IP_VS_SYNC_PORT`); sync thread `n` uses port + n.
pub const DEFAULT_PORT: u16 = 8848;
/// The kernel's default multicast TTL.
pub const DEFAULT_TTL: u8 = 1;
/// The default sync message length for an IPv4 group: 1500 − IPv4 header − UDP header.
pub const DEFAULT_MAX_LEN_V4: usize = 1500 - 20 - 8;
/// The default sync message length for an IPv6 group: 1500 − IPv6 header − UDP header.
pub const DEFAULT_MAX_LEN_V6: usize = 1500 - 40 - 8;
/// The largest datagram a sync message can be (its size field is 16 bits).
pub const MAX_DATAGRAM: usize = 65535;

/// The message length a master uses for keepalived's `maxlen` (`None` or 0 when
/// unset), as the kernel's `start_sync_thread` settles it for a master: unset, the
/// default of the group's family ([`DEFAULT_MAX_LEN_V4`] or [`DEFAULT_MAX_LEN_V6`]);
/// set, clamped to `1..=65535 − IP header − UDP header`.
pub fn master_max_len(configured: Option<usize>, group_is_v6: bool) -> usize {
    let (default, headers) = if group_is_v6 {
        (DEFAULT_MAX_LEN_V6, 40 + 8)
    } else {
        (DEFAULT_MAX_LEN_V4, 20 + 8)
    };
    match configured {
        None | Some(0) => default,
        Some(len) => len.clamp(1, MAX_DATAGRAM - headers),
    }
}
/// The version this module sends (`SYNC_PROTO_VER`).
pub const PROTOCOL_VERSION: u8 = 1;

/// Length of the version 1 message header.
pub const HEADER_LEN: usize = 8;
/// Length of the version 0 message header.
const HEADER_V0_LEN: usize = 4;
/// Fixed part of an IPv4 entry (`sizeof(struct ip_vs_sync_v4)`).
pub const ENTRY_V4_LEN: usize = 36;
/// Fixed part of an IPv6 entry (`sizeof(struct ip_vs_sync_v6)`).
pub const ENTRY_V6_LEN: usize = 72;
/// A version 0 entry without sequence data (`SIMPLE_CONN_SIZE`).
const ENTRY_V0_LEN: usize = 24;
/// The TCP sequence adjustment data (`struct ip_vs_sync_conn_options`).
const SEQ_DATA_LEN: usize = 24;

/// `STYPE_F_INET6`: the entry's addresses are IPv6.
const TYPE_INET6: u8 = 1;
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
/// `IPVS_OPT_F_PARAM`: an option a receiver may ignore.
const OPT_F_PARAM: u8 = 1 << 6;
/// `IP_VS_PENAME_MAXLEN`.
const PE_NAME_MAX: usize = 16;
/// `SVER_MASK`: the length bits of `ver_size`.
const SIZE_MASK: u16 = 0x0fff;
/// `SVER_SHIFT`.
const VERSION_SHIFT: u16 = 12;

/// `IP_VS_CONN_F_*` bits of [`SyncConn::flags`] (include/uapi/linux/ip_vs.h).
pub mod flags {
    /// Forwarding-method bits; 0 is masquerading (NAT), which a full proxy resembles.
    pub const FWD_MASK: u32 = 0x0007;
    /// Entry created by sync (set by receivers, never sent by a first-hand master).
    pub const SYNC: u32 = 0x0020;
    /// No output packets (DR, tunnel).
    pub const NO_OUTPUT: u32 = 0x0080;
    /// Not established: every template carries it (the destination's `conn_flags`
    /// always include it).
    pub const INACTIVE: u32 = 0x0100;
    /// Output and input sequence adjustment (`IP_VS_CONN_F_SEQ_MASK`).
    pub const SEQ_MASK: u32 = 0x0600;
    /// No client port yet.
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling: never synced.
    pub const ONE_PACKET: u32 = 0x2000;
}

/// The flags of a template the kernel makes for a masquerading (NAT) destination:
/// `IP_VS_CONN_F_TEMPLATE` from `ip_vs_sched_persist`, `IP_VS_CONN_F_INACTIVE` from the
/// destination's `conn_flags`. keeplb is a proxy, closest to NAT.
pub const TEMPLATE_FLAGS: u32 = flags::TEMPLATE | flags::INACTIVE;
/// A template's state (`IP_VS_CTPL_S_NONE`).
pub const TEMPLATE_STATE: u16 = 0;
/// How long a received template without a timeout (version 0) lives: the kernel's
/// `3*60*HZ` in `ip_vs_proc_conn`.
pub const DEFAULT_TEMPLATE_TIMEOUT: Duration = Duration::from_secs(180);

/// Number of states of IPVS's TCP protocol (`IP_VS_TCP_S_LAST`).
const TCP_STATES: u16 = 11;
/// Number of states of IPVS's UDP protocol (`IP_VS_UDP_S_LAST`).
const UDP_STATES: u16 = 1;

/// One synced connection or persistence template (a `struct ip_vs_sync_v4` or `_v6`
/// entry with its options).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncConn {
    /// Protocol; [`Protocol::Ip`] for fwmark templates.
    pub protocol: Protocol,
    /// Client address and port (port 0, and the address masked by the persistence
    /// granularity, for templates).
    pub client: SocketAddr,
    /// Virtual address and port; a fwmark template carries the mark as its address
    /// (in the first 32 bits) and port 0; port-zero and FTP templates have port 0.
    pub vip: SocketAddr,
    /// Real server address and port (port 0 for port-zero and FTP templates).
    pub dest: SocketAddr,
    /// The packet's firewall mark (the service's mark for fwmark templates, else 0).
    pub fwmark: u32,
    /// `IP_VS_CONN_F_*` bits as sent ([`TEMPLATE_FLAGS`] for keeplb's templates).
    pub flags: u32,
    /// The IPVS state ([`TEMPLATE_STATE`] for templates; `IP_VS_TCP_S_*` for TCP).
    pub state: u16,
    /// The entry's timeout, whole seconds on the wire; zero means none was sent
    /// (version 0), and the receiver picks the kernel's default.
    pub timeout: Duration,
    /// The persistence engine and its key (the SIP Call-ID), templates only.
    pub persistence_engine: Option<(PersistenceEngine, Arc<[u8]>)>,
}

impl SyncConn {
    /// Whether this is a persistence template (`IP_VS_CONN_F_TEMPLATE`).
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// Whether a template of this entry belongs to the service `addr`, as the kernel
    /// makes templates: a fwmark template by its mark; others by protocol and virtual
    /// address, and by port unless the template's port is 0 (port-zero services and
    /// FTP, whose templates cover every port).
    pub fn matches_service(&self, addr: ServiceAddr) -> bool {
        match addr {
            ServiceAddr::Fwmark(mark) => self.protocol == Protocol::Ip && self.fwmark == mark,
            ServiceAddr::Addr(proto, vip) => {
                proto == self.protocol
                    && vip.ip() == self.vip.ip()
                    && (vip.port() == self.vip.port()
                        || (self.vip.port() == 0 && matches!(vip.port(), 0 | FTP_PORT)))
            }
        }
    }
}

/// A decoded sync datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMessage {
    /// The sender's sync id (keepalived's `id`).
    pub sync_id: u8,
    /// The protocol version: 1, or 0 for the old format (IPv4 only, no timeout, no
    /// fwmark, no persistence-engine data).
    pub version: u8,
    /// The entries, in message order.
    pub conns: Vec<SyncConn>,
    /// Entries skipped one by one, as the kernel skips them, leaving the others valid.
    pub skipped: Vec<Skipped>,
}

impl SyncMessage {
    fn empty(sync_id: u8, version: u8) -> Self {
        Self {
            sync_id,
            version,
            conns: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Whether a backup with sync id `backup_id` takes this message: the kernel's
    /// backup ignores other ids unless its own is 0.
    pub fn accepted_by(&self, backup_id: u8) -> bool {
        backup_id == 0 || backup_id == self.sync_id
    }
}

/// An entry the receiver skips (the kernel's positive returns of
/// `ip_vs_proc_sync_conn`, and the `continue`s of `ip_vs_process_message_v0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Index of the entry in the message.
    pub index: usize,
    /// Why.
    pub reason: SkipReason,
}

/// Why one entry is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// An option type without `IPVS_OPT_F_PARAM` the receiver does not know.
    UnknownMandatoryOption(u8),
    /// A protocol IPVS (for connections) or keeplb (for templates: TCP, UDP and fwmark
    /// only) does not handle.
    UnsupportedProtocol(u8),
    /// A connection state out of its protocol's range.
    InvalidState(u16),
    /// Persistence-engine data without an engine name ("Invalid PE parameters").
    EngineDataWithoutName,
    /// An engine this receiver does not have ("no %s engine found/loaded").
    UnknownEngine,
}

/// Packs `conns` into sync datagrams of sync id `sync_id`, each at most `max_len` bytes,
/// filling each before starting the next, as the kernel's master does. An entry too
/// large for `max_len` on its own gets a datagram of its own, as in the kernel (which
/// sizes a buffer `max(entry + header, max_len)`); the largest entry is 347 bytes, so
/// that only happens with an unrealistically small `max_len`. A message holds at most
/// 255 entries (its count is one byte). No entry, no datagram. An entry that cannot be
/// encoded is left out and reported, and the others travel.
pub fn encode(sync_id: u8, conns: &[SyncConn], max_len: usize) -> Encoded {
    let mut datagrams = Vec::new();
    let mut refused = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for (index, conn) in conns.iter().enumerate() {
        let entry = match encode_entry(index, conn) {
            Ok(entry) => entry,
            Err(e) => {
                refused.push(e);
                continue;
            }
        };
        if let Some(message) = current.take() {
            let pad = message.len().wrapping_neg() & 3;
            let full = message.len() + pad + entry.len() > max_len || message[4] == u8::MAX;
            if full {
                datagrams.push(finish(message));
            } else {
                current = Some(message);
            }
        }
        let message = current.get_or_insert_with(|| {
            let mut header = vec![0; HEADER_LEN];
            header[1] = sync_id;
            header[5] = PROTOCOL_VERSION;
            header
        });
        message.resize(message.len() + (message.len().wrapping_neg() & 3), 0);
        message.extend_from_slice(&entry);
        message[4] += 1;
    }
    datagrams.extend(current.map(finish));
    Encoded { datagrams, refused }
}

/// What [`encode`] made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The sync messages, each to be sent as one datagram.
    pub datagrams: Vec<Vec<u8>>,
    /// Why each entry left out could not be encoded.
    pub refused: Vec<SyncEncodeError>,
}

/// Writes the size field of a complete message.
fn finish(mut message: Vec<u8>) -> Vec<u8> {
    let size = u16::try_from(message.len()).unwrap_or(u16::MAX);
    message[2..4].copy_from_slice(&size.to_be_bytes());
    message
}

fn encode_entry(index: usize, conn: &SyncConn) -> Result<Vec<u8>, SyncEncodeError> {
    let addrs = [conn.client.ip(), conn.vip.ip(), conn.dest.ip()];
    let v6 = match addrs {
        [IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)] => false,
        [IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(_)] => true,
        _ => return Err(SyncEncodeError::MixedFamilies { index }),
    };
    let mut entry = Vec::with_capacity(ENTRY_V6_LEN + 2 * 2 + 255 + PE_NAME_MAX);
    entry.push(if v6 { TYPE_INET6 } else { 0 });
    entry.push(protocol_number(conn.protocol));
    entry.extend_from_slice(&[0, 0]); // ver_size, once the length is known
    entry.extend_from_slice(&conn.flags.to_be_bytes());
    entry.extend_from_slice(&conn.state.to_be_bytes());
    for port in [conn.client.port(), conn.vip.port(), conn.dest.port()] {
        entry.extend_from_slice(&port.to_be_bytes());
    }
    entry.extend_from_slice(&conn.fwmark.to_be_bytes());
    let timeout = u32::try_from(conn.timeout.as_secs()).unwrap_or(u32::MAX);
    entry.extend_from_slice(&timeout.to_be_bytes());
    for addr in addrs {
        match addr {
            IpAddr::V4(v4) => entry.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => entry.extend_from_slice(&v6.octets()),
        }
    }
    if let Some((engine, data)) = &conn.persistence_engine {
        let data_len = u8::try_from(data.len()).ok().filter(|&len| len > 0).ok_or(
            SyncEncodeError::EngineData {
                index,
                len: data.len(),
            },
        )?;
        entry.extend_from_slice(&[OPT_PE_DATA, data_len]);
        entry.extend_from_slice(data);
        let name = engine.name().as_bytes();
        // Engine names are short constants ("sip").
        entry.extend_from_slice(&[OPT_PE_NAME, u8::try_from(name.len()).unwrap_or(0)]);
        entry.extend_from_slice(name);
    }
    // At most 72 + 2 + 255 + 2 + 16 bytes: always within the 12 length bits.
    let ver_size = u16::try_from(entry.len()).unwrap_or(SIZE_MASK) & SIZE_MASK;
    entry[2..4].copy_from_slice(&ver_size.to_be_bytes());
    Ok(entry)
}

const fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Ip => 0,
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

const fn protocol_from_number(number: u8) -> Option<Protocol> {
    match number {
        0 => Some(Protocol::Ip),
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        _ => None,
    }
}

/// Parses one received sync datagram, version 1 or version 0, as the kernel's
/// `ip_vs_process_message` reads it. Malformations that make the kernel drop the rest
/// of the datagram are errors, and drop all of it here (the kernel keeps the entries it
/// had already applied); those that make it skip one entry are listed in
/// [`SyncMessage::skipped`]. Bytes after the last counted entry are ignored, as in the
/// kernel. Work is bounded by the datagram's length and at most 255 entries.
pub fn decode(datagram: &[u8]) -> Result<SyncMessage, SyncDecodeError> {
    let len = datagram.len();
    if len < HEADER_V0_LEN {
        return Err(SyncDecodeError::TooShort { len });
    }
    let size = be16(datagram, 2);
    if usize::from(size) != len {
        return Err(SyncDecodeError::SizeMismatch { size, len });
    }
    let is_v1 = len >= HEADER_LEN
        && datagram[5] == PROTOCOL_VERSION
        && datagram[0] == 0
        && be16(datagram, 6) == 0;
    if is_v1 {
        decode_v1(datagram)
    } else {
        decode_v0(datagram)
    }
}

fn decode_v1(datagram: &[u8]) -> Result<SyncMessage, SyncDecodeError> {
    let mut message = SyncMessage::empty(datagram[1], PROTOCOL_VERSION);
    let mut start = HEADER_LEN;
    for index in 0..usize::from(datagram[4]) {
        if start + ENTRY_V4_LEN > datagram.len() {
            return Err(SyncDecodeError::Truncated { index });
        }
        let ver_size = be16(datagram, start + 2);
        let size = ver_size & SIZE_MASK;
        let end = start + usize::from(size);
        if end > datagram.len() {
            return Err(SyncDecodeError::EntryOverrun { index, size });
        }
        let version = ver_size >> VERSION_SHIFT;
        if version != 0 {
            return Err(SyncDecodeError::UnknownEntryVersion {
                index,
                version: u8::try_from(version).unwrap_or(u8::MAX),
            });
        }
        // The type is read from the datagram: the entry's own size may be too small
        // to hold it, which the kernel reports after the type.
        let entry_type = datagram[start];
        match decode_entry(index, entry_type, &datagram[start..end])? {
            Ok(conn) => message.conns.push(conn),
            Err(reason) => message.skipped.push(Skipped { index, reason }),
        }
        // The next entry starts on a 4-byte boundary.
        start += (usize::from(size) + 3) & !3;
    }
    Ok(message)
}

/// What the options of one entry carry.
#[derive(Default)]
struct Options<'a> {
    seq: bool,
    pe_data: Option<&'a [u8]>,
    pe_name: Option<&'a [u8]>,
    unknown_mandatory: Option<u8>,
}

/// One version 1 entry (`entry` is exactly its `size` bytes): the entry, or why it is
/// skipped, or why the whole datagram is dropped.
fn decode_entry(
    index: usize,
    entry_type: u8,
    entry: &[u8],
) -> Result<Result<SyncConn, SkipReason>, SyncDecodeError> {
    let fixed = if entry_type & TYPE_INET6 != 0 {
        ENTRY_V6_LEN
    } else if entry_type == 0 {
        ENTRY_V4_LEN
    } else {
        return Err(SyncDecodeError::UnknownType { index, entry_type });
    };
    if entry.len() < fixed {
        return Err(SyncDecodeError::EntryTooShort {
            index,
            size: u16::try_from(entry.len()).unwrap_or(u16::MAX),
            needed: fixed,
        });
    }
    let options = decode_options(index, &entry[fixed..])?;
    if let Some(option) = options.unknown_mandatory {
        return Ok(Err(SkipReason::UnknownMandatoryOption(option)));
    }
    let (caddr, vaddr, daddr) = if fixed == ENTRY_V6_LEN {
        (
            IpAddr::V6(Ipv6Addr::from(be128(entry, 24))),
            IpAddr::V6(Ipv6Addr::from(be128(entry, 40))),
            IpAddr::V6(Ipv6Addr::from(be128(entry, 56))),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(be32(entry, 24))),
            IpAddr::V4(Ipv4Addr::from(be32(entry, 28))),
            IpAddr::V4(Ipv4Addr::from(be32(entry, 32))),
        )
    };
    let raw = RawEntry {
        protocol: entry.get(1).copied().unwrap_or(0),
        flags: be32(entry, 4),
        state: be16(entry, 8),
        client: SocketAddr::new(caddr, be16(entry, 10)),
        vip: SocketAddr::new(vaddr, be16(entry, 12)),
        dest: SocketAddr::new(daddr, be16(entry, 14)),
        fwmark: be32(entry, 16),
        timeout: Duration::from_secs(u64::from(be32(entry, 20))),
    };
    Ok(raw.into_conn(options.pe_data, options.pe_name))
}

/// Walks the options after an entry's fixed part (`ip_vs_proc_sync_conn`).
fn decode_options(index: usize, mut rest: &[u8]) -> Result<Options<'_>, SyncDecodeError> {
    let mut options = Options::default();
    while !rest.is_empty() {
        let [option, len, tail @ ..] = rest else {
            return Err(SyncDecodeError::OptionTruncated { index });
        };
        let (option, len) = (*option, *len);
        if len == 0 || usize::from(len) > tail.len() {
            return Err(SyncDecodeError::BadOptionLength { index, option, len });
        }
        let (data, next) = tail.split_at(usize::from(len));
        match option & !OPT_F_PARAM {
            OPT_SEQ_DATA if data.len() != SEQ_DATA_LEN || options.seq => {
                return Err(SyncDecodeError::BadSeqOption { index });
            }
            OPT_SEQ_DATA => options.seq = true,
            OPT_PE_DATA if options.pe_data.is_some() => {
                return Err(SyncDecodeError::DuplicateEngineData { index });
            }
            OPT_PE_DATA => options.pe_data = Some(data),
            OPT_PE_NAME if data.len() > PE_NAME_MAX || options.pe_name.is_some() => {
                return Err(SyncDecodeError::BadEngineName { index });
            }
            OPT_PE_NAME => options.pe_name = Some(data),
            _ if option & OPT_F_PARAM == 0 => {
                // The kernel stops reading the entry here and skips it.
                options.unknown_mandatory = Some(option);
                return Ok(options);
            }
            _ => {}
        }
        rest = next;
    }
    Ok(options)
}

/// An entry's fields before the receiver's checks.
struct RawEntry {
    protocol: u8,
    flags: u32,
    state: u16,
    client: SocketAddr,
    vip: SocketAddr,
    dest: SocketAddr,
    fwmark: u32,
    timeout: Duration,
}

impl RawEntry {
    /// The kernel's per-entry checks: a connection needs a protocol IPVS knows and a
    /// state in its range; engine data needs a known engine name.
    fn into_conn(
        self,
        pe_data: Option<&[u8]>,
        pe_name: Option<&[u8]>,
    ) -> Result<SyncConn, SkipReason> {
        let template = self.flags & flags::TEMPLATE != 0;
        let protocol = protocol_from_number(self.protocol)
            .filter(|&p| template || p != Protocol::Ip)
            .ok_or(SkipReason::UnsupportedProtocol(self.protocol))?;
        if !template {
            let states = if protocol == Protocol::Tcp {
                TCP_STATES
            } else {
                UDP_STATES
            };
            if self.state >= states {
                return Err(SkipReason::InvalidState(self.state));
            }
        }
        // A name without data is ignored, as in `ip_vs_conn_fill_param_sync`.
        let persistence_engine = match (pe_data, pe_name) {
            (None, _) => None,
            (Some(_), None) => return Err(SkipReason::EngineDataWithoutName),
            (Some(data), Some(name)) => {
                let engine = std::str::from_utf8(name)
                    .ok()
                    .and_then(PersistenceEngine::from_name)
                    .ok_or(SkipReason::UnknownEngine)?;
                Some((engine, Arc::from(data)))
            }
        };
        Ok(SyncConn {
            protocol,
            client: self.client,
            vip: self.vip,
            dest: self.dest,
            fwmark: self.fwmark,
            flags: self.flags,
            state: self.state,
            timeout: self.timeout,
            persistence_engine,
        })
    }
}

/// A version 0 message (`ip_vs_process_message_v0`): a 4-byte header (`nr_conns`,
/// `syncid`, `size`) and 24-byte IPv4 entries (`reserved`, `protocol`, `cport`, `vport`,
/// `dport`, `caddr`, `vaddr`, `daddr`, 16-bit `flags`, `state`), each followed by 24
/// bytes of sequence data when a sequence flag is set. No timeout, no fwmark.
fn decode_v0(datagram: &[u8]) -> Result<SyncMessage, SyncDecodeError> {
    let mut message = SyncMessage::empty(datagram[1], 0);
    let mut start = HEADER_V0_LEN;
    for index in 0..usize::from(datagram[0]) {
        if start + ENTRY_V0_LEN > datagram.len() {
            return Err(SyncDecodeError::Truncated { index });
        }
        let entry = &datagram[start..start + ENTRY_V0_LEN];
        let flags = u32::from(be16(entry, 20));
        start += if flags & flags::SEQ_MASK != 0 {
            ENTRY_V0_LEN + SEQ_DATA_LEN
        } else {
            ENTRY_V0_LEN
        };
        if start > datagram.len() {
            return Err(SyncDecodeError::Truncated { index });
        }
        let raw = RawEntry {
            protocol: entry[1],
            flags,
            state: be16(entry, 22),
            client: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(be32(entry, 8))), be16(entry, 2)),
            vip: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(be32(entry, 12))), be16(entry, 4)),
            dest: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(be32(entry, 16))), be16(entry, 6)),
            fwmark: 0,
            timeout: Duration::ZERO,
        };
        match raw.into_conn(None, None) {
            Ok(conn) => message.conns.push(conn),
            Err(reason) => message.skipped.push(Skipped { index, reason }),
        }
    }
    Ok(message)
}

// Readers of fields whose bounds the callers have checked; a short slice reads zeros
// rather than panicking.

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(field(bytes, at))
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(field(bytes, at))
}

fn be128(bytes: &[u8], at: usize) -> u128 {
    u128::from_be_bytes(field(bytes, at))
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    /// [`encode`] of entries that must all encode.
    fn encoded(sync_id: u8, conns: &[SyncConn], max_len: usize) -> Vec<Vec<u8>> {
        let encoded = encode(sync_id, conns, max_len);
        assert_eq!(encoded.refused, [], "every entry encodes");
        encoded.datagrams
    }

    /// A TCP template as keeplb's master exports it: client 192.0.2.7 (port 0),
    /// service 198.51.100.1:80, real server 10.0.0.1:80, 300 s.
    fn v4_template() -> SyncConn {
        SyncConn {
            protocol: Protocol::Tcp,
            client: sa("192.0.2.7:0"),
            vip: sa("198.51.100.1:80"),
            dest: sa("10.0.0.1:80"),
            fwmark: 0,
            flags: TEMPLATE_FLAGS,
            state: TEMPLATE_STATE,
            timeout: Duration::from_secs(300),
            persistence_engine: None,
        }
    }

    /// A UDP SIP template: every field differs from [`v4_template`]'s.
    fn sip_template() -> SyncConn {
        SyncConn {
            protocol: Protocol::Udp,
            client: sa("0.0.0.0:0"),
            vip: sa("198.51.100.2:5060"),
            dest: sa("10.0.0.2:5060"),
            fwmark: 0,
            flags: TEMPLATE_FLAGS,
            state: TEMPLATE_STATE,
            timeout: Duration::from_secs(60),
            persistence_engine: Some((PersistenceEngine::Sip, Arc::from(&b"call-1@h"[..]))),
        }
    }

    /// The golden v4 message: [`v4_template`] under sync id 5.
    #[rustfmt::skip]
    const V4_GOLDEN: [u8; 44] = [
        // struct ip_vs_sync_mesg: reserved 0, syncid 5, size 44 = 8 + 36 (be16),
        0x00, 0x05, 0x00, 0x2c,
        // nr_conns 1, version 1 (SYNC_PROTO_VER), spare 0 (be16).
        0x01, 0x01, 0x00, 0x00,
        // struct ip_vs_sync_v4: type 0 (IPv4), protocol 6 (IPPROTO_TCP),
        // ver_size = version 0 << 12 | size 36 = 0x0024.
        0x00, 0x06, 0x00, 0x24,
        // flags (be32) = IP_VS_CONN_F_TEMPLATE 0x1000 | IP_VS_CONN_F_INACTIVE 0x0100.
        0x00, 0x00, 0x11, 0x00,
        // state 0 (IP_VS_CTPL_S_NONE), cport 0 (templates have none).
        0x00, 0x00, 0x00, 0x00,
        // vport 80, dport 80.
        0x00, 0x50, 0x00, 0x50,
        // fwmark 0.
        0x00, 0x00, 0x00, 0x00,
        // timeout 300 s = 0x12c.
        0x00, 0x00, 0x01, 0x2c,
        // caddr 192.0.2.7, vaddr 198.51.100.1, daddr 10.0.0.1.
        192, 0, 2, 7,
        198, 51, 100, 1,
        10, 0, 0, 1,
    ];

    #[test]
    fn a_v4_template_matches_the_kernel_layout() {
        let datagrams = encoded(5, &[v4_template()], DEFAULT_MAX_LEN_V4);
        assert_eq!(datagrams, [V4_GOLDEN.to_vec()]);
        let message = decode(&V4_GOLDEN).expect("decoded");
        assert_eq!(message.sync_id, 5);
        assert_eq!(message.version, 1);
        assert_eq!(message.conns, [v4_template()]);
        assert!(message.skipped.is_empty());
        assert!(message.conns[0].is_template());
    }

    #[test]
    fn a_v6_fwmark_template_matches_the_kernel_layout() {
        // A fwmark-7 template: protocol IPPROTO_IP, the mark as virtual address.
        let conn = SyncConn {
            protocol: Protocol::Ip,
            client: sa("[2001:db8::7]:0"),
            vip: sa("[0:7::]:0"),
            dest: sa("[2001:db8:1::1]:443"),
            fwmark: 7,
            flags: TEMPLATE_FLAGS,
            state: TEMPLATE_STATE,
            timeout: Duration::from_secs(3600),
            persistence_engine: None,
        };
        let mut golden = vec![
            // Header: reserved 0, syncid 0, size 80 = 8 + 72; one entry, version 1.
            0x00, 0x00, 0x00, 0x50, 0x01, 0x01, 0x00, 0x00,
            // struct ip_vs_sync_v6: type STYPE_F_INET6 = 1, protocol 0, size 72.
            0x01, 0x00, 0x00, 0x48,
            // flags 0x1100, state 0, cport 0, vport 0, dport 443 = 0x01bb.
            0x00, 0x00, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xbb,
            // fwmark 7, timeout 3600 = 0xe10.
            0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x0e, 0x10,
        ];
        // caddr 2001:db8::7, vaddr 0:7:: (mark 7 in the first 32 bits),
        // daddr 2001:db8:1::1: 16 bytes each.
        golden.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        golden.extend([0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        golden.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let datagrams = encoded(0, std::slice::from_ref(&conn), DEFAULT_MAX_LEN_V6);
        assert_eq!(datagrams, [golden.clone()]);
        assert_eq!(
            decode(&golden).expect("decoded").conns,
            std::slice::from_ref(&conn)
        );
        assert!(conn.matches_service(ServiceAddr::Fwmark(7)));
        assert!(!conn.matches_service(ServiceAddr::Fwmark(8)));
    }

    #[test]
    fn a_sip_template_carries_engine_options_and_the_next_entry_is_aligned() {
        let datagrams = encoded(9, &[sip_template(), v4_template()], DEFAULT_MAX_LEN_V4);
        let mut golden = vec![
            // Header: syncid 9, size 96 = 8 + 51 + 1 (pad) + 36; two entries.
            0x00, 0x09, 0x00, 0x60, 0x02, 0x01, 0x00, 0x00,
            // Entry 1: IPv4, protocol 17 (UDP), size 51 = 36 + (2 + 8) + (2 + 3).
            0x00, 0x11, 0x00, 0x33, 0x00, 0x00, 0x11, 0x00, // flags
            0x00, 0x00, 0x00, 0x00, // state, cport
            0x13, 0xc4, 0x13, 0xc4, // vport, dport 5060
            0x00, 0x00, 0x00, 0x00, // fwmark
            0x00, 0x00, 0x00, 0x3c, // timeout 60
            0, 0, 0, 0, // caddr 0.0.0.0 (granularity 0.0.0.0)
            198, 51, 100, 2, 10, 0, 0, 2,
            // IPVS_OPT_PE_DATA (2), length 8, the Call-ID.
            0x02, 0x08,
        ];
        golden.extend(b"call-1@h");
        // IPVS_OPT_PE_NAME (3), length 3, "sip".
        golden.extend([0x03, 0x03]);
        golden.extend(b"sip");
        // 8 + 51 = 59 bytes so far: one zero byte to reach 60, a multiple of 4.
        golden.push(0);
        golden.extend(&V4_GOLDEN[HEADER_LEN..]);
        assert_eq!(datagrams, [golden.clone()]);
        let message = decode(&golden).expect("decoded");
        assert_eq!(message.conns, [sip_template(), v4_template()]);
    }

    #[test]
    fn entries_split_into_datagrams_of_at_most_max_len() {
        let conns: Vec<SyncConn> = (1..=7u8)
            .map(|i| SyncConn {
                client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), 0),
                ..v4_template()
            })
            .collect();
        // Room for three 36-byte entries after the header.
        let max_len = HEADER_LEN + 3 * ENTRY_V4_LEN;
        let datagrams = encoded(1, &conns, max_len);
        let counts: Vec<usize> = datagrams
            .iter()
            .map(|d| decode(d).expect("decoded").conns.len())
            .collect();
        assert_eq!(counts, [3, 3, 1]);
        assert!(datagrams.iter().all(|d| d.len() <= max_len));
        let back: Vec<SyncConn> = datagrams
            .iter()
            .flat_map(|d| decode(d).expect("decoded").conns)
            .collect();
        assert_eq!(back, conns, "order kept across datagrams");
        // One byte less: two per datagram.
        let datagrams = encoded(1, &conns, max_len - 1);
        assert_eq!(datagrams.len(), 4);
        // A message counts at most 255 entries.
        let many = vec![v4_template(); 300];
        let datagrams = encoded(1, &many, MAX_DATAGRAM);
        let counts: Vec<u8> = datagrams.iter().map(|d| d[4]).collect();
        assert_eq!(counts, [255, 45]);
        assert_eq!(encoded(1, &[], 1500), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn the_master_message_length_follows_the_kernel() {
        assert_eq!(master_max_len(None, false), 1472);
        assert_eq!(master_max_len(Some(0), true), 1452);
        assert_eq!(master_max_len(Some(9000), false), 9000);
        assert_eq!(master_max_len(Some(70_000), false), 65507);
        assert_eq!(master_max_len(Some(70_000), true), 65487);
    }

    #[test]
    fn an_entry_larger_than_max_len_travels_alone() {
        let datagrams = encoded(1, &[sip_template(), v4_template()], 20);
        let sizes: Vec<usize> = datagrams.iter().map(Vec::len).collect();
        assert_eq!(sizes, [8 + 51, 8 + 36]);
    }

    #[test]
    fn unencodable_entries_are_refused() {
        let mixed = SyncConn {
            dest: sa("[2001:db8::1]:80"),
            ..v4_template()
        };
        let both = encode(0, &[v4_template(), mixed], 1500);
        assert_eq!(both.refused, [SyncEncodeError::MixedFamilies { index: 1 }]);
        assert_eq!(
            both.datagrams,
            encoded(0, &[v4_template()], 1500),
            "the encodable entry still travels"
        );
        for len in [0, 256] {
            let conn = SyncConn {
                persistence_engine: Some((PersistenceEngine::Sip, Arc::from(vec![b'x'; len]))),
                ..sip_template()
            };
            assert_eq!(
                encode(0, &[conn], 1500),
                Encoded {
                    datagrams: Vec::new(),
                    refused: vec![SyncEncodeError::EngineData { index: 0, len }],
                }
            );
        }
    }

    /// [`V4_GOLDEN`] with `edit` applied to its entry (offsets from the entry's start)
    /// and the sizes fixed up: the entry's to `entry_size`, the message's to its length.
    fn edited(entry_size: u16, extra: &[u8], edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut message = V4_GOLDEN.to_vec();
        message.extend_from_slice(extra);
        edit(&mut message[HEADER_LEN..]);
        message[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&entry_size.to_be_bytes());
        let size = u16::try_from(message.len()).expect("small");
        message[2..4].copy_from_slice(&size.to_be_bytes());
        message
    }

    /// [`V4_GOLDEN`] followed by `options`, sized to include them.
    fn with_options(options: &[u8]) -> Vec<u8> {
        let size = u16::try_from(ENTRY_V4_LEN + options.len()).expect("small");
        edited(size, options, |_| {})
    }

    #[test]
    fn malformed_datagrams_are_dropped_with_the_kernels_reason() {
        use SyncDecodeError as E;
        assert_eq!(decode(&V4_GOLDEN[..3]), Err(E::TooShort { len: 3 }));
        assert_eq!(
            decode(&V4_GOLDEN[..40]),
            Err(E::SizeMismatch { size: 44, len: 40 })
        );
        let mut two = V4_GOLDEN;
        two[4] = 2;
        assert_eq!(decode(&two), Err(E::Truncated { index: 1 }));
        assert_eq!(
            decode(&edited(40, &[], |_| {})),
            Err(E::EntryOverrun { index: 0, size: 40 })
        );
        assert_eq!(
            decode(&edited(0x1024, &[], |_| {})),
            Err(E::UnknownEntryVersion {
                index: 0,
                version: 1
            })
        );
        assert_eq!(
            decode(&edited(36, &[], |e| e[0] = 2)),
            Err(E::UnknownType {
                index: 0,
                entry_type: 2
            })
        );
        // The IPv6 bit on a 36-byte entry: shorter than the 72-byte layout.
        assert_eq!(
            decode(&edited(36, &[], |e| e[0] = 3)),
            Err(E::EntryTooShort {
                index: 0,
                size: 36,
                needed: 72
            })
        );
        assert_eq!(
            decode(&edited(0, &[], |_| {})),
            Err(E::EntryTooShort {
                index: 0,
                size: 0,
                needed: 36
            })
        );
        assert_eq!(
            decode(&with_options(&[2])),
            Err(E::OptionTruncated { index: 0 })
        );
        assert_eq!(
            decode(&with_options(&[2, 0])),
            Err(E::BadOptionLength {
                index: 0,
                option: 2,
                len: 0
            })
        );
        assert_eq!(
            decode(&with_options(&[2, 3, b'a', b'b'])),
            Err(E::BadOptionLength {
                index: 0,
                option: 2,
                len: 3
            })
        );
        assert_eq!(
            decode(&with_options(&[[1, 23].as_slice(), &[0; 23]].concat())),
            Err(E::BadSeqOption { index: 0 })
        );
        let seq = [[1, 24].as_slice(), &[0; 24]].concat();
        assert_eq!(
            decode(&with_options(&[seq.as_slice(), &seq].concat())),
            Err(E::BadSeqOption { index: 0 })
        );
        assert_eq!(
            decode(&with_options(&[2, 1, b'a', 2, 1, b'b'])),
            Err(E::DuplicateEngineData { index: 0 })
        );
        assert_eq!(
            decode(&with_options(&[[3, 17].as_slice(), &[b'x'; 17]].concat())),
            Err(E::BadEngineName { index: 0 })
        );
        assert_eq!(
            decode(&with_options(&[
                3, 3, b's', b'i', b'p', 3, 3, b's', b'i', b'p'
            ])),
            Err(E::BadEngineName { index: 0 })
        );
    }

    #[test]
    fn entries_the_kernel_skips_are_listed_and_the_rest_kept() {
        let skipped = |datagram: &[u8]| -> Vec<SkipReason> {
            let message = decode(datagram).expect("decoded");
            message.skipped.iter().map(|s| s.reason).collect()
        };
        // Sequence data and an optional unknown option (bit 6) are read past.
        let seq = [[1, 24].as_slice(), &[0; 24]].concat();
        let ok = decode(&with_options(&[seq.as_slice(), &[0x45, 1, 0]].concat())).expect("ok");
        assert_eq!(ok.conns, [v4_template()]);
        assert_eq!(
            skipped(&with_options(&[5, 1, 0])),
            [SkipReason::UnknownMandatoryOption(5)]
        );
        assert_eq!(
            skipped(&with_options(&[2, 1, b'a'])),
            [SkipReason::EngineDataWithoutName]
        );
        assert_eq!(
            skipped(&with_options(&[2, 1, b'a', 3, 3, b'f', b't', b'p'])),
            [SkipReason::UnknownEngine]
        );
        // A name without data is ignored.
        assert_eq!(
            decode(&with_options(&[3, 3, b's', b'i', b'p']))
                .expect("ok")
                .conns,
            [v4_template()]
        );
        // Templates of SCTP (132), and connections of IPPROTO_IP.
        assert_eq!(
            skipped(&edited(36, &[], |e| e[1] = 132)),
            [SkipReason::UnsupportedProtocol(132)]
        );
        let connection = |e: &mut [u8]| e[6] = 0x01; // flags 0x0100: INACTIVE only
        assert_eq!(
            skipped(&edited(36, &[], |e| {
                connection(e);
                e[1] = 0;
            })),
            [SkipReason::UnsupportedProtocol(0)]
        );
        // TCP has 11 states (0..=10), UDP one.
        assert_eq!(
            skipped(&edited(36, &[], |e| {
                connection(e);
                e[9] = 11;
            })),
            [SkipReason::InvalidState(11)]
        );
        let established = decode(&edited(36, &[], |e| {
            connection(e);
            e[9] = 1;
        }))
        .expect("ok");
        assert!(!established.conns[0].is_template());
        assert_eq!(established.conns[0].state, 1);
        assert_eq!(
            skipped(&edited(36, &[], |e| {
                connection(e);
                e[1] = 17;
                e[9] = 1;
            })),
            [SkipReason::InvalidState(1)]
        );
        // A skipped entry leaves the next one in force.
        let mut two = encoded(0, &[sip_template(), v4_template()], 1500);
        let message = &mut two[0];
        message[HEADER_LEN + 36 + 10 + 2] = b'f'; // "sip" becomes "fip"
        let message = decode(message).expect("decoded");
        assert_eq!(message.conns, [v4_template()]);
        assert_eq!(
            message.skipped,
            [Skipped {
                index: 0,
                reason: SkipReason::UnknownEngine
            }]
        );
    }

    #[test]
    fn version_0_messages_are_read_as_the_kernel_reads_them() {
        #[rustfmt::skip]
        let v0 = [
            // struct ip_vs_sync_mesg_v0: nr_conns 2, syncid 3, size 4 + 24 + 48 = 76.
            0x02, 0x03, 0x00, 0x4c,
            // struct ip_vs_sync_conn_v0: reserved, protocol TCP, cport 0, vport 80,
            0x00, 0x06, 0x00, 0x00, 0x00, 0x50,
            // dport 80, caddr 192.0.2.7, vaddr 198.51.100.1, daddr 10.0.0.1,
            0x00, 0x50, 192, 0, 2, 7, 198, 51, 100, 1, 10, 0, 0, 1,
            // flags (be16) 0x1100 (template), state 0.
            0x11, 0x00, 0x00, 0x00,
            // A TCP connection 192.0.2.8:40000 (0x9c40) to 10.0.0.2, ESTABLISHED (1),
            // flags IP_VS_CONN_F_IN_SEQ (0x0400),
            0x00, 0x06, 0x9c, 0x40, 0x00, 0x50,
            0x00, 0x50, 192, 0, 2, 8, 198, 51, 100, 1, 10, 0, 0, 2,
            0x04, 0x00, 0x00, 0x01,
            // so 24 bytes of sequence data follow.
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let message = decode(&v0).expect("decoded");
        assert_eq!((message.version, message.sync_id), (0, 3));
        let template = SyncConn {
            timeout: Duration::ZERO,
            ..v4_template()
        };
        assert_eq!(message.conns[0], template, "no timeout in version 0");
        assert_eq!(message.conns[1].client, sa("192.0.2.8:40000"));
        assert_eq!(message.conns[1].state, 1);
        assert!(!message.conns[1].is_template());
        assert_eq!(
            decode(&v0[..v0.len() - 1]),
            Err(SyncDecodeError::SizeMismatch { size: 76, len: 75 })
        );
        let mut cut = v0[..v0.len() - 1].to_vec();
        cut[3] = 75;
        assert_eq!(decode(&cut), Err(SyncDecodeError::Truncated { index: 1 }));
        // An empty version 0 message.
        assert_eq!(decode(&[0, 1, 0, 4]).expect("empty").conns, []);
    }

    #[test]
    fn services_are_matched_as_the_kernel_keys_templates() {
        let t = v4_template();
        assert!(t.matches_service(ServiceAddr::Addr(Protocol::Tcp, sa("198.51.100.1:80"))));
        assert!(!t.matches_service(ServiceAddr::Addr(Protocol::Udp, sa("198.51.100.1:80"))));
        assert!(!t.matches_service(ServiceAddr::Addr(Protocol::Tcp, sa("198.51.100.1:81"))));
        let port0 = SyncConn {
            vip: sa("198.51.100.1:0"),
            ..v4_template()
        };
        for port in [0, 21] {
            let addr = SocketAddr::new(port0.vip.ip(), port);
            assert!(port0.matches_service(ServiceAddr::Addr(Protocol::Tcp, addr)));
        }
        assert!(!port0.matches_service(ServiceAddr::Addr(Protocol::Tcp, sa("198.51.100.1:80"))));
        let message = decode(&V4_GOLDEN).expect("decoded");
        assert!(message.accepted_by(0) && message.accepted_by(5) && !message.accepted_by(6));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A deterministic walk over truncations and single-byte corruptions of a
        // message with every feature.
        let mut base = encoded(9, &[sip_template(), v4_template()], 1500)[0].clone();
        let seq = [[1, 24].as_slice(), &[0; 24]].concat();
        base.extend(&seq);
        for cut in 0..=base.len() {
            let _ = decode(&base[..cut]);
        }
        for at in 0..base.len() {
            for value in [0, 1, 2, 3, 0x40, 0x7f, 0xff] {
                let mut bytes = base.clone();
                bytes[at] = value;
                let _ = decode(&bytes);
            }
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use super::encoded;

        fn addr(v6: bool, bits: u128, port: u16) -> SocketAddr {
            if v6 {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(bits)), port)
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(bits as u32)), port)
            }
        }

        prop_compose! {
            fn sync_conn()(
                v6 in any::<bool>(),
                protocol in prop::sample::select(vec![Protocol::Ip, Protocol::Tcp, Protocol::Udp]),
                bits in any::<[u128; 3]>(),
                ports in any::<[u16; 3]>(),
                fwmark in any::<u32>(),
                timeout in any::<u32>(),
                call_id in prop::option::of(prop::collection::vec(any::<u8>(), 1..=255)),
            ) -> SyncConn {
                SyncConn {
                    protocol,
                    client: addr(v6, bits[0], ports[0]),
                    vip: addr(v6, bits[1], ports[1]),
                    dest: addr(v6, bits[2], ports[2]),
                    fwmark,
                    flags: TEMPLATE_FLAGS,
                    state: TEMPLATE_STATE,
                    timeout: Duration::from_secs(u64::from(timeout)),
                    persistence_engine: call_id
                        .map(|id| (PersistenceEngine::Sip, Arc::from(id))),
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn templates_round_trip_through_datagrams_of_at_most_max_len(
                conns in prop::collection::vec(sync_conn(), 0..40),
                max_len in 400..3000usize,
                sync_id in any::<u8>(),
            ) {
                let datagrams = encoded(sync_id, &conns, max_len);
                let mut back = Vec::new();
                for datagram in &datagrams {
                    prop_assert!(datagram.len() <= max_len);
                    let message = decode(datagram).expect("decodable");
                    prop_assert_eq!(message.sync_id, sync_id);
                    prop_assert!(message.skipped.is_empty());
                    back.extend(message.conns);
                }
                prop_assert_eq!(back, conns);
            }

            #[test]
            fn arbitrary_bytes_decode_without_panicking(
                mut bytes in prop::collection::vec(any::<u8>(), 0..600),
                fix_size in any::<bool>(),
            ) {
                // Half the time with a consistent size field, to get past the header.
                if fix_size && bytes.len() >= 4 {
                    let len = u16::try_from(bytes.len()).expect("small");
                    bytes[2..4].copy_from_slice(&len.to_be_bytes());
                }
                let _ = decode(&bytes);
            }
        }
    }
}
