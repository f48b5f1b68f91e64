//! Per-user live session counts of the other nodes of a cluster
//! ([`RemoteCounts`]), so that `max_sessions` holds cluster-wide with no
//! remote call per connect: each node publishes its changed counts
//! periodically (vmq_warden_cluster_sync) and the firewall adds the
//! remote total to the local count.
//!
//! Keyed by the registry's username hash, which every node of a cluster
//! keys alike (`Registry::set_user_hash_key`); the node's name is the
//! sender's, as the Erlang side gives it. Bounded in bytes: an update that
//! would pass the bound is dropped and counted (that user's remote count is
//! then under-counted until the entry fits).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ahash::RandomState;
use parking_lot::RwLock;

/// What one (node, user) entry costs, counted against the byte bound: its
/// slot in the node's map and its share of the totals map, with the maps'
/// spare capacity.
pub const ENTRY_BYTES: usize = 64;

/// Updates applied per write lock: a few microseconds of the firewall's
/// readers waiting, at most.
pub const LOCK_BATCH: usize = 256;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStats {
    pub nodes: u64,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Updates not kept because the table was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Inner {
    per_node: HashMap<Box<[u8]>, HashMap<u64, u32, RandomState>>,
    /// Sum over the nodes, per user hash; absent at 0.
    totals: HashMap<u64, u32, RandomState>,
    entries: usize,
    dropped: u64,
}

pub struct RemoteCounts {
    inner: RwLock<Inner>,
    max_bytes: RwLock<usize>,
    /// Whether `totals` holds any user, set under the write lock: on a node
    /// without a cluster (no totals) a connect's [`RemoteCounts::total`]
    /// takes no lock, whose reader count every scheduler would write.
    any: AtomicBool,
}

impl RemoteCounts {
    pub fn new(max_bytes: usize) -> RemoteCounts {
        RemoteCounts { inner: RwLock::new(Inner::default()), max_bytes: RwLock::new(max_bytes), any: AtomicBool::new(false) }
    }

    /// A smaller bound applies to new entries; the ones kept stay.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        *self.max_bytes.write() = max_bytes;
    }

    /// Live sessions of the user with hash `user` on every other node, as
    /// last published.
    pub fn total(&self, user: u64) -> u32 {
        if !self.any.load(Ordering::Acquire) {
            return 0;
        }
        self.inner.read().totals.get(&user).copied().unwrap_or(0)
    }

    /// Called with the write lock held, after any change of `totals`.
    fn note_totals(&self, inner: &Inner) {
        self.any.store(!inner.totals.is_empty(), Ordering::Release);
    }

    /// Apply `node`'s counts (0 removes the user). Returns how many were
    /// dropped for the byte bound. The write lock is taken per
    /// [`LOCK_BATCH`] updates, so that the firewall's reads (auth hooks)
    /// never wait for a long batch.
    pub fn apply(&self, node: &[u8], updates: &[(u64, u32)]) -> usize {
        updates.chunks(LOCK_BATCH).map(|batch| self.apply_batch(node, batch)).sum()
    }

    fn apply_batch(&self, node: &[u8], updates: &[(u64, u32)]) -> usize {
        let max_entries = *self.max_bytes.read() / ENTRY_BYTES;
        let mut g = self.inner.write();
        let inner = &mut *g;
        if !inner.per_node.contains_key(node) {
            inner.per_node.insert(Box::from(node), HashMap::default());
        }
        let counts = inner.per_node.get_mut(node).expect("inserted above");
        let mut dropped = 0;
        for &(user, n) in updates {
            let old = counts.get(&user).copied().unwrap_or(0);
            if old == 0 && n > 0 && inner.entries >= max_entries {
                dropped += 1;
                continue;
            }
            match (old, n) {
                (0, 0) => continue,
                (_, 0) => {
                    counts.remove(&user);
                    inner.entries -= 1;
                }
                (0, _) => {
                    counts.insert(user, n);
                    inner.entries += 1;
                }
                _ => {
                    counts.insert(user, n);
                }
            }
            let total = inner.totals.entry(user).or_insert(0);
            *total = (*total + n).saturating_sub(old);
            if *total == 0 {
                inner.totals.remove(&user);
            }
        }
        if counts.is_empty() {
            inner.per_node.remove(node);
        }
        inner.dropped += dropped as u64;
        self.note_totals(inner);
        dropped
    }

    /// Forget every count of `node` (it went down, or restarted and sends
    /// all again). Returns how many entries went. The node's table leaves
    /// at once; its share of the totals is taken off [`LOCK_BATCH`] users
    /// per write lock (meanwhile a total may still include it: for a few
    /// milliseconds a count errs high, never low).
    pub fn drop_node(&self, node: &[u8]) -> usize {
        let Some(counts) = self.inner.write().per_node.remove(node) else {
            return 0;
        };
        let counts: Vec<(u64, u32)> = counts.into_iter().collect();
        for batch in counts.chunks(LOCK_BATCH) {
            let mut g = self.inner.write();
            let inner = &mut *g;
            for (user, n) in batch {
                if let Some(total) = inner.totals.get_mut(user) {
                    *total = total.saturating_sub(*n);
                    if *total == 0 {
                        inner.totals.remove(user);
                    }
                }
            }
            inner.entries -= batch.len();
            self.note_totals(inner);
        }
        counts.len()
    }

    /// The nodes whose counts are kept.
    pub fn nodes(&self) -> Vec<Box<[u8]>> {
        self.inner.read().per_node.keys().cloned().collect()
    }

    pub fn clear(&self) {
        let dropped = self.inner.read().dropped;
        let mut g = self.inner.write();
        *g = Inner { dropped, ..Inner::default() };
        self.note_totals(&g);
    }

    pub fn stats(&self) -> RemoteStats {
        let g = self.inner.read();
        RemoteStats {
            nodes: g.per_node.len() as u64,
            entries: g.entries as u64,
            bytes: (g.entries * ENTRY_BYTES) as u64,
            max_bytes: *self.max_bytes.read() as u64,
            dropped: g.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_totals_sum_the_nodes() {
        let r = RemoteCounts::new(1 << 20);
        assert_eq!(r.apply(b"a@h", &[(1, 2), (2, 1)]), 0);
        assert_eq!(r.apply(b"b@h", &[(1, 3)]), 0);
        assert_eq!(r.total(1), 5);
        assert_eq!(r.total(2), 1);
        // a later count replaces the node's earlier one; 0 removes it
        r.apply(b"a@h", &[(1, 1), (2, 0)]);
        assert_eq!(r.total(1), 4);
        assert_eq!(r.total(2), 0);
        assert_eq!(r.stats().entries, 2);
        assert_eq!(r.total(99), 0);
    }

    /// `total` skips the lock while no node has published a count: the
    /// counts must show again as soon as one does, after any way back to none.
    #[test]
    fn cluster_totals_show_after_every_way_back_to_none() {
        let r = RemoteCounts::new(1 << 20);
        assert_eq!(r.total(1), 0);
        r.apply(b"a@h", &[(1, 2)]);
        assert_eq!(r.total(1), 2);
        r.apply(b"a@h", &[(1, 0)]);
        assert_eq!(r.total(1), 0);
        r.apply(b"b@h", &[(1, 1)]);
        assert_eq!(r.total(1), 1);
        r.drop_node(b"b@h");
        assert_eq!(r.total(1), 0);
        r.apply(b"c@h", &[(1, 3)]);
        assert_eq!(r.total(1), 3);
        r.clear();
        assert_eq!(r.total(1), 0);
        r.apply(b"d@h", &[(1, 4)]);
        assert_eq!(r.total(1), 4);
    }

    #[test]
    fn cluster_node_down_drops_its_counts() {
        let r = RemoteCounts::new(1 << 20);
        r.apply(b"a@h", &[(1, 2), (2, 1)]);
        r.apply(b"b@h", &[(1, 3)]);
        assert_eq!(r.drop_node(b"a@h"), 2);
        assert_eq!(r.total(1), 3);
        assert_eq!(r.total(2), 0);
        assert_eq!(r.drop_node(b"a@h"), 0);
        assert_eq!(r.nodes(), vec![Box::from(&b"b@h"[..])]);
        assert_eq!(r.stats(), RemoteStats { nodes: 1, entries: 1, bytes: ENTRY_BYTES as u64, max_bytes: 1 << 20, dropped: 0 });
    }

    #[test]
    fn cluster_large_updates_and_drops_go_in_batches() {
        let r = RemoteCounts::new(1 << 30);
        let many: Vec<(u64, u32)> = (0..3 * LOCK_BATCH as u64 + 7).map(|u| (u, 1)).collect();
        r.apply(b"a@h", &many);
        r.apply(b"b@h", &many[..10]);
        assert_eq!(r.stats().entries, many.len() as u64 + 10);
        assert_eq!((r.total(0), r.total(many.len() as u64 - 1)), (2, 1));
        assert_eq!(r.drop_node(b"a@h"), many.len());
        assert_eq!((r.total(0), r.total(many.len() as u64 - 1)), (1, 0));
        assert_eq!(r.stats().entries, 10);
    }

    #[test]
    fn cluster_table_is_bounded_in_bytes() {
        let r = RemoteCounts::new(3 * ENTRY_BYTES);
        assert_eq!(r.apply(b"a@h", &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]), 2);
        assert_eq!(r.stats().entries, 3);
        assert_eq!(r.stats().bytes, 3 * ENTRY_BYTES as u64);
        // an entry already kept still updates when full; a freed one makes room
        assert_eq!(r.apply(b"a@h", &[(1, 7), (2, 0), (4, 1)]), 0);
        assert_eq!(r.total(1), 7);
        assert_eq!(r.total(4), 1);
        assert_eq!(r.stats().dropped, 2);
        r.clear();
        assert_eq!(r.stats().entries, 0);
        assert_eq!(r.stats().dropped, 2);
    }

    // ---- the registry's side: shared hash key, changed users -------------

    use crate::registry::{ConnectInfo, Registry, RegistryConfig};
    use crate::types::{ProcId, Protocol, SubscriberKey};

    fn connect(r: &Registry, id: &str, user: &str, n: u64) {
        let key = SubscriberKey::new(Vec::new(), id.as_bytes().to_vec());
        let info = ConnectInfo { peer: None, username: Some(user.as_bytes()), clean_session: true, protocol: Protocol::Mqtt3 };
        r.auth_accepted(&key, ProcId(n), info, 1);
        r.woke_up(&key, ProcId(1000 + n), 1);
        r.registered(&key, ProcId(n), info, 1);
    }

    fn gone(r: &Registry, id: &str, n: u64) {
        r.gone(&SubscriberKey::new(Vec::new(), id.as_bytes().to_vec()), ProcId(1000 + n), 2);
    }

    #[test]
    fn cluster_nodes_with_one_key_hash_users_alike() {
        let (a, b) = (Registry::new(RegistryConfig::default()), Registry::new(RegistryConfig::default()));
        assert_ne!(a.user_hash(b"alice"), b.user_hash(b"alice"), "random keys by default");
        assert!(a.set_user_hash_key([1, 2, 3, 4]));
        assert!(b.set_user_hash_key([1, 2, 3, 4]));
        assert_eq!(a.user_hash(b"alice"), b.user_hash(b"alice"));
        // not while users are counted: the index holds hashes only
        connect(&a, "c1", "alice", 1);
        a.count_users();
        assert!(!a.set_user_hash_key([5, 6, 7, 8]));
        assert!(a.set_user_hash_key([1, 2, 3, 4]), "the key in use: nothing to change");
        assert_eq!(a.live_sessions_of_user(b"alice"), 1);
    }

    #[test]
    fn cluster_changed_users_are_tracked_only_when_on() {
        let r = Registry::new(RegistryConfig::default());
        connect(&r, "c0", "zed", 9);
        assert_eq!(r.take_user_changes(100), (vec![], false));
        r.track_user_changes(true);
        connect(&r, "c1", "alice", 1);
        connect(&r, "c2", "alice", 2);
        connect(&r, "c3", "bob", 3);
        let (mut changes, lost) = r.take_user_changes(100);
        changes.sort();
        let mut want = vec![(r.user_hash(b"alice"), 2), (r.user_hash(b"bob"), 1)];
        want.sort();
        assert_eq!((changes, lost), (want, false));
        assert_eq!(r.take_user_changes(100), (vec![], false), "taken once");
        gone(&r, "c3", 3);
        assert_eq!(r.take_user_changes(100), (vec![(r.user_hash(b"bob"), 0)], false));
        // a full resend lists every counted user, one index shard per call
        let mut all = Vec::new();
        let mut shard = Some(0);
        while let Some(s) = shard {
            let (counts, next) = r.user_counts_of_shard(s);
            all.extend(counts);
            shard = next;
        }
        all.sort();
        let mut want = vec![(r.user_hash(b"alice"), 2), (r.user_hash(b"zed"), 1)];
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn cluster_change_tracker_is_bounded_and_says_when_it_lost_some() {
        let r = Registry::new(RegistryConfig { shards: 1, ..RegistryConfig::default() });
        r.track_user_changes(true);
        for i in 0..5000u64 {
            connect(&r, &format!("c{i}"), &format!("u{i}"), i);
        }
        let (first, lost) = r.take_user_changes(10_000);
        assert!(lost, "more changed users than the tracker holds");
        assert_eq!(first.len(), 4096);
        assert_eq!(r.take_user_changes(10_000), (vec![], false));
    }
}
