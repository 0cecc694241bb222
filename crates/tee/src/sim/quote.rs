//! Quotes in Intel's DCAP v3 (SGX) and v4 (TDX) layouts, signed as a quoting enclave signs them:
//! the attestation key over header and body, the PCK key over the QE report, whose report_data
//! binds the attestation key.

use ring::digest::{SHA256, digest};

use super::Flavour;
use super::collateral::{QE_MRSIGNER, QE_SVN, pck_chain_pem, qe_isv_prod_id};
use super::pki::{SimPki, sign_raw};
use enclave_evidence::intel::quote::INTEL_QE_VENDOR_ID;

/// What the quote attests: the enclave's or TD's identity.
pub(crate) struct Identity {
    /// SHA-256 of the executable: MRENCLAVE for sim-sgx.
    pub sha256: [u8; 32],
    /// SHA-384 of the executable: MRTD for sim-tdx.
    pub sha384: [u8; 48],
    /// MRSIGNER for sim-sgx.
    pub mr_signer: [u8; 32],
    /// ISVSVN for sim-sgx.
    pub isv_svn: u16,
}

/// The simulated TDX module's measurement.
pub(crate) const MR_SEAM: &[u8; 48] = b"Enclave OS simulated TDX module, not Intel's!!!!";

fn header(pki: &SimPki, flavour: Flavour) -> Result<Vec<u8>, String> {
    let mut h = Vec::with_capacity(48);
    let (version, tee_type): (u16, u32) = match flavour {
        Flavour::Sgx => (3, 0),
        Flavour::Tdx => (4, 0x81),
    };
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&tee_type.to_le_bytes());
    let (qe_svn, pce_svn) = match flavour {
        Flavour::Sgx => (QE_SVN, pki.platform.pce_svn),
        Flavour::Tdx => (0, 0),
    };
    h.extend_from_slice(&qe_svn.to_le_bytes());
    h.extend_from_slice(&pce_svn.to_le_bytes());
    h.extend_from_slice(&INTEL_QE_VENDOR_ID);
    let qe_id = hex::decode(&pki.platform.qe_id).map_err(|e| format!("qe_id: {e}"))?;
    let mut user_data = [0u8; 20];
    user_data[..qe_id.len().min(16)].copy_from_slice(&qe_id[..qe_id.len().min(16)]);
    h.extend_from_slice(&user_data);
    Ok(h)
}

/// An SGX report body (384 bytes).
fn sgx_report(
    cpu_svn: &[u8; 16],
    attributes: [u8; 16],
    mr_enclave: &[u8; 32],
    mr_signer: &[u8; 32],
    isv_prod_id: u16,
    isv_svn: u16,
    report_data: &[u8; 64],
) -> Vec<u8> {
    let mut r = Vec::with_capacity(384);
    r.extend_from_slice(cpu_svn);
    r.extend_from_slice(&0u32.to_le_bytes()); // MISCSELECT
    r.extend_from_slice(&[0; 28]); // reserved, ISVEXTPRODID
    r.extend_from_slice(&attributes);
    r.extend_from_slice(mr_enclave);
    r.extend_from_slice(&[0; 32]);
    r.extend_from_slice(mr_signer);
    r.extend_from_slice(&[0; 96]); // reserved, CONFIGID
    r.extend_from_slice(&isv_prod_id.to_le_bytes());
    r.extend_from_slice(&isv_svn.to_le_bytes());
    r.extend_from_slice(&[0; 60]); // CONFIGSVN, reserved, ISVFAMILYID
    r.extend_from_slice(report_data);
    debug_assert_eq!(r.len(), 384);
    r
}

fn td10_report(pki: &SimPki, id: &Identity, report_data: &[u8; 64]) -> Vec<u8> {
    let mut r = Vec::with_capacity(584);
    r.extend_from_slice(&pki.platform.tee_tcb_svn);
    r.extend_from_slice(MR_SEAM);
    r.extend_from_slice(&[0; 48]); // MRSIGNERSEAM: Intel's module is signed by zero
    r.extend_from_slice(&[0; 8]); // SEAMATTRIBUTES
    // TDATTRIBUTES: SEPT_VE_DISABLE (bit 28), as every production TD sets; not debug.
    r.extend_from_slice(&[0, 0, 0, 0x10, 0, 0, 0, 0]);
    r.extend_from_slice(&[0xe7, 0x02, 0x06, 0, 0, 0, 0, 0]); // XFAM
    r.extend_from_slice(&id.sha384); // MRTD
    r.extend_from_slice(&[0; 48 * 3]); // MRCONFIGID, MROWNER, MROWNERCONFIG
    r.extend_from_slice(&[0; 48 * 4]); // RTMR0..3
    r.extend_from_slice(report_data);
    debug_assert_eq!(r.len(), 584);
    r
}

/// Build and sign a quote for `report_data`.
pub(crate) fn quote(
    pki: &SimPki,
    flavour: Flavour,
    id: &Identity,
    report_data: &[u8; 64],
) -> Result<Vec<u8>, String> {
    let mut signed = header(pki, flavour)?;
    match flavour {
        // INIT | MODE64BIT, XFRM x87 | SSE: a production (non-debug) enclave.
        Flavour::Sgx => signed.extend(sgx_report(
            &pki.platform.cpu_svn,
            [0x05, 0, 0, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0],
            &id.sha256,
            &id.mr_signer,
            0,
            id.isv_svn,
            report_data,
        )),
        Flavour::Tdx => signed.extend(td10_report(pki, id, report_data)),
    }

    let att_pkcs8 = &pki.attestation_key;
    let att_pub = attestation_public_key(att_pkcs8)?;
    let auth_data: Vec<u8> = (0u8..32).collect();
    let mut rd = [0u8; 64];
    let mut bind = att_pub.to_vec();
    bind.extend_from_slice(&auth_data);
    rd[..32].copy_from_slice(digest(&SHA256, &bind).as_ref());
    let qe_report = sgx_report(
        &pki.platform.cpu_svn,
        [0x11, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0],
        digest(&SHA256, b"Enclave OS simulated quoting enclave")
            .as_ref()
            .try_into()
            .map_err(|_| "digest size")?,
        &QE_MRSIGNER,
        qe_isv_prod_id(flavour),
        QE_SVN,
        &rd,
    );
    let qe_sig = pki.pck.sign_raw(&qe_report)?;
    let chain = pck_chain_pem(pki);

    let mut qe_cert = qe_report;
    qe_cert.extend_from_slice(&qe_sig);
    qe_cert.extend_from_slice(&(auth_data.len() as u16).to_le_bytes());
    qe_cert.extend_from_slice(&auth_data);
    qe_cert.extend_from_slice(&5u16.to_le_bytes());
    qe_cert.extend_from_slice(&(chain.len() as u32).to_le_bytes());
    qe_cert.extend_from_slice(chain.as_bytes());

    let mut sig_data = sign_raw(att_pkcs8, &signed)?;
    sig_data.extend_from_slice(&att_pub);
    if flavour == Flavour::Tdx {
        sig_data.extend_from_slice(&6u16.to_le_bytes());
        sig_data.extend_from_slice(&(qe_cert.len() as u32).to_le_bytes());
    }
    sig_data.extend_from_slice(&qe_cert);

    let mut out = signed;
    out.extend_from_slice(&(sig_data.len() as u32).to_le_bytes());
    out.extend_from_slice(&sig_data);
    Ok(out)
}

/// The attestation key's public point (x || y, 64 bytes).
fn attestation_public_key(pkcs8: &[u8]) -> Result<[u8; 64], String> {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    let kp = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| format!("attestation key does not load: {e}"))?;
    let point = kp.public_key().as_ref();
    point
        .get(1..65)
        .and_then(|p| <[u8; 64]>::try_from(p).ok())
        .ok_or_else(|| "attestation public key is not an uncompressed P-256 point".into())
}
