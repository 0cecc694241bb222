//! Sealing: data encrypted so that only the same TEE identity can read it back.
//!
//! A sealed blob is versioned and self-describing. Its header (policy, key identifier, and the
//! identity the key is bound to) is authenticated as AAD together with the caller's context label,
//! so a blob cannot be moved to another purpose, policy or identity without detection:
//!
//! ```text
//! "EOSSEAL" | version (1) | policy (1 measurement, 2 signer) | key id (16) |
//!   identity length (1) | identity | nonce (12) | AES-256-GCM ciphertext and tag
//! ```
//!
//! The construction is `enclave-aead`'s, in its framed layout (the header above carries the
//! version): the AEAD key is derived from the TEE's sealing key in domain `enclave-os/seal/v1`
//! under the purpose `enclave-os/seal/v1/aead` and the context, the key id under
//! `enclave-os/seal/v1/key-id`; nonces are 96 random bits drawn by `enclave-aead`, never the
//! caller's. Version 1 blobs are byte for byte what this module wrote before it used
//! `enclave-aead` (tested against blobs written then: `crates/tee/tests/sim.rs`).

use enclave_aead::{AeadError, NONCE_LEN, SealKey, TAG_LEN};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::TeeKind;

const MAGIC: &[u8; 7] = b"EOSSEAL";
const VERSION: u8 = 1;
/// The HKDF domain of every key derived from a sealing key.
const DOMAIN: &str = "enclave-os/seal/v1";

/// What a sealing key is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealPolicy {
    /// This exact build (SGX MRENCLAVE, or the SNP launch measurement with the guest policy): a
    /// new binary cannot unseal.
    Measurement,
    /// The signer (SGX MRSIGNER): stable across updates signed by the same key. Refused on
    /// SEV-SNP, whose derived key cannot bind the author or ID key (see
    /// [`crate::hw::sev_guest::SIGNER_REFUSED`]); TDX has no sealing key under either policy.
    Signer,
}

impl SealPolicy {
    /// The label used in key derivation.
    pub fn label(self) -> &'static str {
        match self {
            SealPolicy::Measurement => "measurement",
            SealPolicy::Signer => "signer",
        }
    }

    fn byte(self) -> u8 {
        match self {
            SealPolicy::Measurement => 1,
            SealPolicy::Signer => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(SealPolicy::Measurement),
            2 => Some(SealPolicy::Signer),
            _ => None,
        }
    }

    /// Parse `measurement` or `signer`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "measurement" => Ok(SealPolicy::Measurement),
            "signer" => Ok(SealPolicy::Signer),
            other => Err(format!(
                "unknown sealing policy '{other}' (measurement or signer)"
            )),
        }
    }
}

/// A TEE sealing key: secret bytes, zeroized on drop, never printed.
pub struct SealingKey {
    tee: TeeKind,
    policy: SealPolicy,
    identity: Vec<u8>,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("tee", &self.tee)
            .field("policy", &self.policy)
            .field("identity", &hex::encode(&self.identity))
            .finish_non_exhaustive()
    }
}

/// Why a blob could not be sealed or unsealed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    /// The bytes are not a sealed blob of a version this build reads.
    #[error("not a sealed blob: {0}")]
    Format(String),
    /// The blob was sealed under another policy.
    #[error("sealed under the '{sealed}' policy, but a '{requested}' key was used")]
    Policy {
        /// The blob's policy.
        sealed: &'static str,
        /// The key's policy.
        requested: &'static str,
    },
    /// The blob is bound to another identity: another build (measurement) or signer.
    #[error(
        "sealed to {policy} {sealed}, but this TEE's {policy} is {ours}: a different build cannot \
         unseal measurement-bound data (see the migration path in docs/sealing.md)"
    )]
    Identity {
        /// The policy.
        policy: &'static str,
        /// The identity in the blob, hex.
        sealed: String,
        /// This TEE's identity, hex.
        ours: String,
    },
    /// The blob was sealed with another key (another platform, or another simulation directory).
    #[error(
        "sealed with another key (key id {sealed}, this TEE's is {ours}): another platform or simulation directory"
    )]
    Key {
        /// The blob's key id.
        sealed: String,
        /// This key's id.
        ours: String,
    },
    /// Authentication failed: the blob or its context label was altered.
    #[error(
        "authentication failed: the blob was altered or is being opened for another purpose than '{0}'"
    )]
    Tampered(String),
    /// The system random generator or key derivation failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

fn crypto(e: AeadError) -> SealError {
    match e {
        AeadError::Crypto(what) => SealError::Crypto(what),
        _ => SealError::Crypto("key derivation"),
    }
}

impl SealingKey {
    /// Wrap key material from a TEE.
    pub fn new(
        tee: TeeKind,
        policy: SealPolicy,
        identity: Vec<u8>,
        key: Zeroizing<[u8; 32]>,
    ) -> Self {
        Self {
            tee,
            policy,
            identity,
            key,
        }
    }

    /// The policy this key follows.
    pub fn policy(&self) -> SealPolicy {
        self.policy
    }

    /// The identity (measurement or signer) this key is bound to.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    fn key_id(&self) -> Result<[u8; 16], SealError> {
        let d =
            enclave_aead::derive_key(DOMAIN, self.key.as_ref(), "enclave-os/seal/v1/key-id", b"")
                .map_err(crypto)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        Ok(id)
    }

    fn aead(&self, context: &str) -> Result<SealKey, SealError> {
        SealKey::derive(
            DOMAIN,
            self.key.as_ref(),
            "enclave-os/seal/v1/aead",
            context.as_bytes(),
        )
        .map_err(crypto)
    }

    /// Seal `plaintext` for `context`, a label naming what the data is for (for example
    /// `store/master-key`); the same label is needed to unseal.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let identity_len = u8::try_from(self.identity.len())
            .map_err(|_| SealError::Crypto("identity too long"))?;
        let mut out = Vec::with_capacity(64 + self.identity.len() + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.policy.byte());
        out.extend_from_slice(&self.key_id()?);
        out.push(identity_len);
        out.extend_from_slice(&self.identity);
        let aad = aad(&out, context);
        self.aead(context)?
            .seal_append(&mut out, &aad, plaintext)
            .map_err(crypto)?;
        Ok(out)
    }

    /// Unseal a blob sealed for `context`. Every failure says why.
    pub fn unseal(&self, context: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let fmt = |r: &str| SealError::Format(r.to_string());
        if blob.len() < MAGIC.len() + 3 + 16 || &blob[..MAGIC.len()] != MAGIC {
            return Err(fmt("it does not start with the EOSSEAL header"));
        }
        let mut pos = MAGIC.len();
        if blob[pos] != VERSION {
            return Err(SealError::Format(format!(
                "version {} (this build reads version {VERSION})",
                blob[pos]
            )));
        }
        pos += 1;
        let policy = SealPolicy::from_byte(blob[pos]).ok_or_else(|| fmt("unknown policy byte"))?;
        pos += 1;
        let key_id = &blob[pos..pos + 16];
        pos += 16;
        let id_len = usize::from(blob[pos]);
        pos += 1;
        let identity = blob
            .get(pos..pos + id_len)
            .ok_or_else(|| fmt("truncated identity"))?;
        pos += id_len;
        let header_len = pos;
        if blob.len() - pos < NONCE_LEN {
            return Err(fmt("truncated nonce"));
        }
        if blob.len() - pos - NONCE_LEN < TAG_LEN {
            return Err(fmt("truncated ciphertext"));
        }
        if policy != self.policy {
            return Err(SealError::Policy {
                sealed: policy.label(),
                requested: self.policy.label(),
            });
        }
        if identity != self.identity.as_slice() {
            return Err(SealError::Identity {
                policy: policy.label(),
                sealed: hex::encode(identity),
                ours: hex::encode(&self.identity),
            });
        }
        let ours = self.key_id()?;
        if key_id != ours {
            return Err(SealError::Key {
                sealed: hex::encode(key_id),
                ours: hex::encode(ours),
            });
        }
        let aad = aad(&blob[..header_len], context);
        self.aead(context)?
            .open_framed(&aad, &blob[header_len..])
            .map_err(|e| match e {
                AeadError::Crypto(what) => SealError::Crypto(what),
                _ => SealError::Tampered(context.to_string()),
            })
    }
}

/// AAD: the blob header, then the length-prefixed context label.
fn aad(header: &[u8], context: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&(context.len() as u64).to_be_bytes());
    aad.extend_from_slice(context.as_bytes());
    aad
}
