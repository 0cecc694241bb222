//! Challenge-mode handshakes against `enclave-os run` on the simulated TEE, and what a flood of
//! them does to everyone else, in one run on one machine:
//!
//! 1. handshakes per second with the cached (deterministic) leaf: the anchor, since a plain
//!    handshake costs one signature and no issuance;
//! 2. challenge handshakes per second: each makes the server generate a key, a quote and a
//!    certificate (issued on its blocking pool, `limits.max_challenge_handshakes` at once, as
//!    many waiting, the rest refused), counted as completed and refused;
//! 3. a keep-alive client's `GET /healthz` latency (p50, p99) alone, then during (2).
//!
//! The flood's clients do not verify what they get (an attacker would not), so the figures are
//! the server's; `FLOODERS` connections hammer back to back for `SECONDS_PER_CASE` (default 5).
//!
//! Run: `cargo bench -p enclave-os --bench challenge_flood`. Figures in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/load_client.rs"]
mod load_client;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

const FLOODERS: usize = 8;

fn seconds() -> Duration {
    Duration::from_secs(
        std::env::var("SECONDS_PER_CASE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

/// A client that accepts any certificate and checks no signature: the flood measures the
/// server, not the client's verification.
fn client(alpn: Option<Vec<u8>>) -> Arc<rustls::ClientConfig> {
    load_client::client(alpn.into_iter().collect(), false)
}

async fn one_handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from("localhost").unwrap();
    matches!(
        tokio::time::timeout(
            Duration::from_secs(15),
            tokio_rustls::TlsConnector::from(config).connect(name, tcp)
        )
        .await,
        Ok(Ok(_))
    )
}

/// `FLOODERS` tasks making handshakes back to back until `stop`; (completed, failed).
fn flood(
    addr: SocketAddr,
    challenge: bool,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..FLOODERS {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n: u64 = 0;
                let plain = client(None);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let config = if challenge {
                        let nonce = [(t as u64).to_be_bytes(), n.to_be_bytes()].concat();
                        client(Some(enclave_ratls::tls::nonce_alpn(&nonce)))
                    } else {
                        plain.clone()
                    };
                    if one_handshake(addr, config).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

/// `GET /healthz` back to back on one keep-alive connection for `for_`; sorted latencies.
async fn probe(addr: SocketAddr, for_: Duration) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(client(None))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let until = Instant::now() + for_;
    let mut out = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let req = hyper::Request::get("/healthz")
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert!(resp.status().is_success());
        resp.into_body().collect().await.unwrap();
        out.push(started.elapsed());
        // A client making a request now and then, not a load of its own.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.sort();
    out
}

fn percentile(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("enclave.toml");
        std::fs::write(
            &config,
            "tee = \"sim-sgx\"\nseal_policy = \"measurement\"\nstate_dir = \"state\"\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_enclave-os"))
            .args(["run", config.to_str().unwrap(), "--listen", &addr.to_string()])
            .env("ENCLAVE_OS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("runtime.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the runtime exited: {}",
                std::fs::read_to_string(dir.path().join("runtime.log")).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "not listening after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _guard = Killed(child);
        let secs = seconds();
        println!(
            "enclave-os run on sim-sgx, {FLOODERS} flooding connections, {} s per case\n",
            secs.as_secs()
        );

        for (name, challenge) in [
            ("handshakes, cached leaf (anchor)", false),
            ("handshakes, challenge mode", true),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let load = flood(addr, challenge, stop.clone());
            tokio::time::sleep(secs).await;
            stop.store(true, Ordering::Relaxed);
            let (done, failed) = load.await.unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{name:<40} {:>8.1} completed/s   {:>8.1} refused or failed/s",
                done as f64 / elapsed,
                failed as f64 / elapsed
            );
        }

        let alone = probe(addr, secs).await;
        println!(
            "\n{:<40} p50 {:>9.1} µs   p99 {:>9.1} µs   ({} requests)",
            "GET /healthz, alone",
            percentile(&alone, 0.5),
            percentile(&alone, 0.99),
            alone.len()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let load = flood(addr, true, stop.clone());
        let during = probe(addr, secs).await;
        stop.store(true, Ordering::Relaxed);
        let (done, failed) = load.await.unwrap();
        println!(
            "{:<40} p50 {:>9.1} µs   p99 {:>9.1} µs   ({} requests; flood: {done} completed, {failed} refused or failed)",
            "GET /healthz, during a challenge flood",
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            during.len()
        );
    });
}
