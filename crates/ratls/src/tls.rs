//! RA-TLS over rustls: the server's certificate resolver and the peers' certificate verifiers.
//!
//! Freshness modes (see `docs/ratls.md`):
//!
//! - *deterministic* (default): the server caches one leaf bound to its own notBefore, renews it
//!   ahead of time on a thread of its own when a quarter of its lifetime remains, and replaces it
//!   when the configuration changes (see `RatlsResolver`);
//! - *challenge*: the client offers the ALPN protocol `enclave-os-nonce/<hex nonce>`; the server's
//!   resolver sees it in the ClientHello and issues a fresh leaf whose evidence binds that nonce.
//!   The server does not select the protocol, so the connection negotiates no ALPN from it.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::binding::Freshness;
use crate::cert::RatlsError;
use crate::verify::{RatlsVerifier, Report, Role};
#[cfg(feature = "issue")]
mod resolver;
#[cfg(feature = "issue")]
pub use resolver::RatlsResolver;

/// The ALPN prefix that carries a challenge nonce.
pub const NONCE_ALPN_PREFIX: &[u8] = b"enclave-os-nonce/";
/// The longest nonce accepted, in bytes (the ALPN protocol name is at most 255 bytes).
pub const MAX_NONCE: usize = 64;

/// The one crypto provider of the tree.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocol a client offers to challenge the server with `nonce`.
pub fn nonce_alpn(nonce: &[u8]) -> Vec<u8> {
    let mut p = NONCE_ALPN_PREFIX.to_vec();
    p.extend_from_slice(hex::encode(nonce).as_bytes());
    p
}

/// The challenge nonce a ClientHello carries in its ALPN offer, if any: a server that issues
/// challenge leaves away from its handshake threads looks here first.
pub fn challenge_nonce(hello: &ClientHello<'_>) -> Option<Vec<u8>> {
    nonce_from_alpn(hello)
}

fn nonce_from_alpn(hello: &ClientHello<'_>) -> Option<Vec<u8>> {
    hello.alpn()?.find_map(|p| {
        let hexed = p.strip_prefix(NONCE_ALPN_PREFIX)?;
        let nonce = hex::decode(hexed).ok()?;
        (!nonce.is_empty() && nonce.len() <= MAX_NONCE).then_some(nonce)
    })
}

/// A workload's hostnames and the resolver issuing its own certificate.
#[cfg(feature = "issue")]
type WorkloadCert = (String, Vec<String>, Arc<RatlsResolver>);

/// Chooses the certificate by SNI: a workload's own certificate for its hostnames, the
/// enclave-wide one otherwise. Workloads come and go at run time; each has its own resolver, so
/// changing one leaves the others' certificates as they are.
#[cfg(feature = "issue")]
#[derive(Debug)]
pub struct SniResolver {
    enclave: Arc<RatlsResolver>,
    workloads: std::sync::RwLock<Vec<WorkloadCert>>,
}

#[cfg(feature = "issue")]
impl SniResolver {
    /// `enclave` serves every name not claimed by a workload; `workloads` are
    /// (name, hostnames, resolver).
    pub fn new(enclave: Arc<RatlsResolver>, workloads: Vec<WorkloadCert>) -> Self {
        Self {
            enclave,
            workloads: std::sync::RwLock::new(workloads),
        }
    }

    /// The resolver for `server_name`.
    pub fn for_name(&self, server_name: Option<&str>) -> Arc<RatlsResolver> {
        let workloads = self.workloads.read().unwrap_or_else(|p| p.into_inner());
        server_name
            .and_then(|n| {
                workloads
                    .iter()
                    .find(|(_, names, _)| names.iter().any(|h| h.eq_ignore_ascii_case(n)))
                    .map(|(_, _, r)| r.clone())
            })
            .unwrap_or_else(|| self.enclave.clone())
    }

    /// Add workload `name` with its hostnames and resolver, replacing one of the same name.
    pub fn set_workload(&self, name: &str, hostnames: Vec<String>, resolver: Arc<RatlsResolver>) {
        let mut w = self.workloads.write().unwrap_or_else(|p| p.into_inner());
        w.retain(|(n, _, _)| n != name);
        w.push((name.to_string(), hostnames, resolver));
    }

    /// Remove workload `name`.
    pub fn remove_workload(&self, name: &str) {
        self.workloads
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _, _)| n != name);
    }
}

#[cfg(feature = "issue")]
impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_string);
        self.for_name(name.as_deref()).resolve(hello)
    }
}

/// Remembers the certificate the resolver chose for one connection: the key that connection's
/// channel-bound evidence must bind (with SNI, a workload's leaf; with a challenge, the fresh
/// leaf). One instance per connection, made by [`recording`].
#[derive(Debug)]
pub struct ChosenCert {
    inner: Arc<dyn ResolvesServerCert>,
    chosen: OnceLock<Arc<CertifiedKey>>,
}

impl ChosenCert {
    /// The leaf (DER) `conn` presented, `conn` being the connection this instance was made for.
    /// `None` before the handshake completed, and on a resumed session: rustls still asks the
    /// resolver then, but sends nothing, and the client holds the certificate of the session it
    /// resumed, which may have been renewed since.
    pub fn presented(&self, conn: &rustls::ServerConnection) -> Option<&CertificateDer<'static>> {
        match conn.handshake_kind()? {
            rustls::HandshakeKind::Full | rustls::HandshakeKind::FullWithHelloRetryRequest => {
                self.chosen.get()?.cert.first()
            }
            rustls::HandshakeKind::Resumed => None,
        }
    }
}

impl ResolvesServerCert for ChosenCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let ck = self.inner.resolve(hello)?;
        // A handshake resolves once; should rustls ever ask again, the first answer stands.
        let _ = self.chosen.set(ck.clone());
        Some(ck)
    }
}

/// A copy of `config` for one connection, whose resolver records the certificate it chooses.
/// The copy shares everything else (session cache, tickets, client verifier) with `config`.
pub fn recording(
    config: &Arc<rustls::ServerConfig>,
) -> (Arc<rustls::ServerConfig>, Arc<ChosenCert>) {
    recording_from(config, config.cert_resolver.clone())
}

/// [`recording`], for a connection whose certificate was chosen before its handshake: the copy
/// presents `leaf`, whatever the ClientHello says.
pub fn presenting(
    config: &Arc<rustls::ServerConfig>,
    leaf: Arc<CertifiedKey>,
) -> (Arc<rustls::ServerConfig>, Arc<ChosenCert>) {
    recording_from(config, Arc::new(rustls::sign::SingleCertAndKey::from(leaf)))
}

fn recording_from(
    config: &Arc<rustls::ServerConfig>,
    inner: Arc<dyn ResolvesServerCert>,
) -> (Arc<rustls::ServerConfig>, Arc<ChosenCert>) {
    let chosen = Arc::new(ChosenCert {
        inner,
        chosen: OnceLock::new(),
    });
    let mut copy = (**config).clone();
    copy.cert_resolver = chosen.clone();
    (Arc::new(copy), chosen)
}

/// The RA-TLS reason inside a handshake error, when an RA-TLS verifier rejected the peer's
/// certificate: what a caller shows instead of rustls's rendering of it.
pub fn rejection(e: &rustls::Error) -> Option<&RatlsError> {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            o.0.downcast_ref::<RatlsError>()
        }
        _ => None,
    }
}

/// [`rejection`] for the I/O error a blocking stream (or `complete_io`) returns.
pub fn io_rejection(e: &std::io::Error) -> Option<&RatlsError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(rejection)
}

/// The peer's chain of a connection: leaf, intermediates.
fn peer_chain<D>(
    conn: &rustls::ConnectionCommon<D>,
) -> Result<(&CertificateDer<'static>, &[CertificateDer<'static>]), RatlsError> {
    conn.peer_certificates()
        .and_then(|c| c.split_first())
        .ok_or_else(|| {
            RatlsError::Certificate(
                "the peer presented no certificate on this connection (or the handshake is not \
                 complete)"
                    .into(),
            )
        })
}

/// What both verifiers share: the RA-TLS checks and the handshake signature checks of the one
/// crypto provider. It keeps nothing from one handshake to the next: the report of a connection
/// is read back from that connection's own certificates (`peer_report`), so concurrent
/// handshakes cannot see each other's outcome.
#[derive(Debug)]
struct Core {
    inner: RatlsVerifier,
    provider: Arc<CryptoProvider>,
}

impl Core {
    fn new(inner: RatlsVerifier) -> Self {
        Self {
            inner,
            provider: provider(),
        }
    }

    fn report(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        at: i64,
        freshness: &Freshness,
        role: Role,
        name: Option<&ServerName<'_>>,
    ) -> Result<Report, RatlsError> {
        self.inner
            .verify_named(end_entity, intermediates, at, freshness, role, name)
    }

    /// Run the RA-TLS checks and answer rustls; a rejection carries its [`RatlsError`].
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        freshness: &Freshness,
        role: Role,
        name: Option<&ServerName<'_>>,
    ) -> Result<(), rustls::Error> {
        let at = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.report(end_entity, intermediates, at, freshness, role, name)
            .map(|_| ())
            .map_err(|e| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(e)),
                ))
            })
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies a server's RA-TLS certificate in the handshake, including that it is valid for the
/// server name the client asked for (the SNI, or the IP address connected to).
#[derive(Debug)]
pub struct RatlsServerVerifier {
    core: Core,
    freshness: Freshness,
}

impl RatlsServerVerifier {
    /// Verify with `inner`, expecting `freshness`.
    pub fn new(inner: RatlsVerifier, freshness: Freshness) -> Self {
        Self {
            core: Core::new(inner),
            freshness,
        }
    }

    /// The report of one connection, read back from the certificates its server presented
    /// (all checks run again, at `at`, for `server_name`, the name the connection was opened
    /// for). A rejected handshake has no report: its reason is in the handshake's error
    /// ([`rejection`]).
    pub fn peer_report(
        &self,
        conn: &rustls::ClientConnection,
        server_name: &ServerName<'_>,
        at: i64,
    ) -> Result<Report, RatlsError> {
        let (leaf, intermediates) = peer_chain(conn)?;
        self.core.report(
            leaf,
            intermediates,
            at,
            &self.freshness,
            Role::Server,
            Some(server_name),
        )
    }

    /// The RA-TLS verifier inside (for channel-bound evidence after the handshake).
    pub fn inner(&self) -> &RatlsVerifier {
        &self.core.inner
    }
}

impl ServerCertVerifier for RatlsServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.core
            .check(
                end_entity,
                intermediates,
                now,
                &self.freshness,
                Role::Server,
                Some(server_name),
            )
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.schemes()
    }
}

/// Verifies a client's RA-TLS certificate (mutual RA-TLS). Client certificates are always
/// deterministic-mode leaves.
///
/// TLS gives a server no name to expect of its client. With [`Self::expecting`], the client's
/// leaf must be valid for that name (a DNS or IP subjectAltName, by webpki's rules); without
/// it, no name is checked, and any client whose chain, evidence, binding and policy pass is
/// accepted, whatever names its certificate carries.
#[derive(Debug)]
pub struct RatlsClientVerifier {
    core: Core,
    expected: Option<ServerName<'static>>,
}

impl RatlsClientVerifier {
    /// Verify client certificates with `inner`, checking no name.
    pub fn new(inner: RatlsVerifier) -> Self {
        Self {
            core: Core::new(inner),
            expected: None,
        }
    }

    /// Require every client's leaf to be valid for `name`.
    pub fn expecting(mut self, name: ServerName<'static>) -> Self {
        self.expected = Some(name);
        self
    }

    /// The report of one connection's client, read back from the certificates it presented
    /// (all checks run again, at `at`).
    pub fn peer_report(
        &self,
        conn: &rustls::ServerConnection,
        at: i64,
    ) -> Result<Report, RatlsError> {
        let (leaf, intermediates) = peer_chain(conn)?;
        self.core.report(
            leaf,
            intermediates,
            at,
            &Freshness::Deterministic,
            Role::Client,
            self.expected.as_ref(),
        )
    }
}

impl ClientCertVerifier for RatlsClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.core
            .check(
                end_entity,
                intermediates,
                now,
                &Freshness::Deterministic,
                Role::Client,
                self.expected.as_ref(),
            )
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.core.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.core.schemes()
    }
}

/// Presents the client's own RA-TLS certificate (mutual RA-TLS): the deterministic leaf.
#[cfg(feature = "issue")]
impl rustls::client::ResolvesClientCert for RatlsResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current().ok()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server configuration serving RA-TLS certificates from `resolver`, optionally requiring
/// RA-TLS client certificates.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    clients: Option<Arc<RatlsClientVerifier>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    compress_certificates(
        &mut config.cert_compressors,
        &mut config.cert_decompressors,
        &mut config.cert_compression_cache,
    );
    Ok(config)
}

/// How many compressed certificate chains a [`server_config`] or [`client_config`] keeps (rustls
/// keeps 4 by default): enough for the enclave-wide leaf, the workloads' leaves and challenges.
pub const COMPRESSION_CACHE_ENTRIES: usize = 32;

/// RFC 8879 certificate compression (zlib), both ways, with a cache of [`COMPRESSION_CACHE_ENTRIES`].
///
/// An RA-TLS leaf carries a quote (about 4 KB; the PCK chain inside it is PEM text), so its
/// Certificate message is several times a plain leaf's: compressing it shrinks what the server
/// encrypts, hashes and sends. The cache makes it cheap: rustls keys each entry by the whole
/// uncompressed chain, compresses a chain once at the best level and serves every later
/// handshake from the entry. A deterministic leaf is the same chain until it is renewed, so the
/// cost is paid once per leaf, not per handshake.
///
/// The cache is an `Arc` in the configuration, so every clone of it shares it: the runtime's
/// per-connection copy ([`recording`]) and its challenge copies hit the same entries. rustls's
/// default keeps 4, least recently used first out; the runtime serves the enclave-wide leaf and
/// one per workload, and challenge leaves (each new, each compressed once) pass through the same
/// cache, so it keeps [`COMPRESSION_CACHE_ENTRIES`]: a leaf in use stays cached unless that many
/// other chains were compressed between two of its handshakes. An entry holds the chain and its
/// compression, about 8 KB for an RA-TLS chain.
///
/// zlib, not brotli: on an RA-TLS chain brotli's best level saves about 300 bytes more (10%) but
/// costs about 5 ms where zlib's costs about 55 µs (see `docs/performance.md`), and a challenge
/// leaf, always a miss, would pay that on every handshake.
///
/// Nothing is checked less: the receiver decompresses (bounded by rustls to 64 KB, the length
/// must match exactly) and then verifies the chain it got exactly as an uncompressed one.
fn compress_certificates(
    compressors: &mut Vec<&'static dyn rustls::compress::CertCompressor>,
    decompressors: &mut Vec<&'static dyn rustls::compress::CertDecompressor>,
    cache: &mut Arc<rustls::compress::CompressionCache>,
) {
    *compressors = vec![rustls::compress::ZLIB_COMPRESSOR];
    *decompressors = vec![rustls::compress::ZLIB_DECOMPRESSOR];
    *cache = Arc::new(rustls::compress::CompressionCache::new(
        COMPRESSION_CACHE_ENTRIES,
    ));
}

/// A client configuration verifying servers with `verifier`, offering `nonce` as a challenge
/// when given, and presenting `own` as its client certificate when given (mutual RA-TLS: a
/// `RatlsResolver` with the `issue` feature; a verifier-only client passes `None`).
pub fn client_config(
    verifier: Arc<RatlsServerVerifier>,
    nonce: Option<&[u8]>,
    own: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match own {
        Some(r) => builder.with_client_cert_resolver(r),
        None => builder.with_no_client_auth(),
    };
    if let Some(n) = nonce {
        config.alpn_protocols = vec![nonce_alpn(n)];
    }
    // Offer compression of the server's chain; a client certificate (mutual RA-TLS) is sent
    // compressed when the server offers it, and cached the same way when `config` is reused.
    compress_certificates(
        &mut config.cert_compressors,
        &mut config.cert_decompressors,
        &mut config.cert_compression_cache,
    );
    Ok(config)
}
