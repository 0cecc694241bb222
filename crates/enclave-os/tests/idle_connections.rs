//! 10,000 concurrent idle RA-TLS connections held by one runtime, without errors, and what
//! each costs in memory (the runtime's resident set before and after), checked against the
//! bound `docs/performance.md` documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::instance::Instance;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections held at once.
const CONNECTIONS: usize = 10_000;
/// The documented bound on the runtime's memory per idle connection (docs/performance.md).
const MAX_BYTES_PER_CONNECTION: u64 = 64 * 1024;

/// `prlimit` on this process's open-file limit with `args`; its output.
fn prlimit(args: &[&str]) -> (bool, String) {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Raise this process's open-file limit (the runtime, its child, inherits it) to `want`
/// with util-linux's `prlimit`, raising the hard limit too where allowed, else as far as the
/// hard limit goes: the soft limit reached.
fn raise_nofile(want: u64) -> u64 {
    let read = |which: &str| {
        prlimit(&[
            "--nofile",
            "--raw",
            "--noheadings",
            &format!("--output={which}"),
        ])
        .1
        .parse::<u64>()
        .unwrap_or(u64::MAX)
    };
    if !prlimit(&[&format!("--nofile={want}:{want}")]).0 {
        let soft = want.min(read("HARD"));
        prlimit(&[&format!("--nofile={soft}:")]);
    }
    read("SOFT")
}

/// The resident set of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// One request and its answer's status line on an idle connection: it is still served.
async fn still_served(tls: &mut Tls) -> bool {
    let req = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if tls.write_all(req).await.is_err() || tls.flush().await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(20), tls.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && buf.starts_with(b"HTTP/1.1 ")
}

#[test]
fn ten_thousand_idle_tls_connections_are_held_within_the_documented_memory() {
    let limit = raise_nofile(2 * CONNECTIONS as u64 + 4096);
    assert!(
        limit >= CONNECTIONS as u64 + 1024,
        "the open-file limit is {limit}; this test needs {} (raise the hard limit)",
        CONNECTIONS + 1024
    );
    let tmp = tempfile::tempdir().unwrap();
    let i = Instance::new(
        tmp.path(),
        "[limits]\nmax_connections = 20000\nheader_timeout_secs = 600\n",
    );
    let server = i.start();
    let pid = server.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The first connection verifies the RA-TLS certificate in full; the others resume its
        // session (the client's cache), which is what a fleet of reconnecting clients does
        // and keeps this test's own CPU out of the figure.
        let mut config = (*i.client()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let port = i.port;
        let open = |connector: tokio_rustls::TlsConnector| {
            let name = name.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                connector.connect(name, tcp).await
            }
        };
        let mut warm = Vec::new();
        for _ in 0..100 {
            let mut t = open(connector.clone()).await.unwrap();
            assert!(still_served(&mut t).await);
            warm.push(t);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss(pid);

        let failures = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut held: Vec<Tls> = Vec::with_capacity(CONNECTIONS);
        // 64 handshakes in flight at a time.
        let mut pending = tokio::task::JoinSet::new();
        let mut next = 0;
        while held.len() + failures.load(Ordering::Relaxed) < CONNECTIONS {
            while next < CONNECTIONS && pending.len() < 64 {
                pending.spawn(open(connector.clone()));
                next += 1;
            }
            match pending.join_next().await {
                Some(Ok(Ok(t))) => {
                    held.push(t);
                    if held.len().is_multiple_of(1000) {
                        eprintln!("{} connections after {:.1} s", held.len(), started.elapsed().as_secs_f64());
                    }
                }
                Some(Ok(Err(e))) => {
                    if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("connection failed: {e}");
                    }
                }
                Some(Err(e)) => panic!("{e}"),
                None => break,
            }
        }
        let opened_in = started.elapsed();
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "connections failed: {}",
            i.log()
        );
        assert_eq!(held.len(), CONNECTIONS);
        // Let the runtime settle (handshake buffers freed) before reading its memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss(pid);
        let per = after.saturating_sub(before) / CONNECTIONS as u64;
        eprintln!(
            "{CONNECTIONS} idle RA-TLS connections opened in {:.1} s; runtime RSS {} MiB -> {} MiB: {per} bytes per connection",
            opened_in.as_secs_f64(),
            before >> 20,
            after >> 20
        );
        assert!(
            per <= MAX_BYTES_PER_CONNECTION,
            "{per} bytes per idle connection, over the documented {MAX_BYTES_PER_CONNECTION}"
        );

        // Every one of them is still open and served.
        let mut served = 0;
        for (n, chunk) in held.chunks_mut(256).enumerate() {
            let answers =
                futures_util::future::join_all(chunk.iter_mut().map(still_served)).await;
            served += answers.into_iter().filter(|ok| *ok).count();
            if n.is_multiple_of(8) {
                eprintln!("{served} served");
            }
        }
        assert_eq!(served, CONNECTIONS, "{}", i.log());
        drop(warm);
    });
    server.stop();
}
