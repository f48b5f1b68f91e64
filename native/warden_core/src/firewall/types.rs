//! The firewall's vocabulary: its settings, a connect's request, the
//! decision and refusal codes, the registry's view it asks (`LiveSessions`),
//! the steps of a login, and the ban list's types.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;

use super::*;
pub use crate::types::{Listener, RefusalCode};
use crate::types::Key;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownUser {
    Next,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultDecision {
    Allow,
    Deny,
    Next,
}

/// Engine settings (the app env of DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FirewallConfig {
    pub unknown_user: UnknownUser,
    /// When neither a policy nor a password file knows the client.
    pub default_decision: DefaultDecision,
    pub allow_anonymous: bool,
    /// Connects per second per peer address; 0 = off.
    pub rate_per_peer: f64,
    pub burst_per_peer: u32,
    /// Connects per second per username; 0 = off.
    pub rate_per_user: f64,
    pub burst_per_user: u32,
    /// Failed logins within `ban_window_ms` that ban an address (or, with
    /// `ban_users`, a username); 0 = off.
    pub ban_threshold: u32,
    /// Also ban usernames (known and unknown alike) after failed logins.
    /// Off by default: a stranger could otherwise lock a user out.
    pub ban_users: bool,
    pub ban_window_ms: u64,
    pub ban_duration_ms: u64,
    pub cache_size: usize,
    pub cache_ok_ttl_ms: u64,
    pub cache_fail_ttl_ms: u64,
    /// Bound of each limiter and ban table.
    pub max_tracked: usize,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            unknown_user: UnknownUser::Next,
            default_decision: DefaultDecision::Next,
            allow_anonymous: false,
            rate_per_peer: 0.0,
            burst_per_peer: 10,
            rate_per_user: 0.0,
            burst_per_user: 10,
            ban_threshold: 10,
            ban_users: false,
            ban_window_ms: 60_000,
            ban_duration_ms: 300_000,
            cache_size: 10_000,
            cache_ok_ttl_ms: 60_000,
            cache_fail_ttl_ms: 5_000,
            max_tracked: 100_000,
        }
    }
}

/// A connect as auth_on_register sees it. The NIF's decoder borrows the
/// client id, username and certificate from the broker's terms for the
/// call (a copy would be a malloc and a free on cold memory in every
/// connect, tests/allocations.rs); a login kept for a later step owns them
/// ([`AuthRequest::into_owned`]).
#[derive(Clone, Debug)]
pub struct AuthRequest<'a> {
    pub key: Key<'a>,
    pub peer: Option<Peer>,
    /// `None` for an anonymous client (`undefined`).
    pub username: Option<Cow<'a, [u8]>>,
    pub has_password: bool,
    pub clean_session: bool,
    pub protocol: Protocol,
    pub listener: Option<Listener>,
    /// DER of the client certificate, when the listener forwards it.
    pub client_cert: Option<Cow<'a, [u8]>>,
    /// The Maximum Packet Size an MQTT 5 client sent in its CONNECT.
    pub client_max_packet_size: Option<u32>,
    /// The Session Expiry Interval an MQTT 5 client asked for in its
    /// CONNECT (0 when it sent none); `None` without CONNECT properties.
    pub client_session_expiry: Option<u32>,
}

impl AuthRequest<'_> {
    /// The same request owning its bytes, to be kept past the call.
    pub fn into_owned(self) -> AuthRequest<'static> {
        AuthRequest {
            key: self.key.into_owned_key(),
            username: self.username.map(|u| Cow::Owned(u.into_owned())),
            client_cert: self.client_cert.map(|c| Cow::Owned(c.into_owned())),
            peer: self.peer,
            has_password: self.has_password,
            clean_session: self.clean_session,
            protocol: self.protocol,
            listener: self.listener,
            client_max_packet_size: self.client_max_packet_size,
            client_session_expiry: self.client_session_expiry,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept(Mods),
    Refuse(Refusal),
    Next,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    /// `step-or-rule: human reason`. Never contains a password or hash.
    pub reason: String,
}

/// Session counts from the registry.
pub trait LiveSessions {
    fn live_sessions_of_user(&self, username: &[u8]) -> usize;
    /// Whether `key` is one of the live sessions counted for `username`: a
    /// reconnect of that client id takes its own session over, so it does not
    /// add one. Default: unknown (false).
    fn has_live_session(&self, _username: &[u8], _key: &Key<'_>) -> bool {
        false
    }
    /// The user whose session (online or offline) `key` is, when that is a
    /// named user other than `identity`; `None` for no session, an
    /// anonymous one or `identity`'s own. Compared in place: only a
    /// refusal copies the name. Default: none.
    fn other_owner(&self, _key: &Key<'_>, _identity: Option<&[u8]>) -> Option<Vec<u8>> {
        None
    }
}

/// No registry: every user has 0 sessions.
pub struct NoSessions;

impl LiveSessions for NoSessions {
    fn live_sessions_of_user(&self, _username: &[u8]) -> usize {
        0
    }
}

// The Done variant is moved once, straight to the caller.
#[allow(clippy::large_enum_variant)]
pub enum Step<'a> {
    /// The decision, and the request given back (the caller registers an
    /// accepted client from it without having kept a copy).
    Done(Decision, AuthRequest<'a>),
    /// Not boxed: most logins decide in this same call, and a box would be
    /// a malloc and a free on memory out of the CPU caches in each of them
    /// (tests/allocations.rs). A login kept for a later step is boxed then
    /// (warden/pending.rs).
    NeedPassword(PendingAuth<'a>),
}

#[derive(Debug, PartialEq, Eq)]
// Moved once or twice per connect; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum PasswordStep {
    Done(Decision),
    NeedSlowHash,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanTarget {
    /// IPv4 /32 or IPv6 /64.
    Peer(IpNet),
    Username(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanView {
    pub target: BanTarget,
    pub until: Millis,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanSelector {
    All,
    Peer(IpAddr),
    Username(Vec<u8>),
}

