//! What a client can make the runtime hold, attacked through the real binary over RA-TLS on the
//! simulated TEE: a request head that never ends, idle connections past the witness's cap, a
//! flood of challenge-mode handshakes, made-up methods in the metrics, bodies over the limit
//! sent to a workload, and a client that stops reading a workload's response.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::instance::*;
use common::*;

fn component(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/wasm")
        .join(name)
}

/// A TLS connection to `i`, handshake done, for `host`.
fn tls_stream(
    i: &Instance,
    tls: &Arc<rustls::ClientConfig>,
    host: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", i.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// Read until the peer closes (or sends a complete response and closes); what was read. An
/// error here (a read timeout) means the server held the connection open.
fn read_until_closed(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(out),
        // rustls reports a peer that closed without close_notify as this.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(e),
    }
}

#[test]
fn a_request_head_that_never_ends_and_an_idle_connection_are_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "[limits]\nheader_timeout_secs = 1\n");
    let _server = a.start();
    let tls = a.client();

    // Half a request head, then nothing: closed after the header timeout, not held.
    let mut s = tls_stream(&a, &tls, "127.0.0.1");
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let reply = read_until_closed(&mut s).expect("the server held a half-sent request head");
    let text = String::from_utf8_lossy(&reply);
    assert!(!text.contains(" 200 "), "{text}");

    // A keep-alive connection that sends nothing after its first response is closed too.
    let mut s = tls_stream(&a, &tls, "127.0.0.1");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let reply = read_until_closed(&mut s).expect("the server held an idle connection");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[test]
fn connections_past_the_witness_listeners_share_for_one_source_are_dropped_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("operator-ca");
    let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let witness_port = free_port();
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[limits]\nmax_witness_connections = 8\n\
             [witness]\nlisten = \"127.0.0.1:{witness_port}\"\nclients_root = \"{}\"\n",
            ca.join("root.crt.pem").display()
        ),
    );
    let _server = a.start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", witness_port)).is_err() {
        assert!(Instant::now() < deadline, "the witness listener is not up");
        std::thread::sleep(Duration::from_millis(25));
    }
    // Wait for the probe connection above to be let go (its handshake never started, so it
    // ends at EOF at once).
    std::thread::sleep(Duration::from_millis(300));
    // Two connections that never start a handshake hold this source's share (a quarter of the
    // eight slots, crates/runtime/src/admission.rs)...
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", witness_port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // ... so a third is closed at once, without waiting for the handshake timeout.
    let mut third = TcpStream::connect(("127.0.0.1", witness_port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = third
        .read(&mut buf)
        .expect("the third connection was held, not dropped");
    assert_eq!(n, 0);
    drop(held);

    let tls = a.client();
    let (status, body) = a
        .call(&tls, "GET", "/metrics", Some(&token()), b"")
        .unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    let refused = metric(&metrics, "enclave_os_connections_refused_total");
    assert!(refused >= 1, "{metrics}");
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_flood_of_challenge_handshakes_is_bounded_and_plain_requests_still_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "[limits]\nmax_challenge_handshakes = 1\n");
    let _server = a.start();
    let tls = a.client();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let (a, tls, stop) = (&a, &tls, &stop);
            scope.spawn(move || {
                // Each handshake offers a fresh nonce; the flood does not check the answer (an
                // attacker would not), it only makes the server issue.
                for n in 0..200u16 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let mut config = (**tls).clone();
                    let nonce = [t, (n >> 8) as u8, n as u8, 0x5a];
                    config.alpn_protocols = vec![enclave_ratls::tls::nonce_alpn(&nonce)];
                    let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", a.port)) else {
                        continue;
                    };
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
                    while conn.is_handshaking() {
                        if conn.complete_io(&mut tcp).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        // Under the flood, another client's plain requests complete.
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..5 {
            let (status, body) = a.call(&tls, "GET", "/api/v1/status", None, b"").unwrap();
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let (status, body) = a
        .call(&tls, "GET", "/metrics", Some(&token()), b"")
        .unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metric(&metrics, "enclave_os_challenges_issued_total") >= 1,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "enclave_os_challenges_refused_total") >= 1,
        "eight clients against one issuing slot and one waiting: some must be refused\n{metrics}"
    );
}

#[test]
fn made_up_methods_are_counted_as_other_and_refused_in_json() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let _server = a.start();
    let tls = a.client();
    for m in ["FOOBAR", "XYZZY1", "XYZZY2"] {
        let (status, body) = a.call(&tls, m, "/api/v1/status", None, b"").unwrap();
        assert_eq!(status, 405);
        // The refusal is JSON with a reason, like every other.
        let reason = json_of(&body)["error"].as_str().unwrap().to_string();
        assert!(
            reason.contains(&format!("{m} is not served at /api/v1/status")),
            "{reason}"
        );
    }
    // So is axum's own rejection of a path that is not UTF-8.
    let (status, body) = a
        .call(
            &tls,
            "GET",
            "/.well-known/enclave-os/proof/%FF%FE",
            None,
            b"",
        )
        .unwrap();
    assert_eq!(status, 400);
    assert!(
        json_of(&body)["error"].as_str().unwrap().contains("UTF-8"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, body) = a
        .call(&tls, "GET", "/metrics", Some(&token()), b"")
        .unwrap();
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        !metrics.contains("FOOBAR") && !metrics.contains("XYZZY"),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

#[test]
fn a_workload_request_over_max_request_bytes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[limits]\nmax_request_bytes = 1024\n\
             [[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"hello.test\"]\n",
            component("hello.wasm").display()
        ),
    );
    let _server = a.start();
    let tls = a.client();
    let (status, body) = a
        .call_as("hello.test", &tls, "PUT", "/echo", None, &[b'x'; 512])
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = a
        .call_as("hello.test", &tls, "PUT", "/echo", None, &[b'x'; 4096])
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("4096 bytes") && text.contains("max_request_bytes allows 1024"),
        "{text}"
    );

    // Without a declared length the body is cut off at the limit: the component never gets
    // more than 1024 bytes, so it cannot echo 4096 back.
    let mut s = tls_stream(&a, &tls, "hello.test");
    s.write_all(
        b"PUT /echo HTTP/1.1\r\nHost: hello.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let chunk = [b'y'; 4096];
    let _ = write!(s, "{:x}\r\n", chunk.len());
    let _ = s.write_all(&chunk);
    let _ = s.write_all(b"\r\n0\r\n\r\n");
    let reply = read_until_closed(&mut s).unwrap_or_default();
    let text = String::from_utf8_lossy(&reply);
    assert!(!text.contains(&"y".repeat(2048)), "{text}");
}

#[test]
fn a_client_that_stops_reading_frees_its_instance_slot_at_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(
        tmp.path(),
        &format!(
            "[limits]\nmax_wasm_instances = 1\nmax_request_bytes = 67108864\n\
             [[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"hello.test\"]\n\
             [workload.limits]\nrequest_timeout_ms = 1000\nmemory_bytes = 268435456\n",
            component("hello.wasm").display()
        ),
    );
    let _server = a.start();
    let tls = a.client();
    // 32 MiB to echo: far more than the socket buffers hold, so the component blocks writing
    // its response to a client that reads none of it.
    let size = 32 << 20;
    let mut stalled = tls_stream(&a, &tls, "hello.test");
    write!(
        stalled,
        "PUT /echo HTTP/1.1\r\nHost: hello.test\r\nContent-Length: {size}\r\n\r\n"
    )
    .unwrap();
    stalled.write_all(&vec![b'z'; size]).unwrap();
    stalled.flush().unwrap();
    // Past the app's deadline: the stalled exchange is over and its slot is free, so the one
    // slot serves the next request instead of a 503.
    std::thread::sleep(Duration::from_millis(2500));
    let (status, body) = a
        .call_as("hello.test", &tls, "GET", "/", None, b"")
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    drop(stalled);
}

#[test]
fn a_client_that_pipelines_requests_and_never_reads_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(
        tmp.path(),
        "[limits]\nwrite_stall_secs = 1\nheader_timeout_secs = 30\n",
    );
    let _server = a.start();
    let tls = a.client();
    let mut s = tls_stream(&a, &tls, "127.0.0.1");
    // 8000 pipelined requests for the manifest: megabytes of answers, far more than the socket
    // buffers hold while the client reads nothing.
    let one = b"GET /.well-known/enclave-os/manifest HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let requests: Vec<u8> = one.iter().copied().cycle().take(one.len() * 8000).collect();
    s.write_all(&requests).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // Now read what there is: the server gave up on the stalled writes and closed, so far fewer
    // than 8000 answers arrive. (Without the limit all 8000 would, once reading starts.)
    s.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    // Until the server closes, or (had it kept the connection) nothing more comes for 5 s.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    let answers = reply
        .windows(b"HTTP/1.1 200".len())
        .filter(|w| *w == b"HTTP/1.1 200")
        .count();
    assert!(answers < 8000, "all {answers} answers were sent");
}

#[test]
fn one_source_holds_at_most_its_share_of_the_listener_when_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let i = Instance::new(tmp.path(), "[limits]\nmax_connections_per_source = 2\n");
    let _server = i.start();
    // `start` probed the port; let that connection go.
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", i.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third from the same address is closed at once, before any handshake.
    let mut third = TcpStream::connect(("127.0.0.1", i.port)).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 1];
    let n = third
        .read(&mut buf)
        .expect("the third connection was held, not dropped");
    assert_eq!(n, 0);
    // Once the two go, the address is served again.
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let tls = i.client();
    let (status, _) = i.call(&tls, "GET", "/healthz", None, b"").unwrap();
    assert_eq!(status, 200);
}
