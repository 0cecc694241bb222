//! WebAssembly components (`kind = "wasm"`), run by `enclave-wasm` inside the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use enclave_config::file::{Workload, WorkloadCode, WorkloadKind};
use enclave_wasm::{BodyError, WasmError};
use http_body_util::BodyExt;

use super::{Backend, BodyTooLarge, Handler, Health, Running, ServeError, StartError};

/// Compiles components on the runtime's one engine (and its code cache).
pub(crate) struct WasmBackend {
    host: enclave_wasm::Host,
}

impl WasmBackend {
    pub(crate) fn new(host: enclave_wasm::Host) -> Self {
        Self { host }
    }

    fn compile(&self, w: &Workload, code: &[u8]) -> Result<enclave_wasm::App, StartError> {
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
        let app = self
            .host
            .load(
                &w.name,
                code,
                w.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                w.args.clone(),
                limits,
            )
            .map_err(|e| StartError::Refused {
                name: w.name.clone(),
                reason: match e {
                    WasmError::Load { reason, .. } => reason,
                    other => other.to_string(),
                },
            })?;
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
}

impl Backend for WasmBackend {
    fn runs(&self, kind: WorkloadKind) -> bool {
        kind == WorkloadKind::Wasm
    }

    fn start(&self, spec: &Workload, code: &WorkloadCode) -> Result<Arc<dyn Running>, StartError> {
        Ok(Arc::new(Component {
            app: Arc::new(self.compile(spec, code.code())?),
            stopped: Arc::new(AtomicBool::new(false)),
        }))
    }
}

/// A compiled component: each request runs in a fresh instance.
struct Component {
    app: Arc<enclave_wasm::App>,
    stopped: Arc<AtomicBool>,
}

/// The wasi:http error for a request body that failed on its way in.
fn body_error(e: axum::Error) -> BodyError {
    let inner = e.into_inner();
    match inner.downcast_ref::<BodyTooLarge>() {
        Some(t) => BodyError::HttpRequestBodySize(Some(t.limit)),
        None => BodyError::InternalError(Some(inner.to_string())),
    }
}

impl Running for Component {
    fn handler(&self) -> Handler {
        // A stopped component still finishes what was routed to it before the swap: each
        // request runs in an instance of its own, so there is nothing to tear down, and a
        // request that raced a replacement is served by the version it was routed to.
        let app = self.app.clone();
        Handler::new(tower::service_fn(move |req: super::Request| {
            let app = app.clone();
            async move {
                let req = req.map(|b| b.map_err(body_error));
                Ok(match app.handle(req).await {
                    Ok(response) => response.map(axum::body::Body::new),
                    Err(e @ WasmError::Busy { .. }) => {
                        tracing::warn!(error = %e, "request refused: at capacity");
                        ServeError::Busy(e.to_string()).into_response()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "request failed");
                        ServeError::Failed(e.to_string()).into_response()
                    }
                })
            }
        }))
    }

    fn health(&self) -> Health {
        if self.stopped.load(Ordering::Acquire) {
            Health::Unavailable("stopped".into())
        } else {
            Health::Serving
        }
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }
}
