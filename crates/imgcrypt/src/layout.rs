//! OCI image layouts on disk (what skopeo's `oci:<dir>[:tag]` transport reads and writes):
//! encrypting an image's layers into a new layout, and decrypting one back (for tests and an
//! operator's own check that an image opens with a key).
//!
//! Blobs are written to a temporary file in the destination's blob directory and renamed into
//! place, so a crash leaves no half-written blob under a digest name. Layers are read whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use enclave_oci::{Descriptor, Digest};
use enclave_vault::RecipientKey;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    ImgcryptError, LayerAuthenticator, Recipient, WrappedKey, annotations, encrypt_layer,
    is_encrypted, plain_media_type, public_options, unwrap_jwe, wrapped_keys,
};

/// The annotation an OCI layout's index names a tag with.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One layer encrypted (or decrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerDone {
    /// Position in the manifest, base first.
    pub index: usize,
    /// The layer's media type in the source.
    pub media_type: String,
    /// The plaintext blob's digest.
    pub plain: Digest,
    /// The encrypted blob's digest.
    pub encrypted: Digest,
    /// The encrypted blob's size (equal to the plaintext's).
    pub size: u64,
}

/// What [`encrypt_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EncryptReport {
    /// The new manifest's digest.
    pub manifest: Digest,
    /// The configuration's digest (unchanged).
    pub config: Digest,
    /// The tag the destination index names it with, if any.
    pub tag: Option<String>,
    /// Every layer, base first.
    pub layers: Vec<LayerDone>,
}

/// What [`decrypt_image`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecryptReport {
    /// The new manifest's digest.
    pub manifest: Digest,
    /// The configuration's digest (unchanged).
    pub config: Digest,
    /// Every layer that was encrypted, base first.
    pub layers: Vec<LayerDone>,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ImgcryptError {
    move |source| ImgcryptError::Io {
        what: what.to_string(),
        source,
    }
}

fn malformed(what: impl std::fmt::Display, reason: impl Into<String>) -> ImgcryptError {
    ImgcryptError::Malformed {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs").join("sha256").join(digest.hex())
}

fn read_blob(root: &Path, d: &Descriptor) -> Result<Vec<u8>, ImgcryptError> {
    let path = blob_path(root, &d.digest);
    let bytes = std::fs::read(&path).map_err(io(path.display()))?;
    let actual = Digest::of(&bytes);
    if actual != d.digest {
        return Err(ImgcryptError::Digest {
            what: path.display().to_string(),
            expected: d.digest,
            actual,
        });
    }
    if bytes.len() as u64 != d.size {
        return Err(malformed(
            path.display(),
            format!("{} bytes where the descriptor says {}", bytes.len(), d.size),
        ));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImgcryptError> {
    let dir = path
        .parent()
        .ok_or_else(|| malformed(path.display(), "has no parent directory"))?;
    std::fs::create_dir_all(dir).map_err(io(dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(path.display()))
}

fn write_blob(root: &Path, bytes: &[u8]) -> Result<Digest, ImgcryptError> {
    let digest = Digest::of(bytes);
    let path = blob_path(root, &digest);
    if !path.exists() {
        write_atomic(&path, bytes)?;
    }
    Ok(digest)
}

fn read_index(root: &Path) -> Result<Map<String, Value>, ImgcryptError> {
    let path = root.join("index.json");
    let bytes = std::fs::read(&path).map_err(io(path.display()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(malformed(path.display(), "not a JSON object")),
        Err(e) => Err(malformed(path.display(), format!("not JSON: {e}"))),
    }
}

fn descriptors(index: &Map<String, Value>, what: &Path) -> Result<Vec<Descriptor>, ImgcryptError> {
    let list = index
        .get("manifests")
        .cloned()
        .unwrap_or(Value::Array(vec![]));
    serde_json::from_value(list).map_err(|e| {
        malformed(
            what.join("index.json").display(),
            format!("bad `manifests`: {e}"),
        )
    })
}

/// The manifest descriptor `tag` names in `root`'s index (or the only one).
fn select(root: &Path, tag: Option<&str>) -> Result<Descriptor, ImgcryptError> {
    let index = read_index(root)?;
    let list = descriptors(&index, root)?;
    let tag_of = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    let found = match tag {
        Some(tag) => list.iter().find(|d| tag_of(d).as_deref() == Some(tag)),
        None if list.len() == 1 => list.first(),
        None => None,
    };
    let Some(found) = found else {
        let tags: Vec<String> = list.iter().filter_map(tag_of).collect();
        return Err(malformed(
            root.display(),
            match tag {
                Some(tag) => format!("no image tagged '{tag}' (tags: {})", tags.join(", ")),
                None => format!(
                    "{} images in the layout: name one by tag (tags: {})",
                    list.len(),
                    tags.join(", ")
                ),
            },
        ));
    };
    if INDEX_MEDIA_TYPES.contains(&found.media_type.as_str()) {
        return Err(ImgcryptError::Unsupported {
            what: format!("{}:{}", root.display(), tag.unwrap_or("")),
            scheme: "a multi-platform index (copy one platform's image into the layout first)"
                .into(),
        });
    }
    Ok(found.clone())
}

struct Source {
    manifest_desc: Descriptor,
    manifest: Map<String, Value>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

fn load(root: &Path, tag: Option<&str>) -> Result<Source, ImgcryptError> {
    let manifest_desc = select(root, tag)?;
    let bytes = read_blob(root, &manifest_desc)?;
    let what = format!("manifest {}", manifest_desc.digest);
    let manifest: Map<String, Value> = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => m,
        _ => return Err(malformed(&what, "not a JSON object")),
    };
    let config: Descriptor = manifest
        .get("config")
        .cloned()
        .ok_or_else(|| malformed(&what, "no config"))
        .and_then(|c| {
            serde_json::from_value(c).map_err(|e| malformed(&what, format!("config: {e}")))
        })?;
    let layers: Vec<Descriptor> = manifest
        .get("layers")
        .cloned()
        .ok_or_else(|| malformed(&what, "no layers"))
        .and_then(|c| {
            serde_json::from_value(c).map_err(|e| malformed(&what, format!("layers: {e}")))
        })?;
    Ok(Source {
        manifest_desc,
        manifest,
        config,
        layers,
    })
}

/// Writes the manifest, `oci-layout`, and the destination index with `tag` pointing at it
/// (replacing an entry with the same tag; the layout's other images are kept).
fn store(
    dst: &Path,
    src_desc: &Descriptor,
    mut manifest: Map<String, Value>,
    layers: &[Descriptor],
    tag: Option<&str>,
) -> Result<Digest, ImgcryptError> {
    let layers = serde_json::to_value(layers).map_err(|e| malformed("layers", e.to_string()))?;
    manifest.insert("layers".into(), layers);
    let bytes = serde_json::to_vec(&Value::Object(manifest))
        .map_err(|e| malformed("manifest", e.to_string()))?;
    let digest = write_blob(dst, &bytes)?;

    write_atomic(
        &dst.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let mut index = if dst.join("index.json").exists() {
        read_index(dst)?
    } else {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), Value::from(2));
        m.insert(
            "mediaType".into(),
            Value::from("application/vnd.oci.image.index.v1+json"),
        );
        m
    };
    let mut list = descriptors(&index, dst)?;
    let mut annotations = BTreeMap::new();
    if let Some(tag) = tag {
        annotations.insert(REF_NAME.to_owned(), tag.to_owned());
        list.retain(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .map(String::as_str)
                != Some(tag)
        });
    }
    list.push(Descriptor {
        media_type: src_desc.media_type.clone(),
        digest,
        size: bytes.len() as u64,
        platform: src_desc.platform.clone(),
        annotations: (!annotations.is_empty()).then_some(annotations),
        urls: None,
    });
    index.insert(
        "manifests".into(),
        serde_json::to_value(list).map_err(|e| malformed("index", e.to_string()))?,
    );
    let index =
        serde_json::to_vec(&Value::Object(index)).map_err(|e| malformed("index", e.to_string()))?;
    write_atomic(&dst.join("index.json"), &index)?;
    Ok(digest)
}

/// Encrypts every layer of the image `src_tag` names in the layout `src` (or its only image)
/// to `recipients`, writing the result to the layout `dst` under `dst_tag`. The configuration
/// is copied unchanged; each layer gets the `+encrypted` media type, the ciphertext's digest
/// and size, and the ocicrypt annotations. A layer already encrypted is an error.
/// `progress` is called after each layer.
pub fn encrypt_image(
    src: &Path,
    src_tag: Option<&str>,
    dst: &Path,
    dst_tag: Option<&str>,
    recipients: &[Recipient],
    progress: &mut dyn FnMut(LayerDone),
) -> Result<EncryptReport, ImgcryptError> {
    if recipients.is_empty() {
        return Err(ImgcryptError::NoKey {
            what: format!("{}", src.display()),
        });
    }
    let source = load(src, src_tag)?;
    let config = read_blob(src, &source.config)?;
    write_blob(dst, &config)?;

    let mut done = Vec::with_capacity(source.layers.len());
    let mut layers = Vec::with_capacity(source.layers.len());
    for (i, layer) in source.layers.iter().enumerate() {
        let what = format!("layer {i} ({})", layer.digest);
        if is_encrypted(&layer.media_type) {
            return Err(malformed(
                &what,
                format!("is already encrypted ({})", layer.media_type),
            ));
        }
        if layer.urls.is_some() {
            return Err(ImgcryptError::Unsupported {
                what,
                scheme: "a foreign (non-distributable) layer".into(),
            });
        }
        let plain = read_blob(src, layer)?;
        let (ciphertext, added) = encrypt_layer(&plain, &layer.digest, recipients)?;
        drop(plain);
        let digest = write_blob(dst, &ciphertext)?;
        // Wrapped keys or options the plain layer carried (left by some other tool) would be
        // taken for this encryption's: only the ones just made go with it.
        let mut annotations = layer.annotations.clone().unwrap_or_default();
        annotations.retain(|k, _| {
            !(k.starts_with(annotations::KEYS_PREFIX) || k.as_str() == annotations::PUBOPTS)
        });
        annotations.extend(added);
        layers.push(Descriptor {
            media_type: format!("{}{}", layer.media_type, crate::ENCRYPTED_SUFFIX),
            digest,
            size: ciphertext.len() as u64,
            platform: layer.platform.clone(),
            annotations: Some(annotations),
            urls: None,
        });
        let entry = LayerDone {
            index: i,
            media_type: layer.media_type.clone(),
            plain: layer.digest,
            encrypted: digest,
            size: ciphertext.len() as u64,
        };
        progress(entry.clone());
        done.push(entry);
    }
    let manifest = store(
        dst,
        &source.manifest_desc,
        source.manifest,
        &layers,
        dst_tag,
    )?;
    Ok(EncryptReport {
        manifest,
        config: source.config.digest,
        tag: dst_tag.map(str::to_owned),
        layers: done,
    })
}

/// Decrypts every encrypted layer of the image `src_tag` names in `src` with `key` (JWE
/// entries only: an attestation-agent packet needs its KEK from a KBS), writing the plaintext
/// image to `dst` under `dst_tag`. Each layer's HMAC and plaintext digest are checked before
/// its blob is written.
pub fn decrypt_image(
    src: &Path,
    src_tag: Option<&str>,
    dst: &Path,
    dst_tag: Option<&str>,
    key: &RecipientKey<'_>,
) -> Result<DecryptReport, ImgcryptError> {
    let source = load(src, src_tag)?;
    let config = read_blob(src, &source.config)?;
    write_blob(dst, &config)?;

    let mut done = Vec::new();
    let mut layers = Vec::with_capacity(source.layers.len());
    for (i, layer) in source.layers.iter().enumerate() {
        let mut blob = read_blob(src, layer)?;
        let Some(plain_type) = plain_media_type(&layer.media_type) else {
            write_blob(dst, &blob)?;
            layers.push(layer.clone());
            continue;
        };
        let what = format!("layer {i} ({})", layer.digest);
        let public = public_options(layer, &what)?;
        let mut errors = Vec::new();
        let mut unwrapped = None;
        for wrapped in wrapped_keys(layer, &what)? {
            match wrapped {
                WrappedKey::Jwe(jwe) => match unwrap_jwe(&jwe, key, &what) {
                    Ok(k) => {
                        unwrapped = Some(k);
                        break;
                    }
                    Err(e) => errors.push(e.to_string()),
                },
                WrappedKey::AttestationAgent(p) => errors.push(format!(
                    "attestation-agent packet {} needs its KEK from a KBS",
                    p.kid
                )),
            }
        }
        let Some(layer_key) = unwrapped else {
            return Err(ImgcryptError::WrongKey {
                what,
                reason: errors.join("; "),
            });
        };
        let mut authenticator = LayerAuthenticator::new(&layer_key, &public, &what)?;
        authenticator.update(&blob);
        let mut decryptor = authenticator.verify()?;
        let mut plain_desc = layer.clone();
        plain_desc.media_type = plain_type.to_owned();
        // Only to accept skopeo's recorded tar digest (see `finish_with_diff_id`); a layer
        // type enclave-oci cannot decompress is checked strictly.
        let mut diff_id = enclave_oci::DiffIdVerifier::for_layer(&plain_desc, &what).ok();
        for chunk in blob.chunks_mut(64 * 1024) {
            decryptor.decrypt(chunk);
            if let Some(v) = diff_id.as_mut()
                && v.update(chunk).is_err()
            {
                diff_id = None;
            }
        }
        let plain = match diff_id.and_then(|v| v.finish().ok()) {
            Some(diff_id) => decryptor.finish_with_diff_id(&diff_id)?,
            None => decryptor.finish()?,
        };
        write_blob(dst, &blob)?;
        blob.clear();
        let annotations: BTreeMap<String, String> = layer
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| {
                !(k.starts_with(annotations::KEYS_PREFIX) || k.as_str() == annotations::PUBOPTS)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        layers.push(Descriptor {
            media_type: plain_type.to_owned(),
            digest: plain,
            size: layer.size,
            platform: layer.platform.clone(),
            annotations: (!annotations.is_empty()).then_some(annotations),
            urls: None,
        });
        done.push(LayerDone {
            index: i,
            media_type: plain_type.to_owned(),
            plain,
            encrypted: layer.digest,
            size: layer.size,
        });
    }
    let manifest = store(
        dst,
        &source.manifest_desc,
        source.manifest,
        &layers,
        dst_tag,
    )?;
    Ok(DecryptReport {
        manifest,
        config: source.config.digest,
        layers: done,
    })
}
