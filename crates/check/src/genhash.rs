//! keepalived's `genhash`: fetch a url from a server as the HTTP_GET/SSL_GET checkers do and
//! give the MD5 digest to paste into `digest`.
//!
//! `keepalived --genhash -s ADDR -p PORT -u URL [-S] [-I] [-V VHOST] [-P 1.0|1.0c|1.1]
//! [-t SECS] [-m FWMARK]` prints the digest as 32 lower-case hex digits and a newline;
//! [`genhash`] returns it (with what else came back) for the CLI to print.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::http::{self, HttpProtocol, Response};
use crate::outcome::Reason;
use crate::probe::{ProbeKind, ProbeSpec, connect_tcp};
use crate::tls;

/// What to fetch, with genhash's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenhashRequest {
    /// `-s`
    pub server: IpAddr,
    /// `-p`
    pub port: u16,
    /// `-u`: the path (and query) to GET.
    pub url: String,
    /// `-S`: over TLS (certificates are not verified, as keepalived does not).
    pub ssl: bool,
    /// `-I`: send the virtualhost as the TLS server name.
    pub sni: bool,
    /// `-V`: the Host header (else `ADDR:PORT`).
    pub virtualhost: Option<String>,
    /// `-P`
    pub protocol: HttpProtocol,
    /// `-t`: limit for connecting and for each read and write.
    pub timeout: Duration,
    /// `-m`: SO_MARK on the socket.
    pub fwmark: Option<u32>,
}

impl GenhashRequest {
    /// genhash's defaults: plain HTTP/1.0, no virtualhost, and keepalived's default timeout
    /// (UINT_MAX microseconds, about 71 minutes).
    pub fn new(server: IpAddr, port: u16, url: impl Into<String>) -> Self {
        GenhashRequest {
            server,
            port,
            url: url.into(),
            ssl: false,
            sni: false,
            virtualhost: None,
            protocol: HttpProtocol::Http10,
            timeout: Duration::from_micros(u64::from(u32::MAX)),
            fwmark: None,
        }
    }
}

/// Why genhash got no digest, in keepalived genhash's words (`Display`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenhashError {
    #[error("{}", .0.http_message())]
    Failed(Reason),
    /// The server closed without sending a response header.
    #[error("no data received from remote webserver")]
    NoData,
}

/// Fetches the url and returns the response: its `digest` is what to put in `digest`.
/// Like keepalived's genhash, any status is accepted (the caller may print it).
pub async fn genhash(request: &GenhashRequest) -> Result<Response, GenhashError> {
    let target = SocketAddr::new(request.server, request.port);
    let spec = ProbeSpec {
        target,
        source: None,
        bind_if: None,
        fwmark: request.fwmark,
        connect_timeout: request.timeout,
        kind: ProbeKind::Tcp,
    };
    let get = http::request(
        &request.url,
        request.protocol,
        request.virtualhost.as_deref(),
        target,
    );
    let failed = |reason| match reason {
        Reason::NoData => GenhashError::NoData,
        other => GenhashError::Failed(other),
    };
    let mut stream = connect_tcp(&spec).await.map_err(failed)?;
    if request.ssl {
        let sni = request
            .sni
            .then_some(request.virtualhost.as_deref())
            .flatten();
        let handshake = tls::handshake(&mut stream, request.server, sni);
        let mut tls = match tokio::time::timeout(request.timeout, handshake).await {
            Err(_) => return Err(GenhashError::Failed(Reason::ConnectTimeout)),
            Ok(Err(e)) => return Err(GenhashError::Failed(Reason::Tls(e))),
            Ok(Ok(tls)) => tls,
        };
        http::fetch(&mut tls, &get, request.timeout, false)
            .await
            .map_err(failed)
    } else {
        http::fetch(&mut stream, &get, request.timeout, false)
            .await
            .map_err(failed)
    }
}
