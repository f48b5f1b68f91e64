//! Configuration, the operator API's reads (lookup, list, counts, stats,
//! endings, bans) and test hooks. File loading and the passes over whole
//! tables (configure, sweep, reset, bans, clear_bans) run on dirty schedulers: they may
//! take longer than a scheduler slice. The session list is read in bounded
//! chunks on normal schedulers instead (see `list_chunk`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustler::types::map::MapIterator;
use rustler::{Atom, Encoder, Env, Error, NifResult, NifTuple, Term, TermType};
use warden_core::firewall::{BanSelector, BanTarget};
use warden_core::registry::{BrokerSession, Filter, FilterText, ListCursor, Reconciled};
use warden_core::warden::{SettingValue, Settings, WardenError};

use crate::decode::{self, Field, OptField, SubscriberId};
use crate::state::{now, WARDEN};
use crate::diagnostics::{self as timing, Nif};
use crate::{atoms, encode, logbridge};

/// `Settings` is the map of the core's settings built by
/// `vmq_warden_config:native_settings/1`. Parsed whole first: an unknown
/// name or a bad value changes nothing and answers `{error, Reason}`.
/// Dirty: a lower rate-limit burst or bound passes over every bucket of the
/// rate tables (`max_tracked` each), most of a millisecond at the default.
#[rustler::nif(schedule = "DirtyCpu")]
fn configure<'a>(env: Env<'a>, settings: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::Bulk);
    let mut pairs = Vec::new();
    for (k, v) in MapIterator::new(settings).ok_or(Error::BadArg)? {
        pairs.push((k.atom_to_string()?, setting_value(v)?));
    }
    let parsed = match Settings::parse(pairs) {
        Ok(s) => s,
        Err(e) => return Ok(encode::error(env, &e)),
    };
    WARDEN.configure(&parsed);
    if let Some(level) = &parsed.log_level {
        logbridge::set_level(level);
    }
    Ok(atoms::ok().encode(env))
}

fn setting_value(v: Term) -> NifResult<SettingValue> {
    Ok(match v.get_type() {
        TermType::Integer => SettingValue::Int(v.decode().unwrap_or(i64::MAX)),
        TermType::Float => SettingValue::Float(v.decode()?),
        TermType::Atom => match v.decode::<bool>() {
            Ok(b) => SettingValue::Bool(b),
            Err(_) => SettingValue::Atom(v.atom_to_string()?),
        },
        _ => return Err(Error::BadArg),
    })
}

fn opt_path(path: OptField) -> Option<PathBuf> {
    path.0.map(|b| PathBuf::from(String::from_utf8_lossy(b).into_owned()))
}

/// Parse both files, then swap them in at once; on error the running policy
/// stays and the error names file, line and reason.
#[rustler::nif(schedule = "DirtyIo")]
fn load_files<'a>(env: Env<'a>, policy: OptField<'a>, passwords: OptField<'a>) -> Term<'a> {
    let _timed = timing::timed(Nif::LoadFiles);
    let (policy, passwords) = (opt_path(policy), opt_path(passwords));
    match WARDEN.load(policy.as_deref(), passwords.as_deref(), now()) {
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
        Err(e) => encode::error(env, &WardenError::LoadFailed(e.to_string())),
    }
}

/// The reconciler's correction of one record: the broker's own state
/// (`absent | offline | online`) and the record's `last_change` as read.
#[rustler::nif]
fn reconcile<'a>(id: SubscriberId<'a>, broker: Atom, seen_change: u64) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Lookup);
    let broker = if broker == atoms::absent() {
        BrokerSession::Absent
    } else if broker == atoms::offline() {
        BrokerSession::Offline
    } else if broker == atoms::online() {
        BrokerSession::Online
    } else {
        return Err(Error::BadArg);
    };
    Ok(match WARDEN.registry.reconcile(id.key_ref(), broker, seen_change, now()) {
        Reconciled::Agrees => atoms::agrees(),
        Reconciled::Corrected => atoms::corrected(),
        Reconciled::Changed => atoms::changed(),
        Reconciled::Differs => atoms::differs(),
        Reconciled::NotFound => atoms::not_found(),
    })
}

#[rustler::nif]
fn lookup<'a>(env: Env<'a>, id: SubscriberId<'a>) -> Term<'a> {
    let _timed = timing::timed(Nif::Lookup);
    match WARDEN.registry.lookup(id.key_ref()) {
        Some(view) => encode::session(env, &view),
        None => atoms::not_found().encode(env),
    }
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
fn list_chunk<'a>(env: Env<'a>, spec: FilterSpec<'a>, cursor: Term<'a>, limit: usize) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::List);
    let filter = match spec.filter() {
        Ok(f) => f,
        Err(e) => return Ok(encode::error(env, &e)),
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

/// A list `Spec`: each field a binary or `undefined`.
#[derive(NifTuple)]
#[rustler(decode)]
struct FilterSpec<'a> {
    state: OptField<'a>,
    username: OptField<'a>,
    mountpoint: OptField<'a>,
    client_id_prefix: OptField<'a>,
    peer: OptField<'a>,
}

impl FilterSpec<'_> {
    fn filter(&self) -> Result<Filter, WardenError> {
        Filter::parse(FilterText {
            state: self.state.0,
            username: self.username.0,
            mountpoint: self.mountpoint.0,
            client_id_prefix: self.client_id_prefix.0,
            peer: self.peer.0,
        })
        .map_err(WardenError::BadFilter)
    }
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

/// Every counter, in the shape `vmq_warden:stats/0` documents
/// (`warden_core::warden::Stat`).
#[rustler::nif]
fn stats(env: Env) -> Term {
    let _timed = timing::timed(Nif::Admin);
    encode::stat(env, &WARDEN.stats())
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
    WARDEN.sweep(now)
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
    WARDEN.reset();
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
    let sel = if selector == atoms::all().to_term(selector.get_env()) {
        BanSelector::All
    } else {
        let (kind, value): (Atom, Term) = selector.decode()?;
        if kind == atoms::peer() {
            BanSelector::Peer(value.decode::<decode::Address>()?.0.ok_or(Error::BadArg)?)
        } else if kind == atoms::username() {
            BanSelector::Username(value.decode::<Field>()?.0.to_vec())
        } else {
            return Err(Error::BadArg);
        }
    };
    Ok(WARDEN.firewall.clear_bans(sel))
}
