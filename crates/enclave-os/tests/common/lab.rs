//! The container lab shared by the container tests and the container benchmark: a private
//! registry, a private containerd, busybox images, and a runtime on the simulated TDX TEE
//! configured for them. Each lab has its own containerd namespace, bridge and subnet; its
//! bridge and firewall rules go when it is dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use enclave_testkit::containerd::{Containerd, unique};
use enclave_testkit::registry::{OciLayout, Registry, image};
use serde_json::Value;

use super::instance::{Instance, json_of, token};
use super::*;

/// A bridge the runtime creates, torn down (with its firewall rules and address pool) when the
/// test ends.
pub struct BridgeGuard {
    pub name: String,
    pub subnet: String,
    pub state: PathBuf,
}

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = enclave_containers::BridgeConfig {
            name: self.name.clone(),
            subnet: self.subnet.parse().unwrap(),
            cni_bin_dir: "/usr/lib/cni".into(),
            state_dir: self.state.clone(),
            open_port: None,
        };
        if let Ok(b) = rt.block_on(enclave_containers::Bridge::new(config)) {
            let _ = b.teardown_blocking();
        }
    }
}

/// One test's world: a registry, a containerd, an image, and a runtime configured for them.
/// Fields drop in order: the runtime first, then containerd (its shims and containers), then
/// the bridge.
pub struct Lab {
    pub server: Option<Server>,
    pub instance: Instance,
    pub registry: Registry,
    pub containerd: Containerd,
    pub bridge: BridgeGuard,
    pub dir: tempfile::TempDir,
    /// The runtime's containerd namespace.
    pub namespace: String,
}

/// The third octet of this process's next subnet: 10.<pid-derived>.<n>.0/24.
pub fn next_subnet() -> String {
    static N: AtomicU8 = AtomicU8::new(1);
    let second = 150 + (std::process::id() % 40) as u8;
    format!("10.{second}.{}.0/24", N.fetch_add(1, Ordering::Relaxed))
}

impl Lab {
    /// A lab whose enclave.toml also has `extra` appended (more registries, say).
    pub fn new(extra: &str) -> Lab {
        Self::with_containerd(extra, Containerd::start())
    }

    /// A lab whose containerd keeps its content and snapshots on a tmpfs (what running
    /// encrypted images asks for).
    pub fn on_tmpfs(extra: &str) -> Lab {
        Self::with_containerd(extra, Containerd::start_on_tmpfs())
    }

    fn with_containerd(extra: &str, containerd: Containerd) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(&dir.path().join("registry"));
        let bridge = BridgeGuard {
            name: unique("eos").chars().take(15).collect(),
            subnet: next_subnet(),
            state: dir.path().join("rt/state/cni"),
        };
        let namespace = unique("eos-ns-");
        let rt = dir.path().join("rt");
        std::fs::create_dir_all(&rt).unwrap();
        std::fs::write(rt.join("registry-ca.pem"), registry.ca_pem()).unwrap();
        let config = rt.join("enclave.toml");
        std::fs::write(
            &config,
            format!(
                "tee = \"sim-tdx\"\nstate_dir = \"state\"\nseal_key_env = \"TEST_SEAL_KEY\"\n\
                 [oidc]\nissuer = \"{}\"\naudience = \"{}\"\njwks_file = \"{}\"\n\
                 [containers]\ncontainerd_socket = \"{}\"\nnamespace = \"{}\"\nbridge = \"{}\"\nsubnet = \"{}\"\n\
                 [[registry]]\nhost = \"{}\"\nca_bundle = \"registry-ca.pem\"\nusername = \"{}\"\npassword_env = \"TEST_REGISTRY_PASSWORD\"\n{extra}",
                super::instance::ISS,
                super::instance::AUD,
                super::instance::testdata("jwks.json").display(),
                containerd.socket().display(),
                namespace,
                bridge.name,
                bridge.subnet,
                registry.host(),
                registry.username(),
            ),
        )
        .unwrap();
        let instance = Instance {
            dir: rt,
            config,
            port: free_port(),
        };
        Lab {
            server: None,
            instance,
            registry,
            containerd,
            bridge,
            dir,
            namespace,
        }
    }

    /// Start (or restart) the runtime, with the registry's password in its environment.
    pub fn start(&mut self) {
        let password = self.registry.password().to_string();
        self.server = Some(start_with_env(
            &self.instance,
            &[("TEST_REGISTRY_PASSWORD", password.as_str())],
        ));
    }

    /// Kill the runtime with SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.0.kill().unwrap();
            s.0.wait().unwrap();
        }
    }

    /// An image from busybox running `sh -c script`, pushed as `repo:v1`: its digest.
    pub fn image(&self, name: &str, script: &str) -> (OciLayout, String) {
        let layout = image::busybox(
            &self.dir.path().join("images"),
            name,
            &["/bin/sh", "-c", script],
        );
        let digest = self.registry.push(&layout, &format!("{name}:v1"));
        (layout, digest)
    }

    pub fn reference(&self, name: &str, digest: &str) -> String {
        format!("{}/{name}@{digest}", self.registry.host())
    }

    /// A workload file for `image` at `hostname`, with `more` lines in its container table.
    pub fn workload_file(&self, name: &str, image: &str, hostname: &str, more: &str) -> PathBuf {
        let p = self.instance.dir.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "[workload]\nname = \"{name}\"\nkind = \"container\"\nimage = \"{image}\"\nhostnames = [\"{hostname}\"]\n\
                 [workload.container]\nport = 8080\n{more}"
            ),
        )
        .unwrap();
        p
    }

    /// The containers in the runtime's containerd namespace, as `ctr` lists them.
    pub fn containers(&self) -> Vec<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.containerd.socket())
            .args(["-n", &self.namespace, "containers", "ls", "-q"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `enclave-os workload … ACTION --json`: the exit code and its JSON.
    pub fn cli(&self, action: &[&str]) -> (i32, Value) {
        super::instance::cli(&self.instance, "workload", &token(), action)
    }

    /// Load workload file `file` and wait for it: the exit code and the final progress (or
    /// the error).
    pub fn load(&self, file: &Path) -> (i32, Value) {
        self.cli(&["load", file.to_str().unwrap(), "--wait-secs", "120"])
    }

    /// curl https://HOST:PORT/PATH through the runtime, trusting the runtime's CA.
    pub fn curl(&self, host: &str, path: &str) -> (bool, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--fail-with-body", "--cacert"])
            .arg(self.instance.dir.join("state/ca/root.crt.pem"))
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", self.instance.port))
            .arg(format!("https://{host}:{}{path}", self.instance.port))
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The operator's status detail.
    pub fn detail(&self) -> Value {
        let tls = self.instance.client();
        let (status, body) = self
            .instance
            .call(&tls, "GET", "/api/v1/status/detail", Some(&token()), b"")
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        json_of(&body)
    }

    /// Workload `name` in the status detail.
    pub fn workload(&self, name: &str) -> Value {
        self.detail()["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// The operator's sealing root key for the simulated TD (TDX has no sealing key of its own).
pub const SEAL_KEY: &str = "5ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea15ea1";

/// Start `i` with `env` set for the runtime, as `Instance::start` does.
pub fn start_with_env(i: &Instance, env: &[(&str, &str)]) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(i.log_path())
        .unwrap();
    let child = Command::new(BIN)
        .args(i.args())
        .env("TEST_SEAL_KEY", SEAL_KEY)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", i.port)).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "the runtime exited with {status} before listening: {}",
                i.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "not listening after 120 s: {}",
            i.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Wait (bounded) for `f` to give `Some`; on timeout, fail with `lab`'s runtime log.
pub fn eventually<T>(
    lab: &Lab,
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; the runtime's log:\n{}",
            lab.instance.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A script serving `text` at `/` on port 8080 (the root filesystem is read-only; /tmp is not).
pub fn serve(text: &str) -> String {
    format!(
        "echo serving {text}; mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// The image's manifest and configuration digests as the registry (through skopeo) has them.
pub fn skopeo_digests(r: &Registry, repo_tag: &str, certs: &Path) -> (String, String) {
    std::fs::create_dir_all(certs).unwrap();
    std::fs::write(certs.join("ca.crt"), r.ca_pem()).unwrap();
    let inspect = |extra: &[&str]| {
        let out = Command::new("skopeo")
            .arg("inspect")
            .args(extra)
            .arg("--cert-dir")
            .arg(certs)
            .arg("--creds")
            .arg(format!("{}:{}", r.username(), r.password()))
            .arg(format!("docker://{}/{repo_tag}", r.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let manifest = inspect(&["--raw"]);
    let config = inspect(&["--config", "--raw"]);
    (sha256_hex(&manifest), sha256_hex(&config))
}
