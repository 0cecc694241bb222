//! The HTTP/1.1 upstream of a service workload (a container or a process): one pooled client
//! per workload and [`forward`], which both backends use. The attested proxy of issue 14
//! replaces this; its signature is what the backends depend on.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;

/// A pooled HTTP/1.1 client to a workload's upstream.
pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

/// A new client for one workload: idle connections are kept a while, so that a busy workload
/// does not pay a TCP handshake per request.
pub(crate) fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// Forward `req` to the upstream at `addr` over HTTP/1.1: the path and query as they came,
/// the headers but the hop-by-hop ones.
pub(crate) async fn forward(
    client: &Client,
    addr: SocketAddr,
    req: super::Request,
) -> Result<super::Response, String> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("the request path: {e}"))?;
    parts.version = axum::http::Version::HTTP_11;
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let response = client
        .request(axum::http::Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())?;
    let (mut parts, body) = response.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Ok(super::Response::from_parts(
        parts,
        axum::body::Body::new(body.map_err(axum::Error::new)),
    ))
}

/// Headers that describe one connection, not the message (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
