//! `ca init`: a root and an intermediary that real verifiers accept as a chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use enclave_ratls::ca;

fn der(path: &std::path::Path) -> Vec<u8> {
    enclave_evidence::input::pem_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

#[test]
fn the_intermediary_chains_to_the_root_and_keys_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::init(dir.path(), "Example Corp").unwrap();
    for key in [&files.root_key, &files.intermediary_key] {
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let root = der(&files.root_cert);
    let int = der(&files.intermediary_cert);
    assert_eq!(
        files.root_sha256,
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &root))
    );

    let (_, r) = x509_parser::parse_x509_certificate(&root).unwrap();
    let (_, i) = x509_parser::parse_x509_certificate(&int).unwrap();
    assert!(r.is_ca() && i.is_ca());
    assert_eq!(i.issuer(), r.subject());
    assert_eq!(
        i.basic_constraints()
            .unwrap()
            .unwrap()
            .value
            .path_len_constraint,
        Some(0)
    );
    assert!(
        i.subject()
            .to_string()
            .contains("Example Corp Enclave OS Intermediary CA")
    );
    i.verify_signature(Some(r.public_key())).unwrap();

    // The intermediary is a valid trust anchor input for webpki (the RA-TLS leaves it will sign
    // are verified this way).
    let anchor_der = rustls_pki_types::CertificateDer::from(root.as_slice());
    webpki::anchor_from_trusted_cert(&anchor_der).unwrap();

    // A second init into the same directory refuses, naming the file.
    let err = ca::init(dir.path(), "Example Corp").unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}
