//! The few rtnetlink requests the VRRP driver needs: list, add and delete interface
//! addresses, over the `rtnetlink` crate. Its family (`netlink-packet-route`,
//! `netlink-packet-core`, `netlink-proto`) breaks its API often, so it is used only here,
//! through `rtnetlink`'s re-exports, behind this small interface.
//!
//! The connection task runs on the runtime of the thread that opened it, and its socket
//! lives in that thread's network namespace. Every request is bounded by
//! [`REQUEST_TIMEOUT`], guarding against a kernel that never answers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use nix::errno::Errno;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Address flag: a secondary IPv4 address (another one of its subnet came first).
pub const IFA_F_SECONDARY: u32 = 0x01;
/// Address flag: skip duplicate address detection (IPv6 VIPs must be usable at once).
pub const IFA_F_NODAD: u32 = 0x02;
/// Address flag: no prefix route for the address's subnet (`noprefixroute`).
pub const IFA_F_NOPREFIXROUTE: u32 = 0x200;

/// How long the kernel may take to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("netlink {op}: the kernel answered {errno}")]
    Kernel { op: &'static str, errno: Errno },
    #[error("netlink {op}: {detail}")]
    Failed { op: &'static str, detail: String },
    #[error("netlink {op}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout { op: &'static str },
}

impl NetlinkError {
    fn from_rtnetlink(op: &'static str, error: rtnetlink::Error) -> Self {
        match error {
            rtnetlink::Error::NetlinkError(message) => match message.code {
                Some(code) => NetlinkError::Kernel {
                    op,
                    errno: Errno::from_raw(-code.get()),
                },
                None => NetlinkError::Failed {
                    op,
                    detail: "unexpected acknowledgement".to_owned(),
                },
            },
            other => NetlinkError::Failed {
                op,
                detail: other.to_string(),
            },
        }
    }
}

/// One address of an interface, from an `RTM_GETADDR` dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// `IFA_F_*` flags (the 32-bit `IFA_FLAGS` attribute when present).
    pub flags: u32,
}

impl InterfaceAddr {
    pub fn is_secondary(&self) -> bool {
        self.flags & IFA_F_SECONDARY != 0
    }
}

/// What an `RTM_NEWADDR` request sets besides the address and its prefix length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrAttrs {
    /// `IFA_F_*` flags (e.g. [`IFA_F_NODAD`], [`IFA_F_NOPREFIXROUTE`]).
    pub flags: u32,
    /// `ifa_scope` (`RT_SCOPE_*`: 0 global, 200 site, 253 link, 254 host, 255 nowhere).
    pub scope: u8,
    /// `IFA_BROADCAST` (IPv4 only).
    pub broadcast: Option<Ipv4Addr>,
    /// `IFA_LABEL` (IPv4 only).
    pub label: Option<String>,
}

/// An rtnetlink connection in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens the socket and spawns its connection task (needs a tokio runtime).
    pub fn open() -> Result<Self, NetlinkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Io {
                op: "socket",
                source,
            })?;
        let connection = tokio::spawn(connection);
        Ok(Netlink { handle, connection })
    }

    /// Every address on interface `ifindex` (both families).
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<InterfaceAddr>, NetlinkError> {
        const OP: &str = "dump addresses";
        let dump = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_filter_map(|message| async move { Ok(interface_addr(&message)) })
            .try_collect::<Vec<_>>();
        bounded(OP, dump).await
    }

    /// Adds `addr/prefix_len` to `ifindex` (replacing it if present), with `flags`
    /// (e.g. [`IFA_F_NODAD`]).
    pub async fn add_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        flags: u32,
    ) -> Result<(), NetlinkError> {
        let attrs = AddrAttrs {
            flags,
            ..AddrAttrs::default()
        };
        self.add_address_with(ifindex, addr, prefix_len, &attrs)
            .await
    }

    /// Adds `addr/prefix_len` to `ifindex` (replacing it if present) with a scope,
    /// broadcast address, label and flags, as `ip addr add … brd … scope … label …`.
    pub async fn add_address_with(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        attrs: &AddrAttrs,
    ) -> Result<(), NetlinkError> {
        let mut request = self
            .handle
            .address()
            .add(ifindex, addr, prefix_len)
            .replace();
        set_attrs(request.message_mut(), addr, attrs);
        bounded("add address", request.execute()).await
    }

    /// Deletes `addr/prefix_len` from `ifindex`; an address already gone is not an error.
    pub async fn del_address(
        &self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let request = self
            .handle
            .address()
            .del(address_message(ifindex, addr, prefix_len));
        match bounded("delete address", request.execute()).await {
            Err(NetlinkError::Kernel {
                errno: Errno::EADDRNOTAVAIL | Errno::ENOENT | Errno::ENODEV,
                ..
            }) => Ok(()),
            other => other,
        }
    }
}

/// An address removed from an interface (`RTM_DELADDR`), as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemovedAddr {
    pub ifindex: u32,
    pub addr: InterfaceAddr,
}

/// A netlink socket subscribed to the address changes of its network namespace (both
/// families), as keepalived's netlink reflector: the driver learns at once that one of
/// its addresses was removed behind its back.
#[derive(Debug)]
pub struct AddressWatch {
    removed: mpsc::UnboundedReceiver<RemovedAddr>,
    connection: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl Drop for AddressWatch {
    fn drop(&mut self) {
        self.connection.abort();
        self.reader.abort();
    }
}

impl AddressWatch {
    /// Opens the socket, joins the IPv4 and IPv6 address groups and spawns its
    /// connection task and the task that picks the removals out of its messages (needs a
    /// tokio runtime).
    pub fn open() -> Result<Self, NetlinkError> {
        let groups = [MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr];
        let (connection, _, mut messages) =
            rtnetlink::new_multicast_connection(&groups).map_err(|source| NetlinkError::Io {
                op: "address subscription",
                source,
            })?;
        let (tx, removed) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some((message, _)) = messages.next().await {
                if let Some(removal) = removed_addr(message)
                    && tx.send(removal).is_err()
                {
                    return;
                }
            }
        });
        Ok(AddressWatch {
            removed,
            connection: tokio::spawn(connection),
            reader,
        })
    }

    /// The next address removal; `None` once the connection is gone.
    pub async fn next_removed(&mut self) -> Option<RemovedAddr> {
        self.removed.recv().await
    }
}

/// The removal an `RTM_DELADDR` notification reports.
fn removed_addr(message: NetlinkMessage<RouteNetlinkMessage>) -> Option<RemovedAddr> {
    match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(removed)) => {
            Some(RemovedAddr {
                ifindex: removed.header.index,
                addr: interface_addr(&removed)?,
            })
        }
        _ => None,
    }
}

/// Runs one request with [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    op: &'static str,
    request: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, NetlinkError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| NetlinkError::from_rtnetlink(op, e)),
        Err(_) => Err(NetlinkError::Timeout { op }),
    }
}

/// The message naming `addr/prefix_len` on `ifindex` (IFA_LOCAL and IFA_ADDRESS), with
/// nothing else.
fn address_message(ifindex: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.prefix_len = prefix_len;
    message.header.index = ifindex;
    message.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    message
}

/// Makes an `RTM_NEWADDR` message say exactly `attrs`: rtnetlink's builder adds a
/// derived broadcast address on its own, which keepalived does not (only `brd`).
fn set_attrs(message: &mut AddressMessage, addr: IpAddr, attrs: &AddrAttrs) {
    let ifindex = message.header.index;
    let prefix_len = message.header.prefix_len;
    *message = address_message(ifindex, addr, prefix_len);
    message.header.scope = AddressScope::from(attrs.scope);
    // The legacy 8-bit flags field holds the low bits; IFA_FLAGS carries all of them.
    message.header.flags = AddressHeaderFlags::from_bits_retain((attrs.flags & 0xff) as u8);
    if addr.is_ipv4() {
        if let Some(brd) = attrs.broadcast {
            message.attributes.push(AddressAttribute::Broadcast(brd));
        }
        if let Some(label) = &attrs.label {
            message
                .attributes
                .push(AddressAttribute::Label(label.clone()));
        }
    }
    if attrs.flags != 0 {
        let flags = AddressFlags::from_bits_retain(attrs.flags);
        message.attributes.push(AddressAttribute::Flags(flags));
    }
}

/// An address of a dump: IFA_LOCAL is the address (IFA_ADDRESS is the peer on
/// point-to-point IPv4 links), IFA_FLAGS the full flags when present.
fn interface_addr(message: &AddressMessage) -> Option<InterfaceAddr> {
    let mut flags = u32::from(message.header.flags.bits());
    let (mut local, mut address) = (None, None);
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    Some(InterfaceAddr {
        addr: local.or(address)?,
        prefix_len: message.header.prefix_len,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_exactly_the_configured_attributes() {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
        let mut message = address_message(7, v4, 24);
        set_attrs(
            &mut message,
            v4,
            &AddrAttrs {
                flags: IFA_F_NOPREFIXROUTE | IFA_F_NODAD,
                scope: 253,
                broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
                label: Some("eth0:vip".to_owned()),
            },
        );
        assert_eq!(message.header.index, 7);
        assert_eq!(message.header.prefix_len, 24);
        assert_eq!(message.header.scope, AddressScope::Link);
        assert_eq!(message.header.flags.bits(), 0x02);
        assert_eq!(
            message.attributes,
            [
                AddressAttribute::Local(v4),
                AddressAttribute::Address(v4),
                AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 0, 255)),
                AddressAttribute::Label("eth0:vip".to_owned()),
                AddressAttribute::Flags(AddressFlags::from_bits_retain(0x202)),
            ]
        );
        // No broadcast, label or flags unless asked; never a label on IPv6.
        let v6: IpAddr = "fe80::1".parse().unwrap_or(v4);
        let mut message = address_message(7, v6, 64);
        set_attrs(
            &mut message,
            v6,
            &AddrAttrs {
                label: Some("x".to_owned()),
                ..AddrAttrs::default()
            },
        );
        assert_eq!(
            message.attributes,
            [AddressAttribute::Local(v6), AddressAttribute::Address(v6)]
        );
        assert_eq!(interface_addr(&message).map(|a| a.addr), Some(v6));
    }
}
