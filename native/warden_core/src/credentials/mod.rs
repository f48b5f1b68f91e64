//! Stored credentials: password-hash formats, password files, and the cache of
//! recent verifications.
//!
//! CONTRACT (other modules and the NIF depend on these signatures):
//! - `PasswordHash::parse(&str) -> Result<PasswordHash, HashError>`
//! - `PasswordHash::verify(&self, password: &[u8]) -> bool` (constant time)
//! - `PasswordHash::is_slow(&self) -> bool` (true: must run on a dirty scheduler)
//! - `PasswordFile::parse(text, source_name) -> PasswordFile` (+ `warnings()`),
//!   `PasswordFile::load(path) -> Result<PasswordFile, LoadError>`,
//!   `PasswordFile::get(user) -> Option<&PasswordHash>`
//! - `dummy_verify(password)`: burns the same work as a real check, for unknown users.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

mod placeholder; // placeholder: replaced by the credentials branch
pub use placeholder::{AuthCache, CacheStats}; // placeholder: replaced by the credentials branch

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashError {
    /// The string does not start with a scheme this module knows.
    UnknownScheme,
    /// A known scheme with a malformed body; the text says which part.
    Malformed(&'static str),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::UnknownScheme => f.write_str("unknown password hash scheme"),
            HashError::Malformed(what) => write!(f, "malformed password hash: {what}"),
        }
    }
}

/// One stored password hash. `Debug` never prints the hash material.
#[derive(Clone)]
pub enum PasswordHash {
    /// vmq_passwd / mosquitto `$6$SALT$HASH`: SHA-512(password ++ salt).
    Sha512Salted { salt: Vec<u8>, hash: Vec<u8> },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512Salted { .. } => f.write_str("PasswordHash::Sha512Salted(<redacted>)"),
        }
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

impl PasswordHash {
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("$6$") {
            let (salt, hash) = rest.split_once('$').ok_or(HashError::Malformed("missing '$' after salt"))?;
            let salt = b64(salt).ok_or(HashError::Malformed("salt is not base64"))?;
            let hash = b64(hash).ok_or(HashError::Malformed("hash is not base64"))?;
            if hash.len() != 64 {
                return Err(HashError::Malformed("SHA-512 hash must be 64 bytes"));
            }
            return Ok(PasswordHash::Sha512Salted { salt, hash });
        }
        Err(HashError::UnknownScheme)
    }

    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Sha512Salted { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().as_slice().ct_eq(hash).into()
            }
        }
    }

    /// Whether a verification costs more than a scheduler slice (~1 ms).
    pub fn is_slow(&self) -> bool {
        match self {
            PasswordHash::Sha512Salted { .. } => false,
        }
    }
}

/// Work equivalent to a real verification, so an unknown user is not told
/// apart from a known one by timing.
pub fn dummy_verify(password: &[u8]) {
    let _ = PasswordHash::Sha512Salted { salt: vec![0; 12], hash: vec![0; 64] }.verify(password);
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadWarning {
    pub source: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug)]
pub struct LoadError {
    pub source: String,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

/// A parsed password file: `user:HASH` per line, `#` comments.
#[derive(Debug, Default)]
pub struct PasswordFile {
    entries: HashMap<Box<[u8]>, PasswordHash>,
    warnings: Vec<LoadWarning>,
}

impl PasswordFile {
    pub fn parse(text: &str, source: &str) -> PasswordFile {
        let mut file = PasswordFile::default();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let warn = |reason: String| LoadWarning { source: source.to_string(), line: idx + 1, reason };
            match line.split_once(':') {
                None => file.warnings.push(warn("expected 'user:hash'".into())),
                Some((user, hash)) => match PasswordHash::parse(hash) {
                    Ok(h) => {
                        file.entries.insert(user.as_bytes().into(), h);
                    }
                    Err(e) => file.warnings.push(warn(format!("user '{user}': {e}"))),
                },
            }
        }
        file
    }

    pub fn load(path: &Path) -> Result<PasswordFile, LoadError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError { source: source.clone(), reason: e.to_string() })?;
        Ok(PasswordFile::parse(&text, &source))
    }

    pub fn get(&self, user: &[u8]) -> Option<&PasswordHash> {
        self.entries.get(user)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn warnings(&self) -> &[LoadWarning] {
        &self.warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_6(password: &[u8], salt: &[u8]) -> String {
        let mut h = Sha512::new();
        h.update(password);
        h.update(salt);
        let e = base64::engine::general_purpose::STANDARD;
        format!("$6${}${}", e.encode(salt), e.encode(h.finalize()))
    }

    #[test]
    fn sha512_salted_round_trip() {
        let h = PasswordHash::parse(&make_6(b"secret", b"0123456789ab")).unwrap();
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"Secret"));
        assert!(!format!("{h:?}").contains('$'));
    }

    #[test]
    fn bad_lines_are_reported_not_fatal() {
        let text = format!("# comment\nalice:{}\nbob\ncarol:$9$x\n", make_6(b"pw", b"saltsaltsalt"));
        let f = PasswordFile::parse(&text, "passwd");
        assert_eq!(f.len(), 1);
        assert_eq!(f.warnings().len(), 2);
        assert_eq!(f.warnings()[0].line, 3);
        assert!(f.get(b"alice").unwrap().verify(b"pw"));
    }
}
