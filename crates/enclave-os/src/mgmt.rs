//! Reaching a running instance's management API: the connection options every operator
//! command shares, an RA-TLS client that checks what runs there before sending anything, and
//! how a command's outcome is printed (text, or `--json` for scripts).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use enclave_http::{Client, Method, Request, StatusCode, Uri};
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config};
use enclave_ratls::trust::TrustFiles;
use serde_json::{Value, json};

use crate::{EXIT_REJECTED, EXIT_USAGE};

/// Where the management API is and how it is trusted.
#[derive(Args)]
pub(crate) struct Connect {
    /// The management API: https://HOST:PORT.
    #[arg(long, env = "ENCLAVE_OS_URL", default_value = "https://127.0.0.1:8443")]
    pub url: String,
    /// A bearer token for the management API (`enclave-os token` mints one for development).
    #[arg(long, env = "ENCLAVE_OS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The operator's root CA (PEM): the server's chain must lead to it.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Development: trust this simulation root (a simulation directory or its root.crt.pem).
    #[arg(long)]
    pub trust_sim: Option<PathBuf>,
    /// Appraisal policy (TOML) the server must satisfy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A failure, and the exit status it gives.
pub(crate) struct Failure {
    pub status: u8,
    pub message: String,
}

pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure {
        status: EXIT_USAGE,
        message: message.into(),
    }
}

pub(crate) fn refused(message: impl Into<String>) -> Failure {
    Failure {
        status: EXIT_REJECTED,
        message: message.into(),
    }
}

/// The management API, reached over a verified RA-TLS connection.
pub(crate) struct Api {
    client: Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub(crate) fn new(c: &Connect) -> Result<Self, Failure> {
        let mut v = TrustFiles {
            root: c.root.clone(),
            trust_sim: c.trust_sim.clone(),
            collateral: None,
        }
        .verifier()
        .map_err(usage)?;
        if let Some(p) = &c.policy {
            let text = std::fs::read_to_string(p)
                .map_err(|e| usage(format!("policy {}: {e}", p.display())))?;
            v = v.with_policy(
                enclave_evidence::Policy::from_toml(&text, &p.display().to_string())
                    .map_err(|e| usage(e.to_string()))?,
            );
        }
        let verifier = Arc::new(RatlsServerVerifier::new(v, Freshness::Deterministic));
        let tls = client_config(verifier, None, None).map_err(|e| usage(e.to_string()))?;
        enclave_http::parse(&c.url).map_err(|e| usage(e.to_string()))?;
        Ok(Self {
            client: Client::new(Arc::new(tls))
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60))
                .max_body(4 << 20),
            base: c.url.trim_end_matches('/').to_string(),
            token: c.token.clone(),
        })
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), Failure> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| usage(format!("{}{path}: {e}", self.base)))?;
        let mut r = Request::new(method, uri);
        if let Some(t) = &self.token {
            r = r.bearer(t).map_err(|e| usage(e.to_string()))?;
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let response = self
            .client
            .send(r)
            .await
            .map_err(|e| refused(e.to_string()))?;
        Ok((response.status, response.body))
    }

    /// `path`'s JSON, or the server's reason as the failure.
    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Value), Failure> {
        let (status, body) = self.call(method, path, body).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(
            |_| json!({ "error": String::from_utf8_lossy(&body).trim().to_string() }),
        );
        if status.is_success() {
            Ok((status, v))
        } else {
            Err(refused(format!(
                "{status}: {}",
                v.get("error").and_then(Value::as_str).unwrap_or("refused")
            )))
        }
    }
}

/// Connect as `c` says and run `f` on a current-thread runtime.
pub(crate) fn execute<F, Fut>(c: &Connect, f: F) -> Result<Value, Failure>
where
    F: FnOnce(Api) -> Fut,
    Fut: std::future::Future<Output = Result<Value, Failure>>,
{
    let api = Api::new(c)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| usage(format!("cannot start the I/O runtime: {e}")))?;
    rt.block_on(f(api))
}

/// Print `outcome` (JSON with `--json`, else `text`) and give the exit status.
pub(crate) fn finish(
    json_out: bool,
    outcome: Result<Value, Failure>,
    text: impl FnOnce(&Value),
) -> ExitCode {
    match outcome {
        Ok(v) => {
            if json_out {
                println!("{v}");
            } else {
                text(&v);
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            if json_out {
                println!("{}", json!({ "ok": false, "error": f.message }));
            } else {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.status)
        }
    }
}
