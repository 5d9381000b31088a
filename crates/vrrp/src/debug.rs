//! Every log line the state machine writes, one variant each (as holo-vrrp does), so the
//! wording and level of each message is decided in one place and tests can see the set.
//!
//! Lines carry the instance name and VRID as fields. Levels: `error` for a configuration
//! conflict between routers that keeplb works around, `warn` for conditions an operator
//! must fix, `info` for state changes and for what keepalived also logs at INFO (lower
//! priority adverts, misconfigured peers), `debug` for routine protocol decisions.

use std::net::IpAddr;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::event::{Cause, DropReason, State, TimerKind};
use crate::packet::AdverInterval;

#[derive(Debug)]
pub(crate) enum Debug<'a> {
    StateChange {
        from: State,
        to: State,
        cause: Cause,
    },
    AdvertDropped {
        reason: DropReason,
        src: &'a IpAddr,
        detail: String,
    },
    /// Master: an advert with lower priority (or same priority, lower address).
    LowerPriorityReceived {
        src: &'a IpAddr,
        priority: u8,
        ours: u8,
        answering: bool,
    },
    /// Master: an advert that makes us step down.
    HigherPriorityReceived {
        src: &'a IpAddr,
        priority: u8,
        ours: u8,
    },
    /// Backup, preempting: a lower-priority advert does not reset the Master_Down timer.
    LowerPriorityDiscarded {
        src: &'a IpAddr,
        priority: u8,
        ours: u8,
    },
    PriorityZeroReceived {
        src: &'a IpAddr,
        state: State,
    },
    /// Two routers claim to own the addresses (both priority 255).
    OwnerConflict {
        src: &'a IpAddr,
    },
    PreemptDelayStarted {
        delay: Duration,
    },
    PreemptDelayStopped,
    PriorityChanged {
        from: u8,
        to: u8,
    },
    OwnerIgnoresTracking {
        requested: i32,
    },
    MasterIntervalAdopted {
        from: AdverInterval,
        to: AdverInterval,
    },
    LegacyChecksumAdopted {
        src: &'a IpAddr,
    },
    AddressListMismatchTolerated {
        src: &'a IpAddr,
        count: usize,
    },
    StaleTimer {
        kind: TimerKind,
    },
    /// Master: one of our addresses was removed by someone else.
    VirtualAddressRemoved {
        addr: &'a IpAddr,
    },
    EventIgnored {
        event: &'static str,
        state: State,
    },
    NoSourceAddress,
    /// A sync-group member's Master_Down timer expired, but not every member wants Master.
    HeldBySyncGroup,
}

impl Debug<'_> {
    pub(crate) fn log(&self, instance: &str, vrid: u8) {
        match self {
            Debug::StateChange { from, to, cause } => {
                info!(instance, vrid, %from, %to, %cause, "entering {to} state");
            }
            Debug::AdvertDropped {
                reason,
                src,
                detail,
            } => {
                if reason.is_misconfiguration() {
                    info!(instance, vrid, %src, %reason, "advertisement dropped: {detail}");
                } else {
                    debug!(instance, vrid, %src, %reason, "advertisement dropped: {detail}");
                }
            }
            Debug::LowerPriorityReceived {
                src,
                priority,
                ours,
                answering,
            } => {
                info!(
                    instance, vrid, %src, priority, ours,
                    "master received advertisement with lower priority{}",
                    if *answering { ", answering with ours" } else { "" }
                );
            }
            Debug::HigherPriorityReceived {
                src,
                priority,
                ours,
            } => {
                if priority == ours {
                    info!(instance, vrid, %src, priority, "master received advertisement with same priority from a greater address");
                } else {
                    info!(instance, vrid, %src, priority, ours, "master received advertisement with higher priority");
                }
            }
            Debug::LowerPriorityDiscarded {
                src,
                priority,
                ours,
            } => {
                info!(instance, vrid, %src, priority, ours, "backup discarding lower-priority advertisement to preempt");
            }
            Debug::PriorityZeroReceived { src, state } => {
                debug!(instance, vrid, %src, %state, "received priority 0 (master resigning)");
            }
            Debug::OwnerConflict { src } => {
                error!(
                    instance, vrid, %src,
                    "configuration error: this router and {src} are both address owner (priority 255); lowering ours to 254"
                );
            }
            Debug::PreemptDelayStarted { delay } => {
                debug!(instance, vrid, ?delay, "preempt delay started");
            }
            Debug::PreemptDelayStopped => {
                debug!(
                    instance,
                    vrid, "preempt delay stopped: master has priority at least ours"
                );
            }
            Debug::PriorityChanged { from, to } => {
                info!(instance, vrid, from, to, "effective priority changed");
            }
            Debug::OwnerIgnoresTracking { requested } => {
                debug!(
                    instance,
                    vrid,
                    requested,
                    "address owner keeps priority 255; tracking weights do not apply"
                );
            }
            Debug::MasterIntervalAdopted { from, to } => {
                debug!(instance, vrid, %from, %to, "adopted the master's advertisement interval");
            }
            Debug::LegacyChecksumAdopted { src } => {
                info!(
                    instance, vrid, %src,
                    "peer uses the old unicast VRRPv3 checksum; sending it too (keepalived's automatic compatibility)"
                );
            }
            Debug::AddressListMismatchTolerated { src, count } => {
                info!(
                    instance, vrid, %src, count,
                    "advertised addresses differ from ours; processing anyway"
                );
            }
            Debug::VirtualAddressRemoved { addr } => {
                // keepalived logs the transition this causes ("Entering BACKUP STATE",
                // "sent 0 priority"); the removal itself deserves a warning: someone
                // else is changing the addresses.
                warn!(
                    instance, vrid, %addr,
                    "virtual address removed from its interface, not by us: giving up MASTER to take it back"
                );
            }
            Debug::StaleTimer { kind } => {
                debug!(
                    instance,
                    vrid,
                    timer = kind.label(),
                    "ignoring expiry of a timer that was re-armed or cancelled"
                );
            }
            Debug::EventIgnored { event, state } => {
                debug!(instance, vrid, event, %state, "event has no effect in this state");
            }
            Debug::HeldBySyncGroup => {
                info!(
                    instance,
                    vrid,
                    "would become master; waiting in backup until every member of its sync group can"
                );
            }
            Debug::NoSourceAddress => {
                warn!(
                    instance,
                    vrid,
                    "no source address: configure unicast_src_ip/mcast_src_ip or give the interface an address"
                );
            }
        }
    }
}
