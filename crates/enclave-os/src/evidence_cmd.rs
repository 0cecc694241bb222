//! `enclave-os evidence show|verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use enclave_evidence::amd::Product;
use enclave_evidence::intel::{Collateral, IntelVerifier};
use enclave_evidence::{Evidence, Inputs, Policy, Verifier, input, time};
use enclave_ratls::RatlsCertificate;
use enclave_tee::Bundle;
use enclave_tee::sim::SimPki;
use serde_json::{Value, json};

use crate::render;
use crate::{EXIT_REJECTED, EXIT_USAGE};

#[derive(Subcommand)]
pub(crate) enum EvidenceCommand {
    /// Decode evidence and print its fields.
    Show {
        /// The evidence: binary, hex or base64.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify evidence offline and appraise it against a policy. Exit status 0 only when it
    /// verifies and the policy holds.
    Verify(VerifyArgs),
    /// Produce evidence for 64 bytes of report data from this machine's TEE (or the simulator)
    /// and write it, with what a verifier needs, into a directory.
    Collect(CollectArgs),
}

#[derive(Args)]
pub(crate) struct CollectArgs {
    /// The report data to bind: up to 64 bytes of hex, zero-padded.
    #[arg(long)]
    report_data: String,
    /// The TEE: auto (hardware only), sim-sgx, sim-tdx, tdx, snp or sgx.
    #[arg(long, default_value = "auto")]
    tee: String,
    /// Simulation directory for sim-* (default: $ENCLAVE_OS_SIM_DIR, else
    /// $XDG_DATA_HOME/enclave-os/sim, else ~/.local/share/enclave-os/sim).
    #[arg(long)]
    sim_dir: Option<PathBuf>,
    /// Directory to write the evidence bundle into.
    #[arg(long)]
    out: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The evidence: a directory written by `evidence collect`; a file holding a DCAP quote, an
    /// SEV-SNP report or an Azure HCL report (binary, hex or base64); or an RA-TLS certificate
    /// (PEM or DER), whose key binding and validity are checked too.
    file: PathBuf,
    /// Trust this simulation root: a simulation directory or its root.crt.pem. Simulated evidence
    /// is rejected without it, and marked `simulated` with it.
    #[arg(long)]
    trust_sim: Option<PathBuf>,
    /// Intel DCAP collateral (JSON). Without it a quote's signature chain is verified but its TCB
    /// status is Unknown.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// For an Azure TDX HCL report: the TD quote made from its TDREPORT.
    #[arg(long)]
    quote: Option<PathBuf>,
    /// The VCEK or VLEK certificate (PEM or DER) for an SEV-SNP report.
    #[arg(long)]
    vcek: Option<PathBuf>,
    /// AMD certificates (PEM): ASK or ASVK, and ARK; may also hold the VCEK.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// AMD product (milan, genoa, turin); needed for version 2 reports.
    #[arg(long)]
    product: Option<String>,
    /// A CRL from AMD's KDS (PEM or DER), checked against the ASK and VCEK.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// Trust this root (PEM or DER) instead of the vendor's built-in one.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Verify as of this time: RFC 3339 (2025-07-19T10:01:17Z) or unix seconds. Default: now.
    #[arg(long)]
    at: Option<String>,
    /// Appraisal policy (TOML). Without one, the evidence is verified but not appraised: any TCB
    /// status but Revoked passes, and debug TEEs pass with a warning.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A failure before verification starts: the input named could not be used.
struct InputError(String);

fn read(path: &Path, what: &str) -> Result<Vec<u8>, InputError> {
    std::fs::read(path).map_err(|e| InputError(format!("{what} {}: {e}", path.display())))
}

fn load_evidence(path: &Path) -> Result<Vec<u8>, InputError> {
    let raw = read(path, "evidence")?;
    input::evidence_bytes(&raw).map_err(|e| InputError(format!("evidence {}: {e}", path.display())))
}

/// An RA-TLS certificate, if that is what the file holds (PEM, or DER with evidence in it).
fn ratls_certificate(path: &Path) -> Result<Option<RatlsCertificate>, InputError> {
    let contents = read(path, "evidence")?;
    let looks_pem = contents
        .trim_ascii_start()
        .starts_with(b"-----BEGIN CERTIFICATE");
    let der = if looks_pem {
        input::pem_certificates(&contents)
            .map_err(|e| InputError(format!("certificate {}: {e}", path.display())))?
            .into_iter()
            .next()
    } else if contents.starts_with(&[0x30, 0x82]) && x509_like(&contents) {
        Some(contents)
    } else {
        None
    };
    match der {
        None => Ok(None),
        Some(der) => RatlsCertificate::parse(&der)
            .map(Some)
            .map_err(|e| InputError(format!("certificate {}: {e}", path.display()))),
    }
}

/// A DER SEQUENCE whose stated length is the whole file: a certificate, not evidence.
fn x509_like(der: &[u8]) -> bool {
    der.len() >= 4 && usize::from(u16::from_be_bytes([der[2], der[3]])) + 4 == der.len()
}

fn certs(path: &Path, what: &str) -> Result<Vec<Vec<u8>>, InputError> {
    input::certificates(&read(path, what)?)
        .map_err(|e| InputError(format!("{what} {}: {e}", path.display())))
}

pub(crate) fn run(cmd: EvidenceCommand) -> ExitCode {
    match cmd {
        EvidenceCommand::Show { file, json } => show(&file, json),
        EvidenceCommand::Verify(args) => verify(&args),
        EvidenceCommand::Collect(args) => collect(&args),
    }
}

fn fail_input(msg: &str, json: bool) -> ExitCode {
    if json {
        println!("{}", json!({ "verified": false, "error": msg }));
    } else {
        eprintln!("error: {msg}");
    }
    ExitCode::from(EXIT_USAGE)
}

fn show(file: &Path, json: bool) -> ExitCode {
    let bytes = match load_evidence(file) {
        Ok(b) => b,
        Err(InputError(m)) => return fail_input(&m, json),
    };
    let evidence = match Evidence::decode(&bytes) {
        Ok(e) => e,
        Err(e) => return fail_input(&format!("evidence {}: {e}", file.display()), json),
    };
    let mut value = serde_json::to_value(&evidence).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("tee".into(), json!(evidence.tee().as_str()));
        map.insert("simulated".into(), json!(evidence.claims_simulation()));
    }
    if json {
        println!("{value}");
    } else {
        print!("{}", render::fields(&value));
    }
    ExitCode::SUCCESS
}

struct Prepared {
    raw: Vec<u8>,
    cert: Option<RatlsCertificate>,
    tee: String,
    verifier: Verifier,
    inputs: Inputs,
    at: i64,
    policy: Option<Policy>,
}

fn prepare(a: &VerifyArgs) -> Result<Prepared, InputError> {
    let bundle = if a.file.is_dir() {
        Some(Bundle::read_dir(&a.file).map_err(|e| InputError(e.to_string()))?)
    } else {
        None
    };
    let cert = match &bundle {
        Some(_) => None,
        None => ratls_certificate(&a.file)?,
    };
    let raw = match (&bundle, &cert) {
        (Some(b), _) => b.evidence.clone(),
        (None, Some(c)) => c.evidence().to_vec(),
        (None, None) => load_evidence(&a.file)?,
    };
    let evidence = Evidence::decode(&raw)
        .map_err(|e| InputError(format!("evidence {}: {e}", a.file.display())))?;
    let at = match &a.at {
        Some(t) => time::parse(t).map_err(|e| InputError(format!("--at: {e}")))?,
        None => time::now(),
    };
    let mut inputs = Inputs::default();
    if let Some(b) = &bundle {
        if let Some(c) = &b.collateral {
            inputs.collateral =
                Some(Collateral::from_json(c.as_bytes()).map_err(|e| {
                    InputError(format!("{}/collateral.json: {e}", a.file.display()))
                })?);
        }
        inputs.amd.certs.extend(b.certificates.iter().cloned());
    }
    if let Some(p) = &a.collateral {
        let c = Collateral::from_json(&read(p, "collateral")?)
            .map_err(|e| InputError(format!("collateral {}: {e}", p.display())))?;
        inputs.collateral = Some(c);
    }
    if let Some(p) = &a.quote {
        inputs.td_quote = Some(load_evidence(p)?);
    }
    if let Some(p) = &a.vcek {
        inputs.amd.certs.extend(certs(p, "VCEK")?);
    }
    if let Some(p) = &a.chain {
        inputs.amd.certs.extend(certs(p, "certificate chain")?);
    }
    if let Some(name) = &a.product {
        inputs.amd.product =
            Some(Product::parse(name).map_err(|e| InputError(format!("--product: {e}")))?);
    }
    if let Some(p) = &a.crl {
        let der = input::der_or_pem(&read(p, "CRL")?, "X509 CRL")
            .map_err(|e| InputError(format!("CRL {}: {e}", p.display())))?;
        inputs.amd.crl = Some(der);
    }
    let mut verifier = Verifier::default();
    if let Some(p) = &a.trust_sim {
        let path = if p.is_dir() {
            SimPki::root_path(p)
        } else {
            p.clone()
        };
        let root = certs(&path, "simulation root")?
            .into_iter()
            .next()
            .ok_or_else(|| {
                InputError(format!(
                    "simulation root {}: holds no certificate",
                    path.display()
                ))
            })?;
        verifier = Verifier::with_intel(IntelVerifier::with_root(root, true));
    }
    if let Some(p) = &a.root {
        let root = certs(p, "root")?
            .into_iter()
            .next()
            .ok_or_else(|| InputError(format!("root {}: holds no certificate", p.display())))?;
        // The root anchors whichever vendor signed: Intel for quotes (including an Azure TDX
        // report's --quote), AMD otherwise.
        if matches!(evidence, Evidence::DcapQuote(_)) || a.quote.is_some() {
            verifier = Verifier::with_intel(IntelVerifier::with_root(root, false));
        } else {
            inputs.amd.root = Some(root);
        }
    }
    let policy = match &a.policy {
        Some(p) => {
            let text = String::from_utf8(read(p, "policy")?)
                .map_err(|_| InputError(format!("policy {}: not UTF-8 text", p.display())))?;
            Some(
                Policy::from_toml(&text, &p.display().to_string())
                    .map_err(|e| InputError(e.to_string()))?,
            )
        }
        None => None,
    };
    Ok(Prepared {
        raw,
        cert,
        tee: evidence.tee().as_str().to_string(),
        verifier,
        inputs,
        at,
        policy,
    })
}

fn verify(a: &VerifyArgs) -> ExitCode {
    let p = match prepare(a) {
        Ok(p) => p,
        Err(InputError(m)) => return fail_input(&m, a.json),
    };
    let appraisal = match p.verifier.verify(&p.raw, &p.inputs, p.at) {
        Ok(a) => a,
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    json!({
                        "verified": false,
                        "tee": p.tee,
                        "at": time::fmt(p.at),
                        "error": e.to_string(),
                    })
                );
            } else {
                eprintln!(
                    "error: {} evidence {} rejected: {e}",
                    p.tee,
                    a.file.display()
                );
            }
            return ExitCode::from(EXIT_REJECTED);
        }
    };
    let mut appraisal = appraisal;
    let mut certificate = None;
    if let Some(cert) = &p.cert {
        let checked = cert.check_validity(p.at).and_then(|()| {
            cert.check_key_binding(
                &appraisal.report_data,
                &enclave_ratls::binding::Freshness::Deterministic,
            )
        });
        match checked {
            Ok(binding) => {
                certificate = Some(json!({
                    "subject": cert.subject,
                    "not_before": time::fmt(cert.not_before),
                    "not_after": time::fmt(cert.not_after),
                    "key_binding": binding,
                    "config_root": cert.config_root.map(hex::encode),
                }));
            }
            Err(e) => {
                if a.json {
                    let mut v = render::appraisal_json(&appraisal, p.at);
                    if let Some(map) = v.as_object_mut() {
                        map.insert("verified".into(), json!(false));
                        map.insert("error".into(), json!(e.to_string()));
                    }
                    println!("{v}");
                } else {
                    eprintln!(
                        "error: RA-TLS certificate {} rejected: {e}",
                        a.file.display()
                    );
                }
                return ExitCode::from(EXIT_REJECTED);
            }
        }
    }
    let verdict = match &p.policy {
        Some(policy) => policy.check(&appraisal),
        None => {
            if appraisal.debug {
                appraisal.notes.push(
                    "WARNING: debugging is enabled, so the host can read this TEE's memory; \
                     any policy file rejects it unless allow_debug = true"
                        .into(),
                );
            }
            Ok(())
        }
    };
    if a.json {
        let mut v = render::appraisal_json(&appraisal, p.at);
        if let (Some(c), Some(map)) = (&certificate, v.as_object_mut()) {
            map.insert("certificate".into(), c.clone());
        }
        if let (Err(violation), Some(map)) = (&verdict, v.as_object_mut()) {
            map.insert("verified".into(), json!(false));
            map.insert("error".into(), json!(violation.to_string()));
            map.insert("rule".into(), json!(violation.rule));
        }
        println!("{v}");
    } else {
        match &verdict {
            Ok(()) => {
                print!("{}", render::appraisal_text(&appraisal, p.at));
                if let Some(c) = &certificate {
                    println!("certificate:");
                    print!(
                        "{}",
                        render::fields(c)
                            .lines()
                            .map(|l| format!("  {l}\n"))
                            .collect::<String>()
                    );
                }
            }
            Err(violation) => {
                eprint!(
                    "{}",
                    render::appraisal_text(&appraisal, p.at).replacen(
                        "verified:     yes",
                        "verified:     NO: the evidence is genuine but the policy rejects it",
                        1,
                    )
                );
                eprintln!(
                    "error: {} evidence {} rejected: {violation}",
                    p.tee,
                    a.file.display()
                );
            }
        }
    }
    match verdict {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(EXIT_REJECTED),
    }
}

fn collect(a: &CollectArgs) -> ExitCode {
    let report_data = match parse_report_data(&a.report_data) {
        Ok(rd) => rd,
        Err(m) => return fail_input(&format!("--report-data: {m}"), a.json),
    };
    let sim_dir = a
        .sim_dir
        .clone()
        .unwrap_or_else(enclave_tee::hw::detect::default_sim_dir);
    let tee = match enclave_tee::hw::detect::open(&a.tee, &sim_dir) {
        Ok(t) => t,
        Err(e) => return fail_input(&format!("--tee {}: {e}", a.tee), a.json),
    };
    let bundle = match tee.evidence(&report_data) {
        Ok(b) => b,
        Err(e) => return fail_input(&format!("{}: {e}", tee.name()), a.json),
    };
    if let Err(e) = bundle.write_dir(&a.out) {
        return fail_input(&format!("--out: {e}"), a.json);
    }
    let measurement = hex::encode(tee.measurement());
    if a.json {
        println!(
            "{}",
            json!({
                "tee": tee.kind().as_str(),
                "backend": tee.name(),
                "simulated": tee.simulated(),
                "out": a.out.display().to_string(),
                "report_data": hex::encode(report_data),
                "measurement": measurement,
                "sim_dir": tee.simulated().then(|| sim_dir.display().to_string()),
            })
        );
    } else {
        println!("wrote {} evidence to {}", tee.name(), a.out.display());
        println!("measurement:  {measurement}");
        println!("report_data:  {}", hex::encode(report_data));
        if tee.simulated() {
            println!(
                "SIMULATED: signed by the simulation root in {}; verify with\n  enclave-os evidence verify {} --trust-sim {}",
                sim_dir.display(),
                a.out.display(),
                sim_dir.display()
            );
        }
    }
    ExitCode::SUCCESS
}

fn parse_report_data(s: &str) -> Result<[u8; 64], String> {
    let bytes =
        hex::decode(s.trim().trim_start_matches("0x")).map_err(|e| format!("not hex: {e}"))?;
    if bytes.len() > 64 {
        return Err(format!("{} bytes; at most 64", bytes.len()));
    }
    let mut rd = [0u8; 64];
    rd[..bytes.len()].copy_from_slice(&bytes);
    Ok(rd)
}
