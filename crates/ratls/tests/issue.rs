//! Enclave OS RA-TLS leaves: issued on the simulated TEE under an operator CA, verified offline in
//! the issue's order, and each rejection named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_evidence::intel::IntelVerifier;
use enclave_evidence::{Policy, TeeKind, Verifier};
use enclave_ratls::binding::{Freshness, not_before_binding, report_data};
use enclave_ratls::issue::{IntermediaryCa, LeafSpec, issue};
use enclave_ratls::{KeyBinding, RatlsCertificate, RatlsError, RatlsVerifier, Role};
use enclave_tee::sim::{Flavour, SimTee};
use rustls_pki_types::CertificateDer;

struct Setup {
    _dir: tempfile::TempDir,
    tee: SimTee,
    ca: IntermediaryCa,
    root: Vec<u8>,
}

fn setup(flavour: Flavour) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = enclave_ratls::ca::init(&dir.path().join("ca"), "Test Operator").unwrap();
    let ca = IntermediaryCa::from_pem(
        &std::fs::read_to_string(&files.intermediary_cert).unwrap(),
        &std::fs::read_to_string(&files.intermediary_key).unwrap(),
    )
    .unwrap();
    let root = enclave_evidence::input::pem_certificates(&std::fs::read(&files.root_cert).unwrap())
        .unwrap()
        .remove(0);
    let tee = SimTee::open(&dir.path().join("sim"), flavour).unwrap();
    Setup {
        _dir: dir,
        tee,
        ca,
        root,
    }
}

fn spec() -> LeafSpec {
    LeafSpec {
        names: vec!["enclave.test".into(), "127.0.0.1".into()],
        lifetime_secs: 3600,
        config_root: Some([7; 32]),
        modules: vec![(1, [1; 32]), (5, [5; 32]), (7, [9; 32])],
        workload: None,
    }
}

fn verifier(s: &Setup) -> RatlsVerifier {
    RatlsVerifier::new(Verifier::with_intel(IntelVerifier::with_root(
        s.tee.pki().root_der().to_vec(),
        true,
    )))
    .with_operator_root(s.root.clone())
}

fn now() -> i64 {
    enclave_evidence::time::now()
}

#[test]
fn deterministic_leaves_verify_for_each_simulated_tee() {
    for (flavour, kind) in [(Flavour::Sgx, TeeKind::Sgx), (Flavour::Tdx, TeeKind::Tdx)] {
        let s = setup(flavour);
        let leaf = issue(&s.tee, &s.ca, &spec(), &Freshness::Deterministic).unwrap();
        let chain = [CertificateDer::from(s.ca.cert_der())];
        let r = verifier(&s)
            .with_config_root([7; 32])
            .verify(
                &leaf.cert_der,
                &chain,
                now(),
                &Freshness::Deterministic,
                Role::Server,
            )
            .unwrap();
        assert_eq!(r.appraisal.tee, kind);
        assert!(r.appraisal.simulated);
        assert!(r.chain_verified);
        assert_eq!(
            r.key_binding,
            KeyBinding::EnclaveOs {
                mode: "deterministic"
            }
        );
        assert_eq!(
            r.config_root.as_deref(),
            Some(hex::encode([7; 32]).as_str())
        );
        assert_eq!(
            r.appraisal.measurements.primary(),
            enclave_tee::Tee::measurement(&s.tee).as_slice()
        );
    }
}

#[test]
fn the_binding_can_be_recomputed_from_the_certificate_alone() {
    let s = setup(Flavour::Sgx);
    let leaf = issue(&s.tee, &s.ca, &spec(), &Freshness::Deterministic).unwrap();
    let c = RatlsCertificate::parse(&leaf.cert_der).unwrap();
    let quote = enclave_evidence::intel::Quote::decode(c.evidence()).unwrap();
    let binding = not_before_binding(c.not_before);
    assert_eq!(binding.len(), 20, "YYYY-MM-DDTHH:MM:SSZ");
    assert_eq!(
        *quote.body.report_data(),
        report_data(&c.spki, binding.as_bytes())
    );
    // The DICE copy carries the same key hash and the binding as its nonce.
    let d = c.dice.as_ref().unwrap();
    assert_eq!(d.nonce.as_deref(), Some(binding.as_bytes()));
    assert_eq!(d.evidence, c.evidence());
}

#[test]
fn nonce_leaves_bind_the_clients_nonce() {
    let s = setup(Flavour::Tdx);
    let nonce = b"client nonce 0123456789abcdef".to_vec();
    let leaf = issue(&s.tee, &s.ca, &spec(), &Freshness::Nonce(nonce.clone())).unwrap();
    let chain = [CertificateDer::from(s.ca.cert_der())];
    let r = verifier(&s)
        .verify(
            &leaf.cert_der,
            &chain,
            now(),
            &Freshness::Nonce(nonce),
            Role::Server,
        )
        .unwrap();
    assert_eq!(r.key_binding, KeyBinding::EnclaveOs { mode: "nonce" });
    // Another nonce (a replayed certificate) is refused; so is reading it as deterministic.
    let err = verifier(&s)
        .verify(
            &leaf.cert_der,
            &chain,
            now(),
            &Freshness::Nonce(b"other".to_vec()),
            Role::Server,
        )
        .unwrap_err();
    assert!(matches!(err, RatlsError::Binding(_)), "{err}");
    let err = verifier(&s)
        .verify(
            &leaf.cert_der,
            &chain,
            now(),
            &Freshness::Deterministic,
            Role::Server,
        )
        .unwrap_err();
    assert!(matches!(err, RatlsError::Binding(_)), "{err}");
}

#[test]
fn each_rejection_names_its_reason() {
    let s = setup(Flavour::Sgx);
    let leaf = issue(&s.tee, &s.ca, &spec(), &Freshness::Deterministic).unwrap();
    let chain = [CertificateDer::from(s.ca.cert_der())];
    let det = Freshness::Deterministic;

    // Wrong operator root.
    let other = setup(Flavour::Sgx);
    let err = verifier(&s)
        .with_operator_root(other.root.clone())
        .verify(&leaf.cert_der, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(matches!(err, RatlsError::Chain(_)), "{err}");

    // Simulated evidence that is not trusted: Intel's root only.
    let err = RatlsVerifier::new(Verifier::default())
        .with_operator_root(s.root.clone())
        .verify(&leaf.cert_der, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(err.to_string().contains("--trust-sim"), "{err}");

    // Stale: after notAfter.
    let err = verifier(&s)
        .verify(
            &leaf.cert_der,
            &chain,
            leaf.not_after + 1,
            &det,
            Role::Server,
        )
        .unwrap_err();
    assert!(
        matches!(err, RatlsError::Chain(_) | RatlsError::Validity(_)),
        "{err}"
    );

    // Wrong config root.
    let err = verifier(&s)
        .with_config_root([8; 32])
        .verify(&leaf.cert_der, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(matches!(err, RatlsError::ConfigRoot(_)), "{err}");

    // A policy on the measurement.
    let policy = Policy::from_toml(
        &format!(
            "allow_simulated = true\n[sgx]\nmr_enclave = \"{}\"\n",
            "00".repeat(32)
        ),
        "p",
    )
    .unwrap();
    let err = verifier(&s)
        .with_policy(policy)
        .verify(&leaf.cert_der, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(err.to_string().contains("sgx.mr_enclave"), "{err}");

    // Tampered evidence (no operator root, so the broken certificate signature is not what
    // catches it): flip a byte of the quote body inside the certificate.
    let c = RatlsCertificate::parse(&leaf.cert_der).unwrap();
    let q = c.evidence();
    let pos = leaf.cert_der.windows(q.len()).position(|w| w == q).unwrap();
    let mut tampered = leaf.cert_der.clone();
    tampered[pos + 48 + 64] ^= 1;
    let no_root = RatlsVerifier::new(Verifier::with_intel(IntelVerifier::with_root(
        s.tee.pki().root_der().to_vec(),
        true,
    )));
    let err = no_root
        .verify(&tampered, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(matches!(err, RatlsError::Evidence(_)), "{err}");
    // The same flip in the DICE copy only: the two copies no longer agree.
    let second = pos
        + q.len()
        + leaf.cert_der[pos + q.len()..]
            .windows(q.len())
            .position(|w| w == q)
            .unwrap();
    let mut tampered = leaf.cert_der.clone();
    tampered[second + 48 + 64] ^= 1;
    let err = no_root
        .verify(&tampered, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(err.to_string().contains("DICE copy"), "{err}");

    // Wrong key binding: another leaf's evidence under this key is what a relay would present;
    // here, the same certificate checked against another notBefore.
    let mut moved = c.clone();
    moved.not_before += 1;
    let a = Verifier::with_intel(IntelVerifier::with_root(
        s.tee.pki().root_der().to_vec(),
        true,
    ))
    .verify(c.evidence(), &Default::default(), now())
    .unwrap();
    assert!(matches!(
        moved.check_key_binding(&a.report_data, &det),
        Err(RatlsError::Binding(_))
    ));
}

#[test]
fn lifetimes_longer_than_a_day_are_refused_at_issue() {
    let s = setup(Flavour::Sgx);
    let mut long = spec();
    long.lifetime_secs = 2 * 24 * 3600;
    assert!(
        issue(&s.tee, &s.ca, &long, &Freshness::Deterministic)
            .unwrap_err()
            .to_string()
            .contains("lifetime")
    );
}

/// The binding recomputed by scripts/ratls-binding.py: openssl and Python's standard library
/// only, none of our code.
#[test]
fn an_independent_script_recomputes_the_binding() {
    for flavour in [Flavour::Sgx, Flavour::Tdx] {
        let s = setup(flavour);
        let leaf = issue(&s.tee, &s.ca, &spec(), &Freshness::Deterministic).unwrap();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(&leaf.cert_der)
        );
        let path = s._dir.path().join("leaf.pem");
        std::fs::write(&path, pem).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/ratls-binding.py"
        );
        let out = std::process::Command::new("python3")
            .arg(script)
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("report_data matches"), "{text}");
    }
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
