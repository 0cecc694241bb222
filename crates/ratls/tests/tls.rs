//! RA-TLS over real TLS on loopback: every mode, mutual RA-TLS, rejections, and a TLS client
//! nobody here wrote (openssl).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use enclave_evidence::intel::IntelVerifier;
use enclave_evidence::{TeeKind, Verifier};
use enclave_ratls::binding::Freshness;
use enclave_ratls::issue::{IntermediaryCa, LeafSpec};
use enclave_ratls::tls::{
    RatlsClientVerifier, RatlsResolver, RatlsServerVerifier, SniResolver, client_config,
    io_rejection, provider, recording, server_config,
};
use enclave_ratls::{KeyBinding, RatlsVerifier, Report};
use enclave_tee::Tee;
use enclave_tee::sim::{Flavour, SimTee};
use rustls::pki_types::ServerName;
use rustls::server::ResolvesServerCert;

struct Pki {
    dir: tempfile::TempDir,
    root: Vec<u8>,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let files = enclave_ratls::ca::init(&dir.path().join("ca"), "Test Operator").unwrap();
    let root = enclave_evidence::input::pem_certificates(&std::fs::read(&files.root_cert).unwrap())
        .unwrap()
        .remove(0);
    Pki { dir, root }
}

fn ca(p: &Pki) -> IntermediaryCa {
    let d = p.dir.path().join("ca");
    IntermediaryCa::from_pem(
        &std::fs::read_to_string(d.join("intermediary.crt.pem")).unwrap(),
        &std::fs::read_to_string(d.join("intermediary.key.pem")).unwrap(),
    )
    .unwrap()
}

fn resolver(p: &Pki, flavour: Flavour, config_root: [u8; 32]) -> (Arc<RatlsResolver>, Arc<SimTee>) {
    let tee = Arc::new(SimTee::open(&p.dir.path().join("sim"), flavour).unwrap());
    let spec = LeafSpec {
        names: vec!["localhost".into()],
        lifetime_secs: 3600,
        config_root: Some(config_root),
        modules: vec![],
        workload: None,
        binding: Default::default(),
    };
    (
        Arc::new(RatlsResolver::new(tee.clone() as Arc<dyn Tee>, ca(p), spec)),
        tee,
    )
}

fn verifier(p: &Pki, tee: &SimTee) -> RatlsVerifier {
    RatlsVerifier::new(Verifier::with_intel(IntelVerifier::with_root(
        tee.pki().root_der().to_vec(),
        true,
    )))
    .with_operator_root(p.root.clone())
}

/// Serve `n` connections: each reads one line and answers "hello\n". Bounded by timeouts.
fn serve(config: rustls::ServerConfig, n: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(config);
    let handle = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 64];
            if let Ok(k) = tls.read(&mut buf)
                && k > 0
            {
                let _ = tls.write_all(b"hello\n");
                let _ = tls.flush();
            }
        }
    });
    (port, handle)
}

/// Connect to `port` as `name`, say hi: what the server answered and the report of this very
/// connection, or why the handshake failed (the RA-TLS reason when the verifier rejected).
fn call_as(
    port: u16,
    name: &str,
    v: &RatlsServerVerifier,
    config: rustls::ClientConfig,
) -> Result<(String, Report), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name.clone()).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let reason =
        |e: std::io::Error| io_rejection(&e).map_or_else(|| e.to_string(), ToString::to_string);
    tls.write_all(b"hi\n").map_err(reason)?;
    let mut out = String::new();
    if let Err(e) = tls.read_to_string(&mut out)
        && out.is_empty()
    {
        return Err(reason(e));
    }
    if out.is_empty() {
        return Err("no answer".into());
    }
    let report = v
        .peer_report(&tls.conn, &name, enclave_evidence::time::now())
        .map_err(|e| e.to_string())?;
    Ok((out, report))
}

/// [`call_as`] for `localhost`, the name the test leaves carry.
fn call(
    port: u16,
    v: &RatlsServerVerifier,
    config: rustls::ClientConfig,
) -> Result<(String, Report), String> {
    call_as(port, "localhost", v, config)
}

#[test]
fn deterministic_mode_over_tls() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let (port, server) = serve(server_config(res, None).unwrap(), 2);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee).with_config_root([3; 32]),
        Freshness::Deterministic,
    ));
    let (answer, report) = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap();
    assert_eq!(answer, "hello\n");
    assert_eq!(report.appraisal.tee, TeeKind::Tdx);
    assert!(report.appraisal.simulated && report.chain_verified);
    assert_eq!(report.name.as_deref(), Some("localhost"));
    assert_eq!(
        report.key_binding,
        KeyBinding::EnclaveOs {
            mode: "deterministic"
        }
    );
    // The cached leaf is served again: same certificate, same evidence.
    let v2 = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    let (_, again) = call(port, &v2, client_config(v2.clone(), None, None).unwrap()).unwrap();
    assert_eq!(again.not_before, report.not_before);
    server.join().unwrap();
}

#[test]
fn challenge_mode_binds_the_clients_nonce() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Sgx, [3; 32]);
    let (port, server) = serve(server_config(res, None).unwrap(), 1);
    let nonce = b"0123456789abcdef0123456789abcdef".to_vec();
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Nonce(nonce.clone()),
    ));
    let (_, report) = call(
        port,
        &v,
        client_config(v.clone(), Some(&nonce), None).unwrap(),
    )
    .unwrap();
    assert_eq!(report.key_binding, KeyBinding::EnclaveOs { mode: "nonce" });
    server.join().unwrap();
}

#[test]
fn a_client_expecting_a_nonce_rejects_a_cached_certificate() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Sgx, [3; 32]);
    let (port, server) = serve(server_config(res, None).unwrap(), 1);
    // Expect a nonce but do not send it: the server's cached (deterministic) leaf must fail.
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Nonce(b"fresh".to_vec()),
    ));
    let reason = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap_err();
    assert!(reason.contains("nonce"), "{reason}");
    server.join().unwrap();
}

#[test]
fn wrong_config_root_and_untrusted_simulation_are_rejected_in_the_handshake() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let (port, server) = serve(server_config(res, None).unwrap(), 3);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee).with_config_root([4; 32]),
        Freshness::Deterministic,
    ));
    let reason = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap_err();
    assert!(reason.contains("config root"), "{reason}");

    let untrusted = RatlsVerifier::new(Verifier::default()).with_operator_root(p.root.clone());
    let v = Arc::new(RatlsServerVerifier::new(
        untrusted,
        Freshness::Deterministic,
    ));
    let reason = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap_err();
    assert!(reason.contains("--trust-sim"), "{reason}");

    let other = pki();
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&other, &tee),
        Freshness::Deterministic,
    ));
    let reason = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap_err();
    assert!(reason.contains("operator root"), "{reason}");
    server.join().unwrap();
}

#[test]
fn a_certificate_for_another_name_is_refused_in_the_handshake() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let (port, server) = serve(server_config(res, None).unwrap(), 2);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    // The leaf is for localhost: everything else about it verifies, and still it is refused.
    let reason = call_as(
        port,
        "bank.example.com",
        &v,
        client_config(v.clone(), None, None).unwrap(),
    )
    .unwrap_err();
    assert!(
        reason.contains("'localhost'") && reason.contains("'bank.example.com'"),
        "{reason}"
    );
    // An IP address is checked against the IP addresses the leaf names (it names none).
    let reason = call_as(
        port,
        "127.0.0.1",
        &v,
        client_config(v.clone(), None, None).unwrap(),
    )
    .unwrap_err();
    assert!(
        reason.contains("'localhost'") && reason.contains("'127.0.0.1'"),
        "{reason}"
    );
    server.join().unwrap();
}

/// Serve `n` connections requiring RA-TLS client certificates checked by `clients`; each
/// connection's client report (or the reason its client was refused) goes to the receiver.
fn serve_mutual(
    server_res: Arc<RatlsResolver>,
    clients: Arc<RatlsClientVerifier>,
    n: usize,
) -> (
    u16,
    std::sync::mpsc::Receiver<Result<Report, String>>,
    std::thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(server_config(server_res, Some(clients.clone())).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 64];
            let outcome = match tls.read(&mut buf) {
                Ok(_) => clients
                    .peer_report(&tls.conn, enclave_evidence::time::now())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(io_rejection(&e).map_or_else(|| e.to_string(), ToString::to_string)),
            };
            if outcome.is_ok() {
                let _ = tls.write_all(b"hello\n");
                let _ = tls.flush();
            }
            tx.send(outcome).unwrap();
        }
    });
    (port, rx, handle)
}

#[test]
fn mutual_ratls() {
    let p = pki();
    let (server_res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let (client_res, _) = resolver(&p, Flavour::Sgx, [5; 32]);
    // No expected name: the client's names are not checked.
    let clients = Arc::new(RatlsClientVerifier::new(
        verifier(&p, &tee).with_config_root([5; 32]),
    ));
    let (port, reports, server) = serve_mutual(server_res, clients, 2);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    let (answer, _) = call(
        port,
        &v,
        client_config(v.clone(), None, Some(client_res)).unwrap(),
    )
    .unwrap();
    assert_eq!(answer, "hello\n");
    let client_report = reports.recv().unwrap().unwrap();
    assert_eq!(client_report.appraisal.tee, TeeKind::Sgx);
    assert_eq!(client_report.name, None);
    // Without a client certificate, the server refuses.
    let answered = call(port, &v, client_config(v.clone(), None, None).unwrap());
    assert!(answered.is_err(), "{answered:?}");
    assert!(reports.recv().unwrap().is_err());
    server.join().unwrap();
}

#[test]
fn mutual_ratls_checks_the_clients_name_when_one_is_expected() {
    let p = pki();
    let (server_res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    // The client's leaf is for localhost.
    let (client_res, _) = resolver(&p, Flavour::Sgx, [5; 32]);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));

    let bank = RatlsClientVerifier::new(verifier(&p, &tee))
        .expecting(ServerName::try_from("bank.example.com").unwrap());
    let (port, reports, server) = serve_mutual(server_res.clone(), Arc::new(bank), 1);
    let answered = call(
        port,
        &v,
        client_config(v.clone(), None, Some(client_res.clone())).unwrap(),
    );
    assert!(answered.is_err(), "{answered:?}");
    let reason = reports.recv().unwrap().unwrap_err();
    assert!(
        reason.contains("'localhost'") && reason.contains("'bank.example.com'"),
        "{reason}"
    );
    server.join().unwrap();

    let local = RatlsClientVerifier::new(verifier(&p, &tee))
        .expecting(ServerName::try_from("localhost").unwrap());
    let (port, reports, server) = serve_mutual(server_res, Arc::new(local), 1);
    call(
        port,
        &v,
        client_config(v.clone(), None, Some(client_res)).unwrap(),
    )
    .unwrap();
    let report = reports.recv().unwrap().unwrap();
    assert_eq!(report.name.as_deref(), Some("localhost"));
    assert_eq!(report.appraisal.tee, TeeKind::Sgx);
    server.join().unwrap();
}

#[test]
fn each_connection_gets_the_report_of_its_own_server() {
    let p = pki();
    let (tdx, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    // Same simulation PKI, other evidence: an SGX quote, another config root.
    let (sgx, _) = resolver(&p, Flavour::Sgx, [5; 32]);
    // One verifier, one client configuration, shared by every connection.
    let both = verifier(&p, &tee);
    let v = Arc::new(RatlsServerVerifier::new(both, Freshness::Deterministic));
    let config = client_config(v.clone(), None, None).unwrap();
    const ROUNDS: usize = 8;
    let (tdx_port, tdx_server) = serve(server_config(tdx, None).unwrap(), ROUNDS + 1);
    let (sgx_port, sgx_server) = serve(server_config(sgx, None).unwrap(), ROUNDS + 1);

    // Interleaved: the first connection's report is asked for after the second handshake.
    let open = |port: u16| {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ClientConnection::new(
            Arc::new(config.clone()),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(b"hi\n").unwrap();
        tls
    };
    let first = open(tdx_port);
    let second = open(sgx_port);
    let localhost = ServerName::try_from("localhost").unwrap();
    let now = enclave_evidence::time::now();
    let r1 = v.peer_report(&first.conn, &localhost, now).unwrap();
    let r2 = v.peer_report(&second.conn, &localhost, now).unwrap();
    assert_eq!(
        (r1.appraisal.tee, r1.config_root),
        (TeeKind::Tdx, Some(hex::encode([3; 32])))
    );
    assert_eq!(
        (r2.appraisal.tee, r2.config_root),
        (TeeKind::Sgx, Some(hex::encode([5; 32])))
    );
    drop((first, second));

    // Concurrent: handshakes to both servers at once, each checked against its own server.
    std::thread::scope(|scope| {
        let calls: Vec<_> = (0..ROUNDS)
            .flat_map(|_| [(tdx_port, TeeKind::Tdx), (sgx_port, TeeKind::Sgx)])
            .map(|(port, kind)| {
                let (v, config) = (v.clone(), config.clone());
                scope.spawn(move || (kind, call(port, &v, config).unwrap().1))
            })
            .collect();
        for c in calls {
            let (kind, report) = c.join().unwrap();
            assert_eq!(report.appraisal.tee, kind);
        }
    });
    tdx_server.join().unwrap();
    sgx_server.join().unwrap();
}

#[test]
fn openssl_connects_and_sees_the_extensions() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        panic!("openssl is required (.ci/run installs it)");
    }
    let p = pki();
    let (res, _) = resolver(&p, Flavour::Tdx, [3; 32]);
    let (port, server) = serve(server_config(res, None).unwrap(), 1);
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-showcerts",
            "-CAfile",
        ])
        .arg(p.dir.path().join("ca/root.crt.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"hi\n")?;
            child.wait_with_output()
        })
        .unwrap();
    server.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // openssl x509 -text on the leaf it received shows our extensions.
    let leaf_pem: String = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|rest| {
            format!(
                "-----BEGIN CERTIFICATE-----{}-----END CERTIFICATE-----\n",
                rest.split("-----END CERTIFICATE-----").next().unwrap()
            )
        })
        .unwrap();
    let mut x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(leaf_pem.as_bytes())
        .unwrap();
    let shown = String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).to_string();
    for oid in ["1.2.840.113741.1.5.5.1.6", "1.3.6.1.4.1.65230.1.1"] {
        assert!(shown.contains(oid), "{oid} not shown:\n{shown}");
    }
    // The seed binding carries the quote once: no DICE copy.
    assert!(!shown.contains("2.23.133.5.4.9"), "{shown}");
}

/// A server that answers `GET /.well-known/enclave-os/attestation` with channel-bound evidence
/// for the leaf each connection presented, as the runtime does; or, with `bind_instead`, for that
/// resolver's cached leaf whatever the connection presented (what the runtime did before).
fn serve_channel(
    resolver: Arc<dyn ResolvesServerCert>,
    tee: Arc<dyn Tee>,
    bind_instead: Option<Arc<RatlsResolver>>,
    n: usize,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(server_config(resolver, None).unwrap());
    let handle = std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let (config, chosen) = recording(&config);
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut req = [0u8; 1024];
            let Ok(k) = tls.read(&mut req) else { continue };
            let request = String::from_utf8_lossy(&req[..k]).to_string();
            let (status, body) =
                if request.starts_with(&format!("GET {} ", enclave_ratls::channel::PATH)) {
                    let exporter = enclave_ratls::channel::exporter(&tls.conn).unwrap();
                    let body = match &bind_instead {
                        Some(r) => enclave_ratls::channel::respond(
                            tee.as_ref(),
                            &r.current_spki().unwrap(),
                            &exporter,
                        ),
                        None => enclave_ratls::channel::respond_for_leaf(
                            tee.as_ref(),
                            chosen.presented(&tls.conn).unwrap(),
                            &exporter,
                        ),
                    };
                    ("200 OK", body.unwrap())
                } else {
                    ("404 Not Found", String::new())
                };
            let _ = write!(
                tls,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.flush();
        }
    });
    (port, handle)
}

/// Handshake as `name`, then fetch channel evidence; returns (leaf, exporter, body).
fn fetch_channel(
    port: u16,
    name: &str,
    v: Arc<RatlsServerVerifier>,
) -> (Vec<u8>, [u8; 32], Vec<u8>) {
    let client = enclave_http::Client::new(Arc::new(client_config(v, None, None).unwrap()));
    let uri = format!("https://{name}:{port}{}", enclave_ratls::channel::PATH)
        .parse()
        .unwrap();
    let request = enclave_http::Request::get(uri).via("127.0.0.1", port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = client.connect(request).await.unwrap();
        let exporter = enclave_ratls::channel::exporter(conn.tls()).unwrap();
        let leaf = conn.tls().peer_certificates().unwrap()[0].to_vec();
        let response = conn.send().await.unwrap();
        assert_eq!(response.status, enclave_http::StatusCode::OK);
        (leaf, exporter, response.body)
    })
}

#[test]
fn channel_bound_evidence_binds_the_connection_and_a_relay_fails() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    res.current().unwrap();
    let (port, server) = serve_channel(res, tee.clone(), None, 2);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    let (leaf, exporter, body) = fetch_channel(port, "localhost", v.clone());
    let now = enclave_evidence::time::now();
    let r =
        enclave_ratls::channel::verify(&verifier(&p, &tee), &body, &leaf, &exporter, now).unwrap();
    assert_eq!(r.key_binding, KeyBinding::EnclaveOs { mode: "channel" });
    assert_eq!(r.appraisal.tee, TeeKind::Tdx);
    // Evidence fetched on one connection, presented as if for another: rejected.
    let (leaf2, exporter2, _) = fetch_channel(port, "localhost", v);
    assert_ne!(exporter, exporter2);
    let err = enclave_ratls::channel::verify(&verifier(&p, &tee), &body, &leaf2, &exporter2, now)
        .unwrap_err();
    assert!(err.to_string().contains("another connection"), "{err}");
    server.join().unwrap();
}

#[test]
fn channel_bound_evidence_binds_the_workload_leaf_the_sni_chose() {
    let p = pki();
    let (enclave, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let app = Arc::new(RatlsResolver::new(
        tee.clone() as Arc<dyn Tee>,
        ca(&p),
        LeafSpec {
            names: vec!["app.localhost".into()],
            lifetime_secs: 3600,
            config_root: Some([7; 32]),
            modules: vec![],
            workload: Some(enclave_ratls::issue::WorkloadIdentity {
                config_root: [7; 32],
                code_digest: [8; 32],
                image: None,
                image_config: None,
                runtime_spec: None,
                decrypted_code: None,
                key_reference: None,
                key_source: "tee-generated".into(),
                declared: Default::default(),
            }),
            binding: Default::default(),
        },
    ));
    let sni = Arc::new(SniResolver::new(
        enclave.clone(),
        vec![("app".into(), vec!["app.localhost".into()], app)],
    ));
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    let now = enclave_evidence::time::now();

    let (port, server) = serve_channel(sni.clone(), tee.clone(), None, 1);
    let (leaf, exporter, body) = fetch_channel(port, "app.localhost", v.clone());
    let r =
        enclave_ratls::channel::verify(&verifier(&p, &tee), &body, &leaf, &exporter, now).unwrap();
    assert_eq!(r.workload.unwrap().code_digest, [8; 32]);
    assert_eq!(r.config_root, Some(hex::encode([7; 32])));
    server.join().unwrap();

    // Evidence for the enclave-wide key over a workload's connection: refused, naming both keys.
    let (port, server) = serve_channel(sni, tee.clone(), Some(enclave), 1);
    let (leaf, exporter, body) = fetch_channel(port, "app.localhost", v);
    let err = enclave_ratls::channel::verify(&verifier(&p, &tee), &body, &leaf, &exporter, now)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not the key of the certificate this connection presented"),
        "{err}"
    );
    server.join().unwrap();
}

#[test]
fn a_resumed_session_presented_no_certificate_to_bind() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(server_config(res, None).unwrap());
    let server = std::thread::spawn(move || {
        let mut presented = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let (config, chosen) = recording(&config);
            let mut tls =
                rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
            let mut buf = [0u8; 3];
            tls.read_exact(&mut buf).unwrap();
            presented.push((
                tls.conn.handshake_kind(),
                chosen.presented(&tls.conn).cloned(),
            ));
            tls.write_all(b"hello\n").unwrap();
            tls.flush().unwrap();
        }
        presented
    });
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    // One client configuration: the second connection resumes the first one's session.
    let config = client_config(v.clone(), None, None).unwrap();
    call(port, &v, config.clone()).unwrap();
    let (_, resumed_report) = call(port, &v, config).unwrap();
    let presented = server.join().unwrap();
    assert_eq!(presented[0].0, Some(rustls::HandshakeKind::Full));
    let first = presented[0]
        .1
        .as_ref()
        .expect("a full handshake presents its leaf");
    assert_eq!(presented[1].0, Some(rustls::HandshakeKind::Resumed));
    assert_eq!(presented[1].1, None);
    // The client still holds (and reports) the first session's certificate.
    assert_eq!(
        resumed_report.subject,
        enclave_ratls::RatlsCertificate::parse(first)
            .unwrap()
            .subject
    );
}

/// Serve one fixed certificate chain (the resolver of a misbehaving server).
fn serve_fixed(
    leaf: &enclave_ratls::issue::Leaf,
    ca: &IntermediaryCa,
    cert_der: Vec<u8>,
) -> (u16, std::thread::JoinHandle<()>) {
    let key = provider()
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            leaf.key_der.to_vec().into(),
        ))
        .unwrap();
    let ck = rustls::sign::CertifiedKey::new(
        vec![
            rustls::pki_types::CertificateDer::from(cert_der),
            rustls::pki_types::CertificateDer::from(ca.cert_der().to_vec()),
        ],
        key,
    );
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(ck)));
    serve(config, 1)
}

#[test]
fn tampered_evidence_and_stale_certificates_are_rejected_in_the_handshake() {
    use enclave_ratls::issue::{issue, issue_at};
    let p = pki();
    let tee = SimTee::open(&p.dir.path().join("sim"), Flavour::Sgx).unwrap();
    let ca = ca(&p);
    let spec = LeafSpec {
        names: vec!["localhost".into()],
        lifetime_secs: 3600,
        config_root: Some([3; 32]),
        modules: vec![],
        workload: None,
        binding: Default::default(),
    };

    // Tampered evidence: one byte of the quote's body changed inside the certificate. With no
    // operator root the broken certificate signature is not what stops it: the evidence is.
    let leaf = issue(&tee, &ca, &spec, &Freshness::Deterministic).unwrap();
    let c = enclave_ratls::RatlsCertificate::parse(&leaf.cert_der).unwrap();
    let at = leaf
        .cert_der
        .windows(c.evidence().len())
        .position(|w| w == c.evidence())
        .unwrap();
    let mut tampered = leaf.cert_der.clone();
    tampered[at + 48 + 64] ^= 1;
    let (port, server) = serve_fixed(&leaf, &ca, tampered);
    let no_root = RatlsVerifier::new(Verifier::with_intel(IntelVerifier::with_root(
        tee.pki().root_der().to_vec(),
        true,
    )));
    let v = Arc::new(RatlsServerVerifier::new(no_root, Freshness::Deterministic));
    let reason = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap_err();
    assert!(reason.contains("signature"), "{reason}");
    server.join().unwrap();

    // A stale certificate: issued two days ago for an hour.
    let old = issue_at(
        &tee,
        &ca,
        &spec,
        &Freshness::Deterministic,
        enclave_evidence::time::now() - 2 * 86_400,
    )
    .unwrap();
    let (port, server) = serve_fixed(&old, &ca, old.cert_der.clone());
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    let reason = call(port, &v, client_config(v.clone(), None, None).unwrap()).unwrap_err();
    assert!(
        reason.contains("expired") || reason.contains("Expired"),
        "{reason}"
    );
    server.join().unwrap();
}

/// The bytes of the server's first flight, from `server` to `client`, in memory; then the rest
/// of the handshake, which must complete.
fn first_flight(server: Arc<rustls::ServerConfig>, client: rustls::ClientConfig) -> usize {
    let mut c =
        rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    let mut flight = None;
    for _ in 0..10 {
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
        flight.get_or_insert(buf.len());
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return flight.unwrap();
        }
    }
    panic!("the handshake did not complete");
}

#[test]
fn the_certificate_chain_is_sent_compressed_and_verified_in_full() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [5; 32]);
    let chain: usize = res.current().unwrap().cert.iter().map(|c| c.len()).sum();
    let config = Arc::new(server_config(res, None).unwrap());
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee).with_config_root([5; 32]),
        Freshness::Deterministic,
    ));

    // The runtime's per-connection copy shares the compression cache: one compression per leaf.
    let (copy, _) = recording(&config);
    assert!(Arc::ptr_eq(
        &copy.cert_compression_cache,
        &config.cert_compression_cache
    ));

    // Both sides built by this crate: the chain (a quote in the leaf) travels compressed, so the
    // whole flight is smaller than the chain alone, and the RA-TLS verifier accepts it.
    let compressed = first_flight(copy, client_config(v.clone(), None, None).unwrap());
    assert!(
        compressed < chain,
        "flight {compressed} bytes, chain {chain}"
    );
    // A client offering no compression gets the chain as it is.
    let mut plain_client = client_config(v.clone(), None, None).unwrap();
    plain_client.cert_decompressors = vec![];
    let uncompressed = first_flight(config.clone(), plain_client);
    assert!(
        uncompressed > chain,
        "flight {uncompressed} bytes, chain {chain}"
    );

    // What the client decompressed is verified as any chain: another config root is refused.
    let strict = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee).with_config_root([6; 32]),
        Freshness::Deterministic,
    ));
    let mut c = rustls::ClientConnection::new(
        Arc::new(client_config(strict, None, None).unwrap()),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut s = rustls::ServerConnection::new(config).unwrap();
    let mut buf = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut buf).unwrap();
    }
    s.read_tls(&mut buf.as_slice()).unwrap();
    s.process_new_packets().unwrap();
    buf.clear();
    while s.wants_write() {
        s.write_tls(&mut buf).unwrap();
    }
    let mut rd = buf.as_slice();
    let mut failed = false;
    while !rd.is_empty() && !failed {
        c.read_tls(&mut rd).unwrap();
        failed = c.process_new_packets().is_err();
    }
    assert!(failed, "a config root the leaf does not carry was accepted");
}
