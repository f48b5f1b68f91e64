//! The event queue's bounds and counters, the JSON encoding, and the events
//! the registry emits for the broker's hook orders (docs/VERNEMQ.md).

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::firewall::{Mods, Refusal};
use crate::registry::{Applied, ConnectInfo, Registry, RegistryConfig};
use crate::types::{Peer, ProcId};

const S1: ProcId = ProcId(101);
const S2: ProcId = ProcId(102);
const Q1: ProcId = ProcId(201);
const Q2: ProcId = ProcId(202);

fn key(id: &str) -> SubscriberKey {
    SubscriberKey::new(Vec::new(), id.as_bytes().to_vec())
}

fn peer() -> Option<Peer> {
    Some(Peer { ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port: 4000 })
}

fn info(clean: bool) -> ConnectInfo<'static> {
    ConnectInfo { peer: peer(), username: Some(b"alice"), clean_session: clean, protocol: Protocol::Mqtt3 }
}

fn registry_with_events() -> Registry {
    let r = Registry::new(RegistryConfig { shards: 4, history_size: 100, pending_ttl_ms: 1000 });
    r.events().configure(true, 1 << 20);
    r
}

fn kinds_and_sessions(r: &Registry) -> Vec<(EventKind, Option<u64>)> {
    r.events().take(usize::MAX).iter().map(|e| (e.kind, e.session)).collect()
}

fn event(id: &str) -> Event {
    Event { kind: EventKind::Gone, key: key(id), session: Some(1), at: 5, peer: None, username: None, detail: Detail::None }
}

#[test]
fn off_by_default_and_off_queues_nothing() {
    let q = EventQueue::default();
    assert!(!q.push(event("a")));
    assert_eq!(q.stats(), EventQueueStats { max_bytes: 1 << 20, ..Default::default() });
    let r = Registry::new(RegistryConfig::default());
    let g = r.auth_accepted(&key("c"), S1, info(true), 1);
    r.woke_up(&key("c"), Q1, 2);
    r.registered(&key("c"), S1, info(true), 3);
    r.gone(&key("c"), Q1, 4);
    assert_eq!(g, 1);
    assert_eq!(r.events().stats().pushed, 0);
    assert!(r.events().take(10).is_empty());
}

#[test]
fn a_storm_stays_within_the_byte_bound_and_counts_every_drop() {
    let one = event("client-0000").size();
    let q = EventQueue::new(one * 100);
    q.configure(true, one * 100);
    let mut accepted = 0;
    for i in 0..10_000 {
        if q.push(event(&format!("client-{:04}", i % 10_000))) {
            accepted += 1;
        }
        assert!(q.stats().queued_bytes as usize <= one * 100);
    }
    let s = q.stats();
    assert_eq!(accepted, 100);
    assert_eq!(s.pushed, 100);
    assert_eq!(s.dropped, 10_000 - 100);
    // drained oldest first, and the room comes back
    let first = q.take(3);
    assert_eq!(first.iter().map(|e| &*e.key.client_id).collect::<Vec<_>>(), [&b"client-0000"[..], b"client-0001", b"client-0002"]);
    assert!(q.push(event("client-0000")));
    assert_eq!(q.take(usize::MAX).len(), 98);
    assert_eq!(q.stats().queued_bytes, 0);
    // switching off drops what waits, counted
    q.push(event("x"));
    q.configure(false, one * 100);
    assert_eq!(q.stats().queued, 0);
    assert_eq!(q.stats().dropped, 10_000 - 100 + 1);
}

#[test]
fn a_connect_and_a_disconnect_in_the_brokers_order() {
    let r = registry_with_events();
    let k = key("c");
    let g = r.auth_accepted(&k, S1, info(true), 1);
    assert_eq!(r.woke_up(&k, Q1, 2), Applied::Applied);
    assert_eq!(r.registered(&k, S1, info(true), 3), Applied::Applied);
    // a duplicate hook is no event
    assert_eq!(r.registered(&k, S1, info(true), 3), Applied::Duplicate);
    assert_eq!(r.gone(&k, Q1, 4), Applied::Applied);
    assert_eq!(
        kinds_and_sessions(&r),
        [(EventKind::WokeUp, Some(g)), (EventKind::Registered, Some(g)), (EventKind::Gone, Some(g))]
    );
}

/// Takeover true -> true: auth@S2, gone@Q1, wakeup@Q2, on_register@S2.
#[test]
fn a_takeover_names_the_session_that_took_over() {
    let r = registry_with_events();
    let k = key("c");
    let g1 = r.auth_accepted(&k, S1, info(true), 1);
    r.woke_up(&k, Q1, 2);
    r.registered(&k, S1, info(true), 3);
    r.events().take(usize::MAX);
    let g2 = r.auth_accepted(&k, S2, info(true), 10);
    r.gone(&k, Q1, 11);
    r.woke_up(&k, Q2, 12);
    r.registered(&k, S2, info(true), 13);
    let events = r.events().take(usize::MAX);
    let got: Vec<_> = events.iter().map(|e| (e.kind, e.session)).collect();
    assert_eq!(got, [(EventKind::TakenOver, Some(g1)), (EventKind::WokeUp, Some(g2)), (EventKind::Registered, Some(g2))]);
    assert!(matches!(events[0].detail, Detail::Ended { by_session: Some(b), .. } if b == g2), "{:?}", events[0]);
}

/// Takeover false -> false: auth@S2, offline@Q1, on_register@S2, wakeup@Q1.
#[test]
fn a_persistent_takeover_reusing_the_queue() {
    let r = registry_with_events();
    let k = key("p");
    let g1 = r.auth_accepted(&k, S1, info(false), 1);
    r.woke_up(&k, Q1, 2);
    r.registered(&k, S1, info(false), 3);
    let g2 = r.auth_accepted(&k, S2, info(false), 10);
    r.went_offline(&k, Q1, 11);
    r.registered(&k, S2, info(false), 12);
    r.woke_up(&k, Q1, 13);
    r.went_offline(&k, Q1, 20);
    r.expired(&k, Q1, 30);
    assert_eq!(
        kinds_and_sessions(&r),
        [
            (EventKind::WokeUp, Some(g1)),
            (EventKind::Registered, Some(g1)),
            (EventKind::TakenOver, Some(g1)),
            (EventKind::Registered, Some(g2)),
            (EventKind::WokeUp, Some(g2)),
            (EventKind::Offline, Some(g2)),
            (EventKind::Expired, Some(g2)),
        ]
    );
}

#[test]
fn discarded_abandoned_and_kicked() {
    let r = registry_with_events();
    let k = key("d");
    // persistent, offline; then a clean connect discards it
    let g1 = r.auth_accepted(&k, S1, info(false), 1);
    r.woke_up(&k, Q1, 2);
    r.registered(&k, S1, info(false), 3);
    r.went_offline(&k, Q1, 4);
    let g2 = r.auth_accepted(&k, S2, info(true), 10);
    r.woke_up(&k, Q2, 11);
    r.registered(&k, S2, info(true), 12);
    // kicked: recorded with who asked, then the broker's gone follows
    assert!(r.kick(&k, Some(g2), "cli:admin", 20));
    assert!(!r.kick(&k, Some(g1), "cli:admin", 20), "not the current session");
    r.gone(&k, Q2, 21);
    assert!(!r.kick(&k, None, "cli:admin", 22), "no session left");
    // a connect never confirmed is abandoned by the sweep
    let k2 = key("never");
    let g3 = r.auth_accepted(&k2, S1, info(true), 100);
    r.sweep(100 + 5000);
    let events = r.events().take(usize::MAX);
    let got: Vec<_> = events.iter().map(|e| (e.kind, e.session)).collect();
    assert_eq!(
        got,
        [
            (EventKind::WokeUp, Some(g1)),
            (EventKind::Registered, Some(g1)),
            (EventKind::Offline, Some(g1)),
            (EventKind::Discarded, Some(g1)),
            (EventKind::WokeUp, Some(g2)),
            (EventKind::Registered, Some(g2)),
            (EventKind::Kicked, Some(g2)),
            (EventKind::Gone, Some(g2)),
            (EventKind::Abandoned, Some(g3)),
        ]
    );
    assert!(matches!(&events[6].detail, Detail::Ended { kicked_by: Some(b), .. } if &**b == "cli:admin"));
    // the history says who kicked it too (events on or off)
    let kicked: Vec<_> = r.recent_endings(10).into_iter().filter(|e| e.reason == crate::registry::EndReason::Kicked).collect();
    assert_eq!(kicked.len(), 1);
    assert_eq!(kicked[0].kicked_by.as_deref(), Some("cli:admin"));
    assert!(r.recent_endings(10).iter().filter(|e| e.reason != crate::registry::EndReason::Kicked).all(|e| e.kicked_by.is_none()));
}

fn request(username: &str) -> AuthRequest<'static> {
    AuthRequest {
        key: SubscriberKey::new(Vec::new(), b"dev\"1\n".to_vec()),
        peer: peer(),
        username: Some(username.as_bytes().to_vec().into()),
        has_password: true,
        clean_session: true,
        protocol: Protocol::Mqtt5,
        listener: Some(Listener { port: Some(8883), kind: Some("ssl".into()), addr: None }),
        client_cert: None,
        client_max_packet_size: None,
        client_session_expiry: None,
    }
}

#[test]
fn accepted_and_refused_as_json() {
    let mods = Modifiers { max_message_size: Some(1000), username: Some(b"cn-user".to_vec()), ..Default::default() };
    let e = Event::of_decision(&request("alice"), &Decision::Accept(mods.into()), Some(7), 42).expect("an event");
    let json = String::from_utf8(encode_json(&e, "n1@host")).unwrap();
    assert_eq!(
        json,
        "{\"v\":1,\"kind\":\"accepted\",\"node\":\"n1@host\",\"mountpoint\":\"\",\"client_id\":\"dev\\\"1\\n\",\
         \"session\":7,\"at\":42,\"username\":\"cn-user\",\"peer_host\":\"10.0.0.1\",\"peer_port\":4000,\
         \"identity\":\"username\",\"clean_session\":true,\"protocol\":\"mqtt5\",\
         \"listener\":{\"port\":8883,\"type\":\"ssl\"},\"modifiers\":[\"username\",\"max_message_size\"]}"
    );
    let refusal = Refusal { code: RefusalCode::BadUsernameOrPassword, reason: "credentials: wrong password".into() };
    let e = Event::of_decision(&request("bob"), &Decision::Refuse(refusal), None, 43).expect("an event");
    let json = String::from_utf8(encode_json(&e, "n1@host")).unwrap();
    assert!(json.contains("\"kind\":\"refused\""), "{json}");
    assert!(json.contains("\"session\":null"), "{json}");
    assert!(json.contains("\"reason\":\"bad_username_or_password\",\"rule\":\"credentials: wrong password\""), "{json}");
    assert!(Event::of_decision(&request("x"), &Decision::Next, None, 1).is_none());
}

#[test]
fn a_certificate_identity_is_named_as_such() {
    let mut req = request("ignored");
    req.client_cert = Some(vec![1, 2, 3].into());
    let mods = Modifiers { username: Some(b"CN=dev".to_vec()), ..Default::default() };
    let e = Event::of_decision(&req, &Decision::Accept(mods.into()), Some(1), 1).unwrap();
    assert!(matches!(e.detail, Detail::Accepted { identity: IdentitySource::Certificate, .. }));
    let e = Event::of_decision(&req, &Decision::Accept(Mods::default()), Some(1), 1).unwrap();
    assert!(matches!(e.detail, Detail::Accepted { identity: IdentitySource::Username, modifiers: 0, .. }));
}

#[test]
fn json_escapes_control_characters_and_keeps_bytes_that_are_not_utf8() {
    let mut e = event("a\u{1}b");
    e.key.client_id = b"\xffz\\".to_vec().into();
    let json = String::from_utf8(encode_json(&e, "n")).unwrap();
    assert!(json.contains("\"client_id\":\"\u{fffd}z\\\\\""), "{json}");
    let mut e = event("a\u{1}b");
    e.username = Some(b"u\x01".to_vec().into());
    let json = String::from_utf8(encode_json(&e, "n")).unwrap();
    assert!(json.contains("\"client_id\":\"a\\u0001b\""), "{json}");
    assert!(json.contains("\"username\":\"u\\u0001\""), "{json}");
}

#[test]
fn expired_credentials_is_an_ending_of_its_own() {
    let r = registry_with_events();
    let k = key("old");
    let g = r.auth_accepted(&k, S1, info(true), 1);
    r.woke_up(&k, Q1, 2);
    r.registered(&k, S1, info(true), 3);
    assert!(!r.expire_credentials(&k, Some(g + 1), 10), "not the current session");
    assert!(r.expire_credentials(&k, Some(g), 10));
    r.gone(&k, Q1, 11);
    let got = kinds_and_sessions(&r);
    assert_eq!(&got[2..], [(EventKind::ExpiredCredentials, Some(g)), (EventKind::Gone, Some(g))]);
    assert_eq!(r.recent_endings(1)[0].reason, crate::registry::EndReason::Gone);
    assert_eq!(r.recent_endings(2)[1].reason, crate::registry::EndReason::ExpiredCredentials);
}

#[test]
fn a_session_the_broker_does_not_have_vanishes() {
    let r = registry_with_events();
    let k = key("ghost");
    let g = r.auth_accepted(&k, S1, info(true), 1);
    r.woke_up(&k, Q1, 2);
    r.registered(&k, S1, info(true), 3);
    let seen = r.lookup(&k).unwrap().last_change;
    assert_eq!(r.reconcile(&k, crate::registry::BrokerSession::Absent, seen, 20_000), crate::registry::Reconciled::Corrected);
    assert_eq!(kinds_and_sessions(&r).last(), Some(&(EventKind::Vanished, Some(g))));
}

/// A kick with `do_cleanup`: the broker stops the queue without a hook,
/// online or offline, so the plugin removes the session itself; one
/// `kicked` ending each, and a client that came back keeps its session.
#[test]
fn kicked_and_cleaned_sessions_leave_without_a_hook() {
    let r = registry_with_events();
    let (on, off, back) = (key("on"), key("off"), key("back"));
    // a persistent connect as the broker orders it: auth, wakeup, on_register
    let connect = |k: &SubscriberKey, conn, queue, t| {
        let g = r.auth_accepted(k, conn, info(false), t);
        r.woke_up(k, queue, t + 1);
        r.registered(k, conn, info(false), t + 2);
        g
    };
    let g_on = connect(&on, S1, Q1, 1);
    let g_off = connect(&off, S2, Q2, 4);
    r.went_offline(&off, Q2, 7);
    assert!(!r.kicked_and_cleaned(&on, g_on, 8), "not kicked yet");
    for (k, g) in [(&on, g_on), (&off, g_off)] {
        assert!(r.kick(k, Some(g), "ops", 10));
        assert!(r.kicked_and_cleaned(k, g, 11));
        assert!(r.lookup(k).is_none());
        assert!(!r.kicked_and_cleaned(k, g, 12), "already gone");
    }
    let c = r.counts();
    assert_eq!((c.online, c.offline), (0, 0));
    // kicked, then the client reconnected before the cleanup's answer: its
    // new session stays
    let g1 = connect(&back, S1, Q1, 20);
    assert!(r.kick(&back, Some(g1), "ops", 23));
    let g2 = connect(&back, S2, Q1, 24);
    assert!(!r.kicked_and_cleaned(&back, g1, 27));
    assert!(r.lookup(&back).is_some_and(|s| s.generation == g2));
    let kicked: Vec<_> = r.recent_endings(20).into_iter().filter(|e| e.reason == crate::registry::EndReason::Kicked).collect();
    assert_eq!(kicked.len(), 3);
    // no second ending after the kick's (going offline is one of its own)
    use crate::registry::EndReason::{Kicked, Offline};
    let ends = |k: &SubscriberKey| r.recent_endings(20).into_iter().filter(|e| e.key == *k).map(|e| e.reason).collect::<Vec<_>>();
    assert_eq!((ends(&on), ends(&off)), (vec![Kicked], vec![Kicked, Offline]));
}
