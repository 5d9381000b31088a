//! The IPVS connection-sync protocol as a backup receives it (`lvs_sync_daemon`): any
//! datagram from the sync group through `sync::decode`, the templates it carries
//! imported into a persistent service's connection table, exported and sent again.
//! Must never panic; what decodes must encode and decode to the same entries.
//!
//! Run from fuzz/: `cargo fuzz run -s none ipvs_sync corpus/ipvs_sync seeds/ipvs_sync`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keeplb_balancer::sync::{decode, encode};
use keeplb_balancer::{
    ConnTable, Dest, Persistence, PersistenceEngine, Pool, Protocol, SchedFlags, Service,
    ServiceAddr, from_name,
};
use libfuzzer_sys::fuzz_target;

const VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100)), 5060);

/// A persistent UDP service with the SIP engine over two real servers of 10.0.0.1.
fn service() -> Option<Service> {
    let mut pool = Pool::new(from_name("rr", SchedFlags::EMPTY).ok()?);
    for port in [5060, 0] {
        let dest = Dest::new(SocketAddr::new(Ipv4Addr::new(10, 0, 0, 1).into(), port), 1).ok()?;
        pool.add(Arc::new(dest)).ok()?;
    }
    let mut svc = Service::new(ServiceAddr::Addr(Protocol::Udp, VIP), pool)
        .with_persistence(Persistence::new(Duration::from_secs(300)));
    svc.set_persistence_engine(Some(PersistenceEngine::Sip));
    Some(svc)
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode(data) else {
        return;
    };
    let _ = message.accepted_by(0);
    let Some(svc) = service() else {
        return;
    };
    let mut table = ConnTable::default();
    for conn in &message.conns {
        if conn.matches_service(svc.addr()) {
            let _ = table.import_template(&svc, conn, Duration::from_secs(1));
        }
    }
    let exported = table.export_all_templates(Duration::from_secs(2));
    round_trip(message.sync_id, &exported);
    round_trip(message.sync_id, &message.conns);
});

/// Every entry `encode` accepts comes back from `decode` as it was.
fn round_trip(sync_id: u8, conns: &[keeplb_balancer::SyncConn]) {
    let encoded = encode(sync_id, conns, 1500);
    let mut decoded = Vec::new();
    for datagram in &encoded.datagrams {
        let message = decode(datagram).expect("an encoded datagram decodes");
        assert_eq!(message.sync_id, sync_id);
        assert!(message.skipped.is_empty(), "{:?}", message.skipped);
        decoded.extend(message.conns);
    }
    assert_eq!(decoded.len() + encoded.refused.len(), conns.len());
    if encoded.refused.is_empty() {
        assert_eq!(decoded, conns);
    }
}
