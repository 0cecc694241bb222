//! Who may change state: OIDC bearer tokens (JWT) from the configured issuer.
//!
//! Accepted: ES256 with an EC P-256 key and RS256 with an RSA key, from the configured JWKS, with
//! `iss`, `aud` and `exp` required and `nbf` honoured, within the configured clock skew. Refused,
//! each with its reason: no token, `alg=none`, any symmetric (HS*) or other algorithm, a token
//! whose algorithm does not fit the key it names (algorithm confusion), an unknown key id, a bad
//! signature, the wrong issuer or audience, an expired or not-yet-valid token.
//!
//! Tokens are never logged; a rejection names the reason, never the token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

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
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Checks bearer tokens against the configured issuer, audience and keys.
pub struct Authenticator {
    issuer: String,
    audience: String,
    skew: u64,
    keys: Vec<Key>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys.len())
            .finish()
    }
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
    /// From the issuer, audience, clock skew and a JWKS document.
    pub fn new(issuer: &str, audience: &str, skew_secs: u64, jwks: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(jwks).map_err(|e| format!("the JWKS is not valid: {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone();
            match key_algorithm(jwk).and_then(|alg| {
                DecodingKey::from_jwk(jwk)
                    .map(|key| (alg, key))
                    .map_err(|e| e.to_string())
            }) {
                Ok((alg, key)) => keys.push(Key { kid, alg, key }),
                Err(e) => skipped.push(format!("{}: {e}", kid.as_deref().unwrap_or("(no kid)"))),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "the JWKS holds no usable ES256 or RS256 key ({})",
                if skipped.is_empty() {
                    "it is empty".to_string()
                } else {
                    skipped.join("; ")
                }
            ));
        }
        for s in skipped {
            tracing::warn!(key = %s, "JWKS key ignored");
        }
        Ok(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            skew: skew_secs,
            keys,
        })
    }

    /// The issuer tokens must come from.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Check an `Authorization` header value. On refusal, why, for a human.
    pub fn check(&self, authorization: Option<&str>) -> Result<Claims, String> {
        let Some(value) = authorization else {
            return Err(format!(
                "no bearer token: this endpoint changes or reads sealed state and needs `Authorization: Bearer <JWT>` from issuer {}",
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
        let kid = header.get("kid").and_then(|k| k.as_str());
        let key = match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or_else(|| format!("key id '{kid}' is not in the issuer's JWKS"))?,
            None => {
                let mut fits = self.keys.iter().filter(|k| k.alg == alg);
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
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let payload = peek(token, 1);
        let claim = |name: &str| payload.as_ref().and_then(|p| p.get(name)).cloned();
        jsonwebtoken::decode::<Claims>(token, &key.key, &v)
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
                        "audience {} does not include the configured '{}'",
                        claim("aud").unwrap_or_default(),
                        self.audience
                    ),
                    K::InvalidSignature => format!(
                        "the signature does not verify under key '{}'",
                        key.kid.as_deref().unwrap_or("(no kid)")
                    ),
                    K::MissingRequiredClaim(c) => format!("the token has no '{c}' claim"),
                    other => format!("the token is not acceptable: {other:?}"),
                }
            })
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
        json!({ "iss": ISS, "aud": AUD, "sub": "operator", "exp": now() + 300, "nbf": now() - 10 })
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
}
