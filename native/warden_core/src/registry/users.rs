//! Per-user live session counters, sharded, keyed by a keyed 64-bit hash of
//! the username (collisions need ~2^32 distinct users for an even chance and
//! cannot be aimed at without the random seed). Entries are removed at zero.

use std::collections::HashMap;

use ahash::RandomState;
use parking_lot::Mutex;

pub(super) struct UserIndex {
    shards: Box<[Mutex<HashMap<u64, u32, RandomState>>]>,
    mask: usize,
}

impl UserIndex {
    /// `n` must be a power of two.
    pub fn new(n: usize) -> UserIndex {
        debug_assert!(n.is_power_of_two());
        UserIndex {
            shards: (0..n)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::new())))
                .collect(),
            mask: n - 1,
        }
    }

    fn shard(&self, h: u64) -> &Mutex<HashMap<u64, u32, RandomState>> {
        &self.shards[(h >> 40) as usize & self.mask]
    }

    pub fn inc(&self, h: u64) {
        *self.shard(h).lock().entry(h).or_insert(0) += 1;
    }

    pub fn dec(&self, h: u64) {
        let mut g = self.shard(h).lock();
        if let Some(n) = g.get_mut(&h) {
            *n -= 1;
            if *n == 0 {
                g.remove(&h);
            }
        } else {
            debug_assert!(false, "per-user index underflow");
        }
    }

    pub fn get(&self, h: u64) -> u32 {
        self.shard(h).lock().get(&h).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
