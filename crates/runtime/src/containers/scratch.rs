//! Where decrypted layers may go: memory (tmpfs, ramfs) or a dm-crypt device, never a
//! filesystem on a disk the host can read.
//!
//! An encrypted image is decrypted into containerd's content store and unpacked into its
//! snapshots, both under containerd's root. The runtime cannot choose where containerd keeps
//! them, so it asks containerd (its plugins' `root` exports) and checks what each directory
//! sits on before it decrypts anything, refusing the load with the reason otherwise. The check
//! is of the directory the kernel reports, so a symlink or a bind mount onto a disk is seen
//! for what it is.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// What `dir` sits on, when plaintext may go there (`tmpfs`, `ramfs`, `dm-crypt`); else why
/// not.
#[allow(unsafe_code)] // statfs(2): std has no way to ask what filesystem a path is on
pub(crate) fn plaintext_allowed(dir: &Path) -> Result<&'static str, String> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: a path with a NUL byte", dir.display()))?;
    // SAFETY: `c` is a NUL-terminated path and `buf` a statfs the call fills.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the call only writes into `buf`.
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(format!(
            "{}: cannot tell what it is on: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let magic = buf.f_type as i64;
    match magic {
        TMPFS_MAGIC => return Ok("tmpfs"),
        RAMFS_MAGIC => return Ok("ramfs"),
        _ => {}
    }
    let dev = std::fs::metadata(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if is_dm_crypt(major, minor) {
        return Ok("dm-crypt");
    }
    Err(format!(
        "{} is on a filesystem of type {magic:#x} on device {major}:{minor}, neither memory (tmpfs) nor dm-crypt: decrypted layers would reach a disk the host can read (put containerd's root on a tmpfs, or on dm-crypt keyed inside the TEE)",
        dir.display()
    ))
}

/// How deep under a root the walk of [`tree_allowed`] looks (containerd's content store keeps
/// `blobs/sha256/<digest>` and `ingest/<ref>`, the overlay snapshotter `snapshots/<id>/fs`),
/// and how many directories it checks at most before it refuses to go on.
const TREE_DEPTH: usize = 3;
const TREE_DIRECTORIES: usize = 20_000;

/// [`plaintext_allowed`] for `root`, for every mount below it at any depth (from
/// `/proc/self/mountinfo`), and for every directory under it to [`TREE_DEPTH`] levels
/// (symlinks followed, as containerd would): a subdirectory bind-mounted or linked onto a disk
/// is refused as the root would be.
pub(crate) fn tree_allowed(root: &Path) -> Result<&'static str, String> {
    let on = plaintext_allowed(root)?;
    let real = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    for mount in mounts_below(&mountinfo, &real) {
        plaintext_allowed(&mount)?;
    }
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        if depth >= TREE_DEPTH {
            continue;
        }
        // Unreadable is not the same as empty: what cannot be looked at is refused.
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: cannot look inside: {e}", dir.display()))?;
        for e in entries.flatten() {
            let path = e.path();
            // Follows a symlink: where the bytes would really go.
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            seen += 1;
            if seen > TREE_DIRECTORIES {
                return Err(format!(
                    "{}: more than {TREE_DIRECTORIES} directories to check",
                    root.display()
                ));
            }
            plaintext_allowed(&path)?;
            if !e.file_type().is_ok_and(|t| t.is_symlink()) {
                stack.push((path, depth + 1));
            }
        }
    }
    Ok(on)
}

/// The mount points strictly below `root` in `mountinfo` (the kernel's format: the fifth
/// field, with space, tab, newline and backslash escaped as octal).
fn mounts_below(mountinfo: &str, root: &Path) -> Vec<std::path::PathBuf> {
    let unescape = |s: &str| {
        let mut out = Vec::with_capacity(s.len());
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let octal = b.get(i + 1..i + 4).and_then(|d| {
                std::str::from_utf8(d)
                    .ok()
                    .and_then(|d| u8::from_str_radix(d, 8).ok())
            });
            match (b[i], octal) {
                (b'\\', Some(c)) => {
                    out.push(c);
                    i += 4;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        std::path::PathBuf::from(
            <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out),
        )
    };
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m != root && m.starts_with(root))
        .collect()
}

/// Refuse while swap is on anything but memory (zram) or dm-crypt: tmpfs pages, decrypted
/// layers among them, can be written out to it.
pub(crate) fn swap_allowed() -> Result<(), String> {
    let swaps = match std::fs::read_to_string("/proc/swaps") {
        Ok(s) => s,
        // No swap support in the kernel: nothing can be swapped out.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("/proc/swaps: {e}")),
    };
    for line in swaps.lines().skip(1) {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        // A name with a space (escaped as \040 there) does not resolve, and is refused.
        let path = Path::new(name);
        // zram keeps pages in memory, unless it writes them back to a backing device.
        if let Some(dev) = name.strip_prefix("/dev/zram")
            && !dev.is_empty()
            && dev.bytes().all(|b| b.is_ascii_digit())
        {
            // A kernel without writeback has no such file; one that cannot be read is not
            // taken for "none".
            let backing = match std::fs::read_to_string(format!("/sys/block/zram{dev}/backing_dev"))
            {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "none".into(),
                Err(e) => e.to_string(),
            };
            if backing.trim() == "none" {
                continue;
            }
        }
        let crypt = std::fs::metadata(path).ok().is_some_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            let rdev = if m.file_type().is_block_device() {
                m.rdev()
            } else {
                m.dev()
            };
            is_dm_crypt(libc::major(rdev), libc::minor(rdev))
        });
        if !crypt {
            return Err(format!(
                "swap is on at {name}, neither zram nor dm-crypt: memory holding decrypted layers could be written to a disk the host can read (swapoff, or put swap on dm-crypt)"
            ));
        }
    }
    Ok(())
}

/// Whether block device `major:minor` is a dm-crypt mapping that encrypts: cryptsetup names
/// its devices' device-mapper uuids `CRYPT-<type>-…`, and INTEGRITY and VERITY mappings carry
/// that prefix without encrypting anything.
fn is_dm_crypt(major: u32, minor: u32) -> bool {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/dm/uuid")).is_ok_and(|u| {
        [
            "CRYPT-LUKS1-",
            "CRYPT-LUKS2-",
            "CRYPT-PLAIN-",
            "CRYPT-TCRYPT-",
            "CRYPT-BITLK-",
        ]
        .iter()
        .any(|p| u.starts_with(p))
    })
}

/// An anonymous file in memory (memfd) for the ciphertext of a layer between its two passes
/// (authenticated, then decrypted): it has no path another process could open or replace it
/// by, and its pages are the runtime's memory, not a disk the host writes to between the
/// passes.
#[allow(unsafe_code)] // memfd_create(2): std has no anonymous memory file
pub(crate) fn memory_file(what: &str) -> Result<std::fs::File, String> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated static name and a flag; the call returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"enclave-os-layer".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "{what}: an in-memory file to hold its ciphertext: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is a descriptor just created and owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn memory_is_allowed_and_a_disk_is_refused_with_the_reason() {
        // /dev/shm is a tmpfs on every Linux this runs on; the test directory is on a disk here
        // and in CI (where it is not, only the first half says anything).
        if Path::new("/dev/shm").is_dir() {
            assert_eq!(plaintext_allowed(Path::new("/dev/shm")).unwrap(), "tmpfs");
        }
        let dir = std::env::current_dir().unwrap();
        if let Err(e) = plaintext_allowed(&dir) {
            assert!(e.contains("neither memory (tmpfs) nor dm-crypt"), "{e}");
        }
        let e = plaintext_allowed(Path::new("/no/such/dir")).unwrap_err();
        assert!(e.starts_with("/no/such/dir: cannot tell"), "{e}");
    }

    #[test]
    fn mounts_below_a_root_are_found_at_any_depth_and_unescaped() {
        let info = "22 1 0:21 / / rw - ext4 /dev/vda1 rw\n\
            30 22 0:40 / /var/lib/containerd rw - tmpfs tmpfs rw\n\
            31 30 252:0 / /var/lib/containerd/a/b/c/d\\040e rw - ext4 /dev/vda1 rw\n\
            32 22 252:0 / /var/lib/containerd-other rw - ext4 /dev/vda1 rw\n";
        assert_eq!(
            mounts_below(info, Path::new("/var/lib/containerd")),
            vec![std::path::PathBuf::from("/var/lib/containerd/a/b/c/d e")]
        );
    }

    /// A root in memory with a subdirectory that is a link to a disk is refused, naming it.
    #[test]
    fn a_link_under_a_memory_root_onto_a_disk_is_refused() {
        let disk = std::env::current_dir().unwrap();
        if !Path::new("/dev/shm").is_dir() || plaintext_allowed(&disk).is_ok() {
            return; // no tmpfs, or no disk to point at, on this machine
        }
        let root = tempfile::tempdir_in("/dev/shm").unwrap();
        std::fs::create_dir_all(root.path().join("blobs/sha256")).unwrap();
        assert_eq!(tree_allowed(root.path()).unwrap(), "tmpfs");
        std::os::unix::fs::symlink(&disk, root.path().join("ingest")).unwrap();
        let e = tree_allowed(root.path()).unwrap_err();
        assert!(
            e.contains("ingest") && e.contains("neither memory (tmpfs) nor dm-crypt"),
            "{e}"
        );
    }
}
