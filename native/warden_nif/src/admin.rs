//! Configuration, the operator API's reads (lookup, list, counts, stats,
//! endings, bans) and test hooks. Bulk reads and file loading run on dirty
//! schedulers: they may take longer than a scheduler slice.

use std::path::PathBuf;
use std::str::FromStr;

use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, Error, NifResult, Term, TermType};
use warden_core::firewall::{BanSelector, BanTarget, DefaultDecision, FirewallConfig, UnknownUser};
use warden_core::registry::{Filter, KeyRef, SessionState};
use warden_core::IpNet;

use crate::timing::{self, Nif};
use crate::pending::PENDING;
use crate::state::{now, Hook, WARDEN};
use crate::{atoms, decode, encode, logbridge};

/// `Settings` is the map built by `vmq_warden_config:settings/0` (already
/// validated there); missing keys keep their defaults.
#[rustler::nif]
fn configure(settings: Term) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Admin);
    let iter = MapIterator::new(settings).ok_or(Error::BadArg)?;
    let mut cfg = FirewallConfig::default();
    for (k, v) in iter {
        let key: Atom = k.decode()?;
        let name = key.to_term(settings.get_env()).atom_to_string()?;
        let int = || v.decode::<u64>();
        match name.as_str() {
            "unknown_user" => cfg.unknown_user = if atom_is(v, "deny") { UnknownUser::Deny } else { UnknownUser::Next },
            "default_decision" => {
                cfg.default_decision = if atom_is(v, "allow") {
                    DefaultDecision::Allow
                } else if atom_is(v, "deny") {
                    DefaultDecision::Deny
                } else {
                    DefaultDecision::Next
                }
            }
            "allow_anonymous" => cfg.allow_anonymous = v.decode()?,
            "auth_cache_size" => cfg.cache_size = int()? as usize,
            "auth_cache_ttl" => cfg.cache_ok_ttl_ms = int()?,
            "auth_fail_ttl" => cfg.cache_fail_ttl_ms = int()?,
            "rate_per_peer" => cfg.rate_per_peer = number(v)?,
            "burst_per_peer" => cfg.burst_per_peer = int()? as u32,
            "rate_per_user" => cfg.rate_per_user = number(v)?,
            "burst_per_user" => cfg.burst_per_user = int()? as u32,
            "ban_threshold" => cfg.ban_threshold = int()? as u32,
            "ban_window" => cfg.ban_window_ms = int()?,
            "ban_duration" => cfg.ban_duration_ms = int()?,
            "history_size" => WARDEN.registry.set_history_size(int()? as usize),
            "pending_ttl" => WARDEN.registry.set_pending_ttl(int()?),
            "log_level" => logbridge::set_level(&v.atom_to_string()?),
            _ => {}
        }
    }
    WARDEN.firewall.reconfigure(cfg);
    Ok(atoms::ok())
}

fn atom_is(term: Term, name: &str) -> bool {
    term.atom_to_string().map(|s| s == name).unwrap_or(false)
}

fn number(term: Term) -> NifResult<f64> {
    match term.get_type() {
        TermType::Float => term.decode(),
        _ => term.decode::<u64>().map(|i| i as f64),
    }
}

fn opt_path(term: Term) -> NifResult<Option<PathBuf>> {
    Ok(decode::opt_bytes(term)?.map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned())))
}

/// Parse both files, then swap them in at once; on error the running policy
/// stays and the error names file, line and reason.
#[rustler::nif(schedule = "DirtyIo")]
fn load_files<'a>(env: Env<'a>, policy: Term<'a>, passwords: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::LoadFiles);
    let policy = opt_path(policy)?;
    let passwords = opt_path(passwords)?;
    Ok(match WARDEN.firewall.load(policy.as_deref(), passwords.as_deref()) {
        Ok(report) => {
            let warnings: Vec<Term> = report.warnings.iter().map(|w| w.to_string().encode(env)).collect();
            let map = encode::map_of(
                env,
                &[
                    ("warnings", warnings.encode(env)),
                    ("users", report.users.encode(env)),
                    ("groups", report.groups.encode(env)),
                    ("rules", report.rules.encode(env)),
                    ("passwords", report.passwords.encode(env)),
                    ("generation", report.generation.encode(env)),
                ],
            );
            (atoms::ok(), map).encode(env)
        }
        Err(e) => (atoms::error(), e.to_string()).encode(env),
    })
}

#[rustler::nif]
fn lookup<'a>(env: Env<'a>, mountpoint: Term<'a>, client_id: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::Lookup);
    let (mp, cid) = decode::key_bins(mountpoint, client_id)?;
    let key = KeyRef { mountpoint: mp.as_slice(), client_id: cid.as_slice() };
    Ok(match WARDEN.registry.lookup(key) {
        Some(view) => encode::session(env, &view),
        None => atoms::not_found().encode(env),
    })
}

/// `Spec` is `{State, Username, Mountpoint, ClientIdPrefix, PeerCidr}`, each
/// a binary or `undefined`.
#[rustler::nif(schedule = "DirtyCpu")]
fn list<'a>(env: Env<'a>, spec: Term<'a>, limit: usize) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::List);
    let [state, user, mp, cid, network] = decode::tuple::<5>(spec)?;
    let state = match decode::opt_bytes(state)? {
        None => None,
        Some(s) => match parse_state(&s) {
            Some(st) => Some(st),
            None => return Ok((atoms::error(), "unknown state").encode(env)),
        },
    };
    let network = match decode::opt_bytes(network)? {
        None => None,
        Some(n) => match parse_network(&String::from_utf8_lossy(&n)) {
            Some(net) => Some(net),
            None => return Ok((atoms::error(), "peer must be a CIDR network or an address, e.g. 10.0.0.0/8").encode(env)),
        },
    };
    let filter = Filter {
        state,
        username: decode::opt_bytes(user)?,
        mountpoint: decode::opt_bytes(mp)?,
        client_id_prefix: decode::opt_bytes(cid)?,
        network,
    };
    let views = WARDEN.registry.list(&filter, limit);
    Ok(views.iter().map(|v| encode::session(env, v)).collect::<Vec<Term>>().encode(env))
}

/// "10.0.0.0/8", "::1/128", or a plain address (the vmq-admin `--peer`
/// flag accepts both).
fn parse_network(s: &str) -> Option<IpNet> {
    IpNet::from_str(s).ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn parse_state(s: &[u8]) -> Option<SessionState> {
    [SessionState::Authenticated, SessionState::Online, SessionState::Offline]
        .into_iter()
        .find(|st| st.as_str().as_bytes() == s)
}

#[rustler::nif]
fn counts(env: Env) -> Term {
    let _timed = timing::timed(Nif::Admin);
    let c = WARDEN.registry.counts();
    encode::map_of(
        env,
        &[
            ("authenticated", c.authenticated.encode(env)),
            ("online", c.online.encode(env)),
            ("offline", c.offline.encode(env)),
        ],
    )
}

/// Every counter, in the shape `vmq_warden:stats/0` documents.
#[rustler::nif]
fn stats(env: Env) -> Term {
    let _timed = timing::timed(Nif::Admin);
    let w = &*WARDEN;
    let f = w.firewall.stats();
    let r = w.registry.stats();
    let c = w.registry.counts();
    let n = |v: u64| v.encode(env);
    let refused: Vec<(&str, Term)> = f.refused.iter().map(|(code, v)| (code.as_str(), n(*v))).collect();
    let decisions = encode::map_of(
        env,
        &[("accepted", n(f.accepted)), ("next", n(f.next)), ("refused", encode::map_of(env, &refused))],
    );
    let calls: Vec<(&str, Term)> = Hook::ALL.iter().map(|h| (h.name(), n(w.hooks.get(*h as usize)))).collect();
    let events = encode::map_of(env, &calls);
    let registry = encode::map_of(
        env,
        &[
            ("authenticated", n(c.authenticated)),
            ("online", n(c.online)),
            ("offline", n(c.offline)),
            ("live", n(r.live)),
            ("stale_events", n(r.stale_events)),
            ("duplicate_events", n(r.duplicate_events)),
            ("unknown_events", n(r.unknown_events)),
            ("taken_over", n(r.taken_over)),
            ("ended", n(r.ended)),
            ("history_len", n(r.history_len)),
        ],
    );
    encode::map_of(
        env,
        &[
            ("decisions", decisions),
            ("events", events),
            ("stale_events", n(r.stale_events)),
            ("registry", registry),
            ("cache", encode::map_of(env, &[("hits", n(f.cache_hits)), ("misses", n(f.cache_misses))])),
            ("bans_active", n(f.bans_active)),
            ("bans_started", n(f.bans_started)),
            ("reloads", encode::map_of(env, &[("ok", n(f.reloads_ok)), ("failed", n(f.reloads_failed))])),
            (
                "verify",
                encode::map_of(
                    env,
                    &[("count", n(f.verify_count)), ("total_us", n(f.verify_micros_total)), ("slow", n(f.slow_verifications))],
                ),
            ),
            ("tracked", encode::map_of(env, &[("peers", n(f.tracked_peers)), ("users", n(f.tracked_users))])),
            ("auth_in_flight", n(PENDING.len() as u64)),
        ],
    )
}

#[rustler::nif]
fn recent_endings(env: Env, limit: usize) -> Term {
    let _timed = timing::timed(Nif::Admin);
    let endings = WARDEN.registry.recent_endings(limit);
    endings.iter().map(|e| encode::ending(env, e)).collect::<Vec<Term>>().encode(env)
}

/// Periodic clean-up (the reloader calls it): connects accepted but never
/// registered, and auth contexts whose next step never came. Dirty: it
/// scans every shard that holds a pending connect, milliseconds at a million
/// sessions.
#[rustler::nif(schedule = "DirtyCpu")]
fn sweep() -> usize {
    let _timed = timing::timed(Nif::Bulk);
    let now = now();
    WARDEN.registry.sweep(now) + PENDING.sweep(now)
}

/// Forget all runtime state: sessions, endings, bans, cached verifications
/// and auth contexts in flight. Called at application start: glibc keeps a
/// library mapped while a thread holds one of its thread-local destructors
/// (parking_lot registers one when a lock is contended), so after a
/// disable/enable cycle the "new" library can be the old one with its
/// statics, which missed every hook while the plugin was disabled. Dirty:
/// it drops every record.
#[rustler::nif(schedule = "DirtyCpu")]
fn reset() -> Atom {
    let _timed = timing::timed(Nif::Bulk);
    WARDEN.registry.clear();
    WARDEN.firewall.clear_bans(BanSelector::All);
    WARDEN.firewall.clear_cache();
    PENDING.clear();
    atoms::ok()
}

/// Dirty, like `clear_bans`: up to `max_tracked` entries per table.
#[rustler::nif(schedule = "DirtyCpu")]
fn bans(env: Env) -> Term {
    let _timed = timing::timed(Nif::Bulk);
    let bans = WARDEN.firewall.bans(now());
    bans.iter()
        .map(|b| {
            let subject = match &b.target {
                BanTarget::Peer(net) => (atoms::peer(), net.to_string()).encode(env),
                BanTarget::Username(u) => (atoms::username(), encode::bin(env, u)).encode(env),
            };
            encode::map_of(
                env,
                &[
                    ("target", subject),
                    ("until", b.until.encode(env)),
                    ("remaining_ms", b.remaining_ms.encode(env)),
                ],
            )
        })
        .collect::<Vec<Term>>()
        .encode(env)
}

/// `all`, `{peer, IpTuple}` or `{username, Bin}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn clear_bans(selector: Term) -> NifResult<usize> {
    let _timed = timing::timed(Nif::Bulk);
    let sel = if selector.is_atom() && atom_is(selector, "all") {
        BanSelector::All
    } else {
        let [kind, value] = decode::tuple::<2>(selector)?;
        if atom_is(kind, "peer") {
            BanSelector::Peer(decode::ip(value)?.ok_or(Error::BadArg)?)
        } else if atom_is(kind, "username") {
            BanSelector::Username(decode::bytes(value)?)
        } else {
            return Err(Error::BadArg);
        }
    };
    Ok(WARDEN.firewall.clear_bans(sel))
}

/// Forces a panic inside a NIF. Rustler catches it at the boundary and
/// raises an Erlang error instead; tests use this to prove the VM survives.
#[rustler::nif]
fn debug_panic() -> Atom {
    panic!("debug_panic called: testing the panic boundary")
}
