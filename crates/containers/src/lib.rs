//! Container workloads for Enclave OS: containerd 1.6 driven over its gRPC API, runc as its
//! runtime, and the bridge each container's network namespace joins.
//!
//! - [`engine`]: content (written under a pull lease, kept by a lease per image), unpacking
//!   layers into snapshots with a check of every layer's `diff_id`, and the container lifecycle
//!   (create, start, wait with OOM reporting, kill, remove: also after a crash of the runtime).
//! - [`network`]: a bridge whose containers can reach neither each other nor the host, nor
//!   anything beyond (save, when asked, one TCP port of the gateway); the host can reach them.
//! - [`probe`]: HTTP and TCP health probes over that bridge.
//! - [`logfile`]: the bounded log a service's output goes to (containers' and processes').
//!
//! What it is not: a registry client (the runtime streams blobs it has verified into
//! [`engine::ContentWriter`]), a runtime-spec generator (the runtime builds the spec), nor a
//! config reader. It needs root, containerd 1.6 with the overlayfs snapshotter, runc, `ip`,
//! `iptables`, and the CNI `bridge` and `host-local` plugins.

pub mod engine;
pub mod error;
pub mod logfile;
pub mod network;
pub mod probe;

pub use engine::{
    ContentWriter, Engine, EngineVersions, ExitStatus, Layer, LogSink, Pull, Task, UnpackProgress,
    chain_id, log_tail, scoped_chain_id,
};
pub use error::{EngineError, NetworkError, ProbeError};
pub use logfile::SegmentedLog;
pub use network::{Bridge, BridgeConfig, Ipv4Subnet};
pub use probe::{probe_http, probe_tcp};
