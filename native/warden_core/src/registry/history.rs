//! Bounded history of recent session endings, in the order they happened.
//!
//! Endings are numbered from one counter when they happen (under their
//! record's shard lock) and staged in that shard; a full stage, and every
//! read, moves staged endings here, where they are kept ordered by number.
//! The staging spares every ending a lock shared by all schedulers; the
//! numbers keep the order exact: after the moves, the history holds the
//! `cap` newest endings, newest first, as if each had been pushed at once.

use std::collections::VecDeque;

use parking_lot::Mutex;

use super::Ending;

/// An ending and its number (the order of endings).
pub(super) type Numbered = (u64, Ending);

/// A shard stages this many endings before moving them here.
pub(super) const STAGE: usize = 32;

struct Ring {
    cap: usize,
    /// Ascending by number.
    items: VecDeque<Numbered>,
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

    /// Adds endings (in any order); the oldest beyond the capacity go. The
    /// ones that go are dropped after the lock is released.
    pub fn push_all(&self, endings: Vec<Numbered>) {
        if endings.is_empty() {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut g = self.0.lock();
            if g.cap == 0 {
                return;
            }
            for e in endings {
                // Almost always at the back: endings arrive nearly in order.
                let at = g.items.iter().rposition(|(n, _)| *n < e.0).map_or(0, |i| i + 1);
                g.items.insert(at, e);
                if g.items.len() > g.cap {
                    evicted.extend(g.items.pop_front());
                }
            }
        }
        drop(evicted);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Ending> {
        let g = self.0.lock();
        g.items.iter().rev().take(limit).map(|(_, e)| e.clone()).collect()
    }

    /// The length once `staged` more endings have been moved here.
    pub fn len_with_staged(&self, staged: usize) -> usize {
        let g = self.0.lock();
        (g.items.len() + staged).min(g.cap)
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

    fn ending(n: u64) -> Numbered {
        let e = Ending {
            key: SubscriberKey::new(Vec::new(), n.to_string().into_bytes()),
            generation: n,
            reason: EndReason::Gone,
            peer: None,
            username: None,
            started: 0,
            ended: 0,
        };
        (n, e)
    }

    fn numbers(h: &History) -> Vec<u64> {
        h.recent(usize::MAX).iter().map(|e| e.generation).collect()
    }

    #[test]
    fn batches_out_of_order_end_up_newest_first_and_bounded() {
        let h = History::new(5);
        h.push_all(vec![ending(2), ending(5)]);
        h.push_all(vec![ending(1), ending(3), ending(4)]);
        assert_eq!(numbers(&h), vec![5, 4, 3, 2, 1]);
        // A late batch: 0 is older than all five kept, 6 and 7 are newer.
        h.push_all(vec![ending(0), ending(7), ending(6)]);
        assert_eq!(numbers(&h), vec![7, 6, 5, 4, 3]);
        h.set_capacity(2);
        assert_eq!(numbers(&h), vec![7, 6]);
        h.set_capacity(0);
        h.push_all(vec![ending(8)]);
        assert_eq!(h.len_with_staged(0), 0);
        assert_eq!(h.len_with_staged(3), 0);
        h.set_capacity(4);
        h.push_all(vec![ending(9)]);
        assert_eq!((h.len_with_staged(0), h.len_with_staged(2), h.len_with_staged(9)), (1, 3, 4));
    }
}
