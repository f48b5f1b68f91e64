//! Deterministic fuzzing inside `cargo test`: every fuzz body gets random
//! bytes and mutations of valid seeds (a tiny structure-aware mutator, so
//! inputs get past the first `$`), from fixed seeds so a failure replays.
//! `WARDEN_FUZZ_ITERS` scales the count (default in [`iters`]).

use super::*;
use crate::credentials::{hash_password, HashScheme};

/// xorshift64*: deterministic, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub(crate) fn iters(default: usize) -> usize {
    std::env::var("WARDEN_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

const TOKENS: &[&[u8]] = &[
    b"$", b"$$", b",", b"=", b":", b"\n", b"\r\n", b"#", b" ", b"\xff", b"\0", b"0", b"1", b"4", b"31", b"99",
    b"4294967295", b"4294967296", b"99999999999", b"m=", b"t=", b"p=", b"v=19", b"v=16", b"$2b$", b"$2a$04$",
    b"$argon2id$", b"$7$", b"$6$", b"PBKDF2$sha512$", b"==", b"AAAA", b"////", b"\xc3\xa9",
];

/// One random structural mutation of `input`.
pub(crate) fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let pos = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(pos..pos, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (pos + 1 + rng.below(16)).min(v.len());
                let start = pos.min(end);
                v.drain(start..end);
            }
            4 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(32)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(pos..pos, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(other.len() + 1);
                v.truncate(pos);
                v.extend_from_slice(&other[cut..]);
            }
            6 => {
                // Replace a run of digits with an extreme number.
                if let Some(i) = v.iter().position(|b| b.is_ascii_digit()) {
                    let mut j = i;
                    while j < v.len() && v[j].is_ascii_digit() {
                        j += 1;
                    }
                    let t = [&b"0"[..], b"4294967296", b"1000000000", b"65", b"3"][rng.below(5)];
                    v.splice(i..j, t.iter().copied());
                }
            }
            _ => v.truncate(pos),
        }
    }
    v
}

fn hash_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = vec![
        hash_password(HashScheme::Sha512, b"fuzz-pw").unwrap(),
        hash_password(HashScheme::Pbkdf2 { iterations: 101 }, b"fuzz-pw").unwrap(),
        hash_password(HashScheme::Bcrypt { cost: 4 }, b"fuzz-pw").unwrap(),
        hash_password(HashScheme::Argon2id { memory_kib: 64, time: 1, lanes: 1 }, b"fuzz-pw").unwrap(),
        "PBKDF2$sha256$100$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "PBKDF2$sha512$100$rawsalt!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "$argon2i$m=64,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "$argon2d$v=16$m=64,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    seeds.push(b"$2y$04$abcdefghijklmnopqrstuu5Nn4WsO1vMdnV6A0d6f0JrPQe2w9vbi".to_vec());
    seeds
}

/// Every seed parses (so mutations start from the deep end of each parser).
#[test]
fn seeds_are_valid_hashes() {
    for s in hash_seeds().iter().take(8) {
        let text = std::str::from_utf8(s).unwrap();
        assert!(PasswordHash::parse(text).is_ok(), "{text}");
    }
}

#[test]
fn fuzz_hash_string_random_and_mutated() {
    let seeds = hash_seeds();
    let mut rng = Rng::new(0x6A5E);
    let n = iters(20_000);
    let mut parsed = 0usize;
    for i in 0..n {
        let input = if i % 10 == 0 { rng.bytes(200) } else { { let k = rng.below(seeds.len()); mutate(&mut rng, &seeds[k], &seeds) } };
        hash_string(&input);
        if PasswordHash::parse(&String::from_utf8_lossy(&input)).is_ok() {
            parsed += 1;
        }
    }
    for s in &seeds {
        hash_string(s);
    }
    // The mutator keeps a good share of inputs valid, so verify paths run too.
    assert!(parsed > n / 20, "only {parsed} of {n} mutated hashes parsed");
}

#[test]
fn fuzz_password_file_random_and_mutated() {
    let hashes = hash_seeds();
    let mut files: Vec<Vec<u8>> = Vec::new();
    for (i, h) in hashes.iter().enumerate() {
        let mut f = format!("# comment\nuser{i}:").into_bytes();
        f.extend_from_slice(h);
        f.extend_from_slice(b"\r\n\nother:");
        f.extend_from_slice(&hashes[(i + 1) % hashes.len()]);
        f.push(b'\n');
        files.push(f);
    }
    let mut rng = Rng::new(0xF11E);
    let n = iters(5_000);
    for i in 0..n {
        let input = if i % 10 == 0 { rng.bytes(400) } else { { let k = rng.below(files.len()); mutate(&mut rng, &files[k], &files) } };
        password_file(&input);
    }
    for f in &files {
        password_file(f);
    }
}

const POLICY_SEED: &str = include_str!("../../../../docs/policy.example.toml");

#[test]
fn fuzz_policy_random_and_mutated() {
    let seeds: Vec<Vec<u8>> = vec![POLICY_SEED.as_bytes().to_vec(), b"[settings]\n".to_vec(), b"".to_vec()];
    let mut rng = Rng::new(0x9071);
    let n = iters(3_000);
    for i in 0..n {
        let input = if i % 10 == 0 {
            rng.bytes(300)
        } else {
            let k = rng.below(seeds.len());
            mutate(&mut rng, &seeds[k], &seeds)
        };
        policy(&input);
    }
}

#[test]
fn fuzz_cert_identity_random() {
    let mut rng = Rng::new(0xCE27);
    // A DER SEQUENCE header followed by noise gets past the first check.
    let seeds: Vec<Vec<u8>> = vec![vec![0x30, 0x82, 0x01, 0x0a, 0x30, 0x81, 0xf0, 0xa0, 0x03, 0x02, 0x01, 0x02]];
    for i in 0..iters(5_000) {
        let input = if i % 2 == 0 { rng.bytes(300) } else { mutate(&mut rng, &seeds[0], &seeds) };
        cert_identity(&input);
    }
}

#[test]
fn policy_seed_parses() {
    if let Err(e) = Policy::parse(POLICY_SEED, "seed") {
        panic!("{e}");
    }
}
