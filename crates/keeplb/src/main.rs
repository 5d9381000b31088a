//! keeplb: one binary for VRRP failover, IPVS-style load balancing and health checks,
//! driven by an unmodified keepalived.conf.

mod adm_cmd;
mod config_cmd;
mod control_run;
mod demo;
mod fifo_run;
mod genhash_cmd;
mod health_book;
mod lvs_run;
mod reload;
mod status_cmd;
mod sync_run;
mod termination;
#[cfg(test)]
mod test_config;
mod vrrp_run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// keepalived's default configuration path.
const DEFAULT_CONFIG: &str = "/etc/keepalived/keepalived.conf";

/// Where `keeplb run` serves its control socket unless told otherwise.
const DEFAULT_CONTROL_PATH: &str = keeplb_control::socket::DEFAULT_CONTROL_PATH;

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
    /// Administer the running daemon's virtual services with ipvsadm's command line
    /// (`keeplb adm -Ln`, `keeplb adm -A -t VIP:PORT -s rr`, …).
    Adm(AdmArgs),
    /// Show every virtual service with its real servers, weights and counters.
    Status(StatusArgs),
    /// Make the running daemon read its configuration again (as SIGHUP does); an invalid
    /// file is reported and changes nothing.
    Reload(ControlArgs),
    /// Print the MD5 digest of a URL for HTTP_GET/SSL_GET, as keepalived's genhash
    /// (-s ADDR -p PORT -u URL [-S] [-I] [-V VHOST] [-P 1.0|1.0c|1.1] [-t SECS] [-m MARK] [-v]).
    Genhash(ForeignArgs),
}

/// The words of a foreign command line (ipvsadm's, genhash's), passed on untouched:
/// their own `-h` included.
#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct ForeignArgs {
    /// The tool's arguments, as it takes them (`-h` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

#[derive(Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct AdmArgs {
    /// Control socket of the daemon (before ipvsadm's arguments).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    control: PathBuf,
    #[command(flatten)]
    ipvsadm: ForeignArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    control: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    control: PathBuf,
    /// Print the daemon's JSON status instead of a table.
    #[arg(long)]
    json: bool,
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
    /// Control socket serving `keeplb adm` and `keeplb status` (created mode 0600). If a
    /// daemon already holds it (a lock on PATH.lock, or it answers there), keeplb is
    /// already running: this one exits with an error and touches nothing.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_PATH)]
    control: PathBuf,
    /// Also serve the control API (`POST /api`) and Prometheus metrics (`GET /metrics`)
    /// over HTTP on this address (off by default). Without --http-token-file it only binds
    /// loopback and is read-only (status, listings, metrics): requests that change
    /// anything get 403.
    #[arg(long, value_name = "ADDR:PORT")]
    http: Option<std::net::SocketAddr>,
    /// File holding the bearer token every HTTP request must then carry
    /// (`Authorization: Bearer TOKEN`); with it the HTTP API may change the balancer
    /// (adm commands, reload) and bind any address.
    #[arg(long, value_name = "FILE", requires = "http")]
    http_token_file: Option<PathBuf>,
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
        Command::Adm(args) => adm_cmd::run(&args.control, &args.ipvsadm.args),
        Command::Status(args) => status_cmd::run(&args.control, args.json),
        Command::Reload(args) => status_cmd::reload(&args.control),
        Command::Genhash(args) => genhash_cmd::run(&args.args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keeplb: {e:#}");
            ExitCode::FAILURE
        }
    }
}
