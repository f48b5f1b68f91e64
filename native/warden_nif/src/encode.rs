//! `warden_core` results -> the terms VerneMQ and operators see.

use std::net::IpAddr;

use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder, Env, Error, NewBinary, NifResult, Term};
use warden_core::firewall::{Decision, ModValue, RefusalCode};
use warden_core::registry::{EndReason, Ending, SessionState, SessionView};
use warden_core::types::{Peer, Protocol};
use warden_core::warden::{AuthStep, Stat, WardenError};

use crate::atoms;

pub fn bin<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut b = NewBinary::new(env, bytes.len());
    b.as_mut_slice().copy_from_slice(bytes);
    Term::from(b)
}

/// A value, or `undefined` for none (Erlang's absent value).
pub fn or_undefined<'a>(env: Env<'a>, value: Option<impl Encoder>) -> Term<'a> {
    match value {
        Some(v) => v.encode(env),
        None => atoms::undefined().encode(env),
    }
}

pub fn opt_bin<'a>(env: Env<'a>, bytes: Option<&[u8]>) -> Term<'a> {
    or_undefined(env, bytes.map(|b| bin(env, b)))
}

/// VerneMQ mountpoints are charlists.
pub fn charlist<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let chars: Vec<u32> = String::from_utf8_lossy(bytes).chars().map(u32::from).collect();
    chars.encode(env)
}

pub fn ip<'a>(env: Env<'a>, ip: IpAddr) -> Term<'a> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0], o[1], o[2], o[3]).encode(env)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let parts: Vec<Term> = s.iter().map(|w| w.encode(env)).collect();
            make_tuple(env, &parts)
        }
    }
}

pub fn peer<'a>(env: Env<'a>, peer: Option<Peer>) -> Term<'a> {
    or_undefined(env, peer.map(|p| make_tuple(env, &[ip(env, p.ip), p.port.encode(env)])))
}

fn atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    // Names come from fixed tables in warden_core, never from client input.
    Atom::from_str(env, name).map(|a| a.encode(env)).unwrap_or_else(|_| atoms::undefined().encode(env))
}

/// The hook answer, in the shape the broker expects for the protocol
/// (docs/VERNEMQ.md, "What the answers do").
pub fn decision<'a>(env: Env<'a>, decision: &Decision, protocol: Protocol) -> Term<'a> {
    match decision {
        Decision::Next => atoms::next().encode(env),
        Decision::Accept(mods) => {
            let entries = mods.entries(protocol);
            if entries.is_empty() {
                return atoms::ok().encode(env);
            }
            (atoms::ok(), modifiers(env, &entries, protocol)).encode(env)
        }
        Decision::Refuse(refusal) => match (protocol, refusal.code) {
            (Protocol::Mqtt3, RefusalCode::BadUsernameOrPassword) => {
                (atoms::error(), atoms::invalid_credentials()).encode(env)
            }
            (Protocol::Mqtt3, code) => (atoms::error(), atom(env, code.as_str())).encode(env),
            (Protocol::Mqtt5, code) => mqtt5_refusal(env, atom(env, code.as_str())),
        },
    }
}

/// `{error, #{reason_code => Code}}`, an MQTT 5 refusal.
fn mqtt5_refusal<'a>(env: Env<'a>, code: Term<'a>) -> Term<'a> {
    let reason = Term::map_new(env).map_put(atoms::reason_code(), code).unwrap_or_else(|_| Term::map_new(env));
    (atoms::error(), reason).encode(env)
}

/// An auth step's answer: the hook's decision, or what the hook wrapper
/// does next. An error is raised (the wrapper answers with the failure
/// decision): a hook's `{error, _}` is a refusal and must not be confused
/// with it.
pub fn auth_step(env: Env<'_>, step: Result<AuthStep, WardenError>) -> NifResult<Term<'_>> {
    Ok(match step.map_err(|e| Error::RaiseTerm(Box::new(Reason(e))))? {
        AuthStep::Decided(d, protocol) => decision(env, &d, protocol),
        AuthStep::ServerBusy(Protocol::Mqtt3) => (atoms::error(), atoms::not_authorized()).encode(env),
        AuthStep::ServerBusy(Protocol::Mqtt5) => mqtt5_refusal(env, atoms::server_busy().encode(env)),
        AuthStep::NeedSlowHash(token) => (atoms::warden_need_slow_hash(), token).encode(env),
        AuthStep::NeedPlaintext(token) => (atoms::warden_need_plaintext(), token).encode(env),
        AuthStep::SlotsTaken => atoms::warden_busy().encode(env),
    })
}

/// The reason term of a [`WardenError`]: `{Kind, Detail}`, or the kind
/// alone when there is no detail.
pub struct Reason(pub WardenError);

impl Encoder for Reason {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let kind = atom(env, self.0.kind());
        match &self.0 {
            WardenError::UnknownSetting(name) => (kind, atom_or_bin(env, name)).encode(env),
            WardenError::BadSetting { key, expected } => (kind, atom(env, key), *expected).encode(env),
            // The operator API's long-standing answers: the message alone.
            WardenError::BadFilter(msg) => msg.encode(env),
            WardenError::LoadFailed(msg) => msg.encode(env),
            _ => kind,
        }
    }
}

/// `{error, Reason}` for the operator API.
pub fn error<'a>(env: Env<'a>, e: &WardenError) -> Term<'a> {
    (atoms::error(), Reason(e.clone())).encode(env)
}

/// A name from the caller: an existing atom, else a binary (no atom is
/// created from input).
fn atom_or_bin<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    Atom::existing_from_bytes(env, name.as_bytes())
        .map(|a| a.encode(env))
        .unwrap_or_else(|_| name.encode(env))
}

fn mod_value<'a>(env: Env<'a>, value: &ModValue) -> Term<'a> {
    match value {
        ModValue::Int(i) => i.encode(env),
        ModValue::Bool(b) => b.encode(env),
        ModValue::Atom(a) => atom(env, a),
        ModValue::Bytes(b) => bin(env, b),
        ModValue::SubscriberId { mountpoint, client_id } => {
            make_tuple(env, &[charlist(env, mountpoint), bin(env, client_id)])
        }
    }
}

/// MQTT 3: a proplist. MQTT 5: a map with the same atom keys. The session
/// expiry is the top-level `session_expiry_interval` key: VerneMQ 2.x's
/// vmq_mqtt5_fsm reads it from the modifiers (state and queue options) and
/// keeps only p_max_qos, p_retain_available, p_wildcard_subs_available,
/// p_sub_ids_available and p_shared_subs_available from a returned
/// `properties` map, so a `p_session_expiry_interval` there would be dropped.
fn modifiers<'a>(env: Env<'a>, entries: &[(&'static str, ModValue)], protocol: Protocol) -> Term<'a> {
    match protocol {
        Protocol::Mqtt3 => {
            let list: Vec<Term> = entries
                .iter()
                .map(|(k, v)| make_tuple(env, &[atom(env, k), mod_value(env, v)]))
                .collect();
            list.encode(env)
        }
        Protocol::Mqtt5 => {
            let mut map = Term::map_new(env);
            for (k, v) in entries {
                map = map.map_put(atom(env, k), mod_value(env, v)).unwrap_or(map);
            }
            map
        }
    }
}

fn put<'a>(map: Term<'a>, key: &str, value: Term<'a>) -> Term<'a> {
    let env = map.get_env();
    map.map_put(atom(env, key), value).unwrap_or(map)
}

/// The atom of a session state or an end reason, from the cached atom table
/// (no atom-table lookup per call).
fn state_atom(st: SessionState) -> Atom {
    match st {
        SessionState::Authenticated => atoms::authenticated(),
        SessionState::Online => atoms::online(),
        SessionState::Offline => atoms::offline(),
        SessionState::Gone => atoms::gone(),
        SessionState::Expired => atoms::expired(),
    }
}

fn reason_atom(r: EndReason) -> Atom {
    match r {
        EndReason::TakenOver => atoms::taken_over(),
        EndReason::Gone => atoms::gone(),
        EndReason::Offline => atoms::offline(),
        EndReason::Expired => atoms::expired(),
        EndReason::Discarded => atoms::discarded(),
        EndReason::Abandoned => atoms::abandoned(),
        EndReason::Vanished => atoms::vanished(),
        EndReason::Kicked => atoms::kicked(),
        EndReason::ExpiredCredentials => atoms::expired_credentials(),
    }
}

/// One map built in one step from cached atom keys (`enif_make_map_from_arrays`):
/// measured ~10x cheaper than 15 `map_put`s with an atom lookup each.
fn map_from<'a, const N: usize>(env: Env<'a>, keys: [Atom; N], values: [Term<'a>; N]) -> Term<'a> {
    let keys = keys.map(|k| k.to_term(env));
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| Term::map_new(env))
}

/// A session as a 14-tuple `{Mountpoint, ClientId, State, Generation,
/// PendingGeneration, Peer, Username, CleanSession, Protocol, FirstConnect,
/// LastConnect, LastChange, ConnectCount, LastEnd}`; `vmq_warden` turns it
/// into the documented map with a map literal, whose key tuple is shared
/// (profiled: building the map here, a key tuple and a sort per session,
/// cost more than the registry read itself).
pub fn session<'a>(env: Env<'a>, s: &SessionView) -> Term<'a> {
    let undefined = atoms::undefined().encode(env);
    let last_end = match s.last_end {
        Some((reason, at)) => (reason_atom(reason), at).encode(env),
        None => undefined,
    };
    make_tuple(
        env,
        &[
            charlist(env, &s.key.mountpoint),
            bin(env, &s.key.client_id),
            state_atom(s.state).encode(env),
            s.generation.encode(env),
            s.pending_generation.map_or(undefined, |g| g.encode(env)),
            peer(env, s.peer),
            opt_bin(env, s.username.as_deref()),
            s.clean_session.encode(env),
            protocol_num(s.protocol).encode(env),
            s.first_connect.encode(env),
            s.last_connect.encode(env),
            s.last_change.encode(env),
            s.connect_count.encode(env),
            last_end,
        ],
    )
}

pub fn ending<'a>(env: Env<'a>, e: &Ending) -> Term<'a> {
    map_from(
        env,
        [
            atoms::mountpoint(),
            atoms::client_id(),
            atoms::generation(),
            atoms::reason(),
            atoms::peer(),
            atoms::username(),
            atoms::started(),
            atoms::ended(),
            atoms::kicked_by(),
        ],
        [
            charlist(env, &e.key.mountpoint),
            bin(env, &e.key.client_id),
            e.generation.encode(env),
            reason_atom(e.reason).encode(env),
            peer(env, e.peer),
            opt_bin(env, e.username.as_deref()),
            e.started.encode(env),
            e.ended.encode(env),
            opt_bin(env, e.kicked_by.as_deref().map(str::as_bytes)),
        ],
    )
}

pub fn protocol_num(p: Protocol) -> u8 {
    match p {
        Protocol::Mqtt3 => 3,
        Protocol::Mqtt5 => 5,
    }
}

/// A map from (name, value) pairs with atom keys.
pub fn map_of<'a>(env: Env<'a>, pairs: &[(&str, Term<'a>)]) -> Term<'a> {
    pairs.iter().fold(Term::map_new(env), |m, (k, v)| put(m, k, *v))
}

/// A counter tree as nested maps with atom keys.
pub fn stat<'a>(env: Env<'a>, s: &Stat) -> Term<'a> {
    match s {
        Stat::Count(n) => n.encode(env),
        Stat::Group(entries) => entries.iter().fold(Term::map_new(env), |m, (k, v)| put(m, k, stat(env, v))),
    }
}
