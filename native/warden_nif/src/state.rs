//! The one `Warden` per loaded library, and the clock it reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use once_cell::sync::Lazy;
use warden_core::firewall::{Firewall, FirewallConfig, LiveSessions};
use warden_core::registry::{Registry, RegistryConfig, SessionState};
use warden_core::types::{Millis, SubscriberKey};

pub struct Warden {
    pub registry: Registry,
    pub firewall: Firewall,
    pub hooks: HookCounters,
}

/// Calls per hook, for `stats/0` and the broker's metrics.
#[derive(Default)]
pub struct HookCounters {
    pub auth_on_register: AtomicU64,
    pub on_register: AtomicU64,
    pub on_client_wakeup: AtomicU64,
    pub on_client_offline: AtomicU64,
    pub on_client_gone: AtomicU64,
    pub on_session_expired: AtomicU64,
}

impl HookCounters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The registry is the firewall's source of live-session counts.
pub struct RegistrySessions<'a>(pub &'a Registry);

impl LiveSessions for RegistrySessions<'_> {
    fn live_sessions_of_user(&self, username: &[u8]) -> usize {
        self.0.live_sessions_of_user(username)
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
