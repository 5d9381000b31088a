//! Running the VRRP driver ([`keeplb_vrrp::run_instance_with`]) inside a testlab host:
//! each router gets a dedicated thread, moved into the host's namespace, with its own
//! current-thread tokio runtime.

#![allow(dead_code)]

use std::net::IpAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keeplb_testlab::{Host, Lab, Process, wait_until};
use keeplb_vrrp::{
    AdverInterval, DriverOptions, InstanceConfig, IoError, State, Stats, Version, run_instance_with,
};
use tokio::sync::watch;

pub const VIP: &str = "10.0.0.100";
/// How often tests poll `ip addr` / the state.
pub const POLL: Duration = Duration::from_millis(10);

/// Starts real keepalived (foreground, console log, VRRP only) in `host`, from a
/// keepalived.conf in the lab's directory with one `vrrp_instance VI_1` made of the
/// keyword lines `instance`.
pub fn start_keepalived(
    lab: &Lab,
    host: &Host,
    instance: &str,
) -> Result<Process, Box<dyn std::error::Error>> {
    let conf = lab.dir().join("keepalived.conf");
    std::fs::write(
        &conf,
        format!("global_defs {{\n    router_id ka\n}}\nvrrp_instance VI_1 {{\n{instance}}}\n"),
    )?;
    Ok(host.spawn_keepalived(&conf)?)
}

pub fn vip() -> IpAddr {
    VIP.parse().expect("VIP literal")
}

/// A VRRPv3 instance on VRID 51 advertising [`VIP`] every `centis` centiseconds.
pub fn v3_config(name: &str, priority: u8, centis: u16) -> InstanceConfig {
    let mut config = InstanceConfig::new(name, 51, Version::V3, vec![vip()]);
    config.priority = priority;
    config.adver_int = AdverInterval::from_centis(centis);
    config
}

/// A keeplb router running in a lab host.
pub struct Router {
    pub name: String,
    stop: watch::Sender<bool>,
    state: watch::Receiver<State>,
    thread: Option<JoinHandle<keeplb_testlab::Result<Result<Stats, IoError>>>>,
}

impl Router {
    /// Starts `config` on `interface` of `host`.
    pub fn start(host: &Host, interface: &str, config: InstanceConfig) -> Router {
        let (stop, stop_rx) = watch::channel(false);
        let (state_tx, state) = watch::channel(State::Initialize);
        let mut options = DriverOptions::new(interface);
        options.state = Some(state_tx);
        let host = host.clone();
        let name = config.name.clone();
        let thread = std::thread::spawn(move || {
            host.in_netns(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(run_instance_with(config, options, stop_rx))
            })
        });
        Router {
            name,
            stop,
            state,
            thread: Some(thread),
        }
    }

    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Waits until the router is in `state`.
    pub fn wait_for_state(&self, state: State, timeout: Duration) {
        wait_until(timeout, POLL, || self.state() == state).unwrap_or_else(|_| {
            panic!(
                "{}: still {} after {timeout:?}, expected {state}",
                self.name,
                self.state()
            )
        });
    }

    /// Signals shutdown and waits for the driver to finish; returns its counters.
    pub fn stop(mut self) -> Stats {
        self.finish()
    }

    fn finish(&mut self) -> Stats {
        self.stop.send_replace(true);
        let thread = self.thread.take().expect("router already stopped");
        thread
            .join()
            .expect("router thread panicked")
            .expect("entering the namespace")
            .unwrap_or_else(|e| panic!("{}: driver failed: {e}", self.name))
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        // Stop the driver thread before the lab deletes its namespace.
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits until `host` has the VIP (checked with `ip addr` in its namespace) and returns
/// how long that took from `since`.
pub fn wait_for_vip(host: &Host, since: Instant, timeout: Duration) -> Duration {
    wait_until(timeout, POLL, || host.has_address(VIP).unwrap_or(false))
        .unwrap_or_else(|_| panic!("{} did not get {VIP} within {timeout:?}", host.name()));
    since.elapsed()
}

/// Waits until `host` no longer has the VIP.
pub fn wait_for_no_vip(host: &Host, timeout: Duration) {
    wait_until(timeout, POLL, || !host.has_address(VIP).unwrap_or(true))
        .unwrap_or_else(|_| panic!("{} still holds {VIP} after {timeout:?}", host.name()));
}

pub fn has_vip(host: &Host) -> bool {
    host.has_address(VIP).expect("ip addr")
}

/// Checks that `router` stays in `state` for the whole of `period` (a negative check:
/// it polls until the period ends, failing at the first other state).
pub fn wait_for_state_for(router: &Router, state: State, period: Duration) {
    let end = Instant::now() + period;
    let mut seen = state;
    let _ = wait_until(period, POLL, || {
        seen = router.state();
        seen != state || Instant::now() >= end
    });
    assert_eq!(seen, state, "{} left {state}", router.name);
}
