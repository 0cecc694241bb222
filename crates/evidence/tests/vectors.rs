//! Every real vector gives its stated outcome (testdata/vectors/README.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use enclave_evidence::amd::Product;
use enclave_evidence::{
    Evidence, Measurements, Platform, TcbStatus, TeeKind, Verifier, VerifyError,
};

#[test]
fn sgx_v3_verifies_with_its_status_and_advisories() {
    let a = Verifier::default()
        .verify(
            &read("intel/sgx-v3/quote.bin"),
            &collateral("intel/sgx-v3/collateral.json"),
            SGX_AT,
        )
        .unwrap();
    assert_eq!(a.tee, TeeKind::Sgx);
    assert!(!a.simulated);
    assert_eq!(a.status, TcbStatus::ConfigurationAndSWHardeningNeeded);
    assert_eq!(a.advisory_ids, vec!["INTEL-SA-00289", "INTEL-SA-00615"]);
    let Measurements::Sgx(m) = &a.measurements else {
        panic!("not SGX")
    };
    assert!(hex::encode(m.mr_enclave).starts_with("33d8736d"));
    assert!(hex::encode(m.mr_enclave).ends_with("2fbb"));
    assert!(hex::encode(m.mr_signer).starts_with("815f42f1"));
    assert!(hex::encode(m.mr_signer).ends_with("e0e6"));
    assert!(a.report_data.starts_with(b"Hello, world!"));
    let Platform::Intel {
        fmspc,
        tcb_evaluation_data_number,
        ..
    } = &a.platform
    else {
        panic!()
    };
    assert_eq!(hex::encode(fmspc), "00a067110000");
    assert!(tcb_evaluation_data_number.is_some());
}

#[test]
fn sgx_v3_collateral_window_is_enforced_to_the_second() {
    let quote = read("intel/sgx-v3/quote.bin");
    let inputs = collateral("intel/sgx-v3/collateral.json");
    let v = Verifier::default();
    // The window is 2025-06-19T10:56:11Z → 2025-07-19T10:01:18Z.
    assert!(v.verify(&quote, &inputs, 1750330571).is_ok());
    assert!(v.verify(&quote, &inputs, 1752919278).is_ok());
    let late = v.verify(&quote, &inputs, 1752919279).unwrap_err();
    assert!(late.to_string().contains("expired"), "{late}");
    let early = v.verify(&quote, &inputs, 1750330570).unwrap_err();
    assert!(early.to_string().contains("not valid"), "{early}");
}

#[test]
fn tdx_v4_verifies_up_to_date_despite_zero_padding() {
    let quote = read("intel/tdx-v4/quote.bin");
    let a = Verifier::default()
        .verify(&quote, &collateral("intel/tdx-v4/collateral.json"), TDX_AT)
        .unwrap();
    assert_eq!(a.tee, TeeKind::Tdx);
    assert_eq!(a.status, TcbStatus::UpToDate);
    assert!(a.advisory_ids.is_empty());
    let Measurements::Tdx(m) = &a.measurements else {
        panic!("not TDX")
    };
    assert!(hex::encode(m.mr_td).starts_with("91eb2b44"));
    assert!(hex::encode(m.mr_td).ends_with("18b7"));
    let Evidence::DcapQuote(q) = Evidence::decode(&quote).unwrap() else {
        panic!()
    };
    assert_eq!(q.trailing_padding, 70);
}

#[test]
fn tdx_v4_fails_one_second_after_the_crl_expires() {
    let err = Verifier::default()
        .verify(
            &read("intel/tdx-v4/quote.bin"),
            &collateral("intel/tdx-v4/collateral.json"),
            TDX_AT + 2,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(_)), "{err}");
    assert!(err.to_string().contains("CRL expired"), "{err}");
}

#[test]
fn tdx_v5_outdated_has_no_matching_tcb_level() {
    let err = Verifier::default()
        .verify(
            &read("intel/tdx-v5-outdated/quote.bin"),
            &collateral("intel/tdx-v5-outdated/collateral.json"),
            TDX5_AT,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Tcb(_)), "{err}");
    assert!(err.to_string().contains("TCB level"), "{err}");
}

#[test]
fn parse_only_quotes_verify_to_the_root_with_unknown_status() {
    for name in ["tdx-v4-a", "tdx-v5-b", "sgx-v3-occlum"] {
        let quote = read(&format!("intel/parse-only/{name}.bin"));
        Evidence::decode(&quote).unwrap_or_else(|e| panic!("{name}: {e}"));
        let a = Verifier::default()
            .verify(&quote, &Default::default(), 1752919277)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(a.status, TcbStatus::Unknown, "{name}");
        assert!(
            a.notes.iter().any(|n| n.contains("no collateral")),
            "{name}"
        );
        let Platform::Intel {
            tcb_evaluation_data_number,
            ..
        } = &a.platform
        else {
            panic!()
        };
        assert_eq!(*tcb_evaluation_data_number, None);
    }
}

#[test]
fn a_wrong_intel_root_is_rejected() {
    let other_root = certs("amd/chains/ask_ark_milan.pem").pop().unwrap();
    let v = Verifier::with_intel(enclave_evidence::intel::IntelVerifier::with_root(
        other_root, false,
    ));
    let quote = read("intel/sgx-v3/quote.bin");
    let err = v
        .verify(&quote, &collateral("intel/sgx-v3/collateral.json"), SGX_AT)
        .unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Chain(_) | VerifyError::Input { .. } | VerifyError::Collateral(_)
        ),
        "{err}"
    );
    let err = v.verify(&quote, &Default::default(), SGX_AT).unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
}

#[test]
fn milan_vectors_verify_with_the_milan_chain() {
    for (dir, measurement, file) in [
        ("milan-v2-a", "7a1e5c26", "report.hex"),
        ("milan-v2-b", "b07af962", "report.bin"),
        ("milan-v2-c", "a1f39304", "report.bin"),
    ] {
        let report = read(&format!("amd/{dir}/{file}"));
        for inputs in [
            amd(
                &format!("amd/{dir}/vcek.der"),
                Some("amd/chains/ask_ark_milan.pem"),
                None,
            ),
            amd(&format!("amd/{dir}/vcek.der"), None, Some(Product::Milan)),
        ] {
            let a = Verifier::default()
                .verify(&report, &inputs, AMD_AT)
                .unwrap_or_else(|e| panic!("{dir}: {e}"));
            assert_eq!(a.tee, TeeKind::Snp);
            assert_eq!(a.status, TcbStatus::Unknown);
            assert!(
                hex::encode(a.measurements.primary()).starts_with(measurement),
                "{dir}"
            );
        }
    }
}

#[test]
fn milan_v2_b_and_c_fields_match_the_readme() {
    let a = Verifier::default()
        .verify(
            &read("amd/milan-v2-b/report.bin"),
            &amd("amd/milan-v2-b/vcek.der", None, Some(Product::Milan)),
            AMD_AT,
        )
        .unwrap();
    let Measurements::Snp(m) = &a.measurements else {
        panic!()
    };
    assert_eq!(m.policy, 0xb0000);
    assert!(a.debug, "policy 0xb0000 has the DEBUG bit");
    assert_eq!(&a.report_data[..5], &[1, 2, 3, 4, 5]);
    assert!(a.report_data[5..].iter().all(|b| *b == 0));
    let a = Verifier::default()
        .verify(
            &read("amd/milan-v2-c/report.bin"),
            &amd("amd/milan-v2-c/vcek.der", None, Some(Product::Milan)),
            AMD_AT,
        )
        .unwrap();
    let Measurements::Snp(m) = &a.measurements else {
        panic!()
    };
    assert_eq!((m.policy, m.vmpl), (0x3001f, 0));
    assert!(!a.debug);
}

#[test]
fn another_platforms_vcek_is_rejected() {
    let report = read("amd/milan-v2-c/report.bin");
    for other in ["milan-v2-a", "milan-v2-b"] {
        let err = Verifier::default()
            .verify(
                &report,
                &amd(&format!("amd/{other}/vcek.der"), None, Some(Product::Milan)),
                AMD_AT,
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("chip") || msg.contains("SPL") || msg.contains("signature"),
            "{msg}"
        );
    }
}

#[test]
fn vcek_validity_is_checked_at_the_chosen_time() {
    let report = read("amd/milan-v2-a/report.hex");
    let inputs = amd("amd/milan-v2-a/vcek.der", None, Some(Product::Milan));
    // The VCEK is valid 2023-04-03 → 2030-04-03.
    let early = Verifier::default()
        .verify(&report, &inputs, 1672531200)
        .unwrap_err();
    assert!(
        early.to_string().contains("VCEK is not valid until"),
        "{early}"
    );
    let late = Verifier::default()
        .verify(&report, &inputs, 1924992000)
        .unwrap_err();
    assert!(late.to_string().contains("expired"), "{late}");
}

#[test]
fn a_v2_report_needs_its_product() {
    let err = Verifier::default()
        .verify(
            &read("amd/milan-v2-a/report.hex"),
            &amd("amd/milan-v2-a/vcek.der", None, None),
            AMD_AT,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("does not say which product"),
        "{err}"
    );
    // The wrong product's root does not verify it.
    let err = Verifier::default()
        .verify(
            &read("amd/milan-v2-a/report.hex"),
            &amd("amd/milan-v2-a/vcek.der", None, Some(Product::Genoa)),
            AMD_AT,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Chain(_)), "{err}");
    // A Genoa chain supplied for a Milan product is refused.
    let err = Verifier::default()
        .verify(
            &read("amd/milan-v2-a/report.hex"),
            &amd(
                "amd/milan-v2-a/vcek.der",
                Some("amd/chains/ask_ark_genoa.pem"),
                Some(Product::Milan),
            ),
            AMD_AT,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("not the trusted Milan ARK"),
        "{err}"
    );
}

#[test]
fn azure_snp_hcl_report_verifies_and_exposes_runtime_claims() {
    let raw = read("azure/snp-hcl/hcl-report.bin");
    let a = Verifier::default()
        .verify(
            &raw,
            &amd("azure/snp-hcl/vcek-ask-ark.pem", None, None),
            AMD_AT,
        )
        .unwrap();
    assert_eq!(a.tee, TeeKind::AzureSnp);
    let claims = a.runtime_claims.as_ref().unwrap();
    let kids: Vec<&str> = claims["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&"HCLAkPub") && kids.contains(&"HCLEkPub"),
        "{kids:?}"
    );
    let Evidence::AzureHclReport(hcl) = Evidence::decode(&raw).unwrap() else {
        panic!()
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, &hcl.var_data);
    assert_eq!(&a.report_data[..32], digest.as_ref());
}

#[test]
fn azure_runtime_claims_that_do_not_match_report_data_are_rejected() {
    let mut raw = read("azure/snp-hcl/hcl-report.bin");
    // Change a character inside the claims JSON (a hex digit of "user-data"), keeping it JSON.
    let pos = raw.windows(9).position(|w| w == b"user-data").unwrap() + 13;
    raw[pos] = if raw[pos] == b'0' { b'1' } else { b'0' };
    let err = Verifier::default()
        .verify(
            &raw,
            &amd("azure/snp-hcl/vcek-ask-ark.pem", None, None),
            AMD_AT,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::Binding(_)), "{err}");
}

/// A CRL is only believed when the ARK signed it. No AMD-signed CRL for these chips is in
/// testdata, so the two ways a CRL can be refused are tested with CRLs made here.
#[test]
fn a_crl_not_signed_by_the_ark_is_refused() {
    use rcgen::{
        CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, PKCS_ECDSA_P256_SHA256,
        SerialNumber,
    };
    let now = time::OffsetDateTime::now_utc();
    let crl = |issuer: &Issuer<'_, KeyPair>| {
        CertificateRevocationListParams {
            this_update: now - time::Duration::days(1),
            next_update: now + time::Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    };
    let verify = |crl_der: Vec<u8>| {
        let mut inputs = amd("amd/milan-v2-a/vcek.der", None, Some(Product::Milan));
        inputs.amd.crl = Some(crl_der);
        Verifier::default()
            .verify(&read("amd/milan-v2-a/report.hex"), &inputs, AMD_AT)
            .unwrap_err()
    };

    // Issued by someone else entirely.
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Not AMD");
    let stranger = Issuer::new(
        params,
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    );
    let err = verify(crl(&stranger));
    assert!(err.to_string().contains("not by the ARK"), "{err}");

    // Naming the ARK as issuer, but signed with another key.
    let ark = certs("amd/chains/ask_ark_milan.pem").pop().unwrap();
    let forged = Issuer::from_ca_cert_der(
        &ark.as_slice().into(),
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    )
    .unwrap();
    let err = verify(crl(&forged));
    assert!(
        matches!(err, VerifyError::Signature(_)) && err.to_string().contains("CRL"),
        "{err}"
    );
}

/// A verifier that has already verified a chain (and remembers its certificates by content) gives
/// exactly the answer a fresh one gives: time, chip, TCB and the report signature are checked on
/// every report.
#[test]
fn a_warm_amd_verifier_answers_as_a_cold_one() {
    let report = read("amd/milan-v2-a/report.hex");
    let inputs = amd("amd/milan-v2-a/vcek.der", None, Some(Product::Milan));
    let warm = Verifier::default();
    warm.verify(&report, &inputs, AMD_AT).unwrap();
    let mut tampered = report.clone();
    tampered[0x50] ^= 1; // report_data, covered by the signature
    let other_chip = read("amd/milan-v2-c/report.bin");
    for (evidence, at) in [
        (&report, 1672531200), // before the VCEK's notBefore
        (&report, 1924992000), // after its notAfter
        (&tampered, AMD_AT),
        (&other_chip, AMD_AT),
    ] {
        let cold = Verifier::default()
            .verify(evidence, &inputs, at)
            .unwrap_err();
        let hot = warm.verify(evidence, &inputs, at).unwrap_err();
        assert_eq!(hot, cold);
    }
    // And the cached chain still accepts the genuine report afterwards.
    assert_eq!(
        warm.verify(&report, &inputs, AMD_AT).unwrap(),
        Verifier::default()
            .verify(&report, &inputs, AMD_AT)
            .unwrap()
    );
}

/// A verifier that has seen a platform (its collateral, CRLs, PCK chain and QE signatures are
/// remembered as verified) and has forgotten its appraisals gives exactly the answer a fresh one
/// gives: dates are checked at the requested time, and altered evidence or collateral is refused
/// for the same reason.
#[test]
fn a_known_platform_verifier_answers_as_a_cold_one() {
    for (dir, at) in [("sgx-v3", SGX_AT), ("tdx-v4", TDX_AT)] {
        let quote = read(&format!("intel/{dir}/quote.bin"));
        let inputs = collateral(&format!("intel/{dir}/collateral.json"));
        let known = Verifier::default();
        known.verify(&quote, &inputs, at).unwrap();

        let q = enclave_evidence::intel::Quote::decode(&quote).unwrap();
        let mut body = quote.clone();
        body[q.signed_len - 1] ^= 1; // the last byte of the body, under the quote signature
        let mut qe_report = quote.clone();
        qe_report[q.signed_len + 4 + 128 + if q.header.version == 3 { 0 } else { 6 }] ^= 1;
        let mut tcb_info = inputs.clone();
        let mut qvl = inputs.collateral.as_ref().unwrap().qvl().clone();
        qvl.tcb_info = qvl.tcb_info.replacen("\"version\":3", "\"version\": 3", 1);
        assert_ne!(&qvl, inputs.collateral.as_ref().unwrap().qvl());
        tcb_info.collateral = Some(enclave_evidence::intel::Collateral::new(qvl).unwrap());

        for (evidence, inputs, at) in [
            (&quote, &inputs, at),
            (&quote, &inputs, at + 100_000),    // collateral expired
            (&quote, &inputs, at - 10_000_000), // collateral not yet valid
            (&body, &inputs, at),
            (&qe_report, &inputs, at),
            (&quote, &tcb_info, at), // TCB Info no longer matches its signature
        ] {
            known.forget_appraisals();
            let cold = Verifier::default().verify(evidence, inputs, at);
            assert_eq!(known.verify(evidence, inputs, at), cold, "{dir}");
        }
    }
}
