//! Frames a new master sends so that neighbours move the virtual addresses to it:
//! gratuitous ARP for IPv4, unsolicited Neighbour Advertisement for IPv6.
//!
//! Both are complete Ethernet frames for an `AF_PACKET` socket, sent as built: 42 bytes
//! for an ARP (no padding to the 60-byte Ethernet minimum; a NIC pads on the wire, a veth
//! delivers 42 bytes) and 86 for an NA, the lengths keepalived 2.2.7 sends (its send_arp
//! passes the end of the ARP payload as the length; see tests/fixtures/garp-keepalived.txt).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum::Checksum;
use crate::packet::Family;

/// An Ethernet MAC address.
pub type MacAddr = [u8; 6];

/// Ethernet broadcast address.
pub const BROADCAST_MAC: MacAddr = [0xff; 6];

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETH_HEADER_LEN: usize = 14;
const IPV6_HEADER_LEN: usize = 40;
const IPPROTO_ICMPV6: u8 = 58;
const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const ND_OPT_TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// NA body (type, code, checksum, flags, target) plus one 8-byte link-layer option.
const NA_ICMP_LEN: usize = 24 + 8;

/// The virtual MAC of VRID `vrid` (RFC 9568 section 7.3): 00-00-5E-00-01-{VRID} for
/// IPv4, 00-00-5E-00-02-{VRID} for IPv6. Used as frame source when the virtual router
/// runs with a virtual MAC (keepalived's `use_vmac`).
pub const fn virtual_mac(family: Family, vrid: u8) -> MacAddr {
    let kind = match family {
        Family::Ipv4 => 0x01,
        Family::Ipv6 => 0x02,
    };
    [0x00, 0x00, 0x5e, 0x00, kind, vrid]
}

/// The Ethernet address an IPv6 multicast group maps to (RFC 2464 section 7):
/// 33:33 followed by the group's last 32 bits.
const fn ipv6_multicast_mac(group: &Ipv6Addr) -> MacAddr {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Length of a gratuitous ARP frame.
pub const GARP_FRAME_LEN: usize = 42;

//
// Gratuitous ARP: Ethernet II header followed by an ARP request (RFC 826, RFC 5227).
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |              Destination MAC (ff:ff:ff:ff:ff:ff)              |
// +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                               |                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
// |                     Source MAC (sender)                       |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |      EtherType (0x0806)       |    Hardware Type (1, Ether)   |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |   Protocol Type (0x0800)      | HW len (6)    | Proto len (4) |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |     Operation (1, request)    |                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
// |                   Sender Hardware Address                     |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |              Sender Protocol Address (VIP)                    |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |        Target Hardware Address (ff:ff:ff:ff:ff:ff)            |
// +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                               | Target Protocol Address (VIP) |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
// |                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// A request rather than a reply, because every host processes a broadcast request and
// updates an existing cache entry for the sender, while some ignore unsolicited replies.
// Target protocol address = sender protocol address, so no host answers it (nobody else
// should own the VIP). The target hardware address is broadcast, not the zeros RFC 5227
// suggests, because that is what keepalived sends (see tests/fixtures/garp-keepalived.txt)
// and neighbours have long accepted it from keepalived; receivers ignore the field.
//
/// The gratuitous ARP frame announcing that `vip` is now at `src_mac` (the interface's
/// MAC, or the [`virtual_mac`] with `use_vmac`).
pub fn gratuitous_arp(src_mac: MacAddr, vip: Ipv4Addr) -> [u8; GARP_FRAME_LEN] {
    let mut f = [0; GARP_FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST_MAC);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[16..18].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    f[22..28].copy_from_slice(&src_mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&BROADCAST_MAC);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// Length of an unsolicited Neighbour Advertisement frame.
pub const NA_FRAME_LEN: usize = ETH_HEADER_LEN + IPV6_HEADER_LEN + NA_ICMP_LEN;

/// All-nodes multicast, where unsolicited NAs go (RFC 4861 section 7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

//
// Unsolicited Neighbour Advertisement (RFC 4861 section 4.4), after an Ethernet II header
// (to 33:33:00:00:00:01, EtherType 0x86dd) and an IPv6 header (next header 58, hop limit
// 255, destination ff02::1):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |   Type (136)  |    Code (0)   |          Checksum             |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |R|S|O|                     Reserved                            |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                                                               |
// +                                                               +
// |                       Target Address                          |
// +                          (the VIP)                            +
// |                                                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |  Type (2)     |  Length (1)   |  Target Link-Layer Address    |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
// |                                                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Hop limit 255 because receivers discard ND messages with any other (RFC 4861 7.1.2):
// that is how they know the sender is on-link. Override set so that caches replace the
// old master's MAC; Solicited clear because nobody asked (a solicited-looking NA would
// also make caches go REACHABLE without confirmation). The Target Link-Layer Address
// option carries the new MAC, which is the whole point. The checksum covers the IPv6
// pseudo-header (source, destination, length, next header 58).
//
/// An unsolicited Neighbour Advertisement for one virtual IPv6 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnsolicitedNa {
    /// Ethernet source and target link-layer address: the interface MAC, or the
    /// [`virtual_mac`] with `use_vmac`.
    pub src_mac: MacAddr,
    /// IPv6 source. keepalived uses the target (the VIP) itself; RFC 4861 allows any
    /// address assigned to the sending interface.
    pub src_ip: Ipv6Addr,
    /// The virtual address being announced.
    pub target: Ipv6Addr,
    /// Router flag: set when the sender is a router (forwarding enabled on the interface),
    /// so hosts keep it in their default router list.
    pub router: bool,
}

impl UnsolicitedNa {
    /// The complete Ethernet frame.
    pub fn frame(&self) -> [u8; NA_FRAME_LEN] {
        let mut f = [0; NA_FRAME_LEN];
        f[0..6].copy_from_slice(&ipv6_multicast_mac(&ALL_NODES));
        f[6..12].copy_from_slice(&self.src_mac);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());

        // IPv6 header: version 6, traffic class 0, flow label 0.
        let ip = ETH_HEADER_LEN;
        f[ip] = 0x60;
        f[ip + 4..ip + 6].copy_from_slice(&(NA_ICMP_LEN as u16).to_be_bytes());
        f[ip + 6] = IPPROTO_ICMPV6;
        f[ip + 7] = 255;
        f[ip + 8..ip + 24].copy_from_slice(&self.src_ip.octets());
        f[ip + 24..ip + 40].copy_from_slice(&ALL_NODES.octets());

        let icmp = ip + IPV6_HEADER_LEN;
        f[icmp] = ICMPV6_NEIGHBOR_ADVERTISEMENT;
        // Code 0 and checksum 0 until computed below.
        let mut flags = 0x20; // Override
        if self.router {
            flags |= 0x80;
        }
        f[icmp + 4] = flags;
        f[icmp + 8..icmp + 24].copy_from_slice(&self.target.octets());
        f[icmp + 24] = ND_OPT_TARGET_LINK_LAYER_ADDRESS;
        f[icmp + 25] = 1; // in units of 8 octets
        f[icmp + 26..icmp + 32].copy_from_slice(&self.src_mac);

        let checksum = Checksum::new()
            .add(&self.src_ip.octets())
            .add(&ALL_NODES.octets())
            .add(&(NA_ICMP_LEN as u32).to_be_bytes())
            .add(&[0, 0, 0, IPPROTO_ICMPV6])
            .add(&f[icmp..])
            .finish();
        f[icmp + 2..icmp + 4].copy_from_slice(&checksum.to_be_bytes());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_macs() {
        assert_eq!(
            virtual_mac(Family::Ipv4, 51),
            [0x00, 0x00, 0x5e, 0x00, 0x01, 51]
        );
        assert_eq!(
            virtual_mac(Family::Ipv6, 255),
            [0x00, 0x00, 0x5e, 0x00, 0x02, 255]
        );
    }

    #[test]
    fn all_nodes_mac() {
        assert_eq!(ipv6_multicast_mac(&ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
    }
}
