//! enclave.toml parsing and validation (not the reading of the files it names: an input naming
//! /dev/zero would read forever).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = enclave_config::EnclaveConfig::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
