//! The operator's migration authorization: a statement naming the one build that may receive a
//! store's secrets, signed with the operator's root CA key (ECDSA P-256, SHA-256).
//!
//! What is signed is not the JSON but a canonical text rebuilt from the decoded fields, so two
//! encodings of the same values cannot carry different meanings:
//!
//! ```text
//! enclave-os migration authorization v1
//! source-store: <32 lowercase hex digits>
//! target-measurement: <lowercase hex>
//! target-svn: <decimal>
//! expires: <unix seconds, decimal>
//! ```
//!
//! Each line ends with a single `\n`. The signature is ASN.1 DER, base64 (standard alphabet).

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

/// The `format` of an authorization this build reads.
pub const FORMAT: &str = "enclave-os/migration-authorization/v1";

/// What the operator authorizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The store whose secrets may move (its id, from `enclave-os migrate source`).
    pub source_store: [u8; 16],
    /// The one build that may receive them.
    pub target_measurement: Vec<u8>,
    /// That build's security version (SGX ISVSVN): it must be exactly this, and not lower than
    /// the exporting build's.
    pub target_svn: u32,
    /// Unix seconds after which the authorization is void.
    pub expires: u64,
}

impl Statement {
    /// The bytes the operator's key signs.
    pub fn canonical(&self) -> Vec<u8> {
        format!(
            "enclave-os migration authorization v1\nsource-store: {}\ntarget-measurement: {}\n\
             target-svn: {}\nexpires: {}\n",
            hex::encode(self.source_store),
            hex::encode(&self.target_measurement),
            self.target_svn,
            self.expires
        )
        .into_bytes()
    }
}

/// An authorization as the operator hands it over (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Always [`FORMAT`].
    pub format: String,
    /// The source store id, hex.
    pub source_store: String,
    /// The target measurement, hex.
    pub target_measurement: String,
    /// The target's security version.
    pub target_svn: u32,
    /// Unix seconds.
    pub expires: u64,
    /// ECDSA P-256 SHA-256 over [`Statement::canonical`], ASN.1 DER, base64.
    pub signature: String,
}

fn first_cert(pem: &[u8], what: &str) -> Result<Vec<u8>, String> {
    match CertificateDer::pem_slice_iter(pem).next() {
        Some(Ok(c)) => Ok(c.to_vec()),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        None => Err(format!("{what}: no PEM certificate in it")),
    }
}

/// The root certificate's DER, from PEM.
pub fn root_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    first_cert(pem, "the operator root certificate")
}

/// The uncompressed P-256 point of a certificate's key, or why not.
fn ec_point(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the operator root certificate does not parse: {e}"))?;
    let spki = cert.public_key();
    let p256 = x509_parser::oid_registry::OID_EC_P256;
    let is_p256 = spki.algorithm.algorithm == x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        && spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|o| o == p256);
    if !is_p256 {
        return Err(
            "the operator root certificate's key is not ECDSA P-256 (enclave-os ca init makes one)"
                .into(),
        );
    }
    Ok(spki.subject_public_key.data.to_vec())
}

/// SHA-256 of a certificate, hex: how the pinned root is named in messages.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert_der))
}

const NOT_ISSUED: &str = "the root certificate did not issue the intermediary CA certificate \
     (not an ECDSA P-256 SHA-256 signature by its key)";

/// Whether `root_der`'s key signed the certificate `issued` (DER; ECDSA P-256 with SHA-256).
pub fn issued_by(issued: &[u8], root_der: &[u8]) -> Result<(), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(issued)
        .map_err(|e| format!("the intermediary CA certificate does not parse: {e}"))?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ec_point(root_der)?)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .map_err(|_| NOT_ISSUED.to_string())
}

/// Sign `statement` with the operator root key (PKCS#8 PEM, as `enclave-os ca init` writes it),
/// after checking that the key is the one in `root_cert_pem`.
pub fn sign(
    root_key_pem: &[u8],
    root_cert_pem: &[u8],
    statement: &Statement,
) -> Result<Authorization, String> {
    use base64::Engine;
    let der = PrivatePkcs8KeyDer::from_pem_slice(root_key_pem)
        .map_err(|e| format!("the root key: not a PKCS#8 PEM private key ({e})"))?;
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        der.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| format!("the root key: not an ECDSA P-256 key ({e})"))?;
    let cert = root_der(root_cert_pem)?;
    if pair.public_key().as_ref() != ec_point(&cert)?.as_slice() {
        return Err(format!(
            "the root key does not belong to the root certificate (SHA-256 {})",
            fingerprint(&cert)
        ));
    }
    let sig = pair
        .sign(&rng, &statement.canonical())
        .map_err(|_| "signing failed".to_string())?;
    Ok(Authorization {
        format: FORMAT.into(),
        source_store: hex::encode(statement.source_store),
        target_measurement: hex::encode(&statement.target_measurement),
        target_svn: statement.target_svn,
        expires: statement.expires,
        signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
    })
}

impl Authorization {
    /// The statement, decoded.
    pub fn statement(&self) -> Result<Statement, String> {
        if self.format != FORMAT {
            return Err(format!(
                "format '{}' is not '{FORMAT}', the one this build reads",
                self.format
            ));
        }
        let source_store = hex::decode(self.source_store.trim())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "source_store '{}' is not a store id (32 hex digits)",
                    self.source_store
                )
            })?;
        let target_measurement = hex::decode(self.target_measurement.trim())
            .ok()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                format!(
                    "target_measurement '{}' is not hex",
                    self.target_measurement
                )
            })?;
        Ok(Statement {
            source_store,
            target_measurement,
            target_svn: self.target_svn,
            expires: self.expires,
        })
    }

    /// The statement, once the signature is checked against the root certificate `root_der`.
    pub fn verify(&self, root_der: &[u8]) -> Result<Statement, String> {
        use base64::Engine;
        let statement = self.statement()?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|_| "the signature is not base64".to_string())?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ec_point(root_der)?)
            .verify(&statement.canonical(), &sig)
            .map_err(|_| {
                format!(
                    "the signature is not by the operator root pinned for this store (SHA-256 {}): \
                     it was signed by another key, or the statement was altered",
                    fingerprint(root_der)
                )
            })?;
        Ok(statement)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn statement() -> Statement {
        Statement {
            source_store: [0xab; 16],
            target_measurement: vec![0x01, 0x02, 0xfe],
            target_svn: 7,
            expires: 1_900_000_000,
        }
    }

    #[test]
    fn the_signed_text_is_the_documented_one() {
        assert_eq!(
            String::from_utf8(statement().canonical()).unwrap(),
            "enclave-os migration authorization v1\n\
             source-store: abababababababababababababababab\n\
             target-measurement: 0102fe\n\
             target-svn: 7\n\
             expires: 1900000000\n"
        );
    }

    #[test]
    fn every_signed_field_counts() {
        let dir = tempfile::tempdir().unwrap();
        let ca = enclave_ratls::ca::init(dir.path(), "Test").unwrap();
        let key = std::fs::read(&ca.root_key).unwrap();
        let cert = std::fs::read(&ca.root_cert).unwrap();
        let root = root_der(&cert).unwrap();
        let auth = sign(&key, &cert, &statement()).unwrap();
        assert_eq!(auth.verify(&root).unwrap(), statement());
        // Upper-case hex is the same value, so the same statement.
        let mut upper = auth.clone();
        upper.target_measurement = upper.target_measurement.to_uppercase();
        assert_eq!(upper.verify(&root).unwrap(), statement());

        let mut svn = auth.clone();
        svn.target_svn = 8;
        let mut expires = auth.clone();
        expires.expires += 1;
        let mut store = auth.clone();
        store.source_store = "cd".repeat(16);
        for altered in [svn, expires, store] {
            let err = altered.verify(&root).unwrap_err();
            assert!(err.contains("statement was altered"), "{err}");
        }
        let mut format = auth;
        format.format = "enclave-os/migration-authorization/v0".into();
        let err = format.verify(&root).unwrap_err();
        assert!(
            err.contains("is not 'enclave-os/migration-authorization/v1'"),
            "{err}"
        );
    }
}
