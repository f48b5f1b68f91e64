//! The byte-bounded queue events wait in until the Erlang side drains them.
//! Off by default; off, a push is one relaxed load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

use super::Event;

struct Queued {
    items: VecDeque<Event>,
    bytes: usize,
}

pub struct EventQueue {
    enabled: AtomicBool,
    max_bytes: AtomicUsize,
    inner: Mutex<Queued>,
    pushed: AtomicU64,
    dropped: AtomicU64,
    taken: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventQueueStats {
    pub enabled: bool,
    pub queued: u64,
    pub queued_bytes: u64,
    pub max_bytes: u64,
    /// Accepted into the queue.
    pub pushed: u64,
    /// Refused because the queue was full: never lost without a count.
    pub dropped: u64,
    /// Handed to the Erlang side.
    pub taken: u64,
}

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue::new(1 << 20)
    }
}

impl EventQueue {
    pub fn new(max_bytes: usize) -> EventQueue {
        EventQueue {
            enabled: AtomicBool::new(false),
            max_bytes: AtomicUsize::new(max_bytes),
            inner: Mutex::new(Queued { items: VecDeque::new(), bytes: 0 }),
            pushed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    /// Whether events are wanted: callers check it before building one, so
    /// that with events off nothing is built.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Switching off empties the queue (what is queued is dropped, counted).
    pub fn configure(&self, enabled: bool, max_bytes: usize) {
        self.max_bytes.store(max_bytes, Relaxed);
        self.enabled.store(enabled, Relaxed);
        let dropped = {
            let mut g = self.inner.lock();
            if enabled {
                VecDeque::new()
            } else {
                g.bytes = 0;
                std::mem::take(&mut g.items)
            }
        };
        self.dropped.fetch_add(dropped.len() as u64, Relaxed);
    }

    /// Queue `event`, or count it dropped when it does not fit. Cheap: one
    /// short lock, no allocation (the deque grows to its high-water mark and
    /// stays there).
    pub fn push(&self, event: Event) -> bool {
        if !self.is_on() {
            return false;
        }
        let size = event.size();
        let max = self.max_bytes.load(Relaxed);
        let mut g = self.inner.lock();
        if g.bytes + size > max {
            drop(g);
            self.dropped.fetch_add(1, Relaxed);
            return false;
        }
        g.bytes += size;
        g.items.push_back(event);
        drop(g);
        self.pushed.fetch_add(1, Relaxed);
        true
    }

    /// Up to `max` events, oldest first.
    pub fn take(&self, max: usize) -> Vec<Event> {
        let out: Vec<Event> = {
            let mut g = self.inner.lock();
            let n = max.min(g.items.len());
            let out: Vec<Event> = g.items.drain(..n).collect();
            g.bytes -= out.iter().map(Event::size).sum::<usize>();
            out
        };
        self.taken.fetch_add(out.len() as u64, Relaxed);
        out
    }

    pub fn stats(&self) -> EventQueueStats {
        let (queued, bytes) = {
            let g = self.inner.lock();
            (g.items.len() as u64, g.bytes as u64)
        };
        EventQueueStats {
            enabled: self.is_on(),
            queued,
            queued_bytes: bytes,
            max_bytes: self.max_bytes.load(Relaxed) as u64,
            pushed: self.pushed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            taken: self.taken.load(Relaxed),
        }
    }

    /// Empty the queue and zero the counters (the plugin's start).
    pub fn reset(&self) {
        let old = {
            let mut g = self.inner.lock();
            g.bytes = 0;
            std::mem::take(&mut g.items)
        };
        drop(old);
        for c in [&self.pushed, &self.dropped, &self.taken] {
            c.store(0, Relaxed);
        }
    }
}
