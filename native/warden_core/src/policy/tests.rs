//! The policy file: parsing, errors with file and line, matching, the
//! modifiers, with the example policy of docs/.

use super::*;
use super::matching::GlobTok;

const EXAMPLE: &str = include_str!("../../../../docs/policy.example.toml");

fn parse(text: &str) -> Result<Policy, PolicyError> {
    Policy::parse(text, "policy.toml")
}

fn err(text: &str) -> PolicyError {
    parse(text).expect_err("policy should be rejected")
}

#[test]
fn example_policy_loads_completely() {
    let p = Policy::parse(EXAMPLE, "policy.example.toml").unwrap();
    assert!(p.configured);
    assert_eq!(p.rules.len(), 4);
    assert_eq!(p.rules[0].name, "block-scanners");
    assert_eq!(p.rules[0].code, RefusalCode::Banned);
    assert_eq!(p.rules[1].code, RefusalCode::NotAuthorized);
    assert_eq!(p.rules[2].action, Action::Allow);
    assert_eq!(p.rules[3].action, Action::Next);
    assert_eq!(p.anonymous.allow, Some(false));
    assert_eq!(p.anonymous.listeners.len(), 1);
    assert_eq!(p.anonymous.group.as_deref(), Some("guests"));
    assert_eq!(p.anonymous.settings.modifiers.mountpoint.as_deref(), Some(&b"guests"[..]));
    assert_eq!(p.network.allow.len(), 4);
    assert_eq!(p.network.deny, vec!["10.66.0.0/16".parse::<IpNet>().unwrap()]);
    assert_eq!(p.client_id.max_length, Some(64));
    assert!(p.client_id.pattern.is_some());
    assert_eq!(p.client_id.reserved.len(), 1);
    assert_eq!(p.username.max_length, Some(32));
    assert!(p.username.deny.contains(&b"root"[..]));
    assert_eq!(p.cert_identity.len(), 1);
    assert_eq!(p.cert_identity[0].from, CertField::Cn);
    assert!(p.cert_identity[0].required);
    assert_eq!(p.groups.len(), 3);
    assert_eq!(p.users.len(), 3);

    let alice = p.user(b"alice").unwrap();
    assert!(alice.password.as_ref().unwrap().verify(b"alice-secret"));
    // user value overrides groups; first listed group wins between groups
    assert_eq!(alice.settings.max_sessions, Some(3));
    assert_eq!(alice.settings.networks.as_ref().unwrap().len(), 1);
    let m = &alice.settings.modifiers;
    assert_eq!(m.mountpoint.as_deref(), Some(&b"devices"[..]));
    assert_eq!(m.session.max_message_size, Some(65536));
    assert_eq!(m.session.upgrade_qos, Some(true));
    assert_eq!(m.session.retry_interval, Some(20));
    assert_eq!(m.session.reg_view, Some(RegView::VmqRegTrie));
    assert_eq!(m.session.shared_subscription_policy, Some(SharedSubscriptionPolicy::LocalOnly));
    assert_eq!(m.session.clean_session, Some(false));
    assert_eq!(m.session.session_expiry_interval, Some(3600));

    let backend = p.user(b"backend").unwrap();
    assert!(backend.password.is_none());
    assert_eq!(backend.settings.networks, Some(vec![]));
    assert_eq!(backend.settings.max_sessions, Some(5));
    assert!(p.in_group(b"backend", "operators"));
    assert!(!p.in_group(b"backend", "devices"));
    assert_eq!(p.user(b"sensor-7").unwrap().settings.max_sessions, Some(2));
}

#[test]
fn empty_text_is_a_valid_policy() {
    let p = parse("").unwrap();
    assert!(p.configured);
    assert!(p.rules.is_empty() && p.users.is_empty());
    assert!(!Policy::empty().configured);
}

#[test]
fn unknown_key_is_error_with_line() {
    let e = err("version = 1\n\n[client_id]\nmax_lenght = 3\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("max_lenght"), "{e}");
    assert!(e.to_string().starts_with("policy.toml:4: "), "{e}");

    let e = err("[users.bob]\ngroups = []\n[users.bob.modifiers]\nmax_qos = 1\n");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("max_qos"));

    let e = err("[[rule]]\nname = \"x\"\naction = \"deny\"\nwhen = { peer = [\"10.0.0.0/8\"], port = 3 }\n");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn toml_syntax_error_has_line() {
    let e = err("[network]\nallow = [\"10.0.0.0/8\"\n\n");
    assert!(e.line >= 2, "{e}");
}

/// The parser notices an unclosed array or inline table only where the
/// next thing cannot belong to it, often lines later: the message then
/// names the line where it was opened.
#[test]
fn unclosed_bracket_names_the_line_it_was_opened_on() {
    let e = err("[network]\nallow = [\"10.0.0.0/8\",\n  \"192.168.0.0/16\"\n\n[client_id]\nmax_length = 64\n");
    assert!(e.line > 2, "{e}");
    let shown = e.to_string();
    assert!(shown.starts_with("policy.toml:5: ") && shown.ends_with("; the array opened on line 2 is not closed"), "{e}");
    assert!(!shown.contains('\n'), "one line in the log: {shown:?}");

    // Brackets inside strings and comments are not brackets.
    let e = err("# a [ in a comment\n[username]\ndeny = [\"[\", '{',\n\"\"\"]\"\"\"\n\n[network]\n");
    assert!(e.message.contains("the array opened on line 3 is not closed"), "{e}");

    // A line-ending backslash in a multi-line string still ends a line.
    let e = err("[username]\ndeny = [\"\"\"a\\\nb\"\"\"]\nnames = [\"c\",\n\n[network]\n");
    assert!(e.message.contains("the array opened on line 4 is not closed"), "{e}");

    // An array that is closed later gets no such note, even when the error is inside it.
    let e = err("[network]\nallow = [\n  \"10.0.0.0/8\",\n  nonsense,\n]\n");
    assert!(!e.message.contains("opened on line"), "{e}");
    // Nor does a bracket opened on the line the error is on.
    let e = err("[network]\nallow = [\"10.0.0.0/8\" \"x\"]\n");
    assert!(!e.message.contains("opened on line"), "{e}");
}

#[test]
fn bad_cidr_names_line_and_key() {
    let e = err("[network]\nallow = [\"10.0.0.0/8\",\n  \"10.0.0.0/33\"]\n");
    assert_eq!((e.line, e.key.as_str()), (3, "network.allow"), "{e}");
    assert!(e.to_string().contains("policy.toml:3: network.allow: not an IP network"));

    let e = err("[users.bob]\nnetworks = [\"fe80::/200\"]\n");
    assert_eq!((e.line, e.key.as_str()), (2, "users.bob.networks"));

    let e = err("[[rule]]\nname = \"r\"\naction = \"deny\"\n[rule.when]\npeer = [\"nonsense\"]\n");
    assert_eq!((e.line, e.key.as_str()), (5, "rule[r].when.peer"));
}

#[test]
fn bad_and_hostile_regexes_are_rejected() {
    let e = err("[client_id]\npattern = \"([a-z]\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "client_id.pattern"), "{e}");
    assert!(e.message.starts_with("invalid regular expression"));

    // A pattern whose compiled program explodes (counted repetitions of a big class).
    let e = err("[username]\npattern = \"(\\\\w{100}){100}\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "username.pattern"), "{e}");
    assert!(e.message.contains("too large"), "{e}");

    let long = "a".repeat(MAX_PATTERN_LEN + 1);
    let e = err(&format!("[username]\n\npattern = \"{long}\"\n"));
    assert_eq!(e.line, 3);

    let e = err("[[rule]]\nname = \"r\"\naction = \"next\"\nwhen = { client_id = \"(((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))\" }\n");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn modifier_values_are_validated() {
    let e = err("[groups.g.modifiers]\nretry_interval = 0\n");
    assert_eq!((e.line, e.key.as_str()), (2, "groups.g.modifiers.retry_interval"), "{e}");
    // seconds, at most an hour: 20000 is refused, not taken as 5.5 hours
    let e = err("[users.u.modifiers]\nretry_interval = 20000\n");
    assert_eq!((e.line, e.key.as_str()), (2, "users.u.modifiers.retry_interval"), "{e}");
    assert!(e.message.contains("seconds"), "{e}");
    let e = err("[groups.g.modifiers]\n\ntopic_alias_max = 70000\n");
    assert_eq!((e.line, e.key.as_str()), (3, "groups.g.modifiers.topic_alias_max"));
    let e = err("[users.u.modifiers]\nmax_message_size = -1\n");
    assert_eq!(e.line, 2, "{e}");
    let e = err("[users.u.modifiers]\nreg_view = \"my_view\"\n");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("vmq_reg_trie"), "{e}");
    let e = err("[users.u.modifiers]\nshared_subscription_policy = \"nearest\"\n");
    assert_eq!(e.line, 2);
    let e = err("[users.u.modifiers]\nupgrade_qos = \"yes\"\n");
    assert_eq!(e.line, 2);
}

#[test]
fn references_and_rule_shape_are_checked() {
    let e = err("[users.u]\ngroups = [\"nope\"]\n");
    assert_eq!((e.line, e.key.as_str()), (2, "users.u.groups"));
    assert!(e.message.contains("undefined group \"nope\""));
    let e = err("[anonymous]\ngroup = \"nope\"\n");
    assert_eq!(e.key, "anonymous.group");
    let e = err("[[client_id.reserved]]\nprefix = \"x\"\ngroups = [\"nope\"]\n");
    assert_eq!(e.line, 3);

    let e = err("[[rule]]\nname = \"a\"\naction = \"allow\"\ncode = \"banned\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "rule[a].code"));
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\n[[rule]]\nname = \"a\"\naction = \"deny\"\n");
    assert_eq!(e.line, 5);
    assert!(e.message.contains("duplicate"));
    let e = err("[[rule]]\nname = \"a\"\naction = \"reject\"\n");
    assert_eq!(e.line, 3);
    let e = err("[[rule]]\nname = \"a\"\naction = \"deny\"\ncode = \"server_busy\"\n");
    assert_eq!(e.line, 4);
    let e = err("[[rule]]\naction = \"deny\"\n");
    assert!(e.message.contains("name"), "{e}");
    let e = err("version = 2\n");
    assert_eq!((e.line, e.key.as_str()), (1, "version"));
}

#[test]
fn bad_inline_password_hash_is_error_without_echo() {
    let e = err("[users.u]\npassword = \"$9$secretmaterial\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "users.u.password"));
    assert!(!e.to_string().contains("secretmaterial"));
}

#[test]
fn allowed_chars_ranges() {
    let p = parse("[client_id]\nallowed_chars = \"a-c_-\"\n").unwrap();
    assert_eq!(p.client_id.allowed_chars, Some(vec![(b'a', b'c'), (b'_', b'_'), (b'-', b'-')]));
    let e = err("[client_id]\nallowed_chars = \"z-a\"\n");
    assert_eq!(e.line, 2);
    let e = err("[client_id]\nallowed_chars = \"ä\"\n");
    assert_eq!(e.line, 2);
}

#[test]
fn username_glob() {
    let g = BoundPattern::new("{username}-*".into());
    assert!(g.matches(b"bob", b"bob-1"));
    assert!(g.matches(b"bob", b"bob-"));
    assert!(!g.matches(b"bob", b"bob"));
    assert!(!g.matches(b"bob", b"bobby-1"));
    assert!(!g.matches(b"bob", b"alice-1"));
    // A '*' in a username is literal, not a wildcard.
    assert!(!g.matches(b"*", b"x-1"));
    assert!(g.matches(b"*", b"*-1"));
    let g = BoundPattern::new("dev/?/{username}/*/end".into());
    assert!(g.matches(b"u", b"dev/a/u/x/y/end"));
    assert!(!g.matches(b"u", b"dev/ab/u/x/end"));
    // Pathological input stays fast (no exponential backtracking).
    let g = BoundPattern::new("*a*a*a*a*a*a*a*b".into());
    assert!(!g.matches(b"", &[b'a'; 5000]));
}

#[test]
fn listener_matching_and_type_aliases() {
    let l = Listener { port: Some(8080), kind: Some("mqttws".into()), addr: Some("10.1.2.3".parse().unwrap()) };
    let m = |port, kind: Option<&str>, addr: Option<&str>| ListenerMatch {
        port,
        kind: kind.map(canonical_listener_type),
        addr: addr.map(|a| a.parse().unwrap()),
    };
    assert!(m(None, None, None).matches(Some(&l)));
    assert!(m(None, None, None).matches(None));
    assert!(m(Some(8080), Some("ws"), None).matches(Some(&l)));
    assert!(m(None, Some("WS"), Some("10.0.0.0/8")).matches(Some(&l)));
    assert!(!m(Some(8081), None, None).matches(Some(&l)));
    assert!(!m(None, Some("wss"), None).matches(Some(&l)));
    assert!(!m(None, Some("ws"), None).matches(None));
    assert_eq!(canonical_listener_type("mqtts"), "ssl");
}

#[test]
fn modifier_entries_per_protocol() {
    let p = Policy::parse(EXAMPLE, "x").unwrap();
    let key = SubscriberKey::new(&b""[..], &b"c1"[..]);
    let m = p.user(b"alice").unwrap().settings.modifiers.resolve(&key);
    let m3 = m.entries(Protocol::Mqtt3);
    let m5 = m.entries(Protocol::Mqtt5);
    let keys = |v: &[(&'static str, ModValue)]| v.iter().map(|(k, _)| *k).collect::<Vec<&'static str>>();
    let k3 = keys(&m3);
    let k5 = keys(&m5);
    assert!(k3.contains(&"clean_session") && !k3.contains(&"clean_start"));
    assert!(k5.contains(&"clean_start") && !k5.contains(&"clean_session"));
    for only5 in ["session_expiry_interval", "topic_alias_max", "max_packet_size"] {
        assert!(!k3.contains(&only5));
        assert!(k5.contains(&only5));
    }
    assert_eq!(
        m3[0],
        ("subscriber_id", ModValue::SubscriberId { mountpoint: b"devices".to_vec(), client_id: b"c1".to_vec() })
    );
    assert!(m3.contains(&("reg_view", ModValue::Atom("vmq_reg_trie"))));
    assert!(m3.contains(&("shared_subscription_policy", ModValue::Atom("local_only"))));
    assert!(m3.contains(&("max_connection_lifetime", ModValue::Int(86400))));
    assert!(m5.contains(&("max_packet_size", ModValue::Int(1_048_576))));
    // Every key is one VerneMQ's session of that protocol acts on
    // (docs/VERNEMQ.md, "What the answers do"): 2.0.1 and 2.1.2 read
    // these from auth_on_register's and auth_on_register_m5's answers.
    const QUEUE: &[&str] = &["max_online_messages", "max_offline_messages"];
    const KNOWN_3: &[&str] = &[
        "subscriber_id", "username", "clean_session", "max_message_size", "max_message_rate", "max_inflight_messages",
        "retry_interval", "upgrade_qos", "reg_view", "shared_subscription_policy", "max_connection_lifetime",
    ];
    const KNOWN_5: &[&str] = &[
        "subscriber_id", "username", "clean_start", "max_message_size", "max_message_rate", "fc_receive_max_client",
        "upgrade_qos", "reg_view", "shared_subscription_policy", "max_connection_lifetime", "session_expiry_interval",
        "topic_alias_max", "max_packet_size",
    ];
    for k in &k3 {
        assert!(KNOWN_3.contains(k) || QUEUE.contains(k), "MQTT 3: {k}");
    }
    for k in &k5 {
        assert!(KNOWN_5.contains(k) || QUEUE.contains(k), "MQTT 5: {k}");
    }
    assert!(Modifiers::default().entries(Protocol::Mqtt5).is_empty());
}

#[test]
fn rule_conditions() {
    let p = parse(
        r#"
[[rule]]
name = "r"
action = "deny"
when = { peer = ["10.0.0.0/8", "2001:db8::/32"], listener = [{ port = 1883 }, { type = "ws" }], client_id = "c.*", username = "u[0-9]", protocol = "mqtt5", has_cert = false }
[[rule]]
name = "anon"
action = "deny"
when = { anonymous = true }
"#,
    )
    .unwrap();
    let l1883 = Listener { port: Some(1883), kind: Some("tcp".into()), addr: None };
    let base = MatchInput {
        peer: Some("10.1.1.1".parse().unwrap()),
        listener: Some(&l1883),
        client_id: b"c1",
        username: Some(b"u1"),
        protocol: Protocol::Mqtt5,
        has_cert: false,
    };
    let w = &p.rules[0].when;
    assert!(w.matches(&base));
    assert!(w.matches(&MatchInput { peer: Some("2001:db8::5".parse().unwrap()), ..base }));
    assert!(w.matches(&MatchInput { peer: Some("::ffff:10.0.0.1".parse().unwrap()), ..base }));
    assert!(!w.matches(&MatchInput { peer: Some("11.1.1.1".parse().unwrap()), ..base }));
    assert!(!w.matches(&MatchInput { peer: None, ..base }));
    assert!(!w.matches(&MatchInput { listener: None, ..base }));
    assert!(!w.matches(&MatchInput { client_id: b"xc1", ..base }), "regex is anchored");
    assert!(!w.matches(&MatchInput { username: Some(b"u12"), ..base }));
    assert!(!w.matches(&MatchInput { username: None, ..base }));
    assert!(!w.matches(&MatchInput { protocol: Protocol::Mqtt3, ..base }));
    assert!(!w.matches(&MatchInput { has_cert: true, ..base }));
    let a = &p.rules[1].when;
    assert!(!a.matches(&base));
    assert!(a.matches(&MatchInput { username: None, ..base }));
}

#[test]
fn ipv4_mapped_networks_match_ipv4_peers() {
    // Peers are normalised to IPv4; a network written in the mapped form
    // must still match them (and the other way round).
    let mapped: Vec<IpNet> = vec!["::ffff:10.77.0.0/112".parse().unwrap()];
    assert!(in_networks(&mapped, "10.77.1.2".parse().unwrap()));
    assert!(in_networks(&mapped, "::ffff:10.77.1.2".parse().unwrap()));
    assert!(!in_networks(&mapped, "10.78.1.2".parse().unwrap()));
    let v4: Vec<IpNet> = vec!["10.77.0.0/16".parse().unwrap()];
    assert!(in_networks(&v4, "::ffff:10.77.1.2".parse().unwrap()));
    assert!(!in_networks(&v4, "2001:db8::1".parse().unwrap()));
}

/// The plain definition of the glob, exponential in the worst case: the
/// reference for small inputs.
fn glob_reference(p: &[GlobTok], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((GlobTok::Star, rest)) => (0..=s.len()).any(|i| glob_reference(rest, &s[i..])),
        Some((GlobTok::One, rest)) => !s.is_empty() && glob_reference(rest, &s[1..]),
        Some((GlobTok::Byte(b), rest)) => s.first() == Some(b) && glob_reference(rest, &s[1..]),
    }
}

#[test]
fn username_glob_agrees_with_the_reference() {
    let mut rnd = crate::testing::below(0x9e37_79b9_7f4a_7c15u64);
    for round in 0..30_000 {
        let plen = rnd(9) as usize;
        let src: String = (0..plen).map(|_| ['a', 'b', '*', '?', 'a'][rnd(5) as usize]).collect();
        let src = if round % 3 == 0 { format!("{src}{{username}}{src}") } else { src };
        let user: Vec<u8> = (0..rnd(4)).map(|_| b"ab*"[rnd(3) as usize]).collect();
        let s: Vec<u8> = (0..rnd(14)).map(|_| b"ab*"[rnd(3) as usize]).collect();
        let toks = BoundPattern::new(src.clone()).expand(&user, usize::MAX).unwrap();
        let want = glob_reference(&toks, &s);
        let g = BoundPattern::new(src.clone());
        assert_eq!(g.matches(&user, &s), want, "pattern {src:?} user {user:?} value {s:?}");
    }
    // Segments longer than one machine word.
    let g = BoundPattern::new("x*{username}?*{username}*".into());
    let user = [b'u'; 150];
    let mut s = b"x".to_vec();
    s.extend([b'u'; 149]);
    s.push(b'v');
    s.extend([b'u'; 150]);
    s.push(b'w');
    s.extend([b'u'; 150]);
    assert!(g.matches(&user, &s));
    s.pop();
    assert!(!g.matches(&user, &s));
}

/// The worst cases of the old backtracking matcher, at the input cap; and
/// anything past the cap is refused without being looked at.
#[test]
fn username_glob_at_and_over_the_cap() {
    let user = vec![b'a'; MAX_MATCH_INPUT];
    let mut bad = vec![b'a'; MAX_MATCH_INPUT - 1];
    bad.push(b'b');
    for p in ["*{username}*", "*{username}", "{username}*", "*?{username}*", "*a*a*a*a*a*a*c"] {
        let g = BoundPattern::new(p.into());
        assert!(!g.matches(&user, &bad), "{p}");
    }
    let g = BoundPattern::new("*{username}*".into());
    assert!(g.matches(&user[..100], &user));
    let long = vec![b'a'; MAX_MATCH_INPUT + 1];
    assert!(!g.matches(b"a", &long), "an over-long client id is refused");
    assert!(!g.matches(&long, &long), "an over-long username is refused");
    // A pattern needing more bytes than the value has is refused before expansion.
    let g = BoundPattern::new("{username}{username}{username}".into());
    assert!(!g.matches(&user, b"aaa"));
}

/// Regex conditions never look at a value longer than MAX_MATCH_INPUT:
/// deny rules apply to it, allow/next rules do not, required patterns refuse it.
#[test]
fn overlong_values_fail_closed() {
    let p = parse(
        "[client_id]\npattern = \"a+\"\n[username]\npattern = \"a+\"\n\
         [[rule]]\nname = \"d\"\naction = \"deny\"\nwhen = { client_id = \"b+\" }\n\
         [[rule]]\nname = \"a\"\naction = \"allow\"\nwhen = { client_id = \"a+\" }\n\
         [[rule]]\nname = \"n\"\naction = \"next\"\nwhen = { username = \"a+\" }\n",
    )
    .unwrap();
    let long = vec![b'a'; MAX_MATCH_INPUT + 1];
    let ok = vec![b'a'; MAX_MATCH_INPUT];
    let pat = p.client_id.pattern.as_ref().unwrap();
    assert_eq!(pat.matches(&ok), Some(true));
    assert_eq!(pat.matches(&long), None);
    assert!(!pat.is_match(&long));
    assert!(!p.username.pattern.as_ref().unwrap().is_match(&long));
    let input = |cid: &'static [u8], user: Option<&'static [u8]>| MatchInput {
        peer: None,
        listener: None,
        client_id: cid,
        username: user,
        protocol: Protocol::Mqtt3,
        has_cert: false,
    };
    let long: &'static [u8] = Box::leak(long.into_boxed_slice());
    let [deny, allow, next] = [&p.rules[0], &p.rules[1], &p.rules[2]];
    assert!(deny.when.matches(&input(long, None)), "an over-long value cannot escape a deny rule");
    assert!(!deny.when.matches(&input(b"aaa", None)));
    assert!(!allow.when.matches(&input(long, None)), "nor be admitted by an allow rule");
    assert!(allow.when.matches(&input(b"aaa", None)));
    assert!(!next.when.matches(&input(b"c", Some(long))));
    assert!(next.when.matches(&input(b"c", Some(b"aa"))));
}

#[test]
fn regex_program_size_is_bounded() {
    // Fits in MAX_PATTERN_LEN, but compiles to a program over the size limit.
    let e = err("[client_id]\npattern = \"(\\\\w{50}){50}\"\n");
    assert!(e.message.contains("too large"), "{e}");
}

#[test]
fn max_session_age_comes_from_the_user_else_its_first_group_that_sets_it() {
    let p = parse(
        "[groups.short]\nmax_session_age = 60\n[groups.long]\nmax_session_age = 86400\n\
         [users.a]\ngroups = [\"short\", \"long\"]\n[users.b]\ngroups = [\"long\"]\nmax_session_age = 5\n\
         [users.c]\n",
    )
    .unwrap();
    let age = |u: &[u8]| p.user(u).unwrap().settings.max_session_age;
    assert_eq!(age(b"a"), Some(60));
    assert_eq!(age(b"b"), Some(5));
    assert_eq!(age(b"c"), None);
    let e = err("[users.d]\nmax_session_age = -1\n").to_string();
    assert!(e.starts_with("policy.toml:2:"), "{e}");
}

fn pattern(src: &str) -> Pattern {
    let p = parse(&format!("[client_id]\npattern = {src:?}\n")).unwrap_or_else(|e| panic!("{src}: {e}"));
    p.client_id.pattern.unwrap()
}

/// The full DFA, or the class-sequence matcher where the pattern is one,
/// and the regex answer alike: patterns with Unicode classes, case folding,
/// byte escapes and alternations, against values with multi-byte
/// characters, invalid UTF-8, line ends and the empty value.
#[test]
fn pattern_dfa_agrees_with_the_regex() {
    let sources = [
        "[A-Za-z0-9].*", "[a-z][a-z0-9_.-]*", ".*", "", "a|ab|abc", "(?i)dev-[0-9]+", "[0-9]{2,4}x?",
        "[^a]*", "é+.", "(?-u:\\xFF)a", "(?s).+", ".{3}", "(a|b)*c(d|e)?", "[\\p{Greek}a]+", "x*(?-u:.)",
    ];
    let alphabet: [&[u8]; 12] = [b"a", b"b", b"c", b"x", b"9", b"-", "é".as_bytes(), "λ".as_bytes(), b"\xFF", b"\xC3", b"\n", b"D"];
    let mut rnd = crate::testing::below(0x2545_f491_4f6c_dd1du64);
    for src in sources {
        let p = pattern(src);
        assert!(p.has_dfa() != p.is_simple(), "{src}: small patterns match by a full DFA or as a class sequence");
        for _ in 0..3_000 {
            let value: Vec<u8> = (0..rnd(7)).flat_map(|_| alphabet[rnd(alphabet.len() as u64) as usize].iter().copied()).collect();
            assert_eq!(p.matches(&value), Some(p.re.is_match(&value)), "pattern {src:?} value {value:?}");
        }
    }
}

/// A pattern whose DFA would be large is matched by the regex alone, with
/// the same answers.
#[test]
fn large_patterns_fall_back_to_the_regex() {
    let p = pattern("\\w{2}\\d{2,4}");
    assert!(!p.has_dfa() && !p.is_simple());
    for (value, want) in [("ä٣11", true), ("ab12345", false), ("a1", false)] {
        assert_eq!(p.matches(value.as_bytes()), Some(want), "{value}");
    }
}

/// An accept without modifiers carries none (the same value as the
/// default), and one with modifiers keeps every field.
#[test]
fn accepted_modifiers_are_kept_only_when_there_are_some() {
    assert_eq!(Mods::from(Modifiers::default()), Mods::default());
    assert!(Mods::default().is_empty());
    let m = Modifiers { max_packet_size: Some(1024), username: Some(b"alice".to_vec()), ..Modifiers::default() };
    let kept = Mods::from(m.clone());
    assert_ne!(kept, Mods::default());
    assert_eq!(*kept, m);
}
