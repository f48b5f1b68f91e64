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
    pub fn push_all(&self, endings: Vec<Ending>) {
        let mut evicted = Vec::new();
        {
            let mut g = self.0.lock();
            if g.cap == 0 {
                return;
            }
            for e in endings {
                if g.items.len() >= g.cap {
                    evicted.extend(g.items.pop_front());
                }
                g.items.push_back(e);
            }
        }
        drop(evicted);
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
