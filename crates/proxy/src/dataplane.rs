//! The worker threads and the set of services they serve.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use keeplb_balancer::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::error::ProxyError;
use crate::hub::RelayHub;
use crate::listener;
use crate::service::VirtualService;
use crate::{tcp, udp};

/// How often connection tables expire idle entries and rate estimators run.
const TICK: Duration = Duration::from_secs(1);

/// A service is identified by protocol, address and port, as in IPVS.
pub type ServiceId = (Protocol, SocketAddr);

type Services = Arc<Mutex<HashMap<ServiceId, Arc<VirtualService>>>>;

/// The userspace data plane: `N` worker threads, each with its own single-threaded
/// runtime and its own listening socket per service (the kernel spreads clients over
/// them), sharing the services' scheduling state so that scheduling is exactly as one
/// IPVS director would do it, whatever the number of workers.
///
/// Dropping it stops the workers and closes every connection.
#[derive(Debug)]
pub struct DataPlane {
    workers: Vec<Worker>,
    services: Services,
}

#[derive(Debug)]
struct Worker {
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<thread::JoinHandle<()>>,
}

#[derive(Debug)]
enum Command {
    Serve {
        id: ServiceId,
        svc: Arc<VirtualService>,
        socket: Listening,
    },
    Stop(ServiceId),
}

#[derive(Debug)]
enum Listening {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl DataPlane {
    /// Starts `workers` worker threads serving nothing yet.
    pub fn start(workers: NonZeroUsize) -> Result<Self, ProxyError> {
        let services = Services::default();
        let workers = (0..workers.get())
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| ProxyError::Worker { index, error })?;
                let (commands, inbox) = mpsc::unbounded_channel();
                // The first worker also does the once-a-second housekeeping.
                let housekeeping = (index == 0).then(|| Arc::clone(&services));
                let thread = thread::Builder::new()
                    .name(format!("keeplb-worker-{index}"))
                    .spawn(move || runtime.block_on(run_worker(inbox, housekeeping)))
                    .map_err(|error| ProxyError::Worker { index, error })?;
                Ok(Worker {
                    commands,
                    thread: Some(thread),
                })
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        Ok(Self { workers, services })
    }

    /// How many worker threads serve.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Starts serving `svc`: every worker listens on its address at once, whether
    /// or not this director holds the address yet.
    pub fn add(&self, svc: Arc<VirtualService>) -> Result<(), ProxyError> {
        let id = (svc.protocol(), svc.vip());
        let mut services = self.services();
        if services.contains_key(&id) {
            return Err(ProxyError::Duplicate { vip: svc.vip() });
        }
        let listen_error = |error| ProxyError::Listen {
            vip: svc.vip(),
            error,
        };
        let kind = match svc.protocol() {
            Protocol::Udp => socket2::Type::DGRAM,
            _ => socket2::Type::STREAM,
        };
        listener::ensure_free(svc.vip(), kind).map_err(listen_error)?;
        let sockets = (0..self.workers.len())
            .map(|_| match svc.protocol() {
                Protocol::Udp => listener::udp(svc.vip()).map(Listening::Udp),
                _ => listener::tcp(svc.vip()).map(Listening::Tcp),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(listen_error)?;
        for (worker, socket) in self.workers.iter().zip(sockets) {
            worker
                .commands
                .send(Command::Serve {
                    id,
                    svc: Arc::clone(&svc),
                    socket,
                })
                .map_err(|_| ProxyError::Stopped)?;
        }
        let forwarding = svc.options().forwarding;
        tracing::info!(
            "{} {}: serving on {} worker(s); lb_kind {forwarding} requested, forwarding is a userspace full proxy (FULLNAT): real servers see connections from this director",
            svc.protocol(),
            svc.vip(),
            self.workers.len(),
        );
        services.insert(id, svc);
        Ok(())
    }

    /// Stops accepting new clients of a service and forgets it. Its connections go on
    /// until they end (they drain); its real servers are out of service for them.
    pub fn remove(&self, protocol: Protocol, vip: SocketAddr) -> Option<Arc<VirtualService>> {
        let id = (protocol, vip);
        let svc = self.services().remove(&id)?;
        svc.read(|s| s.pool.withdraw_all());
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Stop(id));
        }
        Some(svc)
    }

    /// The service on `protocol`, `vip`.
    pub fn get(&self, protocol: Protocol, vip: SocketAddr) -> Option<Arc<VirtualService>> {
        self.services().get(&(protocol, vip)).cloned()
    }

    /// Every service, ordered by protocol and address.
    pub fn services_sorted(&self) -> Vec<Arc<VirtualService>> {
        let mut all: Vec<_> = self.services().values().cloned().collect();
        all.sort_by_key(|svc| (svc.protocol(), svc.vip()));
        all
    }

    fn services(&self) -> MutexGuard<'_, HashMap<ServiceId, Arc<VirtualService>>> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        // Closing the command channels ends each worker's loop, and with it its
        // runtime and every task on it.
        let threads: Vec<_> = self
            .workers
            .iter_mut()
            .filter_map(|w| w.thread.take())
            .collect();
        self.workers.clear();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

async fn run_worker(mut inbox: mpsc::UnboundedReceiver<Command>, housekeeping: Option<Services>) {
    if let Some(services) = housekeeping {
        tokio::spawn(tick(services));
    }
    let hub = match RelayHub::new() {
        Ok(hub) => hub,
        Err(e) => {
            tracing::error!("worker cannot relay TCP connections: {e}");
            return;
        }
    };
    tokio::spawn(Arc::clone(&hub).run());
    let mut serving: HashMap<ServiceId, AbortHandle> = HashMap::new();
    while let Some(command) = inbox.recv().await {
        match command {
            Command::Serve { id, svc, socket } => {
                let task = match socket {
                    Listening::Tcp(socket) => TcpListener::from_std(socket).map(|listener| {
                        tokio::spawn(tcp::accept_loop(listener, svc, Arc::clone(&hub)))
                    }),
                    Listening::Udp(socket) => UdpSocket::from_std(socket)
                        .map(|socket| tokio::spawn(udp::serve(socket, svc))),
                };
                match task {
                    Ok(task) => {
                        if let Some(old) = serving.insert(id, task.abort_handle()) {
                            old.abort();
                        }
                    }
                    Err(e) => tracing::error!("{} {}: cannot serve: {e}", id.0, id.1),
                }
            }
            Command::Stop(id) => {
                if let Some(task) = serving.remove(&id) {
                    task.abort();
                }
            }
        }
    }
}

async fn tick(services: Services) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let all: Vec<_> = services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for svc in all {
            svc.tick();
        }
    }
}
