//! The attested proxy against nginx (Debian's package) as a TLS reverse proxy, in one run, in
//! front of the same service: requests per second and latency (p50, p99), with keep-alive
//! and with a full TLS handshake per request, for a 128-byte and a 1 MiB response.
//!
//! - **service**: this binary run again (`ENCLAVE_TEST_UPSTREAM=http1`), an HTTP/1.1 server on
//!   loopback; `enclave-os run` (sim-TDX) starts it as a `kind = "process"` workload, and nginx
//!   proxies to the same port.
//! - **nginx**: 2 worker processes, TLS 1.3 with a P-256 certificate, `proxy_http_version 1.1`
//!   with an upstream keep-alive pool, no session cache or tickets, no access log.
//! - **enclave-os**: the build of the profile the benchmark is run with (`--profile measured`:
//!   the shipped binary, fat LTO; plain `cargo bench`: cargo's release defaults), the
//!   workload's RA-TLS certificate (P-256 key, the simulated quote in it), limits raised for
//!   the load.
//! - **load**: `CONNECTIONS` (default 16) concurrent HTTP/1.1 clients on this machine, for
//!   `SECONDS` (default 5) per case after a 1 s warm-up, `ROUNDS` (default 3) rounds with the
//!   two proxies alternating; the median round is reported, with every round's figure. The clients check the server's
//!   handshake signature but do not appraise its certificate (no quote verification), so
//!   the figure is the server's, not a verifier's; TLS resumption is off, so a "handshake"
//!   case is a full handshake each time.
//!
//! Needs nginx (`.ci/run` does not install it; `apt-get install nginx-light`). Run:
//! `cargo bench --profile measured -p enclave-os --bench proxy_vs_nginx` (the binary that
//! ships; its first build takes about 10 minutes on 2 CPUs), or without `--profile measured`
//! for a quicker build; `ONLY=enclave-os/keep-alive/128B` runs one case (any part may be left
//! empty). Figures in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load_client.rs"]
mod load_client;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::instance::Instance;
use common::upstream;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// HTTP/1.1 clients that check the server's handshake signature but not its certificate.
fn client_config() -> Arc<rustls::ClientConfig> {
    load_client::client(vec![b"http/1.1".to_vec()], true)
}

/// One proxy under test: where it listens and the name to ask for.
struct Target {
    label: &'static str,
    port: u16,
    name: &'static str,
}

/// What one case measured.
struct Figures {
    requests: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn open(tls: &tokio_rustls::TlsConnector, t: &Target) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", t.port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream = tls
        .connect(ServerName::try_from(t.name).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(send)
}

async fn get(send: &mut Sender, t: &Target, path: &str, expect: usize) -> Result<(), String> {
    let req = hyper::Request::get(path)
        .header("host", t.name)
        .body(Empty::new())
        .unwrap();
    let r = send.send_request(req).await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("status {}", r.status()));
    }
    let body = r
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if body.len() != expect {
        return Err(format!("{} bytes, not {expect}", body.len()));
    }
    Ok(())
}

/// Run one case: `connections` clients for `warmup + seconds`, counting only after `warmup`.
async fn case(t: Arc<Target>, path: &'static str, expect: usize, keepalive: bool) -> Figures {
    let connections = env_or("CONNECTIONS", 16);
    let seconds = env_or("SECONDS", 5);
    let tls = tokio_rustls::TlsConnector::from(client_config());
    let start = Instant::now() + Duration::from_secs(1);
    let end = start + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (t, tls) = (t.clone(), tls.clone());
        tasks.spawn(async move {
            let mut f = Figures {
                requests: 0,
                errors: 0,
                seconds: 0.0,
                latencies_us: Vec::new(),
            };
            let mut kept: Option<Sender> = None;
            while Instant::now() < end {
                let began = Instant::now();
                let result = async {
                    let mut send = match kept.take() {
                        Some(s) if keepalive => s,
                        _ => open(&tls, &t).await?,
                    };
                    get(&mut send, &t, path, expect).await?;
                    if keepalive {
                        kept = Some(send);
                    }
                    Ok::<_, String>(())
                }
                .await;
                if began >= start {
                    match result {
                        Ok(()) => {
                            f.requests += 1;
                            let us = began.elapsed().as_micros();
                            f.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Err(e) => {
                            if f.errors == 0 {
                                eprintln!("{}: {e}", t.label);
                            }
                            f.errors += 1;
                        }
                    }
                }
            }
            f
        });
    }
    let mut all = Figures {
        requests: 0,
        errors: 0,
        seconds: seconds as f64,
        latencies_us: Vec::new(),
    };
    while let Some(f) = tasks.join_next().await {
        let f = f.unwrap();
        all.requests += f.requests;
        all.errors += f.errors;
        all.latencies_us.extend(f.latencies_us);
    }
    all.latencies_us.sort_unstable();
    all
}

/// nginx in `dir`, proxying `listen` to the service at `service`.
fn nginx(dir: &std::path::Path, listen: u16, service: u16) -> Child {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["web.bench".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let d = dir.display();
    let conf = format!(
        "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream service {{ server 127.0.0.1:{service}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{listen} ssl;\n    server_name web.bench;\n\
             ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n\
             ssl_protocols TLSv1.3;\n    ssl_session_cache off;\n    ssl_session_tickets off;\n\
             keepalive_requests 100000;\n\
             location / {{\n      proxy_pass http://service;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
               proxy_set_header X-Forwarded-For $remote_addr;\n\
               proxy_buffers 16 64k;\n      proxy_buffer_size 64k;\n      proxy_max_temp_file_size 0;\n\
             }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "nginx not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn main() {
    if std::env::var(upstream::MODE).is_ok() {
        upstream::serve_if_asked();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let service = common::free_port();
    let exe = std::env::current_exe().unwrap();
    let rt_dir = tmp.path().join("rt");
    std::fs::create_dir_all(&rt_dir).unwrap();
    let config = rt_dir.join("enclave.toml");
    std::fs::write(
        &config,
        format!(
            "tee = \"sim-tdx\"\nstate_dir = \"state\"\nseal_key_env = \"TEST_SEAL_KEY\"\n\
             [limits]\nmax_connections = 20000\n\
             [[workload]]\nname = \"web\"\nkind = \"process\"\nsource = \"{}\"\nhostnames = [\"web.bench\"]\n\
             env = {{ {} = \"http1\" }}\n[workload.process]\nport = {service}\n",
            exe.display(),
            upstream::MODE
        ),
    )
    .unwrap();
    let i = Instance {
        dir: rt_dir,
        config,
        port: common::free_port(),
    };
    let mut server = common::lab::start_with_env(&i, &[]);
    let ngx_dir = tmp.path().join("nginx");
    std::fs::create_dir_all(&ngx_dir).unwrap();
    let ngx_port = common::free_port();
    let mut ngx = nginx(&ngx_dir, ngx_port, service);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let targets = [
        Arc::new(Target {
            label: "nginx",
            port: ngx_port,
            name: "web.bench",
        }),
        Arc::new(Target {
            label: "enclave-os",
            port: i.port,
            name: "web.bench",
        }),
    ];
    rt.block_on(async {
        // The workload's service is up once the proxy answers 200.
        let tls = tokio_rustls::TlsConnector::from(client_config());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = match open(&tls, &targets[1]).await {
                Ok(mut s) => get(&mut s, &targets[1], "/small", 128).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "not serving: {}", i.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // ONLY=<proxy>/<mode>/<body> (each part optional, e.g. ONLY=enclave-os/keep-alive)
        // runs the matching cases alone: for profiling one of them.
        let only = std::env::var("ONLY").unwrap_or_default();
        let wanted = |label: &str, mode: &str, body: &str| {
            only.split('/')
                .zip([label, mode, body])
                .all(|(want, is)| want.is_empty() || want == is)
        };
        // ROUNDS rounds, the proxies alternating within each, so that a slow minute of the
        // machine costs both alike; the median round of each is reported.
        let rounds = env_or("ROUNDS", 3) as usize;
        let mut results: Vec<(String, Vec<Figures>)> = Vec::new();
        for round in 0..rounds {
            for (mode, keepalive) in [("keep-alive", true), ("handshake", false)] {
                for (body, path, size) in [("128B", "/small", 128), ("1MiB", "/1m", 1 << 20)] {
                    for t in targets.iter().filter(|t| wanted(t.label, mode, body)) {
                        let f = case(t.clone(), path, size, keepalive).await;
                        let key = format!("{:<11} {:<10} {:<7}", t.label, mode, body);
                        eprintln!("round {}: {key} {:>8.0} req/s", round + 1, f.rps());
                        match results.iter_mut().find(|(k, _)| *k == key) {
                            Some((_, all)) => all.push(f),
                            None => results.push((key, vec![f])),
                        }
                    }
                }
            }
        }
        println!(
            "{:<11} {:<10} {:<7} {:>10} {:>9} {:>9} {:>7}   req/s of each round",
            "proxy", "mode", "body", "req/s", "p50 ms", "p99 ms", "errors"
        );
        for (key, mut all) in results {
            let each: Vec<String> = all.iter().map(|f| format!("{:.0}", f.rps())).collect();
            all.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
            let f = &all[all.len() / 2];
            println!(
                "{key} {:>10.0} {:>9.2} {:>9.2} {:>7}   {}",
                f.rps(),
                f.percentile(0.5),
                f.percentile(0.99),
                all.iter().map(|f| f.errors).sum::<u64>(),
                each.join(" ")
            );
        }
    });
    // SIGKILL would leave nginx's workers behind; stop asks the master to take them down.
    let d = ngx_dir.display().to_string();
    let _ = Command::new("nginx")
        .args(["-p", &d, "-c", &format!("{d}/nginx.conf"), "-s", "stop"])
        .status();
    let _ = ngx.wait();
    let _ = server.0.kill();
    let _ = server.0.wait();
}
