//! How a record packs itself into 96 bytes: times in 48 bits, flags in
//! one word, the peer in 18 bytes, key and username in one pool block (a
//! varint-prefixed mountpoint, the client id, the username).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::policy::Spellings;

/// Times are stored in 48 bits (milliseconds up to the year 10889; larger
/// values saturate), which keeps the record at 96 bytes.
#[derive(Clone, Copy)]
pub(super) struct Millis48([u8; 6]);

impl Millis48 {
    const MAX: u64 = (1 << 48) - 1;
    pub(super) fn new(ms: Millis) -> Millis48 {
        let b = ms.min(Self::MAX).to_le_bytes();
        Millis48([b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    pub(super) fn get(self) -> Millis {
        let b = self.0;
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
    }
}

// Bits of `Record::bits`. The session bits describe the current session.
pub(super) const HAS_CUR: u16 = 1;
pub(super) const HAS_CONN: u16 = 1 << 1;
pub(super) const HAS_QUEUE: u16 = 1 << 2;
pub(super) const ONLINE: u16 = 1 << 3;
/// on_register seen for `conn`.
pub(super) const REGISTERED: u16 = 1 << 4;
pub(super) const CLEAN: u16 = 1 << 5;
pub(super) const MQTT5: u16 = 1 << 6;
pub(super) const PEER_V4: u16 = 1 << 7;
pub(super) const PEER_V6: u16 = 1 << 8;
/// `kb` holds a username after the key (kept across sessions so that the
/// same user's next session reuses the block).
pub(super) const HAS_USER: u16 = 1 << 9;
/// The record's users are in the per-user index (`Registry::count_users`):
/// set by the first change or scan after counting started, never cleared.
pub(super) const COUNTED: u16 = 1 << 10;
pub(super) const SESSION_BITS: u16 = HAS_CUR | HAS_CONN | HAS_QUEUE | ONLINE | REGISTERED | CLEAN | MQTT5 | PEER_V4 | PEER_V6;

/// The varint of `n` in `buf`; returns its length.
pub(super) fn put_varint(buf: &mut [u8; 10], mut n: usize) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        buf[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    buf[i] = n as u8;
    i + 1
}

pub(super) fn read_varint(b: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    let mut shift = 0;
    for (i, &c) in b.iter().enumerate() {
        n |= ((c & 0x7f) as usize) << shift;
        if c & 0x80 == 0 {
            return (n, i + 1);
        }
        shift += 7;
    }
    unreachable!("truncated varint in a record key")
}

impl Record {
    pub(super) fn has(&self, b: u16) -> bool {
        self.bits & b != 0
    }
    pub(super) fn set(&mut self, b: u16, v: bool) {
        if v {
            self.bits |= b
        } else {
            self.bits &= !b
        }
    }
    pub(super) fn has_cur(&self) -> bool {
        self.has(HAS_CUR)
    }
    pub(super) fn online(&self) -> bool {
        self.has(HAS_CUR) && self.has(ONLINE)
    }
    pub(super) fn conn(&self) -> Option<ProcId> {
        self.has(HAS_CONN).then_some(ProcId(self.conn))
    }
    pub(super) fn queue(&self) -> Option<ProcId> {
        self.has(HAS_QUEUE).then_some(ProcId(self.queue))
    }
    pub(super) fn set_conn(&mut self, p: Option<ProcId>) {
        self.set(HAS_CONN, p.is_some());
        self.conn = p.map_or(0, |p| p.0);
    }
    pub(super) fn set_queue(&mut self, p: Option<ProcId>) {
        self.set(HAS_QUEUE, p.is_some());
        self.queue = p.map_or(0, |p| p.0);
    }
    pub(super) fn protocol(&self) -> Protocol {
        if self.has(MQTT5) {
            Protocol::Mqtt5
        } else {
            Protocol::Mqtt3
        }
    }
    pub(super) fn peer(&self) -> Option<Peer> {
        let ip = if self.has(PEER_V4) {
            IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
        } else if self.has(PEER_V6) {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            return None;
        };
        Some(Peer {
            ip,
            port: self.port,
        })
    }
    /// The current session's peer for a network match, from the record's
    /// bytes without building an `IpAddr` (the session list reads every
    /// record's).
    pub(super) fn peer_spellings(&self) -> Option<Spellings> {
        if self.has(PEER_V4) {
            Some(Spellings::v4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3])))
        } else if self.has(PEER_V6) {
            Some(Spellings::v6(Ipv6Addr::from(self.ip)))
        } else {
            None
        }
    }
    pub(super) fn set_peer(&mut self, p: Option<Peer>) {
        self.bits &= !(PEER_V4 | PEER_V6);
        self.ip = [0; 16];
        self.port = 0;
        if let Some(p) = p {
            self.port = p.port;
            match p.ip {
                IpAddr::V4(a) => {
                    self.ip[..4].copy_from_slice(&a.octets());
                    self.bits |= PEER_V4;
                }
                IpAddr::V6(a) => {
                    self.ip = a.octets();
                    self.bits |= PEER_V6;
                }
            }
        }
    }
    /// The current session's username.
    pub(super) fn user<'s>(&self, st: &'s Store) -> Option<&'s [u8]> {
        if self.has(HAS_CUR) {
            self.kept_user(&st.bytes)
        } else {
            None
        }
    }
    /// The username kept after the key, whether or not a session is current.
    pub(super) fn kept_user<'s>(&self, bytes: &'s BytePool) -> Option<&'s [u8]> {
        self.has(HAS_USER).then(|| &bytes.get(&self.kb)[self.key_len as usize..])
    }
    fn username_of<'s>(&self, bytes: &'s BytePool, u: UsernameSource<'s>) -> Option<&'s [u8]> {
        match u {
            UsernameSource::Absent => None,
            UsernameSource::Borrowed(s) => Some(s),
            UsernameSource::Pooled(b) => Some(bytes.get(b)),
            UsernameSource::Kept => self.kept_user(bytes),
        }
    }
    /// Store `u` after the key, in a new block only if it differs from the
    /// one stored.
    pub(super) fn set_user(&mut self, st: &mut Store, u: UsernameSource<'_>) {
        if self.kept_user(&st.bytes) == self.username_of(&st.bytes, u) {
            return;
        }
        // The pending connects that share the old name get their copies
        // first (the pool may grow: `new` is read after).
        self.unshare_kept_user(st);
        let bytes = &mut st.bytes;
        let new = self.username_of(bytes, u);
        let k = self.key_len as usize;
        let key_and_user = bytes.get(&self.kb);
        // Both may be the pool's bytes: join them outside it first.
        let total = k + new.map_or(0, <[u8]>::len);
        let mut stack = [0u8; 256];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if total <= stack.len() {
            &mut stack[..total]
        } else {
            heap.resize(total, 0);
            &mut heap
        };
        buf[..k].copy_from_slice(&key_and_user[..k]);
        if let Some(new) = new {
            buf[k..].copy_from_slice(new);
        }
        let has_user = new.is_some();
        let old = std::mem::replace(&mut self.kb, bytes.alloc(&[buf]));
        bytes.free(old);
        self.set(HAS_USER, has_user);
    }
    pub(super) fn set_times_change(&mut self, now: Millis) {
        self.last_change = Millis48::new(now);
    }

    /// Mountpoint and client id, borrowed from the store.
    pub fn key_parts<'s>(&self, st: &'s Store) -> (&'s [u8], &'s [u8]) {
        let kb = st.bytes.get(&self.kb);
        let (mp_len, n) = read_varint(kb);
        let key = &kb[..self.key_len as usize];
        (&key[n..n + mp_len], &key[n + mp_len..])
    }

    pub fn key_ref<'s>(&self, st: &'s Store) -> KeyRef<'s> {
        let (mountpoint, client_id) = self.key_parts(st);
        KeyRef { mountpoint, client_id }
    }

    pub fn key_eq(&self, st: &Store, mountpoint: &[u8], client_id: &[u8]) -> bool {
        let (mp, cid) = self.key_parts(st);
        mp == mountpoint && cid == client_id
    }

    pub fn key(&self, st: &Store) -> SubscriberKey {
        let KeyRef { mountpoint, client_id } = self.key_ref(st);
        SubscriberKey::new(mountpoint, client_id)
    }

    pub(super) fn set_cur(&mut self, st: &mut Store, s: NewSession<'_>) {
        self.bits &= !SESSION_BITS;
        self.bits |= HAS_CUR;
        self.gen = s.gen;
        self.set_conn(s.conn);
        self.set_queue(s.queue);
        self.set_peer(s.peer);
        self.set_user(st, s.username);
        self.set(ONLINE, s.online);
        self.set(REGISTERED, s.registered);
        self.set(CLEAN, s.clean);
        self.set(MQTT5, s.protocol == Protocol::Mqtt5);
    }

    pub(super) fn clear_cur(&mut self) {
        self.bits &= !SESSION_BITS;
    }

}
