//! Stored credentials: password-hash formats, password files, and the cache of
//! recent verifications.
//!
//! Unknown names (`unknown_user = deny`) are checked against a decoy of a
//! known user's cost class ([`PasswordHash::decoy`], picked per name by
//! `Decoys` in firewall/identity.rs).
//!
//! Formats, limits and the slow/fast split: see [`hash`].

pub mod cache;
pub mod file;
pub mod hash;
pub mod scheme;

pub use cache::AuthCache;
pub use file::{LoadError, LoadWarning, PasswordFile, READABLE_BY_OTHERS};
pub use hash::{HashError, PasswordHash, SchemeKind};
pub use scheme::{hash_password, HashScheme};

use sha2::{Digest, Sha256};

/// Fills `buf` from the OS random source. Should that ever fail, falls back
/// to a SHA-256 stream over process-local entropy (std's random hasher seed,
/// time, a counter) rather than panicking inside the VM.
pub(crate) fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let seed = h.finish();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    for (i, chunk) in buf.chunks_mut(32).enumerate() {
        let mut d = Sha256::new();
        d.update(seed.to_le_bytes());
        d.update(now.to_le_bytes());
        d.update((i as u64).to_le_bytes());
        d.update((chunk.as_ptr() as usize).to_le_bytes());
        let out = d.finalize();
        chunk.copy_from_slice(&out[..chunk.len()]);
    }
}

/// 32 random bytes, for HMAC keys.
pub(crate) fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    fill_random(&mut k);
    k
}

#[cfg(test)]
mod tests;

/// Prefixes that start a password hash in the formats the plugin reads.
const HASH_PREFIXES: [&str; 8] = ["$2a$", "$2b$", "$2y$", "$6$", "$7$", "$argon2", "$pbkdf2", "PBKDF2$"];

/// `text` with every password hash in it replaced by `<hash>`: error and
/// warning messages quote what they found in a file (a value of the wrong
/// type, a group name, a user name), and that may be a hash put in the
/// wrong place. A hash runs from its prefix to the next blank, quote or
/// bracket.
pub fn redact_hashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = HASH_PREFIXES.iter().filter_map(|p| rest.find(p)).min();
        let Some(at) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        out.push_str("<hash>");
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ']' | ')' | '}'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
}
