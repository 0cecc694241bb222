//! The simulated TEE end to end: what it emits, the evidence verifier accepts, under the
//! simulation root only, with every check dcap-qvl makes on hardware.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_evidence::intel::{Collateral, IntelVerifier};
use enclave_evidence::{Inputs, Measurements, TcbStatus, TeeKind, Verifier, VerifyError};
use enclave_tee::sim::{Flavour, SimPki, SimTee};
use enclave_tee::{Bundle, SealPolicy, Tee};

fn sim_verifier(tee: &SimTee) -> Verifier {
    Verifier::with_intel(IntelVerifier::with_root(
        tee.pki().root_der().to_vec(),
        true,
    ))
}

fn inputs(b: &Bundle) -> Inputs {
    Inputs {
        collateral: Some(Collateral::from_json(b.collateral.as_ref().unwrap().as_bytes()).unwrap()),
        ..Inputs::default()
    }
}

fn now() -> i64 {
    enclave_evidence::time::now()
}

#[test]
fn each_flavour_round_trips_through_the_real_verifier() {
    let dir = tempfile::tempdir().unwrap();
    for (flavour, kind) in [(Flavour::Sgx, TeeKind::Sgx), (Flavour::Tdx, TeeKind::Tdx)] {
        let tee = SimTee::open(dir.path(), flavour).unwrap();
        let rd = [0x5a; 64];
        let bundle = tee.evidence(&rd).unwrap();
        assert!(bundle.simulated);
        let a = sim_verifier(&tee)
            .verify(&bundle.evidence, &inputs(&bundle), now())
            .unwrap_or_else(|e| panic!("{flavour:?}: {e}"));
        assert_eq!(a.tee, kind);
        assert!(a.simulated);
        assert_eq!(a.status, TcbStatus::UpToDate);
        assert_eq!(a.report_data, rd);
        assert_eq!(a.measurements.primary(), tee.measurement().as_slice());
        assert!(!a.debug);
        // Signature-only mode works too, with an Unknown status.
        let a = sim_verifier(&tee)
            .verify(&bundle.evidence, &Inputs::default(), now())
            .unwrap();
        assert_eq!(a.status, TcbStatus::Unknown);
    }
}

#[test]
fn simulated_evidence_is_rejected_under_intels_root_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimTee::open(dir.path(), Flavour::Tdx).unwrap();
    let bundle = tee.evidence(&[1; 64]).unwrap();
    for inputs in [inputs(&bundle), Inputs::default()] {
        let err = Verifier::default()
            .verify(&bundle.evidence, &inputs, now())
            .unwrap_err();
        assert!(matches!(err, VerifyError::Simulated(_)), "{err}");
        assert!(err.to_string().contains("--trust-sim"), "{err}");
    }
}

#[test]
fn another_simulation_root_is_not_trusted() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tee_a = SimTee::open(a.path(), Flavour::Sgx).unwrap();
    let tee_b = SimTee::open(b.path(), Flavour::Sgx).unwrap();
    let bundle = tee_a.evidence(&[2; 64]).unwrap();
    assert!(
        sim_verifier(&tee_b)
            .verify(&bundle.evidence, &inputs(&bundle), now())
            .is_err()
    );
}

#[test]
fn tampered_simulated_quotes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimTee::open(dir.path(), Flavour::Sgx).unwrap();
    let bundle = tee.evidence(&[3; 64]).unwrap();
    let v = sim_verifier(&tee);
    let inputs = inputs(&bundle);
    v.verify(&bundle.evidence, &inputs, now()).unwrap();
    // Header, body (measurement, report data) and the QE report.
    for i in [0x30, 0x30 + 64, 0x30 + 320, 48 + 384 + 4 + 128 + 10] {
        let mut q = bundle.evidence.clone();
        q[i] ^= 1;
        assert!(
            v.verify(&q, &inputs, now()).is_err(),
            "flip at {i} accepted"
        );
    }
}

#[test]
fn the_pki_persists_with_private_keys_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = SimTee::open(dir.path(), Flavour::Sgx).unwrap();
    let second = SimTee::open(dir.path(), Flavour::Sgx).unwrap();
    assert_eq!(first.pki().root_der(), second.pki().root_der());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        if name.ends_with(".key.pem") || name == "platform.secret" {
            assert_eq!(mode, 0o600, "{name}");
        }
    }
    assert!(SimPki::root_path(dir.path()).is_file());
    // An interrupted creation (no manifest) is redone rather than half-used.
    std::fs::remove_file(dir.path().join("pki.json")).unwrap();
    let third = SimTee::open(dir.path(), Flavour::Sgx).unwrap();
    assert_ne!(third.pki().root_der(), first.pki().root_der());
}

#[test]
fn measurement_is_the_executable_hash_and_changes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let exe_a = dir.path().join("a.bin");
    let exe_b = dir.path().join("b.bin");
    std::fs::write(&exe_a, b"build one").unwrap();
    std::fs::write(&exe_b, b"build two").unwrap();
    let sim = dir.path().join("sim");
    let a = SimTee::with_executable(&sim, Flavour::Sgx, &exe_a).unwrap();
    let b = SimTee::with_executable(&sim, Flavour::Sgx, &exe_b).unwrap();
    assert_eq!(
        a.measurement(),
        ring::digest::digest(&ring::digest::SHA256, b"build one").as_ref()
    );
    assert_ne!(a.measurement(), b.measurement());
    let t = SimTee::with_executable(&sim, Flavour::Tdx, &exe_a).unwrap();
    assert_eq!(
        t.measurement(),
        ring::digest::digest(&ring::digest::SHA384, b"build one").as_ref()
    );
    let bundle = b.evidence(&[0; 64]).unwrap();
    let appraisal = sim_verifier(&b)
        .verify(&bundle.evidence, &inputs(&bundle), now())
        .unwrap();
    let Measurements::Sgx(m) = appraisal.measurements else {
        panic!()
    };
    assert_eq!(m.mr_enclave.to_vec(), b.measurement());
}

#[test]
fn seal_round_trip_and_every_way_unsealing_must_fail() {
    let dir = tempfile::tempdir().unwrap();
    let exe_a = dir.path().join("a.bin");
    let exe_b = dir.path().join("b.bin");
    std::fs::write(&exe_a, b"build one").unwrap();
    std::fs::write(&exe_b, b"build two").unwrap();
    let sim = dir.path().join("sim");
    let a = SimTee::with_executable(&sim, Flavour::Sgx, &exe_a).unwrap();
    let b = SimTee::with_executable(&sim, Flavour::Sgx, &exe_b).unwrap();
    let key = a.sealing_key(SealPolicy::Measurement).unwrap();
    let blob = key.seal("test/secret", b"attack at dawn").unwrap();
    assert_eq!(
        &key.unseal("test/secret", &blob).unwrap()[..],
        b"attack at dawn"
    );
    // Nonces are the runtime's: sealing twice never repeats.
    assert_ne!(blob, key.seal("test/secret", b"attack at dawn").unwrap());
    // Another build cannot unseal measurement-bound data...
    let err = b
        .sealing_key(SealPolicy::Measurement)
        .unwrap()
        .unseal("test/secret", &blob)
        .unwrap_err();
    assert!(err.to_string().contains("different build"), "{err}");
    // ...but signer-bound data survives an update.
    let signer_blob = a
        .sealing_key(SealPolicy::Signer)
        .unwrap()
        .seal("test/secret", b"kept")
        .unwrap();
    assert_eq!(
        &b.sealing_key(SealPolicy::Signer)
            .unwrap()
            .unseal("test/secret", &signer_blob)
            .unwrap()[..],
        b"kept"
    );
    // Another policy, another context, another platform, and tampering all fail with a reason.
    let err = a
        .sealing_key(SealPolicy::Signer)
        .unwrap()
        .unseal("test/secret", &blob)
        .unwrap_err();
    assert!(err.to_string().contains("policy"), "{err}");
    let err = key.unseal("test/other", &blob).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    let other_platform =
        SimTee::with_executable(&dir.path().join("sim2"), Flavour::Sgx, &exe_a).unwrap();
    let err = other_platform
        .sealing_key(SealPolicy::Measurement)
        .unwrap()
        .unseal("test/secret", &blob)
        .unwrap_err();
    assert!(err.to_string().contains("another key"), "{err}");
    for i in 0..blob.len() {
        let mut t = blob.clone();
        t[i] ^= 0x80;
        assert!(
            key.unseal("test/secret", &t).is_err(),
            "flip at {i} accepted"
        );
    }
    assert!(key.unseal("test/secret", &blob[..blob.len() - 1]).is_err());
    assert!(key.unseal("test/secret", b"").is_err());
}

/// Blobs written before sealing moved to `enclave-aead`, by that code: one with its own random
/// nonce (it must open), one with the nonce fixed to 00..0b by a test patch (sealing now, with
/// the same nonce through the test-only path, must give the same bytes).
mod previous_format {
    pub const NONCE: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    /// `SealingKey` (sgx, measurement, identity 0x11 x 32, key 0x22 x 32), context
    /// `kat/context`, plaintext `sealed by the previous code`.
    pub const BLOB_RANDOM: &str = "454f535345414c010186d84b51b41b558e07b1456d8ecb3ce12011111111\
        111111111111111111111111111111111111111111111111111111112afbea098c0e5cd31e6847a0827bfe6d\
        dfcc03eb2b344764c81b7ae1d5396a10b62a89510ffa4c18be56a24b356bc9c77ba27abd8239b7";
    pub const BLOB_FIXED: &str = "454f535345414c010186d84b51b41b558e07b1456d8ecb3ce12011111111\
        11111111111111111111111111111111111111111111111111111111000102030405060708090a0b179c7f19\
        afed70ad2a4a0694fbd41a64656327f18c11de546535c5113c6b16ae353516ef752c53bf90ea12";
    /// sim-sgx with `platform.secret` = 0x44 x 32, signer policy, context `kat/sim`, plaintext
    /// `sim signer`.
    pub const SIM_RANDOM: &str = "454f535345414c01027153c192b3a8abeb4d7c3965a0c8695a20d1d0671a6\
        4efd06070c09a29a3b250a05416425e87a57f6e7b4cab35a2e370c0116a102853fe2a347e2ac47a968e8dc3e\
        6c01a54cc37f4c54f2555039a9ac3c089e331c840e1";
    pub const SIM_FIXED: &str = "454f535345414c01027153c192b3a8abeb4d7c3965a0c8695a20d1d0671a64\
        efd06070c09a29a3b250a05416425e87a57f6e7b4cab35a2e370c0000102030405060708090a0bd6e65f0711\
        d157e89c678379eb833e80d0fef36781e33312034a";
}

#[test]
fn blobs_are_byte_for_byte_the_previous_format() {
    use enclave_aead::test_nonce::with_fixed_nonce;
    use previous_format::*;
    let key = enclave_tee::SealingKey::new(
        TeeKind::Sgx,
        SealPolicy::Measurement,
        vec![0x11; 32],
        zeroize::Zeroizing::new([0x22; 32]),
    );
    let plain = b"sealed by the previous code";
    assert_eq!(
        &key.unseal("kat/context", &hex::decode(BLOB_RANDOM).unwrap())
            .unwrap()[..],
        plain
    );
    let now = with_fixed_nonce(NONCE, || key.seal("kat/context", plain).unwrap());
    assert_eq!(hex::encode(now), BLOB_FIXED);

    // The simulator's key widening is unchanged too: the same platform secret, the same key.
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    SimPki::open_or_create(&sim).unwrap();
    std::fs::write(sim.join("platform.secret"), [0x44; 32]).unwrap();
    let key = SimTee::open(&sim, Flavour::Sgx)
        .unwrap()
        .sealing_key(SealPolicy::Signer)
        .unwrap();
    assert_eq!(
        &key.unseal("kat/sim", &hex::decode(SIM_RANDOM).unwrap())
            .unwrap()[..],
        b"sim signer"
    );
    let now = with_fixed_nonce(NONCE, || key.seal("kat/sim", b"sim signer").unwrap());
    assert_eq!(hex::encode(now), SIM_FIXED);
}

#[test]
fn tdx_has_no_sealing_key_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let t = SimTee::open(dir.path(), Flavour::Tdx).unwrap();
    let err = t.sealing_key(SealPolicy::Measurement).unwrap_err();
    assert!(
        err.to_string().contains("TDX") && err.to_string().contains("vault"),
        "{err}"
    );
}

#[test]
fn bundles_round_trip_through_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimTee::open(&dir.path().join("sim"), Flavour::Tdx).unwrap();
    let bundle = tee.evidence(&[9; 64]).unwrap();
    let out = dir.path().join("out");
    bundle.write_dir(&out).unwrap();
    assert!(Bundle::is_bundle_dir(&out));
    assert_eq!(Bundle::read_dir(&out).unwrap(), bundle);
    // Reusing the directory for a bundle without collateral leaves none of the old behind.
    let bare = Bundle {
        collateral: None,
        ..bundle
    };
    bare.write_dir(&out).unwrap();
    assert_eq!(Bundle::read_dir(&out).unwrap().collateral, None);
}
