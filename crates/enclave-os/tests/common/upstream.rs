//! A service for the proxy to forward to: the test binary itself, run again as a process
//! workload, serving on `$PORT` what `$ENCLAVE_TEST_UPSTREAM` names.
//!
//! - `http1`: `GET /headers` answers the request's headers as JSON; `POST /echo` streams the
//!   body back; `POST /count` reads the whole body, then answers its length; `GET /slow`
//!   answers after 5 s; `GET /ws` upgrades to WebSocket and echoes text frames.
//! - `h2c`: HTTP/2 with prior knowledge; `POST` anywhere answers gRPC-style: the request body
//!   back, then trailers `grpc-status: 0` and `grpc-message: echoed <n> bytes, te <te>,
//!   trailers [<the request's trailer names>]`.
//! - `tcp`: echoes bytes.
//!
//! A test file that uses it has a test named `upstream_service` calling [`serve_if_asked`];
//! the workload runs the test binary with `--exact upstream_service`.

use std::convert::Infallible;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable naming the mode.
pub const MODE: &str = "ENCLAVE_TEST_UPSTREAM";

/// The arguments that make the test binary serve instead of testing.
pub fn args() -> Vec<String> {
    [
        "--exact",
        "upstream_service",
        "--nocapture",
        "--test-threads=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

type Body = BoxBody<Bytes, hyper::Error>;

/// A small answer (the size of a typical JSON API response).
pub const SMALL: [u8; 128] = [b's'; 128];

/// A 1 MiB answer, made once.
pub fn big() -> &'static [u8] {
    static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BIG.get_or_init(|| (0..(1u32 << 20)).map(|n| (n % 251) as u8).collect())
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Serve forever if this process was started as a service; return at once otherwise.
pub fn serve_if_asked() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let mode = mode.clone();
            tokio::spawn(async move {
                match mode.as_str() {
                    "tcp" => echo_tcp(tcp).await,
                    "h2c" => {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(grpc))
                            .await;
                    }
                    _ => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(http1))
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
}

async fn echo_tcp(mut tcp: tokio::net::TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tcp.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn http1(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match req.uri().path() {
        "/headers" => {
            let mut map = serde_json::Map::new();
            for (k, v) in req.headers() {
                let v = v.to_str().unwrap_or("?").to_string();
                match map.get_mut(k.as_str()) {
                    Some(serde_json::Value::String(s)) => {
                        s.push_str(", ");
                        s.push_str(&v);
                    }
                    _ => {
                        map.insert(k.to_string(), v.into());
                    }
                }
            }
            Ok(Response::new(full(
                serde_json::Value::Object(map).to_string(),
            )))
        }
        "/echo" => Ok(Response::new(req.into_body().boxed())),
        "/count" => {
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len().to_string(),
                Err(e) => format!("error: {e}"),
            };
            Ok(Response::new(full(n)))
        }
        "/small" => Ok(Response::new(full(&SMALL[..]))),
        "/1m" => Ok(Response::new(full(Bytes::from_static(big())))),
        "/slow" => {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(Response::new(full("slow")))
        }
        "/ws" => {
            let key = req
                .headers()
                .get("sec-websocket-key")
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default();
            let mut input = key;
            input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
            let accept = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    ws_echo(TokioIo::new(up)).await;
                }
            });
            Ok(Response::builder()
                .status(101)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .unwrap())
        }
        _ => Ok(Response::builder().status(404).body(full("")).unwrap()),
    }
}

/// Echo WebSocket text frames (short, masked, as a client sends them) back unmasked, until a
/// close frame or the end.
async fn ws_echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    loop {
        let Some((opcode, payload)) = read_frame(&mut s).await else {
            return;
        };
        if opcode == 0x8 {
            let _ = s.write_all(&frame(0x8, &payload, None)).await;
            return;
        }
        if s.write_all(&frame(opcode, &payload, None)).await.is_err() {
            return;
        }
    }
}

/// One WebSocket frame of up to 125 bytes, masked with `mask` when given (a client's).
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() <= 125);
    let mut f = vec![0x80 | opcode];
    match mask {
        Some(m) => {
            f.push(0x80 | payload.len() as u8);
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => {
            f.push(payload.len() as u8);
            f.extend_from_slice(payload);
        }
    }
    f
}

/// Read one short frame: its opcode and unmasked payload.
pub async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.ok()?;
    let len = (head[1] & 0x7f) as usize;
    if len > 125 {
        return None;
    }
    let mask = if head[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        s.read_exact(&mut m).await.ok()?;
        Some(m)
    } else {
        None
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Some((head[0] & 0x0f, payload))
}

async fn grpc(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let te = req
        .headers()
        .get("te")
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default();
    let (body, names) = match req.into_body().collect().await {
        Ok(b) => {
            let names: Vec<String> = b
                .trailers()
                .map(|t| t.keys().map(|k| k.to_string()).collect())
                .unwrap_or_default();
            (b.to_bytes(), names)
        }
        Err(_) => (Bytes::new(), Vec::new()),
    };
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert(
        "grpc-message",
        format!(
            "echoed {} bytes, te {te}, trailers [{}]",
            body.len(),
            names.join(" ")
        )
        .parse()
        .unwrap(),
    );
    let frames = futures_stream(vec![Frame::data(body), Frame::trailers(trailers)]);
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .body(frames)
        .unwrap())
}

/// A body of the given frames.
fn futures_stream(frames: Vec<Frame<Bytes>>) -> Body {
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, hyper::Error>));
    http_body_util::StreamBody::new(stream).boxed()
}
