//! The runtime's sealed state and management API, through the real binary over RA-TLS: data
//! survives restarts and kill -9, a database copied back is refused, a witness catches what a
//! file counter cannot, and unauthenticated calls are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::instance::*;
use common::*;

#[test]
fn operator_data_survives_a_restart_and_unauthenticated_calls_get_401_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let server = a.start();
    let tls = a.client();
    let t = token();

    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/greeting", None, b"hello")
        .unwrap();
    assert_eq!(status, 401);
    let e = json_of(&body)["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("no bearer token") && e.contains("carrying scope 'kv:write'"),
        "{e}"
    );
    let (status, body) = a
        .call(
            &tls,
            "PUT",
            "/api/v1/kv/greeting",
            Some("not.a.jwt"),
            b"hello",
        )
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (status, _) = a
        .call(&tls, "GET", "/api/v1/kv/greeting", None, b"")
        .unwrap();
    assert_eq!(status, 401, "reading sealed data needs a token too");

    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/greeting", Some(&t), b"hello")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["version"], 1);

    let (status, body) = a.call(&tls, "GET", "/metrics", Some(&t), b"").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("enclave_os_auth_failures_total 3"), "{text}");
    assert!(
        text.contains("enclave_os_http_requests_total{route=\"/api/v1/kv/{key}\",method=\"PUT\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("enclave_os_store_version 1"), "{text}");

    server.stop();
    let _server = a.start();
    let tls = a.client();
    let (status, body) = a
        .call(&tls, "GET", "/api/v1/kv/greeting", Some(&t), b"")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    let (status, body) = a.call(&tls, "GET", "/api/v1/kv", Some(&t), b"").unwrap();
    assert_eq!(status, 200);
    assert_eq!(json_of(&body)["keys"], serde_json::json!(["greeting"]));
    // Nothing readable on disk.
    let db = std::fs::read(tmp.path().join("state/store/kv.redb")).unwrap();
    assert!(!db.windows(5).any(|w| w == b"hello"));
}

/// Item 12: the public status shows what a client needs to trust the service and nothing that
/// shows activity; the rest needs `status:read`.
#[test]
fn the_public_status_hides_the_store_and_the_detail_needs_status_read() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let _server = a.start();
    let tls = a.client();
    let t = token();
    assert_eq!(
        a.call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"v")
            .unwrap()
            .0,
        200
    );

    let (status, body) = a.call(&tls, "GET", "/api/v1/status", None, b"").unwrap();
    assert_eq!(status, 200);
    let public = json_of(&body);
    assert_eq!(public["tee"], "sim-sgx");
    assert_eq!(public["simulated"], true);
    assert_eq!(
        public["config_root"],
        verify(&a, None)["config_root"],
        "the public status names the attested config root"
    );
    assert!(public["workloads"].is_array());
    let text = String::from_utf8_lossy(&body).to_string();
    for hidden in [
        "store",
        "counter",
        "version",
        "records",
        "uptime_secs",
        "oidc_issuer",
    ] {
        assert!(
            public.get(hidden).is_none(),
            "the public status shows '{hidden}': {text}"
        );
    }
    assert!(
        !text.contains("kv.counter") && !text.contains("\"store\""),
        "the public status reveals the store or its counter: {text}"
    );
    let (status, body) = a.call(&tls, "GET", "/readyz", None, b"").unwrap();
    assert_eq!(status, 200);
    assert!(json_of(&body).get("store_version").is_none());

    // The detail and the metrics need a token with status:read.
    for path in ["/api/v1/status/detail", "/metrics"] {
        let (status, body) = a.call(&tls, "GET", path, None, b"").unwrap();
        assert_eq!(status, 401, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(
            json_of(&body)["error"]
                .as_str()
                .unwrap()
                .contains("no bearer token")
        );
        let kv_only = token_with(&["kv:read"], &[]);
        let (status, body) = a.call(&tls, "GET", path, Some(&kv_only), b"").unwrap();
        assert_eq!(status, 403, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(json_of(&body)["scope"], "status:read");
    }
    let reader = token_with(&["status:read"], &[]);
    let (status, body) = a
        .call(&tls, "GET", "/api/v1/status/detail", Some(&reader), b"")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let detail = json_of(&body);
    assert_eq!(detail["store"]["version"], 1);
    assert_eq!(detail["store"]["records"], 1);
    assert!(
        detail["store"]["counter"]
            .as_str()
            .unwrap()
            .contains("kv.counter"),
        "{detail}"
    );
    assert_eq!(detail["config_root"], public["config_root"]);
    assert_eq!(detail["oidc_issuer"], ISS);
    let (status, body) = a.call(&tls, "GET", "/metrics", Some(&reader), b"").unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("enclave_os_store_version 1"));
}

/// Item 13: each route group's scope, the token's lifetime and issue time, each refusal with
/// its reason.
#[test]
fn tokens_need_the_route_scope_a_bounded_lifetime_and_an_issue_time_not_in_the_future() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "max_token_lifetime_secs = 600\n");
    let _server = a.start();
    let tls = a.client();
    let error = |body: &[u8]| json_of(body)["error"].as_str().unwrap().to_string();

    // A reader reads and cannot write; the 403 names the scope the route needs.
    let reader = token_with(&["kv:read"], &["--ttl", "600"]);
    let (status, body) = a
        .call(&tls, "GET", "/api/v1/kv", Some(&reader), b"")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/k", Some(&reader), b"v")
        .unwrap();
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let e = error(&body);
    assert!(
        e.contains("lacks scope 'kv:write'")
            && e.contains("PUT /api/v1/kv/{key}")
            && e.contains("it carries: kv:read"),
        "{e}"
    );
    assert_eq!(json_of(&body)["scope"], "kv:write");
    // A writer writes and cannot read back, nor load a workload.
    let writer = token_with(&["kv:write"], &["--ttl", "600"]);
    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/k", Some(&writer), b"v")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = a
        .call(&tls, "GET", "/api/v1/kv/k", Some(&writer), b"")
        .unwrap();
    assert_eq!(status, 403);
    assert!(error(&body).contains("lacks scope 'kv:read'"));
    let (status, body) = a
        .call(&tls, "DELETE", "/api/v1/workloads/x", Some(&writer), b"")
        .unwrap();
    assert_eq!(status, 403);
    assert!(error(&body).contains("lacks scope 'workloads:write'"));
    // A token without any scope opens nothing.
    let none = token_with(&[], &["--ttl", "600"]);
    let (status, body) = a.call(&tls, "GET", "/api/v1/kv", Some(&none), b"").unwrap();
    assert_eq!(status, 403);
    assert!(error(&body).contains("it carries no scope"));

    // Lifetime: the configured 600 s, measured from iat.
    let long = token_with(&["kv:read"], &["--ttl", "3600"]);
    let (status, body) = a.call(&tls, "GET", "/api/v1/kv", Some(&long), b"").unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(
        error(&body).contains("lifetime (exp - iat) is 3600 s, more than the 600 s allowed"),
        "{}",
        error(&body)
    );

    // iat in the future, and no iat at all: minted by hand, since `enclave-os token` always
    // writes the current time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let key =
        jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(testdata("ec.key.pem")).unwrap())
            .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let mint = |claims: serde_json::Value| jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let future = mint(serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": "operator", "scope": "kv:read",
        "iat": now + 3600, "exp": now + 3900,
    }));
    let (status, body) = a
        .call(&tls, "GET", "/api/v1/kv", Some(&future), b"")
        .unwrap();
    assert_eq!(status, 401);
    assert!(
        error(&body).contains("issued in the future"),
        "{}",
        error(&body)
    );
    let no_iat = mint(serde_json::json!({
        "iss": ISS, "aud": AUD, "sub": "operator", "scope": "kv:read", "exp": now + 300,
    }));
    let (status, body) = a
        .call(&tls, "GET", "/api/v1/kv", Some(&no_iat), b"")
        .unwrap();
    assert_eq!(status, 401);
    assert!(error(&body).contains("no 'iat' claim"), "{}", error(&body));

    // `enclave-os token` refuses a scope the runtime does not know.
    let o = run(&[
        "token",
        "--key",
        testdata("ec.key.pem").to_str().unwrap(),
        "--issuer",
        ISS,
        "--audience",
        AUD,
        "--scope",
        "kv:wrte",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--scope kv:wrte: not a scope"), "{err}");
}

/// The JWKS of `testdata/oidc` with only the key `kid`.
fn jwks_only(kid: &str) -> Vec<u8> {
    let mut set: serde_json::Value =
        serde_json::from_slice(&std::fs::read(testdata("jwks.json")).unwrap()).unwrap();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] == kid);
    serde_json::to_vec(&set).unwrap()
}

/// Item 13: a JWKS URL is fetched again on its schedule; a rotated key set is used without a
/// restart, a key the issuer now marks use=enc stops verifying, and an answer without a usable
/// key changes nothing.
#[test]
fn a_jwks_url_is_reloaded_on_its_schedule_and_rotated_keys_take_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, chain, key) = test_pki("Issuer Test CA");
    let served = Arc::new(Mutex::new(jwks_only("ec-1")));
    let port = https_server(chain, key, served.clone(), 64);
    std::fs::create_dir_all(tmp.path()).unwrap();
    std::fs::write(tmp.path().join("egress-ca.pem"), ca).unwrap();
    let a = Instance::new(
        tmp.path(),
        "jwks_refresh_secs = 10\n[egress]\nca_bundle = \"egress-ca.pem\"\n",
    );
    let text = std::fs::read_to_string(&a.config).unwrap().replace(
        &format!("jwks_file = \"{}\"", testdata("jwks.json").display()),
        &format!("jwks_url = \"https://localhost:{port}/jwks\""),
    );
    assert!(text.contains("jwks_url"), "{text}");
    std::fs::write(&a.config, text).unwrap();
    let _server = a.start();
    let tls = a.client();
    let o = run(&[
        "token",
        "--key",
        testdata("rsa.key.pem").to_str().unwrap(),
        "--kid",
        "rsa-1",
        "--issuer",
        ISS,
        "--audience",
        AUD,
        "--scope",
        "kv:read",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rsa = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let ec = token();
    let get = |t: &str| a.call(&tls, "GET", "/api/v1/kv", Some(t), b"").unwrap();
    assert_eq!(get(&ec).0, 200);
    let root = || {
        let (_, body) = a.call(&tls, "GET", "/api/v1/status", None, b"").unwrap();
        json_of(&body)["config_root"].as_str().unwrap().to_string()
    };
    let root_before = root();
    let (status, body) = get(&rsa);
    assert_eq!(status, 401);
    assert!(
        String::from_utf8_lossy(&body).contains("key id 'rsa-1' is not in the issuer's JWKS"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The issuer rotates to rsa-1 and keeps ec-1 only as an encryption key; within a refresh
    // period or two the runtime follows.
    let mut rotated: serde_json::Value =
        serde_json::from_slice(&std::fs::read(testdata("jwks.json")).unwrap()).unwrap();
    for k in rotated["keys"].as_array_mut().unwrap() {
        if k["kid"] == "ec-1" {
            k["use"] = serde_json::json!("enc");
        }
    }
    *served.lock().unwrap() = serde_json::to_vec(&rotated).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while get(&rsa).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the rotated key was not taken up: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, body) = get(&ec);
    assert_eq!(status, 401);
    assert!(
        String::from_utf8_lossy(&body)
            .contains("key id 'ec-1' is in the issuer's JWKS but does not verify tokens: use=enc"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(a.log().contains("JWKS reloaded"), "{}", a.log());
    // The key set is a leaf of the tree: the served config root moved with it.
    assert_ne!(
        root(),
        root_before,
        "the rotation left the config root unchanged"
    );

    // An answer without a usable key is refused, and the keys in use stay.
    *served.lock().unwrap() = br#"{"keys": []}"#.to_vec();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !a.log().contains("JWKS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failed reload logged: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(a.log().contains("holds no usable"), "{}", a.log());
    assert_eq!(get(&rsa).0, 200);
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let t = token();
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut n = 0u32;
    for cycle in 0..8u64 {
        let mut server = a.start();
        let tls = a.client();
        // Everything acknowledged so far is there, intact.
        for (k, v) in &acked {
            let (status, body) = a
                .call(&tls, "GET", &format!("/api/v1/kv/{k}"), Some(&t), b"")
                .unwrap();
            assert_eq!(
                status,
                200,
                "cycle {cycle}: {k} lost: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(body, v.as_bytes(), "cycle {cycle}: {k} changed");
        }
        // A stream of writes from another thread, killed at a varying moment.
        let writer = {
            let (a2, tls2, t2) = (
                Instance {
                    dir: a.dir.clone(),
                    config: a.config.clone(),
                    port: a.port,
                },
                tls.clone(),
                t.clone(),
            );
            let start = n;
            std::thread::spawn(move || {
                let mut done = Vec::new();
                for i in start..start + 400 {
                    let (k, v) = (format!("k{i}"), format!("value {i}"));
                    match a2.call(
                        &tls2,
                        "PUT",
                        &format!("/api/v1/kv/{k}"),
                        Some(&t2),
                        v.as_bytes(),
                    ) {
                        Ok((200, _)) => done.push((k, v)),
                        _ => break,
                    }
                }
                done
            })
        };
        std::thread::sleep(Duration::from_millis(150 + 70 * cycle));
        server.0.kill().unwrap(); // SIGKILL
        server.0.wait().unwrap();
        let done = writer.join().unwrap();
        n += 400;
        acked.extend(done);
    }
    assert!(
        acked.len() > 8,
        "too few writes were acknowledged to test anything"
    );
    let _server = a.start();
    let tls = a.client();
    for (k, v) in &acked {
        let (status, body) = a
            .call(&tls, "GET", &format!("/api/v1/kv/{k}"), Some(&t), b"")
            .unwrap();
        assert_eq!(status, 200, "{k} lost");
        assert_eq!(body, v.as_bytes());
    }
}

#[test]
fn a_database_copied_back_from_earlier_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let t = token();
    let db = tmp.path().join("state/store/kv.redb");
    let server = a.start();
    let tls = a.client();
    assert_eq!(
        a.call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"v1")
            .unwrap()
            .0,
        200
    );
    server.stop();
    std::fs::copy(&db, tmp.path().join("old.redb")).unwrap();
    let server = a.start();
    assert_eq!(
        a.call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"v2")
            .unwrap()
            .0,
        200
    );
    server.stop();
    std::fs::copy(tmp.path().join("old.redb"), &db).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("rollback detected") && err.contains("version 1"),
        "{err}"
    );

    // The old database with the counter corrupted, or another store's counter, so that the
    // version check cannot run: still the state refused (3), never a usage error (2), so a
    // supervisor acting on 3 cannot be steered by which file the host breaks.
    let counter = tmp.path().join("state/store/kv.counter");
    let good_counter = std::fs::read(&counter).unwrap();
    std::fs::write(&counter, vec![0x5a; good_counter.len()]).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("neither slot authenticates"), "{err}");
    std::fs::write(&counter, &good_counter).unwrap();

    // The sealed master key removed beside its database, or altered by one bit: refused, as
    // state tampered with.
    let key = tmp.path().join("state/store/master.key.sealed");
    let good_key = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("sealed master key"), "{err}");
    let mut flipped = good_key.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&key, &flipped).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    std::fs::write(&key, &good_key).unwrap();

    // Junk in place of the database: refused, as state tampered with.
    let good_db = std::fs::read(&db).unwrap();
    std::fs::write(&db, vec![0x5a; 4096]).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    std::fs::write(&db, &good_db).unwrap();

    // The development CA's sealed key removed while the root clients pin stays: refused,
    // rather than quietly replacing the CA.
    let ca_key = tmp.path().join("state/ca/intermediary.key.sealed");
    let good_ca_key = std::fs::read(&ca_key).unwrap();
    std::fs::remove_file(&ca_key).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refusing to replace the CA"), "{err}");
    std::fs::write(&ca_key, &good_ca_key).unwrap();

    // A database deleted outright is refused too.
    std::fs::remove_file(&db).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("missing"), "{err}");
}

/// A host restoring the whole state directory defeats the file counter (the documented
/// threat), and does not defeat a witness.
#[test]
fn a_witness_catches_a_whole_state_directory_rollback_that_a_file_counter_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("operator-ca");
    let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let w_dir = tmp.path().join("witness");
    let c_dir = tmp.path().join("client");
    // Each instance's simulation PKI exists before the other's configuration names it.
    for d in [&w_dir, &c_dir] {
        sim_pki(d);
    }
    let ca_section = format!(
        "[ca]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        ca.join("intermediary.crt.pem").display(),
        ca.join("intermediary.key.pem").display()
    );
    let witness_port = free_port();
    let witness = Instance::new(
        &w_dir,
        &format!(
            "{ca_section}[witness]\nlisten = \"127.0.0.1:{witness_port}\"\nclients_root = \"{}\"\ntrust_sim = \"{}\"\n",
            ca.join("root.crt.pem").display(),
            c_dir.join("state/sim").display()
        ),
    );
    let (code, measured) = json(&["measure", witness.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{measured}");
    let client = Instance::new(
        &c_dir,
        &format!(
            "{ca_section}[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://127.0.0.1:{witness_port}\"\nroot = \"{}\"\ntrust_sim = \"{}\"\nconfig_root = \"{}\"\n",
            ca.join("root.crt.pem").display(),
            w_dir.join("state/sim").display(),
            measured["root"].as_str().unwrap()
        ),
    );
    let _w = witness.start();
    let t = token();
    let c = client.start();
    let tls = client.client();
    assert_eq!(
        client
            .call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"v1")
            .unwrap()
            .0,
        200
    );
    c.stop();
    let snapshot = tmp.path().join("client-snapshot");
    copy_dir(&c_dir.join("state"), &snapshot);
    let c = client.start();
    assert_eq!(
        client
            .call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"v2")
            .unwrap()
            .0,
        200
    );
    c.stop();
    // The host puts back everything: database, sealed keys, and all.
    std::fs::remove_dir_all(c_dir.join("state")).unwrap();
    copy_dir(&snapshot, &c_dir.join("state"));
    let (code, err) = client.refused();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("rollback detected") && err.contains("the witness https://127.0.0.1"),
        "{err}"
    );

    // The same whole-directory restore under a file counter goes unnoticed: the threat the
    // documentation states.
    let f_dir = tmp.path().join("file");
    let f = Instance::new(&f_dir, "");
    let s = f.start();
    let ftls = f.client();
    assert_eq!(
        f.call(&ftls, "PUT", "/api/v1/kv/k", Some(&t), b"v1")
            .unwrap()
            .0,
        200
    );
    s.stop();
    let fsnap = tmp.path().join("file-snapshot");
    copy_dir(&f_dir.join("state"), &fsnap);
    let s = f.start();
    assert_eq!(
        f.call(&ftls, "PUT", "/api/v1/kv/k", Some(&t), b"v2")
            .unwrap()
            .0,
        200
    );
    s.stop();
    std::fs::remove_dir_all(f_dir.join("state")).unwrap();
    copy_dir(&fsnap, &f_dir.join("state"));
    let _s = f.start();
    let (status, body) = f.call(&ftls, "GET", "/api/v1/kv/k", Some(&t), b"").unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"v1"[..]));
}

#[test]
fn workloads_load_and_unload_at_run_time_changing_only_their_own_certificate() {
    use base64::Engine;
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let server = a.start();
    let tls = a.client();
    let t = token();
    // Each app a process serving an empty directory on the port it is given; the tag makes
    // each one's code its own. (Loads refused before anything runs send anything.)
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let app = |tag: &str| {
        format!(
            "#!/bin/busybox sh\n# {tag}\nexec /bin/busybox httpd -f -p \"127.0.0.1:$PORT\" -h {}\n",
            www.display()
        )
        .into_bytes()
    };
    let load = |name: &str, host: &str, code: &[u8]| {
        let body = serde_json::json!({
            "kind": "process",
            "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
            "hostnames": [host],
            "process": { "port": free_port() },
        })
        .to_string();
        a.call(
            &tls,
            "PUT",
            &format!("/api/v1/workloads/{name}"),
            Some(&t),
            body.as_bytes(),
        )
        .unwrap()
    };
    let before = verify(&a, None)["config_root"].clone();
    let (status, body) = load("one", "one.test", &app("app one"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let one = verify(&a, Some("one.test"));
    let digest = |b: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, b));
    assert_eq!(
        one["workload"]["code_digest"],
        digest(&app("app one")).as_str()
    );
    let after_one = verify(&a, None)["config_root"].clone();
    assert_ne!(
        before, after_one,
        "the enclave-wide root commits the new workload"
    );

    assert_eq!(load("two", "two.test", &app("app two")).0, 200);
    let one_again = verify(&a, Some("one.test"));
    assert_eq!(
        one_again["not_before"], one["not_before"],
        "workload one's certificate was kept"
    );
    assert_eq!(one_again["workload"], one["workload"]);
    assert_ne!(verify(&a, None)["config_root"], after_one);

    // Refusals, each with a reason.
    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/workloads/three", None, b"{}")
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (status, body) = load("three", "one.test", b"x");
    assert_eq!(status, 409);
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("served by workload 'one'")
    );
    let (status, body) = load("bad.name", "x.test", b"x");
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    // Names that reach the management API cannot be claimed: the workload would receive the
    // operator's requests and their bearer tokens.
    for host in ["127.0.0.1", "localhost", "2130706433", "0x7f000001"] {
        let (status, body) = load("three", host, b"x");
        assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
        assert!(
            String::from_utf8_lossy(&body).contains("reach the management API"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    for host in ["::1", "*", "localhost:8443", " localhost"] {
        let (status, body) = load("three", host, b"x");
        assert_eq!(status, 422, "{host}: {}", String::from_utf8_lossy(&body));
        assert!(
            String::from_utf8_lossy(&body).contains("is not a DNS name"),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // An IP address reaches the management API, which serves nothing at `/`.
    let (status, _) = a.call(&tls, "GET", "/", None, b"").unwrap();
    assert_eq!(status, 404);

    // Loaded workloads survive a restart.
    server.stop();
    let server = a.start();
    let tls = a.client();
    let (status, body) = a.call(&tls, "GET", "/api/v1/workloads", None, b"").unwrap();
    assert_eq!(status, 200);
    let names: Vec<_> = json_of(&body)["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(
        verify(&a, Some("two.test"))["workload"]["code_digest"],
        digest(&app("app two")).as_str()
    );

    let (status, _) = a
        .call(&tls, "DELETE", "/api/v1/workloads/one", Some(&t), b"")
        .unwrap();
    assert_eq!(status, 200);
    // one.test now gets the enclave-wide certificate, which is not valid for that name.
    let base = VerifyArgs::new(
        &format!("https://127.0.0.1:{}", a.port),
        &a.dir.join("state/sim"),
        &a.dir.join("state/ca/root.crt.pem"),
    );
    let (code, v) = json(&base.with(&["--server-name", "one.test"]));
    assert_eq!(code, 1, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("not for 'one.test'") && error.contains("'localhost'"),
        "{v}"
    );
    let (status, _) = a
        .call(&tls, "DELETE", "/api/v1/workloads/one", Some(&t), b"")
        .unwrap();
    assert_eq!(status, 404);
    drop(server);
}

/// The public key of testdata/oidc/other-ec.key.pem as a JWK under the operator key's id: what a
/// host writes into the JWKS file to mint its own tokens.
const HOST_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"x_F4rx_fepgI5r5mdS6pMn-iXbLWOKlz6xufyKcUACI","y":"FlMhjmfY2abPZ19aIpxmYNEnGl7jyrUpLL2m9tgOOJ0","kid":"ec-1","alg":"ES256","use":"sig"}]}"#;

fn host_token() -> String {
    let o = run(&[
        "token",
        "--key",
        testdata("other-ec.key.pem").to_str().unwrap(),
        "--kid",
        "ec-1",
        "--issuer",
        ISS,
        "--audience",
        AUD,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn served_root(a: &Instance) -> String {
    let (status, body) = a
        .call(&a.client(), "GET", "/api/v1/status", None, b"")
        .unwrap();
    assert_eq!(status, 200);
    json_of(&body)["config_root"].as_str().unwrap().to_string()
}

/// Issue 11, item 1: the JWKS is committed by content (`oidc/jwks`). A key the host writes into
/// the JWKS file after the start is not trusted by the running runtime, and a runtime started
/// on the swapped file serves another config root, so clients see the change.
#[test]
fn a_jwks_file_swapped_by_the_host_is_not_trusted_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let jwks = tmp.path().join("jwks.json");
    std::fs::copy(testdata("jwks.json"), &jwks).unwrap();
    let text = std::fs::read_to_string(&a.config).unwrap().replace(
        &testdata("jwks.json").display().to_string(),
        &jwks.display().to_string(),
    );
    std::fs::write(&a.config, text).unwrap();

    let server = a.start();
    let tls = a.client();
    let before = served_root(&a);
    std::fs::write(&jwks, HOST_JWKS).unwrap();
    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/k", Some(&host_token()), b"host")
        .unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/k", Some(&token()), b"operator")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(served_root(&a), before, "the running tree is unchanged");
    server.stop();

    // Restarted on the swapped file, the runtime trusts the host's key, under a new root.
    let _server = a.start();
    let after = served_root(&a);
    assert_ne!(
        after, before,
        "the JWKS content is committed: a new key set is a new config root"
    );
    let o = run(&["measure", a.config.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json_of(&o.stdout)["root"], after.as_str());
}

/// Issue 11, item 1: the intermediary certificate served is the one the tree commits
/// (`ca/certificate`), not the copy under the state directory, which the host can rewrite.
#[test]
fn the_committed_ca_certificate_is_served_not_the_state_directory_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("operator-ca");
    let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = Instance::new(
        &tmp.path().join("a"),
        &format!(
            "[ca]\ncertificate = \"{}\"\nkey = \"{}\"\n",
            ca.join("intermediary.crt.pem").display(),
            ca.join("intermediary.key.pem").display()
        ),
    );
    a.start().stop();
    let copy = a.dir.join("state/ca/intermediary.crt.pem");
    assert!(copy.is_file());
    std::fs::write(&copy, "the host's certificate").unwrap();
    let _server = a.start();
    let (status, body) = a
        .call(&a.client(), "GET", "/api/v1/status", None, b"")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}
