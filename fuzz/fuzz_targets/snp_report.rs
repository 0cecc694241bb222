//! SEV-SNP report decoding.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = enclave_evidence::amd::SnpReport::decode(data);
});
