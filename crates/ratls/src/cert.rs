//! Reading an RA-TLS certificate and checking that its evidence binds its key.

use serde::Serialize;
use thiserror::Error;
use x509_parser::prelude::*;

use crate::dice::{self, HashAlg, TaggedEvidence};
use crate::oid;

/// The longest lifetime an Enclave OS leaf may have: a day, so that evidence is never older than
/// that. The issuer keeps to it and the verifier refuses a leaf that does not.
pub const MAX_LIFETIME_SECS: i64 = 24 * 3600;

/// What a workload's own certificate certifies about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadIdentity {
    /// The root of the workload's own config tree (its code and settings leaves).
    #[serde(with = "hex::serde")]
    pub config_root: [u8; 32],
    /// SHA-256 of the code as supplied (component or executable), or the image digest.
    #[serde(with = "hex::serde")]
    pub code_digest: [u8; 32],
    /// The image reference, for containers.
    pub image: Option<String>,
    /// For containers: SHA-256 of the image configuration (OID 3.7).
    #[serde(serialize_with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub image_config: Option<[u8; 32]>,
    /// For containers: SHA-256 of the OCI runtime spec it was started with (OID 3.8).
    #[serde(serialize_with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub runtime_spec: Option<[u8; 32]>,
    /// For an encrypted wasm component: the SHA-256 of the component it decrypted to (OID 3.7
    /// on a certificate without an image), while `code_digest` is that of the ciphertext.
    #[serde(serialize_with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub decrypted_code: Option<[u8; 32]>,
    /// For encrypted code: where its key came from (OID 3.9), never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_reference: Option<String>,
    /// Where the workload's keys come from (for example `tee-generated`).
    pub key_source: String,
    /// Extensions the workload itself declared: index N is OID 1.3.6.1.4.1.65230.3.5.N, and
    /// the value is the raw extension value (hex in JSON).
    #[serde(
        serialize_with = "hex_values",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub declared: std::collections::BTreeMap<u32, Vec<u8>>,
}

/// An optional 32-byte hash as hex in JSON.
fn hex_opt<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(h) => s.serialize_str(&hex::encode(h)),
        None => s.serialize_none(),
    }
}

fn hex_values<S: serde::Serializer>(
    map: &std::collections::BTreeMap<u32, Vec<u8>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(k, v)| (k.to_string(), hex::encode(v))))
}

/// Why an RA-TLS certificate was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RatlsError {
    /// The certificate does not parse, or carries no evidence.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The DICE tagged-evidence extension is malformed.
    #[error("DICE tagged evidence: {0}")]
    Dice(String),
    /// The evidence does not bind the certificate's key.
    #[error("key binding: {0}")]
    Binding(String),
    /// The certificate is not valid at the verification time, or lives longer than allowed.
    #[error("certificate validity: {0}")]
    Validity(String),
    /// The certificate does not chain to the operator's root.
    #[error("certificate chain: {0}")]
    Chain(String),
    /// The evidence did not verify, or the policy rejected it.
    #[error("{0}")]
    Evidence(#[from] enclave_evidence::VerifyError),
    /// The certificate certifies another configuration than expected.
    #[error("config root: {0}")]
    ConfigRoot(String),
    /// The certificate is not valid for the name the peer was expected to have.
    #[error("certificate name: {0}")]
    Name(String),
}

/// How the evidence was found to bind the certificate's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum KeyBinding {
    /// Enclave OS: report_data = SHA-512(SHA-256(SPKI) || binding).
    EnclaveOs {
        /// `deterministic` (binding = notBefore) or `nonce` (binding = the client's nonce).
        mode: &'static str,
    },
    /// TCG DICE claims: `pubkey-hash` is the hash of the certificate's SubjectPublicKeyInfo, and
    /// the evidence's report_data[0..32] is SHA-256 of the claims.
    DiceClaims {
        /// The algorithm of `pubkey-hash`.
        alg: HashAlg,
    },
    /// An Enclave OS leaf in the DICE binding: the DICE rules above, and besides them the
    /// `nonce` claim is the binding of `mode`, report_data[32..64] is zero, and every Enclave OS
    /// claim equals the certificate's extension of the same meaning.
    EnclaveOsDice {
        /// `deterministic` (nonce = notBefore) or `nonce` (nonce = the client's nonce).
        mode: &'static str,
        /// Whether the evidence binds the config root (claim `enclave-os-config-root`).
        config_root_bound: bool,
        /// Whether the evidence binds the workload's config root and code digest.
        workload_bound: bool,
    },
}

/// A parsed RA-TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatlsCertificate {
    /// The subject, as text.
    pub subject: String,
    /// The SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
    /// The DICE tagged evidence, when the certificate carries it.
    pub dice: Option<TaggedEvidence>,
    /// Raw evidence from an Enclave OS evidence extension (SGX or TDX quote, SNP report), when
    /// present.
    pub raw_evidence: Option<Vec<u8>>,
    /// The config Merkle root, when present.
    pub config_root: Option<[u8; 32]>,
    /// The SNP endorsement key, ASK and ARK (concatenated DER), when present.
    pub snp_certs: Option<Vec<u8>>,
    /// A workload's identity, on a workload's own certificate.
    pub workload: Option<WorkloadIdentity>,
    /// The enclave-wide certificate's module hashes, by index under OID 1.3.6.1.4.1.65230.2.
    pub modules: std::collections::BTreeMap<u32, [u8; 32]>,
}

fn hash32(v: &[u8], what: &str) -> Result<[u8; 32], RatlsError> {
    v.try_into()
        .map_err(|_| RatlsError::Certificate(format!("the {what} extension is not 32 bytes")))
}

impl RatlsCertificate {
    /// Parse a DER certificate and find its evidence.
    pub fn parse(der: &[u8]) -> Result<Self, RatlsError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| RatlsError::Certificate(format!("not an X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(RatlsError::Certificate(
                "trailing bytes after the certificate".into(),
            ));
        }
        let (mut dice, mut raw_evidence, mut config_root, mut snp_certs) = (None, None, None, None);
        let (mut w_root, mut w_code, mut w_image, mut w_keys) = (None, None, None, None);
        let (mut w_config, mut w_spec, mut w_key_ref) = (None, None, None);
        let mut modules = std::collections::BTreeMap::new();
        let mut declared = std::collections::BTreeMap::new();
        for ext in cert.extensions() {
            match ext.oid.to_id_string().as_str() {
                oid::DICE_TAGGED_EVIDENCE => dice = Some(dice::decode(ext.value)?),
                oid::SGX_QUOTE | oid::TDX_QUOTE | oid::SNP_REPORT => {
                    raw_evidence = Some(ext.value.to_vec())
                }
                oid::SNP_CERTS => snp_certs = Some(ext.value.to_vec()),
                oid::WORKLOAD_CONFIG_ROOT => {
                    w_root = Some(hash32(ext.value, "workload config root")?)
                }
                oid::WORKLOAD_CODE => w_code = Some(hash32(ext.value, "workload code digest")?),
                oid::WORKLOAD_IMAGE => {
                    w_image = Some(String::from_utf8_lossy(ext.value).into_owned())
                }
                oid::WORKLOAD_IMAGE_CONFIG => {
                    w_config = Some(hash32(ext.value, "workload plaintext identity (3.7)")?)
                }
                oid::WORKLOAD_KEY_REFERENCE => {
                    w_key_ref = Some(String::from_utf8(ext.value.to_vec()).map_err(|_| {
                        RatlsError::Certificate(
                            "the key reference extension (3.9) is not UTF-8".into(),
                        )
                    })?)
                }
                oid::WORKLOAD_RUNTIME_SPEC => {
                    w_spec = Some(hash32(ext.value, "workload runtime spec hash")?)
                }
                id if id
                    .strip_prefix(oid::MODULE_ARC)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some() =>
                {
                    let index = id[oid::MODULE_ARC.len() + 1..]
                        .parse::<u32>()
                        .map_err(|_| {
                            RatlsError::Certificate(format!(
                                "module extension {id}: the last arc is not a 32-bit index"
                            ))
                        })?;
                    modules.insert(index, hash32(ext.value, &format!("module {id}"))?);
                }
                oid::WORKLOAD_KEY_SOURCE => {
                    w_keys = Some(String::from_utf8_lossy(ext.value).into_owned())
                }
                id if id
                    .strip_prefix(oid::WORKLOAD_DECLARED_ARC)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some() =>
                {
                    let index = id[oid::WORKLOAD_DECLARED_ARC.len() + 1..]
                        .parse::<u32>()
                        .map_err(|_| {
                            RatlsError::Certificate(format!(
                                "declared extension {id}: the last arc is not a 32-bit index"
                            ))
                        })?;
                    declared.insert(index, ext.value.to_vec());
                }
                oid::CONFIG_ROOT => {
                    config_root = Some(ext.value.try_into().map_err(|_| {
                        RatlsError::Certificate("the config root extension is not 32 bytes".into())
                    })?)
                }
                _ => {}
            }
        }
        if dice.is_none() && raw_evidence.is_none() {
            return Err(RatlsError::Certificate(
                "no attestation evidence extension (DICE 2.23.133.5.4.9, or an SGX, TDX or SNP evidence OID): not an RA-TLS certificate".into(),
            ));
        }
        // Two forms of evidence would let a verifier that reads one accept what a verifier that
        // reads the other rejects (Enclave OS leaves once carried both, and only one bound).
        if dice.is_some() && raw_evidence.is_some() {
            return Err(RatlsError::Certificate(
                "the certificate carries its evidence twice (an SGX, TDX or SNP evidence extension and DICE tagged evidence): an RA-TLS leaf carries it once, in one binding".into(),
            ));
        }
        Ok(Self {
            subject: cert.subject().to_string(),
            spki: cert.public_key().raw.to_vec(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            dice,
            raw_evidence,
            config_root,
            snp_certs,
            modules,
            workload: match (w_root, w_code, w_keys) {
                (Some(config_root), Some(code_digest), Some(key_source)) => {
                    Some(WorkloadIdentity {
                        config_root,
                        code_digest,
                        // 3.7 is the image configuration's digest for a container and the
                        // decrypted component's hash for a component.
                        image_config: w_config.filter(|_| w_image.is_some()),
                        decrypted_code: w_config.filter(|_| w_image.is_none()),
                        image: w_image,
                        runtime_spec: w_spec,
                        key_reference: w_key_ref,
                        key_source,
                        declared,
                    })
                }
                (None, None, None) if declared.is_empty() => None,
                _ => {
                    return Err(RatlsError::Certificate(
                        "a workload certificate must carry its config root (3.1), code digest (3.2) and key source (3.4)".into(),
                    ));
                }
            },
        })
    }

    /// The module hashes, hex, by index.
    pub fn modules_hex(&self) -> std::collections::BTreeMap<u32, String> {
        self.modules
            .iter()
            .map(|(k, v)| (*k, hex::encode(v)))
            .collect()
    }

    /// The evidence to verify: the raw evidence extension, else the DICE-wrapped quote (a
    /// certificate never has both: [`Self::parse`] refuses it).
    pub fn evidence(&self) -> &[u8] {
        match (&self.raw_evidence, &self.dice) {
            (Some(raw), _) => raw,
            (None, Some(d)) => &d.evidence,
            (None, None) => &[],
        }
    }

    /// Whether this is an Enclave OS leaf: it carries Enclave OS extensions, or its DICE claims
    /// carry Enclave OS claims. Such a leaf is held to Enclave OS's rules in either binding.
    pub fn is_enclave_os(&self) -> bool {
        self.config_root.is_some()
            || self.workload.is_some()
            || self
                .dice
                .as_ref()
                .is_some_and(TaggedEvidence::has_enclave_os_claims)
    }

    /// Check that evidence whose report_data is `report_data` binds this certificate's key.
    ///
    /// Certificates with a raw evidence extension (the seed binding) bind by `freshness`;
    /// certificates with DICE tagged evidence bind by their claims, and an Enclave OS leaf's
    /// claims must also carry the binding of `freshness` and agree with its extensions. A client
    /// that sent a nonce requires every certificate to bind it.
    pub fn check_key_binding(
        &self,
        report_data: &[u8; 64],
        freshness: &crate::binding::Freshness,
    ) -> Result<KeyBinding, RatlsError> {
        use crate::binding::{Freshness, report_data as expected_report_data};
        let mode = match freshness {
            Freshness::Deterministic => "deterministic",
            Freshness::Nonce(_) => "nonce",
        };
        if self.raw_evidence.is_some() {
            let binding = freshness.binding(self.not_before);
            let expected = expected_report_data(&self.spki, &binding);
            if expected != *report_data {
                return Err(RatlsError::Binding(match freshness {
                    Freshness::Deterministic => "report_data is not SHA-512(SHA-256(SPKI) || notBefore): the evidence was not made for this certificate's key and time".into(),
                    Freshness::Nonce(_) => "report_data is not SHA-512(SHA-256(SPKI) || nonce): the evidence does not bind this key and the nonce this client sent".into(),
                }));
            }
            return Ok(KeyBinding::EnclaveOs { mode });
        }
        let Some(d) = &self.dice else {
            return Err(RatlsError::Binding(
                "the certificate carries no evidence".into(),
            ));
        };
        let (alg, claimed) = &d.pubkey_hash;
        if alg.digest(&self.spki) != *claimed {
            return Err(RatlsError::Binding(format!(
                "the DICE pubkey-hash ({alg:?}) is not the hash of this certificate's public key"
            )));
        }
        let claims_hash = HashAlg::Sha256.digest(&d.claims);
        if report_data[..32] != claims_hash[..] {
            return Err(RatlsError::Binding(
                "the evidence's report_data does not begin with SHA-256 of the DICE claims: the \
                 evidence was not made for these claims"
                    .into(),
            ));
        }
        if let Freshness::Nonce(n) = freshness
            && d.nonce.as_deref() != Some(n.as_slice())
        {
            return Err(RatlsError::Binding(
                "the DICE nonce claim is not the nonce this client sent: the certificate was not \
                 made for this challenge"
                    .into(),
            ));
        }
        if !self.is_enclave_os() {
            return Ok(KeyBinding::DiceClaims { alg: *alg });
        }
        if report_data[32..].iter().any(|b| *b != 0) {
            return Err(RatlsError::Binding(
                "report_data[32..64] of an Enclave OS DICE leaf is not zero: only SHA-256 of the \
                 claims may be bound"
                    .into(),
            ));
        }
        if let Freshness::Deterministic = freshness
            && d.nonce.as_deref() != Some(freshness.binding(self.not_before).as_slice())
        {
            return Err(RatlsError::Binding(
                "the DICE nonce claim is not the certificate's notBefore (YYYY-MM-DDTHH:MM:SSZ): \
                 the evidence was not made for this certificate's time"
                    .into(),
            ));
        }
        let config_root_bound = bound(
            d.claim(dice::CLAIM_CONFIG_ROOT),
            self.config_root.as_ref().map(|r| r.as_slice()),
            "config root",
            dice::CLAIM_CONFIG_ROOT,
            "1.3.6.1.4.1.65230.1.1",
        )?;
        let w = self.workload.as_ref();
        let root_bound = bound(
            d.claim(dice::CLAIM_WORKLOAD_ROOT),
            w.map(|w| w.config_root.as_slice()),
            "workload config root",
            dice::CLAIM_WORKLOAD_ROOT,
            "1.3.6.1.4.1.65230.3.1",
        )?;
        let code_bound = bound(
            d.claim(dice::CLAIM_WORKLOAD_CODE),
            w.map(|w| w.code_digest.as_slice()),
            "workload code digest",
            dice::CLAIM_WORKLOAD_CODE,
            "1.3.6.1.4.1.65230.3.2",
        )?;
        // What an encrypted workload's certificate adds: bound too, or refused (a claim
        // without its extension, or the other way round, is an error in `bound`).
        bound(
            d.claim(dice::CLAIM_WORKLOAD_PLAINTEXT),
            w.and_then(|w| w.decrypted_code.as_ref())
                .map(|h| h.as_slice()),
            "decrypted component hash",
            dice::CLAIM_WORKLOAD_PLAINTEXT,
            "1.3.6.1.4.1.65230.3.7",
        )?;
        bound(
            d.claim(dice::CLAIM_WORKLOAD_KEY_REFERENCE),
            w.and_then(|w| w.key_reference.as_deref())
                .map(str::as_bytes),
            "key reference",
            dice::CLAIM_WORKLOAD_KEY_REFERENCE,
            "1.3.6.1.4.1.65230.3.9",
        )?;
        let lifetime = self.not_after - self.not_before;
        if lifetime > MAX_LIFETIME_SECS {
            return Err(RatlsError::Validity(format!(
                "the certificate lives {lifetime} s, longer than the {} s an RA-TLS leaf may",
                MAX_LIFETIME_SECS
            )));
        }
        Ok(KeyBinding::EnclaveOsDice {
            mode,
            config_root_bound,
            workload_bound: root_bound && code_bound,
        })
    }

    /// Check that the certificate is valid at `at` (unix seconds).
    pub fn check_validity(&self, at: i64) -> Result<(), RatlsError> {
        use enclave_evidence::time::fmt;
        if at > self.not_after {
            return Err(RatlsError::Validity(format!(
                "the certificate expired at {} (verification time {})",
                fmt(self.not_after),
                fmt(at)
            )));
        }
        if at < self.not_before {
            return Err(RatlsError::Validity(format!(
                "the certificate is not valid until {} (verification time {})",
                fmt(self.not_before),
                fmt(at)
            )));
        }
        Ok(())
    }
}

/// An Enclave OS DICE claim against the certificate's extension of the same meaning: both
/// absent, or both present and equal. Whether the evidence binds the value.
fn bound(
    claim: Option<&[u8]>,
    extension: Option<&[u8]>,
    what: &str,
    claim_name: &str,
    oid: &str,
) -> Result<bool, RatlsError> {
    let err = |reason: String| {
        if claim_name == dice::CLAIM_CONFIG_ROOT {
            RatlsError::ConfigRoot(reason)
        } else {
            RatlsError::Binding(reason)
        }
    };
    match (claim, extension) {
        (None, None) => Ok(false),
        (Some(c), Some(e)) if c == e => Ok(true),
        (Some(c), Some(e)) => Err(err(format!(
            "the evidence's {claim_name} claim {} differs from the certificate's {what} {} \
             (OID {oid}): the certificate claims another {what} than the evidence binds",
            hex::encode(c),
            hex::encode(e)
        ))),
        (Some(c), None) => Err(err(format!(
            "the evidence binds {what} {} ({claim_name}) but the certificate has no {what} \
             extension (OID {oid})",
            hex::encode(c)
        ))),
        (None, Some(e)) => Err(err(format!(
            "the certificate certifies {what} {} (OID {oid}) but its DICE claims carry no \
             {claim_name}: the evidence does not bind it",
            hex::encode(e)
        ))),
    }
}
