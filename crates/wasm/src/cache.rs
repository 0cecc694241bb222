//! Compiled code, cached by code hash, so that a restart does not recompile every component.
//!
//! Loading compiled code means trusting it as native code: wasmtime's
//! `Component::deserialize` is `unsafe` because malformed or hostile bytes there run as
//! machine code inside the TEE. The cache directory sits on the host's disk, which the host
//! controls, so a cache entry is only deserialized after it authenticates:
//!
//! - each entry is AES-256-GCM under a key the runtime derives from its sealed master key for
//!   this purpose alone, with a fresh random nonce: `enclave-aead`'s framed layout, the entry
//!   being `nonce | ciphertext | tag` (the AAD label carries the format's version), byte for byte
//!   what the cache wrote before it used `enclave-aead` (known-answer test below);
//! - the AAD binds the SHA-256 of the supplied component and the engine's compatibility
//!   fingerprint, so an entry cannot be moved to another component or engine;
//! - encryption also keeps the compiled form of an encrypted workload unreadable on disk.
//!
//! An entry that fails authentication, or that wasmtime refuses, is logged and replaced by a
//! fresh compilation: the cache can make a start faster, never different. What the certificate
//! attests is always the hash of the component bytes as supplied, never of a cache entry.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use enclave_aead::{AeadError, SealKey};
use wasmtime::Engine;
use wasmtime::component::Component;
use zeroize::Zeroizing;

const AAD_LABEL: &[u8] = b"enclave-os/wasm-code-cache/v1";

/// Where a component's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now (no cache, no entry, or an entry that was refused).
    Fresh,
    /// Read from an authenticated cache entry.
    Cached,
}

/// An authenticated, encrypted cache of compiled components.
pub struct CodeCache {
    dir: PathBuf,
    key: SealKey,
}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl CodeCache {
    /// A cache in `dir` (created if missing) under `key`, which must be used for nothing else.
    pub fn new(dir: &Path, key: Zeroizing<[u8; 32]>) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("code cache directory {}: {e}", dir.display()))?;
        let key = SealKey::from_bytes(key.as_ref()).map_err(|e| format!("code cache key: {e}"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    fn path(&self, code_sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex::encode(code_sha256)))
    }

    fn aad(engine: &Engine, code_sha256: &[u8; 32]) -> Vec<u8> {
        // Non-cryptographic, and need not be: it only tells engines apart, while the AEAD key
        // provides the integrity.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let mut aad = AAD_LABEL.to_vec();
        aad.extend_from_slice(code_sha256);
        aad.extend_from_slice(&h.finish().to_be_bytes());
        aad
    }

    /// The component for `code`: from an authenticated entry when there is one, else compiled
    /// and stored.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        code: &[u8],
        code_sha256: &[u8; 32],
    ) -> wasmtime::Result<(Component, Compiled)> {
        let path = self.path(code_sha256);
        let aad = Self::aad(engine, code_sha256);
        match std::fs::read(&path) {
            Ok(entry) => match self.open(entry, &aad) {
                Ok(plain) => match deserialize(engine, &plain) {
                    Ok(c) => return Ok((c, Compiled::Cached)),
                    Err(e) => tracing::warn!(
                        entry = %path.display(),
                        reason = %e,
                        "code cache entry refused by wasmtime; recompiling"
                    ),
                },
                Err(reason) => tracing::warn!(
                    entry = %path.display(),
                    reason,
                    "code cache entry failed authentication; recompiling"
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(entry = %path.display(), reason = %e, "code cache entry unreadable; recompiling")
            }
        }
        let component = Component::new(engine, code)?;
        match component.serialize() {
            Ok(bytes) => {
                if let Err(reason) = self.store(&path, bytes, &aad) {
                    tracing::warn!(entry = %path.display(), reason, "code cache entry not written");
                }
            }
            Err(e) => tracing::warn!(reason = %e, "compiled code cannot be serialized; not cached"),
        }
        Ok((component, Compiled::Fresh))
    }

    /// The plaintext of `entry` (`nonce || sealed || tag`), decrypted where it lies: entries
    /// are megabytes, so no copy is made.
    fn open(&self, entry: Vec<u8>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, &'static str> {
        self.key.open_owned(aad, entry, 0).map_err(|e| match e {
            AeadError::Truncated { .. } => "shorter than a nonce and a tag",
            _ => "altered, or written by another runtime or for another component",
        })
    }

    fn store(&self, path: &Path, plain: Vec<u8>, aad: &[u8]) -> Result<(), String> {
        let mut entry = Vec::with_capacity(plain.len() + enclave_aead::OVERHEAD);
        self.key
            .seal_append(&mut entry, aad, &plain)
            .map_err(|e| format!("sealing failed: {e}"))?;
        // Written aside and renamed, so a crash leaves the old entry or the new one, never half.
        // A torn entry would fail authentication anyway and only cost a recompilation.
        let tmp = path.with_extension("cwasm.tmp");
        let write = |tmp: &Path| -> std::io::Result<()> {
            let mut file = std::fs::File::create(tmp)?;
            file.write_all(&entry)
        };
        write(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Deserialize compiled code that has just authenticated under the cache key.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that the bytes be what `Component::serialize` produced, since
    // they are loaded as native code. These bytes passed AES-256-GCM authentication under a key
    // derived from the sealed master key for this cache alone, with the code hash and the
    // engine fingerprint in the AAD. Only this runtime, inside the TEE, holds that key, and it
    // only ever seals the output of `Component::serialize` (`CodeCache::component`). wasmtime
    // additionally checks the header's version and compilation settings, and refuses a
    // mismatch with an error rather than loading it.
    unsafe { Component::deserialize(engine, bytes) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const AAD: &[u8] = b"enclave-os/wasm-code-cache/v1 kat aad";

    /// Entries written before the cache sealed through `enclave-aead`, key 0x03 x 32, for
    /// `compiled code` under `AAD`: one with that code's own random nonce (it must open), one
    /// with the nonce fixed to 00..0b by a test patch (the same nonce, through the test-only
    /// path, must give the same bytes now).
    const ENTRY_RANDOM: &str =
        "010cad1391482bc94733ba798e1307fdead6ed682c8ee804be468ddff626046332d328620b3046c9aa";
    const ENTRY_FIXED: &str =
        "000102030405060708090a0b24de1b3ca68c386a11a609c2823dbf856dadf6216b74b4baf7038451ff";

    #[test]
    fn entries_are_byte_for_byte_the_previous_format() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(dir.path(), Zeroizing::new([3u8; 32])).unwrap();
        let opened = cache.open(hex::decode(ENTRY_RANDOM).unwrap(), AAD).unwrap();
        assert_eq!(opened.as_slice(), b"compiled code");
        let path = dir.path().join("kat.cwasm");
        enclave_aead::test_nonce::with_fixed_nonce([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], || {
            cache.store(&path, b"compiled code".to_vec(), AAD).unwrap()
        });
        assert_eq!(hex::encode(std::fs::read(&path).unwrap()), ENTRY_FIXED);
        // Another AAD (component or engine) or a cut entry: refused with the reason.
        assert!(
            cache
                .open(hex::decode(ENTRY_RANDOM).unwrap(), b"other")
                .is_err()
        );
        assert_eq!(
            cache.open(vec![0; 27], AAD).unwrap_err(),
            "shorter than a nonce and a tag"
        );
    }
}
