//! `check-config`, `dump-config` and (for now) `run`: the configuration front end's commands.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use keeplb_config::{LoadOptions, Loaded};

use std::num::NonZeroUsize;
use std::sync::Arc;

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

pub(crate) fn load(args: &ConfigArgs, file: &std::path::Path) -> anyhow::Result<Loaded> {
    let options = LoadOptions {
        config_id: args.config_id.clone().unwrap_or_else(default_config_id),
    };
    keeplb_config::load(file, &options).context("loading configuration")
}

fn print_diagnostics(loaded: &Loaded) {
    let _ = std::io::stderr()
        .lock()
        .write_all(render_diagnostics(loaded).as_bytes());
}

/// Every diagnostic of `loaded`, rendered with its snippet, one after the other.
pub(crate) fn render_diagnostics(loaded: &Loaded) -> String {
    loaded
        .diagnostics
        .iter()
        .map(|d| format!("{}\n", d.render(&loaded.sources)))
        .collect()
}

/// Tells systemd (`Type=notify`) how the daemon is doing; nothing outside systemd.
pub(crate) fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("sd_notify: {e}");
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
    let config = Arc::new(loaded.config);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_logs())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // First of all, before anything listens or a stale VIP is removed: a daemon that
    // already runs (holding the control socket) must be left alone. Termination is
    // listened to before, so the daemon stops in order from the moment it answers.
    let (mut termination, control) = {
        let _runtime = runtime.enter();
        (
            crate::termination::Termination::listen()?,
            crate::control_run::bind(&args.control)?,
        )
    };
    let workers = args
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN);
    raise_descriptor_limit();
    let director = crate::lvs_run::Director::start(&config, workers)?;
    let settings = crate::lvs_run::conn_settings(&config.global_defs);
    let (check_results, check_results_rx) = tokio::sync::mpsc::unbounded_channel();
    director.report_checks_to(check_results);
    let board = crate::vrrp_run::StatusBoard::default();
    let sync_view = crate::sync_run::SyncView::default();
    let table = crate::control_run::LiveTable::new(
        director.plane(),
        settings,
        board.clone(),
        sync_view.clone(),
    );
    runtime.block_on(async {
        let http = match args.http {
            Some(address) => {
                Some(crate::control_run::bind_http(address, args.http_token_file.as_deref()).await?)
            }
            None => None,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let fifos = crate::fifo_run::NotifyFifos::open(&config.global_defs);
        director.notify_to(fifos.lvs);
        let (to_director, reloads) = tokio::sync::mpsc::unbounded_channel();
        let (reloader, requests) = crate::reload::channel();
        let (to_vrrp, vrrp_reloads) = tokio::sync::mpsc::unbounded_channel();
        let virtual_servers =
            director.serve(Arc::clone(&config), reloads, until_stopped(stopped.clone()));
        let control = crate::control_run::serve(
            control,
            http,
            table,
            reloader,
            check_results_rx,
            stopped.clone(),
        );
        let (to_sync, sync_reloads) = tokio::sync::mpsc::unbounded_channel();
        let sync = crate::sync_run::serve(
            &config,
            director.plane(),
            board.clone(),
            sync_view,
            sync_reloads,
            until_stopped(stopped.clone()),
        );
        let reload = crate::reload::serve(
            args.config.clone(),
            Arc::clone(&config),
            requests,
            crate::reload::Parts {
                virtual_servers: to_director,
                vrrp: to_vrrp,
                sync: to_sync,
            },
            until_stopped(stopped.clone()),
        );
        let main = async {
            notify_systemd(&[sd_notify::NotifyState::Ready]);
            let result = if config.vrrp_instance.is_empty() {
                // Nobody reads VRRP reloads: a reload that brings instances says they
                // start at the next restart.
                drop(vrrp_reloads);
                let signal = termination.recv().await;
                tracing::info!("{signal}: stopping");
                crate::fifo_run::NotifyFifos::stop_scripts(fifos.scripts).await;
                Ok(())
            } else {
                crate::vrrp_run::run(
                    Arc::clone(&config),
                    &board,
                    vrrp_reloads,
                    fifos.vrrp,
                    fifos.scripts,
                    &mut termination,
                )
                .await
            };
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            let _ = stop.send(true);
            result
        };
        let ((), (), (), (), result) = tokio::join!(virtual_servers, control, reload, sync, main);
        result
    })?;
    drop(director);
    Ok(ExitCode::SUCCESS)
}

/// Whether log lines carry ANSI colours: only on a terminal (the journal and log files
/// would get escape codes), and never when NO_COLOR is set to a non-empty value
/// (<https://no-color.org>, as tracing-subscriber reads it).
fn colour_logs() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    !no_color && std::io::stderr().is_terminal()
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
