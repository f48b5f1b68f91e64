//! The reference model: the registry's rules written the plain way (one
//! map, a Vec of pending connects), stepped beside the registry.

use super::*;

// ---- reference model ------------------------------------------------------------

#[derive(Clone)]
pub(super) struct MSession {
    pub(super) gen: u64,
    pub(super) conn: Option<ProcId>,
    pub(super) queue: Option<ProcId>,
    pub(super) info: ConnectInfo<'static>,
    pub(super) online: bool,
    pub(super) registered: bool,
}

#[derive(Clone)]
pub(super) struct MPending {
    pub(super) gen: u64,
    pub(super) conn: ProcId,
    pub(super) created: Millis,
    pub(super) info: ConnectInfo<'static>,
    /// Order of its on_register among the registrations, if seen.
    pub(super) registered: Option<u64>,
}

#[derive(Clone)]
pub(super) struct MRec {
    pub(super) cur: Option<MSession>,
    /// Newest first.
    pub(super) pend: Vec<MPending>,
    /// A queue that woke while connects were pending, unclaimed.
    pub(super) woken: Option<ProcId>,
    pub(super) first: Millis,
    pub(super) last_connect: Millis,
    pub(super) last_change: Millis,
    pub(super) count: u64,
    pub(super) last_end: Option<(EndReason, Millis)>,
}

pub(super) const UNKNOWN_INFO: ConnectInfo<'static> = ConnectInfo {
    peer: None,
    username: None,
    clean_session: false,
    protocol: Protocol::Mqtt3,
};

/// The same rules as `Registry`, written the plain way: one map, a Vec of
/// pending connects per key, scans for every count, a Vec-backed history.
pub(super) struct Model {
    pub(super) recs: BTreeMap<SubscriberKey, MRec>,
    pub(super) gen: u64,
    pub(super) ttl: u64,
    pub(super) cap: usize,
    pub(super) hist: VecDeque<Ending>,
    pub(super) stale: u64,
    pub(super) dup: u64,
    pub(super) unknown: u64,
}

impl Model {
    pub(super) fn end(
        &mut self,
        k: &SubscriberKey,
        gen: u64,
        reason: EndReason,
        info: &ConnectInfo,
        started: Millis,
        now: Millis,
    ) {
        self.hist.push_back(Ending {
            key: k.clone(),
            generation: gen,
            reason,
            peer: info.peer,
            username: info.username.map(Box::from),
            started,
            ended: now,
            kicked_by: None,
        });
        self.recs.get_mut(k).unwrap().last_end = Some((reason, now));
    }

    pub(super) fn trim(&mut self) {
        while self.hist.len() > self.cap {
            self.hist.pop_front();
        }
    }

    pub(super) fn rec(&mut self, k: &SubscriberKey) -> &mut MRec {
        self.recs.get_mut(k).unwrap()
    }

    pub(super) fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Take pending `i` out; the woken queue lives as long as the list does.
    pub(super) fn take_pending(&mut self, k: &SubscriberKey, i: usize) -> MPending {
        let r = self.rec(k);
        let p = r.pend.remove(i);
        if r.pend.is_empty() {
            r.woken = None;
        }
        p
    }

    pub(super) fn end_pending(&mut self, k: &SubscriberKey, i: usize, reason: EndReason, now: Millis) {
        let p = self.take_pending(k, i);
        self.end(k, p.gen, reason, &p.info, p.created, now);
        self.rec(k).last_change = now;
    }

    pub(super) fn drop_old_pendings(&mut self, k: &SubscriberKey, now: Millis) -> usize {
        let Some(r) = self.recs.get(k) else {
            return 0;
        };
        let old: Vec<u64> = r
            .pend
            .iter()
            .filter(|p| now.saturating_sub(p.created) > self.ttl)
            .map(|p| p.gen)
            .collect();
        for g in &old {
            let i = self.recs[k].pend.iter().position(|p| p.gen == *g).unwrap();
            self.end_pending(k, i, EndReason::Abandoned, now);
        }
        old.len()
    }

    pub(super) fn push_pending(&mut self, k: &SubscriberKey, conn: ProcId, info: ConnectInfo<'static>, registered: bool, now: Millis) -> u64 {
        if self.recs[k].pend.len() == MAX_PENDING {
            self.end_pending(k, MAX_PENDING - 1, EndReason::Abandoned, now);
        }
        let gen = self.next_gen();
        let r = self.rec(k);
        r.pend.insert(
            0,
            MPending {
                gen,
                conn,
                created: now,
                info,
                registered: registered.then_some(gen),
            },
        );
        r.last_change = now;
        gen
    }

    /// Replace the current session by `new` (a promotion or an unannounced
    /// connect), ending the old one as the rules say.
    pub(super) fn install(&mut self, k: &SubscriberKey, new: MSession, now: Millis) {
        let r = self.recs.get(k).unwrap().clone();
        if let Some(old) = &r.cur {
            if old.online {
                self.end(k, old.gen, EndReason::TakenOver, &old.info, r.last_connect, now);
            } else if new.info.clean_session {
                self.end(k, old.gen, EndReason::Discarded, &old.info, r.last_connect, now);
            }
        }
        let r = self.rec(k);
        r.cur = Some(new);
        r.count += 1;
        r.last_connect = now;
        r.last_change = now;
    }

    pub(super) fn promote(&mut self, k: &SubscriberKey, i: usize, queue: ProcId, now: Millis) {
        let p = self.take_pending(k, i);
        let s = MSession {
            gen: p.gen,
            conn: Some(p.conn),
            queue: Some(queue),
            info: p.info,
            online: true,
            registered: p.registered.is_some(),
        };
        self.install(k, s, now);
    }

    pub(super) fn start_unannounced(&mut self, k: &SubscriberKey, conn: Option<ProcId>, queue: ProcId, info: Option<ConnectInfo<'static>>, now: Millis) {
        // (the registry ends the old session before it draws the number)
        let gen = self.gen + 1;
        let s = MSession {
            gen,
            conn,
            queue: Some(queue),
            info: info.unwrap_or(UNKNOWN_INFO),
            online: true,
            registered: info.is_some(),
        };
        self.gen = gen;
        self.install(k, s, now);
    }

    /// on_register's info on pending `i`, the flag staying auth's.
    pub(super) fn set_registered(&mut self, k: &SubscriberKey, i: usize, info: ConnectInfo<'static>, now: Millis) {
        let order = self.next_gen();
        let r = self.rec(k);
        let p = &mut r.pend[i];
        p.registered = Some(order);
        p.info = ConnectInfo { clean_session: p.info.clean_session, username: info.username.or(p.info.username), ..info };
        r.last_change = now;
    }

    pub(super) fn ensure(&mut self, k: &SubscriberKey, now: Millis) {
        self.recs.entry(k.clone()).or_insert(MRec {
            cur: None,
            pend: Vec::new(),
            woken: None,
            first: now,
            last_connect: now,
            last_change: now,
            count: 0,
            last_end: None,
        });
    }

    pub(super) fn step(&mut self, k: &SubscriberKey, ev: Ev, now: Millis) -> Result<Applied, u64> {
        self.ensure(k, now);
        self.drop_old_pendings(k, now);
        let out = self.step_inner(k, ev, now);
        let r = &self.recs[k];
        if r.cur.is_none() && r.pend.is_empty() {
            self.recs.remove(k);
        }
        self.trim();
        match out {
            Ok(Applied::Stale) => self.stale += 1,
            Ok(Applied::Duplicate) => self.dup += 1,
            Ok(Applied::Unknown) => self.unknown += 1,
            _ => {}
        }
        out
    }

    /// Forget the woken queue if it is `q`.
    pub(super) fn unclaim(&mut self, k: &SubscriberKey, q: ProcId) -> bool {
        let r = self.rec(k);
        let was = r.woken == Some(q);
        if was {
            r.woken = None;
        }
        was
    }

    pub(super) fn step_inner(&mut self, k: &SubscriberKey, ev: Ev, now: Millis) -> Result<Applied, u64> {
        let r = self.recs[k].clone();
        let empty = r.cur.is_none() && r.pend.is_empty();
        let cur_q = r.cur.as_ref().and_then(|c| c.queue);
        let online = r.cur.as_ref().is_some_and(|c| c.online);
        use Applied::{Duplicate, Stale, Unknown};
        Ok(match ev {
            Ev::Auth { conn, user, clean } => {
                if let Some(i) = r.pend.iter().position(|p| p.conn == conn) {
                    self.end_pending(k, i, EndReason::Abandoned, now);
                }
                return Err(self.push_pending(k, conn, cinfo(user, clean), false, now));
            }
            Ev::Reg { conn, user, clean } => {
                let info = cinfo(user, clean);
                let cur = r.cur.as_ref();
                if let Some(i) = r.pend.iter().position(|p| p.conn == conn) {
                    if let Some(q) = r.woken {
                        self.rec(k).woken = None;
                        self.set_registered(k, i, info, now);
                        self.promote(k, i, q, now);
                        Applied::Applied
                    } else if cur.is_some_and(|c| c.online && c.registered && c.gen > r.pend[i].gen) {
                        self.rec(k).count += 1;
                        self.end_pending(k, i, EndReason::TakenOver, now);
                        Stale
                    } else {
                        self.set_registered(k, i, info, now);
                        Applied::Applied
                    }
                } else if cur.is_some_and(|c| c.conn == Some(conn) && c.registered) {
                    Duplicate
                } else if cur.is_some_and(|c| c.conn == Some(conn) || (c.online && c.conn.is_none())) {
                    let rec = self.rec(k);
                    let c = rec.cur.as_mut().unwrap();
                    c.conn = Some(conn);
                    c.info = ConnectInfo { clean_session: c.info.clean_session, username: info.username.or(c.info.username), ..info };
                    c.registered = true;
                    rec.last_change = now;
                    Applied::Applied
                } else if let Some(q) = r.woken {
                    self.rec(k).woken = None;
                    self.start_unannounced(k, Some(conn), q, Some(info), now);
                    Applied::Applied
                } else {
                    self.push_pending(k, conn, info, true, now);
                    Applied::Applied
                }
            }
            Ev::Wake(q) => {
                let latest_registered = r
                    .pend
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.registered.map(|o| (o, i)))
                    .max()
                    .map(|(_, i)| i);
                if online && cur_q == Some(q) && r.pend.is_empty() {
                    Duplicate
                } else if let Some(i) = latest_registered {
                    self.rec(k).woken = None;
                    self.promote(k, i, q, now);
                    Applied::Applied
                } else if r.pend.len() == 1 && r.woken.is_none() {
                    self.promote(k, 0, q, now);
                    Applied::Applied
                } else if !r.pend.is_empty() {
                    let rec = self.rec(k);
                    rec.woken = Some(q);
                    rec.last_change = now;
                    Applied::Applied
                } else {
                    self.start_unannounced(k, None, q, None, now);
                    Applied::Applied
                }
            }
            Ev::Off(q) => {
                if empty {
                    let gen = self.next_gen();
                    let rec = self.rec(k);
                    rec.cur = Some(MSession {
                        gen,
                        conn: None,
                        queue: Some(q),
                        info: UNKNOWN_INFO,
                        online: false,
                        registered: false,
                    });
                    rec.last_connect = now;
                    rec.last_change = now;
                    Applied::Applied
                } else {
                    let unclaimed = self.unclaim(k, q);
                    if cur_q == Some(q) {
                        if !online {
                            Duplicate
                        } else {
                            let c = r.cur.unwrap();
                            let why = if r.pend.is_empty() {
                                EndReason::Offline
                            } else {
                                EndReason::TakenOver
                            };
                            self.end(k, c.gen, why, &c.info, r.last_connect, now);
                            let rec = self.rec(k);
                            rec.cur.as_mut().unwrap().online = false;
                            rec.last_change = now;
                            Applied::Applied
                        }
                    } else if unclaimed {
                        Applied::Applied
                    } else {
                        Stale
                    }
                }
            }
            Ev::Gone(q) => {
                if empty {
                    Unknown
                } else {
                    let unclaimed = self.unclaim(k, q);
                    if cur_q == Some(q) {
                        let c = r.cur.unwrap();
                        let why = match (c.online, !r.pend.is_empty()) {
                            (true, true) => EndReason::TakenOver,
                            (false, true) => EndReason::Discarded,
                            _ => EndReason::Gone,
                        };
                        self.end(k, c.gen, why, &c.info, r.last_connect, now);
                        let rec = self.rec(k);
                        rec.cur = None;
                        rec.last_change = now;
                        Applied::Applied
                    } else if unclaimed {
                        Applied::Applied
                    } else {
                        Stale
                    }
                }
            }
            Ev::Exp(q) => {
                if empty {
                    Unknown
                } else if online || cur_q != Some(q) {
                    Stale
                } else {
                    let c = r.cur.unwrap();
                    self.end(k, c.gen, EndReason::Expired, &c.info, r.last_connect, now);
                    let rec = self.rec(k);
                    rec.cur = None;
                    rec.last_change = now;
                    Applied::Applied
                }
            }
        })
    }

    pub(super) fn sweep(&mut self, now: Millis) -> usize {
        let keys: Vec<_> = self.recs.keys().cloned().collect();
        let mut n = 0;
        for k in keys {
            let dropped = self.drop_old_pendings(&k, now);
            if dropped > 0 {
                n += dropped;
                let r = &self.recs[&k];
                if r.cur.is_none() && r.pend.is_empty() {
                    self.recs.remove(&k);
                }
            }
        }
        self.trim();
        n
    }

    pub(super) fn view(&self, k: &SubscriberKey) -> Option<SessionView> {
        let r = self.recs.get(k)?;
        let (state, gen, info, conn, queue) = match (&r.cur, r.pend.first()) {
            (Some(c), _) => (
                if c.online {
                    SessionState::Online
                } else {
                    SessionState::Offline
                },
                c.gen,
                &c.info,
                c.conn,
                c.queue,
            ),
            (None, Some(p)) => (SessionState::Authenticated, p.gen, &p.info, Some(p.conn), None),
            (None, None) => return None,
        };
        Some(SessionView {
            key: k.clone(),
            state,
            generation: gen,
            peer: info.peer,
            username: info.username.map(Box::from),
            clean_session: info.clean_session,
            protocol: info.protocol,
            first_connect: r.first,
            last_connect: r.last_connect,
            last_change: r.last_change,
            connect_count: r.count,
            queue,
            conn,
            pending_generation: r.pend.first().map(|p| p.gen),
            last_end: r.last_end,
        })
    }

    pub(super) fn user_count(&self, u: &[u8]) -> usize {
        self.recs
            .values()
            .filter(|r| {
                let a = r.cur.as_ref().filter(|c| c.online).and_then(|c| c.info.username) == Some(u);
                let b = r.pend.iter().any(|p| p.info.username == Some(u));
                a || b
            })
            .count()
    }
}
