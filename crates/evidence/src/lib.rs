//! Typed decoding and offline appraisal of hardware attestation evidence.
//!
//! This crate answers one question for Enclave OS and its clients: *is this really evidence from
//! a genuine TEE, running the code I expect?* It decodes Intel DCAP quotes (v3 SGX, v4 and v5 TDX),
//! AMD SEV-SNP attestation reports (v2, v3, v5; VCEK and VLEK) and Azure confidential-VM HCL
//! reports, verifies them against the vendors' roots at a caller-chosen time with no network
//! access, and appraises the result against a [`Policy`].
//!
//! What it is not: it does not fetch collateral or certificates (callers supply them, so that
//! verification is reproducible and offline), it does not produce evidence (that is the `tee`
//! crate), and it knows nothing of TLS (that is `ratls`). It depends on neither the simulator
//! nor a certificate issuer, so a client embeds it as it is (CI checks its dependency tree;
//! `docs/ratls.md`, "Depending on the verifier only"); the file names of a simulation PKI that
//! a verifier may be told to trust are in [`intel::simulation`].
//!
//! Every decoder returns a [`DecodeError`] naming the malformed field; every verification failure
//! is a [`VerifyError`] saying which stage rejected the evidence and why. Nothing panics on input.
//!
//! ```no_run
//! use enclave_evidence::{Verifier, Inputs, Policy};
//! let quote = std::fs::read("quote.bin").unwrap();
//! let collateral = enclave_evidence::intel::Collateral::from_json(
//!     &std::fs::read("collateral.json").unwrap()).unwrap();
//! let inputs = Inputs { collateral: Some(collateral), ..Inputs::default() };
//! let appraisal = Verifier::default().verify(&quote, &inputs, 1752919277).unwrap();
//! Policy::default().check(&appraisal).unwrap();
//! ```

pub mod amd;
pub mod appraisal;
pub mod azure;
pub mod error;
pub mod input;
pub mod intel;
pub mod policy;
mod reader;
pub mod time;

pub use appraisal::{Appraisal, Measurements, Platform, TcbStatus, TeeKind};
pub use error::{DecodeError, VerifyError};
pub use policy::{Policy, PolicyViolation};

use amd::{AmdInputs, SnpReport};
use azure::{HclReport, HwReport};
use intel::{Collateral, IntelVerifier, Quote};

/// A decoded piece of evidence of any supported kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "format", rename_all = "kebab-case")]
pub enum Evidence {
    /// An Intel DCAP quote.
    DcapQuote(Box<Quote>),
    /// An AMD SEV-SNP attestation report.
    SnpReport(Box<SnpReport>),
    /// An Azure CVM HCL report.
    AzureHclReport(Box<HclReport>),
}

impl Evidence {
    /// Recognise and decode evidence from its bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if HclReport::sniff(bytes) {
            return Ok(Evidence::AzureHclReport(Box::new(HclReport::decode(
                bytes,
            )?)));
        }
        let u16_at = |i: usize| {
            bytes
                .get(i..i + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        match (u16_at(0), u16_at(2)) {
            (Some(3..=5), Some(_)) if u16_at(2) != Some(0) => {
                Ok(Evidence::DcapQuote(Box::new(Quote::decode(bytes)?)))
            }
            (Some(2..=5), Some(0)) => Ok(Evidence::SnpReport(Box::new(SnpReport::decode(bytes)?))),
            _ => Err(DecodeError::new(
                "evidence",
                format!(
                    "not a DCAP quote (v3 to v5), an SEV-SNP report or an Azure HCL report \
                     ({} bytes, starting {})",
                    bytes.len(),
                    hex::encode(&bytes[..bytes.len().min(8)])
                ),
            )),
        }
    }

    /// Whether the evidence says it comes from the Enclave OS simulator (its certificate chain
    /// ends in a simulation root). Unverified: a hint for display, never a basis for trust.
    pub fn claims_simulation(&self) -> bool {
        let Evidence::DcapQuote(q) = self else {
            return false;
        };
        q.signature
            .qe
            .certification
            .pck_chain_der()
            .ok()
            .and_then(|chain| chain.last().cloned())
            .and_then(|root| {
                x509_parser::parse_x509_certificate(&root)
                    .ok()
                    .map(|(_, c)| c.subject().to_string().contains(intel::verify::SIM_MARKER))
            })
            .unwrap_or(false)
    }

    /// The TEE kind this evidence claims to come from.
    pub fn tee(&self) -> TeeKind {
        match self {
            Evidence::DcapQuote(q) if q.is_tdx() => TeeKind::Tdx,
            Evidence::DcapQuote(_) => TeeKind::Sgx,
            Evidence::SnpReport(_) => TeeKind::Snp,
            Evidence::AzureHclReport(h) => match h.hw_report {
                HwReport::Snp(_) => TeeKind::AzureSnp,
                HwReport::Tdx(_) => TeeKind::AzureTdx,
            },
        }
    }
}

/// Everything a verifier may need beside the evidence.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Intel DCAP collateral. Without it, quotes are verified to the root only and their TCB
    /// status is Unknown.
    pub collateral: Option<Collateral>,
    /// AMD certificates, product, CRL and root.
    pub amd: AmdInputs,
    /// For an Azure TDX HCL report: the TD quote made from its TDREPORT.
    pub td_quote: Option<Vec<u8>>,
}

/// Verifies evidence of every kind. Holds the Intel root and the warm appraisal cache, so keep one
/// per process.
#[derive(Debug, Default)]
pub struct Verifier {
    intel: IntelVerifier,
    amd_chains: amd::ChainCache,
}

impl Verifier {
    /// A verifier whose Intel quotes chain to `intel`.
    pub fn with_intel(intel: IntelVerifier) -> Self {
        Self {
            intel,
            amd_chains: amd::ChainCache::default(),
        }
    }

    /// Forget the appraisals remembered for warm verification, keeping what is remembered about
    /// platforms (verified signatures, PCK chains, AMD certificate chains): the next piece of
    /// evidence is appraised as one never seen before from a known platform.
    pub fn forget_appraisals(&self) {
        self.intel.forget_appraisals();
    }

    /// Decode and verify `raw` at unix time `at`.
    pub fn verify(&self, raw: &[u8], inputs: &Inputs, at: i64) -> Result<Appraisal, VerifyError> {
        match Evidence::decode(raw)? {
            Evidence::DcapQuote(quote) => {
                self.intel
                    .verify_decoded(&quote, raw, inputs.collateral.as_ref(), at)
            }
            Evidence::SnpReport(report) => {
                amd::verify_report(&report, raw, &inputs.amd, at, &self.amd_chains)
            }
            Evidence::AzureHclReport(hcl) => match &hcl.hw_report {
                HwReport::Snp(report) => {
                    let mut a = amd::verify_report(
                        report,
                        &hcl.hw_report_raw,
                        &inputs.amd,
                        at,
                        &self.amd_chains,
                    )?;
                    hcl.check_binding()?;
                    a.tee = TeeKind::AzureSnp;
                    a.runtime_claims = Some(hcl.runtime_claims.clone());
                    Ok(a)
                }
                HwReport::Tdx(td) => {
                    let quote_raw = inputs.td_quote.as_deref().ok_or_else(|| {
                        VerifyError::input(
                            "evidence",
                            "an Azure TDX HCL report carries a TDREPORT, which is MAC'd for the \
                             CPU that made it and cannot be verified remotely; supply the TD quote \
                             made from it (--quote)",
                        )
                    })?;
                    let mut a = self
                        .intel
                        .verify(quote_raw, inputs.collateral.as_ref(), at)?;
                    let quote = Quote::decode(quote_raw)?;
                    azure::hcl::check_quote_matches(td, &quote)?;
                    hcl.check_binding()?;
                    a.tee = TeeKind::AzureTdx;
                    a.runtime_claims = Some(hcl.runtime_claims.clone());
                    Ok(a)
                }
            },
        }
    }
}
