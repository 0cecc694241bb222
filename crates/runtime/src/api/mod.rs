//! The management API, under the reserved hostname (and any name no workload claims).
//!
//! Public: what a client needs to trust the service, and probes. Everything else needs a bearer
//! token carrying the scope its route group declares (`auth::Scope`), checked once by the
//! group's layer (`require`) before any handler runs: no token or a bad one gets 401, a good
//! token without the scope gets 403 naming the scope.
//!
//! | path | scope | what |
//! |---|---|---|
//! | `GET /healthz`, `GET /readyz` | public | liveness; readiness (the store is open and verified) |
//! | `GET /api/v1/status` | public | TEE, simulated or not, config root, workloads' names, kinds, hostnames and code hashes |
//! | `GET /api/v1/workloads` | public | the same workloads list |
//! | `GET /.well-known/enclave-os/manifest` | public | the config manifest |
//! | `GET /.well-known/enclave-os/proof/<name>` | public | an inclusion proof |
//! | `GET /.well-known/enclave-os/attestation` | public | channel-bound evidence for this connection |
//! | `GET /api/v1/status/detail` | `status:read` | the above plus version, uptime, store id, version, records and counter, issuer, where each workload came from |
//! | `GET /metrics` | `status:read` | Prometheus text format |
//! | `GET /api/v1/kv`, `GET /api/v1/kv/<key>` | `kv:read` | the operator's keys; a value |
//! | `PUT, DELETE /api/v1/kv/<key>` | `kv:write` | the operator's sealed key-value data |
//! | `PUT, DELETE /api/v1/workloads/<name>` | `workloads:write` | load (or replace) and unload a workload |
//! | `/api/v1/vault/…`, `/vault/v1/…`, `/kbs/v0/…` | see `vault::routes` | the vault |
//!
//! Writes are acknowledged (200) only once durable and recorded by the rollback counter.

// A handler's error is the response it sends (axum's own pattern); it is built once per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State as Axum};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use base64::Engine;
use enclave_config::file::{Run, Workload, WorkloadCode, WorkloadKind, WorkloadLimits};
use enclave_store::Op;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Authenticator, Scope};
use crate::containers::Stage;
use crate::control::{Applied, Change, ChangeError, Control, Snapshot};
use crate::metrics::Metrics;

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
    /// The client's address, as the TCP connection gives it (what `Forwarded` carries).
    pub peer: std::net::SocketAddr,
    /// The TLS server name the client sent (what a proxied service is told as its host).
    pub server_name: Option<Arc<str>>,
    /// The forwarding headers a proxied service is sent (made when the connection is for a
    /// workload behind the proxy).
    pub forwarding: Option<Arc<enclave_proxy::headers::Forwarding>>,
}

/// A JSON error with its reason.
pub(crate) fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": reason.into() }))).into_response()
}

/// What the API's handlers reach: a handle on the control plane (to read the snapshot and
/// submit changes), the store for the operator's own data, the TEE for evidence, and the
/// authenticator its layer uses. Never the listener.
pub(crate) struct Api {
    pub control: Control,
    pub store: Arc<enclave_store::Store>,
    pub tee: Arc<dyn enclave_tee::Tee>,
    pub auth: Option<Arc<Authenticator>>,
    pub metrics: Arc<Metrics>,
    /// Channel-bound quotes being made (`limits.max_challenge_handshakes` at once).
    pub quotes: Arc<tokio::sync::Semaphore>,
    pub management_hostname: String,
    pub max_request_bytes: u64,
    /// The container engine, when `[containers]` is configured.
    pub containers: Option<Arc<crate::containers::Containers>>,
    /// What runs process workloads (not inside a real SGX enclave).
    pub processes: Option<Arc<crate::backends::Processes>>,
    /// The vault, with `[vault]`.
    pub vault: Option<Arc<crate::vault::Vault>>,
}

type Shared = Arc<Api>;

/// Who made a request that passed `require`: the token's subject, for the audit log.
#[derive(Clone)]
pub(crate) struct Caller {
    pub subject: String,
}

/// A 401 or 403 with its reason, counted and logged (never with the token).
fn refuse(state: &Api, status: StatusCode, reason: String, scope: Option<Scope>) -> Response {
    state
        .metrics
        .auth_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(%reason, status = status.as_u16(), "request refused");
    refusal(status, reason, scope)
}

/// The refusal's response: the reason in the body, and the challenge.
fn refusal(status: StatusCode, reason: String, scope: Option<Scope>) -> Response {
    let (challenge, body) = match scope {
        // RFC 6750 §3.1: the scope the resource needs, in the challenge and the body.
        Some(scope) => (
            format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
            json!({ "error": reason, "scope": scope.as_str() }),
        ),
        None => ("Bearer".to_string(), json!({ "error": reason })),
    };
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The auth layer of a route group: a valid token (401 otherwise) that carries the group's
/// scope (403 otherwise). The handlers behind it see the caller as a `Caller` extension.
async fn require(
    Axum((s, scope)): Axum<(Shared, Scope)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(auth) = &s.auth else {
        return refuse(
            &s,
            StatusCode::UNAUTHORIZED,
            format!(
                "no OIDC issuer is configured ([oidc] in enclave.toml), so endpoints that need a token (here scope {scope}) are disabled"
            ),
            None,
        );
    };
    let presented = req.headers().get(header::AUTHORIZATION);
    let claims = match auth.check(presented.and_then(|v| v.to_str().ok())) {
        Ok(c) => c,
        // Without any token, say what one needs to carry here.
        Err(reason) if presented.is_none() => {
            let reason = format!("{reason}, carrying scope '{scope}'");
            return refuse(&s, StatusCode::UNAUTHORIZED, reason, None);
        }
        Err(reason) => return refuse(&s, StatusCode::UNAUTHORIZED, reason, None),
    };
    if !claims.has(scope) {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let held: Vec<&str> = claims.scopes().into_iter().collect();
        let held = if held.is_empty() {
            "it carries no scope".to_string()
        } else {
            format!("it carries: {}", held.join(" "))
        };
        let reason = format!(
            "the token of '{}' lacks scope '{scope}', which {} {route} needs ({held})",
            claims.sub,
            req.method()
        );
        return refuse(&s, StatusCode::FORBIDDEN, reason, Some(scope));
    }
    req.extensions_mut().insert(Caller {
        subject: claims.sub,
    });
    next.run(req).await
}

/// `routes`, each behind the auth layer for `scope`.
pub(crate) fn guarded(state: &Shared, scope: Scope, routes: Router<Shared>) -> Router<Shared> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        (state.clone(), scope),
        require,
    ))
}

/// Blocking store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))
}

pub(crate) fn store_error(e: enclave_store::StoreError) -> Response {
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
    Json(json!({ "status": "ready", "tee": s.tee.name() })).into_response()
}

/// Each workload as the public sees it: what runs (name, kind, code hash, health) and where to
/// reach it.
fn public_workloads(now: &Snapshot) -> Vec<(serde_json::Value, &'static str)> {
    now.workloads
        .iter()
        .map(|e| {
            let w = &e.spec;
            (
                json!({
                    "name": w.name,
                    "kind": w.run.kind(),
                    "hostnames": w.hostnames,
                    "code_sha256": e.code_sha256.map(hex::encode),
                    "health": e.running.health().as_str(),
                }),
                e.origin.as_str(),
            )
        })
        .collect()
}

/// A refused change as the caller sees it: one mapping from the control plane's reasons to
/// HTTP statuses.
pub(crate) fn change_error(e: ChangeError) -> Response {
    let status = match &e {
        ChangeError::Invalid(_) | ChangeError::Start(_) | ChangeError::Tree(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ChangeError::Conflict(_) => StatusCode::CONFLICT,
        ChangeError::NotFound(_) => StatusCode::NOT_FOUND,
        ChangeError::Stopped | ChangeError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        ChangeError::Store(enclave_store::StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
        ChangeError::Store(_) | ChangeError::Certificate(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "change failed");
    }
    error(status, e.to_string())
}

/// What a client needs to decide whether to trust the service, and nothing that shows activity
/// (store version, records, counter location, uptime): those are in `status_detail`.
async fn status(Axum(s): Axum<Shared>) -> Response {
    let now = s.control.snapshot();
    let root = hex::encode(now.root());
    let workloads: Vec<_> = public_workloads(&now).into_iter().map(|(w, _)| w).collect();
    Json(json!({
        "tee": s.tee.name(),
        "simulated": s.tee.simulated(),
        "config_root": root,
        "workloads": workloads,
    }))
    .into_response()
}

async fn status_detail(Axum(s): Axum<Shared>) -> Response {
    let stats = s.store.stats();
    let now = s.control.snapshot();
    let root = hex::encode(now.root());
    let workloads: Vec<_> = public_workloads(&now)
        .into_iter()
        .zip(now.workloads.iter())
        .map(|((mut w, from), e)| {
            w["from"] = json!(from);
            // Why it does not serve, and a container's state: for the operator only (an exit
            // report carries the tail of the container's log).
            if let crate::backends::Health::Unavailable(reason) = e.running.health() {
                w["reason"] = json!(reason);
            }
            // Under its kind: `container` or `process`.
            if let Some(d) = e.running.detail() {
                w[e.spec.run.kind().as_str()] = d;
            }
            w
        })
        .collect();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "tee": s.tee.name(),
        "simulated": s.tee.simulated(),
        "config_root": root,
        "management_hostname": s.management_hostname,
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
        // Container loads in flight (stage and bytes per layer), and the last refused ones.
        "loading": s
            .containers
            .as_ref()
            .map(|c| c.board.unfinished())
            .unwrap_or_default(),
        "parked": now
            .parked
            .iter()
            .map(|(name, reason)| json!({ "name": name, "reason": reason }))
            .collect::<Vec<_>>(),
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
        workloads: s.control.snapshot().workloads.len(),
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
    Json(json!(s.control.snapshot().tree.manifest())).into_response()
}

async fn proof(Axum(s): Axum<Shared>, Path(name): Path<String>) -> Response {
    match s.control.snapshot().tree.prove(&name) {
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
    // Anyone may ask and each answer costs a quote, as a challenge handshake does: the same
    // bound applies (`limits.max_challenge_handshakes` at once), and beyond it the client is
    // told to come back rather than queued.
    let Ok(permit) = s.quotes.clone().try_acquire_owned() else {
        s.metrics
            .challenges_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut busy = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "as many quotes are being made as limits.max_challenge_handshakes allows: try again",
        );
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return busy;
    };
    // A quote is blocking work.
    blocking(move || {
        let _permit = permit;
        enclave_ratls::channel::respond_for_leaf(s.tee.as_ref(), &leaf, &exporter)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
    .map(|body| ([(header::CONTENT_TYPE, "application/json")], body).into_response())
    .unwrap_or_else(|r| r)
}

async fn kv_list(Axum(s): Axum<Shared>) -> Response {
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

async fn kv_get(Axum(s): Axum<Shared>, Path(key): Path<String>) -> Response {
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

/// A put (`value`) or a delete (`None`) in the operator's namespace, by `sub`.
async fn kv_write(s: Shared, sub: String, key: String, value: Option<Bytes>) -> Response {
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
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    kv_write(s, caller.subject, key, Some(body)).await
}

async fn kv_delete(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Response {
    kv_write(s, caller.subject, key, None).await
}

async fn workloads_list(Axum(s): Axum<Shared>) -> Response {
    let now = s.control.snapshot();
    let list: Vec<_> = public_workloads(&now).into_iter().map(|(w, _)| w).collect();
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
    /// A container's settings (`[workload.container]`).
    container: Option<enclave_config::file::ContainerSettings>,
    /// How the front speaks to its service (`[workload.proxy]`).
    proxy: Option<enclave_config::file::ProxySettings>,
    /// A process's settings (`[workload.process]`).
    process: Option<enclave_config::file::ProcessSettings>,
    /// The vault key that unwraps its encrypted code (`decryption_key` in `enclave.toml`).
    decryption_key: Option<String>,
}

async fn workload_put(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let sub = caller.subject;
    let req: LoadRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request body: {e}")),
    };
    let bad = |reason: &str| error(StatusCode::BAD_REQUEST, reason.to_string());
    if req.kind != WorkloadKind::Container && req.container.is_some() {
        return bad("container settings are for containers only");
    }
    if req.kind == WorkloadKind::Wasm && req.proxy.is_some() {
        return bad(
            "proxy settings are for containers and processes; a wasm workload has no service to proxy to",
        );
    }
    if req.kind != WorkloadKind::Process && req.process.is_some() {
        return bad("process settings are for processes only");
    }
    if let Err(e) =
        enclave_config::file::check_decryption_key(&name, req.kind, req.decryption_key.as_deref())
    {
        return bad(&e);
    }
    let (run, code) = match (req.kind, req.code_base64, req.image) {
        (WorkloadKind::Container, None, Some(image)) => match req.container {
            Some(settings) => {
                let w = Workload {
                    name: name.clone(),
                    run: Run::Container { image, settings },
                    hostnames: req.hostnames,
                    env: req.env,
                    args: req.args,
                    limits: req.limits,
                    proxy: req.proxy,
                    ingress: None,
                    decryption_key: req.decryption_key,
                };
                return container_put(s, w, sub).await;
            }
            None => {
                return bad(
                    "a container workload needs its container settings (at least its port)",
                );
            }
        },
        (WorkloadKind::Container, Some(_), _) => {
            return bad("a container is loaded by its image, not code_base64");
        }
        (WorkloadKind::Container, None, None) => {
            return bad("a container workload needs image (name@sha256:…)");
        }
        (kind, Some(b64), None) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(code) if kind == WorkloadKind::Wasm => {
                (Run::Wasm { source: None }, WorkloadCode::Module(code))
            }
            Ok(code) => match req.process {
                Some(settings) => {
                    let w = Workload {
                        name: name.clone(),
                        run: Run::Process {
                            source: None,
                            settings,
                        },
                        hostnames: req.hostnames,
                        env: req.env,
                        args: req.args,
                        limits: req.limits,
                        proxy: req.proxy,
                        ingress: None,
                        decryption_key: req.decryption_key,
                    };
                    return process_put(s, w, code, sub).await;
                }
                None => {
                    return bad(
                        "a process workload needs its process settings (at least the port it listens on)",
                    );
                }
            },
            Err(e) => return bad(&format!("code_base64: {e}")),
        },
        (_, _, Some(_)) => return bad("image is for containers; this kind brings code_base64"),
        (_, None, None) => return bad("a wasm or process workload needs code_base64"),
    };
    let w = Workload {
        name: name.clone(),
        run,
        hostnames: req.hostnames,
        env: req.env,
        args: req.args,
        limits: req.limits,
        proxy: req.proxy,
        ingress: None,
        decryption_key: req.decryption_key,
    };
    changed(&s, Change::Load { spec: w, code }, &name, &sub, "loaded").await
}

/// Load process workload `w` with executable `code`: checked, started and health-checked
/// before the change is submitted, so its route goes live on a serving process; a process that
/// does not pass its health check is stopped and the load refused (422) with the reason and the
/// tail of its log. Synchronous: a process starts in moments, and its health check is bounded
/// by its `start_timeout_secs`.
async fn process_put(s: Shared, w: Workload, code: Vec<u8>, sub: String) -> Response {
    let Some(processes) = s.processes.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this runtime runs no processes: inside an SGX enclave under Gramine there is one process".to_string(),
        );
    };
    // Checked before anything runs (the name becomes a file name), and refused as the control
    // plane would refuse it.
    if let Err((field, why)) = w.check(false) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("workload '{}': {field}: {why}", w.name),
        );
    }
    // A hostname another workload serves would have the change refused: say so before
    // anything is started (the control plane checks again when the change is submitted).
    let now = s.control.snapshot();
    for h in &w.hostnames {
        if let Some(other) = now.workloads.iter().find(|e| {
            e.spec.name != w.name && e.spec.hostnames.iter().any(|o| o.eq_ignore_ascii_case(h))
        }) {
            return error(
                StatusCode::CONFLICT,
                format!("hostname '{h}' is served by workload '{}'", other.spec.name),
            );
        }
    }
    let port = w.run.process().map(|p| p.service.port);
    if let Some(other) = now
        .workloads
        .iter()
        .find(|e| e.spec.name != w.name && e.spec.run.process().map(|p| p.service.port) == port)
    {
        return error(
            StatusCode::CONFLICT,
            format!(
                "port {} is the port of process workload '{}'",
                port.unwrap_or_default(),
                other.spec.name
            ),
        );
    }
    let name = w.name.clone();
    if let Err(reason) = processes.prelaunch(&w, &code).await {
        tracing::warn!(workload = %name, subject = %sub, %reason, "process load refused");
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("workload '{name}': {reason}"),
        );
    }
    let change = Change::Load {
        spec: w,
        code: WorkloadCode::Module(code),
    };
    let r = changed(&s, change, &name, &sub, "loaded").await;
    // Adopted if the change went through; stopped if it was refused.
    processes.discard_prelaunched(&name).await;
    r
}

/// Submit `change` and answer with the config root it published.
/// How long a container load may take, from its pull to its health check, before it is
/// abandoned.
const LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(900);

/// Load container workload `w`: checked at once, then its image is pulled and verified and the
/// container started in the background (202, with where to follow it), and only then is the
/// change submitted. A pull never holds the control plane's writer.
async fn container_put(s: Shared, w: Workload, sub: String) -> Response {
    let Some(containers) = s.containers.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this runtime runs no containers: enclave.toml has no [containers] section".to_string(),
        );
    };
    if let Err((field, why)) = w.check(false) {
        return error(StatusCode::BAD_REQUEST, format!("{field}: {why}"));
    }
    if matches!(
        containers.progress(&w.name).map(|p| p.stage),
        Some(Stage::Resolving | Stage::Pulling | Stage::Unpacking | Stage::Starting)
    ) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "workload '{}' is being loaded already; follow its progress",
                w.name
            ),
        );
    }
    let Ok(permit) = containers.loads.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} container loads are being prepared already; try again when one is done",
                crate::containers::MAX_LOADS
            ),
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return r;
    };
    let name = w.name.clone();
    containers
        .board
        .begin(&name, w.run.image().unwrap_or_default());
    let handle = containers.handle();
    let c = containers.clone();
    let task = handle.spawn(async move {
        let _permit = permit;
        let name = w.name.clone();
        // Pull, verify and launch, within a deadline: a registry that trickles bytes (or a
        // container that is never healthy) does not hold a load slot for ever.
        let ready = tokio::time::timeout(LOAD_DEADLINE, async {
            let image = c.prepare(&w).await.map_err(|e| e.to_string())?;
            crate::backends::prelaunch(&c, &w, &image).await?;
            Ok::<_, String>(image)
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "not ready within {} s: the load was abandoned",
                LOAD_DEADLINE.as_secs()
            ))
        });
        let image = match ready {
            Ok(image) => image,
            Err(reason) => {
                tracing::warn!(workload = %name, subject = %sub, %reason, "container refused");
                crate::backends::discard_prelaunched(&c, &name).await;
                c.board.fail(&name, reason);
                c.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                return;
            }
        };
        let change = Change::Load {
            spec: w,
            code: WorkloadCode::Image(image),
        };
        match s.control.submit(change).await {
            Ok(_) => {
                let root = hex::encode(s.control.snapshot().root());
                tracing::info!(workload = %name, subject = %sub, config_root = %root, "workload loaded");
                c.board.stage(&name, Stage::Ready);
            }
            Err(e) => {
                tracing::warn!(workload = %name, subject = %sub, error = %e, "container refused");
                crate::backends::discard_prelaunched(&c, &name).await;
                c.board.fail(&name, e.to_string());
            }
        }
        c.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
    });
    containers
        .loading
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.clone(), task.abort_handle());
    let mut r = Json(json!({
        "name": name,
        "stage": "resolving",
        "progress": format!("/api/v1/workloads/{name}/progress"),
    }))
    .into_response();
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// A container workload's latest preparation: its stage, bytes per layer, and why it failed.
async fn workload_progress(Axum(s): Axum<Shared>, Path(name): Path<String>) -> Response {
    match s.containers.as_ref().and_then(|c| c.progress(&name)) {
        Some(p) => Json(p).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no container workload '{name}' has been loaded since the runtime started"),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// At most this many bytes from the end (default 64 KiB, at most 1 MiB).
    tail_bytes: Option<usize>,
}

/// The tail of a container or process workload's log (its stdout and stderr).
async fn workload_logs(
    Axum(s): Axum<Shared>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> Response {
    let kind = s
        .control
        .snapshot()
        .workload(&name)
        .map(|e| e.spec.run.kind());
    let log = match (kind, s.containers.as_ref(), s.processes.as_ref()) {
        (Some(WorkloadKind::Container), Some(c), _) => c.log_path(&name),
        (Some(WorkloadKind::Process), _, Some(p)) => p.log_path(&name),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no container or process workload '{name}' runs here"),
            );
        }
    };
    let max = q.tail_bytes.unwrap_or(64 << 10).min(1 << 20) as u64;
    // The log is the current segment, with the one before it when it is short (just started,
    // or just rotated by the log driver: for a moment the current one may not exist).
    let current = enclave_containers::log_tail(&log, max)
        .await
        .unwrap_or_default();
    let room = max.saturating_sub(current.len() as u64);
    let earlier = if room > 0 {
        enclave_containers::log_tail(&log.with_extension("previous.log"), room)
            .await
            .unwrap_or_default()
    } else {
        String::new()
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        earlier + &current,
    )
        .into_response()
}

async fn changed(s: &Api, change: Change, name: &str, sub: &str, action: &str) -> Response {
    match s.control.submit(change).await {
        Ok(applied) => {
            let root = match applied {
                Applied::Published(root) => root,
                Applied::Unchanged => s.control.snapshot().root(),
            };
            let root = hex::encode(root);
            tracing::info!(workload = %name, subject = %sub, config_root = %root, "workload {action}");
            Json(json!({ "name": name, "config_root": root })).into_response()
        }
        Err(e) => change_error(e),
    }
}

async fn workload_delete(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    // A container load still being prepared is cancelled: its pull and launch stop, and what
    // they made goes (the pull's lease expires; a launched container is removed).
    if let Some(c) = s.containers.as_ref() {
        let cancelled = c
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        if let Some(task) = cancelled {
            task.abort();
            crate::backends::discard_prelaunched(c, &name).await;
            c.board
                .fail(&name, format!("cancelled by {}", caller.subject));
            tracing::info!(workload = %name, subject = %caller.subject, "container load cancelled");
            if s.control.snapshot().workload(&name).is_none() {
                return Json(json!({ "name": name, "cancelled": true })).into_response();
            }
        }
    }
    let change = Change::Unload { name: name.clone() };
    changed(&s, change, &name, &caller.subject, "unloaded").await
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

/// Every refusal is JSON with a reason: axum's own answers (405 for a method a route does not
/// serve, 400 for a path segment that is not UTF-8, 413, …) come as empty or plain-text bodies,
/// so they are rewritten here, keeping their status and headers.
async fn json_errors(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/json") || v.starts_with(b"application/problem+json")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // axum's rejection texts are short; anything longer is cut, never buffered whole.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = if status == StatusCode::METHOD_NOT_ALLOWED {
        let allowed = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_string();
        format!("{method} is not served at {path} (allowed: {allowed})")
    } else if text.is_empty() {
        format!(
            "{method} {path}: {}",
            status.canonical_reason().unwrap_or("refused")
        )
    } else {
        format!("{method} {path}: {text}")
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut rewritten = error(status, reason);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// The management API's routes: the public group, then one group per scope, each behind its
/// auth layer. A path may sit in two groups with different methods (`/api/v1/kv/{key}`: GET
/// needs `kv:read`, PUT and DELETE `kv:write`).
pub(crate) fn router(state: Shared) -> Router {
    let max_body = usize::try_from(state.max_request_bytes).unwrap_or(usize::MAX);
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/workloads", get(workloads_list))
        .route("/.well-known/enclave-os/manifest", get(manifest))
        .route("/.well-known/enclave-os/proof/{*name}", get(proof))
        .route(enclave_ratls::channel::PATH, get(attestation));
    let status_read = guarded(
        &state,
        Scope::StatusRead,
        Router::new()
            .route("/api/v1/status/detail", get(status_detail))
            .route("/api/v1/workloads/{name}/progress", get(workload_progress))
            .route("/api/v1/workloads/{name}/logs", get(workload_logs))
            .route("/metrics", get(metrics)),
    );
    let kv_read = guarded(
        &state,
        Scope::KvRead,
        Router::new()
            .route("/api/v1/kv", get(kv_list))
            .route("/api/v1/kv/{key}", get(kv_get)),
    );
    let kv_write = guarded(
        &state,
        Scope::KvWrite,
        Router::new().route("/api/v1/kv/{key}", put(kv_put).delete(kv_delete)),
    );
    let workloads_write = guarded(
        &state,
        Scope::WorkloadsWrite,
        Router::new().route(
            "/api/v1/workloads/{name}",
            put(workload_put).delete(workload_delete),
        ),
    );
    public
        .merge(status_read)
        .merge(kv_read)
        .merge(kv_write)
        .merge(workloads_write)
        .merge(crate::vault::routes::router(&state))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_scope_is_named_in_the_challenge_and_the_body() {
        let r = refusal(
            StatusCode::FORBIDDEN,
            "lacks scope 'kv:write'".into(),
            Some(Scope::KvWrite),
        );
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", scope=\"kv:write\""
        );
        let r = refusal(StatusCode::UNAUTHORIZED, "no bearer token".into(), None);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
