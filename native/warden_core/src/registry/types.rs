//! The registry's public types: its configuration, session states and end
//! reasons, what an event did, the views and filters of the operator API.

use crate::types::{Key, Millis, Peer, ProcId, Protocol, SubscriberKey};
use crate::IpNet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Number of shards; rounded up to a power of two (minimum 1).
    pub shards: usize,
    /// Recent endings kept in the history ring.
    pub history_size: usize,
    /// How long an accepted but unconfirmed connect is kept.
    pub pending_ttl_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            shards: 64,
            history_size: 1000,
            pending_ttl_ms: 60_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Accepted by our auth, not confirmed yet (and no current session).
    Authenticated,
    Online,
    /// Persistent session whose client is disconnected; the queue is kept.
    Offline,
    /// Used in endings/filters only: such records leave the registry.
    Gone,
    /// Used in endings/filters only: such records leave the registry.
    Expired,
}

impl SessionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionState::Authenticated => "authenticated",
            SessionState::Online => "online",
            SessionState::Offline => "offline",
            SessionState::Gone => "gone",
            SessionState::Expired => "expired",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A newer connect of the same key replaced the online session.
    TakenOver,
    /// Clean session disconnected; queue removed.
    Gone,
    /// Persistent session disconnected; queue kept (the generation may still
    /// get a later `Expired` or `Discarded` ending).
    Offline,
    /// Offline persistent session expired and was removed.
    Expired,
    /// Offline persistent session removed by a clean connect (no hook).
    Discarded,
    /// Accepted connect never confirmed (pending TTL, or more connects of
    /// the key accepted at once than are kept).
    Abandoned,
    /// The broker had no such session when the reconciliation compared
    /// (a hook the registry missed or misread).
    Vanished,
    /// An operator kicked the session (`vmq_warden:kick/2`); the broker's
    /// offline/gone hook for it follows with the disconnect.
    Kicked,
    /// The user's `max_session_age` passed: the plugin disconnected the
    /// session (credential lifetime).
    ExpiredCredentials,
}

impl EndReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::TakenOver => "taken_over",
            EndReason::Gone => "gone",
            EndReason::Offline => "offline",
            EndReason::Expired => "expired",
            EndReason::Discarded => "discarded",
            EndReason::Abandoned => "abandoned",
            EndReason::Vanished => "vanished",
            EndReason::Kicked => "kicked",
            EndReason::ExpiredCredentials => "expired_credentials",
        }
    }
}

/// The broker's own view of one subscriber id, for [`Registry::reconcile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerSession {
    /// No queue.
    Absent,
    /// A queue without a connected session (persistent, offline).
    Offline,
    /// A queue with a connected session.
    Online,
}

/// What [`Registry::reconcile`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconciled {
    /// The registry says what the broker says (or only a pending connect
    /// waits, which the pending TTL bounds).
    Agrees,
    /// The record was corrected to the broker's view.
    Corrected,
    /// The record changed since it was read: left for the next pass.
    Changed,
    /// The broker has a session the record does not show: counted, left
    /// alone (the next connect or wakeup brings it).
    Differs,
    /// No record for the key.
    NotFound,
}

/// Outcome of a lifecycle event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// From a queue/connection that is not the current session's: ignored.
    Stale,
    /// Already applied (same state, same process).
    Duplicate,
    /// gone/expired for a key the registry does not know.
    Unknown,
}

/// Borrowed from the hook's arguments: the registry copies the username
/// into its pool only if it differs from the one it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectInfo<'u> {
    pub peer: Option<Peer>,
    pub username: Option<&'u [u8]>,
    pub clean_session: bool,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub key: SubscriberKey,
    pub state: SessionState,
    /// The current session's generation; for an `Authenticated` record (only
    /// a pending connect) the pending generation.
    pub generation: u64,
    pub peer: Option<Peer>,
    pub username: Option<Box<[u8]>>,
    pub clean_session: bool,
    pub protocol: Protocol,
    pub first_connect: Millis,
    pub last_connect: Millis,
    pub last_change: Millis,
    pub connect_count: u64,
    pub queue: Option<ProcId>,
    pub conn: Option<ProcId>,
    pub pending_generation: Option<u64>,
    pub last_end: Option<(EndReason, Millis)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub key: SubscriberKey,
    pub generation: u64,
    pub reason: EndReason,
    pub peer: Option<Peer>,
    pub username: Option<Box<[u8]>>,
    pub started: Millis,
    pub ended: Millis,
    /// Who asked for a `Kicked` ending (the operator's `by`, or
    /// `reload: <rule>`); `None` for every other reason.
    pub kicked_by: Option<Box<str>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<SessionState>,
    pub username: Option<Vec<u8>>,
    pub mountpoint: Option<Vec<u8>>,
    pub client_id_prefix: Option<Vec<u8>>,
    /// Matches the peer address as the policy's network rules do: an IPv4
    /// address in either spelling, IPv4 or IPv4-mapped IPv6.
    pub network: Option<IpNet>,
}

/// The operator's filter values as given (`sessions/1`, `vmq-admin warden
/// session show`): each absent, or the text of one.
#[derive(Clone, Copy, Debug, Default)]
pub struct FilterText<'a> {
    pub state: Option<&'a [u8]>,
    pub username: Option<&'a [u8]>,
    pub mountpoint: Option<&'a [u8]>,
    pub client_id_prefix: Option<&'a [u8]>,
    /// "10.0.0.0/8", "::1/128", or a plain address.
    pub peer: Option<&'a [u8]>,
}

impl Filter {
    /// The filter, or what is wrong with a value no record can have.
    pub fn parse(text: FilterText<'_>) -> Result<Filter, &'static str> {
        let state = match text.state {
            None => None,
            Some(s) => Some(
                [SessionState::Authenticated, SessionState::Online, SessionState::Offline]
                    .into_iter()
                    .find(|st| st.as_str().as_bytes() == s)
                    .ok_or("unknown state")?,
            ),
        };
        let network = match text.peer {
            None => None,
            Some(p) => {
                let p = std::str::from_utf8(p).unwrap_or("");
                let net = p.parse::<IpNet>().ok().or_else(|| p.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                Some(net.ok_or("peer must be a CIDR network or an address, e.g. 10.0.0.0/8")?)
            }
        };
        Ok(Filter {
            state,
            username: text.username.map(<[u8]>::to_vec),
            mountpoint: text.mountpoint.map(<[u8]>::to_vec),
            client_id_prefix: text.client_id_prefix.map(<[u8]>::to_vec),
            network,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub authenticated: u64,
    pub online: u64,
    pub offline: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    pub live: u64,
    pub stale_events: u64,
    pub duplicate_events: u64,
    pub unknown_events: u64,
    pub taken_over: u64,
    pub ended: u64,
    /// Records corrected by [`Registry::reconcile`].
    pub reconciled: u64,
    pub history_len: u64,
    pub shards: u64,
}

/// A key's bytes borrowed, `Copy`: events on keys that already exist and
/// lookups need no copy of the key bytes. Any `&Key` (a request's, a
/// `SubscriberKey`) converts into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef<'a> {
    pub mountpoint: &'a [u8],
    pub client_id: &'a [u8],
}

impl<'a> From<&'a Key<'_>> for KeyRef<'a> {
    fn from(k: &'a Key<'_>) -> KeyRef<'a> {
        KeyRef {
            mountpoint: &k.mountpoint,
            client_id: &k.client_id,
        }
    }
}

/// Where a chunked listing ([`Registry::list_chunk`]) continues: slots
/// `0..unvisited` of shard `shard` are still to be read, then every later
/// shard. `unvisited` is clamped to the shard's length when it is read, so
/// `u32::MAX` stands for the whole shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    pub shard: usize,
    pub unvisited: u32,
}

impl ListCursor {
    pub const START: ListCursor = ListCursor::shard_start(0);

    pub(super) const fn shard_start(shard: usize) -> ListCursor {
        ListCursor { shard, unvisited: u32::MAX }
    }
}
