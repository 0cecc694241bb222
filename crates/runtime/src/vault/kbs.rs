//! The Trustee KBS protocol's HTTP side (`/kbs/v0`): what Confidential Containers guests
//! (guest-components' `kbs_protocol`) call, unchanged.
//!
//! `enclave_vault::kbs` keeps the sessions, checks the nonce and computes the report data
//! binding; this module verifies the evidence (the runtime's verifier, the vault's simulation
//! trust), decides a release with the committed policies, and answers in Trustee's shapes:
//! bodies as JSON, refusals as RFC 7807 with Trustee's type URIs (401, as Trustee answers almost
//! all of them).
//!
//! Evidence accepted: `tdx` and `sgx` (`{"quote": <base64 DCAP quote>, …}`, as guest-components'
//! attesters send it). `snp` evidence comes as the `sev` crate's JSON form of the report, which
//! this build does not read back into the report's bytes: refused with that reason. Device
//! evidence (`additional-evidence`) cannot be appraised here: refused.

// A handler's error is the response it sends (axum's own pattern, as in `api`).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as Axum};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use enclave_vault::kbs::{KbsError, PendingAttestation, ResourcePath};
use enclave_vault::{Appraisal, TrustTier, TrustVector};
use kbs_types::Tee;

use super::Vault;
use super::policy::{Asked, Attester, Refused, Who};
use super::secrets;
use crate::api::{Api, blocking};

type Shared = Arc<Api>;

/// The appraisals of attested sessions, by session id, until the session expires: what a
/// `/resource` request is decided on.
#[derive(Default)]
pub(crate) struct Attested {
    by_session: Mutex<HashMap<String, (Attester, SystemTime)>>,
}

impl Attested {
    fn insert(&self, id: String, a: Attester, expires: SystemTime, max: usize, now: SystemTime) {
        let mut m = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= max {
            m.retain(|_, (_, e)| *e > now);
        }
        // The KBS's own table bounds live sessions; this one never outgrows it by more than the
        // sessions that expired since the last prune.
        if m.len() < max.saturating_mul(2) {
            m.insert(id, (a, expires));
        }
    }

    fn get(&self, id: &str) -> Option<Attester> {
        let m = self.by_session.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).map(|(a, _)| a.clone())
    }
}

/// A refusal in Trustee's form.
fn problem(e: &KbsError) -> Response {
    problem_with(StatusCode::UNAUTHORIZED, &e.type_uri(), &e.to_string())
}

fn problem_with(status: StatusCode, type_uri: &str, detail: &str) -> Response {
    let body = serde_json::json!({ "type": type_uri, "detail": detail }).to_string();
    (
        status,
        [(
            header::CONTENT_TYPE,
            enclave_vault::kbs::PROBLEM_CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

fn no_vault() -> Response {
    problem_with(
        StatusCode::NOT_FOUND,
        &format!("{}/PluginNotFound", enclave_vault::kbs::ERROR_TYPE_PREFIX),
        "this runtime has no vault: add a [vault] section to enclave.toml",
    )
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::COOKIE).and_then(|v| v.to_str().ok())
}

fn json_with_cookie(body: String, set_cookie: &str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(v) = header::HeaderValue::from_str(set_cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn auth(Axum(s): Axum<Shared>, body: Bytes) -> Response {
    let Some(v) = &s.vault else {
        return no_vault();
    };
    match v.kbs.auth(&body, SystemTime::now()) {
        Ok(a) => json_with_cookie(a.body, &a.set_cookie),
        Err(e) => {
            tracing::debug!(reason = %e, "KBS auth refused");
            problem(&e)
        }
    }
}

/// The DCAP quote in `tdx` or `sgx` evidence JSON.
fn quote_of(evidence: &serde_json::Value) -> Result<Vec<u8>, String> {
    let text = evidence
        .get("quote")
        .and_then(|q| q.as_str())
        .ok_or("the evidence has no \"quote\" member (a base64 DCAP quote)")?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .map_err(|e| format!("the evidence's quote is not base64: {e}"))
}

/// Verify `pending`'s evidence and its binding: the attester, or why not.
fn appraise(v: &Vault, pending: &PendingAttestation) -> Result<Attester, String> {
    if !pending.additional.is_empty() {
        return Err(
            "additional (device) evidence cannot be appraised by this KBS: attest without it"
                .into(),
        );
    }
    let expected = match pending.tee {
        Tee::Tdx => enclave_evidence::TeeKind::Tdx,
        Tee::Sgx => enclave_evidence::TeeKind::Sgx,
        Tee::Snp => {
            return Err(
                "snp evidence arrives as the sev crate's JSON form of the report, which this KBS does not read back into the report's bytes yet: attest with tdx or sgx, or use mutual RA-TLS (/vault/v1)"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "TEE {other} is not appraised here (tdx and sgx are)"
            ));
        }
    };
    let quote = quote_of(&pending.evidence)?;
    let appraisal = v
        .verifier
        .appraise(&quote, Vec::new(), enclave_evidence::time::now())
        .map_err(|e| e.to_string())?;
    if appraisal.tee != expected {
        return Err(format!(
            "the client said {} in /auth and sent {} evidence",
            pending.tee, appraisal.tee
        ));
    }
    if !pending.binds(&appraisal.report_data) {
        return Err(format!(
            "the evidence's report data does not bind this session (expected the {} hash of the JCS runtime data {{nonce, tee-pubkey, additional-evidence}}, zero-padded)",
            match pending.hash {
                enclave_vault::kbs::BindingHash::Sha384 => "SHA-384",
                enclave_vault::kbs::BindingHash::Sha512 => "SHA-512",
            }
        ));
    }
    Ok(Attester {
        appraisal,
        config_root: None,
    })
}

async fn attest(Axum(s): Axum<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(v) = s.vault.clone() else {
        return no_vault();
    };
    let now = SystemTime::now();
    let pending = match v.kbs.attest(cookie(&headers), &body, now) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(reason = %e, "KBS attest refused");
            return problem(&e);
        }
    };
    // Quote verification is CPU work (signatures, certificate chains): off the async workers,
    // a bounded number at once.
    let Ok(permit) = v.appraisals.clone().acquire_owned().await else {
        return problem(&KbsError::EvidenceRefused("the vault is stopping".into()));
    };
    let vault = v.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let attester = appraise(&vault, &pending)
            // An attested session is kept its full time and never evicted: only for an
            // attester some policy could release something to, or genuine evidence of any
            // code could fill the table.
            .and_then(|a| {
                super::policy::admits_any(&vault.control.snapshot().policies, &a).map(|()| a)
            })
            .map_err(|why| {
                // Another try needs a new session and nonce: no verifying evidence over and
                // over on one session.
                vault.kbs.fail(&pending);
                KbsError::EvidenceRefused(why)
            })?;
        let claims = serde_json::to_value(&attester.appraisal).unwrap_or_default();
        let a = &attester.appraisal;
        let trust = TrustVector {
            instance_identity: Some(2),
            hardware: Some(if a.simulated { 32 } else { 2 }),
            ..TrustVector::default()
        };
        let response = vault.kbs.complete(
            &pending,
            Appraisal {
                status: if a.simulated {
                    TrustTier::Warning
                } else {
                    TrustTier::Affirming
                },
                trust_vector: trust,
                policy_id: "enclave-os/vault/policy".into(),
                tee_claims: claims,
            },
            SystemTime::now(),
        )?;
        Ok::<_, KbsError>((pending.session_id.clone(), attester, response))
    })
    .await;
    match outcome {
        Ok(Ok((id, attester, response))) => {
            tracing::info!(
                target: "enclave_os::audit",
                event = "vault.attest",
                via = "kbs",
                tee = %attester.appraisal.tee,
                measurement = %hex::encode(attester.appraisal.measurements.primary()),
                simulated = attester.appraisal.simulated,
                "KBS attester appraised"
            );
            let ttl = v.session_ttl;
            v.attested
                .insert(id, attester, now + ttl, v.max_sessions, SystemTime::now());
            json_with_cookie(response.body, &response.set_cookie)
        }
        // Anyone may send evidence: a refusal is counted, and logged at debug level only, so
        // that a client cannot fill the log (releases and policy refusals are always logged).
        Ok(Err(e)) => {
            tracing::debug!(target: "enclave_os::audit", event = "vault.attest", via = "kbs", reason = %e, "KBS attester refused");
            v.metrics.vault("kbs", false);
            problem(&e)
        }
        Err(e) => problem_with(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{}/AttestationError", enclave_vault::kbs::ERROR_TYPE_PREFIX),
            &e.to_string(),
        ),
    }
}

async fn resource(
    Axum(s): Axum<Shared>,
    headers: HeaderMap,
    Path((repo, kind, tag)): Path<(String, String, String)>,
) -> Response {
    let Some(v) = s.vault.clone() else {
        return no_vault();
    };
    let path = match ResourcePath::parse(&format!("{repo}/{kind}/{tag}")) {
        Ok(p) => p.to_string(),
        Err(e) => return problem(&e),
    };
    let session = match v.kbs.resource_session(cookie(&headers), SystemTime::now()) {
        Ok(s) => s,
        Err(e) => {
            v.metrics.vault("kbs", false);
            return problem(&e);
        }
    };
    let Some(attester) = v.attested.get(&session.session_id) else {
        return problem(&KbsError::NotAttested);
    };
    let allowed = match v.decide("kbs", Asked::Secret(&path), Who::Remote(&attester), None) {
        Ok(a) => a,
        Err(r) => {
            let why = match r {
                Refused::Uncovered(w) | Refused::Denied(w) => w,
            };
            return problem(&KbsError::PolicyDeny(why));
        }
    };
    let store = v.store.clone();
    let p = path.clone();
    let value = match blocking(move || secrets::secret(&store, &p).map_err(crate::api::store_error))
        .await
    {
        Ok(Some(value)) => value,
        Ok(None) => {
            return problem_with(
                StatusCode::NOT_FOUND,
                &format!(
                    "{}/PluginInternalError",
                    enclave_vault::kbs::ERROR_TYPE_PREFIX
                ),
                &format!("resource {path} is allowed to this attester, and none is kept"),
            );
        }
        Err(r) => return r,
    };
    match v.kbs.encrypt_resource(&session, &value) {
        Ok(body) => {
            v.released(
                "kbs",
                Asked::Secret(&path),
                Who::Remote(&attester),
                &allowed,
            );
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => problem(&e),
    }
}

/// `/kbs/v0/…`.
pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/kbs/v0/auth", post(auth))
        .route("/kbs/v0/attest", post(attest))
        .route("/kbs/v0/resource/{repo}/{kind}/{tag}", get(resource))
}

/// How long attested sessions are remembered, and how many.
pub(crate) fn settings(v: &enclave_config::vault::VaultConfig) -> (Duration, usize) {
    (
        Duration::from_secs(v.session_ttl_secs),
        v.max_sessions as usize,
    )
}
