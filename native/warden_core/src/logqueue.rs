//! The queue between the core's `tracing` events and OTP's logger: a hook
//! never waits on logging. Lines go into a bounded queue (oldest dropped
//! and counted when full) that the Erlang process `vmq_warden_log` drains.
//!
//! Audit lines a client can cause at will (one per refused connect, target
//! [`AUDIT_TARGET`], level info) are rate-limited: at most
//! [`AUDIT_LINES_PER_SECOND`] pass each second, the rest are counted and
//! reported by one warning "N refusals not logged in the last second" once
//! that second is over (with the next audit event or the next drain,
//! whichever comes first). Warnings on the audit target (a ban starting)
//! are never suppressed. Fields may carry client input: each message and
//! value keeps at most [`MAX_FIELD_BYTES`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::Level;

use crate::loglimit::WindowLimiter;

/// The target of the firewall's audit events.
pub const AUDIT_TARGET: &str = "vmq_warden::audit";
/// Audit lines (refusals) that reach the log per second; the rest are counted.
pub const AUDIT_LINES_PER_SECOND: u64 = 50;
/// Longest message or field value a line keeps, in bytes.
pub const MAX_FIELD_BYTES: usize = 1024;
/// Lines the queue holds.
pub const QUEUE_BOUND: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub target: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// OTP logger's name of the level.
    pub fn level_name(&self) -> &'static str {
        match self.level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG | Level::TRACE => "debug",
        }
    }
}

pub struct LogQueue {
    lines: Mutex<VecDeque<LogLine>>,
    dropped: AtomicU64,
    /// 0 error .. 4 trace; events above it are not even formatted.
    max_level: AtomicU8,
    audit: Mutex<WindowLimiter>,
    /// The audit lines let through per second (for the summary line).
    audit_per_second: u64,
    bound: usize,
}

impl Default for LogQueue {
    fn default() -> Self {
        LogQueue::new(QUEUE_BOUND, AUDIT_LINES_PER_SECOND)
    }
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

impl LogQueue {
    pub fn new(bound: usize, audit_per_second: u64) -> LogQueue {
        LogQueue {
            lines: Mutex::new(VecDeque::with_capacity(bound.min(256))),
            dropped: AtomicU64::new(0),
            max_level: AtomicU8::new(2),
            audit: Mutex::new(WindowLimiter::new(audit_per_second)),
            audit_per_second,
            bound,
        }
    }

    /// `log_level` of the app env: debug | info | notice | warning | error.
    pub fn set_level(&self, name: &str) {
        let rank = match name {
            "error" => 0,
            "warning" => 1,
            "debug" => 3,
            _ => 2,
        };
        self.max_level.store(rank, Ordering::Relaxed);
    }

    /// Whether an event is to be recorded at second `now` (any monotonic
    /// clock): its level is logged, and an audit line is within the rate.
    pub fn admit(&self, level: &Level, target: &str, now: u64) -> bool {
        if level_rank(level) > self.max_level.load(Ordering::Relaxed) {
            return false;
        }
        if target != AUDIT_TARGET || level_rank(level) < level_rank(&Level::INFO) {
            return true;
        }
        let admit = self.audit.lock().admit(now);
        if let Some(n) = admit.summary {
            self.push(self.audit_summary(n));
        }
        admit.pass
    }

    pub fn push(&self, line: LogLine) {
        let mut q = self.lines.lock();
        if q.len() >= self.bound {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(line);
    }

    /// Up to `max` lines, and how many were dropped since the last drain. A
    /// storm of refusals that has stopped still gets its summary line.
    pub fn drain(&self, max: usize, now: u64) -> (Vec<LogLine>, u64) {
        let summary = self.audit.lock().roll(now);
        if let Some(n) = summary {
            self.push(self.audit_summary(n));
        }
        let lines = {
            let mut q = self.lines.lock();
            let n = max.min(q.len());
            q.drain(..n).collect()
        };
        (lines, self.dropped.swap(0, Ordering::Relaxed))
    }

    fn audit_summary(&self, suppressed: u64) -> LogLine {
        LogLine {
            level: Level::WARN,
            target: AUDIT_TARGET.to_string(),
            message: format!("{suppressed} refusals not logged in the last second"),
            fields: vec![
                ("suppressed".to_string(), suppressed.to_string()),
                ("limit_per_second".to_string(), self.audit_per_second.to_string()),
            ],
        }
    }
}

/// A `fmt::Write` that keeps the first `MAX_FIELD_BYTES` bytes and then
/// stops the formatting (no time spent on the rest).
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

/// An event's message and fields, each bounded (a `tracing` visitor).
#[derive(Default)]
pub struct LineFields {
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl Visit for LineFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut b = Bounded(String::new());
        let _ = write!(b, "{value:?}");
        if field.name() == "message" {
            self.message = b.0;
        } else {
            self.fields.push((field.name().to_string(), b.0));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str) -> LogLine {
        LogLine { level: Level::INFO, target: "vmq_warden".into(), message: message.into(), fields: vec![] }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_lines_and_counts_them() {
        let q = LogQueue::new(3, 50);
        (0..5).for_each(|i| q.push(line(&i.to_string())));
        let (lines, dropped) = q.drain(10, 1);
        assert_eq!(lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["2", "3", "4"]);
        assert_eq!(dropped, 2);
        assert_eq!(q.drain(10, 1), (vec![], 0));
    }

    #[test]
    fn levels_below_the_setting_are_not_admitted() {
        let q = LogQueue::default();
        assert!(q.admit(&Level::INFO, "vmq_warden", 1) && !q.admit(&Level::DEBUG, "vmq_warden", 1));
        q.set_level("warning");
        assert!(!q.admit(&Level::INFO, "vmq_warden", 1) && q.admit(&Level::WARN, "vmq_warden", 1));
        q.set_level("debug");
        assert!(q.admit(&Level::DEBUG, "vmq_warden", 1));
    }

    #[test]
    fn audit_lines_over_the_rate_are_summed_up_once_their_second_is_over() {
        let q = LogQueue::new(100, 3);
        let passed = (0..10).filter(|_| q.admit(&Level::INFO, AUDIT_TARGET, 7)).count();
        assert_eq!(passed, 3);
        // warnings on the audit target are never suppressed
        assert!(q.admit(&Level::WARN, AUDIT_TARGET, 7));
        let (lines, _) = q.drain(100, 8);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].level_name(), "warning");
        assert_eq!(lines[0].message, "7 refusals not logged in the last second");
        assert!(lines[0].fields.contains(&("limit_per_second".into(), "3".into())));
    }

    #[test]
    fn field_values_are_cut_at_the_bound_on_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES);
        let cut = bounded(&long);
        assert!(cut.ends_with("...") && cut.len() <= MAX_FIELD_BYTES + 3);
        assert!(cut.is_char_boundary(cut.len() - 3));
        assert_eq!(bounded("short"), "short");
    }
}
