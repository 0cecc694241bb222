//! Negative tests: altered, truncated and extended evidence is rejected with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use enclave_evidence::intel::Quote;
use enclave_evidence::{Evidence, Verifier};

/// The end of the part of a quote that signatures and hashes cover: header, body, quote signature,
/// attestation key, QE report, QE report signature, QE auth data. (The PCK chain after it is
/// covered by the certificates' own signatures.)
fn covered_len(raw: &[u8]) -> usize {
    let q = Quote::decode(raw).unwrap();
    let fixed = q.signed_len + 4 + 64 + 64 + if q.header.version == 3 { 0 } else { 6 };
    fixed + 384 + 64 + 2 + q.signature.qe.qe_auth_data.len()
}

fn flip_each_byte_rejected(
    raw: &[u8],
    range: std::ops::Range<usize>,
    verify: impl Fn(&[u8]) -> bool,
) {
    let mut copy = raw.to_vec();
    for i in range {
        copy[i] ^= 0x01;
        assert!(!verify(&copy), "flipping byte {i} was not detected");
        copy[i] ^= 0x01;
    }
}

#[test]
fn every_covered_byte_of_an_sgx_quote_is_protected() {
    let raw = read("intel/sgx-v3/quote.bin");
    let inputs = collateral("intel/sgx-v3/collateral.json");
    // One verifier for all flips, so the warm cache is exercised too: a cached appraisal must
    // never accept an altered quote.
    let v = Verifier::default();
    assert!(v.verify(&raw, &inputs, SGX_AT).is_ok());
    flip_each_byte_rejected(&raw, 0..covered_len(&raw), |q| {
        v.verify(q, &inputs, SGX_AT).is_ok()
    });
}

#[test]
fn every_covered_byte_of_a_tdx_quote_is_protected() {
    let raw = read("intel/tdx-v4/quote.bin");
    let inputs = collateral("intel/tdx-v4/collateral.json");
    let v = Verifier::default();
    assert!(v.verify(&raw, &inputs, TDX_AT).is_ok());
    flip_each_byte_rejected(&raw, 0..covered_len(&raw), |q| {
        v.verify(q, &inputs, TDX_AT).is_ok()
    });
}

#[test]
fn every_covered_byte_is_protected_without_collateral_too() {
    let raw = read("intel/parse-only/tdx-v5-b.bin");
    let v = Verifier::default();
    assert!(v.verify(&raw, &Default::default(), SGX_AT).is_ok());
    flip_each_byte_rejected(&raw, 0..covered_len(&raw), |q| {
        v.verify(q, &Default::default(), SGX_AT).is_ok()
    });
}

#[test]
fn every_signed_byte_of_an_snp_report_is_protected() {
    let raw = read("amd/milan-v2-a/report.hex");
    let inputs = amd(
        "amd/milan-v2-a/vcek.der",
        None,
        Some(enclave_evidence::amd::Product::Milan),
    );
    let v = Verifier::default();
    assert!(v.verify(&raw, &inputs, AMD_AT).is_ok());
    // The signed region and the signature itself (r and s, 72 bytes each).
    flip_each_byte_rejected(&raw, 0..0x2A0 + 144, |r| {
        v.verify(r, &inputs, AMD_AT).is_ok()
    });
}

#[test]
fn every_signed_byte_of_an_azure_report_is_protected() {
    let raw = read("azure/snp-hcl/hcl-report.bin");
    let inputs = amd("azure/snp-hcl/vcek-ask-ark.pem", None, None);
    let v = Verifier::default();
    assert!(v.verify(&raw, &inputs, AMD_AT).is_ok());
    flip_each_byte_rejected(&raw, 0x20..0x20 + 0x2A0 + 144, |r| {
        v.verify(r, &inputs, AMD_AT).is_ok()
    });
}

#[test]
fn warm_cache_still_checks_time_and_report_data() {
    let raw = read("intel/sgx-v3/quote.bin");
    let inputs = collateral("intel/sgx-v3/collateral.json");
    let v = Verifier::default();
    let cold = v.verify(&raw, &inputs, SGX_AT).unwrap();
    let warm = v.verify(&raw, &inputs, SGX_AT).unwrap();
    assert_eq!(cold, warm);
    // Outside the collateral window the cache must not answer.
    assert!(v.verify(&raw, &inputs, SGX_AT + 10).is_err());
    // A new report_data without a new signature is caught on the warm path.
    let q = Quote::decode(&raw).unwrap();
    let mut forged = raw.clone();
    forged[q.report_data_offset] ^= 0xff;
    let err = v.verify(&forged, &inputs, SGX_AT).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn truncated_evidence_is_a_decode_error_naming_a_field() {
    for rel in [
        "intel/sgx-v3/quote.bin",
        "intel/tdx-v4/quote.bin",
        "intel/parse-only/tdx-v5-b.bin",
        "amd/milan-v2-b/report.bin",
        "azure/snp-hcl/hcl-report.bin",
    ] {
        let raw = read(rel);
        // The 70 bytes of TDX padding are optional; cut inside the real structure.
        let end = raw.len() - raw.iter().rev().take_while(|b| **b == 0).count();
        for len in (0..end).step_by(7).chain([end - 1]) {
            match Evidence::decode(&raw[..len]) {
                Err(e) => assert!(!e.field.is_empty() && !e.reason.is_empty(), "{rel}@{len}"),
                Ok(_) if rel.contains("amd") || rel.contains("azure") => {
                    panic!("{rel} truncated to {len} bytes decoded")
                }
                // A quote cut inside trailing certificate text can still decode; its chain then
                // fails to verify, which the next assertion covers.
                Ok(_) => assert!(
                    Verifier::default()
                        .verify(&raw[..len], &Default::default(), SGX_AT)
                        .is_err()
                ),
            }
        }
    }
}

#[test]
fn extended_evidence_accepts_zero_padding_only() {
    for rel in [
        "intel/sgx-v3/quote.bin",
        "amd/milan-v2-b/report.bin",
        "azure/snp-hcl/hcl-report.bin",
    ] {
        let raw = read(rel);
        let mut padded = raw.clone();
        padded.extend_from_slice(&[0; 16]);
        Evidence::decode(&padded).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut extended = raw.clone();
        extended.extend_from_slice(b"\0\0smuggled");
        let err = Evidence::decode(&extended).unwrap_err();
        assert!(err.field.ends_with("trailing_bytes"), "{rel}: {err}");
        assert!(err.reason.contains("not zero padding"), "{rel}: {err}");
    }
}

#[test]
fn garbage_is_named_as_unrecognised() {
    let err = Evidence::decode(b"\x7fELF\x02\x01\x01\x00").unwrap_err();
    assert_eq!(err.field, "evidence");
    assert!(err.reason.contains("not a DCAP quote"));
}
