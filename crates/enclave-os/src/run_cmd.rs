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
    };
    let runtime = match Runtime::prepare(config, &overrides) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if runtime.tee().simulated() {
        eprintln!(
            "enclave-os: simulated TEE; clients verify with --trust-sim {} --root {}",
            runtime.state_dir.join("sim").display(),
            runtime.ca_root.display()
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
