//! Workload backends: one trait for every kind of workload.
//!
//! A backend starts a workload's spec and hands back a [`Running`] workload, whose [`Handler`]
//! the front calls for each request routed to it. The front knows only that handler; the
//! control plane only starts, replaces and stops. A new kind (containers, processes) is a new
//! [`Backend`], and neither the listener nor the other backends change.
//!
//! Not here: routing, certificates, the store. A backend is told what to run, never where it is
//! reached or what the tree commits.

mod container;
mod process;
mod supervise;
mod unbuilt;
mod upstream;
mod wasm;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use enclave_config::file::{Workload, WorkloadCode, WorkloadKind};
use thiserror::Error;

pub(crate) use container::{ContainerBackend, Started, discard_prelaunched, prelaunch};
pub use process::ProcessError;
pub(crate) use process::{ProcessBackend, Processes};
pub(crate) use unbuilt::Unbuilt;
pub(crate) use wasm::WasmBackend;

/// A request as the front hands it on: any body, boxed.
pub(crate) type Request = axum::http::Request<Body>;
/// A response, boxed likewise.
pub(crate) type Response = axum::http::Response<Body>;

/// What serves a workload's requests. Cloned per request; errors are already responses (the
/// backend maps its own failures with [`ServeError::into_response`]), so the front never has to
/// know a backend's error type.
pub(crate) type Handler = tower::util::BoxCloneSyncService<Request, Response, Infallible>;

/// What a workload's certificate says of code that came encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Encrypted {
    /// A component's SHA-256 once decrypted (OID 3.7); an image's plaintext identity is its
    /// configuration's digest, which the tree commits.
    pub plaintext: Option<[u8; 32]>,
    /// Where its key came from (OID 3.9): one line per reference, never a key.
    pub key_reference: String,
}

/// Why a workload could not be started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The code or image was refused (does not compile, wrong interface, ...).
    #[error("workload '{name}': {reason}")]
    Refused {
        /// The workload.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Why one request could not be served: a backend's failures, mapped to HTTP statuses once.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum ServeError {
    /// The workload is at capacity; the caller may retry (503, `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// The workload failed the request: a trap, its deadline, its memory cap (502).
    #[error("{0}")]
    Failed(String),
    /// Nothing runs this kind of workload in this build (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ServeError {
    /// The response the caller sees: the status and the reason, as JSON.
    pub(crate) fn into_response(self) -> Response {
        use axum::http::{HeaderValue, StatusCode, header};
        let (status, retry) = match &self {
            ServeError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, true),
            ServeError::Failed(_) => (StatusCode::BAD_GATEWAY, false),
            ServeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, false),
        };
        let mut r = crate::api::error(status, self.to_string());
        if retry {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// A workload's health, as its backend sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Health {
    /// It serves requests.
    Serving,
    /// It is configured and certified, but cannot serve (why).
    Unavailable(String),
}

impl Health {
    /// The word the status API shows.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Health::Serving => "serving",
            Health::Unavailable(_) => "unavailable",
        }
    }
}

/// A started workload.
pub(crate) trait Running: Send + Sync {
    /// The service for its requests.
    fn handler(&self) -> Handler;
    /// Its health now.
    fn health(&self) -> Health;
    /// What the operator's status page shows of it beyond its health (a container's address,
    /// restarts and last exit), if anything.
    fn detail(&self) -> Option<serde_json::Value> {
        None
    }
    /// The service the attested proxy forwards to, for the kinds that have one (containers,
    /// processes): what a `tcp` workload's connections are spliced to, and what counts its
    /// client connections.
    fn upstream(&self) -> Option<Arc<enclave_proxy::Upstream>> {
        None
    }
    /// For code that came encrypted: what its certificate says of that (OID 3.7, 3.9).
    fn encrypted(&self) -> Option<Encrypted> {
        None
    }
    /// Stop it: later requests are refused; requests in flight finish. Dropping the last
    /// reference stops it too; this says so explicitly when the control plane replaces or
    /// unloads it.
    fn stop(&self);
}

/// Stop `running` once what it has in flight has drained (`proxy.drain_secs`), on a thread of
/// its own, so that the control plane's writer goes on with the next change meanwhile.
pub(crate) fn retire(running: Arc<dyn Running>) {
    let spawned = std::thread::Builder::new()
        .name("enclave-os-retire".into())
        .spawn(move || {
            if let Some(u) = running.upstream() {
                u.drain();
            }
            running.stop();
        });
    // Without a thread, the workload is dropped, and its backend stops it in the background.
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to drain a workload on; stopping it at once");
    }
}

/// Drain every one of `all` at once (each within its `proxy.drain_secs`), then stop them:
/// blocking, for the runtime's shutdown.
pub(crate) fn retire_all(all: &[Arc<dyn Running>]) {
    std::thread::scope(|scope| {
        for r in all {
            if let Some(u) = r.upstream() {
                scope.spawn(move || u.drain());
            }
        }
    });
    for r in all {
        r.stop();
    }
}

/// Starts workloads of one or more kinds.
pub(crate) trait Backend: Send + Sync {
    /// Whether this backend runs `kind`.
    fn runs(&self, kind: WorkloadKind) -> bool;
    /// Start `spec` with `code` (the bytes the config tree commits as its code). Blocking: it
    /// may compile, pull or spawn; the control plane calls it off the async workers.
    fn start(&self, spec: &Workload, code: &WorkloadCode) -> Result<Arc<dyn Running>, StartError>;
}

/// The backends of this runtime, asked in order.
pub(crate) struct Backends(Vec<Box<dyn Backend>>);

impl Backends {
    pub(crate) fn new(backends: Vec<Box<dyn Backend>>) -> Self {
        Self(backends)
    }

    /// Start `spec` with the first backend that runs its kind.
    pub(crate) fn start(
        &self,
        spec: &Workload,
        code: &WorkloadCode,
    ) -> Result<Arc<dyn Running>, StartError> {
        match self.0.iter().find(|b| b.runs(spec.run.kind())) {
            Some(b) => b.start(spec, code),
            None => Unbuilt.start(spec, code),
        }
    }
}

/// The error a request body carries when it grew past `limits.max_request_bytes`: the front
/// enforces the limit, and a backend tells its workload why the body stopped.
#[derive(Debug, Error)]
#[error("the request body exceeds {from} ({limit} bytes)")]
pub(crate) struct BodyTooLarge {
    /// The limit, in bytes.
    pub limit: u64,
    /// The setting it comes from.
    pub from: &'static str,
}
