//! What the firewall asks the registry about live sessions (`max_sessions`,
//! `client_id.bind_to_user`): which states count as a live session.

use crate::firewall::LiveSessions;
use crate::registry::SessionState;
use crate::types::Key;

use super::Warden;

pub(super) struct RegistrySessions<'a>(pub &'a Warden);

impl LiveSessions for RegistrySessions<'_> {
    /// This node's live sessions of the user, and the other nodes' as last
    /// published (eventually consistent: README, "In a cluster").
    fn live_sessions_of_user(&self, username: &[u8]) -> usize {
        // hashed once, for both counts
        let user_hash = self.0.registry.user_hash(username);
        self.0.registry.live_sessions_of_user_hash(user_hash) + self.0.remote.total(user_hash) as usize
    }

    /// A client id stays bound to its user while the broker keeps its
    /// session, online or offline.
    fn other_owner(&self, key: &Key<'_>, identity: Option<&[u8]>) -> Option<Vec<u8>> {
        self.0
            .registry
            .inspect(key, |state, user| match (state, user) {
                (SessionState::Online | SessionState::Offline, Some(owner)) if identity != Some(owner) => Some(owner.to_vec()),
                _ => None,
            })
            .flatten()
    }

    /// A reconnect of a client id that is online or about to be (accepted,
    /// not yet registered) replaces that session instead of adding one.
    fn has_live_session(&self, username: &[u8], key: &Key<'_>) -> bool {
        self.0
            .registry
            .inspect(key, |state, user| {
                matches!(state, SessionState::Online | SessionState::Authenticated) && user == Some(username)
            })
            .unwrap_or(false)
    }
}
