//! `enclave-os run` as a process on the simulated TEE, checked by `enclave-os verify` in every
//! mode, against the root `enclave-os measure` computes offline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn start(config: &std::path::Path, port: u16) -> Server {
    let child = Command::new(BIN)
        .args([
            "run",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the runtime did not start listening in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[test]
fn run_then_verify_in_every_mode_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "tee = \"sim-sgx\"\nstate_dir = \"state\"\nattestation_servers = [\"https://as.example\"]\n").unwrap();
    let (_, measured) = json(&["measure", config.to_str().unwrap()]);
    let root_hex = measured["root"].as_str().unwrap().to_string();

    let port = free_port();
    let mut server = start(&config, port);
    let url = format!("https://127.0.0.1:{port}");
    let sim = dir.path().join("state/sim");
    let ca_root = dir.path().join("state/dev-ca/root.crt.pem");
    for mode in ["deterministic", "challenge", "channel"] {
        let (code, v) = json(&[
            "verify",
            &url,
            "--trust-sim",
            sim.to_str().unwrap(),
            "--root",
            ca_root.to_str().unwrap(),
            "--mode",
            mode,
            "--config-root",
            &root_hex,
        ]);
        assert_eq!(code, 0, "{mode}: {v}");
        assert_eq!(v["tee"], "sgx");
        assert_eq!(v["simulated"], true);
        assert_eq!(v["config_root"], root_hex.as_str());
        let names: Vec<&str> = v["config_leaves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"attestation/servers") && names.contains(&"runtime/version"),
            "{names:?}"
        );
    }
    // A client pinning another config root is refused, naming it.
    let (code, v) = json(&[
        "verify",
        &url,
        "--trust-sim",
        sim.to_str().unwrap(),
        "--config-root",
        &"00".repeat(32),
    ]);
    assert_eq!(code, 1);
    assert!(v["error"].as_str().unwrap().contains("config root"), "{v}");

    // SIGTERM: a clean stop.
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the runtime did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("created a development CA") && err.contains("shutting down"),
        "{err}"
    );
    // Item 7: the development root key never reaches the disk (a host watching the directory
    // could copy it before any deletion), and the log says so and where the root certificate is.
    assert!(!dir.path().join("state/dev-ca/root.key.pem").exists());
    assert!(ca_root.exists());
    assert!(
        err.contains("its root key existed only in memory") && err.contains("ca/root.crt.pem"),
        "{err}"
    );

    // The intermediary key is sealed; no plaintext copy we made is left.
    use std::os::unix::fs::PermissionsExt;
    let sealed = dir.path().join("state/ca/intermediary.key.sealed");
    assert_eq!(
        std::fs::metadata(&sealed).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !dir.path()
            .join("state/dev-ca/intermediary.key.pem")
            .exists()
    );
    assert!(
        !std::fs::read(&sealed)
            .unwrap()
            .windows(11)
            .any(|w| w == b"PRIVATE KEY")
    );

    // A restart unseals the same CA: clients keep their pinned root.
    let port = free_port();
    let _again = start(&config, port);
    let url = format!("https://127.0.0.1:{port}");
    let (code, v) = json(&[
        "verify",
        &url,
        "--trust-sim",
        sim.to_str().unwrap(),
        "--root",
        ca_root.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["chain_verified"], true);
}

#[test]
fn a_tee_without_a_sealing_key_cannot_keep_the_ca_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "tee = \"sim-tdx\"\nstate_dir = \"state\"\n").unwrap();
    let o = run(&[
        "run",
        config.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot seal the intermediary CA key on sim-tdx") && err.contains("vault"),
        "{err}"
    );
}

#[test]
fn a_damaged_sealed_ca_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "tee = \"sim-sgx\"\nstate_dir = \"state\"\n").unwrap();
    let port = free_port();
    drop(start(&config, port));
    let sealed = dir.path().join("state/ca/intermediary.key.sealed");
    let mut blob = std::fs::read(&sealed).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    std::fs::write(&sealed, blob).unwrap();
    let o = run(&[
        "run",
        config.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    // The sealed state is refused (3), not the command line (2).
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("intermediary.key.sealed") && err.contains("authentication failed"),
        "{err}"
    );
}

#[test]
fn run_refuses_a_bad_configuration_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(&config, "tee = \"sim-sgx\"\nlisten = [\"nowhere\"]\n").unwrap();
    let o = run(&["run", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("listen[0]"));
}

#[test]
fn a_workload_hostname_gets_the_workloads_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.bin"), b"the app, version 1").unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        // Not an executable: the certificate names the code whether or not it runs.
        format!(
            "tee = \"sim-sgx\"\nstate_dir = \"state\"\n[[workload]]\nname = \"app\"\nkind = \"process\"\nsource = \"app.bin\"\nhostnames = [\"app.test\"]\n[workload.process]\nport = {}\n",
            free_port()
        ),
    )
    .unwrap();
    let port = free_port();
    let _server = start(&config, port);
    let base = VerifyArgs::new(
        &format!("https://127.0.0.1:{port}"),
        &dir.path().join("state/sim"),
        &dir.path().join("state/ca/root.crt.pem"),
    );

    let (code, v) = json(&base.with(&["--server-name", "app.test"]));
    assert_eq!(code, 0, "{v}");
    let expected = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        b"the app, version 1",
    ));
    assert_eq!(v["workload"]["code_digest"], expected.as_str());
    assert_eq!(v["workload"]["key_source"], "tee-generated");
    assert_eq!(v["workload"]["config_root"].as_str().unwrap().len(), 64);

    // Any other name gets the enclave-wide certificate, which names no workload.
    let (code, v) = json(&base.with(&[]));
    assert_eq!(code, 0, "{v}");
    assert!(v["workload"].is_null());
}

/// Items 14 and 7: a listener set to the DICE binding serves leaves whose evidence binds the
/// config root, which `verify` reads in every mode; `verify` warns loudly while no measurement
/// is pinned.
#[test]
fn a_dice_listener_binds_the_config_root_and_verify_warns_until_a_measurement_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        "tee = \"sim-sgx\"\nstate_dir = \"state\"\n[listener]\nevidence_binding = \"dice\"\n",
    )
    .unwrap();
    let (_, measured) = json(&["measure", config.to_str().unwrap()]);
    let root_hex = measured["root"].as_str().unwrap().to_string();
    let port = free_port();
    let _server = start(&config, port);
    let url = format!("https://127.0.0.1:{port}");
    let sim = dir.path().join("state/sim");
    let ca_root = dir.path().join("state/dev-ca/root.crt.pem");
    let base = VerifyArgs::new(&url, &sim, &ca_root);
    let mut measurement = String::new();
    for (mode, method, binding) in [
        ("deterministic", "enclave-os-dice", "deterministic"),
        ("challenge", "enclave-os-dice", "nonce"),
        ("channel", "enclave-os", "channel"),
    ] {
        let (code, v) = json(&base.with(&["--mode", mode, "--config-root", &root_hex]));
        assert_eq!(code, 0, "{mode}: {v}");
        assert_eq!(v["key_binding"]["method"], method, "{mode}: {v}");
        assert_eq!(v["key_binding"]["mode"], binding, "{mode}: {v}");
        if method == "enclave-os-dice" {
            assert_eq!(v["key_binding"]["config_root_bound"], true, "{v}");
        }
        assert_eq!(v["config_root"], root_hex.as_str());
        let warnings = v["warnings"].as_array().unwrap();
        assert!(
            warnings.len() == 1
                && warnings[0]
                    .as_str()
                    .unwrap()
                    .contains("no measurement is pinned"),
            "{v}"
        );
        measurement = v["measurement"].as_str().unwrap().to_string();
    }
    let out = run(&base.with(&[]));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARNING: no measurement is pinned") && err.contains("mr_enclave"),
        "{err}"
    );

    // Pinned: no warning.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("allow_simulated = true\n[sgx]\nmr_enclave = \"{measurement}\"\n"),
    )
    .unwrap();
    let (code, v) = json(&base.with(&["--policy", policy.to_str().unwrap()]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    let out = run(&base.with(&["--policy", policy.to_str().unwrap()]));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("WARNING"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
