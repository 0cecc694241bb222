//! `enclave-os workload list|load|unload|logs`: operate a running instance's workloads over
//! its management API, after an RA-TLS handshake that checks what runs there.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Subcommand};
use enclave_config::file::{Run, Workload};
use enclave_http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::mgmt::{Api, Connect, Failure, refused, usage};

#[derive(Args)]
pub(crate) struct WorkloadCommand {
    #[command(flatten)]
    connect: Connect,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// The workloads served, with their kind, health and code digest.
    List,
    /// Load (or replace) a workload from a TOML file holding one `[workload]` table, as in
    /// enclave.toml. A container's image is pulled and verified inside the TEE; progress is
    /// shown until it serves or is refused.
    Load {
        /// The workload file.
        file: PathBuf,
        /// Return once the runtime accepted the load, without waiting for the container.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for a container to serve, seconds.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Unload a workload loaded through the API.
    Unload {
        /// Its name.
        name: String,
    },
    /// The tail of a container or process workload's log.
    Logs {
        /// Its name.
        name: String,
        /// At most this many bytes from the end.
        #[arg(long, default_value_t = 65536)]
        tail_bytes: usize,
    },
}

/// What `load` sends: the workload file's one `[workload]` table, its code inline.
fn load_body(file: &std::path::Path) -> Result<(String, Value), Failure> {
    let text =
        std::fs::read_to_string(file).map_err(|e| usage(format!("{}: {e}", file.display())))?;
    let bad =
        |e: toml::de::Error| usage(format!("{}: {}", file.display(), e.to_string().trim_end()));
    let mut doc: toml::Table = toml::from_str(&text).map_err(bad)?;
    if let Some(other) = doc.keys().find(|k| *k != "workload") {
        return Err(usage(format!(
            "{}: '{other}' is not expected: the file holds one [workload] table",
            file.display()
        )));
    }
    let w: Workload = doc
        .remove("workload")
        .ok_or_else(|| usage(format!("{}: no [workload] table", file.display())))?
        .try_into()
        .map_err(bad)?;
    w.check(true)
        .map_err(|(field, why)| usage(format!("{}: workload.{field}: {why}", file.display())))?;
    // The API takes no gate yet: sent without it, the workload would be served to anyone.
    if w.ingress.is_some() {
        return Err(usage(format!(
            "{}: workload.ingress: gates are set in enclave.toml only; a workload loaded through the API cannot have one yet",
            file.display()
        )));
    }
    let mut body = json!({
        "kind": w.run.kind(),
        "hostnames": w.hostnames,
        "env": w.env,
        "args": w.args,
        "limits": w.limits,
    });
    if let Some(key) = &w.decryption_key {
        body["decryption_key"] = json!(key);
    }
    match &w.run {
        Run::Container { image, settings } => {
            body["image"] = json!(image);
            body["container"] = json!(settings);
        }
        other => {
            let source = other.source().unwrap_or(std::path::Path::new(""));
            let path = file
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(source);
            let code = std::fs::read(&path)
                .map_err(|e| usage(format!("workload.source {}: {e}", path.display())))?;
            body["code_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(code));
            if let Run::Process { settings, .. } = other {
                body["process"] = json!(settings);
            }
        }
    }
    Ok((w.name, body))
}

/// A one-line progress bar for a preparation, redrawn in place on a terminal.
fn draw(p: &Value, tty: bool) {
    let stage = p["stage"].as_str().unwrap_or("?");
    let (mut got, mut total) = (0u64, 0u64);
    let layers = p["layers"].as_array().cloned().unwrap_or_default();
    for l in &layers {
        let size = l["size"].as_u64().unwrap_or(0);
        got += l["received"].as_u64().unwrap_or(0).min(size);
        total += size;
    }
    let width = 30usize;
    let filled = got
        .saturating_mul(width as u64)
        .checked_div(total)
        .map_or(0, |f| usize::try_from(f).unwrap_or(width));
    let line = format!(
        "{stage:<10} [{}{}] {:>7.1}/{:.1} MiB, {} layer(s)",
        "#".repeat(filled.min(width)),
        " ".repeat(width - filled.min(width)),
        got as f64 / 1048576.0,
        total as f64 / 1048576.0,
        layers.len()
    );
    let mut err = std::io::stderr();
    if tty {
        let _ = write!(err, "\r{line}");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

async fn run_action(c: &WorkloadCommand, api: &Api) -> Result<Value, Failure> {
    match &c.action {
        Action::List => Ok(api.json(Method::GET, "/api/v1/workloads", None).await?.1),
        Action::Unload { name } => Ok(api
            .json(Method::DELETE, &format!("/api/v1/workloads/{name}"), None)
            .await?
            .1),
        Action::Logs { name, tail_bytes } => {
            let (status, body) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/workloads/{name}/logs?tail_bytes={tail_bytes}"),
                    None,
                )
                .await?;
            let text = String::from_utf8_lossy(&body).into_owned();
            if !status.is_success() {
                return Err(refused(format!("{status}: {text}")));
            }
            Ok(json!({ "name": name, "log": text }))
        }
        Action::Load {
            file,
            no_wait,
            wait_secs,
        } => {
            let (name, body) = load_body(file)?;
            let body = serde_json::to_vec(&body).map_err(|e| usage(e.to_string()))?;
            let (status, answer) = api
                .json(
                    Method::PUT,
                    &format!("/api/v1/workloads/{name}"),
                    Some(body),
                )
                .await?;
            if status != StatusCode::ACCEPTED || *no_wait {
                return Ok(answer);
            }
            // A container: follow its preparation until it serves or is refused.
            let tty = !c.connect.json && std::io::stderr().is_terminal();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(*wait_secs);
            loop {
                let (_, p) = api
                    .json(
                        Method::GET,
                        &format!("/api/v1/workloads/{name}/progress"),
                        None,
                    )
                    .await?;
                if !c.connect.json {
                    draw(&p, tty);
                }
                match p["stage"].as_str() {
                    Some("ready") => {
                        if tty {
                            eprintln!();
                        }
                        return Ok(p);
                    }
                    Some("failed") => {
                        if tty {
                            eprintln!();
                        }
                        return Err(refused(format!(
                            "workload '{name}' was refused: {}",
                            p["reason"].as_str().unwrap_or("no reason given")
                        )));
                    }
                    _ => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(refused(format!(
                        "workload '{name}' did not serve within {wait_secs}s (stage {}); it may still",
                        p["stage"]
                    )));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

fn print_text(c: &WorkloadCommand, v: &Value) {
    match &c.action {
        Action::List => {
            let empty = Vec::new();
            let list = v["workloads"].as_array().unwrap_or(&empty);
            println!(
                "{:<20} {:<10} {:<12} {:<16} HOSTNAMES",
                "NAME", "KIND", "HEALTH", "CODE"
            );
            for w in list {
                let code = w["code_sha256"].as_str().unwrap_or("");
                println!(
                    "{:<20} {:<10} {:<12} {:<16} {}",
                    w["name"].as_str().unwrap_or(""),
                    w["kind"].as_str().unwrap_or(""),
                    w["health"].as_str().unwrap_or(""),
                    &code[..code.len().min(16)],
                    w["hostnames"]
                        .as_array()
                        .map(|h| h
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                );
            }
        }
        Action::Logs { .. } => print!("{}", v["log"].as_str().unwrap_or("")),
        Action::Load { .. } | Action::Unload { .. } => {
            let name = v["name"].as_str().or(v["workload"].as_str()).unwrap_or("");
            match v["config_root"].as_str() {
                Some(root) => println!("{name}: done; config root {root}"),
                None => println!("{name}: {}", v["stage"].as_str().unwrap_or("accepted")),
            }
        }
    }
}

pub(crate) fn run(c: WorkloadCommand) -> ExitCode {
    let c = &c;
    let outcome = crate::mgmt::execute(&c.connect, |api| async move { run_action(c, &api).await });
    crate::mgmt::finish(c.connect.json, outcome, |v| print_text(c, v))
}
