//! The slow-verification slots: how many bcrypt / argon2 / costly PBKDF2
//! checks may run at once on the dirty CPU schedulers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The Erlang side sets the limit to max(1, dirty CPU schedulers - 1), so
/// one dirty CPU scheduler always stays free of password hashing.
pub struct SlowSlots {
    limit: AtomicUsize,
    running: AtomicUsize,
    /// Connects refused because no slot came free in time.
    busy: AtomicU64,
    /// Most slots seen taken at once since the last reading.
    peak: AtomicUsize,
}

/// `{Limit, Running, Peak, Busy}` as `slow_slots_info/0` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotsInfo {
    pub limit: usize,
    pub running: usize,
    pub peak: usize,
    pub busy: u64,
}

/// The most slots an operator may ask for.
pub const MAX_SLOTS: usize = 1024;

impl Default for SlowSlots {
    fn default() -> Self {
        SlowSlots { limit: AtomicUsize::new(1), running: AtomicUsize::new(0), busy: AtomicU64::new(0), peak: AtomicUsize::new(0) }
    }
}

/// A taken slot, given back when dropped (also on a panic), so none can leak.
pub struct Slot<'a>(&'a SlowSlots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Release);
    }
}

impl SlowSlots {
    pub fn try_acquire(&self) -> Option<Slot<'_>> {
        let limit = self.limit.load(Ordering::Relaxed).max(1);
        self.running
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()
            .map(|n| {
                self.peak.fetch_max(n + 1, Ordering::Relaxed);
                Slot(self)
            })
    }

    /// Sets the limit (1..=MAX_SLOTS); the previous one, or `None` if out of range.
    pub fn set_limit(&self, n: usize) -> Option<usize> {
        (1..=MAX_SLOTS).contains(&n).then(|| self.limit.swap(n, Ordering::Relaxed))
    }

    pub fn count_busy(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// The current figures; the peak restarts from here.
    pub fn take_info(&self) -> SlotsInfo {
        SlotsInfo {
            limit: self.limit.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            peak: self.peak.swap(0, Ordering::Relaxed),
            busy: self.busy(),
        }
    }
}
