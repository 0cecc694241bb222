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
    // A device-mapper device says what target it is in its uuid: `CRYPT-…` for dm-crypt.
    let uuid = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/dm/uuid"))
        .unwrap_or_default();
    if uuid.starts_with("CRYPT-") {
        return Ok("dm-crypt");
    }
    Err(format!(
        "{} is on a filesystem of type {magic:#x} on device {major}:{minor}, neither memory (tmpfs) nor dm-crypt: decrypted layers would reach a disk the host can read (put containerd's root on a tmpfs, or on dm-crypt keyed inside the TEE)",
        dir.display()
    ))
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
}
