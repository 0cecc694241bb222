//! Encrypted WebAssembly components: a flattened JWE (JSON serialization) whose protected
//! header is `{alg, enc, cty: "application/wasm", kid?}`. `kid` names the vault key the
//! component was encrypted to, so a loader can ask for that key without decrypting anything;
//! it is authenticated with the content, like `cty`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enclave_vault::RecipientKey;
use kbs_types::TeePubKey;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::{ImgcryptError, jose_error};

/// The `cty` of an encrypted component.
pub const WASM_CTY: &str = "application/wasm";

const WASM_MAGIC: &[u8] = b"\0asm";
const WHAT: &str = "encrypted component";

/// Encrypts a wasm binary (module or component: it must start with `\0asm`) to `recipient` as
/// a flattened JWE, protected header `{alg, enc, cty, kid?}`.
pub fn encrypt_component(
    wasm: &[u8],
    recipient: &TeePubKey,
    kid: Option<&str>,
) -> Result<Vec<u8>, ImgcryptError> {
    if !wasm.starts_with(WASM_MAGIC) {
        return Err(ImgcryptError::Malformed {
            what: "component".into(),
            reason: "not a WebAssembly binary (it does not start with \\0asm)".into(),
        });
    }
    let mut extra = Map::new();
    extra.insert("cty".into(), Value::String(WASM_CTY.into()));
    if let Some(kid) = kid {
        extra.insert("kid".into(), Value::String(kid.into()));
    }
    let response = enclave_vault::jose::encrypt_with_header(recipient, wasm, &extra)
        .map_err(|e| jose_error(e, "component"))?;
    serde_json::to_vec(&response).map_err(|e| ImgcryptError::Malformed {
        what: "component".into(),
        reason: e.to_string(),
    })
}

/// Whether `bytes` look like an encrypted component (a JSON object), not a wasm binary.
pub fn is_encrypted_component(bytes: &[u8]) -> bool {
    !bytes.starts_with(WASM_MAGIC)
        && bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{')
}

fn protected_header(jwe: &[u8]) -> Result<Map<String, Value>, ImgcryptError> {
    let malformed = |reason: String| ImgcryptError::Malformed {
        what: WHAT.into(),
        reason,
    };
    let doc: Value = serde_json::from_slice(jwe)
        .map_err(|e| malformed(format!("not a JWE in JSON serialization: {e}")))?;
    let protected = doc
        .get("protected")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no `protected` header".into()))?;
    let raw = URL_SAFE_NO_PAD
        .decode(protected)
        .map_err(|_| malformed("`protected` is not base64url".into()))?;
    match serde_json::from_slice(&raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(malformed("`protected` is not a JSON object".into())),
    }
}

/// The protected header's `kid` (the vault key the component was encrypted to), read without
/// decrypting. `None` if it names none. The value is only a hint until decryption succeeds.
pub fn component_kid(jwe: &[u8]) -> Result<Option<String>, ImgcryptError> {
    match protected_header(jwe)?.get("kid") {
        None => Ok(None),
        Some(Value::String(kid)) => Ok(Some(kid.clone())),
        Some(_) => Err(ImgcryptError::Malformed {
            what: WHAT.into(),
            reason: "`kid` is not a string".into(),
        }),
    }
}

/// Decrypts an encrypted component: the protected `cty` must be `application/wasm` and the
/// plaintext a wasm binary.
pub fn decrypt_component(
    jwe: &[u8],
    key: &RecipientKey<'_>,
) -> Result<Zeroizing<Vec<u8>>, ImgcryptError> {
    let header = protected_header(jwe)?;
    match header.get("cty").and_then(Value::as_str) {
        Some(WASM_CTY) => {}
        other => {
            return Err(ImgcryptError::Malformed {
                what: WHAT.into(),
                reason: format!(
                    "the protected `cty` is {}, not {WASM_CTY}",
                    other.map_or("absent".to_owned(), |c| format!("'{c}'"))
                ),
            });
        }
    }
    let plain = enclave_vault::jose::decrypt_json(key, jwe).map_err(|e| jose_error(e, WHAT))?;
    if !plain.starts_with(WASM_MAGIC) {
        return Err(ImgcryptError::Malformed {
            what: WHAT.into(),
            reason: "the decrypted content is not a WebAssembly binary".into(),
        });
    }
    Ok(plain)
}
