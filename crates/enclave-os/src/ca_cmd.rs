//! `enclave-os ca init`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use crate::EXIT_USAGE;

#[derive(Subcommand)]
pub(crate) enum CaCommand {
    /// Create the operator's root CA and an intermediary CA (ECDSA P-256). The runtime imports
    /// the intermediary once and seals it; keep the root key offline.
    Init {
        /// Directory to write root.{crt,key}.pem and intermediary.{crt,key}.pem into.
        #[arg(long)]
        out: PathBuf,
        /// Organisation named in the certificates.
        #[arg(long, default_value = "Enclave OS Operator")]
        org: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: CaCommand) -> ExitCode {
    let CaCommand::Init { out, org, json } = cmd;
    match enclave_ratls::ca::init(&out, &org) {
        Ok(files) => {
            if json {
                println!("{}", json!(files));
            } else {
                println!(
                    "root CA:          {} (SHA-256 {})",
                    files.root_cert.display(),
                    files.root_sha256
                );
                println!(
                    "root key:         {}  <- keep offline",
                    files.root_key.display()
                );
                println!("intermediary CA:  {}", files.intermediary_cert.display());
                println!(
                    "intermediary key: {}  <- give to the runtime once; it seals it",
                    files.intermediary_key.display()
                );
                println!(
                    "valid for {} years (root) and {} years (intermediary)",
                    enclave_ratls::ca::ROOT_YEARS,
                    enclave_ratls::ca::INTERMEDIARY_YEARS
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("error: ca init: {e}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}
