//! The registry client: OCI distribution v2 over `enclave-http`, each registry trusted only
//! through its own CA bundle, every document and blob checked against its digest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use enclave_http::header::HeaderValue;
use enclave_http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use enclave_http::{HeaderMap, Request, StatusCode, StreamingResponse, Uri};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

use crate::auth::{Challenge, Credentials, Token, TokenResponse, parse_challenge, query_escape};
use crate::error::OciError;
use crate::image::{
    Descriptor, ImageConfig, MAX_DOCUMENT, Manifest, Resolved, blob_what, child_what, media_type,
    parse_config, resolve_child, resolve_top,
};
use crate::reference::{Digest, Reference};

/// How many redirects a blob request follows.
const MAX_REDIRECTS: usize = 3;
/// How much of an error response is read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One registry's settings.
#[derive(Clone)]
pub struct RegistryConfig {
    /// `host[:port]`, exactly as references spell it.
    pub host: String,
    /// The CA certificates (PEM) that may issue the registry's certificate: the only trust
    /// used for it (no system roots, no fallback).
    pub ca_bundle_pem: Vec<u8>,
    /// The account to use when the registry asks for one.
    pub credentials: Option<Credentials>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("host", &self.host)
            .field(
                "ca_bundle_pem",
                &format!("{} bytes", self.ca_bundle_pem.len()),
            )
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// What a request authenticates with.
enum Auth {
    Anonymous,
    Basic(Zeroizing<String>),
    Bearer(Zeroizing<String>),
}

#[derive(Default)]
struct AuthState {
    /// The registry asked for Basic: send it from the first request on.
    basic: bool,
    /// Bearer tokens by repository.
    tokens: HashMap<String, Token>,
}

struct Registry {
    host: String,
    http: enclave_http::Client,
    credentials: Option<Credentials>,
    // Never held across an await.
    state: Mutex<AuthState>,
}

/// The registry client. Cheap to share (`Arc` it); tokens are cached per registry and
/// repository until they expire.
pub struct Client {
    registries: HashMap<String, Arc<Registry>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hosts: Vec<&String> = self.registries.keys().collect();
        hosts.sort();
        f.debug_struct("Client")
            .field("registries", &hosts)
            .finish()
    }
}

impl Client {
    /// A client for exactly these registries. Refused: a host that is not `host[:port]`, the
    /// same host twice, a CA bundle with no certificate or one that does not parse.
    pub fn new(registries: Vec<RegistryConfig>) -> Result<Self, OciError> {
        let mut out = HashMap::new();
        for config in registries {
            let host = config.host.to_ascii_lowercase();
            let bad = |reason: String| OciError::RegistryConfig {
                host: config.host.clone(),
                reason,
            };
            crate::reference::check_host(&host).map_err(bad)?;
            if out.contains_key(&host) {
                return Err(bad("configured twice".into()));
            }
            let tls = pinned(&config.ca_bundle_pem).map_err(bad)?;
            let http = enclave_http::Client::new(Arc::new(tls)).max_body(MAX_DOCUMENT as usize);
            out.insert(
                host.clone(),
                Arc::new(Registry {
                    host,
                    http,
                    credentials: config.credentials,
                    state: Mutex::new(AuthState::default()),
                }),
            );
        }
        Ok(Self { registries: out })
    }

    fn registry(&self, r: &Reference) -> Result<&Arc<Registry>, OciError> {
        self.registries
            .get(r.host())
            .ok_or_else(|| OciError::UnknownRegistry {
                reference: r.to_string(),
                host: r.host().to_string(),
            })
    }

    /// The image manifest `r` pins: fetched by digest and checked against it. If the digest
    /// names an index (manifest list), its linux/amd64 manifest is fetched by its own digest
    /// and checked too, and the index is returned alongside. Every layer's media type is
    /// checked here, so an image this client cannot verify is refused before any layer moves.
    pub async fn resolve(&self, r: &Reference) -> Result<Manifest, OciError> {
        let reg = self.registry(r)?;
        let what = format!("the manifest {r}");
        let (bytes, content_type) = reg.document(r, "manifests", r.digest(), &what).await?;
        r.digest().check(&bytes, &what)?;
        match resolve_top(bytes, *r.digest(), content_type.as_deref(), &what)? {
            Resolved::Done(m) => Ok(m),
            Resolved::Child { descriptor, index } => {
                let what = child_what(&descriptor, &what);
                let (bytes, _) = reg
                    .document(r, "manifests", &descriptor.digest, &what)
                    .await?;
                resolve_child(bytes, &descriptor, index, &what)
            }
        }
    }

    /// The image configuration `manifest` names: fetched, checked against the manifest's size
    /// and digest, parsed, and checked for linux/amd64 and one diff_id per layer.
    pub async fn config(
        &self,
        r: &Reference,
        manifest: &Manifest,
    ) -> Result<ImageConfig, OciError> {
        let reg = self.registry(r)?;
        let d = &manifest.parsed.config;
        let what = blob_what(d, Some(manifest), &r.to_string());
        let (bytes, _) = reg.document(r, "blobs", &d.digest, &what).await?;
        parse_config(bytes, manifest, &what)
    }

    /// A blob (a layer) streamed as it arrives, checked as it goes: see [`BlobStream`].
    /// Redirects (registries send blobs from storage) are followed up to 3 times, only to
    /// `https://` on the registry's own host: the registry's CA bundle is the only trust, so
    /// storage elsewhere could not be verified the same way.
    pub async fn blob(&self, r: &Reference, d: &Descriptor) -> Result<BlobStream, OciError> {
        let reg = self.registry(r)?;
        let what = blob_what(d, None, &r.to_string());
        let response = reg.open(r, "blobs", &d.digest, None, &what).await?;
        if let Some(declared) = content_length(&response.headers)
            && declared != d.size
        {
            return Err(OciError::SizeMismatch {
                what,
                expected: d.size,
                actual: format!("the registry announces {declared} bytes"),
            });
        }
        Ok(BlobStream {
            body: response.body,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            expected: d.digest,
            size: d.size,
            received: 0,
            host: reg.host.clone(),
            what,
            done: false,
        })
    }
}

/// A blob arriving: each chunk is handed over as it comes, counted and hashed. The content is
/// only proven once [`BlobStream::next_chunk`] returns `Ok(None)`: a wrong digest or size is
/// reported there instead of the end, so nothing built from the chunks may be committed
/// before. More bytes than the descriptor declares are refused as soon as they arrive.
pub struct BlobStream {
    body: enclave_http::BodyStream,
    hasher: ring::digest::Context,
    expected: Digest,
    size: u64,
    received: u64,
    host: String,
    what: String,
    done: bool,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("what", &self.what)
            .field("size", &self.size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl BlobStream {
    /// The next chunk; `Ok(None)` once the whole blob arrived with its declared size and
    /// digest; [`OciError::DigestMismatch`] or [`OciError::SizeMismatch`] instead if not.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, OciError> {
        if self.done {
            return Ok(None);
        }
        let chunk = self.body.chunk().await.map_err(|source| {
            self.done = true;
            http_error(&self.host, &self.what, source)
        })?;
        match chunk {
            Some(chunk) => {
                self.received += chunk.len() as u64;
                if self.received > self.size {
                    self.done = true;
                    return Err(OciError::SizeMismatch {
                        what: self.what.clone(),
                        expected: self.size,
                        actual: format!("at least {} bytes arrived", self.received),
                    });
                }
                self.hasher.update(&chunk);
                Ok(Some(chunk))
            }
            None => {
                self.done = true;
                if self.received != self.size {
                    return Err(OciError::SizeMismatch {
                        what: self.what.clone(),
                        expected: self.size,
                        actual: format!("{} bytes arrived", self.received),
                    });
                }
                let actual = Digest::from_ring(self.hasher.clone().finish());
                self.expected.check_digest(&actual, &self.what)?;
                Ok(None)
            }
        }
    }

    /// Bytes received so far (for progress).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The size the descriptor declares.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What this blob is, as errors name it.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Registry {
    /// A manifest or configuration, read whole (at most [`MAX_DOCUMENT`]), with its
    /// `Content-Type`.
    async fn document(
        &self,
        r: &Reference,
        kind: &str,
        digest: &Digest,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>), OciError> {
        let accept = (kind == "manifests").then_some(media_type::ACCEPT_MANIFESTS);
        let mut response = self.open(r, kind, digest, accept, what).await?;
        let too_large = || OciError::TooLarge {
            what: what.to_string(),
            limit: MAX_DOCUMENT,
        };
        if content_length(&response.headers).is_some_and(|n| n > MAX_DOCUMENT) {
            return Err(too_large());
        }
        let content_type = response
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .body
            .chunk()
            .await
            .map_err(|e| http_error(&self.host, what, e))?
        {
            if (bytes.len() + chunk.len()) as u64 > MAX_DOCUMENT {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, content_type))
    }

    /// `GET /v2/<repo>/<kind>/<digest>`, authenticating when asked and following same-host
    /// redirects; the response once it is a 200.
    async fn open(
        &self,
        r: &Reference,
        kind: &str,
        digest: &Digest,
        accept: Option<&'static str>,
        what: &str,
    ) -> Result<StreamingResponse, OciError> {
        let repo = r.repository();
        let mut url = format!("https://{}/v2/{repo}/{kind}/{digest}", self.host);
        let mut redirects = 0;
        let mut authenticated = false;
        loop {
            let uri: Uri = url.parse().map_err(|e| OciError::Redirect {
                host: self.host.clone(),
                what: what.to_string(),
                location: url.clone(),
                reason: format!("not a URL: {e}"),
            })?;
            let mut request = Request::get(uri);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, HeaderValue::from_static(accept));
            }
            let sent_auth = self.auth(repo);
            request = with_auth(request, &sent_auth);
            let mut response = self
                .http
                .send_streaming(request)
                .await
                .map_err(|e| http_error(&self.host, what, e))?;
            let status = response.status;
            match status {
                StatusCode::OK => return Ok(response),
                StatusCode::UNAUTHORIZED if !authenticated => {
                    let challenge = response
                        .headers
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    drop(response);
                    self.authenticate(repo, challenge.as_deref(), what).await?;
                    authenticated = true;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(self.refused(&sent_auth, what));
                }
                StatusCode::FORBIDDEN => {
                    let detail = error_detail(&mut response).await;
                    return Err(OciError::Unauthorized {
                        host: self.host.clone(),
                        what: what.to_string(),
                        reason: format!(
                            "access denied{}",
                            detail.map(|d| format!(" ({d})")).unwrap_or_default()
                        ),
                    });
                }
                StatusCode::NOT_FOUND => {
                    let detail = error_detail(&mut response).await;
                    return Err(OciError::NotFound {
                        host: self.host.clone(),
                        what: what.to_string(),
                        detail,
                    });
                }
                s if s.is_redirection() => {
                    let location = response
                        .headers
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    redirects += 1;
                    url = self.redirect(&url, &location, redirects, what)?;
                }
                s => {
                    let detail = error_detail(&mut response).await;
                    return Err(OciError::Status {
                        host: self.host.clone(),
                        what: what.to_string(),
                        status: s.as_u16(),
                        detail,
                    });
                }
            }
        }
    }

    /// Where a redirect may go: `https://` on this registry's host, at most
    /// [`MAX_REDIRECTS`] times.
    fn redirect(
        &self,
        from: &str,
        location: &str,
        count: usize,
        what: &str,
    ) -> Result<String, OciError> {
        let refuse = |reason: String| OciError::Redirect {
            host: self.host.clone(),
            what: what.to_string(),
            location: location.to_string(),
            reason,
        };
        if location.is_empty() {
            return Err(refuse("the redirect has no Location".into()));
        }
        if count > MAX_REDIRECTS {
            return Err(refuse(format!("more than {MAX_REDIRECTS} redirects")));
        }
        let absolute = if location.starts_with('/') {
            format!("https://{}{location}", self.host)
        } else {
            location.to_string()
        };
        let uri = enclave_http::parse(&absolute).map_err(|e| {
            refuse(format!(
                "only https:// redirects are followed ({})",
                e.to_string()
                    .trim_start_matches(&absolute)
                    .trim_start_matches(": ")
            ))
        })?;
        let authority = uri.authority().map(|a| a.as_str().to_ascii_lowercase());
        if authority.as_deref() != Some(self.host.as_str()) {
            return Err(refuse(format!(
                "redirects are followed only to the registry's own host {} (from {from}), whose CA bundle is the only trust configured",
                self.host
            )));
        }
        Ok(absolute)
    }

    /// What to send: Basic once the registry asked for it, a cached fresh token for the
    /// repository, else nothing.
    fn auth(&self, repo: &str) -> Auth {
        let Ok(state) = self.state.lock() else {
            return Auth::Anonymous;
        };
        if let Some(t) = state.tokens.get(repo).filter(|t| t.fresh()) {
            return Auth::Bearer(t.value.clone());
        }
        match (&self.credentials, state.basic) {
            (Some(c), true) => Auth::Basic(c.basic()),
            _ => Auth::Anonymous,
        }
    }

    fn refused(&self, sent: &Auth, what: &str) -> OciError {
        let reason = match (sent, &self.credentials) {
            (Auth::Bearer(_), None) => {
                "the token its token server issued was refused (no credentials are configured for it)"
                    .to_string()
            }
            (Auth::Bearer(_), Some(c)) => format!(
                "the token issued for the credentials configured for it (user '{}') was refused",
                c.username
            ),
            (_, Some(c)) => format!(
                "the credentials configured for it (user '{}') were refused",
                c.username
            ),
            (_, None) => "it asks for credentials and none are configured for it".to_string(),
        };
        OciError::Unauthorized {
            host: self.host.clone(),
            what: what.to_string(),
            reason,
        }
    }

    /// Answer a 401's challenge: remember Basic, or fetch a bearer token.
    async fn authenticate(
        &self,
        repo: &str,
        challenge: Option<&str>,
        what: &str,
    ) -> Result<(), OciError> {
        let unauthorized = |reason: String| OciError::Unauthorized {
            host: self.host.clone(),
            what: what.to_string(),
            reason,
        };
        let challenge = challenge.ok_or_else(|| {
            unauthorized("it answered 401 without a WWW-Authenticate challenge".into())
        })?;
        match parse_challenge(challenge).map_err(unauthorized)? {
            Challenge::Basic => {
                if self.credentials.is_none() {
                    return Err(unauthorized(
                        "it asks for credentials (Basic) and none are configured for it".into(),
                    ));
                }
                if let Ok(mut state) = self.state.lock() {
                    state.basic = true;
                }
                Ok(())
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let token = self
                    .token(repo, &realm, service.as_deref(), scope.as_deref(), what)
                    .await?;
                if let Ok(mut state) = self.state.lock() {
                    state.tokens.insert(repo.to_string(), token);
                }
                Ok(())
            }
        }
    }

    /// A token from `realm`, which must be `https://` on the registry's host (any port): it is
    /// called with the registry's TLS trust and, if configured, its credentials.
    async fn token(
        &self,
        repo: &str,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        what: &str,
    ) -> Result<Token, OciError> {
        let unauthorized = |reason: String| OciError::Unauthorized {
            host: self.host.clone(),
            what: what.to_string(),
            reason,
        };
        let realm_uri = enclave_http::parse(realm)
            .map_err(|e| unauthorized(format!("its token realm is refused: {e}")))?;
        let realm_host = realm_uri.host().unwrap_or_default().to_ascii_lowercase();
        let own_host = host_name(&self.host);
        if realm_host.trim_start_matches('[').trim_end_matches(']') != own_host {
            return Err(unauthorized(format!(
                "its token realm {realm} is on another host than the registry ({own_host}): refused, as its credentials and trust are the registry's"
            )));
        }
        let scope = scope
            .map(str::to_string)
            .unwrap_or_else(|| format!("repository:{repo}:pull"));
        let mut url = realm.to_string();
        url.push(if realm.contains('?') { '&' } else { '?' });
        if let Some(service) = service {
            url.push_str(&format!("service={}&", query_escape(service)));
        }
        url.push_str(&format!("scope={}", query_escape(&scope)));
        let uri = enclave_http::parse(&url)
            .map_err(|e| unauthorized(format!("its token realm is refused: {e}")))?;
        let mut request = Request::get(uri);
        if let Some(c) = &self.credentials {
            request = with_auth(request, &Auth::Basic(c.basic()));
        }
        let fetched = Instant::now();
        let response = self
            .http
            .send(request)
            .await
            .map_err(|e| http_error(&self.host, &format!("the token for {what}"), e))?;
        let body = Zeroizing::new(response.body);
        match response.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(unauthorized(match &self.credentials {
                    Some(c) => format!(
                        "its token server {realm} refused the credentials configured for it (user '{}')",
                        c.username
                    ),
                    None => format!(
                        "its token server {realm} refused anonymous access and no credentials are configured for it"
                    ),
                }));
            }
            s => {
                return Err(unauthorized(format!(
                    "its token server {realm} answered {s}"
                )));
            }
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| unauthorized(format!("its token server {realm} sent no token: {e}")))?;
        parsed
            .into_token(fetched)
            .ok_or_else(|| unauthorized(format!("its token server {realm} sent an empty token")))
    }
}

fn with_auth(request: Request, auth: &Auth) -> Request {
    let value = match auth {
        Auth::Anonymous => return request,
        Auth::Basic(v) => HeaderValue::from_str(v),
        Auth::Bearer(t) => HeaderValue::from_str(&Zeroizing::new(format!("Bearer {}", t.as_str()))),
    };
    match value {
        Ok(mut v) => {
            v.set_sensitive(true);
            request.header(AUTHORIZATION, v)
        }
        // Not a header value: sent without, and the registry's 401 says so.
        Err(_) => request,
    }
}

/// `host` without its port.
fn host_name(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    host.split(':').next().unwrap_or_default().to_string()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn http_error(host: &str, what: &str, source: enclave_http::Error) -> OciError {
    if matches!(source, enclave_http::Error::Tls { .. }) || source.tls_error().is_some() {
        OciError::Tls {
            host: host.to_string(),
            what: what.to_string(),
            source,
        }
    } else {
        OciError::Http {
            host: host.to_string(),
            what: what.to_string(),
            source,
        }
    }
}

/// The registry's own words from an error body (`{"errors":[{"code","message"}]}`), if any.
async fn error_detail(response: &mut StreamingResponse) -> Option<String> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.body.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            return None;
        }
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    let errors: Errors = serde_json::from_slice(&body).ok()?;
    let text: Vec<String> = errors
        .errors
        .into_iter()
        .map(|e| match (e.code, e.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (c, m) => c.or(m).unwrap_or_default(),
        })
        .filter(|t| !t.is_empty())
        .collect();
    (!text.is_empty()).then(|| {
        let mut t = text.join("; ");
        t.truncate(500);
        t
    })
}

/// A client configuration trusting only the CA certificates in `pem`.
fn pinned(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("its CA bundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("its CA bundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("its CA bundle holds no certificate: a registry is trusted only through its own CA bundle".into());
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn registry(host: &str) -> Registry {
        let pki_free = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Registry {
            host: host.into(),
            http: enclave_http::Client::new(Arc::new(pki_free)),
            credentials: None,
            state: Mutex::new(AuthState::default()),
        }
    }

    #[test]
    fn redirects_stay_on_the_registry_host_over_https() {
        let r = registry("reg.io:5000");
        let from = "https://reg.io:5000/v2/a/blobs/sha256:00";
        assert_eq!(
            r.redirect(from, "/storage/x?sig=1", 1, "layer").unwrap(),
            "https://reg.io:5000/storage/x?sig=1"
        );
        assert!(
            r.redirect(from, "https://REG.io:5000/s", 3, "layer")
                .is_ok()
        );
        for (location, count, why) in [
            (
                "https://s3.example/x",
                1,
                "only to the registry's own host reg.io:5000",
            ),
            (
                "https://reg.io:5001/x",
                1,
                "only to the registry's own host",
            ),
            ("http://reg.io:5000/x", 1, "only https:// redirects"),
            ("https://reg.io:5000/x", 4, "more than 3 redirects"),
            ("", 1, "no Location"),
        ] {
            let e = r
                .redirect(from, location, count, "layer 0")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("layer 0: registry reg.io:5000 redirected"),
                "{e}"
            );
            assert!(e.contains(why), "{location}: {e}");
        }
    }

    /// The lead spawns pulls on tokio: every future and the stream must be `Send`.
    #[test]
    fn pulls_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let c = Client::new(vec![]).unwrap();
        let r: Reference = format!("reg.io/a@{}", Digest::of(b"")).parse().unwrap();
        send(&c.resolve(&r));
        let d = Descriptor {
            media_type: media_type::OCI_LAYER_GZIP.into(),
            digest: Digest::of(b""),
            size: 0,
            platform: None,
            annotations: None,
            urls: None,
        };
        send(&c.blob(&r, &d));
        fn stream<T: Send + Sync>() {}
        stream::<BlobStream>();
        stream::<Client>();
    }

    #[test]
    fn registry_settings_are_checked() {
        let pki = test_ca();
        let ok = RegistryConfig {
            host: "Reg.io:5000".into(),
            ca_bundle_pem: pki.clone(),
            credentials: None,
        };
        let c = Client::new(vec![ok.clone()]).unwrap();
        assert!(format!("{c:?}").contains("reg.io:5000"));
        let e = Client::new(vec![ok.clone(), ok.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("configured twice"), "{e}");
        let e = Client::new(vec![RegistryConfig {
            ca_bundle_pem: b"not pem".to_vec(),
            ..ok.clone()
        }])
        .unwrap_err()
        .to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = Client::new(vec![RegistryConfig {
            host: "reg.io/x".into(),
            ..ok
        }])
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("registry reg.io/x:"), "{e}");
    }

    fn test_ca() -> Vec<u8> {
        enclave_testkit::pki::TestPki::new("enclave-oci unit test CA")
            .ca_pem
            .into_bytes()
    }
}
