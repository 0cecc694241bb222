//! A driver for profilers (callgrind, perf): runs one verification case `n` times.
//!
//! `cargo build --release -p enclave-evidence --example profile_verify`, then e.g.
//! `valgrind --tool=callgrind --toggle-collect='*profile_verify::run*' \
//!   target/release/examples/profile_verify snp-warm 20`.
//! Cases: tdx-qvl, tdx-cold, tdx-known, tdx-warm, and the same for sgx, snp-floor, snp-cold, snp-warm.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;

use enclave_evidence::amd::{AmdInputs, Product};
use enclave_evidence::intel::Collateral;
use enclave_evidence::{Inputs, Verifier, input};

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors")
        .join(rel)
}

fn vector(rel: &str) -> Vec<u8> {
    input::evidence_bytes(&std::fs::read(path(rel)).unwrap()).unwrap()
}

#[inline(never)]
fn run(n: usize, f: &mut dyn FnMut()) {
    for _ in 0..n {
        f();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map(String::as_str).unwrap_or("snp-warm");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    if let Some(kind) = case.strip_prefix("snp-") {
        let report = vector("amd/milan-v2-a/report.hex");
        let certs =
            input::certificates(&std::fs::read(path("amd/milan-v2-a/vcek.der")).unwrap()).unwrap();
        let vcek_key = {
            use x509_parser::prelude::*;
            let (_, cert) = X509Certificate::from_der(&certs[0]).unwrap();
            cert.public_key().subject_public_key.data.to_vec()
        };
        let mut sig: Vec<u8> = report[0x2A0..0x2A0 + 48].iter().rev().copied().collect();
        sig.extend(report[0x2A0 + 72..0x2A0 + 72 + 48].iter().rev());
        let inputs = Inputs {
            amd: AmdInputs {
                certs,
                product: Some(Product::Milan),
                ..AmdInputs::default()
            },
            ..Inputs::default()
        };
        let at = 1735689600;
        let warm = Verifier::default();
        warm.verify(&report, &inputs, at).unwrap();
        match kind {
            "floor" => run(n, &mut || {
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P384_SHA384_FIXED,
                    black_box(&vcek_key),
                )
                .verify(black_box(&report[..0x2A0]), black_box(&sig))
                .unwrap()
            }),
            "cold" => run(n, &mut || {
                Verifier::default()
                    .verify(black_box(&report), &inputs, at)
                    .unwrap();
            }),
            _ => run(n, &mut || {
                warm.verify(black_box(&report), &inputs, at).unwrap();
            }),
        }
        return;
    }
    let (dir, at) = if case.starts_with("tdx") {
        ("tdx-v4", 1752919234)
    } else {
        ("sgx-v3", 1752919277)
    };
    let quote = vector(&format!("intel/{dir}/quote.bin"));
    let collateral =
        Collateral::from_json(&vector(&format!("intel/{dir}/collateral.json"))).unwrap();
    let qvl_collateral = collateral.qvl().clone();
    let inputs = Inputs {
        collateral: Some(collateral),
        ..Inputs::default()
    };
    let warm = Verifier::default();
    warm.verify(&quote, &inputs, at).unwrap();
    let qvl = dcap_qvl::verify::QuoteVerifier::new_prod();
    match case.split_once('-').map(|(_, k)| k) {
        Some("qvl") => run(n, &mut || {
            qvl.verify(black_box(&quote), &qvl_collateral, at as u64)
                .unwrap();
        }),
        Some("cold") => run(n, &mut || {
            Verifier::default()
                .verify(black_box(&quote), &inputs, at)
                .unwrap();
        }),
        Some("known") => run(n, &mut || {
            warm.forget_appraisals();
            warm.verify(black_box(&quote), &inputs, at).unwrap();
        }),
        _ => run(n, &mut || {
            warm.verify(black_box(&quote), &inputs, at).unwrap();
        }),
    }
}
