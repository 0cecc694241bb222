//! `[workload.ingress]`: parsed, committed (settings and file leaves, recomputed by the
//! independent script), and every mistake refused at load with the field and the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use enclave_config::file::{ClaimValues, ClientAuth};
use enclave_config::{ConfigError, LoadedConfig};

/// A directory with a component, a JWKS, a client policy, a client root and a simulation PKI.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("app.wasm"), b"\0asm stand-in").unwrap();
    std::fs::write(p.join("jwks.json"), br#"{"keys":[]}"#).unwrap();
    std::fs::write(
        p.join("clients.toml"),
        "allow_simulated = true\n[sgx]\nmr_enclave = \"00\"\n",
    )
    .unwrap();
    std::fs::write(p.join("clients-root.pem"), b"root stand-in").unwrap();
    std::fs::create_dir(p.join("sim")).unwrap();
    std::fs::write(p.join("sim/root.crt.pem"), b"sim root stand-in").unwrap();
    dir
}

const OIDC: &str =
    "[oidc]\nissuer = \"https://idp.test\"\naudience = \"mgmt\"\njwks_file = \"jwks.json\"\n";

fn config(dir: &Path, oidc: bool, ingress: &str) -> (PathBuf, String) {
    let text = format!(
        "tee = \"sim-sgx\"\n{}[[workload]]\nname = \"app\"\nkind = \"wasm\"\nsource = \"app.wasm\"\nhostnames = [\"app.test\"]\n{ingress}",
        if oidc { OIDC } else { "" }
    );
    let path = dir.join("enclave.toml");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn load(dir: &Path, oidc: bool, ingress: &str) -> Result<LoadedConfig, ConfigError> {
    let (path, text) = config(dir, oidc, ingress);
    LoadedConfig::parse(&text, &path)
}

const BOTH: &str = "[workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"clients.toml\"\n\
    client_names = [\"caller.test\", \"other.test\"]\nclient_root = \"clients-root.pem\"\nclient_trust_sim = \"sim\"\n\
    [workload.ingress.oidc]\naudience = \"app\"\nrequired_claims = { team = \"eng\", groups = [\"a\", \"b\"] }\n";

#[test]
fn both_gates_parse_and_are_committed_without_paths() {
    let dir = fixture();
    let c = load(dir.path(), true, BOTH).unwrap();
    let g = c.config.workloads[0].ingress.as_ref().unwrap();
    assert_eq!(g.client_auth, ClientAuth::Ratls);
    assert_eq!(g.client_names, ["caller.test", "other.test"]);
    let o = g.oidc.as_ref().unwrap();
    assert_eq!(o.audience, "app");
    assert_eq!(o.required_claims["team"], ClaimValues::One("eng".into()));
    assert_eq!(o.required_claims["groups"].values(), ["a", "b"]);

    let values: std::collections::BTreeMap<String, Vec<u8>> =
        c.leaf_values("0.1.0", &[]).unwrap().into_iter().collect();
    assert_eq!(
        values["workload/app/client-policy"],
        std::fs::read(dir.path().join("clients.toml")).unwrap()
    );
    assert_eq!(values["workload/app/client-root"], b"root stand-in");
    assert_eq!(
        values["workload/app/client-trust-sim"],
        b"sim root stand-in"
    );
    let settings = String::from_utf8(values["workload/app/settings"].clone()).unwrap();
    assert!(
        settings.contains(
            r#""ingress":{"client_auth":"ratls","client_names":["caller.test","other.test"],"oidc":{"audience":"app","required_claims":{"groups":["a","b"],"team":"eng"}}}"#
        ),
        "{settings}"
    );
    assert!(!settings.contains("clients.toml"), "{settings}");

    // Who may call is part of the tree: a different policy is a different root.
    let before = *c.tree("0.1.0").unwrap().root();
    std::fs::write(
        dir.path().join("clients.toml"),
        "allow_simulated = true\n[sgx]\nmr_enclave = \"01\"\n",
    )
    .unwrap();
    let after = load(dir.path(), true, BOTH).unwrap();
    assert_ne!(before, *after.tree("0.1.0").unwrap().root());
}

#[test]
fn without_ingress_the_settings_leaf_is_as_before() {
    let dir = fixture();
    let c = load(dir.path(), false, "").unwrap();
    let values: std::collections::BTreeMap<String, Vec<u8>> =
        c.leaf_values("0.1.0", &[]).unwrap().into_iter().collect();
    assert!(!String::from_utf8_lossy(&values["workload/app/settings"]).contains("ingress"));
    assert!(!values.keys().any(|k| k.contains("client-")));
    // `client_auth = "none"` alone commits its choice, and reads no file.
    let c = load(
        dir.path(),
        false,
        "[workload.ingress]\nclient_auth = \"none\"\n",
    )
    .unwrap();
    let values: std::collections::BTreeMap<String, Vec<u8>> =
        c.leaf_values("0.1.0", &[]).unwrap().into_iter().collect();
    assert!(
        String::from_utf8_lossy(&values["workload/app/settings"])
            .contains(r#""ingress":{"client_auth":"none"}"#)
    );
}

#[test]
fn mistakes_are_refused_with_the_field_and_the_reason() {
    let dir = fixture();
    for (oidc, ingress, needles) in [
        (
            false,
            "[workload.ingress.oidc]\naudience = \"app\"\n",
            vec!["workload[0].ingress.oidc", "[oidc]"],
        ),
        (
            true,
            "[workload.ingress]\nclient_auth = \"ratls\"\n",
            vec!["workload[0].ingress.client_policy", "appraisal policy"],
        ),
        (
            true,
            "[workload.ingress]\nclient_policy = \"clients.toml\"\n",
            vec!["workload[0].ingress.client_policy", "\"ratls\" only"],
        ),
        (
            true,
            "[workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"clients.toml\"\nclient_names = [\"*.test\"]\n",
            vec!["workload[0].ingress.client_names", "'*.test'"],
        ),
        (
            true,
            "[workload.ingress]\nclient_auth = \"mtls\"\n",
            vec!["client_auth", "mtls"],
        ),
        (
            true,
            "[workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"absent.toml\"\n",
            vec!["workload[0].ingress.client_policy", "absent.toml"],
        ),
        (
            true,
            "[workload.ingress.oidc]\naudience = \"\"\n",
            vec!["workload[0].ingress.oidc.audience", "empty"],
        ),
        (
            true,
            "[workload.ingress.oidc]\naudience = \"app\"\nrequired_claims = { team = [] }\n",
            vec!["required_claims.team", "refuse every token"],
        ),
        (
            true,
            "[workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"clients.toml\"\nclient_rooot = \"x\"\n",
            vec!["client_rooot"],
        ),
    ] {
        let e = load(dir.path(), oidc, ingress).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{ingress}: '{n}' not in: {e}");
        }
    }
}

/// `scripts/config-root.py` computes the same root for a configuration with both gates.
#[test]
fn the_independent_script_agrees() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import tomllib"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no python3 with tomllib (3.11 or later)");
        return;
    }
    let dir = fixture();
    let c = load(dir.path(), true, BOTH).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/config-root.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(dir.path().join("enclave.toml"))
        .args(["--version", "0.1.0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = serde_json::to_value(c.tree("0.1.0").unwrap().manifest()).unwrap();
    assert_eq!(theirs, ours);
}
