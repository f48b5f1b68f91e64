//! Bounded ring of recent session endings, with its own lock. Written only
//! after the shard lock of the event is released.

use parking_lot::Mutex;

use super::Ending;

struct Ring {
    cap: usize,
    /// Arrival order from `oldest` on, wrapping: `items[oldest..]`, then
    /// `items[..oldest]`. A plain vector rather than a `VecDeque`: a full
    /// ring takes an ending by one swap, and a connect that ends runs this
    /// with cold caches, where every line of code counts.
    items: Vec<Ending>,
    /// The oldest entry's index; 0 until the ring is full.
    oldest: usize,
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

    /// Adds endings, oldest first; the oldest beyond the capacity go, and
    /// are freed after the lock is released (every scheduler takes it).
    /// Each evicted one takes the place of the one that pushed it out in
    /// `endings`: no allocation for them.
    pub fn push_all(&self, mut endings: Vec<Ending>) {
        {
            let mut g = self.0.lock();
            let g = &mut *g;
            if g.cap == 0 {
                return;
            }
            if g.items.len() < g.cap {
                let room = (g.cap - g.items.len()).min(endings.len());
                g.items.extend(endings.drain(..room));
            }
            for e in &mut endings {
                std::mem::swap(e, &mut g.items[g.oldest]);
                g.oldest = if g.oldest + 1 == g.cap { 0 } else { g.oldest + 1 };
            }
        }
        drop(endings);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Ending> {
        let g = self.0.lock();
        let (newer, older) = g.items.split_at(g.oldest);
        newer.iter().rev().chain(older.iter().rev()).take(limit).cloned().collect()
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
}
