//! The Enclave OS runtime: `enclave-os run enclave.toml`.
//!
//! What it does today: choose the TEE, set up the operator's intermediary CA (or a development CA
//! on first run, saying so), compute the config tree, issue the RA-TLS leaf that carries the
//! evidence and the config root, and serve on the RA-TLS listener:
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | liveness and readiness |
//! | `GET /.well-known/enclave-os/manifest` | the config manifest: names and leaf hashes |
//! | `GET /.well-known/enclave-os/proof/<name>` | an inclusion proof for one configuration input |
//! | `GET /.well-known/enclave-os/attestation` | channel-bound evidence for this connection |
//!
//! The intermediary CA's key is imported once and kept sealed to the TEE (`provision`).
//!
//! Not yet (the runtime issue): a sealed master key, the sealed key-value store with rollback
//! protection, the authenticated management API, metrics, structured logs, migration between
//! builds.

mod http;
mod provision;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use enclave_config::{ConfigTree, LoadedConfig};
use enclave_ratls::issue::{LeafSpec, WorkloadIdentity};
use enclave_ratls::tls::{RatlsResolver, SniResolver, server_config};
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

/// What the runtime serves.
pub(crate) struct State {
    pub tee: Arc<dyn Tee>,
    /// The enclave-wide certificate (what channel-bound evidence binds).
    pub enclave: Arc<RatlsResolver>,
    /// Chooses the enclave-wide or a workload's certificate by SNI.
    pub resolver: Arc<SniResolver>,
    pub tree: ConfigTree,
}

/// A workload's own config tree: its leaves, under their names.
fn workload_tree(tree: &ConfigTree, name: &str) -> Result<ConfigTree, RuntimeError> {
    let prefix = format!("workload/{name}/");
    Ok(ConfigTree::from_hashes(
        tree.leaves()
            .iter()
            .filter(|l| l.name.starts_with(&prefix))
            .map(|l| (l.name.clone(), l.value_hash)),
    )
    .map_err(enclave_config::ConfigError::from)?)
}

/// A prepared runtime: TEE open, CA loaded, first certificate issued.
pub struct Runtime {
    state: Arc<State>,
    listen: SocketAddr,
    /// The root clients pass as `--root`.
    pub ca_root: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

fn ca_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ca(e.to_string())
}

/// The module hashes that go into certificates, from the tree's leaves.
fn modules(tree: &ConfigTree) -> Vec<(u64, [u8; 32])> {
    let leaf = |name: &str| {
        tree.leaves()
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value_hash)
    };
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for l in tree
        .leaves()
        .iter()
        .filter(|l| l.name.starts_with("workload/") && l.name.ends_with("/code"))
    {
        ctx.update(l.name.as_bytes());
        ctx.update(&l.value_hash);
    }
    let mut workloads = [0u8; 32];
    workloads.copy_from_slice(ctx.finish().as_ref());
    let mut out = vec![(5, workloads)];
    if let Some(h) = leaf("egress/ca-bundle") {
        out.push((1, h));
    }
    if let Some(h) = leaf("attestation/servers") {
        out.push((7, h));
    }
    out
}

impl Runtime {
    /// Open the TEE, set up the CA, build the config tree and issue the first certificate.
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

        let tree = LoadedConfig::tree(&config, env!("CARGO_PKG_VERSION"))?;
        let mut names = vec!["localhost".to_string(), listen.ip().to_string()];
        for h in c.workloads.iter().flat_map(|w| &w.hostnames) {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let spec = LeafSpec {
            names,
            lifetime_secs: 12 * 3600,
            config_root: Some(*tree.root()),
            modules: modules(&tree),
            workload: None,
        };
        let ca = Arc::new(ca);
        let enclave = Arc::new(RatlsResolver::new(tee.clone(), ca.clone(), spec.clone()));
        enclave.current().map_err(ca_err)?;
        // Each workload's hostnames get its own certificate: its identity and its own config root.
        let mut workloads = Vec::new();
        for w in &c.workloads {
            if w.hostnames.is_empty() {
                continue;
            }
            let own = workload_tree(&tree, &w.name)?;
            let code_digest = tree
                .leaves()
                .iter()
                .find(|l| l.name == format!("workload/{}/code", w.name))
                .map(|l| l.value_hash)
                .unwrap_or_default();
            let wspec = LeafSpec {
                names: w.hostnames.clone(),
                workload: Some(WorkloadIdentity {
                    config_root: *own.root(),
                    code_digest,
                    image: w.image.clone(),
                    key_source: "tee-generated".into(),
                }),
                ..spec.clone()
            };
            let r = Arc::new(RatlsResolver::new(tee.clone(), ca.clone(), wspec));
            r.current().map_err(ca_err)?;
            workloads.push((w.hostnames.clone(), r));
        }
        let resolver = Arc::new(SniResolver::new(enclave.clone(), workloads));
        Ok(Self {
            state: Arc::new(State {
                tee,
                enclave,
                resolver,
                tree,
            }),
            listen,
            ca_root,
            state_dir,
        })
    }

    /// The config root served.
    pub fn config_root(&self) -> [u8; 32] {
        *self.state.tree.root()
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
        let listen_err = |reason: String| RuntimeError::Listen {
            addr: self.listen.to_string(),
            reason,
        };
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| listen_err(e.to_string()))?;
        let tls = server_config(self.state.resolver.clone(), None)
            .map_err(|e| listen_err(e.to_string()))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        eprintln!(
            "enclave-os: serving RA-TLS on {} ({}{}), config root {}",
            self.listen,
            self.state.tee.name(),
            if self.state.tee.simulated() {
                ", SIMULATED"
            } else {
                ""
            },
            hex::encode(self.config_root())
        );
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let state = self.state.clone();
                    tasks.spawn(http::connection(acceptor, tcp, state));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        eprintln!("enclave-os: shutting down; finishing requests in flight");
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        Ok(())
    }
}
