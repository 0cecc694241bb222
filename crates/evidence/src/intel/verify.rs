//! Verification of DCAP quotes, fully offline, at a caller-chosen time.
//!
//! With collateral, dcap-qvl does the heavy lifting (TCB Info, QE Identity, CRLs, TCB level
//! matching) under a caller-chosen root, and this module adds what it lacks: the PCE-ID match
//! between the PCK certificate and the TCB Info, and precise reasons when it rejects.
//!
//! Without collateral, [`IntelVerifier::verify`] checks the signature chain only (quote → attestation
//! key → QE report → PCK certificate → root) and reports the TCB status as
//! [`TcbStatus::Unknown`]: it never guesses that a platform is up to date.
//!
//! Successful appraisals with collateral are cached by content: a later quote from the same
//! platform, QE and enclave (differing only in report_data, as when a server renews its RA-TLS
//! certificate) costs one ECDSA verification and a byte comparison, as long as the verification
//! time lies inside the window in which every piece of collateral is valid.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::digest::{Context, SHA256};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::*;

use super::collateral::Collateral;
use super::memo::{MemoConfig, SigMemo};
use super::quote::{Body, Certification, INTEL_QE_VENDOR_ID, Quote};
use crate::appraisal::{
    Appraisal, Measurements, Platform, SgxMeasurements, TcbStatus, TdxMeasurements, TeeKind,
};
use crate::error::VerifyError;

/// The Intel SGX Root CA (DER), the production trust anchor for DCAP.
pub const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel-sgx-root-ca.der");

/// How many appraisals the warm cache keeps before it starts over. Each entry holds its quote
/// (less report_data and signature: about 5 KiB with the PCK chain, at most
/// [`MAX_CACHED_QUOTE`]), so at most 16 MiB.
const CACHE_CAPACITY: usize = 1024;

/// What a verified PCK chain says, read once per chain (by its exact PEM text): the platform's
/// FMSPC and PCE-ID and the window in which every certificate of the chain is valid.
struct PckChain {
    fmspc: [u8; 6],
    pce_id: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

/// What an appraisal depends on, compared byte for byte on lookup: the collateral (by its
/// content digest) and the quote without report_data and the quote signature, which the warm
/// path checks afresh.
///
/// Not a SHA-256 of those bytes: under a profiler, hashing the whole quote that way was half of
/// what a first verification spent beyond dcap-qvl's own work. A hit is decided by equality of
/// the bytes themselves, so the map's hash (std's SipHash, with a random key per map) only has
/// to spread keys; it covers every byte, so that keys differing only far into the quote (in
/// zero padding, or in the PEM's whitespace, which no signature covers) cannot be made to pile
/// into one bucket.
#[derive(PartialEq, Eq, Hash)]
struct AppraisalKey {
    collateral: [u8; 32],
    quote: Box<[u8]>,
}

/// Quotes whose keyed bytes are longer than this are verified but not remembered: a genuine one
/// is about 5 KiB, and a quote can be made longer, without changing what it says, by padding.
const MAX_CACHED_QUOTE: usize = 16 * 1024;

struct Cached {
    appraisal: Appraisal,
    not_before: i64,
    not_after: i64,
}

/// A DCAP quote verifier bound to one root of trust.
pub struct IntelVerifier {
    root_der: Vec<u8>,
    simulated: bool,
    /// Appraisals by what they depend on. The root is not in the key: it is this verifier's.
    cache: Mutex<HashMap<AppraisalKey, Cached>>,
    /// Signatures dcap-qvl has verified, by content (see `memo.rs`).
    sigs: Arc<SigMemo>,
    /// PCK chains already read, by their PEM text.
    pck_chains: Mutex<HashMap<String, Arc<PckChain>>>,
}

impl std::fmt::Debug for IntelVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntelVerifier")
            .field("simulated", &self.simulated)
            .finish_non_exhaustive()
    }
}

impl Default for IntelVerifier {
    fn default() -> Self {
        Self::intel()
    }
}

impl IntelVerifier {
    /// A verifier that trusts Intel's production root.
    pub fn intel() -> Self {
        // Intel's root is a constant of this crate and not a simulation root (a unit test below
        // checks it), so it is not parsed on every construction.
        Self::new(INTEL_SGX_ROOT_CA.to_vec(), false)
    }

    fn new(root_der: Vec<u8>, simulated: bool) -> Self {
        Self {
            root_der,
            simulated,
            cache: Mutex::new(HashMap::new()),
            sigs: Arc::default(),
            pck_chains: Mutex::new(HashMap::new()),
        }
    }

    /// A verifier that trusts `root_der`. `simulated` marks every appraisal it makes, so that
    /// evidence from a simulation root can never pass for hardware evidence.
    ///
    /// A root that is an Enclave OS simulation root marks appraisals simulated whatever
    /// `simulated` says: simulated evidence can never be reported as hardware evidence.
    pub fn with_root(root_der: Vec<u8>, simulated: bool) -> Self {
        let is_sim_root = X509Certificate::from_der(&root_der)
            .map(|(_, c)| c.subject().to_string().contains(SIM_MARKER))
            .unwrap_or(false);
        Self::new(root_der, simulated || is_sim_root)
    }

    /// Forget every appraisal remembered for the warm path, keeping what is remembered about
    /// platforms (verified signatures, PCK chains): the next quote of each kind is appraised in
    /// full by dcap-qvl, as a quote never seen before would be.
    pub fn forget_appraisals(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Whether this verifier's root is a simulation root.
    pub fn simulated(&self) -> bool {
        self.simulated
    }

    /// Verify `raw` (a DCAP quote) at unix time `at`.
    pub fn verify(
        &self,
        raw: &[u8],
        collateral: Option<&Collateral>,
        at: i64,
    ) -> Result<Appraisal, VerifyError> {
        self.verify_decoded(&Quote::decode(raw)?, raw, collateral, at)
    }

    /// [`IntelVerifier::verify`] for a quote already decoded from `raw`.
    pub(crate) fn verify_decoded(
        &self,
        quote: &Quote,
        raw: &[u8],
        collateral: Option<&Collateral>,
        at: i64,
    ) -> Result<Appraisal, VerifyError> {
        match collateral {
            None => self.verify_signatures_only(quote, raw, at),
            Some(c) => self.verify_with_collateral(quote, raw, c, at),
        }
    }

    fn cache_key(quote: &Quote, raw: &[u8], collateral: &Collateral) -> AppraisalKey {
        let rd = quote.report_data_offset;
        let sig = quote.signed_len + 4;
        let mut bytes = Vec::with_capacity(raw.len().saturating_sub(128));
        bytes.extend_from_slice(&raw[..rd]);
        bytes.extend_from_slice(&raw[rd + 64..sig]);
        bytes.extend_from_slice(&raw[sig + 64..]);
        AppraisalKey {
            collateral: *collateral.digest(),
            quote: bytes.into_boxed_slice(),
        }
    }

    fn verify_with_collateral(
        &self,
        quote: &Quote,
        raw: &[u8],
        collateral: &Collateral,
        at: i64,
    ) -> Result<Appraisal, VerifyError> {
        let key = Self::cache_key(quote, raw, collateral);
        if let Some(hit) = self.warm(&key, quote, raw, at)? {
            return Ok(hit);
        }
        let at_u = u64::try_from(at)
            .map_err(|_| VerifyError::input("time", "verification time is before 1970"))?;
        let verifier =
            dcap_qvl::verify::QuoteVerifier::<MemoConfig>::new_with_config(self.root_der.clone())
                // Debug is appraised by our policy, so that its rejection names the rule.
                .allow_debug(true);
        let mut attestation_key = [0x04u8; 65];
        attestation_key[1..].copy_from_slice(&quote.signature.attestation_key);
        let report = match self.sigs.install(attestation_key, || {
            verifier.verify(raw, collateral.qvl(), at_u)
        }) {
            Ok(r) => r,
            Err(e) => {
                // Say precisely what broke when it is the signature chain or a date; otherwise
                // pass on dcap-qvl's reason, which names the collateral item.
                self.verify_signatures_only(quote, raw, at)?;
                collateral.check_times(at)?;
                return Err(classify(&e));
            }
        };
        // dcap-qvl verified the PCK chain; read what it certifies, and the window it is valid in.
        let pck = self.pck_chain(quote, collateral)?;
        let (not_before, not_after) = collateral.window();
        let (not_before, not_after) =
            (not_before.max(pck.not_before), not_after.min(pck.not_after));
        // dcap-qvl matched its leaf's FMSPC to the TCB Info's; these facts were read by another
        // parser, so they must say the same (they come from the same certificate).
        let fmspc = hex::encode(pck.fmspc);
        if !fmspc.eq_ignore_ascii_case(collateral.fmspc()) {
            return Err(VerifyError::Collateral(format!(
                "the PCK certificate's FMSPC {fmspc} does not match the TCB Info's fmspc {}",
                collateral.fmspc()
            )));
        }
        let pce_id = hex::encode(&pck.pce_id);
        if !pce_id.eq_ignore_ascii_case(collateral.pce_id()) {
            return Err(VerifyError::Collateral(format!(
                "the PCK certificate's PCE-ID {pce_id} does not match the TCB Info's pceId {}",
                collateral.pce_id()
            )));
        }
        let status = TcbStatus::parse(&report.status)
            .ok_or_else(|| VerifyError::Tcb(format!("unexpected TCB status {}", report.status)))?;
        let mut appraisal = self.appraisal(quote, status, pck.fmspc, pck.pce_id.clone());
        appraisal.advisory_ids = report.advisory_ids;
        appraisal.valid_until = u64::try_from(not_after).ok();
        if let Platform::Intel {
            tcb_evaluation_data_number,
            ..
        } = &mut appraisal.platform
        {
            *tcb_evaluation_data_number = Some(collateral.evaluation_data_number());
        }
        if key.quote.len() <= MAX_CACHED_QUOTE
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                key,
                Cached {
                    appraisal: appraisal.clone(),
                    not_before,
                    not_after,
                },
            );
        }
        Ok(appraisal)
    }

    /// The facts of the PCK chain dcap-qvl verified (the collateral's when it carries one, as
    /// dcap-qvl prefers it, else the quote's), read on its first sighting. They are a function
    /// of the chain's bytes only; whether the chain is trusted at the verification time is
    /// decided by dcap-qvl on every quote, before this is consulted.
    fn pck_chain(
        &self,
        quote: &Quote,
        collateral: &Collateral,
    ) -> Result<Arc<PckChain>, VerifyError> {
        let pem = match (
            &collateral.qvl().pck_certificate_chain,
            &quote.signature.qe.certification,
        ) {
            (Some(pem), _) | (None, Certification::PckChain { pem }) => pem,
            (None, other) => {
                other.pck_chain_der()?;
                return Err(VerifyError::Chain("the quote carries no PCK chain".into()));
            }
        };
        if let Some(known) = self
            .pck_chains
            .lock()
            .ok()
            .and_then(|m| m.get(pem.as_str()).cloned())
        {
            return Ok(known);
        }
        let chain = crate::input::pem_certificate_chain(pem.as_bytes())
            .map_err(|e| VerifyError::Chain(format!("the PCK certificate chain: {e}")))?;
        let known = match Self::pck_chain_walked(&chain) {
            Some(known) => Arc::new(known),
            None => Arc::new(Self::pck_chain_parsed(&chain)?),
        };
        if let Ok(mut m) = self.pck_chains.lock() {
            if m.len() >= CACHE_CAPACITY {
                m.clear();
            }
            m.insert(pem.clone(), known.clone());
        }
        Ok(known)
    }

    /// The PCK chain's facts by a DER walk (see `der.rs`); `None` if it cannot tell.
    fn pck_chain_walked(chain: &[Vec<u8>]) -> Option<PckChain> {
        let (mut not_before, mut not_after) = (i64::MIN, i64::MAX);
        let mut facts = None;
        for der in chain {
            let cert = super::der::walk(der)?;
            not_before = not_before.max(cert.not_before);
            not_after = not_after.min(cert.not_after);
            if facts.is_none() {
                let (fmspc, pce_id) = super::der::pck_facts(cert.extensions?)?;
                facts = Some((fmspc?, pce_id?.to_vec()));
            }
        }
        let (fmspc, pce_id) = facts?;
        Some(PckChain {
            fmspc,
            pce_id,
            not_before,
            not_after,
        })
    }

    /// The PCK chain's facts by x509-parser, with its reasons when something does not parse.
    fn pck_chain_parsed(chain: &[Vec<u8>]) -> Result<PckChain, VerifyError> {
        let (mut not_before, mut not_after) = (i64::MIN, i64::MAX);
        let mut pck = None;
        for der in chain {
            let (_, cert) = X509Certificate::from_der(der).map_err(|e| {
                VerifyError::Chain(format!("a PCK chain certificate does not parse: {e}"))
            })?;
            not_before = not_before.max(cert.validity().not_before.timestamp());
            not_after = not_after.min(cert.validity().not_after.timestamp());
            if pck.is_none() {
                pck = Some(super::pck::facts(&cert)?);
            }
        }
        let pck = pck.ok_or_else(|| VerifyError::Chain("the PCK chain is empty".into()))?;
        Ok(PckChain {
            fmspc: pck.fmspc,
            pce_id: pck.pce_id,
            not_before,
            not_after,
        })
    }

    /// The warm path: same root, collateral, platform, QE and enclave as an earlier success.
    fn warm(
        &self,
        key: &AppraisalKey,
        quote: &Quote,
        raw: &[u8],
        at: i64,
    ) -> Result<Option<Appraisal>, VerifyError> {
        let cached = {
            let Ok(cache) = self.cache.lock() else {
                return Ok(None);
            };
            match cache.get(key) {
                Some(c) if (c.not_before..=c.not_after).contains(&at) => c.appraisal.clone(),
                _ => return Ok(None),
            }
        };
        verify_quote_signature(quote, raw)?;
        let mut appraisal = cached;
        appraisal.report_data = *quote.body.report_data();
        Ok(Some(appraisal))
    }

    fn verify_signatures_only(
        &self,
        quote: &Quote,
        raw: &[u8],
        at: i64,
    ) -> Result<Appraisal, VerifyError> {
        if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID {
            return Err(VerifyError::Signature(format!(
                "QE vendor ID {} is not Intel's",
                hex::encode(quote.header.qe_vendor_id)
            )));
        }
        let qe = &quote.signature.qe;
        let chain = qe.certification.pck_chain_der()?;
        let leaf = match verify_pck_chain(&chain, &self.root_der, at) {
            Ok(leaf) => leaf,
            Err(e) => return Err(simulation_root(&chain, self.simulated).unwrap_or(e)),
        };
        let (_, leaf_cert) = X509Certificate::from_der(&leaf)
            .map_err(|e| VerifyError::Chain(format!("the PCK certificate does not parse: {e}")))?;
        UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_FIXED,
            &leaf_cert.public_key().subject_public_key.data,
        )
        .verify(&qe.qe_report_raw, &qe.qe_report_signature)
        .map_err(|_| {
            VerifyError::Signature(
                "the QE report's signature does not verify under the PCK certificate's key".into(),
            )
        })?;
        let mut ctx = Context::new(&SHA256);
        ctx.update(&quote.signature.attestation_key);
        ctx.update(&qe.qe_auth_data);
        let expected = ctx.finish();
        let rd = &qe.qe_report.report_data;
        if rd[..32] != *expected.as_ref() || rd[32..].iter().any(|b| *b != 0) {
            return Err(VerifyError::Binding(
                "the QE report's report_data is not SHA-256(attestation key || QE auth data): the \
                 attestation key was not certified by this quoting enclave"
                    .into(),
            ));
        }
        verify_quote_signature(quote, raw)?;
        let pck = super::pck::facts(&leaf_cert)?;
        let mut appraisal = self.appraisal(quote, TcbStatus::Unknown, pck.fmspc, pck.pce_id);
        appraisal.valid_until = leaf_cert.validity().not_after.timestamp().try_into().ok();
        appraisal.notes.push(
            "no collateral supplied: the signature chain to the root verified, but the TCB level, \
             QE identity and revocation were not checked, so the TCB status is Unknown"
                .into(),
        );
        Ok(appraisal)
    }

    fn appraisal(
        &self,
        quote: &Quote,
        status: TcbStatus,
        fmspc: [u8; 6],
        pce_id: Vec<u8>,
    ) -> Appraisal {
        let (tee, debug, measurements) = match &quote.body {
            Body::Sgx(r) => (
                TeeKind::Sgx,
                r.debug(),
                Measurements::Sgx(SgxMeasurements {
                    mr_enclave: r.mr_enclave,
                    mr_signer: r.mr_signer,
                    isv_prod_id: r.isv_prod_id,
                    isv_svn: r.isv_svn,
                    attributes: r.attributes,
                }),
            ),
            Body::Td10(r) | Body::Td15(r) => (
                TeeKind::Tdx,
                r.debug(),
                Measurements::Tdx(TdxMeasurements {
                    mr_td: r.mr_td,
                    rtmr: r.rtmr,
                    mr_config_id: r.mr_config_id,
                    mr_owner: r.mr_owner,
                    mr_owner_config: r.mr_owner_config,
                    mr_seam: r.mr_seam,
                    td_attributes: r.td_attributes,
                    xfam: r.xfam,
                }),
            ),
        };
        let mut notes = Vec::new();
        if quote.trailing_padding > 0 {
            notes.push(format!(
                "{} bytes of zero padding follow the signature data",
                quote.trailing_padding
            ));
        }
        Appraisal {
            tee,
            simulated: self.simulated,
            status,
            advisory_ids: Vec::new(),
            debug,
            measurements,
            report_data: *quote.body.report_data(),
            platform: Platform::Intel {
                fmspc,
                pce_id,
                tcb_evaluation_data_number: None,
            },
            valid_until: None,
            runtime_claims: None,
            notes,
        }
    }
}

/// The quote signature: the attestation key over the header and body.
fn verify_quote_signature(quote: &Quote, raw: &[u8]) -> Result<(), VerifyError> {
    let mut key = [0u8; 65];
    key[0] = 0x04;
    key[1..].copy_from_slice(&quote.signature.attestation_key);
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &key)
        .verify(&raw[..quote.signed_len], &quote.signature.quote_signature)
        .map_err(|_| {
            VerifyError::Signature(
                "the quote's signature does not verify under its attestation key: the header or \
                 body was altered"
                    .into(),
            )
        })
}

/// Subject marker of every certificate the Enclave OS simulator issues.
pub const SIM_MARKER: &str = "Enclave OS Simulated";

/// When a chain that failed to verify ends in an Enclave OS simulation root, say so: the fix is to
/// trust that root explicitly, never to accept it silently.
fn simulation_root(chain: &[Vec<u8>], trusting_a_sim_root: bool) -> Option<VerifyError> {
    let (_, root) = X509Certificate::from_der(chain.last()?).ok()?;
    let subject = root.subject().to_string();
    if !subject.contains(SIM_MARKER) {
        return None;
    }
    Some(VerifyError::Simulated(if trusting_a_sim_root {
        format!(
            "the quote was signed by the simulation root '{subject}', which is not the simulation root this verifier trusts (another simulation directory?)"
        )
    } else {
        format!(
            "the quote was produced by a simulated TEE and signed by the simulation root '{subject}', not by Intel; it proves nothing about hardware. To check it anyway, trust that simulation root explicitly with --trust-sim <simulation dir or its root.crt.pem>"
        )
    }))
}

/// Verify the PCK chain (leaf first) to `root_der` at `at`; returns the leaf.
fn verify_pck_chain(chain: &[Vec<u8>], root_der: &[u8], at: i64) -> Result<Vec<u8>, VerifyError> {
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| VerifyError::Chain("the PCK chain is empty".into()))?;
    let root = CertificateDer::from(root_der);
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| VerifyError::input("root certificate", format!("{e:?}")))?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| VerifyError::Chain(format!("the PCK certificate does not parse: {e:?}")))?;
    // Intel's chains are leaf, intermediate, root: a long list is only a way to burn CPU.
    if rest.len() > 3 {
        return Err(VerifyError::Chain(format!(
            "the PCK chain has {} certificates; Intel's has 3",
            chain.len()
        )));
    }
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at).map_err(|_| VerifyError::input("time", "before 1970"))?,
    ));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &intermediates,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| {
        VerifyError::Chain(format!(
            "the PCK certificate does not chain to the trusted root at {}: {}",
            crate::time::fmt(at),
            webpki_reason(&e)
        ))
    })?;
    Ok(leaf.clone())
}

fn webpki_reason(e: &webpki::Error) -> String {
    match e {
        webpki::Error::CertExpired { .. } => "a certificate in the chain has expired".into(),
        webpki::Error::CertNotValidYet { .. } => {
            "a certificate in the chain is not valid yet".into()
        }
        webpki::Error::UnknownIssuer => "the chain does not lead to the trusted root".into(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "a certificate's signature is invalid".into()
        }
        other => format!("{other:?}"),
    }
}

/// Turn a dcap-qvl rejection into a typed one. dcap-qvl's messages name the collateral item, so
/// the text (with its causes, through `{:#}`) is kept whole.
fn classify(e: &impl std::fmt::Display) -> VerifyError {
    let msg = format!("{e:#}");
    let lower = msg.to_ascii_lowercase();
    if lower.contains("tcb") && !lower.contains("signature") && !lower.contains("expired") {
        VerifyError::Tcb(msg)
    } else {
        VerifyError::Collateral(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `IntelVerifier::intel` skips the simulation-root check for Intel's own root; this is the
    /// check it skips.
    #[test]
    fn intels_root_is_not_a_simulation_root() {
        assert!(!IntelVerifier::with_root(INTEL_SGX_ROOT_CA.to_vec(), false).simulated());
        assert!(!IntelVerifier::intel().simulated());
    }
}
