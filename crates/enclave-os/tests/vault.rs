//! The vault through the real binary over RA-TLS: the operator keeps secrets and generates keys,
//! a policy put through the API moves the config root the certificate carries, a mutual RA-TLS
//! caller (a second simulated enclave) with and without the OIDC claim its policy requires, and
//! the Trustee KBS protocol driven by a client written from the protocol (its messages
//! round-tripped through `kbs-types`), with simulated TDX evidence: a resource released and
//! decrypted, and each refusal with its RFC 7807 type.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::instance::*;
use common::run;
use enclave_ratls::binding::{BindingFormat, Freshness};
use enclave_ratls::issue::{IntermediaryCa, LeafSpec};
use enclave_ratls::tls::{RatlsResolver, RatlsServerVerifier, client_config};
use enclave_ratls::trust::TrustFiles;

struct Setup {
    tmp: tempfile::TempDir,
    server: Instance,
    /// The simulation PKI the attesters' TEEs share (the vault's `trust_sim`).
    attesters: std::path::PathBuf,
    /// A second enclave's RA-TLS leaf (simulated SGX), from the operator's intermediary CA.
    caller: Arc<RatlsResolver>,
    caller_measurement: String,
}

fn setup(extra_vault: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("operator-ca");
    let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let attesters = tmp.path().join("attesters-sim");
    let tee: Arc<dyn enclave_tee::Tee> =
        Arc::from(enclave_tee::hw::detect::open("sim-sgx", &attesters).unwrap());
    let caller_measurement = hex::encode(tee.measurement());
    let intermediary = IntermediaryCa::from_pem(
        &std::fs::read_to_string(ca.join("intermediary.crt.pem")).unwrap(),
        &std::fs::read_to_string(ca.join("intermediary.key.pem")).unwrap(),
    )
    .unwrap();
    let caller = Arc::new(RatlsResolver::new(
        tee,
        intermediary,
        LeafSpec {
            names: vec!["caller.test".into()],
            lifetime_secs: 3600,
            config_root: Some([7; 32]),
            binding: BindingFormat::Seed,
            ..LeafSpec::default()
        },
    ));
    let tdx: Box<dyn enclave_tee::Tee> =
        enclave_tee::hw::detect::open("sim-tdx", &attesters).unwrap();
    let mr_td = hex::encode(tdx.measurement());

    let dir = tmp.path().join("server");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sgx.toml"),
        format!("allow_simulated = true\n[sgx]\nmr_enclave = \"{caller_measurement}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("tdx.toml"), "allow_simulated = true\n").unwrap();
    let server = Instance::new(
        &dir,
        &format!(
            "[ca]\ncertificate = \"{c}/intermediary.crt.pem\"\nkey = \"{c}/intermediary.key.pem\"\n\
             [vault]\nhostname = \"vault.test\"\ntrust_sim = \"{sim}\"\n{extra_vault}\n\
             [vault.policy.db]\nresources = [\"default/db/*\"]\nkeys = [\"disk\"]\n\
             [[vault.policy.db.allow]]\ntee = [\"sgx\"]\nappraisal_policy = \"sgx.toml\"\n\
             oidc = {{ audience = \"vault\", required_claims = {{ group = \"db\" }} }}\n\
             [vault.policy.kbs]\nresources = [\"default/kbs/*\"]\n\
             [[vault.policy.kbs.allow]]\ntee = [\"tdx\"]\nappraisal_policy = \"tdx.toml\"\nmeasurements = [\"{mr_td}\"]\n",
            c = ca.display(),
            sim = attesters.display(),
        ),
    );
    Setup {
        tmp,
        server,
        attesters,
        caller,
        caller_measurement,
    }
}

impl Setup {
    /// Clients that verify the server: one presenting no certificate, one presenting the
    /// second enclave's.
    fn clients(&self) -> (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>) {
        let trust = TrustFiles {
            root: Some(self.tmp.path().join("operator-ca/root.crt.pem")),
            trust_sim: Some(self.server.dir.join("state/sim")),
            collateral: None,
        };
        let verifier = Arc::new(RatlsServerVerifier::new(
            trust.verifier().unwrap(),
            Freshness::Deterministic,
        ));
        (
            Arc::new(client_config(verifier.clone(), None, None).unwrap()),
            Arc::new(client_config(verifier, None, Some(self.caller.clone())).unwrap()),
        )
    }

    /// `enclave-os vault …` against the server, with `--json`: exit code and output.
    fn cli(&self, token: &str, args: &[&str]) -> (i32, serde_json::Value) {
        let url = format!("https://127.0.0.1:{}", self.server.port);
        let root = self.tmp.path().join("operator-ca/root.crt.pem");
        let sim = self.server.dir.join("state/sim");
        let mut all = vec![
            "vault",
            "--url",
            &url,
            "--token",
            token,
            "--root",
            root.to_str().unwrap(),
            "--trust-sim",
            sim.to_str().unwrap(),
            "--json",
        ];
        all.extend_from_slice(args);
        let o = run(&all);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!(
                "{args:?}: not JSON: {} {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o.status.code().unwrap_or(-1), v)
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn operator_keeps_secrets_and_keys_and_a_policy_moves_the_certificate() {
    let s = setup("");
    let _server = s.server.start();
    let admin = token_with(&["vault:read vault:write"], &[]);
    let reader = token_with(&["vault:read"], &[]);
    let file = write(s.tmp.path(), "password.txt", b"hunter2-marker");

    // A secret is kept, the policies covering it named; the operator never reads it back.
    let (code, v) = s.cli(
        &admin,
        &[
            "secret",
            "put",
            "default/db/password",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["covered_by"], serde_json::json!(["db"]));
    let (code, v) = s.cli(&admin, &["secret", "list"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["secrets"][0]["path"], "default/db/password");
    assert!(!v.to_string().contains("hunter2"), "{v}");
    // Writing needs vault:write.
    let (code, v) = s.cli(
        &reader,
        &[
            "secret",
            "put",
            "default/db/other",
            "--file",
            file.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(v["error"].as_str().unwrap().contains("vault:write"), "{v}");
    // Bad paths are refused with the reason.
    let (code, v) = s.cli(
        &admin,
        &["secret", "put", "a/../b", "--file", file.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(v["error"].as_str().unwrap().contains(".."), "{v}");

    // A key generated inside the TEE: only its public half comes out.
    let (code, v) = s.cli(&admin, &["key", "generate", "disk", "--kind", "ec-p256"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["public_jwk"]["crv"], "P-256");
    assert!(v["public_jwk"].get("d").is_none(), "{v}");
    assert!(
        v["public_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    let (code, again) = s.cli(&admin, &["key", "generate", "disk", "--kind", "ec-p256"]);
    assert_ne!(code, 0, "{again}");
    let (code, got) = s.cli(&reader, &["key", "get", "disk"]);
    assert_eq!(code, 0, "{got}");
    assert_eq!(got["kid"], v["kid"]);

    // A policy put through the API is a new leaf: a new config root, in the certificate that
    // `enclave-os verify` checks.
    let before = verify(&s.server, None);
    let policy = write(
        s.tmp.path(),
        "web.toml",
        b"resources = [\"apps/web/*\"]\n[[allow]]\nworkloads = [\"web\"]\n",
    );
    let (code, v) = s.cli(&admin, &["policy", "put", "web", policy.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    let root = v["config_root"].as_str().unwrap().to_string();
    let after = verify(&s.server, None);
    assert_ne!(before["config_root"], after["config_root"]);
    assert_eq!(after["config_root"], root);
    // The leaf's bytes are served, and their hash is the manifest's.
    let tls = s.server.client();
    let (status, leaf) = s
        .server
        .call(&tls, "GET", "/api/v1/vault/policies/web", None, b"")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        leaf,
        br#"{"allow":[{"workloads":["web"]}],"resources":["apps/web/*"]}"#
    );
    let (_, manifest) = s
        .server
        .call(&tls, "GET", "/.well-known/enclave-os/manifest", None, b"")
        .unwrap();
    let manifest = json_of(&manifest);
    let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, &leaf));
    assert!(
        manifest["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "vault/policy/web" && l["value_hash"] == hash.as_str()),
        "{manifest}"
    );
    // A file policy cannot be replaced through the API, nor a bad one put.
    let (code, v) = s.cli(&admin, &["policy", "put", "db", policy.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(v["error"].as_str().unwrap().contains("enclave.toml"), "{v}");
    let bad = write(
        s.tmp.path(),
        "bad.toml",
        b"resources = [\"apps/web/*\"]\n[[allow]]\ntee = [\"tdx\"]\n",
    );
    let (code, v) = s.cli(&admin, &["policy", "put", "bad", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        v["error"].as_str().unwrap().contains("appraisal_policy"),
        "{v}"
    );

    // Kept across a restart: the policy (same root) and the secret.
    drop(_server);
    let _server = s.server.start();
    assert_eq!(verify(&s.server, None)["config_root"], root);
    let (_, v) = s.cli(&admin, &["secret", "list"]);
    assert_eq!(v["secrets"][0]["path"], "default/db/password");

    // Removed: the root goes back.
    let (code, _) = s.cli(&admin, &["policy", "delete", "web"]);
    assert_eq!(code, 0);
    assert_eq!(
        verify(&s.server, None)["config_root"],
        before["config_root"]
    );
    // The token key's thumbprint is certified (OID 2.9), and published.
    let (status, jwks) = s
        .server
        .call(&tls, "GET", "/.well-known/enclave-os/jwks.json", None, b"")
        .unwrap();
    assert_eq!(status, 200);
    let jwks = json_of(&jwks);
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert!(
        after.to_string().contains(&jwks_thumbprint_hex(&jwks)),
        "OID 2.9 not in {after}"
    );
}

/// RFC 7638 thumbprint of the first key of an EC JWKS, hex.
fn jwks_thumbprint_hex(jwks: &serde_json::Value) -> String {
    let k = &jwks["keys"][0];
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        k["crv"].as_str().unwrap(),
        k["x"].as_str().unwrap(),
        k["y"].as_str().unwrap()
    );
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

#[test]
fn a_mutual_ratls_caller_gets_a_secret_only_with_the_claim_its_policy_requires() {
    // Two policies a simulated caller must not satisfy: a token alone (the default appraisal
    // policy still applies to its evidence), and a config root its seed leaf only carries.
    // The caller is a simulated SGX enclave measuring this test's executable.
    let probe = tempfile::tempdir().unwrap();
    let caller = hex::encode(enclave_tee::Tee::measurement(
        &enclave_tee::sim::SimTee::with_executable(
            probe.path(),
            enclave_tee::sim::Flavour::Sgx,
            &std::env::current_exe().unwrap(),
        )
        .unwrap(),
    ));
    let s = setup(&format!(
        "[vault.policy.tok]\nresources = [\"default/tok/*\"]\n\
         [[vault.policy.tok.allow]]\noidc = {{ audience = \"vault\" }}\n\
         [vault.policy.cr]\nresources = [\"default/cr/*\"]\n\
         [[vault.policy.cr.allow]]\ntee = [\"sgx\"]\nappraisal_policy = \"sgx.toml\"\nmeasurements = [\"{caller}\"]\nconfig_root = [\"{}\"]\n",
        "07".repeat(32)
    ));
    assert_eq!(s.caller_measurement, caller);
    let _server = s.server.start();
    let admin = token_with(&["vault:write"], &[]);
    let file = write(s.tmp.path(), "password.txt", b"s3cret-value");
    for path in ["default/db/password", "default/tok/t", "default/cr/c"] {
        let (code, v) = s.cli(
            &admin,
            &["secret", "put", path, "--file", file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{v}");
    }
    let (anonymous, enclave) = s.clients();
    let path = "/vault/v1/secrets/default/db/password";
    let good = format!(
        "Bearer {}",
        token_for("vault", "ops", serde_json::json!({ "group": "db" }))
    );
    let call = |tls: &Arc<rustls::ClientConfig>, host: &str, auth: Option<&str>| {
        let tok = auth.map(|a| a.trim_start_matches("Bearer ").to_string());
        s.server
            .call_as(host, tls, "GET", path, tok.as_deref(), b"")
            .unwrap()
    };

    // The second enclave with the claim: released, the exact bytes.
    let (status, body) = call(&enclave, "vault.test", Some(&good));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"s3cret-value");

    // A token without the claim: refused, the rule and the claim named.
    let missing = format!(
        "Bearer {}",
        token_for("vault", "ops", serde_json::json!({}))
    );
    let (status, body) = call(&enclave, "vault.test", Some(&missing));
    assert_eq!(status, 403);
    let why = json_of(&body)["error"].as_str().unwrap().to_string();
    assert!(
        why.contains("policy db allow[0]") && why.contains("'group'"),
        "{why}"
    );
    // No token at all.
    let (status, body) = call(&enclave, "vault.test", None);
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("bearer"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // No client certificate, even with the right token.
    let (status, body) = call(&anonymous, "vault.test", Some(&good));
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("no client certificate"));
    // Not on the vault's name.
    let (status, _) = call(&enclave, "127.0.0.1", Some(&good));
    assert_eq!(status, 421);
    // A secret no policy covers is released to nobody.
    let (status, body) = s
        .server
        .call_as(
            "vault.test",
            &enclave,
            "GET",
            "/vault/v1/secrets/default/other/x",
            Some(good.trim_start_matches("Bearer ")),
            b"",
        )
        .unwrap();
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("no vault policy covers"));

    // A token-only block: the caller's simulated evidence fails the default appraisal policy.
    let (status, body) = s
        .server
        .call_as(
            "vault.test",
            &enclave,
            "GET",
            "/vault/v1/secrets/default/tok/t",
            Some(good.trim_start_matches("Bearer ")),
            b"",
        )
        .unwrap();
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("default appraisal policy"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A config root the caller's seed leaf carries but its evidence does not bind.
    let (status, body) = s
        .server
        .call_as(
            "vault.test",
            &enclave,
            "GET",
            "/vault/v1/secrets/default/cr/c",
            None,
            b"",
        )
        .unwrap();
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("bound by the caller's evidence"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Audited without the value, and counted.
    let log = s.server.log();
    assert!(
        log.contains("vault.release") && log.contains("vault.refuse"),
        "{log}"
    );
    assert!(!log.contains("s3cret-value"));
    let (_, metrics) = s
        .server
        .call(&s.server.client(), "GET", "/metrics", Some(&token()), b"")
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("enclave_os_vault_decisions_total{via=\"ratls\",outcome=\"released\"} 1"),
        "{metrics}"
    );
    let _ = (&s.caller_measurement, &s.attesters);
}

/// A KBS client written from Trustee's protocol (RCAR), every message a `kbs-types` value.
mod kbs_client {
    use super::*;
    use base64::Engine;
    use enclave_http::header::{HeaderName, HeaderValue};
    use enclave_http::{Method, Request};
    use kbs_types::{
        Attestation, Challenge, CompositeEvidence, ErrorInformation, RuntimeData, Tee, TeePubKey,
    };

    pub struct Reply {
        pub status: u16,
        pub cookie: Option<String>,
        pub body: Vec<u8>,
    }

    impl Reply {
        /// The RFC 7807 refusal.
        pub fn problem(&self) -> ErrorInformation {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!(
                    "not a problem ({e}): {}",
                    String::from_utf8_lossy(&self.body)
                )
            })
        }
    }

    pub fn send(
        i: &Instance,
        tls: &Arc<rustls::ClientConfig>,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let uri = format!("https://127.0.0.1:{}{path}", i.port)
            .parse()
            .unwrap();
        let mut r = Request::new(method, uri).via("127.0.0.1", i.port);
        if !body.is_empty() {
            r = r.json(body);
        }
        if let Some(c) = cookie {
            r = r.header(
                HeaderName::from_static("cookie"),
                HeaderValue::from_str(c).unwrap(),
            );
        }
        let response = enclave_http::Client::new(tls.clone())
            .timeout(std::time::Duration::from_secs(30))
            .send_blocking(r)
            .unwrap();
        let cookie = response
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string);
        Reply {
            status: response.status.as_u16(),
            cookie,
            body: response.body,
        }
    }

    /// `/auth` for `tee` at protocol `version`: the reply and, on success, the challenge.
    pub fn auth(
        i: &Instance,
        tls: &Arc<rustls::ClientConfig>,
        version: &str,
    ) -> (Reply, Option<Challenge>) {
        let request = kbs_types::Request {
            version: version.into(),
            tee: Tee::Tdx,
            extra_params: serde_json::Value::String(String::new()),
        };
        let body = serde_json::to_vec(&request).unwrap();
        // The JSON round-trips through kbs-types unchanged.
        let back: kbs_types::Request = serde_json::from_slice(&body).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), body);
        let r = send(i, tls, Method::POST, "/kbs/v0/auth", None, body);
        let challenge = (r.status == 200).then(|| serde_json::from_slice(&r.body).unwrap());
        (r, challenge)
    }

    /// The report data the protocol binds: SHA-384 of the JCS form of the runtime data
    /// `{nonce, tee-pubkey, additional-evidence}`, zero-padded to 64 bytes.
    pub fn report_data(nonce: &str, key: &TeePubKey) -> [u8; 64] {
        let runtime_data = serde_json::json!({
            "nonce": nonce,
            "tee-pubkey": key,
            "additional-evidence": "",
        });
        let jcs = serde_json_canonicalizer::to_vec(&runtime_data).unwrap();
        let hash = ring::digest::digest(&ring::digest::SHA384, &jcs);
        let mut out = [0u8; 64];
        out[..48].copy_from_slice(hash.as_ref());
        out
    }

    /// `/attest` with simulated TDX evidence whose report data binds `bound_nonce`, claiming
    /// `nonce`.
    pub fn attest(
        i: &Instance,
        tls: &Arc<rustls::ClientConfig>,
        tee: &dyn enclave_tee::Tee,
        cookie: &str,
        nonce: &str,
        key: &TeePubKey,
    ) -> Reply {
        let bundle = tee.evidence(&report_data(nonce, key)).unwrap();
        let attestation = Attestation {
            init_data: None,
            runtime_data: RuntimeData {
                nonce: nonce.into(),
                tee_pubkey: key.clone(),
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: serde_json::json!({
                    "cc_eventlog": null,
                    "quote": base64::engine::general_purpose::STANDARD.encode(&bundle.evidence),
                }),
                additional_evidence: String::new(),
            },
        };
        let body = serde_json::to_vec(&attestation).unwrap();
        let back: Attestation = serde_json::from_slice(&body).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), body);
        send(i, tls, Method::POST, "/kbs/v0/attest", Some(cookie), body)
    }
}

const AE: &str = "https://github.com/confidential-containers/kbs/errors/AttestationError";

#[test]
fn a_kbs_client_with_simulated_tdx_evidence_gets_a_resource_and_each_refusal_has_its_type() {
    use enclave_http::Method;
    use kbs_client::*;
    let s = setup("");
    let _server = s.server.start();
    let admin = token_with(&["vault:write"], &[]);
    let secret = write(s.tmp.path(), "kbs.bin", b"kbs-resource-marker");
    for path in ["default/kbs/key", "default/other/key"] {
        let (code, v) = s.cli(
            &admin,
            &["secret", "put", path, "--file", secret.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{v}");
    }
    let tdx = enclave_tee::hw::detect::open("sim-tdx", &s.attesters).unwrap();
    let tls = s.server.client();
    let key = enclave_vault::VaultKey::generate(enclave_vault::KeyKind::EcP256).unwrap();
    let pubkey = key.tee_pubkey().unwrap();

    // The whole exchange: challenge, attestation, token, resource.
    let (r, challenge) = auth(&s.server, &tls, "0.4.0");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cookie = r.cookie.clone().unwrap();
    assert!(cookie.starts_with("kbs-session-id="), "{cookie}");
    let nonce = challenge.unwrap().nonce;
    let r = attest(&s.server, &tls, tdx.as_ref(), &cookie, &nonce, &pubkey);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ear = json_of(&r.body)["token"].as_str().unwrap().to_string();
    // The token verifies with the vault's published key, and carries the client's key.
    let (_, jwks) = s
        .server
        .call(&tls, "GET", "/.well-known/enclave-os/jwks.json", None, b"")
        .unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks).unwrap();
    let header = jsonwebtoken::decode_header(&ear).unwrap();
    let dk = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&header.kid.unwrap()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(&ear, &dk, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["eat_profile"], "tag:github.com,2023:veraison/ear");
    assert_eq!(
        claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"],
        serde_json::to_value(&pubkey).unwrap()
    );
    let r = send(
        &s.server,
        &tls,
        Method::GET,
        "/kbs/v0/resource/default/kbs/key",
        Some(&cookie),
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let jwe: kbs_types::Response = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(jwe.protected.alg, "ECDH-ES+A256KW");
    assert_eq!(jwe.protected.enc, "A256GCM");
    let plain = enclave_vault::jose::decrypt(&key.recipient().unwrap(), &jwe).unwrap();
    assert_eq!(plain.as_slice(), b"kbs-resource-marker");

    // A resource the policy does not give this attester: PolicyDeny, with the rule.
    let r = send(
        &s.server,
        &tls,
        Method::GET,
        "/kbs/v0/resource/default/other/key",
        Some(&cookie),
        Vec::new(),
    );
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert_eq!(
        p.error_type,
        "https://github.com/confidential-containers/kbs/errors/PolicyDeny"
    );
    assert!(p.detail.contains("no vault policy covers"), "{}", p.detail);
    // The policy covering db secrets admits SGX callers with a token only: denied, each rule named.
    let r = send(
        &s.server,
        &tls,
        Method::GET,
        "/kbs/v0/resource/default/db/password",
        Some(&cookie),
        Vec::new(),
    );
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert!(p.error_type.ends_with("/PolicyDeny"), "{}", p.error_type);
    assert!(
        p.detail.contains("policy db allow[0]") && p.detail.contains("sgx"),
        "{}",
        p.detail
    );

    // A replayed attestation on the attested session.
    let r = attest(&s.server, &tls, tdx.as_ref(), &cookie, &nonce, &pubkey);
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert_eq!(p.error_type, AE);
    assert!(p.detail.contains("already attested"), "{}", p.detail);

    // A wrong nonce.
    let (r, _) = auth(&s.server, &tls, "0.4.0");
    let other = r.cookie.unwrap();
    let r = attest(
        &s.server,
        &tls,
        tdx.as_ref(),
        &other,
        "bm90LXRoZS1ub25jZQ==",
        &pubkey,
    );
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert_eq!(p.error_type, AE);
    assert!(p.detail.contains("nonce"), "{}", p.detail);

    // Evidence that binds another nonce than the one claimed.
    let (r, ch) = auth(&s.server, &tls, "0.4.0");
    let third = r.cookie.unwrap();
    let bundle_for_other = ch.unwrap().nonce;
    let bundle = tdx
        .evidence(&report_data("c29tZXRoaW5nLWVsc2U=", &pubkey))
        .unwrap();
    let attestation = kbs_types::Attestation {
        init_data: None,
        runtime_data: kbs_types::RuntimeData {
            nonce: bundle_for_other,
            tee_pubkey: pubkey.clone(),
        },
        tee_evidence: kbs_types::CompositeEvidence {
            primary_evidence: serde_json::json!({
                "quote": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bundle.evidence),
            }),
            additional_evidence: String::new(),
        },
    };
    let r = send(
        &s.server,
        &tls,
        Method::POST,
        "/kbs/v0/attest",
        Some(&third),
        serde_json::to_vec(&attestation).unwrap(),
    );
    assert_eq!(r.status, 401);
    assert!(
        r.problem().detail.contains("does not bind"),
        "{}",
        r.problem().detail
    );
    // A refused attestation ends its session: trying again needs a new nonce.
    let r = send(
        &s.server,
        &tls,
        Method::POST,
        "/kbs/v0/attest",
        Some(&third),
        serde_json::to_vec(&attestation).unwrap(),
    );
    assert_eq!(r.status, 401);
    assert!(
        r.problem().detail.contains("unknown KBS session"),
        "{}",
        r.problem().detail
    );

    // Genuine evidence of code no policy admits (another executable, so another MRTD): no
    // attested session to hold a place in the table.
    let other = enclave_tee::sim::SimTee::with_executable(
        &s.attesters,
        enclave_tee::sim::Flavour::Tdx,
        Path::new(common::BIN),
    )
    .unwrap();
    let (r, ch) = auth(&s.server, &tls, "0.4.0");
    let r = attest(
        &s.server,
        &tls,
        &other,
        &r.cookie.unwrap(),
        &ch.unwrap().nonce,
        &pubkey,
    );
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert!(
        p.detail.contains("no vault policy admits this attester"),
        "{}",
        p.detail
    );

    // A TEE whose evidence this KBS does not appraise gets no session.
    let request = kbs_types::Request {
        version: "0.4.0".into(),
        tee: kbs_types::Tee::Snp,
        extra_params: serde_json::Value::String(String::new()),
    };
    let r = send(
        &s.server,
        &tls,
        Method::POST,
        "/kbs/v0/auth",
        None,
        serde_json::to_vec(&request).unwrap(),
    );
    assert_eq!(r.status, 401);
    assert!(
        r.problem().detail.contains("tdx, sgx only"),
        "{}",
        r.problem().detail
    );

    // A protocol version outside the range: both named.
    let (r, _) = auth(&s.server, &tls, "0.3.0");
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert_eq!(p.error_type, AE);
    assert!(
        p.detail.contains("0.3.0") && p.detail.contains("0.4.0"),
        "{}",
        p.detail
    );

    // No session at all.
    let r = send(
        &s.server,
        &tls,
        Method::GET,
        "/kbs/v0/resource/default/kbs/key",
        None,
        Vec::new(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.problem().error_type, AE);

    // Audited and counted, never with the value.
    let log = s.server.log();
    assert!(!log.contains("kbs-resource-marker"));
    let (_, metrics) = s
        .server
        .call(&tls, "GET", "/metrics", Some(&token()), b"")
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("enclave_os_vault_decisions_total{via=\"kbs\",outcome=\"released\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_expired_kbs_session_is_refused() {
    use enclave_http::Method;
    use kbs_client::*;
    let s = setup("session_ttl_secs = 1");
    let _server = s.server.start();
    let tdx = enclave_tee::hw::detect::open("sim-tdx", &s.attesters).unwrap();
    let tls = s.server.client();
    let key = enclave_vault::VaultKey::generate(enclave_vault::KeyKind::EcP384).unwrap();
    let pubkey = key.tee_pubkey().unwrap();
    let (r, challenge) = auth(&s.server, &tls, "0.4.0");
    assert_eq!(r.status, 200);
    let cookie = r.cookie.unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = attest(
        &s.server,
        &tls,
        tdx.as_ref(),
        &cookie,
        &challenge.unwrap().nonce,
        &pubkey,
    );
    assert_eq!(r.status, 401);
    let p = r.problem();
    assert_eq!(p.error_type, AE);
    assert!(p.detail.contains("expired"), "{}", p.detail);
    let r = send(
        &s.server,
        &tls,
        Method::GET,
        "/kbs/v0/resource/default/kbs/key",
        Some(&cookie),
        Vec::new(),
    );
    assert_eq!(r.status, 401);
}

/// A simulated TDX runtime with no sealing key of its own gets its store's root key from a
/// second Enclave OS instance's vault over the KBS protocol, after attesting; the same key
/// again after a restart (its store opens); and refuses to start, saying why, when the vault
/// will not release it.
#[test]
fn a_tdx_runtime_gets_its_sealing_root_from_another_instances_vault() {
    let s = setup("");
    // The TDX instance's simulation PKI and measurement, before either runtime starts: the
    // vault's trust_sim and policy name them.
    let td_dir = s.tmp.path().join("td");
    let td_sim = td_dir.join("state/sim");
    let mr_td = hex::encode(enclave_tee::Tee::measurement(
        &enclave_tee::sim::SimTee::with_executable(
            &td_sim,
            enclave_tee::sim::Flavour::Tdx,
            Path::new(common::BIN),
        )
        .unwrap(),
    ));
    // The vault's config names the TD's simulation PKI and measurement.
    let text = std::fs::read_to_string(&s.server.config).unwrap();
    let text = text.replace(
        &format!("trust_sim = \"{}\"", s.attesters.display()),
        &format!("trust_sim = \"{}\"", td_sim.display()),
    );
    std::fs::write(
        &s.server.config,
        format!(
            "{text}[vault.policy.sealing]\nresources = [\"default/sealing/td\"]\n\
             [[vault.policy.sealing.allow]]\ntee = [\"tdx\"]\nappraisal_policy = \"tdx.toml\"\nmeasurements = [\"{mr_td}\"]\n"
        ),
    )
    .unwrap();
    let _vault = s.server.start();
    let admin = token_with(&["vault:write"], &[]);
    let root_key = write(s.tmp.path(), "root.hex", "5a".repeat(32).as_bytes());
    let (code, v) = s.cli(
        &admin,
        &[
            "secret",
            "put",
            "default/sealing/td",
            "--file",
            root_key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v}");

    // The TD: sim-tdx, its root key from the vault, which it trusts as an attested KBS.
    std::fs::create_dir_all(&td_dir).unwrap();
    std::fs::write(td_dir.join("kbs.toml"), "allow_simulated = true\n").unwrap();
    // The TD pins the vault's config root: another instance under the same root, with the
    // same build but a vault of another operator, must not hand out its key.
    let vault_root = verify(&s.server, None)["config_root"]
        .as_str()
        .unwrap()
        .to_string();
    let td_config_pinned = |resource: &str, pin: &str| {
        let config = td_dir.join("enclave.toml");
        std::fs::write(
            &config,
            format!(
                "tee = \"sim-tdx\"\nstate_dir = \"state\"\n\
                 seal_key_kbs = {{ url = \"https://127.0.0.1:{port}\", resource = \"{resource}\", root = \"{root}\", policy = \"kbs.toml\", trust_sim = \"{sim}\", config_root = \"{pin}\" }}\n",
                port = s.server.port,
                root = s.tmp.path().join("operator-ca/root.crt.pem").display(),
                sim = s.server.dir.join("state/sim").display(),
            ),
        )
        .unwrap();
        Instance {
            dir: td_dir.clone(),
            config,
            port: s.server.port + 1000,
        }
    };
    let td_config = |resource: &str| td_config_pinned(resource, &vault_root);
    // Pinned to another root first: refused at the TLS handshake, nothing started.
    let (code, why) = td_config_pinned("default/sealing/td", &"ab".repeat(32)).refused();
    assert_ne!(code, 0);
    assert!(why.contains("config root"), "{why}");
    let td = td_config("default/sealing/td");
    let started = td.start();
    let tls = td.client();
    let (status, body) = td.call(&tls, "GET", "/api/v1/status", None, b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["tee"], "sim-tdx");
    drop(started);
    // The same root again: the store it sealed opens.
    let again = td.start();
    drop(again);
    assert!(td.log().contains("root key a KBS released"), "{}", td.log());
    // The committed key source says where the key comes from.
    let manifest = run(&["measure", td.config.to_str().unwrap(), "--json"]);
    let manifest = String::from_utf8_lossy(&manifest.stdout);
    assert!(manifest.contains("sealing/kbs"), "{manifest}");

    // A resource the vault's policies do not give this TD: it refuses to start, saying why.
    let refused = td_config("default/sealing/other");
    let (code, why) = refused.refused();
    assert_ne!(code, 0);
    assert!(
        why.contains("seal_key_kbs") && why.contains("no vault policy covers"),
        "{why}"
    );
}

/// A WebAssembly app reads a secret through the SDK's `secrets` interface when a policy names
/// it and the code it runs; another path is refused with the policy's reason.
#[test]
fn a_wasm_app_gets_the_secrets_a_policy_names_it_for() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/sdk.wasm");
    let code = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&sdk).unwrap(),
    ));
    let s = setup(&format!(
        "[vault.policy.apps]\nresources = [\"apps/sdk/*\"]\n\
         [[vault.policy.apps.allow]]\nworkloads = [\"notes\"]\ncode_sha256 = [\"{code}\"]\n\
         [vault.policy.stale]\nresources = [\"apps/stale/*\"]\n\
         [[vault.policy.stale.allow]]\nworkloads = [\"notes\"]\ncode_sha256 = [\"{}\"]\n",
        "00".repeat(32)
    ));
    // The app, as a file workload of the vault's own instance.
    let text = std::fs::read_to_string(&s.server.config).unwrap();
    std::fs::write(
        &s.server.config,
        format!(
            "{text}[[workload]]\nname = \"notes\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"notes.test\"]\n",
            sdk.display()
        ),
    )
    .unwrap();
    let _server = s.server.start();
    let admin = token_with(&["vault:write"], &[]);
    let file = write(s.tmp.path(), "v.txt", b"app-secret-value");
    for path in ["apps/sdk/token", "apps/stale/token", "default/db/password"] {
        let (code, v) = s.cli(
            &admin,
            &["secret", "put", path, "--file", file.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{v}");
    }
    let tls = s.server.client();
    let get = |path: &str| {
        s.server
            .call_as("notes.test", &tls, "GET", path, None, b"")
            .unwrap()
    };
    let (status, body) = get("/secret/apps/sdk/token");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"app-secret-value");
    // A policy for other code: refused, the code named.
    let (status, body) = get("/secret/apps/stale/token");
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("runs code"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A policy for remote attesters only.
    let (status, body) = get("/secret/default/db/password");
    assert_eq!(status, 403);
    assert!(
        String::from_utf8_lossy(&body).contains("remote attesters, not local workloads"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Allowed and not kept; a malformed path.
    let (status, _) = get("/secret/apps/sdk/other");
    assert_eq!(status, 404);
    let (status, _) = get("/secret/apps/sdk");
    assert_eq!(status, 400);
}
