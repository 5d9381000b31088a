//! The state machine, configured like the keepalived 2.2.7 instances in tests/fixtures
//! (each fixture's header quotes its keepalived.conf), must send the same bytes keepalived
//! put on the wire: its first advertisement after taking over and, for the `-prio0`
//! captures, its resignation on shutdown.

mod common;

use std::net::IpAddr;

use common::Fixture;
use keeplb_vrrp::{
    Action, AdverInterval, Auth, AuthPassword, ChecksumForm, Event, InitialState, Instance,
    InstanceConfig, OutgoingAdvert, State, TimerKind, Transport, UnicastPeer, Version,
};
use tokio::time::Instant;

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().expect("address")).collect()
}

/// `state MASTER` (not owner), the fixture's source as the interface's primary address.
fn keepalived_like(
    vrid: u8,
    version: Version,
    priority: u8,
    centis: u16,
    vips: &[&str],
) -> InstanceConfig {
    let mut c = InstanceConfig::new("VI", vrid, version, ips(vips));
    c.priority = priority;
    c.initial_state = InitialState::Master;
    c.adver_int = AdverInterval::from_centis(centis);
    c
}

fn unicast(mut c: InstanceConfig, src: &str, peer: &str) -> InstanceConfig {
    c.src_addr = Some(src.parse().expect("address"));
    c.transport = Transport::Unicast {
        peers: vec![UnicastPeer::new(peer.parse().expect("address"))],
        ttl: 255,
        check_src: false,
    };
    c
}

fn first_advert(actions: &[Action]) -> &OutgoingAdvert {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SendAdvert(out) => Some(out),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no advertisement in {actions:?}"))
}

/// Runs the instance to Master and returns it with the bytes of its first advertisement.
fn check_first_advert(name: &str, config: InstanceConfig) -> Instance {
    let fixture = Fixture::load(name);
    let src = fixture.ip("src");
    let dst = fixture.ip("dst");
    let mut inst = Instance::new(config).expect("valid config");
    let t0 = Instant::now();
    inst.handle(Event::InterfaceUp { primary: Some(src) }, t0);
    inst.handle(Event::Startup, t0);
    assert_eq!(
        inst.state(),
        State::Backup,
        "{name}: state MASTER starts as backup"
    );
    let at = inst.timer(TimerKind::MasterDown).expect("armed");
    let actions = inst.handle(Event::TimerExpired(TimerKind::MasterDown), at);
    assert_eq!(inst.state(), State::Master);
    let out = first_advert(&actions);
    assert_eq!(out.src, src, "{name}: source");
    assert!(out.destinations.contains(&dst), "{name}: destination");
    assert_eq!(
        out.ttl,
        fixture.u8(if src.is_ipv4() { "ttl" } else { "hop-limit" })
    );
    assert_eq!(
        out.encode(dst).expect("encode"),
        fixture.hex("vrrp"),
        "{name}: bytes"
    );
    inst
}

fn check_resignation(name: &str, mut inst: Instance) {
    let fixture = Fixture::load(name);
    let actions = inst.handle(Event::Shutdown, Instant::now());
    let out = first_advert(&actions);
    assert_eq!(out.priority(), 0);
    assert_eq!(
        out.encode(fixture.ip("dst")).expect("encode"),
        fixture.hex("vrrp"),
        "{name}: bytes"
    );
}

#[test]
fn v2_pass_two_vips_and_resignation() {
    let mut c = keepalived_like(51, Version::V2, 150, 100, &["10.77.0.100", "10.77.0.101"]);
    c.auth = Auth::Password(AuthPassword::new(b"secret"));
    let inst = check_first_advert("v2-pass-2vips", c);
    check_resignation("v2-pass-prio0", inst);
}

#[test]
fn v2_pass_truncated() {
    let mut c = keepalived_like(57, Version::V2, 150, 100, &["10.77.0.150"]);
    c.auth = Auth::Password(AuthPassword::new(b"longpassword9"));
    check_first_advert("v2-pass-truncated", c);
}

#[test]
fn v2_unicast_without_auth() {
    let c = keepalived_like(56, Version::V2, 100, 100, &["10.77.0.140"]);
    check_first_advert("v2-unicast-noauth", unicast(c, "10.77.0.1", "10.77.0.2"));
}

#[test]
fn v3_ipv4() {
    let c = keepalived_like(52, Version::V3, 120, 100, &["10.77.0.110"]);
    check_first_advert("v3-ipv4", c);
}

#[test]
fn v3_ipv4_two_vips_two_seconds() {
    let c = keepalived_like(53, Version::V3, 120, 200, &["10.77.0.120", "10.77.0.121"]);
    check_first_advert("v3-ipv4-2vips-200cs", c);
}

#[test]
fn v3_ipv4_unicast() {
    let c = keepalived_like(55, Version::V3, 100, 100, &["10.77.0.130"]);
    check_first_advert("v3-ipv4-unicast", unicast(c, "10.77.0.1", "10.77.0.2"));
}

#[test]
fn v3_ipv4_unicast_old_checksum() {
    let mut c = keepalived_like(58, Version::V3, 100, 100, &["10.77.0.160"]);
    c.checksum_form = ChecksumForm::LegacyUnicast;
    check_first_advert(
        "v3-ipv4-unicast-old-checksum",
        unicast(c, "10.77.0.1", "10.77.0.2"),
    );
}

#[test]
fn v3_ipv6_and_resignation() {
    let c = keepalived_like(54, Version::V3, 200, 50, &["fe80::77:54", "fd77::54"]);
    let inst = check_first_advert("v3-ipv6", c);
    check_resignation("v3-ipv6-prio0", inst);
}
