//! What can go wrong, each variant naming the reference or registry and the reason.

use crate::reference::Digest;

/// Why a pull, a parse or a check failed. Every variant says what it was about (a reference, a
/// registry, a document or a layer) and why, in words an operator acts on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// A reference without a digest: a tag can be moved under us, a digest cannot.
    #[error(
        "{reference}: the image is not pinned: pin it by digest: name@sha256:<64 hex digits> (a tag alone can change after it was measured)"
    )]
    NotPinned {
        /// The reference as given.
        reference: String,
    },
    /// A reference that does not parse.
    #[error("{reference}: not an image reference: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest that is not `sha256:<64 lowercase hex>`.
    #[error("'{input}' is not a digest: {reason}")]
    InvalidDigest {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A reference to a registry the client was not configured with.
    #[error(
        "{reference}: registry {host} is not configured: add a [[registry]] entry for it with its CA bundle (no registry is trusted by default)"
    )]
    UnknownRegistry {
        /// The reference.
        reference: String,
        /// Its registry host.
        host: String,
    },
    /// A registry's settings are unusable (an empty or malformed CA bundle, a duplicate host).
    #[error("registry {host}: {reason}")]
    RegistryConfig {
        /// The registry host as configured.
        host: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS handshake with the registry failed: typically its certificate is not issued by a
    /// CA in the bundle configured for that registry.
    #[error(
        "{what}: TLS with registry {host} failed (only the CA bundle configured for it is trusted): {source}"
    )]
    Tls {
        /// The registry host.
        host: String,
        /// What was being fetched.
        what: String,
        /// enclave-http's error; its rustls error says what the verifier refused.
        #[source]
        source: enclave_http::Error,
    },
    /// Any other failure of the HTTPS exchange (connection, deadline, truncated body).
    #[error("{what}: registry {host}: {source}")]
    Http {
        /// The registry host.
        host: String,
        /// What was being fetched.
        what: String,
        /// enclave-http's error.
        #[source]
        source: enclave_http::Error,
    },
    /// The registry wants credentials and has none, or refused the ones configured.
    #[error("{what}: registry {host} refused access: {reason}")]
    Unauthorized {
        /// The registry host.
        host: String,
        /// What was being fetched.
        what: String,
        /// Why (no credentials configured, credentials refused, token refused...).
        reason: String,
    },
    /// The registry has no such manifest or blob.
    #[error("{what}: not found in registry {host}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    NotFound {
        /// The registry host.
        host: String,
        /// What was asked for.
        what: String,
        /// The registry's own message, when it sent one.
        detail: Option<String>,
    },
    /// The registry answered with a status this client does not expect.
    #[error("{what}: registry {host} answered {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        /// The registry host.
        host: String,
        /// What was asked for.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's own message, when it sent one.
        detail: Option<String>,
    },
    /// The registry redirected somewhere this client does not follow.
    #[error("{what}: registry {host} redirected to {location}, which is refused: {reason}")]
    Redirect {
        /// The registry host.
        host: String,
        /// What was asked for.
        what: String,
        /// Where it pointed.
        location: String,
        /// Why it is refused.
        reason: String,
    },
    /// Content whose sha256 is not the digest it was asked for by.
    #[error("{what}: digest mismatch: expected {expected}, the content hashes to {actual}")]
    DigestMismatch {
        /// Which document or layer, of which image.
        what: String,
        /// The digest it was asked for by.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content whose length is not the size its descriptor declares.
    #[error("{what}: size mismatch: its descriptor declares {expected} bytes, {actual}")]
    SizeMismatch {
        /// Which document or layer, of which image.
        what: String,
        /// The declared size.
        expected: u64,
        /// What arrived, in words ("the registry sent 12 bytes", "more arrived").
        actual: String,
    },
    /// A media type this client does not read (yet).
    #[error("{what}: unsupported media type '{media_type}': {reason}")]
    UnsupportedMediaType {
        /// Which document or layer.
        what: String,
        /// Its media type.
        media_type: String,
        /// Why it is refused.
        reason: String,
    },
    /// An index with no linux/amd64 image.
    #[error("{what}: no linux/amd64 image in the index; it lists: {found}")]
    PlatformMissing {
        /// The index.
        what: String,
        /// The platforms it does list.
        found: String,
    },
    /// A configuration for another platform, or one inconsistent with its manifest.
    #[error("{what}: {reason}")]
    Inconsistent {
        /// Which document.
        what: String,
        /// What does not hold.
        reason: String,
    },
    /// A document that is not the JSON it should be.
    #[error("{what}: malformed: {reason}")]
    Malformed {
        /// Which document.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// A manifest, index or configuration over the size this client reads.
    #[error("{what}: larger than the {limit}-byte limit for manifests and configurations")]
    TooLarge {
        /// Which document.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A layer whose compressed stream does not decompress.
    #[error("{what}: cannot decompress: {reason}")]
    Decompress {
        /// Which layer.
        what: String,
        /// The decompressor's reason.
        reason: String,
    },
    /// A file of a local image layout could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}
