//! One connection: the TLS handshake (which presents the RA-TLS certificate the SNI selects),
//! then HTTP/1.1, routed by name: a workload's hostname reaches the workload, every other name
//! the management API. `/.well-known/enclave-os/` is the runtime's on every name.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

/// Hand the request to the workload's component, in a fresh instance.
async fn serve_workload(
    state: &State,
    name: &str,
    req: Request<Incoming>,
) -> axum::response::Response {
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

pub(crate) async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
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
    // A copy of the configuration for this connection only, whose resolver records the leaf it
    // presents: what this connection's channel-bound evidence must bind.
    let (config, chosen) = enclave_ratls::tls::recording(acceptor.config());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
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
                Some(name) => serve_workload(&state, &name, req).await,
                None => match app.oneshot(req.map(axum::body::Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}
