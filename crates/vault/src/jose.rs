//! JWK and flattened JWE as the Trustee KBS protocol uses them.
//!
//! A resource goes back to an attested caller as a flattened JWE (RFC 7516 §7.2.2, the shape of
//! `kbs_types::Response`), encrypted to the `tee-pubkey` it attested with: `ECDH-ES+A256KW` for
//! an EC P-256/P-384 key, `RSA-OAEP-256` for an RSA key of at least 2048 bits, content `A256GCM`.
//! Nothing else is produced or accepted: `RSA1_5` (which Trustee still speaks) is a padding
//! oracle, and `dir`/`ECDH-ES` without key wrap would let one key agreement encrypt many things.
//! One exception on the decrypting side only: [`decrypt_json`] (JWE in JSON serialization, as
//! ocicrypt wraps image layer keys) also opens `RSA-OAEP` with SHA-1, ocicrypt's choice for RSA
//! keys; OAEP needs no collision resistance from its hash, and nothing here produces it.
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
/// `alg` RSAES-OAEP with SHA-1 and MGF1-SHA-1: what ocicrypt (`skopeo --encryption-key jwe:`)
/// wraps layer keys with for an RSA PEM key. Decrypted by [`decrypt_json`]; never produced.
pub const ALG_RSA_OAEP: &str = "RSA-OAEP";
/// `enc`: AES-256-GCM, 96-bit IV, 128-bit tag.
pub const ENC_A256GCM: &str = "A256GCM";

/// The smallest RSA modulus a resource is encrypted to.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus accepted (bounds the work an attester can make us do).
pub const MAX_RSA_BITS: usize = 8192;
/// The most recipients a general JWE may name.
pub const MAX_RECIPIENTS: usize = 32;

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
    /// No recipient of a JSON-serialised JWE could be decrypted with the key given; one reason
    /// per recipient, in order.
    #[error("no recipient of the JWE opens with {key}: {}", reasons.join("; "))]
    NoRecipient {
        /// the kind of key given
        key: &'static str,
        /// why each recipient failed (`recipient 0 (RSA-OAEP-256): ...`)
        reasons: Vec<String>,
    },
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
    encrypt_with_header(recipient, plaintext, &Map::new())
}

/// Header members [`encrypt_with_header`] sets itself, or whose meaning it does not implement.
const RESERVED_HEADER: [&str; 7] = ["alg", "enc", "epk", "apu", "apv", "zip", "crit"];

/// [`encrypt`], with `extra` members (`cty`, `kid`...) in the protected header after `alg`
/// and `enc`, so they are authenticated with the content. Members this function sets or would
/// have to honour (`alg`, `enc`, `epk`, `apu`, `apv`, `zip`, `crit`) are refused.
pub fn encrypt_with_header(
    recipient: &TeePubKey,
    plaintext: &[u8],
    extra: &Map<String, Value>,
) -> Result<Response, JoseError> {
    if let Some(name) = extra.keys().find(|k| RESERVED_HEADER.contains(&k.as_str())) {
        return Err(JoseError::InvalidJwe(format!(
            "header member `{name}` cannot be set by the caller"
        )));
    }
    let cek = random_bytes::<32>()?;
    let (mut protected, encrypted_key) = match recipient {
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
    // `extra` first, then what the algorithm added (`epk`): with serde_json's insertion order
    // (dcap-qvl turns `preserve_order` on in the workspace) the header reads alg, enc, cty,
    // kid, epk; without it, members after alg and enc are sorted. Either way the AAD is the
    // header as serialised.
    let algorithm_fields = std::mem::replace(&mut protected.other_fields, extra.clone());
    protected.other_fields.extend(algorithm_fields);

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
    if protected.alg == ALG_RSA_OAEP {
        // The KBS protocol never needs SHA-1 OAEP; only ocicrypt's layer keys do.
        return Err(unsupported(ALG_RSA_OAEP, "RSA", None));
    }
    let cek = unwrap_cek(
        private,
        &protected.alg,
        &protected.other_fields,
        &jwe.encrypted_key,
    )?;
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

/// The content key of one recipient: `alg` and the header members it needs (`epk`, `apu`,
/// `apv`) from `header`.
fn unwrap_cek(
    private: &RecipientKey<'_>,
    alg: &str,
    header: &Map<String, Value>,
    encrypted_key: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    let cek = match alg {
        ALG_RSA_OAEP_256 | ALG_RSA_OAEP => {
            let RecipientKey::Rsa(key) = private else {
                return Err(JoseError::KeyMismatch {
                    alg: alg.to_owned(),
                    detail: "an RSA recipient".into(),
                    key: private.kind_name(),
                });
            };
            // SHA-1 in OAEP is still sound (it needs no collision resistance); it is accepted
            // only because ocicrypt wraps with it, and never produced here.
            let padding = if alg == ALG_RSA_OAEP {
                rsa::Oaep::new::<sha1::Sha1>()
            } else {
                rsa::Oaep::new::<rsa::sha2::Sha256>()
            };
            // Blinded: `rsa`'s big-integer arithmetic is not constant time (RUSTSEC-2023-0071,
            // Marvin); blinding is what it offers against timing. Prefer EC keys for anything
            // an attacker can submit many ciphertexts to.
            key.decrypt_blinded(&mut rand_core::OsRng, padding, encrypted_key)
                .map(Zeroizing::new)
                .map_err(|_| {
                    if alg == ALG_RSA_OAEP {
                        JoseError::Decrypt("RSA-OAEP decryption of the encrypted_key failed")
                    } else {
                        JoseError::Decrypt("RSA-OAEP-256 decryption of the encrypted_key failed")
                    }
                })?
        }
        ALG_ECDH_ES_A256KW => {
            let epk = header
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
            let curve = Curve::from_name(crv).ok_or_else(|| unsupported(alg, "EC", Some(crv)))?;
            let point = uncompressed_point(curve, field("x")?, field("y")?)?;
            let mismatch = || JoseError::KeyMismatch {
                alg: alg.to_owned(),
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
            let apu = optional_b64(header, "apu")?;
            let apv = optional_b64(header, "apv")?;
            let kek = concat_kdf(&z, ALG_ECDH_ES_A256KW, &apu, &apv, 256);
            aes_kw_unwrap(&kek, encrypted_key)?
        }
        other => {
            let kty = match private {
                RecipientKey::Rsa(_) => "RSA",
                _ => "EC",
            };
            return Err(unsupported(other, kty, None));
        }
    };
    Ok(cek)
}

fn optional_b64(header: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JoseError> {
    match header.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JoseError::InvalidJwe(format!("`{name}` is not base64url"))),
        Some(_) => Err(JoseError::InvalidJwe(format!("`{name}` is not a string"))),
    }
}

/// Decrypts a JWE in JSON serialization (RFC 7516 §7.2), flattened or general, as ocicrypt
/// (go-jose) writes them: one recipient → flattened with every header member protected;
/// several → `recipients[]`, each with its own `header` holding `alg` and `epk`.
///
/// Each recipient's header is the union of `protected`, `unprotected` and its own `header`;
/// a member in two of them is an error (RFC 7516 §7.2.1). Every recipient is tried with
/// `private` in order and the first that opens wins; if none does, the error says why each
/// failed. `alg` is `ECDH-ES+A256KW` (P-256/P-384), `RSA-OAEP-256` or `RSA-OAEP` (SHA-1, the
/// one ocicrypt uses for RSA keys); `enc` is `A256GCM` only; `zip` and `crit` are refused.
/// The AAD is the `protected` member exactly as received, then `.` and `aad` if present.
pub fn decrypt_json(
    private: &RecipientKey<'_>,
    jwe: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    let doc: Value = serde_json::from_slice(jwe).map_err(|e| {
        JoseError::InvalidJwe(format!(
            "not a JWE in JSON serialization (compact JWEs are not accepted): {e}"
        ))
    })?;
    let Value::Object(doc) = doc else {
        return Err(JoseError::InvalidJwe("the JWE is not a JSON object".into()));
    };
    let string = |name: &str| -> Result<Option<&str>, JoseError> {
        match doc.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(JoseError::InvalidJwe(format!("`{name}` is not a string"))),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, JoseError> {
        let text =
            string(name)?.ok_or_else(|| JoseError::InvalidJwe(format!("`{name}` missing")))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| JoseError::InvalidJwe(format!("`{name}` is not base64url")))
    };
    let object = |value: Option<&Value>, name: &str| -> Result<Map<String, Value>, JoseError> {
        match value {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(JoseError::InvalidJwe(format!(
                "`{name}` is not a JSON object"
            ))),
        }
    };

    let protected_b64 = string("protected")?.unwrap_or("");
    let protected = if protected_b64.is_empty() {
        Map::new()
    } else {
        let raw = URL_SAFE_NO_PAD
            .decode(protected_b64)
            .map_err(|_| JoseError::InvalidJwe("`protected` is not base64url".into()))?;
        let value: Value = serde_json::from_slice(&raw)
            .map_err(|e| JoseError::InvalidJwe(format!("`protected` is not JSON: {e}")))?;
        object(Some(&value), "protected")?
    };
    let unprotected = object(doc.get("unprotected"), "unprotected")?;
    let iv = bytes("iv")?;
    let ciphertext = bytes("ciphertext")?;
    let tag = bytes("tag")?;
    let aad_b64 = string("aad")?;
    if let Some(text) = aad_b64 {
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| JoseError::InvalidJwe("`aad` is not base64url".into()))?;
    }

    // (per-recipient header, encrypted_key)
    let mut recipients: Vec<(Map<String, Value>, Vec<u8>)> = Vec::new();
    match doc.get("recipients") {
        Some(Value::Array(list)) => {
            // go-jose (skopeo's ocicrypt) also writes the first recipient's `encrypted_key`
            // at the top level of a general JWE; it is ignored, each recipient has its own.
            if doc.contains_key("header") {
                return Err(JoseError::InvalidJwe(
                    "both `recipients` and a flattened `header`".into(),
                ));
            }
            // Each recipient costs a header merge and perhaps an RSA decryption: a JWE for a
            // few keys is what the tools write, thousands is an attempt to burn CPU.
            if list.len() > MAX_RECIPIENTS {
                return Err(JoseError::InvalidJwe(format!(
                    "{} recipients; at most {MAX_RECIPIENTS} are read",
                    list.len()
                )));
            }
            for (i, r) in list.iter().enumerate() {
                let Value::Object(r) = r else {
                    return Err(JoseError::InvalidJwe(format!(
                        "recipient {i} is not an object"
                    )));
                };
                let header = object(r.get("header"), "header")?;
                let key = match r.get("encrypted_key") {
                    None => Vec::new(),
                    Some(Value::String(s)) => URL_SAFE_NO_PAD.decode(s).map_err(|_| {
                        JoseError::InvalidJwe(format!(
                            "recipient {i}: `encrypted_key` is not base64url"
                        ))
                    })?,
                    Some(_) => {
                        return Err(JoseError::InvalidJwe(format!(
                            "recipient {i}: `encrypted_key` is not a string"
                        )));
                    }
                };
                recipients.push((header, key));
            }
        }
        Some(_) => return Err(JoseError::InvalidJwe("`recipients` is not an array".into())),
        None => {
            let header = object(doc.get("header"), "header")?;
            let key = if doc.contains_key("encrypted_key") {
                bytes("encrypted_key")?
            } else {
                Vec::new()
            };
            recipients.push((header, key));
        }
    }
    if recipients.is_empty() {
        return Err(JoseError::InvalidJwe("`recipients` is empty".into()));
    }
    if iv.len() != 12 {
        return Err(JoseError::InvalidJwe(format!(
            "iv is {} bytes, A256GCM needs 12",
            iv.len()
        )));
    }
    if tag.len() != 16 {
        return Err(JoseError::InvalidJwe(format!(
            "tag is {} bytes, A256GCM needs 16",
            tag.len()
        )));
    }
    let mut aad = protected_b64.as_bytes().to_vec();
    if let Some(extra) = aad_b64 {
        aad.push(b'.');
        aad.extend_from_slice(extra.as_bytes());
    }

    let mut errors = Vec::with_capacity(recipients.len());
    for (i, (own, encrypted_key)) in recipients.iter().enumerate() {
        let attempt = joint_header(&protected, &unprotected, own).and_then(|header| {
            let alg = header
                .get("alg")
                .and_then(Value::as_str)
                .ok_or_else(|| JoseError::InvalidJwe("`alg` missing".into()))?;
            let enc = header
                .get("enc")
                .and_then(Value::as_str)
                .ok_or_else(|| JoseError::InvalidJwe("`enc` missing".into()))?;
            if enc != ENC_A256GCM {
                return Err(JoseError::UnsupportedEnc(enc.to_owned()));
            }
            for refused in ["zip", "crit"] {
                if header.contains_key(refused) {
                    return Err(JoseError::InvalidJwe(format!(
                        "header member `{refused}` is not supported"
                    )));
                }
            }
            let cek = unwrap_cek(private, alg, &header, encrypted_key)?;
            open_gcm(&cek, &iv, &aad, &ciphertext, &tag)
        });
        match attempt {
            Ok(plain) => return Ok(plain),
            Err(e) => {
                let alg = own
                    .get("alg")
                    .or_else(|| protected.get("alg"))
                    .or_else(|| unprotected.get("alg"))
                    .and_then(Value::as_str)
                    .unwrap_or("no alg");
                errors.push((i, alg.to_owned(), e));
            }
        }
    }
    if errors.len() == 1
        && let Some((_, _, e)) = errors.pop()
    {
        return Err(e);
    }
    Err(JoseError::NoRecipient {
        key: private.kind_name(),
        reasons: errors
            .into_iter()
            .map(|(i, alg, e)| format!("recipient {i} ({alg}): {e}"))
            .collect(),
    })
}

fn joint_header(
    protected: &Map<String, Value>,
    unprotected: &Map<String, Value>,
    own: &Map<String, Value>,
) -> Result<Map<String, Value>, JoseError> {
    let mut joint = protected.clone();
    for part in [unprotected, own] {
        for (name, value) in part {
            if joint.insert(name.clone(), value.clone()).is_some() {
                return Err(JoseError::InvalidJwe(format!(
                    "header member `{name}` appears twice (protected, unprotected and recipient headers must be disjoint)"
                )));
            }
        }
    }
    Ok(joint)
}

fn open_gcm(
    cek: &[u8],
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Result<Zeroizing<Vec<u8>>, JoseError> {
    if cek.len() != 32 {
        return Err(JoseError::Decrypt("the content key is not 256 bits"));
    }
    let mut nonce = [0u8; 12];
    if iv.len() != 12 {
        return Err(JoseError::InvalidJwe(format!(
            "iv is {} bytes, A256GCM needs 12",
            iv.len()
        )));
    }
    nonce.copy_from_slice(iv);
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, cek).map_err(|_| JoseError::Crypto("AES key".into()))?,
    );
    let mut buf = Zeroizing::new(Vec::with_capacity(ciphertext.len() + tag.len()));
    buf.extend_from_slice(ciphertext);
    buf.extend_from_slice(tag);
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| JoseError::Decrypt("the A256GCM tag does not verify"))?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The `tee-pubkey` an SPKI (`-----BEGIN PUBLIC KEY-----`) PEM names: EC P-256/P-384 →
/// `ECDH-ES+A256KW`, RSA of 2048 to 8192 bits → `RSA-OAEP-256` (what `skopeo --encryption-key
/// jwe:<file>` accepts, except that RSA is wrapped with OAEP-SHA-256 rather than SHA-1).
pub fn public_key_from_pem(pem: &str) -> Result<TeePubKey, JoseError> {
    use p256::pkcs8::DecodePublicKey;
    // The strict PEM decoder refuses blank lines and carriage returns around the block, which
    // editors and shell redirections add; openssl takes them.
    let normalised = format!("{}\n", pem.replace('\r', "").trim());
    let pem = normalised.as_str();
    let label = pem.lines().find_map(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
    });
    match label {
        Some("PUBLIC KEY") => {}
        Some(other) if other.contains("PRIVATE") => {
            return Err(JoseError::InvalidKey {
                field: "pem",
                reason: format!(
                    "this is a `{other}` PEM: give the public half (`openssl pkey -pubout`)"
                ),
            });
        }
        Some(other) => {
            return Err(JoseError::InvalidKey {
                field: "pem",
                reason: format!("a `{other}` PEM, where an SPKI `PUBLIC KEY` PEM is expected"),
            });
        }
        None => {
            return Err(JoseError::InvalidKey {
                field: "pem",
                reason: "no `-----BEGIN PUBLIC KEY-----` PEM block".into(),
            });
        }
    }
    let coords = |point: &[u8], len: usize| {
        (
            URL_SAFE_NO_PAD.encode(&point[1..1 + len]),
            URL_SAFE_NO_PAD.encode(&point[1 + len..1 + 2 * len]),
        )
    };
    if let Ok(key) = p256::PublicKey::from_public_key_pem(pem) {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.to_encoded_point(false);
        let (x, y) = coords(point.as_bytes(), 32);
        return Ok(TeePubKey::EC {
            crv: "P-256".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x,
            y,
        });
    }
    if let Ok(key) = p384::PublicKey::from_public_key_pem(pem) {
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.to_encoded_point(false);
        let (x, y) = coords(point.as_bytes(), 48);
        return Ok(TeePubKey::EC {
            crv: "P-384".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x,
            y,
        });
    }
    match rsa::RsaPublicKey::from_public_key_pem(pem) {
        Ok(key) => {
            use rsa::traits::PublicKeyParts;
            let recipient = TeePubKey::RSA {
                alg: ALG_RSA_OAEP_256.into(),
                k_mod: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                k_exp: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            };
            check_recipient(&recipient)?;
            Ok(recipient)
        }
        Err(e) => Err(JoseError::InvalidKey {
            field: "pem",
            reason: format!("not an EC P-256, EC P-384 or RSA public key ({e})"),
        }),
    }
}

/// The `tee-pubkey` a public JWK names (EC P-256/P-384 or RSA). Its `alg`, when present,
/// must be one this crate encrypts with (`RSA-OAEP`, which ocicrypt would use, is taken as
/// `RSA-OAEP-256`: the key is the same, SHA-1 is just not produced here).
pub fn public_key_from_jwk(json: &str) -> Result<TeePubKey, JoseError> {
    let jwk: Map<String, Value> =
        serde_json::from_str(json).map_err(|e| JoseError::InvalidKey {
            field: "jwk",
            reason: format!("not a JSON object: {e}"),
        })?;
    let member = |name: &'static str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| JoseError::InvalidKey {
                field: name,
                reason: "missing or not a string".into(),
            })
    };
    let alg = jwk.get("alg").and_then(Value::as_str);
    let recipient = match member("kty")? {
        "EC" => {
            let crv = member("crv")?;
            if let Some(alg) = alg.filter(|a| *a != ALG_ECDH_ES_A256KW) {
                return Err(unsupported(alg, "EC", Some(crv)));
            }
            TeePubKey::EC {
                crv: crv.to_owned(),
                alg: ALG_ECDH_ES_A256KW.into(),
                x: member("x")?.to_owned(),
                y: member("y")?.to_owned(),
            }
        }
        "RSA" => {
            if let Some(alg) = alg.filter(|a| *a != ALG_RSA_OAEP_256 && *a != ALG_RSA_OAEP) {
                return Err(unsupported(alg, "RSA", None));
            }
            TeePubKey::RSA {
                alg: ALG_RSA_OAEP_256.into(),
                k_mod: member("n")?.to_owned(),
                k_exp: member("e")?.to_owned(),
            }
        }
        other => return Err(unsupported(alg.unwrap_or("(none)"), other, None)),
    };
    check_recipient(&recipient)?;
    Ok(recipient)
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

    /// A general JWE naming more recipients than anyone writes is refused before any is tried.
    #[test]
    fn too_many_recipients_are_refused_before_any_is_tried() {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let recipients: Vec<Value> = (0..=MAX_RECIPIENTS)
            .map(|_| serde_json::json!({"header": {"alg": "RSA-OAEP"}, "encrypted_key": "AA"}))
            .collect();
        let jwe = serde_json::json!({
            "protected": URL_SAFE_NO_PAD.encode(br#"{"enc":"A256GCM"}"#),
            "recipients": recipients,
            "iv": URL_SAFE_NO_PAD.encode([0u8; 12]),
            "ciphertext": "",
            "tag": URL_SAFE_NO_PAD.encode([0u8; 16]),
        });
        let err =
            decrypt_json(&RecipientKey::EcP256(&secret), jwe.to_string().as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{} recipients; at most {MAX_RECIPIENTS}",
                MAX_RECIPIENTS + 1
            )),
            "{err}"
        );
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

    /// A general-JSON JWE as go-jose writes for two recipients: `protected` holds only `enc`,
    /// each recipient's `header` its `alg` (and `epk`). One recipient is RSA-OAEP with SHA-1,
    /// ocicrypt's choice for RSA keys.
    fn two_recipient_jwe(
        ec: &p256::PublicKey,
        rsa_key: &rsa::RsaPublicKey,
        plaintext: &[u8],
        aad: Option<&str>,
    ) -> Value {
        let cek = random_bytes::<32>().unwrap();
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let (ec_header, ec_wrapped) =
            wrap_ecdh_es(Curve::P256, ec.to_encoded_point(false).as_bytes(), &cek).unwrap();
        let mut ec_own = Map::new();
        ec_own.insert("alg".into(), Value::from(ec_header.alg.clone()));
        ec_own.insert("epk".into(), ec_header.other_fields["epk"].clone());
        let rsa_wrapped = rsa_key
            .encrypt(
                &mut rand_core::OsRng,
                rsa::Oaep::new::<sha1::Sha1>(),
                cek.as_ref(),
            )
            .unwrap();
        let protected = URL_SAFE_NO_PAD.encode(br#"{"enc":"A256GCM"}"#);
        let mut full_aad = protected.clone().into_bytes();
        if let Some(extra) = aad {
            full_aad.push(b'.');
            full_aad.extend_from_slice(extra.as_bytes());
        }
        let iv = [7u8; 12];
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, cek.as_ref()).unwrap());
        let mut ct = plaintext.to_vec();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&full_aad),
                &mut ct,
            )
            .unwrap();
        let mut doc = serde_json::json!({
            "protected": protected,
            "recipients": [
                {"header": ec_own, "encrypted_key": URL_SAFE_NO_PAD.encode(&ec_wrapped)},
                {"header": {"alg": "RSA-OAEP"}, "encrypted_key": URL_SAFE_NO_PAD.encode(rsa_wrapped)},
            ],
            // go-jose repeats the first recipient's key here
            "encrypted_key": URL_SAFE_NO_PAD.encode(&ec_wrapped),
            "iv": URL_SAFE_NO_PAD.encode(iv),
            "ciphertext": URL_SAFE_NO_PAD.encode(&ct),
            "tag": URL_SAFE_NO_PAD.encode(tag.as_ref()),
        });
        if let Some(extra) = aad {
            doc["aad"] = Value::from(extra);
        }
        doc
    }

    #[test]
    fn decrypt_json_general_two_recipients_and_rsa_oaep_sha1() {
        let ec = p256::SecretKey::random(&mut rand_core::OsRng);
        let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let doc = two_recipient_jwe(
            &ec.public_key(),
            &rsa_key.to_public_key(),
            b"private options",
            Some("ZXh0cmE"),
        );
        let bytes = serde_json::to_vec(&doc).unwrap();
        // each recipient opens it with its own key: ECDH-ES+A256KW, and RSA-OAEP (SHA-1)
        let out = decrypt_json(&RecipientKey::EcP256(&ec), &bytes).unwrap();
        assert_eq!(&out[..], b"private options");
        let out = decrypt_json(&RecipientKey::Rsa(&rsa_key), &bytes).unwrap();
        assert_eq!(&out[..], b"private options");

        // a third key: the error says why each recipient failed
        let other = p256::SecretKey::random(&mut rand_core::OsRng);
        let err = decrypt_json(&RecipientKey::EcP256(&other), &bytes).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JoseError::NoRecipient { .. }), "{text}");
        assert!(
            text.contains("recipient 0 (ECDH-ES+A256KW)")
                && text.contains("recipient 1 (RSA-OAEP)")
                && text.contains("A256KW unwrap")
                && text.contains("RSA recipient"),
            "{text}"
        );

        // the `aad` member is authenticated
        let mut altered = doc.clone();
        altered["aad"] = Value::from("b3RoZXI");
        let err = decrypt_json(
            &RecipientKey::EcP256(&ec),
            &serde_json::to_vec(&altered).unwrap(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("A256GCM tag does not verify"),
            "{err}"
        );

        // a member in both the protected and a recipient header is refused
        let mut dup = doc.clone();
        dup["recipients"][0]["header"]["enc"] = Value::from("A256GCM");
        let err = decrypt_json(
            &RecipientKey::EcP256(&ec),
            &serde_json::to_vec(&dup).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`enc` appears twice"), "{err}");
    }

    #[test]
    fn decrypt_json_refuses_zip_other_enc_and_compact() {
        let ec = p256::SecretKey::random(&mut rand_core::OsRng);
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = ec.public_key().to_encoded_point(false);
        let recipient = TeePubKey::EC {
            crv: "P-256".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x: URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            y: URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        };
        for (name, value, expect) in [
            ("zip", "DEF", "`zip` is not supported"),
            ("crit", "x", "`crit` is not supported"),
        ] {
            let mut extra = Map::new();
            extra.insert("kid".into(), Value::from("k"));
            let jwe = encrypt_with_header(&recipient, b"x", &extra).unwrap();
            let mut doc: Value = serde_json::to_value(&jwe).unwrap();
            doc["unprotected"] = serde_json::json!({ name: value });
            let err = decrypt_json(
                &RecipientKey::EcP256(&ec),
                &serde_json::to_vec(&doc).unwrap(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(expect), "{err}");
        }
        // enc other than A256GCM, named
        let mut protected = header(ALG_ECDH_ES_A256KW, Map::new());
        protected.enc = "A128CBC-HS256".into();
        let doc = serde_json::json!({
            "protected": URL_SAFE_NO_PAD.encode(serde_json::to_vec(&protected).unwrap()),
            "encrypted_key": "AA", "iv": URL_SAFE_NO_PAD.encode([0u8; 12]),
            "ciphertext": "AA", "tag": URL_SAFE_NO_PAD.encode([0u8; 16]),
        });
        let err = decrypt_json(
            &RecipientKey::EcP256(&ec),
            &serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(err, JoseError::UnsupportedEnc(ref e) if e == "A128CBC-HS256"),
            "{err}"
        );
        let err = decrypt_json(&RecipientKey::EcP256(&ec), b"eyJhbGciOi.x.y.z.w").unwrap_err();
        assert!(err.to_string().contains("compact"), "{err}");
    }

    #[test]
    fn encrypt_with_header_authenticates_extra_members() {
        let ec = p256::SecretKey::random(&mut rand_core::OsRng);
        use p256::pkcs8::EncodePublicKey;
        let pem = ec
            .public_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap();
        let recipient = public_key_from_pem(&pem).unwrap();
        // Blank lines and CRLF around the block, as editors and redirections leave them.
        let padded = format!("\n{}\n\n", pem.replace('\n', "\r\n"));
        assert_eq!(
            serde_json::to_value(public_key_from_pem(&padded).unwrap()).unwrap(),
            serde_json::to_value(&recipient).unwrap()
        );
        let mut extra = Map::new();
        extra.insert("cty".into(), Value::from("application/wasm"));
        extra.insert("kid".into(), Value::from("apps/key"));
        let jwe = encrypt_with_header(&recipient, b"\0asm", &extra).unwrap();
        let wire = serde_json::to_vec(&jwe).unwrap();
        let doc: Value = serde_json::from_slice(&wire).unwrap();
        let header = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(doc["protected"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(
            header.starts_with(r#"{"alg":"ECDH-ES+A256KW","enc":"A256GCM","#)
                && header.contains(r#""cty":"application/wasm""#)
                && header.contains(r#""kid":"apps/key""#),
            "{header}"
        );
        assert_eq!(
            &decrypt_json(&RecipientKey::EcP256(&ec), &wire).unwrap()[..],
            b"\0asm"
        );
        let mut reserved = Map::new();
        reserved.insert("alg".into(), Value::from("none"));
        assert!(encrypt_with_header(&recipient, b"x", &reserved).is_err());
    }

    #[test]
    fn public_keys_from_pem_and_jwk() {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = rsa_key
            .to_public_key()
            .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap();
        let TeePubKey::RSA { alg, .. } = public_key_from_pem(&pem).unwrap() else {
            panic!("not RSA")
        };
        assert_eq!(alg, ALG_RSA_OAEP_256);
        let private_pem = rsa_key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let err = public_key_from_pem(&private_pem).unwrap_err().to_string();
        assert!(
            err.contains("PRIVATE KEY") && err.contains("-pubout"),
            "{err}"
        );
        let err = public_key_from_pem("hello").unwrap_err().to_string();
        assert!(err.contains("no `-----BEGIN PUBLIC KEY-----`"), "{err}");

        let ec = p384::SecretKey::random(&mut rand_core::OsRng);
        let pem = ec
            .public_key()
            .to_public_key_pem(p384::pkcs8::LineEnding::LF)
            .unwrap();
        let from_pem = public_key_from_pem(&pem).unwrap();
        let TeePubKey::EC { crv, x, y, .. } = &from_pem else {
            panic!("not EC")
        };
        assert_eq!(crv, "P-384");
        let jwk =
            format!(r#"{{"kty":"EC","crv":"P-384","x":"{x}","y":"{y}","alg":"ECDH-ES+A256KW"}}"#);
        assert_eq!(
            serde_json::to_value(public_key_from_jwk(&jwk).unwrap()).unwrap(),
            serde_json::to_value(&from_pem).unwrap()
        );
        let bad = format!(r#"{{"kty":"EC","crv":"P-384","x":"{x}","y":"{y}","alg":"ECDH-ES"}}"#);
        assert!(matches!(
            public_key_from_jwk(&bad),
            Err(JoseError::UnsupportedAlgorithm { .. })
        ));
    }
}
