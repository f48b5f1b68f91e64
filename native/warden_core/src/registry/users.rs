//! Per-user live session counters, sharded, keyed by a keyed 64-bit hash of
//! the username (collisions need ~2^32 distinct users for an even chance and
//! cannot be aimed at without the key). Entries are removed at zero.
//!
//! Kept only once something reads them (`Registry::count_users`): until
//! then the hooks neither hash usernames nor touch these shards.
//!
//! In a cluster the index also remembers which users' counts changed since
//! they were last published (cluster.rs), a bounded set per shard: past
//! the bound the tracker says it lost changes and the publisher resends all.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use ahash::RandomState;
use parking_lot::Mutex;

/// Changed users remembered per shard before a full resend is needed.
const MAX_CHANGED_PER_SHARD: usize = 4096;

#[derive(Default)]
struct UserShard {
    counts: HashMap<u64, u32, RandomState>,
    changed: HashSet<u64, RandomState>,
}

pub(super) struct UserIndex {
    shards: Box<[Mutex<UserShard>]>,
    mask: usize,
    /// Records changed from now on count their users (read under a
    /// registry shard's lock; never turned off).
    counting: AtomicBool,
    /// Off on a single node: no cost on the hooks' path.
    tracking: AtomicBool,
    /// A shard's changed set was full: some changes were not kept.
    lost_changes: AtomicBool,
}

impl UserIndex {
    /// `n` must be a power of two.
    pub fn new(n: usize) -> UserIndex {
        debug_assert!(n.is_power_of_two());
        UserIndex {
            shards: (0..n).map(|_| Mutex::new(UserShard::default())).collect(),
            mask: n - 1,
            counting: AtomicBool::new(false),
            tracking: AtomicBool::new(false),
            lost_changes: AtomicBool::new(false),
        }
    }

    fn shard(&self, h: u64) -> &Mutex<UserShard> {
        &self.shards[(h >> 40) as usize & self.mask]
    }

    fn note_change(&self, s: &mut UserShard, h: u64) {
        if self.tracking.load(Relaxed) && !s.changed.contains(&h) {
            if s.changed.len() < MAX_CHANGED_PER_SHARD {
                s.changed.insert(h);
            } else {
                self.lost_changes.store(true, Relaxed);
            }
        }
    }

    pub fn counting(&self) -> bool {
        self.counting.load(Relaxed)
    }

    /// Changes from now on count; the caller counts the records already there.
    pub fn start_counting(&self) {
        self.counting.store(true, Relaxed);
    }

    pub fn inc(&self, h: u64) {
        let mut g = self.shard(h).lock();
        *g.counts.entry(h).or_insert(0) += 1;
        self.note_change(&mut g, h);
    }

    pub fn dec(&self, h: u64) {
        let mut g = self.shard(h).lock();
        if let Some(n) = g.counts.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                g.counts.remove(&h);
            }
            self.note_change(&mut g, h);
        } else {
            debug_assert!(false, "per-user index underflow");
        }
    }

    pub fn get(&self, h: u64) -> u32 {
        self.shard(h).lock().counts.get(&h).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().counts.is_empty())
    }

    pub fn track(&self, on: bool) {
        self.tracking.store(on, Relaxed);
        if !on {
            for s in self.shards.iter() {
                s.lock().changed = HashSet::default();
            }
        }
    }

    /// Up to `max` changed users with their counts now, and whether changes
    /// were lost since the last call (then the caller resends everything).
    pub fn take_changes(&self, max: usize) -> (Vec<(u64, u32)>, bool) {
        let lost = self.lost_changes.swap(false, Relaxed);
        let mut out = Vec::new();
        for s in self.shards.iter() {
            if out.len() >= max {
                break;
            }
            let mut g = s.lock();
            let take: Vec<u64> = g.changed.iter().take(max - out.len()).copied().collect();
            for h in take {
                g.changed.remove(&h);
                out.push((h, g.counts.get(&h).copied().unwrap_or(0)));
            }
        }
        (out, lost)
    }

    /// Every count of one shard, and the next shard's index.
    pub fn shard_counts(&self, shard: usize) -> (Vec<(u64, u32)>, Option<usize>) {
        let Some(s) = self.shards.get(shard) else {
            return (Vec::new(), None);
        };
        let counts = s.lock().counts.iter().map(|(&h, &n)| (h, n)).collect();
        let next = shard + 1;
        (counts, (next < self.shards.len()).then_some(next))
    }

    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.lock().counts.len()).sum()
    }
}
