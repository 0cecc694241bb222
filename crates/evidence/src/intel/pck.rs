//! What a PCK certificate says about its platform: FMSPC and PCE-ID, from Intel's SGX extension
//! (OID 1.2.840.113741.1.13.1, a SEQUENCE of `{ OID, value }` pairs).

use x509_parser::der_parser::ber::BerObjectContent;
use x509_parser::der_parser::der::parse_der;
use x509_parser::der_parser::oid;
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::*;

use crate::error::VerifyError;

// Compared as encoded OIDs: rendering every OID as dotted text allocated on each quote.
const SGX_EXTENSION: Oid<'static> = oid!(1.2.840.113741.1.13.1);
const PCE_ID: Oid<'static> = oid!(1.2.840.113741.1.13.1.3);
const FMSPC: Oid<'static> = oid!(1.2.840.113741.1.13.1.4);

/// The platform facts of a PCK leaf certificate.
pub(crate) struct PckFacts {
    pub fmspc: [u8; 6],
    pub pce_id: Vec<u8>,
}

fn bad(reason: impl Into<String>) -> VerifyError {
    VerifyError::Chain(format!(
        "the PCK certificate's SGX extension {}",
        reason.into()
    ))
}

pub(crate) fn facts(leaf: &X509Certificate<'_>) -> Result<PckFacts, VerifyError> {
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid == SGX_EXTENSION)
        .ok_or_else(|| bad("is missing: this is not a PCK certificate"))?;
    let (_, seq) = parse_der(ext.value).map_err(|e| bad(format!("does not parse: {e}")))?;
    let items = seq.as_sequence().map_err(|_| bad("is not a SEQUENCE"))?;
    let (mut fmspc, mut pce_id) = (None, None);
    for item in items {
        let Ok([oid, value]) = item.as_sequence().map(Vec::as_slice) else {
            continue;
        };
        let (Ok(oid), BerObjectContent::OctetString(bytes)) = (oid.as_oid(), &value.content) else {
            continue;
        };
        if *oid == FMSPC {
            fmspc = <[u8; 6]>::try_from(&bytes[..]).ok();
        } else if *oid == PCE_ID {
            pce_id = Some(bytes.to_vec());
        }
    }
    Ok(PckFacts {
        fmspc: fmspc.ok_or_else(|| bad("has no 6-byte FMSPC"))?,
        pce_id: pce_id.ok_or_else(|| bad("has no PCE-ID"))?,
    })
}
