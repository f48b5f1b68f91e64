#![no_main]
//! See warden_core::fuzzing::cert_identity.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_core::fuzzing::cert_identity(data);
});
