//! Enclave OS RA-TLS leaves: issued on the simulated TEE under an operator CA, verified offline in
//! the issue's order, and each rejection named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_evidence::intel::IntelVerifier;
use enclave_evidence::{Policy, TeeKind, Verifier};
use enclave_ratls::binding::{BindingFormat, Freshness, not_before_binding, report_data};
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
        binding: Default::default(),
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
    // The quote is carried once: no DICE copy whose claims the evidence does not bind.
    assert!(c.dice.is_none());
    let q = c.evidence();
    assert_eq!(
        leaf.cert_der.windows(q.len()).filter(|w| *w == q).count(),
        1
    );
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
    for (flavour, leaf_spec, shown) in [
        (Flavour::Sgx, spec(), "report_data matches"),
        (Flavour::Tdx, spec(), "report_data matches"),
        (
            Flavour::Sgx,
            dice_spec(),
            "dice rules:   hold; report_data matches",
        ),
        (
            Flavour::Tdx,
            dice_spec(),
            "dice rules:   hold; report_data matches",
        ),
    ] {
        let s = setup(flavour);
        let leaf = issue(&s.tee, &s.ca, &leaf_spec, &Freshness::Deterministic).unwrap();
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
        assert!(text.contains(shown), "{text}");
        if leaf_spec.binding == BindingFormat::Dice {
            // The script reads the config root the evidence binds, and the notBefore nonce.
            assert!(
                text.contains(&format!("config-root:  {}", hex::encode([7; 32])))
                    && text.contains("nonce:"),
                "{text}"
            );
        }
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

fn dice_spec() -> LeafSpec {
    LeafSpec {
        binding: BindingFormat::Dice,
        ..spec()
    }
}

/// What a host holding the intermediary CA key can make without the TEE: a certificate for the
/// genuine leaf's key and evidence, with extensions of its choosing.
fn forge(s: &Setup, genuine: &[u8], extensions: Vec<(&[u64], Vec<u8>)>) -> Vec<u8> {
    use rcgen::{
        CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType,
        SubjectPublicKeyInfo,
    };
    let c = RatlsCertificate::parse(genuine).unwrap();
    let mut p = CertificateParams::default();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(c.not_before).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(c.not_after).unwrap();
    p.subject_alt_names = vec![SanType::DnsName("enclave.test".try_into().unwrap())];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.custom_extensions = extensions
        .into_iter()
        .map(|(oid, v)| CustomExtension::from_oid_content(oid, v))
        .collect();
    let key = KeyPair::from_pem(
        &std::fs::read_to_string(s._dir.path().join("ca/intermediary.key.pem")).unwrap(),
    )
    .unwrap();
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(s.ca.cert_der()), key).unwrap();
    p.signed_by(&SubjectPublicKeyInfo::from_der(&c.spki).unwrap(), &issuer)
        .unwrap()
        .der()
        .to_vec()
}

fn extension(der: &[u8], oid: &str) -> Vec<u8> {
    use x509_parser::prelude::*;
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .unwrap()
        .value
        .to_vec()
}

const DICE: &[u64] = &[2, 23, 133, 5, 4, 9];
const SGX_QUOTE: &[u64] = &[1, 2, 840, 113741, 1, 13, 1, 0];
const CONFIG_ROOT: &[u64] = &[1, 3, 6, 1, 4, 1, 65230, 1, 1];

/// Item 14: the DICE binding carries the quote once, as TCG DICE tagged evidence whose claims
/// hash to report_data[0..32], and verifies in both freshness modes.
#[test]
fn dice_leaves_carry_the_quote_once_and_verify_in_both_modes() {
    for (flavour, kind) in [(Flavour::Sgx, TeeKind::Sgx), (Flavour::Tdx, TeeKind::Tdx)] {
        let s = setup(flavour);
        let chain = [CertificateDer::from(s.ca.cert_der())];
        let leaf = issue(&s.tee, &s.ca, &dice_spec(), &Freshness::Deterministic).unwrap();
        let c = RatlsCertificate::parse(&leaf.cert_der).unwrap();
        assert!(c.raw_evidence.is_none());
        let d = c.dice.as_ref().unwrap();
        let q = c.evidence();
        assert_eq!(
            leaf.cert_der.windows(q.len()).filter(|w| *w == q).count(),
            1,
            "the quote is carried once"
        );
        assert_eq!(
            d.nonce.as_deref(),
            Some(not_before_binding(c.not_before).as_bytes())
        );
        assert_eq!(d.claim("enclave-os-config-root"), Some(&[7u8; 32][..]));
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
        assert_eq!(
            r.key_binding,
            KeyBinding::EnclaveOsDice {
                mode: "deterministic",
                config_root_bound: true,
                workload_bound: false
            }
        );
        assert_eq!(
            r.appraisal.report_data,
            enclave_ratls::dice::report_data(&d.claims)
        );

        let nonce = b"dice client nonce".to_vec();
        let leaf = issue(
            &s.tee,
            &s.ca,
            &dice_spec(),
            &Freshness::Nonce(nonce.clone()),
        )
        .unwrap();
        let r = verifier(&s)
            .verify(
                &leaf.cert_der,
                &chain,
                now(),
                &Freshness::Nonce(nonce),
                Role::Server,
            )
            .unwrap();
        assert!(matches!(
            r.key_binding,
            KeyBinding::EnclaveOsDice { mode: "nonce", .. }
        ));
        for (freshness, reason) in [
            (
                Freshness::Nonce(b"another".to_vec()),
                "not the nonce this client sent",
            ),
            (Freshness::Deterministic, "not the certificate's notBefore"),
        ] {
            let err = verifier(&s)
                .verify(&leaf.cert_der, &chain, now(), &freshness, Role::Server)
                .unwrap_err();
            assert!(
                matches!(err, RatlsError::Binding(_)) && err.to_string().contains(reason),
                "{err}"
            );
        }
    }
}

/// Item 7: in the DICE binding the evidence binds the config root, so a host holding the CA key
/// cannot certify another one for the same key and evidence; in the seed binding it can (which
/// `docs/ratls.md` says).
#[test]
fn the_ca_key_alone_cannot_change_a_dice_leafs_config_root() {
    let s = setup(Flavour::Sgx);
    let chain = [CertificateDer::from(s.ca.cert_der())];
    let det = Freshness::Deterministic;
    let leaf = issue(&s.tee, &s.ca, &dice_spec(), &det).unwrap();
    let dice = extension(&leaf.cert_der, "2.23.133.5.4.9");

    // The same key and evidence re-certified under config root 8…8 instead of 7…7.
    let forged = forge(
        &s,
        &leaf.cert_der,
        vec![(DICE, dice.clone()), (CONFIG_ROOT, vec![8; 32])],
    );
    let err = verifier(&s)
        .with_config_root([8; 32])
        .verify(&forged, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(
        matches!(err, RatlsError::ConfigRoot(_))
            && err.to_string().contains("enclave-os-config-root claim")
            && err.to_string().contains(&hex::encode([8; 32])),
        "{err}"
    );
    // Without the extension the evidence still names the root it binds.
    let forged = forge(&s, &leaf.cert_der, vec![(DICE, dice)]);
    let err = verifier(&s)
        .verify(&forged, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("but the certificate has no config root extension"),
        "{err}"
    );
    // Evidence whose claims carry no config root cannot be given one by the certificate.
    let mut rootless = dice_spec();
    rootless.config_root = None;
    let bare = issue(&s.tee, &s.ca, &rootless, &det).unwrap();
    let forged = forge(
        &s,
        &bare.cert_der,
        vec![
            (DICE, extension(&bare.cert_der, "2.23.133.5.4.9")),
            (CONFIG_ROOT, vec![8; 32]),
        ],
    );
    let err = verifier(&s)
        .verify(&forged, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(
        err.to_string().contains("the evidence does not bind it"),
        "{err}"
    );

    // The seed binding: the same forgery verifies, under the root the host chose.
    let seed = issue(&s.tee, &s.ca, &spec(), &det).unwrap();
    let forged = forge(
        &s,
        &seed.cert_der,
        vec![
            (
                SGX_QUOTE,
                extension(&seed.cert_der, "1.2.840.113741.1.13.1.0"),
            ),
            (CONFIG_ROOT, vec![8; 32]),
        ],
    );
    let r = verifier(&s)
        .with_config_root([8; 32])
        .verify(&forged, &chain, now(), &det, Role::Server)
        .unwrap();
    assert_eq!(
        r.key_binding,
        KeyBinding::EnclaveOs {
            mode: "deterministic"
        }
    );
}

/// Item 7: a workload's DICE leaf binds its code digest and its own config root.
#[test]
fn a_workload_dice_leaf_binds_its_code() {
    let s = setup(Flavour::Sgx);
    let chain = [CertificateDer::from(s.ca.cert_der())];
    let det = Freshness::Deterministic;
    let mut spec = dice_spec();
    spec.config_root = Some([3; 32]);
    spec.workload = Some(enclave_ratls::issue::WorkloadIdentity {
        config_root: [3; 32],
        code_digest: [4; 32],
        image: Some("registry.test/app@sha256:0404".into()),
        image_config: Some([5; 32]),
        runtime_spec: Some([6; 32]),
        decrypted_code: None,
        key_reference: Some("kbs:///default/key/image".into()),
        key_source: "tee-generated".into(),
        declared: Default::default(),
    });
    spec.modules = vec![(4, [7; 32])];
    let leaf = issue(&s.tee, &s.ca, &spec, &det).unwrap();
    let r = verifier(&s)
        .verify(&leaf.cert_der, &chain, now(), &det, Role::Server)
        .unwrap();
    // A container's identity reads back: image, configuration digest (3.7), runtime spec
    // hash (3.8), and the engine versions' module hash (2.4).
    let w = r.workload.clone().unwrap();
    assert_eq!(w.image.as_deref(), Some("registry.test/app@sha256:0404"));
    assert_eq!(
        (w.image_config, w.runtime_spec),
        (Some([5; 32]), Some([6; 32]))
    );
    // An encrypted image's key reference (3.9) reads back, and the evidence binds it.
    assert_eq!(w.key_reference.as_deref(), Some("kbs:///default/key/image"));
    assert_eq!(w.decrypted_code, None);
    assert_eq!(
        r.modules.get(&4).map(String::as_str),
        Some(hex::encode([7; 32]).as_str())
    );
    assert_eq!(
        r.key_binding,
        KeyBinding::EnclaveOsDice {
            mode: "deterministic",
            config_root_bound: true,
            workload_bound: true
        }
    );
    // Other code certified for the same key and evidence.
    let forged = forge(
        &s,
        &leaf.cert_der,
        vec![
            (DICE, extension(&leaf.cert_der, "2.23.133.5.4.9")),
            (CONFIG_ROOT, vec![3; 32]),
            (&[1, 3, 6, 1, 4, 1, 65230, 3, 1], vec![3; 32]),
            (&[1, 3, 6, 1, 4, 1, 65230, 3, 2], vec![5; 32]),
            (&[1, 3, 6, 1, 4, 1, 65230, 3, 4], b"tee-generated".to_vec()),
        ],
    );
    let err = verifier(&s)
        .verify(&forged, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(
        matches!(err, RatlsError::Binding(_))
            && err
                .to_string()
                .contains("enclave-os-workload-code claim 0404"),
        "{err}"
    ); // The same code said to be decrypted with another key: the evidence binds the key
    // reference too (3.9), so the certificate's claim is refused.
    let forged = forge(
        &s,
        &leaf.cert_der,
        vec![
            (DICE, extension(&leaf.cert_der, "2.23.133.5.4.9")),
            (CONFIG_ROOT, vec![3; 32]),
            (&[1, 3, 6, 1, 4, 1, 65230, 3, 1], vec![3; 32]),
            (&[1, 3, 6, 1, 4, 1, 65230, 3, 2], vec![4; 32]),
            (&[1, 3, 6, 1, 4, 1, 65230, 3, 4], b"tee-generated".to_vec()),
            (
                &[1, 3, 6, 1, 4, 1, 65230, 3, 9],
                b"kbs:///default/key/other".to_vec(),
            ),
        ],
    );
    let err = verifier(&s)
        .verify(&forged, &chain, now(), &det, Role::Server)
        .unwrap_err();
    assert!(
        matches!(err, RatlsError::Binding(_))
            && err
                .to_string()
                .contains("enclave-os-workload-key-reference claim"),
        "{err}"
    );
}
