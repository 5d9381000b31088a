//! The optional HTTP listener: the control API and the metrics over HTTP/1.1.
//!
//! - `GET /metrics`: the OpenMetrics text exposition;
//! - `POST /api`: one JSON [`Request`] in the body, one JSON [`Response`] back, exactly as
//!   on the control socket; the status says how it went (see [`status_of`]);
//! - `GET /healthz`: `ok`, while the daemon answers at all.
//!
//! With a bearer token configured, every request must carry `Authorization: Bearer TOKEN`
//! (compared in constant time), else 401, before any routing. Without a token the
//! listener only binds loopback addresses, and the API is read-only: any local user can
//! reach a loopback port, whereas the control socket is its owner's alone, so requests
//! that change the daemon ([`RequestBody::changes_state`]) get 403.
//!
//! [`RequestBody::changes_state`]: crate::api::RequestBody::changes_state
//!
//! ```no_run
//! # async fn example() -> Result<(), keeplb_control::http::HttpError> {
//! use std::sync::Arc;
//! use keeplb_control::api::{Request, Response, ResponseBody};
//! use keeplb_control::http::HttpServer;
//! use keeplb_control::metrics::Metrics;
//!
//! let metrics = Arc::new(Metrics::new());
//! let server = HttpServer::bind("127.0.0.1:9180".parse().unwrap(), None).await?;
//! // the daemon answers requests exactly as on the control socket
//! let handler = |_request: Request| async { Response::new(ResponseBody::Done) };
//! // refresh what is read at scrape time (e.g. `metrics.set_ipvs(…)`) before rendering
//! let scrape = move || {
//!     let text = metrics.render();
//!     async move { text }
//! };
//! server.serve(handler, scrape, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::api::{ApiError, Request, Response, ResponseBody, decode_request};
use crate::error::KernelError;
use crate::metrics::OPENMETRICS_CONTENT_TYPE;

/// Largest `/api` request body accepted, as on the control socket.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// A client gets this long to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gets this long to send an `/api` body once its headers are in.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// After shutdown is asked, requests in flight get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A non-loopback address without a token would expose the API unauthenticated.
    #[error(
        "refusing to serve the control API on {address} without a bearer token (use a loopback address or set a token)"
    )]
    NonLoopbackWithoutToken {
        /// The address asked for.
        address: SocketAddr,
    },
    /// The token is empty or has characters a header value cannot carry.
    #[error("the bearer token must be non-empty visible ASCII without spaces")]
    InvalidToken,
    /// The socket could not be bound.
    // The reason is part of the message, not a source, so that a chain printed with
    // `{:#}` does not say it twice.
    #[error("cannot listen on {address}: {error}")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        error: io::Error,
    },
}

/// What the listener needs to answer; shared by every connection.
struct Shared<H, S> {
    token: Option<Vec<u8>>,
    body_limit: usize,
    handler: H,
    scrape: S,
}

/// A bound HTTP listener, not yet serving.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    token: Option<Vec<u8>>,
    body_limit: usize,
}

impl HttpServer {
    /// Binds `address`. With `token`, requests must carry it as a bearer token; without
    /// one only a loopback address is accepted. Must be called inside a tokio runtime.
    pub async fn bind(address: SocketAddr, token: Option<String>) -> Result<HttpServer, HttpError> {
        if let Some(token) = &token {
            let valid = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(HttpError::InvalidToken);
            }
        } else if !address.ip().is_loopback() {
            return Err(HttpError::NonLoopbackWithoutToken { address });
        }
        let listener = TcpListener::bind(address)
            .await
            .map_err(|error| HttpError::Bind { address, error })?;
        Ok(HttpServer {
            listener,
            token: token.map(String::into_bytes),
            body_limit: DEFAULT_BODY_LIMIT,
        })
    }

    /// Sets the largest `/api` body accepted ([`DEFAULT_BODY_LIMIT`] unless set); larger
    /// ones get 413.
    pub fn with_body_limit(mut self, bytes: usize) -> HttpServer {
        self.body_limit = bytes;
        self
    }

    /// The address bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers `/api` with `handler` (the control socket's kind) and `/metrics` with the
    /// text `scrape` gives (typically `Metrics::render`, after refreshing inputs that are
    /// read at scrape time) until `shutdown` completes. Then it stops accepting, lets
    /// requests in flight finish for a few seconds, and closes every connection.
    pub async fn serve<H, F, S, G>(self, handler: H, scrape: S, shutdown: impl Future<Output = ()>)
    where
        H: Fn(Request) -> F + Send + Sync + 'static,
        F: Future<Output = Response> + Send + 'static,
        S: Fn() -> G + Send + Sync + 'static,
        G: Future<Output = String> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            token: self.token,
            body_limit: self.body_limit,
            handler,
            scrape,
        });
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = Arc::clone(&shared);
                        let service = service_fn(move |request| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(answer(&shared, request).await) }
                        });
                        let connection = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        let connection = graceful.watch(connection);
                        connections.spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%error, %peer, "HTTP connection ended");
                            }
                        });
                    }
                    Err(error) => {
                        // Out of descriptors or memory: accepting again at once would
                        // only fail again, and spin.
                        tracing::warn!(%error, "HTTP accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
            }
        }
        drop(self.listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "HTTP connections still busy after the grace period; closing them"
            );
        }
        connections.shutdown().await;
    }
}

/// A response with a body and its content type.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

type HttpResponse = hyper::Response<Full<Bytes>>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn plain(status: StatusCode) -> HttpResponse {
    let reason = status.canonical_reason().unwrap_or("error");
    reply(status, TEXT, format!("{reason}\n"))
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// True when the request carries the token, or none is needed. The scheme is
/// case-insensitive (RFC 9110 §11.1); the token comparison takes the same time wherever
/// the first difference is.
fn authorized(token: Option<&[u8]>, request: &hyper::Request<Incoming>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some((scheme, credentials)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(credentials.ct_eq(token))
}

async fn answer<H, F, S, G>(
    shared: &Shared<H, S>,
    request: hyper::Request<Incoming>,
) -> HttpResponse
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
    S: Fn() -> G,
    G: Future<Output = String>,
{
    if !authorized(shared.token.as_deref(), &request) {
        let mut response = plain(StatusCode::UNAUTHORIZED);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keeplb\""),
        );
        return response;
    }
    let method = request.method();
    match request.uri().path() {
        "/metrics" if method == Method::GET || method == Method::HEAD => reply(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            (shared.scrape)().await,
        ),
        "/healthz" if method == Method::GET || method == Method::HEAD => {
            reply(StatusCode::OK, TEXT, "ok\n")
        }
        "/metrics" | "/healthz" => method_not_allowed("GET, HEAD"),
        "/api" if method == Method::POST => api(shared, request).await,
        "/api" => method_not_allowed("POST"),
        _ => plain(StatusCode::NOT_FOUND),
    }
}

/// `POST /api`: the body is one request as the control socket takes it.
async fn api<H, F, S>(shared: &Shared<H, S>, request: hyper::Request<Incoming>) -> HttpResponse
where
    H: Fn(Request) -> F,
    F: Future<Output = Response>,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > shared.body_limit as u64) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let body = Limited::new(request.into_body(), shared.body_limit);
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE);
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "HTTP request body unreadable");
            return plain(StatusCode::BAD_REQUEST);
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let response = match std::str::from_utf8(&body) {
        Err(error) => bad_request(error.to_string()),
        Ok(text) => match decode_request(text.trim()) {
            Ok(request) if shared.token.is_none() && request.body.changes_state() => {
                Response::new(ResponseBody::Error {
                    error: ApiError::Forbidden {
                        message: READ_ONLY.to_owned(),
                    },
                })
            }
            Ok(request) => (shared.handler)(request).await,
            Err(response) => response,
        },
    };
    match serde_json::to_vec(&response) {
        Ok(mut json) => {
            json.push(b'\n');
            reply(status_of(&response), JSON, json)
        }
        Err(error) => {
            tracing::error!(%error, "API response not serialisable");
            plain(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn bad_request(message: String) -> Response {
    Response::new(ResponseBody::Error {
        error: ApiError::BadRequest { message },
    })
}

/// Why a request that changes the daemon is refused without a token.
const READ_ONLY: &str = "this request changes the daemon, and without a bearer token the HTTP API is read-only: start keeplb run with --http-token-file FILE and send Authorization: Bearer TOKEN";

/// The HTTP status of an `/api` response (its JSON body says the same in detail):
///
/// | response | status |
/// |---|---|
/// | done, snapshot, status, reloaded | 200 OK |
/// | `bad_request`, `unsupported_version`; kernel EINVAL and other errnos | 400 Bad Request |
/// | `forbidden` (no token configured); kernel EPERM | 403 Forbidden |
/// | kernel: no such service, real server, scheduler or engine | 404 Not Found |
/// | kernel: already exists | 409 Conflict |
/// | `config_rejected`: the configuration file is invalid, nothing changed | 422 Unprocessable Content |
/// | kernel: not supported (by IPVS, or by the userspace data plane) | 501 Not Implemented |
/// | kernel: out of memory | 503 Service Unavailable |
pub fn status_of(response: &Response) -> StatusCode {
    let ResponseBody::Error { error } = &response.body else {
        return StatusCode::OK;
    };
    match error {
        ApiError::BadRequest { .. } | ApiError::UnsupportedVersion { .. } => {
            StatusCode::BAD_REQUEST
        }
        ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
        ApiError::ConfigRejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        // Applied, but part of it conflicts with what the machine has (a port taken).
        ApiError::PartlyApplied { .. } => StatusCode::CONFLICT,
        ApiError::ReloadPending => StatusCode::ACCEPTED,
        ApiError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Kernel { error, .. } => match error {
            KernelError::NoSuchService | KernelError::NotFound => StatusCode::NOT_FOUND,
            KernelError::Exists => StatusCode::CONFLICT,
            KernelError::PermissionDenied => StatusCode::FORBIDDEN,
            KernelError::NotSupported
            | KernelError::AddressFamilyNotSupported
            | KernelError::NeedsKernel(_) => StatusCode::NOT_IMPLEMENTED,
            KernelError::NoMemory => StatusCode::SERVICE_UNAVAILABLE,
            KernelError::InvalidArgument | KernelError::Errno(_) => StatusCode::BAD_REQUEST,
        },
    }
}
