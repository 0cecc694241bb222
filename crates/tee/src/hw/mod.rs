//! Hardware providers, each written against its documented interface:
//!
//! - [`tsm`]: configfs-tsm (`/sys/kernel/config/tsm/report`), for TDX and SEV-SNP guests;
//! - [`sev_guest`]: the `/dev/sev-guest` ioctls (report, extended report, derived key);
//! - [`gramine`]: Gramine's `/dev/attestation` pseudo-filesystem, for SGX.
//!
//! **None of these has run on hardware.** No TEE exists where Enclave OS is developed and tested;
//! each is tested against an emulation of its interface at the OS boundary (a directory tree with
//! FIFOs for configfs-tsm and Gramine, an emulated ioctl for sev-guest), which behaves as the
//! kernel and Gramine documentation describe. See `docs/tee.md`.

pub mod certs;
pub mod detect;
pub mod gramine;
pub mod sev_guest;
pub mod tsm;

use crate::TeeKind;
use crate::error::TeeError;

/// Decode evidence a provider returned and check that it binds the report data we asked for: a
/// provider that returns someone else's report must not be believed.
pub(crate) fn check_binding(
    interface: &'static str,
    evidence: &[u8],
    report_data: &[u8; 64],
) -> Result<(TeeKind, Vec<u8>), TeeError> {
    use enclave_evidence::Evidence;
    let ev = Evidence::decode(evidence)
        .map_err(|e| TeeError::interface(interface, format!("returned malformed evidence: {e}")))?;
    let (rd, measurement) = match &ev {
        Evidence::DcapQuote(q) => (
            *q.body.report_data(),
            match &q.body {
                enclave_evidence::intel::quote::Body::Sgx(r) => r.mr_enclave.to_vec(),
                enclave_evidence::intel::quote::Body::Td10(r)
                | enclave_evidence::intel::quote::Body::Td15(r) => r.mr_td.to_vec(),
            },
        ),
        Evidence::SnpReport(r) => (r.report_data, r.measurement.to_vec()),
        Evidence::AzureHclReport(_) => {
            return Err(TeeError::interface(
                interface,
                "returned an Azure HCL report, which it never should",
            ));
        }
    };
    if rd != *report_data {
        return Err(TeeError::interface(
            interface,
            "returned evidence for other report data than requested (a concurrent writer?)",
        ));
    }
    Ok((ev.tee(), measurement))
}
