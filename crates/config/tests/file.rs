//! enclave.toml: each kind of mistake is named with its file, line or field; the tree commits
//! every security-relevant input and nothing the host chooses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use enclave_config::{ConfigError, LoadedConfig};

fn parse(text: &str) -> Result<LoadedConfig, ConfigError> {
    LoadedConfig::parse(text, Path::new("enclave.toml"))
}

#[test]
fn the_example_parses_and_measures() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/dev/enclave.toml"
    ));
    let c = LoadedConfig::load(path).unwrap();
    assert_eq!(c.config.tee, "sim-sgx");
    let t = c.tree("0.1.0").unwrap();
    assert!(t.leaves().iter().any(|l| l.name == "runtime/version"));
    assert_eq!(t.root(), c.tree("0.1.0").unwrap().root(), "deterministic");
    assert_ne!(
        t.root(),
        c.tree("0.2.0").unwrap().root(),
        "the version is committed"
    );
}

#[test]
fn mistakes_name_file_line_and_field() {
    for (text, needles) in [
        (
            "tee = \"sim-tdx\"\nlistn = [\"127.0.0.1:1\"]\n",
            vec!["enclave.toml", "line 2", "listn"],
        ),
        ("tee = 5\n", vec!["enclave.toml", "line 1", "tee"]),
        (
            "tee = \"sev\"\n",
            vec!["field `tee`", "'sev' is not one of"],
        ),
        ("listen = [\"localhost\"]\n", vec!["field `listen[0]`"]),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\n",
            vec!["workload[0].source"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"nginx:latest\"\n",
            vec!["workload[0].image", "not pinned by digest"],
        ),
        (
            "[[workload]]\nname = \"a b\"\nkind = \"process\"\nsource = \"x\"\n",
            vec!["workload[0].name"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"y\"\n",
            vec!["workload[1].name", "two workloads"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\n",
            vec!["field `oidc`", "exactly one"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"vm\"\nsource = \"x\"\n",
            vec!["line 3", "kind"],
        ),
        (
            "seal_policy = \"mrenclave\"\n",
            vec!["field `seal_policy`", "neither measurement nor signer"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"http://idp/jwks\"\n",
            vec!["field `oidc.jwks_url`", "not an https://"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\nclock_skew_secs = 3600\n",
            vec!["field `oidc.clock_skew_secs`", "more than 300"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\nmax_token_lifetime_secs = 0\n",
            vec![
                "field `oidc.max_token_lifetime_secs`",
                "not between 1 and 86400",
            ],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\njwks_refresh_secs = 600\n",
            vec!["field `oidc.jwks_refresh_secs`", "never reloaded"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_url = \"https://idp/jwks\"\njwks_refresh_secs = 5\n",
            vec!["field `oidc.jwks_refresh_secs`", "less than 10"],
        ),
        (
            "[oidc]\nissuer = \"\"\naudience = \"a\"\njwks_file = \"j\"\n",
            vec!["field `oidc`", "must not be empty"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"j\"\nkeys = 1\n",
            vec!["line 5", "keys"],
        ),
        (
            "[management]\nhostname = \"127.0.0.1\"\n",
            vec!["field `management.hostname`", "not empty or an IP"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\nhostnames = [\"manage.enclave-os.internal\"]\n",
            vec!["workload[0].hostnames", "reserved for the management API"],
        ),
        (
            "[store]\ncounter = \"witness\"\n",
            vec!["field `store.witness`", "needs [store.witness]"],
        ),
        ("[store]\ncounter = \"tpm\"\n", vec!["line 2", "counter"]),
        (
            "[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"http://w:1\"\nroot = \"r.pem\"\n",
            vec!["field `store.witness.url`", "not an https://"],
        ),
        (
            "[witness]\nlisten = \"anywhere\"\nclients_root = \"r.pem\"\n",
            vec!["field `witness.listen`", "HOST:PORT"],
        ),
        (
            "[limits]\nmax_connections = -1\n",
            vec!["line 2", "max_connections"],
        ),
        (
            "[limits]\nmax_wasm_instances = 0\n",
            vec!["line 2", "max_wasm_instances", "nonzero"],
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        for n in needles {
            assert!(err.contains(n), "{text:?}: {err}");
        }
    }
}

#[test]
fn the_tree_commits_code_and_settings_but_not_host_choices() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.wasm"), b"\0asm v1").unwrap();
    let base = "[[workload]]\nname = \"app\"\nkind = \"wasm\"\nsource = \"app.wasm\"\nhostnames = [\"app.test\"]\n";
    let root = |text: &str| {
        let p = dir.path().join("enclave.toml");
        std::fs::write(&p, text).unwrap();
        *LoadedConfig::load(&p)
            .unwrap()
            .tree("0.1.0")
            .unwrap()
            .root()
    };
    let r0 = root(base);
    // The code hash is the leaf's value hash: SHA-256 of the component bytes as supplied.
    let p = dir.path().join("enclave.toml");
    let t = LoadedConfig::load(&p).unwrap().tree("0.1.0").unwrap();
    let code = t
        .leaves()
        .iter()
        .find(|l| l.name == "workload/app/code")
        .unwrap();
    assert_eq!(
        code.value_hash.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, b"\0asm v1").as_ref()
    );
    // Settings and code change the root...
    assert_ne!(r0, root(&format!("{base}env = {{ A = \"1\" }}\n")));
    std::fs::write(dir.path().join("app.wasm"), b"\0asm v2").unwrap();
    assert_ne!(r0, root(base));
    std::fs::write(dir.path().join("app.wasm"), b"\0asm v1").unwrap();
    // ...where the host listens and keeps state does not.
    assert_eq!(
        r0,
        root(&format!(
            "listen = [\"0.0.0.0:9999\"]\nstate_dir = \"/elsewhere\"\n{base}"
        ))
    );
    // A referenced file that is missing is named.
    std::fs::remove_file(dir.path().join("app.wasm")).unwrap();
    let err = LoadedConfig::load(&p)
        .unwrap()
        .tree("0.1.0")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("workload[0].source") && err.contains("app.wasm"),
        "{err}"
    );
}
