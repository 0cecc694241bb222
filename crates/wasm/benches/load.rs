//! What the compiled-code cache saves at start: loading the hello-world component by compiling
//! it, against loading it from an authenticated cache entry (decrypt, then deserialize).
//!
//! Run: `cargo bench -p enclave-wasm --bench load`; figures in docs/performance.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use enclave_wasm::{CodeCache, Compiled, Host, HostOptions, Limits};
use zeroize::Zeroizing;

fn load(c: &mut Criterion) {
    let code =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/hello.wasm"))
            .unwrap();
    let fresh = Host::new(HostOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cached = Host::new(HostOptions {
        cache: Some(CodeCache::new(dir.path(), Zeroizing::new([7u8; 32])).unwrap()),
        ..HostOptions::default()
    })
    .unwrap();
    // Fill the cache once.
    cached
        .load("hello", &code, vec![], vec![], Limits::default())
        .unwrap();

    let mut g = c.benchmark_group("load hello.wasm");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("compile", |b| {
        b.iter(|| {
            let app = fresh
                .load("hello", &code, vec![], vec![], Limits::default())
                .unwrap();
            assert_eq!(app.compiled(), Compiled::Fresh);
        })
    });
    g.bench_function("from the cache", |b| {
        b.iter(|| {
            let app = cached
                .load("hello", &code, vec![], vec![], Limits::default())
                .unwrap();
            assert_eq!(app.compiled(), Compiled::Cached);
        })
    });
    g.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
