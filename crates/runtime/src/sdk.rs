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
use std::sync::{Arc, Mutex, OnceLock, Weak};

use enclave_ratls::tls::RatlsResolver;
use enclave_store::Store;
use enclave_tee::Tee;
use enclave_wasm::{Evidence, Services, Space};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::State;

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
) -> Result<BTreeMap<u32, Vec<u8>>, String> {
    let Some(bytes) = store
        .get(EXTENSIONS, app.as_bytes())
        .map_err(|e| e.to_string())?
    else {
        return Ok(BTreeMap::new());
    };
    let kept: Declared = serde_json::from_slice(&bytes)
        .map_err(|e| format!("app '{app}': its declared extensions cannot be read back: {e}"))?;
    if kept.code != hex::encode(code_sha256) {
        return Ok(BTreeMap::new());
    }
    kept.extensions
        .into_iter()
        .map(|(i, v)| {
            hex::decode(&v)
                .map(|v| (i, v))
                .map_err(|e| format!("app '{app}': declared extension {i}: {e}"))
        })
        .collect()
}

/// What the SDK reaches, for every app of this runtime.
pub(crate) struct AppServices {
    store: Arc<Store>,
    tee: Arc<dyn Tee>,
    /// The runtime's state, for reissuing certificates; set once the state exists (the wasm
    /// host, which holds these services, is part of it).
    state: OnceLock<Weak<State>>,
    /// Serialises declarations, so two requests cannot lose each other's.
    declaring: Mutex<()>,
}

impl AppServices {
    pub(crate) fn new(store: Arc<Store>, tee: Arc<dyn Tee>) -> Self {
        Self {
            store,
            tee,
            state: OnceLock::new(),
            declaring: Mutex::new(()),
        }
    }

    pub(crate) fn attach(&self, state: &Arc<State>) {
        let _ = self.state.set(Arc::downgrade(state));
    }
}

impl Services for AppServices {
    fn get(
        &self,
        app: &str,
        space: Space,
        key: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        self.store
            .get(&namespace(app, space), key)
            .map_err(|e| e.to_string())
    }

    fn put(&self, app: &str, space: Space, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.store
            .put(&namespace(app, space), key, value)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn delete(&self, app: &str, space: Space, key: &[u8]) -> Result<bool, String> {
        let ns = namespace(app, space);
        if self
            .store
            .get(&ns, key)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Ok(false);
        }
        self.store
            .delete(&ns, key)
            .map(|_| true)
            .map_err(|e| e.to_string())
    }

    fn keys(&self, app: &str, space: Space) -> Result<Vec<Vec<u8>>, String> {
        self.store
            .keys(&namespace(app, space))
            .map_err(|e| e.to_string())
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, String> {
        let bundle = self.tee.evidence(report_data).map_err(|e| e.to_string())?;
        Ok(Evidence {
            tee: bundle.tee.as_str().to_string(),
            simulated: bundle.simulated,
            quote: bundle.evidence,
        })
    }

    fn set_extension(&self, app: &str, index: u32, value: Option<&[u8]>) -> Result<(), String> {
        let state = self
            .state
            .get()
            .and_then(Weak::upgrade)
            .ok_or("the runtime is not serving yet")?;
        let w = crate::workloads::find(&state, app)
            .ok_or_else(|| format!("app '{app}' is no longer loaded"))?;
        if w.hostnames.is_empty() {
            return Err(format!(
                "app '{app}' has no hostname, so no certificate of its own to declare extensions in"
            ));
        }
        let code = state
            .apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .map(|a| a.code_sha256())
            .ok_or_else(|| format!("app '{app}' is no longer loaded"))?;

        let _guard = self.declaring.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = declared(&self.store, app, &code)?;
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
            return Err(format!(
                "an app declares at most {} extensions",
                enclave_wasm::sdk::MAX_EXTENSIONS
            ));
        }
        // Apps may declare on every request; only a change reissues the certificate.
        if map == before {
            return Ok(());
        }
        let kept = Declared {
            code: hex::encode(code),
            extensions: map.iter().map(|(i, v)| (*i, hex::encode(v))).collect(),
        };
        let bytes = serde_json::to_vec(&kept).map_err(|e| e.to_string())?;
        self.store
            .put(EXTENSIONS, app.as_bytes(), &bytes)
            .map_err(|e| e.to_string())?;
        let tree = state.tree.read().unwrap_or_else(|p| p.into_inner()).clone();
        let spec = crate::workloads::workload_spec(
            &tree,
            &w,
            &self.store,
            crate::workloads::evidence_binding(&state.config),
        )
        .map_err(|e| e.to_string())?;
        let resolver = Arc::new(RatlsResolver::new(
            state.tee.clone(),
            state.ca.clone(),
            spec,
        ));
        resolver.current()?;
        state
            .resolver
            .set_workload(app, w.hostnames.clone(), resolver);
        tracing::info!(
            app,
            index,
            declared = value.is_some(),
            "app certificate reissued"
        );
        Ok(())
    }
}
