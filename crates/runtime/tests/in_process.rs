//! The runtime in this process, on a listener bound before it started (`enclave-testkit`):
//! the control plane's guarantees, through the real listener, TLS and API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};

use base64::Engine;
use enclave_testkit::runtime::InProcess;
use enclave_testkit::{testdata, token};

fn config() -> String {
    format!(
        "tee = \"sim-sgx\"\nseal_policy = \"signer\"\nstate_dir = \"state\"\n\
         [oidc]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n",
        token::ISSUER,
        token::AUDIENCE,
        testdata("oidc/jwks.json").display()
    )
}

fn load_body(host: &str) -> Vec<u8> {
    let code = std::fs::read(testdata("wasm/hello.wasm")).unwrap();
    serde_json::json!({
        "kind": "wasm",
        "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
        "hostnames": [host],
    })
    .to_string()
    .into_bytes()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

/// `PUT /api/v1/workloads/<name>` with `body`, as the operator: it must succeed. Its answer.
fn load(
    rt: &InProcess,
    tls: &Arc<rustls::ClientConfig>,
    name: &str,
    body: &[u8],
) -> serde_json::Value {
    let path = format!("/api/v1/workloads/{name}");
    let (status, answer) = rt
        .call(
            tls,
            "127.0.0.1",
            "PUT",
            &path,
            Some(&token::operator()),
            body,
        )
        .unwrap();
    assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&answer));
    json(&answer)
}

/// A runtime for the async clients of a test (the runtime under test runs on its own).
fn async_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<hyper::body::Bytes>>;

/// A keep-alive HTTP/1.1 connection over RA-TLS to `rt`, verifying `server_name` (an IP address
/// sends no SNI): the request sender, and the leaf the server presented.
async fn keep_alive(
    rt: &InProcess,
    tls: &Arc<rustls::ClientConfig>,
    server_name: &str,
) -> (
    Sender,
    rustls_pki_types::CertificateDer<'static>,
    Option<rustls::HandshakeKind>,
) {
    let tcp = tokio::net::TcpStream::connect(rt.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .unwrap();
    let session = stream.get_ref().1;
    let leaf = session.peer_certificates().unwrap()[0].clone();
    let kind = session.handshake_kind();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    (sender, leaf, kind)
}

/// `GET path` with `host` as the Host header.
fn get(host: &str, path: &str) -> hyper::Request<http_body_util::Empty<hyper::body::Bytes>> {
    hyper::Request::get(path)
        .header("host", host)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap()
}

/// Loads racing for one hostname are applied one after the other by the one writer: of N, one
/// wins and N-1 are told which workload holds the name; none is kept half-way.
#[test]
fn of_many_loads_racing_for_one_hostname_exactly_one_wins() {
    const RACERS: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let rt = Arc::new(InProcess::start(tmp.path(), &config()).unwrap());
    let tls = rt.client().unwrap();
    let t = token::operator();
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let (rt, tls, t, barrier) = (rt.clone(), tls.clone(), t.clone(), barrier.clone());
            std::thread::spawn(move || {
                let body = load_body("contested.test");
                barrier.wait();
                let name = format!("racer{i}");
                let path = format!("/api/v1/workloads/{name}");
                let (status, body) = rt
                    .call(&tls, "127.0.0.1", "PUT", &path, Some(&t), &body)
                    .unwrap();
                (name, status, body)
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter(|(_, s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].0.clone();
    for (name, status, body) in &results {
        if *name == winner {
            continue;
        }
        assert_eq!(*status, 409, "{name}: {}", String::from_utf8_lossy(body));
        let reason = json(body)["error"].as_str().unwrap().to_string();
        assert!(
            reason.contains(&format!(
                "hostname 'contested.test' is served by workload '{winner}'"
            )),
            "{reason}"
        );
    }
    // Only the winner is listed, and it answers on the name.
    let (_, list) = rt
        .call(&tls, "127.0.0.1", "GET", "/api/v1/workloads", None, b"")
        .unwrap();
    let names: Vec<String> = json(&list)["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, [winner]);
    let (status, _) = rt
        .call(&tls, "contested.test", "GET", "/", None, b"")
        .unwrap();
    assert_eq!(status, 200);
}

/// A workload loaded through the API survives a restart, read back from its versioned sealed
/// record, and serves at once.
#[test]
fn a_loaded_workload_comes_back_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = {
        let rt = InProcess::start(tmp.path(), &config()).unwrap();
        let tls = rt.client().unwrap();
        let answer = load(&rt, &tls, "kept", &load_body("kept.test"));
        let root = answer["config_root"].as_str().unwrap().to_string();
        rt.stop().unwrap();
        root
    };
    let rt = InProcess::start(tmp.path(), &config()).unwrap();
    let tls = rt.client().unwrap();
    let (_, status) = rt
        .call(&tls, "127.0.0.1", "GET", "/api/v1/status", None, b"")
        .unwrap();
    let status = json(&status);
    assert_eq!(status["config_root"], root.as_str());
    assert_eq!(status["workloads"][0]["name"], "kept");
    assert_eq!(status["workloads"][0]["health"], "serving");
    let (code, _) = rt.call(&tls, "kept.test", "GET", "/", None, b"").unwrap();
    assert_eq!(code, 200);
}

/// A component with a custom section appended: another code hash, the same behaviour.
fn variant(code: &[u8], tag: &[u8]) -> Vec<u8> {
    let name = b"enclave-os-test";
    let mut payload = vec![u8::try_from(name.len()).unwrap()];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag);
    let mut out = code.to_vec();
    out.push(0); // a custom section
    out.push(u8::try_from(payload.len()).unwrap()); // its size, one LEB128 byte
    out.extend_from_slice(&payload);
    out
}

fn load_code(host: &str, code: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "kind": "wasm",
        "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
        "hostnames": [host],
        "limits": { "request_timeout_ms": 60000 },
    })
    .to_string()
    .into_bytes()
}

/// A request still running in a component that was replaced since cannot put its claims into
/// the successor's certificate: the declaration carries the declaring code's hash, and only
/// the code served under the name may declare.
#[test]
fn a_replaced_component_cannot_declare_into_its_successors_certificate() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let rt = InProcess::start(tmp.path(), &config()).unwrap();
    let tls = rt.client().unwrap();
    let t = token::operator();
    let sdk = std::fs::read(testdata("wasm/sdk.wasm")).unwrap();
    let put = |code: &[u8]| {
        rt.call(
            &tls,
            "127.0.0.1",
            "PUT",
            "/api/v1/workloads/app",
            Some(&t),
            &load_code("app.test", code),
        )
        .unwrap()
    };
    let (status, body) = put(&sdk);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // A declaration whose body is still arriving, in the first component.
    let claim = b"STALE-CLAIM";
    let tcp = std::net::TcpStream::connect(rt.addr()).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("app.test").unwrap();
    let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    let mut slow = rustls::StreamOwned::new(conn, tcp);
    write!(
        slow,
        "PUT /extension/7 HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        claim.len()
    )
    .unwrap();
    slow.write_all(&claim[..1]).unwrap();
    slow.flush().unwrap();
    // Let the request reach the component before it is replaced.
    std::thread::sleep(std::time::Duration::from_millis(500));

    let successor = variant(&sdk, b"successor");
    let (status, body) = put(&successor);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    slow.write_all(&claim[1..]).unwrap();
    slow.flush().unwrap();
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 400") && text.contains("was replaced"),
        "{text}"
    );

    // The successor's certificate carries no claim of its predecessor.
    let (_, status) = rt
        .call(&tls, "127.0.0.1", "GET", "/api/v1/status", None, b"")
        .unwrap();
    let served = json(&status)["workloads"][0]["code_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let tcp = std::net::TcpStream::connect(rt.addr()).unwrap();
    let name = rustls_pki_types::ServerName::try_from("app.test").unwrap();
    let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    let mut tcp = tcp;
    conn.complete_io(&mut tcp).unwrap();
    let leaf = conn.peer_certificates().unwrap()[0].to_vec();
    let hex_leaf = leaf.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let hex_claim = claim.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(
        !hex_leaf.contains(&hex_claim),
        "the certificate of code {served} carries the replaced component's claim"
    );
    // The successor itself may declare.
    let (status, body) = rt
        .call(&tls, "app.test", "PUT", "/extension/7", None, b"fresh")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// A workload kept from the API is held at start to every check a load passes, against the
/// file as it is now: one whose hostname the file (or the management API) now claims is parked,
/// neither served nor committed, and can still be unloaded.
#[test]
fn a_kept_workload_that_lost_its_hostname_is_parked_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let t = token::operator();
    {
        let rt = InProcess::start(tmp.path(), &config()).unwrap();
        let tls = rt.client().unwrap();
        for (name, hosts) in [("grab", vec!["pay.test"]), ("ops", vec!["ops.test"])] {
            let body = serde_json::json!({
                "kind": "wasm",
                "code_base64": base64::engine::general_purpose::STANDARD
                    .encode(std::fs::read(testdata("wasm/sdk.wasm")).unwrap()),
                "hostnames": hosts,
            })
            .to_string();
            let path = format!("/api/v1/workloads/{name}");
            let (status, body) = rt
                .call(&tls, "127.0.0.1", "PUT", &path, Some(&t), body.as_bytes())
                .unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        }
        rt.stop().unwrap();
    }
    // The file now gives pay.test to a workload of its own, and ops.test to the management API.
    let changed = format!(
        "{}[management]\nhostname = \"ops.test\"\n[[workload]]\nname = \"pay\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"pay.test\"]\n",
        config(),
        testdata("wasm/hello.wasm").display()
    );
    let rt = InProcess::start(tmp.path(), &changed).unwrap();
    let tls = rt.client().unwrap();
    let (_, body) = rt.call(&tls, "pay.test", "GET", "/", None, b"").unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("hello"),
        "pay.test is the file's workload: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = rt
        .call(
            &tls,
            "ops.test",
            "GET",
            "/api/v1/status/detail",
            Some(&t),
            b"",
        )
        .unwrap();
    assert_eq!(
        status,
        200,
        "ops.test is the management API: {}",
        String::from_utf8_lossy(&body)
    );
    let detail = json(&body);
    let names: Vec<&str> = detail["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pay"]);
    let parked = detail["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 2, "{detail}");
    assert!(
        parked[0]["reason"]
            .as_str()
            .unwrap()
            .contains("hostname 'pay.test' is served by workload 'pay'"),
        "{detail}"
    );
    assert!(
        parked[1]["reason"]
            .as_str()
            .unwrap()
            .contains("reserved for the management API"),
        "{detail}"
    );
    // Not committed: the manifest has no leaf of theirs.
    let (_, manifest) = rt
        .call(
            &tls,
            "127.0.0.1",
            "GET",
            "/.well-known/enclave-os/manifest",
            None,
            b"",
        )
        .unwrap();
    let manifest = String::from_utf8_lossy(&manifest).to_string();
    assert!(!manifest.contains("workload/grab/"), "{manifest}");
    // And it can be unloaded; the record is gone after a restart.
    let (status, body) = rt
        .call(
            &tls,
            "127.0.0.1",
            "DELETE",
            "/api/v1/workloads/grab",
            Some(&t),
            b"",
        )
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    rt.stop().unwrap();
    let rt = InProcess::start(tmp.path(), &changed).unwrap();
    let tls = rt.client().unwrap();
    let (_, body) = rt
        .call(
            &tls,
            "ops.test",
            "GET",
            "/api/v1/status/detail",
            Some(&t),
            b"",
        )
        .unwrap();
    let detail = json(&body);
    let parked: Vec<&str> = detail["parked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parked, ["ops"]);
}

/// A keep-alive connection attested for one workload is never served by another: after an
/// unload and a load on the same name, its next request is refused (421), and a new
/// connection, which cannot resume the old TLS session, is shown the new certificate.
#[test]
fn a_connection_attested_for_one_workload_is_not_served_by_its_replacement() {
    use http_body_util::BodyExt;
    let tmp = tempfile::tempdir().unwrap();
    let rt = InProcess::start(tmp.path(), &config()).unwrap();
    let tls = rt.client().unwrap();
    let t = token::operator();
    let api = |method: &str, path: &str, body: &[u8]| {
        let (status, body) = rt
            .call(&tls, "127.0.0.1", method, path, Some(&t), body)
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    };
    let sdk = std::fs::read(testdata("wasm/sdk.wasm")).unwrap();
    let hello = std::fs::read(testdata("wasm/hello.wasm")).unwrap();
    api(
        "PUT",
        "/api/v1/workloads/first",
        &load_code("app.test", &sdk),
    );

    let runtime = async_runtime();
    runtime.block_on(async {
        let (mut sender, first_leaf, _) = keep_alive(&rt, &tls, "app.test").await;
        let r = sender.send_request(get("app.test", "/kv")).await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.into_body().collect().await;

        // Another workload takes the name.
        let (api_tls, t2) = (tls.clone(), t.clone());
        let rt_ref = &rt;
        tokio::task::block_in_place(|| {
            for (method, path, body) in [
                ("DELETE", "/api/v1/workloads/first", Vec::new()),
                (
                    "PUT",
                    "/api/v1/workloads/second",
                    load_code("app.test", &hello),
                ),
            ] {
                let (status, body) = rt_ref
                    .call(&api_tls, "127.0.0.1", method, path, Some(&t2), &body)
                    .unwrap();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            }
        });
        let r = sender.send_request(get("app.test", "/")).await.unwrap();
        assert_eq!(r.status(), 421);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("workload 'second' changed"),
            "{}",
            String::from_utf8_lossy(&body)
        );

        // A new connection does not resume the session made under the old certificate: it
        // is shown the new one, and is served.
        let (mut sender, leaf, kind) = keep_alive(&rt, &tls, "app.test").await;
        assert_eq!(kind, Some(rustls::HandshakeKind::Full));
        assert_ne!(leaf, first_leaf);
        let r = sender.send_request(get("app.test", "/")).await.unwrap();
        assert_eq!(r.status(), 200);
    });
}

/// Any client an app lets through can make it change its declarations, and each change costs a
/// durable write and a certificate: an app gets a burst of eight, then one every two seconds,
/// and the API's changes never queue behind its churn.
#[test]
fn an_app_that_churns_its_declarations_is_held_to_a_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = InProcess::start(tmp.path(), &config()).unwrap();
    let tls = rt.client().unwrap();
    let sdk = std::fs::read(testdata("wasm/sdk.wasm")).unwrap();
    load(&rt, &tls, "app", &load_code("app.test", &sdk));
    let declare = |i: usize| {
        rt.call(
            &tls,
            "app.test",
            "PUT",
            "/extension/1",
            None,
            format!("v{i}").as_bytes(),
        )
        .unwrap()
    };
    for i in 0..8 {
        let (status, body) = declare(i);
        assert_eq!(
            status,
            200,
            "change {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, body) = declare(8);
    let text = String::from_utf8_lossy(&body);
    assert_ne!(status, 200, "{text}");
    assert!(text.contains("too often"), "{text}");
    // The same value again is no change, and costs nothing.
    let (status, body) = declare(7);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The operator's changes go through meanwhile.
    load(&rt, &tls, "other", &load_code("other.test", &sdk));
}

/// An app's declaration reissues only that app's certificate: it leaves the tree, and so the
/// enclave-wide certificate, as they were, and must not end other clients' connections. A
/// connection routed by Host (no SNI) to another workload keeps being served.
#[test]
fn a_declaration_does_not_disturb_other_workloads_connections() {
    use http_body_util::BodyExt;
    let tmp = tempfile::tempdir().unwrap();
    let rt = InProcess::start(tmp.path(), &config()).unwrap();
    let tls = rt.client().unwrap();
    let sdk = std::fs::read(testdata("wasm/sdk.wasm")).unwrap();
    let hello = std::fs::read(testdata("wasm/hello.wasm")).unwrap();
    for (name, host, code) in [
        ("notes", "notes.test", &sdk),
        ("hello", "hello.test", &hello),
    ] {
        load(&rt, &tls, name, &load_code(host, code));
    }
    let (_, before) = rt
        .call(&tls, "127.0.0.1", "GET", "/api/v1/status", None, b"")
        .unwrap();
    let runtime = async_runtime();
    runtime.block_on(async {
        // An IP address as the server name: no SNI is sent, so the Host header routes.
        let (mut sender, _, _) = keep_alive(&rt, &tls, "127.0.0.1").await;
        let r = sender.send_request(get("hello.test", "/")).await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.into_body().collect().await;
        let rt_ref = &rt;
        let tls2 = tls.clone();
        tokio::task::block_in_place(|| {
            let (status, body) = rt_ref
                .call(&tls2, "notes.test", "PUT", "/extension/3", None, b"claim")
                .unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        });
        let r = sender.send_request(get("hello.test", "/")).await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "a declaration by another app ended this connection"
        );
    });
    let (_, after) = rt
        .call(&tls, "127.0.0.1", "GET", "/api/v1/status", None, b"")
        .unwrap();
    assert_eq!(json(&before)["config_root"], json(&after)["config_root"]);
}
