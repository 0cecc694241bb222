//! Server-side state of the Trustee KBS protocol (RCAR: Request, Challenge, Attestation,
//! Response), wire-compatible with Trustee's KBS and guest-components' `kbs_protocol` client.
//!
//! The runtime owns HTTP; this module takes request bodies and `Cookie` headers and returns what
//! to answer. Time is passed in so expiry is testable without sleeping.
//!
//! Facts from Trustee's code (`kbs/src/attestation/backend.rs`, `session.rs`, `kbs/src/error.rs`,
//! `attestation-service/src/lib.rs`, `deps/verifier`), where its protocol document differs:
//! - Trustee accepts exactly `=0.4.0`; the document still shows older versions. We accept
//!   `0.4.x` (a patch release does not change the wire) and name both on a mismatch.
//! - The binding object the verifier hashes is `{"nonce", "tee-pubkey", "additional-evidence"}`
//!   (the document shows only the first two), serialised with RFC 8785 JCS and hashed with SHA-384
//!   (SHA-512 for `se`, the only TEE for which Trustee answers `selected-hash-algorithm`), then
//!   zero-padded (or truncated) to the 64-byte report data field of TDX, SGX and SNP.
//! - Errors are `{"type": "https://github.com/confidential-containers/kbs/errors/<Variant>",
//!   "detail"}` where `<Variant>` is the *outer* `kbs::Error` variant: every `/auth` and `/attest`
//!   failure is `AttestationError` (the document lists finer names such as `ExpiredCookie`).
//!   All are 401 except `InvalidRequestPath`/`PluginNotFound` (404).
//! - A second `/attest` on an attested session makes Trustee return the old token; we refuse it
//!   as a replay (a client that lost its token authenticates again, which guest-components does).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kbs_types::{Attestation, Challenge, InitData, Request, Tee, TeePubKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::token::{EAR_PROFILE, TokenKey, TrustTier, TrustVector};

/// The session cookie's name, as Trustee sets it.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// The prefix of Trustee's RFC 7807 `type` URIs.
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors";
/// The content type for error bodies. Trustee sets none (guest-components parses the body
/// whatever its type); RFC 7807 names this one.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// Lowest protocol version accepted (inclusive): what current guest-components send.
pub const MIN_PROTOCOL_VERSION: (u64, u64, u64) = (0, 4, 0);
/// First protocol version no longer accepted (exclusive).
pub const MAX_PROTOCOL_VERSION_EXCLUSIVE: (u64, u64, u64) = (0, 5, 0);
/// The accepted range, as named in errors.
pub const PROTOCOL_VERSION_RANGE: &str = ">=0.4.0, <0.5.0";
/// Report data size of TDX, SGX and SNP.
pub const REPORT_DATA_LEN: usize = 64;
/// Longest resource path segment accepted.
pub const MAX_SEGMENT_LEN: usize = 128;
/// Largest request body parsed (evidence with a certificate chain is a few tens of KB).
pub const MAX_BODY_LEN: usize = 1 << 20;

/// What makes the KBS refuse; `type_uri()` gives Trustee's type for each.
#[derive(Debug, thiserror::Error)]
pub enum KbsError {
    /// A body is not the JSON the protocol defines.
    #[error("invalid {what}: {reason}")]
    InvalidRequest {
        /// which message
        what: &'static str,
        /// why
        reason: String,
    },
    /// The client speaks a protocol version outside the range.
    #[error("KBS protocol version mismatch: the client sent {client}, this KBS accepts {accepted}")]
    VersionMismatch {
        /// what the client sent
        client: String,
        /// what is accepted
        accepted: &'static str,
    },
    /// The TEE asked for a hash algorithm setup this KBS cannot serve.
    #[error("TEE {tee}: {reason}")]
    UnsupportedTee {
        /// the TEE
        tee: String,
        /// why
        reason: String,
    },
    /// The session table is full of live sessions.
    #[error(
        "too many KBS sessions in progress ({max} live, none expired): try again when some expire"
    )]
    SessionTableFull {
        /// the configured maximum
        max: usize,
    },
    /// No `kbs-session-id` cookie came with the request.
    #[error("no `kbs-session-id` cookie: call /kbs/v0/auth first")]
    MissingCookie,
    /// The cookie names no session.
    #[error("unknown KBS session: call /kbs/v0/auth again")]
    UnknownSession,
    /// The session's time ran out.
    #[error("the KBS session expired {ago_secs}s ago: call /kbs/v0/auth again")]
    ExpiredSession {
        /// seconds since expiry
        ago_secs: u64,
    },
    /// The runtime data's nonce is not the session's challenge.
    #[error("the nonce in the attestation is not the one this session's challenge gave")]
    NonceMismatch,
    /// The session already attested: a replayed `/attest`.
    #[error("this KBS session has already attested: call /kbs/v0/auth for a new one")]
    AlreadyAttested,
    /// `/resource` on a session that has not attested.
    #[error("the KBS session has not attested: call /kbs/v0/attest first")]
    NotAttested,
    /// The evidence did not pass appraisal (set by the runtime).
    #[error("evidence refused: {0}")]
    EvidenceRefused(String),
    /// A resource path is not `<repo>/<type>/<tag>`.
    #[error("invalid resource path `{path}`: {reason}")]
    InvalidResourcePath {
        /// the path (truncated to 256 characters)
        path: String,
        /// why
        reason: String,
    },
    /// The policy refused the release (set by the runtime).
    #[error("access denied by policy: {0}")]
    PolicyDeny(String),
    /// Encrypting the resource to the TEE key failed.
    #[error("JWE failed: {0}")]
    Jwe(#[from] crate::jose::JoseError),
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// Signing the token failed.
    #[error("attestation token: {0}")]
    Token(#[from] crate::token::TokenError),
}

impl KbsError {
    /// The name of the Trustee `kbs::Error` variant that this refusal is on the wire.
    pub fn trustee_variant(&self) -> &'static str {
        match self {
            KbsError::InvalidRequest { .. }
            | KbsError::VersionMismatch { .. }
            | KbsError::UnsupportedTee { .. }
            | KbsError::SessionTableFull { .. }
            | KbsError::MissingCookie
            | KbsError::UnknownSession
            | KbsError::ExpiredSession { .. }
            | KbsError::NonceMismatch
            | KbsError::AlreadyAttested
            | KbsError::EvidenceRefused(_)
            | KbsError::Random
            | KbsError::Token(_) => "AttestationError",
            // Trustee looks for the session token, then a bearer token; neither gives this.
            KbsError::NotAttested => "TokenNotFound",
            // Trustee's resource plugin fails to parse the path: `PluginInternalError`.
            KbsError::InvalidResourcePath { .. } => "PluginInternalError",
            KbsError::PolicyDeny(_) => "PolicyDeny",
            KbsError::Jwe(_) => "JweError",
        }
    }

    /// HTTP status: 401 for everything this module produces, as Trustee does (only
    /// `InvalidRequestPath` and `PluginNotFound` are 404 there, and the runtime's router makes
    /// those).
    pub fn status(&self) -> u16 {
        401
    }

    /// The RFC 7807 `type`.
    pub fn type_uri(&self) -> String {
        format!("{ERROR_TYPE_PREFIX}/{}", self.trustee_variant())
    }

    /// The RFC 7807 body Trustee sends (`kbs_types::ErrorInformation`: `type` and `detail`).
    pub fn problem_json(&self) -> String {
        json!({ "type": self.type_uri(), "detail": self.to_string() }).to_string()
    }
}

/// Limits of the session table.
#[derive(Debug, Clone)]
pub struct KbsConfig {
    /// How long a session lives after `/auth` (Trustee: 5 minutes).
    pub session_ttl: Duration,
    /// How long a session may wait for its `/attest` (at most `session_ttl`): anyone may open
    /// sessions, so one that has not attested is cheap to drop.
    pub attest_within: Duration,
    /// The TEEs whose evidence the runtime appraises: `/auth` for another is refused at once,
    /// rather than holding a session that can never attest. Empty: any.
    pub tees: Vec<Tee>,
    /// How long an attestation token is valid (Trustee: 5 minutes).
    pub token_ttl: Duration,
    /// Most sessions held at once.
    pub max_sessions: usize,
    /// `iss` of the token.
    pub issuer: String,
    /// `ear.verifier-id.developer`.
    pub developer: String,
}

impl Default for KbsConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(300),
            attest_within: Duration::from_secs(30),
            tees: Vec::new(),
            token_ttl: Duration::from_secs(300),
            max_sessions: 4096,
            issuer: "enclave-os-vault".into(),
            developer: "https://enclave-os.invalid".into(),
        }
    }
}

/// The hash the report data binding uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingHash {
    /// SHA-384 (every TEE but `se`).
    Sha384,
    /// SHA-512 (`se`).
    Sha512,
}

impl BindingHash {
    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            BindingHash::Sha384 => &ring::digest::SHA384,
            BindingHash::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }
}

#[derive(Debug, Clone)]
struct Session {
    tee: Tee,
    nonce: String,
    extra_params: Value,
    hash: BindingHash,
    expires: SystemTime,
    attested: Option<AttestedSession>,
}

/// What `/auth` answers.
#[derive(Debug, Clone)]
pub struct AuthResponse {
    /// The new session's id.
    pub session_id: String,
    /// The challenge.
    pub challenge: Challenge,
    /// The JSON body (`kbs_types::Challenge`).
    pub body: String,
    /// The `Set-Cookie` header value.
    pub set_cookie: String,
}

/// One additional (device) evidence of an attestation, with the report data it must carry:
/// Trustee binds devices to `{"nonce", "tee-pubkey"}` only.
#[derive(Debug, Clone)]
pub struct AdditionalEvidence {
    /// The device TEE.
    pub tee: Tee,
    /// Its evidence.
    pub evidence: Value,
    /// The hash its report data must hold.
    pub expected_report_data: Vec<u8>,
}

/// A checked `/attest` request, for the runtime to appraise.
#[derive(Debug, Clone)]
pub struct PendingAttestation {
    /// The session.
    pub session_id: String,
    /// The TEE the client named in `/auth`.
    pub tee: Tee,
    /// The primary evidence JSON (for `tdx`/`sgx`: `{"quote": base64, ...}`; for `snp`:
    /// `{"attestation_report": ..., "cert_chain": ...}`).
    pub evidence: Value,
    /// The TEE public key resources will be encrypted to.
    pub tee_pubkey: TeePubKey,
    /// The binding object, exactly as hashed.
    pub runtime_data: Value,
    /// The hash used.
    pub hash: BindingHash,
    /// hash(JCS(runtime_data)), not yet padded.
    pub expected_report_data: Vec<u8>,
    /// Device evidence, each with its own expected report data.
    pub additional: Vec<AdditionalEvidence>,
    /// Init data, when the client sent it (format `toml`).
    pub init_data: Option<InitData>,
    /// The `extra-params` of the client's `/auth` request.
    pub request_extra_params: Value,
}

impl PendingAttestation {
    /// The expected report data regularised to a field of `len` bytes as Trustee's verifier
    /// does: zero-padded when shorter, truncated when longer.
    pub fn expected_report_data_field(&self, len: usize) -> Vec<u8> {
        regularize(&self.expected_report_data, len)
    }

    /// Whether a quote's report data field binds this attestation (constant time).
    pub fn binds(&self, report_data_field: &[u8]) -> bool {
        let expected = regularize(&self.expected_report_data, report_data_field.len());
        bool::from(expected.ct_eq(report_data_field))
    }
}

/// Trustee's `regularize_data`.
pub fn regularize(data: &[u8], len: usize) -> Vec<u8> {
    let mut out = data[..data.len().min(len)].to_vec();
    out.resize(len, 0);
    out
}

/// What the runtime's appraisal concluded, to be put in the token.
#[derive(Debug, Clone)]
pub struct Appraisal {
    /// `ear.status`.
    pub status: TrustTier,
    /// `ear.trustworthiness-vector`.
    pub trust_vector: TrustVector,
    /// `ear.appraisal-policy-id`.
    pub policy_id: String,
    /// The verifier's claims about the evidence (measurements, TCB...).
    pub tee_claims: Value,
}

/// An attested session, as `/resource` sees it.
#[derive(Debug, Clone)]
pub struct AttestedSession {
    /// The session id.
    pub session_id: String,
    /// The TEE.
    pub tee: Tee,
    /// The key resources are encrypted to.
    pub tee_pubkey: TeePubKey,
    /// The appraisal's claims.
    pub claims: Value,
    /// `ear.status`.
    pub status: TrustTier,
    /// The token issued.
    pub token: String,
}

/// What `complete` answers to `/attest`.
#[derive(Debug, Clone)]
pub struct AttestResponse {
    /// The JWT.
    pub token: String,
    /// The JSON body `{"token": ...}`.
    pub body: String,
    /// The `Set-Cookie` header value (Trustee sends it again).
    pub set_cookie: String,
}

/// The KBS session table and token issuer.
pub struct KbsState {
    config: KbsConfig,
    token_key: TokenKey,
    sessions: Mutex<HashMap<String, Session>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KbsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbsState")
            .field("config", &self.config)
            .field("token_kid", &self.token_key.kid())
            .finish_non_exhaustive()
    }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v.split('.');
    let mut next = || it.next().and_then(|p| p.parse::<u64>().ok());
    let parsed = (next()?, next()?, next()?);
    if it.next().is_some() {
        return None;
    }
    Some(parsed)
}

/// The session id in a `Cookie` header, if there is one.
pub fn session_id_from_cookie(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name.trim() == SESSION_COOKIE).then(|| value.trim().trim_matches('"'))
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `kbs-session-id=<id>; Expires=<IMF-fixdate>`, the attributes actix gives Trustee's cookie.
fn set_cookie(id: &str, expires: SystemTime) -> String {
    let secs = i64::try_from(unix(expires)).unwrap_or(i64::MAX);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default();
    format!("{SESSION_COOKIE}={id}; Expires={date}")
}

fn parse_body<T: serde::de::DeserializeOwned>(
    what: &'static str,
    body: &[u8],
) -> Result<T, KbsError> {
    if body.len() > MAX_BODY_LEN {
        return Err(KbsError::InvalidRequest {
            what,
            reason: format!("{} bytes, more than {MAX_BODY_LEN}", body.len()),
        });
    }
    serde_json::from_slice(body).map_err(|e| KbsError::InvalidRequest {
        what,
        reason: e.to_string(),
    })
}

impl KbsState {
    /// A KBS with an empty session table, issuing tokens signed by `token_key`.
    pub fn new(config: KbsConfig, token_key: TokenKey) -> Self {
        Self {
            config,
            token_key,
            sessions: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    /// The token-signing key (for `jwks()` and `thumbprint()`).
    pub fn token_key(&self) -> &TokenKey {
        &self.token_key
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent
        // (every update is a single insert or remove).
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], KbsError> {
        let mut out = [0u8; N];
        self.rng.fill(&mut out).map_err(|_| KbsError::Random)?;
        Ok(out)
    }

    /// `POST /kbs/v0/auth`.
    pub fn auth(&self, body: &[u8], now: SystemTime) -> Result<AuthResponse, KbsError> {
        let request: Request = parse_body("KBS Request", body)?;
        let accepted = parse_version(&request.version)
            .is_some_and(|v| v >= MIN_PROTOCOL_VERSION && v < MAX_PROTOCOL_VERSION_EXCLUSIVE);
        if !accepted {
            return Err(KbsError::VersionMismatch {
                client: request.version.chars().take(64).collect(),
                accepted: PROTOCOL_VERSION_RANGE,
            });
        }
        if !self.config.tees.is_empty() && !self.config.tees.contains(&request.tee) {
            let names: Vec<String> = self.config.tees.iter().map(|t| t.to_string()).collect();
            return Err(KbsError::UnsupportedTee {
                tee: request.tee.to_string(),
                reason: format!("this KBS appraises evidence from {} only", names.join(", ")),
            });
        }
        let (hash, extra_params) = negotiate_hash(request.tee, &request.extra_params)?;
        let nonce = STANDARD.encode(self.random::<32>()?);
        let session_id = hex::encode(self.random::<16>()?);
        let expires = now + self.config.attest_within.min(self.config.session_ttl);
        let challenge = Challenge {
            nonce: nonce.clone(),
            extra_params,
        };
        {
            let mut sessions = self.sessions();
            if sessions.len() >= self.config.max_sessions {
                sessions.retain(|_, s| s.expires > now);
            }
            // Full of live sessions: one that has not attested, drawn at random, makes room.
            // Opening sessions costs nothing, so a flood of them must not lock attesters out;
            // drawing at random (not the oldest) leaves a slow attester a chance however fast
            // the flood. Attested sessions cost valid evidence, and are kept.
            if sessions.len() >= self.config.max_sessions {
                let unattested: Vec<&String> = sessions
                    .iter()
                    .filter(|(_, s)| s.attested.is_none())
                    .map(|(id, _)| id)
                    .collect();
                if !unattested.is_empty() {
                    let draw = u32::from_le_bytes(self.random::<4>()?) as usize;
                    let id = unattested[draw % unattested.len()].clone();
                    sessions.remove(&id);
                }
            }
            if sessions.len() >= self.config.max_sessions {
                return Err(KbsError::SessionTableFull {
                    max: self.config.max_sessions,
                });
            }
            sessions.insert(
                session_id.clone(),
                Session {
                    tee: request.tee,
                    nonce,
                    extra_params: request.extra_params,
                    hash,
                    expires,
                    attested: None,
                },
            );
        }
        let body = serde_json::to_string(&challenge).map_err(|e| KbsError::InvalidRequest {
            what: "challenge",
            reason: e.to_string(),
        })?;
        Ok(AuthResponse {
            set_cookie: set_cookie(&session_id, expires),
            session_id,
            challenge,
            body,
        })
    }

    /// Finds a live session; an expired one is removed.
    fn live_session(
        &self,
        cookie_header: Option<&str>,
        now: SystemTime,
    ) -> Result<(String, Session), KbsError> {
        let id = cookie_header
            .and_then(session_id_from_cookie)
            .ok_or(KbsError::MissingCookie)?;
        let mut sessions = self.sessions();
        let session = sessions.get(id).ok_or(KbsError::UnknownSession)?;
        if session.expires <= now {
            let ago_secs = now
                .duration_since(session.expires)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            sessions.remove(id);
            return Err(KbsError::ExpiredSession { ago_secs });
        }
        Ok((id.to_owned(), session.clone()))
    }

    /// `POST /kbs/v0/attest`: checks the session and the nonce and computes the binding. The
    /// runtime then verifies the evidence against `expected_report_data` and calls
    /// [`KbsState::complete`].
    pub fn attest(
        &self,
        cookie_header: Option<&str>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<PendingAttestation, KbsError> {
        let (session_id, session) = self.live_session(cookie_header, now)?;
        if session.attested.is_some() {
            return Err(KbsError::AlreadyAttested);
        }
        let attestation: Attestation = parse_body("KBS Attestation", body)?;
        let same: bool = attestation
            .runtime_data
            .nonce
            .as_bytes()
            .ct_eq(session.nonce.as_bytes())
            .into();
        if !same {
            return Err(KbsError::NonceMismatch);
        }
        let tee_pubkey = attestation.runtime_data.tee_pubkey;
        // Refused here rather than at /resource: no point appraising evidence for a key no
        // resource can be encrypted to.
        crate::jose::check_recipient(&tee_pubkey).map_err(|e| KbsError::InvalidRequest {
            what: "tee-pubkey",
            reason: e.to_string(),
        })?;
        let additional_evidence = attestation.tee_evidence.additional_evidence;
        let runtime_data = json!({
            "tee-pubkey": tee_pubkey,
            "nonce": session.nonce,
            "additional-evidence": additional_evidence,
        });
        let expected_report_data = binding_hash(&runtime_data, session.hash)?;
        let mut additional = Vec::new();
        if !additional_evidence.is_empty() {
            let devices: HashMap<Tee, Value> =
                serde_json::from_str(&additional_evidence).map_err(|e| {
                    KbsError::InvalidRequest {
                        what: "additional-evidence",
                        reason: e.to_string(),
                    }
                })?;
            let device_binding = json!({ "tee-pubkey": tee_pubkey, "nonce": session.nonce });
            let device_hash = binding_hash(&device_binding, session.hash)?;
            for (tee, evidence) in devices {
                additional.push(AdditionalEvidence {
                    tee,
                    evidence,
                    expected_report_data: device_hash.clone(),
                });
            }
        }
        Ok(PendingAttestation {
            session_id,
            tee: session.tee,
            evidence: attestation.tee_evidence.primary_evidence,
            tee_pubkey,
            runtime_data,
            hash: session.hash,
            expected_report_data,
            additional,
            init_data: attestation.init_data,
            request_extra_params: session.extra_params,
        })
    }

    /// Marks the session attested after the runtime's appraisal passed, and issues the token.
    pub fn complete(
        &self,
        pending: &PendingAttestation,
        appraisal: Appraisal,
        now: SystemTime,
    ) -> Result<AttestResponse, KbsError> {
        let iat = unix(now);
        let exp = iat + self.config.token_ttl.as_secs();
        let mut annotated = serde_json::Map::new();
        annotated.insert(pending.tee.to_string(), appraisal.tee_claims.clone());
        annotated.insert(
            "runtime_data_claims".into(),
            json!({ "nonce": pending.runtime_data["nonce"], "tee-pubkey": pending.tee_pubkey }),
        );
        annotated.insert(
            "report_data".into(),
            Value::String(hex::encode(&pending.expected_report_data)),
        );
        let claims = json!({
            "eat_profile": EAR_PROFILE,
            "iat": iat,
            "exp": exp,
            "iss": self.config.issuer,
            "ear.verifier-id": {
                "developer": self.config.developer,
                "build": concat!("enclave-vault ", env!("CARGO_PKG_VERSION")),
            },
            "submods": { "cpu0": {
                "ear.status": appraisal.status,
                "ear.trustworthiness-vector": appraisal.trust_vector,
                "ear.appraisal-policy-id": appraisal.policy_id,
                "ear.veraison.annotated-evidence": Value::Object(annotated),
            }},
        });
        let token = self.token_key.sign(&claims)?;

        let mut sessions = self.sessions();
        let session = sessions
            .get_mut(&pending.session_id)
            .ok_or(KbsError::UnknownSession)?;
        if session.expires <= now {
            let ago_secs = now
                .duration_since(session.expires)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            sessions.remove(&pending.session_id);
            return Err(KbsError::ExpiredSession { ago_secs });
        }
        if session.attested.is_some() {
            return Err(KbsError::AlreadyAttested);
        }
        // Attested: the session now lives its full time.
        session.expires = now + self.config.session_ttl;
        session.attested = Some(AttestedSession {
            session_id: pending.session_id.clone(),
            tee: pending.tee,
            tee_pubkey: pending.tee_pubkey.clone(),
            claims: appraisal.tee_claims,
            status: appraisal.status,
            token: token.clone(),
        });
        let set_cookie = set_cookie(&pending.session_id, session.expires);
        Ok(AttestResponse {
            body: json!({ "token": token }).to_string(),
            token,
            set_cookie,
        })
    }

    /// `GET /kbs/v0/resource/...`: the attested session named by the cookie.
    pub fn resource_session(
        &self,
        cookie_header: Option<&str>,
        now: SystemTime,
    ) -> Result<AttestedSession, KbsError> {
        let (_, session) = self.live_session(cookie_header, now)?;
        session.attested.ok_or(KbsError::NotAttested)
    }

    /// Encrypts a resource to the session's TEE key: the `/resource` body.
    pub fn encrypt_resource(
        &self,
        session: &AttestedSession,
        bytes: &[u8],
    ) -> Result<String, KbsError> {
        let jwe = crate::jose::encrypt(&session.tee_pubkey, bytes)?;
        serde_json::to_string(&jwe)
            .map_err(|e| KbsError::Jwe(crate::jose::JoseError::Crypto(format!("serialising: {e}"))))
    }

    /// Forget the session of `pending`, whose evidence the runtime refused: another try needs
    /// a new `/auth` (and a new nonce), so a refused attester cannot make the runtime verify
    /// evidence over and over on one session.
    pub fn fail(&self, pending: &PendingAttestation) {
        self.sessions().remove(&pending.session_id);
    }

    /// Sessions currently held (expired ones included until evicted).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }
}

/// Trustee's `generate_extra_params`: only `se` gets a `selected-hash-algorithm` (`sha512`,
/// which the client must list); every other TEE gets `""` and SHA-384.
fn negotiate_hash(tee: Tee, extra: &Value) -> Result<(BindingHash, Value), KbsError> {
    if tee != Tee::Se {
        return Ok((BindingHash::Sha384, Value::String(String::new())));
    }
    match extra.get("supported-hash-algorithms") {
        None => Ok((BindingHash::Sha512, Value::String(String::new()))),
        Some(Value::Array(list)) => {
            let has = list
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("sha512")));
            if !has {
                return Err(KbsError::UnsupportedTee {
                    tee: "se".into(),
                    reason: "the client does not list sha512, which se needs".into(),
                });
            }
            Ok((
                BindingHash::Sha512,
                json!({ "selected-hash-algorithm": "sha512" }),
            ))
        }
        Some(other) => Err(KbsError::UnsupportedTee {
            tee: "se".into(),
            reason: format!("supported-hash-algorithms is not an array: {other}"),
        }),
    }
}

fn binding_hash(runtime_data: &Value, hash: BindingHash) -> Result<Vec<u8>, KbsError> {
    let canonical =
        serde_json_canonicalizer::to_vec(runtime_data).map_err(|e| KbsError::InvalidRequest {
            what: "runtime data",
            reason: format!("not canonicalisable: {e}"),
        })?;
    Ok(hash.digest(&canonical))
}

/// The report data binding for a runtime-data object (hash of its JCS form), as Trustee's
/// attestation service computes it; public so the client side and tests can build quotes.
pub fn report_data_for(runtime_data: &Value, hash: BindingHash) -> Result<Vec<u8>, KbsError> {
    binding_hash(runtime_data, hash)
}

/// A resource path `<repo>/<type>/<tag>`: exactly three segments, each 1 to
/// [`MAX_SEGMENT_LEN`] of `[A-Za-z0-9._-]`, not starting with `.` (so never `.` or `..`). This
/// is Trustee's `ResourceDesc` rule; Trustee has no default repository, so two segments are
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePath {
    /// repository
    pub repo: String,
    /// type
    pub kind: String,
    /// tag
    pub tag: String,
}

impl ResourcePath {
    /// Parses `repo/type/tag`.
    pub fn parse(path: &str) -> Result<Self, KbsError> {
        let bad = |reason: String| KbsError::InvalidResourcePath {
            path: path.chars().take(256).collect(),
            reason,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let [repo, kind, tag] = parts.as_slice() else {
            return Err(bad(format!(
                "{} segments; it must be <repo>/<type>/<tag>",
                parts.len()
            )));
        };
        for (name, seg) in [("repo", repo), ("type", kind), ("tag", tag)] {
            if seg.is_empty() || seg.len() > MAX_SEGMENT_LEN {
                return Err(bad(format!(
                    "{name} must be 1 to {MAX_SEGMENT_LEN} characters"
                )));
            }
            if seg.starts_with('.') {
                return Err(bad(format!("{name} starts with `.`")));
            }
            if let Some(c) = seg
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(bad(format!(
                    "{name} contains {c:?}; only A-Z a-z 0-9 . _ - are allowed"
                )));
            }
        }
        Ok(Self {
            repo: (*repo).to_owned(),
            kind: (*kind).to_owned(),
            tag: (*tag).to_owned(),
        })
    }
}

impl std::fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Trustee's own known answer (`attestation-service/src/lib.rs`,
    /// `parse_runtimedata_json_binding`): JCS then SHA-384.
    #[test]
    fn binding_matches_trustee_vector() {
        let v = json!({"b": 1, "a": "test", "c": {"d": "e"}});
        assert_eq!(
            hex::encode(report_data_for(&v, BindingHash::Sha384).unwrap()),
            "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
        );
    }

    #[test]
    fn regularize_pads_and_truncates() {
        assert_eq!(regularize(&[1, 2], 4), vec![1, 2, 0, 0]);
        assert_eq!(regularize(&[1, 2, 3, 4, 5], 4), vec![1, 2, 3, 4]);
    }

    #[test]
    fn resource_paths() {
        assert_eq!(
            ResourcePath::parse("default/key/one").unwrap().to_string(),
            "default/key/one"
        );
        for bad in [
            "key/one", "a/b/c/d", "a//c", "../b/c", "a/./c", "a/b/c d", "a/b/ü", "",
        ] {
            let err = ResourcePath::parse(bad).unwrap_err();
            assert_eq!(err.trustee_variant(), "PluginInternalError", "{bad}");
        }
        assert!(ResourcePath::parse(&format!("a/b/{}", "x".repeat(129))).is_err());
    }

    #[test]
    fn cookie_parsing_and_format() {
        assert_eq!(
            session_id_from_cookie("a=b; kbs-session-id=abc123 ; c=d"),
            Some("abc123")
        );
        assert_eq!(session_id_from_cookie("a=b"), None);
        let c = set_cookie("abc", UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(
            c,
            "kbs-session-id=abc; Expires=Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.4.0"), Some((0, 4, 0)));
        assert_eq!(parse_version("0.4"), None);
        assert_eq!(parse_version("0.4.0-rc1"), None);
    }
}
