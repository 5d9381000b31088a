//! How keepalived names services in its logs: `[10.0.0.1]:tcp:80`, `FWM 7`, `[group]:0`.

use std::net::{IpAddr, SocketAddr};

use keeplb_config::model::{Protocol, VirtualServer, VirtualServerKey};

/// keepalived's protocol word in a service name.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// `[ADDR]:proto:PORT`, keepalived's `inet_sockaddrtotrio`.
pub fn service_trio(addr: SocketAddr, protocol: Protocol) -> String {
    format!(
        "[{}]:{}:{}",
        addr.ip(),
        protocol_name(protocol),
        addr.port()
    )
}

/// keepalived's `FMT_VS`: `[ADDR]:tcp:PORT`, `FWM N` or `[GROUP]:0`.
pub fn virtual_server_name(vs: &VirtualServer) -> String {
    match &vs.key {
        VirtualServerKey::Address { ip, port } => {
            service_trio(SocketAddr::new(*ip, *port), vs.protocol)
        }
        VirtualServerKey::Fwmark { fwmark } => format!("FWM {fwmark}"),
        // keepalived prints the (unset) port of a group's address: 0.
        VirtualServerKey::Group { group } => format!("[{group}]:0"),
    }
}

/// keepalived's `FMT_RS`: the real server's trio with its virtual server's protocol.
pub fn real_server_name(ip: IpAddr, port: u16, protocol: Protocol) -> String {
    service_trio(SocketAddr::new(ip, port), protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trio_brackets_both_families() {
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(service_trio(v4, Protocol::Tcp), "[10.0.0.1]:tcp:80");
        assert_eq!(service_trio(v6, Protocol::Udp), "[2001:db8::1]:udp:443");
    }
}
