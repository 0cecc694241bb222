//! The attested proxy over real sockets: clients speak HTTP/2 or HTTP/1.1 (by ALPN), WebSocket
//! or raw TCP to the runtime over RA-TLS, and a real service (this test binary, run again as a
//! process workload) answers behind it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::instance::Instance;
use common::lab::start_with_env;
use common::upstream;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Run as the service when asked (see `common::upstream`); a no-op test otherwise.
#[test]
fn upstream_service() {
    upstream::serve_if_asked();
}

/// A workload running this binary as a service in `mode`, with `proxy` as its
/// `[workload.proxy]` table.
fn workload(name: &str, mode: &str, port: u16, proxy: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let args: Vec<String> = upstream::args()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "[[workload]]\nname = \"{name}\"\nkind = \"process\"\nsource = \"{}\"\nhostnames = [\"{name}.test\"]\n\
         args = [{}]\nenv = {{ {} = \"{mode}\" }}\n\
         [workload.process]\nport = {port}\n\
         [workload.proxy]\n{proxy}\n",
        exe.display(),
        args.join(", "),
        upstream::MODE,
    )
}

/// An instance on the simulated TD serving `workloads`.
fn instance(dir: &std::path::Path, workloads: &str) -> Instance {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            "tee = \"sim-tdx\"\nstate_dir = \"state\"\nseal_key_env = \"TEST_SEAL_KEY\"\n\
             [oidc]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n{workloads}",
            common::instance::ISS,
            common::instance::AUD,
            common::instance::testdata("jwks.json").display(),
        ),
    )
    .unwrap();
    Instance {
        dir: dir.to_path_buf(),
        config,
        port: free_port(),
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A verified RA-TLS connection to `name` offering `alpn`.
async fn connect(i: &Instance, name: &str, alpn: &[&[u8]]) -> Tls {
    let mut config = (*i.client()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", i.port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from(name.to_string()).unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// An HTTP/2 client on `tls`, its connection driven in the background.
async fn h2_on<B>(tls: Tls) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// An HTTP/1.1 client on `tls`, its connection driven in the background.
async fn h1_on(tls: Tls) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A response's body as JSON.
async fn json(r: hyper::Response<hyper::body::Incoming>) -> Value {
    serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// Wait (bounded) until `name` answers `path` with anything but 503 (the service starting).
async fn ready(i: &Instance, name: &str, path: &str) {
    for _ in 0..300 {
        let tls = connect(i, name, &[b"http/1.1"]).await;
        let mut send = h1_on(tls).await;
        let req = Request::get(path)
            .header("host", name)
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(r) = send.send_request(req).await
            && r.status() != 503
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} not serving after 30 s: {}", i.log());
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn http_clients_reach_the_service_over_h2_and_http1_with_forwarding_headers_set() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(tmp.path(), &workload("web", "http1", port, ""));
    let _server = start_with_env(&i, &[]);
    rt().block_on(async {
        ready(&i, "web.test", "/headers").await;

        // HTTP/2 from the client (ALPN), HTTP/1.1 to the service.
        let tls = connect(&i, "web.test", &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        let mut h2 = h2_on(tls).await;
        let req = Request::get("https://web.test/headers")
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("x-kept", "yes")
            .header("x-enclave-os-client-subject", "admin")
            .header("x_enclave_os_client_subject", "admin")
            .header("x-enclave-os-client.subject", "admin")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = h2.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        let seen: Value = json(r).await;
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
        assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
        assert_eq!(seen["x-kept"], "yes", "{seen}");
        assert_eq!(seen["host"], "web.test", "{seen}");
        // A caller header the client made up never reaches the service, in either spelling
        // (CGI-style servers read `_` and `-` alike).
        assert!(seen.get("x-enclave-os-client-subject").is_none(), "{seen}");
        assert!(seen.get("x_enclave_os_client_subject").is_none(), "{seen}");
        assert!(seen.get("x-enclave-os-client.subject").is_none(), "{seen}");
        assert!(
            seen["forwarded"]
                .as_str()
                .unwrap()
                .starts_with("for=127.0.0.1;proto=https"),
            "{seen}"
        );

        // A 1 MiB body streams there and back on the same HTTP/2 connection.
        let big: Vec<u8> = (0..(1u32 << 20)).map(|n| (n % 251) as u8).collect();
        let req = Request::post("https://web.test/echo")
            .body(Full::new(Bytes::from(big.clone())))
            .unwrap();
        let r = h2.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), big);

        // HTTP/1.1 from the client: hop-by-hop headers stop at the proxy.
        let tls = connect(&i, "web.test", &[b"http/1.1"]).await;
        let mut h1 = h1_on(tls).await;
        let req = Request::get("/headers")
            .header("host", "elsewhere.test")
            .header("connection", "keep-alive, x-hop, upgrade")
            .header("upgrade", "h2c")
            .header("x-hop", "secret")
            .header("proxy-authorization", "Basic Zm9v")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = h1.send_request(req).await.unwrap();
        let seen: Value = json(r).await;
        assert!(seen.get("x-hop").is_none(), "{seen}");
        assert!(seen.get("proxy-authorization").is_none(), "{seen}");
        // Only WebSocket is upgraded: an h2c upgrade would be a tunnel past the front.
        assert!(seen.get("upgrade").is_none(), "{seen}");
        // The service is told the name the connection was made for, not the client's Host.
        assert_eq!(seen["host"], "web.test", "{seen}");
        assert_eq!(seen["x-forwarded-host"], "web.test", "{seen}");

        // Asterisk form would be read against the service's address as text: refused.
        let r = h1
            .send_request(
                Request::options("*")
                    .header("host", "web.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = json(r).await;
        assert!(
            body["error"].as_str().unwrap().contains("origin-form"),
            "{body}"
        );
    });
}

#[test]
fn grpc_style_h2_with_trailers_reaches_an_h2c_service() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(
        tmp.path(),
        &workload("grpc", "h2c", port, "protocol = \"h2c\""),
    );
    let _server = start_with_env(&i, &[]);
    rt().block_on(async {
        let mut last = None;
        for _ in 0..300 {
            let tls = connect(&i, "grpc.test", &[b"h2"]).await;
            let mut h2 = h2_on(tls).await;
            let req = Request::post("https://grpc.test/echo.Echo/Say")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\x05hello")))
                .unwrap();
            let r = h2.send_request(req).await.unwrap();
            if r.status() == 503 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], "application/grpc");
            let collected = r.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().expect("trailers");
            assert_eq!(collected.to_bytes().as_ref(), b"\0\0\0\0\x05hello");
            last = Some(trailers);
            break;
        }
        let trailers = last.unwrap_or_else(|| panic!("no answer: {}", i.log()));
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(
            trailers["grpc-message"],
            "echoed 10 bytes, te trailers, trailers []"
        );

        // Request trailers reach the service, but never one a request head could not carry.
        let tls = connect(&i, "grpc.test", &[b"h2"]).await;
        let mut h2 = h2_on(tls).await;
        let mut sent = hyper::HeaderMap::new();
        sent.insert("x-checksum", "abc".parse().unwrap());
        sent.insert("x-enclave-os-client-subject", "admin".parse().unwrap());
        sent.insert("x_enclave_os_client_tee", "tdx".parse().unwrap());
        sent.insert("x-enclave-os-client.name", "db".parse().unwrap());
        sent.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        let frames = vec![
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"hi"))),
            Ok(hyper::body::Frame::trailers(sent)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let req = Request::post("https://grpc.test/echo.Echo/Say")
            .header("te", "trailers")
            .body(body)
            .unwrap();
        let r = h2.send_request(req).await.unwrap();
        let trailers = r
            .into_body()
            .collect()
            .await
            .unwrap()
            .trailers()
            .cloned()
            .unwrap();
        assert_eq!(
            trailers["grpc-message"],
            "echoed 2 bytes, te trailers, trailers [x-checksum]"
        );
    });
}

#[test]
fn a_websocket_echoes_through_the_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(tmp.path(), &workload("ws", "http1", port, ""));
    let _server = start_with_env(&i, &[]);
    rt().block_on(async {
        ready(&i, "ws.test", "/headers").await;
        let mut tls = connect(&i, "ws.test", &[b"http/1.1"]).await;
        tls.write_all(
            b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        // The head, up to its blank line.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        // RFC 6455's own example key and answer: the service's handshake crossed untouched.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        for msg in [&b"hello"[..], b"attested", b"world"] {
            tls.write_all(&upstream::frame(0x1, msg, Some([1, 2, 3, 4])))
                .await
                .unwrap();
            let (op, payload) = upstream::read_frame(&mut tls).await.unwrap();
            assert_eq!((op, payload.as_slice()), (0x1, msg));
        }
        tls.write_all(&upstream::frame(0x8, b"", Some([9, 9, 9, 9])))
            .await
            .unwrap();
        let (op, _) = upstream::read_frame(&mut tls).await.unwrap();
        assert_eq!(op, 0x8);
    });
}

#[test]
fn tcp_is_spliced_after_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(
        tmp.path(),
        &workload(
            "db",
            "tcp",
            port,
            "protocol = \"tcp\"\nidle_timeout_secs = 2",
        ),
    );
    let _server = start_with_env(&i, &[]);
    rt().block_on(async {
        let mut echoed = None;
        for _ in 0..300 {
            // A client offering a protocol of its own: a spliced name offers no HTTP by ALPN,
            // and the handshake still completes.
            let mut tls = connect(&i, "db.test", &[b"postgresql"]).await;
            assert_eq!(tls.get_ref().1.alpn_protocol(), None);
            let _ = tls.write_all(b"ping over RA-TLS\n").await;
            let mut buf = [0u8; 17];
            match tokio::time::timeout(Duration::from_secs(2), tls.read_exact(&mut buf)).await {
                Ok(Ok(_)) => {
                    echoed = Some((tls, buf));
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let (mut tls, buf) = echoed.unwrap_or_else(|| panic!("no echo: {}", i.log()));
        assert_eq!(&buf, b"ping over RA-TLS\n");
        // Idle past proxy.idle_timeout_secs: the proxy closes it.
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "an idle spliced connection was not closed");
    });
}

#[test]
fn upstream_failures_answer_502_503_504_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(
        tmp.path(),
        &workload(
            "slow",
            "http1",
            port,
            "response_timeout_secs = 1\nmax_connections = 2\nmax_header_bytes = 8192",
        ),
    );
    let _server = start_with_env(&i, &[]);
    rt().block_on(async {
        ready(&i, "slow.test", "/headers").await;
        let tls = connect(&i, "slow.test", &[b"http/1.1"]).await;
        let mut h1 = h1_on(tls).await;
        let r = h1
            .send_request(
                Request::get("/slow")
                    .header("host", "slow.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 504);
        let body: Value = json(r).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("did not answer within 1 s"),
            "{body}"
        );

        // A head over max_header_bytes is refused before the service sees it. (The client's
        // connection task may not have taken back the connection after the last body yet.)
        h1.ready().await.unwrap();
        let r = h1
            .send_request(
                Request::get("/headers")
                    .header("host", "slow.test")
                    .header("x-big", "a".repeat(9000))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.unwrap().status(), 431);

        // Two connections held (max_connections = 2): a third is refused with the reason.
        drop(h1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _a = connect(&i, "slow.test", &[b"http/1.1"]).await;
        let _b = connect(&i, "slow.test", &[b"http/1.1"]).await;
        let tls = connect(&i, "slow.test", &[b"http/1.1"]).await;
        let mut h1 = h1_on(tls).await;
        let r = h1
            .send_request(
                Request::get("/headers")
                    .header("host", "slow.test")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = json(r).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("proxy.max_connections"),
            "{body}"
        );
    });
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_and_takes_no_new_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(
        tmp.path(),
        &workload("drain", "http1", port, "drain_secs = 20"),
    );
    let server = start_with_env(&i, &[]);
    rt().block_on(async {
        ready(&i, "drain.test", "/headers").await;
        let tls = connect(&i, "drain.test", &[b"h2"]).await;
        let mut h2 = h2_on(tls).await;
        // The service answers /slow after 5 s; the runtime is told to stop 1 s in.
        let slow = tokio::spawn(async move {
            let r = h2
                .send_request(
                    Request::get("https://drain.test/slow")
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = r.status();
            (status, r.into_body().collect().await.unwrap().to_bytes())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pid = server.0.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", i.port))
                .await
                .is_err(),
            "a new connection was accepted after SIGTERM"
        );
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), slow)
            .await
            .expect("the request in flight was not answered")
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body.as_ref(), b"slow");
    });
    let mut server = server;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the runtime did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_oidc_gate_on_a_tcp_workload_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let w = workload("db", "tcp", port, "protocol = \"tcp\"")
        + "[workload.ingress.oidc]\naudience = \"db\"\n";
    let i = instance(tmp.path(), &w);
    let (code, said) = i.refused();
    assert_ne!(code, 0);
    assert!(said.contains("tcp") && said.contains("oidc"), "{said}");
}

/// One HTTP/1.1 exchange written and read as bytes over `tls`: what came back, up to the close
/// or `limit`.
async fn raw(tls: &mut Tls, head: &[u8], limit: Duration) -> String {
    tls.write_all(head).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, tls.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn clients_cannot_hold_a_service_by_name_games_stalled_bodies_or_fan_out() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let i = instance(
        tmp.path(),
        &format!(
            "[limits]\nheader_timeout_secs = 2\n{}",
            workload("svc", "http1", port, "max_in_flight = 1")
        ),
    );
    let _server = start_with_env(&i, &[]);
    rt().block_on(async {
        ready(&i, "svc.test", "/headers").await;

        // Without SNI the connection was made for no workload: a service is not reached by
        // its Host alone (its per-connection bounds are its name's).
        let mut tls = connect(&i, "127.0.0.1", &[b"http/1.1"]).await;
        let got = raw(
            &mut tls,
            b"GET /headers HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 421"), "{got}");
        assert!(got.contains("connect with SNI svc.test"), "{got}");

        // A body that stops arriving is cut after limits.header_timeout_secs: 408, the reason.
        let mut tls = connect(&i, "svc.test", &[b"http/1.1"]).await;
        let started = std::time::Instant::now();
        let got = raw(
            &mut tls,
            b"POST /count HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 10\r\n\r\n1",
            Duration::from_secs(20),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("request body stalled"), "{got}");
        assert!(started.elapsed() < Duration::from_secs(15));

        // One request in flight (max_in_flight = 1): a second is refused with the reason.
        let tls = connect(&i, "svc.test", &[b"h2"]).await;
        let h2 = h2_on(tls).await;
        let mut first = h2.clone();
        let slow = tokio::spawn(async move {
            first
                .send_request(
                    Request::get("https://svc.test/slow")
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap()
                .status()
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut second = h2.clone();
        let r = second
            .send_request(
                Request::get("https://svc.test/headers")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = json(r).await;
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("proxy.max_in_flight"),
            "{body}"
        );
        assert_eq!(slow.await.unwrap(), 200);
    });
}
