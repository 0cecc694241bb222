//! The one writer: applies changes in order, each validated, made durable, then published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use enclave_config::file::{Workload, WorkloadCode};
use enclave_config::vault::PolicyDoc;
use enclave_config::{ConfigTree, LoadedConfig};
use enclave_ratls::binding::BindingFormat;
use enclave_ratls::issue::IntermediaryCa;
use enclave_ratls::tls::RatlsResolver;
use enclave_store::Store;
use enclave_tee::Tee;
use tokio::sync::mpsc;

use super::workloads::{self, Loaded};
use super::{Applied, Change, ChangeError, Entry, Job, Origin, Snapshot};
use crate::auth::{Authenticator, KeySet};
use crate::backends::Backends;

/// What the writer needs, handed over once at start.
pub(crate) struct Parts {
    pub config: LoadedConfig,
    pub store: Arc<Store>,
    pub tee: Arc<dyn Tee>,
    pub ca: Arc<IntermediaryCa>,
    pub enclave: Arc<RatlsResolver>,
    pub enclave_names: Vec<String>,
    pub backends: Backends,
    pub auth: Option<Arc<Authenticator>>,
    /// The workloads loaded through the API, as the store kept them.
    pub loaded: Loaded,
    /// Kept records this build could not read, by name, with why.
    pub unreadable: BTreeMap<String, String>,
    /// The vault policies put through the API, as the store kept them.
    pub policies: BTreeMap<String, PolicyDoc>,
    /// The thumbprint of the vault's token-signing key (OID 2.9), with `[vault]`.
    pub token_thumbprint: Option<[u8; 32]>,
}

/// The writer's end of the plane: the changes sent to it, and where it publishes.
pub(crate) struct Inbox {
    pub(super) jobs: mpsc::Receiver<Job>,
    pub(super) published: Arc<ArcSwap<Snapshot>>,
}

/// The only code that changes what the runtime serves.
pub(crate) struct Writer {
    config: LoadedConfig,
    store: Arc<Store>,
    tee: Arc<dyn Tee>,
    ca: Arc<IntermediaryCa>,
    enclave: Arc<RatlsResolver>,
    enclave_names: Vec<String>,
    binding: BindingFormat,
    backends: Backends,
    auth: Option<Arc<Authenticator>>,
    loaded: Loaded,
    /// The JWKS a refetch rotated in since the start, which the tree commits (`oidc/jwks`) in
    /// place of the configuration's own.
    rotated_jwks: Option<Arc<Vec<u8>>>,
    published: Arc<ArcSwap<Snapshot>>,
    jobs: Option<mpsc::Receiver<Job>>,
    /// Kept workloads not taken back at start, by name, with why (see `Snapshot::parked`).
    parked: BTreeMap<String, String>,
    /// Each app's budget of certificate reissues (see `declare`).
    reissues: HashMap<String, Budget>,
    /// Vault policies put through the API.
    policies: BTreeMap<String, PolicyDoc>,
    /// The vault's token-signing key thumbprint, certified as OID 2.9.
    token_thumbprint: Option<[u8; 32]>,
}

/// Where vault policies put through the API are kept (versioned records).
pub(crate) const POLICY_NAMESPACE: &str = "sys/vault-policies";

/// The vault policies the store kept, by name; a record this build cannot read is logged and
/// left in the store (never served).
pub(crate) fn restore_policies(
    store: &Store,
) -> Result<BTreeMap<String, PolicyDoc>, enclave_store::StoreError> {
    #[derive(serde::Deserialize)]
    #[serde(tag = "record")]
    enum Record {
        #[serde(rename = "vault-policy/v1")]
        V1 { policy: PolicyDoc },
    }
    let mut out = BTreeMap::new();
    for key in store.keys(POLICY_NAMESPACE)? {
        let name = String::from_utf8_lossy(&key).to_string();
        let Some(bytes) = store.get(POLICY_NAMESPACE, &key)? else {
            continue;
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(Record::V1 { policy }) => {
                out.insert(name, policy);
            }
            Err(e) => {
                tracing::error!(policy = %name, error = %e, "kept vault policy does not read")
            }
        }
    }
    Ok(out)
}

/// Every appraisal policy of `policy` parses: a policy that cannot be evaluated is refused when
/// put, not at the first release.
pub(crate) fn check_appraisal_policies(name: &str, policy: &PolicyDoc) -> Result<(), String> {
    for (i, b) in policy.allow.iter().enumerate() {
        if let Some(text) = &b.appraisal_policy {
            enclave_evidence::Policy::from_toml(text, &format!("vault policy {name} allow[{i}]"))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A token bucket: `REISSUE_BURST` reissues at once, then one per `REISSUE_EVERY`.
struct Budget {
    tokens: f64,
    at: std::time::Instant,
}

/// Declarations an app may change at once before it must wait.
const REISSUE_BURST: f64 = 8.0;
/// How often an app regains one.
const REISSUE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Writer {
    /// Start every workload (the file's, then those the store kept) and publish the first
    /// snapshot. A file workload that cannot start stops the runtime's start: the operator
    /// fixes the file. A kept workload is held to every check a load passes, against the file
    /// as it is now; one that fails, or does not start, is parked rather than served, so a
    /// changed file or a changed rule can neither hand it a name it may no longer hold nor
    /// keep the runtime from starting, and the operator can unload it through the API.
    pub(crate) fn new(parts: Parts, inbox: Inbox) -> Result<Self, ChangeError> {
        let binding = evidence_binding(&parts.config);
        let mut w = Self {
            binding,
            config: parts.config,
            store: parts.store,
            tee: parts.tee,
            ca: parts.ca,
            enclave: parts.enclave,
            enclave_names: parts.enclave_names,
            backends: parts.backends,
            auth: parts.auth,
            loaded: Loaded::new(),
            rotated_jwks: None,
            published: inbox.published,
            jobs: Some(inbox.jobs),
            parked: BTreeMap::new(),
            reissues: HashMap::new(),
            policies: BTreeMap::new(),
            token_thumbprint: parts.token_thumbprint,
        };
        // Kept policies are held to the rules an API put passes, against the file as it is now;
        // one that no longer passes is dropped from service (not from the store) with why.
        for (name, policy) in parts.policies {
            let mut one = w.policies.clone();
            one.insert(name.clone(), policy);
            match w
                .config
                .with_vault_policies(one.clone())
                .map_err(|e| e.to_string())
                .and_then(|_| check_appraisal_policies(&name, &one[&name]))
            {
                Ok(()) => w.policies = one,
                Err(why) => {
                    tracing::error!(policy = %name, reason = %why, "kept vault policy not taken back")
                }
            }
        }
        for (name, reason) in parts.unreadable {
            w.park(name, reason);
        }
        // The policies in force before any workload starts: a workload whose code is
        // encrypted asks the vault for its key while it starts, and the vault decides against
        // the published snapshot. Nothing is served yet, so nothing else reads this one.
        let initial = w.current();
        w.published.store(Arc::new(Snapshot::new(
            initial.generation,
            initial.tree.clone(),
            Vec::new(),
            Arc::default(),
            Arc::new(w.policies_in_force(&w.policies)),
        )));
        // Hostnames the file's workloads hold (the configuration checked they are distinct).
        let mut holders: HashMap<String, String> = HashMap::new();
        for spec in &w.config.config.workloads {
            for h in &spec.hostnames {
                holders.insert(h.to_ascii_lowercase(), spec.name.clone());
            }
        }
        for (name, (spec, code)) in parts.loaded {
            match w.admissible(&spec, |h| holders.get(&h.to_ascii_lowercase()).cloned()) {
                Ok(()) => {
                    for h in &spec.hostnames {
                        holders.insert(h.to_ascii_lowercase(), name.clone());
                    }
                    w.loaded.insert(name, (spec, code));
                }
                Err(e) => w.park(name, e.to_string()),
            }
        }
        // Start everything first: a kept workload whose code no longer starts is parked, and
        // the tree then commits only what runs.
        let mut started = Vec::new();
        for (i, spec) in w.config.config.workloads.iter().enumerate() {
            // The code the tree commits: read when the configuration was loaded, or the image
            // resolved before the writer started.
            let code = w.config.workload_code(&spec.name).ok_or_else(|| {
                ChangeError::Invalid(format!(
                    "workload[{i}] '{}': no code was read from its source, nor its image resolved",
                    spec.name
                ))
            })?;
            started.push((spec.clone(), Origin::File, w.backends.start(spec, &code)?));
        }
        let mut failing = Vec::new();
        for (name, (spec, code)) in &w.loaded {
            match w.backends.start(spec, code) {
                Ok(running) => started.push((spec.clone(), Origin::Api, running)),
                Err(e) => failing.push((name.clone(), e.to_string())),
            }
        }
        for (name, reason) in failing {
            w.loaded.remove(&name);
            w.park(name, reason);
        }
        let tree = Arc::new(w.tree_for(&w.loaded)?);
        let list = started
            .into_iter()
            .map(|(spec, origin, running)| w.certified(&tree, spec, origin, running))
            .collect::<Result<Vec<_>, _>>()?;
        w.publish(tree, list)?;
        Ok(w)
    }

    fn park(&mut self, name: String, reason: String) {
        tracing::error!(
            workload = %name,
            %reason,
            "a workload kept from the management API is not served: load it again or unload it"
        );
        self.parked.insert(name, reason);
    }

    /// The checks a workload loaded through the API must pass, whoever holds its hostnames
    /// now (`holder`): at a load against the snapshot, at start against the file.
    fn admissible(
        &self,
        spec: &Workload,
        holder: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ChangeError> {
        spec.check(false)
            .map_err(|(field, reason)| ChangeError::Invalid(format!("{field}: {reason}")))?;
        let name = &spec.name;
        if self.config.config.workloads.iter().any(|f| f.name == *name) {
            return Err(ChangeError::Conflict(format!(
                "workload '{name}' is defined in enclave.toml; change it there"
            )));
        }
        let reserved = &self.config.config.management.hostname;
        for h in &spec.hostnames {
            if h.eq_ignore_ascii_case(reserved) {
                return Err(ChangeError::Conflict(format!(
                    "'{h}' is reserved for the management API"
                )));
            }
            if let Some(v) = self
                .config
                .config
                .vault
                .as_ref()
                .and_then(|v| v.hostname.as_ref())
                && h.eq_ignore_ascii_case(v)
            {
                return Err(ChangeError::Conflict(format!(
                    "'{h}' is reserved for the vault (vault.hostname)"
                )));
            }
            if let Some(other) = holder(h).filter(|o| o != name) {
                return Err(ChangeError::Conflict(format!(
                    "hostname '{h}' is served by workload '{other}'"
                )));
            }
        }
        Ok(())
    }

    /// Run the writer on a thread of its own until the runtime shuts down.
    pub(crate) fn spawn(mut self) -> std::io::Result<()> {
        let Some(mut jobs) = self.jobs.take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("enclave-os-control".into())
            .spawn(move || {
                while let Some(job) = jobs.blocking_recv() {
                    if matches!(job.change, Change::Shutdown) {
                        // Stopped before the reply: the runtime exits once it is answered, and
                        // a process left running then would die only by its parent-death
                        // signal, which its own children do not inherit.
                        self.stop_all();
                        let _ = job.reply.send(Ok(Applied::Unchanged));
                        break;
                    }
                    let outcome = self.apply(job.change);
                    // The caller may have gone (its request timed out); the change stands.
                    let _ = job.reply.send(outcome);
                }
                // An empty snapshot drops the handlers, and with them what they hold of this
                // plane (an app's SDK services hold a handle on it).
                self.stop_all();
            })
            .map(|_| ())
    }

    fn apply(&mut self, change: Change) -> Result<Applied, ChangeError> {
        match change {
            Change::Load { spec, code } => self.load(spec, code),
            Change::Unload { name } => self.unload(&name),
            Change::RotateJwks { bytes } => self.rotate(bytes),
            Change::Declare {
                app,
                code,
                index,
                value,
            } => self.declare(&app, &code, index, value.as_deref()),
            Change::PutPolicy { name, policy } => self.put_policy(name, policy),
            Change::DeletePolicy { name } => self.delete_policy(&name),
            Change::Shutdown => Ok(Applied::Unchanged),
        }
    }

    fn current(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    /// The configuration as served: the file's, with a rotated JWKS and the API's vault
    /// policies, if any.
    fn served_config(
        &self,
        policies: &BTreeMap<String, PolicyDoc>,
    ) -> Result<std::borrow::Cow<'_, LoadedConfig>, ChangeError> {
        let mut c = std::borrow::Cow::Borrowed(&self.config);
        if let Some(jwks) = &self.rotated_jwks {
            c = std::borrow::Cow::Owned(c.with_jwks(jwks.to_vec())?);
        }
        if !policies.is_empty() {
            c = std::borrow::Cow::Owned(c.with_vault_policies(policies.clone())?);
        }
        Ok(c)
    }

    /// The tree of the configuration (with a rotated JWKS and the API's policies, if any) and
    /// `loaded`.
    fn tree_for(&self, loaded: &Loaded) -> Result<ConfigTree, ChangeError> {
        workloads::tree(&*self.served_config(&self.policies)?, loaded)
    }

    /// Every vault policy in force with the API's `policies`: the file's, then those.
    fn policies_in_force(&self, api: &BTreeMap<String, PolicyDoc>) -> BTreeMap<String, PolicyDoc> {
        let mut all = self.config.vault_files().policies.clone();
        all.extend(api.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// Put vault policy `name` (the tree, and so the certificate, changes), kept in the store
    /// before it is served.
    fn put_policy(&mut self, name: String, policy: PolicyDoc) -> Result<Applied, ChangeError> {
        let mut next = self.policies.clone();
        next.insert(name.clone(), policy.clone());
        let config = self.served_config(&next)?;
        check_appraisal_policies(&name, &policy).map_err(ChangeError::Invalid)?;
        let tree = Arc::new(workloads::tree(&config, &self.loaded)?);
        drop(config);
        let record = serde_json::to_vec(&serde_json::json!({
            "record": "vault-policy/v1",
            "policy": policy,
        }))
        .map_err(|e| ChangeError::Invalid(e.to_string()))?;
        self.store.put(POLICY_NAMESPACE, name.as_bytes(), &record)?;
        self.policies = next;
        let now = self.current();
        self.publish(tree, now.workloads.clone())
    }

    /// Remove vault policy `name`, put through the API.
    fn delete_policy(&mut self, name: &str) -> Result<Applied, ChangeError> {
        if self.config.vault_files().policies.contains_key(name) {
            return Err(ChangeError::Conflict(format!(
                "vault policy '{name}' is defined in enclave.toml; remove it there"
            )));
        }
        if !self.policies.contains_key(name) {
            return Err(ChangeError::NotFound(format!(
                "no vault policy '{name}' was put"
            )));
        }
        let mut next = self.policies.clone();
        next.remove(name);
        let tree = Arc::new(workloads::tree(&*self.served_config(&next)?, &self.loaded)?);
        self.store.delete(POLICY_NAMESPACE, name.as_bytes())?;
        self.policies = next;
        let now = self.current();
        self.publish(tree, now.workloads.clone())
    }

    /// Start `spec` and certify it against `tree`.
    fn entry(
        &self,
        tree: &ConfigTree,
        spec: &Workload,
        origin: Origin,
        code: &WorkloadCode,
    ) -> Result<Arc<Entry>, ChangeError> {
        let running = self.backends.start(spec, code)?;
        self.certified(tree, spec.clone(), origin, running)
    }

    /// A started workload, certified against `tree`.
    fn certified(
        &self,
        tree: &ConfigTree,
        spec: Workload,
        origin: Origin,
        running: Arc<dyn crate::backends::Running>,
    ) -> Result<Arc<Entry>, ChangeError> {
        Ok(Arc::new(Entry {
            code_sha256: workloads::code_digest(tree, &spec.name),
            cert: self.certificate(tree, &spec, running.encrypted())?,
            handler: running.handler(),
            spec,
            origin,
            running,
        }))
    }

    /// A workload's own certificate, when it has hostnames: issued here, on the control
    /// plane's thread, so that no handshake waits for its first quote (and a workload whose
    /// certificate cannot be issued is refused with the reason, not served without one).
    fn certificate(
        &self,
        tree: &ConfigTree,
        spec: &Workload,
        encrypted: Option<crate::backends::Encrypted>,
    ) -> Result<Option<Arc<RatlsResolver>>, ChangeError> {
        if spec.hostnames.is_empty() {
            return Ok(None);
        }
        let leaf = workloads::workload_spec(tree, spec, &self.store, self.binding, encrypted)?;
        let resolver = RatlsResolver::new(self.tee.clone(), self.ca.clone(), leaf);
        resolver.current().map_err(ChangeError::Certificate)?;
        Ok(Some(Arc::new(resolver)))
    }

    /// Serve `tree` and `list`: the enclave-wide certificate first (it commits the root), then
    /// the snapshot.
    fn publish(
        &self,
        tree: Arc<ConfigTree>,
        list: Vec<Arc<Entry>>,
    ) -> Result<Applied, ChangeError> {
        let root = *tree.root();
        let current = self.current();
        // The generation (and the enclave-wide certificate) moves only with the tree: an app's
        // declaration, or removing a parked record, changes neither what the enclave-wide
        // certificate commits nor any other workload, so it must not end other clients'
        // connections or sessions (see `front::Binding`).
        let generation = if root == current.root() {
            current.generation
        } else {
            // Should the new leaf not be issued now, the old one is dropped all the same (what
            // it certifies no longer holds), and handshakes on the enclave-wide name are
            // refused with the reason until the resolver tries again, 30 s later.
            if let Err(e) = self.enclave.set_spec(workloads::enclave_spec(
                self.enclave_names.clone(),
                &tree,
                self.binding,
                self.token_thumbprint,
            )) {
                tracing::warn!(error = %e, "the enclave-wide certificate for the new configuration could not be issued yet");
            }
            current.generation + 1
        };
        self.published.store(Arc::new(Snapshot::new(
            generation,
            tree,
            list,
            Arc::new(self.parked.clone()),
            Arc::new(self.policies_in_force(&self.policies)),
        )));
        Ok(Applied::Published(root))
    }

    /// The current list with `name` replaced by `entry` (or removed, with `None`): the file's
    /// workloads first in file order, then the API's by name.
    fn with(now: &Snapshot, name: &str, entry: Option<Arc<Entry>>) -> Vec<Arc<Entry>> {
        let mut file: Vec<Arc<Entry>> = Vec::new();
        let mut api: BTreeMap<String, Arc<Entry>> = BTreeMap::new();
        for e in &now.workloads {
            match e.origin {
                Origin::File => file.push(e.clone()),
                Origin::Api => {
                    api.insert(e.spec.name.clone(), e.clone());
                }
            }
        }
        match entry {
            Some(e) if e.origin == Origin::File => {
                if let Some(slot) = file.iter_mut().find(|f| f.spec.name == name) {
                    *slot = e;
                }
            }
            Some(e) => {
                api.insert(name.to_string(), e);
            }
            None => {
                api.remove(name);
            }
        }
        file.extend(api.into_values());
        file
    }

    fn load(&mut self, spec: Workload, code: WorkloadCode) -> Result<Applied, ChangeError> {
        let name = spec.name.clone();
        let now = self.current();
        // Checked here, by the only writer, against the snapshot this change replaces: two
        // loads claiming one hostname are applied one after the other, and the second sees
        // the first.
        self.admissible(&spec, |h| now.route(h).map(|e| e.spec.name.clone()))?;
        let mut next = self.loaded.clone();
        next.insert(name.clone(), (spec.clone(), code.clone()));
        // Everything that can refuse the change runs before anything is kept: the tree, the
        // certificate's spec, and the backend (a component that does not compile).
        let tree = Arc::new(self.tree_for(&next)?);
        let entry = self.entry(&tree, &spec, Origin::Api, &code)?;
        let kept = workloads::kept(&spec, &code)?;
        self.store
            .put(workloads::NAMESPACE, name.as_bytes(), &kept)?;
        self.loaded = next;
        self.parked.remove(&name);
        let applied = self.publish(tree, Self::with(&now, &name, Some(entry)))?;
        if let Some(old) = now.workload(&name) {
            crate::backends::retire(old.running.clone());
        }
        Ok(applied)
    }

    fn unload(&mut self, name: &str) -> Result<Applied, ChangeError> {
        if self.parked.contains_key(name) {
            // Neither served nor committed: only its record goes.
            self.store.delete(workloads::NAMESPACE, name.as_bytes())?;
            self.parked.remove(name);
            let now = self.current();
            return self.publish(now.tree.clone(), now.workloads.clone());
        }
        if self.config.config.workloads.iter().any(|f| f.name == name) {
            return Err(ChangeError::Conflict(format!(
                "workload '{name}' is defined in enclave.toml; remove it there"
            )));
        }
        if !self.loaded.contains_key(name) {
            return Err(ChangeError::NotFound(format!(
                "no workload '{name}' is loaded"
            )));
        }
        let mut next = self.loaded.clone();
        next.remove(name);
        let tree = Arc::new(self.tree_for(&next)?);
        self.store.delete(workloads::NAMESPACE, name.as_bytes())?;
        self.loaded = next;
        self.reissues.remove(name);
        let now = self.current();
        let applied = self.publish(tree, Self::with(&now, name, None))?;
        if let Some(old) = now.workload(name) {
            crate::backends::retire(old.running.clone());
        }
        Ok(applied)
    }

    /// Take freshly fetched JWKS bytes into use. Unchanged bytes change nothing; bytes without
    /// a usable key are refused and the old set stays.
    ///
    /// The JWKS decides whom the runtime trusts, so the served config root must commit to the
    /// keys in use: the new tree and enclave-wide certificate are published first, then the keys
    /// installed. A token signed by a new key is never accepted while the served root still
    /// commits to the old key set.
    fn rotate(&mut self, bytes: Vec<u8>) -> Result<Applied, ChangeError> {
        let Some(auth) = self.auth.clone() else {
            return Err(ChangeError::Invalid(
                "no [oidc] issuer is configured".into(),
            ));
        };
        if auth.serves(&bytes) {
            return Ok(Applied::Unchanged);
        }
        let set = KeySet::parse(&bytes).map_err(ChangeError::Invalid)?;
        let before = self.rotated_jwks.replace(Arc::new(bytes));
        let tree = match self.tree_for(&self.loaded) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                self.rotated_jwks = before;
                return Err(ChangeError::Invalid(format!(
                    "the new key set cannot be committed: {e}"
                )));
            }
        };
        let now = self.current();
        let applied = self.publish(tree, now.workloads.clone())?;
        auth.install(set);
        Ok(applied)
    }

    /// An app's declaration: kept with the code that made it, then the app's certificate
    /// reissued. Apps may declare on every request; only a change reissues.
    fn declare(
        &mut self,
        app: &str,
        declaring: &[u8; 32],
        index: u32,
        value: Option<&[u8]>,
    ) -> Result<Applied, ChangeError> {
        let now = self.current();
        let gone = || ChangeError::NotFound(format!("app '{app}' is no longer loaded"));
        let entry = now.workload(app).ok_or_else(gone)?;
        if entry.spec.hostnames.is_empty() {
            return Err(ChangeError::Invalid(format!(
                "app '{app}' has no hostname, so no certificate of its own to declare extensions in"
            )));
        }
        let code = entry.code_sha256.ok_or_else(gone)?;
        // A request still running in a component that was replaced since must not put its
        // claims into the successor's certificate: only the code served may declare.
        // (Code hashes are public: no constant-time comparison is needed.)
        if code != *declaring {
            return Err(ChangeError::Conflict(format!(
                "app '{app}' was replaced (now code {}) while this request ran in code {}: \
                 its declaration is not taken",
                hex::encode(code),
                hex::encode(declaring)
            )));
        }
        // Apps may declare on every request; only a change costs anything.
        let current = crate::sdk::declared(&self.store, app, &code)?;
        if current.get(&index).map(Vec::as_slice) == value {
            return Ok(Applied::Unchanged);
        }
        // Each change costs a durable write and a certificate (a quote on hardware), and an app
        // may let any client trigger one: so each app has a budget, and the writer's other
        // changes never queue behind one app's churn.
        let now_t = std::time::Instant::now();
        let budget = self.reissues.entry(app.to_string()).or_insert(Budget {
            tokens: REISSUE_BURST,
            at: now_t,
        });
        let regained = now_t.duration_since(budget.at).as_secs_f64() / REISSUE_EVERY.as_secs_f64();
        budget.tokens = (budget.tokens + regained).min(REISSUE_BURST);
        budget.at = now_t;
        if budget.tokens < 1.0 {
            return Err(ChangeError::Busy(format!(
                "app '{app}' changed its certificate's declarations too often: {} at once, then one per {} s; try later",
                REISSUE_BURST,
                REISSUE_EVERY.as_secs()
            )));
        }
        if !crate::sdk::record_declaration(&self.store, app, &code, index, value)? {
            return Ok(Applied::Unchanged);
        }
        if let Some(b) = self.reissues.get_mut(app) {
            b.tokens -= 1.0;
        }
        let cert = self.certificate(&now.tree, &entry.spec, entry.running.encrypted())?;
        let next = Arc::new(Entry {
            spec: entry.spec.clone(),
            origin: entry.origin,
            code_sha256: entry.code_sha256,
            running: entry.running.clone(),
            handler: entry.handler.clone(),
            cert,
        });
        let applied = self.publish(now.tree.clone(), Self::with(&now, app, Some(next)))?;
        tracing::info!(
            app,
            index,
            declared = value.is_some(),
            "app certificate reissued"
        );
        Ok(applied)
    }

    /// Stop every workload and publish an empty snapshot.
    fn stop_all(&self) {
        let now = self.current();
        let all: Vec<_> = now.workloads.iter().map(|e| e.running.clone()).collect();
        crate::backends::retire_all(&all);
        self.published.store(Arc::new(Snapshot::new(
            now.generation + 1,
            now.tree.clone(),
            Vec::new(),
            Arc::default(),
            // Nothing is released once stopping.
            Arc::default(),
        )));
    }
}

/// The evidence binding the listener's certificates use (`[listener] evidence_binding`).
pub(crate) fn evidence_binding(config: &LoadedConfig) -> BindingFormat {
    match config.config.listener.evidence_binding {
        enclave_config::file::EvidenceBinding::Seed => BindingFormat::Seed,
        enclave_config::file::EvidenceBinding::Dice => BindingFormat::Dice,
    }
}
