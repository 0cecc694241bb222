//! TCG DICE tagged evidence (OID 2.23.133.5.4.9), as Gramine and rats-tls write and read it,
//! following the CCC "interoperable RA-TLS" draft.
//!
//! The extension's value is CBOR tag 60000 (an Intel DCAP quote, SGX or TDX) around the array
//! `[bstr evidence, bstr claims]`. `claims` is a definite CBOR map whose keys are text strings and
//! whose values are all byte strings (rats-tls rejects any other value). Its `pubkey-hash` entry is
//! a bstr holding the CBOR encoding of `[hash-alg-id, hash]` (1 SHA-256, 7 SHA-384, 8 SHA-512) over
//! the certificate's SubjectPublicKeyInfo, the hash as long as its algorithm's output; an optional
//! `nonce` entry binds freshness. The evidence's `report_data[0..32]` is SHA-256 of the claims
//! exactly as encoded. The two certificates under `testdata/vectors/ratls` (Gramine, rats-tls)
//! follow these rules, and [`decode`] enforces each of them.
//!
//! Enclave OS leaves in the DICE binding ([`crate::binding::BindingFormat::Dice`]) add claims of
//! their own, so that the evidence itself binds what the certificate's extensions say
//! ([`CLAIM_CONFIG_ROOT`], [`CLAIM_WORKLOAD_ROOT`], [`CLAIM_WORKLOAD_CODE`]), and leave
//! `report_data[32..64]` zero, as both foreign certificates do.

use std::collections::BTreeMap;

use ciborium::value::{Integer, Value};

use crate::cert::RatlsError;

/// CBOR tag of tagged evidence that holds an Intel DCAP quote.
pub const TAG_DCAP_QUOTE: u64 = 60000;

/// The claim that hashes the certificate's SubjectPublicKeyInfo.
pub const CLAIM_PUBKEY_HASH: &str = "pubkey-hash";
/// The claim that carries the freshness binding (Enclave OS: notBefore or the client's nonce).
pub const CLAIM_NONCE: &str = "nonce";
/// Enclave OS: the config Merkle root (32 bytes), equal to the certificate's OID 1.3.6.1.4.1.65230.1.1.
pub const CLAIM_CONFIG_ROOT: &str = "enclave-os-config-root";
/// Enclave OS, on a workload's certificate: the workload's own config root (OID …65230.3.1).
pub const CLAIM_WORKLOAD_ROOT: &str = "enclave-os-workload-root";
/// Enclave OS, on a workload's certificate: SHA-256 of its code (OID …65230.3.2).
pub const CLAIM_WORKLOAD_CODE: &str = "enclave-os-workload-code";
/// Enclave OS, on an encrypted component's certificate: SHA-256 of the component it decrypted
/// to (OID …65230.3.7 without an image).
pub const CLAIM_WORKLOAD_PLAINTEXT: &str = "enclave-os-workload-plaintext";
/// Enclave OS, on encrypted code's certificate: its key reference (OID …65230.3.9), UTF-8.
pub const CLAIM_WORKLOAD_KEY_REFERENCE: &str = "enclave-os-workload-key-reference";

/// The hash algorithms the `pubkey-hash` claim may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlg {
    /// IANA named-information id 1.
    Sha256,
    /// Id 7.
    Sha384,
    /// Id 8.
    Sha512,
}

impl HashAlg {
    fn from_id(id: i128) -> Option<Self> {
        match id {
            1 => Some(HashAlg::Sha256),
            7 => Some(HashAlg::Sha384),
            8 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Hash `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use ring::digest::{SHA256, SHA384, SHA512, digest};
        let alg = match self {
            HashAlg::Sha256 => &SHA256,
            HashAlg::Sha384 => &SHA384,
            HashAlg::Sha512 => &SHA512,
        };
        digest(alg, data).as_ref().to_vec()
    }
}

/// Decoded tagged evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedEvidence {
    /// The CBOR tag (60000 for a DCAP quote).
    pub tag: u64,
    /// The evidence (a quote).
    pub evidence: Vec<u8>,
    /// The claims, exactly as encoded (their SHA-256 is what the evidence binds).
    pub claims: Vec<u8>,
    /// The `pubkey-hash` claim.
    pub pubkey_hash: (HashAlg, Vec<u8>),
    /// The `nonce` claim, when present.
    pub nonce: Option<Vec<u8>>,
    /// Every other claim, by name (rats-tls's "custom claims"; Enclave OS's own among them).
    pub other: BTreeMap<String, Vec<u8>>,
}

impl TaggedEvidence {
    /// A claim other than `pubkey-hash` and `nonce`, by name.
    pub fn claim(&self, name: &str) -> Option<&[u8]> {
        self.other.get(name).map(Vec::as_slice)
    }

    /// Whether the claims carry any of Enclave OS's own claims.
    pub fn has_enclave_os_claims(&self) -> bool {
        self.other.keys().any(|k| k.starts_with("enclave-os-"))
    }
}

fn bad(reason: impl Into<String>) -> RatlsError {
    RatlsError::Dice(reason.into())
}

/// The `pubkey-hash` value: a bstr holding the CBOR encoding of `[alg, hash]`.
fn pubkey_hash(value: &[u8]) -> Result<(HashAlg, Vec<u8>), RatlsError> {
    let decoded: Value = ciborium::de::from_reader(value)
        .map_err(|e| bad(format!("the pubkey-hash bstr does not hold CBOR: {e}")))?;
    let arr = decoded
        .as_array()
        .ok_or_else(|| bad("the pubkey-hash bstr does not hold an array [alg, hash]"))?;
    let [alg, hash] = arr.as_slice() else {
        return Err(bad(format!(
            "pubkey-hash holds {} items, not [alg, hash]",
            arr.len()
        )));
    };
    let id: i128 = alg
        .as_integer()
        .ok_or_else(|| bad("the pubkey-hash algorithm is not an integer"))?
        .into();
    let alg = HashAlg::from_id(id).ok_or_else(|| {
        bad(format!(
            "pubkey-hash algorithm {id} is not SHA-256 (1), SHA-384 (7) or SHA-512 (8)"
        ))
    })?;
    let hash = hash
        .as_bytes()
        .ok_or_else(|| bad("the pubkey-hash value is not a bstr"))?
        .clone();
    if hash.len() != alg.len() {
        return Err(bad(format!(
            "the pubkey-hash value is {} bytes, not the {} of {alg:?}",
            hash.len(),
            alg.len()
        )));
    }
    Ok((alg, hash))
}

/// Decode the value of a DICE tagged-evidence extension, enforcing the rules in the module
/// documentation; each rejection names the rule.
pub fn decode(ext_value: &[u8]) -> Result<TaggedEvidence, RatlsError> {
    let v: Value =
        ciborium::de::from_reader(ext_value).map_err(|e| bad(format!("not CBOR: {e}")))?;
    let Value::Tag(tag, inner) = v else {
        return Err(bad("not a CBOR tag"));
    };
    let Value::Array(items) = *inner else {
        return Err(bad(format!("tag {tag} does not wrap an array")));
    };
    let [evidence, claims] = items.as_slice() else {
        return Err(bad(format!(
            "tag {tag} wraps {} items, not [evidence, claims]",
            items.len()
        )));
    };
    let evidence = evidence
        .as_bytes()
        .ok_or_else(|| bad("evidence is not a bstr"))?
        .clone();
    let claims_raw = claims
        .as_bytes()
        .ok_or_else(|| bad("claims are not a bstr"))?
        .clone();
    let map: Value = ciborium::de::from_reader(claims_raw.as_slice())
        .map_err(|e| bad(format!("claims are not CBOR: {e}")))?;
    let entries = map
        .as_map()
        .ok_or_else(|| bad("claims are not a CBOR map"))?;
    let mut named = BTreeMap::new();
    for (i, (key, value)) in entries.iter().enumerate() {
        let key = key
            .as_text()
            .ok_or_else(|| bad(format!("claim #{i}: its name is not a text string")))?;
        let value = value.as_bytes().ok_or_else(|| {
            bad(format!(
                "claim '{key}' is not a bstr (every claim value is a byte string in the interoperable RA-TLS format)"
            ))
        })?;
        // Two entries of one name would let two verifiers read two different values.
        if named.insert(key.to_string(), value.clone()).is_some() {
            return Err(bad(format!("claim '{key}' appears twice")));
        }
    }
    let pubkey_hash = pubkey_hash(
        &named
            .remove(CLAIM_PUBKEY_HASH)
            .ok_or_else(|| bad("claims have no pubkey-hash"))?,
    )?;
    let nonce = named.remove(CLAIM_NONCE);
    Ok(TaggedEvidence {
        tag,
        evidence,
        claims: claims_raw,
        pubkey_hash,
        nonce,
        other: named,
    })
}

/// Encode the claims of an Enclave OS leaf: `pubkey-hash` (SHA-256 of `spki`, as a bstr holding
/// `[1, hash]`), `nonce` = `binding`, and `extra` claims, as a map in deterministic CBOR order
/// (RFC 8949 §4.2.1: keys sorted by their encoding, which for text keys means shorter first,
/// then bytewise).
pub fn encode_claims(
    spki: &[u8],
    binding: &[u8],
    extra: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>, RatlsError> {
    let mut hash_entry = Vec::new();
    ciborium::ser::into_writer(
        &Value::Array(vec![
            Value::Integer(Integer::from(1u8)),
            Value::Bytes(HashAlg::Sha256.digest(spki)),
        ]),
        &mut hash_entry,
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut entries: Vec<(&str, Vec<u8>)> = vec![
        (CLAIM_PUBKEY_HASH, hash_entry),
        (CLAIM_NONCE, binding.to_vec()),
    ];
    for (name, value) in extra {
        if entries.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("claim '{name}' given twice")));
        }
        entries.push((name, value.clone()));
    }
    entries.sort_by(|(a, _), (b, _)| (a.len(), a.as_bytes()).cmp(&(b.len(), b.as_bytes())));
    let map = Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_string()), Value::Bytes(v)))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::ser::into_writer(&map, &mut out).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

/// The report data that binds `claims`: SHA-256 of the claims, then 32 zero bytes.
pub fn report_data(claims: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&HashAlg::Sha256.digest(claims));
    out
}

/// The extension value: tag 60000 around `[evidence, claims]`.
pub fn encode(evidence: &[u8], claims: &[u8]) -> Result<Vec<u8>, RatlsError> {
    let tagged = Value::Tag(
        TAG_DCAP_QUOTE,
        Box::new(Value::Array(vec![
            Value::Bytes(evidence.to_vec()),
            Value::Bytes(claims.to_vec()),
        ])),
    );
    let mut out = Vec::new();
    ciborium::ser::into_writer(&tagged, &mut out).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}
