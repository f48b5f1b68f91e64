//! The admission decision engine behind auth_on_register(_m5).
//!
//! A decision takes 1 to 3 calls so that slow password hashes run on a dirty
//! scheduler: [`Firewall::begin`] (no password needed yet), then
//! [`Firewall::with_password`] on the normal scheduler (cache hit or fast
//! hash), then, only if that answered [`PasswordStep::NeedSlowHash`],
//! [`Firewall::verify_slow`] on a dirty scheduler. The [`PendingAuth`] carried
//! between the calls holds the policy snapshot the decision started with, so a
//! reload in between never mixes two policies.
//!
//! The steps and their order are POLICY.md's decision table (written once
//! there); `screen.rs` runs them in that order, one named step each.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use arc_swap::{ArcSwap, Guard};
use parking_lot::MutexGuard;

use crate::credentials::{self, AuthCache, PasswordFile, PasswordHash};
use crate::obfuscation::Obfuscation;
use crate::limits::{peer_key, BanTable, RateLimiter};
use crate::striped::StripedCounters;
use crate::policy::{in_networks, CertField, Policy, PolicyError, Settings, User};
use screen::Screen;
pub use crate::policy::{ModValue, Modifiers, Mods};
use crate::types::{Millis, Peer, Protocol};
use once_cell::sync::Lazy;

/// What is held between `begin` and the password calls: the request, moved
/// in by `begin` (no copy of the client's key, username or certificate),
/// the check `screen` decided on, and the policy snapshot it decided with.
pub struct PendingAuth<'a> {
    req: AuthRequest<'a>,
    check: PasswordCheck,
    /// What was running when `begin` loaded it: an `arc_swap` guard, so
    /// that a login decided in its first call writes no reference count
    /// every scheduler shares (a guard kept for a slow hash is paid for by
    /// the next reload, which takes the reference for it).
    running: Guard<Arc<Running>>,
}

/// What every login reads, replaced as one: the settings, the policy with
/// its password file, the verification cache and how the broker's
/// passwords decrypt. One `arc_swap` load a login: each load of another
/// type is another copy of arc_swap's code, and in a connect that code is
/// not in the CPU cache (docs/BENCHMARKS.md, "Cache lines per hook").
#[derive(Clone)]
struct Running {
    cfg: FirewallConfig,
    snap: Arc<LoadedPolicy>,
    cache: Arc<AuthCache>,
    /// The node's `credentials_obfuscation` settings, when known and
    /// decrypted here (`None`: the library decrypts).
    obfuscation: Option<Arc<Obfuscation>>,
}

/// The password check of one login.
struct PasswordCheck {
    hash: PasswordHash,
    fingerprint: u64,
    slow: bool,
    /// The verification cache is asked and told (not for a hash that is
    /// cheaper to check than the cache: [`PasswordHash::cheaper_than_cache`]).
    cached: bool,
    /// `unknown_user = deny`: `hash` is a decoy (see [`Decoys`]); the
    /// check runs like a known user's and then refuses.
    decoy: bool,
    /// The configuration's `ban_users` as the screening read it: the
    /// outcome counts toward the name's ban by the settings the decision
    /// started with (and costs no second load of the configuration).
    ban_users: bool,
}

/// A user the policy does not name: no networks, limits or modifiers.
static NO_SETTINGS: Lazy<Settings> = Lazy::new(Settings::default);

impl<'a> PendingAuth<'a> {
    /// The same pending auth owning its request's bytes.
    pub fn into_owned(self) -> PendingAuth<'static> {
        PendingAuth { req: self.req.into_owned(), check: self.check, running: self.running }
    }

    /// The policy's settings of the login's user in its snapshot, looked up
    /// again rather than copied into every login.
    fn settings(&self) -> &Settings {
        self.running.snap.policy.user(self.username()).map_or(&NO_SETTINGS, |u| &u.settings)
    }

    pub fn request(&self) -> &AuthRequest<'a> {
        &self.req
    }

    /// The user whose password is checked: a password check is made only
    /// for a request with a username (screen.rs, `credentials`), and the
    /// name is read from the request rather than copied.
    pub fn username(&self) -> &[u8] {
        self.req.username.as_deref().unwrap_or_default()
    }

    /// Generation of the policy snapshot this decision runs against.
    pub fn generation(&self) -> u64 {
        self.running.snap.generation
    }

    /// The `credentials_obfuscation` settings running when the login began.
    pub fn obfuscation(&self) -> Option<&Obfuscation> {
        self.running.obfuscation.as_deref()
    }
}

impl fmt::Debug for PendingAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuth")
            .field("key", &self.req.key)
            .field("username", &String::from_utf8_lossy(self.username()))
            .field("generation", &self.running.snap.generation)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub enum LoadError {
    Policy(PolicyError),
    Passwords(credentials::LoadError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Policy(e) => write!(f, "{e}"),
            LoadError::Passwords(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// `FILE:LINE: reason` for skipped password-file lines.
    pub warnings: Vec<String>,
    pub users: usize,
    pub groups: usize,
    pub rules: usize,
    pub passwords: usize,
    pub generation: u64,
}

struct LoadedPolicy {
    policy: Policy,
    passwords: PasswordFile,
    /// A password file is configured (possibly empty).
    has_password_file: bool,
    generation: u64,
    decoys: Decoys,
    /// The policy names listeners; the first connect without listener data
    /// then logs a warning (once per snapshot).
    listener_conditions: bool,
    warned_no_listener: std::sync::atomic::AtomicBool,
    /// When a reload last changed each user's stored credential: a session
    /// that logged in before then used the old one (enforce on reload,
    /// `recheck`). Users whose credential no reload has changed are not in it.
    credentials_changed: HashMap<Vec<u8>, Millis>,
}

/// A user's stored credential: the policy's `password`, else the password
/// file's line.
fn credential<'a>(policy_user: Option<&'a User>, passwords: &'a PasswordFile, user: &[u8]) -> Option<&'a PasswordHash> {
    policy_user.and_then(|u| u.password.as_ref()).or_else(|| passwords.get(user))
}

impl LoadedPolicy {
    fn new(policy: Policy, passwords: PasswordFile, has_password_file: bool, generation: u64, decoy_hasher: ahash::RandomState) -> LoadedPolicy {
        let decoys = Decoys::new(passwords.hashes().chain(policy.users.values().filter_map(|u| u.password.as_ref())), decoy_hasher);
        let listener_conditions = policy.has_listener_conditions();
        LoadedPolicy {
            policy,
            passwords,
            has_password_file,
            generation,
            decoys,
            listener_conditions,
            warned_no_listener: std::sync::atomic::AtomicBool::new(false),
            credentials_changed: HashMap::new(),
        }
    }

    fn credential(&self, user: &[u8]) -> Option<&PasswordHash> {
        credential(self.policy.user(user), &self.passwords, user)
    }

    /// `credentials_changed` of this snapshot, replacing `old` at `now`: a
    /// user whose credential differs from `old`'s (or who had none there,
    /// after an earlier reload removed it) changed now; the others keep
    /// `old`'s time. A first credential source (no users before) changes no one.
    fn note_changes_since(&mut self, old: &LoadedPolicy, now: Millis) {
        let names = self.policy.users.keys().map(|k| &k[..]).chain(self.passwords.users());
        let mut changed = HashMap::new();
        for name in names {
            let Some(new) = self.credential(name) else { continue };
            let at = match old.credential(name) {
                Some(h) if h.fingerprint() == new.fingerprint() => old.credentials_changed.get(name).copied(),
                Some(_) => Some(now),
                None if old.has_user_source() => Some(now),
                None => None,
            };
            if let Some(at) = at {
                changed.insert(name.to_vec(), at);
            }
        }
        self.credentials_changed = changed;
    }

    fn knows_nothing(&self) -> bool {
        !self.policy.configured && !self.has_password_file
    }

    fn has_user_source(&self) -> bool {
        !self.policy.users.is_empty() || self.has_password_file
    }
}

// ---------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------

// Indexes of the decision counters (`Firewall::stats`); refusals take
// REFUSED + RefusalCode::index().
const S_ACCEPTED: usize = 0;
const S_NEXT: usize = 1;
const S_CACHE_HITS: usize = 2;
const S_CACHE_MISSES: usize = 3;
const S_SLOW_VERIFICATIONS: usize = 4;
const S_BANS_STARTED: usize = 5;
const S_RELOADS_OK: usize = 6;
const S_RELOADS_FAILED: usize = 7;
const S_VERIFY_NANOS: usize = 8;
const S_VERIFY_COUNT: usize = 9;
const S_REFUSED: usize = 10;
const N_STATS: usize = S_REFUSED + RefusalCode::ALL.len();

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallStats {
    pub accepted: u64,
    pub next: u64,
    /// Per [`RefusalCode`], in `RefusalCode::ALL` order.
    pub refused: Vec<(RefusalCode, u64)>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub slow_verifications: u64,
    pub bans_started: u64,
    /// Active bans (peer + user) as of the last decision's clock.
    pub bans_active: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub verify_micros_total: u64,
    pub verify_count: u64,
    pub tracked_peers: u64,
    pub tracked_users: u64,
}

impl FirewallStats {
    pub fn refused_of(&self, code: RefusalCode) -> u64 {
        self.refused.iter().find(|(c, _)| *c == code).map(|(_, n)| *n).unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------

pub struct Firewall {
    // Read on every connect, replaced on reload or reconfiguration: ArcSwap
    // reads write no cache line shared by the schedulers, a RwLock's do.
    running: ArcSwap<Running>,
    peer_rate: RateLimiter<IpNet>,
    user_rate: RateLimiter<[u8]>,
    peer_bans: BanTable<IpNet>,
    user_bans: BanTable<[u8]>,
    stats: StripedCounters<N_STATS>,
    generation: AtomicU64,
    last_now: AtomicU64,
    /// Keys the decoy choice of unknown names (`Decoys`), for the
    /// firewall's lifetime.
    decoy_hasher: ahash::RandomState,
    /// One change at a time, whoever calls (the reloader, a start's
    /// apply): settings and the tables that follow them change as one, and
    /// the policy last read from the files is the one left running.
    changing: parking_lot::Mutex<()>,
    /// Tests: treat every hash as slow (the slow formats live on the credentials branch).
    #[cfg(test)]
    pub(crate) force_slow: std::sync::atomic::AtomicBool,
    /// Tests only: runs inside `reconfigure` after the settings are swapped
    /// and before the tables follow them, and inside `load` after the files
    /// are read and before their policy is swapped in.
    #[cfg(test)]
    pub(crate) midway: crate::testing::PausePoint,
}

/// Client values in log lines and reasons: lossy UTF-8 of at most the
/// first 256 bytes (a client id or username may have 65535), `...` after a cut.
fn lossy(b: &[u8]) -> String {
    const SHOWN: usize = 256;
    let mut s = String::from_utf8_lossy(&b[..b.len().min(SHOWN)]).into_owned();
    if b.len() > SHOWN {
        s.push_str("...");
    }
    s
}

impl Firewall {
    pub fn new(cfg: FirewallConfig) -> Firewall {
        let decoy_hasher = ahash::RandomState::new();
        Firewall {
            running: ArcSwap::from_pointee(Running {
                cfg,
                snap: Arc::new(LoadedPolicy::new(Policy::empty(), PasswordFile::default(), false, 0, decoy_hasher.clone())),
                cache: Arc::new(AuthCache::new(cfg.cache_size, cfg.cache_ok_ttl_ms, cfg.cache_fail_ttl_ms)),
                obfuscation: None,
            }),
            peer_rate: RateLimiter::new(cfg.rate_per_peer, cfg.burst_per_peer, cfg.max_tracked),
            user_rate: RateLimiter::new(cfg.rate_per_user, cfg.burst_per_user, cfg.max_tracked),
            peer_bans: BanTable::new(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked),
            user_bans: BanTable::new(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked),
            stats: StripedCounters::default(),
            generation: AtomicU64::new(0),
            last_now: AtomicU64::new(0),
            decoy_hasher,
            changing: parking_lot::Mutex::new(()),
            #[cfg(test)]
            force_slow: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            midway: Default::default(),
        }
    }

    /// New settings. Limiter and ban tables keep their entries; the cache is
    /// rebuilt (emptied) only when its size or TTLs change.
    pub fn reconfigure(&self, cfg: FirewallConfig) {
        let one_at_a_time = self.changing.lock();
        self.replace_running(&one_at_a_time, |r| {
            if (r.cfg.cache_size, r.cfg.cache_ok_ttl_ms, r.cfg.cache_fail_ttl_ms) != (cfg.cache_size, cfg.cache_ok_ttl_ms, cfg.cache_fail_ttl_ms) {
                r.cache = Arc::new(AuthCache::new(cfg.cache_size, cfg.cache_ok_ttl_ms, cfg.cache_fail_ttl_ms));
            }
            r.cfg = cfg;
        });
        #[cfg(test)]
        self.midway.reach();
        self.peer_rate.set_params(cfg.rate_per_peer, cfg.burst_per_peer, cfg.max_tracked);
        self.user_rate.set_params(cfg.rate_per_user, cfg.burst_per_user, cfg.max_tracked);
        self.peer_bans.set_params(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked);
        self.user_bans.set_params(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked);
    }

    pub fn config(&self) -> FirewallConfig {
        self.running.load().cfg
    }

    /// Logins that begin from now on decrypt with these settings
    /// ([`crate::warden::Warden::set_obfuscation`]).
    pub fn set_obfuscation(&self, obfuscation: Option<Obfuscation>) {
        let one_at_a_time = self.changing.lock();
        self.replace_running(&one_at_a_time, |r| r.obfuscation = obfuscation.map(Arc::new));
    }

    /// Replaces what logins read with `change` applied to a copy of it, and
    /// returns what ran before. Only under `changing` (the guard is the
    /// proof): two changes at once would start from the same copy, and the
    /// later store would undo the earlier one.
    fn replace_running(&self, _one_at_a_time: &MutexGuard<'_, ()>, change: impl FnOnce(&mut Running)) -> Arc<Running> {
        let old = self.running.load_full();
        let mut new = Running::clone(&old);
        change(&mut new);
        self.running.store(Arc::new(new));
        old
    }

    /// The decision clock, for `stats` (active bans "now"): written only when
    /// it moves, so connects within the same millisecond share no write.
    fn note_now(&self, now: Millis) {
        if now > self.last_now.load(Ordering::Relaxed) {
            self.last_now.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// The firewall's tests: [`Firewall::load_with`] with nothing to prepare.
    #[cfg(test)]
    pub(crate) fn load(&self, policy_path: Option<&Path>, password_path: Option<&Path>, now: Millis) -> Result<LoadReport, LoadError> {
        self.load_with(policy_path, password_path, now, &|_| {})
    }

    /// Parses both files and swaps them in as one snapshot, calling
    /// `prepare` with the new policy before it runs (only if both parsed).
    /// On any error the running snapshot stays. Password-file lines that
    /// cannot be used are warnings; an unreadable password file is an
    /// error. A second load (or reconfiguration) waits for this one,
    /// reading included: the caller is a dirty I/O scheduler, never a hook.
    /// Outside the core a policy is loaded through
    /// [`crate::warden::Warden::load`], which has the registry count
    /// per-user sessions first when the policy limits them.
    pub(crate) fn load_with(
        &self,
        policy_path: Option<&Path>,
        password_path: Option<&Path>,
        now: Millis,
        prepare: &dyn Fn(&Policy),
    ) -> Result<LoadReport, LoadError> {
        let one_at_a_time = self.changing.lock();
        let result = (|| {
            let policy = match policy_path {
                Some(p) => Policy::load(p).map_err(LoadError::Policy)?,
                None => Policy::empty(),
            };
            let passwords = match password_path {
                Some(p) => Some(PasswordFile::load(p).map_err(LoadError::Passwords)?),
                None => None,
            };
            Ok((policy, passwords))
        })();
        #[cfg(test)]
        self.midway.reach();
        match result {
            Ok((policy, passwords)) => {
                let has_file = passwords.is_some();
                prepare(&policy);
                Ok(self.swap(&one_at_a_time, policy, passwords.unwrap_or_default(), has_file, now))
            }
            Err(e) => {
                // Logged once, by the caller (vmq_warden_config), which knows
                // which reload it was.
                self.stats.bump(S_RELOADS_FAILED);
                Err(e)
            }
        }
    }

    /// Installs an in-memory policy and password file (tests, embedding).
    /// The password file counts as configured when it has entries. A
    /// credential it changes counts as changed at the latest time a hook
    /// passed in (the core reads no clock). A `Warden`'s firewall is given
    /// its policy through [`crate::warden::Warden::install`] (it counts
    /// per-user sessions first when the policy limits them).
    pub fn install(&self, policy: Policy, passwords: PasswordFile) -> LoadReport {
        self.install_with(policy, passwords, &|_| {})
    }

    /// [`Firewall::install`], calling `prepare` with the policy before it runs.
    pub(crate) fn install_with(&self, policy: Policy, passwords: PasswordFile, prepare: &dyn Fn(&Policy)) -> LoadReport {
        let one_at_a_time = self.changing.lock();
        prepare(&policy);
        let has_file = !passwords.is_empty();
        self.swap(&one_at_a_time, policy, passwords, has_file, self.last_now.load(Ordering::Relaxed))
    }

    fn swap(&self, one_at_a_time: &MutexGuard<'_, ()>, policy: Policy, passwords: PasswordFile, has_password_file: bool, now: Millis) -> LoadReport {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let report = LoadReport {
            warnings: passwords.warnings().iter().map(ToString::to_string).collect(),
            users: policy.users.len(),
            groups: policy.groups.len(),
            rules: policy.rules.len(),
            passwords: passwords.len(),
            generation,
        };
        let mut snap = LoadedPolicy::new(policy, passwords, has_password_file, generation, self.decoy_hasher.clone());
        let old = self.replace_running(one_at_a_time, |r| {
            snap.note_changes_since(&r.snap, now);
            r.snap = Arc::new(snap);
        });
        old.cache.clear();
        self.stats.bump(S_RELOADS_OK);
        report
    }

    /// The running policy's `max_session_age` of `username` (seconds; the
    /// user's, else its first group's that sets it).
    pub fn max_session_age(&self, username: &[u8]) -> Option<u64> {
        self.running.load().snap.policy.user(username).and_then(|u| u.settings.max_session_age)
    }

    /// The running policy's `max_sessions` of `username` (the user's, else
    /// its first group's that sets it).
    pub fn max_sessions(&self, username: &[u8]) -> Option<u32> {
        self.running.load().snap.policy.user(username).and_then(|u| u.settings.max_sessions)
    }

    /// Generation of the running snapshot (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.running.load().snap.generation
    }

    // -- decision ----------------------------------------------------------

    /// First call of a decision: everything that needs no password.
    pub fn begin<'a>(&self, req: AuthRequest<'a>, sessions: &dyn LiveSessions, now: Millis) -> Step<'a> {
        self.note_now(now);
        let running = self.running.load();
        match self.screen(&running.cfg, &running.snap, &req, sessions, now, true) {
            Screen::Done(d) => Step::Done(self.finish(&req, d), req),
            Screen::Password(check) => Step::NeedPassword(PendingAuth { req, check, running }),
        }
    }

    /// Second call, on the normal scheduler: cache hit or fast hash decide
    /// here; a slow hash that is not cached answers `NeedSlowHash`.
    pub fn with_password(&self, pending: &PendingAuth, password: Option<&[u8]>, sessions: &dyn LiveSessions, now: Millis) -> PasswordStep {
        self.note_now(now);
        let pw = match password {
            Some(pw) => pw,
            None => return PasswordStep::Done(self.finish(&pending.req, self.failed(pending, now, "no password given"))),
        };
        let slow = pending.check.slow || self.forced_slow();
        // A hash checked on a dirty scheduler is always worth caching.
        if !pending.check.cached && !slow {
            return PasswordStep::Done(self.verify_now(pending, pw, None, sessions, now));
        }
        let cache = &pending.running.cache;
        match cache.check(pending.username(), pw, pending.check.fingerprint, now) {
            Some(ok) => {
                self.stats.bump(S_CACHE_HITS);
                PasswordStep::Done(self.after_verify(pending, ok, sessions, now))
            }
            None => {
                self.stats.bump(S_CACHE_MISSES);
                if slow {
                    PasswordStep::NeedSlowHash
                } else {
                    PasswordStep::Done(self.verify_now(pending, pw, Some(cache), sessions, now))
                }
            }
        }
    }

    /// Third call, on a dirty scheduler: runs the (slow) verification.
    pub fn verify_slow(&self, pending: &PendingAuth, password: Option<&[u8]>, sessions: &dyn LiveSessions, now: Millis) -> Decision {
        self.note_now(now);
        let Some(pw) = password else {
            return self.finish(&pending.req, self.failed(pending, now, "no password given"));
        };
        let cache = &pending.running.cache;
        let fp = pending.check.fingerprint;
        // A concurrent verification of the same credentials may have finished meanwhile.
        if let Some(ok) = cache.check(pending.username(), pw, fp, now) {
            self.stats.bump(S_CACHE_HITS);
            return self.after_verify(pending, ok, sessions, now);
        }
        self.stats.bump(S_SLOW_VERIFICATIONS);
        self.verify_now(pending, pw, Some(cache), sessions, now)
    }

    #[cfg(test)]
    fn forced_slow(&self) -> bool {
        self.force_slow.load(Ordering::Relaxed)
    }

    #[cfg(not(test))]
    fn forced_slow(&self) -> bool {
        false
    }

    /// One more verification, and what it took: kept in nanoseconds, as a
    /// `$6$` check takes well under a microsecond.
    fn count_verification(&self, took: std::time::Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.stats.add(S_VERIFY_NANOS, nanos);
        self.stats.bump(S_VERIFY_COUNT);
    }

    /// Verifies the password, and tells `cache`, if any, the result.
    fn verify_now(&self, pending: &PendingAuth, pw: &[u8], cache: Option<&AuthCache>, sessions: &dyn LiveSessions, now: Millis) -> Decision {
        let t0 = Instant::now();
        let check = &pending.check;
        let ok = check.hash.verify(pw) && !check.decoy;
        self.count_verification(t0.elapsed());
        if let Some(cache) = cache {
            cache.remember(pending.username(), pw, check.fingerprint, ok, now);
        }
        self.after_verify(pending, ok, sessions, now)
    }

    fn after_verify(&self, pending: &PendingAuth, ok: bool, sessions: &dyn LiveSessions, now: Millis) -> Decision {
        let d = if !ok {
            self.failed(pending, now, "wrong password")
        } else {
            if let Some(p) = pending.req.peer {
                self.peer_bans.record_success(&peer_key(p.ip), now);
            }
            if pending.check.ban_users {
                if let Some(user) = &pending.req.username {
                    self.user_bans.record_success(user, now);
                }
            }
            let bind = pending.running.snap.policy.client_id.bind_to_user;
            post_checks(&pending.req, Some(pending.username()), pending.settings(), sessions, None, bind)
        };
        self.finish(&pending.req, d)
    }

    /// A failed login: counted toward the peer's ban and, with `ban_users`,
    /// the name's, whether a user has it or not (a ban tells no user apart).
    fn failed(&self, pending: &PendingAuth, now: Millis, why: &str) -> Decision {
        if let Some(p) = pending.req.peer {
            if let Some(until) = self.peer_bans.record_failure(&peer_key(p.ip), now) {
                self.ban_started(&format!("peer {}", peer_key(p.ip)), until);
            }
        }
        if pending.check.ban_users {
            if let Some(until) = pending.req.username.as_ref().and_then(|user| self.user_bans.record_failure(user, now)) {
                self.ban_started(&format!("user {}", lossy(pending.username())), until);
            }
        }
        // For the operator's log only; the client sees the same answer.
        let reason = if pending.check.decoy { "credentials: unknown user".to_string() } else { format!("credentials: {why}") };
        refuse(RefusalCode::BadUsernameOrPassword, reason)
    }

    fn ban_started(&self, target: &str, until: Millis) {
        self.stats.bump(S_BANS_STARTED);
        tracing::warn!(target: "vmq_warden::audit", ban = %target, until, "ban started after repeated failed logins");
    }

    /// Counts the decision and writes the audit event of a refusal.
    fn finish(&self, req: &AuthRequest, d: Decision) -> Decision {
        match &d {
            Decision::Accept(_) => {
                self.stats.bump(S_ACCEPTED);
            }
            Decision::Next => {
                self.stats.bump(S_NEXT);
            }
            Decision::Refuse(r) => {
                self.stats.bump(S_REFUSED + r.code.index());
                tracing::info!(
                    target: "vmq_warden::audit",
                    code = r.code.as_str(),
                    reason = %r.reason,
                    client_id = %lossy(&req.key.client_id),
                    peer = %req.peer.map(|p| p.ip.to_string()).unwrap_or_default(),
                    username = %req.username.as_deref().map(lossy).unwrap_or_default(),
                    "connection refused"
                );
            }
        }
        d
    }

    // -- operator API ------------------------------------------------------

    pub fn bans(&self, now: Millis) -> Vec<BanView> {
        let mut v: Vec<BanView> = self
            .peer_bans
            .list(now)
            .into_iter()
            .map(|b| BanView { target: BanTarget::Peer(b.key), until: b.until, remaining_ms: b.remaining_ms })
            .collect();
        v.extend(
            self.user_bans
                .list(now)
                .into_iter()
                .map(|b| BanView { target: BanTarget::Username(b.key), until: b.until, remaining_ms: b.remaining_ms }),
        );
        v
    }

    /// Lifts bans (and forgets failure counters) for the selection; returns
    /// the number of active bans lifted.
    pub fn clear_bans(&self, sel: BanSelector) -> usize {
        let now = self.last_now.load(Ordering::Relaxed);
        match sel {
            BanSelector::All => self.peer_bans.clear_all(now) + self.user_bans.clear_all(now),
            BanSelector::Peer(ip) => self.peer_bans.clear_key(&peer_key(ip), now),
            BanSelector::Username(u) => self.user_bans.clear_key(&u, now),
        }
    }

    /// Forgets every connection-rate bucket.
    pub fn clear_rate_limits(&self) {
        self.peer_rate.clear();
        self.user_rate.clear();
    }

    /// Empties the credential cache (e.g. after an operator changed a password by hand).
    pub fn clear_cache(&self) {
        self.running.load().cache.clear();
    }

    pub fn stats(&self) -> FirewallStats {
        let now = self.last_now.load(Ordering::Relaxed);
        let l = |i| self.stats.get(i);
        FirewallStats {
            accepted: l(S_ACCEPTED),
            next: l(S_NEXT),
            refused: RefusalCode::ALL.iter().map(|c| (*c, l(S_REFUSED + c.index()))).collect(),
            cache_hits: l(S_CACHE_HITS),
            cache_misses: l(S_CACHE_MISSES),
            slow_verifications: l(S_SLOW_VERIFICATIONS),
            bans_started: l(S_BANS_STARTED),
            bans_active: (self.peer_bans.active(now) + self.user_bans.active(now)) as u64,
            reloads_ok: l(S_RELOADS_OK),
            reloads_failed: l(S_RELOADS_FAILED),
            verify_micros_total: l(S_VERIFY_NANOS) / 1000,
            verify_count: l(S_VERIFY_COUNT),
            tracked_peers: (self.peer_rate.len() + self.peer_bans.len()) as u64,
            tracked_users: (self.user_rate.len() + self.user_bans.len()) as u64,
        }
    }
}

// Moved once or twice per connect; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
impl Firewall {
    /// The periodic sweep: drops idle rate-limit buckets and ban counters
    /// (bans that run stay) and gives their memory back; returns how many.
    pub fn sweep_limits(&self, now: Millis) -> usize {
        self.peer_rate.sweep(now) + self.user_rate.sweep(now) + self.peer_bans.sweep(now) + self.user_bans.sweep(now)
    }
}

mod checks;
mod identity;
mod recheck;
mod screen;
mod types;

use checks::*;
pub use identity::cert_identity_name;
use identity::Decoys;
pub use types::*;

#[cfg(test)]
mod tests;
