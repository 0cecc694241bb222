//! Requests per second and latency (p50, p99) for the hello-world component
//! (`testdata/wasm/hello.wasm`, `GET /`), in one run, on one machine:
//!
//! 1. `wasmtime serve` (wasmtime-cli 48) over plain HTTP: the anchor;
//! 2. the `enclave-wasm` host over plain HTTP: the same per-request path the runtime takes (a
//!    fresh instance per request, limits, SDK and egress linked) behind a bare hyper listener,
//!    so that the comparison with (1) has no TLS on either side;
//! 3. `enclave-os run` over RA-TLS, keep-alive connections: what TLS adds per request;
//! 4. `enclave-os run` over RA-TLS, a new connection per request: what an RA-TLS handshake
//!    (issued certificate cached on the server, evidence verified by the client) adds;
//! 5. and 6. the same runtime's management API: `PUT` (a durable sealed write; concurrent ones
//!    share a commit) and `GET` of 256-byte values in the sealed key-value store, with a bearer
//!    token checked on each request.
//!
//! With `PROFILE=1` the runtime is sampled with `perf record` during cases 3, 5 and 6, and the
//! top entries of each profile are printed.
//!
//! Every case uses the same load: `CONNS` connections, each sending requests back to back for
//! `SECONDS`, after a one-second warm-up. The load generator shares the machine.
//!
//! Run: `cargo bench -p enclave-os --bench wasm_serve`. For the anchor, set `WASMTIME` to a
//! wasmtime 48 binary (`cargo install wasmtime-cli@48.0.8 --locked`); without it, (1) is
//! skipped with a note. Figures are recorded in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const CONNS: usize = 8;
const WARMUP: Duration = Duration::from_secs(1);

fn seconds() -> Duration {
    Duration::from_secs(
        std::env::var("SECONDS_PER_CASE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    )
}

type Sender = SendRequest<Full<Bytes>>;
/// Builds each request of a load: the path, method, headers and body.
type MakeRequest = Arc<dyn Fn(u64) -> hyper::Request<Full<Bytes>> + Send + Sync>;

/// `GET /` for `host`.
fn get_root(host: &'static str) -> MakeRequest {
    Arc::new(move |_| {
        hyper::Request::get("/")
            .header(hyper::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
}
type Connect =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Sender, String>> + Send>> + Send + Sync>;

fn component() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/hello.wasm")
}

async fn handshake<S>(io: S) -> Result<Sender, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

fn plain(addr: SocketAddr) -> Connect {
    Arc::new(move || {
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            handshake(tcp).await
        })
    })
}

fn ra_tls(addr: SocketAddr, tls: Arc<rustls::ClientConfig>, host: &'static str) -> Connect {
    Arc::new(move || {
        let tls = tls.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let name = rustls::pki_types::ServerName::try_from(host).unwrap();
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            handshake(stream).await
        })
    })
}

struct Figures {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// `CONNS` connections sending `make`'s requests back to back for `for_`; latencies of successes.
async fn run_load(
    connect: Connect,
    make: MakeRequest,
    keep_alive: bool,
    for_: Duration,
) -> Figures {
    let until = Instant::now() + for_;
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (connect, make) = (connect.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = (c as u64) << 32;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut sender: Option<Sender> = None;
            while Instant::now() < until {
                let started = Instant::now();
                let s = match sender.take() {
                    Some(s) if keep_alive => s,
                    _ => match connect().await {
                        Ok(s) => s,
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    },
                };
                let mut s = s;
                n += 1;
                let req = make(n);
                let ok = match s.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(started.elapsed());
                    sender = Some(s);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().max(for_);
    all.sort();
    Figures {
        requests: all.len(),
        errors,
        elapsed,
        latencies: all,
    }
}

async fn measure(name: &str, connect: Connect, make: MakeRequest, keep_alive: bool) -> Figures {
    run_load(connect.clone(), make.clone(), keep_alive, WARMUP).await;
    let f = run_load(connect, make, keep_alive, seconds()).await;
    println!(
        "{name:<44} {:>9.0} req/s   p50 {:>8.1} µs   p99 {:>8.1} µs   ({} requests, {} errors)",
        f.rps(),
        f.percentile(0.50).as_secs_f64() * 1e6,
        f.percentile(0.99).as_secs_f64() * 1e6,
        f.requests,
        f.errors
    );
    f
}

const ISS: &str = "https://issuer.test";
const AUD: &str = "enclave-os-test";

fn oidc(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/oidc")
        .join(name)
}

/// A token with the key-value scopes, from the test issuer's key.
fn mint_token() -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_enclave-os"))
        .args(["token", "--key"])
        .arg(oidc("ec.key.pem"))
        .args(["--kid", "ec-1", "--issuer", ISS, "--audience", AUD])
        .args(["--scope", "kv:read kv:write", "--ttl", "3600"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Run `load`; with `PROFILE=1`, sample the runtime (`pid`) with `perf record` meanwhile and
/// print the top entries of its profile: where the runtime spends its CPU under that load.
async fn profiled<T>(name: &str, pid: u32, load: impl Future<Output = T>) -> T {
    if std::env::var_os("PROFILE").is_none() {
        return load.await;
    }
    let data = std::env::temp_dir().join(format!("enclave-os-{name}.perf"));
    let mut perf = Command::new("perf")
        .args(["record", "-F", "499", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("PROFILE=1 needs perf (Debian: linux-perf)");
    let out = load.await;
    // SIGINT makes perf write its data and exit.
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let _ = perf.wait();
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "dso,symbol",
            "-i",
        ])
        .arg(&data)
        .output()
        .unwrap();
    println!("  top of the runtime's profile ({name}):");
    for line in String::from_utf8_lossy(&report.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(10)
    {
        // "12.34%  dso  [.] symbol   -  -": the share, where, and what.
        let fields: Vec<&str> = line.split_whitespace().take_while(|t| *t != "-").collect();
        println!("    {}", fields.join(" "));
    }
    out
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited with {status} before listening");
        }
        assert!(Instant::now() < deadline, "{addr} not listening after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The enclave-wasm host behind a bare hyper HTTP/1.1 listener.
async fn wasm_host_plain() -> SocketAddr {
    let host = enclave_wasm::Host::new(enclave_wasm::HostOptions::default()).unwrap();
    let app = Arc::new(
        host.load(
            "hello",
            &std::fs::read(component()).unwrap(),
            vec![],
            vec![],
            enclave_wasm::Limits::default(),
        )
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { app.handle(req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, is ignored.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "hello-world component, {CONNS} connections, {} s per case\n",
            seconds().as_secs()
        );

        // 1. The anchor.
        match std::env::var_os("WASMTIME") {
            Some(bin) => {
                let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
                let mut child = Command::new(&bin)
                    .args(["serve", "--addr", &addr.to_string(), "-Scli"])
                    .arg(component())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run $WASMTIME");
                wait_listening(addr, &mut child).await;
                let _guard = Killed(child);
                measure(
                    "wasmtime serve, plain HTTP",
                    plain(addr),
                    get_root("localhost"),
                    true,
                )
                .await;
            }
            None => println!(
                "wasmtime serve: skipped (set WASMTIME to a wasmtime-cli 48 binary)"
            ),
        }

        // 2. Our host, no TLS.
        let addr = wasm_host_plain().await;
        measure(
            "enclave-wasm host, plain HTTP",
            plain(addr),
            get_root("localhost"),
            true,
        )
        .await;

        // 3 and 4. The runtime over RA-TLS.
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("enclave.toml");
        std::fs::write(
            &config,
            format!(
                "tee = \"sim-sgx\"\nseal_policy = \"signer\"\nstate_dir = \"state\"\n\
                 [oidc]\nissuer = \"{ISS}\"\naudience = \"{AUD}\"\njwks_file = \"{}\"\n\
                 [[workload]]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"hello.test\"]\n",
                oidc("jwks.json").display(),
                component().display()
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_enclave-os"))
            .args(["run", config.to_str().unwrap(), "--listen", &addr.to_string()])
            .env("ENCLAVE_OS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(addr, &mut child).await;
        let child_pid = child.id();
        let _guard = Killed(child);
        let trust = enclave_ratls::trust::TrustFiles {
            root: Some(dir.path().join("state/ca/root.crt.pem")),
            trust_sim: Some(dir.path().join("state/sim")),
            collateral: None,
        };
        let verifier = Arc::new(enclave_ratls::tls::RatlsServerVerifier::new(
            trust.verifier().unwrap(),
            enclave_ratls::binding::Freshness::Deterministic,
        ));
        let tls = Arc::new(enclave_ratls::tls::client_config(verifier, None, None).unwrap());
        let pid = child_pid;
        profiled("wasm-keep-alive", pid, async {
            measure(
                "enclave-os run, RA-TLS, keep-alive",
                ra_tls(addr, tls.clone(), "hello.test"),
                get_root("hello.test"),
                true,
            )
            .await
        })
        .await;
        measure(
            "enclave-os run, RA-TLS, a handshake per request",
            ra_tls(addr, tls.clone(), "hello.test"),
            get_root("hello.test"),
            false,
        )
        .await;

        // 5 and 6. The management API's sealed key-value store, over the same RA-TLS listener:
        // each PUT is a durable write (concurrent ones share a commit), each GET a sealed read.
        let token = mint_token();
        let auth = format!("Bearer {token}");
        let put: MakeRequest = {
            let auth = auth.clone();
            Arc::new(move |n| {
                hyper::Request::put(format!("/api/v1/kv/k{}", n % 1024))
                    .header(hyper::header::HOST, "localhost")
                    .header(hyper::header::AUTHORIZATION, auth.as_str())
                    .body(Full::new(Bytes::from_static(&[0x5a; 256])))
                    .unwrap()
            })
        };
        let get: MakeRequest = Arc::new(move |n| {
            hyper::Request::get(format!("/api/v1/kv/k{}", n % 1024))
                .header(hyper::header::HOST, "localhost")
                .header(hyper::header::AUTHORIZATION, auth.as_str())
                .body(Full::new(Bytes::new()))
                .unwrap()
        });
        profiled("kv-put", pid, async {
            measure(
                "enclave-os run, RA-TLS, KV PUT 256 B (durable)",
                ra_tls(addr, tls.clone(), "localhost"),
                put,
                true,
            )
            .await
        })
        .await;
        profiled("kv-get", pid, async {
            measure(
                "enclave-os run, RA-TLS, KV GET 256 B",
                ra_tls(addr, tls, "localhost"),
                get,
                true,
            )
            .await
        })
        .await;
    });
}
