//! The client against a real TLS server on loopback: what it sends, how it reads chunked and
//! sized bodies, and how it refuses (a body over the limit, a deadline, a URL, a certificate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enclave_http::{Client, Error, Method, Phase, Request, StatusCode, Uri};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a leaf it issued for `localhost` and 127.0.0.1: (CA DER, leaf chain, leaf key).
fn pki() -> (
    CertificateDer<'static>,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
) {
    let p = enclave_testkit::pki::TestPki::new("enclave-http test CA");
    (p.ca_der, p.chain, p.key)
}

fn client_trusting(ca: CertificateDer<'static>) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    Client::new(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// What the server does with one connection, after the TLS handshake.
enum Script {
    /// Read the request, write these bytes, close.
    Answer(Vec<u8>),
    /// Read the request, then say nothing for this long.
    Silent(Duration),
    /// Read the request, write the first bytes, wait, write the rest, close.
    Trickle(Vec<u8>, Duration, Vec<u8>),
}

/// A TLS server on loopback serving one connection per script entry (bounded: 10 s of read
/// timeout each); joined, the requests it read, head and body.
fn serve(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    scripts: Vec<Script>,
) -> (u16, JoinHandle<Vec<Vec<u8>>>) {
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for script in scripts {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            if tls.read_exact(&mut body).is_ok() {
                request.extend_from_slice(&body);
            }
            seen.push(request);
            match script {
                Script::Answer(bytes) => {
                    let _ = tls.write_all(&bytes);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
                Script::Silent(d) => std::thread::sleep(d),
                Script::Trickle(first, pause, rest) => {
                    let _ = tls.write_all(&first);
                    let _ = tls.flush();
                    std::thread::sleep(pause);
                    let _ = tls.write_all(&rest);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        }
        seen
    });
    (port, handle)
}

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

#[test]
fn sends_one_request_and_reads_a_chunked_answer() {
    let (ca, chain, key) = pki();
    let answer = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
                   5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n"
        .to_vec();
    let (port, server) = serve(chain, key, vec![Script::Answer(answer)]);
    let request = Request::new(
        Method::PUT,
        uri(&format!("https://localhost:{port}/api/v1/kv/k?x=1")),
    )
    .bearer("tok.en")
    .unwrap()
    .json(&b"{\"v\":2}"[..]);
    let response = client_trusting(ca).send_blocking(request).unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.body, b"{\"a\": 1}");
    let seen = String::from_utf8(server.join().unwrap().remove(0)).unwrap();
    let lower = seen.to_ascii_lowercase();
    assert!(
        seen.lines().next() == Some("PUT /api/v1/kv/k?x=1 HTTP/1.1"),
        "{seen}"
    );
    assert!(
        lower.contains(&format!("host: localhost:{port}\r\n")),
        "{seen}"
    );
    assert!(lower.contains("authorization: bearer tok.en\r\n"), "{seen}");
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "{seen}"
    );
    assert!(lower.contains("content-length: 7\r\n"), "{seen}");
    assert!(lower.contains("connection: close\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n\r\n{\"v\":2}"), "{seen}");
}

#[test]
fn a_body_over_the_limit_is_refused_whether_declared_or_streamed() {
    let (ca, chain, key) = pki();
    let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 2048\r\n\r\n".to_vec();
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        chunked.extend_from_slice(b"100\r\n");
        chunked.extend_from_slice(&[b'x'; 256]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut exact = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n".to_vec();
    exact.extend_from_slice(&[b'y'; 1024]);
    let (port, server) = serve(
        chain,
        key,
        vec![
            Script::Answer(sized),
            Script::Answer(chunked),
            Script::Answer(exact),
        ],
    );
    let client = client_trusting(ca).max_body(1024);
    let url = format!("https://127.0.0.1:{port}/jwks");
    for declared in [Some(2048), None] {
        match client.send_blocking(Request::get(uri(&url))) {
            Err(e @ Error::BodyTooLarge { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with(&url), "{text}");
                assert!(text.contains("1024-byte limit"), "{text}");
                assert!(
                    matches!(e, Error::BodyTooLarge { declared: d, .. } if d == declared),
                    "{e:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Exactly at the limit is read.
    let r = client.send_blocking(Request::get(uri(&url))).unwrap();
    assert_eq!(r.body.len(), 1024);
    server.join().unwrap();
}

#[test]
fn a_silent_server_times_out_in_the_exchange_and_a_mute_one_in_the_handshake() {
    let (ca, chain, key) = pki();
    let (port, server) = serve(chain, key, vec![Script::Silent(Duration::from_secs(1))]);
    let client = client_trusting(ca)
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_millis(400));
    let url = format!("https://localhost:{port}/slow");
    let started = Instant::now();
    match client.send_blocking(Request::get(uri(&url))) {
        Err(e @ Error::Timeout { .. }) => {
            assert!(
                matches!(
                    e,
                    Error::Timeout {
                        phase: Phase::Exchange,
                        ..
                    }
                ),
                "{e:?}"
            );
            let text = e.to_string();
            assert!(text.starts_with(&url) && text.contains("400ms"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    server.join().unwrap();

    // A listener that never accepts: the kernel completes TCP, nobody answers the ClientHello.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}/", mute.local_addr().unwrap().port());
    let client = client_trusting(pki().0)
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(5));
    let started = Instant::now();
    match client.send_blocking(Request::get(uri(&url))) {
        Err(e @ Error::Timeout { .. }) => {
            assert!(
                matches!(
                    e,
                    Error::Timeout {
                        phase: Phase::Connect,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("TLS handshake"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn only_https_urls_are_called() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    match client_trusting(pki().0).send_blocking(Request::get(uri(&url))) {
        Err(e @ Error::Url { .. }) => {
            assert_eq!(e.url(), url);
            assert!(e.to_string().contains("not an https:// URL"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Refused before any connection was made.
    assert!(listener.accept().is_err());
    assert!(enclave_http::parse("ftp://x/").is_err());
    assert!(enclave_http::parse("https://").is_err());
    assert!(enclave_http::parse("https://idp.example/jwks").is_ok());
}

#[test]
fn the_server_name_is_the_url_host_even_via_another_address() {
    let (ca, chain, key) = pki();
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let (port, server) = serve(
        chain,
        key,
        vec![Script::Answer(ok), Script::Silent(Duration::ZERO)],
    );
    let client = client_trusting(ca);
    // Reached at 127.0.0.1, named `localhost`, which the certificate names.
    let r = client
        .send_blocking(
            Request::get(uri(&format!("https://localhost:{port}/"))).via("127.0.0.1", port),
        )
        .unwrap();
    assert_eq!(r.body, b"ok");
    // Named a host the certificate does not name: refused by the certificate check, and the
    // rustls error is there for the caller.
    let url = format!("https://other.test:{port}/");
    match client.send_blocking(Request::get(uri(&url)).via("127.0.0.1", port)) {
        Err(e @ Error::Tls { .. }) => {
            assert!(e.to_string().starts_with(&url), "{e}");
            assert!(
                matches!(e.tls_error(), Some(rustls::Error::InvalidCertificate(_))),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let (_, chain, key) = pki();
    let (port, server) = serve(chain, key, vec![Script::Silent(Duration::ZERO)]);
    let url = format!("https://localhost:{port}/");
    match client_trusting(pki().0).send_blocking(Request::get(uri(&url))) {
        Err(e @ Error::Tls { .. }) => {
            assert!(e.to_string().starts_with(&url), "{e}");
            assert!(e.tls_error().is_some(), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn blocking_calls_work_from_inside_an_async_runtime_and_connections_can_be_inspected() {
    let (ca, chain, key) = pki();
    let ok = || Script::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
    let (port, server) = serve(chain, key, vec![ok(), ok(), Script::Silent(Duration::ZERO)]);
    let client = client_trusting(ca);
    let url = format!("https://localhost:{port}/");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // From a blocking-pool thread, as the runtime's store calls its witness.
        let (c, u) = (client.clone(), uri(&url));
        let r = tokio::task::spawn_blocking(move || c.send_blocking(Request::get(u)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"ok");
        // Connect, look at the session, then send.
        let conn = client.connect(Request::get(uri(&url))).await.unwrap();
        assert!(conn.tls().peer_certificates().is_some_and(|c| c.len() == 1));
        assert_eq!(conn.url(), url);
        let r = conn.send().await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"ok"[..]));
        // Connect and close without a request.
        let conn = client.connect(Request::get(uri(&url))).await.unwrap();
        conn.close().await;
    });
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[2].is_empty(),
        "{:?}",
        String::from_utf8_lossy(&seen[2])
    );
}

#[tokio::test]
async fn a_streamed_body_is_not_held_to_the_limit_and_arrives_in_pieces() {
    let (ca, chain, key) = pki();
    let size = 300 * 1024;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut first = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
    first.extend_from_slice(&body[..1000]);
    let (port, server) = serve(
        chain,
        key,
        vec![Script::Trickle(
            first,
            Duration::from_millis(200),
            body[1000..].to_vec(),
        )],
    );
    let client = client_trusting(ca)
        .max_body(1024)
        .idle_timeout(Duration::from_secs(5));
    let url = format!("https://localhost:{port}/v2/x/blobs/sha256:00");
    let mut response = client
        .send_streaming(Request::get(uri(&url)))
        .await
        .unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let mut got = Vec::new();
    let mut pieces = 0;
    while let Some(chunk) = response.body.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
        pieces += 1;
        assert_eq!(response.body.received(), got.len() as u64);
    }
    assert!(pieces > 1, "{pieces}");
    assert!(got == body, "the streamed body differs from what was sent");
    server.join().unwrap();
}

#[tokio::test]
async fn a_stalled_streamed_body_times_out_on_the_idle_limit() {
    let (ca, chain, key) = pki();
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst".to_vec();
    let (port, server) = serve(
        chain,
        key,
        vec![Script::Trickle(first, Duration::from_secs(1), Vec::new())],
    );
    let client = client_trusting(ca).idle_timeout(Duration::from_millis(300));
    let url = format!("https://localhost:{port}/slow");
    let mut response = client
        .send_streaming(Request::get(uri(&url)))
        .await
        .unwrap();
    assert_eq!(
        response.body.chunk().await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
    let started = Instant::now();
    match response.body.chunk().await {
        Err(
            e @ Error::Timeout {
                phase: Phase::Idle, ..
            },
        ) => {
            let text = e.to_string();
            assert!(text.starts_with(&url), "{text}");
            assert!(text.contains("next bytes of the response body"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(900));
    drop(response);
    server.join().unwrap();
}

#[tokio::test]
async fn a_streamed_body_cut_short_is_an_error_not_an_end() {
    let (ca, chain, key) = pki();
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this".to_vec();
    let (port, server) = serve(chain, key, vec![Script::Answer(first)]);
    let url = format!("https://localhost:{port}/short");
    let mut response = client_trusting(ca)
        .send_streaming(Request::get(uri(&url)))
        .await
        .unwrap();
    let mut got = Vec::new();
    let end = loop {
        match response.body.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            other => break other,
        }
    };
    assert_eq!(got, b"only this");
    match end {
        Err(e @ Error::Http { .. }) => assert!(e.to_string().starts_with(&url), "{e}"),
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}
