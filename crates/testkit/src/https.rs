//! A loopback HTTPS server: what the runtime fetches from (a JWKS issuer) or calls out to (an
//! egress upstream), with a certificate from a [`crate::pki::TestPki`].

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What the server answers: swap the bytes to change later answers.
pub type Answer = Arc<Mutex<Vec<u8>>>;

/// A fixed answer.
pub fn answer(text: &str) -> Answer {
    Arc::new(Mutex::new(text.as_bytes().to_vec()))
}

/// Serve HTTPS on loopback with `chain` and `key`, answering each of up to `connections`
/// connections (one request each) with whatever `answer` holds at the time, as JSON; its port.
/// The thread ends after `connections` connections, so a test cannot leak a server forever.
///
/// # Panics
/// If no loopback port can be bound, or `chain` and `key` do not match.
pub fn serve(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    answer: Answer,
    connections: usize,
) -> u16 {
    #![allow(clippy::expect_used)]
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(enclave_ratls::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a certificate and its key"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.ends_with(b"\r\n\r\n") {
                let body = answer.lock().map(|b| b.clone()).unwrap_or_default();
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(&body);
                let _ = tls.flush();
            }
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}
