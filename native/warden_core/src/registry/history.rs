//! Bounded history of recent session endings, in the order they happened.
//!
//! Endings are numbered from one counter when they happen (under their
//! record's shard lock) and staged in that shard; a full stage, and every
//! read, moves staged endings here, where the newest `cap` by number are
//! kept.
//! The staging spares every ending a lock shared by all schedulers; the
//! numbers keep the order exact: after the moves, the history holds the
//! `cap` newest endings, newest first, as if each had been pushed at once.

use parking_lot::Mutex;

use super::Ending;

/// An ending and its number (the order of endings).
pub(super) type Numbered = (u64, Ending);

/// A shard stages this many endings before moving them here.
pub(super) const STAGE: usize = 32;

struct Ring {
    cap: usize,
    /// In arrival order, which is not quite number order (shards move
    /// their stages at different times); up to `cap / 8` more between trims.
    items: Vec<Numbered>,
}

impl Ring {
    /// Keep the `cap` newest; returns the others (to drop after unlocking).
    fn trim(&mut self) -> Vec<Numbered> {
        if self.items.len() <= self.cap {
            return Vec::new();
        }
        if self.cap == 0 {
            return std::mem::take(&mut self.items);
        }
        let excess = self.items.len() - self.cap;
        // The `excess` oldest end up before index `excess`.
        self.items.select_nth_unstable_by_key(excess, |(n, _)| *n);
        self.items.drain(..excess).collect()
    }
}

pub(super) struct History(Mutex<Ring>);

impl History {
    pub fn new(cap: usize) -> History {
        // Never preallocate a huge configured size; grow as endings come.
        History(Mutex::new(Ring {
            cap,
            items: Vec::with_capacity(cap.min(1024)),
        }))
    }

    /// Adds endings (in any order). Trimmed to the `cap` newest when an
    /// eighth more are held: an O(n) selection every `cap / 8` endings, where
    /// keeping them sorted cost a long memmove for every late arrival (and
    /// trimming at twice `cap` held one hook call for 0.4 ms in the
    /// benchmark's stall audit).
    pub fn push_all(&self, endings: Vec<Numbered>) {
        if endings.is_empty() {
            return;
        }
        let evicted = {
            let mut g = self.0.lock();
            if g.cap == 0 {
                return;
            }
            g.items.extend(endings);
            if g.items.len() >= g.cap + (g.cap / 8).max(STAGE) {
                g.trim()
            } else {
                Vec::new()
            }
        };
        drop(evicted);
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Vec<Ending> {
        let (mut newest, evicted) = {
            let mut g = self.0.lock();
            let evicted = g.trim();
            (g.items.iter().map(|(n, e)| (*n, e.clone())).collect::<Vec<_>>(), evicted)
        };
        drop(evicted);
        newest.sort_unstable_by_key(|(n, _)| std::cmp::Reverse(*n));
        newest.into_iter().take(limit).map(|(_, e)| e).collect()
    }

    /// The length once `staged` more endings have been moved here.
    pub fn len_with_staged(&self, staged: usize) -> usize {
        let g = self.0.lock();
        (g.items.len() + staged).min(g.cap)
    }

    pub fn set_capacity(&self, cap: usize) {
        let evicted = {
            let mut g = self.0.lock();
            g.cap = cap;
            let evicted = g.trim();
            if g.items.capacity() > 2 * cap.max(16) {
                g.items.shrink_to(2 * cap);
            }
            evicted
        };
        drop(evicted);
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
