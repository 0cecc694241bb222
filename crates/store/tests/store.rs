//! The sealed store against the host: restarts, swapped, replayed and deleted records, rolled-back
//! databases and counters, and a model check of random operations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use enclave_store::{FileCounter, MasterKey, Op, Store, StoreError, StoreId};
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
