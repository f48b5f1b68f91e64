//! Connection-rate limits (token buckets) and failed-login bans.
//!
//! Every table is keyed either by peer address or by username, bounded by a
//! maximum entry count, and driven by an injected clock (`now: Millis`): no
//! function here reads the system time.
//!
//! Peer addresses are normalised by [`peer_key`]: an IPv4 address (or an
//! IPv4-mapped IPv6 address) counts as itself, any other IPv6 address counts
//! as its /64 network, since one IPv6 host usually owns a whole /64.
//!
//! Bounds: before a new key is inserted into a full table, idle entries are
//! dropped (a bucket that has refilled completely; a failure counter whose
//! window has passed and that holds no active ban). If the table is still full,
//! the least recently seen entries are evicted (entries with an active ban
//! last). A table therefore never holds more than its `max` entries.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use parking_lot::Mutex;

use crate::types::Millis;

/// The key under which a peer address is rate-limited and banned.
pub fn peer_key(ip: IpAddr) -> IpNet {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, 32).expect("/32 is valid")),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(v6, 64).expect("/64 is valid").trunc()),
    }
}

/// Makes room for one new entry: afterwards `map.len() < max` (for `max >= 1`).
/// `idle` entries go first; then the lowest `rank` (e.g. `(banned, last_seen)`).
fn make_room<K: Clone + Eq + Hash, V, R: Ord + Copy>(
    map: &mut HashMap<K, V>,
    max: usize,
    idle: impl Fn(&V) -> bool,
    rank: impl Fn(&V) -> R,
) {
    let max = max.max(1);
    if map.len() < max {
        return;
    }
    map.retain(|_, v| !idle(v));
    if map.len() < max {
        return;
    }
    // Still full: evict the oldest eighth (at least enough for one insert),
    // so the O(n) selection is amortised over many inserts.
    let excess = map.len() + 1 - max;
    let n = excess.max(map.len() / 8).min(map.len());
    let mut ranked: Vec<(R, K)> = map.iter().map(|(k, v)| (rank(v), k.clone())).collect();
    if n < ranked.len() {
        ranked.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
    }
    for (_, k) in ranked.into_iter().take(n) {
        map.remove(&k);
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Millis,
}

#[derive(Debug)]
struct RateInner<K> {
    rate_per_ms: f64,
    burst: f64,
    max: usize,
    map: HashMap<K, Bucket>,
}

impl<K> RateInner<K> {
    fn refilled(&self, b: &Bucket, now: Millis) -> f64 {
        let elapsed = now.saturating_sub(b.last) as f64;
        (b.tokens + elapsed * self.rate_per_ms).min(self.burst)
    }
}

/// Token buckets: `rate` tokens per second up to `burst`; one token per connect.
/// A rate of 0 (or less) disables the limiter.
#[derive(Debug)]
pub struct RateLimiter<K> {
    inner: Mutex<RateInner<K>>,
    /// Mirrors `rate_per_ms > 0`, so that a disabled limiter (the default)
    /// costs every connect no lock shared by all schedulers.
    enabled: AtomicBool,
}

impl<K: Clone + Eq + Hash> RateLimiter<K> {
    pub fn new(rate_per_sec: f64, burst: u32, max: usize) -> Self {
        let mut inner = RateInner { rate_per_ms: 0.0, burst: 1.0, max, map: HashMap::new() };
        Self::apply(&mut inner, rate_per_sec, burst, max);
        let enabled = AtomicBool::new(inner.rate_per_ms > 0.0);
        RateLimiter { inner: Mutex::new(inner), enabled }
    }

    fn apply(inner: &mut RateInner<K>, rate_per_sec: f64, burst: u32, max: usize) {
        inner.rate_per_ms = if rate_per_sec.is_finite() && rate_per_sec > 0.0 { rate_per_sec / 1000.0 } else { 0.0 };
        inner.burst = f64::from(burst.max(1));
        inner.max = max.max(1);
    }

    /// New parameters; existing buckets are kept (clamped to the new burst,
    /// trimmed to the new bound).
    pub fn set_params(&self, rate_per_sec: f64, burst: u32, max: usize) {
        let mut inner = self.inner.lock();
        Self::apply(&mut inner, rate_per_sec, burst, max);
        self.enabled.store(inner.rate_per_ms > 0.0, Relaxed);
        if inner.rate_per_ms == 0.0 {
            inner.map.clear();
            return;
        }
        let burst = inner.burst;
        for b in inner.map.values_mut() {
            b.tokens = b.tokens.min(burst);
        }
        while inner.map.len() > inner.max {
            let max = inner.max;
            make_room(&mut inner.map, max, |_| false, |b| b.last);
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
        let mut inner = self.inner.lock();
        if inner.rate_per_ms == 0.0 {
            return true;
        }
        if let Some(b) = inner.map.get(key).copied() {
            let tokens = inner.refilled(&b, now);
            let last = b.last.max(now);
            let (tokens, ok) = if tokens >= 1.0 { (tokens - 1.0, true) } else { (tokens, false) };
            inner.map.insert(key.clone(), Bucket { tokens, last });
            return ok;
        }
        let (max, rate, burst) = (inner.max, inner.rate_per_ms, inner.burst);
        make_room(
            &mut inner.map,
            max,
            |b| b.tokens + now.saturating_sub(b.last) as f64 * rate >= burst,
            |b| b.last,
        );
        inner.map.insert(key.clone(), Bucket { tokens: burst - 1.0, last: now });
        true
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.inner.lock().map.clear();
    }
}

#[derive(Clone, Copy, Debug)]
struct BanEntry {
    window_start: Millis,
    failures: u32,
    banned_until: Millis,
    last_seen: Millis,
}

#[derive(Debug)]
struct BanInner<K> {
    threshold: u32,
    window_ms: u64,
    duration_ms: u64,
    max: usize,
    map: HashMap<K, BanEntry>,
}

/// Failed-login counters and temporary bans: `threshold` failures within
/// `window_ms` (counted from the first failure of the window) ban the key for
/// `duration_ms`. A threshold of 0 disables counting and banning.
///
/// Every connect asks [`BanTable::banned_until`]; two atomics let it and
/// `record_success` skip the table's lock (shared by all schedulers) in the
/// usual case: no ban running, no failure counted.
#[derive(Debug)]
pub struct BanTable<K> {
    inner: Mutex<BanInner<K>>,
    /// The latest `banned_until` ever set: no ban runs at or after it.
    horizon: AtomicU64,
    /// Whether the table holds any entry (updated under the lock).
    nonempty: AtomicBool,
}

/// One active ban, as listed by [`BanTable::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanInfo<K> {
    pub key: K,
    pub until: Millis,
    pub remaining_ms: u64,
}

impl<K: Clone + Eq + Hash> BanTable<K> {
    pub fn new(threshold: u32, window_ms: u64, duration_ms: u64, max: usize) -> Self {
        BanTable {
            inner: Mutex::new(BanInner { threshold, window_ms, duration_ms, max: max.max(1), map: HashMap::new() }),
            horizon: AtomicU64::new(0),
            nonempty: AtomicBool::new(false),
        }
    }

    /// New parameters; running bans and counters are kept (trimmed to the bound).
    pub fn set_params(&self, threshold: u32, window_ms: u64, duration_ms: u64, max: usize) {
        let mut inner = self.inner.lock();
        inner.threshold = threshold;
        inner.window_ms = window_ms;
        inner.duration_ms = duration_ms;
        inner.max = max.max(1);
        while inner.map.len() > inner.max {
            let max = inner.max;
            make_room(&mut inner.map, max, |_| false, |e| e.last_seen);
        }
        self.nonempty.store(!inner.map.is_empty(), Relaxed);
    }

    /// `Some(until)` while `key` is banned.
    pub fn banned_until(&self, key: &K, now: Millis) -> Option<Millis> {
        if now >= self.horizon.load(Relaxed) {
            return None;
        }
        let inner = self.inner.lock();
        inner.map.get(key).map(|e| e.banned_until).filter(|until| *until > now)
    }

    /// Counts one failed login. Returns `Some(until)` when this failure started a ban.
    pub fn record_failure(&self, key: &K, now: Millis) -> Option<Millis> {
        let mut inner = self.inner.lock();
        if inner.threshold == 0 {
            return None;
        }
        let (threshold, window, duration, max) = (inner.threshold, inner.window_ms, inner.duration_ms, inner.max);
        if !inner.map.contains_key(key) {
            make_room(
                &mut inner.map,
                max,
                |e| e.banned_until <= now && now.saturating_sub(e.window_start) >= window,
                |e| (e.banned_until > now, e.last_seen),
            );
        }
        self.nonempty.store(true, Relaxed);
        let e = inner.map.entry(key.clone()).or_insert(BanEntry {
            window_start: now,
            failures: 0,
            banned_until: 0,
            last_seen: now,
        });
        e.last_seen = e.last_seen.max(now);
        if now.saturating_sub(e.window_start) >= window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= threshold && e.banned_until <= now {
            e.banned_until = now.saturating_add(duration);
            e.failures = 0;
            e.window_start = now;
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
        let mut inner = self.inner.lock();
        let remove = match inner.map.get_mut(key) {
            Some(e) if e.banned_until > now => {
                e.failures = 0;
                false
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            inner.map.remove(key);
            self.nonempty.store(!inner.map.is_empty(), Relaxed);
        }
    }

    /// Active bans, longest remaining first.
    pub fn list(&self, now: Millis) -> Vec<BanInfo<K>> {
        let inner = self.inner.lock();
        let mut v: Vec<BanInfo<K>> = inner
            .map
            .iter()
            .filter(|(_, e)| e.banned_until > now)
            .map(|(k, e)| BanInfo { key: k.clone(), until: e.banned_until, remaining_ms: e.banned_until - now })
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.until));
        v
    }

    pub fn active(&self, now: Millis) -> usize {
        self.inner.lock().map.values().filter(|e| e.banned_until > now).count()
    }

    /// Lifts the ban and forgets the failures of `key`; 1 if it was banned.
    pub fn clear_key(&self, key: &K, now: Millis) -> usize {
        let mut inner = self.inner.lock();
        let removed = inner.map.remove(key);
        self.nonempty.store(!inner.map.is_empty(), Relaxed);
        match removed {
            Some(e) if e.banned_until > now => 1,
            _ => 0,
        }
    }

    /// Lifts every ban and forgets every counter; returns the number of bans lifted.
    pub fn clear_all(&self, now: Millis) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.map.values().filter(|e| e.banned_until > now).count();
        inner.map.clear();
        self.nonempty.store(false, Relaxed);
        n
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
