//! What keepalived's VRRP and health-check sides share: running scripts (notify,
//! `vrrp_script`, MISC_CHECK), reading `track_file`s, and writing notify FIFOs.

mod command;
mod fifo;
mod track_file;

pub use command::{
    CommandError, RunOutcome, ScriptCommand, run_command, spawn_in_group, split_command,
};
pub use fifo::FifoWriter;
pub use track_file::{init_track_file, parse_track_file, read_track_file};
