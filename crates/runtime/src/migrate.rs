//! Moving measurement-sealed state to a new build.
//!
//! Under the `measurement` policy only this exact build can unseal the CA key and the store's
//! master key: a new binary cannot, by design. The path across is explicit and needs both
//! builds on the same platform:
//!
//! 1. The new build tells its measurement: `enclave-os migrate measurement enclave.toml`.
//! 2. The operator, having decided to trust that build, runs the **old** build:
//!    `enclave-os migrate export enclave.toml --to <measurement>`. It unseals the secrets and
//!    seals them again, under the `signer` policy, into `<state_dir>/migration.sealed`, with
//!    the target measurement in the sealing context (the AAD).
//! 3. The new build runs `enclave-os migrate import enclave.toml`. It can open the envelope only
//!    if it is from the same signer *and* its own measurement is the one authorized, since it
//!    derives the context from its own measurement. It then seals the secrets to itself and
//!    removes the envelope.
//!
//! The store's data is not touched: it is encrypted under keys derived from the master key,
//! which moves unchanged, and the rollback counter goes on from where it was.

use std::path::{Path, PathBuf};

use enclave_config::LoadedConfig;
use enclave_tee::{SealPolicy, Tee};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::provision::{CONTEXT, MASTER_CONTEXT, write_private};
use crate::{Overrides, RuntimeError};

const ENVELOPE: &str = "migration.sealed";

fn context(target: &[u8]) -> String {
    format!("runtime/migration/v1/to/{}", hex::encode(target))
}

fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Migration(e.to_string())
}

/// What moves: the two secrets, and whom they were for.
#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    to: String,
    ca_key_pem: String,
    master: String,
}

struct Opened {
    tee: Box<dyn Tee>,
    state_dir: PathBuf,
}

fn open(config: &LoadedConfig, overrides: &Overrides) -> Result<Opened, RuntimeError> {
    let c = &config.config;
    if c.seal_policy != "measurement" {
        return Err(err(format!(
            "seal_policy is '{}': a new build of the same signer unseals the state directly, no migration is needed",
            c.seal_policy
        )));
    }
    let state_dir = overrides
        .state_dir
        .clone()
        .unwrap_or_else(|| config.resolve(&c.state_dir));
    let tee = enclave_tee::hw::detect::open(&c.tee, &state_dir.join("sim"))?;
    Ok(Opened { tee, state_dir })
}

/// This build's measurement on the configured TEE: what an export is addressed to.
pub fn measurement(config: &LoadedConfig, overrides: &Overrides) -> Result<Vec<u8>, RuntimeError> {
    Ok(open(config, overrides)?.tee.measurement())
}

fn read(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// Run by the old build: seal its secrets for the build whose measurement is `to`.
pub fn export(
    config: &LoadedConfig,
    overrides: &Overrides,
    to: &[u8],
) -> Result<PathBuf, RuntimeError> {
    let o = open(config, overrides)?;
    let own = o.tee.measurement();
    if to.len() != own.len() {
        return Err(err(format!(
            "a {} measurement is {} bytes, not {}",
            o.tee.name(),
            own.len(),
            to.len()
        )));
    }
    if to == own.as_slice() {
        return Err(err(
            "that is this build's own measurement: nothing to migrate",
        ));
    }
    let key = o.tee.sealing_key(SealPolicy::Measurement)?;
    let ca_path = o.state_dir.join("ca/intermediary.key.sealed");
    let master_path = o.state_dir.join("store/master.key.sealed");
    let ca_key = key
        .unseal(CONTEXT, &read(&ca_path)?)
        .map_err(|e| err(format!("{}: {e}", ca_path.display())))?;
    let master = key
        .unseal(MASTER_CONTEXT, &read(&master_path)?)
        .map_err(|e| err(format!("{}: {e}", master_path.display())))?;
    let envelope = Zeroizing::new(
        serde_json::to_vec(&Envelope {
            from: hex::encode(&own),
            to: hex::encode(to),
            ca_key_pem: String::from_utf8(ca_key.to_vec())
                .map_err(|_| err("the unsealed CA key is not PEM"))?,
            master: hex::encode(&*master),
        })
        .map_err(err)?,
    );
    let blob = o
        .tee
        .sealing_key(SealPolicy::Signer)?
        .seal(&context(to), &envelope)
        .map_err(err)?;
    let out = o.state_dir.join(ENVELOPE);
    write_private(&out, &blob)?;
    tracing::info!(to = %hex::encode(to), envelope = %out.display(), "state exported for the new build");
    Ok(out)
}

/// Run by the new build: take the secrets an export addressed to it, and seal them to itself.
pub fn import(config: &LoadedConfig, overrides: &Overrides) -> Result<(), RuntimeError> {
    let o = open(config, overrides)?;
    let own = o.tee.measurement();
    let path = o.state_dir.join(ENVELOPE);
    let blob = read(&path)?;
    let plain = Zeroizing::new(
        o.tee
            .sealing_key(SealPolicy::Signer)?
            .unseal(&context(&own), &blob)
            .map_err(|e| {
                err(format!(
                    "{}: {e}; this build's measurement is {}: was the export addressed to it?",
                    path.display(),
                    hex::encode(&own)
                ))
            })?
            .to_vec(),
    );
    let envelope: Envelope = serde_json::from_slice(&plain).map_err(err)?;
    let master = Zeroizing::new(hex::decode(&envelope.master).map_err(err)?);
    let key = o.tee.sealing_key(SealPolicy::Measurement)?;
    let ca_blob = key
        .seal(CONTEXT, envelope.ca_key_pem.as_bytes())
        .map_err(err)?;
    let master_blob = key.seal(MASTER_CONTEXT, &master).map_err(err)?;
    write_private(&o.state_dir.join("ca/intermediary.key.sealed"), &ca_blob)?;
    write_private(&o.state_dir.join("store/master.key.sealed"), &master_blob)?;
    std::fs::remove_file(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    tracing::info!(from = %envelope.from, to = %envelope.to, "state imported and sealed to this build");
    Ok(())
}
