//! One registry record (all that is known about one `SubscriberKey`) and the
//! state machine that moves it. Everything here runs under the shard lock; it
//! never locks anything itself. Endings produced by a transition are collected
//! in [`Ctx::endings`] and pushed to the history ring by the caller after the
//! shard lock is released. Key, username and pending connect live in the
//! shard's [`Store`] (pool.rs), so reads take it as an argument.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::{Millis, Peer, ProcId, Protocol, SubscriberKey};

use super::pool::{BytePool, Bytes, Slot, Table, NONE};
use super::{Applied, KeyRef, ConnectInfo, EndReason, Ending, SessionState, SessionView};

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
/// endings the event produced (their key is copied from the record).
pub(super) struct Ctx<'a> {
    pub now: Millis,
    pub pending_ttl: u64,
    pub next_gen: &'a mut u64,
    pub endings: Vec<Ending>,
    pub st: &'a mut Store,
}

impl Ctx<'_> {
    /// Generations come from a per-shard counter (a key always maps to the
    /// same shard), so they strictly increase per key even across removal
    /// and re-creation of its record, and never need a global atomic.
    fn new_gen(&mut self) -> u64 {
        *self.next_gen += 1;
        *self.next_gen
    }
}

/// A connect our auth accepted that is not confirmed yet (no on_register and
/// no wakeup). In the shard's table, not in the record: it only exists for
/// the few milliseconds of a registration, so steady-state records do not
/// pay for it.
pub(super) struct Pending {
    gen: u64,
    conn: ProcId,
    created: Millis,
    peer: Option<Peer>,
    username: Option<Bytes>,
    clean: bool,
    protocol: Protocol,
}

/// Times are stored in 48 bits (milliseconds up to the year 10889; larger
/// values saturate), which keeps the record at 96 bytes.
#[derive(Clone, Copy)]
struct T48([u8; 6]);

impl T48 {
    const MAX: u64 = (1 << 48) - 1;
    fn new(ms: Millis) -> T48 {
        let b = ms.min(Self::MAX).to_le_bytes();
        T48([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    fn get(self) -> Millis {
        let b = self.0;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
    }
}

// Bits of `Record::bits`. The session bits describe the current session.
const HAS_CUR: u16 = 1;
const HAS_CONN: u16 = 1 << 1;
const HAS_QUEUE: u16 = 1 << 2;
const ONLINE: u16 = 1 << 3;
/// on_register seen for `conn`.
const REGISTERED: u16 = 1 << 4;
const CLEAN: u16 = 1 << 5;
const MQTT5: u16 = 1 << 6;
const PEER_V4: u16 = 1 << 7;
const PEER_V6: u16 = 1 << 8;
/// `kb` holds a username after the key (kept across sessions so that the
/// same user's next session reuses the block).
const HAS_USER: u16 = 1 << 9;
const SESSION_BITS: u16 = HAS_CUR | HAS_CONN | HAS_QUEUE | ONLINE | REGISTERED | CLEAN | MQTT5 | PEER_V4 | PEER_V6;

/// A current session as the transitions build it.
struct NewSession<'u> {
    gen: u64,
    conn: Option<ProcId>,
    queue: Option<ProcId>,
    peer: Option<Peer>,
    username: UserIn<'u>,
    online: bool,
    registered: bool,
    clean: bool,
    protocol: Protocol,
}

/// A username to store: none, from outside the pool, or a pending
/// connect's (in the pool the record's bytes are written to).
#[derive(Clone, Copy)]
enum UserIn<'u> {
    No,
    Ext(&'u [u8]),
    Pooled(&'u Bytes),
}

/// The varint of `n` in `buf`; returns its length.
fn put_varint(buf: &mut [u8; 10], mut n: usize) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        buf[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    buf[i] = n as u8;
    i + 1
}

fn read_varint(b: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    let mut shift = 0;
    for (i, &c) in b.iter().enumerate() {
        n |= ((c & 0x7f) as usize) << shift;
        if c & 0x80 == 0 {
            return (n, i + 1);
        }
        shift += 7;
    }
    unreachable!("truncated varint in a record key")
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
    first_connect: T48,
    last_connect: T48,
    last_change: T48,
    last_end_at: T48,
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
pub(super) struct Snapshot {
    pub state: Option<SessionState>,
    pub pending: bool,
    /// Hashes of the users with a live (pending or online) session here,
    /// deduplicated (a same-user takeover counts once).
    pub users: [Option<u64>; 2],
}

impl Snapshot {
    pub const EMPTY: Snapshot = Snapshot {
        state: None,
        pending: false,
        users: [None, None],
    };
}

impl Record {
    /// A record for `key`, its bytes in `bytes`: give them back with
    /// [`Record::release`].
    pub fn new(key: KeyRef<'_>, index_hash: u32, now: Millis, bytes: &mut BytePool) -> Record {
        let mut varint = [0u8; 10];
        let n = put_varint(&mut varint, key.mountpoint.len());
        let kb = bytes.alloc(&[&varint[..n], key.mountpoint, key.client_id]);
        let t = T48::new(now);
        Record {
            key_len: u32::try_from(kb.len()).expect("key longer than 4 GiB"),
            kb,
            pending: NONE,
            gen: 0,
            conn: 0,
            queue: 0,
            first_connect: t,
            last_connect: t,
            last_change: t,
            last_end_at: T48::new(0),
            ip: [0; 16],
            port: 0,
            bits: 0,
            connect_count: 0,
            index_hash,
            last_end_reason: None,
        }
    }

    // ---- packed fields ----------------------------------------------------------

    fn has(&self, b: u16) -> bool {
        self.bits & b != 0
    }
    fn set(&mut self, b: u16, v: bool) {
        if v {
            self.bits |= b
        } else {
            self.bits &= !b
        }
    }
    fn has_cur(&self) -> bool {
        self.has(HAS_CUR)
    }
    fn online(&self) -> bool {
        self.has(HAS_CUR) && self.has(ONLINE)
    }
    fn conn(&self) -> Option<ProcId> {
        self.has(HAS_CONN).then_some(ProcId(self.conn))
    }
    fn queue(&self) -> Option<ProcId> {
        self.has(HAS_QUEUE).then_some(ProcId(self.queue))
    }
    fn set_conn(&mut self, p: Option<ProcId>) {
        self.set(HAS_CONN, p.is_some());
        self.conn = p.map_or(0, |p| p.0);
    }
    fn set_queue(&mut self, p: Option<ProcId>) {
        self.set(HAS_QUEUE, p.is_some());
        self.queue = p.map_or(0, |p| p.0);
    }
    fn protocol(&self) -> Protocol {
        if self.has(MQTT5) {
            Protocol::Mqtt5
        } else {
            Protocol::Mqtt3
        }
    }
    fn peer(&self) -> Option<Peer> {
        let ip = if self.has(PEER_V4) {
            IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
        } else if self.has(PEER_V6) {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            return None;
        };
        Some(Peer {
            ip,
            port: self.port,
        })
    }
    fn set_peer(&mut self, p: Option<Peer>) {
        self.bits &= !(PEER_V4 | PEER_V6);
        self.ip = [0; 16];
        self.port = 0;
        if let Some(p) = p {
            self.port = p.port;
            match p.ip {
                IpAddr::V4(a) => {
                    self.ip[..4].copy_from_slice(&a.octets());
                    self.bits |= PEER_V4;
                }
                IpAddr::V6(a) => {
                    self.ip = a.octets();
                    self.bits |= PEER_V6;
                }
            }
        }
    }
    /// Give the record's key bytes and pending connect back to the store:
    /// it is leaving the shard.
    pub fn release(&mut self, st: &mut Store) {
        if let Some(u) = self.drop_pending(st).and_then(|p| p.username) {
            st.bytes.free(u);
        }
        st.bytes.free(std::mem::replace(&mut self.kb, Bytes::EMPTY));
    }
    /// Take the pending connect out of the store (its username is still
    /// the store's: the caller frees it).
    fn drop_pending(&mut self, st: &mut Store) -> Option<Pending> {
        st.pending.take(std::mem::replace(&mut self.pending, NONE))
    }
    fn pending<'s>(&self, st: &'s Store) -> Option<&'s Pending> {
        st.pending.get(self.pending)
    }
    /// The current session's username.
    fn user<'s>(&self, st: &'s Store) -> Option<&'s [u8]> {
        (self.has(HAS_CUR) && self.has(HAS_USER)).then(|| &st.bytes.get(&self.kb)[self.key_len as usize..])
    }
    /// Store `u` after the key, in a new block only if it differs from the
    /// one stored.
    fn set_user(&mut self, bytes: &mut BytePool, u: UserIn<'_>) {
        let k = self.key_len as usize;
        let cur = bytes.get(&self.kb);
        let stored = self.has(HAS_USER).then(|| &cur[k..]);
        let new = match u {
            UserIn::No => None,
            UserIn::Ext(s) => Some(s),
            UserIn::Pooled(b) => Some(bytes.get(b)),
        };
        if stored == new {
            return;
        }
        // Both may be the pool's bytes: join them outside it first.
        let total = k + new.map_or(0, <[u8]>::len);
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if total <= stack.len() {
            &mut stack[..total]
        } else {
            heap.resize(total, 0);
            &mut heap
        };
        buf[..k].copy_from_slice(&cur[..k]);
        if let Some(new) = new {
            buf[k..].copy_from_slice(new);
        }
        let has_user = new.is_some();
        let old = std::mem::replace(&mut self.kb, bytes.alloc(&[buf]));
        bytes.free(old);
        self.set(HAS_USER, has_user);
    }
    fn set_times_change(&mut self, now: Millis) {
        self.last_change = T48::new(now);
    }

    /// Mountpoint and client id, borrowed from the store.
    pub fn key_parts<'s>(&self, st: &'s Store) -> (&'s [u8], &'s [u8]) {
        let kb = st.bytes.get(&self.kb);
        let (mp_len, n) = read_varint(kb);
        let key = &kb[..self.key_len as usize];
        (&key[n..n + mp_len], &key[n + mp_len..])
    }

    pub fn key_eq(&self, st: &Store, mountpoint: &[u8], client_id: &[u8]) -> bool {
        let (mp, cid) = self.key_parts(st);
        mp == mountpoint && cid == client_id
    }

    pub fn key(&self, st: &Store) -> SubscriberKey {
        let (mp, cid) = self.key_parts(st);
        SubscriberKey::new(mp, cid)
    }

    fn set_cur(&mut self, bytes: &mut BytePool, s: NewSession<'_>) {
        self.bits &= !SESSION_BITS;
        self.bits |= HAS_CUR;
        self.gen = s.gen;
        self.set_conn(s.conn);
        self.set_queue(s.queue);
        self.set_peer(s.peer);
        self.set_user(bytes, s.username);
        self.set(ONLINE, s.online);
        self.set(REGISTERED, s.registered);
        self.set(CLEAN, s.clean);
        self.set(MQTT5, s.protocol == Protocol::Mqtt5);
    }

    fn clear_cur(&mut self) {
        self.bits &= !SESSION_BITS;
    }

    /// on_register carries peer, username and protocol but not the clean
    /// flag: the one already known (from auth, or assumed at wakeup) stays.
    fn set_registered_info(&mut self, bytes: &mut BytePool, info: ConnectInfo<'_>) {
        self.set_peer(info.peer);
        self.set_user(bytes, info.username.map_or(UserIn::No, UserIn::Ext));
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

    pub fn snapshot(&self, st: &Store, hash_user: impl Fn(&[u8]) -> u64) -> Snapshot {
        let a = if self.online() { self.user(st) } else { None };
        let b = self.pending(st).and_then(|p| p.username.as_ref()).map(|u| st.bytes.get(u));
        let users = match (a, b) {
            (Some(a), Some(b)) if a == b => [Some(hash_user(a)), None],
            (a, b) => [a.map(&hash_user), b.map(&hash_user)],
        };
        Snapshot {
            state: self.state(),
            pending: self.has_pending(),
            users,
        }
    }

    fn set_end(&mut self, reason: EndReason, now: Millis) {
        self.last_end_reason = Some(reason);
        self.last_end_at = T48::new(now);
    }

    /// Record an ending for the current session, keeping it in place.
    fn end_cur(&mut self, cx: &mut Ctx<'_>, reason: EndReason) {
        assert!(self.has_cur(), "end_cur without a session");
        cx.endings.push(Ending {
            key: self.key(cx.st),
            generation: self.gen,
            reason,
            peer: self.peer(),
            username: self.user(cx.st).map(Box::from),
            started: self.last_connect.get(),
            ended: cx.now,
        });
        self.set_end(reason, cx.now);
    }

    /// Remove the current session, recording an ending for it.
    fn remove_cur(&mut self, cx: &mut Ctx<'_>, reason: EndReason) {
        self.end_cur(cx, reason);
        self.clear_cur();
    }

    /// End the current session because a new one replaces it: an online one
    /// was taken over; an offline one ends only if the new connect is clean
    /// (its stored session was discarded with no hook). A persistent connect
    /// over an offline session resumes it: no ending.
    fn replace_cur(&mut self, cx: &mut Ctx<'_>, new_is_clean: bool) {
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

    fn abandon_pending(&mut self, cx: &mut Ctx<'_>) {
        if let Some(p) = self.drop_pending(cx.st) {
            let username = p.username.map(|u| {
                let copy = Box::from(cx.st.bytes.get(&u));
                cx.st.bytes.free(u);
                copy
            });
            cx.endings.push(Ending {
                key: self.key(cx.st),
                generation: p.gen,
                reason: EndReason::Abandoned,
                peer: p.peer,
                username,
                started: p.created,
                ended: cx.now,
            });
            self.set_end(EndReason::Abandoned, cx.now);
            self.set_times_change(cx.now);
        }
    }

    /// Drop the pending connect if it is older than the TTL. Returns whether
    /// one was dropped.
    pub fn expire_pending(&mut self, cx: &mut Ctx<'_>) -> bool {
        match self.pending(cx.st) {
            Some(p) if cx.now.saturating_sub(p.created) > cx.pending_ttl => {
                self.abandon_pending(cx);
                true
            }
            _ => false,
        }
    }

    /// The pending connect becomes the current session.
    fn promote(&mut self, cx: &mut Ctx<'_>, queue: Option<ProcId>, registered: bool) {
        let p = self.drop_pending(cx.st).expect("promote without a pending connect");
        self.replace_cur(cx, p.clean);
        self.start(
            cx,
            NewSession {
                gen: p.gen,
                conn: Some(p.conn),
                queue,
                peer: p.peer,
                username: p.username.as_ref().map_or(UserIn::No, UserIn::Pooled),
                online: true,
                registered,
                clean: p.clean,
                protocol: p.protocol,
            },
        );
        if let Some(u) = p.username {
            cx.st.bytes.free(u);
        }
    }

    /// A confirmed connect we never saw accepted (another plugin in the chain
    /// authorised it, or our pending was lost): a new generation.
    fn start_unannounced(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: Option<ProcId>,
        queue: Option<ProcId>,
        info: Option<ConnectInfo<'_>>,
    ) {
        let clean = info.as_ref().is_some_and(|i| i.clean_session);
        self.replace_cur(cx, clean);
        let gen = cx.new_gen();
        let mut s = NewSession {
            gen,
            conn,
            queue,
            peer: None,
            username: UserIn::No,
            online: true,
            registered: info.is_some(),
            clean: false,
            protocol: Protocol::Mqtt3,
        };
        if let Some(info) = &info {
            s.peer = info.peer;
            s.username = info.username.map_or(UserIn::No, UserIn::Ext);
            s.clean = info.clean_session;
            s.protocol = info.protocol;
        }
        self.start(cx, s);
    }

    fn start(&mut self, cx: &mut Ctx<'_>, s: NewSession<'_>) {
        self.set_cur(&mut cx.st.bytes, s);
        self.connect_count = self.connect_count.saturating_add(1);
        self.last_connect = T48::new(cx.now);
        self.set_times_change(cx.now);
    }

    // ---- events -------------------------------------------------------------

    pub fn auth_accepted(&mut self, cx: &mut Ctx<'_>, conn: ProcId, info: ConnectInfo<'_>) -> u64 {
        // A second accepted connect before the first was confirmed: only the
        // newest can still win the registration; the older one is abandoned.
        self.abandon_pending(cx);
        let gen = cx.new_gen();
        let username = info.username.map(|u| cx.st.bytes.alloc(&[u]));
        self.pending = cx.st.pending.insert(Pending {
            gen,
            conn,
            created: cx.now,
            peer: info.peer,
            username,
            clean: info.clean_session,
            protocol: info.protocol,
        });
        self.set_times_change(cx.now);
        gen
    }

    pub fn registered(&mut self, cx: &mut Ctx<'_>, conn: ProcId, info: ConnectInfo<'_>) -> Applied {
        if self.pending(cx.st).is_some_and(|p| p.conn == conn) {
            // Normal promotion by our own accepted connect; the queue is not
            // known yet when on_register comes before the wakeup.
            self.promote(cx, None, true);
            // on_register carries the session as finally registered (after
            // any modifiers): it wins over what auth saw, but for the flag.
            self.set_registered_info(&mut cx.st.bytes, info);
            return Applied::Applied;
        }
        if self.has_cur() {
            let same_conn = self.conn() == Some(conn);
            // A session created by a wakeup we could not attribute (no conn
            // yet) is completed by the first on_register that follows.
            let adopt = self.online() && !self.has(HAS_CONN);
            if same_conn || adopt {
                if same_conn && self.has(REGISTERED) {
                    return Applied::Duplicate;
                }
                self.set_conn(Some(conn));
                self.set_registered_info(&mut cx.st.bytes, info);
                self.set(REGISTERED, true);
                self.set_times_change(cx.now);
                return Applied::Applied;
            }
        }
        if self.has_pending() {
            // A newer accepted connect is pending: this registration was
            // superseded (its own pending was replaced) and will be taken over.
            return Applied::Stale;
        }
        self.start_unannounced(cx, Some(conn), None, Some(info));
        Applied::Applied
    }

    pub fn woke_up(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if self.online() {
            if self.queue() == Some(queue) {
                return if self.has_pending() {
                    // Same queue woken again for a new connect (reuse).
                    self.promote(cx, Some(queue), false);
                    Applied::Applied
                } else {
                    Applied::Duplicate
                };
            }
            if !self.has(HAS_QUEUE) {
                // The current session was promoted by on_register before
                // its wakeup: this is its queue.
                self.set_queue(Some(queue));
                self.set_times_change(cx.now);
                return Applied::Applied;
            }
        }
        if self.has_pending() {
            self.promote(cx, Some(queue), false);
        } else {
            self.start_unannounced(cx, None, Some(queue), None);
        }
        Applied::Applied
    }

    pub fn went_offline(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if !self.has_cur() && !self.has_pending() {
            // Unknown key (plugin enabled on a running broker): we learn
            // of a persistent session only now.
            let gen = cx.new_gen();
            self.set_cur(&mut cx.st.bytes, NewSession {
                gen,
                conn: None,
                queue: Some(queue),
                peer: None,
                username: UserIn::No,
                online: false,
                registered: false,
                clean: false,
                protocol: Protocol::Mqtt3,
            });
            self.last_connect = T48::new(cx.now);
            self.set_times_change(cx.now);
            return Applied::Applied;
        }
        if self.has_cur() && self.queue() == Some(queue) {
            if !self.online() {
                return Applied::Duplicate;
            }
            self.set(ONLINE, false);
            let reason = if self.has_pending() {
                EndReason::TakenOver
            } else {
                EndReason::Offline
            };
            self.end_cur(cx, reason);
            self.set_times_change(cx.now);
            return Applied::Applied;
        }
        Applied::Stale
    }

    pub fn gone(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if self.is_empty() {
            return Applied::Unknown;
        }
        if self.has_cur() && self.queue() == Some(queue) {
            let reason = match (self.online(), self.has_pending()) {
                (true, true) => EndReason::TakenOver,
                (true, false) => EndReason::Gone,
                // Not observed (an offline queue removed for a clean
                // connect calls no hook), handled anyway.
                (false, true) => EndReason::Discarded,
                (false, false) => EndReason::Gone,
            };
            self.remove_cur(cx, reason);
            self.set_times_change(cx.now);
            return Applied::Applied;
        }
        Applied::Stale
    }

    pub fn expired(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if self.is_empty() {
            return Applied::Unknown;
        }
        if self.has_cur() && !self.online() && self.queue() == Some(queue) {
            self.remove_cur(cx, EndReason::Expired);
            self.set_times_change(cx.now);
            return Applied::Applied;
        }
        Applied::Stale
    }

    // ---- reads --------------------------------------------------------------

    pub fn view(&self, st: &Store) -> Option<SessionView> {
        let state = self.state()?;
        let pending_generation = self.pending(st).map(|p| p.gen);
        let last_end = self.last_end_reason.map(|r| (r, self.last_end_at.get()));
        let common = |generation, peer, username: Option<&[u8]>, clean_session, protocol| SessionView {
            key: self.key(st),
            state,
            generation,
            peer,
            username: username.map(Box::from),
            clean_session,
            protocol,
            first_connect: self.first_connect.get(),
            last_connect: self.last_connect.get(),
            last_change: self.last_change.get(),
            connect_count: u64::from(self.connect_count),
            queue: None,
            conn: None,
            pending_generation,
            last_end,
        };
        if self.has_cur() {
            Some(SessionView {
                queue: self.queue(),
                conn: self.conn(),
                ..common(
                    self.gen,
                    self.peer(),
                    self.user(st),
                    self.has(CLEAN),
                    self.protocol(),
                )
            })
        } else {
            let p = self.pending(st)?;
            Some(SessionView {
                conn: Some(p.conn),
                ..common(p.gen, p.peer, p.username.as_ref().map(|u| st.bytes.get(u)), p.clean, p.protocol)
            })
        }
    }

    // The fields the list filter looks at, without building a view. Apart,
    // so that a network filter reads no bytes outside the record.

    pub fn filter_peer(&self, st: &Store) -> Option<Peer> {
        if self.has_cur() {
            self.peer()
        } else {
            self.pending(st).and_then(|p| p.peer)
        }
    }

    pub fn filter_user<'s>(&self, st: &'s Store) -> Option<&'s [u8]> {
        if self.has_cur() {
            self.user(st)
        } else {
            self.pending(st)?.username.as_ref().map(|u| st.bytes.get(u))
        }
    }
}
