//! The vault: secrets and keys kept in the sealed store, released only to callers who prove
//! what they run and, where a policy asks, who they are.
//!
//! | part | what |
//! |---|---|
//! | `policy` | deciding a release against the committed policies (`vault/policy/<name>`) |
//! | `secrets` | where secrets and keys live (`sys/vault`) |
//! | `routes` | the operator's routes and the mutual RA-TLS + OIDC way in (`/vault/v1`) |
//! | `kbs` | the Trustee KBS protocol (`/kbs/v0`), for Confidential Containers guests |
//! | `skr` | Azure's SKR sidecar API on the bridge's gateway, for this runtime's containers |
//! | `code_keys` | keys the runtime itself takes for a workload, to decrypt its encrypted code |
//!
//! Every release and every refusal is logged to the `enclave_os::audit` target (who, what, the
//! rule that allowed or every rule that refused; never the value) and counted in the metrics
//! (`enclave_os_vault_decisions_total`).

pub(crate) mod code_keys;
pub(crate) mod kbs;
pub(crate) mod policy;
pub(crate) mod routes;
pub(crate) mod secrets;
pub(crate) mod skr;

use std::sync::Arc;

use enclave_config::LoadedConfig;
use enclave_ratls::RatlsVerifier;
use enclave_store::Store;

use crate::auth::Authenticator;
use crate::control::Control;
use crate::metrics::Metrics;
use policy::{Allowed, Asked, Refused, Token, Who};

/// What the vault's routes reach.
pub(crate) struct Vault {
    pub store: Arc<Store>,
    pub control: Control,
    pub auth: Option<Arc<Authenticator>>,
    pub metrics: Arc<Metrics>,
    /// Remote evidence: KBS attesters' and mutual RA-TLS callers' (root, simulation trust).
    pub verifier: RatlsVerifier,
    /// `vault.hostname`: where `/vault/v1` is served.
    pub hostname: Option<String>,
    /// The KBS protocol's sessions and the token key.
    pub kbs: enclave_vault::KbsState,
    /// What each attested KBS session's evidence established.
    pub attested: kbs::Attested,
    /// `vault.session_ttl_secs`.
    pub session_ttl: std::time::Duration,
    /// `vault.max_sessions`.
    pub max_sessions: usize,
    /// KBS evidence appraised at once: anyone may ask for one, and each costs signature and
    /// certificate-chain checks.
    pub appraisals: Arc<tokio::sync::Semaphore>,
}

/// KBS appraisals run at once (the rest wait their turn, holding only their connection).
const MAX_APPRAISALS: usize = 2;

impl Vault {
    /// The vault of `config` (which has `[vault]`), its token key taken from (or made in) the
    /// store. `own_ca`: the runtime's intermediary CA (DER), the default root of callers.
    pub(crate) fn new(
        config: &LoadedConfig,
        store: Arc<Store>,
        control: Control,
        auth: Option<Arc<Authenticator>>,
        metrics: Arc<Metrics>,
        own_ca: &[u8],
    ) -> Result<Option<Self>, crate::RuntimeError> {
        let Some(v) = &config.config.vault else {
            return Ok(None);
        };
        let fail = |e: String| crate::RuntimeError::Store(format!("vault: {e}"));
        let files = config.vault_files();
        for (name, p) in &files.policies {
            crate::control::check_appraisal_policies(name, p).map_err(fail)?;
        }
        let sim_dir = v.trust_sim.as_ref().map(|p| config.resolve(p));
        let verifier = crate::trust::committed(
            "vault.client_root",
            Some(files.client_root.as_deref().unwrap_or(own_ca)),
            files.trust_sim.as_deref(),
            sim_dir.as_deref(),
        )
        .map_err(fail)?;
        let token_key = secrets::token_key(&store).map_err(fail)?;
        let (session_ttl, max_sessions) = kbs::settings(v);
        let kbs = enclave_vault::KbsState::new(
            enclave_vault::KbsConfig {
                session_ttl,
                max_sessions,
                // What `kbs::appraise` reads: no session for evidence it would refuse.
                tees: vec![kbs_types::Tee::Tdx, kbs_types::Tee::Sgx],
                issuer: "enclave-os".into(),
                developer: "enclave-os".into(),
                ..Default::default()
            },
            token_key,
        );
        Ok(Some(Self {
            store,
            control,
            auth,
            metrics,
            verifier,
            hostname: v.hostname.clone(),
            kbs,
            attested: kbs::Attested::default(),
            session_ttl,
            max_sessions,
            appraisals: Arc::new(tokio::sync::Semaphore::new(MAX_APPRAISALS)),
        }))
    }

    /// The thumbprint of the token-signing key (OID 2.9).
    pub(crate) fn token_thumbprint(&self) -> [u8; 32] {
        self.kbs.token_key().thumbprint()
    }

    /// Decide a release against the policies served now. A refusal is logged and counted
    /// here; an allowed release only once the value is handed over ([`Self::released`]), so
    /// that "allowed, and nothing kept" counts as neither.
    pub(crate) fn decide(
        &self,
        via: &'static str,
        asked: Asked<'_>,
        who: Who<'_>,
        authorization: Option<&str>,
    ) -> Result<Allowed, Refused> {
        let now = self.control.snapshot();
        let token = Token {
            authorization,
            auth: self.auth.as_deref(),
        };
        let decision = policy::decide(&now.policies, asked, who, token);
        if let Err(r) = &decision {
            tracing::warn!(
                target: "enclave_os::audit",
                event = "vault.refuse",
                via,
                what = %asked,
                who = %who,
                reason = %r,
                "refused"
            );
            self.metrics.vault(via, false);
        }
        decision
    }

    /// Log and count a release [`Self::decide`] allowed, once the value is handed over.
    pub(crate) fn released(
        &self,
        via: &'static str,
        asked: Asked<'_>,
        who: Who<'_>,
        allowed: &Allowed,
    ) {
        tracing::info!(
            target: "enclave_os::audit",
            event = "vault.release",
            via,
            what = %asked,
            who = %who,
            rule = %allowed.rule,
            subject = allowed.subject.as_deref().unwrap_or(""),
            "released"
        );
        self.metrics.vault(via, true);
    }
}
