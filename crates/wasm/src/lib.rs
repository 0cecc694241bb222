//! Enclave OS WebAssembly workloads: wasi:http proxy components on wasmtime.
//!
//! What it is for: compiling a component once, and handling each HTTP request in a fresh
//! instance of it, with WASI 0.2 (clocks, random, the operator's environment and arguments, no
//! host filesystem), a memory cap and a wall-clock deadline enforced by epoch interruption. A
//! trap, an overrun or a refusal in one request never touches another request or another app.
//!
//! Beside WASI, components may import the Enclave OS SDK (`wit/sdk.wit`: sealed key-value,
//! attestation, non-exportable keys; see [`sdk`]) and make outgoing HTTPS requests, terminated
//! here and trusting only the egress CA bundle (see `egress`). Compiled code is cached by code
//! hash in an authenticated, encrypted cache ([`cache`]).
//!
//! What it is not: the listener, routing or certificates (the runtime does those), nor the
//! sealed store, the TEE or the certificate authority: the SDK reaches those through the
//! [`Services`] the runtime supplies.

pub mod cache;
mod egress;
mod keys;
pub mod sdk;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use cache::{CodeCache, Compiled};
use egress::Egress;
use sdk::SdkCtx;
pub use sdk::{Evidence, ServiceError, Services, Space};
/// What a request body handed to [`App::handle`] may fail with: the component sees it as the
/// matching `wasi:http` error code (a body over its limit as `HTTP-request-body-size`).
pub use wasmtime_wasi_http::Error as BodyError;

/// How often the engine's epoch advances: the granularity of deadlines, and the longest a busy
/// guest runs before it yields its thread to other requests.
const TICK: Duration = Duration::from_millis(10);

/// Why a component could not be loaded or a request not handled.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WasmError {
    /// The bytes are not a component, or it does not export `wasi:http/incoming-handler`.
    #[error("workload '{name}': {reason}")]
    Load {
        /// The workload.
        name: String,
        /// Why, from wasmtime.
        reason: String,
    },
    /// The request could not be completed: a trap, the deadline, the memory cap.
    #[error("workload '{name}': {reason}")]
    Request {
        /// The workload.
        name: String,
        /// Why.
        reason: String,
    },
    /// Every instance slot stayed taken for the app's whole deadline: the runtime is at
    /// capacity, and the request may be retried.
    #[error(
        "workload '{name}': all {slots} WebAssembly instance slots stayed busy for {waited_ms} ms; try again later"
    )]
    Busy {
        /// The workload.
        name: String,
        /// How many requests may run at once ([`HostOptions::max_instances`]).
        slots: u32,
        /// How long the request waited.
        waited_ms: u128,
    },
}

/// Per-app limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Linear memory and tables, in bytes, per instance.
    pub memory_bytes: usize,
    /// Wall-clock time for one request, guest CPU included.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Core instances, linear memories and tables that one request's instance may create. The pool
/// keeps this many of each per slot, so an admitted request never finds the pool empty; a
/// component needing more is refused at instantiation with wasmtime's reason.
const PER_REQUEST: u32 = 16;

/// What a host offers its apps beyond WASI.
pub struct HostOptions {
    /// The SDK's state: the runtime's sealed store, TEE and certificates. Without it, SDK calls
    /// fail with a reason (components that do not use the SDK are unaffected).
    pub services: Option<Arc<dyn Services>>,
    /// TLS for outgoing requests, trusting only the egress CA bundle. Without it, every
    /// outgoing request is refused.
    pub egress: Option<Arc<rustls::ClientConfig>>,
    /// The compiled-code cache. Without it, every load compiles.
    pub cache: Option<CodeCache>,
    /// Requests in flight at once, across all apps (64 by default). Each holds one instance
    /// from admission until its response body is finished; more wait for a slot, up to their
    /// app's deadline, and are then refused as [`WasmError::Busy`]. This also sizes the pooling
    /// allocator, and bounds memory to this many times the apps' memory caps.
    pub max_instances: NonZeroU32,
}

impl Default for HostOptions {
    fn default() -> Self {
        const DEFAULT: NonZeroU32 = match NonZeroU32::new(64) {
            Some(n) => n,
            None => unreachable!(),
        };
        Self {
            services: None,
            egress: None,
            cache: None,
            max_instances: DEFAULT,
        }
    }
}

/// The engine all apps share, and the thread that advances its epoch.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    linker: Arc<Linker<AppState>>,
    shared: Arc<Shared>,
}

/// What every request's store borrows from the host.
struct Shared {
    services: Option<Arc<dyn Services>>,
    egress: Option<Arc<rustls::ClientConfig>>,
    cache: Option<CodeCache>,
    key_lock: Arc<tokio::sync::Mutex<()>>,
    /// One permit per instance slot.
    slots: Arc<tokio::sync::Semaphore>,
    max_instances: NonZeroU32,
    /// Where guests run, when not on the runtime their requests arrive on
    /// ([`Host::run_guests_on`]).
    guests: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

/// What one request's store holds.
struct AppState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    hooks: Egress,
    sdk: SdkCtx,
}

impl WasiView for AppState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for AppState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl Host {
    /// An engine with the component model, async support and epoch interruption, and a thread
    /// advancing the epoch every 10 ms for as long as the host lives.
    pub fn new(options: HostOptions) -> Result<Self, WasmError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // A fresh instance per request makes instantiation the hot path; the pooling allocator
        // keeps instance slots mapped and reuses them (zeroed between uses) instead of mapping
        // memory per request. It reserves a large range of virtual addresses up front, which a
        // constrained address space (an SGX enclave under Gramine, a 39-bit host) may refuse;
        // then the engine falls back to mapping on demand.
        let slots = options.max_instances.get();
        let per_slot = slots.saturating_mul(PER_REQUEST);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_stacks(slots)
            .total_core_instances(per_slot)
            .total_memories(per_slot)
            .total_tables(per_slot);
        let mut pooled = config.clone();
        pooled.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&pooled) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::info!(reason = %e, "pooling allocator unavailable; instances are mapped on demand");
                Engine::new(&config).map_err(|e| WasmError::Load {
                    name: "(engine)".into(),
                    reason: e.to_string(),
                })?
            }
        };
        // All of WASI 0.2 (what `wasmtime serve` links, so components built for it run
        // unchanged), with a context that preopens no directory and allows no socket: the
        // filesystem and network interfaces exist but reach nothing.
        let mut linker = Linker::new(&engine);
        let link_err = |e: wasmtime::Error| WasmError::Load {
            name: "(linker)".into(),
            reason: e.to_string(),
        };
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_err)?;
        sdk::add_to_linker(&mut linker, |s: &mut AppState| &mut s.sdk).map_err(link_err)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| WasmError::Load {
                name: "(epoch thread)".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            shared: Arc::new(Shared {
                services: options.services,
                egress: options.egress,
                cache: options.cache,
                key_lock: Arc::default(),
                slots: Arc::new(tokio::sync::Semaphore::new(slots as usize)),
                max_instances: options.max_instances,
                guests: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Run every app's guests on `runtime` from now on, whichever runtime their requests
    /// arrive on (the first call decides). A guest computing between epoch ticks holds the
    /// thread it runs on: on a multi-threaded runtime the others pick up what waits, while on
    /// a single-threaded one (the front's connection threads) every connection of that thread
    /// would wait with it, its I/O polled only between the guest's slices.
    pub fn run_guests_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.shared.guests.set(runtime);
    }

    /// Compile `code` (a component's bytes, as supplied) for the app `name`.
    pub fn load(
        &self,
        name: &str,
        code: &[u8],
        env: Vec<(String, String)>,
        args: Vec<String>,
        limits: Limits,
    ) -> Result<App, WasmError> {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, code).as_ref());
        self.load_as(name, code, digest, digest, env, args, limits)
    }

    /// Compile the component `code` (whose SHA-256 is `code_sha256`) for the app `name`, known
    /// by `identity`: the SHA-256 of the code as the operator supplied it. For a component
    /// supplied encrypted, that is the ciphertext's (what the tree commits and policies name),
    /// while `code` is what it decrypted to. The code cache keys its (encrypted) entry by
    /// `code_sha256`, what was compiled: a JWE can open to different plaintexts under two
    /// keys (AES-GCM does not commit to its key), and each must get its own compilation.
    #[allow(clippy::too_many_arguments)]
    pub fn load_as(
        &self,
        name: &str,
        code: &[u8],
        identity: [u8; 32],
        code_sha256: [u8; 32],
        env: Vec<(String, String)>,
        args: Vec<String>,
        limits: Limits,
    ) -> Result<App, WasmError> {
        let load_err = |reason: String| WasmError::Load {
            name: name.to_string(),
            reason,
        };
        let compiled = match &self.shared.cache {
            Some(cache) => cache.component(&self.engine, code, &code_sha256),
            None => Component::new(&self.engine, code).map(|c| (c, Compiled::Fresh)),
        };
        let (component, compiled) = compiled.map_err(|e| {
            load_err(format!(
                "not a WebAssembly component this runtime can compile: {e:#}"
            ))
        })?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "imports something the runtime does not provide: {e:#}"
            ))
        })?;
        let pre = ProxyPre::new(pre)
            .map_err(|e| load_err(format!("does not export wasi:http/incoming-handler: {e:#}")))?;
        Ok(App {
            name: name.into(),
            shared: self.shared.clone(),
            compiled,
            pre,
            env,
            args,
            limits,
            code_sha256: identity,
        })
    }
}

/// A compiled app, ready to handle requests.
pub struct App {
    name: Arc<str>,
    shared: Arc<Shared>,
    compiled: Compiled,
    pre: ProxyPre<AppState>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    limits: Limits,
    code_sha256: [u8; 32],
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("code_sha256", &hex::encode(self.code_sha256))
            .finish_non_exhaustive()
    }
}

impl App {
    /// SHA-256 of the component bytes as supplied: what its certificate attests.
    pub fn code_sha256(&self) -> [u8; 32] {
        self.code_sha256
    }

    /// Whether its compiled code came from the cache.
    pub fn compiled(&self) -> Compiled {
        self.compiled
    }

    fn error(&self, reason: impl Into<String>) -> WasmError {
        WasmError::Request {
            name: self.name.to_string(),
            reason: reason.into(),
        }
    }

    /// Handle one request in a fresh instance, once an instance slot is free. The app's deadline
    /// bounds the whole exchange: the wait for a slot, the request body however slowly it
    /// arrives, and the response body however slowly the client reads it. At the deadline the
    /// instance is dropped and its slot freed.
    pub async fn handle<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, WasmError>
    where
        B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
        B::Error: Into<BodyError>,
    {
        let waiting = Instant::now();
        let slot = match tokio::time::timeout(
            self.limits.timeout,
            self.shared.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; a closed one would mean no request can ever run.
            Ok(Err(_)) | Err(_) => {
                return Err(WasmError::Busy {
                    name: self.name.to_string(),
                    slots: self.shared.max_instances.get(),
                    waited_ms: waiting.elapsed().as_millis(),
                });
            }
        };
        // The deadline covers the whole request, the wait for a slot included.
        let deadline = waiting + self.limits.timeout;
        let mut wasi = WasiCtx::builder();
        wasi.envs(&self.env).args(&self.args);
        let state = AppState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(PER_REQUEST as usize)
                .memories(PER_REQUEST as usize)
                .tables(PER_REQUEST as usize)
                .trap_on_grow_failure(true)
                .build(),
            hooks: Egress {
                app: self.name.clone(),
                tls: self.shared.egress.clone(),
            },
            sdk: SdkCtx {
                app: self.name.clone(),
                code_sha256: self.code_sha256,
                services: self.shared.services.clone(),
                key_lock: self.shared.key_lock.clone(),
            },
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        // A guest that computes without calling the host never gives its worker thread back on
        // its own: with as many runaways as the runtime has workers, every other request (of
        // every app) would wait for their deadlines. So at each epoch tick the guest yields to
        // the executor and others run; once its wall-clock budget is spent it traps.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let (incoming, out) = {
            let mut http = store.data_mut().http();
            let incoming = http
                .new_incoming_request(Scheme::Https, req)
                .map_err(|e| self.error(e.to_string()))?;
            let out = http
                .new_response_outparam(sender)
                .map_err(|e| self.error(e.to_string()))?;
            (incoming, out)
        };
        let pre = self.pre.clone();
        let running = Running { store, _slot: slot };
        let guest = async move {
            // Bound whole, so that the slot is held for as long as the instance runs (its body
            // included), not only until the response head. The epoch callback stops a guest
            // that computes past the deadline; this stops one that waits past it, on a client
            // that sends its body slowly or stops reading the response. Either way the store
            // and the slot are dropped here, and the response body ends with an error.
            let mut running = running;
            let run = async {
                let proxy = pre.instantiate_async(&mut running.store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut running.store, incoming, out)
                    .await
            };
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::Error::msg(DEADLINE_PASSED)),
            }
        };
        let task = match self.shared.guests.get() {
            Some(runtime) => runtime.spawn(guest),
            None => tokio::spawn(guest),
        };
        let timeout = self.limits.timeout;
        match tokio::time::timeout_at(deadline.into(), receiver).await {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(code))) => Err(self.error(format!(
                "the component answered with an error: {}",
                describe(&code)
            ))),
            Ok(Err(_)) => {
                // The guest returned or trapped without setting a response.
                let reason = match task.await {
                    Ok(Ok(())) => "the component returned without a response".to_string(),
                    Ok(Err(e)) => trap_reason(&e, timeout),
                    Err(e) => e.to_string(),
                };
                Err(self.error(reason))
            }
            Err(_) => {
                task.abort();
                Err(self.error(format!(
                    "no response within {} ms: stopped",
                    timeout.as_millis()
                )))
            }
        }
    }
}

/// A request's store and the slot it was admitted with. Fields drop in order: the store returns
/// its instance to the pool before the permit lets another request take the slot.
struct Running {
    store: Store<AppState>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

fn describe(code: &ErrorCode) -> String {
    format!("{code:?}")
}

/// Why a request's task ended when its deadline passed while the instance was waiting.
const DEADLINE_PASSED: &str =
    "the request's deadline passed while the component waited on its client";

fn trap_reason(e: &wasmtime::Error, timeout: Duration) -> String {
    if e.to_string() == DEADLINE_PASSED {
        return format!(
            "ran past its {} ms deadline waiting on the client: stopped",
            timeout.as_millis()
        );
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            format!("ran past its {} ms deadline: stopped", timeout.as_millis())
        }
        Some(t) => format!("trapped: {t}"),
        None => {
            let text = format!("{e:#}");
            if text.contains("memory") || text.contains("grow") {
                format!("refused memory beyond its cap: {text}")
            } else {
                format!("failed: {text}")
            }
        }
    }
}
