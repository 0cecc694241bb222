//! A private containerd per test: its own config, root, state and socket under a temporary
//! directory, the CRI plugin off. Nothing here touches a system daemon.
//!
//! Dropping it (also while unwinding from a panic) kills containerd and the runc shims it
//! started (found by the socket path on their command line), and lazily unmounts whatever is
//! still mounted under its directory, so the directory can go.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long containerd gets to answer on its socket.
const START_BOUND: Duration = Duration::from_secs(20);

/// A running private containerd.
pub struct Containerd {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

/// A name unique to this process and call: tests of different binaries run in parallel, so
/// bridge names, subnets, cgroups and namespaces derive from it.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Containerd {
    /// Start containerd and wait (bounded) until its socket accepts connections.
    pub fn start() -> Containerd {
        Self::start_with(false)
    }

    /// A private containerd whose root (content store, snapshots) is a tmpfs of its own, as
    /// a deployment that runs encrypted images has it: decrypted layers stay in memory. The
    /// mount goes when this is dropped.
    pub fn start_on_tmpfs() -> Containerd {
        Self::start_with(true)
    }

    fn start_with(root_on_tmpfs: bool) -> Containerd {
        let dir = std::env::temp_dir().join(unique("ctrd-"));
        // A stale directory of an earlier process with the same pid: start afresh.
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(dir.join("root")) {
            panic!("creating {}: {e}", dir.display());
        }
        if root_on_tmpfs {
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=2g,mode=0700", "tmpfs"])
                .arg(dir.join("root"))
                .status();
            if !mounted.as_ref().is_ok_and(|s| s.success()) {
                panic!("mounting a tmpfs at {}/root: {mounted:?}", dir.display());
            }
        }
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        let config_path = dir.join("config.toml");
        let written =
            std::fs::File::create(&config_path).and_then(|mut f| f.write_all(config.as_bytes()));
        if let Err(e) = written {
            panic!("writing {}: {e}", config_path.display());
        }
        let log = match std::fs::File::create(dir.join("containerd.log")) {
            Ok(f) => f,
            Err(e) => panic!("creating containerd.log: {e}"),
        };
        let log_err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("cloning the log handle: {e}"),
        };
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!("starting containerd (Debian package `containerd`): {e}"),
        };
        let mut me = Containerd {
            child: Some(child),
            dir,
            socket,
        };
        let deadline = Instant::now() + START_BOUND;
        loop {
            if UnixStream::connect(&me.socket).is_ok() {
                return me;
            }
            if let Some(child) = me.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("containerd exited with {status}:\n{}", me.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer on {} within {START_BOUND:?}:\n{}",
                    me.socket.display(),
                    me.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its temporary directory (logs of containers may go here too).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's own log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The pids of the shims this containerd started (their command line names our socket).
    fn shims(&self) -> Vec<u32> {
        let needle = self.socket.display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim") && c.contains(&needle)
                })
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The shims outlive containerd by design; ours go with the test. Killing a shim leaves
        // its container's processes, so kill those first: they are in the shim's children.
        for shim in self.shims() {
            let children = std::fs::read_to_string(format!("/proc/{shim}/task/{shim}/children"))
                .unwrap_or_default();
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            let _ = Command::new("kill")
                .args(["-9", &shim.to_string()])
                .status();
        }
        let prefix = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        // Deepest first.
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in ours {
            let _ = Command::new("umount").args(["-l", mount]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
