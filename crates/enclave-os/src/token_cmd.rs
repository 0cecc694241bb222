//! `enclave-os token`: mint a bearer token for the management API from a signing key.
//!
//! A development helper, so that a newcomer can call authenticated endpoints with the example
//! configuration's key. In production tokens come from the operator's identity provider.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
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
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// `kid` in the header (the key's id in the JWKS).
    #[arg(long)]
    kid: Option<String>,
    /// Print `{"token": ..., "expires": ...}`.
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
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": a.issuer, "aud": a.audience, "sub": a.subject,
        "iat": now, "nbf": now, "exp": now + a.ttl,
    });
    let mut header = Header::new(alg);
    header.kid = a.kid.clone();
    match jsonwebtoken::encode(&header, &claims, &key) {
        Ok(t) if a.json => {
            println!("{}", json!({ "token": t, "expires": now + a.ttl }));
            ExitCode::SUCCESS
        }
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("signing failed: {e}")),
    }
}
