//! The KBS protocol end to end, the client side written with `kbs-types` only (as
//! guest-components does): auth → challenge → runtime data → attest → token → resource JWE.
//! The evidence is fake: these tests check the binding, which is this crate's part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use enclave_vault::kbs::{ERROR_TYPE_PREFIX, PendingAttestation, REPORT_DATA_LEN};
use enclave_vault::{
    Appraisal, KbsConfig, KbsError, KbsState, KeyKind, ResourcePath, TokenKey, TrustTier,
    TrustVector, VaultKey, jose,
};
use kbs_types::{Attestation, Challenge, CompositeEvidence, Request, Response, RuntimeData, Tee};
use serde_json::{Value, json};

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn kbs() -> KbsState {
    KbsState::new(KbsConfig::default(), TokenKey::generate().unwrap())
}

fn request_body(version: &str) -> Vec<u8> {
    serde_json::to_vec(&Request {
        version: version.into(),
        tee: Tee::Tdx,
        extra_params: json!({"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]}),
    })
    .unwrap()
}

/// What guest-components does after the challenge: the runtime data, and the quote's report
/// data = sha384(JCS({nonce, tee-pubkey, additional-evidence})), zero-padded to 64 bytes.
fn client_attestation(challenge: &Challenge, key: &VaultKey, nonce: Option<&str>) -> Vec<u8> {
    let runtime_data = RuntimeData {
        nonce: nonce.unwrap_or(&challenge.nonce).to_owned(),
        tee_pubkey: key.tee_pubkey().unwrap(),
    };
    let binding = json!({
        "tee-pubkey": runtime_data.tee_pubkey,
        "nonce": runtime_data.nonce,
        "additional-evidence": "",
    });
    let canonical = serde_json_canonicalizer::to_vec(&binding).unwrap();
    let mut report_data = ring::digest::digest(&ring::digest::SHA384, &canonical)
        .as_ref()
        .to_vec();
    report_data.resize(64, 0);
    // A fake TDX evidence in guest-components' shape; its "quote" is just the report data.
    let evidence = json!({ "cc_eventlog": null, "quote": STANDARD.encode(&report_data) });
    serde_json::to_vec(&Attestation {
        init_data: None,
        runtime_data,
        tee_evidence: CompositeEvidence {
            primary_evidence: evidence,
            additional_evidence: String::new(),
        },
    })
    .unwrap()
}

/// The fake verifier: takes the report data out of the fake quote and checks the binding.
fn appraise(pending: &PendingAttestation) -> Appraisal {
    let quote = STANDARD
        .decode(pending.evidence["quote"].as_str().unwrap())
        .unwrap();
    assert!(pending.binds(&quote), "report data does not bind");
    assert_eq!(pending.expected_report_data_field(REPORT_DATA_LEN), quote);
    Appraisal {
        status: TrustTier::Affirming,
        trust_vector: TrustVector {
            executables: Some(2),
            hardware: Some(2),
            ..Default::default()
        },
        policy_id: "default".into(),
        tee_claims: json!({ "quote": { "body": { "mr_td": "00" } } }),
    }
}

fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn problem(err: &KbsError) -> Value {
    let body: Value = serde_json::from_str(&err.problem_json()).unwrap();
    // the body is kbs-types' ErrorInformation, as guest-components parses it
    let info: kbs_types::ErrorInformation = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(info.error_type, err.type_uri());
    body
}

fn round_trip(kind: KeyKind) {
    let kbs = kbs();
    let client_key = VaultKey::generate(kind).unwrap();

    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let challenge: Challenge = serde_json::from_str(&auth.body).unwrap();
    assert_eq!(STANDARD.decode(&challenge.nonce).unwrap().len(), 32);
    assert_eq!(challenge.extra_params, json!(""));
    assert!(auth.set_cookie.starts_with("kbs-session-id="));
    assert!(auth.set_cookie.contains("; Expires="));
    let cookie = cookie_of(&auth.set_cookie);

    let now = t0() + Duration::from_secs(10);
    let pending = kbs
        .attest(
            Some(&cookie),
            &client_attestation(&challenge, &client_key, None),
            now,
        )
        .unwrap();
    assert_eq!(pending.tee, Tee::Tdx);
    let done = kbs.complete(&pending, appraise(&pending), now).unwrap();

    // The token verifies against the published JWKS, and carries the TEE key where Trustee's
    // token verifier looks for it.
    let body: Value = serde_json::from_str(&done.body).unwrap();
    let token = body["token"].as_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(kbs.token_key().jwks()).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_exp = false; // the test clock is not the wall clock
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["eat_profile"], "tag:github.com,2023:veraison/ear");
    assert_eq!(claims["submods"]["cpu0"]["ear.status"], "affirming");
    let tee_pubkey = claims
        .pointer("/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey")
        .unwrap();
    assert_eq!(
        tee_pubkey,
        &serde_json::to_value(client_key.tee_pubkey().unwrap()).unwrap()
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );

    // The resource comes back as a JWE the client decrypts with its TEE key.
    let session = kbs.resource_session(Some(&cookie), now).unwrap();
    let path = ResourcePath::parse("default/key/disk").unwrap();
    let wire = kbs
        .encrypt_resource(&session, format!("secret for {path}").as_bytes())
        .unwrap();
    let response: Response = serde_json::from_str(&wire).unwrap();
    let plain = jose::decrypt(&client_key.recipient().unwrap(), &response).unwrap();
    assert_eq!(&plain[..], b"secret for default/key/disk");

    // Replaying the attestation on the attested session is refused.
    let err = kbs
        .attest(
            Some(&cookie),
            &client_attestation(&challenge, &client_key, None),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, KbsError::AlreadyAttested), "{err}");
    assert_eq!(
        problem(&err)["type"],
        format!("{ERROR_TYPE_PREFIX}/AttestationError")
    );
}

#[test]
fn round_trip_with_ec_p256_tee_key() {
    round_trip(KeyKind::EcP256);
}

#[test]
fn round_trip_with_ec_p384_tee_key() {
    round_trip(KeyKind::EcP384);
}

#[test]
fn round_trip_with_rsa_tee_key() {
    round_trip(KeyKind::Rsa2048);
}

#[test]
fn wrong_nonce_refused() {
    let kbs = kbs();
    let key = VaultKey::generate(KeyKind::EcP256).unwrap();
    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let cookie = cookie_of(&auth.set_cookie);
    let other = STANDARD.encode([7u8; 32]);
    let err = kbs
        .attest(
            Some(&cookie),
            &client_attestation(&auth.challenge, &key, Some(&other)),
            t0(),
        )
        .unwrap_err();
    assert!(matches!(err, KbsError::NonceMismatch), "{err}");
    assert_eq!(err.status(), 401);
    assert_eq!(
        problem(&err)["type"],
        "https://github.com/confidential-containers/kbs/errors/AttestationError"
    );
}

#[test]
fn expired_session_refused_at_attest_and_resource() {
    let kbs = kbs();
    let key = VaultKey::generate(KeyKind::EcP256).unwrap();
    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let cookie = cookie_of(&auth.set_cookie);
    let late = t0() + Duration::from_secs(301);
    let err = kbs
        .attest(
            Some(&cookie),
            &client_attestation(&auth.challenge, &key, None),
            late,
        )
        .unwrap_err();
    // A session that has not attested lives `attest_within` (30 s by default).
    assert!(
        matches!(err, KbsError::ExpiredSession { ago_secs: 271 }),
        "{err}"
    );
    // the expired session is gone: now unknown
    let err = kbs.resource_session(Some(&cookie), late).unwrap_err();
    assert!(matches!(err, KbsError::UnknownSession), "{err}");

    // an attested session also expires for /resource
    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let cookie = cookie_of(&auth.set_cookie);
    let pending = kbs
        .attest(
            Some(&cookie),
            &client_attestation(&auth.challenge, &key, None),
            t0(),
        )
        .unwrap();
    kbs.complete(&pending, appraise(&pending), t0()).unwrap();
    assert!(kbs.resource_session(Some(&cookie), t0()).is_ok());
    let err = kbs.resource_session(Some(&cookie), late).unwrap_err();
    assert!(matches!(err, KbsError::ExpiredSession { .. }), "{err}");
}

#[test]
fn unknown_and_missing_cookie_refused() {
    let kbs = kbs();
    let err = kbs
        .attest(Some("kbs-session-id=0123456789abcdef"), b"{}", t0())
        .unwrap_err();
    assert!(matches!(err, KbsError::UnknownSession), "{err}");
    let err = kbs.attest(None, b"{}", t0()).unwrap_err();
    assert!(matches!(err, KbsError::MissingCookie), "{err}");
    let err = kbs.resource_session(Some("other=1"), t0()).unwrap_err();
    assert!(matches!(err, KbsError::MissingCookie), "{err}");
}

#[test]
fn unattested_session_refused_for_resource() {
    let kbs = kbs();
    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let err = kbs
        .resource_session(Some(&cookie_of(&auth.set_cookie)), t0())
        .unwrap_err();
    assert!(matches!(err, KbsError::NotAttested), "{err}");
    assert_eq!(
        problem(&err)["type"],
        "https://github.com/confidential-containers/kbs/errors/TokenNotFound"
    );
}

#[test]
fn wrong_version_names_both() {
    let kbs = kbs();
    for v in ["0.3.0", "0.5.0", "1.0.0", "0.4", "garbage"] {
        let err = kbs.auth(&request_body(v), t0()).unwrap_err();
        let detail = problem(&err)["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains(v) && detail.contains(">=0.4.0, <0.5.0"),
            "{detail}"
        );
        assert_eq!(err.trustee_variant(), "AttestationError");
    }
    assert!(kbs.auth(&request_body("0.4.7"), t0()).is_ok());
}

#[test]
fn bad_resource_path_refused() {
    for bad in [
        "key/disk",
        "default/../disk",
        "default/key/a b",
        "default/key/",
    ] {
        let err = ResourcePath::parse(bad).unwrap_err();
        assert_eq!(
            problem(&err)["type"],
            "https://github.com/confidential-containers/kbs/errors/PluginInternalError",
            "{bad}"
        );
    }
}

#[test]
fn session_table_is_bounded_and_a_flood_of_auth_cannot_lock_attesters_out() {
    let config = KbsConfig {
        max_sessions: 2,
        ..Default::default()
    };
    let kbs = KbsState::new(config, TokenKey::generate().unwrap());
    let key = VaultKey::generate(KeyKind::EcP256).unwrap();
    // An attested session.
    let first = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let pending = kbs
        .attest(
            Some(&cookie_of(&first.set_cookie)),
            &client_attestation(&first.challenge, &key, None),
            t0(),
        )
        .unwrap();
    kbs.complete(&pending, appraise(&pending), t0()).unwrap();
    // A flood of /auth: each new session takes the place of the oldest unattested one.
    let flood: Vec<_> = (0..5)
        .map(|i| {
            kbs.auth(&request_body("0.4.0"), t0() + Duration::from_secs(i))
                .unwrap()
        })
        .collect();
    assert_eq!(kbs.session_count(), 2);
    let evicted = cookie_of(&flood[0].set_cookie);
    assert!(matches!(
        kbs.attest(
            Some(&evicted),
            &client_attestation(&flood[0].challenge, &key, None),
            t0()
        ),
        Err(KbsError::UnknownSession)
    ));
    // The attested session is kept.
    kbs.resource_session(
        Some(&cookie_of(&first.set_cookie)),
        t0() + Duration::from_secs(5),
    )
    .unwrap();
    // Full of attested sessions only: refused.
    let last = cookie_of(&flood[4].set_cookie);
    let pending = kbs
        .attest(
            Some(&last),
            &client_attestation(&flood[4].challenge, &key, None),
            t0() + Duration::from_secs(5),
        )
        .unwrap();
    kbs.complete(&pending, appraise(&pending), t0() + Duration::from_secs(5))
        .unwrap();
    let err = kbs
        .auth(&request_body("0.4.0"), t0() + Duration::from_secs(6))
        .unwrap_err();
    assert!(
        matches!(err, KbsError::SessionTableFull { max: 2 }),
        "{err}"
    );
    // Once those expire, they make room.
    let later = t0() + Duration::from_secs(600);
    kbs.auth(&request_body("0.4.0"), later).unwrap();
    assert_eq!(kbs.session_count(), 1);
}

#[test]
fn a_tee_the_runtime_cannot_appraise_gets_no_session() {
    let config = KbsConfig {
        tees: vec![Tee::Sgx],
        ..Default::default()
    };
    let kbs = KbsState::new(config, TokenKey::generate().unwrap());
    let err = kbs.auth(&request_body("0.4.0"), t0()).unwrap_err();
    assert!(err.to_string().contains("sgx only"), "{err}");
    assert_eq!(kbs.session_count(), 0);
}

#[test]
fn malformed_bodies_refused_with_reason() {
    let kbs = kbs();
    let err = kbs.auth(b"{\"version\":\"0.4.0\"}", t0()).unwrap_err();
    assert!(err.to_string().contains("invalid KBS Request"), "{err}");
    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let err = kbs
        .attest(Some(&cookie_of(&auth.set_cookie)), b"[]", t0())
        .unwrap_err();
    assert!(err.to_string().contains("invalid KBS Attestation"), "{err}");
}

/// Prints one exchange of each message, for docs/vault-protocols.md
/// (`cargo test -p enclave-vault --test kbs_protocol print_examples -- --nocapture`).
#[test]
fn print_examples() {
    let kbs = kbs();
    let key = VaultKey::generate(KeyKind::EcP256).unwrap();
    let req = request_body("0.4.0");
    let auth = kbs.auth(&req, t0()).unwrap();
    let attestation = client_attestation(&auth.challenge, &key, None);
    let cookie = cookie_of(&auth.set_cookie);
    let pending = kbs.attest(Some(&cookie), &attestation, t0()).unwrap();
    let done = kbs.complete(&pending, appraise(&pending), t0()).unwrap();
    let session = kbs.resource_session(Some(&cookie), t0()).unwrap();
    let wire = kbs.encrypt_resource(&session, b"hello").unwrap();
    let response: Response = serde_json::from_str(&wire).unwrap();
    println!("REQUEST {}", String::from_utf8(req).unwrap());
    println!("SET-COOKIE {}", auth.set_cookie);
    println!("CHALLENGE {}", auth.body);
    println!("ATTESTATION {}", String::from_utf8(attestation).unwrap());
    println!(
        "BINDING {}",
        String::from_utf8(serde_json_canonicalizer::to_vec(&pending.runtime_data).unwrap())
            .unwrap()
    );
    println!(
        "REPORT_DATA {}",
        hex::encode(pending.expected_report_data_field(64))
    );
    println!("TOKEN {}", done.body);
    let payload = done.token.split('.').nth(1).unwrap();
    println!(
        "TOKEN_CLAIMS {}",
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap()
        )
        .unwrap()
    );
    println!("RESOURCE {wire}");
    println!(
        "PROTECTED {}",
        serde_json::to_string(&response.protected).unwrap()
    );
    println!("JWKS {}", kbs.token_key().jwks());
    println!("ERROR {}", KbsError::NonceMismatch.problem_json());
}

#[test]
fn tee_pubkey_refused_at_attest_when_no_resource_could_be_encrypted_to_it() {
    let kbs = kbs();
    let auth = kbs.auth(&request_body("0.4.0"), t0()).unwrap();
    let attestation = Attestation {
        init_data: None,
        runtime_data: RuntimeData {
            nonce: auth.challenge.nonce.clone(),
            tee_pubkey: kbs_types::TeePubKey::RSA {
                alg: "RSA1_5".into(),
                k_mod: "AQAB".into(),
                k_exp: "AQAB".into(),
            },
        },
        tee_evidence: CompositeEvidence {
            primary_evidence: json!({}),
            additional_evidence: String::new(),
        },
    };
    let err = kbs
        .attest(
            Some(&cookie_of(&auth.set_cookie)),
            &serde_json::to_vec(&attestation).unwrap(),
            t0(),
        )
        .unwrap_err();
    let detail = problem(&err)["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("RSA1_5") && detail.contains("RSA-OAEP-256"),
        "{detail}"
    );
}
