//! The vault's HTTP routes, on the management API's router.
//!
//! | path | scope | what |
//! |---|---|---|
//! | `GET /api/v1/vault/policies`, `GET /api/v1/vault/policies/<name>` | public | the policies in force; one policy's exact leaf bytes |
//! | `GET /.well-known/enclave-os/jwks.json` | public | the key attestation tokens are signed with |
//! | `GET /api/v1/vault/secrets`, `GET /api/v1/vault/keys`, `GET /api/v1/vault/keys/<name>` | `vault:read` | secrets' paths (never values), keys' names, a key's public half |
//! | `PUT, DELETE /api/v1/vault/secrets/<repo>/<type>/<tag>` | `vault:write` | keep or remove a secret |
//! | `PUT, DELETE /api/v1/vault/policies/<name>` | `vault:write` | put or remove a policy (the tree and certificate change) |
//! | `POST, DELETE /api/v1/vault/keys/<name>` | `vault:write` | generate a key inside the TEE, or remove it |
//! | `GET /vault/v1/secrets/<repo>/<type>/<tag>`, `GET /vault/v1/keys/<name>` | mutual RA-TLS (+ OIDC where the policy asks) | release a secret; a key's private half as a JWK |
//!
//! The operator can write secrets and never read them back: only a caller a policy admits can.

// A handler's error is the response it sends (axum's own pattern, as in `api`).
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as Axum};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use enclave_config::vault::PolicyDoc;
use serde::Deserialize;
use serde_json::json;

use super::Vault;
use super::policy::{Allowed, Asked, Attester, Refused, Who};
use super::secrets;
use crate::api::{Api, Caller, Connection, blocking, change_error, error, store_error};
use crate::control::{Applied, Change};

type Shared = Arc<Api>;

/// The vault, or why there is none.
fn vault(s: &Api) -> Result<&Arc<Vault>, Response> {
    s.vault.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "this runtime has no vault: add a [vault] section to enclave.toml",
        )
    })
}

fn path3(repo: &str, kind: &str, tag: &str) -> Result<String, Response> {
    let path = format!("{repo}/{kind}/{tag}");
    secrets::check_path(&path).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    Ok(path)
}

fn key_name(name: &str) -> Result<(), Response> {
    enclave_config::vault::check_name(name)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("key name {e}")))
}

/// The policies in force that cover secret `path`, by name.
fn covering(s: &Api, asked: Asked<'_>) -> Vec<String> {
    s.control
        .snapshot()
        .policies
        .iter()
        .filter(|(_, p)| match asked {
            Asked::Secret(path) => p.covers_resource(path),
            Asked::Key(k) => p.covers_key(k),
        })
        .map(|(n, _)| n.clone())
        .collect()
}

pub(crate) async fn secret_put(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let path = match path3(&repo, &kind, &tag) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if body.len() > secrets::MAX_SECRET_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the secret is {} bytes; the vault keeps at most {} (keys, passwords, tokens: not files)",
                body.len(),
                secrets::MAX_SECRET_BYTES
            ),
        );
    }
    let covered_by = covering(&s, Asked::Secret(&path));
    let (store, p) = (s.store.clone(), path.clone());
    let body = zeroize::Zeroizing::new(body.to_vec());
    match blocking(move || secrets::put_secret(&store, &p, &body).map_err(store_error)).await {
        Ok(version) => {
            tracing::info!(target: "enclave_os::audit", event = "vault.secret.put", secret = %path, subject = %caller.subject, version, "secret kept");
            let mut r = json!({ "path": path, "version": version, "covered_by": covered_by });
            if covered_by.is_empty() {
                r["warning"] =
                    json!("no policy covers this secret: it is released to nobody until one does");
            }
            Json(r).into_response()
        }
        Err(r) => r,
    }
}

pub(crate) async fn secret_delete(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path((repo, kind, tag)): Path<(String, String, String)>,
) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let path = match path3(&repo, &kind, &tag) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (store, p) = (s.store.clone(), path.clone());
    match blocking(move || secrets::delete_secret(&store, &p).map_err(store_error)).await {
        Ok(true) => {
            tracing::info!(target: "enclave_os::audit", event = "vault.secret.delete", secret = %path, subject = %caller.subject, "secret removed");
            Json(json!({ "path": path, "deleted": true })).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no secret {path} is kept")),
        Err(r) => r,
    }
}

pub(crate) async fn secrets_list(Axum(s): Axum<Shared>) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let store = s.store.clone();
    match blocking(move || secrets::secret_paths(&store).map_err(store_error)).await {
        Ok(paths) => {
            let list: Vec<_> = paths
                .iter()
                .map(|p| json!({ "path": p, "covered_by": covering(&s, Asked::Secret(p)) }))
                .collect();
            Json(json!({ "secrets": list })).into_response()
        }
        Err(r) => r,
    }
}

pub(crate) async fn policies_list(Axum(s): Axum<Shared>) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let now = s.control.snapshot();
    let list: Vec<_> = now
        .policies
        .iter()
        .map(|(name, p)| {
            let leaf = format!("vault/policy/{name}");
            let hash = now
                .tree
                .leaves()
                .iter()
                .find(|l| l.name == leaf)
                .map(|l| hex::encode(l.value_hash));
            json!({ "name": name, "leaf": leaf, "value_sha256": hash, "policy": p })
        })
        .collect();
    Json(json!({ "config_root": hex::encode(now.root()), "policies": list })).into_response()
}

/// One policy as its leaf commits it: the exact bytes, whose SHA-256 is the leaf's value hash.
pub(crate) async fn policy_get(Axum(s): Axum<Shared>, Path(name): Path<String>) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let now = s.control.snapshot();
    let Some(p) = now.policies.get(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no vault policy '{name}'"));
    };
    match enclave_config::canonical::jcs(p) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) async fn policy_put(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let policy: PolicyDoc = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the policy is not a vault policy document (docs/vault.md): {e}"),
            );
        }
    };
    let change = Change::PutPolicy {
        name: name.clone(),
        policy,
    };
    policy_changed(&s, change, &name, &caller.subject, "put").await
}

pub(crate) async fn policy_delete(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let change = Change::DeletePolicy { name: name.clone() };
    policy_changed(&s, change, &name, &caller.subject, "deleted").await
}

async fn policy_changed(s: &Api, change: Change, name: &str, sub: &str, action: &str) -> Response {
    match s.control.submit(change).await {
        Ok(applied) => {
            let root = match applied {
                Applied::Published(root) => root,
                Applied::Unchanged => s.control.snapshot().root(),
            };
            let root = hex::encode(root);
            tracing::info!(target: "enclave_os::audit", event = "vault.policy", policy = %name, subject = %sub, config_root = %root, action, "vault policy {action}");
            Json(json!({ "name": name, "config_root": root })).into_response()
        }
        Err(e) => change_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateKey {
    kind: String,
}

pub(crate) async fn key_generate(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(req): Json<GenerateKey>,
) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    if let Err(r) = key_name(&name) {
        return r;
    }
    let kind = match enclave_vault::keys::KeyKind::from_name(&req.kind) {
        Ok(k) => k,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("kind: {e}")),
    };
    let (store, n) = (s.store.clone(), name.clone());
    let made = blocking(move || {
        if secrets::key(&store, &n)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?
            .is_some()
        {
            return Err(error(
                StatusCode::CONFLICT,
                format!("key '{n}' exists; delete it first (its holders lose it)"),
            ));
        }
        // RSA generation takes a while: on a blocking thread, never an async worker.
        let key = enclave_vault::keys::VaultKey::generate(kind)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        secrets::put_key(&store, &n, &key)
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        Ok(key)
    })
    .await;
    match made {
        Ok(key) => {
            tracing::info!(target: "enclave_os::audit", event = "vault.key.generate", key = %name, kind = %req.kind, kid = %key.kid(), subject = %caller.subject, "key generated inside the TEE");
            (StatusCode::CREATED, Json(public_view(&name, &key))).into_response()
        }
        Err(r) => r,
    }
}

/// A key as anyone may see it: never its private half.
fn public_view(name: &str, key: &enclave_vault::keys::VaultKey) -> serde_json::Value {
    json!({
        "name": name,
        "kind": key.kind().name(),
        "kid": key.kid(),
        "public_jwk": key.public_jwk(),
        "public_pem": key.public_pem(),
    })
}

pub(crate) async fn key_get(Axum(s): Axum<Shared>, Path(name): Path<String>) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    if let Err(r) = key_name(&name) {
        return r;
    }
    let (store, n) = (s.store.clone(), name.clone());
    match blocking(move || {
        secrets::key(&store, &n).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await
    {
        Ok(Some(key)) => Json(public_view(&name, &key)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no key '{name}'")),
        Err(r) => r,
    }
}

pub(crate) async fn keys_list(Axum(s): Axum<Shared>) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    let store = s.store.clone();
    match blocking(move || {
        let mut out = Vec::new();
        for n in secrets::key_names(&store).map_err(store_error)? {
            if let Some(k) =
                secrets::key(&store, &n).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))?
            {
                out.push(json!({ "name": n, "kind": k.kind().name(), "kid": k.kid() }));
            }
        }
        Ok(out)
    })
    .await
    {
        Ok(list) => Json(json!({ "keys": list })).into_response(),
        Err(r) => r,
    }
}

pub(crate) async fn key_delete(
    Axum(s): Axum<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = vault(&s) {
        return r;
    }
    if let Err(r) = key_name(&name) {
        return r;
    }
    let (store, n) = (s.store.clone(), name.clone());
    match blocking(move || secrets::delete_key(&store, &n).map_err(store_error)).await {
        Ok(true) => {
            tracing::info!(target: "enclave_os::audit", event = "vault.key.delete", key = %name, subject = %caller.subject, "key removed");
            Json(json!({ "name": name, "deleted": true })).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no key '{name}'")),
        Err(r) => r,
    }
}

pub(crate) async fn jwks(Axum(s): Axum<Shared>) -> Response {
    match vault(&s) {
        Ok(v) => (
            [(header::CONTENT_TYPE, "application/json")],
            v.kbs.token_key().jwks().to_string(),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// The mutual RA-TLS caller of this request, verified: on the vault's name only, where the
/// handshake asked for a client certificate.
async fn ratls_caller(
    v: &Arc<Vault>,
    conn: &Connection,
    peer: Option<&Arc<crate::front::gate::Peer>>,
) -> Result<Attester, Response> {
    let Some(host) = &v.hostname else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the vault's mutual RA-TLS way in is closed: set vault.hostname in enclave.toml",
        ));
    };
    if !conn
        .server_name
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case(host))
    {
        return Err(error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "/vault/v1 is served on connections made for the vault's name: connect with SNI {host} and a client certificate"
            ),
        ));
    }
    let peer = peer.ok_or_else(|| {
        error(
            StatusCode::FORBIDDEN,
            "this connection carries no client chain",
        )
    })?;
    let report = peer
        .vault_verdict(v)
        .await
        .map_err(|why| error(StatusCode::FORBIDDEN, why))?;
    // Bound by the evidence only in a DICE leaf; a seed leaf's extension is its issuer's word.
    let bound = matches!(
        report.key_binding,
        enclave_ratls::cert::KeyBinding::EnclaveOsDice {
            config_root_bound: true,
            ..
        }
    );
    let config_root = report
        .config_root
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(|r| (r, bound));
    Ok(Attester {
        appraisal: report.appraisal.clone(),
        config_root,
    })
}

/// The vault, this request's verified mutual RA-TLS caller, and the rule that lets it have
/// `asked`; or the response refusing it.
async fn ratls_allowed(
    s: &Api,
    conn: &Connection,
    peer: Option<Extension<Arc<crate::front::gate::Peer>>>,
    headers: &axum::http::HeaderMap,
    asked: Asked<'_>,
) -> Result<(Arc<Vault>, Attester, Allowed), Response> {
    let v = vault(s)?.clone();
    let attester = ratls_caller(&v, conn, peer.as_ref().map(|p| &p.0))
        .await
        .inspect_err(|_| v.metrics.vault("ratls", false))?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let allowed = v
        .decide("ratls", asked, Who::Remote(&attester), authorization)
        .map_err(refused)?;
    Ok((v, attester, allowed))
}

fn refused(r: Refused) -> Response {
    match r {
        Refused::Uncovered(why) | Refused::Denied(why) => error(StatusCode::FORBIDDEN, why),
    }
}

pub(crate) async fn ratls_secret(
    Axum(s): Axum<Shared>,
    Extension(conn): Extension<Connection>,
    peer: Option<Extension<Arc<crate::front::gate::Peer>>>,
    headers: axum::http::HeaderMap,
    Path((repo, kind, tag)): Path<(String, String, String)>,
) -> Response {
    let path = match path3(&repo, &kind, &tag) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let asked = Asked::Secret(&path);
    let (v, attester, allowed) = match ratls_allowed(&s, &conn, peer, &headers, asked).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let store = v.store.clone();
    let p = path.clone();
    match blocking(move || secrets::secret(&store, &p).map_err(store_error)).await {
        Ok(Some(value)) => {
            v.released("ratls", asked, Who::Remote(&attester), &allowed);
            (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                value.to_vec(),
            )
                .into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("secret {path} is allowed to this caller, and none is kept"),
        ),
        Err(r) => r,
    }
}

pub(crate) async fn ratls_key(
    Axum(s): Axum<Shared>,
    Extension(conn): Extension<Connection>,
    peer: Option<Extension<Arc<crate::front::gate::Peer>>>,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = key_name(&name) {
        return r;
    }
    let asked = Asked::Key(&name);
    let (v, attester, allowed) = match ratls_allowed(&s, &conn, peer, &headers, asked).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (store, n) = (v.store.clone(), name.clone());
    let found = blocking(move || {
        secrets::key(&store, &n).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await;
    match found {
        Ok(Some(key)) => match key.private_jwk() {
            // The JWK text as made, inside `{"key": …}`: never parsed into a copy that is not
            // zeroized.
            Ok(jwk) => {
                v.released("ratls", asked, Who::Remote(&attester), &allowed);
                let body = zeroize::Zeroizing::new(format!("{{\"key\":{}}}", jwk.as_str()));
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    body.as_bytes().to_vec(),
                )
                    .into_response()
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no key '{name}'")),
        Err(r) => r,
    }
}

/// The vault's routes: public, `vault:read`, `vault:write`, and the ways in.
pub(crate) fn router(state: &Shared) -> Router<Shared> {
    use axum::routing::{post, put};
    let public = Router::new()
        .route("/api/v1/vault/policies", get(policies_list))
        .route("/api/v1/vault/policies/{name}", get(policy_get))
        .route("/.well-known/enclave-os/jwks.json", get(jwks))
        .route("/vault/v1/secrets/{repo}/{kind}/{tag}", get(ratls_secret))
        .route("/vault/v1/keys/{name}", get(ratls_key))
        .merge(super::kbs::router());
    let read = crate::api::guarded(
        state,
        crate::auth::Scope::VaultRead,
        Router::new()
            .route("/api/v1/vault/secrets", get(secrets_list))
            .route("/api/v1/vault/keys", get(keys_list))
            .route("/api/v1/vault/keys/{name}", get(key_get)),
    );
    let write = crate::api::guarded(
        state,
        crate::auth::Scope::VaultWrite,
        Router::new()
            .route(
                "/api/v1/vault/secrets/{repo}/{kind}/{tag}",
                put(secret_put).delete(secret_delete),
            )
            .route(
                "/api/v1/vault/policies/{name}",
                put(policy_put).delete(policy_delete),
            )
            .route(
                "/api/v1/vault/keys/{name}",
                post(key_generate).delete(key_delete),
            ),
    );
    public.merge(read).merge(write)
}
