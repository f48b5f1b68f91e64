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

mod compare;
mod model;
mod threads;
