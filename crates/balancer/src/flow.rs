//! What a scheduler may look at when choosing: the connection's addresses.

use std::net::SocketAddr;

/// The connection being scheduled.
///
/// IPVS schedulers see the first packet; of it they use the client's address (sh, mh,
/// and the client port with `sh-port` / `mh-port`) and the destination address (dh,
/// lblc, lblcr: for a proxy that is the virtual address the client connected to, or the
/// original destination under transparent proxying).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The client's address and source port.
    pub client: SocketAddr,
    /// The address and port the client connected to.
    pub vip: SocketAddr,
}

impl Flow {
    /// A flow from `client` to `vip`.
    pub fn new(client: SocketAddr, vip: SocketAddr) -> Self {
        Self { client, vip }
    }
}
