//! Encrypted workloads end to end, on the simulated TEE: images encrypted the ocicrypt way
//! (by skopeo to a vault key, and by `enclave-os image encrypt` for a KBS resource), and a
//! WebAssembly component encrypted as JWE, each served over RA-TLS with its key released by
//! the vault's policy, and certified by its plaintext identity and key reference.
//!
//! What is attacked: a key the policy does not release (the load stops, naming the rule), a
//! tampered layer (refused before anything of it is unpacked), an image encrypted to another
//! key, and plaintext leaking to the registry or the state directory (grepped for a marker
//! that the plaintext image visibly holds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use common::instance::{Instance, cli, token, token_with};
use common::lab::*;
use enclave_testkit::registry::image;
use serde_json::Value;

/// What the encrypted layer holds, and what must never be found outside memory.
const MARKER: &str = "enclave-os-plaintext-marker-c0ffee-5f2c";

fn vault_admin() -> String {
    token_with(&["vault:read vault:write"], &[])
}

/// Generate vault key `name` (EC P-256) inside the TEE; its public half's PEM, in `dir`.
fn vault_key(i: &Instance, name: &str) -> PathBuf {
    let admin = vault_admin();
    let (code, v) = cli(
        i,
        "vault",
        &admin,
        &["key", "generate", name, "--kind", "ec-p256"],
    );
    assert_eq!(code, 0, "{v}");
    let pem = v["public_pem"].as_str().expect("a public PEM").to_string();
    assert!(v["public_jwk"].get("d").is_none(), "{v}");
    let path = i.dir.join(format!("{name}.pub.pem"));
    std::fs::write(&path, pem).unwrap();
    path
}

/// Put vault policy `name` from TOML `text`.
fn policy(i: &Instance, name: &str, text: &str) {
    let path = i.dir.join(format!("{name}.policy.toml"));
    std::fs::write(&path, text).unwrap();
    let (code, v) = cli(
        i,
        "vault",
        &vault_admin(),
        &["policy", "put", name, path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{v}");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(p);
            }
        }
    }
    found
}

/// A busybox image serving `/www` whose page is [`MARKER`], in an uncompressed layer (so that
/// its plaintext is plainly visible wherever that layer's bytes are).
fn marker_image(lab: &Lab, name: &str) -> enclave_testkit::registry::OciLayout {
    let layout = image::busybox(
        &lab.dir.path().join("images"),
        name,
        &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
    );
    let layout = image::add_plain_layer(
        &layout,
        &[("www/index.html", format!("{MARKER}\n").as_bytes())],
    );
    // The control: the plaintext image shows the marker, so its absence elsewhere means
    // something.
    assert!(
        !files_containing(&layout.path, MARKER.as_bytes()).is_empty(),
        "the plaintext layout holds the marker"
    );
    layout
}

/// Load workload file `file` and check that `host` then serves [`MARKER`].
fn loads_and_serves_the_marker(lab: &Lab, file: &Path, host: &str) {
    let (code, v) = lab.load(file);
    assert_eq!(code, 0, "{v}\n{}", lab.instance.log());
    let (ok, body) = lab.curl(host, "/");
    assert!(ok, "{body}");
    assert_eq!(body.trim(), MARKER);
}

/// The manifest of the image `layout` holds under its tag, as JSON.
fn manifest_of(layout: &enclave_testkit::registry::OciLayout) -> Value {
    let blob = layout
        .path
        .join("blobs/sha256")
        .join(layout.manifest_digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap()
}

fn workload_file(lab: &Lab, name: &str, image: &str, key: Option<&str>) -> PathBuf {
    let p = lab.instance.dir.join(format!("{name}.toml"));
    let key = key
        .map(|k| format!("decryption_key = \"{k}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &p,
        format!(
            "[workload]\nname = \"{name}\"\nkind = \"container\"\nimage = \"{image}\"\nhostnames = [\"{name}.test\"]\n{key}\
             [workload.container]\nport = 8080\nhealth = {{ http_path = \"/\" }}\n"
        ),
    )
    .unwrap();
    p
}

/// An image skopeo encrypted to a vault key's public half (`--encryption-key jwe:`) runs once
/// the vault's policy releases that key to the workload; before, the load stops with the
/// policy's reason. The registry only ever holds ciphertext, the state directory no
/// plaintext, and the certificate names the plaintext configuration and the key.
#[test]
fn an_image_skopeo_encrypted_to_a_vault_key_runs_and_its_plaintext_stays_in_memory() {
    let mut lab = Lab::on_tmpfs("[vault]\n");
    let layout = marker_image(&lab, "sealed-web");
    lab.start();
    let public = vault_key(&lab.instance, "images");
    let digest = lab.registry.push_with(
        &layout,
        "sealed-web:v1",
        &["--encryption-key", &format!("jwe:{}", public.display())],
    );
    let leaked = files_containing(&lab.registry.storage_dir(), MARKER.as_bytes());
    assert!(leaked.is_empty(), "plaintext in the registry: {leaked:?}");
    let reference = lab.reference("sealed-web", &digest);

    // No policy releases the key yet: the load stops, and says which rules refused.
    let file = workload_file(&lab, "web", &reference, Some("images"));
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    let error = v.to_string();
    assert!(
        error.contains("the vault will not release key 'images'"),
        "{error}"
    );

    // The policy names the workload and the encrypted image it runs.
    policy(
        &lab.instance,
        "images",
        &format!(
            "keys = [\"images\"]\n[[allow]]\nworkloads = [\"web\"]\ncode_sha256 = [\"{}\"]\n",
            digest.trim_start_matches("sha256:")
        ),
    );
    loads_and_serves_the_marker(&lab, &file, "web.test");

    // The certificate: the encrypted manifest (3.2), the plaintext configuration (3.7, the
    // same as the plaintext image's: ocicrypt leaves the configuration as it was), the key's
    // reference (3.9) with the key's thumbprint, and never the key.
    let report = common::instance::verify(&lab.instance, Some("web.test"));
    let w = &report["workload"];
    assert_eq!(
        w["code_digest"].as_str(),
        Some(digest.trim_start_matches("sha256:")),
        "{report}"
    );
    let plain_manifest = manifest_of(&layout);
    assert_eq!(
        w["image_config"].as_str(),
        plain_manifest["config"]["digest"]
            .as_str()
            .map(|d| d.trim_start_matches("sha256:")),
        "{report}"
    );
    let reference = w["key_reference"].as_str().expect("a key reference");
    assert!(reference.starts_with("vault-key:images#"), "{report}");

    // A plaintext image with the same configuration (its diff_ids are public) but without the
    // secret layer's content cannot start on the decrypted snapshots: it must bring layers
    // that hash to those diff_ids, and its stand-in does not.
    let thief = repin_last_layer(&layout.path, &layout.tag, "thief", |b| {
        let at = b
            .windows(MARKER.len())
            .position(|w| w == MARKER.as_bytes())
            .unwrap();
        b[at..at + MARKER.len()].copy_from_slice(&vec![b'x'; MARKER.len()]);
    });
    let t_digest = lab.registry.push(&thief, "sealed-web:thief");
    let file = workload_file(&lab, "thief", &lab.reference("sealed-web", &t_digest), None);
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    assert!(v.to_string().contains("diff_id"), "{v}");
    let (_, body) = lab.curl("thief.test", "/");
    assert!(!body.contains(MARKER), "{body}");

    // A decryption key named for an image that is not encrypted: refused, or the tree (and the
    // certificate's key reference) would claim a decryption that never happened.
    let file = workload_file(
        &lab,
        "plain",
        &lab.reference("sealed-web", &t_digest),
        Some("images"),
    );
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    assert!(
        v.to_string().contains(
            "decryption_key names vault key 'images', and no layer of its image is encrypted"
        ),
        "{v}"
    );

    // Nothing of the plaintext in the state directory (the store, logs, CNI state).
    let leaked = files_containing(&lab.instance.dir.join("state"), MARKER.as_bytes());
    assert!(
        leaked.is_empty(),
        "plaintext in the state directory: {leaked:?}"
    );
    let log = lab.instance.log();
    assert!(
        log.lines()
            .any(|l| l.contains("vault.release") && l.contains("code") && l.contains("images")),
        "{log}"
    );
}

/// `enclave-os image encrypt` wraps the layer keys for a KBS resource (Confidential
/// Containers' annotation), which the vault keeps and releases to the workload; the image
/// runs. A layer modified in the registry (the manifest re-pinned to it) is refused by its
/// HMAC before anything of it is unpacked, and an image encrypted to a key the vault does not
/// hold is refused saying so.
#[test]
fn an_image_encrypted_for_a_kbs_resource_runs_and_a_tampered_layer_is_refused_before_unpacking() {
    let mut lab = Lab::on_tmpfs("[vault]\n");
    let layout = marker_image(&lab, "kbs-web");
    lab.start();
    let kek = lab.instance.dir.join("kek.bin");
    std::fs::write(&kek, [0x42u8; 32]).unwrap();
    let encrypted = lab.dir.path().join("images/kbs-web-enc");
    let out = common::run(&[
        "image",
        "encrypt",
        "--from",
        &format!("{}:{}", layout.path.display(), layout.tag),
        "--to",
        &format!("{}:{}", encrypted.display(), layout.tag),
        "--recipient",
        &format!(
            "provider:attestation-agent:keyid=kbs:///default/image-kek/web::keypath={}",
            kek.display()
        ),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(files_containing(&encrypted, MARKER.as_bytes()).is_empty());
    let enc_layout = enclave_testkit::registry::OciLayout {
        path: encrypted.clone(),
        tag: layout.tag.clone(),
        manifest_digest: String::new(),
    };
    let digest = lab.registry.push(&enc_layout, "kbs-web:v1");

    // One byte of the encrypted marker layer changed, the blob and the manifest re-pinned
    // (an attacker who can write the registry and have the operator load that digest).
    let tampered = repin_last_layer(&encrypted, &layout.tag, "tampered", |b| {
        let middle = b.len() / 2;
        b[middle] ^= 0x01;
    });
    let t_digest = lab.registry.push(&tampered, "kbs-web:tampered");

    // The KEK is a vault secret at the resource's path, released to these workloads only.
    let (code, v) = cli(
        &lab.instance,
        "vault",
        &vault_admin(),
        &[
            "secret",
            "put",
            "default/image-kek/web",
            "--file",
            kek.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v}");
    policy(
        &lab.instance,
        "kek",
        &format!(
            "resources = [\"default/image-kek/*\"]\n[[allow]]\nworkloads = [\"web\", \"tampered\"]\ncode_sha256 = [\"{}\", \"{}\"]\n",
            digest.trim_start_matches("sha256:"),
            t_digest.trim_start_matches("sha256:")
        ),
    );

    // The tampered image first (nothing of this image is unpacked yet): the HMAC refuses the
    // layer once it has streamed in, before anything of it is committed or unpacked.
    let snapshots_before = snapshots(&lab);
    let file = workload_file(&lab, "tampered", &lab.reference("kbs-web", &t_digest), None);
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    let error = v.to_string();
    assert!(error.contains("HMAC"), "{error}");
    assert!(error.contains("modified"), "{error}");
    assert_eq!(
        snapshots(&lab),
        snapshots_before,
        "nothing of the tampered image was unpacked"
    );

    // The untampered image runs.
    let file = workload_file(&lab, "web", &lab.reference("kbs-web", &digest), None);
    loads_and_serves_the_marker(&lab, &file, "web.test");
    let report = common::instance::verify(&lab.instance, Some("web.test"));
    assert_eq!(
        report["workload"]["key_reference"].as_str(),
        Some("kbs:///default/image-kek/web"),
        "{report}"
    );

    // The decrypted layer is in containerd's content store under its plaintext digest, which
    // for a layer encrypted uncompressed is its diff_id: public. A plaintext image naming it,
    // whose registry does not have that blob (a hostile registry only knows the digest), must
    // fetch it all the same, and cannot.
    let plain_manifest = manifest_of(&layout);
    let secret_layer = plain_manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // skopeo compresses layers on the way to a registry; the hostile registry serves the
    // layout's own manifest, which names the uncompressed layer (its diff_id). Its other
    // blobs come with a push; the secret layer is uploaded only so that the registry takes the
    // manifest, and then removed.
    lab.registry.push(&layout, "kbs-web:plain");
    let blobs = layout.path.join("blobs/sha256");
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    upload_blob(
        &lab,
        "kbs-web",
        &blobs.join(hex(&secret_layer)),
        &secret_layer,
    );
    put_manifest(
        &lab,
        "kbs-web",
        "plain-raw",
        &blobs.join(hex(&layout.manifest_digest)),
    );
    std::fs::remove_file(lab.registry.blob_path(&secret_layer)).unwrap();
    let p_digest = layout.manifest_digest.clone();
    let file = workload_file(&lab, "plain", &lab.reference("kbs-web", &p_digest), None);
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    let (_, body) = lab.curl("plain.test", "/");
    assert!(!body.contains(MARKER), "{body}");
    assert!(
        !lab.instance
            .log()
            .lines()
            .any(|l| l.contains("workload=plain")
                && l.contains("already in the content store")
                && l.contains(&secret_layer)),
        "the decrypted blob was offered to a plaintext image"
    );

    // An image encrypted to a key the vault does not hold: the JWE does not decrypt.
    let stranger = lab.dir.path().join("stranger");
    let (_, public) = common::openssl_ec_keys(&stranger);
    let s_digest = lab.registry.push_with(
        &layout,
        "kbs-web:stranger",
        &["--encryption-key", &format!("jwe:{public}")],
    );
    let _ = vault_key(&lab.instance, "other");
    policy(
        &lab.instance,
        "other",
        &format!(
            "keys = [\"other\"]\n[[allow]]\nworkloads = [\"stranger\"]\ncode_sha256 = [\"{}\"]\n",
            s_digest.trim_start_matches("sha256:")
        ),
    );
    let file = workload_file(
        &lab,
        "stranger",
        &lab.reference("kbs-web", &s_digest),
        Some("other"),
    );
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    assert!(v.to_string().contains("no key could be unwrapped"), "{v}");

    // Keys wrapped with PKCS#7 (skopeo's `pkcs7:` to an X.509 certificate): said by name,
    // before anything is fetched.
    let cert = stranger.join("cert.pem");
    let key = stranger.join("cert.key");
    common::openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=stranger",
        "-days",
        "1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let p_digest = lab.registry.push_with(
        &layout,
        "kbs-web:pkcs7",
        &["--encryption-key", &format!("pkcs7:{}", cert.display())],
    );
    let file = workload_file(
        &lab,
        "pkcs7",
        &lab.reference("kbs-web", &p_digest),
        Some("other"),
    );
    let (code, v) = lab.load(&file);
    assert_ne!(code, 0, "{v}");
    assert!(v.to_string().contains("PKCS#7"), "{v}");
}

/// `curl` against the lab's registry with its CA and credentials: the output (headers and
/// body), the call having succeeded.
fn registry_call(lab: &Lab, args: &[&str]) -> String {
    let ca = lab.dir.path().join("registry-ca.pem");
    std::fs::write(&ca, lab.registry.ca_pem()).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--fail-with-body",
            "-D",
            "-",
            "--cacert",
        ])
        .arg(&ca)
        .arg("-u")
        .arg(format!(
            "{}:{}",
            lab.registry.username(),
            lab.registry.password()
        ))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Upload `file` as blob `digest` of `repo` (monolithic upload, OCI distribution).
fn upload_blob(lab: &Lab, repo: &str, file: &Path, digest: &str) {
    let base = format!("https://{}", lab.registry.host());
    let answer = registry_call(
        lab,
        &["-X", "POST", &format!("{base}/v2/{repo}/blobs/uploads/")],
    );
    let location = answer
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("an upload location");
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    registry_call(
        lab,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{location}{sep}digest={digest}"),
        ],
    );
}

/// Put the OCI manifest in `file` as `repo:tag`.
fn put_manifest(lab: &Lab, repo: &str, tag: &str, file: &Path) {
    registry_call(
        lab,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("https://{}/v2/{repo}/manifests/{tag}", lab.registry.host()),
        ],
    );
}

/// The overlayfs snapshots in containerd (all namespaces), as `ctr` lists them.
fn snapshots(lab: &Lab) -> Vec<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(lab.containerd.socket())
        .args(["-n", &lab.namespace, "snapshots", "ls"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// A copy of the layout at `path` (as `path.<copy>`) whose last layer `change` rewrote,
/// re-pinned: the blob under its new digest, the manifest naming it, the tag naming that
/// manifest. The configuration is left as it was.
fn repin_last_layer(
    path: &Path,
    tag: &str,
    copy: &str,
    change: impl Fn(&mut Vec<u8>),
) -> enclave_testkit::registry::OciLayout {
    let copy = path.with_extension(copy);
    let _ = std::fs::remove_dir_all(&copy);
    common::copy_dir(path, &copy);
    let blobs = copy.join("blobs/sha256");
    let index_path = copy.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let m_hex = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&m_hex)).unwrap()).unwrap();
    let layer = manifest["layers"]
        .as_array_mut()
        .unwrap()
        .last_mut()
        .unwrap();
    let l_hex = layer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut bytes = std::fs::read(blobs.join(&l_hex)).unwrap();
    change(&mut bytes);
    let new_l = sha256_hex(&bytes);
    std::fs::write(blobs.join(&new_l), &bytes).unwrap();
    layer["digest"] = Value::String(format!("sha256:{new_l}"));
    layer["size"] = Value::from(bytes.len());
    let m_bytes = serde_json::to_vec(&manifest).unwrap();
    let new_m = sha256_hex(&m_bytes);
    std::fs::write(blobs.join(&new_m), &m_bytes).unwrap();
    entry["digest"] = Value::String(format!("sha256:{new_m}"));
    entry["size"] = Value::from(m_bytes.len());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    enclave_testkit::registry::OciLayout {
        path: copy,
        tag: tag.to_string(),
        manifest_digest: format!("sha256:{new_m}"),
    }
}

fn hello_wasm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/hello.wasm")
}

/// A component encrypted with `enclave-os wasm encrypt` to a vault key is loaded through the
/// API, decrypted in memory with the key the policy releases to it, served, and certified by
/// the ciphertext (3.2, what the tree commits), the plaintext's hash (3.7) and the key (3.9).
/// Neither the kept record nor the code cache holds the plaintext; after a restart it is
/// decrypted again and served. Code the policy does not name is refused with the reason.
#[test]
fn an_encrypted_component_is_decrypted_in_memory_served_and_certified_by_its_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let i = Instance::new(dir.path(), "[vault]\n");
    let mut server: Option<Server> = Some(i.start());
    let public = vault_key(&i, "apps");
    let plain = std::fs::read(hello_wasm()).unwrap();
    let jwe = i.dir.join("hello.jwe");
    let out = common::run(&[
        "wasm",
        "encrypt",
        hello_wasm().to_str().unwrap(),
        "--recipient",
        &format!("jwe:{}", public.display()),
        "--kid",
        "apps",
        "--out",
        jwe.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cipher = std::fs::read(&jwe).unwrap();
    // A window of the component's own bytes (its data section), to look for later.
    let window = &plain[plain.len() / 2..plain.len() / 2 + 48];
    assert!(!cipher.windows(48).any(|w| w == window));
    let file = i.dir.join("hello.toml");
    std::fs::write(
        &file,
        "[workload]\nname = \"hello\"\nkind = \"wasm\"\nsource = \"hello.jwe\"\nhostnames = [\"hello.localhost\"]\ndecryption_key = \"apps\"\n",
    )
    .unwrap();

    // A plaintext component that says it is decrypted with a key: refused, or the tree would
    // claim a decryption that never happened.
    std::fs::copy(hello_wasm(), i.dir.join("plain.wasm")).unwrap();
    let plain_file = i.dir.join("plain.toml");
    std::fs::write(
        &plain_file,
        "[workload]\nname = \"plain\"\nkind = \"wasm\"\nsource = \"plain.wasm\"\ndecryption_key = \"apps\"\n",
    )
    .unwrap();
    let (code, v) = cli(
        &i,
        "workload",
        &token(),
        &["load", plain_file.to_str().unwrap()],
    );
    assert_ne!(code, 0, "{v}");
    assert!(v.to_string().contains("is not encrypted"), "{v}");

    // Without a policy: refused, naming the key.
    let (code, v) = cli(&i, "workload", &token(), &["load", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{v}");
    assert!(v.to_string().contains("will not release key 'apps'"), "{v}");

    policy(
        &i,
        "apps",
        &format!(
            "keys = [\"apps\"]\n[[allow]]\nworkloads = [\"hello\"]\ncode_sha256 = [\"{}\"]\n",
            sha256_hex(&cipher)
        ),
    );
    let (code, v) = cli(&i, "workload", &token(), &["load", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}\n{}", i.log());
    let served = |i: &Instance| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--fail-with-body", "--cacert"])
            .arg(i.dir.join("state/ca/root.crt.pem"))
            .arg("--resolve")
            .arg(format!("hello.localhost:{}:127.0.0.1", i.port))
            .arg(format!("https://hello.localhost:{}/", i.port))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            i.log()
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(served(&i).to_lowercase().contains("hello"));

    let report = common::instance::verify(&i, Some("hello.localhost"));
    let w = &report["workload"];
    assert_eq!(
        w["code_digest"].as_str(),
        Some(sha256_hex(&cipher).as_str()),
        "{report}"
    );
    assert_eq!(
        w["decrypted_code"].as_str(),
        Some(sha256_hex(&plain).as_str()),
        "{report}"
    );
    assert!(
        w["key_reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("vault-key:apps#")),
        "{report}"
    );

    // No plaintext in the state directory: the kept record is the JWE, the cache encrypted.
    let state = i.dir.join("state");
    assert!(
        std::fs::read_dir(state.join("wasm-cache")).unwrap().count() > 0,
        "the code cache has an entry"
    );
    let leaked = files_containing(&state, window);
    assert!(
        leaked.is_empty(),
        "plaintext in the state directory: {leaked:?}"
    );

    // After a restart, decrypted again (the vault releases the key again) and served.
    server.take().unwrap().stop();
    server = Some(i.start());
    assert!(served(&i).to_lowercase().contains("hello"));
    drop(server);
}
