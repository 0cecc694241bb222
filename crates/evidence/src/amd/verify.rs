//! Verification of an SEV-SNP report: ARK → ASK (or ASVK) → VCEK (or VLEK) → report.
//!
//! The `sev` crate checks the RSA-PSS signatures between AMD's certificates. What it does not do,
//! and this module adds: certificate validity at the caller's time, the VCEK's TCB extensions
//! against the report's reported TCB, the chip ID against hwID, product detection, the signer kind,
//! and a CRL when one is supplied. The report signature is checked over the raw signed bytes, never
//! over a re-serialisation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use ring::signature::{ECDSA_P384_SHA384_FIXED, RSA_PSS_2048_8192_SHA384, UnparsedPublicKey};
use sev::certs::snp::{Certificate as SevCert, Verifiable};
use x509_parser::prelude::*;

use super::product::Product;
use super::report::{SIGNED_LEN, SigningKey, SnpReport};
use crate::appraisal::{Appraisal, Measurements, Platform, SnpMeasurements, TcbStatus, TeeKind};
use crate::error::VerifyError;

/// What a verifier needs beside an SNP report.
#[derive(Debug, Clone, Default)]
pub struct AmdInputs {
    /// Certificates supplied by the caller, DER, in any order: the VCEK or VLEK, and optionally
    /// the ASK/ASVK and ARK.
    pub certs: Vec<Vec<u8>>,
    /// The product, required for version 2 reports unless the supplied ARK identifies it.
    pub product: Option<Product>,
    /// A CRL issued by the ARK (DER).
    pub crl: Option<Vec<u8>>,
    /// A root to trust instead of AMD's built-in ARK for the product (DER).
    pub root: Option<Vec<u8>>,
}

const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";

/// What verification reads from one certificate, taken from its DER once and remembered by the
/// DER's SHA-256 (see [`ChainCache`]): the same bytes always parse to the same facts, so a later
/// report that presents the same certificate reuses them instead of parsing it again.
#[derive(Debug)]
struct CertInfo {
    der: Vec<u8>,
    /// Bytes after the certificate's DER; a supplied certificate with any is refused.
    trailing: bool,
    self_signed: bool,
    is_rsa: bool,
    subject: String,
    not_before: i64,
    not_after: i64,
    /// The subjectPublicKey bits (for the VCEK/VLEK, the uncompressed P-384 point).
    public_key: Vec<u8>,
    /// The VCEK/VLEK extensions, read for EC certificates only.
    vek: Option<Result<VekFacts, VerifyError>>,
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, der).as_ref());
    d
}

impl CertInfo {
    fn parse(der: &[u8], what: &str) -> Result<Self, VerifyError> {
        let (rest, c) = X509Certificate::from_der(der)
            .map_err(|e| VerifyError::input(what, format!("not an X.509 certificate: {e}")))?;
        let is_rsa = c.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.1"
            || c.public_key().algorithm.algorithm.to_id_string() == "1.2.840.113549.1.1.10";
        Ok(Self {
            der: der.to_vec(),
            trailing: !rest.is_empty(),
            self_signed: c.subject() == c.issuer(),
            is_rsa,
            subject: c.subject().to_string(),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            public_key: c.public_key().subject_public_key.data.to_vec(),
            vek: (!is_rsa).then(|| vek_facts(&c)),
        })
    }
}

fn check_validity(c: &CertInfo, what: &str, at: i64) -> Result<(), VerifyError> {
    let (nb, na) = (c.not_before, c.not_after);
    if at < nb {
        return Err(VerifyError::Chain(format!(
            "{what} is not valid until {} (verification time {})",
            crate::time::fmt(nb),
            crate::time::fmt(at)
        )));
    }
    if at > na {
        return Err(VerifyError::Chain(format!(
            "{what} expired at {} (verification time {})",
            crate::time::fmt(na),
            crate::time::fmt(at)
        )));
    }
    Ok(())
}

fn x509<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, VerifyError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| VerifyError::input(what, format!("not an X.509 certificate: {e}")))
}

fn sev_cert(der: &[u8], what: &str) -> Result<SevCert, VerifyError> {
    SevCert::from_der(der).map_err(|e| VerifyError::input(what, e.to_string()))
}

fn signs(
    issuer: &[u8],
    subject: &[u8],
    issuer_name: &str,
    subject_name: &str,
) -> Result<(), VerifyError> {
    let i = sev_cert(issuer, issuer_name)?;
    let s = sev_cert(subject, subject_name)?;
    (&i, &s).verify().map_err(|e| {
        VerifyError::Chain(format!(
            "{issuer_name} did not sign the {subject_name}: {e}"
        ))
    })
}

/// The value of an AMD extension: the SPLs are DER INTEGERs and hwID an OCTET STRING, but some
/// KDS certificates carry the bare bytes; accept both.
fn ext_bytes(value: &[u8]) -> &[u8] {
    match value {
        [tag @ (0x02 | 0x04 | 0x16), len, rest @ ..]
            if *len < 0x80 && rest.len() == *len as usize =>
        {
            let _ = tag;
            rest
        }
        _ => value,
    }
}

fn ext_u8(value: &[u8], name: &str) -> Result<u8, VerifyError> {
    let b = ext_bytes(value);
    // A DER INTEGER 0..=255 is one byte, or two with a leading zero for values >= 128.
    match b {
        [v] => Ok(*v),
        [0, v] => Ok(*v),
        _ => Err(VerifyError::input(
            "VCEK certificate",
            format!("{name} extension is not a small integer"),
        )),
    }
}

#[derive(Debug)]
struct VekFacts {
    kind: SigningKey,
    product_name: Option<String>,
    hw_id: Option<Vec<u8>>,
    spl: [(String, &'static str, Option<u8>); 5],
}

fn vek_facts(c: &X509Certificate<'_>) -> Result<VekFacts, VerifyError> {
    let mut facts = VekFacts {
        kind: SigningKey::Vcek,
        product_name: None,
        hw_id: None,
        spl: [
            (OID_BL_SPL.into(), "bootloader", None),
            (OID_TEE_SPL.into(), "tee", None),
            (OID_SNP_SPL.into(), "snp", None),
            (OID_UCODE_SPL.into(), "microcode", None),
            (OID_FMC_SPL.into(), "fmc", None),
        ],
    };
    let mut has_csp = false;
    for ext in c.extensions() {
        let oid = ext.oid.to_id_string();
        match oid.as_str() {
            OID_HW_ID => facts.hw_id = Some(ext_bytes(ext.value).to_vec()),
            OID_CSP_ID => has_csp = true,
            OID_PRODUCT_NAME => {
                facts.product_name =
                    Some(String::from_utf8_lossy(ext_bytes(ext.value)).into_owned())
            }
            _ => {
                for (o, name, slot) in facts.spl.iter_mut() {
                    if *o == oid {
                        *slot = Some(ext_u8(ext.value, name)?);
                    }
                }
            }
        }
    }
    facts.kind = if has_csp {
        SigningKey::Vlek
    } else {
        SigningKey::Vcek
    };
    Ok(facts)
}

/// Convert a little-endian, zero-extended 72-byte component to 48 big-endian bytes.
fn p384_component(le: &[u8; 72], name: &str) -> Result<[u8; 48], VerifyError> {
    if le[48..].iter().any(|b| *b != 0) {
        return Err(VerifyError::Signature(format!(
            "report signature {name} does not fit P-384 (high bytes are not zero)"
        )));
    }
    let mut be = [0u8; 48];
    for (i, b) in le[..48].iter().enumerate() {
        be[47 - i] = *b;
    }
    Ok(be)
}

fn check_crl(
    crl_der: &[u8],
    ark_der: &[u8],
    revoked_candidates: &[(&str, &[u8])],
    at: i64,
) -> Result<(), VerifyError> {
    let (_, crl) = parse_x509_crl(crl_der)
        .map_err(|e| VerifyError::input("CRL", format!("not an X.509 CRL: {e}")))?;
    let (_, ark) = X509Certificate::from_der(ark_der)
        .map_err(|e| VerifyError::input("ARK certificate", e.to_string()))?;
    if crl.issuer() != ark.subject() {
        return Err(VerifyError::input(
            "CRL",
            format!(
                "issued by '{}', not by the ARK '{}'",
                crl.issuer(),
                ark.subject()
            ),
        ));
    }
    let key = UnparsedPublicKey::new(
        &RSA_PSS_2048_8192_SHA384,
        &ark.public_key().subject_public_key.data,
    );
    key.verify(crl.tbs_cert_list.as_ref(), &crl.signature_value.data)
        .map_err(|_| {
            VerifyError::Signature("the CRL's signature does not verify under the ARK".into())
        })?;
    if let Some(next) = crl.next_update()
        && at > next.timestamp()
    {
        {
            return Err(VerifyError::Collateral(format!(
                "the CRL expired at {} (verification time {})",
                crate::time::fmt(next.timestamp()),
                crate::time::fmt(at)
            )));
        }
    }
    let candidates = revoked_candidates
        .iter()
        .map(|(name, der)| Ok((*name, x509(der, name)?)))
        .collect::<Result<Vec<_>, VerifyError>>()?;
    for revoked in crl.iter_revoked_certificates() {
        if let Some((name, c)) = candidates
            .iter()
            .find(|(_, c)| c.raw_serial() == revoked.raw_serial())
        {
            return Err(VerifyError::Chain(format!(
                "the {name} (serial {}) is revoked by the CRL",
                c.raw_serial_as_string()
            )));
        }
    }
    Ok(())
}

/// What a verifier remembers between reports, all of it keyed by content hash:
///
/// - the chains (ARK, ASK, VCEK) whose three RSA-4096 PSS signatures have verified. A signature's
///   validity is a function of the bytes alone, never of the time, so the same three certificates
///   always give the same answer;
/// - the facts read from each certificate (validity dates, key, extensions), so that a report
///   presenting a known certificate costs a hash instead of an X.509 parse.
///
/// Everything that depends on the verification time or on the report (validity periods, the CRL,
/// product, TCB and chip ID, and the report signature) is checked afresh on every report.
#[derive(Debug, Default)]
pub struct ChainCache {
    verified: Mutex<HashSet<[u8; 32]>>,
    certs: Mutex<HashMap<[u8; 32], Arc<CertInfo>>>,
}

impl ChainCache {
    const CAPACITY: usize = 4096;

    /// The chain's identity: the SHA-256 of its three certificates' SHA-256s, in order.
    fn id(ark: &[u8; 32], ask: &[u8; 32], vek: &[u8; 32]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"enclave-os/amd-chain/v2");
        for d in [ark, ask, vek] {
            ctx.update(d);
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        id
    }

    fn contains(&self, id: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .map(|s| s.contains(id))
            .unwrap_or(false)
    }

    fn insert(&self, id: [u8; 32]) {
        if let Ok(mut s) = self.verified.lock() {
            if s.len() >= Self::CAPACITY {
                s.clear();
            }
            s.insert(id);
        }
    }

    /// The facts of the certificate `der`, whose SHA-256 is `digest`, parsed on first sight.
    /// `strict` refuses bytes after the certificate, as for certificates the caller supplies.
    fn cert(
        &self,
        digest: &[u8; 32],
        der: &[u8],
        what: &str,
        strict: bool,
    ) -> Result<Arc<CertInfo>, VerifyError> {
        let known = self.certs.lock().ok().and_then(|m| m.get(digest).cloned());
        let info = match known {
            Some(info) => info,
            None => {
                let info = Arc::new(CertInfo::parse(der, what)?);
                if let Ok(mut m) = self.certs.lock() {
                    if m.len() >= Self::CAPACITY {
                        m.clear();
                    }
                    m.insert(*digest, info.clone());
                }
                info
            }
        };
        if strict && info.trailing {
            return Err(VerifyError::input(
                what,
                "trailing bytes after the certificate",
            ));
        }
        Ok(info)
    }
}

/// AMD's ARK and ASK for `product`, decoded from the built-in PEM once per process: they are
/// constants of the binary.
fn builtin(product: Product) -> (Option<&'static [u8]>, Option<&'static [u8]>) {
    type Decoded = Vec<(Product, Option<Vec<u8>>, Option<Vec<u8>>)>;
    static BUILTIN: OnceLock<Decoded> = OnceLock::new();
    let first = |pem: &[u8]| {
        crate::input::pem_certificates(pem)
            .ok()
            .and_then(|v| v.into_iter().next())
    };
    let all = BUILTIN.get_or_init(|| {
        Product::ALL
            .into_iter()
            .map(|p| (p, first(p.builtin_ark_pem()), first(p.builtin_ask_pem())))
            .collect()
    });
    all.iter()
        .find(|(p, _, _)| *p == product)
        .map_or((None, None), |(_, ark, ask)| {
            (ark.as_deref(), ask.as_deref())
        })
}

/// Verify an SNP report at unix time `at`. `chains` remembers chains already verified; pass a
/// long-lived one to make repeated verifications cheap, or a fresh one to verify cold.
pub fn verify_report(
    report: &SnpReport,
    raw: &[u8],
    inputs: &AmdInputs,
    at: i64,
    chains: &ChainCache,
) -> Result<Appraisal, VerifyError> {
    let mut notes = Vec::new();
    let certs: Vec<([u8; 32], Arc<CertInfo>)> = inputs
        .certs
        .iter()
        .map(|d| {
            let digest = sha256(d);
            chains
                .cert(&digest, d, "certificate", true)
                .map(|c| (digest, c))
        })
        .collect::<Result<_, _>>()?;
    let supplied_ark = certs.iter().find(|(_, c)| c.self_signed);
    let supplied_ask = certs.iter().find(|(_, c)| !c.self_signed && c.is_rsa);
    let (vek_digest, vek) = certs.iter().find(|(_, c)| !c.is_rsa).ok_or_else(|| {
        VerifyError::input(
            "certificates",
            "no VCEK or VLEK (an EC P-384 certificate) was supplied; fetch it from AMD's KDS for \
             this chip and reported TCB, or use the extended report's certificate table",
        )
    })?;

    // Which product, and so which root.
    let product = match (report.cpuid, inputs.product) {
        (Some(cpuid), given) => {
            let detected = Product::from_cpuid(cpuid.family, cpuid.model).ok_or_else(|| {
                VerifyError::input(
                    "report",
                    format!(
                        "CPUID family {:#x} model {:#x} is not a known SEV-SNP product",
                        cpuid.family, cpuid.model
                    ),
                )
            })?;
            if let Some(given) = given
                && given != detected
            {
                return Err(VerifyError::input(
                    "product",
                    format!("the report's CPUID says {detected}, but {given} was given"),
                ));
            }
            detected
        }
        (None, Some(given)) => given,
        (None, None) => supplied_ark
            .and_then(|(_, ark)| {
                Product::ALL
                    .into_iter()
                    .find(|p| builtin(*p).0 == Some(ark.der.as_slice()))
            })
            .ok_or_else(|| {
                VerifyError::input(
                    "product",
                    format!(
                        "a version {} report does not say which product it came from; name it \
                         (milan, genoa or turin) or supply AMD's ARK for it",
                        report.version
                    ),
                )
            })?,
    };

    let trusted_ark: &[u8] = match &inputs.root {
        Some(root) => root,
        None => builtin(product)
            .0
            .ok_or_else(|| VerifyError::Chain(format!("built-in {product} ARK is unreadable")))?,
    };
    if let Some((_, ark)) = supplied_ark
        && ark.der != trusted_ark
    {
        return Err(VerifyError::Chain(format!(
            "the supplied root '{}' is not the trusted {product} ARK",
            ark.subject
        )));
    }
    let ask_der: &[u8] = match supplied_ask {
        Some((_, ask)) => &ask.der,
        None if report.signing_key == SigningKey::Vlek => {
            return Err(VerifyError::input(
                "certificates",
                "a VLEK-signed report needs the ASVK certificate in the chain",
            ));
        }
        None => builtin(product)
            .1
            .ok_or_else(|| VerifyError::Chain(format!("built-in {product} ASK is unreadable")))?,
    };

    // Signatures down the chain (RSA-4096 PSS, the expensive part, so remembered by content:
    // signatures do not depend on time), then validity at the verification time.
    let ark_digest = match supplied_ark {
        Some((d, _)) => *d,
        None => sha256(trusted_ark),
    };
    let ask_digest = match supplied_ask {
        Some((d, _)) => *d,
        None => sha256(ask_der),
    };
    let chain_id = ChainCache::id(&ark_digest, &ask_digest, vek_digest);
    if !chains.contains(&chain_id) {
        signs(trusted_ark, trusted_ark, "ARK", "ARK")?;
        signs(trusted_ark, ask_der, "ARK", "ASK")?;
        signs(ask_der, &vek.der, "ASK", "VCEK")?;
        chains.insert(chain_id);
    }
    // Each certificate is parsed once per content, ever (see `ChainCache`).
    let ark_cert = chains.cert(&ark_digest, trusted_ark, "ARK certificate", false)?;
    let ask_cert = chains.cert(&ask_digest, ask_der, "ASK certificate", false)?;
    let vek_cert = vek;
    check_validity(&ark_cert, "ARK", at)?;
    check_validity(&ask_cert, "ASK", at)?;
    check_validity(vek_cert, "VCEK", at)?;
    match &inputs.crl {
        Some(crl) => check_crl(
            crl,
            trusted_ark,
            &[("ASK", ask_der), ("VCEK", &vek.der)],
            at,
        )?,
        None => {
            notes.push("no CRL supplied: revocation of the ASK and VCEK was not checked".into())
        }
    }

    // The endorsement key must be the kind, product, TCB and chip the report claims.
    let facts = match &vek_cert.vek {
        Some(Ok(facts)) => facts,
        Some(Err(e)) => return Err(e.clone()),
        None => {
            return Err(VerifyError::input(
                "VCEK certificate",
                "is not an EC certificate",
            ));
        }
    };
    match report.signing_key {
        SigningKey::None => {
            return Err(VerifyError::Signature(
                "the report says it is unsigned (SIGNING_KEY = none)".into(),
            ));
        }
        k if k != facts.kind => {
            return Err(VerifyError::Chain(format!(
                "the report was signed by a {:?} but the supplied key is a {:?}",
                k, facts.kind
            )));
        }
        _ => {}
    }
    if let Some(name) = &facts.product_name
        && !name
            .to_ascii_lowercase()
            .starts_with(&product.name().to_ascii_lowercase())
    {
        return Err(VerifyError::Chain(format!(
            "the endorsement key is for product '{name}', not {product}"
        )));
    }
    let tcb = report.reported_tcb.parts(product.turin_layout());
    for (_, name, value) in &facts.spl {
        let reported = match *name {
            "bootloader" => Some(tcb.bootloader),
            "tee" => Some(tcb.tee),
            "snp" => Some(tcb.snp),
            "microcode" => Some(tcb.microcode),
            _ => tcb.fmc,
        };
        match (value, reported) {
            (Some(cert), Some(rep)) if *cert != rep => {
                return Err(VerifyError::Tcb(format!(
                    "the endorsement key was issued for {name} SPL {cert}, but the report's \
                     reported TCB has {name} SPL {rep}"
                )));
            }
            (None, Some(_)) if facts.kind == SigningKey::Vcek && *name != "fmc" => {
                return Err(VerifyError::input(
                    "VCEK certificate",
                    format!("has no {name} SPL extension"),
                ));
            }
            _ => {}
        }
    }
    if facts.kind == SigningKey::Vcek {
        let hw_id = facts
            .hw_id
            .as_deref()
            .ok_or_else(|| VerifyError::input("VCEK certificate", "has no hwID extension"))?;
        if report.mask_chip_id {
            notes.push("the chip ID is masked in this report: hwID not compared".into());
        } else if hw_id.is_empty() || hw_id.len() > 64 || report.chip_id[..hw_id.len()] != *hw_id {
            return Err(VerifyError::Chain(format!(
                "the VCEK belongs to chip {}, but the report comes from chip {}",
                hex::encode(hw_id),
                hex::encode(&report.chip_id[..hw_id.len().min(64)])
            )));
        }
    }

    // Finally the report signature, over the raw signed bytes.
    if report.signature_algo != 1 {
        return Err(VerifyError::Signature(format!(
            "unsupported signature algorithm {} (1 = ECDSA P-384 with SHA-384)",
            report.signature_algo
        )));
    }
    let mut sig = [0u8; 96];
    sig[..48].copy_from_slice(&p384_component(&report.signature_r, "r")?);
    sig[48..].copy_from_slice(&p384_component(&report.signature_s, "s")?);
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &vek_cert.public_key)
        .verify(&raw[..SIGNED_LEN], &sig)
        .map_err(|_| {
            VerifyError::Signature(
                "the report's signature does not verify under the endorsement key".into(),
            )
        })?;

    notes.push(
        "AMD publishes no TCB status: appraise the reported TCB with a policy's snp.min_tcb".into(),
    );
    let valid_until = [ark_cert.not_after, ask_cert.not_after, vek_cert.not_after]
        .into_iter()
        .min()
        .and_then(|t| u64::try_from(t).ok());
    Ok(Appraisal {
        tee: TeeKind::Snp,
        simulated: false,
        status: TcbStatus::Unknown,
        advisory_ids: Vec::new(),
        debug: report.debug(),
        measurements: Measurements::Snp(SnpMeasurements {
            measurement: report.measurement,
            host_data: report.host_data,
            policy: report.policy,
            vmpl: report.vmpl,
            guest_svn: report.guest_svn,
            id_key_digest: report.id_key_digest,
            author_key_digest: report.author_key_digest,
            family_id: report.family_id,
            image_id: report.image_id,
            reported_tcb: tcb,
        }),
        report_data: report.report_data,
        platform: Platform::Amd {
            product,
            signing_key: report.signing_key,
            chip_id: report.chip_id,
        },
        valid_until,
        runtime_claims: None,
        notes,
    })
}
