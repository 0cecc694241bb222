//! Who called: what the front verified about a request's caller, and the `X-Enclave-OS-Client-*`
//! headers a workload reads it from (`docs/ingress.md` is the contract for upstream authors).
//!
//! Every request routed to a workload has every inbound caller header removed, in any case and
//! with `_` for `-` (from its trailers too), before the headers of what was verified are added:
//! the headers are trustworthy only because a client can never set them. The [`Caller`] also rides
//! along as a request extension, so a proxy (HTTP/1.1, h2, WebSocket) passes the same headers on
//! and a TCP splice can log who it serves.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// What mutual RA-TLS established about the client (see `gate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RatlsCaller {
    /// SHA-256 of the client's leaf (DER), hex.
    pub cert_sha256: String,
    /// The TEE kind (`sgx`, `tdx`, `snp`, `azure-snp`, `azure-tdx`).
    pub tee: String,
    /// Whether the evidence came from a simulated TEE (the policy allowed it).
    pub simulated: bool,
    /// The primary measurement (MRENCLAVE, MRTD or the SNP launch measurement), hex.
    pub measurement: String,
    /// The config root the client's certificate carries, hex.
    pub config_root: Option<String>,
    /// On a workload's own certificate: its code digest, hex.
    pub workload_code: Option<String>,
    /// On a workload's own certificate: its own config root, hex.
    pub workload_root: Option<String>,
    /// The `client_names` entry the leaf was found valid for.
    pub name: Option<String>,
}

/// What an OIDC bearer token established about the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OidcCaller {
    /// `sub`.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
}

/// The verified caller of one request: empty when the workload has no gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    pub ratls: Option<RatlsCaller>,
    pub oidc: Option<OidcCaller>,
}

impl Caller {
    /// The headers this caller yields, names in canonical case for the documentation; `http`
    /// lowercases them on the wire for h2 and keeps them as given for HTTP/1.1.
    pub(crate) fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(r) = &self.ratls {
            out.push(("X-Enclave-OS-Client-Cert-Sha256", r.cert_sha256.clone()));
            out.push(("X-Enclave-OS-Client-Tee", r.tee.clone()));
            if r.simulated {
                out.push(("X-Enclave-OS-Client-Simulated", "true".into()));
            }
            out.push(("X-Enclave-OS-Client-Measurement", r.measurement.clone()));
            if let Some(v) = &r.config_root {
                out.push(("X-Enclave-OS-Client-Config-Root", v.clone()));
            }
            if let Some(v) = &r.workload_code {
                out.push(("X-Enclave-OS-Client-Workload-Code", v.clone()));
            }
            if let Some(v) = &r.workload_root {
                out.push(("X-Enclave-OS-Client-Workload-Root", v.clone()));
            }
            if let Some(v) = &r.name {
                out.push(("X-Enclave-OS-Client-Name", v.clone()));
            }
        }
        if let Some(o) = &self.oidc {
            out.push(("X-Enclave-OS-Client-Subject", o.subject.clone()));
            out.push(("X-Enclave-OS-Client-Issuer", o.issuer.clone()));
        }
        out
    }

    /// Remove every inbound caller header from `headers`, then add this caller's. A value that
    /// cannot be a header value (a token's `sub` with a control character) is left out rather
    /// than sent altered: an upstream must not read a subject that was not the token's.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        strip(headers);
        for (name, value) in self.headers() {
            let Ok(value) = HeaderValue::from_str(&value) else {
                tracing::warn!(
                    header = name,
                    "a verified caller value is not a valid header value: left out"
                );
                continue;
            };
            headers.insert(HeaderName::from_static(lower(name)), value);
        }
    }
}

/// The lowercase form of one of [`Caller::headers`]' names (`HeaderName::from_static` takes
/// lowercase only).
fn lower(name: &'static str) -> &'static str {
    match name {
        "X-Enclave-OS-Client-Cert-Sha256" => "x-enclave-os-client-cert-sha256",
        "X-Enclave-OS-Client-Tee" => "x-enclave-os-client-tee",
        "X-Enclave-OS-Client-Simulated" => "x-enclave-os-client-simulated",
        "X-Enclave-OS-Client-Measurement" => "x-enclave-os-client-measurement",
        "X-Enclave-OS-Client-Config-Root" => "x-enclave-os-client-config-root",
        "X-Enclave-OS-Client-Workload-Code" => "x-enclave-os-client-workload-code",
        "X-Enclave-OS-Client-Workload-Root" => "x-enclave-os-client-workload-root",
        "X-Enclave-OS-Client-Name" => "x-enclave-os-client-name",
        "X-Enclave-OS-Client-Subject" => "x-enclave-os-client-subject",
        _ => "x-enclave-os-client-issuer",
    }
}

/// Remove every header whose name is a caller header in any spelling: any case (names are
/// stored lowercase), and `_` for `-`, which CGI-style servers read as the same variable
/// (`enclave_proxy::headers::is_caller_header`).
pub(crate) fn strip(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| enclave_proxy::headers::is_caller_header(n.as_str()))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inbound_caller_headers_are_removed_in_any_case_and_verified_ones_added() {
        let mut h = HeaderMap::new();
        h.insert("X-Enclave-OS-Client-Subject", "admin".parse().unwrap());
        h.append("x-enclave-os-client-subject", "root".parse().unwrap());
        h.insert("X-ENCLAVE-OS-CLIENT-TEE", "sgx".parse().unwrap());
        h.insert("x-enclave-os-client-anything-else", "x".parse().unwrap());
        h.insert("x-enclave-os-other", "kept".parse().unwrap());
        let caller = Caller {
            ratls: None,
            oidc: Some(OidcCaller {
                subject: "alice".into(),
                issuer: "https://idp.test".into(),
            }),
        };
        caller.apply(&mut h);
        let subjects: Vec<_> = h.get_all("x-enclave-os-client-subject").iter().collect();
        assert_eq!(subjects, vec!["alice"]);
        assert_eq!(h["x-enclave-os-client-issuer"], "https://idp.test");
        assert!(h.get("x-enclave-os-client-tee").is_none());
        assert!(h.get("x-enclave-os-client-anything-else").is_none());
        assert_eq!(h["x-enclave-os-other"], "kept");
    }

    #[test]
    fn every_header_name_has_its_lowercase_form() {
        let caller = Caller {
            ratls: Some(RatlsCaller {
                cert_sha256: "aa".into(),
                tee: "sgx".into(),
                simulated: true,
                measurement: "bb".into(),
                config_root: Some("cc".into()),
                workload_code: Some("dd".into()),
                workload_root: Some("ee".into()),
                name: Some("client.test".into()),
            }),
            oidc: Some(OidcCaller::default()),
        };
        for (name, _) in caller.headers() {
            assert_eq!(lower(name), name.to_ascii_lowercase());
        }
        // A value that is no header value is left out, not altered.
        let bad = Caller {
            ratls: None,
            oidc: Some(OidcCaller {
                subject: "a\nb".into(),
                issuer: "i".into(),
            }),
        };
        let mut h = HeaderMap::new();
        bad.apply(&mut h);
        assert!(h.get("x-enclave-os-client-subject").is_none());
        assert_eq!(h["x-enclave-os-client-issuer"], "i");
    }
}
