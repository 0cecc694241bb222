//! One record's encoding: what is stored under a key's keyed hash.
//!
//! ```text
//! stored key   = HMAC-SHA256(K_mac[ns], key)
//! stored value = version (8, big-endian) | nonce (12) | AES-256-GCM(K_aead[ns], plaintext, AAD)
//! plaintext    = key length (4, big-endian) | key | value
//! AAD          = "enclave-os/kv/v1/record" | store id (16) | ns length (2) | ns | stored key | version
//! ```
//!
//! The plaintext repeats the key so that a read can confirm it, and so keys can be listed by the
//! namespace's owner; the file shows only keyed hashes.
//!
//! The sealing is `enclave-aead`'s framed layout under the version header: these are the bytes
//! the store wrote before it used `enclave-aead` (known-answer test:
//! `records_and_state_records_are_byte_for_byte_the_previous_format` in `tests/store.rs`).

use enclave_aead::{AeadError, NONCE_LEN, SealKey, TAG_LEN};
use ring::hmac;
use zeroize::Zeroizing;

use crate::StoreError;
use crate::keys::{MasterKey, StoreId, aead_err};

/// A keyed hash of a key: what the database stores as the key.
pub(crate) type KeyHash = [u8; 32];

const HEADER: usize = 8 + NONCE_LEN;

/// A namespace's two keys.
pub(crate) struct NsKeys {
    /// The redb table holding the namespace.
    pub table: String,
    mac: hmac::Key,
    aead: SealKey,
}

/// A decrypted record's version and key (listing needs no value).
pub(crate) struct Opened {
    pub version: u64,
    pub key: Vec<u8>,
}

const AAD_LABEL: &[u8; 23] = b"enclave-os/kv/v1/record";
/// The longest AAD: label, store id, length, the longest namespace, hash, version.
const AAD_MAX: usize = 23 + 16 + 2 + 128 + 32 + 8;

/// The record's AAD, built on the stack (reads are hot).
struct RecordAad {
    buf: [u8; AAD_MAX],
    len: usize,
}

impl AsRef<[u8]> for RecordAad {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn aad(store: &StoreId, ns: &str, hash: &KeyHash, version: u64) -> RecordAad {
    let mut a = RecordAad {
        buf: [0; AAD_MAX],
        len: 0,
    };
    // Namespaces are at most 128 bytes (checked by the store), so everything fits; the clamp
    // keeps an unchecked caller from writing past the buffer all the same.
    let ns = &ns.as_bytes()[..ns.len().min(128)];
    for part in [
        &AAD_LABEL[..],
        &store.0,
        &(ns.len() as u16).to_be_bytes(),
        ns,
        hash,
        &version.to_be_bytes(),
    ] {
        a.buf[a.len..a.len + part.len()].copy_from_slice(part);
        a.len += part.len();
    }
    a
}

/// The version a stored value claims, without decrypting it.
pub(crate) fn version_of(stored: &[u8]) -> Option<u64> {
    stored
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
}

impl NsKeys {
    pub(crate) fn new(master: &MasterKey, ns: &str) -> Result<Self, StoreError> {
        Ok(Self {
            table: format!("ns/{ns}"),
            mac: master.hmac_key("key-mac", ns)?,
            aead: master.seal_key("value-aead", ns)?,
        })
    }

    pub(crate) fn hash(&self, key: &[u8]) -> KeyHash {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.mac, key).as_ref());
        out
    }

    pub(crate) fn seal(
        &self,
        store: &StoreId,
        ns: &str,
        hash: &KeyHash,
        version: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let key_len =
            u32::try_from(key.len()).map_err(|_| StoreError::Invalid("key too long".into()))?;
        let mut out = Vec::with_capacity(HEADER + 4 + key.len() + value.len() + TAG_LEN);
        out.extend_from_slice(&version.to_be_bytes());
        self.aead
            .seal_with(&mut out, aad(store, ns, hash, version).as_ref(), |p| {
                p.push(&key_len.to_be_bytes());
                p.push(key);
                p.push(value);
            })
            .map_err(aead_err)?;
        Ok(out)
    }

    /// Authenticate and decrypt `stored`: its version, and the plaintext (`len(key) | key |
    /// value`) with the key's length read and bounded.
    fn decrypt(
        &self,
        store: &StoreId,
        ns: &str,
        hash: &KeyHash,
        stored: &[u8],
    ) -> Result<(u64, Zeroizing<Vec<u8>>, usize), String> {
        if stored.len() < HEADER + 4 + TAG_LEN {
            return Err(format!(
                "{} bytes is too short to be a record",
                stored.len()
            ));
        }
        let version = version_of(stored).ok_or("no version")?;
        let body = self
            .aead
            .open_framed(aad(store, ns, hash, version).as_ref(), &stored[8..])
            .map_err(|e| match e {
                AeadError::Authentication => "authentication failed: the record was altered, or moved here from another key, namespace or store"
                    .to_string(),
                other => other.to_string(),
            })?;
        let plain_len = body.len();
        let key_len = body
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or("no key length")? as usize;
        if plain_len < 4 + key_len {
            return Err("key length past the end".into());
        }
        Ok((version, body, key_len))
    }

    pub(crate) fn open(
        &self,
        store: &StoreId,
        ns: &str,
        hash: &KeyHash,
        stored: &[u8],
    ) -> Result<Opened, String> {
        let (version, body, key_len) = self.decrypt(store, ns, hash, stored)?;
        Ok(Opened {
            version,
            key: body[4..4 + key_len].to_vec(),
        })
    }

    /// [`Self::open`] for a read of `key`: the record must decrypt to that key. Compares in
    /// place instead of copying the key out. Returns the version and the value.
    pub(crate) fn open_key(
        &self,
        store: &StoreId,
        ns: &str,
        hash: &KeyHash,
        stored: &[u8],
        key: &[u8],
    ) -> Result<(u64, Zeroizing<Vec<u8>>), String> {
        let (version, mut body, key_len) = self.decrypt(store, ns, hash, stored)?;
        if body[4..4 + key_len] != *key {
            return Err("the record decrypts to another key".into());
        }
        // The value is what remains: reuse the buffer rather than copy the secret again.
        body.drain(..4 + key_len);
        Ok((version, body))
    }
}
