//! `[vault]`: policies parsed, committed as `vault/policy/<name>` with appraisal policies
//! inline (recomputed by the independent script), API policies beside the file's, and every
//! mistake refused with the field and the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use enclave_config::vault::{PolicyDoc, resource_matches};
use enclave_config::{ConfigError, LoadedConfig};

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("jwks.json"), br#"{"keys":[]}"#).unwrap();
    std::fs::write(
        p.join("tdx.toml"),
        "allow_simulated = true\n[tdx]\nmr_td = \"00\"\n",
    )
    .unwrap();
    std::fs::create_dir(p.join("sim")).unwrap();
    std::fs::write(p.join("sim/root.crt.pem"), b"sim root stand-in").unwrap();
    std::fs::write(p.join("app.jwe"), br#"{"protected":"stand-in"}"#).unwrap();
    dir
}

/// A component encrypted to vault key `disk`.
const ENCRYPTED: &str = "[[workload]]\nname = \"api\"\nkind = \"wasm\"\nsource = \"app.jwe\"\n\
hostnames = [\"api.test\"]\ndecryption_key = \"disk\"\n";

/// `decryption_key` is in the settings leaf (the tree commits which key decrypts what), names
/// a vault key, and is refused for processes, whose executables are not decrypted.
#[test]
fn a_decryption_key_is_committed_and_checked() {
    let dir = fixture();
    let c = load(dir.path(), &format!("{OIDC}{VAULT}{ENCRYPTED}")).unwrap();
    let settings = values(&c)["workload/api/settings"].clone();
    let settings: serde_json::Value = serde_json::from_slice(&settings).unwrap();
    assert_eq!(settings["decryption_key"], "disk");
    for (workload, why) in [
        (
            "[[workload]]\nname = \"p\"\nkind = \"process\"\nsource = \"app.jwe\"\ndecryption_key = \"disk\"\n[workload.process]\nport = 8080\n",
            "a process's executable is not decrypted",
        ),
        (
            "[[workload]]\nname = \"w\"\nkind = \"wasm\"\nsource = \"app.jwe\"\ndecryption_key = \"../disk\"\n",
            "decryption_key",
        ),
    ] {
        let e = load(dir.path(), &format!("{OIDC}{VAULT}{workload}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
}

const OIDC: &str =
    "[oidc]\nissuer = \"https://idp.test\"\naudience = \"mgmt\"\njwks_file = \"jwks.json\"\n";

const VAULT: &str = "[vault]\nhostname = \"vault.test\"\ntrust_sim = \"sim\"\n\
[vault.policy.db]\nresources = [\"default/db/*\"]\nkeys = [\"disk\"]\n\
[[vault.policy.db.allow]]\nworkloads = [\"api\"]\n\
[[vault.policy.db.allow]]\ntee = [\"tdx\"]\nappraisal_policy = \"tdx.toml\"\n\
measurements = [\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\"]\n\
oidc = { audience = \"vault\", required_claims = { group = \"db\" } }\n";

fn load(dir: &Path, text: &str) -> Result<LoadedConfig, ConfigError> {
    let text = format!("tee = \"sim-tdx\"\n{text}");
    let path = dir.join("enclave.toml");
    std::fs::write(&path, &text).unwrap();
    LoadedConfig::parse(&text, &path)
}

fn values(c: &LoadedConfig) -> BTreeMap<String, Vec<u8>> {
    c.leaf_values("0.1.0", &[]).unwrap().into_iter().collect()
}

#[test]
fn policies_are_leaves_with_their_appraisal_policies_inline() {
    let dir = fixture();
    let c = load(dir.path(), &format!("{OIDC}{VAULT}")).unwrap();
    let v = values(&c);
    assert_eq!(
        v["vault"],
        br#"{"hostname":"vault.test","max_sessions":1024,"session_ttl_secs":300}"#
    );
    assert_eq!(v["vault/trust-sim"], b"sim root stand-in");
    let leaf: PolicyDoc = serde_json::from_slice(&v["vault/policy/db"]).unwrap();
    assert_eq!(
        leaf.allow[1].appraisal_policy.as_deref(),
        Some("allow_simulated = true\n[tdx]\nmr_td = \"00\"\n")
    );
    assert!(!String::from_utf8_lossy(&v["vault/policy/db"]).contains("tdx.toml"));
    assert_eq!(c.vault_policy("db"), Some(&leaf));
    assert!(leaf.covers_resource("default/db/password"));
    assert!(!leaf.covers_resource("default/web/password"));
    assert!(leaf.covers_key("disk"));

    // Who may have what is part of the tree: another appraisal policy is another root.
    let before = *c.tree("0.1.0").unwrap().root();
    std::fs::write(
        dir.path().join("tdx.toml"),
        "allow_simulated = true\n[tdx]\nmr_td = \"01\"\n",
    )
    .unwrap();
    let after = load(dir.path(), &format!("{OIDC}{VAULT}")).unwrap();
    assert_ne!(before, *after.tree("0.1.0").unwrap().root());
}

#[test]
fn api_policies_are_committed_beside_the_files_and_checked() {
    let dir = fixture();
    let c = load(dir.path(), &format!("{OIDC}{VAULT}")).unwrap();
    let before = *c.tree("0.1.0").unwrap().root();
    let doc: PolicyDoc =
        serde_json::from_str(r#"{"resources":["apps/*/key"],"allow":[{"workloads":["web"]}]}"#)
            .unwrap();
    let with = c
        .with_vault_policies(BTreeMap::from([("web".to_string(), doc.clone())]))
        .unwrap();
    let v = values(&with);
    assert_eq!(
        v["vault/policy/web"],
        br#"{"allow":[{"workloads":["web"]}],"resources":["apps/*/key"]}"#
    );
    assert_ne!(before, *with.tree("0.1.0").unwrap().root());
    // The file's name cannot be taken over through the API.
    let e = c
        .with_vault_policies(BTreeMap::from([("db".to_string(), doc.clone())]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vault/policy/db") && e.contains("enclave.toml"),
        "{e}"
    );
    // An API policy is held to the file's rules.
    let bad: PolicyDoc =
        serde_json::from_str(r#"{"resources":["x/y/z"],"allow":[{"tee":["tdx"]}]}"#).unwrap();
    let e = c
        .with_vault_policies(BTreeMap::from([("bad".to_string(), bad)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("appraisal_policy"), "{e}");
    // Without [vault], none is taken.
    let plain = load(dir.path(), OIDC).unwrap();
    assert!(
        plain
            .with_vault_policies(BTreeMap::from([("web".to_string(), doc)]))
            .is_err()
    );
    assert!(!values(&plain).keys().any(|k| k.starts_with("vault")));
}

#[test]
fn resource_patterns_match_whole_segments() {
    assert!(resource_matches("default/db/*", "default/db/password"));
    assert!(resource_matches("*/*/*", "a/b/c"));
    assert!(!resource_matches("default/db/*", "default/db"));
    assert!(!resource_matches("default/db/*", "default/db/a/b"));
    assert!(!resource_matches("default/db/pass", "default/db/password"));
}

#[test]
fn mistakes_are_refused_with_the_field_and_the_reason() {
    let dir = fixture();
    let head = "[vault]\n[vault.policy.p]\n";
    for (oidc, text, needles) in [
        (
            false,
            format!("{head}resources = [\"a/b/c\"]\n"),
            vec!["vault.policy.p.allow", "nobody"],
        ),
        (
            false,
            format!("{head}allow = [{{ workloads = [\"a\"] }}]\n"),
            vec!["vault.policy.p.resources", "covers nothing"],
        ),
        (
            false,
            format!("{head}resources = [\"a/b\"]\nallow = [{{ workloads = [\"a\"] }}]\n"),
            vec!["vault.policy.p.resources", "three segments"],
        ),
        (
            false,
            format!("{head}resources = [\"a/../c\"]\nallow = [{{ workloads = [\"a\"] }}]\n"),
            vec!["vault.policy.p.resources", "'..'"],
        ),
        (
            false,
            format!("{head}resources = [\"a/b/c\"]\nallow = [{{}}]\n"),
            vec!["vault.policy.p.allow[0]", "anyone"],
        ),
        (
            false,
            format!(
                "{head}resources = [\"a/b/c\"]\nallow = [{{ workloads = [\"a\"], tee = [\"tdx\"] }}]\n"
            ),
            vec!["vault.policy.p.allow[0].workloads", "not both"],
        ),
        (
            false,
            format!("{head}resources = [\"a/b/c\"]\nallow = [{{ tee = [\"tdx\"] }}]\n"),
            vec!["vault.policy.p.allow[0].appraisal_policy", "debug"],
        ),
        (
            true,
            format!(
                "{head}resources = [\"a/b/c\"]\nallow = [{{ tee = [\"tdx\"], appraisal_policy = \"tdx.toml\", config_root = [\"{}\"] }}]\n",
                "07".repeat(32)
            ),
            vec!["vault.policy.p.allow[0].config_root", "measurements"],
        ),
        (
            false,
            format!(
                "{head}resources = [\"a/b/c\"]\nallow = [{{ tee = [\"tpm\"], appraisal_policy = \"tdx.toml\" }}]\n"
            ),
            vec!["vault.policy.p.allow[0].tee", "'tpm'"],
        ),
        (
            false,
            format!(
                "{head}resources = [\"a/b/c\"]\nallow = [{{ workloads = [\"a\"], code_sha256 = [\"ab\"] }}]\n"
            ),
            vec!["vault.policy.p.allow[0].code_sha256", "32 bytes"],
        ),
        (
            false,
            format!(
                "{head}resources = [\"a/b/c\"]\nallow = [{{ oidc = {{ audience = \"v\" }} }}]\n"
            ),
            vec!["vault.policy.p.allow[0].oidc", "[oidc]"],
        ),
        (
            true,
            format!(
                "{head}resources = [\"a/b/c\"]\nallow = [{{ tee = [\"tdx\"], appraisal_policy = \"absent.toml\" }}]\n"
            ),
            vec!["vault.policy.p.allow[0].appraisal_policy", "absent.toml"],
        ),
        (
            false,
            "[vault]\nsession_ttl_secs = 0\n".to_string(),
            vec!["vault.session_ttl_secs"],
        ),
        (
            false,
            "[vault.policy.\"a b\"]\nresources = [\"a/b/c\"]\nallow = [{ workloads = [\"a\"] }]\n"
                .to_string(),
            vec!["vault.policy.a b", "' '"],
        ),
        (
            false,
            format!("{head}resources = [\"a/b/c\"]\nallow = [{{ workload = [\"a\"] }}]\n"),
            vec!["workload"],
        ),
    ] {
        let text = if oidc { format!("{OIDC}{text}") } else { text };
        let e = load(dir.path(), &text).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "{text}: '{n}' not in: {e}");
        }
    }
}

/// `scripts/config-root.py` computes the same root for a configuration with a vault.
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
    let c = load(dir.path(), &format!("{OIDC}{VAULT}{ENCRYPTED}")).unwrap();
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

/// `seal_key_kbs`: where the root key comes from and whom the runtime trusts to give it are
/// leaves; the script agrees; it excludes `seal_key_env`.
#[test]
fn seal_key_kbs_is_committed_and_exclusive() {
    let dir = fixture();
    std::fs::write(dir.path().join("kbs-root.pem"), b"kbs root stand-in").unwrap();
    let kbs = "seal_key_kbs = { url = \"https://kbs.test:8443\", resource = \"default/sealing/td\", root = \"kbs-root.pem\", policy = \"tdx.toml\", trust_sim = \"sim\", config_root = \"0707070707070707070707070707070707070707070707070707070707070707\" }\n";
    let c = load(dir.path(), kbs).unwrap();
    let v = values(&c);
    assert_eq!(v["sealing/key-source"], b"kbs");
    assert_eq!(
        v["sealing/kbs"],
        br#"{"attested":true,"config_root":"0707070707070707070707070707070707070707070707070707070707070707","resource":"default/sealing/td","url":"https://kbs.test:8443"}"#
    );
    assert_eq!(v["sealing/kbs-root"], b"kbs root stand-in");
    assert_eq!(v["sealing/kbs-trust-sim"], b"sim root stand-in");
    assert!(v.contains_key("sealing/kbs-policy"));
    let e = load(dir.path(), &format!("seal_key_env = \"K\"\n{kbs}"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not both"), "{e}");
    let e = load(
        dir.path(),
        "seal_key_kbs = { url = \"http://kbs.test\", resource = \"a/b/c\", root = \"kbs-root.pem\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("seal_key_kbs.url"), "{e}");
    if std::process::Command::new("python3")
        .args(["-c", "import tomllib"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        // Written again: the refusals above wrote their own files.
        let c = load(dir.path(), kbs).unwrap();
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
}
