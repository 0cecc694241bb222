//! The HCL report, as read from the vTPM NV index 0x01400001 of an Azure CVM.
//!
//! Layout (little-endian): a 32-byte header (`HCLA` magic, version, size, request type, status),
//! the 1184-byte hardware report area at 0x20 (an SEV-SNP report, or a TDX TDREPORT in its first
//! 1024 bytes), the IGVM request data header at 0x4C0, and the variable data (the runtime claims
//! JSON) at 0x4D4. The hardware report's report_data begins with a hash of the variable data,
//! which is what binds the claims (and the vTPM keys they carry) to the hardware.

use serde::Serialize;

use crate::amd::report::SnpReport;
use crate::error::DecodeError;
use crate::reader::{Reader, check_padding};

const MAGIC: &[u8; 4] = b"HCLA";
const HW_REPORT_OFFSET: usize = 0x20;
const HW_REPORT_LEN: usize = 1184;
const TDREPORT_LEN: usize = 1024;

/// Report type in the IGVM request data.
const REPORT_TYPE_SNP: u32 = 2;
const REPORT_TYPE_TDX: u32 = 4;

/// A TDX TDREPORT (TDG.MR.REPORT output). It is MAC'd for the local CPU, not signed: a remote
/// verifier needs the TD quote made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdReport {
    /// REPORTTYPE.
    #[serde(with = "hex::serde")]
    pub report_type: [u8; 4],
    /// CPUSVN.
    #[serde(with = "hex::serde")]
    pub cpu_svn: [u8; 16],
    /// REPORTDATA.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN.
    #[serde(with = "hex::serde")]
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    #[serde(with = "hex::serde")]
    pub mr_seam: [u8; 48],
    /// TDATTRIBUTES.
    #[serde(with = "hex::serde")]
    pub td_attributes: [u8; 8],
    /// XFAM.
    #[serde(with = "hex::serde")]
    pub xfam: [u8; 8],
    /// MRTD.
    #[serde(with = "hex::serde")]
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    #[serde(with = "hex::serde")]
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    #[serde(with = "hex::serde")]
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    #[serde(with = "hex::serde")]
    pub mr_owner_config: [u8; 48],
    /// RTMR0..3, hex.
    pub rtmr: [String; 4],
}

impl TdReport {
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "hcl_report.td_report");
        let report_type = r.array("report_type")?;
        if report_type[0] != 0x81 {
            return Err(r.err(
                "report_type",
                format!("type {:#x} is not a TDX report (0x81)", report_type[0]),
            ));
        }
        r.bytes("reserved1", 12)?;
        let cpu_svn = r.array("cpu_svn")?;
        r.bytes("tee_tcb_info_hash", 48)?;
        r.bytes("tee_info_hash", 48)?;
        let report_data = r.array("report_data")?;
        r.bytes("reserved2", 32)?;
        r.bytes("mac", 32)?;
        r.bytes("tee_tcb_info.valid", 8)?;
        let tee_tcb_svn = r.array("tee_tcb_info.tee_tcb_svn")?;
        let mr_seam = r.array("tee_tcb_info.mr_seam")?;
        r.bytes("tee_tcb_info.rest", 256 - 8 - 16 - 48)?;
        let td_attributes = r.array("td_info.attributes")?;
        let xfam = r.array("td_info.xfam")?;
        let mr_td = r.array("td_info.mr_td")?;
        let mr_config_id = r.array("td_info.mr_config_id")?;
        let mr_owner = r.array("td_info.mr_owner")?;
        let mr_owner_config = r.array("td_info.mr_owner_config")?;
        let mut rtmr: [String; 4] = Default::default();
        for (i, slot) in rtmr.iter_mut().enumerate() {
            *slot = hex::encode(r.bytes(&format!("td_info.rtmr{i}"), 48)?);
        }
        Ok(Self {
            report_type,
            cpu_svn,
            report_data,
            tee_tcb_svn,
            mr_seam,
            td_attributes,
            xfam,
            mr_td,
            mr_config_id,
            mr_owner,
            mr_owner_config,
            rtmr,
        })
    }
}

/// The hardware report inside an HCL report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HwReport {
    /// An SEV-SNP attestation report.
    Snp(Box<SnpReport>),
    /// A TDX TDREPORT.
    Tdx(Box<TdReport>),
}

/// The hash algorithm that binds the variable data into the hardware report's report_data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashType {
    /// SHA-256 (the first 32 bytes of report_data).
    Sha256,
    /// SHA-384 (the first 48 bytes).
    Sha384,
    /// SHA-512 (all 64 bytes).
    Sha512,
}

/// A decoded HCL report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HclReport {
    /// Header version.
    pub version: u32,
    /// Request type.
    pub request_type: u32,
    /// Status.
    pub status: u32,
    /// The hardware report.
    pub hw_report: HwReport,
    /// The raw hardware report area (1184 bytes), as signed for SNP.
    #[serde(skip)]
    pub hw_report_raw: Vec<u8>,
    /// How the variable data is hashed into report_data.
    pub hash_type: HashType,
    /// The variable data as it appears in the report.
    #[serde(skip)]
    pub var_data: Vec<u8>,
    /// The variable data parsed as JSON (the runtime claims).
    pub runtime_claims: serde_json::Value,
}

impl HclReport {
    /// Whether `bytes` starts like an HCL report.
    pub fn sniff(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Decode an HCL report.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "hcl_report");
        let magic: [u8; 4] = r.array("signature")?;
        if &magic != MAGIC {
            return Err(r.err("signature", "does not start with 'HCLA'"));
        }
        let version = r.u32("version")?;
        let _size = r.u32("report_size")?;
        let request_type = r.u32("request_type")?;
        let status = r.u32("status")?;
        r.bytes("reserved", 12)?;
        debug_assert_eq!(r.position(), HW_REPORT_OFFSET);
        let hw_report_raw = r.bytes("hw_report", HW_REPORT_LEN)?.to_vec();
        let data_size = r.u32("runtime_data.data_size")? as usize;
        let _data_version = r.u32("runtime_data.version")?;
        let report_type = r.u32("runtime_data.report_type")?;
        let hash_type = match r.u32("runtime_data.hash_type")? {
            1 => HashType::Sha256,
            2 => HashType::Sha384,
            3 => HashType::Sha512,
            other => {
                return Err(r.err(
                    "runtime_data.hash_type",
                    format!("unknown hash type {other} (1 SHA-256, 2 SHA-384, 3 SHA-512)"),
                ));
            }
        };
        let var_len = r.u32("runtime_data.variable_data_size")? as usize;
        if data_size < 20 + var_len {
            return Err(r.err(
                "runtime_data.data_size",
                format!(
                    "{data_size} is smaller than the header plus {var_len} bytes of variable data"
                ),
            ));
        }
        let var_data = r.bytes("runtime_data.variable_data", var_len)?.to_vec();
        let end = r.position();
        check_padding("hcl_report.trailing_bytes", r.rest(), end)?;
        let hw_report = match report_type {
            REPORT_TYPE_SNP => HwReport::Snp(Box::new(SnpReport::decode(&hw_report_raw)?)),
            REPORT_TYPE_TDX => {
                check_padding(
                    "hcl_report.hw_report.padding",
                    &hw_report_raw[TDREPORT_LEN..],
                    HW_REPORT_OFFSET + TDREPORT_LEN,
                )?;
                HwReport::Tdx(Box::new(TdReport::decode(&hw_report_raw[..TDREPORT_LEN])?))
            }
            other => {
                return Err(r.err(
                    "runtime_data.report_type",
                    format!("unknown report type {other} (2 SEV-SNP, 4 TDX)"),
                ));
            }
        };
        let runtime_claims = serde_json::from_slice(&var_data).map_err(|e| {
            DecodeError::new(
                "hcl_report.runtime_data.variable_data",
                format!("the runtime claims are not JSON: {e}"),
            )
        })?;
        Ok(Self {
            version,
            request_type,
            status,
            hw_report,
            hw_report_raw,
            hash_type,
            var_data,
            runtime_claims,
        })
    }

    /// The hardware report's report_data.
    pub fn report_data(&self) -> &[u8; 64] {
        match &self.hw_report {
            HwReport::Snp(r) => &r.report_data,
            HwReport::Tdx(r) => &r.report_data,
        }
    }

    /// Check that report_data begins with the hash of the variable data.
    pub fn check_binding(&self) -> Result<(), crate::error::VerifyError> {
        use ring::digest::{SHA256, SHA384, SHA512, digest};
        let (alg, name) = match self.hash_type {
            HashType::Sha256 => (&SHA256, "SHA-256"),
            HashType::Sha384 => (&SHA384, "SHA-384"),
            HashType::Sha512 => (&SHA512, "SHA-512"),
        };
        let d = digest(alg, &self.var_data);
        let rd = self.report_data();
        if rd[..d.as_ref().len()] != *d.as_ref() {
            return Err(crate::error::VerifyError::Binding(format!(
                "report_data does not begin with {name}(runtime claims): the claims were not \
                 produced with this hardware report"
            )));
        }
        Ok(())
    }
}

/// Check that a TD quote was made from this TDREPORT: every field the quote's body shares with it
/// must be equal. The quote is verified separately; this ties the HCL report's runtime claims to it.
pub fn check_quote_matches(
    td: &TdReport,
    quote: &crate::intel::Quote,
) -> Result<(), crate::error::VerifyError> {
    use crate::intel::quote::Body;
    let body = match &quote.body {
        Body::Td10(b) | Body::Td15(b) => b,
        Body::Sgx(_) => {
            return Err(crate::error::VerifyError::input(
                "quote",
                "an SGX quote cannot vouch for a TDX HCL report",
            ));
        }
    };
    let rtmr: Vec<String> = body.rtmr.iter().map(hex::encode).collect();
    let pairs: [(&str, bool); 10] = [
        ("report_data", body.report_data == td.report_data),
        ("MRTD", body.mr_td == td.mr_td),
        ("RTMRs", rtmr == td.rtmr),
        ("MRCONFIGID", body.mr_config_id == td.mr_config_id),
        ("MROWNER", body.mr_owner == td.mr_owner),
        ("MROWNERCONFIG", body.mr_owner_config == td.mr_owner_config),
        ("TDATTRIBUTES", body.td_attributes == td.td_attributes),
        ("XFAM", body.xfam == td.xfam),
        ("MRSEAM", body.mr_seam == td.mr_seam),
        ("TEE_TCB_SVN", body.tee_tcb_svn == td.tee_tcb_svn),
    ];
    match pairs.iter().find(|(_, same)| !same) {
        Some((field, _)) => Err(crate::error::VerifyError::Binding(format!(
            "the TD quote's {field} differs from the HCL report's TDREPORT: the quote was not made \
             from this report"
        ))),
        None => Ok(()),
    }
}
