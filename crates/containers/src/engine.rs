//! containerd 1.6 over its gRPC API: content, leases, unpacking, and the container lifecycle.
//!
//! Every call carries the engine's namespace header. Writes of one pull carry a lease header, so
//! that containerd's garbage collector cannot take content or snapshots before the image is
//! complete; [`Pull::finish`] then moves everything the pull touched to a permanent lease per
//! image (`enclave-os/image/<manifest digest>`), which [`Engine::forget_image`] deletes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, ListSnapshotsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, ApplyRequest, Container, CreateContainerRequest,
    CreateRequest as CreateLeaseRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest, GetContainerRequest, InfoRequest,
    KillRequest, ListContainersRequest, ListResourcesRequest, ReadContentRequest, Resource,
    StartRequest, WaitRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use containerd_client::types::{Descriptor, Mount};
use containerd_client::{Client, tonic};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request};

use crate::error::EngineError;

/// The label on content a decrypting pull wrote (see [`Pull::has_content`]).
const DECRYPTED_LABEL: &str = "enclave-os/decrypted";
/// The snapshotter every snapshot of ours lives in.
const SNAPSHOTTER: &str = "overlayfs";
/// The lease resource type of those snapshots (containerd's `snapshots/<snapshotter>`).
const SNAPSHOT_RESOURCE: &str = "snapshots/overlayfs";
/// Prefix of the keys of snapshots being unpacked: `sweep` removes stale ones by it.
const UNPACK_PREFIX: &str = "enclave-os-unpack-";
/// How long a pull lease lives if the runtime dies mid-pull; GC then reclaims the partial pull.
const PULL_LEASE_SECS: i64 = 3600;
/// Chunk size of content writes: well under containerd's 16 MiB message limit.
const WRITE_CHUNK: usize = 1 << 20;
/// The runc shim v2: it writes `file://` stdio itself, no FIFO to pump.
const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;
/// Where the runc shim v2 of containerd 1.6 puts its socket, whatever containerd's state dir.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";
/// How long `remove` waits for the shim to exit after `Tasks.Delete`.
const SHIM_EXIT_BOUND: Duration = Duration::from_secs(5);
/// How long `remove` waits for the task to go after SIGKILL before giving up.
const KILL_BOUND: Duration = Duration::from_secs(10);

/// A connection to containerd in one namespace.
#[derive(Clone)]
pub struct Engine {
    client: std::sync::Arc<Client>,
    namespace: MetadataValue<tonic::metadata::Ascii>,
    namespace_name: String,
    socket: PathBuf,
    runc: PathBuf,
}

/// The versions of the container engine, for the status page and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersions {
    /// containerd's version, e.g. `1.6.20~ds1`.
    pub containerd: String,
    /// The first line of `runc --version`.
    pub runc: String,
}

/// One layer of an image, as the manifest and the image config describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob's media type (e.g. `application/vnd.oci.image.layer.v1.tar+gzip`).
    pub media_type: String,
    /// The blob's digest, as in the manifest.
    pub digest: String,
    /// The blob's size, as in the manifest.
    pub size: u64,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: String,
}

/// Progress of an unpack: `layer` of `of` layers are done (`layer` counts from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackProgress {
    /// Layers done so far.
    pub layer: usize,
    /// Layers in all.
    pub of: usize,
}

/// A created task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The container id.
    pub id: String,
    /// The pid of the container's init process, in the host's pid namespace.
    pub pid: u32,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code (128 + signal when killed by a signal, as runc reports it).
    pub code: u32,
    /// When it exited, as containerd saw it.
    pub exited_at: Option<SystemTime>,
    /// Whether the kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
}

impl Engine {
    /// Connect to containerd's socket; every call will carry `namespace`.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Engine, EngineError> {
        if namespace.is_empty()
            || namespace.len() > 76
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(EngineError::Invalid {
                what: "namespace",
                value: namespace.to_owned(),
                reason: "containerd namespaces are 1-76 characters of [A-Za-z0-9._-]".into(),
            });
        }
        let header = ascii_header("namespace", namespace)?;
        let client = Client::from_path(socket)
            .await
            .map_err(|e| EngineError::Connect {
                socket: socket.to_owned(),
                reason: error_chain(&e),
            })?;
        Ok(Engine {
            client: std::sync::Arc::new(client),
            namespace: header,
            namespace_name: namespace.to_owned(),
            socket: socket.to_owned(),
            runc: PathBuf::from("runc"),
        })
    }

    /// Use this runc binary for [`Engine::versions`] (the shim finds its own on `PATH`).
    pub fn with_runc(mut self, runc: impl Into<PathBuf>) -> Engine {
        self.runc = runc.into();
        self
    }

    /// The namespace every call carries.
    pub fn namespace(&self) -> &str {
        &self.namespace_name
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        request
    }

    fn leased<T>(&self, message: T, lease: &MetadataValue<tonic::metadata::Ascii>) -> Request<T> {
        let mut request = self.request(message);
        request
            .metadata_mut()
            .insert("containerd-lease", lease.clone());
        request
    }

    /// containerd's version (Version service) and runc's (`runc --version`).
    pub async fn versions(&self) -> Result<EngineVersions, EngineError> {
        let containerd = self
            .client
            .version()
            .version(self.request(()))
            .await
            .map_err(|s| EngineError::rpc("Version.Version", "", s))?
            .into_inner()
            .version;
        let output = tokio::process::Command::new(&self.runc)
            .arg("--version")
            .output()
            .await
            .map_err(|source| EngineError::Io {
                what: "running",
                path: self.runc.clone(),
                source,
            })?;
        let runc = String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !output.status.success() || runc.is_empty() {
            return Err(EngineError::Io {
                what: "running --version of",
                path: self.runc.clone(),
                source: std::io::Error::other(format!(
                    "{}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
            });
        }
        Ok(EngineVersions { containerd, runc })
    }

    /// Where containerd keeps what this engine writes in plaintext: its content store's and
    /// the overlayfs snapshotter's directories (their `root` exports), with each one's plugin
    /// id. Encrypted images decrypt into these, so the runtime checks what they sit on.
    pub async fn storage_roots(&self) -> Result<Vec<(String, PathBuf)>, EngineError> {
        use containerd_client::services::v1::PluginsRequest;
        let wanted = [
            ("io.containerd.content.v1", "content"),
            ("io.containerd.snapshotter.v1", SNAPSHOTTER),
        ];
        let plugins = self
            .client
            .introspection()
            .plugins(self.request(PluginsRequest {
                filters: Vec::new(),
            }))
            .await
            .map_err(|s| EngineError::rpc("Introspection.Plugins", "", s))?
            .into_inner()
            .plugins;
        let mut roots = Vec::new();
        for (kind, id) in wanted {
            let root = plugins
                .iter()
                .find(|p| p.r#type == kind && p.id == id)
                .and_then(|p| p.exports.get("root"))
                .ok_or_else(|| EngineError::Invalid {
                    what: "containerd plugin",
                    value: format!("{kind}.{id}"),
                    reason: "is not loaded, or does not say where its root is".into(),
                })?;
            roots.push((format!("{kind}.{id}"), PathBuf::from(root)));
        }
        Ok(roots)
    }

    // ---- content ---------------------------------------------------------------------------

    /// Whether the content store holds `digest` (committed, in this namespace).
    pub async fn has_content(&self, digest: &str) -> Result<bool, EngineError> {
        parse_sha256("digest", digest)?;
        Ok(self.content_size(digest).await?.is_some())
    }

    async fn content_size(&self, digest: &str) -> Result<Option<u64>, EngineError> {
        Ok(self.content_info(digest).await?.map(|(size, _)| size))
    }

    /// A committed blob's size and labels, if the store holds it.
    async fn content_info(
        &self,
        digest: &str,
    ) -> Result<Option<(u64, HashMap<String, String>)>, EngineError> {
        let reply = self
            .client
            .content()
            .info(self.request(InfoRequest {
                digest: digest.to_owned(),
            }))
            .await;
        match reply {
            Ok(info) => Ok(Some(
                info.into_inner()
                    .info
                    .map(|i| (u64::try_from(i.size).unwrap_or(0), i.labels))
                    .unwrap_or_default(),
            )),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(EngineError::rpc("Content.Info", digest, s)),
        }
    }

    /// Read a blob of at most `max` bytes, and check that it hashes to `digest`.
    pub async fn read_content(&self, digest: &str, max: u64) -> Result<Vec<u8>, EngineError> {
        let expected = parse_sha256("digest", digest)?;
        let size = self
            .content_size(digest)
            .await?
            .ok_or_else(|| EngineError::Rpc {
                call: "Content.Info",
                subject: digest.to_owned(),
                code: Code::NotFound,
                message: "not in the content store".into(),
            })?;
        if size > max {
            return Err(EngineError::TooLarge {
                digest: digest.to_owned(),
                size,
                max,
            });
        }
        let mut stream = self
            .client
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| EngineError::rpc("Content.Read", digest, s))?
            .into_inner();
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| EngineError::rpc("Content.Read", digest, s))?
        {
            if (data.len() + chunk.data.len()) as u64 > max {
                return Err(EngineError::TooLarge {
                    digest: digest.to_owned(),
                    size: (data.len() + chunk.data.len()) as u64,
                    max,
                });
            }
            data.extend_from_slice(&chunk.data);
        }
        let actual = ring::digest::digest(&ring::digest::SHA256, &data);
        if actual.as_ref() != expected {
            return Err(EngineError::DigestMismatch {
                expected: digest.to_owned(),
                reason: format!(
                    "the content store returned {} bytes hashing to sha256:{}",
                    data.len(),
                    hex::encode(actual.as_ref())
                ),
            });
        }
        Ok(data)
    }

    // ---- leases ----------------------------------------------------------------------------

    /// Start pulling the image whose manifest is `manifest_digest`: a lease that expires on its
    /// own (an hour) if the runtime dies before [`Pull::finish`] or [`Pull::abandon`].
    pub async fn begin_pull(&self, manifest_digest: &str) -> Result<Pull, EngineError> {
        let hexdigest = hex::encode(parse_sha256("manifest digest", manifest_digest)?);
        let nonce = unique_suffix();
        let id = format!("enclave-os/pull/{}-{nonce}", &hexdigest[..16]);
        let expire = time::OffsetDateTime::now_utc() + time::Duration::seconds(PULL_LEASE_SECS);
        let expire = expire
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| EngineError::Invalid {
                what: "lease expiry",
                value: expire.to_string(),
                reason: e.to_string(),
            })?;
        let labels = HashMap::from([("containerd.io/gc.expire".to_owned(), expire)]);
        self.client
            .leases()
            .create(self.request(CreateLeaseRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| EngineError::rpc("Leases.Create", &id, s))?;
        Ok(Pull {
            engine: self.clone(),
            header: ascii_header("lease id", &id)?,
            lease: id,
            manifest_digest: manifest_digest.to_owned(),
        })
    }

    fn image_lease(manifest_digest: &str) -> Result<String, EngineError> {
        parse_sha256("manifest digest", manifest_digest)?;
        Ok(format!("enclave-os/image/{manifest_digest}"))
    }

    /// Whether the image `manifest_digest` was pulled to completion and not forgotten.
    pub async fn has_image(&self, manifest_digest: &str) -> Result<bool, EngineError> {
        let id = Self::image_lease(manifest_digest)?;
        let reply = self
            .client
            .leases()
            .list_resources(self.request(ListResourcesRequest { id: id.clone() }))
            .await;
        match reply {
            Ok(r) => Ok(!r.into_inner().resources.is_empty()),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(EngineError::rpc("Leases.ListResources", &id, s)),
        }
    }

    /// Drop the image's lease: its content and snapshots go with containerd's next garbage
    /// collection (run now), unless another image or a container still uses them.
    pub async fn forget_image(&self, manifest_digest: &str) -> Result<(), EngineError> {
        let id = Self::image_lease(manifest_digest)?;
        self.delete_lease(&id).await
    }

    async fn delete_lease(&self, id: &str) -> Result<(), EngineError> {
        match self
            .client
            .leases()
            .delete(self.request(DeleteLeaseRequest {
                id: id.to_owned(),
                sync: true,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(EngineError::rpc("Leases.Delete", id, s)),
        }
    }

    /// Remove the snapshots an interrupted unpack left prepared (by their key prefix). Returns
    /// how many went.
    pub async fn sweep(&self) -> Result<usize, EngineError> {
        let stale: Vec<String> = self
            .snapshots()
            .await?
            .into_iter()
            .filter(|name| name.starts_with(UNPACK_PREFIX))
            .collect();
        for key in &stale {
            self.remove_snapshot(key).await?;
        }
        Ok(stale.len())
    }

    async fn remove_snapshot(&self, key: &str) -> Result<(), EngineError> {
        match self
            .client
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(EngineError::rpc("Snapshots.Remove", key, s)),
        }
    }

    /// The ids of every container in the namespace: at start, the runtime removes those an
    /// earlier run left (it re-creates each workload's from what its tree commits).
    pub async fn containers(&self) -> Result<Vec<String>, EngineError> {
        let list = self
            .client
            .containers()
            .list(self.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| EngineError::rpc("Containers.List", self.namespace(), s))?;
        Ok(list
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// The keys and names of every snapshot in the namespace (for diagnostics and tests).
    pub async fn snapshots(&self) -> Result<Vec<String>, EngineError> {
        let mut stream = self
            .client
            .snapshots()
            .list(self.request(ListSnapshotsRequest {
                snapshotter: SNAPSHOTTER.into(),
                filters: Vec::new(),
            }))
            .await
            .map_err(|s| EngineError::rpc("Snapshots.List", SNAPSHOTTER, s))?
            .into_inner();
        let mut names = Vec::new();
        while let Some(page) = stream
            .message()
            .await
            .map_err(|s| EngineError::rpc("Snapshots.List", SNAPSHOTTER, s))?
        {
            names.extend(page.info.into_iter().map(|i| i.name));
        }
        Ok(names)
    }

    /// Whether a committed snapshot named `chain_id` exists (an unpacked layer stack).
    pub async fn has_snapshot(&self, chain_id: &str) -> Result<bool, EngineError> {
        self.snapshot_committed(chain_id).await
    }

    async fn snapshot_committed(&self, key: &str) -> Result<bool, EngineError> {
        match self
            .client
            .snapshots()
            .stat(self.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_owned(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().info.is_some_and(|i| {
                i.kind == containerd_client::services::v1::snapshots::Kind::Committed as i32
            })),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(EngineError::rpc("Snapshots.Stat", key, s)),
        }
    }

    // ---- containers ------------------------------------------------------------------------

    /// Create container `id` from a runtime spec (OCI JSON) on the image snapshot
    /// `parent_chain_id`, with stdout and stderr appended to `log`, and its task (created, not
    /// started). On failure nothing is left behind.
    ///
    /// The snapshot is always a writable one, also for a read-only root: runc creates the
    /// spec's mount points (`/proc`, `/dev`, `/tmp`...) in the rootfs before it remounts it
    /// read-only (`root.readonly`), and on a view snapshot (a read-only overlay) that mkdir
    /// fails for any image that lacks them.
    pub async fn create(
        &self,
        id: &str,
        spec_json: &[u8],
        parent_chain_id: &str,
        log: &Path,
    ) -> Result<Task, EngineError> {
        self.create_with(id, spec_json, parent_chain_id, &LogSink::File(log))
            .await
    }

    /// [`Engine::create`], with stdout and stderr going to `sink`.
    pub async fn create_with(
        &self,
        id: &str,
        spec_json: &[u8],
        parent_chain_id: &str,
        sink: &LogSink<'_>,
    ) -> Result<Task, EngineError> {
        check_id(id)?;
        parse_sha256("parent chain id", parent_chain_id)?;
        let spec: serde_json::Value =
            serde_json::from_slice(spec_json).map_err(|e| EngineError::Spec {
                id: id.to_owned(),
                reason: format!("not JSON: {e}"),
            })?;
        if !spec.is_object() {
            return Err(EngineError::Spec {
                id: id.to_owned(),
                reason: "not a JSON object".into(),
            });
        }
        let (log, log_uri) = match sink {
            LogSink::File(log) => (*log, format!("file://{}", log.display())),
            LogSink::Driver {
                program,
                log,
                max_bytes,
            } => {
                if !program.is_absolute() {
                    return Err(EngineError::Invalid {
                        what: "log driver",
                        value: program.display().to_string(),
                        reason: "the shim runs it itself, so its path must be absolute".into(),
                    });
                }
                (
                    *log,
                    format!(
                        "binary://{}?log-driver=&path={}&max={max_bytes}",
                        query_escape(&program.display().to_string()),
                        query_escape(&log.display().to_string()),
                    ),
                )
            }
        };
        if !log.is_absolute() {
            return Err(EngineError::Invalid {
                what: "log path",
                value: log.display().to_string(),
                reason: "the shim (or its log driver) opens it, so it must be absolute".into(),
            });
        }
        if let Some(dir) = log.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| EngineError::Io {
                    what: "creating the log directory",
                    path: dir.to_owned(),
                    source,
                })?;
        }

        // containerd 1.6's overlay snapshotter can lose a snapshot being prepared to a garbage
        // collection that a removal just scheduled (containerd#2210: the task's rootfs mount
        // then fails with "no such file or directory"). Everything the failed attempt made is
        // removed before it returns, so one more attempt starts clean.
        let mut attempt = 1;
        loop {
            match self
                .create_once(id, spec_json, parent_chain_id, &log_uri)
                .await
            {
                Err(EngineError::Rpc {
                    call: "Tasks.Create",
                    message,
                    ..
                }) if attempt == 1
                    && message.contains("failed to mount rootfs component")
                    && message.contains("no such file or directory") =>
                {
                    tracing::warn!(container = %id, reason = %message, "the rootfs went missing while the task was created; creating again");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt of [`Engine::create_with`]: snapshot, container and task, or nothing.
    async fn create_once(
        &self,
        id: &str,
        spec_json: &[u8],
        parent_chain_id: &str,
        log_uri: &str,
    ) -> Result<Task, EngineError> {
        let mounts = self
            .client
            .snapshots()
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.to_owned(),
                parent: parent_chain_id.to_owned(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| EngineError::rpc("Snapshots.Prepare", id, s))?
            .into_inner()
            .mounts;

        let container = Container {
            id: id.to_owned(),
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec_json.to_vec(),
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.to_owned(),
            ..Default::default()
        };
        if let Err(s) = self
            .client
            .containers()
            .create(self.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
        {
            let _ = self.remove_snapshot(id).await;
            return Err(EngineError::rpc("Containers.Create", id, s));
        }

        let created = self
            .client
            .tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.to_owned(),
                rootfs: mounts,
                stdout: log_uri.to_owned(),
                stderr: log_uri.to_owned(),
                ..Default::default()
            }))
            .await;
        match created {
            Ok(r) => Ok(Task {
                id: id.to_owned(),
                pid: r.into_inner().pid,
            }),
            Err(s) => {
                let _ = self.delete_container(id).await;
                let _ = self.remove_snapshot(id).await;
                Err(EngineError::rpc("Tasks.Create", id, s))
            }
        }
    }

    /// Start the created task `id`.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.client
            .tasks()
            .start(self.request(StartRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| EngineError::rpc("Tasks.Start", id, s))?;
        Ok(())
    }

    /// Wait for task `id` to exit (unbounded: wrap it in a timeout). Whether the OOM killer
    /// struck is read from the container's memory cgroup, which lives until the task is
    /// deleted.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus, EngineError> {
        let reply = self
            .client
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| EngineError::rpc("Tasks.Wait", id, s))?
            .into_inner();
        let exited_at = reply.exited_at.and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            let nanos = u32::try_from(t.nanos).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        });
        let oom_killed = match self.cgroups_path(id).await? {
            Some(path) => oom_kills(&path).await? > 0,
            None => false,
        };
        Ok(ExitStatus {
            code: reply.exit_status,
            exited_at,
            oom_killed,
        })
    }

    async fn cgroups_path(&self, id: &str) -> Result<Option<String>, EngineError> {
        let container = self
            .client
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_owned() }))
            .await
            .map_err(|s| EngineError::rpc("Containers.Get", id, s))?
            .into_inner()
            .container;
        let Some(spec) = container.and_then(|c| c.spec) else {
            return Ok(None);
        };
        let spec: serde_json::Value =
            serde_json::from_slice(&spec.value).map_err(|e| EngineError::Spec {
                id: id.to_owned(),
                reason: format!("the stored spec is not JSON: {e}"),
            })?;
        Ok(spec
            .pointer("/linux/cgroupsPath")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned))
    }

    /// Send `signal` to the task's init process.
    pub async fn kill(&self, id: &str, signal: u32) -> Result<(), EngineError> {
        self.client
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
            .map_err(|s| EngineError::rpc("Tasks.Kill", id, s))?;
        Ok(())
    }

    /// Stop and remove container `id`: SIGTERM, up to `grace` to exit, SIGKILL; then delete the
    /// task, the container and its snapshot. Any of those already gone is fine, so this also
    /// cleans up after a crash of the runtime (and is a no-op for an unknown id).
    pub async fn remove(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        check_id(id)?;
        if self.signal_if_running(id, SIGTERM).await?
            && tokio::time::timeout(grace, self.wait_quietly(id))
                .await
                .is_err()
        {
            self.signal_if_running(id, SIGKILL).await?;
            if tokio::time::timeout(KILL_BOUND, self.wait_quietly(id))
                .await
                .is_err()
            {
                return Err(EngineError::Unkillable {
                    id: id.to_owned(),
                    secs: KILL_BOUND.as_secs(),
                });
            }
        }
        match self
            .client
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_owned(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(EngineError::rpc("Tasks.Delete", id, s)),
        }
        self.wait_for_shim_exit(id).await;
        self.delete_container(id).await?;
        self.remove_snapshot(id).await
    }

    /// The runc shim v2 listens on `/run/containerd/s/<sha256(address/namespace/id)>` (also for
    /// a private containerd) and outlives `Tasks.Delete` by a moment. A `Tasks.Create` of the
    /// same id in that moment finds the socket, reuses the dying shim and fails (ENOENT
    /// mounting the rootfs). So wait, bounded, until nothing answers on that socket.
    async fn wait_for_shim_exit(&self, id: &str) {
        let key = Path::new(&self.socket).join(&self.namespace_name).join(id);
        let hash = ring::digest::digest(&ring::digest::SHA256, key.as_os_str().as_encoded_bytes());
        let shim_socket = Path::new(SHIM_SOCKET_DIR).join(hex::encode(hash.as_ref()));
        let deadline = tokio::time::Instant::now() + SHIM_EXIT_BOUND;
        // A socket file nobody listens on (a shim killed outright) counts as gone.
        while tokio::net::UnixStream::connect(&shim_socket).await.is_ok()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signal the task; false when there is no task, or it already exited.
    async fn signal_if_running(&self, id: &str, signal: u32) -> Result<bool, EngineError> {
        match self.kill(id, signal).await {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.code(), Some(Code::NotFound | Code::FailedPrecondition)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn wait_quietly(&self, id: &str) {
        let _ = self
            .client
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await;
    }

    async fn delete_container(&self, id: &str) -> Result<(), EngineError> {
        match self
            .client
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_owned() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(EngineError::rpc("Containers.Delete", id, s)),
        }
    }
}

/// Where a container's stdout and stderr go.
#[derive(Debug, Clone, Copy)]
pub enum LogSink<'a> {
    /// The runc shim appends both to this file itself (an absolute path). Nothing bounds it.
    File(&'a Path),
    /// The shim pipes both to `program` (an absolute path), which containerd starts as
    /// `program log-driver path <log> max <max_bytes>` (in some order: the pairs come from a
    /// URI query) with the pipes on descriptors 3 and 4 and a readiness pipe on 5: a driver
    /// that keeps at most `max_bytes` of `log` (see `enclave-os log-driver`).
    Driver {
        /// The driver.
        program: &'a Path,
        /// The log it writes.
        log: &'a Path,
        /// The most it keeps, in bytes.
        max_bytes: u64,
    },
}

/// `s` as a URI query value: unreserved characters and `/` as they are, the rest %-escaped.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One image pull: everything written or unpacked through it is held by its lease. Dropped
/// without [`Pull::finish`] or [`Pull::abandon`], the lease expires by itself within the hour.
pub struct Pull {
    engine: Engine,
    lease: String,
    header: MetadataValue<tonic::metadata::Ascii>,
    manifest_digest: String,
}

impl Pull {
    /// The pull's lease id.
    pub fn lease_id(&self) -> &str {
        &self.lease
    }

    async fn hold(&self, id: &str, kind: &str) -> Result<(), EngineError> {
        self.engine
            .client
            .leases()
            .add_resource(self.engine.request(AddResourceRequest {
                id: self.lease.clone(),
                resource: Some(Resource {
                    id: id.to_owned(),
                    r#type: kind.to_owned(),
                }),
            }))
            .await
            .map_err(|s| EngineError::rpc("Leases.AddResource", id, s))?;
        Ok(())
    }

    /// Whether the content store already holds `digest`; if so the pull's lease now holds it
    /// too, so the caller can skip downloading it.
    ///
    /// Content a decrypting pull wrote ([`ContentWriter::commit_decrypted`]) is never offered:
    /// its digest may be public (an uncompressed layer's is its diff_id), and an image that
    /// names it must bring the bytes itself, through a stream its digest is checked on.
    pub async fn has_content(&self, digest: &str) -> Result<bool, EngineError> {
        parse_sha256("digest", digest)?;
        match self.engine.content_info(digest).await? {
            Some((_, labels)) if !labels.contains_key(DECRYPTED_LABEL) => {
                self.hold(digest, "content").await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Open an ingest for a blob of `expected_size` bytes hashing to `expected_digest`, under
    /// `reference` (a name stable across retries). A leftover ingest of the same reference
    /// (a crash mid-write) is discarded first, so a retry starts clean.
    pub async fn content_writer(
        &self,
        reference: &str,
        expected_digest: &str,
        expected_size: u64,
    ) -> Result<ContentWriter, EngineError> {
        parse_sha256("expected digest", expected_digest)?;
        self.open_writer(reference, Some(expected_digest), expected_size)
            .await
    }

    /// Open an ingest for a blob of `expected_size` bytes whose digest is known only once it
    /// is written (a layer decrypted as it streams): never taken as already present, and
    /// committed with [`ContentWriter::commit_as`].
    pub async fn content_writer_unnamed(
        &self,
        reference: &str,
        expected_size: u64,
    ) -> Result<ContentWriter, EngineError> {
        self.open_writer(reference, None, expected_size).await
    }

    async fn open_writer(
        &self,
        reference: &str,
        expected: Option<&str>,
        expected_size: u64,
    ) -> Result<ContentWriter, EngineError> {
        let expected_digest = expected.unwrap_or(reference);
        if reference.is_empty() || reference.len() > 512 {
            return Err(EngineError::Invalid {
                what: "ingest reference",
                value: reference.to_owned(),
                reason: "must be 1-512 bytes".into(),
            });
        }
        let total = i64::try_from(expected_size).map_err(|_| EngineError::Invalid {
            what: "expected size",
            value: expected_size.to_string(),
            reason: "larger than containerd accepts".into(),
        })?;
        match self
            .engine
            .client
            .content()
            .abort(self.engine.request(AbortRequest {
                r#ref: reference.to_owned(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(EngineError::rpc("Content.Abort", reference, s)),
        }

        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(2);
        let first = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.to_owned(),
            total,
            expected: expected.unwrap_or_default().to_owned(),
            ..Default::default()
        };
        tx.send(first)
            .await
            .map_err(|_| closed("Content.Write", expected_digest))?;
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let opened = self
            .engine
            .client
            .content()
            .write(self.engine.leased(stream, &self.header))
            .await;
        let mut responses = match opened {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => {
                self.hold(expected_digest, "content").await?;
                return Ok(ContentWriter {
                    state: WriterState::Present,
                    digest: expected_digest.to_owned(),
                    reference: reference.to_owned(),
                    size: expected_size,
                    offset: 0,
                });
            }
            Err(s) => return Err(EngineError::rpc("Content.Write", expected_digest, s)),
        };
        // The answer to the stat. A leftover ingest was aborted above; even if one reappeared,
        // the first write goes at offset 0, which makes containerd truncate it.
        next_response(&mut responses, expected_digest).await?;
        Ok(ContentWriter {
            state: WriterState::Open {
                tx,
                responses: Box::new(responses),
            },
            digest: expected_digest.to_owned(),
            reference: reference.to_owned(),
            size: expected_size,
            offset: 0,
        })
    }

    /// Unpack `layers` (bottom first) into committed snapshots named by their chain ids, and
    /// return the chain id of the top one. Layers already unpacked are skipped. Each applied
    /// layer must hash to its `diff_id`, or the unpack fails and leaves no snapshot of it.
    pub async fn unpack(
        &self,
        layers: &[Layer],
        progress: impl FnMut(UnpackProgress),
    ) -> Result<String, EngineError> {
        self.unpack_scoped(layers, None, progress).await
    }

    /// [`Pull::unpack`], the snapshots named within `scope` ([`scoped_chain_id`]) when it is
    /// `Some`: layers decrypted for one image are unpacked into snapshots no other image
    /// names, so an image that only knows their (public) diff_ids cannot start on them.
    pub async fn unpack_scoped(
        &self,
        layers: &[Layer],
        scope: Option<&str>,
        mut progress: impl FnMut(UnpackProgress),
    ) -> Result<String, EngineError> {
        if layers.is_empty() {
            return Err(EngineError::Invalid {
                what: "layer list",
                value: String::new(),
                reason: "an image has at least one layer".into(),
            });
        }
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let mut parent = String::new();
        for (index, layer) in layers.iter().enumerate() {
            parse_sha256("layer digest", &layer.digest)?;
            let chain = scoped_chain_id(scope, &chain_id(&diff_ids[..=index])?);
            if self.engine.snapshot_committed(&chain).await? {
                self.hold(&chain, SNAPSHOT_RESOURCE).await?;
            } else {
                self.apply_layer(index, layer, &parent, &chain).await?;
            }
            progress(UnpackProgress {
                layer: index + 1,
                of: layers.len(),
            });
            parent = chain;
        }
        Ok(parent)
    }

    async fn apply_layer(
        &self,
        index: usize,
        layer: &Layer,
        parent: &str,
        chain: &str,
    ) -> Result<(), EngineError> {
        let key = format!("{UNPACK_PREFIX}{}-{chain}", unique_suffix());
        let engine = &self.engine;
        let mounts = engine
            .client
            .snapshots()
            .prepare(engine.leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent: parent.to_owned(),
                    labels: HashMap::new(),
                },
                &self.header,
            ))
            .await
            .map_err(|s| EngineError::rpc("Snapshots.Prepare", &key, s))?
            .into_inner()
            .mounts;
        let result = self
            .apply_and_commit(index, layer, mounts, &key, chain)
            .await;
        if result.is_err() {
            // Committed or not, the prepared key must go: a failed unpack leaves nothing.
            let _ = engine.remove_snapshot(&key).await;
        }
        result
    }

    async fn apply_and_commit(
        &self,
        index: usize,
        layer: &Layer,
        mounts: Vec<Mount>,
        key: &str,
        chain: &str,
    ) -> Result<(), EngineError> {
        let engine = &self.engine;
        let size = i64::try_from(layer.size).map_err(|_| EngineError::Invalid {
            what: "layer size",
            value: layer.size.to_string(),
            reason: "larger than containerd accepts".into(),
        })?;
        let applied = engine
            .client
            .diff()
            .apply(engine.leased(
                ApplyRequest {
                    diff: Some(Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                &self.header,
            ))
            .await
            .map_err(|s| EngineError::rpc("Diff.Apply", &layer.digest, s))?
            .into_inner()
            .applied
            .ok_or_else(|| EngineError::Protocol {
                call: "Diff.Apply",
                subject: layer.digest.clone(),
                reason: "no applied descriptor in the answer".into(),
            })?;
        if applied.digest != layer.diff_id {
            return Err(EngineError::DiffIdMismatch {
                layer: index,
                digest: layer.digest.clone(),
                applied: applied.digest,
                diff_id: layer.diff_id.clone(),
            });
        }
        let committed = engine
            .client
            .snapshots()
            .commit(engine.leased(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain.to_owned(),
                    key: key.to_owned(),
                    labels: HashMap::new(),
                },
                &self.header,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Another pull of the same layer won the race: use its snapshot.
            Err(s) if s.code() == Code::AlreadyExists => {
                engine.remove_snapshot(key).await?;
                self.hold(chain, SNAPSHOT_RESOURCE).await
            }
            Err(s) => Err(EngineError::rpc("Snapshots.Commit", chain, s)),
        }
    }

    /// The image is complete: move everything this pull holds to the image's permanent lease
    /// (`enclave-os/image/<manifest digest>`) and drop the pull's.
    pub async fn finish(self) -> Result<(), EngineError> {
        let engine = &self.engine;
        let image = Engine::image_lease(&self.manifest_digest)?;
        match engine
            .client
            .leases()
            .create(engine.request(CreateLeaseRequest {
                id: image.clone(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(EngineError::rpc("Leases.Create", &image, s)),
        }
        let resources = engine
            .client
            .leases()
            .list_resources(engine.request(ListResourcesRequest {
                id: self.lease.clone(),
            }))
            .await
            .map_err(|s| EngineError::rpc("Leases.ListResources", &self.lease, s))?
            .into_inner()
            .resources;
        for resource in resources {
            let subject = resource.id.clone();
            engine
                .client
                .leases()
                .add_resource(engine.request(AddResourceRequest {
                    id: image.clone(),
                    resource: Some(resource),
                }))
                .await
                .map_err(|s| EngineError::rpc("Leases.AddResource", subject, s))?;
        }
        engine.delete_lease(&self.lease).await
    }

    /// Give the pull up: its lease goes, and with it whatever only it held.
    pub async fn abandon(self) -> Result<(), EngineError> {
        self.engine.delete_lease(&self.lease).await
    }
}

enum WriterState {
    Open {
        tx: tokio::sync::mpsc::Sender<WriteContentRequest>,
        responses: Box<tonic::Streaming<WriteContentResponse>>,
    },
    /// The blob was already in the store: writes are discarded, commit is a no-op.
    Present,
}

/// An open ingest of one blob into containerd's content store.
pub struct ContentWriter {
    state: WriterState,
    digest: String,
    reference: String,
    size: u64,
    offset: u64,
}

impl ContentWriter {
    /// Whether the blob was already in the store (then writes are discarded).
    pub fn already_present(&self) -> bool {
        matches!(self.state, WriterState::Present)
    }

    /// The reference the ingest runs under.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Append `data`. More than the expected size is refused here, before containerd sees it.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), EngineError> {
        let WriterState::Open { tx, responses } = &mut self.state else {
            return Ok(());
        };
        if self.offset + data.len() as u64 > self.size {
            return Err(EngineError::DigestMismatch {
                expected: self.digest.clone(),
                reason: format!(
                    "more than the expected {} bytes were written ({} and counting)",
                    self.size,
                    self.offset + data.len() as u64
                ),
            });
        }
        for chunk in data.chunks(WRITE_CHUNK) {
            tx.send(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: self.offset as i64,
                data: chunk.to_vec(),
                ..Default::default()
            })
            .await
            .map_err(|_| closed("Content.Write", &self.digest))?;
            let answer = next_response(responses, &self.digest).await?;
            self.offset += chunk.len() as u64;
            if answer.offset as u64 != self.offset {
                return Err(EngineError::Protocol {
                    call: "Content.Write",
                    subject: self.digest.clone(),
                    reason: format!(
                        "containerd is at offset {} where {} was written",
                        answer.offset, self.offset
                    ),
                });
            }
        }
        Ok(())
    }

    /// Commit the blob of an unnamed ingest, a layer decrypted as it was written, under
    /// `digest` (which the caller computed from what it wrote; containerd checks it), labelled
    /// so that [`Pull::has_content`] never offers it to another image.
    pub async fn commit_decrypted(mut self, digest: &str) -> Result<(), EngineError> {
        parse_sha256("digest", digest)?;
        self.digest = digest.to_owned();
        self.commit_labelled(HashMap::from([(
            DECRYPTED_LABEL.to_owned(),
            "true".to_owned(),
        )]))
        .await
    }

    /// Commit the blob: containerd checks its size and digest, and refuses a mismatch.
    pub async fn commit(self) -> Result<(), EngineError> {
        self.commit_labelled(HashMap::new()).await
    }

    async fn commit_labelled(self, labels: HashMap<String, String>) -> Result<(), EngineError> {
        let WriterState::Open { tx, mut responses } = self.state else {
            return Ok(());
        };
        tx.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: self.reference.clone(),
            offset: self.offset as i64,
            total: self.size as i64,
            expected: self.digest.clone(),
            labels,
            ..Default::default()
        })
        .await
        .map_err(|_| closed("Content.Write", &self.digest))?;
        match responses.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(closed("Content.Write commit", &self.digest)),
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => {
                return Err(EngineError::DigestMismatch {
                    expected: self.digest.clone(),
                    reason: format!(
                        "containerd refused the commit of {} bytes: {:?}: {}",
                        self.offset,
                        s.code(),
                        s.message()
                    ),
                });
            }
        }
        drop(tx);
        // Let the server finish the stream cleanly (bounded: it ends once we closed ours).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = responses.message().await {}
        })
        .await;
        Ok(())
    }
}

async fn next_response(
    responses: &mut tonic::Streaming<WriteContentResponse>,
    digest: &str,
) -> Result<WriteContentResponse, EngineError> {
    match responses.message().await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(closed("Content.Write", digest)),
        Err(s) => Err(EngineError::rpc("Content.Write", digest, s)),
    }
}

fn closed(call: &'static str, subject: &str) -> EngineError {
    EngineError::Protocol {
        call,
        subject: subject.to_owned(),
        reason: "containerd closed the stream".into(),
    }
}

/// The name of the snapshot of layer stack `chain` (a chain id) within `scope`: the chain
/// id itself without a scope, else `sha256("enclave-os/scoped-chain " + scope + " " + chain)`,
/// a digest (as every parent name must be) that no other scope's and no plain chain id is.
pub fn scoped_chain_id(scope: Option<&str>, chain: &str) -> String {
    match scope {
        None => chain.to_owned(),
        Some(s) => {
            let d = ring::digest::digest(
                &ring::digest::SHA256,
                format!("enclave-os/scoped-chain {s} {chain}").as_bytes(),
            );
            format!("sha256:{}", hex::encode(d))
        }
    }
}

/// The OCI chain id of a stack of layers (bottom first): the first layer's diff_id, then
/// `sha256(parent_chain_id + " " + diff_id)` for each next one. See the image-spec's
/// `config.md#layer-chainid`.
pub fn chain_id(diff_ids: &[&str]) -> Result<String, EngineError> {
    let mut chain: Option<String> = None;
    for diff_id in diff_ids {
        parse_sha256("diff_id", diff_id)?;
        chain = Some(match chain {
            None => (*diff_id).to_owned(),
            Some(parent) => {
                let input = format!("{parent} {diff_id}");
                let hash = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
                format!("sha256:{}", hex::encode(hash.as_ref()))
            }
        });
    }
    chain.ok_or_else(|| EngineError::Invalid {
        what: "diff_id list",
        value: String::new(),
        reason: "a chain id needs at least one layer".into(),
    })
}

/// The last lines of a log file, at most `max_bytes` of it, as (lossy) UTF-8. A line cut by the
/// limit is dropped; a missing file is an empty tail.
pub async fn log_tail(path: &Path, max_bytes: u64) -> Result<String, EngineError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |what, source| EngineError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(io("opening the log", e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| io("reading the log", e))?
        .len();
    let start = len.saturating_sub(max_bytes);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| io("seeking in the log", e))?;
    let mut bytes = Vec::new();
    file.take(max_bytes)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| io("reading the log", e))?;
    let mut text = &bytes[..];
    if start > 0
        && let Some(cut) = text.iter().position(|b| *b == b'\n')
    {
        text = &text[cut + 1..];
    }
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// The number of OOM kills in a container's memory cgroup (v1 `memory.oom_control`, or v2
/// `memory.events`), 0 when the cgroup is gone or the path is not a cgroupfs path.
async fn oom_kills(cgroups_path: &str) -> Result<u64, EngineError> {
    // A systemd-style path ("slice:prefix:name") is not ours to resolve.
    if cgroups_path.contains(':') || cgroups_path.split('/').any(|c| c == "..") {
        return Ok(0);
    }
    let relative = cgroups_path.trim_start_matches('/');
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (file, key) = if unified {
        (
            Path::new("/sys/fs/cgroup")
                .join(relative)
                .join("memory.events"),
            "oom_kill",
        )
    } else {
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(relative)
                .join("memory.oom_control"),
            "oom_kill",
        )
    };
    let text = match tokio::fs::read_to_string(&file).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(EngineError::Io {
                what: "reading",
                path: file,
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0))
}

/// `sha256:<64 lowercase hex>` to its 32 bytes; nothing else is a digest here.
pub(crate) fn parse_sha256(what: &'static str, digest: &str) -> Result<[u8; 32], EngineError> {
    let invalid = |reason: &str| EngineError::Invalid {
        what,
        value: digest.to_owned(),
        reason: reason.to_owned(),
    };
    let hex_part = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| invalid("only sha256 digests are accepted (sha256:<hex>)"))?;
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(invalid("the hash must be 64 lowercase hex digits"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|e| invalid(&e.to_string()))?;
    Ok(out)
}

/// Container ids become snapshot keys, cgroup and file names: keep them boring.
fn check_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || id.starts_with('.')
        || id.starts_with(UNPACK_PREFIX)
    {
        return Err(EngineError::Invalid {
            what: "container id",
            value: id.to_owned(),
            reason: format!(
                "1-64 characters of [A-Za-z0-9._-], not starting with '.' or {UNPACK_PREFIX:?}"
            ),
        });
    }
    Ok(())
}

fn ascii_header(
    what: &'static str,
    value: &str,
) -> Result<MetadataValue<tonic::metadata::Ascii>, EngineError> {
    value.parse().map_err(|_| EngineError::Invalid {
        what,
        value: value.to_owned(),
        reason: "not a valid gRPC header value".into(),
    })
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_follows_the_image_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(chain_id(&[&a]).ok(), Some(a.clone()));
        let expected = ring::digest::digest(&ring::digest::SHA256, format!("{a} {b}").as_bytes());
        assert_eq!(
            chain_id(&[&a, &b]).ok(),
            Some(format!("sha256:{}", hex::encode(expected.as_ref())))
        );
        assert!(chain_id(&[]).is_err());
        assert!(chain_id(&["sha512:00"]).is_err());
    }

    #[test]
    fn ids_and_digests_are_checked() {
        assert!(check_id("web-1").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("enclave-os-unpack-x").is_err());
        assert!(parse_sha256("d", &format!("sha256:{}", "A".repeat(64))).is_err());
    }
}
