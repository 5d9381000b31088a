//! What the director knows of its configured real servers' health, for status and
//! metrics: the [`HealthBook`] the director keeps from its checks' verdicts, published on
//! a watch that the control plane reads.

use std::collections::HashMap;
use std::net::SocketAddr;

use keeplb_check::{Action, CheckerId};
use keeplb_config::model as config;
use keeplb_control::api::{ConfiguredRealServer, ServiceHealth};
use keeplb_control::metrics::CheckKey;
use keeplb_control::model::{Protocol, ServiceKey};
use keeplb_proxy::ServiceId;

/// Where the director publishes its configured real servers' health.
pub type HealthWatch = tokio::sync::watch::Receiver<Vec<ServiceHealth>>;

/// A real server of a `virtual_server` block, as the configuration gives it.
#[derive(Debug, Clone)]
struct Configured {
    address: SocketAddr,
    weight: u32,
    checks: Vec<CheckKey>,
}

/// The configured real servers of every served service and whether their checks say
/// they are up (keepalived's `alive`), kept by the director and published to status and
/// metrics on every change.
///
/// `alive` is the checks' own verdict ([`Action::RealServerAlive`], told at their start
/// and at every change), not the pool: a live real server pulled for the sorry server
/// is still up. Until the checks have said, a configured real server is down.
#[derive(Debug)]
pub struct HealthBook {
    /// Per `virtual_server` block of the configuration in force: its services and its
    /// real servers.
    blocks: Vec<(Vec<ServiceId>, Vec<Configured>)>,
    /// Up or down, by service and real server; kept across reloads like the checks'
    /// own state.
    up: HashMap<(ServiceId, SocketAddr), bool>,
    /// Verdicts recorded since the last publication.
    unpublished: bool,
    published: tokio::sync::watch::Sender<Vec<ServiceHealth>>,
}

impl Default for HealthBook {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            up: HashMap::new(),
            unpublished: false,
            published: tokio::sync::watch::Sender::new(Vec::new()),
        }
    }
}

impl HealthBook {
    /// A receiver of every publication from now on.
    pub fn subscribe(&self) -> HealthWatch {
        self.published.subscribe()
    }

    /// The configuration in force is `config`, whose blocks became `services` (indexed
    /// like `config.virtual_server`); `checks` names each checker in the metrics.
    /// Real servers it no longer has are forgotten.
    pub fn configure(
        &mut self,
        config: &config::Config,
        services: Vec<Vec<ServiceId>>,
        checks: impl Fn(CheckerId) -> Option<CheckKey>,
    ) {
        self.blocks = config
            .virtual_server
            .iter()
            .enumerate()
            .zip(services)
            .map(|((vs, block), services)| {
                let real_servers = block
                    .real_server
                    .iter()
                    .enumerate()
                    .map(|(rs, real_server)| Configured {
                        address: SocketAddr::new(real_server.ip, real_server.port),
                        weight: real_server.weight,
                        checks: (0..real_server.checkers.len())
                            .filter_map(|checker| checks(CheckerId { vs, rs, checker }))
                            .collect(),
                    })
                    .collect();
                (services, real_servers)
            })
            .collect();
        let blocks = &self.blocks;
        self.up.retain(|(service, address), _| {
            blocks.iter().any(|(services, real_servers)| {
                services.contains(service) && real_servers.iter().any(|c| c.address == *address)
            })
        });
        self.publish_all();
    }

    /// Takes in the checks' verdict on a real server ([`Action::RealServerAlive`]); other
    /// actions are ignored. It is published by [`HealthBook::publish`], once for a burst
    /// (the checks give every verdict at their start).
    pub fn record(&mut self, action: &Action) {
        let Action::RealServerAlive { vs, dest, alive } = *action else {
            return;
        };
        let Some((services, real_servers)) = self.blocks.get(vs) else {
            return;
        };
        if !real_servers.iter().any(|c| c.address == dest) {
            return;
        }
        for service in services {
            self.up.insert((*service, dest), alive);
        }
        self.unpublished = true;
    }

    /// Publishes the verdicts recorded since the last publication, if any.
    pub fn publish(&mut self) {
        if std::mem::take(&mut self.unpublished) {
            self.publish_all();
        }
    }

    fn publish_all(&self) {
        let view = self
            .blocks
            .iter()
            .flat_map(|(services, real_servers)| {
                services.iter().map(|service| ServiceHealth {
                    service: service_key(*service),
                    real_servers: real_servers
                        .iter()
                        .map(|c| ConfiguredRealServer {
                            address: c.address,
                            weight: c.weight,
                            up: self.up.get(&(*service, c.address)) == Some(&true),
                            checks: c.checks.clone(),
                        })
                        .collect(),
                })
            })
            .collect();
        self.published.send_replace(view);
    }
}

/// The control API's name of a data plane service.
fn service_key((protocol, vip): ServiceId) -> ServiceKey {
    ServiceKey::Addr {
        protocol: match protocol {
            keeplb_balancer::Protocol::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        },
        address: vip.ip(),
        port: vip.port(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_config::parse;
    use keeplb_balancer as balancer;

    const TWO_REAL_SERVERS: &str = "virtual_server 10.99.0.1 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 10.99.1.1 8080 {
        weight 3
        TCP_CHECK {
        }
    }
    real_server 10.99.1.2 8080 {
        weight 2
        inhibit_on_failure
        TCP_CHECK {
        }
        MISC_CHECK {
            misc_path /bin/true
        }
    }
}
";

    fn sa(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// Each configured real server as published: address, configured weight, up.
    fn published(watch: &HealthWatch) -> Vec<(SocketAddr, u32, bool)> {
        let view = watch.borrow();
        assert_eq!(view.len(), 1, "{view:?}");
        view[0]
            .real_servers
            .iter()
            .map(|rs| (rs.address, rs.weight, rs.up))
            .collect()
    }

    fn book(config: &config::Config) -> HealthBook {
        let mut book = HealthBook::default();
        let vip = sa("10.99.0.1:80");
        book.configure(config, vec![vec![(balancer::Protocol::Tcp, vip)]], |id| {
            Some(CheckKey {
                service: "TCP 10.99.0.1:80".into(),
                real_server: sa("10.99.1.1:8080"),
                checker: format!("{}-{}", id.rs, id.checker),
            })
        });
        book
    }

    #[test]
    fn health_book_follows_the_verdicts_of_the_checks() {
        let config = parse(TWO_REAL_SERVERS);
        let mut book = book(&config);
        let watch = book.subscribe();
        let (rs1, rs2) = (sa("10.99.1.1:8080"), sa("10.99.1.2:8080"));
        // before the checks add them, nobody is up
        assert_eq!(published(&watch), [(rs1, 3, false), (rs2, 2, false)]);
        let view = watch.borrow().clone();
        assert_eq!(
            view[0].service,
            ServiceKey::Addr {
                protocol: Protocol::Tcp,
                address: "10.99.0.1".parse().unwrap(),
                port: 80
            }
        );
        assert_eq!(view[0].real_servers[1].checks.len(), 2, "{view:?}");
        let verdict = |vs, dest, alive| Action::RealServerAlive { vs, dest, alive };
        let changes = [
            // start: both alive
            (verdict(0, rs1, true), [true, false]),
            (verdict(0, rs2, true), [true, true]),
            // pool changes alone say nothing (a live real server may be out of the pool
            // while the sorry server serves)
            (Action::RemoveDest { vs: 0, dest: rs1 }, [true, true]),
            // both fail
            (verdict(0, rs1, false), [false, true]),
            (verdict(0, rs2, false), [false, false]),
            // a real server of another block, or not configured, changes nothing
            (verdict(1, rs2, true), [false, false]),
            (verdict(0, sa("10.99.1.9:8080"), true), [false, false]),
            // both come back
            (verdict(0, rs1, true), [true, false]),
            (verdict(0, rs2, true), [true, true]),
        ];
        for (action, up) in changes {
            book.record(&action);
            book.publish();
            let now: Vec<bool> = published(&watch).iter().map(|rs| rs.2).collect();
            assert_eq!(now, up, "after {action:?}");
        }
    }

    #[test]
    fn health_book_keeps_the_health_of_real_servers_a_reload_keeps() {
        let mut book = book(&parse(TWO_REAL_SERVERS));
        let watch = book.subscribe();
        let (rs1, rs2) = (sa("10.99.1.1:8080"), sa("10.99.1.2:8080"));
        for dest in [rs1, rs2] {
            book.record(&Action::RealServerAlive {
                vs: 0,
                dest,
                alive: true,
            });
        }
        // the reload drops rs2 and changes rs1's weight: rs1 stays up (the checks carry
        // their state over without adding it again)
        let reloaded = TWO_REAL_SERVERS
            .replace("weight 3", "weight 5")
            .replace("10.99.1.2 8080", "10.99.1.3 8080");
        let config = parse(&reloaded);
        book.configure(
            &config,
            vec![vec![(balancer::Protocol::Tcp, sa("10.99.0.1:80"))]],
            |_| None,
        );
        assert_eq!(
            published(&watch),
            [(rs1, 5, true), (sa("10.99.1.3:8080"), 2, false)]
        );
        assert!(
            !book
                .up
                .contains_key(&((balancer::Protocol::Tcp, sa("10.99.0.1:80")), rs2))
        );
    }
}
