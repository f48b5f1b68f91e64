//! The hook NIFs: auth_on_register in up to three steps (rules, password on a
//! normal scheduler, slow hash on a dirty one) and the lifecycle events.

use rustler::{Atom, Encoder, Env, Error, NifResult, Term};
use warden_core::firewall::{AuthRequest, Decision, Listener, PasswordStep, PendingAuth, Step};
use warden_core::registry::{Applied, ConnectInfo, KeyRef};
use warden_core::types::{Peer, ProcId, Protocol, SubscriberKey};

use crate::timing::{self, Nif};
use crate::pending::PENDING;
use crate::state::{now, Hook, RegistrySessions, WARDEN};
use crate::{atoms, decode, encode};

/// What survives between the auth steps (see `pending`): the firewall's
/// pending decision (bound to the policy snapshot it started with) and what
/// the registry records if the client is accepted.
pub struct AuthContext {
    pending: PendingAuth,
    key: SubscriberKey,
    pub conn: ProcId,
    peer: Option<Peer>,
    username: Option<Vec<u8>>,
    clean_session: bool,
    protocol: Protocol,
}

/// `Req` is the tuple built by `vmq_warden_hooks:auth_request/7`:
/// {Proto, Mountpoint, ClientId, Ip, Port, User, HasPassword, Clean,
///  {ListenerPort, ListenerType, ListenerAddr}, ClientCertDer, ConnPid}.
#[rustler::nif]
fn auth_begin<'a>(env: Env<'a>, req: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::AuthBegin);
    let w = &*WARDEN;
    w.hooks.bump(Hook::AuthOnRegister as usize);
    let [proto, mp, cid, ip, port, user, has_pw, clean, listener, cert, conn] = decode::tuple::<11>(req)?;
    let [l_port, l_type, l_addr] = decode::tuple::<3>(listener)?;
    let protocol = decode::protocol(proto)?;
    let key = decode::key(mp, cid)?;
    let peer = decode::peer(ip, port)?;
    let username = decode::opt_bytes(user)?;
    let clean_session: bool = clean.decode()?;
    let conn = decode::proc_id(conn)?;
    let request = AuthRequest {
        key: key.clone(),
        peer,
        username: username.clone(),
        has_password: has_pw.decode()?,
        clean_session,
        protocol,
        listener: Some(Listener {
            port: decode::port(l_port)?,
            kind: decode::opt_bytes(l_type)?.map(|b| String::from_utf8_lossy(&b).into_owned()),
            addr: decode::ip(l_addr)?,
        }),
        client_cert: decode::opt_bytes_any_size(cert)?,
    };
    let sessions = RegistrySessions(&w.registry);
    match w.firewall.begin(request, &sessions, now()) {
        Step::Done(decision) => Ok(finish(env, &key, conn, peer, username, clean_session, protocol, decision)),
        Step::NeedPassword(pending) => {
            let ctx = AuthContext { pending, key, conn, peer, username, clean_session, protocol };
            let token = PENDING.insert(ctx, now()).ok_or(Error::BadArg)?;
            Ok((atoms::warden_need_password(), token).encode(env))
        }
    }
}

/// The context a previous step left under `token`, for this process only.
fn take_context(env: Env, token: u64) -> NifResult<AuthContext> {
    let caller = decode::proc_id(env.pid().encode(env))?;
    PENDING.take(token, caller).ok_or(Error::BadArg)
}

/// Normal scheduler: a cache hit or a fast hash decides here.
#[rustler::nif]
fn auth_password<'a>(env: Env<'a>, token: u64, password: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::AuthPassword);
    let w = &*WARDEN;
    let password = decode::opt_bytes(password)?;
    let ctx = take_context(env, token)?;
    let sessions = RegistrySessions(&w.registry);
    match w.firewall.with_password(&ctx.pending, password.as_deref(), &sessions, now()) {
        PasswordStep::Done(decision) => Ok(finish_ctx(env, &ctx, decision)),
        PasswordStep::NeedSlowHash => {
            if !PENDING.put(token, ctx, now()) {
                return Err(Error::BadArg);
            }
            Ok(atoms::warden_need_slow_hash().to_term(env))
        }
    }
}

/// bcrypt / argon2 / costly PBKDF2: never on a normal scheduler.
#[rustler::nif(schedule = "DirtyCpu")]
fn auth_password_slow<'a>(env: Env<'a>, token: u64, password: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::AuthPasswordSlow);
    let w = &*WARDEN;
    let password = decode::opt_bytes(password)?;
    let ctx = take_context(env, token)?;
    let sessions = RegistrySessions(&w.registry);
    let decision = w.firewall.verify_slow(&ctx.pending, password.as_deref(), &sessions, now());
    Ok(finish_ctx(env, &ctx, decision))
}

fn finish_ctx<'a>(env: Env<'a>, ctx: &AuthContext, decision: Decision) -> Term<'a> {
    finish(env, &ctx.key, ctx.conn, ctx.peer, ctx.username.clone(), ctx.clean_session, ctx.protocol, decision)
}

/// An accepted client becomes a pending connect in the registry, under the
/// subscriber id it will register with (a policy may rewrite the mountpoint).
#[allow(clippy::too_many_arguments)]
fn finish<'a>(
    env: Env<'a>,
    key: &SubscriberKey,
    conn: ProcId,
    peer: Option<Peer>,
    username: Option<Vec<u8>>,
    clean_session: bool,
    protocol: Protocol,
    decision: Decision,
) -> Term<'a> {
    if let Decision::Accept(mods) = &decision {
        let key = mods.subscriber_id.clone().unwrap_or_else(|| key.clone());
        let clean_session = mods.clean_session.unwrap_or(clean_session);
        // A certificate identity renames the session (the `username`
        // modifier): it counts toward that user's max_sessions.
        let username = mods.username.clone().or(username);
        let info = ConnectInfo { peer, username: username.map(Vec::into_boxed_slice), clean_session, protocol };
        WARDEN.registry.auth_accepted(key, conn, info, now());
    }
    encode::decision(env, &decision, protocol)
}

/// on_register / on_register_m5, from the connection process.
#[allow(clippy::too_many_arguments)]
#[rustler::nif]
fn registered<'a>(
    env: Env<'a>,
    mountpoint: Term<'a>,
    client_id: Term<'a>,
    conn: Term<'a>,
    ip: Term<'a>,
    port: Term<'a>,
    user: Term<'a>,
    proto: Term<'a>,
) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::Registered);
    let w = &*WARDEN;
    w.hooks.bump(Hook::OnRegister as usize);
    let key = decode::key(mountpoint, client_id)?;
    let info = ConnectInfo {
        peer: decode::peer(ip, port)?,
        username: decode::opt_bytes(user)?.map(Vec::into_boxed_slice),
        // on_register does not carry the flag: the registry keeps the one
        // seen at auth and uses this only for a session it never saw
        // authorised, which it treats as persistent (like a bare wakeup).
        clean_session: false,
        protocol: decode::protocol(proto)?,
    };
    let applied = w.registry.registered(key, decode::proc_id(conn)?, info, now());
    Ok(applied_atom(applied).to_term(env))
}

/// on_client_wakeup / offline / gone / session_expired, from the queue process.
#[rustler::nif]
fn queue_event<'a>(env: Env<'a>, event: Atom, mountpoint: Term<'a>, client_id: Term<'a>, queue: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::QueueEvent);
    let w = &*WARDEN;
    let (mp, cid) = decode::key_bins(mountpoint, client_id)?;
    let key = KeyRef { mountpoint: mp.as_slice(), client_id: cid.as_slice() };
    let queue = decode::proc_id(queue)?;
    let now = now();
    let applied = if event == atoms::wakeup() {
        w.hooks.bump(Hook::OnClientWakeup as usize);
        w.registry.woke_up(key, queue, now)
    } else if event == atoms::offline() {
        w.hooks.bump(Hook::OnClientOffline as usize);
        w.registry.went_offline(key, queue, now)
    } else if event == atoms::gone() {
        w.hooks.bump(Hook::OnClientGone as usize);
        w.registry.gone(key, queue, now)
    } else if event == atoms::expired() {
        w.hooks.bump(Hook::OnSessionExpired as usize);
        w.registry.expired(key, queue, now)
    } else {
        return Err(rustler::Error::BadArg);
    };
    Ok(applied_atom(applied).to_term(env))
}

fn applied_atom(applied: Applied) -> Atom {
    match applied {
        Applied::Applied => atoms::applied(),
        Applied::Stale => atoms::stale(),
        Applied::Duplicate => atoms::duplicate(),
        Applied::Unknown => atoms::unknown(),
    }
}
