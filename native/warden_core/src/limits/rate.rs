//! Connection-rate limits: a token bucket per key in a bounded table.

use std::hash::Hash;

use super::*;

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
    /// Read by every connect while the limiter is on: an `ArcSwap` read
    /// writes no cache line shared by the schedulers, a lock does.
    params: ArcSwap<RateParams>,
    /// Held by `set_params`, so that two at once cannot leave `enabled`
    /// saying otherwise than `params`.
    writer: Mutex<()>,
    table: Table<Bucket>,
    /// Mirrors `rate_per_ms > 0` (written under `writer`), so that a
    /// disabled limiter (the default) costs a connect one load of a flag,
    /// not a load of the parameters.
    enabled: AtomicBool,
    /// Tests only: runs inside `set_params` between the two stores, where
    /// a second writer must not get in.
    #[cfg(test)]
    pub(super) between_stores: crate::testing::PausePoint,
    /// Tests only: buckets `set_params` went through.
    #[cfg(test)]
    pub(super) buckets_visited: AtomicU64,
    _key: std::marker::PhantomData<fn(&K)>,
}

impl<K: ?Sized> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("params", &**self.params.load()).field("len", &self.table.len()).finish()
    }
}

impl<K: Hash + ?Sized> RateLimiter<K> {
    pub fn new(rate_per_sec: f64, burst: u32, max: usize) -> Self {
        let r = RateLimiter {
            params: ArcSwap::from_pointee(RateParams { rate_per_ms: 0.0, burst: 1.0 }),
            writer: Mutex::new(()),
            table: Table::new(max),
            enabled: AtomicBool::new(false),
            #[cfg(test)]
            between_stores: Default::default(),
            #[cfg(test)]
            buckets_visited: AtomicU64::new(0),
            _key: std::marker::PhantomData,
        };
        r.set_params(rate_per_sec, burst, max);
        r
    }

    /// New parameters; existing buckets are kept (clamped to the new burst,
    /// trimmed to the new bound). Only a lower burst or bound needs a pass
    /// over the buckets: a reload sets mostly unchanged parameters, and at
    /// the firewall's bound that pass costs most of a millisecond.
    pub fn set_params(&self, rate_per_sec: f64, burst: u32, max: usize) {
        let rate_per_ms = if rate_per_sec.is_finite() && rate_per_sec > 0.0 { rate_per_sec / 1000.0 } else { 0.0 };
        let p = RateParams { rate_per_ms, burst: f64::from(burst.max(1)) };
        let _writer = self.writer.lock();
        let (old_burst, old_cap) = (self.params.load().burst, self.table.cap());
        self.params.store(Arc::new(p));
        #[cfg(test)]
        self.between_stores.reach();
        self.table.set_max(max.max(1));
        self.enabled.store(p.rate_per_ms > 0.0, Relaxed);
        if p.rate_per_ms == 0.0 {
            self.table.clear();
            return;
        }
        let (burst, cap) = (p.burst, self.table.cap());
        // No bucket holds more than the old burst, no shard more than the
        // old bound (writers are serialised by `writer`).
        if burst >= old_burst && cap >= old_cap {
            return;
        }
        for s in self.table.shards.iter() {
            let mut s = s.lock();
            #[cfg(test)]
            self.buckets_visited.fetch_add(s.slots.len() as u64, Relaxed);
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
        let p = **self.params.load();
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
        let p = **self.params.load();
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

