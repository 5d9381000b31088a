//! `check-config`, `dump-config` and (for now) `run`: the configuration front end's commands.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use keeplb_config::{LoadOptions, Loaded};

use std::num::NonZeroUsize;

use crate::{CheckArgs, ConfigArgs, RunArgs};

/// Exit status of `check-config` for an invalid configuration.
const EXIT_INVALID: u8 = 1;

/// keepalived's default for `-i`: the host name up to the first dot.
fn default_config_id() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn load(args: &ConfigArgs, file: &std::path::Path) -> anyhow::Result<Loaded> {
    let options = LoadOptions {
        config_id: args.config_id.clone().unwrap_or_else(default_config_id),
    };
    keeplb_config::load(file, &options).context("loading configuration")
}

fn print_diagnostics(loaded: &Loaded) {
    let mut stderr = std::io::stderr().lock();
    for diagnostic in loaded.diagnostics.iter() {
        let _ = write!(stderr, "{}", diagnostic.render(&loaded.sources));
        let _ = writeln!(stderr);
    }
}

pub fn check_config(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let file = args.positional_file.as_ref().unwrap_or(&args.config.file);
    let mut loaded = load(&args.config, file)?;
    if args.strict {
        loaded.diagnostics.escalate_warnings();
    }
    print_diagnostics(&loaded);
    let errors = loaded.diagnostics.error_count();
    let warnings = loaded.diagnostics.warning_count();
    let notes = loaded.diagnostics.note_count();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if errors == 0 {
        eprintln!(
            "{}: configuration is valid ({}, {})",
            file.display(),
            plural(warnings, "warning"),
            plural(notes, "note")
        );
        if warnings > 0 {
            eprintln!(
                "  keepalived -t would reject it for the warnings; --strict gives its verdict"
            );
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{}: configuration is invalid ({}, {})",
            file.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        );
        Ok(ExitCode::from(EXIT_INVALID))
    }
}

pub fn dump_config(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(args, &args.file)?;
    print_diagnostics(&loaded);
    if !loaded.is_valid() {
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let json = serde_json::to_string_pretty(&loaded.config).context("serialising the model")?;
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let file = &args.config.file;
    let loaded = load(&args.config, file)?;
    print_diagnostics(&loaded);
    if !loaded.is_valid() {
        eprintln!("{}: configuration is invalid; not starting", file.display());
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    let config = &loaded.config;
    if config.vrrp_instance.is_empty() && config.virtual_server.is_empty() {
        eprintln!("keeplb: nothing this build can serve; exiting");
        return Ok(ExitCode::SUCCESS);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let workers = args
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN);
    raise_descriptor_limit();
    let director = crate::lvs_run::Director::start(config, workers)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let checks = async {
            if let Some(director) = &director {
                let mut stopped = stopped.clone();
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                director.run_checks(config, shutdown).await;
            }
        };
        let main = async {
            let result = if config.vrrp_instance.is_empty() {
                wait_for_termination().await
            } else {
                crate::vrrp_run::run(config).await
            };
            let _ = stop.send(true);
            result
        };
        let ((), result) = tokio::join!(checks, main);
        result
    })?;
    drop(director);
    Ok(ExitCode::SUCCESS)
}

/// Lifts the soft limit on open descriptors to the hard limit: every proxied
/// connection holds two, and the usual soft limit (1024) is far too low.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}");
    }
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
    Ok(())
}
