//! Diagnostics for the tests and the benchmark. The call timer's clock
//! reads and the diagnostic NIFs (an empty one, the floor of any call; a
//! fixed-cost one, the clocks' yardstick; one that panics, the panic
//! boundary; one that empties the core's caches, for the broker bench; and
//! in hooks.rs the hooks' floor, their decoding without the core) are
//! built only with the cargo feature `diagnostics`, which
//! `make test` and `make bench` turn on: the library `make` builds has none
//! of them, and there `timed` is an empty value the compiler removes.

/// The kinds of call that are timed, and the scheduler each runs on.
#[derive(Clone, Copy)]
pub enum Nif {
    AuthBegin,
    AuthPassword,
    AuthPasswordSlow,
    Registered,
    QueueEvent,
    Lookup,
    List,
    /// counts, stats, recent_endings, drain_logs: bounded work
    Admin,
    /// configure, cluster_configure, sweep, reset, bans, clear_bans: a pass
    /// over a whole table
    Bulk,
    LoadFiles,
    /// `calibrate/1`: fixed arithmetic, the benchmark's yardstick for the
    /// clocks themselves (see there).
    #[cfg(feature = "diagnostics")]
    Calibration,
}

/// Records the call when dropped (with `diagnostics`), at the end of the
/// NIF's body.
#[cfg(not(feature = "diagnostics"))]
pub struct Timed;

#[cfg(not(feature = "diagnostics"))]
#[inline(always)]
pub fn timed(_nif: Nif) -> Timed {
    Timed
}

#[cfg(feature = "diagnostics")]
pub use timer::*;

#[cfg(feature = "diagnostics")]
mod timer {
use std::time::Instant;

use once_cell::sync::Lazy;
use rustler::{Atom, Encoder, Env, NifResult, Term};
use warden_core::calltime::{CallSample, CallTimes};

use super::Nif;
use crate::{atoms, encode};

const KINDS: usize = 11;
const NAMES: [(&str, &str); KINDS] = [
    ("auth_begin", "normal"),
    ("auth_password", "normal"),
    ("auth_password_slow", "dirty_cpu"),
    ("registered", "normal"),
    ("queue_event", "normal"),
    ("lookup", "normal"),
    ("list_chunk", "normal"),
    ("admin", "normal"),
    ("bulk", "dirty_cpu"),
    ("load_files", "dirty_io"),
    ("calibration", "normal"),
];

static TIMES: Lazy<CallTimes<KINDS>> = Lazy::new(CallTimes::default);

pub struct Timed(Option<(Nif, Instant, ThreadUsage)>);

pub fn timed(nif: Nif) -> Timed {
    if !TIMES.enabled() {
        return Timed(None);
    }
    Timed(Some((nif, Instant::now(), ThreadUsage::at_start())))
}

impl Drop for Timed {
    fn drop(&mut self) {
        if let Some((nif, wall, start)) = self.0 {
            let end = ThreadUsage::at_end();
            let wall_ns = u64::try_from(wall.elapsed().as_nanos()).unwrap_or(u64::MAX);
            TIMES.record(nif as usize, CallSample {
                wall_ns,
                cpu_ns: end.cpu_ns.saturating_sub(start.cpu_ns),
                blocked: end.voluntary_switches > start.voluntary_switches,
                page_faults: end.page_faults.saturating_sub(start.page_faults),
            });
        }
    }
}

/// The calling thread's CPU time, voluntary context switches and page
/// faults (first touches of memory count as CPU time too). None
/// is in std, and both are system calls, which is why they are read only
/// while recording. Zero where a call fails.
#[derive(Clone, Copy)]
struct ThreadUsage {
    cpu_ns: u64,
    voluntary_switches: i64,
    page_faults: u64,
}

impl ThreadUsage {
    /// At a call's start the CPU clock is read last and at its end first,
    /// so that the call's CPU time holds none of `getrusage`'s system call
    /// (about half a microsecond), only the two clock reads' edges.
    fn at_start() -> ThreadUsage {
        let (voluntary_switches, page_faults) = thread_rusage();
        ThreadUsage { cpu_ns: thread_cpu_ns(), voluntary_switches, page_faults }
    }

    fn at_end() -> ThreadUsage {
        let cpu_ns = thread_cpu_ns();
        let (voluntary_switches, page_faults) = thread_rusage();
        ThreadUsage { cpu_ns, voluntary_switches, page_faults }
    }
}

/// The thread's CPU time from CLOCK_THREAD_CPUTIME_ID (exact; getrusage's
/// CPU times are split by scheduler ticks, too coarse for 1 ms); 0 if the
/// call fails.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant the kernel knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
        (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
    } else {
        0
    }
}

/// The thread's voluntary context switches and page faults; zeros if the
/// call fails.
fn thread_rusage() -> (i64, u64) {
    // SAFETY: rusage is plain data, valid when zeroed; getrusage writes
    // only into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return (0, 0);
    }
    (ru.ru_nvcsw as i64, (ru.ru_minflt as u64).saturating_add(ru.ru_majflt as u64))
}

/// `Rounds` steps of arithmetic that touch no memory and take no lock,
/// timed like the plugin's calls. Any of these calls that the thread's CPU
/// clock puts over 1 ms says how often the machine (not the code) makes a
/// call look that long: the benchmark's stall audit runs it next to the
/// plugin's workloads. Answers the arithmetic's result, so that it is done.
/// At most `MAX_CALIBRATION_ROUNDS` (about 0.1 ms): it runs on a normal
/// scheduler.
#[rustler::nif]
fn calibrate(rounds: u32) -> NifResult<u64> {
    if rounds > MAX_CALIBRATION_ROUNDS {
        return Err(rustler::Error::BadArg);
    }
    let _timed = timed(Nif::Calibration);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        // xorshift64: each step depends on the last, no shortcut
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    Ok(std::hint::black_box(x))
}

const MAX_CALIBRATION_ROUNDS: u32 = 100_000;

/// Reads `kib` KiB of memory of its own, one word per cache line, on the
/// calling thread, and answers their sum. The broker bench's stand-in for
/// the broker's own work between two hooks of one connection (parsing,
/// routing, other clients' processes), which leaves the plugin's code and
/// data out of the core's private caches (docs/BENCHMARKS.md, "Under the
/// broker's calling conditions"). At most `MAX_EVICT_KIB` (under 1 ms).
#[rustler::nif]
fn evict_caches(kib: u32) -> NifResult<u64> {
    if kib > MAX_EVICT_KIB {
        return Err(rustler::Error::BadArg);
    }
    static JUNK: Lazy<Box<[u64]>> = Lazy::new(|| vec![1u64; MAX_EVICT_KIB as usize * 128].into_boxed_slice());
    let words = &JUNK[..kib as usize * 128];
    Ok(std::hint::black_box(words.iter().step_by(8).fold(0u64, |sum, w| sum.wrapping_add(*w))))
}

const MAX_EVICT_KIB: u32 = 8 * 1024;

/// Zero the figures and record from now on (a diagnostic: each recorded
/// call costs four system calls).
#[rustler::nif]
fn call_times_start() -> Atom {
    TIMES.start();
    atoms::ok()
}

#[rustler::nif]
fn call_times_stop() -> Atom {
    TIMES.stop();
    atoms::ok()
}

/// `[{Name, Scheduler, #{calls, max_wall_ns, max_cpu_ns, over_wall, over_cpu,
/// blocked, over_wall_blocked, over_cpu_page_faults, total_wall_ns,
/// total_cpu_ns}}]` for every kind of
/// call made since `call_times_start/0` (see
/// `warden_core::calltime::CallFigures`; `over_*`: calls over 1 ms).
#[rustler::nif]
fn call_times(env: Env) -> Term {
    NAMES
        .iter()
        .enumerate()
        .filter_map(|(i, (name, sched))| {
            let f = TIMES.figures(i);
            let n = |v: u64| v.encode(env);
            let figures = encode::map_of(
                env,
                &[
                    ("calls", n(f.calls)),
                    ("max_wall_ns", n(f.max_wall_ns)),
                    ("max_cpu_ns", n(f.max_cpu_ns)),
                    ("over_wall", n(f.over_wall)),
                    ("over_cpu", n(f.over_cpu)),
                    ("blocked", n(f.blocked)),
                    ("over_wall_blocked", n(f.over_wall_blocked)),
                    ("over_cpu_page_faults", n(f.over_cpu_page_faults)),
                    ("total_wall_ns", n(f.total_wall_ns)),
                    ("total_cpu_ns", n(f.total_cpu_ns)),
                ],
            );
            (f.calls > 0).then(|| (*name, *sched, figures).encode(env))
        })
        .collect::<Vec<Term>>()
        .encode(env)
}

/// Does nothing: the floor of any NIF call, for the benchmark's baseline.
#[rustler::nif]
fn noop() -> Atom {
    atoms::ok()
}

/// Forces a panic inside a NIF. The boundary the hook NIFs go through
/// (`entry::call_with_stack_args`) catches it and raises an Erlang error
/// instead; tests use this to prove the VM survives.
fn debug_panic<'a>(_env: Env<'a>, []: [Term<'a>; 0]) -> NifResult<Term<'a>> {
    panic!("debug_panic called: testing the panic boundary")
}
crate::entry::stack_args_nif!("debug_panic", 0, debug_panic);
}
