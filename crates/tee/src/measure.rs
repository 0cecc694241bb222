//! Measuring code the way the simulator and the runtime need: digests of a file's bytes.

use std::io::Read;
use std::path::Path;

use ring::digest::{Context, SHA256, SHA384};

use crate::error::TeeError;

/// SHA-256 and SHA-384 of a file, read once.
pub fn file_digests(path: &Path) -> Result<([u8; 32], [u8; 48]), TeeError> {
    let mut f = std::fs::File::open(path).map_err(|e| TeeError::io(path, e))?;
    let (mut a, mut b) = (Context::new(&SHA256), Context::new(&SHA384));
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| TeeError::io(path, e))?;
        if n == 0 {
            break;
        }
        a.update(&buf[..n]);
        b.update(&buf[..n]);
    }
    let mut s256 = [0u8; 32];
    s256.copy_from_slice(a.finish().as_ref());
    let mut s384 = [0u8; 48];
    s384.copy_from_slice(b.finish().as_ref());
    Ok((s256, s384))
}
