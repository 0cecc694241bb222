//! `[workload.proxy]`: how the runtime's front speaks to a container's or a process's service,
//! and the bounds it holds every client to on the way.
//!
//! Clients always reach the front over RA-TLS, negotiating HTTP/2 or HTTP/1.1 by ALPN. What
//! the front speaks to the service behind it is the workload's choice: HTTP/1.1, HTTP/2 over
//! cleartext (h2c, for gRPC), or raw bytes (`tcp`: databases, brokers), spliced after the
//! handshake. Every field is optional; an absent one takes the default below, and an absent
//! table leaves the workload's settings leaf as it was before this table existed.

use serde::{Deserialize, Serialize};

/// What the service behind the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, with WebSocket (and other) upgrades spliced both ways.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over cleartext: gRPC, trailers and all.
    H2c,
    /// Bytes: after the RA-TLS handshake, the connection is spliced to the service's port.
    Tcp,
}

impl UpstreamProtocol {
    /// Its name in `enclave.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Tcp => "tcp",
        }
    }
}

/// `[workload.proxy]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// What the service speaks.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// The largest request head (request line or pseudo-headers, and headers), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u32>,
    /// The largest request body, bytes; absent: `limits.max_request_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// How long a connection to the service may take to open, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u32>,
    /// How long the service may take to answer with a response head, seconds (then 504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_secs: Option<u32>,
    /// How long a spliced connection (`tcp`, or an upgraded one) may carry no byte either way
    /// before it is closed, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u32>,
    /// Client connections this workload may hold at once (beyond: refused with the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests (and spliced connections) in flight to the service at once, from all
    /// clients: each may hold one connection to the service (beyond: 503 with the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// On unload, replacement or shutdown: how long requests, upgraded and spliced connections
    /// in flight have to finish before they are cut, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_secs: Option<u32>,
}

impl ProxySettings {
    /// Default largest request head: nginx's `large_client_header_buffers` is 4 × 8 KiB; gRPC
    /// metadata and long cookies want more.
    pub const DEFAULT_MAX_HEADER_BYTES: u32 = 64 * 1024;
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 5_000;
    /// Default time to the response head.
    pub const DEFAULT_RESPONSE_TIMEOUT_SECS: u32 = 60;
    /// Default idle time of a spliced connection.
    pub const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 300;
    /// Default drain time.
    pub const DEFAULT_DRAIN_SECS: u32 = 10;
    /// Default bound on requests in flight to one service: each HTTP/1.1 request in flight
    /// holds a connection (a descriptor) to it, so this also bounds what one workload's
    /// clients can make the runtime open.
    pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;

    /// The largest request head, bytes.
    pub fn max_header_bytes(&self) -> u32 {
        self.max_header_bytes
            .unwrap_or(Self::DEFAULT_MAX_HEADER_BYTES)
    }

    /// The connect timeout, milliseconds.
    pub fn connect_timeout_ms(&self) -> u32 {
        self.connect_timeout_ms
            .unwrap_or(Self::DEFAULT_CONNECT_TIMEOUT_MS)
    }

    /// The time to the response head, seconds.
    pub fn response_timeout_secs(&self) -> u32 {
        self.response_timeout_secs
            .unwrap_or(Self::DEFAULT_RESPONSE_TIMEOUT_SECS)
    }

    /// The idle time of a spliced connection, seconds.
    pub fn idle_timeout_secs(&self) -> u32 {
        self.idle_timeout_secs
            .unwrap_or(Self::DEFAULT_IDLE_TIMEOUT_SECS)
    }

    /// Requests and spliced connections in flight at once.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight.unwrap_or(Self::DEFAULT_MAX_IN_FLIGHT)
    }

    /// The drain time, seconds.
    pub fn drain_secs(&self) -> u32 {
        self.drain_secs.unwrap_or(Self::DEFAULT_DRAIN_SECS)
    }

    /// Check the settings on their own; on failure, the field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let range = |field: &'static str, v: Option<u32>, lo: u32, hi: u32, unit: &str| match v {
            Some(v) if !(lo..=hi).contains(&v) => {
                Err((field, format!("{v} is not between {lo} and {hi} {unit}")))
            }
            _ => Ok(()),
        };
        // hyper reads a request head into one buffer of at least 8 KiB; a smaller bound could
        // not be enforced as written.
        range(
            "proxy.max_header_bytes",
            self.max_header_bytes,
            8 * 1024,
            1024 * 1024,
            "bytes",
        )?;
        range(
            "proxy.connect_timeout_ms",
            self.connect_timeout_ms,
            1,
            60_000,
            "milliseconds",
        )?;
        range(
            "proxy.response_timeout_secs",
            self.response_timeout_secs,
            1,
            3_600,
            "seconds",
        )?;
        range(
            "proxy.idle_timeout_secs",
            self.idle_timeout_secs,
            1,
            86_400,
            "seconds",
        )?;
        range("proxy.drain_secs", self.drain_secs, 0, 600, "seconds")?;
        range(
            "proxy.max_in_flight",
            self.max_in_flight,
            1,
            100_000,
            "requests",
        )?;
        range(
            "proxy.max_connections",
            self.max_connections,
            1,
            1_000_000,
            "connections",
        )?;
        if self.max_body_bytes == Some(0) {
            return Err((
                "proxy.max_body_bytes",
                "0 would refuse every request with a body; leave it out for limits.max_request_bytes".into(),
            ));
        }
        if self.protocol == UpstreamProtocol::Tcp
            && (self.max_header_bytes.is_some()
                || self.max_body_bytes.is_some()
                || self.response_timeout_secs.is_some())
        {
            return Err((
                "proxy.protocol",
                "\"tcp\" splices bytes: max_header_bytes, max_body_bytes and response_timeout_secs apply to HTTP only".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ProxySettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_names() {
        let p = parse("");
        assert_eq!(p.protocol, UpstreamProtocol::Http1);
        assert_eq!(p.max_header_bytes(), 64 * 1024);
        assert!(p.check().is_ok());
        assert_eq!(parse("protocol = \"h2c\"").protocol.as_str(), "h2c");
        assert_eq!(parse("protocol = \"tcp\"").protocol, UpstreamProtocol::Tcp);
        assert!(toml::from_str::<ProxySettings>("protocol = \"h3\"").is_err());
        assert!(toml::from_str::<ProxySettings>("timeout = 3").is_err());
    }

    #[test]
    fn refusals_name_the_field() {
        let (field, why) = parse("max_header_bytes = 100").check().unwrap_err();
        assert_eq!(field, "proxy.max_header_bytes");
        assert!(why.contains("100 is not between 8192"), "{why}");
        let (field, _) = parse("protocol = \"tcp\"\nmax_body_bytes = 10")
            .check()
            .unwrap_err();
        assert_eq!(field, "proxy.protocol");
        assert_eq!(
            parse("drain_secs = 601").check().unwrap_err().0,
            "proxy.drain_secs"
        );
        assert_eq!(
            parse("max_body_bytes = 0").check().unwrap_err().0,
            "proxy.max_body_bytes"
        );
    }

    #[test]
    fn unset_fields_stay_out_of_the_leaf() {
        let json = serde_json::to_string(&parse("protocol = \"h2c\"")).unwrap();
        assert_eq!(json, r#"{"protocol":"h2c"}"#);
    }
}
