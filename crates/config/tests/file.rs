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
    assert_eq!(c.config.tee, enclave_config::file::TeeChoice::SimSgx);
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
            vec!["enclave.toml", "line 1", "tee 'sev' is not one of"],
        ),
        ("listen = [\"localhost\"]\n", vec!["field `listen[0]`"]),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\n",
            vec!["workload[0].source"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"nginx:latest\"\n[workload.container]\nport = 80\n",
            vec!["workload[0].image", "not pinned by digest"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"r.test/nginx:latest\"\n",
            vec!["needs [workload.container] with at least its port"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\n[workload.container]\nport = 80\n",
            vec!["[workload.container] is for containers, not a wasm workload"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"r.test/a@sha256:00\"\n[workload.container]\nport = 80\n",
            vec!["workload[0]", "no [containers] section"],
        ),
        (
            "[containers]\n[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"r.test/a@sha256:00\"\n[workload.container]\nport = 80\n",
            vec![
                "workload[0].image",
                "registry 'r.test' has no [[registry]] table",
            ],
        ),
        (
            "[containers]\n[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"a@sha256:00\"\n[workload.container]\nport = 80\n",
            vec!["workload[0].image", "names no registry host"],
        ),
        (
            "[containers]\n[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"r.test/a@sha256:00\"\n[workload.container]\nport = 80\ncapabilities = [\"CAP_SYS_ADMIN\"]\n",
            vec!["container.capabilities", "'CAP_SYS_ADMIN' may not be kept"],
        ),
        (
            "tee = \"sgx\"\n[containers]\n",
            vec!["field `containers`", "never inside an SGX enclave"],
        ),
        (
            "[containers]\nbridge = \"a-very-long-bridge-name\"\n",
            vec!["containers.bridge", "1 to 15"],
        ),
        (
            "[containers]\nvault_port = 0\n",
            vec!["containers.vault_port", "0 is not a port"],
        ),
        (
            "[[registry]]\nhost = \"r.test\"\nca_bundle = \"ca.pem\"\n[[registry]]\nhost = \"R.test\"\nca_bundle = \"ca.pem\"\n",
            vec!["registry[1].host", "two [[registry]] tables"],
        ),
        (
            "[[workload]]\nname = \"a b\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 1\n",
            vec!["workload[0].name"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 1\n[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"y\"\n[workload.process]\nport = 1\n",
            vec!["workload[1].name", "two workloads"],
        ),
        (
            "[oidc]\nissuer = \"i\"\naudience = \"a\"\n",
            vec!["field `oidc`", "exactly one"],
        ),
        // One spelling per name: a trailing dot would let a workload's `a.test` pass for the
        // management API's `a.test.`.
        (
            "[management]\nhostname = \"ops.test.\"\n",
            vec!["field `management.hostname`", "trailing dot"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\nhostnames = [\"same.test\"]\n[workload.process]\nport = 1\n[[workload]]\nname = \"b\"\nkind = \"process\"\nsource = \"y\"\nhostnames = [\"SAME.test\"]\n[workload.process]\nport = 1\n",
            vec![
                "workload[1].hostnames",
                "'SAME.test' is already served by workload 'a'",
            ],
        ),
        // How the proxy speaks to a service is the service's; a wasm workload has none.
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\n[workload.proxy]\nprotocol = \"h2c\"\n",
            vec!["[workload.proxy] is for containers and processes"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 80\nhealth = { http_path = \"/\" }\n[workload.proxy]\nprotocol = \"h2c\"\n",
            vec!["workload[0].proxy.protocol", "speaks HTTP/1.1", "h2c"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 80\n[workload.proxy]\nprotocol = \"tcp\"\nmax_body_bytes = 5\n",
            vec!["workload[0].proxy.protocol", "HTTP only"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 80\n[workload.proxy]\nconnect_timeout_ms = 0\n",
            vec![
                "workload[0].proxy.connect_timeout_ms",
                "not between 1 and 60000",
            ],
        ),
        // A process names the port it listens on, in a table of its own; no other kind has one.
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n",
            vec!["workload 'a'", "needs [workload.process]", "port"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\n[workload.process]\nport = 80\n",
            vec!["[workload.process] is for processes, not a wasm workload"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 0\n",
            vec!["workload[0].process.port", "1 to 65535"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 80\nhealth = { start_timeout_secs = 0 }\n",
            vec![
                "workload[0].process.health.start_timeout_secs",
                "not between 1 and 600",
            ],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 80\ncapabilities = []\n",
            vec!["unknown field `capabilities`"],
        ),
        (
            "[containers]\n[[workload]]\nname = \"a\"\nkind = \"container\"\nimage = \"r.test/a@sha256:00\"\n[workload.container]\nport = 80\nuser = 0\n",
            vec!["unknown field `user`"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\nlimits = { cpu_millis = 500 }\n[workload.process]\nport = 80\n",
            vec!["workload[0].limits.cpu_millis", "cgroup"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\nlimits = { pids = 5 }\n[workload.process]\nport = 80\n",
            vec!["workload[0].limits.pids", "RLIMIT_NPROC"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\n[workload.process]\nport = 80\n[[workload]]\nname = \"b\"\nkind = \"process\"\nsource = \"y\"\n[workload.process]\nport = 80\n",
            vec![
                "workload[1].process.port",
                "port of process workload 'a' already",
            ],
        ),
        // Each kind takes its own fields, and no other kind's.
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\nimage = \"i@sha256:00\"\n",
            vec!["line 1", "workload 'a'", "image is for containers"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"container\"\nsource = \"x\"\n",
            vec!["workload 'a'", "not a source file"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"container\"\n",
            vec!["workload 'a'", "needs image"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"vm\"\nsource = \"x\"\n",
            vec!["line 3", "kind"],
        ),
        (
            "seal_policy = \"mrenclave\"\n",
            vec![
                "line 1",
                "seal_policy 'mrenclave' is neither measurement nor signer",
            ],
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
            "[[workload]]\nname = \"a\"\nkind = \"process\"\nsource = \"x\"\nhostnames = [\"manage.enclave-os.internal\"]\n[workload.process]\nport = 1\n",
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
            "[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://w:1\"\nroot = \"r.pem\"\n",
            vec![
                "field `store.witness`",
                "pin the witness with config_root or policy",
            ],
        ),
        (
            "[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://w:1\"\nroot = \"r.pem\"\nconfig_root = \"abcd\"\n",
            vec!["field `store.witness.config_root`", "64 hex digits"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\nhostnames = [\"127.0.0.1\"]\n",
            vec![
                "workload[0].hostnames",
                "IP addresses reach the management API",
            ],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\nhostnames = [\"LocalHost\"]\n",
            vec![
                "workload[0].hostnames",
                "'LocalHost' is not a workload's own DNS name",
            ],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\nhostnames = [\"manage.enclave-os.internal.\"]\n",
            vec!["workload[0].hostnames", "without its trailing dot"],
        ),
        (
            "[[workload]]\nname = \"a\"\nkind = \"wasm\"\nsource = \"x\"\nhostnames = [\"localhost.localdomain\"]\n",
            vec!["workload[0].hostnames", "localhost and its aliases"],
        ),
        (
            "[limits]\nmax_challenge_handshakes = 0\n",
            vec!["line 2", "max_challenge_handshakes", "nonzero"],
        ),
        (
            "[limits]\nheader_timeout_secs = 0\n",
            vec!["line 2", "header_timeout_secs", "nonzero"],
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
    // A referenced file that is missing is named, when the configuration is loaded.
    std::fs::remove_file(dir.path().join("app.wasm")).unwrap();
    let err = LoadedConfig::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("workload[0].source") && err.contains("app.wasm"),
        "{err}"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn root_of(dir: &Path, text: &str) -> [u8; 32] {
    let p = dir.join("enclave.toml");
    std::fs::write(&p, text).unwrap();
    *LoadedConfig::load(&p)
        .unwrap()
        .tree("0.1.0")
        .unwrap()
        .root()
}

const OIDC: &str = "[oidc]\nissuer = \"https://idp\"\naudience = \"a\"\n";

/// Issue 11, item 1: the tree commits the JWKS bytes (`oidc/jwks`), not where the file is. A host
/// that adds its own key to the file changes the root.
#[test]
fn the_jwks_content_is_committed_not_its_path() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "jwks.json", br#"{"keys":[{"kid":"operator"}]}"#);
    let r0 = root_of(dir.path(), &format!("{OIDC}jwks_file = \"jwks.json\"\n"));
    write(
        dir.path(),
        "jwks.json",
        br#"{"keys":[{"kid":"operator"},{"kid":"host"}]}"#,
    );
    let r1 = root_of(dir.path(), &format!("{OIDC}jwks_file = \"jwks.json\"\n"));
    assert_ne!(r0, r1, "a key added to the JWKS file must change the root");
    // The same bytes elsewhere: the same root.
    write(
        dir.path(),
        "moved/keys.json",
        br#"{"keys":[{"kid":"operator"},{"kid":"host"}]}"#,
    );
    assert_eq!(
        r1,
        root_of(
            dir.path(),
            &format!("{OIDC}jwks_file = \"moved/keys.json\"\n")
        )
    );
}

/// The bytes committed are the bytes kept: files changed after the load change neither what the
/// loaded configuration hands the runtime nor its tree.
#[test]
fn files_are_read_once_at_load() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "jwks.json", b"operator keys");
    write(dir.path(), "app.wasm", b"\0asm v1");
    write(dir.path(), "bundle.pem", b"egress CA");
    let p = dir.path().join("enclave.toml");
    std::fs::write(
        &p,
        format!(
            "{OIDC}jwks_file = \"jwks.json\"\n[egress]\nca_bundle = \"bundle.pem\"\n[[workload]]\nname = \"app\"\nkind = \"wasm\"\nsource = \"app.wasm\"\n"
        ),
    )
    .unwrap();
    let c = LoadedConfig::load(&p).unwrap();
    let r0 = *c.tree("0.1.0").unwrap().root();
    write(dir.path(), "jwks.json", b"host keys");
    write(dir.path(), "app.wasm", b"\0asm host");
    write(dir.path(), "bundle.pem", b"host CA");
    assert_eq!(c.jwks(), Some(&b"operator keys"[..]));
    assert_eq!(
        c.workload_code("app"),
        Some(enclave_config::file::WorkloadCode::Module(
            b"\0asm v1".to_vec()
        ))
    );
    assert_eq!(c.egress_bundle(), Some(&b"egress CA"[..]));
    assert_eq!(*c.tree("0.1.0").unwrap().root(), r0);
}

/// A `jwks_url`'s key set is committed once fetched; every refetch that differs is a new root.
#[test]
fn a_fetched_jwks_is_committed_and_a_refetch_is_a_new_tree() {
    let c = parse(&format!("{OIDC}jwks_url = \"https://idp/jwks\"\n")).unwrap();
    let err = c.tree("0.1.0").unwrap_err().to_string();
    assert!(
        err.contains("config-tree leaf `oidc/jwks`") && err.contains("has not been fetched"),
        "{err}"
    );
    let first = c.with_jwks(b"keys at start".to_vec()).unwrap();
    let again = c.with_jwks(b"keys at start".to_vec()).unwrap();
    let rotated = first.with_jwks(b"rotated keys".to_vec()).unwrap();
    let root = |c: &LoadedConfig| *c.tree("0.1.0").unwrap().root();
    assert_eq!(root(&first), root(&again));
    assert_ne!(root(&first), root(&rotated));
    assert_eq!(rotated.jwks(), Some(&b"rotated keys"[..]));
    let leaf = first
        .leaf_values("0.1.0", &[])
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == "oidc/jwks")
        .unwrap();
    assert_eq!(leaf.1, b"keys at start");
    let err = parse("").unwrap().with_jwks(b"k".to_vec()).unwrap_err();
    assert!(err.to_string().contains("no [oidc] section"), "{err}");
}

/// Issue 11, item 10: a value with no exact RFC 8785 form is an error naming the leaf and the
/// member, never an empty leaf.
#[test]
fn a_leaf_without_an_exact_canonical_form_is_an_error() {
    let err = parse("[limits]\nmax_request_bytes = 9007199254740993\n")
        .unwrap()
        .tree("0.1.0")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config-tree leaf `limits`")
            && err.contains("'/max_request_bytes'")
            && err.contains("beyond 2^53 - 1"),
        "{err}"
    );
}

/// The witness's trust files are committed by content: a simulation PKI swapped in changes the
/// root, where it lies does not.
#[test]
fn witness_trust_files_are_committed_by_content() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "root.pem", b"operator root");
    write(dir.path(), "sim/root.crt.pem", b"simulation root");
    write(dir.path(), "witness-policy.toml", b"tee = [\"tdx\"]\n");
    let text = |sim: &str| {
        format!(
            "[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://w:1\"\nroot = \"root.pem\"\ntrust_sim = \"{sim}\"\npolicy = \"witness-policy.toml\"\n"
        )
    };
    let r0 = root_of(dir.path(), &text("sim"));
    // The same root certificate named directly.
    assert_eq!(r0, root_of(dir.path(), &text("sim/root.crt.pem")));
    write(
        dir.path(),
        "sim/root.crt.pem",
        b"the host's simulation root",
    );
    let r1 = root_of(dir.path(), &text("sim"));
    assert_ne!(r0, r1);
    // The witness's appraisal policy is committed by content too.
    write(
        dir.path(),
        "witness-policy.toml",
        b"tee = [\"sgx\", \"tdx\"]\n",
    );
    assert_ne!(r1, root_of(dir.path(), &text("sim")));
}

/// A container's identity is what its image and its start commit, not what the file says: the
/// tree needs the resolved manifest, configuration and runtime spec, and the engine's versions,
/// and commits each by content; the registry's CA bundle is committed too.
#[test]
fn a_container_commits_its_image_documents_and_the_engine() {
    use enclave_config::file::{EngineVersions, ImageLeaves};
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "registry-ca.pem", b"registry CA");
    let text = "[containers]\n[[registry]]\nhost = \"r.test:5000\"\nca_bundle = \"registry-ca.pem\"\n\
        [[workload]]\nname = \"web\"\nkind = \"container\"\nimage = \"r.test:5000/web@sha256:00\"\nhostnames = [\"web.test\"]\n\
        [workload.container]\nport = 8080\n";
    let p = dir.path().join("enclave.toml");
    std::fs::write(&p, text).unwrap();
    let c = LoadedConfig::load(&p).unwrap();
    // Unresolved, there is nothing to commit yet, and the error says what is missing.
    let e = c.tree("0.1.0").unwrap_err().to_string();
    assert!(e.contains("containers/engine"), "{e}");
    let engine = EngineVersions {
        containerd: "1.6.20".into(),
        runc: "runc version 1.1.5".into(),
    };
    let e = c
        .with_engine(engine.clone())
        .tree("0.1.0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not resolved yet"), "{e}");
    let image = |manifest: &[u8]| ImageLeaves {
        manifest: manifest.to_vec(),
        config: b"{config}".to_vec(),
        runtime_spec: b"{spec}".to_vec(),
    };
    let resolved = c
        .with_engine(engine.clone())
        .with_image("web", image(b"{manifest}"))
        .unwrap();
    let tree = resolved.tree("0.1.0").unwrap();
    let hash = |name: &str| {
        tree.leaves()
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("no leaf {name}"))
            .value_hash
    };
    let sha = |b: &[u8]| {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
        out
    };
    // Leaf value hashes are SHA-256 of the bytes: the manifest leaf's is the manifest digest.
    assert_eq!(hash("workload/web/code"), sha(b"{manifest}"));
    assert_eq!(hash("workload/web/image-config"), sha(b"{config}"));
    assert_eq!(hash("workload/web/runtime-spec"), sha(b"{spec}"));
    assert_eq!(hash("registry/r.test:5000/ca-bundle"), sha(b"registry CA"));
    hash("containers/engine");
    // Another image, another engine: other roots.
    let other = c
        .with_engine(engine.clone())
        .with_image("web", image(b"{another manifest}"))
        .unwrap();
    assert_ne!(other.tree("0.1.0").unwrap().root(), tree.root());
    let newer = c
        .with_engine(EngineVersions {
            containerd: "1.7.0".into(),
            ..engine
        })
        .with_image("web", image(b"{manifest}"))
        .unwrap();
    assert_ne!(newer.tree("0.1.0").unwrap().root(), tree.root());
    // Only a container of the file takes an image.
    assert!(c.with_image("nope", image(b"x")).is_err());
}

/// `[workload.proxy]` is committed in the workload's settings leaf, field by field as written
/// (the protocol always); without the table the leaf is what it was; and
/// `scripts/config-root.py` computes the same tree independently.
#[test]
fn proxy_settings_are_committed_and_the_independent_script_agrees() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "svc", b"#!/bin/sh\nexec true\n");
    let base = "[[workload]]\nname = \"svc\"\nkind = \"process\"\nsource = \"svc\"\nhostnames = [\"svc.test\"]\n[workload.process]\nport = 9000\n";
    let with = format!(
        "{base}[workload.proxy]\nprotocol = \"tcp\"\nidle_timeout_secs = 30\nmax_connections = 10\n"
    );
    let settings = |text: &str| {
        let p = dir.path().join("enclave.toml");
        std::fs::write(&p, text).unwrap();
        let c = LoadedConfig::load(&p).unwrap();
        let (_, leaf) = c
            .leaf_values("0.1.0", &[])
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "workload/svc/settings")
            .unwrap();
        let root = *c.tree("0.1.0").unwrap().root();
        (
            serde_json::from_slice::<serde_json::Value>(&leaf).unwrap(),
            root,
        )
    };
    let (plain, plain_root) = settings(base);
    assert!(plain.get("proxy").is_none(), "{plain}");
    let (proxied, proxied_root) = settings(&with);
    assert_eq!(
        proxied["proxy"],
        serde_json::json!({"protocol": "tcp", "idle_timeout_secs": 30, "max_connections": 10})
    );
    assert_ne!(plain_root, proxied_root);

    let probe = std::process::Command::new("python3")
        .args(["-c", "import tomllib"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped the script: no python3 with tomllib (3.11 or later)");
        return;
    }
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
    let c = LoadedConfig::load(&dir.path().join("enclave.toml")).unwrap();
    let ours = serde_json::to_value(c.tree("0.1.0").unwrap().manifest()).unwrap();
    assert_eq!(theirs, ours);
}
