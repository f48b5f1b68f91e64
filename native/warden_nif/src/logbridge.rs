//! Bridges `tracing` events from the Rust core into OTP `logger`.
//!
//! A hook never waits on logging: events go into a bounded in-memory queue
//! (oldest dropped and counted when full) that the Erlang process
//! `vmq_warden_log` drains with `drain_logs/1` and hands to `logger`, so they
//! land in VerneMQ's log files with level, target and fields.
//!
//! Audit lines a client can cause at will (one per refused connect, target
//! `vmq_warden::audit`, level info) are rate-limited: at most
//! [`AUDIT_LINES_PER_SECOND`] pass each second, the rest are counted and
//! reported by one warning "N refusals not logged in the last second" once
//! that second is over (with the next audit event or the next drain,
//! whichever comes first). Warnings on the audit target (a ban starting)
//! are never suppressed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use rustler::{Encoder, Env, Term};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use warden_core::loglimit::WindowLimiter;

use crate::diagnostics::{self as timing, Nif};
use crate::encode;

const QUEUE_BOUND: usize = 4096;

/// The target of the firewall's audit events (warden_core::firewall).
pub const AUDIT_TARGET: &str = "vmq_warden::audit";
/// Audit lines (refusals) that reach the log per second; the rest are counted.
pub const AUDIT_LINES_PER_SECOND: u64 = 50;

pub struct LogLine {
    level: Level,
    target: String,
    message: String,
    fields: Vec<(String, String)>,
}

static QUEUE: Lazy<Mutex<VecDeque<LogLine>>> = Lazy::new(|| Mutex::new(VecDeque::with_capacity(256)));
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// 0 error .. 4 trace; events above it are not even formatted.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(2);
static AUDIT: Lazy<Mutex<WindowLimiter>> = Lazy::new(|| Mutex::new(WindowLimiter::new(AUDIT_LINES_PER_SECOND)));
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Whole seconds on a monotonic clock (the audit limiter's windows).
fn now_second() -> u64 {
    EPOCH.elapsed().as_secs() + 1
}

fn push(line: LogLine) {
    let mut q = QUEUE.lock();
    if q.len() >= QUEUE_BOUND {
        q.pop_front();
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    q.push_back(line);
}

fn audit_summary(suppressed: u64) -> LogLine {
    LogLine {
        level: Level::WARN,
        target: AUDIT_TARGET.to_string(),
        message: format!("{suppressed} refusals not logged in the last second"),
        fields: vec![
            ("suppressed".to_string(), suppressed.to_string()),
            ("limit_per_second".to_string(), AUDIT_LINES_PER_SECOND.to_string()),
        ],
    }
}

/// Info (and more verbose) events of the audit target are rate-limited.
fn rate_limited(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == AUDIT_TARGET && level_rank(meta.level()) >= level_rank(&Level::INFO)
}

fn level_rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

/// `log_level` of the app env: debug | info | notice | warning | error.
pub fn set_level(name: &str) {
    let rank = match name {
        "error" => 0,
        "warning" => 1,
        "debug" => 3,
        _ => 2,
    };
    MAX_LEVEL.store(rank, Ordering::Relaxed);
}

struct QueueLayer;

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(String, String)>,
}

/// Longest message or field value a log line keeps, in bytes: fields may
/// carry client input, and the queue holds up to QUEUE_BOUND lines.
pub const MAX_FIELD_BYTES: usize = 1024;

/// A `fmt::Write` that keeps the first MAX_FIELD_BYTES bytes and then stops
/// the formatting (no time spent on the rest).
struct Bounded(String);

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.0.len() > MAX_FIELD_BYTES {
            return Err(std::fmt::Error); // cut already
        }
        let room = MAX_FIELD_BYTES - self.0.len();
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&s[..end]);
        self.0.push_str("...");
        Err(std::fmt::Error)
    }
}

fn bounded(s: &str) -> String {
    let mut b = Bounded(String::new());
    let _ = b.write_str(s);
    b.0
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut b = Bounded(String::new());
        let _ = write!(b, "{value:?}");
        let s = b.0;
        if field.name() == "message" {
            self.message = s;
        } else {
            self.fields.push((field.name().to_string(), s));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = bounded(value);
        } else {
            self.fields.push((field.name().to_string(), bounded(value)));
        }
    }
}

impl<S: Subscriber> Layer<S> for QueueLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if level_rank(meta.level()) > MAX_LEVEL.load(Ordering::Relaxed) {
            return;
        }
        if rate_limited(meta) {
            let admit = AUDIT.lock().admit(now_second());
            if let Some(n) = admit.summary {
                push(audit_summary(n));
            }
            if !admit.pass {
                return;
            }
        }
        let mut c = Collect::default();
        event.record(&mut c);
        push(LogLine { level: *meta.level(), target: meta.target().to_string(), message: c.message, fields: c.fields });
    }
}

/// Called once per library load. A second global subscriber in the same
/// library image is refused by tracing; that is fine (the first one stays).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(QueueLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn level_atom(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// Up to `max` queued lines as `{Level, Target, Message, [{Field, Value}]}`,
/// plus how many were dropped since the last drain.
#[rustler::nif]
fn drain_logs(env: Env<'_>, max: usize) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    // A storm that has stopped still gets its summary line.
    let summary = AUDIT.lock().roll(now_second());
    if let Some(n) = summary {
        push(audit_summary(n));
    }
    let lines: Vec<LogLine> = {
        let mut q = QUEUE.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    };
    let terms: Vec<Term> = lines
        .iter()
        .map(|l| {
            let fields: Vec<Term> = l
                .fields
                .iter()
                .map(|(k, v)| (encode::bin(env, k.as_bytes()), encode::bin(env, v.as_bytes())).encode(env))
                .collect();
            (
                rustler::Atom::from_str(env, level_atom(&l.level)).map(|a| a.encode(env)).unwrap_or_else(|_| 0.encode(env)),
                encode::bin(env, l.target.as_bytes()),
                encode::bin(env, l.message.as_bytes()),
                fields,
            )
                .encode(env)
        })
        .collect();
    (terms, DROPPED.swap(0, Ordering::Relaxed)).encode(env)
}
