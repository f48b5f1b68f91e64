//! The username hash's key and the per-user counts a node publishes to a
//! cluster (warden_core::cluster): one key for every node, so that counts
//! are exchanged by hash; which users' counts changed; a full dump.

use super::*;

impl Registry {
    /// The hash the per-user index keys `username` by (the key of
    /// `cluster::RemoteCounts` too).
    pub fn user_hash(&self, username: &[u8]) -> u64 {
        self.hash_user(username)
    }

    /// Key the username hash with `key` (the cluster's shared secret), so
    /// that every node hashes a username alike. Only while no user is
    /// counted (the index keeps hashes, not names), or to the key in use:
    /// false otherwise.
    pub fn set_user_hash_key(&self, key: [u64; 4]) -> bool {
        let same = self.user_key.iter().zip(key).all(|(slot, k)| slot.load(Relaxed) == k);
        if same {
            return true;
        }
        if !self.users.is_empty() {
            return false;
        }
        for (slot, k) in self.user_key.iter().zip(key) {
            slot.store(k, Relaxed);
        }
        true
    }

    /// Record which users' counts change, for [`Registry::take_user_changes`]
    /// (on while the node publishes its counts to a cluster). Turning it on
    /// starts the per-user index first ([`Registry::count_users`]: a peer
    /// may limit sessions where this node does not), which may take a while.
    pub fn track_user_changes(&self, on: bool) {
        if on {
            self.count_users();
        }
        self.users.track(on);
    }

    /// Up to `max` users whose live count changed since the last call, with
    /// their count now (0: none left), and whether changes were lost since
    /// (more than the tracker holds: send everything again).
    pub fn take_user_changes(&self, max: usize) -> (Vec<(u64, u32)>, bool) {
        self.users.take_changes(max)
    }

    /// Every user's live count in index shard `shard` (a full resend,
    /// one shard per call), and the next shard, if any.
    pub fn user_counts_of_shard(&self, shard: usize) -> (Vec<(u64, u32)>, Option<usize>) {
        self.users.shard_counts(shard)
    }
}

/// Seeds for a node-local username hash: random, so that clients cannot aim
/// collisions at a user.
pub(super) fn random_user_key() -> [u64; 4] {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness (never seen): still differs per process and start.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&(t ^ std::process::id() as u64).to_le_bytes());
    }
    std::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
}

