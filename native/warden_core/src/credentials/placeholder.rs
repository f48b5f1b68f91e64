// placeholder: replaced by the credentials branch
//
// Minimal stand-ins for `PasswordHash::fingerprint` and `AuthCache` with the
// signatures the credentials branch provides, so the firewall compiles on its
// own branch. Delete this file (and its two lines in mod.rs) on merge.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;
use sha2::{Digest, Sha512};

use super::PasswordHash;
use crate::types::Millis;

impl PasswordHash {
    // placeholder: replaced by the credentials branch
    pub fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match self {
            PasswordHash::Sha512Salted { salt, hash } => {
                salt.hash(&mut h);
                hash.hash(&mut h);
            }
        }
        h.finish()
    }
}

// placeholder: replaced by the credentials branch
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
}

// placeholder: replaced by the credentials branch
pub struct AuthCache {
    capacity: usize,
    ok_ttl_ms: u64,
    fail_ttl_ms: u64,
    map: Mutex<HashMap<[u8; 32], (bool, Millis)>>,
}

impl AuthCache {
    pub fn new(capacity: usize, ok_ttl_ms: u64, fail_ttl_ms: u64) -> AuthCache {
        AuthCache { capacity, ok_ttl_ms, fail_ttl_ms, map: Mutex::new(HashMap::new()) }
    }

    fn key(user: &[u8], password: &[u8], fingerprint: u64) -> [u8; 32] {
        let mut h = Sha512::new();
        h.update((user.len() as u64).to_le_bytes());
        h.update(user);
        h.update(fingerprint.to_le_bytes());
        h.update(password);
        let mut k = [0u8; 32];
        k.copy_from_slice(&h.finalize()[..32]);
        k
    }

    pub fn check(&self, user: &[u8], password: &[u8], fingerprint: u64, now: Millis) -> Option<bool> {
        if self.capacity == 0 {
            return None;
        }
        let k = Self::key(user, password, fingerprint);
        let map = self.map.lock();
        map.get(&k).filter(|(_, exp)| *exp > now).map(|(ok, _)| *ok)
    }

    pub fn remember(&self, user: &[u8], password: &[u8], fingerprint: u64, ok: bool, now: Millis) {
        if self.capacity == 0 {
            return;
        }
        let ttl = if ok { self.ok_ttl_ms } else { self.fail_ttl_ms };
        let mut map = self.map.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(Self::key(user, password, fingerprint), (ok, now.saturating_add(ttl)));
    }

    pub fn clear(&self) {
        self.map.lock().clear();
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.map.lock().len() }
    }
}
