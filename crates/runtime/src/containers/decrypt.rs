//! Encrypted images: which layers are ciphertext, whose keys unwrap them, and what the
//! certificate says about it.
//!
//! A layer encrypted the ocicrypt way carries its key wrapped once per recipient scheme. Two
//! are read here: `jwe` (to a vault key: the workload's `decryption_key`) and Confidential
//! Containers' `provider.attestation-agent` (AES-256-GCM under a KEK that is a KBS resource,
//! named by the packet's `kid`, here a vault secret). Each key is asked of the vault as the
//! workload, with the hash of the manifest the tree commits, so the vault's policies decide.
//!
//! Which scheme is used is the workload's setting, not whichever the vault happens to answer:
//! with `decryption_key`, the JWE-wrapped keys and only those; without it, the one KBS key id
//! each layer names. So the certificate's key reference (OID 3.9), which is computed from the
//! committed manifest and settings, names exactly the keys the layers were decrypted with.

use std::collections::{BTreeMap, BTreeSet};

use enclave_config::file::Workload;
use enclave_imgcrypt::{LayerKey, PublicOptions, WrappedKey};
use enclave_oci::{Descriptor, Manifest};
use zeroize::Zeroizing;

use crate::vault::code_keys::{Asker, CodeKeys};

/// An encrypted layer's key, unwrapped, with the options its decryption needs.
pub(crate) struct Unwrapped {
    pub key: LayerKey,
    pub public: PublicOptions,
}

/// What an encrypted image's unpack needs: each layer's key (`None` for a plain layer), and
/// the scope its snapshots are named in (`None` for a plaintext image).
#[derive(Default)]
pub(crate) struct ImageKeys {
    pub layers: Vec<Option<Unwrapped>>,
    pub scope: Option<String>,
}

impl ImageKeys {
    pub(crate) fn layer(&self, i: usize) -> Option<&Unwrapped> {
        self.layers.get(i).and_then(Option::as_ref)
    }
}

/// Whether any layer of `manifest` is encrypted.
pub(crate) fn is_encrypted(manifest: &Manifest) -> bool {
    manifest
        .parsed
        .layers
        .iter()
        .any(|l| enclave_imgcrypt::is_encrypted(&l.media_type))
}

/// The vault secret path a KBS resource URI names: `kbs://[host]/<repo>/<type>/<tag>`. The
/// host, if any, is not used: the resource is always this runtime's vault's, as a CoCo guest's
/// data hub asks its one configured KBS whatever the URI's host says.
pub(crate) fn kbs_path(kid: &str) -> Result<&str, String> {
    let rest = kid.strip_prefix("kbs://").ok_or_else(|| {
        format!("key id '{kid}' is not a KBS resource URI (kbs:///<repo>/<type>/<tag>)")
    })?;
    let (_host, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("key id '{kid}' names no resource path"))?;
    crate::vault::secrets::check_path(path).map(|()| path)
}

/// Check, before anything is fetched, that every encrypted layer of `manifest` has a key
/// this runtime could unwrap by the workload's scheme: a JWE-wrapped key when it names a
/// `decryption_key`, else exactly one KBS key id (so that the certificate can name the one).
pub(crate) fn check_schemes(w: &Workload, manifest: &Manifest) -> Result<(), String> {
    for (i, d) in encrypted_layers(manifest) {
        let what = layer_name(i, manifest, d);
        let wrapped = enclave_imgcrypt::wrapped_keys(d, &what).map_err(|e| e.to_string())?;
        enclave_imgcrypt::public_options(d, &what).map_err(|e| e.to_string())?;
        match &w.decryption_key {
            Some(name) => {
                if !wrapped.iter().any(|k| matches!(k, WrappedKey::Jwe(_))) {
                    return Err(format!(
                        "{what}: decryption_key names vault key '{name}', and this layer's key is not wrapped as JWE (only for a KBS key id): drop decryption_key to decrypt it with its KBS resource, or encrypt it to the vault key with jwe:"
                    ));
                }
            }
            None => {
                let kids: Vec<&str> = wrapped
                    .iter()
                    .filter_map(|k| match k {
                        WrappedKey::AttestationAgent(p) => Some(p.kid.as_str()),
                        WrappedKey::Jwe(_) => None,
                    })
                    .collect();
                match kids[..] {
                    [] => {
                        return Err(format!(
                            "{what}: its key is wrapped only as JWE, to a public key: name the vault key it was encrypted to with decryption_key"
                        ));
                    }
                    [kid] => {
                        kbs_path(kid).map_err(|e| format!("{what}: {e}"))?;
                    }
                    _ => {
                        return Err(format!(
                            "{what}: its key is wrapped for {} KBS key ids; one is expected, so that the certificate names the one it is decrypted with",
                            kids.len()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether the workload's scheme uses `wrapped`: JWE with a `decryption_key`, else the
/// attestation agent's packet.
fn uses(w: &Workload, wrapped: &WrappedKey) -> bool {
    matches!(wrapped, WrappedKey::Jwe(_)) == w.decryption_key.is_some()
}

fn encrypted_layers(manifest: &Manifest) -> impl Iterator<Item = (usize, &Descriptor)> {
    manifest
        .parsed
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| enclave_imgcrypt::is_encrypted(&l.media_type))
}

fn layer_name(i: usize, manifest: &Manifest, d: &Descriptor) -> String {
    format!(
        "encrypted layer {} of {} ({})",
        i + 1,
        manifest.parsed.layers.len(),
        d.digest
    )
}

/// The keys of `manifest`'s encrypted layers (`None` for a plain layer), released by the
/// vault to workload `w`. Each vault key or resource is asked for once per image.
pub(crate) fn unwrap_all(
    keys: &CodeKeys,
    w: &Workload,
    manifest: &Manifest,
) -> Result<Vec<Option<Unwrapped>>, String> {
    // Also on a start from a committed tree: only the workload's scheme is ever used.
    check_schemes(w, manifest)?;
    let asker = Asker {
        workload: &w.name,
        code: manifest.digest.as_bytes(),
    };
    let mut vault_key: Option<Result<enclave_vault::keys::VaultKey, String>> = None;
    let mut keks: BTreeMap<String, Result<Zeroizing<Vec<u8>>, String>> = BTreeMap::new();
    let mut out = Vec::with_capacity(manifest.parsed.layers.len());
    for (i, d) in manifest.parsed.layers.iter().enumerate() {
        if !enclave_imgcrypt::is_encrypted(&d.media_type) {
            out.push(None);
            continue;
        }
        let what = layer_name(i, manifest, d);
        let public = enclave_imgcrypt::public_options(d, &what).map_err(|e| e.to_string())?;
        let mut why = Vec::new();
        let mut key = None;
        let wrapped_keys = enclave_imgcrypt::wrapped_keys(d, &what).map_err(|e| e.to_string())?;
        for wrapped in wrapped_keys.into_iter().filter(|k| uses(w, k)) {
            let attempt = match &wrapped {
                WrappedKey::Jwe(jwe) => match &w.decryption_key {
                    None => {
                        Err("a JWE-wrapped key, and the workload names no decryption_key".into())
                    }
                    Some(name) => {
                        let released =
                            vault_key.get_or_insert_with(|| keys.private_key(&asker, name));
                        match released {
                            Err(e) => Err(e.clone()),
                            Ok(k) => match k.recipient() {
                                None => Err(format!(
                                    "vault key '{name}' is {}, and a JWE-wrapped key needs an EC or RSA key",
                                    k.kind().name()
                                )),
                                Some(r) => enclave_imgcrypt::unwrap_jwe(jwe, &r, &what)
                                    .map_err(|e| e.to_string()),
                            },
                        }
                    }
                },
                WrappedKey::AttestationAgent(p) => match kbs_path(&p.kid) {
                    Err(e) => Err(e),
                    Ok(path) => {
                        let kek = keks
                            .entry(path.to_string())
                            .or_insert_with(|| keys.secret(&asker, path));
                        match kek {
                            Err(e) => Err(e.clone()),
                            Ok(kek) => enclave_imgcrypt::unwrap_packet(p, kek, &what)
                                .map_err(|e| e.to_string()),
                        }
                    }
                },
            };
            match attempt {
                Ok(k) => {
                    key = Some(k);
                    break;
                }
                Err(e) => why.push(e),
            }
        }
        let key =
            key.ok_or_else(|| format!("{what}: no key could be unwrapped: {}", why.join("; ")))?;
        out.push(Some(Unwrapped { key, public }));
    }
    Ok(out)
}

/// What OID 3.9 says for an image: one line per key its encrypted layers are decrypted with
/// (`vault-key:<name>#<thumbprint>` with a `decryption_key`; else each layer's KBS resource,
/// as `kbs:///<path>`: the URI's host is never used, so it is not repeated), or `None` for a
/// plaintext image. Never a key. [`check_schemes`] has accepted the manifest and settings.
pub(crate) fn key_reference(
    manifest_bytes: &[u8],
    decryption_key: Option<&str>,
    thumbprint: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let manifest = Manifest::from_bytes(manifest_bytes.to_vec(), "the committed manifest").ok()?;
    let mut refs = BTreeSet::new();
    for (i, d) in encrypted_layers(&manifest) {
        let what = layer_name(i, &manifest, d);
        for wrapped in enclave_imgcrypt::wrapped_keys(d, &what).unwrap_or_default() {
            match (wrapped, decryption_key) {
                (WrappedKey::Jwe(_), Some(name)) => {
                    refs.insert(vault_key_reference(name, &thumbprint));
                }
                (WrappedKey::AttestationAgent(p), None) => {
                    if let Ok(path) = kbs_path(&p.kid) {
                        refs.insert(format!("kbs:///{path}"));
                    }
                }
                _ => {}
            }
        }
    }
    (!refs.is_empty()).then(|| refs.into_iter().collect::<Vec<_>>().join("\n"))
}

/// `vault-key:<name>#<RFC 7638 thumbprint>` (the thumbprint when the key is kept).
pub(crate) fn vault_key_reference(
    name: &str,
    thumbprint: impl Fn(&str) -> Option<String>,
) -> String {
    match thumbprint(name) {
        Some(t) => format!("vault-key:{name}#{t}"),
        None => format!("vault-key:{name}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A manifest with one encrypted layer wrapped both as JWE and for a KBS key id whose
    /// host part carries a line break and a forged vault-key reference.
    fn two_scheme_manifest() -> Vec<u8> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let packet = serde_json::json!({
            "kid": "kbs://evil\nvault-key:prod#forged/default/image-kek/one",
            "wrapped_data": "AAAA",
            "iv": "AAAAAAAAAAAAAAAA",
            "wrap_type": "A256GCM",
        });
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", "a".repeat(64)),
                "size": 2,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                "digest": format!("sha256:{}", "b".repeat(64)),
                "size": 10,
                "annotations": {
                    "org.opencontainers.image.enc.keys.jwe": b64("{}"),
                    "org.opencontainers.image.enc.keys.provider.attestation-agent": b64(&packet.to_string()),
                },
            }],
        }))
        .unwrap()
    }

    /// The certificate names the keys of the workload's scheme only, and a KBS key id in its
    /// canonical form, so a key id cannot add lines of its own.
    #[test]
    fn the_key_reference_names_only_the_scheme_in_use() {
        let m = two_scheme_manifest();
        let thumb = |_: &str| Some("T".to_string());
        assert_eq!(
            key_reference(&m, Some("images"), thumb).as_deref(),
            Some("vault-key:images#T")
        );
        assert_eq!(
            key_reference(&m, None, thumb).as_deref(),
            Some("kbs:///default/image-kek/one")
        );
    }

    #[test]
    fn kbs_uris_name_a_resource_path() {
        assert_eq!(
            kbs_path("kbs:///default/key/image").unwrap(),
            "default/key/image"
        );
        assert_eq!(
            kbs_path("kbs://kbs.example:8080/default/key/image").unwrap(),
            "default/key/image"
        );
        for bad in [
            "default/key/image",
            "kbs://",
            "kbs:///default/key",
            "kbs:///default/../image",
            "kbs:///a/b/c/d",
        ] {
            assert!(kbs_path(bad).is_err(), "{bad}");
        }
    }
}
