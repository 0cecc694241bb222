//! `enclave-os token`: mint a bearer token for the management API from a signing key.
//!
//! A development helper, so that a newcomer can call authenticated endpoints with the example
//! configuration's key. In production tokens come from the operator's identity provider.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use enclave_runtime::Scope;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::EXIT_USAGE;

#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The signing key (PEM, PKCS#8): EC P-256 signs ES256, RSA signs RS256.
    #[arg(long)]
    key: PathBuf,
    /// `iss`.
    #[arg(long)]
    issuer: String,
    /// `aud`.
    #[arg(long)]
    audience: String,
    /// `sub`.
    #[arg(long, default_value = "operator")]
    subject: String,
    /// Lifetime in seconds (`exp - iat`; the runtime refuses more than `[oidc]
    /// max_token_lifetime_secs`, 3600 by default).
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// A scope the token grants, into the `scope` claim: status:read, kv:read, kv:write,
    /// workloads:write, vault:read, vault:write. Repeat it, or give several separated by spaces.
    /// Without it the token opens no endpoint.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// `kid` in the header (the key's id in the JWKS).
    #[arg(long)]
    kid: Option<String>,
    /// Print `{"token": ..., "issued": ..., "expires": ..., "scope": ...}`.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: &TokenArgs) -> ExitCode {
    let fail = |e: String| {
        if a.json {
            println!("{}", json!({ "error": e }));
        } else {
            eprintln!("error: {e}");
        }
        ExitCode::from(EXIT_USAGE)
    };
    let pem = match std::fs::read(&a.key) {
        Ok(p) => p,
        Err(e) => return fail(format!("--key {}: {e}", a.key.display())),
    };
    let (alg, key) = match EncodingKey::from_ec_pem(&pem) {
        Ok(k) => (Algorithm::ES256, k),
        Err(_) => match EncodingKey::from_rsa_pem(&pem) {
            Ok(k) => (Algorithm::RS256, k),
            Err(_) => {
                return fail(format!(
                    "--key {}: neither an EC P-256 nor an RSA private key in PEM",
                    a.key.display()
                ));
            }
        },
    };
    let scopes: Vec<&str> = a.scopes.iter().flat_map(|s| s.split_whitespace()).collect();
    if let Some(bad) = scopes
        .iter()
        .find(|s| !Scope::ALL.iter().any(|k| k.as_str() == **s))
    {
        return fail(format!(
            "--scope {bad}: not a scope the runtime knows ({})",
            Scope::ALL.map(Scope::as_str).join(", ")
        ));
    }
    if a.ttl <= 0 {
        return fail(format!("--ttl {}: a lifetime must be positive", a.ttl));
    }
    if scopes.is_empty() {
        eprintln!("warning: no --scope given: this token opens no endpoint of the management API");
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // `iat` is what the runtime measures the lifetime from; `scope` is the standard
    // space-separated claim.
    let mut claims = json!({
        "iss": a.issuer, "aud": a.audience, "sub": a.subject,
        "iat": now, "nbf": now, "exp": now + a.ttl,
    });
    if !scopes.is_empty() {
        claims["scope"] = json!(scopes.join(" "));
    }
    let mut header = Header::new(alg);
    header.kid = a.kid.clone();
    match jsonwebtoken::encode(&header, &claims, &key) {
        Ok(t) if a.json => {
            println!(
                "{}",
                json!({ "token": t, "issued": now, "expires": now + a.ttl, "scope": scopes.join(" ") })
            );
            ExitCode::SUCCESS
        }
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("signing failed: {e}")),
    }
}
