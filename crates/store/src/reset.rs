//! The operator's way out when the file counter is gone or unreadable: re-create it at the
//! version the database authenticates. What that gives up is said in [`reset_counter`].

use std::path::Path;

use redb::Database;

use crate::StoreError;
use crate::counter::{Counter, FileCounter};
use crate::keys::{MasterKey, StoreId};
use crate::state::StateKeys;
use crate::store::verify_database;

/// What the counter said before a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviousCounter {
    /// There was no counter file.
    Missing,
    /// The file did not authenticate; why.
    Unreadable(String),
    /// It said this version (at most the database's: a higher one is refused).
    At(u64),
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterReset {
    /// The version the database authenticates, and the counter now says.
    pub version: u64,
    /// What the counter said before.
    pub previous: PreviousCounter,
}

/// Re-create `counter` at the version the database at `path` authenticates.
///
/// The database is checked first, as at open: its state record under the master key and every
/// record against the state record's commitment. Only the comparison with the counter is
/// skipped, which is the point, and which is what this gives up: **if the database was rolled
/// back before the counter went missing, that rollback is accepted from here on.** Refused when
/// the counter is readable and ahead of the database (that is a rollback, and accepting it
/// takes deleting the counter file first, on purpose), and when the database is open (redb
/// locks it: stop the runtime first).
pub fn reset_counter(
    path: &Path,
    master: &MasterKey,
    id: StoreId,
    counter: &FileCounter,
) -> Result<CounterReset, StoreError> {
    if !path.exists() {
        return Err(StoreError::Invalid(format!(
            "there is no database at {}: nothing to re-create a counter for (a new store creates its own)",
            path.display()
        )));
    }
    let db = Database::open(path).map_err(|e| StoreError::Database {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let version = verify_database(&db, path, &id, &StateKeys::new(master)?)?.version;
    drop(db);
    let previous = match counter.read_existing() {
        Ok(None) => PreviousCounter::Missing,
        Ok(Some(n)) => PreviousCounter::At(n),
        Err(e) => PreviousCounter::Unreadable(e.reason),
    };
    if let PreviousCounter::At(n) = previous
        && n > version
    {
        return Err(StoreError::Invalid(format!(
            "{} says version {n} was written, but the database {} is at version {version}: the database was rolled back. Not resetting: that would accept the rollback. If you mean to go back to this database, delete the counter file first",
            counter.describe(),
            path.display()
        )));
    }
    counter.reset(version)?;
    Ok(CounterReset { version, previous })
}
