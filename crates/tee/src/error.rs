//! Errors from TEE backends.

use std::path::PathBuf;

use thiserror::Error;

/// Why a TEE operation failed. Each variant names what failed and why.
#[derive(Debug, Error)]
pub enum TeeError {
    /// A file or device of the TEE interface could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or device.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TEE interface answered with something its documentation does not allow.
    #[error("{interface}: {reason}")]
    Interface {
        /// Which interface (for example `configfs-tsm`).
        interface: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// This TEE cannot provide a sealing key.
    #[error("no sealing key: {0}")]
    NoSealingKey(String),
    /// The simulation PKI could not be created or loaded.
    #[error("simulation PKI in {dir}: {reason}")]
    Sim {
        /// The simulation directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No usable TEE was found.
    #[error("no usable TEE: {0}")]
    Unavailable(String),
}

impl TeeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn interface(interface: &'static str, reason: impl Into<String>) -> Self {
        Self::Interface {
            interface,
            reason: reason.into(),
        }
    }
}
