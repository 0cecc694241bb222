//! Workloads: those of `enclave.toml` and those loaded at run time through the management API,
//! the config tree they make, and their certificates.
//!
//! Loading, updating or unloading one workload recomputes the tree, reissues the enclave-wide
//! certificate (its config root and combined workloads hash change) and that workload's own
//! certificate. Other workloads' certificates carry only their own config root, so they do not
//! change. Workloads loaded at run time are kept in the sealed store (`sys/workloads`) and come
//! back after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use enclave_config::file::Workload;
use enclave_config::{ConfigTree, LoadedConfig};
use enclave_ratls::binding::BindingFormat;
use enclave_ratls::issue::{LeafSpec, WorkloadIdentity};
use enclave_ratls::tls::RatlsResolver;
use enclave_store::Store;
use serde::{Deserialize, Serialize};

use crate::{RuntimeError, State};

pub(crate) const NAMESPACE: &str = "sys/workloads";
const LIFETIME_SECS: i64 = 12 * 3600;

/// A workload loaded at run time, as kept in the sealed store.
#[derive(Serialize, Deserialize)]
struct Kept {
    workload: Workload,
    /// The code, base64.
    code: String,
}

/// Runtime-loaded workloads by name: the settings and the code bytes.
pub(crate) type Loaded = BTreeMap<String, (Workload, Vec<u8>)>;

/// The workloads kept in the store.
pub(crate) fn restore(store: &Store) -> Result<Loaded, RuntimeError> {
    let mut out = Loaded::new();
    for key in store
        .keys(NAMESPACE)
        .map_err(|e| RuntimeError::Store(e.to_string()))?
    {
        let Some(bytes) = store
            .get(NAMESPACE, &key)
            .map_err(|e| RuntimeError::Store(e.to_string()))?
        else {
            continue;
        };
        let kept: Kept = serde_json::from_slice(&bytes).map_err(|e| {
            RuntimeError::Store(format!(
                "loaded workload '{}' cannot be read back: {e}",
                String::from_utf8_lossy(&key)
            ))
        })?;
        let code = STANDARD
            .decode(&kept.code)
            .map_err(|e| RuntimeError::Store(format!("workload '{}': {e}", kept.workload.name)))?;
        out.insert(kept.workload.name.clone(), (kept.workload, code));
    }
    Ok(out)
}

/// The tree of the file's configuration and the loaded workloads.
pub(crate) fn tree(config: &LoadedConfig, loaded: &Loaded) -> Result<ConfigTree, RuntimeError> {
    let extra: Vec<(Workload, Vec<u8>)> = loaded.values().cloned().collect();
    Ok(config.tree_with(env!("CARGO_PKG_VERSION"), &extra)?)
}

/// The module hashes for the enclave-wide certificate: the combined workloads hash (over every
/// workload's name and code hash), the egress bundle and the attestation servers.
fn modules(tree: &ConfigTree) -> Vec<(u64, [u8; 32])> {
    let leaf = |name: &str| {
        tree.leaves()
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value_hash)
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for l in tree
        .leaves()
        .iter()
        .filter(|l| l.name.starts_with("workload/") && l.name.ends_with("/code"))
    {
        ctx.update(l.name.as_bytes());
        ctx.update(&l.value_hash);
    }
    let mut workloads = [0u8; 32];
    workloads.copy_from_slice(ctx.finish().as_ref());
    let mut out = vec![(5, workloads)];
    if let Some(h) = leaf("egress/ca-bundle") {
        out.push((1, h));
    }
    if let Some(h) = leaf("attestation/servers") {
        out.push((7, h));
    }
    out
}

/// The evidence binding the listener's certificates use (`[listener] evidence_binding`).
pub(crate) fn evidence_binding(config: &LoadedConfig) -> BindingFormat {
    match config.config.listener.evidence_binding {
        enclave_config::file::EvidenceBinding::Seed => BindingFormat::Seed,
        enclave_config::file::EvidenceBinding::Dice => BindingFormat::Dice,
    }
}

/// What the enclave-wide certificate certifies.
pub(crate) fn enclave_spec(
    names: Vec<String>,
    tree: &ConfigTree,
    binding: BindingFormat,
) -> LeafSpec {
    LeafSpec {
        names,
        lifetime_secs: LIFETIME_SECS,
        config_root: Some(*tree.root()),
        modules: modules(tree),
        workload: None,
        binding,
    }
}

/// What a workload's own certificate certifies: its hostnames, its code hash, its own config
/// root (its leaves only), so that no other workload's change touches it, and the extensions
/// its code declared through the SDK.
pub(crate) fn workload_spec(
    tree: &ConfigTree,
    w: &Workload,
    store: &Store,
    binding: BindingFormat,
) -> Result<LeafSpec, RuntimeError> {
    let prefix = format!("workload/{}/", w.name);
    let own = ConfigTree::from_hashes(
        tree.leaves()
            .iter()
            .filter(|l| l.name.starts_with(&prefix))
            .map(|l| (l.name.clone(), l.value_hash)),
    )
    .map_err(enclave_config::ConfigError::from)?;
    let code_digest = tree
        .leaves()
        .iter()
        .find(|l| l.name == format!("workload/{}/code", w.name))
        .map(|l| l.value_hash)
        .unwrap_or_default();
    let declared =
        crate::sdk::declared(store, &w.name, &code_digest).map_err(RuntimeError::Store)?;
    Ok(LeafSpec {
        names: w.hostnames.clone(),
        lifetime_secs: LIFETIME_SECS,
        config_root: Some(*own.root()),
        modules: Vec::new(),
        workload: Some(WorkloadIdentity {
            config_root: *own.root(),
            code_digest,
            image: w.image.clone(),
            key_source: "tee-generated".into(),
            declared,
        }),
        binding,
    })
}

/// Every workload: the file's, then those loaded at run time.
pub(crate) fn all(state: &State) -> Vec<(Workload, &'static str)> {
    let mut out: Vec<(Workload, &'static str)> = state
        .config
        .config
        .workloads
        .iter()
        .map(|w| (w.clone(), "enclave.toml"))
        .collect();
    out.extend(
        state
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|(w, _)| (w.clone(), "api")),
    );
    out
}

/// The workload named `name` (the file's, or one loaded at run time), copying only it.
pub(crate) fn find(state: &State, name: &str) -> Option<Workload> {
    if let Some(w) = state
        .config
        .config
        .workloads
        .iter()
        .find(|w| w.name == name)
    {
        return Some(w.clone());
    }
    state
        .loaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .map(|(w, _)| w.clone())
}

/// Compile a wasm workload with its environment, arguments and limits.
pub(crate) fn compile(
    host: &enclave_wasm::Host,
    w: &Workload,
    code: &[u8],
) -> Result<enclave_wasm::App, RuntimeError> {
    let defaults = enclave_wasm::Limits::default();
    let limits = enclave_wasm::Limits {
        memory_bytes: w.limits.memory_bytes.map_or(defaults.memory_bytes, |m| {
            usize::try_from(m).unwrap_or(usize::MAX)
        }),
        timeout: w
            .limits
            .request_timeout_ms
            .map_or(defaults.timeout, std::time::Duration::from_millis),
    };
    let app = host
        .load(
            &w.name,
            code,
            w.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            w.args.clone(),
            limits,
        )
        .map_err(|e| RuntimeError::Workload(e.to_string()))?;
    tracing::info!(
        workload = %w.name,
        code = %hex::encode(app.code_sha256()),
        compiled = match app.compiled() {
            enclave_wasm::Compiled::Cached => "from the code cache",
            enclave_wasm::Compiled::Fresh => "now",
        },
        "wasm workload ready"
    );
    Ok(app)
}

/// The workload serving hostname `host`, if any, without copying any workload: this runs on
/// every request.
pub(crate) fn serving(state: &State, host: &str) -> Option<String> {
    let claims = |w: &Workload| w.hostnames.iter().any(|h| h.eq_ignore_ascii_case(host));
    if let Some(w) = state.config.config.workloads.iter().find(|w| claims(w)) {
        return Some(w.name.clone());
    }
    state
        .loaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .find(|(w, _)| claims(w))
        .map(|(w, _)| w.name.clone())
}

type ApiError = (StatusCode, String);

fn conflict(reason: String) -> ApiError {
    (StatusCode::CONFLICT, reason)
}

/// The tree as the runtime now stands: the configuration, with the JWKS a refetch rotated in
/// (if any), and `loaded`.
pub(crate) fn tree_now(state: &State, loaded: &Loaded) -> Result<ConfigTree, RuntimeError> {
    let rotated = state
        .rotated_jwks
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match rotated {
        Some(jwks) => tree(&state.config.with_jwks(jwks.to_vec())?, loaded),
        None => tree(&state.config, loaded),
    }
}

/// Recompute the tree and the enclave-wide certificate after `loaded` (or the JWKS) changed.
pub(crate) fn retree(state: &State, loaded: &Loaded) -> Result<Arc<ConfigTree>, ApiError> {
    let tree = Arc::new(
        tree_now(state, loaded).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?,
    );
    state.enclave.set_spec(enclave_spec(
        state.enclave_names.clone(),
        &tree,
        evidence_binding(&state.config),
    ));
    *state.tree.write().unwrap_or_else(|p| p.into_inner()) = tree.clone();
    Ok(tree)
}

/// Load (or replace) workload `w` with `code`.
pub(crate) fn load(state: &State, w: Workload, code: Vec<u8>) -> Result<(), ApiError> {
    w.check(false).map_err(|(field, reason)| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: {reason}"),
        )
    })?;
    if state
        .config
        .config
        .workloads
        .iter()
        .any(|f| f.name == w.name)
    {
        return Err(conflict(format!(
            "workload '{}' is defined in enclave.toml; change it there",
            w.name
        )));
    }
    let reserved = &state.config.config.management.hostname;
    for h in &w.hostnames {
        if h.eq_ignore_ascii_case(reserved) {
            return Err(conflict(format!(
                "'{h}' is reserved for the management API"
            )));
        }
        if let Some(other) = serving(state, h).filter(|o| *o != w.name) {
            return Err(conflict(format!(
                "hostname '{h}' is served by workload '{other}'"
            )));
        }
    }
    // A component that does not compile is refused before anything is kept.
    let app = match w.kind {
        enclave_config::file::WorkloadKind::Wasm => {
            Some(Arc::new(compile(&state.wasm, &w, &code).map_err(|e| {
                (StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            })?))
        }
        _ => None,
    };
    let mut loaded = state.loaded.lock().unwrap_or_else(|p| p.into_inner());
    let mut next = loaded.clone();
    next.insert(w.name.clone(), (w.clone(), code.clone()));
    // Check the tree before anything is kept.
    let candidate =
        tree_now(state, &next).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let spec = workload_spec(
        &candidate,
        &w,
        &state.store,
        evidence_binding(&state.config),
    )
    .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let kept = serde_json::to_vec(&Kept {
        workload: w.clone(),
        code: STANDARD.encode(&code),
    })
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .store
        .put(NAMESPACE, w.name.as_bytes(), &kept)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    *loaded = next;
    retree(state, &loaded)?;
    {
        let mut apps = state.apps.write().unwrap_or_else(|p| p.into_inner());
        match app {
            Some(a) => apps.insert(w.name.clone(), a),
            None => apps.remove(&w.name),
        };
    }
    if w.hostnames.is_empty() {
        state.resolver.remove_workload(&w.name);
    } else {
        let r = Arc::new(RatlsResolver::new(
            state.tee.clone(),
            state.ca.clone(),
            spec,
        ));
        state.resolver.set_workload(&w.name, w.hostnames.clone(), r);
    }
    Ok(())
}

/// Unload workload `name` (loaded at run time).
pub(crate) fn unload(state: &State, name: &str) -> Result<(), ApiError> {
    if state.config.config.workloads.iter().any(|f| f.name == name) {
        return Err(conflict(format!(
            "workload '{name}' is defined in enclave.toml; remove it there"
        )));
    }
    let mut loaded = state.loaded.lock().unwrap_or_else(|p| p.into_inner());
    if !loaded.contains_key(name) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no workload '{name}' is loaded"),
        ));
    }
    state
        .store
        .delete(NAMESPACE, name.as_bytes())
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    loaded.remove(name);
    retree(state, &loaded)?;
    state
        .apps
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
    state.resolver.remove_workload(name);
    Ok(())
}
