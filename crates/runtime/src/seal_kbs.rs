//! The sealing root key of a TEE without one of its own (TDX), obtained from a KBS after
//! attesting to it (`seal_key_kbs`): the Trustee KBS protocol as a client.
//!
//! 1. `POST /kbs/v0/auth` (version 0.4.0, this TEE), which answers a nonce and a session cookie;
//! 2. a fresh P-256 key made for this exchange only; evidence from this TEE whose report data is
//!    the SHA-384 of the RFC 8785 form of `{nonce, tee-pubkey, additional-evidence: ""}`;
//!    `POST /kbs/v0/attest`;
//! 3. `GET /kbs/v0/resource/<repo>/<type>/<tag>`: a JWE to that key, decrypted here; the 32
//!    bytes inside (raw, or 64 hex digits) are the root key sealing keys derive from.
//!
//! Whom the runtime trusts to be the KBS is committed (`sealing/kbs`, `sealing/kbs-root`,
//! `sealing/kbs-policy`, `sealing/kbs-trust-sim`): with a policy, the KBS must be an RA-TLS
//! server (an Enclave OS vault) whose evidence satisfies it, so the key comes only from code the
//! operator approved; without, plain TLS to the committed root (a Trustee KBS). A host cannot
//! point the runtime at a KBS of its own: it would have to change the config root.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use enclave_config::LoadedConfig;
use enclave_config::vault::SealKeyKbs;
use enclave_http::header::{COOKIE, HeaderValue, SET_COOKIE};
use enclave_http::{Client, Method, Request};
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config};
use enclave_tee::Tee;
use zeroize::Zeroizing;

use crate::RuntimeError;

/// Attempts before giving up (the KBS may be starting), and the pause between them.
const ATTEMPTS: u32 = 5;
const PAUSE: Duration = Duration::from_secs(2);

fn fail(reason: String) -> RuntimeError {
    RuntimeError::Tee(enclave_tee::TeeError::NoSealingKey(format!(
        "seal_key_kbs: {reason}"
    )))
}

/// The TLS configuration the KBS is reached with, from the committed trust.
fn tls(config: &LoadedConfig, k: &SealKeyKbs) -> Result<Arc<rustls::ClientConfig>, String> {
    let trust = config.kbs_trust();
    let (sim, policy) = (trust.trust_sim, trust.policy);
    let root = trust.root.ok_or("its root was not read at load")?;
    let Some(policy) = policy else {
        return crate::https::pinned(root).map(Arc::new);
    };
    let text = std::str::from_utf8(policy).map_err(|_| "policy: not UTF-8 text".to_string())?;
    let policy = enclave_evidence::Policy::from_toml(text, "seal_key_kbs.policy")
        .map_err(|e| e.to_string())?;
    let sim_dir = k.trust_sim.as_ref().map(|p| config.resolve(p));
    let verifier =
        crate::trust::committed("seal_key_kbs.root", Some(root), sim, sim_dir.as_deref())?
            .with_policy(policy);
    let verifier = match &k.config_root {
        Some(hexed) => {
            let mut pinned = [0u8; 32];
            hex::decode_to_slice(hexed, &mut pinned)
                .map_err(|e| format!("config_root '{hexed}': {e}"))?;
            verifier.with_config_root(pinned)
        }
        None => verifier,
    };
    let verifier = Arc::new(RatlsServerVerifier::new(verifier, Freshness::Deterministic));
    client_config(verifier, None, None)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The root key from the KBS `seal_key_kbs` names, for `tee`'s evidence.
pub(crate) fn root_key(
    config: &LoadedConfig,
    k: &SealKeyKbs,
    tee: &dyn Tee,
) -> Result<Zeroizing<[u8; 32]>, RuntimeError> {
    let tls = tls(config, k).map_err(fail)?;
    let client = Client::new(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .max_body(1 << 20);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match exchange(&client, k, tee) {
            Ok(key) => return Ok(key),
            // A refusal with a reason will not change by asking again.
            Err(Exchange::Refused(why)) => return Err(fail(why)),
            Err(Exchange::Unreachable(why)) => {
                tracing::warn!(kbs = %k.url, attempt, reason = %why, "KBS not reached");
                last = why;
            }
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(PAUSE);
        }
    }
    Err(fail(format!(
        "{} not reached after {ATTEMPTS} attempts: {last}",
        k.url
    )))
}

enum Exchange {
    /// The KBS answered and refused (or answered nonsense): why.
    Refused(String),
    /// The KBS could not be reached.
    Unreachable(String),
}

/// One request; the reply's status, cookie and body.
fn call(
    client: &Client,
    k: &SealKeyKbs,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<(u16, Option<String>, Vec<u8>), Exchange> {
    let url = format!("{}{path}", k.url.trim_end_matches('/'));
    let uri = url
        .parse()
        .map_err(|e| Exchange::Refused(format!("{url}: {e}")))?;
    let mut r = Request::new(method, uri);
    if let Some(b) = body {
        r = r.json(b);
    }
    if let Some(c) = cookie {
        let v = HeaderValue::from_str(c).map_err(|_| {
            Exchange::Refused("the KBS's session cookie is not a header value".into())
        })?;
        r = r.header(COOKIE, v);
    }
    let response = client.send_blocking(r).map_err(|e| match e.tls_error() {
        // A KBS that is not the one committed: never retried into success.
        Some(_) => Exchange::Refused(format!("{url}: {e}")),
        None => Exchange::Unreachable(format!("{url}: {e}")),
    })?;
    let cookie = response
        .headers
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    Ok((response.status.as_u16(), cookie, response.body))
}

/// A non-200 answer as the KBS explained it (RFC 7807 `detail`, else the body).
fn refused(step: &str, status: u16, body: &[u8]) -> Exchange {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(512).collect());
    Exchange::Refused(format!("{step}: the KBS answered {status}: {detail}"))
}

fn exchange(
    client: &Client,
    k: &SealKeyKbs,
    tee: &dyn Tee,
) -> Result<Zeroizing<[u8; 32]>, Exchange> {
    let kind = match tee.kind() {
        enclave_evidence::TeeKind::Tdx => kbs_types::Tee::Tdx,
        enclave_evidence::TeeKind::Sgx => kbs_types::Tee::Sgx,
        other => {
            return Err(Exchange::Refused(format!(
                "{other} evidence is not sent over the KBS protocol by this runtime (tdx and sgx are)"
            )));
        }
    };
    let request = kbs_types::Request {
        version: "0.4.0".into(),
        tee: kind,
        extra_params: serde_json::Value::String(String::new()),
    };
    let body = serde_json::to_vec(&request).map_err(|e| Exchange::Refused(e.to_string()))?;
    let (status, cookie, reply) = call(client, k, Method::POST, "/kbs/v0/auth", None, Some(body))?;
    if status != 200 {
        return Err(refused("auth", status, &reply));
    }
    let cookie = cookie.ok_or_else(|| Exchange::Refused("auth: no session cookie".into()))?;
    let challenge: kbs_types::Challenge = serde_json::from_slice(&reply)
        .map_err(|e| Exchange::Refused(format!("auth: not a challenge: {e}")))?;

    // A key for this exchange only: what the resource is encrypted to.
    let key = enclave_vault::VaultKey::generate(enclave_vault::KeyKind::EcP256)
        .map_err(|e| Exchange::Refused(e.to_string()))?;
    let pubkey = key
        .tee_pubkey()
        .ok_or_else(|| Exchange::Refused("the exchange key has no public half".into()))?;
    let runtime_data = serde_json::json!({
        "nonce": challenge.nonce,
        "tee-pubkey": pubkey,
        "additional-evidence": "",
    });
    let binding =
        enclave_vault::kbs::report_data_for(&runtime_data, enclave_vault::kbs::BindingHash::Sha384)
            .map_err(|e| Exchange::Refused(e.to_string()))?;
    let mut report_data = [0u8; 64];
    report_data[..binding.len().min(64)].copy_from_slice(&binding[..binding.len().min(64)]);
    let bundle = tee
        .evidence(&report_data)
        .map_err(|e| Exchange::Refused(format!("evidence: {e}")))?;
    let attestation = kbs_types::Attestation {
        init_data: None,
        runtime_data: kbs_types::RuntimeData {
            nonce: challenge.nonce,
            tee_pubkey: pubkey,
        },
        tee_evidence: kbs_types::CompositeEvidence {
            primary_evidence: serde_json::json!({
                "quote": base64::engine::general_purpose::STANDARD.encode(&bundle.evidence),
                "cc_eventlog": null,
            }),
            additional_evidence: String::new(),
        },
    };
    let body = serde_json::to_vec(&attestation).map_err(|e| Exchange::Refused(e.to_string()))?;
    let (status, _, reply) = call(
        client,
        k,
        Method::POST,
        "/kbs/v0/attest",
        Some(&cookie),
        Some(body),
    )?;
    if status != 200 {
        // A session evicted (or expired) before its evidence arrived: start again.
        let detail = String::from_utf8_lossy(&reply);
        if detail.contains("unknown KBS session") || detail.contains("expired") {
            return Err(Exchange::Unreachable(format!(
                "attest: the KBS dropped the session before the evidence arrived: {detail}"
            )));
        }
        return Err(refused("attest", status, &reply));
    }
    let (status, _, reply) = call(
        client,
        k,
        Method::GET,
        &format!("/kbs/v0/resource/{}", k.resource),
        Some(&cookie),
        None,
    )?;
    if status != 200 {
        return Err(refused(&format!("resource {}", k.resource), status, &reply));
    }
    let jwe: kbs_types::Response = serde_json::from_slice(&reply)
        .map_err(|e| Exchange::Refused(format!("resource: not a JWE: {e}")))?;
    let recipient = key
        .recipient()
        .ok_or_else(|| Exchange::Refused("the exchange key cannot decrypt".into()))?;
    let plain = enclave_vault::jose::decrypt(&recipient, &jwe)
        .map_err(|e| Exchange::Refused(format!("resource: {e}")))?;
    root_from(&plain).map_err(Exchange::Refused)
}

/// 32 raw bytes, or 64 hex digits (with an optional trailing newline), not all zero.
fn root_from(plain: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut root = Zeroizing::new([0u8; 32]);
    if plain.len() == 32 {
        root.copy_from_slice(plain);
    } else {
        let text = std::str::from_utf8(plain).map_err(|_| {
            format!(
                "the resource is {} bytes: 32 raw bytes or 64 hex digits expected",
                plain.len()
            )
        })?;
        hex::decode_to_slice(text.trim(), root.as_mut()).map_err(|_| {
            format!(
                "the resource is {} bytes: 32 raw bytes or 64 hex digits expected",
                plain.len()
            )
        })?;
    }
    if root.iter().all(|b| *b == 0) {
        return Err("the resource's root key is all zeros".into());
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_root_key_is_32_bytes_or_64_hex_digits_and_never_zero() {
        assert_eq!(*root_from(&[7u8; 32]).unwrap(), [7u8; 32]);
        assert_eq!(
            *root_from(format!("{}\n", "ab".repeat(32)).as_bytes()).unwrap(),
            [0xab; 32]
        );
        assert!(root_from(&[0u8; 32]).unwrap_err().contains("zeros"));
        assert!(root_from(b"short").unwrap_err().contains("32 raw bytes"));
    }
}
