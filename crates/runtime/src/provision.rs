//! The operator's intermediary CA: imported once, then kept sealed to the TEE.
//!
//! First run: the intermediary certificate and key come from `enclave.toml` (`[ca]`), or, when
//! none is configured, from a development CA created in `<state_dir>/dev-ca` (and the runtime says
//! so). The key is sealed to the TEE under the configured policy into
//! `<state_dir>/ca/intermediary.key.sealed`; a development CA's plaintext key file is deleted, an
//! operator's is reported as no longer needed. A development CA's root key is deleted too, once
//! the intermediary is sealed (the runtime logs it); its root certificate stays in
//! `<state_dir>/dev-ca/root.crt.pem` and `<state_dir>/ca/root.crt.pem` for clients to pin. Later
//! runs unseal it; the plaintext is never read again. With `[ca]` configured, the certificate
//! served is always the one the config tree commits (`ca/certificate`), never the copy kept under
//! the state directory. A TEE without a sealing key (TDX) cannot do this, and the runtime says why.

use std::path::{Path, PathBuf};

use enclave_ratls::issue::IntermediaryCa;
use enclave_tee::{SealPolicy, Tee};
use zeroize::Zeroizing;

use crate::RuntimeError;

pub(crate) const CONTEXT: &str = "runtime/ca/intermediary-key";

fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ca(e.to_string())
}

fn read(path: &Path) -> Result<Zeroizing<String>, RuntimeError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| err(format!("{}: {e}", path.display())))
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// The committed certificate bytes as PEM text; `path` names them in errors.
fn committed_pem(pem: &[u8], path: &Path) -> Result<Zeroizing<String>, RuntimeError> {
    String::from_utf8(pem.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| err(format!("{}: not PEM text", path.display())))
}

/// Where the CA comes from: on the first run, certificate and key; on later runs, with `[ca]`
/// configured, the certificate (the key is sealed).
pub(crate) enum Source {
    /// The operator's files: the certificate as the config tree commits it (`ca/certificate`,
    /// read when the configuration was loaded), where it was, and the key file.
    Files {
        cert_pem: Vec<u8>,
        cert: PathBuf,
        key: PathBuf,
    },
    /// No CA configured: a development CA.
    Development,
}

/// The intermediary CA, unsealed, and the root certificate clients should pin.
pub(crate) fn intermediary(
    state_dir: &Path,
    tee: &dyn Tee,
    policy: SealPolicy,
    source: Source,
) -> Result<(IntermediaryCa, PathBuf), RuntimeError> {
    let dir = state_dir.join("ca");
    let sealed_path = dir.join("intermediary.key.sealed");
    let cert_path = dir.join("intermediary.crt.pem");
    let root_hint = dir.join("root.crt.pem");
    let sealing = |what: &str| {
        tee.sealing_key(policy).map_err(|e| {
            err(format!(
                "cannot {what} the intermediary CA key on {}: {e}",
                tee.name()
            ))
        })
    };
    if sealed_path.exists() {
        // A state directory from before the root key was deleted still has it.
        drop_dev_root_key(state_dir, &root_hint)?;
        let refused =
            |e: String| RuntimeError::StateRefused(format!("{}: {e}", sealed_path.display()));
        let blob = std::fs::read(&sealed_path).map_err(|e| refused(e.to_string()))?;
        let key_pem = sealing("unseal")?
            .unseal(CONTEXT, &blob)
            .map_err(|e| refused(e.to_string()))?;
        let key_pem = Zeroizing::new(
            String::from_utf8(key_pem.to_vec()).map_err(|_| err("the unsealed key is not PEM"))?,
        );
        // The configured certificate is the one the tree commits: use it, not a copy on disk.
        let cert_pem = match &source {
            Source::Files { cert_pem, cert, .. } => committed_pem(cert_pem, cert)?,
            Source::Development => read(&cert_path)?,
        };
        let ca = IntermediaryCa::from_pem(&cert_pem, &key_pem).map_err(err)?;
        return Ok((ca, root_hint));
    }

    // First run: import, seal, and leave no plaintext key behind that we created.
    std::fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
    let (cert_pem, key_pem, root_src, operator_key_file) = match source {
        Source::Files {
            cert_pem,
            cert,
            key,
        } => {
            let root_beside = cert.with_file_name("root.crt.pem");
            (
                committed_pem(&cert_pem, &cert)?,
                read(&key)?,
                root_beside.exists().then_some(root_beside),
                true,
            )
        }
        Source::Development if root_hint.exists() => {
            // A development CA existed: clients pin its root. Its sealed key is gone, so the host
            // removed it; a new CA would replace the root they pin, quietly.
            return Err(RuntimeError::StateRefused(format!(
                "{} is gone but the development CA's root {} is still here: refusing to replace \
                 the CA clients pin. To start a new development CA on purpose, remove {}",
                sealed_path.display(),
                root_hint.display(),
                dir.display()
            )));
        }
        Source::Development => {
            // Generated in memory: the root key is dropped here, never written, so no one (the
            // host included, watching the directory) can issue another intermediary under the
            // root clients pin. Only the certificates go to disk.
            let dev = state_dir.join("dev-ca");
            let generated =
                enclave_ratls::ca::generate("Enclave OS development (not for production)")
                    .map_err(err)?;
            std::fs::create_dir_all(&dev).map_err(|e| err(format!("{}: {e}", dev.display())))?;
            for (name, pem) in [
                ("root.crt.pem", &generated.root_cert_pem),
                ("intermediary.crt.pem", &generated.intermediary_cert_pem),
            ] {
                std::fs::write(dev.join(name), pem.as_bytes())
                    .map_err(|e| err(format!("{}: {e}", dev.join(name).display())))?;
            }
            tracing::warn!(
                dir = %dev.display(),
                root = %root_hint.display(),
                "no CA configured: created a development CA (not for production); its root key \
                 existed only in memory and is gone; clients pin its root certificate"
            );
            (
                Zeroizing::new(generated.intermediary_cert_pem.clone()),
                Zeroizing::new(generated.intermediary_key_pem.to_string()),
                Some(dev.join("root.crt.pem")),
                false,
            )
        }
    };
    let ca = IntermediaryCa::from_pem(&cert_pem, &key_pem).map_err(err)?;
    let blob = sealing("seal")?
        .seal(CONTEXT, key_pem.as_bytes())
        .map_err(err)?;
    std::fs::write(&cert_path, cert_pem.as_bytes())
        .map_err(|e| err(format!("{}: {e}", cert_path.display())))?;
    if let Some(root) = root_src {
        std::fs::copy(&root, &root_hint).map_err(|e| err(format!("{}: {e}", root.display())))?;
    }
    write_private(&sealed_path, &blob)?;
    if operator_key_file {
        tracing::warn!(
            sealed = %sealed_path.display(),
            "the intermediary CA key is now sealed to this TEE; the plaintext key file is no longer needed: remove it"
        );
    }
    Ok((ca, root_hint))
}

/// Delete the development root CA's key. Once the intermediary is issued and sealed nothing
/// needs it, and a root key left on the host's disk lets the host issue another intermediary
/// that clients pinning this root would accept. The root certificate stays for clients to pin.
fn drop_dev_root_key(state_dir: &Path, root_cert: &Path) -> Result<(), RuntimeError> {
    let key = state_dir.join("dev-ca").join("root.key.pem");
    if !key.exists() {
        return Ok(());
    }
    std::fs::remove_file(&key).map_err(|e| err(format!("{}: {e}", key.display())))?;
    tracing::warn!(
        deleted = %key.display(),
        root = %root_cert.display(),
        "deleted the development root CA key now that the intermediary is issued and sealed; the root certificate stays for clients to pin"
    );
    Ok(())
}

pub(crate) const MASTER_CONTEXT: &str = "runtime/store/master-key";

/// A master key generated in this start and not yet on disk: [`Unsaved::persist`] writes it.
///
/// A witness-counted store enrols its counter between the two: a master key on disk then always
/// means an enrolled counter, so the runtime never enrols for a store it already had. Deciding
/// "new store" from anything else on the host's disk (the database file, say) would let the host
/// delete that and have an existing store enrol again at a witness that never saw it.
pub(crate) struct Unsaved {
    path: PathBuf,
    blob: Vec<u8>,
    id: enclave_store::StoreId,
}

impl Unsaved {
    /// Write the sealed master key: from here on this store exists.
    pub(crate) fn persist(self) -> Result<(), RuntimeError> {
        write_private(&self.path, &self.blob)?;
        tracing::info!(path = %self.path.display(), store = %self.id, "generated the store's master key and sealed it to the TEE");
        Ok(())
    }
}

/// The sealed store's master key and store id, unsealed from
/// `<state_dir>/store/master.key.sealed`; or, on the first run, generated and sealed, with the
/// sealed blob still to be written (`Unsaved`).
pub(crate) fn master_key(
    state_dir: &Path,
    tee: &dyn Tee,
    policy: SealPolicy,
) -> Result<
    (
        enclave_store::MasterKey,
        enclave_store::StoreId,
        Option<Unsaved>,
    ),
    RuntimeError,
> {
    let dir = state_dir.join("store");
    let sealed_path = dir.join("master.key.sealed");
    let key = |what: &str| {
        tee.sealing_key(policy).map_err(|e| {
            RuntimeError::Store(format!(
                "cannot {what} the store's master key on {}: {e}",
                tee.name()
            ))
        })
    };
    let store_err = |e: String| RuntimeError::Store(e);
    if sealed_path.exists() {
        let blob = std::fs::read(&sealed_path)
            .map_err(|e| RuntimeError::StateRefused(format!("{}: {e}", sealed_path.display())))?;
        let plain = key("unseal")?
            .unseal(MASTER_CONTEXT, &blob)
            .map_err(|e| RuntimeError::StateRefused(format!("{}: {e}", sealed_path.display())))?;
        if plain.len() != 48 {
            return Err(store_err(format!(
                "{}: unsealed to {} bytes, not 48",
                sealed_path.display(),
                plain.len()
            )));
        }
        let master = enclave_store::MasterKey::from_bytes(&plain[..32])
            .map_err(|e| store_err(e.to_string()))?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&plain[32..]);
        return Ok((master, enclave_store::StoreId(id), None));
    }
    if dir.join("kv.redb").exists() {
        return Err(RuntimeError::StateRefused(format!(
            "{} exists but its sealed master key {} is gone: refusing to start a new store over it",
            dir.join("kv.redb").display(),
            sealed_path.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| store_err(format!("{}: {e}", dir.display())))?;
    let master = enclave_store::MasterKey::generate().map_err(|e| store_err(e.to_string()))?;
    let id = enclave_store::StoreId::generate().map_err(|e| store_err(e.to_string()))?;
    let mut plain = Zeroizing::new(Vec::with_capacity(48));
    plain.extend_from_slice(master.expose());
    plain.extend_from_slice(&id.0);
    let blob = key("seal")?
        .seal(MASTER_CONTEXT, &plain)
        .map_err(|e| store_err(e.to_string()))?;
    Ok((
        master,
        id,
        Some(Unsaved {
            path: sealed_path,
            blob,
            id,
        }),
    ))
}
