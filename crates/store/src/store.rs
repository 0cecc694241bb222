//! The store: redb tables of sealed records, the authenticated state record, and the index that
//! checks reads while running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use ring::hmac;
use zeroize::Zeroizing;

use crate::StoreError;
use crate::counter::Counter;
use crate::keys::{MasterKey, StoreId};
use crate::record::{KeyHash, NsKeys, element, version_of, xor_into};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STATE: &str = "state";
const NS_PREFIX: &str = "ns/";

/// Limits on what callers may store.
const MAX_NAMESPACE: usize = 128;
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 64 << 20;

/// One change in a batch.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Set `key` to `value`.
    Put(&'a [u8], &'a [u8]),
    /// Remove `key`.
    Delete(&'a [u8]),
}

/// What the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The store-wide version: the number of write transactions committed.
    pub version: u64,
    /// Live records.
    pub records: u64,
    /// Namespaces with at least one live record.
    pub namespaces: usize,
}

/// Index keys are HMAC outputs, uniform and not chosen by anyone who lacks the key: their first
/// eight bytes are already a good hash, and SipHash over 32 bytes would cost more than the lookup.
#[derive(Default, Clone, Copy)]
struct KeyHashHasher(u64);

impl std::hash::Hasher for KeyHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

type Index = HashMap<KeyHash, Entry, std::hash::BuildHasherDefault<KeyHashHasher>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    version: u64,
    live: bool,
}

/// What the running store knows that the disk must agree with.
struct Known {
    version: u64,
    set: [u8; 32],
    index: HashMap<String, Index>,
}

/// A sealed key-value store. Cheap to share behind an `Arc`; writes are serialized.
pub struct Store {
    db: Database,
    path: PathBuf,
    id: StoreId,
    master: MasterKey,
    set_key: hmac::Key,
    state_key: hmac::Key,
    namespaces: RwLock<HashMap<String, Arc<NsKeys>>>,
    /// Held across a write's commit and its counter advance, and by reads that must see the
    /// database and `known` agree.
    writer: Mutex<()>,
    known: RwLock<Known>,
    counter: Box<dyn Counter>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("id", &self.id.to_string())
            .field("counter", &self.counter.describe())
            .finish_non_exhaustive()
    }
}

fn check_namespace(ns: &str) -> Result<(), StoreError> {
    let ok = !ns.is_empty()
        && ns.len() <= MAX_NAMESPACE
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "namespace '{ns}' must be 1 to {MAX_NAMESPACE} letters, digits, '.', '_', '/' or '-'"
        )))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-done on disk (redb aborts the
    // transaction), so the lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// The state record: `version (8) | set-MAC (32) | HMAC-SHA256 over both (32)`.
    fn state_record(&self, version: u64, set: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(72);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(set);
        let tag = hmac::sign(&self.state_key, &self.state_msg(&out));
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Open the store at `path`, creating it when there is none and `counter` agrees nothing was
    /// ever written. Verifies the whole database against its authenticated state and the
    /// counter before returning: a rollback, or records deleted, replayed or swapped while the
    /// store was closed, make it refuse.
    pub fn open(
        path: &Path,
        master: MasterKey,
        id: StoreId,
        counter: Box<dyn Counter>,
    ) -> Result<Self, StoreError> {
        let expected = counter.read()?;
        let existed = path.exists();
        if !existed && expected > 0 {
            return Err(StoreError::Missing {
                path: path.display().to_string(),
                expected,
                counter: counter.describe(),
            });
        }
        let db = Database::create(path).map_err(|e| StoreError::Database {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let store = Self {
            db,
            path: path.to_path_buf(),
            id,
            set_key: master.hmac_key("set-mac", "")?,
            state_key: master.hmac_key("state-mac", "")?,
            master,
            namespaces: RwLock::new(HashMap::new()),
            writer: Mutex::new(()),
            known: RwLock::new(Known {
                version: 0,
                set: [0; 32],
                index: HashMap::new(),
            }),
            counter,
        };
        store.verify_at_open(expected)?;
        Ok(store)
    }

    fn verify_at_open(&self, expected: u64) -> Result<(), StoreError> {
        let rtxn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let state = match rtxn.open_table(META) {
            Ok(t) => t
                .get(STATE)
                .map_err(|e| self.db_err(e))?
                .map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.db_err(e)),
        };
        let mut set = [0u8; 32];
        let mut index: HashMap<String, Index> = HashMap::new();
        for handle in rtxn.list_tables().map_err(|e| self.db_err(e))? {
            let name = handle.name().to_string();
            let Some(ns) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
            let t = rtxn.open_table(def).map_err(|e| self.db_err(e))?;
            let entries = index.entry(ns.to_string()).or_default();
            for row in t.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = row.map_err(|e| self.db_err(e))?;
                let hash: KeyHash = k.value().try_into().map_err(|_| {
                    StoreError::Integrity(format!(
                        "namespace '{ns}' holds a key that is not a 32-byte keyed hash"
                    ))
                })?;
                let stored = v.value();
                xor_into(&mut set, &element(&self.set_key, ns, &hash, stored));
                let version = version_of(stored).unwrap_or(0);
                entries.insert(
                    hash,
                    Entry {
                        version,
                        live: true,
                    },
                );
            }
        }
        drop(rtxn);
        let records: usize = index.values().map(HashMap::len).sum();
        let version = match state {
            None if records > 0 => {
                return Err(StoreError::Integrity(format!(
                    "{records} records but no state record: the database was assembled outside the runtime"
                )));
            }
            None if expected > 0 => {
                return Err(StoreError::Rollback {
                    database: 0,
                    expected,
                    counter: self.counter.describe(),
                });
            }
            None => {
                let w = self.db.begin_write().map_err(|e| self.db_err(e))?;
                {
                    let mut meta = w.open_table(META).map_err(|e| self.db_err(e))?;
                    meta.insert(STATE, self.state_record(0, &[0; 32]).as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
                w.commit().map_err(|e| self.db_err(e))?;
                0
            }
            Some(bytes) => {
                if bytes.len() != 72 {
                    return Err(StoreError::Integrity(format!(
                        "the state record is {} bytes, not 72",
                        bytes.len()
                    )));
                }
                let version = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0xff; 8]));
                let claimed: [u8; 32] = bytes[8..40].try_into().unwrap_or([0; 32]);
                hmac::verify(&self.state_key, &self.state_msg(&bytes[..40]), &bytes[40..])
                    .map_err(|_| {
                        StoreError::Integrity(
                            "the state record fails authentication: it was altered, or the database belongs to another store or master key".into(),
                        )
                    })?;
                if !crate::keys::constant_time_eq(&claimed, &set) {
                    return Err(StoreError::Integrity(format!(
                        "the {records} records present do not match the authenticated state at version {version}: records were deleted, replayed or swapped outside the runtime"
                    )));
                }
                version
            }
        };
        if version < expected {
            return Err(StoreError::Rollback {
                database: version,
                expected,
                counter: self.counter.describe(),
            });
        }
        if version > expected {
            // A crash between a commit and its counter advance: the write landed but was never
            // acknowledged. Catch the counter up.
            self.counter.advance(version)?;
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        *known = Known {
            version,
            set,
            index,
        };
        Ok(())
    }

    fn state_msg(&self, version_and_set: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(22 + 16 + 40);
        m.extend_from_slice(b"enclave-os/kv/v1/state");
        m.extend_from_slice(&self.id.0);
        m.extend_from_slice(version_and_set);
        m
    }

    fn keys_for(&self, ns: &str) -> Result<Arc<NsKeys>, StoreError> {
        check_namespace(ns)?;
        if let Some(k) = self
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
        {
            return Ok(k.clone());
        }
        let k = Arc::new(NsKeys::new(&self.master, ns)?);
        self.namespaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns.to_string(), k.clone());
        Ok(k)
    }

    /// Apply `ops` to namespace `ns` in one transaction: all or none. Returns the store's new
    /// version once the transaction is durable and the counter records it.
    pub fn apply(&self, ns: &str, ops: &[Op<'_>]) -> Result<u64, StoreError> {
        let keys = self.keys_for(ns)?;
        for op in ops {
            let (Op::Put(k, _) | Op::Delete(k)) = op;
            if k.is_empty() || k.len() > MAX_KEY {
                return Err(StoreError::Invalid(format!(
                    "a key is 1 to {MAX_KEY} bytes, not {}",
                    k.len()
                )));
            }
            if let Op::Put(_, v) = op
                && v.len() > MAX_VALUE
            {
                return Err(StoreError::Invalid(format!(
                    "a value is at most {MAX_VALUE} bytes, not {}",
                    v.len()
                )));
            }
        }
        let _writer = lock(&self.writer);
        let (version, mut set) = {
            let k = self.known.read().unwrap_or_else(|p| p.into_inner());
            (k.version + 1, k.set)
        };
        let mut changes: Vec<(KeyHash, Entry)> = Vec::with_capacity(ops.len());
        let name = &keys.table;
        let w = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
            let mut t = w.open_table(def).map_err(|e| self.db_err(e))?;
            for op in ops {
                let (Op::Put(key, _) | Op::Delete(key)) = op;
                let hash = keys.hash(key);
                // insert and remove hand back the record they replace: one B-tree walk, and
                // the replaced record leaves the set-MAC.
                match op {
                    Op::Put(key, value) => {
                        let stored = keys.seal(&self.id, ns, &hash, version, key, value)?;
                        xor_into(&mut set, &element(&self.set_key, ns, &hash, &stored));
                        if let Some(old) = t
                            .insert(hash.as_slice(), stored.as_slice())
                            .map_err(|e| self.db_err(e))?
                        {
                            xor_into(&mut set, &element(&self.set_key, ns, &hash, old.value()));
                        }
                        changes.push((
                            hash,
                            Entry {
                                version,
                                live: true,
                            },
                        ));
                    }
                    Op::Delete(_) => {
                        if let Some(old) = t.remove(hash.as_slice()).map_err(|e| self.db_err(e))? {
                            xor_into(&mut set, &element(&self.set_key, ns, &hash, old.value()));
                        }
                        changes.push((
                            hash,
                            Entry {
                                version,
                                live: false,
                            },
                        ));
                    }
                }
            }
            let mut meta = w.open_table(META).map_err(|e| self.db_err(e))?;
            meta.insert(STATE, self.state_record(version, &set).as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        w.commit().map_err(|e| self.db_err(e))?;
        {
            let mut k = self.known.write().unwrap_or_else(|p| p.into_inner());
            k.version = version;
            k.set = set;
            let entries = k.index.entry(ns.to_string()).or_default();
            for (hash, entry) in changes {
                entries.insert(hash, entry);
            }
        }
        // Only now is the write protected against rollback; only now is it acknowledged.
        self.counter.advance(version)?;
        Ok(version)
    }

    /// Set `key` in `ns` to `value`.
    pub fn put(&self, ns: &str, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
        self.apply(ns, &[Op::Put(key, value)])
    }

    /// Remove `key` from `ns`.
    pub fn delete(&self, ns: &str, key: &[u8]) -> Result<u64, StoreError> {
        self.apply(ns, &[Op::Delete(key)])
    }

    /// The value of `key` in `ns`, checked: it must decrypt under this key, namespace and store,
    /// and be the newest version written.
    pub fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let keys = self.keys_for(ns)?;
        let hash = keys.hash(key);
        match self.try_get(&keys, ns, &hash, key)? {
            Ok(v) => Ok(v),
            // A write may have committed between reading the index and the database: check
            // again with writes held off. What still disagrees is real.
            Err(_) => {
                let _writer = lock(&self.writer);
                self.try_get(&keys, ns, &hash, key)?
                    .map_err(|reason| StoreError::Record {
                        namespace: ns.to_string(),
                        reason,
                    })
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_get(
        &self,
        keys: &NsKeys,
        ns: &str,
        hash: &KeyHash,
        key: &[u8],
    ) -> Result<Result<Option<Zeroizing<Vec<u8>>>, String>, StoreError> {
        let expected = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .index
            .get(ns)
            .and_then(|m| m.get(hash).copied());
        let rtxn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&keys.table);
        let table = match rtxn.open_table(def) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.db_err(e)),
        };
        let stored = match &table {
            Some(t) => t.get(hash.as_slice()).map_err(|e| self.db_err(e))?,
            None => None,
        };
        let Some(stored) = stored else {
            return Ok(match expected {
                Some(e) if e.live => Err(format!(
                    "the record written at version {} is missing: it was deleted outside the runtime",
                    e.version
                )),
                _ => Ok(None),
            });
        };
        let opened = match keys.open(&self.id, ns, hash, stored.value()) {
            Ok(o) => o,
            Err(reason) => return Ok(Err(reason)),
        };
        if opened.key != key {
            return Ok(Err("the record decrypts to another key".into()));
        }
        Ok(match expected {
            None => Err(format!(
                "a record at version {} exists that the runtime never wrote: replayed from another copy",
                opened.version
            )),
            Some(e) if opened.version < e.version || (!e.live && opened.version == e.version) => {
                Err(format!(
                    "replayed: the record is from version {} but version {} was written since",
                    opened.version, e.version
                ))
            }
            Some(_) => Ok(Some(opened.value)),
        })
    }

    /// The keys present in `ns`, each checked like a read.
    pub fn keys(&self, ns: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let nk = self.keys_for(ns)?;
        let _writer = lock(&self.writer);
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let index = known.index.get(ns);
        let rtxn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&nk.table);
        let t = match rtxn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.db_err(e)),
        };
        let record_err = |reason: String| StoreError::Record {
            namespace: ns.to_string(),
            reason,
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let hash: KeyHash = k
                .value()
                .try_into()
                .map_err(|_| record_err("a key that is not a keyed hash".into()))?;
            let opened = nk
                .open(&self.id, ns, &hash, v.value())
                .map_err(record_err)?;
            match index.and_then(|m| m.get(&hash)) {
                Some(e) if e.live && e.version == opened.version => out.push(opened.key),
                _ => {
                    return Err(record_err(format!(
                        "a record at version {} that is not the newest written: replayed",
                        opened.version
                    )));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The store's version, live records and namespaces.
    pub fn stats(&self) -> Stats {
        let k = self.known.read().unwrap_or_else(|p| p.into_inner());
        let live = |m: &Index| m.values().filter(|e| e.live).count() as u64;
        Stats {
            version: k.version,
            records: k.index.values().map(live).sum(),
            namespaces: k.index.values().filter(|m| live(m) > 0).count(),
        }
    }

    /// The store's id.
    pub fn id(&self) -> StoreId {
        self.id
    }

    /// The counter in use, described.
    pub fn counter(&self) -> String {
        self.counter.describe()
    }
}
