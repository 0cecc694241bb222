//! `enclave-os vault secret|policy|key …`: operate a running instance's vault over its
//! management API (scopes `vault:read`, `vault:write`), after an RA-TLS handshake that checks
//! what runs there.
//!
//! A secret's value is read from a file or from standard input, never from the command line
//! (where `ps` and the shell's history would keep it), and is never printed: the operator writes
//! secrets and cannot read them back.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use enclave_config::vault::{Policy, PolicyDoc};
use enclave_http::Method;
use serde_json::{Value, json};

use crate::mgmt::{Api, Connect, Failure, usage};

#[derive(Args)]
pub(crate) struct VaultCommand {
    #[command(flatten)]
    connect: Connect,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Secrets: kept in the sealed store, released only as a policy allows.
    #[command(subcommand)]
    Secret(SecretAction),
    /// Policies: who may have which secret or key (config leaves: the certificate changes).
    #[command(subcommand)]
    Policy(PolicyAction),
    /// Keys generated inside the TEE; only their public halves leave it.
    #[command(subcommand)]
    Key(KeyAction),
}

#[derive(Subcommand)]
enum SecretAction {
    /// Keep a secret at <repo>/<type>/<tag>, its value from --file or standard input.
    Put {
        /// `<repo>/<type>/<tag>`.
        path: String,
        /// Read the value from this file (else from standard input).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove a secret.
    Delete {
        /// `<repo>/<type>/<tag>`.
        path: String,
    },
    /// The secrets kept (paths and the policies covering them; never values).
    List,
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Put a policy from a TOML file (the body of a `[vault.policy.<name>]` table:
    /// `resources`, `keys`, `[[allow]]` blocks; appraisal policies as paths beside it) or a
    /// JSON policy document.
    Put {
        /// The policy's name.
        name: String,
        /// The policy file (`.toml` or `.json`).
        file: PathBuf,
    },
    /// Remove a policy put through the API.
    Delete {
        /// The policy's name.
        name: String,
    },
    /// The policies in force, with their leaves' hashes.
    List,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Generate a key inside the TEE: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096, aes-256.
    Generate {
        /// The key's name.
        name: String,
        /// Its kind.
        #[arg(long)]
        kind: String,
    },
    /// A key's public half (JWK and PEM).
    Get {
        /// The key's name.
        name: String,
        /// Print the PEM only.
        #[arg(long)]
        pem: bool,
    },
    /// The keys kept.
    List,
    /// Remove a key.
    Delete {
        /// The key's name.
        name: String,
    },
}

/// A secret path as three segments, or why not (checked again by the server).
fn split(path: &str) -> Result<&str, Failure> {
    if path.split('/').count() != 3 || path.split('/').any(str::is_empty) {
        return Err(usage(format!(
            "'{path}' is not <repo>/<type>/<tag> (three segments)"
        )));
    }
    Ok(path)
}

/// The value of a secret: the file's bytes, or standard input's.
fn value(file: Option<&Path>) -> Result<zeroize::Zeroizing<Vec<u8>>, Failure> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    match file {
        Some(p) => {
            *buf = std::fs::read(p).map_err(|e| usage(format!("--file {}: {e}", p.display())))?;
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| usage(format!("standard input: {e}")))?;
        }
    }
    if buf.is_empty() {
        return Err(usage(
            "the secret is empty: give --file, or pipe the value to standard input",
        ));
    }
    Ok(buf)
}

/// A policy file as the API takes it: JSON as it is, TOML with appraisal policies read.
fn policy_doc(file: &Path) -> Result<PolicyDoc, Failure> {
    let text =
        std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    if file.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).map_err(|e| usage(format!("{}: {e}", file.display())));
    }
    let p: Policy<PathBuf> = toml::from_str(&text)
        .map_err(|e| usage(format!("{}: {}", file.display(), e.to_string().trim_end())))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    p.map_appraisal(|i, path| {
        let full = dir.join(path);
        std::fs::read_to_string(&full).map_err(|e| {
            usage(format!(
                "allow[{i}].appraisal_policy {}: {e}",
                full.display()
            ))
        })
    })
}

async fn run_action(c: &VaultCommand, api: &Api) -> Result<Value, Failure> {
    let j = |m, p: String, b| async move { api.json(m, &p, b).await.map(|(_, v)| v) };
    match &c.what {
        What::Secret(SecretAction::Put { path, file }) => {
            let path = split(path)?;
            let body = value(file.as_deref())?;
            let (status, answer) = api
                .call(
                    Method::PUT,
                    &format!("/api/v1/vault/secrets/{path}"),
                    Some(body.to_vec()),
                )
                .await?;
            let v: Value = serde_json::from_slice(&answer).unwrap_or_else(
                |_| json!({ "error": String::from_utf8_lossy(&answer).trim().to_string() }),
            );
            if !status.is_success() {
                return Err(crate::mgmt::refused(format!(
                    "{status}: {}",
                    v["error"].as_str().unwrap_or("refused")
                )));
            }
            Ok(v)
        }
        What::Secret(SecretAction::Delete { path }) => {
            let path = split(path)?;
            j(
                Method::DELETE,
                format!("/api/v1/vault/secrets/{path}"),
                None,
            )
            .await
        }
        What::Secret(SecretAction::List) => {
            j(Method::GET, "/api/v1/vault/secrets".into(), None).await
        }
        What::Policy(PolicyAction::Put { name, file }) => {
            let doc = policy_doc(file)?;
            let body = serde_json::to_vec(&doc).map_err(|e| usage(e.to_string()))?;
            j(
                Method::PUT,
                format!("/api/v1/vault/policies/{name}"),
                Some(body),
            )
            .await
        }
        What::Policy(PolicyAction::Delete { name }) => {
            j(
                Method::DELETE,
                format!("/api/v1/vault/policies/{name}"),
                None,
            )
            .await
        }
        What::Policy(PolicyAction::List) => {
            j(Method::GET, "/api/v1/vault/policies".into(), None).await
        }
        What::Key(KeyAction::Generate { name, kind }) => {
            let body =
                serde_json::to_vec(&json!({ "kind": kind })).map_err(|e| usage(e.to_string()))?;
            j(
                Method::POST,
                format!("/api/v1/vault/keys/{name}"),
                Some(body),
            )
            .await
        }
        What::Key(KeyAction::Get { name, .. }) => {
            j(Method::GET, format!("/api/v1/vault/keys/{name}"), None).await
        }
        What::Key(KeyAction::List) => j(Method::GET, "/api/v1/vault/keys".into(), None).await,
        What::Key(KeyAction::Delete { name }) => {
            j(Method::DELETE, format!("/api/v1/vault/keys/{name}"), None).await
        }
    }
}

fn print_text(c: &VaultCommand, v: &Value) {
    match &c.what {
        What::Secret(SecretAction::Put { .. }) => {
            println!(
                "{}: kept (store version {})",
                v["path"].as_str().unwrap_or(""),
                v["version"]
            );
            if let Some(w) = v["warning"].as_str() {
                eprintln!("warning: {w}");
            }
        }
        What::Secret(SecretAction::List) => {
            for s in v["secrets"].as_array().into_iter().flatten() {
                let by: Vec<&str> = s["covered_by"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{:<40} {}",
                    s["path"].as_str().unwrap_or(""),
                    if by.is_empty() {
                        "(no policy: released to nobody)".to_string()
                    } else {
                        by.join(",")
                    }
                );
            }
        }
        What::Policy(PolicyAction::List) => {
            println!("config root {}", v["config_root"].as_str().unwrap_or(""));
            for p in v["policies"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["value_sha256"].as_str().unwrap_or("")
                );
            }
        }
        What::Policy(_) => println!(
            "{}: done; config root {}",
            v["name"].as_str().unwrap_or(""),
            v["config_root"].as_str().unwrap_or("")
        ),
        What::Key(KeyAction::Get { pem: true, .. }) => {
            print!("{}", v["public_pem"].as_str().unwrap_or(""))
        }
        What::Key(KeyAction::Generate { .. } | KeyAction::Get { .. }) => {
            println!(
                "{} {} kid {}",
                v["name"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or(""),
                v["kid"].as_str().unwrap_or("")
            );
            print!("{}", v["public_pem"].as_str().unwrap_or(""));
        }
        What::Key(KeyAction::List) => {
            for k in v["keys"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<10} {}",
                    k["name"].as_str().unwrap_or(""),
                    k["kind"].as_str().unwrap_or(""),
                    k["kid"].as_str().unwrap_or("")
                );
            }
        }
        What::Secret(SecretAction::Delete { .. }) | What::Key(KeyAction::Delete { .. }) => {
            let n = v["path"].as_str().or(v["name"].as_str()).unwrap_or("");
            println!("{n}: deleted");
        }
    }
}

pub(crate) fn run(c: VaultCommand) -> ExitCode {
    let c = &c;
    let outcome = crate::mgmt::execute(&c.connect, |api| async move { run_action(c, &api).await });
    crate::mgmt::finish(c.connect.json, outcome, |v| print_text(c, v))
}
