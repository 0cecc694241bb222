//! AMD SEV-SNP attestation reports, versions 2, 3 and 5.
//!
//! Layout from AMD's "SEV Secure Nested Paging Firmware ABI Specification" (56860), table
//! "ATTESTATION_REPORT Structure". Versions 3 and later add the CPUID family, model and stepping;
//! version 5 adds the launch and current mitigation vectors.

use serde::Serialize;

use crate::error::DecodeError;
use crate::reader::{Reader, check_padding};

/// Size of an attestation report.
pub const REPORT_LEN: usize = 0x4A0;
/// Length of the prefix covered by the report signature.
pub const SIGNED_LEN: usize = 0x2A0;

/// A TCB version: the security patch levels of each firmware component.
///
/// The byte layout differs between product generations (Turin adds the FMC and moves fields), so
/// the raw value is kept and decoded for a product on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RawTcb(pub u64);

/// The component SPLs of a TCB version, for a given product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TcbParts {
    /// FMC SPL (Turin and later only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// CPU microcode SPL.
    pub microcode: u8,
}

impl RawTcb {
    /// Split into component SPLs, using the layout of `turin_layout` products.
    pub fn parts(self, turin_layout: bool) -> TcbParts {
        let b = self.0.to_le_bytes();
        if turin_layout {
            TcbParts {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            TcbParts {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }
}

/// Which key signed the report (field SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// The Versioned Chip Endorsement Key.
    Vcek,
    /// The Versioned Loaded Endorsement Key (cloud provider).
    Vlek,
    /// No key: the report is unsigned.
    None,
}

/// A decoded SEV-SNP attestation report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpReport {
    /// Report format version (2, 3 or 5 here).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy. Bit 19 is DEBUG, bit 16 SMT, bit 17 reserved-must-be-one, bit 20 single
    /// socket.
    pub policy: u64,
    /// Family ID supplied at launch.
    #[serde(with = "hex::serde")]
    pub family_id: [u8; 16],
    /// Image ID supplied at launch.
    #[serde(with = "hex::serde")]
    pub image_id: [u8; 16],
    /// The VMPL the report was requested at.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub signature_algo: u32,
    /// Current TCB.
    pub current_tcb: RawTcb,
    /// Platform information flags (bit 0 SMT enabled, bit 1 TSME enabled, ...).
    pub platform_info: u64,
    /// Whether the author key digest is present.
    pub author_key_en: bool,
    /// Whether the chip ID is masked (zeroed) in this report.
    pub mask_chip_id: bool,
    /// Which key signed this report.
    pub signing_key: SigningKey,
    /// Report data supplied by the guest.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// Launch measurement.
    #[serde(with = "hex::serde")]
    pub measurement: [u8; 48],
    /// Host data supplied at launch.
    #[serde(with = "hex::serde")]
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key.
    #[serde(with = "hex::serde")]
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key.
    #[serde(with = "hex::serde")]
    pub author_key_digest: [u8; 48],
    /// Report ID of this guest.
    #[serde(with = "hex::serde")]
    pub report_id: [u8; 32],
    /// Report ID of the migration agent.
    #[serde(with = "hex::serde")]
    pub report_id_ma: [u8; 32],
    /// The TCB the VCEK was derived for.
    pub reported_tcb: RawTcb,
    /// CPUID family, model and stepping (version 3 and later).
    pub cpuid: Option<Cpuid>,
    /// Chip identifier (zero when masked).
    #[serde(with = "hex::serde")]
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: RawTcb,
    /// Current firmware version (major, minor, build).
    pub current_version: (u8, u8, u8),
    /// Committed firmware version (major, minor, build).
    pub committed_version: (u8, u8, u8),
    /// TCB at launch.
    pub launch_tcb: RawTcb,
    /// Mitigation vector at launch (version 5 and later).
    pub launch_mit_vector: Option<u64>,
    /// Current mitigation vector (version 5 and later).
    pub current_mit_vector: Option<u64>,
    /// Signature r component, little-endian, zero-extended to 72 bytes.
    #[serde(with = "hex::serde")]
    pub signature_r: [u8; 72],
    /// Signature s component, little-endian, zero-extended to 72 bytes.
    #[serde(with = "hex::serde")]
    pub signature_s: [u8; 72],
}

/// CPUID identification carried by version 3 and later reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cpuid {
    /// Combined family (base + extended).
    pub family: u8,
    /// Combined model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// Policy bit: debugging of the guest is allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;

impl SnpReport {
    /// Whether the guest policy allows debugging.
    pub fn debug(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }

    /// Decode a report. Trailing bytes beyond the report must be zero padding.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < REPORT_LEN {
            return Err(DecodeError::new(
                "snp_report",
                format!(
                    "{} bytes is shorter than an attestation report ({REPORT_LEN} bytes)",
                    bytes.len()
                ),
            ));
        }
        check_padding(
            "snp_report.trailing_bytes",
            &bytes[REPORT_LEN..],
            REPORT_LEN,
        )?;
        let mut r = Reader::new(&bytes[..REPORT_LEN], "snp_report");
        let version = r.u32("version")?;
        if !(2..=5).contains(&version) {
            return Err(r.err(
                "version",
                format!("unsupported report version {version} (2 to 5 are supported)"),
            ));
        }
        let guest_svn = r.u32("guest_svn")?;
        let policy = r.u64("policy")?;
        // Bit 17 of the policy is reserved and must be one on every firmware.
        if policy & (1 << 17) == 0 {
            return Err(r.err(
                "policy",
                format!("{policy:#x} has reserved bit 17 clear; firmware always sets it"),
            ));
        }
        let family_id = r.array("family_id")?;
        let image_id = r.array("image_id")?;
        // Not range-checked: host-requested reports carry 0xffffffff here. Policy appraises it.
        let vmpl = r.u32("vmpl")?;
        let signature_algo = r.u32("signature_algo")?;
        let current_tcb = RawTcb(r.u64("current_tcb")?);
        let platform_info = r.u64("platform_info")?;
        let flags = r.u32("flags")?;
        let signing_key = match (flags >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => {
                return Err(r.err(
                    "flags.signing_key",
                    format!("unknown signing key selector {other} (0 VCEK, 1 VLEK, 7 none)"),
                ));
            }
        };
        r.bytes("reserved0", 4)?;
        let report_data = r.array("report_data")?;
        let measurement = r.array("measurement")?;
        let host_data = r.array("host_data")?;
        let id_key_digest = r.array("id_key_digest")?;
        let author_key_digest = r.array("author_key_digest")?;
        let report_id = r.array("report_id")?;
        let report_id_ma = r.array("report_id_ma")?;
        let reported_tcb = RawTcb(r.u64("reported_tcb")?);
        let cpuid_raw: [u8; 3] = r.array("cpuid")?;
        let cpuid = (version >= 3).then_some(Cpuid {
            family: cpuid_raw[0],
            model: cpuid_raw[1],
            stepping: cpuid_raw[2],
        });
        r.bytes("reserved1", 21)?;
        let chip_id = r.array("chip_id")?;
        let committed_tcb = RawTcb(r.u64("committed_tcb")?);
        let cur: [u8; 4] = r.array("current_version")?;
        let com: [u8; 4] = r.array("committed_version")?;
        let launch_tcb = RawTcb(r.u64("launch_tcb")?);
        let lmv = r.u64("launch_mit_vector")?;
        let cmv = r.u64("current_mit_vector")?;
        let (launch_mit_vector, current_mit_vector) = if version >= 5 {
            (Some(lmv), Some(cmv))
        } else {
            (None, None)
        };
        r.bytes("reserved2", SIGNED_LEN - r.position())?;
        let signature_r = r.array("signature.r")?;
        let signature_s = r.array("signature.s")?;
        Ok(Self {
            version,
            guest_svn,
            policy,
            family_id,
            image_id,
            vmpl,
            signature_algo,
            current_tcb,
            platform_info,
            author_key_en: flags & 1 != 0,
            mask_chip_id: flags & 2 != 0,
            signing_key,
            report_data,
            measurement,
            host_data,
            id_key_digest,
            author_key_digest,
            report_id,
            report_id_ma,
            reported_tcb,
            cpuid,
            chip_id,
            committed_tcb,
            current_version: (cur[2], cur[1], cur[0]),
            committed_version: (com[2], com[1], com[0]),
            launch_tcb,
            launch_mit_vector,
            current_mit_vector,
            signature_r,
            signature_s,
        })
    }
}
