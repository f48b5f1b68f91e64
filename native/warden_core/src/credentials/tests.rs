//! Unit tests of the credentials module. Fixed vectors were computed outside
//! this crate (Python hashlib for `$6$`/`$7$`/go-auth; the Argon2 reference
//! implementation's test suite; the crypt_blowfish test vectors for bcrypt);
//! the round-trip tests recompute the documented algorithms from primitives.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

use super::*;

fn make_6(password: &[u8], salt: &[u8]) -> String {
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(h.finalize()))
}

fn make_7(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    format!("$7${iterations}${}${}", STANDARD.encode(salt), STANDARD.encode(out))
}

fn make_goauth(alg: &str, password: &[u8], salt: &[u8], iterations: u32, len: usize) -> String {
    let mut out = vec![0u8; len];
    match alg {
        "sha256" => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        _ => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out),
    }
    format!("PBKDF2${alg}${iterations}${}${}", STANDARD.encode(salt), STANDARD.encode(out))
}

fn ok(s: &str) -> PasswordHash {
    PasswordHash::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn malformed(s: &str) {
    match PasswordHash::parse(s) {
        Err(HashError::Malformed(_)) => {}
        other => panic!("{s}: expected Malformed, got {other:?}"),
    }
}

// ---- $6$ ----

#[test]
fn sha512_fixed_vector() {
    let h = ok("$6$MDEyMzQ1Njc4OWFi$qEXipeLbgxRlwd06QHfY5WITkUZg0jLg9SZbXzq3ifXjfj+v3GbJGrSfC5PAg3UNCS+UFfbhUIZX4bmIAs330w==");
    assert!(h.verify(b"secret"));
    assert!(!h.verify(b"Secret"));
    assert!(!h.verify(b""));
    assert!(!h.is_slow());
    assert_eq!(h.scheme(), SchemeKind::Sha512Salted);
}

#[test]
fn sha512_round_trip_and_redacted_debug() {
    let s = make_6(b"secret", b"0123456789ab");
    let h = ok(&s);
    assert!(h.verify(b"secret"));
    assert!(!h.verify(b"secret\0"));
    let dbg = format!("{h:?}");
    assert!(!dbg.contains('$') && !dbg.contains("MDEy"), "{dbg}");
    // Unpadded base64 and surrounding whitespace are accepted.
    assert!(ok(&format!("  {}\t", s.trim_end_matches('='))).verify(b"secret"));
}

#[test]
fn sha512_malformed() {
    malformed("$6$");
    malformed("$6$abc");
    malformed("$6$!!!!$AAAA");
    malformed("$6$MDEy$not*base64");
    malformed("$6$MDEy$AAAA"); // hash too short
    malformed("$6$$AAAA");
    let full = make_6(b"x", b"salt");
    malformed(&full[..full.len() - 10]); // truncated
}

// ---- $7$ ----

#[test]
fn mosquitto7_fixed_vector() {
    let h = ok("$7$101$AQIDBAUGBwgJCgsM$vi3gtTBBsyA0ndLJ0V/YApuRViDA9ghC166cp1AjnIEUVevnLN/JRt4mV1VV33uV0F7F5qO0R1SqlyHqKHWWdg==");
    assert!(h.verify(b"password"));
    assert!(!h.verify(b"passwore"));
    assert!(!h.is_slow());
    assert_eq!(h.scheme(), SchemeKind::MosquittoPbkdf2);
}

#[test]
fn mosquitto7_round_trip_and_cost_class() {
    let h = ok(&make_7(b"pw", b"saltsaltsalt", 250));
    assert!(h.verify(b"pw"));
    assert!(!h.verify(b"pW"));
    assert!(!h.is_slow(), "250 iterations is still fast");
    assert!(ok(&make_7(b"pw", b"saltsaltsalt", 251)).is_slow());
}

#[test]
fn mosquitto7_malformed() {
    let good = make_7(b"pw", b"saltsaltsalt", 5);
    let parts: Vec<&str> = good.split('$').collect(); // ["", "7", iter, salt, hash]
    malformed("$7$");
    malformed(&format!("$7$0${}${}", parts[3], parts[4]));
    malformed(&format!("$7$-1${}${}", parts[3], parts[4]));
    malformed(&format!("$7$abc${}${}", parts[3], parts[4]));
    malformed(&format!("$7$300001${}${}", parts[3], parts[4]));
    malformed(&format!("$7$99999999999999999999${}${}", parts[3], parts[4]));
    malformed(&format!("$7$5${}", parts[3]));
    malformed(&format!("$7$5${}${}$extra", parts[3], parts[4]));
    malformed(&format!("$7$5$%%%${}", parts[4]));
    malformed(&format!("$7$5${}${}", parts[3], &parts[4][..20]));
    // The limit itself is accepted (but not run here).
    assert!(ok(&format!("$7$300000${}${}", parts[3], parts[4])).is_slow());
}

/// Hashes over the cost budget (docs/POLICY.md "Cost budget") are refused,
/// and a password file names the file and line of each, loading the rest.
/// These three loaded before: two wrong passwords for the argon2 user took
/// 15-17 s of CPU and 2 GiB.
#[test]
fn hashes_over_the_cost_budget_are_refused() {
    let salt = "c2FsdHNhbHRzYWx0c2FsdA";
    let h32 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let argon = |m: u32, t: u32, p: u32| format!("$argon2id$v=19$m={m},t={t},p={p}${salt}${h32}");
    let bcrypt = |cost: u32| format!("$2b${cost:02}$y8/cPvr.xkWDPfqESMUUo.IXRh6lGKz3Zfzn2qU3NQWN8QNqNtZiC");
    let pb = |iter: u32| format!("$7${iter}$itbNRE7jzxOA58L6$XSoEJYsg0whckXqeJmhRF9+ebQMMCI5TjAHzd5SibOXZcOBkqBPbHWnylmeD+2+h1eM7akXNO33GC3vwdqJ6ag==");
    for bad in [argon(1 << 20, 100, 64), argon(262_145, 1, 1), argon(262_144, 3, 1), argon(65_536, 1, 9), bcrypt(13), bcrypt(20), pb(10_000_000), pb(300_001)] {
        match PasswordHash::parse(&bad) {
            Err(HashError::Malformed(why)) => assert!(why.contains("budget") || why.contains("too high"), "{bad}: {why}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    for good in [argon(262_144, 2, 8), argon(19_456, 2, 1), bcrypt(12), bcrypt(10), pb(300_000), pb(101)] {
        ok(&good);
    }
    let text = format!("a:{}\nb:{}\nc:{}\nd:{}\n", argon(1 << 20, 100, 64), bcrypt(20), pb(10_000_000), bcrypt(10));
    let f = PasswordFile::parse(&text, "/etc/passwd.test");
    assert_eq!(f.len(), 1);
    let lines: Vec<usize> = f.warnings().iter().map(|w| w.line).collect();
    assert_eq!(lines, vec![1, 2, 3]);
    assert!(f.warnings().iter().all(|w| w.source == "/etc/passwd.test" && w.reason.contains("budget")), "{:?}", f.warnings());
}

// ---- go-auth PBKDF2 ----

#[test]
fn goauth_fixed_vectors() {
    let h = ok("PBKDF2$sha256$1000$c2l4dGVlbiBieXRlIHNsdA==$AYZuPPuwufqDAYlJN9Ib/mddTa1Lfy1YLQ07jBfskwo=");
    assert!(h.verify(b"hunter2"));
    assert!(!h.verify(b"hunter3"));
    assert!(h.is_slow(), "1000 iterations: over the fast bound");
    assert_eq!(h.scheme(), SchemeKind::GoAuthPbkdf2);
    let h = ok("PBKDF2$sha512$2000$c2l4dGVlbiBieXRlIHNsdA==$3XA1ge9nB0D6tjjyaSH/zvDSc7x6shFiR/0P8MZF4lc=");
    assert!(h.verify(b"hunter2"));
    assert!(h.is_slow());
    // hasher_salt_encoding = utf-8: a salt that is not base64 is its raw text.
    let h = ok("PBKDF2$sha512$100$raw_salt!$Qy52E4rcqCVpX+9b9o5OHTfY6qekC0hHPEh2i8CKEmQ=");
    assert!(h.verify(b"hunter2"));
}

#[test]
fn goauth_round_trip() {
    for (alg, len) in [("sha256", 32), ("sha512", 64), ("sha512", 32), ("sha256", 16)] {
        let h = ok(&make_goauth(alg, b"pw", b"0123456789abcdef", 50, len));
        assert!(h.verify(b"pw"), "{alg}/{len}");
        assert!(!h.verify(b"px"), "{alg}/{len}");
    }
}

#[test]
fn goauth_malformed() {
    let good = make_goauth("sha256", b"pw", b"0123456789abcdef", 50, 32);
    let p: Vec<&str> = good.split('$').collect(); // [PBKDF2, alg, iter, salt, hash]
    malformed(&format!("PBKDF2$md5$50${}${}", p[3], p[4]));
    malformed(&format!("PBKDF2$sha256$0${}${}", p[3], p[4]));
    malformed(&format!("PBKDF2$sha256$20000000${}${}", p[3], p[4]));
    malformed(&format!("PBKDF2$sha256$50${}", p[3]));
    malformed(&format!("PBKDF2$sha256$50${}$###", p[3]));
    malformed(&format!("PBKDF2$sha256$50$${}", p[4]));
    malformed(&format!("PBKDF2$sha256$50${}$AAAA", p[3])); // 3-byte key
    let long = STANDARD.encode([0u8; 256]);
    malformed(&format!("PBKDF2$sha256$50${}${long}", p[3]));
    // 128-byte key with sha256 = 4 blocks: 3M iterations x 4 exceeds the budget.
    let k128 = STANDARD.encode([0u8; 128]);
    malformed(&format!("PBKDF2$sha256$3000000${}${k128}", p[3]));
}

// ---- bcrypt ----

/// crypt_blowfish / OpenBSD test vectors.
const BCRYPT_UU: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

#[test]
fn bcrypt_fixed_vector_all_prefixes() {
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        let s = BCRYPT_UU.replacen("$2a$", prefix, 1);
        let h = ok(&s);
        assert!(h.verify(b"U*U"), "{prefix}");
        assert!(!h.verify(b"U*V"), "{prefix}");
        assert!(h.is_slow());
        assert_eq!(h.scheme(), SchemeKind::Bcrypt);
        assert!(!format!("{h:?}").contains("CCCC"));
    }
}

#[test]
fn bcrypt_round_trip_with_crate() {
    let s = bcrypt::hash_with_salt(b"correct horse", 4, [7u8; 16]).unwrap().format_for_version(bcrypt::Version::TwoY);
    let h = ok(&s);
    assert!(h.verify(b"correct horse"));
    assert!(!h.verify(b"correct horsf"));
}

#[test]
fn bcrypt_malformed() {
    malformed("$2x$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
    malformed("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvy"); // truncated
    malformed("$2a$21$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"); // absurd cost
    malformed("$2a$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
    malformed("$2a$03$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
    malformed("$2a$x5$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
    malformed("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvy!eW");
    malformed("$2a$");
    malformed("$2");
    malformed("$2a$05$ééééééééééééééééééééé.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW");
}

// ---- argon2 ----

#[test]
fn argon2_reference_vectors() {
    // From the Argon2 reference implementation's test suite.
    let cases: [(&str, &[u8]); 4] = [
        ("$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4", b"password"),
        ("$argon2i$v=19$m=256,t=2,p=1$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8", b"password"),
        ("$argon2i$m=256,t=2,p=2$c29tZXNhbHQ$tsEVYKap1h6scGt5ovl9aLRGOqOth+AMB+KwHpDFZPs", b"password"),
        ("$argon2d$v=16$m=8,t=1,p=1$ICAgICAgICA$X54KZYxUSfMUihzebb70sKbheabHilo8gsUldrVU4IU", b""),
    ];
    for (s, pw) in cases {
        let h = ok(s);
        assert!(h.verify(pw), "{s}");
        assert!(!h.verify(b"wrong"), "{s}");
        assert!(h.is_slow());
        assert_eq!(h.scheme(), SchemeKind::Argon2);
        assert!(!format!("{h:?}").contains("c29t"));
    }
}

#[test]
fn argon2_crate_phc_string_verifies() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let s = a.hash_password(b"pw", &salt).unwrap().to_string();
    let h = ok(&s);
    assert!(h.verify(b"pw"));
    assert!(!h.verify(b"pW"));
}

#[test]
fn argon2_malformed() {
    let salt = "c29tZXNhbHQ";
    let hash = "nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4";
    malformed(&format!("$argon2id$v=19$m=2097152,t=2,p=1${salt}${hash}")); // 2 GiB
    malformed(&format!("$argon2id$v=19$m=99999999999999,t=2,p=1${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=1000,p=1${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1000${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=0,p=1${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=4,t=1,p=1${salt}${hash}")); // m < 8p
    malformed(&format!("$argon2id$v=18$m=256,t=2,p=1${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1,m=256${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1,x=1${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1,keyid=AAAA${salt}${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1${salt}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1$c29t${hash}")); // salt < 8 bytes
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1$!!!!!!!!!!!!${hash}"));
    malformed(&format!("$argon2id$v=19$m=256,t=2,p=1${salt}$AA")); // hash < 4 bytes
    malformed("$argon2id$");
    assert_eq!(PasswordHash::parse("$argon2x$v=19$m=256,t=2,p=1$AAAA$AAAA").unwrap_err(), HashError::UnknownScheme);
}

// ---- general ----

#[test]
fn unknown_schemes() {
    for s in ["", "plain", "$1$abc$def", "$5$x$y", "$9$x", "{SSHA}abc", "pbkdf2_sha256$1$a$b"] {
        assert_eq!(PasswordHash::parse(s).unwrap_err(), HashError::UnknownScheme, "{s}");
    }
}

#[test]
fn fingerprint_tracks_the_stored_string() {
    let a = make_6(b"pw", b"saltsaltsalt");
    let b = make_6(b"pw", b"saltsaltsalu");
    assert_eq!(ok(&a).fingerprint(), ok(&a).fingerprint());
    assert_eq!(ok(&a).fingerprint(), ok(&format!(" {a} ")).fingerprint());
    assert_ne!(ok(&a).fingerprint(), ok(&b).fingerprint());
}

#[test]
fn hash_password_round_trips_every_scheme() {
    let schemes = [
        HashScheme::Sha512,
        HashScheme::Pbkdf2 { iterations: 10 },
        HashScheme::Bcrypt { cost: 4 },
        HashScheme::Argon2id { memory_kib: 64, time: 1, lanes: 1 },
    ];
    for scheme in schemes {
        let s = hash_password(scheme, b"s3cret").unwrap();
        let h = ok(&s);
        assert!(h.verify(b"s3cret"), "{scheme:?}");
        assert!(!h.verify(b"s3creT"), "{scheme:?}");
        // Fresh salt every time.
        assert_ne!(s, hash_password(scheme, b"s3cret").unwrap());
    }
    assert!(hash_password(HashScheme::Bcrypt { cost: 25 }, b"x").is_err());
    assert!(hash_password(HashScheme::Pbkdf2 { iterations: 0 }, b"x").is_err());
    assert!(hash_password(HashScheme::Argon2id { memory_kib: 1 << 30, time: 1, lanes: 1 }, b"x").is_err());
    assert_eq!("argon2id".parse::<HashScheme>().unwrap(), HashScheme::ARGON2ID_DEFAULT);
    assert_eq!("sha512".parse::<HashScheme>().unwrap(), HashScheme::Sha512);
    assert!("md5".parse::<HashScheme>().is_err());
}

#[test]
fn decoys_keep_scheme_and_cost_and_never_match() {
    let hashes = [
        make_6(b"pw", b"saltsaltsalt"),
        make_7(b"pw", b"saltsaltsalt", 2000),
        make_goauth("sha256", b"pw", b"saltsaltsalt", 20, 32),
        BCRYPT_UU.to_string(),
        "$argon2id$v=19$m=256,t=2,p=1$c29tZXNhbHQ$nf65EOgLrQMR/uIPnA4rEsF5h7TKyQwu9U1bMCHGi/4".to_string(),
    ];
    for s in &hashes {
        let h = ok(s);
        let d = h.decoy();
        assert_eq!(d.scheme(), h.scheme());
        assert_eq!(d.is_slow(), h.is_slow());
        assert_eq!(d.cost_class(), h.cost_class());
        assert!(!d.verify(b"pw") && !d.verify(b"U*U") && !d.verify(b"password"));
    }
}

#[test]
fn the_default_decoy_costs_what_hash_password_writes() {
    assert!(hash::DEFAULT_DECOY.is_slow());
    let real = ok(&hash_password(HashScheme::default(), b"pw").unwrap());
    assert_eq!(hash::DEFAULT_DECOY.cost_class(), real.cost_class());
    assert!(!hash::DEFAULT_DECOY.verify(b"pw"));
}

// ---- password files ----

#[test]
fn file_parses_comments_blank_crlf_and_bytes() {
    let h1 = make_6(b"pw1", b"saltsaltsalt");
    let h2 = make_7(b"pw2", b"saltsaltsalt", 3);
    let text = format!("# comment\r\n\r\n   \nalice:{h1}\r\n  # indented comment\nbob:{h2}  \n");
    let f = PasswordFile::parse(&text, "passwd");
    assert_eq!(f.len(), 2);
    assert!(f.warnings().is_empty(), "{:?}", f.warnings());
    assert!(f.get(b"alice").unwrap().verify(b"pw1"));
    assert!(f.get(b"bob").unwrap().verify(b"pw2"));
    assert!(f.get(b"carol").is_none());
    assert!(!f.readable_by_others());

    // Non-UTF-8 user names are kept as bytes.
    let mut raw = b"caf\xe9:".to_vec();
    raw.extend_from_slice(h1.as_bytes());
    let f = PasswordFile::parse_bytes(&raw, "latin1");
    assert!(f.get(b"caf\xe9").unwrap().verify(b"pw1"));
}

#[test]
fn file_reports_bad_lines_with_numbers_and_no_hash_text() {
    let good = make_6(b"pw", b"saltsaltsalt");
    let text = format!(
        "# comment\nalice:{good}\nbob\ncarol:$9$secretlooking\n:{good}\ndave:\nerin:$6$c2FsdA==$dHJ1bmNhdGVk\nalice:{}\n",
        make_6(b"new", b"saltsaltsalt")
    );
    let f = PasswordFile::parse(&text, "passwd");
    assert_eq!(f.len(), 1);
    let lines: Vec<usize> = f.warnings().iter().map(|w| w.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7, 8], "{:?}", f.warnings());
    for w in f.warnings() {
        assert_eq!(w.source, "passwd");
        assert!(!w.reason.contains('$'), "hash text leaked: {w:?}");
        assert!(!w.reason.contains("secretlooking") && !w.reason.contains("dHJ1"), "{w:?}");
    }
    assert!(f.warnings()[1].reason.contains("carol"));
    assert!(f.warnings()[5].reason.contains("line 2"), "{:?}", f.warnings()[5]);
    // Last definition wins.
    assert!(f.get(b"alice").unwrap().verify(b"new"));
    assert!(!f.get(b"alice").unwrap().verify(b"pw"));
    assert_eq!(f.warnings()[0].to_string(), "passwd:3: expected 'user:hash'");
}

#[test]
fn file_never_panics_on_garbage() {
    let garbage: &[&[u8]] = &[b"", b"\n\n\n", b":", b"::::", b"a:$", b"a:$2", b"a:$7$$$$", b"\xff\xfe:\xff", b"a:$argon2id$$$$$$"];
    for g in garbage {
        let f = PasswordFile::parse_bytes(g, "g");
        assert_eq!(f.len(), 0);
    }
}

#[test]
fn file_decoy_follows_the_common_scheme() {
}

#[cfg(unix)]
#[test]
fn load_reports_permissions_and_errors() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("warden_core_cred_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("passwd");
    std::fs::write(&path, format!("alice:{}\nbad line\n", make_6(b"pw", b"saltsaltsalt"))).unwrap();

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f = PasswordFile::load(&path).unwrap();
    assert!(!f.readable_by_others());
    assert_eq!(f.warnings().len(), 1);
    assert_eq!(f.warnings()[0].line, 2);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = PasswordFile::load(&path).unwrap();
    assert!(f.readable_by_others());
    assert_eq!(f.warnings()[0].line, 0);
    assert_eq!(f.warnings()[0].reason, READABLE_BY_OTHERS);
    assert!(f.get(b"alice").unwrap().verify(b"pw"));

    assert!(PasswordFile::load(&dir.join("missing")).is_err());
    assert!(PasswordFile::load(&dir).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- auth cache ----

#[test]
fn cache_hit_miss_and_keys() {
    let c = AuthCache::new(100, 1000, 100);
    assert_eq!(c.check(b"u", b"p", 1, 0), None);
    c.remember(b"u", b"p", 1, true, 0);
    assert_eq!(c.check(b"u", b"p", 1, 10), Some(true));
    assert_eq!(c.check(b"u", b"q", 1, 10), None, "other password");
    assert_eq!(c.check(b"v", b"p", 1, 10), None, "other user");
    assert_eq!(c.check(b"u", b"p", 2, 10), None, "hash changed");
    assert_eq!(c.check(b"up", b"", 1, 10), None, "split moved");
    c.remember(b"u", b"bad", 1, false, 0);
    assert_eq!(c.check(b"u", b"bad", 1, 50), Some(false));
    assert_eq!(c.len(), 2);
}

#[test]
fn cache_expiry_per_outcome() {
    let c = AuthCache::new(10, 1000, 100);
    c.remember(b"u", b"ok", 1, true, 0);
    c.remember(b"u", b"no", 1, false, 0);
    assert_eq!(c.check(b"u", b"no", 1, 99), Some(false));
    assert_eq!(c.check(b"u", b"no", 1, 100), None);
    assert_eq!(c.check(b"u", b"ok", 1, 999), Some(true));
    assert_eq!(c.check(b"u", b"ok", 1, 1000), None);
    assert!(c.is_empty(), "expired entries are dropped when found");
    // TTL 0: not cached.
    let c = AuthCache::new(10, 0, 0);
    c.remember(b"u", b"ok", 1, true, 0);
    c.remember(b"u", b"no", 1, false, 0);
    assert_eq!(c.len(), 0);
}

#[test]
fn cache_is_bounded_fifo() {
    for cap in [1usize, 5, 63, 64, 200] {
        let c = AuthCache::new(cap, 1_000_000, 1_000_000);
        for i in 0..(cap * 5) as u32 {
            c.remember(&i.to_le_bytes(), b"pw", 7, true, 0);
            assert!(c.len() <= cap, "cap {cap}: {}", c.len());
        }
        assert_eq!(c.len(), cap, "cap {cap}");
        assert_eq!(c.check(&0u32.to_le_bytes(), b"pw", 7, 1), None, "cap {cap}: the oldest went first");
        // The newest entry is still there.
        let last = (cap * 5 - 1) as u32;
        assert_eq!(c.check(&last.to_le_bytes(), b"pw", 7, 1), Some(true));
    }
    // Single shard: strict FIFO, refreshing does not move an entry.
    let c = AuthCache::new(2, 1000, 1000);
    c.remember(b"a", b"", 0, true, 0);
    c.remember(b"b", b"", 0, true, 0);
    c.remember(b"a", b"", 0, true, 1);
    c.remember(b"c", b"", 0, true, 2);
    assert_eq!(c.check(b"a", b"", 0, 3), None);
    assert_eq!(c.check(b"b", b"", 0, 3), Some(true));
    assert_eq!(c.check(b"c", b"", 0, 3), Some(true));
}

#[test]
fn cache_order_queue_stays_bounded_under_churn() {
    let c = AuthCache::new(4, 10, 10);
    for i in 0..10_000u32 {
        c.remember(&i.to_le_bytes(), b"pw", 0, true, u64::from(i) * 20);
        // Everything older has expired and gets removed on lookup.
        let _ = c.check(&i.saturating_sub(1).to_le_bytes(), b"pw", 0, u64::from(i) * 20);
    }
    let s = c.inner.shards[0].lock();
    assert!(s.order.len() <= 2 * s.map.len() + 17, "{}", s.order.len());
}

#[test]
fn cache_disabled_and_clear() {
    let c = AuthCache::new(0, 1000, 1000);
    c.remember(b"u", b"p", 1, true, 0);
    assert_eq!(c.check(b"u", b"p", 1, 0), None);
    assert_eq!(c.len(), 0);

    let c = AuthCache::new(8, 1000, 1000);
    c.remember(b"u", b"p", 1, true, 0);
    assert_eq!(c.check(b"u", b"p", 1, 0), Some(true));
    c.clear();
    assert_eq!(c.check(b"u", b"p", 1, 0), None);
    assert_eq!(c.capacity(), 8);
}

#[test]
fn cache_keys_are_per_instance_and_hold_no_plaintext() {
    let a = AuthCache::new(4, 1000, 1000);
    let b = AuthCache::new(4, 1000, 1000);
    assert_ne!(a.key_of(b"u", b"p", 1), b.key_of(b"u", b"p", 1));
    a.remember(b"user", b"hunter2hunter2", 1, true, 0);
    let s = a.inner.shards[0].lock();
    for k in s.map.keys() {
        assert!(!k.windows(4).any(|w| w == b"hunt" || w == b"user"));
    }
}

#[test]
fn cache_is_thread_safe() {
    let c = std::sync::Arc::new(AuthCache::new(256, 1_000_000, 1_000_000));
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let u = (t * 10_000 + i).to_le_bytes();
                    c.remember(&u, b"p", 0, i % 2 == 0, 0);
                    let _ = c.check(&u, b"p", 0, 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(c.len() <= 256 + 64, "verified and rejected rooms");
    assert!(c.failed_len() <= 64);
}

#[test]
fn errors_and_warnings_never_quote_a_hash() {
    let h6 = "$6$cGVwcGVy$H1BWhsn3DSWAHCREmwzY/pv3FJJFqMvT/fuMwGtRGHNDtgPk/kZt7LHGZUiqhWUOpI6hKhgL4WbzbiG4pirpyA==";
    // A password line with the hash where the user goes.
    let f = PasswordFile::parse(&format!("{h6}:\nalice:{h6}\n"), "passwd");
    for w in f.warnings() {
        let text = w.to_string();
        assert!(!text.contains("H1BWhsn3"), "{text}");
    }
    assert!(!f.warnings().is_empty());
    // A hash as a group name, and in a key of the wrong type.
    for toml in [
        format!("[users.alice]\ngroups = [\"{h6}\"]\n"),
        format!("[users.alice]\ngroups = \"{h6}\"\n"),
        format!("[username]\nmax_length = \"{h6}\"\n"),
    ] {
        let e = crate::policy::Policy::parse(&toml, "p.toml").unwrap_err().to_string();
        assert!(!e.contains("H1BWhsn3") && !e.contains("cGVwcGVy"), "{e}");
        assert!(e.starts_with("p.toml:"), "{e}");
    }
    assert_eq!(redact_hashes("bad \"$2b$10$abc\" and PBKDF2$sha256$1$x$y, ok"), "bad \"<hash>\" and <hash>, ok");
}

#[test]
fn a_storm_of_failures_never_evicts_a_verified_login() {
    // 10,000 wrong logins used to push alice's cached bcrypt login out of a
    // 10,000-entry cache in 90 ms.
    let c = AuthCache::new(1000, 60_000, 5_000);
    c.remember(b"alice", b"right", 9, true, 0);
    for i in 0..10_000u32 {
        c.remember(b"mallory", &i.to_le_bytes(), 9, false, 1);
    }
    assert_eq!(c.check(b"alice", b"right", 9, 2), Some(true));
    assert_eq!(c.failed_len(), 250, "failures stay in their quarter");
    assert_eq!(c.check(b"mallory", &9_999u32.to_le_bytes(), 9, 2), Some(false));
    assert!(c.len() <= 1000 + 250);
}
