//! The witness: rollback counters kept by another Enclave OS instance, over mutual RA-TLS.
//!
//! A host can put back an old copy of everything on its own disks, counter included. It cannot
//! put back another machine's sealed state. So an instance may keep its store's counter in a
//! witness: another instance, whose certificate it verifies (evidence, the operator's root), and
//! which verifies its certificate in turn. Counter `id` is the client store's id.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /witness/v1/counters/<id>` | enrol: 201 `{"value": 0}`; 409 if already enrolled |
//! | `GET /witness/v1/counters/<id>` | `{"value": n}`; 404 if never enrolled |
//! | `POST /witness/v1/counters/<id>` `{"advance_to": n}` | `{"value": n}`; 409 when the counter is past `n`; 404 if never enrolled |
//!
//! A witness answers only for counters it enrolled. One that answered 0 for any id would let a
//! host restore a whole old state directory and route the witness's address to another witness
//! that never saw this store: the old database would look newer than the counter, and be
//! accepted. A client enrols only when it creates its store; with a database on disk, an
//! unknown counter is a refusal to start.
//!
//! The client pins the witness: its certificate must chain to the operator's root, be valid for
//! the URL's host name, and carry the pinned config root or satisfy the pinned appraisal policy
//! (`[store.witness]`), so another instance of the same operator cannot answer for it.
//!
//! The witness keeps counters in its own sealed store (namespace `sys/witness`), so they have
//! the witness's own rollback protection. Any client chaining to the configured root may enrol
//! or advance any counter: a client can only create counters that do not exist and move them
//! forward, so the worst a misbehaving instance of the same operator can do is make another
//! refuse to start (fail closed), never accept a rollback.

// A handler's error is the response it sends (axum's own pattern); it is built once per
// request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enclave_ratls::RatlsVerifier;
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsResolver, RatlsServerVerifier, client_config};
use enclave_store::{Counter, CounterError, Recorded, StateDigest, Store, StoreId};
use serde::Deserialize;
use serde_json::json;

use crate::https;

const NAMESPACE: &str = "sys/witness";
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read: a counter's JSON is under a hundred bytes.
const MAX_ANSWER: usize = 64 * 1024;
/// Waits between attempts at a witness call.
const RETRIES: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(1500)];

/// The witness side.
pub(crate) struct Witness {
    pub store: Arc<Store>,
    /// Read-compare-write of one counter must not interleave with another.
    lock: Mutex<()>,
}

impl Witness {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            lock: Mutex::new(()),
        }
    }

    /// The counter's value and the state digest recorded with it (none before the first
    /// advance that gave one), or 404 when it was never enrolled. Kept as `version (8, BE)`,
    /// then the digest (32) once one was recorded.
    fn read(&self, id: &str) -> Result<Recorded, (StatusCode, String)> {
        match self
            .store
            .get(NAMESPACE, id.as_bytes())
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        {
            None => Err((
                StatusCode::NOT_FOUND,
                format!(
                    "counter {id} is not enrolled at this witness: a counter exists only once its \
                     store enrolled it, when the store was created"
                ),
            )),
            Some(v) => {
                let corrupt = || {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("counter {id} is neither 8 nor 40 bytes"),
                    )
                };
                let version = v
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(corrupt)?;
                let state = match v.len() {
                    8 => None,
                    40 => v[8..].try_into().ok(),
                    _ => return Err(corrupt()),
                };
                Ok(Recorded { version, state })
            }
        }
    }

    fn write(&self, id: &str, r: &Recorded) -> Result<(), (StatusCode, String)> {
        let mut value = r.version.to_be_bytes().to_vec();
        if let Some(d) = &r.state {
            value.extend_from_slice(d);
        }
        self.store
            .put(NAMESPACE, id.as_bytes(), &value)
            .map(|_| ())
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    /// Create counter `id` at 0; 409 when it exists.
    fn enrol(&self, id: &str) -> Result<u64, (StatusCode, String)> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.read(id) {
            Ok(current) => Err((
                StatusCode::CONFLICT,
                format!("counter {id} is already enrolled, at {}", current.version),
            )),
            Err((StatusCode::NOT_FOUND, _)) => {
                self.write(
                    id,
                    &Recorded {
                        version: 0,
                        state: None,
                    },
                )?;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Move counter `id` to `to`, recording `state` with it. At its current version the state
    /// must be the one recorded: another state at the same version is a second database at
    /// that version, which the client's store must not be allowed to serve.
    fn advance(
        &self,
        id: &str,
        to: u64,
        state: Option<StateDigest>,
    ) -> Result<u64, (StatusCode, String)> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.read(id)?;
        if to < current.version {
            return Err((
                StatusCode::CONFLICT,
                format!(
                    "counter {id} is at {}; it cannot go back to {to}",
                    current.version
                ),
            ));
        }
        if to == current.version {
            match (current.state, state) {
                (Some(had), Some(new)) if had != new => {
                    return Err((
                        StatusCode::CONFLICT,
                        format!(
                            "counter {id} is at {to} with another state: two different databases \
                             claim version {to}"
                        ),
                    ));
                }
                (None, Some(_)) => self.write(id, &Recorded { version: to, state })?,
                _ => {}
            }
            return Ok(to);
        }
        self.write(id, &Recorded { version: to, state })?;
        Ok(to)
    }
}

fn parse_digest(hexed: &str) -> Result<StateDigest, String> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(hexed, &mut d)
        .map_err(|e| format!("state '{hexed}' is not 32 bytes of hex: {e}"))?;
    Ok(d)
}

fn valid_id(id: &str) -> Result<(), Response> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(crate::api::error(
            StatusCode::BAD_REQUEST,
            format!("counter id '{id}' is not 16 bytes of hex"),
        ))
    }
}

async fn get_counter(State(w): State<Arc<Witness>>, Path(id): Path<String>) -> Response {
    if let Err(r) = valid_id(&id) {
        return r;
    }
    match tokio::task::spawn_blocking(move || w.read(&id)).await {
        Ok(Ok(r)) => {
            Json(json!({ "value": r.version, "state": r.state.map(hex::encode) })).into_response()
        }
        Ok(Err((status, e))) => crate::api::error(status, e),
        Err(e) => crate::api::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn put_counter(State(w): State<Arc<Witness>>, Path(id): Path<String>) -> Response {
    if let Err(r) = valid_id(&id) {
        return r;
    }
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || w.enrol(&id2)).await {
        Ok(Ok(v)) => {
            tracing::info!(counter = %id, "witness counter enrolled");
            (StatusCode::CREATED, Json(json!({ "value": v }))).into_response()
        }
        Ok(Err((status, e))) => crate::api::error(status, e),
        Err(e) => crate::api::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct Advance {
    advance_to: u64,
    /// Hex SHA-256 of the state record at `advance_to` (clients from before it send none).
    #[serde(default)]
    state: Option<String>,
}

async fn post_counter(
    State(w): State<Arc<Witness>>,
    Path(id): Path<String>,
    Json(body): Json<Advance>,
) -> Response {
    if let Err(r) = valid_id(&id) {
        return r;
    }
    let state = match body.state.as_deref().map(parse_digest).transpose() {
        Ok(s) => s,
        Err(e) => return crate::api::error(StatusCode::BAD_REQUEST, e),
    };
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || w.advance(&id2, body.advance_to, state)).await {
        Ok(Ok(v)) => {
            tracing::info!(counter = %id, value = v, "witness counter advanced");
            Json(json!({ "value": v })).into_response()
        }
        Ok(Err((status, e))) => crate::api::error(status, e),
        Err(e) => crate::api::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The witness's routes (served only on its mutual RA-TLS listener).
pub(crate) fn router(w: Arc<Witness>) -> axum::Router {
    axum::Router::new()
        .route(
            "/witness/v1/counters/{id}",
            axum::routing::get(get_counter)
                .post(post_counter)
                .put(put_counter),
        )
        .with_state(w)
}

/// What the client requires of the witness beyond a chain to the operator's root.
#[derive(Debug, Default)]
pub struct WitnessPin {
    /// The config root the witness's certificate must carry.
    pub config_root: Option<[u8; 32]>,
    /// The appraisal policy its evidence must satisfy.
    pub policy: Option<enclave_evidence::policy::Policy>,
}

/// The client side: a [`Counter`] kept by a witness.
pub struct WitnessCounter {
    url: String,
    /// This store's counter at the witness.
    counter: enclave_http::Uri,
    id: StoreId,
    client: enclave_http::Client,
}

impl WitnessCounter {
    /// The counter for store `id` at the witness `url`, which must present an RA-TLS
    /// certificate that `verifier` accepts (built from the committed trust files, see
    /// `trust`), valid for the URL's host and meeting `pin`; this instance presents `own`.
    pub fn new(
        url: &str,
        verifier: RatlsVerifier,
        pin: WitnessPin,
        own: Arc<RatlsResolver>,
        id: StoreId,
    ) -> Result<Self, String> {
        let base = enclave_http::parse(url).map_err(|e| e.to_string())?;
        // Requests go to the witness's routes whatever path the URL carries.
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        let counter = format!("https://{authority}/witness/v1/counters/{id}")
            .parse()
            .map_err(|e| format!("{url}: {e}"))?;
        if pin.config_root.is_none() && pin.policy.is_none() {
            return Err("the witness is not pinned: give its config root or a policy".into());
        }
        let mut verifier = verifier;
        if let Some(root) = pin.config_root {
            verifier = verifier.with_config_root(root);
        }
        if let Some(policy) = pin.policy {
            verifier = verifier.with_policy(policy);
        }
        let verifier = Arc::new(RatlsServerVerifier::new(verifier, Freshness::Deterministic));
        let tls = client_config(verifier, None, Some(own)).map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.trim_end_matches('/').to_string(),
            counter,
            id,
            client: enclave_http::Client::new(Arc::new(tls))
                .max_body(MAX_ANSWER)
                .connect_timeout(TIMEOUT)
                .timeout(TIMEOUT),
        })
    }

    fn err(&self, reason: impl std::fmt::Display) -> CounterError {
        self.fault(enclave_store::CounterFault::Unavailable, reason)
    }

    fn fault(
        &self,
        fault: enclave_store::CounterFault,
        reason: impl std::fmt::Display,
    ) -> CounterError {
        CounterError {
            fault,
            counter: self.describe(),
            reason: reason.to_string(),
        }
    }

    /// Send `method` for this store's counter; the status and the JSON answer.
    fn call(
        &self,
        method: enclave_http::Method,
        body: Option<String>,
    ) -> Result<(u16, serde_json::Value), CounterError> {
        let mut request = enclave_http::Request::new(method, self.counter.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        // A witness's connection slots are taken before anyone authenticates, so anyone who
        // can reach its port can fill them for a moment; one failed attempt would then stop
        // this store (a write whose counter cannot advance stops it, fail closed). A few
        // attempts spread over about two seconds ride out a passing flood. Every request here
        // is idempotent: reads, `advance_to` (a counter already there answers the same), and
        // enrolment (a repeat answers 409, which the caller refuses).
        let mut attempt = 0;
        let (status, reply) = loop {
            match self
                .client
                .send_blocking(request.clone())
                .map_err(|e| https::describe(&e))
            {
                Ok(answer) => break (answer.status.as_u16(), answer.body),
                Err(e) if attempt >= RETRIES.len() => {
                    return Err(
                        self.err(format!("unreachable after {} attempts: {e}", attempt + 1))
                    );
                }
                Err(e) => {
                    tracing::warn!(witness = %self.url, error = %e, "witness call failed; trying again");
                    std::thread::sleep(RETRIES[attempt]);
                    attempt += 1;
                }
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&reply).map_err(|_| {
            self.fault(
                enclave_store::CounterFault::Refused,
                format!("answered {status} with a body that is not JSON"),
            )
        })?;
        Ok((status, v))
    }

    /// The counter's value from an answer that must have `expected` status.
    fn value(
        &self,
        (status, v): (u16, serde_json::Value),
        expected: u16,
    ) -> Result<u64, CounterError> {
        let refused = |reason: String| self.fault(enclave_store::CounterFault::Refused, reason);
        if status != expected {
            return Err(refused(format!(
                "answered {status}: {}",
                v["error"].as_str().unwrap_or("no reason given")
            )));
        }
        v["value"]
            .as_u64()
            .ok_or_else(|| refused("answered without a value".into()))
    }

    /// Enrol this store's counter at the witness: done once, for a store id generated in this
    /// start. Store ids are random, so a counter that already exists is not this store's to
    /// take over: refused.
    pub fn enrol(&self) -> Result<(), CounterError> {
        let answer = self.call(enclave_http::Method::PUT, None)?;
        self.value(answer, 201).map(|_| ())
    }
}

impl Counter for WitnessCounter {
    fn describe(&self) -> String {
        format!("the witness {} (counter {})", self.url, self.id)
    }

    fn read(&self) -> Result<u64, CounterError> {
        Ok(self.read_recorded()?.map_or(0, |r| r.version))
    }

    fn read_recorded(&self) -> Result<Option<Recorded>, CounterError> {
        let answer = self.call(enclave_http::Method::GET, None)?;
        let state = match answer.1["state"].as_str() {
            Some(h) => Some(parse_digest(h).map_err(|e| self.err(e))?),
            None => None,
        };
        let version = self.value(answer, 200)?;
        Ok(Some(Recorded { version, state }))
    }

    fn advance(&self, to: u64) -> Result<(), CounterError> {
        let body = json!({ "advance_to": to }).to_string();
        let answer = self.call(enclave_http::Method::POST, Some(body))?;
        self.value(answer, 200).map(|_| ())
    }

    fn advance_recorded(&self, to: u64, state: &StateDigest) -> Result<(), CounterError> {
        let body = json!({ "advance_to": to, "state": hex::encode(state) }).to_string();
        let answer = self.call(enclave_http::Method::POST, Some(body))?;
        self.value(answer, 200).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use enclave_store::{FileCounter, MasterKey};

    fn witness(dir: &std::path::Path) -> Witness {
        let master = MasterKey::from_bytes(&[7; 32]).unwrap();
        let id = StoreId([3; 16]);
        let counter = FileCounter::new(&dir.join("kv.counter"), &master, id).unwrap();
        let store = Store::open(&dir.join("kv.redb"), master, id, Box::new(counter)).unwrap();
        Witness::new(Arc::new(store))
    }

    #[test]
    fn counters_exist_by_enrolment_only_and_one_version_has_one_state() {
        let tmp = tempfile::tempdir().unwrap();
        let w = witness(tmp.path());
        let id = "00112233445566778899aabbccddeeff";
        let (status, why) = w.read(id).unwrap_err();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(why.contains("not enrolled"), "{why}");
        assert_eq!(
            w.advance(id, 1, Some([1; 32])).unwrap_err().0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(w.enrol(id).unwrap(), 0);
        assert_eq!(w.enrol(id).unwrap_err().0, StatusCode::CONFLICT);
        assert_eq!(w.advance(id, 1, Some([1; 32])).unwrap(), 1);
        // The same version again with the same state: a retried call, answered the same.
        assert_eq!(w.advance(id, 1, Some([1; 32])).unwrap(), 1);
        // The same version with another state: a second database at that version.
        let (status, why) = w.advance(id, 1, Some([2; 32])).unwrap_err();
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(why.contains("two different databases"), "{why}");
        assert_eq!(w.advance(id, 0, None).unwrap_err().0, StatusCode::CONFLICT);
        let r = w.read(id).unwrap();
        assert_eq!((r.version, r.state), (1, Some([1; 32])));
    }
}
