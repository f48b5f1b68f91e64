//! Password files: `user:HASH` per line (vmq_passwd / mosquitto_passwd layout).
//!
//! - `#` as the first non-blank character starts a comment line; blank lines
//!   are skipped; CRLF line ends are tolerated.
//! - The user name is everything before the first `:`, kept as raw bytes;
//!   the hash is the rest with surrounding whitespace removed.
//! - A line that cannot be used is skipped with a [`LoadWarning`] (source,
//!   1-based line, reason). Warnings may name the user but never contain the
//!   hash text.
//! - A user defined twice: the last line wins, with a warning.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::hash::{HashError, PasswordHash};

/// Larger password files are refused by [`PasswordFile::load`].
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// Reason text of the warning [`PasswordFile::load`] adds for a file other
/// users can read.
pub const READABLE_BY_OTHERS: &str = "file is readable by group/others";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadWarning {
    pub source: String,
    /// 1-based line number; 0 for warnings about the whole file.
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = super::redact_hashes(&self.reason);
        if self.line == 0 {
            write!(f, "{}: {}", self.source, reason)
        } else {
            write!(f, "{}:{}: {}", self.source, self.line, reason)
        }
    }
}

#[derive(Debug)]
pub struct LoadError {
    pub source: String,
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, super::redact_hashes(&self.reason))
    }
}

impl std::error::Error for LoadError {}

/// A parsed password file.
#[derive(Debug, Default)]
pub struct PasswordFile {
    /// Looked up on every login with a password (ahash: keyed, and
    /// cheaper than SipHash for short names).
    entries: HashMap<Box<[u8]>, PasswordHash, ahash::RandomState>,
    warnings: Vec<LoadWarning>,
    readable_by_others: bool,

}

/// A user name for a warning: lossy UTF-8, control characters escaped, cut
/// at 64 characters.
fn show_user(user: &[u8]) -> String {
    let s = String::from_utf8_lossy(user);
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

impl PasswordFile {
    pub fn parse(text: &str, source: &str) -> PasswordFile {
        PasswordFile::parse_bytes(text.as_bytes(), source)
    }

    /// Like [`PasswordFile::parse`] for a file that need not be UTF-8 (user
    /// names are bytes; hashes must be ASCII).
    pub fn parse_bytes(text: &[u8], source: &str) -> PasswordFile {
        let mut file = PasswordFile::default();
        let mut defined_on: HashMap<Box<[u8]>, usize> = HashMap::new();
        for (idx, raw) in text.split(|b| *b == b'\n').enumerate() {
            let lineno = idx + 1;
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            let trimmed = trim_ascii(line);
            if trimmed.is_empty() || trimmed[0] == b'#' {
                continue;
            }
            let warn = |reason: String| LoadWarning { source: source.to_string(), line: lineno, reason };
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                file.warnings.push(warn("expected 'user:hash'".into()));
                continue;
            };
            let user = &line[..colon];
            let hash = trim_ascii(&line[colon + 1..]);
            if user.is_empty() {
                file.warnings.push(warn("empty user name".into()));
                continue;
            }
            if hash.is_empty() {
                file.warnings.push(warn(format!("user '{}': empty password hash", show_user(user))));
                continue;
            }
            let parsed = match std::str::from_utf8(hash) {
                Ok(h) => PasswordHash::parse(h),
                Err(_) => Err(HashError::Malformed("not ASCII")),
            };
            match parsed {
                Ok(h) => {
                    if let Some(prev) = defined_on.insert(user.into(), lineno) {
                        file.warnings.push(warn(format!(
                            "user '{}' defined again (line {prev} is ignored)",
                            show_user(user)
                        )));
                    }
                    file.entries.insert(user.into(), h);
                }
                Err(e) => file.warnings.push(warn(format!("user '{}': {e}", show_user(user)))),
            }
        }
        file
    }

    /// Reads and parses `path`. Unreadable or oversized files are errors;
    /// bad lines are warnings. On unix a file that group or others can read
    /// gets a line-0 warning [`READABLE_BY_OTHERS`] (see also
    /// [`PasswordFile::readable_by_others`]).
    pub fn load(path: &Path) -> Result<PasswordFile, LoadError> {
        let source = path.display().to_string();
        let err = |reason: String| LoadError { source: source.clone(), reason };
        let (text, meta) = crate::files::read_regular(path, MAX_FILE_SIZE).map_err(err)?;
        let mut file = PasswordFile::parse_bytes(&text, &source);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o044 != 0 {
                file.readable_by_others = true;
                file.warnings.insert(0, LoadWarning { source, line: 0, reason: READABLE_BY_OTHERS.into() });
            }
        }
        Ok(file)
    }

    pub fn get(&self, user: &[u8]) -> Option<&PasswordHash> {
        self.entries.get(user)
    }

    /// Every user's hash (no order).
    pub fn hashes(&self) -> impl Iterator<Item = &PasswordHash> {
        self.entries.values()
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

    /// Whether [`PasswordFile::load`] found the file readable by group or
    /// others (always false for [`PasswordFile::parse`]).
    pub fn readable_by_others(&self) -> bool {
        self.readable_by_others
    }

    /// User names in the file, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.keys().map(|k| &k[..])
    }
}
