//! The runtime's sealed state and management API, through the real binary over RA-TLS: data
//! survives restarts and kill -9, a database copied back is refused, a witness catches what a
//! file counter cannot, and unauthenticated calls are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config};
use enclave_ratls::trust::TrustFiles;

const ISS: &str = "https://issuer.test";
const AUD: &str = "enclave-os-test";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/oidc")
        .join(name)
}

struct Instance {
    dir: PathBuf,
    config: PathBuf,
    port: u16,
}

impl Instance {
    fn new(dir: &Path, extra: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("enclave.toml");
        std::fs::write(
            &config,
            format!(
                "tee = \"sim-sgx\"\nseal_policy = \"signer\"\nstate_dir = \"state\"\n\
                 [oidc]\nissuer = \"{ISS}\"\naudience = \"{AUD}\"\njwks_file = \"{}\"\n{extra}",
                testdata("jwks.json").display()
            ),
        )
        .unwrap();
        Self {
            dir: dir.to_path_buf(),
            config,
            port: free_port(),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "run".into(),
            self.config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
        ]
    }

    fn start(&self) -> Server {
        let child = Command::new(BIN)
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("the runtime exited with {status} before listening");
            }
            assert!(Instant::now() < deadline, "not listening after 30 s");
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    /// Start, expecting a refusal: the exit code and what it said.
    fn refused(&self) -> (i32, String) {
        let o = run(&self.args().iter().map(String::as_str).collect::<Vec<_>>());
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        let trust = TrustFiles {
            root: Some(self.dir.join("state/ca/root.crt.pem")),
            trust_sim: Some(self.dir.join("state/sim")),
            collateral: None,
        };
        let verifier = Arc::new(RatlsServerVerifier::new(
            trust.verifier().unwrap(),
            Freshness::Deterministic,
        ));
        Arc::new(client_config(verifier, None, None).unwrap())
    }

    /// One request over RA-TLS: the status and body, or the I/O error.
    fn call(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.call_as("127.0.0.1", tls, method, path, token, body)
    }

    /// One request over RA-TLS to `host` (SNI and Host).
    fn call_as(
        &self,
        host: &str,
        tls: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(tls.clone(), name.to_owned()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
            Err(e) => return Err(e),
        }
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let head = String::from_utf8_lossy(&out[..end]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        let mut body = out[end + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Ok((status, body))
    }
}

/// A chunked HTTP/1.1 body, joined.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn token() -> String {
    let o = run(&[
        "token",
        "--key",
        testdata("ec.key.pem").to_str().unwrap(),
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

fn json_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

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
    let client = Instance::new(
        &c_dir,
        &format!(
            "{ca_section}[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://127.0.0.1:{witness_port}\"\nroot = \"{}\"\ntrust_sim = \"{}\"\n",
            ca.join("root.crt.pem").display(),
            w_dir.join("state/sim").display()
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

fn verify(i: &Instance, server_name: Option<&str>) -> serde_json::Value {
    let url = format!("https://127.0.0.1:{}", i.port);
    let sim = i.dir.join("state/sim");
    let root = i.dir.join("state/ca/root.crt.pem");
    let mut args = vec![
        "verify",
        url.as_str(),
        "--trust-sim",
        sim.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    if let Some(n) = server_name {
        args.extend(["--server-name", n]);
    }
    let (code, v) = json(&args);
    assert_eq!(code, 0, "{v}");
    v
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
    // one.test now gets the enclave-wide certificate.
    assert!(verify(&a, Some("one.test"))["workload"].is_null());
    let (status, _) = a
        .call(&tls, "DELETE", "/api/v1/workloads/one", Some(&t), b"")
        .unwrap();
    assert_eq!(status, 404);
    drop(server);
}

/// A copy of this binary with bytes appended: another build, so another measurement.
fn another_build(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.extend_from_slice(name.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

fn with(bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).output().unwrap()
}

#[test]
fn measurement_sealed_state_moves_to_a_new_build_only_when_exported_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    // This test is about the measurement policy.
    let text = std::fs::read_to_string(&a.config)
        .unwrap()
        .replace("seal_policy = \"signer\"", "seal_policy = \"measurement\"");
    std::fs::write(&a.config, text).unwrap();
    let t = token();
    let s = a.start();
    let tls = a.client();
    assert_eq!(
        a.call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"kept")
            .unwrap()
            .0,
        200
    );
    s.stop();

    let new = another_build(tmp.path(), "enclave-os-v2");
    let other = another_build(tmp.path(), "enclave-os-v3");
    let config = a.config.to_str().unwrap();
    let run_args = a.args();
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();

    // The new build cannot unseal, and says where to look.
    let o = with(&new, &run_args);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("different build cannot unseal") && err.contains("migration"),
        "{err}"
    );

    let o = with(&new, &["migrate", "measurement", config, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let target = m["measurement"].as_str().unwrap().to_string();

    let (code, v) = json(&["migrate", "export", config, "--to", &target]);
    assert_eq!(code, 0, "{v}");
    assert!(tmp.path().join("state/migration.sealed").exists());

    // A build it was not addressed to cannot take it.
    let o = with(&other, &["migrate", "import", config]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("was the export addressed to it"), "{err}");

    let o = with(&new, &["migrate", "import", config]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.path().join("state/migration.sealed").exists());

    // The new build now runs on the old state; the old build no longer can.
    let child = Command::new(&new)
        .args(&run_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", a.port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(25));
    }
    let (status, body) = a
        .call(&a.client(), "GET", "/api/v1/kv/k", Some(&t), b"")
        .unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"kept"[..]));
}

#[test]
fn wasm_components_serve_over_ra_tls_within_their_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/hello.wasm");
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"hello.test\"]\nenv = {{ GREETING = \"hi\" }}\n\
             [[workload]]\nname = \"spin\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"spin.test\"]\n\
             [workload.limits]\nmemory_bytes = 16777216\nrequest_timeout_ms = 300\n",
            w = wasm.display()
        ),
    );
    let _server = a.start();
    let tls = a.client();
    let (status, body) = a
        .call_as("hello.test", &tls, "GET", "/", None, b"")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"hi from a WebAssembly component\n");
    let (status, body) = a
        .call_as("hello.test", &tls, "POST", "/echo", None, b"round trip")
        .unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"round trip"[..]));

    // A runaway is stopped at its deadline, a memory hog is refused, and the other app serves on.
    let started = Instant::now();
    let (status, body) = a
        .call_as("spin.test", &tls, "GET", "/loop", None, b"")
        .unwrap();
    assert_eq!(status, 502);
    let reason = json_of(&body)["error"].as_str().unwrap().to_string();
    assert!(
        reason.contains("300 ms") && reason.contains("stopped"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, body) = a
        .call_as("spin.test", &tls, "GET", "/hog", None, b"")
        .unwrap();
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let (status, _) = a
        .call_as("hello.test", &tls, "GET", "/", None, b"")
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = a.call_as("spin.test", &tls, "GET", "/", None, b"").unwrap();
    assert_eq!(
        status, 200,
        "a fresh instance per request: the trap left nothing behind"
    );

    // The app's certificate attests the component bytes as supplied.
    let v = verify(&a, Some("hello.test"));
    let expected = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&wasm).unwrap(),
    ));
    assert_eq!(v["workload"]["code_digest"], expected.as_str());
}
