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
    RatlsClientVerifier, RatlsResolver, RatlsServerVerifier, client_config, provider, server_config,
};
use enclave_ratls::{KeyBinding, RatlsVerifier};
use enclave_tee::Tee;
use enclave_tee::sim::{Flavour, SimTee};

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

/// Connect, say hi, and return what the server answered (or the TLS error).
fn call(port: u16, config: rustls::ClientConfig) -> Result<String, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"hi\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out).ok();
    if out.is_empty() {
        return Err("no answer".into());
    }
    Ok(out)
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
    assert_eq!(
        call(port, client_config(v.clone(), None, None).unwrap()).unwrap(),
        "hello\n"
    );
    let report = v.last().unwrap().unwrap();
    assert_eq!(report.appraisal.tee, TeeKind::Tdx);
    assert!(report.appraisal.simulated && report.chain_verified);
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
    call(port, client_config(v2.clone(), None, None).unwrap()).unwrap();
    assert_eq!(v2.last().unwrap().unwrap().not_before, report.not_before);
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
    call(port, client_config(v.clone(), Some(&nonce), None).unwrap()).unwrap();
    assert_eq!(
        v.last().unwrap().unwrap().key_binding,
        KeyBinding::EnclaveOs { mode: "nonce" }
    );
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
    assert!(call(port, client_config(v.clone(), None, None).unwrap()).is_err());
    assert!(v.last().unwrap().unwrap_err().contains("nonce"));
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
    assert!(call(port, client_config(v.clone(), None, None).unwrap()).is_err());
    assert!(v.last().unwrap().unwrap_err().contains("config root"));

    let untrusted = RatlsVerifier::new(Verifier::default()).with_operator_root(p.root.clone());
    let v = Arc::new(RatlsServerVerifier::new(
        untrusted,
        Freshness::Deterministic,
    ));
    assert!(call(port, client_config(v.clone(), None, None).unwrap()).is_err());
    assert!(v.last().unwrap().unwrap_err().contains("--trust-sim"));

    let other = pki();
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&other, &tee),
        Freshness::Deterministic,
    ));
    assert!(call(port, client_config(v.clone(), None, None).unwrap()).is_err());
    assert!(v.last().unwrap().unwrap_err().contains("operator root"));
    server.join().unwrap();
}

#[test]
fn mutual_ratls() {
    let p = pki();
    let (server_res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    let (client_res, _) = resolver(&p, Flavour::Sgx, [5; 32]);
    let clients = Arc::new(RatlsClientVerifier::new(
        verifier(&p, &tee).with_config_root([5; 32]),
    ));
    let (port, server) = serve(server_config(server_res, Some(clients.clone())).unwrap(), 2);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    assert_eq!(
        call(
            port,
            client_config(v.clone(), None, Some(client_res)).unwrap()
        )
        .unwrap(),
        "hello\n"
    );
    let client_report = clients.last().unwrap().unwrap();
    assert_eq!(client_report.appraisal.tee, TeeKind::Sgx);
    // Without a client certificate, the server refuses.
    let answered = call(port, client_config(v, None, None).unwrap());
    assert!(answered.is_err(), "{answered:?}");
    server.join().unwrap();
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

/// A server that answers `GET /.well-known/enclave-os/attestation` with channel-bound evidence.
fn serve_channel(resolver: Arc<RatlsResolver>, n: usize) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = Arc::new(server_config(resolver.clone(), None).unwrap());
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
            let mut req = [0u8; 1024];
            let Ok(k) = tls.read(&mut req) else { continue };
            let request = String::from_utf8_lossy(&req[..k]).to_string();
            let (status, body) =
                if request.starts_with(&format!("GET {} ", enclave_ratls::channel::PATH)) {
                    let exporter = enclave_ratls::channel::exporter(&tls.conn).unwrap();
                    let spki = resolver.current_spki().unwrap();
                    (
                        "200 OK",
                        enclave_ratls::channel::respond(resolver.tee().as_ref(), &spki, &exporter)
                            .unwrap(),
                    )
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

/// Handshake, then fetch channel evidence; returns (leaf, exporter, body).
fn fetch_channel(port: u16, v: Arc<RatlsServerVerifier>) -> (Vec<u8>, [u8; 32], Vec<u8>) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::new(client_config(v, None, None).unwrap()),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        enclave_ratls::channel::PATH
    )
    .unwrap();
    tls.flush().unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).ok();
    let exporter = enclave_ratls::channel::exporter(&tls.conn).unwrap();
    let leaf = tls.conn.peer_certificates().unwrap()[0].to_vec();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (leaf, exporter, response[split..].to_vec())
}

#[test]
fn channel_bound_evidence_binds_the_connection_and_a_relay_fails() {
    let p = pki();
    let (res, tee) = resolver(&p, Flavour::Tdx, [3; 32]);
    res.current().unwrap();
    let (port, server) = serve_channel(res, 2);
    let v = Arc::new(RatlsServerVerifier::new(
        verifier(&p, &tee),
        Freshness::Deterministic,
    ));
    let (leaf, exporter, body) = fetch_channel(port, v.clone());
    let now = enclave_evidence::time::now();
    let r =
        enclave_ratls::channel::verify(&verifier(&p, &tee), &body, &leaf, &exporter, now).unwrap();
    assert_eq!(r.key_binding, KeyBinding::EnclaveOs { mode: "channel" });
    assert_eq!(r.appraisal.tee, TeeKind::Tdx);
    // Evidence fetched on one connection, presented as if for another: rejected.
    let (leaf2, exporter2, _) = fetch_channel(port, v);
    assert_ne!(exporter, exporter2);
    let err = enclave_ratls::channel::verify(&verifier(&p, &tee), &body, &leaf2, &exporter2, now)
        .unwrap_err();
    assert!(err.to_string().contains("another connection"), "{err}");
    server.join().unwrap();
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
    assert!(call(port, client_config(v.clone(), None, None).unwrap()).is_err());
    assert!(
        v.last().unwrap().unwrap_err().contains("signature"),
        "{:?}",
        v.last()
    );
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
    assert!(call(port, client_config(v.clone(), None, None).unwrap()).is_err());
    let reason = v.last().unwrap().unwrap_err();
    assert!(
        reason.contains("expired") || reason.contains("Expired"),
        "{reason}"
    );
    server.join().unwrap();
}
