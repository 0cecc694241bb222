//! `enclave-os verify https://HOST:PORT`: an RA-TLS handshake that checks what runs there.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use enclave_evidence::{Policy, time};
use enclave_ratls::RatlsVerifier;
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config, io_rejection};
use enclave_ratls::trust::TrustFiles;
use ring::rand::SecureRandom;
use serde_json::json;

use crate::{EXIT_REJECTED, EXIT_USAGE, render};

/// How the server's evidence is made fresh.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Mode {
    /// The server's cached certificate, bound to its own notBefore.
    Deterministic,
    /// A fresh certificate bound to a nonce this client sends in the handshake.
    Challenge,
    /// After the handshake, evidence fetched over the connection, bound to its TLS exporter.
    Channel,
}

#[derive(Args)]
pub(crate) struct VerifyUrlArgs {
    /// The server: https://HOST:PORT.
    url: String,
    /// The operator's root CA (PEM): the server's chain must lead to it. Without it the chain is
    /// not checked, and the report says so.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Appraisal policy (TOML): measurements, TCB, debug, simulation.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The config Merkle root the server must certify (hex), as `enclave-os measure` computes it.
    #[arg(long)]
    config_root: Option<String>,
    /// Freshness mode.
    #[arg(long, value_enum, default_value = "deterministic")]
    mode: Mode,
    /// Trust this simulation root (a simulation directory or its root.crt.pem).
    #[arg(long)]
    trust_sim: Option<PathBuf>,
    /// DCAP collateral (JSON) to appraise the server's TCB with; for a simulation directory it
    /// is read from there. Without it the TCB status is Unknown.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// The server name to ask for (SNI) and to check the certificate against, when it differs
    /// from the URL's host: a workload's hostname gets the workload's own certificate. Either
    /// way the certificate must be valid for the name (a DNS name, or an IP address, among its
    /// subjectAltNames).
    #[arg(long)]
    server_name: Option<String>,
    /// Seconds to wait for the connection and the handshake.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn usage(msg: String, json_out: bool) -> ExitCode {
    if json_out {
        println!("{}", json!({ "verified": false, "error": msg }));
    } else {
        eprintln!("error: {msg}");
    }
    ExitCode::from(EXIT_USAGE)
}

fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("'{url}' is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().map_err(|_| format!("'{p}' is not a port"))?,
        ),
        _ => (authority.to_string(), 443),
    };
    if host.is_empty() {
        return Err(format!("'{url}' names no host"));
    }
    Ok((host, port))
}

fn build(a: &VerifyUrlArgs) -> Result<(RatlsVerifier, Freshness, Option<Vec<u8>>), String> {
    let mut v = TrustFiles {
        root: a.root.clone(),
        trust_sim: a.trust_sim.clone(),
        collateral: a.collateral.clone(),
    }
    .verifier()?;
    if let Some(p) = &a.policy {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("policy {}: {e}", p.display()))?;
        v = v.with_policy(
            Policy::from_toml(&text, &p.display().to_string()).map_err(|e| e.to_string())?,
        );
    }
    if let Some(h) = &a.config_root {
        let root: [u8; 32] = hex::decode(h.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("--config-root: '{h}' is not 32 bytes of hex"))?;
        v = v.with_config_root(root);
    }
    let (freshness, nonce) = match a.mode {
        // The certificate itself is deterministic; the channel evidence comes after.
        Mode::Deterministic | Mode::Channel => (Freshness::Deterministic, None),
        Mode::Challenge => {
            let mut n = [0u8; 32];
            ring::rand::SystemRandom::new()
                .fill(&mut n)
                .map_err(|_| "the system random generator failed".to_string())?;
            (Freshness::Nonce(n.to_vec()), Some(n.to_vec()))
        }
    };
    Ok((v, freshness, nonce))
}

/// What a channel-bound request brought back: the server's leaf, the exporter, the body.
type Channel = (Vec<u8>, [u8; 32], Vec<u8>);

/// The largest attestation response read.
const MAX_RESPONSE: usize = 1 << 20;

/// Why a connection did not give a verified report.
enum Failure {
    /// The RA-TLS checks refused the server's certificate: the reason.
    Rejected(String),
    /// No handshake took place (connection, TLS).
    NoHandshake(String),
    /// The certificate verified, and what came after failed.
    After(String),
}

/// Connect and complete the handshake, and read back this connection's report; in channel mode,
/// then fetch the evidence bound to this connection.
fn handshake(
    host: &str,
    port: u16,
    config: rustls::ClientConfig,
    verifier: &RatlsServerVerifier,
    timeout: Duration,
    request: Option<&str>,
    sni: Option<&str>,
) -> Result<(enclave_ratls::Report, Option<Channel>), Failure> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| Failure::NoHandshake(format!("{host}:{port}: {e}")))?
        .next()
        .ok_or_else(|| Failure::NoHandshake(format!("{host}:{port}: no address")))?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Failure::NoHandshake(format!("{addr}: {e}")))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| Failure::NoHandshake(e.to_string()))?;
    let sni = sni.unwrap_or(host);
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())
        .map_err(|e| Failure::NoHandshake(format!("{sni}: {e}")))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name.clone())
        .map_err(|e| Failure::NoHandshake(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| match io_rejection(&e) {
                Some(reason) => Failure::Rejected(reason.to_string()),
                None => Failure::NoHandshake(e.to_string()),
            })?;
    }
    // The report of this connection, from the certificate it presented.
    let report = verifier
        .peer_report(&conn, &name, time::now())
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    let Some(path) = request else {
        // Close politely; the verdict is already in.
        conn.send_close_notify();
        let _ = conn.complete_io(&mut tcp);
        return Ok((report, None));
    };
    fetch(&mut conn, &mut tcp, host, path)
        .map(|channel| (report, Some(channel)))
        .map_err(Failure::After)
}

/// GET `path` over an established connection: the server's leaf, the exporter, the body.
fn fetch(
    conn: &mut rustls::ClientConnection,
    tcp: &mut TcpStream,
    host: &str,
    path: &str,
) -> Result<Channel, String> {
    let exporter = enclave_ratls::channel::exporter(conn).map_err(|e| e.to_string())?;
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("the server presented no certificate")?;
    let mut tls = rustls::Stream::new(conn, tcp);
    // One write: write! would send each piece of the format in its own TLS record.
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("sending the attestation request: {e}"))?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) if response.len() + k <= MAX_RESPONSE => response.extend_from_slice(&chunk[..k]),
            Ok(_) => return Err("the attestation response is larger than 1 MiB".into()),
            // A server that closes without close_notify still sent a whole HTTP response.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("reading the attestation response: {e}")),
        }
    }
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "the attestation response is not HTTP ({} bytes: {:?})",
                response.len(),
                String::from_utf8_lossy(&response[..response.len().min(80)])
            )
        })?;
    let status = String::from_utf8_lossy(&response[..head_end]);
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "the server answered {} for {path}: {}",
            status.lines().next().unwrap_or_default(),
            String::from_utf8_lossy(
                &response[head_end + 4..(head_end + 4 + 512).min(response.len())]
            )
        ));
    }
    Ok((leaf, exporter, response[head_end + 4..].to_vec()))
}

pub(crate) fn run(a: &VerifyUrlArgs) -> ExitCode {
    let (host, port) = match host_port(&a.url) {
        Ok(hp) => hp,
        Err(e) => return usage(e, a.json),
    };
    let (inner, freshness, nonce) = match build(a) {
        Ok(b) => b,
        Err(e) => return usage(e, a.json),
    };
    let verifier = Arc::new(RatlsServerVerifier::new(inner, freshness));
    let config = match client_config(verifier.clone(), nonce.as_deref(), None) {
        Ok(c) => c,
        Err(e) => return usage(e.to_string(), a.json),
    };
    let timeout = Duration::from_secs(a.timeout);
    let request = matches!(a.mode, Mode::Channel).then_some(enclave_ratls::channel::PATH);
    let sni = a.server_name.as_deref();
    let outcome = handshake(
        &host,
        port,
        config.clone(),
        &verifier,
        timeout,
        request,
        sni,
    );
    let now = time::now();
    let report = match outcome {
        Ok((report, None)) => report,
        Ok((handshake_report, Some((leaf, exporter, body)))) => {
            match enclave_ratls::channel::verify(verifier.inner(), &body, &leaf, &exporter, now) {
                Ok(mut channel_report) => {
                    // The chain and the name were checked on the certificate in the handshake.
                    channel_report.chain_verified = handshake_report.chain_verified;
                    channel_report.name = handshake_report.name;
                    channel_report
                }
                Err(e) => return rejected(a, &format!("rejected: {e}")),
            }
        }
        Err(Failure::Rejected(reason)) => return rejected(a, &format!("rejected: {reason}")),
        Err(Failure::NoHandshake(e)) => {
            return rejected(a, &format!("no RA-TLS handshake: {e}"));
        }
        Err(Failure::After(e)) => {
            return rejected(
                a,
                &format!("the certificate verified but the handshake then failed: {e}"),
            );
        }
    };
    let leaves = manifest_leaves(&host, port, config, &verifier, timeout, &report);
    report_ok(a, &report, leaves, now)
}

/// Where the runtime serves the config manifest.
const MANIFEST_PATH: &str = "/.well-known/enclave-os/manifest";

/// The named leaves of the server's config, from its manifest, checked against the config root
/// its certificate carries. Best effort: a server that serves no manifest just has no names.
fn manifest_leaves(
    host: &str,
    port: u16,
    config: rustls::ClientConfig,
    verifier: &RatlsServerVerifier,
    timeout: Duration,
    report: &enclave_ratls::Report,
) -> Result<Vec<enclave_config::Leaf>, String> {
    let certified = report
        .config_root
        .as_deref()
        .ok_or("the certificate carries no config root")?;
    let (_, channel) = handshake(
        host,
        port,
        config,
        verifier,
        timeout,
        Some(MANIFEST_PATH),
        None,
    )
    .map_err(|f| match f {
        Failure::Rejected(e) | Failure::NoHandshake(e) | Failure::After(e) => e,
    })?;
    let (_, _, body) = channel.ok_or("no manifest")?;
    let manifest: enclave_config::Manifest =
        serde_json::from_slice(&body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let root = manifest.verify().map_err(|e| e.to_string())?;
    if hex::encode(root) != certified {
        return Err(format!(
            "the served manifest gives root {}, but the certificate certifies {certified}",
            hex::encode(root)
        ));
    }
    Ok(manifest.leaves)
}

/// Why the verdict is weaker than it looks: no measurement of the TEE's code is pinned, so any
/// code that the operator's CA certifies and the hardware attests is accepted.
fn warnings(a: &VerifyUrlArgs, report: &enclave_ratls::Report) -> Vec<String> {
    use enclave_evidence::TeeKind;
    let policy = a.policy.as_ref().and_then(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        Policy::from_toml(&text, &p.display().to_string()).ok()
    });
    let tee = report.appraisal.tee;
    let pinned = policy.as_ref().is_some_and(|p| match tee {
        TeeKind::Sgx => p
            .sgx
            .as_ref()
            .is_some_and(|r| r.mr_enclave.is_some() || r.mr_signer.is_some()),
        TeeKind::Tdx | TeeKind::AzureTdx => p.tdx.as_ref().is_some_and(|r| r.mr_td.is_some()),
        TeeKind::Snp | TeeKind::AzureSnp => p.snp.as_ref().is_some_and(|r| r.measurement.is_some()),
    });
    if pinned {
        return Vec::new();
    }
    let rule = match tee {
        TeeKind::Sgx => "[sgx] mr_enclave or mr_signer",
        TeeKind::Tdx | TeeKind::AzureTdx => "[tdx] mr_td",
        TeeKind::Snp | TeeKind::AzureSnp => "[snp] measurement",
    };
    vec![format!(
        "no measurement is pinned: any {tee} code that the hardware attests{} is accepted, \
         whatever it is; pin it with --policy (a policy file with {rule})",
        if report.chain_verified {
            " and the operator CA certifies"
        } else {
            ""
        }
    )]
}

fn report_ok(
    a: &VerifyUrlArgs,
    report: &enclave_ratls::Report,
    leaves: Result<Vec<enclave_config::Leaf>, String>,
    now: i64,
) -> ExitCode {
    let warnings = warnings(a, report);
    for w in &warnings {
        eprintln!("WARNING: {w}");
    }
    if a.json {
        let mut v = render::appraisal_json(&report.appraisal, now);
        if let Some(map) = v.as_object_mut() {
            map.insert("url".into(), json!(a.url));
            map.insert("warnings".into(), json!(warnings));
            map.insert("key_binding".into(), json!(report.key_binding));
            map.insert("chain_verified".into(), json!(report.chain_verified));
            map.insert("server_name".into(), json!(report.name));
            map.insert("config_root".into(), json!(report.config_root));
            map.insert("workload".into(), json!(report.workload));
            match &leaves {
                Ok(l) => map.insert("config_leaves".into(), json!(l)),
                Err(e) => map.insert("config_leaves_error".into(), json!(e)),
            };
            map.insert(
                "certificate".into(),
                json!({"subject": report.subject, "not_before": report.not_before, "not_after": report.not_after}),
            );
        }
        println!("{v}");
    } else {
        println!("server:       {}", a.url);
        print!("{}", render::appraisal_text(&report.appraisal, now));
        println!(
            "key binding:  {}",
            serde_json::to_string(&report.key_binding).unwrap_or_default()
        );
        println!(
            "chain:        {}",
            if report.chain_verified {
                "verified to the operator root"
            } else {
                "NOT checked (no --root given)"
            }
        );
        match &report.name {
            Some(n) => println!("server name:  {n} (the certificate is valid for it)"),
            None => println!("server name:  NOT checked"),
        }
        println!(
            "config root:  {}",
            report.config_root.as_deref().unwrap_or("(none)")
        );
        match &leaves {
            Ok(l) => {
                for leaf in l {
                    println!("  {:<32} {}", leaf.name, hex::encode(leaf.value_hash));
                }
            }
            Err(e) => println!("  (named leaves unavailable: {e})"),
        }
        if let Some(w) = &report.workload {
            println!(
                "workload:     code {} config root {} keys {}{}",
                hex::encode(w.code_digest),
                hex::encode(w.config_root),
                w.key_source,
                w.image
                    .as_deref()
                    .map(|i| format!(" image {i}"))
                    .unwrap_or_default()
            );
        }
        println!(
            "certificate:  {} valid {} to {}",
            report.subject, report.not_before, report.not_after
        );
    }
    ExitCode::SUCCESS
}

fn rejected(a: &VerifyUrlArgs, msg: &str) -> ExitCode {
    if a.json {
        println!(
            "{}",
            json!({ "verified": false, "url": a.url, "error": msg })
        );
    } else {
        eprintln!("error: {}: {msg}", a.url);
    }
    ExitCode::from(EXIT_REJECTED)
}
