//! The hook NIFs: auth_on_register in up to three steps (rules, password on a
//! normal scheduler, slow hash on a dirty one) and the lifecycle events.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use rustler::{Atom, Binary, Encoder, Env, Error, NifResult, Term};
use warden_core::firewall::{AuthRequest, Decision, Listener, PasswordStep, Step};
use warden_core::obfuscation::{Cipher, KdfHash, Obfuscation};
use warden_core::registry::{Applied, ConnectInfo};
use warden_core::types::{Millis, ProcId, Protocol};
use zeroize::Zeroizing;

use crate::timing::{self, Nif};
use crate::pending::{AuthContext, PENDING};
use crate::state::{now, Hook, RegistrySessions, WARDEN};
use crate::{atoms, decode, encode};

/// The node's `credentials_obfuscation` settings, set by the Erlang side
/// (`vmq_warden_obfuscation`), so that `{encrypted, B}` passwords are
/// decrypted here instead of through the library's one server process.
static OBFUSCATION: RwLock<Option<Obfuscation>> = RwLock::new(None);

/// `set_obfuscation(Cipher, Hash, Iterations, Secret)`: `ok`, or
/// `unsupported` (those passwords then keep going through the library).
#[rustler::nif]
fn set_obfuscation<'a>(cipher: Term<'a>, hash: Term<'a>, iterations: u32, secret: Binary<'a>) -> NifResult<Atom> {
    let _timed = timing::timed(Nif::Admin);
    let settings = cipher
        .atom_to_string()
        .ok()
        .and_then(|c| Cipher::from_name(&c))
        .zip(hash.atom_to_string().ok().and_then(|h| KdfHash::from_name(&h)))
        .and_then(|(c, h)| Obfuscation::new(c, h, iterations, secret.as_slice()));
    let supported = settings.is_some();
    *OBFUSCATION.write() = settings;
    Ok(if supported { atoms::ok() } else { atoms::unsupported() })
}

/// The password an auth step was given: `undefined`, a binary,
/// `{plaintext, B}`, or `{encrypted, B}` decrypted here. `Err(())` when an
/// encrypted one cannot be decrypted here (the library must do it).
fn password_of(term: Term<'_>) -> NifResult<Result<Option<Zeroizing<Vec<u8>>>, ()>> {
    if let Ok((tag, inner)) = term.decode::<(Atom, Term<'_>)>() {
        let bytes = decode::opt_bytes(inner)?.ok_or(Error::BadArg)?;
        return Ok(if tag == atoms::plaintext() {
            Ok(Some(Zeroizing::new(bytes)))
        } else if tag == atoms::encrypted() {
            OBFUSCATION.read().as_ref().and_then(|o| o.decrypt(&bytes)).map(Some).ok_or(())
        } else {
            return Err(Error::BadArg);
        });
    }
    Ok(Ok(decode::opt_bytes(term)?.map(Zeroizing::new)))
}

/// `Req` is the tuple built by `vmq_warden_hooks:auth_request/7`:
/// {Proto, Mountpoint, ClientId, Ip, Port, User, HasPassword, Clean,
///  {ListenerPort, ListenerType, ListenerAddr}, ClientCertDer, ConnPid}.
#[rustler::nif]
fn auth_begin<'a>(env: Env<'a>, req: Term<'a>) -> NifResult<Term<'a>> {
    let _timed = timing::timed(Nif::AuthBegin);
    let w = &*WARDEN;
    let now = now();
    w.hooks.bump(Hook::AuthOnRegister as usize);
    let [proto, mp, cid, ip, port, user, has_pw, clean, listener, cert, conn] = decode::tuple::<11>(req)?;
    let [l_port, l_type, l_addr] = decode::tuple::<3>(listener)?;
    let conn = decode::proc_id(conn)?;
    let request = AuthRequest {
        key: decode::key(mp, cid)?,
        peer: decode::peer(ip, port)?,
        username: decode::opt_bytes(user)?,
        has_password: has_pw.decode()?,
        clean_session: clean.decode()?,
        protocol: decode::protocol(proto)?,
        listener: Some(Listener {
            port: decode::port(l_port)?,
            kind: decode::opt_bytes(l_type)?.map(|b| String::from_utf8_lossy(&b).into_owned()),
            addr: decode::ip(l_addr)?,
        }),
        client_cert: decode::opt_bytes_any_size(cert)?,
    };
    let sessions = RegistrySessions(&w.registry);
    match w.firewall.begin(request, &sessions, now) {
        Step::Done(decision, request) => Ok(finish(env, &request, conn, decision, now)),
        Step::NeedPassword(pending) => {
            let token = PENDING.insert(AuthContext { pending, conn, password: None }, now).ok_or(Error::BadArg)?;
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
    let now = now();
    let mut ctx = take_context(env, token)?;
    let password = match password_of(password)? {
        Ok(p) => p,
        Err(()) => {
            // Not with the settings we hold: the Erlang side decrypts
            // through the library and calls again.
            if !PENDING.put(token, ctx, now) {
                return Err(Error::BadArg);
            }
            return Ok(atoms::warden_need_plaintext().to_term(env));
        }
    };
    let sessions = RegistrySessions(&w.registry);
    match w.firewall.with_password(&ctx.pending, password.as_deref().map(Vec::as_slice), &sessions, now) {
        PasswordStep::Done(decision) => Ok(finish(env, ctx.pending.request(), ctx.conn, decision, now)),
        PasswordStep::NeedSlowHash => {
            ctx.password = password;
            if !PENDING.put(token, ctx, now) {
                return Err(Error::BadArg);
            }
            Ok(atoms::warden_need_slow_hash().to_term(env))
        }
    }
}

/// How many slow verifications may run at once: the Erlang side sets it to
/// max(1, dirty CPU schedulers - 1) (`vmq_warden_config:apply/0`), so one
/// dirty CPU scheduler always stays free of password hashing for the broker.
static SLOW_LIMIT: AtomicUsize = AtomicUsize::new(1);
static SLOW_RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Connects refused because no slot came free in time.
static SLOW_BUSY: AtomicU64 = AtomicU64::new(0);
/// Most slow verifications seen running at once since the last reading.
static SLOW_PEAK: AtomicUsize = AtomicUsize::new(0);

/// A slot of the slow-verification semaphore, held for one NIF call only:
/// given back when the call returns, also on a panic, so none can leak.
struct SlowSlot;

impl SlowSlot {
    fn try_acquire() -> Option<SlowSlot> {
        let limit = SLOW_LIMIT.load(Ordering::Relaxed).max(1);
        SLOW_RUNNING
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|n| {
                SLOW_PEAK.fetch_max(n + 1, Ordering::Relaxed);
                SlowSlot
            })
    }
}

impl Drop for SlowSlot {
    fn drop(&mut self) {
        SLOW_RUNNING.fetch_sub(1, Ordering::Release);
    }
}

/// Sets the number of slow verifications that may run at once (at least 1);
/// returns the previous one.
#[rustler::nif]
fn slow_slots(n: usize) -> NifResult<usize> {
    let _timed = timing::timed(Nif::Admin);
    if n == 0 || n > 1024 {
        return Err(Error::BadArg);
    }
    Ok(SLOW_LIMIT.swap(n, Ordering::Relaxed))
}

/// `{Limit, Running, Peak, Busy}`: the slots, how many are taken, the most
/// taken at once since the last call (reset), connects refused as busy.
#[rustler::nif]
fn slow_slots_info(env: Env<'_>) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    (
        SLOW_LIMIT.load(Ordering::Relaxed),
        SLOW_RUNNING.load(Ordering::Relaxed),
        SLOW_PEAK.swap(0, Ordering::Relaxed),
        SLOW_BUSY.load(Ordering::Relaxed),
    )
        .encode(env)
}

/// bcrypt / argon2 / costly PBKDF2: never on a normal scheduler, and never
/// more at once than the slow-verification slots. Without a free slot it
/// answers `'$warden_busy'` at once and keeps the context: the hook waits
/// (in its own process, not on a scheduler) and calls again, or gives up
/// with [`auth_busy`].
#[rustler::nif(schedule = "DirtyCpu")]
/// The password is the one the normal step decoded and kept in the context.
fn auth_password_slow(env: Env<'_>, token: u64) -> NifResult<Term<'_>> {
    let _timed = timing::timed(Nif::AuthPasswordSlow);
    let w = &*WARDEN;
    let Some(_slot) = SlowSlot::try_acquire() else {
        return Ok(atoms::warden_busy().to_term(env));
    };
    let ctx = take_context(env, token)?;
    let sessions = RegistrySessions(&w.registry);
    let decision = w.firewall.verify_slow(&ctx.pending, ctx.password.as_deref().map(Vec::as_slice), &sessions, now());
    // The hash took a while: the registry gets the time it ended.
    Ok(finish(env, ctx.pending.request(), ctx.conn, decision, now()))
}

/// No slow-verification slot came free within the hook's wait: the connect
/// is refused as "server busy" (MQTT 5 `server_busy`, MQTT 3
/// `not_authorized`), without a verification and without counting as a
/// failed login.
#[rustler::nif]
fn auth_busy(env: Env<'_>, token: u64) -> NifResult<Term<'_>> {
    let _timed = timing::timed(Nif::AuthPassword);
    let ctx = take_context(env, token)?;
    SLOW_BUSY.fetch_add(1, Ordering::Relaxed);
    let req = ctx.pending.request();
    tracing::info!(
        target: "vmq_warden::audit",
        code = "server_busy",
        reason = "credentials: no slow-verification slot free in time",
        client_id = %String::from_utf8_lossy(&req.key.client_id[..req.key.client_id.len().min(256)]),
        peer = %req.peer.map(|p| p.ip.to_string()).unwrap_or_default(),
        "connection refused"
    );
    Ok(match req.protocol {
        Protocol::Mqtt3 => (atoms::error(), atoms::not_authorized()).encode(env),
        Protocol::Mqtt5 => {
            let reason = Term::map_new(env)
                .map_put(atoms::reason_code(), atoms::server_busy())
                .unwrap_or_else(|_| Term::map_new(env));
            (atoms::error(), reason).encode(env)
        }
    })
}

/// An accepted client becomes a pending connect in the registry, under the
/// subscriber id it will register with (a policy may rewrite the mountpoint).
fn finish<'a>(env: Env<'a>, req: &AuthRequest, conn: ProcId, decision: Decision, now: Millis) -> Term<'a> {
    let mut session = None;
    if let Decision::Accept(mods) = &decision {
        let key = mods.subscriber_id.as_ref().unwrap_or(&req.key);
        let info = ConnectInfo {
            peer: req.peer,
            // A certificate identity renames the session (the `username`
            // modifier): it counts toward that user's max_sessions.
            username: mods.username.as_deref().or(req.username.as_deref()),
            clean_session: mods.clean_session.unwrap_or(req.clean_session),
            protocol: req.protocol,
        };
        session = Some(WARDEN.registry.auth_accepted(key, conn, info, now));
    }
    crate::events::decided(req, &decision, session, now);
    encode::decision(env, &decision, req.protocol)
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
    let key = decode::key_ref(mountpoint, client_id)?;
    let info = ConnectInfo {
        peer: decode::peer(ip, port)?,
        username: decode::opt_slice(user)?,
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
    let key = decode::key_ref(mountpoint, client_id)?;
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
