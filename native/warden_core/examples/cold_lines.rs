//! One connect's four hooks with the CPU caches emptied before each, for a
//! cache simulator: `valgrind --tool=cachegrind` counts the same misses on
//! every run, where the timings of `auth_cost` move by 10-40% on a shared
//! machine. `scripts/cold_lines.sh` runs it with each number of hooks
//! (`none`, `auth`, `auth+reg`, `auth+reg+wake`, `all`) and subtracts.

use warden_core::credentials::{hash_password, HashScheme, PasswordFile};
use warden_core::firewall::{AuthRequest, FirewallConfig, UnknownUser};
use warden_core::obfuscation::{Cipher, KdfHash, Obfuscation};
use warden_core::policy::Policy;
use warden_core::registry::{ConnectInfo, RegistryConfig};
use warden_core::types::{Key, ProcId, Protocol, SubscriberKey};
use warden_core::warden::{AuthStep, Password, QueueEvent, Warden};

mod bench_setup;
use bench_setup::{request, user, ENCRYPTED, POLICY, SECRET, USERS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hooks = match args.get(1).map(String::as_str) {
        Some("none") => 0,
        Some("auth") => 1,
        Some("auth+reg") => 2,
        Some("auth+reg+wake") => 3,
        Some("all") => 4,
        _ => panic!("usage: cold_lines none|auth|auth+reg|auth+reg+wake|all [ROUNDS]"),
    };
    let rounds: usize = args.get(2).map_or(200, |r| r.parse().unwrap());
    // The password "s3cret!" for every user: the encrypted form is fixed.
    let line = hash_password(HashScheme::Sha512, b"s3cret!").unwrap();
    let passwd: String = (0..USERS).map(|i| format!("{}:{line}\n", user(i))).collect();
    let w = Warden::new(RegistryConfig::default(), FirewallConfig { unknown_user: UnknownUser::Deny, ..FirewallConfig::default() });
    w.install(Policy::parse(POLICY, "policy.toml").unwrap(), PasswordFile::parse(&passwd, "passwd"));
    w.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));
    // Every user logged in once (a `$6$` check each: none cached), 20,000 sessions online and the
    // ring of recent endings full, as on a node that has run for a while.
    // The endings' client ids have the measured ones' length, so a
    // disconnect reuses a ring entry's buffer as it does on such a node.
    for i in 0..20_000 {
        connect(&w, i, 3);
    }
    for i in 200_000..202_000 {
        connect(&w, i, 4);
    }
    // The connects' arguments built beforehand: their formatting is not a hook's.
    let clients: Vec<_> = (0..rounds).map(|round| client(100_000 + round)).collect();
    let mut junk = vec![0u8; 4 << 20];
    for c in clients {
        measured_connect(&w, c, hooks, &mut junk);
    }
}

/// The measured connects, apart from the setup's: scripts/cold_lines.sh
/// has callgrind collect only inside this function.
#[inline(never)]
fn measured_connect(w: &Warden, c: Client, hooks: usize, junk: &mut [u8]) {
    connect_cold(w, c, hooks, junk);
}

struct Client {
    i: usize,
    request: AuthRequest<'static>,
    key: SubscriberKey,
    name: String,
}

/// The request without its client id and username: the measured auth
/// borrows them, as the NIF's decoder borrows the broker's binaries.
fn client(i: usize) -> Client {
    let mut request = request(i);
    let key = std::mem::replace(&mut request.key, SubscriberKey::new(&b""[..], &b""[..]));
    request.username = None;
    Client { i, key, request, name: user(i % USERS) }
}

fn connect(w: &Warden, i: usize, hooks: usize) {
    connect_cold(w, client(i), hooks, &mut []);
}

/// The first `hooks` hooks of one connect, `junk` written before each.
fn connect_cold(w: &Warden, c: Client, hooks: usize, junk: &mut [u8]) {
    let mut empty = || {
        for line in junk.chunks_mut(64) {
            line[0] = line[0].wrapping_add(1);
        }
        std::hint::black_box(&*junk);
    };
    let Client { i, request: r, key, name } = c;
    let (conn, queue) = (ProcId(i as u64), ProcId(1 << 40 | i as u64));
    empty();
    if hooks >= 1 {
        let r = AuthRequest { key: Key::borrowed(&b""[..], &key.client_id), username: Some(name.as_bytes().into()), ..r };
        let step = w.auth_begin(r, conn, Password::Encrypted(ENCRYPTED), 5_000_000).unwrap();
        assert!(matches!(step, AuthStep::Decided(warden_core::firewall::Decision::Accept(_), _)), "{step:?}");
    }
    empty();
    if hooks >= 2 {
        let info = ConnectInfo { peer: None, username: Some(name.as_bytes()), clean_session: true, protocol: Protocol::Mqtt3 };
        w.registered((&key).into(), conn, info, 5_000_001);
    }
    empty();
    if hooks >= 3 {
        let _ = w.queue_event(QueueEvent::Wakeup, (&key).into(), queue, 5_000_002);
    }
    empty();
    if hooks >= 4 {
        let _ = w.queue_event(QueueEvent::Gone, (&key).into(), queue, 5_000_003);
    }
}
