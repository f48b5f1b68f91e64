//! The auth contexts waiting between the steps of one login, named by a token.
//!
//! Not NIF resources: a resource left as garbage in a long-lived connection
//! process would pin the library after the plugin is disabled, and the next
//! enable could not load a fresh one. Entries live for the microseconds to
//! milliseconds between the steps; one whose step never came (its process
//! died) is dropped by `sweep` after `TTL_MS`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::RandomState;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::firewall::PendingAuth;
use crate::types::{Millis, ProcId};

/// What survives between the auth steps: the firewall's pending decision
/// (the request, bound to the policy snapshot it started with), the
/// connection process it is for, and, for the slow step, the password the
/// normal step decoded (wiped on drop).
pub struct AuthContext<'a> {
    pub pending: PendingAuth<'a>,
    pub conn: ProcId,
    pub password: Option<Zeroizing<Vec<u8>>>,
}

impl AuthContext<'_> {
    /// The context owning the request's bytes, to be kept for the next step.
    pub fn into_owned(self) -> AuthContext<'static> {
        AuthContext { pending: self.pending.into_owned(), conn: self.conn, password: self.password }
    }
}

const SHARDS: usize = 16;
/// Far above the number of connects that can be between two steps at once
/// (the slow step runs on the few dirty schedulers); a flood beyond it gets
/// the failure decision rather than unbounded memory.
const MAX_PER_SHARD: usize = 8192;
pub(crate) const TTL_MS: Millis = 30_000;

struct Entry {
    /// Boxed only here, when a login waits for its next step.
    ctx: Box<AuthContext<'static>>,
    created: Millis,
}

type Shard = HashMap<u64, Entry, RandomState>;

pub struct PendingAuths {
    shards: Vec<Mutex<Shard>>,
    next: AtomicU64,
}

impl Default for PendingAuths {
    fn default() -> Self {
        PendingAuths { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), next: AtomicU64::new(1) }
    }
}

impl PendingAuths {
    fn shard(&self, token: u64) -> &Mutex<Shard> {
        &self.shards[(token as usize) % SHARDS]
    }

    /// A new token for `ctx`, or `None` when the table is full.
    pub fn insert(&self, ctx: AuthContext<'static>, now: Millis) -> Option<u64> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.put(token, ctx, now).then_some(token)
    }

    /// Store `ctx` under `token` (also to put it back between two steps).
    pub fn put(&self, token: u64, ctx: AuthContext<'static>, now: Millis) -> bool {
        let mut shard = self.shard(token).lock();
        if shard.len() >= MAX_PER_SHARD {
            shard.retain(|_, e| now.saturating_sub(e.created) < TTL_MS);
            if shard.len() >= MAX_PER_SHARD {
                return false;
            }
        }
        shard.insert(token, Entry { ctx: Box::new(ctx), created: now });
        true
    }

    /// The context of `token`, only for the connection process that started it.
    pub fn take(&self, token: u64, caller: ProcId) -> Option<AuthContext<'static>> {
        let mut shard = self.shard(token).lock();
        match shard.get(&token) {
            Some(e) if e.ctx.conn == caller => shard.remove(&token).map(|e| *e.ctx),
            _ => None,
        }
    }

    /// Drop contexts whose next step never came.
    pub fn sweep(&self, now: Millis) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut s = s.lock();
                let before = s.len();
                s.retain(|_, e| now.saturating_sub(e.created) < TTL_MS);
                before - s.len()
            })
            .sum()
    }

    pub fn clear(&self) {
        self.shards.iter().for_each(|s| s.lock().clear());
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

}
