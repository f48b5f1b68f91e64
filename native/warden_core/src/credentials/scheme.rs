//! The hashes this plugin writes (`vmq-warden-passwd`): the schemes and
//! their default costs, and `hash_password`.

use std::str::FromStr;

use base64::Engine;
use sha2::{Digest, Sha512};

use super::hash::*;

/// A scheme (with its cost parameters) for hashing a new password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashScheme {
    /// `$argon2id$v=19$...`, PHC string; `memory_kib`, `time`, `lanes`.
    Argon2id { memory_kib: u32, time: u32, lanes: u32 },
    /// `$2b$COST$...`.
    Bcrypt { cost: u32 },
    /// `$6$` (vmq_passwd / mosquitto 1.x). Fast and weak; for compatibility only.
    Sha512,
    /// `$7$ITER$...` (mosquitto 2.x PBKDF2-HMAC-SHA512).
    Pbkdf2 { iterations: u32 },
}

impl HashScheme {
    /// OWASP's minimum recommendation, argon2 crate default: m=19456, t=2, p=1.
    pub const ARGON2ID_DEFAULT: HashScheme = HashScheme::Argon2id { memory_kib: 19 * 1024, time: 2, lanes: 1 };
    /// Cost 10 (go-auth's default); the defaults all verify in tens of
    /// milliseconds, which a broker pays on every uncached connect.
    pub const BCRYPT_DEFAULT: HashScheme = HashScheme::Bcrypt { cost: 10 };
    /// Much stronger than mosquitto_passwd's 101 iterations (mosquitto reads
    /// any count); go-auth's default count.
    pub const PBKDF2_DEFAULT: HashScheme = HashScheme::Pbkdf2 { iterations: 100_000 };
}

impl Default for HashScheme {
    fn default() -> Self {
        HashScheme::ARGON2ID_DEFAULT
    }
}

impl FromStr for HashScheme {
    type Err = HashError;
    /// `argon2id`, `bcrypt`, `sha512` (alias `6`), `pbkdf2` (alias `7`), with default costs.
    fn from_str(s: &str) -> Result<Self, HashError> {
        match s {
            "argon2id" | "argon2" => Ok(HashScheme::ARGON2ID_DEFAULT),
            "bcrypt" => Ok(HashScheme::BCRYPT_DEFAULT),
            "sha512" | "6" => Ok(HashScheme::Sha512),
            "pbkdf2" | "7" => Ok(HashScheme::PBKDF2_DEFAULT),
            _ => Err(HashError::UnknownScheme),
        }
    }
}

/// Hashes `password` with a fresh random salt in `scheme`'s string format.
/// Fails only for cost parameters outside what [`PasswordHash::parse`]
/// accepts (the result always parses and verifies).
pub fn hash_password(scheme: HashScheme, password: &[u8]) -> Result<String, HashError> {
    let out = match scheme {
        HashScheme::Sha512 => {
            let mut salt = [0u8; 12];
            super::fill_random(&mut salt);
            let mut h = Sha512::new();
            h.update(password);
            h.update(salt);
            format!("$6${}${}", B64.encode(salt), B64.encode(h.finalize()))
        }
        HashScheme::Pbkdf2 { iterations } => {
            if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
                return Err(HashError::Malformed("PBKDF2 iteration count out of range"));
            }
            let mut salt = [0u8; 12];
            super::fill_random(&mut salt);
            let mut out = [0u8; 64];
            pbkdf2(Prf::HmacSha512, password, &salt, iterations, &mut out);
            format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(out))
        }
        HashScheme::Bcrypt { cost } => {
            if !(4..=MAX_BCRYPT_COST).contains(&cost) {
                return Err(HashError::Malformed("bcrypt cost out of range (4 to 12: over 12 is over the cost budget)"));
            }
            let mut salt = [0u8; 16];
            super::fill_random(&mut salt);
            bcrypt::hash_with_salt(password, cost, salt)
                .map_err(|_| HashError::Malformed("bcrypt parameters"))?
                .format_for_version(bcrypt::Version::TwoB)
        }
        HashScheme::Argon2id { memory_kib, time, lanes } => {
            check_argon2_cost(memory_kib, time, lanes)?;
            let ctx = argon2_ctx(Argon2Variant::Argon2id, 0x13, memory_kib, time, lanes, 32)
                .ok_or(HashError::Malformed("argon2 parameters out of range"))?;
            let mut salt = [0u8; 16];
            super::fill_random(&mut salt);
            let mut out = [0u8; 32];
            ctx.hash_password_into(password, &salt, &mut out)
                .map_err(|_| HashError::Malformed("argon2 parameters out of range"))?;
            format!(
                "$argon2id$v=19$m={memory_kib},t={time},p={lanes}${}${}",
                B64_NOPAD.encode(salt),
                B64_NOPAD.encode(out)
            )
        }
    };
    debug_assert!(PasswordHash::parse(&out).is_ok());
    Ok(out)
}
