//! Health probes of a container, from the host, over the bridge: plain HTTP/1.1 or a TCP
//! connect. Each is bounded by one timeout covering everything it does.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::error::ProbeError;

/// `GET path` over plain HTTP/1.1; the status code, whatever it is.
pub async fn probe_http(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<u16, ProbeError> {
    let failed = |reason: String| ProbeError::Failed { addr, reason };
    if !path.starts_with('/') {
        return Err(failed(format!("the path {path:?} must start with '/'")));
    }
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::USER_AGENT, "enclave-os-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| {
            failed(format!(
                "the path {path:?} is not a valid request target: {e}"
            ))
        })?;
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| failed(format!("connect: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(format!("handshake: {e}")))?;
        let driver = tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(format!("request: {e}")));
        let status = match response {
            Ok(r) => {
                let status = r.status().as_u16();
                // Drain the body so the server sees a complete exchange; its content is not ours.
                let _ = r.into_body().collect().await;
                Ok(status)
            }
            Err(e) => Err(e),
        };
        driver.abort();
        status
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ProbeError::Timeout {
            addr,
            millis: timeout.as_millis(),
        })?
}

/// Whether a TCP connection to `addr` opens within `timeout`.
pub async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ProbeError::Failed {
            addr,
            reason: format!("connect: {e}"),
        }),
        Err(_) => Err(ProbeError::Timeout {
            addr,
            millis: timeout.as_millis(),
        }),
    }
}
