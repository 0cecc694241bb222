//! Errors of the engine, the bridge and the probes. Each names the input it refused and why.

use std::path::PathBuf;

/// What went wrong talking to containerd or runc.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The socket could not be reached.
    #[error("cannot connect to containerd at {socket}: {reason}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        reason: String,
    },
    /// A value given to the engine is not usable (a namespace, an id, a digest...).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// The refused value.
        value: String,
        /// Why.
        reason: String,
    },
    /// containerd answered a call with an error.
    #[error("containerd {call} for {subject:?} failed: {code:?}: {message}")]
    Rpc {
        /// The service call, e.g. `Snapshots.Prepare`.
        call: &'static str,
        /// What the call was about (a digest, a key, a container id).
        subject: String,
        /// The gRPC status code.
        code: containerd_client::tonic::Code,
        /// containerd's message.
        message: String,
    },
    /// Content does not hash to the digest it was stored or expected under.
    #[error("content {expected} does not match: {reason}")]
    DigestMismatch {
        /// The expected digest.
        expected: String,
        /// What was found instead.
        reason: String,
    },
    /// An applied layer's uncompressed digest differs from the image config's `diff_id`.
    #[error(
        "layer {layer} ({digest}) unpacked to {applied}, but the image config says its diff_id is {diff_id}"
    )]
    DiffIdMismatch {
        /// The layer index (0-based).
        layer: usize,
        /// The layer blob's digest.
        digest: String,
        /// What the diff service computed over the uncompressed layer.
        applied: String,
        /// What the image config says.
        diff_id: String,
    },
    /// Content is larger than the caller allows.
    #[error("content {digest} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The digest.
        digest: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A runtime spec that cannot be used.
    #[error("runtime spec for {id:?}: {reason}")]
    Spec {
        /// The container id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A local file or program failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or program.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// containerd broke the protocol (a stream ended early, a field is missing).
    #[error("containerd {call} for {subject:?}: {reason}")]
    Protocol {
        /// The service call.
        call: &'static str,
        /// What the call was about.
        subject: String,
        /// What was wrong.
        reason: String,
    },
    /// A task did not stop within its grace periods.
    #[error("task {id:?} did not exit within {secs} s of SIGKILL")]
    Unkillable {
        /// The container id.
        id: String,
        /// The bound that passed.
        secs: u64,
    },
}

impl EngineError {
    pub(crate) fn rpc(
        call: &'static str,
        subject: impl Into<String>,
        status: containerd_client::tonic::Status,
    ) -> Self {
        EngineError::Rpc {
            call,
            subject: subject.into(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// The gRPC code when containerd refused a call, for callers that tell `NotFound` apart.
    pub fn code(&self) -> Option<containerd_client::tonic::Code> {
        match self {
            EngineError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What went wrong setting up the bridge or a container's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A configuration value that cannot be used.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The refused value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A program (ip, iptables, a CNI plugin) could not be run or failed.
    #[error("{program} {args}: {reason}")]
    Command {
        /// The program.
        program: String,
        /// Its arguments, for the operator.
        args: String,
        /// Its exit status and output, or why it did not start.
        reason: String,
    },
    /// A CNI plugin answered something unusable.
    #[error("CNI {command} for {id:?}: {reason}")]
    Cni {
        /// ADD or DEL.
        command: &'static str,
        /// The container id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A local file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the bound.
    #[error("probe of {addr} timed out after {millis} ms")]
    Timeout {
        /// The address.
        addr: std::net::SocketAddr,
        /// The bound.
        millis: u128,
    },
    /// The connection failed.
    #[error("probe of {addr}: {reason}")]
    Failed {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
}
