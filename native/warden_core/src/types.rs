//! Value types shared by every part of the core. They mirror what VerneMQ
//! passes to hooks (docs/VERNEMQ.md, "Hooks and arguments") after the Erlang
//! side has normalised it, and the refusal codes it understands.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

/// Milliseconds since the Unix epoch. Every time in the core is injected as a
/// value, never read from a global clock, so tests control time.
pub type Millis = u64;

/// Identity of a BEAM process (the connection process for auth/on_register,
/// the queue process for lifecycle hooks). Only compared for equality; the NIF
/// layer derives it from the local pid term, tests pick any number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub u64);

/// `{Mountpoint, ClientId}`. Both are kept as raw bytes: VerneMQ does not
/// guarantee UTF-8 client ids, and a registry must not reject what the broker
/// accepted. A connect's request borrows them from the broker's terms for
/// the call (`Key<'a>`); everything kept owns them ([`SubscriberKey`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key<'a> {
    pub mountpoint: Cow<'a, [u8]>,
    pub client_id: Cow<'a, [u8]>,
}

/// A key that owns its bytes.
pub type SubscriberKey = Key<'static>;

impl SubscriberKey {
    pub fn new(mountpoint: impl Into<Vec<u8>>, client_id: impl Into<Vec<u8>>) -> Self {
        Key { mountpoint: Cow::Owned(mountpoint.into()), client_id: Cow::Owned(client_id.into()) }
    }
}

impl<'a> Key<'a> {
    /// The key over the caller's bytes, copying nothing.
    pub fn borrowed(mountpoint: &'a [u8], client_id: &'a [u8]) -> Key<'a> {
        Key { mountpoint: Cow::Borrowed(mountpoint), client_id: Cow::Borrowed(client_id) }
    }

    /// The same key owning its bytes (bytes it owns already are moved).
    pub fn into_owned_key(self) -> SubscriberKey {
        Key { mountpoint: Cow::Owned(self.mountpoint.into_owned()), client_id: Cow::Owned(self.client_id.into_owned()) }
    }

    /// An owned copy of the key.
    pub fn to_owned_key(&self) -> SubscriberKey {
        self.clone().into_owned_key()
    }
}

impl fmt::Debug for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{:?},{:?}}}",
            String::from_utf8_lossy(&self.mountpoint),
            String::from_utf8_lossy(&self.client_id)
        )
    }
}

/// Remote address of the client: `{inet:ip_address(), inet:port_number()}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub ip: IpAddr,
    pub port: u16,
}

/// MQTT protocol generation as far as hooks can tell: the `_m5` hooks are
/// MQTT 5, the others MQTT 3.1/3.1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Mqtt3,
    Mqtt5,
}

/// The password as the decision needs it. Plaintext only ever lives here for
/// the duration of one verification; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The listener a client connected to (from the 6-/7-arity metadata map).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    pub port: Option<u16>,
    /// tcp, ssl, ws, wss, ... (broker spellings such as mqtts/mqttws are folded).
    pub kind: Option<String>,
    pub addr: Option<IpAddr>,
}

/// VerneMQ's MQTT 5 reason-code names. For MQTT 3 the NIF maps
/// `BadUsernameOrPassword` to `{error, invalid_credentials}` and any other to
/// `{error, Code}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    BadUsernameOrPassword,
    NotAuthorized,
    Banned,
    ConnectionRateExceeded,
    ClientIdentifierNotValid,
    QuotaExceeded,
}

impl RefusalCode {
    pub const ALL: [RefusalCode; 6] = [
        RefusalCode::BadUsernameOrPassword,
        RefusalCode::NotAuthorized,
        RefusalCode::Banned,
        RefusalCode::ConnectionRateExceeded,
        RefusalCode::ClientIdentifierNotValid,
        RefusalCode::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadUsernameOrPassword => "bad_username_or_password",
            RefusalCode::NotAuthorized => "not_authorized",
            RefusalCode::Banned => "banned",
            RefusalCode::ConnectionRateExceeded => "connection_rate_exceeded",
            RefusalCode::ClientIdentifierNotValid => "client_identifier_not_valid",
            RefusalCode::QuotaExceeded => "quota_exceeded",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

