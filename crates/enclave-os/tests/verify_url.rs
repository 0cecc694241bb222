//! `enclave-os verify https://…` against an RA-TLS server on loopback running on the simulated TEE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use enclave_ratls::issue::{IntermediaryCa, LeafSpec};
use enclave_ratls::tls::{RatlsResolver, recording, server_config};
use enclave_tee::Tee;
use enclave_tee::sim::{Flavour, SimTee};

/// An RA-TLS server for `n` handshakes; returns its port.
fn server(dir: &Path, config_root: [u8; 32], n: usize) -> u16 {
    let ca_dir = dir.join("ca");
    enclave_ratls::ca::init(&ca_dir, "Test Operator").unwrap();
    let ca = IntermediaryCa::from_pem(
        &std::fs::read_to_string(ca_dir.join("intermediary.crt.pem")).unwrap(),
        &std::fs::read_to_string(ca_dir.join("intermediary.key.pem")).unwrap(),
    )
    .unwrap();
    let tee = Arc::new(SimTee::open(&dir.join("sim"), Flavour::Tdx).unwrap());
    let spec = LeafSpec {
        names: vec!["localhost".into()],
        lifetime_secs: 3600,
        config_root: Some(config_root),
        modules: vec![],
        workload: None,
        binding: Default::default(),
    };
    let resolver = Arc::new(RatlsResolver::new(tee as Arc<dyn Tee>, ca, spec));
    // As a server does at start: issue the first certificate before taking connections.
    resolver.current().unwrap();
    let config = Arc::new(server_config(resolver.clone(), None).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
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
            // Deterministic and challenge clients close after the handshake; channel clients ask
            // for the attestation path.
            let mut req = [0u8; 1024];
            let Ok(k) = tls.read(&mut req) else {
                continue;
            };
            let wanted = format!("GET {} ", enclave_ratls::channel::PATH);
            if req[..k].starts_with(wanted.as_bytes()) {
                let exporter = enclave_ratls::channel::exporter(&tls.conn).unwrap();
                let body = enclave_ratls::channel::respond_for_leaf(
                    resolver.tee().as_ref(),
                    chosen.presented(&tls.conn).unwrap(),
                    &exporter,
                )
                .unwrap();
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    port
}

#[test]
fn verify_reports_the_server_in_each_mode_and_names_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    // Each successful verify makes two connections (the check, then the manifest).
    let port = server(dir.path(), [0xab; 32], 64);
    let url = format!("https://localhost:{port}");
    let sim = dir.path().join("sim");
    let root = dir.path().join("ca/root.crt.pem");
    let base = VerifyArgs::new(&url, &sim, &root);

    for (mode, binding) in [
        ("channel", "channel"),
        ("deterministic", "deterministic"),
        ("challenge", "nonce"),
    ] {
        let (code, v) = json(&base.with(&["--mode", mode]));
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["verified"], true);
        assert_eq!(v["tee"], "tdx");
        assert_eq!(v["simulated"], true);
        assert_eq!(
            v["status"], "UpToDate",
            "collateral is read from the simulation directory"
        );
        assert_eq!(v["chain_verified"], true);
        assert_eq!(v["server_name"], "localhost");
        assert_eq!(v["key_binding"]["mode"], binding);
        assert_eq!(v["config_root"], hex::encode([0xab; 32]));
        assert_eq!(v["measurement"].as_str().unwrap().len(), 96);
    }

    // A certificate for localhost is not one for the bank, in any mode.
    for mode in ["deterministic", "challenge", "channel"] {
        let (code, v) = json(&base.with(&["--mode", mode, "--server-name", "bank.example.com"]));
        assert_eq!(code, 1, "{v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("'localhost'") && error.contains("'bank.example.com'"),
            "{v}"
        );
    }
    // Nor for the IP address it was reached at: the leaf names no IP address.
    let by_ip = VerifyArgs::new(&format!("https://127.0.0.1:{port}"), &sim, &root);
    let (code, v) = json(&by_ip.with(&[]));
    assert_eq!(code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains("'127.0.0.1'"), "{v}");

    // A config root that does not match.
    let wrong = "cd".repeat(32);
    let (code, v) = json(&base.with(&["--config-root", wrong.as_str()]));
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("config root"), "{v}");

    // A policy whose measurement does not match.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "allow_simulated = true\n[tdx]\nmr_td = \"{}\"\n",
            "00".repeat(48)
        ),
    )
    .unwrap();
    let (code, v) = json(&base.with(&["--policy", policy.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("tdx.mr_td"), "{v}");

    // Without trusting the simulation: rejected, saying why.
    let (code, v) = json(&["verify", url.as_str(), "--root", root.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("--trust-sim"), "{v}");

    // Text output, for a person.
    let out = run(&base.with(&[]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SIMULATED") && text.contains("verified to the operator root"),
        "{text}"
    );
}

#[test]
fn verify_input_errors() {
    for (args, needle) in [
        (vec!["verify", "http://localhost:1"], "not an https:// URL"),
        (vec!["verify", "https://localhost:notaport"], "not a port"),
        (
            vec!["verify", "https://localhost:1", "--config-root", "12"],
            "--config-root",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}"
        );
    }
    // Nothing listening: a clear failure, not a hang.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, v) = json(&[
        "verify",
        &format!("https://127.0.0.1:{port}"),
        "--timeout",
        "3",
    ]);
    assert_eq!(code, 1);
    assert!(
        v["error"].as_str().unwrap().contains("no RA-TLS handshake"),
        "{v}"
    );
}
