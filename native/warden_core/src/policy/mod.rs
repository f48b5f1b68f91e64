//! The policy file: a TOML document an operator writes by hand (see
//! `docs/POLICY.md` and `docs/policy.example.toml`), parsed into an immutable
//! [`Policy`] that the firewall evaluates.
//!
//! Parsing is strict: unknown keys, malformed CIDRs, regexes that are too big,
//! out-of-range modifier values and references to undefined groups are errors
//! that name the file, the line and the key. Nothing here is evaluated lazily:
//! a policy that parses can be evaluated without further failure.

use std::collections::{HashMap, HashSet};

/// The policy's sets and maps looked up by a connect's username (users,
/// `username.deny`, reserved prefixes' users and groups): keyed `ahash`,
/// as the password file and the registry. Std's SipHash was a second hash
/// function's code in every connect, cold there, and slower on short names.
pub type NameSet<T> = HashSet<T, ahash::RandomState>;
pub type NameMap<K, V> = HashMap<K, V, ahash::RandomState>;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;

use serde::Deserialize;

use crate::credentials::PasswordHash;
use crate::types::{Listener, Protocol, RefusalCode, SubscriberKey};

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

struct SourceText<'a> {
    text: &'a str,
    source: &'a str,
}

impl SourceText<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    /// The first array or inline table that is still open at the end of the
    /// text, and its line. The TOML parser notices one only where the next
    /// thing cannot belong to it, often lines later. Brackets inside strings
    /// and comments do not count; a table header is closed on its own line.
    fn unclosed_bracket(&self) -> Option<(&'static str, usize)> {
        let bytes = self.text.as_bytes();
        let mut open: Vec<(u8, usize)> = Vec::new();
        let (mut i, mut line) = (0, 1);
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => line += 1,
                b'#' => {
                    while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                        i += 1;
                    }
                }
                quote @ (b'"' | b'\'') => {
                    let triple = bytes[i..].starts_with(&[quote; 3]);
                    let (escapes, len) = (quote == b'"', if triple { 3 } else { 1 });
                    i += len;
                    while i < bytes.len() && !(bytes[i..].starts_with(&[quote; 3][..len])) {
                        if bytes[i] == b'\n' {
                            if !triple {
                                break; // an unterminated one-line string: the parser says so
                            }
                            line += 1;
                        }
                        if escapes && bytes[i] == b'\\' {
                            i += 1; // the escaped byte, which may end a line
                            line += usize::from(bytes.get(i) == Some(&b'\n'));
                        }
                        i += 1;
                    }
                    i += len - 1;
                }
                b @ (b'[' | b'{') => open.push((b, line)),
                b']' | b'}' => {
                    open.pop();
                }
                _ => {}
            }
            i += 1;
        }
        // A header's brackets close on their own line, so what is left open
        // at the end was opened in a value.
        open.first().map(|&(b, line)| (if b == b'[' { "array" } else { "inline table" }, line))
    }

    fn err(&self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { source: self.source.to_string(), line: self.line(span.start), key: key.into(), message: message.into() }
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
    /// Seconds a session of the user may last before the plugin itself
    /// disconnects it (credential lifetime, ending `expired_credentials`).
    pub max_session_age: Option<u64>,
    pub modifiers: ModifierSet,
}

impl Settings {
    pub(super) fn overlay(&mut self, top: &Settings) {
        if top.networks.is_some() {
            self.networks = top.networks.clone();
        }
        if top.max_sessions.is_some() {
            self.max_sessions = top.max_sessions;
        }
        if top.max_session_age.is_some() {
            self.max_session_age = top.max_session_age;
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
        if self.refuses_without_listener_data(listener) {
            return false;
        }
        for (m, allow) in &self.listeners {
            if m.matches(listener) {
                return *allow;
            }
        }
        self.allow.unwrap_or(default)
    }

    /// Why [`AnonymousPolicy::allowed`] said no: "on this listener" only
    /// when the policy has per-listener entries and the broker passed the
    /// listener (a real 2.1 node passes none).
    pub fn refusal_reason(&self, listener: Option<&Listener>) -> &'static str {
        if self.refuses_without_listener_data(listener) {
            "anonymous: a per-listener refusal holds when the broker passes no listener data"
        } else if listener.is_some() && !self.listeners.is_empty() {
            "anonymous: clients without a username are not allowed on this listener"
        } else {
            "anonymous: clients without a username are not allowed"
        }
    }

    /// Without listener data a per-listener refusal cannot be evaluated:
    /// it holds (fail closed).
    fn refuses_without_listener_data(&self, listener: Option<&Listener>) -> bool {
        listener.is_none() && self.listeners.iter().any(|(m, allow)| !allow && m.names_a_listener())
    }
}

#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

#[derive(Clone, Debug)]
pub struct ReservedPrefix {
    pub prefix: Vec<u8>,
    /// Users (by name) and groups whose members may use the prefix.
    pub users: NameSet<Vec<u8>>,
    pub groups: NameSet<String>,
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
    pub deny: NameSet<Vec<u8>>,
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
    pub groups: NameMap<String, Group>,
    pub users: NameMap<Vec<u8>, User>,
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
        let ctx = SourceText { text, source };
        let raw: compile::RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| ctx.line(s.start)).unwrap_or(0);
            // One line in the log: the parser's message may have several.
            let mut message = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join(", ");
            if let Some((what, opened)) = ctx.unclosed_bracket().filter(|&(_, opened)| opened < line) {
                message.push_str(&format!("; the {what} opened on line {opened} is not closed"));
            }
            PolicyError { source: source.to_string(), line, key: String::new(), message }
        })?;
        compile::compile(&ctx, raw)
    }

    pub fn user(&self, name: &[u8]) -> Option<&User> {
        self.users.get(name)
    }

    /// Whether any user has a `max_sessions` (their own or a group's).
    pub fn limits_sessions(&self) -> bool {
        self.users.values().any(|u| u.settings.max_sessions.is_some())
    }

    /// Whether `user` (by name) is a member of `group`.
    pub fn in_group(&self, user: &[u8], group: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.groups.iter().any(|g| g == group))
    }
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

mod compile;
mod matching;
mod modifiers;
mod simple_pattern;

pub use matching::*;
pub use modifiers::*;

#[cfg(test)]
mod tests;
