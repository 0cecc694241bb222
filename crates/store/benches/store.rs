//! Sealed put/get against bare redb in the same run, same file system, same durability.
//!
//! `cargo bench -p enclave-store --bench store`. Figures go to docs/performance.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use enclave_store::{FileCounter, MasterKey, Op, Store, StoreId};
use redb::{Database, ReadableDatabase, TableDefinition};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bare");
const VALUE: [u8; 256] = [0x5a; 256];
const PRELOAD: u32 = 10_000;
const BATCH: u32 = 100;
/// Concurrent writers in the `put-durable-8w` group.
const WRITERS: u64 = 8;

/// `iters` calls of `write`, spread over `WRITERS` threads started together: the wall time from
/// the start to the last one's return, scaled to `iters` calls. Each call gets a fresh number.
fn concurrently(iters: u64, next: &AtomicU32, write: &(dyn Fn(u32) + Sync)) -> Duration {
    let each = iters.div_ceil(WRITERS);
    let start = Barrier::new(WRITERS as usize + 1);
    let elapsed = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..WRITERS)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..each {
                        write(next.fetch_add(1, Ordering::Relaxed));
                    }
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        for t in threads {
            t.join().unwrap();
        }
        t0.elapsed()
    });
    elapsed.mul_f64(iters as f64 / (each * WRITERS) as f64)
}

/// Keys in no particular order (as user ids or UUIDs would be), the same for both stores: the
/// sealed store hashes keys anyway, so sequential keys would flatter bare redb's page locality.
fn key(i: u32) -> [u8; 16] {
    let mixed = u64::from(i)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29);
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(b"key-");
    k[4..12].copy_from_slice(&mixed.to_be_bytes());
    k[12..].copy_from_slice(&i.to_be_bytes());
    k
}

fn sealed(dir: &std::path::Path) -> Store {
    let master = MasterKey::from_bytes(&[1; 32]).unwrap();
    let id = StoreId([2; 16]);
    let counter = FileCounter::new(&dir.join("counter"), &master, id).unwrap();
    Store::open(&dir.join("sealed.redb"), master, id, Box::new(counter)).unwrap()
}

fn bare(dir: &std::path::Path) -> Database {
    Database::create(dir.join("bare.redb")).unwrap()
}

fn bare_put_batch(db: &Database, from: u32, n: u32) {
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(TABLE).unwrap();
        for i in from..from + n {
            t.insert(key(i).as_slice(), VALUE.as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
}

fn sealed_put_batch(s: &Store, from: u32, n: u32) {
    let keys: Vec<[u8; 16]> = (from..from + n).map(key).collect();
    let ops: Vec<Op<'_>> = keys.iter().map(|k| Op::Put(k, &VALUE)).collect();
    s.apply("bench", &ops).unwrap();
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let db = bare(tmp.path());
    let store = sealed(tmp.path());
    for from in (0..PRELOAD).step_by(1000) {
        bare_put_batch(&db, from, 1000);
        sealed_put_batch(&store, from, 1000);
    }

    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    g.bench_function(BenchmarkId::new("redb", "256B"), |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOAD;
            let r = db.begin_read().unwrap();
            let t = r.open_table(TABLE).unwrap();
            t.get(key(i).as_slice()).unwrap().unwrap().value().len()
        })
    });
    g.bench_function(BenchmarkId::new("sealed", "256B"), |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOAD;
            store.get("bench", &key(i)).unwrap().unwrap().len()
        })
    });
    // Bare redb holding records of the sealed store's shape (32-byte keys, 312-byte values):
    // what the storage layout costs, apart from the cryptography.
    let shaped = Database::create(tmp.path().join("shaped.redb")).unwrap();
    let w = shaped.begin_write().unwrap();
    {
        let mut t = w.open_table(TABLE).unwrap();
        for n in 0..PRELOAD {
            let mut k = [0u8; 32];
            k[..16].copy_from_slice(&key(n));
            t.insert(k.as_slice(), [0x5a; 312].as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
    // Bare redb reading through one read transaction and table kept open, as the sealed store
    // now does between commits: what redb itself costs once begin_read and open_table are
    // amortised, the floor for the sealed read.
    let kept = db.begin_read().unwrap().open_table(TABLE).unwrap();
    g.bench_function(BenchmarkId::new("redb-kept-txn", "256B"), |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOAD;
            kept.get(key(i).as_slice()).unwrap().unwrap().value().len()
        })
    });
    drop(kept);
    g.bench_function(BenchmarkId::new("redb-sealed-shape", "256B"), |b| {
        b.iter(|| {
            i = (i + 7919) % PRELOAD;
            let mut k = [0u8; 32];
            k[..16].copy_from_slice(&key(i));
            let r = shaped.begin_read().unwrap();
            let t = r.open_table(TABLE).unwrap();
            t.get(k.as_slice()).unwrap().unwrap().value().len()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("put-durable");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    let mut n = PRELOAD;
    g.bench_function(BenchmarkId::new("redb", "256B"), |b| {
        b.iter(|| {
            n += 1;
            bare_put_batch(&db, n, 1)
        })
    });
    let mut n = PRELOAD;
    g.bench_function(BenchmarkId::new("sealed", "256B"), |b| {
        b.iter(|| {
            n += 1;
            sealed_put_batch(&store, n, 1)
        })
    });
    g.finish();

    // Eight threads each writing single puts, each durable before it returns. Bare redb has no
    // group commit: begin_write waits for the previous writer, so each put is its own
    // transaction and sync. The sealed store groups writers that arrive during a commit into
    // the next transaction (one commit, one counter advance for the group).
    let mut g = c.benchmark_group("put-durable-8w");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(1));
    let next = AtomicU32::new(1 << 24);
    g.bench_function(BenchmarkId::new("redb", "256B"), |b| {
        b.iter_custom(|iters| concurrently(iters, &next, &|n| bare_put_batch(&db, n, 1)))
    });
    let next = AtomicU32::new(1 << 24);
    g.bench_function(BenchmarkId::new("sealed", "256B"), |b| {
        b.iter_custom(|iters| {
            concurrently(iters, &next, &|n| {
                store.put("bench", &key(n), &VALUE).unwrap();
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("put-batch100");
    g.sample_size(20);
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    let mut n = 2 * PRELOAD;
    g.bench_function(BenchmarkId::new("redb", "256B"), |b| {
        b.iter(|| {
            n += BATCH;
            bare_put_batch(&db, n, BATCH)
        })
    });
    let mut n = 2 * PRELOAD;
    g.bench_function(BenchmarkId::new("sealed", "256B"), |b| {
        b.iter(|| {
            n += BATCH;
            sealed_put_batch(&store, n, BATCH)
        })
    });
    g.finish();
}

criterion_group!(store, benches);
criterion_main!(store);
