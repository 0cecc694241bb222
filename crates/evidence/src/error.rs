//! Errors for decoding and verification.
//!
//! Every error names the input it rejects and the reason, in words an operator understands.

use thiserror::Error;

/// A piece of evidence could not be decoded.
///
/// `field` is the dotted path of the field that was malformed (for example
/// `quote.signature_data.certification_data.size`), so that a person can find it in the spec.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {reason}")]
pub struct DecodeError {
    /// Dotted path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DecodeError {
    /// A decode error for `field` with `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Evidence was decoded but did not verify.
///
/// Each variant says which stage rejected it; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence itself is malformed.
    #[error("malformed evidence: {0}")]
    Decode(#[from] DecodeError),
    /// An input the caller supplied beside the evidence (collateral, certificates, CRL) is unusable.
    #[error("bad {input}: {reason}")]
    Input {
        /// Which input (for example `collateral`, `VCEK certificate`).
        input: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A certificate chain does not lead to the trusted root, or a certificate is not valid at the
    /// verification time.
    #[error("certificate chain: {0}")]
    Chain(String),
    /// A signature does not verify.
    #[error("signature: {0}")]
    Signature(String),
    /// A binding between two parts of the evidence does not hold (for example the QE report data
    /// does not hash the attestation key, or report_data does not hash the runtime claims).
    #[error("binding: {0}")]
    Binding(String),
    /// The platform's TCB could not be appraised or is revoked.
    #[error("TCB: {0}")]
    Tcb(String),
    /// Collateral is missing, expired, or inconsistent with the evidence.
    #[error("collateral: {0}")]
    Collateral(String),
    /// Simulated evidence was presented to a verifier that does not trust the simulation root.
    #[error("simulated evidence: {0}")]
    Simulated(String),
    /// The evidence verified, but the appraisal policy rejected it.
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyViolation),
}

impl VerifyError {
    /// An unusable caller-supplied input.
    pub fn input(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Input {
            input: input.into(),
            reason: reason.into(),
        }
    }
}
