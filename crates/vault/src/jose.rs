//! JWK and flattened JWE as the Trustee KBS protocol uses them.
//!
//! A resource goes back to an attested caller as a flattened JWE (RFC 7516 §7.2.2, the shape of
//! `kbs_types::Response`), encrypted to the `tee-pubkey` it attested with: `ECDH-ES+A256KW` for
//! an EC P-256/P-384 key, `RSA-OAEP-256` for an RSA key of at least 2048 bits, content `A256GCM`.
//! Nothing else is produced or accepted: `RSA1_5` (which Trustee still speaks) is a padding
//! oracle, and `dir`/`ECDH-ES` without key wrap would let one key agreement encrypt many things.
//!
//! The AAD is `ProtectedHeader::generate_aad()`: guest-components does not keep the header bytes
//! it received, it re-serialises the parsed `ProtectedHeader` (`alg`, `enc`, then the other
//! fields) to rebuild the AAD, so the header must be emitted exactly that way, which is what
//! going through the same type guarantees.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kbs_types::{ProtectedHeader, Response, TeePubKey};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// `alg` for EC recipients: ECDH-ES with the Concat KDF, the CEK wrapped with A256KW.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// `alg` for RSA recipients: RSAES-OAEP with SHA-256 and MGF1-SHA-256.
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
/// `enc`: AES-256-GCM, 96-bit IV, 128-bit tag.
pub const ENC_A256GCM: &str = "A256GCM";

/// The smallest RSA modulus a resource is encrypted to.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted (bounds the work an attester can make us do).
pub const MAX_RSA_BITS: usize = 8192;

/// Why a JWK or a JWE was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JoseError {
    /// The recipient names an algorithm (or curve) this crate does not encrypt to.
    #[error(
        "key algorithm `{alg}` (kty {kty}{crv}) is not accepted: use `ECDH-ES+A256KW` with an EC P-256 or P-384 key, or `RSA-OAEP-256` with an RSA key of 2048 to 8192 bits"
    )]
    UnsupportedAlgorithm {
        /// the `alg` the key or header named
        alg: String,
        /// its `kty`
        kty: String,
        /// `, crv X` when it named one
        crv: String,
    },
    /// The content encryption is not `A256GCM`.
    #[error("content encryption `{0}` is not accepted: only `A256GCM`")]
    UnsupportedEnc(String),
    /// A key field is malformed (bad base64url, wrong length, not on the curve, RSA too small...).
    #[error("invalid key field `{field}`: {reason}")]
    InvalidKey {
        /// the JWK member
        field: &'static str,
        /// why
        reason: String,
    },
    /// The JWE is malformed (a field has the wrong length, the `epk` is missing...).
    #[error("invalid JWE: {0}")]
    InvalidJwe(String),
    /// The private key handed to `decrypt` does not fit the JWE's `alg`/curve.
    #[error("the JWE is `{alg}` ({detail}) but the key given to decrypt it is {key}")]
    KeyMismatch {
        /// the JWE's alg
        alg: String,
        /// its curve or the reason
        detail: String,
        /// the kind of key given
        key: &'static str,
    },
    /// Unwrapping the CEK or checking the GCM tag failed: wrong key, or the JWE was altered.
    #[error(
        "JWE decryption failed: {0} (wrong key, or the header, key, IV, ciphertext or tag was altered)"
    )]
    Decrypt(&'static str),
    /// The system random source or a primitive failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

/// The curves this crate encrypts to and generates keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (secp384r1).
    #[serde(rename = "P-384")]
    P384,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    /// Bytes in one coordinate.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn from_name(crv: &str) -> Option<Self> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            _ => None,
        }
    }

    fn ring_alg(self) -> &'static agreement::Algorithm {
        match self {
            Curve::P256 => &agreement::ECDH_P256,
            Curve::P384 => &agreement::ECDH_P384,
        }
    }
}

/// A public JWK (RFC 7517) of a key this crate handles. Field values are base64url without
/// padding, big-endian, coordinates left-padded to the curve size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
pub enum PublicJwk {
    /// An EC public key.
    #[serde(rename = "EC")]
    Ec {
        /// the curve
        crv: Curve,
        /// x coordinate
        x: String,
        /// y coordinate
        y: String,
    },
    /// An RSA public key.
    #[serde(rename = "RSA")]
    Rsa {
        /// modulus
        n: String,
        /// public exponent
        e: String,
    },
}

impl PublicJwk {
    /// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no
    /// whitespace. All members are base64url or fixed names, so none needs JSON escaping.
    pub fn thumbprint(&self) -> [u8; 32] {
        let canonical = match self {
            PublicJwk::Ec { crv, x, y } => {
                format!(
                    r#"{{"crv":"{}","kty":"EC","x":"{x}","y":"{y}"}}"#,
                    crv.name()
                )
            }
            PublicJwk::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
        };
        sha256(canonical.as_bytes())
    }

    /// The thumbprint base64url-encoded: the `kid` this crate gives keys.
    pub fn thumbprint_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.thumbprint())
    }

    /// The `tee-pubkey` form of this key, naming the algorithm a resource is encrypted with.
    pub fn to_tee_pubkey(&self) -> TeePubKey {
        match self {
            PublicJwk::Ec { crv, x, y } => TeePubKey::EC {
                crv: crv.name().to_owned(),
                alg: ALG_ECDH_ES_A256KW.to_owned(),
                x: x.clone(),
                y: y.clone(),
            },
            PublicJwk::Rsa { n, e } => TeePubKey::RSA {
                alg: ALG_RSA_OAEP_256.to_owned(),
                k_mod: n.clone(),
                k_exp: e.clone(),
            },
        }
    }
}

/// The private half a JWE is decrypted with (the KBS client's TEE key, or a vault key).
pub enum RecipientKey<'a> {
    /// A P-256 key.
    EcP256(&'a p256::SecretKey),
    /// A P-384 key.
    EcP384(&'a p384::SecretKey),
    /// An RSA key.
    Rsa(&'a rsa::RsaPrivateKey),
}

impl std::fmt::Debug for RecipientKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind_name())
    }
}

impl RecipientKey<'_> {
    fn kind_name(&self) -> &'static str {
        match self {
            RecipientKey::EcP256(_) => "an EC P-256 key",
            RecipientKey::EcP384(_) => "an EC P-384 key",
            RecipientKey::Rsa(_) => "an RSA key",
        }
    }
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn b64_field(field: &'static str, value: &str) -> Result<Vec<u8>, JoseError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|e| JoseError::InvalidKey {
            field,
            reason: format!("not base64url without padding: {e}"),
        })
}

fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, JoseError> {
    let mut out = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(out.as_mut())
        .map_err(|_| JoseError::Crypto("the system random source failed".into()))?;
    Ok(out)
}

/// The JOSE Concat KDF (RFC 7518 §4.6.2, NIST SP 800-56A §5.8.1) with SHA-256.
/// `AlgorithmID`, `PartyUInfo` and `PartyVInfo` are each prefixed with their 32-bit length;
/// `SuppPubInfo` is the key length in bits. Trustee and guest-components send no `apu`/`apv`.
pub fn concat_kdf(
    z: &[u8],
    algorithm_id: &str,
    apu: &[u8],
    apv: &[u8],
    key_bits: u32,
) -> Zeroizing<Vec<u8>> {
    let key_len = (key_bits as usize).div_ceil(8);
    let mut out = Zeroizing::new(Vec::with_capacity(key_len + 32));
    let mut counter: u32 = 1;
    while out.len() < key_len {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&counter.to_be_bytes());
        ctx.update(z);
        for part in [algorithm_id.as_bytes(), apu, apv] {
            ctx.update(&(part.len() as u32).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&key_bits.to_be_bytes());
        out.extend_from_slice(ctx.finish().as_ref());
        counter = counter.wrapping_add(1);
    }
    out.truncate(key_len);
    out
}

fn unsupported(alg: &str, kty: &str, crv: Option<&str>) -> JoseError {
    JoseError::UnsupportedAlgorithm {
        alg: alg.to_owned(),
        kty: kty.to_owned(),
        crv: crv.map(|c| format!(", crv {c}")).unwrap_or_default(),
    }
}

/// Checks that a KBS `tee-pubkey` is one [`encrypt`] accepts (algorithm, curve, point on the
/// curve, RSA size), so `/attest` can refuse it before the evidence is appraised.
pub fn check_recipient(recipient: &TeePubKey) -> Result<(), JoseError> {
    match recipient {
        TeePubKey::EC { crv, alg, x, y } => {
            if alg != ALG_ECDH_ES_A256KW {
                return Err(unsupported(alg, "EC", Some(crv)));
            }
            let curve = Curve::from_name(crv).ok_or_else(|| unsupported(alg, "EC", Some(crv)))?;
            let point = uncompressed_point(curve, x, y)?;
            let on_curve = match curve {
                Curve::P256 => p256::PublicKey::from_sec1_bytes(&point).is_ok(),
                Curve::P384 => p384::PublicKey::from_sec1_bytes(&point).is_ok(),
            };
            if !on_curve {
                return Err(JoseError::InvalidKey {
                    field: "x",
                    reason: format!("the point is not on {}", curve.name()),
                });
            }
            Ok(())
        }
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            if alg != ALG_RSA_OAEP_256 {
                return Err(unsupported(alg, "RSA", None));
            }
            rsa_public(k_mod, k_exp).map(|_| ())
        }
        TeePubKey::AKP { alg, .. } => Err(unsupported(alg, "AKP", None)),
    }
}

/// Encrypts `plaintext` to a KBS `tee-pubkey` as a flattened JWE.
pub fn encrypt(recipient: &TeePubKey, plaintext: &[u8]) -> Result<Response, JoseError> {
    let cek = random_bytes::<32>()?;
    let (protected, encrypted_key) = match recipient {
        TeePubKey::EC { crv, alg, x, y } => {
            if alg != ALG_ECDH_ES_A256KW {
                return Err(unsupported(alg, "EC", Some(crv)));
            }
            let curve = Curve::from_name(crv).ok_or_else(|| unsupported(alg, "EC", Some(crv)))?;
            let point = uncompressed_point(curve, x, y)?;
            wrap_ecdh_es(curve, &point, &cek)?
        }
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            if alg != ALG_RSA_OAEP_256 {
                return Err(unsupported(alg, "RSA", None));
            }
            let public = rsa_public(k_mod, k_exp)?;
            let encrypted_key = public
                .encrypt(
                    &mut rand_core::OsRng,
                    rsa::Oaep::new::<rsa::sha2::Sha256>(),
                    cek.as_ref(),
                )
                .map_err(|e| JoseError::Crypto(format!("RSA-OAEP encryption: {e}")))?;
            (header(ALG_RSA_OAEP_256, Map::new()), encrypted_key)
        }
        TeePubKey::AKP { alg, .. } => return Err(unsupported(alg, "AKP", None)),
    };

    let aad = protected
        .generate_aad()
        .map_err(|_| JoseError::Crypto("serialising the protected header".into()))?;
    let iv = random_bytes::<12>()?;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, cek.as_ref())
            .map_err(|_| JoseError::Crypto("AES-256-GCM key".into()))?,
    );
    let mut ciphertext = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*iv),
            Aad::from(&aad),
            &mut ciphertext,
        )
        .map_err(|_| JoseError::Crypto("AES-256-GCM seal".into()))?;
    Ok(Response {
        protected,
        encrypted_key,
        aad: None,
        iv: iv.to_vec(),
        ciphertext,
        tag: tag.as_ref().to_vec(),
    })
}

fn header(alg: &str, other_fields: Map<String, Value>) -> ProtectedHeader {
    ProtectedHeader {
        alg: alg.to_owned(),
        enc: ENC_A256GCM.to_owned(),
        other_fields,
    }
}

fn uncompressed_point(curve: Curve, x: &str, y: &str) -> Result<Vec<u8>, JoseError> {
    let x = b64_field("x", x)?;
    let y = b64_field("y", y)?;
    let len = curve.coordinate_len();
    for (field, value) in [("x", &x), ("y", &y)] {
        if value.len() != len {
            return Err(JoseError::InvalidKey {
                field,
                reason: format!("{} bytes where {} needs {len}", value.len(), curve.name()),
            });
        }
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}

/// ECDH-ES with an ephemeral ring key (ring checks the peer point is on the curve), the Concat
/// KDF over the shared x-coordinate, then A256KW of the CEK.
fn wrap_ecdh_es(
    curve: Curve,
    peer_point: &[u8],
    cek: &[u8; 32],
) -> Result<(ProtectedHeader, Vec<u8>), JoseError> {
    let rng = SystemRandom::new();
    let ephemeral = agreement::EphemeralPrivateKey::generate(curve.ring_alg(), &rng)
        .map_err(|_| JoseError::Crypto("ephemeral EC key generation".into()))?;
    let epk = ephemeral
        .compute_public_key()
        .map_err(|_| JoseError::Crypto("ephemeral public key".into()))?;
    let peer = agreement::UnparsedPublicKey::new(curve.ring_alg(), peer_point);
    let kek = agreement::agree_ephemeral(ephemeral, &peer, |z| {
        concat_kdf(z, ALG_ECDH_ES_A256KW, &[], &[], 256)
    })
    .map_err(|_| JoseError::InvalidKey {
        field: "x",
        reason: format!("the point is not on {}", curve.name()),
    })?;
    let encrypted_key = aes_kw_wrap(&kek, cek)?;

    let len = curve.coordinate_len();
    let epk = epk.as_ref();
    let mut epk_json = Map::new();
    epk_json.insert("crv".into(), Value::String(curve.name().into()));
    epk_json.insert("kty".into(), Value::String("EC".into()));
    epk_json.insert(
        "x".into(),
        Value::String(URL_SAFE_NO_PAD.encode(&epk[1..1 + len])),
    );
    epk_json.insert(
        "y".into(),
        Value::String(URL_SAFE_NO_PAD.encode(&epk[1 + len..])),
    );
    let mut other = Map::new();
    other.insert("epk".into(), Value::Object(epk_json));
    Ok((header(ALG_ECDH_ES_A256KW, other), encrypted_key))
}

fn aes_kw_wrap(kek: &[u8], cek: &[u8]) -> Result<Vec<u8>, JoseError> {
    let kek: [u8; 32] = kek
        .try_into()
        .map_err(|_| JoseError::Crypto("KEK is not 32 bytes".into()))?;
    let kek = Zeroizing::new(kek);
    aes_kw::KekAes256::from(*kek)
        .wrap_vec(cek)
        .map_err(|e| JoseError::Crypto(format!("A256KW wrap: {e}")))
}

fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    let kek: [u8; 32] = kek
        .try_into()
        .map_err(|_| JoseError::Crypto("KEK is not 32 bytes".into()))?;
    let kek = Zeroizing::new(kek);
    aes_kw::KekAes256::from(*kek)
        .unwrap_vec(wrapped)
        .map(Zeroizing::new)
        .map_err(|_| JoseError::Decrypt("A256KW unwrap of the encrypted_key failed"))
}

fn rsa_public(n: &str, e: &str) -> Result<rsa::RsaPublicKey, JoseError> {
    use rsa::traits::PublicKeyParts;
    let n = b64_field("n", n)?;
    let e = b64_field("e", e)?;
    let n = rsa::BigUint::from_bytes_be(&n);
    let bits = n.bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(JoseError::InvalidKey {
            field: "n",
            reason: format!(
                "a {bits}-bit modulus; {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are accepted"
            ),
        });
    }
    let key = rsa::RsaPublicKey::new(n, rsa::BigUint::from_bytes_be(&e)).map_err(|err| {
        JoseError::InvalidKey {
            field: "e",
            reason: err.to_string(),
        }
    })?;
    debug_assert!(key.size() * 8 >= MIN_RSA_BITS);
    Ok(key)
}

/// Decrypts a flattened JWE made by [`encrypt`] (or by Trustee) with the recipient's private key.
pub fn decrypt(
    private: &RecipientKey<'_>,
    jwe: &Response,
) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    let protected = &jwe.protected;
    if protected.enc != ENC_A256GCM {
        return Err(JoseError::UnsupportedEnc(protected.enc.clone()));
    }
    let cek = match protected.alg.as_str() {
        ALG_RSA_OAEP_256 => {
            let RecipientKey::Rsa(key) = private else {
                return Err(JoseError::KeyMismatch {
                    alg: protected.alg.clone(),
                    detail: "an RSA recipient".into(),
                    key: private.kind_name(),
                });
            };
            // Blinded: `rsa`'s big-integer arithmetic is not constant time (RUSTSEC-2023-0071,
            // Marvin); blinding is what it offers against timing. Prefer EC keys for anything
            // an attacker can submit many ciphertexts to.
            key.decrypt_blinded(
                &mut rand_core::OsRng,
                rsa::Oaep::new::<rsa::sha2::Sha256>(),
                &jwe.encrypted_key,
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                JoseError::Decrypt("RSA-OAEP-256 decryption of the encrypted_key failed")
            })?
        }
        ALG_ECDH_ES_A256KW => {
            let epk = protected
                .other_fields
                .get("epk")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    JoseError::InvalidJwe("`epk` missing from the protected header".into())
                })?;
            let field = |name: &str| {
                epk.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| JoseError::InvalidJwe(format!("`epk.{name}` missing")))
            };
            if field("kty")? != "EC" {
                return Err(JoseError::InvalidJwe("`epk.kty` is not EC".into()));
            }
            let crv = field("crv")?;
            let curve = Curve::from_name(crv)
                .ok_or_else(|| unsupported(&protected.alg, "EC", Some(crv)))?;
            let point = uncompressed_point(curve, field("x")?, field("y")?)?;
            let mismatch = || JoseError::KeyMismatch {
                alg: protected.alg.clone(),
                detail: format!("epk on {}", curve.name()),
                key: private.kind_name(),
            };
            let z: Zeroizing<Vec<u8>> = match (private, curve) {
                (RecipientKey::EcP256(secret), Curve::P256) => {
                    let peer = p256::PublicKey::from_sec1_bytes(&point).map_err(|_| {
                        JoseError::InvalidJwe("`epk` is not a point on P-256".into())
                    })?;
                    let shared =
                        p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                    Zeroizing::new(shared.raw_secret_bytes().to_vec())
                }
                (RecipientKey::EcP384(secret), Curve::P384) => {
                    let peer = p384::PublicKey::from_sec1_bytes(&point).map_err(|_| {
                        JoseError::InvalidJwe("`epk` is not a point on P-384".into())
                    })?;
                    let shared =
                        p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
                    Zeroizing::new(shared.raw_secret_bytes().to_vec())
                }
                _ => return Err(mismatch()),
            };
            let apu = optional_b64(protected, "apu")?;
            let apv = optional_b64(protected, "apv")?;
            let kek = concat_kdf(&z, ALG_ECDH_ES_A256KW, &apu, &apv, 256);
            aes_kw_unwrap(&kek, &jwe.encrypted_key)?
        }
        other => {
            let kty = match private {
                RecipientKey::Rsa(_) => "RSA",
                _ => "EC",
            };
            return Err(unsupported(other, kty, None));
        }
    };
    if cek.len() != 32 {
        return Err(JoseError::Decrypt("the content key is not 256 bits"));
    }
    if jwe.iv.len() != 12 {
        return Err(JoseError::InvalidJwe(format!(
            "iv is {} bytes, A256GCM needs 12",
            jwe.iv.len()
        )));
    }
    if jwe.tag.len() != 16 {
        return Err(JoseError::InvalidJwe(format!(
            "tag is {} bytes, A256GCM needs 16",
            jwe.tag.len()
        )));
    }
    let mut aad = protected
        .generate_aad()
        .map_err(|_| JoseError::InvalidJwe("the protected header does not serialise".into()))?;
    // RFC 7516 §5.2 step 14: with a JWE `aad` member, the AAD is `protected || '.' || aad`
    // (kbs-types keeps `aad` as the base64url text it received).
    if let Some(extra) = &jwe.aad {
        aad.push(b'.');
        aad.extend_from_slice(extra);
    }
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&jwe.iv);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &cek).map_err(|_| JoseError::Crypto("AES key".into()))?,
    );
    let mut buf = Zeroizing::new(Vec::with_capacity(jwe.ciphertext.len() + 16));
    buf.extend_from_slice(&jwe.ciphertext);
    buf.extend_from_slice(&jwe.tag);
    let len = key
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut buf)
        .map_err(|_| JoseError::Decrypt("the A256GCM tag does not verify"))?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn optional_b64(header: &ProtectedHeader, name: &'static str) -> Result<Vec<u8>, JoseError> {
    match header.other_fields.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JoseError::InvalidJwe(format!("`{name}` is not base64url"))),
        Some(_) => Err(JoseError::InvalidJwe(format!("`{name}` is not a string"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 7518 Appendix C: ECDH-ES key agreement, Concat KDF, `enc` A128GCM, apu "Alice",
    /// apv "Bob". Z is the shared secret the appendix derives from the two keys; the KDF must
    /// give `VqqN6vgjbSBcIijNcacQGg`.
    #[test]
    fn rfc7518_appendix_c_concat_kdf() {
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let key = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(URL_SAFE_NO_PAD.encode(&*key), "VqqN6vgjbSBcIijNcacQGg");
    }

    /// The same appendix end to end: Bob's static key and Alice's ephemeral key give that Z
    /// through p256's static ECDH, the path `decrypt` uses.
    #[test]
    fn rfc7518_appendix_c_ecdh_z() {
        let bob_d = URL_SAFE_NO_PAD
            .decode("VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw")
            .unwrap();
        let bob = p256::SecretKey::from_slice(&bob_d).unwrap();
        let point = uncompressed_point(
            Curve::P256,
            "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
            "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps",
        )
        .unwrap();
        let alice = p256::PublicKey::from_sec1_bytes(&point).unwrap();
        let z = p256::ecdh::diffie_hellman(bob.to_nonzero_scalar(), alice.as_affine());
        let key = concat_kdf(z.raw_secret_bytes(), "A128GCM", b"Alice", b"Bob", 128);
        assert_eq!(URL_SAFE_NO_PAD.encode(&*key), "VqqN6vgjbSBcIijNcacQGg");
    }

    /// RFC 7638 §3.1's example RSA key and thumbprint.
    #[test]
    fn rfc7638_thumbprint() {
        let jwk = PublicJwk::Rsa {
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
        };
        assert_eq!(
            jwk.thumbprint_b64(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    /// RFC 7516 Appendix A.1 is RSA-OAEP with SHA-1, which this crate refuses. Its content
    /// layer is plain A256GCM with AAD = the protected header's base64url, so that part is
    /// checked here with the appendix's CEK, IV, AAD, ciphertext and tag.
    #[test]
    fn rfc7516_a1_content_layer() {
        let cek: [u8; 32] = [
            177, 161, 244, 128, 84, 143, 225, 115, 63, 180, 3, 255, 107, 154, 212, 246, 138, 7,
            110, 91, 112, 46, 34, 105, 47, 130, 203, 46, 122, 234, 64, 252,
        ];
        let iv: [u8; 12] = [227, 197, 117, 252, 2, 219, 233, 68, 180, 225, 77, 219];
        let aad = b"eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ";
        let ciphertext = URL_SAFE_NO_PAD
            .decode("5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkIr3ajwQzaBtQD_A")
            .unwrap();
        let tag = URL_SAFE_NO_PAD.decode("XFBoMYUZodetZdvTiFvSkQ").unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &cek).unwrap());
        let mut buf = [ciphertext, tag].concat();
        let out = key
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
            .unwrap();
        assert_eq!(
            out,
            b"The true sign of intelligence is not knowledge but imagination."
        );
        // and the header kbs-types would rebuild gives the same AAD
        let header = ProtectedHeader {
            alg: "RSA-OAEP".into(),
            enc: "A256GCM".into(),
            other_fields: Map::new(),
        };
        assert_eq!(header.generate_aad().unwrap(), aad);
    }

    #[test]
    fn refuses_rsa1_5_naming_what_is_accepted() {
        let key = TeePubKey::RSA {
            alg: "RSA1_5".into(),
            k_mod: "AQAB".into(),
            k_exp: "AQAB".into(),
        };
        let err = encrypt(&key, b"x").unwrap_err().to_string();
        assert!(
            err.contains("RSA1_5") && err.contains("RSA-OAEP-256"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unknown_curve_and_small_rsa() {
        let key = TeePubKey::EC {
            crv: "P-521".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x: "AA".into(),
            y: "AA".into(),
        };
        assert!(matches!(
            encrypt(&key, b"x"),
            Err(JoseError::UnsupportedAlgorithm { .. })
        ));
        let small = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        use rsa::traits::PublicKeyParts;
        let key = TeePubKey::RSA {
            alg: ALG_RSA_OAEP_256.into(),
            k_mod: URL_SAFE_NO_PAD.encode(small.n().to_bytes_be()),
            k_exp: URL_SAFE_NO_PAD.encode(small.e().to_bytes_be()),
        };
        let err = encrypt(&key, b"x").unwrap_err().to_string();
        assert!(err.contains("1024-bit"), "{err}");
    }

    #[test]
    fn refuses_point_off_curve() {
        let key = TeePubKey::EC {
            crv: "P-256".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x: URL_SAFE_NO_PAD.encode([1u8; 32]),
            y: URL_SAFE_NO_PAD.encode([2u8; 32]),
        };
        assert!(matches!(
            encrypt(&key, b"x"),
            Err(JoseError::InvalidKey { .. })
        ));
    }
}
