//! What `enclave.toml` says about containers: the `[containers]` engine section, the
//! `[[registry]]` tables, a container workload's `[workload.container]` settings, and the
//! documents an image contributes to the tree once the runtime (or `enclave-os measure`) has
//! resolved it.
//!
//! A container's identity is not in the file: the file pins the image by digest, and the tree
//! commits the documents behind that digest. `workload/<name>/code` is the image manifest (its
//! leaf hash is the manifest digest), `workload/<name>/image-config` the image configuration,
//! and `workload/<name>/runtime-spec` the OCI runtime spec the container is started with. The
//! engine's versions are `containers/engine`, and each registry's CA bundle is
//! `registry/<host>/ca-bundle`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::service::{HealthCheck, RestartPolicy};
use crate::service::{NoOtherFields, ServiceSettings, Table};

/// The container engine (`[containers]`): where containerd listens and how the runtime lays
/// out what it creates. Host choices, not leaves: the runtime spec that results is a leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersConfig {
    /// containerd's gRPC socket.
    #[serde(default = "ContainersConfig::default_socket")]
    pub containerd_socket: PathBuf,
    /// The containerd namespace the runtime keeps its images, snapshots and containers in; also
    /// the parent of each container's cgroup.
    #[serde(default = "ContainersConfig::default_namespace")]
    pub namespace: String,
    /// The Linux bridge the containers are attached to (at most 15 characters).
    #[serde(default = "ContainersConfig::default_bridge")]
    pub bridge: String,
    /// The bridge's IPv4 subnet, CIDR (the runtime is its first address).
    #[serde(default = "ContainersConfig::default_subnet")]
    pub subnet: String,
    /// The runc binary containerd runs (its version is committed).
    #[serde(default = "ContainersConfig::default_runc")]
    pub runc: PathBuf,
    /// Where the CNI plugins (`bridge`, `host-local`) are.
    #[serde(default = "ContainersConfig::default_cni")]
    pub cni_bin_dir: PathBuf,
    /// The port of the vault's SKR-compatible endpoint on the bridge's gateway address (with
    /// `[vault]` only): the one port of the host the containers may open connections to.
    #[serde(default = "ContainersConfig::default_vault_port")]
    pub vault_port: u16,
}

impl ContainersConfig {
    fn default_socket() -> PathBuf {
        "/run/containerd/containerd.sock".into()
    }
    fn default_namespace() -> String {
        "enclave-os".into()
    }
    fn default_bridge() -> String {
        "eos0".into()
    }
    fn default_subnet() -> String {
        "10.213.0.0/24".into()
    }
    fn default_runc() -> PathBuf {
        "/usr/sbin/runc".into()
    }
    fn default_cni() -> PathBuf {
        "/usr/lib/cni".into()
    }
    /// SKR's own default port: clients written for Azure's sidecar often assume it.
    fn default_vault_port() -> u16 {
        8080
    }

    /// Check the section on its own; on failure, the field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let n = &self.namespace;
        if n.is_empty()
            || n.len() > 64
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err((
                "namespace",
                format!("'{n}' must be 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        let b = &self.bridge;
        if b.is_empty()
            || b.len() > 15
            || !b
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err((
                "bridge",
                format!(
                    "'{b}' must be 1 to 15 letters, digits, '-' or '_' (a Linux interface name)"
                ),
            ));
        }
        let ok = self.subnet.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok()
                && bits.parse::<u8>().is_ok_and(|b| (8..=28).contains(&b))
        });
        if !ok {
            return Err((
                "subnet",
                format!("'{}' is not an IPv4 CIDR between /8 and /28", self.subnet),
            ));
        }
        if self.vault_port == 0 {
            return Err(("vault_port", "0 is not a port a container can reach".into()));
        }
        Ok(())
    }
}

impl Default for ContainersConfig {
    fn default() -> Self {
        Self {
            containerd_socket: Self::default_socket(),
            namespace: Self::default_namespace(),
            bridge: Self::default_bridge(),
            subnet: Self::default_subnet(),
            runc: Self::default_runc(),
            cni_bin_dir: Self::default_cni(),
            vault_port: Self::default_vault_port(),
        }
    }
}

/// One OCI registry the runtime may pull from (`[[registry]]`). Only registries listed here
/// are reached, each trusted through its own CA bundle and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port]`, as image references spell it.
    pub host: String,
    /// The PEM bundle its TLS certificate must chain to (committed as
    /// `registry/<host>/ca-bundle`).
    pub ca_bundle: PathBuf,
    /// The user for basic or token authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable holding the password. Never the password itself: it is a
    /// secret, so it is neither in the file nor in the tree.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl RegistryConfig {
    /// Check the table on its own; on failure, the field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let h = &self.host;
        let ok = !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !ok {
            return Err((
                "host",
                format!("'{h}' is not host[:port] as an image reference spells it"),
            ));
        }
        if self.password_env.is_some() && self.username.is_none() {
            return Err(("password_env", "a password needs its username".to_string()));
        }
        Ok(())
    }
}

/// The capabilities a container may keep. Everything else is dropped, always.
pub const ALLOWED_CAPABILITIES: [&str; 6] = [
    "CAP_NET_BIND_SERVICE",
    "CAP_CHOWN",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
];

/// A container workload's own settings (`[workload.container]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSettings {
    /// Port (inside its own network namespace), health check and restart policy.
    #[serde(flatten)]
    pub service: ServiceSettings,
    /// A writable root filesystem. The default is read-only, with a tmpfs at `/tmp`.
    #[serde(default)]
    pub writable_rootfs: bool,
    /// Capabilities kept, from [`ALLOWED_CAPABILITIES`]; the default keeps none.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The container may open connections to the host (the default refuses them: the
    /// management API and every other host service are out of its reach).
    #[serde(default)]
    pub allow_host: bool,
    /// Refuses any other field.
    #[serde(flatten, skip_serializing)]
    pub no_other_fields: NoOtherFields,
}

impl ContainerSettings {
    /// Check the settings on their own; on failure, the field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.service.check(Table::Container)?;
        for c in &self.capabilities {
            if !ALLOWED_CAPABILITIES.contains(&c.as_str()) {
                return Err((
                    "container.capabilities",
                    format!(
                        "'{c}' may not be kept (allowed: {})",
                        ALLOWED_CAPABILITIES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The documents a resolved image contributes to the tree, exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageLeaves {
    /// The image manifest (`workload/<name>/code`): its SHA-256 is the manifest digest.
    pub manifest: Vec<u8>,
    /// The image configuration (`workload/<name>/image-config`): its SHA-256 is the config
    /// digest.
    pub config: Vec<u8>,
    /// The OCI runtime spec the container is started with (`workload/<name>/runtime-spec`).
    pub runtime_spec: Vec<u8>,
}

impl std::fmt::Debug for ImageLeaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageLeaves")
            .field("manifest_bytes", &self.manifest.len())
            .field("config_bytes", &self.config.len())
            .field("runtime_spec_bytes", &self.runtime_spec.len())
            .finish()
    }
}

/// What a workload's leaves commit as its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadCode {
    /// A component or an executable: its bytes.
    Module(Vec<u8>),
    /// A container: the documents of its resolved image and its runtime spec.
    Image(ImageLeaves),
}

impl WorkloadCode {
    /// The bytes `workload/<name>/code` commits (a module's bytes, or an image's manifest).
    pub fn code(&self) -> &[u8] {
        match self {
            WorkloadCode::Module(b) => b,
            WorkloadCode::Image(i) => &i.manifest,
        }
    }
}

/// The versions of the container engine, committed as `containers/engine` (JCS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineVersions {
    /// containerd's version, as its Version service reports it.
    pub containerd: String,
    /// runc's, as the first line of `runc --version` reports it.
    pub runc: String,
}
