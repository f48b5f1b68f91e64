//! The session registry: one record per `SubscriberKey`, fed by the broker's
//! session-lifecycle hooks, read by the operator API and by the firewall
//! (per-user live session counts).
//!
//! Concurrency: records live in `shards` independent `parking_lot::Mutex`ed
//! tables, chosen by a keyed (DoS-resistant) hash of the key. Per-shard
//! counters are atomics next to each shard (cache-line aligned) so `counts()`
//! and `stats()` never lock. The per-user index is sharded the same way. The
//! history ring has its own lock: under a shard's lock it is only ever
//! tried (`History::try_record`), else written after the shard's lock is
//! released. Lock order when both are held: record shard, then user shard.
//! Events (`events.rs`, off by default) are queued while the shard lock is
//! held, so one key's events keep the order they were applied in; the event
//! queue's lock is the innermost.
//!
//! State machine: see docs/DESIGN.md "Registry state machine" and
//! `record/`. The rules chosen for ambiguous cases are listed on
//! [`Registry`].

mod events;
mod history;
mod pool;
mod record;
mod restore;
mod user_key;
mod shard;
mod slab;
mod types;
mod users;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ahash::RandomState;
use parking_lot::Mutex;

use crate::events::{EventKind, EventQueue};
use crate::types::{Millis, ProcId};

use events::Emit;
use history::History;
use record::{CountedState, EndingCounts, Endings, EventContext, Record, Store};
use shard::*;
use slab::Slab;
pub use types::*;
use users::UserIndex;

// ---- registry -----------------------------------------------------------------

/// The sharded session registry. `Send + Sync`; every method takes `&self`.
///
/// The rules for the orders the broker produces, and the cases it leaves
/// ambiguous, are in docs/DESIGN.md ("Registry state machine") and on the
/// events in record/mod.rs; `model_tests.rs` restates them in the simplest code.
/// The per-user index counts, per record, the distinct users of its online
/// session and its pending connects: a takeover by the same user is one
/// session. It is keyed by a keyed 64-bit hash of the username.
pub struct Registry {
    shards: Box<[Shard]>,
    shard_mask: usize,
    shard_hasher: RandomState,
    /// Seeds of the username hash: random, or the cluster's shared key
    /// ([`Registry::set_user_hash_key`]), so that per-user counts can be
    /// exchanged between nodes by hash (cluster.rs).
    user_key: [AtomicU64; 4],
    users: UserIndex,
    /// Held by [`Registry::count_users`] through its scan; true once every
    /// record is counted.
    users_counted: Mutex<bool>,
    history: History,
    /// Settable at run time (`pending_ttl` in vernemq.conf).
    pending_ttl: AtomicU64,
    /// The session lifecycle as events (off by default): pushed under the
    /// shard lock, so one subscriber's events queue in the order the
    /// registry applied them.
    events: EventQueue,
    /// Tests only: runs in `count_users` after each hold of a shard's lock.
    #[cfg(test)]
    between_count_chunks: crate::testing::PausePoint,
}

/// Records `count_users` counts per hold of a shard's lock (some tens of
/// microseconds).
const COUNT_CHUNK: u32 = 256;

/// An event's (or a sweep's) endings on the shard's counters.
fn count_endings(shard: &Shard, counts: EndingCounts) {
    shard.add_n(C_ENDED, counts.ended);
    shard.add_n(C_TAKEN, counts.taken_over);
}

impl Registry {
    pub fn new(cfg: RegistryConfig) -> Registry {
        let n = cfg.shards.max(1).next_power_of_two();
        let shards = (0..n)
            .map(|_| Shard {
                inner: Mutex::new(ShardInner {
                    index: Index::default(),
                    slab: Slab::new(),
                    st: Store::new(),
                    next_gen: 0,
                }),
                c: Default::default(),
            })
            .collect();
        Registry {
            shards,
            shard_mask: n - 1,
            shard_hasher: RandomState::new(),
            user_key: user_key::random_user_key().map(AtomicU64::new),
            users: UserIndex::new(n),
            users_counted: Mutex::new(false),
            history: History::new(cfg.history_size),
            pending_ttl: AtomicU64::new(cfg.pending_ttl_ms),
            events: EventQueue::default(),
            #[cfg(test)]
            between_count_chunks: Default::default(),
        }
    }


    /// One keyed hash per event: bits 32.. pick the shard, the table inside
    /// uses the low bits (bucket) and the top 7 (control bytes).
    fn hash_key(&self, key: KeyRef<'_>) -> u64 {
        hash_parts(&self.shard_hasher, (key.mountpoint, key.client_id))
    }

    fn shard_index(&self, h: u64) -> usize {
        (h >> 32) as usize & self.shard_mask
    }

    fn shard_of_hash(&self, h: u64) -> &Shard {
        &self.shards[self.shard_index(h)]
    }

    fn hash_user(&self, u: &[u8]) -> u64 {
        let k = |i: usize| self.user_key[i].load(Relaxed);
        RandomState::with_seeds(k(0), k(1), k(2), k(3)).hash_one(u)
    }

    /// What `rec` contributes to the counters, its users only if it is
    /// counted in the per-user index.
    fn contribution(&self, rec: &Record, st: &Store) -> CountedState {
        rec.snapshot(st, rec.counted().then_some(|u: &[u8]| self.hash_user(u)))
    }

    /// The same after a change: once users are counted, a changed record
    /// is counted from then on (a record the scan has not reached yet
    /// included: its users go from none to its own).
    fn contribution_after_change(&self, rec: &mut Record, st: &Store) -> CountedState {
        if self.users.counting() {
            rec.mark_counted();
        }
        self.contribution(rec, st)
    }

    /// Starts the per-user index (`max_sessions`, the cluster's counts),
    /// which the hooks otherwise do not keep, and returns once every record
    /// is counted; at once if it already runs. Runs off the hooks' path
    /// (a dirty scheduler): it visits every record, `COUNT_CHUNK` records
    /// per hold of a shard's lock. From the flag on, every record a hook
    /// changes counts itself; the scan counts the others, each shard from
    /// its last slot down, so that a record moved down by a removal between
    /// two holds is visited (the list's argument, [`Registry::list_chunk`]).
    pub fn count_users(&self) {
        let mut counted = self.users_counted.lock();
        if *counted {
            return;
        }
        // Before the first lock below: a hook that takes a shard's lock after
        // the scan's sees the flag.
        self.users.start_counting();
        for shard in self.shards.iter() {
            let mut unvisited = u32::MAX;
            loop {
                let mut g = shard.inner.lock();
                let inner = &mut *g;
                unvisited = unvisited.min(inner.slab.len());
                let end = unvisited.saturating_sub(COUNT_CHUNK);
                while unvisited > end {
                    unvisited -= 1;
                    let rec = inner.slab.get_mut(unvisited);
                    if !rec.counted() {
                        let before = self.contribution(rec, &inner.st);
                        let after = self.contribution_after_change(rec, &inner.st);
                        self.account(shard, before, after);
                    }
                }
                drop(g);
                #[cfg(test)]
                self.between_count_chunks.reach();
                if unvisited == 0 {
                    break;
                }
            }
        }
        *counted = true;
    }

    /// Apply the counter and per-user-index consequences of one record's
    /// change. Called under the shard lock.
    fn account(&self, shard: &Shard, before: CountedState, after: CountedState) {
        if before.state != after.state {
            if let Some(i) = state_counter(before.state) {
                shard.sub(i);
            }
            if let Some(i) = state_counter(after.state) {
                shard.add(i);
            }
            match (before.state.is_some(), after.state.is_some()) {
                (false, true) => shard.add(C_LEN),
                (true, false) => shard.sub(C_LEN),
                _ => {}
            }
        }
        if before.pending != after.pending {
            if after.pending {
                shard.add(C_PENDING)
            } else {
                shard.sub(C_PENDING)
            }
        }
        if before.users != after.users {
            for u in before.users.iter() {
                if !after.users.contains(u) {
                    self.users.dec(u);
                }
            }
            for u in after.users.iter() {
                if !before.users.contains(u) {
                    self.users.inc(u);
                }
            }
        }
    }

    /// After the shard's lock: the event's endings counted, and those not
    /// yet in the history pushed there.
    fn finish(&self, shard: &Shard, carried: Vec<Ending>, counts: EndingCounts) {
        count_endings(shard, counts);
        self.history.push_all(carried);
    }

    /// Run one event on the key's record (creating an empty one if absent;
    /// it is inserted only if the event left something in it).
    fn with_record<R>(
        &self,
        key: KeyRef<'_>,
        now: Millis,
        emit: Emit<R>,
        f: impl FnOnce(&mut Record, &mut EventContext<'_>) -> R,
    ) -> (R, &Shard) {
        self.with_record_in(key, None, now, emit, true, f)
    }

    /// [`Registry::with_record`]; `new_user`: the username a record created
    /// here keeps after its key ([`Record::new`]); `endings_at_once`: the
    /// event's endings may go into the history while the shard is locked
    /// (false: `f` edits them in `cx.endings.carried`). With events on they
    /// are carried anyway: the events are made from them.
    fn with_record_in<R>(
        &self,
        key: KeyRef<'_>,
        new_user: Option<&[u8]>,
        now: Millis,
        emit: Emit<R>,
        endings_at_once: bool,
        f: impl FnOnce(&mut Record, &mut EventContext<'_>) -> R,
    ) -> (R, &Shard) {
        let events_on = self.events.is_on();
        let h = self.hash_key(key);
        let shard = self.shard_of_hash(h);
        let history = (endings_at_once && !events_on).then_some(&self.history);
        let (r, (carried, counts)) = {
            let mut g = shard.inner.lock();
            let inner = &mut *g;
            let found = inner.find(h, key);
            let mut cx = EventContext {
                now,
                pending_ttl: self.pending_ttl.load(Relaxed),
                next_gen: &mut inner.next_gen,
                endings: Endings::new(history, Vec::new()),
                st: &mut inner.st,
            };
            match found {
                Some(i) => {
                    let rec = inner.slab.get_mut(i);
                    let before = self.contribution(rec, cx.st);
                    rec.expire_pending(&mut cx);
                    let r = f(rec, &mut cx);
                    let after = self.contribution_after_change(rec, cx.st);
                    self.account(shard, before, after);
                    let empty = rec.is_empty();
                    let endings = cx.endings.take();
                    if events_on {
                        self.emit(key, rec, cx.st, &r, &emit, &endings.0, now);
                    }
                    if empty {
                        inner.remove(i);
                    }
                    (r, endings)
                }
                None => {
                    let mut rec = Record::new(key, new_user, h as u32, now, &mut cx.st.bytes);
                    let r = f(&mut rec, &mut cx);
                    let endings = cx.endings.take();
                    if events_on {
                        self.emit(key, &rec, cx.st, &r, &emit, &endings.0, now);
                    }
                    if rec.is_empty() {
                        rec.release(cx.st);
                    } else {
                        let after = self.contribution_after_change(&mut rec, cx.st);
                        self.account(shard, CountedState::EMPTY, after);
                        inner.insert(rec);
                    }
                    (r, endings)
                }
            }
        };
        self.finish(shard, carried, counts);
        (r, shard)
    }

    fn event(
        &self,
        key: KeyRef<'_>,
        now: Millis,
        what: &'static str,
        hook: Option<(EventKind, ProcId)>,
        f: impl FnOnce(&mut Record, &mut EventContext<'_>) -> Applied,
    ) -> Applied {
        let emit = Emit {
            hook: hook.map(|(kind, proc)| (kind, proc, (|r: &Applied| *r == Applied::Applied) as fn(&Applied) -> bool)),
        };
        let (r, shard) = self.with_record(key, now, emit, f);
        match r {
            Applied::Applied => {}
            Applied::Stale => shard.add(C_STALE),
            Applied::Duplicate => shard.add(C_DUP),
            Applied::Unknown => shard.add(C_UNKNOWN),
        }
        if r != Applied::Applied {
            tracing::trace!(event = what, outcome = ?r, "registry event not applied");
        }
        r
    }

    /// Our auth_on_register accepted `conn`: a pending connect with a new
    /// generation, returned.
    pub fn auth_accepted<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        conn: ProcId,
        info: ConnectInfo<'_>,
        now: Millis,
    ) -> u64 {
        self.with_record_in(key.into(), info.username, now, Emit::ENDINGS_ONLY, true, |r, cx| {
            r.auth_accepted(cx, conn, info)
        })
        .0
    }

    /// on_register / on_register_m5 from connection process `conn`.
    pub fn registered<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        conn: ProcId,
        info: ConnectInfo<'_>,
        now: Millis,
    ) -> Applied {
        self.event(key.into(), now, "registered", Some((EventKind::Registered, conn)), |r, cx| {
            r.registered(cx, conn, info)
        })
    }

    /// on_client_wakeup from queue process `queue`.
    pub fn woke_up<'k>(&self, key: impl Into<KeyRef<'k>>, queue: ProcId, now: Millis) -> Applied {
        self.event(key.into(), now, "woke_up", Some((EventKind::WokeUp, queue)), |r, cx| {
            r.woke_up(cx, queue)
        })
    }

    /// on_client_offline from queue process `queue`.
    pub fn went_offline<'k>(&self, key: impl Into<KeyRef<'k>>, queue: ProcId, now: Millis) -> Applied {
        self.event(key.into(), now, "went_offline", None, |r, cx| {
            r.went_offline(cx, queue)
        })
    }

    /// on_client_gone from queue process `queue`.
    pub fn gone<'k>(&self, key: impl Into<KeyRef<'k>>, queue: ProcId, now: Millis) -> Applied {
        self.event(key.into(), now, "gone", None, |r, cx| {
            r.gone(cx, queue)
        })
    }

    /// on_session_expired from queue process `queue`.
    pub fn expired<'k>(&self, key: impl Into<KeyRef<'k>>, queue: ProcId, now: Millis) -> Applied {
        self.event(key.into(), now, "expired", None, |r, cx| {
            r.expired(cx, queue)
        })
    }

    /// Compare the record of `key`, as read with `last_change ==
    /// seen_change`, with the broker's own view, and correct it: an online
    /// or offline session the broker does not have ends `Vanished`; an
    /// online one whose queue the broker holds offline goes offline
    /// (ending `Offline`). Runs off the hooks' path (the reconciler), so
    /// that no misread hook order can keep a ghost for longer than one
    /// reconciliation period.
    pub fn reconcile<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        broker: BrokerSession,
        seen_change: Millis,
        now: Millis,
    ) -> Reconciled {
        let key = key.into();
        let h = self.hash_key(key);
        if self.shard_of_hash(h).inner.lock().find(h, key).is_none() {
            return Reconciled::NotFound;
        }
        let (r, shard) = self.with_record(key, now, Emit::ENDINGS_ONLY, |rec, cx| rec.reconcile(cx, broker, seen_change));
        if r == Reconciled::Corrected {
            shard.add(C_RECONCILED);
        }
        r
    }


    /// The record of `key`. A pending connect older than the TTL is shown
    /// until the next event or sweep touches the record.
    pub fn lookup<'k>(&self, key: impl Into<KeyRef<'k>>) -> Option<SessionView> {
        let key = key.into();
        let h = self.hash_key(key);
        let g = self.shard_of_hash(h).inner.lock();
        g.find(h, key).and_then(|i| g.slab.get(i).view(&g.st))
    }

    /// `f` of a record's state and its session's username (the one
    /// `lookup` shows), read in place: what the firewall asks on every
    /// connect, without building a view.
    pub fn inspect<'k, R>(&self, key: impl Into<KeyRef<'k>>, f: impl FnOnce(SessionState, Option<&[u8]>) -> R) -> Option<R> {
        let key = key.into();
        let h = self.hash_key(key);
        let g = self.shard_of_hash(h).inner.lock();
        let record = g.slab.get(g.find(h, key)?);
        Some(f(record.state()?, record.filter_user(&g.st)))
    }

    /// Up to `limit` records matching `filter` (in no particular order).
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<SessionView> {
        let mut out = Vec::new();
        let mut cursor = Some(ListCursor::START);
        while let Some(c) = cursor {
            if out.len() >= limit {
                break;
            }
            cursor = self.list_chunk(filter, c, usize::MAX, &mut out, limit);
        }
        out
    }

    /// One bounded step of a listing: visits at most `max_slots` record
    /// slots from `cursor` on (at least one), holding one shard lock at a
    /// time, and appends the matching records to `out` until `out.len()`
    /// reaches `limit`. Returns where to continue, or `None` when every
    /// shard has been read. A cursor past the last shard is `None` at once.
    ///
    /// The registry may change between steps. Each shard is read from its
    /// last slot down to slot 0 because removal moves the last record into
    /// the freed slot and inserts append: a record present for the whole
    /// listing is never missed (a moved record is either already visited or
    /// lands below the cursor), a record inserted meanwhile may be missed,
    /// and a record is returned twice only if a removal below the cursor
    /// moved it there after it was visited (callers drop such repeats by key).
    pub fn list_chunk(
        &self,
        filter: &Filter,
        mut cursor: ListCursor,
        max_slots: usize,
        out: &mut Vec<SessionView>,
        limit: usize,
    ) -> Option<ListCursor> {
        let mut budget = max_slots.max(1);
        while let Some(shard) = self.shards.get(cursor.shard) {
            if budget == 0 || out.len() >= limit {
                return Some(cursor);
            }
            let g = shard.inner.lock();
            // The shard may have shrunk since the cursor was made.
            let mut slot = cursor.unvisited.min(g.slab.len());
            while slot > 0 && budget > 0 && out.len() < limit {
                slot -= 1;
                budget -= 1;
                let r = g.slab.get(slot);
                if matches(filter, r, &g.st) {
                    out.extend(r.view(&g.st));
                }
            }
            drop(g);
            if slot > 0 {
                return Some(ListCursor { shard: cursor.shard, unvisited: slot });
            }
            cursor = ListCursor::shard_start(cursor.shard + 1);
        }
        None
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn sum(&self, i: usize) -> u64 {
        self.shards.iter().map(|s| s.get(i)).sum()
    }

    /// Records per state; lock-free (sums the per-shard counters).
    pub fn counts(&self) -> StateCounts {
        StateCounts {
            authenticated: self.sum(C_AUTH),
            online: self.sum(C_ONLINE),
            offline: self.sum(C_OFFLINE),
        }
    }

    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            live: self.sum(C_LEN),
            stale_events: self.sum(C_STALE),
            duplicate_events: self.sum(C_DUP),
            unknown_events: self.sum(C_UNKNOWN),
            taken_over: self.sum(C_TAKEN),
            ended: self.sum(C_ENDED),
            reconciled: self.sum(C_RECONCILED),
            history_len: self.history.len() as u64,
            shards: self.shards.len() as u64,
        }
    }

    /// Pending and online sessions of `username` (see the index rule
    /// above); 0 for everyone until [`Registry::count_users`].
    pub fn live_sessions_of_user(&self, username: &[u8]) -> usize {
        self.live_sessions_of_user_hash(self.hash_user(username))
    }

    /// The same, for a username already hashed with [`Registry::user_hash`].
    pub fn live_sessions_of_user_hash(&self, user_hash: u64) -> usize {
        self.users.get(user_hash) as usize
    }

    /// Newest first.
    pub fn recent_endings(&self, limit: usize) -> Vec<Ending> {
        self.history.recent(limit)
    }

    /// Drop pending connects older than the TTL (ending `Abandoned`); records
    /// left empty are removed. Then a shard store left empty gives its
    /// memory back (pool.rs: not from a hook). Returns how many were dropped.
    pub fn sweep(&self, now: Millis) -> usize {
        let mut dropped = 0;
        let mut all_endings = Vec::new();
        for shard in self.shards.iter() {
            let mut endings = Vec::new();
            let trimmed = {
                let mut g = shard.inner.lock();
                if shard.get(C_PENDING) > 0 {
                    dropped += self.expire_pending_in(shard, &mut g, now, &mut endings);
                    if self.events.is_on() {
                        for e in &endings {
                            self.events.push(events::ending_event(e, None));
                        }
                    }
                }
                g.st.trim()
            };
            drop(trimmed);
            all_endings.append(&mut endings);
        }
        // One history batch in key order, so a sweep's endings do not depend
        // on hash-map iteration order.
        all_endings.sort_by(|a, b| a.key.cmp(&b.key));
        self.history.push_all(all_endings);
        dropped
    }

    /// The sweep's pass over one locked shard: drops the pending connects
    /// older than the TTL, adding their endings to `endings`. Returns how
    /// many were dropped.
    fn expire_pending_in(&self, shard: &Shard, inner: &mut ShardInner, now: Millis, endings: &mut Vec<Ending>) -> usize {
        let pending_ttl = self.pending_ttl.load(Relaxed);
        let mut dropped = 0;
        let mut i = 0;
        while i < inner.slab.len() {
            let rec = inner.slab.get_mut(i);
            if !rec.has_pending() {
                i += 1;
                continue;
            }
            let mut cx = EventContext {
                now,
                pending_ttl,
                next_gen: &mut inner.next_gen,
                // a sweep's endings go to the history as one batch, in key order
                endings: Endings::new(None, std::mem::take(endings)),
                st: &mut inner.st,
            };
            let before = self.contribution(rec, cx.st);
            let n = rec.expire_pending(&mut cx);
            if n > 0 {
                dropped += n;
                let after = self.contribution_after_change(rec, cx.st);
                self.account(shard, before, after);
            }
            let (carried, counts) = cx.endings.take();
            *endings = carried;
            count_endings(shard, counts);
            if rec.is_empty() {
                // The last record moves into slot i: look at it next.
                inner.remove(i);
            } else {
                i += 1;
            }
        }
        dropped
    }

    pub fn set_history_size(&self, n: usize) {
        self.history.set_capacity(n);
    }

    pub fn set_pending_ttl(&self, ms: u64) {
        self.pending_ttl.store(ms, Relaxed);
    }

    /// Forget every record and the history, and reset the event counters.
    /// Generation counters are kept, so generations stay increasing per key.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut g = shard.inner.lock();
            for rec in g.slab.iter() {
                self.account(shard, self.contribution(rec, &g.st), CountedState::EMPTY);
            }
            g.clear();
            for i in [C_STALE, C_DUP, C_UNKNOWN, C_TAKEN, C_ENDED, C_RECONCILED] {
                shard.c[i].store(0, Relaxed);
            }
        }
        self.history.clear();
        self.events.reset();
    }

    /// Number of records (any state).
    pub fn len(&self) -> usize {
        self.sum(C_LEN) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn matches(f: &Filter, r: &Record, st: &Store) -> bool {
    if let Some(st) = f.state {
        if r.state() != Some(st) {
            return false;
        }
    }
    if f.mountpoint.is_some() || f.client_id_prefix.is_some() {
        let (mp, cid) = r.key_parts(st);
        if let Some(m) = &f.mountpoint {
            if mp != m.as_slice() {
                return false;
            }
        }
        if let Some(p) = &f.client_id_prefix {
            if !cid.starts_with(p) {
                return false;
            }
        }
    }
    if let Some(net) = &f.network {
        if !r.filter_peer_in(st, net) {
            return false;
        }
    }
    if let Some(u) = &f.username {
        if r.filter_user(st) != Some(u.as_slice()) {
            return false;
        }
    }
    true
}
