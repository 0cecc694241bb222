//! Signature verifications that dcap-qvl performs, remembered by content.
//!
//! dcap-qvl verifies about ten ECDSA P-256 signatures per quote. Within one quote it verifies
//! none twice (0.7 verifies the root CA CRL once for every chain, and skips the QE Identity
//! chain when it is the TCB Info's), so on a fresh verifier this memo saves nothing; across
//! quotes from one platform, everything but the quote's own signature repeats (collateral,
//! CRLs, the PCK chain, the QE report), and that is what it is for.
//!
//! The quote's own signature is never remembered (see [`SigMemo::install`]).
//!
//! dcap-qvl lets its caller choose the crypto provider ([`dcap_qvl::config::Config`]). This one
//! hands dcap-qvl ring's ECDSA P-256 algorithm wrapped so that, while a [`SigMemo`] is installed
//! for the current thread, a verification whose exact inputs (public key, signed message and
//! signature) have verified before returns the same answer without the arithmetic. A signature
//! check is a pure function of those bytes, so the answer is the same; a hit requires all three
//! to be equal byte for byte, so a different input cannot hit. Only successes are remembered: a failing signature is
//! checked (and fails) every time. Nothing else dcap-qvl does is affected: it still parses
//! everything, and every time-dependent check (validity periods, CRL `nextUpdate`, revocation,
//! the TCB Info and QE Identity dates) is evaluated at the requested time on every quote.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dcap_qvl::config::{Config, CryptoProvider};
use dcap_qvl::crypto::RingCrypto;
use rustls_pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};

/// Successful verifications: the message, by the public key and signature that verified it.
///
/// Looked up by (public key, signature) and then compared byte for byte with the message
/// presented, so a hit means exactly the same three inputs; no hash is trusted, and a miss costs
/// a copy of the message rather than a hash of it.
#[derive(Debug, Default)]
pub(crate) struct SigMemo(Mutex<Memo>);

#[derive(Debug, Default)]
struct Memo {
    verified: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl SigMemo {
    /// Bound on the bytes remembered (TCB Info messages are a few KB); past it, start over.
    const CAPACITY_BYTES: usize = 4 << 20;

    fn key(public_key: &[u8], signature: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(2 + public_key.len() + signature.len());
        // The key's length is prefixed so that (key, signature) splits one way only.
        key.extend_from_slice(&(public_key.len() as u16).to_le_bytes());
        key.extend_from_slice(public_key);
        key.extend_from_slice(signature);
        key
    }

    fn contains(&self, key: &[u8], message: &[u8]) -> bool {
        self.0
            .lock()
            .map(|m| m.verified.get(key).is_some_and(|known| known == message))
            .unwrap_or(false)
    }

    fn insert(&self, key: Vec<u8>, message: &[u8]) {
        if let Ok(mut m) = self.0.lock() {
            let size = key.len() + message.len();
            if m.bytes + size > Self::CAPACITY_BYTES {
                m.verified.clear();
                m.bytes = 0;
            }
            m.bytes += size;
            m.verified.insert(key, message.to_vec());
        }
    }

    /// Run `f` (a dcap-qvl call) with this memo serving the current thread's verifications,
    /// except those under `per_quote_key` (the quote's attestation key, SEC1 uncompressed): the
    /// quote's own signature differs in every quote, so remembering it could only ever serve
    /// the same quote again, which the warm appraisal cache already does.
    pub(crate) fn install<T>(
        self: &Arc<Self>,
        per_quote_key: [u8; 65],
        f: impl FnOnce() -> T,
    ) -> T {
        struct Restore(Option<Installed>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let previous = CURRENT.with(|c| {
            c.borrow_mut().replace(Installed {
                memo: self.clone(),
                per_quote_key,
            })
        });
        let _restore = Restore(previous);
        f()
    }
}

struct Installed {
    memo: Arc<SigMemo>,
    per_quote_key: [u8; 65],
}

thread_local! {
    static CURRENT: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

/// ring's ECDSA P-256 SHA-256 (the algorithm dcap-qvl's ring configuration uses), consulting the
/// installed memo.
#[derive(Debug)]
struct MemoEcdsaP256;

fn inner() -> &'static dyn SignatureVerificationAlgorithm {
    RingCrypto::sig_algo()
}

impl SignatureVerificationAlgorithm for MemoEcdsaP256 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        let memo = CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .filter(|i| i.per_quote_key[..] != *public_key)
                .map(|i| i.memo.clone())
        });
        let Some(memo) = memo else {
            return inner().verify_signature(public_key, message, signature);
        };
        if public_key.len() > usize::from(u16::MAX) {
            return inner().verify_signature(public_key, message, signature);
        }
        let key = SigMemo::key(public_key, signature);
        if memo.contains(&key, message) {
            return Ok(());
        }
        inner().verify_signature(public_key, message, signature)?;
        memo.insert(key, message);
        Ok(())
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        inner().public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        inner().signature_alg_id()
    }

    fn fips(&self) -> bool {
        inner().fips()
    }
}

static MEMO_ECDSA_P256: MemoEcdsaP256 = MemoEcdsaP256;

/// [`RingCrypto`] with memoised signature verification.
pub(crate) struct MemoCrypto;

impl CryptoProvider for MemoCrypto {
    fn sig_algo() -> &'static dyn SignatureVerificationAlgorithm {
        &MEMO_ECDSA_P256
    }

    fn sha256(data: &[u8]) -> [u8; 32] {
        RingCrypto::sha256(data)
    }

    fn sha384(data: &[u8]) -> [u8; 48] {
        RingCrypto::sha384(data)
    }
}

/// dcap-qvl's audited ring configuration with only the crypto provider swapped.
pub(crate) struct MemoConfig;

impl Config for MemoConfig {
    type X509 = dcap_qvl::x509::X509CertBackend;
    type SigEncoder = dcap_qvl::signature::DerSigEncoder;
    type Crypto = MemoCrypto;
}
