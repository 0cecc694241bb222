//! Which headers cross the proxy, and which it writes itself.
//!
//! Hop-by-hop headers describe one connection (RFC 9110, 7.6.1) and never cross: the fixed
//! list, and every name the `Connection` header lists. Two exceptions are put back by the
//! caller when they apply: `Upgrade` on an upgrade being forwarded, and `TE: trailers` to an
//! HTTP/2 service (gRPC requires it).
//!
//! `Forwarded` and `X-Forwarded-*` are replaced, never appended to. The front is the first
//! hop that can see into the connection (RA-TLS ends there, not at any balancer before it),
//! so anything a client put in them is the client's own claim; a service reading them should
//! see only what the runtime observed.

use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is a caller header, or could be read as one: its letters and digits, in
/// any case and whatever stands between them, begin `xenclaveosclient`. Gateways map header
/// names onto variables in their own ways (CGI, WSGI and PHP turn every `-` into `_`; others
/// drop or replace `.` and the like), so `x_enclave_os_client_subject` or
/// `x-enclave-os-client.subject` could reach a service as the very variable the real header
/// becomes: all are treated as the real one.
pub fn is_caller_header(name: &str) -> bool {
    const KEY: &[u8] = b"xenclaveosclient";
    let mut letters = name
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase());
    KEY.iter().all(|k| letters.next() == Some(*k))
}

/// The forwarding headers the proxy owns.
const FORWARDING: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Remove the hop-by-hop headers of `headers`: the fixed ones and those its `Connection`
/// header names, except the caller headers: a client naming them in `Connection` would
/// otherwise have the proxy delete what the front verified and wrote.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over their few names costs less than a lookup of
    // each hop-by-hop name. `Connection` is one of them, so no name it lists is missed.
    if !headers.keys().any(|n| HOP_BY_HOP.contains(n)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !is_caller_header(n.as_str()))
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
}

/// Clean a request's trailers: no hop-by-hop, forwarding or caller header may arrive as a
/// trailer where it could not as a header.
pub fn clean_trailers(trailers: &mut HeaderMap) {
    let names: Vec<HeaderName> = trailers
        .keys()
        .filter(|n| {
            is_caller_header(n.as_str())
                || FORWARDING.contains(&n.as_str())
                || HOP_BY_HOP.contains(n)
                || *n == header::HOST
                || *n == header::AUTHORIZATION
        })
        .cloned()
        .collect();
    for n in names {
        trailers.remove(&n);
    }
}

/// Whether a request's `TE` asks for trailers (the only `TE` HTTP/2 allows).
pub fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` with an
/// `Upgrade` header), if any. Only WebSocket is: any other upgrade (`h2c` above all) would
/// open a tunnel in which the service reads further requests the front never saw, so no
/// gate, caller header or limit would apply to them. Such a request is forwarded as an
/// ordinary one, its `Upgrade` dropped with the other hop-by-hop headers.
pub fn upgrade_to(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    headers
        .get(header::UPGRADE)
        .filter(|u| asks && u.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned()
}

/// The forwarding headers of one client connection: what the front saw (the client's
/// address, HTTPS, the name it asked for), made once per connection and written into each of
/// its requests, replacing whatever the client sent.
#[derive(Debug, Clone)]
pub struct Forwarding {
    forwarded: Option<HeaderValue>,
    for_ip: Option<HeaderValue>,
    /// The name the request was routed by, as the service's `Host` (any valid header value).
    host: Option<HeaderValue>,
    /// Whether that name is a plain host (it then also goes into `Forwarded` and
    /// `X-Forwarded-Host`).
    token_host: bool,
}

impl Forwarding {
    /// The headers for a client at `peer` that asked for `host`.
    pub fn new(peer: SocketAddr, host: &str) -> Self {
        let ip = peer.ip().to_string();
        // RFC 7239, 6: an IPv6 node is bracketed and the whole value quoted.
        let node = match peer {
            SocketAddr::V4(_) => ip.clone(),
            SocketAddr::V6(_) => format!("\"[{ip}]\""),
        };
        let mut forwarded = format!("for={node};proto=https");
        let token_host = is_token_host(host);
        if token_host {
            forwarded.push_str(";host=");
            forwarded.push_str(host);
        }
        Self {
            forwarded: HeaderValue::from_str(&forwarded).ok(),
            for_ip: HeaderValue::from_str(&ip).ok(),
            host: HeaderValue::from_str(host).ok(),
            token_host,
        }
    }

    /// The name asked for, as a `Host` value (`None`: it is not a valid header value).
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// Replace the forwarding headers of `headers` with these.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if headers.keys().any(|n| FORWARDING.contains(&n.as_str())) {
            for h in FORWARDING {
                headers.remove(h);
            }
        }
        if let Some(h) = self.host.as_ref().filter(|_| self.token_host) {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        if let Some(v) = &self.forwarded {
            headers.insert(header::FORWARDED, v.clone());
        }
        if let Some(v) = &self.for_ip {
            headers.insert(X_FORWARDED_FOR, v.clone());
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
}

/// Whether `h` can stand unquoted in `Forwarded` (a host, optionally with a port): the front
/// routes only such names, but the header is built from what the client sent.
fn is_token_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert(header::FORWARDED, "for=6.6.6.6".parse().unwrap());
        Forwarding::new("10.0.0.7:4000".parse().unwrap(), "app.test").apply(&mut h);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.7;proto=https;host=app.test"
        );
        assert_eq!(h["x-forwarded-host"], "app.test");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        Forwarding::new("[::1]:9".parse().unwrap(), "a b").apply(&mut h);
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=https");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn upgrades_and_trailers_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TE, "gzip, trailers".parse().unwrap());
        assert_eq!(upgrade_to(&h).unwrap(), "websocket");
        assert!(wants_trailers(&h));
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(
            upgrade_to(&h).is_none(),
            "only WebSocket is an upgrade the proxy makes"
        );
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "close".parse().unwrap());
        assert!(upgrade_to(&h).is_none());
    }

    #[test]
    fn caller_headers_in_any_spelling_are_recognised_and_never_named_away() {
        for n in [
            "x-enclave-os-client-subject",
            "x_enclave_os_client_subject",
            "x-enclave_os-client_tee",
            "x-enclave-os-client.subject",
            "x.enclave.os.client.id",
            "x-enclave-os-client~sub",
            "xenclaveosclientsubject",
        ] {
            assert!(is_caller_header(n), "{n}");
        }
        assert!(!is_caller_header("x-enclave-os-clien"));
        assert!(!is_caller_header("x-enclave-os-server-subject"));
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "x-enclave-os-client-subject, x-other".parse().unwrap(),
        );
        h.insert("x-enclave-os-client-subject", "alice".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h["x-enclave-os-client-subject"], "alice");
        assert!(!h.contains_key("x-other"));
    }

    #[test]
    fn trailers_carry_no_header_a_request_head_could_not() {
        let mut t = HeaderMap::new();
        t.insert("x_enclave_os_client_subject", "admin".parse().unwrap());
        t.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        t.insert(header::AUTHORIZATION, "Bearer forged".parse().unwrap());
        t.insert("grpc-status", "0".parse().unwrap());
        clean_trailers(&mut t);
        assert_eq!(t.len(), 1);
        assert!(t.contains_key("grpc-status"));
    }
}
