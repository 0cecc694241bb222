//! The in-TEE OCI registry client of Enclave OS: it pulls container images **pinned by
//! digest** and verifies every byte inside the TEE, so that what runs is what the operator
//! measured, whatever the registry, the network or the host serve.
//!
//! - [`Reference`]: `host[:port]/repo[:tag]@sha256:<hex>`. A reference without a digest is
//!   refused (a tag can move), and so is one without a registry host (there is no default
//!   registry).
//! - [`Client`]: OCI distribution v2 over the workspace's one HTTPS client (`enclave-http`).
//!   Each registry is trusted only through the CA bundle configured for it
//!   ([`RegistryConfig`]); a reference to any other registry is refused. Anonymous, Basic and
//!   Bearer-token auth. [`Client::resolve`] fetches the manifest by digest (selecting
//!   linux/amd64 from an index), [`Client::config`] the configuration, [`Client::blob`] a
//!   layer as a [`BlobStream`] whose digest and size are checked as it ends.
//! - [`DiffIdVerifier`] computes a layer's diff_id from its compressed stream, to check
//!   against the configuration's `rootfs.diff_ids`; [`chain_id`] names a layer stack.
//! - [`Layout`] reads a local OCI image layout with the same checks, so `enclave-os measure`
//!   computes the same digests offline.
//!
//! What it is not: a container runtime or a content store. It knows nothing of containerd or
//! snapshots (the caller writes the verified stream where it wants, and must not commit a
//! blob before [`BlobStream::next_chunk`] returned its end), it does not unpack layers, and it
//! does not push. Redirects are followed only to the registry's own host. Only sha256
//! digests; only tar and tar+gzip layers (zstd is refused for now; an encrypted layer's manifest
//! entry is accepted as its plain type, and decrypting it is `enclave-imgcrypt`'s);
//! only linux/amd64 images.

mod auth;
mod error;
pub mod image;
mod layer;
mod layout;
mod reference;
mod registry;

pub use auth::Credentials;
pub use error::OciError;
pub use image::{
    Compression, ConfigFile, ContainerConfig, Descriptor, ENCRYPTED_SUFFIX, ImageConfig,
    ImageIndex, ImageManifest, Manifest, Platform, RootFs, plain_media_type,
};
pub use layer::{DiffIdVerifier, chain_id};
pub use layout::Layout;
pub use reference::{Digest, Reference};
pub use registry::{BlobStream, Client, RegistryConfig};
