//! One workload's service, and forwarding to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use enclave_config::file::{ProxySettings, UpstreamProtocol};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::body::BodyStalled;
use crate::headers::{self, Forwarding};
use crate::splice::{SpliceEnd, splice};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of what the proxy answers: the service's, streamed, or the proxy's own reason.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Pooled connections to services.
pub type Client = hyper_util::client::legacy::Client<HttpConnector, ProxyBody>;

/// Why a request or connection did not reach the service, as the client is told.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Nothing listens: the service is starting, restarting or down (503).
    #[error("workload '{workload}': its service is not running")]
    NotRunning {
        /// The workload.
        workload: String,
    },
    /// `proxy.max_in_flight` requests are in flight already (503).
    #[error(
        "workload '{workload}': {max} requests are in flight to its service already (proxy.max_in_flight)"
    )]
    Busy {
        /// The workload.
        workload: String,
        /// The limit.
        max: u32,
    },
    /// The workload is being unloaded, replaced or stopped (503).
    #[error("workload '{workload}': it is shutting down and takes no new requests")]
    Draining {
        /// The workload.
        workload: String,
    },
    /// The connection to the service failed (502).
    #[error("workload '{workload}': cannot connect to its service at {addr}: {reason}")]
    Connect {
        /// The workload.
        workload: String,
        /// Where the service was expected.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The service sent no response head in time (504).
    #[error(
        "workload '{workload}': its service did not answer within {secs} s (proxy.response_timeout_secs)"
    )]
    Timeout {
        /// The workload.
        workload: String,
        /// The limit.
        secs: u32,
    },
    /// The service broke the exchange: closed the connection, sent no valid response (502).
    #[error("workload '{workload}': its service failed the request: {reason}")]
    Upstream {
        /// The workload.
        workload: String,
        /// Why.
        reason: String,
    },
    /// The client stopped sending its request body (408).
    #[error(
        "workload '{workload}': the request body stalled: no byte for {secs} s (limits.header_timeout_secs)"
    )]
    ClientStalled {
        /// The workload.
        workload: String,
        /// The limit, seconds.
        secs: u64,
    },
    /// The request cannot be forwarded to this service as it is (400).
    #[error("workload '{workload}': {reason}")]
    Unsupported {
        /// The workload.
        workload: String,
        /// Why.
        reason: String,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotRunning { .. }
            | ProxyError::Draining { .. }
            | ProxyError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            ProxyError::ClientStalled { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The response: its status, and the reason as `{"error": …}`; a 503 says when to retry.
    pub fn into_response(self) -> Response<ProxyBody> {
        let mut r = response(self.status(), &self.to_string());
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// A JSON refusal: `status`, and `{"error": reason}`, the shape of every refusal the runtime
/// makes.
pub fn response(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": reason }).to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Where a workload is in its life, as requests and splices see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// No new requests; those in flight may finish.
    Draining,
    /// Whatever is still in flight is cut.
    Cut,
}

/// Requests and splices in flight.
#[derive(Default)]
struct Inflight {
    count: AtomicUsize,
}

/// One request or splice in flight: counted until dropped (a response's guard lives as long
/// as its body is being sent).
struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One workload's service: where it is, what it speaks, and the connections to it.
pub struct Upstream {
    workload: String,
    settings: ProxySettings,
    target: RwLock<Option<Target>>,
    /// How pooled clients are made: lazily, one per [`pool_slot`](crate::pool_slot).
    make: (hyper_util::client::legacy::Builder, HttpConnector),
    clients: Box<[OnceLock<Client>]>,
    phase: watch::Sender<Phase>,
    inflight: Arc<Inflight>,
    connections: Arc<AtomicUsize>,
}

/// Where the service listens, and that address as a request URI's authority (made once, not
/// for every request).
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    authority: hyper::http::uri::Authority,
}

/// One client connection held by a workload, counted against `proxy.max_connections` until
/// dropped.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("workload", &self.workload)
            .field("protocol", &self.settings.protocol)
            .field("target", &self.target())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The service of `workload`, as its `[workload.proxy]` table (or the defaults) says; not
    /// yet reachable until [`Self::set_target`].
    pub fn new(workload: &str, settings: Option<&ProxySettings>) -> Self {
        let settings = settings.cloned().unwrap_or_default();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(u64::from(
            settings.connect_timeout_ms(),
        ))));
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            .http2_only(settings.protocol == UpstreamProtocol::H2c);
        Self {
            workload: workload.to_string(),
            make: (builder, http),
            clients: (0..=crate::pool_slot::MAX_THREADS)
                .map(|_| OnceLock::new())
                .collect(),
            settings,
            target: RwLock::new(None),
            phase: watch::Sender::new(Phase::Serving),
            inflight: Arc::default(),
            connections: Arc::default(),
        }
    }

    /// A slot for one more client connection, or why there is none (`proxy.max_connections`
    /// are held already).
    pub fn admit(&self) -> Result<ConnectionSlot, String> {
        let held = self.connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.connections.clone());
        match self.settings.max_connections {
            Some(max) if held >= max as usize => Err(format!(
                "workload '{}' holds {max} client connections already (proxy.max_connections)",
                self.workload
            )),
            _ => Ok(slot),
        }
    }

    /// The pooled client of the current thread's slot.
    fn client(&self) -> &Client {
        let slot = crate::pool_slot::current().min(self.clients.len() - 1);
        self.clients[slot].get_or_init(|| {
            let (builder, http) = &self.make;
            builder.build(http.clone())
        })
    }

    /// What the service speaks.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.settings.protocol
    }

    /// The workload's proxy settings.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// Where the service listens now (`None`: not running).
    pub fn target(&self) -> Option<SocketAddr> {
        self.current().map(|t| t.addr)
    }

    fn current(&self) -> Option<Target> {
        self.target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The service now listens at `addr` (`None`: it stopped).
    pub fn set_target(&self, addr: Option<SocketAddr>) {
        // A socket address always makes an authority; should it ever not, the service is
        // unreachable rather than reached at a guess.
        let target = addr.and_then(|addr| {
            let authority = addr.to_string().parse().ok()?;
            Some(Target { addr, authority })
        });
        *self.target.write().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// Requests and splices in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.count.load(Ordering::Acquire)
    }

    /// Take no new requests, give those in flight `proxy.drain_secs` to finish, then cut what
    /// remains. Returns when nothing is in flight any more, or at the cut. Blocking: the
    /// control plane calls it from its own threads, before the service is stopped.
    pub fn drain(&self) {
        self.phase.send_replace(Phase::Draining);
        let deadline =
            std::time::Instant::now() + Duration::from_secs(u64::from(self.settings.drain_secs()));
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.phase.send_replace(Phase::Cut);
    }

    fn enter(&self) -> Result<InflightGuard, ProxyError> {
        if *self.phase.borrow() != Phase::Serving {
            return Err(ProxyError::Draining {
                workload: self.workload.clone(),
            });
        }
        let max = self.settings.max_in_flight();
        let before = self.inflight.count.fetch_add(1, Ordering::AcqRel);
        let guard = InflightGuard(self.inflight.clone());
        if before >= max as usize {
            return Err(ProxyError::Busy {
                workload: self.workload.clone(),
                max,
            });
        }
        Ok(guard)
    }

    /// Resolves when what is in flight must be cut (or the upstream is gone).
    fn cut(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut phase = self.phase.subscribe();
        async move {
            let _ = phase.wait_for(|p| *p == Phase::Cut).await;
        }
    }

    fn idle(&self) -> Duration {
        Duration::from_secs(u64::from(self.settings.idle_timeout_secs()))
    }

    fn running(&self) -> Result<Target, ProxyError> {
        self.current().ok_or_else(|| ProxyError::NotRunning {
            workload: self.workload.clone(),
        })
    }

    /// Forward `req`, which came on a connection whose client and name `forwarding`
    /// describes, and answer with the service's response or the reason it could not be had.
    pub async fn forward<B>(&self, req: Request<B>, forwarding: &Forwarding) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match self.try_forward(req, forwarding).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(workload = %self.workload, error = %e, "proxy");
                e.into_response()
            }
        }
    }

    async fn try_forward<B>(
        &self,
        mut req: Request<B>,
        forwarding: &Forwarding,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let guard = self.enter()?;
        let target = self.running()?;
        let protocol = self.settings.protocol;
        let upgrade = match req.version() {
            Version::HTTP_10 | Version::HTTP_11 => headers::upgrade_to(req.headers()),
            _ => None,
        };
        if upgrade.is_some() && protocol != UpstreamProtocol::Http1 {
            return Err(ProxyError::Unsupported {
                workload: self.workload.clone(),
                reason: format!(
                    "an upgrade (WebSocket) needs a service speaking HTTP/1.1; this one speaks {}",
                    protocol.as_str()
                ),
            });
        }
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let trailers = headers::wants_trailers(req.headers());
        let (mut parts, body) = req.into_parts();
        // Origin form only: `*` (OPTIONS) or an authority (CONNECT) would be read against the
        // service's address as text, and could name another port.
        let path = match parts.uri.path_and_query() {
            Some(p) if p.as_str().starts_with('/') => p.clone(),
            None if parts.uri.path() == "/" => hyper::http::uri::PathAndQuery::from_static("/"),
            _ => {
                return Err(ProxyError::Unsupported {
                    workload: self.workload.clone(),
                    reason: format!(
                        "the request target '{}' is not a path: only origin-form requests are forwarded",
                        parts.uri
                    ),
                });
            }
        };
        let mut uri = hyper::http::uri::Parts::default();
        uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
        uri.authority = Some(target.authority.clone());
        uri.path_and_query = Some(path);
        parts.uri = hyper::Uri::from_parts(uri).map_err(|e| ProxyError::Unsupported {
            workload: self.workload.clone(),
            reason: format!("the request target: {e}"),
        })?;
        parts.extensions = Default::default();
        headers::strip_hop_by_hop(&mut parts.headers);
        forwarding.apply(&mut parts.headers);
        match protocol {
            UpstreamProtocol::H2c => {
                parts.version = Version::HTTP_2;
                // :authority is the service's address; the name asked for is X-Forwarded-Host.
                parts.headers.remove(header::HOST);
                if trailers {
                    parts
                        .headers
                        .insert(header::TE, HeaderValue::from_static("trailers"));
                }
            }
            UpstreamProtocol::Http1 | UpstreamProtocol::Tcp => {
                parts.version = Version::HTTP_11;
                // The name the request was routed by, whatever the client wrote in Host or
                // :authority.
                if let Some(v) = forwarding.host() {
                    parts.headers.insert(header::HOST, v.clone());
                }
                if let Some(u) = &upgrade {
                    parts.headers.insert(header::UPGRADE, u.clone());
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                }
            }
        }
        let body = body.map_err(Into::into).boxed_unsync();
        let secs = self.settings.response_timeout_secs();
        let call = self.client().request(Request::from_parts(parts, body));
        let mut resp = match tokio::time::timeout(Duration::from_secs(u64::from(secs)), call).await
        {
            Err(_) => {
                return Err(ProxyError::Timeout {
                    workload: self.workload.clone(),
                    secs,
                });
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(ProxyError::Connect {
                    workload: self.workload.clone(),
                    addr: target.addr,
                    reason: chain(&e),
                });
            }
            Ok(Err(e)) => {
                if let Some(stalled) = find::<BodyStalled>(&e) {
                    return Err(ProxyError::ClientStalled {
                        workload: self.workload.clone(),
                        secs: stalled.secs,
                    });
                }
                return Err(ProxyError::Upstream {
                    workload: self.workload.clone(),
                    reason: chain(&e),
                });
            }
            Ok(Ok(r)) => r,
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() {
            return Err(ProxyError::Upstream {
                workload: self.workload.clone(),
                reason: "it switched protocols (101) for a request that asked for no upgrade"
                    .into(),
            });
        }
        if let Some(client_upgrade) = client_upgrade
            && resp.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            let service_upgrade = hyper::upgrade::on(&mut resp);
            let (idle, cut, workload) = (self.idle(), self.cut(), self.workload.clone());
            tokio::spawn(async move {
                let _guard = guard;
                match tokio::try_join!(client_upgrade, service_upgrade) {
                    Ok((client, service)) => {
                        let end =
                            splice(TokioIo::new(client), TokioIo::new(service), idle, cut).await;
                        tracing::debug!(workload = %workload, end = ?end, "upgraded connection ended");
                    }
                    Err(e) => {
                        tracing::debug!(workload = %workload, error = %e, "upgrade not completed");
                    }
                }
            });
            let (mut parts, _) = resp.into_parts();
            let protocol = parts.headers.get(header::UPGRADE).cloned();
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some(p) = protocol {
                parts.headers.insert(header::UPGRADE, p);
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
            let empty = http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync();
            return Ok(Response::from_parts(parts, empty));
        }
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        // The guard lives with the body: a response still streaming is still in flight.
        let body = body
            .map_err(Into::into)
            .map_frame(move |f| {
                let _ = &guard;
                f
            })
            .boxed_unsync();
        Ok(Response::from_parts(parts, body))
    }

    /// Join `client` (past its TLS handshake) to the service, byte for byte, until one of the
    /// ends in [`SpliceEnd`].
    pub async fn splice<C>(&self, client: C) -> Result<SpliceEnd, ProxyError>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let _guard = self.enter()?;
        let target = self.running()?.addr;
        let ms = self.settings.connect_timeout_ms();
        let connect = tokio::net::TcpStream::connect(target);
        let service =
            match tokio::time::timeout(Duration::from_millis(u64::from(ms)), connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(ProxyError::Connect {
                        workload: self.workload.clone(),
                        addr: target,
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(ProxyError::Connect {
                        workload: self.workload.clone(),
                        addr: target,
                        reason: format!("no answer within {ms} ms (proxy.connect_timeout_ms)"),
                    });
                }
            };
        let _ = service.set_nodelay(true);
        Ok(splice(client, service, self.idle(), self.cut()).await)
    }
}

/// The first error of type `T` in `e`'s chain of causes.
fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

/// An error and its causes, one line: hyper's own message alone ("client error (Connect)")
/// does not say what happened.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
