//! The admission decision engine behind auth_on_register(_m5).
//!
//! A decision takes 1 to 3 calls so that slow password hashes run on a dirty
//! scheduler: [`Firewall::begin`] (no password needed yet), then
//! [`Firewall::with_password`] on the normal scheduler (cache hit or fast
//! hash), then, only if that answered [`PasswordStep::NeedSlowHash`],
//! [`Firewall::verify_slow`] on a dirty scheduler. The [`PendingAuth`] carried
//! between the calls owns the policy snapshot the decision started with, so a
//! reload in between never mixes two policies.
//!
//! Decision order (first step that decides wins):
//! 1. bans: the peer address, then the username (failed-login bans)
//! 2. connection-rate limits: per peer address, then per username
//! 3. (no policy file and no password file at all: `default_decision`)
//! 4. ordered rules, first match wins: `allow` skips steps 5-8, `deny`
//!    refuses with the rule's reason/code, `next` answers next
//! 5. peer network allow/deny lists
//! 6. client id constraints
//! 7. username constraints
//! 8. anonymous clients: allowed globally / per listener
//! 9. certificate identity (per listener): the username comes from the client
//!    certificate; the certificate replaces the password
//! 10. credentials: anonymous (allowed) -> step 11; unknown user ->
//!     `unknown_user` (or `default_decision` when no user source exists);
//!     known user -> password check (cache, then hash); wrong password ->
//!     bad_username_or_password, counted toward bans
//! 11. per-user / per-group: allowed peer networks, max concurrent sessions,
//!     session modifiers -> accept

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use arc_swap::ArcSwap;
use serde::Deserialize;

use crate::credentials::{self, AuthCache, PasswordFile, PasswordHash};
use crate::limits::{peer_key, BanTable, RateLimiter};
use crate::striped::StripedCounters;
use crate::policy::{in_networks, Action, CertField, MatchInput, Policy, PolicyError, Settings};
pub use crate::policy::{ModValue, Modifiers};
use crate::types::{Millis, Peer, Protocol, SubscriberKey};

// ---------------------------------------------------------------------------
// Configuration and request/decision types
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownUser {
    Next,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultDecision {
    Allow,
    Deny,
    Next,
}

/// Engine settings (the app env of DESIGN.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FirewallConfig {
    pub unknown_user: UnknownUser,
    /// When neither a policy nor a password file knows the client.
    pub default_decision: DefaultDecision,
    pub allow_anonymous: bool,
    /// Connects per second per peer address; 0 = off.
    pub rate_per_peer: f64,
    pub burst_per_peer: u32,
    /// Connects per second per username; 0 = off.
    pub rate_per_user: f64,
    pub burst_per_user: u32,
    /// Failed logins within `ban_window_ms` that ban an address (or, with
    /// `ban_users`, a username); 0 = off.
    pub ban_threshold: u32,
    /// Also ban usernames (known and unknown alike) after failed logins.
    /// Off by default: a stranger could otherwise lock a user out.
    pub ban_users: bool,
    pub ban_window_ms: u64,
    pub ban_duration_ms: u64,
    pub cache_size: usize,
    pub cache_ok_ttl_ms: u64,
    pub cache_fail_ttl_ms: u64,
    /// Bound of each limiter and ban table.
    pub max_tracked: usize,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            unknown_user: UnknownUser::Next,
            default_decision: DefaultDecision::Next,
            allow_anonymous: false,
            rate_per_peer: 0.0,
            burst_per_peer: 10,
            rate_per_user: 0.0,
            burst_per_user: 10,
            ban_threshold: 10,
            ban_users: false,
            ban_window_ms: 60_000,
            ban_duration_ms: 300_000,
            cache_size: 10_000,
            cache_ok_ttl_ms: 60_000,
            cache_fail_ttl_ms: 5_000,
            max_tracked: 100_000,
        }
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

#[derive(Clone, Debug)]
pub struct AuthRequest {
    pub key: SubscriberKey,
    pub peer: Option<Peer>,
    /// `None` for an anonymous client (`undefined`).
    pub username: Option<Vec<u8>>,
    pub has_password: bool,
    pub clean_session: bool,
    pub protocol: Protocol,
    pub listener: Option<Listener>,
    /// DER of the client certificate, when the listener forwards it.
    pub client_cert: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept(Modifiers),
    Refuse(Refusal),
    Next,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    /// `step-or-rule: human reason`. Never contains a password or hash.
    pub reason: String,
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

    fn index(self) -> usize {
        self as usize
    }
}

/// Session counts from the registry.
pub trait LiveSessions {
    fn live_sessions_of_user(&self, username: &[u8]) -> usize;
    /// Whether `key` is one of the live sessions counted for `username`: a
    /// reconnect of that client id takes its own session over, so it does not
    /// add one. Default: unknown (false).
    fn has_live_session(&self, _username: &[u8], _key: &SubscriberKey) -> bool {
        false
    }
    /// Whose session (online or offline) `key` is: `None` if it has none,
    /// `Some(None)` for an anonymous one. Default: none.
    fn owner_of(&self, _key: &SubscriberKey) -> Option<Option<Vec<u8>>> {
        None
    }
}

/// No registry: every user has 0 sessions.
pub struct NoSessions;

impl LiveSessions for NoSessions {
    fn live_sessions_of_user(&self, _username: &[u8]) -> usize {
        0
    }
}

// The Done variant is moved once, straight to the caller.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// The decision, and the request given back (the caller registers an
    /// accepted client from it without having kept a copy).
    Done(Decision, AuthRequest),
    /// Boxed once here: it waits between the NIF calls of one login and
    /// changes hands several times (over 500 bytes).
    NeedPassword(Box<PendingAuth>),
}

#[derive(Debug, PartialEq, Eq)]
// Moved once or twice per connect; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum PasswordStep {
    Done(Decision),
    NeedSlowHash,
}

/// What is held between `begin` and the password calls: the request, moved
/// in by `begin` (no copy of the client's key, username or certificate),
/// and the check `screen` decided on.
pub struct PendingAuth {
    req: AuthRequest,
    check: PasswordCheck,
}

/// The password check of one login, bound to the policy snapshot it started
/// with.
struct PasswordCheck {
    snap: Arc<Snapshot>,
    identity: Vec<u8>,
    hash: PasswordHash,
    fingerprint: u64,
    slow: bool,
    /// `unknown_user = deny`: `hash` is a decoy (see [`Decoys`]); the
    /// check runs like a known user's and then refuses.
    decoy: bool,
    settings: Settings,
}

/// Stand-ins for the hash of a name no user has (`unknown_user = deny`):
/// one decoy per cost class of the known users' hashes (same scheme and
/// cost, random salt and value). A name picks its class by a keyed hash,
/// weighted like the known users, so an unknown name takes the path and
/// the time of a known user of that class, the same class every time.
struct Decoys {
    /// (known users of this class and all classes before it, decoy)
    classes: Vec<(u64, PasswordHash)>,
    hasher: ahash::RandomState,
}

impl Decoys {
    /// `hasher` is the firewall's, kept across reloads: a name keeps its
    /// class for as long as the classes stay.
    fn new<'a>(known: impl Iterator<Item = &'a PasswordHash>, hasher: ahash::RandomState) -> Decoys {
        let mut counts: Vec<(String, u64, &PasswordHash)> = Vec::new();
        for h in known {
            let class = h.cost_class();
            match counts.iter_mut().find(|(c, _, _)| *c == class) {
                Some(entry) => entry.1 += 1,
                None => counts.push((class, 1, h)),
            }
        }
        // Deterministic order, whatever the maps' iteration order.
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut total = 0;
        let classes = counts
            .into_iter()
            .map(|(_, n, h)| {
                total += n;
                (total, h.decoy())
            })
            .collect();
        Decoys { classes, hasher }
    }

    fn pick(&self, name: &[u8]) -> PasswordHash {
        let Some(&(total, _)) = self.classes.last() else {
            return credentials::hash::default_decoy();
        };
        let at = self.hasher.hash_one(name) % total;
        let i = self.classes.partition_point(|(upto, _)| *upto <= at);
        self.classes[i].1.clone()
    }
}

impl PendingAuth {
    pub fn request(&self) -> &AuthRequest {
        &self.req
    }

    pub fn username(&self) -> &[u8] {
        &self.check.identity
    }

    /// Generation of the policy snapshot this decision runs against.
    pub fn generation(&self) -> u64 {
        self.check.snap.generation
    }
}

impl fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuth")
            .field("key", &self.req.key)
            .field("username", &String::from_utf8_lossy(&self.check.identity))
            .field("generation", &self.check.snap.generation)
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

struct Snapshot {
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
}

impl Snapshot {
    fn new(policy: Policy, passwords: PasswordFile, has_password_file: bool, generation: u64, decoy_hasher: ahash::RandomState) -> Snapshot {
        let decoys = Decoys::new(passwords.hashes().chain(policy.users.values().filter_map(|u| u.password.as_ref())), decoy_hasher);
        let listener_conditions = policy.has_listener_conditions();
        Snapshot {
            policy,
            passwords,
            has_password_file,
            generation,
            decoys,
            listener_conditions,
            warned_no_listener: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn knows_nothing(&self) -> bool {
        !self.policy.configured && !self.has_password_file
    }

    fn has_user_source(&self) -> bool {
        !self.policy.users.is_empty() || self.has_password_file
    }
}

// ---------------------------------------------------------------------------
// Ban API types
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanTarget {
    /// IPv4 /32 or IPv6 /64.
    Peer(IpNet),
    Username(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanView {
    pub target: BanTarget,
    pub until: Millis,
    pub remaining_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanSelector {
    All,
    Peer(IpAddr),
    Username(Vec<u8>),
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
const S_VERIFY_MICROS: usize = 8;
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
// Certificates
// ---------------------------------------------------------------------------

/// The identity in a DER client certificate, read from `from`.
pub fn cert_identity_name(der: &[u8], from: CertField) -> Result<Vec<u8>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| "client certificate is not valid DER X.509".to_string())?;
    if from == CertField::Cn {
        let cn = cert.subject().iter_common_name().next().ok_or("client certificate has no subject CN")?;
        let s = cn.as_str().map_err(|_| "client certificate CN is not a string")?;
        return Ok(s.as_bytes().to_vec());
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| "client certificate has a malformed subjectAltName")?
        .ok_or("client certificate has no subjectAltName")?;
    for name in &san.value.general_names {
        let v = match (from, name) {
            (CertField::SanDns | CertField::San, GeneralName::DNSName(s)) => s,
            (CertField::SanEmail | CertField::San, GeneralName::RFC822Name(s)) => s,
            (CertField::SanUri | CertField::San, GeneralName::URI(s)) => s,
            _ => continue,
        };
        return Ok(v.as_bytes().to_vec());
    }
    Err("client certificate has no subjectAltName of the configured kind".to_string())
}

// ---------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------

pub struct Firewall {
    // Read on every connect, replaced on reload or reconfiguration: ArcSwap
    // reads write no cache line shared by the schedulers, a RwLock's do.
    cfg: ArcSwap<FirewallConfig>,
    snap: ArcSwap<Snapshot>,
    cache: ArcSwap<AuthCache>,
    peer_rate: RateLimiter<IpNet>,
    user_rate: RateLimiter<Vec<u8>>,
    peer_bans: BanTable<IpNet>,
    user_bans: BanTable<Vec<u8>>,
    stats: StripedCounters<N_STATS>,
    generation: AtomicU64,
    last_now: AtomicU64,
    /// Keys the decoy choice of unknown names (`Decoys`), for the
    /// firewall's lifetime.
    decoy_hasher: ahash::RandomState,
    /// Tests: treat every hash as slow (the slow formats live on the credentials branch).
    #[cfg(test)]
    pub(crate) force_slow: std::sync::atomic::AtomicBool,
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
            cfg: ArcSwap::from_pointee(cfg),
            snap: ArcSwap::from_pointee(Snapshot::new(Policy::empty(), PasswordFile::default(), false, 0, decoy_hasher.clone())),
            cache: ArcSwap::from_pointee(AuthCache::new(cfg.cache_size, cfg.cache_ok_ttl_ms, cfg.cache_fail_ttl_ms)),
            peer_rate: RateLimiter::new(cfg.rate_per_peer, cfg.burst_per_peer, cfg.max_tracked),
            user_rate: RateLimiter::new(cfg.rate_per_user, cfg.burst_per_user, cfg.max_tracked),
            peer_bans: BanTable::new(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked),
            user_bans: BanTable::new(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked),
            stats: StripedCounters::default(),
            generation: AtomicU64::new(0),
            last_now: AtomicU64::new(0),
            decoy_hasher,
            #[cfg(test)]
            force_slow: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// New settings. Limiter and ban tables keep their entries; the cache is
    /// rebuilt (emptied) only when its size or TTLs change.
    pub fn reconfigure(&self, cfg: FirewallConfig) {
        let old = *self.cfg.swap(Arc::new(cfg));
        self.peer_rate.set_params(cfg.rate_per_peer, cfg.burst_per_peer, cfg.max_tracked);
        self.user_rate.set_params(cfg.rate_per_user, cfg.burst_per_user, cfg.max_tracked);
        self.peer_bans.set_params(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked);
        self.user_bans.set_params(cfg.ban_threshold, cfg.ban_window_ms, cfg.ban_duration_ms, cfg.max_tracked);
        if (old.cache_size, old.cache_ok_ttl_ms, old.cache_fail_ttl_ms) != (cfg.cache_size, cfg.cache_ok_ttl_ms, cfg.cache_fail_ttl_ms) {
            self.cache.store(Arc::new(AuthCache::new(cfg.cache_size, cfg.cache_ok_ttl_ms, cfg.cache_fail_ttl_ms)));
        }
    }

    pub fn config(&self) -> FirewallConfig {
        **self.cfg.load()
    }

    /// The decision clock, for `stats` (active bans "now"): written only when
    /// it moves, so connects within the same millisecond share no write.
    fn note_now(&self, now: Millis) {
        if now > self.last_now.load(Ordering::Relaxed) {
            self.last_now.fetch_max(now, Ordering::Relaxed);
        }
    }

    /// Parses both files and swaps them in as one snapshot. On any error the
    /// running snapshot stays. Password-file lines that cannot be used are
    /// warnings; an unreadable password file is an error.
    pub fn load(&self, policy_path: Option<&Path>, password_path: Option<&Path>) -> Result<LoadReport, LoadError> {
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
        match result {
            Ok((policy, passwords)) => {
                let has_file = passwords.is_some();
                Ok(self.swap(policy, passwords.unwrap_or_default(), has_file))
            }
            Err(e) => {
                self.stats.bump(S_RELOADS_FAILED);
                tracing::error!(target: "vmq_warden", error = %e, "policy reload failed; keeping the running policy");
                Err(e)
            }
        }
    }

    /// Installs an in-memory policy and password file (tests, embedding).
    /// The password file counts as configured when it has entries.
    pub fn install(&self, policy: Policy, passwords: PasswordFile) -> LoadReport {
        let has_file = !passwords.is_empty();
        self.swap(policy, passwords, has_file)
    }

    fn swap(&self, policy: Policy, passwords: PasswordFile, has_password_file: bool) -> LoadReport {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let report = LoadReport {
            warnings: passwords.warnings().iter().map(ToString::to_string).collect(),
            users: policy.users.len(),
            groups: policy.groups.len(),
            rules: policy.rules.len(),
            passwords: passwords.len(),
            generation,
        };
        let snap = Arc::new(Snapshot::new(policy, passwords, has_password_file, generation, self.decoy_hasher.clone()));
        self.snap.store(snap);
        self.cache.load().clear();
        self.stats.bump(S_RELOADS_OK);
        for w in &report.warnings {
            tracing::warn!(target: "vmq_warden", warning = %w, "password file line skipped");
        }
        report
    }

    /// Generation of the running snapshot (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.snap.load().generation
    }

    // -- decision ----------------------------------------------------------

    /// First call of a decision: everything that needs no password.
    pub fn begin(&self, req: AuthRequest, sessions: &dyn LiveSessions, now: Millis) -> Step {
        self.note_now(now);
        let cfg = self.config();
        let snap = self.snap.load();
        match self.screen(&cfg, &snap, &req, sessions, now) {
            Screen::Done(d) => Step::Done(self.finish(&req, d), req),
            Screen::Password(check) => Step::NeedPassword(Box::new(PendingAuth { req, check })),
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
        let cache = self.cache.load();
        let (fp, slow) = (pending.check.fingerprint, pending.check.slow || self.forced_slow());
        match cache.check(&pending.check.identity, pw, fp, now) {
            Some(ok) => {
                self.stats.bump(S_CACHE_HITS);
                PasswordStep::Done(self.after_verify(pending, ok, sessions, now))
            }
            None => {
                self.stats.bump(S_CACHE_MISSES);
                if slow {
                    PasswordStep::NeedSlowHash
                } else {
                    PasswordStep::Done(self.verify_now(pending, pw, &cache, sessions, now))
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
        let cache = self.cache.load();
        let fp = pending.check.fingerprint;
        // A concurrent verification of the same credentials may have finished meanwhile.
        if let Some(ok) = cache.check(&pending.check.identity, pw, fp, now) {
            self.stats.bump(S_CACHE_HITS);
            return self.after_verify(pending, ok, sessions, now);
        }
        self.stats.bump(S_SLOW_VERIFICATIONS);
        self.verify_now(pending, pw, &cache, sessions, now)
    }

    #[cfg(test)]
    fn forced_slow(&self) -> bool {
        self.force_slow.load(Ordering::Relaxed)
    }

    #[cfg(not(test))]
    fn forced_slow(&self) -> bool {
        false
    }

    fn verify_now(&self, pending: &PendingAuth, pw: &[u8], cache: &AuthCache, sessions: &dyn LiveSessions, now: Millis) -> Decision {
        let t0 = Instant::now();
        let check = &pending.check;
        let ok = check.hash.verify(pw) && !check.decoy;
        let fp = check.fingerprint;
        let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.add(S_VERIFY_MICROS, micros);
        self.stats.bump(S_VERIFY_COUNT);
        cache.remember(&pending.check.identity, pw, fp, ok, now);
        self.after_verify(pending, ok, sessions, now)
    }

    fn after_verify(&self, pending: &PendingAuth, ok: bool, sessions: &dyn LiveSessions, now: Millis) -> Decision {
        let d = if !ok {
            self.failed(pending, now, "wrong password")
        } else {
            if let Some(p) = pending.req.peer {
                self.peer_bans.record_success(&peer_key(p.ip), now);
            }
            if self.config().ban_users {
                self.user_bans.record_success(&pending.check.identity, now);
            }
            let bind = pending.check.snap.policy.client_id.bind_to_user;
            post_checks(&pending.req, Some(&pending.check.identity), &pending.check.settings, sessions, None, bind)
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
        if self.config().ban_users {
            if let Some(until) = self.user_bans.record_failure(&pending.check.identity, now) {
                self.ban_started(&format!("user {}", lossy(&pending.check.identity)), until);
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

    /// Everything before the password, in the order of POLICY.md's
    /// decision table.
    fn screen(&self, cfg: &FirewallConfig, snap: &Arc<Snapshot>, req: &AuthRequest, sessions: &dyn LiveSessions, now: Millis) -> Screen {
        use Screen::Done;
        let policy = &snap.policy;
        let peer_ip = req.peer.map(|p| p.ip);

        // 0. lengths, before any matcher or table sees the bytes
        if let Err(why) = check_lengths(policy, &req.key.client_id, req.username.as_deref()) {
            return Done(Decision::Refuse(why));
        }
        // 1. bans
        if let Some(ip) = peer_ip {
            if let Some(until) = self.peer_bans.banned_until(&peer_key(ip), now) {
                return Done(refuse(RefusalCode::Banned, format!("ban: peer address banned for {} s after failed logins", (until - now).div_ceil(1000))));
            }
        }
        if let (true, Some(u)) = (cfg.ban_users, &req.username) {
            if let Some(until) = self.user_bans.banned_until(u, now) {
                return Done(refuse(RefusalCode::Banned, format!("ban: username banned for {} s after failed logins", (until - now).div_ceil(1000))));
            }
        }
        // 2. rate limits
        if let Some(ip) = peer_ip {
            if !self.peer_rate.try_acquire(&peer_key(ip), now) {
                return Done(refuse(RefusalCode::ConnectionRateExceeded, "rate_limit: too many connects from this address"));
            }
        }
        if let Some(u) = &req.username {
            if !self.user_rate.try_acquire(u, now) {
                return Done(refuse(RefusalCode::ConnectionRateExceeded, "rate_limit: too many connects for this user"));
            }
        }
        // 3. nothing configured at all
        if snap.knows_nothing() {
            return Done(default_decision(cfg));
        }

        let listener = req.listener.as_ref();
        if listener.is_none() && snap.listener_conditions && !snap.warned_no_listener.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "vmq_warden",
                "the policy names listeners, but the broker sends no listener data (VerneMQ 2.2 metadata): \
                 listener deny rules, per-listener anonymous refusals and required certificates apply to every \
                 connect, listener allow rules to none"
            );
        }
        // The identity every identity rule looks at: the certificate's, when
        // a cert_identity entry applies (enforced at step 9), else the
        // CONNECT username.
        let cert_rule = policy.cert_identity.iter().find(|c| c.applies(listener, req.client_cert.is_some()));
        let cert_name = match (cert_rule, &req.client_cert) {
            (Some(c), Some(der)) => Some(cert_identity_name(der, c.from)),
            _ => None,
        };
        let identity: Option<&[u8]> = match &cert_name {
            Some(Ok(n)) => Some(n),
            _ => req.username.as_deref(),
        };
        if let (Some(Ok(n)), false) = (&cert_name, req.username.as_deref() == identity) {
            if let Err(why) = check_lengths(policy, &req.key.client_id, Some(n)) {
                return Done(Decision::Refuse(why));
            }
        }

        // 4. rules: first match; a deny whose listener condition cannot be
        // evaluated holds (fail closed), an allow's does not
        let input = MatchInput {
            peer: peer_ip,
            listener,
            client_id: &req.key.client_id,
            username: identity,
            protocol: req.protocol,
            has_cert: req.client_cert.is_some(),
        };
        let mut allowed_by_rule = false;
        for rule in &policy.rules {
            let hit = match rule.action {
                Action::Deny => rule.when.matches_failing_closed(&input),
                Action::Allow | Action::Next => rule.when.matches(&input),
            };
            if hit {
                match rule.action {
                    Action::Allow => allowed_by_rule = true,
                    Action::Deny => return Done(refuse(rule.code, format!("rule {}: {}", rule.name, rule.reason))),
                    Action::Next => return Done(Decision::Next),
                }
                break;
            }
        }

        // 5. peer networks: an allow rule lifts network.allow, never network.deny
        let net = &policy.network;
        if peer_ip.is_some_and(|ip| in_networks(&net.deny, ip)) {
            return Done(refuse(RefusalCode::NotAuthorized, "network: peer address is in network.deny"));
        }
        if !allowed_by_rule && !net.allow.is_empty() && !peer_ip.is_some_and(|ip| in_networks(&net.allow, ip)) {
            return Done(refuse(RefusalCode::NotAuthorized, "network: peer address is not in network.allow"));
        }
        // 6. client id, 7. username: they bind whatever rule allowed
        if let Err(why) = check_client_id(policy, &req.key.client_id, identity) {
            return Done(refuse(RefusalCode::ClientIdentifierNotValid, format!("client_id: {why}")));
        }
        if let Some(u) = identity {
            if let Err(why) = check_username(policy, u) {
                return Done(refuse(RefusalCode::NotAuthorized, format!("username: {why}")));
            }
        }
        // 8. anonymous (an allow rule may admit an anonymous client)
        if !allowed_by_rule && identity.is_none() && cert_name.is_none() && !policy.anonymous.allowed(listener, cfg.allow_anonymous) {
            return Done(refuse(RefusalCode::NotAuthorized, "anonymous: clients without a username are not allowed on this listener"));
        }

        let bind = policy.client_id.bind_to_user;
        // 9. certificate identity
        if let Some(c) = cert_rule {
            match cert_name {
                Some(Err(why)) => return Done(refuse(RefusalCode::NotAuthorized, format!("cert_identity: {why}"))),
                Some(Ok(name)) => {
                    if c.username_must_match {
                        if let Some(u) = &req.username {
                            if *u != name {
                                return Done(refuse(RefusalCode::NotAuthorized, "cert_identity: username does not match the client certificate"));
                            }
                        }
                    }
                    let settings = match policy.user(&name) {
                        Some(u) => &u.settings,
                        None if c.require_known => {
                            return Done(refuse(RefusalCode::NotAuthorized, "cert_identity: certificate identity is not a known user"))
                        }
                        None => &c.settings,
                    };
                    let rename = (req.username.as_deref() != Some(name.as_slice())).then(|| name.clone());
                    return Done(post_checks(req, Some(&name), settings, sessions, rename, bind));
                }
                None if c.required => {
                    return Done(refuse(RefusalCode::NotAuthorized, "cert_identity: a client certificate is required on this listener"))
                }
                None => {}
            }
        }

        // 10. credentials
        let Some(user) = &req.username else {
            return Done(post_checks(req, None, &policy.anonymous.settings, sessions, None, bind));
        };
        let policy_user = policy.user(user);
        let hash = policy_user.and_then(|u| u.password.as_ref()).or_else(|| snap.passwords.get(user));
        let settings = policy_user.map(|u| u.settings.clone()).unwrap_or_default();
        let check = |hash: PasswordHash, decoy: bool| {
            Screen::Password(PasswordCheck {
                snap: snap.clone(),
                identity: user.clone(),
                fingerprint: hash.fingerprint(),
                slow: hash.is_slow(),
                hash,
                decoy,
                settings,
            })
        };
        match hash {
            Some(h) => check(h.clone(), false),
            None if !snap.has_user_source() => Done(default_decision(cfg)),
            None => match cfg.unknown_user {
                UnknownUser::Next => Done(Decision::Next),
                UnknownUser::Deny => check(snap.decoys.pick(user), true),
            },
        }
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

    /// Empties the credential cache (e.g. after an operator changed a password by hand).
    pub fn clear_cache(&self) {
        self.cache.load().clear();
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
            verify_micros_total: l(S_VERIFY_MICROS),
            verify_count: l(S_VERIFY_COUNT),
            tracked_peers: (self.peer_rate.len() + self.peer_bans.len()) as u64,
            tracked_users: (self.user_rate.len() + self.user_bans.len()) as u64,
        }
    }
}

// Moved once or twice per connect; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Screen {
    Done(Decision),
    Password(PasswordCheck),
}

fn refuse(code: RefusalCode, reason: impl Into<String>) -> Decision {
    Decision::Refuse(Refusal { code, reason: reason.into() })
}

fn default_decision(cfg: &FirewallConfig) -> Decision {
    match cfg.default_decision {
        DefaultDecision::Allow => Decision::Accept(Modifiers::default()),
        DefaultDecision::Deny => refuse(RefusalCode::NotAuthorized, "default_decision: no policy or password file knows this client"),
        DefaultDecision::Next => Decision::Next,
    }
}

/// Step 11: the identified client's own restrictions, then accept.
fn post_checks(
    req: &AuthRequest,
    identity: Option<&[u8]>,
    settings: &Settings,
    sessions: &dyn LiveSessions,
    rename: Option<Vec<u8>>,
    bind: bool,
) -> Decision {
    let who = identity.map(|u| format!("user {:?}", lossy(u))).unwrap_or_else(|| "anonymous".to_string());
    if let Some(nets) = &settings.networks {
        if !nets.is_empty() && !req.peer.is_some_and(|p| in_networks(nets, p.ip)) {
            return refuse(RefusalCode::NotAuthorized, format!("networks: {who} may not connect from this address"));
        }
    }
    let mut mods = settings.modifiers.resolve(&req.key);
    // The registry holds the session under the subscriber id the client
    // registers with, i.e. after a mountpoint rewrite.
    let key = mods.subscriber_id.as_ref().unwrap_or(&req.key);
    if bind {
        if let Some(Some(owner)) = sessions.owner_of(key) {
            if identity != Some(owner.as_slice()) {
                return refuse(
                    RefusalCode::NotAuthorized,
                    format!("client_id: the session of this client id belongs to user {:?}, not to {who}", lossy(&owner)),
                );
            }
        }
    }
    if let (Some(max), Some(u)) = (settings.max_sessions, identity) {
        let mut live = sessions.live_sessions_of_user(u);
        if live > 0 && sessions.has_live_session(u, key) {
            live -= 1; // this client id takes its own session over
        }
        if live >= max as usize {
            return refuse(RefusalCode::QuotaExceeded, format!("max_sessions: {who} already has {live} of {max} sessions"));
        }
    }
    mods.username = rename;
    Decision::Accept(mods)
}

/// Step 0: the configured length bounds, checked before any matcher, table
/// or hash sees the client id or the identity.
fn check_lengths(policy: &Policy, client_id: &[u8], identity: Option<&[u8]>) -> Result<(), Refusal> {
    if let Some(max) = policy.client_id.max_length {
        if client_id.len() > max {
            return Err(Refusal { code: RefusalCode::ClientIdentifierNotValid, reason: format!("client_id: longer than {max} bytes") });
        }
    }
    if let (Some(max), Some(u)) = (policy.username.max_length, identity) {
        if u.len() > max {
            return Err(Refusal { code: RefusalCode::NotAuthorized, reason: format!("username: longer than {max} bytes") });
        }
    }
    Ok(())
}

fn check_client_id(policy: &Policy, id: &[u8], user: Option<&[u8]>) -> Result<(), String> {
    let c = &policy.client_id;
    if let Some(ranges) = &c.allowed_chars {
        if !id.iter().all(|b| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(b))) {
            return Err("contains characters outside client_id.allowed_chars".into());
        }
    }
    if let Some(re) = &c.pattern {
        if !re.is_match(id) {
            return Err("does not match client_id.pattern".into());
        }
    }
    for r in &c.reserved {
        if id.starts_with(&r.prefix) {
            let exempt = user.is_some_and(|u| r.users.contains(u) || r.groups.iter().any(|g| policy.in_group(u, g)));
            if !exempt {
                return Err(format!("prefix {:?} is reserved", lossy(&r.prefix)));
            }
        }
    }
    if let Some(u) = user {
        if c.must_start_with_username && !id.starts_with(u) {
            return Err("must start with the username".into());
        }
        if let Some(p) = &c.username_pattern {
            if !p.matches(u, id) {
                return Err(format!("does not match {:?} for this username", p.source));
            }
        }
    }
    Ok(())
}

fn check_username(policy: &Policy, u: &[u8]) -> Result<(), String> {
    let c = &policy.username;
    if c.deny.contains(u) {
        return Err("this username is not allowed".into());
    }
    if let Some(re) = &c.pattern {
        if !re.is_match(u) {
            return Err("does not match username.pattern".into());
        }
    }
    Ok(())
}

impl Firewall {
    /// The periodic sweep: drops idle rate-limit buckets and ban counters
    /// (bans that run stay) and gives their memory back; returns how many.
    pub fn sweep_limits(&self, now: Millis) -> usize {
        self.peer_rate.sweep(now) + self.user_rate.sweep(now) + self.peer_bans.sweep(now) + self.user_bans.sweep(now)
    }
}

#[cfg(test)]
mod tests;
