//! What a verifier trusts, from files: the operator's root, and for development a simulation
//! PKI. Shared by `enclave-os verify`, the witness and its clients, so they trust alike.
//!
//! Trusting a simulation root is the caller's choice, and available without the `issue`
//! feature: a verifier-only client can check simulated quotes without compiling the simulator
//! (the directory layout is `enclave_evidence::intel::simulation`'s).

use std::path::{Path, PathBuf};

use enclave_evidence::intel::{Collateral, IntelVerifier, simulation};
use enclave_evidence::{Verifier, input};

use crate::RatlsVerifier;

/// The first certificate (DER) in a PEM or DER file; `what` names it in errors.
pub fn first_cert(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    input::certificates(&bytes)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{what} {}: holds no certificate", path.display()))
}

/// Files naming what to trust.
#[derive(Debug, Clone, Default)]
pub struct TrustFiles {
    /// The operator's root (PEM or DER): chains must lead to it.
    pub root: Option<PathBuf>,
    /// Development only: a simulation PKI directory (or its root certificate) whose quotes are
    /// accepted, and reported as simulated.
    pub trust_sim: Option<PathBuf>,
    /// Intel collateral (JSON); beside a simulation PKI directory it is found on its own.
    pub collateral: Option<PathBuf>,
}

impl TrustFiles {
    /// The RA-TLS verifier these files describe.
    pub fn verifier(&self) -> Result<RatlsVerifier, String> {
        let mut evidence = Verifier::default();
        let mut collateral = self.collateral.clone();
        if let Some(p) = &self.trust_sim {
            let root = if p.is_dir() {
                simulation::root_path(p)
            } else {
                p.clone()
            };
            evidence = Verifier::with_intel(IntelVerifier::with_root(
                first_cert(&root, "simulation root")?,
                true,
            ));
            if collateral.is_none() && p.is_dir() {
                // The simulator keeps the collateral it issued beside its PKI.
                collateral = simulation::collateral_path(p);
            }
        }
        let mut v = RatlsVerifier::new(evidence);
        if let Some(p) = &self.root {
            v = v.with_operator_root(first_cert(p, "root")?);
        }
        if let Some(p) = &collateral {
            let bytes = std::fs::read(p).map_err(|e| format!("collateral {}: {e}", p.display()))?;
            v = v.with_collateral(
                Collateral::from_json(&bytes)
                    .map_err(|e| format!("collateral {}: {e}", p.display()))?,
            );
        }
        Ok(v)
    }
}
