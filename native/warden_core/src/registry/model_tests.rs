//! Randomized tests: a plain single-threaded reference model driven by random
//! interleavings of real-broker scenarios (compared after every step), and
//! multi-threaded runs checked for lost, ghost or duplicated sessions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Barrier};

use super::record::MAX_PENDING;
use super::tests::key;
use super::*;
use crate::types::{Peer, Protocol, SubscriberKey};

/// xorshift64*: tiny deterministic PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];

fn cinfo(user: usize, clean: bool) -> ConnectInfo<'static> {
    ConnectInfo {
        peer: Some(Peer {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, user as u8)),
            port: 1883,
        }),
        username: (user < USERS.len()).then(|| USERS[user].as_bytes()),
        clean_session: clean,
        protocol: if clean {
            Protocol::Mqtt5
        } else {
            Protocol::Mqtt3
        },
    }
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Auth {
        conn: ProcId,
        user: usize,
        clean: bool,
    },
    Reg {
        conn: ProcId,
        user: usize,
        clean: bool,
    },
    Wake(ProcId),
    Off(ProcId),
    Gone(ProcId),
    Exp(ProcId),
}

// ---- broker simulator: valid per-key hook sequences ------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Absent,
    Online,
    Offline,
}

/// What the broker has for one client id.
#[derive(Default)]
struct KeySim {
    online: bool,
    stored: bool, // queue exists (online, or offline persistent)
    clean: bool,
    queue: u64,
}

impl KeySim {
    /// One scenario as the broker would emit it (including the observed
    /// races), and the state the registry must end in.
    fn script(&mut self, rng: &mut Rng, ids: &mut u64, allow_abandon: bool) -> (Vec<Ev>, Expect) {
        let mut id = || {
            *ids += 1;
            ProcId(*ids)
        };
        let user = rng.below(4) as usize; // 3 = anonymous
        let clean = rng.chance(50);
        let via_auth = rng.chance(85);
        let s = id();
        let auth = Ev::Auth {
            conn: s,
            user,
            clean,
        };
        let reg = Ev::Reg {
            conn: s,
            user,
            clean,
        };
        let mut v = Vec::new();
        let expect;
        if self.online {
            let q1 = ProcId(self.queue);
            if rng.chance(35) {
                v.push(if self.clean {
                    Ev::Gone(q1)
                } else {
                    Ev::Off(q1)
                });
                self.online = false;
                self.stored = !self.clean;
                expect = if self.stored {
                    Expect::Offline
                } else {
                    Expect::Absent
                };
            } else {
                // Takeover (docs/VERNEMQ.md, "Processes and hook order", plus races).
                let late = rng.chance(50);
                let q = match (self.clean, clean) {
                    (false, false) => {
                        v.extend(if late {
                            [reg, Ev::Off(q1), Ev::Wake(q1)]
                        } else {
                            [Ev::Off(q1), reg, Ev::Wake(q1)]
                        });
                        q1
                    }
                    (true, false) => {
                        v.extend(if late {
                            [reg, Ev::Gone(q1), Ev::Wake(q1)]
                        } else {
                            [Ev::Gone(q1), reg, Ev::Wake(q1)]
                        });
                        q1
                    }
                    (_, true) => {
                        let q2 = id();
                        v.extend(match rng.below(3) {
                            0 => [Ev::Gone(q1), Ev::Wake(q2), reg],
                            1 => [Ev::Wake(q2), Ev::Gone(q1), reg],
                            _ => [Ev::Wake(q2), reg, Ev::Gone(q1)],
                        });
                        q2
                    }
                };
                if via_auth {
                    v.insert(0, auth);
                }
                self.queue = q.0;
                self.clean = clean;
                expect = Expect::Online;
            }
        } else if rng.chance(20) {
            return self.concurrent(rng, ids);
        } else if self.stored && rng.chance(30) {
            v.push(Ev::Exp(ProcId(self.queue)));
            self.stored = false;
            expect = Expect::Absent;
        } else if allow_abandon && rng.chance(10) {
            // Accepted but the connection dies before registering.
            v.push(auth);
            expect = if self.stored {
                Expect::Offline
            } else {
                Expect::Absent
            };
        } else {
            // (Re)connect; a persistent reconnect reuses the stored queue, a
            // clean one replaces it (no hook for the old one).
            let q = if self.stored && !clean {
                ProcId(self.queue)
            } else {
                id()
            };
            if via_auth {
                v.push(auth);
            }
            if rng.chance(70) {
                v.extend([Ev::Wake(q), reg]);
            } else {
                v.extend([reg, Ev::Wake(q)]);
            }
            self.online = true;
            self.stored = true;
            self.clean = clean;
            self.queue = q.0;
            expect = Expect::Online;
        }
        (v, expect)
    }
}

impl KeySim {
    /// Two or three clients connect with this client id at once, then the
    /// one left disconnects: every auth comes first, the broker registers
    /// them one after another in an order of its own, and each takeover
    /// has the hook order traced on a real broker (docs/VERNEMQ.md,
    /// "Concurrent connects").
    fn concurrent(&mut self, rng: &mut Rng, ids: &mut u64) -> (Vec<Ev>, Expect) {
        let mut id = || {
            *ids += 1;
            ProcId(*ids)
        };
        let n = 2 + rng.below(2) as usize;
        let conns: Vec<(ProcId, usize, bool)> = (0..n).map(|_| (id(), rng.below(4) as usize, rng.chance(50))).collect();
        let mut v: Vec<Ev> = conns
            .iter()
            .map(|&(conn, user, clean)| Ev::Auth { conn, user, clean })
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for (j, &c) in order.iter().enumerate() {
            let (conn, user, clean) = conns[c];
            let q = if j == 0 {
                // The first registration: a persistent client resumes a
                // stored queue, any other gets a new one.
                if self.stored && !clean { ProcId(self.queue) } else { id() }
            } else {
                let prev = ProcId(self.queue);
                match (self.clean, clean) {
                    (false, false) => {
                        v.push(Ev::Off(prev));
                        prev
                    }
                    (true, false) => {
                        v.push(Ev::Gone(prev));
                        prev
                    }
                    (_, true) => {
                        v.push(Ev::Gone(prev));
                        id()
                    }
                }
            };
            v.extend([Ev::Wake(q), Ev::Reg { conn, user, clean }]);
            self.queue = q.0;
            self.clean = clean;
        }
        v.push(if self.clean { Ev::Gone(ProcId(self.queue)) } else { Ev::Off(ProcId(self.queue)) });
        self.online = false;
        self.stored = !self.clean;
        (v, if self.stored { Expect::Offline } else { Expect::Absent })
    }
}

fn apply(r: &Registry, k: &SubscriberKey, ev: Ev, now: Millis) -> Result<Applied, u64> {
    Ok(match ev {
        Ev::Auth { conn, user, clean } => {
            return Err(r.auth_accepted(k, conn, cinfo(user, clean), now))
        }
        Ev::Reg { conn, user, clean } => r.registered(k, conn, cinfo(user, clean), now),
        Ev::Wake(q) => r.woke_up(k, q, now),
        Ev::Off(q) => r.went_offline(k, q, now),
        Ev::Gone(q) => r.gone(k, q, now),
        Ev::Exp(q) => r.expired(k, q, now),
    })
}

// ---- reference model ------------------------------------------------------------

#[derive(Clone)]
struct MSession {
    gen: u64,
    conn: Option<ProcId>,
    queue: Option<ProcId>,
    info: ConnectInfo<'static>,
    online: bool,
    registered: bool,
}

#[derive(Clone)]
struct MPending {
    gen: u64,
    conn: ProcId,
    created: Millis,
    info: ConnectInfo<'static>,
    /// Order of its on_register among the registrations, if seen.
    registered: Option<u64>,
}

#[derive(Clone)]
struct MRec {
    cur: Option<MSession>,
    /// Newest first.
    pend: Vec<MPending>,
    /// A queue that woke while connects were pending, unclaimed.
    woken: Option<ProcId>,
    first: Millis,
    last_connect: Millis,
    last_change: Millis,
    count: u64,
    last_end: Option<(EndReason, Millis)>,
}

const UNKNOWN_INFO: ConnectInfo<'static> = ConnectInfo {
    peer: None,
    username: None,
    clean_session: false,
    protocol: Protocol::Mqtt3,
};

/// The same rules as `Registry`, written the plain way: one map, a Vec of
/// pending connects per key, scans for every count, a Vec-backed history.
struct Model {
    recs: BTreeMap<SubscriberKey, MRec>,
    gen: u64,
    ttl: u64,
    cap: usize,
    hist: VecDeque<Ending>,
    stale: u64,
    dup: u64,
    unknown: u64,
}

impl Model {
    fn end(
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
        });
        self.recs.get_mut(k).unwrap().last_end = Some((reason, now));
    }

    fn trim(&mut self) {
        while self.hist.len() > self.cap {
            self.hist.pop_front();
        }
    }

    fn rec(&mut self, k: &SubscriberKey) -> &mut MRec {
        self.recs.get_mut(k).unwrap()
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Take pending `i` out; the woken queue lives as long as the list does.
    fn take_pending(&mut self, k: &SubscriberKey, i: usize) -> MPending {
        let r = self.rec(k);
        let p = r.pend.remove(i);
        if r.pend.is_empty() {
            r.woken = None;
        }
        p
    }

    fn end_pending(&mut self, k: &SubscriberKey, i: usize, reason: EndReason, now: Millis) {
        let p = self.take_pending(k, i);
        self.end(k, p.gen, reason, &p.info, p.created, now);
        self.rec(k).last_change = now;
    }

    fn drop_old_pendings(&mut self, k: &SubscriberKey, now: Millis) -> usize {
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

    fn push_pending(&mut self, k: &SubscriberKey, conn: ProcId, info: ConnectInfo<'static>, registered: bool, now: Millis) -> u64 {
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
    fn install(&mut self, k: &SubscriberKey, new: MSession, now: Millis) {
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

    fn promote(&mut self, k: &SubscriberKey, i: usize, queue: ProcId, now: Millis) {
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

    fn start_unannounced(&mut self, k: &SubscriberKey, conn: Option<ProcId>, queue: ProcId, info: Option<ConnectInfo<'static>>, now: Millis) {
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
    fn set_registered(&mut self, k: &SubscriberKey, i: usize, info: ConnectInfo<'static>, now: Millis) {
        let order = self.next_gen();
        let r = self.rec(k);
        let p = &mut r.pend[i];
        p.registered = Some(order);
        p.info = ConnectInfo { clean_session: p.info.clean_session, username: info.username.or(p.info.username), ..info };
        r.last_change = now;
    }

    fn ensure(&mut self, k: &SubscriberKey, now: Millis) {
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

    fn step(&mut self, k: &SubscriberKey, ev: Ev, now: Millis) -> Result<Applied, u64> {
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
    fn unclaim(&mut self, k: &SubscriberKey, q: ProcId) -> bool {
        let r = self.rec(k);
        let was = r.woken == Some(q);
        if was {
            r.woken = None;
        }
        was
    }

    fn step_inner(&mut self, k: &SubscriberKey, ev: Ev, now: Millis) -> Result<Applied, u64> {
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

    fn sweep(&mut self, now: Millis) -> usize {
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

    fn view(&self, k: &SubscriberKey) -> Option<SessionView> {
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

    fn user_count(&self, u: &[u8]) -> usize {
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

/// Model generations and registry generations are numbered differently
/// (global counter vs per-shard counters); per key they must correspond one
/// to one, and both increase.
#[derive(Default)]
struct GenMap {
    fwd: HashMap<(SubscriberKey, u64), u64>,
    back: HashMap<(SubscriberKey, u64), u64>,
}
impl GenMap {
    fn check(&mut self, k: &SubscriberKey, model: u64, real: u64, ctx: &str) {
        let f = *self.fwd.entry((k.clone(), model)).or_insert(real);
        let b = *self.back.entry((k.clone(), real)).or_insert(model);
        assert_eq!((f, b), (real, model), "generation mismatch: {ctx}");
    }
}

fn compare(r: &Registry, m: &Model, keys: &[SubscriberKey], gm: &mut GenMap, ctx: &str) {
    for k in keys {
        let (a, b) = (r.lookup(k), m.view(k));
        match (&a, &b) {
            (Some(a), Some(b)) => {
                gm.check(k, b.generation, a.generation, ctx);
                if let (Some(x), Some(y)) = (b.pending_generation, a.pending_generation) {
                    gm.check(k, x, y, ctx);
                }
                let norm = |v: &SessionView| SessionView {
                    generation: 0,
                    pending_generation: v.pending_generation.map(|_| 0),
                    ..v.clone()
                };
                assert_eq!(norm(a), norm(b), "view of {k:?} differs: {ctx}");
            }
            (None, None) => {}
            _ => panic!("presence of {k:?} differs: registry {a:?} model {b:?}: {ctx}"),
        }
    }
    let scan = |s| {
        m.recs
            .keys()
            .filter(|k| m.view(k).unwrap().state == s)
            .count() as u64
    };
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: scan(SessionState::Authenticated),
            online: scan(SessionState::Online),
            offline: scan(SessionState::Offline),
        },
        "{ctx}"
    );
    let st = r.stats();
    let taken = |h: &VecDeque<Ending>| {
        h.iter()
            .filter(|e| e.reason == EndReason::TakenOver)
            .count()
    };
    assert_eq!(
        (
            st.live,
            st.stale_events,
            st.duplicate_events,
            st.unknown_events,
            st.history_len
        ),
        (
            m.recs.len() as u64,
            m.stale,
            m.dup,
            m.unknown,
            m.hist.len() as u64
        ),
        "stats: {ctx}"
    );
    for u in USERS {
        assert_eq!(
            r.live_sessions_of_user(u.as_bytes()),
            m.user_count(u.as_bytes()),
            "user {u}: {ctx}"
        );
    }
    let he = r.recent_endings(usize::MAX);
    assert_eq!(he.len(), m.hist.len(), "{ctx}");
    assert_eq!(taken(&he.iter().cloned().collect()), taken(&m.hist));
    for (a, b) in he.iter().zip(m.hist.iter().rev()) {
        gm.check(&a.key, b.generation, a.generation, ctx);
        assert_eq!(
            Ending {
                generation: 0,
                ..a.clone()
            },
            Ending {
                generation: 0,
                ..b.clone()
            },
            "ending: {ctx}"
        );
    }
}

fn run_model(seed: u64, shards: usize, steps: usize) {
    let mut rng = Rng(seed);
    let cap = 1 + rng.below(20) as usize;
    let ttl = 500;
    let r = Registry::new(RegistryConfig {
        shards,
        history_size: cap,
        pending_ttl_ms: ttl,
    });
    let mut m = Model {
        recs: BTreeMap::new(),
        gen: 0,
        ttl,
        cap,
        hist: VecDeque::new(),
        stale: 0,
        dup: 0,
        unknown: 0,
    };
    let keys: Vec<SubscriberKey> = (0..4).map(|i| key(&format!("k{i}"))).collect();
    let mut sims: Vec<KeySim> = keys.iter().map(|_| KeySim::default()).collect();
    let mut scripts: Vec<VecDeque<Ev>> = keys.iter().map(|_| VecDeque::new()).collect();
    let mut ids = 1000;
    let mut now: Millis = 1;
    let mut gm = GenMap::default();
    for step in 0..steps {
        now += rng.below(40);
        let ctx = format!("seed {seed} shards {shards} step {step}");
        match rng.below(100) {
            0..=2 => now += 2 * ttl,
            3..=5 => assert_eq!(r.sweep(now), m.sweep(now), "sweep: {ctx}"),
            6..=9 => {
                // Noise: an event from a random (mostly stale) process.
                let i = rng.below(keys.len() as u64) as usize;
                let p = ProcId(1000 + rng.below(ids - 999));
                let ev = match rng.below(6) {
                    0 => Ev::Wake(p),
                    1 => Ev::Off(p),
                    2 => Ev::Gone(p),
                    3 => Ev::Exp(p),
                    4 => Ev::Reg {
                        conn: p,
                        user: 0,
                        clean: true,
                    },
                    _ => Ev::Auth {
                        conn: p,
                        user: 1,
                        clean: false,
                    },
                };
                let (a, b) = (apply(&r, &keys[i], ev, now), m.step(&keys[i], ev, now));
                match (a, b) {
                    (Err(x), Err(y)) => gm.check(&keys[i], y, x, &ctx),
                    (a, b) => assert_eq!(a, b, "noise {ev:?}: {ctx}"),
                }
            }
            10 => {
                let n = rng.below(30) as usize;
                r.set_history_size(n);
                m.cap = n;
                m.trim();
            }
            _ => {
                let i = rng.below(keys.len() as u64) as usize;
                if scripts[i].is_empty() {
                    scripts[i] = sims[i].script(&mut rng, &mut ids, true).0.into();
                }
                let ev = scripts[i].pop_front().unwrap();
                match (apply(&r, &keys[i], ev, now), m.step(&keys[i], ev, now)) {
                    (Err(x), Err(y)) => gm.check(&keys[i], y, x, &ctx),
                    (a, b) => assert_eq!(a, b, "{ev:?} on {:?}: {ctx}", keys[i]),
                }
            }
        }
        compare(&r, &m, &keys, &mut gm, &ctx);
    }
}

#[test]
fn randomized_against_reference_model() {
    for seed in 1..=60u64 {
        let shards = [1, 2, 64][seed as usize % 3];
        run_model(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, shards, 600);
    }
}

// ---- multi-threaded ---------------------------------------------------------------

/// Many keys driven concurrently from several threads, each key's hooks in a
/// valid broker order (including the races); then the final state of every
/// key is checked against what the broker would have, counts against a scan,
/// and finally everything is disconnected/expired and nothing may remain.
#[test]
fn concurrent_keys_no_lost_ghost_or_duplicate_sessions() {
    const THREADS: usize = 8;
    const KEYS: usize = 150;
    const ROUNDS: usize = 40;
    let r = Arc::new(Registry::new(RegistryConfig {
        shards: 16,
        history_size: 100,
        pending_ttl_ms: u64::MAX,
    }));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut rng = Rng(0xDEAD_BEEF ^ ((t as u64 + 1) * 0x1234_5678_9ABC));
                let keys: Vec<_> = (0..KEYS).map(|i| key(&format!("t{t}-{i}"))).collect();
                let mut sims: Vec<KeySim> = keys.iter().map(|_| KeySim::default()).collect();
                let mut expect = vec![Expect::Absent; KEYS];
                let mut ids = (t as u64 + 1) << 40;
                for round in 0..ROUNDS {
                    for i in 0..KEYS {
                        let (script, e) = sims[i].script(&mut rng, &mut ids, false);
                        let mut auth_gen = None;
                        for ev in script {
                            if let Err(g) = apply(&r, &keys[i], ev, round as u64) {
                                auth_gen = Some(g);
                            }
                        }
                        expect[i] = e;
                        let v = r.lookup(&keys[i]);
                        let state = v.as_ref().map(|v| v.state);
                        let want = match e {
                            Expect::Absent => None,
                            Expect::Online => Some(SessionState::Online),
                            Expect::Offline => Some(SessionState::Offline),
                        };
                        assert_eq!(state, want, "{:?} after round {round}", keys[i]);
                        if let (Some(g), Some(v)) = (auth_gen, &v) {
                            if e == Expect::Online {
                                assert_eq!(v.generation, g, "{:?}", keys[i]);
                                assert_eq!(v.pending_generation, None);
                            }
                        }
                        if let Some(v) = v {
                            if v.state == SessionState::Online {
                                assert_eq!(v.queue, Some(ProcId(sims[i].queue)), "{:?}", keys[i]);
                            }
                        }
                    }
                }
                (keys, sims, expect)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let all = r.list(&Filter::default(), usize::MAX);
    let mut expected_present = 0;
    for (keys, _, expect) in &results {
        for (k, e) in keys.iter().zip(expect) {
            let want = match e {
                Expect::Absent => None,
                Expect::Online => Some(SessionState::Online),
                Expect::Offline => Some(SessionState::Offline),
            };
            assert_eq!(r.lookup(k).map(|v| v.state), want);
            expected_present += usize::from(want.is_some());
        }
    }
    assert_eq!(all.len(), expected_present, "ghost or lost records");
    assert_eq!(r.len(), expected_present);
    let n = |s| all.iter().filter(|v| v.state == s).count() as u64;
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 0,
            online: n(SessionState::Online),
            offline: n(SessionState::Offline)
        }
    );
    for (u, name) in USERS.iter().enumerate() {
        let scan = all
            .iter()
            .filter(|v| {
                v.state == SessionState::Online && v.username.as_deref() == Some(name.as_bytes())
            })
            .count();
        assert_eq!(r.live_sessions_of_user(name.as_bytes()), scan, "user {u}");
    }

    // Tear down: every session ends from its own queue; nothing may remain.
    for (keys, sims, _) in &results {
        for (k, s) in keys.iter().zip(sims) {
            let q = ProcId(s.queue);
            if s.online {
                if s.clean {
                    assert_eq!(r.gone(k, q, 1000), Applied::Applied);
                } else {
                    assert_eq!(r.went_offline(k, q, 1000), Applied::Applied);
                }
            }
            if s.stored && !(s.online && s.clean) {
                assert_eq!(r.expired(k, q, 1001), Applied::Applied, "{k:?}");
            }
        }
    }
    assert_eq!(r.len(), 0);
    assert!(r.list(&Filter::default(), usize::MAX).is_empty());
    assert_eq!(r.counts(), StateCounts::default());
    assert_eq!(r.users.entries(), 0, "per-user index leaked entries");
    assert_eq!(r.stats().unknown_events, 0);
}

/// The two processes of a takeover really racing on one key: the new
/// connection's on_register against the old queue's offline/gone. Whatever
/// wins, the outcome is the same.
#[test]
fn cross_process_race_on_one_key() {
    let r = Arc::new(Registry::new(RegistryConfig::default()));
    for i in 0..300u64 {
        let k = key(&format!("race{i}"));
        let old_clean = i % 2 == 0;
        let (s1, q1, s2) = (ProcId(i * 10 + 1), ProcId(i * 10 + 2), ProcId(i * 10 + 3));
        let g1 = r.auth_accepted(&k, s1, cinfo(0, old_clean), 0);
        r.woke_up(&k, q1, 0);
        r.registered(&k, s1, cinfo(0, old_clean), 0);
        // New connect is persistent: the old queue is kept (false->false) or
        // reused after its gone (true->false).
        let g2 = r.auth_accepted(&k, s2, cinfo(0, false), 1);
        let barrier = Arc::new(Barrier::new(2));
        std::thread::scope(|sc| {
            let (r1, b1, k1) = (&r, Arc::clone(&barrier), k.clone());
            sc.spawn(move || {
                b1.wait();
                r1.registered(&k1, s2, cinfo(0, false), 2);
            });
            let (r2, b2, k2) = (&r, Arc::clone(&barrier), k.clone());
            sc.spawn(move || {
                b2.wait();
                if old_clean {
                    r2.gone(&k2, q1, 2);
                } else {
                    r2.went_offline(&k2, q1, 2);
                }
            });
        });
        assert_eq!(r.woke_up(&k, q1, 3), Applied::Applied);
        let v = r.lookup(&k).unwrap();
        assert_eq!(
            (v.state, v.generation, v.queue, v.conn),
            (SessionState::Online, g2, Some(q1), Some(s2))
        );
        let ends: Vec<_> = r
            .recent_endings(usize::MAX)
            .into_iter()
            .filter(|e| e.key == k)
            .collect();
        assert_eq!(ends.len(), 1, "{k:?}: {ends:?}");
        assert_eq!(
            (ends[0].generation, ends[0].reason),
            (g1, EndReason::TakenOver)
        );
    }
    assert_eq!(r.counts().online, 300);
    assert_eq!(r.stats().taken_over, 300);
    assert_eq!(r.live_sessions_of_user(b"alice"), 300);
}

/// The other race of docs/VERNEMQ.md, "Processes and hook order", with real threads: a clean
/// takeover (old session clean or persistent, new one clean), where the old
/// queue's on_client_gone runs at the same time as the new queue's wakeup
/// followed by the new connection's on_register. Whatever the interleaving:
/// the new generation is online on the new queue, the old one ended
/// `TakenOver` exactly once, and the old queue's gone is applied or counted
/// stale, never both. Many keys at once, on few shards, so that the racing
/// threads also contend for shard locks with each other.
#[test]
fn clean_takeover_late_gone_races_new_queue_threads() {
    const KEYS: u64 = 400;
    let r = Arc::new(Registry::new(RegistryConfig { shards: 4, history_size: 10_000, pending_ttl_ms: u64::MAX }));
    let mut g2s = Vec::new();
    for i in 0..KEYS {
        let k = key(&format!("late-gone{i}"));
        let old_clean = i % 2 == 0;
        let (s1, q1, s2) = (ProcId(i * 10 + 1), ProcId(i * 10 + 2), ProcId(i * 10 + 3));
        r.auth_accepted(&k, s1, cinfo(1, old_clean), 0);
        r.woke_up(&k, q1, 0);
        r.registered(&k, s1, cinfo(1, old_clean), 0);
        g2s.push(r.auth_accepted(&k, s2, cinfo(1, true), 1));
    }
    let stale_before = r.stats().stale_events;
    let barrier = Arc::new(Barrier::new(2));
    std::thread::scope(|sc| {
        let (r1, b1) = (&r, Arc::clone(&barrier));
        sc.spawn(move || {
            b1.wait();
            for i in 0..KEYS {
                let k = key(&format!("late-gone{i}"));
                r1.gone(&k, ProcId(i * 10 + 2), 2);
            }
        });
        let (r2, b2) = (&r, Arc::clone(&barrier));
        sc.spawn(move || {
            b2.wait();
            for i in 0..KEYS {
                let k = key(&format!("late-gone{i}"));
                r2.woke_up(&k, ProcId(i * 10 + 4), 2);
                r2.registered(&k, ProcId(i * 10 + 3), cinfo(1, true), 2);
            }
        });
    });
    let endings = r.recent_endings(usize::MAX);
    for i in 0..KEYS {
        let k = key(&format!("late-gone{i}"));
        let v = r.lookup(&k).unwrap();
        assert_eq!(
            (v.state, v.generation, v.queue, v.conn, v.pending_generation),
            (SessionState::Online, g2s[i as usize], Some(ProcId(i * 10 + 4)), Some(ProcId(i * 10 + 3)), None),
            "{k:?}"
        );
        let mine: Vec<_> = endings.iter().filter(|e| e.key == k).collect();
        assert_eq!(mine.len(), 1, "{k:?}: {mine:?}");
        assert_eq!(mine[0].reason, EndReason::TakenOver, "{k:?}");
    }
    let stale = r.stats().stale_events - stale_before;
    assert!(stale <= KEYS, "at most one stale gone per key, got {stale}");
    assert_eq!(r.counts(), StateCounts { authenticated: 0, online: KEYS, offline: 0 });
    assert_eq!(r.live_sessions_of_user(USERS[1].as_bytes()), KEYS as usize);
}

/// Where `k`'s record is: (shard, slot, the shard's length).
fn slot_of(r: &Registry, k: &SubscriberKey) -> Option<(usize, u32, u32)> {
    let h = r.hash_key(k.into());
    let shard = r.shard_index(h);
    let g = r.shards[shard].inner.lock();
    g.find(h, k.into()).map(|slot| (shard, slot, g.slab.len()))
}

/// Is slot `slot` of `shard` still ahead of `cursor` (`None`: listing done)?
fn unvisited(cursor: Option<ListCursor>, shard: usize, slot: u32) -> bool {
    match cursor {
        None => false,
        Some(c) => shard > c.shard || (shard == c.shard && slot < c.unvisited),
    }
}

/// Inserts and removals between the steps of a chunked listing: every key
/// present for the whole listing is returned, nothing that never existed
/// is, and a key comes back twice only after a removal moved its record
/// from a visited slot to one still ahead of the cursor.
#[test]
fn list_chunk_under_concurrent_changes() {
    let mut repeats = 0;
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let r = Registry::new(RegistryConfig {
            shards: 1 << rng.below(3),
            ..Default::default()
        });
        let universe: Vec<SubscriberKey> = (0..400).map(|i| key(&format!("k{i}"))).collect();
        let queue = |i: usize| ProcId(10_000 + i as u64);
        let mut present = vec![false; universe.len()];
        for (i, k) in universe.iter().enumerate() {
            if rng.chance(50) {
                assert_eq!(r.went_offline(k, queue(i), 0), Applied::Applied);
                present[i] = true;
            }
        }
        let mut throughout = present.clone();
        let mut ever = present.clone();
        let mut moves_ahead = vec![0usize; universe.len()];
        let index: HashMap<SubscriberKey, usize> =
            universe.iter().cloned().enumerate().map(|(i, k)| (k, i)).collect();

        let mut out = Vec::new();
        let mut cursor = Some(ListCursor::START);
        while let Some(c) = cursor {
            let max_slots = 1 + rng.below(8) as usize;
            cursor = r.list_chunk(&Filter::default(), c, max_slots, &mut out, usize::MAX);
            for _ in 0..rng.below(4) {
                let i = rng.below(universe.len() as u64) as usize;
                let k = &universe[i];
                if present[i] {
                    let (shard, slot, len) = slot_of(&r, k).expect("present key has a slot");
                    let last = len - 1;
                    if slot < last && unvisited(cursor, shard, slot) && !unvisited(cursor, shard, last) {
                        let g = r.shards[shard].inner.lock();
                        let (mp, cid) = g.slab.get(last).key_parts(&g.st);
                        let moved = SubscriberKey::new(mp.to_vec(), cid.to_vec());
                        moves_ahead[index[&moved]] += 1;
                    }
                    assert_eq!(r.expired(k, queue(i), 1), Applied::Applied);
                    present[i] = false;
                    throughout[i] = false;
                } else {
                    assert_eq!(r.went_offline(k, queue(i), 1), Applied::Applied);
                    present[i] = true;
                    ever[i] = true;
                }
            }
        }

        let mut seen = vec![0usize; universe.len()];
        for v in &out {
            let i = *index.get(&v.key).expect("listed key never existed");
            assert!(ever[i], "seed {seed}: {:?} listed but never present", v.key);
            seen[i] += 1;
        }
        for i in 0..universe.len() {
            if throughout[i] {
                assert!(seen[i] >= 1, "seed {seed}: {:?} missed", universe[i]);
            }
            assert!(
                seen[i] <= 1 + moves_ahead[i],
                "seed {seed}: {:?} listed {} times, moved ahead {} times",
                universe[i],
                seen[i],
                moves_ahead[i]
            );
            repeats += seen[i].saturating_sub(1);
        }
    }
    assert!(repeats > 0, "no run exercised a repeated key");
}
