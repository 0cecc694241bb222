//! Running the real `enclave-os` binary from tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_enclave-os");

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run enclave-os")
}

/// `enclave-os verify URL --trust-sim SIM --root ROOT`: what every verify test starts from.
pub struct VerifyArgs {
    url: String,
    sim: String,
    root: String,
}

impl VerifyArgs {
    pub fn new(url: &str, sim: &std::path::Path, root: &std::path::Path) -> Self {
        Self {
            url: url.to_string(),
            sim: sim.to_str().unwrap().to_string(),
            root: root.to_str().unwrap().to_string(),
        }
    }

    /// The base arguments followed by `extra`.
    pub fn with<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "verify",
            self.url.as_str(),
            "--trust-sim",
            self.sim.as_str(),
            "--root",
            self.root.as_str(),
        ];
        args.extend_from_slice(extra);
        args
    }
}

/// Run with `--json` appended; the exit code and the parsed output.
pub fn json(args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(&all);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap(), v)
}

/// A running `enclave-os run`, killed when dropped.
pub struct Server(pub Child);

impl Server {
    /// Stop it with SIGTERM, as an operator would, and wait for it to exit.
    pub fn stop(mut self) {
        let pid = self.0.id();
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
pub mod instance;
pub mod lab;
pub mod upstream;

/// A copy of directory `from` at `to`, recursively.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A CA, and a server certificate for `localhost` it issued: (CA PEM, chain, key).
pub fn test_pki(
    name: &str,
) -> (
    String,
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let p = enclave_testkit::pki::TestPki::new(name);
    (p.ca_pem, p.chain, p.key)
}

/// A simulation PKI in `dir` (created by collecting evidence once).
pub fn sim_pki(dir: &std::path::Path) {
    let o = run(&[
        "evidence",
        "collect",
        "--tee",
        "sim-sgx",
        "--sim-dir",
        dir.join("state/sim").to_str().unwrap(),
        "--report-data",
        &"00".repeat(64),
        "--out",
        dir.join("probe").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A fixed answer for [`https_server`].
pub fn body(text: &str) -> enclave_testkit::https::Answer {
    enclave_testkit::https::answer(text)
}

/// An HTTPS server on loopback with `chain` and `key`, answering each of up to `connections`
/// connections with whatever `answer` holds at the time (one request each); its port.
pub fn https_server(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
    answer: enclave_testkit::https::Answer,
    connections: usize,
) -> u16 {
    enclave_testkit::https::serve(chain, key, answer, connections)
}

/// Run `openssl` with `args`; fail the test with its stderr if it fails.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An EC P-256 key pair made by openssl in `dir`: (private PEM path, public PEM path).
pub fn openssl_ec_keys(dir: &std::path::Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let private = dir.join("ec.pem").to_str().unwrap().to_owned();
    let public = dir.join("ec.pub").to_str().unwrap().to_owned();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &private,
    ]);
    openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
    (private, public)
}
