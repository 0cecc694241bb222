//! The runtime's side of the wasm SDK: each app's sealed namespaces, evidence from the TEE,
//! and the extensions an app declares in its own certificate.
//!
//! Namespaces, named after the app and never chosen by it:
//!
//! - `app/<name>`: the app's key-value data;
//! - `app-keys/<name>`: its key records, out of reach of its key-value calls;
//! - `sys/app-extensions`, key `<name>`: its declared certificate extensions, with the code hash
//!   of the component that declared them.
//!
//! Data and keys belong to the app's name, so an update of the app keeps them. Declared
//! extensions belong to the code that declared them: a different component loaded under the
//! same name starts with none, since a certificate must not carry claims another component made.

use std::collections::BTreeMap;
use std::sync::Arc;

use enclave_store::Store;
use enclave_tee::Tee;
use enclave_wasm::{Evidence, ServiceError, Services, Space};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::control::{Change, ChangeError, Control};

const EXTENSIONS: &str = "sys/app-extensions";

fn namespace(app: &str, space: Space) -> String {
    match space {
        Space::Kv => format!("app/{app}"),
        Space::Keys => format!("app-keys/{app}"),
    }
}

/// An app's declared extensions, as kept.
#[derive(Serialize, Deserialize, Default)]
struct Declared {
    /// The code hash of the component that declared them (hex).
    code: String,
    /// Index → value (hex).
    extensions: BTreeMap<u32, String>,
}

/// The extensions `app` declared, if the component with `code_sha256` declared them.
pub(crate) fn declared(
    store: &Store,
    app: &str,
    code_sha256: &[u8; 32],
) -> Result<BTreeMap<u32, Vec<u8>>, ChangeError> {
    let Some(bytes) = store.get(EXTENSIONS, app.as_bytes())? else {
        return Ok(BTreeMap::new());
    };
    let unreadable = |reason: String| {
        ChangeError::Invalid(format!(
            "app '{app}': its declared extensions cannot be read back: {reason}"
        ))
    };
    let kept: Declared = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    if kept.code != hex::encode(code_sha256) {
        return Ok(BTreeMap::new());
    }
    kept.extensions
        .into_iter()
        .map(|(i, v)| {
            hex::decode(&v)
                .map(|v| (i, v))
                .map_err(|e| unreadable(format!("extension {i}: {e}")))
        })
        .collect()
}

/// Keep `app`'s declaration of extension `index` (`None` withdraws it), made by the component
/// with `code_sha256`. Whether anything changed: apps may declare on every request, and only a
/// change reissues the certificate. Called by the control plane's writer only, so two
/// declarations cannot lose each other's.
pub(crate) fn record_declaration(
    store: &Store,
    app: &str,
    code_sha256: &[u8; 32],
    index: u32,
    value: Option<&[u8]>,
) -> Result<bool, ChangeError> {
    let mut map = declared(store, app, code_sha256)?;
    let before = map.clone();
    match value {
        Some(v) => {
            map.insert(index, v.to_vec());
        }
        None => {
            map.remove(&index);
        }
    }
    if map.len() > enclave_wasm::sdk::MAX_EXTENSIONS {
        return Err(ChangeError::Invalid(format!(
            "an app declares at most {} extensions",
            enclave_wasm::sdk::MAX_EXTENSIONS
        )));
    }
    if map == before {
        return Ok(false);
    }
    let kept = Declared {
        code: hex::encode(code_sha256),
        extensions: map.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
    };
    let bytes =
        serde_json::to_vec(&kept).map_err(|e| ChangeError::Invalid(format!("app '{app}': {e}")))?;
    store.put(EXTENSIONS, app.as_bytes(), &bytes)?;
    Ok(true)
}

/// What the SDK reaches, for every app of this runtime: the store for its namespaces, the TEE
/// for evidence, and the control plane for declarations (which reissue a certificate).
pub(crate) struct AppServices {
    store: Arc<Store>,
    tee: Arc<dyn Tee>,
    control: Control,
    /// The vault, once made (it is made after the SDK's services, which the backends need).
    vault: std::sync::OnceLock<Arc<crate::vault::Vault>>,
}

impl AppServices {
    pub(crate) fn new(store: Arc<Store>, tee: Arc<dyn Tee>, control: Control) -> Self {
        Self {
            store,
            tee,
            control,
            vault: std::sync::OnceLock::new(),
        }
    }

    /// Give apps the vault's `secrets` (set once, at start).
    pub(crate) fn set_vault(&self, vault: Arc<crate::vault::Vault>) {
        let _ = self.vault.set(vault);
    }
}
fn store_error(e: enclave_store::StoreError) -> ServiceError {
    ServiceError::Store(Box::new(e))
}

impl Services for AppServices {
    fn secret(
        &self,
        app: &str,
        code_sha256: &[u8; 32],
        path: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ServiceError> {
        use crate::vault::policy::{Asked, Who};
        let Some(v) = self.vault.get() else {
            return Err(ServiceError::Unavailable(
                "this runtime has no vault: the operator adds a [vault] section to enclave.toml"
                    .into(),
            ));
        };
        crate::vault::secrets::check_path(path).map_err(ServiceError::Refused)?;
        let from_file = self
            .control
            .snapshot()
            .workload(app)
            .is_some_and(|e| e.origin == crate::control::Origin::File);
        let who = Who::Local {
            name: app,
            code: Some(code_sha256),
            from_file,
        };
        let allowed = v
            .decide("sdk", Asked::Secret(path), who, None)
            .map_err(|r| ServiceError::Refused(r.to_string()))?;
        let value = crate::vault::secrets::secret(&self.store, path).map_err(store_error)?;
        if value.is_some() {
            v.released("sdk", Asked::Secret(path), who, &allowed);
        }
        Ok(value)
    }

    fn get(
        &self,
        app: &str,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ServiceError> {
        self.store
            .get(&namespace(app, space), key)
            .map_err(store_error)
    }

    fn put(&self, app: &str, space: Space, key: &[u8], value: &[u8]) -> Result<(), ServiceError> {
        self.store
            .put(&namespace(app, space), key, value)
            .map(|_| ())
            .map_err(store_error)
    }

    fn delete(&self, app: &str, space: Space, key: &[u8]) -> Result<bool, ServiceError> {
        let ns = namespace(app, space);
        if self.store.get(&ns, key).map_err(store_error)?.is_none() {
            return Ok(false);
        }
        self.store
            .delete(&ns, key)
            .map(|_| true)
            .map_err(store_error)
    }

    fn keys(&self, app: &str, space: Space) -> Result<Vec<Vec<u8>>, ServiceError> {
        self.store.keys(&namespace(app, space)).map_err(store_error)
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ServiceError> {
        let bundle = self
            .tee
            .evidence(report_data)
            .map_err(|e| ServiceError::Evidence(Box::new(e)))?;
        Ok(Evidence {
            tee: bundle.tee.as_str().to_string(),
            simulated: bundle.simulated,
            quote: bundle.evidence,
        })
    }

    fn set_extension(
        &self,
        app: &str,
        code_sha256: &[u8; 32],
        index: u32,
        value: Option<&[u8]>,
    ) -> Result<(), ServiceError> {
        // The SDK calls this on the blocking pool (enclave_wasm::sdk), where waiting is allowed.
        let change = Change::Declare {
            app: app.to_string(),
            code: *code_sha256,
            index,
            value: value.map(<[u8]>::to_vec),
        };
        match self.control.submit_blocking(change) {
            Ok(_) => Ok(()),
            Err(ChangeError::Store(e)) => Err(store_error(e)),
            Err(ChangeError::Stopped) => {
                Err(ServiceError::Unavailable(ChangeError::Stopped.to_string()))
            }
            Err(e) => Err(ServiceError::Refused(e.to_string())),
        }
    }
}
