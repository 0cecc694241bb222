//! Why an encrypted layer or component could not be read, made or opened.

use enclave_oci::Digest;

/// Each variant names the layer, component or file (`what`) and the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImgcryptError {
    /// A scheme, cipher or wrap type this crate does not implement, by name.
    #[error(
        "{what}: {scheme} is not supported (supported: JWE and the attestation-agent key provider, AES_256_CTR_HMAC_SHA256 layers)"
    )]
    Unsupported {
        /// the layer or input
        what: String,
        /// the scheme(s): "PGP", "PKCS#7", "PKCS#11", "key provider '<x>'"...
        scheme: String,
    },
    /// An encrypted layer without any wrapped key, or nothing to encrypt to.
    #[error(
        "{what}: no wrapped key (no org.opencontainers.image.enc.keys.* annotation) or no recipient"
    )]
    NoKey {
        /// the layer
        what: String,
    },
    /// The key given does not open the wrapped key.
    #[error("{what}: the key given does not open it: {reason}")]
    WrongKey {
        /// the layer or component
        what: String,
        /// why
        reason: String,
    },
    /// The HMAC over the ciphertext does not match.
    #[error("{what}: refused, {reason}")]
    Tampered {
        /// the layer
        what: String,
        /// why
        reason: String,
    },
    /// The decrypted content does not hash to the digest its key names.
    #[error("{what}: the decrypted content is {actual}, its key says {expected}")]
    Digest {
        /// the layer
        what: String,
        /// what the private options (or the manifest) say
        expected: Digest,
        /// what the bytes hash to
        actual: Digest,
    },
    /// A document, annotation or field that does not parse or has the wrong size.
    #[error("{what}: {reason}")]
    Malformed {
        /// the layer, annotation or file
        what: String,
        /// why
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// the path
        what: String,
        /// the error
        source: std::io::Error,
    },
    /// A JOSE failure that is neither a wrong key nor a malformed JWE (an unsupported algorithm
    /// or content encryption, an unusable public key).
    #[error("{what}: {source}")]
    Jose {
        /// the layer, component or key
        what: String,
        /// the error
        source: enclave_vault::JoseError,
    },
}
