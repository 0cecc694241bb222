//! Layer content: the diff_id of a compressed layer computed as it streams, and chain IDs.

use std::io::Write;

use crate::error::OciError;
use crate::image::{Compression, Descriptor, layer_compression};
use crate::reference::Digest;

/// A `Write` that hashes what it is given and keeps nothing: the uncompressed stream is never
/// held, so memory stays at the decompressor's window whatever the layer's size.
struct Hasher {
    ctx: ring::digest::Context,
    bytes: u64,
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.ctx.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Plain(Box<Hasher>),
    // Multi-member: a gzip stream may legally be several members back to back.
    Gzip(Box<flate2::write::MultiGzDecoder<Hasher>>),
}

/// Computes a layer's diff_id (the sha256 of its uncompressed tar) from its compressed bytes,
/// fed as they arrive. The caller compares the result with the configuration's
/// `rootfs.diff_ids[i]`.
pub struct DiffIdVerifier {
    inner: Inner,
    what: String,
}

impl std::fmt::Debug for DiffIdVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiffIdVerifier")
            .field("what", &self.what)
            .field("uncompressed", &self.uncompressed())
            .finish_non_exhaustive()
    }
}

impl DiffIdVerifier {
    /// A verifier for content compressed with `compression`; `what` names the layer in errors.
    pub fn new(compression: Compression, what: impl Into<String>) -> Self {
        let hasher = Hasher {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        };
        Self {
            inner: match compression {
                Compression::None => Inner::Plain(Box::new(hasher)),
                Compression::Gzip => {
                    Inner::Gzip(Box::new(flate2::write::MultiGzDecoder::new(hasher)))
                }
            },
            what: what.into(),
        }
    }

    /// A verifier for the layer `layer` describes, or why its media type is refused.
    pub fn for_layer(layer: &Descriptor, what: impl Into<String>) -> Result<Self, OciError> {
        let what = what.into();
        let compression = layer_compression(&layer.media_type, &what)?;
        Ok(Self::new(compression, what))
    }

    /// Feed the next compressed bytes.
    pub fn update(&mut self, compressed: &[u8]) -> Result<(), OciError> {
        let result = match &mut self.inner {
            Inner::Plain(h) => h.write_all(compressed),
            Inner::Gzip(d) => d.write_all(compressed),
        };
        result.map_err(|e| self.error(e))
    }

    /// Uncompressed bytes hashed so far (for progress: the decompressor may hold back its
    /// last output until [`DiffIdVerifier::finish`]).
    pub fn uncompressed(&self) -> u64 {
        match &self.inner {
            Inner::Plain(h) => h.bytes,
            Inner::Gzip(d) => d.get_ref().bytes,
        }
    }

    /// The diff_id, once every compressed byte was fed; a gzip stream that ends early (or
    /// whose checksum does not match) is an error.
    pub fn finish(self) -> Result<Digest, OciError> {
        let what = self.what;
        let hasher = match self.inner {
            Inner::Plain(h) => *h,
            Inner::Gzip(d) => d.finish().map_err(|e| OciError::Decompress {
                what: what.clone(),
                reason: e.to_string(),
            })?,
        };
        Ok(Digest::from_ring(hasher.ctx.finish()))
    }

    fn error(&self, e: std::io::Error) -> OciError {
        OciError::Decompress {
            what: self.what.clone(),
            reason: e.to_string(),
        }
    }
}

/// The chain ID of a stack of layers (OCI image spec): chainID(L0) = diffID(L0), and
/// chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)) over their `sha256:…` texts. What
/// snapshotters name the layer stack by. `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let (first, rest) = diff_ids.split_first()?;
    Some(rest.iter().fold(*first, |chain, diff| {
        Digest::of(format!("{chain} {diff}").as_bytes())
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn the_diff_id_is_the_digest_of_the_uncompressed_stream() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 7).to_le_bytes())
            .collect();
        let compressed = gzip(&data);
        let mut v = DiffIdVerifier::new(Compression::Gzip, "layer 0");
        for piece in compressed.chunks(777) {
            v.update(piece).unwrap();
        }
        assert!(v.uncompressed() > 0 && v.uncompressed() <= data.len() as u64);
        assert_eq!(v.finish().unwrap(), Digest::of(&data));
        let mut plain = DiffIdVerifier::new(Compression::None, "layer 1");
        for piece in data.chunks(1000) {
            plain.update(piece).unwrap();
        }
        assert_eq!(plain.finish().unwrap(), Digest::of(&data));
    }

    #[test]
    fn a_truncated_or_corrupt_gzip_stream_is_refused() {
        let compressed = gzip(&[42u8; 100_000]);
        let mut v = DiffIdVerifier::new(Compression::Gzip, "layer 3 of x");
        v.update(&compressed[..compressed.len() - 6]).unwrap();
        let e = v.finish().unwrap_err().to_string();
        assert!(e.starts_with("layer 3 of x: cannot decompress"), "{e}");

        let mut bad = compressed.clone();
        bad[0] = 0; // not a gzip magic
        let mut v = DiffIdVerifier::new(Compression::Gzip, "layer 4");
        let e = v
            .update(&bad)
            .err()
            .or_else(|| v.finish().err())
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("cannot decompress")));
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a: Digest = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
            .parse()
            .unwrap();
        let b: Digest = "sha256:2c92ae35d7a1c4ab7c0b69fac3b5e13eba85fdcd9d0f13ddfd3d7f0e3b5ad5a6"
            .parse()
            .unwrap();
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(&[a]), Some(a));
        // sha256("sha256:a3ed… sha256:2c92…"), computed independently with sha256sum.
        let expected: Digest = CHAIN_AB.parse().unwrap();
        assert_eq!(chain_id(&[a, b]), Some(expected));
        let c = Digest::of(b"c");
        assert_eq!(
            chain_id(&[a, b, c]),
            Some(Digest::of(format!("{expected} {c}").as_bytes()))
        );
    }

    const CHAIN_AB: &str =
        "sha256:e80ab3d60384098afc08ce55d2b06ccaf80b1ee33b7e0bb7cdde6a31d997388b";
}
