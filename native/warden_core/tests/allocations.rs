//! How many heap allocations each hook of a connect makes, counted by a
//! global allocator: in a broker each one is a malloc and a free on memory
//! the broker's own work has pushed out of the CPU caches, so the budget
//! below is held as a test (docs/BENCHMARKS.md, "Cache lines per hook").
//!
//! Its own test binary: the counting allocator is global. Counts are per
//! thread, so the test harness's other threads do not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use warden_core::credentials::{hash_password, HashScheme, PasswordFile};
use warden_core::firewall::{AuthRequest, Decision, FirewallConfig, UnknownUser};
use warden_core::obfuscation::{Cipher, KdfHash, Obfuscation};
use warden_core::policy::Policy;
use warden_core::registry::{ConnectInfo, RegistryConfig};
use warden_core::types::{Key, ProcId, Protocol};
use warden_core::warden::{AuthStep, Password, QueueEvent, Warden};

#[path = "../examples/bench_setup/mod.rs"]
mod bench_setup;
use bench_setup::{request, user, ENCRYPTED, POLICY, SECRET, USERS};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// count is a thread-local `Cell` with a const initialiser (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread, and its result.
fn counted<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (ALLOCATIONS.with(Cell::get) - before, r)
}

/// Allocations of each hook of client `i`'s connect: auth_on_register
/// (its request built in the count, over the broker's bytes, as the NIF's
/// decoder builds it), on_register, on_client_wakeup, on_client_gone
/// (`gone`: else it stays online).
fn connect(w: &Warden, i: usize, gone: bool) -> [usize; 4] {
    let (conn, queue) = (ProcId(i as u64 + 1), ProcId(1 << 40 | i as u64));
    let template = request(i);
    let key = template.key.clone();
    let name = user(i % USERS);
    let (auth, step) = counted(|| {
        let req = AuthRequest { key: Key::borrowed(&key.mountpoint, &key.client_id), username: Some(name.as_bytes().into()), ..template };
        w.auth_begin(req, conn, Password::Encrypted(ENCRYPTED), 5_000_000)
    });
    assert!(matches!(step, Ok(AuthStep::Decided(Decision::Accept(_), _))), "{step:?}");
    let info = ConnectInfo { peer: None, username: Some(name.as_bytes()), clean_session: true, protocol: Protocol::Mqtt3 };
    let (registered, _) = counted(|| w.registered((&key).into(), conn, info, 5_000_001));
    let (wakeup, _) = counted(|| w.queue_event(QueueEvent::Wakeup, (&key).into(), queue, 5_000_002));
    let ended = if gone { counted(|| w.queue_event(QueueEvent::Gone, (&key).into(), queue, 5_000_003)).0 } else { 0 };
    [auth, registered, wakeup, ended]
}

#[test]
fn a_cached_login_allocates_within_its_budget() {
    let line = hash_password(HashScheme::Sha512, b"s3cret!").unwrap();
    let passwd: String = (0..USERS).map(|i| format!("{}:{line}\n", user(i))).collect();
    let w = Warden::new(RegistryConfig::default(), FirewallConfig { unknown_user: UnknownUser::Deny, ..FirewallConfig::default() });
    w.install(Policy::parse(POLICY, "policy.toml").unwrap(), PasswordFile::parse(&passwd, "passwd"));
    w.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));
    // Every verification cached, the tables grown, the history full: a
    // node that has run for a while.
    for i in 0..3 * USERS {
        connect(&w, i, i >= USERS);
    }
    // Per connect, over a thousand: a table that grows now and then (the
    // registry's index, its key pool) adds one allocation in hundreds of
    // connects, at points that move with the random hash keys.
    let per_hook = |gone: bool, clients: std::ops::Range<usize>| {
        let mut total = [0; 4];
        for i in clients {
            for (t, n) in total.iter_mut().zip(connect(&w, i, gone)) {
                *t += n;
            }
        }
        total.map(|n| (n as f64 / USERS as f64 * 100.0).round() / 100.0)
    };
    // auth: a login decided in its first call is never boxed, and its
    // request copies nothing; gone: its ending goes into the buffers of
    // the history entry it replaces
    assert_eq!(per_hook(true, 3 * USERS..4 * USERS), [0.0, 0.0, 0.0, 0.0]);
    // A reconnect of a client id that is online, as devices reconnect: the
    // client id binding reads the session's owner in place, copying
    // nothing; the wakeup ends the session taken over, as gone does.
    assert_eq!(per_hook(false, 0..USERS), [0.0, 0.0, 0.0, 0.0]);
}
