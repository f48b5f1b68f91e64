//! Connection-rate limits (token buckets) and failed-login bans.
//!
//! Every table is keyed either by peer address or by username, bounded by a
//! maximum entry count *and* in bytes, and driven by an injected clock
//! (`now: Millis`): no function here reads the system time.
//!
//! Peer addresses are normalised by [`peer_key`]: an IPv4 address (or an
//! IPv4-mapped IPv6 address) counts as itself, any other IPv6 address counts
//! as its /64 network, since one IPv6 host usually owns a whole /64.
//!
//! Keys are never stored: an entry holds a 128-bit keyed hash of its key
//! (two SipHash-1-3 under random per-process keys, so nobody outside can
//! choose colliding keys), so every entry has the same small size whatever
//! the key (a username may have 65535 bytes). Only a running ban keeps a copy
//! of its key for the operator's list, cut at [`SHOWN_KEY_BYTES`].
//!
//! Bounds: a table is split in up to 16 shards (by hash), each with its own
//! lock and `max / shards` entries. An entry lives in a dense slot array,
//! found through an index of hashes. Before a new key goes into a full
//! shard, a clock hand looks at the next [`EVICTION_SCAN`] slots: the idle
//! ones among them (a bucket that has refilled completely; a failure counter
//! whose window has passed and that holds no active ban) are dropped, or if
//! none is idle the lowest ranked one (least recently seen; active bans
//! last). That is O(1) per insert, never a pass over the table, and a table
//! never holds more than its `max` entries (`max(max, shards)` for tiny
//! bounds). [`RateLimiter::sweep`] / [`BanTable::sweep`] drop every idle
//! entry and give memory back.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use once_cell::sync::Lazy;
use parking_lot::Mutex;

use crate::types::Millis;

/// The key under which a peer address is rate-limited and banned.
pub fn peer_key(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, 32).expect("/32 is valid")),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(v6, 64).expect("/64 is valid").trunc()),
    }
}

/// Slots a clock hand looks at to make room for one new entry.
pub const EVICTION_SCAN: usize = 16;
/// Longest copy of a banned key kept for [`BanTable::list`], in bytes.
pub const SHOWN_KEY_BYTES: usize = 64;
/// Most shards of a table.
const MAX_SHARDS: usize = 16;
/// Fewest entries per shard (below this, fewer shards).
const MIN_SHARD_ENTRIES: usize = 1024;

/// The per-process keys of the table fingerprints.
static FP_KEYS: Lazy<(RandomState, RandomState)> = Lazy::new(|| (RandomState::new(), RandomState::new()));

/// 128-bit keyed fingerprint of a key (two words: 8-byte alignment keeps
/// the index entries at 24 bytes).
type Fp = (u64, u64);

fn fingerprint<K: Hash + ?Sized>(key: &K) -> Fp {
    let (a, b) = &*FP_KEYS;
    (a.hash_one(key), b.hash_one(key))
}

/// The index hashes fingerprints, which are random already: their low bits.
#[derive(Default)]
struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type Index = HashMap<Fp, u32, BuildHasherDefault<FpHasher>>;

struct Slot<V> {
    fp: Fp,
    v: V,
}

/// One shard: entries in a dense array, found by fingerprint.
struct Shard<V> {
    index: Index,
    slots: Vec<Slot<V>>,
    hand: usize,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard { index: Index::default(), slots: Vec::new(), hand: 0 }
    }
}

impl<V> Shard<V> {
    fn get(&self, fp: Fp) -> Option<&V> {
        self.index.get(&fp).map(|i| &self.slots[*i as usize].v)
    }

    fn get_mut(&mut self, fp: Fp) -> Option<&mut V> {
        let i = *self.index.get(&fp)? as usize;
        Some(&mut self.slots[i].v)
    }

    fn remove(&mut self, fp: Fp) -> Option<V> {
        let i = self.index.remove(&fp)? as usize;
        let slot = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.fp, i as u32);
        }
        Some(slot.v)
    }

    /// Inserts a key known to be absent; the caller made room.
    fn insert(&mut self, fp: Fp, v: V, cap: usize) {
        if self.slots.len() == self.slots.capacity() {
            // Grow by doubling, but never past the shard's bound.
            let extra = self.slots.len().max(4).min(cap.saturating_sub(self.slots.len())).max(1);
            self.slots.reserve_exact(extra);
        }
        self.index.insert(fp, self.slots.len() as u32);
        self.slots.push(Slot { fp, v });
    }

    /// Makes room for one new entry (afterwards `len < cap`): the clock hand
    /// looks at the next `EVICTION_SCAN` slots and drops the idle ones, or
    /// the lowest ranked if none is idle.
    fn make_room<R: Ord>(&mut self, cap: usize, idle: impl Fn(&V) -> bool, rank: impl Fn(&V) -> R) {
        while self.slots.len() >= cap.max(1) {
            let n = self.slots.len();
            let mut drop = [(0u64, 0u64); EVICTION_SCAN];
            let mut dropped = 0;
            let mut best: Option<(R, Fp)> = None;
            for _ in 0..EVICTION_SCAN.min(n) {
                if self.hand >= n {
                    self.hand = 0;
                }
                let s = &self.slots[self.hand];
                if idle(&s.v) {
                    drop[dropped] = s.fp;
                    dropped += 1;
                } else {
                    let r = rank(&s.v);
                    if best.as_ref().is_none_or(|(b, _)| r < *b) {
                        best = Some((r, s.fp));
                    }
                }
                self.hand += 1;
            }
            if dropped == 0 {
                if let Some((_, fp)) = best {
                    drop[0] = fp;
                    dropped = 1;
                }
            }
            for fp in &drop[..dropped] {
                self.remove(*fp);
            }
        }
    }

    /// Drops every entry `keep` refuses; gives memory back when much of it is unused.
    fn retain(&mut self, keep: impl Fn(&V) -> bool) -> usize {
        let before = self.slots.len();
        self.slots.retain(|s| keep(&s.v));
        if self.slots.len() != before {
            self.index.clear();
            for (i, s) in self.slots.iter().enumerate() {
                self.index.insert(s.fp, i as u32);
            }
        }
        if self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to_fit();
            self.index.shrink_to_fit();
        }
        self.hand = 0;
        before - self.slots.len()
    }

    fn clear(&mut self) {
        *self = Shard::default();
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot<V>>()
            + self.index.capacity() * (std::mem::size_of::<(Fp, u32)>() + 1)
    }
}

/// A bounded table of `V` in shards.
struct Table<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    /// Entries per shard.
    cap: AtomicU64,
}

impl<V> Table<V> {
    fn new(max: usize) -> Self {
        let n = (max / MIN_SHARD_ENTRIES).clamp(1, MAX_SHARDS);
        let t = Table { shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(), cap: AtomicU64::new(1) };
        t.set_max(max);
        t
    }

    fn set_max(&self, max: usize) {
        self.cap.store((max / self.shards.len()).max(1) as u64, Relaxed);
    }

    fn cap(&self) -> usize {
        self.cap.load(Relaxed) as usize
    }

    fn shard(&self, fp: Fp) -> &Mutex<Shard<V>> {
        &self.shards[fp.0 as usize % self.shards.len()]
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().slots.len()).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().heap_bytes()).sum()
    }

    fn clear(&self) {
        for s in self.shards.iter() {
            s.lock().clear();
        }
    }
}

/// How a key is shown in [`BanTable::list`]: fixed-size keys as themselves,
/// byte strings cut at [`SHOWN_KEY_BYTES`].
pub trait BanKey: Hash {
    type Shown: Clone;
    fn shown(&self) -> Self::Shown;
}

impl BanKey for Vec<u8> {
    type Shown = Vec<u8>;
    fn shown(&self) -> Vec<u8> {
        self[..self.len().min(SHOWN_KEY_BYTES)].to_vec()
    }
}

impl<'a> BanKey for &'a str {
    type Shown = &'a str;
    fn shown(&self) -> &'a str {
        self
    }
}

macro_rules! shown_as_itself {
    ($($t:ty),*) => { $( impl BanKey for $t { type Shown = $t; fn shown(&self) -> $t { *self } } )* };
}
shown_as_itself!(IpNet, IpAddr, u8, u16, u32, u64, u128);

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Millis,
}

#[derive(Clone, Copy, Debug)]
struct RateParams {
    rate_per_ms: f64,
    burst: f64,
}

impl RateParams {
    fn refilled(&self, b: &Bucket, now: Millis) -> f64 {
        let elapsed = now.saturating_sub(b.last) as f64;
        (b.tokens + elapsed * self.rate_per_ms).min(self.burst)
    }
}

/// Token buckets: `rate` tokens per second up to `burst`; one token per connect.
/// A rate of 0 (or less) disables the limiter.
pub struct RateLimiter<K: ?Sized> {
    params: Mutex<RateParams>,
    table: Table<Bucket>,
    /// Mirrors `rate_per_ms > 0`, so that a disabled limiter (the default)
    /// costs every connect no lock shared by all schedulers.
    enabled: AtomicBool,
    _key: std::marker::PhantomData<fn(&K)>,
}

impl<K: ?Sized> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("params", &*self.params.lock()).field("len", &self.table.len()).finish()
    }
}

impl<K: Hash + ?Sized> RateLimiter<K> {
    pub fn new(rate_per_sec: f64, burst: u32, max: usize) -> Self {
        let r = RateLimiter {
            params: Mutex::new(RateParams { rate_per_ms: 0.0, burst: 1.0 }),
            table: Table::new(max),
            enabled: AtomicBool::new(false),
            _key: std::marker::PhantomData,
        };
        r.set_params(rate_per_sec, burst, max);
        r
    }

    /// New parameters; existing buckets are kept (clamped to the new burst,
    /// trimmed to the new bound).
    pub fn set_params(&self, rate_per_sec: f64, burst: u32, max: usize) {
        let mut p = self.params.lock();
        p.rate_per_ms = if rate_per_sec.is_finite() && rate_per_sec > 0.0 { rate_per_sec / 1000.0 } else { 0.0 };
        p.burst = f64::from(burst.max(1));
        self.table.set_max(max.max(1));
        self.enabled.store(p.rate_per_ms > 0.0, Relaxed);
        if p.rate_per_ms == 0.0 {
            self.table.clear();
            return;
        }
        let (burst, cap) = (p.burst, self.table.cap());
        for s in self.table.shards.iter() {
            let mut s = s.lock();
            for slot in s.slots.iter_mut() {
                slot.v.tokens = slot.v.tokens.min(burst);
            }
            s.make_room(cap + 1, |_| false, |b| b.last);
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Takes one token for `key`; false when its bucket is empty.
    pub fn try_acquire(&self, key: &K, now: Millis) -> bool {
        if !self.enabled() {
            return true;
        }
        let p = *self.params.lock();
        if p.rate_per_ms == 0.0 {
            return true;
        }
        // Hashed before taking the shard's lock (a key may be 64 KiB).
        let fp = fingerprint(key);
        let cap = self.table.cap();
        let mut shard = self.table.shard(fp).lock();
        if let Some(b) = shard.get_mut(fp) {
            let tokens = p.refilled(b, now);
            b.last = b.last.max(now);
            let ok = tokens >= 1.0;
            b.tokens = if ok { tokens - 1.0 } else { tokens };
            return ok;
        }
        shard.make_room(cap, |b| b.tokens + now.saturating_sub(b.last) as f64 * p.rate_per_ms >= p.burst, |b| b.last);
        shard.insert(fp, Bucket { tokens: p.burst - 1.0, last: now }, cap);
        true
    }

    /// Drops the buckets that have refilled completely (they mean nothing);
    /// returns how many.
    pub fn sweep(&self, now: Millis) -> usize {
        let p = *self.params.lock();
        self.table
            .shards
            .iter()
            .map(|s| s.lock().retain(|b| b.tokens + now.saturating_sub(b.last) as f64 * p.rate_per_ms < p.burst))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the table holds on the heap (slots and index).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    pub fn clear(&self) {
        self.table.clear();
    }
}

#[derive(Clone, Debug)]
struct BanEntry<S> {
    window_start: Millis,
    failures: u32,
    banned_until: Millis,
    last_seen: Millis,
    /// The key, cut at SHOWN_KEY_BYTES, while a ban runs (for `list`).
    shown: Option<S>,
}

#[derive(Clone, Copy, Debug)]
struct BanParams {
    threshold: u32,
    window_ms: u64,
    duration_ms: u64,
}

/// Failed-login counters and temporary bans: `threshold` failures within
/// `window_ms` (counted from the first failure of the window) ban the key for
/// `duration_ms`. A threshold of 0 disables counting and banning.
///
/// Every connect asks [`BanTable::banned_until`]; two atomics let it and
/// `record_success` skip the table's locks (shared by all schedulers) in the
/// usual case: no ban running, no failure counted.
pub struct BanTable<K: BanKey + ?Sized> {
    params: Mutex<BanParams>,
    table: Table<BanEntry<K::Shown>>,
    /// The latest `banned_until` ever set: no ban runs at or after it.
    horizon: AtomicU64,
    /// Whether the table may hold an entry (set before an insert, cleared
    /// only when every shard is seen empty).
    nonempty: AtomicBool,
}

impl<K: BanKey + ?Sized> std::fmt::Debug for BanTable<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanTable").field("params", &*self.params.lock()).field("len", &self.table.len()).finish()
    }
}

/// One active ban, as listed by [`BanTable::list`]. `key` is the banned
/// key (a byte string cut at [`SHOWN_KEY_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanInfo<S> {
    pub key: S,
    pub until: Millis,
    pub remaining_ms: u64,
}

impl<K: BanKey + ?Sized> BanTable<K> {
    pub fn new(threshold: u32, window_ms: u64, duration_ms: u64, max: usize) -> Self {
        BanTable {
            params: Mutex::new(BanParams { threshold, window_ms, duration_ms }),
            table: Table::new(max.max(1)),
            horizon: AtomicU64::new(0),
            nonempty: AtomicBool::new(false),
        }
    }

    /// New parameters; running bans and counters are kept (trimmed to the bound).
    pub fn set_params(&self, threshold: u32, window_ms: u64, duration_ms: u64, max: usize) {
        *self.params.lock() = BanParams { threshold, window_ms, duration_ms };
        self.table.set_max(max.max(1));
        let cap = self.table.cap();
        for s in self.table.shards.iter() {
            s.lock().make_room(cap + 1, |_| false, |e| (e.banned_until, e.last_seen));
        }
        self.note_emptiness();
    }

    fn note_emptiness(&self) {
        if self.table.len() == 0 {
            self.nonempty.store(false, Relaxed);
        }
    }

    /// `Some(until)` while `key` is banned.
    pub fn banned_until(&self, key: &K, now: Millis) -> Option<Millis> {
        if now >= self.horizon.load(Relaxed) {
            return None;
        }
        let fp = fingerprint(key);
        let shard = self.table.shard(fp).lock();
        shard.get(fp).map(|e| e.banned_until).filter(|until| *until > now)
    }

    /// Counts one failed login. Returns `Some(until)` when this failure started a ban.
    pub fn record_failure(&self, key: &K, now: Millis) -> Option<Millis> {
        let p = *self.params.lock();
        if p.threshold == 0 {
            return None;
        }
        let fp = fingerprint(key);
        let cap = self.table.cap();
        let mut shard = self.table.shard(fp).lock();
        if shard.get(fp).is_none() {
            let window = p.window_ms;
            shard.make_room(
                cap,
                |e| e.banned_until <= now && now.saturating_sub(e.window_start) >= window,
                |e| (e.banned_until > now, e.last_seen),
            );
            self.nonempty.store(true, Relaxed);
            shard.insert(fp, BanEntry { window_start: now, failures: 0, banned_until: 0, last_seen: now, shown: None }, cap);
        }
        let e = shard.get_mut(fp).expect("present: found or just inserted");
        e.last_seen = e.last_seen.max(now);
        if now.saturating_sub(e.window_start) >= p.window_ms {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= p.threshold && e.banned_until <= now {
            e.banned_until = now.saturating_add(p.duration_ms);
            e.failures = 0;
            e.window_start = now;
            e.shown = Some(key.shown());
            self.horizon.fetch_max(e.banned_until, Relaxed);
            return Some(e.banned_until);
        }
        None
    }

    /// A successful login forgets the failures counted for `key` (not a running ban).
    pub fn record_success(&self, key: &K, now: Millis) {
        if !self.nonempty.load(Relaxed) {
            return;
        }
        let fp = fingerprint(key);
        let mut shard = self.table.shard(fp).lock();
        let remove = match shard.get_mut(fp) {
            Some(e) if e.banned_until > now => {
                e.failures = 0;
                false
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            shard.remove(fp);
            drop(shard);
            self.note_emptiness();
        }
    }

    /// Active bans, longest remaining first.
    pub fn list(&self, now: Millis) -> Vec<BanInfo<K::Shown>> {
        let mut v = Vec::new();
        for s in self.table.shards.iter() {
            let s = s.lock();
            v.extend(s.slots.iter().filter(|e| e.v.banned_until > now).filter_map(|e| {
                e.v.shown.clone().map(|key| BanInfo { key, until: e.v.banned_until, remaining_ms: e.v.banned_until - now })
            }));
        }
        v.sort_by_key(|b| std::cmp::Reverse(b.until));
        v
    }

    pub fn active(&self, now: Millis) -> usize {
        if now >= self.horizon.load(Relaxed) {
            return 0;
        }
        self.table.shards.iter().map(|s| s.lock().slots.iter().filter(|e| e.v.banned_until > now).count()).sum()
    }

    /// Lifts the ban and forgets the failures of `key`; 1 if it was banned.
    pub fn clear_key(&self, key: &K, now: Millis) -> usize {
        let fp = fingerprint(key);
        let removed = self.table.shard(fp).lock().remove(fp);
        self.note_emptiness();
        match removed {
            Some(e) if e.banned_until > now => 1,
            _ => 0,
        }
    }

    /// Lifts every ban and forgets every counter; returns the number of bans lifted.
    pub fn clear_all(&self, now: Millis) -> usize {
        let n = self.active(now);
        self.table.clear();
        self.nonempty.store(false, Relaxed);
        n
    }

    /// Drops counters whose window has passed and ended bans; returns how many.
    pub fn sweep(&self, now: Millis) -> usize {
        let window = self.params.lock().window_ms;
        let n = self
            .table
            .shards
            .iter()
            .map(|s| s.lock().retain(|e| e.banned_until > now || now.saturating_sub(e.window_start) < window))
            .sum();
        self.note_emptiness();
        n
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the table holds on the heap (slots, index, shown keys of bans).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self
                .table
                .shards
                .iter()
                .map(|s| s.lock().slots.iter().filter(|e| e.v.shown.is_some()).count() * SHOWN_KEY_BYTES)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let rl = RateLimiter::new(2.0, 3, 100); // 2 per second, burst 3
        let k = "a";
        assert!(rl.try_acquire(&k, 1000));
        assert!(rl.try_acquire(&k, 1000));
        assert!(rl.try_acquire(&k, 1000));
        assert!(!rl.try_acquire(&k, 1000));
        assert!(!rl.try_acquire(&k, 1400)); // 0.8 token
        assert!(rl.try_acquire(&k, 1500)); // 1 token after 500 ms
        assert!(!rl.try_acquire(&k, 1500));
        // A long pause refills only up to the burst.
        for _ in 0..3 {
            assert!(rl.try_acquire(&k, 100_000));
        }
        assert!(!rl.try_acquire(&k, 100_000));
    }

    #[test]
    fn rate_zero_is_off_and_clock_going_back_is_harmless() {
        let off = RateLimiter::new(0.0, 1, 10);
        for _ in 0..100 {
            assert!(off.try_acquire(&1u32, 0));
        }
        assert!(off.is_empty());
        let rl = RateLimiter::new(1.0, 1, 10);
        assert!(rl.try_acquire(&1u32, 10_000));
        assert!(!rl.try_acquire(&1u32, 5_000));
        assert!(!rl.try_acquire(&1u32, 10_500));
        assert!(rl.try_acquire(&1u32, 11_000));
    }

    #[test]
    fn rate_table_never_exceeds_bound() {
        let rl = RateLimiter::new(1.0, 5, 50);
        for i in 0..10_000u32 {
            rl.try_acquire(&i, 1000 + u64::from(i));
            assert!(rl.len() <= 50);
        }
        // Busy keys (recently seen) survive eviction of older ones.
        let rl = RateLimiter::new(0.001, 2, 10);
        assert!(rl.try_acquire(&0u32, 0));
        assert!(rl.try_acquire(&0u32, 0));
        for i in 1..9u32 {
            rl.try_acquire(&i, 1);
        }
        assert!(!rl.try_acquire(&0u32, 2)); // seen again: still limited
        rl.set_params(0.001, 2, 3);
        assert!(rl.len() <= 3);
    }

    #[test]
    fn idle_buckets_are_dropped_first() {
        let rl = RateLimiter::new(10.0, 1, 3);
        rl.try_acquire(&1u32, 0);
        rl.try_acquire(&2u32, 0);
        rl.try_acquire(&3u32, 1000); // 1 and 2 are full again by now
        rl.try_acquire(&4u32, 1000);
        assert_eq!(rl.len(), 2);
    }

    #[test]
    fn bans_after_threshold_within_window_and_expire() {
        let t = BanTable::new(3, 10_000, 60_000, 100);
        let k = "u";
        assert_eq!(t.record_failure(&k, 0), None);
        assert_eq!(t.record_failure(&k, 1000), None);
        assert_eq!(t.record_failure(&k, 2000), Some(62_000));
        assert_eq!(t.banned_until(&k, 2000), Some(62_000));
        assert_eq!(t.active(61_999), 1);
        assert_eq!(t.list(2000)[0].remaining_ms, 60_000);
        assert_eq!(t.banned_until(&k, 62_000), None);
        assert_eq!(t.active(62_000), 0);
    }

    #[test]
    fn failures_outside_window_do_not_add_up_and_success_resets() {
        let t = BanTable::new(3, 10_000, 60_000, 100);
        let k = 7u8;
        t.record_failure(&k, 0);
        t.record_failure(&k, 5_000);
        assert_eq!(t.record_failure(&k, 10_000), None); // new window
        t.record_failure(&k, 11_000);
        t.record_success(&k, 12_000);
        assert_eq!(t.record_failure(&k, 13_000), None);
        assert_eq!(t.record_failure(&k, 14_000), None);
        assert!(t.record_failure(&k, 15_000).is_some());
    }

    #[test]
    fn ban_threshold_zero_is_off() {
        let t = BanTable::new(0, 10_000, 60_000, 100);
        for i in 0..100 {
            assert_eq!(t.record_failure(&1u8, i), None);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn ban_table_bounded_and_keeps_bans_over_counters() {
        let t = BanTable::new(5, 1_000_000, 1_000_000, 10);
        for i in 0..10_000u32 {
            t.record_failure(&i, u64::from(i));
            assert!(t.len() <= 10);
        }
        let mix = BanTable::new(2, 1_000_000, 1_000_000, 4);
        mix.record_failure(&100u32, 0);
        mix.record_failure(&100u32, 0); // banned
        for i in 0..50u32 {
            mix.record_failure(&i, 10 + u64::from(i));
            assert!(mix.len() <= 4);
        }
        assert!(mix.banned_until(&100u32, 100).is_some(), "the ban outlives plain counters");
        mix.set_params(2, 1_000_000, 1_000_000, 2);
        assert!(mix.len() <= 2);
    }

    #[test]
    fn list_and_clear() {
        let t = BanTable::new(1, 1000, 5000, 100);
        t.record_failure(&"a", 0);
        t.record_failure(&"b", 0);
        assert_eq!(t.list(1).len(), 2);
        assert_eq!(t.clear_key(&"a", 1), 1);
        assert_eq!(t.clear_key(&"a", 1), 0);
        assert_eq!(t.clear_all(1), 1);
        assert!(t.list(1).is_empty());
    }

    /// The lock-free answers (no ban running, no entry) must agree with the
    /// table through bans, expiry, successes and clears.
    #[test]
    fn ban_fast_paths_agree_with_the_table() {
        let t: BanTable<u32> = BanTable::new(2, 1000, 500, 100);
        let truth = |t: &BanTable<u32>, k: u32, now: Millis| t.list(now).iter().find(|b| b.key == k).map(|b| b.until);
        let mut now = 10_000;
        for step in 0..400u32 {
            let k = step % 3;
            match step % 7 {
                0 | 1 | 4 => {
                    t.record_failure(&k, now);
                }
                2 => t.record_success(&k, now),
                5 if step % 5 == 0 => {
                    t.clear_key(&k, now);
                }
                6 if step % 11 == 0 => {
                    t.clear_all(now);
                }
                _ => {}
            }
            now += 37;
            for key in 0..3 {
                assert_eq!(t.banned_until(&key, now), truth(&t, key, now), "step {step}, key {key}");
            }
            assert_eq!(t.nonempty.load(Relaxed), !t.is_empty(), "step {step}");
        }
        assert!(t.horizon.load(Relaxed) > 0, "bans were set");
    }

    #[test]
    fn disabled_rate_limiter_is_known_without_its_lock() {
        let r: RateLimiter<u32> = RateLimiter::new(0.0, 1, 10);
        assert!(!r.enabled());
        assert!((0..100).all(|_| r.try_acquire(&1, 0)));
        r.set_params(1.0, 1, 10);
        assert!(r.enabled());
        assert!(r.try_acquire(&1, 0));
        assert!(!r.try_acquire(&1, 0));
        r.set_params(0.0, 1, 10);
        assert!(!r.enabled());
        assert!(r.try_acquire(&1, 0));
    }

    #[test]
    fn peer_keys() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(v4).to_string(), "192.0.2.7/32");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(mapped), peer_key(v4));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_eq!(peer_key(a).to_string(), "2001:db8:1:2::/64");
    }

    /// A million distinct keys of up to 64 KiB: the tables hold at most
    /// their bound, every entry has a fixed size, and the bytes they hold
    /// stay under a fixed figure (the old tables kept the keys: 1.25 GiB
    /// for 20 000 refused 64 KiB usernames).
    #[test]
    fn tables_bounded_in_bytes_under_millions_of_keys() {
        const MAX: usize = 100_000;
        let rl: RateLimiter<Vec<u8>> = RateLimiter::new(1.0, 1, MAX);
        let bans: BanTable<Vec<u8>> = BanTable::new(1, 60_000, 600_000, MAX);
        let long = vec![b'x'; 65_535];
        for i in 0..1_000_000u64 {
            let key = if i % 1000 == 0 {
                let mut k = long.clone();
                k[..8].copy_from_slice(&i.to_le_bytes());
                k
            } else {
                i.to_le_bytes().to_vec()
            };
            rl.try_acquire(&key, i / 1000);
            bans.record_failure(&key, i / 1000);
        }
        assert!(rl.len() <= MAX && bans.len() <= MAX, "{} {}", rl.len(), bans.len());
        assert!(rl.len() > MAX * 9 / 10, "the bound is used: {}", rl.len());
        // 32-byte slots + 25-byte index entries (hashbrown keeps up to twice
        // the room): under 12 MiB; ban slots (72 bytes) + shown names: under 24 MiB.
        eprintln!("at the bound: rate table {} bytes, ban table {} bytes", rl.heap_bytes(), bans.heap_bytes());
        assert!(rl.heap_bytes() < 12 << 20, "{}", rl.heap_bytes());
        assert!(bans.heap_bytes() < 24 << 20, "{}", bans.heap_bytes());
        // Names shown in the ban list are cut.
        assert!(bans.list(1_000).iter().all(|b| b.key.len() <= SHOWN_KEY_BYTES));
        assert!(bans.list(1_000).iter().any(|b| b.key.len() == SHOWN_KEY_BYTES));
        // The key itself still finds its entry (hash of all its bytes).
        let mut k = long.clone();
        k[..8].copy_from_slice(&999_000u64.to_le_bytes());
        assert!(bans.banned_until(&k, 1_000).is_some());
        assert!(!rl.try_acquire(&k, 1_000));
    }

    /// Idle entries expire in a sweep and the memory goes back.
    #[test]
    fn sweep_drops_idle_entries_and_memory() {
        let rl: RateLimiter<u64> = RateLimiter::new(10.0, 2, 50_000);
        let bans: BanTable<u64> = BanTable::new(3, 1_000, 5_000, 50_000);
        for i in 0..50_000u64 {
            rl.try_acquire(&i, 0);
            bans.record_failure(&i, 0);
        }
        for _ in 0..3 {
            bans.record_failure(&7, 10);
        }
        let (rl_bytes, ban_bytes) = (rl.heap_bytes(), bans.heap_bytes());
        assert_eq!(rl.sweep(50), 0, "nothing has refilled yet");
        let (n_rl, n_bans) = (rl.len(), bans.len());
        assert!(n_rl > 40_000 && n_bans > 40_000);
        assert_eq!(rl.sweep(10_000), n_rl);
        assert_eq!(bans.sweep(2_000), n_bans - 1, "the ban stays");
        assert!(bans.banned_until(&7, 2_000).is_some());
        assert!(rl.heap_bytes() < rl_bytes / 8 && bans.heap_bytes() < ban_bytes / 8);
        assert_eq!(bans.sweep(10_000), 1);
        assert!(bans.is_empty() && rl.is_empty());
        assert!(!bans.nonempty.load(Relaxed));
    }

    /// Eviction looks at a fixed number of slots per insert: a full table
    /// of counters keeps admitting new keys, and recently seen keys survive
    /// more often than old ones.
    #[test]
    fn eviction_prefers_old_entries() {
        let rl: RateLimiter<u32> = RateLimiter::new(0.001, 1, 1024);
        for i in 0..1024u32 {
            assert!(rl.try_acquire(&i, u64::from(i)));
        }
        for i in 1024..1536u32 {
            assert!(rl.try_acquire(&i, 5_000));
        }
        assert!(rl.len() <= 1024);
        // The newest of the first keys are still limited; most old ones were evicted.
        let newest_kept = (900..1024u32).filter(|i| !rl.try_acquire(i, 5_001)).count();
        let oldest_kept = (0..124u32).filter(|i| !rl.try_acquire(i, 5_001)).count();
        assert!(newest_kept > oldest_kept, "{newest_kept} vs {oldest_kept}");
    }
}
