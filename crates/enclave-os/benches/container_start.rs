//! Time to pull and start a small container image through `enclave-os run` on the simulated
//! TDX TEE, cold and from cache, beside the anchor of pulling the same image with skopeo:
//!
//! 1. **cold**: a fresh containerd (empty content store): `PUT /api/v1/workloads/web` until its
//!    progress says `ready`, polled every 10 ms (then it serves: checked with curl) (resolve, pull every layer with its digest and diff_id checked, unpack,
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

/// Load `image` as workload `web` through the management API and poll its progress every
/// 10 ms until it is ready (the CLI polls every 300 ms: too coarse to time with); the time it
/// took, and when each stage was first seen.
fn timed_load(lab: &Lab, image: &str) -> (Duration, Vec<(String, Duration)>) {
    let tls = lab.instance.client();
    let token = common::instance::token();
    let body = serde_json::json!({
        "kind": "container",
        "image": image,
        "hostnames": ["web.bench"],
        "container": { "port": 8080, "health": { "http_path": "/" } },
    });
    let t = Instant::now();
    let (status, answer) = lab
        .instance
        .call(
            &tls,
            "PUT",
            "/api/v1/workloads/web",
            Some(&token),
            &serde_json::to_vec(&body).unwrap(),
        )
        .unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    let mut stages: Vec<(String, Duration)> = Vec::new();
    loop {
        let (_, p) = lab
            .instance
            .call(
                &tls,
                "GET",
                "/api/v1/workloads/web/progress",
                Some(&token),
                b"",
            )
            .unwrap();
        let p: serde_json::Value = serde_json::from_slice(&p).unwrap();
        let stage = p["stage"].as_str().unwrap_or("?").to_string();
        if stages.last().is_none_or(|(s, _)| *s != stage) {
            stages.push((stage.clone(), t.elapsed()));
        }
        match stage.as_str() {
            "ready" => break,
            "failed" => {
                let log = lab.containerd.log();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("{p}\ncontainerd's log:\n{tail}")
            }
            _ => {}
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{p}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t.elapsed();
    assert!(lab.curl("web.bench", "/").0);
    (took, stages)
}

fn main() {
    let (mut cold, mut cached, mut anchor) = (Vec::new(), Vec::new(), Vec::new());
    let mut layer_bytes = 0u64;
    for _ in 0..rounds() {
        let mut lab = Lab::new("");
        let (_, digest) = lab.image("web", &serve("bench"));
        lab.start();
        let image = lab.reference("web", &digest);
        let (took, stages) = timed_load(&lab, &image);
        cold.push(took);
        println!("cold stages (first seen at): {stages:?}");
        for _ in 0..2 {
            let (code, v) = lab.cli(&["unload", "web"]);
            assert_eq!(code, 0, "{v}");
            let (took, stages) = timed_load(&lab, &image);
            cached.push(took);
            println!("cached stages (first seen at): {stages:?}");
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
