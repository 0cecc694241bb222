//! DCAP quote decoding, and signature-only verification of whatever decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if enclave_evidence::intel::Quote::decode(data).is_ok() {
        let _ = enclave_evidence::Verifier::default().verify(data, &Default::default(), 1_752_919_277);
    }
});
