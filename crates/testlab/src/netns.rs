//! Namespaces (hosts and switches), the links between them, and running things inside.

use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::error::{LabError, Result};
use crate::lab::{NETNS_DIR, Shared, ip, run_checked};
use crate::process::Process;

/// How often the address waits poll.
const ADDRESS_POLL: Duration = Duration::from_millis(20);

/// Name of the bridge inside every switch namespace.
const BRIDGE: &str = "br0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NsKind {
    Host,
    Switch,
}

/// A namespace of a lab: what hosts and switches have in common.
#[derive(Debug, Clone)]
pub(crate) struct Ns {
    pub(crate) shared: Arc<Shared>,
    /// The name given by the test, e.g. `dir1`.
    pub(crate) short: String,
    /// The namespace name, e.g. `klb-4242-0-failover-dir1`.
    pub(crate) netns: String,
}

impl Ns {
    pub(crate) fn create(shared: &Arc<Shared>, short: &str, kind: NsKind) -> Result<Self> {
        validate_ifname("host or switch name", short)?;
        let netns = format!("{}-{short}", shared.id);
        {
            let mut state = shared.lock();
            if state.closed {
                return Err(LabError::Closed(shared.id.clone()));
            }
            if !state.names.insert(short.to_owned()) {
                return Err(LabError::DuplicateName(short.to_owned()));
            }
            // Registered before it exists, so that teardown removes it even when the
            // setup below fails half-way.
            state.namespaces.push(netns.clone());
        }
        ip(["netns", "add", &netns])?;
        let ns = Self {
            shared: Arc::clone(shared),
            short: short.to_owned(),
            netns,
        };
        match kind {
            NsKind::Host => {
                // Set before any interface exists, so that every new interface inherits
                // the `default` values. DAD off: addresses are usable at once, no
                // tentative period. keep_addr_on_down: setting a link down (pulling the
                // cable) must not silently delete its IPv6 addresses.
                ns.sysctls(&[
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                    ("net.ipv6.conf.all.keep_addr_on_down", "1"),
                    ("net.ipv6.conf.default.keep_addr_on_down", "1"),
                ])?;
                ns.ip(["link", "set", "dev", "lo", "up"])?;
            }
            NsKind::Switch => {
                // A switch is a dumb L2 device: no IPv6 on its ports, so it never sends
                // router solicitations, MLD reports or DAD probes onto the LAN.
                ns.sysctls(&[
                    ("net.ipv6.conf.all.disable_ipv6", "1"),
                    ("net.ipv6.conf.default.disable_ipv6", "1"),
                ])?;
                // No multicast snooping: VRRP adverts and neighbour discovery must be
                // flooded like on a plain hub-like switch, whatever the MLD/IGMP state.
                ns.ip([
                    "link",
                    "add",
                    BRIDGE,
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "mcast_snooping",
                    "0",
                ])?;
                ns.ip(["link", "set", "dev", BRIDGE, "up"])?;
            }
        }
        Ok(ns)
    }

    /// Runs `ip -n <netns> <args>`.
    pub(crate) fn ip<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.netns).args(args);
        run_checked(&mut cmd)
    }

    fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.netns).arg(program);
        cmd
    }

    fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LabError::invalid("command", "", "empty argument list"))?;
        let mut cmd = self.cmd(program);
        cmd.args(args);
        run_checked(&mut cmd)
    }

    fn in_netns<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = Path::new(NETNS_DIR).join(&self.netns);
        // Opened on the calling thread so that a missing namespace is a plain error.
        let file = File::open(&path)
            .map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
        let netns = &self.netns;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{}", self.short))
                .spawn_scoped(scope, move || -> Result<T> {
                    // setns only moves this thread; it ends with the closure.
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| LabError::sys(format!("setns into {netns}"), e))?;
                    Ok(f())
                })
                .map_err(|e| LabError::io("spawning a namespace thread", e))?;
            match handle.join() {
                Ok(result) => result,
                // Propagate panics (e.g. failed assertions) to the test thread.
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    fn sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        let settings: Vec<(String, &str)> = settings
            .iter()
            .map(|&(key, value)| (sysctl_path(key), value))
            .collect();
        let netns = &self.netns;
        self.in_netns(|| {
            // /proc/sys/net is resolved against the network namespace of the thread
            // opening the file, so this writes the namespace's own settings.
            for (path, value) in &settings {
                std::fs::write(path, value).map_err(|e| {
                    LabError::io(format!("writing {value:?} to {path} in {netns}"), e)
                })?;
            }
            Ok(())
        })?
    }

    fn same_lab(&self, other: &Ns) -> Result<()> {
        if Arc::ptr_eq(&self.shared, &other.shared) {
            Ok(())
        } else {
            Err(LabError::ForeignLab(
                self.netns.clone(),
                other.netns.clone(),
            ))
        }
    }

    /// Creates a veth pair `ifname` (here) <-> `peer_ifname` (in `peer`), both up.
    fn veth(&self, ifname: &str, peer: &Ns, peer_ifname: &str) -> Result<()> {
        self.ip([
            "link",
            "add",
            ifname,
            "type",
            "veth",
            "peer",
            "name",
            peer_ifname,
            "netns",
            &peer.netns,
        ])?;
        self.ip(["link", "set", "dev", ifname, "up"])?;
        peer.ip(["link", "set", "dev", peer_ifname, "up"])?;
        Ok(())
    }
}

/// A network namespace standing for one machine: director, client or real server.
///
/// Cheap to clone, `Send` and `Sync`. See [`Lab::host`](crate::Lab::host).
#[derive(Debug, Clone)]
pub struct Host {
    ns: Ns,
}

impl Host {
    pub(crate) fn new(ns: Ns) -> Self {
        Self { ns }
    }

    /// The name given at creation, e.g. `dir1`.
    pub fn name(&self) -> &str {
        &self.ns.short
    }

    /// The namespace name, as used by `ip netns exec` / `ip -n`.
    pub fn netns(&self) -> &str {
        &self.ns.netns
    }

    /// Plugs this host into `switch`: creates interface `ifname` here, its veth peer as a
    /// port of the switch's bridge, brings both up and adds `addrs` (CIDR notation, e.g.
    /// `10.0.0.1/24`, `fd00::1/64`) to `ifname`.
    pub fn attach(&self, switch: &Switch, ifname: &str, addrs: &[&str]) -> Result<Link> {
        validate_ifname("interface name", ifname)?;
        self.ns.same_lab(&switch.ns)?;
        let port = {
            let mut state = self.ns.shared.lock();
            state.counter += 1;
            // Readable port names in `ip -n <switch> link` when they fit; the alias set
            // below says which host and interface the port belongs to anyway.
            let readable = format!("{}-{ifname}", self.ns.short);
            let port = if readable.len() <= 15 && !state.port_names.contains(&readable) {
                readable
            } else {
                format!("port{}", state.counter)
            };
            state.port_names.insert(port.clone());
            port
        };
        self.ns.veth(ifname, &switch.ns, &port)?;
        let alias = format!("{}:{ifname}", self.ns.short);
        switch.ns.ip([
            "link", "set", "dev", &port, "master", BRIDGE, "alias", &alias,
        ])?;
        let link = Link {
            ns: self.ns.clone(),
            ifname: ifname.to_owned(),
            peer_ns: switch.ns.netns.clone(),
            peer_ifname: port,
        };
        for addr in addrs {
            link.add_address(addr)?;
        }
        Ok(link)
    }

    /// Connects this host directly to `peer` with a veth pair (a crossover cable):
    /// `ifname` here, `peer_ifname` there, both up, no addresses. Returns this end and
    /// the peer's end; add addresses with [`Link::add_address`].
    pub fn link_to(&self, ifname: &str, peer: &Host, peer_ifname: &str) -> Result<(Link, Link)> {
        validate_ifname("interface name", ifname)?;
        validate_ifname("interface name", peer_ifname)?;
        self.ns.same_lab(&peer.ns)?;
        self.ns.veth(ifname, &peer.ns, peer_ifname)?;
        let here = Link {
            ns: self.ns.clone(),
            ifname: ifname.to_owned(),
            peer_ns: peer.ns.netns.clone(),
            peer_ifname: peer_ifname.to_owned(),
        };
        let there = Link {
            ns: peer.ns.clone(),
            ifname: peer_ifname.to_owned(),
            peer_ns: self.ns.netns.clone(),
            peer_ifname: ifname.to_owned(),
        };
        Ok((here, there))
    }

    /// Adds `cidr` (e.g. `10.0.0.1/24`, `fd00::1/64`; without prefix a host route) to
    /// interface `ifname`, e.g. a VIP on `lo` of a direct-routing real server. IPv6
    /// addresses skip DAD.
    pub fn add_address(&self, ifname: &str, cidr: &str) -> Result<()> {
        let (addr, _) = parse_cidr(cidr)?;
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        self.ns.ip(args).map(drop)
    }

    /// Whether `addr` (e.g. `10.0.0.100`, no prefix) is configured on any interface and
    /// usable (not tentative, DAD not failed).
    pub fn has_address(&self, addr: &str) -> Result<bool> {
        let addr = parse_addr(addr)?;
        Ok(self
            .addresses(None)?
            .iter()
            .any(|a| a.addr == addr && a.usable))
    }

    /// Waits until `addr` is configured on interface `ifname` and usable, polling every
    /// 20 ms; fails with [`LabError::Timeout`] after `timeout`. Use it after adding IPv6
    /// addresses or when waiting for a daemon (e.g. a VRRP master) to add a VIP.
    pub fn wait_for_address(&self, ifname: &str, addr: &str, timeout: Duration) -> Result<()> {
        let wanted = parse_addr(addr)?;
        let mut last_error = None;
        let outcome = crate::wait_for(
            || format!("address {wanted} on {}:{ifname} to be usable", self.name()),
            timeout,
            ADDRESS_POLL,
            || match self.addresses(Some(ifname)) {
                Ok(addrs) => addrs
                    .iter()
                    .any(|a| a.ifname == ifname && a.addr == wanted && a.usable),
                Err(e) => {
                    last_error = Some(e);
                    false
                }
            },
        );
        match (outcome, last_error) {
            (Ok(()), _) => Ok(()),
            // E.g. the interface does not exist: more useful than "timed out".
            (Err(_), Some(e)) => Err(e),
            (Err(t), None) => Err(t.into()),
        }
    }

    /// A `Command` running `program` inside this host (via `ip netns exec`); add
    /// arguments and run it as usual. Processes started this way are killed at lab
    /// teardown, but prefer [`Host::spawn`] for daemons.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.ns.cmd(program)
    }

    /// Runs `argv` inside this host to completion; fails with its stderr if it exits
    /// unsuccessfully. Example: `host.run(&["ip", "-4", "route"])`.
    pub fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        self.ns.run(argv)
    }

    /// Starts a long-lived process (e.g. a daemon in foreground mode) inside this host.
    /// Its stdout and stderr go to files in the lab dir; see [`Process`].
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Process> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LabError::invalid("command", "", "empty argument list"))?;
        let mut cmd = self.cmd(program);
        cmd.args(args);
        self.spawn_command(cmd)
    }

    /// Like [`Host::spawn`] for a command built with [`Host::cmd`] (to set environment
    /// or working directory). Stdin, stdout, stderr and the process group are overridden.
    pub fn spawn_command(&self, cmd: Command) -> Result<Process> {
        Process::spawn(&self.ns, cmd)
    }

    /// Starts real keepalived (Debian's `/usr/sbin/keepalived`) with `conf` inside this
    /// host: foreground, logging to the console, VRRP only, with pid files of its own in
    /// the lab dir so several keepalived can run side by side.
    pub fn spawn_keepalived(&self, conf: &Path) -> Result<Process> {
        const KEEPALIVED: &str = "/usr/sbin/keepalived";
        if !Path::new(KEEPALIVED).exists() {
            return Err(LabError::invalid(
                "keepalived",
                KEEPALIVED,
                "not installed (apt-get install keepalived)",
            ));
        }
        let pid_file = |suffix: &str| {
            self.ns
                .shared
                .dir
                .join(format!("{}-{suffix}", self.ns.short))
                .into_os_string()
        };
        let mut cmd = self.cmd(KEEPALIVED);
        cmd.args(["-n", "-l", "-D", "-P", "-f"])
            .arg(conf)
            .arg("-p")
            .arg(pid_file("keepalived.pid"))
            .arg("-r")
            .arg(pid_file("keepalived-vrrp.pid"));
        self.spawn_command(cmd)
    }

    /// Runs `f` inside this host's network namespace, on a new thread (`setns` changes
    /// only the calling thread, so the test thread never moves), and returns its result.
    /// A panic in `f` is propagated.
    ///
    /// Sockets created in `f` stay in this namespace and may be used from any thread
    /// afterwards: `let l = host.in_netns(|| TcpListener::bind("10.0.0.1:80"))??;`.
    pub fn in_netns<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        self.ns.in_netns(f)
    }

    /// Sets sysctl `key` (e.g. `net.ipv4.ip_forward`, or a path below `/proc/sys` for
    /// keys containing dots in interface names) inside this host.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.ns.sysctls(&[(key, value)])
    }

    /// Sends ICMP echo requests to `addr` (IPv4 or IPv6) from inside this host until a
    /// reply arrives (`Ok(true)`) or `timeout` elapses (`Ok(false)`). Implemented with a
    /// raw socket, so no `ping` binary is needed.
    pub fn ping(&self, addr: &str, timeout: Duration) -> Result<bool> {
        let addr = parse_addr(addr)?;
        self.in_netns(|| crate::ping::ping(addr, timeout))?
    }

    /// Addresses in this host, optionally of one interface, parsed from `ip -o addr`.
    fn addresses(&self, ifname: Option<&str>) -> Result<Vec<AddrInfo>> {
        let mut args = vec!["-o", "addr", "show"];
        if let Some(ifname) = ifname {
            args.extend(["dev", ifname]);
        }
        let output = self.ns.ip(args)?;
        Ok(parse_ip_addr_output(&String::from_utf8_lossy(
            &output.stdout,
        )))
    }
}

/// A bridge in its own namespace: an Ethernet switch between hosts.
///
/// Cheap to clone. See [`Lab::switch`](crate::Lab::switch) and [`Host::attach`].
#[derive(Debug, Clone)]
pub struct Switch {
    ns: Ns,
}

impl Switch {
    pub(crate) fn new(ns: Ns) -> Self {
        Self { ns }
    }

    /// The name given at creation, e.g. `lan`.
    pub fn name(&self) -> &str {
        &self.ns.short
    }

    /// The namespace name.
    pub fn netns(&self) -> &str {
        &self.ns.netns
    }

    /// The bridge's interface name inside the switch namespace.
    pub fn bridge(&self) -> &str {
        BRIDGE
    }

    /// Runs `argv` inside the switch namespace, for inspection when debugging a test
    /// (e.g. `bridge fdb show`); fails with its stderr if it exits unsuccessfully.
    pub fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        self.ns.run(argv)
    }
}

/// One end of a veth pair: a host's interface, plugged into a switch port or directly
/// into another host.
///
/// Use it to simulate failures: [`Link::unplug`] (cable pulled: this end stays
/// administratively up but loses carrier, as a daemon watching the interface would see
/// it), [`Link::set_down`] (`ip link set down` on this end), [`Link::delete`].
#[derive(Debug, Clone)]
pub struct Link {
    ns: Ns,
    ifname: String,
    peer_ns: String,
    peer_ifname: String,
}

impl Link {
    /// The interface name in the host.
    pub fn name(&self) -> &str {
        &self.ifname
    }

    /// The namespace holding this end.
    pub fn netns(&self) -> &str {
        &self.ns.netns
    }

    /// The interface name at the other end (a switch port or the peer host's interface).
    pub fn peer_name(&self) -> &str {
        &self.peer_ifname
    }

    /// Adds an address to this end; see [`Host::add_address`].
    pub fn add_address(&self, cidr: &str) -> Result<()> {
        Host::new(self.ns.clone()).add_address(&self.ifname, cidr)
    }

    /// Sets this end administratively down (`ip link set <if> down`).
    pub fn set_down(&self) -> Result<()> {
        self.ns
            .ip(["link", "set", "dev", &self.ifname, "down"])
            .map(drop)
    }

    /// Sets this end administratively up again.
    pub fn set_up(&self) -> Result<()> {
        self.ns
            .ip(["link", "set", "dev", &self.ifname, "up"])
            .map(drop)
    }

    /// Pulls the cable: sets the *other* end (switch port or peer interface) down, so this
    /// end loses carrier while staying administratively up and keeping its addresses.
    pub fn unplug(&self) -> Result<()> {
        self.set_peer("down")
    }

    /// Plugs the cable back in (the other end up again); carrier returns at once.
    pub fn plug(&self) -> Result<()> {
        self.set_peer("up")
    }

    /// Whether this end has carrier (administratively up and the other end up).
    pub fn has_carrier(&self) -> Result<bool> {
        let output = self.ns.ip(["-o", "link", "show", "dev", &self.ifname])?;
        let text = String::from_utf8_lossy(&output.stdout);
        // Flags look like `<BROADCAST,MULTICAST,UP,LOWER_UP>`.
        let flags = text
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map_or("", |(flags, _)| flags);
        Ok(flags.split(',').any(|f| f == "LOWER_UP"))
    }

    /// Deletes the veth pair (both ends).
    pub fn delete(self) -> Result<()> {
        self.ns.ip(["link", "del", "dev", &self.ifname]).map(drop)
    }

    fn set_peer(&self, state: &str) -> Result<()> {
        let mut cmd = Command::new("ip");
        cmd.args([
            "-n",
            &self.peer_ns,
            "link",
            "set",
            "dev",
            &self.peer_ifname,
            state,
        ]);
        run_checked(&mut cmd).map(drop)
    }
}

/// One address from `ip -o addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AddrInfo {
    ifname: String,
    addr: IpAddr,
    /// Neither tentative nor DAD-failed.
    usable: bool,
}

/// Parses `ip -o addr show` lines such as
/// `2: eth0    inet6 fd00::1/64 scope global tentative \       valid_lft forever ...`.
fn parse_ip_addr_output(text: &str) -> Vec<AddrInfo> {
    text.lines()
        .filter_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            let ifname = tokens.get(1)?.split('@').next()?.to_owned();
            let family = tokens.iter().position(|t| *t == "inet" || *t == "inet6")?;
            let addr = tokens.get(family + 1)?.split('/').next()?.parse().ok()?;
            let flags = tokens[family + 2..].iter().take_while(|t| **t != "\\");
            let usable = !flags
                .into_iter()
                .any(|f| *f == "tentative" || *f == "dadfailed");
            Some(AddrInfo {
                ifname,
                addr,
                usable,
            })
        })
        .collect()
}

fn parse_addr(addr: &str) -> Result<IpAddr> {
    addr.parse()
        .map_err(|e| LabError::invalid("IP address", addr, format!("{e}")))
}

fn parse_cidr(cidr: &str) -> Result<(IpAddr, Option<u8>)> {
    let (addr, prefix) = match cidr.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (cidr, None),
    };
    let addr = parse_addr(addr)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => None,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => Some(p),
            _ => {
                return Err(LabError::invalid(
                    "address",
                    cidr,
                    format!("prefix length must be 0..={max}"),
                ));
            }
        },
    };
    Ok((addr, prefix))
}

/// Host, switch and interface names must be valid interface names (they end up in
/// namespace and port names): 1-15 chars of ASCII letters, digits, `_`, `-`.
fn validate_ifname(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        return Err(LabError::invalid(what, name, "must be 1 to 15 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(LabError::invalid(
            what,
            name,
            "only ASCII letters, digits, '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn sysctl_path(key: &str) -> String {
    if key.contains('/') {
        format!("/proc/sys/{}", key.trim_start_matches("/proc/sys/"))
    } else {
        format!("/proc/sys/{}", key.replace('.', "/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_addr_output() {
        let text = "\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: eth0    inet 10.0.0.1/24 scope global eth0\\       valid_lft forever preferred_lft forever
2: eth0    inet6 fd00::1/64 scope global tentative \\       valid_lft forever preferred_lft forever
2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever
";
        let addrs = parse_ip_addr_output(text);
        assert_eq!(addrs.len(), 4);
        assert_eq!(addrs[1].ifname, "eth0");
        assert_eq!(addrs[1].addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert!(addrs[1].usable);
        assert!(!addrs[2].usable);
        assert!(addrs[3].usable);
    }

    #[test]
    fn validates_names_and_addresses() {
        assert!(validate_ifname("x", "dir1").is_ok());
        assert!(validate_ifname("x", "").is_err());
        assert!(validate_ifname("x", "a/b").is_err());
        assert!(validate_ifname("x", "sixteen_chars_xx").is_err());
        assert!(parse_cidr("10.0.0.1/24").is_ok());
        assert!(parse_cidr("fd00::1/129").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("10.0.0.300/24").is_err());
        assert_eq!(parse_cidr("fd00::1").unwrap().1, None);
    }

    #[test]
    fn builds_sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.10/rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.10/rp_filter"
        );
    }
}
