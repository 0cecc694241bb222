//! Verifying an RA-TLS certificate chain, in order: chain to the operator's root (when one is
//! given), the peer's name (when one is expected), evidence, key binding, freshness, then policy
//! (measurements, config root).

use enclave_evidence::intel::Collateral;
use enclave_evidence::{Appraisal, Inputs, Policy, Verifier, VerifyError};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;

use crate::binding::Freshness;
use crate::cert::{KeyBinding, MAX_LIFETIME_SECS, RatlsCertificate, RatlsError, WorkloadIdentity};

/// What verifying an RA-TLS certificate established.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The evidence appraisal (TEE, simulated, TCB status, measurements, report_data).
    pub appraisal: Appraisal,
    /// How the key binding was checked.
    pub key_binding: KeyBinding,
    /// Whether the chain was verified to an operator root (false: no root was given).
    pub chain_verified: bool,
    /// The certificate's subject.
    pub subject: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// The config Merkle root the certificate carries, hex.
    pub config_root: Option<String>,
    /// On a workload's own certificate: its identity.
    pub workload: Option<WorkloadIdentity>,
    /// The enclave-wide certificate's module hashes (index under OID 1.3.6.1.4.1.65230.2, hex).
    pub modules: std::collections::BTreeMap<u32, String>,
    /// The name the certificate was found valid for (a DNS name or an IP address), when one was
    /// expected; `None`: no name was checked.
    pub name: Option<String>,
}

/// Which side presented the certificate: the TLS usage its chain must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A server certificate.
    Server,
    /// A client certificate (mutual RA-TLS).
    Client,
}

/// An RA-TLS verifier.
pub struct RatlsVerifier {
    evidence: Verifier,
    operator_root: Option<Vec<u8>>,
    collateral: Option<Collateral>,
    policy: Option<Policy>,
    config_root: Option<[u8; 32]>,
}

impl std::fmt::Debug for RatlsVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatlsVerifier")
            .field("operator_root", &self.operator_root.is_some())
            .field("config_root", &self.config_root.map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl RatlsVerifier {
    /// A verifier that appraises evidence with `evidence` (whose Intel root decides whether a
    /// simulation root is trusted).
    pub fn new(evidence: Verifier) -> Self {
        Self {
            evidence,
            operator_root: None,
            collateral: None,
            policy: None,
            config_root: None,
        }
    }

    /// Require the chain to lead to this operator root (DER).
    pub fn with_operator_root(mut self, root: Vec<u8>) -> Self {
        self.operator_root = Some(root);
        self
    }

    /// Appraise quotes with this collateral (without it, their TCB status is Unknown).
    pub fn with_collateral(mut self, collateral: Collateral) -> Self {
        self.collateral = Some(collateral);
        self
    }

    /// Appraise the evidence against `policy`.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Require the certificate to carry this config root.
    pub fn with_config_root(mut self, root: [u8; 32]) -> Self {
        self.config_root = Some(root);
        self
    }

    fn verify_chain(
        &self,
        leaf: &[u8],
        intermediates: &[CertificateDer<'_>],
        at: i64,
        role: Role,
    ) -> Result<bool, RatlsError> {
        let Some(root) = &self.operator_root else {
            return Ok(false);
        };
        let root = CertificateDer::from(root.as_slice());
        let anchor = webpki::anchor_from_trusted_cert(&root)
            .map_err(|e| RatlsError::Chain(format!("the operator root is unusable: {e:?}")))?;
        let leaf = CertificateDer::from(leaf);
        let ee = webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| RatlsError::Chain(format!("the leaf does not parse: {e:?}")))?;
        let usage = match role {
            Role::Server => webpki::KeyUsage::server_auth(),
            Role::Client => webpki::KeyUsage::client_auth(),
        };
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            intermediates,
            time,
            usage,
            None,
            None,
        )
        .map_err(|e| {
            RatlsError::Chain(format!(
                "the certificate does not chain to the operator root: {e:?}"
            ))
        })?;
        Ok(true)
    }

    /// Verify a certificate chain (leaf first) at unix time `at`, without checking a name.
    pub fn verify(
        &self,
        leaf: &[u8],
        intermediates: &[CertificateDer<'_>],
        at: i64,
        freshness: &Freshness,
        role: Role,
    ) -> Result<Report, RatlsError> {
        self.verify_named(leaf, intermediates, at, freshness, role, None)
    }

    /// Verify a certificate chain (leaf first) at unix time `at`; with `name`, the leaf must also
    /// be valid for that name (see [`check_name`]).
    pub fn verify_named(
        &self,
        leaf: &[u8],
        intermediates: &[CertificateDer<'_>],
        at: i64,
        freshness: &Freshness,
        role: Role,
        name: Option<&ServerName<'_>>,
    ) -> Result<Report, RatlsError> {
        let chain_verified = self.verify_chain(leaf, intermediates, at, role)?;
        // Before the evidence: a certificate for another name is refused without the cost of
        // appraising a quote.
        if let Some(name) = name {
            check_name(leaf, name)?;
        }
        let cert = RatlsCertificate::parse(leaf)?;
        let snp_certs = cert.snp_certs.as_deref().map(split_der).unwrap_or_default();
        let appraisal = self.appraise(cert.evidence(), snp_certs, at)?;
        let key_binding = cert.check_key_binding(&appraisal.report_data, freshness)?;
        cert.check_validity(at)?;
        if matches!(key_binding, KeyBinding::EnclaveOs { .. })
            && cert.not_after - cert.not_before > MAX_LIFETIME_SECS
        {
            return Err(RatlsError::Validity(format!(
                "the certificate lives {} s, longer than the {MAX_LIFETIME_SECS} s an RA-TLS leaf may",
                cert.not_after - cert.not_before
            )));
        }
        self.check_policy(&appraisal, &cert)?;
        Ok(Report {
            appraisal,
            key_binding,
            chain_verified,
            subject: cert.subject.clone(),
            not_before: enclave_evidence::time::fmt(cert.not_before),
            not_after: enclave_evidence::time::fmt(cert.not_after),
            config_root: cert.config_root.map(hex::encode),
            workload: cert.workload.clone(),
            modules: cert.modules_hex(),
            name: name.map(name_text),
        })
    }

    /// Verify evidence (with SNP certificates when it is an SNP report) at `at`.
    pub fn appraise(
        &self,
        evidence: &[u8],
        snp_certs: Vec<Vec<u8>>,
        at: i64,
    ) -> Result<Appraisal, RatlsError> {
        let mut inputs = Inputs {
            collateral: self.collateral.clone(),
            ..Inputs::default()
        };
        inputs.amd.certs = snp_certs;
        Ok(self.evidence.verify(evidence, &inputs, at)?)
    }

    /// The config root and the appraisal policy.
    pub fn check_policy(
        &self,
        appraisal: &Appraisal,
        cert: &RatlsCertificate,
    ) -> Result<(), RatlsError> {
        if let Some(expected) = &self.config_root {
            match &cert.config_root {
                Some(actual) if actual == expected => {}
                Some(actual) => {
                    return Err(RatlsError::ConfigRoot(format!(
                        "the certificate certifies config root {}, not the expected {}",
                        hex::encode(actual),
                        hex::encode(expected)
                    )));
                }
                None => {
                    return Err(RatlsError::ConfigRoot(
                        "the certificate carries no config root".into(),
                    ));
                }
            }
        }
        if let Some(policy) = &self.policy {
            policy
                .check(appraisal)
                .map_err(|v| RatlsError::Evidence(VerifyError::Policy(v)))?;
        }
        Ok(())
    }
}

/// A server name as text: the DNS name, or the IP address.
pub fn name_text(name: &ServerName<'_>) -> String {
    name.to_str().into_owned()
}

/// Check that the leaf (DER) is valid for `name`, by webpki's rules, as rustls's own verifier
/// checks a server: a DNS name must match a DNS subjectAltName, an IP address an IP
/// subjectAltName; the subject's common name is never used.
pub fn check_name(leaf: &[u8], name: &ServerName<'_>) -> Result<(), RatlsError> {
    let der = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| RatlsError::Name(format!("the leaf does not parse: {e:?}")))?;
    let wanted = name_text(name);
    ee.verify_is_valid_for_subject_name(name).map_err(|e| match e {
        webpki::Error::CertNotValidForName(ctx) => RatlsError::Name(if ctx.presented.is_empty() {
            format!("the certificate names no DNS name or IP address, so it is not valid for '{wanted}'")
        } else {
            format!(
                "the certificate is valid for {}, not for '{wanted}'",
                ctx.presented
                    .iter()
                    .map(|n| presented_text(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }),
        other => RatlsError::Name(format!(
            "the certificate cannot be checked for '{wanted}': {other:?}"
        )),
    })
}

/// One name webpki found in a certificate, which it renders as `DnsName("a.example")` or
/// `IpAddress(192.0.2.1)`, for a person.
fn presented_text(n: &str) -> String {
    if let Some(dns) = n
        .strip_prefix("DnsName(\"")
        .and_then(|r| r.strip_suffix("\")"))
    {
        format!("DNS name '{dns}'")
    } else if let Some(ip) = n
        .strip_prefix("IpAddress(")
        .and_then(|r| r.strip_suffix(')'))
    {
        format!("IP address '{ip}'")
    } else {
        n.to_string()
    }
}

/// Split concatenated DER certificates.
fn split_der(mut der: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while der.len() >= 4 && der[0] == 0x30 {
        let (len, hdr) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x81 => (usize::from(der[2]), 3),
            0x82 => (usize::from(u16::from_be_bytes([der[2], der[3]])), 4),
            _ => break,
        };
        let Some(one) = der.get(..hdr + len) else {
            break;
        };
        out.push(one.to_vec());
        der = &der[hdr + len..];
    }
    out
}
