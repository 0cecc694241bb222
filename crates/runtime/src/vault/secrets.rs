//! Where the vault keeps what it holds: the sealed store's `sys/vault` namespace.
//!
//! | key | value |
//! |---|---|
//! | `secret/<repo>/<type>/<tag>` | the secret's bytes, as the operator put them |
//! | `key/<name>` | a key generated inside the TEE (`enclave_vault::keys`, its sealed encoding) |
//! | `token-key` | the key attestation tokens are signed with |
//!
//! The store seals every value (AEAD bound to namespace and key), keeps the namespace under the
//! rollback counter, and never lets a value out except through these functions; values are
//! returned in `Zeroizing` buffers and never logged.

use enclave_store::{Store, StoreError};
use zeroize::Zeroizing;

/// The vault's namespace in the sealed store.
pub(crate) const NAMESPACE: &str = "sys/vault";

/// The largest secret kept: secrets are keys, passwords and tokens, not files.
pub(crate) const MAX_SECRET_BYTES: usize = 64 * 1024;

const SECRET: &str = "secret/";
const KEY: &str = "key/";
const TOKEN_KEY: &[u8] = b"token-key";

/// A resource path checked as `<repo>/<type>/<tag>`, each segment a name.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() != 3 {
        return Err(format!(
            "'{path}' is not <repo>/<type>/<tag> (three segments)"
        ));
    }
    for p in parts {
        enclave_config::vault::check_name(p).map_err(|e| format!("resource '{path}': {e}"))?;
    }
    Ok(())
}

/// Keep secret `path` (checked) with `value`.
pub(crate) fn put_secret(store: &Store, path: &str, value: &[u8]) -> Result<u64, StoreError> {
    store.put(NAMESPACE, format!("{SECRET}{path}").as_bytes(), value)
}

/// Secret `path`, if kept.
pub(crate) fn secret(store: &Store, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    store.get(NAMESPACE, format!("{SECRET}{path}").as_bytes())
}

/// Remove secret `path`; whether it was there.
pub(crate) fn delete_secret(store: &Store, path: &str) -> Result<bool, StoreError> {
    let key = format!("{SECRET}{path}");
    if store.get(NAMESPACE, key.as_bytes())?.is_none() {
        return Ok(false);
    }
    store.delete(NAMESPACE, key.as_bytes())?;
    Ok(true)
}

/// The names kept under `prefix`, prefix removed.
fn names(store: &Store, prefix: &str) -> Result<Vec<String>, StoreError> {
    Ok(store
        .keys(NAMESPACE)?
        .into_iter()
        .filter_map(|k| String::from_utf8(k).ok())
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
        .collect())
}

/// Every secret's path.
pub(crate) fn secret_paths(store: &Store) -> Result<Vec<String>, StoreError> {
    names(store, SECRET)
}

/// Every key's name.
pub(crate) fn key_names(store: &Store) -> Result<Vec<String>, StoreError> {
    names(store, KEY)
}

/// Key `name`, if kept.
pub(crate) fn key(
    store: &Store,
    name: &str,
) -> Result<Option<enclave_vault::keys::VaultKey>, String> {
    let Some(bytes) = store
        .get(NAMESPACE, format!("{KEY}{name}").as_bytes())
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    enclave_vault::keys::VaultKey::from_sealed_bytes(&bytes)
        .map(Some)
        .map_err(|e| format!("key '{name}' as kept does not read: {e}"))
}

/// Keep key `name`.
pub(crate) fn put_key(
    store: &Store,
    name: &str,
    key: &enclave_vault::keys::VaultKey,
) -> Result<u64, String> {
    let bytes = key.to_sealed_bytes().map_err(|e| e.to_string())?;
    store
        .put(NAMESPACE, format!("{KEY}{name}").as_bytes(), &bytes)
        .map_err(|e| e.to_string())
}

/// Remove key `name`; whether it was there.
pub(crate) fn delete_key(store: &Store, name: &str) -> Result<bool, StoreError> {
    let k = format!("{KEY}{name}");
    if store.get(NAMESPACE, k.as_bytes())?.is_none() {
        return Ok(false);
    }
    store.delete(NAMESPACE, k.as_bytes())?;
    Ok(true)
}

/// The token-signing key: the kept one, or one generated now and kept before it is used.
pub(crate) fn token_key(store: &Store) -> Result<enclave_vault::token::TokenKey, String> {
    if let Some(bytes) = store.get(NAMESPACE, TOKEN_KEY).map_err(|e| e.to_string())? {
        return enclave_vault::token::TokenKey::from_sealed_bytes(&bytes)
            .map_err(|e| format!("the vault's token key as kept does not read: {e}"));
    }
    let key = enclave_vault::token::TokenKey::generate().map_err(|e| e.to_string())?;
    store
        .put(NAMESPACE, TOKEN_KEY, &key.to_sealed_bytes())
        .map_err(|e| e.to_string())?;
    tracing::info!(kid = %key.kid(), "vault token-signing key generated inside the TEE");
    Ok(key)
}
