//! A throwaway CA and a `localhost` server certificate it issued: for loopback servers the
//! runtime talks to (a JWKS issuer, an egress upstream, a registry).

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A CA named `name`, and a leaf for `localhost` and `127.0.0.1` it issued.
pub struct TestPki {
    /// The CA certificate, PEM: what a client pins.
    pub ca_pem: String,
    /// The same, DER.
    pub ca_der: CertificateDer<'static>,
    /// The leaf's chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl TestPki {
    /// A fresh CA and leaf.
    ///
    /// # Panics
    /// If rcgen cannot make them (it only fails on invalid parameters, which these are not).
    pub fn new(name: &str) -> Self {
        #![allow(clippy::expect_used)]
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf parameters")
                .signed_by(&leaf_key, &issuer)
                .expect("leaf certificate");
        Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            chain: vec![leaf.der().clone()],
            key: PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        }
    }
}
