//! ipvsadm's listings, byte for byte: `-L`/`-Ln` and its `--stats`, `--rate`, `--exact`,
//! `--thresholds`, `--persistent-conn`, `--tun-info` and `--nosort` variants, one service
//! (`-L -t …`), connections (`-Lc`), `--timeout`, `--daemon` and the rules of `-S`.
//!
//! Everything here is a pure function of a [`Snapshot`]; ipvsadm's quirks are kept where a
//! script could notice them (sort order, 33/28-column truncation of names, real-server
//! counters shown modulo 2^32), each explained where it happens.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::command::ListFormat;
use crate::error::KernelError;
use crate::model::{
    Family, ForwardMethod, Netmask, Protocol, ServiceKey, SyncDaemon, Timeouts, TunnelType,
};
use crate::names::Names;
use crate::snapshot::{ConnEntry, DestEntry, ServiceEntry, Snapshot};

/// The title of the listing ipvsadm's header line announces.
fn header(snapshot: &Snapshot) -> String {
    let [major, minor, patch] = snapshot.version;
    format!(
        "IP Virtual Server version {major}.{minor}.{patch} (size={})\n",
        snapshot.conn_table_size
    )
}

/// `print_largenum`: 9 columns, scaled to K/M/G/T from 100 million on unless `--exact`.
fn large_number(out: &mut String, value: u64, exact: bool) {
    if exact {
        let digits = value.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        let _ = write!(out, "{digits:>width$}");
        return;
    }
    let _ = match value {
        0..100_000_000 => write!(out, "{value:>9}"),
        100_000_000..1_000_000_000 => write!(out, "{:>8}K", value / 1_000),
        1_000_000_000..100_000_000_000 => write!(out, "{:>8}M", value / 1_000_000),
        100_000_000_000..100_000_000_000_000 => write!(out, "{:>8}G", value / 1_000_000_000),
        _ => write!(out, "{:>8}T", value / 1_000_000_000_000),
    };
}

/// ipvsadm reads a real server's 64-bit counters with 32-bit getters (libipvs parses the
/// destination's STATS64 attribute with `ipvs_parse_stats`), so it shows all but the byte
/// counters modulo 2^32.
fn as_ipvsadm_reads_it(value: u64) -> u64 {
    value & u64::from(u32::MAX)
}

/// `addrport_to_anyname`: `addr:port`, IPv6 in brackets, names unless numeric.
fn address_and_port(
    addr: IpAddr,
    port: u16,
    protocol: Option<Protocol>,
    numeric: bool,
    names: &dyn Names,
) -> String {
    let host = if numeric {
        None
    } else {
        names.host_by_addr(addr)
    };
    let host = host.unwrap_or_else(|| addr.to_string());
    let service = if numeric {
        None
    } else {
        protocol.and_then(|p| names.service_by_port(port, p))
    };
    let service = service.unwrap_or_else(|| port.to_string());
    match addr {
        IpAddr::V4(_) => format!("{host}:{service}"),
        IpAddr::V6(_) => format!("[{host}]:{service}"),
    }
}

/// C's `buf[n] = '\0'`.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[derive(Debug, Clone, Copy)]
struct Style {
    list: ListFormat,
    /// `-S`: rules instead of a table.
    rules: bool,
}

/// The address as libipvs compares it: four 32-bit words in host order (IPv4 in the first).
fn words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(v4) => [u32::from(v4), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            std::array::from_fn(|i| {
                u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    }
}

/// libipvs subtracts unsigned 32-bit values into an int, so far-apart addresses compare
/// the wrong way round (200.0.0.1 sorts before 10.0.0.1); listings keep that order.
fn c_difference(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn address_difference(first_is_v6: bool, a: IpAddr, b: IpAddr) -> i32 {
    let (a, b) = (words(a), words(b));
    let count = if first_is_v6 { 4 } else { 1 };
    a.iter()
        .zip(&b)
        .take(count)
        .map(|(x, y)| c_difference(*x, *y))
        .find(|r| *r != 0)
        .unwrap_or(0)
}

/// `ipvs_cmp_services`.
fn compare_services(a: &ServiceEntry, b: &ServiceEntry) -> i32 {
    struct Fields {
        fwmark: u32,
        family: i32,
        protocol: i32,
        addr: IpAddr,
        port: i32,
    }
    let fields = |s: &ServiceEntry| match s.config.key {
        ServiceKey::Fwmark { mark, family } => Fields {
            fwmark: mark,
            family: i32::from(family.number()),
            protocol: 0,
            addr: match family {
                Family::Ipv4 => IpAddr::from([0u8; 4]),
                Family::Ipv6 => IpAddr::from([0u8; 16]),
            },
            port: 0,
        },
        ServiceKey::Addr {
            protocol,
            address,
            port,
        } => Fields {
            fwmark: 0,
            family: i32::from(Family::of(address).number()),
            protocol: i32::from(protocol.number()),
            addr: address,
            port: i32::from(port),
        },
    };
    let (a, b) = (fields(a), fields(b));
    [
        c_difference(a.fwmark, b.fwmark),
        a.family - b.family,
        a.protocol - b.protocol,
        address_difference(a.addr.is_ipv6(), a.addr, b.addr),
        a.port - b.port,
    ]
    .into_iter()
    .find(|r| *r != 0)
    .unwrap_or(0)
}

/// `ipvs_cmp_dests`.
fn compare_dests(a: &DestEntry, b: &DestEntry) -> i32 {
    let (a, b) = (&a.config, &b.config);
    match address_difference(a.address.is_ipv6(), a.address, b.address) {
        0 => i32::from(a.port) - i32::from(b.port),
        r => r,
    }
}

/// glibc's `qsort` (a top-down merge sort, left half first, ties from the left), so that
/// ipvsadm's inconsistent comparisons give ipvsadm's order.
fn c_qsort<T: Clone>(items: &mut [T], compare: &dyn Fn(&T, &T) -> i32) {
    if items.len() <= 1 {
        return;
    }
    let middle = items.len() / 2;
    c_qsort(&mut items[..middle], compare);
    c_qsort(&mut items[middle..], compare);
    let (left, right) = items.split_at(middle);
    let mut merged = Vec::with_capacity(items.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if compare(&left[i], &right[j]) <= 0 {
            merged.push(left[i].clone());
            i += 1;
        } else {
            merged.push(right[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    items.clone_from_slice(&merged);
}

fn print_title(out: &mut String, style: Style) {
    let f = style.list;
    let local = "Prot LocalAddress:Port";
    if f.stats {
        let _ = writeln!(
            out,
            "{local:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if f.rate {
        let _ = writeln!(
            out,
            "{local:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if f.thresholds {
        let _ = writeln!(
            out,
            "{local:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if f.persistent_conn {
        let _ = writeln!(
            out,
            "{local:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else if f.tun_info {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
             Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else if !style.rules {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
             Forward Weight ActiveConn InActConn\n",
        );
    }
}

/// The service's name column (`svc_name`).
fn service_name(service: &ServiceEntry, style: Style, names: &dyn Names) -> String {
    match service.config.key {
        // ipvsadm prints the mark with %d
        ServiceKey::Fwmark { mark, family } => {
            let mark = mark as i32;
            match (style.rules, family) {
                (true, Family::Ipv4) => format!("-f {mark}"),
                (true, Family::Ipv6) => format!("-f {mark} -6"),
                (false, Family::Ipv4) => format!("FWM  {mark}"),
                (false, Family::Ipv6) => format!("FWM  {mark} IPv6"),
            }
        }
        ServiceKey::Addr {
            protocol,
            address,
            port,
        } => {
            let numeric = style.list.numeric;
            let vname = address_and_port(address, port, Some(protocol), numeric, names);
            if style.rules {
                format!("{} {vname}", protocol.option())
            } else {
                let name = format!("{:<4} {vname}", protocol.listing_name());
                if address.is_ipv6() {
                    name
                } else {
                    cut(name, 33)
                }
            }
        }
    }
}

fn netmask_suffix(out: &mut String, netmask: Netmask, family: Family, label: &str) {
    match (family, netmask) {
        (Family::Ipv4, Netmask::V4(mask)) if mask != std::net::Ipv4Addr::BROADCAST => {
            let _ = write!(out, " {label} {mask}");
        }
        (Family::Ipv6, Netmask::Prefix(prefix)) if prefix != 128 => {
            let _ = write!(out, " {label} {prefix}");
        }
        _ => {}
    }
}

fn tunnel_info(dest: &DestEntry) -> Option<String> {
    let config = &dest.config;
    if config.forward != ForwardMethod::Tunnel {
        return None;
    }
    let tunnel = config.tunnel;
    let info = match tunnel.kind {
        TunnelType::Ipip => "ipip".to_owned(),
        TunnelType::Gue => format!("gue:{}:{}", tunnel.port, tunnel.checksum.short()),
        TunnelType::Gre => format!("gre:{}", tunnel.checksum.short()),
    };
    Some(cut(info, 15))
}

fn print_dest(
    out: &mut String,
    svc_name: &str,
    protocol: Option<Protocol>,
    dest: &DestEntry,
    style: Style,
    names: &dyn Names,
) {
    let f = style.list;
    let c = &dest.config;
    let dname = address_and_port(c.address, c.port, protocol, f.numeric, names);
    let dname = if !style.rules && !c.address.is_ipv6() {
        cut(dname, 28)
    } else {
        dname
    };
    // ipvsadm prints the weight with %d
    let weight = c.weight as i32;
    let s = &dest.stats;
    let truncated = as_ipvsadm_reads_it;
    if style.rules {
        let _ = write!(
            out,
            "-a {svc_name} -r {dname} {} -w {weight}",
            c.forward.option()
        );
        if c.forward == ForwardMethod::Tunnel {
            let t = c.tunnel;
            let _ = match t.kind {
                TunnelType::Gre => write!(out, " --tun-type gre {}", t.checksum.option()),
                TunnelType::Gue => {
                    write!(
                        out,
                        " --tun-type gue --tun-port {} {}",
                        t.port,
                        t.checksum.option()
                    )
                }
                TunnelType::Ipip => write!(out, " --tun-type ipip"),
            };
        }
        out.push('\n');
    } else if f.stats {
        let _ = write!(out, "  -> {dname:<28}");
        for value in [
            truncated(s.conns),
            truncated(s.in_pkts),
            truncated(s.out_pkts),
            s.in_bytes,
            s.out_bytes,
        ] {
            large_number(out, value, f.exact);
        }
        out.push('\n');
    } else if f.rate {
        let _ = write!(
            out,
            "  -> {dname:<28} {:>8} {:>8} {:>8}",
            truncated(s.cps),
            truncated(s.in_pps),
            truncated(s.out_pps)
        );
        large_number(out, truncated(s.in_bps), f.exact);
        large_number(out, truncated(s.out_bps), f.exact);
        out.push('\n');
    } else if f.thresholds {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
            c.upper_threshold, c.lower_threshold, dest.active_conns, dest.inactive_conns
        );
    } else if f.persistent_conn {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
            c.weight, dest.persistent_conns, dest.active_conns, dest.inactive_conns
        );
    } else if f.tun_info {
        let info = tunnel_info(dest).unwrap_or_else(|| "n/a".to_owned());
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<7} {info:<13} {weight:<6} {:<10} {:<10}",
            c.forward.listing_name(),
            dest.active_conns,
            dest.inactive_conns
        );
    } else {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<7} {weight:<6} {:<10} {:<10}",
            c.forward.listing_name(),
            dest.active_conns,
            dest.inactive_conns
        );
    }
}

/// `print_service_entry`.
fn print_service(out: &mut String, service: &ServiceEntry, style: Style, names: &dyn Names) {
    let f = style.list;
    let config = &service.config;
    let family = config.key.family();
    let svc_name = service_name(service, style, names);
    let s = &service.stats;
    if style.rules {
        let _ = write!(out, "-A {svc_name} -s {}", config.scheduler);
        if let Some(timeout) = config.persistent {
            let _ = write!(out, " -p {timeout}");
            netmask_suffix(out, config.netmask, family, "-M");
        }
        if let Some(pe) = &config.persistence_engine {
            let _ = write!(out, " --pe {pe}");
        }
        if config.one_packet {
            out.push_str(" -o");
        }
        if config.sched_flags.any() {
            let _ = write!(out, " -b {}", config.sched_flags.names(&config.scheduler));
        }
    } else if f.stats || f.rate {
        let _ = write!(out, "{svc_name:<33}");
        let values = if f.stats {
            [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes]
        } else {
            [s.cps, s.in_pps, s.out_pps, s.in_bps, s.out_bps]
        };
        for value in values {
            large_number(out, value, f.exact);
        }
    } else {
        let _ = write!(out, "{svc_name} {}", config.scheduler);
        if config.sched_flags.any() {
            let _ = write!(out, " ({})", config.sched_flags.names(&config.scheduler));
        }
        if let Some(timeout) = config.persistent {
            let _ = write!(out, " persistent {timeout}");
            netmask_suffix(out, config.netmask, family, "mask");
            if let Some(pe) = &config.persistence_engine {
                let _ = write!(out, " pe {pe}");
            }
        }
        if config.one_packet {
            out.push_str(" ops");
        }
    }
    out.push('\n');
    let mut dests = service.dests.clone();
    if !f.nosort {
        c_qsort(&mut dests, &compare_dests);
    }
    for dest in &dests {
        print_dest(out, &svc_name, config.key.protocol(), dest, style, names);
    }
}

fn all_services(snapshot: &Snapshot, style: Style, names: &dyn Names) -> String {
    let mut out = String::new();
    if !style.rules {
        out.push_str(&header(snapshot));
    }
    let mut services = snapshot.services.clone();
    if !style.list.nosort {
        c_qsort(&mut services, &compare_services);
    }
    print_title(&mut out, style);
    for service in &services {
        print_service(&mut out, service, style, names);
    }
    out
}

/// `ipvsadm -L [-n] [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact]
/// [--nosort]`: every service.
pub fn list_all(snapshot: &Snapshot, format: ListFormat, names: &dyn Names) -> String {
    all_services(
        snapshot,
        Style {
            list: format,
            rules: false,
        },
        names,
    )
}

/// `ipvsadm -S [-n]`: the table as ipvsadm rules, which `-R` reads back.
pub fn save(snapshot: &Snapshot, numeric: bool, names: &dyn Names) -> String {
    let list = ListFormat {
        numeric,
        ..ListFormat::default()
    };
    all_services(snapshot, Style { list, rules: true }, names)
}

/// `ipvsadm -L -t|-u|-f SERVICE`: one service, without the version header.
pub fn list_service(
    snapshot: &Snapshot,
    service: &ServiceKey,
    format: ListFormat,
    names: &dyn Names,
) -> Result<String, KernelError> {
    let entry = snapshot
        .services
        .iter()
        .find(|s| s.config.key == *service)
        .ok_or(KernelError::NoSuchService)?;
    let style = Style {
        list: format,
        rules: false,
    };
    let mut out = String::new();
    print_title(&mut out, style);
    print_service(&mut out, entry, style, names);
    Ok(out)
}

fn protocol_named(name: &str) -> Option<Protocol> {
    match name {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// `ipvsadm -Lc [-n] [--persistent-conn]`: connection entries.
pub fn list_connections(
    connections: &[ConnEntry],
    format: ListFormat,
    names: &dyn Names,
) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if format.persistent_conn {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for conn in connections {
        let protocol = protocol_named(&conn.protocol);
        let numeric = format.numeric;
        let client = address_and_port(conn.client, conn.client_port, protocol, numeric, names);
        let virt = address_and_port(
            conn.virtual_address,
            conn.virtual_port,
            protocol,
            numeric,
            names,
        );
        let dest = address_and_port(conn.dest, conn.dest_port, protocol, numeric, names);
        let expire = format!("{:02}:{:02}", conn.expires / 60, conn.expires % 60);
        match (&conn.persistence_engine, format.persistent_conn) {
            (Some((pe_name, pe_data)), true) => {
                let _ = writeln!(
                    out,
                    "{:<3} {expire:<6} {:<11} {client:<18} {virt:<18} {dest:<16} {pe_name:<18} {pe_data}",
                    conn.protocol, conn.state
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{:<3} {expire:<6} {:<11} {client:<18} {virt:<18} {dest}",
                    conn.protocol, conn.state
                );
            }
        }
    }
    out
}

/// `ipvsadm -L --timeout`.
pub fn list_timeouts(timeouts: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        timeouts.tcp as i32, timeouts.tcp_fin as i32, timeouts.udp as i32
    )
}

/// `ipvsadm -L --daemon`.
pub fn list_daemons(daemons: &[SyncDaemon]) -> String {
    let mut out = String::new();
    for d in daemons {
        let _ = write!(
            out,
            "{} sync daemon (mcast={}, syncid={}",
            d.role.name(),
            d.mcast_interface,
            d.sync_id
        );
        if d.sync_maxlen != 0 {
            let _ = write!(out, ", maxlen={}", d.sync_maxlen);
        }
        if let Some(group) = d.mcast_group {
            let _ = write!(out, ", group={group}");
        }
        if d.mcast_port != 0 {
            let _ = write!(out, ", port={}", d.mcast_port);
        }
        if d.mcast_ttl != 0 {
            let _ = write!(out, ", ttl={}", d.mcast_ttl);
        }
        out.push_str(")\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn large(value: u64, exact: bool) -> String {
        let mut out = String::new();
        large_number(&mut out, value, exact);
        out
    }

    #[test]
    fn large_numbers_scale_at_ipvsadm_thresholds() {
        assert_eq!(large(99_999_999, false), " 99999999");
        assert_eq!(large(100_000_000, false), "  100000K");
        assert_eq!(large(999_999_999, false), "  999999K");
        assert_eq!(large(1_000_000_000, false), "    1000M");
        assert_eq!(large(99_999_999_999, false), "   99999M");
        assert_eq!(large(100_000_000_000, false), "     100G");
        assert_eq!(large(99_999_999_999_999, false), "   99999G");
        assert_eq!(large(100_000_000_000_000, false), "     100T");
        assert_eq!(large(u64::MAX, false), "18446744T");
        assert_eq!(large(12_345_678, true), " 12345678");
        assert_eq!(large(123_456_789, true), " 123456789");
    }

    #[test]
    fn c_qsort_is_a_stable_merge_sort() {
        let mut items = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        c_qsort(&mut items, &|a: &(i32, char), b: &(i32, char)| a.0 - b.0);
        assert_eq!(
            items,
            vec![(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]
        );
    }

    #[test]
    fn far_apart_ipv4_addresses_compare_the_c_way() {
        let a: IpAddr = "200.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        // 200.0.0.1 - 10.0.0.1 overflows an int: ipvsadm puts 200.0.0.1 first
        assert!(address_difference(false, a, b) < 0);
        // and the order is not even transitive: 192.168 < 200 < 10 < 192.168
        let c: IpAddr = "192.168.0.1".parse().unwrap();
        assert!(address_difference(false, c, a) < 0);
        assert!(address_difference(false, b, c) > 0);
    }

    #[test]
    fn daemons_list_like_ipvsadm_prints_them() {
        let full = SyncDaemon {
            role: crate::model::SyncRole::Master,
            mcast_interface: "eth1".into(),
            sync_id: 5,
            sync_maxlen: 1000,
            mcast_group: Some("224.0.0.81".parse().unwrap()),
            mcast_port: 8848,
            mcast_ttl: 2,
        };
        let bare = SyncDaemon {
            role: crate::model::SyncRole::Backup,
            mcast_interface: "eth0".into(),
            sync_id: 0,
            sync_maxlen: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
        };
        assert_eq!(
            list_daemons(&[full, bare]),
            "master sync daemon (mcast=eth1, syncid=5, maxlen=1000, group=224.0.0.81, \
             port=8848, ttl=2)\nbackup sync daemon (mcast=eth0, syncid=0)\n"
        );
    }
}
