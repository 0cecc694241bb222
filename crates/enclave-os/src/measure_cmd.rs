//! `enclave-os measure CONFIG`: the config root, computed offline, so it can be pinned.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use enclave_config::LoadedConfig;
use serde_json::json;

use crate::EXIT_USAGE;

#[derive(Args)]
pub(crate) struct MeasureArgs {
    /// The configuration file (enclave.toml).
    config: PathBuf,
    /// Print JSON (the manifest: root, and every leaf's name and hashes).
    #[arg(long)]
    json: bool,
    /// The JWKS bytes fetched from the configuration's `oidc.jwks_url` (the tree commits them;
    /// a runtime fetches them at start). Not used with `jwks_file`, whose content is committed.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
}

/// The configuration, with the fetched JWKS of `--jwks` when given.
fn load(a: &MeasureArgs) -> Result<LoadedConfig, String> {
    let c = LoadedConfig::load(&a.config).map_err(|e| e.to_string())?;
    let Some(path) = &a.jwks else { return Ok(c) };
    if c.config
        .oidc
        .as_ref()
        .and_then(|o| o.jwks_url.as_ref())
        .is_none()
    {
        return Err(format!(
            "--jwks {}: the configuration has no oidc.jwks_url; a jwks_file's content is committed as it is",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("--jwks {}: {e}", path.display()))?;
    c.with_jwks(bytes).map_err(|e| e.to_string())
}

pub(crate) fn run(a: &MeasureArgs) -> ExitCode {
    let tree = load(a).and_then(|c| c.tree(env!("CARGO_PKG_VERSION")).map_err(|e| e.to_string()));
    match tree {
        Ok(tree) => {
            if a.json {
                println!("{}", json!(tree.manifest()));
            } else {
                println!("config root: {}", hex::encode(tree.root()));
                for leaf in tree.leaves() {
                    println!("  {:<32} {}", leaf.name, hex::encode(leaf.value_hash));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if a.json {
                println!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}
