//! The files `enclave.toml` names, read once when it is loaded.
//!
//! Every file whose content decides what runs or whom the runtime trusts is read here, once, and
//! kept: the tree commits these bytes and the runtime uses these same bytes. Reading a file again
//! later would let the host swap it between the hash and the use (time of check, time of use).
//!
//! The intermediary CA's key is not read here: it is a secret, imported once into sealed storage
//! on the first run and never committed (its certificate is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::file::{ConfigError, EnclaveConfig};

/// The file a development `trust_sim` directory keeps its simulation root certificate in (the
/// simulator's layout: `SimPki::root_path` in `enclave-tee`).
pub const SIM_ROOT_FILE: &str = "root.crt.pem";

/// The content of every file input, as read at load.
#[derive(Clone, Default)]
pub struct Inputs {
    pub(crate) ca_certificate: Option<Vec<u8>>,
    pub(crate) egress_bundle: Option<Vec<u8>>,
    pub(crate) policy: Option<Vec<u8>>,
    /// The JWKS: the file's bytes, or (for `jwks_url`) the bytes fetched and committed.
    pub(crate) jwks: Option<Vec<u8>>,
    pub(crate) witness_root: Option<Vec<u8>>,
    pub(crate) witness_trust_sim: Option<Vec<u8>>,
    /// The appraisal policy the witness must satisfy (`store.witness.policy`).
    pub(crate) witness_policy: Option<Vec<u8>>,
    pub(crate) clients_root: Option<Vec<u8>>,
    pub(crate) clients_trust_sim: Option<Vec<u8>>,
    /// Each file-named workload's code, by workload name.
    pub(crate) code: BTreeMap<String, Vec<u8>>,
    /// The files each file-named workload's `[workload.ingress]` names, by workload name.
    pub(crate) ingress: BTreeMap<String, crate::ingress::IngressFiles>,
    /// Each registry's CA bundle, by host.
    pub(crate) registries: BTreeMap<String, Vec<u8>>,
    /// Each file container's resolved image, by workload name (set once resolved, not read
    /// from a file).
    pub(crate) images: BTreeMap<String, crate::container::ImageLeaves>,
    /// The container engine's versions (set once asked).
    pub(crate) engine: Option<crate::container::EngineVersions>,
    /// `[vault]`'s files and its policies, appraisal policies read.
    pub(crate) vault: crate::vault::VaultFiles,
    /// `seal_key_kbs`: the KBS's root, simulation root and appraisal policy.
    pub(crate) kbs_root: Option<Vec<u8>>,
    pub(crate) kbs_trust_sim: Option<Vec<u8>>,
    pub(crate) kbs_policy: Option<Vec<u8>>,
    /// Vault policies loaded through the management API (set by the runtime, not read).
    pub(crate) vault_api: BTreeMap<String, crate::vault::PolicyDoc>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = |b: &Option<Vec<u8>>| b.as_ref().map(Vec::len);
        f.debug_struct("Inputs")
            .field("ca_certificate_bytes", &len(&self.ca_certificate))
            .field("egress_bundle_bytes", &len(&self.egress_bundle))
            .field("policy_bytes", &len(&self.policy))
            .field("jwks_bytes", &len(&self.jwks))
            .field("witness_root_bytes", &len(&self.witness_root))
            .field("witness_trust_sim_bytes", &len(&self.witness_trust_sim))
            .field("witness_policy_bytes", &len(&self.witness_policy))
            .field("clients_root_bytes", &len(&self.clients_root))
            .field("clients_trust_sim_bytes", &len(&self.clients_trust_sim))
            .field("workloads_with_code", &self.code.keys().collect::<Vec<_>>())
            .field("registries", &self.registries.keys().collect::<Vec<_>>())
            .field("ingress", &self.ingress.keys().collect::<Vec<_>>())
            .field("images", &self.images)
            .field("engine", &self.engine)
            .field(
                "vault_policies",
                &self.vault.policies.keys().collect::<Vec<_>>(),
            )
            .field(
                "vault_api_policies",
                &self.vault_api.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Reads files named in a configuration at `file`, relative paths resolving in its directory.
pub(crate) struct Reader<'a> {
    pub file: &'a Path,
}

impl Reader<'_> {
    /// `p` from the file, relative to the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn read(&self, field: &str, p: &Path) -> Result<Vec<u8>, ConfigError> {
        let full = self.resolve(p);
        std::fs::read(&full).map_err(|e| ConfigError::Invalid {
            path: self.file.to_path_buf(),
            field: field.into(),
            reason: format!("{}: {e}", full.display()),
        })
    }

    fn read_opt(&self, field: &str, p: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
        p.map(|p| self.read(field, p)).transpose()
    }

    /// A simulation PKI: its root certificate, in the directory or the file named.
    fn sim_root(&self, field: &str, p: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(p) = p else { return Ok(None) };
        let root = if self.resolve(p).is_dir() {
            p.join(SIM_ROOT_FILE)
        } else {
            p.clone()
        };
        self.read(field, &root).map(Some)
    }

    /// The files `[vault]` names, and its policies with their appraisal policies read as text.
    fn vault_files(
        &self,
        v: &crate::vault::VaultConfig,
    ) -> Result<crate::vault::VaultFiles, ConfigError> {
        let mut policies = BTreeMap::new();
        for (name, p) in &v.policy {
            let doc = p.map_appraisal(|i, path| {
                let field = format!("vault.policy.{name}.allow[{i}].appraisal_policy");
                let bytes = self.read(&field, path)?;
                String::from_utf8(bytes).map_err(|_| ConfigError::Invalid {
                    path: self.file.to_path_buf(),
                    field,
                    reason: format!("{}: not UTF-8 text", self.resolve(path).display()),
                })
            })?;
            policies.insert(name.clone(), doc);
        }
        Ok(crate::vault::VaultFiles {
            client_root: self.read_opt("vault.client_root", v.client_root.as_ref())?,
            trust_sim: self.sim_root("vault.trust_sim", v.trust_sim.as_ref())?,
            policies,
        })
    }

    /// Every file input of `c`.
    pub fn read_all(&self, c: &EnclaveConfig) -> Result<Inputs, ConfigError> {
        let witness = c.store.witness.as_ref();
        let mut code = BTreeMap::new();
        for (i, w) in c.workloads.iter().enumerate() {
            if let Some(p) = w.run.source() {
                code.insert(
                    w.name.clone(),
                    self.read(&format!("workload[{i}].source"), p)?,
                );
            }
        }
        let mut ingress = BTreeMap::new();
        for (i, w) in c.workloads.iter().enumerate() {
            let Some(g) = &w.ingress else { continue };
            let field = |f: &str| format!("workload[{i}].ingress.{f}");
            let files = crate::ingress::IngressFiles {
                client_policy: self.read_opt(&field("client_policy"), g.client_policy.as_ref())?,
                client_root: self.read_opt(&field("client_root"), g.client_root.as_ref())?,
                client_trust_sim: self
                    .sim_root(&field("client_trust_sim"), g.client_trust_sim.as_ref())?,
            };
            if files != crate::ingress::IngressFiles::default() {
                ingress.insert(w.name.clone(), files);
            }
        }
        let mut registries = BTreeMap::new();
        for (i, r) in c.registries.iter().enumerate() {
            registries.insert(
                r.host.clone(),
                self.read(&format!("registry[{i}].ca_bundle"), &r.ca_bundle)?,
            );
        }
        let vault = match &c.vault {
            None => crate::vault::VaultFiles::default(),
            Some(v) => self.vault_files(v)?,
        };
        let kbs = c.seal_key_kbs.as_ref();
        Ok(Inputs {
            kbs_root: self.read_opt("seal_key_kbs.root", kbs.map(|k| &k.root))?,
            kbs_trust_sim: self.sim_root(
                "seal_key_kbs.trust_sim",
                kbs.and_then(|k| k.trust_sim.as_ref()),
            )?,
            kbs_policy: self
                .read_opt("seal_key_kbs.policy", kbs.and_then(|k| k.policy.as_ref()))?,
            vault,
            vault_api: BTreeMap::new(),
            ingress,
            registries,
            images: BTreeMap::new(),
            engine: None,
            ca_certificate: self.read_opt("ca.certificate", c.ca.certificate.as_ref())?,
            egress_bundle: self.read_opt("egress.ca_bundle", c.egress.ca_bundle.as_ref())?,
            policy: self.read_opt("policy", c.policy.as_ref())?,
            jwks: self.read_opt(
                "oidc.jwks_file",
                c.oidc.as_ref().and_then(|o| o.jwks_file.as_ref()),
            )?,
            witness_root: self.read_opt("store.witness.root", witness.map(|w| &w.root))?,
            witness_trust_sim: self.sim_root(
                "store.witness.trust_sim",
                witness.and_then(|w| w.trust_sim.as_ref()),
            )?,
            witness_policy: self.read_opt(
                "store.witness.policy",
                witness.and_then(|w| w.policy.as_ref()),
            )?,
            clients_root: self.read_opt(
                "witness.clients_root",
                c.witness.as_ref().map(|w| &w.clients_root),
            )?,
            clients_trust_sim: self.sim_root(
                "witness.trust_sim",
                c.witness.as_ref().and_then(|w| w.trust_sim.as_ref()),
            )?,
            code,
        })
    }
}
