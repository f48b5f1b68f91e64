//! Cache of recent password verifications, so a client that reconnects
//! often does not pay an argon2/bcrypt check every time.
//!
//! - Keys are HMAC-SHA256, under a random per-cache key, of (user, password,
//!   hash fingerprint): the cache holds no password and no plain hash of one,
//!   and a changed stored hash (new fingerprint) never hits old entries.
//! - Bounded: at most `capacity` verified entries (0 disables the cache), and
//!   rejected ones in a room of their own of a quarter of that (at least
//!   one), so a storm of wrong passwords never evicts a verified login; when
//!   a shard is full its oldest insertion is evicted (FIFO), O(1) per
//!   operation.
//! - Entries expire `ok_ttl_ms` (verified) or `fail_ttl_ms` (rejected) after
//!   insertion; a TTL of 0 means such results are not cached. A cache's
//!   size and TTLs are fixed: the firewall replaces the whole cache when
//!   they change.
//! - Thread-safe through `&self`: sharded `parking_lot` mutexes, and nothing
//!   else that a lookup writes, so that schedulers checking logins at once
//!   do not pass a cache line around. (Hits and misses are the firewall's
//!   counters.)

use std::collections::{HashMap, VecDeque};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use crate::types::Millis;

/// Shards for caches of at least this capacity; smaller caches use one.
const SHARDS: usize = 16;
const SHARDED_FROM: usize = 64;

pub(super) type Key = [u8; 16];

pub(super) struct Entry {
    ok: bool,
    inserted: Millis,
    seq: u64,
}

#[derive(Default)]
pub(super) struct Shard {
    capacity: usize,
    pub(super) map: HashMap<Key, Entry, ahash::RandomState>,
    /// Insertion order; a (key, seq) pair is live only while the map holds
    /// that key with that seq.
    pub(super) order: VecDeque<(Key, u64)>,
    next_seq: u64,
}

impl Shard {
    fn with_capacity(capacity: usize) -> Shard {
        Shard { capacity, ..Shard::default() }
    }

    /// Evicts the oldest live entry; returns whether one was evicted.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                self.map.remove(&key);
                return true;
            }
        }
        false
    }

    /// Drops stale order entries once they outnumber live ones (amortised O(1)).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order.retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

pub(super) struct Inner {
    capacity: usize,
    pub(super) shards: Vec<Mutex<Shard>>,
}

impl Inner {
    fn new(capacity: usize) -> Inner {
        let n = if capacity == 0 {
            0
        } else if capacity < SHARDED_FROM {
            1
        } else {
            SHARDS
        };
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::with_capacity(capacity / n + usize::from(i < capacity % n))))
            .collect();
        Inner { capacity, shards }
    }
}

pub struct AuthCache {
    /// HMAC-SHA256 already keyed with this cache's random key: each lookup
    /// clones it instead of keying a new one (two SHA-256 blocks less).
    mac: Hmac<Sha256>,
    /// Verified results.
    pub(super) inner: Inner,
    /// Rejected results, apart (see the module doc).
    pub(super) failed: Inner,
    ok_ttl: Millis,
    fail_ttl: Millis,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl AuthCache {
    pub fn new(capacity: usize, ok_ttl_ms: Millis, fail_ttl_ms: Millis) -> AuthCache {
        AuthCache {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&super::random_key()).expect("HMAC takes any key length"),
            inner: Inner::new(capacity),
            failed: Inner::new(failure_room(capacity)),
            ok_ttl: ok_ttl_ms,
            fail_ttl: fail_ttl_ms,
        }
    }

    pub(super) fn key_of(&self, user: &[u8], password: &[u8], fingerprint: u64) -> Key {
        let mut mac = self.mac.clone();
        // Length prefixes keep (user, password) splits apart.
        mac.update(&(user.len() as u64).to_le_bytes());
        mac.update(user);
        mac.update(&(password.len() as u64).to_le_bytes());
        mac.update(password);
        mac.update(&fingerprint.to_le_bytes());
        let out = mac.finalize().into_bytes();
        let mut k = [0u8; 16];
        k.copy_from_slice(&out[..16]);
        k
    }

    fn shard_index(key: &Key, shards: usize) -> usize {
        // The key is already uniformly random.
        (u64::from_le_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]) % shards as u64)
            as usize
    }

    fn ttl(&self, ok: bool) -> Millis {
        if ok {
            self.ok_ttl
        } else {
            self.fail_ttl
        }
    }

    fn room(&self, ok: bool) -> &Inner {
        if ok {
            &self.inner
        } else {
            &self.failed
        }
    }

    /// The cached result of verifying `password` for `user` against the hash
    /// with `fingerprint`, if one is cached and fresh at `now`. A disabled
    /// cache answers `None`.
    pub fn check(&self, user: &[u8], password: &[u8], fingerprint: u64, now: Millis) -> Option<bool> {
        if self.inner.shards.is_empty() {
            return None;
        }
        let key = self.key_of(user, password, fingerprint);
        let found = [true, false].into_iter().find_map(|ok| self.check_room(ok, &key, now));
        found.flatten()
    }

    /// `None` if the room has no entry for `key`; `Some(None)` if it had an
    /// expired one (dropped).
    fn check_room(&self, ok: bool, key: &Key, now: Millis) -> Option<Option<bool>> {
        let inner = self.room(ok);
        if inner.shards.is_empty() {
            return None;
        }
        let mut shard = inner.shards[Self::shard_index(key, inner.shards.len())].lock();
        let inserted = shard.map.get(key)?.inserted;
        if now.saturating_sub(inserted) < self.ttl(ok) {
            return Some(Some(ok));
        }
        shard.map.remove(key);
        shard.compact();
        Some(None)
    }

    /// Records the result of a verification made at `now`, in its room (and
    /// out of the other one).
    pub fn remember(&self, user: &[u8], password: &[u8], fingerprint: u64, ok: bool, now: Millis) {
        if self.ttl(ok) == 0 {
            return;
        }
        if self.inner.shards.is_empty() {
            return;
        }
        let key = self.key_of(user, password, fingerprint);
        {
            let other = self.room(!ok);
            if !other.shards.is_empty() {
                other.shards[Self::shard_index(&key, other.shards.len())].lock().map.remove(&key);
            }
        }
        let inner = self.room(ok);
        let mut shard = inner.shards[Self::shard_index(&key, inner.shards.len())].lock();
        if shard.capacity == 0 {
            return;
        }
        if let Some(e) = shard.map.get_mut(&key) {
            // Refresh in place; keeps its place in the eviction order.
            e.ok = ok;
            e.inserted = now;
            return;
        }
        while shard.map.len() >= shard.capacity {
            if !shard.evict_oldest() {
                break;
            }
        }
        let seq = shard.next_seq;
        shard.next_seq += 1;
        shard.map.insert(key, Entry { ok, inserted: now, seq });
        shard.order.push_back((key, seq));
        shard.compact();
    }

    /// Drops every entry (e.g. after the password file changed wholesale).
    pub fn clear(&self) {
        for room in [&self.inner, &self.failed] {
            for s in &room.shards {
                let mut s = s.lock();
                s.map.clear();
                s.order.clear();
            }
        }
    }

    /// Entries held, fresh or not yet found expired.
    pub fn len(&self) -> usize {
        [&self.inner, &self.failed].iter().map(|room| room.shards.iter().map(|s| s.lock().map.len()).sum::<usize>()).sum()
    }

    /// Rejected entries held.
    pub fn failed_len(&self) -> usize {
        self.failed.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }
}

/// The room of rejected results: a quarter of the verified ones' (at least
/// one entry while the cache is on).
fn failure_room(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        (capacity / 4).max(1)
    }
}
