//! `enclave-os verify https://HOST:PORT`: an RA-TLS handshake that checks what runs there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use enclave_evidence::{Policy, time};
use enclave_http::{Client, Request, StatusCode, Uri};
use enclave_ratls::RatlsVerifier;
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config, rejection};
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
    /// Seconds to wait for the connection and the handshake, and for each exchange as a whole.
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

/// Where to connect (the URL's host and port) and the name to ask for and check: the URL's
/// host, or `--server-name`.
struct Target {
    host: String,
    port: u16,
    name: String,
}

impl Target {
    fn of(url: &str, server_name: Option<&str>) -> Result<Self, String> {
        let uri = enclave_http::parse(url).map_err(|e| e.to_string())?;
        let host = uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        Ok(Self {
            port: uri.port_u16().unwrap_or(443),
            name: server_name.map_or_else(|| host.clone(), str::to_string),
            host,
        })
    }

    /// A request for `path` at the server name, and at the URL's address when they differ.
    fn request(&self, path: &str, by_name: bool) -> Result<Request, String> {
        let name = if by_name { &self.name } else { &self.host };
        let authority = if name.contains(':') {
            format!("[{name}]")
        } else {
            name.clone()
        };
        let uri: Uri = format!("https://{authority}:{}{path}", self.port)
            .parse()
            .map_err(|e| format!("server name '{name}': {e}"))?;
        let request = Request::get(uri);
        Ok(if *name == self.host {
            request
        } else {
            request.via(&self.host, self.port)
        })
    }
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
#[derive(Debug)]
enum Failure {
    /// The RA-TLS checks refused the server's certificate: the reason.
    Rejected(String),
    /// No handshake took place (connection, TLS).
    NoHandshake(String),
    /// The certificate verified, and what came after failed.
    After(String),
}

/// Connect and complete the handshake, and read back this connection's report; when `request`
/// asks for a path, then fetch it over the same connection (channel mode's evidence bound to
/// this connection, the manifest).
async fn handshake(
    client: &Client,
    request: Request,
    verifier: &RatlsServerVerifier,
    fetch: bool,
) -> Result<(enclave_ratls::Report, Option<Channel>), Failure> {
    let path = request.uri().path().to_string();
    let conn =
        client
            .connect(request)
            .await
            .map_err(|e| match e.tls_error().and_then(rejection) {
                Some(reason) => Failure::Rejected(reason.to_string()),
                None => Failure::NoHandshake(e.to_string()),
            })?;
    // The report of this connection, from the certificate it presented.
    let report = verifier
        .peer_report(conn.tls(), conn.server_name(), time::now())
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    if !fetch {
        // Close politely; the verdict is already in.
        conn.close().await;
        return Ok((report, None));
    }
    let exporter =
        enclave_ratls::channel::exporter(conn.tls()).map_err(|e| Failure::After(e.to_string()))?;
    let leaf = conn
        .tls()
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or_else(|| Failure::After("the server presented no certificate".into()))?;
    let response = conn
        .send()
        .await
        .map_err(|e| Failure::After(e.to_string()))?;
    if response.status != StatusCode::OK {
        return Err(Failure::After(format!(
            "the server answered {} for {path}: {}",
            response.status,
            String::from_utf8_lossy(&response.body[..response.body.len().min(512)])
        )));
    }
    Ok((report, Some((leaf, exporter, response.body))))
}

pub(crate) fn run(a: &VerifyUrlArgs) -> ExitCode {
    let target = match Target::of(&a.url, a.server_name.as_deref()) {
        Ok(t) => t,
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
    let client = Client::new(Arc::new(config))
        .max_body(MAX_RESPONSE)
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = matches!(a.mode, Mode::Channel);
    let path = if channel {
        enclave_ratls::channel::PATH
    } else {
        "/"
    };
    let (request, manifest) = match (
        target.request(path, true),
        target.request(MANIFEST_PATH, false),
    ) {
        (Ok(r), Ok(m)) => (r, m),
        (Err(e), _) | (_, Err(e)) => return usage(e, a.json),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return usage(format!("cannot start the I/O runtime: {e}"), a.json),
    };
    let outcome = rt.block_on(handshake(&client, request, &verifier, channel));
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
    let leaves = rt.block_on(manifest_leaves(&client, manifest, &verifier, &report));
    report_ok(a, &report, leaves, now)
}

/// Where the runtime serves the config manifest.
const MANIFEST_PATH: &str = "/.well-known/enclave-os/manifest";

/// The named leaves of the server's config, from its manifest, checked against the config root
/// its certificate carries. Best effort: a server that serves no manifest just has no names.
async fn manifest_leaves(
    client: &Client,
    request: Request,
    verifier: &RatlsServerVerifier,
    report: &enclave_ratls::Report,
) -> Result<Vec<enclave_config::Leaf>, String> {
    let certified = report
        .config_root
        .as_deref()
        .ok_or("the certificate carries no config root")?;
    let (_, channel) = handshake(client, request, verifier, true)
        .await
        .map_err(|f| match f {
            Failure::Rejected(e) | Failure::NoHandshake(e) | Failure::After(e) => e,
        })?;
    let (_, _, body) = channel.ok_or("no manifest")?;
    let manifest: enclave_config::Manifest =
        serde_json::from_slice(&body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let root = manifest.verify().map_err(|e| e.to_string())?;
    if hex::encode(root) == certified {
        return Ok(manifest.leaves);
    }
    // A workload's certificate carries the root of that workload's own leaves: find the
    // workload whose `workload/<name>/` leaves give it.
    if report.workload.is_some() {
        let mut names: Vec<&str> = manifest
            .leaves
            .iter()
            .filter_map(|l| l.name.strip_prefix("workload/")?.split('/').next())
            .collect();
        names.dedup();
        for name in names {
            let prefix = format!("workload/{name}/");
            let own: Vec<enclave_config::Leaf> = manifest
                .leaves
                .iter()
                .filter(|l| l.name.starts_with(&prefix))
                .cloned()
                .collect();
            let tree = enclave_config::ConfigTree::from_hashes(
                own.iter().map(|l| (l.name.clone(), l.value_hash)),
            )
            .map_err(|e| e.to_string())?;
            if hex::encode(tree.root()) == certified {
                return Ok(own);
            }
        }
    }
    Err(format!(
        "the served manifest gives root {}, and no workload's leaves in it give the root the certificate certifies ({certified})",
        hex::encode(root)
    ))
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
            map.insert("modules".into(), json!(report.modules));
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
                "workload:     code {} config root {} keys {}",
                hex::encode(w.code_digest),
                hex::encode(w.config_root),
                w.key_source,
            );
            if let Some(image) = &w.image {
                println!("  image:          {image}");
                println!("  manifest:       sha256:{}", hex::encode(w.code_digest));
            }
            if let Some(h) = &w.image_config {
                println!("  image config:   sha256:{}", hex::encode(h));
            }
            if let Some(h) = &w.runtime_spec {
                println!("  runtime spec:   sha256:{}", hex::encode(h));
            }
            if let Some(h) = &w.decrypted_code {
                println!(
                    "  decrypted code: sha256:{} (what the encrypted code decrypted to)",
                    hex::encode(h)
                );
            }
            if let Some(r) = &w.key_reference {
                for line in r.lines() {
                    println!("  decrypted with: {line}");
                }
            }
        }
        for (index, hash) in &report.modules {
            let what = match index {
                1 => "egress CA bundle",
                4 => "container engine",
                5 => "workloads",
                7 => "attestation servers",
                _ => "module",
            };
            println!("module 2.{index}:   {hash} ({what})");
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
