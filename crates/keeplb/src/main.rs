//! keeplb: one binary for VRRP failover, IPVS-style load balancing and health checks,
//! driven by an unmodified keepalived.conf.

mod config_cmd;
mod demo;
mod lvs_run;
mod vrrp_run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// keepalived's default configuration path.
const DEFAULT_CONFIG: &str = "/etc/keepalived/keepalived.conf";

#[derive(Parser, Debug)]
#[command(name = "keeplb", version, about = "High-availability load balancer that runs keepalived.conf", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a configuration as `keepalived -t` does: exit 0 when valid (warnings allowed).
    CheckConfig(CheckArgs),
    /// Print the resolved configuration as JSON with keepalived's keyword names.
    DumpConfig(ConfigArgs),
    /// Load the configuration and run what it describes in the foreground.
    Run(RunArgs),
    /// Show a VRRP failover in network namespaces on this machine (needs root and iproute2).
    Demo(DemoArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Configuration file (keepalived's -f).
    #[arg(short = 'f', long = "use-file", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    file: PathBuf,
    /// Configuration id selecting `@id` lines (keepalived's -i; default: short host name).
    #[arg(short = 'i', long = "config-id", value_name = "ID")]
    config_id: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Data-plane worker threads serving the virtual servers (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<std::num::NonZeroUsize>,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Advertisement interval of the demo's instances, in seconds.
    #[arg(long, default_value = "1")]
    advert_int: String,
    /// VRRP version (2 or 3; sub-second intervals need 3).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    vrrp_version: u8,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Configuration file, as an alternative to -f.
    #[arg(value_name = "FILE", conflicts_with = "file")]
    positional_file: Option<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig(args) => config_cmd::check_config(&args),
        Command::DumpConfig(args) => config_cmd::dump_config(&args),
        Command::Run(args) => config_cmd::run(&args),
        Command::Demo(args) => {
            demo::run(&args.advert_int, args.vrrp_version).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keeplb: {e:#}");
            ExitCode::FAILURE
        }
    }
}
