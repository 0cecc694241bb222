//! An Azure TDX HCL report verified through the TD quote made from its TDREPORT. The quote comes
//! from the simulated TEE; the HCL report is built from the documented layout with the TDREPORT
//! fields the TDX module would put there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_evidence::intel::quote::Body;
use enclave_evidence::intel::{Collateral, IntelVerifier, Quote};
use enclave_evidence::{Evidence, Inputs, TeeKind, Verifier, VerifyError};
use enclave_tee::Tee;
use enclave_tee::sim::{Flavour, SimTee};

fn hcl_for(quote: &[u8], claims: &[u8]) -> Vec<u8> {
    let q = Quote::decode(quote).unwrap();
    let Body::Td10(b) = &q.body else {
        panic!("not TDX")
    };
    let mut td = vec![0u8; 1184];
    td[0] = 0x81;
    td[128..192].copy_from_slice(&b.report_data);
    td[256 + 8..256 + 24].copy_from_slice(&b.tee_tcb_svn);
    td[256 + 24..256 + 72].copy_from_slice(&b.mr_seam);
    let info = 512;
    td[info..info + 8].copy_from_slice(&b.td_attributes);
    td[info + 8..info + 16].copy_from_slice(&b.xfam);
    td[info + 16..info + 64].copy_from_slice(&b.mr_td);
    td[info + 64..info + 112].copy_from_slice(&b.mr_config_id);
    td[info + 112..info + 160].copy_from_slice(&b.mr_owner);
    td[info + 160..info + 208].copy_from_slice(&b.mr_owner_config);
    for (i, r) in b.rtmr.iter().enumerate() {
        td[info + 208 + 48 * i..info + 256 + 48 * i].copy_from_slice(r);
    }
    let mut out = b"HCLA".to_vec();
    for v in [1u32, 0, 2, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&td);
    for v in [20 + claims.len() as u32, 1, 4, 1, claims.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(claims);
    out
}

#[test]
fn azure_tdx_verifies_through_its_td_quote() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimTee::open(dir.path(), Flavour::Tdx).unwrap();
    let claims = br#"{"keys":[{"kid":"HCLAkPub","kty":"RSA"}],"user-data":"00"}"#;
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, claims).as_ref());
    let bundle = tee.evidence(&rd).unwrap();
    let hcl = hcl_for(&bundle.evidence, claims);
    assert_eq!(Evidence::decode(&hcl).unwrap().tee(), TeeKind::AzureTdx);

    let verifier = Verifier::with_intel(IntelVerifier::with_root(
        tee.pki().root_der().to_vec(),
        true,
    ));
    let inputs = Inputs {
        collateral: Some(
            Collateral::from_json(bundle.collateral.as_ref().unwrap().as_bytes()).unwrap(),
        ),
        td_quote: Some(bundle.evidence.clone()),
        ..Inputs::default()
    };
    let now = enclave_evidence::time::now();
    let a = verifier.verify(&hcl, &inputs, now).unwrap();
    assert_eq!(a.tee, TeeKind::AzureTdx);
    assert!(a.simulated);
    assert_eq!(
        a.runtime_claims.as_ref().unwrap()["keys"][0]["kid"],
        "HCLAkPub"
    );

    // Without the quote: a reason, not a guess.
    let err = verifier.verify(&hcl, &Inputs::default(), now).unwrap_err();
    assert!(err.to_string().contains("--quote"), "{err}");

    // A quote made from another TDREPORT (here: other report data) does not vouch for it.
    let other = tee.evidence(&[0x42; 64]).unwrap();
    let inputs_other = Inputs {
        td_quote: Some(other.evidence),
        ..inputs.clone()
    };
    let err = verifier.verify(&hcl, &inputs_other, now).unwrap_err();
    assert!(
        matches!(err, VerifyError::Binding(_)) && err.to_string().contains("report_data"),
        "{err}"
    );

    // A changed MRTD in the TDREPORT is caught field by field.
    let mut forged = hcl.clone();
    forged[0x20 + 512 + 16] ^= 1;
    let err = verifier.verify(&forged, &inputs, now).unwrap_err();
    assert!(err.to_string().contains("MRTD"), "{err}");
}

#[test]
fn a_simulation_root_passed_as_a_plain_root_still_marks_evidence_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimTee::open(dir.path(), Flavour::Sgx).unwrap();
    let bundle = tee.evidence(&[1; 64]).unwrap();
    let v = Verifier::with_intel(IntelVerifier::with_root(
        tee.pki().root_der().to_vec(),
        false,
    ));
    let a = v
        .verify(
            &bundle.evidence,
            &Inputs::default(),
            enclave_evidence::time::now(),
        )
        .unwrap();
    assert!(a.simulated);
    assert!(
        Evidence::decode(&bundle.evidence)
            .unwrap()
            .claims_simulation()
    );
}
