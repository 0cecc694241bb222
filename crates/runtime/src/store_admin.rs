//! Operator commands on the sealed store (`enclave-os store ...`), run while the runtime is
//! stopped: redb locks the database while the runtime has it open, so they fail rather than race.

use std::path::PathBuf;

use enclave_config::LoadedConfig;
use enclave_config::file::CounterKind;
use enclave_store::FileCounter;
pub use enclave_store::{CounterReset, PreviousCounter};

use crate::{Overrides, RuntimeError, provision};

/// What `reset_counter` did, and where.
#[derive(Debug)]
pub struct Reset {
    /// The database whose version the counter now holds.
    pub database: PathBuf,
    /// The counter file re-created.
    pub counter: PathBuf,
    /// The version, and what the counter said before.
    pub done: CounterReset,
}

fn store_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Store(e.to_string())
}

/// Re-create the file counter at the version the database authenticates, after the store
/// refused to start because the counter was missing, unreadable, or more than one write behind.
///
/// The master key is unsealed as `run` does (never generated here); the database is checked as
/// at open except against the counter, which is what this gives up: a rollback that happened
/// before the reset is accepted. Refused for a witness counter, which only moves forward and
/// lives on the witness, and when the counter is readable and ahead of the database.
pub fn reset_counter(config: &LoadedConfig, overrides: &Overrides) -> Result<Reset, RuntimeError> {
    let c = &config.config;
    // Only a file counter is re-created; any other kind is refused, whatever it is.
    if c.store.counter != CounterKind::File {
        return Err(store_err(
            "store.counter is \"witness\": that counter lives on the witness and only moves forward; this command re-creates a file counter only",
        ));
    }
    let state_dir = overrides
        .state_dir
        .clone()
        .unwrap_or_else(|| config.resolve(&c.state_dir));
    let store_dir = state_dir.join("store");
    let database = store_dir.join("kv.redb");
    let counter_path = store_dir.join("kv.counter");
    if !database.exists() {
        return Err(store_err(format!(
            "there is no database at {}: nothing to re-create a counter for (check --state-dir)",
            database.display()
        )));
    }
    let tee = enclave_tee::hw::detect::open(c.tee.as_str(), &state_dir.join("sim"))?;
    let policy = crate::seal_policy(c.seal_policy);
    let (master, id, unsaved) = provision::master_key(&state_dir, tee.as_ref(), policy)?;
    if unsaved.is_some() {
        // Not reached while the database exists (master_key refuses that), and never worth
        // a new key: the command only repairs an existing store.
        return Err(store_err(format!(
            "{} holds no sealed master key: there is no store to repair",
            store_dir.display()
        )));
    }
    let counter = FileCounter::new(&counter_path, &master, id).map_err(store_err)?;
    let done = enclave_store::reset_counter(&database, &master, id, &counter).map_err(store_err)?;
    tracing::warn!(
        counter = %counter_path.display(),
        version = done.version,
        previous = ?done.previous,
        "the operator re-created the store's rollback counter at the database's version"
    );
    Ok(Reset {
        database,
        counter: counter_path,
        done,
    })
}
