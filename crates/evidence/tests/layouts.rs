//! Paths with no real vector in the repository, exercised with evidence built from the documented
//! layouts (and, where a signature matters, from a real report whose signed fields are changed, so
//! that the check that must fire is the one under test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use enclave_evidence::amd::report::{RawTcb, SigningKey};
use enclave_evidence::amd::{Product, SnpReport};
use enclave_evidence::azure::{HclReport, HwReport};
use enclave_evidence::{Evidence, TeeKind, Verifier, VerifyError};

fn tdx_hcl(claims: &[u8], report_data: [u8; 64]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"HCLA");
    out.extend_from_slice(&1u32.to_le_bytes()); // version
    out.extend_from_slice(&0u32.to_le_bytes()); // report size
    out.extend_from_slice(&2u32.to_le_bytes()); // request type
    out.extend_from_slice(&0u32.to_le_bytes()); // status
    out.extend_from_slice(&[0; 12]);
    let mut td = vec![0u8; 1184];
    td[0] = 0x81; // REPORTTYPE: TDX
    td[128..192].copy_from_slice(&report_data);
    td[512 + 16..512 + 64].copy_from_slice(&[0xaa; 48]); // MRTD
    out.extend_from_slice(&td);
    out.extend_from_slice(&((20 + claims.len()) as u32).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&4u32.to_le_bytes()); // TDX
    out.extend_from_slice(&1u32.to_le_bytes()); // SHA-256
    out.extend_from_slice(&(claims.len() as u32).to_le_bytes());
    out.extend_from_slice(claims);
    out
}

#[test]
fn azure_tdx_hcl_decodes_binds_and_says_why_it_cannot_verify_alone() {
    let claims = br#"{"keys":[{"kid":"HCLAkPub"}],"user-data":"00"}"#;
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, claims).as_ref());
    let raw = tdx_hcl(claims, rd);
    let ev = Evidence::decode(&raw).unwrap();
    assert_eq!(ev.tee(), TeeKind::AzureTdx);
    let hcl = HclReport::decode(&raw).unwrap();
    let HwReport::Tdx(td) = &hcl.hw_report else {
        panic!("not TDX")
    };
    assert_eq!(td.mr_td, [0xaa; 48]);
    assert_eq!(hcl.runtime_claims["keys"][0]["kid"], "HCLAkPub");
    hcl.check_binding().unwrap();
    let err = Verifier::default()
        .verify(&raw, &Default::default(), AMD_AT)
        .unwrap_err();
    assert!(err.to_string().contains("TD quote"), "{err}");
    // A report_data that does not hash the claims is caught.
    let other = HclReport::decode(&tdx_hcl(claims, [0; 64])).unwrap();
    assert!(matches!(
        other.check_binding(),
        Err(VerifyError::Binding(_))
    ));
}

#[test]
fn hcl_structure_errors_name_their_field() {
    let claims = br#"{}"#;
    let mut raw = tdx_hcl(claims, [0; 64]);
    raw[0x4C0 + 8] = 9; // report type
    let err = HclReport::decode(&raw).unwrap_err();
    assert_eq!(err.field, "hcl_report.runtime_data.report_type");
    let mut raw = tdx_hcl(b"not json", [0; 64]);
    raw[0x4C0 + 8] = 4;
    let err = HclReport::decode(&raw).unwrap_err();
    assert!(err.reason.contains("not JSON"), "{err}");
}

fn with_version_and_cpuid(version: u32, family: u8, model: u8) -> Vec<u8> {
    let mut raw = read("amd/milan-v2-b/report.bin");
    raw[0..4].copy_from_slice(&version.to_le_bytes());
    raw[0x188] = family;
    raw[0x189] = model;
    raw
}

#[test]
fn v3_and_v5_reports_name_their_product() {
    for (family, model, product) in [
        (0x19, 0x01, Product::Milan),
        (0x19, 0x11, Product::Genoa),
        (0x19, 0xa0, Product::Genoa),
        (0x1a, 0x02, Product::Turin),
    ] {
        for version in [3, 5] {
            let r = SnpReport::decode(&with_version_and_cpuid(version, family, model)).unwrap();
            let c = r.cpuid.unwrap();
            assert_eq!(Product::from_cpuid(c.family, c.model), Some(product));
            assert_eq!(r.launch_mit_vector.is_some(), version >= 5);
        }
    }
    let v2 = SnpReport::decode(&read("amd/milan-v2-b/report.bin")).unwrap();
    assert!(v2.cpuid.is_none());
}

#[test]
fn a_given_product_must_agree_with_the_cpuid() {
    let raw = with_version_and_cpuid(3, 0x19, 0x11);
    let err = Verifier::default()
        .verify(
            &raw,
            &amd("amd/milan-v2-b/vcek.der", None, Some(Product::Milan)),
            AMD_AT,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("CPUID says Genoa, but Milan was given"),
        "{err}"
    );
    let raw = with_version_and_cpuid(3, 0x17, 0x31);
    let err = Verifier::default()
        .verify(&raw, &amd("amd/milan-v2-b/vcek.der", None, None), AMD_AT)
        .unwrap_err();
    assert!(
        err.to_string().contains("not a known SEV-SNP product"),
        "{err}"
    );
}

#[test]
fn a_vlek_signed_report_needs_a_vlek() {
    let mut raw = read("amd/milan-v2-b/report.bin");
    raw[0x48] |= 1 << 2; // SIGNING_KEY = VLEK
    assert_eq!(
        SnpReport::decode(&raw).unwrap().signing_key,
        SigningKey::Vlek
    );
    let err = Verifier::default()
        .verify(
            &raw,
            &amd(
                "amd/milan-v2-b/vcek.der",
                Some("amd/chains/ask_ark_milan.pem"),
                Some(Product::Milan),
            ),
            AMD_AT,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("Vlek") && err.to_string().contains("Vcek"),
        "{err}"
    );
    let mut raw = read("amd/milan-v2-b/report.bin");
    raw[0x48] |= 7 << 2; // no signing key
    let err = Verifier::default()
        .verify(
            &raw,
            &amd("amd/milan-v2-b/vcek.der", None, Some(Product::Milan)),
            AMD_AT,
        )
        .unwrap_err();
    assert!(err.to_string().contains("unsigned"), "{err}");
}

#[test]
fn tcb_layouts_differ_on_turin() {
    let raw = RawTcb(u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 9]));
    let milan = raw.parts(false);
    assert_eq!(
        (
            milan.bootloader,
            milan.tee,
            milan.snp,
            milan.microcode,
            milan.fmc
        ),
        (1, 2, 0, 9, None)
    );
    let turin = raw.parts(true);
    assert_eq!(
        (
            turin.fmc,
            turin.bootloader,
            turin.tee,
            turin.snp,
            turin.microcode
        ),
        (Some(1), 2, 3, 4, 9)
    );
}

#[test]
fn a_report_with_reserved_policy_bit_clear_is_malformed() {
    let mut raw = read("amd/milan-v2-b/report.bin");
    raw[0x0A] &= !0x02; // policy bit 17
    let err = SnpReport::decode(&raw).unwrap_err();
    assert_eq!(err.field, "snp_report.policy");
}
