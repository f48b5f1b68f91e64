//! Rebuilding the registry from the broker's own state after a restart of
//! the plugin (vmq_warden_rebuild reads the broker's queues in chunks and
//! calls [`Registry::restore`] for each).

use super::*;

impl Registry {
    /// The broker holds a session of `key` with queue process `queue`,
    /// online or offline: make it the key's current session unless a hook
    /// has given the key a record since the start (that record is newer
    /// than the broker's answer). The username, peer and clean flag are
    /// those of `info` when the broker told them, unknown otherwise (a
    /// session restored without a username counts for no user's
    /// `max_sessions` until its client connects again). Returns whether it
    /// was restored.
    pub fn restore<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        queue: ProcId,
        online: bool,
        info: Option<ConnectInfo<'_>>,
        now: Millis,
    ) -> bool {
        self.with_record(key.into(), now, Emit::ENDINGS_ONLY, |rec, cx| rec.restore(cx, queue, online, info)).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Protocol, SubscriberKey};

    fn key(id: &str) -> SubscriberKey {
        SubscriberKey::new(Vec::new(), id.as_bytes().to_vec())
    }

    #[test]
    fn restore_brings_back_online_and_offline_sessions() {
        let r = Registry::new(RegistryConfig::default());
        r.count_users();
        assert!(r.restore(&key("on"), ProcId(1), true, None, 10));
        assert!(r.restore(&key("off"), ProcId(2), false, None, 10));
        assert_eq!(r.counts(), StateCounts { authenticated: 0, online: 1, offline: 1 });
        let on = r.lookup(&key("on")).expect("restored");
        assert_eq!((on.state, on.queue, on.username, on.clean_session), (SessionState::Online, Some(ProcId(1)), None, false));
        assert!(r.recent_endings(10).is_empty(), "a restore ends nothing");
        // the restored queue's events apply as to any current session
        assert_eq!(r.went_offline(&key("on"), ProcId(1), 20), Applied::Applied);
        assert_eq!(r.lookup(&key("on")).map(|s| s.state), Some(SessionState::Offline));
        assert_eq!(r.expired(&key("off"), ProcId(2), 20), Applied::Applied);
        assert!(r.lookup(&key("off")).is_none());
        // an on_register completes a restored online session
        assert!(r.restore(&key("reg"), ProcId(3), true, None, 10));
        let info = ConnectInfo { peer: None, username: Some(b"carol"), clean_session: false, protocol: Protocol::Mqtt5 };
        assert_eq!(r.registered(&key("reg"), ProcId(30), info, 30), Applied::Applied);
        assert_eq!(r.live_sessions_of_user(b"carol"), 1);
    }

    #[test]
    fn restore_leaves_a_key_the_hooks_already_touched() {
        let r = Registry::new(RegistryConfig::default());
        r.count_users();
        let info = ConnectInfo { peer: None, username: Some(b"alice"), clean_session: true, protocol: Protocol::Mqtt3 };
        r.auth_accepted(&key("k"), ProcId(10), info, 5);
        assert!(!r.restore(&key("k"), ProcId(1), false, None, 6));
        assert_eq!(r.lookup(&key("k")).map(|s| s.state), Some(SessionState::Authenticated));
        // a username the broker told is counted
        assert!(r.restore(&key("u"), ProcId(2), true, Some(info), 6));
        assert_eq!(r.live_sessions_of_user(b"alice"), 2);
    }
}
