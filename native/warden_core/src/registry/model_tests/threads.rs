//! Multi-threaded runs: many keys and real races on one key, checked for
//! lost, ghost or duplicated sessions; listings under concurrent changes.

use super::*;

// ---- multi-threaded ---------------------------------------------------------------

/// Many keys driven concurrently from several threads, each key's hooks in a
/// valid broker order (including the races); then the final state of every
/// key is checked against what the broker would have, counts against a scan,
/// and finally everything is disconnected/expired and nothing may remain.
#[test]
fn concurrent_keys_no_lost_ghost_or_duplicate_sessions() {
    const THREADS: usize = 8;
    const KEYS: usize = 150;
    const ROUNDS: usize = 40;
    let r = Arc::new(Registry::new(RegistryConfig {
        shards: 16,
        history_size: 100,
        pending_ttl_ms: u64::MAX,
    }));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                let mut rng = Rng(0xDEAD_BEEF ^ ((t as u64 + 1) * 0x1234_5678_9ABC));
                let keys: Vec<_> = (0..KEYS).map(|i| key(&format!("t{t}-{i}"))).collect();
                let mut sims: Vec<KeySim> = keys.iter().map(|_| KeySim::default()).collect();
                let mut expect = vec![Expect::Absent; KEYS];
                let mut ids = (t as u64 + 1) << 40;
                for round in 0..ROUNDS {
                    for i in 0..KEYS {
                        let (script, e) = sims[i].script(&mut rng, &mut ids, false);
                        let mut auth_gen = None;
                        for ev in script {
                            if let Err(g) = apply(&r, &keys[i], ev, round as u64) {
                                auth_gen = Some(g);
                            }
                        }
                        expect[i] = e;
                        let v = r.lookup(&keys[i]);
                        let state = v.as_ref().map(|v| v.state);
                        let want = match e {
                            Expect::Absent => None,
                            Expect::Online => Some(SessionState::Online),
                            Expect::Offline => Some(SessionState::Offline),
                        };
                        assert_eq!(state, want, "{:?} after round {round}", keys[i]);
                        if let (Some(g), Some(v)) = (auth_gen, &v) {
                            if e == Expect::Online {
                                assert_eq!(v.generation, g, "{:?}", keys[i]);
                                assert_eq!(v.pending_generation, None);
                            }
                        }
                        if let Some(v) = v {
                            if v.state == SessionState::Online {
                                assert_eq!(v.queue, Some(ProcId(sims[i].queue)), "{:?}", keys[i]);
                            }
                        }
                    }
                }
                (keys, sims, expect)
            })
        })
        .collect();
    // The per-user index starts while the hooks run, on a registry that
    // already has records in every state (a reload that first sets
    // max_sessions, a first peer).
    let counter = {
        let r = Arc::clone(&r);
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                if r.len() >= KEYS * THREADS / 2 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            r.count_users();
        })
    };
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    counter.join().unwrap();

    let all = r.list(&Filter::default(), usize::MAX);
    let mut expected_present = 0;
    for (keys, _, expect) in &results {
        for (k, e) in keys.iter().zip(expect) {
            let want = match e {
                Expect::Absent => None,
                Expect::Online => Some(SessionState::Online),
                Expect::Offline => Some(SessionState::Offline),
            };
            assert_eq!(r.lookup(k).map(|v| v.state), want);
            expected_present += usize::from(want.is_some());
        }
    }
    assert_eq!(all.len(), expected_present, "ghost or lost records");
    assert_eq!(r.len(), expected_present);
    let n = |s| all.iter().filter(|v| v.state == s).count() as u64;
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 0,
            online: n(SessionState::Online),
            offline: n(SessionState::Offline)
        }
    );
    for (u, name) in USERS.iter().enumerate() {
        let scan = all
            .iter()
            .filter(|v| {
                v.state == SessionState::Online && v.username.as_deref() == Some(name.as_bytes())
            })
            .count();
        assert_eq!(r.live_sessions_of_user(name.as_bytes()), scan, "user {u}");
    }

    // Tear down: every session ends from its own queue; nothing may remain.
    for (keys, sims, _) in &results {
        for (k, s) in keys.iter().zip(sims) {
            let q = ProcId(s.queue);
            if s.online {
                if s.clean {
                    assert_eq!(r.gone(k, q, 1000), Applied::Applied);
                } else {
                    assert_eq!(r.went_offline(k, q, 1000), Applied::Applied);
                }
            }
            if s.stored && !(s.online && s.clean) {
                assert_eq!(r.expired(k, q, 1001), Applied::Applied, "{k:?}");
            }
        }
    }
    assert_eq!(r.len(), 0);
    assert!(r.list(&Filter::default(), usize::MAX).is_empty());
    assert_eq!(r.counts(), StateCounts::default());
    assert_eq!(r.users.entries(), 0, "per-user index leaked entries");
    assert_eq!(r.stats().unknown_events, 0);
}

/// The two processes of a takeover really racing on one key: the new
/// connection's on_register against the old queue's offline/gone. Whatever
/// wins, the outcome is the same.
#[test]
fn cross_process_race_on_one_key() {
    let r = Arc::new(Registry::new(RegistryConfig::default()));
    r.count_users();
    for i in 0..300u64 {
        let k = key(&format!("race{i}"));
        let old_clean = i % 2 == 0;
        let (s1, q1, s2) = (ProcId(i * 10 + 1), ProcId(i * 10 + 2), ProcId(i * 10 + 3));
        let g1 = r.auth_accepted(&k, s1, cinfo(0, old_clean), 0);
        r.woke_up(&k, q1, 0);
        r.registered(&k, s1, cinfo(0, old_clean), 0);
        // New connect is persistent: the old queue is kept (false->false) or
        // reused after its gone (true->false).
        let g2 = r.auth_accepted(&k, s2, cinfo(0, false), 1);
        let barrier = Arc::new(Barrier::new(2));
        std::thread::scope(|sc| {
            let (r1, b1, k1) = (&r, Arc::clone(&barrier), k.clone());
            sc.spawn(move || {
                b1.wait();
                r1.registered(&k1, s2, cinfo(0, false), 2);
            });
            let (r2, b2, k2) = (&r, Arc::clone(&barrier), k.clone());
            sc.spawn(move || {
                b2.wait();
                if old_clean {
                    r2.gone(&k2, q1, 2);
                } else {
                    r2.went_offline(&k2, q1, 2);
                }
            });
        });
        assert_eq!(r.woke_up(&k, q1, 3), Applied::Applied);
        let v = r.lookup(&k).unwrap();
        assert_eq!(
            (v.state, v.generation, v.queue, v.conn),
            (SessionState::Online, g2, Some(q1), Some(s2))
        );
        let ends: Vec<_> = r
            .recent_endings(usize::MAX)
            .into_iter()
            .filter(|e| e.key == k)
            .collect();
        assert_eq!(ends.len(), 1, "{k:?}: {ends:?}");
        assert_eq!(
            (ends[0].generation, ends[0].reason),
            (g1, EndReason::TakenOver)
        );
    }
    assert_eq!(r.counts().online, 300);
    assert_eq!(r.stats().taken_over, 300);
    assert_eq!(r.live_sessions_of_user(b"alice"), 300);
}

/// The other race of docs/VERNEMQ.md, "Processes and hook order", with real threads: a clean
/// takeover (old session clean or persistent, new one clean), where the old
/// queue's on_client_gone runs at the same time as the new queue's wakeup
/// followed by the new connection's on_register. Whatever the interleaving:
/// the new generation is online on the new queue, the old one ended
/// `TakenOver` exactly once, and the old queue's gone is applied or counted
/// stale, never both. Many keys at once, on few shards, so that the racing
/// threads also contend for shard locks with each other.
#[test]
fn clean_takeover_late_gone_races_new_queue_threads() {
    const KEYS: u64 = 400;
    let r = Arc::new(Registry::new(RegistryConfig { shards: 4, history_size: 10_000, pending_ttl_ms: u64::MAX }));
    let mut g2s = Vec::new();
    for i in 0..KEYS {
        let k = key(&format!("late-gone{i}"));
        let old_clean = i % 2 == 0;
        let (s1, q1, s2) = (ProcId(i * 10 + 1), ProcId(i * 10 + 2), ProcId(i * 10 + 3));
        r.auth_accepted(&k, s1, cinfo(1, old_clean), 0);
        r.woke_up(&k, q1, 0);
        r.registered(&k, s1, cinfo(1, old_clean), 0);
        g2s.push(r.auth_accepted(&k, s2, cinfo(1, true), 1));
    }
    let stale_before = r.stats().stale_events;
    // The per-user index starts in the middle of the races.
    let barrier = Arc::new(Barrier::new(3));
    std::thread::scope(|sc| {
        let (r0, b0) = (&r, Arc::clone(&barrier));
        sc.spawn(move || {
            b0.wait();
            r0.count_users();
        });
        let (r1, b1) = (&r, Arc::clone(&barrier));
        sc.spawn(move || {
            b1.wait();
            for i in 0..KEYS {
                let k = key(&format!("late-gone{i}"));
                r1.gone(&k, ProcId(i * 10 + 2), 2);
            }
        });
        let (r2, b2) = (&r, Arc::clone(&barrier));
        sc.spawn(move || {
            b2.wait();
            for i in 0..KEYS {
                let k = key(&format!("late-gone{i}"));
                r2.woke_up(&k, ProcId(i * 10 + 4), 2);
                r2.registered(&k, ProcId(i * 10 + 3), cinfo(1, true), 2);
            }
        });
    });
    let endings = r.recent_endings(usize::MAX);
    for i in 0..KEYS {
        let k = key(&format!("late-gone{i}"));
        let v = r.lookup(&k).unwrap();
        assert_eq!(
            (v.state, v.generation, v.queue, v.conn, v.pending_generation),
            (SessionState::Online, g2s[i as usize], Some(ProcId(i * 10 + 4)), Some(ProcId(i * 10 + 3)), None),
            "{k:?}"
        );
        let mine: Vec<_> = endings.iter().filter(|e| e.key == k).collect();
        assert_eq!(mine.len(), 1, "{k:?}: {mine:?}");
        assert_eq!(mine[0].reason, EndReason::TakenOver, "{k:?}");
    }
    let stale = r.stats().stale_events - stale_before;
    assert!(stale <= KEYS, "at most one stale gone per key, got {stale}");
    assert_eq!(r.counts(), StateCounts { authenticated: 0, online: KEYS, offline: 0 });
    assert_eq!(r.live_sessions_of_user(USERS[1].as_bytes()), KEYS as usize);
}

/// Where `k`'s record is: (shard, slot, the shard's length).
fn slot_of(r: &Registry, k: &SubscriberKey) -> Option<(usize, u32, u32)> {
    let h = r.hash_key(k.into());
    let shard = r.shard_index(h);
    let g = r.shards[shard].inner.lock();
    g.find(h, k.into()).map(|slot| (shard, slot, g.slab.len()))
}

/// Is slot `slot` of `shard` still ahead of `cursor` (`None`: listing done)?
fn unvisited(cursor: Option<ListCursor>, shard: usize, slot: u32) -> bool {
    match cursor {
        None => false,
        Some(c) => shard > c.shard || (shard == c.shard && slot < c.unvisited),
    }
}

/// Inserts and removals between the steps of a chunked listing: every key
/// present for the whole listing is returned, nothing that never existed
/// is, and a key comes back twice only after a removal moved its record
/// from a visited slot to one still ahead of the cursor.
#[test]
fn list_chunk_under_concurrent_changes() {
    let mut repeats = 0;
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let r = Registry::new(RegistryConfig {
            shards: 1 << rng.below(3),
            ..Default::default()
        });
        let universe: Vec<SubscriberKey> = (0..400).map(|i| key(&format!("k{i}"))).collect();
        let queue = |i: usize| ProcId(10_000 + i as u64);
        let mut present = vec![false; universe.len()];
        for (i, k) in universe.iter().enumerate() {
            if rng.chance(50) {
                assert_eq!(r.went_offline(k, queue(i), 0), Applied::Applied);
                present[i] = true;
            }
        }
        let mut throughout = present.clone();
        let mut ever = present.clone();
        let mut moves_ahead = vec![0usize; universe.len()];
        let index: HashMap<SubscriberKey, usize> =
            universe.iter().cloned().enumerate().map(|(i, k)| (k, i)).collect();

        let mut out = Vec::new();
        let mut cursor = Some(ListCursor::START);
        while let Some(c) = cursor {
            let max_slots = 1 + rng.below(8) as usize;
            cursor = r.list_chunk(&Filter::default(), c, max_slots, &mut out, usize::MAX);
            for _ in 0..rng.below(4) {
                let i = rng.below(universe.len() as u64) as usize;
                let k = &universe[i];
                if present[i] {
                    let (shard, slot, len) = slot_of(&r, k).expect("present key has a slot");
                    let last = len - 1;
                    if slot < last && unvisited(cursor, shard, slot) && !unvisited(cursor, shard, last) {
                        let g = r.shards[shard].inner.lock();
                        let (mp, cid) = g.slab.get(last).key_parts(&g.st);
                        let moved = SubscriberKey::new(mp.to_vec(), cid.to_vec());
                        moves_ahead[index[&moved]] += 1;
                    }
                    assert_eq!(r.expired(k, queue(i), 1), Applied::Applied);
                    present[i] = false;
                    throughout[i] = false;
                } else {
                    assert_eq!(r.went_offline(k, queue(i), 1), Applied::Applied);
                    present[i] = true;
                    ever[i] = true;
                }
            }
        }

        let mut seen = vec![0usize; universe.len()];
        for v in &out {
            let i = *index.get(&v.key).expect("listed key never existed");
            assert!(ever[i], "seed {seed}: {:?} listed but never present", v.key);
            seen[i] += 1;
        }
        for i in 0..universe.len() {
            if throughout[i] {
                assert!(seen[i] >= 1, "seed {seed}: {:?} missed", universe[i]);
            }
            assert!(
                seen[i] <= 1 + moves_ahead[i],
                "seed {seed}: {:?} listed {} times, moved ahead {} times",
                universe[i],
                seen[i],
                moves_ahead[i]
            );
            repeats += seen[i].saturating_sub(1);
        }
    }
    assert!(repeats > 0, "no run exercised a repeated key");
}
