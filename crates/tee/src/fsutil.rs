//! Files that must not be lost or exposed: written whole (temp file, fsync, rename) and, for
//! secrets, readable by the owner only.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::TeeError;

/// Write `data` to `path` atomically with `mode` permissions.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TeeError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| TeeError::io(&tmp, e))?;
    f.write_all(data).map_err(|e| TeeError::io(&tmp, e))?;
    f.sync_all().map_err(|e| TeeError::io(&tmp, e))?;
    // `mode` applies only at creation; a stale temp file keeps its old mode otherwise.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| TeeError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TeeError::io(path, e))
}

/// Create `dir` (and parents) readable by the owner only.
pub(crate) fn private_dir(dir: &Path) -> Result<(), TeeError> {
    std::fs::create_dir_all(dir).map_err(|e| TeeError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| TeeError::io(dir, e))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TeeError> {
    std::fs::read(path).map_err(|e| TeeError::io(path, e))
}
