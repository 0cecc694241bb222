//! WebAssembly components (`kind = "wasm"`), run by `enclave-wasm` inside the runtime.
//!
//! A component may come encrypted: a JWE (`cty: application/wasm`) to the vault key the
//! workload names (`decryption_key`). It is decrypted here, in memory, with the key the vault
//! releases to the workload (its policy naming the ciphertext's hash, which is what the tree
//! commits), and never written anywhere in plaintext: its compiled form goes to the code
//! cache encrypted, like every entry there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use enclave_config::file::{Workload, WorkloadCode, WorkloadKind};
use enclave_wasm::{BodyError, WasmError};
use http_body_util::BodyExt;

use super::{Backend, BodyTooLarge, Handler, Health, Running, ServeError, StartError};
use crate::vault::code_keys::{Asker, CodeKeys};
use zeroize::Zeroizing;

/// Compiles components on the runtime's one engine (and its code cache).
pub(crate) struct WasmBackend {
    host: enclave_wasm::Host,
    keys: Arc<CodeKeys>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

impl WasmBackend {
    pub(crate) fn new(host: enclave_wasm::Host, keys: Arc<CodeKeys>) -> Self {
        Self { host, keys }
    }

    /// An encrypted component's plaintext, decrypted with the key the vault released to `w`.
    fn decrypt(
        &self,
        w: &Workload,
        jwe: &[u8],
        identity: &[u8; 32],
    ) -> Result<(Zeroizing<Vec<u8>>, String), String> {
        let name = w.decryption_key.as_deref().ok_or(
            "its component is encrypted (JWE), and the workload names no decryption_key (the vault key it was encrypted to)",
        )?;
        let key = self.keys.private_key(
            &Asker {
                workload: &w.name,
                code: identity,
            },
            name,
        )?;
        // A kid, when the JWE has one, names the key it was made for: a mismatch is said
        // plainly rather than as a failed decryption.
        if let Some(kid) = enclave_imgcrypt::component_kid(jwe).map_err(|e| e.to_string())? {
            let thumbprint = key.public_jwk().map(|j| j.thumbprint_b64());
            if kid != name && Some(&kid) != thumbprint.as_ref() {
                return Err(format!(
                    "its component was encrypted to key '{kid}', not to vault key '{name}' (decryption_key)"
                ));
            }
        }
        let recipient = key.recipient().ok_or_else(|| {
            format!(
                "vault key '{name}' is {}, and an encrypted component needs an EC or RSA key",
                key.kind().name()
            )
        })?;
        let plain = enclave_imgcrypt::decrypt_component(jwe, &recipient)
            .map_err(|e| format!("its component does not decrypt with vault key '{name}': {e}"))?;
        let reference = crate::containers::decrypt::vault_key_reference(name, |_| {
            key.public_jwk().map(|j| j.thumbprint_b64())
        });
        Ok((plain, reference))
    }

    fn compile(&self, w: &Workload, code: &[u8]) -> Result<Compiled, StartError> {
        let identity = sha256(code);
        let refused = |reason: String| StartError::Refused {
            name: w.name.clone(),
            reason,
        };
        let (plain, encrypted) = if enclave_imgcrypt::is_encrypted_component(code) {
            let (plain, key_reference) = self.decrypt(w, code, &identity).map_err(refused)?;
            let hash = sha256(&plain);
            tracing::info!(workload = %w.name, plaintext = %hex::encode(hash), key = %key_reference, "encrypted component decrypted in memory");
            let encrypted = super::Encrypted {
                plaintext: Some(hash),
                key_reference,
            };
            (Some(plain), Some(encrypted))
        } else if let Some(key) = &w.decryption_key {
            // The tree would say the code is decrypted with a key while it ran in the clear.
            return Err(refused(format!(
                "decryption_key names vault key '{key}', and its component is not encrypted (not a JWE): encrypt it with `enclave-os wasm encrypt`, or drop decryption_key"
            )));
        } else {
            (None, None)
        };
        let compiled_sha256 = encrypted
            .as_ref()
            .and_then(|e| e.plaintext)
            .unwrap_or(identity);
        let app = self.load(
            w,
            plain.as_deref().map_or(code, |p| p.as_slice()),
            identity,
            compiled_sha256,
        )?;
        Ok(Compiled { app, encrypted })
    }

    fn load(
        &self,
        w: &Workload,
        code: &[u8],
        identity: [u8; 32],
        code_sha256: [u8; 32],
    ) -> Result<enclave_wasm::App, StartError> {
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
            .load_as(
                &w.name,
                code,
                identity,
                code_sha256,
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
        let compiled = self.compile(spec, code.code())?;
        Ok(Arc::new(Component {
            app: Arc::new(compiled.app),
            encrypted: compiled.encrypted,
            stopped: Arc::new(AtomicBool::new(false)),
        }))
    }
}

/// A component compiled, and what its certificate says when it came encrypted.
struct Compiled {
    app: enclave_wasm::App,
    encrypted: Option<super::Encrypted>,
}

/// A compiled component: each request runs in a fresh instance.
struct Component {
    app: Arc<enclave_wasm::App>,
    encrypted: Option<super::Encrypted>,
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

    fn encrypted(&self) -> Option<super::Encrypted> {
        self.encrypted.clone()
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
