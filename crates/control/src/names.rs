//! Host and service names, which ipvsadm reads and prints unless `-n` is given.
//!
//! ipvsadm asks the C library (`gethostbyname`, `gethostbyaddr`, `getservbyname`,
//! `getservbyport`). keeplb answers from /etc/services and /etc/hosts only: there is no DNS
//! here, so a name only DNS knows is not resolved and an address without an /etc/hosts entry
//! prints numerically, which is what ipvsadm prints when its lookup fails.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::Protocol;

/// Name lookups used while parsing arguments and formatting listings.
pub trait Names {
    /// The host name of an address (`gethostbyaddr`).
    fn host_by_addr(&self, _addr: IpAddr) -> Option<String> {
        None
    }
    /// The IPv4 address of a host name (`gethostbyname`).
    fn addr_by_host(&self, _host: &str) -> Option<Ipv4Addr> {
        None
    }
    /// The service name of a port (`getservbyport`).
    fn service_by_port(&self, _port: u16, _protocol: Protocol) -> Option<String> {
        None
    }
    /// The port of a service name (`getservbyname`).
    fn port_by_service(&self, _name: &str, _protocol: Protocol) -> Option<u16> {
        None
    }
}

/// Resolves nothing: every name lookup fails, so output is numeric.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNames;

impl Names for NoNames {}

#[derive(Debug, Clone)]
struct ServiceLine {
    names: Vec<String>,
    port: u16,
    protocol: String,
}

#[derive(Debug, Clone)]
struct HostLine {
    addr: IpAddr,
    names: Vec<String>,
}

/// Names from the text of /etc/services and /etc/hosts; the first matching line wins,
/// as in the C library's files backend.
#[derive(Debug, Clone, Default)]
pub struct NameFiles {
    services: Vec<ServiceLine>,
    hosts: Vec<HostLine>,
}

fn without_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

impl NameFiles {
    /// Reads /etc/services and /etc/hosts; a missing file resolves nothing.
    pub fn from_system() -> NameFiles {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        NameFiles::parse(&read("/etc/services"), &read("/etc/hosts"))
    }

    /// Builds the tables from the files' text.
    pub fn parse(services: &str, hosts: &str) -> NameFiles {
        let services = services
            .lines()
            .filter_map(|line| {
                let mut words = without_comment(line).split_whitespace();
                let name = words.next()?;
                let (port, protocol) = words.next()?.split_once('/')?;
                let port = port.parse().ok()?;
                let names = std::iter::once(name)
                    .chain(words)
                    .map(str::to_owned)
                    .collect();
                Some(ServiceLine {
                    names,
                    port,
                    protocol: protocol.to_owned(),
                })
            })
            .collect();
        let hosts = hosts
            .lines()
            .filter_map(|line| {
                let mut words = without_comment(line).split_whitespace();
                let addr = words.next()?.parse().ok()?;
                let names: Vec<String> = words.map(str::to_owned).collect();
                (!names.is_empty()).then_some(HostLine { addr, names })
            })
            .collect();
        NameFiles { services, hosts }
    }
}

impl Names for NameFiles {
    fn host_by_addr(&self, addr: IpAddr) -> Option<String> {
        self.hosts
            .iter()
            .find(|h| h.addr == addr)
            .and_then(|h| h.names.first().cloned())
    }

    fn addr_by_host(&self, host: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|h| match h.addr {
            IpAddr::V4(v4) if h.names.iter().any(|n| n == host) => Some(v4),
            _ => None,
        })
    }

    fn service_by_port(&self, port: u16, protocol: Protocol) -> Option<String> {
        self.services
            .iter()
            .find(|s| s.port == port && s.protocol == protocol.services_name())
            .and_then(|s| s.names.first().cloned())
    }

    fn port_by_service(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.services
            .iter()
            .find(|s| s.protocol == protocol.services_name() && s.names.iter().any(|n| n == name))
            .map(|s| s.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICES: &str = "# comment\nhttp\t\t80/tcp\t\twww\t\t# WorldWideWeb HTTP\n\
                            domain\t\t53/tcp\ndomain\t\t53/udp\nmdns\t\t5353/udp\n";
    const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.0.0.5 web1 web\n";

    #[test]
    fn services_resolve_by_port_and_name_per_protocol() {
        let names = NameFiles::parse(SERVICES, "");
        assert_eq!(
            names.service_by_port(80, Protocol::Tcp).as_deref(),
            Some("http")
        );
        assert_eq!(names.service_by_port(80, Protocol::Udp), None);
        assert_eq!(names.port_by_service("www", Protocol::Tcp), Some(80));
        assert_eq!(names.port_by_service("mdns", Protocol::Udp), Some(5353));
        assert_eq!(names.port_by_service("mdns", Protocol::Tcp), None);
    }

    #[test]
    fn hosts_resolve_first_name_and_ipv4_only_forward() {
        let names = NameFiles::parse("", HOSTS);
        assert_eq!(names.addr_by_host("web"), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(names.addr_by_host("localhost"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(names.addr_by_host("ip6-localhost"), None);
        assert_eq!(
            names.host_by_addr("10.0.0.5".parse().unwrap()).as_deref(),
            Some("web1")
        );
        assert_eq!(names.host_by_addr("10.0.0.6".parse().unwrap()), None);
    }
}
