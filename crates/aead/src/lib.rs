//! The one sealing construction of Enclave OS: how everything the runtime keeps on a disk the
//! host holds is encrypted and authenticated.
//!
//! What it is for: every AES-256-GCM use with a runtime-held key goes through here: TEE-sealed
//! blobs (`enclave-tee`), the sealed store's records and state record (`enclave-store`), the
//! compiled-code cache and the SDK's app-held AES keys (`enclave-wasm`), and the vault next. One
//! construction, reviewed once:
//!
//! - **Keys, one per purpose.** [`derive_key`] and [`SealKey::derive`]:
//!   `HKDF-SHA256(salt = domain, IKM = root key, info = purpose | len(context) (8, BE) | context)`.
//!   The *domain* names the root key's owner and version (`enclave-os/kv/v1`), the *purpose* the
//!   use (`value-aead`), the *context* what the key is bound to (a namespace). Purposes are text
//!   without NUL bytes (refused otherwise) and contexts are length-prefixed, so one `info` never
//!   parses as two (purpose, context) pairs: no two uses share a key.
//! - **Nonces are ours.** 96 bits from ring's `SystemRandom`, drawn inside [`SealKey`] for every
//!   seal. No API takes a nonce from the caller, so no caller can repeat one. Random nonces bound
//!   how much one key may seal: after `q` seals the chance of any repeat is below `q² / 2^97`,
//!   and NIST SP 800-38D (8.3) caps a key at 2^32 seals with random nonces (a repeat below
//!   2^-32). A repeat would give away the XOR of two plaintexts and GCM's authentication key, so
//!   each user keeps its keys within that bound, mostly by deriving a key per purpose and
//!   context (`docs/sealing.md` says how much each one seals).
//! - **The AAD binds the context.** The caller passes what the data is and where it belongs
//!   (a label, a store id, a namespace, a version); opening needs the same bytes, so sealed data
//!   moved to another purpose, record or component fails authentication.
//!
//! Two layouts of the same construction:
//!
//! ```text
//! self-describing (seal / open):     format (1) = 1 | nonce (12) | ciphertext | tag (16)
//!                                    AAD = format (1) | caller's AAD
//! framed (seal_append / open_framed): caller's header | nonce (12) | ciphertext | tag (16)
//!                                    AAD = the caller's, which covers what its header must bind
//! ```
//!
//! New formats (the vault) use the self-describing layout: its format byte, authenticated, is
//! what lets the construction change later while old data still opens. The framed layout is for
//! formats that already carry their own version: the TEE blob's header (`EOSSEAL`, version 1),
//! the store's records (`enclave-os/kv/v1/record` in the AAD; version 2 of the state record is
//! told from version 1 by its length), the code cache (`enclave-os/wasm-code-cache/v1` in the
//! AAD). It reproduces those formats byte for byte (known-answer tests in each crate), so data
//! written before this crate existed still opens.
//!
//! Secrets: derived key bytes are [`Zeroizing`] and wiped once ring has expanded them; ring's
//! expanded AES key schedule inside a [`SealKey`] is not wiped on drop (ring offers no way to),
//! which is no worse than before this crate. Nothing here logs or prints key material.
//!
//! What it is not: a key store or a TEE interface. It never sees where a root key comes from
//! (the TEE, the sealed master key) and writes nothing to disk.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Key length: AES-256.
pub const KEY_LEN: usize = 32;
/// Nonce length: 96 bits.
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a framed seal adds to the plaintext: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// The format byte of the self-describing layout this build writes.
pub const FORMAT_V1: u8 = 1;

/// Why a derivation, seal or open failed. Authentication failures say nothing more than that:
/// which of key, AAD or bytes was wrong is exactly what GCM does not tell.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AeadError {
    /// The system random generator or HKDF failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
    /// A purpose label that could make two derivations share a key.
    #[error(
        "the purpose label {0:?} contains a NUL byte: labels are text, so that a purpose and a \
         context never read as another pair"
    )]
    Purpose(String),
    /// Key material of the wrong length.
    #[error("an AES-256-GCM key is {KEY_LEN} bytes, not {0}")]
    KeyLength(usize),
    /// Too short to hold what the layout needs.
    #[error("{len} bytes is too short for sealed data, which needs at least {min}")]
    Truncated {
        /// The length given.
        len: usize,
        /// The least the layout needs.
        min: usize,
    },
    /// A self-describing blob of a format this build does not read.
    #[error("sealed data in format {found}; this build reads format {FORMAT_V1}")]
    Format {
        /// The format byte found.
        found: u8,
    },
    /// The tag did not verify.
    #[error(
        "authentication failed: the data was altered, sealed under another key, or is being \
         opened for another context"
    )]
    Authentication,
}

/// HKDF-SHA256 with a raw `info`, 32 bytes out. For widening key material from a TEE (whose
/// derivations were fixed before [`derive_key`] existed and must not change); everything else
/// derives with [`derive_key`].
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
) -> Result<Zeroizing<[u8; KEY_LEN]>, AeadError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk
        .expand(info, hkdf::HKDF_SHA256)
        .map_err(|_| AeadError::Crypto("HKDF-SHA256 expand"))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    okm.fill(out.as_mut())
        .map_err(|_| AeadError::Crypto("HKDF-SHA256 expand"))?;
    Ok(out)
}

/// The 32-byte key for `purpose` and `context` under `root`, in `domain`:
/// `HKDF-SHA256(salt = domain, IKM = root, info = purpose | len(context) (8, BE) | context)`.
pub fn derive_key(
    domain: &str,
    root: &[u8],
    purpose: &str,
    context: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, AeadError> {
    if purpose.as_bytes().contains(&0) {
        return Err(AeadError::Purpose(purpose.to_string()));
    }
    let len = (context.len() as u64).to_be_bytes();
    hkdf_sha256(
        domain.as_bytes(),
        root,
        &[purpose.as_bytes(), &len, context],
    )
}

/// What a caller writes as the plaintext of [`SealKey::seal_with`]: it can only append, so the
/// header before it and the nonce stay as sealed.
pub struct Plaintext<'a> {
    buf: &'a mut Vec<u8>,
}

impl Plaintext<'_> {
    /// Append `bytes` to the plaintext.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

/// An AES-256-GCM key for one purpose. Not `Clone`, never printed.
pub struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// The key for `purpose` and `context` under `root` in `domain` (see [`derive_key`]).
    pub fn derive(
        domain: &str,
        root: &[u8],
        purpose: &str,
        context: &[u8],
    ) -> Result<Self, AeadError> {
        Self::from_bytes(derive_key(domain, root, purpose, context)?.as_ref())
    }

    /// A key whose bytes the caller already holds: derived for this purpose alone (the code
    /// cache is handed one), or an app's own AES key. The caller wipes its copy.
    pub fn from_bytes(key: &[u8]) -> Result<Self, AeadError> {
        UnboundKey::new(&AES_256_GCM, key)
            .map(|k| Self(LessSafeKey::new(k)))
            .map_err(|_| AeadError::KeyLength(key.len()))
    }

    /// Seal `plaintext` in the self-describing layout: `FORMAT_V1 | nonce | ciphertext | tag`,
    /// the format byte authenticated before `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
        let mut out = Vec::with_capacity(1 + OVERHEAD + plaintext.len());
        out.push(FORMAT_V1);
        self.seal_append(&mut out, &v1_aad(aad), plaintext)?;
        Ok(out)
    }

    /// Open what [`Self::seal`] wrote, under the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        let (&format, body) = sealed.split_first().ok_or(AeadError::Truncated {
            len: 0,
            min: 1 + OVERHEAD,
        })?;
        if format != FORMAT_V1 {
            return Err(AeadError::Format { found: format });
        }
        if body.len() < OVERHEAD {
            return Err(AeadError::Truncated {
                len: sealed.len(),
                min: 1 + OVERHEAD,
            });
        }
        self.open_framed(&v1_aad(aad), body)
    }

    /// Framed layout: append `nonce | ciphertext | tag` to `out`, which may already hold the
    /// caller's header. The AAD is the caller's alone: it must cover what the header binds.
    pub fn seal_append(
        &self,
        out: &mut Vec<u8>,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<(), AeadError> {
        self.seal_with(out, aad, |p| p.push(plaintext))
    }

    /// [`Self::seal_append`] for a plaintext written in pieces straight into `out`, so a caller
    /// assembling it (a length, a key, a value) makes no copy of its own.
    pub fn seal_with(
        &self,
        out: &mut Vec<u8>,
        aad: &[u8],
        plaintext: impl FnOnce(&mut Plaintext<'_>),
    ) -> Result<(), AeadError> {
        let nonce = fresh_nonce()?;
        let header = out.len();
        out.extend_from_slice(&nonce);
        let start = out.len();
        plaintext(&mut Plaintext { buf: out });
        match self.0.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[start..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                // Never leave the plaintext behind in the caller's buffer.
                out[start..].zeroize();
                out.truncate(header);
                Err(AeadError::Crypto(
                    "AES-256-GCM seal (the plaintext is too long)",
                ))
            }
        }
    }

    /// Open a framed body, `nonce | ciphertext | tag` (what follows the caller's header).
    pub fn open_framed(&self, aad: &[u8], body: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        if body.len() < OVERHEAD {
            return Err(AeadError::Truncated {
                len: body.len(),
                min: OVERHEAD,
            });
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| AeadError::Crypto("nonce"))?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .map_err(|_| AeadError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// [`Self::open_framed`] on an owned buffer whose body starts at `start`, decrypted where it
    /// lies: for bodies of megabytes (compiled code), which are then never copied.
    pub fn open_owned(
        &self,
        aad: &[u8],
        buf: Vec<u8>,
        start: usize,
    ) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        let mut buf = Zeroizing::new(buf);
        let min = start.saturating_add(OVERHEAD);
        if buf.len() < min {
            return Err(AeadError::Truncated {
                len: buf.len(),
                min,
            });
        }
        let nonce = Nonce::try_assume_unique_for_key(&buf[start..start + NONCE_LEN])
            .map_err(|_| AeadError::Crypto("nonce"))?;
        let len = self
            .0
            .open_within(
                nonce,
                Aad::from(aad),
                buf.as_mut_slice(),
                start + NONCE_LEN..,
            )
            .map_err(|_| AeadError::Authentication)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The self-describing layout's AAD: its format byte, then the caller's.
fn v1_aad(aad: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(1 + aad.len());
    full.push(FORMAT_V1);
    full.extend_from_slice(aad);
    full
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], AeadError> {
    #[cfg(any(test, feature = "test-nonce"))]
    if let Some(fixed) = test_nonce::fixed() {
        return Ok(fixed);
    }
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| AeadError::Crypto("the system random generator"))?;
    Ok(nonce)
}

/// Known-answer tests only (feature `test-nonce`, which only dev-dependencies enable): fix the
/// nonce of every seal on this thread while a closure runs, so that a test can compare output
/// with bytes written before. Repeating a nonce under one key is exactly what the construction
/// otherwise never does; no production build compiles this.
#[cfg(any(test, feature = "test-nonce"))]
pub mod test_nonce {
    use std::cell::Cell;

    use super::NONCE_LEN;

    thread_local! {
        static FIXED: Cell<Option<[u8; NONCE_LEN]>> = const { Cell::new(None) };
    }

    /// Run `f` with every nonce drawn on this thread equal to `nonce`; the previous setting is
    /// restored afterwards, on panic too.
    pub fn with_fixed_nonce<R>(nonce: [u8; NONCE_LEN], f: impl FnOnce() -> R) -> R {
        struct Restore(Option<[u8; NONCE_LEN]>);
        impl Drop for Restore {
            fn drop(&mut self) {
                FIXED.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(FIXED.with(|c| c.replace(Some(nonce))));
        f()
    }

    pub(crate) fn fixed() -> Option<[u8; NONCE_LEN]> {
        FIXED.with(Cell::get)
    }
}
