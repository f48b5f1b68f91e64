//! Bounded ring of recent session endings, with its own lock. Written only
//! after the shard lock of the event is released.

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::Ending;

struct Ring {
    cap: usize,
    items: VecDeque<Ending>,
}

pub(super) struct History(Mutex<Ring>);

impl History {
    pub fn new(cap: usize) -> History {
        // Never preallocate a huge configured size; grow as endings come.
        History(Mutex::new(Ring {
            cap,
            items: VecDeque::with_capacity(cap.min(1024)),
        }))
    }

    /// Adds endings, oldest first; the oldest beyond the capacity go, and
    /// are freed after the lock is released (every scheduler takes it).
    /// Each evicted one takes the place of the one that pushed it out in
    /// `endings`: no allocation for them.
    pub fn push_all(&self, mut endings: Vec<Ending>) {
        {
            let mut g = self.0.lock();
            if g.cap == 0 {
                return;
            }
            let room = g.cap.saturating_sub(g.items.len()).min(endings.len());
            g.items.extend(endings.drain(..room));
            for e in &mut endings {
                let Some(oldest) = g.items.pop_front() else { break };
                g.items.push_back(std::mem::replace(e, oldest));
            }
        }
        drop(endings);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Ending> {
        let g = self.0.lock();
        g.items.iter().rev().take(limit).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.0.lock().items.len()
    }

    pub fn set_capacity(&self, cap: usize) {
        let mut g = self.0.lock();
        g.cap = cap;
        while g.items.len() > cap {
            g.items.pop_front();
        }
        if g.items.capacity() > 2 * cap.max(16) {
            g.items.shrink_to(cap);
        }
    }

    pub fn clear(&self) {
        let mut g = self.0.lock();
        g.items.clear();
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
        h.recent(usize::MAX).iter().map(|e| e.generation).collect()
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
}
