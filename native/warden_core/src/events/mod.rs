//! The session lifecycle as events: their kinds and fields (schema version
//! [`SCHEMA_VERSION`], documented in docs/OPERATIONS.md "Events"), built
//! where the registry and the firewall decide, queued in a byte-bounded
//! [`EventQueue`] and encoded as JSON when the Erlang side drains them.

mod json;
mod queue;
#[cfg(test)]
mod tests;

pub use json::encode_json;
pub use queue::{EventQueue, EventQueueStats};

use crate::firewall::{AuthRequest, Decision};
use crate::policy::Modifiers;
use crate::types::{Listener, Millis, Peer, Protocol, RefusalCode, SubscriberKey};

/// Bumped on any change of a field's name, type or meaning; new kinds and
/// new optional fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Accepted,
    Refused,
    Registered,
    WokeUp,
    TakenOver,
    Offline,
    Gone,
    Expired,
    Discarded,
    Abandoned,
    Vanished,
    Kicked,
    ExpiredCredentials,
}

impl EventKind {
    pub const ALL: [EventKind; 13] = [
        EventKind::Accepted,
        EventKind::Refused,
        EventKind::Registered,
        EventKind::WokeUp,
        EventKind::TakenOver,
        EventKind::Offline,
        EventKind::Gone,
        EventKind::Expired,
        EventKind::Discarded,
        EventKind::Abandoned,
        EventKind::Vanished,
        EventKind::Kicked,
        EventKind::ExpiredCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Refused => "refused",
            EventKind::Registered => "registered",
            EventKind::WokeUp => "woke_up",
            EventKind::TakenOver => "taken_over",
            EventKind::Offline => "offline",
            EventKind::Gone => "gone",
            EventKind::Expired => "expired",
            EventKind::Discarded => "discarded",
            EventKind::Abandoned => "abandoned",
            EventKind::Vanished => "vanished",
            EventKind::Kicked => "kicked",
            EventKind::ExpiredCredentials => "expired_credentials",
        }
    }
}

/// Where the identity of an accepted client came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    Username,
    Certificate,
    Anonymous,
}

impl IdentitySource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentitySource::Username => "username",
            IdentitySource::Certificate => "certificate",
            IdentitySource::Anonymous => "anonymous",
        }
    }
}

/// What only some kinds carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    None,
    Accepted {
        identity: IdentitySource,
        listener: Option<Listener>,
        /// Bit i set: modifier `MODIFIER_NAMES[i]` was applied.
        modifiers: u32,
        clean_session: bool,
        protocol: Protocol,
    },
    /// `rule` is the firewall's `step-or-rule: reason` text, which never
    /// holds a password or hash.
    Refused { code: RefusalCode, rule: Box<str>, protocol: Protocol },
    Ended {
        started: Millis,
        /// For `taken_over`: the session number that took over, when known.
        by_session: Option<u64>,
        /// For `kicked`: who asked.
        kicked_by: Option<Box<str>>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: SubscriberKey,
    /// The session number (registry generation); `None` where it is not
    /// known yet (a refused connect, a wakeup no connect has claimed).
    pub session: Option<u64>,
    pub at: Millis,
    pub peer: Option<Peer>,
    pub username: Option<Box<[u8]>>,
    pub detail: Detail,
}

impl Event {
    /// Bytes the event holds, as the queue's bound counts them.
    pub fn size(&self) -> usize {
        let detail = match &self.detail {
            Detail::Accepted { listener, .. } => listener.as_ref().and_then(|l| l.kind.as_ref()).map_or(0, |k| k.len()),
            Detail::Refused { rule, .. } => rule.len(),
            Detail::Ended { kicked_by, .. } => kicked_by.as_ref().map_or(0, |b| b.len()),
            Detail::None => 0,
        };
        std::mem::size_of::<Event>()
            + self.key.mountpoint.len()
            + self.key.client_id.len()
            + self.username.as_ref().map_or(0, |u| u.len())
            + detail
    }

    /// The event of a connect our auth decided: `accepted` (with the
    /// session number the registry gave it) or `refused`; `None` for
    /// `next` (another plugin decides).
    pub fn of_decision(req: &AuthRequest, decision: &Decision, session: Option<u64>, now: Millis) -> Option<Event> {
        let (kind, key, username, detail) = match decision {
            Decision::Next => return None,
            Decision::Accept(mods) => {
                let username = mods.username.as_deref().or(req.username.as_deref());
                let identity = match (mods.username.is_some(), req.client_cert.is_some(), username.is_some()) {
                    (true, true, _) => IdentitySource::Certificate,
                    (_, _, true) => IdentitySource::Username,
                    _ => IdentitySource::Anonymous,
                };
                let detail = Detail::Accepted {
                    identity,
                    listener: req.listener.clone().filter(|l| l != &Listener::default()),
                    modifiers: modifier_bits(mods),
                    clean_session: mods.clean_session.unwrap_or(req.clean_session),
                    protocol: req.protocol,
                };
                let key = mods.subscriber_id.clone().unwrap_or_else(|| req.key.to_owned_key());
                (EventKind::Accepted, key, username, detail)
            }
            Decision::Refuse(r) => {
                let detail = Detail::Refused { code: r.code, rule: r.reason.as_str().into(), protocol: req.protocol };
                (EventKind::Refused, req.key.to_owned_key(), req.username.as_deref(), detail)
            }
        };
        Some(Event { kind, key, session, at: now, peer: req.peer, username: username.map(Box::from), detail })
    }
}

/// The names of the modifiers an `accepted` event lists, in bit order.
pub const MODIFIER_NAMES: [&str; 16] = [
    "subscriber_id",
    "username",
    "clean_session",
    "max_message_size",
    "max_message_rate",
    "max_inflight_messages",
    "retry_interval",
    "upgrade_qos",
    "reg_view",
    "shared_subscription_policy",
    "max_online_messages",
    "max_offline_messages",
    "max_connection_lifetime",
    "session_expiry_interval",
    "topic_alias_max",
    "max_packet_size",
];

/// A bit mask rather than a list: no allocation on the hook path.
fn modifier_bits(m: &Modifiers) -> u32 {
    let set = [
        m.subscriber_id.is_some(),
        m.username.is_some(),
        m.clean_session.is_some(),
        m.max_message_size.is_some(),
        m.max_message_rate.is_some(),
        m.max_inflight_messages.is_some(),
        m.retry_interval.is_some(),
        m.upgrade_qos.is_some(),
        m.reg_view.is_some(),
        m.shared_subscription_policy.is_some(),
        m.max_online_messages.is_some(),
        m.max_offline_messages.is_some(),
        m.max_connection_lifetime.is_some(),
        m.session_expiry_interval.is_some(),
        m.topic_alias_max.is_some(),
        m.max_packet_size.is_some(),
    ];
    set.iter().enumerate().fold(0, |bits, (i, &on)| bits | (u32::from(on) << i))
}
