//! A runtime instance for tests: its configuration, start, and calls over RA-TLS.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config};
use enclave_ratls::trust::TrustFiles;

use super::*;

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "enclave-os-test";

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/oidc")
        .join(name)
}

pub struct Instance {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
}

impl Instance {
    pub fn new(dir: &Path, extra: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("enclave.toml");
        std::fs::write(
            &config,
            format!(
                "tee = \"sim-sgx\"\nseal_policy = \"signer\"\nstate_dir = \"state\"\n\
                 [oidc]\nissuer = \"{ISS}\"\naudience = \"{AUD}\"\njwks_file = \"{}\"\n{extra}",
                testdata("jwks.json").display()
            ),
        )
        .unwrap();
        Self {
            dir: dir.to_path_buf(),
            config,
            port: free_port(),
        }
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "run".into(),
            self.config.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", self.port),
        ]
    }

    /// Start the runtime; its log is appended to `runtime.log` in the instance's directory.
    pub fn start(&self) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(BIN)
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!("the runtime exited with {status} before listening");
            }
            assert!(Instant::now() < deadline, "not listening after 30 s");
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("runtime.log")
    }

    /// Everything the runtime has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Start, expecting a refusal: the exit code and what it said.
    /// A runtime that starts serving instead of refusing is killed after 60 s and fails the
    /// test, rather than leaving it waiting forever.
    pub fn refused(&self) -> (i32, String) {
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(BIN)
            .args(self.args())
            .stdout(Stdio::null())
            .stderr(err.reopen().unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the runtime did not refuse to start (still running after 60 s): {}",
                    std::fs::read_to_string(err.path()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(err.path()).unwrap_or_default(),
        )
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let trust = TrustFiles {
            root: Some(self.dir.join("state/ca/root.crt.pem")),
            trust_sim: Some(self.dir.join("state/sim")),
            collateral: None,
        };
        let verifier = Arc::new(RatlsServerVerifier::new(
            trust.verifier().unwrap(),
            Freshness::Deterministic,
        ));
        Arc::new(client_config(verifier, None, None).unwrap())
    }

    /// One request over RA-TLS: the status and body, or the I/O error.
    pub fn call(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.call_as("127.0.0.1", tls, method, path, token, body)
    }

    /// One request over RA-TLS to `host` (SNI and Host), at this instance's loopback port.
    pub fn call_as(
        &self,
        host: &str,
        tls: &Arc<rustls::ClientConfig>,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let method =
            enclave_http::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
        let uri = format!("https://{host}:{}{path}", self.port)
            .parse()
            .map_err(std::io::Error::other)?;
        let mut request = enclave_http::Request::new(method, uri)
            .body(body.to_vec())
            .via("127.0.0.1", self.port);
        if let Some(t) = token {
            request = request.bearer(t).map_err(std::io::Error::other)?;
        }
        let response = enclave_http::Client::new(tls.clone())
            .max_body(64 << 20)
            .timeout(Duration::from_secs(30))
            .send_blocking(request)
            .map_err(std::io::Error::other)?;
        Ok((response.status.as_u16(), response.body))
    }
}

/// A token from the test issuer (ES256, `ec-1`) for `audience`, with `sub` and the members of
/// `extra` as further claims, valid for ten minutes.
pub fn token_for(audience: &str, sub: &str, extra: serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = serde_json::json!({
        "iss": ISS, "aud": audience, "sub": sub, "iat": now, "exp": now + 600,
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("ec-1".into());
    let key =
        jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(testdata("ec.key.pem")).unwrap())
            .unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// A token with every scope the management API knows.
pub fn token() -> String {
    token_with(&["status:read kv:read kv:write workloads:write"], &[])
}

/// A token with these `--scope` values and further `enclave-os token` arguments.
pub fn token_with(scopes: &[&str], extra: &[&str]) -> String {
    let key = testdata("ec.key.pem");
    let mut args = vec![
        "token",
        "--key",
        key.to_str().unwrap(),
        "--kid",
        "ec-1",
        "--issuer",
        ISS,
        "--audience",
        AUD,
    ];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    args.extend(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

pub fn json_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

pub fn verify(i: &Instance, server_name: Option<&str>) -> serde_json::Value {
    let base = VerifyArgs::new(
        &format!("https://127.0.0.1:{}", i.port),
        &i.dir.join("state/sim"),
        &i.dir.join("state/ca/root.crt.pem"),
    );
    let extra = server_name
        .map(|n| vec!["--server-name", n])
        .unwrap_or_default();
    let (code, v) = json(&base.with(&extra));
    assert_eq!(code, 0, "{v}");
    v
}

/// `enclave-os <group> --url … --trust-sim … --root … --json <action>` against `i`, with
/// `bearer` as `ENCLAVE_OS_TOKEN`: the exit code and its JSON.
pub fn cli(i: &Instance, group: &str, bearer: &str, action: &[&str]) -> (i32, serde_json::Value) {
    let url = format!("https://127.0.0.1:{}", i.port);
    let sim = i.dir.join("state/sim");
    let root = i.dir.join("state/ca/root.crt.pem");
    let mut args = vec![
        group,
        "--url",
        &url,
        "--trust-sim",
        sim.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(action);
    let out = Command::new(BIN)
        .args(&args)
        .env("ENCLAVE_OS_TOKEN", bearer)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}
