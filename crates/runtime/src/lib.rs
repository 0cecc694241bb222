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

mod api;
mod auth;
mod http;
mod https;
mod metrics;
pub mod migrate;
mod provision;
mod sdk;
mod witness;
mod workloads;

pub use auth::{Authenticator, Claims, KeySet, RESERVED_SCOPE_PREFIX, Scope, ScopeClaim};
pub use witness::WitnessCounter;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use enclave_config::file::CounterKind;
use enclave_config::{ConfigTree, LoadedConfig};
use enclave_ratls::issue::IntermediaryCa;
use enclave_ratls::tls::{RatlsClientVerifier, RatlsResolver, SniResolver, server_config};
use enclave_ratls::trust::TrustFiles;
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
    pub tree: RwLock<Arc<ConfigTree>>,
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
/// URL and for the components' outgoing requests alike.
fn egress_tls(config: &LoadedConfig) -> Result<Option<Arc<rustls::ClientConfig>>, RuntimeError> {
    let Some(bundle) = &config.config.egress.ca_bundle else {
        return Ok(None);
    };
    let path = config.resolve(bundle);
    let pem = std::fs::read(&path)
        .map_err(|e| RuntimeError::Egress(format!("{}: {e}", path.display())))?;
    let tls = https::pinned(&pem)
        .map_err(|e| RuntimeError::Egress(format!("{}: {e}", path.display())))?;
    Ok(Some(Arc::new(tls)))
}

/// The JWKS bytes: from the file, or fetched over HTTPS trusting only the egress CA bundle.
fn jwks(
    config: &LoadedConfig,
    o: &enclave_config::file::OidcConfig,
    egress: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Vec<u8>, RuntimeError> {
    let err = |e: String| RuntimeError::Oidc(e);
    if let Some(p) = &o.jwks_file {
        let full = config.resolve(p);
        return std::fs::read(&full).map_err(|e| err(format!("jwks_file {}: {e}", full.display())));
    }
    let url = o.jwks_url.as_deref().unwrap_or_default();
    let tls = egress.cloned().ok_or_else(|| {
        err(format!(
            "jwks_url {url} needs [egress] ca_bundle: the runtime trusts no public CA by default"
        ))
    })?;
    let (host, port, path) = https::split_url(url).map_err(err)?;
    let (status, body) = https::call(
        &format!("https://{host}:{port}"),
        "GET",
        &path,
        None,
        tls,
        Duration::from_secs(10),
    )
    .map_err(|e| err(format!("jwks_url: {e}")))?;
    if status != 200 {
        return Err(err(format!("jwks_url {url} answered {status}")));
    }
    Ok(body)
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
        let source = match (&c.ca.certificate, &c.ca.key) {
            (Some(cert), Some(key)) => provision::Source::Files {
                cert: config.resolve(cert),
                key: config.resolve(key),
            },
            (None, None) => provision::Source::Development,
            _ => return Err(ca_err("ca.certificate and ca.key go together")),
        };
        let (ca, ca_root) = provision::intermediary(&state_dir, tee.as_ref(), policy, source)?;
        let ca = Arc::new(ca);
        let egress = egress_tls(&config)?;
        let auth = match &c.oidc {
            Some(o) => Some(
                Authenticator::new(
                    &o.issuer,
                    &o.audience,
                    o.clock_skew_secs,
                    &jwks(&config, o, egress.as_ref())?,
                )
                .map_err(RuntimeError::Oidc)?
                .with_max_lifetime(o.max_token_lifetime()),
            ),
            None => None,
        };
        // A JWKS URL is fetched again on a schedule (key rotation); a file never is.
        let jwks_refresh = c.oidc.as_ref().and_then(|o| {
            let every = Duration::from_secs(o.jwks_refresh()?);
            let (config, o, egress) = (config.clone(), o.clone(), egress.clone());
            Some(auth::JwksRefresh::new(
                every,
                Box::new(move || jwks(&config, &o, egress.as_ref()).map_err(|e| e.to_string())),
            ))
        });

        // The enclave-wide certificate first: a witness counter presents it as the client
        // certificate before the store (and so the loaded workloads) can be read.
        let mut enclave_names = vec![
            "localhost".to_string(),
            listen.ip().to_string(),
            c.management.hostname.clone(),
        ];
        enclave_names.dedup();
        let file_tree = workloads::tree(&config, &workloads::Loaded::new())?;
        let enclave = Arc::new(RatlsResolver::new(
            tee.clone(),
            ca.clone(),
            workloads::enclave_spec(enclave_names.clone(), &file_tree),
        ));
        enclave.current().map_err(ca_err)?;

        let (master, id) = provision::master_key(&state_dir, tee.as_ref(), policy)?;
        let store_dir = state_dir.join("store");
        let counter: Box<dyn Counter> = match (&c.store.counter, &c.store.witness) {
            (CounterKind::Witness, Some(w)) => Box::new(
                WitnessCounter::new(
                    &w.url,
                    &TrustFiles {
                        root: Some(config.resolve(&w.root)),
                        trust_sim: w.trust_sim.as_ref().map(|p| config.resolve(p)),
                        collateral: None,
                    },
                    enclave.clone(),
                    id,
                )
                .map_err(|e| RuntimeError::Store(format!("store.witness: {e}")))?,
            ),
            _ => Box::new(
                FileCounter::new(&store_dir.join("kv.counter"), &master, id)
                    .map_err(|e| RuntimeError::Store(e.to_string()))?,
            ),
        };
        // Derived before the master key moves into the store: the compiled-code cache has a key
        // of its own (see enclave_wasm::cache).
        let cache_key = master
            .derive("wasm-code-cache", "")
            .map_err(|e| RuntimeError::Store(e.to_string()))?;
        let store = Arc::new(
            Store::open(&store_dir.join("kv.redb"), master, id, counter)
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
        enclave.set_spec(workloads::enclave_spec(enclave_names.clone(), &tree));
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
                workloads::workload_spec(&tree, w, &store)?,
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
            let Some(source) = &w.source else { continue };
            let path = config.resolve(source);
            let code = std::fs::read(&path).map_err(|e| {
                RuntimeError::Workload(format!("workload[{i}].source {}: {e}", path.display()))
            })?;
            apps.insert(
                w.name.clone(),
                Arc::new(workloads::compile(&wasm, w, &code)?),
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
        let state = Arc::new(State {
            tee,
            ca,
            enclave,
            enclave_names,
            resolver,
            config,
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
        let tls = server_config(self.state.resolver.clone(), None)
            .map_err(|e| listen_err(&main, e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let app = api::router(self.state.clone());
        let _jwks_refresh = self
            .jwks_refresh
            .as_ref()
            .map(|r| r.start(self.state.clone()));

        // The witness listener: mutual RA-TLS, the witness routes only.
        let witness = match &self.state.config.config.witness {
            Some(w) => {
                let trust = TrustFiles {
                    root: Some(self.state.config.resolve(&w.clients_root)),
                    trust_sim: w.trust_sim.as_ref().map(|p| self.state.config.resolve(p)),
                    collateral: None,
                };
                let clients = Arc::new(RatlsClientVerifier::new(
                    trust.verifier().map_err(|e| listen_err(&w.listen, e))?,
                ));
                let tls = server_config(self.state.enclave.clone(), Some(clients))
                    .map_err(|e| listen_err(&w.listen, e.to_string()))?;
                let l = tokio::net::TcpListener::bind(&w.listen)
                    .await
                    .map_err(|e| listen_err(&w.listen, e.to_string()))?;
                tracing::info!(listen = %w.listen, "serving as a witness over mutual RA-TLS");
                let router =
                    witness::router(Arc::new(witness::Witness::new(self.state.store.clone())));
                Some((l, tokio_rustls::TlsAcceptor::from(Arc::new(tls)), router))
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
        let limit = Arc::new(tokio::sync::Semaphore::new(
            self.state.config.config.limits.max_connections as usize,
        ));
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        let (wl, wa, wr) = match witness {
            Some((l, a, r)) => (Some(l), Some(a), Some(r)),
            None => (None, None, None),
        };
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        tracing::warn!("connection limit reached; connection dropped");
                        continue;
                    };
                    let (acceptor, state, app) = (acceptor.clone(), self.state.clone(), app.clone());
                    tasks.spawn(async move {
                        http::connection(acceptor, tcp, state, app, true).await;
                        drop(permit);
                    });
                }
                accepted = async { wl.as_ref()?.accept().await.ok() }, if wl.is_some() => {
                    let (Some((tcp, _)), Some(a), Some(r)) = (accepted, wa.clone(), wr.clone()) else { continue };
                    let state = self.state.clone();
                    tasks.spawn(http::connection(a, tcp, state, r, false));
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
