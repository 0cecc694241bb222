//! `enclave.toml`: the runtime's configuration file, and the config-tree leaves it yields.
//!
//! Every input that decides what runs and whom it trusts is a named leaf of the config tree,
//! committed by content: a file the configuration names is read once, at load (`inputs`), and
//! its bytes are both the leaf's value and what the runtime uses. JSON leaves are RFC 8785 (JCS)
//! bytes (`canonical`). `docs/config-tree.md` lists every leaf and its exact members:
//!
//! | leaf | value |
//! |---|---|
//! | `runtime/version` | the Enclave OS version |
//! | `attestation/servers` | the attestation server URLs, JCS |
//! | `limits` | the runtime limits, JCS |
//! | `oidc` | issuer, audience, clock skew and JWKS URL, JCS (`null` when none) |
//! | `oidc/jwks` | the JWKS bytes the runtime checks tokens with (the file's, or those fetched) |
//! | `ca/certificate` | the operator's intermediary CA certificate file, when configured |
//! | `egress/ca-bundle` | the egress CA bundle file (empty when none) |
//! | `policy` | the appraisal policy file for peers, when configured |
//! | `management` | the management hostname, JCS, when not the default |
//! | `store`, `store/witness-root`, `store/witness-trust-sim` | the rollback counter, JCS, and the witness's trust files, when not the default |
//! | `witness`, `witness/clients-root`, `witness/trust-sim` | the witness listener, JCS, and its clients' trust files, when serving as one |
//! | `workload/<name>/code` | the workload's code (component bytes), so the leaf's value hash is its code hash |
//! | `workload/<name>/settings` | kind, hostnames, env, args and limits, JCS |
//! | `workload/<name>/client-policy`, `client-root`, `client-trust-sim` | the files `[workload.ingress]` names (`ingress`) |
//! | `listener/evidence-binding` | `dice` when `[listener] evidence_binding = "dice"` (absent for the default `seed`) |
//! | `sealing/policy` | `signer` when `seal_policy = "signer"` (absent for the default `measurement`) |
//! | `vault`, `vault/client-root`, `vault/trust-sim` | the vault's settings, JCS, and its trust files, with `[vault]` |
//! | `vault/policy/<name>` | one vault policy, JCS, appraisal policies inline (the file's and the API's) |
//!
//! Listen addresses, the state directory and the paths of files are not leaves: the host chooses
//! them, and they change neither what runs nor whom it trusts.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::canonical::{self, CanonicalError};
pub use crate::container::{
    ContainerSettings, ContainersConfig, EngineVersions, HealthCheck, ImageLeaves, RegistryConfig,
    RestartPolicy, WorkloadCode,
};
pub use crate::ingress::{ClaimValues, ClientAuth, Ingress, IngressFiles, IngressOidc};
use crate::inputs::{Inputs, Reader};
use crate::merkle::{ConfigTree, TreeError};
pub use crate::proxy::{ProxySettings, UpstreamProtocol};
pub use crate::service::{ProcessSettings, ServiceSettings};

/// Why a configuration could not be used: the file, where, and what.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    /// A leaf has no value: a JSON leaf without an exact canonical form, or an input not
    /// available yet (a JWKS URL not fetched).
    #[error("config-tree leaf `{leaf}`: {reason}")]
    Leaf {
        /// The leaf's name.
        leaf: String,
        /// Why.
        reason: String,
    },
    /// The tree could not be built.
    #[error("{0}")]
    Tree(#[from] TreeError),
}

impl ConfigError {
    fn leaf(leaf: &str, e: CanonicalError) -> Self {
        Self::Leaf {
            leaf: leaf.into(),
            reason: e.to_string(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8443".into()]
}

/// The TEE backend (`tee = "…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
#[non_exhaustive]
pub enum TeeChoice {
    /// Whatever this machine offers, probed in a fixed order; refused if none.
    #[default]
    Auto,
    /// The SGX simulator (development and CI only).
    SimSgx,
    /// The TDX simulator (development and CI only).
    SimTdx,
    /// Intel TDX, through the kernel's configfs-tsm.
    Tdx,
    /// AMD SEV-SNP, through /dev/sev-guest or configfs-tsm.
    Snp,
    /// Intel SGX under Gramine.
    Sgx,
}

impl TeeChoice {
    /// Every choice, in the order the documentation lists them.
    pub const ALL: [TeeChoice; 6] = [
        TeeChoice::Auto,
        TeeChoice::SimSgx,
        TeeChoice::SimTdx,
        TeeChoice::Tdx,
        TeeChoice::Snp,
        TeeChoice::Sgx,
    ];

    /// Its name in `enclave.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeChoice::Auto => "auto",
            TeeChoice::SimSgx => "sim-sgx",
            TeeChoice::SimTdx => "sim-tdx",
            TeeChoice::Tdx => "tdx",
            TeeChoice::Snp => "snp",
            TeeChoice::Sgx => "sgx",
        }
    }
}

impl std::fmt::Display for TeeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TeeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
                format!("tee '{s}' is not one of {}", names.join(", "))
            })
    }
}

impl TryFrom<String> for TeeChoice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TeeChoice> for &'static str {
    fn from(t: TeeChoice) -> Self {
        t.as_str()
    }
}

/// What sealed state is bound to (`seal_policy = "…"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum SealPolicyChoice {
    /// This exact build; a new build needs an explicit migration.
    #[default]
    Measurement,
    /// The signer: survives updates signed by the same key (SGX only; refused on SEV-SNP).
    Signer,
}

impl SealPolicyChoice {
    /// Its name in `enclave.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            SealPolicyChoice::Measurement => "measurement",
            SealPolicyChoice::Signer => "signer",
        }
    }
}

impl std::fmt::Display for SealPolicyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for SealPolicyChoice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "measurement" => Ok(SealPolicyChoice::Measurement),
            "signer" => Ok(SealPolicyChoice::Signer),
            other => Err(format!(
                "seal_policy '{other}' is neither measurement nor signer"
            )),
        }
    }
}

impl From<SealPolicyChoice> for &'static str {
    fn from(p: SealPolicyChoice) -> Self {
        p.as_str()
    }
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

/// How the evidence in the listener's RA-TLS certificates binds their key. It decides which
/// verifiers can check them, and whether the evidence binds the config root: a leaf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceBinding {
    /// The raw quote or report extension, report_data = SHA-512(SHA-256(SPKI) || binding).
    #[default]
    Seed,
    /// TCG DICE tagged evidence (Gramine, rats-tls), report_data = SHA-256 of the claims, which
    /// carry the key hash, the binding, the config root and the workload identity. SGX and TDX.
    Dice,
}

impl EvidenceBinding {
    /// The name in `enclave.toml` and in the `listener/evidence-binding` leaf.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceBinding::Seed => "seed",
            EvidenceBinding::Dice => "dice",
        }
    }
}

/// The RA-TLS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `seed` (default) or `dice`.
    #[serde(default)]
    pub evidence_binding: EvidenceBinding,
}

/// Where the sealed store's rollback counter lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
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
    /// The config root (64 hex digits) the witness's certificate must carry. A chain to the
    /// operator's root alone would let any instance of that operator stand in for the witness.
    pub config_root: Option<String>,
    /// An appraisal policy (TOML, see `docs/policy.md`) the witness's evidence must satisfy:
    /// the other way to pin which build keeps the counter.
    pub policy: Option<PathBuf>,
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
    /// Seconds a client has to send a complete request head, counted from when the connection
    /// is ready for one: after the handshake and after each response. So it is also how long a
    /// keep-alive connection may sit idle.
    #[serde(default = "Limits::default_header_timeout")]
    pub header_timeout_secs: NonZeroU32,
    /// Seconds a management API request may take, its body included.
    #[serde(default = "Limits::default_request_timeout")]
    pub request_timeout_secs: NonZeroU32,
    /// Seconds a response may make no progress, its client reading none of it, before the
    /// connection is closed: a client that pipelines requests and never reads cannot hold a
    /// connection and its buffers.
    #[serde(default = "Limits::default_write_stall")]
    pub write_stall_secs: NonZeroU32,
    /// Challenge-mode certificates (a fresh key, quote and signature each) issued at once, off
    /// the threads that serve requests. As many more may wait; a challenge beyond that is refused.
    #[serde(default = "Limits::default_challenges")]
    pub max_challenge_handshakes: NonZeroU32,
    /// Concurrent connections to the witness listener.
    #[serde(default = "Limits::default_witness_connections")]
    pub max_witness_connections: NonZeroU32,
    /// Connections one source address may hold on the RA-TLS listener; absent: no cap of its
    /// own (clients behind one NAT or balancer share an address). Left out of the leaf when
    /// absent, so configurations without it keep their roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<NonZeroU32>,
}

impl Limits {
    fn default_connections() -> u32 {
        1024
    }
    fn default_body() -> u64 {
        1 << 20
    }
    fn default_wasm_instances() -> NonZeroU32 {
        const N: NonZeroU32 = nonzero(64);
        N
    }
    fn default_header_timeout() -> NonZeroU32 {
        const N: NonZeroU32 = nonzero(10);
        N
    }
    fn default_request_timeout() -> NonZeroU32 {
        const N: NonZeroU32 = nonzero(60);
        N
    }
    fn default_write_stall() -> NonZeroU32 {
        const N: NonZeroU32 = nonzero(10);
        N
    }
    fn default_challenges() -> NonZeroU32 {
        const N: NonZeroU32 = nonzero(2);
        N
    }
    fn default_witness_connections() -> NonZeroU32 {
        const N: NonZeroU32 = nonzero(64);
        N
    }
}

/// A default that is not zero; each caller builds a constant, so a zero fails the build.
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("a default limit of zero"),
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: Self::default_connections(),
            max_request_bytes: Self::default_body(),
            max_wasm_instances: Self::default_wasm_instances(),
            header_timeout_secs: Self::default_header_timeout(),
            request_timeout_secs: Self::default_request_timeout(),
            write_stall_secs: Self::default_write_stall(),
            max_challenge_handshakes: Self::default_challenges(),
            max_witness_connections: Self::default_witness_connections(),
            max_connections_per_source: None,
        }
    }
}

/// What a workload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WorkloadKind {
    /// A wasi:http component run inside the runtime.
    Wasm,
    /// An OCI container behind the attested proxy.
    Container,
    /// A local process behind the attested proxy.
    Process,
}

impl WorkloadKind {
    /// Its name in `enclave.toml` (`kind = "…"`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Wasm => "wasm",
            WorkloadKind::Container => "container",
            WorkloadKind::Process => "process",
        }
    }
}

/// Per-workload limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadLimits {
    /// Memory cap, bytes.
    pub memory_bytes: Option<u64>,
    /// Wall-clock deadline per request, milliseconds.
    pub request_timeout_ms: Option<u64>,
    /// CPU, in thousandths of one CPU (containers).
    // Absent from the settings leaf when unset, so that the trees of configurations written
    // before these limits existed keep their roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Processes and threads (containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

/// What a workload runs, by kind, with the fields that kind takes and no other.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Run {
    /// A wasi:http component run inside the runtime: its file (`None` when the management API
    /// brought the bytes).
    Wasm {
        /// The component file.
        source: Option<PathBuf>,
    },
    /// An OCI container behind the attested proxy: its image, pinned by digest, and how it
    /// is run.
    Container {
        /// `host/name@sha256:…`.
        image: String,
        /// `[workload.container]`.
        settings: ContainerSettings,
    },
    /// A local process behind the attested proxy: its executable (`None` when the management
    /// API brought the bytes), and how it is run.
    Process {
        /// The executable.
        source: Option<PathBuf>,
        /// `[workload.process]`.
        settings: ProcessSettings,
    },
}

impl Run {
    /// Its kind.
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Run::Wasm { .. } => WorkloadKind::Wasm,
            Run::Container { .. } => WorkloadKind::Container,
            Run::Process { .. } => WorkloadKind::Process,
        }
    }

    /// The code file, for the kinds that have one.
    pub fn source(&self) -> Option<&Path> {
        match self {
            Run::Wasm { source } | Run::Process { source, .. } => source.as_deref(),
            Run::Container { .. } => None,
        }
    }

    /// The image, for a container.
    pub fn image(&self) -> Option<&str> {
        match self {
            Run::Container { image, .. } => Some(image),
            Run::Wasm { .. } | Run::Process { .. } => None,
        }
    }

    /// The container settings, for a container.
    pub fn container(&self) -> Option<&ContainerSettings> {
        match self {
            Run::Container { settings, .. } => Some(settings),
            Run::Wasm { .. } | Run::Process { .. } => None,
        }
    }

    /// The process settings, for a process.
    pub fn process(&self) -> Option<&ProcessSettings> {
        match self {
            Run::Process { settings, .. } => Some(settings),
            Run::Wasm { .. } | Run::Container { .. } => None,
        }
    }

    /// The port, health check and restart policy, for the kinds run behind the proxy.
    pub fn service(&self) -> Option<&ServiceSettings> {
        match self {
            Run::Container { settings, .. } => Some(&settings.service),
            Run::Process { settings, .. } => Some(&settings.service),
            Run::Wasm { .. } => None,
        }
    }
}

/// One workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WorkloadFields", into = "WorkloadFields")]
pub struct Workload {
    /// Its name (also its key-value namespace).
    pub name: String,
    /// What it runs.
    pub run: Run,
    /// Hostnames it serves (SNI / Host).
    pub hostnames: Vec<String>,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Arguments.
    pub args: Vec<String>,
    /// Limits.
    pub limits: WorkloadLimits,
    /// How the front speaks to a container's or process's service (`[workload.proxy]`).
    pub proxy: Option<ProxySettings>,
    /// `[workload.ingress]`: who may call it (`None`: anyone the listener serves).
    pub ingress: Option<Ingress>,
    /// The vault key whose private half unwraps this workload's encrypted code: a wasm
    /// component sent as JWE, or the layer keys of an image encrypted to it (ocicrypt's
    /// `jwe` scheme). Released to the workload only as its vault policy allows. `None`: the
    /// code is plaintext, or its layer keys name their own KBS resources.
    pub decryption_key: Option<String>,
}

/// A `[[workload]]` table as written: every kind's fields side by side. Turned into a
/// [`Workload`] only if the fields fit the kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFields {
    name: String,
    kind: WorkloadKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    limits: WorkloadLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container: Option<ContainerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<ProcessSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ingress: Option<Ingress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decryption_key: Option<String>,
}

impl TryFrom<WorkloadFields> for Workload {
    type Error = String;

    fn try_from(f: WorkloadFields) -> Result<Self, String> {
        let name = &f.name;
        if f.kind != WorkloadKind::Container && f.container.is_some() {
            return Err(format!(
                "workload '{name}': [workload.container] is for containers, not a {} workload",
                f.kind.as_str()
            ));
        }
        if f.kind == WorkloadKind::Wasm && f.proxy.is_some() {
            return Err(format!(
                "workload '{name}': [workload.proxy] is for containers and processes; a wasm workload runs inside the runtime, with no service to proxy to"
            ));
        }
        if f.kind != WorkloadKind::Process && f.process.is_some() {
            return Err(format!(
                "workload '{name}': [workload.process] is for processes, not a {} workload",
                f.kind.as_str()
            ));
        }
        check_decryption_key(name, f.kind, f.decryption_key.as_deref())?;
        let run = match (f.kind, f.source, f.image) {
            (WorkloadKind::Wasm, source, None) => Run::Wasm { source },
            (WorkloadKind::Process, source, None) => match f.process {
                Some(settings) => Run::Process { source, settings },
                None => {
                    return Err(format!(
                        "workload '{name}': a process workload needs [workload.process] with at least the port it listens on"
                    ));
                }
            },
            (WorkloadKind::Container, None, Some(image)) => match f.container {
                Some(settings) => Run::Container { image, settings },
                None => {
                    return Err(format!(
                        "workload '{name}': a container workload needs [workload.container] with at least its port"
                    ));
                }
            },
            (kind @ (WorkloadKind::Wasm | WorkloadKind::Process), _, Some(_)) => {
                return Err(format!(
                    "workload '{name}': image is for containers; a {} workload names its code with source",
                    kind.as_str()
                ));
            }
            (WorkloadKind::Container, Some(_), _) => {
                return Err(format!(
                    "workload '{name}': a container runs an image (image = \"name@sha256:…\"), not a source file"
                ));
            }
            (WorkloadKind::Container, None, None) => {
                return Err(format!(
                    "workload '{name}': a container workload needs image = \"name@sha256:…\""
                ));
            }
        };
        Ok(Workload {
            name: f.name,
            run,
            hostnames: f.hostnames,
            env: f.env,
            args: f.args,
            limits: f.limits,
            proxy: f.proxy,
            ingress: f.ingress,
            decryption_key: f.decryption_key,
        })
    }
}

/// `decryption_key` names a vault key, and only for the kinds whose code can be encrypted.
pub fn check_decryption_key(
    name: &str,
    kind: WorkloadKind,
    key: Option<&str>,
) -> Result<(), String> {
    let Some(key) = key else { return Ok(()) };
    if kind == WorkloadKind::Process {
        return Err(format!(
            "workload '{name}': decryption_key is for wasm components and container images; a process's executable is not decrypted"
        ));
    }
    crate::vault::check_name(key).map_err(|e| format!("workload '{name}': decryption_key: {e}"))
}

impl From<Workload> for WorkloadFields {
    fn from(w: Workload) -> Self {
        let kind = w.run.kind();
        let (source, image, container, process) = match w.run {
            Run::Wasm { source } => (source, None, None, None),
            Run::Process { source, settings } => (source, None, None, Some(settings)),
            Run::Container { image, settings } => (None, Some(image), Some(settings), None),
        };
        WorkloadFields {
            kind,
            name: w.name,
            source,
            image,
            hostnames: w.hostnames,
            env: w.env,
            args: w.args,
            limits: w.limits,
            container,
            proxy: w.proxy,
            process,
            ingress: w.ingress,
            decryption_key: w.decryption_key,
        }
    }
}

/// Names that resolve to this machine's loopback on common systems (`/etc/hosts`).
const LOOPBACK_ALIASES: [&str; 6] = [
    "localhost",
    "localhost.localdomain",
    "localhost6",
    "localhost6.localdomain6",
    "ip6-localhost",
    "ip6-loopback",
];

/// Whether `h` may be a workload's hostname: a DNS name in letters, digits and hyphens
/// (RFC 1123 labels of 1 to 63, at most 253 in all, no trailing dot), whose last label starts
/// with a letter, so that no spelling of an IP address a resolver would accept (`127.1`,
/// `2130706433`, `0x7f000001`) passes, and not a loopback alias.
fn workload_hostname(h: &str) -> Result<(), &'static str> {
    dns_name(h)?;
    if !h
        .rsplit('.')
        .next()
        .is_some_and(|last| last.starts_with(|c: char| c.is_ascii_alphabetic()))
    {
        return Err(
            "is not a workload's own DNS name: its last label starts with a digit, as IP addresses do, and IP addresses reach the management API",
        );
    }
    if LOOPBACK_ALIASES.iter().any(|a| a.eq_ignore_ascii_case(h)) {
        return Err(
            "is not a workload's own DNS name: localhost and its aliases reach the management API",
        );
    }
    Ok(())
}

/// Whether `h` is a DNS name in one spelling only: letters, digits and inner hyphens (RFC 1123
/// labels of 1 to 63, at most 253 in all), and no trailing dot. `a.test.` and `a.test` name one
/// host to a resolver; comparing names as text is only sound if one of the two is refused.
pub(crate) fn dns_name(h: &str) -> Result<(), &'static str> {
    if h.is_empty() || h.len() > 253 {
        return Err("is not a DNS name of 1 to 253 characters");
    }
    if h.ends_with('.') {
        return Err("must be written without its trailing dot");
    }
    for label in h.split('.') {
        let ldh = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ldh {
            return Err(
                "is not a DNS name: labels of 1 to 63 letters, digits and inner hyphens, no wildcards",
            );
        }
    }
    Ok(())
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
        // A workload's names are DNS names of its own. `localhost` (and its usual aliases) and
        // IP addresses, in any spelling a resolver accepts, are how clients reach the management
        // API (the enclave-wide certificate names them): a workload claiming one would receive
        // the operator's requests and bearer tokens.
        for h in &self.hostnames {
            if let Err(why) = workload_hostname(h) {
                return Err(("hostnames", format!("'{h}' {why}")));
            }
        }
        match &self.run {
            Run::Wasm { source: None } | Run::Process { source: None, .. } if needs_source => {
                Err((
                    "source",
                    "a wasm or process workload needs its code file".into(),
                ))
            }
            Run::Container { image, .. } if !image.contains("@sha256:") => Err((
                "image",
                format!("'{image}' is not pinned by digest (name@sha256:…)"),
            )),
            Run::Container { settings, .. } => settings.check(),
            Run::Process { settings, .. } => {
                settings.check(self.limits.cpu_millis, self.limits.pids)
            }
            Run::Wasm { .. } => Ok(()),
        }?;
        if let Some(p) = &self.proxy {
            p.check()?;
            if p.protocol != UpstreamProtocol::Http1
                && self
                    .run
                    .service()
                    .is_some_and(|s| s.health.http_path.is_some())
            {
                return Err((
                    "proxy.protocol",
                    format!(
                        "the HTTP health check speaks HTTP/1.1, and this service speaks {}: leave http_path out to check it by TCP connection",
                        p.protocol.as_str()
                    ),
                ));
            }
            if p.protocol == UpstreamProtocol::Tcp
                && self.ingress.as_ref().is_some_and(|i| i.oidc.is_some())
            {
                return Err((
                    "ingress.oidc",
                    "proxy.protocol = \"tcp\" carries no HTTP request, so no bearer token: a tcp workload's gate can be mutual RA-TLS only".into(),
                ));
            }
        }
        Ok(())
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
    #[serde(default)]
    pub tee: TeeChoice,
    /// Where sealed state lives.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// What sealed state is bound to: `measurement` (this exact build; a new build needs an
    /// explicit migration) or `signer` (survives updates signed by the same signer).
    #[serde(default)]
    pub seal_policy: SealPolicyChoice,
    /// On a TEE with no sealing key of its own (TDX), the environment variable holding a
    /// 32-byte root key (64 hex digits) the operator supplies, sealing keys being derived from
    /// it and the measurement. Whoever holds it can unseal: a stopgap until a vault releases
    /// keys to attested TDs. Committed as `sealing/key-source` = `operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key_env: Option<String>,
    /// On a TEE with no sealing key of its own (TDX), obtain the 32-byte root key from a KBS
    /// (another Enclave OS vault, or Trustee) after attesting to it. Committed as
    /// `sealing/key-source` = `kbs` with `sealing/kbs` and the KBS's trust files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_key_kbs: Option<crate::vault::SealKeyKbs>,
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
    /// The RA-TLS listener's certificates.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// The sealed key-value store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Serving as a witness for other instances.
    pub witness: Option<WitnessConfig>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// The container engine, for container workloads.
    pub containers: Option<ContainersConfig>,
    /// Registries container images are pulled from.
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryConfig>,
    /// Workloads.
    #[serde(default, rename = "workload")]
    pub workloads: Vec<Workload>,
    /// The vault: who may have which secret or key (`crate::vault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<crate::vault::VaultConfig>,
}

/// The registry host of image reference `image` (`host[:port]/repo…@sha256:…`): what comes
/// before the first `/`, when it looks like a host (has a `.` or a `:`, or is `localhost`).
pub fn image_registry(image: &str) -> Option<&str> {
    let (host, _) = image.split_once('/')?;
    (host.contains('.') || host.contains(':') || host == "localhost").then_some(host)
}

/// A configuration as loaded: its file, its content, and the content of every file it names
/// (read once, at load: the tree commits those bytes and the runtime uses them).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The parsed content.
    pub config: EnclaveConfig,
    inputs: Inputs,
}

/// A JSON leaf: `v` in RFC 8785 form.
fn json_leaf(name: &str, v: &impl Serialize) -> Result<(String, Vec<u8>), ConfigError> {
    let bytes = canonical::jcs(v).map_err(|e| ConfigError::leaf(name, e))?;
    Ok((name.to_string(), bytes))
}

/// A JSON leaf of `v` without the members that name files: the files' contents are leaves of
/// their own, and where the host keeps them is its choice. `drop`: pairs of a JSON Pointer to an
/// object and the member to remove from it.
fn json_leaf_without(
    name: &str,
    v: &impl Serialize,
    drop: &[(&str, &str)],
) -> Result<(String, Vec<u8>), ConfigError> {
    let mut value = canonical::to_value(v).map_err(|e| ConfigError::leaf(name, e))?;
    for (parent, member) in drop {
        if let Some(serde_json::Value::Object(m)) = value.pointer_mut(parent) {
            m.remove(*member);
        }
    }
    let bytes = canonical::encode(&value).map_err(|e| ConfigError::leaf(name, e))?;
    Ok((name.to_string(), bytes))
}

/// What `workload/<name>/settings` commits.
#[derive(Serialize)]
struct Settings<'a> {
    kind: WorkloadKind,
    hostnames: &'a [String],
    env: &'a BTreeMap<String, String>,
    args: &'a [String],
    limits: &'a WorkloadLimits,
    // Absent for other kinds, so that their leaves are what they were before containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a ContainerSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<&'a ProxySettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<&'a ProcessSettings>,
    // Absent without `[workload.ingress]`, as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    ingress: Option<crate::ingress::IngressLeaf<'a>>,
    // Absent for plaintext code, as above.
    #[serde(skip_serializing_if = "Option::is_none")]
    decryption_key: Option<&'a str>,
}

/// A workload's leaves: its code, its settings in RFC 8785 form, and for a container its
/// image configuration and runtime spec.
fn workload_leaves(
    w: &Workload,
    code: &WorkloadCode,
) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    let settings = Settings {
        kind: w.run.kind(),
        hostnames: &w.hostnames,
        env: &w.env,
        args: &w.args,
        limits: &w.limits,
        image: w.run.image(),
        container: w.run.container(),
        proxy: w.proxy.as_ref(),
        process: w.run.process(),
        ingress: w.ingress.as_ref().map(Ingress::leaf),
        decryption_key: w.decryption_key.as_deref(),
    };
    let mut leaves = vec![
        (format!("workload/{}/code", w.name), code.code().to_vec()),
        json_leaf(&format!("workload/{}/settings", w.name), &settings)?,
    ];
    match (code, w.run.kind()) {
        (WorkloadCode::Image(i), WorkloadKind::Container) => {
            leaves.push((
                format!("workload/{}/image-config", w.name),
                i.config.clone(),
            ));
            leaves.push((
                format!("workload/{}/runtime-spec", w.name),
                i.runtime_spec.clone(),
            ));
        }
        (WorkloadCode::Module(_), WorkloadKind::Wasm | WorkloadKind::Process) => {}
        (_, kind) => {
            return Err(ConfigError::Leaf {
                leaf: format!("workload/{}/code", w.name),
                reason: format!(
                    "a {} workload's code must be {}",
                    kind.as_str(),
                    if kind == WorkloadKind::Container {
                        "its resolved image"
                    } else {
                        "module bytes"
                    }
                ),
            });
        }
    }
    Ok(leaves)
}

impl EnclaveConfig {
    /// Parse and validate TOML `text` that came from `path`, reading none of the files it
    /// names (see [`LoadedConfig::parse`] for that).
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
        for (i, l) in config.listen.iter().enumerate() {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    format!("listen[{i}]"),
                    format!("'{l}' is not HOST:PORT with an IP address"),
                ));
            }
        }
        if let Some(v) = &config.vault {
            v.check(config.oidc.is_some())
                .map_err(|(f, reason)| invalid(f, reason))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in config.workloads.iter().enumerate() {
            let field = |f: &str| format!("workload[{i}].{f}");
            w.check(true)
                .map_err(|(f, reason)| invalid(field(f), reason))?;
            if let Some(ingress) = &w.ingress {
                ingress
                    .check(config.oidc.is_some())
                    .map_err(|(f, reason)| invalid(field(&f), reason))?;
            }
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
        if let Some(v) = &config.seal_key_env
            && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(invalid(
                "seal_key_env".into(),
                format!("'{v}' is not an environment variable name"),
            ));
        }
        if let Some(k) = &config.seal_key_kbs {
            if config.seal_key_env.is_some() {
                return Err(invalid(
                    "seal_key_kbs".into(),
                    "give seal_key_env or seal_key_kbs, not both: one root key seals".into(),
                ));
            }
            k.check()
                .map_err(|(f, why)| invalid(format!("seal_key_kbs.{f}"), why))?;
        }
        if let Some(c) = &config.containers {
            c.check()
                .map_err(|(f, why)| invalid(format!("containers.{f}"), why))?;
            if config.tee == TeeChoice::Sgx {
                return Err(invalid(
                    "containers".into(),
                    "containers run on VM TEEs (tdx, snp, the simulators), never inside an SGX enclave under Gramine".into(),
                ));
            }
        }
        let mut hosts = std::collections::BTreeSet::new();
        for (i, r) in config.registries.iter().enumerate() {
            r.check()
                .map_err(|(f, why)| invalid(format!("registry[{i}].{f}"), why))?;
            if !hosts.insert(r.host.to_ascii_lowercase()) {
                return Err(invalid(
                    format!("registry[{i}].host"),
                    format!("'{}' has two [[registry]] tables", r.host),
                ));
            }
        }
        for (i, w) in config.workloads.iter().enumerate() {
            let Some(image) = w.run.image() else { continue };
            if config.containers.is_none() {
                return Err(invalid(
                    format!("workload[{i}]"),
                    format!(
                        "'{}' is a container, and the file has no [containers] section",
                        w.name
                    ),
                ));
            }
            match image_registry(image) {
                Some(h) if hosts.contains(&h.to_ascii_lowercase()) => {}
                Some(h) => {
                    return Err(invalid(
                        format!("workload[{i}].image"),
                        format!("registry '{h}' has no [[registry]] table (with its CA bundle)"),
                    ));
                }
                None => {
                    return Err(invalid(
                        format!("workload[{i}].image"),
                        format!(
                            "'{image}' names no registry host: write host[:port]/name@sha256:…"
                        ),
                    ));
                }
            }
        }
        if config.listener.evidence_binding == EvidenceBinding::Dice && config.tee == TeeChoice::Snp
        {
            return Err(invalid(
                "listener.evidence_binding".into(),
                "'dice' carries DCAP quotes (SGX, TDX); SEV-SNP evidence has no DICE form here: use 'seed'".into(),
            ));
        }
        let m = &config.management.hostname;
        if m.is_empty() || m.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(
                "management.hostname".into(),
                format!("'{m}' must be a DNS name, not empty or an IP address"),
            ));
        }
        dns_name(m).map_err(|why| invalid("management.hostname".into(), format!("'{m}' {why}")))?;
        // One workload per hostname, whatever the case: routing takes the first it finds, so a
        // second claim would be served by nobody or by the wrong one.
        let mut claimed: BTreeMap<String, &str> = BTreeMap::new();
        let vault_host = config.vault.as_ref().and_then(|v| v.hostname.as_deref());
        if vault_host.is_some_and(|v| v.eq_ignore_ascii_case(m)) {
            return Err(invalid(
                "vault.hostname".into(),
                format!("'{m}' is the management hostname; the vault needs a name of its own"),
            ));
        }
        for (i, w) in config.workloads.iter().enumerate() {
            for h in &w.hostnames {
                if h.eq_ignore_ascii_case(m) {
                    return Err(invalid(
                        format!("workload[{i}].hostnames"),
                        format!("'{m}' is reserved for the management API"),
                    ));
                }
                if vault_host.is_some_and(|v| h.eq_ignore_ascii_case(v)) {
                    return Err(invalid(
                        format!("workload[{i}].hostnames"),
                        format!("'{h}' is reserved for the vault (vault.hostname)"),
                    ));
                }
                if let Some(other) = claimed.insert(h.to_ascii_lowercase(), &w.name) {
                    return Err(invalid(
                        format!("workload[{i}].hostnames"),
                        format!("'{h}' is already served by workload '{other}'"),
                    ));
                }
            }
        }
        // Processes share the machine's loopback: one port, one process.
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        for (i, w) in config.workloads.iter().enumerate() {
            if let Some(p) = w.run.process()
                && let Some(other) = ports.insert(p.service.port, &w.name)
            {
                return Err(invalid(
                    format!("workload[{i}].process.port"),
                    format!(
                        "{} is the port of process workload '{other}' already",
                        p.service.port
                    ),
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
            (_, Some(w)) if w.config_root.is_none() && w.policy.is_none() => {
                return Err(invalid(
                    "store.witness".into(),
                    "pin the witness with config_root or policy (or both): a chain to the \
                     operator's root alone lets any of the operator's instances answer for it"
                        .into(),
                ));
            }
            (_, Some(w))
                if w.config_root.as_deref().is_some_and(|r| {
                    r.len() != 64 || !r.bytes().all(|b| b.is_ascii_hexdigit())
                }) =>
            {
                return Err(invalid(
                    "store.witness.config_root".into(),
                    "is not 64 hex digits (a SHA-256 config root, as `enclave-os measure` prints)"
                        .into(),
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
        Ok(config)
    }
}

impl LoadedConfig {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse and validate TOML `text` that came from `path`, and read every file it names.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config = EnclaveConfig::parse(text, path)?;
        let inputs = Reader { file: path }.read_all(&config)?;
        Ok(Self {
            path: path.to_path_buf(),
            config,
            inputs,
        })
    }

    /// A path from the file, relative to the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        Reader { file: &self.path }.resolve(p)
    }

    /// The intermediary CA certificate, as read at load and committed as `ca/certificate`.
    pub fn ca_certificate(&self) -> Option<&[u8]> {
        self.inputs.ca_certificate.as_deref()
    }

    /// The egress CA bundle, as read at load and committed as `egress/ca-bundle`.
    pub fn egress_bundle(&self) -> Option<&[u8]> {
        self.inputs.egress_bundle.as_deref()
    }

    /// The appraisal policy, as read at load and committed as `policy`.
    pub fn policy(&self) -> Option<&[u8]> {
        self.inputs.policy.as_deref()
    }

    /// The JWKS committed as `oidc/jwks`: the `jwks_file` as read at load, or the bytes given
    /// to [`Self::with_jwks`] (fetched from `jwks_url`). `None` before a URL's JWKS is fetched.
    pub fn jwks(&self) -> Option<&[u8]> {
        self.inputs.jwks.as_deref()
    }

    /// The witness's root (`store.witness.root`), committed as `store/witness-root`.
    pub fn witness_root(&self) -> Option<&[u8]> {
        self.inputs.witness_root.as_deref()
    }

    /// The appraisal policy the witness must satisfy (`store.witness.policy`), committed as
    /// `store/witness-policy`.
    pub fn witness_policy(&self) -> Option<&[u8]> {
        self.inputs.witness_policy.as_deref()
    }

    /// The witness's simulation root certificate (`store.witness.trust_sim`), committed as
    /// `store/witness-trust-sim`.
    pub fn witness_trust_sim(&self) -> Option<&[u8]> {
        self.inputs.witness_trust_sim.as_deref()
    }

    /// The witness clients' root (`witness.clients_root`), committed as
    /// `witness/clients-root`.
    pub fn clients_root(&self) -> Option<&[u8]> {
        self.inputs.clients_root.as_deref()
    }

    /// The witness clients' simulation root certificate (`witness.trust_sim`), committed as
    /// `witness/trust-sim`.
    pub fn clients_trust_sim(&self) -> Option<&[u8]> {
        self.inputs.clients_trust_sim.as_deref()
    }

    /// The code of the file's workload `name`, committed as `workload/<name>/code` (and, for a
    /// container, its sibling leaves): its `source` as read at load, or its image once
    /// resolved ([`Self::with_image`]).
    pub fn workload_code(&self, name: &str) -> Option<WorkloadCode> {
        match self.inputs.code.get(name) {
            Some(code) => Some(WorkloadCode::Module(code.clone())),
            None => self
                .inputs
                .images
                .get(name)
                .cloned()
                .map(WorkloadCode::Image),
        }
    }

    /// The files the file's workload `name` names in `[workload.ingress]`, as read at load
    /// (committed as `workload/<name>/client-policy`, `client-root`, `client-trust-sim`).
    pub fn ingress_files(&self, name: &str) -> Option<&IngressFiles> {
        self.inputs.ingress.get(name)
    }

    /// The CA bundle of registry `host`, as read at load (committed as
    /// `registry/<host>/ca-bundle`).
    pub fn registry_bundle(&self, host: &str) -> Option<&[u8]> {
        self.inputs.registries.get(host).map(Vec::as_slice)
    }

    /// The KBS's root certificate, simulation root and appraisal policy (`seal_key_kbs`), as
    /// read at load.
    pub fn kbs_trust(&self) -> crate::vault::KbsTrust<'_> {
        crate::vault::KbsTrust {
            root: self.inputs.kbs_root.as_deref(),
            trust_sim: self.inputs.kbs_trust_sim.as_deref(),
            policy: self.inputs.kbs_policy.as_deref(),
        }
    }

    /// The files `[vault]` names, as read at load, and the file's policies with their
    /// appraisal policies read.
    pub fn vault_files(&self) -> &crate::vault::VaultFiles {
        &self.inputs.vault
    }

    /// The policies loaded through the management API, committed beside the file's.
    pub fn vault_api_policies(&self) -> &BTreeMap<String, crate::vault::PolicyDoc> {
        &self.inputs.vault_api
    }

    /// Every vault policy in force: the file's, then the API's.
    pub fn vault_policy(&self, name: &str) -> Option<&crate::vault::PolicyDoc> {
        self.inputs
            .vault
            .policies
            .get(name)
            .or_else(|| self.inputs.vault_api.get(name))
    }

    /// This configuration with `policies` as the vault policies loaded through the API. Each
    /// is checked; a name the file holds is refused (the file's policy is changed in the file).
    pub fn with_vault_policies(
        &self,
        policies: BTreeMap<String, crate::vault::PolicyDoc>,
    ) -> Result<Self, ConfigError> {
        let Some(_) = &self.config.vault else {
            return Err(ConfigError::Leaf {
                leaf: "vault/policy".into(),
                reason: "the configuration has no [vault] section to take policies".into(),
            });
        };
        for (name, p) in &policies {
            let leaf = format!("vault/policy/{name}");
            crate::vault::check_name(name).map_err(|reason| ConfigError::Leaf {
                leaf: leaf.clone(),
                reason,
            })?;
            if self.inputs.vault.policies.contains_key(name) {
                return Err(ConfigError::Leaf {
                    leaf,
                    reason: "a policy of that name is defined in enclave.toml; change it there"
                        .into(),
                });
            }
            p.check(self.config.oidc.is_some())
                .map_err(|(f, why)| ConfigError::Leaf {
                    leaf,
                    reason: format!("{f}: {why}"),
                })?;
        }
        let mut next = self.clone();
        next.inputs.vault_api = policies;
        Ok(next)
    }

    /// This configuration with the container engine's `versions`, committed as
    /// `containers/engine`.
    pub fn with_engine(&self, versions: EngineVersions) -> Self {
        let mut next = self.clone();
        next.inputs.engine = Some(versions);
        next
    }

    /// This configuration with the file's container workload `name` resolved to `image`: its
    /// manifest, configuration and runtime spec, which the tree commits.
    pub fn with_image(&self, name: &str, image: ImageLeaves) -> Result<Self, ConfigError> {
        if !self
            .config
            .workloads
            .iter()
            .any(|w| w.name == name && w.run.image().is_some())
        {
            return Err(ConfigError::Leaf {
                leaf: format!("workload/{name}/code"),
                reason: "the file has no container workload of that name".into(),
            });
        }
        let mut next = self.clone();
        next.inputs.images.insert(name.to_string(), image);
        Ok(next)
    }

    /// This configuration with `jwks` as its JWKS: the bytes fetched from `jwks_url` (at start,
    /// or a later refetch). Its tree commits them as `oidc/jwks`, so a new key set is a new
    /// tree and a new config root, never a silent change under the old one.
    pub fn with_jwks(&self, jwks: Vec<u8>) -> Result<Self, ConfigError> {
        if self.config.oidc.is_none() {
            return Err(ConfigError::Leaf {
                leaf: "oidc/jwks".into(),
                reason: "the configuration has no [oidc] section to take a JWKS".into(),
            });
        }
        let mut next = self.clone();
        next.inputs.jwks = Some(jwks);
        Ok(next)
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
        loaded: &[(Workload, WorkloadCode)],
    ) -> Result<ConfigTree, ConfigError> {
        let leaves = self.leaf_values(runtime_version, loaded)?;
        Ok(ConfigTree::from_values(
            leaves.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )?)
    }

    /// Every leaf's name and value bytes, unsorted: what [`Self::tree_with`] hashes.
    pub fn leaf_values(
        &self,
        runtime_version: &str,
        loaded: &[(Workload, WorkloadCode)],
    ) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
        let c = &self.config;
        let i = &self.inputs;
        let mut leaves: Vec<(String, Vec<u8>)> = vec![
            (
                "runtime/version".into(),
                runtime_version.as_bytes().to_vec(),
            ),
            json_leaf("attestation/servers", &c.attestation_servers)?,
            json_leaf("limits", &c.limits)?,
            json_leaf_without("oidc", &c.oidc, &[("", "jwks_file")])?,
        ];
        if let Some(o) = &c.oidc {
            let jwks = i.jwks.clone().ok_or_else(|| ConfigError::Leaf {
                leaf: "oidc/jwks".into(),
                reason: format!(
                    "the JWKS of jwks_url {} has not been fetched: the tree commits its bytes (`enclave-os measure --jwks FILE` takes them)",
                    o.jwks_url.as_deref().unwrap_or("(none)")
                ),
            })?;
            leaves.push(("oidc/jwks".into(), jwks));
        }
        if let Some(b) = &i.ca_certificate {
            leaves.push(("ca/certificate".into(), b.clone()));
        }
        leaves.push((
            "egress/ca-bundle".into(),
            i.egress_bundle.clone().unwrap_or_default(),
        ));
        if let Some(b) = &i.policy {
            leaves.push(("policy".into(), b.clone()));
        }
        // Sections that change whom the runtime trusts are leaves when present; absent, the
        // defaults apply and the tree of an older configuration is unchanged.
        if c.management != ManagementConfig::default() {
            leaves.push(json_leaf("management", &c.management)?);
        }
        // Absent when it is the default, so that older configurations keep their root.
        if c.listener.evidence_binding != EvidenceBinding::default() {
            leaves.push((
                "listener/evidence-binding".into(),
                c.listener.evidence_binding.as_str().as_bytes().to_vec(),
            ));
        }
        // The seal policy decides which builds can unseal what this one seals: `signer` lets
        // any build of the same signer read it, so a host must not switch to it unseen. Absent
        // for the default `measurement`, as above.
        if c.seal_policy != SealPolicyChoice::default() {
            leaves.push((
                "sealing/policy".into(),
                c.seal_policy.as_str().as_bytes().to_vec(),
            ));
        }
        // Who can unseal: with an operator-supplied key, whoever holds it. A client must see
        // that, so it is a leaf (absent otherwise: the TEE's own key, as before).
        if c.seal_key_env.is_some() {
            leaves.push(("sealing/key-source".into(), b"operator".to_vec()));
        }
        // Whoever the KBS releases the root key to can unseal: the KBS, its resource and whom
        // the runtime trusts to be it are leaves, so a host cannot point it at a KBS it runs.
        if let Some(k) = &c.seal_key_kbs {
            leaves.push(("sealing/key-source".into(), b"kbs".to_vec()));
            leaves.push(json_leaf("sealing/kbs", &k.leaf())?);
            for (name, bytes) in [
                ("sealing/kbs-root", &i.kbs_root),
                ("sealing/kbs-trust-sim", &i.kbs_trust_sim),
                ("sealing/kbs-policy", &i.kbs_policy),
            ] {
                if let Some(b) = bytes {
                    leaves.push((name.into(), b.clone()));
                }
            }
        }
        if c.store != StoreConfig::default() {
            leaves.push(json_leaf_without(
                "store",
                &c.store,
                &[
                    ("/witness", "root"),
                    ("/witness", "trust_sim"),
                    ("/witness", "policy"),
                ],
            )?);
            if let Some(b) = &i.witness_root {
                leaves.push(("store/witness-root".into(), b.clone()));
            }
            if let Some(b) = &i.witness_trust_sim {
                leaves.push(("store/witness-trust-sim".into(), b.clone()));
            }
            if let Some(b) = &i.witness_policy {
                leaves.push(("store/witness-policy".into(), b.clone()));
            }
        }
        if let Some(w) = &c.witness {
            leaves.push(json_leaf_without(
                "witness",
                w,
                &[("", "clients_root"), ("", "trust_sim")],
            )?);
            if let Some(b) = &i.clients_root {
                leaves.push(("witness/clients-root".into(), b.clone()));
            }
            if let Some(b) = &i.clients_trust_sim {
                leaves.push(("witness/trust-sim".into(), b.clone()));
            }
        }
        for r in &c.registries {
            let bundle = i.registries.get(&r.host).ok_or_else(|| ConfigError::Leaf {
                leaf: format!("registry/{}/ca-bundle", r.host),
                reason: "its CA bundle was not read".into(),
            })?;
            leaves.push((format!("registry/{}/ca-bundle", r.host), bundle.clone()));
        }
        if c.containers.is_some() {
            let engine = i.engine.as_ref().ok_or_else(|| ConfigError::Leaf {
                leaf: "containers/engine".into(),
                reason: "the container engine's versions are not known yet: the runtime asks containerd and runc at start (`enclave-os measure` asks the local ones, or takes --containerd-version and --runc-version)".into(),
            })?;
            leaves.push(json_leaf("containers/engine", engine)?);
        }
        for (n, w) in c.workloads.iter().enumerate() {
            let code = match (i.code.get(&w.name), i.images.get(&w.name), w.run.image()) {
                (Some(code), _, None) => WorkloadCode::Module(code.clone()),
                (None, Some(image), Some(_)) => WorkloadCode::Image(image.clone()),
                (None, None, Some(image)) => {
                    return Err(ConfigError::Leaf {
                        leaf: format!("workload/{}/code", w.name),
                        reason: format!(
                            "workload[{n}]'s image {image} is not resolved yet: the tree commits its manifest, configuration and runtime spec (the runtime pulls them at start; `enclave-os measure` reads them from --oci-layout)"
                        ),
                    });
                }
                _ => {
                    return Err(ConfigError::Leaf {
                        leaf: format!("workload/{}/code", w.name),
                        reason: format!(
                            "workload[{n}] has neither code read from its source nor an image"
                        ),
                    });
                }
            };
            leaves.extend(workload_leaves(w, &code)?);
            if let Some(files) = i.ingress.get(&w.name) {
                leaves.extend(crate::ingress::file_leaves(&w.name, files));
            }
        }
        for (w, code) in loaded {
            leaves.extend(workload_leaves(w, code)?);
        }
        if let Some(v) = &c.vault {
            leaves.push(json_leaf("vault", &v.leaf())?);
            if let Some(b) = &i.vault.client_root {
                leaves.push(("vault/client-root".into(), b.clone()));
            }
            if let Some(b) = &i.vault.trust_sim {
                leaves.push(("vault/trust-sim".into(), b.clone()));
            }
        }
        for (name, p) in i.vault.policies.iter().chain(i.vault_api.iter()) {
            leaves.push(json_leaf(&format!("vault/policy/{name}"), p)?);
        }
        Ok(leaves)
    }
}
