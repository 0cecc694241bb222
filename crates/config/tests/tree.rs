//! The config tree against known answers from an independent implementation, and its proofs
//! under every shape of tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_config::merkle::leaf_hash;
use enclave_config::{ConfigTree, InclusionProof, Manifest};
use proptest::prelude::*;

fn sample() -> ConfigTree {
    ConfigTree::from_values([
        ("workload/app/code", &b"\x00\x01"[..]),
        ("ca/root", b"root-cert"),
        ("runtime/version", b"0.1.0"),
        ("egress/bundle", b"bundle"),
        ("attestation/servers", b"[]"),
    ])
    .unwrap()
}

/// Known answers, computed by a separate Python implementation of the formulas in the crate docs
/// (RFC 9162 shape, SHA-256, u16 length-prefixed names).
#[test]
fn known_answers() {
    let t = sample();
    assert_eq!(
        hex::encode(t.root()),
        "094c003e0fbf8ba98663b0ad667ec01eb6fac3b4121cc3c9cf6385daceef060e"
    );
    assert_eq!(
        hex::encode(ConfigTree::from_values([]).unwrap().root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let one = ConfigTree::from_values([("attestation/servers", &b"[]"[..])]).unwrap();
    assert_eq!(
        hex::encode(one.root()),
        "619b96bdf79e8e41ccce542a74806f047c26b9ddef5e3226596cc8060a5da239"
    );
    let p = t.prove("egress/bundle").unwrap();
    assert_eq!(
        p.path,
        vec![
            "c8eb844e33f6b0ddfe0bbc756942daaf7b2e9c2768348213287c16253ec00f9d",
            "632a1626abd1db7828cfa5dccf756fc3cfcff7e45696927dbfb1e4587b016acf",
            "0699f780e548558588edc78b44af0fea1393eadebe932bfd46f59cd6c57760f1",
        ]
    );
    p.verify(t.root()).unwrap();
}

#[test]
fn names_are_committed_not_just_values() {
    let a = ConfigTree::from_values([("egress/bundle", &b"X"[..]), ("ca/root", b"Y")]).unwrap();
    let swapped =
        ConfigTree::from_values([("egress/bundle", &b"Y"[..]), ("ca/root", b"X")]).unwrap();
    let renamed =
        ConfigTree::from_values([("egress/bundlf", &b"X"[..]), ("ca/root", b"Y")]).unwrap();
    assert_ne!(a.root(), swapped.root());
    assert_ne!(a.root(), renamed.root());
}

#[test]
fn order_of_inputs_does_not_matter_and_duplicates_are_refused() {
    let a = ConfigTree::from_values([("a", &b"1"[..]), ("b", b"2")]).unwrap();
    let b = ConfigTree::from_values([("b", &b"2"[..]), ("a", b"1")]).unwrap();
    assert_eq!(a.root(), b.root());
    let err = ConfigTree::from_values([("a", &b"1"[..]), ("a", b"2")]).unwrap_err();
    assert!(err.to_string().contains("'a' appears twice"));
    assert!(ConfigTree::from_values([("", &b"1"[..])]).is_err());
}

#[test]
fn a_wrong_proof_names_what_is_wrong() {
    let t = sample();
    let good = t.prove("runtime/version").unwrap();
    let mut p = good.clone();
    p.value_hash[0] ^= 1;
    assert!(
        p.verify(t.root())
            .unwrap_err()
            .to_string()
            .contains("recomputed root differs")
    );
    let mut p = good.clone();
    p.name = "runtime/versio".into();
    assert!(p.verify(t.root()).is_err());
    let mut p = good.clone();
    p.path.pop();
    assert!(
        p.verify(t.root())
            .unwrap_err()
            .to_string()
            .contains("shorter")
    );
    let mut p = good.clone();
    p.path.push("00".repeat(32));
    assert!(p.verify(t.root()).is_err());
    let mut p = good;
    p.index = 99;
    assert!(
        p.verify(t.root())
            .unwrap_err()
            .to_string()
            .contains("outside")
    );
    assert!(
        t.prove("nope")
            .unwrap_err()
            .to_string()
            .contains("no configuration input named 'nope'")
    );
}

#[test]
fn the_manifest_round_trips_and_catches_lies() {
    let t = sample();
    let json = serde_json::to_string(&t.manifest()).unwrap();
    let m: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(&m.verify().unwrap(), t.root());
    let mut lie = m.clone();
    lie.leaves[0].value_hash[0] ^= 1;
    assert!(lie.verify().is_err());
    let mut lie = m.clone();
    lie.root = "00".repeat(32);
    assert!(lie.verify().unwrap_err().to_string().contains("states"));
    let proof: InclusionProof =
        serde_json::from_str(&serde_json::to_string(&t.prove("ca/root").unwrap()).unwrap())
            .unwrap();
    proof.verify(t.root()).unwrap();
    assert_eq!(
        leaf_hash("ca/root", &proof.value_hash).unwrap(),
        t.leaves()[proof.index].leaf_hash
    );
}

proptest! {
    #[test]
    fn every_leaf_of_every_tree_size_proves(n in 1usize..70) {
        let names: Vec<String> = (0..n).map(|i| format!("input/{i:03}")).collect();
        let t = ConfigTree::from_values(names.iter().map(|s| (s.as_str(), s.as_bytes()))).unwrap();
        for name in &names {
            let p = t.prove(name).unwrap();
            prop_assert!(p.verify(t.root()).is_ok());
            // The same proof does not verify under another tree's root.
            let other = ConfigTree::from_values(names.iter().map(|s| (s.as_str(), &b"x"[..]))).unwrap();
            prop_assert!(p.verify(other.root()).is_err());
        }
    }
}
