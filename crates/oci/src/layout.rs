//! A local OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), as umoci and
//! skopeo write it, read with the same checks as a registry.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::OciError;
use crate::image::{
    Descriptor, ImageConfig, ImageIndex, MAX_DOCUMENT, Manifest, Resolved, blob_what, child_what,
    parse_config, resolve_child, resolve_top,
};
use crate::layer::DiffIdVerifier;
use crate::reference::{Digest, Reference};

/// An image layout directory. The registry host of a reference is not consulted: the layout
/// is looked up by the reference's digest alone.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
    index: ImageIndex,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> OciError {
    OciError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl Layout {
    /// Open the layout at `dir`: its `oci-layout` must say version 1.0.0 and its `index.json`
    /// must parse.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, OciError> {
        let dir = dir.as_ref().to_path_buf();
        let marker = dir.join("oci-layout");
        let text = std::fs::read(&marker).map_err(|e| io_error(&marker, e))?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Marker {
            image_layout_version: String,
        }
        let m: Marker = serde_json::from_slice(&text).map_err(|e| OciError::Malformed {
            what: marker.display().to_string(),
            reason: e.to_string(),
        })?;
        if m.image_layout_version != "1.0.0" {
            return Err(OciError::Malformed {
                what: marker.display().to_string(),
                reason: format!(
                    "image layout version {} (this reader knows 1.0.0)",
                    m.image_layout_version
                ),
            });
        }
        let index_path = dir.join("index.json");
        let bytes = read_capped(&index_path, MAX_DOCUMENT)?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| OciError::Malformed {
                what: index_path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self { dir, index })
    }

    /// The layout's top-level index (`index.json`): what it holds, by tag annotation.
    pub fn index(&self) -> &ImageIndex {
        &self.index
    }

    /// The descriptor `index.json` lists under tag `tag`
    /// (`org.opencontainers.image.ref.name`), if any.
    pub fn tagged(&self, tag: &str) -> Option<&Descriptor> {
        self.index.manifests.iter().find(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .is_some_and(|t| t == tag)
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    /// The image manifest `r`'s digest names, with the same rules as [`crate::Client::resolve`].
    pub fn manifest(&self, r: &Reference) -> Result<Manifest, OciError> {
        let what = format!("the manifest {r} in {}", self.dir.display());
        let bytes = read_capped(&self.blob_path(r.digest()), MAX_DOCUMENT)
            .map_err(|e| too_large_as(e, &what))?;
        r.digest().check(&bytes, &what)?;
        match resolve_top(bytes, *r.digest(), None, &what)? {
            Resolved::Done(m) => Ok(m),
            Resolved::Child { descriptor, index } => {
                let what = child_what(&descriptor, &what);
                let bytes = read_capped(&self.blob_path(&descriptor.digest), MAX_DOCUMENT)
                    .map_err(|e| too_large_as(e, &what))?;
                resolve_child(bytes, &descriptor, index, &what)
            }
        }
    }

    /// The configuration `manifest` names, checked as [`crate::Client::config`] checks it.
    pub fn config(&self, manifest: &Manifest) -> Result<ImageConfig, OciError> {
        let d = &manifest.parsed.config;
        let what = blob_what(d, Some(manifest), &self.dir.display().to_string());
        let bytes = read_capped(&self.blob_path(&d.digest), MAX_DOCUMENT)
            .map_err(|e| too_large_as(e, &what))?;
        parse_config(bytes, manifest, &what)
    }

    /// A blob's bytes, checked against its descriptor's size and digest.
    pub fn blob(&self, d: &Descriptor) -> Result<Vec<u8>, OciError> {
        let what = blob_what(d, None, &self.dir.display().to_string());
        let path = self.blob_path(&d.digest);
        let bytes = read_capped(&path, d.size).map_err(|e| match e {
            OciError::TooLarge { .. } => OciError::SizeMismatch {
                what: what.clone(),
                expected: d.size,
                actual: "the file is larger".into(),
            },
            e => e,
        })?;
        if bytes.len() as u64 != d.size {
            return Err(OciError::SizeMismatch {
                what,
                expected: d.size,
                actual: format!("the file holds {} bytes", bytes.len()),
            });
        }
        d.digest.check(&bytes, &what)?;
        Ok(bytes)
    }

    /// A layer's diff_id, computed by streaming its file (never held whole), after checking the
    /// file against the descriptor's size and digest.
    pub fn layer_diff_id(&self, layer: &Descriptor) -> Result<Digest, OciError> {
        let what = blob_what(layer, None, &self.dir.display().to_string());
        let mut verifier = DiffIdVerifier::for_layer(layer, what.clone())?;
        let path = self.blob_path(&layer.digest);
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| io_error(&path, e))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > layer.size {
                return Err(OciError::SizeMismatch {
                    what,
                    expected: layer.size,
                    actual: "the file is larger".into(),
                });
            }
            hasher.update(&buf[..n]);
            verifier.update(&buf[..n])?;
        }
        if total != layer.size {
            return Err(OciError::SizeMismatch {
                what,
                expected: layer.size,
                actual: format!("the file holds {total} bytes"),
            });
        }
        layer
            .digest
            .check_digest(&Digest::from_ring(hasher.finish()), &what)?;
        verifier.finish()
    }
}

/// A file's bytes, refusing more than `limit` ([`OciError::TooLarge`]) without reading them.
fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, OciError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(OciError::TooLarge {
            what: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

fn too_large_as(e: OciError, what: &str) -> OciError {
    match e {
        OciError::TooLarge { limit, .. } => OciError::TooLarge {
            what: what.to_string(),
            limit,
        },
        e => e,
    }
}
