//! The hook NIFs: the broker's arguments decoded, one call into the
//! `Warden`, its answer encoded. auth_on_register runs in up to three steps
//! (rules; the password on a normal scheduler; a slow hash on a dirty one).

use rustler::{Atom, Binary, Encoder, Env, Error, NifResult, Term};
use warden_core::obfuscation::{Cipher, KdfHash, Obfuscation};
use warden_core::registry::{Applied, ConnectInfo};
use warden_core::warden::QueueEvent;

use crate::decode::{self, AuthArgs, PasswordArg, PeerArg, ProtocolArg, SubscriberId, Username};
use crate::state::{now, WARDEN};
use crate::diagnostics::{self as timing, Nif};
use crate::entry::stack_args_nif;
use crate::{atoms, encode};

/// `set_obfuscation(Cipher, Hash, Iterations, Secret)`: the node's
/// `credentials_obfuscation` settings, so that `{encrypted, B}` passwords
/// are decrypted here. `ok`, or `unsupported` (those passwords then keep
/// going through the library).
#[rustler::nif]
fn set_obfuscation<'a>(cipher: Term<'a>, hash: Term<'a>, iterations: u32, secret: Binary<'a>) -> Atom {
    let _timed = timing::timed(Nif::Admin);
    let settings = cipher
        .atom_to_string()
        .ok()
        .and_then(|c| Cipher::from_name(&c))
        .zip(hash.atom_to_string().ok().and_then(|h| KdfHash::from_name(&h)))
        .and_then(|(c, h)| Obfuscation::new(c, h, iterations, secret.as_slice()));
    let supported = settings.is_some();
    WARDEN.set_obfuscation(settings);
    if supported {
        atoms::ok()
    } else {
        atoms::unsupported()
    }
}

/// `auth_begin({Proto, Peer, SubscriberId, User, Password, Clean, Properties, Meta})`
/// with the hook's own arguments, from the connection process: the
/// decision, or the step the hook takes next.
fn auth_begin<'a>(env: Env<'a>, [args]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::AuthBegin);
    let (request, password) = args.decode::<AuthArgs>()?.into_request();
    let step = WARDEN.auth_begin(request, decode::caller(env), password, now());
    encode::auth_step(env, step)
}

/// After `{'$warden_need_plaintext', Token}`: the password step with the
/// clear text the broker's library decrypted.
#[rustler::nif]
fn auth_password<'a>(env: Env<'a>, token: u64, password: PasswordArg<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::AuthPassword);
    let step = WARDEN.auth_password(token, decode::caller(env), password.0, now());
    encode::auth_step(env, step)
}

/// bcrypt / argon2 / costly PBKDF2: never on a normal scheduler, and never
/// more at once than the slow-verification slots. Without a free slot it
/// answers `'$warden_busy'` at once and keeps the context: the hook waits
/// (in its own process, not on a scheduler) and calls again, or gives up
/// with `auth_busy`. The password is the one the normal step kept.
#[rustler::nif(schedule = "DirtyCpu")]
fn auth_password_slow(env: Env<'_>, token: u64) -> NifResult<Term<'_>> {
    let _timed = timing::timed(Nif::AuthPasswordSlow);
    let step = WARDEN.auth_password_slow(token, decode::caller(env), now);
    encode::auth_step(env, step)
}

/// No slow-verification slot came free within the hook's wait: refused as
/// server busy (MQTT 5 `server_busy`, MQTT 3 `not_authorized`), without a
/// verification and without counting as a failed login.
#[rustler::nif]
fn auth_busy(env: Env<'_>, token: u64) -> NifResult<Term<'_>> {
    let _timed = timing::timed(Nif::AuthPassword);
    encode::auth_step(env, WARDEN.auth_busy(token, decode::caller(env)))
}

/// Sets the number of slow verifications that may run at once (at least 1);
/// returns the previous one.
#[rustler::nif]
fn slow_slots(env: Env<'_>, n: usize) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    match WARDEN.set_slow_slots(n) {
        Ok(previous) => previous.encode(env),
        Err(e) => encode::error(env, &e),
    }
}

/// `{Limit, Running, Peak, Busy}`: the slots, how many are taken, the most
/// taken at once since the last call (reset), connects refused as busy.
#[rustler::nif]
fn slow_slots_info(env: Env<'_>) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    let i = WARDEN.slow_slots_info();
    (i.limit, i.running, i.peak, i.busy).encode(env)
}

/// `registered(Proto, Peer, SubscriberId, User)`: on_register /
/// on_register_m5, with the hook's own arguments, from the connection process.
fn registered<'a>(env: Env<'a>, args: [Term<'a>; 4]) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::Registered);
    let (id, info) = registered_args(args)?;
    Ok(applied_atom(WARDEN.registered(id.key_ref(), decode::caller(env), info, now())).to_term(env))
}

/// on_register's arguments: the subscriber, and what it tells the registry
/// about the connect.
fn registered_args<'a>([protocol, peer, id, user]: [Term<'a>; 4]) -> NifResult<(SubscriberId<'a>, ConnectInfo<'a>)> {
    let protocol: ProtocolArg = protocol.decode()?;
    let peer: PeerArg = peer.decode()?;
    let id: SubscriberId = id.decode()?;
    let user: Username = user.decode()?;
    let info = ConnectInfo {
        peer: peer.0,
        username: user.0,
        // on_register does not carry the flag: the registry keeps the one
        // seen at auth and uses this only for a session it never saw
        // authorised, which it treats as persistent (like a bare wakeup).
        clean_session: false,
        protocol: protocol.0,
    };
    Ok((id, info))
}

/// `queue_event(Event, SubscriberId)`: on_client_wakeup / offline / gone /
/// on_session_expired, from the queue process.
fn queue_event<'a>(env: Env<'a>, args: [Term<'a>; 2]) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::QueueEvent);
    let (event, id) = queue_event_args(args)?;
    Ok(applied_atom(WARDEN.queue_event(event, id.key_ref(), decode::caller(env), now())).to_term(env))
}

// The three hook NIFs of every connect, with their arguments on the stack
// (entry::call_with_stack_args says why).
stack_args_nif!("auth_begin", 1, auth_begin);
stack_args_nif!("registered", 4, registered);
stack_args_nif!("queue_event", 2, queue_event);

/// queue_event's arguments: which event, for which subscriber.
fn queue_event_args<'a>([event, id]: [Term<'a>; 2]) -> NifResult<(QueueEvent, SubscriberId<'a>)> {
    Ok((queue_event_kind(event.decode()?)?, id.decode()?))
}

fn queue_event_kind(event: Atom) -> NifResult<QueueEvent> {
    if event == atoms::wakeup() {
        Ok(QueueEvent::Wakeup)
    } else if event == atoms::offline() {
        Ok(QueueEvent::Offline)
    } else if event == atoms::gone() {
        Ok(QueueEvent::Gone)
    } else if event == atoms::expired() {
        Ok(QueueEvent::Expired)
    } else {
        Err(Error::BadArg)
    }
}

fn applied_atom(applied: Applied) -> Atom {
    match applied {
        Applied::Applied => atoms::applied(),
        Applied::Stale => atoms::stale(),
        Applied::Duplicate => atoms::duplicate(),
        Applied::Unknown => atoms::unknown(),
    }
}

/// The floor of the three hook NIFs (a diagnostic, for the broker bench's
/// floor pass): the same timer, argument decoding and caller, then the
/// answer, without the call into the core. A hook's time minus its floor
/// is the core's work (docs/BENCHMARKS.md).
#[cfg(feature = "diagnostics")]
mod floor {
    use super::*;
    use std::hint::black_box;

    fn floor_auth_begin<'a>(env: Env<'a>, [args]: [Term<'a>; 1]) -> NifResult<Term<'a>> {
        let _timed = timing::timed(Nif::AuthBegin);
        let (request, password) = args.decode::<AuthArgs>()?.into_request();
        black_box((&request, &password, decode::caller(env), now()));
        Ok(atoms::ok().to_term(env))
    }

    fn floor_registered<'a>(env: Env<'a>, args: [Term<'a>; 4]) -> NifResult<Term<'a>> {
        let _timed = timing::timed(Nif::Registered);
        let (id, info) = registered_args(args)?;
        black_box((info, id.key_ref(), decode::caller(env), now()));
        Ok(atoms::applied().to_term(env))
    }

    fn floor_queue_event<'a>(env: Env<'a>, args: [Term<'a>; 2]) -> NifResult<Term<'a>> {
        let _timed = timing::timed(Nif::QueueEvent);
        let (event, id) = queue_event_args(args)?;
        black_box((event, id.key_ref(), decode::caller(env), now()));
        Ok(atoms::applied().to_term(env))
    }

    // Registered as the hook NIFs are, so that their calls cost the same.
    stack_args_nif!("floor_auth_begin", 1, floor_auth_begin);
    stack_args_nif!("floor_registered", 4, floor_registered);
    stack_args_nif!("floor_queue_event", 2, floor_queue_event);
}
