//! The input layer (binary, hex, base64, PEM) feeding format detection.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = enclave_evidence::input::evidence_bytes(data) {
        let _ = enclave_evidence::Evidence::decode(&bytes);
    }
    let _ = enclave_evidence::input::certificates(data);
});
