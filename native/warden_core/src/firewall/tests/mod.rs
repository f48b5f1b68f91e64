//! The decision engine step by step, with the example policy of docs/.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::policy::RegView;
use crate::types::{Key, SubscriberKey};

const EXAMPLE: &str = include_str!("../../../../../docs/policy.example.toml");
/// Password file line for "backend" / "backend-pw".
const BACKEND_LINE: &str =
    "backend:$6$cGVwcGVycGVwcGVy$H1BWhsn3DSWAHCREmwzY/pv3FJJFqMvT/fuMwGtRGHNDtgPk/kZt7LHGZUiqhWUOpI6hKhgL4WbzbiG4pirpyA==\n";

fn hash6(password: &[u8], salt: &[u8]) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha512};
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    let e = base64::engine::general_purpose::STANDARD;
    format!("$6${}${}", e.encode(salt), e.encode(h.finalize()))
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, "test.toml").unwrap()
}

fn example_fw(cfg: FirewallConfig) -> Firewall {
    let fw = Firewall::new(cfg);
    fw.install(policy(EXAMPLE), PasswordFile::parse(BACKEND_LINE, "passwd"));
    fw
}

fn req(peer: &str, client_id: &str, user: Option<&str>) -> AuthRequest<'static> {
    AuthRequest {
        key: SubscriberKey::new(&b""[..], client_id.as_bytes()),
        peer: Some(Peer { ip: peer.parse().unwrap(), port: 40000 }),
        username: user.map(|u| u.as_bytes().to_vec().into()),
        has_password: user.is_some(),
        clean_session: true,
        protocol: Protocol::Mqtt3,
        listener: Some(Listener { port: Some(1883), kind: Some("tcp".into()), addr: None }),
        client_cert: None,
        client_max_packet_size: None,
        client_session_expiry: None,
    }
}

fn on(mut r: AuthRequest<'static>, port: u16, kind: &str) -> AuthRequest<'static> {
    r.listener = Some(Listener { port: Some(port), kind: Some(kind.into()), addr: None });
    r
}

/// Runs all steps like the NIF does.
fn decide(fw: &Firewall, r: AuthRequest, pw: Option<&str>, s: &dyn LiveSessions, now: Millis) -> Decision {
    match fw.begin(r, s, now) {
        Step::Done(d, _) => d,
        Step::NeedPassword(p) => match fw.with_password(&p, pw.map(str::as_bytes), s, now) {
            PasswordStep::Done(d) => d,
            PasswordStep::NeedSlowHash => fw.verify_slow(&p, pw.map(str::as_bytes), s, now),
        },
    }
}

fn code(d: &Decision) -> Option<RefusalCode> {
    match d {
        Decision::Refuse(r) => Some(r.code),
        _ => None,
    }
}

fn reason(d: &Decision) -> String {
    match d {
        Decision::Refuse(r) => r.reason.clone(),
        other => panic!("not a refusal: {other:?}"),
    }
}

fn mods(d: Decision) -> Modifiers {
    match d {
        Decision::Accept(m) => (*m).clone(),
        other => panic!("not accepted: {other:?}"),
    }
}

struct Sessions(HashMap<Vec<u8>, usize>, Option<SubscriberKey>);

impl LiveSessions for Sessions {
    fn live_sessions_of_user(&self, u: &[u8]) -> usize {
        self.0.get(u).copied().unwrap_or(0)
    }
    fn has_live_session(&self, _u: &[u8], key: &Key<'_>) -> bool {
        self.1.as_ref() == Some(key)
    }
}

// -- policy rules through the engine ------------------------------------------

#[test]
fn known_user_with_right_password_gets_modifiers() {
    let fw = example_fw(FirewallConfig::default());
    let d = decide(&fw, req("10.0.0.5", "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, 1000);
    let m = mods(d);
    assert_eq!(m.subscriber_id, Some(SubscriberKey::new(&b"devices"[..], &b"alice:1"[..])));
    assert_eq!(m.reg_view, Some(RegView::VmqRegTrie));
    assert_eq!(m.max_connection_lifetime, Some(86400));
    assert_eq!(m.username, None);
    // Password-file user.
    let d = decide(&fw, req("192.168.1.9", "backend:1", Some("backend")), Some("backend-pw"), &NoSessions, 1000);
    assert_eq!(mods(d).upgrade_qos, Some(true));
    assert_eq!(fw.stats().accepted, 2);
}

#[test]
fn wrong_or_missing_password_is_bad_username_or_password() {
    let fw = example_fw(FirewallConfig::default());
    let d = decide(&fw, req("10.0.0.5", "alice:1", Some("alice")), Some("nope"), &NoSessions, 0);
    assert_eq!(code(&d), Some(RefusalCode::BadUsernameOrPassword));
    assert!(!reason(&d).contains("nope"));
    let d = decide(&fw, req("10.0.0.5", "alice:1", Some("alice")), None, &NoSessions, 0);
    assert_eq!(code(&d), Some(RefusalCode::BadUsernameOrPassword));
    assert_eq!(fw.stats().refused_of(RefusalCode::BadUsernameOrPassword), 2);
}

#[test]
fn unknown_user_next_by_default_deny_when_configured() {
    let fw = example_fw(FirewallConfig::default());
    let d = decide(&fw, req("10.0.0.5", "carol:1", Some("carol")), Some("x"), &NoSessions, 0);
    assert_eq!(d, Decision::Next);
    // A policy user without any hash is unknown too.
    let d = decide(&fw, req("10.0.0.5", "sensor-7:a", Some("sensor-7")), Some("x"), &NoSessions, 0);
    assert_eq!(d, Decision::Next);

    let fw = example_fw(FirewallConfig { unknown_user: UnknownUser::Deny, ..Default::default() });
    // Same shape as a known user: a password is asked for, and the check of
    // a decoy of the known users' class runs (here all are `$6$`: fast, on
    // the normal scheduler, as a known user's).
    let Step::NeedPassword(p) = fw.begin(req("10.0.0.5", "carol:1", Some("carol")), &NoSessions, 0) else {
        panic!("unknown user in deny mode must look like a known one")
    };
    let PasswordStep::Done(d) = fw.with_password(&p, Some(b"x"), &NoSessions, 0) else {
        panic!("a $6$ decoy is checked where a $6$ user is")
    };
    assert_eq!(code(&d), Some(RefusalCode::BadUsernameOrPassword));
    // The failure is remembered: the same attempt is answered from the cache.
    assert!(matches!(fw.with_password(&p, Some(b"x"), &NoSessions, 1), PasswordStep::Done(Decision::Refuse(_))));
}

#[test]
fn first_matching_rule_wins() {
    let fw = example_fw(FirewallConfig::default());
    // 192.168.66.0/24 is inside network.allow, but the deny rule comes first.
    let d = decide(&fw, req("192.168.66.6", "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, 0);
    assert_eq!(code(&d), Some(RefusalCode::Banned));
    assert_eq!(reason(&d), "rule block-scanners: known scanner network");

    // allow rule: lifts network.allow for the lab network ...
    let d = decide(&fw, req("172.16.3.3", "backend:lab-9", Some("backend")), Some("backend-pw"), &NoSessions, 0);
    assert!(matches!(d, Decision::Accept(_)), "{d:?}");
    // ... but never the deny lists or the client id and username checks.
    let d = decide(&fw, req("172.16.3.3", "root:lab-9", Some("root")), Some("x"), &NoSessions, 0);
    assert_eq!(reason(&d), "username: this username is not allowed");
    let d = decide(&fw, req("172.16.3.3", "backend:lab-9", Some("backend")), Some("backend-pw"), &NoSessions, 0);
    assert!(matches!(d, Decision::Accept(_)));
    // allow still needs credentials ...
    let d = decide(&fw, req("172.16.3.3", "backend:lab-9", Some("backend")), Some("bad"), &NoSessions, 0);
    assert_eq!(code(&d), Some(RefusalCode::BadUsernameOrPassword));
    // ... and the user's own networks still apply (alice: group devices, 10.0.0.0/8).
    let d = decide(&fw, req("172.16.3.3", "alice:lab-9", Some("alice")), Some("alice-secret"), &NoSessions, 0);
    assert!(reason(&d).starts_with("networks: user \"alice\""), "{d:?}");

    // next rule, only on port 1884.
    let d = decide(&fw, on(req("10.0.0.1", "bridge-1x", Some("bridge-1")), 1884, "tcp"), None, &NoSessions, 0);
    assert_eq!(d, Decision::Next);

    // listener + protocol rule.
    let mut r = on(req("10.0.0.1", "alice:1", Some("alice")), 443, "mqttwss");
    let d = decide(&fw, r.clone(), Some("alice-secret"), &NoSessions, 0);
    assert_eq!(reason(&d), "rule legacy-mqtt3-on-ws: MQTT 3 is not offered on websockets");
    r.protocol = Protocol::Mqtt5;
    assert!(matches!(decide(&fw, r, Some("alice-secret"), &NoSessions, 0), Decision::Accept(_)));
}

#[test]
fn peer_network_lists() {
    let fw = example_fw(FirewallConfig::default());
    let d = decide(&fw, req("8.8.8.8", "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, 0);
    assert_eq!(reason(&d), "network: peer address is not in network.allow");
    let d = decide(&fw, req("10.66.1.1", "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, 0);
    assert_eq!(reason(&d), "network: peer address is in network.deny");
    let d = decide(&fw, req("2001:db8::7", "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, 0);
    // IPv6 peer is allowed globally but alice's group restricts her to 10.0.0.0/8.
    assert_eq!(code(&d), Some(RefusalCode::NotAuthorized));
    assert!(reason(&d).starts_with("networks: user \"alice\""), "{}", reason(&d));
    let d = decide(&fw, req("::ffff:10.0.0.9", "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, 0);
    assert!(matches!(d, Decision::Accept(_)), "IPv4-mapped IPv6 counts as IPv4: {d:?}");
}

#[test]
fn client_id_constraints() {
    let fw = example_fw(FirewallConfig::default());
    let check = |cid: &str, user: &str, pw: &str| decide(&fw, req("10.0.0.5", cid, Some(user)), Some(pw), &NoSessions, 0);
    let long = format!("alice{}", "x".repeat(60));
    let d = check(&long, "alice", "alice-secret");
    assert_eq!(code(&d), Some(RefusalCode::ClientIdentifierNotValid));
    assert_eq!(reason(&d), "client_id: longer than 64 bytes");
    assert_eq!(reason(&check("alice 1", "alice", "alice-secret")), "client_id: contains characters outside client_id.allowed_chars");
    assert_eq!(reason(&check("-alice", "alice", "alice-secret")), "client_id: does not match client_id.pattern");
    assert_eq!(reason(&check("bob:1", "alice", "alice-secret")), "client_id: does not match \"{username}:*\" for this username");
    // The separator binds: "alice" cannot use "alice-2:1" (it is not hers).
    assert_eq!(code(&check("alice-2:1", "alice", "alice-secret")), Some(RefusalCode::ClientIdentifierNotValid));
    // reserved prefix: alice (group operators) may, others may not.
    assert!(matches!(check("svc-alice", "alice", "alice-secret"), Decision::Refuse(_)), "svc-alice does not start with alice");
    let fw2 = Firewall::new(FirewallConfig::default());
    fw2.install(
        policy(
            "[client_id]\nmust_start_with_username = true\n[[client_id.reserved]]\nprefix = \"svc-\"\nusers = [\"svc-a\"]\ngroups = [\"ops\"]\n[groups.ops]\n[users.\"svc-b\"]\ngroups = [\"ops\"]\n",
        ),
        PasswordFile::parse(
            &format!("svc-a:{}\nsvc-c:{}\nsvc-b:{}\n", hash6(b"p", b"s1"), hash6(b"p", b"s2"), hash6(b"p", b"s3")),
            "pw",
        ),
    );
    let d = |cid: &str, u: &str| decide(&fw2, req("10.0.0.5", cid, Some(u)), Some("p"), &NoSessions, 0);
    assert!(matches!(d("svc-a-1", "svc-a"), Decision::Accept(_)));
    assert!(matches!(d("svc-b-1", "svc-b"), Decision::Accept(_)), "group member");
    assert_eq!(reason(&d("svc-c-1", "svc-c")), "client_id: prefix \"svc-\" is reserved");
    assert_eq!(reason(&d("x-svc-a", "svc-a")), "client_id: must start with the username");
}

#[test]
fn username_constraints() {
    let fw = example_fw(FirewallConfig::default());
    let d = decide(&fw, req("10.0.0.5", "root:1", Some("root")), Some("x"), &NoSessions, 0);
    assert_eq!(reason(&d), "username: this username is not allowed");
    let d = decide(&fw, req("10.0.0.5", "Alice:1", Some("Alice")), Some("x"), &NoSessions, 0);
    assert_eq!(reason(&d), "username: does not match username.pattern");
    let u = "a".repeat(33);
    let d = decide(&fw, req("10.0.0.5", &u, Some(&u)), Some("x"), &NoSessions, 0);
    assert_eq!(reason(&d), "username: longer than 32 bytes");
}

/// A refusal names a listener only when listener entries decided it: a
/// real 2.1 node (no listener data) and a policy without entries got "on
/// this listener" from the global setting.
#[test]
fn anonymous_refusal_names_a_listener_only_when_one_decided() {
    let fw = Firewall::new(FirewallConfig::default());
    fw.install(policy("[anonymous]\nallow = false\n"), PasswordFile::default());
    let global = "anonymous: clients without a username are not allowed";
    assert_eq!(reason(&decide(&fw, req("10.0.0.5", "g", None), None, &NoSessions, 0)), global);
    let mut bare = req("10.0.0.5", "g", None);
    bare.listener = None;
    assert_eq!(reason(&decide(&fw, bare, None, &NoSessions, 0)), global);
}

#[test]
fn anonymous_only_on_websocket_listener() {
    let fw = example_fw(FirewallConfig::default());
    let d = decide(&fw, on(req("10.0.0.5", "guest1", None), 8080, "ws"), None, &NoSessions, 0);
    let m = mods(d);
    assert_eq!(m.subscriber_id, Some(SubscriberKey::new(&b"guests"[..], &b"guest1"[..])));
    assert_eq!(m.max_offline_messages, Some(0));
    let d = decide(&fw, req("10.0.0.5", "guest1", None), None, &NoSessions, 0);
    assert_eq!(reason(&d), "anonymous: clients without a username are not allowed on this listener");
    // 5-arity hook: no listener metadata, the listener entry cannot match.
    let mut r = req("10.0.0.5", "guest1", None);
    r.listener = None;
    assert_eq!(code(&decide(&fw, r, None, &NoSessions, 0)), Some(RefusalCode::NotAuthorized));

    // Global switch from the app env when the policy does not say.
    let fw = Firewall::new(FirewallConfig { allow_anonymous: true, ..Default::default() });
    fw.install(policy("[network]\nallow = [\"10.0.0.0/8\"]\n"), PasswordFile::default());
    assert_eq!(decide(&fw, req("10.0.0.5", "g", None), None, &NoSessions, 0), Decision::Accept(Mods::default()));
}

// -- certificates ----------------------------------------------------------------

fn cert_der(cn: &str, sans: &[&str]) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn certificate_identity_per_listener() {
    let fw = example_fw(FirewallConfig::default());
    let tls_cid = |cid: &str, user: Option<&str>, cert: Option<Vec<u8>>| {
        let mut r = on(req("10.0.0.5", cid, user), 8883, "ssl");
        r.client_cert = cert.map(Into::into);
        r
    };
    let tls = |user: Option<&str>, cert: Option<Vec<u8>>| tls_cid("sensor-7:a", user, cert);
    // CN names a [users] entry; its settings apply, the username is set from the cert.
    let d = decide(&fw, tls(None, Some(cert_der("sensor-7", &[]))), None, &NoSessions, 0);
    let m = mods(d);
    assert_eq!(m.username.as_deref(), Some(&b"sensor-7"[..]));
    assert_eq!(m.subscriber_id.unwrap().mountpoint.as_ref(), b"devices");
    // Same username sent: no rename needed.
    let m = mods(decide(&fw, tls(Some("sensor-7"), Some(cert_der("sensor-7", &[]))), None, &NoSessions, 0));
    assert_eq!(m.username, None);
    // Different username sent.
    let d = decide(&fw, tls(Some("alice"), Some(cert_der("sensor-7", &[]))), None, &NoSessions, 0);
    // The refusal names the certificate's identity: a client that sent no
    // username is otherwise nameless in the audit line.
    assert_eq!(reason(&d), "cert_identity: username does not match the client certificate's identity \"sensor-7\"");
    // Certificate required on this listener.
    let d = decide(&fw, tls(Some("sensor-7"), None), None, &NoSessions, 0);
    assert_eq!(reason(&d), "cert_identity: a client certificate is required on this listener");
    // The client id is bound to the certificate identity ({username}:* in the example).
    let d = decide(&fw, tls_cid("other-1", None, Some(cert_der("sensor-7", &[]))), None, &NoSessions, 0);
    assert_eq!(code(&d), Some(RefusalCode::ClientIdentifierNotValid));
    // Garbage.
    let d = decide(&fw, tls(None, Some(vec![1, 2, 3])), None, &NoSessions, 0);
    assert_eq!(reason(&d), "cert_identity: client certificate is not valid DER X.509");
    // Unknown identity gets the entry's group settings (require_known = false).
    let m = mods(decide(&fw, tls_cid("sensor-99:a", None, Some(cert_der("sensor-99", &[]))), None, &NoSessions, 0));
    assert_eq!(m.max_inflight_messages, Some(10));
    // Not the certificate listener: a cert is ignored, normal credentials apply.
    let mut r = req("10.0.0.5", "alice:1", Some("alice"));
    r.client_cert = Some(cert_der("sensor-7", &[]).into());
    assert!(matches!(decide(&fw, r, Some("alice-secret"), &NoSessions, 0), Decision::Accept(_)));
}

#[test]
fn certificate_identity_from_san_and_require_known() {
    let fw = Firewall::new(FirewallConfig::default());
    fw.install(
        policy("[[cert_identity]]\nfrom = \"san_dns\"\nrequire_known = true\n[users.\"dev1.example.com\"]\nmax_sessions = 1\n"),
        PasswordFile::default(),
    );
    let mut r = req("10.0.0.5", "c", None);
    r.client_cert = Some(cert_der("ignored", &["dev1.example.com"]).into());
    let m = mods(decide(&fw, r.clone(), None, &NoSessions, 0));
    assert_eq!(m.username.as_deref(), Some(&b"dev1.example.com"[..]));
    let busy = Sessions(HashMap::from([(b"dev1.example.com".to_vec(), 1)]), None);
    assert_eq!(code(&decide(&fw, r.clone(), None, &busy, 0)), Some(RefusalCode::QuotaExceeded));
    r.client_cert = Some(cert_der("x", &["dev2.example.com"]).into());
    assert_eq!(
        reason(&decide(&fw, r.clone(), None, &NoSessions, 0)),
        "cert_identity: certificate identity \"dev2.example.com\" is not a known user"
    );
    // a long one is cut as every name in a reason
    r.client_cert = Some(cert_der("x", &[&format!("{}.example.com", "d".repeat(300))]).into());
    assert!(reason(&decide(&fw, r.clone(), None, &NoSessions, 0)).ends_with("ddd...\" is not a known user"));
    r.client_cert = Some(cert_der("x", &[]).into());
    assert_eq!(reason(&decide(&fw, r.clone(), None, &NoSessions, 0)), "cert_identity: client certificate has no subjectAltName");
    assert_eq!(cert_identity_name(&cert_der("cn-here", &[]), CertField::Cn).unwrap(), b"cn-here");
}

// -- sessions and modifiers shapes ---------------------------------------------

#[test]
fn max_sessions_counts_live_sessions() {
    let fw = example_fw(FirewallConfig::default());
    let r = req("10.0.0.5", "alice:1", Some("alice"));
    let two = Sessions(HashMap::from([(b"alice".to_vec(), 2)]), None);
    assert!(matches!(decide(&fw, r.clone(), Some("alice-secret"), &two, 0), Decision::Accept(_)));
    let three = Sessions(HashMap::from([(b"alice".to_vec(), 3)]), None);
    let d = decide(&fw, r.clone(), Some("alice-secret"), &three, 0);
    assert_eq!(code(&d), Some(RefusalCode::QuotaExceeded));
    assert_eq!(reason(&d), "max_sessions: user \"alice\" already has 3 of 3 sessions");
    // The same client id reconnecting takes its own session over. Alice's
    // sessions live under her mountpoint ("devices"), where the registry
    // records them; the same client id in another mountpoint is another session.
    let registered = SubscriberKey::new(&b"devices"[..], &b"alice:1"[..]);
    let takeover = Sessions(HashMap::from([(b"alice".to_vec(), 3)]), Some(registered));
    assert!(matches!(decide(&fw, r.clone(), Some("alice-secret"), &takeover, 0), Decision::Accept(_)));
    let elsewhere = Sessions(HashMap::from([(b"alice".to_vec(), 3)]), Some(r.key.clone()));
    assert_eq!(code(&decide(&fw, r, Some("alice-secret"), &elsewhere, 0)), Some(RefusalCode::QuotaExceeded));
}

/// VerneMQ puts the answer's max_packet_size in place of the size the
/// client sent in its CONNECT, even a larger one: the answer never goes
/// above the client's own.
#[test]
fn max_packet_size_never_above_the_clients() {
    let fw = example_fw(FirewallConfig::default());
    let size = |client_id: &str, user: &str, pw: &str, sent: Option<u32>| {
        let mut r = req("10.0.0.5", client_id, Some(user));
        r.protocol = Protocol::Mqtt5;
        r.client_max_packet_size = sent;
        mods(decide(&fw, r, Some(pw), &NoSessions, 0)).max_packet_size
    };
    let alice = |sent| size("alice:1", "alice", "alice-secret", sent);
    assert_eq!(alice(Some(4096)), Some(4096));
    assert_eq!(alice(Some(8 << 20)), Some(1_048_576));
    assert_eq!(alice(Some(1_048_576)), Some(1_048_576));
    assert_eq!(alice(None), Some(1_048_576));
    assert_eq!(size("backend:1", "backend", "backend-pw", Some(4096)), None);
}

/// The same for session_expiry_interval: a client asking for none (0)
/// would otherwise keep a session for the policy's time after a
/// DISCONNECT. Without the client's value (no CONNECT properties, as
/// MQTT 3) the policy's is answered.
#[test]
fn session_expiry_never_above_the_clients() {
    let fw = example_fw(FirewallConfig::default());
    let expiry = |asked: Option<u32>| {
        let mut r = req("10.0.0.5", "alice:1", Some("alice"));
        r.protocol = Protocol::Mqtt5;
        r.client_session_expiry = asked;
        mods(decide(&fw, r, Some("alice-secret"), &NoSessions, 0)).session_expiry_interval
    };
    assert_eq!(expiry(Some(0)), Some(0));
    assert_eq!(expiry(Some(10)), Some(10));
    assert_eq!(expiry(Some(86_400)), Some(3600));
    assert_eq!(expiry(Some(u32::MAX)), Some(3600));
    assert_eq!(expiry(None), Some(3600));
}

#[test]
fn modifiers_in_mqtt3_and_mqtt5_shape() {
    let fw = example_fw(FirewallConfig::default());
    let mut r = req("10.0.0.5", "alice:1", Some("alice"));
    let m3 = mods(decide(&fw, r.clone(), Some("alice-secret"), &NoSessions, 0)).entries(Protocol::Mqtt3);
    r.protocol = Protocol::Mqtt5;
    let m5 = mods(decide(&fw, r, Some("alice-secret"), &NoSessions, 0)).entries(Protocol::Mqtt5);
    assert!(m3.contains(&("clean_session", ModValue::Bool(false))));
    assert!(m5.contains(&("clean_start", ModValue::Bool(false))));
    assert!(!m3.iter().any(|(k, _)| *k == "session_expiry_interval"));
    assert!(m5.contains(&("session_expiry_interval", ModValue::Int(3600))));
    assert!(m5.contains(&("topic_alias_max", ModValue::Int(16))));
    // VerneMQ's MQTT 5 session has no max_inflight_messages and no
    // retry_interval: the first becomes the client's receive maximum
    // (fc_receive_max_client), the second is MQTT 3 only.
    assert!(m3.contains(&("max_inflight_messages", ModValue::Int(10))));
    // Seconds in the policy, as in vernemq.conf; VerneMQ's session takes
    // the answer's value in milliseconds.
    assert!(m3.contains(&("retry_interval", ModValue::Int(20_000))));
    assert!(m5.contains(&("fc_receive_max_client", ModValue::Int(10))));
    assert!(!m5.iter().any(|(k, _)| *k == "max_inflight_messages" || *k == "retry_interval"));
    assert!(!m3.iter().any(|(k, _)| *k == "fc_receive_max_client"));
    assert_eq!(m3.len() + 3 - 1, m5.len());
}

#[test]
fn no_inflight_limit_gives_mqtt5_no_receive_maximum() {
    // 0 is "no limit" to VerneMQ's MQTT 3 session; a receive maximum of 0
    // would stop every QoS 1/2 delivery, so MQTT 5 gets no key.
    let m = Modifiers { max_inflight_messages: Some(0), ..Modifiers::default() };
    assert_eq!(m.entries(Protocol::Mqtt3), [("max_inflight_messages", ModValue::Int(0))]);
    assert!(m.entries(Protocol::Mqtt5).is_empty());
    let m = Modifiers { max_inflight_messages: Some(65_535), ..Modifiers::default() };
    assert_eq!(m.entries(Protocol::Mqtt5), [("fc_receive_max_client", ModValue::Int(65_535))]);
}

// -- limits through the engine ----------------------------------------------------

#[test]
fn connection_rate_per_peer_and_user() {
    let cfg = FirewallConfig { rate_per_peer: 1.0, burst_per_peer: 2, rate_per_user: 0.5, burst_per_user: 3, ..Default::default() };
    let fw = example_fw(cfg);
    let go = |peer: &str, now| decide(&fw, req(peer, "alice:1", Some("alice")), Some("alice-secret"), &NoSessions, now);
    assert!(matches!(go("10.0.0.1", 0), Decision::Accept(_)));
    assert!(matches!(go("10.0.0.1", 0), Decision::Accept(_)));
    let d = go("10.0.0.1", 0);
    assert_eq!(code(&d), Some(RefusalCode::ConnectionRateExceeded));
    assert_eq!(reason(&d), "rate_limit: too many connects from this address");
    assert!(matches!(go("10.0.0.1", 1000), Decision::Accept(_)), "refilled after 1 s");
    // user bucket (burst 3) is now empty, whatever the address
    let d = go("10.0.0.2", 1000);
    assert_eq!(reason(&d), "rate_limit: too many connects for this user");
    assert!(matches!(go("10.0.0.2", 3000), Decision::Accept(_)));
}

#[test]
fn failed_logins_ban_peer_and_user_then_expire() {
    let cfg = FirewallConfig { ban_threshold: 3, ban_users: true, ban_window_ms: 10_000, ban_duration_ms: 60_000, ..Default::default() };
    let fw = example_fw(cfg);
    let go = |peer: &str, pw: &str, now| decide(&fw, req(peer, "alice:1", Some("alice")), Some(pw), &NoSessions, now);
    for t in 0..3 {
        assert_eq!(code(&go("10.0.0.1", "bad", t)), Some(RefusalCode::BadUsernameOrPassword));
    }
    let d = go("10.0.0.1", "alice-secret", 10);
    assert_eq!(code(&d), Some(RefusalCode::Banned));
    assert!(reason(&d).starts_with("ban: peer address banned"), "{}", reason(&d));
    let d = go("10.0.0.2", "alice-secret", 10);
    assert!(reason(&d).starts_with("ban: username banned"), "{}", reason(&d));
    let bans = fw.bans(10);
    assert_eq!(bans.len(), 2);
    assert!(bans.iter().any(|b| b.target == BanTarget::Peer("10.0.0.1/32".parse().unwrap()) && b.until == 60_002));
    assert!(bans.iter().any(|b| b.target == BanTarget::Username(b"alice".to_vec())));
    assert_eq!(fw.stats().bans_active, 2);
    assert_eq!(fw.stats().bans_started, 2);
    // expiry
    assert!(matches!(go("10.0.0.1", "alice-secret", 60_002), Decision::Accept(_)));
    assert!(fw.bans(60_002).is_empty());
    // operator clears
    for t in 0..3 {
        go("10.0.0.3", "bad", 70_000 + t);
    }
    assert_eq!(fw.bans(70_010).len(), 2);
    assert_eq!(fw.clear_bans(BanSelector::Peer("10.0.0.3".parse().unwrap())), 1);
    assert_eq!(fw.clear_bans(BanSelector::Username(b"alice".to_vec())), 1);
    assert!(matches!(go("10.0.0.3", "alice-secret", 70_010), Decision::Accept(_)));
    for t in 0..3 {
        go("10.0.0.4", "bad", 80_000 + t);
    }
    assert_eq!(fw.clear_bans(BanSelector::All), 2);
}

/// A login's outcome counts toward its name's ban by the `ban_users` its
/// screening read: a reconfiguration between the two steps of one login
/// (a slow hash can take that long) applies from the next login on.
#[test]
fn a_login_counts_toward_bans_by_the_settings_its_screening_read() {
    let base = FirewallConfig { ban_threshold: 1, ban_window_ms: 10_000, ban_duration_ms: 60_000, ..Default::default() };
    let fw = example_fw(FirewallConfig { ban_users: false, ..base });
    let attempt = |peer: &str, now| match fw.begin(req(peer, "alice:1", Some("alice")), &NoSessions, now) {
        Step::NeedPassword(p) => p,
        Step::Done(d, _) => panic!("decided before the password: {d:?}"),
    };
    let p = attempt("10.0.0.1", 0);
    fw.reconfigure(FirewallConfig { ban_users: true, ..base });
    assert!(matches!(fw.with_password(&p, Some(b"bad"), &NoSessions, 1), PasswordStep::Done(Decision::Refuse(_))));
    let banned = |target: &BanTarget| fw.bans(2).iter().any(|b| &b.target == target);
    assert!(banned(&BanTarget::Peer("10.0.0.1/32".parse().unwrap())), "the peer's ban counts as before");
    assert!(!banned(&BanTarget::Username(b"alice".to_vec())), "ban_users was off when this login was screened");
    // The next login is screened with ban_users on.
    let p = attempt("10.0.0.2", 3);
    assert!(matches!(fw.with_password(&p, Some(b"bad"), &NoSessions, 4), PasswordStep::Done(Decision::Refuse(_))));
    assert!(fw.bans(5).iter().any(|b| b.target == BanTarget::Username(b"alice".to_vec())));
}

#[test]
fn cached_failures_still_count_toward_bans() {
    let cfg = FirewallConfig { ban_threshold: 2, ..Default::default() };
    let fw = example_fw(cfg);
    // alice's `$6$` hash stands in for a slow one (a `$6$` one is never cached)
    fw.force_slow.store(true, Ordering::Relaxed);
    let go = |now| decide(&fw, req("10.0.0.1", "alice:1", Some("alice")), Some("bad"), &NoSessions, now);
    go(0);
    go(1); // answered from the failure cache
    assert_eq!(fw.stats().cache_hits, 1);
    assert_eq!(code(&go(2)), Some(RefusalCode::Banned));
}

#[test]
fn limiter_and_ban_tables_stay_bounded() {
    let cfg = FirewallConfig { rate_per_peer: 1.0, ban_threshold: 5, max_tracked: 16, ..Default::default() };
    let fw = example_fw(cfg);
    for i in 0..2000u32 {
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        decide(&fw, req(&ip, "alice:1", Some("alice")), Some("bad"), &NoSessions, u64::from(i));
        let s = fw.stats();
        assert!(s.tracked_peers <= 32, "{s:?}"); // 16 buckets + 16 ban counters
        assert!(s.tracked_users <= 16, "{s:?}");
    }
    fw.reconfigure(FirewallConfig { max_tracked: 4, ..cfg });
    let s = fw.stats();
    assert!(s.tracked_peers <= 8 && s.tracked_users <= 4, "{s:?}");
}

// -- cache and slow path -----------------------------------------------------------

#[test]
fn cache_hit_returns_done_from_with_password() {
    let fw = example_fw(FirewallConfig::default());
    fw.force_slow.store(true, Ordering::Relaxed);
    let r = req("10.0.0.5", "alice:1", Some("alice"));
    let Step::NeedPassword(p) = fw.begin(r.clone(), &NoSessions, 0) else { panic!() };
    assert_eq!(fw.with_password(&p, Some(b"alice-secret"), &NoSessions, 0), PasswordStep::NeedSlowHash);
    assert!(matches!(fw.verify_slow(&p, Some(b"alice-secret"), &NoSessions, 0), Decision::Accept(_)));
    assert_eq!(fw.stats().slow_verifications, 1);
    // A reconnect storm of the same client is answered from the cache on the normal scheduler.
    for now in 1..100 {
        let Step::NeedPassword(p) = fw.begin(r.clone(), &NoSessions, now) else { panic!() };
        assert!(matches!(fw.with_password(&p, Some(b"alice-secret"), &NoSessions, now), PasswordStep::Done(Decision::Accept(_))));
    }
    let s = fw.stats();
    assert_eq!((s.slow_verifications, s.cache_hits, s.verify_count), (1, 99, 1));
    // Expired entry (ok ttl 60 s): slow again.
    let Step::NeedPassword(p) = fw.begin(r.clone(), &NoSessions, 70_000) else { panic!() };
    assert_eq!(fw.with_password(&p, Some(b"alice-secret"), &NoSessions, 70_000), PasswordStep::NeedSlowHash);
    // A different password is never a hit.
    assert_eq!(fw.with_password(&p, Some(b"other"), &NoSessions, 70_000), PasswordStep::NeedSlowHash);
}

#[test]
fn fast_hash_is_verified_in_with_password() {
    let fw = example_fw(FirewallConfig::default());
    let Step::NeedPassword(p) = fw.begin(req("10.0.0.5", "alice:1", Some("alice")), &NoSessions, 0) else { panic!() };
    assert!(matches!(fw.with_password(&p, Some(b"alice-secret"), &NoSessions, 0), PasswordStep::Done(Decision::Accept(_))));
    assert_eq!(fw.stats().verify_count, 1);
    assert_eq!(p.username(), b"alice");
    assert_eq!(p.request().key.client_id.as_ref(), b"alice:1");
}

/// A `$6$` hash costs less to check than the cache costs to ask: every
/// login verifies it, right or wrong, and the cache stays empty.
#[test]
fn a_sha512_hash_is_verified_every_time_and_never_cached() {
    let fw = example_fw(FirewallConfig::default());
    for (now, pw) in [(0, "alice-secret"), (1, "alice-secret"), (2, "bad"), (3, "bad")] {
        let d = decide(&fw, req("10.0.0.5", "alice:1", Some("alice")), Some(pw), &NoSessions, now);
        assert_eq!(code(&d).is_none(), pw == "alice-secret", "{pw}: {d:?}");
    }
    let s = fw.stats();
    assert_eq!((s.verify_count, s.cache_hits, s.cache_misses), (4, 0, 0));
    assert_eq!(fw.running.load().cache.len(), 0);
}

/// The verification time sums what the checks took, not each check
/// rounded down to whole microseconds: a `$6$` check takes well under one.
#[test]
fn the_verification_time_adds_up_checks_shorter_than_a_microsecond() {
    let fw = example_fw(FirewallConfig::default());
    for _ in 0..2_000 {
        fw.count_verification(std::time::Duration::from_nanos(450));
    }
    let s = fw.stats();
    assert_eq!((s.verify_count, s.verify_micros_total), (2_000, 900));
}

/// A hash that costs more than the cache's lookup is cached even when it
/// runs on the normal scheduler (PBKDF2 of up to 1,000 iterations).
#[test]
fn a_fast_pbkdf2_hash_is_cached() {
    let line = crate::credentials::hash_password(crate::credentials::HashScheme::Pbkdf2 { iterations: 100 }, b"backend-pw").unwrap();
    let fw = Firewall::new(FirewallConfig::default());
    fw.install(policy(EXAMPLE), PasswordFile::parse(&format!("backend:{line}\n"), "passwd"));
    for now in 0..3 {
        let d = decide(&fw, req("192.168.1.9", "backend:1", Some("backend")), Some("backend-pw"), &NoSessions, now);
        assert!(code(&d).is_none(), "{d:?}");
    }
    let s = fw.stats();
    assert_eq!((s.slow_verifications, s.verify_count, s.cache_hits, s.cache_misses), (0, 1, 2, 1));
}

// -- snapshots and reloads ----------------------------------------------------------

fn temp_dir() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!("warden-fw-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn load_from_files_and_failed_reload_keeps_old_snapshot() {
    let dir = temp_dir();
    let pol = dir.join("policy.toml");
    let pw = dir.join("passwd");
    std::fs::write(&pol, EXAMPLE).unwrap();
    std::fs::write(&pw, format!("# users\n{BACKEND_LINE}broken line\n")).unwrap();
    // Owner-only, as a password file should be: otherwise its permissions are a warning too.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let fw = Firewall::new(FirewallConfig::default());
    let rep = fw.load(Some(&pol), Some(&pw), 1).unwrap();
    assert_eq!((rep.users, rep.groups, rep.rules, rep.passwords, rep.generation), (3, 3, 4, 1, 1));
    assert_eq!(rep.warnings.len(), 1);
    assert!(rep.warnings[0].contains("passwd:3:"), "{:?}", rep.warnings);

    let good = |fw: &Firewall| decide(fw, req("10.0.0.5", "backend:1", Some("backend")), Some("backend-pw"), &NoSessions, 0);
    assert!(matches!(good(&fw), Decision::Accept(_)));

    std::fs::write(&pol, "[network]\nallow = [\"10.0.0.0/8\"]\n\n[users.x]\nnetworks = [\"300.1.1.1/8\"]\n").unwrap();
    let e = fw.load(Some(&pol), Some(&pw), 1).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("policy.toml:5: users.x.networks: not an IP network"), "{msg}");
    assert_eq!(fw.generation(), 1);
    assert!(matches!(good(&fw), Decision::Accept(_)));

    std::fs::write(&pol, EXAMPLE).unwrap();
    let e = fw.load(Some(&pol), Some(&dir.join("missing")), 1).unwrap_err();
    assert!(matches!(e, LoadError::Passwords(_)), "{e}");
    assert!(e.to_string().contains("missing"));
    assert_eq!(fw.generation(), 1);
    let s = fw.stats();
    assert_eq!((s.reloads_ok, s.reloads_failed), (1, 2));

    // No files at all: back to "knows nothing".
    fw.load(None, None, 1).unwrap();
    assert_eq!(good(&fw), Decision::Next);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pending_auth_finishes_with_the_snapshot_it_started_with() {
    let fw = Firewall::new(FirewallConfig::default());
    let v1 = format!("[users.dave]\npassword = \"{}\"\nmax_sessions = 1\n", hash6(b"old", b"salt1"));
    let v2 = format!("[users.dave]\npassword = \"{}\"\n[users.dave.modifiers]\nmax_message_size = 5\n", hash6(b"new", b"salt2"));
    fw.install(policy(&v1), PasswordFile::default());
    let r = req("10.0.0.5", "d1", Some("dave"));
    let Step::NeedPassword(p) = fw.begin(r.clone(), &NoSessions, 0) else { panic!() };
    fw.install(policy(&v2), PasswordFile::default());
    assert_eq!((p.generation(), fw.generation()), (1, 2));
    // Old password, old settings (max_sessions = 1 of the old policy applies).
    let one = Sessions(HashMap::from([(b"dave".to_vec(), 1)]), None);
    assert!(matches!(fw.with_password(&p, Some(b"old"), &NoSessions, 0), PasswordStep::Done(Decision::Accept(ref m)) if m.is_empty()));
    assert!(matches!(fw.with_password(&p, Some(b"old"), &one, 0), PasswordStep::Done(Decision::Refuse(_))));
    // New connects see the new policy.
    assert_eq!(code(&decide(&fw, r.clone(), Some("old"), &NoSessions, 0)), Some(RefusalCode::BadUsernameOrPassword));
    assert_eq!(mods(decide(&fw, r, Some("new"), &one, 0)).max_message_size, Some(5));
}

#[test]
fn default_decision_when_nothing_knows_the_client() {
    for (dd, expect) in [
        (DefaultDecision::Next, Decision::Next),
        (DefaultDecision::Allow, Decision::Accept(Mods::default())),
    ] {
        let fw = Firewall::new(FirewallConfig { default_decision: dd, ..Default::default() });
        assert_eq!(decide(&fw, req("1.2.3.4", "c", Some("u")), Some("p"), &NoSessions, 0), expect);
        assert_eq!(decide(&fw, req("1.2.3.4", "c", None), None, &NoSessions, 0), expect);
    }
    let fw = Firewall::new(FirewallConfig { default_decision: DefaultDecision::Deny, ..Default::default() });
    assert_eq!(code(&decide(&fw, req("1.2.3.4", "c", Some("u")), Some("p"), &NoSessions, 0)), Some(RefusalCode::NotAuthorized));
    // A policy with screening rules but no users: a named client nobody knows -> default too.
    let fw = Firewall::new(FirewallConfig { default_decision: DefaultDecision::Allow, ..Default::default() });
    fw.install(policy("[[rule]]\nname = \"lan\"\naction = \"allow\"\nwhen = { peer = [\"10.0.0.0/8\"] }\n"), PasswordFile::default());
    assert!(matches!(decide(&fw, req("1.2.3.4", "c", Some("u")), Some("p"), &NoSessions, 0), Decision::Accept(_)));
}

// -- audit log -----------------------------------------------------------------------


// -- under attack (issue: no enumeration, no lockout, identity rules bind) -----

mod hostile;

use crate::testing::one_inside_the_other;

/// Two reconfigurations at once (the reloader and a start's own apply):
/// the second must not run between the first's new settings and its
/// tables, or the settings say one thing and the limiters and cache do
/// another until the next reconfiguration.
#[test]
fn concurrent_reconfigurations_leave_settings_and_tables_agreeing() {
    let base = FirewallConfig::default();
    let fw = Arc::new(Firewall::new(base));
    let limited = FirewallConfig { rate_per_peer: 5.0, burst_per_peer: 1, cache_size: base.cache_size + 7, ..base };
    let open = FirewallConfig { rate_per_peer: 0.0, cache_size: base.cache_size + 11, ..base };
    one_inside_the_other(&fw, |fw| &fw.midway, move |fw| fw.reconfigure(limited), move |fw| fw.reconfigure(open));
    // The second call came last: its settings, and tables that follow them.
    assert_eq!(fw.config(), open);
    assert!(!fw.peer_rate.enabled(), "the settings say no peer rate, the limiter limits");
    assert_eq!(fw.running.load().cache.capacity(), AuthCache::new(open.cache_size, open.cache_ok_ttl_ms, open.cache_fail_ttl_ms).capacity());
}

/// Two loads at once, the file edited in between: the policy left running
/// is the one the last load read, not an older one swapped in after it.
#[test]
fn concurrent_loads_leave_the_last_read_policy_running() {
    let dir = std::env::temp_dir().join(format!("warden-loads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, "[users.alice]\n").unwrap();
    let fw = Arc::new(Firewall::new(FirewallConfig::default()));
    let (p1, p2, edit) = (path.clone(), path.clone(), path.clone());
    one_inside_the_other(
        &fw,
        |fw| &fw.midway,
        move |fw| {
            fw.load(Some(&p1), None, 0).unwrap();
        },
        move |fw| {
            std::fs::write(&edit, "[users.bob]\n").unwrap();
            fw.load(Some(&p2), None, 0).unwrap();
        },
    );
    let running = fw.running.load().snap.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(running.policy.user(b"bob").is_some() && running.policy.user(b"alice").is_none(), "an older read of the file is running");
    assert_eq!(running.generation, 2);
}
