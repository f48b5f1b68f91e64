//! The NIF library behind the Erlang module `vmq_warden_nif`.
//!
//! Term conversion only: `decode` turns hook arguments into `warden_core`
//! types, `encode` turns core results into the terms VerneMQ expects, and
//! every decision is made by the `warden_core::warden::Warden` in `state`,
//! which lives for as long as the library is loaded. Besides conversion,
//! only what must live in the library is here: the allocator that counts
//! its bytes (`alloc`), the clock (`state`), the bridge from `tracing` to
//! OTP's logger (`logbridge`), the entry point (`entry`) and the
//! diagnostics of the tests and the benchmark (`diagnostics`).

mod admin;
mod alloc;
mod cluster;
mod decode;
mod diagnostics;
mod encode;
mod entry;
mod events;
mod hooks;
mod logbridge;
mod state;

pub mod atoms {
    rustler::atoms! {
    ok,
    error,
    next,
    undefined,
    not_found,
    invalid_credentials,
    reason_code,
    warden_need_slow_hash = "$warden_need_slow_hash",
    warden_need_plaintext = "$warden_need_plaintext",
    encrypted,
    unsupported,
    warden_busy = "$warden_busy",
    listener_port,
    listener_type,
    listener_addr,
    client_cert,
    p_max_packet_size,
    p_session_expiry_interval,
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
    kicked_by,
    authenticated,
    online,
    taken_over,
    discarded,
    abandoned,
    vanished,
    kicked,
    expired_credentials,
    refuse,
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

/// Bytes the Rust side of the plugin currently holds on its heap (counted by
/// the global allocator, see `alloc`).
#[rustler::nif]
fn memory() -> usize {
    alloc::live_bytes()
}
