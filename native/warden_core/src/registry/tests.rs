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

fn reg() -> Registry {
    Registry::new(RegistryConfig {
        shards: 4,
        history_size: 100,
        pending_ttl_ms: 1000,
    })
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

#[test]
fn unknown_subscriber_wakeup_then_register() {
    // Another plugin authorised the client: no auth_accepted.
    let r = reg();
    let k = key("c");
    assert_eq!(r.woke_up(&k, Q1, 10), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (
            v.state,
            v.queue,
            v.conn,
            v.username.clone(),
            v.connect_count
        ),
        (SessionState::Online, Some(Q1), None, None, 1)
    );
    assert!(v.generation > 0);
    assert_eq!(r.live_sessions_of_user(b"alice"), 0);
    assert_eq!(
        r.registered(&k, S1, info("alice", true), 11),
        Applied::Applied
    );
    let v2 = view(&r, &k);
    assert_eq!(
        (v2.generation, v2.conn, v2.username.as_deref()),
        (v.generation, Some(S1), Some(&b"alice"[..]))
    );
    assert_eq!(r.live_sessions_of_user(b"alice"), 1);
    assert_eq!(
        r.registered(&k, S1, info("alice", true), 12),
        Applied::Duplicate
    );
    assert_counts_match_scan(&r);
}

#[test]
fn unknown_subscriber_register_then_wakeup() {
    let r = reg();
    let k = key("c");
    assert_eq!(
        r.registered(&k, S1, info("bob", false), 10),
        Applied::Applied
    );
    assert_eq!(
        (view(&r, &k).state, view(&r, &k).queue),
        (SessionState::Authenticated, None)
    );
    assert_eq!(r.live_sessions_of_user(b"bob"), 1);
    assert_eq!(r.woke_up(&k, Q1, 11), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!((v.state, v.queue, v.conn, v.connect_count), (SessionState::Online, Some(Q1), Some(S1), 1));
    assert_eq!(r.live_sessions_of_user(b"bob"), 1);
}

#[test]
fn unannounced_takeover_by_other_plugin() {
    let r = reg();
    let k = key("c");
    let g1 = connect(&r, &k, S1, Q1, true, 10);
    // New connection authorised by another plugin; its new queue wakes first.
    assert_eq!(r.woke_up(&k, Q2, 20), Applied::Applied);
    let g2 = view(&r, &k).generation;
    assert!(g2 > g1);
    assert_eq!(r.gone(&k, Q1, 21), Applied::Stale);
    assert_eq!(
        r.registered(&k, S2, info("bob", true), 22),
        Applied::Applied
    );
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.generation, v.conn, v.queue),
        (SessionState::Online, g2, Some(S2), Some(Q2))
    );
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver)]);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (0, 1)
    );
}

#[test]
fn unknown_offline_creates_offline_record() {
    let r = reg();
    let k = key("c");
    assert_eq!(r.went_offline(&k, Q1, 10), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!(
        (v.state, v.queue, v.connect_count),
        (SessionState::Offline, Some(Q1), 0)
    );
    assert_eq!(r.counts().offline, 1);
    assert_eq!(r.expired(&k, Q1, 20), Applied::Applied);
    assert!(r.lookup(&k).is_none());
    assert_eq!(r.gone(&key("x"), Q1, 1), Applied::Unknown);
    assert_eq!(r.expired(&key("y"), Q1, 1), Applied::Unknown);
    assert_eq!(r.stats().unknown_events, 2);
    assert_eq!(r.len(), 0);
}

#[test]
fn offline_from_unknown_queue_with_only_pending_is_stale() {
    let r = reg();
    let k = key("c");
    let g = r.auth_accepted(&k, S2, info("alice", false), 10);
    assert_eq!(r.went_offline(&k, Q1, 11), Applied::Stale);
    assert_eq!(r.gone(&k, Q1, 11), Applied::Stale);
    assert_eq!(
        r.registered(&k, S2, info("alice", false), 12),
        Applied::Applied
    );
    assert_eq!(view(&r, &k).generation, g);
}

#[test]
fn sweep_drops_unconfirmed_connects() {
    let r = reg();
    let k = key("c");
    let g = r.auth_accepted(&k, S1, info("alice", true), 0);
    assert_eq!(r.sweep(1000), 0, "ttl not exceeded yet");
    assert_eq!(r.sweep(1001), 1);
    assert!(r.lookup(&k).is_none());
    assert_eq!(reasons(&r), vec![(g, EndReason::Abandoned)]);
    assert_eq!(
        (r.len(), r.live_sessions_of_user(b"alice"), r.counts()),
        (0, 0, StateCounts::default())
    );

    // A pending connect over a live session: only the pending goes.
    let k2 = key("d");
    let g1 = connect(&r, &k2, S1, Q1, false, 2000);
    let g2 = r.auth_accepted(&k2, S2, info("bob", false), 2100);
    assert_eq!(r.live_sessions_of_user(b"bob"), 1);
    assert_eq!(r.sweep(5000), 1);
    let v = view(&r, &k2);
    assert_eq!(
        (v.state, v.generation, v.pending_generation),
        (SessionState::Online, g1, None)
    );
    assert_eq!(r.recent_endings(1)[0].generation, g2);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (1, 0)
    );
    assert_eq!(r.sweep(9000), 0);
    assert_counts_match_scan(&r);
}

#[test]
fn stale_pending_dropped_lazily() {
    let r = reg();
    let k = key("c");
    let g1 = r.auth_accepted(&k, S1, info("alice", true), 0);
    // Its on_register, far too late: the pending is gone, the registration is
    // a confirmed connect we did not see accepted -> new generation, current
    // when its queue wakes.
    assert_eq!(
        r.registered(&k, S1, info("alice", true), 5000),
        Applied::Applied
    );
    let v = view(&r, &k);
    assert!(v.generation > g1);
    assert_eq!(v.state, SessionState::Authenticated);
    assert_eq!(reasons(&r), vec![(g1, EndReason::Abandoned)]);
    assert_eq!(r.woke_up(&k, Q1, 5001), Applied::Applied);
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 0,
            online: 1,
            offline: 0
        }
    );
}

#[test]
fn concurrent_auths_both_wait() {
    // Two connects of one client id accepted before either registers (facts:
    // both auths come first): neither replaces the other.
    let r = reg();
    let k = key("c");
    let g1 = r.auth_accepted(&k, S1, info("alice", true), 0);
    let g2 = r.auth_accepted(&k, S2, info("alice", true), 1);
    assert!(g2 > g1);
    assert_eq!(reasons(&r), vec![]);
    assert_eq!(r.live_sessions_of_user(b"alice"), 1, "same user, one client id: one session");
    // The wakeup names only the queue: it waits for an on_register.
    assert_eq!(r.woke_up(&k, Q1, 2), Applied::Applied);
    assert_eq!(view(&r, &k).state, SessionState::Authenticated);
    assert_eq!(r.registered(&k, S1, info("alice", true), 3), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!((v.state, v.generation, v.queue, v.pending_generation), (SessionState::Online, g1, Some(Q1), Some(g2)));
    assert_eq!(r.gone(&k, Q1, 4), Applied::Applied);
    assert_eq!(r.woke_up(&k, Q2, 5), Applied::Applied);
    assert_eq!(r.registered(&k, S2, info("alice", true), 6), Applied::Applied);
    let v = view(&r, &k);
    assert_eq!((v.state, v.generation, v.queue, v.connect_count), (SessionState::Online, g2, Some(Q2), 2));
    assert_eq!(r.gone(&k, Q2, 7), Applied::Applied);
    assert!(r.lookup(&k).is_none());
    assert_eq!(reasons(&r), vec![(g1, EndReason::TakenOver), (g2, EndReason::Gone)]);
    assert_eq!(r.live_sessions_of_user(b"alice"), 0);
    let _ = S3;
}

#[test]
fn generations_increase_across_record_removal() {
    let r = reg();
    let k = key("c");
    let mut last = 0;
    for i in 0..5 {
        let g = connect(&r, &k, S1, Q1, true, i * 10);
        assert!(g > last);
        last = g;
        r.gone(&k, Q1, i * 10 + 5);
    }
    r.clear();
    assert!(connect(&r, &k, S1, Q1, true, 100) > last);
}

#[test]
fn per_user_counts() {
    let r = reg();
    connect(&r, &key("a1"), S1, Q1, true, 0);
    r.auth_accepted(&key("a2"), S2, info("alice", true), 0);
    assert_eq!(r.live_sessions_of_user(b"alice"), 2);
    // A takeover of a1 by another user: two live until promotion.
    r.auth_accepted(&key("a1"), S3, info("bob", true), 1);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (2, 1)
    );
    r.gone(&key("a1"), Q1, 2);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (1, 1)
    );
    r.woke_up(&key("a1"), Q2, 3);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (1, 1)
    );
    // on_register's username (after modifiers) replaces auth's.
    r.registered(&key("a1"), S3, info("carol", true), 4);
    assert_eq!(
        (
            r.live_sessions_of_user(b"bob"),
            r.live_sessions_of_user(b"carol")
        ),
        (0, 1)
    );
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 1,
            online: 1,
            offline: 0
        }
    );
    assert_eq!(r.live_sessions_of_user(b"nobody"), 0);
    r.clear();
    assert_eq!(r.users.entries(), 0);
    assert_eq!(
        (r.len(), r.counts(), r.stats().ended),
        (0, StateCounts::default(), 0)
    );
}

#[test]
fn list_filters() {
    let r = reg();
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7));
    let v6 = IpAddr::V6("2001:db8::5".parse::<Ipv6Addr>().unwrap());
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 168, 1, 9).to_ipv6_mapped());
    let mp = |m: &str, c: &str| SubscriberKey::new(m.as_bytes().to_vec(), c.as_bytes().to_vec());
    r.auth_accepted(&mp("", "sensor-1"), S1, info_at("alice", true, v4), 0);
    r.woke_up(&mp("", "sensor-1"), Q1, 1);
    r.auth_accepted(&mp("", "sensor-2"), S2, info_at("bob", true, v6), 0);
    r.auth_accepted(
        &mp("mp1", "sensor-3"),
        S3,
        info_at("alice", false, mapped),
        0,
    );
    r.woke_up(&mp("mp1", "sensor-3"), Q2, 1);
    r.went_offline(&mp("mp1", "sensor-3"), Q2, 2);
    r.went_offline(&mp("", "other"), ProcId(9), 2);

    let ids = |f: Filter| {
        let mut v: Vec<String> = r
            .list(&f, usize::MAX)
            .into_iter()
            .map(|v| String::from_utf8(v.key.client_id.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(Filter::default()).len(), 4);
    assert_eq!(
        ids(Filter {
            state: Some(SessionState::Online),
            ..Default::default()
        }),
        ["sensor-1"]
    );
    assert_eq!(
        ids(Filter {
            state: Some(SessionState::Authenticated),
            ..Default::default()
        }),
        ["sensor-2"]
    );
    assert_eq!(
        ids(Filter {
            state: Some(SessionState::Offline),
            ..Default::default()
        }),
        ["other", "sensor-3"]
    );
    assert!(ids(Filter {
        state: Some(SessionState::Gone),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(
        ids(Filter {
            username: Some(b"alice".to_vec()),
            ..Default::default()
        }),
        ["sensor-1", "sensor-3"]
    );
    assert_eq!(
        ids(Filter {
            mountpoint: Some(b"mp1".to_vec()),
            ..Default::default()
        }),
        ["sensor-3"]
    );
    assert_eq!(
        ids(Filter {
            mountpoint: Some(Vec::new()),
            ..Default::default()
        }),
        ["other", "sensor-1", "sensor-2"]
    );
    assert_eq!(
        ids(Filter {
            client_id_prefix: Some(b"sensor-".to_vec()),
            ..Default::default()
        })
        .len(),
        3
    );
    let net = |s: &str| Some(s.parse::<IpNet>().unwrap());
    assert_eq!(
        ids(Filter {
            network: net("2001:db8::/32"),
            ..Default::default()
        }),
        ["sensor-2"]
    );
    assert_eq!(
        ids(Filter {
            network: net("2001:db9::/32"),
            ..Default::default()
        }),
        Vec::<String>::new()
    );
    // IPv4-mapped IPv6 peers match IPv4 networks.
    assert_eq!(
        ids(Filter {
            network: net("192.168.1.0/24"),
            ..Default::default()
        }),
        ["sensor-1", "sensor-3"]
    );
    assert_eq!(
        ids(Filter {
            network: net("192.168.1.7/32"),
            username: Some(b"alice".to_vec()),
            ..Default::default()
        }),
        ["sensor-1"]
    );
    assert_eq!(r.list(&Filter::default(), 2).len(), 2);
    assert!(r.list(&Filter::default(), 0).is_empty());

    assert_counts_match_scan(&r);
}

/// Every step of a chunked listing, collected; `None` as soon as `out`
/// reaches `limit`.
fn list_in_chunks(r: &Registry, f: &Filter, max_slots: usize, limit: usize) -> (Vec<SessionView>, usize) {
    let mut out = Vec::new();
    let mut steps = 0;
    let mut cursor = Some(ListCursor::START);
    while let Some(c) = cursor {
        if out.len() >= limit {
            break;
        }
        cursor = r.list_chunk(f, c, max_slots, &mut out, limit);
        steps += 1;
    }
    (out, steps)
}

fn sorted_keys(views: &[SessionView]) -> Vec<SubscriberKey> {
    let mut keys: Vec<_> = views.iter().map(|v| v.key.clone()).collect();
    keys.sort();
    keys
}

#[test]
fn list_chunk_small_steps_equal_list() {
    let r = reg();
    for i in 0..600 {
        let k = key(&format!("c{i}"));
        if i % 3 == 0 {
            r.auth_accepted(&k, ProcId(1000 + i), info("alice", true), 0);
        } else {
            r.went_offline(&k, ProcId(5000 + i), 0);
        }
    }
    let offline = Filter {
        state: Some(SessionState::Offline),
        ..Default::default()
    };
    for f in [Filter::default(), offline] {
        let all = r.list(&f, usize::MAX);
        for max_slots in [0, 1, 2, 7, 150, 600, usize::MAX] {
            let (chunked, steps) = list_in_chunks(&r, &f, max_slots, usize::MAX);
            assert_eq!(sorted_keys(&chunked), sorted_keys(&all), "max_slots {max_slots}");
            // Only the slot budget ends a step early.
            assert!(steps <= 600usize.div_ceil(max_slots.max(1)) + 1, "{steps} steps");
        }
        for limit in [0, 1, 199, 200, 399, 400, 401] {
            let (chunked, _) = list_in_chunks(&r, &f, 7, limit);
            assert_eq!(chunked.len(), limit.min(all.len()), "limit {limit}");
            assert_eq!(r.list(&f, limit).len(), limit.min(all.len()));
        }
    }
    assert_eq!(r.list(&Filter::default(), usize::MAX).len(), 600);

    // A cursor past the last shard is done; one past a shard's length is
    // clamped to it.
    let mut out = Vec::new();
    let past = ListCursor {
        shard: r.shard_count(),
        unvisited: 0,
    };
    assert_eq!(r.list_chunk(&Filter::default(), past, 10, &mut out, 10), None);
    let last = ListCursor {
        shard: r.shard_count() - 1,
        unvisited: u32::MAX - 1,
    };
    assert_eq!(r.list_chunk(&Filter::default(), last, usize::MAX, &mut out, usize::MAX), None);
    assert_eq!(out.len(), r.shards[r.shard_count() - 1].inner.lock().slab.len() as usize);
}

#[test]
fn history_is_bounded_newest_first() {
    let r = Registry::new(RegistryConfig {
        shards: 2,
        history_size: 3,
        pending_ttl_ms: 10,
    });
    let k = key("c");
    let mut gens = Vec::new();
    for i in 0..5 {
        gens.push(connect(&r, &k, S1, Q1, true, i * 10));
        r.gone(&k, Q1, i * 10 + 5);
    }
    let e = r.recent_endings(10);
    assert_eq!(
        e.iter().map(|e| e.generation).collect::<Vec<_>>(),
        vec![gens[4], gens[3], gens[2]]
    );
    assert_eq!(r.recent_endings(1)[0].generation, gens[4]);
    assert_eq!(r.stats().history_len, 3);
    assert_eq!(r.stats().ended, 5);
    r.set_history_size(1);
    assert_eq!(r.recent_endings(10).len(), 1);
    r.set_history_size(0);
    connect(&r, &k, S1, Q1, true, 100);
    r.gone(&k, Q1, 105);
    assert_eq!(r.stats().history_len, 0);
}

#[test]
fn config_shards_rounded_to_power_of_two() {
    assert_eq!(
        Registry::new(RegistryConfig {
            shards: 5,
            ..Default::default()
        })
        .shard_count(),
        8
    );
    assert_eq!(
        Registry::new(RegistryConfig {
            shards: 0,
            ..Default::default()
        })
        .shard_count(),
        1
    );
    assert_eq!(Registry::new(RegistryConfig::default()).stats().shards, 64);
}

#[test]
fn record_is_compact() {
    // Per-live-session memory is benchmarked against ETS: keep the record
    // (key and username are one block of the shard's byte pool) small.
    let size = std::mem::size_of::<record::Record>();
    assert!(size <= 96, "Record grew to {size} bytes");
}

/// Key, username and pending connect live in the shard's store (pool.rs):
/// every value read back is the one written, through username changes,
/// long client ids and usernames, mountpoints and abandoned connects, and
/// once every session has ended the sweep takes the store back to one
/// block and one chunk of pending slots.
#[test]
fn shard_store_round_trips_and_empties() {
    let r = Registry::new(RegistryConfig {
        shards: 1,
        history_size: 10,
        pending_ttl_ms: 1000,
    });
    let long_id = "x".repeat(700);
    let long_user = "u".repeat(600);
    let keys: Vec<SubscriberKey> = (0..3000)
        .map(|i| match i % 3 {
            0 => key(&format!("client-{i}")),
            1 => SubscriberKey::new(format!("mp/{i}").into_bytes(), format!("c{i}").into_bytes()),
            _ => key(&format!("{long_id}{i}")),
        })
        .collect();
    let user_of = |i: usize, round: usize| match (i + round) % 4 {
        0 => String::new(),
        1 => format!("user-{}", i % 10),
        2 => format!("{long_user}{i}"),
        _ => format!("other-{i}"),
    };
    for round in 0..3 {
        for (i, k) in keys.iter().enumerate() {
            let conn = ProcId(10_000 + (round * 10_000 + i) as u64);
            // every 5th key has a second accepted connect that never
            // registers: the sweep drops it after the TTL
            if i % 5 == 0 {
                r.auth_accepted(k, ProcId(1), info(&user_of(i, round + 1), false), 1);
            }
            r.auth_accepted(k, conn, info(&user_of(i, round), false), 1);
            if round == 0 {
                // (later rounds show the offline session until promotion)
                assert_eq!(view(&r, k).username.as_deref(), Some(user_of(i, round).as_bytes()));
            }
            assert_eq!(r.woke_up(k, Q1, 2), Applied::Applied);
            let registered_as = user_of(i, round + 2);
            assert_eq!(r.registered(k, conn, info(&registered_as, false), 3), Applied::Applied);
        }
        for (i, k) in keys.iter().enumerate() {
            let v = view(&r, k);
            assert_eq!(v.key, *k);
            assert_eq!(v.username.as_deref(), Some(user_of(i, round + 2).as_bytes()));
        }
        if round < 2 {
            for k in &keys {
                assert_eq!(r.went_offline(k, Q1, 4), Applied::Applied);
            }
        }
    }
    let held = |r: &Registry| {
        let g = r.shards[0].inner.lock();
        (g.st.bytes.held(), g.st.pending.chunk_count())
    };
    assert!(held(&r).0 > 16 * 1024);
    for k in &keys {
        assert_eq!(r.gone(k, Q1, 5), Applied::Applied);
    }
    assert_eq!(r.len(), keys.len().div_ceil(5));
    // Memory goes back in the sweep (dirty scheduler), never in a hook.
    assert_eq!(r.sweep(5000), keys.len().div_ceil(5));
    assert!(r.is_empty());
    assert_eq!(held(&r), (16 * 1024, 1), "store keeps one block and one table chunk");
    assert_eq!(r.recent_endings(1)[0].reason, EndReason::Abandoned);
}

#[test]
fn registry_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
}

#[test]
fn as_str_names() {
    assert_eq!(SessionState::Authenticated.as_str(), "authenticated");
    assert_eq!(SessionState::Expired.as_str(), "expired");
    let names: Vec<_> = [
        EndReason::TakenOver,
        EndReason::Gone,
        EndReason::Offline,
        EndReason::Expired,
        EndReason::Discarded,
        EndReason::Abandoned,
    ]
    .iter()
    .map(|r| r.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "taken_over",
            "gone",
            "offline",
            "expired",
            "discarded",
            "abandoned"
        ]
    );
}

/// The index grows and shrinks around records that move (removal moves the
/// last record of a shard into the freed slot) using the hash bits kept in
/// its buckets: every key must still be found after many growths, and after
/// half of them were removed in random order.
#[test]
fn index_survives_growth_and_moves() {
    let r = Registry::new(RegistryConfig { shards: 1, history_size: 0, pending_ttl_ms: 1000 });
    let n = 50_000u32;
    let k = |i: u32| key(&format!("grow-{i}"));
    for i in 0..n {
        assert_eq!(r.woke_up(&k(i), ProcId(u64::from(i) + 1), 1), Applied::Applied);
    }
    assert_eq!(r.len(), n as usize);
    assert!((0..n).all(|i| r.lookup(&k(i)).is_some()));
    // Remove every other key in a scrambled order (gone from its queue).
    let mut gone: Vec<u32> = (0..n).filter(|i| i % 2 == 0).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for j in (1..gone.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        gone.swap(j, (x % (j as u64 + 1)) as usize);
    }
    for &i in &gone {
        assert_eq!(r.gone(&k(i), ProcId(u64::from(i) + 1), 2), Applied::Applied);
    }
    assert_eq!(r.len(), (n / 2) as usize);
    for i in 0..n {
        assert_eq!(r.lookup(&k(i)).is_some(), i % 2 == 1, "key {i}");
    }
    // And the table still takes new keys.
    for i in n..n + 1000 {
        assert_eq!(r.woke_up(&k(i), ProcId(u64::from(i) + 1), 3), Applied::Applied);
        assert!(r.lookup(&k(i)).is_some());
    }
}

/// The concurrent-connect traces of a real 2.0.1 node, hook for hook (two
/// clients, one client id, both auths first, then both disconnect):
/// exactly one session at the end of the registrations, none or one
/// offline after the disconnects, and the endings the broker had.
#[test]
fn concurrent_connect_traces_of_a_real_broker() {
    use EndReason::{Gone, Offline, TakenOver};
    const C1: ProcId = S1;
    const C2: ProcId = S2;
    // (clean C1, clean C2, registrations in order: (conn, its queue events before on_register)),
    // final disconnect queue event, expected endings by connection
    type Step = (ProcId, &'static [(char, ProcId)]);
    type Case = (bool, bool, [Step; 2], (char, ProcId), [(ProcId, EndReason); 2]);
    let cases: [Case; 5] = [
        (true, true, [(C1, &[('w', Q1)]), (C2, &[('g', Q1), ('w', Q2)])], ('g', Q2), [(C1, TakenOver), (C2, Gone)]),
        (false, false, [(C2, &[('w', Q1)]), (C1, &[('o', Q1), ('w', Q1)])], ('o', Q1), [(C2, TakenOver), (C1, Offline)]),
        (false, false, [(C1, &[('w', Q1)]), (C2, &[('o', Q1), ('w', Q1)])], ('o', Q1), [(C1, TakenOver), (C2, Offline)]),
        (false, true, [(C1, &[('w', Q1)]), (C2, &[('g', Q1), ('w', Q2)])], ('g', Q2), [(C1, TakenOver), (C2, Gone)]),
        (true, false, [(C1, &[('w', Q1)]), (C2, &[('g', Q1), ('w', Q1)])], ('o', Q1), [(C1, TakenOver), (C2, Offline)]),
    ];
    for (n, (clean1, clean2, regs, last, endings)) in cases.into_iter().enumerate() {
        let r = reg();
        let k = key("same-id");
        let g1 = r.auth_accepted(&k, C1, info("alice", clean1), 0);
        let g2 = r.auth_accepted(&k, C2, info("bob", clean2), 1);
        let gen_of = |c: ProcId| if c == C1 { g1 } else { g2 };
        let clean_of = |c: ProcId| if c == C1 { clean1 } else { clean2 };
        let user_of = |c: ProcId| if c == C1 { "alice" } else { "bob" };
        let queue_event = |(what, q): (char, ProcId), t| match what {
            'w' => r.woke_up(&k, q, t),
            'o' => r.went_offline(&k, q, t),
            _ => r.gone(&k, q, t),
        };
        let mut t = 10;
        for (conn, events) in regs {
            for &e in events {
                assert_eq!(queue_event(e, t), Applied::Applied, "case {n}");
                t += 1;
            }
            assert_eq!(r.registered(&k, conn, info(user_of(conn), clean_of(conn)), t), Applied::Applied, "case {n}");
            t += 1;
            let v = view(&r, &k);
            assert_eq!((v.state, v.generation, v.conn), (SessionState::Online, gen_of(conn), Some(conn)), "case {n}");
            assert_eq!(r.counts().online, 1, "case {n}");
            assert_eq!(v.clean_session, clean_of(conn), "case {n}");
        }
        let v = view(&r, &k);
        assert_eq!((v.connect_count, v.pending_generation), (2, None), "case {n}");
        assert_eq!(r.live_sessions_of_user(b"alice") + r.live_sessions_of_user(b"bob"), 1, "case {n}");
        assert_eq!(queue_event(last, t + 200), Applied::Applied, "case {n}");
        let want: Vec<_> = endings.iter().map(|&(c, why)| (gen_of(c), why)).collect();
        assert_eq!(reasons(&r), want, "case {n}");
        assert_eq!(r.counts().online, 0, "case {n}: no ghost");
        assert_eq!(r.live_sessions_of_user(b"alice") + r.live_sessions_of_user(b"bob"), 0, "case {n}");
        match r.lookup(&k) {
            None => assert_eq!(last.0, 'g', "case {n}"),
            Some(v) => assert_eq!((v.state, last.0), (SessionState::Offline, 'o'), "case {n}"),
        }
    }
}

#[test]
fn reconcile_corrects_what_the_broker_does_not_have() {
    let r = reg();
    let (a, b, c) = (key("ghost"), key("offline"), key("fine"));
    let ga = connect(&r, &a, S1, Q1, true, 10);
    connect(&r, &b, S2, Q2, false, 10);
    connect(&r, &c, S3, ProcId(203), true, 10);
    let seen = |k: &SubscriberKey| view(&r, k).last_change;
    // Read, then something happened: left for the next pass.
    assert_eq!(r.reconcile(&a, BrokerSession::Absent, seen(&a) - 1, 100), Reconciled::Changed);
    assert_eq!(view(&r, &a).state, SessionState::Online);
    // The broker has no queue for `a`: the online ghost ends `vanished`.
    assert_eq!(r.reconcile(&a, BrokerSession::Absent, seen(&a), 100), Reconciled::Corrected);
    assert!(r.lookup(&a).is_none());
    assert_eq!(reasons(&r), vec![(ga, EndReason::Vanished)]);
    assert_eq!(r.live_sessions_of_user(b"alice"), 2);
    // `b` is offline on the broker: offline here too, then gone from both.
    assert_eq!(r.reconcile(&b, BrokerSession::Offline, seen(&b), 101), Reconciled::Corrected);
    assert_eq!(view(&r, &b).state, SessionState::Offline);
    assert_eq!(r.reconcile(&b, BrokerSession::Offline, seen(&b), 102), Reconciled::Agrees);
    assert_eq!(r.reconcile(&b, BrokerSession::Online, seen(&b), 102), Reconciled::Differs);
    assert_eq!(r.reconcile(&b, BrokerSession::Absent, seen(&b), 103), Reconciled::Corrected);
    assert!(r.lookup(&b).is_none());
    assert_eq!(r.reconcile(&c, BrokerSession::Online, seen(&c), 104), Reconciled::Agrees);
    assert_eq!(r.reconcile(&a, BrokerSession::Online, 0, 105), Reconciled::NotFound);
    assert_eq!(r.stats().reconciled, 3);
    assert_eq!(r.counts(), StateCounts { authenticated: 0, online: 1, offline: 0 });
    assert_counts_match_scan(&r);
}

#[test]
fn on_register_without_username_keeps_the_admitted_identity() {
    // A certificate client that sent no username: our auth admitted it as
    // "device-7"; VerneMQ dropped the username modifier, so on_register
    // carries none. The identity stays (it is what the binding and
    // max_sessions count).
    let r = reg();
    let k = key("dev-a");
    let no_user = ConnectInfo { username: None, ..info("x", true) };
    r.auth_accepted(&k, S1, info("device-7", true), 0);
    assert_eq!(r.woke_up(&k, Q1, 1), Applied::Applied);
    assert_eq!(r.registered(&k, S1, no_user, 2), Applied::Applied);
    assert_eq!(view(&r, &k).username.as_deref(), Some(&b"device-7"[..]));
    assert_eq!(r.live_sessions_of_user(b"device-7"), 1);
    // on_register before the wakeup, the same.
    let k2 = key("dev-b");
    r.auth_accepted(&k2, S2, info("device-7", true), 3);
    assert_eq!(r.registered(&k2, S2, no_user, 4), Applied::Applied);
    assert_eq!(r.woke_up(&k2, Q2, 5), Applied::Applied);
    assert_eq!(view(&r, &k2).username.as_deref(), Some(&b"device-7"[..]));
    assert_eq!(r.live_sessions_of_user(b"device-7"), 2);
}
