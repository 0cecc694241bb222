//! Property tests: decoders never panic, and whatever they accept they account for exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::read;
use enclave_evidence::amd::SnpReport;
use enclave_evidence::azure::HclReport;
use enclave_evidence::intel::Quote;
use enclave_evidence::{Evidence, input};
use proptest::prelude::*;

fn seeds() -> Vec<Vec<u8>> {
    [
        "intel/sgx-v3/quote.bin",
        "intel/tdx-v4/quote.bin",
        "intel/parse-only/tdx-v5-b.bin",
        "amd/milan-v2-b/report.bin",
        "azure/snp-hcl/hcl-report.bin",
    ]
    .iter()
    .map(|r| read(r))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let _ = Evidence::decode(&bytes);
        let _ = Quote::decode(&bytes);
        let _ = SnpReport::decode(&bytes);
        let _ = HclReport::decode(&bytes);
        let _ = input::evidence_bytes(&bytes);
    }

    #[test]
    fn mutated_real_evidence_never_panics(
        which in 0usize..5,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut raw = seeds()[which].clone();
        for (at, value) in edits {
            let i = at.index(raw.len());
            raw[i] = value;
        }
        let _ = Evidence::decode(&raw);
        let len = cut.index(raw.len());
        let _ = Evidence::decode(&raw[..len]);
    }

    #[test]
    fn a_decoded_quote_accounts_for_every_byte(which in 0usize..3, pad in 0usize..64, junk in 1u8..=255) {
        let raw = seeds()[which].clone();
        let mut padded = raw.clone();
        padded.extend(std::iter::repeat_n(0u8, pad));
        let q = Quote::decode(&padded).unwrap();
        let base = Quote::decode(&raw).unwrap();
        prop_assert_eq!(q.trailing_padding, base.trailing_padding + pad);
        prop_assert_eq!(q.body, base.body);
        let mut dirty = padded;
        dirty.push(junk);
        prop_assert!(Quote::decode(&dirty).is_err());
    }

    #[test]
    fn hex_and_base64_forms_decode_to_the_same_evidence(which in 0usize..5, upper in any::<bool>()) {
        use base64::Engine;
        let raw = seeds()[which].clone();
        let mut h = hex::encode(&raw);
        if upper { h = h.to_uppercase(); }
        prop_assert_eq!(input::evidence_bytes(h.as_bytes()).unwrap(), raw.clone());
        let b = base64::engine::general_purpose::STANDARD.encode(&raw);
        prop_assert_eq!(input::evidence_bytes(b.as_bytes()).unwrap(), raw);
    }
}
