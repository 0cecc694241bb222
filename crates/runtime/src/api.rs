//! The management API, under the reserved hostname (and any name no workload claims).
//!
//! | path | auth | what |
//! |---|---|---|
//! | `GET /healthz`, `GET /readyz` | | liveness; readiness (the store is open and verified) |
//! | `GET /api/v1/status` | | TEE, config root, store version and records, workloads, uptime |
//! | `GET /metrics` | | Prometheus text format |
//! | `GET /.well-known/enclave-os/manifest` | | the config manifest |
//! | `GET /.well-known/enclave-os/proof/<name>` | | an inclusion proof |
//! | `GET /.well-known/enclave-os/attestation` | | channel-bound evidence for this connection |
//! | `GET /api/v1/kv` | bearer | the operator's keys |
//! | `GET, PUT, DELETE /api/v1/kv/<key>` | bearer | the operator's sealed key-value data |
//! | `GET /api/v1/workloads` | | workloads and where they come from |
//! | `PUT, DELETE /api/v1/workloads/<name>` | bearer | load (or replace) and unload a workload |
//!
//! Writes are acknowledged (200) only once durable and recorded by the rollback counter.

// A handler's error is the response it sends (axum's own pattern); it is built once per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State as Axum};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use enclave_config::file::{Workload, WorkloadKind, WorkloadLimits};
use enclave_store::Op;
use serde::Deserialize;
use serde_json::json;

use crate::{State, workloads};

/// The operator's own key-value namespace.
pub(crate) const OPERATOR_NAMESPACE: &str = "sys/operator";

/// What the connection knows that a request needs.
#[derive(Clone)]
pub(crate) struct Connection {
    /// The TLS exporter of this connection (channel-bound evidence).
    pub exporter: Option<[u8; 32]>,
    /// The certificate this connection presented (the one the SNI chose): the key its
    /// channel-bound evidence binds. `None` on a resumed session, which presented none.
    pub presented: Option<Arc<rustls_pki_types::CertificateDer<'static>>>,
}

/// A JSON error with its reason.
pub(crate) fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

type Shared = Arc<State>;

fn authorize(state: &State, headers: &HeaderMap) -> Result<String, Response> {
    let outcome = match &state.auth {
        None => Err(
            "no OIDC issuer is configured ([oidc] in enclave.toml), so endpoints that change or read sealed state are disabled"
                .to_string(),
        ),
        Some(a) => a
            .check(
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
            )
            .map(|c| c.sub),
    };
    outcome.map_err(|reason| {
        state
            .metrics
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%reason, "request refused: not authenticated");
        let mut r = error(StatusCode::UNAUTHORIZED, reason);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        r
    })
}

/// Blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))
}

fn store_error(e: enclave_store::StoreError) -> Response {
    let status = match e {
        enclave_store::StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "store operation failed");
    }
    error(status, e.to_string())
}

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(Axum(s): Axum<Shared>) -> Response {
    Json(
        json!({ "status": "ready", "tee": s.tee.name(), "store_version": s.store.stats().version }),
    )
    .into_response()
}

async fn status(Axum(s): Axum<Shared>) -> Response {
    let stats = s.store.stats();
    let tree = s.tree.read().unwrap_or_else(|p| p.into_inner()).clone();
    let workloads: Vec<_> = workloads::all(&s)
        .into_iter()
        .map(|(w, from)| json!({ "name": w.name, "kind": w.kind, "hostnames": w.hostnames, "from": from }))
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "tee": s.tee.name(),
        "simulated": s.tee.simulated(),
        "config_root": hex::encode(tree.root()),
        "management_hostname": s.config.config.management.hostname,
        "uptime_secs": s.metrics.uptime_secs(),
        "store": {
            "id": s.store.id().to_string(),
            "version": stats.version,
            "records": stats.records,
            "namespaces": stats.namespaces,
            "counter": s.store.counter(),
        },
        "oidc_issuer": s.auth.as_ref().map(|a| a.issuer().to_string()),
        "workloads": workloads,
    }))
    .into_response()
}

async fn metrics(Axum(s): Axum<Shared>) -> Response {
    let stats = s.store.stats();
    let body = s.metrics.render(&crate::metrics::Gauges {
        tee: s.tee.name(),
        simulated: s.tee.simulated(),
        store_version: stats.version,
        store_records: stats.records,
        workloads: workloads::all(&s).len(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn manifest(Axum(s): Axum<Shared>) -> Response {
    let tree = s.tree.read().unwrap_or_else(|p| p.into_inner()).clone();
    Json(json!(tree.manifest())).into_response()
}

async fn proof(Axum(s): Axum<Shared>, Path(name): Path<String>) -> Response {
    let tree = s.tree.read().unwrap_or_else(|p| p.into_inner()).clone();
    match tree.prove(&name) {
        Ok(p) => Json(json!(p)).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

async fn attestation(
    Axum(s): Axum<Shared>,
    axum::Extension(conn): axum::Extension<Connection>,
) -> Response {
    let Some(exporter) = conn.exporter else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no TLS exporter on this connection",
        );
    };
    // Bind the leaf this connection presented, not a leaf chosen now: the enclave-wide one
    // would fail for every workload's connection, and a renewed one for every connection made
    // before the renewal.
    let Some(leaf) = conn.presented else {
        return error(
            StatusCode::CONFLICT,
            "this connection resumed an earlier TLS session, so it presented no certificate to \
             bind: connect again without session resumption",
        );
    };
    // A quote is blocking work.
    blocking(move || {
        enclave_ratls::channel::respond_for_leaf(s.tee.as_ref(), &leaf, &exporter)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    .map(|body| ([(header::CONTENT_TYPE, "application/json")], body).into_response())
    .unwrap_or_else(|r| r)
}

async fn kv_list(Axum(s): Axum<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    blocking(move || s.store.keys(OPERATOR_NAMESPACE).map_err(store_error))
        .await
        .map(|keys| {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            Json(json!({ "keys": keys })).into_response()
        })
        .unwrap_or_else(|r| r)
}

async fn kv_get(Axum(s): Axum<Shared>, headers: HeaderMap, Path(key): Path<String>) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let k = key.clone();
    match blocking(move || {
        s.store
            .get(OPERATOR_NAMESPACE, k.as_bytes())
            .map_err(store_error)
    })
    .await
    {
        Ok(Some(v)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            v.to_vec(),
        )
            .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no key '{key}'")),
        Err(r) => r,
    }
}

/// A put (`value`) or a delete (`None`) in the operator's namespace, once authorized.
async fn kv_write(s: Shared, headers: &HeaderMap, key: String, value: Option<Bytes>) -> Response {
    let sub = match authorize(&s, headers) {
        Ok(sub) => sub,
        Err(r) => return r,
    };
    let action = if value.is_some() {
        "written"
    } else {
        "deleted"
    };
    let k = key.clone();
    match blocking(move || {
        let op = match &value {
            Some(v) => Op::Put(k.as_bytes(), v),
            None => Op::Delete(k.as_bytes()),
        };
        s.store
            .apply(OPERATOR_NAMESPACE, &[op])
            .map_err(store_error)
    })
    .await
    {
        Ok(version) => {
            tracing::info!(%key, subject = %sub, version, action, "operator key changed");
            Json(json!({ "key": key, "version": version })).into_response()
        }
        Err(r) => r,
    }
}

async fn kv_put(
    Axum(s): Axum<Shared>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    kv_write(s, &headers, key, Some(body)).await
}

async fn kv_delete(Axum(s): Axum<Shared>, headers: HeaderMap, Path(key): Path<String>) -> Response {
    kv_write(s, &headers, key, None).await
}

async fn workloads_list(Axum(s): Axum<Shared>) -> Response {
    let tree = s.tree.read().unwrap_or_else(|p| p.into_inner()).clone();
    let list: Vec<_> = workloads::all(&s)
        .into_iter()
        .map(|(w, from)| {
            let code = tree
                .leaves()
                .iter()
                .find(|l| l.name == format!("workload/{}/code", w.name))
                .map(|l| hex::encode(l.value_hash));
            json!({ "name": w.name, "kind": w.kind, "hostnames": w.hostnames, "from": from, "code_sha256": code })
        })
        .collect();
    Json(json!({ "workloads": list })).into_response()
}

/// A workload to load: its settings, and its code inline.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    kind: WorkloadKind,
    /// The component (wasm) or executable (process), base64.
    code_base64: Option<String>,
    /// A digest-pinned image (container).
    image: Option<String>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    limits: WorkloadLimits,
}

async fn workload_put(
    Axum(s): Axum<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let sub = match authorize(&s, &headers) {
        Ok(sub) => sub,
        Err(r) => return r,
    };
    let req: LoadRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request body: {e}")),
    };
    let code = match (&req.kind, &req.code_base64) {
        (WorkloadKind::Container, _) => req.image.clone().unwrap_or_default().into_bytes(),
        (_, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("code_base64: {e}")),
        },
        (_, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "a wasm or process workload needs code_base64",
            );
        }
    };
    let w = Workload {
        name: name.clone(),
        kind: req.kind,
        source: None,
        image: req.image,
        hostnames: req.hostnames,
        env: req.env,
        args: req.args,
        limits: req.limits,
    };
    let s2 = s.clone();
    match blocking(move || {
        workloads::load(&s2, w, code).map_err(|(status, reason)| error(status, reason))
    })
    .await
    {
        Ok(()) => {
            let root = hex::encode(s.tree.read().unwrap_or_else(|p| p.into_inner()).root());
            tracing::info!(workload = %name, subject = %sub, config_root = %root, "workload loaded");
            Json(json!({ "name": name, "config_root": root })).into_response()
        }
        Err(r) => r,
    }
}

async fn workload_delete(
    Axum(s): Axum<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let sub = match authorize(&s, &headers) {
        Ok(sub) => sub,
        Err(r) => return r,
    };
    let (s2, n) = (s.clone(), name.clone());
    match blocking(move || {
        workloads::unload(&s2, &n).map_err(|(status, reason)| error(status, reason))
    })
    .await
    {
        Ok(()) => {
            let root = hex::encode(s.tree.read().unwrap_or_else(|p| p.into_inner()).root());
            tracing::info!(workload = %name, subject = %sub, config_root = %root, "workload unloaded");
            Json(json!({ "name": name, "config_root": root })).into_response()
        }
        Err(r) => r,
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("nothing is served at {method} {}", uri.path()),
    )
}

async fn count(Axum(s): Axum<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(unmatched)".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    s.metrics
        .request(&route, &method, response.status().as_u16());
    response
}

/// The management API's routes.
pub(crate) fn router(state: Shared) -> Router {
    let max_body =
        usize::try_from(state.config.config.limits.max_request_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/.well-known/enclave-os/manifest", get(manifest))
        .route("/.well-known/enclave-os/proof/{*name}", get(proof))
        .route(enclave_ratls::channel::PATH, get(attestation))
        .route("/api/v1/kv", get(kv_list))
        .route(
            "/api/v1/kv/{key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .route("/api/v1/workloads", get(workloads_list))
        .route(
            "/api/v1/workloads/{name}",
            axum::routing::put(workload_put).delete(workload_delete),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}
