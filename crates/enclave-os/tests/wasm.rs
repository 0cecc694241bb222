//! WebAssembly workloads through the real binary over RA-TLS: a round trip into a component,
//! limits that stop one app and not another, the SDK's sealed key-value store (kept across a
//! restart, separate per app), attestation and keys, pinned HTTPS egress, and the per-app
//! certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::instance::*;
use common::{body, https_server, json, test_pki};

fn component(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/wasm")
        .join(name)
}

#[test]
fn wasm_components_serve_over_ra_tls_within_their_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = component("hello.wasm");
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"hello.test\"]\nenv = {{ GREETING = \"hi\" }}\n\
             [[workload]]\nname = \"spin\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"spin.test\"]\n\
             [workload.limits]\nmemory_bytes = 16777216\nrequest_timeout_ms = 300\n\
             [[workload]]\nname = \"busy\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"busy.test\"]\n\
             [workload.limits]\nrequest_timeout_ms = 3000\n",
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

    // More runaways than the runtime has worker threads: they share the CPU with everyone else,
    // so another app answers while all of them are still running, not after their deadlines.
    let runaways = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    let (hello_done, first_runaway_done) = std::thread::scope(|scope| {
        let loops: Vec<_> = (0..runaways)
            .map(|_| {
                scope.spawn(|| {
                    let reply = a.call_as("busy.test", &tls, "GET", "/loop", None, b"");
                    (reply.unwrap().0, Instant::now())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let (status, _) = a
            .call_as("hello.test", &tls, "GET", "/", None, b"")
            .unwrap();
        assert_eq!(status, 200);
        let hello_done = Instant::now();
        let ends = loops.into_iter().map(|t| t.join().unwrap());
        let ends: Vec<_> = ends
            .inspect(|(status, _)| assert_eq!(*status, 502))
            .collect();
        (hello_done, ends.iter().map(|(_, at)| *at).min().unwrap())
    });
    assert!(
        hello_done < first_runaway_done,
        "hello answered {:?} after the first runaway was stopped",
        hello_done.saturating_duration_since(first_runaway_done)
    );

    // No [egress] ca_bundle: outgoing requests are refused, and the component is told why.
    let (status, body) = a
        .call_as(
            "hello.test",
            &tls,
            "GET",
            "/fetch?url=https://localhost:1/",
            None,
            b"",
        )
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("egress is disabled"), "{text}");

    // The app's certificate attests the component bytes as supplied.
    let v = verify(&a, Some("hello.test"));
    let expected = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&wasm).unwrap(),
    ));
    assert_eq!(v["workload"]["code_digest"], expected.as_str());
}

#[test]
fn requests_beyond_the_instance_slots_wait_for_one_or_are_refused_as_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = component("hello.wasm");
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[limits]\nmax_wasm_instances = 2\n\
             [[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"hello.test\"]\n\
             [workload.limits]\nrequest_timeout_ms = 400\n\
             [[workload]]\nname = \"busy\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"busy.test\"]\n\
             [workload.limits]\nrequest_timeout_ms = 3000\n\
             [[workload]]\nname = \"patient\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"patient.test\"]\n\
             [workload.limits]\nrequest_timeout_ms = 8000\n",
            w = wasm.display()
        ),
    );
    let _server = a.start();
    let tls = a.client();
    std::thread::scope(|scope| {
        let runaways: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| a.call_as("busy.test", &tls, "GET", "/loop", None, b"")))
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        // A request whose deadline outlasts the runaways waits for a slot and is served.
        let patient = scope.spawn(|| a.call_as("patient.test", &tls, "GET", "/", None, b""));
        // Both slots are held: this request waits its whole 400 ms deadline, then is told why.
        let (status, body) = a
            .call_as("hello.test", &tls, "GET", "/", None, b"")
            .unwrap();
        let reason = json_of(&body)["error"].as_str().unwrap().to_string();
        assert_eq!(status, 503, "{reason}");
        assert!(
            reason.contains("all 2 WebAssembly instance slots stayed busy"),
            "{reason}"
        );
        for t in runaways {
            assert_eq!(t.join().unwrap().unwrap().0, 502);
        }
        assert_eq!(patient.join().unwrap().unwrap().0, 200);
    });
    // The runaways' slots, and their instances in the pool, are free again.
    for _ in 0..3 {
        let (status, body) = a
            .call_as("hello.test", &tls, "GET", "/", None, b"")
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn channel_bound_verify_binds_the_apps_own_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = component("hello.wasm");
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"hello.localhost\"]\n",
            wasm.display()
        ),
    );
    let _server = a.start();
    let base = common::VerifyArgs::new(
        &format!("https://127.0.0.1:{}", a.port),
        &a.dir.join("state/sim"),
        &a.dir.join("state/ca/root.crt.pem"),
    );
    let code = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&wasm).unwrap(),
    ));
    // The app's name: its own leaf, whose key the channel evidence binds with this connection.
    let (status, v) = json(&base.with(&["--mode", "channel", "--server-name", "hello.localhost"]));
    assert_eq!(status, 0, "{v}");
    assert_eq!(v["key_binding"]["mode"], "channel");
    assert_eq!(v["server_name"], "hello.localhost");
    assert_eq!(v["chain_verified"], true);
    assert_eq!(v["workload"]["code_digest"], code.as_str());
    // The address: the enclave-wide leaf, in the same mode.
    let (status, v) = json(&base.with(&["--mode", "channel"]));
    assert_eq!(status, 0, "{v}");
    assert_eq!(v["key_binding"]["mode"], "channel");
    assert_eq!(v["server_name"], "127.0.0.1");
    assert!(v["workload"].is_null(), "{v}");
    // A connection that resumed a TLS session presented no certificate: nothing to bind, and
    // the runtime says so rather than binding some other leaf.
    let tls = a.client();
    let path = "/.well-known/enclave-os/attestation";
    let (status, body) = a
        .call_as("hello.localhost", &tls, "GET", path, None, b"")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = a
        .call_as("hello.localhost", &tls, "GET", path, None, b"")
        .unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("resumed an earlier TLS session"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // A name the runtime serves no certificate for gets the enclave-wide leaf, which is not
    // valid for it: refused, naming both.
    let (status, v) = json(&base.with(&["--mode", "channel", "--server-name", "bank.example.com"]));
    assert_eq!(status, 1, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("'bank.example.com'") && error.contains("'localhost'"),
        "{v}"
    );
}

fn text(reply: (u16, Vec<u8>)) -> (u16, String) {
    (reply.0, String::from_utf8_lossy(&reply.1).into_owned())
}

#[test]
fn sdk_storage_is_per_app_and_survives_a_restart_keys_never_leave_and_evidence_binds_app_data() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = component("sdk.wasm");
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[[workload]]\nname = \"notes\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"notes.test\"]\n\
             [[workload]]\nname = \"other\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"other.test\"]\n",
            w = wasm.display()
        ),
    );
    let server = a.start();
    let tls = a.client();
    let call = |host: &str, method: &str, path: &str, body: &[u8]| {
        text(a.call_as(host, &tls, method, path, None, body).unwrap())
    };

    // Key-value: each app sees its own namespace only.
    assert_eq!(call("notes.test", "PUT", "/kv/greeting", b"hello").0, 200);
    assert_eq!(call("notes.test", "PUT", "/kv/grocery", b"milk").0, 200);
    assert_eq!(call("notes.test", "PUT", "/kv/zebra", b"z").0, 200);
    let (status, body) = call("other.test", "GET", "/kv/greeting", b"");
    assert_eq!(status, 404, "another app's data is not visible: {body}");
    assert_eq!(call("other.test", "PUT", "/kv/greeting", b"other").0, 200);
    assert_eq!(
        call("notes.test", "GET", "/kv/greeting", b""),
        (200, "hello".into())
    );
    assert_eq!(
        call("notes.test", "GET", "/kv?prefix=gr", b""),
        (200, "greeting\ngrocery\n".into())
    );
    assert_eq!(call("notes.test", "DELETE", "/kv/zebra", b"").0, 200);
    assert_eq!(call("notes.test", "DELETE", "/kv/zebra", b"").0, 404);
    let long = format!("/kv/{}", "k".repeat(1025));
    let (status, body) = call("notes.test", "PUT", &long, b"v");
    assert_eq!(status, 400);
    assert!(body.contains("1 to 1024 bytes"), "{body}");

    // Keys: generated inside, used by name, never returned; nonces are the runtime's.
    assert_eq!(
        call("notes.test", "POST", "/keys/sig?alg=ecdsa-p256", b"").0,
        200
    );
    let (status, body) = call("notes.test", "POST", "/keys/sig?alg=ed25519", b"");
    assert_eq!(status, 409);
    assert!(body.contains("already named 'sig'"), "{body}");
    let (status, sig) = call("notes.test", "POST", "/keys/sig/sign", b"message");
    assert_eq!(status, 200, "{sig}");
    let (status, spki) = call("notes.test", "GET", "/keys/sig/public", b"");
    assert_eq!(status, 200, "{spki}");
    // The signature checks out with the public key alone, outside the runtime.
    let spki = hex::decode(spki.trim()).unwrap();
    let point = &spki[spki.len() - 65..];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
        .verify(b"message", &hex::decode(sig.trim()).unwrap())
        .expect("an ECDSA P-256 signature under the published key");
    let verify_path = format!("/keys/sig/verify?sig={}", sig.trim());
    assert_eq!(
        call("notes.test", "POST", &verify_path, b"message"),
        (200, "true\n".into())
    );
    assert_eq!(
        call("notes.test", "POST", &verify_path, b"messagf"),
        (200, "false\n".into())
    );
    let (status, body) = call("other.test", "GET", "/keys/sig/public", b"");
    assert_eq!(status, 404, "another app's key is not visible: {body}");
    let (status, body) = call("notes.test", "POST", "/keys/sig/encrypt", b"x");
    assert_eq!(status, 400);
    assert!(body.contains("cannot encrypt"), "{body}");

    assert_eq!(
        call("notes.test", "POST", "/keys/box?alg=aes256-gcm", b"").0,
        200
    );
    let (_, c1) = call("notes.test", "POST", "/keys/box/encrypt", b"secret");
    let (_, c2) = call("notes.test", "POST", "/keys/box/encrypt", b"secret");
    assert_ne!(c1, c2, "a fresh runtime-drawn nonce each time");
    assert_eq!(
        call(
            "notes.test",
            "POST",
            "/keys/box/decrypt",
            c1.trim().as_bytes()
        ),
        (200, "secret".into())
    );
    // The same name in another app is another key, and a ciphertext does not cross over.
    assert_eq!(
        call("other.test", "POST", "/keys/box?alg=aes256-gcm", b"").0,
        200
    );
    let (status, body) = call(
        "other.test",
        "POST",
        "/keys/box/decrypt",
        c1.trim().as_bytes(),
    );
    assert_eq!(status, 400);
    assert!(body.contains("decryption failed"), "{body}");
    // Key records are not in the app's key-value namespace.
    assert_eq!(
        call("notes.test", "GET", "/kv?prefix=", b""),
        (200, "greeting\ngrocery\n".into())
    );

    // Evidence over the app's data: the report data binds the app's name and the data, and
    // the quote verifies offline with the simulation root.
    let (status, body) = call("notes.test", "POST", "/attest", b"nonce-123");
    assert_eq!(status, 200, "{body}");
    let field = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .to_string()
    };
    assert_eq!(field("tee"), "sgx");
    assert_eq!(field("simulated"), "true");
    let mut expected = b"enclave-os/sdk/attestation/v1".to_vec();
    expected.extend_from_slice(&5u32.to_be_bytes());
    expected.extend_from_slice(b"notes");
    expected.extend_from_slice(b"nonce-123");
    let expected = hex::encode(ring::digest::digest(&ring::digest::SHA512, &expected));
    assert_eq!(field("report-data"), expected);
    let quote = tmp.path().join("app-quote.hex");
    std::fs::write(&quote, field("quote")).unwrap();
    let sim = tmp.path().join("state/sim");
    let (code, v) = json(&[
        "evidence",
        "verify",
        quote.to_str().unwrap(),
        "--trust-sim",
        sim.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v}");
    assert!(v.to_string().contains(&expected), "{v}");

    // A declared extension appears in the app's certificate, and in no other.
    assert_eq!(
        call("notes.test", "PUT", "/extension/7", b"build-42").0,
        200
    );
    let v = verify(&a, Some("notes.test"));
    assert_eq!(v["workload"]["declared"]["7"], hex::encode(b"build-42"));
    let v = verify(&a, Some("other.test"));
    assert!(v["workload"].get("declared").is_none(), "{v}");
    let (status, body) = call("notes.test", "PUT", "/extension/8", &[0u8; 5000]);
    assert_eq!(status, 400);
    assert!(body.contains("at most 4096 bytes"), "{body}");

    // After a restart: the data, the keys and the declaration are all still there.
    server.stop();
    let _server = a.start();
    let tls = a.client();
    let call = |host: &str, method: &str, path: &str, body: &[u8]| {
        text(a.call_as(host, &tls, method, path, None, body).unwrap())
    };
    assert_eq!(
        call("notes.test", "GET", "/kv/greeting", b""),
        (200, "hello".into())
    );
    assert_eq!(
        call("other.test", "GET", "/kv/greeting", b""),
        (200, "other".into())
    );
    assert_eq!(
        call("notes.test", "POST", &verify_path, b"message"),
        (200, "true\n".into())
    );
    assert_eq!(
        call(
            "notes.test",
            "POST",
            "/keys/box/decrypt",
            c2.trim().as_bytes()
        ),
        (200, "secret".into())
    );
    let v = verify(&a, Some("notes.test"));
    assert_eq!(v["workload"]["declared"]["7"], hex::encode(b"build-42"));
    assert_eq!(call("notes.test", "DELETE", "/extension/7", b"").0, 200);
    let v = verify(&a, Some("notes.test"));
    assert!(v["workload"].get("declared").is_none(), "{v}");

    // Nothing the apps stored is readable on disk.
    for entry in walk(&tmp.path().join("state")) {
        let bytes = std::fs::read(&entry).unwrap();
        for secret in [&b"hello"[..], b"milk", b"build-42"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "{} holds {:?} in clear",
                entry.display(),
                String::from_utf8_lossy(secret)
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn egress_reaches_servers_in_the_bundle_and_refuses_others_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (trusted_ca, chain, key) = test_pki("Egress Test CA");
    let (_, other_chain, other_key) = test_pki("Some Other CA");
    let trusted = https_server(chain, key, body("from the trusted upstream"), 4);
    let untrusted = https_server(other_chain, other_key, body("must not be read"), 4);
    std::fs::create_dir_all(tmp.path()).unwrap();
    std::fs::write(tmp.path().join("egress-ca.pem"), trusted_ca).unwrap();
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[egress]\nca_bundle = \"egress-ca.pem\"\n\
             [[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"hello.test\"]\n",
            component("hello.wasm").display()
        ),
    );
    let _server = a.start();
    let tls = a.client();
    let fetch = |url: String| {
        text(
            a.call_as(
                "hello.test",
                &tls,
                "GET",
                &format!("/fetch?url={url}"),
                None,
                b"",
            )
            .unwrap(),
        )
    };

    let (status, body) = fetch(format!("https://localhost:{trusted}/data"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "upstream answered 200\nfrom the trusted upstream");

    let (status, body) = fetch(format!("https://localhost:{untrusted}/data"));
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(&format!("TLS with localhost:{untrusted} failed"))
            && body.contains("not issued by a CA in the egress bundle"),
        "{body}"
    );

    let (status, body) = fetch(format!("http://localhost:{trusted}/data"));
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("egress is HTTPS only"), "{body}");

    // The operator sees the refusal too, with the host and not the path.
    let log = a.log();
    assert!(log.contains("outgoing request refused"), "{log}");
    assert!(!log.contains("/data"), "a path may carry secrets: {log}");
}

#[test]
fn compiled_code_is_cached_authenticated_and_a_tampered_entry_is_recompiled() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = component("hello.wasm");
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"hello.test\"]\n",
            wasm.display()
        ),
    );
    let hash = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &std::fs::read(&wasm).unwrap(),
    ));
    let entry = tmp.path().join(format!("state/wasm-cache/{hash}.cwasm"));
    let serves = |a: &Instance| {
        let tls = a.client();
        let (status, body) = text(
            a.call_as("hello.test", &tls, "GET", "/", None, b"")
                .unwrap(),
        );
        assert_eq!(
            (status, body.as_str()),
            (200, "hello from a WebAssembly component\n")
        );
    };

    let server = a.start();
    serves(&a);
    server.stop();
    assert!(entry.exists(), "the compiled code is cached by code hash");
    let first = std::fs::read(&entry).unwrap();
    assert!(
        !first
            .windows(27)
            .any(|w| w == b"from a WebAssembly componen"),
        "the cache entry is encrypted"
    );
    assert!(a.log().contains("compiled=\"now\""), "{}", a.log());

    // A restart uses the entry.
    let server = a.start();
    serves(&a);
    server.stop();
    assert!(a.log().contains("from the code cache"), "{}", a.log());

    // A tampered entry is refused and replaced by a fresh compilation; the app still serves,
    // and its certificate still attests the component as supplied.
    let mut bad = first.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(&entry, &bad).unwrap();
    let _server = a.start();
    serves(&a);
    assert!(
        a.log().contains("code cache entry failed authentication"),
        "{}",
        a.log()
    );
    assert_ne!(
        std::fs::read(&entry).unwrap(),
        bad,
        "the entry was rewritten"
    );
    let v = verify(&a, Some("hello.test"));
    assert_eq!(v["workload"]["code_digest"], hash.as_str());
}

/// Issue 11, item 1: a `jwks_url`'s key set is fetched once at start, through the egress bundle,
/// and committed: the root served is the root `measure --jwks` gives for exactly those bytes.
#[test]
fn a_jwks_url_is_fetched_at_start_and_committed_to_the_config_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, chain, key) = test_pki("JWKS Test CA");
    let jwks = std::fs::read_to_string(testdata("jwks.json")).unwrap();
    let idp = https_server(chain, key, body(&jwks), 1);
    std::fs::write(tmp.path().join("egress-ca.pem"), ca).unwrap();
    let a = Instance::new(tmp.path(), "[egress]\nca_bundle = \"egress-ca.pem\"\n");
    let text = std::fs::read_to_string(&a.config).unwrap().replace(
        &format!("jwks_file = \"{}\"", testdata("jwks.json").display()),
        &format!("jwks_url = \"https://localhost:{idp}/jwks\""),
    );
    assert!(text.contains("jwks_url"), "{text}");
    std::fs::write(&a.config, text).unwrap();

    let _server = a.start();
    let tls = a.client();
    let (status, body) = a
        .call(&tls, "PUT", "/api/v1/kv/k", Some(&token()), b"v")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = a.call(&tls, "GET", "/api/v1/status", None, b"").unwrap();
    assert_eq!(status, 200);
    let served = json_of(&body)["config_root"].clone();

    let fetched = tmp.path().join("fetched.json");
    let config = a.config.to_str().unwrap();
    std::fs::write(&fetched, &jwks).unwrap();
    let (code, v) = json(&["measure", config, "--jwks", fetched.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["root"], served);
    std::fs::write(&fetched, jwks.replace("ec-1", "host-1")).unwrap();
    let (_, v) = json(&["measure", config, "--jwks", fetched.to_str().unwrap()]);
    assert_ne!(v["root"], served);
}
