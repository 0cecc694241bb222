//! The vault's cryptography and its Trustee KBS protocol state.
//!
//! What it is for: everything the runtime's vault needs that is pure computation over bytes.
//! - [`jose`]: public JWKs, RFC 7638 thumbprints, and flattened JWE (`ECDH-ES+A256KW` or
//!   `RSA-OAEP-256`, content `A256GCM`) to a KBS `tee-pubkey`, and its decryption; JSON
//!   (flattened or general) JWE decryption as ocicrypt writes it, including `RSA-OAEP`
//!   (SHA-1, decrypt only); public keys from SPKI PEM or JWK.
//! - [`keys`]: keys generated inside the TEE (EC P-256/P-384, RSA 2048/3072/4096, AES-256),
//!   their sealed encoding, public halves, and private JWKs for release.
//! - [`kbs`]: the RCAR session table (`/auth`, `/attest`, `/resource`), the report-data binding
//!   exactly as Trustee's verifier computes it, resource paths, and Trustee's RFC 7807 errors.
//! - [`token`]: the EAR-shaped attestation JWT, its ES256 signing key and JWKS.
//!
//! What it is not: no HTTP (the runtime routes and sets headers from what this returns), no
//! evidence verification (the runtime checks quotes against `PendingAttestation`'s expected
//! report data), no storage (the runtime seals `to_sealed_bytes()` into its store), no policy
//! (the runtime decides who gets what, then calls `encrypt_resource`).
//!
//! Crypto providers. ring is the provider: AES-GCM, SHA-2, ECDSA signing, randomness and the
//! ephemeral ECDH of JWE encryption. ring lacks four things, taken from RustCrypto and nothing
//! else: `rsa` (RSA-OAEP-256 encryption/decryption and RSA key generation), `p256`/`p384` with
//! `ecdh` (static-key ECDH, to decrypt a JWE with a stored key, and EC private keys that can be
//! exported as JWK), `aes-kw` (RFC 3394 A256KW), and `sha1` for OAEP's hash in ocicrypt's `RSA-OAEP` (never
//! produced). `rand_core`'s `OsRng` feeds RSA only.
//! `rsa` is not constant time (RUSTSEC-2023-0071, the Marvin attack): its private-key operation
//! here (decrypting an `RSA-OAEP-256` JWE with a vault RSA key) is blinded, and EC keys are the
//! ones to use where an attacker can submit many ciphertexts.
//! `kbs-types` (default features off) gives the wire types Trustee and guest-components use.

pub mod jose;
pub mod kbs;
pub mod keys;
pub mod token;

pub use jose::{JoseError, PublicJwk, RecipientKey};
pub use kbs::{
    Appraisal, AttestedSession, KbsConfig, KbsError, KbsState, PendingAttestation, ResourcePath,
};
pub use keys::{KeyKind, VaultKey};
pub use token::{TokenKey, TrustTier, TrustVector};
