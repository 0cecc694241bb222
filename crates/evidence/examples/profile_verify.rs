//! A driver for profilers and paired timing: runs verification cases from the real vectors.
//!
//! Build: `cargo build --release -p enclave-evidence --example profile_verify`.
//!
//! - `profile_verify CASE N` runs CASE N times, for a profiler, e.g.
//!   `valgrind --tool=callgrind --toggle-collect='*profile_verify::run*' profile_verify snp-warm 20`.
//! - `profile_verify pair ANCHOR CASE ROUNDS` times ANCHOR and CASE alternately (a batch of each
//!   per round, about 20 ms each) and prints the median time of each and the median and range of
//!   the per-round ratio CASE / ANCHOR. Alternating makes the ratio robust to the load of a shared
//!   machine changing between two benchmark runs.
//!
//! Cases: `tdx-qvl` (dcap-qvl alone), `tdx-cold` (a fresh `Verifier` per quote), `tdx-known` (a
//! verifier that has seen the platform, appraisals forgotten), `tdx-warm`, and the same for `sgx`;
//! `snp-floor` (ring's P-384 verification of the report signature alone), `snp-cold`, `snp-warm`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

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

fn snp(kind: &str) -> Box<dyn FnMut()> {
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
        "floor" => Box::new(move || {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P384_SHA384_FIXED,
                black_box(&vcek_key),
            )
            .verify(black_box(&report[..0x2A0]), black_box(&sig))
            .unwrap()
        }),
        "cold" => Box::new(move || {
            Verifier::default()
                .verify(black_box(&report), &inputs, at)
                .unwrap();
        }),
        _ => Box::new(move || {
            warm.verify(black_box(&report), &inputs, at).unwrap();
        }),
    }
}

fn intel(dir: &str, at: i64, kind: &str) -> Box<dyn FnMut()> {
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
    match kind {
        "qvl" => Box::new(move || {
            qvl.verify(black_box(&quote), &qvl_collateral, at as u64)
                .unwrap();
        }),
        "cold" => Box::new(move || {
            Verifier::default()
                .verify(black_box(&quote), &inputs, at)
                .unwrap();
        }),
        "known" => Box::new(move || {
            warm.forget_appraisals();
            warm.verify(black_box(&quote), &inputs, at).unwrap();
        }),
        _ => Box::new(move || {
            warm.verify(black_box(&quote), &inputs, at).unwrap();
        }),
    }
}

fn case(name: &str) -> Box<dyn FnMut()> {
    let (family, kind) = name.split_once('-').unwrap_or((name, "warm"));
    match family {
        "snp" => snp(kind),
        "tdx" => intel("tdx-v4", 1752919234, kind),
        _ => intel("sgx-v3", 1752919277, kind),
    }
}

/// Seconds per call of `f`, over a batch of `n`.
fn time(f: &mut dyn FnMut(), n: usize) -> f64 {
    let start = Instant::now();
    run(n, f);
    start.elapsed().as_secs_f64() / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pair") {
        let (a, b) = (&args[2], &args[3]);
        let rounds: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(50);
        let (mut fa, mut fb) = (case(a), case(b));
        // Batch sizes for about 20 ms each, from a first estimate.
        let batch = |f: &mut dyn FnMut()| ((0.02 / time(f, 20)) as usize).max(1);
        let (na, nb) = (batch(&mut *fa), batch(&mut *fb));
        let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which goes first, so neither always follows the other.
            let (x, y) = if round % 2 == 0 {
                let x = time(&mut *fa, na);
                (x, time(&mut *fb, nb))
            } else {
                let y = time(&mut *fb, nb);
                (time(&mut *fa, na), y)
            };
            ta.push(x);
            tb.push(y);
            ratio.push(y / x);
        }
        let (lo, hi) = ratio
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
        let mut sorted = ratio.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
        println!(
            "{a}: {:.1} µs  {b}: {:.1} µs  ratio {b}/{a}: median {:.3}, quartiles {:.3}–{:.3}, range {:.3}–{:.3} ({rounds} rounds)",
            median(&mut ta) * 1e6,
            median(&mut tb) * 1e6,
            median(&mut ratio),
            q(0.25),
            q(0.75),
            lo,
            hi
        );
        return;
    }
    let name = args.get(1).map(String::as_str).unwrap_or("snp-warm");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut f = case(name);
    run(n, &mut *f);
}
