//! keepalived's HTTP/1.0 checker client: one GET per connection, read to the end of the
//! stream, status taken from the first line, MD5 over the body (up to Content-Length).
//!
//! Hand-written rather than hyper because keepalived hashes the bytes as they come: no
//! chunked decoding, reading until the server closes. A digest made with keepalived's
//! `genhash` therefore matches ours on every response, chunked or not.

use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::outcome::Reason;

/// `http_protocol`: the request line's version and whether to ask for `Connection: close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpProtocol {
    /// `1.0` (keepalived's default).
    #[default]
    Http10,
    /// `1.0C`: HTTP/1.0 with `Connection: close`.
    Http10Close,
    /// `1.1`, always with `Connection: close`.
    Http11,
}

impl HttpProtocol {
    /// From the configuration's word (`1.0`, `1.0C`/`1.0c`, `1.1`); None for anything else.
    pub fn from_keyword(word: &str) -> Option<Self> {
        match word {
            "1.0" => Some(HttpProtocol::Http10),
            "1.0C" | "1.0c" => Some(HttpProtocol::Http10Close),
            "1.1" => Some(HttpProtocol::Http11),
            _ => None,
        }
    }
}

/// The request keepalived sends (its `request_template`): `Host` is the virtualhost, or
/// the address and port connected to.
pub fn request(
    path: &str,
    protocol: HttpProtocol,
    vhost: Option<&str>,
    target: SocketAddr,
) -> String {
    let minor = u8::from(protocol == HttpProtocol::Http11);
    let close = if protocol == HttpProtocol::Http10 {
        ""
    } else {
        "Connection: close\r\n"
    };
    let host = match (vhost, target) {
        (Some(vhost), _) => vhost.to_owned(),
        (None, SocketAddr::V4(a)) => format!("{}:{}", a.ip(), a.port()),
        (None, SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
    };
    format!(
        "GET {path} HTTP/1.{minor}\r\nUser-Agent: KeepAliveClient\r\n{close}Host: {host}\r\n\r\n"
    )
}

/// The status code as keepalived's `extract_status_code` reads it: the three digits
/// between the first and second space of the first line; 0 when they are not there.
pub fn status_code(head: &[u8]) -> u16 {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let line = &head[..line_end];
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return 0;
    };
    let rest = &line[space + 1..];
    match rest {
        [a, b, c, b' ', ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => 0,
    }
}

/// `Content-Length:` as keepalived's `extract_content_length` reads it (that exact case,
/// blanks allowed before the number); None when absent or malformed.
pub fn content_length(head: &[u8]) -> Option<usize> {
    const TAG: &[u8] = b"Content-Length:";
    let at = head.windows(TAG.len()).position(|w| w == TAG)?;
    let rest = &head[at + TAG.len()..];
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    match rest.get(digits) {
        None | Some(b'\r' | b'\n') => std::str::from_utf8(&rest[..digits]).ok()?.parse().ok(),
        Some(_) => None,
    }
}

/// What came back for one GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Lower-case hex MD5 of the body (as far as Content-Length says, when it does).
    pub digest: String,
    /// The body, kept (up to [`KEPT_BODY`] bytes) only when asked for (regex).
    pub body: Vec<u8>,
    pub content_length: Option<usize>,
    pub received: usize,
}

/// How much body a regex sees (keepalived scans a stream; we keep a bounded prefix).
pub const KEPT_BODY: usize = 1 << 20;

/// keepalived's MD5 as lower-case hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends the request and reads the response to EOF, each write and read waiting at most
/// `io_timeout` (keepalived's per-operation `connect_timeout`).
pub async fn fetch<S>(
    stream: &mut S,
    request: &str,
    io_timeout: Duration,
    keep_body: bool,
) -> Result<Response, Reason>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(io_timeout, stream.write_all(request.as_bytes())).await {
        Err(_) => return Err(Reason::IoTimeout),
        Ok(Err(e)) => return Err(Reason::Io(e.to_string())),
        Ok(Ok(())) => {}
    }
    let mut head: Vec<u8> = Vec::new();
    let mut head_done: Option<usize> = None;
    let mut md5 = Md5::new();
    let mut body = Vec::new();
    let mut received = 0usize;
    let mut limit: Option<usize> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(io_timeout, stream.read(&mut buf)).await {
            Err(_) => return Err(Reason::IoTimeout),
            // A TLS peer closing without close_notify is an end of stream here.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Ok(Err(e)) => return Err(Reason::Io(e.to_string())),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if head_done.is_none() {
            // Look for the blank line across the previous bytes too.
            let from = head.len().saturating_sub(3);
            head.extend_from_slice(chunk);
            let Some(end) = head[from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| from + p + 4)
            else {
                if head.len() > 64 * 1024 {
                    return Err(Reason::Protocol("response header too long".into()));
                }
                continue;
            };
            head_done = Some(end);
            limit = content_length(&head[..end]);
            let tail = head.split_off(end);
            body_part(&tail, &mut md5, &mut body, &mut received, limit, keep_body);
            continue;
        }
        body_part(chunk, &mut md5, &mut body, &mut received, limit, keep_body);
    }
    if head_done.is_none() {
        return Err(Reason::NoData);
    }
    Ok(Response {
        status: status_code(&head),
        digest: hex(&md5.finalize()),
        body,
        content_length: limit,
        received,
    })
}

fn body_part(
    bytes: &[u8],
    md5: &mut Md5,
    body: &mut Vec<u8>,
    received: &mut usize,
    limit: Option<usize>,
    keep_body: bool,
) {
    let hashed = match limit {
        Some(limit) => &bytes[..bytes.len().min(limit.saturating_sub(*received))],
        None => bytes,
    };
    md5.update(hashed);
    if keep_body && body.len() < KEPT_BODY {
        let room = KEPT_BODY - body.len();
        body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
    *received += bytes.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_the_three_digits_after_the_first_space() {
        assert_eq!(status_code(b"HTTP/1.1 503 Service Unavailable\r\n"), 503);
        assert_eq!(status_code(b"HTTP/1.0 200 OK\r\nServer: x\r\n"), 200);
        assert_eq!(status_code(b"HTTP/1.0 2000 OK\r\n"), 0);
        assert_eq!(status_code(b"garbage\r\n"), 0);
    }

    #[test]
    fn content_length_is_read_as_keepalived_does() {
        assert_eq!(
            content_length(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n"),
            Some(12)
        );
        assert_eq!(
            content_length(b"HTTP/1.0 200 OK\r\ncontent-length: 12\r\n\r\n"),
            None
        );
        assert_eq!(
            content_length(b"HTTP/1.0 200 OK\r\nContent-Length: 1x\r\n\r\n"),
            None
        );
    }

    #[test]
    fn requests_follow_keepalived_template() {
        let v4: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::2]:80".parse().unwrap();
        assert_eq!(
            request("/health", HttpProtocol::Http10, None, v4),
            "GET /health HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: 10.0.0.2:8080\r\n\r\n"
        );
        assert_eq!(
            request("/", HttpProtocol::Http11, Some("www.example.com"), v6),
            "GET / HTTP/1.1\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: www.example.com\r\n\r\n"
        );
        assert_eq!(
            request("/", HttpProtocol::Http10Close, None, v6),
            "GET / HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nConnection: close\r\nHost: [2001:db8::2]:80\r\n\r\n"
        );
    }

    #[test]
    fn md5_of_empty_is_the_known_value() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
