//! Shared by the container tests: a busybox image built with umoci, a small runtime-spec
//! builder (test-only: the runtime has its own, deterministic one), and a fixture holding a
//! private containerd, an engine in a namespace of its own, and cleanup of what a test made.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use enclave_containers::{Engine, Layer};
use enclave_testkit::containerd::{Containerd, unique};

/// Every wait in these tests is bounded by this.
pub const BOUND: Duration = Duration::from_secs(60);

/// An OCI image on disk, as umoci laid it out.
pub struct Image {
    _dir: tempfile::TempDir,
    pub manifest_digest: String,
    /// (digest, bytes) of the manifest, the config and every layer.
    pub blobs: Vec<(String, Vec<u8>)>,
    pub layers: Vec<Layer>,
}

fn run(program: &str, args: &[&str], cwd: &Path) {
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed?): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(oci: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    let path = oci.join("blobs/sha256").join(hex);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Two layers: busybox-static with its applet links, then a web root (`/www/index.html`).
pub fn build_image() -> Image {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    run("umoci", &["init", "--layout", "oci"], d);
    run("umoci", &["new", "--image", "oci:t"], d);
    run("umoci", &["unpack", "--image", "oci:t", "b1"], d);
    let bin = d.join("b1/rootfs/bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (Debian package busybox-static)");
    for applet in [
        "sh", "echo", "httpd", "wget", "sleep", "cat", "timeout", "true", "head", "dd",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    run("umoci", &["repack", "--image", "oci:t", "b1"], d);
    run("umoci", &["unpack", "--image", "oci:t", "b2"], d);
    let www = d.join("b2/rootfs/www");
    std::fs::create_dir_all(&www).expect("mkdir www");
    std::fs::write(www.join("index.html"), "hello from the container\n").expect("index.html");
    run("umoci", &["repack", "--image", "oci:t", "b2"], d);

    let oci = d.join("oci");
    let index = json(&oci.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("manifest digest")
        .to_owned();
    let manifest_bytes = blob(&oci, &manifest_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).expect("manifest");
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config")
        .to_owned();
    let config_bytes = blob(&oci, &config_digest);
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).expect("config");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let mut blobs = vec![
        (manifest_digest.clone(), manifest_bytes),
        (config_digest, config_bytes),
    ];
    let mut layers = Vec::new();
    for (layer, diff_id) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(diff_ids)
    {
        let digest = layer["digest"].as_str().expect("layer digest").to_owned();
        layers.push(Layer {
            media_type: layer["mediaType"].as_str().expect("media type").to_owned(),
            digest: digest.clone(),
            size: layer["size"].as_u64().expect("size"),
            diff_id: diff_id.as_str().expect("diff_id").to_owned(),
        });
        blobs.push((digest.clone(), blob(&oci, &digest)));
    }
    assert_eq!(layers.len(), 2, "umoci made two layers");
    Image {
        _dir: dir,
        manifest_digest,
        blobs,
        layers,
    }
}

/// Write every blob of `image` into the content store under one pull, unpack it, keep it.
/// Returns the chain id of the top layer.
pub async fn load_image(engine: &Engine, image: &Image) -> String {
    let pull = engine
        .begin_pull(&image.manifest_digest)
        .await
        .expect("begin pull");
    for (digest, bytes) in &image.blobs {
        if pull.has_content(digest).await.expect("has content") {
            continue;
        }
        let mut writer = pull
            .content_writer(&format!("test-{digest}"), digest, bytes.len() as u64)
            .await
            .expect("content writer");
        writer.write(bytes).await.expect("write");
        writer.commit().await.expect("commit");
    }
    let chain = pull.unpack(&image.layers, |_| {}).await.expect("unpack");
    pull.finish().await.expect("finish pull");
    chain
}

/// A private containerd and an engine in a namespace of this test's own.
pub struct Fixture {
    pub engine: Engine,
    pub containerd: Containerd,
    /// Container ids to remove at the end (before containerd goes).
    pub ids: Vec<String>,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let containerd = Containerd::start();
        let engine = Engine::connect(containerd.socket(), &unique("t"))
            .await
            .expect("connect to the private containerd");
        Fixture {
            engine,
            containerd,
            ids: Vec::new(),
        }
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.containerd.dir().join("logs").join(format!("{id}.log"))
    }

    /// Remove the test's containers (bounded), then let Drop stop containerd.
    pub async fn cleanup(&self) {
        for id in &self.ids {
            let _ =
                tokio::time::timeout(BOUND, self.engine.remove(id, Duration::from_secs(2))).await;
        }
    }
}

/// What the test spec builder varies.
pub struct SpecOptions<'a> {
    pub args: &'a [&'a str],
    pub readonly: bool,
    pub memory_limit: i64,
    pub cgroups_path: String,
}

impl<'a> SpecOptions<'a> {
    pub fn new(args: &'a [&'a str]) -> SpecOptions<'a> {
        SpecOptions {
            args,
            readonly: true,
            memory_limit: 64 << 20,
            cgroups_path: format!("/{}", unique("eos-test-")),
        }
    }
}

/// A runtime spec like runc's defaults, with its own network namespace (no path) and no
/// capabilities.
pub fn spec(options: &SpecOptions<'_>) -> Vec<u8> {
    let caps: Vec<&str> = Vec::new();
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": options.args,
            "env": ["PATH=/bin", "HOME=/"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": options.readonly },
        "hostname": "container",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777", "size=16m"] }
        ],
        "linux": {
            "cgroupsPath": options.cgroups_path,
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "memory": { "limit": options.memory_limit, "swap": options.memory_limit },
                "pids": { "limit": 64 }
            },
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" },
                { "type": "mount" }, { "type": "network" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
    .to_string()
    .into_bytes()
}
