//! The control plane under contention, through the real binary on the simulated TEE: a change
//! that waits on a slow durable write (a witness that answers slowly) must not delay requests
//! to other workloads, and two loads racing for one hostname must not both win.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;
use common::instance::*;
use common::*;

/// A loopback TCP relay to `upstream` that, once `slow` is set, holds the next chunk going
/// upstream for `delay` before passing it on (and clears `slow`): a witness that answers one
/// round trip slowly.
struct SlowLink {
    port: u16,
    slow: Arc<AtomicBool>,
    /// Chunks held back so far.
    held: Arc<AtomicU64>,
}

impl SlowLink {
    fn new(upstream: u16, delay: Duration) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let slow = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let (s, h) = (slow.clone(), held.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (slow, held) = (s.clone(), h.clone());
                std::thread::spawn(move || pump(client, server, Some((slow, held, delay))));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Self { port, slow, held }
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    hold: Option<(Arc<AtomicBool>, Arc<AtomicU64>, Duration)>,
) {
    from.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((slow, held, delay)) = &hold
            && slow.swap(false, Ordering::SeqCst)
        {
            held.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(*delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

fn load_body(host: &str) -> String {
    let code = std::fs::read(testdata_wasm("hello.wasm")).unwrap();
    serde_json::json!({
        "kind": "wasm",
        "code_base64": base64::engine::general_purpose::STANDARD.encode(code),
        "hostnames": [host],
    })
    .to_string()
}

fn testdata_wasm(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/wasm")
        .join(name)
}

#[test]
fn a_load_waiting_on_a_slow_witness_does_not_delay_other_workloads() {
    const DELAY: Duration = Duration::from_secs(5);
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("operator-ca");
    let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for d in ["witness", "client"] {
        sim_pki(&tmp.path().join(d));
    }
    let ca_section = format!(
        "[ca]\ncertificate = \"{}\"\nkey = \"{}\"\n",
        ca.join("intermediary.crt.pem").display(),
        ca.join("intermediary.key.pem").display()
    );
    let root = ca.join("root.crt.pem");
    let witness_port = free_port();
    let witness = Instance::new(
        &tmp.path().join("witness"),
        &format!(
            "{ca_section}[witness]\nlisten = \"127.0.0.1:{witness_port}\"\nclients_root = \"{}\"\ntrust_sim = \"{}\"\n",
            root.display(),
            tmp.path().join("client/state/sim").display()
        ),
    );
    let link = SlowLink::new(witness_port, DELAY);
    let client = Instance::new(
        &tmp.path().join("client"),
        &format!(
            "{ca_section}[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://127.0.0.1:{}\"\nroot = \"{}\"\ntrust_sim = \"{}\"\nconfig_root = \"{}\"\n",
            link.port,
            root.display(),
            tmp.path().join("witness/state/sim").display(),
            {
                let (code, v) = json(&["measure", witness.config.to_str().unwrap()]);
                assert_eq!(code, 0, "{v}");
                v["root"].as_str().unwrap().to_string()
            }
        ),
    );
    let _w = witness.start();
    let _c = client.start();
    let tls = client.client();
    let t = token();
    let put = |name: &str, host: &str| {
        client
            .call(
                &tls,
                "PUT",
                &format!("/api/v1/workloads/{name}"),
                Some(&t),
                load_body(host).as_bytes(),
            )
            .unwrap()
    };
    let (status, body) = put("fast", "fast.test");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _) = client
        .call_as("fast.test", &tls, "GET", "/", None, b"")
        .unwrap();
    assert_eq!(status, 200);

    // The next write to the witness waits DELAY, and a load is a write.
    link.slow.store(true, Ordering::SeqCst);
    let loading = {
        let (client_dir, tls, t) = (client.dir.clone(), tls.clone(), t.clone());
        let port = client.port;
        std::thread::spawn(move || {
            let c = Instance {
                dir: client_dir.clone(),
                config: client_dir.join("enclave.toml"),
                port,
            };
            let body = load_body("slow.test");
            let started = Instant::now();
            let r = c
                .call(
                    &tls,
                    "PUT",
                    "/api/v1/workloads/slow",
                    Some(&t),
                    body.as_bytes(),
                )
                .unwrap();
            (r, started.elapsed())
        })
    };
    // Wait until the load's write is actually held at the link.
    let deadline = Instant::now() + Duration::from_secs(60);
    while link.held.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the load never reached the witness"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Requests to the other workload are answered while the write waits.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, _) = client
            .call_as("fast.test", &tls, "GET", "/", None, b"")
            .unwrap();
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < DELAY / 2,
            "a request to another workload took {:?} while a load waited on the witness",
            started.elapsed()
        );
    }
    assert!(
        !loading.is_finished(),
        "the load finished before the requests: the witness was not slow enough to show anything"
    );
    // So is the public status, which reads the same snapshot.
    let (status, _) = client
        .call(&tls, "GET", "/api/v1/status", None, b"")
        .unwrap();
    assert_eq!(status, 200);

    let ((status, body), took) = loading.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        took >= DELAY,
        "the load took {took:?}, less than the witness's delay"
    );
    let (status, _) = client
        .call_as("slow.test", &tls, "GET", "/", None, b"")
        .unwrap();
    assert_eq!(status, 200, "the slow load is served once durable");
}

#[test]
fn two_loads_racing_for_one_hostname_have_exactly_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let _server = a.start();
    let tls = a.client();
    let t = token();
    for round in 0..3 {
        let host = format!("contested{round}.test");
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|side| {
                let (barrier, tls, t) = (barrier.clone(), tls.clone(), t.clone());
                let c = Instance {
                    dir: a.dir.clone(),
                    config: a.config.clone(),
                    port: a.port,
                };
                let body = load_body(&host);
                let name = format!("{side}{round}");
                std::thread::spawn(move || {
                    barrier.wait();
                    let (status, body) = c
                        .call(
                            &tls,
                            "PUT",
                            &format!("/api/v1/workloads/{name}"),
                            Some(&t),
                            body.as_bytes(),
                        )
                        .unwrap();
                    (name, status, body)
                })
            })
            .collect();
        let mut results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        results.sort_by_key(|(_, status, _)| *status);
        let statuses: Vec<u16> = results.iter().map(|(_, s, _)| *s).collect();
        assert_eq!(statuses, [200, 409], "{results:?}");
        let (winner, _, _) = &results[0];
        let (_, _, refusal) = &results[1];
        let reason = json_of(refusal)["error"].as_str().unwrap().to_string();
        assert!(
            reason.contains(&format!(
                "hostname '{host}' is served by workload '{winner}'"
            )),
            "{reason}"
        );
        // One workload holds the name, and the loser was not kept.
        let (_, status) = a.call(&tls, "GET", "/api/v1/workloads", None, b"").unwrap();
        let list = json_of(&status);
        let holders: Vec<_> = list["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| {
                w["hostnames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h == &host)
            })
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(holders, std::slice::from_ref(winner));
    }
}

#[test]
fn every_listen_address_is_served_and_named_in_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let a = Instance::new(tmp.path(), "");
    // `listen` is a top-level key, so it goes before the tables Instance wrote.
    let text = std::fs::read_to_string(&a.config).unwrap();
    std::fs::write(
        &a.config,
        format!("listen = [\"127.0.0.1:{p1}\", \"127.0.0.2:{p2}\"]\n{text}"),
    )
    .unwrap();
    let child = std::process::Command::new(BIN)
        .args(["run", a.config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(a.log_path()).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (ip, port) in [("127.0.0.1", p1), ("127.0.0.2", p2)] {
        while TcpStream::connect((ip, port)).is_err() {
            assert!(server.0.try_wait().unwrap().is_none(), "{}", a.log());
            assert!(
                Instant::now() < deadline,
                "{ip}:{port} not served: {}",
                a.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    // Both answer over RA-TLS, with the certificate naming the address each was reached by.
    let tls = a.client();
    for (ip, port) in [("127.0.0.1", p1), ("127.0.0.2", p2)] {
        let tcp = TcpStream::connect((ip, port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls_pki_types::ServerName::try_from(ip.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        write!(
            s,
            "GET /api/v1/status HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{ip}:{port}: {text}");
    }
    let _ = server.0.kill();
}
