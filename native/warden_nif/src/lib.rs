//! The NIF library behind the Erlang module `vmq_warden_nif`.
//!
//! Term conversion only: `decode` turns hook arguments into `warden_core`
//! types, `encode` turns core results into the terms VerneMQ expects, and
//! every decision is made in `warden_core`. One `Warden` (registry +
//! firewall) lives for as long as the library is loaded.

mod admin;
mod alloc;
mod cluster;
mod decode;
mod encode;
mod entry;
mod hooks;
mod logbridge;
mod pending;
mod state;
mod timing;

pub mod atoms {
    rustler::atoms! {
    ok,
    error,
    next,
    undefined,
    not_found,
    invalid_credentials,
    reason_code,
    warden_need_password = "$warden_need_password",
    warden_need_slow_hash = "$warden_need_slow_hash",
    warden_need_plaintext = "$warden_need_plaintext",
    plaintext,
    encrypted,
    unsupported,
    warden_busy = "$warden_busy",
    not_authorized,
    server_busy,
    wakeup,
    offline,
    gone,
    expired,
    applied,
    stale,
    duplicate,
    unknown,
    all,
    start,
    done,
    peer,
    username,
    // session and ending maps (encode.rs)
    mountpoint,
    client_id,
    state,
    generation,
    pending_generation,
    clean_session,
    protocol,
    first_connect,
    last_connect,
    last_change,
    connect_count,
    last_end,
    reason,
    started,
    ended,
    authenticated,
    online,
    taken_over,
    discarded,
    abandoned,
    vanished,
    absent,
    agrees,
    corrected,
    changed,
    differs,
    }
}

#[rustler::nif]
fn ping() -> &'static str {
    "pong"
}

/// Does nothing: the floor of any NIF call, for the benchmark's baseline.
#[rustler::nif]
fn noop() -> rustler::Atom {
    atoms::ok()
}

/// Bytes the Rust side of the plugin currently holds on its heap (counted by
/// the global allocator, see `alloc`).
#[rustler::nif]
fn memory() -> usize {
    alloc::live_bytes()
}
