//! The event stream's NIFs: switch it on, drain it (as JSON lines) for
//! `vmq_warden_events`, read its counters; and control over live sessions:
//! record a kick or an expired credential, read a user's session age limit,
//! re-check a session against the policy (enforce on reload). The logic is
//! warden_core's (`warden_core::events`, the registry, the `Warden`).

use parking_lot::RwLock;
use rustler::{Atom, Binary, Encoder, Env, Error, NifResult, Term};
use warden_core::events::encode_json;
use warden_core::firewall::AuthRequest;
use warden_core::registry::KeyRef;
use warden_core::types::{Peer, SubscriberKey};

use crate::decode::{Address, Field, PortNumber, ProtocolArg, Username};
use crate::diagnostics::{self as timing, Nif};
use crate::state::{now, WARDEN};
use crate::{atoms, encode};

/// The node name the events carry, set by the Erlang side.
static NODE: RwLock<String> = RwLock::new(String::new());

/// Most events one `take_events/1` call encodes: about 1 µs each, so a call
/// stays well under the 1 ms a normal scheduler may be held.
const MAX_TAKE: usize = 200;

/// `events_configure(Enabled, MaxBytes, Node)`.
#[rustler::nif]
fn events_configure(enabled: bool, max_bytes: usize, node: Binary) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Admin);
    if max_bytes == 0 {
        return Err(Error::BadArg);
    }
    *NODE.write() = String::from_utf8_lossy(node.as_slice()).into_owned();
    WARDEN.registry.events().configure(enabled, max_bytes);
    Ok(atoms::ok())
}

/// Up to `max` (at most 200) queued events, oldest first, as
/// `[{Kind, Mountpoint, ClientId, Json}]`, all binaries.
#[rustler::nif]
fn take_events(env: Env<'_>, max: usize) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    let events = WARDEN.registry.events().take(max.min(MAX_TAKE));
    let node = NODE.read().clone();
    events
        .iter()
        .map(|e| {
            (
                encode::bin(env, e.kind.as_str().as_bytes()),
                encode::bin(env, &e.key.mountpoint),
                encode::bin(env, &e.key.client_id),
                encode::bin(env, &encode_json(e, &node)),
            )
                .encode(env)
        })
        .collect::<Vec<Term>>()
        .encode(env)
}

/// The queue's counters as a map.
#[rustler::nif]
fn events_stats(env: Env<'_>) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    let s = WARDEN.registry.events().stats();
    encode::map_of(
        env,
        &[
            ("enabled", s.enabled.encode(env)),
            ("queued", s.queued.encode(env)),
            ("queued_bytes", s.queued_bytes.encode(env)),
            ("max_bytes", s.max_bytes.encode(env)),
            ("pushed", s.pushed.encode(env)),
            ("dropped", s.dropped.encode(env)),
            ("taken", s.taken.encode(env)),
        ],
    )
}

/// `kick_record(Mountpoint, ClientId, Generation | undefined, By)`, the
/// mountpoint and client id as binaries: the registry records the current
/// session's ending `kicked`, with at most `MAX_KICKED_BY` bytes of `By`
/// (the history and the event keep it); `true`, or `false` when there is no
/// such session.
#[rustler::nif]
fn kick_record<'a>(mountpoint: Field<'a>, client_id: Field<'a>, generation: Term<'a>, by: Binary<'a>) -> NifResult<bool> {
    let _timed = timing::timed(Nif::Admin);
    let key = KeyRef { mountpoint: mountpoint.0, client_id: client_id.0 };
    let generation = if generation == atoms::undefined().to_term(generation.get_env()) {
        None
    } else {
        Some(generation.decode::<u64>()?)
    };
    let by = String::from_utf8_lossy(&by.as_slice()[..by.len().min(MAX_KICKED_BY)]);
    Ok(WARDEN.registry.kick(key, generation, &by, now()))
}

/// `kick_cleaned(Mountpoint, ClientId, Generation)`: the broker removed the
/// queue of that kicked session (`do_cleanup`), which it does without a
/// hook, online or offline: the registry removes the session; `true`, or
/// `false` when it is not the current, kicked session.
#[rustler::nif]
fn kick_cleaned<'a>(mountpoint: Field<'a>, client_id: Field<'a>, generation: u64) -> bool {
    let _timed = timing::timed(Nif::Admin);
    let key = KeyRef { mountpoint: mountpoint.0, client_id: client_id.0 };
    WARDEN.registry.kicked_and_cleaned(key, generation, now())
}

/// A reload's rule names at most 256 bytes of a client value; an operator's
/// `by` is a name.
const MAX_KICKED_BY: usize = 1024;

/// `expire_credentials_record(Mountpoint, ClientId, Generation)`: the
/// registry records the session's ending `expired_credentials`; `true`, or
/// `false` when it is not the current session.
#[rustler::nif]
fn expire_credentials_record<'a>(mountpoint: Field<'a>, client_id: Field<'a>, generation: u64) -> bool {
    let _timed = timing::timed(Nif::Admin);
    let key = KeyRef { mountpoint: mountpoint.0, client_id: client_id.0 };
    WARDEN.registry.expire_credentials(key, Some(generation), now())
}

/// `max_session_age(Username)`: the running policy's limit for the user in
/// seconds, or `undefined`.
#[rustler::nif]
fn max_session_age<'a>(env: Env<'a>, username: Binary<'a>) -> Term<'a> {
    let _timed = timing::timed(Nif::Admin);
    encode::or_undefined(env, WARDEN.firewall.max_session_age(username.as_slice()))
}

/// `max_sessions(Username)`: the running policy's limit of the user's live
/// sessions, or `undefined`.
#[rustler::nif]
fn max_sessions<'a>(env: Env<'a>, username: Binary<'a>) -> Term<'a> {
    let _timed = timing::timed(Nif::Admin);
    encode::or_undefined(env, WARDEN.firewall.max_sessions(username.as_slice()))
}

/// `recheck_session(Mountpoint, ClientId, Username, Ip, Port, Protocol,
/// LoggedInAt)`: `ok`, or `{refuse, Code, Rule}` (binaries) when a connect
/// of this session would now be refused before its password is asked, or
/// when a reload changed its user's password after `LoggedInAt` (ms).
#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn recheck_session<'a>(
    env: Env<'a>,
    mountpoint: Field<'a>,
    client_id: Field<'a>,
    user: Username<'a>,
    ip: Address,
    port: PortNumber,
    protocol: ProtocolArg,
    logged_in_at: u64,
) -> Term<'a> {
    let _timed = timing::timed(Nif::Admin);
    let req = AuthRequest {
        key: SubscriberKey::new(mountpoint.0, client_id.0),
        peer: ip.0.map(|ip| Peer { ip, port: port.0.unwrap_or(0) }),
        has_password: user.0.is_some(),
        username: user.0.map(std::borrow::Cow::Borrowed),
        clean_session: false,
        protocol: protocol.0,
        listener: None,
        client_cert: None,
        client_max_packet_size: None,
        client_session_expiry: None,
    };
    match WARDEN.recheck(&req, logged_in_at, now()) {
        None => atoms::ok().encode(env),
        Some(r) => (atoms::refuse(), encode::bin(env, r.code.as_str().as_bytes()), encode::bin(env, r.reason.as_bytes())).encode(env),
    }
}
