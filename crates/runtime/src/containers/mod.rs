//! Container images, pulled and verified inside the TEE, and the engine that runs them.
//!
//! [`Containers`] is the runtime's one connection to containerd (its own namespace), its one
//! registry client (each registry trusted through its own CA bundle only), and the bridge the
//! containers are attached to. It turns a container workload into the documents the tree
//! commits ([`Containers::prepare`]): the manifest pinned by the reference's digest, the image
//! configuration, every layer checked against its digest while it streams and against the
//! configuration's `diff_ids` once unpacked, and the runtime spec computed from both. The
//! container backend (`backends::container`) starts what was prepared.
//!
//! containerd runs inside the same TEE as the runtime: its content store and snapshots are in
//! the trusted computing base. The registry and the network to it are not: nothing from there
//! is used before its digest matched.
//!
//! An encrypted image (ocicrypt's `+encrypted` layers, `decrypt`) is prepared as far as its
//! plaintext documents go (manifest, configuration, spec); its layers are fetched when it
//! starts, with the keys the vault released to the workload, decrypted as they stream, their
//! HMAC and plaintext digest checked before they are committed, and only into a containerd
//! whose content and snapshots are in memory or on dm-crypt (`scratch`).
//!
//! All of it runs on a tokio runtime of its own, so that the control plane's writer (a plain
//! thread) and `Runtime::prepare` (synchronous) can wait for it, and a pull never occupies the
//! front's workers.

pub(crate) mod decrypt;
pub(crate) mod progress;
pub(crate) mod scratch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enclave_config::LoadedConfig;
use enclave_config::file::{ContainersConfig, EngineVersions, ImageLeaves, Run, Workload};
use enclave_config::runtime_spec::{SpecInput, runtime_spec};
use enclave_containers::{Bridge, BridgeConfig, Engine, Layer};
use enclave_oci::{Client, Credentials, DiffIdVerifier, Digest, Reference, RegistryConfig};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

pub(crate) use progress::{Board, Progress, Stage};

/// Container loads through the API prepared at once; more wait their turn with a 503.
pub(crate) const MAX_LOADS: usize = 4;

/// Why a container workload could not be prepared or run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// The registry, the image or one of its blobs was refused.
    #[error("workload '{workload}': {source}")]
    Image {
        /// The workload.
        workload: String,
        /// Why.
        #[source]
        source: Box<enclave_oci::OciError>,
    },
    /// containerd refused or failed.
    #[error("workload '{workload}': container engine: {source}")]
    Engine {
        /// The workload.
        workload: String,
        /// Why.
        #[source]
        source: enclave_containers::EngineError,
    },
    /// The runtime spec could not be computed.
    #[error(transparent)]
    Spec(#[from] enclave_config::runtime_spec::SpecError),
    /// The engine could not be reached or set up at all.
    #[error("containers: {0}")]
    Setup(String),
    /// Refused before anything was fetched (why).
    #[error("workload '{workload}': {reason}")]
    Refused {
        /// The workload.
        workload: String,
        /// Why.
        reason: String,
    },
}

/// The runtime's container engine, registries and bridge.
pub(crate) struct Containers {
    pub config: ContainersConfig,
    pub engine: Engine,
    pub bridge: Bridge,
    registries: Client,
    pub versions: EngineVersions,
    pub board: Board,
    /// Loads through the API being prepared at once: each holds a pull's connections, its
    /// decompression and the engine's attention.
    pub loads: Arc<tokio::sync::Semaphore>,
    /// Containers launched for a load through the API, awaiting the change that adopts them:
    /// by workload name, with the runtime spec they run.
    prelaunched: std::sync::Mutex<BTreeMap<String, (Vec<u8>, crate::backends::Started)>>,
    /// Loads through the API being prepared, by workload name: an unload cancels one.
    pub loading: std::sync::Mutex<BTreeMap<String, tokio::task::AbortHandle>>,
    /// Where each workload's log is (`<state>/containers/logs/<name>.log`). Logs hold what
    /// the containers print: inside the TEE's state directory, never elsewhere.
    logs: std::path::PathBuf,
    /// The program containerd runs as each container's log driver, if any.
    pub log_driver: Option<std::path::PathBuf>,
    /// With `[vault]`: the tokens each start of a container is given for the vault's SKR
    /// endpoint, and that endpoint's URL (the gateway's address and `vault_port`).
    pub vault_tokens: Option<Arc<crate::vault::skr::Tokens>>,
    pub vault_url: Option<String>,
    /// The vault, for the keys of encrypted images (set once the vault exists).
    pub code_keys: Arc<crate::vault::code_keys::CodeKeys>,
    /// Always `Some` until dropped (see `Drop`).
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        // The last reference may go inside one of this runtime's own tasks (a load finishing
        // as the runtime stops), where a blocking shutdown would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Containers {
    /// Connect to containerd, ask the engine's versions, set up the bridge and sweep what an
    /// earlier run left (containers, half-unpacked snapshots): every container is created
    /// afresh from what the tree commits.
    pub(crate) fn connect(
        loaded: &LoadedConfig,
        state_dir: &std::path::Path,
        log_driver: Option<std::path::PathBuf>,
    ) -> Result<Arc<Self>, ContainerError> {
        let config = loaded.config.containers.clone().ok_or_else(|| {
            ContainerError::Setup("enclave.toml has no [containers] section".into())
        })?;
        let mut registries = Vec::new();
        for r in &loaded.config.registries {
            let bundle = loaded.registry_bundle(&r.host).ok_or_else(|| {
                ContainerError::Setup(format!("registry {}: its CA bundle was not read", r.host))
            })?;
            let credentials = match (&r.username, &r.password_env) {
                (Some(user), Some(var)) => Some(Credentials {
                    username: user.clone(),
                    password: zeroize::Zeroizing::new(std::env::var(var).map_err(|_| {
                        ContainerError::Setup(format!(
                            "registry {}: the environment variable {var} (its password) is not set",
                            r.host
                        ))
                    })?),
                }),
                (Some(user), None) => Some(Credentials {
                    username: user.clone(),
                    password: zeroize::Zeroizing::new(String::new()),
                }),
                _ => None,
            };
            registries.push(RegistryConfig {
                host: r.host.clone(),
                ca_bundle_pem: bundle.to_vec(),
                credentials,
            });
        }
        let registries =
            Client::new(registries).map_err(|e| ContainerError::Setup(e.to_string()))?;
        // containerd's shim opens the log itself, and takes only an absolute path.
        let logs = std::path::absolute(state_dir.join("containers").join("logs")).map_err(|e| {
            ContainerError::Setup(format!(
                "the log directory under {}: {e}",
                state_dir.display()
            ))
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("enclave-containers")
            .enable_all()
            .build()
            .map_err(|e| ContainerError::Setup(format!("its async runtime: {e}")))?;
        let setup =
            |what: &str, e: &dyn std::fmt::Display| ContainerError::Setup(format!("{what}: {e}"));
        // The vault's endpoint for containers exists with a vault only: without one the
        // containers reach nothing of the host.
        let vault = loaded.config.vault.is_some();
        let (engine, bridge, versions) = block(&rt, async {
            let engine = Engine::connect(&config.containerd_socket, &config.namespace)
                .await
                .map_err(|e| {
                    setup(
                        &format!("containerd at {}", config.containerd_socket.display()),
                        &e,
                    )
                })?
                .with_runc(config.runc.clone());
            let v = engine
                .versions()
                .await
                .map_err(|e| setup("the engine's versions", &e))?;
            engine
                .sweep()
                .await
                .map_err(|e| setup("sweeping what an earlier run left", &e))?;
            let stale = engine
                .containers()
                .await
                .map_err(|e| setup("listing what an earlier run left", &e))?;
            let subnet = config
                .subnet
                .parse()
                .map_err(|e| setup(&format!("subnet {}", config.subnet), &e))?;
            let bridge = Bridge::new(BridgeConfig {
                name: config.bridge.clone(),
                subnet,
                cni_bin_dir: config.cni_bin_dir.clone(),
                state_dir: state_dir.join("cni"),
                open_port: vault.then_some(config.vault_port),
            })
            .await
            .map_err(|e| setup(&format!("bridge {}", config.bridge), &e))?;
            // Containers an earlier run left (it was killed, or the machine stopped): each
            // workload's container is created afresh from what its tree commits. They are
            // stale, so no grace period, and all at once: the listener waits for this.
            let mut removals = tokio::task::JoinSet::new();
            for id in stale {
                let (engine, bridge) = (engine.clone(), bridge.clone());
                removals.spawn(async move {
                    if let Err(e) = bridge.detach(&id, None).await {
                        tracing::warn!(container = %id, error = %e, "releasing a stale container's address");
                    }
                    let removed = engine.remove(&id, Duration::ZERO).await;
                    (id, removed)
                });
            }
            while let Some(done) = removals.join_next().await {
                let (id, removed) =
                    done.map_err(|e| setup("removing what an earlier run left", &e))?;
                removed.map_err(|e| {
                    setup(&format!("removing container {id} an earlier run left"), &e)
                })?;
                tracing::info!(container = %id, "removed a container an earlier run left");
            }
            Ok::<_, ContainerError>((
                engine,
                bridge,
                EngineVersions {
                    containerd: v.containerd,
                    runc: v.runc,
                },
            ))
        })?;
        tracing::info!(
            containerd = %versions.containerd,
            runc = %versions.runc,
            namespace = %config.namespace,
            bridge = %config.bridge,
            "container engine connected"
        );
        let vault_url = vault.then(|| format!("http://{}:{}", bridge.gateway(), config.vault_port));
        Ok(Arc::new(Self {
            config,
            engine,
            bridge,
            registries,
            versions,
            board: Board::default(),
            loads: Arc::new(tokio::sync::Semaphore::new(MAX_LOADS)),
            prelaunched: Default::default(),
            loading: Default::default(),
            logs,
            log_driver,
            vault_tokens: vault.then(Default::default),
            vault_url,
            code_keys: Arc::new(crate::vault::code_keys::CodeKeys::new(
                loaded.config.workloads.iter().map(|w| w.name.clone()),
            )),
            rt: Some(rt),
        }))
    }

    /// Run `f` on the containers' runtime and wait for it, from any thread.
    pub(crate) fn block<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        block(self.runtime(), f)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        // `rt` is taken only in `drop`, after which no method runs.
        #[allow(clippy::expect_used)]
        self.rt
            .as_ref()
            .expect("the containers' runtime lives as long as they do")
    }

    /// The containers' runtime, for tasks that outlive a call (monitors).
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.runtime().handle().clone()
    }

    /// The tree's documents for container workload `w`: resolve its image, fetch what the
    /// content store lacks (checking every digest), unpack every layer (checking every diff_id)
    /// and compute its runtime spec. Progress goes to the board under `w.name`.
    pub(crate) async fn prepare(&self, w: &Workload) -> Result<ImageLeaves, ContainerError> {
        let Run::Container { image, settings } = &w.run else {
            return Err(ContainerError::Refused {
                workload: w.name.clone(),
                reason: "is not a container".into(),
            });
        };
        self.board.begin(&w.name, image);
        let out = self
            .prepare_image(w, image)
            .await
            .and_then(|(manifest, config)| {
                let spec = runtime_spec(
                    &config,
                    &SpecInput {
                        name: &w.name,
                        namespace: &self.config.namespace,
                        env: &w.env,
                        args: &w.args,
                        limits: &w.limits,
                        settings,
                    },
                )?;
                Ok(ImageLeaves {
                    manifest,
                    config,
                    runtime_spec: spec,
                })
            });
        match &out {
            Ok(_) => self.board.stage(&w.name, Stage::Starting),
            Err(e) => self.board.fail(&w.name, e.to_string()),
        }
        out
    }

    /// Make sure the image whose manifest and configuration the tree commits is unpacked (a
    /// kept workload after containerd lost its state: pulled again, by digest). Returns the
    /// chain id of its top layer.
    pub(crate) async fn ensure_unpacked(
        &self,
        w: &Workload,
        leaves: &ImageLeaves,
    ) -> Result<String, ContainerError> {
        let image = w.run.image().unwrap_or_default();
        let reference = self.reference(w, image)?;
        let oci = image_err(w);
        let manifest =
            enclave_oci::Manifest::from_bytes(leaves.manifest.clone(), image).map_err(oci)?;
        let config =
            enclave_oci::ImageConfig::from_bytes(&manifest, leaves.config.clone()).map_err(oci)?;
        self.layers(w, &reference, &manifest, &config).await
    }

    /// Refuse to decrypt unless containerd keeps content and snapshots in memory or on
    /// dm-crypt (`scratch`): decrypted layers never reach a disk the host can read.
    async fn check_plaintext_storage(&self, w: &Workload) -> Result<(), ContainerError> {
        scratch::swap_allowed()
            .map_err(|reason| refused(w, format!("its image is encrypted, and {reason}")))?;
        let roots = self.engine.storage_roots().await.map_err(engine_err(w))?;
        for (plugin, root) in roots {
            let on = scratch::tree_allowed(&root).map_err(|reason| {
                refused(
                    w,
                    format!("its image is encrypted, and containerd's {plugin}: {reason}"),
                )
            })?;
            tracing::debug!(workload = %w.name, %plugin, root = %root.display(), on, "decrypted layers stay off the host's disk");
        }
        Ok(())
    }

    fn reference(&self, w: &Workload, image: &str) -> Result<Reference, ContainerError> {
        image.parse::<Reference>().map_err(image_err(w))
    }

    /// The manifest and configuration bytes of `image`, every layer in place.
    async fn prepare_image(
        &self,
        w: &Workload,
        image: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), ContainerError> {
        let reference = self.reference(w, image)?;
        let oci = image_err(w);
        let manifest = self.registries.resolve(&reference).await.map_err(oci)?;
        let config = self
            .registries
            .config(&reference, &manifest)
            .await
            .map_err(oci)?;
        tracing::info!(
            workload = %w.name,
            manifest = %manifest.digest,
            config = %config.digest,
            layers = manifest.parsed.layers.len(),
            "image resolved"
        );
        if decrypt::is_encrypted(&manifest) {
            // The tree commits the manifest and the configuration, both plaintext; the layers
            // are decrypted when the container starts, once the vault (which may not exist
            // yet while enclave.toml's tree is computed) released their keys.
            decrypt::check_schemes(w, &manifest).map_err(|reason| ContainerError::Refused {
                workload: w.name.clone(),
                reason,
            })?;
            tracing::info!(workload = %w.name, "encrypted image: its layers are decrypted when it starts");
        } else if let Some(key) = &w.decryption_key {
            // The tree would say the image is decrypted with a key while it runs in the clear.
            return Err(refused(
                w,
                format!(
                    "decryption_key names vault key '{key}', and no layer of its image is encrypted: drop decryption_key, or push the image encrypted"
                ),
            ));
        } else {
            self.layers(w, &reference, &manifest, &config).await?;
        }
        Ok((manifest.bytes.clone(), config.bytes.clone()))
    }

    /// Fetch the layers the content store lacks and unpack them all, under one lease that
    /// becomes the image's once everything is in place; the chain id of the top layer.
    async fn layers(
        &self,
        w: &Workload,
        reference: &Reference,
        manifest: &enclave_oci::Manifest,
        config: &enclave_oci::ImageConfig,
    ) -> Result<String, ContainerError> {
        let engine_err = engine_err(w);
        let descriptors = &manifest.parsed.layers;
        let diff_ids = &config.parsed.rootfs.diff_ids;
        if diff_ids.len() != descriptors.len() {
            return Err(ContainerError::Refused {
                workload: w.name.clone(),
                reason: format!(
                    "the manifest lists {} layers and the image configuration {} diff_ids",
                    descriptors.len(),
                    diff_ids.len()
                ),
            });
        }
        let encrypted = decrypt::is_encrypted(manifest);
        // Decrypted layers are unpacked into snapshots of this image's own: another image
        // naming the same diff_ids (they are public, in the unencrypted configuration) must
        // bring its own plaintext, not start on this one's.
        let scope = encrypted.then(|| manifest.digest.hex());
        let top = enclave_oci::chain_id(diff_ids)
            .ok_or_else(|| ContainerError::Refused {
                workload: w.name.clone(),
                reason: "the image has no layers".into(),
            })?
            .to_string();
        let top = enclave_containers::scoped_chain_id(scope.as_deref(), &top);
        // An encrypted image's keys are asked for at every start, unpacked or not: the vault's
        // policy, not an earlier start's leftovers, decides whether it runs.
        let keys = if encrypted {
            let keys = self.code_keys.clone();
            let (w2, m2) = (w.clone(), manifest.clone());
            let keys = tokio::task::spawn_blocking(move || decrypt::unwrap_all(&keys, &w2, &m2))
                .await
                .map_err(|e| ContainerError::Setup(format!("unwrapping layer keys: {e}")))?
                .map_err(|reason| ContainerError::Refused {
                    workload: w.name.clone(),
                    reason,
                })?;
            self.check_plaintext_storage(w).await?;
            decrypt::ImageKeys {
                layers: keys,
                scope,
            }
        } else {
            decrypt::ImageKeys::default()
        };
        if self.engine.has_snapshot(&top).await.map_err(engine_err)? {
            tracing::info!(workload = %w.name, chain = %top, "image already unpacked");
            return Ok(top);
        }
        let pull = self
            .engine
            .begin_pull(&manifest.digest.to_string())
            .await
            .map_err(engine_err)?;
        match self
            .fetch_and_unpack(w, reference, &pull, descriptors, diff_ids, &keys)
            .await
        {
            Ok(chain) => {
                pull.finish().await.map_err(engine_err)?;
                Ok(chain)
            }
            Err(e) => {
                // Nothing half-registered: what this pull wrote goes with its lease.
                if let Err(abandon) = pull.abandon().await {
                    tracing::warn!(workload = %w.name, error = %abandon, "releasing a failed pull");
                }
                Err(e)
            }
        }
    }

    async fn fetch_and_unpack(
        &self,
        w: &Workload,
        reference: &Reference,
        pull: &enclave_containers::Pull,
        encrypted: &[enclave_oci::Descriptor],
        diff_ids: &[Digest],
        keys: &decrypt::ImageKeys,
    ) -> Result<String, ContainerError> {
        let engine_err = engine_err(w);
        let oci = image_err(w);
        // What the content store keeps: an encrypted layer as its plaintext blob under its
        // plain media type (what containerd unpacks). Its digest is known once it is decrypted
        // (the key names the plaintext's, or, for a layer skopeo compressed while encrypting,
        // the uncompressed tar's), so an encrypted layer is always fetched unless its image is
        // already unpacked.
        let mut descriptors: Vec<enclave_oci::Descriptor> = encrypted
            .iter()
            .enumerate()
            .map(|(i, d)| match keys.layer(i) {
                Some(_) => enclave_oci::Descriptor {
                    media_type: enclave_oci::plain_media_type(&d.media_type).to_string(),
                    annotations: None,
                    ..d.clone()
                },
                None => d.clone(),
            })
            .collect();
        let mut present = Vec::with_capacity(descriptors.len());
        for (i, d) in descriptors.iter().enumerate() {
            let cached = keys.layer(i).is_none()
                && pull
                    .has_content(&d.digest.to_string())
                    .await
                    .map_err(engine_err)?;
            present.push(cached);
        }
        self.board.update(&w.name, |p| {
            p.stage = Stage::Pulling;
            p.layers = descriptors
                .iter()
                .zip(&present)
                .map(|(d, cached)| progress::Layer {
                    digest: d.digest.to_string(),
                    size: d.size,
                    received: if *cached { d.size } else { 0 },
                    cached: *cached,
                })
                .collect();
        });
        let of = descriptors.len();
        for (i, cached) in present.into_iter().enumerate() {
            let d = &descriptors[i].clone();
            if cached {
                tracing::info!(workload = %w.name, layer = i + 1, of, digest = %d.digest, "layer already in the content store");
                continue;
            }
            let what = format!("layer {} of {of} ({})", i + 1, d.digest);
            let mut blob = self
                .registries
                .blob(reference, &encrypted[i])
                .await
                .map_err(oci)?;
            let progress = |got: u64, logged: &mut u64| {
                self.board.update(&w.name, |p| {
                    if let Some(l) = p.layers.get_mut(i) {
                        l.received = got;
                    }
                });
                // A line per 8 MiB: enough to follow a slow pull, not a line per chunk.
                if got - *logged >= 8 << 20 {
                    *logged = got;
                    tracing::info!(workload = %w.name, layer = i + 1, of, received = got, size = d.size, "pulling");
                }
            };
            let mut diff = DiffIdVerifier::for_layer(d, what.clone()).map_err(oci)?;
            let ingest = format!("enclave-os-{}", d.digest.hex());
            let mut logged = 0u64;
            let (writer, decryptor) = match keys.layer(i) {
                // A plain layer streams into the store; its digest is checked as it streams
                // and by containerd at commit.
                None => {
                    let mut writer = pull
                        .content_writer(&ingest, &d.digest.to_string(), d.size)
                        .await
                        .map_err(engine_err)?;
                    while let Some(chunk) = blob.next_chunk().await.map_err(oci)? {
                        diff.update(&chunk).map_err(oci)?;
                        writer.write(&chunk).await.map_err(engine_err)?;
                        progress(blob.received(), &mut logged);
                    }
                    (writer, None)
                }
                // An encrypted layer in two passes. First its ciphertext, into memory of the
                // runtime's own, checked against the manifest's digest and the HMAC; only then
                // is it decrypted, decompressed and written, so no byte of it that its key
                // holder did not encrypt reaches the decompressor or the store, and how a
                // modified layer fails says nothing about its plaintext.
                Some(u) => {
                    let mut auth =
                        enclave_imgcrypt::LayerAuthenticator::new(&u.key, &u.public, &what)
                            .map_err(|e| refused(w, e))?;
                    let spool = scratch::memory_file(&what).map_err(|e| refused(w, e))?;
                    let mut spool = tokio::fs::File::from_std(spool);
                    while let Some(chunk) = blob.next_chunk().await.map_err(oci)? {
                        auth.update(&chunk);
                        spool.write_all(&chunk).await.map_err(|e| {
                            refused(w, format!("{what}: holding its ciphertext in memory: {e}"))
                        })?;
                        progress(blob.received(), &mut logged);
                    }
                    let mut dec = auth.verify().map_err(|e| refused(w, e))?;
                    let authenticated = blob.received();
                    // tokio writes in the background: a failed last write shows at flush.
                    spool.flush().await.map_err(|e| {
                        refused(w, format!("{what}: holding its ciphertext in memory: {e}"))
                    })?;
                    spool.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| {
                        refused(w, format!("{what}: reading back its ciphertext: {e}"))
                    })?;
                    let mut writer = pull
                        .content_writer_unnamed(&ingest, d.size)
                        .await
                        .map_err(engine_err)?;
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut read_back = 0u64;
                    loop {
                        let n = spool.read(&mut buf).await.map_err(|e| {
                            refused(w, format!("{what}: reading back its ciphertext: {e}"))
                        })?;
                        if n == 0 {
                            break;
                        }
                        read_back += n as u64;
                        if read_back > authenticated {
                            break;
                        }
                        dec.decrypt(&mut buf[..n]);
                        diff.update(&buf[..n]).map_err(oci)?;
                        writer.write(&buf[..n]).await.map_err(engine_err)?;
                    }
                    if read_back != authenticated {
                        return Err(refused(
                            w,
                            format!(
                                "{what}: {read_back} bytes of ciphertext read back from memory, {authenticated} authenticated"
                            ),
                        ));
                    }
                    (writer, Some(dec))
                }
            };
            // The plaintext, before anything is kept: the layer unpacks to what the
            // configuration (whose digest the tree commits) says, and an encrypted layer's
            // plaintext hashes to the digest its key names.
            let actual = diff.finish().map_err(oci)?;
            let plain = match decryptor {
                Some(dec) => Some(
                    dec.finish_with_diff_id(&actual)
                        .map_err(|e| refused(w, e))?,
                ),
                None => None,
            };
            if actual != diff_ids[i] {
                return Err(ContainerError::Refused {
                    workload: w.name.clone(),
                    reason: format!(
                        "{what} unpacks to {actual}, not the image configuration's diff_id {}",
                        diff_ids[i]
                    ),
                });
            }
            match plain {
                Some(digest) => {
                    writer
                        .commit_decrypted(&digest.to_string())
                        .await
                        .map_err(engine_err)?;
                    descriptors[i].digest = digest;
                }
                None => writer.commit().await.map_err(engine_err)?,
            }
            tracing::info!(workload = %w.name, layer = i + 1, of, digest = %d.digest, size = d.size, "layer pulled and verified");
        }
        self.board.stage(&w.name, Stage::Unpacking);
        let layers: Vec<Layer> = descriptors
            .iter()
            .zip(diff_ids)
            .map(|(d, diff)| Layer {
                media_type: d.media_type.clone(),
                digest: d.digest.to_string(),
                size: d.size,
                diff_id: diff.to_string(),
            })
            .collect();
        let name = w.name.clone();
        pull.unpack_scoped(&layers, keys.scope.as_deref(), |step| {
            tracing::info!(workload = %name, layer = step.layer, of = step.of, "layer unpacked and checked against its diff_id");
        })
        .await
        .map_err(engine_err)
    }

    /// Put (`Some`) or take (`None`) the container launched for workload `name`'s load;
    /// what was there before.
    pub(crate) fn prelaunched(
        &self,
        name: &str,
        put: Option<(Vec<u8>, crate::backends::Started)>,
    ) -> Option<(Vec<u8>, crate::backends::Started)> {
        let mut map = self.prelaunched.lock().unwrap_or_else(|p| p.into_inner());
        match put {
            Some(v) => map.insert(name.to_string(), v),
            None => map.remove(name),
        }
    }

    /// Workload `name`'s log file.
    pub(crate) fn log_path(&self, name: &str) -> std::path::PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The latest preparation of workload `name`.
    pub(crate) fn progress(&self, name: &str) -> Option<Progress> {
        self.board.get(name)
    }
}

/// An image error of workload `w`.
fn refused(w: &Workload, reason: impl std::fmt::Display) -> ContainerError {
    ContainerError::Refused {
        workload: w.name.clone(),
        reason: reason.to_string(),
    }
}

fn image_err(w: &Workload) -> impl Fn(enclave_oci::OciError) -> ContainerError + Copy + '_ {
    move |source| ContainerError::Image {
        workload: w.name.clone(),
        source: Box::new(source),
    }
}

/// An engine error of workload `w`.
fn engine_err(
    w: &Workload,
) -> impl Fn(enclave_containers::EngineError) -> ContainerError + Copy + '_ {
    move |source| ContainerError::Engine {
        workload: w.name.clone(),
        source,
    }
}

/// Run `f` on `rt` and wait, from any thread: a thread already inside a tokio runtime hands
/// the wait to a scoped thread of its own (a runtime cannot block inside another).
fn block<T: Send>(
    rt: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send,
) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| {
        s.spawn(|| rt.block_on(f))
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The documents of every container workload in `enclave.toml`, prepared, folded into the
/// configuration with the engine's versions: what the file's tree commits.
pub(crate) fn resolve_file(
    containers: &Containers,
    mut config: LoadedConfig,
) -> Result<LoadedConfig, ContainerError> {
    config = config.with_engine(containers.versions.clone());
    let file: Vec<Workload> = config
        .config
        .workloads
        .iter()
        .filter(|w| w.run.image().is_some())
        .cloned()
        .collect();
    let mut images = BTreeMap::new();
    for w in &file {
        images.insert(w.name.clone(), containers.block(containers.prepare(w))?);
    }
    for (name, leaves) in images {
        config = config
            .with_image(&name, leaves)
            .map_err(|e| ContainerError::Setup(e.to_string()))?;
    }
    Ok(config)
}
