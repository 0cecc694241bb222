//! Whom the witness roles trust, from the bytes the config tree commits.
//!
//! The operator root and a development simulation root are read once, when the configuration is
//! loaded (`store/witness-root`, `store/witness-trust-sim`, `witness/clients-root`,
//! `witness/trust-sim`); the verifiers are built from those bytes, never from a second read of
//! the files. The Intel collateral a simulation PKI directory keeps beside its root is read here:
//! it carries its own issuer chains, which must lead to the committed root.

use std::path::Path;

use enclave_evidence::intel::{Collateral, IntelVerifier};
use enclave_evidence::{Verifier, input};
use enclave_ratls::RatlsVerifier;

/// The first certificate (DER) of PEM or DER `bytes`; `what` names them in errors.
fn first_cert(bytes: &[u8], what: &str) -> Result<Vec<u8>, String> {
    input::certificates(bytes)
        .map_err(|e| format!("{what}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{what}: holds no certificate"))
}

/// A verifier for chains to `root`, accepting, in development, quotes signed under `sim_root`
/// (reported as simulated). `sim_dir` is where the simulation PKI lives, for its collateral.
/// `field` names the configuration section in errors.
pub(crate) fn committed(
    field: &str,
    root: Option<&[u8]>,
    sim_root: Option<&[u8]>,
    sim_dir: Option<&Path>,
) -> Result<RatlsVerifier, String> {
    let root =
        root.ok_or_else(|| format!("{field}: no root was read when the configuration was loaded"))?;
    let evidence = match sim_root {
        Some(sim) => Verifier::with_intel(IntelVerifier::with_root(
            first_cert(sim, &format!("{field}.trust_sim"))?,
            true,
        )),
        None => Verifier::default(),
    };
    let mut v = RatlsVerifier::new(evidence).with_operator_root(first_cert(root, field)?);
    let collateral = sim_dir
        .filter(|d| sim_root.is_some() && d.is_dir())
        .and_then(enclave_evidence::intel::simulation::collateral_path);
    if let Some(p) = collateral {
        let bytes = std::fs::read(&p).map_err(|e| format!("collateral {}: {e}", p.display()))?;
        v = v.with_collateral(
            Collateral::from_json(&bytes)
                .map_err(|e| format!("collateral {}: {e}", p.display()))?,
        );
    }
    Ok(v)
}
