//! One registry record (all that is known about one `SubscriberKey`) and the
//! state machine that moves it. Everything here runs under the shard lock; it
//! never locks anything itself. Endings produced by a transition are collected
//! in [`Ctx::endings`] and pushed to the history ring by the caller after the
//! shard lock is released.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::{Millis, Peer, ProcId, Protocol, SubscriberKey};

use super::{Applied, KeyRef, ConnectInfo, EndReason, Ending, SessionState, SessionView};

/// Per-event context: the clock, the shard's generation counter and the
/// endings the event produced (their key is copied from the record).
pub(super) struct Ctx<'a> {
    pub now: Millis,
    pub pending_ttl: u64,
    pub next_gen: &'a mut u64,
    pub endings: Vec<Ending>,
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
/// no wakeup). Boxed in the record: it only exists for the few milliseconds of
/// a registration, so steady-state records do not pay for it.
pub(super) struct Pending {
    gen: u64,
    conn: ProcId,
    created: Millis,
    peer: Option<Peer>,
    username: Option<Box<[u8]>>,
    clean: bool,
    protocol: Protocol,
}

/// Times are stored in 48 bits (milliseconds up to the year 10889; larger
/// values saturate), which keeps the record at 104 bytes.
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
/// same user's next session reuses the allocation).
const HAS_USER: u16 = 1 << 9;
const SESSION_BITS: u16 = HAS_CUR | HAS_CONN | HAS_QUEUE | ONLINE | REGISTERED | CLEAN | MQTT5 | PEER_V4 | PEER_V6;

/// A current session as the transitions build it.
struct NewSession<'u> {
    gen: u64,
    conn: Option<ProcId>,
    queue: Option<ProcId>,
    peer: Option<Peer>,
    username: Option<&'u [u8]>,
    online: bool,
    registered: bool,
    clean: bool,
    protocol: Protocol,
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
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

/// All that is known about one key, compact (one allocation for key and
/// username, flags in bits, peer and times packed): the current session
/// (online, or offline with its persistent queue kept by the broker; present
/// when `HAS_CUR`), the pending connect, and the key's history fields.
pub(super) struct Record {
    /// `[varint mountpoint length][mountpoint][client id][username]`; the key
    /// part is `kb[..key_len]`.
    kb: Box<[u8]>,
    pending: Option<Box<Pending>>,
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

/// The key bytes as stored in a record (`[varint][mountpoint][client id]`).
pub(super) fn encode_key(mountpoint: &[u8], client_id: &[u8], extra: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(mountpoint.len() + client_id.len() + 2 + extra);
    push_varint(&mut v, mountpoint.len());
    v.extend_from_slice(mountpoint);
    v.extend_from_slice(client_id);
    v
}

impl Record {
    pub fn new(key: KeyRef<'_>, now: Millis) -> Record {
        let kb = encode_key(key.mountpoint, key.client_id, 0).into_boxed_slice();
        let t = T48::new(now);
        Record {
            key_len: u32::try_from(kb.len()).expect("key longer than 4 GiB"),
            kb,
            pending: None,
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
    /// The current session's username.
    fn user(&self) -> Option<&[u8]> {
        (self.has(HAS_CUR) && self.has(HAS_USER)).then(|| &self.kb[self.key_len as usize..])
    }
    /// Store `u` after the key, reallocating only if it differs from the one
    /// stored.
    fn set_user(&mut self, u: Option<&[u8]>) {
        let k = self.key_len as usize;
        let stored = self.has(HAS_USER).then(|| &self.kb[k..]);
        if stored == u {
            return;
        }
        let mut v = Vec::with_capacity(k + u.map_or(0, |u| u.len()));
        v.extend_from_slice(&self.kb[..k]);
        if let Some(u) = u {
            v.extend_from_slice(u);
        }
        self.kb = v.into_boxed_slice();
        self.set(HAS_USER, u.is_some());
    }
    fn set_times_change(&mut self, now: Millis) {
        self.last_change = T48::new(now);
    }

    /// Mountpoint and client id, borrowed from the record.
    pub fn key_parts(&self) -> (&[u8], &[u8]) {
        let (mp_len, n) = read_varint(&self.kb);
        let key = &self.kb[..self.key_len as usize];
        (&key[n..n + mp_len], &key[n + mp_len..])
    }

    pub fn key_eq(&self, mountpoint: &[u8], client_id: &[u8]) -> bool {
        let (mp, cid) = self.key_parts();
        mp == mountpoint && cid == client_id
    }

    pub fn key(&self) -> SubscriberKey {
        let (mp, cid) = self.key_parts();
        SubscriberKey::new(mp, cid)
    }

    fn set_cur(&mut self, s: NewSession<'_>) {
        self.bits &= !SESSION_BITS;
        self.bits |= HAS_CUR;
        self.gen = s.gen;
        self.set_conn(s.conn);
        self.set_queue(s.queue);
        self.set_peer(s.peer);
        self.set_user(s.username);
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
    fn set_registered_info(&mut self, info: ConnectInfo) {
        self.set_peer(info.peer);
        self.set_user(info.username.as_deref());
        self.set(MQTT5, info.protocol == Protocol::Mqtt5);
    }

    /// A record with neither a session nor a pending connect leaves the map.
    pub fn is_empty(&self) -> bool {
        !self.has_cur() && self.pending.is_none()
    }

    pub fn state(&self) -> Option<SessionState> {
        if self.has_cur() {
            Some(if self.online() {
                SessionState::Online
            } else {
                SessionState::Offline
            })
        } else if self.pending.is_some() {
            Some(SessionState::Authenticated)
        } else {
            None
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn snapshot(&self, hash_user: impl Fn(&[u8]) -> u64) -> Snapshot {
        let a = if self.online() { self.user() } else { None };
        let b = self.pending.as_ref().and_then(|p| p.username.as_deref());
        let users = match (a, b) {
            (Some(a), Some(b)) if a == b => [Some(hash_user(a)), None],
            (a, b) => [a.map(&hash_user), b.map(&hash_user)],
        };
        Snapshot {
            state: self.state(),
            pending: self.pending.is_some(),
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
            key: self.key(),
            generation: self.gen,
            reason,
            peer: self.peer(),
            username: self.user().map(Box::from),
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
        if let Some(p) = self.pending.take() {
            cx.endings.push(Ending {
                key: self.key(),
                generation: p.gen,
                reason: EndReason::Abandoned,
                peer: p.peer,
                username: p.username,
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
        match &self.pending {
            Some(p) if cx.now.saturating_sub(p.created) > cx.pending_ttl => {
                self.abandon_pending(cx);
                true
            }
            _ => false,
        }
    }

    /// The pending connect becomes the current session.
    fn promote(&mut self, cx: &mut Ctx<'_>, queue: Option<ProcId>, registered: bool) {
        let p = self
            .pending
            .take()
            .expect("promote without a pending connect");
        self.replace_cur(cx, p.clean);
        self.start(
            cx,
            NewSession {
                gen: p.gen,
                conn: Some(p.conn),
                queue,
                peer: p.peer,
                username: p.username.as_deref(),
                online: true,
                registered,
                clean: p.clean,
                protocol: p.protocol,
            },
        );
    }

    /// A confirmed connect we never saw accepted (another plugin in the chain
    /// authorised it, or our pending was lost): a new generation.
    fn start_unannounced(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: Option<ProcId>,
        queue: Option<ProcId>,
        info: Option<ConnectInfo>,
    ) {
        let clean = info.as_ref().is_some_and(|i| i.clean_session);
        self.replace_cur(cx, clean);
        let gen = cx.new_gen();
        let mut s = NewSession {
            gen,
            conn,
            queue,
            peer: None,
            username: None,
            online: true,
            registered: info.is_some(),
            clean: false,
            protocol: Protocol::Mqtt3,
        };
        if let Some(info) = &info {
            s.peer = info.peer;
            s.username = info.username.as_deref();
            s.clean = info.clean_session;
            s.protocol = info.protocol;
        }
        self.start(cx, s);
    }

    fn start(&mut self, cx: &mut Ctx<'_>, s: NewSession<'_>) {
        self.set_cur(s);
        self.connect_count = self.connect_count.saturating_add(1);
        self.last_connect = T48::new(cx.now);
        self.set_times_change(cx.now);
    }

    // ---- events -------------------------------------------------------------

    pub fn auth_accepted(&mut self, cx: &mut Ctx<'_>, conn: ProcId, info: ConnectInfo) -> u64 {
        // A second accepted connect before the first was confirmed: only the
        // newest can still win the registration; the older one is abandoned.
        self.abandon_pending(cx);
        let gen = cx.new_gen();
        self.pending = Some(Box::new(Pending {
            gen,
            conn,
            created: cx.now,
            peer: info.peer,
            username: info.username,
            clean: info.clean_session,
            protocol: info.protocol,
        }));
        self.set_times_change(cx.now);
        gen
    }

    pub fn registered(&mut self, cx: &mut Ctx<'_>, conn: ProcId, info: ConnectInfo) -> Applied {
        if self.pending.as_ref().is_some_and(|p| p.conn == conn) {
            // Normal promotion by our own accepted connect; the queue is not
            // known yet when on_register comes before the wakeup.
            self.promote(cx, None, true);
            // on_register carries the session as finally registered (after
            // any modifiers): it wins over what auth saw, but for the flag.
            self.set_registered_info(info);
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
                self.set_registered_info(info);
                self.set(REGISTERED, true);
                self.set_times_change(cx.now);
                return Applied::Applied;
            }
        }
        if self.pending.is_some() {
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
                return if self.pending.is_some() {
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
        if self.pending.is_some() {
            self.promote(cx, Some(queue), false);
        } else {
            self.start_unannounced(cx, None, Some(queue), None);
        }
        Applied::Applied
    }

    pub fn went_offline(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if !self.has_cur() && self.pending.is_none() {
            // Unknown key (plugin enabled on a running broker): we learn
            // of a persistent session only now.
            let gen = cx.new_gen();
            self.set_cur(NewSession {
                gen,
                conn: None,
                queue: Some(queue),
                peer: None,
                username: None,
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
            let reason = if self.pending.is_some() {
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
            let reason = match (self.online(), self.pending.is_some()) {
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

    pub fn view(&self) -> Option<SessionView> {
        let state = self.state()?;
        let pending_generation = self.pending.as_ref().map(|p| p.gen);
        let last_end = self.last_end_reason.map(|r| (r, self.last_end_at.get()));
        let common = |generation, peer, username: Option<&[u8]>, clean_session, protocol| SessionView {
            key: self.key(),
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
                    self.user(),
                    self.has(CLEAN),
                    self.protocol(),
                )
            })
        } else {
            let p = self.pending.as_ref()?;
            Some(SessionView {
                conn: Some(p.conn),
                ..common(p.gen, p.peer, p.username.as_deref(), p.clean, p.protocol)
            })
        }
    }

    /// The fields the list filter looks at, without building a view.
    pub fn peer_and_user(&self) -> (Option<Peer>, Option<&[u8]>) {
        if self.has_cur() {
            (self.peer(), self.user())
        } else if let Some(p) = &self.pending {
            (p.peer, p.username.as_deref())
        } else {
            (None, None)
        }
    }
}
