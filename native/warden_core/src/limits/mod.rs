//! The bounded, keyed tables behind the connection-rate limits (rate.rs)
//! and the failed-login bans (bans.rs), and the peer key they share.
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
//! Bounds: a table is split in shards (by hash) of at most
//! [`SHARD_ENTRIES`] entries, each with its own lock. An entry lives in a
//! dense slot array, found through an index of hashes. Before a new key
//! goes into a full shard, a clock hand looks at the next
//! [`EVICTION_SCAN`] slots: the idle ones among them (a bucket that has
//! refilled completely; a failure counter whose window has passed and that
//! holds no active ban) are dropped, or if none is idle the lowest ranked
//! one (least recently seen; active bans last). That is O(1) per insert,
//! never a pass over the table, and a table never holds more than its `max`
//! entries (`max(max, shards)` for tiny bounds). [`RateLimiter::sweep`] / [`BanTable::sweep`] drop every idle
//! entry and give memory back.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
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
/// Entries per shard: an insert may rehash its shard's index (hashbrown
/// grows it, or clears it of the tombstones removals leave) on a normal
/// scheduler, so a shard stays small whatever the table's bound.
const SHARD_ENTRIES: usize = 1024;
/// Most shards of a table: up to `MAX_SHARDS * SHARD_ENTRIES` entries
/// (a million) the shards hold at most `SHARD_ENTRIES` each.
const MAX_SHARDS: usize = 1024;

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
        let n = max.div_ceil(SHARD_ENTRIES).clamp(1, MAX_SHARDS);
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

mod bans;
mod rate;

pub use bans::*;
pub use rate::*;

#[cfg(test)]
mod tests;
