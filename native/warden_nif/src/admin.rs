//! Configuration, the operator API's reads (lookup, list, counts, stats,
//! endings, bans) and test hooks. File loading and the passes over whole
//! tables (sweep, reset, bans, clear_bans) run on dirty schedulers: they may
//! take longer than a scheduler slice. The session list is read in bounded
//! chunks on normal schedulers instead (see `list_chunk`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, Error, NifResult, Term, TermType};
use warden_core::firewall::{BanSelector, BanTarget, DefaultDecision, FirewallConfig, UnknownUser};
use warden_core::registry::{BrokerSession, Filter, ListCursor, Reconciled, SessionState};
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
            "ban_users" => cfg.ban_users = v.decode()?,
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

/// The reconciler's correction of one record: the broker's own state
/// (`absent | offline | online`) and the record's `last_change` as read.
#[rustler::nif]
fn reconcile<'a>(mountpoint: Term<'a>, client_id: Term<'a>, broker: Atom, seen_change: u64) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Lookup);
    let key = decode::key_ref(mountpoint, client_id)?;
    let broker = if broker == atoms::absent() {
        BrokerSession::Absent
    } else if broker == atoms::offline() {
        BrokerSession::Offline
    } else if broker == atoms::online() {
        BrokerSession::Online
    } else {
        return Err(Error::BadArg);
    };
    Ok(match WARDEN.registry.reconcile(key, broker, seen_change, now()) {
        Reconciled::Agrees => atoms::agrees(),
        Reconciled::Corrected => atoms::corrected(),
        Reconciled::Changed => atoms::changed(),
        Reconciled::Differs => atoms::differs(),
        Reconciled::NotFound => atoms::not_found(),
    })
}

#[rustler::nif]
fn lookup<'a>(env: Env<'a>, mountpoint: Term<'a>, client_id: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::Lookup);
    let key = decode::key_ref(mountpoint, client_id)?;
    Ok(match WARDEN.registry.lookup(key) {
        Some(view) => encode::session(env, &view),
        None => atoms::not_found().encode(env),
    })
}

/// Record slots one `Registry::list_chunk` step visits under a shard lock.
/// Measured on 1M sessions (release build): about 7 µs per step when 1 in
/// 100 records matches, 70 µs when every record matches (each match is a
/// copy); hooks on that shard wait that long at most.
const LIST_STEP_SLOTS: usize = 256;

/// Wall time after which a `list_chunk` call returns what it has: with one
/// more step and its encoding, a call stays well under the 1 ms a normal
/// scheduler may be held.
const LIST_CALL_BUDGET: Duration = Duration::from_micros(200);

/// A normal scheduler's time slice, for `consume_timeslice`.
const TIMESLICE_MICROS: u128 = 1000;

/// One bounded piece of a listing, on a normal scheduler: a dirty scheduler
/// thread would compete with the normal ones for the CPUs, so a long list
/// is many short calls instead (`vmq_warden:sessions/1` loops them).
///
/// `Spec` is `{State, Username, Mountpoint, ClientIdPrefix, PeerCidr}`, each
/// a binary or `undefined`; `Cursor` is `start` or the cursor a previous
/// call returned. Answers `{Rows, NextCursor}` with at most `Limit` rows,
/// `NextCursor` being `done` when every record has been read, or
/// `{error, Msg}` for a filter that cannot match anything. A record changed
/// during a listing can be returned twice (see `Registry::list_chunk`).
#[rustler::nif]
fn list_chunk<'a>(env: Env<'a>, spec: Term<'a>, cursor: Term<'a>, limit: usize) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::List);
    let filter = match filter(spec)? {
        Ok(f) => f,
        Err(msg) => return Ok((atoms::error(), msg).encode(env)),
    };
    let mut cursor = Some(list_cursor(cursor)?);
    let started = Instant::now();
    let mut rows: Vec<Term> = Vec::new();
    let mut views = Vec::new();
    // Checked after each step: a call reads something even if its thread
    // was descheduled before the first step (unless Limit is 0).
    while let Some(at) = cursor {
        cursor = WARDEN.registry.list_chunk(&filter, at, LIST_STEP_SLOTS, &mut views, limit - rows.len());
        // Encoded after the step returned: no shard lock is held here.
        rows.extend(views.drain(..).map(|v| encode::session(env, &v)));
        if rows.len() >= limit || started.elapsed() >= LIST_CALL_BUDGET {
            break;
        }
    }
    let percent = (started.elapsed().as_micros() * 100 / TIMESLICE_MICROS).clamp(1, 100) as i32;
    rustler::schedule::consume_timeslice(env, percent);
    let next = match cursor {
        Some(at) => (at.shard, at.unvisited).encode(env),
        None => atoms::done().encode(env),
    };
    Ok((rows, next).encode(env))
}

/// `start`, or `{Shard, Unvisited}` as `list_chunk` returned it.
fn list_cursor(term: Term) -> NifResult<ListCursor> {
    if term == atoms::start().to_term(term.get_env()) {
        return Ok(ListCursor::START);
    }
    let [shard, unvisited] = decode::tuple::<2>(term)?;
    let shard: usize = shard.decode()?;
    if shard >= WARDEN.registry.shard_count() {
        return Err(Error::BadArg);
    }
    Ok(ListCursor { shard, unvisited: unvisited.decode()? })
}

/// The filter of a list `Spec`, or the message for a value no record can
/// have.
fn filter(spec: Term) -> NifResult<Result<Filter, &'static str>> {
    let [state, user, mp, cid, network] = decode::tuple::<5>(spec)?;
    let state = match decode::opt_bytes(state)? {
        None => None,
        Some(s) => match parse_state(&s) {
            Some(st) => Some(st),
            None => return Ok(Err("unknown state")),
        },
    };
    let network = match decode::opt_bytes(network)? {
        None => None,
        Some(n) => match parse_network(&String::from_utf8_lossy(&n)) {
            Some(net) => Some(net),
            None => return Ok(Err("peer must be a CIDR network or an address, e.g. 10.0.0.0/8")),
        },
    };
    Ok(Ok(Filter {
        state,
        username: decode::opt_bytes(user)?,
        mountpoint: decode::opt_bytes(mp)?,
        client_id_prefix: decode::opt_bytes(cid)?,
        network,
    }))
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
            ("reconciled", n(r.reconciled)),
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
/// registered, auth contexts whose next step never came, idle rate-limit
/// buckets and ban counters. Dirty: it
/// scans every shard that holds a pending connect, milliseconds at a million
/// sessions.
#[rustler::nif(schedule = "DirtyCpu")]
fn sweep() -> usize {
    let _timed = timing::timed(Nif::Bulk);
    let now = now();
    WARDEN.registry.sweep(now) + PENDING.sweep(now) + WARDEN.firewall.sweep_limits(now)
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
