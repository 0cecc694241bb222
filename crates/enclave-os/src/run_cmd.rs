//! `enclave-os run enclave.toml`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use enclave_config::LoadedConfig;
use enclave_runtime::{Overrides, Runtime};

use crate::{EXIT_REJECTED, EXIT_USAGE};

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The configuration file.
    config: PathBuf,
    /// Listen here instead of the file's first `listen` address.
    #[arg(long)]
    listen: Option<String>,
    /// Keep state here instead of the file's `state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log lines as text or as JSON objects (one per line). The level comes from
    /// `ENCLAVE_OS_LOG` (default `info`), in `tracing` filter syntax.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENCLAVE_OS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // Another subscriber already set (in-process tests) is not an error.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub(crate) fn run(a: &RunArgs) -> ExitCode {
    init_logs(a.log_format);
    let config = match LoadedConfig::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let overrides = Overrides {
        listen: a.listen.clone(),
        state_dir: a.state_dir.clone(),
        // This very binary is a log driver for containerd (`log_driver`).
        log_driver: std::env::current_exe().ok(),
    };
    let runtime = match Runtime::prepare(config, &overrides) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(if e.refuses_state() {
                crate::EXIT_ROLLBACK
            } else {
                EXIT_USAGE
            });
        }
    };
    if runtime.tee().simulated() {
        tracing::warn!(
            trust_sim = %runtime.state_dir.join("sim").display(),
            root = %runtime.ca_root.display(),
            "SIMULATED TEE: nothing here is hardware-protected; clients verify with --trust-sim and --root"
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_REJECTED);
        }
    };
    match rt.block_on(runtime.serve(shutdown_signal(), Duration::from_secs(10))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_REJECTED)
        }
    }
}
