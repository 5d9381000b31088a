//! The IPVS table's rules for ipvsadm's commands, in memory: what the kernel accepts, what
//! it refuses and with which errno (`net/netfilter/ipvs/ip_vs_ctl.c`). The daemon can keep
//! its virtual-server table here, and tests use it as the kernel.

use std::net::IpAddr;

use crate::adm::AdmBackend;
use crate::command::AdmCommand;
use crate::error::KernelError;
use crate::model::{
    DestConfig, ServiceConfig, ServiceKey, SyncDaemon, SyncRole, Timeouts, TunnelType,
};
use crate::snapshot::{DestEntry, ServiceEntry, Snapshot, Stats};
use keeplb_balancer::{PersistenceEngine, SchedulerKind};

/// ERANGE, which the kernel returns for a negative weight or a lower threshold above the
/// upper one.
const ERANGE: i32 = 34;

/// The primitive edits of an IPVS table, each assuming the kernel's checks passed.
///
/// [`apply_rules`] runs the kernel's checks, in the kernel's order and with its errnos,
/// and calls these; [`MemoryTable`] implements them in memory and the daemon over its
/// live data plane, so both refuse exactly the same commands with the same errors.
/// An implementation may still refuse an edit the kernel would accept (a data plane
/// that cannot serve something); it answers with the error to report.
pub trait TableOps {
    /// Whether the service exists.
    fn has_service(&self, key: &ServiceKey) -> bool;
    /// Whether the service exists and has this real server.
    fn has_dest(&self, key: &ServiceKey, address: IpAddr, port: u16) -> bool;
    /// `-A` of a new service with a known scheduler.
    fn add_service(&mut self, config: &ServiceConfig) -> Result<(), KernelError>;
    /// `-E` of an existing service with a known scheduler.
    fn edit_service(&mut self, config: &ServiceConfig) -> Result<(), KernelError>;
    /// `-D` of an existing service.
    fn delete_service(&mut self, key: &ServiceKey);
    /// `-C`.
    fn flush(&mut self);
    /// `-Z` of one existing service, or of all.
    fn zero(&mut self, key: Option<&ServiceKey>);
    /// `-a` of a new real server with valid settings to an existing service.
    fn add_dest(&mut self, key: &ServiceKey, dest: &DestConfig) -> Result<(), KernelError>;
    /// `-e` of an existing real server with valid settings.
    fn edit_dest(&mut self, key: &ServiceKey, dest: &DestConfig) -> Result<(), KernelError>;
    /// `-d` of an existing real server.
    fn delete_dest(&mut self, key: &ServiceKey, address: IpAddr, port: u16);
    /// The connection timeouts in force.
    fn timeouts(&self) -> Timeouts;
    /// `--set`, with every value given (zeros already replaced by the current ones).
    fn set_timeouts(&mut self, timeouts: Timeouts);
    /// Whether a sync daemon of this role runs.
    fn has_daemon(&self, role: SyncRole) -> bool;
    /// `--start-daemon` of a role not running yet.
    fn start_daemon(&mut self, daemon: &SyncDaemon) -> Result<(), KernelError>;
    /// `--stop-daemon` of a running role.
    fn stop_daemon(&mut self, role: SyncRole) -> Result<(), KernelError>;
}

/// Whether the kernel accepts a service's settings: a known scheduler and persistence
/// engine (ENOENT otherwise).
pub fn check_service(config: &ServiceConfig) -> Result<(), KernelError> {
    // The balancer's own lists of schedulers and engines, so the two cannot differ.
    if config.scheduler.parse::<SchedulerKind>().is_err() {
        return Err(KernelError::NotFound);
    }
    if let Some(pe) = &config.persistence_engine
        && PersistenceEngine::from_name(pe).is_none()
    {
        return Err(KernelError::NotFound);
    }
    Ok(())
}

/// Whether the kernel accepts a real server's settings: weight and thresholds in range
/// (ERANGE), a GUE tunnel with its port (EINVAL).
pub fn check_dest(dest: &DestConfig) -> Result<(), KernelError> {
    if dest.weight > i32::MAX as u32 || dest.lower_threshold > dest.upper_threshold {
        return Err(KernelError::Errno(ERANGE));
    }
    if dest.tunnel.kind == TunnelType::Gue && dest.tunnel.port == 0 {
        return Err(KernelError::InvalidArgument);
    }
    Ok(())
}

fn existing(table: &dyn TableOps, key: &ServiceKey) -> Result<(), KernelError> {
    if table.has_service(key) {
        Ok(())
    } else {
        Err(KernelError::NoSuchService)
    }
}

/// Applies one table-changing command to `table` as the kernel would
/// (`net/netfilter/ipvs/ip_vs_ctl.c`): its checks in its order, its errnos.
/// Listings, `-R`, `-h` and `-v` change nothing.
pub fn apply_rules(table: &mut dyn TableOps, command: &AdmCommand) -> Result<(), KernelError> {
    match command {
        AdmCommand::AddService { service } => {
            if table.has_service(&service.key) {
                return Err(KernelError::Exists);
            }
            check_service(service)?;
            table.add_service(service)
        }
        AdmCommand::EditService { service } => {
            existing(table, &service.key)?;
            check_service(service)?;
            table.edit_service(service)
        }
        AdmCommand::DeleteService { service } => {
            existing(table, service)?;
            table.delete_service(service);
            Ok(())
        }
        AdmCommand::Flush => {
            table.flush();
            Ok(())
        }
        AdmCommand::Zero { service } => {
            if let Some(key) = service {
                existing(table, key)?;
            }
            table.zero(service.as_ref());
            Ok(())
        }
        AdmCommand::AddDest { service, dest } => {
            existing(table, service)?;
            check_dest(dest)?;
            if table.has_dest(service, dest.address, dest.port) {
                return Err(KernelError::Exists);
            }
            table.add_dest(service, dest)
        }
        AdmCommand::EditDest { service, dest } => {
            existing(table, service)?;
            check_dest(dest)?;
            if !table.has_dest(service, dest.address, dest.port) {
                return Err(KernelError::NotFound);
            }
            table.edit_dest(service, dest)
        }
        AdmCommand::DeleteDest {
            service,
            address,
            port,
        } => {
            existing(table, service)?;
            if !table.has_dest(service, *address, *port) {
                return Err(KernelError::NotFound);
            }
            table.delete_dest(service, *address, *port);
            Ok(())
        }
        AdmCommand::SetTimeouts { timeouts } => {
            let current = table.timeouts();
            let keep = |new: u32, old: u32| if new == 0 { old } else { new };
            table.set_timeouts(Timeouts {
                tcp: keep(timeouts.tcp, current.tcp),
                tcp_fin: keep(timeouts.tcp_fin, current.tcp_fin),
                udp: keep(timeouts.udp, current.udp),
            });
            Ok(())
        }
        AdmCommand::StartDaemon { daemon } => {
            if table.has_daemon(daemon.role) {
                return Err(KernelError::Exists);
            }
            table.start_daemon(daemon)
        }
        AdmCommand::StopDaemon { role, .. } => {
            if !table.has_daemon(*role) {
                return Err(KernelError::NoSuchService);
            }
            table.stop_daemon(*role)
        }
        AdmCommand::List { .. }
        | AdmCommand::Save { .. }
        | AdmCommand::Restore
        | AdmCommand::Help
        | AdmCommand::Version => Ok(()),
    }
}

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

    fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.snapshot.services.iter().find(|s| s.config.key == *key)
    }

    fn service_mut(&mut self, key: &ServiceKey) -> Result<&mut ServiceEntry, KernelError> {
        self.snapshot
            .services
            .iter_mut()
            .find(|s| s.config.key == *key)
            .ok_or(KernelError::NoSuchService)
    }

    fn dest_mut(
        &mut self,
        key: &ServiceKey,
        address: IpAddr,
        port: u16,
    ) -> Result<&mut DestEntry, KernelError> {
        self.service_mut(key)?
            .dests
            .iter_mut()
            .find(|d| d.config.address == address && d.config.port == port)
            .ok_or(KernelError::NotFound)
    }

    /// Applies one table-changing command as the kernel would.
    pub fn apply(&mut self, command: &AdmCommand) -> Result<(), KernelError> {
        apply_rules(self, command)
    }
}

fn zero_counters(entry: &mut ServiceEntry) {
    entry.stats = Stats::default();
    entry
        .dests
        .iter_mut()
        .for_each(|d| d.stats = Stats::default());
}

impl TableOps for MemoryTable {
    fn has_service(&self, key: &ServiceKey) -> bool {
        self.service(key).is_some()
    }

    fn has_dest(&self, key: &ServiceKey, address: IpAddr, port: u16) -> bool {
        self.service(key).is_some_and(|s| {
            s.dests
                .iter()
                .any(|d| d.config.address == address && d.config.port == port)
        })
    }

    fn add_service(&mut self, config: &ServiceConfig) -> Result<(), KernelError> {
        self.snapshot.services.push(ServiceEntry {
            config: config.clone(),
            stats: Stats::default(),
            dests: Vec::new(),
        });
        Ok(())
    }

    fn edit_service(&mut self, config: &ServiceConfig) -> Result<(), KernelError> {
        self.service_mut(&config.key)?.config = config.clone();
        Ok(())
    }

    fn delete_service(&mut self, key: &ServiceKey) {
        self.snapshot.services.retain(|s| s.config.key != *key);
    }

    fn flush(&mut self) {
        self.snapshot.services.clear();
    }

    fn zero(&mut self, key: Option<&ServiceKey>) {
        self.snapshot
            .services
            .iter_mut()
            .filter(|s| key.is_none_or(|key| s.config.key == *key))
            .for_each(zero_counters);
    }

    fn add_dest(&mut self, key: &ServiceKey, dest: &DestConfig) -> Result<(), KernelError> {
        // the kernel puts new real servers at the head of the list
        self.service_mut(key)?.dests.insert(
            0,
            DestEntry {
                config: *dest,
                active_conns: 0,
                inactive_conns: 0,
                persistent_conns: 0,
                stats: Stats::default(),
            },
        );
        Ok(())
    }

    fn edit_dest(&mut self, key: &ServiceKey, dest: &DestConfig) -> Result<(), KernelError> {
        self.dest_mut(key, dest.address, dest.port)?.config = *dest;
        Ok(())
    }

    fn delete_dest(&mut self, key: &ServiceKey, address: IpAddr, port: u16) {
        if let Ok(entry) = self.service_mut(key) {
            entry
                .dests
                .retain(|d| !(d.config.address == address && d.config.port == port));
        }
    }

    fn timeouts(&self) -> Timeouts {
        self.snapshot.timeouts
    }

    fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.snapshot.timeouts = timeouts;
    }

    fn has_daemon(&self, role: SyncRole) -> bool {
        self.snapshot.daemons.iter().any(|d| d.role == role)
    }

    fn start_daemon(&mut self, daemon: &SyncDaemon) -> Result<(), KernelError> {
        self.snapshot.daemons.push(daemon.clone());
        Ok(())
    }

    fn stop_daemon(&mut self, role: SyncRole) -> Result<(), KernelError> {
        self.snapshot.daemons.retain(|d| d.role != role);
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
