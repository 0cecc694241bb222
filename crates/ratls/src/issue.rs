//! Issuing RA-TLS leaf certificates inside the TEE: a fresh P-256 key, evidence binding it, and the
//! configuration it runs under, signed by the operator's intermediary CA.

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::binding::{self, BindingFormat, Freshness};
use crate::cert::RatlsError;
use crate::{dice, oid};
use enclave_tee::{Tee, TeeKind};

// What a leaf certifies is read by verifiers too, which compile without this module.
pub use crate::cert::{MAX_LIFETIME_SECS, WorkloadIdentity};

/// The operator's intermediary CA, as the runtime holds it (unsealed in memory).
pub struct IntermediaryCa {
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for IntermediaryCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntermediaryCa").finish_non_exhaustive()
    }
}

impl IntermediaryCa {
    /// Load from PEM text (as `enclave-os ca init` writes).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, RatlsError> {
        let cert_der = enclave_evidence::input::pem_certificates(cert_pem.as_bytes())
            .map_err(RatlsError::Certificate)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                RatlsError::Certificate("the intermediary file holds no certificate".into())
            })?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| RatlsError::Certificate(format!("intermediary key: {e}")))?;
        Ok(Self { cert_der, key })
    }

    /// The intermediary certificate (DER), sent after the leaf.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

/// What a leaf certifies beyond its key.
#[derive(Debug, Clone, Default)]
pub struct LeafSpec {
    /// DNS names (or IP addresses) served.
    pub names: Vec<String>,
    /// Lifetime in seconds (at most [`MAX_LIFETIME_SECS`]).
    pub lifetime_secs: i64,
    /// The config Merkle root.
    pub config_root: Option<[u8; 32]>,
    /// Module hashes: (OID under 1.3.6.1.4.1.65230.2, value), for example (1, egress bundle hash).
    pub modules: Vec<(u64, [u8; 32])>,
    /// For a workload's own certificate: its identity (OIDs 1.3.6.1.4.1.65230.3.1 to 3.4).
    pub workload: Option<WorkloadIdentity>,
    /// The form the evidence takes, and so how it binds the key: the seed's raw extension, or
    /// DICE tagged evidence whose claims also bind the config root and the workload identity.
    pub binding: BindingFormat,
}

/// An issued leaf: certificate and private key (zeroized on drop).
pub struct Leaf {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Zeroizing<Vec<u8>>,
    /// notBefore, unix seconds.
    pub not_before: i64,
    /// notAfter, unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn arcs(dotted: &str) -> Vec<u64> {
    dotted.split('.').filter_map(|a| a.parse().ok()).collect()
}

/// A non-critical extension whose extnValue OCTET STRING holds `value`'s raw bytes: a TLS client
/// that knows nothing of RA-TLS still accepts the certificate.
fn ext(dotted: &str, value: Vec<u8>) -> CustomExtension {
    CustomExtension::from_oid_content(&arcs(dotted), value)
}

/// The claims an Enclave OS DICE leaf adds, so that the evidence binds what the certificate's
/// extensions say about the configuration and the workload, not only the CA's signature.
fn enclave_os_claims(spec: &LeafSpec) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(root) = spec.config_root {
        out.push((dice::CLAIM_CONFIG_ROOT, root.to_vec()));
    }
    if let Some(w) = &spec.workload {
        out.push((dice::CLAIM_WORKLOAD_ROOT, w.config_root.to_vec()));
        out.push((dice::CLAIM_WORKLOAD_CODE, w.code_digest.to_vec()));
        if let Some(h) = &w.decrypted_code {
            out.push((dice::CLAIM_WORKLOAD_PLAINTEXT, h.to_vec()));
        }
        if let Some(r) = &w.key_reference {
            out.push((dice::CLAIM_WORKLOAD_KEY_REFERENCE, r.as_bytes().to_vec()));
        }
    }
    out
}

/// How far back a leaf's notBefore is set from the moment it is issued. A client whose clock is
/// a little behind the server's (or a clock stepped back under it) would otherwise see a
/// certificate issued for its very handshake as "not yet valid" (seen with curl in the tests).
pub const NOT_BEFORE_SKEW_SECS: i64 = 60;

/// Issue a leaf: generate its key, get evidence from `tee` binding it, and sign with `ca`. Its
/// notBefore is [`NOT_BEFORE_SKEW_SECS`] back from now, and it binds that notBefore.
pub fn issue(
    tee: &dyn Tee,
    ca: &IntermediaryCa,
    spec: &LeafSpec,
    freshness: &Freshness,
) -> Result<Leaf, RatlsError> {
    issue_at(
        tee,
        ca,
        spec,
        freshness,
        OffsetDateTime::now_utc().unix_timestamp() - NOT_BEFORE_SKEW_SECS,
    )
}

/// [`issue`], with notBefore at `now` (unix seconds) instead of the clock's time.
pub fn issue_at(
    tee: &dyn Tee,
    ca: &IntermediaryCa,
    spec: &LeafSpec,
    freshness: &Freshness,
    now: i64,
) -> Result<Leaf, RatlsError> {
    let lifetime = spec.lifetime_secs;
    if !(60..=MAX_LIFETIME_SECS).contains(&lifetime) {
        return Err(RatlsError::Certificate(format!(
            "a leaf lifetime of {lifetime} s is outside 60 s to {MAX_LIFETIME_SECS} s"
        )));
    }
    let gen_err = |e: rcgen::Error| RatlsError::Certificate(format!("certificate generation: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let spki = key.subject_public_key_info();
    let not_before = OffsetDateTime::from_unix_timestamp(now)
        .map_err(|e| RatlsError::Certificate(e.to_string()))?;
    let not_after = OffsetDateTime::from_unix_timestamp(now + lifetime)
        .map_err(|e| RatlsError::Certificate(e.to_string()))?;
    let bind = freshness.binding(now);
    // In the DICE binding the claims are fixed first: the evidence binds their hash.
    let claims = match spec.binding {
        BindingFormat::Seed => None,
        BindingFormat::Dice => {
            if !matches!(tee.kind(), TeeKind::Sgx | TeeKind::Tdx) {
                return Err(RatlsError::Certificate(format!(
                    "evidence binding 'dice' carries DCAP quotes (SGX, TDX); {} evidence has no \
                     DICE form that Gramine or rats-tls read: use the seed binding",
                    tee.name()
                )));
            }
            Some(dice::encode_claims(&spki, &bind, &enclave_os_claims(spec))?)
        }
    };
    let report_data = match &claims {
        None => binding::report_data(&spki, &bind),
        Some(c) => dice::report_data(c),
    };
    let bundle = tee
        .evidence(&report_data)
        .map_err(|e| RatlsError::Certificate(format!("evidence from {}: {e}", tee.name())))?;

    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        spec.names.first().map_or("enclave-os", String::as_str),
    );
    dn.push(DnType::OrganizationName, "Enclave OS RA-TLS");
    p.distinguished_name = dn;
    p.not_before = not_before;
    p.not_after = not_after;
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| RatlsError::Certificate("the system random generator failed".into()))?;
    serial[0] &= 0x7f;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    for name in &spec.names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .map_err(|e| RatlsError::Certificate(format!("server name '{name}': {e}")))?,
            ),
        };
        p.subject_alt_names.push(san);
    }
    // The evidence goes in once, in the form the listener chose.
    match (&claims, bundle.tee) {
        (Some(claims), TeeKind::Sgx | TeeKind::Tdx) => p.custom_extensions.push(ext(
            oid::DICE_TAGGED_EVIDENCE,
            dice::encode(&bundle.evidence, claims)?,
        )),
        (Some(_), other) => {
            return Err(RatlsError::Certificate(format!(
                "evidence binding 'dice' needs a DCAP quote, but the TEE gave {other:?} evidence"
            )));
        }
        (None, TeeKind::Sgx) => p
            .custom_extensions
            .push(ext(oid::SGX_QUOTE, bundle.evidence.clone())),
        (None, TeeKind::Tdx) => p
            .custom_extensions
            .push(ext(oid::TDX_QUOTE, bundle.evidence.clone())),
        (None, TeeKind::Snp | TeeKind::AzureSnp | TeeKind::AzureTdx) => {
            p.custom_extensions
                .push(ext(oid::SNP_REPORT, bundle.evidence.clone()));
            if !bundle.certificates.is_empty() {
                p.custom_extensions
                    .push(ext(oid::SNP_CERTS, bundle.certificates.concat()));
            }
        }
    }
    if let Some(root) = spec.config_root {
        p.custom_extensions
            .push(ext(oid::CONFIG_ROOT, root.to_vec()));
    }
    if let Some(w) = &spec.workload {
        p.custom_extensions
            .push(ext(oid::WORKLOAD_CONFIG_ROOT, w.config_root.to_vec()));
        p.custom_extensions
            .push(ext(oid::WORKLOAD_CODE, w.code_digest.to_vec()));
        if let Some(image) = &w.image {
            p.custom_extensions
                .push(ext(oid::WORKLOAD_IMAGE, image.as_bytes().to_vec()));
        }
        if let Some(h) = w.image_config.as_ref().or(w.decrypted_code.as_ref()) {
            p.custom_extensions
                .push(ext(oid::WORKLOAD_IMAGE_CONFIG, h.to_vec()));
        }
        if let Some(r) = &w.key_reference {
            p.custom_extensions
                .push(ext(oid::WORKLOAD_KEY_REFERENCE, r.as_bytes().to_vec()));
        }
        if let Some(h) = &w.runtime_spec {
            p.custom_extensions
                .push(ext(oid::WORKLOAD_RUNTIME_SPEC, h.to_vec()));
        }
        p.custom_extensions.push(ext(
            oid::WORKLOAD_KEY_SOURCE,
            w.key_source.as_bytes().to_vec(),
        ));
        for (index, value) in &w.declared {
            p.custom_extensions.push(ext(
                &format!("{}.{index}", oid::WORKLOAD_DECLARED_ARC),
                value.clone(),
            ));
        }
    }
    for (arc, value) in &spec.modules {
        p.custom_extensions
            .push(ext(&format!("{}.{arc}", oid::MODULE_ARC), value.to_vec()));
    }
    let issuer = Issuer::from_ca_cert_der(&ca.cert_der.as_slice().into(), &ca.key)
        .map_err(|e| RatlsError::Certificate(format!("intermediary certificate: {e}")))?;
    let cert = p.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(Leaf {
        cert_der: cert.der().to_vec(),
        key_der: Zeroizing::new(key.serialize_der()),
        not_before: now,
        not_after: now + lifetime,
    })
}
