//! The key binding of Enclave OS RA-TLS certificates (see `docs/ratls.md`, "Key binding").
//!
//! ```text
//! report_data = SHA-512( SHA-256(SubjectPublicKeyInfo DER) || binding )
//! ```
//!
//! where `binding` is, by freshness mode: the certificate's notBefore as the 20 ASCII bytes
//! `YYYY-MM-DDTHH:MM:SSZ` (deterministic), or the client's nonce bytes (challenge).

use ring::digest::{SHA256, SHA512, digest};

/// report_data for a key and a binding.
pub fn report_data(spki_der: &[u8], binding: &[u8]) -> [u8; 64] {
    let mut input = digest(&SHA256, spki_der).as_ref().to_vec();
    input.extend_from_slice(binding);
    let mut out = [0u8; 64];
    out.copy_from_slice(digest(&SHA512, &input).as_ref());
    out
}

/// The deterministic-mode binding: notBefore (unix seconds) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn not_before_binding(not_before: i64) -> String {
    enclave_evidence::time::fmt(not_before)
}

/// What the verifier expects the binding to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The certificate's own notBefore.
    Deterministic,
    /// A nonce the client chose.
    Nonce(Vec<u8>),
}

impl Freshness {
    /// The binding bytes for a certificate with this notBefore.
    pub fn binding(&self, not_before: i64) -> Vec<u8> {
        match self {
            Freshness::Deterministic => not_before_binding(not_before).into_bytes(),
            Freshness::Nonce(n) => n.clone(),
        }
    }
}

/// How a leaf's evidence binds its key: the form the leaf carries its evidence in. A listener
/// chooses one (`[listener] evidence_binding` in `enclave.toml`); each leaf carries its evidence
/// once, in that form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingFormat {
    /// The raw evidence extension (SGX or TDX quote, SNP report), with
    /// `report_data = SHA-512(SHA-256(SPKI) || binding)` ([`report_data`]).
    #[default]
    Seed,
    /// TCG DICE tagged evidence as Gramine and rats-tls read it: `report_data[0..32]` is
    /// SHA-256 of the CBOR claims (key hash, binding as `nonce`, config root and workload
    /// identity), `report_data[32..64]` is zero. DCAP quotes (SGX, TDX) only.
    Dice,
}

impl BindingFormat {
    /// The name used in configuration and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingFormat::Seed => "seed",
            BindingFormat::Dice => "dice",
        }
    }
}

impl std::fmt::Display for BindingFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
