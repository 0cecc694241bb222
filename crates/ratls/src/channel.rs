//! Channel-bound freshness: after the handshake, the client asks for evidence over the connection,
//! and the evidence binds a TLS exporter value (RFC 8446 §7.5) of that very connection. Evidence
//! relayed from another connection, or presented in someone else's handshake, cannot carry this
//! connection's exporter (the relay attack on in-handshake binding, CVE-2026-33697).
//!
//! ```text
//! exporter    = TLS-Exporter("EXPORTER-enclave-os-attestation-v1", no context, 32 bytes)
//! report_data = SHA-512( SHA-256(SPKI DER of the server's leaf) || exporter )
//! ```
//!
//! The leaf is the one the server presented on this connection (a workload's own leaf when the
//! SNI chose it), not the enclave-wide one: the server records which certificate its resolver
//! chose for each connection (`tls::recording`).
//!
//! Request: `GET /.well-known/enclave-os/attestation` over the TLS connection. Response body
//! (JSON): `{"tee", "evidence": hex, "certificates": [hex DER, ...], "spki_sha256": hex}`, where
//! `spki_sha256` names the key the evidence binds (so a mismatch can say which key it was).

use serde::{Deserialize, Serialize};

use crate::binding;
use crate::cert::RatlsError;
use crate::verify::{RatlsVerifier, Report};
#[cfg(feature = "issue")]
use enclave_tee::Tee;

/// The exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-enclave-os-attestation-v1";
/// Where the evidence is served.
pub const PATH: &str = "/.well-known/enclave-os/attestation";

/// The exporter value of a connection (either side).
pub fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], RatlsError> {
    conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(|e| RatlsError::Binding(format!("no TLS exporter on this connection: {e}")))
}

/// The response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEvidence {
    /// The TEE kind.
    pub tee: String,
    /// The quote or report, hex.
    pub evidence: String,
    /// Certificates a verifier needs (SNP), hex DER.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// SHA-256 of the SPKI the evidence binds, hex. Informative: the check is the report data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
}

fn spki_sha256(spki: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, spki))
}

/// Server side (feature `issue`): evidence binding the key of `leaf` (the DER certificate this connection
/// presented) and this connection's exporter.
#[cfg(feature = "issue")]
pub fn respond_for_leaf(
    tee: &dyn Tee,
    leaf: &[u8],
    exporter: &[u8; 32],
) -> Result<String, RatlsError> {
    let cert = crate::cert::RatlsCertificate::parse(leaf)?;
    respond(tee, &cert.spki, exporter)
}

/// Server side (feature `issue`): evidence binding the server's leaf key and this connection's
/// exporter.
#[cfg(feature = "issue")]
pub fn respond(tee: &dyn Tee, leaf_spki: &[u8], exporter: &[u8; 32]) -> Result<String, RatlsError> {
    let bundle = tee
        .evidence(&binding::report_data(leaf_spki, exporter))
        .map_err(|e| RatlsError::Certificate(format!("evidence from {}: {e}", tee.name())))?;
    serde_json::to_string(&ChannelEvidence {
        tee: bundle.tee.as_str().into(),
        evidence: hex::encode(&bundle.evidence),
        certificates: bundle.certificates.iter().map(hex::encode).collect(),
        spki_sha256: Some(spki_sha256(leaf_spki)),
    })
    .map_err(|e| RatlsError::Certificate(e.to_string()))
}

/// Client side: verify a response body against the server's leaf (already verified in the
/// handshake) and this connection's exporter.
pub fn verify(
    verifier: &RatlsVerifier,
    body: &[u8],
    leaf: &[u8],
    exporter: &[u8; 32],
    at: i64,
) -> Result<Report, RatlsError> {
    let answer: ChannelEvidence = serde_json::from_slice(body).map_err(|e| {
        RatlsError::Binding(format!(
            "the attestation response is not the expected JSON: {e}"
        ))
    })?;
    let evidence = hex::decode(&answer.evidence).map_err(|e| {
        RatlsError::Binding(format!(
            "the attestation response's evidence is not hex: {e}"
        ))
    })?;
    let certs = answer
        .certificates
        .iter()
        .map(hex::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            RatlsError::Binding(format!("a certificate in the response is not hex: {e}"))
        })?;
    let cert = crate::cert::RatlsCertificate::parse(leaf)?;
    let appraisal = verifier.appraise(&evidence, certs, at)?;
    if appraisal.report_data != binding::report_data(&cert.spki, exporter) {
        let ours = spki_sha256(&cert.spki);
        if let Some(theirs) = answer.spki_sha256.as_deref()
            && !theirs.eq_ignore_ascii_case(&ours)
        {
            return Err(RatlsError::Binding(format!(
                "the server bound the key with SHA-256 {theirs}, not the key of the certificate \
                 this connection presented ({ours}, '{}')",
                cert.subject
            )));
        }
        return Err(RatlsError::Binding(
            "the evidence does not bind this connection's TLS exporter and the server's key: it \
             was made for another connection (relayed?)"
                .into(),
        ));
    }
    verifier.check_policy(&appraisal, &cert)?;
    Ok(Report {
        appraisal,
        key_binding: crate::cert::KeyBinding::EnclaveOs { mode: "channel" },
        chain_verified: false,
        subject: cert.subject.clone(),
        not_before: enclave_evidence::time::fmt(cert.not_before),
        not_after: enclave_evidence::time::fmt(cert.not_after),
        config_root: cert.config_root.map(hex::encode),
        workload: cert.workload.clone(),
        modules: cert.modules_hex(),
        // The name was checked on the certificate in the handshake; the caller knows it.
        name: None,
    })
}
