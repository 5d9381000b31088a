//! The IPVS table's rules for ipvsadm's commands, in memory: what the kernel accepts, what
//! it refuses and with which errno (`net/netfilter/ipvs/ip_vs_ctl.c`). The daemon can keep
//! its virtual-server table here, and tests use it as the kernel.

use crate::adm::AdmBackend;
use crate::command::AdmCommand;
use crate::error::KernelError;
use crate::model::{DestConfig, ServiceConfig, ServiceKey, TunnelType};
use crate::snapshot::{DestEntry, ServiceEntry, Snapshot, Stats};

/// The schedulers keeplb implements, by their IPVS names.
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// The persistence engines the kernel knows.
pub const PERSISTENCE_ENGINES: &[&str] = &["sip"];

/// ERANGE, which the kernel returns for a negative weight or a lower threshold above the
/// upper one.
const ERANGE: i32 = 34;

/// A virtual-server table applying ipvsadm commands with the kernel's checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTable {
    snapshot: Snapshot,
}

impl MemoryTable {
    /// An empty table.
    pub fn new() -> MemoryTable {
        MemoryTable::default()
    }

    /// A table holding `snapshot`.
    pub fn from_snapshot(snapshot: Snapshot) -> MemoryTable {
        MemoryTable { snapshot }
    }

    /// The table's content.
    pub fn content(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The table's content, for the data plane to update counters.
    pub fn content_mut(&mut self) -> &mut Snapshot {
        &mut self.snapshot
    }

    fn service_mut(&mut self, key: &ServiceKey) -> Result<&mut ServiceEntry, KernelError> {
        self.snapshot
            .services
            .iter_mut()
            .find(|s| s.config.key == *key)
            .ok_or(KernelError::NoSuchService)
    }

    fn check_service(config: &ServiceConfig) -> Result<(), KernelError> {
        if !SCHEDULERS.contains(&config.scheduler.as_str()) {
            return Err(KernelError::NotFound);
        }
        if let Some(pe) = &config.persistence_engine
            && !PERSISTENCE_ENGINES.contains(&pe.as_str())
        {
            return Err(KernelError::NotFound);
        }
        Ok(())
    }

    fn check_dest(dest: &DestConfig) -> Result<(), KernelError> {
        if dest.weight > i32::MAX as u32 || dest.lower_threshold > dest.upper_threshold {
            return Err(KernelError::Errno(ERANGE));
        }
        if dest.tunnel.kind == TunnelType::Gue && dest.tunnel.port == 0 {
            return Err(KernelError::InvalidArgument);
        }
        Ok(())
    }

    fn find_dest(service: &ServiceEntry, address: std::net::IpAddr, port: u16) -> Option<usize> {
        service
            .dests
            .iter()
            .position(|d| d.config.address == address && d.config.port == port)
    }

    /// Applies one table-changing command as the kernel would.
    pub fn apply(&mut self, command: &AdmCommand) -> Result<(), KernelError> {
        match command {
            AdmCommand::AddService { service } => {
                if self.service_mut(&service.key).is_ok() {
                    return Err(KernelError::Exists);
                }
                Self::check_service(service)?;
                self.snapshot.services.push(ServiceEntry {
                    config: service.clone(),
                    stats: Stats::default(),
                    dests: Vec::new(),
                });
            }
            AdmCommand::EditService { service } => {
                let entry = self.service_mut(&service.key)?;
                Self::check_service(service)?;
                entry.config = service.clone();
            }
            AdmCommand::DeleteService { service } => {
                self.service_mut(service)?;
                self.snapshot.services.retain(|s| s.config.key != *service);
            }
            AdmCommand::Flush => self.snapshot.services.clear(),
            AdmCommand::Zero { service: Some(key) } => {
                let entry = self.service_mut(key)?;
                entry.stats = Stats::default();
                entry
                    .dests
                    .iter_mut()
                    .for_each(|d| d.stats = Stats::default());
            }
            AdmCommand::Zero { service: None } => {
                for entry in &mut self.snapshot.services {
                    entry.stats = Stats::default();
                    entry
                        .dests
                        .iter_mut()
                        .for_each(|d| d.stats = Stats::default());
                }
            }
            AdmCommand::AddDest { service, dest } => {
                let entry = self.service_mut(service)?;
                Self::check_dest(dest)?;
                if Self::find_dest(entry, dest.address, dest.port).is_some() {
                    return Err(KernelError::Exists);
                }
                // the kernel puts new real servers at the head of the list
                entry.dests.insert(
                    0,
                    DestEntry {
                        config: *dest,
                        active_conns: 0,
                        inactive_conns: 0,
                        persistent_conns: 0,
                        stats: Stats::default(),
                    },
                );
            }
            AdmCommand::EditDest { service, dest } => {
                let entry = self.service_mut(service)?;
                Self::check_dest(dest)?;
                let index =
                    Self::find_dest(entry, dest.address, dest.port).ok_or(KernelError::NotFound)?;
                entry.dests[index].config = *dest;
            }
            AdmCommand::DeleteDest {
                service,
                address,
                port,
            } => {
                let entry = self.service_mut(service)?;
                let index = Self::find_dest(entry, *address, *port).ok_or(KernelError::NotFound)?;
                entry.dests.remove(index);
            }
            AdmCommand::SetTimeouts { timeouts } => {
                let current = &mut self.snapshot.timeouts;
                for (value, new) in [
                    (&mut current.tcp, timeouts.tcp),
                    (&mut current.tcp_fin, timeouts.tcp_fin),
                    (&mut current.udp, timeouts.udp),
                ] {
                    if new != 0 {
                        *value = new;
                    }
                }
            }
            AdmCommand::StartDaemon { daemon } => {
                if self.snapshot.daemons.iter().any(|d| d.role == daemon.role) {
                    return Err(KernelError::Exists);
                }
                self.snapshot.daemons.push(daemon.clone());
            }
            AdmCommand::StopDaemon { role, .. } => {
                if !self.snapshot.daemons.iter().any(|d| d.role == *role) {
                    return Err(KernelError::NoSuchService);
                }
                self.snapshot.daemons.retain(|d| d.role != *role);
            }
            AdmCommand::List { .. }
            | AdmCommand::Save { .. }
            | AdmCommand::Restore
            | AdmCommand::Help
            | AdmCommand::Version => {}
        }
        Ok(())
    }
}

impl AdmBackend for MemoryTable {
    fn apply(&mut self, command: &AdmCommand) -> Result<(), KernelError> {
        MemoryTable::apply(self, command)
    }

    fn snapshot(&mut self) -> Result<Snapshot, KernelError> {
        Ok(self.snapshot.clone())
    }
}

impl MemoryTable {
    /// Answers the control requests a table can answer: `adm` commands and snapshots.
    /// Status and reload belong to the daemon; they are answered as bad requests here.
    pub fn handle(&mut self, request: &crate::api::Request) -> crate::api::Response {
        use crate::api::{ApiError, RequestBody, Response, ResponseBody};
        match &request.body {
            RequestBody::Adm { command } => match self.apply(command) {
                Ok(()) => Response::new(ResponseBody::Done),
                Err(error) => Response::kernel_error(
                    error,
                    command
                        .operation()
                        .unwrap_or(crate::error::Operation::Flush),
                ),
            },
            RequestBody::Snapshot => Response::new(ResponseBody::Snapshot {
                snapshot: self.snapshot.clone(),
            }),
            RequestBody::Status | RequestBody::Reload => Response::new(ResponseBody::Error {
                error: ApiError::BadRequest {
                    message: "not served by a bare IPVS table".to_owned(),
                },
            }),
        }
    }
}
