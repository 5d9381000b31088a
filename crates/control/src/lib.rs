//! Control plane of keeplb: `keeplb adm` speaks ipvsadm.
//!
//! - [`parse::parse_args`] reads an ipvsadm command line into an [`AdmCommand`], with
//!   ipvsadm 1.31's defaults, checks, messages and exit codes;
//! - [`mod@format`] prints a [`Snapshot`] exactly as ipvsadm prints the kernel's table;
//! - [`adm::run`] ties both to an [`adm::AdmBackend`] (the daemon), including `-R`;
//! - [`error::KernelError`] carries the table's refusals with ipvsadm's wording;
//! - [`api`] is the versioned JSON protocol of the control socket.
//!
//! The crate is pure apart from [`names::NameFiles::from_system`] and [`adm::run`] reading
//! the standard input it is given.

pub mod adm;
pub mod api;
pub mod command;
mod cstr;
pub mod error;
pub mod format;
pub mod model;
pub mod names;
pub mod parse;
mod popt;
pub mod restore;
pub mod snapshot;
pub mod socket;
pub mod table;
pub mod usage;

pub use adm::{AdmBackend, AdmOutput, run};
pub use command::{AdmCommand, ListFormat, ListTarget};
pub use error::{KernelError, Operation};
pub use snapshot::Snapshot;
pub mod http;
pub mod metrics;
