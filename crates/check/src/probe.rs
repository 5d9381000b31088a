//! The probes: what each checker sends, from which source, to which destination, with which
//! timeouts, exactly as configured; and how each is run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use keeplb_config::model::{
    CheckKind, Checker, Config, GlobalDefs, RealServer, ScriptUser, VirtualServer,
};
use keeplb_script::{RunOutcome, ScriptCommand, run_command};
use regex::bytes::Regex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::health::{CheckerId, seconds};
use crate::http::{self, HttpProtocol};
use crate::names;
use crate::outcome::{Outcome, Reason};
use crate::tls;

/// keepalived's HELO name when `helo_name` is not set.
const DEFAULT_HELO: &str = "smtpchecker.keepalived.org";

/// One checker's probe, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// `connect_ip`/`connect_port`, by default the real server's address and port.
    pub target: SocketAddr,
    /// `bindto`/`bind_port` (a port alone binds the wildcard address).
    pub source: Option<SocketAddr>,
    /// `bind_if`: SO_BINDTODEVICE.
    pub bind_if: Option<String>,
    /// `fwmark`: SO_MARK on the probe's socket.
    pub fwmark: Option<u32>,
    /// `connect_timeout`: the limit for connecting, and for each read and write after.
    pub connect_timeout: Duration,
    pub kind: ProbeKind,
}

/// What a probe does once it has its socket.
#[derive(Debug, Clone)]
pub enum ProbeKind {
    /// TCP_CHECK: connect, then close.
    Tcp,
    /// HTTP_GET / SSL_GET.
    Http(HttpSpec),
    /// MISC_CHECK.
    Misc(MiscSpec),
    /// SMTP_CHECK: a 220 banner, 250 to HELO, then QUIT.
    Smtp { helo_name: String },
    /// DNS_CHECK: a query answered with rcode 0.
    Dns { query_type: u16, name: String },
    /// UDP_CHECK.
    Udp(UdpSpec),
    /// PING_CHECK: an ICMP echo answered.
    Ping,
    /// FILE_CHECK: not probed; the driver watches this file (`track_file`'s `file`).
    File { path: PathBuf },
    /// A checker that cannot run (its configuration is unusable): always fails so.
    Broken(Reason),
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// SSL_GET.
    pub tls: bool,
    /// `enable_sni`: send the url's virtualhost as the TLS server name.
    pub sni: bool,
    pub protocol: HttpProtocol,
    pub urls: Vec<UrlSpec>,
}

#[derive(Debug, Clone)]
pub struct UrlSpec {
    pub path: String,
    /// The Host header: the url's, checker's or virtual server's `virtualhost`.
    pub virtualhost: Option<String>,
    pub digest: Option<String>,
    pub status_code: Vec<(u16, u16)>,
    pub regex: Option<Regex>,
    pub regex_no_match: bool,
}

#[derive(Debug, Clone)]
pub struct MiscSpec {
    pub command: ScriptCommand,
    /// `misc_timeout`, by default the virtual server's `delay_loop`.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UdpSpec {
    pub payload: Vec<u8>,
    /// `require_reply`: a reply must come (and, when bytes are given, match them).
    pub require_reply: Option<ReplyPattern>,
    /// Checked only when `require_reply` gives bytes, as keepalived does.
    pub min_reply_length: usize,
    /// keepalived's default is 255.
    pub max_reply_length: usize,
}

/// `require_reply`'s bytes: a reply's first bytes must equal `data` except in the
/// bits `wildcard` sets (an `x` nibble in the configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyPattern {
    pub data: Vec<u8>,
    pub wildcard: Vec<u8>,
}

impl ReplyPattern {
    /// keepalived's `read_hex_str`: hex digits in pairs, blanks between octets (a digit
    /// alone before a blank is one octet), `x`/`X` for any nibble. None when not hex.
    pub fn parse(text: &str) -> Option<ReplyPattern> {
        fn nibble(c: char) -> Option<(u8, u8)> {
            match c {
                'x' | 'X' => Some((0, 0x0f)),
                _ => c.to_digit(16).map(|d| (d as u8, 0)),
            }
        }
        let mut pattern = ReplyPattern::default();
        let mut chars = text.chars().peekable();
        loop {
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            let Some(first) = chars.next() else { break };
            let (mut value, mut wildcard) = nibble(first)?;
            if let Some(second) = chars.next_if(|c| *c != ' ' && *c != '\t') {
                let (low, low_wildcard) = nibble(second)?;
                value = value << 4 | low;
                wildcard = wildcard << 4 | low_wildcard;
            }
            pattern.data.push(value);
            pattern.wildcard.push(wildcard);
        }
        Some(pattern)
    }
}

/// Whether a UDP_CHECK reply passes (keepalived's `check_udp_reply`): with bytes to
/// match, its length must be within the bounds and its first bytes (as many as both
/// have) must match; without, any reply passes.
pub fn udp_reply_passes(udp: &UdpSpec, reply: &[u8]) -> bool {
    let Some(pattern) = udp.require_reply.as_ref().filter(|p| !p.data.is_empty()) else {
        return true;
    };
    (udp.min_reply_length..=udp.max_reply_length).contains(&reply.len())
        && reply
            .iter()
            .zip(pattern.data.iter().zip(&pattern.wildcard))
            .all(|(got, (want, wildcard))| (got ^ want) & !wildcard == 0)
}

/// A checker whose configuration keeplb cannot use as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{checker} of {real_server}: {problem}")]
pub struct SpecProblem {
    pub checker: &'static str,
    pub real_server: String,
    pub problem: String,
}

/// Every checker's probe, indexed like [`crate::Health`]'s checkers.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    specs: Vec<Vec<Vec<ProbeSpec>>>,
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn dns_type(name: &str) -> u16 {
    match name {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "RRSIG" => 46,
        "DNSKEY" => 48,
        _ => 6, // SOA, keepalived's default
    }
}

impl Probes {
    /// Resolves every probe of every virtual server. Problems (a regex that does not
    /// compile, a script line that does not parse, an unknown user) are returned beside:
    /// the regex is dropped, the script's checker always fails.
    pub fn new(config: &Config) -> (Probes, Vec<SpecProblem>) {
        let mut problems = Vec::new();
        let global = &config.global_defs;
        let specs = config
            .virtual_server
            .iter()
            .map(|vs| {
                vs.real_server
                    .iter()
                    .map(|rs| {
                        rs.checkers
                            .iter()
                            .map(|c| spec(vs, rs, c, config, global, &mut problems))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        (Probes { specs }, problems)
    }

    /// The probe of checker `id`.
    pub fn get(&self, id: CheckerId) -> Option<&ProbeSpec> {
        self.specs.get(id.vs)?.get(id.rs)?.get(id.checker)
    }

    /// The FILE_CHECKs and the files they follow.
    pub fn files(&self) -> Vec<(CheckerId, PathBuf)> {
        let mut files = Vec::new();
        for (vs, v) in self.specs.iter().enumerate() {
            for (rs, r) in v.iter().enumerate() {
                for (checker, spec) in r.iter().enumerate() {
                    if let ProbeKind::File { path } = &spec.kind {
                        files.push((CheckerId { vs, rs, checker }, path.clone()));
                    }
                }
            }
        }
        files
    }
}

fn spec(
    vs: &VirtualServer,
    rs: &RealServer,
    checker: &Checker,
    config: &Config,
    global: &GlobalDefs,
    problems: &mut Vec<SpecProblem>,
) -> ProbeSpec {
    let common = &checker.common;
    let target = SocketAddr::new(
        common.connect_ip.unwrap_or(rs.ip),
        common.connect_port.unwrap_or(rs.port),
    );
    let source = match (common.bindto, common.bind_port) {
        (Some(ip), port) => Some(SocketAddr::new(ip, port.unwrap_or(0))),
        (None, Some(port)) => Some(SocketAddr::new(
            if target.is_ipv4() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
            port,
        )),
        (None, None) => None,
    };
    let mut problem = |problem: String| {
        problems.push(SpecProblem {
            checker: checker.kind.keyword(),
            real_server: names::real_server_name(rs.ip, rs.port, vs.protocol),
            problem,
        })
    };
    let kind = match &checker.kind {
        CheckKind::Tcp => ProbeKind::Tcp,
        CheckKind::Http(h) | CheckKind::Ssl(h) => ProbeKind::Http(HttpSpec {
            tls: matches!(checker.kind, CheckKind::Ssl(_)),
            sni: h.enable_sni,
            protocol: h
                .http_protocol
                .as_deref()
                .and_then(HttpProtocol::from_keyword)
                .unwrap_or_default(),
            urls: h
                .url
                .iter()
                .map(|u| UrlSpec {
                    path: u.path.clone(),
                    virtualhost: u
                        .virtualhost
                        .clone()
                        .or_else(|| h.virtualhost.clone())
                        .or_else(|| vs.virtualhost.clone()),
                    digest: u.digest.as_ref().map(|d| d.to_ascii_lowercase()),
                    status_code: u.status_code.clone(),
                    regex: u.regex.as_ref().and_then(|r| {
                        Regex::new(r)
                            .map_err(|e| problem(format!("regex `{r}` is ignored: {e}")))
                            .ok()
                    }),
                    regex_no_match: u.regex_no_match,
                })
                .collect(),
        }),
        CheckKind::Misc(m) => {
            let command =
                script_command(&m.misc_path, m.user.as_deref(), m.group.as_deref(), global);
            let timeout = seconds(match m.misc_timeout {
                Some(t) if t > 0.0 => t,
                _ => vs.delay_loop,
            });
            match command {
                Ok(command) => ProbeKind::Misc(MiscSpec { command, timeout }),
                Err(e) => {
                    problem(e.to_string());
                    ProbeKind::Broken(Reason::Spawn(e.to_string()))
                }
            }
        }
        CheckKind::Smtp(s) => ProbeKind::Smtp {
            helo_name: s
                .helo_name
                .clone()
                .unwrap_or_else(|| DEFAULT_HELO.to_owned()),
        },
        CheckKind::Dns(d) => ProbeKind::Dns {
            query_type: dns_type(&d.query_type),
            name: d.name.clone(),
        },
        CheckKind::Udp(u) => ProbeKind::Udp(UdpSpec {
            payload: u.payload.as_deref().and_then(hex_bytes).unwrap_or_default(),
            require_reply: u.require_reply.as_deref().map(|r| {
                ReplyPattern::parse(r).unwrap_or_else(|| {
                    problem(format!(
                        "require_reply `{r}` is not hexadecimal: any reply passes"
                    ));
                    ReplyPattern::default()
                })
            }),
            min_reply_length: u.min_reply_length.map_or(0, |v| v as usize),
            max_reply_length: u.max_reply_length.map_or(255, |v| v as usize),
        }),
        CheckKind::Ping => ProbeKind::Ping,
        CheckKind::File(f) => match config.track_file.iter().find(|t| t.name == f.track_file) {
            Some(t) => ProbeKind::File {
                path: PathBuf::from(&t.file),
            },
            None => {
                problem(format!("track_file `{}` is not defined", f.track_file));
                ProbeKind::Broken(Reason::Protocol("no track_file".into()))
            }
        },
    };
    ProbeSpec {
        target,
        source,
        bind_if: common.bind_if.clone(),
        fwmark: common.fwmark,
        connect_timeout: seconds(common.connect_timeout),
        kind,
    }
}

/// A script line as a command, run as `user` (and `group`), else as `script_user`.
pub(crate) fn script_command(
    line: &str,
    user: Option<&str>,
    group: Option<&str>,
    global: &GlobalDefs,
) -> Result<ScriptCommand, keeplb_script::CommandError> {
    ScriptCommand::configured(
        line,
        user.map(|u| (u, group)),
        global.script_user.as_ref().map(ScriptUser::names),
    )
}

/// Applies the source options (device, mark, address) to a socket about to connect;
/// `with_port` false binds the source address alone (ICMP has no ports).
pub(crate) fn prepare(
    socket: socket2::SockRef<'_>,
    spec: &ProbeSpec,
    with_port: bool,
) -> Result<(), Reason> {
    let bind = |e: std::io::Error| Reason::Bind(e.to_string());
    if let Some(device) = &spec.bind_if {
        socket.bind_device(Some(device.as_bytes())).map_err(bind)?;
    }
    if let Some(mark) = spec.fwmark {
        socket.set_mark(mark).map_err(bind)?;
    }
    if let Some(source) = spec.source {
        let source = if with_port {
            source
        } else {
            SocketAddr::new(source.ip(), 0)
        };
        socket.set_reuse_address(true).map_err(bind)?;
        socket.bind(&source.into()).map_err(bind)?;
    }
    Ok(())
}

fn connect_error(e: std::io::Error) -> Reason {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Reason::Refused,
        std::io::ErrorKind::TimedOut => Reason::ConnectTimeout,
        _ => Reason::ConnectError(e.to_string()),
    }
}

/// Connects as configured: source, device, mark, and at most `connect_timeout`.
pub async fn connect_tcp(spec: &ProbeSpec) -> Result<TcpStream, Reason> {
    let socket = if spec.target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| Reason::ConnectError(e.to_string()))?;
    prepare(socket2::SockRef::from(&socket), spec, true)?;
    match tokio::time::timeout(spec.connect_timeout, socket.connect(spec.target)).await {
        Err(_) => Err(Reason::ConnectTimeout),
        Ok(Err(e)) => Err(connect_error(e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Runs one probe (for HTTP, of url number `url`) and says how it went.
pub async fn run(spec: &ProbeSpec, url: usize) -> Outcome {
    let result = match &spec.kind {
        ProbeKind::Tcp => connect_tcp(spec).await.map(drop),
        ProbeKind::Http(http) => match http.urls.get(url) {
            Some(u) => probe_http(spec, http, u).await,
            None => Err(Reason::Protocol(format!("no url number {url}"))),
        },
        ProbeKind::Misc(misc) => return probe_misc(misc).await,
        ProbeKind::Smtp { helo_name } => probe_smtp(spec, helo_name).await,
        ProbeKind::Dns { query_type, name } => probe_dns(spec, *query_type, name).await,
        ProbeKind::Udp(udp) => probe_udp(spec, udp).await,
        ProbeKind::Ping => crate::ping::probe(spec).await,
        ProbeKind::Broken(reason) => Err(reason.clone()),
        ProbeKind::File { .. } => Err(Reason::Protocol("FILE_CHECK is not probed".into())),
    };
    match result {
        Ok(()) => Outcome::Up,
        Err(reason) => Outcome::Down(reason),
    }
}

/// Judges a response as keepalived's `http_handle_response`: status, then digest, then
/// regex.
pub fn judge(url: &UrlSpec, response: &http::Response) -> Result<(), Reason> {
    let status = response.status;
    if !url
        .status_code
        .iter()
        .any(|(low, high)| (*low..=*high).contains(&status))
    {
        return Err(Reason::HttpStatus(status));
    }
    if let Some(digest) = &url.digest
        && *digest != response.digest
    {
        return Err(Reason::DigestMismatch {
            got: response.digest.clone(),
        });
    }
    if let Some(regex) = &url.regex
        && regex.is_match(&response.body) == url.regex_no_match
    {
        return Err(Reason::RegexMismatch);
    }
    Ok(())
}

async fn probe_http(spec: &ProbeSpec, http: &HttpSpec, url: &UrlSpec) -> Result<(), Reason> {
    let mut stream = connect_tcp(spec).await?;
    let request = http::request(
        &url.path,
        http.protocol,
        url.virtualhost.as_deref(),
        spec.target,
    );
    let keep_body = url.regex.is_some();
    let response = if http.tls {
        let sni = if http.sni {
            url.virtualhost.as_deref()
        } else {
            None
        };
        let handshake = tls::handshake(&mut stream, spec.target.ip(), sni);
        let mut tls = match tokio::time::timeout(spec.connect_timeout, handshake).await {
            Err(_) => return Err(Reason::ConnectTimeout),
            Ok(Err(e)) => return Err(Reason::Tls(e)),
            Ok(Ok(tls)) => tls,
        };
        http::fetch(&mut tls, &request, spec.connect_timeout, keep_body).await?
    } else {
        http::fetch(&mut stream, &request, spec.connect_timeout, keep_body).await?
    };
    judge(url, &response)
}

async fn probe_misc(misc: &MiscSpec) -> Outcome {
    match run_command(&misc.command, misc.timeout).await {
        Ok(RunOutcome::Exited(code)) => Outcome::Exited(code),
        Ok(RunOutcome::Signalled(signal)) => Outcome::Down(Reason::Signal(signal)),
        Ok(RunOutcome::TimedOut) => Outcome::Down(Reason::ScriptTimeout),
        Err(e) => Outcome::Down(Reason::Spawn(e.to_string())),
    }
}

/// Reads one SMTP reply (all its lines) and returns its code.
async fn smtp_reply<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    timeout: Duration,
) -> Result<u16, Reason> {
    let mut line = String::new();
    for _ in 0..64 {
        line.clear();
        let n = match tokio::time::timeout(timeout, reader.read_line(&mut line)).await {
            Err(_) => return Err(Reason::IoTimeout),
            Ok(Err(e)) => return Err(Reason::Io(e.to_string())),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(Reason::NoData);
        }
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| Reason::Protocol(format!("bad SMTP reply `{}`", line.trim_end())))?;
        // "250-…" continues, "250 …" ends the reply.
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
    Err(Reason::Protocol("SMTP reply too long".into()))
}

async fn probe_smtp(spec: &ProbeSpec, helo_name: &str) -> Result<(), Reason> {
    let stream = connect_tcp(spec).await?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let timeout = spec.connect_timeout;
    let banner = smtp_reply(&mut read, timeout).await?;
    if banner != 220 {
        return Err(Reason::Protocol(format!("Bad greeting banner {banner}")));
    }
    let send = |text: String| async move {
        tokio::time::timeout(timeout, async { write.write_all(text.as_bytes()).await })
            .await
            .map_err(|_| Reason::IoTimeout)?
            .map_err(|e| Reason::Io(e.to_string()))?;
        Ok::<_, Reason>(write)
    };
    let write = send(format!("HELO {helo_name}\r\n")).await?;
    let helo = smtp_reply(&mut read, timeout).await?;
    if helo != 250 {
        return Err(Reason::Protocol(format!("Bad HELO response {helo}")));
    }
    // Polite end; the result no longer depends on it.
    let _ = tokio::time::timeout(timeout, async move {
        let mut write = write;
        write.write_all(b"QUIT\r\n").await
    })
    .await;
    Ok(())
}

/// A connected UDP socket with the probe's source options.
async fn udp_socket(spec: &ProbeSpec) -> Result<UdpSocket, Reason> {
    let domain = if spec.target.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
        .map_err(|e| Reason::ConnectError(e.to_string()))?;
    prepare(socket2::SockRef::from(&socket), spec, true)?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Reason::ConnectError(e.to_string()))?;
    let socket =
        UdpSocket::from_std(socket.into()).map_err(|e| Reason::ConnectError(e.to_string()))?;
    socket.connect(spec.target).await.map_err(connect_error)?;
    Ok(socket)
}

/// A DNS query for `name`/`query_type`, recursion desired, keepalived's layout.
pub fn dns_query(id: u16, query_type: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(32 + name.len());
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // 1 question
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let label = &label.as_bytes()[..label.len().min(63)];
        packet.push(label.len() as u8);
        packet.extend_from_slice(label);
    }
    packet.push(0);
    packet.extend_from_slice(&query_type.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes()); // IN
    packet
}

fn query_id() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

async fn probe_dns(spec: &ProbeSpec, query_type: u16, name: &str) -> Result<(), Reason> {
    let socket = udp_socket(spec).await?;
    let id = query_id();
    let query = dns_query(id, query_type, name);
    socket.send(&query).await.map_err(connect_error)?;
    let deadline = tokio::time::Instant::now() + spec.connect_timeout;
    let mut buf = vec![0u8; 4096];
    // Replies with another id or that are not answers are skipped, as keepalived does.
    for _ in 0..64 {
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return Err(Reason::IoTimeout),
            Ok(Err(e)) => return Err(connect_error(e)),
            Ok(Ok(n)) => n,
        };
        let Some(header) = buf.get(..n.min(12)).filter(|h| h.len() == 12) else {
            continue;
        };
        let flags = u16::from_be_bytes([header[2], header[3]]);
        if u16::from_be_bytes([header[0], header[1]]) != id || flags & 0x8000 == 0 {
            continue;
        }
        let rcode = flags & 0x000f;
        if rcode != 0 {
            return Err(Reason::Protocol(format!(
                "read error occurred. (rcode = {rcode})"
            )));
        }
        return Ok(());
    }
    Err(Reason::Protocol("no DNS answer".into()))
}

async fn probe_udp(spec: &ProbeSpec, udp: &UdpSpec) -> Result<(), Reason> {
    let socket = udp_socket(spec).await?;
    socket.send(&udp.payload).await.map_err(connect_error)?;
    let mut buf = vec![0u8; udp.max_reply_length.max(1) + 1];
    match tokio::time::timeout(spec.connect_timeout, socket.recv(&mut buf)).await {
        // Silence: keepalived counts it a success unless a reply is required.
        Err(_) if udp.require_reply.is_none() => Ok(()),
        Err(_) => Err(Reason::IoTimeout),
        Ok(Err(e)) => Err(connect_error(e)),
        Ok(Ok(n)) if udp_reply_passes(udp, &buf[..n]) => Ok(()),
        Ok(Ok(_)) => Err(Reason::Protocol("reply data mismatch".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_has_one_question_with_labels() {
        let q = dns_query(0x1234, 6, "example.org.");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[4..6], &[0, 1]);
        assert_eq!(&q[12..], b"\x07example\x03org\x00\x00\x06\x00\x01");
        assert_eq!(dns_query(1, 6, ".")[12..], [0, 0, 6, 0, 1]);
    }

    #[test]
    fn hex_payloads_decode() {
        assert_eq!(hex_bytes("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(hex_bytes("abc"), None);
    }

    #[test]
    fn reply_patterns_read_as_keepalived_reads_hex() {
        let p = ReplyPattern::parse("6b 65X x1 7").unwrap();
        assert_eq!(p.data, vec![0x6b, 0x65, 0x00, 0x01, 0x07]);
        assert_eq!(p.wildcard, vec![0, 0, 0x0f, 0xf0, 0]);
        assert_eq!(ReplyPattern::parse("6g"), None);
    }

    #[test]
    fn udp_replies_are_judged_as_keepalived_does() {
        let udp = |reply: &str, max: usize| UdpSpec {
            payload: Vec::new(),
            require_reply: Some(ReplyPattern::parse(reply).unwrap()),
            min_reply_length: 2,
            max_reply_length: max,
        };
        assert!(udp_reply_passes(&udp("6bxx", 255), b"ke"));
        assert!(udp_reply_passes(&udp("6b65", 255), b"keeplb"));
        assert!(!udp_reply_passes(&udp("6b66", 255), b"keeplb"));
        // Length bounds: default at most 255 octets.
        assert!(!udp_reply_passes(&udp("6b", 255), &[0x6b; 256]));
        assert!(!udp_reply_passes(&udp("6b", 255), b"k"));
        // A bare require_reply takes any reply, whatever its length.
        let bare = UdpSpec {
            require_reply: Some(ReplyPattern::default()),
            ..udp("6b", 255)
        };
        assert!(udp_reply_passes(&bare, &[0; 1000]));
    }
}
