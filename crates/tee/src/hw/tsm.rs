//! configfs-tsm: the Linux kernel's vendor-neutral interface to TDX and SEV-SNP reports
//! (`Documentation/ABI/testing/configfs-tsm`).
//!
//! A report is requested by creating an entry under `/sys/kernel/config/tsm/report`, writing up to
//! 64 bytes to its `inblob`, and reading `outblob` (the TDX quote or SNP report) and `auxblob` (for
//! SNP, the certificate table). `provider` names the backend (`tdx_guest`, `sev_guest`).
//! `generation` counts writes to the entry: reading it before and after `outblob` and finding it
//! changed means another writer raced us, and the report cannot be trusted to be ours.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bundle::Bundle;
use crate::error::TeeError;
use crate::seal::{SealPolicy, SealingKey};
use crate::{Tee, TeeKind};

/// Where the kernel mounts the interface.
pub const DEFAULT_ROOT: &str = "/sys/kernel/config/tsm/report";
const IFACE: &str = "configfs-tsm";

static ENTRY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One report read from configfs-tsm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsmReport {
    /// The backend (`tdx_guest`, `sev_guest`).
    pub provider: String,
    /// The quote (TDX) or report (SNP).
    pub outblob: Vec<u8>,
    /// Auxiliary data (SNP: the certificate table), when present.
    pub auxblob: Option<Vec<u8>>,
    /// The generation the report was read at.
    pub generation: u64,
}

/// Removes the entry we created when the request is done, whatever happened.
struct Entry {
    path: PathBuf,
    created: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if self.created {
            // configfs removes an entry's attributes with the directory.
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TeeError> {
    std::fs::read(path).map_err(|e| TeeError::io(path, e))
}

fn generation(entry: &Path) -> Result<u64, TeeError> {
    let raw = read(&entry.join("generation"))?;
    let text = String::from_utf8_lossy(&raw);
    text.trim().parse().map_err(|_| {
        TeeError::interface(
            IFACE,
            format!("generation is not a number: '{}'", text.trim()),
        )
    })
}

/// Request a report for `inblob` in a new, uniquely named entry under `root`, removed afterwards.
pub fn request_new(root: &Path, inblob: &[u8; 64]) -> Result<TsmReport, TeeError> {
    let name = format!(
        "enclave-os-{}-{}",
        std::process::id(),
        ENTRY_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = root.join(name);
    std::fs::create_dir(&path).map_err(|e| TeeError::io(&path, e))?;
    let entry = Entry {
        path,
        created: true,
    };
    request(&entry.path, inblob)
}

/// Request a report for `inblob` in the existing entry directory `entry` (one the kernel populated
/// on mkdir). Safe to share: another writer between our reads is detected by the generation.
pub fn request(entry: &Path, inblob: &[u8; 64]) -> Result<TsmReport, TeeError> {
    let p = entry;
    std::fs::write(p.join("inblob"), inblob).map_err(|e| TeeError::io(p.join("inblob"), e))?;
    let before = generation(p)?;
    let outblob = read(&p.join("outblob"))?;
    let auxblob = match std::fs::read(p.join("auxblob")) {
        Ok(a) if a.is_empty() => None,
        Ok(a) => Some(a),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(TeeError::io(p.join("auxblob"), e)),
    };
    let provider = String::from_utf8_lossy(&read(&p.join("provider"))?)
        .trim()
        .to_string();
    let after = generation(p)?;
    if before != after {
        return Err(TeeError::interface(
            IFACE,
            format!(
                "generation changed from {before} to {after} while the report was read: another \
                 writer used the entry, so the report may not be ours; retry"
            ),
        ));
    }
    if outblob.is_empty() {
        return Err(TeeError::interface(IFACE, "outblob is empty"));
    }
    Ok(TsmReport {
        provider,
        outblob,
        auxblob,
        generation: after,
    })
}

/// A TDX or SEV-SNP guest reached through configfs-tsm.
#[derive(Debug)]
pub struct TsmTee {
    root: PathBuf,
    /// A fixed entry to reuse, or `None` for a fresh entry per report.
    entry: Option<PathBuf>,
    kind: TeeKind,
    measurement: Vec<u8>,
}

impl TsmTee {
    /// Open configfs-tsm at `root`: request one report to learn which TEE this is and its
    /// measurement.
    pub fn open(root: &Path) -> Result<Self, TeeError> {
        Self::open_with(root, None)
    }

    /// Open configfs-tsm at `root`, keeping one entry named `entry` for every report (created if
    /// missing, kept afterwards) instead of one entry per report.
    pub fn open_with_entry(root: &Path, entry: &str) -> Result<Self, TeeError> {
        Self::open_with(root, Some(root.join(entry)))
    }

    fn request(&self, inblob: &[u8; 64]) -> Result<TsmReport, TeeError> {
        match &self.entry {
            Some(entry) => {
                if !entry.is_dir() {
                    std::fs::create_dir(entry).map_err(|e| TeeError::io(entry, e))?;
                }
                request(entry, inblob)
            }
            None => request_new(&self.root, inblob),
        }
    }

    fn open_with(root: &Path, entry: Option<PathBuf>) -> Result<Self, TeeError> {
        if !root.is_dir() {
            return Err(TeeError::Unavailable(format!(
                "{}: no configfs-tsm report directory (kernel without CONFIG_TSM_REPORTS, or configfs not mounted)",
                root.display()
            )));
        }
        let mut tee = Self {
            root: root.to_path_buf(),
            entry,
            kind: TeeKind::Tdx,
            measurement: Vec::new(),
        };
        let probe = [0u8; 64];
        let report = tee.request(&probe)?;
        let (kind, measurement) = super::check_binding(IFACE, &report.outblob, &probe)?;
        let expected = match report.provider.as_str() {
            "tdx_guest" => TeeKind::Tdx,
            "sev_guest" => TeeKind::Snp,
            other => {
                return Err(TeeError::interface(
                    IFACE,
                    format!("unknown provider '{other}' (tdx_guest or sev_guest)"),
                ));
            }
        };
        if kind != expected {
            return Err(TeeError::interface(
                IFACE,
                format!("provider {} returned {kind} evidence", report.provider),
            ));
        }
        tee.kind = kind;
        tee.measurement = measurement;
        Ok(tee)
    }
}

impl Tee for TsmTee {
    fn kind(&self) -> TeeKind {
        self.kind
    }

    fn simulated(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        match self.kind {
            TeeKind::Snp => "snp",
            _ => "tdx",
        }
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Bundle, TeeError> {
        let report = self.request(report_data)?;
        super::check_binding(IFACE, &report.outblob, report_data)?;
        let certificates = match (&report.auxblob, self.kind) {
            (Some(table), TeeKind::Snp) => super::certs::parse(table, IFACE)?,
            _ => Vec::new(),
        };
        Ok(Bundle {
            tee: self.kind,
            simulated: false,
            evidence: report.outblob,
            // DCAP collateral comes from a PCCS, not from the guest: verifiers supply it.
            collateral: None,
            certificates,
            report_data: *report_data,
        })
    }

    fn measurement(&self) -> Vec<u8> {
        self.measurement.clone()
    }

    fn sealing_key(&self, policy: SealPolicy) -> Result<SealingKey, TeeError> {
        let _ = policy;
        Err(TeeError::NoSealingKey(match self.kind {
            TeeKind::Snp => "configfs-tsm gives reports only; SEV-SNP sealing keys come from /dev/sev-guest (SNP_GET_DERIVED_KEY)".into(),
            _ => "TDX has no hardware sealing key: sealing there needs a key released by a vault to this attested TD, or supplied by the operator".into(),
        }))
    }
}
