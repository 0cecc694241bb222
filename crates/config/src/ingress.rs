//! `[workload.ingress]`: who may call a workload, checked by the runtime's front before a request
//! reaches it. Any kind of workload may have one.
//!
//! Two gates, either, both (both must pass) or neither:
//!
//! - `client_auth = "ratls"`: mutual RA-TLS. The client presents an RA-TLS certificate; its chain
//!   must lead to `client_root` (by default the operator root of the runtime's own CA), its
//!   evidence must satisfy the appraisal policy `client_policy`, and, with `client_names`, its
//!   leaf must be valid for one of those names.
//! - `[workload.ingress.oidc]`: a bearer token from the enclave's `[oidc]` issuer (its keys are
//!   the committed `oidc/jwks`), for `audience`, carrying every `required_claims` entry.
//!
//! What decides who may call is committed: the settings in `workload/<name>/settings` (an
//! `ingress` member, absent when the table is, so that older trees keep their roots), and the
//! bytes of the files, read once at load: `workload/<name>/client-policy`,
//! `workload/<name>/client-root` and `workload/<name>/client-trust-sim`. A workload's own
//! certificate commits its own leaves, so it attests who may call it.
//!
//! This module parses and checks the section; it neither verifies certificates nor tokens (the
//! runtime's front does).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How the front authenticates a workload's clients at the TLS layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is requested.
    #[default]
    None,
    /// Mutual RA-TLS: an RA-TLS client certificate, appraised with `client_policy`.
    Ratls,
}

/// One claim's acceptable value, or a list of acceptable values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClaimValues {
    /// Exactly this value.
    One(String),
    /// Any one of these.
    Any(Vec<String>),
}

impl ClaimValues {
    /// The acceptable values.
    pub fn values(&self) -> &[String] {
        match self {
            ClaimValues::One(v) => std::slice::from_ref(v),
            ClaimValues::Any(v) => v,
        }
    }
}

/// `[workload.ingress.oidc]`: a bearer token is required on every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressOidc {
    /// The `aud` the token must carry (the workload's own, not the management API's).
    pub audience: String,
    /// Claims the token must carry: a string claim equal to the value (or one of the values),
    /// or an array claim containing it (or one of them). A space-separated `scope` claim is
    /// read as its list of scopes.
    #[serde(default)]
    pub required_claims: BTreeMap<String, ClaimValues>,
}

/// `[workload.ingress]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    /// `none` (default) or `ratls`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The appraisal policy (TOML, `docs/policy.md`) a client's evidence must satisfy; required
    /// with `ratls`. Committed as `workload/<name>/client-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_policy: Option<PathBuf>,
    /// With `ratls`: the client's leaf must be valid for one of these DNS names. Empty: any name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_names: Vec<String>,
    /// With `ratls`: the root client chains must lead to (PEM). Absent: the operator root of the
    /// runtime's own CA, so only the operator's instances can call. Committed as
    /// `workload/<name>/client-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_root: Option<PathBuf>,
    /// Development only, with `ratls`: accept evidence signed under this simulation PKI (a
    /// directory or its root certificate); the policy must still say `allow_simulated`.
    /// Committed as `workload/<name>/client-trust-sim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_trust_sim: Option<PathBuf>,
    /// A bearer token gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<IngressOidc>,
}

/// What `workload/<name>/settings` commits of `[workload.ingress]`: the settings without the
/// paths, whose files are leaves of their own (where the host keeps them is its choice).
#[derive(Debug, Serialize)]
pub struct IngressLeaf<'a> {
    client_auth: ClientAuth,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    client_names: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc: Option<&'a IngressOidc>,
}

/// The bytes of the files `[workload.ingress]` names, read once at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressFiles {
    /// `client_policy`.
    pub client_policy: Option<Vec<u8>>,
    /// `client_root`.
    pub client_root: Option<Vec<u8>>,
    /// `client_trust_sim`'s root certificate.
    pub client_trust_sim: Option<Vec<u8>>,
}

impl Ingress {
    /// What the settings leaf commits.
    pub fn leaf(&self) -> IngressLeaf<'_> {
        IngressLeaf {
            client_auth: self.client_auth,
            client_names: &self.client_names,
            oidc: self.oidc.as_ref(),
        }
    }

    /// Check the section on its own; `has_oidc`: whether the file has `[oidc]`. On failure, the
    /// field (under `ingress.`) and why.
    pub fn check(&self, has_oidc: bool) -> Result<(), (String, String)> {
        let ratls_only = [
            ("client_policy", self.client_policy.is_some()),
            ("client_names", !self.client_names.is_empty()),
            ("client_root", self.client_root.is_some()),
            ("client_trust_sim", self.client_trust_sim.is_some()),
        ];
        match self.client_auth {
            ClientAuth::None => {
                if let Some((field, _)) = ratls_only.iter().find(|(_, set)| *set) {
                    return Err((
                        format!("ingress.{field}"),
                        "applies to client_auth = \"ratls\" only, and client_auth is \"none\""
                            .into(),
                    ));
                }
            }
            ClientAuth::Ratls => {
                if self.client_policy.is_none() {
                    return Err((
                        "ingress.client_policy".into(),
                        "client_auth = \"ratls\" needs an appraisal policy: without one any TEE, \
                         running anything, would be let in"
                            .into(),
                    ));
                }
                for n in &self.client_names {
                    crate::file::dns_name(n).map_err(|why| {
                        ("ingress.client_names".to_string(), format!("'{n}' {why}"))
                    })?;
                }
            }
        }
        if let Some(o) = &self.oidc {
            if !has_oidc {
                return Err((
                    "ingress.oidc".into(),
                    "needs the enclave's [oidc] section: its issuer and keys (oidc/jwks) are \
                     the ones workload tokens are checked with"
                        .into(),
                ));
            }
            if o.audience.is_empty() {
                return Err(("ingress.oidc.audience".into(), "must not be empty".into()));
            }
            for (claim, values) in &o.required_claims {
                if claim.is_empty() {
                    return Err((
                        "ingress.oidc.required_claims".into(),
                        "a claim name must not be empty".into(),
                    ));
                }
                if values.values().is_empty() {
                    return Err((
                        format!("ingress.oidc.required_claims.{claim}"),
                        "an empty list of values would refuse every token".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The file leaves of a workload's ingress: policy, root and simulation root, when set.
pub(crate) fn file_leaves(name: &str, files: &IngressFiles) -> Vec<(String, Vec<u8>)> {
    [
        ("client-policy", &files.client_policy),
        ("client-root", &files.client_root),
        ("client-trust-sim", &files.client_trust_sim),
    ]
    .into_iter()
    .filter_map(|(leaf, bytes)| {
        bytes
            .as_ref()
            .map(|b| (format!("workload/{name}/{leaf}"), b.clone()))
    })
    .collect()
}
