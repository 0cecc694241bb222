//! Configuration that a client can check: the config Merkle tree.
//!
//! Every configuration input of an Enclave OS instance (CA certificate, egress CA bundle, each
//! workload's code hash and settings, attestation servers, policies, the runtime version) is a
//! named leaf of a binary Merkle tree. The root goes into the RA-TLS certificate, so a client
//! checks in its TLS handshake exactly how the instance is configured; the manifest (names and
//! leaf hashes) and inclusion proofs let it check one input without seeing the others.
//!
//! This crate holds `enclave.toml` (parsed and validated, errors naming file, line and field), the
//! files it names (read once, at load, so the bytes committed are the bytes used), the tree its
//! inputs make (JSON leaves in RFC 8785 form), the tree's proofs and its manifest. It knows
//! nothing of certificates or of running anything.

pub mod canonical;
pub mod container;
pub mod file;
pub mod ingress;
pub mod inputs;
pub mod merkle;
pub mod proxy;
pub mod runtime_spec;
pub mod service;
pub mod vault;

pub use file::{ConfigError, EnclaveConfig, LoadedConfig};
pub use merkle::{ConfigTree, InclusionProof, Leaf, Manifest, TreeError};
