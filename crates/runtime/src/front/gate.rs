//! Ingress gates (`[workload.ingress]`): who may call a workload, decided before a request
//! reaches it.
//!
//! Mutual RA-TLS (`client_auth = "ratls"`) is judged in two steps, so that an HTTP client learns
//! why it was refused (a 403 with the reason) rather than seeing a handshake abort:
//!
//! 1. the handshake of a connection whose SNI names such a workload requests a client
//!    certificate without requiring one ([`ClientCertRequest`]); the client's CertificateVerify
//!    is checked against the certificate's key, so key possession is proven by the handshake
//!    itself, whatever is decided later;
//! 2. the chain the connection ends up with is appraised in full once, at its first request, and
//!    the verdict cached on the connection ([`Peer`]): chain to the trusted root, the name,
//!    evidence, key binding, validity, the workload's appraisal policy. An appraisal is CPU work
//!    (signatures, certificate chains, up to milliseconds): it runs on the blocking pool, as many
//!    at once as there are CPUs, so that a connection thread's other connections are not held
//!    up, whoever floods it with client certificates.
//!
//! A resumed session carries the chain of the handshake that made it (rustls keeps the client's
//! certificates in the session), and that chain is appraised again for the new connection, so
//! resumption never skips the gate; a session made without a client certificate resumes
//! without one, and is refused. Sessions do not outlive the certificates' generation (`Handshakes`).
//!
//! A request routed by Host (no SNI) to a gated workload is refused: the handshake was the
//! enclave-wide one, which requests no client certificate.
//!
//! The OIDC gate checks `Authorization: Bearer` on every request with the enclave's `[oidc]`
//! issuer and keys (the committed `oidc/jwks`, rotated with them) and the workload's audience and
//! required claims.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use enclave_config::LoadedConfig;
use enclave_config::file::{ClientAuth, IngressOidc};
use enclave_evidence::policy::Policy;
use enclave_ratls::binding::Freshness;
use enclave_ratls::{RatlsVerifier, Role};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::sync::{OnceCell, Semaphore};

use super::caller::{Caller, OidcCaller, RatlsCaller};
use crate::api::error;
use crate::auth::Authenticator;
use crate::control::{Control, Entry};

/// The mutual RA-TLS gate of one workload.
struct RatlsGate {
    /// Root, simulation trust and the workload's appraisal policy.
    verifier: RatlsVerifier,
    /// `client_names`: the leaf must be valid for one of them (none: any name).
    names: Vec<ServerName<'static>>,
}

/// The gates of one workload.
struct Gate {
    ratls: Option<Arc<RatlsGate>>,
    oidc: Option<IngressOidc>,
}

/// The gates of the file's workloads, and what they need at handshake and request time.
pub(crate) struct Gates {
    control: Control,
    by_name: HashMap<String, Gate>,
    auth: Option<Arc<Authenticator>>,
    /// The handshake configuration that requests a client certificate, made from the base one
    /// it was derived from: remade when the base is (a new generation), so it shares that
    /// base's session cache and tickets, and nothing older.
    /// One per base configuration (HTTP and spliced, see the front's `Base`).
    requesting: arc_swap::ArcSwap<Vec<(Arc<ServerConfig>, Arc<ServerConfig>)>>,
    /// `vault.hostname`: its handshakes request a client certificate too (mutual RA-TLS
    /// callers of `/vault/v1`), judged by the vault.
    vault_hostname: Option<String>,
    /// Client chains being appraised at once (one per CPU); the rest wait, holding only their
    /// connection.
    appraisals: Arc<Semaphore>,
}

/// Why the gates could not be set up: the workload, the field, and why.
fn refused(config: &LoadedConfig, i: usize, field: &str, reason: String) -> crate::RuntimeError {
    crate::RuntimeError::Config(enclave_config::ConfigError::Invalid {
        path: config.path.clone(),
        field: format!("workload[{i}].ingress.{field}"),
        reason,
    })
}

impl Gates {
    /// The gates of `config`'s workloads. A client chain must lead to `client_root` when the
    /// workload names one, else to `own_ca` (DER): the intermediary CA this runtime's own
    /// certificates are issued by, the one trust anchor it holds that the host cannot swap (its
    /// key is sealed to the TEE). Policies are parsed here, at start: a bad one stops it.
    pub(crate) fn new(
        config: &LoadedConfig,
        own_ca: &[u8],
        auth: Option<Arc<Authenticator>>,
        control: Control,
    ) -> Result<Self, crate::RuntimeError> {
        let mut by_name = HashMap::new();
        for (i, w) in config.config.workloads.iter().enumerate() {
            let Some(ingress) = &w.ingress else { continue };
            let files = config.ingress_files(&w.name).cloned().unwrap_or_default();
            let ratls = match ingress.client_auth {
                ClientAuth::None => None,
                ClientAuth::Ratls => {
                    let policy_path = ingress
                        .client_policy
                        .as_ref()
                        .map(|p| config.resolve(p).display().to_string())
                        .unwrap_or_default();
                    let bytes = files.client_policy.as_deref().ok_or_else(|| {
                        refused(config, i, "client_policy", "not read at load".into())
                    })?;
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        refused(
                            config,
                            i,
                            "client_policy",
                            format!("{policy_path}: not UTF-8 text"),
                        )
                    })?;
                    let policy = Policy::from_toml(text, &policy_path)
                        .map_err(|e| refused(config, i, "client_policy", e.to_string()))?;
                    let root = files.client_root.as_deref().unwrap_or(own_ca);
                    let sim_dir = ingress.client_trust_sim.as_ref().map(|p| config.resolve(p));
                    let verifier = crate::trust::committed(
                        &format!("workload[{i}].ingress.client_root"),
                        Some(root),
                        files.client_trust_sim.as_deref(),
                        sim_dir.as_deref(),
                    )
                    .map_err(|e| refused(config, i, "client_root", e))?
                    .with_policy(policy);
                    let names = ingress
                        .client_names
                        .iter()
                        .map(|n| {
                            ServerName::try_from(n.clone()).map_err(|e| {
                                refused(config, i, "client_names", format!("'{n}': {e}"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Some(Arc::new(RatlsGate { verifier, names }))
                }
            };
            if ingress.oidc.is_some() && auth.is_none() {
                return Err(refused(
                    config,
                    i,
                    "oidc",
                    "needs the enclave's [oidc] section".into(),
                ));
            }
            by_name.insert(
                w.name.clone(),
                Gate {
                    ratls,
                    oidc: ingress.oidc.clone(),
                },
            );
        }
        Ok(Self {
            control,
            by_name,
            auth,
            requesting: arc_swap::ArcSwap::from_pointee(Vec::new()),
            appraisals: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            vault_hostname: config
                .config
                .vault
                .as_ref()
                .and_then(|v| v.hostname.clone()),
        })
    }

    /// Whether a handshake for `sni` requests a client certificate: it names a workload with
    /// `client_auth = "ratls"`.
    fn requests_certificate(&self, sni: Option<&str>) -> bool {
        let Some(sni) = sni else { return false };
        if self
            .vault_hostname
            .as_deref()
            .is_some_and(|v| super::hostname(sni).eq_ignore_ascii_case(v))
        {
            return true;
        }
        let now = self.control.snapshot();
        now.route(super::hostname(sni)).is_some_and(|e| {
            e.spec
                .ingress
                .as_ref()
                .is_some_and(|i| i.client_auth == ClientAuth::Ratls)
        })
    }

    /// The configuration a handshake for `sni` uses: `base`, or for a mutual RA-TLS workload
    /// a copy of it that requests a client certificate.
    pub(crate) fn for_handshake(
        &self,
        base: Arc<ServerConfig>,
        sni: Option<&str>,
    ) -> Result<Arc<ServerConfig>, String> {
        if !self.requests_certificate(sni) {
            return Ok(base);
        }
        let made = self.requesting.load_full();
        if let Some((_, requesting)) = made.iter().find(|(b, _)| Arc::ptr_eq(b, &base)) {
            return Ok(requesting.clone());
        }
        let requesting = Arc::new(requesting_copy(&base)?);
        // One per base configuration in use (HTTP and spliced): the newest two.
        let mut next: Vec<_> = made.iter().rev().take(1).cloned().collect();
        next.push((base, requesting.clone()));
        self.requesting.store(Arc::new(next));
        Ok(requesting)
    }
}

/// `base` with a client certificate requested. rustls keeps the client verifier private to the
/// builder, so the copy is built anew and every public setting of `base` carried over: the
/// certificates, ALPN, compression and its cache, and the session cache and tickets (the
/// generation's own).
fn requesting_copy(base: &ServerConfig) -> Result<ServerConfig, String> {
    let mut c = ServerConfig::builder_with_provider(enclave_ratls::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_client_cert_verifier(Arc::new(ClientCertRequest::new()))
        .with_cert_resolver(base.cert_resolver.clone());
    c.ignore_client_order = base.ignore_client_order;
    c.max_fragment_size = base.max_fragment_size;
    c.session_storage = base.session_storage.clone();
    c.ticketer = base.ticketer.clone();
    c.alpn_protocols = base.alpn_protocols.clone();
    c.key_log = base.key_log.clone();
    c.enable_secret_extraction = base.enable_secret_extraction;
    c.max_early_data_size = base.max_early_data_size;
    c.send_half_rtt_data = base.send_half_rtt_data;
    c.send_tls13_tickets = base.send_tls13_tickets;
    c.require_ems = base.require_ems;
    c.cert_compressors = base.cert_compressors.clone();
    c.cert_decompressors = base.cert_decompressors.clone();
    c.cert_compression_cache = base.cert_compression_cache.clone();
    Ok(c)
}

/// Requests a client certificate, optional, and checks at the handshake only that the client
/// holds its key (the CertificateVerify signature, which also requires the certificate to
/// parse). Everything else is judged after the handshake ([`Peer`]), where a refusal can be
/// explained.
#[derive(Debug)]
struct ClientCertRequest {
    provider: Arc<CryptoProvider>,
}

impl ClientCertRequest {
    fn new() -> Self {
        Self {
            provider: enclave_ratls::tls::provider(),
        }
    }
}

impl ClientCertVerifier for ClientCertRequest {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately no verdict here: the full appraisal runs on the connection's chain after
        // the handshake, and no request reaches a gated workload without it.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
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

    fn verify_tls13_signature(
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One connection's client: the chain it presented (or, resumed, the chain of the session it
/// resumed), and the verdict on it, reached once.
pub(crate) struct Peer {
    chain: Option<Arc<[CertificateDer<'static>]>>,
    /// (workload, verdict): a connection made by SNI serves one workload (`Binding`).
    verdict: OnceCell<(String, Result<RatlsCaller, String>)>,
    /// The vault's verdict on the chain (its own verifier, no policy: each policy block
    /// appraises the report with its own).
    vault: OnceCell<Result<Arc<enclave_ratls::verify::Report>, String>>,
}

/// Run `appraise` on the blocking pool once one of `permits` is free.
async fn off_thread<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    appraise: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| "client certificates are no longer appraised: the runtime is stopping")?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        appraise()
    })
    .await
    .map_err(|e| format!("the appraisal of the client certificate failed: {e}"))?
}

impl Peer {
    pub(crate) fn of(session: &rustls::ServerConnection) -> Self {
        Self {
            chain: session
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(Arc::from),
            verdict: OnceCell::new(),
            vault: OnceCell::new(),
        }
    }

    /// This connection's client chain verified by the vault's verifier (chain to its root,
    /// evidence, key binding, validity), once per connection, off the connection's thread.
    pub(crate) async fn vault_verdict(
        &self,
        vault: &Arc<crate::vault::Vault>,
    ) -> Result<Arc<enclave_ratls::verify::Report>, String> {
        self.vault
            .get_or_init(|| async {
                let Some(chain) = self.chain.clone() else {
                    return Err(
                        "no client certificate: the vault releases over /vault/v1 only to mutual RA-TLS callers; present an RA-TLS client certificate"
                            .to_string(),
                    );
                };
                let vault = vault.clone();
                off_thread(&vault.appraisals.clone(), move || {
                    verify_client(&vault.verifier, &chain).map(Arc::new)
                })
                .await
            })
            .await
            .clone()
    }

    /// The verdict of `gate` on this connection's client, for workload `name`.
    async fn judged(
        &self,
        name: &str,
        gate: &Arc<RatlsGate>,
        permits: &Arc<Semaphore>,
    ) -> Result<RatlsCaller, String> {
        let (judged_for, verdict) = self
            .verdict
            .get_or_init(|| async {
                let verdict = match self.chain.clone() {
                    None => Err(format!(
                        "no client certificate: workload '{name}' admits only mutual RA-TLS clients (client_auth = \"ratls\"); present an RA-TLS client certificate"
                    )),
                    Some(chain) => {
                        let gate = gate.clone();
                        off_thread(permits, move || appraise(&gate, &chain)).await
                    }
                };
                (name.to_string(), verdict)
            })
            .await;
        if judged_for != name {
            return Err(format!(
                "this connection's client certificate was judged for workload '{judged_for}', not '{name}': connect again"
            ));
        }
        verdict.clone()
    }
}

/// `chain` (leaf first) verified by `verifier` as a client's, now: chain to its root, evidence,
/// key binding, validity, and the verifier's policy if it has one.
fn verify_client(
    verifier: &RatlsVerifier,
    chain: &[CertificateDer<'static>],
) -> Result<enclave_ratls::verify::Report, String> {
    let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
    verifier
        .verify(
            leaf,
            intermediates,
            enclave_evidence::time::now(),
            &Freshness::Deterministic,
            Role::Client,
        )
        .map_err(|e| format!("client certificate refused: {e}"))
}

/// The full appraisal of a client chain by a workload's gate.
fn appraise(gate: &RatlsGate, chain: &[CertificateDer<'static>]) -> Result<RatlsCaller, String> {
    let leaf = chain.first().ok_or("no client certificate")?;
    // The name first: a certificate for another name is refused without appraising a quote.
    let mut matched = None;
    if !gate.names.is_empty() {
        let mut reasons = Vec::new();
        for n in &gate.names {
            match enclave_ratls::verify::check_name(leaf, n) {
                Ok(()) => {
                    matched = Some(enclave_ratls::verify::name_text(n));
                    break;
                }
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if matched.is_none() {
            let wanted: Vec<String> = gate
                .names
                .iter()
                .map(enclave_ratls::verify::name_text)
                .collect();
            return Err(format!(
                "client certificate refused: name: it is valid for none of client_names ({}): {}",
                wanted.join(", "),
                reasons.first().map(String::as_str).unwrap_or_default()
            ));
        }
    }
    let report = verify_client(&gate.verifier, chain)?;
    let a = &report.appraisal;
    Ok(RatlsCaller {
        cert_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf)),
        tee: a.tee.as_str().to_string(),
        simulated: a.simulated,
        measurement: hex::encode(a.measurements.primary()),
        config_root: report.config_root.clone(),
        workload_code: report.workload.as_ref().map(|w| hex::encode(w.code_digest)),
        workload_root: report.workload.as_ref().map(|w| hex::encode(w.config_root)),
        name: matched,
    })
}

/// Whether one claim of a token satisfies `wanted`: a string equal to one of the values (for
/// `scope` and `scp`, a space-separated list containing one), or an array containing one.
pub(crate) fn claim_holds(name: &str, claim: &serde_json::Value, wanted: &[String]) -> bool {
    use serde_json::Value;
    let has = |v: &str| wanted.iter().any(|w| w == v);
    match claim {
        Value::String(s) if name == "scope" || name == "scp" => s.split(' ').any(has),
        Value::String(s) => has(s),
        Value::Array(items) => items.iter().any(|i| match i {
            Value::String(s) => has(s),
            other => has(&other.to_string()),
        }),
        Value::Bool(_) | Value::Number(_) => has(&claim.to_string()),
        Value::Null | Value::Object(_) => false,
    }
}

/// 401 or 403 for a bearer token refused by workload `name`'s OIDC gate.
fn bearer_refusal(
    status: StatusCode,
    name: &str,
    error_code: Option<&str>,
    reason: String,
) -> Response {
    let mut challenge = format!("Bearer realm=\"{name}\"");
    if let Some(code) = error_code {
        // The reason goes in the JSON body; the header carries the code only, so no text a
        // token chose is echoed into a header.
        challenge.push_str(&format!(", error=\"{code}\""));
    }
    let mut r = error(status, reason);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

impl Gates {
    /// The OIDC gate of workload `name`.
    fn oidc(
        &self,
        name: &str,
        o: &IngressOidc,
        headers: &axum::http::HeaderMap,
    ) -> Result<OidcCaller, Box<Response>> {
        let Some(auth) = &self.auth else {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                format!(
                    "workload '{name}' requires a bearer token, and the runtime has no [oidc] issuer to check it with"
                ),
            )));
        };
        let given = headers.get(header::AUTHORIZATION);
        let text = match given.map(|v| v.to_str()) {
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => {
                return Err(Box::new(bearer_refusal(
                    StatusCode::UNAUTHORIZED,
                    name,
                    Some("invalid_request"),
                    "the Authorization header is not text".into(),
                )));
            }
            None => None,
        };
        let (claims, all) = auth.check_for(text, &o.audience).map_err(|why| {
            let code = text.map(|_| "invalid_token");
            Box::new(bearer_refusal(
                StatusCode::UNAUTHORIZED,
                name,
                code,
                format!("workload '{name}': {why} (audience '{}')", o.audience),
            ))
        })?;
        for (claim, wanted) in &o.required_claims {
            let wanted = wanted.values();
            let holds = all
                .get(claim)
                .is_some_and(|v| claim_holds(claim, v, wanted));
            if !holds {
                let seen = match all.get(claim) {
                    Some(v) => format!("the token's '{claim}' is {v}"),
                    None => format!("the token has no '{claim}' claim"),
                };
                return Err(Box::new(bearer_refusal(
                    StatusCode::FORBIDDEN,
                    name,
                    Some("insufficient_scope"),
                    format!(
                        "workload '{name}' requires claim '{claim}' to be {}: {seen}",
                        if wanted.len() == 1 {
                            format!("'{}'", wanted[0])
                        } else {
                            format!("one of {}", wanted.join(", "))
                        }
                    ),
                )));
            }
        }
        Ok(OidcCaller {
            subject: claims.sub,
            issuer: claims.iss,
        })
    }

    /// Admit a request routed to `entry` (by SNI when `by_sni`) on a connection whose client is
    /// `peer`: on success, its headers carry the verified caller (inbound caller headers
    /// removed) and the [`Caller`] is a request extension; on refusal, the response saying why.
    pub(crate) async fn admit<B>(
        gates: Option<&Self>,
        entry: &Entry,
        peer: &Peer,
        by_sni: bool,
        req: &mut axum::http::Request<B>,
    ) -> Result<(), Box<Response>> {
        let refuse = |(status, why): (StatusCode, String)| Box::new(error(status, why));
        let mut caller = Caller::default();
        if let Some((gates, gate)) = Self::gate_of(gates, entry).map_err(refuse)? {
            caller.ratls = gates
                .ratls(gate, entry, peer, by_sni)
                .await
                .map_err(refuse)?;
            if let Some(o) = &gate.oidc {
                caller.oidc = Some(gates.oidc(&entry.spec.name, o, req.headers())?);
            }
        }
        caller.apply(req.headers_mut());
        req.extensions_mut().insert(caller);
        Ok(())
    }

    /// Admit a connection that carries no HTTP (a `tcp` workload's): its mutual RA-TLS gate
    /// only. An OIDC gate cannot be met without a request to carry the token: refused.
    pub(crate) async fn admit_connection(
        gates: Option<&Self>,
        entry: &Entry,
        peer: &Peer,
    ) -> Result<Caller, String> {
        let mut caller = Caller::default();
        if let Some((gates, gate)) = Self::gate_of(gates, entry).map_err(|(_, why)| why)? {
            if gate.oidc.is_some() {
                return Err(format!(
                    "workload '{}' requires an OIDC token, which a TCP connection cannot carry",
                    entry.spec.name
                ));
            }
            caller.ratls = gates
                .ratls(gate, entry, peer, true)
                .await
                .map_err(|(_, why)| why)?;
        }
        Ok(caller)
    }

    /// The gate set up for `entry`, when it has `[workload.ingress]`: a workload with a gate
    /// and no gate set up is refused, never served open.
    fn gate_of<'a>(
        gates: Option<&'a Self>,
        entry: &Entry,
    ) -> Result<Option<(&'a Self, &'a Gate)>, (StatusCode, String)> {
        let name = entry.spec.name.as_str();
        if entry.spec.ingress.is_none() {
            return Ok(None);
        }
        gates
            .and_then(|g| g.by_name.get(name).map(|one| (g, one)))
            .map(Some)
            .ok_or_else(|| {
                (
                    StatusCode::FORBIDDEN,
                    format!(
                        "workload '{name}' has [workload.ingress], and its gate is not set up in this listener"
                    ),
                )
            })
    }

    /// The mutual RA-TLS caller, when the workload's gate asks for one.
    async fn ratls(
        &self,
        gate: &Gate,
        entry: &Entry,
        peer: &Peer,
        by_sni: bool,
    ) -> Result<Option<RatlsCaller>, (StatusCode, String)> {
        let name = entry.spec.name.as_str();
        let wants = entry
            .spec
            .ingress
            .as_ref()
            .is_some_and(|i| i.client_auth == ClientAuth::Ratls);
        if !wants {
            return Ok(None);
        }
        let Some(ratls) = &gate.ratls else {
            return Err((
                StatusCode::FORBIDDEN,
                format!("workload '{name}': its mutual RA-TLS gate is not set up"),
            ));
        };
        if !by_sni {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "workload '{name}' admits only mutual RA-TLS clients, and this connection was not made for its name: without an SNI naming it, the handshake was the enclave-wide one, which requests no client certificate; connect with SNI {}",
                    entry
                        .spec
                        .hostnames
                        .first()
                        .map(String::as_str)
                        .unwrap_or("(its hostname)")
                ),
            ));
        }
        peer.judged(name, ratls, &self.appraisals)
            .await
            .map(Some)
            .map_err(|why| (StatusCode::FORBIDDEN, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_claims_match_strings_lists_and_scopes() {
        let v = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap_or_default() };
        let one = ["eng".to_string()];
        assert!(claim_holds("team", &v("\"eng\""), &one));
        assert!(!claim_holds("team", &v("\"engineering\""), &one));
        assert!(claim_holds("groups", &v("[\"ops\", \"eng\"]"), &one));
        assert!(!claim_holds("groups", &v("[\"ops\"]"), &one));
        assert!(claim_holds("scope", &v("\"read eng\""), &one));
        // Only scope lists are split: elsewhere a space is part of the value.
        assert!(!claim_holds("team", &v("\"read eng\""), &one));
        assert!(claim_holds("admin", &v("true"), &["true".to_string()]));
        assert!(!claim_holds("team", &v("null"), &one));
        assert!(!claim_holds("team", &v("{\"eng\": 1}"), &one));
    }
}
