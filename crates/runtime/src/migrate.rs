//! Moving measurement-sealed state to a new build, only to a build the operator authorized.
//!
//! Under the `measurement` policy only this exact build can unseal the CA key and the store's
//! master key: a new binary cannot, by design. The path across is explicit, needs both builds on
//! the same platform, and needs the operator's signature:
//!
//! 1. The old build tells the store's id and its own security version: `enclave-os migrate source`;
//!    the new build tells its measurement and security version: `enclave-os migrate measurement`.
//! 2. The operator signs an [`Authorization`] naming the store, the target measurement, the
//!    target's security version and an expiry with the root CA key (`enclave-os migrate authorize`).
//! 3. The old build runs `enclave-os migrate export --authorization auth.json`. It checks the
//!    signature against the operator root **pinned in sealed state** when the CA was first
//!    imported (not a file the host can swap), that the authorization names this store and has not
//!    expired, and that the target's security version is not lower than its own. It then seals the
//!    secrets under the `signer` policy into `<state_dir>/migration.sealed`, with the target
//!    measurement in the sealing context (the AAD).
//! 4. The new build runs `enclave-os migrate import`. It opens the envelope only if it is of the
//!    same signer *and* its own measurement is the one authorized, since it derives the context
//!    from its own measurement; it refuses unless its own security version is the authorized one.
//!    It then seals the secrets and the pinned root to itself and removes the envelope.
//!
//! The store's data is not touched: it is encrypted under keys derived from the master key,
//! which moves unchanged, and the rollback counter goes on from where it was.

mod authorization;

pub use authorization::{Authorization, FORMAT, Statement, sign};

use std::path::{Path, PathBuf};

use enclave_config::LoadedConfig;
use enclave_tee::{SealPolicy, Tee};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::provision::{CONTEXT, MASTER_CONTEXT, write_private};
use crate::{Overrides, RuntimeError};

const ENVELOPE: &str = "migration.sealed";
/// The sealed operator root, beside the sealed intermediary key.
const ROOT_PIN: &str = "ca/operator-root.sealed";
/// The pin holds `store id (16) | root certificate (DER)`: bound to one store, so a pin sealed
/// for another store (another state directory of the same build on the same platform, which
/// the host can run with a CA of its own) does not open as this store's.
const ROOT_PIN_CONTEXT: &str = "runtime/migration/operator-root/v2";

// v2: envelopes carry the security versions and the pinned root. Builds that read v1 envelopes
// check neither, so they cannot open these.
fn context(target: &[u8]) -> String {
    format!("runtime/migration/v2/to/{}", hex::encode(target))
}

fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Migration(e.to_string())
}

/// What moves: the two secrets, the root that authorizes the next move, and whom they were for.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    from: String,
    from_svn: u32,
    to: String,
    to_svn: u32,
    ca_key_pem: String,
    master: String,
    operator_root: String,
}

struct Opened {
    tee: Box<dyn Tee>,
    state_dir: PathBuf,
}

impl Opened {
    fn svn(&self) -> Result<u32, RuntimeError> {
        self.tee.security_version().ok_or_else(|| {
            err(format!(
                "{} reports no security version for this build, so a downgrade could not be refused: \
                 migration is not offered there",
                self.tee.name()
            ))
        })
    }

    fn key(&self) -> Result<enclave_tee::SealingKey, RuntimeError> {
        Ok(self.tee.sealing_key(SealPolicy::Measurement)?)
    }

    fn unseal(
        &self,
        key: &enclave_tee::SealingKey,
        rel: &str,
        context: &str,
    ) -> Result<Zeroizing<Vec<u8>>, RuntimeError> {
        let path = self.state_dir.join(rel);
        key.unseal(context, &read(&path)?)
            .map_err(|e| err(format!("{}: {e}", path.display())))
    }

    /// The operator root pinned for this state's store.
    fn pinned_root(&self, key: &enclave_tee::SealingKey) -> Result<Vec<u8>, RuntimeError> {
        let path = self.state_dir.join(ROOT_PIN);
        if !path.exists() {
            return Err(err(format!(
                "{} is missing: no operator root was pinned when this store was created (a root \
                 certificate root.crt.pem beside the intermediary's, or state from before pinning), so \
                 no migration authorization can be checked and none is accepted",
                path.display()
            )));
        }
        let pin = self.unseal(key, ROOT_PIN, ROOT_PIN_CONTEXT)?;
        let store = self.store_id(key)?;
        match pin.split_at_checked(16) {
            Some((pinned_for, root)) if pinned_for == store.as_slice() => Ok(root.to_vec()),
            Some((pinned_for, _)) => Err(err(format!(
                "{} pins the operator root of store {}, not of this store {}: it was put here from \
                 another state directory, and no authorization is checked against it",
                path.display(),
                hex::encode(pinned_for),
                hex::encode(store)
            ))),
            None => Err(err(format!(
                "{} is too short to hold a pin",
                path.display()
            ))),
        }
    }

    fn store_id(&self, key: &enclave_tee::SealingKey) -> Result<[u8; 16], RuntimeError> {
        let plain = self.unseal(key, "store/master.key.sealed", MASTER_CONTEXT)?;
        plain
            .get(32..48)
            .and_then(|id| <[u8; 16]>::try_from(id).ok())
            .ok_or_else(|| err("the unsealed master key holds no store id"))
    }
}

fn open(config: &LoadedConfig, overrides: &Overrides) -> Result<Opened, RuntimeError> {
    let c = &config.config;
    if c.seal_policy != enclave_config::file::SealPolicyChoice::Measurement {
        return Err(err(format!(
            "seal_policy is '{}': a new build of the same signer unseals the state directly, no migration is needed",
            c.seal_policy
        )));
    }
    let state_dir = overrides
        .state_dir
        .clone()
        .unwrap_or_else(|| config.resolve(&c.state_dir));
    let tee = enclave_tee::hw::detect::open(c.tee.as_str(), &state_dir.join("sim"))?;
    Ok(Opened { tee, state_dir })
}

fn read(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// Pin the operator root for migration authorizations of `store`: called once, when the store's
/// master key is generated (and before it is written), never for a store that already exists,
/// so the host cannot have an existing store pinned to a root of its choosing by running it
/// with another CA. `root` is the root certificate beside the intermediary; it must have issued
/// `intermediary_der`, the intermediary the runtime holds (unsealed, and served). It is the root clients pin, so a host that substitutes its own at the
/// first run is seen by every client. Without a usable root nothing is pinned, and the runtime
/// says that migration will be refused; it still runs.
pub fn pin_operator_root(
    state_dir: &Path,
    tee: &dyn Tee,
    policy: SealPolicy,
    root: &Path,
    intermediary_der: &[u8],
    store: &enclave_store::StoreId,
) -> Result<(), RuntimeError> {
    let unpinned = |why: String| {
        tracing::warn!(
            root = %root.display(),
            "no operator root pinned for migration authorizations ({why}): `enclave-os migrate export` will refuse"
        );
        Ok(())
    };
    let Ok(pem) = std::fs::read(root) else {
        return unpinned("no root certificate beside the intermediary's".into());
    };
    let der = match authorization::root_der(&pem) {
        Ok(der) => der,
        Err(e) => return unpinned(e),
    };
    // The intermediary the runtime actually holds and serves: a root file on the host's disk
    // counts only if it issued that one, so the host cannot pin a root of its own by writing
    // certificates into the state directory.
    if let Err(e) = authorization::issued_by(intermediary_der, &der) {
        return unpinned(e);
    }
    let key = tee
        .sealing_key(policy)
        .map_err(|e| err(format!("cannot seal the operator root pin: {e}")))?;
    let mut pin = store.0.to_vec();
    pin.extend_from_slice(&der);
    let blob = key.seal(ROOT_PIN_CONTEXT, &pin).map_err(err)?;
    write_private(&state_dir.join(ROOT_PIN), &blob)?;
    tracing::info!(root_sha256 = %authorization::fingerprint(&der), "pinned the operator root that authorizes migrations");
    Ok(())
}

/// A build's identity for migration: what an authorization names.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    /// Its measurement, hex.
    pub measurement: String,
    /// Its security version, when the TEE reports one.
    pub svn: Option<u32>,
}

/// This build's measurement and security version on the configured TEE: what an authorization
/// addresses (run with the new build).
pub fn measurement(
    config: &LoadedConfig,
    overrides: &Overrides,
) -> Result<BuildInfo, RuntimeError> {
    let o = open(config, overrides)?;
    Ok(BuildInfo {
        measurement: hex::encode(o.tee.measurement()),
        svn: o.tee.security_version(),
    })
}

/// What an authorization for this state must name (run with the old build).
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// The store id, hex.
    pub store: String,
    /// This build's measurement, hex.
    pub measurement: String,
    /// This build's security version: the target's may not be lower.
    pub svn: u32,
    /// SHA-256 of the pinned operator root certificate, hex: the key that must sign.
    pub operator_root_sha256: String,
}

/// The state's store id, this build's identity, and the pinned operator root.
pub fn source(config: &LoadedConfig, overrides: &Overrides) -> Result<SourceInfo, RuntimeError> {
    let o = open(config, overrides)?;
    let key = o.key()?;
    Ok(SourceInfo {
        store: hex::encode(o.store_id(&key)?),
        measurement: hex::encode(o.tee.measurement()),
        svn: o.svn()?,
        operator_root_sha256: authorization::fingerprint(&o.pinned_root(&key)?),
    })
}

/// Unix seconds; a clock before 1970 counts every authorization as expired.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(u64::MAX, |d| d.as_secs())
}

/// Run by the old build: seal its secrets for the build `auth` names, once `auth` is checked.
pub fn export(
    config: &LoadedConfig,
    overrides: &Overrides,
    auth: &Authorization,
) -> Result<PathBuf, RuntimeError> {
    let refused = |why: String| err(format!("migration authorization refused: {why}"));
    let o = open(config, overrides)?;
    let own = o.tee.measurement();
    let own_svn = o.svn()?;
    let key = o.key()?;
    let root = o.pinned_root(&key)?;
    let st = auth.verify(&root).map_err(refused)?;
    let store = o.store_id(&key)?;
    if st.source_store != store {
        return Err(refused(format!(
            "it is for store {}, this is store {}",
            hex::encode(st.source_store),
            hex::encode(store)
        )));
    }
    let now = now();
    if st.expires <= now {
        return Err(refused(format!(
            "it expired at {} (unix seconds), it is now {now}",
            st.expires
        )));
    }
    let to = st.target_measurement.as_slice();
    if to.len() != own.len() {
        return Err(refused(format!(
            "a {} measurement is {} bytes, the target measurement is {}",
            o.tee.name(),
            own.len(),
            to.len()
        )));
    }
    if to == own.as_slice() {
        return Err(refused(
            "the target is this build's own measurement: nothing to migrate".into(),
        ));
    }
    if st.target_svn < own_svn {
        return Err(refused(format!(
            "the target's security version {} is lower than this build's {own_svn}: refusing a \
             downgrade",
            st.target_svn
        )));
    }
    let ca_key = o.unseal(&key, "ca/intermediary.key.sealed", CONTEXT)?;
    let master = o.unseal(&key, "store/master.key.sealed", MASTER_CONTEXT)?;
    let envelope = Zeroizing::new(
        serde_json::to_vec(&Envelope {
            from: hex::encode(&own),
            from_svn: own_svn,
            to: hex::encode(to),
            to_svn: st.target_svn,
            ca_key_pem: String::from_utf8(ca_key.to_vec())
                .map_err(|_| err("the unsealed CA key is not PEM"))?,
            master: hex::encode(&*master),
            operator_root: hex::encode(&root),
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
    tracing::info!(to = %hex::encode(to), to_svn = st.target_svn, envelope = %out.display(), "state exported for the authorized build");
    Ok(out)
}

/// Run by the new build: take the secrets an export addressed to it, and seal them to itself.
pub fn import(config: &LoadedConfig, overrides: &Overrides) -> Result<(), RuntimeError> {
    let o = open(config, overrides)?;
    let own = o.tee.measurement();
    let own_svn = o.svn()?;
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
    // The exporter checked the authorized version against its own; this build checks that it is
    // the version authorized, which only it can know.
    if own_svn != envelope.to_svn || own_svn < envelope.from_svn {
        return Err(err(format!(
            "this build's security version is {own_svn}, but the operator authorized security \
             version {} (the exporting build's is {}): refusing the import",
            envelope.to_svn, envelope.from_svn
        )));
    }
    let master = Zeroizing::new(hex::decode(&envelope.master).map_err(err)?);
    let root = hex::decode(&envelope.operator_root).map_err(err)?;
    let key = o.key()?;
    let ca_blob = key
        .seal(CONTEXT, envelope.ca_key_pem.as_bytes())
        .map_err(err)?;
    let master_blob = key.seal(MASTER_CONTEXT, &master).map_err(err)?;
    // The pin names the store it belongs to: the one whose master key arrives with it.
    let store = master
        .get(32..48)
        .ok_or_else(|| err("the exported master key holds no store id"))?;
    let mut pin = store.to_vec();
    pin.extend_from_slice(&root);
    let root_blob = key.seal(ROOT_PIN_CONTEXT, &pin).map_err(err)?;
    write_private(&o.state_dir.join("ca/intermediary.key.sealed"), &ca_blob)?;
    write_private(&o.state_dir.join("store/master.key.sealed"), &master_blob)?;
    write_private(&o.state_dir.join(ROOT_PIN), &root_blob)?;
    std::fs::remove_file(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    tracing::info!(from = %envelope.from, to = %envelope.to, svn = own_svn, "state imported and sealed to this build");
    Ok(())
}
