//! The runtime, started in this process on a listener already bound.
//!
//! A test that starts the binary must pick a port, free it, and hope nothing takes it before
//! the runtime binds it again. Here the listener is bound to port 0 first and handed to
//! [`enclave_runtime::Runtime::serve_on`], so the address is the runtime's from the start.
//! The binary-level tests stay for what only the binary does (the command line, signals, exit
//! statuses).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enclave_config::LoadedConfig;
use enclave_ratls::binding::Freshness;
use enclave_ratls::tls::{RatlsServerVerifier, client_config};
use enclave_ratls::trust::TrustFiles;
use enclave_runtime::{Overrides, Runtime};

/// A runtime serving on loopback until dropped (or [`InProcess::stop`]).
pub struct InProcess {
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl InProcess {
    /// Write `config` (TOML) to `dir/enclave.toml`, prepare the runtime with its state in
    /// `dir/state`, and serve it on a fresh loopback port. The configuration's own `listen`
    /// is ignored.
    pub fn start(dir: &Path, config: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("enclave.toml");
        std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded = LoadedConfig::load(&path).map_err(|e| e.to_string())?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("binding a loopback port: {e}"))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| format!("the bound address: {e}"))?;
        let overrides = Overrides {
            listen: Some(addr.to_string()),
            state_dir: Some(dir.join("state")),
            log_driver: None,
        };
        let runtime = Runtime::prepare(loaded, &overrides).map_err(|e| e.to_string())?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("the listener: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("runtime-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("the async runtime: {e}"))?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)
                        .map_err(|e| format!("the listener: {e}"))?;
                    runtime
                        .serve_on(
                            vec![listener],
                            async {
                                let _ = stopped.await;
                            },
                            Duration::from_secs(2),
                        )
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .map_err(|e| format!("the runtime's thread: {e}"))?;
        Ok(Self {
            addr,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its directory (the configuration, and `state/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client configuration that verifies its RA-TLS certificates: its CA root and its
    /// simulation PKI, the way an operator's client would after a first run.
    pub fn client(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let trust = TrustFiles {
            root: Some(self.dir.join("state/ca/root.crt.pem")),
            trust_sim: Some(self.dir.join("state/sim")),
            collateral: None,
        };
        let verifier = Arc::new(RatlsServerVerifier::new(
            trust.verifier()?,
            Freshness::Deterministic,
        ));
        client_config(verifier, None, None)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// One request to `path` over RA-TLS, with `host` as SNI and Host (the loopback address
    /// reaches the management API; a workload's hostname reaches the workload), an optional
    /// bearer token and a body: the status and the body.
    pub fn call(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        host: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let method = enclave_http::Method::from_bytes(method.as_bytes())
            .map_err(|e| format!("method {method}: {e}"))?;
        let url = format!("https://{host}:{}{path}", self.addr.port());
        let uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let mut request = enclave_http::Request::new(method, uri)
            .body(body.to_vec())
            .via(&self.addr.ip().to_string(), self.addr.port());
        if let Some(t) = token {
            request = request.bearer(t).map_err(|e| e.to_string())?;
        }
        let response = enclave_http::Client::new(tls.clone())
            .max_body(64 << 20)
            .timeout(Duration::from_secs(30))
            .send_blocking(request)
            .map_err(|e| e.to_string())?;
        Ok((response.status.as_u16(), response.body))
    }

    /// Stop serving (connections in flight get two seconds) and wait for it; what the serve
    /// loop returned.
    pub fn stop(mut self) -> Result<(), String> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| "the runtime's thread panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
