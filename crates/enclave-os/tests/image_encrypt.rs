//! `enclave-os image encrypt` and `enclave-os wasm encrypt` through the real binary: results
//! open with the private key (through the library), and bad recipients are refused naming the
//! input and the reason. The skopeo round trips are in crates/imgcrypt/tests/skopeo.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use enclave_imgcrypt::layout::decrypt_image;
use enclave_oci::Digest;
use enclave_vault::RecipientKey;
use serde_json::Value;

const MARKER: &[u8] = b"CLI-PLAINTEXT-MARKER-51c2";

fn load_ec(private: &str) -> p256::SecretKey {
    use p256::pkcs8::DecodePrivateKey;
    p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(private).unwrap()).unwrap()
}

fn put(root: &Path, bytes: &[u8]) -> Value {
    let d = Digest::of(bytes);
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    std::fs::write(root.join("blobs/sha256").join(d.hex()), bytes).unwrap();
    serde_json::json!({"digest": d.to_string(), "size": bytes.len()})
}

/// A one-layer image tagged `app` whose (uncompressed tar) layer holds the marker.
fn layout(root: &Path) -> Vec<u8> {
    let mut layer = vec![0u8; 2048];
    layer[..11].copy_from_slice(b"secret.bin\0");
    layer[512..512 + MARKER.len()].copy_from_slice(MARKER);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let mut c = put(root, config);
    c["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let mut l = put(root, &layer);
    l["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": c, "layers": [l],
    }))
    .unwrap();
    let mut m = put(root, &manifest);
    m["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "app"});
    std::fs::write(
        root.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [m]})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    layer
}

#[test]
fn image_encrypt_json_and_decrypt_with_the_private_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, public) = openssl_ec_keys(tmp.path());
    let plain = tmp.path().join("plain");
    let layer = layout(&plain);
    let kek = tmp.path().join("kek.bin");
    std::fs::write(&kek, [7u8; 32]).unwrap();
    let enc = tmp.path().join("enc");
    let from = format!("{}:app", plain.display());
    let to = format!("{}:app-enc", enc.display());
    let jwe = format!("jwe:{public}");
    let aa = format!(
        "provider:attestation-agent:keyid=kbs:///default/image-kek/app::keypath={}",
        kek.display()
    );
    let args = [
        "image",
        "encrypt",
        "--from",
        &from,
        "--to",
        &to,
        "--recipient",
        &jwe,
        "--recipient",
        &aa,
        "--json",
    ];
    let out = run(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tag"], "app-enc", "{v}");
    assert_eq!(
        v["layers"][0]["plain"],
        Digest::of(&layer).to_string(),
        "{v}"
    );
    let encrypted = v["layers"][0]["encrypted"].as_str().unwrap();
    assert!(
        stderr.contains(&format!("layer 0: {} -> {encrypted}", Digest::of(&layer))),
        "{stderr}"
    );
    assert!(v["manifest"].as_str().unwrap().starts_with("sha256:"));

    // nothing of the plaintext in the encrypted layout
    for entry in std::fs::read_dir(enc.join("blobs/sha256")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER));
    }
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            enc.join("blobs/sha256")
                .join(&v["manifest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    )
    .unwrap();
    let annotations = &manifest["layers"][0]["annotations"];
    assert!(
        annotations[enclave_imgcrypt::annotations::JWE].is_string(),
        "{manifest}"
    );
    assert!(
        annotations[enclave_imgcrypt::annotations::ATTESTATION_AGENT].is_string(),
        "{manifest}"
    );

    let ec = load_ec(&private);
    let dec = tmp.path().join("dec");
    let report = decrypt_image(
        &enc,
        Some("app-enc"),
        &dec,
        Some("app"),
        &RecipientKey::EcP256(&ec),
    )
    .unwrap();
    assert_eq!(report.layers[0].plain, Digest::of(&layer));
    let back = std::fs::read(dec.join("blobs/sha256").join(Digest::of(&layer).hex())).unwrap();
    assert_eq!(back, layer);
}

#[test]
fn bad_recipients_and_inputs_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, public) = openssl_ec_keys(tmp.path());
    let plain = tmp.path().join("plain");
    layout(&plain);
    let from = plain.to_str().unwrap().to_owned();
    let to = tmp.path().join("enc").to_str().unwrap().to_owned();
    let short = tmp.path().join("short.key");
    std::fs::write(&short, [1u8; 31]).unwrap();
    let cases = [
        ("pgp:alice@example.com".to_owned(), "PGP is not supported"),
        ("pkcs7:cert.pem".to_owned(), "PKCS#7 is not supported"),
        (
            "jwe:/nonexistent/key.pem".to_owned(),
            "/nonexistent/key.pem",
        ),
        (format!("jwe:{private}"), "-pubout"),
        (
            format!(
                "provider:attestation-agent:keyid=kbs:///a/b/c::keypath={}",
                short.display()
            ),
            "31 bytes",
        ),
        (
            format!(
                "provider:attestation-agent:keyid=kbs:///only-two/parts::keypath={}",
                short.display()
            ),
            "is not kbs:///<repository>/<type>/<tag>",
        ),
        (
            // A line break and another reference in the host: never written into an image.
            format!(
                "provider:attestation-agent:keyid=kbs://evil\nvault-key:prod#x/a/b/c::keypath={}",
                short.display()
            ),
            "is not kbs:///<repository>/<type>/<tag>",
        ),
        ("provider:other:x".to_owned(), "only attestation-agent"),
        ("nonsense".to_owned(), "expected jwe:"),
    ];
    for (recipient, expect) in cases {
        let (code, v) = json(&[
            "image",
            "encrypt",
            "--from",
            &from,
            "--to",
            &to,
            "--recipient",
            &recipient,
        ]);
        assert_eq!(code, 2, "{recipient}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains(expect) && e.contains(&recipient),
            "{recipient}: {e}"
        );
    }
    assert!(
        !Path::new(&to).exists(),
        "nothing written on a refused recipient"
    );

    // a tag that is not in the layout
    let (code, v) = json(&[
        "image",
        "encrypt",
        "--from",
        &format!("{from}:nope"),
        "--to",
        &to,
        "--recipient",
        &format!("jwe:{public}"),
    ]);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no image tagged 'nope' (tags: app)"),
        "{v}"
    );
}

#[test]
fn wasm_encrypt_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, public) = openssl_ec_keys(tmp.path());
    let wasm = [b"\0asm\x0d\x00\x01\x00".as_slice(), MARKER, &[0u8; 100]].concat();
    let input = tmp.path().join("app.wasm");
    std::fs::write(&input, &wasm).unwrap();
    let out_path = tmp.path().join("app.wasm.jwe");
    let (code, v) = json(&[
        "wasm",
        "encrypt",
        input.to_str().unwrap(),
        "--recipient",
        &format!("jwe:{public}"),
        "--out",
        out_path.to_str().unwrap(),
        "--kid",
        "apps/wasm",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["plain_sha256"], Digest::of(&wasm).hex(), "{v}");
    let jwe = std::fs::read(&out_path).unwrap();
    assert!(!jwe.windows(MARKER.len()).any(|w| w == MARKER));
    assert!(enclave_imgcrypt::is_encrypted_component(&jwe));
    assert_eq!(
        enclave_imgcrypt::component_kid(&jwe).unwrap().as_deref(),
        Some("apps/wasm")
    );
    let ec = load_ec(&private);
    let back = enclave_imgcrypt::decrypt_component(&jwe, &RecipientKey::EcP256(&ec)).unwrap();
    assert_eq!(&back[..], &wasm[..]);

    // not a wasm binary; a provider recipient; a missing input
    std::fs::write(tmp.path().join("x.txt"), b"hello").unwrap();
    let (code, v) = json(&[
        "wasm",
        "encrypt",
        tmp.path().join("x.txt").to_str().unwrap(),
        "--recipient",
        &format!("jwe:{public}"),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("x.txt")
            && v["error"].as_str().unwrap().contains("\\0asm"),
        "{v}"
    );
    let (code, v) = json(&[
        "wasm",
        "encrypt",
        input.to_str().unwrap(),
        "--recipient",
        "provider:attestation-agent:keyid=kbs:///a/b/c",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"].as_str().unwrap().contains("jwe:<file>"), "{v}");
    let (code, v) = json(&[
        "wasm",
        "encrypt",
        "/nonexistent.wasm",
        "--recipient",
        &format!("jwe:{public}"),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("/nonexistent.wasm"),
        "{v}"
    );
}
