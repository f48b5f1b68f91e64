//! How long each NIF call kept its scheduler thread: the evidence for "no
//! scheduler blocked for more than 1 ms". `long_schedule` events from the VM
//! cannot tell a NIF that ran too long from an OS that took the CPU away
//! from the scheduler thread; wall time and the thread's own CPU time of
//! every call can: a call that is long in wall time but short in CPU time
//! was preempted or waited; whether its thread gave up the CPU on its own
//! (a voluntary context switch: it blocked, e.g. on a contended lock) tells
//! which.
//!
//! Off by default, and then a call costs one relaxed load. The clocks are
//! read by the caller (the NIF crate); this only keeps the figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// A call that kept its thread for longer than this is counted as a stall.
pub const STALL_NS: u64 = 1_000_000;

#[derive(Default)]
struct Slot {
    calls: AtomicU64,
    max_wall_ns: AtomicU64,
    max_cpu_ns: AtomicU64,
    over_wall: AtomicU64,
    over_cpu: AtomicU64,
    blocked: AtomicU64,
    over_wall_blocked: AtomicU64,
    over_cpu_page_faults: AtomicU64,
    total_wall_ns: AtomicU64,
    total_cpu_ns: AtomicU64,
}

/// Figures of one kind of call since the last `start`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallFigures {
    pub calls: u64,
    pub max_wall_ns: u64,
    pub max_cpu_ns: u64,
    /// Calls longer than [`STALL_NS`] in wall time.
    pub over_wall: u64,
    /// Calls that used more than [`STALL_NS`] of their thread's CPU time.
    pub over_cpu: u64,
    /// Calls during which the thread blocked (a voluntary context switch).
    pub blocked: u64,
    /// Calls longer than [`STALL_NS`] in wall time that blocked.
    pub over_wall_blocked: u64,
    /// Page faults taken by the calls over [`STALL_NS`] of CPU: first
    /// touches of fresh memory, whose cost the CPU time includes.
    pub over_cpu_page_faults: u64,
    /// Sums over the calls: what the calls cost in all (wall, and their
    /// threads' CPU as capped below), for a share of a node's CPU.
    pub total_wall_ns: u64,
    pub total_cpu_ns: u64,
}

/// What the caller measured of one call.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallSample {
    pub wall_ns: u64,
    pub cpu_ns: u64,
    pub blocked: bool,
    pub page_faults: u64,
}

/// One slot per kind of call (`N` kinds, indexed by the caller).
pub struct CallTimes<const N: usize> {
    enabled: AtomicBool,
    slots: [Slot; N],
}

impl<const N: usize> Default for CallTimes<N> {
    fn default() -> Self {
        CallTimes { enabled: AtomicBool::new(false), slots: std::array::from_fn(|_| Slot::default()) }
    }
}

impl<const N: usize> CallTimes<N> {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Zero every figure and start recording.
    pub fn start(&self) {
        for s in &self.slots {
            for a in [&s.calls, &s.max_wall_ns, &s.max_cpu_ns, &s.over_wall, &s.over_cpu, &s.blocked, &s.over_wall_blocked, &s.over_cpu_page_faults, &s.total_wall_ns, &s.total_cpu_ns] {
                a.store(0, Relaxed);
            }
        }
        self.enabled.store(true, Relaxed);
    }

    pub fn stop(&self) {
        self.enabled.store(false, Relaxed);
    }

    /// One call of kind `kind` (ignored if out of range).
    pub fn record(&self, kind: usize, mut c: CallSample) {
        let Some(s) = self.slots.get(kind) else { return };
        // A call runs at most as long as it lasts: thread CPU time above the
        // wall time is the kernel charging the thread for other work
        // (interrupts without IRQ time accounting, another guest's time).
        c.cpu_ns = c.cpu_ns.min(c.wall_ns);
        s.calls.fetch_add(1, Relaxed);
        s.max_wall_ns.fetch_max(c.wall_ns, Relaxed);
        s.max_cpu_ns.fetch_max(c.cpu_ns, Relaxed);
        s.total_wall_ns.fetch_add(c.wall_ns, Relaxed);
        s.total_cpu_ns.fetch_add(c.cpu_ns, Relaxed);
        let long = c.wall_ns > STALL_NS;
        if c.cpu_ns > STALL_NS {
            s.over_cpu_page_faults.fetch_add(c.page_faults, Relaxed);
        }
        for (cond, counter) in [
            (long, &s.over_wall),
            (c.cpu_ns > STALL_NS, &s.over_cpu),
            (c.blocked, &s.blocked),
            (long && c.blocked, &s.over_wall_blocked),
        ] {
            if cond {
                counter.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn figures(&self, kind: usize) -> CallFigures {
        self.slots.get(kind).map_or_else(CallFigures::default, |s| CallFigures {
            calls: s.calls.load(Relaxed),
            max_wall_ns: s.max_wall_ns.load(Relaxed),
            max_cpu_ns: s.max_cpu_ns.load(Relaxed),
            over_wall: s.over_wall.load(Relaxed),
            over_cpu: s.over_cpu.load(Relaxed),
            blocked: s.blocked.load(Relaxed),
            over_wall_blocked: s.over_wall_blocked.load(Relaxed),
            over_cpu_page_faults: s.over_cpu_page_faults.load(Relaxed),
            total_wall_ns: s.total_wall_ns.load(Relaxed),
            total_cpu_ns: s.total_cpu_ns.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_maxima_and_counts_calls_over_the_stall_bound() {
        let t = CallTimes::<2>::default();
        assert!(!t.enabled());
        t.start();
        assert!(t.enabled());
        let call = |wall_ns, cpu_ns, blocked| CallSample { wall_ns, cpu_ns, blocked, page_faults: 3 };
        t.record(0, call(500, 400, false));
        t.record(0, call(2_500_000, 300_000, false)); // preempted: long wall, short CPU
        t.record(0, call(1_200_000, 1_100_000, false)); // really busy
        t.record(0, call(3_000_000, 10_000, true)); // waited on something
        t.record(0, call(900, 100, true));
        t.record(7, call(9_999_999_999, 1, false)); // no such kind: ignored
        assert_eq!(
            t.figures(0),
            CallFigures {
                calls: 5,
                max_wall_ns: 3_000_000,
                max_cpu_ns: 1_100_000,
                over_wall: 3,
                over_cpu: 1,
                blocked: 2,
                over_wall_blocked: 1,
                over_cpu_page_faults: 3,
                total_wall_ns: 500 + 2_500_000 + 1_200_000 + 3_000_000 + 900,
                total_cpu_ns: 400 + 300_000 + 1_100_000 + 10_000 + 100,
            }
        );
        assert_eq!(t.figures(1), CallFigures::default());
        assert_eq!(t.figures(7), CallFigures::default());
    }

    /// CI saw an auth call of 3.4 ms of thread CPU in 32 µs of wall time:
    /// the clock charged the thread for other work (interrupts, on a kernel
    /// without IRQ time accounting). A call runs at most as long as it lasts.
    #[test]
    fn cpu_time_above_the_call_s_wall_time_is_not_the_call_s() {
        let t = CallTimes::<1>::default();
        t.start();
        t.record(0, CallSample { wall_ns: 32_328, cpu_ns: 3_416_570, blocked: false, page_faults: 0 });
        let f = t.figures(0);
        assert_eq!((f.max_cpu_ns, f.over_cpu, f.total_cpu_ns), (32_328, 0, 32_328));
        // a call that really ran long still counts
        t.record(0, CallSample { wall_ns: 1_500_000, cpu_ns: 1_400_000, blocked: false, page_faults: 0 });
        assert_eq!(t.figures(0).over_cpu, 1);
    }

    #[test]
    fn start_zeroes_the_previous_figures() {
        let t = CallTimes::<1>::default();
        t.start();
        t.record(0, CallSample { wall_ns: 2_000_000, cpu_ns: 2_000_000, blocked: true, page_faults: 1 });
        t.stop();
        assert!(!t.enabled());
        t.start();
        assert_eq!(t.figures(0), CallFigures::default());
    }
}
