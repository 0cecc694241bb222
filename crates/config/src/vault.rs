//! `[vault]`: the secrets the runtime keeps, and the policies that say who may have them.
//!
//! A policy is a config leaf (`vault/policy/<name>`), so the certificate attests who may get
//! what: a client that trusts a root trusts its policies too. Secret values are never here, nor
//! in `enclave.toml`: they are written through the management API into the sealed store.
//!
//! ```toml
//! [vault]
//! hostname = "vault.example.com"        # where mutual RA-TLS callers reach /vault/v1
//! trust_sim = "sim-pki"                 # development: accept evidence signed by this simulation PKI
//!
//! [vault.policy.db]
//! resources = ["default/db/*"]          # secrets, as <repo>/<type>/<tag>; `*` matches one segment
//! keys = ["disk"]                       # keys the vault generated, by name
//!
//! [[vault.policy.db.allow]]             # a local workload
//! workloads = ["api"]
//!
//! [[vault.policy.db.allow]]             # or a remote attester, with a token
//! tee = ["tdx"]
//! appraisal_policy = "tdx-policy.toml"
//! measurements = ["<mr_td hex>"]
//! oidc = { audience = "vault", required_claims = { group = "db" } }
//! ```
//!
//! Blocks (`allow`) are alternatives: one that holds is enough. Conditions within a block all
//! hold. A block is about a local workload (`workloads`, `code_sha256`) or about a remote
//! attester (`tee`, `appraisal_policy`, `measurements`, `config_root`), never both; `oidc` may
//! be added to either.
//!
//! This module parses and checks policies and yields their leaves; it does not evaluate them
//! (the runtime's vault does, with the evidence and tokens it verified).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ingress::IngressOidc;

/// The longest policy, key or resource segment name.
pub const MAX_NAME: usize = 64;

/// `[vault]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// The name mutual RA-TLS callers reach `/vault/v1/…` under (a client certificate is
    /// requested there). Absent: that way in is closed; the KBS protocol is served on the
    /// management hostname either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The root mutual RA-TLS callers' chains must lead to (PEM). Absent: the operator root of
    /// the runtime's own CA. Committed as `vault/client-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_root: Option<PathBuf>,
    /// Development only: accept evidence signed under this simulation PKI (a directory or its
    /// root certificate), from KBS attesters and RA-TLS callers; a block's appraisal policy must
    /// still say `allow_simulated`. Committed as `vault/trust-sim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_sim: Option<PathBuf>,
    /// How long a KBS session lives after `/auth`, in seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// KBS sessions held at once.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Policies by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy: BTreeMap<String, Policy<PathBuf>>,
}

fn default_session_ttl() -> u64 {
    300
}

fn default_max_sessions() -> u32 {
    1024
}

/// A policy: what it covers, and who may have it. `A` is how a block names its appraisal
/// policy: a path in `enclave.toml`, the policy's text in the committed leaf and in the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "A: Deserialize<'de>"))]
pub struct Policy<A> {
    /// Secrets covered, as `<repo>/<type>/<tag>`; a segment `*` matches any one segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Keys covered, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Who may have them: any one block.
    #[serde(default)]
    pub allow: Vec<Block<A>>,
}

/// The policy as committed and as the management API takes it: appraisal policies inline.
pub type PolicyDoc = Policy<String>;

/// One way to be allowed: every condition set here must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "A: Deserialize<'de>"))]
pub struct Block<A> {
    /// Local workloads, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<String>,
    /// With `workloads`: the workload's code hash (its `workload/<name>/code` leaf's SHA-256,
    /// a container's manifest digest) must be one of these (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_sha256: Vec<String>,
    /// A remote attester's TEE: `sgx`, `tdx`, `snp`, `azure-snp`, `azure-tdx`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tee: Vec<String>,
    /// The appraisal policy (`docs/policy.md`) the attester's evidence must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appraisal_policy: Option<A>,
    /// The attester's primary measurement (MRENCLAVE, MRTD, SNP MEASUREMENT) is one of
    /// these (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<String>,
    /// A mutual RA-TLS caller's certificate carries one of these config roots (hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_root: Vec<String>,
    /// A bearer token from the enclave's `[oidc]` issuer, for `audience`, with these claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<IngressOidc>,
}

impl<A> Block<A> {
    /// Whether the block is about a local workload (else a remote attester, or a token only).
    pub fn is_local(&self) -> bool {
        !self.workloads.is_empty()
    }

    /// Whether the block sets a condition on a remote attester's evidence.
    pub fn is_remote(&self) -> bool {
        !self.tee.is_empty()
            || self.appraisal_policy.is_some()
            || !self.measurements.is_empty()
            || !self.config_root.is_empty()
    }
}

/// A name of a policy, a key, or one segment of a resource path: letters, digits, `.`, `_`,
/// `-`, not `.` or `..`, at most [`MAX_NAME`] bytes.
pub fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_NAME {
        return Err(format!("'{n}' must be 1 to {MAX_NAME} bytes long"));
    }
    if n == "." || n == ".." {
        return Err(format!("'{n}' is not a name"));
    }
    if let Some(c) = n
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "'{n}' has '{c}': only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// A resource pattern: three segments, each a name or `*`.
fn check_resource(r: &str) -> Result<(), String> {
    let parts: Vec<&str> = r.split('/').collect();
    if parts.len() != 3 {
        return Err(format!(
            "'{r}' is not <repo>/<type>/<tag> (three segments, '*' for any one)"
        ));
    }
    for p in parts {
        if p != "*" {
            check_name(p).map_err(|e| format!("resource '{r}': {e}"))?;
        }
    }
    Ok(())
}

/// Whether `pattern` (checked by [`Policy::check`]) covers the resource path `path`.
pub fn resource_matches(pattern: &str, path: &str) -> bool {
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

fn check_hex(field: &str, v: &str, lens: &[usize]) -> Result<(), (String, String)> {
    let bytes =
        hex::decode(v).map_err(|e| (field.to_string(), format!("'{v}' is not hex: {e}")))?;
    if !lens.contains(&bytes.len()) {
        let lens: Vec<String> = lens.iter().map(|l| l.to_string()).collect();
        return Err((
            field.to_string(),
            format!(
                "'{v}' is {} bytes; {} bytes expected",
                bytes.len(),
                lens.join(" or ")
            ),
        ));
    }
    Ok(())
}

/// The TEE names a block may give.
pub const TEE_NAMES: [&str; 5] = ["sgx", "tdx", "snp", "azure-snp", "azure-tdx"];

impl<A> Policy<A> {
    /// Check the policy on its own; `has_oidc`: whether the enclave has an `[oidc]` issuer.
    /// On failure, the field (relative to the policy) and why.
    pub fn check(&self, has_oidc: bool) -> Result<(), (String, String)> {
        if self.resources.is_empty() && self.keys.is_empty() {
            return Err((
                "resources".into(),
                "the policy covers nothing: give resources, keys or both".into(),
            ));
        }
        for r in &self.resources {
            check_resource(r).map_err(|e| ("resources".to_string(), e))?;
        }
        for k in &self.keys {
            check_name(k).map_err(|e| ("keys".to_string(), e))?;
        }
        if self.allow.is_empty() {
            return Err((
                "allow".into(),
                "no block: nobody would be allowed (give at least one [[…allow]])".into(),
            ));
        }
        for (i, b) in self.allow.iter().enumerate() {
            let f = |name: &str| format!("allow[{i}].{name}");
            if b.is_local() && b.is_remote() {
                return Err((
                    f("workloads"),
                    "a block is about a local workload or about a remote attester, not both: \
                     split it into two blocks"
                        .into(),
                ));
            }
            if !b.is_local() && !b.is_remote() && b.oidc.is_none() {
                return Err((
                    format!("allow[{i}]"),
                    "an empty block would allow anyone: name workloads, an attester or a token"
                        .into(),
                ));
            }
            if !b.code_sha256.is_empty() && !b.is_local() {
                return Err((f("code_sha256"), "applies only with workloads".into()));
            }
            for w in &b.workloads {
                check_name(w).map_err(|e| (f("workloads"), e))?;
            }
            for c in &b.code_sha256 {
                check_hex(&f("code_sha256"), c, &[32])?;
            }
            for t in &b.tee {
                if !TEE_NAMES.contains(&t.as_str()) {
                    return Err((
                        f("tee"),
                        format!("'{t}' is not one of {}", TEE_NAMES.join(", ")),
                    ));
                }
            }
            if b.is_remote() && b.appraisal_policy.is_none() {
                return Err((
                    f("appraisal_policy"),
                    "a block about a remote attester needs an appraisal policy: without one any \
                     TCB, debug mode included, would pass"
                        .into(),
                ));
            }
            for m in &b.measurements {
                check_hex(&f("measurements"), m, &[32, 48])?;
            }
            for r in &b.config_root {
                check_hex(&f("config_root"), r, &[32])?;
            }
            // A config root is only as honest as the code that put it in its evidence: any TEE
            // can quote data of its choosing. Pin the code that made the claim.
            if !b.config_root.is_empty() && b.measurements.is_empty() {
                return Err((
                    f("config_root"),
                    "needs measurements too: a config root in evidence is only as honest as the \
                     code that put it there (any TEE can quote data of its choosing)"
                        .into(),
                ));
            }
            if let Some(o) = &b.oidc {
                if !has_oidc {
                    return Err((
                        f("oidc"),
                        "needs the enclave's [oidc] section: its issuer and keys check the token"
                            .into(),
                    ));
                }
                if o.audience.is_empty() {
                    return Err((f("oidc.audience"), "must not be empty".into()));
                }
                for (claim, values) in &o.required_claims {
                    if claim.is_empty() || values.values().is_empty() {
                        return Err((
                            f("oidc.required_claims"),
                            format!("claim '{claim}': a name and at least one value are needed"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the policy covers secret `path`.
    pub fn covers_resource(&self, path: &str) -> bool {
        self.resources.iter().any(|p| resource_matches(p, path))
    }

    /// Whether the policy covers key `name`.
    pub fn covers_key(&self, name: &str) -> bool {
        self.keys.iter().any(|k| k == name)
    }

    /// The policy with each block's appraisal policy mapped by `f` (a path to its text).
    pub fn map_appraisal<B, E>(
        &self,
        mut f: impl FnMut(usize, &A) -> Result<B, E>,
    ) -> Result<Policy<B>, E> {
        let mut allow = Vec::with_capacity(self.allow.len());
        for (i, b) in self.allow.iter().enumerate() {
            allow.push(Block {
                workloads: b.workloads.clone(),
                code_sha256: b.code_sha256.clone(),
                tee: b.tee.clone(),
                appraisal_policy: b.appraisal_policy.as_ref().map(|a| f(i, a)).transpose()?,
                measurements: b.measurements.clone(),
                config_root: b.config_root.clone(),
                oidc: b.oidc.clone(),
            });
        }
        Ok(Policy {
            resources: self.resources.clone(),
            keys: self.keys.clone(),
            allow,
        })
    }
}

impl VaultConfig {
    /// Check the section; `has_oidc`: whether the enclave has an `[oidc]` issuer. On failure,
    /// the field (under `vault.`) and why.
    pub fn check(&self, has_oidc: bool) -> Result<(), (String, String)> {
        if let Some(h) = &self.hostname {
            crate::file::dns_name(h)
                .map_err(|why| ("vault.hostname".into(), format!("'{h}' {why}")))?;
        }
        if self.session_ttl_secs == 0 || self.session_ttl_secs > 3600 {
            return Err((
                "vault.session_ttl_secs".into(),
                format!("{} is outside 1..=3600", self.session_ttl_secs),
            ));
        }
        if self.max_sessions == 0 {
            return Err(("vault.max_sessions".into(), "must be at least 1".into()));
        }
        for (name, p) in &self.policy {
            check_name(name).map_err(|e| (format!("vault.policy.{name}"), e))?;
            p.check(has_oidc)
                .map_err(|(f, why)| (format!("vault.policy.{name}.{f}"), why))?;
        }
        Ok(())
    }

    /// What the `vault` leaf commits: the settings without the paths (their files are leaves)
    /// and without the policies (each its own leaf).
    pub fn leaf(&self) -> VaultLeaf<'_> {
        VaultLeaf {
            hostname: self.hostname.as_deref(),
            session_ttl_secs: self.session_ttl_secs,
            max_sessions: self.max_sessions,
        }
    }
}

/// The `vault` leaf's members.
#[derive(Debug, Serialize)]
pub struct VaultLeaf<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    session_ttl_secs: u64,
    max_sessions: u32,
}

/// The bytes of the files `[vault]` names, read once at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VaultFiles {
    /// `client_root`.
    pub client_root: Option<Vec<u8>>,
    /// `trust_sim`'s root certificate.
    pub trust_sim: Option<Vec<u8>>,
    /// Each file policy, with its blocks' appraisal policies read (as text).
    pub policies: BTreeMap<String, PolicyDoc>,
}

/// `seal_key_kbs`: where a TEE without a sealing key of its own (TDX) gets its root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealKeyKbs {
    /// The KBS: `https://host:port` (its `/kbs/v0` routes).
    pub url: String,
    /// The resource holding the 32-byte root key, `<repo>/<type>/<tag>`.
    pub resource: String,
    /// The root the KBS's TLS chain must lead to (PEM). Committed as `sealing/kbs-root`.
    pub root: PathBuf,
    /// With `policy`: the KBS must be an RA-TLS server whose evidence satisfies this appraisal
    /// policy (an Enclave OS vault). Without: plain TLS to `root` (Trustee). Committed as
    /// `sealing/kbs-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// Development only, with `policy`: accept the KBS's evidence signed under this simulation
    /// PKI. Committed as `sealing/kbs-trust-sim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_sim: Option<PathBuf>,
    /// With `policy`: the config root (hex) the KBS's certificate must carry. Without it, any
    /// instance under `root` that satisfies `policy` (the same build, any configuration, any
    /// operator of it) may hand out the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_root: Option<String>,
}

/// The `sealing/kbs` leaf's members.
#[derive(Debug, Serialize)]
pub struct SealKeyKbsLeaf<'a> {
    url: &'a str,
    resource: &'a str,
    attested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_root: Option<&'a str>,
}

impl SealKeyKbs {
    /// Check the section. On failure, the field and why.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !self.url.starts_with("https://") {
            return Err((
                "url".into(),
                format!("'{}' is not an https:// URL", self.url),
            ));
        }
        let parts: Vec<&str> = self.resource.split('/').collect();
        if parts.len() != 3 {
            return Err((
                "resource".into(),
                format!("'{}' is not <repo>/<type>/<tag>", self.resource),
            ));
        }
        for p in parts {
            check_name(p).map_err(|e| ("resource".to_string(), e))?;
        }
        if let Some(r) = &self.config_root {
            if self.policy.is_none() {
                return Err((
                    "config_root".into(),
                    "applies to an attested (RA-TLS) KBS only: give policy too".into(),
                ));
            }
            check_hex("config_root", r, &[32])?;
        }
        if self.trust_sim.is_some() && self.policy.is_none() {
            return Err((
                "trust_sim".into(),
                "applies to an attested (RA-TLS) KBS only: give policy too".into(),
            ));
        }
        Ok(())
    }

    /// What the `sealing/kbs` leaf commits.
    pub fn leaf(&self) -> SealKeyKbsLeaf<'_> {
        SealKeyKbsLeaf {
            url: &self.url,
            resource: &self.resource,
            attested: self.policy.is_some(),
            config_root: self.config_root.as_deref(),
        }
    }
}

/// The bytes of the files `seal_key_kbs` names, as read at load.
#[derive(Debug, Clone, Copy)]
pub struct KbsTrust<'a> {
    /// `root`.
    pub root: Option<&'a [u8]>,
    /// `trust_sim`'s root certificate.
    pub trust_sim: Option<&'a [u8]>,
    /// `policy`.
    pub policy: Option<&'a [u8]>,
}
