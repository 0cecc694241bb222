//! Appraisal policies: each rule accepts what it should and names itself when it rejects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use enclave_evidence::amd::Product;
use enclave_evidence::{Appraisal, Policy, Verifier};

fn sgx() -> Appraisal {
    Verifier::default()
        .verify(
            &read("intel/sgx-v3/quote.bin"),
            &collateral("intel/sgx-v3/collateral.json"),
            SGX_AT,
        )
        .unwrap()
}

fn tdx() -> Appraisal {
    Verifier::default()
        .verify(
            &read("intel/tdx-v4/quote.bin"),
            &collateral("intel/tdx-v4/collateral.json"),
            TDX_AT,
        )
        .unwrap()
}

fn snp_debug() -> Appraisal {
    Verifier::default()
        .verify(
            &read("amd/milan-v2-b/report.bin"),
            &amd("amd/milan-v2-b/vcek.der", None, Some(Product::Milan)),
            AMD_AT,
        )
        .unwrap()
}

fn policy(text: &str) -> Policy {
    Policy::from_toml(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn rejects(text: &str, a: &Appraisal, rule: &str) {
    let err = policy(text).check(a).expect_err(text);
    assert_eq!(err.rule, rule, "{err}");
    assert!(err.to_string().contains(rule));
}

const MRENCLAVE: &str = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";

#[test]
fn the_example_policy_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policy.toml"
    ))
    .unwrap();
    policy(&text);
}

#[test]
fn measurements_accept_the_right_value_and_name_the_rule_otherwise() {
    let a = sgx();
    policy(&format!(
        "[sgx]\nmr_enclave = \"{MRENCLAVE}\"\nisv_prod_id = 0\n"
    ))
    .check(&a)
    .unwrap();
    policy(&format!(
        "[sgx]\nmr_enclave = [\"{}\", \"{MRENCLAVE}\"]\n",
        "00".repeat(32)
    ))
    .check(&a)
    .unwrap();
    rejects(
        &format!("[sgx]\nmr_enclave = \"{}\"\n", "00".repeat(32)),
        &a,
        "sgx.mr_enclave",
    );
    rejects(
        &format!("[sgx]\nmr_signer = \"{}\"\n", "11".repeat(32)),
        &a,
        "sgx.mr_signer",
    );
    rejects("[sgx]\nisv_prod_id = 7\n", &a, "sgx.isv_prod_id");
    rejects("[sgx]\nmin_isv_svn = 1\n", &a, "sgx.min_isv_svn");
    let t = tdx();
    rejects(
        &format!("[tdx]\nmr_td = \"{}\"\n", "00".repeat(48)),
        &t,
        "tdx.mr_td",
    );
    rejects(
        &format!("[tdx]\nrtmr2 = \"{}\"\n", "00".repeat(48)),
        &t,
        "tdx.rtmr2",
    );
}

#[test]
fn a_section_for_one_tee_excludes_the_others() {
    rejects(
        &format!("[sgx]\nmr_enclave = \"{MRENCLAVE}\"\n"),
        &tdx(),
        "tee",
    );
    rejects("tee = [\"snp\"]\n", &sgx(), "tee");
    policy("tee = [\"sgx\", \"tdx\"]\n").check(&tdx()).unwrap();
}

#[test]
fn tcb_status_advisories_and_evaluation_number() {
    let a = sgx();
    rejects("[tcb]\nstatuses = [\"UpToDate\"]\n", &a, "tcb.statuses");
    policy("[tcb]\nstatuses = [\"ConfigurationAndSWHardeningNeeded\"]\n")
        .check(&a)
        .unwrap();
    rejects(
        "[tcb]\nadvisories = [\"INTEL-SA-00289\"]\n",
        &a,
        "tcb.advisories",
    );
    policy("[tcb]\nadvisories = [\"INTEL-SA-00289\", \"intel-sa-00615\"]\n")
        .check(&a)
        .unwrap();
    rejects(
        "[tcb]\nmin_evaluation_data_number = 999\n",
        &a,
        "tcb.min_evaluation_data_number",
    );
    policy("[tcb]\nmin_evaluation_data_number = 1\n")
        .check(&a)
        .unwrap();
}

#[test]
fn quotes_without_collateral_need_unknown_allowed_explicitly() {
    let a = Verifier::default()
        .verify(
            &read("intel/parse-only/tdx-v5-b.bin"),
            &Default::default(),
            SGX_AT,
        )
        .unwrap();
    rejects("[tcb]\nstatuses = [\"UpToDate\"]\n", &a, "tcb.statuses");
    rejects(
        "[tcb]\nmin_evaluation_data_number = 1\n",
        &a,
        "tcb.min_evaluation_data_number",
    );
    policy("[tcb]\nstatuses = [\"UpToDate\", \"Unknown\"]\n")
        .check(&a)
        .unwrap();
}

#[test]
fn debug_is_rejected_unless_allowed() {
    let a = snp_debug();
    rejects("", &a, "allow_debug");
    policy("allow_debug = true\n").check(&a).unwrap();
}

#[test]
fn snp_rules() {
    let a = snp_debug();
    let base = "allow_debug = true\n[snp]\n";
    policy(&format!(
        "{base}policy = 0xb0000\nvmpl = {}\n[snp.min_tcb]\nsnp = 1\n",
        match &a.measurements {
            enclave_evidence::Measurements::Snp(m) => m.vmpl,
            _ => unreachable!(),
        }
    ))
    .check(&a)
    .unwrap();
    rejects(&format!("{base}policy = [0x30000]\n"), &a, "snp.policy");
    rejects(
        &format!("{base}measurement = \"{}\"\n", "00".repeat(48)),
        &a,
        "snp.measurement",
    );
    rejects(
        &format!("{base}host_data = \"{}\"\n", "01".repeat(32)),
        &a,
        "snp.host_data",
    );
    rejects(
        &format!("{base}[snp.min_tcb]\nmicrocode = 255\n"),
        &a,
        "snp.min_tcb.microcode",
    );
}

#[test]
fn report_data_prefix() {
    let a = sgx();
    policy(&format!(
        "report_data = \"{}\"\n",
        hex::encode(b"Hello, world!")
    ))
    .check(&a)
    .unwrap();
    rejects("report_data = \"00\"\n", &a, "report_data");
}

#[test]
fn malformed_policies_are_refused_with_the_reason() {
    for (text, needle) in [
        ("allow_debg = true\n", "allow_debg"),
        ("[sgx]\nmr_enclave = \"abcd\"\n", "expected 32 bytes"),
        ("[tcb]\nstatuses = [\"Revoked\"]\n", "always rejected"),
        ("[tcb]\nstatuses = [\"Fine\"]\n", "unknown status"),
        ("tee = [\"sev\"]\n", "unknown variant"),
        ("report_data = \"zz\"\n", "not hex"),
    ] {
        let err = Policy::from_toml(text, "bad.toml").unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains(needle),
            "{text}: {err}"
        );
    }
}
