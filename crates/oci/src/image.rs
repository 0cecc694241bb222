//! The documents of an image as this client reads them: index, manifest, configuration, and
//! the descriptors between them. Every parsed document keeps the bytes it was parsed from,
//! since its digest is over those bytes and a re-serialisation would not reproduce them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::OciError;
use crate::reference::Digest;

/// Media types this client knows.
pub mod media_type {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image configuration.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI layer, uncompressed tar.
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI layer, gzip-compressed tar.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI layer, zstd-compressed tar (refused for now).
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker manifest list.
    pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker image configuration.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker layer, gzip-compressed tar.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker layer, uncompressed tar.
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker schema 1 manifest (refused).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Docker schema 1 manifest, signed (refused).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// What a manifest request accepts, most preferred first.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
}

/// The largest manifest, index or configuration read: 4 MiB. Real ones are a few KiB; the cap
/// keeps a hostile registry from making the TEE hold an arbitrary document.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// A platform, as an index lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture variant (`v8`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version, if any.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A pointer to content: its media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// Its sha256.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// The platform, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// External URLs (foreign layers); never fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// 2.
    pub schema_version: u32,
    /// Its media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests it lists.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI, or Docker schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// 2.
    pub schema_version: u32,
    /// Its media type, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The configuration.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A resolved image manifest, with the bytes its digest is over and, when the reference named
/// an index, the index it was selected from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest's bytes as served.
    pub bytes: Vec<u8>,
    /// Their sha256 (checked).
    pub digest: Digest,
    /// The manifest's media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The parsed manifest.
    pub parsed: ImageManifest,
    /// The index the reference named (its digest and bytes), if it named one.
    pub index: Option<(Digest, Vec<u8>)>,
}

impl Manifest {
    /// A manifest kept earlier (the bytes a tree committed), read back: parsed and checked as
    /// a pull checks it. Its digest is the SHA-256 of `bytes`; an index is refused, since what
    /// is kept is always the platform's manifest. `what` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, what: &str) -> Result<Manifest, OciError> {
        let digest = Digest::of(&bytes);
        match resolve_top(bytes, digest, None, what)? {
            Resolved::Done(m) => Ok(m),
            Resolved::Child { .. } => Err(OciError::Inconsistent {
                what: what.to_string(),
                reason: "is an index, not the image manifest it selects".into(),
            }),
        }
    }
}

impl ImageConfig {
    /// An image configuration kept earlier, read back and checked against `manifest` (its
    /// size, its digest, the platform and one diff_id per layer), as a pull checks it.
    pub fn from_bytes(manifest: &Manifest, bytes: Vec<u8>) -> Result<ImageConfig, OciError> {
        let what = format!("the image configuration {}", manifest.parsed.config.digest);
        parse_config(bytes, manifest, &what)
    }
}

/// The runtime settings of an image configuration (`config` in the JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `NAME=value` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The user (`uid[:gid]` or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports (`8080/tcp` → `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The layers' uncompressed digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// One per layer, base first: the sha256 of the uncompressed tar.
    pub diff_ids: Vec<Digest>,
}

/// The parsed image configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// Runtime settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' diff_ids.
    pub rootfs: RootFs,
}

/// An image configuration, checked against its manifest, with the bytes its digest is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The configuration's bytes.
    pub bytes: Vec<u8>,
    /// Their sha256 (checked against the manifest).
    pub digest: Digest,
    /// The parsed configuration.
    pub parsed: ConfigFile,
}

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// A gzip-compressed tar.
    Gzip,
}

/// The compression of a layer of media type `media_type`, or why it is refused.
pub fn layer_compression(media_type: &str, what: &str) -> Result<Compression, OciError> {
    use media_type::*;
    let refuse = |reason: &str| OciError::UnsupportedMediaType {
        what: what.to_string(),
        media_type: media_type.to_string(),
        reason: reason.to_string(),
    };
    match media_type {
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Ok(Compression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Err(
            refuse("zstd layers are not supported yet: push the image with gzip layers"),
        ),
        t if t.ends_with(ENCRYPTED_SUFFIX) => Err(refuse(
            "an encrypted layer is read once decrypted, as its plain media type (enclave-imgcrypt)",
        )),
        t if t.contains("nondistributable") || t.contains("foreign") => Err(refuse(
            "foreign (non-distributable) layers live outside the registry and are not fetched",
        )),
        _ => Err(refuse(
            "not a layer media type this client reads (tar or tar+gzip, OCI or Docker)",
        )),
    }
}

/// The suffix ocicrypt appends to an encrypted layer's media type.
pub const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// A layer media type without ocicrypt's `+encrypted` suffix: what the layer is once decrypted.
pub fn plain_media_type(media_type: &str) -> &str {
    media_type
        .strip_suffix(ENCRYPTED_SUFFIX)
        .unwrap_or(media_type)
}

/// What a manifest document turned out to be.
#[derive(Debug)]
pub(crate) enum Document {
    Index(String, ImageIndex),
    Manifest(String, Box<ImageManifest>),
}

/// The one field every document has, read before the document's type is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> OciError {
    OciError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Parse a manifest or index from `bytes`. Its media type is the document's own `mediaType`;
/// failing that, `declared` (a descriptor's or the registry's `Content-Type`); failing that,
/// what its fields say (OCI allows omitting it).
pub(crate) fn parse_document(
    bytes: &[u8],
    declared: Option<&str>,
    what: &str,
) -> Result<Document, OciError> {
    use media_type::*;
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    let declared = declared
        .map(|d| d.split(';').next().unwrap_or(d).trim())
        .filter(|d| !d.is_empty() && *d != "application/json" && *d != "text/plain");
    let media_type = match (&probe.media_type, declared) {
        (Some(m), _) => m.clone(),
        (None, Some(d)) => d.to_string(),
        (None, None) if probe.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if probe.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => String::new(),
    };
    let refuse = |reason: &str| OciError::UnsupportedMediaType {
        what: what.to_string(),
        media_type: media_type.clone(),
        reason: reason.to_string(),
    };
    if probe.schema_version == Some(1)
        || media_type == DOCKER_SCHEMA1
        || media_type == DOCKER_SCHEMA1_SIGNED
    {
        return Err(refuse(
            "Docker schema 1 manifests are not supported (deprecated, and their digest is not over what is served): push the image again as OCI or Docker schema 2",
        ));
    }
    if probe.schema_version != Some(2) {
        return Err(malformed(
            what,
            format!(
                "schemaVersion is {}, expected 2",
                probe
                    .schema_version
                    .map_or("missing".to_string(), |v| v.to_string())
            ),
        ));
    }
    match media_type.as_str() {
        OCI_INDEX | DOCKER_INDEX => {
            let index: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
            Ok(Document::Index(media_type, index))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest: Box<ImageManifest> =
                serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
            Ok(Document::Manifest(media_type, manifest))
        }
        "" => Err(refuse(
            "the document names no media type and is neither an index nor a manifest",
        )),
        _ => Err(refuse(
            "not an image index or manifest (OCI, or Docker schema 2) this client reads",
        )),
    }
}

/// The linux/amd64 manifest an index lists, or why there is none.
pub(crate) fn select_platform(index: &ImageIndex, what: &str) -> Result<Descriptor, OciError> {
    let found = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    });
    match found {
        Some(d) => Ok(d.clone()),
        None => {
            let listed: Vec<String> = index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("(no platform)".to_string(), |p| p.to_string())
                })
                .collect();
            Err(OciError::PlatformMissing {
                what: what.to_string(),
                found: if listed.is_empty() {
                    "nothing".to_string()
                } else {
                    listed.join(", ")
                },
            })
        }
    }
}

/// Check a manifest's own content: its config is an image configuration and every layer is
/// one this client can verify, so an unpullable image is refused before any layer is fetched.
pub(crate) fn check_manifest(m: &ImageManifest, what: &str) -> Result<(), OciError> {
    use media_type::*;
    let config_type = m.config.media_type.as_str();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(OciError::UnsupportedMediaType {
            what: format!("the configuration of {what}"),
            media_type: config_type.to_string(),
            reason: "not a container image configuration (an artifact, not an image?)".into(),
        });
    }
    if m.config.size > MAX_DOCUMENT {
        return Err(OciError::TooLarge {
            what: format!("the configuration of {what}"),
            limit: MAX_DOCUMENT,
        });
    }
    for (i, layer) in m.layers.iter().enumerate() {
        // An encrypted layer (ocicrypt's `+encrypted`) is what its plain type is once decrypted.
        layer_compression(
            plain_media_type(&layer.media_type),
            &format!("layer {i} ({}) of {what}", layer.digest),
        )?;
    }
    Ok(())
}

/// Parse and check a configuration against the manifest it belongs to.
pub(crate) fn parse_config(
    bytes: Vec<u8>,
    manifest: &Manifest,
    what: &str,
) -> Result<ImageConfig, OciError> {
    let d = &manifest.parsed.config;
    if bytes.len() as u64 != d.size {
        return Err(OciError::SizeMismatch {
            what: what.to_string(),
            expected: d.size,
            actual: format!("{} bytes arrived", bytes.len()),
        });
    }
    d.digest.check(&bytes, what)?;
    let parsed: ConfigFile = serde_json::from_slice(&bytes).map_err(|e| malformed(what, e))?;
    if parsed.os != "linux" || parsed.architecture != "amd64" {
        return Err(OciError::Inconsistent {
            what: what.to_string(),
            reason: format!(
                "the image is for {}/{}, only linux/amd64 runs here",
                parsed.os, parsed.architecture
            ),
        });
    }
    let (diffs, layers) = (parsed.rootfs.diff_ids.len(), manifest.parsed.layers.len());
    if diffs != layers {
        return Err(OciError::Inconsistent {
            what: what.to_string(),
            reason: format!("it lists {diffs} layer diff_ids but the manifest has {layers} layers"),
        });
    }
    Ok(ImageConfig {
        bytes,
        digest: d.digest,
        parsed,
    })
}

/// The first step of resolving a reference, given the document its digest names (already
/// checked against that digest): a manifest is the answer; an index names the linux/amd64
/// manifest still to fetch.
pub(crate) enum Resolved {
    Done(Manifest),
    Child {
        descriptor: Descriptor,
        index: (Digest, Vec<u8>),
    },
}

/// Read the document a reference's digest named.
pub(crate) fn resolve_top(
    bytes: Vec<u8>,
    digest: Digest,
    declared: Option<&str>,
    what: &str,
) -> Result<Resolved, OciError> {
    match parse_document(&bytes, declared, what)? {
        Document::Manifest(media_type, parsed) => {
            check_manifest(&parsed, what)?;
            Ok(Resolved::Done(Manifest {
                bytes,
                digest,
                media_type,
                parsed: *parsed,
                index: None,
            }))
        }
        Document::Index(_, index) => {
            let descriptor = select_platform(&index, what)?;
            if descriptor.size > MAX_DOCUMENT {
                return Err(OciError::TooLarge {
                    what: child_what(&descriptor, what),
                    limit: MAX_DOCUMENT,
                });
            }
            Ok(Resolved::Child {
                descriptor,
                index: (digest, bytes),
            })
        }
    }
}

/// How the manifest an index selected is named in errors.
pub(crate) fn child_what(d: &Descriptor, index_what: &str) -> String {
    format!(
        "the linux/amd64 manifest {} listed by {index_what}",
        d.digest
    )
}

/// Check and read the manifest an index selected: its size and digest are the descriptor's,
/// and it is a manifest (an index inside an index is not followed).
pub(crate) fn resolve_child(
    bytes: Vec<u8>,
    descriptor: &Descriptor,
    index: (Digest, Vec<u8>),
    what: &str,
) -> Result<Manifest, OciError> {
    if bytes.len() as u64 != descriptor.size {
        return Err(OciError::SizeMismatch {
            what: what.to_string(),
            expected: descriptor.size,
            actual: format!("{} bytes arrived", bytes.len()),
        });
    }
    descriptor.digest.check(&bytes, what)?;
    match parse_document(&bytes, Some(&descriptor.media_type), what)? {
        Document::Manifest(media_type, parsed) => {
            check_manifest(&parsed, what)?;
            Ok(Manifest {
                bytes,
                digest: descriptor.digest,
                media_type,
                parsed: *parsed,
                index: Some(index),
            })
        }
        Document::Index(media_type, _) => Err(OciError::UnsupportedMediaType {
            what: what.to_string(),
            media_type,
            reason: "an index inside an index is not followed".into(),
        }),
    }
}

/// How a blob of `manifest` is named in errors: "layer 2 (sha256:…)", "the configuration
/// (sha256:…)", or "blob sha256:…" for one the manifest does not list.
pub(crate) fn blob_what(d: &Descriptor, manifest: Option<&Manifest>, image: &str) -> String {
    if let Some(m) = manifest {
        if m.parsed.config.digest == d.digest {
            return format!("the configuration ({}) of {image}", d.digest);
        }
        if let Some(i) = m.parsed.layers.iter().position(|l| l.digest == d.digest) {
            return format!("layer {i} ({}) of {image}", d.digest);
        }
    }
    if layer_compression(&d.media_type, "").is_ok() {
        format!("layer {} of {image}", d.digest)
    } else {
        format!("blob {} of {image}", d.digest)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const D: &str = "sha256:e5d2734cbde7cfbdc6ad7fdf964b4407539a794fa4aa0bb053463d33402d34bb";

    #[test]
    fn documents_are_told_apart_and_schema_1_refused() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{D}","size":3}},"layers":[{{"mediaType":"{}","digest":"{D}","size":9}}]}}"#,
            media_type::OCI_CONFIG,
            media_type::OCI_LAYER_GZIP
        );
        assert!(matches!(
            parse_document(manifest.as_bytes(), None, "m").unwrap(),
            Document::Manifest(t, _) if t == media_type::OCI_MANIFEST
        ));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{D}","size":3,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
            media_type::DOCKER_INDEX,
            media_type::DOCKER_MANIFEST
        );
        let Document::Index(_, index) = parse_document(index.as_bytes(), None, "i").unwrap() else {
            panic!("not an index")
        };
        let e = select_platform(&index, "index i").unwrap_err().to_string();
        assert!(
            e.contains("no linux/amd64") && e.contains("linux/arm64/v8"),
            "{e}"
        );
        let e = parse_document(br#"{"schemaVersion":1,"name":"x"}"#, None, "old")
            .unwrap_err()
            .to_string();
        assert!(e.contains("schema 1"), "{e}");
        let e = parse_document(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#,
            None,
            "art",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unsupported media type 'application/vnd.example+json'"),
            "{e}"
        );
        let e = parse_document(b"{not json", None, "bad")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad: malformed"), "{e}");
    }

    #[test]
    fn layer_media_types() {
        use media_type::*;
        for t in [
            OCI_LAYER_TAR,
            OCI_LAYER_GZIP,
            DOCKER_LAYER_GZIP,
            DOCKER_LAYER_TAR,
        ] {
            assert!(layer_compression(t, "l").is_ok(), "{t}");
        }
        for (t, why) in [
            (OCI_LAYER_ZSTD, "zstd"),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                "read once decrypted",
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                "foreign",
            ),
            ("text/plain", "not a layer media type"),
        ] {
            let e = layer_compression(t, "layer 0").unwrap_err().to_string();
            assert!(
                e.starts_with("layer 0: unsupported media type") && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn kept_documents_read_back_and_are_checked() {
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":10}}]}}"#,
            Digest::of(config),
            config.len()
        );
        let m = Manifest::from_bytes(manifest.clone().into_bytes(), "kept").unwrap();
        assert_eq!(m.digest, Digest::of(manifest.as_bytes()));
        let c = ImageConfig::from_bytes(&m, config.to_vec()).unwrap();
        assert_eq!(c.parsed.rootfs.diff_ids.len(), 1);
        // A configuration that is not the one the manifest names is refused.
        let mut other = config.to_vec();
        other[0] = b' ';
        let e = ImageConfig::from_bytes(&m, other).unwrap_err();
        assert!(matches!(e, OciError::DigestMismatch { .. }), "{e}");
        // An index is not what is kept.
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(Manifest::from_bytes(index.to_vec(), "kept").is_err());
    }
}
