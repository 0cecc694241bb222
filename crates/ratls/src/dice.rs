//! TCG DICE tagged evidence (OID 2.23.133.5.4.9), as Gramine and rats-tls write it, following the
//! CCC "interoperable RA-TLS" draft: the extension's value is CBOR tag 60000 (a DCAP quote) around
//! the array `[bstr evidence, bstr claims]`. `claims` is a CBOR map; its `pubkey-hash` entry is
//! `[hash-alg-id, hash]` (1 SHA-256, 7 SHA-384, 8 SHA-512) over the certificate's
//! SubjectPublicKeyInfo, written either as that array or as a bstr holding its CBOR encoding; an
//! optional `nonce` entry is a bstr. The quote's report_data[0..32] is SHA-256(claims).

use ciborium::value::Value;

use crate::cert::RatlsError;

/// CBOR tag of tagged evidence that holds an Intel DCAP quote.
pub const TAG_DCAP_QUOTE: u64 = 60000;

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
}

fn bad(reason: impl Into<String>) -> RatlsError {
    RatlsError::Dice(reason.into())
}

fn pubkey_hash(v: &Value) -> Result<(HashAlg, Vec<u8>), RatlsError> {
    let decoded;
    let arr = match v {
        Value::Array(a) => a,
        Value::Bytes(b) => {
            decoded = ciborium::de::from_reader::<Value, _>(b.as_slice())
                .map_err(|e| bad(format!("pubkey-hash bstr is not CBOR: {e}")))?;
            decoded
                .as_array()
                .ok_or_else(|| bad("pubkey-hash is not [alg, hash]"))?
        }
        _ => return Err(bad("pubkey-hash is neither an array nor a bstr")),
    };
    let [alg, hash] = arr.as_slice() else {
        return Err(bad("pubkey-hash is not a two-element [alg, hash]"));
    };
    let id: i128 = alg
        .as_integer()
        .ok_or_else(|| bad("pubkey-hash algorithm is not an integer"))?
        .into();
    let alg = HashAlg::from_id(id).ok_or_else(|| {
        bad(format!(
            "pubkey-hash algorithm {id} is not SHA-256 (1), SHA-384 (7) or SHA-512 (8)"
        ))
    })?;
    let hash = hash
        .as_bytes()
        .ok_or_else(|| bad("pubkey-hash value is not a bstr"))?
        .clone();
    Ok((alg, hash))
}

/// Decode the value of a DICE tagged-evidence extension.
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
    let get = |k: &str| {
        entries
            .iter()
            .find(|(key, _)| key.as_text() == Some(k))
            .map(|(_, v)| v)
    };
    let pubkey_hash =
        pubkey_hash(get("pubkey-hash").ok_or_else(|| bad("claims have no pubkey-hash"))?)?;
    let nonce = match get("nonce") {
        None => None,
        Some(n) => Some(
            n.as_bytes()
                .ok_or_else(|| bad("nonce is not a bstr"))?
                .clone(),
        ),
    };
    Ok(TaggedEvidence {
        tag,
        evidence,
        claims: claims_raw,
        pubkey_hash,
        nonce,
    })
}
