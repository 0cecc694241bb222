//! Counters the runtime keeps, rendered in the Prometheus text format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the runtime counts.
#[derive(Debug)]
pub(crate) struct Metrics {
    started: Instant,
    /// (route template, method, status) → requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    pub auth_failures: AtomicU64,
    pub connections: AtomicU64,
    pub handshake_failures: AtomicU64,
    /// Challenge-mode certificates issued.
    pub challenges_issued: AtomicU64,
    /// Challenge-mode handshakes refused because as many were already issuing and waiting.
    pub challenges_refused: AtomicU64,
    /// Connections dropped at a listener's connection cap.
    pub connections_refused: AtomicU64,
    /// Connections refused at a workload's own cap (`proxy.max_connections`).
    pub proxy_refused: AtomicU64,
    /// (way in, outcome) → vault decisions: releases and refusals.
    vault: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// Values read at render time from elsewhere.
pub(crate) struct Gauges<'a> {
    pub tee: &'a str,
    pub simulated: bool,
    pub store_version: u64,
    pub store_records: u64,
    pub workloads: usize,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            requests: Mutex::new(BTreeMap::new()),
            auth_failures: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            challenges_issued: AtomicU64::new(0),
            challenges_refused: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            proxy_refused: AtomicU64::new(0),
            vault: Mutex::new(BTreeMap::new()),
        }
    }

    /// Count one answered request. The method is a label a client chooses: methods outside
    /// RFC 9110's set count as `other`, so made-up ones cannot grow the series without bound.
    pub fn request(&self, route: &str, method: &str, status: u16) {
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        let method = KNOWN
            .iter()
            .find(|k| **k == method)
            .copied()
            .unwrap_or("other");
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((route.to_string(), method.to_string(), status))
            .or_insert(0) += 1;
    }

    /// Count one vault decision made through `via` (`kbs`, `ratls`, `skr`, `sdk`).
    pub fn vault(&self, via: &'static str, released: bool) {
        let outcome = if released { "released" } else { "refused" };
        let mut m = self.vault.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((via, outcome)).or_insert(0) += 1;
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn render(&self, g: &Gauges<'_>) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "enclave_os_build_info",
            "gauge",
            "The running build and TEE.",
            vec![(
                format!(
                    "{{version=\"{}\",tee=\"{}\",simulated=\"{}\"}}",
                    env!("CARGO_PKG_VERSION"),
                    g.tee,
                    g.simulated
                ),
                "1".into(),
            )],
        );
        metric(
            "enclave_os_uptime_seconds",
            "gauge",
            "Seconds since the runtime started.",
            vec![(String::new(), self.uptime_secs().to_string())],
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((route, method, status), n)| {
                (
                    format!(
                        "{{route=\"{}\",method=\"{method}\",status=\"{status}\"}}",
                        route.replace('\\', "\\\\").replace('"', "\\\"")
                    ),
                    n.to_string(),
                )
            })
            .collect();
        metric(
            "enclave_os_http_requests_total",
            "counter",
            "HTTP requests answered, by route template, method and status.",
            requests,
        );
        for (name, help, v) in [
            (
                "enclave_os_auth_failures_total",
                "Requests refused for a missing or invalid bearer token.",
                &self.auth_failures,
            ),
            (
                "enclave_os_connections_total",
                "TCP connections accepted.",
                &self.connections,
            ),
            (
                "enclave_os_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
                &self.handshake_failures,
            ),
            (
                "enclave_os_challenges_issued_total",
                "Challenge-mode certificates issued (a fresh key and quote each).",
                &self.challenges_issued,
            ),
            (
                "enclave_os_challenges_refused_total",
                "Challenge-mode handshakes refused: as many were already issuing and waiting.",
                &self.challenges_refused,
            ),
            (
                "enclave_os_connections_refused_total",
                "Connections dropped at a listener's connection cap.",
                &self.connections_refused,
            ),
            (
                "enclave_os_proxy_connections_refused_total",
                "Connections refused at a workload's own cap (proxy.max_connections).",
                &self.proxy_refused,
            ),
        ] {
            metric(
                name,
                "counter",
                help,
                vec![(String::new(), v.load(Ordering::Relaxed).to_string())],
            );
        }
        let vault: Vec<(String, String)> = self
            .vault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((via, outcome), n)| {
                (
                    format!("{{via=\"{via}\",outcome=\"{outcome}\"}}"),
                    n.to_string(),
                )
            })
            .collect();
        metric(
            "enclave_os_vault_decisions_total",
            "counter",
            "Vault releases and refusals, by the way in (kbs, ratls, skr, sdk).",
            vault,
        );
        for (name, help, v) in [
            (
                "enclave_os_store_version",
                "The sealed store's version: write transactions committed.",
                g.store_version as i64,
            ),
            (
                "enclave_os_store_records",
                "Live records in the sealed store.",
                g.store_records as i64,
            ),
            (
                "enclave_os_workloads",
                "Workloads configured or loaded.",
                g.workloads as i64,
            ),
        ] {
            metric(name, "gauge", help, vec![(String::new(), v.to_string())]);
        }
        out
    }
}
