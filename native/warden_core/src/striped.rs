//! Counters bumped by every scheduler on every hook: one cache line per
//! stripe and each thread on a stripe by where its stack is
//! ([`thread_stripe`]), so that schedulers counting at the same time
//! rarely pass one cache line back and forth. On the 2-vCPU
//! benchmark machine this was not a measurable gain (docs/BENCHMARKS.md,
//! "Measured design choices"); the shared line's cost grows with the number
//! of schedulers. Reading sums the stripes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Stripes of a striped counter.
pub const STRIPES: usize = 16;

#[repr(align(128))]
struct Stripe<const N: usize>([AtomicU64; N]);

/// `N` counters, each split over the stripes.
pub struct StripedCounters<const N: usize> {
    stripes: Box<[Stripe<N>]>,
}

/// The calling thread's stripe, from where its stack is: each thread has a
/// stack of its own, far from the next (a scheduler's is about a
/// megabyte), so the 64 KiB region of a frame names its thread well
/// enough. No thread-local: in a library the VM loads, each read of one is
/// a call into the dynamic linker. A thread whose frames cross a region
/// boundary uses two stripes, and two threads may share one: either only
/// costs sharing, sums stay exact. Allocation-free (the NIF's counting
/// allocator uses it).
pub fn thread_stripe() -> usize {
    let here = 0u8;
    let region = std::ptr::addr_of!(here) as u64 >> 16;
    (region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % STRIPES
}

impl<const N: usize> Default for StripedCounters<N> {
    fn default() -> Self {
        StripedCounters {
            stripes: (0..STRIPES).map(|_| Stripe(std::array::from_fn(|_| AtomicU64::new(0)))).collect(),
        }
    }
}

impl<const N: usize> StripedCounters<N> {
    /// Adds `n` to counter `i` (out of range: ignored).
    pub fn add(&self, i: usize, n: u64) {
        if let Some(c) = self.stripes[thread_stripe()].0.get(i) {
            c.fetch_add(n, Relaxed);
        }
    }

    pub fn bump(&self, i: usize) {
        self.add(i, 1);
    }

    /// The sum over the stripes (wrapping, like the single counter it replaces).
    pub fn get(&self, i: usize) -> u64 {
        self.stripes.iter().filter_map(|s| s.0.get(i)).fold(0u64, |acc, c| acc.wrapping_add(c.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_what_every_thread_added() {
        let c = Arc::new(StripedCounters::<3>::default());
        let threads: Vec<_> = (0..24)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.bump(0);
                        c.add(1, t);
                    }
                    c.add(7, 1); // out of range: ignored
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(0), 24_000);
        assert_eq!(c.get(1), (0..24).sum::<u64>() * 1000);
        assert_eq!(c.get(2), 0);
        assert_eq!(c.get(7), 0);
    }
}
