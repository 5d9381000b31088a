//! The table a listing prints: services with their real servers and counters, connection
//! entries, timeouts and sync daemons. The daemon fills it; `keeplb adm` formats it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{DestConfig, ServiceConfig, SyncDaemon, Timeouts};

/// Traffic counters and rates of a service or real server, as the kernel keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in.
    pub in_pkts: u64,
    /// Packets out.
    pub out_pkts: u64,
    /// Bytes in.
    pub in_bytes: u64,
    /// Bytes out.
    pub out_bytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Packets in per second.
    pub in_pps: u64,
    /// Packets out per second.
    pub out_pps: u64,
    /// Bytes in per second.
    pub in_bps: u64,
    /// Bytes out per second.
    pub out_bps: u64,
}

/// A real server in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestEntry {
    /// Its settings.
    #[serde(flatten)]
    pub config: DestConfig,
    /// ActiveConn: ESTABLISHED connections.
    pub active_conns: u32,
    /// InActConn: connections in any other state.
    pub inactive_conns: u32,
    /// PersistConn: persistence templates pointing here.
    pub persistent_conns: u32,
    /// Counters.
    #[serde(default)]
    pub stats: Stats,
}

/// A virtual service in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Its settings.
    #[serde(flatten)]
    pub config: ServiceConfig,
    /// Counters.
    #[serde(default)]
    pub stats: Stats,
    /// Real servers, in the daemon's order (listings sort them unless `--nosort`).
    #[serde(default)]
    pub dests: Vec<DestEntry>,
}

/// One connection entry (`-Lc`), as /proc/net/ip_vs_conn describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEntry {
    /// Protocol as the kernel names it: `TCP`, `UDP`, `SCTP`, or `IP` for persistence
    /// templates.
    pub protocol: String,
    /// Client address.
    pub client: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Virtual address.
    pub virtual_address: IpAddr,
    /// Virtual port.
    pub virtual_port: u16,
    /// Real server address.
    pub dest: IpAddr,
    /// Real server port.
    pub dest_port: u16,
    /// State name as the kernel prints it (`ESTABLISHED`, `FIN_WAIT`, `NONE`, …).
    pub state: String,
    /// Seconds until the entry expires.
    pub expires: u32,
    /// Persistence engine name and data, when the entry has them.
    #[serde(default)]
    pub persistence_engine: Option<(String, String)>,
}

/// Everything a listing may print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// IPVS version reported in the header (`1.2.1`).
    pub version: [u8; 3],
    /// Connection table size reported in the header.
    pub conn_table_size: u32,
    /// Virtual services, in the daemon's order (listings sort them unless `--nosort`).
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Connection entries.
    #[serde(default)]
    pub connections: Vec<ConnEntry>,
    /// Connection timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Running sync daemons.
    #[serde(default)]
    pub daemons: Vec<SyncDaemon>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            version: [1, 2, 1],
            conn_table_size: 4096,
            services: Vec::new(),
            connections: Vec::new(),
            timeouts: Timeouts::default(),
            daemons: Vec::new(),
        }
    }
}
