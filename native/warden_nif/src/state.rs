//! The one `Warden` per loaded library, and the clock it reads.

use std::time::{SystemTime, UNIX_EPOCH};

use once_cell::sync::Lazy;
use warden_core::firewall::{Firewall, FirewallConfig, LiveSessions};
use warden_core::registry::{Registry, RegistryConfig, SessionState};
use warden_core::striped::StripedCounters;
use warden_core::types::{Millis, SubscriberKey};

pub struct Warden {
    pub registry: Registry,
    pub firewall: Firewall,
    pub hooks: HookCounters,
}

/// Calls per hook, for `stats/0` and the broker's metrics, indexed by
/// [`Hook`]: striped, since every scheduler counts every hook.
pub type HookCounters = StripedCounters<{ Hook::ALL.len() }>;

#[derive(Clone, Copy)]
pub enum Hook {
    AuthOnRegister,
    OnRegister,
    OnClientWakeup,
    OnClientOffline,
    OnClientGone,
    OnSessionExpired,
}

impl Hook {
    pub const ALL: [Hook; 6] =
        [Hook::AuthOnRegister, Hook::OnRegister, Hook::OnClientWakeup, Hook::OnClientOffline, Hook::OnClientGone, Hook::OnSessionExpired];

    pub fn name(self) -> &'static str {
        match self {
            Hook::AuthOnRegister => "auth_on_register",
            Hook::OnRegister => "on_register",
            Hook::OnClientWakeup => "on_client_wakeup",
            Hook::OnClientOffline => "on_client_offline",
            Hook::OnClientGone => "on_client_gone",
            Hook::OnSessionExpired => "on_session_expired",
        }
    }
}

/// The registry is the firewall's source of live-session counts.
pub struct RegistrySessions<'a>(pub &'a Registry);

impl LiveSessions for RegistrySessions<'_> {
    fn live_sessions_of_user(&self, username: &[u8]) -> usize {
        self.0.live_sessions_of_user(username) + crate::cluster::remote_sessions_of_user(self.0, username)
    }

    fn owner_of(&self, key: &SubscriberKey) -> Option<Option<Vec<u8>>> {
        self.0
            .lookup(key)
            .filter(|s| matches!(s.state, SessionState::Online | SessionState::Offline))
            .map(|s| s.username.map(Vec::from))
    }

    fn has_live_session(&self, username: &[u8], key: &SubscriberKey) -> bool {
        self.0.lookup(key).is_some_and(|s| {
            matches!(s.state, SessionState::Online | SessionState::Authenticated)
                && s.username.as_deref() == Some(username)
        })
    }
}

pub static WARDEN: Lazy<Warden> = Lazy::new(|| Warden {
    registry: Registry::new(RegistryConfig::default()),
    firewall: Firewall::new(FirewallConfig::default()),
    hooks: HookCounters::default(),
});

pub fn now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}
