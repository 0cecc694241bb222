//! The operator's private PKI: a root CA, kept offline, and an intermediary CA that the runtime
//! imports once and seals; the intermediary signs every RA-TLS leaf.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Lifetime of the root CA.
pub const ROOT_YEARS: i64 = 10;
/// Lifetime of the intermediary CA: rotate it well within the root's.
pub const INTERMEDIARY_YEARS: i64 = 3;

/// Why the CA could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file exists already: a CA is never overwritten.
    #[error("{0} already exists: refusing to overwrite a CA (choose another --out)")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Key or certificate generation failed.
    #[error("generating the CA failed: {0}")]
    Generate(String),
}

/// What `ca init` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CaFiles {
    /// The root certificate (distribute to clients: `--root`).
    pub root_cert: PathBuf,
    /// The root key (keep offline).
    pub root_key: PathBuf,
    /// The intermediary certificate (give to the runtime).
    pub intermediary_cert: PathBuf,
    /// The intermediary key (give to the runtime once; it seals it).
    pub intermediary_key: PathBuf,
    /// SHA-256 of the root certificate's DER, hex: what clients pin.
    pub root_sha256: String,
    /// SHA-256 of the intermediary certificate's DER, hex.
    pub intermediary_sha256: String,
}

fn name(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    dn
}

fn ca_params(cn: &str, org: &str, years: i64, path_len: u8) -> Result<CertificateParams, CaError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CaError::Generate("the system random generator failed".into()))?;
    serial[0] &= 0x7f;
    let mut p = CertificateParams::default();
    p.distinguished_name = name(cn, org);
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(365 * years);
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CaError::Exists(path.to_path_buf()),
            _ => io(e),
        })?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// A root CA and an intermediary CA, in memory.
pub struct GeneratedCa {
    /// The root certificate, PEM.
    pub root_cert_pem: String,
    /// The root key, PKCS#8 PEM.
    pub root_key_pem: Zeroizing<String>,
    /// The intermediary certificate, PEM.
    pub intermediary_cert_pem: String,
    /// The intermediary key, PKCS#8 PEM.
    pub intermediary_key_pem: Zeroizing<String>,
    root_der: Vec<u8>,
    intermediary_der: Vec<u8>,
}

impl std::fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCa")
            .field("root_sha256", &sha256_hex(&self.root_der))
            .field("intermediary_sha256", &sha256_hex(&self.intermediary_der))
            .finish_non_exhaustive()
    }
}

/// Create a root CA and an intermediary CA (ECDSA P-256) for organisation `org`, in memory: a
/// caller that needs only the intermediary (the runtime's development CA) never writes the root
/// key anywhere.
pub fn generate(org: &str) -> Result<GeneratedCa, CaError> {
    let gen_err = |e: rcgen::Error| CaError::Generate(e.to_string());
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let root_params = ca_params(&format!("{org} Enclave OS Root CA"), org, ROOT_YEARS, 1)?;
    let root = root_params.self_signed(&root_key).map_err(gen_err)?;
    let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let int_params = ca_params(
        &format!("{org} Enclave OS Intermediary CA"),
        org,
        INTERMEDIARY_YEARS,
        0,
    )?;
    let int = int_params
        .signed_by(&int_key, &Issuer::from_params(&root_params, &root_key))
        .map_err(gen_err)?;
    Ok(GeneratedCa {
        root_cert_pem: root.pem(),
        root_key_pem: Zeroizing::new(root_key.serialize_pem()),
        intermediary_cert_pem: int.pem(),
        intermediary_key_pem: Zeroizing::new(int_key.serialize_pem()),
        root_der: root.der().to_vec(),
        intermediary_der: int.der().to_vec(),
    })
}

/// Create a root CA and an intermediary CA (ECDSA P-256) in `dir`, for organisation `org`.
/// Existing files are never overwritten; private keys are written 0600.
pub fn init(dir: &Path, org: &str) -> Result<CaFiles, CaError> {
    let files = CaFiles {
        root_cert: dir.join("root.crt.pem"),
        root_key: dir.join("root.key.pem"),
        intermediary_cert: dir.join("intermediary.crt.pem"),
        intermediary_key: dir.join("intermediary.key.pem"),
        root_sha256: String::new(),
        intermediary_sha256: String::new(),
    };
    for p in [
        &files.root_cert,
        &files.root_key,
        &files.intermediary_cert,
        &files.intermediary_key,
    ] {
        if p.exists() {
            return Err(CaError::Exists(p.clone()));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = generate(org)?;
    // Keys first, certificates last: a directory with certificates is a complete CA.
    write_new(&files.root_key, ca.root_key_pem.as_bytes(), 0o600)?;
    write_new(
        &files.intermediary_key,
        ca.intermediary_key_pem.as_bytes(),
        0o600,
    )?;
    write_new(
        &files.intermediary_cert,
        ca.intermediary_cert_pem.as_bytes(),
        0o644,
    )?;
    write_new(&files.root_cert, ca.root_cert_pem.as_bytes(), 0o644)?;
    Ok(CaFiles {
        root_sha256: sha256_hex(&ca.root_der),
        intermediary_sha256: sha256_hex(&ca.intermediary_der),
        ..files
    })
}
