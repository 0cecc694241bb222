//! The Enclave OS runtime: `enclave-os run enclave.toml`.
//!
//! It chooses the TEE, sets up the operator's intermediary CA (or a development CA on first run,
//! saying so), opens the sealed store and verifies it against its rollback counter, computes the
//! config tree, issues the RA-TLS leaves that carry the evidence and the config root, starts the
//! workloads, and serves on the RA-TLS listeners.
//!
//! It is not a verifier (that is `enclave-ratls` and `enclave-evidence`) and not a CLI (that is
//! the `enclave-os` binary, which only parses arguments and calls [`Runtime`]).
//!
//! # Module map
//!
//! | module | owns | may call | never touches |
//! |---|---|---|---|
//! | `control` | the published `Snapshot` (tree, workloads, their handlers and certificates) behind `arc-swap`, and its one writer, a thread fed by a channel | `backends`, the store, the CA | sockets, HTTP |
//! | `backends` | the `Backend` trait and one implementation per kind (`wasm`, `container`, `process`; a kind nothing runs answers 503 with the reason), the supervision and upstream forwarding containers and processes share | `enclave-wasm`, `enclave-containers` | the listener, routing, the store |
//! | `front` | the connection threads (`workers`: one single-threaded runtime per CPU, each accepting and serving its own connections), listeners, admission, TLS through `LazyConfigAcceptor` (challenge leaves on the blocking pool, bounded), routing by SNI/Host with one load of the snapshot, ingress gates (`gate`) and caller headers (`caller`), HTTP/2 and HTTP/1.1 by ALPN, TCP splicing, hyper with timers, stalled writers | `control` (reads only), the handlers and routers it is given | the store, the API's routes |
//! | `api` | the management and `/.well-known/enclave-os/` routers; authentication as a layer per scope group (`auth`) | `control` (snapshot reads, change submission), the store for the operator's data | the listener |
//! | `witness` | the witness's router (counters for other instances) and the counter client | the store | the listener |
//! | `sdk` | what a wasm app reaches: its sealed namespaces, evidence, certificate declarations (a change submitted to `control`) | the store, the TEE, `control` | the listener, other apps' data |
//! | `provision`, `migrate`, `store_admin` | the sealed CA and master keys; moving state to a new build; offline store commands | the TEE, the store | the listener |
//! | `auth`, `jwks`, `https`, `trust`, `metrics` | tokens and key sets; fetching the JWKS; the pinned egress client; committed trust roots; counters | | |
//!
//! Who calls whom, at run time: the `front` reads the snapshot for each connection and request,
//! and hands a request either to the workload's handler or to the `api` router. The `api` and
//! the `sdk` never change the snapshot themselves: they submit a `control::Change` and wait for
//! the writer's answer. The writer validates the change against the snapshot it replaces (two
//! loads of one hostname cannot both pass), makes it durable (an fsync, and with a witness
//! counter a network round trip), then publishes. No lock a write holds is on a request's path.
//!
//! The intermediary CA's key is imported once and kept sealed to the TEE, and so is the sealed
//! store's master key (`provision`). Beyond the public status, API calls need an OIDC bearer
//! token carrying the route's scope (`auth`); a JWKS URL is fetched again on a schedule and a
//! rotation is a change like any other, published with the tree that commits the new keys.

mod api;
mod auth;
mod backends;
mod containers;
mod control;
mod front;
mod https;
mod jwks;
mod metrics;
pub mod migrate;
mod provision;
mod sdk;
mod seal_kbs;
pub mod store_admin;
mod trust;
mod vault;
mod witness;

pub use auth::{Authenticator, Claims, KeySet, Scope, ScopeClaim};
pub use backends::StartError;
pub use containers::ContainerError;
pub use control::ChangeError;
pub use witness::{WitnessCounter, WitnessPin};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use enclave_config::LoadedConfig;
use enclave_config::file::CounterKind;
use enclave_ratls::tls::{RatlsClientVerifier, RatlsResolver, server_config};
use enclave_store::{Counter, FileCounter, Store};
use enclave_tee::Tee;
use thiserror::Error;

/// Why the runtime could not start or stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(#[from] enclave_config::ConfigError),
    /// The TEE could not be used.
    #[error("TEE: {0}")]
    Tee(#[from] enclave_tee::TeeError),
    /// The CA could not be set up.
    #[error("CA: {0}")]
    Ca(String),
    /// The sealed store could not be set up (its key, its counter's settings).
    #[error("sealed store: {0}")]
    Store(String),
    /// The sealed store refused: a rollback, tampering, a fork, an unreachable counter.
    #[error("sealed store: {0}")]
    Sealed(#[from] enclave_store::StoreError),
    /// The sealed state on disk cannot be taken: part of it is gone while the rest remains (a
    /// database without its key, a CA root without its key), or a sealed key does not unseal
    /// (altered, or sealed to another build: see `enclave-os migrate`).
    #[error("sealed state: {0}")]
    StateRefused(String),
    /// The management API's token issuer could not be set up.
    #[error("oidc: {0}")]
    Oidc(String),
    /// A workload could not be started, or the first snapshot not be made.
    #[error("{0}")]
    Workload(#[from] control::ChangeError),
    /// The container engine, a registry or an image of the file's container workloads.
    #[error("{0}")]
    Containers(#[from] containers::ContainerError),
    /// What runs process workloads could not be set up.
    #[error("{0}")]
    Processes(#[from] backends::ProcessError),
    /// The code cache or the WebAssembly engine could not be set up.
    #[error("{0}")]
    Engine(String),
    /// The egress CA bundle is unusable.
    #[error("egress.ca_bundle {0}")]
    Egress(String),
    /// Moving sealed state to a new build failed.
    #[error("migration: {0}")]
    Migration(String),
    /// The threads client connections run on could not be started.
    #[error("cannot start the connection threads: {0}")]
    Threads(std::io::Error),
    /// The listener failed.
    #[error("listener {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl RuntimeError {
    /// Whether the runtime refused the sealed state on disk: rolled back, forked, tampered
    /// with, partly removed (a counter, a database, a key gone), a database that does not open,
    /// a sealed key that does not unseal, or a counter that refuses or fails its
    /// authentication. The host's doing, for the operator to look into; not a
    /// mistake in the command or the configuration, and not an outage (an unreachable
    /// witness is not one of these).
    pub fn refuses_state(&self) -> bool {
        use enclave_store::{CounterFault, StoreError as E};
        match self {
            RuntimeError::StateRefused(_) => true,
            RuntimeError::Sealed(e) => match e {
                E::Rollback { .. }
                | E::CounterGap { .. }
                | E::Fork { .. }
                | E::CounterMissing { .. }
                | E::Missing { .. }
                | E::Integrity(_)
                | E::Record { .. }
                | E::Database { .. } => true,
                E::Counter(c) => c.fault != CounterFault::Unavailable,
                _ => false,
            },
            _ => false,
        }
    }
}

/// The TEE's sealing policy for the configuration's choice.
pub(crate) fn seal_policy(
    choice: enclave_config::file::SealPolicyChoice,
) -> enclave_tee::SealPolicy {
    use enclave_config::file::SealPolicyChoice as C;
    match choice {
        C::Measurement => enclave_tee::SealPolicy::Measurement,
        C::Signer => enclave_tee::SealPolicy::Signer,
    }
}

/// One source address may hold at most this share (1/N) of the witness listener's connections:
/// its clients are a few known instances, and slots are taken before anyone authenticates.
const WITNESS_SOURCE_SHARE: u32 = 4;

/// Command-line overrides of the configuration file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen HOST:PORT`.
    pub listen: Option<String>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
    /// A program containerd may run as each container's log driver
    /// (`enclave_containers::LogSink::Driver`; the `enclave-os` binary is one), keeping each log
    /// bounded. Without it the shim writes the logs itself and the runtime cuts them as they
    /// grow, which bounds them only as fast as it looks.
    pub log_driver: Option<PathBuf>,
}

/// A prepared runtime: TEE open, CA and store unsealed, certificates issued, workloads started
/// and published by the control plane.
pub struct Runtime {
    control: control::Control,
    api: Arc<api::Api>,
    config: LoadedConfig,
    enclave: Arc<RatlsResolver>,
    metrics: Arc<metrics::Metrics>,
    jwks_refresh: Option<auth::JwksRefresh>,
    /// The workloads' ingress gates (`[workload.ingress]`).
    gates: Arc<front::gate::Gates>,
    /// The WebAssembly host (its guests are moved off the connection threads when serving).
    wasm: enclave_wasm::Host,
    listen: Vec<SocketAddr>,
    /// The root clients pass as `--root`.
    pub ca_root: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

fn ca_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ca(e.to_string())
}

/// A client configuration trusting only the egress CA bundle, if one is configured: for a JWKS
/// URL and for the components' outgoing requests alike. The bundle's bytes are those the config
/// tree commits (`egress/ca-bundle`), read when the configuration was loaded.
fn egress_tls(config: &LoadedConfig) -> Result<Option<Arc<rustls::ClientConfig>>, RuntimeError> {
    let (Some(bundle), Some(pem)) = (&config.config.egress.ca_bundle, config.egress_bundle())
    else {
        return Ok(None);
    };
    let tls = https::pinned(pem)
        .map_err(|e| RuntimeError::Egress(format!("{}: {e}", config.resolve(bundle).display())))?;
    Ok(Some(Arc::new(tls)))
}

/// What `[store.witness]` pins: the witness's config root, its appraisal policy, or both.
fn witness_pin(
    config: &LoadedConfig,
    w: &enclave_config::file::WitnessClientConfig,
) -> Result<WitnessPin, String> {
    let config_root = match &w.config_root {
        Some(hexed) => {
            let mut root = [0u8; 32];
            hex::decode_to_slice(hexed, &mut root)
                .map_err(|e| format!("config_root '{hexed}': {e}"))?;
            Some(root)
        }
        None => None,
    };
    // The bytes the tree commits as `store/witness-policy`, read once at load.
    let policy = match (&w.policy, config.witness_policy()) {
        (Some(p), Some(bytes)) => {
            let name = config.resolve(p).display().to_string();
            let text =
                std::str::from_utf8(bytes).map_err(|_| format!("policy {name}: not UTF-8 text"))?;
            Some(
                enclave_evidence::policy::Policy::from_toml(text, &name)
                    .map_err(|e| format!("policy {name}: {e}"))?,
            )
        }
        (Some(p), None) => {
            return Err(format!(
                "policy {}: not read when the configuration was loaded",
                p.display()
            ));
        }
        (None, _) => None,
    };
    Ok(WitnessPin {
        config_root,
        policy,
    })
}

impl Runtime {
    /// Open the TEE, set up the CA, open and verify the sealed store, build the config tree and
    /// issue the certificates.
    pub fn prepare(config: LoadedConfig, overrides: &Overrides) -> Result<Self, RuntimeError> {
        let c = &config.config;
        // `--listen` replaces every address of the file; otherwise each of them is served.
        let listen_texts = match &overrides.listen {
            Some(one) => vec![one.clone()],
            None => c.listen.clone(),
        };
        let listen = listen_texts
            .iter()
            .map(|text| {
                text.parse::<SocketAddr>()
                    .map_err(|_| RuntimeError::Listen {
                        addr: text.clone(),
                        reason: "not HOST:PORT with an IP address".into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() {
            return Err(RuntimeError::Listen {
                addr: String::new(),
                reason: "no address to listen on: set listen in enclave.toml or --listen".into(),
            });
        }
        let state_dir = overrides
            .state_dir
            .clone()
            .unwrap_or_else(|| config.resolve(&c.state_dir));
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| ca_err(format!("{}: {e}", state_dir.display())))?;
        let mut opened = enclave_tee::hw::detect::open(c.tee.as_str(), &state_dir.join("sim"))?;
        if let Some(var) = &c.seal_key_env {
            let key = zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                RuntimeError::Tee(enclave_tee::TeeError::NoSealingKey(format!(
                    "seal_key_env: the environment variable {var} (the operator's sealing root key, 64 hex digits) is not set"
                )))
            })?);
            opened = Box::new(enclave_tee::operator::OperatorSealed::from_hex(
                opened,
                &key,
                &format!("seal_key_env {var}"),
            )?);
            tracing::warn!(
                variable = %var,
                "sealing with keys derived from an operator-supplied root key: whoever holds it can unseal this instance's state"
            );
        }
        if let Some(k) = &c.seal_key_kbs {
            let root = seal_kbs::root_key(&config, k, opened.as_ref())?;
            opened = Box::new(enclave_tee::operator::OperatorSealed::new(opened, root));
            tracing::info!(
                kbs = %k.url,
                resource = %k.resource,
                "sealing with keys derived from the root key a KBS released to this attested TEE"
            );
        }
        let tee: Arc<dyn Tee> = Arc::from(opened);

        let policy = crate::seal_policy(c.seal_policy);
        let source = match (&c.ca.certificate, &c.ca.key, config.ca_certificate()) {
            (Some(cert), Some(key), Some(cert_pem)) => provision::Source::Files {
                cert_pem: cert_pem.to_vec(),
                cert: config.resolve(cert),
                key: config.resolve(key),
            },
            (None, None, _) => provision::Source::Development,
            _ => return Err(ca_err("ca.certificate and ca.key go together")),
        };
        let (ca, ca_root) = provision::intermediary(&state_dir, tee.as_ref(), policy, source)?;
        let ca = Arc::new(ca);
        let egress = egress_tls(&config)?;
        // From here on the configuration holds every byte the tree commits, the JWKS included.
        let config = jwks::committed(config, egress.as_ref())?;
        // Container images next: the tree commits their manifests, configurations and
        // runtime specs, and the engine's versions. Never inside an SGX enclave: Gramine runs
        // one process, and containers need a VM's kernel.
        let (config, containers) = match &config.config.containers {
            Some(_) if tee.kind() == enclave_evidence::TeeKind::Sgx => {
                return Err(RuntimeError::Containers(containers::ContainerError::Setup(
                    "containers run on VM TEEs (TDX, SEV-SNP and their simulators), not in an SGX enclave under Gramine: remove [containers] and the container workloads".into(),
                )));
            }
            Some(_) => {
                let engine = containers::Containers::connect(
                    &config,
                    &state_dir,
                    overrides.log_driver.clone(),
                )?;
                (containers::resolve_file(&engine, config)?, Some(engine))
            }
            None => (config, None),
        };
        let c = &config.config;
        let auth = match &c.oidc {
            Some(o) => Some(Arc::new(
                Authenticator::new(
                    &o.issuer,
                    &o.audience,
                    o.clock_skew_secs,
                    jwks::keys(&config)?,
                )
                .map_err(RuntimeError::Oidc)?
                .with_max_lifetime(o.max_token_lifetime()),
            )),
            None => None,
        };
        // A JWKS URL is fetched again on a schedule (key rotation); a file never is.
        let jwks_refresh = c.oidc.as_ref().and_then(|o| {
            let every = Duration::from_secs(o.jwks_refresh()?);
            let (o, egress) = (o.clone(), egress.clone());
            Some(auth::JwksRefresh::new(
                every,
                Box::new(move || {
                    let url = o.jwks_url.as_deref().unwrap_or_default();
                    jwks::fetch(url, egress.as_ref()).map_err(|e| e.to_string())
                }),
            ))
        });

        // The enclave-wide certificate first: a witness counter presents it as the client
        // certificate before the store (and so the loaded workloads) can be read.
        let mut enclave_names = vec!["localhost".to_string()];
        enclave_names.extend(listen.iter().map(|a| a.ip().to_string()));
        enclave_names.push(c.management.hostname.clone());
        // The vault is the enclave's own: its name is on the enclave-wide certificate.
        if let Some(h) = c.vault.as_ref().and_then(|v| v.hostname.clone()) {
            enclave_names.push(h);
        }
        // Clients of a witness check its certificate's names against the URL they use: the
        // witness listener's own address is one they may reach it by.
        if let Some(ip) = c
            .witness
            .as_ref()
            .and_then(|w| w.listen.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
        {
            enclave_names.push(ip.to_string());
        }
        let mut seen = std::collections::HashSet::new();
        enclave_names.retain(|n| seen.insert(n.clone()));
        let file_tree = control::tree(&config, &control::Loaded::new())?;
        let binding = control::evidence_binding(&config);
        let enclave = Arc::new(RatlsResolver::new(
            tee.clone(),
            ca.clone(),
            control::enclave_spec(enclave_names.clone(), &file_tree, binding, None),
        ));
        enclave.current().map_err(ca_err)?;

        let (master, id, unsaved) = provision::master_key(&state_dir, tee.as_ref(), policy)?;
        let store_dir = state_dir.join("store");
        let db_path = store_dir.join("kv.redb");
        let counter: Box<dyn Counter> = match (&c.store.counter, &c.store.witness) {
            (CounterKind::Witness, Some(w)) => {
                let witness_err = |e: String| RuntimeError::Store(format!("store.witness: {e}"));
                let counter = WitnessCounter::new(
                    &w.url,
                    trust::committed(
                        "store.witness.root",
                        config.witness_root(),
                        config.witness_trust_sim(),
                        w.trust_sim.as_ref().map(|p| config.resolve(p)).as_deref(),
                    )
                    .map_err(witness_err)?,
                    witness_pin(&config, w).map_err(witness_err)?,
                    enclave.clone(),
                    id,
                )
                .map_err(witness_err)?;
                // A witness answers only for counters it enrolled. A store enrols once, when its
                // master key is generated, before that key is written: a key on disk means an
                // enrolled counter, whatever else the host deleted (see `provision::Unsaved`).
                if unsaved.is_some() {
                    counter
                        .enrol()
                        .map_err(|e| RuntimeError::Store(e.to_string()))?;
                    tracing::info!(witness = %w.url, store = %id, "store counter enrolled at the witness");
                }
                Box::new(counter)
            }
            (CounterKind::File, _) => Box::new(
                FileCounter::new(&store_dir.join("kv.counter"), &master, id)
                    .map_err(|e| RuntimeError::Store(e.to_string()))?,
            ),
            // Never a file counter in place of the one configured: that would drop the rollback
            // protection the operator asked for.
            (CounterKind::Witness, None) => {
                return Err(RuntimeError::Store(
                    "counter = \"witness\" needs a [store.witness] section".into(),
                ));
            }
            (other, _) => {
                return Err(RuntimeError::Store(format!(
                    "counter {other:?} is not built into this runtime"
                )));
            }
        };
        if let Some(unsaved) = unsaved {
            // The migration pin is bound to this new store and written before its key: a store
            // on disk never gets a pin later, from a CA the host chose (see `migrate`).
            migrate::pin_operator_root(
                &state_dir,
                tee.as_ref(),
                policy,
                &ca_root,
                ca.cert_der(),
                &id,
            )?;
            unsaved.persist()?;
        }
        // Derived before the master key moves into the store: the compiled-code cache has a key
        // of its own (see enclave_wasm::cache).
        let cache_key = master
            .derive("wasm-code-cache", "")
            .map_err(|e| RuntimeError::Store(e.to_string()))?;
        let store = Arc::new(Store::open(&db_path, master, id, counter)?);
        let stats = store.stats();
        tracing::info!(
            store = %id,
            version = stats.version,
            records = stats.records,
            counter = %store.counter(),
            "sealed store opened and verified"
        );

        // The control plane: its handle first (the SDK's services hold one), then the writer,
        // which starts every workload, publishes the first snapshot and takes changes from then
        // on. A component that cannot run stops the start.
        let (control, inbox) = control::Control::new(enclave.clone(), Arc::new(file_tree));
        let services = Arc::new(sdk::AppServices::new(
            store.clone(),
            tee.clone(),
            control.clone(),
        ));
        // The vault's keys for encrypted code, shared by every backend that decrypts; the
        // vault itself is set in once it exists (it needs the control plane).
        let code_keys = match &containers {
            Some(c) => c.code_keys.clone(),
            None => Arc::new(vault::code_keys::CodeKeys::new(
                config.config.workloads.iter().map(|w| w.name.clone()),
            )),
        };
        let cache = enclave_wasm::CodeCache::new(&state_dir.join("wasm-cache"), cache_key)
            .map_err(RuntimeError::Engine)?;
        let host = enclave_wasm::Host::new(enclave_wasm::HostOptions {
            services: Some(services.clone()),
            egress,
            cache: Some(cache),
            max_instances: c.limits.max_wasm_instances,
        })
        .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let mut kinds: Vec<Box<dyn backends::Backend>> = vec![Box::new(
            backends::WasmBackend::new(host.clone(), code_keys.clone()),
        )];
        if let Some(engine) = &containers {
            kinds.push(Box::new(backends::ContainerBackend::new(engine.clone())));
        }
        // Processes run wherever the runtime has a kernel of its own to start them on: not
        // inside a real SGX enclave, where Gramine runs one process (their routes then answer
        // 503 with the reason).
        let processes = if tee.kind() == enclave_evidence::TeeKind::Sgx && !tee.simulated() {
            None
        } else {
            Some(backends::Processes::new(&state_dir)?)
        };
        if let Some(p) = &processes {
            kinds.push(Box::new(backends::ProcessBackend::new(p.clone())));
        }
        let backends = backends::Backends::new(kinds);
        let (loaded, unreadable) = control::restore(&store)?;
        let policies = control::restore_policies(&store)?;
        let limits = &config.config.limits;
        let metrics = Arc::new(metrics::Metrics::new());
        let vault = vault::Vault::new(
            &config,
            store.clone(),
            control.clone(),
            auth.clone(),
            metrics.clone(),
            ca.cert_der(),
        )?
        .map(Arc::new);
        if let Some(v) = &vault {
            services.set_vault(v.clone());
            code_keys.set_vault(v.clone());
            // A file counter stops a copied-back database, not a host that also deletes the
            // counter and resets it: deleted secrets and keys would come back (docs/vault.md).
            if c.store.counter == CounterKind::File && !tee.simulated() {
                tracing::warn!(
                    "the vault keeps secrets under a file rollback counter: a host that resets it can bring deleted secrets and keys back; use [store] counter = \"witness\""
                );
            }
        }
        let token_thumbprint = vault.as_ref().map(|v| v.token_thumbprint());
        if token_thumbprint.is_some() {
            // Certified from the first snapshot on: the writer moves the spec with the tree.
            enclave
                .set_spec(control::enclave_spec(
                    enclave_names.clone(),
                    &control.snapshot().tree,
                    binding,
                    token_thumbprint,
                ))
                .map_err(ca_err)?;
        }
        let api = Arc::new(api::Api {
            control: control.clone(),
            store: store.clone(),
            tee: tee.clone(),
            auth: auth.clone(),
            metrics: metrics.clone(),
            quotes: Arc::new(tokio::sync::Semaphore::new(
                limits.max_challenge_handshakes.get() as usize,
            )),
            management_hostname: c.management.hostname.clone(),
            max_request_bytes: limits.max_request_bytes,
            containers,
            processes,
            vault,
        });
        // Parsed now, so that a bad client policy stops the start with its reason.
        let gates = Arc::new(front::gate::Gates::new(
            &config,
            ca.cert_der(),
            auth.clone(),
            control.clone(),
        )?);
        let writer = control::Writer::new(
            control::Parts {
                config: config.clone(),
                store,
                tee,
                ca,
                enclave: enclave.clone(),
                enclave_names,
                backends,
                auth,
                loaded,
                unreadable,
                policies,
                token_thumbprint,
            },
            inbox,
        )?;
        enclave.current().map_err(ca_err)?;
        writer.spawn().map_err(|e| {
            RuntimeError::Engine(format!("the control plane's thread cannot start: {e}"))
        })?;
        Ok(Self {
            control,
            api,
            config,
            enclave,
            metrics,
            jwks_refresh,
            gates,
            wasm: host,
            listen,
            ca_root,
            state_dir,
        })
    }

    /// The config root served.
    pub fn config_root(&self) -> [u8; 32] {
        self.control.snapshot().root()
    }

    /// The TEE in use.
    pub fn tee(&self) -> &dyn Tee {
        self.api.tee.as_ref()
    }

    /// The addresses `serve` binds.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Bind every `listen` address and serve until `shutdown` completes; connections in flight
    /// get `grace` to finish.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let mut listeners = Vec::new();
        for addr in &self.listen {
            let l =
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| RuntimeError::Listen {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    })?;
            listeners.push(l);
        }
        self.serve_on(listeners, shutdown, grace).await
    }

    /// Serve on listeners already bound (tests bind port 0 and read the address back, with no
    /// window for another process to take the port), until `shutdown` completes.
    pub async fn serve_on(
        self,
        listeners: Vec<tokio::net::TcpListener>,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let listen_err = |addr: &str, reason: String| RuntimeError::Listen {
            addr: addr.to_string(),
            reason,
        };
        let c = &self.config.config;
        let limits = front::Limits::from_config(&c.limits);
        let max_challenges = c.limits.max_challenge_handshakes.get() as usize;
        let certs: Arc<dyn front::Certificates + Send + Sync> = Arc::new(self.control.clone());
        let resolver = self.control.clone();
        let handshakes = Arc::new(
            front::Handshakes::new(
                Box::new(move || server_config(Arc::new(resolver.clone()), None)),
                certs,
                max_challenges,
            )
            .map_err(|e| listen_err("the RA-TLS listener", e.to_string()))?
            .with_gates(self.gates.clone()),
        );
        let (drain, draining) = tokio::sync::watch::channel(false);
        let site = Arc::new(front::Site {
            control: Some(self.control.clone()),
            api: api::router(self.api.clone()),
            metrics: self.metrics.clone(),
            limits,
            draining: draining.clone(),
            gates: Some(self.gates.clone()),
        });
        let _jwks_refresh = self
            .jwks_refresh
            .as_ref()
            .map(|r| r.start(self.control.clone()));

        // The vault's endpoint for containers: plain HTTP on the bridge's gateway, which only
        // the containers (inside the same TEE) reach.
        let skr = match (&self.api.vault, &self.api.containers) {
            (Some(_), Some(engine)) => {
                let addr = SocketAddr::from((engine.bridge.gateway(), engine.config.vault_port));
                let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    listen_err(
                        &addr.to_string(),
                        format!(
                            "the vault's SKR endpoint for containers ([containers] vault_port): {e}"
                        ),
                    )
                })?;
                tracing::info!(listen = %addr, "serving the vault's SKR endpoint to the containers");
                Some(tokio::spawn(vault::skr::serve(
                    l,
                    self.api.clone(),
                    draining.clone(),
                )))
            }
            _ => None,
        };

        // The witness listener: mutual RA-TLS, the witness routes only, the enclave-wide
        // certificate for every name.
        let witness = match &c.witness {
            Some(w) => {
                let config = &self.config;
                let clients = Arc::new(RatlsClientVerifier::new(
                    trust::committed(
                        "witness.clients_root",
                        config.clients_root(),
                        config.clients_trust_sim(),
                        w.trust_sim.as_ref().map(|p| config.resolve(p)).as_deref(),
                    )
                    .map_err(|e| listen_err(&w.listen, e))?,
                ));
                let one = Arc::new(front::OneCertificate(self.enclave.clone()));
                let resolver = one.clone();
                let make: front::MakeConfig =
                    Box::new(move || server_config(resolver.clone(), Some(clients.clone())));
                let handshakes = Arc::new(
                    front::Handshakes::new(make, one, max_challenges)
                        .map_err(|e| listen_err(&w.listen, e.to_string()))?,
                );
                let l = tokio::net::TcpListener::bind(&w.listen)
                    .await
                    .map_err(|e| listen_err(&w.listen, e.to_string()))?;
                tracing::info!(listen = %w.listen, "serving as a witness over mutual RA-TLS");
                let site = Arc::new(front::Site {
                    control: None,
                    api: witness::router(Arc::new(witness::Witness::new(self.api.store.clone()))),
                    metrics: self.metrics.clone(),
                    limits,
                    draining: draining.clone(),
                    gates: None,
                });
                let all = c.limits.max_witness_connections.get();
                let cap = front::admission::Admission::new(
                    "the witness listener",
                    all as usize,
                    Some(all.div_ceil(WITNESS_SOURCE_SHARE)),
                );
                Some(Listener {
                    tcp: l,
                    handshakes,
                    site,
                    admission: Arc::new(cap),
                })
            }
            None => None,
        };

        let admission = Arc::new(front::admission::Admission::new(
            "the RA-TLS listener",
            c.limits.max_connections as usize,
            c.limits
                .max_connections_per_source
                .map(std::num::NonZeroU32::get),
        ));
        let mut all = Vec::new();
        for tcp in listeners {
            let addr = tcp
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            tracing::info!(
                listen = %addr,
                tee = self.api.tee.name(),
                simulated = self.api.tee.simulated(),
                config_root = %hex::encode(self.config_root()),
                management = %c.management.hostname,
                "serving RA-TLS on {addr}"
            );
            all.push(Listener {
                tcp,
                handshakes: handshakes.clone(),
                site: site.clone(),
                admission: admission.clone(),
            });
        }
        all.extend(witness);

        // Each connection thread accepts on every listener and serves what it accepted
        // (`front::workers`); connections are tasks of one set, so shutdown finds them all.
        let connections = Arc::new(tokio::sync::Mutex::new(tokio::task::JoinSet::new()));
        // As many connection threads as CPUs, like nginx's `worker_processes auto`.
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let workers =
            Arc::new(front::workers::Workers::start(threads).map_err(RuntimeError::Threads)?);
        tracing::debug!(threads = workers.len(), "connection threads started");
        // Guests compute between epoch ticks: on this runtime's scheduler, not on a
        // connection thread, where every connection of the thread would wait with them.
        self.wasm.run_guests_on(tokio::runtime::Handle::current());
        let mut accepting = tokio::task::JoinSet::new();
        for l in all {
            let addr = l
                .tcp
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            let tcp = l
                .tcp
                .into_std()
                .map_err(|e| listen_err(&addr, e.to_string()))?;
            for (me, thread) in workers.handles().iter().enumerate() {
                let copy = tcp
                    .try_clone()
                    .map_err(|e| listen_err(&addr, e.to_string()))?;
                let l = Listener {
                    tcp: copy,
                    handshakes: l.handshakes.clone(),
                    site: l.site.clone(),
                    admission: l.admission.clone(),
                };
                let on = (workers.clone(), me);
                accepting.spawn_on(
                    accept_loop(l, self.metrics.clone(), connections.clone(), on),
                    thread,
                );
            }
        }
        shutdown.await;
        accepting.abort_all();
        if let Some(skr) = skr {
            skr.abort();
        }
        tracing::info!("shutting down; finishing requests in flight");
        // Idle keep-alive connections close now; those with requests in flight once they
        // are answered.
        drain.send_replace(true);
        let draining_since = std::time::Instant::now();
        let mut tasks = std::mem::take(&mut *connections.lock().await);
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        drop(tasks);
        // What the connections left on the blocking pools (a store write) may finish within
        // what remains of the grace, and at least a second.
        let left = grace.saturating_sub(draining_since.elapsed());
        workers.stop(left.max(Duration::from_secs(1))).await;
        self.control.shutdown().await;
        Ok(())
    }
}

/// One listener with what its connections need.
struct Listener<T = tokio::net::TcpListener> {
    tcp: T,
    handshakes: Arc<front::Handshakes>,
    site: Arc<front::Site>,
    admission: Arc<front::admission::Admission>,
}

/// Accept connections on `l` until aborted, each a task in `connections`.
async fn accept_loop(
    l: Listener<std::net::TcpListener>,
    metrics: Arc<metrics::Metrics>,
    connections: Arc<tokio::sync::Mutex<tokio::task::JoinSet<()>>>,
    (workers, me): (Arc<front::workers::Workers>, usize),
) {
    // Registered with the reactor of the thread this runs on: the connections it accepts are
    // watched, and served, there.
    let tcp = match tokio::net::TcpListener::from_std(l.tcp) {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::error!(error = %e, "a connection thread cannot accept on a listener");
            return;
        }
    };
    loop {
        let (tcp, from) = match tcp.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, most often: give connections in flight a moment to close
            // rather than spin on the error.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = l.admission.admit(from.ip(), &metrics) else {
            continue;
        };
        let (handshakes, site) = (l.handshakes.clone(), l.site.clone());
        let placed = workers.place(me);
        let thread = placed.thread();
        // The connection's whole life; its admission and its place are released with it.
        let serve = move |tcp| async move {
            front::connection(handshakes, tcp, site).await;
            drop((permit, placed));
        };
        let mut set = connections.lock().await;
        // Finished connections are reaped here, so the set holds only live ones.
        while set.try_join_next().is_some() {}
        if thread == me {
            set.spawn(serve(tcp));
            continue;
        }
        // Another thread's: taken out of this thread's reactor here, registered with that
        // thread's there.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "accepted connection dropped");
                continue;
            }
        };
        set.spawn_on(
            async move {
                match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => serve(tcp).await,
                    Err(e) => tracing::warn!(error = %e, "accepted connection dropped"),
                }
            },
            &workers.handles()[thread],
        );
    }
}
