//! Workloads as the tree and the certificates see them: those of `enclave.toml` and those
//! loaded at run time through the management API.
//!
//! Loading, updating or unloading one workload recomputes the tree, reissues the enclave-wide
//! certificate (its config root and combined workloads hash change) and that workload's own
//! certificate. Other workloads' certificates carry only their own config root, so they do not
//! change. Workloads loaded at run time are kept in the sealed store (`sys/workloads`), as a
//! versioned record, and come back after a restart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use enclave_config::file::{
    ContainerSettings, ImageLeaves, ProcessSettings, ProxySettings, Run, Workload, WorkloadCode,
    WorkloadLimits,
};
use enclave_config::{ConfigTree, LoadedConfig};
use enclave_ratls::binding::BindingFormat;
use enclave_ratls::issue::{LeafSpec, WorkloadIdentity};
use enclave_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ChangeError;
use crate::RuntimeError;

pub(crate) const NAMESPACE: &str = "sys/workloads";
const LIFETIME_SECS: i64 = 12 * 3600;

/// Runtime-loaded workloads by name: the settings and the code.
pub(crate) type Loaded = BTreeMap<String, (Workload, WorkloadCode)>;

/// A workload loaded at run time, as kept in the sealed store. The record has its own schema,
/// tagged with its version, apart from the configuration's types: a change of `enclave.toml`'s
/// schema adds a record version and a conversion, and never makes a kept workload unreadable
/// at the next start.
#[derive(Serialize, Deserialize)]
#[serde(tag = "record")]
enum Record {
    #[serde(rename = "workload/v1")]
    V1(RecordV1),
    #[serde(rename = "workload/v2")]
    V2(Box<RecordV2>),
}

/// Version 2: containers (their settings, image documents and runtime spec) and the CPU and
/// process limits.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordV2 {
    name: String,
    kind: String,
    image: Option<String>,
    hostnames: Vec<String>,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    memory_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
    cpu_millis: Option<u32>,
    pids: Option<u32>,
    /// `[workload.container]` in the configuration's own schema: a change to that schema
    /// needs a record v3 and a conversion.
    container: Option<ContainerSettings>,
    /// `[workload.proxy]`, in the configuration's own schema; absent from records made before
    /// it existed (and when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxySettings>,
    /// `[workload.process]`, likewise. Added to v2 as an optional member, absent for every
    /// other kind: records written before it read as they did, and a v2 record without it is
    /// written byte for byte as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<ProcessSettings>,
    /// The vault key its encrypted code is decrypted with; likewise optional, absent when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decryption_key: Option<String>,
    /// The code (a module's bytes, or an image's manifest), base64.
    code: String,
    /// A container's image configuration, base64.
    image_config: Option<String>,
    /// A container's runtime spec, base64.
    runtime_spec: Option<String>,
}

/// Version 1 of the record: every field the configuration's workload had when it was made.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordV1 {
    name: String,
    kind: String,
    image: Option<String>,
    hostnames: Vec<String>,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    memory_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
    /// The code, base64.
    code: String,
}

/// The record of the first releases, untagged: the configuration's workload as it then was,
/// spelled out here so that the configuration's types may change.
#[derive(Deserialize)]
struct Unversioned {
    workload: UnversionedWorkload,
    /// The code, base64.
    code: String,
}

#[derive(Deserialize)]
struct UnversionedWorkload {
    name: String,
    kind: String,
    image: Option<String>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    limits: UnversionedLimits,
}

#[derive(Deserialize, Default)]
struct UnversionedLimits {
    memory_bytes: Option<u64>,
    request_timeout_ms: Option<u64>,
}

/// The record kept for `w` with `code`.
pub(crate) fn kept(w: &Workload, code: &WorkloadCode) -> Result<Vec<u8>, ChangeError> {
    let image = match code {
        WorkloadCode::Image(i) => Some(i),
        WorkloadCode::Module(_) => None,
    };
    let record = Record::V2(Box::new(RecordV2 {
        name: w.name.clone(),
        kind: w.run.kind().as_str().to_string(),
        image: w.run.image().map(str::to_string),
        hostnames: w.hostnames.clone(),
        env: w.env.clone(),
        args: w.args.clone(),
        memory_bytes: w.limits.memory_bytes,
        request_timeout_ms: w.limits.request_timeout_ms,
        cpu_millis: w.limits.cpu_millis,
        pids: w.limits.pids,
        container: w.run.container().cloned(),
        proxy: w.proxy.clone(),
        process: w.run.process().cloned(),
        decryption_key: w.decryption_key.clone(),
        code: STANDARD.encode(code.code()),
        image_config: image.map(|i| STANDARD.encode(&i.config)),
        runtime_spec: image.map(|i| STANDARD.encode(&i.runtime_spec)),
    }));
    serde_json::to_vec(&record)
        .map_err(|e| ChangeError::Invalid(format!("workload '{}': cannot be kept: {e}", w.name)))
}

/// A kept record, read back: any version this build knows.
fn read_record(key: &str, bytes: &[u8]) -> Result<(Workload, WorkloadCode), String> {
    let decode =
        |what: &str, b64: &str| STANDARD.decode(b64).map_err(|e| format!("its {what}: {e}"));
    // Code came with the record, so no kind names a file. Records before v2 have no
    // container settings, and no container ever ran from them; no process ran from a record
    // without its process settings either (processes were certified, never run, before them):
    // such a record is parked with the reason, for the operator to load again.
    let run = |kind: &str,
               image: Option<String>,
               container: Option<ContainerSettings>,
               process: Option<ProcessSettings>| {
        match (kind, image, container, process) {
        ("wasm", _, _, _) => Ok(Run::Wasm { source: None }),
        ("process", _, _, Some(settings)) => Ok(Run::Process {
            source: None,
            settings,
        }),
        ("process", _, _, None) => Err(
            "a process kept before processes ran has no [workload.process] settings: unload it and load it again with them".to_string(),
        ),
        ("container", Some(image), Some(settings), _) => Ok(Run::Container { image, settings }),
        ("container", _, _, _) => {
            Err("a container record without its image and settings".to_string())
        }
        (other, _, _, _) => Err(format!("kind '{other}' is not known to this build")),
    }
    };
    match serde_json::from_slice::<Record>(bytes) {
        Ok(Record::V2(r)) => {
            let code = decode("code", &r.code)?;
            let code = match (r.image_config, r.runtime_spec) {
                (Some(config), Some(spec)) => WorkloadCode::Image(ImageLeaves {
                    manifest: code,
                    config: decode("image configuration", &config)?,
                    runtime_spec: decode("runtime spec", &spec)?,
                }),
                (None, None) => WorkloadCode::Module(code),
                _ => return Err("a record with half of an image's documents".into()),
            };
            let w = Workload {
                run: run(&r.kind, r.image, r.container, r.process)?,
                name: r.name,
                hostnames: r.hostnames,
                env: r.env,
                args: r.args,
                limits: WorkloadLimits {
                    memory_bytes: r.memory_bytes,
                    request_timeout_ms: r.request_timeout_ms,
                    cpu_millis: r.cpu_millis,
                    pids: r.pids,
                },
                proxy: r.proxy,
                ingress: None,
                decryption_key: r.decryption_key,
            };
            return Ok((w, code));
        }
        Ok(Record::V1(r)) => {
            let code = WorkloadCode::Module(decode("code", &r.code)?);
            let w = Workload {
                run: run(&r.kind, r.image, None, None)?,
                name: r.name,
                hostnames: r.hostnames,
                env: r.env,
                args: r.args,
                limits: WorkloadLimits {
                    memory_bytes: r.memory_bytes,
                    request_timeout_ms: r.request_timeout_ms,
                    ..WorkloadLimits::default()
                },
                proxy: None,
                ingress: None,
                decryption_key: None,
            };
            return Ok((w, code));
        }
        Err(_) => {}
    }
    match serde_json::from_slice::<Unversioned>(bytes) {
        Ok(u) => {
            let w = u.workload;
            let spec = Workload {
                run: run(&w.kind, w.image, None, None)?,
                name: w.name,
                hostnames: w.hostnames,
                env: w.env,
                args: w.args,
                limits: WorkloadLimits {
                    memory_bytes: w.limits.memory_bytes,
                    request_timeout_ms: w.limits.request_timeout_ms,
                    ..WorkloadLimits::default()
                },
                proxy: None,
                ingress: None,
                decryption_key: None,
            };
            Ok((spec, WorkloadCode::Module(decode("code", &u.code)?)))
        }
        Err(e) => Err(format!(
            "record '{key}' is neither a known version nor the unversioned form: {e}"
        )),
    }
}

/// The workloads kept in the store, and those whose record this build cannot read (by name,
/// with why): those are parked, not fatal, so the operator can still unload them.
pub(crate) fn restore(store: &Store) -> Result<(Loaded, BTreeMap<String, String>), RuntimeError> {
    let mut out = Loaded::new();
    let mut unreadable = BTreeMap::new();
    for key in store.keys(NAMESPACE)? {
        let Some(bytes) = store.get(NAMESPACE, &key)? else {
            continue;
        };
        let name = String::from_utf8_lossy(&key).into_owned();
        match read_record(&name, &bytes) {
            // A record is kept under its workload's name; one that says otherwise is not
            // taken at its word.
            Ok((w, code)) if w.name == name => {
                out.insert(name, (w, code));
            }
            Ok((w, _)) => {
                unreadable.insert(
                    name,
                    format!("its record names another workload, '{}'", w.name),
                );
            }
            Err(reason) => {
                unreadable.insert(name, format!("its record cannot be read back: {reason}"));
            }
        }
    }
    Ok((out, unreadable))
}

/// The hash of `tree`'s leaf `name`.
fn leaf_hash(tree: &ConfigTree, name: &str) -> Option<[u8; 32]> {
    tree.leaves()
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value_hash)
}

/// SHA-256 of workload `name`'s code, as `tree` commits it (for a container: its manifest
/// digest).
pub(crate) fn code_digest(tree: &ConfigTree, name: &str) -> Option<[u8; 32]> {
    leaf_hash(tree, &format!("workload/{name}/code"))
}

/// The tree of the file's configuration and the loaded workloads.
pub(crate) fn tree(config: &LoadedConfig, loaded: &Loaded) -> Result<ConfigTree, ChangeError> {
    let extra: Vec<(Workload, WorkloadCode)> = loaded.values().cloned().collect();
    Ok(config.tree_with(env!("CARGO_PKG_VERSION"), &extra)?)
}

/// The module hashes for the enclave-wide certificate: the combined workloads hash (over every
/// workload's name and code hash), the egress bundle and the attestation servers.
fn modules(tree: &ConfigTree) -> Vec<(u64, [u8; 32])> {
    let leaf = |name: &str| leaf_hash(tree, name);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for l in tree
        .leaves()
        .iter()
        .filter(|l| l.name.starts_with("workload/") && l.name.ends_with("/code"))
    {
        ctx.update(l.name.as_bytes());
        ctx.update(&l.value_hash);
    }
    let mut workloads = [0u8; 32];
    workloads.copy_from_slice(ctx.finish().as_ref());
    let mut out = vec![(5, workloads)];
    if let Some(h) = leaf("egress/ca-bundle") {
        out.push((1, h));
    }
    if let Some(h) = leaf("containers/engine") {
        out.push((4, h));
    }
    if let Some(h) = leaf("attestation/servers") {
        out.push((7, h));
    }
    out
}

/// What the enclave-wide certificate certifies.
pub(crate) fn enclave_spec(
    names: Vec<String>,
    tree: &ConfigTree,
    binding: BindingFormat,
    token_thumbprint: Option<[u8; 32]>,
) -> LeafSpec {
    let mut modules = modules(tree);
    // 2.9: the vault's token-signing key, generated in the TEE: who verifies an attestation
    // token checks its key against the certificate of the enclave that signed it.
    if let Some(t) = token_thumbprint {
        modules.push((9, t));
    }
    LeafSpec {
        names,
        lifetime_secs: LIFETIME_SECS,
        config_root: Some(*tree.root()),
        modules,
        workload: None,
        binding,
    }
}

/// What a workload's own certificate certifies: its hostnames, its code hash, its own config
/// root (its leaves only), so that no other workload's change touches it, and the extensions
/// its code declared through the SDK.
pub(crate) fn workload_spec(
    tree: &ConfigTree,
    w: &Workload,
    store: &Store,
    binding: BindingFormat,
    encrypted: Option<crate::backends::Encrypted>,
) -> Result<LeafSpec, ChangeError> {
    let prefix = format!("workload/{}/", w.name);
    let own = ConfigTree::from_hashes(
        tree.leaves()
            .iter()
            .filter(|l| l.name.starts_with(&prefix))
            .map(|l| (l.name.clone(), l.value_hash)),
    )
    .map_err(enclave_config::ConfigError::from)?;
    let code_digest = code_digest(tree, &w.name).unwrap_or_default();
    let declared = crate::sdk::declared(store, &w.name, &code_digest)?;
    Ok(LeafSpec {
        names: w.hostnames.clone(),
        lifetime_secs: LIFETIME_SECS,
        config_root: Some(*own.root()),
        modules: Vec::new(),
        workload: Some(WorkloadIdentity {
            config_root: *own.root(),
            code_digest,
            image: w.run.image().map(str::to_string),
            image_config: leaf_hash(tree, &format!("workload/{}/image-config", w.name)),
            runtime_spec: leaf_hash(tree, &format!("workload/{}/runtime-spec", w.name)),
            decrypted_code: encrypted.as_ref().and_then(|e| e.plaintext),
            key_reference: encrypted.map(|e| e.key_reference),
            key_source: "tee-generated".into(),
            declared,
        }),
        binding,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec() -> Workload {
        Workload {
            name: "app".into(),
            run: Run::Wasm { source: None },
            hostnames: vec!["app.test".into()],
            env: BTreeMap::from([("K".into(), "V".into())]),
            args: vec!["--flag".into()],
            limits: WorkloadLimits {
                memory_bytes: Some(1 << 20),
                request_timeout_ms: Some(250),
                ..WorkloadLimits::default()
            },
            proxy: None,
            ingress: None,
            decryption_key: None,
        }
    }

    #[test]
    fn a_kept_record_reads_back_as_it_was_kept() {
        let code = WorkloadCode::Module(b"\0code".to_vec());
        let bytes = kept(&spec(), &code).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"record\":\"workload/v2\""), "{text}");
        assert_eq!(read_record("app", &bytes).unwrap(), (spec(), code));
    }

    #[test]
    fn a_kept_container_reads_back_with_its_image_documents() {
        let mut w = spec();
        w.run = Run::Container {
            image: "r.test/app@sha256:00".into(),
            settings: serde_json::from_str(r#"{"port": 8080, "restart": "always"}"#).unwrap(),
        };
        w.limits.pids = Some(32);
        let code = WorkloadCode::Image(ImageLeaves {
            manifest: b"{manifest}".to_vec(),
            config: b"{config}".to_vec(),
            runtime_spec: b"{spec}".to_vec(),
        });
        let bytes = kept(&w, &code).unwrap();
        assert_eq!(read_record("app", &bytes).unwrap(), (w, code));
    }

    #[test]
    fn a_kept_process_reads_back_with_its_settings() {
        let mut w = spec();
        w.run = Run::Process {
            source: None,
            settings: serde_json::from_str(r#"{"port": 8080, "user": 1000}"#).unwrap(),
        };
        let code = WorkloadCode::Module(b"\x7fELF".to_vec());
        let bytes = kept(&w, &code).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"process\":{"), "{text}");
        assert_eq!(read_record("app", &bytes).unwrap(), (w, code.clone()));
        // A wasm record has no such member: its bytes are those of the build before it.
        let wasm = String::from_utf8(kept(&spec(), &code).unwrap()).unwrap();
        assert!(!wasm.contains("process"), "{wasm}");
    }

    #[test]
    fn a_process_kept_without_settings_is_parked_with_the_reason() {
        let old = br#"{"record":"workload/v2","name":"app","kind":"process","image":null,"hostnames":[],"env":{},"args":[],"memory_bytes":null,"request_timeout_ms":null,"cpu_millis":null,"pids":null,"container":null,"code":"AGNvZGU=","image_config":null,"runtime_spec":null}"#;
        let e = read_record("app", old).unwrap_err();
        assert!(e.contains("no [workload.process] settings"), "{e}");
    }

    #[test]
    fn the_v1_record_still_reads() {
        let v1 = br#"{"record":"workload/v1","name":"app","kind":"wasm","image":null,"hostnames":["app.test"],"env":{"K":"V"},"args":["--flag"],"memory_bytes":1048576,"request_timeout_ms":250,"code":"AGNvZGU="}"#;
        assert_eq!(
            read_record("app", v1).unwrap(),
            (spec(), WorkloadCode::Module(b"\0code".to_vec()))
        );
    }

    #[test]
    fn the_unversioned_record_of_earlier_releases_still_reads() {
        // Byte for byte what the first releases kept: the configuration's workload, then the
        // code in base64.
        let old = br#"{"workload":{"name":"app","kind":"wasm","source":null,"image":null,"hostnames":["app.test"],"env":{"K":"V"},"args":["--flag"],"limits":{"memory_bytes":1048576,"request_timeout_ms":250}},"code":"AGNvZGU="}"#;
        let (w, code) = read_record("app", old).unwrap();
        assert_eq!(
            (w, code),
            (spec(), WorkloadCode::Module(b"\0code".to_vec()))
        );
    }

    #[test]
    fn an_unknown_record_is_refused_with_its_name() {
        let e = read_record("app", br#"{"record":"workload/v9","x":1}"#).unwrap_err();
        assert!(e.contains("record 'app'"), "{e}");
        let e = read_record(
            "app",
            br#"{"record":"workload/v1","name":"app","kind":"vm","image":null,"hostnames":[],"env":{},"args":[],"memory_bytes":null,"request_timeout_ms":null,"code":""}"#,
        )
        .unwrap_err();
        assert!(e.contains("kind 'vm'"), "{e}");
    }
}
