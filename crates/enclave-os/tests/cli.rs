//! `enclave-os evidence` end to end: the real binary on the real vectors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

fn vector(rel: &str) -> String {
    format!(
        "{}/../../testdata/vectors/{rel}",
        env!("CARGO_MANIFEST_DIR")
    )
}

struct Case {
    args: Vec<String>,
    verified: bool,
    tee: &'static str,
    status: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("intel/sgx-v3/quote.bin"),
                "--collateral",
                &vector("intel/sgx-v3/collateral.json"),
                "--at",
                "1752919277",
            ]),
            verified: true,
            tee: "sgx",
            status: Some("ConfigurationAndSWHardeningNeeded"),
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("intel/tdx-v4/quote.bin"),
                "--collateral",
                &vector("intel/tdx-v4/collateral.json"),
                "--at",
                "2025-07-19T10:00:34Z",
            ]),
            verified: true,
            tee: "tdx",
            status: Some("UpToDate"),
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("intel/tdx-v4/quote.bin"),
                "--collateral",
                &vector("intel/tdx-v4/collateral.json"),
                "--at",
                "1752919236",
            ]),
            verified: false,
            tee: "tdx",
            status: None,
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("intel/tdx-v5-outdated/quote.bin"),
                "--collateral",
                &vector("intel/tdx-v5-outdated/collateral.json"),
                "--at",
                "1771977600",
            ]),
            verified: false,
            tee: "tdx",
            status: None,
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("intel/parse-only/tdx-v5-b.bin"),
                "--at",
                "1752919277",
            ]),
            verified: true,
            tee: "tdx",
            status: Some("Unknown"),
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("amd/milan-v2-a/report.hex"),
                "--vcek",
                &vector("amd/milan-v2-a/vcek.der"),
                "--product",
                "milan",
            ]),
            verified: true,
            tee: "snp",
            status: Some("Unknown"),
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("amd/milan-v2-b/report.bin"),
                "--vcek",
                &vector("amd/milan-v2-b/vcek.der"),
                "--chain",
                &vector("amd/chains/ask_ark_milan.pem"),
            ]),
            verified: true,
            tee: "snp",
            status: Some("Unknown"),
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("amd/milan-v2-c/report.bin"),
                "--vcek",
                &vector("amd/milan-v2-b/vcek.der"),
                "--product",
                "Milan",
            ]),
            verified: false,
            tee: "snp",
            status: None,
        },
        Case {
            args: s(&[
                "evidence",
                "verify",
                &vector("azure/snp-hcl/hcl-report.bin"),
                "--chain",
                &vector("azure/snp-hcl/vcek-ask-ark.pem"),
            ]),
            verified: true,
            tee: "azure-snp",
            status: Some("Unknown"),
        },
    ]
}

#[test]
fn every_vector_gives_its_outcome_with_and_without_json() {
    for case in cases() {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let (code, v) = json(&args);
        assert_eq!(v["verified"], case.verified, "{args:?}: {v}");
        assert_eq!(v["tee"], case.tee, "{args:?}");
        assert_eq!(code == 0, case.verified, "{args:?}: exit {code}");
        if let Some(status) = case.status {
            assert_eq!(v["status"], status, "{args:?}");
            assert!(v["measurement"].as_str().unwrap().len() >= 64);
            assert_eq!(v["report_data"].as_str().unwrap().len(), 128);
            assert!(v["advisory_ids"].is_array());
            assert_eq!(v["simulated"], false);
        } else {
            assert!(v["error"].as_str().unwrap().len() > 10, "{v}");
        }
        let out = run(&args);
        assert_eq!(out.status.code().unwrap(), code, "{args:?}");
        if case.verified {
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.starts_with("verified:     yes"), "{text}");
            if let Some(status) = case.status {
                assert!(text.contains(status));
            }
        } else {
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.starts_with("error: "), "{err}");
        }
    }
}

#[test]
fn the_sgx_json_carries_advisories_and_measurements() {
    let (_, v) = json(&[
        "evidence",
        "verify",
        &vector("intel/sgx-v3/quote.bin"),
        "--collateral",
        &vector("intel/sgx-v3/collateral.json"),
        "--at",
        "1752919277",
    ]);
    assert_eq!(
        v["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
    assert!(
        v["measurements"]["mr_enclave"]
            .as_str()
            .unwrap()
            .starts_with("33d8736d")
    );
    assert!(
        v["measurements"]["mr_signer"]
            .as_str()
            .unwrap()
            .starts_with("815f42f1")
    );
    assert!(
        v["report_data"]
            .as_str()
            .unwrap()
            .starts_with(&hex::encode("Hello, world!"))
    );
}

#[test]
fn a_policy_failure_names_the_rule_and_keeps_the_appraisal() {
    let dir = std::env::temp_dir().join(format!("eos-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "[tcb]\nstatuses = [\"UpToDate\"]\n").unwrap();
    let (code, v) = json(&[
        "evidence",
        "verify",
        &vector("intel/sgx-v3/quote.bin"),
        "--collateral",
        &vector("intel/sgx-v3/collateral.json"),
        "--at",
        "1752919277",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(v["verified"], false);
    assert_eq!(v["rule"], "tcb.statuses");
    assert_eq!(v["status"], "ConfigurationAndSWHardeningNeeded");
    // A policy file rejects debug TEEs unless it allows them.
    std::fs::write(&policy, "").unwrap();
    let (code, v) = json(&[
        "evidence",
        "verify",
        &vector("amd/milan-v2-b/report.bin"),
        "--vcek",
        &vector("amd/milan-v2-b/vcek.der"),
        "--product",
        "milan",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!((code, v["rule"].as_str()), (1, Some("allow_debug")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn show_decodes_every_format() {
    for (rel, tee) in [
        ("intel/sgx-v3/quote.bin", "sgx"),
        ("intel/tdx-v4/quote.bin", "tdx"),
        ("intel/parse-only/tdx-v5-b.bin", "tdx"),
        ("intel/parse-only/sgx-v3-occlum.bin", "sgx"),
        ("amd/milan-v2-a/report.hex", "snp"),
        ("azure/snp-hcl/hcl-report.bin", "azure-snp"),
    ] {
        let (code, v) = json(&["evidence", "show", &vector(rel)]);
        assert_eq!((code, v["tee"].as_str()), (0, Some(tee)), "{rel}");
        let out = run(&["evidence", "show", &vector(rel)]);
        assert!(out.status.success());
        assert!(
            String::from_utf8(out.stdout)
                .unwrap()
                .contains("report_data")
        );
    }
    let (_, v) = json(&["evidence", "show", &vector("azure/snp-hcl/hcl-report.bin")]);
    assert!(v["runtime_claims"]["keys"].is_array());
}

#[test]
fn bad_input_is_one_line_naming_the_problem() {
    let dir = std::env::temp_dir().join(format!("eos-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let truncated = dir.join("truncated.bin");
    let quote = std::fs::read(vector("intel/sgx-v3/quote.bin")).unwrap();
    std::fs::write(&truncated, &quote[..500]).unwrap();
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    for (args, needle) in [
        (
            vec!["evidence", "show", truncated.to_str().unwrap()],
            "quote.signature_data",
        ),
        (
            vec!["evidence", "verify", truncated.to_str().unwrap()],
            "quote.signature_data",
        ),
        (vec!["evidence", "show", empty.to_str().unwrap()], "empty"),
        (
            vec!["evidence", "show", "/nonexistent/quote.bin"],
            "/nonexistent/quote.bin",
        ),
        (
            vec![
                "evidence",
                "verify",
                &vector("intel/sgx-v3/quote.bin"),
                "--at",
                "tomorrow",
            ],
            "--at",
        ),
        (
            vec![
                "evidence",
                "verify",
                &vector("intel/sgx-v3/quote.bin"),
                "--collateral",
                empty.to_str().unwrap(),
            ],
            "collateral",
        ),
        (
            vec![
                "evidence",
                "verify",
                &vector("amd/milan-v2-a/report.hex"),
                "--product",
                "naples",
            ],
            "naples",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        let mut j = args.clone();
        j.push("--json");
        let out = run(&j);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verified"], false);
        assert!(v["error"].as_str().unwrap().contains(needle));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ratls_certificates_from_other_implementations() {
    let gramine = vector("ratls/gramine-cert.pem");
    let (code, v) = json(&["evidence", "verify", &gramine]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verified"], true);
    assert_eq!(v["status"], "Unknown");
    assert_eq!(v["certificate"]["key_binding"]["method"], "dice-claims");

    let rats = vector("ratls/rats-tls-cert.pem");
    let (code, v) = json(&["evidence", "verify", &rats]);
    assert_eq!((code, v["verified"].as_bool()), (1, Some(false)));
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("expired at 2024-02-22T17:10:22Z"),
        "{v}"
    );
    let (code, v) = json(&["evidence", "verify", &rats, "--at", "2023-03-01T00:00:00Z"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["certificate"]["key_binding"]["method"], "dice-claims");
}

/// Item 14: `evidence verify cert.pem` reads an Enclave OS leaf in either binding: the seed's raw
/// quote, or DICE tagged evidence whose claims bind the key, the notBefore and the config root.
#[test]
fn enclave_os_leaves_in_both_bindings() {
    use base64::Engine;
    use enclave_ratls::binding::{BindingFormat, Freshness};
    use enclave_ratls::issue::{IntermediaryCa, LeafSpec, issue};
    use enclave_tee::sim::{Flavour, SimTee};
    let dir = tempfile::tempdir().unwrap();
    let files = enclave_ratls::ca::init(&dir.path().join("ca"), "Test").unwrap();
    let ca = IntermediaryCa::from_pem(
        &std::fs::read_to_string(&files.intermediary_cert).unwrap(),
        &std::fs::read_to_string(&files.intermediary_key).unwrap(),
    )
    .unwrap();
    let sim = dir.path().join("sim");
    let tee = SimTee::open(&sim, Flavour::Sgx).unwrap();
    for (binding, method) in [
        (BindingFormat::Seed, "enclave-os"),
        (BindingFormat::Dice, "enclave-os-dice"),
    ] {
        let spec = LeafSpec {
            names: vec!["localhost".into()],
            lifetime_secs: 3600,
            config_root: Some([7; 32]),
            modules: vec![],
            workload: None,
            binding,
        };
        let leaf = issue(&tee, &ca, &spec, &Freshness::Deterministic).unwrap();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(&leaf.cert_der)
        );
        let path = dir.path().join(format!("{binding}.pem"));
        std::fs::write(&path, pem).unwrap();
        let (code, v) = json(&[
            "evidence",
            "verify",
            path.to_str().unwrap(),
            "--trust-sim",
            sim.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{binding}: {v}");
        assert_eq!(v["certificate"]["key_binding"]["method"], method, "{v}");
        assert_eq!(v["certificate"]["key_binding"]["mode"], "deterministic");
    }
}
