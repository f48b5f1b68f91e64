//! Scenario tests: every hook order observed on a real broker
//! (docs/VERNEMQ.md, "Processes and hook order" and "Concurrent connects"),
//! the races, and the bookkeeping (counts, per-user, history).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::types::{Peer, Protocol, SubscriberKey};
use crate::IpNet;

const S1: ProcId = ProcId(101);
const S2: ProcId = ProcId(102);
const S3: ProcId = ProcId(103);
const Q1: ProcId = ProcId(201);
const Q2: ProcId = ProcId(202);

pub(super) fn key(id: &str) -> SubscriberKey {
    SubscriberKey::new(Vec::new(), id.as_bytes().to_vec())
}

fn info(user: &str, clean: bool) -> ConnectInfo<'_> {
    ConnectInfo {
        peer: Some(Peer {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 4000,
        }),
        username: Some(user.as_bytes()),
        clean_session: clean,
        protocol: Protocol::Mqtt3,
    }
}

fn info_at(user: &str, clean: bool, ip: IpAddr) -> ConnectInfo<'_> {
    ConnectInfo {
        peer: Some(Peer { ip, port: 1 }),
        ..info(user, clean)
    }
}

/// A registry that counts users, as on a node whose policy sets
/// max_sessions (`users_are_counted_only_once_asked` covers one that does not).
fn reg() -> Registry {
    let r = Registry::new(RegistryConfig {
        shards: 4,
        history_size: 100,
        pending_ttl_ms: 1000,
    });
    r.count_users();
    r
}

/// A new client's record is created with its accepted connect's username
/// after the key, and a pending connect whose username is the one kept
/// there shares it: a new client's whole connect writes one block of the
/// pool (there were three: the record's key, the pending connect's
/// username, then both again when the session started). When the record
/// comes to keep another name, the connects still pending with the old
/// one keep it.
#[test]
fn a_new_client_s_connect_writes_its_key_and_username_once() {
    let r = reg();
    let allocs = |r: &Registry| r.shards.iter().map(|s| s.inner.lock().st.bytes.allocs).sum::<usize>();
    let k = key("c1");
    connect(&r, &k, S1, Q1, true, 10);
    assert_eq!(allocs(&r), 1);
    assert_eq!(view(&r, &k).username.as_deref(), Some(&b"alice"[..]));
    // alice connects again (sharing the kept name), and bob's connect of
    // the client id, accepted after hers, registers and wakes first.
    r.auth_accepted(&k, S2, info("alice", true), 20);
    r.auth_accepted(&k, S3, info("bob", true), 21);
    assert_eq!(r.registered(&k, S3, info("bob", true), 22), Applied::Applied);
    assert_eq!(r.woke_up(&k, Q2, 23), Applied::Applied);
    assert_eq!(view(&r, &k).username.as_deref(), Some(&b"bob"[..]));
    // alice's connect, overtaken, ends with her name.
    assert_eq!(r.registered(&k, S2, info("alice", true), 24), Applied::Stale);
    let last = &r.recent_endings(1)[0];
    assert_eq!((last.reason, last.username.as_deref()), (EndReason::TakenOver, Some(&b"alice"[..])));
    assert_eq!((r.live_sessions_of_user(b"alice"), r.live_sessions_of_user(b"bob")), (0, 1));
}

/// Normal connect as seen on the broker: auth, wakeup, on_register.
fn connect(r: &Registry, k: &SubscriberKey, s: ProcId, q: ProcId, clean: bool, t: Millis) -> u64 {
    let g = r.auth_accepted(k, s, info("alice", clean), t);
    assert_eq!(r.woke_up(k, q, t + 1), Applied::Applied);
    assert_eq!(
        r.registered(k, s, info("alice", clean), t + 2),
        Applied::Applied
    );
    g
}

fn view(r: &Registry, k: &SubscriberKey) -> SessionView {
    r.lookup(k).expect("record present")
}

fn reasons(r: &Registry) -> Vec<(u64, EndReason)> {
    r.recent_endings(usize::MAX)
        .iter()
        .rev()
        .map(|e| (e.generation, e.reason))
        .collect()
}

/// counts() and len() must equal a full scan.
fn assert_counts_match_scan(r: &Registry) {
    let all = r.list(&Filter::default(), usize::MAX);
    let n = |s| all.iter().filter(|v| v.state == s).count() as u64;
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: n(SessionState::Authenticated),
            online: n(SessionState::Online),
            offline: n(SessionState::Offline),
        }
    );
    assert_eq!(r.len(), all.len());
    assert_eq!(r.stats().live, all.len() as u64);
}

#[test]
fn normal_connect_wakeup_before_register() {
    let r = reg();
    let k = key("c");
    let g = r.auth_accepted(&k, S1, info("alice", true), 10);
    let v = view(&r, &k);
    assert_eq!(v.state, SessionState::Authenticated);
    assert_eq!(
        (v.generation, v.pending_generation, v.conn, v.queue),
        (g, Some(g), Some(S1), None)
    );
    assert_eq!(r.counts().authenticated, 1);
    assert_eq!(r.live_sessions_of_user(b"alice"), 1);

    assert_eq!(r.woke_up(&k, Q1, 11), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.conn),
        (SessionState::Online, g, Some(Q1), Some(S1))
    );
    assert_eq!(
        (
            v.connect_count,
            v.first_connect,
            v.last_connect,
            v.pending_generation
        ),
        (1, 10, 11, None)
    );

    assert_eq!(
        r.registered(&k, S1, info("alice", true), 12),
        Applied::Applied
    );
    assert_eq!(view(&r, &k).last_change, 12);
    assert_eq!(
        r.registered(&k, S1, info("alice", true), 13),
        Applied::Duplicate
    );
    assert_eq!(r.woke_up(&k, Q1, 14), Applied::Duplicate);
    assert_eq!(view(&r, &k).last_change, 12);
    let st = r.stats();
    assert_eq!((st.duplicate_events, st.stale_events, st.ended), (2, 0, 0));
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 0,
            online: 1,
            offline: 0
        }
    );
    assert_eq!(r.live_sessions_of_user(b"alice"), 1);
    assert_counts_match_scan(&r);
}

#[test]
fn on_register_before_wakeup() {
    let r = reg();
    let k = key("c");
    let g = r.auth_accepted(&k, S1, info("alice", false), 10);
    assert_eq!(
        r.registered(&k, S1, info("alice", false), 11),
        Applied::Applied
    );
    // Registered, waiting for its queue: current once the queue wakes.
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.conn, v.pending_generation),
        (SessionState::Authenticated, g, None, Some(S1), Some(g))
    );
    assert_eq!(r.woke_up(&k, Q1, 12), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.conn, v.pending_generation),
        (SessionState::Online, g, Some(Q1), Some(S1), None)
    );
    assert_eq!(v.connect_count, 1);
    assert_eq!(r.registered(&k, S1, info("alice", false), 13), Applied::Duplicate);
}

#[test]
fn clean_disconnect_removes_record() {
    let r = reg();
    let k = key("c");
    let g = connect(&r, &k, S1, Q1, true, 10);
    assert_eq!(r.gone(&k, Q1, 50), Applied::Applied);
    assert!(r.lookup(&k).is_none());
    assert_eq!(reasons(&r), vec![(g, EndReason::Gone)]);
    let e = &r.recent_endings(1)[0];
    assert_eq!(
        (e.started, e.ended, e.username.as_deref()),
        (11, 50, Some(&b"alice"[..]))
    );
    assert_eq!(r.len(), 0);
    assert_eq!(r.counts(), StateCounts::default());
    assert_eq!(r.live_sessions_of_user(b"alice"), 0);
    assert_eq!(r.users.entries(), 0);
    assert_eq!(r.gone(&k, Q1, 51), Applied::Unknown);
    assert_eq!(r.stats().unknown_events, 1);
}

#[test]
fn persistent_disconnect_then_expiry() {
    let r = reg();
    let k = key("c");
    let g = connect(&r, &k, S1, Q1, false, 10);
    assert_eq!(r.went_offline(&k, Q1, 50), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.last_end),
        (SessionState::Offline, g, Some((EndReason::Offline, 50)))
    );
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 0,
            online: 0,
            offline: 1
        }
    );
    assert_eq!(
        r.live_sessions_of_user(b"alice"),
        0,
        "offline sessions are not live"
    );
    assert_eq!(r.went_offline(&k, Q1, 51), Applied::Duplicate);
    assert_eq!(r.expired(&k, Q2, 60), Applied::Stale);
    assert_eq!(r.expired(&k, Q1, 70), Applied::Applied);
    assert!(r.lookup(&k).is_none());
    assert_eq!(
        reasons(&r),
        vec![(g, EndReason::Offline), (g, EndReason::Expired)]
    );
    assert_eq!(r.expired(&k, Q1, 71), Applied::Unknown);
    assert_counts_match_scan(&r);
}

#[test]
fn takeover_false_false() {
    // auth@S2, offline@Q1, on_register@S2, wakeup@Q1
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, false, 10);
    let g2 = r.auth_accepted(&k, S2, info("alice", false), 100);
    assert!(g2 > g1);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.pending_generation),
        (SessionState::Online, g1, Some(g2))
    );
    assert_eq!(
        r.live_sessions_of_user(b"alice"),
        1,
        "same-user takeover counts once"
    );

    assert_eq!(r.went_offline(&k, Q1, 101), Applied::Applied);
    assert_eq!(view(&r, &k).state, SessionState::Offline);
    assert_eq!(
        r.registered(&k, S2, info("alice", false), 102),
        Applied::Applied
    );
    // S2 waits for the queue's wakeup; until then the old session shows.
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.pending_generation),
        (SessionState::Offline, g1, Some(Q1), Some(g2))
    );
    assert_eq!(r.woke_up(&k, Q1, 103), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.conn),
        (SessionState::Online, g2, Some(Q1), Some(S2))
    );
    let v = view(&r, &k);
    assert_eq!(
        (v.queue, v.connect_count, v.pending_generation),
        (Some(Q1), 2, None)
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
    let st = r.stats();
    assert_eq!((st.taken_over, st.stale_events, st.ended), (1, 0, 1));
    assert_counts_match_scan(&r);
}

#[test]
fn takeover_false_false_register_before_old_offline() {
    // on_register@S2 races ahead of offline@Q1: S2 waits for the queue's
    // wakeup, the offline ends the previous generation as taken_over.
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, false, 10);
    let g2 = r.auth_accepted(&k, S2, info("alice", false), 100);
    assert_eq!(
        r.registered(&k, S2, info("alice", false), 101),
        Applied::Applied
    );
    assert_eq!(r.went_offline(&k, Q1, 102), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!((v.state, v.generation, v.pending_generation), (SessionState::Offline, g1, Some(g2)));
    assert_eq!(r.woke_up(&k, Q1, 103), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!((v.state, v.generation, v.queue), (SessionState::Online, g2, Some(Q1)));
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
    assert_eq!(r.stats().stale_events, 0);
    assert_eq!(r.counts().online, 1);
}

#[test]
fn takeover_false_true() {
    // auth@S2, gone@Q1, wakeup@Q2, on_register@S2
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, false, 10);
    let g2 = r.auth_accepted(&k, S2, info("alice", true), 100);
    assert_eq!(r.gone(&k, Q1, 101), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!((v.state, v.generation), (SessionState::Authenticated, g2));
    assert_eq!(r.woke_up(&k, Q2, 200), Applied::Applied);
    assert_eq!(
        r.registered(&k, S2, info("alice", true), 201),
        Applied::Applied
    );
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.clean_session),
        (SessionState::Online, g2, Some(Q2), true)
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
    assert_eq!(r.stats().stale_events, 0);
}

#[test]
fn takeover_true_false_queue_reused() {
    // auth@S2, gone@Q1, on_register@S2, wakeup@Q1
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, true, 10);
    let g2 = r.auth_accepted(&k, S2, info("alice", false), 100);
    assert_eq!(r.gone(&k, Q1, 101), Applied::Applied);
    assert_eq!(
        r.registered(&k, S2, info("alice", false), 102),
        Applied::Applied
    );
    assert_eq!(r.woke_up(&k, Q1, 103), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue),
        (SessionState::Online, g2, Some(Q1))
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
}

#[test]
fn takeover_true_true() {
    // auth@S2, gone@Q1, wakeup@Q2, on_register@S2
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, true, 10);
    let g2 = r.auth_accepted(&k, S2, info("alice", true), 100);
    assert_eq!(r.gone(&k, Q1, 101), Applied::Applied);
    assert_eq!(r.woke_up(&k, Q2, 102), Applied::Applied);
    assert_eq!(
        r.registered(&k, S2, info("alice", true), 103),
        Applied::Applied
    );
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.connect_count),
        (SessionState::Online, g2, Some(Q2), 2)
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
    assert_eq!(r.stats().taken_over, 1);
}

/// The race that matters most: in a clean takeover the old queue's gone
/// arrives after the new queue's wakeup (and after on_register). It must be
/// stale; applying it would drop the live client.
#[test]
fn late_gone_after_new_wakeup_is_stale() {
    for old_clean in [false, true] {
        for gone_before_register in [false, true] {
            let r = reg();
            let k = key("c");
            let g1 = connect(&r, &k, S1, Q1, old_clean, 10);
            let g2 = r.auth_accepted(&k, S2, info("alice", true), 100);
            assert_eq!(r.woke_up(&k, Q2, 101), Applied::Applied);
            if gone_before_register {
                assert_eq!(r.gone(&k, Q1, 102), Applied::Stale);
            }
            assert_eq!(
                r.registered(&k, S2, info("alice", true), 103),
                Applied::Applied
            );
            if !gone_before_register {
                assert_eq!(r.gone(&k, Q1, 104), Applied::Stale);
            }
            let v = view(&r, &k);
            assert_eq!(
                (v.state, v.generation, v.queue),
                (SessionState::Online, g2, Some(Q2))
            );
            assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
            let st = r.stats();
            assert_eq!((st.stale_events, st.taken_over, st.ended), (1, 1, 1));
            assert_eq!(r.counts().online, 1);
            assert_eq!(r.live_sessions_of_user(b"alice"), 1);
            // The live session still ends normally from its own queue.
            assert_eq!(r.gone(&k, Q2, 300), Applied::Applied);
            assert!(r.lookup(&k).is_none());
        }
    }
}

#[test]
fn true_false_register_before_old_gone() {
    // true->false where on_register@S2 beats gone@Q1: S2 waits for its
    // queue's wakeup, so the gone ends the old session, not S2.
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, true, 10);
    let g2 = r.auth_accepted(&k, S2, info("alice", false), 100);
    assert_eq!(
        r.registered(&k, S2, info("alice", false), 101),
        Applied::Applied
    );
    assert_eq!(r.gone(&k, Q1, 102), Applied::Applied);
    assert_eq!(view(&r, &k).state, SessionState::Authenticated);
    assert_eq!(r.woke_up(&k, Q1, 103), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue),
        (SessionState::Online, g2, Some(Q1))
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
}

#[test]
fn clean_connect_over_offline_discards_it() {
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, false, 10);
    assert_eq!(r.went_offline(&k, Q1, 20), Applied::Applied);
    let g2 = r.auth_accepted(&k, S2, info("alice", true), 30);
    // Offline view kept while the connect is pending.
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.pending_generation),
        (SessionState::Offline, g1, Some(g2))
    );
    assert_eq!(r.woke_up(&k, Q2, 31), Applied::Applied);
    assert_eq!(
        r.registered(&k, S2, info("alice", true), 32),
        Applied::Applied
    );
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.queue, v.last_end),
        (
            SessionState::Online,
            g2,
            Some(Q2),
            Some((EndReason::Discarded, 31))
        )
    );
    assert_eq!(
        reasons(&r),
        vec![(g1, EndReason::Offline), (g1, EndReason::Discarded)]
    );
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 0,
            online: 1,
            offline: 0
        }
    );
    // The discarded queue can no longer speak for the key.
    assert_eq!(r.expired(&k, Q1, 40), Applied::Stale);
}

#[test]
fn persistent_reconnect_over_offline_resumes() {
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, false, 10);
    r.went_offline(&k, Q1, 20);
    let g2 = connect(&r, &k, S2, Q1, false, 30);
    let v = view(&r, &k);
    assert_eq!(
        (
            v.state,
            v.generation,
            v.queue,
            v.connect_count,
            v.first_connect,
            v.last_connect
        ),
        (SessionState::Online, g2, Some(Q1), 2, 10, 31)
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::Offline)]);
}

mod unknown;
mod reads;
mod races;
