//! Bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs` call these), kept in
//! the core so that `cargo test` runs them too: [`tests`] feeds each one
//! deterministic random and mutated inputs on every test run, and
//! `cargo fuzz` (libFuzzer, see docs/ROBUSTNESS.md) runs the same code for
//! as long as one likes.
//!
//! Each body must never panic on any input, and checks the invariants of
//! the parser it drives with `assert!` (an assertion failure is a finding).
//! Expensive work is bounded: a hash is verified only when
//! [`PasswordHash::work_estimate`] says it is cheap, so a fuzzer that finds
//! `$2b$20$...` does not stall for seconds per input.

use crate::credentials::{PasswordFile, PasswordHash};
use crate::firewall::cert_identity_name;
use crate::policy::{CertField, Policy};

/// Hashes above this [`PasswordHash::work_estimate`] are parsed but not verified.
pub const CHEAP_WORK: u64 = 20_000;

/// Password used for verification in the bodies.
pub const FUZZ_PASSWORD: &[u8] = b"fuzz-pw";

/// `PasswordHash::parse` + (when cheap) `verify` of one hash string.
pub fn hash_string(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(h) = PasswordHash::parse(&text) else {
        return;
    };
    // Parsing is deterministic: the same string, the same fingerprint.
    let again = PasswordHash::parse(&text).expect("a string that parsed once parses again");
    assert_eq!(h.fingerprint(), again.fingerprint());
    assert_eq!(h.scheme(), again.scheme());
    // Debug never shows hash material.
    let dbg = format!("{h:?}");
    assert!(dbg.contains("<redacted>"), "Debug of a hash must be redacted: {dbg}");
    let decoy = h.decoy();
    assert_eq!(decoy.scheme(), h.scheme());
    assert_eq!(decoy.is_slow(), h.is_slow());
    assert_eq!(decoy.work_estimate(), h.work_estimate());
    if h.work_estimate() <= CHEAP_WORK {
        let _ = h.verify(FUZZ_PASSWORD);
        let _ = h.verify(b"");
        let _ = decoy.verify(FUZZ_PASSWORD);
    }
}

/// `PasswordFile::parse_bytes` of one whole file.
pub fn password_file(data: &[u8]) {
    let file = PasswordFile::parse_bytes(data, "fuzz");
    let lines = data.split(|b| *b == b'\n').count();
    assert!(file.len() <= lines, "more users than lines");
    for w in file.warnings() {
        assert!(w.line >= 1 && w.line <= lines, "warning names line {} of {lines}", w.line);
        assert_eq!(w.source, "fuzz");
    }
    let mut users = 0;
    for user in file.users() {
        users += 1;
        assert!(!user.is_empty());
        assert!(!user.contains(&b':') && !user.contains(&b'\n'), "user name holds a separator");
        assert!(file.get(user).is_some());
    }
    assert_eq!(users, file.len());
    assert!(!file.readable_by_others(), "parse never sets the permission flag");
    let first = file.users().next().and_then(|u| file.get(u)).cloned();
    if let Some(h) = first {
        if h.work_estimate() <= CHEAP_WORK {
            let _ = h.verify(FUZZ_PASSWORD);
        }
    }
}

/// `Policy::parse` of one policy file (TOML): an error names the source,
/// a success parses again to the same outcome.
pub fn policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Policy::parse(&text, "fuzz") {
        Ok(_) => assert!(Policy::parse(&text, "fuzz").is_ok()),
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("fuzz"), "error does not name the file: {shown}");
        }
    }
}

/// Client certificates come from the network (`client_cert` in the hook's
/// metadata): the identity extraction takes any bytes.
pub fn cert_identity(data: &[u8]) {
    for field in [CertField::Cn, CertField::SanDns, CertField::SanEmail, CertField::SanUri, CertField::San] {
        let _ = cert_identity_name(data, field);
    }
}

#[cfg(test)]
mod tests;
