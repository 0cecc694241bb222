//! Who may read or change what: OIDC bearer tokens (JWT) from the configured issuer, and the
//! scopes they carry.
//!
//! Accepted: ES256 with an EC P-256 key and RS256 with an RSA key, from the configured JWKS, with
//! `iss`, `aud`, `exp` and `iat` required and `nbf` honoured, within the configured clock skew, and
//! a lifetime (`exp - iat`) of at most the configured maximum. Refused, each with its reason: no
//! token, `alg=none`, any symmetric (HS*) or other algorithm, a token whose algorithm does not fit
//! the key it names (algorithm confusion), an unknown key id, a key the JWKS marks for another use
//! (`use` other than `sig`, `key_ops` without `verify`) or another algorithm, a bad signature, the
//! wrong issuer or audience, an expired or not-yet-valid token, a token issued in the future or
//! living longer than allowed.
//!
//! What a token may do is its scopes ([`Scope`]), read from the standard `scope` claim (a
//! space-separated string, RFC 8693 and RFC 9068) and from `scp` (a string or an array, as some
//! identity providers write it). The management API checks them per route group (`api`).
//!
//! A JWKS from a URL is fetched again on a schedule ([`refresh_loop`], then a change of the control plane): the key
//! set is swapped whole, and a fetch that fails or yields no usable key keeps the old set. A JWKS
//! file is read once at start and never reloaded.
//!
//! Tokens are never logged; a rejection names the reason, never the token.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// What a token may be allowed to do. Named `resource:action`, as many OAuth APIs name theirs
/// (Slack's `chat:write`); other scopes in a token (`openid`, `profile`, …) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The detailed status (store version and counter, uptime, …) and the metrics.
    StatusRead,
    /// Reading the operator's key-value data.
    KvRead,
    /// Writing and deleting the operator's key-value data.
    KvWrite,
    /// Loading, replacing and unloading workloads.
    WorkloadsWrite,
    /// Listing the vault's secrets (paths only) and keys (public halves).
    VaultRead,
    /// Keeping and removing secrets, putting policies, generating and removing keys.
    VaultWrite,
}

impl Scope {
    /// Every scope a route may need.
    pub const ALL: [Scope; 6] = [
        Scope::StatusRead,
        Scope::KvRead,
        Scope::KvWrite,
        Scope::WorkloadsWrite,
        Scope::VaultRead,
        Scope::VaultWrite,
    ];

    /// The scope as it appears in a token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::StatusRead => "status:read",
            Scope::KvRead => "kv:read",
            Scope::KvWrite => "kv:write",
            Scope::WorkloadsWrite => "workloads:write",
            Scope::VaultRead => "vault:read",
            Scope::VaultWrite => "vault:write",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope claim: a space-separated string (`scope`, RFC 8693) or an array (`scp` at some
/// identity providers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScopeClaim {
    /// `"kv:read kv:write"`.
    Text(String),
    /// `["kv:read", "kv:write"]`.
    List(Vec<String>),
}

impl ScopeClaim {
    fn items(&self) -> Vec<&str> {
        match self {
            ScopeClaim::Text(t) => t.split_whitespace().collect(),
            ScopeClaim::List(l) => l.iter().map(String::as_str).collect(),
        }
    }
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Subject.
    #[serde(default)]
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Expiry, seconds since the epoch (required: its absence is reported by the validation,
    /// which names the claim, rather than by deserialization).
    #[serde(default)]
    pub exp: Option<i64>,
    /// Issued at, seconds since the epoch (required: checked after the signature, with a reason).
    #[serde(default)]
    pub iat: Option<i64>,
    /// `scope`: space-separated scopes.
    #[serde(default)]
    pub scope: Option<ScopeClaim>,
    /// `scp`: scopes as some identity providers write them.
    #[serde(default)]
    pub scp: Option<ScopeClaim>,
}

impl Claims {
    /// Every scope the token carries, from `scope` and `scp` together.
    pub fn scopes(&self) -> BTreeSet<&str> {
        self.scope
            .iter()
            .chain(self.scp.iter())
            .flat_map(ScopeClaim::items)
            .collect()
    }

    /// Whether the token carries `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes().contains(scope.as_str())
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A parsed JWKS: the usable keys, the keys set aside with why, and the digest of the bytes it
/// came from (so that a reload of the same document changes nothing).
pub struct KeySet {
    keys: Vec<Key>,
    set_aside: Vec<(Option<String>, String)>,
    digest: [u8; 32],
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys.len())
            .field("set_aside", &self.set_aside)
            .finish()
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    d
}

impl KeySet {
    /// Parse a JWKS document. Each key is judged on its own: one that cannot verify our tokens
    /// (another use, another algorithm, an unknown type) is set aside with its reason, and only a
    /// document without any usable key is refused.
    pub fn parse(jwks: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(jwks).map_err(|e| format!("the JWKS is not valid: {e}"))?;
        let mut keys = Vec::new();
        let mut set_aside = Vec::new();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            let kid = raw.get("kid").and_then(|k| k.as_str()).map(str::to_string);
            let usable = serde_json::from_value::<Jwk>(raw)
                .map_err(|e| format!("key #{i} is not a JWK this runtime reads: {e}"))
                .and_then(|jwk| {
                    key_use(&jwk)?;
                    let alg = key_algorithm(&jwk)?;
                    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                    Ok((alg, key))
                });
            match usable {
                Ok((alg, key)) => keys.push(Key { kid, alg, key }),
                Err(e) => set_aside.push((kid, e)),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "the JWKS holds no usable ES256 or RS256 signing key ({})",
                if set_aside.is_empty() {
                    "it is empty".to_string()
                } else {
                    set_aside
                        .iter()
                        .map(|(kid, e)| format!("{}: {e}", kid.as_deref().unwrap_or("(no kid)")))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ));
        }
        for (kid, e) in &set_aside {
            tracing::warn!(kid = kid.as_deref().unwrap_or("(no kid)"), reason = %e, "JWKS key ignored");
        }
        Ok(Self {
            keys,
            set_aside,
            digest: digest(jwks),
        })
    }

    /// How many keys verify tokens.
    pub fn usable(&self) -> usize {
        self.keys.len()
    }
}

/// Checks bearer tokens against the configured issuer, audience, lifetime and keys.
pub struct Authenticator {
    issuer: String,
    audience: String,
    skew: u64,
    max_lifetime: u64,
    // Swapped whole on a JWKS reload; a check holds one set from start to end.
    keys: RwLock<Arc<KeySet>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .field("keys", &self.key_set().keys.len())
            .finish()
    }
}

/// Whether a JWK may verify signatures: `use` absent or `sig`, and `key_ops`, when present,
/// including `verify` (RFC 7517 §4.2, §4.3). An encryption key that happens to hold a valid
/// public key must not become a token-signing key.
fn key_use(jwk: &Jwk) -> Result<(), String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Encryption) => {
            return Err("use=enc: an encryption key never verifies tokens".into());
        }
        Some(PublicKeyUse::Other(u)) => {
            return Err(format!("use={u}: only use=sig keys verify tokens"));
        }
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|o| matches!(o, KeyOperations::Verify))
    {
        return Err("key_ops does not include verify".into());
    }
    Ok(())
}

/// The one algorithm a JWK is usable with, or why it is not usable.
fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            return Err(format!(
                "EC curve {:?} is not accepted (P-256 only)",
                ec.curve
            ));
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never accepted".into());
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("OKP keys are not accepted (ES256 or RS256 only)".into());
        }
    };
    match (declared, alg) {
        (None, _) | (Some(KeyAlgorithm::ES256), Algorithm::ES256) => Ok(alg),
        (Some(KeyAlgorithm::RS256), Algorithm::RS256) => Ok(alg),
        (Some(d), _) => Err(format!(
            "declares alg {d:?}, which is not accepted for its key type"
        )),
    }
}

/// The token's header and payload as JSON, unverified: only to explain a rejection.
fn peek(token: &str, part: usize) -> Option<serde_json::Value> {
    let seg = token.split('.').nth(part)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(seg).ok()?).ok()
}

fn when(t: Option<i64>) -> String {
    t.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "an invalid time".into())
}

impl Authenticator {
    /// From the issuer, audience, clock skew and a JWKS document; tokens may live up to the
    /// default maximum lifetime unless [`Authenticator::with_max_lifetime`] says otherwise.
    pub fn new(issuer: &str, audience: &str, skew_secs: u64, jwks: &[u8]) -> Result<Self, String> {
        Ok(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            skew: skew_secs,
            max_lifetime: enclave_config::file::OidcConfig::DEFAULT_MAX_TOKEN_LIFETIME_SECS,
            keys: RwLock::new(Arc::new(KeySet::parse(jwks)?)),
        })
    }

    /// The longest `exp - iat` accepted, seconds.
    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime = secs;
        self
    }

    /// The issuer tokens must come from.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `jwks` is the document the keys in use came from.
    pub fn serves(&self, jwks: &[u8]) -> bool {
        self.key_set().digest == digest(jwks)
    }

    /// Use `set` from the next check on. Checks under way finish with the set they started with.
    pub fn install(&self, set: KeySet) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    /// Check an `Authorization` header value. On refusal, why, for a human.
    pub fn check(&self, authorization: Option<&str>) -> Result<Claims, String> {
        self.check_for(authorization, &self.audience)
            .map(|(claims, _)| claims)
    }

    /// [`Self::check`] for another audience (a workload's ingress gate: same issuer and keys,
    /// its own `aud`), with every claim of the token as JSON for the caller's own rules.
    pub fn check_for(
        &self,
        authorization: Option<&str>,
        audience: &str,
    ) -> Result<(Claims, serde_json::Map<String, serde_json::Value>), String> {
        let Some(value) = authorization else {
            return Err(format!(
                "no bearer token: this endpoint needs `Authorization: Bearer <JWT>` from issuer {}",
                self.issuer
            ));
        };
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err("the Authorization header is not `Bearer <JWT>`".into());
        };
        let token = token.trim();
        let header = peek(token, 0).ok_or("the token is not a JWT (header.payload.signature)")?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood or the token refused,
        // and this runtime understands none.
        if let Some(crit) = header.get("crit") {
            return Err(format!(
                "the token marks header extensions critical (crit: {crit}), and none is understood here"
            ));
        }
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("");
        let alg = match alg {
            "ES256" => Algorithm::ES256,
            "RS256" => Algorithm::RS256,
            "none" | "None" | "NONE" | "" => {
                return Err("alg=none: an unsigned token is never accepted".into());
            }
            other => {
                return Err(format!(
                    "algorithm {other} is not accepted: only ES256 and RS256 are"
                ));
            }
        };
        let set = self.key_set();
        let kid = header.get("kid").and_then(|k| k.as_str());
        let key = match kid {
            Some(kid) => match set.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) => k,
                None => {
                    return Err(
                        match set
                            .set_aside
                            .iter()
                            .find(|(k, _)| k.as_deref() == Some(kid))
                        {
                            Some((_, why)) => format!(
                                "key id '{kid}' is in the issuer's JWKS but does not verify tokens: {why}"
                            ),
                            None => format!("key id '{kid}' is not in the issuer's JWKS"),
                        },
                    );
                }
            },
            None => {
                let mut fits = set.keys.iter().filter(|k| k.alg == alg);
                match (fits.next(), fits.next()) {
                    (Some(k), None) => k,
                    (None, _) => return Err(format!("no {alg:?} key in the issuer's JWKS")),
                    (Some(_), Some(_)) => {
                        return Err("the token names no key id and the JWKS has several".into());
                    }
                }
            }
        };
        if key.alg != alg {
            return Err(format!(
                "the token says {alg:?} but key '{}' is a {:?} key: algorithm confusion refused",
                key.kid.as_deref().unwrap_or("(no kid)"),
                key.alg
            ));
        }
        let mut v = Validation::new(alg);
        v.leeway = self.skew;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let payload = peek(token, 1);
        let claim = |name: &str| payload.as_ref().and_then(|p| p.get(name)).cloned();
        let all =
            jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &v)
                .map(|d| d.claims)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind as K;
                    match e.kind() {
                        K::ExpiredSignature => format!(
                            "the token expired at {} (clock skew allowed: {} s)",
                            when(claim("exp").and_then(|v| v.as_i64())),
                            self.skew
                        ),
                        K::ImmatureSignature => format!(
                            "the token is not valid before {} (clock skew allowed: {} s)",
                            when(claim("nbf").and_then(|v| v.as_i64())),
                            self.skew
                        ),
                        K::InvalidIssuer => format!(
                            "issuer {} is not the configured {}",
                            claim("iss").unwrap_or_default(),
                            self.issuer
                        ),
                        K::InvalidAudience => format!(
                            "audience {} does not include the configured '{audience}'",
                            claim("aud").unwrap_or_default(),
                        ),
                        K::InvalidSignature => format!(
                            "the signature does not verify under key '{}'",
                            key.kid.as_deref().unwrap_or("(no kid)")
                        ),
                        K::MissingRequiredClaim(c) => format!("the token has no '{c}' claim"),
                        K::Json(e) => format!("the token's claims are malformed: {e}"),
                        other => format!("the token is not acceptable: {other:?}"),
                    }
                })?;
        let claims: Claims = serde_json::from_value(serde_json::Value::Object(all.clone()))
            .map_err(|e| format!("the token's claims are malformed: {e}"))?;
        self.check_lifetime(&claims)?;
        Ok((claims, all))
    }

    /// `iat` is required, not in the future beyond the skew, and `exp - iat` is bounded: a
    /// leaked token is then useful for at most the configured lifetime, whatever `exp` it was
    /// minted with.
    fn check_lifetime(&self, c: &Claims) -> Result<(), String> {
        let Some(iat) = c.iat else {
            return Err(format!(
                "the token has no 'iat' claim: without it its lifetime cannot be bounded (at most {} s)",
                self.max_lifetime
            ));
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let skew = i64::try_from(self.skew).unwrap_or(i64::MAX);
        if iat > now.saturating_add(skew) {
            return Err(format!(
                "the token was issued in the future, at {} (clock skew allowed: {} s)",
                when(Some(iat)),
                self.skew
            ));
        }
        let exp = c.exp.unwrap_or(i64::MAX);
        if exp < iat {
            return Err(format!(
                "the token expires ({}) before it was issued ({})",
                when(Some(exp)),
                when(Some(iat))
            ));
        }
        let lifetime = exp.saturating_sub(iat).unsigned_abs();
        if lifetime > self.max_lifetime {
            return Err(format!(
                "the token's lifetime (exp - iat) is {lifetime} s, more than the {} s allowed ([oidc] max_token_lifetime_secs)",
                self.max_lifetime
            ));
        }
        Ok(())
    }
}

/// Fetches the JWKS again (for a `jwks_url`): the bytes, or why not.
pub(crate) type FetchJwks = Box<dyn Fn() -> Result<Vec<u8>, String> + Send + Sync>;

/// Fetch the JWKS every `every` and hand the bytes to `apply` (in the runtime, a control change),
/// until the task is dropped. Both run off the async workers: the fetch is blocking I/O, and a
/// reload that makes a new tree and certificate is blocking work. A failure is logged and the
/// keys in use stay: the issuer being unreachable must not lock the operator out, and keys are
/// never taken from anywhere else.
pub(crate) async fn refresh_loop(
    every: Duration,
    fetch: Arc<FetchJwks>,
    apply: impl Fn(&[u8]) -> Result<bool, String> + Send + Sync + 'static,
) {
    let apply = Arc::new(apply);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (fetch, apply) = (fetch.clone(), apply.clone());
        let outcome = tokio::task::spawn_blocking(move || fetch().and_then(|b| apply(&b)))
            .await
            .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
        match outcome {
            Ok(true) => tracing::info!("JWKS reloaded: new signing keys in use"),
            Ok(false) => tracing::debug!("JWKS unchanged"),
            Err(reason) => {
                tracing::warn!(%reason, "JWKS reload failed; the keys in use stay")
            }
        }
    }
}

/// A scheduled JWKS reload, prepared at start and run while the runtime serves.
pub(crate) struct JwksRefresh {
    every: Duration,
    fetch: Arc<FetchJwks>,
}

/// Stops the scheduled reload when dropped (when the runtime stops serving).
pub(crate) struct RefreshGuard(tokio::task::AbortHandle);

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl JwksRefresh {
    pub(crate) fn new(every: Duration, fetch: FetchJwks) -> Self {
        Self {
            every,
            fetch: Arc::new(fetch),
        }
    }

    /// Start reloading through `control` on the current tokio runtime: a rotation is a change
    /// of the control plane, published with the tree that commits it (see
    /// `control::Writer::rotate`).
    pub(crate) fn start(&self, control: crate::control::Control) -> RefreshGuard {
        tracing::info!(every_secs = self.every.as_secs(), "JWKS reload scheduled");
        let task = tokio::spawn(refresh_loop(self.every, self.fetch.clone(), move |bytes| {
            control
                .submit_blocking(crate::control::Change::RotateJwks {
                    bytes: bytes.to_vec(),
                })
                .map(|applied| applied != crate::control::Applied::Unchanged)
                .map_err(|e| e.to_string())
        }));
        RefreshGuard(task.abort_handle())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "enclave-os";

    fn data(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/oidc")
            .join(name);
        std::fs::read(p).unwrap()
    }

    fn auth() -> Authenticator {
        Authenticator::new(ISS, AUD, 60, &data("jwks.json")).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "operator",
            "iat": now() - 10, "exp": now() + 300, "nbf": now() - 10,
            "scope": "openid kv:read",
        })
    }

    fn es256(kid: &str, c: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        encode(
            &h,
            c,
            &EncodingKey::from_ec_pem(&data("ec.key.pem")).unwrap(),
        )
        .unwrap()
    }

    fn rs256(kid: &str, c: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        encode(
            &h,
            c,
            &EncodingKey::from_rsa_pem(&data("rsa.key.pem")).unwrap(),
        )
        .unwrap()
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    fn refused(header: Option<&str>, words: &str) {
        match auth().check(header) {
            Ok(c) => panic!("accepted {c:?}, expected a refusal with '{words}'"),
            Err(m) => assert!(m.contains(words), "'{m}' does not say '{words}'"),
        }
    }

    #[test]
    fn es256_and_rs256_tokens_are_accepted() {
        assert_eq!(
            auth()
                .check(Some(&bearer(&es256("ec-1", &claims()))))
                .unwrap()
                .sub,
            "operator"
        );
        assert_eq!(
            auth()
                .check(Some(&bearer(&rs256("rsa-1", &claims()))))
                .unwrap()
                .iss,
            ISS
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_refused() {
        refused(None, "no bearer token");
        refused(Some("Basic abc"), "not `Bearer <JWT>`");
        refused(Some("Bearer not-a-jwt"), "not a JWT");
    }

    #[test]
    fn alg_none_is_refused() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims().to_string());
        refused(Some(&bearer(&format!("{h}.{p}."))), "alg=none");
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        // The classic confusion: sign HS256 with the RSA public key's bytes as the HMAC secret.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        let t = encode(
            &h,
            &claims(),
            &EncodingKey::from_secret(&data("rsa.pub.pem")),
        )
        .unwrap();
        refused(Some(&bearer(&t)), "HS256 is not accepted");
    }

    #[test]
    fn an_algorithm_that_does_not_fit_the_named_key_is_refused() {
        // An RS256 token that names the EC key.
        refused(
            Some(&bearer(&rs256("ec-1", &claims()))),
            "algorithm confusion",
        );
        refused(
            Some(&bearer(&es256("rsa-1", &claims()))),
            "algorithm confusion",
        );
    }

    #[test]
    fn wrong_key_and_unknown_kid_are_refused() {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec-1".into());
        let t = encode(
            &h,
            &claims(),
            &EncodingKey::from_ec_pem(&data("other-ec.key.pem")).unwrap(),
        )
        .unwrap();
        refused(Some(&bearer(&t)), "signature does not verify");
        refused(
            Some(&bearer(&es256("nope", &claims()))),
            "not in the issuer's JWKS",
        );
    }

    #[test]
    fn iss_aud_exp_nbf_are_enforced() {
        let mut c = claims();
        c["iss"] = json!("https://evil.test");
        refused(Some(&bearer(&es256("ec-1", &c))), "is not the configured");
        let mut c = claims();
        c["aud"] = json!("someone-else");
        refused(Some(&bearer(&es256("ec-1", &c))), "audience");
        let mut c = claims();
        c["exp"] = json!(now() - 120);
        refused(Some(&bearer(&es256("ec-1", &c))), "expired");
        let mut c = claims();
        c["nbf"] = json!(now() + 600);
        refused(Some(&bearer(&es256("ec-1", &c))), "not valid before");
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        refused(Some(&bearer(&es256("ec-1", &c))), "'exp'");
    }

    #[test]
    fn clock_skew_is_bounded() {
        // Expired 30 s ago: inside the 60 s skew.
        let mut c = claims();
        c["iat"] = json!(now() - 100);
        c["exp"] = json!(now() - 30);
        assert!(auth().check(Some(&bearer(&es256("ec-1", &c)))).is_ok());
    }

    #[test]
    fn a_jwks_without_usable_keys_is_refused() {
        let e = Authenticator::new(ISS, AUD, 60, br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)
            .unwrap_err();
        assert!(e.contains("symmetric"), "{e}");
        assert!(Authenticator::new(ISS, AUD, 60, b"{").is_err());
    }

    #[test]
    fn scopes_come_from_scope_and_scp() {
        let c = auth()
            .check(Some(&bearer(&es256("ec-1", &claims()))))
            .unwrap();
        assert!(c.has(Scope::KvRead));
        assert!(!c.has(Scope::KvWrite), "kv:read does not grant kv:write");
        let mut c = claims();
        c.as_object_mut().unwrap().remove("scope");
        c["scp"] = json!(["status:read", "workloads:write"]);
        let got = auth().check(Some(&bearer(&es256("ec-1", &c)))).unwrap();
        assert!(got.has(Scope::StatusRead) && got.has(Scope::WorkloadsWrite));
        assert!(!got.has(Scope::KvRead));
        c["scp"] = json!("kv:write");
        let got = auth().check(Some(&bearer(&es256("ec-1", &c)))).unwrap();
        assert!(got.has(Scope::KvWrite));
        c["scope"] = json!(42);
        refused(
            Some(&bearer(&es256("ec-1", &c))),
            "the token's claims are malformed",
        );
    }

    #[test]
    fn a_token_with_critical_header_extensions_is_refused() {
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("ec-1".into());
        let token = encode(
            &header,
            &claims(),
            &EncodingKey::from_ec_pem(&data("ec.key.pem")).unwrap(),
        )
        .unwrap();
        assert!(auth().check(Some(&format!("Bearer {token}"))).is_ok());
        // The same token with `"crit": ["exp"]` in its header: its signature no longer matters,
        // the header alone is refused.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let head: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
        let mut head = head.as_object().unwrap().clone();
        head.insert("crit".into(), json!(["exp"]));
        let forged = format!(
            "{}.{}.{}",
            b64.encode(serde_json::to_vec(&head).unwrap()),
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        let err = auth().check(Some(&format!("Bearer {forged}"))).unwrap_err();
        assert!(err.contains("critical (crit"), "{err}");
    }

    #[test]
    fn iat_is_required_and_not_in_the_future() {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("iat");
        refused(Some(&bearer(&es256("ec-1", &c))), "no 'iat' claim");
        let mut c = claims();
        c["iat"] = json!(now() + 600);
        c["exp"] = json!(now() + 900);
        refused(Some(&bearer(&es256("ec-1", &c))), "issued in the future");
        // Within the skew: a clock a little ahead is tolerated.
        let mut c = claims();
        c["iat"] = json!(now() + 30);
        assert!(auth().check(Some(&bearer(&es256("ec-1", &c)))).is_ok());
    }

    #[test]
    fn a_lifetime_beyond_the_maximum_is_refused() {
        let mut c = claims();
        c["iat"] = json!(now() - 10);
        c["exp"] = json!(now() + 7200);
        refused(
            Some(&bearer(&es256("ec-1", &c))),
            "lifetime (exp - iat) is 7210 s, more than the 3600 s allowed",
        );
        let strict = auth().with_max_lifetime(60);
        let e = strict
            .check(Some(&bearer(&es256("ec-1", &claims()))))
            .unwrap_err();
        assert!(e.contains("more than the 60 s allowed"), "{e}");
        let mut c = claims();
        c["exp"] = json!(now() - 20);
        c["iat"] = json!(now());
        refused(Some(&bearer(&es256("ec-1", &c))), "before it was issued");
    }

    fn jwks_with(kid: &str, field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut set: serde_json::Value = serde_json::from_slice(&data("jwks.json")).unwrap();
        for k in set["keys"].as_array_mut().unwrap() {
            if k["kid"] == kid {
                k[field] = value.clone();
            }
        }
        serde_json::to_vec(&set).unwrap()
    }

    #[test]
    fn a_key_marked_for_encryption_or_another_algorithm_does_not_verify_tokens() {
        let token = bearer(&es256("ec-1", &claims()));
        let enc =
            Authenticator::new(ISS, AUD, 60, &jwks_with("ec-1", "use", json!("enc"))).unwrap();
        let e = enc.check(Some(&token)).unwrap_err();
        assert!(
            e.contains("key id 'ec-1' is in the issuer's JWKS but does not verify tokens")
                && e.contains("use=enc"),
            "{e}"
        );
        let ops = Authenticator::new(
            ISS,
            AUD,
            60,
            &jwks_with("ec-1", "key_ops", json!(["encrypt"])),
        )
        .unwrap();
        let e = ops.check(Some(&token)).unwrap_err();
        assert!(e.contains("key_ops does not include verify"), "{e}");
        let alg =
            Authenticator::new(ISS, AUD, 60, &jwks_with("ec-1", "alg", json!("RS256"))).unwrap();
        let e = alg.check(Some(&token)).unwrap_err();
        assert!(e.contains("declares alg RS256"), "{e}");
        // The RSA key, untouched, still verifies: one bad key does not spoil the set.
        assert!(enc.check(Some(&bearer(&rs256("rsa-1", &claims())))).is_ok());
        // A set whose only keys are for encryption is refused whole.
        let mut only_enc: serde_json::Value = serde_json::from_slice(&data("jwks.json")).unwrap();
        for k in only_enc["keys"].as_array_mut().unwrap() {
            k["use"] = json!("enc");
        }
        let e =
            Authenticator::new(ISS, AUD, 60, &serde_json::to_vec(&only_enc).unwrap()).unwrap_err();
        assert!(e.contains("no usable") && e.contains("use=enc"), "{e}");
    }

    /// The JWKS holding only the key named `kid`.
    fn only(kid: &str) -> Vec<u8> {
        let mut set: serde_json::Value = serde_json::from_slice(&data("jwks.json")).unwrap();
        set["keys"]
            .as_array_mut()
            .unwrap()
            .retain(|k| k["kid"] == kid);
        serde_json::to_vec(&set).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scheduled_reload_rotates_the_keys_and_a_failed_one_keeps_them() {
        let a = Arc::new(Authenticator::new(ISS, AUD, 60, &only("rsa-1")).unwrap());
        let ec = bearer(&es256("ec-1", &claims()));
        let rsa = bearer(&rs256("rsa-1", &claims()));
        assert!(
            a.check(Some(&ec))
                .unwrap_err()
                .contains("not in the issuer's JWKS")
        );
        // The issuer rotates: first to ec-1 alone, then it answers garbage.
        let answers = Arc::new(std::sync::Mutex::new(vec![
            Ok(b"not json".to_vec()),
            Ok(only("ec-1")),
        ]));
        let fetch: FetchJwks = {
            let answers = answers.clone();
            Box::new(move || {
                answers
                    .lock()
                    .unwrap()
                    .pop()
                    .unwrap_or_else(|| Err("the issuer is unreachable".into()))
            })
        };
        let applied = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (a, applied) = (a.clone(), applied.clone());
            tokio::spawn(refresh_loop(
                Duration::from_millis(50),
                Arc::new(fetch),
                move |bytes| {
                    let r = if a.serves(bytes) {
                        Ok(false)
                    } else {
                        KeySet::parse(bytes).map(|set| {
                            a.install(set);
                            true
                        })
                    };
                    applied.lock().unwrap().push(r.clone());
                    r
                },
            ))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while applied.lock().unwrap().len() < 2 {
            assert!(std::time::Instant::now() < deadline, "no reload happened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
        let applied = applied.lock().unwrap().clone();
        assert_eq!(applied[0], Ok(true));
        assert!(
            applied[1]
                .as_ref()
                .unwrap_err()
                .contains("the JWKS is not valid")
        );
        // After the rotation the new key verifies and the retired one does not; the bad
        // answer changed nothing.
        assert!(a.check(Some(&ec)).is_ok());
        assert!(
            a.check(Some(&rsa))
                .unwrap_err()
                .contains("not in the issuer's JWKS")
        );
        assert!(a.serves(&only("ec-1")));
    }
}
