//! Local processes (`kind = "process"`): an executable the tree commits, run by the runtime
//! itself on this machine's loopback, reached by the front over HTTP/1.1 like a container.
//!
//! What runs is exactly the bytes `workload/<name>/code` commits: they are copied into a
//! sealed memory file (`memfd_create`, then no more writes, growth, shrinking or sealing) when
//! the workload starts, and every start and restart executes that file through
//! `/proc/self/fd/N`. The host's copy of the executable is never read again, so rewriting it
//! changes nothing that runs, not even after a crash and a restart.
//!
//! Each process gets an empty environment but the workload's `env` and `PORT`, `/` as its
//! working directory, its own process group (stopping it signals the group: SIGTERM, then
//! SIGKILL after [`STOP_GRACE`]), `no_new_privs`, no core dumps, SIGKILL when the runtime's
//! thread that started it ends (`PR_SET_PDEATHSIG`: it dies with the runtime), and the user and
//! group of `[workload.process]` when set. `limits.memory_bytes` is its address-space limit
//! (`RLIMIT_AS`), `limits.pids` the process limit of the user it runs as (`RLIMIT_NPROC`, so the
//! configuration requires `user` with it). Its stdout and stderr go to a bounded log, as a
//! container's do.
//!
//! Like containers, a load through the API starts its process and waits for its health check
//! before the change is submitted ([`Processes::prelaunch`], synchronous: the request returns
//! once the process serves or was refused), and workloads the runtime starts itself are
//! started in the background, their routes answering 503 "starting" until healthy. The
//! supervisor and the restart policy are those of containers (`supervise`).
//!
//! What it is not: isolation. A process shares the VM, its kernel, its file system and its
//! network with the runtime (`docs/processes.md` says what that means).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enclave_config::file::{ProcessSettings, Workload, WorkloadCode, WorkloadKind};
use enclave_containers::SegmentedLog;
use tokio::io::AsyncReadExt;

use super::supervise::{self, again, fresh_log, healthy, tail, with_tail};
use super::upstream;
use super::{Backend, Handler, Health, Running, StartError};
use enclave_proxy::Upstream;

/// How long a stopping process's group has between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(3);
/// The most a process's log holds: the current file and the previous, half each (as a
/// container's, through `enclave-os log-driver`).
const MAX_LOG_BYTES: u64 = 8 << 20;

/// The runtime's processes: where their logs and run records are, the processes launched for
/// loads awaiting adoption, and the tokio runtime they are started from.
pub(crate) struct Processes {
    logs: PathBuf,
    run: PathBuf,
    prelaunched: Mutex<BTreeMap<String, Prelaunched>>,
    /// Always `Some` until dropped. Every process is spawned by a task on this runtime's one
    /// worker thread, which lives as long as the runtime: `PR_SET_PDEATHSIG` fires when the
    /// *thread* that forked the child ends, so a short-lived thread (a blocking pool's) would
    /// take its processes with it.
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl Drop for Processes {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A process started for a load through the API, with the workload and code it runs, awaiting
/// the change that adopts it.
type Prelaunched = (Workload, Vec<u8>, Launched);

/// Why the processes could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("processes: {0}")]
pub struct ProcessError(String);

impl Processes {
    /// Set up under `state_dir` (`processes/logs`, `processes/run`), and stop what an earlier
    /// run of this state directory left: the leaders died with it (`PR_SET_PDEATHSIG`), but
    /// their own children may not have.
    pub(crate) fn new(state_dir: &Path) -> Result<Arc<Self>, ProcessError> {
        let logs = state_dir.join("processes/logs");
        let run = state_dir.join("processes/run");
        for d in [&logs, &run] {
            std::fs::create_dir_all(d)
                .map_err(|e| ProcessError(format!("{}: {e}", d.display())))?;
        }
        sweep(&run);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("processes")
            .enable_all()
            .build()
            .map_err(|e| ProcessError(format!("its tokio runtime: {e}")))?;
        Ok(Arc::new(Self {
            logs,
            run,
            prelaunched: Mutex::default(),
            handle: rt.handle().clone(),
            rt: Some(rt),
        }))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }

    /// Workload `name`'s log file.
    pub(crate) fn log_path(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Start process workload `w` with `code` for a load through the API and wait for its
    /// health check, before the change is submitted: the writer then adopts it
    /// ([`Backend::start`]). On failure nothing is left, and the reason carries the tail of its
    /// log.
    pub(crate) async fn prelaunch(
        self: &Arc<Self>,
        w: &Workload,
        code: &[u8],
    ) -> Result<(), String> {
        let spec = Arc::new(self.spec(w, code)?);
        let this = self.clone();
        let (w, code) = (w.clone(), code.to_vec());
        self.handle()
            .spawn(async move {
                let launched = launch(&spec, None).await?;
                tracing::info!(workload = %w.name, pid = launched.pid, "process healthy, awaiting publication");
                let name = w.name.clone();
                let old = this
                    .prelaunched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name, (w, code, launched));
                if let Some((_, _, old)) = old {
                    old.stop().await;
                }
                Ok(())
            })
            .await
            .map_err(|e| format!("its launch failed: {e}"))?
    }

    /// Stop the process [`Processes::prelaunch`] left for workload `name`, if the change that
    /// was to adopt it was refused.
    pub(crate) async fn discard_prelaunched(&self, name: &str) {
        let old = self
            .prelaunched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some((_, _, launched)) = old {
            let _ = self.handle().spawn(launched.stop()).await;
        }
    }

    /// What workload `w`'s processes are started from: its code in a sealed memory file.
    fn spec(&self, w: &Workload, code: &[u8]) -> Result<Spec, String> {
        let settings = w
            .run
            .process()
            .ok_or("a process needs its [workload.process] settings")?
            .clone();
        let exe = sys::sealed_executable(&w.name, code)
            .map_err(|e| format!("its executable could not be put in a sealed memory file: {e}"))?;
        Ok(Spec {
            w: w.clone(),
            settings,
            exe,
            log: self.log_path(&w.name),
            run: self.run.clone(),
        })
    }
}

/// Stop every process group an earlier run recorded in `run` and did not stop itself (it was
/// killed), if it was recorded during this boot: after a reboot the numbers mean nothing.
fn sweep(run: &Path) {
    let boot = boot_id();
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some((b, pgid)) = recorded.trim().split_once(' ')
            && Some(b) == boot.as_deref()
            && let Ok(pgid) = pgid.parse::<i32>()
            && pgid > 1
            && sys::signal_group(pgid, libc::SIGKILL)
        {
            tracing::warn!(group = pgid, record = %path.display(), "killed what an earlier run's process left");
        }
        let _ = std::fs::remove_file(&path);
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// What a workload's processes are started from.
struct Spec {
    w: Workload,
    settings: ProcessSettings,
    exe: Arc<OwnedFd>,
    log: PathBuf,
    /// Where each start records its process group (`<name>.<pgid>.pgid`), for the next start
    /// of the runtime to stop should the runtime die unannounced.
    run: PathBuf,
}

impl Spec {
    fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            self.settings.service.port,
        ))
    }
}

/// One started process: its child handle and its pid (also its process group).
struct Launched {
    child: tokio::process::Child,
    pid: u32,
    record: PathBuf,
}

impl Launched {
    /// SIGTERM to its group, SIGKILL after [`STOP_GRACE`], and wait for it.
    async fn stop(mut self) {
        let pgid = self.pid as i32;
        sys::signal_group(pgid, libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            sys::signal_group(pgid, libc::SIGKILL);
            let _ = self.child.wait().await;
        }
        // Whatever it started and left in its group goes too.
        sys::signal_group(pgid, libc::SIGKILL);
        let _ = std::fs::remove_file(&self.record);
    }
}

/// An exit, described, and the code the restart policy decides on (128 + the signal for a
/// process killed by one, as a shell reports it).
fn exit_of(status: std::process::ExitStatus) -> (String, u32) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (format!("exited with status {c}"), c as u32),
        (None, Some(s)) => (format!("killed by signal {s}"), 128 + s as u32),
        (None, None) => ("ended".into(), 1),
    }
}

/// Start one process of `spec` and wait for its health check; on failure, stop what started
/// and say why, with the tail of its log. Runs on the processes' runtime (see [`Processes`]).
async fn launch(spec: &Spec, stopped: Option<&AtomicBool>) -> Result<Launched, String> {
    let w = &spec.w;
    // Loopback is shared with the runtime and every other process: a port something else
    // holds would pass the health check for a process that never got it.
    std::net::TcpListener::bind(spec.addr()).map_err(|e| {
        format!(
            "port {} on 127.0.0.1 is taken already ({e}): by another process, or by this workload's own while it is replaced (unload it first, or give the new one another port)",
            spec.settings.service.port
        )
    })?;
    fresh_log(&spec.log)?;
    let log = SegmentedLog::open(&spec.log, MAX_LOG_BYTES / 2)
        .map_err(|e| format!("its log {}: {e}", spec.log.display()))?;
    let log = Arc::new(Mutex::new(log));
    let mut cmd = tokio::process::Command::new(format!("/proc/self/fd/{}", spec.exe.as_raw_fd()));
    cmd.arg0(&w.name)
        .args(&w.args)
        .env_clear()
        .envs(&w.env)
        .env("PORT", spec.settings.service.port.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(uid) = spec.settings.user {
        cmd.uid(uid);
    }
    if let Some(gid) = spec.settings.group {
        cmd.gid(gid);
    }
    sys::confine(
        &mut cmd,
        sys::Confinement {
            exe: spec.exe.as_raw_fd(),
            parent: std::process::id(),
            memory_bytes: w.limits.memory_bytes,
            // RLIMIT_NPROC counts the processes of a user: meaningful for a user of its own
            // only (the configuration requires `user` with `limits.pids`).
            processes: spec.settings.user.and(w.limits.pids),
        },
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("it could not be started: {e}"))?;
    let pid = child.id().ok_or("it exited as it started")?;
    // Named by its group too: a replacement's record never overwrites the old one's.
    let record = spec.run.join(format!("{}.{pid}.pgid", w.name));
    if let Some(b) = boot_id()
        && let Err(e) = std::fs::write(&record, format!("{b} {pid}\n"))
    {
        tracing::warn!(workload = %w.name, error = %e, "recording its process group");
    }
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, log.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, log));
    }
    let mut launched = Launched { child, pid, record };
    let checked = {
        let child = &mut launched.child;
        healthy(
            &w.name,
            &spec.settings.service,
            spec.addr(),
            stopped,
            || {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| format!("it {}", exit_of(s).0))
            },
        )
        .await
    };
    match checked {
        Ok(()) => Ok(launched),
        Err(reason) => {
            launched.stop().await;
            Err(with_tail(reason, &spec.log).await)
        }
    }
}

/// Copy a process's output into its log until the pipe ends.
async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, to: Arc<Mutex<SegmentedLog>>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let written = to
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write(&buf[..n]);
                if let Err(e) = written {
                    // Keep draining: a process blocked on a full pipe would stop serving.
                    tracing::warn!(error = %e, "writing a process's log");
                }
            }
        }
    }
}

/// Runs process workloads.
pub(crate) struct ProcessBackend {
    processes: Arc<Processes>,
}

impl ProcessBackend {
    pub(crate) fn new(processes: Arc<Processes>) -> Self {
        Self { processes }
    }
}

/// Where a workload's process is, and how it last ended.
#[derive(Default)]
struct State {
    pid: Option<u32>,
    exit: Option<String>,
    restarts: u32,
    /// The restart policy gave up: it is not coming back (not merely between two starts).
    left_down: bool,
}

/// A started process workload.
pub(crate) struct Process {
    name: String,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    upstream: Arc<Upstream>,
    /// The name its service is told it was reached by when a request carries none (its first
    /// hostname, else its name).
    host: String,
    handle: tokio::runtime::Handle,
}

impl Backend for ProcessBackend {
    fn runs(&self, kind: WorkloadKind) -> bool {
        kind == WorkloadKind::Process
    }

    fn start(&self, w: &Workload, code: &WorkloadCode) -> Result<Arc<dyn Running>, StartError> {
        let refused = |reason: String| StartError::Refused {
            name: w.name.clone(),
            reason,
        };
        let WorkloadCode::Module(code) = code else {
            return Err(refused("a process's code is its executable's bytes".into()));
        };
        let p = &self.processes;
        // The process launched for this very load (same settings, same bytes) is adopted; any
        // other is stopped, and this one started in the background.
        let first = match p
            .prelaunched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&w.name)
        {
            Some((pw, pcode, launched)) if pw == *w && pcode == *code => Some(launched),
            Some((_, _, other)) => {
                p.handle().spawn(other.stop());
                None
            }
            None => None,
        };
        let spec = Arc::new(p.spec(w, code).map_err(refused)?);
        let state = Arc::new(Mutex::new(State {
            pid: first.as_ref().map(|l| l.pid),
            ..State::default()
        }));
        let stopped = Arc::new(AtomicBool::new(false));
        let upstream = upstream::upstream(w);
        if first.is_some() {
            upstream.set_target(Some(spec.addr()));
        }
        let handle = p.handle();
        handle.spawn(supervise(
            spec.clone(),
            state.clone(),
            stopped.clone(),
            first,
            upstream.clone(),
        ));
        Ok(Arc::new(Process {
            name: w.name.clone(),
            addr: spec.addr(),
            state,
            stopped,
            upstream,
            host: upstream::host(w),
            handle,
        }))
    }
}

/// The life of a workload's process: start it (or take the one already started), wait for each
/// exit, record it, and start again as the restart policy says, until the workload is stopped
/// or out of restarts. A start that fails counts as an exit with a failure.
async fn supervise(
    spec: Arc<Spec>,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    mut next: Option<Launched>,
    upstream: Arc<Upstream>,
) {
    let name = &spec.w.name;
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let restarts = || lock().restarts;
    loop {
        let mut launched = match next.take() {
            Some(l) => l,
            None => match launch(&spec, Some(&stopped)).await {
                Ok(l) => l,
                Err(reason) => {
                    tracing::warn!(workload = %name, %reason, "process did not start");
                    lock().exit = Some(format!("did not start: {reason}"));
                    if !again(name, &spec.settings.service, restarts(), &stopped, 1).await {
                        // Out of restarts (or stopped while it paused): say it stays down.
                        lock().left_down = !stopped.load(Ordering::Acquire);
                        return;
                    }
                    lock().restarts += 1;
                    continue;
                }
            },
        };
        // Stopped while it started: it goes, and nothing else happens.
        if stopped.load(Ordering::Acquire) {
            launched.stop().await;
            return;
        }
        lock().pid = Some(launched.pid);
        upstream.set_target(Some(spec.addr()));
        tracing::info!(workload = %name, pid = launched.pid, "process serving");
        let status = launched.child.wait().await;
        // Whatever it left in its group goes with it.
        sys::signal_group(launched.pid as i32, libc::SIGKILL);
        let _ = std::fs::remove_file(&launched.record);
        upstream.set_target(None);
        lock().pid = None;
        if stopped.load(Ordering::Acquire) {
            return;
        }
        let (why, code) = match status {
            Ok(s) => exit_of(s),
            Err(e) => (format!("could not be waited for: {e}"), 1),
        };
        let tail = tail(&spec.log).await;
        lock().exit = Some(format!("{why}; the tail of its log:\n{tail}"));
        tracing::warn!(workload = %name, pid = launched.pid, code, "process {why}");
        if !again(name, &spec.settings.service, restarts(), &stopped, code).await {
            // Out of restarts (or stopped while it paused): say it stays down.
            lock().left_down = !stopped.load(Ordering::Acquire);
            return;
        }
        lock().restarts += 1;
    }
}

impl Running for Process {
    fn handler(&self) -> Handler {
        upstream::handler(self.upstream.clone(), self.host.clone())
    }

    fn upstream(&self) -> Option<Arc<Upstream>> {
        Some(self.upstream.clone())
    }

    fn health(&self) -> Health {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        supervise::health(
            self.stopped.load(Ordering::Acquire),
            s.pid.is_some(),
            s.exit.as_deref(),
        )
    }

    fn detail(&self) -> Option<serde_json::Value> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Some(serde_json::json!({
            "pid": s.pid,
            "address": self.addr.to_string(),
            "restarts": s.restarts,
            "left_down": s.left_down,
            "last_exit": s.exit,
        }))
    }

    fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        // The supervisor sees the exit and clears the pid; until then (or the grace period),
        // wait, then SIGKILL the group. Blocking is fine: the control plane calls this off the
        // async workers.
        let Some(pid) = self.pid() else { return };
        sys::signal_group(pid as i32, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while self.pid() == Some(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.pid() == Some(pid) {
            sys::signal_group(pid as i32, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.pid() == Some(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        tracing::info!(workload = %self.name, pid, "process stopped");
    }
}

impl Process {
    fn pid(&self) -> Option<u32> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).pid
    }
}

impl Drop for Process {
    /// The last reference gone without [`Running::stop`] (a change refused after its process
    /// was adopted): the process goes too, in the background, never blocking whoever drops it.
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(pid) = self.pid() {
            let state = self.state.clone();
            self.handle.spawn(async move {
                sys::signal_group(pid as i32, libc::SIGTERM);
                let gone = || state.lock().unwrap_or_else(|p| p.into_inner()).pid != Some(pid);
                let deadline = tokio::time::Instant::now() + STOP_GRACE;
                while !gone() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if !gone() {
                    sys::signal_group(pid as i32, libc::SIGKILL);
                }
            });
        }
    }
}

/// The system calls behind the above, each with the reason it is sound.
#[allow(unsafe_code)]
mod sys {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::Arc;

    /// `code` in a memory file no one can change any more: sealed against writes, growth,
    /// shrinking and further seals. Close-on-exec: only the process it is executed for gets it
    /// (see [`confine`]).
    pub(super) fn sealed_executable(name: &str, code: &[u8]) -> std::io::Result<Arc<OwnedFd>> {
        let cname = std::ffi::CString::new(format!("enclave-os:{name}"))
            .map_err(|_| std::io::Error::other("the workload's name has a NUL byte"))?;
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // MFD_EXEC (Linux 6.3) keeps the file executable where `vm.memfd_noexec` would make
        // memory files non-executable by default; older kernels refuse the flag.
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        let mut fd = unsafe { libc::memfd_create(cname.as_ptr(), flags | libc::MFD_EXEC) };
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // SAFETY: as above.
            fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
        }
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(owned);
        file.write_all(code)?;
        let seals =
            libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this function owns, with an integer argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(OwnedFd::from(file)))
    }

    /// Send `signal` to process group `pgid`: whether it had a member.
    pub(super) fn signal_group(pgid: i32, signal: i32) -> bool {
        if pgid <= 1 {
            return false;
        }
        // SAFETY: kill(2) takes plain integers; a negative pid names the group.
        unsafe { libc::kill(-pgid, signal) == 0 }
    }

    /// What the child sets up for itself between fork and exec.
    #[derive(Clone, Copy)]
    pub(super) struct Confinement {
        /// The sealed executable, kept open across exec for a script's interpreter.
        pub exe: i32,
        /// The runtime's pid: if the child's parent is another by the time PDEATHSIG is set,
        /// the runtime is gone already.
        pub parent: u32,
        pub memory_bytes: Option<u64>,
        pub processes: Option<u32>,
    }

    /// Have `cmd`'s child die with the runtime, refuse new privileges, dump no core, and take
    /// its limits.
    pub(super) fn confine(cmd: &mut tokio::process::Command, c: Confinement) {
        let hook = move || -> std::io::Result<()> {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // SAFETY (all calls below): between fork and exec only async-signal-safe system
            // calls run, on integers and on stack values that outlive each call; nothing
            // allocates or takes a lock.
            unsafe {
                check(libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                ))?;
                if libc::getppid() as u32 != c.parent {
                    libc::_exit(127);
                }
                check(libc::prctl(
                    libc::PR_SET_NO_NEW_PRIVS,
                    1 as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                check(libc::setrlimit(libc::RLIMIT_CORE, &none))?;
                if let Some(bytes) = c.memory_bytes {
                    let l = libc::rlimit {
                        rlim_cur: bytes as libc::rlim_t,
                        rlim_max: bytes as libc::rlim_t,
                    };
                    check(libc::setrlimit(libc::RLIMIT_AS, &l))?;
                }
                if let Some(n) = c.processes {
                    let l = libc::rlimit {
                        rlim_cur: libc::rlim_t::from(n),
                        rlim_max: libc::rlim_t::from(n),
                    };
                    check(libc::setrlimit(libc::RLIMIT_NPROC, &l))?;
                }
                // A script's interpreter opens `/proc/self/fd/N` after exec: N stays open in
                // the child (only there: the runtime's copy keeps close-on-exec).
                check(libc::fcntl(c.exe, libc::F_SETFD, 0))?;
            }
            Ok(())
        };
        // SAFETY: the hook only makes async-signal-safe system calls (see above).
        unsafe {
            cmd.pre_exec(hook);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn the_sealed_executable_holds_the_bytes_and_refuses_every_change() {
        let exe = super::sys::sealed_executable("t", b"\x7fELF committed bytes").unwrap();
        let path = format!("/proc/self/fd/{}", exe.as_raw_fd());
        let mut read = Vec::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, b"\x7fELF committed bytes");
        // Opened anew for writing, as a host with the runtime's rights could: refused.
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"X"))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        let e = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        // Not even the seals can be undone or added to.
        // SAFETY: fcntl on a descriptor this test owns, with an integer argument.
        #[allow(unsafe_code)]
        let r = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_EXEC) };
        assert_eq!(r, -1);
    }
}
