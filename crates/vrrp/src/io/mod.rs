//! The thin I/O layer around [`Instance`]: sockets, netlink and timers, driven by tokio.
//!
//! One task per instance ([`run_instance`]) owns the [`Instance`] and feeds it, one at a
//! time: [`Event::InterfaceUp`] with the interface's primary address and
//! [`Event::Startup`]; every datagram of its VRID ([`Event::AdvertReceived`]); timer
//! expiries ([`Event::TimerExpired`], from the deadlines of [`Action::ArmTimer`], on
//! `tokio::time::Instant`); and [`Event::Shutdown`] when the shutdown signal flips (a
//! master then resigns with priority 0 and removes its addresses). It carries out the
//! actions in order: advertisements on a raw socket (`socket::VrrpSocketV4`), virtual
//! addresses through rtnetlink ([`netlink::Netlink`]), gratuitous ARP / unsolicited NA
//! through `AF_PACKET`.
//!
//! Nothing in the loop waits on anything but the socket, the timers and the shutdown
//! signal; netlink requests and frame sends are non-blocking local syscalls.
//!
//! Scope today: IPv4 (VRRPv2 and VRRPv3, multicast and unicast). IPv6 instances are
//! refused with [`IoError::Ipv6Unsupported`]. Interface up/down and address changes are
//! not monitored yet (the primary address is read once at startup).

pub mod netlink;
mod socket;

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use nix::errno::Errno;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::announce::{MacAddr, UnsolicitedNa, gratuitous_arp};
use crate::event::{Action, Event, OutgoingAdvert, State, TimerKind};
use crate::instance::{ConfigError, Instance, InstanceConfig, Stats, Transport};
use crate::packet::Family;

use netlink::{IFA_F_NODAD, Netlink, NetlinkError};
use socket::{PacketSocket, VrrpSocketV4};

/// Why an instance could not start (once running, I/O errors are logged and the
/// instance carries on: a lost advertisement is what VRRP is built to survive).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("IPv6 instances are not supported by the I/O layer yet")]
    Ipv6Unsupported,
    #[error("interface {interface}: {errno}")]
    NoInterface { interface: String, errno: Errno },
    #[error("interface {interface} has no link-layer address")]
    NoLinkAddress { interface: String },
    #[error("{what} on {interface}: {source}")]
    Socket {
        what: &'static str,
        interface: String,
        source: io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// How the driver runs one instance, beyond the protocol configuration.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    /// The `interface` of the `vrrp_instance`.
    pub interface: String,
    /// Prefix lengths of the virtual addresses (`virtual_ipaddress { 10.0.0.100/24 }`);
    /// an address not listed gets a host prefix (/32, /128), as in keepalived.
    pub vip_prefixes: Vec<(IpAddr, u8)>,
    /// Receives every state the instance enters (for status reporting and tests).
    pub state: Option<watch::Sender<State>>,
}

impl DriverOptions {
    pub fn new(interface: impl Into<String>) -> Self {
        DriverOptions {
            interface: interface.into(),
            vip_prefixes: Vec::new(),
            state: None,
        }
    }
}

/// Runs one VRRP instance on `interface` until `shutdown` becomes true (or its sender
/// is dropped); returns the instance's counters. Must be called in the network namespace
/// of the interface, inside a tokio runtime with I/O and time enabled.
pub async fn run_instance(
    config: InstanceConfig,
    interface: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<Stats, IoError> {
    run_instance_with(config, DriverOptions::new(interface), shutdown).await
}

/// [`run_instance`] with all options.
pub async fn run_instance_with(
    config: InstanceConfig,
    options: DriverOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Stats, IoError> {
    let mut driver = Driver::open(config, options)?;
    driver.handle(Event::InterfaceUp {
        primary: driver.primary,
    });
    driver.handle(Event::Startup);

    let stop = async move {
        // A dropped sender means nobody can stop us any more: stop now.
        let _ = shutdown.wait_for(|&stop| stop).await;
    };
    tokio::pin!(stop);
    let mut buf = vec![0; 4096];
    loop {
        let next_timer = driver.timers.iter().flatten().min().copied();
        tokio::select! {
            biased;
            () = &mut stop => break,
            received = driver.sock.recv(&mut buf) => match received {
                Ok(Some(rx)) => {
                    if crate::event::peek_vrid(&rx.payload) == Some(driver.instance.config().vrid) {
                        driver.handle(Event::AdvertReceived(rx));
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(
                    instance = %driver.instance.config().name, %error, "receiving advertisement"
                ),
            },
            () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                let now = Instant::now();
                for kind in TimerKind::ALL {
                    if driver.timers[kind.index()].is_some_and(|at| at <= now) {
                        driver.timers[kind.index()] = None;
                        driver.handle(Event::TimerExpired(kind));
                    }
                }
            }
        }
    }
    driver.handle(Event::Shutdown);
    Ok(driver.instance.stats().clone())
}

struct Driver {
    instance: Instance,
    interface: String,
    ifindex: u32,
    primary: Option<IpAddr>,
    mac: MacAddr,
    sock: VrrpSocketV4,
    packet: PacketSocket,
    netlink: Netlink,
    /// Advertised and excluded addresses with their prefix lengths.
    vips: Vec<(IpAddr, u8)>,
    timers: [Option<Instant>; TimerKind::ALL.len()],
    state_tx: Option<watch::Sender<State>>,
}

impl Driver {
    fn open(config: InstanceConfig, options: DriverOptions) -> Result<Self, IoError> {
        let instance = Instance::new(config)?;
        let config = instance.config();
        if config.family() == Family::Ipv6 {
            return Err(IoError::Ipv6Unsupported);
        }
        let interface = options.interface;
        let ifindex = nix::net::if_::if_nametoindex(interface.as_str()).map_err(|errno| {
            IoError::NoInterface {
                interface: interface.clone(),
                errno,
            }
        })?;
        let vips: Vec<(IpAddr, u8)> = config
            .vips
            .iter()
            .chain(&config.excluded_vips)
            .map(|addr| {
                let prefix = options
                    .vip_prefixes
                    .iter()
                    .find(|(a, _)| a == addr)
                    .map_or(if addr.is_ipv4() { 32 } else { 128 }, |(_, p)| *p);
                (*addr, prefix)
            })
            .collect();

        let mut netlink = Netlink::open()?;
        let present = netlink.addresses(ifindex)?;
        // Left behind by a previous run that did not shut down cleanly: a backup must not
        // hold them.
        for stale in present
            .iter()
            .filter(|a| vips.iter().any(|(v, _)| *v == a.addr))
        {
            tracing::warn!(
                instance = %config.name, interface, address = %stale.addr,
                "removing stale virtual address"
            );
            netlink.del_address(ifindex, stale.addr, stale.prefix_len)?;
        }
        let primary = present
            .iter()
            .filter(|a| a.addr.is_ipv4() && !a.is_secondary())
            .find(|a| !vips.iter().any(|(v, _)| *v == a.addr))
            .map(|a| a.addr);

        let link = nix::ifaddrs::getifaddrs()
            .map_err(|errno| IoError::NoInterface {
                interface: interface.clone(),
                errno,
            })?
            .filter(|a| a.interface_name == interface)
            .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
            .ok_or_else(|| IoError::NoLinkAddress {
                interface: interface.clone(),
            })?;
        let mac = link.addr().ok_or_else(|| IoError::NoLinkAddress {
            interface: interface.clone(),
        })?;
        let socket_error = |what| {
            let interface = interface.clone();
            move |source| IoError::Socket {
                what,
                interface,
                source,
            }
        };
        let packet = PacketSocket::open(link).map_err(socket_error("AF_PACKET socket"))?;
        let group = match &config.transport {
            Transport::Multicast {
                group: IpAddr::V4(g),
            } => Some(*g),
            _ => None,
        };
        let sock =
            VrrpSocketV4::open(&interface, ifindex, group).map_err(socket_error("VRRP socket"))?;
        tracing::info!(
            instance = %config.name, vrid = config.vrid, interface, ifindex,
            primary = ?primary, "VRRP instance opened"
        );
        Ok(Driver {
            instance,
            interface,
            ifindex,
            primary,
            mac,
            sock,
            packet,
            netlink,
            vips,
            timers: [None; TimerKind::ALL.len()],
            state_tx: options.state,
        })
    }

    fn handle(&mut self, event: Event) {
        let actions = self.instance.handle(event, Instant::now());
        for action in actions {
            self.execute(action);
        }
    }

    fn execute(&mut self, action: Action) {
        let name = self.instance.config().name.clone();
        match action {
            Action::SendAdvert(out) => self.send_advert(&out),
            Action::AddVips => {
                for &(addr, prefix) in &self.vips {
                    let flags = if addr.is_ipv6() { IFA_F_NODAD } else { 0 };
                    match self.netlink.add_address(self.ifindex, addr, prefix, flags) {
                        Ok(()) => tracing::debug!(instance = %name, %addr, prefix, "added"),
                        Err(error) => {
                            tracing::error!(instance = %name, %addr, %error, "adding VIP")
                        }
                    }
                }
            }
            Action::RemoveVips => {
                for &(addr, prefix) in &self.vips {
                    if let Err(error) = self.netlink.del_address(self.ifindex, addr, prefix) {
                        tracing::error!(instance = %name, %addr, %error, "removing VIP");
                    }
                }
            }
            Action::SendGratuitous { addresses, repeat } => {
                for _ in 0..repeat {
                    for addr in &addresses {
                        let result = match addr {
                            IpAddr::V4(a) => self.packet.send(&gratuitous_arp(self.mac, *a)),
                            IpAddr::V6(a) => self.packet.send(
                                &UnsolicitedNa {
                                    src_mac: self.mac,
                                    src_ip: *a,
                                    target: *a,
                                    router: false,
                                }
                                .frame(),
                            ),
                        };
                        if let Err(error) = result {
                            tracing::warn!(instance = %name, %addr, %error, "sending announcement");
                        }
                    }
                }
            }
            Action::ArmTimer { kind, at } => self.timers[kind.index()] = Some(at),
            Action::CancelTimer(kind) => self.timers[kind.index()] = None,
            Action::StateChanged { from, to, cause } => {
                tracing::info!(
                    instance = %name, interface = %self.interface, %from, %to, %cause,
                    "VRRP state changed"
                );
                if let Some(tx) = &self.state_tx {
                    tx.send_replace(to);
                }
            }
            Action::CountDrop(reason) => {
                if reason.is_misconfiguration() {
                    tracing::info!(instance = %name, %reason, "advertisement dropped");
                } else {
                    tracing::debug!(instance = %name, %reason, "advertisement dropped");
                }
            }
            Action::MasterReceivedLowerPriority { from, priority } => {
                tracing::debug!(instance = %name, %from, priority, "lower-priority advertisement");
            }
        }
    }

    fn send_advert(&self, out: &OutgoingAdvert) {
        let name = &self.instance.config().name;
        let IpAddr::V4(src) = out.src else {
            tracing::error!(instance = %name, src = %out.src, "IPv6 source on an IPv4 socket");
            return;
        };
        for &dst in &out.destinations {
            let bytes = match out.encode(dst) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::error!(instance = %name, %error, "encoding advertisement");
                    continue;
                }
            };
            let dst4: Ipv4Addr = match dst {
                IpAddr::V4(d) => d,
                IpAddr::V6(_) => continue,
            };
            if let Err(error) = self.sock.send(&bytes, src, dst4, out.ttl) {
                tracing::warn!(instance = %name, %dst, %error, "sending advertisement");
            }
        }
    }
}
