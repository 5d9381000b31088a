//! Gratuitous ARP and unsolicited NA frames, cross-checked field by field with etherparse
//! and byte for byte against what keepalived 2.2.7 sent in the lab.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::Fixture;
use etherparse::icmpv6::{NdpOptionSlice, NeighborAdvertisementHeader};
use etherparse::{
    ArpHardwareId, ArpOperation, EtherType, Icmpv6Type, IpNumber, LinkSlice, NetSlice,
    SlicedPacket, TransportSlice,
};
use keeplb_vrrp::announce::{
    ALL_NODES, BROADCAST_MAC, GARP_FRAME_LEN, MacAddr, NA_FRAME_LEN, UnsolicitedNa, gratuitous_arp,
};

/// vcapa0's MAC in the lab.
const LAB_MAC: MacAddr = [0x02, 0x77, 0x00, 0x00, 0x00, 0x01];

fn check_garp(frame: &[u8], mac: MacAddr, vip: Ipv4Addr) {
    assert_eq!(frame.len(), 42);
    let packet = SlicedPacket::from_ethernet(frame).expect("parse");
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("no Ethernet II header: {:?}", packet.link)
    };
    assert_eq!(eth.destination(), BROADCAST_MAC);
    assert_eq!(eth.source(), mac);
    assert_eq!(eth.ether_type(), EtherType::ARP);
    assert!(packet.link_exts.is_empty());

    let Some(NetSlice::Arp(arp)) = &packet.net else {
        panic!("no ARP: {:?}", packet.net)
    };
    assert_eq!(arp.hw_addr_type(), ArpHardwareId::ETHERNET);
    assert_eq!(arp.proto_addr_type(), EtherType::IPV4);
    assert_eq!(arp.hw_addr_size(), 6);
    assert_eq!(arp.proto_addr_size(), 4);
    assert_eq!(arp.operation(), ArpOperation::REQUEST);
    let arp = arp.to_packet().try_eth_ipv4().expect("Ethernet/IPv4 ARP");
    assert_eq!(arp.sender_mac, mac);
    assert_eq!(arp.sender_ipv4_addr(), vip);
    assert_eq!(arp.target_mac, BROADCAST_MAC);
    assert_eq!(arp.target_ipv4_addr(), vip);
    assert!(packet.transport.is_none());
}

#[test]
fn garp_fields() {
    let mac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x33];
    let vip = Ipv4Addr::new(192, 0, 2, 1);
    let frame = gratuitous_arp(mac, vip);
    assert_eq!(frame.len(), GARP_FRAME_LEN);
    check_garp(&frame, mac, vip);
}

#[test]
fn garp_matches_keepalived() {
    let captured = Fixture::load("garp-keepalived").hex("frame");
    let vip = Ipv4Addr::new(10, 77, 0, 100);
    check_garp(&captured, LAB_MAC, vip);
    assert_eq!(gratuitous_arp(LAB_MAC, vip).as_slice(), captured.as_slice());
}

fn check_na(frame: &[u8], na: &UnsolicitedNa) {
    assert_eq!(frame.len(), 86);
    let packet = SlicedPacket::from_ethernet(frame).expect("parse");
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("no Ethernet II header: {:?}", packet.link)
    };
    assert_eq!(eth.destination(), [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(eth.source(), na.src_mac);
    assert_eq!(eth.ether_type(), EtherType::IPV6);

    let Some(NetSlice::Ipv6(ip)) = &packet.net else {
        panic!("no IPv6: {:?}", packet.net)
    };
    let header = ip.header();
    assert_eq!(header.version(), 6);
    assert_eq!(header.traffic_class(), 0);
    assert_eq!(header.flow_label().value(), 0);
    assert_eq!(header.payload_length(), 32);
    assert_eq!(header.next_header(), IpNumber::IPV6_ICMP);
    assert_eq!(header.hop_limit(), 255);
    assert_eq!(header.source_addr(), na.src_ip);
    assert_eq!(header.destination_addr(), ALL_NODES);
    assert!(ip.extensions().is_empty());

    let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
        panic!("no ICMPv6: {:?}", packet.transport)
    };
    assert_eq!(icmp.type_u8(), 136);
    assert_eq!(icmp.code_u8(), 0);
    assert_eq!(
        icmp.icmp_type(),
        Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
            router: na.router,
            solicited: false,
            r#override: true,
        })
    );
    // The checksum field holds what etherparse computes over the pseudo-header, and
    // etherparse's own verification agrees.
    let expected = icmp
        .icmp_type()
        .calc_checksum(na.src_ip.octets(), ALL_NODES.octets(), icmp.payload())
        .expect("checksum");
    assert_eq!(icmp.checksum(), expected);
    assert!(icmp.is_checksum_valid(na.src_ip.octets(), ALL_NODES.octets()));
    // Reserved bits after the flags are zero.
    assert_eq!(icmp.bytes5to8()[1..], [0, 0, 0]);

    let Ok(etherparse::icmpv6::Icmpv6PayloadSlice::NeighborAdvertisement(body)) =
        icmp.payload_slice()
    else {
        panic!("no NA body")
    };
    assert_eq!(body.target_address(), na.target);
    let options: Vec<_> = body
        .options_iterator()
        .collect::<Result<_, _>>()
        .expect("options");
    assert_eq!(options.len(), 1);
    let NdpOptionSlice::TargetLinkLayerAddress(tlla) = &options[0] else {
        panic!("not a target link-layer address option: {:?}", options[0])
    };
    assert_eq!(tlla.link_layer_address(), na.src_mac);
}

#[test]
fn na_fields() {
    for router in [false, true] {
        let na = UnsolicitedNa {
            src_mac: [0x00, 0x00, 0x5e, 0x00, 0x02, 0x07],
            src_ip: "fe80::1".parse().expect("address"),
            target: "2001:db8::7".parse().expect("address"),
            router,
        };
        let frame = na.frame();
        assert_eq!(frame.len(), NA_FRAME_LEN);
        check_na(&frame, &na);
    }
}

#[test]
fn na_matches_keepalived() {
    let captured = Fixture::load("una-keepalived").hex("frame");
    let target: Ipv6Addr = "fd77::54".parse().expect("address");
    let na = UnsolicitedNa {
        src_mac: LAB_MAC,
        // keepalived sends from the VIP itself.
        src_ip: target,
        target,
        router: false,
    };
    check_na(&captured, &na);
    assert_eq!(na.frame().as_slice(), captured.as_slice());
}
