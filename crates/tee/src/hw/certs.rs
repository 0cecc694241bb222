//! The SEV-SNP certificate table (GHCB specification, "SNP Extended Guest Request"): what
//! `SNP_GET_EXT_REPORT` and configfs-tsm's `auxblob` return beside a report.
//!
//! A sequence of 24-byte entries `{ GUID (16), offset (u32 LE), length (u32 LE) }` ending with an
//! all-zero entry; offsets are from the start of the table.

use crate::error::TeeError;

/// GUIDs of the certificates the table may carry, in the byte order of the table.
const VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
const ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";

/// The GUID in the table's byte order (RFC 4122 mixed-endian, as the GHCB spec writes it).
pub fn guid_bytes(s: &str) -> [u8; 16] {
    let hexs: String = s.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// Build a table (used by emulators and tests; the firmware builds the real one).
pub fn build(vek: &[u8], ask: &[u8], ark: &[u8], vlek: bool) -> Vec<u8> {
    let entries = [
        (if vlek { VLEK } else { VCEK }, vek),
        (ASK, ask),
        (ARK, ark),
    ];
    let mut header = Vec::new();
    let mut body = Vec::new();
    let start = (entries.len() + 1) * 24;
    for (guid, der) in entries {
        header.extend_from_slice(&guid_bytes(guid));
        header.extend_from_slice(&((start + body.len()) as u32).to_le_bytes());
        header.extend_from_slice(&(der.len() as u32).to_le_bytes());
        body.extend_from_slice(der);
    }
    header.extend_from_slice(&[0; 24]);
    header.extend(body);
    header
}

/// The certificates in a table, endorsement key first, then ASK, then ARK.
pub fn parse(table: &[u8], interface: &'static str) -> Result<Vec<Vec<u8>>, TeeError> {
    let bad = |r: String| TeeError::interface(interface, format!("certificate table: {r}"));
    let mut found: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut pos = 0;
    loop {
        let entry = table.get(pos..pos + 24).ok_or_else(|| {
            bad(format!(
                "entry at offset {pos} runs past the end (no terminating entry)"
            ))
        })?;
        if entry.iter().all(|b| *b == 0) {
            break;
        }
        let guid = &entry[..16];
        let off = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        let der = table.get(off..off.saturating_add(len)).ok_or_else(|| {
            bad(format!(
                "entry at offset {pos} points outside the table ({off}+{len})"
            ))
        })?;
        let rank = [VCEK, VLEK, ASK, ARK]
            .iter()
            .position(|g| guid_bytes(g) == guid)
            .map(|i| if i <= 1 { 0 } else { i as u8 - 1 });
        if let Some(rank) = rank {
            found.push((rank, der.to_vec()));
        }
        pos += 24;
    }
    if !found.iter().any(|(r, _)| *r == 0) {
        return Err(bad("no VCEK or VLEK entry".into()));
    }
    found.sort_by_key(|(r, _)| *r);
    Ok(found.into_iter().map(|(_, d)| d).collect())
}
