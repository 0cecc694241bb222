//! enclave.toml parsing and validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = enclave_config::LoadedConfig::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
