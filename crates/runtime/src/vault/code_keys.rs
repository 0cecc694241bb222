//! Keys the runtime takes out of the vault on a workload's behalf, to decrypt its code: the
//! private half of the vault key an encrypted component or image was encrypted to, or a KBS
//! resource an image's layer keys are wrapped with (Confidential Containers' annotation).
//!
//! The same policies decide as for every other way in: the workload asks, by its name and the
//! hash of the code the tree commits for it (the ciphertext, the only form the tree has), so a
//! policy names the encrypted component or the image manifest it admits. A refusal names every
//! rule that failed, and the load stops with it.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use enclave_vault::keys::VaultKey;
use zeroize::Zeroizing;

use super::Vault;
use super::policy::{Asked, Who};
use super::secrets;

/// The vault, for code decryption, set once the vault exists (it needs the control plane,
/// which needs the backends that hold this).
pub(crate) struct CodeKeys {
    vault: OnceLock<Arc<Vault>>,
    /// The workloads `enclave.toml` defines: a name-only policy block admits only those.
    file_workloads: BTreeSet<String>,
}

/// Which workload asks, and for which code.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    pub workload: &'a str,
    /// SHA-256 of the code as the tree commits it (component JWE, image manifest).
    pub code: &'a [u8; 32],
}

const VIA: &str = "code";

impl CodeKeys {
    pub(crate) fn new(file_workloads: impl IntoIterator<Item = String>) -> Self {
        Self {
            vault: OnceLock::new(),
            file_workloads: file_workloads.into_iter().collect(),
        }
    }

    pub(crate) fn set_vault(&self, vault: Arc<Vault>) {
        let _ = self.vault.set(vault);
    }

    fn vault(&self) -> Result<&Vault, String> {
        self.vault.get().map(Arc::as_ref).ok_or_else(|| {
            "its code is encrypted, and this runtime has no vault to take the key from (add a [vault] section to enclave.toml)".to_string()
        })
    }

    fn who<'a>(&self, a: &Asker<'a>) -> Who<'a> {
        Who::Local {
            name: a.workload,
            code: Some(a.code),
            from_file: self.file_workloads.contains(a.workload),
        }
    }

    /// Vault key `name`, released to `asker` for decrypting its code.
    pub(crate) fn private_key(&self, asker: &Asker<'_>, name: &str) -> Result<VaultKey, String> {
        let v = self.vault()?;
        let who = self.who(asker);
        let allowed = v
            .decide(VIA, Asked::Key(name), who, None)
            .map_err(|r| format!("the vault will not release key '{name}': {r}"))?;
        let key = secrets::key(&v.store, name)?.ok_or_else(|| {
            format!("vault key '{name}' (decryption_key) does not exist: generate it with `enclave-os vault key generate {name} --kind ec-p256` and encrypt to its public half")
        })?;
        v.released(VIA, Asked::Key(name), who, &allowed);
        Ok(key)
    }

    /// Vault secret `path` (a KBS resource `<repo>/<type>/<tag>`), released to `asker`.
    pub(crate) fn secret(
        &self,
        asker: &Asker<'_>,
        path: &str,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let v = self.vault()?;
        secrets::check_path(path)?;
        let who = self.who(asker);
        let allowed = v
            .decide(VIA, Asked::Secret(path), who, None)
            .map_err(|r| format!("the vault will not release resource {path}: {r}"))?;
        let value = secrets::secret(&v.store, path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the vault keeps no resource {path} (put it with `enclave-os vault secret put {path}`)"))?;
        v.released(VIA, Asked::Secret(path), who, &allowed);
        Ok(value)
    }

    /// The RFC 7638 thumbprint of vault key `name`'s public half, for the certificate's key
    /// reference; `None` when it is not kept (or this runtime has no vault).
    pub(crate) fn thumbprint(&self, name: &str) -> Option<String> {
        let v = self.vault.get()?;
        let key = secrets::key(&v.store, name).ok()??;
        Some(key.public_jwk()?.thumbprint_b64())
    }
}
