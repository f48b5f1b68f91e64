//! Modifiers: the session settings a policy hands back to the broker with
//! an accept (the keys VerneMQ acts on, typed and range-checked).

use serde::Deserialize;

use super::*;
use crate::types::Key;

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
    /// Seconds; the MQTT 3 answer gives VerneMQ milliseconds.
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

/// No modifier: what most accepts hand back.
const NO_MODIFIERS: Modifiers = Modifiers {
    subscriber_id: None,
    username: None,
    clean_session: None,
    max_message_size: None,
    max_message_rate: None,
    max_inflight_messages: None,
    retry_interval: None,
    upgrade_qos: None,
    reg_view: None,
    shared_subscription_policy: None,
    max_online_messages: None,
    max_offline_messages: None,
    max_connection_lifetime: None,
    session_expiry_interval: None,
    topic_alias_max: None,
    max_packet_size: None,
};

/// An accept's modifiers, boxed only when there are any. A decision moves
/// through every step of a login, and with the 224 bytes of `Modifiers`
/// inline each move was a copy of four cache lines, in a connect where the
/// stack they land on is not in the CPU cache; most accepts have none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mods(Option<Box<Modifiers>>);

impl From<Modifiers> for Mods {
    fn from(m: Modifiers) -> Mods {
        Mods((!m.is_empty()).then(|| Box::new(m)))
    }
}

impl std::ops::Deref for Mods {
    type Target = Modifiers;
    fn deref(&self) -> &Modifiers {
        self.0.as_deref().unwrap_or(&NO_MODIFIERS)
    }
}

macro_rules! overlay_fields {
    ($dst:ident, $src:ident, $($f:ident),*) => {
        $( if $src.$f.is_some() { $dst.$f = $src.$f.clone(); } )*
    };
}

impl Modifiers {
    /// The subscriber id the client registers with: after a mountpoint
    /// rewrite, the rewritten one. The registry keeps the session under it.
    pub fn registered_key<'a, 'k>(&'a self, requested: &'a Key<'k>) -> &'a Key<'k> {
        self.subscriber_id.as_ref().unwrap_or(requested)
    }

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
        *self == NO_MODIFIERS
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
        push_ints(&mut v, &[("max_message_size", self.max_message_size), ("max_message_rate", self.max_message_rate)]);
        // VerneMQ's MQTT 5 session has neither key (docs/VERNEMQ.md): the
        // in-flight limit is the client's receive maximum there, which the
        // broker lowers to this value; 0 (no limit to MQTT 3) sets none, and
        // MQTT 5 forbids the retries that retry_interval times.
        match protocol {
            // The session takes retry_interval in milliseconds (its own
            // setting from vernemq.conf is seconds, multiplied there).
            Protocol::Mqtt3 => push_ints(
                &mut v,
                &[
                    ("max_inflight_messages", self.max_inflight_messages),
                    ("retry_interval", self.retry_interval.map(|s| s * 1000)),
                ],
            ),
            Protocol::Mqtt5 => push_ints(&mut v, &[("fc_receive_max_client", self.max_inflight_messages.filter(|n| *n > 0))]),
        }
        if let Some(b) = self.upgrade_qos {
            v.push(("upgrade_qos", ModValue::Bool(b)));
        }
        if let Some(r) = self.reg_view {
            v.push(("reg_view", ModValue::Atom(r.as_str())));
        }
        if let Some(p) = self.shared_subscription_policy {
            v.push(("shared_subscription_policy", ModValue::Atom(p.as_str())));
        }
        push_ints(
            &mut v,
            &[
                ("max_online_messages", self.max_online_messages),
                ("max_offline_messages", self.max_offline_messages),
                ("max_connection_lifetime", self.max_connection_lifetime),
            ],
        );
        if protocol == Protocol::Mqtt5 {
            push_ints(
                &mut v,
                &[
                    ("session_expiry_interval", self.session_expiry_interval),
                    ("topic_alias_max", self.topic_alias_max),
                    ("max_packet_size", self.max_packet_size),
                ],
            );
        }
        v
    }
}

/// The integer entries of `list` that are set, in order.
fn push_ints(v: &mut Vec<(&'static str, ModValue)>, list: &[(&'static str, Option<u64>)]) {
    v.extend(list.iter().filter_map(|&(k, x)| x.map(|x| (k, ModValue::Int(x)))));
}

/// Modifiers as written in the policy: the mountpoint is applied to the
/// connecting client's id when the decision is made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModifierSet {
    pub mountpoint: Option<Vec<u8>>,
    pub session: Modifiers,
}

impl ModifierSet {
    pub(super) fn overlay(&mut self, top: &ModifierSet) {
        if top.mountpoint.is_some() {
            self.mountpoint = top.mountpoint.clone();
        }
        self.session.overlay(&top.session);
    }

    /// The modifiers for one accepted client.
    pub fn resolve(&self, key: &Key<'_>) -> Modifiers {
        let mut m = self.session.clone();
        if let Some(mp) = &self.mountpoint {
            m.subscriber_id = Some(SubscriberKey::new(mp.clone(), key.client_id.to_vec()));
        }
        m
    }
}

