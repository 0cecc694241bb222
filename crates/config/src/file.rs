//! `enclave.toml`: the runtime's configuration file, and the config-tree leaves it yields.
//!
//! Every input that decides what runs and whom it trusts is a named leaf of the config tree:
//!
//! | leaf | value |
//! |---|---|
//! | `runtime/version` | the Enclave OS version |
//! | `ca/certificate` | the operator's intermediary CA certificate file, when configured |
//! | `egress/ca-bundle` | the egress CA bundle file |
//! | `attestation/servers` | the attestation server URLs, as canonical JSON |
//! | `policy` | the appraisal policy file for peers, when configured |
//! | `oidc` | issuer, audience and JWKS source, as canonical JSON |
//! | `limits` | the runtime limits, as canonical JSON |
//! | `workload/<name>/code` | the workload's code (component bytes), so the leaf's value hash is its code hash |
//! | `workload/<name>/settings` | kind, hostnames, env, args and limits, as canonical JSON |
//!
//! Listen addresses and the state directory are not leaves: the host chooses them, and they change
//! neither what runs nor whom it trusts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::merkle::{ConfigTree, TreeError};

/// Why a configuration could not be used: the file, where, and what.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed, or a field is unknown or of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// TOML's message, with line, column and the field.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{path}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, as a dotted path.
        field: String,
        /// Why.
        reason: String,
    },
    /// The tree could not be built.
    #[error("{0}")]
    Tree(#[from] TreeError),
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8443".into()]
}

fn default_tee() -> String {
    "auto".into()
}

fn default_seal_policy() -> String {
    "measurement".into()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".enclave-os/state")
}

/// The operator's CA material for the first run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// The intermediary CA certificate (PEM).
    pub certificate: Option<PathBuf>,
    /// The intermediary CA key (PEM): imported and sealed on the first run, then not needed.
    pub key: Option<PathBuf>,
}

/// Outgoing HTTPS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The only CAs egress trusts (PEM bundle).
    pub ca_bundle: Option<PathBuf>,
}

/// The management API's token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// JWKS from a file.
    pub jwks_file: Option<PathBuf>,
    /// JWKS from a URL.
    pub jwks_url: Option<String>,
}

/// Runtime limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections.
    #[serde(default = "Limits::default_connections")]
    pub max_connections: u32,
    /// Largest request body, bytes.
    #[serde(default = "Limits::default_body")]
    pub max_request_bytes: u64,
}

impl Limits {
    fn default_connections() -> u32 {
        1024
    }
    fn default_body() -> u64 {
        1 << 20
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: Self::default_connections(),
            max_request_bytes: Self::default_body(),
        }
    }
}

/// What a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// A wasi:http component run inside the runtime.
    Wasm,
    /// An OCI container behind the attested proxy.
    Container,
    /// A local process behind the attested proxy.
    Process,
}

/// Per-workload limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLimits {
    /// Memory cap, bytes.
    pub memory_bytes: Option<u64>,
    /// Wall-clock deadline per request, milliseconds.
    pub request_timeout_ms: Option<u64>,
}

/// One workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Its name (also its key-value namespace).
    pub name: String,
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its code: the component file (wasm) or executable (process).
    pub source: Option<PathBuf>,
    /// Its image, digest-pinned (container).
    pub image: Option<String>,
    /// Hostnames it serves (SNI / Host).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Limits.
    #[serde(default)]
    pub limits: WorkloadLimits,
}

/// `enclave.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfig {
    /// Addresses to listen on.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// The TEE backend: `auto`, `sim-sgx`, `sim-tdx`, `tdx`, `snp`, `sgx`.
    #[serde(default = "default_tee")]
    pub tee: String,
    /// Where sealed state lives.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// What sealed state is bound to: `measurement` (this exact build; a new build needs an
    /// explicit migration) or `signer` (survives updates signed by the same signer).
    #[serde(default = "default_seal_policy")]
    pub seal_policy: String,
    /// CA material for the first run.
    #[serde(default)]
    pub ca: CaConfig,
    /// Egress.
    #[serde(default)]
    pub egress: EgressConfig,
    /// Attestation servers.
    #[serde(default)]
    pub attestation_servers: Vec<String>,
    /// Appraisal policy for RA-TLS peers.
    pub policy: Option<PathBuf>,
    /// The management API's token issuer.
    pub oidc: Option<OidcConfig>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Workloads.
    #[serde(default, rename = "workload")]
    pub workloads: Vec<Workload>,
}

/// A configuration as loaded: its file, its content, and the directory relative paths resolve in.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The parsed content.
    pub config: EnclaveConfig,
}

fn canonical_json(v: &impl Serialize) -> Vec<u8> {
    // serde_json writes struct fields in declaration order and BTreeMaps sorted: deterministic.
    serde_json::to_vec(v).unwrap_or_default()
}

const TEES: [&str; 6] = ["auto", "sim-sgx", "sim-tdx", "tdx", "snp", "sgx"];

impl LoadedConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate TOML `text` that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: EnclaveConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if !TEES.contains(&config.tee.as_str()) {
            return Err(invalid(
                "tee".into(),
                format!("'{}' is not one of {}", config.tee, TEES.join(", ")),
            ));
        }
        if !["measurement", "signer"].contains(&config.seal_policy.as_str()) {
            return Err(invalid(
                "seal_policy".into(),
                format!("'{}' is neither measurement nor signer", config.seal_policy),
            ));
        }
        for (i, l) in config.listen.iter().enumerate() {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    format!("listen[{i}]"),
                    format!("'{l}' is not HOST:PORT with an IP address"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in config.workloads.iter().enumerate() {
            let field = |f: &str| format!("workload[{i}].{f}");
            if w.name.is_empty()
                || !w
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    field("name"),
                    format!("'{}' must be letters, digits, '-' or '_'", w.name),
                ));
            }
            if !names.insert(&w.name) {
                return Err(invalid(
                    field("name"),
                    format!("'{}' is used by two workloads", w.name),
                ));
            }
            match (w.kind, &w.source, &w.image) {
                (WorkloadKind::Wasm | WorkloadKind::Process, None, _) => {
                    return Err(invalid(
                        field("source"),
                        "a wasm or process workload needs its code file".into(),
                    ));
                }
                (WorkloadKind::Container, _, None) => {
                    return Err(invalid(
                        field("image"),
                        "a container workload needs a digest-pinned image".into(),
                    ));
                }
                (WorkloadKind::Container, _, Some(image)) if !image.contains("@sha256:") => {
                    return Err(invalid(
                        field("image"),
                        format!("'{image}' is not pinned by digest (name@sha256:…)"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(o) = &config.oidc
            && o.jwks_file.is_none() == o.jwks_url.is_none()
        {
            return Err(invalid(
                "oidc".into(),
                "give exactly one of jwks_file and jwks_url".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            config,
        })
    }

    /// A path from the file, relative to the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn read(&self, field: &str, p: &Path) -> Result<Vec<u8>, ConfigError> {
        let full = self.resolve(p);
        std::fs::read(&full).map_err(|e| ConfigError::Invalid {
            path: self.path.clone(),
            field: field.into(),
            reason: format!("{}: {e}", full.display()),
        })
    }

    /// The config tree: every input that decides what runs and whom it trusts.
    pub fn tree(&self, runtime_version: &str) -> Result<ConfigTree, ConfigError> {
        let c = &self.config;
        let mut leaves: Vec<(String, Vec<u8>)> = vec![
            (
                "runtime/version".into(),
                runtime_version.as_bytes().to_vec(),
            ),
            (
                "attestation/servers".into(),
                canonical_json(&c.attestation_servers),
            ),
            ("limits".into(), canonical_json(&c.limits)),
            ("oidc".into(), canonical_json(&c.oidc)),
        ];
        if let Some(p) = &c.ca.certificate {
            leaves.push(("ca/certificate".into(), self.read("ca.certificate", p)?));
        }
        leaves.push((
            "egress/ca-bundle".into(),
            match &c.egress.ca_bundle {
                Some(p) => self.read("egress.ca_bundle", p)?,
                None => Vec::new(),
            },
        ));
        if let Some(p) = &c.policy {
            leaves.push(("policy".into(), self.read("policy", p)?));
        }
        for (i, w) in c.workloads.iter().enumerate() {
            let code = match (&w.source, &w.image) {
                (Some(p), _) => self.read(&format!("workload[{i}].source"), p)?,
                (None, Some(image)) => image.as_bytes().to_vec(),
                (None, None) => Vec::new(),
            };
            leaves.push((format!("workload/{}/code", w.name), code));
            let settings = serde_json::json!({
                "kind": w.kind, "hostnames": w.hostnames, "env": w.env, "args": w.args, "limits": w.limits,
            });
            leaves.push((
                format!("workload/{}/settings", w.name),
                canonical_json(&settings),
            ));
        }
        Ok(ConfigTree::from_values(
            leaves.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )?)
    }
}
