//! The simulated TEE: `sim-sgx` and `sim-tdx`.
//!
//! Not toy evidence: quotes in Intel's DCAP v3 and v4 layouts, collateral in Intel's formats, all
//! signed by a [`SimPki`] created on first use, so that the verifier's every check (dcap-qvl under
//! the simulation root) runs exactly as on hardware. Only the trust anchor differs, and verifiers
//! accept it only when told to (`--trust-sim`), marking every appraisal `simulated`.
//!
//! The measurement is a hash of the running executable (SHA-256 as MRENCLAVE, SHA-384 as MRTD), so
//! a rebuilt binary is a new measurement, as on hardware. A sim-sgx enclave's ISVSVN is 0 unless
//! [`ISVSVN_ENV`] says otherwise.

mod collateral;
mod der;
pub mod pki;
mod quote;

use std::path::Path;

use enclave_evidence::intel::simulation;

pub use pki::SimPki;

use crate::bundle::Bundle;
use crate::error::TeeError;
use crate::measure;
use crate::seal::{SealPolicy, SealingKey};
use crate::{Tee, TeeKind};

/// Which TEE the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// SGX: DCAP v3 quotes, sealing keys like EGETKEY's.
    Sgx,
    /// TDX: DCAP v4 quotes; like TDX, no sealing key.
    Tdx,
}

/// MRSIGNER of every simulated enclave: the simulation's stand-in for a vendor's signing key.
const SIM_MRSIGNER_LABEL: &[u8] = b"Enclave OS simulated enclave signer v1";

/// The environment variable giving a simulated enclave's ISVSVN: the simulation's stand-in for the
/// security version an SGX signer writes into SIGSTRUCT. Unset, it is 0. Like everything in the
/// simulator it is the host's to choose; it exists so that downgrade checks can be exercised.
pub const ISVSVN_ENV: &str = "ENCLAVE_OS_SIM_ISVSVN";

fn isv_svn_from_env(dir: &Path) -> Result<u16, TeeError> {
    match std::env::var(ISVSVN_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Ok(v) => v.trim().parse().map_err(|_| TeeError::Sim {
            dir: dir.to_path_buf(),
            reason: format!("{ISVSVN_ENV}='{v}' is not an ISVSVN (0 to 65535)"),
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(TeeError::Sim {
            dir: dir.to_path_buf(),
            reason: format!("{ISVSVN_ENV} is not UTF-8"),
        }),
    }
}

/// A simulated TEE backed by a simulation directory.
#[derive(Debug)]
pub struct SimTee {
    flavour: Flavour,
    pki: SimPki,
    identity: quote::Identity,
}

impl std::fmt::Debug for quote::Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

impl SimTee {
    /// A simulated TEE measuring the running executable, with its PKI in `dir`.
    pub fn open(dir: &Path, flavour: Flavour) -> Result<Self, TeeError> {
        let exe = std::env::current_exe().map_err(|e| TeeError::io("/proc/self/exe", e))?;
        Self::with_executable(dir, flavour, &exe)
    }

    /// A simulated TEE whose measured code is `exe`.
    pub fn with_executable(dir: &Path, flavour: Flavour, exe: &Path) -> Result<Self, TeeError> {
        let pki = SimPki::open_or_create(dir)?;
        let (sha256, sha384) = measure::file_digests(exe)?;
        let mut mr_signer = [0u8; 32];
        mr_signer.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, SIM_MRSIGNER_LABEL).as_ref(),
        );
        Ok(Self {
            flavour,
            pki,
            identity: quote::Identity {
                sha256,
                sha384,
                mr_signer,
                isv_svn: isv_svn_from_env(dir)?,
            },
        })
    }

    /// The simulation PKI.
    pub fn pki(&self) -> &SimPki {
        &self.pki
    }

    fn err(&self, reason: String) -> TeeError {
        TeeError::Sim {
            dir: self.pki.dir().to_path_buf(),
            reason,
        }
    }

    /// Collateral for this flavour, reissued when less than a day of validity remains.
    fn collateral(&self) -> Result<String, TeeError> {
        let name = match self.flavour {
            Flavour::Sgx => simulation::COLLATERAL_SGX_FILE,
            Flavour::Tdx => simulation::COLLATERAL_TDX_FILE,
        };
        let path = self.pki.dir().join(name);
        if let Ok(existing) = std::fs::read_to_string(&path)
            && collateral::fresh(&existing)
        {
            return Ok(existing);
        }
        let fresh = collateral::issue(&self.pki, self.flavour).map_err(|e| self.err(e))?;
        crate::fsutil::write_atomic(&path, fresh.as_bytes(), 0o644)?;
        Ok(fresh)
    }
}

impl Tee for SimTee {
    fn kind(&self) -> TeeKind {
        match self.flavour {
            Flavour::Sgx => TeeKind::Sgx,
            Flavour::Tdx => TeeKind::Tdx,
        }
    }

    fn simulated(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        match self.flavour {
            Flavour::Sgx => "sim-sgx",
            Flavour::Tdx => "sim-tdx",
        }
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Bundle, TeeError> {
        let quote = quote::quote(&self.pki, self.flavour, &self.identity, report_data)
            .map_err(|e| self.err(e))?;
        Ok(Bundle {
            tee: self.kind(),
            simulated: true,
            evidence: quote,
            collateral: Some(self.collateral()?),
            certificates: Vec::new(),
            report_data: *report_data,
        })
    }

    fn measurement(&self) -> Vec<u8> {
        match self.flavour {
            Flavour::Sgx => self.identity.sha256.to_vec(),
            Flavour::Tdx => self.identity.sha384.to_vec(),
        }
    }

    fn security_version(&self) -> Option<u32> {
        match self.flavour {
            Flavour::Sgx => Some(u32::from(self.identity.isv_svn)),
            Flavour::Tdx => None,
        }
    }

    fn sealing_key(&self, policy: SealPolicy) -> Result<SealingKey, TeeError> {
        if self.flavour == Flavour::Tdx {
            return Err(TeeError::NoSealingKey(
                "TDX (and so sim-tdx) has no hardware sealing key: sealing there needs a key \
                 released by a vault to this attested TD, or supplied by the operator"
                    .into(),
            ));
        }
        // As SGX's EGETKEY: a key from the platform secret and the enclave's identity under the
        // chosen policy.
        let identity = match policy {
            SealPolicy::Measurement => self.identity.sha256.to_vec(),
            SealPolicy::Signer => self.identity.mr_signer.to_vec(),
        };
        let key = enclave_aead::hkdf_sha256(
            b"enclave-os/sim/sealing-key/v1",
            &self.pki.secret,
            &[policy.label().as_bytes(), identity.as_slice()],
        )
        .map_err(|e| self.err(e.to_string()))?;
        Ok(SealingKey::new(self.kind(), policy, identity, key))
    }
}
