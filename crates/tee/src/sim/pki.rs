//! The simulation PKI: Intel's DCAP hierarchy, reproduced under a local root.
//!
//! Created on first use in a simulation directory, with 0600 key files:
//!
//! - a root CA (the trust anchor a verifier must be told to trust, with `--trust-sim`);
//! - a PCK platform CA and a PCK leaf carrying Intel's SGX extension (PPID, TCB component SVNs,
//!   PCESVN, CPUSVN, PCE-ID, FMSPC, SGX type), so that dcap-qvl reads it as it reads Intel's;
//! - a TCB signing certificate, issued directly by the root, that signs TCB Info and QE Identity;
//! - the quoting enclave's attestation key, and the platform secret from which sealing keys derive.
//!
//! Every name says "Enclave OS Simulated": nothing here can be mistaken for Intel's hierarchy, and a
//! verifier that trusts only Intel's root rejects it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::der;
use crate::error::TeeError;
use crate::fsutil;

/// The platform's identity and TCB, as its PCK certificate states them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// FMSPC (hex).
    pub fmspc: String,
    /// PCE-ID (hex).
    pub pce_id: String,
    /// The 16 SGX TCB component SVNs (CPUSVN).
    pub cpu_svn: [u8; 16],
    /// PCE SVN.
    pub pce_svn: u16,
    /// The 16 TDX TCB component SVNs (TEE_TCB_SVN).
    pub tee_tcb_svn: [u8; 16],
    /// PPID (hex).
    pub ppid: String,
    /// QE ID (hex), the first 16 bytes of a quote's user data.
    pub qe_id: String,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    created: String,
    platform: Platform,
}

const FORMAT: &str = "enclave-os-sim-pki/v1";
const ROOT_CN: &str = "Enclave OS Simulated SGX Root CA";
const ORG: &str = "Enclave OS simulation (not Intel)";
/// Marker carried in every simulation certificate's subject; verifiers recognise it.
pub use enclave_evidence::intel::verify::SIM_MARKER;

/// A certificate and its private key (PKCS#8, zeroized on drop).
pub(crate) struct Credential {
    pub der: Vec<u8>,
    key_der: Zeroizing<Vec<u8>>,
    key_pem: Zeroizing<String>,
}

impl Credential {
    /// The key, for rcgen to sign certificates and CRLs with.
    pub fn key_pair(&self) -> Result<KeyPair, String> {
        KeyPair::from_pem(&self.key_pem).map_err(|e| format!("key does not load: {e}"))
    }

    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.der)
    }

    /// Sign `msg` with ECDSA P-256 / SHA-256, as raw r || s.
    pub fn sign_raw(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        sign_raw(&self.key_der, msg)
    }
}

pub(crate) fn sign_raw(pkcs8: &[u8], msg: &[u8]) -> Result<Vec<u8>, String> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = SystemRandom::new();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        .map_err(|e| format!("signing key does not load: {e}"))?;
    kp.sign(&rng, msg)
        .map(|s| s.as_ref().to_vec())
        .map_err(|e| format!("signing failed: {e}"))
}

pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The simulation PKI, loaded from (or created in) its directory.
pub struct SimPki {
    dir: PathBuf,
    pub(crate) root: Credential,
    pub(crate) pck_ca: Credential,
    pub(crate) pck: Credential,
    pub(crate) tcb: Credential,
    pub(crate) attestation_key: Zeroizing<Vec<u8>>,
    pub(crate) secret: Zeroizing<Vec<u8>>,
    /// The platform this PKI certifies.
    pub platform: Platform,
}

impl std::fmt::Debug for SimPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn sim_err(dir: &Path, reason: impl Into<String>) -> TeeError {
    TeeError::Sim {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, ORG);
    dn
}

fn random<const N: usize>(rng: &SystemRandom) -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    rng.fill(&mut b)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(b)
}

fn params(
    cn: &str,
    ca: Option<u8>,
    years: i64,
    rng: &SystemRandom,
) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(cn);
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(365 * years);
    p.serial_number = Some(SerialNumber::from_slice(&random::<16>(rng)?));
    match ca {
        Some(depth) => {
            p.is_ca = IsCa::Ca(if depth == u8::MAX {
                BasicConstraints::Unconstrained
            } else {
                BasicConstraints::Constrained(depth)
            });
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        None => {
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ];
        }
    }
    Ok(p)
}

const SGX_EXT: [u64; 7] = [1, 2, 840, 113741, 1, 13, 1];

fn sgx_oid(tail: &[u64]) -> Vec<u8> {
    let mut arcs = SGX_EXT.to_vec();
    arcs.extend_from_slice(tail);
    der::oid(&arcs)
}

/// Intel's SGX extension for a PCK certificate.
fn sgx_extension(p: &Platform) -> Result<Vec<u8>, String> {
    let h = |s: &str| hex::decode(s).map_err(|e| format!("platform value is not hex: {e}"));
    let mut tcb: Vec<Vec<u8>> = (0..16)
        .map(|i| {
            der::seq(&[
                sgx_oid(&[2, i as u64 + 1]),
                der::int(u64::from(p.cpu_svn[i])),
            ])
        })
        .collect();
    tcb.push(der::seq(&[
        sgx_oid(&[2, 17]),
        der::int(u64::from(p.pce_svn)),
    ]));
    tcb.push(der::seq(&[sgx_oid(&[2, 18]), der::octets(&p.cpu_svn)]));
    Ok(der::seq(&[
        der::seq(&[sgx_oid(&[1]), der::octets(&h(&p.ppid)?)]),
        der::seq(&[sgx_oid(&[2]), der::seq(&tcb)]),
        der::seq(&[sgx_oid(&[3]), der::octets(&h(&p.pce_id)?)]),
        der::seq(&[sgx_oid(&[4]), der::octets(&h(&p.fmspc)?)]),
        der::seq(&[sgx_oid(&[5]), der::enumerated(0)]),
    ]))
}

/// File stems of the four certificates, in creation order.
const FILES: [&str; 4] = ["root", "pck-ca", "pck", "tcb-signing"];

impl SimPki {
    /// The root certificate's path in a simulation directory: what `--trust-sim` takes.
    pub fn root_path(dir: &Path) -> PathBuf {
        enclave_evidence::intel::simulation::root_path(dir)
    }

    /// The simulation directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root.der
    }

    /// Load the PKI in `dir`, creating it if the directory holds none. A PKI whose creation was
    /// interrupted (no manifest) is created afresh; nothing is half-used.
    pub fn open_or_create(dir: &Path) -> Result<Self, TeeError> {
        if dir.join("pki.json").exists() {
            Self::load(dir)
        } else {
            Self::create(dir)
        }
    }

    fn load(dir: &Path) -> Result<Self, TeeError> {
        let manifest: Manifest = serde_json::from_slice(&fsutil::read(&dir.join("pki.json"))?)
            .map_err(|e| sim_err(dir, format!("pki.json: {e}")))?;
        if manifest.format != FORMAT {
            return Err(sim_err(
                dir,
                format!("unknown format '{}' (expected {FORMAT})", manifest.format),
            ));
        }
        let cred = |stem: &str| -> Result<Credential, TeeError> {
            let cert = fsutil::read(&dir.join(format!("{stem}.crt.pem")))?;
            let key_pem = Zeroizing::new(
                String::from_utf8(fsutil::read(&dir.join(format!("{stem}.key.pem")))?)
                    .map_err(|_| sim_err(dir, format!("{stem}.key.pem is not PEM text")))?,
            );
            let der = enclave_evidence::input::pem_certificates(&cert)
                .map_err(|e| sim_err(dir, format!("{stem}.crt.pem: {e}")))?
                .into_iter()
                .next()
                .ok_or_else(|| sim_err(dir, format!("{stem}.crt.pem holds no certificate")))?;
            let key_der = enclave_evidence::input::pem_blocks(key_pem.as_bytes(), "PRIVATE KEY")
                .map_err(|e| sim_err(dir, format!("{stem}.key.pem: {e}")))?
                .into_iter()
                .next()
                .ok_or_else(|| sim_err(dir, format!("{stem}.key.pem holds no PRIVATE KEY")))?;
            Ok(Credential {
                der,
                key_der: Zeroizing::new(key_der),
                key_pem,
            })
        };
        let secret = Zeroizing::new(fsutil::read(&dir.join("platform.secret"))?);
        if secret.len() != 32 {
            return Err(sim_err(dir, "platform.secret is not 32 bytes"));
        }
        let att = Zeroizing::new(fsutil::read(&dir.join("attestation.key.pem"))?);
        let attestation_key = enclave_evidence::input::pem_blocks(&att, "PRIVATE KEY")
            .map_err(|e| sim_err(dir, format!("attestation.key.pem: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| sim_err(dir, "attestation.key.pem holds no PRIVATE KEY"))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            root: cred("root")?,
            pck_ca: cred("pck-ca")?,
            pck: cred("pck")?,
            tcb: cred("tcb-signing")?,
            attestation_key: Zeroizing::new(attestation_key),
            secret,
            platform: manifest.platform,
        })
    }

    fn create(dir: &Path) -> Result<Self, TeeError> {
        let e = |r: String| sim_err(dir, r);
        fsutil::private_dir(dir)?;
        let rng = SystemRandom::new();
        let platform = Platform {
            fmspc: "00906ED50000".into(),
            pce_id: "0000".into(),
            cpu_svn: [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
            pce_svn: 13,
            tee_tcb_svn: [3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ppid: hex::encode(random::<16>(&rng).map_err(e)?),
            qe_id: hex::encode(random::<16>(&rng).map_err(e)?),
        };
        let gen_key = || {
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|x| sim_err(dir, format!("key generation failed: {x}")))
        };
        let root_key = gen_key()?;
        let root_params = params(ROOT_CN, Some(u8::MAX), 30, &rng).map_err(e)?;
        let root_cert = root_params
            .self_signed(&root_key)
            .map_err(|x| e(x.to_string()))?;
        let root_issuer = Issuer::from_params(&root_params, &root_key);

        let pck_ca_key = gen_key()?;
        let pck_ca_params = params(
            "Enclave OS Simulated SGX PCK Platform CA",
            Some(0),
            20,
            &rng,
        )
        .map_err(e)?;
        let pck_ca_cert = pck_ca_params
            .signed_by(&pck_ca_key, &root_issuer)
            .map_err(|x| e(x.to_string()))?;
        let pck_ca_issuer = Issuer::from_params(&pck_ca_params, &pck_ca_key);

        let pck_key = gen_key()?;
        let mut pck_params =
            params("Enclave OS Simulated SGX PCK Certificate", None, 7, &rng).map_err(e)?;
        pck_params.custom_extensions = vec![CustomExtension::from_oid_content(
            &SGX_EXT,
            sgx_extension(&platform).map_err(e)?,
        )];
        let pck_cert = pck_params
            .signed_by(&pck_key, &pck_ca_issuer)
            .map_err(|x| e(x.to_string()))?;

        let tcb_key = gen_key()?;
        let tcb_params =
            params("Enclave OS Simulated SGX TCB Signing", None, 7, &rng).map_err(e)?;
        let tcb_cert = tcb_params
            .signed_by(&tcb_key, &root_issuer)
            .map_err(|x| e(x.to_string()))?;

        let att_key = gen_key()?;
        let secret = Zeroizing::new(random::<32>(&rng).map_err(e)?.to_vec());

        let creds = [
            (&root_cert, &root_key),
            (&pck_ca_cert, &pck_ca_key),
            (&pck_cert, &pck_key),
            (&tcb_cert, &tcb_key),
        ];
        for (stem, (cert, key)) in FILES.iter().zip(creds) {
            fsutil::write_atomic(
                &dir.join(format!("{stem}.crt.pem")),
                cert.pem().as_bytes(),
                0o644,
            )?;
            fsutil::write_atomic(
                &dir.join(format!("{stem}.key.pem")),
                Zeroizing::new(key.serialize_pem()).as_bytes(),
                0o600,
            )?;
        }
        fsutil::write_atomic(
            &dir.join("attestation.key.pem"),
            Zeroizing::new(att_key.serialize_pem()).as_bytes(),
            0o600,
        )?;
        fsutil::write_atomic(&dir.join("platform.secret"), &secret, 0o600)?;
        let manifest = Manifest {
            format: FORMAT.into(),
            created: enclave_evidence::time::fmt(OffsetDateTime::now_utc().unix_timestamp()),
            platform,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|x| e(x.to_string()))?;
        // Written last: its presence is what says the PKI is complete.
        fsutil::write_atomic(&dir.join("pki.json"), &json, 0o644)?;
        Self::load(dir)
    }
}
