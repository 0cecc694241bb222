//! A private OCI registry on loopback for image-pull tests: Debian's `docker-registry`
//! (distribution v2.8) with its own configuration, storage, TLS leaf from a throwaway
//! [`TestPki`] and htpasswd (bcrypt) basic auth, all under a directory the test owns; and
//! busybox images built with umoci and pushed with skopeo.
//!
//! Needs `/usr/bin/docker-registry`, `skopeo`, `umoci`, `htpasswd` (apache2-utils) and
//! `/bin/busybox` (busybox-static). Every process it starts has a bounded wait and is killed
//! and reaped on drop, also when the test panics. It never touches a system daemon.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::pki::TestPki;

/// How long a helper command (umoci, skopeo, htpasswd) may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the registry may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running private registry; killed on drop.
pub struct Registry {
    child: Child,
    dir: PathBuf,
    host: String,
    ca_pem: String,
    username: String,
    password: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.host)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A local OCI image layout and the image it holds under `tag`.
#[derive(Debug, Clone)]
pub struct OciLayout {
    /// The layout directory.
    pub path: PathBuf,
    /// The tag the image is under.
    pub tag: String,
    /// The manifest digest, `sha256:<hex>`.
    pub manifest_digest: String,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Run `cmd` to completion within [`COMMAND_TIMEOUT`]; its stdout.
///
/// # Panics
/// If it cannot start, runs too long (it is killed), or fails; the panic shows its stderr.
pub fn run(cmd: &mut Command) -> String {
    #![allow(clippy::expect_used)]
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {COMMAND_TIMEOUT:?}");
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    assert!(status.success(), "{what} failed ({status}): {stderr}");
    stdout
}

impl Registry {
    /// Start a registry with everything under `dir` (config, storage, TLS, htpasswd, log),
    /// listening on a free loopback port, and wait (bounded) until it answers.
    ///
    /// # Panics
    /// If a file cannot be written, a tool is missing, or the registry does not answer.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, None)
    }

    /// Start a registry like [`Registry::start`], but with token auth: its 401s send
    /// `Bearer realm="https://127.0.0.1:<other port>/token"`, and a token server there (a
    /// loopback HTTPS server with the registry's certificate) hands anyone an ES256 token,
    /// signed by a throwaway key the registry trusts, allowing pull and push on `repository`.
    ///
    /// # Panics
    /// As [`Registry::start`], or if the token cannot be made.
    pub fn start_with_token_auth(dir: &Path, repository: &str) -> Self {
        Self::start_with(dir, Some(repository))
    }

    fn start_with(dir: &Path, token_repository: Option<&str>) -> Self {
        #![allow(clippy::expect_used)]
        std::fs::create_dir_all(dir).expect("the registry directory");
        let pki = TestPki::new("enclave-oci test registry CA");
        let cert = dir.join("registry.crt");
        let key = dir.join("registry.key");
        let chain: String = pki.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        std::fs::write(&cert, chain).expect("the registry certificate");
        std::fs::write(&key, pem("PRIVATE KEY", pki.key.secret_der())).expect("the registry key");
        // What skopeo trusts for this registry (`--cert-dir`).
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).expect("the CA directory");
        std::fs::write(certs.join("ca.crt"), &pki.ca_pem).expect("the CA file");
        let (username, password) = ("enclave".to_string(), "registry-test-password".to_string());
        let htpasswd = run(Command::new("htpasswd").args(["-Bbn", &username, &password]));
        std::fs::write(dir.join("htpasswd"), htpasswd).expect("the htpasswd file");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let host = format!("127.0.0.1:{port}");
        let storage = dir.join("storage");
        let auth = match token_repository {
            None => format!(
                "  htpasswd:\n    realm: enclave-oci-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ),
            Some(repository) => {
                let signer = dir.join("token-signer.crt");
                let (signer_pem, token) = token(repository);
                std::fs::write(&signer, signer_pem).expect("the token signer certificate");
                let answer = crate::https::answer(
                    &serde_json::json!({"token": token, "expires_in": 300}).to_string(),
                );
                let token_port =
                    crate::https::serve(pki.chain.clone(), pki.key.clone_key(), answer, 64);
                format!(
                    "  token:\n    realm: https://127.0.0.1:{token_port}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    signer.display()
                )
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: false\nhttp:\n  addr: {host}\n  secret: enclave-oci-test-secret\n  tls:\n    certificate: {}\n    key: {}\nauth:\n{auth}",
            storage.display(),
            cert.display(),
            key.display(),
        );
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("the registry configuration");
        let log = std::fs::File::create(dir.join("registry.log")).expect("the registry log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log, twice"))
            .stderr(log)
            .spawn()
            .expect("/usr/bin/docker-registry (Debian's docker-registry package)");
        let mut registry = Self {
            child,
            dir: dir.to_path_buf(),
            host,
            ca_pem: pki.ca_pem,
            username,
            password,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
                );
            }
            if TcpStream::connect(&self.host).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within {START_TIMEOUT:?}",
                self.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`, as references spell it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The CA (PEM) that issued the registry's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The user name the registry accepts.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Its password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The registry's storage root: blobs are under
    /// `docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Where the registry stores the blob `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or_default())
            .join(hex)
            .join("data")
    }

    fn skopeo_auth(&self, dest: bool) -> Vec<String> {
        let (cert, creds) = if dest {
            ("--dest-cert-dir", "--dest-creds")
        } else {
            ("--cert-dir", "--creds")
        };
        vec![
            cert.to_string(),
            self.dir.join("certs").display().to_string(),
            creds.to_string(),
            format!("{}:{}", self.username, self.password),
        ]
    }

    /// Push `layout`'s image to `repo_tag` (`repo:tag`) with skopeo; the manifest digest the
    /// registry reports for it (skopeo may convert; this is the registry's).
    ///
    /// # Panics
    /// If skopeo fails or reports no digest.
    pub fn push(&self, layout: &OciLayout, repo_tag: &str) -> String {
        self.push_with(layout, repo_tag, &[])
    }

    /// [`Registry::push`] with more `skopeo copy` arguments (`--encryption-key jwe:<file>`).
    ///
    /// # Panics
    /// As [`Registry::push`].
    pub fn push_with(&self, layout: &OciLayout, repo_tag: &str, extra: &[&str]) -> String {
        let dest = format!("docker://{}/{repo_tag}", self.host);
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--all"])
            .args(extra)
            .args(self.skopeo_auth(true))
            .arg(format!("oci:{}:{}", layout.path.display(), layout.tag))
            .arg(&dest));
        self.digest(repo_tag)
    }

    /// The manifest digest the registry reports for `repo_tag` (`skopeo inspect`).
    ///
    /// # Panics
    /// If skopeo fails or reports no digest.
    pub fn digest(&self, repo_tag: &str) -> String {
        let out = run(Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(self.skopeo_auth(false))
            .arg(format!("docker://{}/{repo_tag}", self.host)));
        let raw_digest = sha256_hex(out.as_bytes());
        let reported = run(Command::new("skopeo")
            .args(["inspect", "--format", "{{.Digest}}"])
            .args(self.skopeo_auth(false))
            .arg(format!("docker://{}/{repo_tag}", self.host)));
        let reported = reported.trim().to_string();
        // For an index, `inspect --format` describes the platform's image; `--raw` is what
        // the tag names.
        if reported.ends_with(&raw_digest) {
            reported
        } else {
            format!("sha256:{raw_digest}")
        }
    }
}

const TOKEN_SERVICE: &str = "enclave-oci-test";
const TOKEN_ISSUER: &str = "enclave-oci-test-token-issuer";

/// A self-signed ES256 signing certificate (PEM) and a token it signed, carrying its own
/// certificate in `x5c`, allowing pull and push on `repository` for five minutes.
fn token(repository: &str) -> (String, String) {
    #![allow(clippy::expect_used)]
    let key = rcgen::KeyPair::generate().expect("a token signing key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("parameters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "enclave-oci test token signer");
    let cert = params
        .self_signed(&key)
        .expect("the token signer certificate");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![
        base64::engine::general_purpose::STANDARD.encode(cert.der()),
    ]);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "enclave", "aud": TOKEN_SERVICE,
        "iat": now - 5, "nbf": now - 5, "exp": now + 300, "jti": format!("t-{now}"),
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    });
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der());
    let token = jsonwebtoken::encode(&header, &claims, &encoding).expect("signing a test token");
    (cert.pem(), token)
}

/// sha256 of `bytes`, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Images for the tests.
pub mod image {
    use std::path::Path;
    use std::process::Command;

    use super::{OciLayout, run};

    /// The busybox applets linked into every test image.
    pub const APPLETS: &[&str] = &["sh", "httpd", "echo", "cat", "sleep", "nc", "wget"];

    /// Build `dir/<name>`, an OCI layout with one gzip layer holding `/bin/busybox`
    /// (busybox-static) and its applets, tagged `latest`, running `cmd` (the first word is the
    /// entrypoint, the rest its arguments) as linux/amd64.
    ///
    /// # Panics
    /// If umoci fails or `/bin/busybox` is missing.
    pub fn busybox(dir: &Path, name: &str, cmd: &[&str]) -> OciLayout {
        #![allow(clippy::expect_used)]
        let layout = dir.join(name);
        let bundle = dir.join(format!("{name}.bundle"));
        let tag = "latest";
        let image = format!("{}:{tag}", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &image]));
        run(Command::new("umoci")
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle));
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("rootfs/bin");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("/bin/busybox (busybox-static)");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("an applet symlink");
        }
        run(Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle));
        let mut config = Command::new("umoci");
        config.args([
            "config",
            "--image",
            &image,
            "--os",
            "linux",
            "--architecture",
            "amd64",
            "--config.env",
            "PATH=/bin",
            "--config.workingdir",
            "/",
        ]);
        if let Some((entry, args)) = cmd.split_first() {
            config.args(["--config.entrypoint", entry]);
            for a in args {
                config.args(["--config.cmd", a]);
            }
        }
        run(&mut config);
        run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout));
        let _ = std::fs::remove_dir_all(&bundle);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
                .expect("index.json is JSON");
        let manifest_digest = index["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|d| {
                    d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
                })
            })
            .and_then(|d| d["digest"].as_str())
            .expect("the tag in index.json")
            .to_string();
        OciLayout {
            path: layout,
            tag: tag.to_string(),
            manifest_digest,
        }
    }

    /// Add to `layout`'s image an **uncompressed** tar layer holding `files` (path in the
    /// image, content), so that the layer's bytes show its files as they are (what a test
    /// that greps for plaintext needs); the configuration's `diff_ids`, the manifest and the
    /// tag in `index.json` follow. Returns the layout with its new manifest digest.
    ///
    /// # Panics
    /// If the layout does not read or `tar` fails.
    pub fn add_plain_layer(layout: &OciLayout, files: &[(&str, &[u8])]) -> OciLayout {
        #![allow(clippy::expect_used)]
        use serde_json::{Value, json};
        let blobs = layout.path.join("blobs/sha256");
        let read_json = |digest: &str| -> Value {
            let hex = digest.trim_start_matches("sha256:");
            serde_json::from_slice(&std::fs::read(blobs.join(hex)).expect("a blob of the layout"))
                .expect("a JSON blob")
        };
        let put = |bytes: &[u8]| -> String {
            let hex = super::sha256_hex(bytes);
            std::fs::write(blobs.join(&hex), bytes).expect("writing a blob");
            format!("sha256:{hex}")
        };
        let staging = layout.path.with_extension("layer");
        let _ = std::fs::remove_dir_all(&staging);
        for (path, content) in files {
            let p = staging.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("a file in a directory")).expect("mkdir");
            std::fs::write(&p, content).expect("writing a layer file");
        }
        let tar = layout.path.with_extension("tar");
        run(Command::new("tar")
            .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&staging)
            .arg("."));
        let layer = std::fs::read(&tar).expect("the layer tar");
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_file(&tar);
        let layer_digest = put(&layer);
        let mut manifest = read_json(&layout.manifest_digest);
        let mut config = read_json(manifest["config"]["digest"].as_str().expect("a config"));
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .expect("diff_ids")
            .push(json!(layer_digest));
        if let Some(h) = config["history"].as_array_mut() {
            h.push(json!({"created_by": "enclave-os test: add_plain_layer"}));
        }
        let config_bytes = serde_json::to_vec(&config).expect("config JSON");
        manifest["config"]["digest"] = json!(put(&config_bytes));
        manifest["config"]["size"] = json!(config_bytes.len());
        manifest["layers"]
            .as_array_mut()
            .expect("layers")
            .push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.len(),
            }));
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest JSON");
        let manifest_digest = put(&manifest_bytes);
        let index_path = layout.path.join("index.json");
        let mut index: Value =
            serde_json::from_slice(&std::fs::read(&index_path).expect("index.json"))
                .expect("index.json is JSON");
        for d in index["manifests"].as_array_mut().expect("manifests") {
            if d["annotations"]["org.opencontainers.image.ref.name"].as_str()
                == Some(layout.tag.as_str())
            {
                d["digest"] = json!(manifest_digest);
                d["size"] = json!(manifest_bytes.len());
            }
        }
        std::fs::write(&index_path, serde_json::to_vec(&index).expect("index JSON"))
            .expect("writing index.json");
        OciLayout {
            path: layout.path.clone(),
            tag: layout.tag.clone(),
            manifest_digest,
        }
    }
}
