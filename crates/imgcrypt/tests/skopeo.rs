//! Round trips with the real skopeo (Debian's 1.9.3, ocicrypt inside) through OCI layouts on
//! disk: images we encrypt open with `skopeo copy --decryption-key`, and images skopeo
//! encrypts with `--encryption-key jwe:` open with our `decrypt_image`. Keys are made with
//! openssl, as an operator would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use enclave_imgcrypt::layout::{decrypt_image, encrypt_image};
use enclave_imgcrypt::{
    ImgcryptError, LayerAuthenticator, Recipient, WrappedKey, public_options, unwrap_jwe,
    wrapped_keys,
};
use enclave_oci::{Descriptor, Digest};
use enclave_vault::RecipientKey;
use serde_json::Value;

const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a9c";
const SKOPEO: &str = "/usr/bin/skopeo";

fn skopeo_present() -> bool {
    if Path::new(SKOPEO).exists() {
        return true;
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: {SKOPEO} is absent (apt-get install skopeo); the skopeo round trips\n\
         !!! were NOT run. CI installs it (.ci/run).\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    false
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo(args: &[&str]) -> String {
    run(Command::new("timeout")
        .arg("120")
        .arg(SKOPEO)
        .arg("--insecure-policy")
        .args(args))
}

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(dir: &Path) -> Self {
        for (name, args) in [
            (
                "ec",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            (
                "rsa",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"][..],
            ),
        ] {
            let private = dir.join(format!("{name}.pem"));
            run(Command::new("openssl")
                .arg("genpkey")
                .args(args)
                .arg("-out")
                .arg(&private));
            run(Command::new("openssl")
                .arg("pkey")
                .arg("-in")
                .arg(&private)
                .arg("-pubout")
                .arg("-out")
                .arg(dir.join(format!("{name}.pub"))));
        }
        Self {
            dir: dir.to_owned(),
        }
    }
    fn private(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    fn public(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pub"))
    }
    fn recipient(&self, name: &str) -> Recipient {
        let pem = std::fs::read_to_string(self.public(name)).unwrap();
        Recipient::Jwe(enclave_vault::jose::public_key_from_pem(&pem).unwrap())
    }
    fn ec(&self) -> p256::SecretKey {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(self.private("ec")).unwrap())
            .unwrap()
    }
    fn rsa(&self) -> rsa::RsaPrivateKey {
        use rsa::pkcs8::DecodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(self.private("rsa")).unwrap())
            .unwrap()
    }
}

/// One regular file in a ustar archive.
fn tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0);
    out
}

fn put(root: &Path, bytes: &[u8]) -> (Digest, u64) {
    let d = Digest::of(bytes);
    let dir = root.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(d.hex()), bytes).unwrap();
    (d, bytes.len() as u64)
}

struct Plain {
    gzip_layer: Vec<u8>,
    tar_layer: Vec<u8>,
    config: Vec<u8>,
}

/// A two-layer image tagged `v1`: a gzip layer (stored, level 0, so the marker is visible in
/// the blob) and an uncompressed tar layer, both holding the marker.
fn plain_layout(root: &Path) -> Plain {
    let tar1 = tar(
        "app/secret.txt",
        &[MARKER, b" in the gzip layer\n"].concat(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(&tar1).unwrap();
    let gzip_layer = gz.finish().unwrap();
    let tar_layer = tar("app/model.bin", &[MARKER, b" in the tar layer\n"].concat());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&tar1).to_string(), Digest::of(&tar_layer).to_string()]},
    }))
    .unwrap();
    let (cd, cs) = put(root, &config);
    let (d1, s1) = put(root, &gzip_layer);
    let (d2, s2) = put(root, &tar_layer);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d1, "size": s1},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d2, "size": s2},
        ],
    }))
    .unwrap();
    let (md, ms) = put(root, &manifest);
    std::fs::write(
        root.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                           "annotations": {"org.opencontainers.image.ref.name": "v1"}}],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    Plain {
        gzip_layer,
        tar_layer,
        config,
    }
}

fn blob(root: &Path, d: &Digest) -> Vec<u8> {
    std::fs::read(root.join("blobs/sha256").join(d.hex())).unwrap()
}

/// (config bytes, [(media type, blob)]) of the image tagged `tag`.
fn image(root: &Path, tag: &str) -> (Vec<u8>, Vec<(Descriptor, Vec<u8>)>) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let digest: Digest = desc["digest"].as_str().unwrap().parse().unwrap();
    let manifest: Value = serde_json::from_slice(&blob(root, &digest)).unwrap();
    let config: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let layers: Vec<Descriptor> = serde_json::from_value(manifest["layers"].clone()).unwrap();
    let layers = layers
        .into_iter()
        .map(|d| {
            let b = blob(root, &d.digest);
            (d, b)
        })
        .collect();
    (blob(root, &config), layers)
}

fn contains_marker(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let path = e.unwrap().path();
        if path.is_dir() {
            contains_marker(&path)
        } else {
            std::fs::read(&path)
                .unwrap()
                .windows(MARKER.len())
                .any(|w| w == MARKER)
        }
    })
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

#[test]
fn ours_to_skopeo_byte_identical() {
    if !skopeo_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let plain_dir = tmp.path().join("plain");
    let plain = plain_layout(&plain_dir);
    assert!(
        contains_marker(&plain_dir),
        "the test image must hold the marker"
    );

    let enc_dir = tmp.path().join("enc");
    let mut seen = Vec::new();
    let report = encrypt_image(
        &plain_dir,
        Some("v1"),
        &enc_dir,
        Some("enc"),
        &[keys.recipient("ec"), keys.recipient("rsa")],
        &mut |done| seen.push(done),
    )
    .unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(report.layers, seen);
    assert_eq!(report.config, Digest::of(&plain.config));
    assert!(
        !contains_marker(&enc_dir),
        "plaintext leaked into the encrypted layout"
    );
    let (config, layers) = image(&enc_dir, "enc");
    assert_eq!(config, plain.config);
    assert_eq!(
        layers[0].0.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
    );
    assert_eq!(
        layers[1].0.media_type,
        "application/vnd.oci.image.layer.v1.tar+encrypted"
    );

    for key in ["ec", "rsa"] {
        let dec_dir = tmp.path().join(format!("dec-{key}"));
        skopeo(&[
            "copy",
            "--decryption-key",
            keys.private(key).to_str().unwrap(),
            &oci(&enc_dir, "enc"),
            &oci(&dec_dir, "v1"),
        ]);
        let (config, layers) = image(&dec_dir, "v1");
        assert_eq!(config, plain.config, "{key}: config changed");
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].1, plain.gzip_layer, "{key}: gzip layer differs");
        assert_eq!(layers[1].1, plain.tar_layer, "{key}: tar layer differs");
        assert_eq!(
            layers[0].0.media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            layers[1].0.media_type,
            "application/vnd.oci.image.layer.v1.tar"
        );
    }

    // and our own decryption agrees
    let ours = tmp.path().join("ours");
    decrypt_image(
        &enc_dir,
        Some("enc"),
        &ours,
        Some("v1"),
        &RecipientKey::EcP256(&keys.ec()),
    )
    .unwrap();
    let (_, layers) = image(&ours, "v1");
    assert_eq!(layers[0].1, plain.gzip_layer);
    assert_eq!(layers[1].1, plain.tar_layer);
}

#[test]
fn skopeo_to_ours_byte_identical() {
    if !skopeo_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let plain_dir = tmp.path().join("plain");
    let plain = plain_layout(&plain_dir);
    let ec = keys.ec();
    let rsa = keys.rsa();

    for recipients in [&["ec"][..], &["rsa"], &["ec", "rsa"]] {
        let name = recipients.join("+");
        let enc_dir = tmp.path().join(format!("enc-{name}"));
        let mut args = vec!["copy".to_owned()];
        for r in recipients {
            args.push("--encryption-key".into());
            args.push(format!("jwe:{}", keys.public(r).display()));
        }
        args.push(oci(&plain_dir, "v1"));
        args.push(oci(&enc_dir, "v1"));
        skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!contains_marker(&enc_dir), "{name}: skopeo left plaintext");

        for r in recipients {
            let key = match *r {
                "ec" => RecipientKey::EcP256(&ec),
                _ => RecipientKey::Rsa(&rsa),
            };
            let dec_dir = tmp.path().join(format!("dec-{name}-{r}"));
            let report = decrypt_image(&enc_dir, Some("v1"), &dec_dir, Some("v1"), &key)
                .unwrap_or_else(|e| panic!("{name} with {r}: {e}"));
            assert_eq!(report.layers.len(), 2);
            let (config, layers) = image(&dec_dir, "v1");
            assert_eq!(config, plain.config, "{name}/{r}: config changed");
            assert_eq!(
                layers[0].1, plain.gzip_layer,
                "{name}/{r}: gzip layer differs"
            );
            // skopeo compresses an uncompressed layer before encrypting it: what it encrypted
            // is a gzip of our tar, which must decompress to our tar byte for byte.
            let second = &layers[1];
            if second.0.media_type.ends_with("+gzip") {
                assert_eq!(
                    gunzip(&second.1),
                    plain.tar_layer,
                    "{name}/{r}: tar layer differs"
                );
            } else {
                assert_eq!(second.1, plain.tar_layer, "{name}/{r}: tar layer differs");
            }
        }
        // a key that is not a recipient is refused with the reason
        if recipients == ["ec"] {
            let err = decrypt_image(
                &enc_dir,
                Some("v1"),
                &tmp.path().join("nope"),
                None,
                &RecipientKey::Rsa(&rsa),
            )
            .unwrap_err();
            assert!(matches!(err, ImgcryptError::WrongKey { .. }), "{err}");
        }
    }
}

/// A flipped ciphertext byte (with the descriptor's digest updated, as a hostile registry
/// would serve it) is refused by the HMAC at `finish`, for our layers and for skopeo's.
#[test]
fn tampered_layer_refused() {
    if !skopeo_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let plain_dir = tmp.path().join("plain");
    plain_layout(&plain_dir);
    let ours = tmp.path().join("ours");
    encrypt_image(
        &plain_dir,
        Some("v1"),
        &ours,
        Some("v1"),
        &[keys.recipient("ec")],
        &mut |_| {},
    )
    .unwrap();
    let theirs = tmp.path().join("theirs");
    skopeo(&[
        "copy",
        "--encryption-key",
        &format!("jwe:{}", keys.public("ec").display()),
        &oci(&plain_dir, "v1"),
        &oci(&theirs, "v1"),
    ]);
    let ec = keys.ec();
    for dir in [&ours, &theirs] {
        let (_, layers) = image(dir, "v1");
        for (i, (desc, bytes)) in layers.iter().enumerate() {
            let what = format!("layer {i}");
            let public = public_options(desc, &what).unwrap();
            let keys = wrapped_keys(desc, &what).unwrap();
            let WrappedKey::Jwe(jwe) = &keys[0] else {
                panic!("JWE")
            };
            let key = unwrap_jwe(jwe, &RecipientKey::EcP256(&ec), &what).unwrap();

            // untouched: opens
            let mut good = bytes.clone();
            let mut a = LayerAuthenticator::new(&key, &public, &what).unwrap();
            a.update(&good);
            let mut d = a.verify().unwrap();
            d.decrypt(&mut good);
            let mut plain_desc = desc.clone();
            plain_desc.media_type = desc.media_type.trim_end_matches("+encrypted").to_owned();
            let mut diff_id = enclave_oci::DiffIdVerifier::for_layer(&plain_desc, &what).unwrap();
            diff_id.update(&good).unwrap();
            let diff_id = diff_id.finish().unwrap();
            let plain = d.finish_with_diff_id(&diff_id).unwrap();
            assert_eq!(plain, Digest::of(&good));
            // ours record the blob's own digest; skopeo's, for the layer it compressed while
            // encrypting, the tar's
            assert!(
                plain == *key.digest() || (dir == &theirs && i == 1 && diff_id == *key.digest())
            );

            let mut bad = bytes.clone();
            let at = bad.len() / 2;
            bad[at] ^= 0x40;
            let mut a = LayerAuthenticator::new(&key, &public, &what).unwrap();
            for chunk in bad.chunks(7) {
                a.update(chunk);
            }
            let Err(err) = a.verify() else {
                panic!("{}: a modified layer authenticated", dir.display())
            };
            assert!(
                matches!(err, ImgcryptError::Tampered { .. }),
                "{}: {err}",
                dir.display()
            );
            assert!(err.to_string().contains(&what), "{err}");
        }
    }
}
