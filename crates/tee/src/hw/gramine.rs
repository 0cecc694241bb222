//! Gramine's `/dev/attestation` pseudo-filesystem, for SGX enclaves run under Gramine
//! (Gramine documentation, "Attestation and Secret Provisioning").
//!
//! Evidence: write 64 bytes to `user_report_data`, read a DCAP quote from `quote`.
//! `attestation_type` says `dcap` when quotes are available. Sealing keys: `keys/_sgx_mrenclave`
//! and `keys/_sgx_mrsigner` read as 16-byte keys derived by EGETKEY for this enclave.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::bundle::Bundle;
use crate::error::TeeError;
use crate::seal::{SealPolicy, SealingKey};
use crate::{Tee, TeeKind};

/// Where Gramine mounts it.
pub const DEFAULT_ROOT: &str = "/dev/attestation";
const IFACE: &str = "gramine /dev/attestation";

/// An SGX enclave under Gramine.
#[derive(Debug)]
pub struct GramineTee {
    root: PathBuf,
    mr_enclave: Vec<u8>,
    mr_signer: Vec<u8>,
    isv_svn: u16,
}

impl GramineTee {
    /// Open `/dev/attestation` (or an emulation of it at `root`).
    pub fn open(root: &Path) -> Result<Self, TeeError> {
        let kind_path = root.join("attestation_type");
        let kind = std::fs::read_to_string(&kind_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TeeError::Unavailable(format!(
                "{}: not running under Gramine with SGX (no attestation_type)",
                root.display()
            )),
            _ => TeeError::io(&kind_path, e),
        })?;
        if kind.trim() != "dcap" {
            return Err(TeeError::Unavailable(format!(
                "{}: attestation type is '{}', Enclave OS needs 'dcap' (sgx.remote_attestation = \"dcap\" in the manifest)",
                root.display(),
                kind.trim()
            )));
        }
        let mut tee = Self {
            root: root.to_path_buf(),
            mr_enclave: Vec::new(),
            mr_signer: Vec::new(),
            isv_svn: 0,
        };
        let quote = tee.quote(&[0; 64])?;
        let q = enclave_evidence::intel::Quote::decode(&quote)
            .map_err(|e| TeeError::interface(IFACE, format!("quote: {e}")))?;
        match q.body {
            enclave_evidence::intel::quote::Body::Sgx(r) => {
                tee.mr_enclave = r.mr_enclave.to_vec();
                tee.mr_signer = r.mr_signer.to_vec();
                tee.isv_svn = r.isv_svn;
            }
            _ => {
                return Err(TeeError::interface(
                    IFACE,
                    "returned a TDX quote, not an SGX one",
                ));
            }
        }
        Ok(tee)
    }

    fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let urd = self.root.join("user_report_data");
        std::fs::write(&urd, report_data).map_err(|e| TeeError::io(&urd, e))?;
        let qp = self.root.join("quote");
        let quote = std::fs::read(&qp).map_err(|e| TeeError::io(&qp, e))?;
        super::check_binding(IFACE, &quote, report_data)?;
        Ok(quote)
    }
}

impl Tee for GramineTee {
    fn kind(&self) -> TeeKind {
        TeeKind::Sgx
    }

    fn simulated(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "sgx"
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Bundle, TeeError> {
        Ok(Bundle {
            tee: TeeKind::Sgx,
            simulated: false,
            evidence: self.quote(report_data)?,
            collateral: None,
            certificates: Vec::new(),
            report_data: *report_data,
        })
    }

    fn measurement(&self) -> Vec<u8> {
        self.mr_enclave.clone()
    }

    fn security_version(&self) -> Option<u32> {
        Some(u32::from(self.isv_svn))
    }

    fn sealing_key(&self, policy: SealPolicy) -> Result<SealingKey, TeeError> {
        let (file, identity) = match policy {
            SealPolicy::Measurement => ("_sgx_mrenclave", &self.mr_enclave),
            SealPolicy::Signer => ("_sgx_mrsigner", &self.mr_signer),
        };
        let path = self.root.join("keys").join(file);
        let raw = Zeroizing::new(std::fs::read(&path).map_err(|e| TeeError::io(&path, e))?);
        if raw.len() != 16 {
            return Err(TeeError::interface(
                IFACE,
                format!("keys/{file} is {} bytes, not 16", raw.len()),
            ));
        }
        // EGETKEY gives 128 bits; widen to the 256-bit key sealing uses, under our own label.
        let key = enclave_aead::hkdf_sha256(
            b"enclave-os/gramine/sealing-key/v1",
            &raw,
            &[policy.label().as_bytes()],
        )
        .map_err(|e| TeeError::interface(IFACE, e.to_string()))?;
        Ok(SealingKey::new(TeeKind::Sgx, policy, identity.clone(), key))
    }
}
