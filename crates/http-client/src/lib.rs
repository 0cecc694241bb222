//! The one HTTPS client of Enclave OS: the runtime's own outgoing calls (a JWKS URL, a witness's
//! counters), `enclave-os verify <url>`, and the tests' calls to a running instance.
//!
//! It is hyper 1's HTTP/1.1 client connection over a tokio-rustls stream, one request per
//! connection. What it trusts is always the caller's: a [`Client`] is built from a
//! `rustls::ClientConfig` (the pinned egress CA bundle, an RA-TLS verifier, a client certificate
//! for mutual RA-TLS), never from a default root store, and the TLS server name is the URL's
//! host. A response body over the client's limit is refused, never truncated; the connection
//! (TCP and TLS handshake) and the whole exchange each have a deadline; every error names the
//! URL and the reason.
//!
//! A caller that must judge the TLS session before it sends anything (an RA-TLS report of the
//! server's certificate, the TLS exporter for channel-bound evidence) opens a [`Connection`]
//! with [`Client::connect`], reads [`Connection::tls`], then sends on it or closes it.
//!
//! A body too large to hold (an image layer) is streamed instead: [`Client::send_streaming`]
//! returns at the response's head, and [`BodyStream::chunk`] yields the body as it arrives, each
//! read bounded by an idle timeout rather than the whole exchange by a deadline.
//!
//! What it is not: a general-purpose client. Only `https://` URLs; no redirects, no cookies, no
//! proxies, no connection reuse, no HTTP/2, no content decoding, no retries (a caller that may
//! retry, like the witness client, decides when). It carries no TEE or RA-TLS code of its own,
//! so it pulls in neither the simulator nor WebAssembly: RA-TLS checks live in the
//! `ClientConfig`'s verifier, and [`Error::tls_error`] hands their refusal back to the caller.
//! Tests that must send malformed bytes on purpose use raw sockets, not this client.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub use hyper::body::Bytes;
pub use hyper::{HeaderMap, Method, StatusCode, Uri, header};

/// The largest response body a [`Client`] reads unless told otherwise: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// How long the TCP connection and the TLS handshake may take unless told otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole exchange (connection, request, response body) may take unless told
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a streamed response body may send nothing unless told otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The TCP connection and the TLS handshake.
    Connect,
    /// The whole exchange, from connecting to the last byte of the response body (for a
    /// streamed body: to the response's head).
    Exchange,
    /// The wait for the next bytes of a streamed response body.
    Idle,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connection and TLS handshake",
            Self::Exchange => "exchange",
            Self::Idle => "wait for the next bytes of the response body",
        })
    }
}

/// Why a call failed. Every variant names the URL.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not one this client calls (not `https://`, no host, a bad port, ...).
    #[error("{url}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("{url}: cannot resolve {host}: {reason}")]
    Resolve {
        /// The URL.
        url: String,
        /// The host (and port) looked up.
        host: String,
        /// Why.
        reason: String,
    },
    /// No TCP connection.
    #[error("{url}: cannot connect to {addr}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// The address tried last.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed: the server's certificate was refused, or the server refused
    /// this client's (see [`Error::tls_error`]).
    #[error("{url}: TLS handshake failed: {source}")]
    Tls {
        /// The URL.
        url: String,
        /// The handshake error; a rustls error inside it says what the verifier refused.
        #[source]
        source: io::Error,
    },
    /// A deadline passed.
    #[error("{url}: the {phase} did not finish within {limit:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// Which deadline.
        phase: Phase,
        /// How long it was.
        limit: Duration,
    },
    /// The response body is larger than the client reads.
    #[error("{url}: the response body is larger than the {limit}-byte limit{}",
        declared.map(|d| format!(" (it declares {d} bytes)")).unwrap_or_default())]
    BodyTooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
        /// The length the response declared, when it declared one.
        declared: Option<u64>,
    },
    /// The request could not be built (a header value that is not one).
    #[error("{url}: cannot build the request: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The HTTP exchange failed after the handshake: the connection closed early, the response
    /// is not HTTP/1.1, the body ended before its length...
    #[error("{url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// hyper's error and its causes, outermost first.
        reason: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// No I/O runtime could be started for a blocking call.
    #[error("{url}: cannot start the I/O runtime: {source}")]
    Runtime {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The URL the call was for.
    pub fn url(&self) -> &str {
        match self {
            Self::Url { url, .. }
            | Self::Resolve { url, .. }
            | Self::Connect { url, .. }
            | Self::Tls { url, .. }
            | Self::Timeout { url, .. }
            | Self::BodyTooLarge { url, .. }
            | Self::Request { url, .. }
            | Self::Http { url, .. }
            | Self::Runtime { url, .. } => url,
        }
    }

    /// The rustls error behind a failure, if TLS failed: where a caller finds an RA-TLS
    /// verifier's refusal and its reason.
    pub fn tls_error(&self) -> Option<&rustls::Error> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match self {
            Self::Tls { source, .. } => Some(source),
            Self::Http { source, .. } => Some(source),
            _ => None,
        };
        while let Some(e) = next {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            // An I/O error's `source` skips the error it wraps: look inside it first.
            if let Some(tls) = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(tls);
            }
            next = e.source();
        }
        None
    }
}

/// `url` parsed and checked the way [`Client`] checks it: `https://HOST[:PORT][/path]`, with a
/// host that is a DNS name or an IP address and no user information. For configuration
/// loading, so a bad URL is refused before anything is called.
pub fn parse(url: &str) -> Result<Uri, Error> {
    let uri: Uri = url.parse().map_err(|e| Error::Url {
        url: url.to_string(),
        reason: match port_text(url) {
            Some(p) if p.parse::<u16>().is_err() => format!("'{p}' is not a port (1-65535)"),
            _ => format!("not a URL: {e}"),
        },
    })?;
    Target::of(&uri)?;
    Ok(uri)
}

/// The port as written in `url`'s authority, if it writes one: to say what is wrong with it
/// when the URL does not parse.
fn port_text(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = authority.rsplit_once(':')?;
    (!host.starts_with('[') || host.ends_with(']')).then_some(port)
}

/// Where a request goes: checked once, from its URI.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
    /// The `Host` header: the URI's authority.
    authority: String,
    /// The request target: path and query.
    path: String,
    name: ServerName<'static>,
}

impl Target {
    fn of(uri: &Uri) -> Result<Self, Error> {
        let url = uri.to_string();
        let bad = |reason: String| Error::Url {
            url: url.clone(),
            reason,
        };
        match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => {}
            Some(s) => {
                return Err(bad(format!(
                    "not an https:// URL (the scheme is '{s}'): only https is called"
                )));
            }
            None => return Err(bad("not an absolute https:// URL".into())),
        }
        let authority = uri.authority().ok_or_else(|| bad("names no host".into()))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "carries user information: credentials do not go in URLs".into(),
            ));
        }
        let host = authority.host();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.is_empty() {
            return Err(bad("names no host".into()));
        }
        // `Authority::port` reads an out-of-range port as none at all; it must not default.
        let port = match authority.as_str().strip_prefix(host).unwrap_or_default() {
            "" => 443,
            rest => rest
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("'{rest}' is not a port (1-65535)")))?,
        };
        let name = ServerName::try_from(bare.to_string()).map_err(|e| {
            bad(format!(
                "'{bare}' is neither a DNS name nor an IP address: {e}"
            ))
        })?;
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            Some(p) if p.starts_with('/') => p.to_string(),
            _ => "/".to_string(),
        };
        Ok(Self {
            url,
            host: bare.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path,
            name,
        })
    }
}

/// One request: a method, an `https://` URI, headers and a body.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    via: Option<(String, u16)>,
}

impl Request {
    /// `method uri`, with no headers of its own and an empty body.
    pub fn new(method: Method, uri: Uri) -> Self {
        Self {
            method,
            uri,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            via: None,
        }
    }

    /// `GET uri`.
    pub fn get(uri: Uri) -> Self {
        Self::new(Method::GET, uri)
    }

    /// With header `name: value` (replacing one of that name).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// With `Authorization: Bearer <token>`, marked sensitive so no debug output shows it.
    pub fn bearer(self, token: &str) -> Result<Self, Error> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Request {
                url: self.uri.to_string(),
                reason: "the bearer token is not a valid header value".into(),
            })?;
        value.set_sensitive(true);
        Ok(self.header(header::AUTHORIZATION, value))
    }

    /// With `body` (sent with its `Content-Length`).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// With `body` as `Content-Type: application/json`.
    pub fn json(self, body: impl Into<Bytes>) -> Self {
        self.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
    }

    /// Connect to `host:port` instead of the URI's authority, still naming the URI's host in
    /// TLS (SNI and the certificate check) and in `Host`, as `curl --resolve` does: for a
    /// server reachable at an address its certificate does not name.
    pub fn via(mut self, host: &str, port: u16) -> Self {
        self.via = Some((host.to_string(), port));
        self
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// A response, its body read whole.
#[derive(Debug)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, de-chunked; at most the client's limit.
    pub body: Vec<u8>,
}

/// The client: a TLS configuration and its limits. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    max_body: usize,
    connect_timeout: Duration,
    timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("max_body", &self.max_body)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting exactly what `tls` trusts (and presenting its client certificate, if
    /// it has one), with the default limits.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls: TlsConnector::from(tls),
            max_body: DEFAULT_MAX_BODY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Refuse response bodies over `bytes`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Give up on a connection (TCP and TLS handshake) after `limit`.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Give up on a whole exchange, connection included, after `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Wait at most `limit` for each next piece of a streamed response body
    /// ([`Client::send_streaming`]).
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = limit;
        self
    }

    /// Send `request` and read the response.
    pub async fn send(&self, request: Request) -> Result<Response, Error> {
        self.connect(request).await?.send().await
    }

    /// Send `request` and return the response as soon as its head arrives, its body to be read
    /// piece by piece ([`BodyStream::chunk`]): for bodies too large to hold (an image layer).
    /// The exchange's deadline covers the connection and the head only; the body has no total
    /// deadline and no size limit (the caller knows what it expects), but each read waits at
    /// most the idle timeout, so a server that stalls is given up on.
    pub async fn send_streaming(&self, request: Request) -> Result<StreamingResponse, Error> {
        self.connect(request).await?.send_streaming().await
    }

    /// [`Client::send`] for callers without an async runtime of their own. Called from a
    /// thread inside one (an async task, a blocking-pool thread), the call runs on a thread of
    /// its own: a thread already in a runtime cannot start another.
    pub fn send_blocking(&self, request: Request) -> Result<Response, Error> {
        let url = request.uri.to_string();
        let run = || -> Result<Response, Error> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| Error::Runtime {
                    url: url.clone(),
                    source,
                })?
                .block_on(self.send(request))
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|s| {
            match std::thread::Builder::new()
                .name("enclave-http".into())
                .spawn_scoped(s, run)
            {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(source) => Err(Error::Runtime {
                    url: url.clone(),
                    source,
                }),
            }
        })
    }

    /// Connect and complete the TLS handshake for `request`, without sending it yet: the
    /// caller may judge the session ([`Connection::tls`]) first.
    pub async fn connect(&self, request: Request) -> Result<Connection, Error> {
        let target = Target::of(&request.uri)?;
        let started = Instant::now();
        let (phase, limit) = if self.connect_timeout <= self.timeout {
            (Phase::Connect, self.connect_timeout)
        } else {
            (Phase::Exchange, self.timeout)
        };
        let stream = tokio::time::timeout(limit, self.handshake(&target, request.via.as_ref()))
            .await
            .map_err(|_| Error::Timeout {
                url: target.url.clone(),
                phase,
                limit,
            })??;
        Ok(Connection {
            stream,
            target,
            method: request.method,
            headers: request.headers,
            body: request.body,
            max_body: self.max_body,
            deadline: started + self.timeout,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
        })
    }

    async fn handshake(
        &self,
        t: &Target,
        via: Option<&(String, u16)>,
    ) -> Result<TlsStream<TcpStream>, Error> {
        let (host, port) = via.map_or((t.host.as_str(), t.port), |(h, p)| (h.as_str(), *p));
        let resolve_err = |reason: String| Error::Resolve {
            url: t.url.clone(),
            host: format!("{host}:{port}"),
            reason,
        };
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| resolve_err(e.to_string()))?;
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some((addr, source))) => {
                return Err(Error::Connect {
                    url: t.url.clone(),
                    addr,
                    source,
                });
            }
            (None, None) => return Err(resolve_err("no address".into())),
        };
        // One small request, then one response: Nagle would only delay it.
        let _ = tcp.set_nodelay(true);
        self.tls
            .connect(t.name.clone(), tcp)
            .await
            .map_err(|source| Error::Tls {
                url: t.url.clone(),
                source,
            })
    }
}

/// A connection whose TLS handshake is complete and whose request is not sent yet.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    target: Target,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    max_body: usize,
    deadline: Instant,
    timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.target.url)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The TLS session: the server's certificates, the exporter, the negotiated parameters.
    pub fn tls(&self) -> &rustls::ClientConnection {
        self.stream.get_ref().1
    }

    /// The server name the handshake used (the URI's host).
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.target.name
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// Close without sending the request: the TLS close_notify, then the socket.
    pub async fn close(mut self) {
        let shut = std::future::poll_fn(|cx| {
            tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.stream), cx)
        });
        let _ = tokio::time::timeout_at(self.deadline, shut).await;
    }

    /// Send the request and read the response, within what is left of the exchange's deadline.
    pub async fn send(self) -> Result<Response, Error> {
        let (url, deadline, timeout) = (self.target.url.clone(), self.deadline, self.timeout);
        tokio::time::timeout_at(deadline, self.exchange())
            .await
            .unwrap_or(Err(Error::Timeout {
                url,
                phase: Phase::Exchange,
                limit: timeout,
            }))
    }

    /// Send the request and return as soon as the response's head arrives (within what is
    /// left of the exchange's deadline); see [`Client::send_streaming`].
    pub async fn send_streaming(self) -> Result<StreamingResponse, Error> {
        let (url, deadline, timeout, idle) = (
            self.target.url.clone(),
            self.deadline,
            self.timeout,
            self.idle_timeout,
        );
        let (parts, incoming, driver) = tokio::time::timeout_at(deadline, self.head())
            .await
            .unwrap_or(Err(Error::Timeout {
                url: url.clone(),
                phase: Phase::Exchange,
                limit: timeout,
            }))?;
        Ok(StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body: BodyStream {
                incoming,
                url,
                idle,
                received: 0,
                _driver: driver,
            },
        })
    }

    async fn exchange(self) -> Result<Response, Error> {
        let url = self.target.url.clone();
        let max_body = self.max_body;
        let (parts, mut incoming, driver) = self.head().await?;
        let too_large = |declared| Error::BodyTooLarge {
            url: url.clone(),
            limit: max_body,
            declared,
        };
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|d| d > max_body as u64) {
            return Err(too_large(declared));
        }
        let mut body = Vec::new();
        while let Some(frame) = incoming.frame().await {
            let Ok(data) = frame.map_err(|e| http_error(&url, e))?.into_data() else {
                continue; // trailers
            };
            if body.len() + data.len() > max_body {
                return Err(too_large(declared));
            }
            body.extend_from_slice(&data);
        }
        drop(driver);
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Send the request and read the response's head; the body is still to be read, and the
    /// connection lives as long as the returned task handle.
    async fn head(
        self,
    ) -> Result<(hyper::http::response::Parts, hyper::body::Incoming, Abort), Error> {
        let Self {
            stream,
            target,
            method,
            mut headers,
            body,
            ..
        } = self;
        let url = target.url.as_str();
        let http_err = |source: hyper::Error| http_error(url, source);
        let request_err = |reason: String| Error::Request {
            url: url.to_string(),
            reason,
        };
        // Head and body in one write, so in one TLS record when they fit: some servers (and
        // tests) read a request with a single read.
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        // The connection's I/O runs beside the exchange; its errors reach the exchange through
        // hyper, and the task ends with it.
        let driver = Abort(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let host = HeaderValue::from_str(&target.authority)
            .map_err(|_| request_err(format!("'{}' is not a Host value", target.authority)))?;
        headers.insert(HOST, host);
        // One request per connection: the server need not wait for another.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(target.path.as_str())
            .body(Full::new(body))
            .map_err(|e| request_err(e.to_string()))?;
        *request.headers_mut() = headers;
        let response = sender.send_request(request).await.map_err(http_err)?;
        let (parts, incoming) = response.into_parts();
        Ok((parts, incoming, driver))
    }
}

/// hyper's error as [`Error::Http`], its causes spelled out.
fn http_error(url: &str, source: hyper::Error) -> Error {
    let mut reason = source.to_string();
    let mut next = std::error::Error::source(&source);
    while let Some(e) = next {
        reason.push_str(": ");
        reason.push_str(&e.to_string());
        next = e.source();
    }
    Error::Http {
        url: url.to_string(),
        reason,
        source,
    }
}

/// A response whose body is still to be read: [`Client::send_streaming`].
#[derive(Debug)]
pub struct StreamingResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, to be read.
    pub body: BodyStream,
}

/// A response body read as it arrives. Dropping it closes the connection.
pub struct BodyStream {
    incoming: hyper::body::Incoming,
    url: String,
    idle: Duration,
    received: u64,
    _driver: Abort,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("url", &self.url)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl BodyStream {
    /// The next piece of the body (de-chunked) as it arrives, `None` at its end. Waits at most
    /// the client's idle timeout; a body shorter than its `Content-Length` is an error.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let frame = tokio::time::timeout(self.idle, self.incoming.frame())
                .await
                .map_err(|_| Error::Timeout {
                    url: self.url.clone(),
                    phase: Phase::Idle,
                    limit: self.idle,
                })?;
            let Some(frame) = frame else {
                return Ok(None);
            };
            match frame.map_err(|e| http_error(&self.url, e))?.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => {
                    self.received += data.len() as u64;
                    return Ok(Some(data));
                }
                Err(_) => continue, // trailers
            }
        }
    }

    /// The body's bytes read so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A spawned task that stops when its handle is dropped: an exchange given up on (a deadline,
/// a refused body) does not leave its connection open behind it.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<Target, Error> {
        Target::of(&url.parse::<Uri>().map_err(|e| Error::Url {
            url: url.into(),
            reason: e.to_string(),
        })?)
    }

    #[test]
    fn a_bad_port_is_named() {
        for url in ["https://localhost:notaport/", "https://localhost:70000"] {
            let text = parse(url)
                .map(|u| u.to_string())
                .unwrap_or_else(|e| e.to_string());
            assert!(text.contains("is not a port"), "{url}: {text}");
        }
        assert!(parse("https://[::1]:8443/x").is_ok());
    }

    #[test]
    fn urls_are_https_with_a_host_and_a_port() {
        let t = target("https://127.0.0.1:9443/x?y=1").ok();
        let t = t.as_ref();
        assert_eq!(t.map(|t| t.host.as_str()), Some("127.0.0.1"));
        assert_eq!(t.map(|t| t.port), Some(9443));
        assert_eq!(t.map(|t| t.path.as_str()), Some("/x?y=1"));
        assert_eq!(t.map(|t| t.authority.as_str()), Some("127.0.0.1:9443"));
        let t = target("https://idp.example").ok();
        assert_eq!(t.as_ref().map(|t| t.port), Some(443));
        assert_eq!(t.as_ref().map(|t| t.path.as_str()), Some("/"));
        let t = target("https://[::1]:8443/").ok();
        assert_eq!(t.as_ref().map(|t| t.host.as_str()), Some("::1"));
        for (url, why) in [
            ("http://idp.example/", "not an https:// URL"),
            ("https://user:pw@idp.example/", "user information"),
            ("https://idp.example:0/", "not a port"),
            ("https://idp.example:99999/", "not a port"),
            ("https://-x-.example/", "neither a DNS name"),
            ("/just/a/path", "not an absolute"),
        ] {
            match target(url) {
                Err(e @ Error::Url { .. }) => {
                    let text = e.to_string();
                    assert!(text.contains(why), "{url}: {text}");
                    assert_eq!(e.url().trim_end_matches('/'), url.trim_end_matches('/'));
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
