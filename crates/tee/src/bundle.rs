//! Evidence together with what a verifier needs beside it, and its on-disk form: the directory
//! that `enclave-os evidence collect` writes and `evidence verify` reads.
//!
//! ```text
//! bundle.json        {"format": "enclave-os-evidence/v1", "tee", "simulated", "report_data"}
//! evidence.bin       the quote or report, raw
//! collateral.json    Intel DCAP collateral (when the TEE supplies it)
//! certificates.pem   AMD VCEK/VLEK, ASK, ARK (when the TEE supplies them)
//! ```
//!
//! `bundle.json` is written last: a directory without it is incomplete. Nothing in it is trusted by
//! a verifier; the evidence speaks for itself.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TeeKind;
use crate::error::TeeError;
use crate::fsutil;

const FORMAT: &str = "enclave-os-evidence/v1";

/// Evidence and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The TEE that produced it.
    pub tee: TeeKind,
    /// Whether a simulated TEE produced it.
    pub simulated: bool,
    /// The quote or report.
    pub evidence: Vec<u8>,
    /// DCAP collateral (JSON), where the TEE supplies it.
    pub collateral: Option<String>,
    /// Certificates (DER) a verifier needs, leaf first.
    pub certificates: Vec<Vec<u8>>,
    /// The report data the evidence binds.
    pub report_data: [u8; 64],
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    tee: TeeKind,
    simulated: bool,
    report_data: String,
}

impl Bundle {
    /// Write the bundle into `dir` (created if missing).
    pub fn write_dir(&self, dir: &Path) -> Result<(), TeeError> {
        std::fs::create_dir_all(dir).map_err(|e| TeeError::io(dir, e))?;
        // A reused directory: mark it incomplete first, and leave no companion file of an earlier
        // bundle behind for a verifier to pick up with this evidence.
        for stale in ["bundle.json", "collateral.json", "certificates.pem"] {
            match std::fs::remove_file(dir.join(stale)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(TeeError::io(dir.join(stale), e));
                }
                _ => {}
            }
        }
        fsutil::write_atomic(&dir.join("evidence.bin"), &self.evidence, 0o644)?;
        if let Some(c) = &self.collateral {
            fsutil::write_atomic(&dir.join("collateral.json"), c.as_bytes(), 0o644)?;
        }
        if !self.certificates.is_empty() {
            let pem: String = self
                .certificates
                .iter()
                .map(|c| crate::sim::pki::pem("CERTIFICATE", c))
                .collect();
            fsutil::write_atomic(&dir.join("certificates.pem"), pem.as_bytes(), 0o644)?;
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            tee: self.tee,
            simulated: self.simulated,
            report_data: hex::encode(self.report_data),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| TeeError::interface("bundle", e.to_string()))?;
        fsutil::write_atomic(&dir.join("bundle.json"), &json, 0o644)
    }

    /// Whether `dir` holds a bundle.
    pub fn is_bundle_dir(dir: &Path) -> bool {
        dir.join("bundle.json").is_file()
    }

    /// Read a bundle from `dir`.
    pub fn read_dir(dir: &Path) -> Result<Self, TeeError> {
        let bad =
            |r: String| TeeError::interface("evidence bundle", format!("{}: {r}", dir.display()));
        let manifest: Manifest = serde_json::from_slice(&fsutil::read(&dir.join("bundle.json"))?)
            .map_err(|e| bad(format!("bundle.json: {e}")))?;
        if manifest.format != FORMAT {
            return Err(bad(format!(
                "unknown format '{}' (expected {FORMAT})",
                manifest.format
            )));
        }
        let report_data = hex::decode(&manifest.report_data)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| bad("bundle.json: report_data is not 64 bytes of hex".into()))?;
        let collateral = match std::fs::read_to_string(dir.join("collateral.json")) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(TeeError::io(dir.join("collateral.json"), e)),
        };
        let certificates = match std::fs::read(dir.join("certificates.pem")) {
            Ok(pem) => enclave_evidence::input::pem_certificates(&pem)
                .map_err(|e| bad(format!("certificates.pem: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TeeError::io(dir.join("certificates.pem"), e)),
        };
        Ok(Self {
            tee: manifest.tee,
            simulated: manifest.simulated,
            evidence: fsutil::read(&dir.join("evidence.bin"))?,
            collateral,
            certificates,
            report_data,
        })
    }
}
