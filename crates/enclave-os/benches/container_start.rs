//! Time to pull and start a small container image through `enclave-os run` on the simulated
//! TDX TEE, cold and from cache, beside the anchor of pulling the same image with skopeo:
//!
//! 1. **cold**: a fresh containerd (empty content store): `enclave-os workload load` until the
//!    workload serves (resolve, pull every layer with its digest and diff_id checked, unpack,
//!    create, network, start, health check, certify, publish);
//! 2. **from cache**: unload, then load again: the manifest and configuration are fetched and
//!    checked again, the layers are in the content store and the snapshot is committed;
//! 3. **anchor**: `skopeo copy docker://… oci:DIR` of the same image from the same registry
//!    (pull and digest checks only, into a directory; nothing unpacked or started).
//!
//! Each case runs `ROUNDS` times (default 3), a fresh lab per cold round. Needs root, and the
//! packages `.ci/run` installs. Run: `cargo bench -p enclave-os --bench container_start`.
//! Figures in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::{Lab, serve};

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<34} median {:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms   (n = {})",
        ms(&samples[samples.len() / 2]),
        ms(&samples[0]),
        ms(&samples[samples.len() - 1]),
        samples.len()
    );
}

/// Load `file` and wait until it serves; the time it took.
fn timed_load(lab: &Lab, file: &std::path::Path) -> Duration {
    let t = Instant::now();
    let (code, v) = lab.load(file);
    let took = t.elapsed();
    assert_eq!(code, 0, "{v}");
    assert!(lab.curl("web.bench", "/").0);
    took
}

fn main() {
    let (mut cold, mut cached, mut anchor) = (Vec::new(), Vec::new(), Vec::new());
    let mut layer_bytes = 0u64;
    for _ in 0..rounds() {
        let mut lab = Lab::new("");
        let (_, digest) = lab.image("web", &serve("bench"));
        lab.start();
        let file = lab.workload_file(
            "web",
            &lab.reference("web", &digest),
            "web.bench",
            "health = { http_path = \"/\" }\n",
        );
        cold.push(timed_load(&lab, &file));
        let progress = lab.cli(&["list"]).1;
        let _ = progress;
        for _ in 0..2 {
            let (code, v) = lab.cli(&["unload", "web"]);
            assert_eq!(code, 0, "{v}");
            cached.push(timed_load(&lab, &file));
        }
        // The anchor: skopeo pulling the same image from the same registry into a directory.
        let certs = lab.dir.path().join("anchor-certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::write(certs.join("ca.crt"), lab.registry.ca_pem()).unwrap();
        let out = lab.dir.path().join("anchor-oci");
        let _ = std::fs::remove_dir_all(&out);
        let t = Instant::now();
        let status = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-cert-dir"])
            .arg(&certs)
            .arg("--src-creds")
            .arg(format!(
                "{}:{}",
                lab.registry.username(),
                lab.registry.password()
            ))
            .arg(format!("docker://{}/web:v1", lab.registry.host()))
            .arg(format!("oci:{}:v1", out.display()))
            .status()
            .unwrap();
        anchor.push(t.elapsed());
        assert!(status.success());
        layer_bytes = std::fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .max()
            .unwrap_or(0);
        lab.server.take().unwrap().stop();
    }
    println!("image: busybox-static, one gzip layer of {layer_bytes} bytes");
    summary("cold: load until it serves", cold);
    summary("from cache: load until it serves", cached);
    summary("anchor: skopeo copy (pull only)", anchor);
}
