//! One connection: the TLS handshake (which presents the RA-TLS certificate the SNI selects),
//! then HTTP/1.1, routed by name: a workload's hostname reaches the workload, every other name
//! the management API. `/.well-known/enclave-os/` is the runtime's on every name.
//!
//! Nothing a client sends may hold the runtime's threads or memory for long:
//! - the ClientHello is read first (`LazyConfigAcceptor`); a challenge-mode hello, which costs
//!   a fresh key, quote and signature, is issued on the blocking pool, at most
//!   `limits.max_challenge_handshakes` at once with as many waiting, and refused beyond that;
//! - a request head must arrive within `limits.header_timeout_secs` of the connection being
//!   ready for it (also the keep-alive idle limit), a management request must complete within
//!   `limits.request_timeout_secs`, and a response that makes no progress for
//!   `limits.write_stall_secs` closes the connection (`stall`);
//! - request bodies larger than `limits.max_request_bytes` are refused, for workloads as for
//!   the management API.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use enclave_ratls::tls::{ChosenCert, SniResolver, challenge_nonce};
use http_body_util::BodyExt;
use rustls::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio::sync::Semaphore;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::State;
use crate::api::{Connection, error};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The workload a request is for, by SNI, or by Host when the client sent no SNI.
fn workload_for(state: &State, sni: Option<&str>, host: Option<&str>) -> Option<String> {
    let name = sni.or(host)?;
    let name = name.rsplit_once(':').map_or(name, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            name
        }
    });
    crate::workloads::serving(state, name)
}

/// Hand the request to the workload's component, in a fresh instance. Its body is limited to
/// `limits.max_request_bytes`: a declared length over it is refused before the component runs,
/// and a streamed body that grows past it fails the component's read.
async fn serve_workload(
    state: &State,
    name: &str,
    req: Request<Incoming>,
) -> axum::response::Response {
    let max = state.config.config.limits.max_request_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {len} bytes; limits.max_request_bytes allows {max}"),
        );
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let req = req.map(move |body| {
        http_body_util::Limited::new(body, limit).map_err(move |e| {
            if e.is::<http_body_util::LengthLimitError>() {
                enclave_wasm::BodyError::HttpRequestBodySize(Some(max))
            } else {
                enclave_wasm::BodyError::InternalError(Some(e.to_string()))
            }
        })
    });
    let app = state
        .apps
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned();
    let Some(app) = app else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "workload '{name}' is configured and certified, but only wasm workloads run in this build"
            ),
        );
    };
    match app.handle(req).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e @ enclave_wasm::WasmError::Busy { .. }) => {
            tracing::warn!(workload = %name, error = %e, "request refused: at capacity");
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Err(e) => {
            tracing::warn!(workload = %name, error = %e, "request failed");
            error(StatusCode::BAD_GATEWAY, e.to_string())
        }
    }
}

/// What a listener needs to complete handshakes: its base configuration, the certificates by
/// name, and the bound on challenge issuance.
pub(crate) struct Handshakes {
    base: Arc<ServerConfig>,
    certs: Arc<SniResolver>,
    /// Challenges being issued.
    issuing: Arc<Semaphore>,
    /// Challenges issuing or waiting to: twice `issuing`. A challenge that finds none is refused
    /// at once, so a flood costs the runtime a bounded queue, not a growing one.
    admitted: Arc<Semaphore>,
    /// Seconds to read a request head (see the module docs).
    header_timeout: Duration,
}

impl Handshakes {
    pub fn new(base: Arc<ServerConfig>, certs: Arc<SniResolver>, max_challenges: usize) -> Self {
        Self {
            base,
            certs,
            issuing: Arc::new(Semaphore::new(max_challenges)),
            admitted: Arc::new(Semaphore::new(max_challenges.saturating_mul(2))),
            header_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// A challenge leaf for `nonce` from the certificate `sni` selects, issued on the blocking
    /// pool within the bounds above.
    async fn challenge(
        &self,
        state: &State,
        sni: Option<String>,
        nonce: Vec<u8>,
    ) -> Result<Arc<CertifiedKey>, String> {
        let Ok(_admitted) = self.admitted.clone().try_acquire_owned() else {
            state
                .metrics
                .challenges_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err("challenge refused: as many are already being issued and waiting".into());
        };
        let _issuing = self
            .issuing
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "challenge issuance has stopped".to_string())?;
        let resolver = self.certs.for_name(sni.as_deref());
        let leaf = tokio::task::spawn_blocking(move || resolver.challenge(nonce))
            .await
            .map_err(|e| format!("challenge issuance failed: {e}"))??;
        state
            .metrics
            .challenges_issued
            .fetch_add(1, Ordering::Relaxed);
        Ok(leaf)
    }

    /// Read the ClientHello, choose the configuration it needs, and finish the handshake. With
    /// the stream comes the certificate the connection presented (recorded by a copy of the
    /// configuration made for this connection only): what its channel-bound evidence binds.
    async fn accept(
        &self,
        state: &State,
        tcp: tokio::net::TcpStream,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
            Arc<ChosenCert>,
        ),
        String,
    > {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
            .await
            .map_err(|e| format!("ClientHello: {e}"))?;
        let (sni, nonce) = {
            let hello = start.client_hello();
            (
                hello.server_name().map(str::to_string),
                challenge_nonce(&hello),
            )
        };
        let config = match nonce {
            None => self.base.clone(),
            Some(nonce) => {
                let leaf = self.challenge(state, sni, nonce).await?;
                let mut config = (*self.base).clone();
                config.cert_resolver = Arc::new(SingleCertAndKey::from(leaf));
                // A challenge leaf is used once: compressing it into the shared cache would
                // only push out the cached leaves every other handshake reuses.
                config.cert_compression_cache =
                    Arc::new(rustls::compress::CompressionCache::Disabled);
                Arc::new(config)
            }
        };
        let (config, chosen) = enclave_ratls::tls::recording(&config);
        let tls = start
            .into_stream(config)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok((tls, chosen))
    }
}

pub(crate) async fn connection(
    handshakes: Arc<Handshakes>,
    tcp: tokio::net::TcpStream,
    state: Arc<State>,
    app: Router,
    route_workloads: bool,
) {
    state.metrics.connections.fetch_add(1, Ordering::Relaxed);
    // Without it, Nagle's algorithm holds back the last segment of the server's handshake
    // flight until the client's delayed ACK, about 40 ms on Linux, for every new connection.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes.accept(&state, tcp)).await;
    let (tls, chosen) = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            state
                .metrics
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            state
                .metrics
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let session = tls.get_ref().1;
    // The exporter of this very connection: what channel-bound evidence binds.
    let conn = Connection {
        exporter: enclave_ratls::channel::exporter(session).ok(),
        presented: chosen.presented(session).cloned().map(Arc::new),
    };
    let sni = session.server_name().map(str::to_string);
    let limits = &state.config.config.limits;
    let request_timeout = Duration::from_secs(u64::from(limits.request_timeout_secs.get()));
    let write_stall = Duration::from_secs(u64::from(limits.write_stall_secs.get()));
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let app = app.clone();
        let state = state.clone();
        let sni = sni.clone();
        let conn = conn.clone();
        async move {
            req.extensions_mut().insert(conn);
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let reserved = req.uri().path().starts_with("/.well-known/enclave-os/");
            let workload = if reserved || !route_workloads {
                None
            } else {
                workload_for(&state, sni.as_deref(), host.as_deref())
            };
            let response = match workload {
                // A workload's own deadline bounds its whole exchange (enclave-wasm).
                Some(name) => serve_workload(&state, &name, req).await,
                None => {
                    let call = app.oneshot(req.map(axum::body::Body::new));
                    match tokio::time::timeout(request_timeout, call).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(never)) => match never {},
                        Err(_) => error(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request did not complete within {} s (limits.request_timeout_secs)",
                                request_timeout.as_secs()
                            ),
                        ),
                    }
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshakes.header_timeout)
        .serve_connection(
            TokioIo::new(crate::stall::StallLimit::new(tls, write_stall)),
            service,
        )
        .await;
}
