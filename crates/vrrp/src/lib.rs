//! VRRP for keeplb, wire-compatible with keepalived 2.2.7.
//!
//! # Design: sans-I/O
//!
//! Nothing in the protocol core opens a socket, reads a clock or spawns a task. The
//! thin I/O layer in [`io`] owns the I/O (raw `IPPROTO_VRRP` sockets, rtnetlink for the
//! virtual addresses, `AF_PACKET` for announcements, tokio timers) and feeds the core
//! plain bytes and events; the core hands back decoded values, encoded bytes and actions.
//! That keeps every protocol decision testable without root, without network namespaces
//! and without waiting for real timers, and lets golden captures from a real keepalived
//! be replayed byte for byte.
//!
//! The layers:
//!
//! - [`packet`]: the VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798 / RFC 9568) advertisement
//!   codec. It validates what the wire format alone can validate (version, type, length,
//!   checksum, auth type) with one [`packet::DecodeError`] variant per check, so the
//!   daemon can keep one drop counter per reason. Checks that need configuration (TTL,
//!   VRID, password, interval) are left to the state machine, which gets every field.
//! - [`ip`]: the IPv4 header a raw IPv4 socket delivers in front of each advertisement
//!   (raw IPv6 sockets deliver none; the hop limit comes from a control message).
//! - [`announce`]: gratuitous ARP and unsolicited Neighbour Advertisement frames that a
//!   new master sends so that neighbours move the virtual addresses to it.
//! - [`instance`]: the state machine of one virtual router (Initialize / Backup / Master /
//!   Fault). [`Instance::handle`] takes an [`Event`] (advert received, timer expired,
//!   interface up/down, priority changed, fault, startup, shutdown) with the current
//!   `tokio::time::Instant` and returns [`Action`]s (send advert, add/remove addresses,
//!   announce, arm/cancel timers as absolute deadlines, state changed, count a drop).
//!   [`event`] holds that vocabulary; `debug` every log line it writes.
//! - [`sync`]: the `vrrp_sync_group` coordinator (members fault, leave and take MASTER
//!   together; keepalived's `vrrp_sync_can_goto_master`), also sans-I/O.
//! - [`pace`]: the per-interface pacing of announcements (`vrrp_garp_interval`,
//!   `vrrp_gna_interval`).
//! - [`track`] and [`notify`]: tracked objects and their weights; notify scripts, FIFOs
//!   and the FIFO's script.
//! - [`io`]: the tokio driver around one [`Instance`] ([`run_instance`]): sockets,
//!   rtnetlink, timers. Proven against real keepalived in network namespaces
//!   (`tests/netns_*.rs`).
//!
//! # Interoperability facts this crate relies on (observed on the wire from keepalived 2.2.7)
//!
//! - VRRPv3 over IPv4: the checksum covers the IPv4 pseudo-header. keepalived 2.2.7 has no
//!   way to turn that off (`v3_checksum_as_v2` arrived in 2.2.8), but other peers may send
//!   the message-only form, so decoding accepts both and reports which one matched.
//! - Unicast VRRPv3 with `old_unicast_checksum` (keepalived <= 1.3.6 behaviour): the
//!   pseudo-header carries 224.0.0.18 as destination even though the packet goes to the
//!   unicast peer. Decoding accepts that too ([`packet::ChecksumForm::LegacyUnicast`]).
//! - `auth_type PASS`: 8 bytes of clear text, shorter passwords NUL-padded, longer ones
//!   silently cut to 8.

pub mod announce;
mod checksum;
mod debug;
pub mod event;
pub mod instance;
pub mod io;
pub mod ip;
pub mod notify;
pub mod pace;
pub mod packet;
pub mod sync;
pub mod track;

pub use event::{
    Action, Cause, DropReason, Event, OutgoingAdvert, Received, State, TimerKind, peek_vrid,
};
pub use instance::{
    AddressCheck, ConfigError, GarpConfig, InitialState, Instance, InstanceConfig, MasterInfo,
    Stats, Transport, UnicastPeer,
};

pub use io::{
    DriverOptions, InstanceReport, InterfacePaces, IoError, MemberReport, Notification, SyncLink,
    SyncRequest, VipBroadcast, VipOptions, run_instance, run_instance_with,
};
pub use packet::{
    AdverInterval, Advertisement, Auth, AuthPassword, ChecksumForm, DecodeContext, DecodeError,
    EncodeContext, EncodeError, Family, Version,
};
