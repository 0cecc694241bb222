//! Encrypted workloads in the formats today's tools write: ocicrypt-encrypted OCI image layers
//! (what `skopeo copy --encryption-key` produces and `--decryption-key` opens) and JWE-encrypted
//! WebAssembly components.
//!
//! What it is for:
//! - the layer format: `+encrypted` media types, AES-256-CTR with an HMAC-SHA256 over the
//!   ciphertext (public options, `org.opencontainers.image.enc.pubopts`), and the private
//!   options (layer key, nonce, plaintext digest) wrapped per recipient, either as JWE
//!   (`org.opencontainers.image.enc.keys.jwe`) or as Confidential Containers' annotation
//!   packet (`…keys.provider.attestation-agent`, a KEK that is a KBS resource);
//! - [`LayerAuthenticator`] then [`LayerDecryptor`]: a layer in two passes, the HMAC over the
//!   ciphertext checked (constant time) before a decryptor exists, then streaming decryption
//!   whose [`LayerDecryptor::finish`] checks the plaintext digest;
//! - [`encrypt_layer`] and [`layout`]: encrypting images in an OCI layout on disk;
//! - wasm components as flattened JWE with `cty: application/wasm` ([`encrypt_component`],
//!   [`decrypt_component`]).
//!
//! What it is not: no registry client (enclave-oci), no key storage and no policy on who gets
//! a key (the vault), no unpacking of layers. PGP, PKCS#7, PKCS#11 and other key providers are
//! recognised only to be refused by name.
//!
//! Layer encryption draws a fresh 32-byte key and 16-byte nonce per layer from the system
//! random source; callers cannot choose them, since CTR with a repeated key and nonce leaks
//! the XOR of two plaintexts.

mod component;
mod error;
pub mod layout;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ctr::cipher::{KeyIvInit, StreamCipher};
use enclave_oci::{Descriptor, Digest};
use enclave_vault::RecipientKey;
use kbs_types::TeePubKey;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub use component::{
    WASM_CTY, component_kid, decrypt_component, encrypt_component, is_encrypted_component,
};
pub use error::ImgcryptError;

/// The layer annotations ocicrypt reads and writes.
pub mod annotations {
    /// Private options wrapped as JWE, comma-separated base64 entries.
    pub const JWE: &str = "org.opencontainers.image.enc.keys.jwe";
    /// Private options wrapped by a KBS-held KEK (Confidential Containers' annotation packet).
    pub const ATTESTATION_AGENT: &str =
        "org.opencontainers.image.enc.keys.provider.attestation-agent";
    /// Public options: cipher and HMAC, base64 JSON.
    pub const PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
    /// OpenPGP-wrapped keys (not supported).
    pub const PGP: &str = "org.opencontainers.image.enc.keys.pgp";
    /// PKCS#7-wrapped keys (not supported).
    pub const PKCS7: &str = "org.opencontainers.image.enc.keys.pkcs7";
    /// PKCS#11-wrapped keys (not supported).
    pub const PKCS11: &str = "org.opencontainers.image.enc.keys.pkcs11";
    /// Prefix of every key provider's annotation.
    pub const PROVIDER_PREFIX: &str = "org.opencontainers.image.enc.keys.provider.";
    /// Prefix of every key annotation.
    pub const KEYS_PREFIX: &str = "org.opencontainers.image.enc.keys.";
}

/// What an encrypted layer's media type ends with.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";
/// The one layer cipher ocicrypt defines.
pub const CIPHER_AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";
/// The one annotation-packet wrap type accepted.
pub const WRAP_A256GCM: &str = "A256GCM";

/// Whether a layer media type is an encrypted one.
pub fn is_encrypted(media_type: &str) -> bool {
    media_type.ends_with(ENCRYPTED_SUFFIX)
}

/// The media type of the plaintext of an encrypted layer, or `None` if it is not encrypted.
pub fn plain_media_type(media_type: &str) -> Option<&str> {
    media_type.strip_suffix(ENCRYPTED_SUFFIX)
}

/// Confidential Containers' key-provider annotation packet: the private options encrypted with
/// a KEK that is the KBS resource `kid` names. `wrapped_data` and `iv` are standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnotationPacket {
    /// `kbs:///<repository>/<type>/<tag>`.
    pub kid: String,
    /// AES-256-GCM ciphertext || tag of the private options.
    pub wrapped_data: String,
    /// 12-byte GCM IV.
    pub iv: String,
    /// `A256GCM` (the only one accepted).
    pub wrap_type: String,
}

/// One wrapped copy of a layer's private options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedKey {
    /// A JWE in JSON serialization (the decoded annotation entry).
    Jwe(Vec<u8>),
    /// An attestation-agent annotation packet.
    AttestationAgent(AnnotationPacket),
}

fn annotation<'a>(layer: &'a Descriptor, name: &str) -> Option<&'a str> {
    layer
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// The most wrapped keys a layer's annotation may carry: each may cost an RSA decryption at
/// every start, and the tools write one per recipient.
pub const MAX_WRAPPED_KEYS: usize = 32;

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// The wrapped keys of an encrypted layer, in annotation order (JWE entries, then
/// attestation-agent packets). Errors: no key annotation at all, only unsupported schemes
/// (named: "PGP", "PKCS#7", "PKCS#11", "key provider '<x>'"), bad base64/JSON (naming the
/// annotation).
pub fn wrapped_keys(layer: &Descriptor, what: &str) -> Result<Vec<WrappedKey>, ImgcryptError> {
    let mut keys = Vec::new();
    if let Some(value) = annotation(layer, annotations::JWE) {
        for (i, entry) in entries(value).enumerate() {
            let jwe = STANDARD
                .decode(entry)
                .map_err(|e| ImgcryptError::Malformed {
                    what: what.to_owned(),
                    reason: format!("{} entry {i} is not base64: {e}", annotations::JWE),
                })?;
            keys.push(WrappedKey::Jwe(jwe));
        }
    }
    if let Some(value) = annotation(layer, annotations::ATTESTATION_AGENT) {
        for (i, entry) in entries(value).enumerate() {
            let json = STANDARD
                .decode(entry)
                .map_err(|e| ImgcryptError::Malformed {
                    what: what.to_owned(),
                    reason: format!(
                        "{} entry {i} is not base64: {e}",
                        annotations::ATTESTATION_AGENT
                    ),
                })?;
            let packet: AnnotationPacket =
                serde_json::from_slice(&json).map_err(|e| ImgcryptError::Malformed {
                    what: what.to_owned(),
                    reason: format!(
                        "{} entry {i} is not an annotation packet: {e}",
                        annotations::ATTESTATION_AGENT
                    ),
                })?;
            keys.push(WrappedKey::AttestationAgent(packet));
        }
    }
    if keys.len() > MAX_WRAPPED_KEYS {
        return Err(ImgcryptError::Malformed {
            what: what.to_owned(),
            reason: format!(
                "{} wrapped keys; at most {MAX_WRAPPED_KEYS} are read",
                keys.len()
            ),
        });
    }
    if !keys.is_empty() {
        return Ok(keys);
    }
    let mut unsupported = Vec::new();
    for (name, value) in layer.annotations.iter().flatten() {
        if value.trim().is_empty() {
            continue;
        }
        let scheme = match name.as_str() {
            annotations::PGP => "PGP".to_owned(),
            annotations::PKCS7 => "PKCS#7".to_owned(),
            annotations::PKCS11 => "PKCS#11".to_owned(),
            other => match other.strip_prefix(annotations::PROVIDER_PREFIX) {
                Some(provider) => format!("key provider '{provider}'"),
                None => match other.strip_prefix(annotations::KEYS_PREFIX) {
                    Some(scheme) => format!("key scheme '{scheme}'"),
                    None => continue,
                },
            },
        };
        unsupported.push(scheme);
    }
    if unsupported.is_empty() {
        Err(ImgcryptError::NoKey {
            what: what.to_owned(),
        })
    } else {
        Err(ImgcryptError::Unsupported {
            what: what.to_owned(),
            scheme: unsupported.join(", "),
        })
    }
}

/// A layer's public options: the cipher and the HMAC-SHA256 of its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOptions {
    /// Always [`CIPHER_AES_256_CTR_HMAC_SHA256`] once parsed.
    pub cipher: String,
    /// 32 bytes.
    pub hmac: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct PubOptsJson {
    cipher: String,
    hmac: String,
    #[serde(default)]
    cipheroptions: BTreeMap<String, String>,
}

/// The public options of an encrypted layer (from [`annotations::PUBOPTS`]). The cipher must be
/// `AES_256_CTR_HMAC_SHA256` and the HMAC 32 bytes.
pub fn public_options(layer: &Descriptor, what: &str) -> Result<PublicOptions, ImgcryptError> {
    let malformed = |reason: String| ImgcryptError::Malformed {
        what: what.to_owned(),
        reason,
    };
    let value = annotation(layer, annotations::PUBOPTS).ok_or_else(|| {
        malformed(format!(
            "annotation {} is missing: the layer's HMAC is unknown",
            annotations::PUBOPTS
        ))
    })?;
    let json = STANDARD
        .decode(value.trim())
        .map_err(|e| malformed(format!("{} is not base64: {e}", annotations::PUBOPTS)))?;
    let opts: PubOptsJson = serde_json::from_slice(&json).map_err(|e| {
        malformed(format!(
            "{} is not the options JSON: {e}",
            annotations::PUBOPTS
        ))
    })?;
    if opts.cipher != CIPHER_AES_256_CTR_HMAC_SHA256 {
        return Err(ImgcryptError::Unsupported {
            what: what.to_owned(),
            scheme: format!(
                "layer cipher '{}' (only {CIPHER_AES_256_CTR_HMAC_SHA256})",
                opts.cipher
            ),
        });
    }
    let hmac = STANDARD
        .decode(&opts.hmac)
        .map_err(|e| malformed(format!("the pubopts hmac is not base64: {e}")))?;
    if hmac.len() != 32 {
        return Err(malformed(format!(
            "the pubopts hmac is {} bytes, HMAC-SHA256 is 32",
            hmac.len()
        )));
    }
    Ok(PublicOptions {
        cipher: opts.cipher,
        hmac,
    })
}

/// A layer's key, nonce and plaintext digest, unwrapped from its private options.
pub struct LayerKey {
    symkey: Zeroizing<[u8; 32]>,
    nonce: [u8; 16],
    digest: Digest,
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerKey")
            .field("symkey", &"<redacted>")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl LayerKey {
    /// The digest of the plaintext layer blob (what the layer becomes once decrypted).
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// The private options as ocicrypt serialises them (Go `[]byte` = standard base64).
#[derive(Serialize, Deserialize)]
struct PrivOptsJson {
    symkey: String,
    digest: String,
    #[serde(default)]
    cipheroptions: BTreeMap<String, String>,
}

impl Drop for PrivOptsJson {
    fn drop(&mut self) {
        self.symkey.zeroize();
    }
}

fn parse_private_options(json: &[u8], what: &str) -> Result<LayerKey, ImgcryptError> {
    let malformed = |reason: String| ImgcryptError::Malformed {
        what: what.to_owned(),
        reason,
    };
    let opts: PrivOptsJson = serde_json::from_slice(json)
        .map_err(|e| malformed(format!("the unwrapped private options are not JSON: {e}")))?;
    let symkey = Zeroizing::new(
        STANDARD
            .decode(&opts.symkey)
            .map_err(|_| malformed("the private options' symkey is not base64".into()))?,
    );
    let symkey: Zeroizing<[u8; 32]> = Zeroizing::new(
        symkey
            .as_slice()
            .try_into()
            .map_err(|_| malformed(format!("the layer key is {} bytes, not 32", symkey.len())))?,
    );
    let nonce = opts
        .cipheroptions
        .get("nonce")
        .ok_or_else(|| malformed("the private options have no cipheroptions.nonce".into()))?;
    let nonce = STANDARD
        .decode(nonce)
        .map_err(|_| malformed("the private options' nonce is not base64".into()))?;
    let nonce: [u8; 16] = nonce
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("the nonce is {} bytes, not 16", nonce.len())))?;
    let digest: Digest = opts.digest.parse().map_err(|e| {
        malformed(format!(
            "the private options' plaintext digest is unusable: {e}"
        ))
    })?;
    Ok(LayerKey {
        symkey,
        nonce,
        digest,
    })
}

fn private_options_json(key: &LayerKey) -> Result<Zeroizing<Vec<u8>>, ImgcryptError> {
    let mut cipheroptions = BTreeMap::new();
    cipheroptions.insert("nonce".to_owned(), STANDARD.encode(key.nonce));
    let opts = PrivOptsJson {
        symkey: STANDARD.encode(key.symkey.as_ref()),
        digest: key.digest.to_string(),
        cipheroptions,
    };
    serde_json::to_vec(&opts)
        .map(Zeroizing::new)
        .map_err(|e| ImgcryptError::Malformed {
            what: "private options".into(),
            reason: e.to_string(),
        })
}

/// Unwraps a layer's private options from one JWE entry with a recipient's private key.
pub fn unwrap_jwe(
    jwe: &[u8],
    key: &RecipientKey<'_>,
    what: &str,
) -> Result<LayerKey, ImgcryptError> {
    let json = enclave_vault::jose::decrypt_json(key, jwe).map_err(|e| jose_error(e, what))?;
    parse_private_options(&json, what)
}

pub(crate) fn jose_error(e: enclave_vault::JoseError, what: &str) -> ImgcryptError {
    use enclave_vault::JoseError as J;
    match e {
        J::Decrypt(_) | J::KeyMismatch { .. } | J::NoRecipient { .. } => ImgcryptError::WrongKey {
            what: what.to_owned(),
            reason: e.to_string(),
        },
        J::InvalidJwe(_) => ImgcryptError::Malformed {
            what: what.to_owned(),
            reason: e.to_string(),
        },
        other => ImgcryptError::Jose {
            what: what.to_owned(),
            source: other,
        },
    }
}

/// Unwraps a layer's private options from an attestation-agent packet with its KEK (the
/// 32-byte KBS resource `p.kid` names). Only `A256GCM`: `A256CTR`, which the packet format also
/// allows, is refused as unauthenticated (a flipped bit would change the layer key silently).
pub fn unwrap_packet(
    p: &AnnotationPacket,
    kek: &[u8],
    what: &str,
) -> Result<LayerKey, ImgcryptError> {
    if p.wrap_type != WRAP_A256GCM {
        let why = if p.wrap_type == "A256CTR" {
            " (unauthenticated: refused)"
        } else {
            ""
        };
        return Err(ImgcryptError::Unsupported {
            what: what.to_owned(),
            scheme: format!(
                "attestation-agent wrap_type '{}'{why}; only {WRAP_A256GCM}",
                p.wrap_type
            ),
        });
    }
    let malformed = |reason: String| ImgcryptError::Malformed {
        what: what.to_owned(),
        reason,
    };
    if kek.len() != 32 {
        return Err(ImgcryptError::WrongKey {
            what: what.to_owned(),
            reason: format!("the KEK {} is {} bytes; A256GCM needs 32", p.kid, kek.len()),
        });
    }
    let iv = STANDARD
        .decode(&p.iv)
        .map_err(|e| malformed(format!("the packet's iv is not base64: {e}")))?;
    let iv: [u8; 12] = iv
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("the packet's iv is {} bytes, not 12", iv.len())))?;
    let mut buf = Zeroizing::new(
        STANDARD
            .decode(&p.wrapped_data)
            .map_err(|e| malformed(format!("the packet's wrapped_data is not base64: {e}")))?,
    );
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).map_err(|_| {
        ImgcryptError::WrongKey {
            what: what.to_owned(),
            reason: "the KEK is not an AES-256 key".into(),
        }
    })?);
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut buf)
        .map_err(|_| ImgcryptError::WrongKey {
            what: what.to_owned(),
            reason: format!(
                "the A256GCM tag of the packet does not verify with the KEK {} (a different KEK, or the packet was altered)",
                p.kid
            ),
        })?;
    parse_private_options(plain, what)
}

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// The first of a layer's two passes: its HMAC over the ciphertext, fed in order to
/// [`update`](Self::update). [`verify`](Self::verify) compares it (in constant time) with the
/// public options' and only then hands out the [`LayerDecryptor`]: nothing of a layer can be
/// decrypted before its ciphertext is known to be the one encrypted with its key, so no
/// attacker-chosen bytes ever reach a decompressor, an unpacker or a store.
pub struct LayerAuthenticator {
    cipher: Aes256Ctr,
    hmac: ring::hmac::Context,
    expected_hmac: Vec<u8>,
    expected_digest: Digest,
    what: String,
}

impl LayerAuthenticator {
    /// The authenticator for the layer `what` with its key and public options.
    pub fn new(key: &LayerKey, public: &PublicOptions, what: &str) -> Result<Self, ImgcryptError> {
        if public.cipher != CIPHER_AES_256_CTR_HMAC_SHA256 {
            return Err(ImgcryptError::Unsupported {
                what: what.to_owned(),
                scheme: format!("layer cipher '{}'", public.cipher),
            });
        }
        if public.hmac.len() != 32 {
            return Err(ImgcryptError::Malformed {
                what: what.to_owned(),
                reason: format!("the HMAC is {} bytes, not 32", public.hmac.len()),
            });
        }
        Ok(Self {
            cipher: Aes256Ctr::new(key.symkey.as_ref().into(), (&key.nonce).into()),
            hmac: ring::hmac::Context::with_key(&ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                key.symkey.as_ref(),
            )),
            expected_hmac: public.hmac.clone(),
            expected_digest: key.digest,
            what: what.to_owned(),
        })
    }

    /// The next chunk of ciphertext.
    pub fn update(&mut self, ciphertext: &[u8]) {
        self.hmac.update(ciphertext);
    }

    /// Checks the HMAC over all the ciphertext fed; the decryptor for that same ciphertext.
    pub fn verify(self) -> Result<LayerDecryptor, ImgcryptError> {
        use subtle::ConstantTimeEq;
        let tag = self.hmac.sign();
        if !bool::from(tag.as_ref().ct_eq(&self.expected_hmac)) {
            return Err(ImgcryptError::Tampered {
                what: self.what,
                reason: "the HMAC over the ciphertext does not match: the encrypted layer was modified or its key is not the one it was encrypted with".into(),
            });
        }
        Ok(LayerDecryptor {
            cipher: self.cipher,
            plain: ring::digest::Context::new(&ring::digest::SHA256),
            expected_digest: self.expected_digest,
            what: self.what,
        })
    }
}

/// The second pass: decryption of a layer whose ciphertext [`LayerAuthenticator::verify`]
/// authenticated. Feed that same ciphertext, in order, to [`decrypt`](Self::decrypt);
/// [`finish`](Self::finish) checks that the plaintext hashes to the digest the layer's key
/// names. The caller must decrypt exactly the bytes it authenticated (keep them where it
/// alone can change them between the passes).
pub struct LayerDecryptor {
    cipher: Aes256Ctr,
    plain: ring::digest::Context,
    expected_digest: Digest,
    what: String,
}

impl LayerDecryptor {
    /// Decrypts the next chunk of ciphertext in place.
    pub fn decrypt(&mut self, chunk: &mut [u8]) {
        self.cipher.apply_keystream(chunk);
        self.plain.update(chunk);
    }

    /// Checks the plaintext digest; returns it.
    pub fn finish(self) -> Result<Digest, ImgcryptError> {
        self.check(None)
    }

    /// [`finish`](Self::finish), also accepting private options whose digest is `diff_id`,
    /// the uncompressed digest the caller computed from these same decrypted bytes (with
    /// `enclave_oci::DiffIdVerifier`). skopeo (containers/image) compresses an uncompressed
    /// layer while encrypting it and records the digest of the tar it was given, not of the
    /// gzip it encrypted; such a layer still names its content, one step removed.
    pub fn finish_with_diff_id(self, diff_id: &Digest) -> Result<Digest, ImgcryptError> {
        self.check(Some(diff_id))
    }

    fn check(self, diff_id: Option<&Digest>) -> Result<Digest, ImgcryptError> {
        let mut actual = [0u8; 32];
        actual.copy_from_slice(self.plain.finish().as_ref());
        let actual: Digest = format!("sha256:{}", hex_lower(&actual))
            .parse()
            .map_err(|e| ImgcryptError::Malformed {
                what: self.what.clone(),
                reason: format!("{e}"),
            })?;
        if actual != self.expected_digest && diff_id != Some(&self.expected_digest) {
            return Err(ImgcryptError::Digest {
                what: self.what,
                expected: self.expected_digest,
                actual,
            });
        }
        Ok(actual)
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Who a layer's key is wrapped to.
pub enum Recipient {
    /// A public key (EC P-256/P-384 or RSA): the private options as JWE.
    Jwe(TeePubKey),
    /// A KEK held by a KBS under `kid` (`kbs:///<repository>/<type>/<tag>`): an annotation packet.
    AttestationAgent {
        /// The KBS resource URI.
        kid: String,
        /// The 32-byte KEK.
        kek: Zeroizing<[u8; 32]>,
    },
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Jwe(k) => f.debug_tuple("Jwe").field(k).finish(),
            Recipient::AttestationAgent { kid, .. } => f
                .debug_struct("AttestationAgent")
                .field("kid", kid)
                .finish_non_exhaustive(),
        }
    }
}

fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, ImgcryptError> {
    let mut out = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(out.as_mut())
        .map_err(|_| ImgcryptError::Malformed {
            what: "the system random source".into(),
            reason: "it failed".into(),
        })?;
    Ok(out)
}

/// Encrypts one plaintext layer blob to `recipients` under a fresh key and nonce. Returns the
/// ciphertext (as long as the plaintext) and the annotations to add to its descriptor: the
/// public options and one annotation per scheme used (comma-separated entries, one per
/// recipient). `plain_digest` must be the blob's digest (checked: it goes into the private
/// options, where a wrong one would make every decryption fail).
pub fn encrypt_layer(
    plain: &[u8],
    plain_digest: &Digest,
    recipients: &[Recipient],
) -> Result<(Vec<u8>, BTreeMap<String, String>), ImgcryptError> {
    let what = format!("layer {plain_digest}");
    if recipients.is_empty() {
        return Err(ImgcryptError::NoKey { what });
    }
    let actual = Digest::of(plain);
    if actual != *plain_digest {
        return Err(ImgcryptError::Digest {
            what,
            expected: *plain_digest,
            actual,
        });
    }
    let symkey = random::<32>()?;
    let nonce = *random::<16>()?;
    let key = LayerKey {
        symkey,
        nonce,
        digest: *plain_digest,
    };
    let mut ciphertext = plain.to_vec();
    Aes256Ctr::new(key.symkey.as_ref().into(), (&key.nonce).into())
        .apply_keystream(&mut ciphertext);
    let hmac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.symkey.as_ref()),
        &ciphertext,
    );
    let pubopts = PubOptsJson {
        cipher: CIPHER_AES_256_CTR_HMAC_SHA256.into(),
        hmac: STANDARD.encode(hmac.as_ref()),
        cipheroptions: BTreeMap::new(),
    };
    let pubopts = serde_json::to_vec(&pubopts).map_err(|e| ImgcryptError::Malformed {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    let private = private_options_json(&key)?;

    let mut jwe = Vec::new();
    let mut packets = Vec::new();
    for recipient in recipients {
        match recipient {
            Recipient::Jwe(public) => {
                let response =
                    enclave_vault::jose::encrypt_with_header(public, &private, &Default::default())
                        .map_err(|e| jose_error(e, &what))?;
                let json = serde_json::to_vec(&response).map_err(|e| ImgcryptError::Malformed {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
                jwe.push(STANDARD.encode(json));
            }
            Recipient::AttestationAgent { kid, kek } => {
                let iv = *random::<12>()?;
                let sealing =
                    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek.as_ref()).map_err(
                        |_| ImgcryptError::Malformed {
                            what: format!("KEK {kid}"),
                            reason: "not an AES-256 key".into(),
                        },
                    )?);
                let mut wrapped = private.to_vec();
                sealing
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(iv),
                        Aad::empty(),
                        &mut wrapped,
                    )
                    .map_err(|_| ImgcryptError::Malformed {
                        what: format!("KEK {kid}"),
                        reason: "AES-256-GCM sealing failed".into(),
                    })?;
                let packet = AnnotationPacket {
                    kid: kid.clone(),
                    wrapped_data: STANDARD.encode(&wrapped),
                    iv: STANDARD.encode(iv),
                    wrap_type: WRAP_A256GCM.into(),
                };
                let json = serde_json::to_vec(&packet).map_err(|e| ImgcryptError::Malformed {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
                packets.push(STANDARD.encode(json));
            }
        }
    }
    let mut out = BTreeMap::new();
    out.insert(annotations::PUBOPTS.to_owned(), STANDARD.encode(pubopts));
    if !jwe.is_empty() {
        out.insert(annotations::JWE.to_owned(), jwe.join(","));
    }
    if !packets.is_empty() {
        out.insert(annotations::ATTESTATION_AGENT.to_owned(), packets.join(","));
    }
    Ok((ciphertext, out))
}

#[cfg(test)]
mod tests;
