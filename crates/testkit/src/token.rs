//! OIDC bearer tokens for the management API, signed with the test keys in `testdata/oidc`
//! (whose JWKS, `testdata/oidc/jwks.json`, test configurations trust).

/// The issuer test configurations name.
pub const ISSUER: &str = "https://issuer.test";
/// The audience test configurations name.
pub const AUDIENCE: &str = "enclave-os-test";
/// Every scope the management API knows.
pub const ALL_SCOPES: &str = "status:read kv:read kv:write workloads:write";

/// An ES256 token (`kid` `ec-1`) for `sub`, carrying `scope`, valid for ten minutes.
///
/// # Panics
/// If the test key in `testdata/oidc/ec.key.pem` is missing or unreadable: a broken checkout.
pub fn es256(sub: &str, scope: &str) -> String {
    #![allow(clippy::expect_used)]
    let pem = std::fs::read(crate::testdata("oidc/ec.key.pem")).expect("testdata/oidc/ec.key.pem");
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).expect("an EC key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "iat": now, "exp": now + 600, "scope": scope,
    });
    jsonwebtoken::encode(&header, &claims, &key).expect("signing a test token")
}

/// A token for `operator` with every scope.
pub fn operator() -> String {
    es256("operator", ALL_SCOPES)
}
