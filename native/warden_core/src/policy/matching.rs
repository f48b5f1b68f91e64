//! Matchers: listeners, networks, the username-bound glob, bounded
//! regexes and rule conditions. None looks at more than `MAX_MATCH_INPUT`
//! bytes of client input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use regex::bytes::Regex;
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

use super::simple_pattern::SimplePattern;
use super::*;

/// Which listener(s) an entry applies to. Every field given must match; an
/// empty matcher matches every connection (also those without listener
/// metadata, i.e. the 5-/6-arity hooks of older brokers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerMatch {
    pub port: Option<u16>,
    /// Canonical type: tcp, ssl, ws, wss or whatever else the broker reports.
    pub kind: Option<String>,
    pub addr: Option<IpNet>,
}

/// Listener type names as reported by different VerneMQ versions, folded to
/// one spelling: tcp/mqtt, ssl/tls/mqtts, ws/mqttws/http, wss/mqttwss/https.
pub fn canonical_listener_type(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    match t.as_str() {
        "tcp" | "mqtt" => "tcp".into(),
        "ssl" | "tls" | "mqtts" => "ssl".into(),
        "ws" | "mqttws" | "http" => "ws".into(),
        "wss" | "mqttwss" | "https" => "wss".into(),
        _ => t,
    }
}

impl ListenerMatch {
    /// Whether it names a port, type or address (an empty matcher matches
    /// every connection).
    pub fn names_a_listener(&self) -> bool {
        self.port.is_some() || self.kind.is_some() || self.addr.is_some()
    }

    pub fn matches(&self, listener: Option<&Listener>) -> bool {
        if !self.names_a_listener() {
            return true;
        }
        let Some(l) = listener else { return false };
        if let Some(p) = self.port {
            if l.port != Some(p) {
                return false;
            }
        }
        if let Some(k) = &self.kind {
            match &l.kind {
                Some(lk) if canonical_listener_type(lk) == *k => {}
                _ => return false,
            }
        }
        if let Some(net) = &self.addr {
            match l.addr {
                Some(a) if net.contains(&a.to_canonical()) => {}
                _ => return false,
            }
        }
        true
    }
}

pub(super) fn any_listener(list: &[ListenerMatch], listener: Option<&Listener>) -> bool {
    list.is_empty() || list.iter().any(|m| m.matches(listener))
}

/// Peers are compared in both spellings of an IPv4 address: a network
/// written as IPv4 (`10.0.0.0/8`) matches an IPv4-mapped IPv6 peer, and one
/// written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) matches an IPv4 peer.
pub fn in_networks(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = Spellings::of(ip);
    nets.iter().any(|n| ip.in_net(n))
}

/// An address in both its spellings, each compared with the networks of
/// its family by value: the session list matches every record's peer, and
/// an `IpAddr` handed to `IpNet::contains` by reference cost about 19 ns a
/// record there (docs/BENCHMARKS.md, "Results").
#[derive(Clone, Copy)]
pub struct Spellings {
    v4: Option<Ipv4Addr>,
    v6: Ipv6Addr,
}

impl Spellings {
    pub fn of(ip: IpAddr) -> Spellings {
        match ip {
            IpAddr::V4(a) => Spellings::v4(a),
            IpAddr::V6(a) => Spellings::v6(a),
        }
    }

    pub fn v4(a: Ipv4Addr) -> Spellings {
        Spellings { v4: Some(a), v6: a.to_ipv6_mapped() }
    }

    /// An IPv4-mapped address (`::ffff:a.b.c.d`) is its IPv4 address too.
    pub fn v6(a: Ipv6Addr) -> Spellings {
        Spellings { v4: a.to_ipv4_mapped(), v6: a }
    }

    pub fn in_net(self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => self.v4.is_some_and(|a| n.contains(&a)),
            IpNet::V6(n) => n.contains(&self.v6),
        }
    }
}

/// Shell-like matching over bytes: `*` any run, `?` one byte, `{username}`
/// the client's username (matched literally, so `*` in a username is no wildcard).
///
/// Linear time: the pattern is cut at its stars into segments of fixed
/// length (bytes and `?`). The first segment must match at the start, the
/// last at the end, and each one in between is searched for from where the
/// previous one ended (its leftmost occurrence is always the best choice,
/// since it leaves the most room to the rest). The search is bit-parallel
/// (shift-and), so it reads each byte of the value once per 64 bytes of
/// segment: at most `MAX_MATCH_INPUT * MAX_MATCH_INPUT / 64` word steps in all,
/// whatever the pattern (the old backtracking matcher needed `n * m` steps:
/// 1.5 s of CPU for a 32 KiB username in `*{username}*`).
pub(super) struct UserGlob;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GlobTok {
    Byte(u8),
    Star,
    One,
}

impl UserGlob {
    /// `src` cut at each `{username}`, every part as tokens; done once, when
    /// the policy is loaded.
    fn parse(src: &str) -> Vec<Vec<GlobTok>> {
        let token = |b: u8| match b {
            b'*' => GlobTok::Star,
            b'?' => GlobTok::One,
            b => GlobTok::Byte(b),
        };
        src.split("{username}").map(|part| part.bytes().map(token).collect()).collect()
    }

    fn seg_eq(seg: &[GlobTok], s: &[u8]) -> bool {
        seg.len() == s.len()
            && seg.iter().zip(s).all(|(t, b)| match t {
                GlobTok::Byte(x) => x == b,
                _ => true,
            })
    }

    /// Start of the leftmost occurrence of `seg` (no stars) in `hay`.
    fn find(seg: &[GlobTok], hay: &[u8], table: &mut Vec<u64>) -> Option<usize> {
        let k = seg.len();
        if k == 0 {
            return Some(0);
        }
        if k > hay.len() {
            return None;
        }
        let words = k.div_ceil(64);
        // Rows 0..=255: positions holding that byte; row 256: `?` positions.
        table.clear();
        table.resize(257 * words, 0);
        for (j, t) in seg.iter().enumerate() {
            let row = match t {
                GlobTok::Byte(b) => usize::from(*b),
                _ => 256,
            };
            table[row * words + j / 64] |= 1u64 << (j % 64);
        }
        let mut d = vec![0u64; words];
        let (last_w, last_bit) = ((k - 1) / 64, 1u64 << ((k - 1) % 64));
        let any = 256 * words;
        for (i, &c) in hay.iter().enumerate() {
            let row = usize::from(c) * words;
            let mut carry = 1u64;
            for w in 0..words {
                let next = d[w] >> 63;
                d[w] = ((d[w] << 1) | carry) & (table[row + w] | table[any + w]);
                carry = next;
            }
            if d[last_w] & last_bit != 0 {
                return Some(i + 1 - k);
            }
        }
        None
    }

    /// Matches without collecting the segments: this runs on every connect.
    fn matches_toks(toks: &[GlobTok], s: &[u8]) -> bool {
        let mut segs = toks.split(|t| *t == GlobTok::Star);
        let first = segs.next().unwrap_or_default();
        let Some(last) = segs.next_back() else {
            return Self::seg_eq(first, s);
        };
        if first.len() + last.len() > s.len()
            || !Self::seg_eq(first, &s[..first.len()])
            || !Self::seg_eq(last, &s[s.len() - last.len()..])
        {
            return false;
        }
        let (mut pos, end) = (first.len(), s.len() - last.len());
        let mut table = Vec::new();
        for seg in segs {
            match Self::find(seg, &s[pos..end], &mut table) {
                Some(i) => pos += i + seg.len(),
                None => return false,
            }
        }
        true
    }
}

/// A client-id pattern bound to the username, e.g. `"{username}-*"`.
/// A username or client id longer than [`MAX_MATCH_INPUT`] never matches (the
/// check must match, so such a client is refused).
#[derive(Clone, Debug)]
pub struct BoundPattern {
    source: String,
    /// `source` parsed at load (UserGlob::parse), so that a connect only
    /// splices the username in.
    parts: Vec<Vec<GlobTok>>,
    /// Bytes every match needs besides the usernames (stars need none).
    fixed: usize,
    /// Tokens in `parts`, stars included.
    part_tokens: usize,
}

/// Expanded patterns up to this many tokens are matched from the stack.
const INLINE_GLOB: usize = 64;

impl BoundPattern {
    pub fn new(source: String) -> Self {
        let parts = UserGlob::parse(&source);
        let fixed = parts.iter().flatten().filter(|t| **t != GlobTok::Star).count();
        let part_tokens = parts.iter().map(Vec::len).sum();
        BoundPattern { source, parts, fixed, part_tokens }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, username: &[u8], client_id: &[u8]) -> bool {
        if username.len() > MAX_MATCH_INPUT || client_id.len() > MAX_MATCH_INPUT {
            return false;
        }
        let Some(len) = self.expanded_len(username, client_id.len()) else {
            return false;
        };
        // Short expansions (the usual `{username}:*`) on the stack: an
        // allocation and its free are cache lines of their own in a connect.
        let mut inline = [GlobTok::Star; INLINE_GLOB];
        let mut on_heap: Vec<GlobTok>;
        let toks = if len <= INLINE_GLOB {
            &mut inline[..len]
        } else {
            on_heap = vec![GlobTok::Star; len];
            &mut on_heap[..]
        };
        self.expand_into(username, toks);
        UserGlob::matches_toks(toks, client_id)
    }

    /// How many tokens the pattern has with `{username}` replaced, or `None`
    /// when it needs more bytes than `limit` (it then cannot match a value
    /// of that length).
    fn expanded_len(&self, username: &[u8], limit: usize) -> Option<usize> {
        let usernames = username.len().saturating_mul(self.parts.len() - 1);
        (self.fixed.saturating_add(usernames) <= limit).then(|| self.part_tokens + usernames)
    }

    /// The expansion into `out`, which is exactly `expanded_len` long.
    fn expand_into(&self, username: &[u8], out: &mut [GlobTok]) {
        let mut at = 0;
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                for (o, b) in out[at..at + username.len()].iter_mut().zip(username) {
                    *o = GlobTok::Byte(*b);
                }
                at += username.len();
            }
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }

    /// The pattern with `{username}` replaced, or `None` when it needs more
    /// bytes than `limit` (the glob tests' reference matcher reads it).
    #[cfg(test)]
    pub(super) fn expand(&self, username: &[u8], limit: usize) -> Option<Vec<GlobTok>> {
        let mut out = vec![GlobTok::Star; self.expanded_len(username, limit)?];
        self.expand_into(username, &mut out);
        Some(out)
    }
}

/// Largest DFA built for one pattern; a pattern whose DFA would be larger
/// (Unicode classes such as `\w{20}`) is matched by the regex alone.
const PATTERN_DFA_LIMIT: usize = 32 * 1024;

/// A compiled policy regex (anchored: it must match the whole value) that
/// never runs on more than [`MAX_MATCH_INPUT`] bytes.
///
/// A small pattern is also built as a full DFA, which is what matches: a
/// connect runs with the CPU caches emptied by the broker's own work, and
/// the regex's lazy DFA then costs a cache miss for each of its pool, cache
/// and state tables; the full DFA is one table of a few cache lines. Both
/// come from the same engine with the same syntax settings (`regex::bytes`:
/// Unicode on, values need not be UTF-8), so they answer alike.
///
/// A pattern that is a sequence of classes (`[a-z][a-z0-9_.-]*`) is matched
/// by [`SimplePattern`] instead, without an automaton.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub(super) re: Regex,
    simple: Option<SimplePattern>,
    dfa: Option<Arc<dense::DFA<Vec<u32>>>>,
}

impl Pattern {
    /// `re` is the anchored pattern; its matcher is built from the same source.
    pub(super) fn new(re: Regex) -> Pattern {
        if let Some(simple) = SimplePattern::of(re.as_str(), REGEX_NEST_LIMIT) {
            return Pattern { re, simple: Some(simple), dfa: None };
        }
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().utf8(false).nest_limit(REGEX_NEST_LIMIT))
            .thompson(thompson::Config::new().utf8(false).nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
            .configure(
                dense::DFA::config()
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(PATTERN_DFA_LIMIT))
                    .determinize_size_limit(Some(4 * PATTERN_DFA_LIMIT)),
            )
            .build(re.as_str())
            .ok()
            .map(Arc::new);
        Pattern { re, simple: None, dfa }
    }

    /// `Some(matched)`, or `None` for a value longer than [`MAX_MATCH_INPUT`],
    /// which is not looked at: the caller decides what that means, failing
    /// closed (a deny rule applies, an allow rule does not, a required
    /// pattern refuses).
    pub fn matches(&self, value: &[u8]) -> Option<bool> {
        (value.len() <= MAX_MATCH_INPUT).then(|| self.is_match_unbounded(value))
    }

    fn is_match_unbounded(&self, value: &[u8]) -> bool {
        if let Some(simple) = &self.simple {
            return simple.matches(value);
        }
        let by_dfa = self.dfa.as_ref().and_then(|dfa| {
            // Errs only on a byte the DFA gave up on: the regex then decides.
            dfa.try_search_fwd(&Input::new(value).anchored(Anchored::Yes).earliest(true)).ok()
        });
        match by_dfa {
            Some(found) => found.is_some(),
            None => self.re.is_match(value),
        }
    }

    #[cfg(test)]
    pub(crate) fn has_dfa(&self) -> bool {
        self.dfa.is_some()
    }

    #[cfg(test)]
    pub(crate) fn is_simple(&self) -> bool {
        self.simple.is_some()
    }

    /// For checks the value must pass: a value longer than
    /// [`MAX_MATCH_INPUT`] does not match.
    pub fn is_match(&self, value: &[u8]) -> bool {
        self.matches(value) == Some(true)
    }

    pub fn as_str(&self) -> &str {
        self.re.as_str()
    }
}

/// What a rule matches on; every condition given must hold.
#[derive(Clone, Debug, Default)]
pub struct When {
    pub peer: Option<Vec<IpNet>>,
    pub listener: Option<Vec<ListenerMatch>>,
    pub client_id: Option<Pattern>,
    pub username: Option<Pattern>,
    pub anonymous: Option<bool>,
    pub protocol: Option<Protocol>,
    pub has_cert: Option<bool>,
    /// What a regex condition answers for a value longer than
    /// [`MAX_MATCH_INPUT`] (never looked at): true for `deny` rules, so an
    /// over-long value cannot escape a deny, false for `allow` and `next`, so
    /// it cannot be admitted or passed on by one.
    pub overlong_matches: bool,
}

/// The facts of a connect a rule looks at.
pub struct MatchInput<'a> {
    pub peer: Option<IpAddr>,
    pub listener: Option<&'a Listener>,
    pub client_id: &'a [u8],
    pub username: Option<&'a [u8]>,
    pub protocol: Protocol,
    pub has_cert: bool,
}

impl When {
    /// Whether a listener condition is there that the connect's data cannot
    /// answer (a broker that sends no listener data).
    pub fn needs_listener(&self) -> bool {
        self.listener.as_ref().is_some_and(|ls| ls.iter().any(ListenerMatch::names_a_listener))
    }

    /// As [`When::matches`], but a listener condition that cannot be
    /// evaluated (no listener data) counts as met: a deny rule fails closed.
    pub fn matches_failing_closed(&self, m: &MatchInput<'_>) -> bool {
        self.matches_with(m, true)
    }

    pub fn matches(&self, m: &MatchInput<'_>) -> bool {
        self.matches_with(m, false)
    }

    fn matches_with(&self, m: &MatchInput<'_>, unknown_listener_matches: bool) -> bool {
        if let Some(nets) = &self.peer {
            match m.peer {
                Some(ip) if in_networks(nets, ip) => {}
                _ => return false,
            }
        }
        if let Some(ls) = &self.listener {
            let unknown = m.listener.is_none() && unknown_listener_matches;
            if !unknown && !ls.iter().any(|l| l.matches(m.listener)) {
                return false;
            }
        }
        if let Some(re) = &self.client_id {
            if !re.matches(m.client_id).unwrap_or(self.overlong_matches) {
                return false;
            }
        }
        if let Some(re) = &self.username {
            match m.username {
                Some(u) if re.matches(u).unwrap_or(self.overlong_matches) => {}
                _ => return false,
            }
        }
        if let Some(a) = self.anonymous {
            if a != m.username.is_none() {
                return false;
            }
        }
        if let Some(p) = self.protocol {
            if p != m.protocol {
                return false;
            }
        }
        if let Some(c) = self.has_cert {
            if c != m.has_cert {
                return false;
            }
        }
        true
    }
}

