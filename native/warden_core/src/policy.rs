//! The policy file: a TOML document an operator writes by hand (see
//! `docs/POLICY.md` and `docs/policy.example.toml`), parsed into an immutable
//! [`Policy`] that the firewall evaluates.
//!
//! Parsing is strict: unknown keys, malformed CIDRs, regexes that are too big,
//! out-of-range modifier values and references to undefined groups are errors
//! that name the file, the line and the key. Nothing here is evaluated lazily:
//! a policy that parses can be evaluated without further failure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

use serde::Deserialize;
use toml::Spanned;

use crate::credentials::PasswordHash;
use crate::firewall::{Listener, RefusalCode};
use crate::types::{Protocol, SubscriberKey};

/// Larger policy files are refused (a policy is a hand-written text).
pub const MAX_POLICY_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Longest accepted pattern source (regex or glob), in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest value (client id, username) a regex or glob matcher looks at, in
/// bytes. Values come from the network (MQTT allows 65535 bytes) and a
/// regex's worst case grows with the value's length (`.*a.{20}` cost 35 ms
/// on 64 KiB), so the matcher layer itself refuses to look at more: see
/// [`Pattern::matches`] and [`BoundPattern::matches`] for what an over-long
/// value answers (always the closed side: refused).
pub const MAX_MATCH_INPUT: usize = 1024;
/// Limits handed to the regex compiler so a hostile pattern cannot make the
/// compiled program (or its lazy DFA) grow without bound. The regex crate
/// matches in time linear in the value, with a factor that grows with the
/// compiled program; with these limits and [`MAX_MATCH_INPUT`] one match
/// stays far below a millisecond (docs/POLICY.md has the figures).
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;
const REGEX_NEST_LIMIT: u32 = 32;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// A policy that cannot be used. `Display`: `FILE:LINE: KEY: MESSAGE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub source: String,
    /// 1-based; 0 when the error is not tied to a line (unreadable file).
    pub line: usize,
    /// Dotted key path (e.g. `users.alice.networks`), empty when unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        // Whatever the file had in the wrong place is quoted: never a hash.
        if !self.key.is_empty() {
            write!(f, ": {}", crate::credentials::redact_hashes(&self.key))?;
        }
        write!(f, ": {}", crate::credentials::redact_hashes(&self.message))
    }
}

impl std::error::Error for PolicyError {}

struct Ctx<'a> {
    text: &'a str,
    source: &'a str,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    fn err(&self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { source: self.source.to_string(), line: self.line(span.start), key: key.into(), message: message.into() }
    }
}

// ---------------------------------------------------------------------------
// Modifiers (the session settings handed back to the broker)
// ---------------------------------------------------------------------------

/// `reg_view` values accepted in a policy (VerneMQ's built-in view).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegView {
    VmqRegTrie,
}

impl RegView {
    pub fn as_str(self) -> &'static str {
        match self {
            RegView::VmqRegTrie => "vmq_reg_trie",
        }
    }
}

/// `shared_subscription_policy` values VerneMQ understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharedSubscriptionPolicy {
    PreferLocal,
    LocalOnly,
    Random,
}

impl SharedSubscriptionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SharedSubscriptionPolicy::PreferLocal => "prefer_local",
            SharedSubscriptionPolicy::LocalOnly => "local_only",
            SharedSubscriptionPolicy::Random => "random",
        }
    }
}

/// One modifier value as the NIF encodes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModValue {
    Int(u64),
    Bool(bool),
    /// Always one of a fixed allow-list (never built from input), so the NIF
    /// may create the atom safely.
    Atom(&'static str),
    /// A binary (used for `username` when the identity comes from a certificate).
    Bytes(Vec<u8>),
    /// `{Mountpoint (charlist), ClientId (binary)}`.
    SubscriberId { mountpoint: Vec<u8>, client_id: Vec<u8> },
}

/// Session modifiers of an accepted client. `None` = leave the broker's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// Mountpoint rewrite: the new `{Mountpoint, ClientId}`.
    pub subscriber_id: Option<SubscriberKey>,
    /// Username the session registers under (certificate identity).
    pub username: Option<Vec<u8>>,
    /// `clean_session` (MQTT 3) / `clean_start` (MQTT 5).
    pub clean_session: Option<bool>,
    pub max_message_size: Option<u64>,
    pub max_message_rate: Option<u64>,
    pub max_inflight_messages: Option<u64>,
    pub retry_interval: Option<u64>,
    pub upgrade_qos: Option<bool>,
    pub reg_view: Option<RegView>,
    pub shared_subscription_policy: Option<SharedSubscriptionPolicy>,
    pub max_online_messages: Option<u64>,
    pub max_offline_messages: Option<u64>,
    pub max_connection_lifetime: Option<u64>,
    /// MQTT 5 only.
    pub session_expiry_interval: Option<u64>,
    /// MQTT 5 only.
    pub topic_alias_max: Option<u64>,
    /// MQTT 5 only.
    pub max_packet_size: Option<u64>,
}

macro_rules! overlay_fields {
    ($dst:ident, $src:ident, $($f:ident),*) => {
        $( if $src.$f.is_some() { $dst.$f = $src.$f.clone(); } )*
    };
}

impl Modifiers {
    /// Every field set in `top` replaces the one here.
    pub fn overlay(&mut self, top: &Modifiers) {
        overlay_fields!(
            self, top, subscriber_id, username, clean_session, max_message_size, max_message_rate,
            max_inflight_messages, retry_interval, upgrade_qos, reg_view, shared_subscription_policy,
            max_online_messages, max_offline_messages, max_connection_lifetime, session_expiry_interval,
            topic_alias_max, max_packet_size
        );
    }

    pub fn is_empty(&self) -> bool {
        *self == Modifiers::default()
    }

    /// The modifiers as VerneMQ expects them for `protocol`: only keys the
    /// broker acts on for that protocol (MQTT 3: proplist keys of
    /// auth_on_register; MQTT 5: map keys of auth_on_register_m5).
    pub fn entries(&self, protocol: Protocol) -> Vec<(&'static str, ModValue)> {
        let mut v = Vec::new();
        if let Some(k) = &self.subscriber_id {
            v.push((
                "subscriber_id",
                ModValue::SubscriberId { mountpoint: k.mountpoint.to_vec(), client_id: k.client_id.to_vec() },
            ));
        }
        if let Some(u) = &self.username {
            v.push(("username", ModValue::Bytes(u.clone())));
        }
        if let Some(c) = self.clean_session {
            let key = match protocol {
                Protocol::Mqtt3 => "clean_session",
                Protocol::Mqtt5 => "clean_start",
            };
            v.push((key, ModValue::Bool(c)));
        }
        let ints = [
            ("max_message_size", self.max_message_size),
            ("max_message_rate", self.max_message_rate),
            ("max_inflight_messages", self.max_inflight_messages),
            ("retry_interval", self.retry_interval),
        ];
        v.extend(ints.into_iter().filter_map(|(k, x)| x.map(|x| (k, ModValue::Int(x)))));
        if let Some(b) = self.upgrade_qos {
            v.push(("upgrade_qos", ModValue::Bool(b)));
        }
        if let Some(r) = self.reg_view {
            v.push(("reg_view", ModValue::Atom(r.as_str())));
        }
        if let Some(p) = self.shared_subscription_policy {
            v.push(("shared_subscription_policy", ModValue::Atom(p.as_str())));
        }
        let ints = [
            ("max_online_messages", self.max_online_messages),
            ("max_offline_messages", self.max_offline_messages),
            ("max_connection_lifetime", self.max_connection_lifetime),
        ];
        v.extend(ints.into_iter().filter_map(|(k, x)| x.map(|x| (k, ModValue::Int(x)))));
        if protocol == Protocol::Mqtt5 {
            let ints = [
                ("session_expiry_interval", self.session_expiry_interval),
                ("topic_alias_max", self.topic_alias_max),
                ("max_packet_size", self.max_packet_size),
            ];
            v.extend(ints.into_iter().filter_map(|(k, x)| x.map(|x| (k, ModValue::Int(x)))));
        }
        v
    }
}

/// Modifiers as written in the policy: the mountpoint is applied to the
/// connecting client's id when the decision is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModifierSet {
    pub mountpoint: Option<Vec<u8>>,
    pub session: Modifiers,
}

impl ModifierSet {
    fn overlay(&mut self, top: &ModifierSet) {
        if top.mountpoint.is_some() {
            self.mountpoint = top.mountpoint.clone();
        }
        self.session.overlay(&top.session);
    }

    /// The modifiers for one accepted client.
    pub fn resolve(&self, key: &SubscriberKey) -> Modifiers {
        let mut m = self.session.clone();
        if let Some(mp) = &self.mountpoint {
            m.subscriber_id = Some(SubscriberKey::new(mp.clone(), key.client_id.clone()));
        }
        m
    }
}

// ---------------------------------------------------------------------------
// Compiled policy
// ---------------------------------------------------------------------------

/// Per-user / per-group settings. For users these are already merged with
/// their groups (user value, else the first listed group that sets it).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `Some(list)`: the peer must be in one of these networks (empty list = anywhere).
    pub networks: Option<Vec<IpNet>>,
    pub max_sessions: Option<u32>,
    pub modifiers: ModifierSet,
}

impl Settings {
    fn overlay(&mut self, top: &Settings) {
        if top.networks.is_some() {
            self.networks = top.networks.clone();
        }
        if top.max_sessions.is_some() {
            self.max_sessions = top.max_sessions;
        }
        self.modifiers.overlay(&top.modifiers);
    }
}

#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub settings: Settings,
}

#[derive(Clone, Debug)]
pub struct User {
    pub name: Vec<u8>,
    /// Inline hash; `None` = look the user up in the password file.
    pub password: Option<PasswordHash>,
    pub groups: Vec<String>,
    /// Effective settings (merged with the groups).
    pub settings: Settings,
}

/// Which listener(s) an entry applies to. Every field given must match; an
/// empty matcher matches every connection (also those without listener
/// metadata, i.e. the 5-/6-arity hooks of older brokers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerMatch {
    pub port: Option<u16>,
    /// Canonical type: tcp, ssl, ws, wss or whatever else the broker reports.
    pub kind: Option<String>,
    pub addr: Option<IpNet>,
}

/// Listener type names as reported by different VerneMQ versions, folded to
/// one spelling: tcp/mqtt, ssl/tls/mqtts, ws/mqttws/http, wss/mqttwss/https.
pub fn canonical_listener_type(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    match t.as_str() {
        "tcp" | "mqtt" => "tcp".into(),
        "ssl" | "tls" | "mqtts" => "ssl".into(),
        "ws" | "mqttws" | "http" => "ws".into(),
        "wss" | "mqttwss" | "https" => "wss".into(),
        _ => t,
    }
}

impl ListenerMatch {
    /// Whether it names a port, type or address (an empty matcher matches
    /// every connection).
    pub fn names_a_listener(&self) -> bool {
        self.port.is_some() || self.kind.is_some() || self.addr.is_some()
    }

    pub fn matches(&self, listener: Option<&Listener>) -> bool {
        if !self.names_a_listener() {
            return true;
        }
        let Some(l) = listener else { return false };
        if let Some(p) = self.port {
            if l.port != Some(p) {
                return false;
            }
        }
        if let Some(k) = &self.kind {
            match &l.kind {
                Some(lk) if canonical_listener_type(lk) == *k => {}
                _ => return false,
            }
        }
        if let Some(net) = &self.addr {
            match l.addr {
                Some(a) if net.contains(&a.to_canonical()) => {}
                _ => return false,
            }
        }
        true
    }
}

fn any_listener(list: &[ListenerMatch], listener: Option<&Listener>) -> bool {
    list.is_empty() || list.iter().any(|m| m.matches(listener))
}

/// Peers are compared in both spellings of an IPv4 address: a network
/// written as IPv4 (`10.0.0.0/8`) matches an IPv4-mapped IPv6 peer, and one
/// written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) matches an IPv4 peer.
pub fn in_networks(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    nets.iter().any(|n| n.contains(&ip) || mapped.is_some_and(|m| n.contains(&m)))
}

#[derive(Clone, Debug, Default)]
pub struct AnonymousPolicy {
    /// `None`: use the app env `allow_anonymous`.
    pub allow: Option<bool>,
    /// Per-listener answers, first match wins; they override `allow`.
    pub listeners: Vec<(ListenerMatch, bool)>,
    pub group: Option<String>,
    /// Settings of `group` (modifiers, networks) for anonymous clients.
    pub settings: Settings,
}

impl AnonymousPolicy {
    pub fn allowed(&self, listener: Option<&Listener>, default: bool) -> bool {
        // Without listener data a per-listener refusal cannot be evaluated:
        // it holds (fail closed).
        if listener.is_none() && self.listeners.iter().any(|(m, allow)| !allow && m.names_a_listener()) {
            return false;
        }
        for (m, allow) in &self.listeners {
            if m.matches(listener) {
                return *allow;
            }
        }
        self.allow.unwrap_or(default)
    }
}

#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// Shell-like matching over bytes: `*` any run, `?` one byte, `{username}`
/// the client's username (matched literally, so `*` in a username is no wildcard).
///
/// Linear time: the pattern is cut at its stars into segments of fixed
/// length (bytes and `?`). The first segment must match at the start, the
/// last at the end, and each one in between is searched for from where the
/// previous one ended (its leftmost occurrence is always the best choice,
/// since it leaves the most room to the rest). The search is bit-parallel
/// (shift-and), so it reads each byte of the value once per 64 bytes of
/// segment: at most `MAX_MATCH_INPUT * MAX_MATCH_INPUT / 64` word steps in all,
/// whatever the pattern (the old backtracking matcher needed `n * m` steps:
/// 1.5 s of CPU for a 32 KiB username in `*{username}*`).
struct UserGlob;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GlobTok {
    Byte(u8),
    Star,
    One,
}

impl UserGlob {
    /// The pattern with `{username}` replaced, or `None` when it needs more
    /// bytes than `limit` (it then cannot match a value of that length).
    fn expand(src: &str, username: &[u8], limit: usize) -> Option<Vec<GlobTok>> {
        let parts: Vec<&str> = src.split("{username}").collect();
        let fixed: usize = parts.iter().map(|p| p.bytes().filter(|b| *b != b'*').count()).sum::<usize>()
            + username.len().saturating_mul(parts.len() - 1);
        if fixed > limit {
            return None;
        }
        let mut out = Vec::with_capacity(fixed + src.len());
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.extend(username.iter().map(|b| GlobTok::Byte(*b)));
            }
            out.extend(part.bytes().map(|b| match b {
                b'*' => GlobTok::Star,
                b'?' => GlobTok::One,
                b => GlobTok::Byte(b),
            }));
        }
        Some(out)
    }

    fn seg_eq(seg: &[GlobTok], s: &[u8]) -> bool {
        seg.len() == s.len()
            && seg.iter().zip(s).all(|(t, b)| match t {
                GlobTok::Byte(x) => x == b,
                _ => true,
            })
    }

    /// Start of the leftmost occurrence of `seg` (no stars) in `hay`.
    fn find(seg: &[GlobTok], hay: &[u8], table: &mut Vec<u64>) -> Option<usize> {
        let k = seg.len();
        if k == 0 {
            return Some(0);
        }
        if k > hay.len() {
            return None;
        }
        let words = k.div_ceil(64);
        // Rows 0..=255: positions holding that byte; row 256: `?` positions.
        table.clear();
        table.resize(257 * words, 0);
        for (j, t) in seg.iter().enumerate() {
            let row = match t {
                GlobTok::Byte(b) => usize::from(*b),
                _ => 256,
            };
            table[row * words + j / 64] |= 1u64 << (j % 64);
        }
        let mut d = vec![0u64; words];
        let (last_w, last_bit) = ((k - 1) / 64, 1u64 << ((k - 1) % 64));
        let any = 256 * words;
        for (i, &c) in hay.iter().enumerate() {
            let row = usize::from(c) * words;
            let mut carry = 1u64;
            for w in 0..words {
                let next = d[w] >> 63;
                d[w] = ((d[w] << 1) | carry) & (table[row + w] | table[any + w]);
                carry = next;
            }
            if d[last_w] & last_bit != 0 {
                return Some(i + 1 - k);
            }
        }
        None
    }

    fn matches_toks(toks: &[GlobTok], s: &[u8]) -> bool {
        let segs: Vec<&[GlobTok]> = toks.split(|t| *t == GlobTok::Star).collect();
        let (first, last) = (segs[0], segs[segs.len() - 1]);
        if segs.len() == 1 {
            return Self::seg_eq(first, s);
        }
        if first.len() + last.len() > s.len()
            || !Self::seg_eq(first, &s[..first.len()])
            || !Self::seg_eq(last, &s[s.len() - last.len()..])
        {
            return false;
        }
        let (mut pos, end) = (first.len(), s.len() - last.len());
        let mut table = Vec::new();
        for seg in &segs[1..segs.len() - 1] {
            match Self::find(seg, &s[pos..end], &mut table) {
                Some(i) => pos += i + seg.len(),
                None => return false,
            }
        }
        true
    }
}

/// A client-id pattern bound to the username, e.g. `"{username}-*"`.
/// A username or client id longer than [`MAX_MATCH_INPUT`] never matches (the
/// check must match, so such a client is refused).
#[derive(Clone, Debug)]
pub struct BoundPattern {
    pub source: String,
}

impl BoundPattern {
    pub fn matches(&self, username: &[u8], client_id: &[u8]) -> bool {
        if username.len() > MAX_MATCH_INPUT || client_id.len() > MAX_MATCH_INPUT {
            return false;
        }
        match UserGlob::expand(&self.source, username, client_id.len()) {
            Some(toks) => UserGlob::matches_toks(&toks, client_id),
            None => false,
        }
    }
}

/// A compiled policy regex (anchored: it must match the whole value) that
/// never runs on more than [`MAX_MATCH_INPUT`] bytes.
#[derive(Clone, Debug)]
pub struct Pattern {
    re: Regex,
}

impl Pattern {
    /// `Some(matched)`, or `None` for a value longer than [`MAX_MATCH_INPUT`],
    /// which is not looked at: the caller decides what that means, failing
    /// closed (a deny rule applies, an allow rule does not, a required
    /// pattern refuses).
    pub fn matches(&self, value: &[u8]) -> Option<bool> {
        (value.len() <= MAX_MATCH_INPUT).then(|| self.re.is_match(value))
    }

    /// For checks the value must pass: a value longer than
    /// [`MAX_MATCH_INPUT`] does not match.
    pub fn is_match(&self, value: &[u8]) -> bool {
        self.matches(value) == Some(true)
    }

    pub fn as_str(&self) -> &str {
        self.re.as_str()
    }
}

#[derive(Clone, Debug)]
pub struct ReservedPrefix {
    pub prefix: Vec<u8>,
    /// Users (by name) and groups whose members may use the prefix.
    pub users: HashSet<Vec<u8>>,
    pub groups: HashSet<String>,
}

#[derive(Clone, Debug)]
pub struct ClientIdPolicy {
    pub max_length: Option<usize>,
    /// Allowed bytes as inclusive ranges (ASCII).
    pub allowed_chars: Option<Vec<(u8, u8)>>,
    pub pattern: Option<Pattern>,
    pub must_start_with_username: bool,
    pub username_pattern: Option<BoundPattern>,
    pub reserved: Vec<ReservedPrefix>,
    /// A client id whose session (online or offline) belongs to one user
    /// cannot be taken by another (default on).
    pub bind_to_user: bool,
}

/// No constraints, but the client id binding: it is on unless a policy
/// turns it off, also with no policy file at all.
impl Default for ClientIdPolicy {
    fn default() -> Self {
        ClientIdPolicy {
            max_length: None,
            allowed_chars: None,
            pattern: None,
            must_start_with_username: false,
            username_pattern: None,
            reserved: Vec::new(),
            bind_to_user: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct UsernamePolicy {
    pub max_length: Option<usize>,
    pub pattern: Option<Pattern>,
    pub deny: HashSet<Vec<u8>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Skip the remaining screening steps; go on to identity and credentials.
    Allow,
    /// Refuse with the rule's reason (and code, default `not_authorized`).
    Deny,
    /// Answer `next`: let the next plugin in the chain decide.
    Next,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    Mqtt3,
    Mqtt5,
}

/// What a rule matches on; every condition given must hold.
#[derive(Clone, Debug, Default)]
pub struct When {
    pub peer: Option<Vec<IpNet>>,
    pub listener: Option<Vec<ListenerMatch>>,
    pub client_id: Option<Pattern>,
    pub username: Option<Pattern>,
    pub anonymous: Option<bool>,
    pub protocol: Option<Protocol>,
    pub has_cert: Option<bool>,
    /// What a regex condition answers for a value longer than
    /// [`MAX_MATCH_INPUT`] (never looked at): true for `deny` rules, so an
    /// over-long value cannot escape a deny, false for `allow` and `next`, so
    /// it cannot be admitted or passed on by one.
    pub overlong_matches: bool,
}

/// The facts of a connect a rule looks at.
pub struct MatchInput<'a> {
    pub peer: Option<IpAddr>,
    pub listener: Option<&'a Listener>,
    pub client_id: &'a [u8],
    pub username: Option<&'a [u8]>,
    pub protocol: Protocol,
    pub has_cert: bool,
}

impl When {
    /// Whether a listener condition is there that the connect's data cannot
    /// answer (a broker that sends no listener data).
    pub fn needs_listener(&self) -> bool {
        self.listener.as_ref().is_some_and(|ls| ls.iter().any(ListenerMatch::names_a_listener))
    }

    /// As [`When::matches`], but a listener condition that cannot be
    /// evaluated (no listener data) counts as met: a deny rule fails closed.
    pub fn matches_failing_closed(&self, m: &MatchInput<'_>) -> bool {
        self.matches_with(m, true)
    }

    pub fn matches(&self, m: &MatchInput<'_>) -> bool {
        self.matches_with(m, false)
    }

    fn matches_with(&self, m: &MatchInput<'_>, unknown_listener_matches: bool) -> bool {
        if let Some(nets) = &self.peer {
            match m.peer {
                Some(ip) if in_networks(nets, ip) => {}
                _ => return false,
            }
        }
        if let Some(ls) = &self.listener {
            let unknown = m.listener.is_none() && unknown_listener_matches;
            if !unknown && !ls.iter().any(|l| l.matches(m.listener)) {
                return false;
            }
        }
        if let Some(re) = &self.client_id {
            if !re.matches(m.client_id).unwrap_or(self.overlong_matches) {
                return false;
            }
        }
        if let Some(re) = &self.username {
            match m.username {
                Some(u) if re.matches(u).unwrap_or(self.overlong_matches) => {}
                _ => return false,
            }
        }
        if let Some(a) = self.anonymous {
            if a != m.username.is_none() {
                return false;
            }
        }
        if let Some(p) = self.protocol {
            if p != m.protocol {
                return false;
            }
        }
        if let Some(c) = self.has_cert {
            if c != m.has_cert {
                return false;
            }
        }
        true
    }
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub reason: String,
    pub code: RefusalCode,
    pub when: When,
}

/// Where a certificate identity is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertField {
    /// Subject common name.
    Cn,
    SanDns,
    SanEmail,
    SanUri,
    /// First DNS, e-mail or URI subject alternative name.
    San,
}

#[derive(Clone, Debug)]
pub struct CertIdentity {
    pub listeners: Vec<ListenerMatch>,
    pub from: CertField,
    pub required: bool,
    pub username_must_match: bool,
    pub require_known: bool,
    pub group: Option<String>,
    pub settings: Settings,
}

/// A parsed, validated policy. Immutable once built.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub source: String,
    /// False for [`Policy::empty`] (no policy file configured).
    pub configured: bool,
    pub anonymous: AnonymousPolicy,
    pub network: NetworkPolicy,
    pub client_id: ClientIdPolicy,
    pub username: UsernamePolicy,
    pub rules: Vec<Rule>,
    pub cert_identity: Vec<CertIdentity>,
    pub groups: HashMap<String, Group>,
    pub users: HashMap<Vec<u8>, User>,
}

impl Policy {
    /// No policy file: nothing is screened, no users are known.
    pub fn empty() -> Policy {
        Policy::default()
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let source = path.display().to_string();
        let err = |message: String| PolicyError { source: source.clone(), line: 0, key: String::new(), message };
        let (bytes, _) = crate::files::read_regular(path, MAX_POLICY_FILE_SIZE).map_err(err)?;
        let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".to_string()))?;
        Policy::parse(&text, &source)
    }

    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let ctx = Ctx { text, source };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| ctx.line(s.start)).unwrap_or(0);
            PolicyError { source: source.to_string(), line, key: String::new(), message: e.message().trim().to_string() }
        })?;
        compile(&ctx, raw)
    }

    pub fn user(&self, name: &[u8]) -> Option<&User> {
        self.users.get(name)
    }

    /// Whether `user` (by name) is a member of `group`.
    pub fn in_group(&self, user: &[u8], group: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.groups.iter().any(|g| g == group))
    }
}

// ---------------------------------------------------------------------------
// Raw (serde) model
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
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

fn net(ctx: &Ctx<'_>, s: &Spanned<String>, key: &str) -> Result<IpNet, PolicyError> {
    let v = s.get_ref().trim();
    if let Ok(n) = v.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(a) = v.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    Err(ctx.err(s.span(), key, format!("not an IP network in CIDR form (e.g. 10.0.0.0/8 or 2001:db8::/32): {v:?}")))
}

fn nets(ctx: &Ctx<'_>, list: &[Spanned<String>], key: &str) -> Result<Vec<IpNet>, PolicyError> {
    list.iter().map(|s| net(ctx, s, key)).collect()
}

fn regex(ctx: &Ctx<'_>, s: &Spanned<String>, key: &str) -> Result<Pattern, PolicyError> {
    let src = s.get_ref();
    if src.len() > MAX_PATTERN_LEN {
        return Err(ctx.err(s.span(), key, format!("pattern longer than {MAX_PATTERN_LEN} bytes")));
    }
    RegexBuilder::new(&format!("^(?:{src})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map(|re| Pattern { re })
        .map_err(|e| {
            let msg = match e {
                regex::Error::CompiledTooBig(_) => "pattern compiles to a program that is too large".to_string(),
                other => format!("invalid regular expression: {}", other.to_string().lines().last().unwrap_or("")),
            };
            ctx.err(s.span(), key, msg)
        })
}

fn listener(ctx: &Ctx<'_>, port: Option<u16>, kind: &Option<String>, addr: &Option<Spanned<String>>, key: &str) -> Result<ListenerMatch, PolicyError> {
    Ok(ListenerMatch {
        port,
        kind: kind.as_deref().map(canonical_listener_type),
        addr: addr.as_ref().map(|a| net(ctx, a, &format!("{key}.addr"))).transpose()?,
    })
}

fn char_ranges(ctx: &Ctx<'_>, s: &Spanned<String>, key: &str) -> Result<Vec<(u8, u8)>, PolicyError> {
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

fn modifiers(ctx: &Ctx<'_>, raw: &Option<RawModifiers>, key: &str) -> Result<ModifierSet, PolicyError> {
    let Some(r) = raw else { return Ok(ModifierSet::default()) };
    let int = |v: &Option<Spanned<u64>>, name: &str, min: u64, max: u64| -> Result<Option<u64>, PolicyError> {
        match v {
            None => Ok(None),
            Some(s) if (min..=max).contains(s.get_ref()) => Ok(Some(*s.get_ref())),
            Some(s) => Err(ctx.err(s.span(), format!("{key}.{name}"), format!("must be between {min} and {max}"))),
        }
    };
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
            retry_interval: int(&r.retry_interval, "retry_interval", 1, BIG)?,
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
    ctx: &Ctx<'_>,
    groups: &'a HashMap<String, Group>,
    name: &Spanned<String>,
    key: &str,
) -> Result<&'a Group, PolicyError> {
    groups.get(name.get_ref()).ok_or_else(|| ctx.err(name.span(), key, format!("undefined group {:?}", name.get_ref())))
}

fn compile(ctx: &Ctx<'_>, raw: RawPolicy) -> Result<Policy, PolicyError> {
    if let Some(v) = &raw.version {
        if *v.get_ref() != 1 {
            return Err(ctx.err(v.span(), "version", "only version = 1 is supported"));
        }
    }
    // Groups first: everything else may refer to them.
    let mut groups = HashMap::new();
    for (name, g) in &raw.groups {
        let key = format!("groups.{}", name.get_ref());
        let settings = Settings {
            networks: g.networks.as_ref().map(|n| nets(ctx, n, &format!("{key}.networks"))).transpose()?,
            max_sessions: g.max_sessions,
            modifiers: modifiers(ctx, &g.modifiers, &format!("{key}.modifiers"))?,
        };
        groups.insert(name.get_ref().clone(), Group { name: name.get_ref().clone(), settings });
    }

    let mut users = HashMap::new();
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
            client_id.username_pattern = Some(BoundPattern { source: p.get_ref().clone() });
        }
        for (i, r) in c.reserved.iter().enumerate() {
            let key = format!("client_id.reserved[{i}]");
            if r.prefix.get_ref().is_empty() {
                return Err(ctx.err(r.prefix.span(), format!("{key}.prefix"), "empty prefix"));
            }
            let mut gs = HashSet::new();
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

impl CertIdentity {
    /// Whether the entry applies to a connect on `listener`. Without
    /// listener data an entry that names listeners applies when it is
    /// `required` (fail closed) or when the client sent a certificate.
    pub fn applies(&self, listener: Option<&Listener>, has_cert: bool) -> bool {
        if listener.is_none() && self.listeners.iter().any(ListenerMatch::names_a_listener) {
            return self.required || has_cert;
        }
        any_listener(&self.listeners, listener)
    }
}

impl Policy {
    /// Whether any entry depends on the listener a client connected to.
    pub fn has_listener_conditions(&self) -> bool {
        self.rules.iter().any(|r| r.when.needs_listener())
            || self.cert_identity.iter().any(|c| c.listeners.iter().any(ListenerMatch::names_a_listener))
            || self.anonymous.listeners.iter().any(|(m, _)| m.names_a_listener())
    }
}

#[cfg(test)]
mod tests;
