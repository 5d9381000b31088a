//! The userspace data plane of keeplb: IPVS-style virtual services served by a full
//! proxy, where kernel IPVS is missing (containers, kernels without `IP_VS`).
//!
//! A client connects to a virtual address and port; the proxy asks the balancer's
//! scheduler for a real server exactly as IPVS would (same scheduler state, same
//! persistence templates, same connection table and counters), connects to it from
//! the director's own address, and relays both directions. This is what IPVS calls
//! FULLNAT and HAProxy `mode tcp`: every forwarding method (`lb_kind` NAT, DR, TUN)
//! is served this way, and the real servers need no special routing.
//!
//! What a proxy can do better than a kernel director, it does: a real server that
//! refuses or does not answer a connect is skipped for the next choice, so the client
//! sees no error; the sorry server takes connections nobody else can; a PROXY protocol
//! header can tell real servers who the client is.
//!
//! # Layout
//!
//! - [`DataPlane`]: worker threads, each with a single-threaded tokio runtime and its
//!   own `SO_REUSEPORT` + `IP_FREEBIND` socket per service.
//! - [`VirtualService`]: one service's shared state (the balancer's `Service` and
//!   `ConnTable` behind locks) and its proxy [`ServiceOptions`].
//! - `tcp` (accept, schedule, connect with retries), `hub` (each worker's established
//!   connections, driven from an epoll set of their own, with their idle timeouts),
//!   `relay` (both directions, half-close, splice for bulk), `udp` (per-client flows),
//!   [`ProxyProtocol`] headers.

mod activity;
mod dataplane;
mod error;
mod hub;
mod listener;
mod pipe;
mod proxy_protocol;
mod relay;
mod service;
mod tcp;
mod udp;

pub use dataplane::{DataPlane, ServiceId};
pub use error::ProxyError;
pub use proxy_protocol::{ProxyProtocol, Transport};
pub use service::{DEFAULT_CONNECT_TIMEOUT, Forwarding, ServiceOptions, VirtualService};
