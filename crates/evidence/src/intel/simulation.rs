//! Where an Enclave OS simulation PKI directory keeps what a verifier trusts.
//!
//! `enclave-tee`'s simulator writes these files; verifiers (`enclave-ratls`'s trust files, the
//! CLI's `--trust-sim`) read them. The names live here, beside the verification of simulated
//! quotes, and not in `enclave-tee`: trusting a simulation root is a verifier's decision, and a
//! client that makes it must not have to compile the simulator that issues the quotes.

use std::path::{Path, PathBuf};

pub use super::verify::SIM_MARKER;

/// The simulation root certificate (PEM), the trust anchor `--trust-sim` names.
pub const ROOT_FILE: &str = "root.crt.pem";
/// The Intel-format collateral the simulator issues for `sim-sgx` quotes.
pub const COLLATERAL_SGX_FILE: &str = "collateral-sgx.json";
/// The Intel-format collateral the simulator issues for `sim-tdx` quotes.
pub const COLLATERAL_TDX_FILE: &str = "collateral-tdx.json";

/// The root certificate's path in simulation directory `dir`.
pub fn root_path(dir: &Path) -> PathBuf {
    dir.join(ROOT_FILE)
}

/// The collateral a simulation directory keeps beside its root, if any (TDX first: a directory
/// that served both flavours holds both, and either verifies under the same root).
pub fn collateral_path(dir: &Path) -> Option<PathBuf> {
    [COLLATERAL_TDX_FILE, COLLATERAL_SGX_FILE]
        .iter()
        .map(|n| dir.join(n))
        .find(|c| c.is_file())
}
