//! Intel DCAP quotes: versions 3 (SGX), 4 and 5 (TDX 1.0 and 1.5 bodies).
//!
//! Layouts follow Intel's "SGX ECDSA Quote Library API" (v3) and "TDX DCAP Quoting Library API"
//! (v4, v5). All integers are little-endian.

use serde::Serialize;

use crate::error::DecodeError;
use crate::reader::{Reader, check_padding};

/// Intel's QE vendor ID, which every quote from Intel's quoting enclaves carries.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

/// `tee_type` of an SGX quote.
pub const TEE_TYPE_SGX: u32 = 0x0000_0000;
/// `tee_type` of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x0000_0081;
/// Attestation key type ECDSA-256 with P-256, the only one Intel's QEs produce.
pub const ATTESTATION_KEY_ECDSA_P256: u16 = 2;

const HEADER_LEN: usize = 48;
/// Size of an SGX enclave report (also the QE report).
pub const SGX_REPORT_LEN: usize = 384;
const TD10_LEN: usize = 584;
const TD15_LEN: usize = 648;

/// Certification data type 5: the PCK certificate chain in PEM.
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Certification data type 6: QE report certification data (v4 and v5).
pub const CERT_DATA_QE_REPORT: u16 = 6;

/// The 48-byte quote header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// Quote format version: 3, 4 or 5.
    pub version: u16,
    /// Attestation key type (2 = ECDSA P-256).
    pub attestation_key_type: u16,
    /// TEE type (0 = SGX, 0x81 = TDX); reserved and zero in v3 quotes.
    pub tee_type: u32,
    /// QE SVN (v3); reserved in v4/v5.
    pub qe_svn: u16,
    /// PCE SVN (v3); reserved in v4/v5.
    pub pce_svn: u16,
    /// QE vendor ID.
    #[serde(with = "hex::serde")]
    pub qe_vendor_id: [u8; 16],
    /// Custom user data; for Intel's QE the first 16 bytes are the platform's QE ID.
    #[serde(with = "hex::serde")]
    pub user_data: [u8; 20],
}

/// An SGX enclave report (the ISV enclave's in a v3 quote, and the QE's in every quote).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgxReport {
    /// CPUSVN of the platform.
    #[serde(with = "hex::serde")]
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// ISV extended product ID (KSS).
    #[serde(with = "hex::serde")]
    pub isv_ext_prod_id: [u8; 16],
    /// ATTRIBUTES (flags then XFRM). Bit 1 of the flags is DEBUG.
    #[serde(with = "hex::serde")]
    pub attributes: [u8; 16],
    /// MRENCLAVE: the enclave's measurement.
    #[serde(with = "hex::serde")]
    pub mr_enclave: [u8; 32],
    /// MRSIGNER: hash of the enclave signer's public key.
    #[serde(with = "hex::serde")]
    pub mr_signer: [u8; 32],
    /// CONFIGID (KSS).
    #[serde(with = "hex::serde")]
    pub config_id: [u8; 64],
    /// ISV product ID.
    pub isv_prod_id: u16,
    /// ISV security version.
    pub isv_svn: u16,
    /// CONFIGSVN (KSS).
    pub config_svn: u16,
    /// ISV family ID (KSS).
    #[serde(with = "hex::serde")]
    pub isv_family_id: [u8; 16],
    /// REPORTDATA: 64 bytes chosen by the enclave.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
}

impl SgxReport {
    /// Whether the DEBUG attribute is set.
    pub fn debug(&self) -> bool {
        self.attributes[0] & 0x02 != 0
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let cpu_svn = r.array("cpu_svn")?;
        let misc_select = r.u32("misc_select")?;
        r.bytes("reserved1", 12)?;
        let isv_ext_prod_id = r.array("isv_ext_prod_id")?;
        let attributes = r.array("attributes")?;
        let mr_enclave = r.array("mr_enclave")?;
        r.bytes("reserved2", 32)?;
        let mr_signer = r.array("mr_signer")?;
        r.bytes("reserved3", 32)?;
        let config_id = r.array("config_id")?;
        let isv_prod_id = r.u16("isv_prod_id")?;
        let isv_svn = r.u16("isv_svn")?;
        let config_svn = r.u16("config_svn")?;
        r.bytes("reserved4", 42)?;
        let isv_family_id = r.array("isv_family_id")?;
        let report_data = r.array("report_data")?;
        Ok(Self {
            cpu_svn,
            misc_select,
            isv_ext_prod_id,
            attributes,
            mr_enclave,
            mr_signer,
            config_id,
            isv_prod_id,
            isv_svn,
            config_svn,
            isv_family_id,
            report_data,
        })
    }
}

/// A TD report body: TDX 1.0 fields, plus the TDX 1.5 additions when present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdReport {
    /// TEE_TCB_SVN: the TDX module's TCB SVNs.
    #[serde(with = "hex::serde")]
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module.
    #[serde(with = "hex::serde")]
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM: signer of the TDX module (zero for Intel's).
    #[serde(with = "hex::serde")]
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES.
    #[serde(with = "hex::serde")]
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES. Bit 0 is DEBUG.
    #[serde(with = "hex::serde")]
    pub td_attributes: [u8; 8],
    /// XFAM.
    #[serde(with = "hex::serde")]
    pub xfam: [u8; 8],
    /// MRTD: measurement of the initial TD contents.
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
    /// RTMR0 to RTMR3.
    #[serde(serialize_with = "serialize_rtmrs")]
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA: 64 bytes chosen by the TD.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// TDX 1.5 only: TEE_TCB_SVN2 (the current TCB after a module update).
    #[serde(serialize_with = "serialize_opt_hex")]
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TDX 1.5 only: MRSERVICETD.
    #[serde(serialize_with = "serialize_opt_hex")]
    pub mr_service_td: Option<[u8; 48]>,
}

fn serialize_rtmrs<S: serde::Serializer>(v: &[[u8; 48]; 4], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(4))?;
    for r in v {
        seq.serialize_element(&hex::encode(r))?;
    }
    seq.end()
}

pub(crate) fn serialize_opt_hex<S: serde::Serializer, T: AsRef<[u8]>>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_some(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl TdReport {
    /// Whether the TD's DEBUG attribute is set.
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 0x01 != 0
    }

    fn decode(r: &mut Reader<'_>, td15: bool) -> Result<Self, DecodeError> {
        let tee_tcb_svn = r.array("tee_tcb_svn")?;
        let mr_seam = r.array("mr_seam")?;
        let mr_signer_seam = r.array("mr_signer_seam")?;
        let seam_attributes = r.array("seam_attributes")?;
        let td_attributes = r.array("td_attributes")?;
        let xfam = r.array("xfam")?;
        let mr_td = r.array("mr_td")?;
        let mr_config_id = r.array("mr_config_id")?;
        let mr_owner = r.array("mr_owner")?;
        let mr_owner_config = r.array("mr_owner_config")?;
        let rtmr = [
            r.array("rtmr0")?,
            r.array("rtmr1")?,
            r.array("rtmr2")?,
            r.array("rtmr3")?,
        ];
        let report_data = r.array("report_data")?;
        let (tee_tcb_svn2, mr_service_td) = if td15 {
            (
                Some(r.array("tee_tcb_svn2")?),
                Some(r.array("mr_service_td")?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            tee_tcb_svn,
            mr_seam,
            mr_signer_seam,
            seam_attributes,
            td_attributes,
            xfam,
            mr_td,
            mr_config_id,
            mr_owner,
            mr_owner_config,
            rtmr,
            report_data,
            tee_tcb_svn2,
            mr_service_td,
        })
    }
}

/// The attested body of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    /// An SGX enclave report.
    Sgx(SgxReport),
    /// A TDX 1.0 TD report.
    Td10(TdReport),
    /// A TDX 1.5 TD report.
    Td15(TdReport),
}

impl Body {
    /// The 64 bytes of report data.
    pub fn report_data(&self) -> &[u8; 64] {
        match self {
            Body::Sgx(r) => &r.report_data,
            Body::Td10(r) | Body::Td15(r) => &r.report_data,
        }
    }
}

/// QE report certification data (certification data type 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QeReportCertification {
    /// The quoting enclave's report; its report_data binds the attestation key.
    pub qe_report: SgxReport,
    /// The raw 384 bytes of `qe_report`, as signed by the PCK key.
    #[serde(skip)]
    pub qe_report_raw: Vec<u8>,
    /// ECDSA P-256 signature (r || s) of the QE report by the PCK key.
    #[serde(with = "hex::serde")]
    pub qe_report_signature: [u8; 64],
    /// QE authentication data, hashed into the QE report's report_data.
    #[serde(with = "hex::serde")]
    pub qe_auth_data: Vec<u8>,
    /// The certification data that identifies the PCK key.
    pub certification: Certification,
}

/// Certification data: how the verifier finds the key that signed the QE report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Certification {
    /// Type 5: PCK leaf, intermediate CA and root CA certificates in PEM, leaf first.
    PckChain {
        /// The PEM text as carried by the quote (trailing NULs removed).
        pem: String,
    },
    /// Any other type (PPID forms, which need a PCCS to resolve): kept but not usable offline.
    Other {
        /// The certification data type.
        cert_type: u16,
        /// The raw data.
        #[serde(with = "hex::serde")]
        data: Vec<u8>,
    },
}

impl Certification {
    /// The PCK chain as DER certificates, leaf first.
    pub fn pck_chain_der(&self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let field = "quote.signature_data.certification_data.pck_chain";
        match self {
            Certification::PckChain { pem } => {
                let certs = crate::input::pem_certificate_chain(pem.as_bytes())
                    .map_err(|e| DecodeError::new(field, e))?;
                if certs.is_empty() {
                    return Err(DecodeError::new(field, "holds no PEM certificate"));
                }
                Ok(certs)
            }
            Certification::Other { cert_type, .. } => Err(DecodeError::new(
                "quote.signature_data.certification_data.type",
                format!(
                    "certification data type {cert_type} does not carry the PCK certificate chain \
                     (only type 5 can be verified offline)"
                ),
            )),
        }
    }
}

/// The ECDSA signature data that follows the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureData {
    /// ECDSA P-256 signature (r || s) over the header and body, by the attestation key.
    #[serde(with = "hex::serde")]
    pub quote_signature: [u8; 64],
    /// The attestation public key (x || y).
    #[serde(with = "hex::serde")]
    pub attestation_key: [u8; 64],
    /// The QE report and what certifies it.
    pub qe: QeReportCertification,
}

/// A decoded DCAP quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quote {
    /// The header.
    pub header: Header,
    /// The attested body.
    pub body: Body,
    /// The signature and certification data.
    pub signature: SignatureData,
    /// Length of the prefix covered by the quote signature (header, body descriptor and body).
    pub signed_len: usize,
    /// Zero bytes after the signature data (real TDX quotes carry such padding).
    pub trailing_padding: usize,
    /// Offset of the body's report_data in the raw quote.
    pub report_data_offset: usize,
}

impl Quote {
    /// Decode a quote. Every malformed input gives a [`DecodeError`] naming the field.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, "quote.header");
        let version = r.u16("version")?;
        if !(3..=5).contains(&version) {
            return Err(r.err(
                "version",
                format!("unsupported DCAP quote version {version} (3, 4 and 5 are supported)"),
            ));
        }
        let attestation_key_type = r.u16("attestation_key_type")?;
        if attestation_key_type != ATTESTATION_KEY_ECDSA_P256 {
            return Err(r.err(
                "attestation_key_type",
                format!(
                    "unsupported attestation key type {attestation_key_type} \
                     (only 2, ECDSA-256 with P-256, is defined for Intel's quoting enclaves)"
                ),
            ));
        }
        let tee_type = r.u32("tee_type")?;
        let qe_svn = r.u16("qe_svn")?;
        let pce_svn = r.u16("pce_svn")?;
        let qe_vendor_id = r.array("qe_vendor_id")?;
        let user_data = r.array("user_data")?;
        let header = Header {
            version,
            attestation_key_type,
            tee_type,
            qe_svn,
            pce_svn,
            qe_vendor_id,
            user_data,
        };
        debug_assert_eq!(r.position(), HEADER_LEN);

        let mut r = Reader::new(bytes, "quote.body");
        r.bytes("header", HEADER_LEN)?;
        let body = match (version, tee_type) {
            (3, TEE_TYPE_SGX) => Body::Sgx(SgxReport::decode(&mut r)?),
            (3, other) => {
                return Err(DecodeError::new(
                    "quote.header.tee_type",
                    format!("a v3 quote must be SGX (tee_type 0), found {other:#x}"),
                ));
            }
            (4, TEE_TYPE_TDX) => Body::Td10(TdReport::decode(&mut r, false)?),
            (4, TEE_TYPE_SGX) => Body::Sgx(SgxReport::decode(&mut r)?),
            (5, TEE_TYPE_SGX | TEE_TYPE_TDX) => {
                let body_type = r.u16("body_type")?;
                let body_size = r.u32("body_size")? as usize;
                let (expected, td15) = match body_type {
                    1 => (SGX_REPORT_LEN, false),
                    2 => (TD10_LEN, false),
                    3 => (TD15_LEN, true),
                    other => {
                        return Err(r.err(
                            "body_type",
                            format!(
                                "unknown v5 body type {other} (1 = SGX, 2 = TD 1.0, 3 = TD 1.5)"
                            ),
                        ));
                    }
                };
                if body_size != expected {
                    return Err(r.err(
                        "body_size",
                        format!(
                            "body type {body_type} is {expected} bytes, header says {body_size}"
                        ),
                    ));
                }
                match (body_type, tee_type) {
                    (1, TEE_TYPE_SGX) => Body::Sgx(SgxReport::decode(&mut r)?),
                    (2 | 3, TEE_TYPE_TDX) => {
                        let td = TdReport::decode(&mut r, td15)?;
                        if td15 { Body::Td15(td) } else { Body::Td10(td) }
                    }
                    _ => {
                        return Err(r.err(
                            "body_type",
                            format!("body type {body_type} does not match tee_type {tee_type:#x}"),
                        ));
                    }
                }
            }
            (_, other) => {
                return Err(DecodeError::new(
                    "quote.header.tee_type",
                    format!("unknown TEE type {other:#x} (0 = SGX, 0x81 = TDX)"),
                ));
            }
        };
        let signed_len = r.position();
        let report_data_offset = signed_len
            - match &body {
                Body::Sgx(_) => SGX_REPORT_LEN - 320,
                Body::Td10(_) => TD10_LEN - 520,
                Body::Td15(_) => TD15_LEN - 520,
            };

        let mut r = Reader::new(bytes, "quote.signature_data");
        r.bytes("signed_part", signed_len)?;
        let sig_len = r.u32("length")? as usize;
        let sig_start = r.position();
        let mut s = r.sub("length", sig_len, "quote.signature_data")?;
        let quote_signature = s.array("quote_signature")?;
        let attestation_key = s.array("attestation_key")?;
        let qe = if version == 3 {
            // v3 places the QE report certification data inline, without a type/size wrapper.
            decode_qe_certification(&mut s)?
        } else {
            let cert_type = s.u16("certification_data.type")?;
            if cert_type != CERT_DATA_QE_REPORT {
                return Err(s.err(
                    "certification_data.type",
                    format!(
                        "expected type 6 (QE report certification data) in a v{version} quote, \
                         found {cert_type}"
                    ),
                ));
            }
            let size = s.u32("certification_data.size")? as usize;
            let mut inner = s.sub(
                "certification_data.size",
                size,
                "quote.signature_data.certification_data",
            )?;
            let qe = decode_qe_certification(&mut inner)?;
            if inner.remaining() != 0 {
                return Err(inner.err(
                    "size",
                    format!(
                        "{} bytes left over after the QE report certification data",
                        inner.remaining()
                    ),
                ));
            }
            qe
        };
        if s.remaining() != 0 {
            return Err(s.err(
                "length",
                format!(
                    "signature data length {sig_len} leaves {} unparsed bytes",
                    s.remaining()
                ),
            ));
        }
        let end = sig_start + sig_len;
        let trailing_padding = check_padding("quote.trailing_bytes", &bytes[end..], end)?;
        Ok(Self {
            header,
            body,
            signature: SignatureData {
                quote_signature,
                attestation_key,
                qe,
            },
            signed_len,
            trailing_padding,
            report_data_offset,
        })
    }

    /// Whether this is an SGX or a TDX quote.
    pub fn is_tdx(&self) -> bool {
        matches!(self.body, Body::Td10(_) | Body::Td15(_))
    }
}

fn decode_qe_certification(r: &mut Reader<'_>) -> Result<QeReportCertification, DecodeError> {
    let qe_report_raw = r.bytes("qe_report", SGX_REPORT_LEN)?.to_vec();
    let qe_report = SgxReport::decode(&mut Reader::new(&qe_report_raw, "quote.qe_report"))?;
    let qe_report_signature = r.array("qe_report_signature")?;
    let auth_len = r.u16("qe_auth_data.size")? as usize;
    let qe_auth_data = r.bytes("qe_auth_data", auth_len)?.to_vec();
    let cert_type = r.u16("pck_certification_data.type")?;
    let size = r.u32("pck_certification_data.size")? as usize;
    let data = r.bytes("pck_certification_data", size)?;
    let certification = if cert_type == CERT_DATA_PCK_CHAIN {
        // Quote generators end the PEM with NULs; the PEM itself is ASCII. Nothing but NULs may
        // follow: dcap-qvl reads past the first NUL, and must not see what this parser does not.
        let text = data.split(|b| *b == 0).next().unwrap_or_default();
        check_padding(
            &r.field("pck_certification_data"),
            &data[text.len()..],
            r.position() - size + text.len(),
        )?;
        let pem = std::str::from_utf8(text)
            .map_err(|_| r.err("pck_certification_data", "PCK chain is not ASCII PEM text"))?;
        Certification::PckChain {
            pem: pem.to_string(),
        }
    } else {
        Certification::Other {
            cert_type,
            data: data.to_vec(),
        }
    };
    Ok(QeReportCertification {
        qe_report,
        qe_report_raw,
        qe_report_signature,
        qe_auth_data,
        certification,
    })
}
