//! DCAP collateral: the signed TCB Info, QE Identity and CRLs that say how current a platform is.

use dcap_qvl::QuoteCollateralV3;
use serde_json::Value;

use crate::error::VerifyError;

/// Collateral for one quote, in dcap-qvl's shape, with what the verifier needs from it computed
/// once: its content digest (the warm cache's key), the TCB Info's PCE-ID, the evaluation data
/// number and the window in which every item is valid.
#[derive(Debug, Clone)]
pub struct Collateral {
    qvl: QuoteCollateralV3,
    digest: [u8; 32],
    pce_id: String,
    fmspc: String,
    evaluation_data_number: u32,
    dated: Vec<Dated>,
}

impl PartialEq for Collateral {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Collateral {}

fn text(v: &Value, name: &str) -> Result<String, VerifyError> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            VerifyError::input(
                "collateral",
                format!("member '{name}' is missing or not a string"),
            )
        })
}

/// Binary members arrive as hex strings (PCCS and dcap-qvl's JSON) or as arrays of numbers.
fn bytes(v: &Value, name: &str) -> Result<Vec<u8>, VerifyError> {
    match v.get(name) {
        Some(Value::String(s)) => hex::decode(s.trim()).map_err(|e| {
            VerifyError::input("collateral", format!("member '{name}' is not hex: {e}"))
        }),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                VerifyError::input("collateral", format!("member '{name}' is not a byte array"))
            }),
        _ => Err(VerifyError::input(
            "collateral",
            format!("member '{name}' is missing"),
        )),
    }
}

impl Collateral {
    /// Parse the JSON form: one object with `pck_crl_issuer_chain`, `root_ca_crl`, `pck_crl`,
    /// `tcb_info_issuer_chain`, `tcb_info`, `tcb_info_signature`, `qe_identity_issuer_chain`,
    /// `qe_identity` and `qe_identity_signature`.
    pub fn from_json(json: &[u8]) -> Result<Self, VerifyError> {
        let v: Value = serde_json::from_slice(json)
            .map_err(|e| VerifyError::input("collateral", format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(VerifyError::input("collateral", "not a JSON object"));
        }
        Self::new(QuoteCollateralV3 {
            pck_crl_issuer_chain: text(&v, "pck_crl_issuer_chain")?,
            root_ca_crl: bytes(&v, "root_ca_crl")?,
            pck_crl: bytes(&v, "pck_crl")?,
            tcb_info_issuer_chain: text(&v, "tcb_info_issuer_chain")?,
            tcb_info: text(&v, "tcb_info")?,
            tcb_info_signature: bytes(&v, "tcb_info_signature")?,
            qe_identity_issuer_chain: text(&v, "qe_identity_issuer_chain")?,
            qe_identity: text(&v, "qe_identity")?,
            qe_identity_signature: bytes(&v, "qe_identity_signature")?,
            pck_certificate_chain: None,
        })
    }

    /// Wrap collateral already in dcap-qvl's shape, checking that its TCB Info, QE Identity, CRLs
    /// and chains parse.
    pub fn new(qvl: QuoteCollateralV3) -> Result<Self, VerifyError> {
        let tcb_info: dcap_qvl::tcb_info::TcbInfo =
            serde_json::from_str(&tcb_info_body(&qvl.tcb_info)?).map_err(|e| {
                VerifyError::input("collateral", format!("tcb_info is not TCB Info JSON: {e}"))
            })?;
        let qe_number = json_number(
            &qvl.qe_identity,
            "enclaveIdentity",
            "tcbEvaluationDataNumber",
        )?;
        let dated = dated_items(&qvl)?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        digest_parts(&qvl, &mut ctx);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ctx.finish().as_ref());
        Ok(Self {
            pce_id: tcb_info.pce_id,
            fmspc: tcb_info.fmspc,
            evaluation_data_number: tcb_info.tcb_evaluation_data_number.min(qe_number),
            qvl,
            digest,
            dated,
        })
    }

    /// The collateral as dcap-qvl takes it.
    pub fn qvl(&self) -> &QuoteCollateralV3 {
        &self.qvl
    }

    /// SHA-256 over every member: the collateral's content identity.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The TCB Info's `fmspc` (hex), which dcap-qvl requires the PCK certificate's to equal.
    pub fn fmspc(&self) -> &str {
        &self.fmspc
    }

    /// The TCB Info's `pceId`.
    pub fn pce_id(&self) -> &str {
        &self.pce_id
    }

    /// The lower of the TCB Info's and QE Identity's `tcbEvaluationDataNumber`.
    pub fn evaluation_data_number(&self) -> u32 {
        self.evaluation_data_number
    }

    /// The window (unix seconds, inclusive) in which every item of collateral is valid.
    pub fn window(&self) -> (i64, i64) {
        self.dated.iter().fold((i64::MIN, i64::MAX), |(nb, na), d| {
            (nb.max(d.not_before), na.min(d.not_after))
        })
    }

    /// The JSON form, as read by [`Collateral::from_json`].
    pub fn to_json(&self) -> String {
        let c = &self.qvl;
        serde_json::json!({
            "pck_crl_issuer_chain": c.pck_crl_issuer_chain,
            "root_ca_crl": hex::encode(&c.root_ca_crl),
            "pck_crl": hex::encode(&c.pck_crl),
            "tcb_info_issuer_chain": c.tcb_info_issuer_chain,
            "tcb_info": c.tcb_info,
            "tcb_info_signature": hex::encode(&c.tcb_info_signature),
            "qe_identity_issuer_chain": c.qe_identity_issuer_chain,
            "qe_identity": c.qe_identity,
            "qe_identity_signature": hex::encode(&c.qe_identity_signature),
        })
        .to_string()
    }
}

fn digest_parts(c: &QuoteCollateralV3, ctx: &mut ring::digest::Context) {
    ctx.update(b"enclave-os/dcap-collateral/v1");
    for part in [
        c.pck_crl_issuer_chain.as_bytes(),
        &c.root_ca_crl,
        &c.pck_crl,
        c.tcb_info_issuer_chain.as_bytes(),
        c.tcb_info.as_bytes(),
        &c.tcb_info_signature,
        c.qe_identity_issuer_chain.as_bytes(),
        c.qe_identity.as_bytes(),
        &c.qe_identity_signature,
    ] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    // dcap-qvl prefers this chain to the quote's own when it is present, so it is part of what
    // an appraisal depends on; absent and empty differ.
    match &c.pck_certificate_chain {
        None => ctx.update(&u64::MAX.to_le_bytes()),
        Some(chain) => {
            ctx.update(&(chain.len() as u64).to_le_bytes());
            ctx.update(chain.as_bytes());
        }
    }
}

/// PCCS serves TCB Info either bare or wrapped as `{"tcbInfo": ..., "signature": ...}`.
fn tcb_info_body(json: &str) -> Result<String, VerifyError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| VerifyError::input("collateral", format!("tcb_info is not JSON: {e}")))?;
    Ok(v.get("tcbInfo").unwrap_or(&v).to_string())
}

fn json_number(json: &str, inner: &str, name: &str) -> Result<u32, VerifyError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| VerifyError::input("collateral", format!("{inner} is not JSON: {e}")))?;
    v.get(inner)
        .unwrap_or(&v)
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| VerifyError::input("collateral", format!("{inner} has no {name}")))
}

/// One dated item of collateral: what it is, and the window in which it is valid.
#[derive(Debug, Clone)]
struct Dated {
    what: String,
    not_before: i64,
    not_after: i64,
}

fn json_dates(json: &str, what: &str, inner: &str) -> Result<Dated, VerifyError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| VerifyError::input("collateral", format!("{what} is not JSON: {e}")))?;
    let body = v.get(inner).unwrap_or(&v);
    let date = |name: &str| -> Result<i64, VerifyError> {
        let s = body
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| VerifyError::input("collateral", format!("{what} has no {name}")))?;
        crate::time::parse(s)
            .map_err(|e| VerifyError::input("collateral", format!("{what} {name}: {e}")))
    };
    Ok(Dated {
        what: what.into(),
        not_before: date("issueDate")?,
        not_after: date("nextUpdate")?,
    })
}

impl Collateral {
    /// Find the first item of collateral that is not valid at `at`, and say which and why.
    ///
    /// dcap-qvl enforces the same windows; this exists to turn its rejection into a sentence
    /// naming the item and its dates.
    pub fn check_times(&self, at: i64) -> Result<(), VerifyError> {
        for item in &self.dated {
            item.check(at)?;
        }
        Ok(())
    }
}

impl Dated {
    fn check(&self, at: i64) -> Result<(), VerifyError> {
        if at > self.not_after {
            return Err(VerifyError::Collateral(format!(
                "the {} expired at {} (verification time {})",
                self.what,
                crate::time::fmt(self.not_after),
                crate::time::fmt(at)
            )));
        }
        if at < self.not_before {
            return Err(VerifyError::Collateral(format!(
                "the {} is not valid until {} (verification time {})",
                self.what,
                crate::time::fmt(self.not_before),
                crate::time::fmt(at)
            )));
        }
        Ok(())
    }
}

fn dated_items(c: &QuoteCollateralV3) -> Result<Vec<Dated>, VerifyError> {
    use x509_parser::prelude::*;
    let mut items = vec![
        json_dates(&c.tcb_info, "TCB Info", "tcbInfo")?,
        json_dates(&c.qe_identity, "QE Identity", "enclaveIdentity")?,
    ];
    for (der, what) in [(&c.root_ca_crl, "root CA CRL"), (&c.pck_crl, "PCK CRL")] {
        let (_, crl) = parse_x509_crl(der)
            .map_err(|e| VerifyError::input("collateral", format!("{what} does not parse: {e}")))?;
        items.push(Dated {
            what: what.into(),
            not_before: crl.last_update().timestamp(),
            not_after: crl.next_update().map_or(i64::MAX, |t| t.timestamp()),
        });
    }
    for (pem, what) in [
        (&c.tcb_info_issuer_chain, "TCB Info signing chain"),
        (&c.qe_identity_issuer_chain, "QE Identity signing chain"),
        (&c.pck_crl_issuer_chain, "PCK CRL issuer chain"),
    ] {
        for der in crate::input::pem_certificates(pem.as_bytes())
            .map_err(|e| VerifyError::input("collateral", format!("{what}: {e}")))?
        {
            let (_, cert) = X509Certificate::from_der(&der)
                .map_err(|e| VerifyError::input("collateral", format!("{what}: {e}")))?;
            items.push(Dated {
                what: format!("{what} certificate '{}'", cert.subject()),
                not_before: cert.validity().not_before.timestamp(),
                not_after: cert.validity().not_after.timestamp(),
            });
        }
    }
    Ok(items)
}
