//! Outgoing HTTP from components: HTTPS only, with TLS terminated here, inside the runtime,
//! trusting only the configured egress CA bundle.
//!
//! A component's `wasi:http/outgoing-handler` request arrives as a hyper request. Plain HTTP
//! is refused: bytes that leave the TEE in clear defeat the point of running in one. The TLS
//! session's trust roots are the egress bundle and nothing else (no system or webpki roots), so
//! a host that intercepts the connection needs a certificate from one of those CAs.
//!
//! Every refusal reaches the component as `internal-error` with a sentence saying why, and is
//! logged with the destination's host only (a path or query may carry the app's secrets).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// How long a connection (TCP and TLS) may take unless the component asks for less.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the response head may take unless the component asks for less. The app's own
/// request deadline bounds the whole exchange in any case.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `send_request` hook of one request's store.
pub(crate) struct Egress {
    /// The app, for logs.
    pub(crate) app: Arc<str>,
    /// The client configuration trusting only the egress bundle, or `None` when no bundle is
    /// configured (then every outgoing request is refused).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

type Pending = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type Sent =
    Box<dyn Future<Output = Result<(hyper::Response<WasiBody>, Pending), HttpError>> + Send>;

fn refuse(app: &str, host: &str, reason: String) -> HttpError {
    tracing::warn!(app, host, reason = %reason, "outgoing request refused");
    HttpError::InternalError(Some(reason))
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Pending,
    ) -> Sent {
        let app = self.app.clone();
        let tls = self.tls.clone();
        Box::new(async move {
            let host = request.uri().host().unwrap_or("").to_string();
            let Some(tls) = tls else {
                return Err(refuse(
                    &app,
                    &host,
                    "egress is disabled: the runtime's configuration names no [egress] ca_bundle"
                        .into(),
                ));
            };
            send(&app, &host, tls, request, options.unwrap_or_default()).await
        })
    }
}

async fn send(
    app: &str,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    mut request: Request<WasiBody>,
    options: RequestOptions,
) -> Result<(hyper::Response<WasiBody>, Pending), HttpError> {
    let uri = request.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(refuse(
            app,
            host,
            format!(
                "egress is HTTPS only: a {}:// request to {host} is refused",
                uri.scheme_str().unwrap_or("schemeless")
            ),
        ));
    }
    if host.is_empty() {
        return Err(refuse(app, host, "the request URI names no host".into()));
    }
    let port = uri.port_u16().unwrap_or(443);
    // An IPv6 literal keeps its brackets in the URI; rustls and connect want it bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string()).map_err(|e| {
        refuse(
            app,
            host,
            format!("'{host}' is not a valid server name: {e}"),
        )
    })?;

    let connect_timeout = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
    let tcp = tokio::time::timeout(
        connect_timeout,
        tokio::net::TcpStream::connect((bare, port)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(|e| refuse(app, host, format!("cannot connect to {host}:{port}: {e}")))?;
    let stream = tokio::time::timeout(
        connect_timeout,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(|e| refuse(app, host, tls_reason(host, port, &e)))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            refuse(
                app,
                host,
                format!("HTTP/1.1 with {host}:{port} failed: {e}"),
            )
        })?;
    // The connection is driven by its own task; it ends when the response body and the sender
    // are dropped, which the app's request deadline guarantees.
    let driver = tokio::spawn(conn);

    // On the wire the request line carries the path only: the authority is in Host.
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *request.uri_mut() = path
        .parse()
        .map_err(|_| refuse(app, host, "the request path is not a valid URI".into()))?;

    let first_byte = options.first_byte_timeout.unwrap_or(FIRST_BYTE_TIMEOUT);
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(HttpError::Hyper)?;
    let response = response.map(|body| body.map_err(HttpError::Hyper).boxed_unsync());
    let finished: Pending = Box::new(async move {
        match driver.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(HttpError::Hyper(e)),
        }
    });
    Ok((response, finished))
}

/// Why a TLS handshake failed, in words: above all, a server outside the bundle.
fn tls_reason(host: &str, port: u16, e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|r| match r {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                "its certificate is not issued by a CA in the egress bundle".to_string()
            }
            rustls::Error::InvalidCertificate(c) => format!("its certificate is refused: {c:?}"),
            other => other.to_string(),
        })
        .unwrap_or_else(|| e.to_string());
    format!("TLS with {host}:{port} failed: {inner}")
}
