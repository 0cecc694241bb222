//! Image references pinned by digest, and sha256 digests.

use std::fmt;
use std::str::FromStr;

use crate::error::OciError;

/// A sha256 content digest, written `sha256:<64 lowercase hex digits>`. The only algorithm
/// accepted: every registry and layout in use writes sha256, and accepting a second would only
/// add a weaker one to check.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_ring(ring::digest::digest(&ring::digest::SHA256, bytes))
    }

    pub(crate) fn from_ring(d: ring::digest::Digest) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without `sha256:` (as in blob paths).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `Ok` if `bytes` hash to this digest, else [`OciError::DigestMismatch`] naming `what`.
    /// The one place content is compared with the digest it was asked for by.
    pub fn check(&self, bytes: &[u8], what: &str) -> Result<(), OciError> {
        self.check_digest(&Self::of(bytes), what)
    }

    /// `Ok` if `actual` is this digest, else [`OciError::DigestMismatch`] naming `what`.
    /// Digests are public, so a plain comparison is enough.
    pub fn check_digest(&self, actual: &Digest, what: &str) -> Result<(), OciError> {
        if self == actual {
            Ok(())
        } else {
            Err(OciError::DigestMismatch {
                what: what.to_string(),
                expected: *self,
                actual: *actual,
            })
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, OciError> {
        let bad = |reason: &str| OciError::InvalidDigest {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let Some((algorithm, hex_part)) = s.split_once(':') else {
            return Err(bad("expected sha256:<64 hex digits>"));
        };
        if algorithm != "sha256" {
            return Err(bad(&format!(
                "the algorithm is '{algorithm}': only sha256 is accepted"
            )));
        }
        if hex_part.len() != 64 {
            return Err(bad(&format!(
                "a sha256 digest has 64 hex digits, this one has {}",
                hex_part.len()
            )));
        }
        if !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("the digits must be lowercase hex (0-9, a-f)"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|e| bad(&e.to_string()))?;
        Ok(Self(out))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An image reference pinned by digest: `host[:port]/repo/path[:tag]@sha256:<64 hex>`.
///
/// The registry host is required: there is no default registry (no Docker Hub), since which
/// registry is trusted, and with which CA, is configuration. The tag, when present, is kept for
/// display only; the digest alone says what is pulled.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    host: String,
    repository: String,
    tag: Option<String>,
    digest: Digest,
}

/// The longest repository name (host included) the distribution spec allows.
const MAX_NAME: usize = 255;

impl Reference {
    /// The registry host, `host[:port]`, as written (lowercased).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The repository path within the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference carried one (informational).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest (or index) digest: what is pulled.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        write!(f, "@{}", self.digest)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, OciError> {
        let bad = |reason: String| OciError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        let Some((name, digest)) = s.split_once('@') else {
            return Err(OciError::NotPinned {
                reference: s.to_string(),
            });
        };
        let digest: Digest = digest.parse().map_err(|e| match e {
            OciError::InvalidDigest { reason, .. } => bad(format!("its digest: {reason}")),
            other => other,
        })?;
        let Some((host, path)) = name.split_once('/') else {
            return Err(bad(no_host_reason(name)));
        };
        if !looks_like_host(host) {
            return Err(bad(no_host_reason(name)));
        }
        check_host(host).map_err(bad)?;
        // A tag is after the last ':' of the last path component (a ':' before the first '/'
        // is the port, which is already split off).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(bad)?;
        }
        check_repository(repository).map_err(bad)?;
        if host.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad(format!(
                "the name is longer than {MAX_NAME} characters"
            )));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

fn no_host_reason(name: &str) -> String {
    format!(
        "'{name}' names no registry host: write it out, e.g. registry.example.com/{name}@sha256:…; there is no default registry (no Docker Hub)"
    )
}

/// Docker's rule: the first component is a registry if it has a '.' or a ':', or is
/// `localhost`; otherwise it is the start of a repository path.
fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first.eq_ignore_ascii_case("localhost")
}

pub(crate) fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("the host '{host}' opens a '[' it does not close"))?;
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{inner}' is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            p => (
                None,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("the host '{host}' has '{p}' after its address"))?,
                ),
            ),
        }
    } else {
        match host.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(format!("'{name}' is not a host name or IPv4 address"));
        }
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || !matches!(port.parse::<u16>(), Ok(p) if p != 0))
    {
        return Err(format!("'{port}' is not a port (1-65535)"));
    }
    Ok(())
}

/// One path component: lowercase alphanumerics, separated by '.', '_', '__' or runs of '-'
/// (the distribution spec's grammar).
fn check_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("names no repository after the registry host".into());
    }
    for c in repo.split('/') {
        if !check_component(c) {
            return Err(format!(
                "'{c}' is not a repository path component (lowercase letters and digits, separated by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty()
        || b.len() > 128
        || !word(b[0])
        || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
    {
        return Err(format!(
            "'{tag}' is not a tag (up to 128 letters, digits, '_', '.', '-', not starting with '.' or '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEX: &str = "e5d2734cbde7cfbdc6ad7fdf964b4407539a794fa4aa0bb053463d33402d34bb";

    fn parse(s: &str) -> Result<Reference, OciError> {
        s.parse()
    }

    #[test]
    fn pinned_references_parse_in_their_spellings() {
        for (text, host, repo, tag) in [
            (
                "registry.example.com/busybox",
                "registry.example.com",
                "busybox",
                None,
            ),
            ("127.0.0.1:5000/bb", "127.0.0.1:5000", "bb", None),
            ("localhost/a/b/c:v1.2", "localhost", "a/b/c", Some("v1.2")),
            ("LOCALHOST:443/x", "localhost:443", "x", None),
            (
                "reg.io:8443/org/team/app:latest",
                "reg.io:8443",
                "org/team/app",
                Some("latest"),
            ),
            (
                "reg.io/a.b/c__d/e-f/g--h:T_ag-1.0",
                "reg.io",
                "a.b/c__d/e-f/g--h",
                Some("T_ag-1.0"),
            ),
            ("[::1]:5000/x:y", "[::1]:5000", "x", Some("y")),
        ] {
            let full = format!("{text}@sha256:{HEX}");
            let r = parse(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
            assert_eq!(r.host(), host, "{full}");
            assert_eq!(r.repository(), repo, "{full}");
            assert_eq!(r.tag(), tag, "{full}");
            assert_eq!(r.digest().hex(), HEX);
            // Display round-trips (the host lowercased).
            assert_eq!(parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn a_reference_without_a_digest_is_not_pinned() {
        for text in ["reg.io/busybox:latest", "reg.io/busybox", "busybox"] {
            match parse(text) {
                Err(e @ OciError::NotPinned { .. }) => {
                    let t = e.to_string();
                    assert!(t.starts_with(text), "{t}");
                    assert!(t.contains("pin it by digest: name@sha256:"), "{t}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        let d = format!("@sha256:{HEX}");
        for (text, why) in [
            (format!("busybox{d}"), "no registry host"),
            (format!("library/busybox{d}"), "no Docker Hub"),
            (format!("reg.io/{d}"), "names no repository"),
            (format!("reg.io{d}"), "no registry host"),
            (
                format!("reg.io/BusyBox{d}"),
                "not a repository path component",
            ),
            (format!("reg.io/a//b{d}"), "not a repository path component"),
            (format!("reg.io/a-{d}"), "not a repository path component"),
            (format!("reg.io/a:{d}"), "not a tag"),
            (format!("reg.io/a:-x{d}"), "not a tag"),
            (format!("reg.io:0/a{d}"), "not a port"),
            (format!("reg.io:70000/a{d}"), "not a port"),
            (format!("reg.io:/a{d}"), "not a port"),
            (format!("re_g.io/a{d}"), "not a host name"),
            (format!("[::zz]:5/a{d}"), "not an IPv6 address"),
            (
                "reg.io/a@sha256:abc".into(),
                "64 hex digits, this one has 3",
            ),
            (
                format!("reg.io/a@sha256:{}", HEX.to_uppercase()),
                "lowercase hex",
            ),
            (
                format!("reg.io/a@sha256:{}", "g".repeat(64)),
                "lowercase hex",
            ),
            (format!("reg.io/a@sha512:{HEX}"), "only sha256"),
            ("reg.io/a@".into(), "expected sha256:"),
        ] {
            match parse(&text) {
                Err(e @ OciError::InvalidReference { .. }) => {
                    let t = e.to_string();
                    assert!(t.starts_with(&text), "{t}");
                    assert!(t.contains(why), "{text}: {t}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn digests_parse_print_and_check() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(d.check(b"", "x").is_ok());
        match d.check(b"a", "layer 1") {
            Err(e @ OciError::DigestMismatch { .. }) => {
                assert!(e.to_string().starts_with("layer 1: digest mismatch"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
    }
}
