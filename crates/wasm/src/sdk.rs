//! The SDK's host side: `enclave-os:sdk` (`wit/sdk.wit`) bound with wasmtime's bindgen.
//!
//! The semantics live here (names and sizes checked, report data derived, keys used); the
//! state lives behind [`Services`], which the runtime implements over its sealed store, its TEE
//! and its certificates. Every call carries the app's name as the runtime knows it; nothing a
//! component passes selects another app.

use std::sync::Arc;

use wasmtime::component::HasData;
use zeroize::Zeroizing;

use crate::keys::{Algorithm, KeyError, KeyRecord};

/// The generated host bindings; private, since the runtime needs only [`Services`].
mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        path: "wit",
        world: "imports",
        imports: { default: async },
    });
}

use bindings::Imports;
use bindings::enclave_os::sdk::{attestation, keys, kv, secrets};

/// The longest key-value key, in bytes.
pub const MAX_KEY: usize = 1024;
/// The largest key-value value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// The most data an app may bind into evidence.
pub const MAX_EVIDENCE_DATA: usize = 64 << 10;
/// The most certificate extensions an app may declare, and the largest.
pub const MAX_EXTENSIONS: usize = 16;
/// The largest declared extension value, in bytes.
pub const MAX_EXTENSION: usize = 4096;
const MAX_KEY_NAME: usize = 256;
/// The domain label of app evidence: see `attestation.attest` in `wit/sdk.wit`.
pub const EVIDENCE_LABEL: &[u8] = b"enclave-os/sdk/attestation/v1";
const KEYS_AAD_LABEL: &[u8] = b"enclave-os/sdk/keys/v1";

/// Which of an app's two sealed namespaces a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// What `kv` reads and writes.
    Kv,
    /// Where `keys` keeps key records; `kv` cannot reach it.
    Keys,
}

/// Evidence from the TEE, as the SDK returns it.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// `sgx`, `tdx`, `snp`, `azure-snp` or `azure-tdx`.
    pub tee: String,
    /// Whether the simulator produced it.
    pub simulated: bool,
    /// The quote or report.
    pub quote: Vec<u8>,
}

/// Why the runtime could not do what an app asked through the SDK. The app sees the message;
/// the runtime keeps the source for its log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The sealed store failed or refused (its error is the source).
    #[error("sealed store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The TEE could not produce evidence.
    #[error("evidence: {0}")]
    Evidence(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The app asked for something it may not have (why).
    #[error("{0}")]
    Refused(String),
    /// The runtime cannot do it now: stopping, or no sealed services on this host.
    #[error("{0}")]
    Unavailable(String),
}

/// What the SDK needs from the runtime. Calls may block (a durable write waits for the disk);
/// the SDK makes them off the async executor.
pub trait Services: Send + Sync + 'static {
    /// The value under `key` in `app`'s `space`.
    fn get(
        &self,
        app: &str,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ServiceError>;
    /// Store `value` durably.
    fn put(&self, app: &str, space: Space, key: &[u8], value: &[u8]) -> Result<(), ServiceError>;
    /// Remove `key`; whether it was there.
    fn delete(&self, app: &str, space: Space, key: &[u8]) -> Result<bool, ServiceError>;
    /// Every key in `app`'s `space`.
    fn keys(&self, app: &str, space: Space) -> Result<Vec<Vec<u8>>, ServiceError>;
    /// Evidence binding `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ServiceError>;
    /// Declare (or with `None` remove) extension 1.3.6.1.4.1.65230.3.5.`index` in `app`'s
    /// certificate, and reissue it. `code_sha256` is the declaring component's: a request still
    /// running in a component that was since replaced must not put claims into its
    /// successor's certificate, so the runtime refuses a declaration from any code but the
    /// one it serves under that name.
    fn set_extension(
        &self,
        app: &str,
        code_sha256: &[u8; 32],
        index: u32,
        value: Option<&[u8]>,
    ) -> Result<(), ServiceError>;
    /// The vault's secret at `path` for `app` running `code_sha256`, if a committed policy
    /// gives it (`Refused` with the reason otherwise); `None` when allowed and not kept.
    fn secret(
        &self,
        app: &str,
        code_sha256: &[u8; 32],
        path: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ServiceError> {
        let _ = (app, code_sha256, path);
        Err(ServiceError::Unavailable("this host has no vault".into()))
    }
}

/// The report data of app evidence over `data`.
pub fn evidence_report_data(app: &str, data: &[u8]) -> [u8; 64] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(EVIDENCE_LABEL);
    ctx.update(&(app.len() as u32).to_be_bytes());
    ctx.update(app.as_bytes());
    ctx.update(data);
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// One request's view of the SDK.
pub(crate) struct SdkCtx {
    pub(crate) app: Arc<str>,
    /// The code hash of the component this request runs in.
    pub(crate) code_sha256: [u8; 32],
    pub(crate) services: Option<Arc<dyn Services>>,
    /// Serialises key creation, so that two requests creating the same name cannot both win.
    pub(crate) key_lock: Arc<tokio::sync::Mutex<()>>,
}

/// The `HasData` marker the linker uses to reach a store's [`SdkCtx`].
pub(crate) struct Sdk;

impl HasData for Sdk {
    type Data<'a> = &'a mut SdkCtx;
}

pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut SdkCtx,
) -> wasmtime::Result<()> {
    Imports::add_to_linker::<T, Sdk>(linker, get)
}

impl SdkCtx {
    /// Run `f` with the services, off the executor.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Services, &str) -> Result<R, ServiceError> + Send + 'static,
    ) -> Result<R, ServiceError> {
        let services = self.services.clone().ok_or_else(|| {
            ServiceError::Unavailable(
                "this host has no sealed services: the SDK is unavailable".into(),
            )
        })?;
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || f(services.as_ref(), &app))
            .await
            .map_err(|e| ServiceError::Unavailable(format!("the runtime's worker failed: {e}")))?
    }

    async fn key(&self, name: &str) -> Result<KeyRecord, keys::Error> {
        check_key_name(name)?;
        let key = name.as_bytes().to_vec();
        let stored = self
            .call(move |s, app| s.get(app, Space::Keys, &key))
            .await
            .map_err(|e| keys::Error::Store(e.to_string()))?
            .ok_or_else(|| keys::Error::NotFound(format!("no key is named '{name}'")))?;
        KeyRecord::decode(&stored).map_err(key_err)
    }

    async fn create(&self, name: String, record: KeyRecord) -> Result<(), keys::Error> {
        check_key_name(&name)?;
        let _guard = self.key_lock.lock().await;
        let encoded = record.encode();
        self.call(move |s, app| {
            if s.get(app, Space::Keys, name.as_bytes())?.is_some() {
                return Ok(Err(keys::Error::Exists(format!(
                    "a key is already named '{name}'; delete it first"
                ))));
            }
            s.put(app, Space::Keys, name.as_bytes(), &encoded).map(Ok)
        })
        .await
        .map_err(|e| keys::Error::Store(e.to_string()))?
    }

    /// The AEAD context of `name`: the app and key names, so that a ciphertext opens only
    /// under the key and app that made it.
    fn aead_context(&self, name: &str) -> Vec<u8> {
        let mut out = KEYS_AAD_LABEL.to_vec();
        for part in [self.app.as_bytes(), name.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

fn check_kv_key(key: &str) -> Result<(), kv::Error> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(kv::Error::InvalidKey(format!(
            "a key is 1 to {MAX_KEY} bytes; this one is {}",
            key.len()
        )));
    }
    Ok(())
}

fn check_key_name(name: &str) -> Result<(), keys::Error> {
    if name.is_empty() || name.len() > MAX_KEY_NAME {
        return Err(keys::Error::Invalid(format!(
            "a key name is 1 to {MAX_KEY_NAME} bytes; this one is {}",
            name.len()
        )));
    }
    Ok(())
}

fn key_err(e: KeyError) -> keys::Error {
    match e {
        KeyError::Invalid(s) => keys::Error::Invalid(s),
        KeyError::WrongAlgorithm(s) => keys::Error::WrongAlgorithm(s),
    }
}

fn to_wit(a: Algorithm) -> keys::Algorithm {
    match a {
        Algorithm::EcdsaP256 => keys::Algorithm::EcdsaP256,
        Algorithm::Ed25519 => keys::Algorithm::Ed25519,
        Algorithm::Aes256Gcm => keys::Algorithm::Aes256Gcm,
    }
}

fn from_wit(a: keys::Algorithm) -> Algorithm {
    match a {
        keys::Algorithm::EcdsaP256 => Algorithm::EcdsaP256,
        keys::Algorithm::Ed25519 => Algorithm::Ed25519,
        keys::Algorithm::Aes256Gcm => Algorithm::Aes256Gcm,
    }
}

impl kv::Host for SdkCtx {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::Error> {
        check_kv_key(&key)?;
        self.call(move |s, app| s.get(app, Space::Kv, key.as_bytes()))
            .await
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| kv::Error::Store(e.to_string()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::Error> {
        check_kv_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(kv::Error::TooLarge(format!(
                "a value is at most {MAX_VALUE} bytes; this one is {}",
                value.len()
            )));
        }
        self.call(move |s, app| s.put(app, Space::Kv, key.as_bytes(), &value))
            .await
            .map_err(|e| kv::Error::Store(e.to_string()))
    }

    async fn delete(&mut self, key: String) -> Result<bool, kv::Error> {
        check_kv_key(&key)?;
        self.call(move |s, app| s.delete(app, Space::Kv, key.as_bytes()))
            .await
            .map_err(|e| kv::Error::Store(e.to_string()))
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, kv::Error> {
        let mut out: Vec<String> = self
            .call(|s, app| s.keys(app, Space::Kv))
            .await
            .map_err(|e| kv::Error::Store(e.to_string()))?
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .filter(|k| k.starts_with(&prefix))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl attestation::Host for SdkCtx {
    async fn attest(&mut self, data: Vec<u8>) -> Result<attestation::Evidence, String> {
        if data.len() > MAX_EVIDENCE_DATA {
            return Err(format!(
                "evidence binds at most {MAX_EVIDENCE_DATA} bytes of data; this is {}",
                data.len()
            ));
        }
        let report_data = evidence_report_data(&self.app, &data);
        let e = self
            .call(move |s, _| s.evidence(&report_data))
            .await
            .map_err(|e| e.to_string())?;
        Ok(attestation::Evidence {
            tee: e.tee,
            simulated: e.simulated,
            quote: e.quote,
            report_data: report_data.to_vec(),
        })
    }

    async fn set_certificate_extension(
        &mut self,
        index: u32,
        value: Option<Vec<u8>>,
    ) -> Result<(), String> {
        if let Some(v) = &value
            && v.len() > MAX_EXTENSION
        {
            return Err(format!(
                "a declared extension is at most {MAX_EXTENSION} bytes; this one is {}",
                v.len()
            ));
        }
        let code = self.code_sha256;
        self.call(move |s, app| s.set_extension(app, &code, index, value.as_deref()))
            .await
            .map_err(|e| e.to_string())
    }
}

impl keys::Host for SdkCtx {
    async fn generate(
        &mut self,
        name: String,
        algorithm: keys::Algorithm,
    ) -> Result<(), keys::Error> {
        let record = KeyRecord::generate(from_wit(algorithm)).map_err(key_err)?;
        self.create(name, record).await
    }

    async fn import_key(
        &mut self,
        name: String,
        algorithm: keys::Algorithm,
        material: Vec<u8>,
    ) -> Result<(), keys::Error> {
        let material = Zeroizing::new(material);
        let record = KeyRecord::import(from_wit(algorithm), &material).map_err(key_err)?;
        self.create(name, record).await
    }

    async fn algorithm_of(&mut self, name: String) -> Result<keys::Algorithm, keys::Error> {
        Ok(to_wit(self.key(&name).await?.algorithm()))
    }

    async fn public_key(&mut self, name: String) -> Result<Vec<u8>, keys::Error> {
        self.key(&name).await?.public_key().map_err(key_err)
    }

    async fn sign(&mut self, name: String, message: Vec<u8>) -> Result<Vec<u8>, keys::Error> {
        self.key(&name).await?.sign(&message).map_err(key_err)
    }

    async fn verify(
        &mut self,
        name: String,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, keys::Error> {
        self.key(&name)
            .await?
            .verify(&message, &signature)
            .map_err(key_err)
    }

    async fn encrypt(
        &mut self,
        name: String,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<Vec<u8>, keys::Error> {
        let plaintext = Zeroizing::new(plaintext);
        self.key(&name)
            .await?
            .encrypt(&self.aead_context(&name), &plaintext, &aad)
            .map_err(key_err)
    }

    async fn decrypt(
        &mut self,
        name: String,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
    ) -> Result<Vec<u8>, keys::Error> {
        // The plaintext leaves for the guest's memory, which the runtime cannot zeroize.
        self.key(&name)
            .await?
            .decrypt(&self.aead_context(&name), &ciphertext, &aad)
            .map(|p| p.to_vec())
            .map_err(key_err)
    }

    async fn delete(&mut self, name: String) -> Result<bool, keys::Error> {
        check_key_name(&name)?;
        self.call(move |s, app| s.delete(app, Space::Keys, name.as_bytes()))
            .await
            .map_err(|e| keys::Error::Store(e.to_string()))
    }
}

impl secrets::Host for SdkCtx {
    async fn get(&mut self, path: String) -> Result<Vec<u8>, secrets::Error> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(secrets::Error::Invalid(format!(
                "'{path}' is not <repo>/<type>/<tag>"
            )));
        }
        let code = self.code_sha256;
        let asked = path.clone();
        match self.call(move |s, app| s.secret(app, &code, &asked)).await {
            Ok(Some(value)) => Ok(value.to_vec()),
            Ok(None) => Err(secrets::Error::NotFound(format!(
                "secret {path} is allowed to this app, and none is kept"
            ))),
            Err(ServiceError::Refused(why)) => Err(secrets::Error::Denied(why)),
            Err(e) => Err(secrets::Error::Unavailable(e.to_string())),
        }
    }
}
