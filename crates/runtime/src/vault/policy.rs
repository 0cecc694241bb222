//! Deciding a release: which policies cover what was asked for, and whether one of their blocks
//! holds for who asks.
//!
//! The facts are established before this runs (a local workload's name and code hash from the
//! snapshot, a remote attester's appraisal from verified evidence, a token's claims from the
//! enclave's issuer); this module only compares them with the committed policies, and says, for
//! a refusal, every block that failed and why.

use std::collections::BTreeMap;

use enclave_config::vault::{Block, PolicyDoc};
use enclave_evidence::Appraisal;

use crate::auth::Authenticator;

/// What is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asked<'a> {
    /// A secret, `<repo>/<type>/<tag>`.
    Secret(&'a str),
    /// A key the vault generated, by name.
    Key(&'a str),
}

impl std::fmt::Display for Asked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Secret(p) => write!(f, "secret {p}"),
            Asked::Key(k) => write!(f, "key {k}"),
        }
    }
}

/// A remote attester whose evidence was verified.
#[derive(Debug, Clone)]
pub(crate) struct Attester {
    pub appraisal: Appraisal,
    /// The config root its RA-TLS certificate carries (mutual RA-TLS callers only), and
    /// whether its evidence binds it (a DICE leaf's claim) rather than only its issuer vouching
    /// for the extension (a seed leaf).
    pub config_root: Option<([u8; 32], bool)>,
}

/// Who asks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who<'a> {
    /// A workload of this runtime: its name, the code hash of what runs, and whether
    /// `enclave.toml` defines it (else it was loaded through the API).
    Local {
        name: &'a str,
        code: Option<&'a [u8; 32]>,
        from_file: bool,
    },
    /// A remote attester.
    Remote(&'a Attester),
}

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Local { name, .. } => write!(f, "workload {name}"),
            Who::Remote(a) => write!(
                f,
                "{} attester {}{}",
                a.appraisal.tee,
                hex::encode(a.appraisal.measurements.primary()),
                if a.appraisal.simulated {
                    " (simulated)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// The bearer token a request carried, and what checks it.
#[derive(Clone, Copy)]
pub(crate) struct Token<'a> {
    pub authorization: Option<&'a str>,
    pub auth: Option<&'a Authenticator>,
}

/// The rule that allowed a release: `policy <name> allow[<i>]`, and the token's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub rule: String,
    pub subject: Option<String>,
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No policy covers what was asked for: it is never released.
    Uncovered(String),
    /// Policies cover it, and no block of theirs holds: each block and why.
    Denied(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Uncovered(s) | Refused::Denied(s) => f.write_str(s),
        }
    }
}

/// Decide whether `who`, with `token`, may have `asked` under `policies`.
pub(crate) fn decide(
    policies: &BTreeMap<String, PolicyDoc>,
    asked: Asked<'_>,
    who: Who<'_>,
    token: Token<'_>,
) -> Result<Allowed, Refused> {
    let covering: Vec<(&String, &PolicyDoc)> = policies
        .iter()
        .filter(|(_, p)| match asked {
            Asked::Secret(path) => p.covers_resource(path),
            Asked::Key(name) => p.covers_key(name),
        })
        .collect();
    if covering.is_empty() {
        return Err(Refused::Uncovered(format!(
            "no vault policy covers {asked}: it is released to nobody"
        )));
    }
    let mut reasons = Vec::new();
    for (name, policy) in covering {
        for (i, block) in policy.allow.iter().enumerate() {
            match holds(block, who, token) {
                Ok(subject) => {
                    return Ok(Allowed {
                        rule: format!("policy {name} allow[{i}]"),
                        subject,
                    });
                }
                Err(why) => reasons.push(format!("policy {name} allow[{i}]: {why}")),
            }
        }
    }
    Err(Refused::Denied(format!(
        "{asked} is not released to {who}: {}",
        reasons.join("; ")
    )))
}

/// Whether any block of any policy could admit attester `a` on its evidence (its TEE, appraisal
/// and measurement; a token is asked for only at release): else why none can.
pub(crate) fn admits_any(
    policies: &BTreeMap<String, PolicyDoc>,
    a: &Attester,
) -> Result<(), String> {
    let mut reasons = Vec::new();
    for (name, policy) in policies {
        for (i, block) in policy.allow.iter().enumerate() {
            if block.is_local() {
                continue;
            }
            match remote(block, a) {
                Ok(()) => return Ok(()),
                Err(why) => reasons.push(format!("policy {name} allow[{i}]: {why}")),
            }
        }
    }
    Err(if reasons.is_empty() {
        "no vault policy admits remote attesters".into()
    } else {
        format!(
            "no vault policy admits this attester: {}",
            reasons.join("; ")
        )
    })
}

/// Whether every condition of `block` holds; the token's subject when it asked for one.
fn holds(block: &Block<String>, who: Who<'_>, token: Token<'_>) -> Result<Option<String>, String> {
    match who {
        Who::Local {
            name,
            code,
            from_file,
        } => {
            if block.is_remote() {
                return Err("it admits remote attesters, not local workloads".into());
            }
            // A block naming no workload admits token holders: the token decides below.
            if block.is_local() && !block.workloads.iter().any(|w| w == name) {
                return Err(format!(
                    "workload '{name}' is not one of {}",
                    block.workloads.join(", ")
                ));
            }
            // A name alone is as good as whoever may put code under it: the operator who
            // writes enclave.toml, or any holder of workloads:write through the API. The
            // latter must not read the vault by loading an app of that name.
            if block.is_local() && block.code_sha256.is_empty() && !from_file {
                return Err(format!(
                    "workload '{name}' was loaded through the API, and the block names no code_sha256: a name alone admits only workloads of enclave.toml"
                ));
            }
            if !block.code_sha256.is_empty() {
                let Some(code) = code else {
                    return Err(format!("workload '{name}' has no committed code hash"));
                };
                let have = hex::encode(code);
                if !block
                    .code_sha256
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&have))
                {
                    return Err(format!(
                        "workload '{name}' runs code {have}, not one of code_sha256"
                    ));
                }
            }
        }
        Who::Remote(a) => {
            if block.is_local() {
                return Err("it admits local workloads only".into());
            }
            remote(block, a)?;
        }
    }
    match &block.oidc {
        None => Ok(None),
        Some(o) => {
            let auth = token
                .auth
                .ok_or("it requires a bearer token, and the runtime has no [oidc] issuer")?;
            let (claims, all) = auth
                .check_for(token.authorization, &o.audience)
                .map_err(|why| format!("{why} (audience '{}')", o.audience))?;
            for (claim, wanted) in &o.required_claims {
                let wanted = wanted.values();
                let holds = all
                    .get(claim)
                    .is_some_and(|v| crate::front::gate::claim_holds(claim, v, wanted));
                if !holds {
                    let seen = match all.get(claim) {
                        Some(v) => format!("the token's '{claim}' is {v}"),
                        None => format!("the token has no '{claim}' claim"),
                    };
                    return Err(format!(
                        "claim '{claim}' must be one of [{}]: {seen}",
                        wanted.join(", ")
                    ));
                }
            }
            Ok(Some(claims.sub))
        }
    }
}

/// The remote conditions of `block` on attester `a`.
fn remote(block: &Block<String>, a: &Attester) -> Result<(), String> {
    // A block with no appraisal policy (a token-only block) still holds remote evidence to
    // the default policy: no simulated TEE, no debug mode, an up-to-date TCB.
    if block.appraisal_policy.is_none() {
        enclave_evidence::Policy::default()
            .check(&a.appraisal)
            .map_err(|v| format!("the default appraisal policy (the block names none): {v}"))?;
    }
    if !block.is_remote() {
        return Ok(());
    }
    let tee = a.appraisal.tee.as_str();
    if !block.tee.is_empty() && !block.tee.iter().any(|t| t == tee) {
        return Err(format!(
            "the attester's TEE is {tee}, not one of {}",
            block.tee.join(", ")
        ));
    }
    if let Some(text) = &block.appraisal_policy {
        let policy = enclave_evidence::Policy::from_toml(text, "appraisal_policy")
            .map_err(|e| format!("its appraisal policy does not parse: {e}"))?;
        policy
            .check(&a.appraisal)
            .map_err(|v| format!("appraisal policy: {v}"))?;
    }
    if !block.measurements.is_empty() {
        let have = hex::encode(a.appraisal.measurements.primary());
        if !block
            .measurements
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&have))
        {
            return Err(format!(
                "the attester's measurement {have} is not one of measurements"
            ));
        }
    }
    if !block.config_root.is_empty() {
        let root = match &a.config_root {
            Some((root, true)) => root,
            Some((_, false)) => {
                return Err(
                    "it requires a config root bound by the caller's evidence, and the caller's leaf only carries one its issuer vouches for (issue it with evidence_binding = \"dice\")"
                        .into(),
                );
            }
            None => {
                return Err(
                    "it requires a config root, which only a mutual RA-TLS caller's certificate carries"
                        .into(),
                );
            }
        };
        let have = hex::encode(root);
        if !block
            .config_root
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&have))
        {
            return Err(format!(
                "the caller's certificate carries config root {have}, not one of config_root"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policies(json: &str) -> BTreeMap<String, PolicyDoc> {
        BTreeMap::from([("p".to_string(), serde_json::from_str(json).unwrap())])
    }

    const NONE: Token<'static> = Token {
        authorization: None,
        auth: None,
    };

    #[test]
    fn local_blocks_check_name_and_code() {
        let code = [7u8; 32];
        let p = policies(&format!(
            r#"{{"resources":["a/b/*"],"keys":["k"],"allow":[{{"workloads":["api"],"code_sha256":["{}"]}}]}}"#,
            hex::encode(code)
        ));
        let api = Who::Local {
            name: "api",
            code: Some(&code),
            from_file: false,
        };
        assert_eq!(
            decide(&p, Asked::Secret("a/b/c"), api, NONE).unwrap().rule,
            "policy p allow[0]"
        );
        assert!(decide(&p, Asked::Key("k"), api, NONE).is_ok());
        let other = [8u8; 32];
        let e = decide(
            &p,
            Asked::Secret("a/b/c"),
            Who::Local {
                name: "api",
                code: Some(&other),
                from_file: false,
            },
            NONE,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("runs code 0808"), "{e}");
        let e = decide(
            &p,
            Asked::Secret("a/b/c"),
            Who::Local {
                name: "web",
                code: Some(&code),
                from_file: false,
            },
            NONE,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'web' is not one of api"), "{e}");
        assert!(matches!(
            decide(&p, Asked::Secret("a/x/c"), api, NONE),
            Err(Refused::Uncovered(_))
        ));
        assert!(matches!(
            decide(&p, Asked::Key("other"), api, NONE),
            Err(Refused::Uncovered(_))
        ));
    }

    #[test]
    fn a_name_alone_admits_only_the_files_workloads() {
        let p = policies(r#"{"resources":["a/b/c"],"allow":[{"workloads":["api"]}]}"#);
        let who = |from_file| Who::Local {
            name: "api",
            code: None,
            from_file,
        };
        assert!(decide(&p, Asked::Secret("a/b/c"), who(true), NONE).is_ok());
        let e = decide(&p, Asked::Secret("a/b/c"), who(false), NONE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("loaded through the API"), "{e}");
    }

    #[test]
    fn a_token_block_without_an_issuer_refuses() {
        let p = policies(
            r#"{"resources":["a/b/c"],"allow":[{"workloads":["api"],"oidc":{"audience":"v","required_claims":{}}}]}"#,
        );
        let e = decide(
            &p,
            Asked::Secret("a/b/c"),
            Who::Local {
                name: "api",
                code: None,
                from_file: true,
            },
            NONE,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no [oidc] issuer"), "{e}");
    }
}
