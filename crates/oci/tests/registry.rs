//! The client against a real private registry (Debian's docker-registry) on loopback, with a
//! busybox image built by umoci and pushed by skopeo: every outcome and its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_oci::{
    Client, Credentials, DiffIdVerifier, Digest, Layout, OciError, Reference, RegistryConfig,
    chain_id,
};
use enclave_testkit::pki::TestPki;
use enclave_testkit::registry::{OciLayout, Registry, image};
use tempfile::TempDir;
use zeroize::Zeroizing;

struct Fixture {
    registry: Registry,
    layout: OciLayout,
    /// The manifest digest as the registry reports it (`skopeo inspect`).
    digest: String,
    reference: Reference,
    _dir: TempDir,
}

const REPO: &str = "team/busybox";

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"));
    let layout = image::busybox(dir.path(), "bb", &["/bin/sh", "-c", "echo hello"]);
    let digest = registry.push(&layout, &format!("{REPO}:v1"));
    let reference = format!("{}/{REPO}:v1@{digest}", registry.host())
        .parse()
        .unwrap();
    Fixture {
        registry,
        layout,
        digest,
        reference,
        _dir: dir,
    }
}

fn settings(registry: &Registry, password: Option<&str>) -> RegistryConfig {
    RegistryConfig {
        host: registry.host().to_string(),
        ca_bundle_pem: registry.ca_pem().as_bytes().to_vec(),
        credentials: password.map(|p| Credentials {
            username: registry.username().to_string(),
            password: Zeroizing::new(p.to_string()),
        }),
    }
}

fn client(registry: &Registry) -> Client {
    Client::new(vec![settings(registry, Some(registry.password()))]).unwrap()
}

/// Read a whole blob through its stream, feeding a diff_id verifier; the diff_id and the
/// bytes received.
async fn pull_layer(
    client: &Client,
    r: &Reference,
    layer: &enclave_oci::Descriptor,
    what: &str,
) -> Result<(Digest, u64), OciError> {
    let mut stream = client.blob(r, layer).await?;
    let mut verifier = DiffIdVerifier::for_layer(layer, what)?;
    let mut chunks = 0;
    while let Some(chunk) = stream.next_chunk().await? {
        verifier.update(&chunk)?;
        chunks += 1;
        assert_eq!(stream.size(), layer.size);
    }
    assert!(chunks > 0);
    // The end is sticky.
    assert!(stream.next_chunk().await?.is_none());
    Ok((verifier.finish()?, stream.received()))
}

#[tokio::test]
async fn an_image_pinned_by_digest_is_pulled_and_every_digest_checked() {
    let f = fixture();
    assert_eq!(
        f.digest, f.layout.manifest_digest,
        "skopeo kept umoci's manifest"
    );
    let client = client(&f.registry);
    let manifest = client.resolve(&f.reference).await.unwrap();
    assert_eq!(manifest.digest.to_string(), f.digest);
    assert_eq!(Digest::of(&manifest.bytes), manifest.digest);
    assert_eq!(
        manifest.media_type,
        enclave_oci::image::media_type::OCI_MANIFEST
    );
    assert!(manifest.index.is_none());
    assert_eq!(manifest.parsed.layers.len(), 1);

    let config = client.config(&f.reference, &manifest).await.unwrap();
    assert_eq!(config.digest, manifest.parsed.config.digest);
    assert_eq!(Digest::of(&config.bytes), config.digest);
    let settings = config.parsed.config.as_ref().unwrap();
    assert_eq!(
        settings.entrypoint.as_deref(),
        Some(&["/bin/sh".to_string()][..])
    );
    assert_eq!(
        settings.cmd.as_deref(),
        Some(&["-c".to_string(), "echo hello".to_string()][..])
    );
    assert_eq!(
        settings.env.as_deref(),
        Some(&["PATH=/bin".to_string()][..])
    );
    assert_eq!(
        (
            config.parsed.os.as_str(),
            config.parsed.architecture.as_str()
        ),
        ("linux", "amd64")
    );

    let mut diff_ids = Vec::new();
    for (i, layer) in manifest.parsed.layers.iter().enumerate() {
        let (diff_id, received) = pull_layer(&client, &f.reference, layer, &format!("layer {i}"))
            .await
            .unwrap();
        assert_eq!(received, layer.size);
        assert_eq!(diff_id, config.parsed.rootfs.diff_ids[i], "layer {i}");
        diff_ids.push(diff_id);
    }
    // One layer: its chain ID is its diff_id.
    assert_eq!(chain_id(&diff_ids), Some(diff_ids[0]));

    // A second pull reuses what the registry asked for (Basic) and still checks everything.
    let again = client.resolve(&f.reference).await.unwrap();
    assert_eq!(again, manifest);
}

#[tokio::test]
async fn a_tag_or_a_digest_that_is_not_the_image_is_refused() {
    let f = fixture();
    let tag_only = format!("{}/{REPO}:v1", f.registry.host());
    match tag_only.parse::<Reference>() {
        Err(e @ OciError::NotPinned { .. }) => {
            let t = e.to_string();
            assert!(t.starts_with(&tag_only), "{t}");
            assert!(t.contains("pin it by digest: name@sha256:"), "{t}");
        }
        other => panic!("{other:?}"),
    }
    let client = client(&f.registry);
    let wrong = Digest::of(b"not the image");
    let r: Reference = format!("{}/{REPO}:v1@{wrong}", f.registry.host())
        .parse()
        .unwrap();
    match client.resolve(&r).await {
        Err(e @ OciError::NotFound { .. }) => {
            let t = e.to_string();
            assert!(t.contains(&wrong.to_string()), "{t}");
            assert!(
                t.contains(&format!("not found in registry {}", f.registry.host())),
                "{t}"
            );
            assert!(t.contains("MANIFEST_UNKNOWN"), "{t}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_tampered_layer_in_the_registry_is_a_digest_mismatch_naming_it() {
    let f = fixture();
    let client = client(&f.registry);
    let manifest = client.resolve(&f.reference).await.unwrap();
    let layer = &manifest.parsed.layers[0];
    let path = f.registry.blob_path(&layer.digest.to_string());
    let mut bytes = std::fs::read(&path).unwrap();
    // Same length, one byte different (past the gzip header: it still decompresses for a while).
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();

    let mut stream = client.blob(&f.reference, layer).await.unwrap();
    let mut received = 0;
    let end = loop {
        match stream.next_chunk().await {
            Ok(Some(c)) => received += c.len() as u64,
            other => break other,
        }
    };
    assert_eq!(received, layer.size);
    match end {
        Err(e @ OciError::DigestMismatch { .. }) => {
            let t = e.to_string();
            assert!(
                t.starts_with(&format!("layer {} of {}", layer.digest, f.reference)),
                "{t}"
            );
            assert!(t.contains("digest mismatch"), "{t}");
            assert!(t.contains(&Digest::of(&bytes).to_string()), "{t}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_blob_of_another_size_than_declared_is_refused() {
    let f = fixture();
    let client = client(&f.registry);
    let manifest = client.resolve(&f.reference).await.unwrap();
    let layer = &manifest.parsed.layers[0];
    // Declared smaller: refused from the registry's Content-Length, before any byte is used.
    let smaller = enclave_oci::Descriptor {
        size: layer.size - 1,
        ..layer.clone()
    };
    match client.blob(&f.reference, &smaller).await {
        Err(e @ OciError::SizeMismatch { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains(&format!("declares {} bytes", layer.size - 1)),
                "{t}"
            );
            assert!(
                t.contains(&format!("announces {} bytes", layer.size)),
                "{t}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Declared larger: the stream ends short.
    let larger = enclave_oci::Descriptor {
        size: layer.size + 1,
        ..layer.clone()
    };
    match client.blob(&f.reference, &larger).await {
        Err(e @ OciError::SizeMismatch { .. }) => {
            assert!(e.to_string().contains("size mismatch"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_registry_certificate_outside_its_bundle_is_a_tls_error() {
    let f = fixture();
    let other = TestPki::new("another test CA");
    let mut s = settings(&f.registry, Some(f.registry.password()));
    s.ca_bundle_pem = other.ca_pem.into_bytes();
    let client = Client::new(vec![s]).unwrap();
    match client.resolve(&f.reference).await {
        Err(e @ OciError::Tls { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains(&format!("TLS with registry {}", f.registry.host())),
                "{t}"
            );
            assert!(t.contains("only the CA bundle configured for it"), "{t}");
            let OciError::Tls { source, .. } = &e else {
                unreachable!()
            };
            assert!(
                matches!(
                    source.tls_error(),
                    Some(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                    ))
                ),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_unauthorized() {
    let f = fixture();
    let wrong = Client::new(vec![settings(&f.registry, Some("not-the-password"))]).unwrap();
    match wrong.resolve(&f.reference).await {
        Err(e @ OciError::Unauthorized { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains(&format!("registry {} refused access", f.registry.host())),
                "{t}"
            );
            assert!(t.contains("(user 'enclave') were refused"), "{t}");
            assert!(!t.contains("not-the-password"), "{t}");
            assert!(!format!("{e:?}").contains("not-the-password"));
        }
        other => panic!("{other:?}"),
    }
    let none = Client::new(vec![settings(&f.registry, None)]).unwrap();
    match none.resolve(&f.reference).await {
        Err(e @ OciError::Unauthorized { .. }) => {
            let t = e.to_string();
            assert!(t.contains(f.registry.host()), "{t}");
            assert!(t.contains("none are configured for it"), "{t}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_registry_without_settings_is_refused_by_name() {
    let pki = TestPki::new("some registry CA");
    let client = Client::new(vec![RegistryConfig {
        host: "registry.example:5000".into(),
        ca_bundle_pem: pki.ca_pem.into_bytes(),
        credentials: None,
    }])
    .unwrap();
    let r: Reference = format!("other.example:5000/app@{}", Digest::of(b"x"))
        .parse()
        .unwrap();
    match client.resolve(&r).await {
        Err(e @ OciError::UnknownRegistry { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains("registry other.example:5000 is not configured"),
                "{t}"
            );
            assert!(t.contains("[[registry]]"), "{t}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_local_layout_yields_the_same_digests_as_the_registry() {
    let f = fixture();
    let client = client(&f.registry);
    let pulled = client.resolve(&f.reference).await.unwrap();
    let pulled_config = client.config(&f.reference, &pulled).await.unwrap();

    let layout = Layout::open(&f.layout.path).unwrap();
    let local = layout.manifest(&f.reference).unwrap();
    assert_eq!(local.digest, pulled.digest);
    assert_eq!(local.bytes, pulled.bytes);
    assert_eq!(
        layout.tagged("latest").map(|d| d.digest),
        Some(pulled.digest)
    );
    let config = layout.config(&local).unwrap();
    assert_eq!(config.digest, pulled_config.digest);
    for (i, layer) in local.parsed.layers.iter().enumerate() {
        assert_eq!(
            layout.layer_diff_id(layer).unwrap(),
            config.parsed.rootfs.diff_ids[i]
        );
        assert_eq!(Digest::of(&layout.blob(layer).unwrap()), layer.digest);
    }
}

/// Add an index blob listing `entries` (digest, size, os/arch) to `layout`; its digest.
fn add_index(layout: &std::path::Path, entries: &[(Digest, u64, &str)]) -> Digest {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(d, size, platform)| {
            let (os, arch) = platform.split_once('/').unwrap();
            serde_json::json!({
                "mediaType": enclave_oci::image::media_type::OCI_MANIFEST,
                "digest": d.to_string(),
                "size": size,
                "platform": {"os": os, "architecture": arch},
            })
        })
        .collect();
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": enclave_oci::image::media_type::OCI_INDEX,
        "manifests": manifests,
    }))
    .unwrap();
    let digest = Digest::of(&bytes);
    std::fs::write(layout.join("blobs/sha256").join(digest.hex()), &bytes).unwrap();
    digest
}

#[test]
fn an_index_selects_linux_amd64_or_lists_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let built = image::busybox(dir.path(), "bb", &["/bin/sh"]);
    let layout = Layout::open(&built.path).unwrap();
    let single: Reference = format!("reg.example/bb@{}", built.manifest_digest)
        .parse()
        .unwrap();
    let manifest = layout.manifest(&single).unwrap();
    let size = manifest.bytes.len() as u64;

    let index = add_index(
        &built.path,
        &[
            (manifest.digest, size, "linux/arm64"),
            (manifest.digest, size, "linux/amd64"),
        ],
    );
    let r: Reference = format!("reg.example/bb@{index}").parse().unwrap();
    let picked = layout.manifest(&r).unwrap();
    assert_eq!(picked.digest, manifest.digest);
    let (index_digest, index_bytes) = picked.index.clone().unwrap();
    assert_eq!(index_digest, index);
    assert_eq!(Digest::of(&index_bytes), index);
    // The configuration is checked the same way whichever way the manifest was reached.
    assert_eq!(
        layout.config(&picked).unwrap().digest,
        manifest.parsed.config.digest
    );

    let arm_only = add_index(
        &built.path,
        &[
            (manifest.digest, size, "linux/arm64"),
            (manifest.digest, size, "windows/amd64"),
        ],
    );
    let r: Reference = format!("reg.example/bb@{arm_only}").parse().unwrap();
    match layout.manifest(&r) {
        Err(e @ OciError::PlatformMissing { .. }) => {
            let t = e.to_string();
            assert!(t.contains("no linux/amd64 image in the index"), "{t}");
            assert!(t.contains("linux/arm64, windows/amd64"), "{t}");
        }
        other => panic!("{other:?}"),
    }

    // An index that declares the wrong size for its manifest is refused.
    let lying = add_index(&built.path, &[(manifest.digest, size + 1, "linux/amd64")]);
    let r: Reference = format!("reg.example/bb@{lying}").parse().unwrap();
    match layout.manifest(&r) {
        Err(e @ OciError::SizeMismatch { .. }) => {
            let t = e.to_string();
            assert!(t.contains("the linux/amd64 manifest"), "{t}");
        }
        other => panic!("{other:?}"),
    }

    // A digest the layout does not hold.
    let missing: Reference = format!("reg.example/bb@{}", Digest::of(b"absent"))
        .parse()
        .unwrap();
    assert!(matches!(
        layout.manifest(&missing),
        Err(OciError::Io { .. })
    ));
}

#[tokio::test]
async fn a_pushed_index_resolves_to_its_linux_amd64_manifest() {
    let f = fixture();
    let layout = Layout::open(&f.layout.path).unwrap();
    let manifest = layout.manifest(&f.reference).unwrap();
    let index = add_index(
        &f.layout.path,
        &[
            (manifest.digest, manifest.bytes.len() as u64, "linux/arm64"),
            (manifest.digest, manifest.bytes.len() as u64, "linux/amd64"),
        ],
    );
    // Tag the index in index.json so skopeo pushes it.
    let index_json = f.layout.path.join("index.json");
    let mut top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_json).unwrap()).unwrap();
    let size = std::fs::metadata(f.layout.path.join("blobs/sha256").join(index.hex()))
        .unwrap()
        .len();
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": enclave_oci::image::media_type::OCI_INDEX,
            "digest": index.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    std::fs::write(&index_json, serde_json::to_vec(&top).unwrap()).unwrap();
    let multi = OciLayout {
        tag: "multi".into(),
        ..f.layout.clone()
    };
    let pushed = f.registry.push(&multi, &format!("{REPO}:multi"));
    assert_eq!(pushed, index.to_string(), "skopeo --all kept the index");

    let r: Reference = format!("{}/{REPO}:multi@{pushed}", f.registry.host())
        .parse()
        .unwrap();
    let client = client(&f.registry);
    let resolved = client.resolve(&r).await.unwrap();
    assert_eq!(resolved.digest, manifest.digest);
    assert_eq!(resolved.index.as_ref().map(|(d, _)| *d), Some(index));
    let config = client.config(&r, &resolved).await.unwrap();
    assert_eq!(config.digest, manifest.parsed.config.digest);
}

#[tokio::test]
async fn a_registry_with_token_auth_is_pulled_with_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start_with_token_auth(&dir.path().join("registry"), REPO);
    let layout = image::busybox(dir.path(), "bb", &["/bin/sh"]);
    let digest = registry.push(&layout, &format!("{REPO}:v1"));
    let r: Reference = format!("{}/{REPO}@{digest}", registry.host())
        .parse()
        .unwrap();
    // Anonymous: the token server hands out tokens without credentials.
    let client = Client::new(vec![settings(&registry, None)]).unwrap();
    let manifest = client.resolve(&r).await.unwrap();
    assert_eq!(manifest.digest.to_string(), digest);
    // The cached token serves the configuration and the layers.
    let config = client.config(&r, &manifest).await.unwrap();
    let layer = &manifest.parsed.layers[0];
    let (diff_id, _) = pull_layer(&client, &r, layer, "layer 0").await.unwrap();
    assert_eq!(diff_id, config.parsed.rootfs.diff_ids[0]);

    // Another repository: the token (scoped to REPO) is refused by the registry.
    let other: Reference = format!("{}/other/repo@{digest}", registry.host())
        .parse()
        .unwrap();
    match client.resolve(&other).await {
        Err(e @ OciError::Unauthorized { .. }) => {
            let t = e.to_string();
            assert!(
                t.contains(&format!("registry {} refused access", registry.host())),
                "{t}"
            );
            assert!(
                t.contains("the token its token server issued was refused"),
                "{t}"
            );
        }
        other => panic!("{other:?}"),
    }
}
