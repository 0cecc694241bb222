//! The attestation token: an EAR-shaped JWT (draft-ietf-rats-ear, as Trustee's EAR token broker
//! issues it) signed ES256 with a P-256 key the vault generates, published as a JWKS.
//!
//! Claims: `eat_profile`, `iat`, `exp`, `iss`, `ear.verifier-id` `{developer, build}`, and
//! `submods.cpu0` with `ear.status`, `ear.trustworthiness-vector`, `ear.appraisal-policy-id` and
//! `ear.veraison.annotated-evidence`. The annotated evidence carries the verifier's claims under
//! the TEE name and `runtime_data_claims` (`nonce`, `tee-pubkey`), so the `tee-pubkey` sits at
//! `/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey`, the path
//! Trustee's token verifier reads (`TOKEN_TEE_PUBKEY_PATH_EAR`): a client can use the token alone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::jose::{Curve, PublicJwk};

/// The EAR profile named in `eat_profile`. Trustee's broker uses its own profile
/// (`tag:github.com,2024:confidential-containers/Trustee`); the claims are the same base EAR.
pub const EAR_PROFILE: &str = "tag:github.com,2023:veraison/ear";

const MAGIC: &[u8; 3] = b"ETK";
const VERSION: u8 = 1;

/// Why the token key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The sealed bytes are not a token key this version reads.
    #[error("sealed token key refused: {0}")]
    Sealed(String),
    /// Generation or signing failed.
    #[error("token {0}")]
    Crypto(String),
}

/// The ES256 key that signs attestation tokens.
pub struct TokenKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
    jwk: PublicJwk,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("kid", &self.kid())
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Generates a new token key inside the TEE.
    pub fn generate() -> Result<Self, TokenError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| TokenError::Crypto("key generation failed".into()))?;
        Self::from_pkcs8(Zeroizing::new(pkcs8.as_ref().to_vec()))
            .map_err(|e| TokenError::Crypto(e.to_string()))
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, TokenError> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| TokenError::Sealed(format!("not a P-256 PKCS#8 key: {e}")))?;
        let point = pair.public_key().as_ref();
        let jwk = PublicJwk::Ec {
            crv: Curve::P256,
            x: URL_SAFE_NO_PAD.encode(&point[1..33]),
            y: URL_SAFE_NO_PAD.encode(&point[33..65]),
        };
        Ok(Self { pkcs8, pair, jwk })
    }

    /// `b"ETK"`, version 1, then the PKCS#8 DER; the runtime encrypts it into the sealed store.
    pub fn to_sealed_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(4 + self.pkcs8.len()));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.pkcs8);
        out
    }

    /// Reads [`TokenKey::to_sealed_bytes`] back.
    pub fn from_sealed_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        match bytes {
            [m0, m1, m2, version, der @ ..] if [*m0, *m1, *m2] == *MAGIC => {
                if *version != VERSION {
                    return Err(TokenError::Sealed(format!(
                        "encoding version {version} (this build reads version {VERSION})"
                    )));
                }
                Self::from_pkcs8(Zeroizing::new(der.to_vec()))
            }
            _ => Err(TokenError::Sealed("not a token key (no ETK magic)".into())),
        }
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// The `kid`: RFC 7638 thumbprint, base64url.
    pub fn kid(&self) -> String {
        self.jwk.thumbprint_b64()
    }

    /// The raw RFC 7638 thumbprint (certificate extension OID 2.9).
    pub fn thumbprint(&self) -> [u8; 32] {
        self.jwk.thumbprint()
    }

    /// The JWKS document served at `/.well-known/enclave-os/jwks.json`.
    pub fn jwks(&self) -> Value {
        let PublicJwk::Ec { crv, x, y } = &self.jwk else {
            return json!({ "keys": [] });
        };
        json!({ "keys": [{
            "kty": "EC", "crv": crv.name(), "x": x, "y": y,
            "alg": "ES256", "use": "sig", "kid": self.kid(),
        }]})
    }

    /// Signs `claims` as a compact JWS: header `{"alg":"ES256","typ":"JWT","kid":...}`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid() });
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| TokenError::Crypto("signing failed".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }
}

fn b64_json<T: Serialize + ?Sized>(value: &T) -> Result<String, TokenError> {
    serde_json::to_vec(value)
        .map(|v| URL_SAFE_NO_PAD.encode(v))
        .map_err(|e| TokenError::Crypto(format!("claims: {e}")))
}

/// `ear.status`: the EAR trust tier of the appraisal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustTier {
    /// No claim is made.
    None,
    /// The evidence is trustworthy.
    Affirming,
    /// Trustworthy with reservations.
    Warning,
    /// Not trustworthy.
    Contraindicated,
}

/// `ear.trustworthiness-vector` (AR4SI claims; each an integer in -128..=127 where 2 = affirming,
/// 32 = warning, 96 = contraindicated). Absent claims are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrustVector {
    /// instance identity
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_identity: Option<i8>,
    /// configuration
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<i8>,
    /// executables
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executables: Option<i8>,
    /// file system
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_system: Option<i8>,
    /// hardware
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<i8>,
    /// runtime opaque
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_opaque: Option<i8>,
    /// storage opaque
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_opaque: Option<i8>,
    /// sourced data
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sourced_data: Option<i8>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_round_trip_and_jwks_verifies_signature() {
        let key = TokenKey::generate().unwrap();
        let back = TokenKey::from_sealed_bytes(&key.to_sealed_bytes()).unwrap();
        assert_eq!(back.kid(), key.kid());
        assert!(
            TokenKey::from_sealed_bytes(b"ETK\x02abc")
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );

        let token = back
            .sign(&json!({"sub": "x", "exp": 4_000_000_000u64}))
            .unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(key.jwks()).unwrap();
        let jwk = jwks.find(&key.kid()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        let data = jsonwebtoken::decode::<Value>(&token, &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid().as_str()));
    }
}
