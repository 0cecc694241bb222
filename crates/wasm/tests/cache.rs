//! The compiled-code cache trusts only entries sealed under its own key for that very component.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use enclave_wasm::{CodeCache, Compiled, Host, HostOptions, Limits};
use zeroize::Zeroizing;

fn host(dir: &Path, key: u8) -> Host {
    Host::new(HostOptions {
        cache: Some(CodeCache::new(dir, Zeroizing::new([key; 32])).unwrap()),
        ..HostOptions::default()
    })
    .unwrap()
}

fn load(host: &Host, code: &[u8]) -> Compiled {
    host.load("app", code, vec![], vec![], Limits::default())
        .unwrap()
        .compiled()
}

#[test]
fn entries_are_used_only_under_their_key_and_for_their_component() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm");
    let hello = std::fs::read(testdata.join("hello.wasm")).unwrap();
    let sdk = std::fs::read(testdata.join("sdk.wasm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hex = |code: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, code));
    let entry = |code: &[u8]| dir.path().join(format!("{}.cwasm", hex(code)));

    let a = host(dir.path(), 1);
    assert_eq!(load(&a, &hello), Compiled::Fresh);
    assert!(entry(&hello).exists());
    assert_eq!(load(&a, &hello), Compiled::Cached);

    // Another runtime's key: refused, recompiled, rewritten under this key.
    let b = host(dir.path(), 2);
    assert_eq!(load(&b, &hello), Compiled::Fresh);
    assert_eq!(load(&b, &hello), Compiled::Cached);
    assert_eq!(load(&a, &hello), Compiled::Fresh);

    // An entry moved to another component's name: refused (the code hash is in the AAD).
    assert_eq!(load(&a, &sdk), Compiled::Fresh);
    std::fs::copy(entry(&hello), entry(&sdk)).unwrap();
    assert_eq!(load(&a, &sdk), Compiled::Fresh);
    assert_eq!(load(&a, &sdk), Compiled::Cached);

    // Truncated and empty entries: refused, never a panic.
    std::fs::write(entry(&hello), b"short").unwrap();
    assert_eq!(load(&a, &hello), Compiled::Fresh);
    std::fs::write(entry(&hello), b"").unwrap();
    assert_eq!(load(&a, &hello), Compiled::Fresh);
}
