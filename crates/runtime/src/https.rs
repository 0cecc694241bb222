//! What the runtime's own HTTPS calls (a JWKS URL, a witness's counters) share beyond the
//! client itself (`enclave-http`): the egress trust and how a failure is told.
//!
//! The caller supplies the rustls configuration, so what is trusted is always explicit: the
//! egress CA bundle for a JWKS ([`pinned`]), an RA-TLS verifier for the witness.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// A client configuration trusting only the CA certificates in `pem` (the egress bundle).
pub(crate) fn pinned(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("the CA bundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("the CA bundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(enclave_ratls::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A failed call, with an RA-TLS refusal's reason spelt out rather than rustls's rendering of
/// it.
pub(crate) fn describe(e: &enclave_http::Error) -> String {
    match e.tls_error().and_then(enclave_ratls::tls::rejection) {
        Some(r) => format!("{}: its RA-TLS certificate was refused: {r}", e.url()),
        None => e.to_string(),
    }
}
