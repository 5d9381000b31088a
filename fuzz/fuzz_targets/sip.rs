//! The SIP persistence engine on arbitrary UDP datagrams: `sip::call_id`, the service's
//! `engine_key`, and scheduling through the connection table. Must never panic, and every
//! datagram of one Call-ID must reach the same real server.
//!
//! Run from fuzz/: `cargo fuzz run -s none sip corpus/sip seeds/sip -- -max_total_time=300`.

#![no_main]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keeplb_balancer::sip::{MAX_CALL_ID, call_id};
use keeplb_balancer::{
    ConnTable, Dest, EngineKey, Flow, Granularity, Persistence, PersistenceEngine, Pool, Protocol,
    SchedFlags, Service, ServiceAddr, Unscheduled, from_name,
};
use libfuzzer_sys::fuzz_target;

const VIP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 5060);

/// A persistent rr UDP service over two real servers whose templates are keyed by the
/// Call-ID alone (granularity 0.0.0.0).
fn sip_service() -> Option<Service> {
    let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).ok()?);
    for port in [5060, 5061] {
        let dest = Dest::new(SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), port), 1).ok()?;
        pool.add(Arc::new(dest)).ok()?;
    }
    let persistence = Persistence::new(Duration::from_secs(600))
        .with_granularity(Granularity::v4_netmask(Ipv4Addr::UNSPECIFIED));
    let mut svc =
        Service::new(ServiceAddr::Addr(Protocol::Udp, VIP), pool).with_persistence(persistence);
    svc.set_persistence_engine(Some(PersistenceEngine::Sip));
    Some(svc)
}

fuzz_target!(|data: &[u8]| {
    let Some(svc) = sip_service() else {
        return;
    };
    let mut table = ConnTable::default();
    let mut calls: HashMap<Vec<u8>, SocketAddr> = HashMap::new();
    // A 0xFF byte separates datagrams (it is no character of a SIP header line).
    for (i, message) in data.split(|&b| b == 0xff).take(32).enumerate() {
        let id = call_id(message);
        if let Some(id) = id {
            assert!(!id.is_empty() && id.len() <= MAX_CALL_ID);
            let offset = id.as_ptr() as usize - message.as_ptr() as usize;
            assert!(
                offset + id.len() <= message.len(),
                "the Call-ID lies inside the message"
            );
        }
        match svc.engine_key(Protocol::Udp, message) {
            EngineKey::Key(_, key) => assert_eq!(Some(&key[..]), id),
            EngineKey::Refused => assert_eq!(id, None),
            EngineKey::NoEngine => panic!("the SIP engine is configured"),
        }
        assert_eq!(svc.engine_key(Protocol::Tcp, message), EngineKey::Refused);

        let Ok(port) = u16::try_from(1024 + i) else {
            return;
        };
        let client = SocketAddr::new(Ipv4Addr::new(192, 0, 2, 7).into(), port);
        let now = Duration::from_secs(u64::try_from(i).unwrap_or(0));
        match table.schedule_one_packet(&svc, Protocol::Udp, &Flow::new(client, VIP), message, now)
        {
            Ok((dest, _)) => {
                let id = id.expect("scheduled only with a Call-ID");
                let first = *calls.entry(id.to_vec()).or_insert(dest.addr());
                assert_eq!(first, dest.addr(), "one call, one real server");
            }
            Err(Unscheduled::EngineRefused) => assert_eq!(id, None),
            Err(Unscheduled::NoDestination) => panic!("both real servers are available"),
        }
    }
    let _ = table.entries(Duration::from_secs(40));
});
