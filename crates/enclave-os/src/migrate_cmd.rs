//! `enclave-os migrate`: move measurement-sealed state to a new build (see docs/sealing.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use enclave_config::LoadedConfig;
use enclave_runtime::{Overrides, migrate};
use serde_json::json;

use crate::{EXIT_REJECTED, EXIT_USAGE};

#[derive(Args)]
pub(crate) struct Common {
    /// The configuration file.
    config: PathBuf,
    /// The state directory, instead of the file's `state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum MigrateCommand {
    /// Print this build's measurement on the configured TEE (run with the new build).
    Measurement(Common),
    /// Seal this build's secrets for the new build with measurement --to (run with the old build).
    Export {
        #[command(flatten)]
        common: Common,
        /// The new build's measurement, hex.
        #[arg(long)]
        to: String,
    },
    /// Take the secrets exported to this build and seal them to it (run with the new build).
    Import(Common),
}

fn finish(c: &Common, result: Result<serde_json::Value, (u8, String)>) -> ExitCode {
    match result {
        Ok(v) => {
            if c.json {
                println!("{v}");
            } else if let Some(m) = v["message"].as_str() {
                println!("{m}");
            }
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            if c.json {
                println!("{}", json!({ "error": e }));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(code)
        }
    }
}

fn load(c: &Common) -> Result<(LoadedConfig, Overrides), (u8, String)> {
    let config = LoadedConfig::load(&c.config).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    Ok((
        config,
        Overrides {
            listen: None,
            state_dir: c.state_dir.clone(),
        },
    ))
}

pub(crate) fn run(cmd: MigrateCommand) -> ExitCode {
    match cmd {
        MigrateCommand::Measurement(c) => {
            let r = load(&c).and_then(|(config, o)| {
                let m =
                    migrate::measurement(&config, &o).map_err(|e| (EXIT_USAGE, e.to_string()))?;
                Ok(json!({ "measurement": hex::encode(&m), "message": hex::encode(&m) }))
            });
            finish(&c, r)
        }
        MigrateCommand::Export { common, to } => {
            let r = load(&common).and_then(|(config, o)| {
                let to = hex::decode(to.trim())
                    .map_err(|_| (EXIT_USAGE, format!("--to: '{to}' is not hex")))?;
                let out = migrate::export(&config, &o, &to)
                    .map_err(|e| (EXIT_REJECTED, e.to_string()))?;
                Ok(json!({
                    "envelope": out.display().to_string(),
                    "message": format!(
                        "exported to {}; now run `enclave-os migrate import` with the new build",
                        out.display()
                    ),
                }))
            });
            finish(&common, r)
        }
        MigrateCommand::Import(c) => {
            let r = load(&c).and_then(|(config, o)| {
                migrate::import(&config, &o).map_err(|e| (EXIT_REJECTED, e.to_string()))?;
                Ok(json!({
                    "imported": true,
                    "message": "imported: the state is now sealed to this build",
                }))
            });
            finish(&c, r)
        }
    }
}
