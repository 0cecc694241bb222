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

/// The rules the Gramine and rats-tls certificates satisfy, and rats-tls's verifier enforces
/// (`dice_parse_evidence_buffer_with_tag`, `dice_parse_claims_buffer`,
/// `dice_parse_pubkey_hash_value_buffer`), written here from the raw extension with
/// x509-parser, ciborium and ring only: no code of this crate reads the certificate.
fn interoperable_ra_tls_rules(der: &[u8]) -> Result<(), String> {
    use ciborium::value::Value;
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.23.133.5.4.9")
        .ok_or("no TCG DICE tagged-evidence extension")?;
    let v: Value = ciborium::de::from_reader(ext.value).map_err(|e| e.to_string())?;
    let Value::Tag(60000, inner) = v else {
        return Err("not CBOR tag 60000".into());
    };
    let Value::Array(items) = *inner else {
        return Err("the tag does not wrap an array".into());
    };
    let [Value::Bytes(quote), Value::Bytes(claims)] = items.as_slice() else {
        return Err("not [bstr quote, bstr claims]".into());
    };
    let map: Value = ciborium::de::from_reader(claims.as_slice()).map_err(|e| e.to_string())?;
    let Value::Map(entries) = map else {
        return Err("claims are not a map".into());
    };
    let mut pubkey_hash = None;
    for (k, v) in &entries {
        let (Value::Text(k), Value::Bytes(v)) = (k, v) else {
            return Err(format!("claim {k:?}: not a text name with a bstr value"));
        };
        if k == "pubkey-hash" {
            let entry: Value =
                ciborium::de::from_reader(v.as_slice()).map_err(|e| e.to_string())?;
            let Value::Array(e) = entry else {
                return Err("pubkey-hash does not hold an array".into());
            };
            let [Value::Integer(alg), Value::Bytes(hash)] = e.as_slice() else {
                return Err("pubkey-hash is not [uint, bstr]".into());
            };
            let alg = match i128::from(*alg) {
                1 => &ring::digest::SHA256,
                7 => &ring::digest::SHA384,
                8 => &ring::digest::SHA512,
                other => return Err(format!("hash-alg-id {other}")),
            };
            if hash.len() != alg.output_len() {
                return Err("hash length does not match its algorithm".into());
            }
            pubkey_hash = Some((alg, hash.clone()));
        }
    }
    let (alg, hash) = pubkey_hash.ok_or("no pubkey-hash claim")?;
    if ring::digest::digest(alg, cert.public_key().raw).as_ref() != hash.as_slice() {
        return Err("pubkey-hash is not the hash of the certificate's SubjectPublicKeyInfo".into());
    }
    // report_data: the last 64 bytes of the SGX report body (v3) or of the TD report (v4).
    let version = u16::from_le_bytes([quote[0], quote[1]]);
    let tee_type = u32::from_le_bytes([quote[4], quote[5], quote[6], quote[7]]);
    let at = match (version, tee_type) {
        (3, 0) | (4, 0) => 48 + 320,
        (4, 0x81) => 48 + 520,
        other => return Err(format!("quote version/TEE {other:?}")),
    };
    let rd = &quote[at..at + 64];
    if rd[..32] != *ring::digest::digest(&ring::digest::SHA256, claims).as_ref() {
        return Err("report_data[0..32] is not SHA-256 of the claims buffer".into());
    }
    if rd[32..].iter().any(|b| *b != 0) {
        return Err("report_data[32..64] is not zero".into());
    }
    Ok(())
}

fn vector_der(name: &str) -> Vec<u8> {
    let pem = std::fs::read(format!(
        "{}/../../testdata/vectors/ratls/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    enclave_evidence::input::pem_certificates(&pem)
        .unwrap()
        .remove(0)
}

#[test]
fn the_foreign_certificates_follow_the_interoperable_rules() {
    for name in ["gramine-cert.pem", "rats-tls-cert.pem"] {
        interoperable_ra_tls_rules(&vector_der(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The same rules in scripts/ratls-binding.py (openssl and Python only), which the DICE
        // leaves of tests/issue.rs also pass.
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/ratls-binding.py"
            ))
            .arg(format!(
                "{}/../../testdata/vectors/ratls/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("dice rules:   hold"),
            "{name}: {text}"
        );
    }
}

/// Item 14: a leaf issued in the DICE binding on the simulator is read by the same path that reads
/// the Gramine and rats-tls certificates, and satisfies the same independent rules; a seed leaf
/// carries no DICE copy whose claims its evidence does not bind.
#[test]
#[cfg(feature = "issue")]
fn dice_leaves_from_the_simulator_pass_the_rules_foreign_certificates_pass() {
    use enclave_evidence::intel::IntelVerifier;
    use enclave_ratls::binding::{BindingFormat, Freshness};
    use enclave_ratls::issue::{IntermediaryCa, LeafSpec, issue};
    use enclave_tee::sim::{Flavour, SimTee};
    for flavour in [Flavour::Sgx, Flavour::Tdx] {
        let dir = tempfile::tempdir().unwrap();
        let files = enclave_ratls::ca::init(&dir.path().join("ca"), "Test").unwrap();
        let ca = IntermediaryCa::from_pem(
            &std::fs::read_to_string(&files.intermediary_cert).unwrap(),
            &std::fs::read_to_string(&files.intermediary_key).unwrap(),
        )
        .unwrap();
        let tee = SimTee::open(&dir.path().join("sim"), flavour).unwrap();
        let mut spec = LeafSpec {
            names: vec!["enclave.test".into()],
            lifetime_secs: 3600,
            config_root: Some([7; 32]),
            modules: vec![],
            workload: None,
            binding: BindingFormat::Dice,
        };
        let leaf = issue(&tee, &ca, &spec, &Freshness::Deterministic).unwrap();
        interoperable_ra_tls_rules(&leaf.cert_der).unwrap_or_else(|e| panic!("{flavour:?}: {e}"));

        // The reading path of `check` above: parse, appraise, key binding.
        let c = RatlsCertificate::parse(&leaf.cert_der).unwrap();
        assert!(c.raw_evidence.is_none(), "the quote is carried once");
        let a = Verifier::with_intel(IntelVerifier::with_root(
            tee.pki().root_der().to_vec(),
            true,
        ))
        .verify(c.evidence(), &Default::default(), leaf.not_before)
        .unwrap();
        let binding = c
            .check_key_binding(&a.report_data, &Freshness::Deterministic)
            .unwrap();
        assert_eq!(
            binding,
            KeyBinding::EnclaveOsDice {
                mode: "deterministic",
                config_root_bound: true,
                workload_bound: false,
            }
        );
        // The same certificate, read without its Enclave OS extensions and claims, is what a
        // Gramine or rats-tls verifier sees: the DICE rules alone hold.
        let mut bare = c.clone();
        bare.config_root = None;
        if let Some(d) = bare.dice.as_mut() {
            d.other.clear();
        }
        assert_eq!(
            bare.check_key_binding(&a.report_data, &Freshness::Deterministic)
                .unwrap(),
            KeyBinding::DiceClaims {
                alg: HashAlg::Sha256
            }
        );

        // The seed binding: the raw quote only, no DICE copy the evidence does not bind.
        spec.binding = BindingFormat::Seed;
        let seed = issue(&tee, &ca, &spec, &Freshness::Deterministic).unwrap();
        let err = interoperable_ra_tls_rules(&seed.cert_der).unwrap_err();
        assert!(err.contains("no TCG DICE"), "{err}");
        assert!(
            RatlsCertificate::parse(&seed.cert_der)
                .unwrap()
                .dice
                .is_none()
        );
    }
}

/// A DICE extension beside a raw evidence extension (what Enclave OS leaves carried before the
/// binding became a setting): refused, since verifiers that read one form or the other would
/// disagree.
#[test]
fn a_certificate_carrying_its_evidence_twice_is_refused() {
    use rcgen::{CertificateParams, CustomExtension, KeyPair};
    let gramine = cert("gramine-cert.pem");
    let dice_ext = {
        use x509_parser::prelude::*;
        let der = vector_der("gramine-cert.pem");
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        c.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "2.23.133.5.4.9")
            .unwrap()
            .value
            .to_vec()
    };
    let mut p = CertificateParams::default();
    p.custom_extensions = vec![
        CustomExtension::from_oid_content(
            &[1, 2, 840, 113741, 1, 13, 1, 0],
            gramine.evidence().to_vec(),
        ),
        CustomExtension::from_oid_content(&[2, 23, 133, 5, 4, 9], dice_ext),
    ];
    let key = KeyPair::generate().unwrap();
    let der = p.self_signed(&key).unwrap().der().to_vec();
    let err = RatlsCertificate::parse(&der).unwrap_err();
    assert!(
        matches!(err, RatlsError::Certificate(_))
            && err.to_string().contains("carries its evidence twice"),
        "{err}"
    );
}

#[test]
fn claims_outside_the_interoperable_format_are_named() {
    use ciborium::value::{Integer, Value};
    let wrap = |claims: Value| {
        let mut c = Vec::new();
        ciborium::ser::into_writer(&claims, &mut c).unwrap();
        let mut out = Vec::new();
        ciborium::ser::into_writer(
            &Value::Tag(
                60000,
                Box::new(Value::Array(vec![
                    Value::Bytes(vec![0; 8]),
                    Value::Bytes(c),
                ])),
            ),
            &mut out,
        )
        .unwrap();
        out
    };
    let entry = |alg: u8, len: usize| {
        let mut e = Vec::new();
        ciborium::ser::into_writer(
            &Value::Array(vec![
                Value::Integer(Integer::from(alg)),
                Value::Bytes(vec![1; len]),
            ]),
            &mut e,
        )
        .unwrap();
        e
    };
    let text = |s: &str| Value::Text(s.into());
    for (claims, reason) in [
        // What Enclave OS leaves used to write: the hash entry as a bare array.
        (
            Value::Map(vec![(
                text("pubkey-hash"),
                Value::Array(vec![
                    Value::Integer(Integer::from(1u8)),
                    Value::Bytes(vec![1; 32]),
                ]),
            )]),
            "claim 'pubkey-hash' is not a bstr",
        ),
        (
            Value::Map(vec![(text("pubkey-hash"), Value::Bytes(entry(1, 31)))]),
            "31 bytes, not the 32",
        ),
        (
            Value::Map(vec![
                (text("pubkey-hash"), Value::Bytes(entry(1, 32))),
                (text("nonce"), Value::Integer(Integer::from(5u8))),
            ]),
            "claim 'nonce' is not a bstr",
        ),
        (
            Value::Map(vec![
                (text("pubkey-hash"), Value::Bytes(entry(1, 32))),
                (text("pubkey-hash"), Value::Bytes(entry(8, 64))),
            ]),
            "claim 'pubkey-hash' appears twice",
        ),
        (
            Value::Map(vec![(
                Value::Integer(Integer::from(1u8)),
                Value::Bytes(entry(1, 32)),
            )]),
            "its name is not a text string",
        ),
    ] {
        let err = enclave_ratls::dice::decode(&wrap(claims)).unwrap_err();
        assert!(
            matches!(err, RatlsError::Dice(_)) && err.to_string().contains(reason),
            "{reason}: {err}"
        );
    }
}
