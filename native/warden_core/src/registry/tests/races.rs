//! Orders a real broker produced (traced), the reconciliation, and
//! on_register without a username.

use super::*;

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
