//! Bounded ring of recent session endings, with its own lock.
//!
//! A hook's ending is written into the ring while the hook still holds its
//! shard's lock, but only if the ring's lock is free at that moment
//! ([`History::try_record`]: the shard's other hooks never wait for the
//! ring); else, and for a sweep's batch or when events are on, the ending
//! is copied out and pushed after the shard's lock is released
//! ([`History::push_all`]). Either way an entry's strings go into the
//! buffer of the entry it replaces: a full ring takes an ending without an
//! allocation, where a copy of its key and username was two mallocs a
//! disconnect and the frees of the evicted one's, on memory long cold.

use parking_lot::Mutex;

use super::{EndReason, Ending, KeyRef};
use crate::types::{Millis, Peer, SubscriberKey};

/// An ending to record, borrowed from the record it ends.
#[derive(Clone, Copy)]
pub(super) struct EndingRef<'a> {
    pub key: KeyRef<'a>,
    pub generation: u64,
    pub reason: EndReason,
    pub peer: Option<Peer>,
    pub username: Option<&'a [u8]>,
    pub started: Millis,
    pub ended: Millis,
    pub kicked_by: Option<&'a str>,
}

impl EndingRef<'_> {
    pub fn to_owned(self) -> Ending {
        Ending {
            key: SubscriberKey::new(self.key.mountpoint, self.key.client_id),
            generation: self.generation,
            reason: self.reason,
            peer: self.peer,
            username: self.username.map(Box::from),
            started: self.started,
            ended: self.ended,
            kicked_by: self.kicked_by.map(Box::from),
        }
    }
}

impl Ending {
    pub(super) fn as_ref(&self) -> EndingRef<'_> {
        EndingRef {
            key: (&self.key).into(),
            generation: self.generation,
            reason: self.reason,
            peer: self.peer,
            username: self.username.as_deref(),
            started: self.started,
            ended: self.ended,
            kicked_by: self.kicked_by.as_deref(),
        }
    }
}

/// An ending as the ring keeps it: mountpoint, client id and username in
/// one buffer, which the next ending written over this one reuses.
struct Entry {
    bytes: Vec<u8>,
    mountpoint_len: usize,
    client_id_len: usize,
    has_username: bool,
    generation: u64,
    reason: EndReason,
    peer: Option<Peer>,
    started: Millis,
    ended: Millis,
    kicked_by: Option<Box<str>>,
}

/// A reused buffer this much larger than the ending written into it (a
/// hostile client's 64 KiB id, followed by ordinary ones) is given back.
const KEEP_SLACK: usize = 512;

impl Entry {
    fn new(e: EndingRef<'_>) -> Entry {
        let mut entry = Entry {
            bytes: Vec::new(),
            mountpoint_len: 0,
            client_id_len: 0,
            has_username: false,
            generation: 0,
            reason: e.reason,
            peer: None,
            started: 0,
            ended: 0,
            kicked_by: None,
        };
        entry.fill(e);
        entry
    }

    fn fill(&mut self, e: EndingRef<'_>) {
        let (mp, cid, user) = (e.key.mountpoint, e.key.client_id, e.username.unwrap_or_default());
        let need = mp.len() + cid.len() + user.len();
        if self.bytes.capacity() > need + KEEP_SLACK {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        self.bytes.reserve_exact(need);
        self.bytes.extend_from_slice(mp);
        self.bytes.extend_from_slice(cid);
        self.bytes.extend_from_slice(user);
        self.mountpoint_len = mp.len();
        self.client_id_len = cid.len();
        self.has_username = e.username.is_some();
        self.generation = e.generation;
        self.reason = e.reason;
        self.peer = e.peer;
        self.started = e.started;
        self.ended = e.ended;
        self.kicked_by = e.kicked_by.map(Box::from);
    }

    fn to_ending(&self) -> Ending {
        let (mp, rest) = self.bytes.split_at(self.mountpoint_len);
        let (cid, user) = rest.split_at(self.client_id_len);
        Ending {
            key: SubscriberKey::new(mp, cid),
            generation: self.generation,
            reason: self.reason,
            peer: self.peer,
            username: self.has_username.then(|| Box::from(user)),
            started: self.started,
            ended: self.ended,
            kicked_by: self.kicked_by.clone(),
        }
    }
}

struct Ring {
    cap: usize,
    /// Arrival order from `oldest` on, wrapping: `items[oldest..]`, then
    /// `items[..oldest]`. A plain vector rather than a `VecDeque`: a full
    /// ring takes an ending in the oldest entry's place, and a connect that
    /// ends runs this with cold caches, where every line of code counts.
    items: Vec<Entry>,
    /// The oldest entry's index; 0 until the ring is full.
    oldest: usize,
}

impl Ring {
    fn write(&mut self, e: EndingRef<'_>) {
        if self.cap == 0 {
            return;
        }
        if self.items.len() < self.cap {
            self.items.push(Entry::new(e));
        } else {
            self.items[self.oldest].fill(e);
            self.oldest = if self.oldest + 1 == self.cap { 0 } else { self.oldest + 1 };
        }
    }
}

pub(super) struct History(Mutex<Ring>);

impl History {
    pub fn new(cap: usize) -> History {
        // Never preallocate a huge configured size; grow as endings come.
        History(Mutex::new(Ring {
            cap,
            items: Vec::with_capacity(cap.min(1024)),
            oldest: 0,
        }))
    }

    /// Records `e` if the ring's lock is free now; false (nothing done) if
    /// another thread holds it. Called under a shard's lock, which must not
    /// wait for this one.
    pub fn try_record(&self, e: EndingRef<'_>) -> bool {
        match self.0.try_lock() {
            Some(mut ring) => {
                ring.write(e);
                true
            }
            None => false,
        }
    }

    /// Adds endings, oldest first; the oldest beyond the capacity go.
    /// Never called under a shard's lock.
    pub fn push_all(&self, endings: Vec<Ending>) {
        if endings.is_empty() {
            return;
        }
        {
            let mut ring = self.0.lock();
            for e in &endings {
                ring.write(e.as_ref());
            }
        }
        drop(endings);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Ending> {
        let g = self.0.lock();
        let (newer, older) = g.items.split_at(g.oldest);
        newer.iter().rev().chain(older.iter().rev()).take(limit).map(Entry::to_ending).collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().items.len()
    }

    pub fn set_capacity(&self, cap: usize) {
        let mut g = self.0.lock();
        let g = &mut *g;
        g.items.rotate_left(g.oldest);
        g.oldest = 0;
        g.cap = cap;
        if g.items.len() > cap {
            let excess = g.items.len() - cap;
            g.items.drain(..excess);
        }
        if g.items.capacity() > 2 * cap.max(16) {
            g.items.shrink_to(cap);
        }
    }

    pub fn clear(&self) {
        let mut g = self.0.lock();
        g.items.clear();
        g.oldest = 0;
        let cap = g.cap.min(1024);
        g.items.shrink_to(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EndReason;
    use crate::types::SubscriberKey;

    fn ending(generation: u64) -> Ending {
        Ending {
            key: SubscriberKey::new(Vec::new(), format!("c{generation}").into_bytes()),
            generation,
            reason: EndReason::Gone,
            peer: None,
            username: None,
            started: 0,
            ended: generation,
            kicked_by: None,
        }
    }

    fn gens(h: &History) -> Vec<u64> {
        gens_limited(h, usize::MAX)
    }

    #[test]
    fn a_batch_larger_than_the_room_keeps_the_newest_in_order() {
        let h = History::new(3);
        h.push_all(vec![ending(1), ending(2)]);
        assert_eq!(gens(&h), [2, 1]);
        // one fits, three push out older ones (two of them from this batch)
        h.push_all(vec![ending(3), ending(4), ending(5), ending(6)]);
        assert_eq!(gens(&h), [6, 5, 4]);
        h.push_all(vec![ending(7)]);
        assert_eq!(gens(&h), [7, 6, 5]);
        let none = History::new(0);
        none.push_all(vec![ending(1)]);
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn a_wrapped_ring_keeps_its_order_through_resizes_and_clear() {
        let h = History::new(4);
        h.push_all((1..=6).map(ending).collect());
        assert_eq!(gens(&h), [6, 5, 4, 3]);
        assert_eq!(gens_limited(&h, 2), [6, 5]);
        h.set_capacity(6);
        h.push_all(vec![ending(7)]);
        assert_eq!(gens(&h), [7, 6, 5, 4, 3]);
        h.push_all(vec![ending(8), ending(9)]);
        assert_eq!(gens(&h), [9, 8, 7, 6, 5, 4]);
        h.set_capacity(3);
        assert_eq!(gens(&h), [9, 8, 7]);
        h.push_all(vec![ending(10)]);
        assert_eq!(gens(&h), [10, 9, 8]);
        h.clear();
        assert_eq!(h.len(), 0);
        h.push_all(vec![ending(11), ending(12), ending(13), ending(14)]);
        assert_eq!(gens(&h), [14, 13, 12]);
    }

    fn gens_limited(h: &History, limit: usize) -> Vec<u64> {
        h.recent(limit).iter().map(|e| e.generation).collect()
    }

    /// An entry reuses the buffer of the one it replaces, but a hostile
    /// client's long id does not leave its size behind in the ring.
    #[test]
    fn entries_reuse_their_buffers_and_give_back_a_long_one() {
        let h = History::new(2);
        let long = Ending { key: SubscriberKey::new(&b"mp"[..], vec![b'x'; 65_535]), username: Some(Box::from(&b"u"[..])), ..ending(1) };
        h.push_all(vec![long.clone(), ending(2)]);
        assert_eq!(h.recent(2)[1], long, "kept whole");
        let capacities = |h: &History| h.0.lock().items.iter().map(|e| e.bytes.capacity()).collect::<Vec<_>>();
        assert_eq!(capacities(&h)[0], 65_538);
        // the long one's place taken by a short ending: its buffer goes
        h.push_all(vec![ending(3)]);
        assert!(capacities(&h).iter().all(|&c| c <= 8 + KEEP_SLACK), "{:?}", capacities(&h));
        // a short one over a short one keeps the buffer
        let before = h.0.lock().items[1].bytes.as_ptr();
        h.push_all(vec![ending(4)]);
        assert_eq!(h.0.lock().items[1].bytes.as_ptr(), before);
        assert_eq!(gens(&h), [4, 3]);
        assert_eq!(h.recent(1)[0], ending(4));
    }

    /// Under a shard's lock an ending is written only if the ring's lock
    /// is free: a held ring leaves it to the caller.
    #[test]
    fn try_record_never_waits() {
        let h = History::new(4);
        let e = ending(1);
        let held = h.0.lock();
        assert!(!h.try_record(e.as_ref()));
        drop(held);
        assert!(h.try_record(e.as_ref()));
        assert_eq!(h.recent(4), [e]);
    }
}
