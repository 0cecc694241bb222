//! The Enclave OS sealed key-value store.
//!
//! What it is for: state that survives restarts, stays confidential to the TEE, and that the host
//! (who holds the disk) can neither read, swap, replay, nor roll back without the runtime noticing.
//! It sits on [redb](https://docs.rs/redb), whose transactions make it crash-safe.
//!
//! What it is not: a TEE interface. It takes a 32-byte master key and a store id from its caller
//! (the runtime keeps both sealed to the TEE) and a [`Counter`] that remembers the newest version;
//! it neither seals nor attests.
//!
//! How records are protected (format in `docs/store.md`):
//!
//! - Keys are stored as HMAC-SHA256 under a per-namespace key, so the file shows no key names.
//! - Values are AES-256-GCM under another per-namespace key, with 96-bit nonces drawn by the store.
//!   The AAD binds the store id, the namespace, the keyed hash and the record's version, so a
//!   record moved to another key or namespace fails authentication.
//! - Every write transaction advances a store-wide version. Concurrent writers are grouped into
//!   one transaction (see [`Store`]): a group is one version, one commit, one counter advance.
//!   The database keeps that version in a state record with a keyed multiset hash over all
//!   records, the hash only ever stored encrypted (AES-256-GCM, fresh nonce, AAD binding store
//!   id and version), so the host can neither compute it nor compare two of them. Opening the store recomputes it, so records
//!   deleted, replayed or swapped while the runtime was down are found at start.
//! - The version is also kept in a [`Counter`] outside the database. A database older than the
//!   counter is a rollback; more than one transaction ahead of it, or beside a counter that does
//!   not exist, means the counter was tampered with: the store refuses to open in all three cases.
//!   The operator can re-create a lost file counter with [`reset_counter`], knowingly. Whether
//!   the counter helps at all depends on where it lives: see [`counter`].
//! - A write is acknowledged and readable only once the transaction holding it is committed and
//!   the counter records its version. When the advance fails after the commit, the store stops
//!   serving, no write of that transaction is served, and it stays so until opened again.
//! - While running, each read is checked against an in-memory index of the newest version of
//!   every key, so a record replayed under a running store is refused too.

mod keys;
mod record;
mod reset;
mod state;
mod store;

pub mod counter;

pub use counter::{Counter, CounterError, CounterFault, FileCounter, Recorded, StateDigest};
pub use keys::{MasterKey, StoreId};
pub use reset::{CounterReset, PreviousCounter, reset_counter};
pub use store::{Op, Stats, Store};

use thiserror::Error;

/// Why a store operation failed. `Clone`, since one failed group commit answers every writer in it.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// redb failed.
    #[error("database {path}: {reason}")]
    Database {
        /// The database file.
        path: String,
        /// redb's message.
        reason: String,
    },
    /// The database is older than the counter: an earlier copy was put back.
    #[error(
        "rollback detected: the database is at version {database} but {counter} says version {expected} was written; an older copy of the database was put back. Refusing to serve it"
    )]
    Rollback {
        /// The database's version.
        database: u64,
        /// The counter's version.
        expected: u64,
        /// Which counter.
        counter: String,
    },
    /// The database is further ahead of the counter than a crash can leave it.
    #[error(
        "the database is at version {database} but {counter} says version {recorded}: a crash leaves the database at most one write transaction ahead of its counter, so the counter was reset, replaced or rolled back. Refusing to serve; if you know why, `enclave-os store reset-counter` re-creates it at the database's version"
    )]
    CounterGap {
        /// The database's version.
        database: u64,
        /// The counter's version.
        recorded: u64,
        /// Which counter.
        counter: String,
    },
    /// The database is at the counter's version, but is not the state the counter recorded.
    #[error(
        "the database is at version {version}, as {counter} says, but it is not the state recorded at that version: another copy of the database at the same version (a write the counter never acknowledged, kept aside and put back). Refusing to serve"
    )]
    Fork {
        /// The version both claim.
        version: u64,
        /// Which counter.
        counter: String,
    },
    /// The database exists but its counter does not.
    #[error(
        "the database {path} exists (at version {database}) but {counter} does not: the counter is created before the database, so it was removed, which would hide a rollback. Refusing to serve; if you know why, `enclave-os store reset-counter` re-creates it at the database's version"
    )]
    CounterMissing {
        /// The database file.
        path: String,
        /// The database's version.
        database: u64,
        /// Which counter.
        counter: String,
    },
    /// A write committed but its counter advance failed: the store serves nothing more.
    #[error(
        "the store stopped serving: {0}. Restart to check the database against the counter again"
    )]
    Stopped(String),
    /// The database file is gone although writes were acknowledged.
    #[error(
        "the database {path} is missing, but {counter} says write transactions up to version {expected} were acknowledged; refusing to start empty"
    )]
    Missing {
        /// The database file.
        path: String,
        /// The counter's version.
        expected: u64,
        /// Which counter.
        counter: String,
    },
    /// The database's contents do not match its authenticated state.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// One record failed its checks.
    #[error("record in namespace '{namespace}': {reason}")]
    Record {
        /// The namespace.
        namespace: String,
        /// Why.
        reason: String,
    },
    /// The counter failed.
    #[error("{0}")]
    Counter(#[from] CounterError),
    /// The caller's input is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The system random generator or a key derivation failed.
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}
