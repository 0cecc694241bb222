//! Encrypted images: which layers are ciphertext, whose keys unwrap them, and what the
//! certificate says about it.
//!
//! A layer encrypted the ocicrypt way carries its key wrapped once per recipient scheme. Two
//! are read here: `jwe` (to a vault key: the workload's `decryption_key`) and Confidential
//! Containers' `provider.attestation-agent` (AES-256-GCM under a KEK that is a KBS resource,
//! named by the packet's `kid`, here a vault secret). Each key is asked of the vault as the
//! workload, with the hash of the manifest the tree commits, so the vault's policies decide;
//! the first scheme that yields the key wins, and when none does, every reason is given.

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
/// this runtime could unwrap (a scheme it reads, and the `decryption_key` a JWE needs).
pub(crate) fn check_schemes(w: &Workload, manifest: &Manifest) -> Result<(), String> {
    for (i, d) in encrypted_layers(manifest) {
        let what = layer_name(i, manifest, d);
        let wrapped = enclave_imgcrypt::wrapped_keys(d, &what).map_err(|e| e.to_string())?;
        enclave_imgcrypt::public_options(d, &what).map_err(|e| e.to_string())?;
        let jwe_only = wrapped.iter().all(|k| matches!(k, WrappedKey::Jwe(_)));
        if jwe_only && w.decryption_key.is_none() {
            return Err(format!(
                "{what}: its key is wrapped only as JWE, to a public key: name the vault key it was encrypted to with decryption_key"
            ));
        }
    }
    Ok(())
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
        for wrapped in enclave_imgcrypt::wrapped_keys(d, &what).map_err(|e| e.to_string())? {
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

/// What OID 3.9 says for an image: one line per key reference its encrypted layers carry
/// (`vault-key:<name>#<thumbprint>` for JWE, the KBS resource URI for CoCo's packets), or
/// `None` for a plaintext image. Never a key.
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
            match wrapped {
                WrappedKey::Jwe(_) => {
                    if let Some(name) = decryption_key {
                        refs.insert(vault_key_reference(name, &thumbprint));
                    }
                }
                WrappedKey::AttestationAgent(p) => {
                    refs.insert(p.kid);
                }
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
