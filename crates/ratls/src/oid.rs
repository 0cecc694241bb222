//! Object identifiers of RA-TLS certificate extensions (see `docs/ratls.md`).

/// TCG DICE tagged evidence (conceptual message wrapper), read by Gramine and rats-tls verifiers.
pub const DICE_TAGGED_EVIDENCE: &str = "2.23.133.5.4.9";
/// An SGX DCAP quote, raw.
pub const SGX_QUOTE: &str = "1.2.840.113741.1.13.1.0";
/// A TDX DCAP quote, raw.
pub const TDX_QUOTE: &str = "1.2.840.113741.1.5.5.1.6";
/// An SEV-SNP report, raw (ours: the seed's arc has none).
pub const SNP_REPORT: &str = "1.3.6.1.4.1.65230.4.1";
/// The SEV-SNP report's VCEK or VLEK, ASK and ARK (DER, concatenated).
pub const SNP_CERTS: &str = "1.3.6.1.4.1.65230.4.2";
/// The config Merkle root.
pub const CONFIG_ROOT: &str = "1.3.6.1.4.1.65230.1.1";
/// Per-workload: the workload's own config root.
pub const WORKLOAD_CONFIG_ROOT: &str = "1.3.6.1.4.1.65230.3.1";
/// Per-workload: the code digest (SHA-256 of the bytes supplied) or image digest.
pub const WORKLOAD_CODE: &str = "1.3.6.1.4.1.65230.3.2";
/// Per-workload: the image reference (containers).
pub const WORKLOAD_IMAGE: &str = "1.3.6.1.4.1.65230.3.3";
/// Per-workload: where the workload's keys come from.
pub const WORKLOAD_KEY_SOURCE: &str = "1.3.6.1.4.1.65230.3.4";
/// Per-workload: the plaintext identity of what runs: a container's image configuration
/// digest (SHA-256 of the config blob), or an encrypted component's SHA-256 once decrypted.
pub const WORKLOAD_IMAGE_CONFIG: &str = "1.3.6.1.4.1.65230.3.7";
/// Per-workload, for encrypted code only: where its decryption key comes from (UTF-8, one
/// reference per line: `vault-key:<name>#<RFC 7638 thumbprint>` or a KBS resource URI). Never
/// the key.
pub const WORKLOAD_KEY_REFERENCE: &str = "1.3.6.1.4.1.65230.3.9";
/// Per-workload: SHA-256 of the OCI runtime spec a container was started with.
pub const WORKLOAD_RUNTIME_SPEC: &str = "1.3.6.1.4.1.65230.3.8";
/// Enclave-wide: the arc of module hashes (`.N` below it): 1 egress CA bundle, 4 container
/// engine versions, 5 combined workloads, 7 attestation servers.
pub const MODULE_ARC: &str = "1.3.6.1.4.1.65230.2";
/// Per-workload: the arc of extensions the workload declares itself (`.N` below it).
pub const WORKLOAD_DECLARED_ARC: &str = "1.3.6.1.4.1.65230.3.5";
