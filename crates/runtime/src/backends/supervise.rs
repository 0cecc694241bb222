//! What the supervisors of containers and processes share: the health check that gates a
//! service's route, the restart decision after an exit, and the log each start begins afresh.
//!
//! Not here: how either kind is started or waited for (`container.rs`, `process.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enclave_config::file::ServiceSettings;

/// A service workload's health as its supervisor recorded it: stopped, serving while its
/// service runs, else why not (its last exit, or that it is still starting).
pub(crate) fn health(stopped: bool, running: bool, last_exit: Option<&str>) -> super::Health {
    use super::Health;
    match (stopped, running, last_exit) {
        (true, _, _) => Health::Unavailable("stopped".into()),
        (false, true, _) => Health::Serving,
        (false, false, Some(exit)) => Health::Unavailable(exit.to_string()),
        (false, false, None) => Health::Unavailable("starting".into()),
    }
}

/// How much of a log an exit report carries.
pub(crate) const LOG_TAIL_BYTES: u64 = 4096;

/// Wait for workload `name`'s health check to pass at `addr` within its start timeout.
/// `stopped`: set when the workload is stopped, which ends the wait at once; `exited`: asked
/// between probes, a reason when the service is gone already (a process that exited), so a
/// failure is reported at once rather than at the end of the timeout.
pub(crate) async fn healthy(
    name: &str,
    settings: &ServiceSettings,
    addr: SocketAddr,
    stopped: Option<&AtomicBool>,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let budget = Duration::from_secs(u64::from(settings.health.start_timeout_secs));
    let deadline = tokio::time::Instant::now() + budget;
    let mut last = String::from("no answer yet");
    // A process takes some milliseconds to listen: ask again soon, then less often.
    let mut pause = Duration::from_millis(10);
    while tokio::time::Instant::now() < deadline {
        if stopped.is_some_and(|s| s.load(Ordering::Acquire)) {
            return Err("the workload was stopped".into());
        }
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
                tracing::info!(workload = %name, %addr, "healthy");
                return Ok(());
            }
            Err(e) => last = e,
        }
        if let Some(why) = exited() {
            return Err(format!("{why} before it passed its health check ({last})"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
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

/// Whether the restart policy starts workload `name` again after an exit with `code`, having
/// restarted it `restarts` times; if so, after a pause that grows with each restart, so that a
/// service that dies at once does not spin. The caller counts the restart.
pub(crate) async fn again(
    name: &str,
    settings: &ServiceSettings,
    restarts: u32,
    stopped: &AtomicBool,
    code: u32,
) -> bool {
    if !settings.restart.restarts(code) || restarts >= settings.max_restarts {
        tracing::warn!(workload = %name, "left down (restart policy {:?}, {restarts} of {} restarts used)", settings.restart, settings.max_restarts);
        return false;
    }
    tokio::time::sleep(Duration::from_millis(250 << restarts.min(5))).await;
    !stopped.load(Ordering::Acquire)
}

/// A new log for a new start of a workload: the last one's becomes `<name>.previous.log`, so
/// two starts' output never mixes and the last exit can still be read.
pub(crate) fn fresh_log(log: &Path) -> Result<(), String> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("its log directory {}: {e}", dir.display()))?;
    }
    match std::fs::rename(log, log.with_extension("previous.log")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("its log {}: {e}", log.display())),
    }
}

/// The tail of a log, or why it cannot be read.
pub(crate) async fn tail(log: &Path) -> String {
    enclave_containers::log_tail(log, LOG_TAIL_BYTES)
        .await
        .unwrap_or_else(|e| format!("(its log cannot be read: {e})"))
}

/// `reason`, with the tail of `log` when there is one.
pub(crate) async fn with_tail(reason: String, log: &Path) -> String {
    let tail = tail(log).await;
    if tail.trim().is_empty() {
        reason
    } else {
        format!("{reason}; the tail of its log:\n{tail}")
    }
}
