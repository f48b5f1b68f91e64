//! One shard of the registry: its records, their index and the counters
//! read without its lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ahash::RandomState;
use hashbrown::HashTable;
use parking_lot::Mutex;

use super::record::{Record, Store};
use super::slab::Slab;
use super::{KeyRef, SessionState};

// Indexes of the per-shard counters.
pub(super) const C_AUTH: usize = 0;
pub(super) const C_ONLINE: usize = 1;
pub(super) const C_OFFLINE: usize = 2;
pub(super) const C_LEN: usize = 3;
pub(super) const C_PENDING: usize = 4;
pub(super) const C_STALE: usize = 5;
pub(super) const C_DUP: usize = 6;
pub(super) const C_UNKNOWN: usize = 7;
pub(super) const C_TAKEN: usize = 8;
pub(super) const C_ENDED: usize = 9;
pub(super) const C_RECONCILED: usize = 10;
pub(super) const N_COUNTERS: usize = 11;

/// Memory layout: the records are dense in `slab` (chunks of a fixed size,
/// no per-entry slack); `index` maps the keyed hash of a key to its slot
/// (8 bytes per bucket), so the tables' load-factor slack costs little.
pub(super) struct ShardInner {
    pub(super) index: Index,
    pub(super) slab: Slab<Record>,
    /// The records' key bytes and pending connects (pool.rs).
    pub(super) st: Store,
    /// Last generation handed out for a key of this shard.
    pub(super) next_gen: u64,
}

/// Aligned so that two shards' counters never share a cache line.
#[repr(align(128))]
pub(super) struct Shard {
    pub(super) inner: Mutex<ShardInner>,
    /// Written under `inner`'s lock, read without it.
    pub(super) c: [AtomicU64; N_COUNTERS],
}

impl Shard {
    pub(super) fn get(&self, i: usize) -> u64 {
        self.c[i].load(Relaxed)
    }
    pub(super) fn add(&self, i: usize) {
        self.add_n(i, 1);
    }
    pub(super) fn add_n(&self, i: usize, n: u64) {
        if n > 0 {
            self.c[i].fetch_add(n, Relaxed);
        }
    }
    pub(super) fn sub(&self, i: usize) {
        self.c[i].fetch_sub(1, Relaxed);
    }
}

pub(super) fn state_counter(s: Option<SessionState>) -> Option<usize> {
    match s? {
        SessionState::Authenticated => Some(C_AUTH),
        SessionState::Online => Some(C_ONLINE),
        SessionState::Offline => Some(C_OFFLINE),
        SessionState::Gone | SessionState::Expired => None,
    }
}

/// A bucket of a shard's index: the record's slot and the low 32 bits of its
/// key's hash (the shard was chosen by bits 32..). Growing the table rehashes
/// from the buckets alone: with the hash recomputed from each record's key,
/// one growth of a 16,000-record shard read 16,000 records scattered over
/// memory and held a scheduler (and the shard) for up to 6.8 ms of CPU
/// (the benchmark's stall audit, 1,000,000 sessions).
#[derive(Clone, Copy)]
pub(super) struct IndexEntry {
    pub(super) slot: u32,
    pub(super) hash: u32,
}

/// Tables of a shard's index; a key's table is chosen by the top bits of
/// its 32-bit hash. A table grows by moving every bucket at once, inside the
/// hook that fills it, under the shard's lock: with one table per shard, the
/// growths at about 460,000 and 920,000 sessions took 150-680 µs of CPU
/// each (page faults of the new table included), and more on a busy host.
/// Four tables grow a quarter of the keys at a time, at different moments.
/// More tables cost a small node: tables that start larger put a lookup's
/// control bytes and bucket on two cache lines, and with 8 tables of a few
/// keys each, churned by connects and disconnects, 4 of 15 runs of the
/// allocations test counted a growth (an allocation) in 5 or more of 1,000
/// auths (docs/BENCHMARKS.md, "Stalls").
const INDEX_TABLES: usize = 4;

#[derive(Default)]
pub(super) struct Index([HashTable<IndexEntry>; INDEX_TABLES]);

impl Index {
    /// The table of a key: the top bits of its 32-bit hash.
    fn of(h32: u32) -> usize {
        (h32 >> (32 - INDEX_TABLES.trailing_zeros())) as usize
    }

    fn table(&self, h32: u32) -> &HashTable<IndexEntry> {
        &self.0[Self::of(h32)]
    }

    fn table_mut(&mut self, h32: u32) -> &mut HashTable<IndexEntry> {
        &mut self.0[Self::of(h32)]
    }

    /// The most keys one growth moves now: the largest table's length.
    #[cfg(test)]
    pub(super) fn largest_table(&self) -> usize {
        self.0.iter().map(HashTable::len).max().unwrap_or(0)
    }
}

/// The table's hash from the 32 bits a bucket keeps: multiplied by an odd
/// constant, so that its top 7 bits (hashbrown's control byte) depend on all
/// 32 and its low bits (the bucket) stay as random as the key hash's.
pub(super) fn table_hash(h32: u32) -> u64 {
    u64::from(h32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl ShardInner {
    pub(super) fn find(&self, h: u64, key: KeyRef<'_>) -> Option<u32> {
        let h32 = h as u32;
        self.index
            .table(h32)
            .find(table_hash(h32), |e| e.hash == h32 && self.slab.get(e.slot).key_eq(&self.st, key.mountpoint, key.client_id))
            .map(|e| e.slot)
    }

    pub(super) fn insert(&mut self, rec: Record) {
        let hash = rec.index_hash();
        let slot = self.slab.push(rec);
        self.index.table_mut(hash).insert_unique(table_hash(hash), IndexEntry { slot, hash }, |e| table_hash(e.hash));
    }

    /// Remove the record in slot `i`; the last record moves into the slot.
    pub(super) fn remove(&mut self, i: u32) {
        let h32 = self.slab.get(i).index_hash();
        if let Ok(e) = self.index.table_mut(h32).find_entry(table_hash(h32), |e| e.slot == i) {
            e.remove();
        }
        self.slab.get_mut(i).release(&mut self.st);
        if let Some(moved_from) = self.slab.swap_remove(i) {
            let mh = self.slab.get(i).index_hash();
            if let Some(e) = self.index.table_mut(mh).find_mut(table_hash(mh), |e| e.slot == moved_from) {
                e.slot = i;
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.index = Index::default();
        self.slab.clear();
        self.st = Store::new();
    }
}

pub(super) fn hash_parts(hasher: &RandomState, (mp, cid): (&[u8], &[u8])) -> u64 {
    hasher.hash_one((mp, cid))
}
