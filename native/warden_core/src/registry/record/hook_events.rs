//! The broker's hook events as a record takes them (auth accepted,
//! on_register, the queue's wakeup, offline, gone, expired) and the
//! reconciler's correction: the state machine's inputs. The transitions they
//! use are in mod.rs.

use super::*;

impl Record {
    // The wakeup names the queue, on_register the connection, and several
    // connects of one client id may be pending at once (docs/DESIGN.md,
    // "Registry state machine"). A pending connect becomes the current
    // session only when both its registration and its queue are known: by
    // an on_register that claims a wakeup seen before it, or by a wakeup
    // that comes after an on_register.

    pub fn auth_accepted(&mut self, cx: &mut EventContext<'_>, conn: ProcId, info: ConnectInfo<'_>) -> u64 {
        // The same connection process accepted again: its older accept is void.
        if let Some(slot) = self.find_pending(cx.st, conn) {
            self.abandon_pending(cx, slot);
        }
        self.push_pending(cx, conn, info, false)
    }

    pub fn registered(&mut self, cx: &mut EventContext<'_>, conn: ProcId, info: ConnectInfo<'_>) -> Applied {
        if let Some(slot) = self.find_pending(cx.st, conn) {
            if let Some(queue) = self.woken(cx.st) {
                // Its queue woke before its on_register (the usual order).
                self.set_woken(cx.st, None);
                self.set_pending_registered(cx, slot, info);
                self.promote(cx, slot, queue);
                return Applied::Applied;
            }
            let gen = cx.st.pending.get(slot).map_or(0, |p| p.gen);
            if self.online() && self.has(REGISTERED) && self.gen > gen {
                // A connect accepted after this one has registered and woken
                // its queue since: this on_register comes late, from a
                // connection the broker has already replaced.
                self.connect_count = self.connect_count.saturating_add(1);
                self.end_pending(cx, slot, EndReason::TakenOver);
                return Applied::Stale;
            }
            // Registered before its queue's wakeup (a takeover that reuses
            // the queue): the wakeup makes it current.
            self.set_pending_registered(cx, slot, info);
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
                self.set_registered_info(cx.st, info);
                self.set(REGISTERED, true);
                self.set_times_change(cx.now);
                return Applied::Applied;
            }
        }
        // A connect we did not accept (another plugin did, or its accept was
        // dropped): current now if its queue woke, else when it wakes.
        if let Some(queue) = self.woken(cx.st) {
            self.set_woken(cx.st, None);
            self.start_unannounced(cx, Some(conn), queue, Some(info));
        } else {
            self.push_pending(cx, conn, info, true);
        }
        Applied::Applied
    }

    pub fn woke_up(&mut self, cx: &mut EventContext<'_>, queue: ProcId) -> Applied {
        if self.online() && self.queue() == Some(queue) && !self.has_pending() {
            return Applied::Duplicate;
        }
        if let Some(slot) = self.latest_registered(cx.st) {
            self.set_woken(cx.st, None);
            self.promote(cx, slot, queue);
        } else if self.has_pending() {
            let (slots, n) = self.pending_slots(cx.st);
            if n == 1 && self.woken(cx.st).is_none() {
                // One connect waiting: the wakeup can only be its own.
                self.promote(cx, slots[0], queue);
            } else {
                self.set_woken(cx.st, Some(queue));
                self.set_times_change(cx.now);
            }
        } else {
            self.start_unannounced(cx, None, queue, None);
        }
        Applied::Applied
    }

    /// Forget a woken queue that ends before any on_register claimed it.
    fn unclaim(&mut self, st: &mut Store, queue: ProcId) -> bool {
        let was = self.woken(st) == Some(queue);
        if was {
            self.set_woken(st, None);
        }
        was
    }

    pub fn went_offline(&mut self, cx: &mut EventContext<'_>, queue: ProcId) -> Applied {
        if self.is_empty() {
            // Unknown key (plugin enabled on a running broker): we learn
            // of a persistent session only now.
            let gen = cx.new_gen();
            self.set_cur(cx.st, NewSession {
                gen,
                conn: None,
                queue: Some(queue),
                peer: None,
                username: UsernameSource::Absent,
                online: false,
                registered: false,
                clean: false,
                protocol: Protocol::Mqtt3,
            });
            self.last_connect = Millis48::new(cx.now);
            self.set_times_change(cx.now);
            return Applied::Applied;
        }
        let unclaimed = self.unclaim(cx.st, queue);
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
        if unclaimed {
            return Applied::Applied;
        }
        Applied::Stale
    }

    pub fn gone(&mut self, cx: &mut EventContext<'_>, queue: ProcId) -> Applied {
        if self.is_empty() {
            return Applied::Unknown;
        }
        let unclaimed = self.unclaim(cx.st, queue);
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
        if unclaimed {
            return Applied::Applied;
        }
        Applied::Stale
    }

    pub fn expired(&mut self, cx: &mut EventContext<'_>, queue: ProcId) -> Applied {
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

    pub fn reconcile(&mut self, cx: &mut EventContext<'_>, broker: BrokerSession, seen_change: Millis) -> Reconciled {
        if self.last_change.get() != Millis48::new(seen_change).get() {
            return Reconciled::Changed;
        }
        match (self.state(), broker) {
            (Some(SessionState::Online), BrokerSession::Absent) | (Some(SessionState::Offline), BrokerSession::Absent) => {
                self.remove_cur(cx, EndReason::Vanished);
            }
            (Some(SessionState::Online), BrokerSession::Offline) => {
                self.set(ONLINE, false);
                self.end_cur(cx, EndReason::Offline);
            }
            (Some(SessionState::Offline), BrokerSession::Online) => return Reconciled::Differs,
            _ => return Reconciled::Agrees,
        }
        self.set_times_change(cx.now);
        Reconciled::Corrected
    }
}
