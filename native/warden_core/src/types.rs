//! Value types shared by every part of the core. They mirror what VerneMQ
//! passes to hooks (see docs/vernemq-plugin-facts in shared/) after the Erlang
//! side has normalised it.

use std::fmt;
use std::net::IpAddr;

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
/// accepted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberKey {
    pub mountpoint: Box<[u8]>,
    pub client_id: Box<[u8]>,
}

impl SubscriberKey {
    pub fn new(mountpoint: impl Into<Box<[u8]>>, client_id: impl Into<Box<[u8]>>) -> Self {
        SubscriberKey { mountpoint: mountpoint.into(), client_id: client_id.into() }
    }
}

impl fmt::Debug for SubscriberKey {
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
