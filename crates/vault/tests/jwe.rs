//! JWE to a `tee-pubkey` through `kbs-types`' wire form: round trips for every key kind, the
//! AAD guest-components rebuilds, and tampering refused.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use enclave_vault::{JoseError, KeyKind, VaultKey, jose};
use kbs_types::Response;
use serde_json::Value;

fn through_wire(jwe: &Response) -> Response {
    serde_json::from_str(&serde_json::to_string(jwe).unwrap()).unwrap()
}

#[test]
fn round_trip_all_kinds_through_kbs_types_json() {
    for kind in [
        KeyKind::EcP256,
        KeyKind::EcP384,
        KeyKind::Rsa2048,
        KeyKind::Rsa4096,
    ] {
        let key = VaultKey::generate(kind).unwrap();
        let plaintext = vec![0x5a; 1000];
        let jwe = jose::encrypt(&key.tee_pubkey().unwrap(), &plaintext).unwrap();
        let wire = serde_json::to_string(&jwe).unwrap();
        let parsed: Response = serde_json::from_str(&wire).unwrap();

        // The AAD guest-components rebuilds from the parsed header is the `protected` text
        // on the wire, and the header starts with alg then enc.
        let wire_json: Value = serde_json::from_str(&wire).unwrap();
        let protected_b64 = wire_json["protected"].as_str().unwrap();
        assert_eq!(
            parsed.protected.generate_aad().unwrap(),
            protected_b64.as_bytes()
        );
        let header = String::from_utf8(URL_SAFE_NO_PAD.decode(protected_b64).unwrap()).unwrap();
        let alg = if matches!(kind, KeyKind::EcP256 | KeyKind::EcP384) {
            "ECDH-ES+A256KW"
        } else {
            "RSA-OAEP-256"
        };
        assert!(
            header.starts_with(&format!(r#"{{"alg":"{alg}","enc":"A256GCM""#)),
            "{header}"
        );
        assert!(wire_json.get("aad").is_none());

        let out = jose::decrypt(&key.recipient().unwrap(), &parsed).unwrap();
        assert_eq!(&out[..], &plaintext[..], "{kind:?}");
    }
}

#[test]
fn tampering_refused() {
    for kind in [KeyKind::EcP256, KeyKind::Rsa2048] {
        let key = VaultKey::generate(kind).unwrap();
        let recipient = key.recipient().unwrap();
        let jwe = through_wire(&jose::encrypt(&key.tee_pubkey().unwrap(), b"payload").unwrap());

        let mut t = jwe.clone();
        t.tag[0] ^= 1;
        assert!(matches!(
            jose::decrypt(&recipient, &t),
            Err(JoseError::Decrypt(_))
        ));

        let mut t = jwe.clone();
        t.ciphertext[0] ^= 1;
        assert!(matches!(
            jose::decrypt(&recipient, &t),
            Err(JoseError::Decrypt(_))
        ));

        let mut t = jwe.clone();
        t.encrypted_key[5] ^= 1;
        assert!(matches!(
            jose::decrypt(&recipient, &t),
            Err(JoseError::Decrypt(_))
        ));

        // an extra header member changes the AAD
        let mut t = jwe.clone();
        t.protected
            .other_fields
            .insert("kid".into(), Value::String("x".into()));
        assert!(matches!(
            jose::decrypt(&recipient, &t),
            Err(JoseError::Decrypt(_))
        ));

        let mut t = jwe.clone();
        t.protected.enc = "A128GCM".into();
        assert!(matches!(
            jose::decrypt(&recipient, &t),
            Err(JoseError::UnsupportedEnc(_))
        ));
    }
}

#[test]
fn wrong_key_refused() {
    let a = VaultKey::generate(KeyKind::EcP256).unwrap();
    let b = VaultKey::generate(KeyKind::EcP256).unwrap();
    let c = VaultKey::generate(KeyKind::EcP384).unwrap();
    let jwe = jose::encrypt(&a.tee_pubkey().unwrap(), b"payload").unwrap();
    assert!(matches!(
        jose::decrypt(&b.recipient().unwrap(), &jwe),
        Err(JoseError::Decrypt(_))
    ));
    let err = jose::decrypt(&c.recipient().unwrap(), &jwe).unwrap_err();
    assert!(matches!(err, JoseError::KeyMismatch { .. }), "{err}");
}

/// A JWE with `RSA1_5` (which Trustee can still produce) is refused on decryption too.
#[test]
fn rsa1_5_jwe_refused() {
    let key = VaultKey::generate(KeyKind::Rsa2048).unwrap();
    let mut jwe = jose::encrypt(&key.tee_pubkey().unwrap(), b"payload").unwrap();
    jwe.protected.alg = "RSA1_5".into();
    let err = jose::decrypt(&key.recipient().unwrap(), &jwe).unwrap_err();
    assert!(err.to_string().contains("RSA-OAEP-256"), "{err}");
}
