//! Errors of the data plane.

use std::io;
use std::net::SocketAddr;

/// Why the data plane could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Firewall marks classify packets in netfilter, which a userspace proxy never sees.
    #[error(
        "fwmark {mark} services need the kernel data path (IPVS or nftables); the userspace proxy serves TCP and UDP address:port services only"
    )]
    Fwmark {
        /// The mark.
        mark: u32,
    },
    /// A service whose protocol is neither TCP nor UDP.
    #[error("service {vip}: only TCP and UDP services can be proxied")]
    UnsupportedProtocol {
        /// Its address.
        vip: SocketAddr,
    },
    /// Two services on one protocol, address and port.
    #[error("{vip}: a service already listens there")]
    Duplicate {
        /// The address.
        vip: SocketAddr,
    },
    /// The listening socket could not be set up.
    // Reasons are part of the messages, not sources, so that a chain printed with `{:#}`
    // does not say them twice.
    #[error("cannot listen on {vip}: {error}")]
    Listen {
        /// The address.
        vip: SocketAddr,
        /// The system's reason.
        error: io::Error,
    },
    /// A worker thread or runtime could not be started.
    #[error("cannot start data-plane worker {index}: {error}")]
    Worker {
        /// Which worker.
        index: usize,
        /// The system's reason.
        error: io::Error,
    },
    /// The workers are gone (the data plane was shut down).
    #[error("the data plane has stopped")]
    Stopped,
}
