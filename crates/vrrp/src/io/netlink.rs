//! The few rtnetlink requests the VRRP driver needs: list, add and delete interface
//! addresses. Hand-written over a plain `NETLINK_ROUTE` socket (the messages are a fixed
//! 16-byte header, an 8-byte `ifaddrmsg` and a few attributes), so no netlink crate
//! family enters the build and nothing forks `ip`.
//!
//! Requests are synchronous: each one is a local syscall pair answered by the kernel at
//! once, and a receive timeout guards against a kernel that never answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const NLMSG_HDR_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;
/// Address flag: a secondary IPv4 address (another one of its subnet came first).
pub const IFA_F_SECONDARY: u32 = 0x01;
/// Address flag: skip duplicate address detection (IPv6 VIPs must be usable at once).
pub const IFA_F_NODAD: u32 = 0x02;
/// Address flag: no prefix route for the address's subnet (`noprefixroute`).
pub const IFA_F_NOPREFIXROUTE: u32 = 0x200;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// A netlink failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {op}: {errno}")]
    Sys { op: &'static str, errno: Errno },
    #[error("netlink {op}: the kernel answered {errno}")]
    Kernel { op: &'static str, errno: Errno },
    #[error("netlink {op}: malformed answer ({what})")]
    Malformed {
        op: &'static str,
        what: &'static str,
    },
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

/// A `NETLINK_ROUTE` socket in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> Result<Self, NetlinkError> {
        let sys = |op| move |errno| NetlinkError::Sys { op, errno };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(sys("socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(sys("bind"))?;
        let timeout = TimeVal::new(
            i64::try_from(Duration::from_secs(2).as_secs()).unwrap_or(2),
            0,
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(sys("SO_RCVTIMEO"))?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Every address on interface `ifindex` (both families).
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<InterfaceAddr>, NetlinkError> {
        const OP: &str = "dump addresses";
        let body = ifaddrmsg(0, 0, 0, 0);
        let seq = self.send(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &body, OP)?;
        let mut out = Vec::new();
        loop {
            let buf = self.recv(OP)?;
            let mut done = false;
            for msg in messages(&buf, OP)? {
                if msg.seq != seq {
                    continue;
                }
                match msg.kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => check_ack(msg.body, OP)?,
                    RTM_NEWADDR => {
                        if let Some(a) = parse_ifaddr(msg.body, ifindex) {
                            out.push(a);
                        }
                    }
                    _ => {}
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Adds `addr/prefix_len` to `ifindex` (replacing it if present), with `flags`
    /// (e.g. [`IFA_F_NODAD`]).
    pub fn add_address(
        &mut self,
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
    }

    /// Adds `addr/prefix_len` to `ifindex` (replacing it if present) with a scope,
    /// broadcast address, label and flags, as `ip addr add … brd … scope … label …`.
    pub fn add_address_with(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
        attrs: &AddrAttrs,
    ) -> Result<(), NetlinkError> {
        let body = addr_request_with(ifindex, addr, prefix_len, attrs);
        self.transact(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_REPLACE,
            &body,
            "add address",
        )
    }

    /// Deletes `addr/prefix_len` from `ifindex`; an address already gone is not an error.
    pub fn del_address(
        &mut self,
        ifindex: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let body = addr_request(ifindex, addr, prefix_len, 0);
        match self.transact(RTM_DELADDR, 0, &body, "delete address") {
            Err(NetlinkError::Kernel {
                errno: Errno::EADDRNOTAVAIL | Errno::ENOENT | Errno::ENODEV,
                ..
            }) => Ok(()),
            other => other,
        }
    }

    fn transact(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        op: &'static str,
    ) -> Result<(), NetlinkError> {
        let seq = self.send(kind, flags | NLM_F_REQUEST | NLM_F_ACK, body, op)?;
        loop {
            let buf = self.recv(op)?;
            for msg in messages(&buf, op)? {
                if msg.seq == seq && msg.kind == NLMSG_ERROR {
                    return check_ack(msg.body, op);
                }
            }
        }
    }

    fn send(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        op: &'static str,
    ) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR_LEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        sendto(
            self.fd.as_raw_fd(),
            &msg,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|errno| NetlinkError::Sys { op, errno })?;
        Ok(self.seq)
    }

    fn recv(&mut self, op: &'static str) -> Result<Vec<u8>, NetlinkError> {
        let mut buf = vec![0; 32 * 1024];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                other => break other.map_err(|errno| NetlinkError::Sys { op, errno })?,
            }
        };
        buf.truncate(n);
        Ok(buf)
    }
}

struct Message<'a> {
    kind: u16,
    seq: u32,
    body: &'a [u8],
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn messages<'a>(mut buf: &'a [u8], op: &'static str) -> Result<Vec<Message<'a>>, NetlinkError> {
    let malformed = |what| NetlinkError::Malformed { op, what };
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32_at(buf, 0).ok_or(malformed("header"))? as usize;
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(malformed("message length"));
        }
        out.push(Message {
            kind: u16_at(buf, 4).ok_or(malformed("header"))?,
            seq: u32_at(buf, 8).ok_or(malformed("header"))?,
            body: &buf[NLMSG_HDR_LEN..len],
        });
        buf = buf.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

fn check_ack(body: &[u8], op: &'static str) -> Result<(), NetlinkError> {
    let code = u32_at(body, 0).ok_or(NetlinkError::Malformed {
        op,
        what: "error message",
    })? as i32;
    if code == 0 {
        Ok(())
    } else {
        Err(NetlinkError::Kernel {
            op,
            errno: Errno::from_raw(-code),
        })
    }
}

fn ifaddrmsg(family: u8, prefix_len: u8, flags: u8, ifindex: u32) -> Vec<u8> {
    let mut b = vec![family, prefix_len, flags, 0];
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

fn addr_request(ifindex: u32, addr: IpAddr, prefix_len: u8, flags: u32) -> Vec<u8> {
    let attrs = AddrAttrs {
        flags,
        ..AddrAttrs::default()
    };
    addr_request_with(ifindex, addr, prefix_len, &attrs)
}

fn addr_request_with(ifindex: u32, addr: IpAddr, prefix_len: u8, attrs: &AddrAttrs) -> Vec<u8> {
    let (family, octets): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    };
    let flags = attrs.flags;
    // The legacy 8-bit flags field holds the low bits; IFA_FLAGS carries all of them.
    let mut b = ifaddrmsg(family, prefix_len, (flags & 0xff) as u8, ifindex);
    b[3] = attrs.scope;
    push_attr(&mut b, IFA_LOCAL, &octets);
    push_attr(&mut b, IFA_ADDRESS, &octets);
    if let (Some(brd), IpAddr::V4(_)) = (attrs.broadcast, addr) {
        push_attr(&mut b, IFA_BROADCAST, &brd.octets());
    }
    if let (Some(label), IpAddr::V4(_)) = (&attrs.label, addr) {
        let mut data = label.as_bytes().to_vec();
        data.push(0);
        push_attr(&mut b, IFA_LABEL, &data);
    }
    if flags != 0 {
        push_attr(&mut b, IFA_FLAGS, &flags.to_ne_bytes());
    }
    b
}

fn parse_ip(family: u8, data: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => {
            let o: [u8; 4] = data.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        AF_INET6 => {
            let o: [u8; 16] = data.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

fn parse_ifaddr(body: &[u8], want_ifindex: u32) -> Option<InterfaceAddr> {
    let family = *body.first()?;
    let prefix_len = *body.get(1)?;
    let mut flags = u32::from(*body.get(2)?);
    if u32_at(body, 4)? != want_ifindex {
        return None;
    }
    let (mut local, mut address) = (None, None);
    let mut attrs = body.get(IFADDRMSG_LEN..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)?;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            IFA_LOCAL => local = parse_ip(family, data),
            IFA_ADDRESS => address = parse_ip(family, data),
            IFA_FLAGS => flags = u32_at(data, 0).unwrap_or(flags),
            _ => {}
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    // IPv4: IFA_LOCAL is the address (IFA_ADDRESS is the peer on point-to-point links).
    Some(InterfaceAddr {
        addr: local.or(address)?,
        prefix_len,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_dump_parser() {
        let addr = IpAddr::V6("fd00::64".parse().unwrap_or(Ipv6Addr::LOCALHOST));
        let mut body = addr_request(7, addr, 64, IFA_F_NODAD);
        assert_eq!(body.len(), 8 + 20 + 20 + 8);
        let parsed = parse_ifaddr(&body, 7);
        assert_eq!(
            parsed,
            Some(InterfaceAddr {
                addr,
                prefix_len: 64,
                flags: IFA_F_NODAD
            })
        );
        assert_eq!(parse_ifaddr(&body, 8), None);
        body.truncate(10);
        assert_eq!(parse_ifaddr(&body, 7), None);
    }

    #[test]
    fn request_carries_scope_broadcast_label_and_flags() {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
        let attrs = AddrAttrs {
            flags: IFA_F_NOPREFIXROUTE,
            scope: 253,
            broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
            label: Some("eth0:vip".to_owned()),
        };
        let body = addr_request_with(3, addr, 24, &attrs);
        assert_eq!(&body[..4], &[AF_INET, 24, 0, 253]);
        // Header, LOCAL, ADDRESS, BROADCAST (8 each), LABEL (4 + 9 -> 16), FLAGS (8).
        assert_eq!(body.len(), 8 + 8 + 8 + 8 + 16 + 8);
        assert_eq!(u16_at(&body, 24), Some(8));
        assert_eq!(u16_at(&body, 26), Some(IFA_BROADCAST));
        assert_eq!(&body[28..32], &[10, 0, 0, 255]);
        assert_eq!(u16_at(&body, 32), Some(13));
        assert_eq!(u16_at(&body, 34), Some(IFA_LABEL));
        assert_eq!(&body[36..45], b"eth0:vip\0");
        let parsed = parse_ifaddr(&body, 3).map(|a| (a.addr, a.flags));
        assert_eq!(parsed, Some((addr, IFA_F_NOPREFIXROUTE)));
        // IPv6 takes neither broadcast nor label.
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(addr_request_with(3, v6, 128, &attrs).len(), 8 + 20 + 20 + 8);
    }
}
