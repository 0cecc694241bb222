//! The store: redb tables of sealed records, the authenticated state record, and the index that
//! checks reads while running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use zeroize::Zeroizing;

use crate::StoreError;
use crate::counter::{Counter, StateDigest};
use crate::keys::{MasterKey, StoreId, constant_time_eq};
use crate::record::{KeyHash, NsKeys, version_of};
use crate::state::{SetHash, State, StateKeys, add, same, sub, xor};

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

/// What the running store knows that the disk must agree with: only acknowledged writes.
struct Known {
    version: u64,
    set: SetHash,
    index: HashMap<String, Index>,
}

/// A write waiting for the group being committed to finish, with its ops copied.
struct Queued {
    ticket: u64,
    ns: String,
    keys: Arc<NsKeys>,
    ops: Vec<OwnedOp>,
}

/// An [`Op`] that owns its bytes; the value is a secret, so it is wiped when dropped.
enum OwnedOp {
    Put(Vec<u8>, Zeroizing<Vec<u8>>),
    Delete(Vec<u8>),
}

impl From<&Op<'_>> for OwnedOp {
    fn from(op: &Op<'_>) -> Self {
        match *op {
            Op::Put(k, v) => Self::Put(k.to_vec(), Zeroizing::new(v.to_vec())),
            Op::Delete(k) => Self::Delete(k.to_vec()),
        }
    }
}

impl OwnedOp {
    fn borrow(&self) -> Op<'_> {
        match self {
            Self::Put(k, v) => Op::Put(k, v),
            Self::Delete(k) => Op::Delete(k),
        }
    }
}

/// One writer's share of a group: its namespace and its ops, all or none.
struct Part<'a> {
    ns: &'a str,
    keys: &'a NsKeys,
    ops: &'a [Op<'a>],
}

/// The writers waiting to be committed, and the results of those that were.
#[derive(Default)]
struct Queue {
    /// Whether a writer is committing a group now.
    leading: bool,
    /// Writers waiting on `queue_changed`: a lone writer wakes nobody (no futex call).
    waiting: usize,
    next_ticket: u64,
    pending: Vec<Queued>,
    done: HashMap<u64, Result<u64, StoreError>>,
}

/// The leading writer's duty to hand on: results filed, the lead given up, the queue woken.
struct Leading<'s> {
    store: &'s Store,
    finished: bool,
}

impl<'s> Leading<'s> {
    fn new(store: &'s Store) -> Self {
        Self {
            store,
            finished: false,
        }
    }

    fn finish(&mut self, tickets: &[u64], result: &Result<u64, StoreError>) {
        let mut q = lock(&self.store.queue);
        for t in tickets {
            q.done.insert(*t, result.clone());
        }
        q.leading = false;
        let wake = q.waiting > 0;
        drop(q);
        if wake {
            self.store.queue_changed.notify_all();
        }
        self.finished = true;
    }
}

impl Drop for Leading<'_> {
    /// A panic while leading: whether the group reached the database is unknown here, so the
    /// store stops (fail closed) and the queue is woken; each waiter then finds it stopped.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = self.store.stopped.set(
            "a write failed unexpectedly while its group was committed; it was not acknowledged"
                .into(),
        );
        lock(&self.store.queue).leading = false;
        self.store.queue_changed.notify_all();
    }
}

type RecordTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A read transaction shared by reads until the next commit: beginning one and opening a table
/// in it costs about as much as the lookup itself.
struct Snapshot {
    txn: redb::ReadTransaction,
    /// The namespace tables opened in it so far; `None` for one that does not exist in it.
    tables: RwLock<HashMap<String, Option<RecordTable>>>,
}

/// The shared read transaction, if a read began one since the last commit, and how many commits
/// have retired one.
#[derive(Default)]
struct Shared {
    generation: u64,
    current: Option<Snapshot>,
}

impl Snapshot {
    /// `f` on the table `name` of this snapshot, opened on first use.
    fn with_table<R>(
        &self,
        name: &str,
        f: impl FnOnce(Option<&RecordTable>) -> R,
    ) -> Result<R, redb::TableError> {
        if let Some(t) = self
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(f(t.as_ref()));
        }
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        let opened = match self.txn.open_table(def) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e),
        };
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        Ok(f(tables.entry(name.to_string()).or_insert(opened).as_ref()))
    }
}

/// A sealed key-value store. Cheap to share behind an `Arc`.
///
/// Writes are grouped: a writer that finds none in progress commits its own ops at once; writers
/// arriving while a transaction is being committed queue, and when it is done one of them
/// commits everything queued as one transaction, at one version, with one counter advance, and
/// answers them all. So N concurrent writers pay about two syncs between them rather than two
/// each, and a lone writer pays what it did before grouping. Groups are serialized across
/// commit and counter advance exactly as single writes were, so the database is never more than
/// one transaction ahead of the counter.
pub struct Store {
    /// The read transaction reads share (see `try_get`). Declared before `db` so it is dropped
    /// first, and the database closes with no reader left (a clean close).
    snapshot: RwLock<Shared>,
    db: Database,
    path: PathBuf,
    id: StoreId,
    master: MasterKey,
    state: StateKeys,
    namespaces: RwLock<HashMap<String, Arc<NsKeys>>>,
    /// Held across a group's commit and its counter advance, and by reads that must see the
    /// database and `known` agree.
    writer: Mutex<()>,
    /// Writers waiting for the group in progress, and the one leading.
    queue: Mutex<Queue>,
    queue_changed: Condvar,

    known: RwLock<Known>,
    counter: Box<dyn Counter>,
    /// Set when a write committed but its counter advance failed: from then on the store serves
    /// nothing, since the database holds a write the counter does not protect (see `apply`).
    stopped: OnceLock<String>,
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

fn db_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// What a database proves about itself, before any counter is asked.
pub(crate) struct Verified {
    pub version: u64,
    /// SHA-256 of the state record as stored (`None` before the first one is written).
    pub state_digest: Option<StateDigest>,
    set: SetHash,
    index: HashMap<String, Index>,
    form: Form,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// No state record and no records: a database just created.
    Empty,
    /// The current state record.
    Current,
    /// The first format's state record, checked: to be migrated.
    Legacy,
}

/// Check every record of `db` against its authenticated state record.
pub(crate) fn verify_database(
    db: &Database,
    path: &Path,
    id: &StoreId,
    keys: &StateKeys,
) -> Result<Verified, StoreError> {
    let err = |e: &dyn std::fmt::Display| db_err(path, e);
    let rtxn = db.begin_read().map_err(|e| err(&e))?;
    let mut state_digest = None;
    let state = match rtxn.open_table(META) {
        Ok(t) => t
            .get(STATE)
            .map_err(|e| err(&e))?
            .map(|v| {
                state_digest = Some(digest(v.value()));
                keys.open(id, v.value())
            })
            .transpose()?,
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(err(&e)),
    };
    let legacy = matches!(state, Some(State::Legacy { .. }));
    let mut set = Zeroizing::new([0u8; 32]);
    let mut legacy_set = [0u8; 32];
    let mut index: HashMap<String, Index> = HashMap::new();
    for handle in rtxn.list_tables().map_err(|e| err(&e))? {
        let name = handle.name().to_string();
        let Some(ns) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let t = rtxn.open_table(def).map_err(|e| err(&e))?;
        let entries = index.entry(ns.to_string()).or_default();
        for row in t.iter().map_err(|e| err(&e))? {
            let (k, v) = row.map_err(|e| err(&e))?;
            let hash: KeyHash = k.value().try_into().map_err(|_| {
                StoreError::Integrity(format!(
                    "namespace '{ns}' holds a key that is not a 32-byte keyed hash"
                ))
            })?;
            let stored = v.value();
            add(&mut set, &keys.element(ns, &hash, stored));
            if legacy {
                xor(&mut legacy_set, &keys.legacy_element(ns, &hash, stored));
            }
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
    let mismatch = |version: u64| {
        StoreError::Integrity(format!(
            "the {records} records present do not match the authenticated state at version {version}: records were deleted, replayed or swapped outside the runtime"
        ))
    };
    let (version, form) = match state {
        None if records > 0 => {
            return Err(StoreError::Integrity(format!(
                "{records} records but no state record: the database was assembled outside the runtime"
            )));
        }
        None => (0, Form::Empty),
        Some(State::Current {
            version,
            set: claimed,
        }) => {
            if !same(&claimed, &set) {
                return Err(mismatch(version));
            }
            (version, Form::Current)
        }
        Some(State::Legacy {
            version,
            set: claimed,
        }) => {
            if !same(&claimed, &legacy_set) {
                return Err(mismatch(version));
            }
            (version, Form::Legacy)
        }
    };
    Ok(Verified {
        version,
        state_digest,
        set,
        index,
        form,
    })
}

/// Which state a state record is: what counters that keep a digest record beside the version.
pub(crate) fn digest(state_record: &[u8]) -> StateDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, state_record).as_ref());
    out
}

impl Store {
    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        db_err(&self.path, e)
    }

    /// Open the store at `path`, creating it when there is none and `counter` agrees nothing was
    /// ever written. Verifies the whole database against its authenticated state and the
    /// counter before returning, and refuses:
    ///
    /// - records deleted, replayed or swapped while the store was closed (the state record's
    ///   commitment does not match);
    /// - a database older than the counter (a rollback);
    /// - a database more than one transaction ahead of the counter: transactions (one write, or
    ///   one group of concurrent writes) are serialized across commit and counter advance, and
    ///   each write is acknowledged only after its transaction's advance, so a crash leaves a
    ///   gap of at most one,
    ///   and a larger one means the counter was reset or replaced (a witness answering 0 for a
    ///   store it never saw is caught here too);
    /// - a database beside a counter that does not exist: a new store creates its counter
    ///   before its database, so the counter was removed (the operator may re-create it with
    ///   [`crate::reset_counter`]).
    ///
    /// A gap of exactly one is a transaction committed but never acknowledged (a crash, or a failed
    /// counter advance): it is kept and the counter catches up. A store in the first format
    /// (clear XOR set-MAC) is checked under that format, then moved to the current one by a
    /// write of its own, which the counter records: the old state records are then behind the
    /// counter and refused as rollbacks.
    pub fn open(
        path: &Path,
        master: MasterKey,
        id: StoreId,
        counter: Box<dyn Counter>,
    ) -> Result<Self, StoreError> {
        let recorded_state = counter.read_recorded()?;
        let recorded = recorded_state.map(|r| r.version);
        let existed = path.exists();
        if !existed {
            match recorded {
                Some(expected) if expected > 0 => {
                    return Err(StoreError::Missing {
                        path: path.display().to_string(),
                        expected,
                        counter: counter.describe(),
                    });
                }
                Some(_) => {}
                // The counter first, so that a database is never seen without one.
                None => counter.advance(0)?,
            }
        }
        let db = Database::create(path).map_err(|e| db_err(path, e))?;
        let state = StateKeys::new(&master)?;
        let verified = verify_database(&db, path, &id, &state)?;
        let version = verified.version;
        let recorded = match recorded {
            Some(r) => r,
            None if !existed => 0,
            None => {
                return Err(StoreError::CounterMissing {
                    path: path.display().to_string(),
                    database: version,
                    counter: counter.describe(),
                });
            }
        };
        if version < recorded {
            return Err(StoreError::Rollback {
                database: version,
                expected: recorded,
                counter: counter.describe(),
            });
        }
        if version - recorded > 1 {
            return Err(StoreError::CounterGap {
                database: version,
                recorded,
                counter: counter.describe(),
            });
        }
        // At the counter's own version the database must also be the state the counter saw:
        // a version alone cannot tell an acknowledged write from one whose advance the host
        // made fail and whose database it kept aside.
        if version == recorded
            && let (Some(want), Some(have)) = (
                recorded_state.and_then(|r| r.state),
                verified.state_digest.as_ref(),
            )
            && !constant_time_eq(&want, have)
        {
            return Err(StoreError::Fork {
                version,
                counter: counter.describe(),
            });
        }
        let state_digest = verified.state_digest;
        let form = verified.form;
        let store = Self {
            db,
            path: path.to_path_buf(),
            id,
            state,
            master,
            namespaces: RwLock::new(HashMap::new()),
            writer: Mutex::new(()),
            queue: Mutex::new(Queue::default()),
            queue_changed: Condvar::new(),
            snapshot: RwLock::new(Shared::default()),
            known: RwLock::new(Known {
                version,
                set: verified.set,
                index: verified.index,
            }),
            counter,
            stopped: OnceLock::new(),
        };
        if version > recorded {
            // A write committed but never acknowledged: a crash between its commit and its
            // counter advance, or an advance that failed. Keeping it is what a crash one
            // instant later would have done; the counter catches up.
            match &state_digest {
                Some(d) => store.counter.advance_recorded(version, d)?,
                None => store.counter.advance(version)?,
            }
        }
        match form {
            Form::Current => {}
            Form::Empty => {
                store.write_state(0)?;
            }
            Form::Legacy => {
                // The first format's state records stay valid under the old keys; moving past
                // their versions, with the counter, is what retires them.
                let next = version + 1;
                let written = store.write_state(next)?;
                store.counter.advance_recorded(next, &written)?;
                store
                    .known
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .version = next;
            }
        }
        Ok(store)
    }

    /// Write a state record for `version` over the records present, in a transaction of its own.
    /// The record's digest is returned, for the counter.
    fn write_state(&self, version: u64) -> Result<StateDigest, StoreError> {
        let record = {
            let k = self.known.read().unwrap_or_else(|p| p.into_inner());
            self.state.seal(&self.id, version, &k.set)?
        };
        let w = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut meta = w.open_table(META).map_err(|e| self.db_err(e))?;
            meta.insert(STATE, record.as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        w.commit().map_err(|e| self.db_err(e))?;
        Ok(digest(&record))
    }

    /// Fail closed once a write could not be made rollback-safe.
    fn check_serving(&self) -> Result<(), StoreError> {
        match self.stopped.get() {
            Some(reason) => Err(StoreError::Stopped(reason.clone())),
            None => Ok(()),
        }
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

    /// Apply `ops` to namespace `ns` atomically: all or none. Returns the store's new version
    /// once the transaction holding them is durable and the counter records it.
    ///
    /// Concurrent callers are grouped (see [`Store`]): several `apply` calls may share one
    /// transaction, and then return the same version. Each call's ops are still all or none:
    /// a transaction is committed whole or not at all, and nobody's call returns before the
    /// transaction holding its ops is committed and the counter records its version.
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
        let mut q = lock(&self.queue);
        if !q.leading && q.pending.is_empty() {
            // Nobody is writing: lead at once, with the caller's ops as they are (no copy).
            q.leading = true;
            drop(q);
            let mut guard = Leading::new(self);
            let own = Part {
                ns,
                keys: &keys,
                ops,
            };
            let result = self.commit_group(Some(own), &[]);
            guard.finish(&[], &result);
            return result;
        }
        // A group is being committed: queue behind it. The ops are copied, since whichever
        // writer leads the next group applies them.
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.pending.push(Queued {
            ticket,
            ns: ns.to_string(),
            keys: keys.clone(),
            ops: ops.iter().map(OwnedOp::from).collect(),
        });
        loop {
            if let Some(result) = q.done.remove(&ticket) {
                return result;
            }
            if !q.leading {
                break;
            }
            q.waiting += 1;
            q = self
                .queue_changed
                .wait(q)
                .unwrap_or_else(|p| p.into_inner());
            q.waiting -= 1;
        }
        // The previous group is done and ours is not: lead the group of everything queued,
        // ours included.
        q.leading = true;
        let group = std::mem::take(&mut q.pending);
        drop(q);
        let mut guard = Leading::new(self);
        let ops: Vec<Vec<Op<'_>>> = group
            .iter()
            .map(|g| g.ops.iter().map(OwnedOp::borrow).collect())
            .collect();
        let parts: Vec<Part<'_>> = group
            .iter()
            .zip(&ops)
            .map(|(g, ops)| Part {
                ns: &g.ns,
                keys: &g.keys,
                ops,
            })
            .collect();
        let result = self.commit_group(None, &parts);
        let tickets: Vec<u64> = group.iter().map(|g| g.ticket).collect();
        guard.finish(&tickets, &result);
        // Our own result was filed with the others'.
        lock(&self.queue).done.remove(&ticket).unwrap_or(result)
    }

    /// Commit `own` and `others` as one transaction at the next version, advance the counter
    /// to it, and only then publish it to the index. Called by the one leading writer.
    fn commit_group(&self, own: Option<Part<'_>>, others: &[Part<'_>]) -> Result<u64, StoreError> {
        let _writer = lock(&self.writer);
        self.check_serving()?;
        let (version, mut set) = {
            let k = self.known.read().unwrap_or_else(|p| p.into_inner());
            (k.version + 1, k.set.clone())
        };
        let parts = || own.iter().chain(others);
        let mut changes: Vec<(usize, KeyHash, Entry)> = Vec::new();
        let written: StateDigest;
        let w = self.db.begin_write().map_err(|e| self.db_err(e))?;
        for (n, part) in parts().enumerate() {
            let (ns, keys) = (part.ns, part.keys);
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&keys.table);
            let mut t = w.open_table(def).map_err(|e| self.db_err(e))?;
            for op in part.ops {
                let (Op::Put(key, _) | Op::Delete(key)) = op;
                let hash = keys.hash(key);
                // insert and remove hand back the record they replace (also one written
                // earlier in this group): one B-tree walk, and the replaced record leaves the
                // set commitment.
                match op {
                    Op::Put(key, value) => {
                        let stored = keys.seal(&self.id, ns, &hash, version, key, value)?;
                        add(&mut set, &self.state.element(ns, &hash, &stored));
                        if let Some(old) = t
                            .insert(hash.as_slice(), stored.as_slice())
                            .map_err(|e| self.db_err(e))?
                        {
                            sub(&mut set, &self.state.element(ns, &hash, old.value()));
                        }
                        changes.push((
                            n,
                            hash,
                            Entry {
                                version,
                                live: true,
                            },
                        ));
                    }
                    Op::Delete(_) => {
                        if let Some(old) = t.remove(hash.as_slice()).map_err(|e| self.db_err(e))? {
                            sub(&mut set, &self.state.element(ns, &hash, old.value()));
                        }
                        changes.push((
                            n,
                            hash,
                            Entry {
                                version,
                                live: false,
                            },
                        ));
                    }
                }
            }
        }
        {
            let mut meta = w.open_table(META).map_err(|e| self.db_err(e))?;
            let record = self.state.seal(&self.id, version, &set)?;
            written = digest(&record);
            meta.insert(STATE, record.as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        w.commit().map_err(|e| self.db_err(e))?;
        // Reads must see the database as committed, as a fresh read transaction would.
        self.drop_snapshot();
        // The group is in the database but not yet protected against rollback: until the
        // counter records it, it is not published to the index, so no read accepts it.
        if let Err(e) = self.counter.advance_recorded(version, &written) {
            // The database now holds writes that are neither acknowledged nor protected, and
            // nothing here can take them back out. Serve nothing more: at the next start the
            // database is one transaction ahead of the counter, which is accepted as a crash
            // would be.
            let writes = parts().count();
            let grouped = if writes > 1 {
                format!(" (with the {} other writes grouped into it)", writes - 1)
            } else {
                String::new()
            };
            let reason = format!(
                "write version {version} committed to the database but the counter could not record it ({e}); it was not acknowledged and is not served{grouped}"
            );
            let _ = self.stopped.set(reason.clone());
            return Err(StoreError::Stopped(reason));
        }
        let names: Vec<&str> = parts().map(|p| p.ns).collect();
        {
            let mut k = self.known.write().unwrap_or_else(|p| p.into_inner());
            k.version = version;
            k.set = set;
            for (n, hash, entry) in changes {
                let Some(ns) = names.get(n) else { continue };
                let entries = match k.index.get_mut(*ns) {
                    Some(e) => e,
                    None => k.index.entry((*ns).to_string()).or_default(),
                };
                entries.insert(hash, entry);
            }
        }
        Ok(version)
    }

    /// Retire the shared read transaction, after a commit: the next read begins a new one. A
    /// writer alone so keeps no reader alive, and redb frees pages as it would without us.
    fn drop_snapshot(&self) {
        let mut shared = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        shared.generation += 1;
        shared.current = None;
    }

    /// How many writes are queued behind the group being committed (for tests).
    #[doc(hidden)]
    pub fn queued(&self) -> usize {
        lock(&self.queue).pending.len()
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
        self.check_serving()?;
        let keys = self.keys_for(ns)?;
        let hash = keys.hash(key);
        match self.try_get(&keys, ns, &hash, key)? {
            Ok(v) => Ok(v),
            // A write may have committed between reading the index and the database: check
            // again with writes held off. What still disagrees is real.
            Err(_) => {
                let _writer = lock(&self.writer);
                self.check_serving()?;
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
        let check = |table: Option<&RecordTable>| {
            let stored = match table {
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
            let (version, value) = match keys.open_key(&self.id, ns, hash, stored.value(), key) {
                Ok(o) => o,
                Err(reason) => return Ok(Err(reason)),
            };
            Ok(match expected {
                None => Err(format!(
                    "a record at version {version} exists that the runtime never wrote: replayed from another copy"
                )),
                Some(e) if version < e.version || (!e.live && version == e.version) => {
                    Err(format!(
                        "replayed: the record is from version {version} but version {} was written since",
                        e.version
                    ))
                }
                // A write committed but not (or not yet) acknowledged: never served.
                Some(e) if version > e.version => Err(format!(
                    "the record is from version {version}, a write not acknowledged (the newest acknowledged for this key is version {})",
                    e.version
                )),
                Some(_) => Ok(Some(value)),
            })
        };
        // Reads share one read transaction between two commits. It shows what a read
        // transaction begun now would: every commit retires it (`drop_snapshot`), and one begun
        // before a commit is never put in place after it, since the commit's retirement moves
        // the generation on. The index was read first, so it is never newer than the table.
        let generation = {
            let shared = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = shared.current.as_ref() {
                return s
                    .with_table(&keys.table, check)
                    .map_err(|e| self.db_err(e))?;
            }
            shared.generation
        };
        let fresh = Snapshot {
            txn: self.db.begin_read().map_err(|e| self.db_err(e))?,
            tables: RwLock::new(HashMap::new()),
        };
        let result = fresh
            .with_table(&keys.table, check)
            .map_err(|e| self.db_err(e))?;
        let mut shared = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        if shared.generation == generation && shared.current.is_none() {
            shared.current = Some(fresh);
        }
        result
    }

    /// The keys present in `ns`, each checked like a read.
    pub fn keys(&self, ns: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let nk = self.keys_for(ns)?;
        let _writer = lock(&self.writer);
        self.check_serving()?;
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

// The runtime shares one store between threads; the shared read transaction must not undo that.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Store>();
};
