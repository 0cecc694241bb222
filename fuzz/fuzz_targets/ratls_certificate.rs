//! RA-TLS certificate parsing (X.509, the evidence and workload extensions).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = enclave_ratls::RatlsCertificate::parse(data) {
        let _ = cert.check_key_binding(&[0; 64], &enclave_ratls::binding::Freshness::Deterministic);
    }
});
