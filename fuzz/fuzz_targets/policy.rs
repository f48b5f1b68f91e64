#![no_main]
//! See warden_core::fuzzing::policy.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    warden_core::fuzzing::policy(data);
});
