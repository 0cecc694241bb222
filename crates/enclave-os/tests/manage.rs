//! The runtime's sealed state and management API, through the real binary over RA-TLS: data
//! survives restarts and kill -9, a database copied back is refused, a witness catches what a
//! file counter cannot, and unauthenticated calls are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

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
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("no bearer token")
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

    let (status, body) = a.call(&tls, "GET", "/api/v1/status", None, b"").unwrap();
    assert_eq!(status, 200);
    let v = json_of(&body);
    assert_eq!(v["store"]["records"], 1);
    assert_eq!(v["tee"], "sim-sgx");
    assert_eq!(v["simulated"], true);
    let (status, body) = a.call(&tls, "GET", "/metrics", None, b"").unwrap();
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
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rollback detected") && err.contains("version 1"),
        "{err}"
    );

    // A database deleted outright is refused too.
    std::fs::remove_file(&db).unwrap();
    let (code, err) = a.refused();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
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
        let o = run(&[
            "evidence",
            "collect",
            "--tee",
            "sim-sgx",
            "--sim-dir",
            d.join("state/sim").to_str().unwrap(),
            "--report-data",
            &"00".repeat(64),
            "--out",
            d.join("probe").to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    assert_eq!(code, 2, "{err}");
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
    let load = |name: &str, host: &str, code: &[u8]| {
        let body = serde_json::json!({
            "kind": "process",
            "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
            "hostnames": [host],
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
    let (status, body) = load("one", "one.test", b"app one");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let one = verify(&a, Some("one.test"));
    let digest = |b: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, b));
    assert_eq!(one["workload"]["code_digest"], digest(b"app one").as_str());
    let after_one = verify(&a, None)["config_root"].clone();
    assert_ne!(
        before, after_one,
        "the enclave-wide root commits the new workload"
    );

    assert_eq!(load("two", "two.test", b"app two").0, 200);
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
    // A workload's hostname reaches the workload, which this build does not run yet.
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
        digest(b"app two").as_str()
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
