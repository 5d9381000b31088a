//! What keepalived's VRRP and health-check sides share: running scripts (notify,
//! `vrrp_script`, MISC_CHECK), reading `track_file`s, writing notify FIFOs, and the
//! script security rule of `enable_script_security` ([`check_script_security`]).

mod command;
mod fifo;
mod security;
mod track_file;

pub use command::{
    CommandError, RunOutcome, ScriptCommand, run_command, spawn_in_group, split_command,
};
pub use fifo::FifoWriter;
pub use security::{ScriptSecurityError, check_program, check_script_security, vet_script};
pub use track_file::{init_track_file, parse_track_file, read_track_file};
