//! Verification cost per quote and per report, cold and warm, beside dcap-qvl alone.
//!
//! Run: `cargo bench -p enclave-evidence --bench verify`. Figures and the machine they came from
//! are recorded in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_evidence::amd::{AmdInputs, Product};
use enclave_evidence::intel::Collateral;
use enclave_evidence::{Inputs, Verifier, input};

fn vector(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors")
        .join(rel);
    input::evidence_bytes(&std::fs::read(path).unwrap()).unwrap()
}

fn intel(c: &mut Criterion, name: &str, dir: &str, at: i64) {
    let quote = vector(&format!("intel/{dir}/quote.bin"));
    let collateral =
        Collateral::from_json(&vector(&format!("intel/{dir}/collateral.json"))).unwrap();
    let qvl_collateral = collateral.qvl().clone();
    let inputs = Inputs {
        collateral: Some(collateral),
        ..Inputs::default()
    };
    let mut g = c.benchmark_group(name);
    g.bench_function("dcap-qvl alone", |b| {
        let v = dcap_qvl::verify::QuoteVerifier::new_prod();
        b.iter(|| {
            v.verify(black_box(&quote), &qvl_collateral, at as u64)
                .unwrap()
        })
    });
    g.bench_function("enclave-os cold", |b| {
        b.iter(|| {
            Verifier::default()
                .verify(black_box(&quote), &inputs, at)
                .unwrap()
        })
    });
    g.bench_function("enclave-os cold, known platform", |b| {
        // A quote this verifier has not appraised, from a platform whose collateral, CRLs, PCK
        // chain and QE it has seen: dcap-qvl runs in full, its repeated signature checks are
        // answered from the memo.
        let v = Verifier::default();
        v.verify(&quote, &inputs, at).unwrap();
        b.iter(|| {
            v.forget_appraisals();
            v.verify(black_box(&quote), &inputs, at).unwrap()
        })
    });
    g.bench_function("enclave-os warm", |b| {
        let v = Verifier::default();
        v.verify(&quote, &inputs, at).unwrap();
        b.iter(|| v.verify(black_box(&quote), &inputs, at).unwrap())
    });
    g.finish();
}

fn amd(c: &mut Criterion) {
    let report = vector("amd/milan-v2-a/report.hex");
    let inputs = Inputs {
        amd: AmdInputs {
            certs: input::certificates(
                &std::fs::read(
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("../../testdata/vectors/amd/milan-v2-a/vcek.der"),
                )
                .unwrap(),
            )
            .unwrap(),
            product: Some(Product::Milan),
            ..AmdInputs::default()
        },
        ..Inputs::default()
    };
    let at = 1735689600;
    // The floor: ring's ECDSA P-384 verification of the report's signature over its signed bytes,
    // under the VCEK's key, with nothing else (the key and the signature are prepared outside the
    // loop, as a verifier that had read them before would hold them).
    let vcek_key = {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(&inputs.amd.certs[0]).unwrap();
        cert.public_key().subject_public_key.data.to_vec()
    };
    let sig = {
        let le_to_be = |le: &[u8]| le[..48].iter().rev().copied().collect::<Vec<u8>>();
        let mut sig = le_to_be(&report[0x2A0..0x2A0 + 72]);
        sig.extend(le_to_be(&report[0x2A0 + 72..0x2A0 + 144]));
        sig
    };
    let mut g = c.benchmark_group("snp-milan-v2");
    g.bench_function("bare P-384 verify (ring)", |b| {
        b.iter(|| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P384_SHA384_FIXED,
                black_box(&vcek_key),
            )
            .verify(black_box(&report[..0x2A0]), black_box(&sig))
            .unwrap()
        })
    });
    g.bench_function("enclave-os cold", |b| {
        b.iter(|| {
            Verifier::default()
                .verify(black_box(&report), &inputs, at)
                .unwrap()
        })
    });
    g.bench_function("enclave-os warm", |b| {
        let v = Verifier::default();
        v.verify(&report, &inputs, at).unwrap();
        b.iter(|| v.verify(black_box(&report), &inputs, at).unwrap())
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    intel(c, "tdx-v4", "tdx-v4", 1752919234);
    intel(c, "sgx-v3", "sgx-v3", 1752919277);
    amd(c);
}

criterion_group!(verify, benches);
criterion_main!(verify);
