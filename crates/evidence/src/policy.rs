//! Appraisal policy: which TEEs, TCB levels and measurements a relying party accepts.
//!
//! A policy is a TOML file (see `docs/policy.md` and `examples/policy.toml`). Unknown keys are an
//! error, so that a misspelt rule can never silently accept everything. Every rejection names the
//! rule that failed.

use serde::Deserialize;
use thiserror::Error;

use crate::appraisal::{Appraisal, Measurements, Platform, TcbStatus, TeeKind};

/// A policy rule that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("policy rule '{rule}' failed: {reason}")]
pub struct PolicyViolation {
    /// The rule, as its key in the policy file (for example `sgx.mr_enclave`).
    pub rule: String,
    /// Why it failed.
    pub reason: String,
}

fn violation(rule: &str, reason: impl Into<String>) -> PolicyViolation {
    PolicyViolation {
        rule: rule.into(),
        reason: reason.into(),
    }
}

/// Fixed-size bytes written as hex in the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bytes =
            hex::decode(s.trim().trim_start_matches("0x")).map_err(serde::de::Error::custom)?;
        let arr: [u8; N] = bytes.try_into().map_err(|b: Vec<u8>| {
            serde::de::Error::custom(format!("expected {N} bytes of hex, found {}", b.len()))
        })?;
        Ok(Hex(arr))
    }
}

/// One value, or a list of acceptable values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany<T> {
    /// A single acceptable value.
    One(T),
    /// Any of these values.
    Many(Vec<T>),
}

// Written out rather than `#[serde(untagged)]`, which would replace the element's own error
// ("expected 32 bytes of hex") with "did not match any variant".
impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IntoDeserializer, SeqAccess, Visitor, value::SeqAccessDeserializer};
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T> OneOrMany<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(v) => v,
        }
    }
}

/// TCB rules (Intel DCAP evidence; SEV-SNP uses `snp.min_tcb`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbRules {
    /// Acceptable statuses. Default: any but Revoked (which is always rejected). Include
    /// "Unknown" to accept quotes verified without collateral.
    pub statuses: Option<Vec<String>>,
    /// Advisory IDs that may apply. Default: any. An empty list accepts none.
    pub advisories: Option<Vec<String>>,
    /// Minimum tcbEvaluationDataNumber of the collateral.
    pub min_evaluation_data_number: Option<u32>,
}

/// SGX enclave identity rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgxRules {
    /// Acceptable MRENCLAVE values.
    pub mr_enclave: Option<OneOrMany<Hex<32>>>,
    /// Acceptable MRSIGNER values.
    pub mr_signer: Option<OneOrMany<Hex<32>>>,
    /// Required ISV product ID.
    pub isv_prod_id: Option<u16>,
    /// Minimum ISV SVN.
    pub min_isv_svn: Option<u16>,
}

/// TDX trust domain rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxRules {
    /// Acceptable MRTD values.
    pub mr_td: Option<OneOrMany<Hex<48>>>,
    /// Acceptable RTMR0 values.
    pub rtmr0: Option<OneOrMany<Hex<48>>>,
    /// Acceptable RTMR1 values.
    pub rtmr1: Option<OneOrMany<Hex<48>>>,
    /// Acceptable RTMR2 values.
    pub rtmr2: Option<OneOrMany<Hex<48>>>,
    /// Acceptable RTMR3 values.
    pub rtmr3: Option<OneOrMany<Hex<48>>>,
    /// Acceptable MRCONFIGID values.
    pub mr_config_id: Option<OneOrMany<Hex<48>>>,
    /// Acceptable MROWNER values.
    pub mr_owner: Option<OneOrMany<Hex<48>>>,
}

/// Minimum SEV-SNP TCB component levels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpMinTcb {
    /// Minimum boot loader SPL.
    pub bootloader: Option<u8>,
    /// Minimum PSP OS SPL.
    pub tee: Option<u8>,
    /// Minimum SNP firmware SPL.
    pub snp: Option<u8>,
    /// Minimum microcode SPL.
    pub microcode: Option<u8>,
    /// Minimum FMC SPL (Turin).
    pub fmc: Option<u8>,
}

/// SEV-SNP guest rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpRules {
    /// Acceptable launch measurements.
    pub measurement: Option<OneOrMany<Hex<48>>>,
    /// Acceptable host data.
    pub host_data: Option<OneOrMany<Hex<32>>>,
    /// Acceptable guest policies (exact values).
    pub policy: Option<OneOrMany<u64>>,
    /// Required VMPL.
    pub vmpl: Option<u32>,
    /// Minimum guest SVN.
    pub min_guest_svn: Option<u32>,
    /// Minimum reported TCB.
    pub min_tcb: Option<SnpMinTcb>,
}

/// An appraisal policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Acceptable TEE kinds. Default: the kinds that have a section below, or all when none has.
    pub tee: Option<Vec<TeeKind>>,
    /// Whether a TEE with debugging enabled is acceptable. Default false.
    #[serde(default)]
    pub allow_debug: bool,
    /// Whether evidence from a simulated TEE is acceptable. Default false; the verifier must also
    /// trust the simulation root explicitly.
    #[serde(default)]
    pub allow_simulated: bool,
    /// report_data must begin with these bytes (hex, 1 to 64 bytes).
    pub report_data: Option<String>,
    /// TCB rules.
    #[serde(default)]
    pub tcb: TcbRules,
    /// SGX rules.
    pub sgx: Option<SgxRules>,
    /// TDX rules.
    pub tdx: Option<TdxRules>,
    /// SEV-SNP rules.
    pub snp: Option<SnpRules>,
}

/// Why a policy file could not be used.
#[derive(Debug, Error)]
#[error("policy {path}: {reason}")]
pub struct PolicyError {
    /// The file.
    pub path: String,
    /// What is wrong, with line and column where TOML gives them.
    pub reason: String,
}

fn one_of<const N: usize>(
    rule: &str,
    allowed: &Option<OneOrMany<Hex<N>>>,
    actual: &[u8; N],
) -> Result<(), PolicyViolation> {
    if let Some(allowed) = allowed {
        let list = allowed.as_slice();
        if !list.iter().any(|h| h.0 == *actual) {
            return Err(violation(
                rule,
                format!(
                    "{} is not one of the {} allowed value(s)",
                    hex::encode(actual),
                    list.len()
                ),
            ));
        }
    }
    Ok(())
}

fn at_least(
    rule: &str,
    min: Option<impl Into<u64> + Copy>,
    actual: impl Into<u64>,
) -> Result<(), PolicyViolation> {
    let actual = actual.into();
    if let Some(min) = min {
        let min = min.into();
        if actual < min {
            return Err(violation(
                rule,
                format!("{actual} is below the minimum {min}"),
            ));
        }
    }
    Ok(())
}

impl Policy {
    /// Parse a policy from TOML text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError {
            path: path.into(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        policy.validate().map_err(|reason| PolicyError {
            path: path.into(),
            reason,
        })?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(statuses) = &self.tcb.statuses {
            for s in statuses {
                if s == "Revoked" {
                    return Err("tcb.statuses: Revoked platforms are always rejected".into());
                }
                if TcbStatus::parse(s).is_none() {
                    let names: Vec<_> = TcbStatus::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(format!(
                        "tcb.statuses: unknown status '{s}' (one of {})",
                        names.join(", ")
                    ));
                }
            }
        }
        if let Some(rd) = &self.report_data {
            let b = hex::decode(rd.trim_start_matches("0x"))
                .map_err(|e| format!("report_data: not hex: {e}"))?;
            if b.is_empty() || b.len() > 64 {
                return Err(format!("report_data: {} bytes; give 1 to 64", b.len()));
            }
        }
        Ok(())
    }

    fn acceptable_kinds(&self) -> Vec<TeeKind> {
        if let Some(kinds) = &self.tee {
            return kinds.clone();
        }
        let mut kinds = Vec::new();
        if self.sgx.is_some() {
            kinds.push(TeeKind::Sgx);
        }
        if self.tdx.is_some() {
            kinds.extend([TeeKind::Tdx, TeeKind::AzureTdx]);
        }
        if self.snp.is_some() {
            kinds.extend([TeeKind::Snp, TeeKind::AzureSnp]);
        }
        if kinds.is_empty() {
            kinds = vec![
                TeeKind::Sgx,
                TeeKind::Tdx,
                TeeKind::Snp,
                TeeKind::AzureSnp,
                TeeKind::AzureTdx,
            ];
        }
        kinds
    }

    /// Appraise a verified piece of evidence. The first rule that fails is returned.
    pub fn check(&self, a: &Appraisal) -> Result<(), PolicyViolation> {
        let kinds = self.acceptable_kinds();
        if !kinds.contains(&a.tee) {
            let names: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(violation(
                "tee",
                format!("{} is not an accepted TEE ({})", a.tee, names.join(", ")),
            ));
        }
        if a.simulated && !self.allow_simulated {
            return Err(violation(
                "allow_simulated",
                "the evidence comes from a simulated TEE and the policy does not allow simulation",
            ));
        }
        if a.debug && !self.allow_debug {
            return Err(violation(
                "allow_debug",
                "the TEE runs with debugging enabled, so the host can read its memory",
            ));
        }
        let intel = matches!(a.platform, Platform::Intel { .. });
        if intel {
            if let Some(statuses) = &self.tcb.statuses
                && !statuses.iter().any(|s| s == a.status.as_str())
            {
                return Err(violation(
                    "tcb.statuses",
                    format!(
                        "TCB status {} is not one of {}",
                        a.status,
                        statuses.join(", ")
                    ),
                ));
            }
            if let Some(allowed) = &self.tcb.advisories {
                for id in &a.advisory_ids {
                    if !allowed.iter().any(|x| x.eq_ignore_ascii_case(id)) {
                        return Err(violation(
                            "tcb.advisories",
                            format!("advisory {id} applies and is not accepted"),
                        ));
                    }
                }
            }
            if let (
                Some(min),
                Platform::Intel {
                    tcb_evaluation_data_number,
                    ..
                },
            ) = (self.tcb.min_evaluation_data_number, &a.platform)
            {
                match tcb_evaluation_data_number {
                    None => {
                        return Err(violation(
                            "tcb.min_evaluation_data_number",
                            "no collateral was supplied, so its evaluation data number is unknown",
                        ));
                    }
                    Some(n) if *n < min => {
                        return Err(violation(
                            "tcb.min_evaluation_data_number",
                            format!(
                                "the collateral's tcbEvaluationDataNumber {n} is below the minimum {min}"
                            ),
                        ));
                    }
                    _ => {}
                }
            }
        }
        if let Some(prefix) = &self.report_data {
            let want = hex::decode(prefix.trim_start_matches("0x")).unwrap_or_default();
            if a.report_data[..want.len().min(64)] != want[..] {
                return Err(violation(
                    "report_data",
                    format!(
                        "report_data {} does not begin with {}",
                        hex::encode(a.report_data),
                        prefix
                    ),
                ));
            }
        }
        match &a.measurements {
            Measurements::Sgx(m) => {
                if let Some(r) = &self.sgx {
                    one_of("sgx.mr_enclave", &r.mr_enclave, &m.mr_enclave)?;
                    one_of("sgx.mr_signer", &r.mr_signer, &m.mr_signer)?;
                    if let Some(id) = r.isv_prod_id
                        && id != m.isv_prod_id
                    {
                        return Err(violation(
                            "sgx.isv_prod_id",
                            format!("ISV product ID {} is not {id}", m.isv_prod_id),
                        ));
                    }
                    at_least("sgx.min_isv_svn", r.min_isv_svn, m.isv_svn)?;
                }
            }
            Measurements::Tdx(m) => {
                if let Some(r) = &self.tdx {
                    one_of("tdx.mr_td", &r.mr_td, &m.mr_td)?;
                    one_of("tdx.rtmr0", &r.rtmr0, &m.rtmr[0])?;
                    one_of("tdx.rtmr1", &r.rtmr1, &m.rtmr[1])?;
                    one_of("tdx.rtmr2", &r.rtmr2, &m.rtmr[2])?;
                    one_of("tdx.rtmr3", &r.rtmr3, &m.rtmr[3])?;
                    one_of("tdx.mr_config_id", &r.mr_config_id, &m.mr_config_id)?;
                    one_of("tdx.mr_owner", &r.mr_owner, &m.mr_owner)?;
                }
            }
            Measurements::Snp(m) => {
                if let Some(r) = &self.snp {
                    one_of("snp.measurement", &r.measurement, &m.measurement)?;
                    one_of("snp.host_data", &r.host_data, &m.host_data)?;
                    if let Some(p) = &r.policy
                        && !p.as_slice().contains(&m.policy)
                    {
                        return Err(violation(
                            "snp.policy",
                            format!("guest policy {:#x} is not an allowed value", m.policy),
                        ));
                    }
                    if let Some(v) = r.vmpl
                        && v != m.vmpl
                    {
                        return Err(violation(
                            "snp.vmpl",
                            format!("the report was made at VMPL {}, not {v}", m.vmpl),
                        ));
                    }
                    at_least("snp.min_guest_svn", r.min_guest_svn, m.guest_svn)?;
                    if let Some(min) = &r.min_tcb {
                        let t = m.reported_tcb;
                        at_least("snp.min_tcb.bootloader", min.bootloader, t.bootloader)?;
                        at_least("snp.min_tcb.tee", min.tee, t.tee)?;
                        at_least("snp.min_tcb.snp", min.snp, t.snp)?;
                        at_least("snp.min_tcb.microcode", min.microcode, t.microcode)?;
                        if let Some(fmc_min) = min.fmc {
                            at_least("snp.min_tcb.fmc", Some(fmc_min), t.fmc.unwrap_or(0))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
