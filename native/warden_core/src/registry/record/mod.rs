//! One registry record (all that is known about one `SubscriberKey`) and the
//! state machine that moves it. Everything here runs under the shard lock; it
//! never locks anything itself. Endings produced by a transition are collected
//! in [`EventContext::endings`] and pushed to the history ring by the caller after the
//! shard lock is released. Key, username and pending connect live in the
//! shard's [`Store`] (pool.rs), so reads take it as an argument.

use crate::types::{Millis, Peer, ProcId, Protocol, SubscriberKey};

use super::history::{EndingRef, History};
use super::pool::{BytePool, Bytes, Slot, Table, NONE};
use super::{Applied, BrokerSession, ConnectInfo, EndReason, Ending, KeyRef, Reconciled, SessionState, SessionView};

mod facts;
mod hook_events;
mod packed;
mod pending_list;
mod reads;
mod restore;

use packed::*;

/// What a shard's records keep outside themselves (pool.rs says why).
pub(super) struct Store {
    pub bytes: BytePool,
    pub pending: Table<Pending>,
}

impl Store {
    pub fn new() -> Store {
        Store {
            bytes: BytePool::new(),
            pending: Table::new(),
        }
    }

    /// Memory the store no longer needs (see pool.rs), for the caller to
    /// drop once the shard lock is released.
    pub fn trim(&mut self) -> Trimmed {
        (self.bytes.trim(), self.pending.trim())
    }
}

/// Blocks and chunks [`Store::trim`] let go of.
pub(super) type Trimmed = (Vec<Box<[u8]>>, Vec<Vec<Slot<Pending>>>);

/// Per-event context: the clock, the shard's generation counter and the
/// endings the event produced.
pub(super) struct EventContext<'a> {
    pub now: Millis,
    pub pending_ttl: u64,
    pub next_gen: &'a mut u64,
    pub endings: Endings<'a>,
    pub st: &'a mut Store,
}

/// The endings of one event: written into the history at once when it is
/// given and its lock is free (history.rs), else copied out (`carried`)
/// for the caller to push after the shard's lock; counted either way.
pub(super) struct Endings<'a> {
    history: Option<&'a History>,
    pub carried: Vec<Ending>,
    counts: EndingCounts,
}

/// An event's endings, for the shard's counters.
#[derive(Clone, Copy, Default)]
pub(super) struct EndingCounts {
    pub ended: u64,
    pub taken_over: u64,
}

impl<'a> Endings<'a> {
    pub fn new(history: Option<&'a History>, carried: Vec<Ending>) -> Endings<'a> {
        Endings { history, carried, counts: EndingCounts::default() }
    }

    fn push(&mut self, e: EndingRef<'_>) {
        self.counts.ended += 1;
        self.counts.taken_over += u64::from(e.reason == EndReason::TakenOver);
        if !self.history.is_some_and(|h| h.try_record(e)) {
            self.carried.push(e.to_owned());
        }
    }

    pub fn take(&mut self) -> (Vec<Ending>, EndingCounts) {
        (std::mem::take(&mut self.carried), std::mem::take(&mut self.counts))
    }
}

impl EventContext<'_> {
    /// Generations come from a per-shard counter (a key always maps to the
    /// same shard), so they strictly increase per key even across removal
    /// and re-creation of its record, and never need a global atomic.
    fn new_gen(&mut self) -> u64 {
        *self.next_gen += 1;
        *self.next_gen
    }
}

/// Accepted connects that may wait at once per key: the broker can run
/// several auths for one client id before any registers (concurrent
/// connects); past this the oldest gives way.
pub(super) const MAX_PENDING: usize = 8;

/// A connect that is not the current session yet: accepted by our auth, or
/// registered (on_register seen) and waiting for its queue's wakeup. In the
/// shard's table, not in the record: it only exists for the few
/// milliseconds of a registration, so steady-state records do not pay for
/// it. A key's pending connects form a list, newest first.
pub(super) struct Pending {
    gen: u64,
    conn: ProcId,
    created: Millis,
    peer: Option<Peer>,
    username: PendingUser,
    clean: bool,
    protocol: Protocol,
    /// on_register seen: its place in the order of registrations (a number
    /// from the generation counter); its info replaced auth's but the flag.
    registered: Option<u64>,
    /// The next older pending connect of the key, or `NONE`.
    next: u32,
    /// Kept on the list's head only: a queue that woke while connects were
    /// pending, not yet claimed by an on_register (the wakeup names the
    /// queue, not the connection).
    woken: Option<ProcId>,
}

/// A current session as the transitions build it.
struct NewSession<'u> {
    gen: u64,
    conn: Option<ProcId>,
    queue: Option<ProcId>,
    peer: Option<Peer>,
    username: UsernameSource<'u>,
    online: bool,
    registered: bool,
    clean: bool,
    protocol: Protocol,
}

/// A username to store: none, from outside the pool, a pending connect's
/// (in the pool the record's bytes are written to), or the one the record
/// keeps already.
#[derive(Clone, Copy)]
enum UsernameSource<'u> {
    Absent,
    Borrowed(&'u [u8]),
    Pooled(&'u Bytes),
    Kept,
}

/// A pending connect's username: none, the one its record keeps after the
/// key (most connects: a client id's user rarely changes, and a new record
/// is created with it), or a copy of its own. A record about to keep
/// another name first gives its pending connects copies of the old one
/// (`unshare_kept_user`).
pub(super) enum PendingUser {
    Absent,
    Kept,
    Own(Bytes),
}

impl PendingUser {
    /// Gives a copy of its own back to the pool.
    fn free(self, bytes: &mut BytePool) {
        if let PendingUser::Own(b) = self {
            bytes.free(b);
        }
    }
}

/// All that is known about one key, compact (one pool block for key and
/// username, flags in bits, peer and times packed): the current session
/// (online, or offline with its persistent queue kept by the broker; present
/// when `HAS_CUR`), the pending connect, and the key's history fields.
pub(super) struct Record {
    /// `[varint mountpoint length][mountpoint][client id][username]`; the key
    /// part is `kb[..key_len]`.
    kb: Bytes,
    /// Slot in the shard's pending table, or `NONE`.
    pending: u32,
    gen: u64,
    conn: u64,
    queue: u64,
    first_connect: Millis48,
    last_connect: Millis48,
    last_change: Millis48,
    last_end_at: Millis48,
    /// IPv4 in the first 4 bytes when `PEER_V4`.
    ip: [u8; 16],
    port: u16,
    bits: u16,
    key_len: u32,
    connect_count: u32,
    /// The low 32 bits of the key's hash, as its index bucket keeps them:
    /// moving the record to another slot (a removal below it) finds the
    /// bucket without reading and hashing the key bytes.
    index_hash: u32,
    last_end_reason: Option<EndReason>,
}

/// What a record contributes to the per-shard counters and the per-user
/// index; compared before and after every transition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct CountedState {
    pub state: Option<SessionState>,
    pub pending: bool,
    /// Hashes of the users with a live (pending or online) session here,
    /// deduplicated (a same-user takeover counts once); none for a record
    /// whose users are not counted.
    pub users: UserHashes,
}

impl CountedState {
    pub const EMPTY: CountedState = CountedState {
        state: None,
        pending: false,
        users: UserHashes::NONE,
    };
}

/// A small set of user hashes, packed (a state is built and compared twice
/// per hook: the packed set is copied in place, where an array of
/// `Option<u64>` took a call to `memcpy`).
#[derive(Clone, Copy, Debug)]
pub(super) struct UserHashes {
    n: u8,
    /// `hashes[..n]`.
    hashes: [u64; MAX_PENDING + 1],
}

impl UserHashes {
    pub const NONE: UserHashes = UserHashes { n: 0, hashes: [0; MAX_PENDING + 1] };

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.hashes[..usize::from(self.n)].iter().copied()
    }

    pub fn contains(&self, h: u64) -> bool {
        self.iter().any(|x| x == h)
    }

    fn insert(&mut self, h: u64) {
        if !self.contains(h) {
            self.hashes[usize::from(self.n)] = h;
            self.n += 1;
        }
    }
}

/// The same hashes in the same order (both states are built by the same
/// walk; the same set in another order compares unequal, and `account`
/// then finds nothing to change): the counts first, so that two empty
/// sets (users not counted) compare without a call to `memcmp`.
impl PartialEq for UserHashes {
    fn eq(&self, other: &UserHashes) -> bool {
        self.n == other.n && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}

impl Eq for UserHashes {}

impl Record {
    /// A record for `key`, its bytes in `bytes`: give them back with
    /// [`Record::release`]. `username`: the one its first session will
    /// most likely have (an accepted connect's), stored after the key at
    /// once: the session's start then finds it there and writes no new
    /// block (an allocation, a copy and a free fewer in a new client's
    /// connect).
    pub fn new(key: KeyRef<'_>, username: Option<&[u8]>, index_hash: u32, now: Millis, bytes: &mut BytePool) -> Record {
        let mut varint = [0u8; 10];
        let n = put_varint(&mut varint, key.mountpoint.len());
        let user = username.unwrap_or_default();
        let kb = bytes.alloc(&[&varint[..n], key.mountpoint, key.client_id, user]);
        let t = Millis48::new(now);
        Record {
            key_len: u32::try_from(kb.len() - user.len()).expect("key longer than 4 GiB"),
            kb,
            pending: NONE,
            gen: 0,
            conn: 0,
            queue: 0,
            first_connect: t,
            last_connect: t,
            last_change: t,
            last_end_at: Millis48::new(0),
            ip: [0; 16],
            port: 0,
            connect_count: 0,
            index_hash,
            last_end_reason: None,
            bits: if username.is_some() { HAS_USER } else { 0 },
        }
    }

    /// on_register carries peer, username and protocol but not the clean
    /// flag: the one already known (from auth, or assumed at wakeup) stays.
    /// Without a username the one known stays too: the broker drops the
    /// `username` modifier for a client that sent none, and the identity
    /// our auth admitted (a certificate's) is the effective one.
    fn set_registered_info(&mut self, st: &mut Store, info: ConnectInfo<'_>) {
        self.set_peer(info.peer);
        if let Some(u) = info.username {
            self.set_user(st, UsernameSource::Borrowed(u));
        }
        self.set(MQTT5, info.protocol == Protocol::Mqtt5);
    }

    /// A record with neither a session nor a pending connect leaves the map.
    pub fn is_empty(&self) -> bool {
        !self.has_cur() && !self.has_pending()
    }

    pub fn state(&self) -> Option<SessionState> {
        if self.has_cur() {
            Some(if self.online() {
                SessionState::Online
            } else {
                SessionState::Offline
            })
        } else if self.has_pending() {
            Some(SessionState::Authenticated)
        } else {
            None
        }
    }

    pub fn index_hash(&self) -> u32 {
        self.index_hash
    }

    pub fn has_pending(&self) -> bool {
        self.pending != NONE
    }

    /// What the record contributes to the counters; its users' hashes only
    /// with `hash_user`, which the per-user index needs and nothing else.
    pub fn snapshot(&self, st: &Store, hash_user: Option<impl Fn(&[u8]) -> u64>) -> CountedState {
        let mut users = UserHashes::NONE;
        if let Some(hash_user) = hash_user {
            let online_user = if self.online() { self.user(st) } else { None };
            let (slots, count) = self.pending_slots(st);
            let pending_users = slots[..count].iter().filter_map(|&i| self.pending_user(st.pending.get(i)?, st));
            for u in online_user.into_iter().chain(pending_users) {
                users.insert(hash_user(u));
            }
        }
        CountedState {
            state: self.state(),
            pending: self.has_pending(),
            users,
        }
    }

    /// Whether the record's users are in the per-user index.
    pub fn counted(&self) -> bool {
        self.has(COUNTED)
    }

    pub fn mark_counted(&mut self) {
        self.set(COUNTED, true);
    }

    fn set_end(&mut self, reason: EndReason, now: Millis) {
        self.last_end_reason = Some(reason);
        self.last_end_at = Millis48::new(now);
    }

    /// Record an ending for the current session, keeping it in place.
    fn end_cur(&mut self, cx: &mut EventContext<'_>, reason: EndReason) {
        assert!(self.has_cur(), "end_cur without a session");
        cx.endings.push(EndingRef {
            key: self.key_ref(cx.st),
            generation: self.gen,
            reason,
            peer: self.peer(),
            username: self.user(cx.st),
            started: self.last_connect.get(),
            ended: cx.now,
            kicked_by: None,
        });
        self.set_end(reason, cx.now);
    }

    /// Remove the current session, recording an ending for it.
    fn remove_cur(&mut self, cx: &mut EventContext<'_>, reason: EndReason) {
        self.end_cur(cx, reason);
        self.clear_cur();
    }

    /// End the current session because a new one replaces it: an online one
    /// was taken over; an offline one ends only if the new connect is clean
    /// (its stored session was discarded with no hook). A persistent connect
    /// over an offline session resumes it: no ending.
    fn replace_cur(&mut self, cx: &mut EventContext<'_>, new_is_clean: bool) {
        if self.has_cur() {
            if self.online() {
                self.remove_cur(cx, EndReason::TakenOver)
            } else if new_is_clean {
                self.remove_cur(cx, EndReason::Discarded)
            } else {
                self.clear_cur()
            }
        }
    }

    /// End the pending connect in `slot` with `reason` (`Abandoned`: never
    /// confirmed; `TakenOver`: registered, then overtaken by a newer one).
    fn end_pending(&mut self, cx: &mut EventContext<'_>, slot: u32, reason: EndReason) {
        let p = self.take_pending(cx.st, slot);
        cx.endings.push(EndingRef {
            key: self.key_ref(cx.st),
            generation: p.gen,
            reason,
            peer: p.peer,
            username: self.pending_user(&p, cx.st),
            started: p.created,
            ended: cx.now,
            kicked_by: None,
        });
        p.username.free(&mut cx.st.bytes);
        self.set_end(reason, cx.now);
        self.set_times_change(cx.now);
    }

    fn abandon_pending(&mut self, cx: &mut EventContext<'_>, slot: u32) {
        self.end_pending(cx, slot, EndReason::Abandoned);
    }

    /// Drop the pending connects older than the TTL. Returns how many.
    pub fn expire_pending(&mut self, cx: &mut EventContext<'_>) -> usize {
        let (slots, n) = self.pending_slots(cx.st);
        let mut dropped = 0;
        for &i in &slots[..n] {
            if cx.st.pending.get(i).is_some_and(|p| cx.now.saturating_sub(p.created) > cx.pending_ttl) {
                self.abandon_pending(cx, i);
                dropped += 1;
            }
        }
        dropped
    }

    /// The pending connect in `slot` becomes the current session, on `queue`.
    fn promote(&mut self, cx: &mut EventContext<'_>, slot: u32, queue: ProcId) {
        let p = self.take_pending(cx.st, slot);
        self.replace_cur(cx, p.clean);
        self.start(
            cx,
            NewSession {
                gen: p.gen,
                conn: Some(p.conn),
                queue: Some(queue),
                peer: p.peer,
                username: match &p.username {
                    PendingUser::Absent => UsernameSource::Absent,
                    PendingUser::Kept => UsernameSource::Kept,
                    PendingUser::Own(b) => UsernameSource::Pooled(b),
                },
                online: true,
                registered: p.registered.is_some(),
                clean: p.clean,
                protocol: p.protocol,
            },
        );
        p.username.free(&mut cx.st.bytes);
    }

    /// A confirmed connect we never saw accepted (another plugin in the chain
    /// authorised it, or our pending was lost): a new generation.
    fn start_unannounced(
        &mut self,
        cx: &mut EventContext<'_>,
        conn: Option<ProcId>,
        queue: ProcId,
        info: Option<ConnectInfo<'_>>,
    ) {
        let clean = info.as_ref().is_some_and(|i| i.clean_session);
        self.replace_cur(cx, clean);
        let gen = cx.new_gen();
        let mut s = NewSession {
            gen,
            conn,
            queue: Some(queue),
            peer: None,
            username: UsernameSource::Absent,
            online: true,
            registered: info.is_some(),
            clean: false,
            protocol: Protocol::Mqtt3,
        };
        if let Some(info) = &info {
            s.peer = info.peer;
            s.username = info.username.map_or(UsernameSource::Absent, UsernameSource::Borrowed);
            s.clean = info.clean_session;
            s.protocol = info.protocol;
        }
        self.start(cx, s);
    }

    fn start(&mut self, cx: &mut EventContext<'_>, s: NewSession<'_>) {
        self.set_cur(cx.st, s);
        self.connect_count = self.connect_count.saturating_add(1);
        self.last_connect = Millis48::new(cx.now);
        self.set_times_change(cx.now);
    }

    /// on_register's info on a pending connect (the flag stays auth's, and
    /// so does the username when on_register carries none: see
    /// `set_registered_info`).
    fn set_pending_registered(&mut self, cx: &mut EventContext<'_>, slot: u32, info: ConnectInfo<'_>) {
        let order = cx.new_gen();
        let Some(p) = cx.st.pending.get_mut(slot) else { return };
        p.registered = Some(order);
        p.peer = info.peer;
        p.protocol = info.protocol;
        let same = match (cx.st.pending.get(slot), info.username) {
            (_, None) => true,
            (Some(p), Some(u)) => self.pending_user(p, cx.st) == Some(u),
            (None, Some(_)) => false,
        };
        if !same {
            let username = self.new_pending_user(&mut cx.st.bytes, info.username);
            if let Some(p) = cx.st.pending.get_mut(slot) {
                std::mem::replace(&mut p.username, username).free(&mut cx.st.bytes);
            }
        }
        self.set_times_change(cx.now);
    }
}
