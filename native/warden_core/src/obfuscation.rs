//! VerneMQ 2.x passwords as they arrive in auth_on_register: `{encrypted, B}`
//! from the `credentials_obfuscation` library (docs/VERNEMQ.md, "Encrypted
//! passwords"). The library decrypts through one server process per node
//! (a call per password, about 16 µs on a loaded node); with the same
//! secret and settings the plugin decrypts here instead, inside the auth
//! call, and the clear password never becomes an Erlang term. When this
//! fails (another secret, the fallback secret, settings not supported
//! here) the caller falls back to the library's own `decrypt/1`.
//!
//! B is base64 of `Salt:16 | IV | ciphertext`; the key is PBKDF2-HMAC of
//! the node secret with that salt; the cipher is a CBC block cipher with
//! PKCS#7 padding; the clear text is the external term format of
//! `{credentials_obfuscation, Password}` with `Password` a binary.

use aes::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

/// The ciphers of `credentials_obfuscation` decrypted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
}

impl Cipher {
    pub fn from_name(name: &str) -> Option<Cipher> {
        match name {
            "aes_128_cbc" => Some(Cipher::Aes128Cbc),
            "aes_192_cbc" => Some(Cipher::Aes192Cbc),
            "aes_256_cbc" => Some(Cipher::Aes256Cbc),
            _ => None,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Cbc => 16,
            Cipher::Aes192Cbc => 24,
            Cipher::Aes256Cbc => 32,
        }
    }
}

/// The hashes of the key derivation decrypted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KdfHash {
    Sha256,
    Sha384,
    Sha512,
}

impl KdfHash {
    pub fn from_name(name: &str) -> Option<KdfHash> {
        match name {
            "sha256" => Some(KdfHash::Sha256),
            "sha384" => Some(KdfHash::Sha384),
            "sha512" => Some(KdfHash::Sha512),
            _ => None,
        }
    }
}

/// Longest encrypted password accepted (base64 text): an MQTT password is
/// at most 65,535 bytes, whose `{encrypted, B}` is 87,488 bytes with the
/// library's defaults (16 bytes of salt and of IV, padding, the term tag).
pub const MAX_ENCRYPTED: usize = 90_000;
/// Iterations above this are left to the library (they would make this
/// call costly on a normal scheduler; its default is 1).
pub const MAX_ITERATIONS: u32 = 16;

/// A node's obfuscation settings.
pub struct Obfuscation {
    cipher: Cipher,
    iterations: u32,
    /// HMAC keyed with the secret once, cloned per PBKDF2 step: keying it
    /// again on every password was half of the key derivation's work.
    keyed: KeyedHmac,
}

/// The secret's HMAC state (its hashed pads) for the KDF's hash: in the
/// library's memory only, never in an Erlang term; dropped with the
/// settings.
#[derive(Clone)]
enum KeyedHmac {
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

/// PBKDF2 of one output block (every key here is at most 32 bytes, every
/// hash's block at least 32): T = U1 ^ ... ^ Uc, U1 = HMAC(salt || 1).
fn pbkdf2_block<M: Mac + Clone>(keyed: &M, salt: &[u8], iterations: u32, out: &mut [u8]) {
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = mac.finalize().into_bytes();
    out.copy_from_slice(&u[..out.len()]);
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes();
        out.iter_mut().zip(u.iter()).for_each(|(a, b)| *a ^= b);
    }
}

impl std::fmt::Debug for Obfuscation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obfuscation")
            .field("cipher", &self.cipher)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Obfuscation {
    /// `None` for settings decrypted only by the library.
    pub fn new(cipher: Cipher, hash: KdfHash, iterations: u32, secret: &[u8]) -> Option<Obfuscation> {
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return None;
        }
        let keyed = match hash {
            KdfHash::Sha256 => KeyedHmac::Sha256(Hmac::new_from_slice(secret).ok()?),
            KdfHash::Sha384 => KeyedHmac::Sha384(Hmac::new_from_slice(secret).ok()?),
            KdfHash::Sha512 => KeyedHmac::Sha512(Hmac::new_from_slice(secret).ok()?),
        };
        Some(Obfuscation { cipher, iterations, keyed })
    }

    /// The password inside `encrypted` (the base64 text of `{encrypted, B}`),
    /// or `None` when it does not decrypt to one with these settings.
    ///
    /// One buffer from base64 to password: decoded, decrypted and trimmed
    /// in place, in `buf`. This runs in every connect's auth with the CPU
    /// caches emptied by the broker's work, where each allocation and each
    /// routine costs cache misses (docs/BENCHMARKS.md, "Cache lines per
    /// hook").
    pub fn decrypt<'b>(&self, encrypted: &[u8], buf: &'b mut DecryptBuffer) -> Option<&'b [u8]> {
        if encrypted.len() > MAX_ENCRYPTED {
            return None;
        }
        let buf = buf.take(decoded_len(encrypted)?);
        decode_base64(encrypted, buf)?;
        let (salt, rest) = buf.split_at_mut_checked(16)?;
        let (iv, ciphertext) = rest.split_at_mut_checked(16)?;
        let ciphertext_at = ciphertext.as_ptr() as usize;
        let mut key = Zeroizing::new([0u8; 32]);
        let key = &mut key[..self.cipher.key_len()];
        match &self.keyed {
            KeyedHmac::Sha256(m) => pbkdf2_block(m, salt, self.iterations, key),
            KeyedHmac::Sha384(m) => pbkdf2_block(m, salt, self.iterations, key),
            KeyedHmac::Sha512(m) => pbkdf2_block(m, salt, self.iterations, key),
        }
        let clear = match self.cipher {
            Cipher::Aes128Cbc => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv).ok()?.decrypt_padded::<Pkcs7>(ciphertext),
            Cipher::Aes192Cbc => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv).ok()?.decrypt_padded::<Pkcs7>(ciphertext),
            Cipher::Aes256Cbc => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv).ok()?.decrypt_padded::<Pkcs7>(ciphertext),
        }
        .ok()?;
        let password = tagged_password(clear)?;
        // The password moves to the front of `buf` (the ciphertext follows
        // the 32 bytes of salt and IV), and the rest is wiped.
        let (at, len) = (32 + password.as_ptr() as usize - ciphertext_at, password.len());
        buf.copy_within(at..at + len, 0);
        buf[len..].fill(0);
        Some(&buf[..len])
    }
}

/// Decoded bytes a [`DecryptBuffer`] holds on the stack: the `{encrypted,
/// _}` of a password up to about 170 bytes with the library's defaults.
const ON_STACK: usize = 256;

/// Where one decrypt works, and where its password stays while it is
/// checked: on the stack for the passwords clients send, on the heap past
/// that (an allocation fewer in every connect with an `{encrypted, _}`
/// password, which is every VerneMQ 2.x connect with one). Wiped when
/// dropped.
pub struct DecryptBuffer {
    stack: Zeroizing<[u8; ON_STACK]>,
    heap: Zeroizing<Vec<u8>>,
}

impl DecryptBuffer {
    pub fn new() -> DecryptBuffer {
        DecryptBuffer { stack: Zeroizing::new([0; ON_STACK]), heap: Zeroizing::new(Vec::new()) }
    }

    /// `n` bytes to write to (the decoder writes every one of them).
    fn take(&mut self, n: usize) -> &mut [u8] {
        if n <= ON_STACK {
            &mut self.stack[..n]
        } else {
            // A new block, the old one wiped as it drops: growing the old
            // one could leave its bytes in memory given back to malloc.
            self.heap = Zeroizing::new(vec![0; n]);
            &mut self.heap[..]
        }
    }
}

impl Default for DecryptBuffer {
    fn default() -> Self {
        DecryptBuffer::new()
    }
}

/// Each byte's base64 value, or `INVALID`.
const INVALID: u8 = 0xFF;
const SEXTETS: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Standard base64 with padding, as the library writes it: the length it
/// decodes to, `None` if it is not a whole number of quads.
fn decoded_len(text: &[u8]) -> Option<usize> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    Some(text.len() / 4 * 3 - padding(text))
}

fn padding(text: &[u8]) -> usize {
    text.iter().rev().take(2).take_while(|&&c| c == b'=').count()
}

/// Decodes `text` into `out` (of [`decoded_len`]); `None` for anything but
/// what the library writes. Small on purpose: the base64 crate's general
/// engine is several times this code, all of it cold in a connect.
fn decode_base64(text: &[u8], out: &mut [u8]) -> Option<()> {
    let quads = text.chunks_exact(4);
    let (count, pad) = (quads.len(), padding(text));
    let mut at = 0;
    for (i, quad) in quads.enumerate() {
        let kept = if i + 1 == count { 4 - pad } else { 4 };
        let mut n = 0u32;
        let mut bad = 0u8;
        for &c in &quad[..kept] {
            let v = SEXTETS[usize::from(c)];
            bad |= v;
            n = n << 6 | u32::from(v & 63);
        }
        if bad == INVALID {
            return None;
        }
        n <<= 6 * (4 - kept) as u32;
        let bytes = n.to_be_bytes();
        let produced = kept.saturating_sub(1);
        // Non-zero bits after the last byte: not what the library writes.
        if bytes[1 + produced..].iter().any(|&b| b != 0) {
            return None;
        }
        out.get_mut(at..at + produced)?.copy_from_slice(&bytes[1..1 + produced]);
        at += produced;
    }
    Some(())
}

const TAG: &[u8] = b"credentials_obfuscation";

/// The binary of `term_to_binary({credentials_obfuscation, Password})`.
fn tagged_password(ext: &[u8]) -> Option<&[u8]> {
    // version 131, SMALL_TUPLE_EXT of arity 2
    let rest = ext.strip_prefix(&[131, 104, 2])?;
    // the atom, in any of the four atom encodings
    let (name, rest) = match *rest.first()? {
        100 | 118 => {
            let n = usize::from(u16::from_be_bytes([*rest.get(1)?, *rest.get(2)?]));
            (rest.get(3..3 + n)?, rest.get(3 + n..)?)
        }
        115 | 119 => {
            let n = usize::from(*rest.get(1)?);
            (rest.get(2..2 + n)?, rest.get(2 + n..)?)
        }
        _ => return None,
    };
    if name != TAG {
        return None;
    }
    // BINARY_EXT, and nothing after it
    let rest = rest.strip_prefix(&[109])?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let password = rest.get(4..)?;
    (password.len() == len).then_some(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"vmq-node-secret-0123456789abcdef";

    // Made with credentials_obfuscation 3.4.0 (the version VerneMQ 2.0.1
    // ships): encrypt_term(Cipher, Hash, Iterations, SECRET,
    // {credentials_obfuscation, Password}), as its server encrypts.
    const VECTORS: [(&str, &str, u32, &[u8], &str); 4] = [
        ("aes_128_cbc", "sha256", 1, b"s3cret!", "KIoUIOU7FtPqWa4UWfbz5ZD91B2UbRwwJA6D/E9PHgeodFdyWgha/Y2/s6lZS5K37r9gl81NFchvYjYcS53KgVsl4HgJjVEJAGDZaVRIv/o="),
        ("aes_128_cbc", "sha256", 1, b"", "NLagHFdIcSpMm1l92mR5BYOd4LLk356A28EJhxsVBbYWsv4C38XS/fcYXksXMxTyfapqTKEqcCPhNNQDMlmuejNqrvO/jGbF3cIbNiziZEM="),
        ("aes_256_cbc", "sha512", 3, b"a longer password, 32 bytes long", "cNQmQjBXZY61ZpxxKEGXLr8oddkP9ySJyRfQW1xRXKYJsaKfim+XFpIGee4d+f00Goy3pjPWddBqAg7n5u47mD/FDYcSx+z7wKEJrfY4B65TZCpR1YrLOQhCkIwZSQrR7/DNTQKLjeFhLUviFqCKIA=="),
        ("aes_192_cbc", "sha384", 2, &[0, 1, 2, 255], "1rKbFDtQ1W9UiusQcomJGazJbzVjuknFTq10l3uOgk/wTeTB8SxKJp/36Oy7D3mAikl7i1qQhkGDJyQvGzPwZfask5yH9urW813pfbcU63Q="),
    ];

    fn obf(cipher: &str, hash: &str, iterations: u32, secret: &[u8]) -> Obfuscation {
        Obfuscation::new(Cipher::from_name(cipher).unwrap(), KdfHash::from_name(hash).unwrap(), iterations, secret).unwrap()
    }

    #[test]
    fn decrypts_what_the_library_encrypted() {
        for (cipher, hash, iterations, password, b64) in VECTORS {
            let o = obf(cipher, hash, iterations, SECRET);
            assert_eq!(o.decrypt(b64.as_bytes(), &mut DecryptBuffer::new()), Some(password), "{cipher} {hash}");
        }
    }

    /// `{encrypted, B}` as the library makes it, with the salt and IV given.
    fn encrypt(o: &Obfuscation, salt: [u8; 16], iv: [u8; 16], password: &[u8]) -> String {
        use aes::cipher::BlockModeEncrypt;
        use base64::Engine;
        let mut key = [0u8; 16];
        match &o.keyed {
            KeyedHmac::Sha256(m) => pbkdf2_block(m, &salt, o.iterations, &mut key),
            _ => unreachable!("aes_128_cbc with sha256 only"),
        }
        let mut term = vec![131, 104, 2, 100, 0, TAG.len() as u8];
        term.extend_from_slice(TAG);
        term.push(109);
        term.extend_from_slice(&(password.len() as u32).to_be_bytes());
        term.extend_from_slice(password);
        let len = term.len();
        term.resize(len + 16, 0);
        let ciphertext = cbc::Encryptor::<aes::Aes128>::new_from_slices(&key, &iv).unwrap().encrypt_padded::<Pkcs7>(&mut term, len).unwrap();
        let whole = [&salt[..], &iv[..], ciphertext].concat();
        base64::engine::general_purpose::STANDARD.encode(whole)
    }

    /// Passwords of every length up to past the buffer's stack part decrypt
    /// alike, and one buffer serves several decrypts; the test's own
    /// encryption is checked against the library's first.
    #[test]
    fn short_and_long_passwords_decrypt_alike() {
        use base64::Engine;
        let (cipher, hash, iterations, password, b64) = VECTORS[0];
        let o = obf(cipher, hash, iterations, SECRET);
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let (salt, iv) = (raw[..16].try_into().unwrap(), raw[16..32].try_into().unwrap());
        assert_eq!(encrypt(&o, salt, iv, password), b64);
        let mut buf = DecryptBuffer::new();
        for n in (0..300).chain([1000, 65_535]) {
            let password: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let text = encrypt(&o, salt, iv, &password);
            assert_eq!(o.decrypt(text.as_bytes(), &mut buf), Some(&password[..]), "length {n}");
            assert_eq!(o.decrypt(text.as_bytes(), &mut DecryptBuffer::new()), Some(&password[..]), "length {n}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_library() {
        let (cipher, hash, iterations, _, b64) = VECTORS[0];
        // another secret (the library's fallback secret, or a changed one)
        let buf = &mut DecryptBuffer::new();
        assert!(obf(cipher, hash, iterations, b"another secret").decrypt(b64.as_bytes(), buf).is_none());
        // other settings
        assert!(obf(cipher, "sha512", iterations, SECRET).decrypt(b64.as_bytes(), buf).is_none());
        assert!(obf(cipher, hash, 2, SECRET).decrypt(b64.as_bytes(), buf).is_none());
        // garbage, truncation, too long
        let o = obf(cipher, hash, iterations, SECRET);
        for bad in [&b""[..], b"!!!", b"AAAA", &b64.as_bytes()[..40], &vec![b'A'; MAX_ENCRYPTED + 4][..]] {
            assert!(o.decrypt(bad, buf).is_none());
        }
        assert!(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, MAX_ITERATIONS + 1, SECRET).is_none());
        assert!(Cipher::from_name("aes_128_gcm").is_none() && KdfHash::from_name("sha").is_none());
    }

    /// The small decoder answers as the base64 crate's strict standard
    /// engine: on every encoding, and on text with bad characters, bad
    /// lengths, misplaced padding or bits left after the last byte.
    #[test]
    fn base64_decoder_agrees_with_the_crate() {
        use base64::Engine;
        let decode_base64 = |text: &[u8]| {
            let mut out = vec![0; decoded_len(text)?];
            decode_base64(text, &mut out).map(|()| out)
        };
        let engine = base64::engine::general_purpose::STANDARD;
        let mut rnd = crate::testing::below(0x853c_49e6_748f_ea9bu64);
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..rnd(40)).map(|_| rnd(256) as u8).collect();
            assert_eq!(decode_base64(engine.encode(&bytes).as_bytes()), Some(bytes));
        }
        let alphabet = b"AQgwBz09+/=-_ \n";
        for _ in 0..200_000 {
            let text: Vec<u8> = (0..rnd(13)).map(|_| alphabet[rnd(alphabet.len() as u64) as usize]).collect();
            assert_eq!(decode_base64(&text), engine.decode(&text).ok(), "{:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn only_the_tagged_binary_is_a_password() {
        // {credentials_obfuscation, <<"pw">>} with ATOM_EXT and SMALL_ATOM_UTF8_EXT
        let mut atom_ext = vec![131, 104, 2, 100, 0, TAG.len() as u8];
        atom_ext.extend_from_slice(TAG);
        atom_ext.extend_from_slice(&[109, 0, 0, 0, 2, b'p', b'w']);
        assert_eq!(tagged_password(&atom_ext), Some(&b"pw"[..]));
        let mut small = vec![131, 104, 2, 119, TAG.len() as u8];
        small.extend_from_slice(TAG);
        small.extend_from_slice(&[109, 0, 0, 0, 2, b'p', b'w']);
        assert_eq!(tagged_password(&small), Some(&b"pw"[..]));
        // a length that does not fit, another tag, trailing bytes
        let mut bad = atom_ext.clone();
        let at = bad.len() - 3;
        bad[at] = 9;
        assert_eq!(tagged_password(&bad), None);
        let mut other = atom_ext.clone();
        other[6] = b'x';
        assert_eq!(tagged_password(&other), None);
        let mut trailing = atom_ext;
        trailing.push(0);
        assert_eq!(tagged_password(&trailing), None);
    }
}
