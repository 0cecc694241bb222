//! The SDK's keys: what a key record holds, and the operations on it.
//!
//! A record is one algorithm byte and the key material (PKCS#8 DER for signing keys, 32 raw
//! bytes for AES-256-GCM). It lives sealed in the app's key namespace, which the app's
//! key-value calls cannot reach, and is never returned to the app: the material is not
//! exportable. Nonces and ECDSA randomness come from the system generator here.
//!
//! An AES-256-GCM key encrypts with `enclave-aead`'s construction in its framed layout, with the
//! app's key as the key: `nonce (12) | ciphertext | tag (16)`, the nonce drawn by `enclave-aead`,
//! byte for byte the ciphertexts apps were given before (known-answer test below).

use enclave_aead::{NONCE_LEN, SealKey, TAG_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

/// What a key is for (the WIT `algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256, ASN.1 DER signatures.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl Algorithm {
    fn tag(self) -> u8 {
        match self {
            Self::EcdsaP256 => 1,
            Self::Ed25519 => 2,
            Self::Aes256Gcm => 3,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::EcdsaP256),
            2 => Some(Self::Ed25519),
            3 => Some(Self::Aes256Gcm),
            _ => None,
        }
    }

    /// The WIT name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::Ed25519 => "ed25519",
            Self::Aes256Gcm => "aes256-gcm",
        }
    }
}

/// Why a key operation failed (the WIT `error`, less the store's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The material, a ciphertext or a stored record is malformed, or decryption failed.
    #[error("{0}")]
    Invalid(String),
    /// The key cannot do that.
    #[error("{0}")]
    WrongAlgorithm(String),
}

// SubjectPublicKeyInfo DER headers for the two public key types (RFC 5480, RFC 8410), so the
// app receives a key any X.509 tool reads.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A key as kept sealed: its algorithm and material.
pub(crate) struct KeyRecord {
    algorithm: Algorithm,
    material: Zeroizing<Vec<u8>>,
}

fn rng_err(_: ring::error::Unspecified) -> KeyError {
    KeyError::Invalid("the system random generator failed".into())
}

impl KeyRecord {
    /// A fresh key.
    pub(crate) fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let material = match algorithm {
            Algorithm::EcdsaP256 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                    .map_err(rng_err)?
                    .as_ref()
                    .to_vec(),
            ),
            Algorithm::Ed25519 => Zeroizing::new(
                Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(rng_err)?
                    .as_ref()
                    .to_vec(),
            ),
            Algorithm::Aes256Gcm => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                rng.fill(&mut k).map_err(rng_err)?;
                k
            }
        };
        Ok(Self {
            algorithm,
            material,
        })
    }

    /// A key from material the app supplies, checked before it is kept.
    pub(crate) fn import(algorithm: Algorithm, material: &[u8]) -> Result<Self, KeyError> {
        let record = Self {
            algorithm,
            material: Zeroizing::new(material.to_vec()),
        };
        match algorithm {
            Algorithm::EcdsaP256 => {
                record.ecdsa()?;
            }
            Algorithm::Ed25519 => {
                record.ed25519()?;
            }
            Algorithm::Aes256Gcm => {
                record.aead()?;
            }
        }
        Ok(record)
    }

    /// The stored form.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + self.material.len()));
        out.push(self.algorithm.tag());
        out.extend_from_slice(&self.material);
        out
    }

    /// Read a stored record back.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let (tag, material) = bytes
            .split_first()
            .ok_or_else(|| KeyError::Invalid("the stored key record is empty".into()))?;
        let algorithm = Algorithm::from_tag(*tag).ok_or_else(|| {
            KeyError::Invalid(format!("the stored key record has unknown algorithm {tag}"))
        })?;
        Ok(Self {
            algorithm,
            material: Zeroizing::new(material.to_vec()),
        })
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn ecdsa(&self) -> Result<EcdsaKeyPair, KeyError> {
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.material,
            &SystemRandom::new(),
        )
        .map_err(|e| KeyError::Invalid(format!("not a PKCS#8 P-256 private key: {e}")))
    }

    fn ed25519(&self) -> Result<Ed25519KeyPair, KeyError> {
        // `maybe_unchecked` accepts PKCS#8 v1 (no public key inside), which OpenSSL writes.
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.material)
            .map_err(|e| KeyError::Invalid(format!("not a PKCS#8 Ed25519 private key: {e}")))
    }

    fn aead(&self) -> Result<SealKey, KeyError> {
        SealKey::from_bytes(&self.material)
            .map_err(|_| KeyError::Invalid("an AES-256-GCM key is exactly 32 bytes".into()))
    }

    fn wrong(&self, what: &str) -> KeyError {
        KeyError::WrongAlgorithm(format!("a {} key cannot {what}", self.algorithm.name()))
    }

    /// SubjectPublicKeyInfo DER of a signing key.
    pub(crate) fn public_key(&self) -> Result<Vec<u8>, KeyError> {
        let (prefix, raw) = match self.algorithm {
            Algorithm::EcdsaP256 => (
                P256_SPKI_PREFIX,
                self.ecdsa()?.public_key().as_ref().to_vec(),
            ),
            Algorithm::Ed25519 => (
                ED25519_SPKI_PREFIX,
                self.ed25519()?.public_key().as_ref().to_vec(),
            ),
            Algorithm::Aes256Gcm => return Err(self.wrong("have a public key")),
        };
        Ok([prefix, &raw].concat())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self.algorithm {
            Algorithm::EcdsaP256 => Ok(self
                .ecdsa()?
                .sign(&SystemRandom::new(), message)
                .map_err(|_| KeyError::Invalid("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec()),
            Algorithm::Ed25519 => Ok(self.ed25519()?.sign(message).as_ref().to_vec()),
            Algorithm::Aes256Gcm => Err(self.wrong("sign")),
        }
    }

    pub(crate) fn verify(&self, message: &[u8], sig: &[u8]) -> Result<bool, KeyError> {
        let (alg, public): (&dyn signature::VerificationAlgorithm, Vec<u8>) = match self.algorithm {
            Algorithm::EcdsaP256 => (
                &signature::ECDSA_P256_SHA256_ASN1,
                self.ecdsa()?.public_key().as_ref().to_vec(),
            ),
            Algorithm::Ed25519 => (
                &signature::ED25519,
                self.ed25519()?.public_key().as_ref().to_vec(),
            ),
            Algorithm::Aes256Gcm => return Err(self.wrong("verify signatures")),
        };
        Ok(signature::UnparsedPublicKey::new(alg, public)
            .verify(message, sig)
            .is_ok())
    }

    /// `nonce || ciphertext || tag`, under a fresh random nonce, authenticating `context`
    /// (the app and key names) and the caller's `aad`.
    pub(crate) fn encrypt(
        &self,
        context: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        if self.algorithm != Algorithm::Aes256Gcm {
            return Err(self.wrong("encrypt"));
        }
        let key = self.aead()?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        key.seal_append(&mut out, &full_aad(context, aad), plaintext)
            .map_err(|e| KeyError::Invalid(format!("AES-GCM sealing failed: {e}")))?;
        Ok(out)
    }

    pub(crate) fn decrypt(
        &self,
        context: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        if self.algorithm != Algorithm::Aes256Gcm {
            return Err(self.wrong("decrypt"));
        }
        if ciphertext.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Invalid(format!(
                "a ciphertext is at least {} bytes (nonce and tag); this one is {}",
                NONCE_LEN + TAG_LEN,
                ciphertext.len()
            )));
        }
        self.aead()?
            .open_framed(&full_aad(context, aad), ciphertext)
            .map_err(|_| {
                KeyError::Invalid(
                    "decryption failed: the ciphertext or aad was altered, or was made by another key or app"
                        .into(),
                )
            })
    }
}

/// The AAD: the runtime's context (length-prefixed), then the caller's bytes.
fn full_aad(context: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + context.len() + aad.len());
    out.extend_from_slice(&(context.len() as u64).to_be_bytes());
    out.extend_from_slice(context);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn each_algorithm_round_trips_through_its_record() {
        for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let k = KeyRecord::decode(&KeyRecord::generate(alg).unwrap().encode()).unwrap();
            let sig = k.sign(b"m").unwrap();
            assert!(k.verify(b"m", &sig).unwrap());
            assert!(!k.verify(b"n", &sig).unwrap());
            assert!(k.public_key().unwrap().len() > 32);
            assert!(matches!(
                k.encrypt(b"c", b"p", b""),
                Err(KeyError::WrongAlgorithm(_))
            ));
        }
        let k = KeyRecord::generate(Algorithm::Aes256Gcm).unwrap();
        let a = k.encrypt(b"app/key", b"secret", b"aad").unwrap();
        let b = k.encrypt(b"app/key", b"secret", b"aad").unwrap();
        assert_ne!(
            a[..NONCE_LEN],
            b[..NONCE_LEN],
            "the runtime draws a fresh nonce"
        );
        assert_eq!(&*k.decrypt(b"app/key", &a, b"aad").unwrap(), b"secret");
        let other_context = k.decrypt(b"app2/key", &a, b"aad").unwrap_err();
        assert!(other_context.to_string().contains("another key or app"));
        assert!(k.decrypt(b"app/key", &a, b"other").is_err());
        assert!(
            k.decrypt(b"app/key", &a[..10], b"aad")
                .unwrap_err()
                .to_string()
                .contains("at least")
        );
        assert!(matches!(k.sign(b"m"), Err(KeyError::WrongAlgorithm(_))));
    }

    /// Ciphertexts apps were given before encryption went through `enclave-aead`: key 0x05 x
    /// 32, context `app/key`, aad `caller aad`, plaintext `app secret`; one with that code's
    /// random nonce (it must decrypt), one with the nonce fixed to 00..0b by a test patch (the
    /// same nonce through the test-only path must give the same bytes).
    #[test]
    fn ciphertexts_are_byte_for_byte_the_previous_format() {
        let k = KeyRecord::import(Algorithm::Aes256Gcm, &[5u8; 32]).unwrap();
        let before = hex::decode(
            "006af8beed5fd50de6318d6c8637237db0315da44bb70cc5ac825849302f9178894d8e21073e",
        )
        .unwrap();
        assert_eq!(
            &*k.decrypt(b"app/key", &before, b"caller aad").unwrap(),
            b"app secret"
        );
        let now = enclave_aead::test_nonce::with_fixed_nonce(
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            || k.encrypt(b"app/key", b"app secret", b"caller aad").unwrap(),
        );
        assert_eq!(
            hex::encode(now),
            "000102030405060708090a0bbbdef6893d220fe2e7d7087aac011d275bd5874bf57af17fec4a"
        );
    }

    #[test]
    fn imports_are_checked() {
        assert!(KeyRecord::import(Algorithm::Aes256Gcm, &[0u8; 31]).is_err());
        assert!(KeyRecord::import(Algorithm::Aes256Gcm, &[7u8; 32]).is_ok());
        assert!(KeyRecord::import(Algorithm::EcdsaP256, b"not der").is_err());
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        assert!(KeyRecord::import(Algorithm::Ed25519, pkcs8.as_ref()).is_ok());
        // Right DER, wrong algorithm.
        assert!(KeyRecord::import(Algorithm::EcdsaP256, pkcs8.as_ref()).is_err());
        assert!(KeyRecord::decode(&[9, 1, 2]).is_err());
        assert!(KeyRecord::decode(&[]).is_err());
    }
}
