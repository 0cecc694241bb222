//! Keys the vault generates inside the TEE.
//!
//! Only public halves leave the TEE on their own (`public_jwk`, `public_pem`); `private_jwk`
//! exists for release to an attested caller, and `to_sealed_bytes` for the runtime to encrypt
//! into the sealed store. Private material is zeroized on drop (the RustCrypto key types zeroize
//! themselves; the AES key and every encoding sit in `Zeroizing`), and `Debug` prints the kind
//! and `kid` only.
//!
//! Sealed encoding, version 1 (`b"EVK"`, a version byte, a kind byte, then the key):
//! EC: the private scalar, big-endian, fixed length (32 or 48 bytes); RSA: PKCS#1 DER
//! `RSAPrivateKey`; AES-256: the 32 key bytes. The encoding is not encrypted: the store does that.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kbs_types::TeePubKey;
use ring::rand::{SecureRandom, SystemRandom};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::jose::{Curve, PublicJwk, RecipientKey};

const MAGIC: &[u8; 3] = b"EVK";
const VERSION: u8 = 1;

/// The kinds of key the vault generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// EC P-256 (ECDH-ES+A256KW, ES256).
    EcP256,
    /// EC P-384.
    EcP384,
    /// RSA, 2048-bit modulus.
    Rsa2048,
    /// RSA, 3072-bit modulus.
    Rsa3072,
    /// RSA, 4096-bit modulus.
    Rsa4096,
    /// AES-256 (a symmetric key: no public half).
    Aes256,
}

impl KeyKind {
    fn code(self) -> u8 {
        match self {
            KeyKind::EcP256 => 1,
            KeyKind::EcP384 => 2,
            KeyKind::Rsa2048 => 3,
            KeyKind::Rsa3072 => 4,
            KeyKind::Rsa4096 => 5,
            KeyKind::Aes256 => 6,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => KeyKind::EcP256,
            2 => KeyKind::EcP384,
            3 => KeyKind::Rsa2048,
            4 => KeyKind::Rsa3072,
            5 => KeyKind::Rsa4096,
            6 => KeyKind::Aes256,
            _ => return None,
        })
    }

    /// The name used in config and the API (`ec-p256`, `rsa-3072`, `aes-256`...).
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "ec-p256",
            KeyKind::EcP384 => "ec-p384",
            KeyKind::Rsa2048 => "rsa-2048",
            KeyKind::Rsa3072 => "rsa-3072",
            KeyKind::Rsa4096 => "rsa-4096",
            KeyKind::Aes256 => "aes-256",
        }
    }

    /// Parses [`KeyKind::name`].
    pub fn from_name(name: &str) -> Result<Self, KeyError> {
        [
            KeyKind::EcP256,
            KeyKind::EcP384,
            KeyKind::Rsa2048,
            KeyKind::Rsa3072,
            KeyKind::Rsa4096,
            KeyKind::Aes256,
        ]
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| KeyError::UnknownKind(name.to_owned()))
    }

    fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyKind::Rsa2048 => Some(2048),
            KeyKind::Rsa3072 => Some(3072),
            KeyKind::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

/// Why a key could not be made or read back.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An unknown key kind name.
    #[error(
        "unknown key kind `{0}`: use ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096 or aes-256"
    )]
    UnknownKind(String),
    /// The sealed bytes are not a vault key this version reads.
    #[error("sealed vault key refused: {0}")]
    Sealed(String),
    /// Key generation or encoding failed.
    #[error("key {0}")]
    Crypto(String),
}

enum Material {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Rsa(Box<rsa::RsaPrivateKey>),
    Aes(Zeroizing<[u8; 32]>),
}

/// A key generated in the TEE.
pub struct VaultKey {
    kind: KeyKind,
    material: Material,
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKey")
            .field("kind", &self.kind)
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Private EC scalars are drawn from ring's system RNG and rejection-sampled (a value outside
/// `[1, n)` is simply drawn again), so key generation does not depend on another RNG.
fn random_scalar<T>(len: usize, parse: impl Fn(&[u8]) -> Option<T>) -> Result<T, KeyError> {
    let rng = SystemRandom::new();
    let mut buf = Zeroizing::new(vec![0u8; len]);
    for _ in 0..64 {
        rng.fill(&mut buf)
            .map_err(|_| KeyError::Crypto("generation: the system random source failed".into()))?;
        if let Some(key) = parse(&buf) {
            return Ok(key);
        }
    }
    Err(KeyError::Crypto(
        "generation: no valid scalar in 64 draws".into(),
    ))
}

impl VaultKey {
    /// Generates a key of `kind` inside the TEE.
    pub fn generate(kind: KeyKind) -> Result<Self, KeyError> {
        let material = match kind {
            KeyKind::EcP256 => {
                Material::P256(random_scalar(32, |b| p256::SecretKey::from_slice(b).ok())?)
            }
            KeyKind::EcP384 => {
                Material::P384(random_scalar(48, |b| p384::SecretKey::from_slice(b).ok())?)
            }
            KeyKind::Aes256 => {
                let mut k = Zeroizing::new([0u8; 32]);
                SystemRandom::new().fill(k.as_mut()).map_err(|_| {
                    KeyError::Crypto("generation: the system random source failed".into())
                })?;
                Material::Aes(k)
            }
            KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => {
                let bits = kind.rsa_bits().unwrap_or(2048);
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                    .map_err(|e| KeyError::Crypto(format!("generation (RSA-{bits}): {e}")))?;
                Material::Rsa(Box::new(key))
            }
        };
        Ok(Self { kind, material })
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The versioned encoding the runtime seals (see the module doc).
    pub fn to_sealed_bytes(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let mut out = Zeroizing::new(Vec::with_capacity(64));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.kind.code());
        match &self.material {
            Material::P256(k) => out.extend_from_slice(&k.to_bytes()),
            Material::P384(k) => out.extend_from_slice(&k.to_bytes()),
            Material::Aes(k) => out.extend_from_slice(k.as_ref()),
            Material::Rsa(k) => {
                let der = k
                    .to_pkcs1_der()
                    .map_err(|e| KeyError::Crypto(format!("PKCS#1 encoding: {e}")))?;
                out.extend_from_slice(der.as_bytes());
            }
        }
        Ok(out)
    }

    /// Reads [`VaultKey::to_sealed_bytes`] back.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let Some((header, body)) = bytes.split_at_checked(5) else {
            return Err(KeyError::Sealed(format!(
                "{} bytes is too short",
                bytes.len()
            )));
        };
        if &header[..3] != MAGIC {
            return Err(KeyError::Sealed("not a vault key (no EVK magic)".into()));
        }
        if header[3] != VERSION {
            return Err(KeyError::Sealed(format!(
                "encoding version {} (this build reads version {VERSION})",
                header[3]
            )));
        }
        let kind = KeyKind::from_code(header[4])
            .ok_or_else(|| KeyError::Sealed(format!("unknown key kind code {}", header[4])))?;
        let bad = |what: &str| KeyError::Sealed(format!("{}: {what}", kind.name()));
        let material = match kind {
            KeyKind::EcP256 if body.len() == 32 => Material::P256(
                p256::SecretKey::from_slice(body).map_err(|_| bad("invalid scalar"))?,
            ),
            KeyKind::EcP384 if body.len() == 48 => Material::P384(
                p384::SecretKey::from_slice(body).map_err(|_| bad("invalid scalar"))?,
            ),
            KeyKind::Aes256 if body.len() == 32 => {
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(body);
                Material::Aes(k)
            }
            KeyKind::Rsa2048 | KeyKind::Rsa3072 | KeyKind::Rsa4096 => {
                let mut key = rsa::RsaPrivateKey::from_pkcs1_der(body)
                    .map_err(|e| bad(&format!("PKCS#1: {e}")))?;
                let bits = key.n().bits();
                if Some(bits) != kind.rsa_bits() {
                    return Err(bad(&format!("the modulus has {bits} bits")));
                }
                key.validate().map_err(|e| bad(&e.to_string()))?;
                key.precompute().map_err(|e| bad(&e.to_string()))?;
                Material::Rsa(Box::new(key))
            }
            _ => return Err(bad(&format!("{} key bytes", body.len()))),
        };
        Ok(Self { kind, material })
    }

    /// The public JWK (`None` for AES).
    pub fn public_jwk(&self) -> Option<PublicJwk> {
        match &self.material {
            Material::P256(k) => {
                let p = p256::EncodedPoint::from(k.public_key());
                Some(PublicJwk::Ec {
                    crv: Curve::P256,
                    x: b64(p.x()?),
                    y: b64(p.y()?),
                })
            }
            Material::P384(k) => {
                let p = p384::EncodedPoint::from(k.public_key());
                Some(PublicJwk::Ec {
                    crv: Curve::P384,
                    x: b64(p.x()?),
                    y: b64(p.y()?),
                })
            }
            Material::Rsa(k) => Some(PublicJwk::Rsa {
                n: b64(&k.n().to_bytes_be()),
                e: b64(&k.e().to_bytes_be()),
            }),
            Material::Aes(_) => None,
        }
    }

    /// The public key as a PEM `PUBLIC KEY` (SPKI), e.g. for `skopeo --encryption-key jwe:`.
    /// `None` for AES.
    pub fn public_pem(&self) -> Option<String> {
        let pem = match &self.material {
            Material::P256(k) => k.public_key().to_public_key_pem(LineEnding::LF),
            Material::P384(k) => k.public_key().to_public_key_pem(LineEnding::LF),
            Material::Rsa(k) => k.to_public_key().to_public_key_pem(LineEnding::LF),
            Material::Aes(_) => return None,
        };
        pem.ok()
    }

    /// The key id: the RFC 7638 thumbprint of the public JWK (of the `oct` JWK for AES, whose
    /// required members are `k` and `kty`), base64url.
    pub fn kid(&self) -> String {
        match (&self.material, self.public_jwk()) {
            (Material::Aes(k), _) => {
                let canonical =
                    Zeroizing::new(format!(r#"{{"k":"{}","kty":"oct"}}"#, b64(k.as_ref())));
                b64(&crate::jose::sha256(canonical.as_bytes()))
            }
            (_, Some(jwk)) => jwk.thumbprint_b64(),
            (_, None) => String::new(),
        }
    }

    /// The `tee-pubkey` form, for a KBS client using this key as its TEE key.
    pub fn tee_pubkey(&self) -> Option<TeePubKey> {
        self.public_jwk().map(|j| j.to_tee_pubkey())
    }

    /// The private JWK, for release to an attested caller: `d` for EC, `d`, `p`, `q`, `dp`,
    /// `dq`, `qi` for RSA, `k` for AES; `kid` and `alg` set.
    pub fn private_jwk(&self) -> Result<Zeroizing<String>, KeyError> {
        let mut m = Map::new();
        let s = |v: String| Value::String(v);
        match &self.material {
            Material::P256(k) => {
                ec_members(&mut m, self.public_jwk());
                m.insert("d".into(), s(b64(&k.to_bytes())));
                m.insert("alg".into(), s(crate::jose::ALG_ECDH_ES_A256KW.into()));
            }
            Material::P384(k) => {
                ec_members(&mut m, self.public_jwk());
                m.insert("d".into(), s(b64(&k.to_bytes())));
                m.insert("alg".into(), s(crate::jose::ALG_ECDH_ES_A256KW.into()));
            }
            Material::Rsa(k) => {
                let primes = k.primes();
                let (Some(p), Some(q), Some(dp), Some(dq), Some(qi)) = (
                    primes.first(),
                    primes.get(1),
                    k.dp(),
                    k.dq(),
                    k.crt_coefficient(),
                ) else {
                    return Err(KeyError::Crypto("RSA key without CRT parameters".into()));
                };
                m.insert("kty".into(), s("RSA".into()));
                m.insert("n".into(), s(b64(&k.n().to_bytes_be())));
                m.insert("e".into(), s(b64(&k.e().to_bytes_be())));
                m.insert("d".into(), s(b64(&k.d().to_bytes_be())));
                m.insert("p".into(), s(b64(&p.to_bytes_be())));
                m.insert("q".into(), s(b64(&q.to_bytes_be())));
                m.insert("dp".into(), s(b64(&dp.to_bytes_be())));
                m.insert("dq".into(), s(b64(&dq.to_bytes_be())));
                m.insert("qi".into(), s(b64(&qi.to_bytes_be())));
                m.insert("alg".into(), s(crate::jose::ALG_RSA_OAEP_256.into()));
            }
            Material::Aes(k) => {
                m.insert("kty".into(), s("oct".into()));
                m.insert("k".into(), s(b64(k.as_ref())));
                m.insert("alg".into(), s("A256KW".into()));
            }
        }
        m.insert("kid".into(), s(self.kid()));
        let out = serde_json::to_string(&Value::Object(m))
            .map_err(|e| KeyError::Crypto(format!("JWK encoding: {e}")));
        // The map's strings held the private members; serde_json drops them unzeroized, which
        // is why only the returned string is the long-lived copy.
        out.map(Zeroizing::new)
    }

    /// The view `jose::decrypt` takes (`None` for AES).
    pub fn recipient(&self) -> Option<RecipientKey<'_>> {
        match &self.material {
            Material::P256(k) => Some(RecipientKey::EcP256(k)),
            Material::P384(k) => Some(RecipientKey::EcP384(k)),
            Material::Rsa(k) => Some(RecipientKey::Rsa(k)),
            Material::Aes(_) => None,
        }
    }
}

fn ec_members(m: &mut Map<String, Value>, public: Option<PublicJwk>) {
    if let Some(PublicJwk::Ec { crv, x, y }) = public {
        m.insert("kty".into(), Value::String("EC".into()));
        m.insert("crv".into(), Value::String(crv.name().into()));
        m.insert("x".into(), Value::String(x));
        m.insert("y".into(), Value::String(y));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ALL: [KeyKind; 6] = [
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::Rsa2048,
        KeyKind::Rsa3072,
        KeyKind::Rsa4096,
        KeyKind::Aes256,
    ];

    #[test]
    fn sealed_round_trip_keeps_the_key() {
        for kind in ALL {
            let key = VaultKey::generate(kind).unwrap();
            let sealed = key.to_sealed_bytes().unwrap();
            let back = VaultKey::from_sealed_bytes(&sealed).unwrap();
            assert_eq!(back.kind(), kind);
            assert_eq!(back.kid(), key.kid(), "{kind:?}");
            assert_eq!(*back.private_jwk().unwrap(), *key.private_jwk().unwrap());
            assert_eq!(KeyKind::from_name(kind.name()).unwrap(), kind);
        }
    }

    #[test]
    fn sealed_bytes_refused_with_a_reason() {
        let key = VaultKey::generate(KeyKind::EcP256).unwrap();
        let sealed = key.to_sealed_bytes().unwrap();
        let mut v2 = sealed.to_vec();
        v2[3] = 2;
        assert!(
            VaultKey::from_sealed_bytes(&v2)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        assert!(VaultKey::from_sealed_bytes(&sealed[..20]).is_err());
        assert!(VaultKey::from_sealed_bytes(b"EV").is_err());
        let mut wrong_kind = sealed.to_vec();
        wrong_kind[4] = 2; // claims P-384 with 32 bytes
        assert!(VaultKey::from_sealed_bytes(&wrong_kind).is_err());
    }

    #[test]
    fn public_halves_and_debug() {
        for kind in ALL {
            let key = VaultKey::generate(kind).unwrap();
            let jwk = key.private_jwk().unwrap();
            let debug = format!("{key:?}");
            let parsed: Value = serde_json::from_str(&jwk).unwrap();
            let secret = parsed
                .get("d")
                .or_else(|| parsed.get("k"))
                .and_then(Value::as_str)
                .unwrap();
            assert!(!debug.contains(secret), "Debug leaks the private key");
            if kind == KeyKind::Aes256 {
                assert!(key.public_jwk().is_none() && key.public_pem().is_none());
                assert!(key.recipient().is_none());
            } else {
                let pem = key.public_pem().unwrap();
                assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
                assert_eq!(parsed["kid"], key.public_jwk().unwrap().thumbprint_b64());
            }
        }
    }

    #[test]
    fn jwe_round_trip_to_each_key_kind() {
        for kind in [
            KeyKind::EcP256,
            KeyKind::EcP384,
            KeyKind::Rsa2048,
            KeyKind::Rsa3072,
        ] {
            let key = VaultKey::generate(kind).unwrap();
            let jwe = crate::jose::encrypt(&key.tee_pubkey().unwrap(), b"a secret").unwrap();
            let out = crate::jose::decrypt(&key.recipient().unwrap(), &jwe).unwrap();
            assert_eq!(&out[..], b"a secret", "{kind:?}");
        }
    }
}
