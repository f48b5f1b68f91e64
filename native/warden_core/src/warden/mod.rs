//! The facade the NIF calls: one `Warden` owns the firewall, the registry,
//! the auth contexts between the steps of a login, the slow-verification
//! slots, the password decryption settings and the hook counters. Each hook
//! is one call in and one answer out; the NIF only converts terms.

mod error;
mod pending;
mod sessions;
mod settings;
mod slots;
mod stats;
#[cfg(test)]
mod tests;

use std::path::Path;

use zeroize::Zeroizing;

use crate::cluster::RemoteCounts;
use crate::credentials::PasswordFile;
use crate::events::Event;
use crate::firewall::{AuthRequest, Decision, Firewall, FirewallConfig, LoadError, LoadReport, PasswordStep, Refusal, Step};
use crate::obfuscation::{DecryptBuffer, Obfuscation};
use crate::policy::Policy;
use crate::registry::{Applied, ConnectInfo, KeyRef, Registry, RegistryConfig};
use crate::striped::StripedCounters;
use crate::types::{Millis, ProcId, Protocol};

pub use error::WardenError;
pub use pending::AuthContext;
use pending::PendingAuths;
use sessions::RegistrySessions;
pub use settings::{SettingValue, Settings};
pub use slots::{SlotsInfo, MAX_SLOTS};
pub use stats::Stat;
use slots::SlowSlots;

/// The broker's hooks, as counted for `stats/0` and the broker's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What the queue process reports (on_client_wakeup / offline / gone,
/// on_session_expired).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    Wakeup,
    Offline,
    Gone,
    Expired,
}

impl QueueEvent {
    /// The hook that reports it.
    pub fn hook(self) -> Hook {
        match self {
            QueueEvent::Wakeup => Hook::OnClientWakeup,
            QueueEvent::Offline => Hook::OnClientOffline,
            QueueEvent::Gone => Hook::OnClientGone,
            QueueEvent::Expired => Hook::OnSessionExpired,
        }
    }
}

/// The password an auth step is given, as the broker handed it.
#[derive(Clone, Copy, Debug)]
pub enum Password<'a> {
    Absent,
    Clear(&'a [u8]),
    /// VerneMQ 2.x's `{encrypted, B}`: decrypted here with the node's
    /// `credentials_obfuscation` settings when they are known.
    Encrypted(&'a [u8]),
    /// Given, but not a password any client can send (longer than an MQTT
    /// string): an error if the decision needs it, ignored if not.
    Unreadable,
}

/// The answer of one auth step.
#[derive(Debug, PartialEq, Eq)]
// Moved once, straight to the encoder; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum AuthStep {
    /// The hook's answer, for this protocol.
    Decided(Decision, Protocol),
    /// No slow-verification slot came free within the hook's wait: refused
    /// as server busy, not counted as a failed login.
    ServerBusy(Protocol),
    /// Call `auth_password_slow` with this token on a dirty scheduler.
    NeedSlowHash(u64),
    /// The password could not be decrypted here: decrypt it through the
    /// broker's library and call `auth_password` with this token and the
    /// clear text.
    NeedPlaintext(u64),
    /// Every slow-verification slot is taken: wait, then call
    /// `auth_password_slow` again or give up with `auth_busy`.
    SlotsTaken,
}

/// The remote counts' bound until `cluster_counts_max_bytes` is applied
/// (its default there too).
const REMOTE_COUNTS_BYTES: usize = 16 << 20;

/// Calls per hook, striped: every scheduler counts every hook.
type HookCounters = StripedCounters<{ Hook::ALL.len() }>;

pub struct Warden {
    pub registry: Registry,
    pub firewall: Firewall,
    /// The other nodes' per-user live sessions, which `max_sessions` adds
    /// to the local count (kept fresh by vmq_warden_cluster_sync).
    pub remote: RemoteCounts,
    hooks: HookCounters,
    auths: PendingAuths,
    slots: SlowSlots,
}

impl Default for Warden {
    fn default() -> Self {
        Warden::new(RegistryConfig::default(), FirewallConfig::default())
    }
}

/// Every counter of `stats/0` that is not the firewall's or the registry's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WardenCounters {
    pub hook_calls: Vec<(Hook, u64)>,
    pub auth_in_flight: u64,
    pub server_busy: u64,
}

impl Warden {
    pub fn new(registry: RegistryConfig, firewall: FirewallConfig) -> Warden {
        Warden {
            registry: Registry::new(registry),
            firewall: Firewall::new(firewall),
            remote: RemoteCounts::new(REMOTE_COUNTS_BYTES),
            hooks: HookCounters::default(),
            auths: PendingAuths::default(),
            slots: SlowSlots::default(),
        }
    }

    // ---- auth_on_register ------------------------------------------------------

    /// auth_on_register in one call when it can be: rules, bans, rates,
    /// then, only if the decision needs it, the password (decrypted here,
    /// at most once) against the cache or a fast hash. A slow hash or a
    /// password this side cannot decrypt leaves the context under a token
    /// for the next step.
    pub fn auth_begin(&self, req: AuthRequest, conn: ProcId, password: Password<'_>, now: Millis) -> Result<AuthStep, WardenError> {
        self.hooks.bump(Hook::AuthOnRegister as usize);
        match self.firewall.begin(req, &RegistrySessions(self), now) {
            Step::Done(decision, req) => Ok(self.decided(&req, conn, decision, now)),
            Step::NeedPassword(pending) => self.password_step(AuthContext { pending, conn, password: None }, None, password, now),
        }
    }

    /// The password step again, with the clear password the broker's
    /// library decrypted after `NeedPlaintext`.
    pub fn auth_password(&self, token: u64, caller: ProcId, password: Password<'_>, now: Millis) -> Result<AuthStep, WardenError> {
        let ctx = self.auths.take(token, caller).ok_or(WardenError::UnknownAuth)?;
        self.password_step(ctx, Some(token), password, now)
    }

    /// A cached verification or a fast hash decides here, on a normal
    /// scheduler.
    fn password_step(&self, mut ctx: AuthContext, token: Option<u64>, password: Password<'_>, now: Millis) -> Result<AuthStep, WardenError> {
        let mut decrypted: DecryptBuffer;
        // Borrowed: a copy is made only for a slow hash, which keeps it.
        let password: Option<&[u8]> = match password {
            Password::Unreadable => return Err(WardenError::BadPassword),
            Password::Absent => None,
            Password::Clear(p) => Some(p),
            Password::Encrypted(e) => {
                decrypted = DecryptBuffer::new();
                let Some(p) = ctx.pending.obfuscation().and_then(|o| o.decrypt(e, &mut decrypted)) else {
                    return self.keep(token, ctx, now).map(AuthStep::NeedPlaintext);
                };
                Some(p)
            }
        };
        let sessions = RegistrySessions(self);
        match self.firewall.with_password(&ctx.pending, password, &sessions, now) {
            PasswordStep::Done(decision) => Ok(self.decided(ctx.pending.request(), ctx.conn, decision, now)),
            PasswordStep::NeedSlowHash => {
                ctx.password = password.map(|p| Zeroizing::new(p.to_vec()));
                self.keep(token, ctx, now).map(AuthStep::NeedSlowHash)
            }
        }
    }

    /// The slow hash, on a dirty scheduler, within a slot; `clock` is read
    /// again after the hash, which may take a while.
    pub fn auth_password_slow(&self, token: u64, caller: ProcId, clock: impl Fn() -> Millis) -> Result<AuthStep, WardenError> {
        let Some(_slot) = self.slots.try_acquire() else {
            return Ok(AuthStep::SlotsTaken);
        };
        let ctx = self.auths.take(token, caller).ok_or(WardenError::UnknownAuth)?;
        let sessions = RegistrySessions(self);
        let decision = self.firewall.verify_slow(&ctx.pending, ctx.password.as_deref().map(Vec::as_slice), &sessions, clock());
        Ok(self.decided(ctx.pending.request(), ctx.conn, decision, clock()))
    }

    /// No slot came free within the hook's wait.
    pub fn auth_busy(&self, token: u64, caller: ProcId) -> Result<AuthStep, WardenError> {
        let ctx = self.auths.take(token, caller).ok_or(WardenError::UnknownAuth)?;
        self.slots.count_busy();
        let req = ctx.pending.request();
        tracing::info!(
            target: "vmq_warden::audit",
            code = "server_busy",
            reason = "credentials: no slow-verification slot free in time",
            client_id = %String::from_utf8_lossy(&req.key.client_id[..req.key.client_id.len().min(256)]),
            peer = %req.peer.map(|p| p.ip.to_string()).unwrap_or_default(),
            "connection refused"
        );
        Ok(AuthStep::ServerBusy(req.protocol))
    }

    /// Keeps the context for the next step, under its token or a new one,
    /// with its own copy of the request's bytes.
    fn keep(&self, token: Option<u64>, ctx: AuthContext<'_>, now: Millis) -> Result<u64, WardenError> {
        let ctx = ctx.into_owned();
        let kept = match token {
            Some(t) => self.auths.put(t, ctx, now).then_some(t),
            None => self.auths.insert(ctx, now),
        };
        kept.ok_or(WardenError::AuthTableFull)
    }

    /// An accepted client becomes a pending connect in the registry, under
    /// the subscriber id it will register with.
    /// With the event stream on, the connect's `accepted` or `refused` event.
    fn decided(&self, req: &AuthRequest, conn: ProcId, decision: Decision, now: Millis) -> AuthStep {
        let mut session = None;
        if let Decision::Accept(mods) = &decision {
            let info = ConnectInfo {
                peer: req.peer,
                // A certificate identity renames the session (the `username`
                // modifier): it counts toward that user's max_sessions.
                username: mods.username.as_deref().or(req.username.as_deref()),
                clean_session: mods.clean_session.unwrap_or(req.clean_session),
                protocol: req.protocol,
            };
            session = Some(self.registry.auth_accepted(mods.registered_key(&req.key), conn, info, now));
        }
        let events = self.registry.events();
        if events.is_on() {
            if let Some(event) = Event::of_decision(req, &decision, session, now) {
                events.push(event);
            }
        }
        AuthStep::Decided(decision, req.protocol)
    }

    /// Whether a connect of this live session would now be refused before
    /// its password is asked (enforce on reload; `Firewall::recheck`).
    pub fn recheck(&self, req: &AuthRequest, logged_in_at: Millis, now: Millis) -> Option<Refusal> {
        self.firewall.recheck(req, logged_in_at, &RegistrySessions(self), now)
    }

    // ---- the lifecycle hooks ----------------------------------------------------

    /// on_register / on_register_m5, from the connection process.
    pub fn registered(&self, key: KeyRef<'_>, conn: ProcId, info: ConnectInfo<'_>, now: Millis) -> Applied {
        self.hooks.bump(Hook::OnRegister as usize);
        self.registry.registered(key, conn, info, now)
    }

    /// The queue process's events.
    pub fn queue_event(&self, event: QueueEvent, key: KeyRef<'_>, queue: ProcId, now: Millis) -> Applied {
        self.hooks.bump(event.hook() as usize);
        let r = &self.registry;
        match event {
            QueueEvent::Wakeup => r.woke_up(key, queue, now),
            QueueEvent::Offline => r.went_offline(key, queue, now),
            QueueEvent::Gone => r.gone(key, queue, now),
            QueueEvent::Expired => r.expired(key, queue, now),
        }
    }

    // ---- policy, settings and upkeep ----------------------------------------

    /// Loads the policy and password files (`Firewall::load_with`). A policy
    /// that limits sessions per user runs only once the registry counts
    /// them, the sessions already there included ([`Registry::count_users`]:
    /// until the first such policy, or a peer, the hooks keep no per-user
    /// counts).
    pub fn load(&self, policy: Option<&Path>, passwords: Option<&Path>, now: Millis) -> Result<LoadReport, LoadError> {
        self.firewall.load_with(policy, passwords, now, &|p| self.prepare_for(p))
    }

    /// [`Warden::load`] of an in-memory policy and password file.
    pub fn install(&self, policy: Policy, passwords: PasswordFile) -> LoadReport {
        self.firewall.install_with(policy, passwords, &|p| self.prepare_for(p))
    }

    fn prepare_for(&self, policy: &Policy) {
        if policy.limits_sessions() {
            self.registry.count_users();
        }
    }

    /// Applies parsed settings at once (parse them with [`Settings::parse`]:
    /// nothing changes unless every one was valid).
    pub fn configure(&self, settings: &Settings) {
        if let Some(n) = settings.history_size {
            self.registry.set_history_size(n);
        }
        if let Some(ms) = settings.pending_ttl_ms {
            self.registry.set_pending_ttl(ms);
        }
        self.firewall.reconfigure(settings.firewall);
    }

    /// The node's `credentials_obfuscation` settings (`None`: unsupported,
    /// `{encrypted, _}` passwords then go through the broker's library).
    pub fn set_obfuscation(&self, obfuscation: Option<Obfuscation>) {
        self.firewall.set_obfuscation(obfuscation);
    }

    /// Sets how many slow verifications may run at once; the previous limit.
    pub fn set_slow_slots(&self, n: usize) -> Result<usize, WardenError> {
        self.slots.set_limit(n).ok_or(WardenError::BadSlots)
    }

    pub fn slow_slots_info(&self) -> SlotsInfo {
        self.slots.take_info()
    }

    pub fn counters(&self) -> WardenCounters {
        WardenCounters {
            hook_calls: Hook::ALL.iter().map(|h| (*h, self.hooks.get(*h as usize))).collect(),
            auth_in_flight: self.auths.len() as u64,
            server_busy: self.slots.busy(),
        }
    }

    /// Periodic clean-up: connects accepted but never registered, auth
    /// contexts whose next step never came, idle rate-limit and ban entries.
    pub fn sweep(&self, now: Millis) -> usize {
        self.registry.sweep(now) + self.auths.sweep(now) + self.firewall.sweep_limits(now)
    }

    /// Forget every runtime state: sessions, endings, bans, rate-limit
    /// buckets, cached verifications and auth contexts in flight.
    pub fn reset(&self) {
        self.registry.clear();
        self.firewall.clear_bans(crate::firewall::BanSelector::All);
        self.firewall.clear_rate_limits();
        self.firewall.clear_cache();
        self.auths.clear();
    }
}
