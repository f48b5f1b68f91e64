//! From the TOML text to a [`Policy`]: the serde model of the file and the
//! compilation that checks every value and names file, line and key.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use regex::bytes::RegexBuilder;
use serde::Deserialize;
use toml::Spanned;

use super::*;

// ---------------------------------------------------------------------------
// Raw (serde) model
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    version: Option<Spanned<i64>>,
    anonymous: Option<RawAnonymous>,
    network: Option<RawNetwork>,
    client_id: Option<RawClientId>,
    username: Option<RawUsername>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    cert_identity: Vec<RawCertIdentity>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, RawGroup>,
    #[serde(default)]
    users: BTreeMap<Spanned<String>, RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    port: Option<u16>,
    #[serde(rename = "type")]
    kind: Option<String>,
    addr: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnonymous {
    allow: Option<bool>,
    group: Option<Spanned<String>>,
    #[serde(default)]
    listener: Vec<RawAnonListener>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnonListener {
    port: Option<u16>,
    #[serde(rename = "type")]
    kind: Option<String>,
    addr: Option<Spanned<String>>,
    allow: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientId {
    max_length: Option<usize>,
    allowed_chars: Option<Spanned<String>>,
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    must_start_with_username: bool,
    username_pattern: Option<Spanned<String>>,
    #[serde(default)]
    reserved: Vec<RawReserved>,
    bind_to_user: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReserved {
    prefix: Spanned<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsername {
    max_length: Option<usize>,
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    action: Action,
    reason: Option<String>,
    code: Option<Spanned<RefusalCode>>,
    #[serde(default)]
    when: Option<RawWhen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhen {
    peer: Option<Vec<Spanned<String>>>,
    listener: Option<Vec<RawListener>>,
    client_id: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    anonymous: Option<bool>,
    protocol: Option<ProtocolName>,
    has_cert: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertIdentity {
    #[serde(default)]
    listener: Vec<RawListener>,
    from: CertField,
    #[serde(default)]
    required: bool,
    #[serde(default = "yes")]
    username_must_match: bool,
    #[serde(default)]
    require_known: bool,
    group: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    networks: Option<Vec<Spanned<String>>>,
    max_sessions: Option<u32>,
    max_session_age: Option<u64>,
    modifiers: Option<RawModifiers>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    networks: Option<Vec<Spanned<String>>>,
    max_sessions: Option<u32>,
    max_session_age: Option<u64>,
    modifiers: Option<RawModifiers>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModifiers {
    mountpoint: Option<String>,
    clean_session: Option<bool>,
    max_message_size: Option<Spanned<u64>>,
    max_message_rate: Option<Spanned<u64>>,
    max_inflight_messages: Option<Spanned<u64>>,
    retry_interval: Option<Spanned<u64>>,
    upgrade_qos: Option<bool>,
    reg_view: Option<RegView>,
    shared_subscription_policy: Option<SharedSubscriptionPolicy>,
    max_online_messages: Option<Spanned<u64>>,
    max_offline_messages: Option<Spanned<u64>>,
    max_connection_lifetime: Option<Spanned<u64>>,
    session_expiry_interval: Option<Spanned<u64>>,
    topic_alias_max: Option<Spanned<u64>>,
    max_packet_size: Option<Spanned<u64>>,
}

// ---------------------------------------------------------------------------
// Compilation
// ---------------------------------------------------------------------------

fn net(ctx: &SourceText<'_>, s: &Spanned<String>, key: &str) -> Result<IpNet, PolicyError> {
    let v = s.get_ref().trim();
    if let Ok(n) = v.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(a) = v.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    Err(ctx.err(s.span(), key, format!("not an IP network in CIDR form (e.g. 10.0.0.0/8 or 2001:db8::/32): {v:?}")))
}

fn nets(ctx: &SourceText<'_>, list: &[Spanned<String>], key: &str) -> Result<Vec<IpNet>, PolicyError> {
    list.iter().map(|s| net(ctx, s, key)).collect()
}

fn regex(ctx: &SourceText<'_>, s: &Spanned<String>, key: &str) -> Result<Pattern, PolicyError> {
    let src = s.get_ref();
    if src.len() > MAX_PATTERN_LEN {
        return Err(ctx.err(s.span(), key, format!("pattern longer than {MAX_PATTERN_LEN} bytes")));
    }
    RegexBuilder::new(&format!("^(?:{src})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map(Pattern::new)
        .map_err(|e| {
            let msg = match e {
                regex::Error::CompiledTooBig(_) => "pattern compiles to a program that is too large".to_string(),
                other => format!("invalid regular expression: {}", other.to_string().lines().last().unwrap_or("")),
            };
            ctx.err(s.span(), key, msg)
        })
}

fn listener(ctx: &SourceText<'_>, port: Option<u16>, kind: &Option<String>, addr: &Option<Spanned<String>>, key: &str) -> Result<ListenerMatch, PolicyError> {
    Ok(ListenerMatch {
        port,
        kind: kind.as_deref().map(canonical_listener_type),
        addr: addr.as_ref().map(|a| net(ctx, a, &format!("{key}.addr"))).transpose()?,
    })
}

fn char_ranges(ctx: &SourceText<'_>, s: &Spanned<String>, key: &str) -> Result<Vec<(u8, u8)>, PolicyError> {
    let src = s.get_ref();
    if !src.is_ascii() || src.is_empty() {
        return Err(ctx.err(s.span(), key, "allowed_chars must be non-empty ASCII, e.g. \"A-Za-z0-9_.-\""));
    }
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if i + 2 < b.len() && b[i + 1] == b'-' {
            if b[i] > b[i + 2] {
                return Err(ctx.err(s.span(), key, format!("range {}-{} is reversed", b[i] as char, b[i + 2] as char)));
            }
            out.push((b[i], b[i + 2]));
            i += 3;
        } else {
            out.push((b[i], b[i]));
            i += 1;
        }
    }
    Ok(out)
}

fn modifiers(ctx: &SourceText<'_>, raw: &Option<RawModifiers>, key: &str) -> Result<ModifierSet, PolicyError> {
    let Some(r) = raw else { return Ok(ModifierSet::default()) };
    let ranged = |v: &Option<Spanned<u64>>, name: &str, min: u64, max: u64, unit: &str| -> Result<Option<u64>, PolicyError> {
        match v {
            None => Ok(None),
            Some(s) if (min..=max).contains(s.get_ref()) => Ok(Some(*s.get_ref())),
            Some(s) => Err(ctx.err(s.span(), format!("{key}.{name}"), format!("must be between {min} and {max}{unit}"))),
        }
    };
    let int = |v: &Option<Spanned<u64>>, name: &str, min: u64, max: u64| ranged(v, name, min, max, "");
    const BIG: u64 = i64::MAX as u64;
    Ok(ModifierSet {
        mountpoint: r.mountpoint.as_ref().map(|m| m.as_bytes().to_vec()),
        session: Modifiers {
            subscriber_id: None,
            username: None,
            clean_session: r.clean_session,
            max_message_size: int(&r.max_message_size, "max_message_size", 0, BIG)?,
            max_message_rate: int(&r.max_message_rate, "max_message_rate", 0, BIG)?,
            max_inflight_messages: int(&r.max_inflight_messages, "max_inflight_messages", 0, 65_535)?,
            // Seconds, as vernemq.conf's retry_interval; at most an hour, so
            // that a value meant as milliseconds is refused, not obeyed.
            retry_interval: ranged(&r.retry_interval, "retry_interval", 1, 3600, " seconds")?,
            upgrade_qos: r.upgrade_qos,
            reg_view: r.reg_view,
            shared_subscription_policy: r.shared_subscription_policy,
            max_online_messages: int(&r.max_online_messages, "max_online_messages", 0, BIG)?,
            max_offline_messages: int(&r.max_offline_messages, "max_offline_messages", 0, BIG)?,
            max_connection_lifetime: int(&r.max_connection_lifetime, "max_connection_lifetime", 0, BIG)?,
            session_expiry_interval: int(&r.session_expiry_interval, "session_expiry_interval", 0, u64::from(u32::MAX))?,
            topic_alias_max: int(&r.topic_alias_max, "topic_alias_max", 0, 65_535)?,
            max_packet_size: int(&r.max_packet_size, "max_packet_size", 1, 268_435_455)?,
        },
    })
}

fn group_ref<'a>(
    ctx: &SourceText<'_>,
    groups: &'a NameMap<String, Group>,
    name: &Spanned<String>,
    key: &str,
) -> Result<&'a Group, PolicyError> {
    groups.get(name.get_ref()).ok_or_else(|| ctx.err(name.span(), key, format!("undefined group {:?}", name.get_ref())))
}

pub(super) fn compile(ctx: &SourceText<'_>, raw: RawPolicy) -> Result<Policy, PolicyError> {
    if let Some(v) = &raw.version {
        if *v.get_ref() != 1 {
            return Err(ctx.err(v.span(), "version", "only version = 1 is supported"));
        }
    }
    // Groups first: everything else may refer to them.
    let mut groups = NameMap::default();
    for (name, g) in &raw.groups {
        let key = format!("groups.{}", name.get_ref());
        let settings = Settings {
            networks: g.networks.as_ref().map(|n| nets(ctx, n, &format!("{key}.networks"))).transpose()?,
            max_sessions: g.max_sessions,
            max_session_age: g.max_session_age,
            modifiers: modifiers(ctx, &g.modifiers, &format!("{key}.modifiers"))?,
        };
        groups.insert(name.get_ref().clone(), Group { name: name.get_ref().clone(), settings });
    }

    let mut users = NameMap::default();
    for (name, u) in &raw.users {
        let key = format!("users.{}", name.get_ref());
        if name.get_ref().is_empty() {
            return Err(ctx.err(name.span(), "users", "empty user name"));
        }
        let password = match &u.password {
            None => None,
            Some(p) => Some(
                PasswordHash::parse(p.get_ref()).map_err(|e| ctx.err(p.span(), format!("{key}.password"), e.to_string()))?,
            ),
        };
        let mut settings = Settings::default();
        for g in u.groups.iter().rev() {
            settings.overlay(&group_ref(ctx, &groups, g, &format!("{key}.groups"))?.settings);
        }
        settings.overlay(&Settings {
            networks: u.networks.as_ref().map(|n| nets(ctx, n, &format!("{key}.networks"))).transpose()?,
            max_sessions: u.max_sessions,
            max_session_age: u.max_session_age,
            modifiers: modifiers(ctx, &u.modifiers, &format!("{key}.modifiers"))?,
        });
        let name_b = name.get_ref().as_bytes().to_vec();
        users.insert(
            name_b.clone(),
            User {
                name: name_b,
                password,
                groups: u.groups.iter().map(|g| g.get_ref().clone()).collect(),
                settings,
            },
        );
    }

    let mut anonymous = AnonymousPolicy::default();
    if let Some(a) = &raw.anonymous {
        anonymous.allow = a.allow;
        for (i, l) in a.listener.iter().enumerate() {
            anonymous.listeners.push((listener(ctx, l.port, &l.kind, &l.addr, &format!("anonymous.listener[{i}]"))?, l.allow));
        }
        if let Some(g) = &a.group {
            anonymous.settings = group_ref(ctx, &groups, g, "anonymous.group")?.settings.clone();
            anonymous.group = Some(g.get_ref().clone());
        }
    }

    let network = match &raw.network {
        None => NetworkPolicy::default(),
        Some(n) => NetworkPolicy { allow: nets(ctx, &n.allow, "network.allow")?, deny: nets(ctx, &n.deny, "network.deny")? },
    };

    let mut client_id = ClientIdPolicy {
        bind_to_user: raw.client_id.as_ref().and_then(|c| c.bind_to_user).unwrap_or(true),
        ..ClientIdPolicy::default()
    };
    if let Some(c) = &raw.client_id {
        client_id.max_length = c.max_length;
        client_id.allowed_chars = c.allowed_chars.as_ref().map(|s| char_ranges(ctx, s, "client_id.allowed_chars")).transpose()?;
        client_id.pattern = c.pattern.as_ref().map(|s| regex(ctx, s, "client_id.pattern")).transpose()?;
        client_id.must_start_with_username = c.must_start_with_username;
        if let Some(p) = &c.username_pattern {
            if p.get_ref().len() > MAX_PATTERN_LEN {
                return Err(ctx.err(p.span(), "client_id.username_pattern", format!("pattern longer than {MAX_PATTERN_LEN} bytes")));
            }
            client_id.username_pattern = Some(BoundPattern::new(p.get_ref().clone()));
        }
        for (i, r) in c.reserved.iter().enumerate() {
            let key = format!("client_id.reserved[{i}]");
            if r.prefix.get_ref().is_empty() {
                return Err(ctx.err(r.prefix.span(), format!("{key}.prefix"), "empty prefix"));
            }
            let mut gs = NameSet::default();
            for g in &r.groups {
                group_ref(ctx, &groups, g, &format!("{key}.groups"))?;
                gs.insert(g.get_ref().clone());
            }
            client_id.reserved.push(ReservedPrefix {
                prefix: r.prefix.get_ref().as_bytes().to_vec(),
                users: r.users.iter().map(|u| u.as_bytes().to_vec()).collect(),
                groups: gs,
            });
        }
    }

    let mut username = UsernamePolicy::default();
    if let Some(u) = &raw.username {
        username.max_length = u.max_length;
        username.pattern = u.pattern.as_ref().map(|s| regex(ctx, s, "username.pattern")).transpose()?;
        username.deny = u.deny.iter().map(|d| d.as_bytes().to_vec()).collect();
    }

    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for r in &raw.rule {
        let name = r.name.get_ref().clone();
        let key = format!("rule[{name}]");
        if name.is_empty() {
            return Err(ctx.err(r.name.span(), "rule.name", "empty rule name"));
        }
        if !names.insert(name.clone()) {
            return Err(ctx.err(r.name.span(), "rule.name", format!("duplicate rule name {name:?}")));
        }
        if let Some(c) = &r.code {
            if r.action != Action::Deny {
                return Err(ctx.err(c.span(), format!("{key}.code"), "code only applies to action = \"deny\""));
            }
        }
        let mut when = When::default();
        if let Some(w) = &r.when {
            when.peer = w.peer.as_ref().map(|p| nets(ctx, p, &format!("{key}.when.peer"))).transpose()?;
            when.listener = match &w.listener {
                None => None,
                Some(ls) => Some(
                    ls.iter()
                        .map(|l| listener(ctx, l.port, &l.kind, &l.addr, &format!("{key}.when.listener")))
                        .collect::<Result<_, _>>()?,
                ),
            };
            when.client_id = w.client_id.as_ref().map(|s| regex(ctx, s, &format!("{key}.when.client_id"))).transpose()?;
            when.username = w.username.as_ref().map(|s| regex(ctx, s, &format!("{key}.when.username"))).transpose()?;
            when.anonymous = w.anonymous;
            when.protocol = w.protocol.map(|p| match p {
                ProtocolName::Mqtt3 => Protocol::Mqtt3,
                ProtocolName::Mqtt5 => Protocol::Mqtt5,
            });
            when.has_cert = w.has_cert;
        }
        when.overlong_matches = r.action == Action::Deny;
        let reason = r.reason.clone().unwrap_or_else(|| match r.action {
            Action::Deny => "denied by policy".to_string(),
            Action::Allow => "allowed by policy".to_string(),
            Action::Next => "left to the next plugin".to_string(),
        });
        rules.push(Rule {
            name,
            action: r.action,
            reason,
            code: r.code.as_ref().map(|c| *c.get_ref()).unwrap_or(RefusalCode::NotAuthorized),
            when,
        });
    }

    let mut cert_identity = Vec::new();
    for (i, c) in raw.cert_identity.iter().enumerate() {
        let key = format!("cert_identity[{i}]");
        let listeners = c
            .listener
            .iter()
            .map(|l| listener(ctx, l.port, &l.kind, &l.addr, &format!("{key}.listener")))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = match &c.group {
            Some(g) => group_ref(ctx, &groups, g, &format!("{key}.group"))?.settings.clone(),
            None => Settings::default(),
        };
        cert_identity.push(CertIdentity {
            listeners,
            from: c.from,
            required: c.required,
            username_must_match: c.username_must_match,
            require_known: c.require_known,
            group: c.group.as_ref().map(|g| g.get_ref().clone()),
            settings,
        });
    }

    Ok(Policy {
        source: ctx.source.to_string(),
        configured: true,
        anonymous,
        network,
        client_id,
        username,
        rules,
        cert_identity,
        groups,
        users,
    })
}

