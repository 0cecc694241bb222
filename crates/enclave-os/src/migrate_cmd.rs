//! `enclave-os migrate`: move measurement-sealed state to a build the operator authorized (see
//! docs/sealing.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use enclave_config::LoadedConfig;
use enclave_runtime::{Overrides, migrate};
use serde_json::json;

use crate::{EXIT_REJECTED, EXIT_USAGE};

/// What the commands that open sealed state share (`migrate`, `store`).
#[derive(Args)]
pub(crate) struct Common {
    /// The configuration file (its TEE and seal policy unseal the state).
    pub config: PathBuf,
    /// The state directory, instead of the file's `state_dir`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub(crate) enum MigrateCommand {
    /// Print this build's measurement and security version on the configured TEE (run with the
    /// new build): what an authorization names as the target.
    Measurement(Common),
    /// Print the store id, this build's security version and the pinned operator root (run with
    /// the old build): what an authorization must name and who must sign it.
    Source(Common),
    /// Sign a migration authorization with the operator root key (run by the operator, offline).
    Authorize {
        /// The operator root key (PKCS#8 PEM, `root.key.pem` from `enclave-os ca init`).
        #[arg(long)]
        root_key: PathBuf,
        /// The operator root certificate (`root.crt.pem`): the key must be its key.
        #[arg(long)]
        root_cert: PathBuf,
        /// The store whose secrets may move, hex (from `migrate source`).
        #[arg(long)]
        store: String,
        /// The build that may receive them, hex (from `migrate measurement` with that build).
        #[arg(long)]
        target_measurement: String,
        /// That build's security version (SGX ISVSVN): it must be exactly this.
        #[arg(long)]
        svn: u32,
        /// How long the authorization holds, hours.
        #[arg(long, default_value_t = 24)]
        valid_hours: u64,
        /// Where to write the authorization (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Seal this build's secrets for the build an operator's authorization names (run with the
    /// old build).
    Export {
        #[command(flatten)]
        common: Common,
        /// The authorization from `migrate authorize`.
        #[arg(long)]
        authorization: PathBuf,
    },
    /// Take the secrets exported to this build and seal them to it (run with the new build).
    Import(Common),
}

/// Print `result` (its `message`, or all of it as JSON) and give the exit status.
pub(crate) fn finish(json_out: bool, result: Result<serde_json::Value, (u8, String)>) -> ExitCode {
    match result {
        Ok(v) => {
            if json_out {
                println!("{v}");
            } else if let Some(m) = v["message"].as_str() {
                println!("{m}");
            }
            ExitCode::SUCCESS
        }
        Err((code, e)) => {
            if json_out {
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
            log_driver: None,
        },
    ))
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, (u8, String)> {
    std::fs::read(path).map_err(|e| (EXIT_USAGE, format!("{what} {}: {e}", path.display())))
}

struct AuthorizeArgs {
    root_key: PathBuf,
    root_cert: PathBuf,
    store: String,
    target_measurement: String,
    svn: u32,
    valid_hours: u64,
    out: PathBuf,
}

fn authorize(a: AuthorizeArgs) -> Result<serde_json::Value, (u8, String)> {
    let usage = |e: String| (EXIT_USAGE, e);
    let source_store = hex::decode(a.store.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| {
            usage(format!(
                "--store: '{}' is not a store id (32 hex digits)",
                a.store
            ))
        })?;
    let target_measurement = hex::decode(a.target_measurement.trim())
        .ok()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "--target-measurement: '{}' is not hex",
                a.target_measurement
            ))
        })?;
    if a.valid_hours == 0 || a.valid_hours > 24 * 366 {
        return Err(usage(format!(
            "--valid-hours: {} is not between 1 and {}",
            a.valid_hours,
            24 * 366
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| usage("the system clock is before 1970".into()))?
        .as_secs();
    let statement = migrate::Statement {
        source_store,
        target_measurement,
        target_svn: a.svn,
        expires: now + a.valid_hours * 3600,
    };
    let key = zeroize::Zeroizing::new(read(&a.root_key, "--root-key")?);
    let cert = read(&a.root_cert, "--root-cert")?;
    let auth = migrate::sign(&key, &cert, &statement).map_err(|e| (EXIT_REJECTED, e))?;
    let text = serde_json::to_vec_pretty(&auth).map_err(|e| usage(e.to_string()))?;
    std::fs::write(&a.out, text).map_err(|e| usage(format!("--out {}: {e}", a.out.display())))?;
    Ok(json!({
        "authorization": a.out.display().to_string(),
        "target_measurement": auth.target_measurement,
        "target_svn": auth.target_svn,
        "source_store": auth.source_store,
        "expires": auth.expires,
        "message": format!(
            "authorized store {} to move to measurement {} at security version {} until {} (unix \
             seconds); wrote {}",
            auth.source_store, auth.target_measurement, auth.target_svn, auth.expires,
            a.out.display()
        ),
    }))
}

pub(crate) fn run(cmd: MigrateCommand) -> ExitCode {
    match cmd {
        MigrateCommand::Measurement(c) => {
            let r = load(&c).and_then(|(config, o)| {
                let b =
                    migrate::measurement(&config, &o).map_err(|e| (EXIT_USAGE, e.to_string()))?;
                let svn = b
                    .svn
                    .map_or_else(|| "none reported".to_string(), |s| s.to_string());
                Ok(json!({
                    "measurement": b.measurement,
                    "svn": b.svn,
                    "message": format!("measurement {}\nsecurity version {svn}", b.measurement),
                }))
            });
            finish(c.json, r)
        }
        MigrateCommand::Source(c) => {
            let r = load(&c).and_then(|(config, o)| {
                let s = migrate::source(&config, &o).map_err(|e| (EXIT_REJECTED, e.to_string()))?;
                let mut v = serde_json::to_value(&s).map_err(|e| (EXIT_USAGE, e.to_string()))?;
                v["message"] = json!(format!(
                    "store {}\nmeasurement {}\nsecurity version {}\noperator root SHA-256 {}",
                    s.store, s.measurement, s.svn, s.operator_root_sha256
                ));
                Ok(v)
            });
            finish(c.json, r)
        }
        MigrateCommand::Authorize {
            root_key,
            root_cert,
            store,
            target_measurement,
            svn,
            valid_hours,
            out,
            json,
        } => finish(
            json,
            authorize(AuthorizeArgs {
                root_key,
                root_cert,
                store,
                target_measurement,
                svn,
                valid_hours,
                out,
            }),
        ),
        MigrateCommand::Export {
            common,
            authorization,
        } => {
            let r = load(&common).and_then(|(config, o)| {
                let text = read(&authorization, "--authorization")?;
                let auth: migrate::Authorization = serde_json::from_slice(&text).map_err(|e| {
                    (
                        EXIT_USAGE,
                        format!(
                            "--authorization {}: not a migration authorization ({e})",
                            authorization.display()
                        ),
                    )
                })?;
                let out = migrate::export(&config, &o, &auth)
                    .map_err(|e| (EXIT_REJECTED, e.to_string()))?;
                Ok(json!({
                    "envelope": out.display().to_string(),
                    "to": auth.target_measurement,
                    "message": format!(
                        "exported to {}; now run `enclave-os migrate import` with the new build",
                        out.display()
                    ),
                }))
            });
            finish(common.json, r)
        }
        MigrateCommand::Import(c) => {
            let r = load(&c).and_then(|(config, o)| {
                migrate::import(&config, &o).map_err(|e| (EXIT_REJECTED, e.to_string()))?;
                Ok(json!({
                    "imported": true,
                    "message": "imported: the state is now sealed to this build",
                }))
            });
            finish(c.json, r)
        }
    }
}
