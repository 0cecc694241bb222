//! Collateral in Intel's formats, signed by the simulation PKI: what a PCCS would serve for the
//! simulated platform. dcap-qvl verifies it exactly as it verifies Intel's.

use rcgen::{CertificateRevocationListParams, Issuer, KeyIdMethod, SerialNumber};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use super::Flavour;
use super::pki::{SimPki, pem};

/// The simulated quoting enclave's identity: MRSIGNER, product IDs and SVN.
pub(crate) const QE_MRSIGNER: [u8; 32] = *b"Enclave OS simulated QE signer!!";
pub(crate) const QE_SVN: u16 = 8;
pub(crate) const TCB_EVALUATION_DATA_NUMBER: u32 = 17;
/// How long collateral is valid; it is reissued when less than a day remains.
pub(crate) const LIFETIME_DAYS: i64 = 30;

fn date(t: OffsetDateTime) -> String {
    enclave_evidence::time::fmt(t.unix_timestamp())
}

fn svns(values: &[u8; 16]) -> Value {
    Value::Array(values.iter().map(|v| json!({ "svn": v })).collect())
}

pub(crate) fn qe_isv_prod_id(flavour: Flavour) -> u16 {
    match flavour {
        Flavour::Sgx => 1,
        Flavour::Tdx => 2,
    }
}

fn tcb_info(pki: &SimPki, flavour: Flavour, issue: OffsetDateTime, next: OffsetDateTime) -> String {
    let p = &pki.platform;
    let mut tcb = json!({ "sgxtcbcomponents": svns(&p.cpu_svn), "pcesvn": p.pce_svn });
    let mut info = json!({
        "id": if flavour == Flavour::Tdx { "TDX" } else { "SGX" },
        "version": 3,
        "issueDate": date(issue),
        "nextUpdate": date(next),
        "fmspc": p.fmspc.to_uppercase(),
        "pceId": p.pce_id.to_uppercase(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
    });
    if flavour == Flavour::Tdx {
        tcb["tdxtcbcomponents"] = svns(&p.tee_tcb_svn);
        info["tdxModule"] = json!({
            "mrsigner": "00".repeat(48),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        });
        info["tdxModuleIdentities"] = json!([]);
    }
    info["tcbLevels"] = json!([{ "tcb": tcb, "tcbDate": date(issue - Duration::days(1)), "tcbStatus": "UpToDate" }]);
    info.to_string()
}

fn qe_identity(flavour: Flavour, issue: OffsetDateTime, next: OffsetDateTime) -> String {
    json!({
        "id": if flavour == Flavour::Tdx { "TD_QE" } else { "QE" },
        "version": 2,
        "issueDate": date(issue),
        "nextUpdate": date(next),
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex::encode_upper(QE_MRSIGNER),
        "isvprodid": qe_isv_prod_id(flavour),
        "tcbLevels": [{ "tcb": { "isvsvn": QE_SVN }, "tcbDate": date(issue - Duration::days(1)), "tcbStatus": "UpToDate" }],
    })
    .to_string()
}

fn crl(
    issuer_der: &[u8],
    key: &rcgen::KeyPair,
    issue: OffsetDateTime,
    next: OffsetDateTime,
) -> Result<Vec<u8>, String> {
    let issuer = Issuer::from_ca_cert_der(&issuer_der.into(), key)
        .map_err(|e| format!("CRL issuer: {e}"))?;
    let params = CertificateRevocationListParams {
        this_update: issue,
        next_update: next,
        crl_number: SerialNumber::from(issue.unix_timestamp().unsigned_abs()),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(&issuer)
        .map(|c| c.der().to_vec())
        .map_err(|e| format!("CRL signing failed: {e}"))
}

/// Fresh collateral for `flavour`, valid from an hour ago for [`LIFETIME_DAYS`], as the JSON that
/// `enclave_evidence::intel::Collateral::from_json` reads.
pub(crate) fn issue(pki: &SimPki, flavour: Flavour) -> Result<String, String> {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .map_err(|e| e.to_string())?;
    let issue = now - Duration::hours(1);
    let next = now + Duration::days(LIFETIME_DAYS);
    let tcb_info = tcb_info(pki, flavour, issue, next);
    let qe_identity = qe_identity(flavour, issue, next);
    let tcb_chain = format!("{}{}", pki.tcb.pem(), pki.root.pem());
    let root_key = pki.root.key_pair()?;
    let pck_ca_key = pki.pck_ca.key_pair()?;
    let collateral = json!({
        "pck_crl_issuer_chain": format!("{}{}", pki.pck_ca.pem(), pki.root.pem()),
        "root_ca_crl": hex::encode(crl(&pki.root.der, &root_key, issue, next)?),
        "pck_crl": hex::encode(crl(&pki.pck_ca.der, &pck_ca_key, issue, next)?),
        "tcb_info_issuer_chain": tcb_chain,
        "tcb_info_signature": hex::encode(pki.tcb.sign_raw(tcb_info.as_bytes())?),
        "tcb_info": tcb_info,
        "qe_identity_issuer_chain": tcb_chain,
        "qe_identity_signature": hex::encode(pki.tcb.sign_raw(qe_identity.as_bytes())?),
        "qe_identity": qe_identity,
    });
    Ok(collateral.to_string())
}

/// Whether stored collateral still has more than a day to run.
pub(crate) fn fresh(json: &str) -> bool {
    let Ok(c) = enclave_evidence::intel::Collateral::from_json(json.as_bytes()) else {
        return false;
    };
    let (_, until) = c.window();
    until > OffsetDateTime::now_utc().unix_timestamp() + 86_400
}

/// The PEM of the chain a quote carries: PCK leaf, PCK CA, root.
pub(crate) fn pck_chain_pem(pki: &SimPki) -> String {
    format!(
        "{}{}{}",
        pki.pck.pem(),
        pki.pck_ca.pem(),
        pem("CERTIFICATE", &pki.root.der)
    )
}
