//! The vault's way in for containers: an endpoint speaking the API of Azure's Secure Key Release
//! sidecar (`microsoft/confidential-sidecar-containers`, `cmd/skr`), served in plain HTTP on the
//! bridge's gateway address, the one address and port of the host the containers may reach.
//!
//! Plain HTTP because it never leaves the VM: the bridge, the containers and the runtime are all
//! inside the TEE. What identifies a caller is a token: each start of a container gets a fresh
//! random one in its environment ([`TOKEN_ENV`], with [`URL_ENV`]), remembered here (by its
//! SHA-256, in memory only) with the workload and the code the container was started from, and
//! forgotten when that container is removed. A release is then decided as for any local
//! workload: `Who::Local { name, code }`, the code being what the tree commits for it now.
//!
//! | route | what |
//! |---|---|
//! | `GET /status` | `{"message":"Status OK"}`, no token needed |
//! | `POST /attest/raw` | `{"runtime_data": base64}` → `{"report": hex}`: the runtime's evidence |
//! | `POST /attest/maa` | 501: there is no MAA here, the vault is the verifier |
//! | `POST /key/release` | `{"kid": …}` → `{"key": "<private JWK, as a JSON string>"}` |
//!
//! Each also under `/<token>/…`, for SKR clients that take only a base URL. Errors are SKR's
//! `{"error": …}`. Not here: the policies (`policy`), where keys are kept (`secrets`).

// A handler's error is the response it sends (axum's own pattern, as in `api`).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State as Axum};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::policy::{Asked, Who};
use super::{Vault, secrets};
use crate::api::{Api, blocking, error};

/// The container's variable holding its token.
pub(crate) const TOKEN_ENV: &str = "ENCLAVE_OS_VAULT_TOKEN";
/// The container's variable holding the endpoint's URL.
pub(crate) const URL_ENV: &str = "ENCLAVE_OS_VAULT_URL";
/// The largest request body: SKR's requests are a few small JSON members.
const MAX_BODY: usize = 16 * 1024;
/// How long a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take, evidence included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once, and from one container.
const MAX_CONNECTIONS: usize = 256;
const MAX_PER_CONTAINER: u32 = 16;
/// Evidence being made at once for containers: they must not keep the TEE's quoting (which the
/// RA-TLS handshakes need) busy.
const MAX_EVIDENCE: usize = 4;
/// What `report_data[32..64]` of evidence made for a container always is (its SHA-256), never
/// zero: a container chooses the first half, and evidence whose second half is zero could pass
/// for the runtime's own DICE RA-TLS binding (`SHA-256(claims) || 0`, docs/ratls.md).
const REPORT_DATA_TAG: &[u8] = b"enclave-os skr attest/raw v1";

/// What a token stands for: one start of one container.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub workload: String,
    pub container: String,
    /// The code (manifest) hash the container was started from.
    pub code: [u8; 32],
}

/// The tokens handed to running containers, by the SHA-256 of the token: a look-up by hash
/// does not compare the token itself byte by byte, and memory holds no token.
pub(crate) struct Tokens {
    by_hash: Mutex<HashMap<[u8; 32], Holder>>,
    /// Evidence being made for containers ([`MAX_EVIDENCE`]).
    evidence: Arc<tokio::sync::Semaphore>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            by_hash: Mutex::default(),
            evidence: Arc::new(tokio::sync::Semaphore::new(MAX_EVIDENCE)),
        }
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Tokens {
    /// A fresh token for container `container` of workload `workload`, started from `code`.
    pub(crate) fn issue(
        &self,
        workload: &str,
        container: &str,
        code: [u8; 32],
    ) -> Result<Zeroizing<String>, String> {
        let mut raw = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), raw.as_mut())
            .map_err(|_| "the random source failed making a vault token".to_string())?;
        let token = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw));
        self.lock().insert(
            token_hash(&token),
            Holder {
                workload: workload.to_string(),
                container: container.to_string(),
                code,
            },
        );
        Ok(token)
    }

    /// Forget container `container`'s token (it was removed).
    pub(crate) fn forget(&self, container: &str) {
        self.lock().retain(|_, h| h.container != container);
    }

    fn holder(&self, token: &str) -> Option<Holder> {
        self.lock().get(&token_hash(token)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Holder>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The runtime spec `spec` (as the tree commits it) with the two variables set, any of the same
/// name the image or the workload set replaced. This is the only difference between what runs
/// and what is committed: a secret made at each start cannot be committed.
pub(crate) fn with_vault_env(
    spec: &[u8],
    token: &str,
    url: &str,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut v: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|e| format!("the committed runtime spec is not JSON: {e}"))?;
    let env = v
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .ok_or("the committed runtime spec has no process object")?
        .entry("env")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or("the committed runtime spec's process.env is not a list")?;
    let ours = |e: &serde_json::Value| {
        e.as_str().is_some_and(|s| {
            s.starts_with(&format!("{TOKEN_ENV}=")) || s.starts_with(&format!("{URL_ENV}="))
        })
    };
    env.retain(|e| !ours(e));
    env.push(json!(format!("{URL_ENV}={url}")));
    env.push(json!(format!("{TOKEN_ENV}={token}")));
    let out = serde_json::to_vec(&v).map(Zeroizing::new);
    // The token's copy inside the value is dropped with it; wipe it first.
    if let Some(serde_json::Value::String(s)) = v
        .get_mut("process")
        .and_then(|p| p.get_mut("env"))
        .and_then(|e| e.as_array_mut())
        .and_then(|e| e.last_mut())
    {
        zeroize::Zeroize::zeroize(s);
    }
    out.map_err(|e| format!("the runtime spec with the vault's variables: {e}"))
}

type Shared = Arc<Api>;

/// The endpoint's routes.
pub(crate) fn router(api: Shared) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/{token}/status", get(status))
        .route("/attest/maa", post(maa))
        .route("/{token}/attest/maa", post(maa))
        .route("/attest/raw", post(raw))
        .route("/{token}/attest/raw", post(raw_in_path))
        .route("/key/release", post(release))
        .route("/{token}/key/release", post(release_in_path))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such route: this endpoint speaks SKR's /status, /attest/raw, /attest/maa and /key/release",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

async fn status() -> Response {
    Json(json!({ "message": "Status OK" })).into_response()
}

async fn maa() -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "there is no Microsoft Azure Attestation here: the vault verifies this runtime itself; ask /key/release directly",
    )
}

/// The tokens, and the caller's holder, from the bearer token or the path's; 401 with the
/// reason otherwise.
fn caller(
    v: &Vault,
    s: &Api,
    in_path: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Arc<Tokens>, Holder), Response> {
    let unauthorized = |why: &str| {
        v.metrics.vault("skr", false);
        error(StatusCode::UNAUTHORIZED, why)
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.strip_prefix("Bearer ").unwrap_or(h).trim());
    let token = match (in_path, bearer) {
        (Some(p), Some(b)) if p != b => {
            return Err(unauthorized(
                "the token in the path and the Authorization header's differ",
            ));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => {
            return Err(unauthorized(&format!(
                "no token: send `Authorization: Bearer ${TOKEN_ENV}`, or put the token first in the path (${URL_ENV}/<token>/key/release)"
            )));
        }
    };
    let Some(tokens) = s.containers.as_ref().and_then(|c| c.vault_tokens.clone()) else {
        return Err(unauthorized("this runtime runs no containers"));
    };
    let holder = tokens.holder(token);
    holder.map(|h| (tokens, h)).ok_or_else(|| {
            unauthorized(&format!(
                "the token is not one this runtime gave a running container (each start gets a new one, in ${TOKEN_ENV})"
            ))
        })
}

fn the_vault(s: &Api) -> Result<Arc<Vault>, Response> {
    s.vault.clone().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "this runtime has no vault: add a [vault] section to enclave.toml",
        )
    })
}

/// A JSON body of at most [`MAX_BODY`] bytes, or SKR's 400.
fn body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, Response> {
    let bytes = body.map_err(|e| {
        error(
            e.status(),
            format!(
                "the request body: {} (at most {MAX_BODY} bytes)",
                e.body_text()
            ),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid request format: {what}: {e}"),
        )
    })
}

#[derive(Deserialize)]
struct RawAttest {
    runtime_data: String,
}

async fn raw(s: Axum<Shared>, headers: HeaderMap, b: Result<Bytes, BytesRejection>) -> Response {
    attest(s, None, headers, b).await
}

async fn raw_in_path(
    s: Axum<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let token = Zeroizing::new(token);
    attest(s, Some(&token), headers, b).await
}

async fn attest(
    Axum(s): Axum<Shared>,
    in_path: Option<&str>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let v = match the_vault(&s) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (tokens, holder) = match caller(&v, &s, in_path, &headers) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let req: RawAttest = match body(b, "expected {\"runtime_data\": <base64>}") {
        Ok(r) => r,
        Err(r) => return r,
    };
    let data = match base64::engine::general_purpose::STANDARD.decode(&req.runtime_data) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("runtime_data is not standard base64: {e}"),
            );
        }
    };
    let mut report_data = [0u8; 64];
    report_data[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &data).as_ref());
    report_data[32..]
        .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, REPORT_DATA_TAG).as_ref());
    let Ok(_permit) = tokens.evidence.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the TEE is making as much evidence as it may at once: retry",
        );
    };
    let tee = s.tee.clone();
    let made = blocking(move || {
        tee.evidence(&report_data).map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the TEE made no evidence: {e}"),
            )
        })
    })
    .await;
    match made {
        Ok(bundle) => {
            tracing::info!(target: "enclave_os::audit", event = "vault.attest", via = "skr", workload = %holder.workload, tee = %bundle.tee, "evidence made for a container");
            Json(json!({
                "report": hex::encode(&bundle.evidence),
                "tee": bundle.tee.as_str(),
                "simulated": bundle.simulated,
                "report_data": hex::encode(report_data),
            }))
            .into_response()
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct KeyRelease {
    kid: String,
    // SKR's other members (`maa_endpoint`, `akv_endpoint`, `access_token`) are accepted and
    // unused: the vault is the key store and the verifier.
}

async fn release(
    s: Axum<Shared>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    key_release(s, None, headers, b).await
}

async fn release_in_path(
    s: Axum<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let token = Zeroizing::new(token);
    key_release(s, Some(&token), headers, b).await
}

/// `s` as a JSON string literal, in a buffer that is wiped.
fn json_string(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len() + 2));
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn key_release(
    Axum(s): Axum<Shared>,
    in_path: Option<&str>,
    headers: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let v = match the_vault(&s) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let holder = match caller(&v, &s, in_path, &headers) {
        Ok((_, h)) => h,
        Err(r) => return r,
    };
    let req: KeyRelease = match body(
        b,
        "expected {\"kid\": <key name or secret:<repo>/<type>/<tag>>}",
    ) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let secret = req.kid.strip_prefix("secret:");
    let checked = match secret {
        Some(path) => secrets::check_path(path),
        None => {
            enclave_config::vault::check_name(&req.kid).map_err(|e| format!("kid: key name {e}"))
        }
    };
    if let Err(e) = checked {
        return error(StatusCode::BAD_REQUEST, e);
    }
    // What the tree commits for the workload now: a container started from other code (the
    // workload replaced since) is not the workload the policy speaks of.
    let now = v.control.snapshot();
    let Some(entry) = now.workload(&holder.workload) else {
        v.metrics.vault("skr", false);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "workload '{}' is not published (yet: a load's container starts before its change is committed): retry once it serves",
                holder.workload
            ),
        );
    };
    if entry.code_sha256 != Some(holder.code) {
        v.metrics.vault("skr", false);
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "this container of workload '{}' runs code {}, and the tree now commits {} for it",
                holder.workload,
                hex::encode(holder.code),
                entry
                    .code_sha256
                    .map(hex::encode)
                    .unwrap_or_else(|| "none".into())
            ),
        );
    }
    let asked = match secret {
        Some(path) => Asked::Secret(path),
        None => Asked::Key(&req.kid),
    };
    let who = Who::Local {
        name: &holder.workload,
        code: Some(&holder.code),
        from_file: entry.origin == crate::control::Origin::File,
    };
    let allowed = match v.decide("skr", asked, who, None) {
        Ok(a) => a,
        Err(r) => return error(StatusCode::FORBIDDEN, r.to_string()),
    };
    let store = v.store.clone();
    let kid = req.kid.clone();
    let jwk = blocking(move || match kid.strip_prefix("secret:") {
        Some(path) => match secrets::secret(&store, path) {
            Ok(Some(value)) => {
                let k = Zeroizing::new(
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.as_slice()),
                );
                Ok(Zeroizing::new(format!(
                    r#"{{"kty":"oct","k":"{}","kid":{}}}"#,
                    k.as_str(),
                    json_string(&kid).as_str()
                )))
            }
            Ok(None) => Err(error(
                StatusCode::NOT_FOUND,
                format!("secret {path} is allowed to this workload, and none is kept"),
            )),
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        },
        None => match secrets::key(&store, &kid) {
            Ok(Some(key)) => key
                .private_jwk()
                .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            Ok(None) => Err(error(
                StatusCode::NOT_FOUND,
                format!("key '{kid}' is allowed to this workload, and no such key is kept"),
            )),
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        },
    })
    .await;
    match jwk {
        // SKR answers the JWK as a JSON string inside `{"key": …}`; built in wiped buffers.
        Ok(jwk) => {
            v.released("skr", asked, who, &allowed);
            let body = Zeroizing::new(format!("{{\"key\":{}}}", json_string(&jwk).as_str()));
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body.as_bytes().to_vec(),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

/// Serve the endpoint on `listener` (the gateway's address) until `draining` turns true: one
/// request per connection, its head within [`HEADER_TIMEOUT`], its answer within
/// [`REQUEST_TIMEOUT`], at most [`MAX_PER_CONTAINER`] connections from one container.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    api: Shared,
    mut draining: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let app = router(api.clone());
    let admission = Arc::new(crate::front::admission::Admission::new(
        "the vault's SKR endpoint",
        MAX_CONNECTIONS,
        Some(MAX_PER_CONTAINER),
    ));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = draining.wait_for(|d| *d) => return,
        };
        let (tcp, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "the vault's SKR endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = admission.admit(from.ip(), &api.metrics) else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let call = app.oneshot(req.map(axum::body::Body::new));
                        let r = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(never)) => match never {},
                            Err(_) => error(
                                StatusCode::REQUEST_TIMEOUT,
                                format!(
                                    "the request did not complete within {} s",
                                    REQUEST_TIMEOUT.as_secs()
                                ),
                            ),
                        };
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            // The head and the answer are bounded above; the body's upload is bounded here.
            let _ = tokio::time::timeout(HEADER_TIMEOUT + REQUEST_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_fresh_found_by_hash_and_forgotten_with_their_container() {
        let t = Tokens::default();
        let a = t.issue("a", "a-1", [1; 32]).unwrap();
        let b = t.issue("a", "a-2", [1; 32]).unwrap();
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(t.holder(&a).unwrap().container, "a-1");
        assert!(t.holder("not-a-token").is_none());
        t.forget("a-1");
        assert!(t.holder(&a).is_none());
        assert_eq!(t.holder(&b).unwrap().workload, "a");
    }

    #[test]
    fn the_env_is_added_to_the_spec_and_replaces_the_images() {
        let spec = br#"{"ociVersion":"1.1.0","process":{"args":["/bin/sh"],"env":["PATH=/bin","ENCLAVE_OS_VAULT_TOKEN=forged"]}}"#;
        let out = with_vault_env(spec, "tok", "http://10.0.0.1:8080").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["process"]["env"],
            json!([
                "PATH=/bin",
                "ENCLAVE_OS_VAULT_URL=http://10.0.0.1:8080",
                "ENCLAVE_OS_VAULT_TOKEN=tok"
            ])
        );
        assert_eq!(v["process"]["args"], json!(["/bin/sh"]));
        assert!(with_vault_env(b"[]", "t", "u").is_err());
    }

    #[test]
    fn json_strings_escape_what_json_needs() {
        assert_eq!(
            json_string("{\"k\":\"a\\b\n\"}").as_str(),
            r#""{\"k\":\"a\\b\u000a\"}""#
        );
        let parsed: String = serde_json::from_str(&json_string("{\"kty\":\"oct\"}")).unwrap();
        assert_eq!(parsed, "{\"kty\":\"oct\"}");
    }
}
