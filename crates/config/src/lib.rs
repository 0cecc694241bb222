//! Configuration that a client can check: the config Merkle tree.
//!
//! Every configuration input of an Enclave OS instance (CA certificate, egress CA bundle, each
//! workload's code hash and settings, attestation servers, policies, the runtime version) is a
//! named leaf of a binary Merkle tree. The root goes into the RA-TLS certificate, so a client
//! checks in its TLS handshake exactly how the instance is configured; the manifest (names and
//! leaf hashes) and inclusion proofs let it check one input without seeing the others.
//!
//! This crate holds the tree, its proofs and its manifest. It is not the `enclave.toml` parser
//! (which turns a configuration file into leaves) and knows nothing of certificates.

pub mod merkle;

pub use merkle::{ConfigTree, InclusionProof, Leaf, Manifest, TreeError};
