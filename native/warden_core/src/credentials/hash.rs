//! Password-hash formats: parsing, constant-time verification, cost
//! classification, fingerprints, decoys and hashing of new passwords.
//!
//! | scheme | string | algorithm | slow? |
//! |---|---|---|---|
//! | vmq_passwd / mosquitto 1.x | `$6$SALT$HASH` | SHA-512(password ++ salt) | no |
//! | mosquitto 2.x | `$7$ITER$SALT$HASH` | PBKDF2-HMAC-SHA512, 64-byte hash | if ITER > 250 |
//! | mosquitto-go-auth | `PBKDF2$sha256\|sha512$ITER$SALT$HASH` | PBKDF2-HMAC-SHA256/512, key length = hash length | if ITER > 250 |
//! | bcrypt | `$2a$`, `$2b$`, `$2y$` | bcrypt (passwords beyond 72 bytes are truncated, as everywhere) | yes |
//! | argon2 | `$argon2id$v=19$m=..,t=..,p=..$SALT$HASH` (also `argon2i`, `argon2d`) | Argon2 | yes |
//!
//! SALT/HASH are standard-alphabet base64; padding is optional everywhere.
//! go-auth salts: go-auth writes the salt as base64 by default, or as the raw
//! salt text when configured with `hasher_salt_encoding = utf-8`. The string
//! does not say which, so a salt that decodes as base64 is taken as base64 and
//! any other salt as its raw bytes.
//!
//! Hostile parameters (a password file is configuration, but it should not be
//! able to stall the broker) are rejected as [`HashError::Malformed`]: see the
//! `MAX_*` constants.

use std::fmt;
use std::sync::Arc;

use argon2::{Algorithm as Argon2Algorithm, Argon2, Params as Argon2Params, Version as Argon2Version};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use once_cell::sync::Lazy;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::scheme::HashScheme;

// Cost budget. One verification must stay under about 1 s of CPU and
// 256 MiB of memory on the development machine (2 vCPUs; measured with a
// release build, docs/POLICY.md "Cost budget": bcrypt 10 = 0.16 s, 12 =
// 0.33 s, 13 = 0.65-0.96 s; argon2id 1.2-2.3 ms per MiB and pass; PBKDF2-
// HMAC-SHA512 2.4-2.9 us per iteration). A hash over the budget is refused
// (a password-file line is skipped with a warning naming file and line; an
// inline policy hash fails the policy) instead of stalling the broker: two
// wrong passwords for an argon2 m=1 GiB t=100 user took 15-17 s and 2 GiB.

/// Highest PBKDF2 iteration count accepted (`$7$` and go-auth), counted
/// per output block: about 0.85 s.
pub const MAX_PBKDF2_ITERATIONS: u32 = 300_000;
/// PBKDF2 above this many iterations is [`PasswordHash::is_slow`]. 1000
/// iterations of HMAC-SHA512 measured 0.9-1.05 ms of CPU on the benchmark
/// machine (the robustness suite's call timing): too close to a scheduler
/// slice; 250 keeps a normal-scheduler verification near 0.25 ms.
pub const FAST_PBKDF2_ITERATIONS: u32 = 250;
/// Highest accepted PBKDF2 output length in bytes (go-auth's key length).
pub const MAX_PBKDF2_HASH_LEN: usize = 128;
/// Lowest accepted PBKDF2 output length in bytes.
pub const MIN_PBKDF2_HASH_LEN: usize = 16;
/// Highest accepted bcrypt cost: 12 is 0.33 s, each step doubles it.
pub const MAX_BCRYPT_COST: u32 = 12;
/// Highest accepted Argon2 memory, in KiB (256 MiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// Highest accepted Argon2 time cost (passes).
pub const MAX_ARGON2_TIME: u32 = 100;
/// Highest accepted Argon2 work, memory (KiB) times passes: 512 MiB-passes,
/// about 0.6-1.2 s.
pub const MAX_ARGON2_WORK_KIB: u64 = 512 * 1024;
/// Highest accepted Argon2 parallelism.
pub const MAX_ARGON2_LANES: u32 = 8;
/// Highest accepted Argon2 output length in bytes.
pub const MAX_ARGON2_HASH_LEN: usize = 1024;
/// Longest accepted salt in bytes, any scheme.
pub const MAX_SALT_LEN: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashError {
    /// The string does not start with a scheme this module knows.
    UnknownScheme,
    /// A known scheme with a malformed body (or absurd parameters); the text says which part.
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

impl std::error::Error for HashError {}

/// Pseudo-random function of a PBKDF2 hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prf {
    HmacSha256,
    HmacSha512,
}

impl Prf {
    fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha512 => 64,
        }
    }
}

/// Which flavour of Argon2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Argon2Variant {
    Argon2d,
    Argon2i,
    Argon2id,
}

impl Argon2Variant {
    fn algorithm(self) -> Argon2Algorithm {
        match self {
            Argon2Variant::Argon2d => Argon2Algorithm::Argon2d,
            Argon2Variant::Argon2i => Argon2Algorithm::Argon2i,
            Argon2Variant::Argon2id => Argon2Algorithm::Argon2id,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Argon2Variant::Argon2d => "argon2d",
            Argon2Variant::Argon2i => "argon2i",
            Argon2Variant::Argon2id => "argon2id",
        }
    }
}

/// The scheme of a parsed hash, for logs and metrics (no secret material).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemeKind {
    /// `$6$`
    Sha512Salted,
    /// `$7$`
    MosquittoPbkdf2,
    /// `PBKDF2$...` (mosquitto-go-auth)
    GoAuthPbkdf2,
    /// `$2a$`/`$2b$`/`$2y$`
    Bcrypt,
    /// `$argon2id$`/`$argon2i$`/`$argon2d$`
    Argon2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum BcryptPrefix {
    A,
    B,
    Y,
}

#[derive(Clone)]
pub(super) enum Kind {
    Sha512Salted { salt: Vec<u8>, hash: Vec<u8> },
    Pbkdf2 { go_auth: bool, prf: Prf, iterations: u32, salt: Vec<u8>, hash: Vec<u8> },
    Bcrypt { prefix: BcryptPrefix, cost: u32, salt: [u8; 16], expected: String },
    Argon2 { variant: Argon2Variant, version: u32, m: u32, t: u32, p: u32, salt: Vec<u8>, hash: Vec<u8> },
}

/// One stored password hash. `Debug` never prints the hash material.
#[derive(Clone)]
pub struct PasswordHash {
    /// Shared: a login's pending check holds the hash it verifies against,
    /// and a clone per connect must not copy salts and digests.
    kind: Arc<Kind>,
    fingerprint: u64,
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash::{:?}(<redacted>)", self.scheme())
    }
}

/// Base64 as the password-file writers produce it: standard alphabet, padding
/// optional, non-zero trailing bits tolerated (OpenSSL and Go accept them).
pub(super) const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
/// PHC strings (argon2) encode without padding.
pub(super) const B64_NOPAD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn b64(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    B64.decode(s).ok()
}

fn salt_b64(s: &str) -> Result<Vec<u8>, HashError> {
    let salt = b64(s).ok_or(HashError::Malformed("salt is not base64"))?;
    check_salt_len(&salt)?;
    Ok(salt)
}

fn check_salt_len(salt: &[u8]) -> Result<(), HashError> {
    if salt.is_empty() {
        return Err(HashError::Malformed("empty salt"));
    }
    if salt.len() > MAX_SALT_LEN {
        return Err(HashError::Malformed("salt too long"));
    }
    Ok(())
}

fn parse_u32(s: &str, what: &'static str) -> Result<u32, HashError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HashError::Malformed(what));
    }
    s.parse::<u32>().map_err(|_| HashError::Malformed(what))
}

fn parse_iterations(s: &str) -> Result<u32, HashError> {
    // Anything longer than 10 digits is certainly above the limit.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() > 10 {
        return Err(HashError::Malformed("PBKDF2 iteration count too high"));
    }
    let n = parse_u32(s, "PBKDF2 iteration count is not a number")?;
    if n == 0 {
        return Err(HashError::Malformed("PBKDF2 iteration count is zero"));
    }
    if n > MAX_PBKDF2_ITERATIONS {
        return Err(HashError::Malformed("PBKDF2 iteration count too high (over the cost budget: at most 300000)"));
    }
    Ok(n)
}

/// Process-wide key for [`PasswordHash::fingerprint`]: fingerprints are stable
/// within one VM and say nothing about the hash outside it.
static FINGERPRINT_KEY: Lazy<[u8; 32]> = Lazy::new(super::random_key);

fn fingerprint_of(text: &str) -> u64 {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&FINGERPRINT_KEY[..]).expect("HMAC takes any key length");
    mac.update(b"vmq_warden password hash fingerprint\0");
    mac.update(text.as_bytes());
    let out = mac.finalize().into_bytes();
    let mut b = [0u8; 8];
    b.copy_from_slice(&out[..8]);
    u64::from_le_bytes(b)
}

pub(super) fn pbkdf2(prf: Prf, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    match prf {
        Prf::HmacSha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, out),
        Prf::HmacSha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, out),
    }
}

pub(super) fn argon2_ctx(variant: Argon2Variant, version: u32, m: u32, t: u32, p: u32, len: usize) -> Option<Argon2<'static>> {
    let version = match version {
        0x10 => Argon2Version::V0x10,
        0x13 => Argon2Version::V0x13,
        _ => return None,
    };
    let params = Argon2Params::new(m, t, p, Some(len)).ok()?;
    Some(Argon2::new(variant.algorithm(), version, params))
}

impl PasswordHash {
    /// Parses one hash string (surrounding whitespace ignored). Never panics;
    /// never does the expensive part of the scheme.
    pub fn parse(s: &str) -> Result<PasswordHash, HashError> {
        let s = s.trim();
        let kind = parse_kind(s)?;
        Ok(PasswordHash { kind: Arc::new(kind), fingerprint: fingerprint_of(s) })
    }

    /// Checks `password` against the hash. The final comparison is constant
    /// time; the work done depends only on the stored parameters and the
    /// password length, never on how much of the password is right.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &*self.kind {
            Kind::Sha512Salted { salt, hash } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().as_slice().ct_eq(hash).into()
            }
            Kind::Pbkdf2 { prf, iterations, salt, hash, .. } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2(*prf, password, salt, *iterations, &mut out);
                out.ct_eq(hash).into()
            }
            Kind::Bcrypt { cost, salt, expected, .. } => match bcrypt::hash_with_salt(password, *cost, *salt) {
                Ok(parts) => parts.format_for_version(bcrypt::Version::TwoB).as_bytes().ct_eq(expected.as_bytes()).into(),
                Err(_) => false,
            },
            Kind::Argon2 { variant, version, m, t, p, salt, hash } => {
                let Some(ctx) = argon2_ctx(*variant, *version, *m, *t, *p, hash.len()) else {
                    return false;
                };
                let mut out = vec![0u8; hash.len()];
                match ctx.hash_password_into(password, salt, &mut out) {
                    Ok(()) => out.ct_eq(hash).into(),
                    Err(_) => false,
                }
            }
        }
    }

    /// Whether a verification costs more than a scheduler slice (~1 ms), so
    /// it must run on a dirty scheduler.
    pub fn is_slow(&self) -> bool {
        match &*self.kind {
            Kind::Sha512Salted { .. } => false,
            Kind::Pbkdf2 { iterations, hash, prf, .. } => {
                // Each output block costs `iterations` PRF rounds.
                let blocks = hash.len().div_ceil(prf.output_len()) as u64;
                u64::from(*iterations) * blocks > u64::from(FAST_PBKDF2_ITERATIONS)
            }
            Kind::Bcrypt { .. } | Kind::Argon2 { .. } => true,
        }
    }

    /// Whether checking this hash costs less than asking the verification
    /// cache: a `$6$` hash is one SHA-512 of password and salt, where the
    /// cache's lookup is a keyed SHA-256 of the credentials, a lock and a
    /// map probe (twice when it misses), and remembering the result the
    /// same again. Such hashes are verified every time and never cached
    /// (docs/BENCHMARKS.md, "Measured design choices": what it saves when
    /// the cache would miss, and costs when it would hit).
    pub fn cheaper_than_cache(&self) -> bool {
        matches!(&*self.kind, Kind::Sha512Salted { .. })
    }

    /// A non-secret identifier of this hash, stable within the process: the
    /// same stored string gives the same value, a changed one (new password,
    /// new salt, new parameters) almost surely a different one. A keyed hash
    /// of the string, so it reveals nothing about the hash itself. Used to
    /// invalidate cached verifications when the password file changes.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn scheme(&self) -> SchemeKind {
        match &*self.kind {
            Kind::Sha512Salted { .. } => SchemeKind::Sha512Salted,
            Kind::Pbkdf2 { go_auth: false, .. } => SchemeKind::MosquittoPbkdf2,
            Kind::Pbkdf2 { go_auth: true, .. } => SchemeKind::GoAuthPbkdf2,
            Kind::Bcrypt { .. } => SchemeKind::Bcrypt,
            Kind::Argon2 { .. } => SchemeKind::Argon2,
        }
    }

    /// A hash with the same scheme and cost parameters but a random salt and
    /// a random hash value, so that verifying against it costs what verifying
    /// against `self` costs and (with overwhelming probability) fails. Used
    /// for unknown users: see `Decoys` in firewall/identity.rs.
    pub fn decoy(&self) -> PasswordHash {
        let rand = |n: usize| {
            let mut v = vec![0u8; n];
            super::fill_random(&mut v);
            v
        };
        let kind = match &*self.kind {
            Kind::Sha512Salted { salt, hash } => Kind::Sha512Salted { salt: rand(salt.len()), hash: rand(hash.len()) },
            Kind::Pbkdf2 { go_auth, prf, iterations, salt, hash } => Kind::Pbkdf2 {
                go_auth: *go_auth,
                prf: *prf,
                iterations: *iterations,
                salt: rand(salt.len()),
                hash: rand(hash.len()),
            },
            Kind::Bcrypt { prefix, cost, .. } => {
                let mut salt = [0u8; 16];
                super::fill_random(&mut salt);
                // A 2b string of the right length that no password produces
                // (its hash part is random).
                let mut expected = String::from("$2b$");
                expected.push_str(&format!("{cost:02}$"));
                let mut noise = [0u8; 53];
                super::fill_random(&mut noise);
                const BC: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                expected.extend(noise.iter().map(|b| BC[usize::from(*b) % BC.len()] as char));
                Kind::Bcrypt { prefix: *prefix, cost: *cost, salt, expected }
            }
            Kind::Argon2 { variant, version, m, t, p, salt, hash } => Kind::Argon2 {
                variant: *variant,
                version: *version,
                m: *m,
                t: *t,
                p: *p,
                salt: rand(salt.len()),
                hash: rand(hash.len()),
            },
        };
        PasswordHash { kind: Arc::new(kind), fingerprint: 0 }
    }

    /// A rough measure of the work one [`PasswordHash::verify`] does, in
    /// units of about one SHA-512 compression (bcrypt and argon2 scaled to
    /// the same order). Used by the fuzz bodies to verify only hashes whose
    /// check is cheap; not an exact cost model.
    pub fn work_estimate(&self) -> u64 {
        match &*self.kind {
            Kind::Sha512Salted { salt, .. } => 1 + salt.len() as u64 / 128,
            Kind::Pbkdf2 { iterations, hash, prf, .. } => {
                let blocks = hash.len().div_ceil(prf.output_len()) as u64;
                2 * u64::from(*iterations) * blocks
            }
            // One bcrypt round of EksBlowfish ~ 2 * 521 Blowfish encryptions.
            Kind::Bcrypt { cost, .. } => (1u64 << (*cost).min(31)) * 64,
            // Argon2 fills m KiB t times (one 1 KiB block ~ a few compressions).
            Kind::Argon2 { m, t, p, .. } => u64::from(*m).max(8 * u64::from(*p)) * u64::from(*t) * 4,
        }
    }

    /// Groups hashes that cost the same to verify (scheme + parameters).
    pub(crate) fn cost_class(&self) -> String {
        match &*self.kind {
            Kind::Sha512Salted { salt, .. } => format!("6/{}", salt.len()),
            Kind::Pbkdf2 { go_auth, prf, iterations, hash, .. } => {
                format!("pbkdf2/{go_auth}/{prf:?}/{iterations}/{}", hash.len())
            }
            Kind::Bcrypt { cost, .. } => format!("bcrypt/{cost}"),
            Kind::Argon2 { variant, version, m, t, p, hash, .. } => {
                format!("{}/{version}/{m}/{t}/{p}/{}", variant.name(), hash.len())
            }
        }
    }
}

fn parse_kind(s: &str) -> Result<Kind, HashError> {
    if let Some(rest) = s.strip_prefix("$6$") {
        let (salt, hash) = rest.split_once('$').ok_or(HashError::Malformed("missing '$' after salt"))?;
        let salt = salt_b64(salt)?;
        let hash = b64(hash).ok_or(HashError::Malformed("hash is not base64"))?;
        if hash.len() != 64 {
            return Err(HashError::Malformed("SHA-512 hash must be 64 bytes"));
        }
        return Ok(Kind::Sha512Salted { salt, hash });
    }
    if let Some(rest) = s.strip_prefix("$7$") {
        let mut parts = rest.split('$');
        let (Some(iter), Some(salt), Some(hash), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(HashError::Malformed("expected $7$ITERATIONS$SALT$HASH"));
        };
        let iterations = parse_iterations(iter)?;
        let salt = salt_b64(salt)?;
        let hash = b64(hash).ok_or(HashError::Malformed("hash is not base64"))?;
        if hash.len() != 64 {
            return Err(HashError::Malformed("PBKDF2-SHA512 hash must be 64 bytes"));
        }
        return Ok(Kind::Pbkdf2 { go_auth: false, prf: Prf::HmacSha512, iterations, salt, hash });
    }
    if let Some(rest) = s.strip_prefix("PBKDF2$") {
        let mut parts = rest.split('$');
        let (Some(alg), Some(iter), Some(salt), Some(hash), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HashError::Malformed("expected PBKDF2$ALG$ITERATIONS$SALT$HASH"));
        };
        let prf = match alg {
            "sha256" => Prf::HmacSha256,
            "sha512" => Prf::HmacSha512,
            _ => return Err(HashError::Malformed("PBKDF2 algorithm must be sha256 or sha512")),
        };
        let iterations = parse_iterations(iter)?;
        // go-auth: base64 by default, raw text with hasher_salt_encoding=utf-8.
        let salt = match b64(salt) {
            Some(bytes) => bytes,
            None => salt.as_bytes().to_vec(),
        };
        check_salt_len(&salt)?;
        let hash = b64(hash).ok_or(HashError::Malformed("hash is not base64"))?;
        if hash.len() < MIN_PBKDF2_HASH_LEN || hash.len() > MAX_PBKDF2_HASH_LEN {
            return Err(HashError::Malformed("PBKDF2 hash length out of range"));
        }
        let blocks = hash.len().div_ceil(prf.output_len()) as u64;
        if u64::from(iterations) * blocks > u64::from(MAX_PBKDF2_ITERATIONS) {
            return Err(HashError::Malformed("PBKDF2 iteration count too high"));
        }
        return Ok(Kind::Pbkdf2 { go_auth: true, prf, iterations, salt, hash });
    }
    if s.starts_with("$2") {
        let prefix = match s.get(..4) {
            Some("$2a$") => BcryptPrefix::A,
            Some("$2b$") => BcryptPrefix::B,
            Some("$2y$") => BcryptPrefix::Y,
            _ => return Err(HashError::Malformed("unsupported bcrypt variant (use $2a$, $2b$ or $2y$)")),
        };
        let cost_str = s.get(4..6).ok_or(HashError::Malformed("bcrypt string too short"))?;
        let cost = parse_u32(cost_str, "bcrypt cost is not a number")?;
        if !(4..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(HashError::Malformed("bcrypt cost out of range (4 to 12: over 12 is over the cost budget)"));
        }
        let parts: bcrypt::HashParts = s.parse().map_err(|_| HashError::Malformed("bcrypt string is malformed"))?;
        if parts.get_cost() != cost {
            return Err(HashError::Malformed("bcrypt string is malformed"));
        }
        // 2a, 2b and 2y compute the same for every password this crate hashes
        // (the 2a/2x bug concerned 8-bit chars in crypt_blowfish only), so
        // compare in the canonical 2b spelling.
        let expected = parts.format_for_version(bcrypt::Version::TwoB);
        return Ok(Kind::Bcrypt { prefix, cost, salt: parts.get_salt_raw(), expected });
    }
    if let Some(rest) = s.strip_prefix("$argon2") {
        return parse_argon2(rest);
    }
    Err(HashError::UnknownScheme)
}

fn parse_argon2(rest: &str) -> Result<Kind, HashError> {
    // rest: "id$v=19$m=..,t=..,p=..$salt$hash" (the version field is optional).
    let mut parts: Vec<&str> = rest.split('$').collect();
    let variant = match parts.first().copied() {
        Some("id") => Argon2Variant::Argon2id,
        Some("i") => Argon2Variant::Argon2i,
        Some("d") => Argon2Variant::Argon2d,
        _ => return Err(HashError::UnknownScheme),
    };
    parts.remove(0);
    let version = match parts.first().and_then(|p| p.strip_prefix("v=")) {
        Some(v) => {
            let v = parse_u32(v, "argon2 version is not a number")?;
            parts.remove(0);
            v
        }
        None => 0x10,
    };
    if version != 0x10 && version != 0x13 {
        return Err(HashError::Malformed("argon2 version must be 16 or 19"));
    }
    let [params, salt, hash] = parts[..] else {
        return Err(HashError::Malformed("expected $argon2id$v=19$m=M,t=T,p=P$SALT$HASH"));
    };
    let (mut m, mut t, mut p) = (None, None, None);
    for kv in params.split(',') {
        let (k, v) = kv.split_once('=').ok_or(HashError::Malformed("argon2 parameter without '='"))?;
        let slot = match k {
            "m" => &mut m,
            "t" => &mut t,
            "p" => &mut p,
            "keyid" | "data" => return Err(HashError::Malformed("argon2 keyid/data parameters are not supported")),
            _ => return Err(HashError::Malformed("unknown argon2 parameter")),
        };
        if slot.is_some() {
            return Err(HashError::Malformed("repeated argon2 parameter"));
        }
        // Over-long digit strings are absurd values, not syntax errors.
        if v.len() > 10 && v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HashError::Malformed("argon2 parameter too high"));
        }
        *slot = Some(parse_u32(v, "argon2 parameter is not a number")?);
    }
    let (Some(m), Some(t), Some(p)) = (m, t, p) else {
        return Err(HashError::Malformed("argon2 needs m, t and p"));
    };
    check_argon2_cost(m, t, p)?;
    let salt = B64_NOPAD.decode(salt).map_err(|_| HashError::Malformed("salt is not base64"))?;
    if salt.len() < argon2::MIN_SALT_LEN || salt.len() > MAX_SALT_LEN {
        return Err(HashError::Malformed("argon2 salt length out of range"));
    }
    let hash = B64_NOPAD.decode(hash).map_err(|_| HashError::Malformed("hash is not base64"))?;
    if hash.len() < Argon2Params::MIN_OUTPUT_LEN || hash.len() > MAX_ARGON2_HASH_LEN {
        return Err(HashError::Malformed("argon2 hash length out of range"));
    }
    if argon2_ctx(variant, version, m, t, p, hash.len()).is_none() {
        return Err(HashError::Malformed("argon2 parameters out of range"));
    }
    Ok(Kind::Argon2 { variant, version, m, t, p, salt, hash })
}

/// The cost budget of Argon2 (see the `MAX_*` constants).
pub(super) fn check_argon2_cost(m: u32, t: u32, p: u32) -> Result<(), HashError> {
    if m > MAX_ARGON2_MEMORY_KIB {
        return Err(HashError::Malformed("argon2 memory too high (over the cost budget: at most m=262144, 256 MiB)"));
    }
    if t > MAX_ARGON2_TIME {
        return Err(HashError::Malformed("argon2 time cost too high"));
    }
    if u64::from(m) * u64::from(t) > MAX_ARGON2_WORK_KIB {
        return Err(HashError::Malformed("argon2 memory times passes too high (over the cost budget: m*t at most 524288)"));
    }
    if p > MAX_ARGON2_LANES {
        return Err(HashError::Malformed("argon2 parallelism too high (over the cost budget: at most p=8)"));
    }
    Ok(())
}

/// The decoy for a policy whose users have no hash at all.
pub fn default_decoy() -> PasswordHash {
    DEFAULT_DECOY.clone()
}

/// The decoy of a policy without hashes: an argon2id hash with the
/// default parameters [`hash_password`] writes.
pub(super) static DEFAULT_DECOY: Lazy<PasswordHash> = Lazy::new(|| {
    let HashScheme::Argon2id { memory_kib, time, lanes } = HashScheme::ARGON2ID_DEFAULT else {
        unreachable!("the default scheme is argon2id")
    };
    let template = PasswordHash {
        kind: Arc::new(Kind::Argon2 {
            variant: Argon2Variant::Argon2id,
            version: 0x13,
            m: memory_kib,
            t: time,
            p: lanes,
            salt: vec![0; 16],
            hash: vec![0; 32],
        }),
        fingerprint: 0,
    };
    // Random salt and hash, same cost as what hash_password writes.
    template.decoy()
});
