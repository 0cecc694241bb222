//! Choosing a backend: by name, or by probing what this machine offers.

use std::path::Path;

use crate::Tee;
use crate::error::TeeError;
use crate::sim::{Flavour, SimTee};

use super::gramine::GramineTee;
use super::sev_guest::{SevGuestDevice, SevGuestTee};
use super::tsm::TsmTee;

/// The names `--tee` accepts.
pub const NAMES: [&str; 6] = ["auto", "sim-sgx", "sim-tdx", "tdx", "snp", "sgx"];

/// What probing one backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The backend.
    pub backend: &'static str,
    /// `None` when usable, otherwise why not.
    pub unusable: Option<String>,
}

/// Opens one hardware backend at its standard location.
type Opener = fn() -> Result<Box<dyn Tee>, TeeError>;

fn gramine() -> Result<Box<dyn Tee>, TeeError> {
    Ok(Box::new(GramineTee::open(Path::new(
        super::gramine::DEFAULT_ROOT,
    ))?))
}

fn sev_guest() -> Result<Box<dyn Tee>, TeeError> {
    let device = SevGuestDevice::open(Path::new(super::sev_guest::DEFAULT_DEVICE))?;
    Ok(Box::new(SevGuestTee::new(device, 0)?))
}

fn tsm() -> Result<Box<dyn Tee>, TeeError> {
    Ok(Box::new(TsmTee::open(Path::new(super::tsm::DEFAULT_ROOT))?))
}

/// Probe the hardware backends in order (Gramine SGX, `/dev/sev-guest`, configfs-tsm) and return
/// the first usable one, with what was found for each.
pub fn detect() -> (Option<Box<dyn Tee>>, Vec<Probe>) {
    let mut probes = Vec::new();
    let candidates: [(&'static str, Opener); 3] = [
        ("sgx (Gramine /dev/attestation)", gramine),
        ("snp (/dev/sev-guest)", sev_guest),
        ("tdx or snp (configfs-tsm)", tsm),
    ];
    for (backend, open) in candidates {
        match open() {
            Ok(tee) => {
                probes.push(Probe {
                    backend,
                    unusable: None,
                });
                return (Some(tee), probes);
            }
            Err(e) => probes.push(Probe {
                backend,
                unusable: Some(match e {
                    TeeError::Unavailable(reason) => reason,
                    other => other.to_string(),
                }),
            }),
        }
    }
    (None, probes)
}

/// Open the backend called `name` (one of [`NAMES`]). Simulated backends keep their PKI in
/// `sim_dir`. `auto` never falls back to simulation: on a machine without a TEE it fails, listing
/// why each hardware backend was unusable.
pub fn open(name: &str, sim_dir: &Path) -> Result<Box<dyn Tee>, TeeError> {
    let hw = |kind: &str, t: Result<Box<dyn Tee>, TeeError>| -> Result<Box<dyn Tee>, TeeError> {
        let t = t?;
        if t.name() != kind {
            return Err(TeeError::Unavailable(format!(
                "asked for {kind}, but this machine offers {}",
                t.name()
            )));
        }
        Ok(t)
    };
    match name {
        "sim-sgx" => Ok(Box::new(SimTee::open(sim_dir, Flavour::Sgx)?)),
        "sim-tdx" => Ok(Box::new(SimTee::open(sim_dir, Flavour::Tdx)?)),
        "sgx" => hw("sgx", gramine()),
        "snp" => hw("snp", sev_guest().or_else(|_| tsm())),
        "tdx" => hw("tdx", tsm()),
        "auto" => match detect() {
            (Some(tee), _) => Ok(tee),
            (None, probes) => {
                let reasons: Vec<String> = probes
                    .iter()
                    .map(|p| {
                        format!(
                            "{}: {}",
                            p.backend,
                            p.unusable.as_deref().unwrap_or("usable")
                        )
                    })
                    .collect();
                Err(TeeError::Unavailable(format!(
                    "no hardware TEE found ({}); for development use --tee sim-sgx or --tee sim-tdx",
                    reasons.join("; ")
                )))
            }
        },
        other => Err(TeeError::Unavailable(format!(
            "unknown TEE '{other}' (one of {})",
            NAMES.join(", ")
        ))),
    }
}

/// The default simulation directory: `$ENCLAVE_OS_SIM_DIR`, else `$XDG_DATA_HOME/enclave-os/sim`,
/// else `~/.local/share/enclave-os/sim`.
pub fn default_sim_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("ENCLAVE_OS_SIM_DIR") {
        return d.into();
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    base.join("enclave-os/sim")
}
