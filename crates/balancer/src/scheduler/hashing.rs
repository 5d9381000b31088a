//! sh and dh: a static 256-bucket table from address hash to destination.
//!
//! Both fill the table by walking the destination list from its head, wrapping around:
//! dh gives each destination one bucket per turn (ip_vs_dh.c), sh gives each destination
//! as many consecutive buckets as its weight (ip_vs_sh.c), so heavier servers own more
//! of the hash space. The bucket of an address is `hash_32(folded address, 8)`.
//!
//! The table is rebuilt from scratch on every update, like the kernel's, so adding or
//! removing a destination remaps most clients; mh is the consistent alternative.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dest::Dest;
use crate::error::SchedulerError;
use crate::flow::Flow;
use crate::hash::{fold_addr, hash_32};
use crate::scheduler::{Scheduler, SchedulerKind};

const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: u32 = (1 << TAB_BITS) - 1;

/// Bucket → destination index; `EMPTY` when there are no destinations.
#[derive(Clone, PartialEq, Eq)]
struct Buckets([u32; TAB_SIZE]);

const EMPTY: u32 = u32::MAX;

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets").finish_non_exhaustive()
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Self([EMPTY; TAB_SIZE])
    }
}

impl Buckets {
    /// Walks the list round and round, giving each destination `turns(dest)` consecutive
    /// buckets (at least one: the kernel's `++count >= weight` test moves on after one
    /// bucket even for weight 0).
    fn assign(dests: &[Arc<Dest>], turns: impl Fn(&Dest) -> u32) -> Self {
        let mut table = Self::default();
        if dests.is_empty() {
            return table;
        }
        let (mut current, mut given) = (0usize, 0u32);
        for bucket in &mut table.0 {
            // Destination counts above u32::MAX cannot be built in memory anyway.
            *bucket = current as u32;
            given += 1;
            if given >= turns(&dests[current]) {
                current = (current + 1) % dests.len();
                given = 0;
            }
        }
        table
    }

    fn get(&self, bucket: u32) -> Option<usize> {
        let index = self.0[(bucket & TAB_MASK) as usize];
        (index != EMPTY).then_some(index as usize)
    }
}

/// `index` if that destination can take a new connection.
fn usable(dests: &[Arc<Dest>], index: usize) -> Option<usize> {
    dests.get(index).filter(|d| d.available()).map(|_| index)
}

/// Source hashing (`sh`): clients map to destinations by their address (and port with
/// `sh-port`).
#[derive(Debug, Clone, Default)]
pub struct SourceHash {
    fallback: bool,
    port: bool,
    buckets: Buckets,
}

impl SourceHash {
    /// `fallback`: when the hashed destination cannot take the connection, probe the
    /// other buckets (`sh-fallback`); otherwise the connection is refused. `port`: hash
    /// the client port too (`sh-port`).
    pub fn new(fallback: bool, port: bool) -> Self {
        Self {
            fallback,
            port,
            buckets: Buckets::default(),
        }
    }

    fn bucket(&self, ip: IpAddr, port: u16, offset: u32) -> u32 {
        let port = if self.port { u32::from(port) } else { 0 };
        offset.wrapping_add(hash_32(fold_addr(ip).wrapping_add(port), TAB_BITS)) & TAB_MASK
    }
}

impl Scheduler for SourceHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sh
    }

    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        self.buckets = Buckets::assign(dests, Dest::weight);
        Ok(())
    }

    /// With fallback, the probe sequence is the kernel's: offsets 0..256 from the
    /// original bucket, each added to the hash again, so the walk starts at twice the
    /// original bucket. Deterministic, so every director falls back alike.
    fn pick(&self, dests: &[Arc<Dest>], flow: &Flow, _now: Duration) -> Option<usize> {
        let (ip, port) = (flow.client.ip(), flow.client.port());
        let first = self.bucket(ip, port, 0);
        let index = self.buckets.get(first)?;
        if let Some(chosen) = usable(dests, index) {
            return Some(chosen);
        }
        if !self.fallback {
            return None;
        }
        (0..TAB_SIZE as u32)
            .map(|offset| {
                self.buckets
                    .get(self.bucket(ip, port, (offset + first) & TAB_MASK))
            })
            .take_while(Option::is_some)
            .flatten()
            .find_map(|index| usable(dests, index))
    }
}

/// Destination hashing (`dh`): connections map to destinations by the address they were
/// sent to, so that each cache server keeps serving the same origin addresses.
#[derive(Debug, Clone, Default)]
pub struct DestinationHash {
    buckets: Buckets,
}

impl DestinationHash {
    /// A scheduler with no destinations yet; call [`Scheduler::update`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl Scheduler for DestinationHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Dh
    }

    fn update(&mut self, dests: &[Arc<Dest>]) -> Result<(), SchedulerError> {
        self.buckets = Buckets::assign(dests, |_| 1);
        Ok(())
    }

    fn pick(&self, dests: &[Arc<Dest>], flow: &Flow, _now: Duration) -> Option<usize> {
        let bucket = hash_32(fold_addr(flow.vip.ip()), TAB_BITS);
        usable(dests, self.buckets.get(bucket)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::scheduler::testutil::{dests, flow, overload};

    fn sh(d: &[Arc<Dest>], fallback: bool, port: bool) -> SourceHash {
        let mut s = SourceHash::new(fallback, port);
        s.update(d).unwrap();
        s
    }

    fn pick(s: &dyn Scheduler, d: &[Arc<Dest>], f: Flow) -> Option<usize> {
        s.pick(d, &f, Duration::ZERO)
    }

    #[test]
    fn sh_buckets_repeat_each_destination_by_weight() {
        let s = sh(&dests(&[3, 1]), false, false);
        let expected: Vec<u32> = (0..256).map(|b| u32::from(b % 4 == 3)).collect();
        assert_eq!(s.buckets.0.to_vec(), expected);
        // Weight 0 still takes one bucket per round (then is refused at pick time).
        let s = sh(&dests(&[0, 2]), false, false);
        assert_eq!(s.buckets.0[..6], [0, 1, 1, 0, 1, 1]);
        // Weights of 256 and more fill the table with the first destination.
        let s = sh(&dests(&[300, 1]), false, false);
        assert!(s.buckets.0.iter().all(|&i| i == 0));
        assert_eq!(sh(&[], false, false).buckets, Buckets::default());
    }

    #[test]
    fn sh_hashes_the_client_address_like_the_kernel() {
        // hash_32(192.0.2.1, 8) = 50, and bucket 50 of a 3-destination table is 50 % 3.
        let d = dests(&[1, 1, 1]);
        let s = sh(&d, false, false);
        assert_eq!(pick(&s, &d, flow(1, 1000)), Some(2));
        assert_eq!(
            pick(&s, &d, flow(1, 1001)),
            Some(2),
            "port ignored without sh-port"
        );
        // With sh-port: hash_32(192.0.2.1 + 1000, 8) = 42, + 1001 gives 139.
        let s = sh(&d, false, true);
        assert_eq!(pick(&s, &d, flow(1, 1000)), Some(0));
        assert_eq!(pick(&s, &d, flow(1, 1001)), Some(1));
    }

    #[test]
    fn sh_hashes_ipv6_clients_by_folded_address() {
        // 2001:db8::5 folds to 0x20010dbd, whose bucket is 198; 198 % 3 = 0.
        let d = dests(&[1, 1, 1]);
        let s = sh(&d, false, false);
        let client: SocketAddr = "[2001:db8::5]:4000".parse().unwrap();
        let vip: SocketAddr = "[2001:db8::80]:80".parse().unwrap();
        assert_eq!(pick(&s, &d, Flow::new(client, vip)), Some(0));
    }

    #[test]
    fn sh_refuses_or_falls_back_when_the_hashed_server_is_unavailable() {
        let d = dests(&[1, 1, 1]);
        overload(&d[2]);
        assert_eq!(pick(&sh(&d, false, false), &d, flow(1, 1000)), None);
        // Fallback probes bucket (50 + 50) & 255 = 100 first: 100 % 3 = 1.
        assert_eq!(pick(&sh(&d, true, false), &d, flow(1, 1000)), Some(1));
        overload(&d[0]);
        overload(&d[1]);
        assert_eq!(pick(&sh(&d, true, false), &d, flow(1, 1000)), None);
        assert_eq!(pick(&sh(&[], true, false), &[], flow(1, 1000)), None);
    }

    #[test]
    fn dh_hashes_the_destination_address_one_bucket_per_server() {
        // hash_32(198.51.100.1, 8) = 96; weights do not matter: 96 % 5 = 1.
        let d = dests(&[1, 9, 1, 1, 1]);
        let mut s = DestinationHash::new();
        s.update(&d).unwrap();
        assert_eq!(pick(&s, &d, flow(1, 1000)), Some(1));
        assert_eq!(
            pick(&s, &d, flow(77, 2000)),
            Some(1),
            "clients do not matter"
        );
        overload(&d[1]);
        assert_eq!(pick(&s, &d, flow(1, 1000)), None, "dh has no fallback");
    }
}
