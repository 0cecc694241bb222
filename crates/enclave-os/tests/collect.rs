//! `enclave-os evidence collect` then `evidence verify DIR`: the simulated TEE through the real
//! binary, as a developer uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn collect(tee: &str, sim: &Path, out: &Path) -> Value {
    let (code, v) = json(&[
        "evidence",
        "collect",
        "--report-data",
        "c0ffee",
        "--tee",
        tee,
        "--sim-dir",
        sim.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v}");
    v
}

fn binary_digest(alg: &'static ring::digest::Algorithm) -> String {
    hex::encode(ring::digest::digest(alg, &std::fs::read(BIN).unwrap()))
}

#[test]
fn collect_then_verify_for_each_simulated_flavour() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    for (tee, kind, alg) in [
        ("sim-tdx", "tdx", &ring::digest::SHA384),
        ("sim-sgx", "sgx", &ring::digest::SHA256),
    ] {
        let out = dir.path().join(tee);
        let c = collect(tee, &sim, &out);
        assert_eq!(c["simulated"], true);
        // The measurement is the hash of the running executable: this binary.
        assert_eq!(c["measurement"], binary_digest(alg));

        let (code, v) = json(&[
            "evidence",
            "verify",
            out.to_str().unwrap(),
            "--trust-sim",
            sim.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["verified"], true);
        assert_eq!(v["simulated"], true);
        assert_eq!(v["tee"], kind);
        assert_eq!(v["status"], "UpToDate");
        assert_eq!(v["measurement"], binary_digest(alg));
        assert!(v["report_data"].as_str().unwrap().starts_with("c0ffee00"));

        // The root certificate file works as well as the directory.
        let root = sim.join("root.crt.pem");
        let (code, _) = json(&[
            "evidence",
            "verify",
            out.to_str().unwrap(),
            "--trust-sim",
            root.to_str().unwrap(),
        ]);
        assert_eq!(code, 0);

        // Without --trust-sim: rejected, and the reason says why and what to do.
        let (code, v) = json(&["evidence", "verify", out.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert_eq!(v["verified"], false);
        let err = v["error"].as_str().unwrap();
        assert!(
            err.contains("simulated TEE") && err.contains("--trust-sim"),
            "{err}"
        );
        let text = run(&["evidence", "verify", out.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&text.stderr).contains("--trust-sim"));
    }
}

#[test]
fn a_measurement_policy_accepts_this_binary_and_rejects_another() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let out = dir.path().join("ev");
    collect("sim-sgx", &sim, &out);
    let policy = dir.path().join("policy.toml");
    let ours = binary_digest(&ring::digest::SHA256);
    std::fs::write(
        &policy,
        format!("allow_simulated = true\n[sgx]\nmr_enclave = \"{ours}\"\n"),
    )
    .unwrap();
    let args = [
        "evidence",
        "verify",
        out.to_str().unwrap(),
        "--trust-sim",
        sim.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ];
    let (code, v) = json(&args);
    assert_eq!((code, v["verified"].as_bool()), (0, Some(true)), "{v}");

    std::fs::write(
        &policy,
        format!(
            "allow_simulated = true\n[sgx]\nmr_enclave = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let (code, v) = json(&args);
    assert_eq!(
        (code, v["rule"].as_str()),
        (1, Some("sgx.mr_enclave")),
        "{v}"
    );

    // A policy file must opt in to simulation.
    std::fs::write(&policy, format!("[sgx]\nmr_enclave = \"{ours}\"\n")).unwrap();
    let (code, v) = json(&args);
    assert_eq!(
        (code, v["rule"].as_str()),
        (1, Some("allow_simulated")),
        "{v}"
    );
}

#[test]
fn another_simulation_directory_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = dir.path().join("ev");
    collect("sim-tdx", &a, &out);
    collect("sim-tdx", &b, &dir.path().join("ev-b"));
    let (code, v) = json(&[
        "evidence",
        "verify",
        out.to_str().unwrap(),
        "--trust-sim",
        b.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not the simulation root this verifier trusts"),
        "{v}"
    );
}

#[test]
fn collect_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ev");
    for (args, needle) in [
        (
            vec!["--report-data", "zz", "--tee", "sim-sgx"],
            "--report-data",
        ),
        (
            vec!["--report-data", &"00".repeat(65), "--tee", "sim-sgx"],
            "at most 64",
        ),
        (vec!["--report-data", "00", "--tee", "sev"], "unknown TEE"),
    ] {
        let mut all = vec![
            "evidence",
            "collect",
            "--out",
            out.to_str().unwrap(),
            "--sim-dir",
            dir.path().to_str().unwrap(),
        ];
        all.extend(args);
        let o = run(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle) && err.lines().count() == 1,
            "{all:?}: {err}"
        );
    }
    // On a machine without a TEE, auto refuses and says why for each backend; it never simulates.
    if !Path::new("/dev/sev-guest").exists()
        && !Path::new("/dev/attestation").exists()
        && !Path::new("/sys/kernel/config/tsm/report").exists()
    {
        let o = run(&[
            "evidence",
            "collect",
            "--report-data",
            "00",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("configfs-tsm") && err.contains("sim-sgx"),
            "{err}"
        );
    }
}

#[test]
fn ca_init_writes_a_chain_openssl_accepts_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let (code, v) = json(&[
        "ca",
        "init",
        "--out",
        out.to_str().unwrap(),
        "--org",
        "Example Corp",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["root_sha256"].as_str().unwrap().len(), 64);
    // A verifier nobody here wrote accepts the chain.
    // .ci/run installs openssl.
    if let Ok(o) = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("root.crt.pem"))
        .arg(out.join("intermediary.crt.pem"))
        .output()
    {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let o = run(&["ca", "init", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
}

#[test]
fn measure_computes_the_config_root_offline() {
    let example = format!(
        "{}/../../examples/dev/enclave.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, v) = json(&["measure", &example]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["root"].as_str().unwrap().len(), 64);
    // The manifest it prints recomputes to the same root.
    let m: enclave_config::Manifest = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        hex::encode(m.verify().unwrap()),
        v["root"].as_str().unwrap()
    );
    let text = run(&["measure", &example]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("config root: "));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("enclave.toml");
    std::fs::write(&bad, "tee = \"sim-tdx\"\nlisten = 8443\n").unwrap();
    let o = run(&["measure", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("enclave.toml") && err.contains("line 2") && err.contains("listen"),
        "{err}"
    );
}

/// A `jwks_url` configuration's root commits the JWKS the runtime fetches: `measure` says so
/// without `--jwks`, and with it puts exactly those bytes in the `oidc/jwks` leaf.
#[test]
fn measure_commits_the_jwks_given_for_a_jwks_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enclave.toml");
    std::fs::write(
        &config,
        "[oidc]\nissuer = \"https://idp\"\naudience = \"a\"\njwks_url = \"https://idp/jwks\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let o = run(&["measure", config]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("oidc/jwks") && err.contains("has not been fetched") && err.contains("--jwks"),
        "{err}"
    );
    let mut roots = Vec::new();
    for keys in [&b"{\"keys\":[]}"[..], b"{\"keys\":[{\"kid\":\"rotated\"}]}"] {
        let jwks = dir.path().join("fetched.json");
        std::fs::write(&jwks, keys).unwrap();
        let (code, v) = json(&["measure", config, "--jwks", jwks.to_str().unwrap()]);
        assert_eq!(code, 0, "{v}");
        let leaf = v["leaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "oidc/jwks")
            .unwrap();
        assert_eq!(
            leaf["value_hash"],
            hex::encode(ring::digest::digest(&ring::digest::SHA256, keys))
        );
        roots.push(v["root"].clone());
    }
    assert_ne!(roots[0], roots[1]);

    // A jwks_file's content is committed as it is: --jwks does not replace it.
    let file = dir.path().join("file.toml");
    std::fs::write(dir.path().join("jwks.json"), "{\"keys\":[]}").unwrap();
    std::fs::write(
        &file,
        "[oidc]\nissuer = \"https://idp\"\naudience = \"a\"\njwks_file = \"jwks.json\"\n",
    )
    .unwrap();
    let o = run(&["measure", file.to_str().unwrap(), "--jwks", "x.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no oidc.jwks_url"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
