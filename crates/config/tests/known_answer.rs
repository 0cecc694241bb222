//! Known answers for a full `enclave.toml` (every section: CA, egress bundle, OIDC, policy,
//! management, witness counter, witness listener, limits, a workload of each kind), written
//! here as literal hex. They were computed by `scripts/config-root.py`, which follows
//! `docs/config-tree.md` with Python's standard library only, and the last test runs that script
//! again against this crate. The JSON leaves are RFC 8785 bytes: they do not depend on serde_json's
//! features (its `preserve_order`, enabled by some crate in the tree, reorders `json!` maps).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use enclave_config::LoadedConfig;

fn full() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/config-tree/full/enclave.toml"
    ))
    .to_path_buf()
}

/// The full configuration with what a runtime resolves at start: the engine's versions and the
/// container's image documents (`engine.json`, `images/db/`).
fn resolved() -> LoadedConfig {
    let dir = full().parent().unwrap().to_path_buf();
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap();
    let engine: enclave_config::file::EngineVersions =
        serde_json::from_slice(&read("engine.json")).unwrap();
    LoadedConfig::load(&full())
        .unwrap()
        .with_engine(engine)
        .with_image(
            "db",
            enclave_config::file::ImageLeaves {
                manifest: read("images/db/manifest.json"),
                config: read("images/db/config.json"),
                runtime_spec: read("images/db/runtime-spec.json"),
            },
        )
        .unwrap()
}

/// The runtime spec of the full configuration's container, byte for byte: a change to how
/// specs are made changes every container's certified identity, and must be seen here.
#[test]
fn the_container_runtime_spec_is_the_known_one() {
    let c = LoadedConfig::load(&full()).unwrap();
    let dir = full().parent().unwrap().to_path_buf();
    let w = c.config.workloads.iter().find(|w| w.name == "db").unwrap();
    let spec = enclave_config::runtime_spec::runtime_spec(
        &std::fs::read(dir.join("images/db/config.json")).unwrap(),
        &enclave_config::runtime_spec::SpecInput {
            name: &w.name,
            namespace: &c.config.containers.as_ref().unwrap().namespace,
            env: &w.env,
            args: &w.args,
            limits: &w.limits,
            settings: w.run.container().unwrap(),
        },
    )
    .unwrap();
    let known = dir.join("images/db/runtime-spec.json");
    if std::env::var_os("ENCLAVE_OS_WRITE_KNOWN_SPEC").is_some() {
        std::fs::write(&known, &spec).unwrap();
    }
    assert_eq!(
        String::from_utf8(spec).unwrap(),
        std::fs::read_to_string(known).unwrap()
    );
}

const ROOT: &str = "472ffd0c0a016ad97bc43d1c49a38db29a39d4a7dc36b1ba32af24e997a815db";
/// Every leaf, sorted: name and value hash.
const LEAVES: [(&str, &str); 27] = [
    (
        "attestation/servers",
        "383f118179d94d46114678eeac03423d4975da2ddffbf2fd8c477c778826d149",
    ),
    (
        "ca/certificate",
        "e5338b65b7f3a23fc6ba3f6b86c500b7b057da0fe6180ff36b2327a147e86b39",
    ),
    (
        "containers/engine",
        "c9af484ec6b32cb25fc50d328e25fd7de0975d5016c0070a1975f1a91509f729",
    ),
    (
        "egress/ca-bundle",
        "c8ad73f4dc72a0fe5c27478d04d636905ff8ccb0e8a100b412e3dc344ee638f1",
    ),
    (
        "limits",
        "c1332c3b3bf156c7d4742e477e4626dcca4f6dc4d4cb8393ce9f9e44e236ad0c",
    ),
    (
        "listener/evidence-binding",
        "e1e025805cd63af3eaf1de7c010a537df1fa24009c5d332f3a068cd382e46ca7",
    ),
    (
        "management",
        "15797f2116ced775ffeedb16d6567e2c3577dbf126d9a604bc99fa9a4f645492",
    ),
    (
        "oidc",
        "9a705fd75cf824f338798913b162c6b9fca1e0e99ba8386b34e99e754c6cb33c",
    ),
    (
        "oidc/jwks",
        "2ec7dd9dd96f548c7de87beed955d16e4d6109e499815f035fe65ee0e4817825",
    ),
    (
        "policy",
        "527c5c77860c3b3feeba2ddf352a1f969e0787f6aa503a897aa4554899b08bc9",
    ),
    (
        "registry/registry.example/ca-bundle",
        "77322c2c99be155b1ccea433ea21e6151253193de7ac4b3338186ae87ccab4a5",
    ),
    (
        "runtime/version",
        "6ad9613a455798d6d92e5f5f390ab4baa70596bc869ed6b17f5cdd2b28635f06",
    ),
    (
        "store",
        "8aaa8f9be0e6caf83f81df3ccb11e09c35a9db89c5fec1de29d99baee07a0a35",
    ),
    (
        "store/witness-policy",
        "dc766be2ba69c703733290bcc9a89709358894a66f4fa8bf55945536f05288b0",
    ),
    (
        "store/witness-root",
        "4fb443bef0b07b486e399a4de74fba07e76b6bb35f37ac3efaf74516894055ca",
    ),
    (
        "store/witness-trust-sim",
        "2515571e2dbd2ca7d59199003fe85a185c490471aabef6005288fb4edffe495b",
    ),
    (
        "witness",
        "066b58127af0b396fb0b151b7e53659c9ccee34ffbc18de04bcc16eab02bacbf",
    ),
    (
        "witness/clients-root",
        "eb50861467535e07463a9d07dcde2bc2441606f9b3ad50ea114b6fcf6c00a778",
    ),
    (
        "witness/trust-sim",
        "883c1dc64e254ebdd7dfb203684fd6dc97d58a8232416ea3f4b76000e4ef3705",
    ),
    (
        "workload/db/code",
        "948e67c8c1f0e69a8ce6511eeae89236c51387609cbca396797942db8d3c06f2",
    ),
    (
        "workload/db/image-config",
        "5db5574bef7973d4da9b3d595bea2b489b20695af5e2f1ccabb6649f3e451c7e",
    ),
    (
        "workload/db/runtime-spec",
        "c343074ee8b0c2751b244d33b7a89d646688c7e880629ea26af10676ceb15103",
    ),
    (
        "workload/db/settings",
        "0bfb91fb2f9e92b81d7f67f41e65439d3483c6f5c4df408fc673904818a19aac",
    ),
    (
        "workload/hello/code",
        "93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476",
    ),
    (
        "workload/hello/settings",
        "b6c24cbaa54adee69c58789c8e2dc3425399abf21adcf957a4daef4f7574d7d4",
    ),
    (
        "workload/worker/code",
        "22435781779deb2dea9bd0fb667c91058bde43c0c4453be2d4d742b6fb44fa66",
    ),
    (
        "workload/worker/settings",
        "df42e130c3c9315ecd27fe381f18e9d89753fc475ebf472da4eed66399ab9c35",
    ),
];
/// The JSON leaves' RFC 8785 bytes.
const JSON_LEAVES: [(&str, &str); 10] = [
    (
        "attestation/servers",
        "5b2268747470733a2f2f706363732e6578616d706c652f7367782f63657274696669636174696f6e2f7634222c2268747470733a2f2f6b64732e6578616d706c65225d",
    ),
    (
        "limits",
        "7b226865616465725f74696d656f75745f73656373223a352c226d61785f6368616c6c656e67655f68616e647368616b6573223a312c226d61785f636f6e6e656374696f6e73223a3531322c226d61785f726571756573745f6279746573223a36353533362c226d61785f7761736d5f696e7374616e636573223a382c226d61785f7769746e6573735f636f6e6e656374696f6e73223a31362c22726571756573745f74696d656f75745f73656373223a33302c2277726974655f7374616c6c5f73656373223a31357d",
    ),
    (
        "management",
        "7b22686f73746e616d65223a226d616e6167652e6578616d706c65227d",
    ),
    (
        "oidc",
        "7b2261756469656e6365223a22656e636c6176652d6f73222c22636c6f636b5f736b65775f73656373223a33302c22697373756572223a2268747470733a2f2f6964702e6578616d706c65222c226a776b735f75726c223a6e756c6c2c226d61785f746f6b656e5f6c69666574696d655f73656373223a3930307d",
    ),
    (
        "store",
        "7b22636f756e746572223a227769746e657373222c227769746e657373223a7b22636f6e6669675f726f6f74223a2239663836643038313838346337643635396132666561613063353561643031356133626634663162326230623832326364313564366331356230663030613038222c2275726c223a2268747470733a2f2f31302e302e302e323a39343433227d7d",
    ),
    (
        "witness",
        "7b226c697374656e223a22302e302e302e303a39343433227d",
    ),
    (
        "workload/db/settings",
        "7b2261726773223a5b5d2c22636f6e7461696e6572223a7b22616c6c6f775f686f7374223a66616c73652c226361706162696c6974696573223a5b224341505f4e45545f42494e445f53455256494345225d2c226865616c7468223a7b22687474705f70617468223a222f6865616c74687a222c2273746172745f74696d656f75745f73656373223a33307d2c226d61785f7265737461727473223a352c22706f7274223a353433322c2272657374617274223a22616c77617973222c227772697461626c655f726f6f746673223a66616c73657d2c22656e76223a7b7d2c22686f73746e616d6573223a5b2264622e6578616d706c65225d2c22696d616765223a2272656769737472792e6578616d706c652f6462407368613235363a30313233343536373839616263646566303132333435363738396162636465663031323334353637383961626364656630313233343536373839616263646566222c226b696e64223a22636f6e7461696e6572222c226c696d697473223a7b226370755f6d696c6c6973223a3530302c226d656d6f72795f6279746573223a3236383433353435362c2270696473223a36342c22726571756573745f74696d656f75745f6d73223a6e756c6c7d7d",
    ),
    (
        "workload/hello/settings",
        "7b2261726773223a5b222d2d6772656574222c225c2271756f7465645c225c74616e645c74746162626564225d2c22656e76223a7b2242223a2232222c2261223a2231222c22c3a9223a22616363656e743a20c3a9222c22f09f9880223a2261737472616c3a20736f727473206265666f726520552b4530303020696e205554462d3136222c22ee8080223a2270726976617465207573652061726561206b65793b205c7530303031206973206120636f6e74726f6c20636861726163746572227d2c22686f73746e616d6573223a5b2268656c6c6f2e6578616d706c65222c2268692e6578616d706c65225d2c226b696e64223a227761736d222c226c696d697473223a7b226d656d6f72795f6279746573223a36373130383836342c22726571756573745f74696d656f75745f6d73223a353030307d7d",
    ),
    (
        "workload/worker/settings",
        "7b2261726773223a5b222d2d6f6e6365225d2c22656e76223a7b7d2c22686f73746e616d6573223a5b5d2c226b696e64223a2270726f63657373222c226c696d697473223a7b226d656d6f72795f6279746573223a6e756c6c2c22726571756573745f74696d656f75745f6d73223a6e756c6c7d2c2270726f63657373223a7b226865616c7468223a7b22687474705f70617468223a222f7265616479222c2273746172745f74696d656f75745f73656373223a31307d2c226d61785f7265737461727473223a352c22706f7274223a393030302c2272657374617274223a226e6f222c2275736572223a313030307d7d",
    ),
    (
        "containers/engine",
        "7b22636f6e7461696e657264223a22312e362e32307e647331222c2272756e63223a2272756e632076657273696f6e20312e312e352b647331227d",
    ),
];

#[test]
fn the_full_configuration_gives_the_known_root_and_leaves() {
    let c = resolved();
    let tree = c.tree("0.1.0").unwrap();
    let got: Vec<(String, String)> = tree
        .leaves()
        .iter()
        .map(|l| (l.name.clone(), hex::encode(l.value_hash)))
        .collect();
    let want: Vec<(String, String)> = LEAVES
        .iter()
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(hex::encode(tree.root()), ROOT);

    let values = c.leaf_values("0.1.0", &[]).unwrap();
    for (name, bytes) in JSON_LEAVES {
        let (_, v) = values.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(
            hex::encode(v),
            bytes,
            "leaf {name}: {}",
            String::from_utf8_lossy(v)
        );
    }
    // File leaves are the files' bytes, as they are on disk.
    let (_, jwks) = values.iter().find(|(n, _)| n == "oidc/jwks").unwrap();
    let dir = full().parent().unwrap().to_path_buf();
    assert_eq!(jwks, &std::fs::read(dir.join("jwks.json")).unwrap());
    assert_eq!(c.jwks(), Some(jwks.as_slice()));
}

/// The settings leaf sorts members by UTF-16 code units, not by Rust's byte order (which the
/// old `json!` leaf took, or insertion order under `preserve_order`): U+1F600 before U+E000.
#[test]
fn settings_members_follow_rfc_8785_order() {
    let c = resolved();
    let values = c.leaf_values("0.1.0", &[]).unwrap();
    let (_, v) = values
        .iter()
        .find(|(n, _)| n == "workload/hello/settings")
        .unwrap();
    let text = String::from_utf8(v.clone()).unwrap();
    assert!(
        text.starts_with("{\"args\":[\"--greet\",\"\\\"quoted\\\"\\tand\\ttabbed\"],\"env\":{\"B\":\"2\",\"a\":\"1\",\"é\":\"accent: é\",\"\u{1f600}\":"),
        "{text}"
    );
    let astral = text.find('\u{1f600}').unwrap();
    let private = text.find('\u{e000}').unwrap();
    assert!(astral < private, "{text}");
    assert!(text.contains("\\u0001 is a control character"), "{text}");
}

/// `scripts/config-root.py` recomputes the manifest from the file and the doc alone.
#[test]
fn an_independent_script_recomputes_the_root() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import tomllib"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no python3 with tomllib (3.11 or later)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/config-root.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(full())
        .args(["--version", "0.1.0"])
        .arg("--engine")
        .arg(full().parent().unwrap().join("engine.json"))
        .arg("--image")
        .arg(format!(
            "db={}",
            full().parent().unwrap().join("images/db").display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = serde_json::to_value(resolved().tree("0.1.0").unwrap().manifest()).unwrap();
    assert_eq!(theirs, ours);
    assert_eq!(theirs["root"], ROOT);
}
