//! Shared helpers for the evidence tests: paths to the real vectors and loaders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use enclave_evidence::amd::{AmdInputs, Product};
use enclave_evidence::intel::Collateral;
use enclave_evidence::{Inputs, input};

pub fn vector(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors")
        .join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    let raw = std::fs::read(vector(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    input::evidence_bytes(&raw).unwrap()
}

pub fn collateral(rel: &str) -> Inputs {
    let json = std::fs::read(vector(rel)).unwrap();
    Inputs {
        collateral: Some(Collateral::from_json(&json).unwrap()),
        ..Inputs::default()
    }
}

pub fn certs(rel: &str) -> Vec<Vec<u8>> {
    input::certificates(&std::fs::read(vector(rel)).unwrap()).unwrap()
}

pub fn amd(vcek: &str, chain: Option<&str>, product: Option<Product>) -> Inputs {
    let mut certs_all = certs(vcek);
    if let Some(c) = chain {
        certs_all.extend(certs(c));
    }
    Inputs {
        amd: AmdInputs {
            certs: certs_all,
            product,
            ..AmdInputs::default()
        },
        ..Inputs::default()
    }
}

pub const SGX_AT: i64 = 1752919277;
pub const TDX_AT: i64 = 1752919234;
pub const TDX5_AT: i64 = 1771977600;
/// 2025-01-01, inside every AMD vector's VCEK validity.
pub const AMD_AT: i64 = 1735689600;
