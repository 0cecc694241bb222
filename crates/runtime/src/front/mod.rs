//! The front: listeners and connections. Each connection's TLS handshake presents the RA-TLS
//! certificate the SNI selects, then HTTP/1.1 is routed by name: a workload's hostname reaches
//! the workload's handler, every other name the API. `/.well-known/enclave-os/` is the
//! runtime's on every name.
//!
//! Routing and certificate choice read the control plane's published snapshot: one atomic
//! load, never a lock a change holds, so a slow change (an fsync, a witness round trip) delays
//! no request. The front knows nothing of the store or the API's routes; it is handed the API
//! as a router, and workloads as handlers.
//!
//! Nothing a client sends may hold the runtime's threads or memory for long:
//! - the ClientHello is read first (`LazyConfigAcceptor`) and the certificate chosen before the
//!   handshake: a challenge-mode hello, which costs a fresh key, quote and signature, is issued
//!   on the blocking pool, at most `limits.max_challenge_handshakes` at once with as many
//!   waiting, and refused beyond that; a handshake that finds no deterministic leaf ready waits
//!   for one there too, at most [`MAX_LEAF_WAITERS`] at once;
//! - a request head must arrive within `limits.header_timeout_secs` of the connection being
//!   ready for it (also the keep-alive idle limit), an API request must complete within
//!   `limits.request_timeout_secs`, and a response that makes no progress for
//!   `limits.write_stall_secs` closes the connection (`stall`);
//! - request bodies larger than `limits.max_request_bytes` are refused, for workloads as for
//!   the API;
//! - connections are admitted up to `limits.max_connections` (`admission`).
//!
//! A workload with `[workload.ingress]` admits only the callers its gates accept (`gate`), and
//! every request routed to a workload carries who called, as verified, in `X-Enclave-OS-Client-*`
//! headers, inbound ones removed (`caller`).

pub(crate) mod admission;
pub(crate) mod caller;
pub(crate) mod gate;
mod idle;
mod stall;
pub(crate) mod workers;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use enclave_ratls::tls::{ChosenCert, RatlsResolver, challenge_nonce};
use http_body_util::BodyExt;
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use tokio::sync::Semaphore;

use axum::Router;
use axum::http::{StatusCode, header};
use enclave_config::file::UpstreamProtocol;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::api::{Connection, error};
use crate::backends::BodyTooLarge;
use crate::control::Control;
use crate::metrics::Metrics;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The hostname of an SNI or a Host header, without its port.
fn hostname(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            name
        }
    })
}

/// Limits a connection applies (from `[limits]`).
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub write_stall: Duration,
    pub max_request_bytes: u64,
}

impl Limits {
    pub(crate) fn from_config(l: &enclave_config::file::Limits) -> Self {
        Self {
            header_timeout: Duration::from_secs(u64::from(l.header_timeout_secs.get())),
            request_timeout: Duration::from_secs(u64::from(l.request_timeout_secs.get())),
            write_stall: Duration::from_secs(u64::from(l.write_stall_secs.get())),
            max_request_bytes: l.max_request_bytes,
        }
    }
}

/// What one listener serves.
pub(crate) struct Site {
    /// Routes to workloads (`None`: the witness listener, which serves only its router).
    pub control: Option<Control>,
    /// Everything a workload does not take.
    pub api: Router,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Becomes true when the runtime stops: connections finish what is in flight and close.
    pub draining: tokio::sync::watch::Receiver<bool>,
    /// The workloads' ingress gates (`None`: the witness listener, which routes to none).
    pub gates: Option<Arc<gate::Gates>>,
}

/// Hand the request to the workload's handler. Its body is limited to `max` bytes (a declared
/// length over it is refused before the workload sees it, and a streamed body that grows past
/// it fails the workload's read), must keep arriving (no pause longer than `idle`), and its
/// trailers are cleaned as its headers were (`enclave_proxy::ClientBody`).
async fn serve_workload(
    handler: crate::backends::Handler,
    (max, max_from): (u64, &'static str),
    idle: Duration,
    req: Request<Incoming>,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is {len} bytes; {max_from} allows {max}"),
        );
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let req = req.map(move |body| {
        let body = enclave_proxy::ClientBody::new(body, idle);
        axum::body::Body::new(http_body_util::Limited::new(body, limit).map_err(
            move |e| -> Box<dyn std::error::Error + Send + Sync> {
                if e.is::<http_body_util::LengthLimitError>() {
                    Box::new(BodyTooLarge {
                        limit: max,
                        from: max_from,
                    })
                } else {
                    e
                }
            },
        ))
    });
    match handler.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Where a listener's certificates come from.
pub(crate) trait Certificates: rustls::server::ResolvesServerCert {
    /// The certificate for `server_name`.
    fn for_name(&self, server_name: Option<&str>) -> Arc<RatlsResolver>;
    /// Changes whenever a certificate may have: TLS sessions made under an earlier value are
    /// not resumed (see [`Handshakes`]).
    fn generation(&self) -> u64;
    /// Whether `server_name` reaches a workload whose connections are spliced as bytes
    /// (`proxy.protocol = "tcp"`): its handshake offers no HTTP protocols by ALPN.
    fn spliced(&self, _server_name: Option<&str>) -> bool {
        false
    }
}

impl Certificates for Control {
    fn for_name(&self, server_name: Option<&str>) -> Arc<RatlsResolver> {
        self.cert_for(server_name)
    }

    fn spliced(&self, server_name: Option<&str>) -> bool {
        server_name.is_some_and(|n| self.snapshot().route(n).is_some_and(|e| splices(&e.spec)))
    }

    fn generation(&self) -> u64 {
        self.snapshot().generation
    }
}

/// One certificate for every name (the witness listener: the enclave-wide certificate).
#[derive(Debug)]
pub(crate) struct OneCertificate(pub Arc<RatlsResolver>);

impl rustls::server::ResolvesServerCert for OneCertificate {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.resolve(hello)
    }
}

impl Certificates for OneCertificate {
    fn for_name(&self, _: Option<&str>) -> Arc<RatlsResolver> {
        self.0.clone()
    }

    fn generation(&self) -> u64 {
        0
    }
}

/// Handshakes that may wait at once for a deterministic leaf when none is ready (the rest are
/// refused): the resolver makes one quote for all of them, so more would only hold threads.
const MAX_LEAF_WAITERS: usize = 64;

/// Makes a listener's base TLS configuration.
pub(crate) type MakeConfig = Box<dyn Fn() -> Result<ServerConfig, rustls::Error> + Send + Sync>;

/// What a listener needs to complete handshakes: its base configuration, the certificates by
/// name, and the bound on challenge issuance.
///
/// The base configuration (and with it the TLS session cache) is made afresh for each
/// generation of the certificates: a client resuming a session presents no certificate, and
/// would otherwise reach, under a name, a workload other than the one it was shown when the
/// session was made.
pub(crate) struct Handshakes {
    make: MakeConfig,
    base: arc_swap::ArcSwap<Base>,
    certs: Arc<dyn Certificates + Send + Sync>,
    /// Challenges being issued.
    issuing: Arc<Semaphore>,
    /// Challenges issuing or waiting to: twice `issuing`. A challenge that finds none is refused
    /// at once, so a flood costs the runtime a bounded queue, not a growing one.
    admitted: Arc<Semaphore>,
    /// Handshakes waiting for a deterministic leaf when none is ready: their own bound, so
    /// that a flood of challenges cannot keep a name's first leaf from being issued.
    leaf_waiters: Arc<Semaphore>,
    /// Requests a client certificate in handshakes for mutual RA-TLS workloads.
    gates: Option<Arc<gate::Gates>>,
}

/// One generation's base configurations: HTTP (HTTP/2 and HTTP/1.1 offered by ALPN) and
/// spliced (no ALPN: a `tcp` workload's clients offer their own protocol, or none, and the
/// bytes are the service's to interpret).
struct Base {
    generation: u64,
    http: Arc<ServerConfig>,
    spliced: Arc<ServerConfig>,
}

/// The protocols an HTTP listener offers, preferred first.
const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

impl Base {
    fn new(make: &MakeConfig, generation: u64) -> Result<Self, rustls::Error> {
        let spliced = make()?;
        let mut http = spliced.clone();
        http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            generation,
            http: Arc::new(http),
            spliced: Arc::new(spliced),
        })
    }

    fn pick(&self, spliced: bool) -> &Arc<ServerConfig> {
        if spliced { &self.spliced } else { &self.http }
    }
}

impl Handshakes {
    pub fn new(
        make: MakeConfig,
        certs: Arc<dyn Certificates + Send + Sync>,
        max_challenges: usize,
    ) -> Result<Self, rustls::Error> {
        let first = Base::new(&make, certs.generation())?;
        Ok(Self {
            base: arc_swap::ArcSwap::from_pointee(first),
            make,
            certs,
            issuing: Arc::new(Semaphore::new(max_challenges)),
            admitted: Arc::new(Semaphore::new(max_challenges.saturating_mul(2))),
            leaf_waiters: Arc::new(Semaphore::new(MAX_LEAF_WAITERS)),
            gates: None,
        })
    }

    /// Handshakes whose SNI names a mutual RA-TLS workload request a client certificate.
    pub fn with_gates(mut self, gates: Arc<gate::Gates>) -> Self {
        self.gates = Some(gates);
        self
    }

    /// The base configuration of the certificates' current generation, HTTP or spliced.
    fn base(&self, spliced: bool) -> Result<Arc<ServerConfig>, String> {
        let generation = self.certs.generation();
        let current = self.base.load();
        if current.generation == generation {
            return Ok(current.pick(spliced).clone());
        }
        let fresh =
            Base::new(&self.make, generation).map_err(|e| format!("TLS configuration: {e}"))?;
        let picked = fresh.pick(spliced).clone();
        self.base.store(Arc::new(fresh));
        Ok(picked)
    }

    /// A challenge leaf for `nonce` from `resolver`, issued on the blocking pool within the
    /// bounds above. The permits go with the quote: a handshake that times out while its
    /// quote runs does not free a place for another.
    async fn challenge(
        &self,
        metrics: &Metrics,
        resolver: Arc<RatlsResolver>,
        nonce: Vec<u8>,
    ) -> Result<Arc<CertifiedKey>, String> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            metrics.challenges_refused.fetch_add(1, Ordering::Relaxed);
            return Err("challenge refused: as many are already being issued and waiting".into());
        };
        let issuing = self
            .issuing
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "challenge issuance has stopped".to_string())?;
        let leaf = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, issuing);
            resolver.challenge(nonce)
        })
        .await
        .map_err(|e| format!("challenge issuance failed: {e}"))??;
        metrics.challenges_issued.fetch_add(1, Ordering::Relaxed);
        Ok(leaf)
    }

    /// The deterministic leaf of `resolver`. Leaves are issued when a workload is loaded and
    /// renewed ahead of time, off the connection threads; only when none may be presented (a
    /// configuration change whose leaf could not be issued, or renewal failing for an eighth
    /// of the lifetime) does this handshake wait for one, on the blocking pool, so that the
    /// thread's other connections are not held up by a quote. The resolver makes one quote
    /// for all that wait, and none for 30 s after a failed one.
    async fn deterministic(
        &self,
        resolver: Arc<RatlsResolver>,
    ) -> Result<Arc<CertifiedKey>, String> {
        if let Some(leaf) = resolver.presentable() {
            return Ok(leaf);
        }
        let Ok(waiting) = self.leaf_waiters.clone().try_acquire_owned() else {
            return Err(format!(
                "no certificate is ready for this name, and {MAX_LEAF_WAITERS} handshakes are waiting for one already: connect again"
            ));
        };
        tokio::task::spawn_blocking(move || {
            let _waiting = waiting;
            resolver.current()
        })
        .await
        .map_err(|e| format!("certificate issuance failed: {e}"))?
        .map_err(|e| format!("cannot issue an RA-TLS certificate: {e}"))
    }

    /// Read the ClientHello, choose the configuration it needs, and finish the handshake. With
    /// the stream comes the certificate the connection presented (recorded by a copy of the
    /// configuration made for this connection only): what its channel-bound evidence binds.
    async fn accept(
        &self,
        metrics: &Metrics,
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
        let spliced = self.certs.spliced(sni.as_deref().map(hostname));
        let base = match &self.gates {
            Some(g) => g.for_handshake(self.base(spliced)?, sni.as_deref())?,
            None => self.base(spliced)?,
        };
        // The certificate is chosen here, before the handshake, so that rustls never waits
        // for a quote on this thread.
        let resolver = self.certs.for_name(sni.as_deref());
        let (config, leaf) = match nonce {
            None => (base, self.deterministic(resolver).await?),
            Some(nonce) => {
                let leaf = self.challenge(metrics, resolver, nonce.clone()).await?;
                let mut config = (*base).clone();
                // The nonce travels as an ALPN protocol: offered back, so that a client
                // offering only it is not refused for want of a common protocol.
                config
                    .alpn_protocols
                    .push(enclave_ratls::tls::nonce_alpn(&nonce));
                // A challenge leaf is used once: compressing it into the shared cache would
                // only push out the cached leaves every other handshake reuses.
                config.cert_compression_cache =
                    Arc::new(rustls::compress::CompressionCache::Disabled);
                (Arc::new(config), leaf)
            }
        };
        let (config, chosen) = enclave_ratls::tls::presenting(&config, leaf);
        let tls = start
            .into_stream(config)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok((tls, chosen))
    }
}

/// What one connection was shown at its handshake: requests on it reach a workload only while
/// that still stands. Without this, a keep-alive connection that attested one workload's
/// certificate would, after an unload and a load on the same name, be served by another.
struct Binding {
    generation: u64,
    /// The workload its SNI named, if any.
    workload: Option<Arc<crate::control::Entry>>,
}

impl Binding {
    /// Whether a request routed to `entry` (under snapshot `generation`) may be served here.
    fn allows(&self, entry: &Arc<crate::control::Entry>, generation: u64, by_sni: bool) -> bool {
        if by_sni {
            // The workload's own certificate was presented: the very same workload only (a
            // replacement, or a reissued certificate, is another entry).
            self.workload
                .as_ref()
                .is_some_and(|w| Arc::ptr_eq(w, entry))
        } else {
            // Routed by Host: the enclave-wide certificate was presented, and it commits the
            // whole tree, so the tree may not have changed since.
            generation == self.generation
        }
    }
}

/// 421: this connection was attested for something no longer served under the name.
fn misdirected(workload: &str) -> axum::response::Response {
    let mut r = error(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "workload '{workload}' changed since this connection's certificate was presented: connect again to verify what now serves this name"
        ),
    );
    r.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

/// Whether `w`'s clients are spliced to its service as bytes.
fn splices(w: &enclave_config::file::Workload) -> bool {
    w.proxy
        .as_ref()
        .is_some_and(|p| p.protocol == UpstreamProtocol::Tcp)
}

/// Serve one connection until it closes.
pub(crate) async fn connection(
    handshakes: Arc<Handshakes>,
    tcp: tokio::net::TcpStream,
    site: Arc<Site>,
) {
    let metrics = &site.metrics;
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    // Without it, Nagle's algorithm holds back the last segment of the server's handshake
    // flight until the client's delayed ACK, about 40 ms on Linux, for every new connection.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let Ok(remote) = tcp.peer_addr() else {
        return;
    };
    // What was served before the handshake: a connection is bound to it (see `Binding`).
    let before = site.control.as_ref().map(|c| c.snapshot());
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes.accept(metrics, tcp)).await;
    let (tls, chosen) = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let session = tls.get_ref().1;
    let h2 = session.alpn_protocol() == Some(b"h2".as_slice());
    let sni: Option<Arc<str>> = session.server_name().map(Arc::from);
    // The client's chain, when a gate asked for one: judged at the first request it matters to.
    let peer = Arc::new(gate::Peer::of(session));
    // Bound to what was served when the handshake began. Should a change be published during
    // the handshake, the certificate presented may be newer than the binding: requests then
    // find another entry (or generation) than the bound one and get 421. The binding can only
    // be older than what the client was shown, never newer, so it fails closed.
    let binding = before.map(|now| {
        Arc::new(Binding {
            generation: now.generation,
            workload: sni.as_deref().and_then(|n| now.route(hostname(n)).cloned()),
        })
    });
    let bound = binding.as_ref().and_then(|b| b.workload.clone());
    let upstream = bound.as_ref().and_then(|w| w.running.upstream());
    let server_name: Option<Arc<str>> = session.server_name().map(|n| Arc::from(hostname(n)));
    // The exporter of this very connection: what channel-bound evidence binds.
    let conn = Connection {
        exporter: enclave_ratls::channel::exporter(session).ok(),
        presented: chosen.presented(session).cloned().map(Arc::new),
        peer: remote,
        // Made once for all the connection's requests; only workloads behind the proxy are
        // sent them, and only on connections made for their name (SNI).
        forwarding: match (&upstream, &server_name) {
            (Some(_), Some(name)) => Some(Arc::new(enclave_proxy::headers::Forwarding::new(
                remote, name,
            ))),
            _ => None,
        },
        server_name,
    };
    // A workload behind the proxy counts the connections its name holds.
    let _slot = match upstream.as_ref().map(|u| u.admit()) {
        Some(Err(why)) => {
            metrics.proxy_refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = %why, "connection refused");
            if !bound.as_ref().is_some_and(|w| splices(&w.spec)) {
                refuse_http(tls, h2, &why).await;
            }
            return;
        }
        Some(Ok(slot)) => Some(slot),
        None => None,
    };
    if let (Some(w), Some(upstream)) = (&bound, &upstream)
        && splices(&w.spec)
    {
        // The mutual RA-TLS gate, judged once: there are no requests to refuse one by one.
        let caller = match gate::Gates::admit_connection(site.gates.as_deref(), w, &peer).await {
            Ok(caller) => caller,
            Err(why) => {
                tracing::warn!(workload = %w.spec.name, client = %remote, reason = %why, "spliced connection refused by its gate");
                return;
            }
        };
        tracing::debug!(workload = %w.spec.name, client = %remote, caller = ?caller.headers(), "spliced connection admitted");
        let io = stall::StallLimit::new(tls, site.limits.write_stall);
        match upstream.splice(io).await {
            Ok(end) => {
                tracing::debug!(workload = %w.spec.name, end = ?end, "spliced connection ended")
            }
            Err(e) => {
                tracing::warn!(workload = %w.spec.name, error = %e, "spliced connection refused")
            }
        }
        return;
    }
    let limits = site.limits;
    // A workload's own bounds on what its name's connections send.
    let proxy = bound.as_ref().and_then(|w| w.spec.proxy.clone());
    let max_header = proxy.as_ref().map(|p| p.max_header_bytes() as usize);
    let mut draining = site.draining.clone();
    let idle = idle::Idle::new();
    let activity = idle.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let site = site.clone();
        let sni = sni.clone();
        let conn = conn.clone();
        let binding = binding.clone();
        // Only HTTP/2 connections are closed for idleness by this count (`idle`).
        let busy = h2.then(|| activity.busy());
        let peer = peer.clone();
        async move {
            let _busy = busy;
            req.extensions_mut().insert(conn);
            let reserved = req.uri().path().starts_with("/.well-known/enclave-os/");
            // By SNI, or by Host (HTTP/1.1) or :authority (HTTP/2) when the client sent no
            // SNI; one load of the snapshot.
            let routed = match (&site.control, reserved) {
                (Some(control), false) => {
                    let name = sni.as_deref().or_else(|| {
                        req.headers()
                            .get(hyper::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .or_else(|| req.uri().authority().map(|a| a.as_str()))
                    });
                    let now = control.snapshot();
                    name.and_then(|n| now.route(hostname(n)).cloned())
                        .map(|entry| (entry, now.generation))
                }
                _ => None,
            };
            let entry = match (routed, &binding) {
                (Some((entry, generation)), Some(bound)) => {
                    if !bound.allows(&entry, generation, sni.is_some()) {
                        return Ok(misdirected(&entry.spec.name));
                    }
                    Some(entry)
                }
                (Some((entry, _)), None) => Some(entry),
                (None, _) => None,
            };
            if let Some(entry) = &entry {
                // A service behind the proxy is served on connections made for its name only:
                // its per-connection bounds (proxy.max_connections, max_header_bytes) and the
                // host its service is told are the SNI's.
                if sni.is_none() && entry.running.upstream().is_some() {
                    return Ok(error(
                        StatusCode::MISDIRECTED_REQUEST,
                        format!(
                            "workload '{}' is served only on connections made for its name: connect with SNI {}",
                            entry.spec.name,
                            entry
                                .spec
                                .hostnames
                                .first()
                                .map_or("(its hostname)", String::as_str)
                        ),
                    ));
                }
                let gates = site.gates.as_deref();
                if let Err(refused) =
                    gate::Gates::admit(gates, entry, &peer, sni.is_some(), &mut req).await
                {
                    return Ok(*refused);
                }
            }
            let response = match entry {
                // A spliced workload reached by Host on an HTTP connection: it speaks no HTTP.
                Some(entry) if splices(&entry.spec) => error(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "workload '{}' speaks TCP, not HTTP: connect with its name as the TLS server name",
                        entry.spec.name
                    ),
                ),
                // A workload's own deadline bounds its whole exchange (its backend's).
                Some(entry) => {
                    let max = match entry.spec.proxy.as_ref().and_then(|p| p.max_body_bytes) {
                        Some(max) => (max, "proxy.max_body_bytes"),
                        None => (limits.max_request_bytes, "limits.max_request_bytes"),
                    };
                    serve_workload(entry.handler.clone(), max, limits.header_timeout, req).await
                }
                None => {
                    // The vault judges a mutual RA-TLS caller from the connection's chain.
                    req.extensions_mut().insert(peer.clone());
                    let call = site.api.clone().oneshot(req.map(axum::body::Body::new));
                    match tokio::time::timeout(limits.request_timeout, call).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(never)) => match never {},
                        Err(_) => error(
                            StatusCode::REQUEST_TIMEOUT,
                            format!(
                                "the request did not complete within {} s (limits.request_timeout_secs)",
                                limits.request_timeout.as_secs()
                            ),
                        ),
                    }
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let io = TokioIo::new(stall::StallLimit::new(tls, limits.write_stall));
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS)
            // A peer that stops answering pings is gone: its streams and slot are freed.
            .keep_alive_interval(limits.header_timeout)
            .keep_alive_timeout(limits.header_timeout);
        if let Some(max) = max_header {
            builder.max_header_list_size(u32::try_from(max).unwrap_or(u32::MAX));
        }
        let conn = builder.serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = draining.wait_for(|d| *d) => conn.as_mut().graceful_shutdown(),
            () = idle.expired(limits.header_timeout) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        if let Some(max) = max_header {
            builder.max_buf_size(max.max(MIN_HEAD_BUFFER));
        }
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = draining.wait_for(|d| *d) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

/// Streams one HTTP/2 connection may have open at once.
const MAX_STREAMS: u32 = 128;
/// hyper's smallest read buffer.
const MIN_HEAD_BUFFER: usize = 8 * 1024;

/// Answer every request on `tls` with 503 and `why`, closing it after the first (a workload's
/// connection limit).
async fn refuse_http(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    h2: bool,
    why: &str,
) {
    let why: Arc<str> = Arc::from(why);
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, why.to_string());
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
        async move { Ok::<_, std::convert::Infallible>(r) }
    });
    let io = TokioIo::new(tls);
    let serve = async {
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(io, service)
                .await;
        }
    };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, serve).await;
}
