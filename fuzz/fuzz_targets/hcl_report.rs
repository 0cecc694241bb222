//! Azure HCL report decoding and the runtime-claims binding check.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hcl) = enclave_evidence::azure::HclReport::decode(data) {
        let _ = hcl.check_binding();
    }
});
