//! keepalived's health checkers for keeplb.
//!
//! - [`Health`]: the sans-I/O core. Built from the configuration's virtual servers, it
//!   says which probes are due ([`Health::take_due`]), digests their results
//!   ([`Health::on_outcome`]) into [`Action`]s (pool changes, notify scripts, log lines
//!   in keepalived's words), and handles retries, quorum, hysteresis, `alpha`,
//!   `inhibit_on_failure`, `misc_dynamic`, the sorry server and `omega`.
//! - [`probe`]: each checker's probe as configured (source, destination, timeouts) and how
//!   it runs: TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, SMTP_CHECK, DNS_CHECK, UDP_CHECK,
//!   PING_CHECK.
//! - [`Checks`]: the driver that runs them all concurrently and hands pool changes over.
//! - [`genhash()`]: keepalived's genhash.
//!
//! Wiring into a daemon: create the virtual services empty, then apply the pool changes in
//! order (the checks fill the pools themselves, at start).
//!
//! ```no_run
//! # async fn wire(config: keeplb_config::model::Config) {
//! use keeplb_check::{Action, Checks, RunOptions};
//!
//! let (checks, problems) = Checks::new(&config, RunOptions::default());
//! for problem in problems {
//!     tracing::warn!("{problem}");
//! }
//! let (pool, mut changes) = tokio::sync::mpsc::unbounded_channel();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! tokio::spawn(checks.run(pool, async move {
//!     let _ = stopped.await;
//! }));
//! while let Some(change) = changes.recv().await {
//!     match change {
//!         Action::AddDest { vs, dest, weight } => { /* add `dest` to virtual_server[vs] */ }
//!         Action::RemoveDest { vs, dest } => { /* remove it */ }
//!         Action::SetWeight { vs, dest, weight } => { /* change its weight */ }
//!         _ => {} // logs, scripts and FIFO lines are handled by the runner
//!     }
//! }
//! # drop(stop);
//! # }
//! ```

pub mod action;
mod checker;
pub mod genhash;
pub mod health;
pub mod http;
pub mod names;
pub mod outcome;
mod ping;
pub mod probe;
mod runner;
mod tls;

pub use action::{Action, ScriptEvent, VsIndex};
pub use genhash::{GenhashError, GenhashRequest, genhash};
pub use health::{CheckerId, Health, Probe, RealServerStatus};
pub use outcome::{Outcome, Reason};
pub use probe::{ProbeSpec, Probes, SpecProblem};
pub use runner::{Checks, Control, ProbeReport, RunOptions, Stop};
