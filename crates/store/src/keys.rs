//! The master key and the purpose-separated keys derived from it.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use enclave_aead::{AeadError, SealKey};

use crate::StoreError;

/// The HKDF domain of every key derived from the master key.
const DOMAIN: &str = "enclave-os/kv/v1";

/// An `enclave-aead` failure as the store reports it.
pub(crate) fn aead_err(e: AeadError) -> StoreError {
    match e {
        AeadError::Crypto(what) => StoreError::Crypto(what),
        other => StoreError::Invalid(other.to_string()),
    }
}

/// The store's master key: 32 secret bytes, zeroized on drop, never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh key from the system generator.
    pub fn generate() -> Result<Self, StoreError> {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(k.as_mut())
            .map_err(|_| StoreError::Crypto("system random generator"))?;
        Ok(Self(k))
    }

    /// A key from its bytes (as unsealed by the caller).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            StoreError::Invalid(format!("a master key is 32 bytes, not {}", bytes.len()))
        })?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The key's bytes, for sealing.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A 32-byte key for `purpose` (and `context`, such as a namespace): `enclave-aead`'s
    /// derivation in the domain `enclave-os/kv/v1`, HKDF-SHA256 with info
    /// `purpose | len(context) (8, BE) | context`, as since the store's first format.
    ///
    /// The store itself uses the purposes `value-aead`, `key-mac`, `counter-file`, `set-hash`
    /// and `state-aead` (and reads the first format's `set-mac` and `state-mac` once, to migrate
    /// a store); a caller deriving a key for its own use picks a label of its own (the
    /// runtime's compiled-code cache uses `wasm-code-cache`), so no two uses share a key.
    pub fn derive(&self, purpose: &str, context: &str) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        enclave_aead::derive_key(DOMAIN, self.0.as_ref(), purpose, context.as_bytes())
            .map_err(aead_err)
    }

    /// The AES-256-GCM key for `purpose` and `context` (see [`Self::derive`]).
    pub(crate) fn seal_key(&self, purpose: &str, context: &str) -> Result<SealKey, StoreError> {
        SealKey::from_bytes(self.derive(purpose, context)?.as_ref()).map_err(aead_err)
    }

    pub(crate) fn hmac_key(&self, purpose: &str, context: &str) -> Result<hmac::Key, StoreError> {
        Ok(hmac::Key::new(
            hmac::HMAC_SHA256,
            self.derive(purpose, context)?.as_ref(),
        ))
    }
}

/// Which store this is: 16 random bytes chosen when the store is created. Records, the state
/// record and counters are bound to it, so nothing moves between two stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// A fresh id.
    pub fn generate() -> Result<Self, StoreError> {
        let mut id = [0u8; 16];
        SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| StoreError::Crypto("system random generator"))?;
        Ok(Self(id))
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Equality that takes the same time wherever the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
