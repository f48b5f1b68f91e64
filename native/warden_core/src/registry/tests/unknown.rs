//! Subscribers the registry never saw authorised, and the upkeep of
//! pending connects (sweep, lazy expiry, generations).

use super::*;

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
    assert_eq!((r.stats().ended, r.stats().taken_over), (1, 0), "a sweep's endings are counted");
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
    assert_eq!(r.stats().ended, 2);
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
