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
}

pub(crate) fn run(a: &MeasureArgs) -> ExitCode {
    let tree = LoadedConfig::load(&a.config).and_then(|c| c.tree(env!("CARGO_PKG_VERSION")));
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
