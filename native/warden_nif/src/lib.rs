//! The NIF library behind the Erlang module `vmq_warden_nif`.
//!
//! Term conversion only: `decode` turns hook arguments into `warden_core`
//! types, `encode` turns core results into the terms VerneMQ expects, and
//! every decision is made in `warden_core`. One `Warden` (registry +
//! firewall) lives for as long as the library is loaded.

mod admin;
mod decode;
mod encode;
mod hooks;
mod logbridge;
mod pending;
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
    warden_need_password = "$warden_need_password",
    warden_need_slow_hash = "$warden_need_slow_hash",
    wakeup,
    offline,
    gone,
    expired,
    applied,
    stale,
    duplicate,
    unknown,
    all,
    peer,
    username,
    }
}

#[rustler::nif]
fn ping() -> &'static str {
    "pong"
}

/// No resource types: nothing may keep the library loaded after the plugin
/// is disabled (see `pending`).
fn on_load(_env: rustler::Env, _info: rustler::Term) -> bool {
    logbridge::install();
    true
}

rustler::init!("vmq_warden_nif", load = on_load);
