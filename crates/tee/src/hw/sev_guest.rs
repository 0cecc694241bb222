//! `/dev/sev-guest`: the SEV-SNP guest driver's ioctls (Linux `include/uapi/linux/sev-guest.h`;
//! message layouts from AMD's SEV-SNP Firmware ABI, "MSG_REPORT_RSP" and "MSG_KEY_RSP").
//!
//! - `SNP_GET_REPORT`: an attestation report for 64 bytes of user data at a VMPL;
//! - `SNP_GET_EXT_REPORT`: the same, with the host's certificate table (VCEK, ASK, ARK); a buffer
//!   that is too small comes back with the needed length, and the request is repeated once;
//! - `SNP_GET_DERIVED_KEY`: a key derived by the firmware from the VCEK and the guest fields the
//!   caller selects: this is the SNP sealing key, served for the `measurement` policy only (the
//!   `signer` policy is refused, see [`SIGNER_REFUSED`]).
//!
//! The byte layouts and the length negotiation are ours and are tested against an emulated device.
//! The ioctl call itself ([`SevGuestDevice`]) can only run inside an SEV-SNP guest, and has not.

use std::fs::File;
use std::path::Path;

use zeroize::Zeroizing;

use crate::bundle::Bundle;
use crate::error::TeeError;
use crate::seal::{SealPolicy, SealingKey};
use crate::{Tee, TeeKind};

/// Where the driver's device lives.
pub const DEFAULT_DEVICE: &str = "/dev/sev-guest";
const IFACE: &str = "/dev/sev-guest";
const REPORT_REQ_LEN: usize = 96;
const REPORT_RESP_LEN: usize = 4000;
const KEY_REQ_LEN: usize = 32;
const KEY_RESP_LEN: usize = 64;
/// `exitinfo2` VMM error meaning "certificate buffer too small".
pub const VMM_ERR_INVALID_LEN: u32 = 1;

/// The three guest requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// SNP_GET_REPORT.
    Report,
    /// SNP_GET_DERIVED_KEY.
    DerivedKey,
    /// SNP_GET_EXT_REPORT.
    ExtReport,
}

impl Command {
    /// The ioctl request number: `_IOWR('S', nr, struct snp_guest_request_ioctl)` (32 bytes).
    pub fn ioctl_number(self) -> u64 {
        let nr = match self {
            Command::Report => 0,
            Command::DerivedKey => 1,
            Command::ExtReport => 2,
        };
        (3 << 30) | (32 << 16) | (u64::from(b'S') << 8) | nr
    }
}

/// A failed guest request, as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceError {
    /// errno of the ioctl.
    pub errno: i32,
    /// Firmware error (low half of `exitinfo2`).
    pub fw_error: u32,
    /// VMM error (high half of `exitinfo2`).
    pub vmm_error: u32,
    /// For `ExtReport` with `VMM_ERR_INVALID_LEN`: the certificate buffer length needed.
    pub certs_len: u32,
}

/// The OS boundary: something that executes guest requests on byte buffers.
pub trait GuestDevice: Send + Sync + std::fmt::Debug {
    /// Execute `cmd`: `req` is the request structure's bytes, `resp` receives the firmware's
    /// response message, and `certs` (extended reports only) receives the certificate table.
    fn request(
        &self,
        cmd: Command,
        req: &[u8],
        resp: &mut [u8],
        certs: Option<&mut [u8]>,
    ) -> Result<(), DeviceError>;
}

/// The real device, through ioctl(2).
#[derive(Debug)]
pub struct SevGuestDevice {
    file: File,
}

impl SevGuestDevice {
    /// Open the device.
    pub fn open(path: &Path) -> Result<Self, TeeError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => TeeError::Unavailable(format!(
                    "{}: no SEV-SNP guest device (not an SNP guest, or the sev-guest driver is not loaded)",
                    path.display()
                )),
                _ => TeeError::io(path, e),
            })?;
        Ok(Self { file })
    }
}

#[repr(C)]
struct GuestRequestIoctl {
    msg_version: u8,
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}

#[repr(C)]
struct ExtReportReq {
    data: [u8; REPORT_REQ_LEN],
    certs_address: u64,
    certs_len: u32,
}

impl GuestDevice for SevGuestDevice {
    #[allow(unsafe_code)]
    fn request(
        &self,
        cmd: Command,
        req: &[u8],
        resp: &mut [u8],
        certs: Option<&mut [u8]>,
    ) -> Result<(), DeviceError> {
        use std::os::fd::AsRawFd;
        let mut ext = ExtReportReq {
            data: [0; REPORT_REQ_LEN],
            certs_address: 0,
            certs_len: 0,
        };
        let req_ptr = match (cmd, certs) {
            (Command::ExtReport, Some(certs)) => {
                ext.data.copy_from_slice(&req[..REPORT_REQ_LEN]);
                ext.certs_address = certs.as_mut_ptr() as u64;
                ext.certs_len = certs.len() as u32;
                &mut ext as *mut ExtReportReq as u64
            }
            _ => req.as_ptr() as u64,
        };
        let mut arg = GuestRequestIoctl {
            msg_version: 1,
            req_data: req_ptr,
            resp_data: resp.as_mut_ptr() as u64,
            exitinfo2: 0,
        };
        // SAFETY: `arg` points at buffers that outlive the call and have the sizes the driver
        // expects for `cmd` (request structure, response message, certificate buffer of
        // `certs_len` bytes); the driver writes only within them.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), cmd.ioctl_number() as _, &mut arg) };
        if rc == 0 {
            return Ok(());
        }
        // The driver writes the needed length back into the request on VMM_ERR_INVALID_LEN.
        let certs_len = if cmd == Command::ExtReport {
            ext.certs_len
        } else {
            0
        };
        Err(DeviceError {
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            fw_error: arg.exitinfo2 as u32,
            vmm_error: (arg.exitinfo2 >> 32) as u32,
            certs_len,
        })
    }
}

fn device_err(what: &str, e: DeviceError) -> TeeError {
    TeeError::interface(
        IFACE,
        format!(
            "{what} failed: errno {}, firmware error {:#x}, VMM error {:#x}",
            e.errno, e.fw_error, e.vmm_error
        ),
    )
}

fn report_request(report_data: &[u8; 64], vmpl: u32) -> [u8; REPORT_REQ_LEN] {
    let mut req = [0u8; REPORT_REQ_LEN];
    req[..64].copy_from_slice(report_data);
    req[64..68].copy_from_slice(&vmpl.to_le_bytes());
    req
}

/// The report inside a MSG_REPORT_RSP: status, size, reserved, report.
fn report_from_response(resp: &[u8]) -> Result<Vec<u8>, TeeError> {
    let status = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]);
    if status != 0 {
        return Err(TeeError::interface(
            IFACE,
            format!("firmware status {status:#x} in the report response"),
        ));
    }
    let size = u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]) as usize;
    resp.get(32..32 + size).map(<[u8]>::to_vec).ok_or_else(|| {
        TeeError::interface(IFACE, format!("report size {size} exceeds the response"))
    })
}

/// GUEST_FIELD_SELECT for the `measurement` policy: the guest policy (bit 0) and the launch
/// measurement (bit 3). Neither the guest SVN nor the TCB version is selected, so a firmware or
/// TCB update does not change the key.
pub const FIELDS_MEASUREMENT: u64 = 0b1001;

/// Why the `signer` policy is refused on SEV-SNP.
///
/// The only author-like fields SNP_GET_DERIVED_KEY can mix in are the family ID and image ID (and
/// the guest policy and guest SVN) of the ID block. The ID block is chosen by whoever launches
/// the VM and signed with an ID key of their choosing; the derived key cannot select the ID or
/// author key digests. So another VM running other code, launched with the same ID block values,
/// derives the same key.
pub const SIGNER_REFUSED: &str = "the 'signer' sealing policy is refused on SEV-SNP: \
     SNP_GET_DERIVED_KEY can bind only the guest policy, family ID and image ID of the ID block, \
     which whoever launches the VM chooses (and signs with any ID key), so another VM running other \
     code with the same ID block values derives the same key. Use seal_policy = \"measurement\" \
     (bound to the launch measurement). A key that survives updates needs wrapping under something \
     the host cannot reproduce (the author key digest checked through an attestation, or a vault \
     release); Enclave OS has neither yet";

/// An SEV-SNP guest reached through `/dev/sev-guest`.
#[derive(Debug)]
pub struct SevGuestTee<D: GuestDevice> {
    device: D,
    vmpl: u32,
    measurement: [u8; 48],
}

impl<D: GuestDevice> SevGuestTee<D> {
    /// Use `device`, requesting reports at `vmpl`. One report is requested to learn the
    /// measurement.
    pub fn new(device: D, vmpl: u32) -> Result<Self, TeeError> {
        let mut tee = Self {
            device,
            vmpl,
            measurement: [0; 48],
        };
        let raw = tee.report(&[0; 64])?;
        let r = enclave_evidence::amd::SnpReport::decode(&raw)
            .map_err(|e| TeeError::interface(IFACE, format!("report: {e}")))?;
        tee.measurement = r.measurement;
        Ok(tee)
    }

    /// A plain report (SNP_GET_REPORT).
    pub fn report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let mut resp = vec![0u8; REPORT_RESP_LEN];
        self.device
            .request(
                Command::Report,
                &report_request(report_data, self.vmpl),
                &mut resp,
                None,
            )
            .map_err(|e| device_err("SNP_GET_REPORT", e))?;
        let raw = report_from_response(&resp)?;
        super::check_binding(IFACE, &raw, report_data)?;
        Ok(raw)
    }

    /// A report with the host's certificate table (SNP_GET_EXT_REPORT).
    pub fn ext_report(&self, report_data: &[u8; 64]) -> Result<(Vec<u8>, Vec<Vec<u8>>), TeeError> {
        let req = report_request(report_data, self.vmpl);
        let mut certs = vec![0u8; 4 * 4096];
        let mut resp = vec![0u8; REPORT_RESP_LEN];
        let mut result = self
            .device
            .request(Command::ExtReport, &req, &mut resp, Some(&mut certs));
        if let Err(e) = result
            && e.vmm_error == VMM_ERR_INVALID_LEN
            && e.certs_len as usize > certs.len()
            && e.certs_len <= 1 << 20
        {
            certs = vec![0u8; e.certs_len as usize];
            result = self
                .device
                .request(Command::ExtReport, &req, &mut resp, Some(&mut certs));
        }
        result.map_err(|e| device_err("SNP_GET_EXT_REPORT", e))?;
        let raw = report_from_response(&resp)?;
        super::check_binding(IFACE, &raw, report_data)?;
        // A host that provisions no certificates returns an empty table: the verifier then needs
        // the VCEK from AMD's KDS.
        let chain = if certs.iter().take(24).all(|b| *b == 0) {
            Vec::new()
        } else {
            super::certs::parse(&certs, IFACE)?
        };
        Ok((raw, chain))
    }

    /// The firmware-derived key for `policy` (SNP_GET_DERIVED_KEY), rooted in the VCEK.
    ///
    /// Only `measurement` is served: see [`SIGNER_REFUSED`] for why `signer` is not.
    pub fn derived_key(&self, policy: SealPolicy) -> Result<Zeroizing<[u8; 32]>, TeeError> {
        // GUEST_FIELD_SELECT: bit 0 guest policy, 1 image ID, 2 family ID, 3 measurement, 4 guest
        // SVN, 5 TCB version. `measurement` mixes in the guest policy and the launch measurement.
        let fields: u64 = match policy {
            SealPolicy::Measurement => FIELDS_MEASUREMENT,
            SealPolicy::Signer => return Err(TeeError::NoSealingKey(SIGNER_REFUSED.into())),
        };
        let mut req = [0u8; KEY_REQ_LEN];
        req[8..16].copy_from_slice(&fields.to_le_bytes());
        req[16..20].copy_from_slice(&self.vmpl.to_le_bytes());
        let mut resp = Zeroizing::new([0u8; KEY_RESP_LEN]);
        self.device
            .request(Command::DerivedKey, &req, resp.as_mut(), None)
            .map_err(|e| device_err("SNP_GET_DERIVED_KEY", e))?;
        let status = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]);
        if status != 0 {
            return Err(TeeError::interface(
                IFACE,
                format!("firmware status {status:#x} in the key response"),
            ));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&resp[32..64]);
        Ok(key)
    }
}

impl<D: GuestDevice> Tee for SevGuestTee<D> {
    fn kind(&self) -> TeeKind {
        TeeKind::Snp
    }

    fn simulated(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "snp"
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Bundle, TeeError> {
        let (evidence, certificates) = self.ext_report(report_data)?;
        Ok(Bundle {
            tee: TeeKind::Snp,
            simulated: false,
            evidence,
            collateral: None,
            certificates,
            report_data: *report_data,
        })
    }

    fn measurement(&self) -> Vec<u8> {
        self.measurement.to_vec()
    }

    fn sealing_key(&self, policy: SealPolicy) -> Result<SealingKey, TeeError> {
        let identity = match policy {
            SealPolicy::Measurement => self.measurement.to_vec(),
            SealPolicy::Signer => return Err(TeeError::NoSealingKey(SIGNER_REFUSED.into())),
        };
        Ok(SealingKey::new(
            TeeKind::Snp,
            policy,
            identity,
            self.derived_key(policy)?,
        ))
    }
}
