//! Failed-login bans: a failure counter per key and, past the threshold,
//! a ban for a while; the operator's list shows the keys, cut.

use std::hash::Hash;
use std::net::IpAddr;

use ipnet::IpNet;

use super::*;

/// How a key is shown in [`BanTable::list`]: fixed-size keys as themselves,
/// byte strings cut at [`SHOWN_KEY_BYTES`].
pub trait BanKey: Hash {
    type Shown: Clone;
    fn shown(&self) -> Self::Shown;
}

impl BanKey for [u8] {
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
    /// Read by every failed login: an `ArcSwap` read writes no cache line
    /// shared by the schedulers, a lock does.
    params: ArcSwap<BanParams>,
    table: Table<BanEntry<K::Shown>>,
    /// The latest `banned_until` ever set: no ban runs at or after it.
    pub(super) horizon: AtomicU64,
    /// Whether the table may hold an entry (set before an insert, cleared
    /// only when every shard is seen empty).
    pub(super) nonempty: AtomicBool,
}

impl<K: BanKey + ?Sized> std::fmt::Debug for BanTable<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BanTable").field("params", &**self.params.load()).field("len", &self.table.len()).finish()
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
            params: ArcSwap::from_pointee(BanParams { threshold, window_ms, duration_ms }),
            table: Table::new(max.max(1)),
            horizon: AtomicU64::new(0),
            nonempty: AtomicBool::new(false),
        }
    }

    /// New parameters; running bans and counters are kept (trimmed to the bound).
    pub fn set_params(&self, threshold: u32, window_ms: u64, duration_ms: u64, max: usize) {
        self.params.store(Arc::new(BanParams { threshold, window_ms, duration_ms }));
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
        let p = **self.params.load();
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
        let window = self.params.load().window_ms;
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

