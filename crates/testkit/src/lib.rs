//! Test helpers for Enclave OS, shared by every crate's tests and benches: a loopback HTTPS
//! server with bounded connections, a throwaway CA, OIDC tokens signed with the test keys,
//! the runtime started in-process on a listener already bound (so no test races another for a
//! port), and a private OCI registry with busybox images for image-pull tests, and a private
//! containerd per test (`containerd`).
//!
//! Dev-only: no library crate of the runtime depends on it, and nothing here is fit for
//! production (keys are generated without care for their storage, and the test signing keys
//! are public, in `testdata/oidc`).

pub mod containerd;
pub mod https;
pub mod pki;
pub mod registry;
pub mod runtime;
pub mod token;

use std::path::{Path, PathBuf};

/// A file under the workspace's `testdata/` directory.
pub fn testdata(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(relative)
}
