//! The figures of `vmq_warden:stats/0`, as a tree of named counters in the
//! documented shape (the NIF encodes it as nested maps as it is).

use super::Warden;

/// A counter, or a group of named ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stat {
    Count(u64),
    Group(Vec<(&'static str, Stat)>),
}

impl Stat {
    /// The value at `path` (tests and callers that want one figure).
    pub fn get(&self, path: &[&str]) -> Option<u64> {
        match (self, path.split_first()) {
            (Stat::Count(n), None) => Some(*n),
            (Stat::Group(entries), Some((first, rest))) => entries.iter().find(|(k, _)| k == first)?.1.get(rest),
            _ => None,
        }
    }
}

fn group<const N: usize>(entries: [(&'static str, u64); N]) -> Stat {
    Stat::Group(entries.into_iter().map(|(k, v)| (k, Stat::Count(v))).collect())
}

impl Warden {
    pub fn stats(&self) -> Stat {
        let f = self.firewall.stats();
        let r = self.registry.stats();
        let c = self.registry.counts();
        let counters = self.counters();
        let refused = Stat::Group(f.refused.iter().map(|(code, n)| (code.as_str(), Stat::Count(*n))).collect());
        let calls = Stat::Group(counters.hook_calls.iter().map(|(h, n)| (h.name(), Stat::Count(*n))).collect());
        Stat::Group(vec![
            ("decisions", Stat::Group(vec![("accepted", Stat::Count(f.accepted)), ("next", Stat::Count(f.next)), ("refused", refused)])),
            ("events", calls),
            ("stale_events", Stat::Count(r.stale_events)),
            (
                "registry",
                group([
                    ("authenticated", c.authenticated),
                    ("online", c.online),
                    ("offline", c.offline),
                    ("live", r.live),
                    ("stale_events", r.stale_events),
                    ("duplicate_events", r.duplicate_events),
                    ("unknown_events", r.unknown_events),
                    ("taken_over", r.taken_over),
                    ("ended", r.ended),
                    ("reconciled", r.reconciled),
                    ("history_len", r.history_len),
                ]),
            ),
            ("cache", group([("hits", f.cache_hits), ("misses", f.cache_misses)])),
            ("bans_active", Stat::Count(f.bans_active)),
            ("bans_started", Stat::Count(f.bans_started)),
            ("reloads", group([("ok", f.reloads_ok), ("failed", f.reloads_failed)])),
            ("verify", group([("count", f.verify_count), ("total_us", f.verify_micros_total), ("slow", f.slow_verifications)])),
            ("tracked", group([("peers", f.tracked_peers), ("users", f.tracked_users)])),
            ("auth_in_flight", Stat::Count(counters.auth_in_flight)),
            ("server_busy", Stat::Count(counters.server_busy)),
        ])
    }
}
