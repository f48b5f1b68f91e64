//! Where one connect's time goes inside the core (release build):
//! `cargo run --release -p warden_core --example auth_cost`. Prints the
//! mean of each step over many connects with the broker bench's policy
//! (1,000 `$6$` users, network and client-id rules).

use std::time::Instant;

use warden_core::credentials::{hash_password, HashScheme, PasswordFile};
use warden_core::firewall::{AuthRequest, FirewallConfig, UnknownUser};
use warden_core::obfuscation::{Cipher, KdfHash, Obfuscation};
use warden_core::policy::Policy;
use warden_core::registry::{ConnectInfo, RegistryConfig};
use warden_core::types::{ProcId, Protocol};
use warden_core::warden::{AuthStep, Password, QueueEvent, Warden};

mod bench_setup;
use bench_setup::{request, user, ENCRYPTED, POLICY, SECRET, USERS};

const CONNECTS: usize = 200_000;

fn mean_ns(start: Instant, n: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let passwd: String = (0..USERS)
        .map(|i| format!("{}:{}\n", user(i), hash_password(HashScheme::Sha512, format!("pw-{i}").as_bytes()).unwrap()))
        .collect();
    let w = Warden::new(RegistryConfig::default(), FirewallConfig { unknown_user: UnknownUser::Deny, ..FirewallConfig::default() });
    w.install(Policy::parse(POLICY, "policy.toml").unwrap(), PasswordFile::parse(&passwd, "passwd"));
    let obf = Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET).unwrap();
    w.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));

    let t = Instant::now();
    for _ in 0..CONNECTS {
        std::hint::black_box(obf.decrypt(ENCRYPTED, &mut warden_core::obfuscation::DecryptBuffer::new()).is_some());
    }
    println!("decrypt {{encrypted, _}}            {:7.0} ns", mean_ns(t, CONNECTS));

    // The firewall alone, in its two steps, without the registry.
    use warden_core::firewall::{NoSessions, PasswordStep, Step};
    let fw = &w.firewall;
    let reqs: Vec<AuthRequest> = (0..CONNECTS).map(request).collect();
    let t = Instant::now();
    let pendings: Vec<_> = reqs
        .into_iter()
        .map(|r| match fw.begin(r, &NoSessions, 1_000_000) {
            Step::NeedPassword(p) => p,
            Step::Done(d, _) => panic!("{d:?}"),
        })
        .collect();
    println!("firewall.begin (rules, limits)    {:7.0} ns", mean_ns(t, CONNECTS));
    let t = Instant::now();
    for (i, p) in pendings.iter().enumerate() {
        let pw = format!("pw-{}", i % USERS);
        assert!(matches!(fw.with_password(p, Some(pw.as_bytes()), &NoSessions, 1_000_000), PasswordStep::Done(_)));
    }
    println!("firewall.with_password ($6$)    {:7.0} ns", mean_ns(t, CONNECTS));
    drop(pendings);
    let reqs: Vec<AuthRequest> = (0..CONNECTS).map(request).collect();
    let pws: Vec<String> = (0..CONNECTS).map(|i| format!("pw-{}", i % USERS)).collect();
    let t = Instant::now();
    for (i, r) in reqs.into_iter().enumerate() {
        let step = w.auth_begin(r, ProcId(i as u64), Password::Clear(pws[i].as_bytes()), 1_000_000 + i as u64).unwrap();
        assert!(matches!(step, AuthStep::Decided(warden_core::firewall::Decision::Accept(_), _)), "{step:?}");
    }
    println!("auth_begin, clear password        {:7.0} ns (accepted; a $6$ check each, never cached)", mean_ns(t, CONNECTS));

    let t = Instant::now();
    for i in 0..CONNECTS {
        std::hint::black_box((request(i).key, user(i % USERS)));
    }
    let baseline = mean_ns(t, CONNECTS);
    let t = Instant::now();
    for i in 0..CONNECTS {
        let key = request(i).key;
        let name = user(i % USERS);
        let info = ConnectInfo { peer: None, username: Some(name.as_bytes()), clean_session: true, protocol: Protocol::Mqtt3 };
        w.registered((&key).into(), ProcId(i as u64), info, 2_000_000);
        w.queue_event(QueueEvent::Wakeup, (&key).into(), ProcId(1 << 40 | i as u64), 2_000_001);
        w.queue_event(QueueEvent::Gone, (&key).into(), ProcId(1 << 40 | i as u64), 2_000_002);
    }
    println!("registered + wakeup + gone         {:7.0} ns (request building {baseline:.0} ns included)", mean_ns(t, CONNECTS));

    from_threads();
    cold(&w, &obf);
    // A second node, same policy and users, sharing no data with `w`: a
    // step run on it first warms the code (and the allocator), not `w`'s state.
    let other = Warden::new(RegistryConfig::default(), FirewallConfig { unknown_user: UnknownUser::Deny, ..FirewallConfig::default() });
    other.install(Policy::parse(POLICY, "policy.toml").unwrap(), PasswordFile::parse(&passwd, "passwd"));
    other.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));
    for i in 0..USERS {
        other.auth_begin(request(i), ProcId(i as u64), Password::Clear(format!("pw-{i}").as_bytes()), 1_000_000).unwrap();
    }
    code_shared_own(&w, &other);
}

/// Logins with `{encrypted, _}` passwords, as every VerneMQ 2.x connect of
/// a known client (`$6$`, checked at each): from one thread, then from
/// two at once, each over its own clients. What the second thread adds
/// shows what the threads' shared writes (locks taken for reading,
/// counters) cost each other; on a broker with many schedulers that cost
/// grows.
fn from_threads() {
    const PER_THREAD: usize = 300_000;
    // Every user's password is the one `ENCRYPTED` holds.
    let line = hash_password(HashScheme::Sha512, b"s3cret!").unwrap();
    let passwd: String = (0..USERS).map(|i| format!("{}:{line}\n", user(i))).collect();
    let w = &Warden::new(RegistryConfig::default(), FirewallConfig { unknown_user: UnknownUser::Deny, ..FirewallConfig::default() });
    w.install(Policy::parse(POLICY, "policy.toml").unwrap(), PasswordFile::parse(&passwd, "passwd"));
    w.set_obfuscation(Obfuscation::new(Cipher::Aes128Cbc, KdfHash::Sha256, 1, SECRET));
    let run = |threads: usize, base: usize| {
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..threads {
                s.spawn(move || {
                    for n in 0..PER_THREAD {
                        let i = base + th * PER_THREAD + n;
                        let step = w.auth_begin(request(i), ProcId(i as u64), Password::Encrypted(ENCRYPTED), 1_000_000).unwrap();
                        assert!(matches!(step, AuthStep::Decided(warden_core::firewall::Decision::Accept(_), _)), "{step:?}");
                    }
                });
            }
        });
        (threads * PER_THREAD) as f64 / t.elapsed().as_secs_f64()
    };
    let one = run(1, 2_000_000);
    let two = run(2, 3_000_000);
    println!("{{encrypted, _}} logins: 1 thread {one:9.0}/s, 2 threads {two:9.0}/s ({:.2}x)", two / one);
}

/// 16 MiB written, one byte per cache line, between two timed steps: the
/// caches then hold this buffer, not the step's code and data.
struct CacheEmptier(Vec<u8>);

impl CacheEmptier {
    fn new() -> Self {
        CacheEmptier(vec![0u8; 16 << 20])
    }

    fn empty(&mut self, round: usize) {
        for line in self.0.chunks_mut(64) {
            line[0] = line[0].wrapping_add(round as u8);
        }
        std::hint::black_box(&self.0);
    }
}

/// The same steps with the CPU caches emptied before each one (16 MiB
/// written between two steps, not timed), as inside a broker that runs
/// other code between two hooks of one connection.
fn cold(w: &Warden, obf: &Obfuscation) {
    use warden_core::firewall::{NoSessions, PasswordStep, Step};
    const ROUNDS: usize = 2_000;
    let mut junk = CacheEmptier::new();
    let mut spent = [0u128; 5];
    let mut timed = |slot: usize, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        spent[slot] += t.elapsed().as_nanos();
    };
    for round in 0..ROUNDS {
        let i = 500_000 + round;
        let pw = format!("pw-{}", i % USERS);
        junk.empty(round);
        timed(0, &mut || {
            std::hint::black_box(obf.decrypt(ENCRYPTED, &mut warden_core::obfuscation::DecryptBuffer::new()).is_some());
        });
        junk.empty(round);
        let mut pending = None;
        timed(1, &mut || {
            pending = match w.firewall.begin(request(i), &NoSessions, 3_000_000) {
                Step::NeedPassword(p) => Some(p),
                Step::Done(d, _) => panic!("{d:?}"),
            };
        });
        junk.empty(round);
        let pending = pending.unwrap();
        timed(2, &mut || {
            assert!(matches!(w.firewall.with_password(&pending, Some(pw.as_bytes()), &NoSessions, 3_000_000), PasswordStep::Done(_)));
        });
        junk.empty(round);
        let (r, p) = (request(i), pw.clone());
        timed(3, &mut || {
            let step = w.auth_begin(r.clone(), ProcId(i as u64), Password::Clear(p.as_bytes()), 3_000_000).unwrap();
            std::hint::black_box(step);
        });
        junk.empty(round);
        let key = request(i).key;
        let name = user(i % USERS);
        timed(4, &mut || {
            let info = ConnectInfo { peer: None, username: Some(name.as_bytes()), clean_session: true, protocol: Protocol::Mqtt3 };
            w.registered((&key).into(), ProcId(i as u64), info, 3_000_001);
        });
    }
    let mean = |slot: usize| spent[slot] as f64 / ROUNDS as f64;
    println!("cold caches (16 MiB written before each step, {ROUNDS} rounds):");
    println!("  decrypt {:7.0} ns, firewall.begin {:7.0} ns, with_password {:7.0} ns, auth_begin {:7.0} ns, registered {:7.0} ns",
        mean(0), mean(1), mean(2), mean(3), mean(4));
}

/// What a cold step pays for, in three parts: after the caches are
/// emptied, the step for one client with nothing warm; with its code warm
/// (the same step just run on `other`, a node sharing no data with `w`); with
/// its code and `w`'s shared state warm (the same step just run on `w` for
/// another client of another user). The rest of the last figure is the
/// client's own records. The three kinds of round alternate.
fn code_shared_own(w: &Warden, other: &Warden) {
    const ROUNDS: usize = 6_000;
    let mut junk = CacheEmptier::new();
    let mut spent = [[0u128; 3]; 4];
    for round in 0..ROUNDS {
        let warmed = round % 3;
        let client = |i: usize| (i, request(i), format!("pw-{}", i % USERS), user(i % USERS));
        let (measured, warmer) = (client(800_000 + round), client(900_000 + round * 7 + 333));
        for (step, spent) in spent.iter_mut().enumerate() {
            junk.empty(round);
            let run = |w: &Warden, (i, r, pw, name): &(usize, AuthRequest, String, String)| {
                let (key, queue) = ((&r.key).into(), ProcId(1 << 40 | *i as u64));
                match step {
                    0 => drop(std::hint::black_box(w.auth_begin(r.clone(), ProcId(*i as u64), Password::Clear(pw.as_bytes()), 4_000_000))),
                    1 => {
                        let info = ConnectInfo { peer: None, username: Some(name.as_bytes()), clean_session: true, protocol: Protocol::Mqtt3 };
                        w.registered(key, ProcId(*i as u64), info, 4_000_000);
                    }
                    2 => drop(w.queue_event(QueueEvent::Wakeup, key, queue, 4_000_001)),
                    _ => drop(w.queue_event(QueueEvent::Gone, key, queue, 4_000_002)),
                }
            };
            match warmed {
                1 => run(other, &warmer),
                2 => run(w, &warmer),
                _ => {}
            }
            let t = Instant::now();
            run(w, &measured);
            spent[warmed] += t.elapsed().as_nanos();
        }
    }
    let mean = |step: usize, warmed: usize| spent[step][warmed] as f64 / (ROUNDS / 3) as f64;
    println!("after 16 MiB written, one client's step: nothing warm / its code warm / its code and the node's shared state warm ({ROUNDS} rounds):");
    for (step, name) in ["auth_begin", "registered", "wakeup", "gone"].iter().enumerate() {
        println!("  {name:12} {:6.0} / {:6.0} / {:6.0} ns", mean(step, 0), mean(step, 1), mean(step, 2));
    }
    let connect = |warmed: usize| (0..4).map(|step| mean(step, warmed)).sum::<f64>();
    println!("  {:12} {:6.0} / {:6.0} / {:6.0} ns", "connect", connect(0), connect(1), connect(2));
}
