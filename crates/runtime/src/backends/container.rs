//! OCI containers (`kind = "container"`), run by containerd and runc, each in its own network
//! namespace on the runtime's bridge, reached by the front over HTTP/1.1.
//!
//! Starting one: make sure its layers are unpacked, create the container with the runtime spec
//! the tree commits (byte for byte), create its task (runc makes its namespaces), attach its
//! network namespace to the bridge, start it, and wait for its health check. Only then is its
//! handler returned, so the route goes live on a healthy container. A monitor then waits for
//! its exit: the status, whether the kernel killed it for its memory limit, and the tail of its
//! log are recorded, and the restart policy applies.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enclave_config::file::{ContainerSettings, ImageLeaves, Workload, WorkloadCode, WorkloadKind};
use http_body_util::BodyExt;

use super::{Backend, Handler, Health, Running, ServeError, StartError};
use crate::containers::{Containers, Stage};

/// How much of a container's log an exit report carries.
const LOG_TAIL_BYTES: u64 = 4096;
/// How long a stopping container has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs container workloads on the runtime's engine.
pub(crate) struct ContainerBackend {
    containers: Arc<Containers>,
}

impl ContainerBackend {
    pub(crate) fn new(containers: Arc<Containers>) -> Self {
        Self { containers }
    }
}

/// Where a running container is, and how it last ended.
struct State {
    target: Option<SocketAddr>,
    id: Option<String>,
    exit: Option<String>,
    restarts: u32,
}

/// A started container workload.
pub(crate) struct Container {
    name: String,
    containers: Arc<Containers>,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        axum::body::Body,
    >,
    log: PathBuf,
}

/// One container, created and started: its id, its address on the bridge.
struct Started {
    id: String,
    ip: Ipv4Addr,
}

/// The unique id of one start of workload `name`: a restart or a replacement never meets an
/// earlier container of the same workload still being removed.
fn container_id(name: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut r = [0u8; 4];
    // Uniqueness, not secrecy: a clock and a counter suffice if the RNG were to fail.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).is_err() {
        r = SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    }
    format!("{name}-{}", hex::encode(r))
}

impl ContainerBackend {
    fn refused(w: &Workload, reason: impl std::fmt::Display) -> StartError {
        StartError::Refused {
            name: w.name.clone(),
            reason: reason.to_string(),
        }
    }
}

/// Create, network, start and health-check one container of `w`; on any failure, remove what
/// was made and say why (with the tail of its log, when it ran).
async fn launch(
    containers: &Containers,
    w: &Workload,
    settings: &ContainerSettings,
    leaves: &ImageLeaves,
    log: &std::path::Path,
) -> Result<Started, String> {
    let chain = containers
        .ensure_unpacked(w, leaves)
        .await
        .map_err(|e| e.to_string())?;
    let id = container_id(&w.name);
    let engine = &containers.engine;
    let mut address = None;
    let made = async {
        let task = engine
            .create(&id, &leaves.runtime_spec, &chain, log)
            .await
            .map_err(|e| e.to_string())?;
        let ip = containers
            .bridge
            .attach(&id, task.pid)
            .await
            .map_err(|e| e.to_string())?;
        address = Some(ip);
        if settings.allow_host {
            containers
                .bridge
                .allow_host(&id, ip)
                .await
                .map_err(|e| e.to_string())?;
        }
        engine.start(&id).await.map_err(|e| e.to_string())?;
        healthy(w, settings, SocketAddr::from((ip, settings.port))).await?;
        Ok::<_, String>(ip)
    }
    .await;
    match made {
        Ok(ip) => Ok(Started { id, ip }),
        Err(reason) => {
            remove(containers, &id, address).await;
            let tail = tail(log).await;
            Err(if tail.trim().is_empty() {
                reason
            } else {
                format!("{reason}; the tail of its log:\n{tail}")
            })
        }
    }
}

/// Wait for the health check to pass within its start timeout.
async fn healthy(
    w: &Workload,
    settings: &ContainerSettings,
    addr: SocketAddr,
) -> Result<(), String> {
    let budget = Duration::from_secs(u64::from(settings.health.start_timeout_secs));
    let deadline = tokio::time::Instant::now() + budget;
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        let probe = match &settings.health.http_path {
            Some(path) => enclave_containers::probe_http(addr, path, Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())
                .and_then(|status| {
                    if (200..300).contains(&status) {
                        Ok(())
                    } else {
                        Err(format!("GET {path} answered {status}"))
                    }
                }),
            None => enclave_containers::probe_tcp(addr, Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string()),
        };
        match probe {
            Ok(()) => {
                tracing::info!(workload = %w.name, %addr, "container healthy");
                return Ok(());
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "failed its health check for {}s ({}): {last}",
        budget.as_secs(),
        match &settings.health.http_path {
            Some(p) => format!("GET http://{addr}{p}"),
            None => format!("TCP {addr}"),
        }
    ))
}

/// The tail of a container's log, or why it cannot be read.
async fn tail(log: &std::path::Path) -> String {
    enclave_containers::log_tail(log, LOG_TAIL_BYTES)
        .await
        .unwrap_or_else(|e| format!("(its log cannot be read: {e})"))
}

/// Remove container `id` and its network (at `address`, when it got one): tolerant of any
/// part already gone.
pub(crate) async fn remove(containers: &Containers, id: &str, address: Option<Ipv4Addr>) {
    if let Some(ip) = address
        && let Err(e) = containers.bridge.revoke_host(id, ip).await
    {
        tracing::warn!(container = %id, error = %e, "revoking its access to the host");
    }
    if let Err(e) = containers.bridge.detach(id, None).await {
        tracing::warn!(container = %id, error = %e, "detaching from the bridge");
    }
    if let Err(e) = containers.engine.remove(id, STOP_GRACE).await {
        tracing::warn!(container = %id, error = %e, "removing the container");
    }
}

impl Backend for ContainerBackend {
    fn runs(&self, kind: WorkloadKind) -> bool {
        kind == WorkloadKind::Container
    }

    fn start(&self, w: &Workload, code: &WorkloadCode) -> Result<Arc<dyn Running>, StartError> {
        let (Some(settings), WorkloadCode::Image(leaves)) = (w.run.container(), code) else {
            return Err(Self::refused(
                w,
                "a container needs its settings and its resolved image",
            ));
        };
        let log = self.containers.log_path(&w.name);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Self::refused(w, format!("its log directory {}: {e}", dir.display()))
            })?;
        }
        let c = &self.containers;
        c.board.stage(&w.name, Stage::Starting);
        let started = c
            .block(launch(c, w, settings, leaves, &log))
            .map_err(|reason| {
                c.board.fail(&w.name, reason.clone());
                Self::refused(w, reason)
            })?;
        tracing::info!(workload = %w.name, container = %started.id, ip = %started.ip, "container serving");
        let state = Arc::new(Mutex::new(State {
            target: Some(SocketAddr::from((started.ip, settings.port))),
            id: Some(started.id.clone()),
            exit: None,
            restarts: 0,
        }));
        let stopped = Arc::new(AtomicBool::new(false));
        c.handle().spawn(monitor(
            c.clone(),
            w.clone(),
            settings.clone(),
            leaves.clone(),
            log.clone(),
            state.clone(),
            stopped.clone(),
            started.id,
        ));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http();
        Ok(Arc::new(Container {
            name: w.name.clone(),
            containers: c.clone(),
            state,
            stopped,
            client,
            log,
        }))
    }
}

/// Wait for each exit of the workload's container, record it, and restart it as its policy
/// says, until the workload is stopped or out of restarts.
#[allow(clippy::too_many_arguments)]
async fn monitor(
    containers: Arc<Containers>,
    w: Workload,
    settings: ContainerSettings,
    leaves: ImageLeaves,
    log: PathBuf,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    mut id: String,
) {
    loop {
        let status = match containers.engine.wait(&id).await {
            Ok(s) => s,
            Err(e) => {
                if !stopped.load(Ordering::Acquire) {
                    tracing::warn!(workload = %w.name, container = %id, error = %e, "waiting for the container");
                }
                return;
            }
        };
        if stopped.load(Ordering::Acquire) {
            return;
        }
        let tail = tail(&log).await;
        let why = if status.oom_killed {
            format!(
                "killed by the kernel for exceeding its memory limit ({} bytes), exit status {}",
                w.limits
                    .memory_bytes
                    .unwrap_or(enclave_config::runtime_spec::DEFAULT_MEMORY_BYTES),
                status.code
            )
        } else {
            format!("exited with status {}", status.code)
        };
        let address = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .target
            .map(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => v4,
                std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            });
        remove(&containers, &id, address).await;
        let restarts = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.target = None;
            s.id = None;
            s.exit = Some(format!("{why}; the tail of its log:\n{tail}"));
            s.restarts
        };
        tracing::warn!(workload = %w.name, container = %id, oom = status.oom_killed, code = status.code, restarts, "container {why}");
        if !settings.restart.restarts(status.code) || restarts >= settings.max_restarts {
            tracing::warn!(workload = %w.name, "container left down (restart policy {:?}, {restarts} of {} restarts used)", settings.restart, settings.max_restarts);
            return;
        }
        // A short pause, longer each time: a container that dies at once does not spin.
        tokio::time::sleep(Duration::from_millis(250 << restarts.min(5))).await;
        if stopped.load(Ordering::Acquire) {
            return;
        }
        match launch(&containers, &w, &settings, &leaves, &log).await {
            Ok(started) => {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.target = Some(SocketAddr::from((started.ip, settings.port)));
                s.id = Some(started.id.clone());
                s.restarts += 1;
                tracing::info!(workload = %w.name, container = %started.id, restarts = s.restarts, "container restarted");
                id = started.id;
            }
            Err(reason) => {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.restarts += 1;
                s.exit = Some(format!("{why}; restarting it failed: {reason}"));
                tracing::warn!(workload = %w.name, %reason, "container restart failed");
                return;
            }
        }
    }
}

impl Running for Container {
    fn handler(&self) -> Handler {
        let (state, client, name) = (self.state.clone(), self.client.clone(), self.name.clone());
        Handler::new(tower::service_fn(move |req: super::Request| {
            let target = state.lock().unwrap_or_else(|p| p.into_inner()).target;
            let (client, name) = (client.clone(), name.clone());
            async move {
                let Some(addr) = target else {
                    return Ok(ServeError::Unavailable(format!(
                        "workload '{name}': its container is not running"
                    ))
                    .into_response());
                };
                Ok(forward(&client, addr, req).await.unwrap_or_else(|e| {
                    tracing::warn!(workload = %name, error = %e, "forwarding to the container");
                    ServeError::Failed(format!("workload '{name}': its container: {e}"))
                        .into_response()
                }))
            }
        }))
    }

    fn health(&self) -> Health {
        if self.stopped.load(Ordering::Acquire) {
            return Health::Unavailable("stopped".into());
        }
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (&s.target, &s.exit) {
            (Some(_), _) => Health::Serving,
            (None, Some(exit)) => Health::Unavailable(exit.clone()),
            (None, None) => Health::Unavailable("starting".into()),
        }
    }

    fn detail(&self) -> Option<serde_json::Value> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Some(serde_json::json!({
            "id": s.id,
            "address": s.target.map(|a| a.to_string()),
            "restarts": s.restarts,
            "last_exit": s.exit,
        }))
    }

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let (id, address) = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let address = s.target.take().and_then(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            });
            (s.id.take(), address)
        };
        if let Some(id) = id {
            let c = self.containers.clone();
            c.block(async { remove(&c, &id, address).await });
            tracing::info!(workload = %self.name, container = %id, "container removed");
        }
        let _ = &self.log;
    }
}

/// Forward `req` to the container at `addr` over HTTP/1.1: the path and query as they came,
/// the headers but the hop-by-hop ones.
async fn forward(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        axum::body::Body,
    >,
    addr: SocketAddr,
    req: super::Request,
) -> Result<super::Response, String> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e| format!("the request path: {e}"))?;
    parts.version = axum::http::Version::HTTP_11;
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    let response = client
        .request(axum::http::Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())?;
    let (mut parts, body) = response.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Ok(super::Response::from_parts(
        parts,
        axum::body::Body::new(body.map_err(axum::Error::new)),
    ))
}

/// Headers that describe one connection, not the message (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
