//! The OCI runtime spec a container workload is started with, computed from its image
//! configuration and its settings, and nothing else.
//!
//! The spec is a leaf of the tree (`workload/<name>/runtime-spec`) and its hash is on the
//! workload's certificate (OID 3.8), so it must come out byte for byte the same wherever it is
//! computed: by the runtime before it starts the container, and by `enclave-os measure` offline.
//! Hence: no host paths (runc makes a fresh network namespace; the runtime joins it to the
//! bridge afterwards), no addresses, no clocks; the JSON is RFC 8785 (JCS).
//!
//! What it always says, whatever the settings: every namespace of its own (pid, ipc, uts,
//! mount, network, cgroup) and none of the host's; no capabilities unless the settings keep
//! some from a short list; `noNewPrivileges`; a seccomp filter refusing the system calls a
//! container has no business making; the kernel's sensitive files masked or read-only; a
//! read-only root unless asked; memory, CPU and process limits.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;

use crate::container::ContainerSettings;
use crate::file::WorkloadLimits;

/// Memory when the workload sets none, bytes.
pub const DEFAULT_MEMORY_BYTES: u64 = 512 << 20;
/// Processes and threads when the workload sets none.
pub const DEFAULT_PIDS: u32 = 512;
/// The CFS period the CPU quota is a share of, microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// System calls refused (EPERM) inside every container: kernel modules and images, other
/// processes' memory, keyrings, namespaces and mounts, clocks, BPF and perf, swap, reboot.
/// io_uring too: its rings run system calls the filter never sees. `unshare` among them: a new
/// user namespace would hand the process every capability inside
/// it, and with them the kernel's namespaced attack surface.
const REFUSED_SYSCALLS: [&str; 40] = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "unshare",
];

/// `clone` flags that make a namespace: `clone` with any of them is refused, as `unshare` is
/// (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
const NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// errno for `clone3`: ENOSYS, so that C libraries fall back to `clone`, whose flags a filter
/// can see (`clone3` passes them in memory, out of a filter's reach).
const ENOSYS: u32 = 38;

/// Paths masked inside every container (runc's defaults).
const MASKED: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Paths read-only inside every container (runc's defaults).
const READ_ONLY: [&str; 6] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/sys/fs/cgroup",
];

/// Why a runtime spec could not be computed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// The image configuration is not what an OCI image configuration is.
    #[error("workload '{workload}': its image configuration: {reason}")]
    ImageConfig {
        /// The workload.
        workload: String,
        /// Why.
        reason: String,
    },
    /// The image and the settings together leave nothing to run, or something unusable.
    #[error("workload '{workload}': {reason}")]
    Unusable {
        /// The workload.
        workload: String,
        /// Why.
        reason: String,
    },
}

/// What the spec takes from the image configuration (`config` in the OCI image spec).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExecDefaults {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfigDoc {
    #[serde(default)]
    config: Option<ExecDefaults>,
}

/// A container workload, as the spec needs it.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    /// The workload's name (its hostname inside, and its cgroup's).
    pub name: &'a str,
    /// The containerd namespace, the parent of its cgroup.
    pub namespace: &'a str,
    /// Environment set by the workload, over the image's.
    pub env: &'a BTreeMap<String, String>,
    /// Arguments: when given, they replace the image's `Cmd` (after its `Entrypoint`).
    pub args: &'a [String],
    /// Its limits.
    pub limits: &'a WorkloadLimits,
    /// Its container settings.
    pub settings: &'a ContainerSettings,
}

/// The spec for `input` run from the image configuration `image_config` (its exact bytes), as
/// JCS bytes.
pub fn runtime_spec(image_config: &[u8], input: &SpecInput<'_>) -> Result<Vec<u8>, SpecError> {
    let name = input.name;
    let unusable = |reason: String| SpecError::Unusable {
        workload: name.to_string(),
        reason,
    };
    let doc: ImageConfigDoc =
        serde_json::from_slice(image_config).map_err(|e| SpecError::ImageConfig {
            workload: name.to_string(),
            reason: e.to_string(),
        })?;
    let image = doc.config.unwrap_or_default();
    let mut args: Vec<String> = image.entrypoint.unwrap_or_default();
    if input.args.is_empty() {
        args.extend(image.cmd.unwrap_or_default());
    } else {
        args.extend(input.args.iter().cloned());
    }
    if args.is_empty() {
        return Err(unusable(
            "nothing to run: the image has neither Entrypoint nor Cmd, and the workload gives no args".into(),
        ));
    }
    let (uid, gid) = user(image.user.as_deref()).map_err(unusable)?;
    let cwd = match image.working_dir.as_deref() {
        None | Some("") => "/".to_string(),
        Some(d) if d.starts_with('/') => d.to_string(),
        Some(d) => {
            return Err(unusable(format!(
                "the image's WorkingDir '{d}' is not absolute"
            )));
        }
    };
    let env = environment(image.env.unwrap_or_default(), input.env);
    let caps: Vec<&str> = {
        let mut c: Vec<&str> = input
            .settings
            .capabilities
            .iter()
            .map(String::as_str)
            .collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let memory = input.limits.memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES);
    let pids = input.limits.pids.unwrap_or(DEFAULT_PIDS);
    let mut resources = json!({
        // Swap equal to the limit: no swap beyond it, so the limit is the limit.
        "memory": { "limit": memory, "swap": memory },
        "pids": { "limit": pids },
        "devices": [ { "allow": false, "access": "rwm" } ],
    });
    if let Some(milli) = input.limits.cpu_millis {
        resources["cpu"] = json!({
            "quota": u64::from(milli) * CPU_PERIOD_US / 1000,
            "period": CPU_PERIOD_US,
        });
    }
    let tmpfs = |dest: &str, opts: &[&str]| json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": opts });
    let mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc" }),
        tmpfs(
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }),
        tmpfs(
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"] }),
        // Scratch space that works with a read-only root, in memory, never on a disk.
        tmpfs("/tmp", &["nosuid", "nodev", "mode=1777", "size=65536k"]),
    ];
    let namespaces: Vec<Value> = ["pid", "ipc", "uts", "mount", "network", "cgroup"]
        .iter()
        .map(|t| json!({ "type": t }))
        .collect();
    let mut syscalls = vec![
        json!({ "names": REFUSED_SYSCALLS.as_slice(), "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }),
        json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }),
    ];
    syscalls.extend(NAMESPACE_FLAGS.iter().map(|flag| {
        json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [ { "index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ" } ],
        })
    }));
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                // Ambient too: a process not running as uid 0 keeps them across exec.
                "ambient": caps, "inheritable": caps,
            },
            "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096 } ],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": !input.settings.writable_rootfs },
        "hostname": name,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("/{}/{}", input.namespace, name),
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": MASKED.as_slice(),
            "readonlyPaths": READ_ONLY.as_slice(),
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": syscalls,
            },
        },
    });
    crate::canonical::encode(&spec).map_err(|e| unusable(format!("its runtime spec: {e}")))
}

/// The image's environment with the workload's on top: the image's order, a variable the
/// workload sets replaced where it stands, the workload's new ones after, by name.
fn environment(image: Vec<String>, over: &BTreeMap<String, String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<String> = image
        .into_iter()
        .map(|kv| {
            let key = kv
                .split_once('=')
                .map_or(kv.as_str(), |(k, _)| k)
                .to_string();
            let line = match over.get(&key) {
                Some(v) => format!("{key}={v}"),
                None => kv,
            };
            seen.insert(key);
            line
        })
        .collect();
    out.extend(
        over.iter()
            .filter(|(k, _)| !seen.contains(*k))
            .map(|(k, v)| format!("{k}={v}")),
    );
    out
}

/// The image's `User` as numbers. Names would need the image's `/etc/passwd`, which the spec
/// does not read (it must be computable from the configuration alone).
fn user(u: Option<&str>) -> Result<(u32, u32), String> {
    let Some(u) = u.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let num = |s: &str| s.parse::<u32>().ok();
    match u.split_once(':') {
        None => num(u).map(|uid| (uid, uid)),
        Some((a, b)) => num(a).zip(num(b)),
    }
    .ok_or_else(|| {
        format!(
            "the image's User '{u}' is not numeric (uid or uid:gid): names would need the image's /etc/passwd, which the runtime spec does not read"
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings() -> ContainerSettings {
        toml::from_str("port = 8080").unwrap()
    }

    fn input<'a>(
        env: &'a BTreeMap<String, String>,
        args: &'a [String],
        limits: &'a WorkloadLimits,
        settings: &'a ContainerSettings,
    ) -> SpecInput<'a> {
        SpecInput {
            name: "web",
            namespace: "enclave-os",
            env,
            args,
            limits,
            settings,
        }
    }

    const IMAGE: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","A=1"],"Entrypoint":["/bin/busybox"],"Cmd":["httpd","-f"],"WorkingDir":"/srv","User":"1000:1000"},"rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn the_spec_is_deterministic_and_says_how_it_runs() {
        let (env, limits, s) = (
            BTreeMap::from([("A".to_string(), "2".to_string()), ("B".into(), "3".into())]),
            WorkloadLimits::default(),
            settings(),
        );
        let a = runtime_spec(IMAGE, &input(&env, &[], &limits, &s)).unwrap();
        let b = runtime_spec(IMAGE, &input(&env, &[], &limits, &s)).unwrap();
        assert_eq!(a, b);
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["process"]["args"], json!(["/bin/busybox", "httpd", "-f"]));
        assert_eq!(v["process"]["env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"], json!({"uid": 1000, "gid": 1000}));
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["process"]["capabilities"]["bounding"], json!([]));
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["cgroupsPath"], "/enclave-os/web");
        assert_eq!(
            v["linux"]["resources"]["memory"]["limit"],
            DEFAULT_MEMORY_BYTES
        );
        // Every namespace its own, none with a path into the host's.
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns.len(), 6);
        assert!(ns.iter().all(|n| n.get("path").is_none()));
        // JCS: re-encoding the parsed value gives the same bytes.
        assert_eq!(crate::canonical::encode(&v).unwrap(), a);
    }

    #[test]
    fn settings_change_the_spec() {
        let env = BTreeMap::new();
        let limits = WorkloadLimits {
            memory_bytes: Some(32 << 20),
            cpu_millis: Some(500),
            pids: Some(64),
            ..WorkloadLimits::default()
        };
        let mut s = settings();
        s.writable_rootfs = true;
        s.capabilities = vec!["CAP_NET_BIND_SERVICE".into()];
        let args = vec!["sh".to_string()];
        let v: Value =
            serde_json::from_slice(&runtime_spec(IMAGE, &input(&env, &args, &limits, &s)).unwrap())
                .unwrap();
        assert_eq!(v["process"]["args"], json!(["/bin/busybox", "sh"]));
        assert_eq!(v["root"]["readonly"], false);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 64);
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            json!(["CAP_NET_BIND_SERVICE"])
        );
    }

    #[test]
    fn unusable_images_are_refused_with_the_reason() {
        let (env, limits, s) = (BTreeMap::new(), WorkloadLimits::default(), settings());
        let e = runtime_spec(br#"{"config":{}}"#, &input(&env, &[], &limits, &s)).unwrap_err();
        assert!(e.to_string().contains("nothing to run"), "{e}");
        let e = runtime_spec(
            br#"{"config":{"Cmd":["x"],"User":"nginx"}}"#,
            &input(&env, &[], &limits, &s),
        )
        .unwrap_err();
        assert!(e.to_string().contains("'nginx' is not numeric"), "{e}");
        let e = runtime_spec(b"not json", &input(&env, &[], &limits, &s)).unwrap_err();
        assert!(matches!(e, SpecError::ImageConfig { .. }), "{e}");
    }
}
