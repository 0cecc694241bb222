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
//! - Every write transaction advances a store-wide version. The database keeps that version with
//!   an XOR set-MAC over all records, itself MACed; opening the store recomputes it, so records
//!   deleted, replayed or swapped while the runtime was down are found at start.
//! - The version is also kept in a [`Counter`] outside the database. A database older than the
//!   counter is a rollback, and the store refuses to open. Whether that helps depends on where the
//!   counter lives: see [`counter`].
//! - While running, each read is checked against an in-memory index of the newest version of
//!   every key, so a record replayed under a running store is refused too.

mod keys;
mod record;
mod store;

pub mod counter;

pub use counter::{Counter, CounterError, FileCounter};
pub use keys::{MasterKey, StoreId};
pub use store::{Op, Stats, Store};

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
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
    /// The database file is gone although writes were acknowledged.
    #[error(
        "the database {path} is missing, but {counter} says {expected} writes were acknowledged; refusing to start empty"
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
