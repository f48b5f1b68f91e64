//! A global allocator that counts the bytes the library holds: `memory/0`
//! reports them (the benchmark's memory per session, an operator's view of
//! the plugin's heap). One relaxed atomic add per allocation and free, on a
//! per-thread stripe (cache-line sized) so that schedulers allocating at
//! the same time do not bounce one shared counter between cores; the memory
//! itself comes from the system allocator, as without the wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use warden_core::striped::{thread_stripe, STRIPES};

struct Counting;

#[repr(align(128))]
struct Stripe(AtomicIsize);

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Stripe = Stripe(AtomicIsize::new(0));
static LIVE: [Stripe; STRIPES] = [ZERO; STRIPES];

/// The calling thread's stripe (no thread-local: see `thread_stripe`).
fn stripe() -> &'static AtomicIsize {
    &LIVE[thread_stripe()].0
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only adds bookkeeping on an atomic; the contract of
// GlobalAlloc is upheld by System.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            stripe().fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            stripe().fetch_add(layout.size() as isize, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        stripe().fetch_sub(layout.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            stripe().fetch_sub(layout.size() as isize, Relaxed);
            stripe().fetch_add(new_size as isize, Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes requested and not yet freed (allocator bookkeeping of malloc itself,
/// e.g. chunk headers, not included).
pub fn live_bytes() -> usize {
    // A block freed on another thread than it was allocated on makes single
    // stripes negative; the sum is exact.
    LIVE.iter().map(|s| s.0.load(Relaxed)).sum::<isize>().max(0) as usize
}
