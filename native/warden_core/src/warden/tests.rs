//! The facade end to end: every hook as the NIF calls it, with the
//! example policy of docs/.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::*;
use crate::credentials::PasswordFile;
use crate::firewall::{Listener, RefusalCode};
use crate::obfuscation::{Cipher, KdfHash};
use crate::policy::Policy;
use crate::registry::SessionState;
use crate::types::{Key, Peer, SubscriberKey};

const EXAMPLE: &str = include_str!("../../../../docs/policy.example.toml");
const CONN: ProcId = ProcId(1);
const QUEUE: ProcId = ProcId(2);
const T0: Millis = 1_700_000_000_000;

fn warden() -> Warden {
    let w = Warden::default();
    w.install(Policy::parse(EXAMPLE, "policy.toml").unwrap(), PasswordFile::parse("", "passwd"));
    w
}

fn request(client_id: &str, user: Option<&str>) -> AuthRequest<'static> {
    AuthRequest {
        key: SubscriberKey::new(&b""[..], client_id.as_bytes()),
        peer: Some(Peer { ip: "10.1.2.3".parse::<IpAddr>().unwrap(), port: 40000 }),
        username: user.map(|u| u.as_bytes().to_vec().into()),
        has_password: user.is_some(),
        clean_session: false,
        protocol: Protocol::Mqtt5,
        listener: Some(Listener { port: Some(1883), kind: Some("tcp".into()), addr: None }),
        client_cert: None,
        client_max_packet_size: None,
        client_session_expiry: None,
    }
}

/// auth_on_register with a clear password: one call.
fn login(w: &Warden, client_id: &str, user: &str, password: &[u8], conn: ProcId) -> AuthStep {
    w.auth_begin(request(&format!("{user}:{client_id}"), Some(user)), conn, Password::Clear(password), T0).unwrap()
}

/// A login left waiting for the broker's library to decrypt its password
/// (no obfuscation settings here): its token.
fn waiting_for_plaintext(w: &Warden, client_id: &str, conn: ProcId) -> u64 {
    match w.auth_begin(request(client_id, Some("alice")), conn, Password::Encrypted(ENCRYPTED), T0).unwrap() {
        AuthStep::NeedPlaintext(token) => token,
        other => panic!("{other:?}"),
    }
}

fn refusal(step: &AuthStep) -> Option<RefusalCode> {
    match step {
        AuthStep::Decided(Decision::Refuse(r), _) => Some(r.code),
        _ => None,
    }
}

fn accepted(step: &AuthStep) -> bool {
    matches!(step, AuthStep::Decided(Decision::Accept(_), Protocol::Mqtt5))
}

/// alice's client id `alice:<id>`, under the devices group's mountpoint.
fn devices_key(id: &str) -> SubscriberKey {
    SubscriberKey::new(&b"devices"[..], format!("alice:{id}").into_bytes())
}

fn register(w: &Warden, key: &SubscriberKey, conn: ProcId, queue: ProcId, user: &str) {
    let info = ConnectInfo { peer: None, username: Some(user.as_bytes()), clean_session: false, protocol: Protocol::Mqtt5 };
    assert_eq!(w.registered(key.into(), conn, info, T0 + 1), Applied::Applied);
    assert_eq!(w.queue_event(QueueEvent::Wakeup, key.into(), queue, T0 + 2), Applied::Applied);
}

#[test]
fn an_accepted_login_is_kept_under_the_subscriber_id_it_registers_with() {
    let w = warden();
    assert!(accepted(&login(&w, "c1", "alice", b"alice-secret", CONN)));
    // The devices group rewrites the mountpoint: the pending connect is
    // under the rewritten id, not the requested one.
    assert_eq!(w.registry.lookup(&devices_key("c1")).map(|s| s.state), Some(SessionState::Authenticated));
    assert!(w.registry.lookup(&SubscriberKey::new(&b""[..], &b"alice:c1"[..])).is_none());
    register(&w, &devices_key("c1"), CONN, QUEUE, "alice");
    assert_eq!(w.registry.lookup(&devices_key("c1")).map(|s| s.state), Some(SessionState::Online));
    assert_eq!(w.queue_event(QueueEvent::Gone, (&devices_key("c1")).into(), QUEUE, T0 + 3), Applied::Applied);
    assert_eq!(w.queue_event(QueueEvent::Gone, (&devices_key("c1")).into(), QUEUE, T0 + 4), Applied::Unknown);
    let calls = w.counters().hook_calls;
    let of = |h: Hook| calls.iter().find(|(k, _)| *k == h).map(|(_, n)| *n);
    assert_eq!(
        [of(Hook::AuthOnRegister), of(Hook::OnRegister), of(Hook::OnClientWakeup), of(Hook::OnClientGone), of(Hook::OnClientOffline)],
        [Some(1), Some(1), Some(1), Some(2), Some(0)]
    );
    assert_eq!(w.counters().auth_in_flight, 0);
    let stats = w.stats();
    assert_eq!(stats.get(&["events", "on_client_gone"]), Some(2));
    assert_eq!(stats.get(&["registry", "duplicate_events"]), Some(0));
    assert_eq!(stats.get(&["registry", "unknown_events"]), Some(1));
    assert_eq!(stats.get(&["registry", "online"]), Some(0));
    assert_eq!(stats.get(&["registry"]), None);
}

#[test]
fn a_refused_login_leaves_nothing_behind() {
    let w = warden();
    assert_eq!(refusal(&login(&w, "c1", "alice", b"wrong", CONN)), Some(RefusalCode::BadUsernameOrPassword));
    assert!(w.registry.lookup(&devices_key("c1")).is_none());
    assert_eq!(w.stats().get(&["decisions", "refused", "bad_username_or_password"]), Some(1));
    assert_eq!(w.counters().auth_in_flight, 0);
}

#[test]
fn an_auth_context_belongs_to_its_process_and_is_used_once() {
    let w = warden();
    let token = waiting_for_plaintext(&w, "alice:c1", CONN);
    assert_eq!(w.auth_password(token, ProcId(99), Password::Clear(b"alice-secret"), T0), Err(WardenError::UnknownAuth));
    assert!(accepted(&w.auth_password(token, CONN, Password::Clear(b"alice-secret"), T0).unwrap()));
    assert_eq!(w.auth_password(token, CONN, Password::Clear(b"alice-secret"), T0), Err(WardenError::UnknownAuth));
    assert_eq!(w.auth_busy(token, CONN), Err(WardenError::UnknownAuth));
}

// Made with credentials_obfuscation 3.4.0 (see obfuscation.rs): "s3cret!".
const SECRET: &[u8] = b"vmq-node-secret-0123456789abcdef";
const ENCRYPTED: &[u8] = b"KIoUIOU7FtPqWa4UWfbz5ZD91B2UbRwwJA6D/E9PHgeodFdyWgha/Y2/s6lZS5K37r9gl81NFchvYjYcS53KgVsl4HgJjVEJAGDZaVRIv/o=";

/// The NIF's request borrows the broker's binaries, which live only for
/// the call: a login kept for its next step copies what it borrowed.
#[test]
fn a_kept_login_owns_what_its_request_borrowed() {
    let w = warden();
    let mut binaries = b"alice:c1alice".to_vec();
    let (client_id, user) = binaries.split_at(8);
    let req = AuthRequest { key: Key::borrowed(b"", client_id), username: Some(Cow::Borrowed(user)), ..request("", Some("")) };
    let token = match w.auth_begin(req, CONN, Password::Encrypted(ENCRYPTED), T0).unwrap() {
        AuthStep::NeedPlaintext(token) => token,
        other => panic!("{other:?}"),
    };
    binaries.fill(b'x');
    assert!(accepted(&w.auth_password(token, CONN, Password::Clear(b"alice-secret"), T0).unwrap()));
    let session = w.registry.lookup(&devices_key("c1")).unwrap();
    assert_eq!((session.state, session.username.as_deref()), (SessionState::Authenticated, Some(&b"alice"[..])));
}

#[test]
fn an_encrypted_password_is_decrypted_here_or_handed_back_for_the_library() {
    let w = warden();
    // No settings yet: the Erlang side must decrypt, and the context waits.
    let token = waiting_for_plaintext(&w, "alice:c1", CONN);
    assert_eq!(w.counters().auth_in_flight, 1);
    assert_eq!(refusal(&w.auth_password(token, CONN, Password::Clear(b"s3cret!"), T0).unwrap()), Some(RefusalCode::BadUsernameOrPassword));
    // With the node's settings it is decrypted here, in the one call
    // ("s3cret!" is not alice's password: the refusal proves it was read).
    w.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));
    let step = w.auth_begin(request("alice:c2", Some("alice")), CONN, Password::Encrypted(ENCRYPTED), T0).unwrap();
    assert_eq!(refusal(&step), Some(RefusalCode::BadUsernameOrPassword));
    assert_eq!(w.counters().auth_in_flight, 0);
}

/// The settings live with the policy, the configuration and the cache in
/// what a login reads at once: replacing any of those keeps them.
#[test]
fn the_obfuscation_settings_outlast_reloads_and_reconfigurations() {
    let w = warden();
    w.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));
    w.firewall.reconfigure(FirewallConfig { cache_size: 7, ..FirewallConfig::default() });
    w.install(Policy::parse(EXAMPLE, "policy.toml").unwrap(), PasswordFile::parse("", "passwd"));
    let step = w.auth_begin(request("alice:c1", Some("alice")), CONN, Password::Encrypted(ENCRYPTED), T0).unwrap();
    assert_eq!(refusal(&step), Some(RefusalCode::BadUsernameOrPassword), "decrypted here");
    // And they go as they came: the library decrypts again.
    w.set_obfuscation(None);
    waiting_for_plaintext(&w, "alice:c2", CONN);
}

#[test]
fn a_password_is_not_decrypted_when_a_rule_decides() {
    let w = warden();
    // Not decryptable here, but a bad client id decides first: no step waits.
    let step = w.auth_begin(request("not-alice", Some("alice")), CONN, Password::Encrypted(ENCRYPTED), T0).unwrap();
    assert_eq!(refusal(&step), Some(RefusalCode::ClientIdentifierNotValid));
    assert_eq!(w.counters().auth_in_flight, 0);
    // A password no client can send is an error only where it is needed.
    let step = w.auth_begin(request("not-alice", Some("alice")), CONN, Password::Unreadable, T0).unwrap();
    assert_eq!(refusal(&step), Some(RefusalCode::ClientIdentifierNotValid));
    assert_eq!(w.auth_begin(request("alice:c1", Some("alice")), CONN, Password::Unreadable, T0), Err(WardenError::BadPassword));
    assert_eq!(w.counters().auth_in_flight, 0);
}

#[test]
fn slow_hashes_wait_for_a_slot_and_give_up_as_server_busy() {
    let w = warden();
    w.firewall.force_slow.store(true, Ordering::Relaxed);
    assert_eq!(w.set_slow_slots(0), Err(WardenError::BadSlots));
    assert_eq!(w.set_slow_slots(MAX_SLOTS + 1), Err(WardenError::BadSlots));
    assert_eq!(w.set_slow_slots(1), Ok(1));
    let step = |client_id: &str, conn: ProcId| match login(&w, client_id, "alice", b"alice-secret", conn) {
        AuthStep::NeedSlowHash(t) => t,
        other => panic!("{other:?}"),
    };
    let (t1, t2) = (step("c1", ProcId(11)), step("c2", ProcId(12)));
    let held = w.slots.try_acquire().unwrap();
    assert_eq!(w.auth_password_slow(t1, ProcId(11), || T0), Ok(AuthStep::SlotsTaken));
    assert_eq!(w.auth_busy(t2, ProcId(12)), Ok(AuthStep::ServerBusy(Protocol::Mqtt5)));
    drop(held);
    assert!(accepted(&w.auth_password_slow(t1, ProcId(11), || T0).unwrap()));
    let info = w.slow_slots_info();
    assert_eq!((info.limit, info.running, info.peak, info.busy), (1, 0, 1, 1));
    assert_eq!(w.counters().server_busy, 1);
    assert_eq!(w.counters().auth_in_flight, 0);
    let stats = w.stats();
    assert_eq!(stats.get(&["server_busy"]), Some(1));
    assert_eq!(stats.get(&["decisions", "accepted"]), Some(1));
    assert_eq!(stats.get(&["events", "auth_on_register"]), Some(2));
}

#[test]
fn max_sessions_counts_the_registry_s_live_sessions() {
    let w = warden();
    for (i, cid) in ["a", "b", "c"].into_iter().enumerate() {
        let conn = ProcId(100 + i as u64);
        assert!(accepted(&login(&w, cid, "alice", b"alice-secret", conn)), "{cid}");
        register(&w, &devices_key(cid), conn, ProcId(200 + i as u64), "alice");
    }
    // alice's own max_sessions = 3
    assert_eq!(refusal(&login(&w, "d", "alice", b"alice-secret", ProcId(110))), Some(RefusalCode::QuotaExceeded));
    // a reconnect of one of them takes its own session over
    assert!(accepted(&login(&w, "a", "alice", b"alice-secret", ProcId(111))));
}

/// Until a policy sets max_sessions the hooks keep no per-user counts; the
/// first one that does counts the sessions already connected before it runs.
#[test]
fn a_policy_that_first_limits_sessions_counts_the_sessions_already_there() {
    let w = Warden::default();
    let unlimited = EXAMPLE.replace("max_sessions = ", "# max_sessions = ");
    w.install(Policy::parse(&unlimited, "policy.toml").unwrap(), PasswordFile::parse("", "passwd"));
    for (i, cid) in ["a", "b", "c"].into_iter().enumerate() {
        let conn = ProcId(100 + i as u64);
        assert!(accepted(&login(&w, cid, "alice", b"alice-secret", conn)), "{cid}");
        register(&w, &devices_key(cid), conn, ProcId(200 + i as u64), "alice");
    }
    assert_eq!(w.registry.live_sessions_of_user(b"alice"), 0, "not counted while nothing reads the counts");
    assert!(accepted(&login(&w, "d", "alice", b"alice-secret", ProcId(110))));
    w.install(Policy::parse(EXAMPLE, "policy.toml").unwrap(), PasswordFile::parse("", "passwd"));
    // alice's max_sessions = 3: her three online sessions and "d", accepted
    // but not yet registered, are counted
    assert_eq!(w.registry.live_sessions_of_user(b"alice"), 4);
    assert_eq!(refusal(&login(&w, "e", "alice", b"alice-secret", ProcId(111))), Some(RefusalCode::QuotaExceeded));
}

#[test]
fn settings_are_refused_whole_and_applied_at_once() {
    let w = warden();
    let int = SettingValue::Int;
    let atom = |s: &str| SettingValue::Atom(s.into());
    assert_eq!(Settings::parse([("history_size", int(5)), ("bogus", int(1))]), Err(WardenError::UnknownSetting("bogus".into())));
    assert_eq!(
        Settings::parse([("unknown_user", atom("maybe"))]),
        Err(WardenError::BadSetting { key: "unknown_user", expected: "next | deny" })
    );
    assert_eq!(
        Settings::parse([("burst_per_peer", int(1 << 40))]),
        Err(WardenError::BadSetting { key: "burst_per_peer", expected: "an integer below 2^32" })
    );
    assert!(matches!(Settings::parse([("rate_per_user", SettingValue::Float(-1.0))]), Err(WardenError::BadSetting { .. })));
    assert!(matches!(Settings::parse([("log_level", atom("loud"))]), Err(WardenError::BadSetting { .. })));
    let s = Settings::parse([
        ("allow_anonymous", SettingValue::Bool(true)),
        ("rate_per_peer", SettingValue::Float(2.5)),
        ("unknown_user", atom("deny")),
        ("log_level", atom("debug")),
    ])
    .unwrap();
    assert_eq!(s.log_level.as_deref(), Some("debug"));
    w.configure(&s);
    let cfg = w.firewall.config();
    assert!(cfg.allow_anonymous);
    assert_eq!(cfg.rate_per_peer, 2.5);
    assert_eq!(cfg.unknown_user, crate::firewall::UnknownUser::Deny);
    assert_eq!(cfg.burst_per_peer, FirewallConfig::default().burst_per_peer);
}

#[test]
fn sweep_drops_auth_contexts_whose_next_step_never_came() {
    let w = warden();
    let token = waiting_for_plaintext(&w, "alice:c1", CONN);
    assert_eq!(w.counters().auth_in_flight, 1);
    w.sweep(T0 + pending::TTL_MS - 1);
    assert_eq!(w.counters().auth_in_flight, 1);
    w.sweep(T0 + pending::TTL_MS);
    assert_eq!(w.counters().auth_in_flight, 0);
    assert_eq!(w.auth_password(token, CONN, Password::Clear(b"alice-secret"), T0), Err(WardenError::UnknownAuth));
}

#[test]
fn reset_forgets_sessions_and_logins_in_flight() {
    let w = warden();
    assert!(accepted(&login(&w, "c1", "alice", b"alice-secret", CONN)));
    let _ = waiting_for_plaintext(&w, "alice:c2", ProcId(7));
    w.reset();
    assert!(w.registry.is_empty());
    assert_eq!(w.counters().auth_in_flight, 0);
}

/// A plugin enabled again starts from a clean state: reset also forgets
/// the connection-rate buckets (a peer limited before is admitted again).
#[test]
fn reset_forgets_rate_limits() {
    let w = warden();
    w.firewall.reconfigure(FirewallConfig { rate_per_peer: 0.001, burst_per_peer: 1, ..FirewallConfig::default() });
    assert!(accepted(&login(&w, "c1", "alice", b"alice-secret", CONN)));
    assert_eq!(refusal(&login(&w, "c2", "alice", b"alice-secret", ProcId(3))), Some(RefusalCode::ConnectionRateExceeded));
    w.reset();
    assert!(accepted(&login(&w, "c3", "alice", b"alice-secret", ProcId(4))));
}

/// The defaults the core starts with are the ones docs/OPERATIONS.md's
/// settings table documents (the table is the one place they are written;
/// the schema suite checks the schema and the Erlang side against it).
#[test]
fn the_core_s_defaults_are_the_documented_ones() {
    let doc = include_str!("../../../../docs/OPERATIONS.md");
    let mut documented = Vec::new();
    for row in doc.lines().filter(|l| l.starts_with("| `vmq_warden.")) {
        // `\|` inside a cell is a literal bar, not a cell boundary
        let row = row.replace("\\|", "/");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (key, default) = (cells[2].trim_matches('`').to_string(), cells[4].to_string());
        let value = documented_value(&default);
        match Settings::parse([(key.as_str(), value.clone())]) {
            Err(WardenError::UnknownSetting(_)) => continue, // read by the Erlang side only
            Err(e) => panic!("{key}: documented default {default:?} is refused: {e}"),
            Ok(_) => documented.push((key, value)),
        }
    }
    assert!(documented.len() >= 17, "the table has the core's settings: {documented:?}");
    let parsed = Settings::parse(documented).unwrap();
    assert_eq!(parsed.firewall, FirewallConfig::default());
    let registry = RegistryConfig::default();
    assert_eq!(parsed.history_size, Some(registry.history_size));
    assert_eq!(parsed.pending_ttl_ms, Some(registry.pending_ttl_ms));
    assert_eq!(parsed.log_level.as_deref(), Some("info"));
}

/// `10000`, `` `60s` ``, `` `5s` (5000) ``, `` `off` (false) ``, `` `next` ``.
fn documented_value(cell: &str) -> SettingValue {
    let first = cell.split_whitespace().next().unwrap().trim_matches('`');
    let duration = |n: &str, unit: u64| SettingValue::Int(n.parse::<i64>().unwrap() * unit as i64);
    if let Ok(n) = first.parse::<i64>() {
        return SettingValue::Int(n);
    }
    match first {
        "on" => SettingValue::Bool(true),
        "off" => SettingValue::Bool(false),
        d if d.ends_with("ms") => duration(&d[..d.len() - 2], 1),
        d if d.ends_with('s') && d[..d.len() - 1].parse::<i64>().is_ok() => duration(&d[..d.len() - 1], 1000),
        d if d.ends_with('m') && d[..d.len() - 1].parse::<i64>().is_ok() => duration(&d[..d.len() - 1], 60_000),
        d if d.ends_with('h') && d[..d.len() - 1].parse::<i64>().is_ok() => duration(&d[..d.len() - 1], 3_600_000),
        atom => SettingValue::Atom(atom.to_string()),
    }
}

#[test]
fn a_listing_filter_is_parsed_or_refused_with_what_is_wrong() {
    use crate::registry::{Filter, FilterText};
    let f = Filter::parse(FilterText { state: Some(b"online"), peer: Some(b"10.0.0.0/8"), ..FilterText::default() }).unwrap();
    assert_eq!(f.state, Some(SessionState::Online));
    assert_eq!(f.network, Some("10.0.0.0/8".parse().unwrap()));
    let f = Filter::parse(FilterText { peer: Some(b"::1"), username: Some(b"alice"), ..FilterText::default() }).unwrap();
    assert_eq!(f.network, Some("::1/128".parse().unwrap()));
    assert_eq!(f.username.as_deref(), Some(&b"alice"[..]));
    assert_eq!(Filter::parse(FilterText { state: Some(b"gone"), ..FilterText::default() }).err(), Some("unknown state"));
    assert!(Filter::parse(FilterText { peer: Some(b"10.0.0.0/33"), ..FilterText::default() }).is_err());
    assert!(Filter::parse(FilterText { peer: Some(&[0xff, 0xfe]), ..FilterText::default() }).is_err());
}
