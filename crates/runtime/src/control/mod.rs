//! The control plane: what the runtime serves, published as one immutable [`Snapshot`], and the
//! one writer that changes it.
//!
//! Readers (the front routing a request, the TLS resolver choosing a certificate, the API
//! answering a status) take the current snapshot with one atomic load and never wait: no lock a
//! write holds is on their path. Every change (a workload loaded, replaced or unloaded, a JWKS
//! rotation, an app declaring a certificate extension) is sent to the writer, a thread of its
//! own, which applies changes one at a time: it validates the change against the snapshot it
//! is about to replace (so two loads claiming one hostname cannot both pass), makes it durable
//! in the sealed store (an fsync, and with a witness counter a network round trip), and only
//! then publishes the next snapshot. A slow write delays the next change, never a request.
//!
//! Not here: sockets, HTTP routing, authentication (see `front` and `api`).

mod workloads;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use enclave_config::ConfigTree;
use enclave_config::file::{Workload, WorkloadCode};
use enclave_config::vault::PolicyDoc;
use enclave_ratls::tls::RatlsResolver;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::backends::{Handler, Running};

pub(crate) use workloads::{Loaded, enclave_spec, restore, tree};
pub(crate) use writer::{
    Inbox, Parts, Writer, check_appraisal_policies, evidence_binding, restore_policies,
};

/// Changes waiting for the writer. A full queue makes callers wait for a slot (the API) rather
/// than grow memory without bound.
const QUEUE: usize = 64;

/// Where a workload came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `enclave.toml`: changed only by changing the file and restarting.
    File,
    /// The management API: kept in the sealed store, back after a restart.
    Api,
}

impl Origin {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Origin::File => "enclave.toml",
            Origin::Api => "api",
        }
    }
}

/// One workload as published: its settings, what runs it, and its certificate.
#[derive(Clone)]
pub(crate) struct Entry {
    pub spec: Workload,
    pub origin: Origin,
    /// SHA-256 of its code, as the tree commits it (`workload/<name>/code`).
    pub code_sha256: Option<[u8; 32]>,
    pub running: Arc<dyn Running>,
    /// `running`'s handler, made once.
    pub handler: Handler,
    /// Its own certificate, when it has hostnames.
    pub cert: Option<Arc<RatlsResolver>>,
}

/// What the runtime serves at one moment. Immutable: a change publishes a new one.
pub(crate) struct Snapshot {
    /// Counts changes of the tree (and so of the enclave-wide certificate): a connection made
    /// under one generation knows, at each request, whether what it was shown still stands.
    /// Changes that leave the tree as it was (an app's declaration, which reissues only that
    /// app's certificate) keep it.
    pub generation: u64,
    pub tree: Arc<ConfigTree>,
    /// The file's workloads in file order, then those loaded through the API by name.
    pub workloads: Vec<Arc<Entry>>,
    /// Lowercased hostname to its workload.
    routes: HashMap<String, Arc<Entry>>,
    /// Workloads the store kept that could not be taken back at start (a hostname another
    /// now holds, a name enclave.toml now uses, checks they no longer pass, code that no longer
    /// starts): neither served nor committed, kept in the store until loaded again or unloaded.
    pub parked: Arc<BTreeMap<String, String>>,
    /// The vault policies in force (the file's and the API's), as the tree commits them.
    pub policies: Arc<BTreeMap<String, PolicyDoc>>,
}

impl Snapshot {
    fn new(
        generation: u64,
        tree: Arc<ConfigTree>,
        workloads: Vec<Arc<Entry>>,
        parked: Arc<BTreeMap<String, String>>,
        policies: Arc<BTreeMap<String, PolicyDoc>>,
    ) -> Self {
        let mut routes = HashMap::new();
        for e in &workloads {
            for h in &e.spec.hostnames {
                routes.insert(h.to_ascii_lowercase(), e.clone());
            }
        }
        Self {
            generation,
            tree,
            workloads,
            routes,
            parked,
            policies,
        }
    }

    /// The workload serving `host` (a hostname, without a port), if any.
    pub(crate) fn route(&self, host: &str) -> Option<&Arc<Entry>> {
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.routes.get(&host.to_ascii_lowercase());
        }
        self.routes.get(host)
    }

    /// The workload named `name`.
    pub(crate) fn workload(&self, name: &str) -> Option<&Arc<Entry>> {
        self.workloads.iter().find(|e| e.spec.name == name)
    }

    /// The config root served.
    pub(crate) fn root(&self) -> [u8; 32] {
        *self.tree.root()
    }
}

/// A change to what the runtime serves.
#[derive(Debug)]
// One message per change, through a bounded channel: the size of the largest is no cost worth
// a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Change {
    /// Load or replace a workload through the API.
    Load { spec: Workload, code: WorkloadCode },
    /// Unload a workload loaded through the API.
    Unload { name: String },
    /// Take a refetched JWKS into use (`[oidc] jwks_url`).
    RotateJwks { bytes: Vec<u8> },
    /// An app declares (or, with `None`, withdraws) an extension of its own certificate.
    Declare {
        app: String,
        /// The code hash of the component that declares: only the one served under `app`
        /// may (see `Writer::declare`).
        code: [u8; 32],
        index: u32,
        value: Option<Vec<u8>>,
    },
    /// Put (add or replace) a vault policy through the API.
    PutPolicy { name: String, policy: PolicyDoc },
    /// Remove a vault policy put through the API.
    DeletePolicy { name: String },
    /// Stop taking changes and stop every workload (the runtime is shutting down).
    Shutdown,
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A new snapshot is served, with this config root.
    Published([u8; 32]),
    /// Nothing needed to change.
    Unchanged,
}

/// Why a change was refused. Nothing of a refused change is kept or published.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The change is malformed (a field and why).
    #[error("{0}")]
    Invalid(String),
    /// It conflicts with what is served (a hostname taken, a name from enclave.toml).
    #[error("{0}")]
    Conflict(String),
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The workload could not be started (its code was refused).
    #[error(transparent)]
    Start(#[from] crate::backends::StartError),
    /// The config tree cannot hold it.
    #[error("config tree: {0}")]
    Tree(#[from] enclave_config::ConfigError),
    /// The sealed store could not make it durable.
    #[error("sealed store: {0}")]
    Store(#[from] enclave_store::StoreError),
    /// A certificate could not be issued for it.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Too many changes of this kind in a short time; try later (why).
    #[error("{0}")]
    Busy(String),
    /// The runtime is stopping; nothing more changes.
    #[error("the runtime is stopping; no change is taken")]
    Stopped,
}

struct Job {
    change: Change,
    reply: oneshot::Sender<Result<Applied, ChangeError>>,
}

/// A handle on the control plane: read the snapshot, submit changes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Control {
    published: Arc<ArcSwap<Snapshot>>,
    jobs: mpsc::Sender<Job>,
    enclave: Arc<RatlsResolver>,
}

impl Control {
    /// A plane serving `tree` and no workload yet, and the inbox its [`Writer`] takes.
    pub(crate) fn new(enclave: Arc<RatlsResolver>, tree: Arc<ConfigTree>) -> (Self, Inbox) {
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE);
        let published = Arc::new(ArcSwap::from_pointee(Snapshot::new(
            0,
            tree,
            Vec::new(),
            Arc::default(),
            Arc::default(),
        )));
        let inbox = Inbox {
            jobs: rx,
            published: published.clone(),
        };
        (
            Self {
                published,
                jobs,
                enclave,
            },
            inbox,
        )
    }

    /// The snapshot served now.
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    /// Apply `change`, waiting for the writer.
    pub(crate) async fn submit(&self, change: Change) -> Result<Applied, ChangeError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { change, reply })
            .await
            .map_err(|_| ChangeError::Stopped)?;
        answer.await.map_err(|_| ChangeError::Stopped)?
    }

    /// [`Control::submit`] from a blocking thread (never from an async worker).
    pub(crate) fn submit_blocking(&self, change: Change) -> Result<Applied, ChangeError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .blocking_send(Job { change, reply })
            .map_err(|_| ChangeError::Stopped)?;
        answer.blocking_recv().map_err(|_| ChangeError::Stopped)?
    }

    /// Stop the writer and every workload; later changes get [`ChangeError::Stopped`].
    pub(crate) async fn shutdown(&self) {
        let _ = self.submit(Change::Shutdown).await;
    }

    /// The certificate for `server_name`: the workload's that claims it, else the enclave-wide.
    pub(crate) fn cert_for(&self, server_name: Option<&str>) -> Arc<RatlsResolver> {
        server_name
            .and_then(|n| self.published.load().route(n).and_then(|e| e.cert.clone()))
            .unwrap_or_else(|| self.enclave.clone())
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Control {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_string);
        self.cert_for(name.as_deref()).resolve(hello)
    }
}
