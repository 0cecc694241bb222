//! `[listener] evidence_binding`: a leaf of the tree (it decides which verifiers read the
//! certificates and whether the evidence binds the config root), absent for the default.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use enclave_config::LoadedConfig;
use enclave_config::file::EvidenceBinding;

fn parse(text: &str) -> LoadedConfig {
    LoadedConfig::parse(text, Path::new("enclave.toml")).unwrap()
}

#[test]
fn the_evidence_binding_is_a_leaf_when_it_is_dice() {
    let seed = parse("tee = \"sim-sgx\"\n");
    let explicit = parse("tee = \"sim-sgx\"\n[listener]\nevidence_binding = \"seed\"\n");
    let dice = parse("tee = \"sim-sgx\"\n[listener]\nevidence_binding = \"dice\"\n");
    assert_eq!(seed.config.listener.evidence_binding, EvidenceBinding::Seed);
    assert_eq!(dice.config.listener.evidence_binding, EvidenceBinding::Dice);
    let (t_seed, t_explicit, t_dice) = (
        seed.tree("0.1.0").unwrap(),
        explicit.tree("0.1.0").unwrap(),
        dice.tree("0.1.0").unwrap(),
    );
    // The default leaves an older configuration's root as it was.
    assert_eq!(t_seed.root(), t_explicit.root());
    assert!(
        !t_seed
            .leaves()
            .iter()
            .any(|l| l.name.starts_with("listener"))
    );
    assert_ne!(t_seed.root(), t_dice.root());
    let leaf = t_dice
        .leaves()
        .iter()
        .find(|l| l.name == "listener/evidence-binding")
        .unwrap();
    // The value is the ASCII name, so that anyone recomputes the root from the doc.
    assert_eq!(
        leaf.value_hash.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, b"dice").as_ref()
    );
}

#[test]
fn unknown_bindings_and_dice_on_snp_are_refused_naming_the_field() {
    for (text, needles) in [
        (
            "[listener]\nevidence_binding = \"both\"\n",
            vec!["enclave.toml", "line 2", "evidence_binding"],
        ),
        (
            "tee = \"snp\"\n[listener]\nevidence_binding = \"dice\"\n",
            vec!["field `listener.evidence_binding`", "SEV-SNP", "use 'seed'"],
        ),
        (
            "[listener]\nbinding = \"dice\"\n",
            vec!["line 2", "binding"],
        ),
    ] {
        let err = LoadedConfig::parse(text, Path::new("enclave.toml"))
            .unwrap_err()
            .to_string();
        for n in needles {
            assert!(err.contains(n), "{text:?}: {err}");
        }
    }
}

/// The seal policy decides which builds can unseal what this one seals: a host switching it to
/// `signer` changes the served root. The default keeps an older configuration's root.
#[test]
fn the_seal_policy_is_a_leaf_when_it_is_signer() {
    let default = parse("tee = \"sim-sgx\"\n");
    let explicit = parse("tee = \"sim-sgx\"\nseal_policy = \"measurement\"\n");
    let signer = parse("tee = \"sim-sgx\"\nseal_policy = \"signer\"\n");
    let (t_default, t_explicit, t_signer) = (
        default.tree("0.1.0").unwrap(),
        explicit.tree("0.1.0").unwrap(),
        signer.tree("0.1.0").unwrap(),
    );
    assert_eq!(t_default.root(), t_explicit.root());
    assert_ne!(t_default.root(), t_signer.root());
    let leaf = t_signer
        .leaves()
        .iter()
        .find(|l| l.name == "sealing/policy")
        .unwrap();
    assert_eq!(
        leaf.value_hash.as_slice(),
        ring::digest::digest(&ring::digest::SHA256, b"signer").as_ref()
    );
}
