//! Migration of measurement-sealed state, through the real binary: the secrets move only to the
//! build an authorization signed by the pinned operator root names, never to a lower security
//! version, and the authorized build then runs on the old state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::instance::*;
use common::*;

/// A copy of this binary with bytes appended: another build, so another measurement.
fn another_build(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = std::fs::read(BIN).unwrap();
    bytes.extend_from_slice(name.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

/// Run `bin` with `args`, its simulated ISVSVN set to `svn`.
fn at_svn(bin: &Path, svn: u16, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("ENCLAVE_OS_SIM_ISVSVN", svn.to_string())
        .output()
        .unwrap()
}

fn stdout_json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// `enclave-os migrate authorize` with the root in `ca`; the exit code and the JSON it printed.
fn authorize(
    ca: &Path,
    store: &str,
    target: &str,
    svn: u32,
    out: &Path,
) -> (i32, serde_json::Value) {
    json(&[
        "migrate",
        "authorize",
        "--root-key",
        ca.join("root.key.pem").to_str().unwrap(),
        "--root-cert",
        ca.join("root.crt.pem").to_str().unwrap(),
        "--store",
        store,
        "--target-measurement",
        target,
        "--svn",
        &svn.to_string(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// `migrate export` by the old build at `svn`: the exit code and the error, if any.
fn export(config: &str, auth: &Path, svn: u16) -> (i32, String) {
    let o = at_svn(
        Path::new(BIN),
        svn,
        &[
            "migrate",
            "export",
            config,
            "--authorization",
            auth.to_str().unwrap(),
            "--json",
        ],
    );
    let v = stdout_json(&o);
    (
        o.status.code().unwrap(),
        v["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// An instance in `dir` with the intermediary of `ca` (from `ca init`) and the measurement seal
/// policy, which is what migration is about.
fn measurement_instance(dir: &Path, ca: &Path) -> Instance {
    let i = Instance::new(
        dir,
        &format!(
            "[ca]\ncertificate = \"{}\"\nkey = \"{}\"\n",
            ca.join("intermediary.crt.pem").display(),
            ca.join("intermediary.key.pem").display()
        ),
    );
    let text = std::fs::read_to_string(&i.config)
        .unwrap()
        .replace("seal_policy = \"signer\"", "seal_policy = \"measurement\"");
    std::fs::write(&i.config, text).unwrap();
    i
}

#[test]
fn measurement_sealed_state_moves_only_to_the_build_the_operator_authorized() {
    let tmp = tempfile::tempdir().unwrap();
    let ops = tmp.path().join("operator-ca");
    let rogue = tmp.path().join("rogue-ca");
    for dir in [&ops, &rogue] {
        let (code, v) = json(&["ca", "init", "--out", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{v}");
    }
    let a = measurement_instance(tmp.path(), &ops);
    let t = token();
    let s = a.start();
    let tls = a.client();
    assert_eq!(
        a.call(&tls, "PUT", "/api/v1/kv/k", Some(&t), b"kept")
            .unwrap()
            .0,
        200
    );
    s.stop();
    assert!(a.log().contains("pinned the operator root"), "{}", a.log());

    let new = another_build(tmp.path(), "enclave-os-v2");
    let other = another_build(tmp.path(), "enclave-os-v3");
    let config = a.config.to_str().unwrap();
    let run_args = a.args();
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();

    // The new build cannot unseal, and says where to look: the sealed state is refused (3), not
    // the command line.
    let o = at_svn(&new, 0, &run_args);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("different build cannot unseal") && err.contains("migration"),
        "{err}"
    );

    // What the operator is told: the old build's store and version, the new build's measurement.
    let source = stdout_json(&at_svn(
        Path::new(BIN),
        0,
        &["migrate", "source", config, "--json"],
    ));
    let store = source["store"].as_str().unwrap().to_string();
    assert_eq!(source["svn"], 0);
    let m = |bin: &Path, svn: u16| {
        let v = stdout_json(&at_svn(
            bin,
            svn,
            &["migrate", "measurement", config, "--json"],
        ));
        assert_eq!(v["svn"], svn);
        v["measurement"].as_str().unwrap().to_string()
    };
    let target = m(&new, 0);
    let third = m(&other, 0);
    assert_ne!(target, third);

    // The measurement is no longer taken from the command line: an authorization is needed.
    let o = run(&["migrate", "export", config, "--to", &target]);
    assert_eq!(o.status.code(), Some(2), "--to is gone");

    // Signed by another key: refused, even with that key's root put where the host keeps the
    // root certificate, since the root that counts was pinned in sealed state at provisioning.
    let auth = tmp.path().join("auth.json");
    let (code, v) = authorize(&rogue, &store, &target, 0, &auth);
    assert_eq!(code, 0, "{v}");
    std::fs::copy(
        rogue.join("root.crt.pem"),
        tmp.path().join("state/ca/root.crt.pem"),
    )
    .unwrap();
    let (code, err) = export(config, &auth, 0);
    assert_eq!(code, 1);
    assert!(
        err.contains("migration authorization refused")
            && err.contains("not by the operator root pinned for this store"),
        "{err}"
    );

    // An authorization for one build does not export to another: changing the measurement it
    // names breaks the signature.
    let (code, v) = authorize(&ops, &store, &target, 0, &auth);
    assert_eq!(code, 0, "{v}");
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&auth).unwrap()).unwrap();
    forged["target_measurement"] = serde_json::json!(third);
    let forged_path = tmp.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let (code, err) = export(config, &forged_path, 0);
    assert_eq!(code, 1);
    assert!(err.contains("statement was altered"), "{err}");

    // Another store's authorization is not this store's.
    let elsewhere = tmp.path().join("elsewhere.json");
    authorize(&ops, &"ab".repeat(16), &target, 0, &elsewhere);
    let (code, err) = export(config, &elsewhere, 0);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("this is store {store}")), "{err}");

    // An expired one is void.
    let expired = enclave_runtime::migrate::sign(
        &std::fs::read(ops.join("root.key.pem")).unwrap(),
        &std::fs::read(ops.join("root.crt.pem")).unwrap(),
        &enclave_runtime::migrate::Statement {
            source_store: hex::decode(&store).unwrap().try_into().unwrap(),
            target_measurement: hex::decode(&target).unwrap(),
            target_svn: 0,
            expires: 1_000_000_000,
        },
    )
    .unwrap();
    let expired_path = tmp.path().join("expired.json");
    std::fs::write(&expired_path, serde_json::to_vec(&expired).unwrap()).unwrap();
    let (code, err) = export(config, &expired_path, 0);
    assert_eq!(code, 1);
    assert!(err.contains("it expired at 1000000000"), "{err}");

    // A downgrade: the running build is at security version 3, the target authorized at 2.
    let (code, v) = authorize(&ops, &store, &target, 2, &auth);
    assert_eq!(code, 0, "{v}");
    let (code, err) = export(config, &auth, 3);
    assert_eq!(code, 1);
    assert!(
        err.contains("the target's security version 2 is lower than this build's 3"),
        "{err}"
    );
    assert!(!tmp.path().join("state/migration.sealed").exists());

    // The authorized export.
    let (code, v) = authorize(&ops, &store, &target, 0, &auth);
    assert_eq!(code, 0, "{v}");
    let (code, err) = export(config, &auth, 0);
    assert_eq!(code, 0, "{err}");
    assert!(tmp.path().join("state/migration.sealed").exists());

    // A build it was not addressed to cannot take it.
    let o = at_svn(&other, 0, &["migrate", "import", config]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("was the export addressed to it"), "{err}");
    // Nor can the addressed build at another security version than the one authorized.
    let o = at_svn(&new, 5, &["migrate", "import", config]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "this build's security version is 5, but the operator authorized security version 0"
        ),
        "{err}"
    );

    let o = at_svn(&new, 0, &["migrate", "import", config]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.path().join("state/migration.sealed").exists());
    // The pinned root moved with the secrets: the new build can authorize the next move.
    let source = stdout_json(&at_svn(&new, 0, &["migrate", "source", config, "--json"]));
    assert_eq!(source["store"], store.as_str());
    assert_eq!(source["measurement"], target.as_str());

    // The new build now runs on the old state.
    let child = Command::new(&new)
        .args(&run_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", a.port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(25));
    }
    std::fs::copy(
        ops.join("root.crt.pem"),
        tmp.path().join("state/ca/root.crt.pem"),
    )
    .unwrap();
    let (status, body) = a
        .call(&a.client(), "GET", "/api/v1/kv/k", Some(&t), b"")
        .unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"kept"[..]));
}

#[test]
fn without_a_pinned_operator_root_no_export_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let ops = tmp.path().join("operator-ca");
    let rogue = tmp.path().join("rogue-ca");
    for dir in [&ops, &rogue] {
        let (code, v) = json(&["ca", "init", "--out", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "{v}");
    }
    // The intermediary handed over without its root beside it, or beside a root that did not
    // issue it: nothing is pinned.
    for (case, root, why) in [
        (
            "no-root",
            None,
            "no root certificate beside the intermediary's",
        ),
        (
            "wrong-root",
            Some(rogue.join("root.crt.pem")),
            "the root certificate did not issue the intermediary CA certificate",
        ),
    ] {
        let dir = tmp.path().join(case);
        let handed = dir.join("handed");
        std::fs::create_dir_all(&handed).unwrap();
        for f in ["intermediary.crt.pem", "intermediary.key.pem"] {
            std::fs::copy(ops.join(f), handed.join(f)).unwrap();
        }
        if let Some(root) = root {
            std::fs::copy(root, handed.join("root.crt.pem")).unwrap();
        }
        let a = Instance::new(
            &dir,
            &format!(
                "[ca]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                handed.join("intermediary.crt.pem").display(),
                handed.join("intermediary.key.pem").display()
            ),
        );
        let text = std::fs::read_to_string(&a.config)
            .unwrap()
            .replace("seal_policy = \"signer\"", "seal_policy = \"measurement\"");
        std::fs::write(&a.config, text).unwrap();
        a.start().stop();
        let log = a.log();
        assert!(
            log.contains("no operator root pinned") && log.contains(why),
            "{case}: {log}"
        );
        let config = a.config.to_str().unwrap();
        let new = another_build(&dir, "enclave-os-v2");
        let target = stdout_json(&at_svn(
            &new,
            0,
            &["migrate", "measurement", config, "--json"],
        ))["measurement"]
            .as_str()
            .unwrap()
            .to_string();
        let auth = dir.join("auth.json");
        let (code, v) = authorize(&ops, &"00".repeat(16), &target, 0, &auth);
        assert_eq!(code, 0, "{v}");
        let (code, err) = export(config, &auth, 0);
        assert_eq!(code, 1);
        assert!(
            err.contains("no operator root was pinned") && err.contains("none is accepted"),
            "{case}: {err}"
        );
    }
}

#[test]
fn authorize_refuses_a_root_key_that_is_not_the_root_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let (ops, rogue) = (tmp.path().join("ops"), tmp.path().join("rogue"));
    for dir in [&ops, &rogue] {
        assert_eq!(json(&["ca", "init", "--out", dir.to_str().unwrap()]).0, 0);
    }
    let out = tmp.path().join("auth.json");
    let (code, v) = json(&[
        "migrate",
        "authorize",
        "--root-key",
        rogue.join("root.key.pem").to_str().unwrap(),
        "--root-cert",
        ops.join("root.crt.pem").to_str().unwrap(),
        "--store",
        &"00".repeat(16),
        "--target-measurement",
        &"11".repeat(32),
        "--svn",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("the root key does not belong to the root certificate"),
        "{v}"
    );
    assert!(!out.exists());
    let (code, v) = authorize(&ops, "not-hex", &"11".repeat(32), 1, &out);
    assert_eq!(code, 2);
    assert!(v["error"].as_str().unwrap().contains("--store"), "{v}");

    // A TEE that reports no security version (TDX) offers no migration, whatever is authorized.
    let (code, v) = authorize(&ops, &"00".repeat(16), &"11".repeat(48), 1, &out);
    assert_eq!(code, 0, "{v}");
    let config = tmp.path().join("enclave.toml");
    std::fs::write(
        &config,
        "tee = \"sim-tdx\"\nseal_policy = \"measurement\"\nstate_dir = \"state\"\n",
    )
    .unwrap();
    let (code, err) = export(config.to_str().unwrap(), &out, 0);
    assert_eq!(code, 1);
    assert!(
        err.contains("sim-tdx reports no security version")
            && err.contains("migration is not offered"),
        "{err}"
    );
}

/// A review's attack: the host runs its own instance of the same build on the same platform,
/// with a CA of its own, and puts that instance's sealed root pin into the victim's state. The
/// pin names the store it was made for, so it does not count for the victim's store. Nor does
/// running the victim's own master key under the host's CA make a new pin: pins are made only
/// with a new store.
#[test]
fn a_root_pin_from_another_state_directory_authorizes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (ops, hostca) = (tmp.path().join("ops"), tmp.path().join("hostca"));
    for dir in [&ops, &hostca] {
        assert_eq!(json(&["ca", "init", "--out", dir.to_str().unwrap()]).0, 0);
    }
    let instance = |name: &str, ca: &Path| measurement_instance(&tmp.path().join(name), ca);
    let victim = instance("victim", &ops);
    victim.start().stop();
    // The host's instance runs on the victim's (simulated) platform.
    copy_dir(
        &tmp.path().join("victim/state/sim"),
        &tmp.path().join("host/state/sim"),
    );
    let host = instance("host", &hostca);
    host.start().stop();
    std::fs::copy(
        tmp.path().join("host/state/ca/operator-root.sealed"),
        tmp.path().join("victim/state/ca/operator-root.sealed"),
    )
    .unwrap();
    let config = victim.config.to_str().unwrap();
    let source = at_svn(Path::new(BIN), 0, &["migrate", "source", config, "--json"]);
    let err = String::from_utf8_lossy(&source.stdout).to_string();
    assert!(
        err.contains("pins the operator root of store") && err.contains("not of this store"),
        "{err}"
    );
    let target = stdout_json(&at_svn(
        &another_build(tmp.path(), "enclave-os-rogue"),
        0,
        &["migrate", "measurement", config, "--json"],
    ))["measurement"]
        .as_str()
        .unwrap()
        .to_string();
    let victim_store = {
        let v = std::fs::read_to_string(victim.log_path()).unwrap();
        let at = v.find("store=").unwrap() + "store=".len();
        v[at..at + 32].to_string()
    };
    let auth = tmp.path().join("rogue-auth.json");
    let (code, v) = authorize(&hostca, &victim_store, &target, 0, &auth);
    assert_eq!(code, 0, "{v}");
    let (code, err) = export(config, &auth, 0);
    assert_eq!(code, 1);
    assert!(
        err.contains("pins the operator root of store") && err.contains("not of this store"),
        "{err}"
    );
    assert!(!tmp.path().join("victim/state/migration.sealed").exists());

    // The host runs the victim's state under its own CA: the store exists, so no pin is made.
    std::fs::remove_file(tmp.path().join("victim/state/ca/operator-root.sealed")).unwrap();
    let hijack = instance("victim", &hostca);
    let _ = std::fs::remove_file(tmp.path().join("victim/state/ca/intermediary.key.sealed"));
    hijack.start().stop();
    assert!(
        !tmp.path()
            .join("victim/state/ca/operator-root.sealed")
            .exists()
    );
}

/// A third review's attack: the host writes its own root and intermediary certificates into the
/// state directory and forces a new store. The runtime still serves the operator's intermediary
/// (the one the config tree commits), so the host's root, which did not issue it, is not pinned,
/// and nothing the host signs authorizes an export.
#[test]
fn a_root_the_host_writes_into_the_state_directory_is_not_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let (ops, hostca) = (tmp.path().join("ops"), tmp.path().join("hostca"));
    for dir in [&ops, &hostca] {
        assert_eq!(json(&["ca", "init", "--out", dir.to_str().unwrap()]).0, 0);
    }
    let a = measurement_instance(tmp.path(), &ops);
    a.start().stop();
    let state = tmp.path().join("state");
    for f in ["root.crt.pem", "intermediary.crt.pem"] {
        std::fs::copy(hostca.join(f), state.join("ca").join(f)).unwrap();
    }
    for f in ["master.key.sealed", "kv.redb", "kv.counter"] {
        let _ = std::fs::remove_file(state.join("store").join(f));
    }
    a.start().stop();
    let log = a.log();
    assert!(
        log.contains("no operator root pinned") && log.contains("did not issue the intermediary"),
        "{log}"
    );
    let config = a.config.to_str().unwrap();
    let source = stdout_json(&at_svn(
        Path::new(BIN),
        0,
        &["migrate", "source", config, "--json"],
    ));
    let err = source["error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("not of this store"), "{source}");
}
