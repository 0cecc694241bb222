//! A small blocking HTTPS/1.1 client for the runtime's own calls: the witness counter and a
//! JWKS URL. One request per connection (`Connection: close`); the caller supplies the rustls
//! configuration, so what is trusted is always explicit (an RA-TLS verifier for the witness,
//! the egress CA bundle for a JWKS).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;

/// `https://HOST[:PORT][/path]` split into host, port and path.
pub(crate) fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("'{url}' is not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse()
                .map_err(|_| format!("'{url}': '{p}' is not a port"))?,
        ),
        _ => (authority.to_string(), 443),
    };
    if host.is_empty() {
        return Err(format!("'{url}' names no host"));
    }
    Ok((host, port, path))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line without its end")?;
        let size_text =
            std::str::from_utf8(&body[..line_end]).map_err(|_| "a chunk size that is not text")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("'{size_text}' is not a chunk size"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("a chunk shorter than its size")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("a chunk without its end")?;
    }
}

/// An I/O error from a TLS stream, with an RA-TLS refusal's reason spelt out.
fn io_reason(e: &std::io::Error) -> String {
    enclave_ratls::tls::io_rejection(e).map_or_else(
        || e.to_string(),
        |r| format!("its RA-TLS certificate was refused: {r}"),
    )
}

/// Send `method path` with `body` to `base` (`https://HOST:PORT`); the status and body.
pub(crate) fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let (host, port, _) = split_url(base)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{base}: {e}"))?
        .next()
        .ok_or_else(|| format!("{base}: no address"))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{base}: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{base}: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("{base}: {e}"))?;
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| format!("{base}: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .and_then(|()| tls.write_all(body))
        .and_then(|()| tls.flush())
        .map_err(|e| format!("{base}: {}", io_reason(&e)))?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // Servers that close without close_notify: the response is judged on its framing.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("{base}: {}", io_reason(&e))),
    }
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{base}: the response has no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "{base}: no status in '{}'",
                head.lines().next().unwrap_or("")
            )
        })?;
    let mut payload = response[head_end + 4..].to_vec();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        payload = dechunk(&payload).map_err(|e| format!("{base}: {e}"))?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if payload.len() < len {
            return Err(format!(
                "{base}: the body ended after {} of {len} bytes",
                payload.len()
            ));
        }
        payload.truncate(len);
    }
    Ok((status, payload))
}

/// A client configuration trusting only the CA certificates in `pem` (the egress bundle).
pub(crate) fn pinned(pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("the CA bundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("the CA bundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(enclave_ratls::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_chunks_join() {
        assert_eq!(
            split_url("https://127.0.0.1:9443/x").ok(),
            Some(("127.0.0.1".into(), 9443, "/x".into()))
        );
        assert_eq!(
            split_url("https://idp.example").ok(),
            Some(("idp.example".into(), 443, "/".into()))
        );
        assert!(split_url("http://idp.example").is_err());
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").ok(),
            Some(b"abcde".to_vec())
        );
        assert!(dechunk(b"9\r\nabc\r\n").is_err());
    }
}
