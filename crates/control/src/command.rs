//! What an ipvsadm command line asks for, once parsed: the typed form the daemon executes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::Operation;
use crate::model::{DestConfig, ServiceConfig, ServiceKey, SyncDaemon, SyncRole, Timeouts};

/// How a listing is printed (`-n`, `--stats`, `--rate`, `--exact`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListFormat {
    /// `-n`: numeric addresses and ports.
    #[serde(default)]
    pub numeric: bool,
    /// `--stats`.
    #[serde(default)]
    pub stats: bool,
    /// `--rate`.
    #[serde(default)]
    pub rate: bool,
    /// `--thresholds`.
    #[serde(default)]
    pub thresholds: bool,
    /// `--persistent-conn`.
    #[serde(default)]
    pub persistent_conn: bool,
    /// `--tun-info`.
    #[serde(default)]
    pub tun_info: bool,
    /// `--nosort`.
    #[serde(default)]
    pub nosort: bool,
    /// `--exact`.
    #[serde(default)]
    pub exact: bool,
}

/// What `-L` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum ListTarget {
    /// Every service (`-L`).
    All,
    /// One service (`-L -t ADDR:PORT`).
    Service {
        /// Which one.
        service: ServiceKey,
    },
    /// Connection entries (`-L -c`).
    Connections,
    /// Timeouts (`-L --timeout`).
    Timeouts,
    /// Sync daemons (`-L --daemon`).
    Daemons,
}

/// One ipvsadm command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdmCommand {
    /// `-A`: add a virtual service.
    AddService {
        /// Its settings (defaults filled in as ipvsadm does).
        service: ServiceConfig,
    },
    /// `-E`: replace a virtual service's settings (every field, as ipvsadm sends them).
    EditService {
        /// The new settings.
        service: ServiceConfig,
    },
    /// `-D`: delete a virtual service.
    DeleteService {
        /// Which one.
        service: ServiceKey,
    },
    /// `-C`: delete every service.
    Flush,
    /// `-Z`: zero the counters of one service or of all.
    Zero {
        /// Which one; all when absent.
        service: Option<ServiceKey>,
    },
    /// `-a`: add a real server.
    AddDest {
        /// To which service.
        service: ServiceKey,
        /// Its settings.
        dest: DestConfig,
    },
    /// `-e`: replace a real server's settings (every field).
    EditDest {
        /// In which service.
        service: ServiceKey,
        /// The new settings; address and port select the server.
        dest: DestConfig,
    },
    /// `-d`: delete a real server.
    DeleteDest {
        /// From which service.
        service: ServiceKey,
        /// Real server address.
        address: IpAddr,
        /// Real server port.
        port: u16,
    },
    /// `--set tcp tcpfin udp` (0 leaves a value unchanged).
    SetTimeouts {
        /// The timeouts.
        timeouts: Timeouts,
    },
    /// `--start-daemon`.
    StartDaemon {
        /// The daemon's settings.
        daemon: SyncDaemon,
    },
    /// `--stop-daemon`.
    StopDaemon {
        /// Which daemon.
        role: SyncRole,
        /// `--syncid`, when given.
        sync_id: Option<u8>,
    },
    /// `-L`/`-l`.
    List {
        /// What to list.
        target: ListTarget,
        /// How.
        format: ListFormat,
    },
    /// `-S`: print the table as ipvsadm rules.
    Save {
        /// `-n`.
        numeric: bool,
    },
    /// `-R`: read commands from standard input.
    Restore,
    /// `-h`.
    Help,
    /// `-v`.
    Version,
}

impl AdmCommand {
    /// The operation whose wording ipvsadm uses when this command fails.
    pub fn operation(&self) -> Option<Operation> {
        Some(match self {
            AdmCommand::AddService { .. } => Operation::AddService,
            AdmCommand::EditService { .. } => Operation::EditService,
            AdmCommand::DeleteService { .. } => Operation::DeleteService,
            AdmCommand::Flush => Operation::Flush,
            AdmCommand::Zero { .. } => Operation::ZeroService,
            AdmCommand::AddDest { .. } => Operation::AddDest,
            AdmCommand::EditDest { .. } => Operation::EditDest,
            AdmCommand::DeleteDest { .. } => Operation::DeleteDest,
            AdmCommand::SetTimeouts { .. } => Operation::SetTimeout,
            AdmCommand::StartDaemon { .. } => Operation::StartDaemon,
            AdmCommand::StopDaemon { .. } => Operation::StopDaemon,
            AdmCommand::List {
                target: ListTarget::Service { .. },
                ..
            } => Operation::GetService,
            AdmCommand::List {
                target: ListTarget::Timeouts,
                ..
            } => Operation::GetTimeout,
            AdmCommand::List {
                target: ListTarget::Daemons,
                ..
            } => Operation::GetDaemon,
            AdmCommand::List { .. } | AdmCommand::Save { .. } => Operation::GetServices,
            AdmCommand::Restore | AdmCommand::Help | AdmCommand::Version => return None,
        })
    }

    /// True for the commands that change the table (everything the daemon must apply).
    pub fn modifies_table(&self) -> bool {
        !matches!(
            self,
            AdmCommand::List { .. }
                | AdmCommand::Save { .. }
                | AdmCommand::Restore
                | AdmCommand::Help
                | AdmCommand::Version
        )
    }
}
