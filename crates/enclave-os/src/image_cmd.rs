//! `enclave-os image encrypt` and `enclave-os wasm encrypt`: encrypted workloads made on the
//! operator's machine, in the formats skopeo/ocicrypt and the runtime read
//! (`enclave-imgcrypt`). Nothing here holds a private key: images and components are
//! encrypted to public keys (a vault key's PEM or JWK) or to a KEK the vault or KBS serves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use enclave_imgcrypt::Recipient;
use enclave_imgcrypt::layout::{LayerDone, encrypt_image};
use serde_json::json;
use zeroize::Zeroizing;

use crate::migrate_cmd::finish;
use crate::{EXIT_REJECTED, EXIT_USAGE};

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Encrypt every layer of an image in an OCI layout (skopeo's `oci:` transport) into
    /// another layout, ocicrypt-compatible: `skopeo copy --decryption-key` opens it, and the
    /// runtime decrypts it while pulling with the key the vault releases.
    Encrypt(ImageEncryptArgs),
}

#[derive(Args)]
pub(crate) struct ImageEncryptArgs {
    /// Source OCI layout directory, optionally `:tag` (the image named by that
    /// `org.opencontainers.image.ref.name`, or the layout's only image).
    #[arg(long)]
    from: String,
    /// Destination OCI layout directory, optionally `:tag` (created if missing; other images
    /// in it are kept).
    #[arg(long)]
    to: String,
    /// Who can decrypt, repeatable (skopeo's `--encryption-key` syntax): `jwe:<file>` (an SPKI
    /// PEM public key or a public JWK: EC P-256/P-384 or RSA) or
    /// `provider:attestation-agent:keyid=kbs:///<repo>/<type>/<tag>::keypath=<file>` (a
    /// 32-byte KEK the KBS serves under that resource).
    #[arg(long = "recipient", required = true)]
    recipients: Vec<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum WasmCommand {
    /// Encrypt a wasm component to a public key as a JWE (`cty: application/wasm`), which the
    /// runtime decrypts at load with the vault key it names.
    Encrypt(WasmEncryptArgs),
}

#[derive(Args)]
pub(crate) struct WasmEncryptArgs {
    /// The component (or module) to encrypt.
    input: PathBuf,
    /// `jwe:<file>`: the public key (SPKI PEM or JWK) to encrypt to.
    #[arg(long)]
    recipient: String,
    /// Where to write the encrypted component.
    #[arg(long)]
    out: PathBuf,
    /// The vault key's name, put in the JWE's protected header as `kid` so the runtime knows
    /// which key to ask for.
    #[arg(long)]
    kid: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run_image(cmd: ImageCommand) -> ExitCode {
    match cmd {
        ImageCommand::Encrypt(a) => finish(a.json, image_encrypt(&a)),
    }
}

pub(crate) fn run_wasm(cmd: WasmCommand) -> ExitCode {
    match cmd {
        WasmCommand::Encrypt(a) => finish(a.json, wasm_encrypt(&a)),
    }
}

/// `dir[:tag]`: the tag is what follows the last `:`, unless that part holds a `/` (then the
/// whole is a path with a colon in it).
fn layout_ref(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() && !tag.contains('/') => {
            (PathBuf::from(dir), Some(tag.to_owned()))
        }
        _ => (PathBuf::from(s), None),
    }
}

fn jwe_key(spec: &str, file: &str) -> Result<Recipient, String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("recipient '{spec}': {file}: {e}"))?;
    let key = if text.trim_start().starts_with('{') {
        enclave_vault::jose::public_key_from_jwk(&text)
    } else {
        enclave_vault::jose::public_key_from_pem(&text)
    }
    .map_err(|e| format!("recipient '{spec}': {file}: {e}"))?;
    Ok(Recipient::Jwe(key))
}

fn parse_recipient(spec: &str) -> Result<Recipient, String> {
    if let Some(file) = spec.strip_prefix("jwe:") {
        return jwe_key(spec, file);
    }
    if let Some(params) = spec.strip_prefix("provider:attestation-agent:") {
        let (mut kid, mut keypath) = (None, None);
        for part in params.split("::") {
            match part.split_once('=') {
                Some(("keyid", v)) => kid = Some(v.to_owned()),
                Some(("keypath", v)) => keypath = Some(v.to_owned()),
                _ => {
                    return Err(format!(
                        "recipient '{spec}': '{part}' is not keyid=<kbs uri> or keypath=<file>"
                    ));
                }
            }
        }
        let kid = kid.ok_or_else(|| {
            format!("recipient '{spec}': keyid=kbs:///<repo>/<type>/<tag> is missing")
        })?;
        // What the runtime will accept: an authority of host characters (it is not used)
        // and three segments of vault names; anything else would only fail at load.
        let (host, path) = kid
            .strip_prefix("kbs://")
            .and_then(|rest| rest.split_once('/'))
            .unwrap_or(("", ""));
        let host_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        let path_ok = path.split('/').count() == 3
            && path
                .split('/')
                .all(|p| enclave_config::vault::check_name(p).is_ok());
        if !kid.starts_with("kbs://") || !host_ok || !path_ok {
            return Err(format!(
                "recipient '{spec}': keyid '{}' is not kbs:///<repository>/<type>/<tag> (each part letters, digits, '.', '_' or '-')",
                kid.escape_debug()
            ));
        }
        let keypath = keypath
            .ok_or_else(|| format!("recipient '{spec}': keypath=<32-byte key file> is missing"))?;
        let bytes = Zeroizing::new(
            std::fs::read(&keypath).map_err(|e| format!("recipient '{spec}': {keypath}: {e}"))?,
        );
        let kek: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "recipient '{spec}': {keypath} holds {} bytes; the KEK must be exactly 32 (AES-256)",
                bytes.len()
            )
        })?;
        return Ok(Recipient::AttestationAgent {
            kid,
            kek: Zeroizing::new(kek),
        });
    }
    let scheme = spec.split(':').next().unwrap_or(spec);
    let named = match scheme {
        "pgp" => "PGP",
        "pkcs7" => "PKCS#7",
        "pkcs11" => "PKCS#11",
        "provider" => "this key provider (only attestation-agent)",
        _ => {
            return Err(format!(
                "recipient '{spec}': expected jwe:<public key file> or provider:attestation-agent:keyid=kbs:///<repo>/<type>/<tag>::keypath=<file>"
            ));
        }
    };
    Err(format!(
        "recipient '{spec}': {named} is not supported; use jwe:<public key file> or provider:attestation-agent:..."
    ))
}

fn layer_json(l: &LayerDone) -> serde_json::Value {
    json!({
        "index": l.index,
        "media_type": l.media_type,
        "plain": l.plain.to_string(),
        "encrypted": l.encrypted.to_string(),
        "size": l.size,
    })
}

fn image_encrypt(a: &ImageEncryptArgs) -> Result<serde_json::Value, (u8, String)> {
    let recipients = a
        .recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (EXIT_USAGE, e))?;
    let (src, src_tag) = layout_ref(&a.from);
    let (dst, dst_tag) = layout_ref(&a.to);
    if src == dst {
        return Err((
            EXIT_USAGE,
            format!(
                "--from and --to are the same layout ({}): write the encrypted image to another directory",
                src.display()
            ),
        ));
    }
    let report = encrypt_image(
        &src,
        src_tag.as_deref(),
        &dst,
        dst_tag.as_deref(),
        &recipients,
        &mut |l| {
            eprintln!(
                "layer {}: {} -> {} ({} bytes, {}+encrypted)",
                l.index, l.plain, l.encrypted, l.size, l.media_type
            )
        },
    )
    .map_err(|e| (EXIT_REJECTED, e.to_string()))?;
    let message = format!(
        "encrypted {} layer(s) of {} into {}{}: manifest {}, config {} (unchanged)",
        report.layers.len(),
        a.from,
        dst.display(),
        dst_tag
            .as_deref()
            .map(|t| format!(":{t}"))
            .unwrap_or_default(),
        report.manifest,
        report.config,
    );
    Ok(json!({
        "manifest": report.manifest.to_string(),
        "config": report.config.to_string(),
        "layout": dst.display().to_string(),
        "tag": report.tag,
        "layers": report.layers.iter().map(layer_json).collect::<Vec<_>>(),
        "message": message,
    }))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn wasm_encrypt(a: &WasmEncryptArgs) -> Result<serde_json::Value, (u8, String)> {
    let Some(file) = a.recipient.strip_prefix("jwe:") else {
        return Err((
            EXIT_USAGE,
            format!(
                "recipient '{}': a component is encrypted to a public key: jwe:<file>",
                a.recipient
            ),
        ));
    };
    let Recipient::Jwe(key) = jwe_key(&a.recipient, file).map_err(|e| (EXIT_USAGE, e))? else {
        return Err((
            EXIT_USAGE,
            format!("recipient '{}': not a public key", a.recipient),
        ));
    };
    let wasm =
        std::fs::read(&a.input).map_err(|e| (EXIT_USAGE, format!("{}: {e}", a.input.display())))?;
    let jwe = enclave_imgcrypt::encrypt_component(&wasm, &key, a.kid.as_deref())
        .map_err(|e| (EXIT_USAGE, format!("{}: {e}", a.input.display())))?;
    write_atomic(&a.out, &jwe).map_err(|e| (EXIT_REJECTED, format!("{}: {e}", a.out.display())))?;
    let plain = hex::encode(ring::digest::digest(&ring::digest::SHA256, &wasm));
    let encrypted = hex::encode(ring::digest::digest(&ring::digest::SHA256, &jwe));
    Ok(json!({
        "out": a.out.display().to_string(),
        "kid": a.kid,
        "plain_sha256": plain,
        "encrypted_sha256": encrypted,
        "size": jwe.len(),
        "message": format!(
            "encrypted {} ({} bytes, sha256 {plain}) to {} ({} bytes){}",
            a.input.display(),
            wasm.len(),
            a.out.display(),
            jwe.len(),
            a.kid.as_deref().map(|k| format!(", kid {k}")).unwrap_or_default()
        ),
    }))
}
