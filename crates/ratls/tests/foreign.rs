//! RA-TLS certificates from other implementations (Gramine, rats-tls; real SGX machines): read,
//! key binding checked, quote signature chains verified to Intel's root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_evidence::{Platform, TcbStatus, TeeKind, Verifier};
use enclave_ratls::dice::HashAlg;
use enclave_ratls::{KeyBinding, RatlsCertificate, RatlsError};

fn cert(name: &str) -> RatlsCertificate {
    let pem = std::fs::read(format!(
        "{}/../../testdata/vectors/ratls/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let der = enclave_evidence::input::pem_certificates(&pem)
        .unwrap()
        .remove(0);
    RatlsCertificate::parse(&der).unwrap()
}

fn check(name: &str, at: i64) -> enclave_evidence::Appraisal {
    let c = cert(name);
    c.check_validity(at).unwrap();
    let a = Verifier::default()
        .verify(c.evidence(), &Default::default(), at)
        .unwrap();
    assert_eq!(a.tee, TeeKind::Sgx);
    assert_eq!(
        a.status,
        TcbStatus::Unknown,
        "no collateral: the status is not guessed"
    );
    let binding = c
        .check_key_binding(
            &a.report_data,
            &enclave_ratls::binding::Freshness::Deterministic,
        )
        .unwrap();
    assert!(matches!(
        binding,
        KeyBinding::DiceClaims {
            alg: HashAlg::Sha256 | HashAlg::Sha384 | HashAlg::Sha512
        }
    ));
    a
}

#[test]
fn gramine_certificate() {
    let a = check("gramine-cert.pem", 1_752_919_277);
    let Platform::Intel { fmspc, .. } = a.platform else {
        panic!()
    };
    assert_eq!(hex::encode(fmspc), "00606a000000");
}

#[test]
fn rats_tls_certificate_with_extra_claims_and_its_expiry() {
    // Valid 2023-02-22T16:10:22Z to 2024-02-22T17:10:22Z.
    check("rats-tls-cert.pem", 1_677_100_000);
    let err = cert("rats-tls-cert.pem")
        .check_validity(1_752_919_277)
        .unwrap_err();
    assert!(
        matches!(err, RatlsError::Validity(_))
            && err.to_string().contains("expired at 2024-02-22T17:10:22Z"),
        "{err}"
    );
}

#[test]
fn a_key_binding_that_does_not_hold_is_rejected() {
    let mut c = cert("gramine-cert.pem");
    let a = Verifier::default()
        .verify(c.evidence(), &Default::default(), 1_752_919_277)
        .unwrap();
    // Another key in the certificate.
    let mut other = c.clone();
    let last = other.spki.len() - 1;
    other.spki[last] ^= 1;
    assert!(
        other
            .check_key_binding(
                &a.report_data,
                &enclave_ratls::binding::Freshness::Deterministic
            )
            .unwrap_err()
            .to_string()
            .contains("pubkey-hash")
    );
    // Report data that does not hash the claims.
    let mut rd = a.report_data;
    rd[0] ^= 1;
    assert!(
        c.check_key_binding(&rd, &enclave_ratls::binding::Freshness::Deterministic)
            .unwrap_err()
            .to_string()
            .contains("SHA-256 of the DICE claims")
    );
    // Changed claims.
    if let Some(d) = c.dice.as_mut() {
        d.claims.push(0);
    }
    assert!(
        c.check_key_binding(
            &a.report_data,
            &enclave_ratls::binding::Freshness::Deterministic
        )
        .is_err()
    );
}

#[test]
fn certificates_without_evidence_or_with_bad_cbor_are_named() {
    let plain = enclave_evidence::input::pem_certificates(
        &std::fs::read(format!(
            "{}/../../testdata/vectors/amd/chains/ask_ark_milan.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap()
    .remove(0);
    assert!(
        RatlsCertificate::parse(&plain)
            .unwrap_err()
            .to_string()
            .contains("not an RA-TLS certificate")
    );
    for bad in [
        &b"\x00"[..],
        b"\xd9\xea\x60\x80",
        b"\xd9\xea\x60\x82\x41\x00\x41\x00",
    ] {
        assert!(
            matches!(enclave_ratls::dice::decode(bad), Err(RatlsError::Dice(_))),
            "{bad:?}"
        );
    }
}
