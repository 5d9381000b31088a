//! The probes against servers this test runs on 127.0.0.1 ephemeral ports, with real
//! time (bounded waits).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keeplb_check::http::HttpProtocol;
use keeplb_check::probe::{self, ProbeKind, ProbeSpec};
use keeplb_check::{CheckerId, GenhashRequest, Outcome, Probes, Reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The probe of the first checker of the first real server of `text`.
fn first_probe(text: &str) -> ProbeSpec {
    let (probes, problems) = Probes::new(&common::load(text));
    assert!(problems.is_empty(), "{problems:?}");
    probes
        .get(CheckerId {
            vs: 0,
            rs: 0,
            checker: 0,
        })
        .expect("a probe")
        .clone()
}

fn tcp_spec(target: SocketAddr, connect_timeout: Duration) -> ProbeSpec {
    ProbeSpec {
        target,
        source: None,
        bind_if: None,
        fwmark: None,
        connect_timeout,
        kind: ProbeKind::Tcp,
    }
}

/// A port nothing listens on (bound then released).
fn closed_port() -> u16 {
    let l = StdListener::bind((LOCALHOST, 0)).expect("bind");
    l.local_addr().expect("addr").port()
}

/// A listener whose accept queue is full, so further connection attempts get no answer.
/// The returned streams keep the queue full.
fn silent_listener() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(LOCALHOST, 0).into())
        .expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    // Backlog 0 admits one connection; one more fills the SYN side on some kernels.
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            fillers.push(s);
        }
    }
    (socket, fillers, addr)
}

#[tokio::test]
async fn tcp_check_accepted_refused_and_timed_out() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let open = listener.local_addr().expect("addr");
    assert_eq!(
        probe::run(&tcp_spec(open, Duration::from_secs(5)), 0).await,
        Outcome::Up
    );
    let closed = SocketAddr::new(LOCALHOST, closed_port());
    assert_eq!(
        probe::run(&tcp_spec(closed, Duration::from_secs(5)), 0).await,
        Outcome::Down(Reason::Refused)
    );
    let (_silent, _fillers, addr) = silent_listener();
    let started = Instant::now();
    let outcome = probe::run(&tcp_spec(addr, Duration::from_millis(700)), 0).await;
    let took = started.elapsed();
    assert_eq!(outcome, Outcome::Down(Reason::ConnectTimeout));
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "connect_timeout 0.7 s took {took:?}"
    );
}

#[tokio::test]
async fn source_and_destination_are_as_configured() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bind_port = closed_port();
    // The real server's own port has nothing; connect_port points at the listener, and
    // the probe leaves from 127.0.0.2:bind_port.
    let spec = first_probe(&format!(
        r#"
virtual_server 10.0.0.1 80 {{
    protocol TCP
    real_server 127.0.0.1 {rs_port} {{
        TCP_CHECK {{
            connect_port {port}
            bindto 127.0.0.2
            bind_port {bind_port}
            connect_timeout 2.5
        }}
    }}
}}
"#,
        rs_port = closed_port()
    ));
    assert_eq!(spec.connect_timeout, Duration::from_millis(2500));
    let accept = tokio::spawn(async move {
        let (_stream, peer) = listener.accept().await.expect("accept");
        peer
    });
    assert_eq!(probe::run(&spec, 0).await, Outcome::Up);
    let peer = tokio::time::timeout(Duration::from_secs(5), accept)
        .await
        .expect("accepted in time")
        .expect("task");
    assert_eq!(
        peer,
        SocketAddr::new("127.0.0.2".parse().unwrap(), bind_port)
    );
}

/// A one-shot-per-connection HTTP server: records each request, answers `response`.
struct HttpServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn http_server(response: Vec<u8>) -> HttpServer {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&request).into_owned());
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    HttpServer { addr, requests }
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn http_config(port: u16, url: &str, extra: &str) -> String {
    format!(
        r#"
virtual_server 10.0.0.1 80 {{
    protocol TCP
    virtualhost www.example.com
    real_server 127.0.0.1 {port} {{
        HTTP_GET {{
            url {{
                path /health
                {url}
            }}
            connect_timeout 3
            {extra}
        }}
    }}
}}
"#
    )
}

#[tokio::test]
async fn http_get_checks_status_digest_and_regex() {
    let ok = http_server(response("200 OK", "all good\n")).await;
    let digest = keeplb_check::http::md5_hex(b"all good\n");
    let spec = first_probe(&http_config(
        ok.addr.port(),
        &format!("digest {digest}"),
        "",
    ));
    assert_eq!(probe::run(&spec, 0).await, Outcome::Up);
    let request = ok.requests.lock().expect("lock")[0].clone();
    // The virtual server's virtualhost is the Host; HTTP/1.0 by default.
    assert_eq!(
        request,
        "GET /health HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: www.example.com\r\n\r\n"
    );

    let wrong = first_probe(&http_config(
        ok.addr.port(),
        "digest 00000000000000000000000000000000",
        "",
    ));
    assert_eq!(
        probe::run(&wrong, 0).await,
        Outcome::Down(Reason::DigestMismatch { got: digest })
    );

    let unavailable = http_server(response("503 Service Unavailable", "busy")).await;
    let spec = first_probe(&http_config(unavailable.addr.port(), "", ""));
    assert_eq!(
        probe::run(&spec, 0).await,
        Outcome::Down(Reason::HttpStatus(503))
    );
    let accepting_503 = first_probe(&http_config(
        unavailable.addr.port(),
        "status_code 200-299 503",
        "",
    ));
    assert_eq!(probe::run(&accepting_503, 0).await, Outcome::Up);

    let matching = first_probe(&http_config(ok.addr.port(), r#"regex "g[o]+d""#, ""));
    assert_eq!(probe::run(&matching, 0).await, Outcome::Up);
    let not_matching = first_probe(&http_config(ok.addr.port(), r#"regex "bad""#, ""));
    assert_eq!(
        probe::run(&not_matching, 0).await,
        Outcome::Down(Reason::RegexMismatch)
    );
}

#[tokio::test]
async fn http_protocol_1_1_asks_to_close_and_silence_times_out() {
    let ok = http_server(response("200 OK", "x")).await;
    let spec = first_probe(&http_config(
        ok.addr.port(),
        "virtualhost api.example.com",
        "http_protocol 1.1",
    ));
    assert_eq!(probe::run(&spec, 0).await, Outcome::Up);
    assert_eq!(
        ok.requests.lock().expect("lock")[0],
        "GET /health HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: api.example.com\r\n\r\n"
    );
    // Accepts but never answers: the read waits connect_timeout.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    });
    let mut spec = first_probe(&http_config(port, "", ""));
    spec.connect_timeout = Duration::from_millis(600);
    let started = Instant::now();
    assert_eq!(probe::run(&spec, 0).await, Outcome::Down(Reason::IoTimeout));
    assert!(started.elapsed() < Duration::from_secs(3));
    hold.abort();
}

/// Runs keepalived's own genhash and returns its output.
fn keepalived_genhash(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("/usr/bin/genhash")
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[tokio::test]
async fn genhash_agrees_with_keepalived_genhash() {
    // A chunked body: keepalived hashes the bytes as sent, framing included.
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
    for body in [
        response("200 OK", "<html>keeplb</html>\n"),
        chunked,
        response("404 Not Found", ""),
    ] {
        let server = http_server(body).await;
        let port = server.addr.port().to_string();
        let mut request = GenhashRequest::new(LOCALHOST, server.addr.port(), "/index.html");
        request.timeout = Duration::from_secs(5);
        let ours = keeplb_check::genhash(&request)
            .await
            .expect("digest")
            .digest;
        let Some(theirs) = tokio::task::spawn_blocking(move || {
            keepalived_genhash(&["-s", "127.0.0.1", "-p", port.as_str(), "-u", "/index.html"])
        })
        .await
        .expect("join") else {
            eprintln!("keepalived's genhash is not installed: comparison skipped");
            return;
        };
        assert_eq!(ours, theirs);
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("keeplb-check-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn misc_config(path: &str, extra: &str) -> String {
    format!(
        r#"
virtual_server 10.0.0.1 80 {{
    protocol TCP
    delay_loop 30
    real_server 127.0.0.1 80 {{
        MISC_CHECK {{
            misc_path "{path}"
            {extra}
        }}
    }}
}}
"#
    )
}

#[tokio::test]
async fn misc_check_reports_exit_status_signal_and_timeout() {
    let dir = TempDir::new("misc");
    let ok = first_probe(&misc_config(&dir.script("ok", "exit 0"), ""));
    assert_eq!(probe::run(&ok, 0).await, Outcome::Exited(0));
    let weight = first_probe(&misc_config(&dir.script("w", "exit $1"), ""));
    if let ProbeKind::Misc(m) = &weight.kind {
        assert_eq!(m.timeout, Duration::from_secs(30), "defaults to delay_loop");
    }
    let with_arg = first_probe(&misc_config(
        &format!("{} 7", dir.script("arg", "exit $1")),
        "",
    ));
    assert_eq!(probe::run(&with_arg, 0).await, Outcome::Exited(7));
    let killed = first_probe(&misc_config(&dir.script("kill", "kill -9 $$"), ""));
    assert_eq!(
        probe::run(&killed, 0).await,
        Outcome::Down(Reason::Signal(9))
    );

    // Outlives misc_timeout: the whole process group goes, its background child too.
    let pid_file = dir.0.join("child.pid");
    let slow = first_probe(&misc_config(
        &dir.script(
            "slow",
            &format!("sleep 30 &\necho $! > {}\nwait", pid_file.display()),
        ),
        "misc_timeout 1",
    ));
    let started = Instant::now();
    assert_eq!(
        probe::run(&slow, 0).await,
        Outcome::Down(Reason::ScriptTimeout)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let child: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid written")
        .trim()
        .parse()
        .expect("pid");
    // Reaped by init shortly after the kill; allow it a moment.
    let mut gone = false;
    for _ in 0..50 {
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the script's background child {child} survived");
}

#[tokio::test]
async fn smtp_check_wants_220_then_250() {
    async fn smtp_server(banner: &'static str) -> SocketAddr {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(banner.as_bytes()).await;
                let mut buf = [0u8; 256];
                if let Ok(n) = stream.read(&mut buf).await
                    && buf[..n].starts_with(b"HELO smtpchecker.keepalived.org\r\n")
                {
                    let _ = stream.write_all(b"250 hello\r\n").await;
                }
                let _ = stream.read(&mut buf).await;
            }
        });
        addr
    }
    let config = |port: u16| {
        format!(
            "virtual_server 10.0.0.1 25 {{\n protocol TCP\n real_server 127.0.0.1 {port} {{\n SMTP_CHECK {{\n connect_timeout 3\n }}\n }}\n}}\n"
        )
    };
    let good = smtp_server("220-mail.example.com ESMTP\r\n220 ready\r\n").await;
    assert_eq!(
        probe::run(&first_probe(&config(good.port())), 0).await,
        Outcome::Up
    );
    let busy = smtp_server("554 go away\r\n").await;
    assert!(matches!(
        probe::run(&first_probe(&config(busy.port())), 0).await,
        Outcome::Down(Reason::Protocol(_))
    ));
}

#[tokio::test]
async fn dns_and_udp_checks() {
    // A DNS server answering with the rcode it is given.
    async fn dns_server(rcode: u8) -> SocketAddr {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80; // QR
                reply[3] = (reply[3] & 0xf0) | rcode;
                let _ = socket.send_to(&reply, from).await;
            }
        });
        addr
    }
    let dns = |port: u16| {
        format!(
            "virtual_server 10.0.0.1 53 {{\n protocol UDP\n real_server 127.0.0.1 {port} {{\n DNS_CHECK {{\n type A\n name example.org\n connect_timeout 2\n }}\n }}\n}}\n"
        )
    };
    let good = dns_server(0).await;
    assert_eq!(
        probe::run(&first_probe(&dns(good.port())), 0).await,
        Outcome::Up
    );
    let failing = dns_server(2).await;
    assert_eq!(
        probe::run(&first_probe(&dns(failing.port())), 0).await,
        Outcome::Down(Reason::Protocol("read error occurred. (rcode = 2)".into()))
    );

    let echo = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
    let echo_port = echo.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let udp = |port: u16, reply: &str| {
        format!(
            "virtual_server 10.0.0.1 53 {{\n protocol UDP\n real_server 127.0.0.1 {port} {{\n UDP_CHECK {{\n payload 6b6565706c62\n {reply}\n connect_timeout 1\n }}\n }}\n}}\n"
        )
    };
    assert_eq!(
        probe::run(&first_probe(&udp(echo_port, "require_reply 6b65")), 0).await,
        Outcome::Up
    );
    assert!(matches!(
        probe::run(&first_probe(&udp(echo_port, "require_reply 0000")), 0).await,
        Outcome::Down(Reason::Protocol(_))
    ));
    // Nothing listens: the ICMP port unreachable comes back as a refusal.
    assert_eq!(
        probe::run(&first_probe(&udp(closed_port(), "")), 0).await,
        Outcome::Down(Reason::Refused)
    );
}

#[tokio::test]
async fn ping_check_gets_an_echo_reply_from_loopback() {
    let spec = first_probe(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 127.0.0.1 80 {\n PING_CHECK {\n connect_timeout 2\n }\n }\n}\n",
    );
    assert_eq!(probe::run(&spec, 0).await, Outcome::Up);
}

#[test]
fn http_protocol_words() {
    assert_eq!(
        HttpProtocol::from_keyword("1.0c"),
        Some(HttpProtocol::Http10Close)
    );
    assert_eq!(HttpProtocol::from_keyword("2"), None);
}

/// `openssl s_server -WWW` serving `dir` on a loopback port, killed on drop.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_server(dir: &Path) -> Option<TlsServer> {
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=www.example.com",
    ])?;
    let port = closed_port();
    let child = std::process::Command::new("openssl")
        .args([
            "s_server", "-quiet", "-WWW", "-cert", "cert.pem", "-key", "key.pem",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let server = TlsServer { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect((LOCALHOST, port))
            .await
            .is_ok()
        {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn ssl_get_and_genhash_over_tls_accept_a_self_signed_certificate() {
    let dir = TempDir::new("tls");
    std::fs::write(dir.0.join("health.txt"), "secure and sound\n").expect("write");
    let Some(server) = tls_server(&dir.0).await else {
        eprintln!("openssl is not usable here: TLS test skipped");
        return;
    };
    let digest = keeplb_check::http::md5_hex(b"secure and sound\n");
    let config = |url: &str| {
        format!(
            r#"
virtual_server 10.0.0.1 443 {{
    protocol TCP
    real_server 127.0.0.1 {port} {{
        SSL_GET {{
            url {{
                path /health.txt
                {url}
            }}
            enable_sni
            virtualhost www.example.com
            connect_timeout 5
        }}
    }}
}}
"#,
            port = server.port
        )
    };
    let good = first_probe(&config(&format!("digest {digest}")));
    assert_eq!(probe::run(&good, 0).await, Outcome::Up);
    // s_server answers 200 with an error text for a missing file: the digest catches it.
    let missing =
        first_probe(&config(&format!("digest {digest}")).replace("/health.txt", "/nothing-here"));
    assert!(matches!(
        probe::run(&missing, 0).await,
        Outcome::Down(Reason::DigestMismatch { .. })
    ));

    let mut request = GenhashRequest::new(LOCALHOST, server.port, "/health.txt");
    request.ssl = true;
    request.timeout = Duration::from_secs(5);
    let ours = keeplb_check::genhash(&request).await.expect("digest");
    assert_eq!(ours.digest, digest);
    assert_eq!(ours.status, 200);
    let port = server.port.to_string();
    if let Some(theirs) = tokio::task::spawn_blocking(move || {
        keepalived_genhash(&[
            "-S",
            "-s",
            "127.0.0.1",
            "-p",
            port.as_str(),
            "-u",
            "/health.txt",
        ])
    })
    .await
    .expect("join")
    {
        assert_eq!(theirs, digest);
    }
}
