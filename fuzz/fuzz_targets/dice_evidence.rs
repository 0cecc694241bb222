//! TCG DICE tagged evidence (CBOR).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = enclave_ratls::dice::decode(data);
});
