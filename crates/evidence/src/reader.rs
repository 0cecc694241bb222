//! A bounds-checked little-endian reader that names every field it reads.
//!
//! Decoders never index raw slices: they ask the reader for a named field, and a short input
//! becomes a [`DecodeError`] naming that field, its offset and how many bytes were missing.

use crate::error::DecodeError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Dotted prefix for the fields read, e.g. `quote.header`.
    scope: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], scope: &'static str) -> Self {
        Self { buf, pos: 0, scope }
    }

    pub(crate) fn field(&self, name: &str) -> String {
        format!("{}.{}", self.scope, name)
    }

    pub(crate) fn err(&self, name: &str, reason: impl Into<String>) -> DecodeError {
        DecodeError::new(self.field(name), reason)
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn bytes(&mut self, name: &str, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(self.err(
                name,
                format!(
                    "input ends at offset {} but the field needs {} bytes from offset {} ({} missing)",
                    self.buf.len(),
                    len,
                    self.pos,
                    len - self.remaining()
                ),
            ));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, name: &str) -> Result<[u8; N], DecodeError> {
        let slice = self.bytes(name, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub(crate) fn u16(&mut self, name: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(name)?))
    }

    pub(crate) fn u32(&mut self, name: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(name)?))
    }

    pub(crate) fn u64(&mut self, name: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(name)?))
    }

    /// A sub-reader over the next `len` bytes, with its own scope.
    pub(crate) fn sub(
        &mut self,
        name: &str,
        len: usize,
        scope: &'static str,
    ) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.bytes(name, len)?, scope))
    }
}

/// Bytes after the end of a structure. Real TDX quotes carry zero padding, which is accepted and
/// reported; anything else is a decode error, because unsigned data riding along with signed
/// evidence is a smuggling channel.
pub(crate) fn check_padding(field: &str, trailing: &[u8], at: usize) -> Result<usize, DecodeError> {
    match trailing.iter().position(|b| *b != 0) {
        None => Ok(trailing.len()),
        Some(i) => Err(DecodeError::new(
            field,
            format!(
                "{} bytes follow the structure and byte {} of them (offset {}) is not zero padding",
                trailing.len(),
                i,
                at + i
            ),
        )),
    }
}
