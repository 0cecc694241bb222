//! The Enclave OS runtime: `enclave-os run enclave.toml`.
//!
//! It chooses the TEE, sets up the operator's intermediary CA (or a development CA on first run,
//! saying so), opens the sealed store, computes the config tree, issues the RA-TLS leaves that
//! carry the evidence and the config root, and serves on the RA-TLS listener (see `api` for the
//! routes).
//!
//! The intermediary CA's key is imported once and kept sealed to the TEE, and so is the sealed
//! store's master key (`provision`). The store is opened and verified against its rollback
//! counter before anything is served (`enclave-store`). The management API (`api`) answers on
//! the reserved hostname; beyond the public status, calls need an OIDC bearer token carrying the
//! route's scope (`auth`), and a JWKS URL is fetched again on a schedule. An instance
//! may also serve as a witness, keeping other instances' rollback counters (`witness`).
//!
//! WebAssembly workloads run through `enclave-wasm`; container and process workloads are
//! certified and routed, and answer 503 until they are built.

mod admission;
mod api;
mod auth;
mod http;
mod https;
mod jwks;
mod metrics;
pub mod migrate;
mod provision;
mod sdk;
mod stall;
pub mod store_admin;
mod trust;
mod witness;
mod workloads;

pub use auth::{Authenticator, Claims, KeySet, RESERVED_SCOPE_PREFIX, Scope, ScopeClaim};
pub use witness::{WitnessCounter, WitnessPin};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use enclave_config::file::CounterKind;
use enclave_config::{ConfigTree, LoadedConfig};
use enclave_ratls::issue::IntermediaryCa;
use enclave_ratls::tls::{RatlsClientVerifier, RatlsResolver, SniResolver, server_config};
use enclave_store::{Counter, FileCounter, Store};
use enclave_tee::Tee;
use thiserror::Error;

/// Why the runtime could not start or stopped.
#[derive(Debug, Error)]
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
    /// The sealed store could not be opened: a rollback, tampering, a missing key.
    #[error("sealed store: {0}")]
    Store(String),
    /// The management API's token issuer could not be set up.
    #[error("oidc: {0}")]
    Oidc(String),
    /// A workload could not be loaded.
    #[error("{0}")]
    Workload(String),
    /// The egress CA bundle is unusable.
    #[error("egress.ca_bundle {0}")]
    Egress(String),
    /// Moving sealed state to a new build failed.
    #[error("migration: {0}")]
    Migration(String),
    /// The listener failed.
    #[error("listener {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
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
}

/// What the runtime serves, shared by every connection.
pub(crate) struct State {
    pub tee: Arc<dyn Tee>,
    pub ca: Arc<IntermediaryCa>,
    /// The enclave-wide certificate (what channel-bound evidence binds).
    pub enclave: Arc<RatlsResolver>,
    /// The names the enclave-wide certificate carries.
    pub enclave_names: Vec<String>,
    /// Chooses the enclave-wide or a workload's certificate by SNI.
    pub resolver: Arc<SniResolver>,
    pub config: LoadedConfig,
    /// The JWKS bytes in use when a `jwks_url` refetch rotated them since the start; the tree
    /// commits these (`oidc/jwks`) in place of the configuration's own (`workloads::tree_now`).
    pub rotated_jwks: RwLock<Option<Arc<Vec<u8>>>>,
    pub tree: RwLock<Arc<ConfigTree>>,
    /// Channel-bound quotes being made (`limits.max_challenge_handshakes` at once).
    pub quotes: Arc<tokio::sync::Semaphore>,
    /// Workloads loaded at run time.
    pub loaded: Mutex<workloads::Loaded>,
    pub store: Arc<Store>,
    pub auth: Option<Authenticator>,
    pub metrics: metrics::Metrics,
    /// The WebAssembly engine, and the compiled wasm workloads by name.
    pub wasm: enclave_wasm::Host,
    pub apps: RwLock<std::collections::HashMap<String, Arc<enclave_wasm::App>>>,
}

/// A prepared runtime: TEE open, CA and store unsealed, certificates issued.
pub struct Runtime {
    state: Arc<State>,
    jwks_refresh: Option<auth::JwksRefresh>,
    listen: SocketAddr,
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
        let listen_text = overrides
            .listen
            .clone()
            .unwrap_or_else(|| c.listen.first().cloned().unwrap_or_default());
        let listen: SocketAddr = listen_text.parse().map_err(|_| RuntimeError::Listen {
            addr: listen_text.clone(),
            reason: "not HOST:PORT with an IP address".into(),
        })?;
        let state_dir = overrides
            .state_dir
            .clone()
            .unwrap_or_else(|| config.resolve(&c.state_dir));
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| ca_err(format!("{}: {e}", state_dir.display())))?;
        let tee: Arc<dyn Tee> = Arc::from(enclave_tee::hw::detect::open(
            &c.tee,
            &state_dir.join("sim"),
        )?);

        let policy = enclave_tee::SealPolicy::parse(&c.seal_policy).map_err(ca_err)?;
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
        let c = &config.config;
        let auth = match &c.oidc {
            Some(o) => Some(
                Authenticator::new(
                    &o.issuer,
                    &o.audience,
                    o.clock_skew_secs,
                    jwks::keys(&config)?,
                )
                .map_err(RuntimeError::Oidc)?
                .with_max_lifetime(o.max_token_lifetime()),
            ),
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
        let mut enclave_names = vec![
            "localhost".to_string(),
            listen.ip().to_string(),
            c.management.hostname.clone(),
        ];
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
        let file_tree = workloads::tree(&config, &workloads::Loaded::new())?;
        let binding = workloads::evidence_binding(&config);
        let enclave = Arc::new(RatlsResolver::new(
            tee.clone(),
            ca.clone(),
            workloads::enclave_spec(enclave_names.clone(), &file_tree, binding),
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
            _ => Box::new(
                FileCounter::new(&store_dir.join("kv.counter"), &master, id)
                    .map_err(|e| RuntimeError::Store(e.to_string()))?,
            ),
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
        let store = Arc::new(
            Store::open(&db_path, master, id, counter)
                .map_err(|e| RuntimeError::Store(e.to_string()))?,
        );
        let stats = store.stats();
        tracing::info!(
            store = %id,
            version = stats.version,
            records = stats.records,
            counter = %store.counter(),
            "sealed store opened and verified"
        );

        let loaded = workloads::restore(&store)?;
        let tree = Arc::new(workloads::tree(&config, &loaded)?);
        enclave.set_spec(workloads::enclave_spec(
            enclave_names.clone(),
            &tree,
            binding,
        ));
        enclave.current().map_err(ca_err)?;
        // Each workload with hostnames gets its own certificate.
        let mut certs = Vec::new();
        let all = c
            .workloads
            .iter()
            .chain(loaded.values().map(|(w, _)| w))
            .filter(|w| !w.hostnames.is_empty());
        for w in all {
            let r = Arc::new(RatlsResolver::new(
                tee.clone(),
                ca.clone(),
                workloads::workload_spec(&tree, w, &store, binding)?,
            ));
            r.current().map_err(ca_err)?;
            certs.push((w.name.clone(), w.hostnames.clone(), r));
        }
        let resolver = Arc::new(SniResolver::new(enclave.clone(), certs));

        // Compile every wasm workload now: a component that cannot run stops the start.
        let services = Arc::new(sdk::AppServices::new(store.clone(), tee.clone()));
        let cache = enclave_wasm::CodeCache::new(&state_dir.join("wasm-cache"), cache_key)
            .map_err(RuntimeError::Workload)?;
        let wasm = enclave_wasm::Host::new(enclave_wasm::HostOptions {
            services: Some(services.clone()),
            egress,
            cache: Some(cache),
            max_instances: c.limits.max_wasm_instances,
        })
        .map_err(|e| RuntimeError::Workload(e.to_string()))?;
        let mut apps = std::collections::HashMap::new();
        for (i, w) in c.workloads.iter().enumerate() {
            if w.kind != enclave_config::file::WorkloadKind::Wasm {
                continue;
            }
            // The code the tree commits, read when the configuration was loaded.
            let Some(code) = config.workload_code(&w.name) else {
                return Err(RuntimeError::Workload(format!(
                    "workload[{i}] '{}': no code was read from its source",
                    w.name
                )));
            };
            apps.insert(
                w.name.clone(),
                Arc::new(workloads::compile(&wasm, w, code)?),
            );
        }
        for (w, code) in loaded.values() {
            if w.kind == enclave_config::file::WorkloadKind::Wasm {
                apps.insert(
                    w.name.clone(),
                    Arc::new(workloads::compile(&wasm, w, code)?),
                );
            }
        }
        let max_quotes = c.limits.max_challenge_handshakes.get() as usize;
        let state = Arc::new(State {
            tee,
            ca,
            enclave,
            enclave_names,
            resolver,
            config,
            rotated_jwks: RwLock::new(None),
            quotes: Arc::new(tokio::sync::Semaphore::new(max_quotes)),
            tree: RwLock::new(tree),
            loaded: Mutex::new(loaded),
            store,
            auth,
            metrics: metrics::Metrics::new(),
            wasm,
            apps: RwLock::new(apps),
        });
        services.attach(&state);
        Ok(Self {
            state,
            jwks_refresh,
            listen,
            ca_root,
            state_dir,
        })
    }

    /// The config root served.
    pub fn config_root(&self) -> [u8; 32] {
        *self
            .state
            .tree
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .root()
    }

    /// The TEE in use.
    pub fn tee(&self) -> &dyn Tee {
        self.state.tee.as_ref()
    }

    /// Serve until `shutdown` completes; connections in flight get `grace` to finish.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let listen_err = |addr: &str, reason: String| RuntimeError::Listen {
            addr: addr.to_string(),
            reason,
        };
        let main = self.listen.to_string();
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| listen_err(&main, e.to_string()))?;
        let limits = &self.state.config.config.limits;
        let header_timeout = Duration::from_secs(u64::from(limits.header_timeout_secs.get()));
        let max_challenges = limits.max_challenge_handshakes.get() as usize;
        let tls = server_config(self.state.resolver.clone(), None)
            .map_err(|e| listen_err(&main, e.to_string()))?;
        let handshakes = Arc::new(
            http::Handshakes::new(Arc::new(tls), self.state.resolver.clone(), max_challenges)
                .with_header_timeout(header_timeout),
        );
        let app = api::router(self.state.clone());
        let _jwks_refresh = self
            .jwks_refresh
            .as_ref()
            .map(|r| r.start(self.state.clone()));

        // The witness listener: mutual RA-TLS, the witness routes only, the enclave-wide
        // certificate for every name.
        let witness = match &self.state.config.config.witness {
            Some(w) => {
                let config = &self.state.config;
                let clients = Arc::new(RatlsClientVerifier::new(
                    trust::committed(
                        "witness.clients_root",
                        config.clients_root(),
                        config.clients_trust_sim(),
                        w.trust_sim.as_ref().map(|p| config.resolve(p)).as_deref(),
                    )
                    .map_err(|e| listen_err(&w.listen, e))?,
                ));
                let tls = server_config(self.state.enclave.clone(), Some(clients))
                    .map_err(|e| listen_err(&w.listen, e.to_string()))?;
                let l = tokio::net::TcpListener::bind(&w.listen)
                    .await
                    .map_err(|e| listen_err(&w.listen, e.to_string()))?;
                tracing::info!(listen = %w.listen, "serving as a witness over mutual RA-TLS");
                let router =
                    witness::router(Arc::new(witness::Witness::new(self.state.store.clone())));
                let certs = Arc::new(SniResolver::new(self.state.enclave.clone(), Vec::new()));
                let handshakes = Arc::new(
                    http::Handshakes::new(Arc::new(tls), certs, max_challenges)
                        .with_header_timeout(header_timeout),
                );
                let all = limits.max_witness_connections.get();
                let cap = admission::Admission::new(
                    "the witness listener",
                    all as usize,
                    Some(all.div_ceil(WITNESS_SOURCE_SHARE)),
                );
                Some((l, handshakes, router, cap))
            }
            None => None,
        };

        tracing::info!(
            listen = %self.listen,
            tee = self.state.tee.name(),
            simulated = self.state.tee.simulated(),
            config_root = %hex::encode(self.config_root()),
            management = %self.state.config.config.management.hostname,
            "serving RA-TLS on {}",
            self.listen
        );
        let limit = admission::Admission::new(
            "the RA-TLS listener",
            self.state.config.config.limits.max_connections as usize,
            None,
        );
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        let (wl, wh, wr, wcap) = match witness {
            Some((l, h, r, c)) => (Some(l), Some(h), Some(r), Some(c)),
            None => (None, None, None, None),
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((tcp, from)) = accepted else { continue };
                    let Some(permit) = limit.admit(from.ip(), &self.state.metrics) else { continue };
                    let (handshakes, state, app) = (handshakes.clone(), self.state.clone(), app.clone());
                    tasks.spawn(async move {
                        http::connection(handshakes, tcp, state, app, true).await;
                        drop(permit);
                    });
                }
                accepted = async { wl.as_ref()?.accept().await.ok() }, if wl.is_some() => {
                    let (Some((tcp, from)), Some(h), Some(r), Some(cap)) =
                        (accepted, wh.clone(), wr.clone(), wcap.as_ref())
                    else {
                        continue;
                    };
                    let Some(permit) = cap.admit(from.ip(), &self.state.metrics) else { continue };
                    let state = self.state.clone();
                    tasks.spawn(async move {
                        http::connection(h, tcp, state, r, false).await;
                        drop(permit);
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tracing::info!("shutting down; finishing requests in flight");
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        Ok(())
    }
}
