//! What the registry answers: per-user counts, filtered and chunked
//! listings, the endings, and how records are laid out in memory.

use super::*;

#[test]
fn per_user_counts() {
    let r = reg();
    connect(&r, &key("a1"), S1, Q1, true, 0);
    r.auth_accepted(&key("a2"), S2, info("alice", true), 0);
    assert_eq!(r.live_sessions_of_user(b"alice"), 2);
    // A takeover of a1 by another user: two live until promotion.
    r.auth_accepted(&key("a1"), S3, info("bob", true), 1);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (2, 1)
    );
    r.gone(&key("a1"), Q1, 2);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (1, 1)
    );
    r.woke_up(&key("a1"), Q2, 3);
    assert_eq!(
        (
            r.live_sessions_of_user(b"alice"),
            r.live_sessions_of_user(b"bob")
        ),
        (1, 1)
    );
    // on_register's username (after modifiers) replaces auth's.
    r.registered(&key("a1"), S3, info("carol", true), 4);
    assert_eq!(
        (
            r.live_sessions_of_user(b"bob"),
            r.live_sessions_of_user(b"carol")
        ),
        (0, 1)
    );
    assert_eq!(
        r.counts(),
        StateCounts {
            authenticated: 1,
            online: 1,
            offline: 0
        }
    );
    assert_eq!(r.live_sessions_of_user(b"nobody"), 0);
    r.clear();
    assert_eq!(r.users.entries(), 0);
    assert_eq!(
        (r.len(), r.counts(), r.stats().ended),
        (0, StateCounts::default(), 0)
    );
}

#[test]
fn list_filters() {
    let r = reg();
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 7));
    let v6 = IpAddr::V6("2001:db8::5".parse::<Ipv6Addr>().unwrap());
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 168, 1, 9).to_ipv6_mapped());
    let mp = |m: &str, c: &str| SubscriberKey::new(m.as_bytes().to_vec(), c.as_bytes().to_vec());
    r.auth_accepted(&mp("", "sensor-1"), S1, info_at("alice", true, v4), 0);
    r.woke_up(&mp("", "sensor-1"), Q1, 1);
    r.auth_accepted(&mp("", "sensor-2"), S2, info_at("bob", true, v6), 0);
    r.auth_accepted(
        &mp("mp1", "sensor-3"),
        S3,
        info_at("alice", false, mapped),
        0,
    );
    r.woke_up(&mp("mp1", "sensor-3"), Q2, 1);
    r.went_offline(&mp("mp1", "sensor-3"), Q2, 2);
    r.went_offline(&mp("", "other"), ProcId(9), 2);

    let ids = |f: Filter| {
        let mut v: Vec<String> = r
            .list(&f, usize::MAX)
            .into_iter()
            .map(|v| String::from_utf8(v.key.client_id.to_vec()).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(Filter::default()).len(), 4);
    assert_eq!(
        ids(Filter {
            state: Some(SessionState::Online),
            ..Default::default()
        }),
        ["sensor-1"]
    );
    assert_eq!(
        ids(Filter {
            state: Some(SessionState::Authenticated),
            ..Default::default()
        }),
        ["sensor-2"]
    );
    assert_eq!(
        ids(Filter {
            state: Some(SessionState::Offline),
            ..Default::default()
        }),
        ["other", "sensor-3"]
    );
    assert!(ids(Filter {
        state: Some(SessionState::Gone),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(
        ids(Filter {
            username: Some(b"alice".to_vec()),
            ..Default::default()
        }),
        ["sensor-1", "sensor-3"]
    );
    assert_eq!(
        ids(Filter {
            mountpoint: Some(b"mp1".to_vec()),
            ..Default::default()
        }),
        ["sensor-3"]
    );
    assert_eq!(
        ids(Filter {
            mountpoint: Some(Vec::new()),
            ..Default::default()
        }),
        ["other", "sensor-1", "sensor-2"]
    );
    assert_eq!(
        ids(Filter {
            client_id_prefix: Some(b"sensor-".to_vec()),
            ..Default::default()
        })
        .len(),
        3
    );
    let net = |s: &str| Some(s.parse::<IpNet>().unwrap());
    assert_eq!(
        ids(Filter {
            network: net("2001:db8::/32"),
            ..Default::default()
        }),
        ["sensor-2"]
    );
    assert_eq!(
        ids(Filter {
            network: net("2001:db9::/32"),
            ..Default::default()
        }),
        Vec::<String>::new()
    );
    // IPv4-mapped IPv6 peers match IPv4 networks.
    assert_eq!(
        ids(Filter {
            network: net("192.168.1.0/24"),
            ..Default::default()
        }),
        ["sensor-1", "sensor-3"]
    );
    assert_eq!(
        ids(Filter {
            network: net("192.168.1.7/32"),
            username: Some(b"alice".to_vec()),
            ..Default::default()
        }),
        ["sensor-1"]
    );
    assert_eq!(r.list(&Filter::default(), 2).len(), 2);
    assert!(r.list(&Filter::default(), 0).is_empty());

    assert_counts_match_scan(&r);
}

/// Every step of a chunked listing, collected; `None` as soon as `out`
/// reaches `limit`.
fn list_in_chunks(r: &Registry, f: &Filter, max_slots: usize, limit: usize) -> (Vec<SessionView>, usize) {
    let mut out = Vec::new();
    let mut steps = 0;
    let mut cursor = Some(ListCursor::START);
    while let Some(c) = cursor {
        if out.len() >= limit {
            break;
        }
        cursor = r.list_chunk(f, c, max_slots, &mut out, limit);
        steps += 1;
    }
    (out, steps)
}

fn sorted_keys(views: &[SessionView]) -> Vec<SubscriberKey> {
    let mut keys: Vec<_> = views.iter().map(|v| v.key.clone()).collect();
    keys.sort();
    keys
}

#[test]
fn list_chunk_small_steps_equal_list() {
    let r = reg();
    for i in 0..600 {
        let k = key(&format!("c{i}"));
        if i % 3 == 0 {
            r.auth_accepted(&k, ProcId(1000 + i), info("alice", true), 0);
        } else {
            r.went_offline(&k, ProcId(5000 + i), 0);
        }
    }
    let offline = Filter {
        state: Some(SessionState::Offline),
        ..Default::default()
    };
    for f in [Filter::default(), offline] {
        let all = r.list(&f, usize::MAX);
        for max_slots in [0, 1, 2, 7, 150, 600, usize::MAX] {
            let (chunked, steps) = list_in_chunks(&r, &f, max_slots, usize::MAX);
            assert_eq!(sorted_keys(&chunked), sorted_keys(&all), "max_slots {max_slots}");
            // Only the slot budget ends a step early.
            assert!(steps <= 600usize.div_ceil(max_slots.max(1)) + 1, "{steps} steps");
        }
        for limit in [0, 1, 199, 200, 399, 400, 401] {
            let (chunked, _) = list_in_chunks(&r, &f, 7, limit);
            assert_eq!(chunked.len(), limit.min(all.len()), "limit {limit}");
            assert_eq!(r.list(&f, limit).len(), limit.min(all.len()));
        }
    }
    assert_eq!(r.list(&Filter::default(), usize::MAX).len(), 600);

    // A cursor past the last shard is done; one past a shard's length is
    // clamped to it.
    let mut out = Vec::new();
    let past = ListCursor {
        shard: r.shard_count(),
        unvisited: 0,
    };
    assert_eq!(r.list_chunk(&Filter::default(), past, 10, &mut out, 10), None);
    let last = ListCursor {
        shard: r.shard_count() - 1,
        unvisited: u32::MAX - 1,
    };
    assert_eq!(r.list_chunk(&Filter::default(), last, usize::MAX, &mut out, usize::MAX), None);
    assert_eq!(out.len(), r.shards[r.shard_count() - 1].inner.lock().slab.len() as usize);
}

#[test]
fn history_is_bounded_newest_first() {
    let r = Registry::new(RegistryConfig {
        shards: 2,
        history_size: 3,
        pending_ttl_ms: 10,
    });
    let k = key("c");
    let mut gens = Vec::new();
    for i in 0..5 {
        gens.push(connect(&r, &k, S1, Q1, true, i * 10));
        r.gone(&k, Q1, i * 10 + 5);
    }
    let e = r.recent_endings(10);
    assert_eq!(
        e.iter().map(|e| e.generation).collect::<Vec<_>>(),
        vec![gens[4], gens[3], gens[2]]
    );
    assert_eq!(r.recent_endings(1)[0].generation, gens[4]);
    assert_eq!(r.stats().history_len, 3);
    assert_eq!(r.stats().ended, 5);
    r.set_history_size(1);
    assert_eq!(r.recent_endings(10).len(), 1);
    r.set_history_size(0);
    connect(&r, &k, S1, Q1, true, 100);
    r.gone(&k, Q1, 105);
    assert_eq!(r.stats().history_len, 0);
}

#[test]
fn config_shards_rounded_to_power_of_two() {
    assert_eq!(
        Registry::new(RegistryConfig {
            shards: 5,
            ..Default::default()
        })
        .shard_count(),
        8
    );
    assert_eq!(
        Registry::new(RegistryConfig {
            shards: 0,
            ..Default::default()
        })
        .shard_count(),
        1
    );
    assert_eq!(Registry::new(RegistryConfig::default()).stats().shards, 64);
}

#[test]
fn record_is_compact() {
    // Per-live-session memory is benchmarked against ETS: keep the record
    // (key and username are one block of the shard's byte pool) small.
    let size = std::mem::size_of::<record::Record>();
    assert!(size <= 96, "Record grew to {size} bytes");
}

/// An operator who writes an IPv4 network in its IPv6 spelling lists the
/// IPv4 peers in it, as the policy's network rules match them (POLICY.md).
#[test]
fn an_ipv4_mapped_network_lists_ipv4_peers() {
    let r = reg();
    let v4 = Peer { ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), port: 1 };
    let info = ConnectInfo { peer: Some(v4), username: Some(b"u"), clean_session: true, protocol: Protocol::Mqtt3 };
    r.auth_accepted(&key("online"), S1, info, 0);
    r.woke_up(&key("online"), Q1, 0);
    r.registered(&key("online"), S1, info, 0);
    r.auth_accepted(&key("pending"), S2, info, 0);
    let listed = |net: &str| r.list(&Filter { network: Some(net.parse().unwrap()), ..Default::default() }, usize::MAX).len();
    assert_eq!(listed("::ffff:10.0.0.0/104"), 2);
    assert_eq!(listed("::ffff:10.1.2.3/128"), 2);
    assert_eq!(listed("::ffff:10.1.2.4/128"), 0);
    assert_eq!(listed("::/0"), 2);
}

/// A shard's index grows a part at a time (shard.rs, `INDEX_TABLES`): the
/// most keys one growth can move, inside the hook whose insert triggers it,
/// is a small share of the shard's keys, and every key is still found.
#[test]
fn an_index_growth_moves_a_part_of_the_shard() {
    let r = Registry::new(RegistryConfig {
        shards: 1,
        history_size: 10,
        pending_ttl_ms: 1000,
    });
    let n = 40_000;
    for i in 0..n {
        connect(&r, &key(&format!("c{i}")), ProcId(i), ProcId(n + i), true, 0);
    }
    let largest = r.shards[0].inner.lock().index.largest_table();
    assert!(largest * 3 < n as usize, "one table holds {largest} of {n} keys");
    assert!((0..n).all(|i| r.lookup(&key(&format!("c{i}"))).is_some()));
}

/// Key, username and pending connect live in the shard's store (pool.rs):
/// every value read back is the one written, through username changes,
/// long client ids and usernames, mountpoints and abandoned connects, and
/// once every session has ended the sweep takes the store back to one
/// block and one chunk of pending slots.
#[test]
fn shard_store_round_trips_and_empties() {
    let r = Registry::new(RegistryConfig {
        shards: 1,
        history_size: 10,
        pending_ttl_ms: 1000,
    });
    let long_id = "x".repeat(700);
    let long_user = "u".repeat(600);
    let keys: Vec<SubscriberKey> = (0..3000)
        .map(|i| match i % 3 {
            0 => key(&format!("client-{i}")),
            1 => SubscriberKey::new(format!("mp/{i}").into_bytes(), format!("c{i}").into_bytes()),
            _ => key(&format!("{long_id}{i}")),
        })
        .collect();
    let user_of = |i: usize, round: usize| match (i + round) % 4 {
        0 => String::new(),
        1 => format!("user-{}", i % 10),
        2 => format!("{long_user}{i}"),
        _ => format!("other-{i}"),
    };
    for round in 0..3 {
        for (i, k) in keys.iter().enumerate() {
            let conn = ProcId(10_000 + (round * 10_000 + i) as u64);
            // every 5th key has a second accepted connect that never
            // registers: the sweep drops it after the TTL
            if i % 5 == 0 {
                r.auth_accepted(k, ProcId(1), info(&user_of(i, round + 1), false), 1);
            }
            r.auth_accepted(k, conn, info(&user_of(i, round), false), 1);
            if round == 0 {
                // (later rounds show the offline session until promotion)
                assert_eq!(view(&r, k).username.as_deref(), Some(user_of(i, round).as_bytes()));
            }
            assert_eq!(r.woke_up(k, Q1, 2), Applied::Applied);
            let registered_as = user_of(i, round + 2);
            assert_eq!(r.registered(k, conn, info(&registered_as, false), 3), Applied::Applied);
        }
        for (i, k) in keys.iter().enumerate() {
            let v = view(&r, k);
            assert_eq!(v.key, *k);
            assert_eq!(v.username.as_deref(), Some(user_of(i, round + 2).as_bytes()));
        }
        if round < 2 {
            for k in &keys {
                assert_eq!(r.went_offline(k, Q1, 4), Applied::Applied);
            }
        }
    }
    let held = |r: &Registry| {
        let g = r.shards[0].inner.lock();
        (g.st.bytes.held(), g.st.pending.chunk_count())
    };
    assert!(held(&r).0 > 16 * 1024);
    for k in &keys {
        assert_eq!(r.gone(k, Q1, 5), Applied::Applied);
    }
    assert_eq!(r.len(), keys.len().div_ceil(5));
    // Memory goes back in the sweep (dirty scheduler), never in a hook.
    assert_eq!(r.sweep(5000), keys.len().div_ceil(5));
    assert!(r.is_empty());
    assert_eq!(held(&r), (16 * 1024, 1), "store keeps one block and one table chunk");
    assert_eq!(r.recent_endings(1)[0].reason, EndReason::Abandoned);
}

#[test]
fn registry_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
}

#[test]
fn as_str_names() {
    assert_eq!(SessionState::Authenticated.as_str(), "authenticated");
    assert_eq!(SessionState::Expired.as_str(), "expired");
    let names: Vec<_> = [
        EndReason::TakenOver,
        EndReason::Gone,
        EndReason::Offline,
        EndReason::Expired,
        EndReason::Discarded,
        EndReason::Abandoned,
    ]
    .iter()
    .map(|r| r.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "taken_over",
            "gone",
            "offline",
            "expired",
            "discarded",
            "abandoned"
        ]
    );
}

/// The index grows and shrinks around records that move (removal moves the
/// last record of a shard into the freed slot) using the hash bits kept in
/// its buckets: every key must still be found after many growths, and after
/// half of them were removed in random order.
#[test]
fn index_survives_growth_and_moves() {
    let r = Registry::new(RegistryConfig { shards: 1, history_size: 0, pending_ttl_ms: 1000 });
    let n = 50_000u32;
    let k = |i: u32| key(&format!("grow-{i}"));
    for i in 0..n {
        assert_eq!(r.woke_up(&k(i), ProcId(u64::from(i) + 1), 1), Applied::Applied);
    }
    assert_eq!(r.len(), n as usize);
    assert!((0..n).all(|i| r.lookup(&k(i)).is_some()));
    // Remove every other key in a scrambled order (gone from its queue).
    let mut gone: Vec<u32> = (0..n).filter(|i| i % 2 == 0).collect();
    let mut rnd = crate::testing::below(0x2545_f491_4f6c_dd1d);
    for j in (1..gone.len()).rev() {
        gone.swap(j, rnd(j as u64 + 1) as usize);
    }
    for &i in &gone {
        assert_eq!(r.gone(&k(i), ProcId(u64::from(i) + 1), 2), Applied::Applied);
    }
    assert_eq!(r.len(), (n / 2) as usize);
    for i in 0..n {
        assert_eq!(r.lookup(&k(i)).is_some(), i % 2 == 1, "key {i}");
    }
    // And the table still takes new keys.
    for i in n..n + 1000 {
        assert_eq!(r.woke_up(&k(i), ProcId(u64::from(i) + 1), 3), Applied::Applied);
        assert!(r.lookup(&k(i)).is_some());
    }
}

/// Nobody reads per-user counts: the hooks keep none. Asked for them, the
/// registry counts every record already there, one chunk of a shard per
/// hold of its lock, while hooks change records between the chunks: a
/// record a removal moved down, one a hook changed before the scan reached
/// it, new ones and removed ones all end up counted exactly once. A
/// reference registry that counted from the start gets the same hooks.
#[test]
fn users_are_counted_only_once_asked() {
    use std::sync::{Arc, Weak};
    const N: u64 = 1000; // four chunks of the one shard
    let config = RegistryConfig { shards: 1, history_size: 10, pending_ttl_ms: 1000 };
    let (lazy, reference) = (Arc::new(Registry::new(config.clone())), Registry::new(config));
    reference.count_users();
    let users = ["u0", "u1", "u2", "u3", "u4", "u5", "u6"];
    let user = |i: u64| users[(i % 7) as usize];
    fn k(i: u64) -> SubscriberKey {
        key(&format!("c{i}"))
    }
    /// Client `i` online: connection `i`, queue `i + 1_000_000`.
    fn online(r: &Registry, i: u64, u: &str) {
        r.auth_accepted(&k(i), ProcId(i), info(u, true), 1);
        assert_eq!(r.woke_up(&k(i), ProcId(i + 1_000_000), 1), Applied::Applied);
        assert_eq!(r.registered(&k(i), ProcId(i), info(u, true), 1), Applied::Applied);
    }
    for i in 0..N {
        online(&lazy, i, user(i));
        online(&reference, i, user(i));
    }
    // one accepted connect not registered yet, of another user than the session it would take over
    lazy.auth_accepted(&k(3), ProcId(5_000_003), info("u6", true), 1);
    reference.auth_accepted(&k(3), ProcId(5_000_003), info("u6", true), 1);
    assert_eq!(lazy.users.entries(), 0, "no per-user index while nobody reads it");
    assert!(users.iter().all(|u| lazy.live_sessions_of_user(u.as_bytes()) == 0));

    // Between the chunks: the lowest records (not yet visited) end, which
    // moves the last (visited) records down; one not yet visited is taken
    // over by another user; a new record comes.
    let changes = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (weak, log) = (Arc::downgrade(&lazy), Arc::clone(&changes));
    lazy.between_count_chunks.set(move || {
        let r: Arc<Registry> = Weak::upgrade(&weak).expect("registry alive");
        let round = log.lock().len() as u64;
        let (low, taken, new) = (10 + 2 * round, 11 + 2 * round, N + round);
        assert_eq!(r.gone(&k(low), ProcId(low + 1_000_000), 2), Applied::Applied);
        r.auth_accepted(&k(taken), ProcId(6_000_000 + taken), info("u5", true), 2);
        online(&r, new, "u6");
        log.lock().push((low, taken, new));
    });
    lazy.count_users();
    lazy.between_count_chunks.clear();
    let rounds = changes.lock().clone();
    assert_eq!(rounds.len(), 4, "one pause after each of the four chunks");
    for (low, taken, new) in rounds {
        assert_eq!(reference.gone(&k(low), ProcId(low + 1_000_000), 2), Applied::Applied);
        reference.auth_accepted(&k(taken), ProcId(6_000_000 + taken), info("u5", true), 2);
        online(&reference, new, "u6");
    }
    for u in users {
        let want = reference.live_sessions_of_user(u.as_bytes());
        assert!(want > 0);
        assert_eq!(lazy.live_sessions_of_user(u.as_bytes()), want, "{u}");
    }
    // and from now on the hooks keep the counts
    lazy.gone(&k(N), ProcId(N + 1_000_000), 3);
    reference.gone(&k(N), ProcId(N + 1_000_000), 3);
    assert_eq!(lazy.live_sessions_of_user(b"u6"), reference.live_sessions_of_user(b"u6"));
}

/// With the event stream off (the default) a hook's endings go straight
/// into the history: a kick's ending still says who kicked, and the
/// endings keep their order, key, user and counts.
#[test]
fn endings_in_the_history_with_events_off() {
    let r = reg();
    let k = key("kicked");
    let g = connect(&r, &k, S1, Q1, true, 10);
    assert!(r.kick(&k, Some(g), "cli:admin", 20));
    r.gone(&k, Q1, 21);
    let g2 = r.auth_accepted(&k, S2, info("bob", true), 30);
    r.woke_up(&k, Q2, 31);
    assert_eq!(r.registered(&k, S2, info("bob", true), 32), Applied::Applied);
    let g3 = r.auth_accepted(&k, S3, info("carol", true), 40);
    r.woke_up(&k, ProcId(203), 41);
    assert_eq!(r.registered(&k, S3, info("carol", true), 42), Applied::Applied);
    let endings = r.recent_endings(10);
    let got: Vec<_> = endings.iter().map(|e| (e.generation, e.reason, e.username.as_deref(), e.kicked_by.as_deref())).collect();
    let (alice, bob) = (Some(&b"alice"[..]), Some(&b"bob"[..]));
    assert_eq!(
        got,
        [(g2, EndReason::TakenOver, bob, None), (g, EndReason::Gone, alice, None), (g, EndReason::Kicked, alice, Some("cli:admin"))]
    );
    assert!(endings.iter().all(|e| e.key == k && e.peer.is_some()));
    assert_eq!((r.stats().ended, r.stats().taken_over), (3, 1));
    assert!(r.lookup(&k).is_some_and(|v| v.generation == g3));
}

/// The list's peer filter against the policy's network match
/// (`policy::in_networks`: an address matches a network written in either
/// spelling, IPv4 or IPv4-mapped IPv6), over random IPv4, IPv6 and
/// IPv4-mapped peers, online and pending, and random networks around them
/// of every prefix length.
#[test]
fn the_peer_filter_matches_as_the_policy_does() {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let r = reg();
    let mut peers = Vec::new();
    for i in 0..300 {
        // Few distinct prefixes, so that random networks hold some peers.
        let v4 = Ipv4Addr::from([10, (next() % 3) as u8, (next() % 4) as u8, next() as u8]);
        let ip = match i % 3 {
            0 => IpAddr::V4(v4),
            1 => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(next() % 4) << 64 | u128::from(next() % 8))),
        };
        let id = format!("c{i}");
        let info = ConnectInfo { peer: Some(Peer { ip, port: 1 }), username: Some(b"u"), clean_session: true, protocol: Protocol::Mqtt3 };
        r.auth_accepted(&key(&id), ProcId(1000 + i), info, 0);
        if i % 5 != 0 {
            // Online; every fifth stays a pending connect.
            r.woke_up(&key(&id), ProcId(5000 + i), 0);
            r.registered(&key(&id), ProcId(1000 + i), info, 0);
        }
        peers.push((id, ip));
    }
    let (mut some, mut none) = (0, 0);
    for _ in 0..400 {
        let around = match next() % 4 {
            // Now and then a network far from every peer.
            0 => IpAddr::V4(Ipv4Addr::from(next() as u32 | 0x8000_0000)),
            1.. => peers[next() as usize % peers.len()].1,
        };
        // An IPv4 network, an IPv4-mapped IPv6 one, or an IPv6 one.
        let net = match (around.to_canonical(), next() % 2) {
            (IpAddr::V4(a), 0) => IpNet::new(IpAddr::V4(a), (next() % 33) as u8),
            (IpAddr::V4(a), _) => IpNet::new(IpAddr::V6(a.to_ipv6_mapped()), (next() % 129) as u8),
            (v6, _) => IpNet::new(v6, (next() % 129) as u8),
        }
        .unwrap()
        .trunc();
        let mut want: Vec<String> = peers
            .iter()
            .filter(|(_, ip)| crate::policy::in_networks(&[net], *ip))
            .map(|(id, _)| id.clone())
            .collect();
        want.sort();
        let mut got: Vec<String> = r
            .list(&Filter { network: Some(net), ..Default::default() }, usize::MAX)
            .into_iter()
            .map(|v| String::from_utf8(v.key.client_id.to_vec()).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, want, "{net}");
        if want.is_empty() { none += 1 } else if want.len() < peers.len() { some += 1 }
    }
    // The networks cut through the peers, not around them.
    assert!(some > 100 && none > 20, "{some} {none}");
}
