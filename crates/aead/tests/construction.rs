//! The construction against known answers computed elsewhere, and every way opening must fail.
//!
//! The expected bytes were computed with Python's `cryptography` (HKDF and AESGCM from OpenSSL),
//! following the crate documentation, not with this crate:
//!
//! ```text
//! key = HKDF(SHA256, salt=b"enclave-os/test/v1", info=b"kat-purpose" + (11).to_bytes(8, "big")
//!            + b"kat-context").derive(bytes(range(32)))
//! self-describing = b"\x01" + nonce + AESGCM(key).encrypt(nonce, pt, b"\x01" + b"kat aad")
//! framed          = b"HDR"  + nonce + AESGCM(key).encrypt(nonce, pt, b"kat aad")
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enclave_aead::test_nonce::with_fixed_nonce;
use enclave_aead::{AeadError, FORMAT_V1, NONCE_LEN, OVERHEAD, SealKey, derive_key, hkdf_sha256};

const DOMAIN: &str = "enclave-os/test/v1";
const NONCE: [u8; NONCE_LEN] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const PLAINTEXT: &[u8] = b"the one sealing construction";

fn root() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn key() -> SealKey {
    SealKey::derive(DOMAIN, &root(), "kat-purpose", b"kat-context").unwrap()
}

#[test]
fn derivation_matches_the_known_answer() {
    assert_eq!(
        hex::encode(derive_key(DOMAIN, &root(), "kat-purpose", b"kat-context").unwrap()),
        "dceaec7124d523fd6376ae26a82cf8c98acce8270dd52d27f1f92a5b5bd2621a"
    );
    assert_eq!(
        hex::encode(hkdf_sha256(b"salt", b"ikm", &[b"a", b"b"]).unwrap()),
        "eab1afcf68556fdb35f789c6fd3eb331f00c27fe756585e4aa50fced299c2d31"
    );
    // Purpose, context and domain each change the key.
    let k = |d, p, c: &[u8]| derive_key(d, &root(), p, c).unwrap();
    let base = k(DOMAIN, "kat-purpose", b"kat-context");
    assert_ne!(*base, *k(DOMAIN, "kat-purpose", b"kat-contexu"));
    assert_ne!(*base, *k(DOMAIN, "kat-purposf", b"kat-context"));
    assert_ne!(
        *base,
        *k("enclave-os/test/v2", "kat-purpose", b"kat-context")
    );
    // A NUL in a purpose could make two (purpose, context) pairs one info: refused.
    assert!(matches!(
        derive_key(DOMAIN, &root(), "a\0", b""),
        Err(AeadError::Purpose(_))
    ));
}

#[test]
fn both_layouts_match_the_known_answers_and_open() {
    let key = key();
    let sealed = with_fixed_nonce(NONCE, || key.seal(b"kat aad", PLAINTEXT).unwrap());
    assert_eq!(
        hex::encode(&sealed),
        "01000102030405060708090a0b526015910ebe87cd5474a6f7cc186b7c1b3013daed6c8ce1516ce60a\
         804616981d512c1529adf63715fe7ca3"
    );
    assert_eq!(&*key.open(b"kat aad", &sealed).unwrap(), PLAINTEXT);

    let mut framed = b"HDR".to_vec();
    with_fixed_nonce(NONCE, || {
        key.seal_with(&mut framed, b"kat aad", |p| {
            // In pieces: the same bytes as one push.
            p.push(&PLAINTEXT[..5]);
            p.push(&PLAINTEXT[5..]);
        })
        .unwrap()
    });
    assert_eq!(
        hex::encode(&framed),
        "484452000102030405060708090a0b526015910ebe87cd5474a6f7cc186b7c1b3013daed6c8ce1516ce6\
         0ac6f0d8ff8a86befbbba1a6dc7f076385"
    );
    assert_eq!(
        &*key.open_framed(b"kat aad", &framed[3..]).unwrap(),
        PLAINTEXT
    );
    assert_eq!(
        &*key.open_owned(b"kat aad", framed.clone(), 3).unwrap(),
        PLAINTEXT
    );
}

#[test]
fn nonces_are_fresh_for_every_seal() {
    let key = key();
    let a = key.seal(b"aad", PLAINTEXT).unwrap();
    let b = key.seal(b"aad", PLAINTEXT).unwrap();
    assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
    assert_ne!(a, b);
    // The fixed nonce is gone once the closure returns.
    let fixed = with_fixed_nonce(NONCE, || key.seal(b"aad", PLAINTEXT).unwrap());
    let after = key.seal(b"aad", PLAINTEXT).unwrap();
    assert_eq!(fixed[1..1 + NONCE_LEN], NONCE);
    assert_ne!(after[1..1 + NONCE_LEN], NONCE);
}

#[test]
fn opening_fails_for_every_change_and_says_why() {
    let key = key();
    let sealed = key.seal(b"context", PLAINTEXT).unwrap();
    // Another AAD, another key, any bit flipped.
    assert_eq!(
        key.open(b"other context", &sealed).unwrap_err(),
        AeadError::Authentication
    );
    let other = SealKey::derive(DOMAIN, &root(), "kat-purpose", b"another").unwrap();
    assert_eq!(
        other.open(b"context", &sealed).unwrap_err(),
        AeadError::Authentication
    );
    for i in 1..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x01;
        assert_eq!(
            key.open(b"context", &t).unwrap_err(),
            AeadError::Authentication,
            "byte {i}"
        );
    }
    // The format byte is checked first, and it is authenticated as well: a framed body under
    // the same key and AAD is not a self-describing blob.
    let mut t = sealed.clone();
    t[0] = 2;
    assert_eq!(
        key.open(b"context", &t).unwrap_err(),
        AeadError::Format { found: 2 }
    );
    let mut framed = vec![FORMAT_V1];
    key.seal_append(&mut framed, b"context", PLAINTEXT).unwrap();
    assert_eq!(
        key.open(b"context", &framed).unwrap_err(),
        AeadError::Authentication
    );
    // Truncated input of every length is an error, never a panic.
    for n in 0..1 + OVERHEAD {
        let e = key.open(b"context", &sealed[..n]).unwrap_err();
        assert!(matches!(e, AeadError::Truncated { .. }), "{n}: {e}");
        assert!(
            key.open_framed(b"context", &sealed[1..1 + n.min(OVERHEAD - 1)])
                .is_err()
        );
    }
    assert!(matches!(
        key.open_owned(b"context", vec![0; 30], 3),
        Err(AeadError::Truncated { len: 30, min: 31 })
    ));
    assert!(matches!(
        key.open_owned(b"context", vec![0; 3], usize::MAX),
        Err(AeadError::Truncated { .. })
    ));
    assert_eq!(
        SealKey::from_bytes(&[0; 31]).unwrap_err(),
        AeadError::KeyLength(31)
    );
    assert!(format!("{key:?}") == "SealKey(..)");
}
