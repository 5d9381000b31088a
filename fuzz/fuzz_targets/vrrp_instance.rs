//! The VRRP state machine fed what the network can send it: advertisements with any
//! field values (valid checksums, so they get past decoding), raw payloads, and timer
//! expiries and interface or tracking events in any order and at any time. Must never
//! panic or hang.
//!
//! Run from fuzz/: `cargo fuzz run -s none vrrp_instance corpus/vrrp_instance seeds/vrrp_instance -- -max_total_time=300`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use keeplb_vrrp::packet::{MULTICAST_V4, MULTICAST_V6};
use keeplb_vrrp::{
    AdverInterval, Advertisement, Auth, AuthPassword, ChecksumForm, EncodeContext, Event,
    InitialState, Instance, InstanceConfig, Received, TimerKind, Transport, UnicastPeer, Version,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;

const V4: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 101)),
];
const V6: [IpAddr; 4] = [
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101)),
];

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let ipv6 = u.arbitrary::<bool>()?;
    let addrs = if ipv6 { &V6 } else { &V4 };
    let version = if ipv6 || u.arbitrary::<bool>()? {
        Version::V3
    } else {
        Version::V2
    };
    let (local, peer) = (addrs[0], addrs[1]);
    let mut config = InstanceConfig::new("VI", u.int_in_range(1..=255)?, version, vec![addrs[2]]);
    config.priority = u.int_in_range(1..=255)?;
    config.adver_int = match version {
        Version::V2 => AdverInterval::from_secs(u.int_in_range(1..=255)?),
        Version::V3 => AdverInterval::from_centis(u.int_in_range(1..=0x0fff)?),
    };
    config.initial_state = if u.arbitrary()? {
        InitialState::Master
    } else {
        InitialState::Backup
    };
    config.preempt = u.arbitrary()?;
    config.preempt_delay = Duration::from_secs(u.int_in_range(0..=1000)?);
    config.lower_prio_no_advert = u.arbitrary()?;
    config.higher_prio_send_advert = u.arbitrary()?;
    config.down_timer_adverts = u.int_in_range(1..=100)?;
    if version == Version::V2 && u.arbitrary()? {
        config.auth = Auth::Password(AuthPassword::new(b"secret"));
    }
    if u.arbitrary()? {
        config.src_addr = Some(local);
        config.transport = Transport::Unicast {
            peers: vec![UnicastPeer::new(peer)],
            ttl: 255,
            check_src: u.arbitrary()?,
        };
    }
    let group = if ipv6 {
        IpAddr::V6(MULTICAST_V6)
    } else {
        IpAddr::V4(MULTICAST_V4)
    };
    let dst = if config.transport.is_unicast() {
        local
    } else {
        group
    };
    let vrid = config.vrid;
    let Ok(mut instance) = Instance::new(config) else {
        return Ok(());
    };

    let mut now = Instant::now();
    instance.handle(
        Event::InterfaceUp {
            primary: Some(local),
        },
        now,
    );
    instance.handle(Event::Startup, now);
    for _ in 0..64 {
        now += Duration::from_millis(u.int_in_range(0..=60_000)?);
        let event = match u.int_in_range(0..=9)? {
            0 | 1 => {
                let advert = Advertisement {
                    version: if ipv6 || u.arbitrary()? {
                        Version::V3
                    } else {
                        Version::V2
                    },
                    vrid: if u.arbitrary()? { vrid } else { u.arbitrary()? },
                    priority: u.arbitrary()?,
                    adver_int: AdverInterval::from_centis(u.arbitrary()?),
                    auth: match u.int_in_range(0..=2)? {
                        0 => Auth::None,
                        1 => Auth::Password(AuthPassword::new(b"secret")),
                        _ => Auth::Password(AuthPassword::from_wire(u.arbitrary()?)),
                    },
                    addresses: (0..u.int_in_range(0..=3)?)
                        .map(|_| u.choose(addrs).copied())
                        .collect::<Result<_>>()?,
                };
                let src = *u.choose(addrs)?;
                let checksum_form = *u.choose(&[
                    ChecksumForm::PseudoHeader,
                    ChecksumForm::MessageOnly,
                    ChecksumForm::LegacyUnicast,
                ])?;
                let ctx = EncodeContext {
                    src,
                    dst,
                    checksum_form,
                };
                let Ok(payload) = advert.encode(&ctx) else {
                    continue;
                };
                Event::AdvertReceived(Received {
                    src,
                    dst,
                    ttl: if u.arbitrary()? {
                        Some(u.arbitrary()?)
                    } else {
                        Some(255)
                    },
                    payload,
                })
            }
            2 => Event::AdvertReceived(Received {
                src: *u.choose(addrs)?,
                dst,
                ttl: u.arbitrary()?,
                payload: u.arbitrary()?,
            }),
            3 | 4 => Event::TimerExpired(*u.choose(&TimerKind::ALL)?),
            5 => Event::PriorityChanged(u.arbitrary()?),
            6 => u.choose(&[Event::ForceFault, Event::ClearFault])?.clone(),
            7 => {
                if u.arbitrary()? {
                    Event::InterfaceDown
                } else {
                    Event::InterfaceUp {
                        primary: *u.choose(&[None, Some(local)])?,
                    }
                }
            }
            8 => u.choose(&[Event::SyncBackup, Event::SyncMaster])?.clone(),
            _ => {
                if u.arbitrary()? {
                    Event::Shutdown
                } else {
                    Event::Startup
                }
            }
        };
        let _ = instance.handle(event, now);
    }
    Ok(())
}
