//! `enclave-os store`: operator commands on the sealed store (see docs/store.md), run while the
//! runtime is stopped.

use std::process::ExitCode;

use clap::Subcommand;
use enclave_config::LoadedConfig;
use enclave_runtime::Overrides;
use enclave_runtime::store_admin::{self, PreviousCounter};
use serde_json::json;

use crate::migrate_cmd::{Common, finish};
use crate::{EXIT_REJECTED, EXIT_USAGE};

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Re-create the rollback counter file (`<state_dir>/store/kv.counter`) at the version the
    /// database authenticates, after the runtime refused to start because the counter was
    /// missing, unreadable or more than one write behind. This gives up rollback detection for
    /// whatever happened before: if an older database was put back, it is accepted from now on.
    /// Never moves a readable counter back.
    ResetCounter(Common),
}

pub(crate) fn run(cmd: StoreCommand) -> ExitCode {
    match cmd {
        StoreCommand::ResetCounter(c) => finish(c.json, reset_counter(&c)),
    }
}

fn reset_counter(c: &Common) -> Result<serde_json::Value, (u8, String)> {
    let config = LoadedConfig::load(&c.config).map_err(|e| (EXIT_USAGE, e.to_string()))?;
    let overrides = Overrides {
        listen: None,
        state_dir: c.state_dir.clone(),
        log_driver: None,
    };
    let r = store_admin::reset_counter(&config, &overrides)
        .map_err(|e| (EXIT_REJECTED, e.to_string()))?;
    let version = r.done.version;
    let (before, previous) = match &r.done.previous {
        PreviousCounter::Missing => ("was missing".to_string(), json!({ "state": "missing" })),
        PreviousCounter::Unreadable(why) => (
            format!("could not be read ({why})"),
            json!({ "state": "unreadable", "reason": why }),
        ),
        PreviousCounter::At(n) => (
            format!("said version {n}"),
            json!({ "state": "at", "version": n }),
        ),
    };
    let message = format!(
        "re-created the rollback counter {counter} at version {version}, the version the database {db} authenticates (its state record and every record checked under the sealed master key). Before, the counter {before}.\n\
         What this gives up: the counter was the only record of the newest version outside the database. If this database is an older copy put back before the counter was lost, that rollback is now accepted. From here on the counter moves forward from version {version} again, and a database older than the newest write is refused again.",
        counter = r.counter.display(),
        db = r.database.display(),
    );
    Ok(json!({
        "reset": true,
        "counter": r.counter.display().to_string(),
        "database": r.database.display().to_string(),
        "version": version,
        "previous": previous,
        "message": message,
    }))
}
