//! Full TLS 1.3 handshakes, in memory, with resumption off, timed in thread CPU time (criterion
//! reports it as its time; the machine these run on is shared):
//!
//! - a server holding a cached RA-TLS certificate against the same server holding a plain
//!   certificate from the same CA, both checked by plain rustls (WebPkiServerVerifier with the
//!   operator root): the cost RA-TLS adds on the server and the wire;
//! - the client's RA-TLS verification per handshake, with the appraisal cache warm (one verifier
//!   for every handshake) and cold (a fresh verifier each time).
//!
//! - each server case with and without RFC 8879 certificate compression (zlib, the rustls
//!   compression cache warm), as `enclave_ratls::tls::server_config` now serves;
//! - `server-share`: not a criterion group but a paired run for a shared, noisy machine. It
//!   times the cases in turn, a batch of each per round, many rounds, so a burst of load falls on
//!   every case alike, in thread CPU time (what the handshake itself costs, not the slices other
//!   processes took), and reports the median per-handshake time of each and the median of the
//!   per-round ratios (rate of an RA-TLS server over the rate of its plain anchor), server share
//!   and both sides.
//!
//! Run: `cargo bench -p enclave-ratls --bench handshake` (criterion groups), and
//! `cargo bench -p enclave-ratls --bench handshake -- server-share` (the paired run);
//! figures in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::Criterion;
use enclave_evidence::Verifier;
use enclave_evidence::intel::{Collateral, IntelVerifier};
use enclave_ratls::RatlsVerifier;
use enclave_ratls::binding::Freshness;
use enclave_ratls::issue::{IntermediaryCa, LeafSpec};
use enclave_ratls::tls::{RatlsResolver, RatlsServerVerifier, provider, server_config};
use enclave_tee::Tee;
use enclave_tee::sim::{Flavour, SimTee};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// One full handshake; returns the wall time spent in the server's half of it.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Duration {
    handshake_on(client, server, wall)
}

/// Wall time, from an arbitrary origin.
fn wall() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// CPU time this thread has run. On a machine shared with other work, wall time counts the
/// slices the scheduler gave to others; this does not, so the paired run reads it.
#[allow(unsafe_code)]
fn cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One full handshake; returns the time `now` counted in the server's half of it.
fn handshake_on(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    now: fn() -> Duration,
) -> Duration {
    let mut server_time = Duration::ZERO;
    let mut c = ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::new();
    for _ in 0..50 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let started = now();
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        server_time += now() - started;
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return server_time;
        }
    }
    panic!("handshake did not complete");
}

/// The server configuration the runtime uses (`server_config`: TLS 1.3 and 1.2, zlib
/// certificate compression with its cache), with resumption and tickets off so that every
/// handshake is a full one; `compress: false` takes the compressors out, as before compression.
fn server(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    compress: bool,
) -> Arc<ServerConfig> {
    let mut cfg = server_config(resolver, None).unwrap();
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    if !compress {
        cfg.cert_compressors = vec![];
    }
    Arc::new(cfg)
}

/// The bytes of the server's first flight (ServerHello to Finished): what compression shrinks.
fn server_flight(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> usize {
    let mut c = ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut buf).unwrap();
    }
    let mut rd = buf.as_slice();
    while !rd.is_empty() {
        s.read_tls(&mut rd).unwrap();
        s.process_new_packets().unwrap();
    }
    buf.clear();
    while s.wants_write() {
        s.write_tls(&mut buf).unwrap();
    }
    buf.len()
}

/// A TLS 1.3 client with resumption off. It offers certificate compression (the rustls
/// features' default decompressors), as rustls clients built with those features do.
fn client(verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let files = enclave_ratls::ca::init(&dir.path().join("ca"), "Bench").unwrap();
    let int_pem = std::fs::read_to_string(&files.intermediary_cert).unwrap();
    let int_key = std::fs::read_to_string(&files.intermediary_key).unwrap();
    let root = enclave_evidence::input::pem_certificates(&std::fs::read(&files.root_cert).unwrap())
        .unwrap()
        .remove(0);
    let tee = Arc::new(SimTee::open(&dir.path().join("sim"), Flavour::Tdx).unwrap());
    let sim_root = tee.pki().root_der().to_vec();
    let spec = LeafSpec {
        names: vec!["localhost".into()],
        lifetime_secs: 3600,
        config_root: Some([1; 32]),
        modules: vec![],
        workload: None,
        binding: Default::default(),
    };
    let ratls = Arc::new(RatlsResolver::new(
        tee.clone() as Arc<dyn Tee>,
        IntermediaryCa::from_pem(&int_pem, &int_key).unwrap(),
        spec,
    ));
    ratls.current().unwrap();
    // The same leaf in the DICE binding (the quote as DICE tagged evidence, claims bound).
    let dice = Arc::new(RatlsResolver::new(
        tee.clone() as Arc<dyn Tee>,
        IntermediaryCa::from_pem(&int_pem, &int_key).unwrap(),
        LeafSpec {
            names: vec!["localhost".into()],
            lifetime_secs: 3600,
            config_root: Some([1; 32]),
            modules: vec![],
            workload: None,
            binding: enclave_ratls::binding::BindingFormat::Dice,
        },
    ));
    dice.current().unwrap();
    let collateral = Collateral::from_json(
        std::fs::read(dir.path().join("sim/collateral-tdx.json"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();

    // The plain certificate: same CA, same key type and names, no RA-TLS extensions.
    let plain_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&int_pem, rcgen::KeyPair::from_pem(&int_key).unwrap())
            .unwrap();
    let plain_cert = params.signed_by(&plain_key, &issuer).unwrap();
    let int_der = enclave_evidence::input::pem_certificates(int_pem.as_bytes())
        .unwrap()
        .remove(0);
    let signing = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain_key.serialize_der(),
        )))
        .unwrap();
    let plain_chain = vec![
        CertificateDer::from(plain_cert.der().to_vec()),
        CertificateDer::from(int_der),
    ];
    let plain = Arc::new(rustls::sign::SingleCertAndKey::from(
        rustls::sign::CertifiedKey::new(plain_chain.clone(), signing),
    ));

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(root.clone())).unwrap();
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let plain_client = client(webpki);

    let cases: [(&str, Arc<dyn rustls::server::ResolvesServerCert>); 3] = [
        ("plain certificate", plain.clone()),
        ("cached RA-TLS certificate", ratls.clone()),
        ("cached RA-TLS certificate, DICE binding", dice.clone()),
    ];

    if std::env::args().any(|a| a == "server-share") {
        let chains = [
            ("plain", plain_chain.clone()),
            ("RA-TLS", ratls.current().unwrap().cert.clone()),
            ("RA-TLS DICE", dice.current().unwrap().cert.clone()),
        ];
        server_share(&plain_client, &cases, &chains);
        return;
    }

    let mut g = c.benchmark_group("tls13-server-side");
    for (name, resolver) in &cases {
        for compress in [false, true] {
            let s = server(resolver.clone(), compress);
            let name = if compress {
                format!("{name}, compressed")
            } else {
                name.to_string()
            };
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| handshake_on(&plain_client, &s, cpu))
                        .sum()
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("tls13-handshake");
    for compress in [false, true] {
        let tail = if compress { ", compressed" } else { "" };
        g.bench_function(
            format!("plain certificate (plain rustls client){tail}"),
            |b| {
                let s = server(plain.clone(), compress);
                b.iter_custom(|iters| both_sides(iters, || handshake(black_box(&plain_client), &s)))
            },
        );
        g.bench_function(
            format!("cached RA-TLS certificate (plain rustls client){tail}"),
            |b| {
                let s = server(ratls.clone(), compress);
                b.iter_custom(|iters| both_sides(iters, || handshake(black_box(&plain_client), &s)))
            },
        );
    }
    // Warm: one verifier (and its appraisal cache) for every handshake. Cold: a new one each time.
    // Both against the server as the runtime configures it (compression on).
    let ratls_verifier = || {
        let v = RatlsVerifier::new(Verifier::with_intel(IntelVerifier::with_root(
            sim_root.clone(),
            true,
        )))
        .with_operator_root(root.clone())
        .with_collateral(collateral.clone());
        Arc::new(RatlsServerVerifier::new(v, Freshness::Deterministic))
    };
    g.bench_function("RA-TLS client verification, warm appraisal cache", |b| {
        let s = server(ratls.clone(), true);
        let cfg = client(ratls_verifier());
        b.iter_custom(|iters| both_sides(iters, || handshake(black_box(&cfg), &s)))
    });
    g.bench_function(
        "RA-TLS client verification, cold (fresh verifier per handshake)",
        |b| {
            let s = server(ratls.clone(), true);
            b.iter_custom(|iters| both_sides(iters, || handshake(&client(ratls_verifier()), &s)))
        },
    );
    g.finish();
}

/// The thread CPU time of `iters` runs of `f` (both sides of a handshake run on this thread).
fn both_sides<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let started = cpu();
    for _ in 0..iters {
        black_box(f());
    }
    cpu() - started
}

/// Rounds of the paired run, and handshakes per case per round.
const ROUNDS: usize = 150;
const BATCH: usize = 40;

/// The paired run (see the module docs): every case, uncompressed and compressed, a batch each
/// per round, in an order rotated each round; per case the median per-handshake time, server
/// share and both sides; per RA-TLS case the medians (and quartiles) of the per-round ratios.
fn server_share(
    client: &Arc<ClientConfig>,
    cases: &[(&str, Arc<dyn rustls::server::ResolvesServerCert>)],
    chains: &[(&str, Vec<CertificateDer<'static>>)],
) {
    let mut configs = Vec::new();
    for (name, resolver) in cases {
        for compress in [false, true] {
            configs.push((
                name.to_string(),
                compress,
                server(resolver.clone(), compress),
            ));
        }
    }
    println!("server-share: {ROUNDS} rounds x {BATCH} full TLS 1.3 handshakes per case");
    for (name, compress, s) in &configs {
        println!(
            "  server flight {:>5} bytes: {name}{}",
            server_flight(client, s),
            if *compress { ", compressed" } else { "" }
        );
    }
    for (what, chain) in chains {
        compressors(what, chain);
    }
    // Warm-up: every cache (the compression cache included) filled, the CPU clocked up.
    for (_, _, s) in &configs {
        for _ in 0..BATCH {
            handshake(client, s);
        }
    }
    let n = configs.len();
    // [round][config] = (server share, both sides), per handshake, in µs.
    let mut times = vec![vec![(0.0, 0.0); n]; ROUNDS];
    for (round, row) in times.iter_mut().enumerate() {
        for k in 0..n {
            let i = (k + round) % n;
            let started = cpu();
            let server_time: Duration = (0..BATCH)
                .map(|_| handshake_on(client, &configs[i].2, cpu))
                .sum();
            let both = cpu() - started;
            row[i] = (
                server_time.as_secs_f64() * 1e6 / BATCH as f64,
                both.as_secs_f64() * 1e6 / BATCH as f64,
            );
        }
    }
    let label = |i: usize| {
        format!(
            "{}{}",
            configs[i].0,
            if configs[i].1 { ", compressed" } else { "" }
        )
    };
    println!(
        "  per handshake, thread CPU time, median [quartiles] over rounds, µs: server share | both sides"
    );
    for i in 0..n {
        let server = quartiles(times.iter().map(|r| r[i].0).collect());
        let both = quartiles(times.iter().map(|r| r[i].1).collect());
        println!(
            "    {:<52} {:6.1} [{:.1}, {:.1}] | {:6.1} [{:.1}, {:.1}]",
            label(i),
            server.1,
            server.0,
            server.2,
            both.1,
            both.0,
            both.2
        );
    }
    // The rate ratio of case i against anchor a: time(a) / time(i), round by round. Configs
    // alternate uncompressed, compressed; the plain leaf's two come first.
    println!("  rate ratios (anchor time / case time), median [quartiles] of per-round ratios:");
    for i in 2..n {
        let mut anchors = vec![(i % 2, "plain leaf, same compression")];
        if i % 2 == 1 {
            anchors.push((0, "plain leaf, uncompressed"));
        }
        for (a, what) in anchors {
            let server = quartiles(times.iter().map(|r| r[a].0 / r[i].0).collect());
            let both = quartiles(times.iter().map(|r| r[a].1 / r[i].1).collect());
            println!(
                "    {:<52} vs {what}: server {:.3} [{:.3}, {:.3}] | both sides {:.3} [{:.3}, {:.3}]",
                label(i),
                server.1,
                server.0,
                server.2,
                both.1,
                both.0,
                both.2
            );
        }
    }
    // What compression itself buys each leaf.
    for i in (0..n).step_by(2) {
        let server = quartiles(times.iter().map(|r| r[i].0 / r[i + 1].0).collect());
        println!(
            "    {:<52} compressed vs not: server {:.3} [{:.3}, {:.3}]",
            configs[i].0, server.1, server.0, server.2
        );
    }
}

/// (first quartile, median, third quartile).
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

/// What each compressor rustls offers makes of `chain`'s Certificate message, and what it costs
/// at each level: the cache compresses a chain once at the best level; without a cache rustls
/// compresses every handshake at the fast one.
fn compressors(what: &str, chain: &[CertificateDer<'static>]) {
    use rustls::compress::{CertCompressor, CompressionLevel};
    // The TLS 1.3 Certificate message body (RFC 8446 4.4.2): empty context, then each entry as a
    // 24-bit length, the DER and no extensions.
    let u24 = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u32).to_be_bytes()[1..]);
    let mut entries = Vec::new();
    for cert in chain {
        u24(&mut entries, cert.len());
        entries.extend_from_slice(cert);
        entries.extend_from_slice(&[0, 0]);
    }
    let mut message = vec![0];
    u24(&mut message, entries.len());
    message.extend_from_slice(&entries);
    // Only zlib is built (the rustls `zlib` feature); brotli was measured once, see the doc.
    for compressor in [rustls::compress::ZLIB_COMPRESSOR as &dyn CertCompressor] {
        for level in [CompressionLevel::Interactive, CompressionLevel::Amortized] {
            let mut best = Duration::MAX;
            let mut size = 0;
            for _ in 0..20 {
                let started = Instant::now();
                size = compressor.compress(message.clone(), level).unwrap().len();
                best = best.min(started.elapsed());
            }
            println!(
                "  {what}: certificate message {} bytes; {:?} {level:?}: {size} bytes, {:.0} µs (fastest of 20)",
                message.len(),
                compressor.algorithm(),
                best.as_secs_f64() * 1e6
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
