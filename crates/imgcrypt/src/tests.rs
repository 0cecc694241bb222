#![allow(clippy::unwrap_used)]

use super::*;

const KAT_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The low 64 bits of the counter run over into the high ones after two blocks: Go's
/// `cipher.NewCTR` (and OpenSSL) carry across the whole 128-bit block.
const KAT_NONCE: &str = "0001020304050607fffffffffffffffe";
/// `openssl enc -aes-256-ctr -K $KAT_KEY -iv $KAT_NONCE` of [`kat_plain`].
const KAT_CIPHERTEXT: &str = "101d158d0c18a9aed4f2b45e23df9710510a01f29bbe97b2f7cdd0ee3565874e989bd9c01c6e6022ca1398aa9854bdf3a725ca0fc9086e1375be1baaaf239281f6b453906926b5eb7104adb702";
/// `openssl dgst -sha256 -mac HMAC -macopt hexkey:$KAT_KEY` of the ciphertext.
const KAT_HMAC: &str = "7eb785f3cd9bf6da2132f7c876473cc8b11e8c707b854af12d65625ccfd3750e";
/// `sha256sum` of the plaintext.
const KAT_DIGEST: &str = "sha256:1f21d7fe24283682a46a35d86d909513487ff5292634890454ed882a66b28f12";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn kat_plain() -> Vec<u8> {
    (0..77u32).map(|i| ((i * 7 + 3) % 256) as u8).collect()
}

fn kat_key(digest: &str) -> LayerKey {
    LayerKey {
        symkey: Zeroizing::new(unhex(KAT_KEY).try_into().unwrap()),
        nonce: unhex(KAT_NONCE).try_into().unwrap(),
        digest: digest.parse().unwrap(),
    }
}

fn kat_public() -> PublicOptions {
    PublicOptions {
        cipher: CIPHER_AES_256_CTR_HMAC_SHA256.into(),
        hmac: unhex(KAT_HMAC),
    }
}

/// The first pass over `ciphertext`, in odd chunks: its decryptor once the HMAC verified.
fn authenticated(
    key: &LayerKey,
    public: &PublicOptions,
    ciphertext: &[u8],
) -> Result<LayerDecryptor, ImgcryptError> {
    let mut a = LayerAuthenticator::new(key, public, "layer 0")?;
    for chunk in ciphertext.chunks(7) {
        a.update(chunk);
    }
    a.verify()
}

fn run(
    key: &LayerKey,
    public: &PublicOptions,
    mut data: Vec<u8>,
) -> (Vec<u8>, Result<Digest, ImgcryptError>) {
    let d = authenticated(key, public, &data);
    let mut d = match d {
        Ok(d) => d,
        Err(e) => return (data, Err(e)),
    };
    // odd chunk sizes: the keystream must carry across chunk boundaries
    for chunk in data.chunks_mut(5) {
        d.decrypt(chunk);
    }
    let result = d.finish();
    (data, result)
}

#[test]
fn ctr_hmac_known_answer_from_openssl() {
    let (plain, result) = run(&kat_key(KAT_DIGEST), &kat_public(), unhex(KAT_CIPHERTEXT));
    assert_eq!(plain, kat_plain());
    assert_eq!(result.unwrap().to_string(), KAT_DIGEST);
}

#[test]
fn tampered_ciphertext_refused_by_hmac() {
    let mut data = unhex(KAT_CIPHERTEXT);
    data[40] ^= 1;
    let (_, result) = run(&kat_key(KAT_DIGEST), &kat_public(), data);
    let err = result.unwrap_err();
    assert!(matches!(err, ImgcryptError::Tampered { .. }), "{err}");
    assert!(
        err.to_string().contains("layer 0")
            && err
                .to_string()
                .contains("modified or its key is not the one"),
        "{err}"
    );
}

#[test]
fn digest_mismatch_refused() {
    let other = format!("sha256:{}", "ab".repeat(32));
    let (_, result) = run(&kat_key(&other), &kat_public(), unhex(KAT_CIPHERTEXT));
    match result.unwrap_err() {
        ImgcryptError::Digest {
            expected, actual, ..
        } => {
            assert_eq!(expected.to_string(), other);
            assert_eq!(actual.to_string(), KAT_DIGEST);
        }
        e => panic!("{e}"),
    }
}

/// skopeo records the tar's digest for a layer it gzipped while encrypting: accepted only when
/// the caller's diff_id of the same decrypted bytes is that digest.
#[test]
fn finish_with_diff_id_accepts_only_the_named_diff_id() {
    let diff_id: Digest = format!("sha256:{}", "cd".repeat(32)).parse().unwrap();
    let key = kat_key(&diff_id.to_string());
    let mut data = unhex(KAT_CIPHERTEXT);
    let mut d = authenticated(&key, &kat_public(), &data).unwrap();
    d.decrypt(&mut data);
    assert_eq!(
        d.finish_with_diff_id(&diff_id).unwrap().to_string(),
        KAT_DIGEST
    );

    let mut data = unhex(KAT_CIPHERTEXT);
    let mut d = authenticated(&key, &kat_public(), &data).unwrap();
    d.decrypt(&mut data);
    let other: Digest = format!("sha256:{}", "ef".repeat(32)).parse().unwrap();
    assert!(matches!(
        d.finish_with_diff_id(&other),
        Err(ImgcryptError::Digest { .. })
    ));

    // the HMAC is checked first, whatever the digest: no decryptor for modified ciphertext
    let mut data = unhex(KAT_CIPHERTEXT);
    data[0] ^= 1;
    assert!(matches!(
        authenticated(&key, &kat_public(), &data),
        Err(ImgcryptError::Tampered { .. })
    ));
}

fn descriptor(annotations: &[(&str, &str)]) -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into(),
        digest: KAT_DIGEST.parse().unwrap(),
        size: 77,
        platform: None,
        annotations: Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        urls: None,
    }
}

#[test]
fn unsupported_schemes_named() {
    for (annotation, name) in [
        (annotations::PGP, "PGP"),
        (annotations::PKCS7, "PKCS#7"),
        (annotations::PKCS11, "PKCS#11"),
        (
            "org.opencontainers.image.enc.keys.provider.mykms",
            "key provider 'mykms'",
        ),
    ] {
        let err = wrapped_keys(&descriptor(&[(annotation, "AAAA")]), "layer 3").unwrap_err();
        assert!(
            matches!(&err, ImgcryptError::Unsupported { scheme, .. } if scheme == name),
            "{err}"
        );
        assert!(err.to_string().starts_with("layer 3: "), "{err}");
    }
    let err = wrapped_keys(&descriptor(&[(annotations::PUBOPTS, "e30=")]), "layer 1").unwrap_err();
    assert!(matches!(err, ImgcryptError::NoKey { .. }), "{err}");
    let err = wrapped_keys(&descriptor(&[(annotations::JWE, "not base64!")]), "layer 1")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(annotations::JWE) && err.contains("base64"),
        "{err}"
    );
    let bad_packet = STANDARD.encode(b"{\"kid\":1}");
    let err = wrapped_keys(
        &descriptor(&[(annotations::ATTESTATION_AGENT, &bad_packet)]),
        "layer 1",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(annotations::ATTESTATION_AGENT), "{err}");
}

#[test]
fn public_options_parsed_and_checked() {
    let good = STANDARD.encode(format!(
        r#"{{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"{}","cipheroptions":{{}}}}"#,
        STANDARD.encode(unhex(KAT_HMAC))
    ));
    let opts = public_options(&descriptor(&[(annotations::PUBOPTS, &good)]), "l").unwrap();
    assert_eq!(opts, kat_public());
    let other = STANDARD.encode(r#"{"cipher":"AES_128_GCM","hmac":"","cipheroptions":{}}"#);
    let err = public_options(&descriptor(&[(annotations::PUBOPTS, &other)]), "l").unwrap_err();
    assert!(err.to_string().contains("AES_128_GCM"), "{err}");
    let err = public_options(&descriptor(&[]), "l").unwrap_err();
    assert!(err.to_string().contains(annotations::PUBOPTS), "{err}");
}

fn ec_recipient(secret: &p256::SecretKey) -> Recipient {
    use p256::pkcs8::EncodePublicKey;
    let pem = secret
        .public_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    Recipient::Jwe(enclave_vault::jose::public_key_from_pem(&pem).unwrap())
}

#[test]
fn encrypt_layer_round_trip_jwe_and_packet() {
    let plain = b"layer bytes MARKER-1234 and more".repeat(100);
    let digest = Digest::of(&plain);
    let ec = p256::SecretKey::random(&mut rand_core_os());
    let kek = Zeroizing::new([9u8; 32]);
    let recipients = [
        ec_recipient(&ec),
        Recipient::AttestationAgent {
            kid: "kbs:///default/image-kek/one".into(),
            kek: kek.clone(),
        },
    ];
    let (ciphertext, added) = encrypt_layer(&plain, &digest, &recipients).unwrap();
    assert_eq!(ciphertext.len(), plain.len());
    assert!(!ciphertext.windows(11).any(|w| w == b"MARKER-1234"));
    let mut desc = descriptor(&[]);
    desc.annotations = Some(added);
    let public = public_options(&desc, "l").unwrap();
    let keys = wrapped_keys(&desc, "l").unwrap();
    assert_eq!(keys.len(), 2);

    let WrappedKey::Jwe(jwe) = &keys[0] else {
        panic!("JWE first")
    };
    let key = unwrap_jwe(jwe, &RecipientKey::EcP256(&ec), "l").unwrap();
    assert_eq!(key.digest(), &digest);
    assert!(!format!("{key:?}").contains(&format!("{:?}", &key.symkey[..4])));
    let (out, result) = run(&key, &public, ciphertext.clone());
    assert_eq!(out, plain);
    assert_eq!(result.unwrap(), digest);

    let WrappedKey::AttestationAgent(packet) = &keys[1] else {
        panic!("packet second")
    };
    assert_eq!(packet.kid, "kbs:///default/image-kek/one");
    assert_eq!(packet.wrap_type, "A256GCM");
    let key = unwrap_packet(packet, kek.as_ref(), "l").unwrap();
    let (out, result) = run(&key, &public, ciphertext.clone());
    assert_eq!(out, plain);
    assert!(result.is_ok());

    // wrong KEK, wrong JWE key, unauthenticated wrap type
    let err = unwrap_packet(packet, &[8u8; 32], "l").unwrap_err();
    assert!(matches!(err, ImgcryptError::WrongKey { .. }), "{err}");
    let other = p256::SecretKey::random(&mut rand_core_os());
    let err = unwrap_jwe(jwe, &RecipientKey::EcP256(&other), "l").unwrap_err();
    assert!(matches!(err, ImgcryptError::WrongKey { .. }), "{err}");
    let mut ctr = packet.clone();
    ctr.wrap_type = "A256CTR".into();
    let err = unwrap_packet(&ctr, kek.as_ref(), "l").unwrap_err();
    assert!(
        matches!(&err, ImgcryptError::Unsupported { scheme, .. } if scheme.contains("unauthenticated")),
        "{err}"
    );

    // two encryptions of the same layer never share key or nonce
    let (again, _) = encrypt_layer(&plain, &digest, &recipients).unwrap();
    assert_ne!(again, ciphertext);
    // a wrong plaintext digest is refused before anything is encrypted
    let err = encrypt_layer(&plain, &KAT_DIGEST.parse().unwrap(), &recipients).unwrap_err();
    assert!(matches!(err, ImgcryptError::Digest { .. }), "{err}");
}

/// A packet made as CoCo's key provider makes it (AES-256-GCM of the private options with a
/// 12-byte IV, no AAD, ciphertext || tag, standard base64), built here independently of
/// `encrypt_layer`.
#[test]
fn coco_packet_unwrap() {
    let kek = [3u8; 32];
    let iv = [5u8; 12];
    let opts = format!(
        r#"{{"symkey":"{}","digest":"{KAT_DIGEST}","cipheroptions":{{"nonce":"{}"}}}}"#,
        STANDARD.encode(unhex(KAT_KEY)),
        STANDARD.encode(unhex(KAT_NONCE))
    );
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &kek).unwrap());
    let mut wrapped = opts.into_bytes();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut wrapped)
        .unwrap();
    let packet_json = format!(
        r#"{{"kid":"kbs:///default/key/1","wrapped_data":"{}","iv":"{}","wrap_type":"A256GCM"}}"#,
        STANDARD.encode(&wrapped),
        STANDARD.encode(iv)
    );
    let desc = descriptor(&[(
        annotations::ATTESTATION_AGENT,
        &STANDARD.encode(packet_json),
    )]);
    let keys = wrapped_keys(&desc, "l").unwrap();
    let [WrappedKey::AttestationAgent(packet)] = &keys[..] else {
        panic!("{keys:?}")
    };
    let layer_key = unwrap_packet(packet, &kek, "l").unwrap();
    let (plain, result) = run(&layer_key, &kat_public(), unhex(KAT_CIPHERTEXT));
    assert_eq!(plain, kat_plain());
    assert!(result.is_ok());
}

#[test]
fn components_round_trip_and_checks() {
    let ec = p256::SecretKey::random(&mut rand_core_os());
    let Recipient::Jwe(public) = ec_recipient(&ec) else {
        unreachable!()
    };
    let wasm = b"\0asm\x0d\x00\x01\x00 component body".to_vec();
    let jwe = encrypt_component(&wasm, &public, Some("apps/wasm-key")).unwrap();
    assert!(is_encrypted_component(&jwe));
    assert!(!is_encrypted_component(&wasm));
    assert!(is_encrypted_component(b"  \n{}"));
    assert_eq!(
        component_kid(&jwe).unwrap().as_deref(),
        Some("apps/wasm-key")
    );
    let out = decrypt_component(&jwe, &RecipientKey::EcP256(&ec)).unwrap();
    assert_eq!(&out[..], &wasm[..]);
    let err = encrypt_component(b"not wasm", &public, None).unwrap_err();
    assert!(err.to_string().contains("\\0asm"), "{err}");
    let no_kid = encrypt_component(&wasm, &public, None).unwrap();
    assert_eq!(component_kid(&no_kid).unwrap(), None);

    // a JWE of something else (no cty) is refused before decrypting
    let other = enclave_vault::jose::encrypt(&public, &wasm).unwrap();
    let other = serde_json::to_vec(&other).unwrap();
    let err = decrypt_component(&other, &RecipientKey::EcP256(&ec)).unwrap_err();
    assert!(err.to_string().contains("cty"), "{err}");
    let wrong = p256::SecretKey::random(&mut rand_core_os());
    let err = decrypt_component(&jwe, &RecipientKey::EcP256(&wrong)).unwrap_err();
    assert!(matches!(err, ImgcryptError::WrongKey { .. }), "{err}");
}

fn rand_core_os() -> p256::elliptic_curve::rand_core::OsRng {
    p256::elliptic_curve::rand_core::OsRng
}
