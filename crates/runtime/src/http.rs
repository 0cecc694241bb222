//! One RA-TLS connection: the TLS handshake (which presents the RA-TLS certificate), then HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::State;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    state: Arc<State>,
) {
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
        return;
    };
    // The exporter of this very connection: what channel-bound evidence binds.
    let exporter = enclave_ratls::channel::exporter(tls.get_ref().1).ok();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(state, exporter, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, reason: String) -> Response<Full<Bytes>> {
    reply(status, json!({ "error": reason }).to_string())
}

async fn route(
    state: Arc<State>,
    exporter: Option<[u8; 32]>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not served here", req.method()),
        );
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/healthz" => reply(StatusCode::OK, json!({ "status": "ok" }).to_string()),
        "/readyz" => reply(
            StatusCode::OK,
            json!({ "status": "ready", "tee": state.tee.name() }).to_string(),
        ),
        "/.well-known/enclave-os/manifest" => {
            reply(StatusCode::OK, json!(state.tree.manifest()).to_string())
        }
        enclave_ratls::channel::PATH => {
            let Some(exporter) = exporter else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no TLS exporter on this connection".into(),
                );
            };
            // Evidence generation is blocking work (a quote): keep it off the async workers.
            let result = tokio::task::spawn_blocking(move || {
                let spki = state.enclave.current_spki()?;
                enclave_ratls::channel::respond(state.tee.as_ref(), &spki, &exporter)
                    .map_err(|e| e.to_string())
            })
            .await;
            match result {
                Ok(Ok(body)) => reply(StatusCode::OK, body),
                Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        p => match p.strip_prefix("/.well-known/enclave-os/proof/") {
            Some(name) => match state.tree.prove(name) {
                Ok(proof) => reply(StatusCode::OK, json!(proof).to_string()),
                Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
            },
            None => error(StatusCode::NOT_FOUND, format!("nothing is served at {p}")),
        },
    }
}
