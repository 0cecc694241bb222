//! OCI containers (`kind = "container"`), run by containerd and runc, each in its own network
//! namespace on the runtime's bridge, reached by the front over HTTP/1.1.
//!
//! Launching one: make sure its layers are unpacked, create the container with the runtime spec
//! the tree commits (byte for byte; with a vault, plus the two variables of the vault's SKR
//! endpoint, a token made for this start and the URL, `vault::skr`), create its task (runc makes its namespaces), attach its
//! network namespace to the bridge, start it, and wait for its health check.
//!
//! Nothing here blocks the control plane's writer. A load through the API launches its
//! container before it submits the change ([`prelaunch`]), so the route goes live on a healthy
//! container and the writer only adopts it. A workload the runtime starts itself (from
//! `enclave.toml` or kept from the API) is launched in the background: its route answers 503
//! "starting" until its health check passed, and every other workload, the listener and the
//! API are up meanwhile. A supervisor then waits for each exit: the status, whether the kernel
//! killed it for its memory limit, and the tail of its log are recorded, and the restart policy
//! applies. A log is kept to [`MAX_LOG_BYTES`] (by `enclave-os log-driver`, which containerd runs
//! for each container): a container cannot fill the disk the sealed store is on.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enclave_config::file::{ContainerSettings, ImageLeaves, Workload, WorkloadCode, WorkloadKind};

use super::supervise::{self, again, fresh_log, healthy, tail, with_tail};
use super::upstream;
use super::{Backend, Handler, Health, Running, StartError};
use crate::containers::Containers;
use enclave_proxy::Upstream;

/// How long a stopping container has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The most a container's log may hold; past it, it is cut to its last [`LOG_KEEP_BYTES`].
pub(crate) const MAX_LOG_BYTES: u64 = 8 << 20;
/// What a cut log keeps.
const LOG_KEEP_BYTES: u64 = 1 << 20;
/// How often a log's size is checked.
const LOG_CHECK: Duration = Duration::from_millis(100);

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
#[derive(Default)]
struct State {
    target: Option<SocketAddrV4>,
    id: Option<String>,
    exit: Option<String>,
    restarts: u32,
    /// The restart policy gave up: it is not coming back (not merely between two starts).
    left_down: bool,
}

/// What a workload's container is launched from.
struct Spec {
    w: Workload,
    settings: ContainerSettings,
    leaves: ImageLeaves,
    log: PathBuf,
}

/// A started container workload.
pub(crate) struct Container {
    name: String,
    containers: Arc<Containers>,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    upstream: Arc<Upstream>,
    /// The name its service is told it was reached by when a request carries none (its first
    /// hostname, else its name).
    host: String,
    /// For an encrypted image: its key references (OID 3.9).
    encrypted: Option<super::Encrypted>,
}

/// One container, created, started and healthy: its id, its address on the bridge.
pub(crate) struct Started {
    id: String,
    ip: Ipv4Addr,
}

/// The unique id of one start of workload `name`: a restart or a replacement never meets an
/// earlier container of the same workload still being removed.
fn container_id(name: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut r = [0u8; 4];
    // Uniqueness, not secrecy: a counter suffices if the RNG were to fail.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).is_err() {
        r = SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    }
    format!("{name}-{}", hex::encode(r))
}

fn refused(w: &Workload, reason: impl std::fmt::Display) -> StartError {
    StartError::Refused {
        name: w.name.clone(),
        reason: reason.to_string(),
    }
}

/// Keep `log` under [`MAX_LOG_BYTES`] until `stopped`: past it, cut it to its last
/// [`LOG_KEEP_BYTES`]. The shim appends (`O_APPEND`), so its writes land at the new end; lines
/// written between the read and the cut are lost, which a log that fast can spare.
async fn keep_log(log: PathBuf, stopped: Arc<AtomicBool>) {
    while !stopped.load(Ordering::Acquire) {
        tokio::time::sleep(LOG_CHECK).await;
        let Ok(meta) = tokio::fs::metadata(&log).await else {
            continue;
        };
        if meta.len() <= MAX_LOG_BYTES {
            continue;
        }
        let cut = async {
            use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
            let mut f = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&log)
                .await?;
            let len = f.metadata().await?.len();
            f.seek(std::io::SeekFrom::Start(len.saturating_sub(LOG_KEEP_BYTES)))
                .await?;
            let mut kept = Vec::with_capacity(LOG_KEEP_BYTES as usize);
            (&mut f).take(LOG_KEEP_BYTES).read_to_end(&mut kept).await?;
            f.set_len(0).await?;
            f.seek(std::io::SeekFrom::Start(0)).await?;
            f.write_all(
                format!(
                    "[enclave-os: the log passed {MAX_LOG_BYTES} bytes; earlier output was cut]\n"
                )
                .as_bytes(),
            )
            .await?;
            f.write_all(&kept).await?;
            Ok::<_, std::io::Error>(len)
        };
        match cut.await {
            Ok(len) => tracing::warn!(log = %log.display(), bytes = len, "container log cut"),
            Err(e) => tracing::warn!(log = %log.display(), error = %e, "cutting a container log"),
        }
    }
}

/// A container being launched: removed if the launch does not finish, whether it failed or
/// was dropped half-way (a load cancelled by an unload, its task aborted).
struct Launching {
    containers: Arc<Containers>,
    id: Option<String>,
    address: Option<Ipv4Addr>,
}

impl Launching {
    /// The launch finished: the container is someone's to run.
    fn done(mut self) -> Started {
        let id = self.id.take().unwrap_or_default();
        Started {
            id,
            ip: self.address.unwrap_or(Ipv4Addr::UNSPECIFIED),
        }
    }
}

impl Drop for Launching {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let (c, address) = (self.containers.clone(), self.address);
            self.containers
                .handle()
                .spawn(async move { remove(&c, &id, address).await });
        }
    }
}

/// Create, network, start and health-check one container of `spec`; on any failure, remove what
/// was made and say why (with the tail of its log, when it ran). `stopped`: set when the
/// workload is stopped, which ends a health check at once.
async fn launch(
    containers: &Arc<Containers>,
    spec: &Spec,
    stopped: Option<&AtomicBool>,
) -> Result<Started, String> {
    let (w, settings, leaves, log) = (&spec.w, &spec.settings, &spec.leaves, &spec.log);
    let chain = containers
        .ensure_unpacked(w, leaves)
        .await
        .map_err(|e| e.to_string())?;
    fresh_log(log)?;
    let engine = &containers.engine;
    // containerd 1.6 now and then fails a task's rootfs mount with ENOENT when a snapshot was
    // just removed (its snapshotter's cleanup racing the new snapshot: seen once in 30 loads in
    // the start-time benchmark). Creation left nothing behind then; one more try, as another
    // container, gets past it.
    let sink = match &containers.log_driver {
        Some(program) => enclave_containers::LogSink::Driver {
            program,
            log,
            max_bytes: MAX_LOG_BYTES,
        },
        None => enclave_containers::LogSink::File(log),
    };
    // With a vault, each start gets its own token for the vault's SKR endpoint, in its
    // environment: the one difference between the spec it runs and the spec the tree commits.
    let code = {
        let d = ring::digest::digest(&ring::digest::SHA256, &leaves.manifest);
        let mut c = [0u8; 32];
        c.copy_from_slice(d.as_ref());
        c
    };
    let create = |id: String| {
        let sink = &sink;
        let chain = &chain;
        async move {
            let spec = match (&containers.vault_tokens, &containers.vault_url) {
                (Some(tokens), Some(url)) => {
                    let token = tokens.issue(&w.name, &id, code).map_err(|reason| {
                        enclave_containers::EngineError::Spec {
                            id: id.clone(),
                            reason,
                        }
                    })?;
                    crate::vault::skr::with_vault_env(&leaves.runtime_spec, &token, url).map_err(
                        |reason| {
                            tokens.forget(&id);
                            enclave_containers::EngineError::Spec {
                                id: id.clone(),
                                reason,
                            }
                        },
                    )?
                }
                _ => zeroize::Zeroizing::new(leaves.runtime_spec.clone()),
            };
            let made = engine.create_with(&id, &spec, chain, sink).await;
            if made.is_err()
                && let Some(tokens) = &containers.vault_tokens
            {
                tokens.forget(&id);
            }
            made.map(|task| (id, task))
        }
    };
    let (id, task) = match create(container_id(&w.name)).await {
        Ok(made) => made,
        Err(first) => {
            tracing::warn!(workload = %w.name, error = %first, "creating the container failed; trying once more");
            tokio::time::sleep(Duration::from_millis(100)).await;
            create(container_id(&w.name))
                .await
                .map_err(|e| format!("{e} (and before that: {first})"))?
        }
    };
    let mut guard = Launching {
        containers: containers.clone(),
        id: Some(id.clone()),
        address: None,
    };
    let made = async {
        let ip = containers
            .bridge
            .attach(&id, task.pid)
            .await
            .map_err(|e| e.to_string())?;
        guard.address = Some(ip);
        if settings.allow_host {
            containers
                .bridge
                .allow_host(&id, ip)
                .await
                .map_err(|e| e.to_string())?;
        }
        engine.start(&id).await.map_err(|e| e.to_string())?;
        let addr = SocketAddr::from((ip, settings.service.port));
        healthy(&w.name, &settings.service, addr, stopped, || None).await?;
        Ok::<_, String>(())
    }
    .await;
    match made {
        Ok(()) => Ok(guard.done()),
        Err(reason) => {
            let address = guard.address;
            guard.id = None;
            remove(containers, &id, address).await;
            Err(with_tail(reason, log).await)
        }
    }
}

/// Launch container workload `w` for a load through the API, before the change is submitted:
/// the writer then adopts it ([`Backend::start`]) without waiting for anything. On failure
/// nothing is left.
pub(crate) async fn prelaunch(
    containers: &Arc<Containers>,
    w: &Workload,
    leaves: &ImageLeaves,
) -> Result<(), String> {
    let settings = w
        .run
        .container()
        .ok_or("a container needs its settings")?
        .clone();
    let spec = Spec {
        w: w.clone(),
        settings,
        leaves: leaves.clone(),
        log: containers.log_path(&w.name),
    };
    let started = launch(containers, &spec, None).await?;
    tracing::info!(workload = %w.name, container = %started.id, ip = %started.ip, "container healthy, awaiting publication");
    if let Some((_, old)) =
        containers.prelaunched(&w.name, Some((leaves.runtime_spec.clone(), started)))
    {
        remove(containers, &old.id, Some(old.ip)).await;
    }
    Ok(())
}

/// Remove the container [`prelaunch`] left for workload `name`, if the change that was to adopt
/// it was refused.
pub(crate) async fn discard_prelaunched(containers: &Arc<Containers>, name: &str) {
    if let Some((_, started)) = containers.prelaunched(name, None) {
        remove(containers, &started.id, Some(started.ip)).await;
    }
}

/// Remove container `id` and its network (at `address`, when it got one): tolerant of any
/// part already gone.
pub(crate) async fn remove(containers: &Containers, id: &str, address: Option<Ipv4Addr>) {
    if let Some(tokens) = &containers.vault_tokens {
        tokens.forget(id);
    }
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
            return Err(refused(
                w,
                "a container needs its settings and its resolved image",
            ));
        };
        let c = &self.containers;
        let spec = Arc::new(Spec {
            w: w.clone(),
            settings: settings.clone(),
            leaves: leaves.clone(),
            log: c.log_path(&w.name),
        });
        // A container launched for this very load (same runtime spec) is adopted; anything
        // else is launched in the background.
        let first = match c.prelaunched(&w.name, None) {
            Some((spec_bytes, started)) if spec_bytes == leaves.runtime_spec => Some(started),
            Some((_, other)) => {
                let c2 = c.clone();
                c.handle()
                    .spawn(async move { remove(&c2, &other.id, Some(other.ip)).await });
                None
            }
            None => None,
        };
        let mut state = State::default();
        let upstream = upstream::upstream(w);
        if let Some(s) = &first {
            let target = SocketAddrV4::new(s.ip, settings.service.port);
            state.target = Some(target);
            state.id = Some(s.id.clone());
            upstream.set_target(Some(SocketAddr::V4(target)));
        }
        let state = Arc::new(Mutex::new(state));
        let stopped = Arc::new(AtomicBool::new(false));
        c.handle()
            .spawn(keep_log(spec.log.clone(), stopped.clone()));
        c.handle().spawn(supervise(
            c.clone(),
            spec.clone(),
            state.clone(),
            stopped.clone(),
            first,
            upstream.clone(),
        ));
        let encrypted = crate::containers::decrypt::key_reference(
            &leaves.manifest,
            w.decryption_key.as_deref(),
            |name| c.code_keys.thumbprint(name),
        )
        .map(|key_reference| super::Encrypted {
            plaintext: None,
            key_reference,
        });
        Ok(Arc::new(Container {
            name: w.name.clone(),
            containers: c.clone(),
            state,
            stopped,
            upstream,
            host: upstream::host(w),
            encrypted,
        }))
    }
}

/// The life of a workload's container: launch it (or take the one already launched), wait for
/// each exit, record it, and launch again as the restart policy says, until the workload is
/// stopped or out of restarts. A launch that fails counts as an exit with a failure.
async fn supervise(
    containers: Arc<Containers>,
    spec: Arc<Spec>,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    mut next: Option<Started>,
    upstream: Arc<Upstream>,
) {
    let (w, settings) = (&spec.w, &spec.settings);
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let restarts = || lock().restarts;
    loop {
        let started = match next.take() {
            Some(s) => s,
            None => match launch(&containers, &spec, Some(&stopped)).await {
                Ok(s) => s,
                Err(reason) => {
                    tracing::warn!(workload = %w.name, %reason, "container did not start");
                    lock().exit = Some(format!("did not start: {reason}"));
                    if !again(&w.name, &settings.service, restarts(), &stopped, 1).await {
                        // Out of restarts (or stopped while it paused): say it stays down.
                        lock().left_down = !stopped.load(Ordering::Acquire);
                        return;
                    }
                    lock().restarts += 1;
                    continue;
                }
            },
        };
        // Stopped while it launched: what was made goes, and nothing else happens.
        if stopped.load(Ordering::Acquire) {
            remove(&containers, &started.id, Some(started.ip)).await;
            return;
        }
        {
            let mut s = lock();
            let target = SocketAddrV4::new(started.ip, settings.service.port);
            s.target = Some(target);
            s.id = Some(started.id.clone());
            upstream.set_target(Some(SocketAddr::V4(target)));
        }
        tracing::info!(workload = %w.name, container = %started.id, ip = %started.ip, "container serving");
        let status = match containers.engine.wait(&started.id).await {
            Ok(s) => s,
            Err(e) => {
                if !stopped.load(Ordering::Acquire) {
                    tracing::warn!(workload = %w.name, container = %started.id, error = %e, "waiting for the container");
                }
                return;
            }
        };
        if stopped.load(Ordering::Acquire) {
            return;
        }
        let tail = tail(&spec.log).await;
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
        upstream.set_target(None);
        remove(&containers, &started.id, Some(started.ip)).await;
        {
            let mut s = lock();
            s.target = None;
            s.id = None;
            s.exit = Some(format!("{why}; the tail of its log:\n{tail}"));
        }
        tracing::warn!(workload = %w.name, container = %started.id, oom = status.oom_killed, code = status.code, "container {why}");
        if !again(
            &w.name,
            &settings.service,
            restarts(),
            &stopped,
            status.code,
        )
        .await
        {
            // Out of restarts (or stopped while it paused): say it stays down.
            lock().left_down = !stopped.load(Ordering::Acquire);
            return;
        }
        lock().restarts += 1;
    }
}

impl Running for Container {
    fn handler(&self) -> Handler {
        upstream::handler(self.upstream.clone(), self.host.clone())
    }

    fn encrypted(&self) -> Option<super::Encrypted> {
        self.encrypted.clone()
    }

    fn upstream(&self) -> Option<Arc<Upstream>> {
        Some(self.upstream.clone())
    }

    fn health(&self) -> Health {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        supervise::health(
            self.stopped.load(Ordering::Acquire),
            s.target.is_some(),
            s.exit.as_deref(),
        )
    }

    fn detail(&self) -> Option<serde_json::Value> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Some(serde_json::json!({
            "id": s.id,
            "address": s.target.map(|a| a.to_string()),
            "restarts": s.restarts,
            "left_down": s.left_down,
            "last_exit": s.exit,
        }))
    }

    fn stop(&self) {
        if let Some((id, address)) = self.release() {
            let c = self.containers.clone();
            c.block(async { remove(&c, &id, address).await });
            tracing::info!(workload = %self.name, container = %id, "container removed");
        }
    }
}

impl Container {
    /// Mark the workload stopped and hand over its container (id and address) to be removed,
    /// the first time only.
    fn release(&self) -> Option<(String, Option<Ipv4Addr>)> {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.upstream.set_target(None);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let address = s.target.take().map(|a| *a.ip());
        s.id.take().map(|id| (id, address))
    }
}

impl Drop for Container {
    /// The last reference gone without [`Running::stop`] (a change refused after its container
    /// was adopted): the container goes too, in the background, never blocking whoever drops it.
    fn drop(&mut self) {
        if let Some((id, address)) = self.release() {
            let c = self.containers.clone();
            self.containers
                .handle()
                .spawn(async move { remove(&c, &id, address).await });
        }
    }
}
