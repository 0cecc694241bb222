//! The TEE abstraction of Enclave OS, and its backends.
//!
//! A [`Tee`] says which TEE this is, produces evidence for 64 bytes of report data (with what a
//! verifier needs beside it), reports this instance's measurement, and derives sealing keys under
//! a [`SealPolicy`]. Backends:
//!
//! - [`sim::SimTee`]: `sim-sgx` and `sim-tdx`, which emit real-format DCAP quotes signed by a local
//!   simulation PKI, for development and CI;
//! - [`hw`]: the hardware providers, written against the documented kernel and LibOS interfaces
//!   (configfs-tsm, `/dev/sev-guest`, Gramine's `/dev/attestation`). No TEE exists where this is
//!   developed and tested: they are tested against emulated trees at that OS boundary only.
//!
//! [`seal`] turns a sealing key into authenticated, versioned sealed blobs.
//!
//! What this crate is not: it does not verify evidence (that is `enclave-evidence`, which verifies
//! simulated evidence only when told to trust the simulation root), and it holds no TLS.

mod error;
mod fsutil;

pub mod bundle;
pub mod hw;
pub mod measure;
pub mod operator;
pub mod seal;
pub mod sim;

pub use bundle::Bundle;
pub use enclave_evidence::TeeKind;
pub use error::TeeError;
pub use seal::{SealError, SealPolicy, SealingKey};

/// A trusted execution environment.
pub trait Tee: Send + Sync + std::fmt::Debug {
    /// Which kind of TEE this is.
    fn kind(&self) -> TeeKind;

    /// Whether this is the simulator.
    fn simulated(&self) -> bool;

    /// The backend's name (`sim-sgx`, `tdx`, ...).
    fn name(&self) -> &'static str;

    /// Evidence binding `report_data`, with what a verifier needs beside it.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Bundle, TeeError>;

    /// This instance's measurement (MRENCLAVE, MRTD, or the SNP launch measurement).
    fn measurement(&self) -> Vec<u8>;

    /// A sealing key under `policy`. TEEs without one (TDX) say so.
    fn sealing_key(&self, policy: SealPolicy) -> Result<SealingKey, TeeError>;

    /// The security version of this code as the TEE attests it (SGX ISVSVN, as in this
    /// instance's quote), which a signer raises with each security fix. `None` where the
    /// backend reports none (TDX; SEV-SNP, whose guest SVN is the launcher's choice).
    fn security_version(&self) -> Option<u32> {
        None
    }
}
