//! The encodings operators actually have evidence in: raw binary, hex text, base64 text, and PEM or
//! DER certificates.

use base64::Engine;

/// Evidence bytes from a file's contents, whichever of binary, hex or base64 it is.
///
/// Text is recognised only when the whole file (less surrounding whitespace) is in one alphabet:
/// binary evidence always starts with a small little-endian version or a magic that is not text.
pub fn evidence_bytes(contents: &[u8]) -> Result<Vec<u8>, String> {
    let text = contents.trim_ascii();
    if text.is_empty() {
        return Err("the file is empty".into());
    }
    let is_text = text
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=_-\r\n\t :x".contains(b));
    if !is_text {
        return Ok(contents.to_vec());
    }
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    let hex_body = compact
        .strip_prefix(b"0x")
        .unwrap_or(&compact)
        .to_ascii_lowercase();
    if hex_body.iter().all(u8::is_ascii_hexdigit) {
        return hex::decode(&hex_body).map_err(|e| format!("hex text does not decode: {e}"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
        .map_err(|e| format!("text that is neither hex nor base64 ({e})"))
}

/// Every `label` block in PEM text (RFC 7468), in order, as DER.
///
/// Written on the base64 crate rather than a PEM library because quotes carry their PCK chain as
/// PEM and this sits on the verification path, where it is several times faster.
pub fn pem_blocks(pem: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    blocks(pem, label, false)
}

/// The certificates of a chain in PEM text that holds nothing else: `CERTIFICATE` blocks and
/// whitespace between them. What a quote carries is read by dcap-qvl too, with a parser that
/// takes blocks of any label and skips text between them; text both read alike must leave
/// nothing for the two to read differently (a block of another label hiding the real leaf from
/// one of them, say).
pub fn pem_certificate_chain(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    blocks(pem, "CERTIFICATE", true)
}

fn blocks(pem: &[u8], label: &str, exact: bool) -> Result<Vec<Vec<u8>>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "PEM is not text".to_string())?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    let stray = |between: &str| {
        let between = between.trim_ascii();
        match between.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "text other than '{label}' blocks: '{}'",
                between.chars().take(40).collect::<String>()
            )),
        }
    };
    while let Some(start) = rest.find(&begin) {
        if exact {
            stray(&rest[..start])?;
        }
        let body = &rest[start + begin.len()..];
        let stop = body
            .find(&end)
            .ok_or_else(|| format!("a '{begin}' block has no '{end}' line"))?;
        // Copied a line at a time: lines are found with a vectorised search for '\n' and
        // trimmed at their ends, rather than every byte tested for whitespace (this sits on the
        // verification path). Only when that does not decode is whitespace inside lines dropped
        // too, so such PEM is still read.
        let mut b64 = Vec::with_capacity(stop);
        for line in body[..stop].split('\n') {
            b64.extend_from_slice(line.as_bytes().trim_ascii());
        }
        let b64engine = &base64::engine::general_purpose::STANDARD;
        let der = match b64engine.decode(&b64) {
            Ok(der) => der,
            Err(_) => {
                b64.retain(|b| !b.is_ascii_whitespace());
                b64engine
                    .decode(&b64)
                    .map_err(|e| format!("invalid PEM {label}: body is not base64: {e}"))?
            }
        };
        out.push(der);
        rest = &body[stop + end.len()..];
    }
    if exact {
        stray(rest)?;
    }
    Ok(out)
}

/// Every certificate in PEM text, in order, as DER.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    pem_blocks(pem, "CERTIFICATE")
}

/// Certificates from a file that holds either one DER certificate or any number in PEM.
pub fn certificates(contents: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if contents.trim_ascii_start().starts_with(b"-----BEGIN") {
        let certs = pem_certificates(contents)?;
        if certs.is_empty() {
            return Err("PEM file holds no CERTIFICATE block".into());
        }
        Ok(certs)
    } else if contents.first() == Some(&0x30) {
        // A DER SEQUENCE; validity is checked by whoever parses it.
        Ok(vec![contents.to_vec()])
    } else {
        Err("neither PEM nor a DER certificate".into())
    }
}

/// A DER blob (a CRL, say) from PEM with `label`, or DER as it is.
pub fn der_or_pem(contents: &[u8], label: &str) -> Result<Vec<u8>, String> {
    if contents.trim_ascii_start().starts_with(b"-----BEGIN") {
        pem_blocks(contents, label)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no '-----BEGIN {label}-----' block"))
    } else {
        Ok(contents.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_and_binary() {
        assert_eq!(evidence_bytes(b"0a0B\n").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(evidence_bytes(b"0x0a0b").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(evidence_bytes(b"AwAC").unwrap(), vec![3, 0, 2]);
        assert_eq!(evidence_bytes(&[3, 0, 2, 0]).unwrap(), vec![3, 0, 2, 0]);
        assert!(evidence_bytes(b"   ").unwrap_err().contains("empty"));
        assert!(
            evidence_bytes(b"xyz")
                .unwrap_err()
                .contains("neither hex nor base64")
        );
        assert!(
            evidence_bytes(b"abc")
                .unwrap_err()
                .contains("hex text does not decode")
        );
    }

    #[test]
    fn pem_blocks_read_every_line_ending_and_stray_whitespace() {
        let der: Vec<u8> = (0u8..=200).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let block = |sep: &str, body: String| {
            format!("-----BEGIN CERTIFICATE-----{sep}{body}{sep}-----END CERTIFICATE-----{sep}")
        };
        for sep in ["\n", "\r\n"] {
            let pem = block(sep, lines.join(sep));
            assert_eq!(pem_certificates(pem.as_bytes()).unwrap(), vec![der.clone()]);
            // Two blocks, in order.
            let two = format!("{pem}{}", block(sep, lines.join(sep)));
            assert_eq!(pem_certificates(two.as_bytes()).unwrap().len(), 2);
        }
        // Indented lines and whitespace inside a line are read too.
        let loose = block(
            "\n",
            format!("  {}\t\n {} ", lines[0], lines[1..].join(" \n")),
        );
        assert_eq!(pem_certificates(loose.as_bytes()).unwrap(), vec![der]);
        let bad = block("\n", "not*base64".into());
        let err = pem_certificates(bad.as_bytes()).unwrap_err();
        assert!(err.contains("not base64"), "{err}");
        let open = "-----BEGIN CERTIFICATE-----\nAAAA\n";
        assert!(
            pem_certificates(open.as_bytes())
                .unwrap_err()
                .contains("no '-----END")
        );
    }
}
