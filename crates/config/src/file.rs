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
use std::num::NonZeroU32;
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
    /// JWKS from a URL (fetched over HTTPS trusting only the egress CA bundle).
    pub jwks_url: Option<String>,
    /// How far `exp`, `nbf` and `iat` may be off, seconds (at most 300).
    #[serde(default = "OidcConfig::default_skew")]
    pub clock_skew_secs: u64,
    /// The longest lifetime (`exp - iat`) a token may have, seconds; absent means
    /// [`OidcConfig::DEFAULT_MAX_TOKEN_LIFETIME_SECS`]. Left out of the leaf when absent, so
    /// that configurations without it keep their config root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_secs: Option<u64>,
    /// How often a `jwks_url` is fetched again (key rotation), seconds; absent means
    /// [`OidcConfig::DEFAULT_JWKS_REFRESH_SECS`]. Refused with `jwks_file`: a file is read once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_secs: Option<u64>,
}

impl OidcConfig {
    /// A token may live at most this long unless `max_token_lifetime_secs` says otherwise.
    pub const DEFAULT_MAX_TOKEN_LIFETIME_SECS: u64 = 3600;
    /// The ceiling for `max_token_lifetime_secs`.
    pub const MAX_TOKEN_LIFETIME_CEILING_SECS: u64 = 86_400;
    /// A `jwks_url` is fetched again this often unless `jwks_refresh_secs` says otherwise.
    pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 3600;
    /// The shortest `jwks_refresh_secs` accepted: more often would hammer the issuer.
    pub const MIN_JWKS_REFRESH_SECS: u64 = 10;

    fn default_skew() -> u64 {
        60
    }

    /// The configured or default maximum token lifetime, seconds.
    pub fn max_token_lifetime(&self) -> u64 {
        self.max_token_lifetime_secs
            .unwrap_or(Self::DEFAULT_MAX_TOKEN_LIFETIME_SECS)
    }

    /// How often the JWKS is fetched again: `None` for a file, which is never reloaded.
    pub fn jwks_refresh(&self) -> Option<u64> {
        self.jwks_url.as_ref().map(|_| {
            self.jwks_refresh_secs
                .unwrap_or(Self::DEFAULT_JWKS_REFRESH_SECS)
        })
    }
}

/// The management API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// The reserved hostname it answers on. Requests for a workload's hostname go to the
    /// workload; every other name (an IP address included) reaches the management API.
    #[serde(default = "ManagementConfig::default_hostname")]
    pub hostname: String,
}

impl ManagementConfig {
    /// The default reserved hostname.
    pub const DEFAULT_HOSTNAME: &'static str = "manage.enclave-os.internal";

    fn default_hostname() -> String {
        Self::DEFAULT_HOSTNAME.into()
    }
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            hostname: Self::default_hostname(),
        }
    }
}

/// Where the sealed store's rollback counter lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterKind {
    /// A MACed file in the state directory: defeated by a host restoring the whole directory.
    #[default]
    File,
    /// Another Enclave OS instance, over mutual RA-TLS: the host cannot roll it back.
    Witness,
}

/// How this instance reaches its witness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessClientConfig {
    /// `https://HOST:PORT` of the witness's listener.
    pub url: String,
    /// The operator root the witness's certificate must chain to (PEM).
    pub root: PathBuf,
    /// Development only: the simulation PKI directory the witness's evidence is signed under.
    pub trust_sim: Option<PathBuf>,
}

/// The sealed key-value store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The rollback counter: `file` (default) or `witness`.
    #[serde(default)]
    pub counter: CounterKind,
    /// The witness, when `counter = "witness"`.
    pub witness: Option<WitnessClientConfig>,
}

/// Serving as a witness: keeping other instances' rollback counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The mutual RA-TLS listener, `HOST:PORT`.
    pub listen: String,
    /// The operator root client certificates must chain to (PEM).
    pub clients_root: PathBuf,
    /// Development only: accept clients whose evidence is signed under this simulation PKI.
    pub trust_sim: Option<PathBuf>,
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
    /// WebAssembly requests in flight at once, across all apps: each holds one instance. More
    /// wait for a slot, up to their app's deadline.
    #[serde(default = "Limits::default_wasm_instances")]
    pub max_wasm_instances: NonZeroU32,
}

impl Limits {
    fn default_connections() -> u32 {
        1024
    }
    fn default_body() -> u64 {
        1 << 20
    }
    fn default_wasm_instances() -> NonZeroU32 {
        const DEFAULT: NonZeroU32 = match NonZeroU32::new(64) {
            Some(n) => n,
            None => unreachable!(),
        };
        DEFAULT
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: Self::default_connections(),
            max_request_bytes: Self::default_body(),
            max_wasm_instances: Self::default_wasm_instances(),
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

impl Workload {
    /// Check the workload on its own: its name, and that it says where its code is
    /// (`needs_source`: a file's workloads name a file; those loaded at run time bring bytes).
    /// On failure, the field and why.
    pub fn check(&self, needs_source: bool) -> Result<(), (&'static str, String)> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                "name",
                format!(
                    "'{}' must be 1 to 64 letters, digits, '-' or '_'",
                    self.name
                ),
            ));
        }
        match (self.kind, &self.source, &self.image) {
            (WorkloadKind::Wasm | WorkloadKind::Process, None, _) if needs_source => Err((
                "source",
                "a wasm or process workload needs its code file".into(),
            )),
            (WorkloadKind::Container, _, None) => Err((
                "image",
                "a container workload needs a digest-pinned image".into(),
            )),
            (WorkloadKind::Container, _, Some(image)) if !image.contains("@sha256:") => Err((
                "image",
                format!("'{image}' is not pinned by digest (name@sha256:…)"),
            )),
            _ => Ok(()),
        }
    }
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
    /// The management API.
    #[serde(default)]
    pub management: ManagementConfig,
    /// The sealed key-value store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Serving as a witness for other instances.
    pub witness: Option<WitnessConfig>,
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

/// A workload's two leaves: its code, and its settings as canonical JSON.
fn workload_leaves(w: &Workload, code: Vec<u8>) -> [(String, Vec<u8>); 2] {
    let settings = serde_json::json!({
        "kind": w.kind, "hostnames": w.hostnames, "env": w.env, "args": w.args, "limits": w.limits,
    });
    [
        (format!("workload/{}/code", w.name), code),
        (
            format!("workload/{}/settings", w.name),
            canonical_json(&settings),
        ),
    ]
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
            w.check(true)
                .map_err(|(f, reason)| invalid(field(f), reason))?;
            if !names.insert(&w.name) {
                return Err(invalid(
                    field("name"),
                    format!("'{}' is used by two workloads", w.name),
                ));
            }
        }
        if let Some(o) = &config.oidc {
            if o.jwks_file.is_none() == o.jwks_url.is_none() {
                return Err(invalid(
                    "oidc".into(),
                    "give exactly one of jwks_file and jwks_url".into(),
                ));
            }
            if let Some(u) = &o.jwks_url
                && !u.starts_with("https://")
            {
                return Err(invalid(
                    "oidc.jwks_url".into(),
                    format!("'{u}' is not an https:// URL"),
                ));
            }
            if o.issuer.is_empty() || o.audience.is_empty() {
                return Err(invalid(
                    "oidc".into(),
                    "issuer and audience must not be empty".into(),
                ));
            }
            if o.clock_skew_secs > 300 {
                return Err(invalid(
                    "oidc.clock_skew_secs".into(),
                    format!("{} is more than 300 seconds", o.clock_skew_secs),
                ));
            }
            if let Some(l) = o.max_token_lifetime_secs
                && (l == 0 || l > OidcConfig::MAX_TOKEN_LIFETIME_CEILING_SECS)
            {
                return Err(invalid(
                    "oidc.max_token_lifetime_secs".into(),
                    format!(
                        "{l} is not between 1 and {} seconds",
                        OidcConfig::MAX_TOKEN_LIFETIME_CEILING_SECS
                    ),
                ));
            }
            if let Some(r) = o.jwks_refresh_secs {
                if o.jwks_file.is_some() {
                    return Err(invalid(
                        "oidc.jwks_refresh_secs".into(),
                        "applies to jwks_url only: a jwks_file is read once at start and never reloaded".into(),
                    ));
                }
                if r < OidcConfig::MIN_JWKS_REFRESH_SECS {
                    return Err(invalid(
                        "oidc.jwks_refresh_secs".into(),
                        format!(
                            "{r} is less than {} seconds",
                            OidcConfig::MIN_JWKS_REFRESH_SECS
                        ),
                    ));
                }
            }
        }
        let m = &config.management.hostname;
        if m.is_empty() || m.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(
                "management.hostname".into(),
                format!("'{m}' must be a DNS name, not empty or an IP address"),
            ));
        }
        for (i, w) in config.workloads.iter().enumerate() {
            if w.hostnames.iter().any(|h| h.eq_ignore_ascii_case(m)) {
                return Err(invalid(
                    format!("workload[{i}].hostnames"),
                    format!("'{m}' is reserved for the management API"),
                ));
            }
        }
        match (&config.store.counter, &config.store.witness) {
            (CounterKind::Witness, None) => {
                return Err(invalid(
                    "store.witness".into(),
                    "counter = \"witness\" needs [store.witness] with url and root".into(),
                ));
            }
            (_, Some(w)) if !w.url.starts_with("https://") => {
                return Err(invalid(
                    "store.witness.url".into(),
                    format!("'{}' is not an https:// URL", w.url),
                ));
            }
            _ => {}
        }
        if let Some(w) = &config.witness
            && w.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "witness.listen".into(),
                format!("'{}' is not HOST:PORT with an IP address", w.listen),
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
        self.tree_with(runtime_version, &[])
    }

    /// The config tree with `loaded`: workloads loaded at run time (through the management
    /// API), each with its code bytes, beside those of the file.
    pub fn tree_with(
        &self,
        runtime_version: &str,
        loaded: &[(Workload, Vec<u8>)],
    ) -> Result<ConfigTree, ConfigError> {
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
        // Sections that change whom the runtime trusts are leaves when present; absent, the
        // defaults apply and the tree of an older configuration is unchanged.
        if c.management != ManagementConfig::default() {
            leaves.push(("management".into(), canonical_json(&c.management)));
        }
        if c.store != StoreConfig::default() {
            leaves.push(("store".into(), canonical_json(&c.store)));
            if let Some(w) = &c.store.witness {
                leaves.push((
                    "store/witness-root".into(),
                    self.read("store.witness.root", &w.root)?,
                ));
            }
        }
        if let Some(w) = &c.witness {
            leaves.push(("witness".into(), canonical_json(w)));
            leaves.push((
                "witness/clients-root".into(),
                self.read("witness.clients_root", &w.clients_root)?,
            ));
        }
        for (i, w) in c.workloads.iter().enumerate() {
            let code = match (&w.source, &w.image) {
                (Some(p), _) => self.read(&format!("workload[{i}].source"), p)?,
                (None, Some(image)) => image.as_bytes().to_vec(),
                (None, None) => Vec::new(),
            };
            leaves.extend(workload_leaves(w, code));
        }
        for (w, code) in loaded {
            leaves.extend(workload_leaves(w, code.clone()));
        }
        Ok(ConfigTree::from_values(
            leaves.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )?)
    }
}
