//! Every refusal writes one audit event, and no event carries a secret.
//!
//! Its own test binary (its own process): tracing caches per-callsite
//! interest globally, so a scoped subscriber in a unit test races the other
//! tests' threads, which run without one.

use std::sync::Arc;

use parking_lot::Mutex;
use warden_core::credentials::PasswordFile;
use warden_core::firewall::{
    AuthRequest, Decision, Firewall, FirewallConfig, Listener, NoSessions, PasswordStep, Step,
};
use warden_core::policy::Policy;
use warden_core::types::{Peer, Protocol, SubscriberKey};

const EXAMPLE: &str = include_str!("../../../docs/policy.example.toml");

struct Capture(Mutex<Vec<String>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut s = format!("{} ", e.metadata().target());
        e.record(&mut Fields(&mut s));
        self.0.lock().push(s);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn req(peer: &str, client_id: &str, user: &str) -> AuthRequest<'static> {
    AuthRequest {
        key: SubscriberKey::new(&b""[..], client_id.as_bytes()),
        peer: Some(Peer { ip: peer.parse().unwrap(), port: 40000 }),
        username: Some(user.as_bytes().to_vec().into()),
        has_password: true,
        clean_session: true,
        protocol: Protocol::Mqtt3,
        listener: Some(Listener { port: Some(1883), kind: Some("tcp".into()), addr: None }),
        client_cert: None,
        client_max_packet_size: None,
        client_session_expiry: None,
    }
}

fn decide(fw: &Firewall, r: AuthRequest, pw: &str) -> Decision {
    match fw.begin(r, &NoSessions, 0) {
        Step::Done(d, _) => d,
        Step::NeedPassword(p) => match fw.with_password(&p, Some(pw.as_bytes()), &NoSessions, 0) {
            PasswordStep::Done(d) => d,
            PasswordStep::NeedSlowHash => fw.verify_slow(&p, Some(pw.as_bytes()), &NoSessions, 0),
        },
    }
}

#[test]
fn every_refusal_is_audited_once_without_secrets() {
    let cap = Arc::new(Capture(Mutex::new(Vec::new())));
    let fw = Firewall::new(FirewallConfig { ban_threshold: 2, ban_users: true, ..Default::default() });
    fw.install(Policy::parse(EXAMPLE, "example.toml").unwrap(), PasswordFile::parse("", "passwd"));
    tracing::subscriber::with_default(cap.clone(), || {
        decide(&fw, req("10.0.0.5", "alice:1", "alice"), "hunter2-wrong");
        decide(&fw, req("10.0.0.5", "alice:1", "alice"), "hunter2-wrong2");
        decide(&fw, req("10.0.0.5", "alice:1", "alice"), "alice-secret"); // banned now
        decide(&fw, req("10.0.0.6", "root:1", "root"), "x");
    });
    let events = cap.0.lock();
    let audits: Vec<&String> =
        events.iter().filter(|e| e.starts_with("vmq_warden::audit") && e.contains("code=")).collect();
    assert_eq!(audits.len(), 4, "{events:#?}");
    assert_eq!(events.iter().filter(|e| e.contains("ban=")).count(), 2, "peer and user ban started");
    assert!(audits[0].contains("code=\"bad_username_or_password\"") && audits[0].contains("username=alice"), "{}", audits[0]);
    assert!(audits[0].contains("client_id=alice:1") && audits[0].contains("peer=10.0.0.5"), "{}", audits[0]);
    assert!(audits[2].contains("code=\"banned\""), "{}", audits[2]);
    for e in events.iter() {
        assert!(!e.contains("hunter2") && !e.contains("alice-secret") && !e.contains("$6$"), "{e}");
    }
}
