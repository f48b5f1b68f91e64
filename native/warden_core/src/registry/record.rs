//! One registry record (all that is known about one `SubscriberKey`) and the
//! state machine that moves it. Everything here runs under the shard lock; it
//! never locks anything itself. Endings produced by a transition are collected
//! in [`Ctx::endings`] and pushed to the history ring by the caller after the
//! shard lock is released.

use crate::types::{Millis, Peer, ProcId, Protocol, SubscriberKey};

use super::{Applied, ConnectInfo, EndReason, Ending, SessionState, SessionView};

/// Per-event context: the key, the clock, the shard's generation counter and
/// the endings the event produced.
pub(super) struct Ctx<'a> {
    pub key: &'a SubscriberKey,
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

/// The confirmed (current) session of a key: online, or offline with its
/// persistent queue kept by the broker.
pub(super) struct Session {
    gen: u64,
    // ProcIds stored without Option to keep the record compact; see has_*.
    conn: u64,
    queue: u64,
    peer: Option<Peer>,
    username: Option<Box<[u8]>>,
    has_conn: bool,
    has_queue: bool,
    online: bool,
    /// on_register seen for `conn`.
    registered: bool,
    clean: bool,
    protocol: Protocol,
}

impl Session {
    fn conn(&self) -> Option<ProcId> {
        self.has_conn.then_some(ProcId(self.conn))
    }
    fn queue(&self) -> Option<ProcId> {
        self.has_queue.then_some(ProcId(self.queue))
    }
    fn set_conn(&mut self, p: Option<ProcId>) {
        self.has_conn = p.is_some();
        self.conn = p.map_or(0, |p| p.0);
    }
    fn set_queue(&mut self, p: Option<ProcId>) {
        self.has_queue = p.is_some();
        self.queue = p.map_or(0, |p| p.0);
    }
    fn set_info(&mut self, info: ConnectInfo) {
        self.peer = info.peer;
        self.username = info.username;
        self.clean = info.clean_session;
        self.protocol = info.protocol;
    }

    /// on_register carries peer, username and protocol but not the clean
    /// flag: the one already known (from auth, or assumed at wakeup) stays.
    fn set_registered_info(&mut self, info: ConnectInfo) {
        let clean = self.clean;
        self.set_info(info);
        self.clean = clean;
    }
}

pub(super) struct Record {
    cur: Option<Session>,
    pending: Option<Box<Pending>>,
    first_connect: Millis,
    last_connect: Millis,
    last_change: Millis,
    connect_count: u64,
    last_end_at: Millis,
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
    pub fn new(now: Millis) -> Record {
        Record {
            cur: None,
            pending: None,
            first_connect: now,
            last_connect: now,
            last_change: now,
            connect_count: 0,
            last_end_at: 0,
            last_end_reason: None,
        }
    }

    /// A record with neither a session nor a pending connect leaves the map.
    pub fn is_empty(&self) -> bool {
        self.cur.is_none() && self.pending.is_none()
    }

    pub fn state(&self) -> Option<SessionState> {
        match (&self.cur, &self.pending) {
            (Some(s), _) if s.online => Some(SessionState::Online),
            (Some(_), _) => Some(SessionState::Offline),
            (None, Some(_)) => Some(SessionState::Authenticated),
            (None, None) => None,
        }
    }

    pub fn snapshot(&self, hash_user: impl Fn(&[u8]) -> u64) -> Snapshot {
        let a = self
            .cur
            .as_ref()
            .filter(|s| s.online)
            .and_then(|s| s.username.as_deref());
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
        self.last_end_at = now;
    }

    /// Record an ending for the current session, keeping it in place.
    fn end_cur(&mut self, cx: &mut Ctx<'_>, reason: EndReason) {
        let s = self.cur.as_ref().expect("end_cur without a session");
        cx.endings.push(Ending {
            key: cx.key.clone(),
            generation: s.gen,
            reason,
            peer: s.peer,
            username: s.username.clone(),
            started: self.last_connect,
            ended: cx.now,
        });
        self.set_end(reason, cx.now);
    }

    /// Remove the current session, recording an ending for it (moves the
    /// username instead of cloning it).
    fn remove_cur(&mut self, cx: &mut Ctx<'_>, reason: EndReason) {
        let s = self.cur.take().expect("remove_cur without a session");
        cx.endings.push(Ending {
            key: cx.key.clone(),
            generation: s.gen,
            reason,
            peer: s.peer,
            username: s.username,
            started: self.last_connect,
            ended: cx.now,
        });
        self.set_end(reason, cx.now);
    }

    /// End the current session because a new one replaces it: an online one
    /// was taken over; an offline one ends only if the new connect is clean
    /// (its stored session was discarded with no hook). A persistent connect
    /// over an offline session resumes it: no ending.
    fn replace_cur(&mut self, cx: &mut Ctx<'_>, new_is_clean: bool) {
        match &self.cur {
            Some(s) if s.online => self.remove_cur(cx, EndReason::TakenOver),
            Some(_) if new_is_clean => self.remove_cur(cx, EndReason::Discarded),
            _ => self.cur = None,
        }
    }

    fn abandon_pending(&mut self, cx: &mut Ctx<'_>) {
        if let Some(p) = self.pending.take() {
            cx.endings.push(Ending {
                key: cx.key.clone(),
                generation: p.gen,
                reason: EndReason::Abandoned,
                peer: p.peer,
                username: p.username,
                started: p.created,
                ended: cx.now,
            });
            self.set_end(EndReason::Abandoned, cx.now);
            self.last_change = cx.now;
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
        let mut s = Session {
            gen: p.gen,
            conn: 0,
            queue: 0,
            peer: p.peer,
            username: p.username,
            has_conn: false,
            has_queue: false,
            online: true,
            registered,
            clean: p.clean,
            protocol: p.protocol,
        };
        s.set_conn(Some(p.conn));
        s.set_queue(queue);
        self.start(cx, s);
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
        let mut s = Session {
            gen: cx.new_gen(),
            conn: 0,
            queue: 0,
            peer: None,
            username: None,
            has_conn: false,
            has_queue: false,
            online: true,
            registered: info.is_some(),
            clean: false,
            protocol: Protocol::Mqtt3,
        };
        if let Some(info) = info {
            s.set_info(info);
        }
        s.set_conn(conn);
        s.set_queue(queue);
        self.start(cx, s);
    }

    fn start(&mut self, cx: &mut Ctx<'_>, s: Session) {
        self.cur = Some(s);
        self.connect_count += 1;
        self.last_connect = cx.now;
        self.last_change = cx.now;
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
        self.last_change = cx.now;
        gen
    }

    pub fn registered(&mut self, cx: &mut Ctx<'_>, conn: ProcId, info: ConnectInfo) -> Applied {
        if self.pending.as_ref().is_some_and(|p| p.conn == conn) {
            // Normal promotion by our own accepted connect; the queue is not
            // known yet when on_register comes before the wakeup.
            self.promote(cx, None, true);
            // on_register carries the session as finally registered (after
            // any modifiers): it wins over what auth saw, but for the flag.
            if let Some(s) = &mut self.cur {
                s.set_registered_info(info);
            }
            return Applied::Applied;
        }
        if let Some(s) = &mut self.cur {
            let same_conn = s.conn() == Some(conn);
            // A session created by a wakeup we could not attribute (no conn
            // yet) is completed by the first on_register that follows.
            let adopt = s.online && !s.has_conn;
            if same_conn || adopt {
                if same_conn && s.registered {
                    return Applied::Duplicate;
                }
                s.set_conn(Some(conn));
                s.set_registered_info(info);
                s.registered = true;
                self.last_change = cx.now;
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
        if let Some(s) = &mut self.cur {
            if s.online {
                if s.queue() == Some(queue) {
                    return if self.pending.is_some() {
                        // Same queue woken again for a new connect (reuse).
                        self.promote(cx, Some(queue), false);
                        Applied::Applied
                    } else {
                        Applied::Duplicate
                    };
                }
                if !s.has_queue {
                    // The current session was promoted by on_register before
                    // its wakeup: this is its queue.
                    s.set_queue(Some(queue));
                    self.last_change = cx.now;
                    return Applied::Applied;
                }
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
        match &mut self.cur {
            None if self.pending.is_none() => {
                // Unknown key (plugin enabled on a running broker): we learn
                // of a persistent session only now.
                let mut s = Session {
                    gen: cx.new_gen(),
                    conn: 0,
                    queue: 0,
                    peer: None,
                    username: None,
                    has_conn: false,
                    has_queue: false,
                    online: false,
                    registered: false,
                    clean: false,
                    protocol: Protocol::Mqtt3,
                };
                s.set_queue(Some(queue));
                self.cur = Some(s);
                self.last_connect = cx.now;
                self.last_change = cx.now;
                Applied::Applied
            }
            Some(s) if s.queue() == Some(queue) => {
                if !s.online {
                    return Applied::Duplicate;
                }
                s.online = false;
                let reason = if self.pending.is_some() {
                    EndReason::TakenOver
                } else {
                    EndReason::Offline
                };
                self.end_cur(cx, reason);
                self.last_change = cx.now;
                Applied::Applied
            }
            _ => Applied::Stale,
        }
    }

    pub fn gone(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if self.is_empty() {
            return Applied::Unknown;
        }
        match &self.cur {
            Some(s) if s.queue() == Some(queue) => {
                let reason = match (s.online, self.pending.is_some()) {
                    (true, true) => EndReason::TakenOver,
                    (true, false) => EndReason::Gone,
                    // Not observed (an offline queue removed for a clean
                    // connect calls no hook), handled anyway.
                    (false, true) => EndReason::Discarded,
                    (false, false) => EndReason::Gone,
                };
                self.remove_cur(cx, reason);
                self.last_change = cx.now;
                Applied::Applied
            }
            _ => Applied::Stale,
        }
    }

    pub fn expired(&mut self, cx: &mut Ctx<'_>, queue: ProcId) -> Applied {
        if self.is_empty() {
            return Applied::Unknown;
        }
        match &self.cur {
            Some(s) if !s.online && s.queue() == Some(queue) => {
                self.remove_cur(cx, EndReason::Expired);
                self.last_change = cx.now;
                Applied::Applied
            }
            _ => Applied::Stale,
        }
    }

    // ---- reads --------------------------------------------------------------

    pub fn view(&self, key: &SubscriberKey) -> Option<SessionView> {
        let state = self.state()?;
        let pending_generation = self.pending.as_ref().map(|p| p.gen);
        let last_end = self.last_end_reason.map(|r| (r, self.last_end_at));
        let common =
            |generation, peer, username: &Option<Box<[u8]>>, clean_session, protocol| SessionView {
                key: key.clone(),
                state,
                generation,
                peer,
                username: username.clone(),
                clean_session,
                protocol,
                first_connect: self.first_connect,
                last_connect: self.last_connect,
                last_change: self.last_change,
                connect_count: self.connect_count,
                queue: None,
                conn: None,
                pending_generation,
                last_end,
            };
        Some(match (&self.cur, &self.pending) {
            (Some(s), _) => SessionView {
                queue: s.queue(),
                conn: s.conn(),
                ..common(s.gen, s.peer, &s.username, s.clean, s.protocol)
            },
            (None, Some(p)) => SessionView {
                conn: Some(p.conn),
                ..common(p.gen, p.peer, &p.username, p.clean, p.protocol)
            },
            (None, None) => return None,
        })
    }

    /// The fields the list filter looks at, without building a view.
    pub fn peer_and_user(&self) -> (Option<Peer>, Option<&[u8]>) {
        match (&self.cur, &self.pending) {
            (Some(s), _) => (s.peer, s.username.as_deref()),
            (None, Some(p)) => (p.peer, p.username.as_deref()),
            (None, None) => (None, None),
        }
    }
}
