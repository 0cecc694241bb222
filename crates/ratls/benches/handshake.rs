//! Full TLS 1.3 handshakes, in memory, with resumption off:
//!
//! - a server holding a cached RA-TLS certificate against the same server holding a plain
//!   certificate from the same CA, both checked by plain rustls (WebPkiServerVerifier with the
//!   operator root): the cost RA-TLS adds on the server and the wire;
//! - the client's RA-TLS verification per handshake, with the appraisal cache warm (one verifier
//!   for every handshake) and cold (a fresh verifier each time).
//!
//! Run: `cargo bench -p enclave-ratls --bench handshake`; figures in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_evidence::Verifier;
use enclave_evidence::intel::{Collateral, IntelVerifier};
use enclave_ratls::RatlsVerifier;
use enclave_ratls::binding::Freshness;
use enclave_ratls::issue::{IntermediaryCa, LeafSpec};
use enclave_ratls::tls::{RatlsResolver, RatlsServerVerifier, provider};
use enclave_tee::Tee;
use enclave_tee::sim::{Flavour, SimTee};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// One full handshake; returns the time spent in the server's half of it.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Duration {
    let mut server_time = Duration::ZERO;
    let mut c = ClientConnection::new(client.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::new();
    for _ in 0..50 {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let started = Instant::now();
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        server_time += started.elapsed();
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

fn server(resolver: Arc<dyn rustls::server::ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Arc::new(cfg)
}

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
    let plain = Arc::new(rustls::sign::SingleCertAndKey::from(
        rustls::sign::CertifiedKey::new(
            vec![
                CertificateDer::from(plain_cert.der().to_vec()),
                CertificateDer::from(int_der),
            ],
            signing,
        ),
    ));

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(root.clone())).unwrap();
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let plain_client = client(webpki);

    let mut g = c.benchmark_group("tls13-server-side");
    for (name, resolver) in [
        (
            "plain certificate",
            plain.clone() as Arc<dyn rustls::server::ResolvesServerCert>,
        ),
        (
            "cached RA-TLS certificate",
            ratls.clone() as Arc<dyn rustls::server::ResolvesServerCert>,
        ),
        (
            "cached RA-TLS certificate, DICE binding",
            dice.clone() as Arc<dyn rustls::server::ResolvesServerCert>,
        ),
    ] {
        let s = server(resolver);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&plain_client, &s)).sum())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("tls13-handshake");
    g.bench_function("plain certificate (plain rustls client)", |b| {
        let s = server(plain.clone());
        b.iter(|| handshake(black_box(&plain_client), &s))
    });
    g.bench_function("cached RA-TLS certificate (plain rustls client)", |b| {
        let s = server(ratls.clone());
        b.iter(|| handshake(black_box(&plain_client), &s))
    });
    // Warm: one verifier (and its appraisal cache) for every handshake. Cold: a new one each time.
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
        let s = server(ratls.clone());
        let cfg = client(ratls_verifier());
        b.iter(|| handshake(black_box(&cfg), &s))
    });
    g.bench_function(
        "RA-TLS client verification, cold (fresh verifier per handshake)",
        |b| {
            let s = server(ratls.clone());
            b.iter(|| handshake(&client(ratls_verifier()), &s))
        },
    );
    g.finish();
}

criterion_group!(handshake_benches, benches);
criterion_main!(handshake_benches);
