//! What a successful verification establishes, in one shape for every TEE.

use serde::Serialize;

use crate::amd::report::{SigningKey, TcbParts};

/// The kind of TEE that produced the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TeeKind {
    /// Intel SGX enclave (DCAP quote).
    Sgx,
    /// Intel TDX trust domain (DCAP quote).
    Tdx,
    /// AMD SEV-SNP guest (attestation report).
    Snp,
    /// Azure confidential VM on SEV-SNP (HCL report).
    AzureSnp,
    /// Azure confidential VM on TDX (HCL report).
    AzureTdx,
}

impl TeeKind {
    /// The name used in JSON, policies and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::Sgx => "sgx",
            TeeKind::Tdx => "tdx",
            TeeKind::Snp => "snp",
            TeeKind::AzureSnp => "azure-snp",
            TeeKind::AzureTdx => "azure-tdx",
        }
    }
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The platform's TCB status as the vendor's collateral rates it.
///
/// `Revoked` never appears in a successful appraisal: revoked platforms are rejected outright.
/// `Unknown` means the status was not evaluated (no collateral, or a vendor that publishes none)
/// and is never promoted to `UpToDate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TcbStatus {
    /// The platform is patched to the latest TCB.
    UpToDate,
    /// Up to date, but software mitigations are required.
    SWHardeningNeeded,
    /// Up to date, but the platform's configuration needs changing.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// The platform's TCB is out of date.
    OutOfDate,
    /// Out of date, and configuration needs changing.
    OutOfDateConfigurationNeeded,
    /// TDX 1.5: the TD should be relaunched to pick up a module update.
    TDRelaunchAdvised,
    /// TDX 1.5: relaunch advised, and configuration needs changing.
    TDRelaunchAdvisedConfigurationNeeded,
    /// Not evaluated.
    Unknown,
}

impl TcbStatus {
    /// All statuses a successful appraisal can carry.
    pub const ALL: [TcbStatus; 9] = [
        TcbStatus::UpToDate,
        TcbStatus::SWHardeningNeeded,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::ConfigurationAndSWHardeningNeeded,
        TcbStatus::OutOfDate,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::TDRelaunchAdvised,
        TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
        TcbStatus::Unknown,
    ];

    /// Intel's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
            TcbStatus::Unknown => "Unknown",
        }
    }

    /// Parse Intel's name for a status.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Measurements of what runs, by TEE kind.
// Appraisals are made once per verification and not stored in bulk: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Measurements {
    /// An SGX enclave.
    Sgx(SgxMeasurements),
    /// A TDX trust domain.
    Tdx(TdxMeasurements),
    /// An SEV-SNP guest.
    Snp(SnpMeasurements),
}

/// SGX enclave identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgxMeasurements {
    /// MRENCLAVE.
    #[serde(with = "hex::serde")]
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    #[serde(with = "hex::serde")]
    pub mr_signer: [u8; 32],
    /// ISV product ID.
    pub isv_prod_id: u16,
    /// ISV SVN.
    pub isv_svn: u16,
    /// ATTRIBUTES.
    #[serde(with = "hex::serde")]
    pub attributes: [u8; 16],
}

/// TDX trust domain identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxMeasurements {
    /// MRTD.
    #[serde(with = "hex::serde")]
    pub mr_td: [u8; 48],
    /// RTMR0 to RTMR3.
    #[serde(serialize_with = "hex_list")]
    pub rtmr: [[u8; 48]; 4],
    /// MRCONFIGID.
    #[serde(with = "hex::serde")]
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    #[serde(with = "hex::serde")]
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    #[serde(with = "hex::serde")]
    pub mr_owner_config: [u8; 48],
    /// MRSEAM (the TDX module).
    #[serde(with = "hex::serde")]
    pub mr_seam: [u8; 48],
    /// TDATTRIBUTES.
    #[serde(with = "hex::serde")]
    pub td_attributes: [u8; 8],
    /// XFAM.
    #[serde(with = "hex::serde")]
    pub xfam: [u8; 8],
}

fn hex_list<S: serde::Serializer>(v: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}

/// SEV-SNP guest identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpMeasurements {
    /// Launch measurement.
    #[serde(with = "hex::serde")]
    pub measurement: [u8; 48],
    /// Host data.
    #[serde(with = "hex::serde")]
    pub host_data: [u8; 32],
    /// Guest policy.
    pub policy: u64,
    /// VMPL the report was requested at.
    pub vmpl: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// ID key digest.
    #[serde(with = "hex::serde")]
    pub id_key_digest: [u8; 48],
    /// Author key digest.
    #[serde(with = "hex::serde")]
    pub author_key_digest: [u8; 48],
    /// Family ID.
    #[serde(with = "hex::serde")]
    pub family_id: [u8; 16],
    /// Image ID.
    #[serde(with = "hex::serde")]
    pub image_id: [u8; 16],
    /// The TCB the signing key was derived for.
    pub reported_tcb: TcbParts,
}

impl Measurements {
    /// The primary measurement: MRENCLAVE, MRTD, or the SNP launch measurement.
    pub fn primary(&self) -> &[u8] {
        match self {
            Measurements::Sgx(m) => &m.mr_enclave,
            Measurements::Tdx(m) => &m.mr_td,
            Measurements::Snp(m) => &m.measurement,
        }
    }
}

/// Facts about the platform that signed the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Platform {
    /// An Intel platform identified by its PCK certificate.
    Intel {
        /// FMSPC.
        #[serde(with = "hex::serde")]
        fmspc: [u8; 6],
        /// PCE ID.
        #[serde(with = "hex::serde")]
        pce_id: Vec<u8>,
        /// TCB evaluation data number of the collateral (absent without collateral).
        tcb_evaluation_data_number: Option<u32>,
    },
    /// An AMD platform identified by its endorsement key.
    Amd {
        /// Product generation.
        product: crate::amd::Product,
        /// Which key signed.
        signing_key: SigningKey,
        /// Chip ID (zero when masked).
        #[serde(with = "hex::serde")]
        chip_id: [u8; 64],
    },
}

/// The result of a successful verification, before policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appraisal {
    /// The TEE kind.
    pub tee: TeeKind,
    /// True when the evidence was signed by a simulation root rather than a vendor's.
    pub simulated: bool,
    /// TCB status.
    pub status: TcbStatus,
    /// Security advisories that apply to the platform.
    pub advisory_ids: Vec<String>,
    /// Whether the TEE runs with debugging enabled (its memory is then readable by the host).
    pub debug: bool,
    /// Measurements of what runs.
    pub measurements: Measurements,
    /// The 64 bytes of report data.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// The signing platform.
    pub platform: Platform,
    /// The end of the window in which this appraisal holds (earliest expiry of the collateral and
    /// certificates), as unix seconds.
    pub valid_until: Option<u64>,
    /// Azure only: the runtime claims (var_data) as JSON.
    pub runtime_claims: Option<serde_json::Value>,
    /// Things a careful reader should know (checks that could not be made, and why).
    pub notes: Vec<String>,
}
