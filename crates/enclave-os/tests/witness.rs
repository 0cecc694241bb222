//! The witness, attacked as a host would: restore a client's whole state directory and route
//! the witness's address to another witness of the same operator, or to one the client did not
//! pin. Through the real binary over mutual RA-TLS on the simulated TEE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::instance::*;
use common::*;

/// The config root `enclave-os measure` computes for `config`.
fn measure(config: &Path) -> String {
    let (code, v) = json(&["measure", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    v["root"].as_str().unwrap().to_string()
}

struct Setup {
    tmp: tempfile::TempDir,
    ca_section: String,
    root: std::path::PathBuf,
    witness_port: u16,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("operator-ca");
        let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for d in ["witness-a", "client"] {
            sim_pki(&tmp.path().join(d));
        }
        // Witness B runs on the same (simulated) platform as A: the same simulation PKI, as
        // every real machine shares Intel's. Only what it holds differs.
        copy_dir(
            &tmp.path().join("witness-a/state/sim"),
            &tmp.path().join("witness-b/state/sim"),
        );
        Self {
            ca_section: format!(
                "[ca]\ncertificate = \"{}\"\nkey = \"{}\"\n",
                ca.join("intermediary.crt.pem").display(),
                ca.join("intermediary.key.pem").display()
            ),
            root: ca.join("root.crt.pem"),
            witness_port: free_port(),
            tmp,
        }
    }

    fn dir(&self, name: &str) -> std::path::PathBuf {
        self.tmp.path().join(name)
    }

    /// A witness in `name`, on the one witness address: A and B have the same configuration.
    fn witness(&self, name: &str) -> Instance {
        Instance::new(
            &self.dir(name),
            &format!(
                "{}[witness]\nlisten = \"127.0.0.1:{}\"\nclients_root = \"{}\"\ntrust_sim = \"{}\"\n",
                self.ca_section,
                self.witness_port,
                self.root.display(),
                self.dir("client/state/sim").display()
            ),
        )
    }

    /// The client, pinning the witness with `pin` (TOML lines for `[store.witness]`).
    fn client(&self, pin: &str) -> Instance {
        Instance::new(
            &self.dir("client"),
            &format!(
                "{}[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://127.0.0.1:{}\"\nroot = \"{}\"\ntrust_sim = \"{}\"\n{pin}",
                self.ca_section,
                self.witness_port,
                self.root.display(),
                self.dir("witness-a/state/sim").display()
            ),
        )
    }
}

/// Restoring a client's whole state directory and routing the witness's address to another
/// witness with the very same configuration (so the same config root) and platform: that
/// witness never enrolled the client's counter, and says so, instead of answering 0.
#[test]
fn a_stand_in_witness_that_never_enrolled_the_counter_is_refused() {
    let s = Setup::new();
    let a = s.witness("witness-a");
    let pin = format!("config_root = \"{}\"\n", measure(&a.config));
    let client = s.client(&pin);
    let wa = a.start();
    let t = token();
    let c = client.start();
    let tls = client.client();
    let put = |v: &[u8]| {
        client
            .call(&tls, "PUT", "/api/v1/kv/k", Some(&t), v)
            .unwrap()
    };
    assert_eq!(put(b"v1").0, 200);
    c.stop();
    assert!(
        client
            .log()
            .contains("store counter enrolled at the witness"),
        "{}",
        client.log()
    );
    let snapshot = s.dir("client-snapshot");
    copy_dir(&s.dir("client/state"), &snapshot);
    let c = client.start();
    assert_eq!(put(b"v2").0, 200);
    c.stop();

    // The host restores everything and puts witness B where A was.
    wa.stop();
    let b = s.witness("witness-b");
    assert_eq!(measure(&b.config), measure(&a.config), "B must be A's twin");
    let _wb = b.start();
    std::fs::remove_dir_all(s.dir("client/state")).unwrap();
    copy_dir(&snapshot, &s.dir("client/state"));
    let (code, err) = client.refused();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("is not enrolled at this witness") && err.contains("answered 404"),
        "{err}"
    );

    // The host deletes the database too, hoping the client takes itself for new and enrols at
    // B, and then walks old copies of the database up one version at a time. A sealed master
    // key on disk means an enrolled counter: the client never enrols again.
    std::fs::remove_file(s.dir("client/state/store/kv.redb")).unwrap();
    let (code, err) = client.refused();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("is not enrolled at this witness"), "{err}");
    assert_eq!(
        client
            .log()
            .matches("store counter enrolled at the witness")
            .count(),
        1,
        "{}",
        client.log()
    );
}

/// A witness whose certificate carries another config root than the pinned one is refused in
/// the handshake, with both roots named.
#[test]
fn a_witness_with_another_config_root_than_the_pinned_one_is_refused() {
    let s = Setup::new();
    let a = s.witness("witness-a");
    let _wa = a.start();
    let other = "ab".repeat(32);
    let client = s.client(&format!("config_root = \"{other}\"\n"));
    let (code, err) = client.refused();
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("config root") && err.contains(&other) && err.contains(&measure(&a.config)),
        "{err}"
    );
}

/// A witness pinned by an appraisal policy it does not satisfy is refused, naming the rule; an
/// unpinned witness is refused at configuration load.
#[test]
fn a_witness_failing_the_pinned_policy_or_not_pinned_at_all_is_refused() {
    let s = Setup::new();
    let a = s.witness("witness-a");
    let _wa = a.start();
    let policy = s.dir("witness-policy.toml");
    // The witness runs on the simulated SGX TEE; this policy accepts TDX only.
    std::fs::write(&policy, "tee = [\"tdx\"]\nallow_simulated = true\n").unwrap();
    let client = s.client(&format!("policy = \"{}\"\n", policy.display()));
    let (code, err) = client.refused();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("policy rule 'tee'"), "{err}");

    let client = s.client("");
    let (code, err) = client.refused();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("store.witness") && err.contains("pin the witness"),
        "{err}"
    );
}
