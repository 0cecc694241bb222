//! The PCK chain is read twice: by dcap-qvl, which verifies it, and by this crate, which reports
//! the platform's FMSPC and PCE-ID from it and bounds the warm cache by its dates. Nothing signs
//! the chain's text, so any text the two parsers could read differently is refused, and the
//! facts are read from the very chain dcap-qvl used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use enclave_evidence::appraisal::Platform;
use enclave_evidence::intel::quote::Certification;
use enclave_evidence::intel::{Collateral, Quote};
use enclave_evidence::{Inputs, Verifier};

/// Where the PCK certification data (the PEM and the NULs after it) starts in `raw`, and its
/// size as the quote states it.
fn pck_data(raw: &[u8]) -> (Quote, usize, usize) {
    let q = Quote::decode(raw).unwrap();
    let fixed = q.signed_len + 4 + 64 + 64 + if q.header.version == 3 { 0 } else { 6 };
    let start = fixed + 384 + 64 + 2 + q.signature.qe.qe_auth_data.len() + 6;
    let size = u32::from_le_bytes(raw[start - 4..start].try_into().unwrap()) as usize;
    (q, start, size)
}

/// `raw` with its PCK certification data replaced by `data`, every enclosing length adjusted.
fn with_pck_data(raw: &[u8], data: &[u8]) -> Vec<u8> {
    let (q, start, size) = pck_data(raw);
    let delta = data.len() as i64 - size as i64;
    let mut out = raw[..start].to_vec();
    out.extend_from_slice(data);
    out.extend_from_slice(&raw[start + size..]);
    let mut adjust = |at: usize| {
        let v = i64::from(u32::from_le_bytes(out[at..at + 4].try_into().unwrap())) + delta;
        out[at..at + 4].copy_from_slice(&u32::try_from(v).unwrap().to_le_bytes());
    };
    adjust(start - 4); // the PCK certification data
    adjust(q.signed_len); // the signature data
    if q.header.version != 3 {
        adjust(q.signed_len + 4 + 128 + 2); // the QE certification data around it
    }
    out
}

fn pem_of(raw: &[u8]) -> String {
    match Quote::decode(raw).unwrap().signature.qe.certification {
        Certification::PckChain { pem } => pem,
        Certification::Other { .. } => panic!("the vector carries its PCK chain"),
    }
}

fn block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The PCK leaf with its FMSPC changed to `ff…ff`: well-formed DER, a signature that no longer
/// verifies (nobody checks it if nobody uses it).
fn forged_leaf(leaf: &[u8]) -> Vec<u8> {
    // OID 1.2.840.113741.1.13.1.4 (FMSPC), then OCTET STRING of 6.
    let oid = [
        0x06, 0x0a, 0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01, 0x04, 0x04, 0x06,
    ];
    let at = leaf
        .windows(oid.len())
        .position(|w| w == oid)
        .expect("the PCK leaf has an FMSPC")
        + oid.len();
    let mut forged = leaf.to_vec();
    forged[at..at + 6].fill(0xff);
    forged
}

fn fmspc(v: &Verifier, raw: &[u8], inputs: &Inputs, at: i64) -> [u8; 6] {
    match v.verify(raw, inputs, at).unwrap().platform {
        Platform::Intel { fmspc, .. } => fmspc,
        other => panic!("not an Intel platform: {other:?}"),
    }
}

#[test]
fn a_leaf_hidden_under_another_label_cannot_lend_a_forged_one_its_chain() {
    for (dir, at) in [("tdx-v4", TDX_AT), ("sgx-v3", SGX_AT)] {
        let raw = read(&format!("intel/{dir}/quote.bin"));
        let inputs = collateral(&format!("intel/{dir}/collateral.json"));
        let genuine = fmspc(&Verifier::default(), &raw, &inputs, at);
        let chain = enclave_evidence::input::pem_certificates(pem_of(&raw).as_bytes()).unwrap();
        // dcap-qvl takes blocks of any label: it verifies the real leaf, and the forged one
        // after it is an unused "intermediate". A parser of CERTIFICATE blocks alone would
        // read the forged one as the leaf.
        let mut pem = block("X509 CERTIFICATE", &chain[0]);
        pem.push_str(&block("CERTIFICATE", &forged_leaf(&chain[0])));
        for der in &chain[1..] {
            pem.push_str(&block("CERTIFICATE", der));
        }
        let mut data = pem.into_bytes();
        data.push(0);
        let tampered = with_pck_data(&raw, &data);
        let qvl = dcap_qvl::verify::QuoteVerifier::new_prod();
        assert!(
            qvl.verify(
                &tampered,
                inputs.collateral.as_ref().unwrap().qvl(),
                at as u64
            )
            .is_ok(),
            "{dir}: dcap-qvl alone accepts the relabelled chain, so the refusal below matters"
        );
        let err = Verifier::default()
            .verify(&tampered, &inputs, at)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("text other than 'CERTIFICATE' blocks"),
            "{dir}: {err}"
        );
        assert_ne!(genuine, [0xff; 6]);
    }
}

#[test]
fn only_nuls_may_follow_the_pem() {
    let raw = read("intel/tdx-v4/quote.bin");
    let inputs = collateral("intel/tdx-v4/collateral.json");
    let mut data = pem_of(&raw).into_bytes();
    data.push(0);
    // The same chain again after the NUL: dcap-qvl would read a chain this parser did not.
    data.extend_from_slice(pem_of(&raw).as_bytes());
    let err = Verifier::default()
        .verify(&with_pck_data(&raw, &data), &inputs, TDX_AT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pck_certification_data"), "{err}");
    assert!(err.contains("not zero padding"), "{err}");
    // NULs alone are padding, as quote generators write it.
    let mut padded = pem_of(&raw).into_bytes();
    padded.extend_from_slice(&[0; 64]);
    Verifier::default()
        .verify(&with_pck_data(&raw, &padded), &inputs, TDX_AT)
        .unwrap();
}

#[test]
fn the_chain_in_the_collateral_is_the_one_read_and_is_part_of_the_cache_key() {
    let raw = read("intel/tdx-v4/quote.bin");
    let inputs = collateral("intel/tdx-v4/collateral.json");
    let v = Verifier::default();
    let genuine = fmspc(&v, &raw, &inputs, TDX_AT);
    let chain = enclave_evidence::input::pem_certificates(pem_of(&raw).as_bytes()).unwrap();

    // dcap-qvl prefers a chain in the collateral to the quote's. One with a forged leaf must
    // not be answered from the cache the genuine collateral filled, nor verify.
    let mut qvl = inputs.collateral.as_ref().unwrap().qvl().clone();
    let mut forged = block("CERTIFICATE", &forged_leaf(&chain[0]));
    for der in &chain[1..] {
        forged.push_str(&block("CERTIFICATE", der));
    }
    qvl.pck_certificate_chain = Some(forged);
    let with_forged = Inputs {
        collateral: Some(Collateral::new(qvl.clone()).unwrap()),
        ..Inputs::default()
    };
    assert!(v.verify(&raw, &with_forged, TDX_AT).is_err());

    // A quote whose own chain carries the forged leaf, with the genuine chain in the
    // collateral: dcap-qvl verifies the collateral's, and the facts come from it too.
    let mut genuine_pem = String::new();
    for der in &chain {
        genuine_pem.push_str(&block("CERTIFICATE", der));
    }
    qvl.pck_certificate_chain = Some(genuine_pem);
    let with_genuine = Inputs {
        collateral: Some(Collateral::new(qvl).unwrap()),
        ..Inputs::default()
    };
    let mut data = block("CERTIFICATE", &forged_leaf(&chain[0])).into_bytes();
    for der in &chain[1..] {
        data.extend_from_slice(block("CERTIFICATE", der).as_bytes());
    }
    data.push(0);
    let tampered = with_pck_data(&raw, &data);
    assert_eq!(
        fmspc(&Verifier::default(), &tampered, &with_genuine, TDX_AT),
        genuine
    );
}
