//! The registry against the model after every step of random
//! interleavings of the broker simulator's scenarios.

use super::model::*;
use super::*;

/// Model generations and registry generations are numbered differently
/// (global counter vs per-shard counters); per key they must correspond one
/// to one, and both increase.
#[derive(Default)]
struct GenMap {
    fwd: HashMap<(SubscriberKey, u64), u64>,
    back: HashMap<(SubscriberKey, u64), u64>,
}
impl GenMap {
    fn check(&mut self, k: &SubscriberKey, model: u64, real: u64, ctx: &str) {
        let f = *self.fwd.entry((k.clone(), model)).or_insert(real);
        let b = *self.back.entry((k.clone(), real)).or_insert(model);
        assert_eq!((f, b), (real, model), "generation mismatch: {ctx}");
    }
}

/// `counting`: the per-user index runs (else it must be empty).
fn compare(r: &Registry, m: &Model, keys: &[SubscriberKey], gm: &mut GenMap, counting: bool, ctx: &str) {
    for k in keys {
        let (a, b) = (r.lookup(k), m.view(k));
        match (&a, &b) {
            (Some(a), Some(b)) => {
                gm.check(k, b.generation, a.generation, ctx);
                if let (Some(x), Some(y)) = (b.pending_generation, a.pending_generation) {
                    gm.check(k, x, y, ctx);
                }
                let norm = |v: &SessionView| SessionView {
                    generation: 0,
                    pending_generation: v.pending_generation.map(|_| 0),
                    ..v.clone()
                };
                assert_eq!(norm(a), norm(b), "view of {k:?} differs: {ctx}");
            }
            (None, None) => {}
            _ => panic!("presence of {k:?} differs: registry {a:?} model {b:?}: {ctx}"),
        }
    }
    let scan = |s| {
        m.recs
            .keys()
            .filter(|k| m.view(k).unwrap().state == s)
            .count() as u64
    };
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: scan(SessionState::Authenticated),
            online: scan(SessionState::Online),
            offline: scan(SessionState::Offline),
        },
        "{ctx}"
    );
    let st = r.stats();
    let taken = |h: &VecDeque<Ending>| {
        h.iter()
            .filter(|e| e.reason == EndReason::TakenOver)
            .count()
    };
    assert_eq!(
        (
            st.live,
            st.stale_events,
            st.duplicate_events,
            st.unknown_events,
            st.history_len
        ),
        (
            m.recs.len() as u64,
            m.stale,
            m.dup,
            m.unknown,
            m.hist.len() as u64
        ),
        "stats: {ctx}"
    );
    for u in USERS {
        assert_eq!(
            r.live_sessions_of_user(u.as_bytes()),
            if counting { m.user_count(u.as_bytes()) } else { 0 },
            "user {u}: {ctx}"
        );
    }
    let he = r.recent_endings(usize::MAX);
    assert_eq!(he.len(), m.hist.len(), "{ctx}");
    assert_eq!(taken(&he.iter().cloned().collect()), taken(&m.hist));
    for (a, b) in he.iter().zip(m.hist.iter().rev()) {
        gm.check(&a.key, b.generation, a.generation, ctx);
        assert_eq!(
            Ending {
                generation: 0,
                ..a.clone()
            },
            Ending {
                generation: 0,
                ..b.clone()
            },
            "ending: {ctx}"
        );
    }
}

fn run_model(seed: u64, shards: usize, steps: usize) {
    let mut rng = Rng(seed);
    let cap = 1 + rng.below(20) as usize;
    // The per-user index starts at a random step, with records in every
    // state already there (as when a reload first sets max_sessions).
    let counting_from = rng.below(steps as u64) as usize;
    let ttl = 500;
    let r = Registry::new(RegistryConfig {
        shards,
        history_size: cap,
        pending_ttl_ms: ttl,
    });
    let mut m = Model {
        recs: BTreeMap::new(),
        gen: 0,
        ttl,
        cap,
        hist: VecDeque::new(),
        stale: 0,
        dup: 0,
        unknown: 0,
    };
    let keys: Vec<SubscriberKey> = (0..4).map(|i| key(&format!("k{i}"))).collect();
    let mut sims: Vec<KeySim> = keys.iter().map(|_| KeySim::default()).collect();
    let mut scripts: Vec<VecDeque<Ev>> = keys.iter().map(|_| VecDeque::new()).collect();
    let mut ids = 1000;
    let mut now: Millis = 1;
    let mut gm = GenMap::default();
    for step in 0..steps {
        now += rng.below(40);
        let ctx = format!("seed {seed} shards {shards} step {step}");
        if step == counting_from {
            r.count_users();
        }
        match rng.below(100) {
            0..=2 => now += 2 * ttl,
            3..=5 => assert_eq!(r.sweep(now), m.sweep(now), "sweep: {ctx}"),
            6..=9 => {
                // Noise: an event from a random (mostly stale) process.
                let i = rng.below(keys.len() as u64) as usize;
                let p = ProcId(1000 + rng.below(ids - 999));
                let ev = match rng.below(6) {
                    0 => Ev::Wake(p),
                    1 => Ev::Off(p),
                    2 => Ev::Gone(p),
                    3 => Ev::Exp(p),
                    4 => Ev::Reg {
                        conn: p,
                        user: 0,
                        clean: true,
                    },
                    _ => Ev::Auth {
                        conn: p,
                        user: 1,
                        clean: false,
                    },
                };
                let (a, b) = (apply(&r, &keys[i], ev, now), m.step(&keys[i], ev, now));
                match (a, b) {
                    (Err(x), Err(y)) => gm.check(&keys[i], y, x, &ctx),
                    (a, b) => assert_eq!(a, b, "noise {ev:?}: {ctx}"),
                }
            }
            10 => {
                let n = rng.below(30) as usize;
                r.set_history_size(n);
                m.cap = n;
                m.trim();
            }
            _ => {
                let i = rng.below(keys.len() as u64) as usize;
                if scripts[i].is_empty() {
                    scripts[i] = sims[i].script(&mut rng, &mut ids, true).0.into();
                }
                let ev = scripts[i].pop_front().unwrap();
                match (apply(&r, &keys[i], ev, now), m.step(&keys[i], ev, now)) {
                    (Err(x), Err(y)) => gm.check(&keys[i], y, x, &ctx),
                    (a, b) => assert_eq!(a, b, "{ev:?} on {:?}: {ctx}", keys[i]),
                }
            }
        }
        compare(&r, &m, &keys, &mut gm, step >= counting_from, &ctx);
    }
}

#[test]
fn randomized_against_reference_model() {
    for seed in 1..=60u64 {
        let shards = [1, 2, 64][seed as usize % 3];
        run_model(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, shards, 600);
    }
}
