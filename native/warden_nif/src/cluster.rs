//! NIFs of the cluster: the shared username hash key, the node's changed
//! per-user counts to publish, and the other nodes' counts
//! (`Warden::remote`, which the firewall adds to the local count for
//! `max_sessions`). Used by vmq_warden_cluster_sync. And the registry's
//! rebuild from the broker after a restart (restore_session).

use rustler::{Atom, Binary, Encoder, Env, NifResult, Term};

use crate::decode::{self, SubscriberId};
use crate::diagnostics::{self as timing, Nif};
use crate::state::{now, WARDEN};
use crate::{atoms, encode};

mod cluster_atoms {
    rustler::atoms! { busy, restored, kept }
}

/// `Key`: 32 bytes every node of the cluster derives alike. `ok`, or
/// `busy` while users are counted (the index would mix two keys).
#[rustler::nif]
fn cluster_set_key(key: Binary) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Admin);
    let b = key.as_slice();
    if b.len() != 32 {
        return Err(rustler::Error::BadArg);
    }
    let k: [u64; 4] = std::array::from_fn(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes")));
    Ok(if WARDEN.registry.set_user_hash_key(k) { atoms::ok() } else { cluster_atoms::busy() })
}

/// The hash of a fixed text under the current key: peers compare it to
/// tell a node keyed otherwise (its counts would not match any user).
#[rustler::nif]
fn cluster_key_check() -> u64 {
    WARDEN.registry.user_hash(b"vmq_warden cluster key check")
}

/// On a dirty scheduler: turning the tracking on first counts every
/// session's user (`Registry::count_users`).
#[rustler::nif(schedule = "DirtyCpu")]
fn cluster_configure(track_changes: bool, max_bytes: usize) -> Atom {
    let _timed = timing::timed(Nif::Bulk);
    WARDEN.registry.track_user_changes(track_changes);
    WARDEN.remote.set_max_bytes(max_bytes);
    atoms::ok()
}

/// `{[{UserHash, Count}], LostChanges}`: at most `max` changed users.
#[rustler::nif]
fn cluster_local_changes(max: usize) -> (Vec<(u64, u32)>, bool) {
    let _timed = timing::timed(Nif::Admin);
    WARDEN.registry.take_user_changes(max)
}

/// `{[{UserHash, Count}], NextShard | done}`: one index shard of a full resend.
#[rustler::nif]
fn cluster_local_counts<'a>(env: Env<'a>, shard: usize) -> Term<'a> {
    let _timed = timing::timed(Nif::Admin);
    let (counts, next) = WARDEN.registry.user_counts_of_shard(shard);
    match next {
        Some(n) => (counts, n).encode(env),
        None => (counts, atoms::done()).encode(env),
    }
}

/// A peer's counts (the sync process passes at most 1,000 per call);
/// returns how many the byte bound dropped.
#[rustler::nif]
fn cluster_apply(node: Binary, updates: Vec<(u64, u32)>) -> usize {
    let _timed = timing::timed(Nif::Admin);
    WARDEN.remote.apply(node.as_slice(), &updates)
}

/// Dirty: a node's entries may be many (its share of the totals is taken
/// off in batches, see RemoteCounts::drop_node).
#[rustler::nif(schedule = "DirtyCpu")]
fn cluster_drop_node(node: Binary) -> usize {
    let _timed = timing::timed(Nif::Admin);
    WARDEN.remote.drop_node(node.as_slice())
}

#[rustler::nif]
fn cluster_remote_nodes(env: Env) -> Vec<Term> {
    WARDEN.remote.nodes().iter().map(|n| encode::bin(env, n)).collect()
}

/// The other nodes' count of `username`.
#[rustler::nif]
fn cluster_remote_count(username: Binary) -> usize {
    WARDEN.remote.total(WARDEN.registry.user_hash(username.as_slice())) as usize
}

#[rustler::nif(schedule = "DirtyCpu")]
fn cluster_reset() -> Atom {
    WARDEN.remote.clear();
    atoms::ok()
}

#[rustler::nif]
fn cluster_stats(env: Env) -> Term {
    let s = WARDEN.remote.stats();
    let n = |v: u64| v.encode(env);
    encode::map_of(
        env,
        &[
            ("nodes", n(s.nodes)),
            ("entries", n(s.entries)),
            ("bytes", n(s.bytes)),
            ("max_bytes", n(s.max_bytes)),
            ("dropped", n(s.dropped)),
        ],
    )
}

/// `restore_session(SubscriberId, QueuePid, Online)`, the rebuild after a
/// restart (vmq_warden_rebuild): the broker holds a session of this
/// subscriber id with queue `queue`, `online` or not.
/// `restored`, or `kept` when the hooks gave the key a record meanwhile.
#[rustler::nif]
fn restore_session<'a>(id: SubscriberId<'a>, queue: Term<'a>, online: bool) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Lookup);
    let queue = decode::proc_id(queue)?;
    Ok(if WARDEN.registry.restore(id.key_ref(), queue, online, None, now()) {
        cluster_atoms::restored()
    } else {
        cluster_atoms::kept()
    })
}
