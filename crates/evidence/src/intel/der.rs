//! A minimal DER walk over an X.509 certificate for the three things the verifier reads from a
//! PCK chain that dcap-qvl has already verified: each certificate's validity period and the
//! leaf's FMSPC and PCE-ID.
//!
//! x509-parser builds the whole certificate (every name, extension and the SGX extension's ~20
//! nested items as allocated objects); on a cold quote that was about 5% of verification time.
//! This walk allocates nothing. It understands only the strict DER that Intel issues; on anything
//! else it returns `None` and the caller falls back to x509-parser, which then gives the error or
//! the answer. The chain it reads has already been verified by dcap-qvl (webpki), and a test
//! checks that it reads the same facts as x509-parser from every certificate in the vectors.

/// (tag, contents, rest) of the TLV at the start of `input`. Low tag numbers only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match tlv(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

fn digits(s: &[u8]) -> Option<i64> {
    s.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// A DER UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// unix seconds.
fn time(tag: u8, s: &[u8]) -> Option<i64> {
    let (year, rest) = match (tag, s.len()) {
        (0x17, 13) => {
            let yy = digits(&s[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        (0x18, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let f = |i: usize| digits(&rest[i..i + 2]);
    let (mo, d, h, mi, se) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// A certificate's validity period and, when present, the contents of its Extensions SEQUENCE.
pub(crate) struct Walked<'a> {
    pub not_before: i64,
    pub not_after: i64,
    pub extensions: Option<&'a [u8]>,
}

pub(crate) fn walk(der: &[u8]) -> Option<Walked<'_>> {
    let (cert, trailing) = expect(der, 0x30)?;
    if !trailing.is_empty() {
        return None;
    }
    let (tbs, _) = expect(cert, 0x30)?;
    let mut r = tbs;
    if let Some((_, rest)) = expect(r, 0xA0) {
        r = rest; // version
    }
    let (_, r) = expect(r, 0x02)?; // serialNumber
    let (_, r) = expect(r, 0x30)?; // signature
    let (_, r) = expect(r, 0x30)?; // issuer
    let (validity, r) = expect(r, 0x30)?;
    let (_, r) = expect(r, 0x30)?; // subject
    let (_, mut r) = expect(r, 0x30)?; // subjectPublicKeyInfo
    let (t1, nb, v) = tlv(validity)?;
    let (t2, na, v) = tlv(v)?;
    if !v.is_empty() {
        return None;
    }
    let mut extensions = None;
    while !r.is_empty() {
        let (tag, contents, rest) = tlv(r)?;
        match tag {
            0x81 | 0x82 => {} // issuerUniqueID, subjectUniqueID
            0xA3 => extensions = Some(expect(contents, 0x30)?.0),
            _ => return None,
        }
        r = rest;
    }
    Some(Walked {
        not_before: time(t1, nb)?,
        not_after: time(t2, na)?,
        extensions,
    })
}

/// The FMSPC and the PCE-ID, each if present (and, for the FMSPC, 6 bytes).
pub(crate) type SgxFacts<'a> = (Option<[u8; 6]>, Option<&'a [u8]>);

// 1.2.840.113741.1.13.1 and its members .3 (PCE-ID) and .4 (FMSPC), as encoded.
const SGX_EXTENSION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01];
const PCE_ID: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01, 0x03];
const FMSPC: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01, 0x04];

/// The FMSPC and PCE-ID of a PCK certificate's SGX extension, read as `pck::facts` reads them
/// (the first SGX extension; within it, the last FMSPC and PCE-ID). `None` when the walk cannot
/// tell, for the caller to fall back to x509-parser.
pub(crate) fn pck_facts(extensions: &[u8]) -> Option<SgxFacts<'_>> {
    let mut r = extensions;
    while !r.is_empty() {
        let (ext, rest) = expect(r, 0x30)?;
        r = rest;
        let (oid, mut e) = expect(ext, 0x06)?;
        if oid != SGX_EXTENSION {
            continue;
        }
        if let Some((_, rest)) = expect(e, 0x01) {
            e = rest; // critical
        }
        let (value, _) = expect(e, 0x04)?;
        let (mut items, trailing) = expect(value, 0x30)?;
        if !trailing.is_empty() {
            return None;
        }
        let (mut fmspc, mut pce_id) = (None, None);
        while !items.is_empty() {
            let (item, rest) = expect(items, 0x30)?;
            items = rest;
            let (oid, v) = expect(item, 0x06)?;
            let (tag, contents, after) = tlv(v)?;
            // As pck::facts: only `{ OID, OCTET STRING }` pairs count.
            if tag != 0x04 || !after.is_empty() {
                continue;
            }
            if oid == FMSPC {
                fmspc = Some(<[u8; 6]>::try_from(contents).ok());
            } else if oid == PCE_ID {
                pce_id = Some(contents);
            }
        }
        return Some((fmspc.flatten(), pce_id));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use x509_parser::prelude::*;

    fn vectors() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vectors")
    }

    /// Every certificate in the vectors: the PCK chains of the quotes, the collateral's chains,
    /// AMD's and the RA-TLS certificates.
    fn certificates() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut dirs = vec![vectors()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                let name = path.display().to_string();
                let mut certs = Vec::new();
                if name.ends_with("quote.bin") || name.contains("parse-only") {
                    let raw = crate::input::evidence_bytes(&bytes).unwrap();
                    let q = crate::intel::Quote::decode(&raw).unwrap();
                    certs = q.signature.qe.certification.pck_chain_der().unwrap();
                } else if name.ends_with("collateral.json") {
                    let text = String::from_utf8(bytes).unwrap();
                    certs = crate::input::pem_certificates(text.replace("\\n", "\n").as_bytes())
                        .unwrap();
                } else if let Ok(c) = crate::input::certificates(&bytes) {
                    certs = c;
                }
                out.extend(certs.into_iter().map(|c| (name.clone(), c)));
            }
        }
        out
    }

    #[test]
    fn the_walk_reads_what_x509_parser_reads() {
        let certs = certificates();
        let mut pck_leaves = 0;
        let mut read = 0;
        for (name, der) in &certs {
            // Some DER files in the vectors are CRLs or keys, not certificates.
            let Ok((_, c)) = X509Certificate::from_der(der) else {
                continue;
            };
            read += 1;
            let w = walk(der).unwrap_or_else(|| panic!("{name}: the walk failed"));
            assert_eq!(w.not_before, c.validity().not_before.timestamp(), "{name}");
            assert_eq!(w.not_after, c.validity().not_after.timestamp(), "{name}");
            let slow = super::super::pck::facts(&c).ok();
            let fast = w.extensions.and_then(pck_facts);
            match (slow, fast) {
                (Some(s), Some((Some(fmspc), Some(pce_id)))) => {
                    assert_eq!((s.fmspc, s.pce_id.as_slice()), (fmspc, pce_id), "{name}");
                    pck_leaves += 1;
                }
                (None, None | Some((None, _) | (_, None))) => {}
                (s, f) => panic!("{name}: x509-parser {:?}, walk {f:?}", s.map(|s| s.fmspc)),
            }
        }
        assert!(read > 20, "only {read} certificates read");
        assert!(pck_leaves >= 5, "only {pck_leaves} PCK certificates");
    }

    #[test]
    fn times_convert_as_x509_parser_does() {
        assert_eq!(time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(time(0x17, b"491231235959Z"), Some(2524607999));
        assert_eq!(time(0x18, b"20240229120000Z"), Some(1709208000));
        assert_eq!(time(0x17, b"2402291200Z"), None);
        assert_eq!(time(0x17, b"240229120000+"), None);
    }

    #[test]
    fn malformed_input_is_refused_not_misread() {
        assert!(walk(&[]).is_none());
        assert!(walk(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        let (_, der) = certificates()
            .into_iter()
            .find(|(_, der)| walk(der).is_some())
            .unwrap();
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert!(walk(&der[..cut]).is_none(), "truncated at {cut}");
        }
        let mut longer = der;
        longer.push(0);
        assert!(walk(&longer).is_none());
    }
}
