#![no_main]
//! See warden_core::fuzzing::hash_string.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_core::fuzzing::hash_string(data);
});
