//! The sealed store against the host: restarts, swapped, replayed and deleted records, rolled-back
//! databases and counters, deleted and reset counters, the old set-MAC's linear attack, a write
//! whose counter advance fails, and a model check of random operations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use enclave_store::{
    Counter, CounterError, FileCounter, MasterKey, Op, PreviousCounter, Store, StoreError, StoreId,
    reset_counter,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const KEY: [u8; 32] = [7; 32];
const ID: StoreId = StoreId([9; 16]);

struct Dir {
    _tmp: tempfile::TempDir,
    db: PathBuf,
    counter: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    Dir {
        db: tmp.path().join("kv.redb"),
        counter: tmp.path().join("kv.counter"),
        _tmp: tmp,
    }
}

fn open(d: &Dir) -> Result<Store, StoreError> {
    let master = MasterKey::from_bytes(&KEY).unwrap();
    let counter = FileCounter::new(&d.counter, &master, ID).unwrap();
    Store::open(&d.db, master, ID, Box::new(counter))
}

type Raw = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Every raw row of namespace table `ns`, as the host sees it.
fn raw_rows(db: &Path, ns: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = Database::open(db).unwrap();
    let name = format!("ns/{ns}");
    let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
    let r = db.begin_read().unwrap();
    let t = r.open_table(def).unwrap();
    t.iter()
        .unwrap()
        .map(|row| {
            let (k, v) = row.unwrap();
            (k.value().to_vec(), v.value().to_vec())
        })
        .collect()
}

/// The host writes raw rows into a table.
fn raw_write(db: &Path, ns: &str, rows: &[(Vec<u8>, Vec<u8>)]) {
    let db = Database::open(db).unwrap();
    let name = format!("ns/{ns}");
    let def: Raw = TableDefinition::new(Box::leak(name.into_boxed_str()));
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(def).unwrap();
        for (k, v) in rows {
            t.insert(k.as_slice(), v.as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
}

fn assert_integrity(r: Result<Store, StoreError>, words: &str) {
    match r {
        Err(StoreError::Integrity(m)) => assert!(m.contains(words), "{m}"),
        other => panic!("expected an integrity failure, got {other:?}"),
    }
}

#[test]
fn data_survives_reopen_and_keys_are_hashed_on_disk() {
    let d = dir();
    {
        let s = open(&d).unwrap();
        assert_eq!(s.put("app/a", b"greeting", b"hello").unwrap(), 1);
        s.put("app/a", b"other", b"x").unwrap();
        s.delete("app/a", b"other").unwrap();
        assert!(s.get("app/a", b"missing").unwrap().is_none());
    }
    let s = open(&d).unwrap();
    assert_eq!(
        s.get("app/a", b"greeting").unwrap().unwrap().as_slice(),
        b"hello"
    );
    assert!(s.get("app/a", b"other").unwrap().is_none());
    assert_eq!(s.keys("app/a").unwrap(), vec![b"greeting".to_vec()]);
    assert_eq!(s.stats().version, 3);
    assert_eq!(s.stats().records, 1);
    drop(s);
    let bytes = std::fs::read(&d.db).unwrap();
    for needle in [&b"greeting"[..], b"hello"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext {} found in the database file",
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn namespaces_are_isolated() {
    let d = dir();
    let s = open(&d).unwrap();
    s.put("app/a", b"k", b"from a").unwrap();
    s.put("app/b", b"k", b"from b").unwrap();
    assert_eq!(s.get("app/a", b"k").unwrap().unwrap().as_slice(), b"from a");
    assert_eq!(s.get("app/b", b"k").unwrap().unwrap().as_slice(), b"from b");
    assert!(s.get("app/c", b"k").unwrap().is_none());
    // Each namespace has its own key-hash key: the same key is stored under different hashes.
    drop(s);
    let a = raw_rows(&d.db, "app/a");
    let b = raw_rows(&d.db, "app/b");
    assert_ne!(a[0].0, b[0].0);
}

#[test]
fn a_record_swapped_between_keys_is_detected() {
    let d = dir();
    {
        let s = open(&d).unwrap();
        s.put("ns", b"alice", b"balance=1").unwrap();
        s.put("ns", b"bob", b"balance=1000000").unwrap();
    }
    let rows = raw_rows(&d.db, "ns");
    // Give each key the other's sealed value.
    raw_write(
        &d.db,
        "ns",
        &[
            (rows[0].0.clone(), rows[1].1.clone()),
            (rows[1].0.clone(), rows[0].1.clone()),
        ],
    );
    assert_integrity(open(&d), "swapped");
}

#[test]
fn a_replayed_record_is_detected() {
    let d = dir();
    let old;
    {
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"old").unwrap();
        drop(s);
        old = raw_rows(&d.db, "ns");
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"new").unwrap();
    }
    raw_write(&d.db, "ns", &old);
    assert_integrity(open(&d), "replayed");
}

#[test]
fn a_record_moved_to_another_namespace_or_deleted_is_detected() {
    let d = dir();
    {
        let s = open(&d).unwrap();
        s.put("ns1", b"k", b"v").unwrap();
        s.put("ns2", b"other", b"w").unwrap();
    }
    let rows = raw_rows(&d.db, "ns1");
    raw_write(&d.db, "ns2", &rows);
    assert_integrity(open(&d), "outside the runtime");

    let d = dir();
    {
        let s = open(&d).unwrap();
        s.put("ns", b"a", b"1").unwrap();
        s.put("ns", b"b", b"2").unwrap();
    }
    let rows = raw_rows(&d.db, "ns");
    let db = Database::open(&d.db).unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut t = w
            .open_table::<&[u8], &[u8]>(TableDefinition::new("ns/ns"))
            .unwrap();
        t.remove(rows[0].0.as_slice()).unwrap();
    }
    w.commit().unwrap();
    drop(db);
    assert_integrity(open(&d), "deleted");
}

#[test]
fn a_rolled_back_database_is_refused() {
    let d = dir();
    let backup = d.db.with_extension("old");
    {
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"v1").unwrap();
        drop(s);
        std::fs::copy(&d.db, &backup).unwrap();
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"v2").unwrap();
        s.put("ns", b"k2", b"v3").unwrap();
    }
    std::fs::copy(&backup, &d.db).unwrap();
    match open(&d) {
        Err(e @ StoreError::Rollback { .. }) => {
            let m = e.to_string();
            assert!(m.contains("version 1") && m.contains("version 3"), "{m}");
            assert!(m.contains("rollback"), "{m}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[test]
fn a_deleted_database_is_refused_once_writes_were_acknowledged() {
    let d = dir();
    {
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"v").unwrap();
    }
    std::fs::remove_file(&d.db).unwrap();
    match open(&d) {
        Err(e @ StoreError::Missing { .. }) => assert!(e.to_string().contains("missing")),
        other => panic!("expected missing, got {other:?}"),
    }
}

#[test]
fn a_counter_behind_the_database_catches_up_and_an_edited_counter_is_refused() {
    let d = dir();
    let old_counter = d.counter.with_extension("old");
    {
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"v1").unwrap();
        std::fs::copy(&d.counter, &old_counter).unwrap();
        s.put("ns", b"k", b"v2").unwrap();
    }
    // As after a crash between a commit and its counter advance: the database is ahead.
    std::fs::copy(&old_counter, &d.counter).unwrap();
    let s = open(&d).unwrap();
    assert_eq!(s.get("ns", b"k").unwrap().unwrap().as_slice(), b"v2");
    drop(s);
    let master = MasterKey::from_bytes(&KEY).unwrap();
    let c = FileCounter::new(&d.counter, &master, ID).unwrap();
    assert_eq!(enclave_store::Counter::read(&c).unwrap(), 2);
    assert!(enclave_store::Counter::advance(&c, 1).is_err());

    let mut bytes = std::fs::read(&d.counter).unwrap();
    for b in &mut bytes[8..16] {
        *b = 0;
    }
    for b in &mut bytes[72..80] {
        *b = 0;
    }
    std::fs::write(&d.counter, &bytes).unwrap();
    match open(&d) {
        Err(StoreError::Counter(e)) => assert!(e.to_string().contains("altered"), "{e}"),
        other => panic!("expected a counter failure, got {other:?}"),
    }
}

#[test]
fn another_master_key_or_store_id_cannot_open_the_database() {
    let d = dir();
    {
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"v").unwrap();
    }
    std::fs::remove_file(&d.counter).unwrap();
    let master = MasterKey::from_bytes(&[8; 32]).unwrap();
    let counter = FileCounter::new(&d.counter, &master, ID).unwrap();
    assert_integrity(
        Store::open(&d.db, master, ID, Box::new(counter)),
        "another store or master key",
    );
}

#[test]
fn bad_input_is_refused_with_reasons() {
    let d = dir();
    let s = open(&d).unwrap();
    for (ns, key) in [("", &b"k"[..]), ("bad ns", b"k"), ("ns", b"")] {
        match s.put(ns, key, b"v") {
            Err(StoreError::Invalid(m)) => assert!(!m.is_empty()),
            other => panic!("expected invalid, got {other:?}"),
        }
    }
    // A batch is all or nothing.
    let big = vec![0u8; 5000];
    assert!(
        s.apply("ns", &[Op::Put(b"ok", b"v"), Op::Put(&big, b"v")])
            .is_err()
    );
    assert!(s.get("ns", b"ok").unwrap().is_none());
}

const META: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("meta");

/// The state record, as the host sees it.
fn raw_state(db: &Path) -> Vec<u8> {
    let db = Database::open(db).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(META).unwrap();
    t.get("state").unwrap().unwrap().value().to_vec()
}

/// The host writes a state record.
fn raw_put_state(db: &Path, state: &[u8]) {
    let db = Database::open(db).unwrap();
    let w = db.begin_write().unwrap();
    w.open_table(META).unwrap().insert("state", state).unwrap();
    w.commit().unwrap();
}

/// The host removes rows from a table.
fn raw_remove(db: &Path, ns: &str, keys: &[Vec<u8>]) {
    let db = Database::open(db).unwrap();
    let name = format!("ns/{ns}");
    let w = db.begin_write().unwrap();
    {
        let mut t = w
            .open_table::<&[u8], &[u8]>(TableDefinition::new(&name))
            .unwrap();
        for k in keys {
            t.remove(k.as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
}

fn file_counter(d: &Dir) -> FileCounter {
    FileCounter::new(&d.counter, &MasterKey::from_bytes(&KEY).unwrap(), ID).unwrap()
}

#[test]
fn a_database_beside_a_deleted_counter_is_refused_until_the_operator_resets_it() {
    let d = dir();
    let backup = d.db.with_extension("old");
    {
        let s = open(&d).unwrap();
        s.put("ns", b"balance", b"100").unwrap();
        drop(s);
        std::fs::copy(&d.db, &backup).unwrap();
        let s = open(&d).unwrap();
        s.put("ns", b"balance", b"0").unwrap();
        s.put("ns", b"other", b"x").unwrap();
    }
    // The newest database without its counter.
    std::fs::remove_file(&d.counter).unwrap();
    match open(&d) {
        Err(e @ StoreError::CounterMissing { .. }) => {
            let m = e.to_string();
            assert!(m.contains("at version 3") && m.contains("does not"), "{m}");
            assert!(
                m.contains("kv.counter") && m.contains("reset-counter"),
                "{m}"
            );
        }
        other => panic!("expected a missing counter, got {other:?}"),
    }
    // The rollback it would hide: the old database put back, the counter deleted.
    std::fs::copy(&backup, &d.db).unwrap();
    match open(&d) {
        Err(e @ StoreError::CounterMissing { .. }) => {
            assert!(e.to_string().contains("at version 1"), "{e}")
        }
        other => panic!("expected a missing counter, got {other:?}"),
    }
    // The operator, knowingly, re-creates it at the version the database authenticates.
    let master = MasterKey::from_bytes(&KEY).unwrap();
    let done = reset_counter(&d.db, &master, ID, &file_counter(&d)).unwrap();
    assert_eq!(done.version, 1);
    assert_eq!(done.previous, PreviousCounter::Missing);
    let s = open(&d).unwrap();
    assert_eq!(s.get("ns", b"balance").unwrap().unwrap().as_slice(), b"100");
    s.put("ns", b"balance", b"50").unwrap();
    drop(s);
    // A reset never goes back: a readable counter ahead of the database is a rollback.
    std::fs::copy(&backup, &d.db).unwrap();
    match reset_counter(&d.db, &master, ID, &file_counter(&d)) {
        Err(StoreError::Invalid(m)) => {
            assert!(
                m.contains("says version 2") && m.contains("at version 1"),
                "{m}"
            );
            assert!(m.contains("rolled back"), "{m}");
        }
        other => panic!("expected a refused reset, got {other:?}"),
    }
    // Nor does it accept a database that fails its own checks.
    let rows = raw_rows(&d.db, "ns");
    raw_remove(&d.db, "ns", &[rows[0].0.clone()]);
    std::fs::remove_file(&d.counter).unwrap();
    match reset_counter(&d.db, &master, ID, &file_counter(&d)) {
        Err(StoreError::Integrity(m)) => assert!(m.contains("do not match"), "{m}"),
        other => panic!("expected an integrity failure, got {other:?}"),
    }
    assert!(!d.counter.exists());
}

#[test]
fn a_counter_more_than_one_write_behind_the_database_is_refused() {
    let d = dir();
    let old_counter = d.counter.with_extension("old");
    {
        let s = open(&d).unwrap();
        s.put("ns", b"k", b"v1").unwrap();
        std::fs::copy(&d.counter, &old_counter).unwrap();
        s.put("ns", b"k", b"v2").unwrap();
        s.put("ns", b"k", b"v3").unwrap();
    }
    std::fs::copy(&old_counter, &d.counter).unwrap();
    match open(&d) {
        Err(e @ StoreError::CounterGap { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("version 3") && m.contains("says version 1"),
                "{m}"
            );
            assert!(m.contains("kv.counter") && m.contains("at most one"), "{m}");
        }
        other => panic!("expected a counter gap, got {other:?}"),
    }
    // A counter that answers 0 for a store it never saw (as a witness asked about an unknown
    // counter does today) is the same gap.
    let master = MasterKey::from_bytes(&KEY).unwrap();
    let forgetful = Shared::default();
    match Store::open(&d.db, master, ID, Box::new(forgetful)) {
        Err(e @ StoreError::CounterGap { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("version 3") && m.contains("says version 0"),
                "{m}"
            );
        }
        other => panic!("expected a counter gap, got {other:?}"),
    }
}

/// An external counter, in memory, that keeps the state digest beside the version as a witness
/// does: it can be told to fail its advances, as a witness that becomes unreachable does, and to
/// hold an advance until released.
#[derive(Clone, Default)]
struct Shared {
    value: Arc<AtomicU64>,
    state: Arc<Mutex<Option<enclave_store::StateDigest>>>,
    fail: Arc<AtomicBool>,
    /// When not 0: the advance to exactly this version fails.
    fail_at: Arc<AtomicU64>,
    gate: Arc<Mutex<Option<Gate>>>,
}

/// An advance that waits: it says it entered, then waits for the word to go on.
struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Counter for Shared {
    fn describe(&self) -> String {
        "the test counter".into()
    }
    fn read(&self) -> Result<u64, CounterError> {
        Ok(self.value.load(Ordering::SeqCst))
    }
    fn advance(&self, to: u64) -> Result<(), CounterError> {
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.entered.send(()).unwrap();
            gate.release.recv().unwrap();
        }
        if self.fail.load(Ordering::SeqCst) || self.fail_at.load(Ordering::SeqCst) == to {
            return Err(CounterError {
                counter: self.describe(),
                reason: "unreachable".into(),
                fault: enclave_store::CounterFault::Unavailable,
            });
        }
        self.value.fetch_max(to, Ordering::SeqCst);
        Ok(())
    }
    fn read_recorded(&self) -> Result<Option<enclave_store::Recorded>, CounterError> {
        Ok(Some(enclave_store::Recorded {
            version: self.value.load(Ordering::SeqCst),
            state: *self.state.lock().unwrap(),
        }))
    }
    fn advance_recorded(
        &self,
        to: u64,
        state: &enclave_store::StateDigest,
    ) -> Result<(), CounterError> {
        self.advance(to)?;
        if self.value.load(Ordering::SeqCst) == to {
            *self.state.lock().unwrap() = Some(*state);
        }
        Ok(())
    }
}

#[test]
fn a_write_whose_counter_advance_fails_is_never_served() {
    let d = dir();
    let counter = Shared::default();
    let open_shared = || {
        Store::open(
            &d.db,
            MasterKey::from_bytes(&KEY).unwrap(),
            ID,
            Box::new(counter.clone()),
        )
    };
    let s = open_shared().unwrap();
    s.put("ns", b"k", b"acknowledged").unwrap();
    counter.fail.store(true, Ordering::SeqCst);
    let m = match s.put("ns", b"k", b"never acknowledged") {
        Err(e @ StoreError::Stopped(_)) => e.to_string(),
        other => panic!("expected the store to stop, got {other:?}"),
    };
    assert!(
        m.contains("write version 2 committed") && m.contains("unreachable"),
        "{m}"
    );
    // The counter works again, but the store stays stopped: nothing it serves could be trusted
    // to match what a restart will check.
    counter.fail.store(false, Ordering::SeqCst);
    for r in [
        s.get("ns", b"k").map(|_| ()),
        s.get("ns", b"new").map(|_| ()),
        s.keys("ns").map(|_| ()),
        s.put("ns", b"k2", b"v").map(|_| ()),
    ] {
        match r {
            Err(StoreError::Stopped(m)) => assert!(m.contains("not served"), "{m}"),
            other => panic!("expected the store to stay stopped, got {other:?}"),
        }
    }
    assert_eq!(s.stats().version, 1, "the failed write is not counted");
    drop(s);
    // At restart the database is one write ahead of the counter: what a crash between commit and
    // advance leaves, kept, and now recorded.
    assert_eq!(counter.value.load(Ordering::SeqCst), 1);
    let s = open_shared().unwrap();
    assert_eq!(s.stats().version, 2);
    assert_eq!(
        s.get("ns", b"k").unwrap().unwrap().as_slice(),
        b"never acknowledged"
    );
    assert_eq!(counter.value.load(Ordering::SeqCst), 2);
}

#[test]
fn a_read_racing_a_write_whose_advance_fails_never_sees_it() {
    let d = dir();
    let counter = Shared::default();
    let s = Arc::new(
        Store::open(
            &d.db,
            MasterKey::from_bytes(&KEY).unwrap(),
            ID,
            Box::new(counter.clone()),
        )
        .unwrap(),
    );
    s.put("ns", b"k", b"acknowledged").unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    *counter.gate.lock().unwrap() = Some(Gate {
        entered: entered_tx,
        release: release_rx,
    });
    counter.fail.store(true, Ordering::SeqCst);
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || s.put("ns", b"k", b"never acknowledged"))
    };
    // The write is committed; its counter advance is held.
    entered.recv().unwrap();
    assert_eq!(s.stats().version, 1, "committed but not published");
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || s.get("ns", b"k").map(|v| v.map(|v| v.to_vec())))
    };
    // Let the reader find the newer record and wait for the write to settle.
    std::thread::sleep(Duration::from_millis(100));
    release.send(()).unwrap();
    assert!(matches!(
        writer.join().unwrap(),
        Err(StoreError::Stopped(_))
    ));
    match reader.join().unwrap() {
        Err(StoreError::Stopped(m)) => assert!(m.contains("write version 2"), "{m}"),
        other => panic!("expected the read to fail closed, got {other:?}"),
    }
}

/// Wait until `n` writes are queued behind the group being committed.
fn wait_queued(s: &Store, n: usize) {
    for _ in 0..2000 {
        if s.queued() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("expected {n} queued writes, found {}", s.queued());
}

/// A store on `counter`, its first write held in the counter advance, and `n` writers queued
/// behind it, each putting `w<i>`. Returns the store, the held writer and the queued ones, and
/// the word that releases the held advance.
#[allow(clippy::type_complexity)]
fn queue_behind_a_held_write(
    d: &Dir,
    counter: &Shared,
    n: usize,
) -> (
    Arc<Store>,
    std::thread::JoinHandle<Result<u64, StoreError>>,
    Vec<std::thread::JoinHandle<Result<u64, StoreError>>>,
    mpsc::Sender<()>,
) {
    let s = Arc::new(
        Store::open(
            &d.db,
            MasterKey::from_bytes(&KEY).unwrap(),
            ID,
            Box::new(counter.clone()),
        )
        .unwrap(),
    );
    s.put("ns", b"before", b"acknowledged").unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    *counter.gate.lock().unwrap() = Some(Gate {
        entered: entered_tx,
        release: release_rx,
    });
    let held = {
        let s = s.clone();
        std::thread::spawn(move || s.put("ns", b"held", b"first"))
    };
    entered.recv().unwrap();
    let queued: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let key = format!("w{i}");
                s.apply(
                    if i % 2 == 0 { "ns" } else { "other" },
                    &[Op::Put(key.as_bytes(), key.as_bytes())],
                )
            })
        })
        .collect();
    wait_queued(&s, n);
    (s, held, queued, release)
}

#[test]
fn writers_queued_behind_a_commit_share_one_transaction_and_one_version() {
    let d = dir();
    let counter = Shared::default();
    let (s, held, queued, release) = queue_behind_a_held_write(&d, &counter, 7);
    // Nothing queued is visible before its group is committed and counted.
    assert_eq!(s.get("ns", b"w0").unwrap(), None);
    release.send(()).unwrap();
    assert_eq!(held.join().unwrap().unwrap(), 2);
    for q in queued {
        assert_eq!(
            q.join().unwrap().unwrap(),
            3,
            "the seven queued writes are one group"
        );
    }
    assert_eq!(s.stats().version, 3);
    assert_eq!(
        counter.value.load(Ordering::SeqCst),
        3,
        "one counter advance"
    );
    for i in 0..7 {
        let key = format!("w{i}");
        let ns = if i % 2 == 0 { "ns" } else { "other" };
        assert_eq!(
            s.get(ns, key.as_bytes()).unwrap().unwrap().as_slice(),
            key.as_bytes()
        );
    }
    drop(s);
    // The group's state record covers every record of both namespaces.
    let s = Store::open(
        &d.db,
        MasterKey::from_bytes(&KEY).unwrap(),
        ID,
        Box::new(counter.clone()),
    )
    .unwrap();
    assert_eq!(s.stats().records, 9);
    assert_eq!(s.stats().version, 3);
}

#[test]
fn a_group_whose_counter_advance_fails_is_never_served() {
    let d = dir();
    let counter = Shared::default();
    // The held write (version 2) is counted; the group behind it (version 3) is not.
    counter.fail_at.store(3, Ordering::SeqCst);
    let (s, held, queued, release) = queue_behind_a_held_write(&d, &counter, 7);
    release.send(()).unwrap();
    assert_eq!(held.join().unwrap().unwrap(), 2);
    for q in queued {
        match q.join().unwrap() {
            Err(StoreError::Stopped(m)) => assert!(
                m.contains("write version 3 committed")
                    && m.contains("not served")
                    && m.contains("6 other writes grouped"),
                "{m}"
            ),
            other => panic!("expected every write of the group to fail, got {other:?}"),
        }
    }
    assert_eq!(s.stats().version, 2, "the group is not counted");
    for i in 0..7 {
        let key = format!("w{i}");
        let ns = if i % 2 == 0 { "ns" } else { "other" };
        match s.get(ns, key.as_bytes()) {
            Err(StoreError::Stopped(_)) => {}
            other => panic!("expected no write of the group to be served, got {other:?}"),
        }
    }
    assert!(matches!(s.get("ns", b"held"), Err(StoreError::Stopped(_))));
    drop(s);
    // As for a single write: at restart the database is one transaction ahead of the counter,
    // kept as a crash would have left it, and counted.
    assert_eq!(counter.value.load(Ordering::SeqCst), 2);
    counter.fail_at.store(0, Ordering::SeqCst);
    let s = Store::open(
        &d.db,
        MasterKey::from_bytes(&KEY).unwrap(),
        ID,
        Box::new(counter.clone()),
    )
    .unwrap();
    assert_eq!(s.stats().version, 3);
    assert_eq!(counter.value.load(Ordering::SeqCst), 3);
    assert_eq!(s.get("ns", b"w0").unwrap().unwrap().as_slice(), b"w0");
}

#[test]
fn concurrent_writers_are_all_present_after_reopen() {
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let d = dir();
    let s = Arc::new(open(&d).unwrap());
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..EACH {
                    let key = format!("t{t}-k{}", i % 10);
                    let value = format!("t{t}-v{i}");
                    let version = if i % 5 == 4 {
                        s.delete("ns", key.as_bytes()).unwrap()
                    } else {
                        s.put("ns", key.as_bytes(), value.as_bytes()).unwrap()
                    };
                    acknowledged.push((key, (i % 5 != 4).then_some(value), version));
                }
                acknowledged
            })
        })
        .collect();
    let mut model = BTreeMap::new();
    let mut newest = 0;
    for w in writers {
        let mut last = 0;
        for (key, value, version) in w.join().unwrap() {
            assert!(version > last, "a writer's own writes are ordered");
            last = version;
            newest = newest.max(version);
            model.insert(key, value);
        }
    }
    assert_eq!(s.stats().version, newest);
    drop(s);
    let s = open(&d).unwrap();
    assert_eq!(s.stats().version, newest);
    for (key, value) in &model {
        assert_eq!(
            s.get("ns", key.as_bytes()).unwrap().map(|v| v.to_vec()),
            value.as_ref().map(|v| v.as_bytes().to_vec()),
            "{key}"
        );
    }
    let live = model.values().filter(|v| v.is_some()).count() as u64;
    assert_eq!(s.stats().records, live);
}

/// Bytes 8..40 of a state record: where the first format kept its set-MAC in the clear.
fn clear_set(state: &[u8]) -> [u8; 32] {
    state[8..40].try_into().unwrap()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

#[test]
fn state_records_show_no_relation_between_writes() {
    let d = dir();
    let mut states = Vec::new();
    // Empty, one record, empty again: the same set at the first and last state.
    drop(open(&d).unwrap());
    states.push(raw_state(&d.db));
    open(&d).unwrap().put("ns", b"k", b"v").unwrap();
    states.push(raw_state(&d.db));
    open(&d).unwrap().delete("ns", b"k").unwrap();
    states.push(raw_state(&d.db));
    for s in &states {
        assert_eq!(s.len(), 68, "version, nonce, sealed commitment, tag");
    }
    let (s0, s1, s2) = (
        clear_set(&states[0]),
        clear_set(&states[1]),
        clear_set(&states[2]),
    );
    assert_ne!(s0, [0; 32], "an empty set does not show as zeros");
    assert_ne!(s0, s2, "the same set twice shows as unrelated bytes");
    // The first format's put and delete of one record showed the same delta (the element).
    assert_ne!(xor(&s0, &s1), xor(&s1, &s2));
    assert_ne!(states[0][8..], states[2][8..]);
}

/// Gaussian elimination over GF(2): a subset of `vectors` whose XOR is `target`.
fn solve_gf2(vectors: &[[u8; 32]], target: [u8; 32]) -> Option<Vec<usize>> {
    let bit = |v: &[u8; 32], i: usize| v[i / 8] >> (7 - i % 8) & 1 == 1;
    let n = vectors.len();
    let mut basis: Vec<([u8; 32], Vec<bool>, usize)> = Vec::new();
    let reduce = |v: &mut [u8; 32], c: &mut Vec<bool>, basis: &[([u8; 32], Vec<bool>, usize)]| {
        for (b, bc, p) in basis {
            if bit(v, *p) {
                *v = xor(v, b);
                for (x, y) in c.iter_mut().zip(bc) {
                    *x ^= y;
                }
            }
        }
    };
    for (i, v) in vectors.iter().enumerate() {
        let (mut v, mut c) = (*v, vec![false; n]);
        c[i] = true;
        reduce(&mut v, &mut c, &basis);
        if let Some(p) = (0..256).find(|&p| bit(&v, p)) {
            basis.push((v, c, p));
        }
    }
    let (mut t, mut c) = (target, vec![false; n]);
    reduce(&mut t, &mut c, &basis);
    (t == [0; 32]).then(|| (0..n).filter(|&i| c[i]).collect())
}

/// The attack on the first format: watch writes, learn each new record's element as the XOR of
/// consecutive clear set-MACs, then delete a chosen record together with other records whose
/// elements XOR to the same value, keeping the newest state record. Under the first format the
/// store opened and served without the victim; now the commitment cannot be read or diffed, and
/// open refuses.
#[test]
fn deleting_records_chosen_by_linear_algebra_over_watched_state_records_is_refused() {
    let d = dir();
    let mut prev = {
        drop(open(&d).unwrap());
        clear_set(&raw_state(&d.db))
    };
    let mut learn = |key: &[u8]| {
        open(&d).unwrap().put("ns", key, b"some value").unwrap();
        let now = clear_set(&raw_state(&d.db));
        let element = xor(&prev, &now);
        prev = now;
        element
    };
    let victim = learn(b"victim");
    let fillers: Vec<[u8; 32]> = (0..280u32).map(|i| learn(&i.to_be_bytes())).collect();
    let subset = solve_gf2(&fillers, victim).expect("280 vectors span GF(2)^256");
    // The stored keys are keyed hashes: the host finds each one as the row a write added.
    let rows: BTreeMap<Vec<u8>, Vec<u8>> = raw_rows(&d.db, "ns").into_iter().collect();
    let master = MasterKey::from_bytes(&KEY).unwrap();
    let key_mac = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        master.derive("key-mac", "ns").unwrap().as_ref(),
    );
    // (The test computes the hashes for brevity; the host gets them by diffing the table.)
    let hash = |k: &[u8]| ring::hmac::sign(&key_mac, k).as_ref().to_vec();
    let mut doomed = vec![hash(b"victim")];
    doomed.extend(subset.iter().map(|&i| hash(&(i as u32).to_be_bytes())));
    assert!(doomed.iter().all(|h| rows.contains_key(h)));
    raw_remove(&d.db, "ns", &doomed);
    assert_integrity(open(&d), "do not match the authenticated state");
}

/// A store written in the first format (`version | XOR set-MAC | HMAC`, the set-MAC in the
/// clear), as the code before this one left it: the host rewrites the state record the way
/// that code did, under the same derived keys.
fn to_first_format(d: &Dir) {
    let master = MasterKey::from_bytes(&KEY).unwrap();
    let key = |p: &str| {
        ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            master.derive(p, "").unwrap().as_ref(),
        )
    };
    let (set_key, state_key) = (key("set-mac"), key("state-mac"));
    let db = Database::open(&d.db).unwrap();
    let r = db.begin_read().unwrap();
    let mut set = [0u8; 32];
    for h in r.list_tables().unwrap() {
        let name = redb::TableHandle::name(&h).to_string();
        let Some(ns) = name.strip_prefix("ns/") else {
            continue;
        };
        let t = r
            .open_table::<&[u8], &[u8]>(TableDefinition::new(&name))
            .unwrap();
        for row in t.iter().unwrap() {
            let (k, v) = row.unwrap();
            let mut ctx = ring::hmac::Context::with_key(&set_key);
            ctx.update(&(ns.len() as u16).to_be_bytes());
            ctx.update(ns.as_bytes());
            ctx.update(k.value());
            ctx.update(v.value());
            set = xor(&set, ctx.sign().as_ref().try_into().unwrap());
        }
    }
    let version = r
        .open_table(META)
        .unwrap()
        .get("state")
        .unwrap()
        .unwrap()
        .value()[..8]
        .to_vec();
    drop(r);
    drop(db);
    let mut state = version;
    state.extend_from_slice(&set);
    let mut msg = b"enclave-os/kv/v1/state".to_vec();
    msg.extend_from_slice(&ID.0);
    msg.extend_from_slice(&state);
    state.extend_from_slice(ring::hmac::sign(&state_key, &msg).as_ref());
    raw_put_state(&d.db, &state);
}

#[test]
fn a_store_in_the_first_format_is_checked_then_migrated_and_the_old_state_retired() {
    let d = dir();
    {
        let s = open(&d).unwrap();
        s.put("ns", b"a", b"1").unwrap();
        s.put("ns", b"b", b"2").unwrap();
        s.put("other", b"c", b"3").unwrap();
    }
    to_first_format(&d);
    let first = raw_state(&d.db);
    assert_eq!(first.len(), 72);

    // A record deleted under the first format is still found, by the first format's check.
    let saved = std::fs::read(&d.db).unwrap();
    let rows = raw_rows(&d.db, "ns");
    raw_remove(&d.db, "ns", &[rows[0].0.clone()]);
    assert_integrity(
        open(&d),
        "do not match the authenticated state at version 3",
    );
    std::fs::write(&d.db, &saved).unwrap();

    // Intact, it opens, moves to the current format with a write of its own, and serves.
    let s = open(&d).unwrap();
    assert_eq!(s.stats().version, 4);
    assert_eq!(s.get("ns", b"a").unwrap().unwrap().as_slice(), b"1");
    assert_eq!(s.get("other", b"c").unwrap().unwrap().as_slice(), b"3");
    drop(s);
    let migrated = raw_state(&d.db);
    assert_eq!(migrated.len(), 68);
    assert_eq!(Counter::read(&file_counter(&d)).unwrap(), 4);

    // The first-format state record put back over the very same records (all the host could
    // forge a set against) is behind the counter: refused as a rollback.
    raw_put_state(&d.db, &first);
    match open(&d) {
        Err(e @ StoreError::Rollback { .. }) => {
            let m = e.to_string();
            assert!(m.contains("version 3") && m.contains("version 4"), "{m}")
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    raw_put_state(&d.db, &migrated);
    let s = open(&d).unwrap();
    s.put("ns", b"a", b"new").unwrap();
    assert_eq!(s.get("ns", b"a").unwrap().unwrap().as_slice(), b"new");
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8, u8, Vec<u8>),
        Delete(u8, u8),
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..3, 0u8..6, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(n, k, v)| Step::Put(n, k, v)),
            2 => (0u8..3, 0u8..6).prop_map(|(n, k)| Step::Delete(n, k)),
            1 => Just(Step::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn behaves_like_a_map(steps in proptest::collection::vec(step(), 1..30)) {
            let d = dir();
            let mut s = Some(open(&d).unwrap());
            let mut model: BTreeMap<(u8, u8), Vec<u8>> = BTreeMap::new();
            for st in steps {
                match st {
                    Step::Put(n, k, v) => {
                        s.as_ref().unwrap().put(&format!("n{n}"), &[k], &v).unwrap();
                        model.insert((n, k), v);
                    }
                    Step::Delete(n, k) => {
                        s.as_ref().unwrap().delete(&format!("n{n}"), &[k]).unwrap();
                        model.remove(&(n, k));
                    }
                    Step::Reopen => {
                        drop(s.take());
                        s = Some(open(&d).unwrap());
                    }
                }
                let store = s.as_ref().unwrap();
                for n in 0..3u8 {
                    for k in 0..6u8 {
                        let got = store.get(&format!("n{n}"), &[k]).unwrap().map(|v| v.to_vec());
                        prop_assert_eq!(got, model.get(&(n, k)).cloned());
                    }
                }
                prop_assert_eq!(store.stats().records, model.len() as u64);
            }
        }
    }
}

/// A review's attack on a witness: make one advance fail and keep that database (its write
/// was never acknowledged), put back the one before, let a write be acknowledged at the same
/// version, then swap the kept database in. A version alone passes; the state digest the
/// counter keeps does not.
#[test]
fn a_second_database_at_the_counters_version_is_refused() {
    let d = dir();
    let counter = Shared::default();
    let open_with = || {
        Store::open(
            &d.db,
            MasterKey::from_bytes(&KEY).unwrap(),
            ID,
            Box::new(counter.clone()),
        )
    };
    let s = open_with().unwrap();
    s.put("ns", b"bal", b"100").unwrap();
    drop(s);
    let before = d.db.with_extension("before");
    std::fs::copy(&d.db, &before).unwrap();

    let s = open_with().unwrap();
    counter.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        s.put("ns", b"bal", b"999 (never acknowledged)"),
        Err(StoreError::Stopped(_))
    ));
    drop(s);
    counter.fail.store(false, Ordering::SeqCst);
    let unacknowledged = d.db.with_extension("unacknowledged");
    std::fs::copy(&d.db, &unacknowledged).unwrap();

    std::fs::copy(&before, &d.db).unwrap();
    let s = open_with().unwrap();
    s.put("ns", b"bal", b"5 (acknowledged)").unwrap();
    assert_eq!(s.stats().version, 2);
    drop(s);

    std::fs::copy(&unacknowledged, &d.db).unwrap();
    match open_with() {
        Err(e @ StoreError::Fork { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("at version 2") && m.contains("not the state recorded"),
                "{m}"
            );
        }
        other => panic!("expected the second database at version 2 refused, got {other:?}"),
    }
}

/// What the store wrote before it sealed through `enclave-aead`, with `KEY` and `ID`.
mod previous_format {
    /// The nonce a test patch fixed in that code, and the test-only path fixes now.
    pub const NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    /// A store that code wrote with its own random nonces: `ns`/`k` = `v` (version 1),
    /// `ns`/`greeting` (2), `sys/operator`/`a` = `1` (3), `ns`/`gone` written (4) and deleted (5).
    /// Every row (table, stored key, stored value), the state record and the file counter.
    pub const ROWS: [(&str, &str, &str); 3] = [
        (
            "ns/ns",
            "12ec06c67672063a87edbeeaca3e8228ddb44e99923f610789b4f76ae9920979",
            "00000000000000023d5dfc52cd2a6934b5ca8260\
             552ef541449816dc1ba647922b1d450ad6b7dcf57c7598fbc094d307a19c92a36313606616d87814b33cd051\
             9375e144da328fce54a1440353dd",
        ),
        (
            "ns/ns",
            "4bf72b471d5798113a6bd80872875641b630da9129b0fe27f9d6803b327d3c56",
            "0000000000000001f6097c3c5ae051f449e59314\
             d23c330a10b33b2b05bd85916450054de9046e9d866c",
        ),
        (
            "ns/sys/operator",
            "e38073afc66b9266ea3694e22c28f1de6256d6d9bed95ad9a0ae40f88b6585ea",
            "0000000000000003b08cf0a3966c0ff075999f47\
             fa502eb13c617d24c74ca6fe79911a48099c5001e831",
        ),
    ];
    pub const STATE: &str = "00000000000000056588e66e9d91804b0634cc95\
        8fa09ae334b7b76162a14ae74af6b62aa7d1b3b96a9e02c78addd1ecd5cca478656d902a7065a894790fbb34\
        cbeee2fa";
    pub const COUNTER: &str = "454f534354523100000000000000000409090909\
        09090909090909090909090984be828e732acf6cbe69420ec42cb3901ae07829760568bc2b55c2672c452c52\
        454f53435452310000000000000000050909090909090909090909090909090938ed9769f18f7f169dcb35cb\
        702f9b98a0275e302f3eb1384ae7004795f8717b";
    /// A new store after one `put("ns", b"k", b"v")`, every nonce fixed: its one record and
    /// its state record at version 1.
    pub const ROW_FIXED: (&str, &str) = (
        "4bf72b471d5798113a6bd80872875641b630da9129b0fe27f9d6803b327d3c56",
        "0000000000000001000102030405060708090a0b\
         e766a98a1873d672d99c3e80b213b0273aef0d2faeac",
    );
    pub const STATE_FIXED: &str = "0000000000000001000102030405060708090a0b\
        68f8ce30d3bafd7d061dab01035eb6c5586f39c5442e0281f69f2a7e31c3507d1f52adb46745300ac0371f93\
        886cee64";
    /// `derive("value-aead", "ns")` under `KEY`.
    pub const VALUE_AEAD_NS: &str =
        "df7415f08329f585c08a1dac2aa61f4826c90e8310d00823aa818fcca80e5205";
}

#[test]
fn a_database_written_before_enclave_aead_opens_and_serves() {
    use previous_format::*;
    let d = dir();
    {
        let db = Database::create(&d.db).unwrap();
        let w = db.begin_write().unwrap();
        for (table, key, value) in ROWS {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
            w.open_table(def)
                .unwrap()
                .insert(
                    hex::decode(key).unwrap().as_slice(),
                    hex::decode(value).unwrap().as_slice(),
                )
                .unwrap();
        }
        w.open_table(META)
            .unwrap()
            .insert("state", hex::decode(STATE).unwrap().as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    std::fs::write(&d.counter, hex::decode(COUNTER).unwrap()).unwrap();
    // Opening checks every record against the state record, and the counter.
    let s = open(&d).unwrap();
    assert_eq!(s.stats().version, 5);
    assert_eq!(s.get("ns", b"k").unwrap().unwrap().as_slice(), b"v");
    assert_eq!(
        s.get("ns", b"greeting").unwrap().unwrap().as_slice(),
        b"hello from the previous format"
    );
    assert_eq!(
        s.get("sys/operator", b"a").unwrap().unwrap().as_slice(),
        b"1"
    );
    assert!(s.get("ns", b"gone").unwrap().is_none());
    // And it goes on from there, nothing rewritten.
    assert_eq!(s.put("ns", b"k", b"w").unwrap(), 6);
    drop(s);
    let s = open(&d).unwrap();
    assert_eq!(s.get("ns", b"k").unwrap().unwrap().as_slice(), b"w");
    assert_eq!(
        s.get("ns", b"greeting").unwrap().unwrap().as_slice(),
        b"hello from the previous format"
    );
}

#[test]
fn records_and_state_records_are_byte_for_byte_the_previous_format() {
    use previous_format::*;
    let d = dir();
    enclave_aead::test_nonce::with_fixed_nonce(NONCE, || {
        open(&d).unwrap().put("ns", b"k", b"v").unwrap();
    });
    let rows = raw_rows(&d.db, "ns");
    assert_eq!(rows.len(), 1);
    assert_eq!(hex::encode(&rows[0].0), ROW_FIXED.0);
    assert_eq!(hex::encode(&rows[0].1), ROW_FIXED.1);
    assert_eq!(hex::encode(raw_state(&d.db)), STATE_FIXED);
    assert_eq!(
        hex::encode(
            MasterKey::from_bytes(&KEY)
                .unwrap()
                .derive("value-aead", "ns")
                .unwrap()
        ),
        VALUE_AEAD_NS
    );
}
