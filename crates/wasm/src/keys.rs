//! The SDK's keys: what a key record holds, and the operations on it.
//!
//! A record is one algorithm byte and the key material (PKCS#8 DER for signing keys, 32 raw
//! bytes for AES-256-GCM). It lives sealed in the app's key namespace, which the app's
//! key-value calls cannot reach, and is never returned to the app: the material is not
//! exportable. Nonces and ECDSA randomness come from the system generator here.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
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

    fn aead(&self) -> Result<LessSafeKey, KeyError> {
        UnboundKey::new(&AES_256_GCM, &self.material)
            .map(LessSafeKey::new)
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
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(rng_err)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(full_aad(context, aad)),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| KeyError::Invalid("AES-GCM sealing failed".into()))?;
        out.extend_from_slice(tag.as_ref());
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
        if ciphertext.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(KeyError::Invalid(format!(
                "a ciphertext is at least {} bytes (nonce and tag); this one is {}",
                NONCE_LEN + AES_256_GCM.tag_len(),
                ciphertext.len()
            )));
        }
        let key = self.aead()?;
        let (nonce, sealed) = ciphertext.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| KeyError::Invalid("bad nonce".into()))?;
        let mut body = Zeroizing::new(sealed.to_vec());
        let plain_len = key
            .open_in_place(nonce, Aad::from(full_aad(context, aad)), &mut body)
            .map_err(|_| {
                KeyError::Invalid(
                    "decryption failed: the ciphertext or aad was altered, or was made by another key or app"
                        .into(),
                )
            })?
            .len();
        body.truncate(plain_len);
        Ok(body)
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
