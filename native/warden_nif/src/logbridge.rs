//! Bridges `tracing` events from the Rust core into OTP `logger`: a
//! `tracing` layer that puts each event into `warden_core::logqueue` (the
//! bounded queue and its audit rate limit live there), and `drain_logs/1`,
//! which the Erlang process `vmq_warden_log` calls to hand the lines to
//! `logger`, so they land in VerneMQ's log files with level, target and
//! fields.

use std::time::Instant;

use once_cell::sync::Lazy;
use rustler::{Encoder, Env, Term};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use warden_core::logqueue::{LineFields, LogLine, LogQueue};

use crate::diagnostics::{self as timing, Nif};
use crate::encode;

static QUEUE: Lazy<LogQueue> = Lazy::new(LogQueue::default);
static EPOCH: Lazy<Instant> = Lazy::new(Instant::now);

/// Whole seconds on a monotonic clock (the audit limiter's windows).
fn now_second() -> u64 {
    EPOCH.elapsed().as_secs() + 1
}

/// `log_level` of the app env: debug | info | notice | warning | error.
pub fn set_level(name: &str) {
    QUEUE.set_level(name);
}

struct QueueLayer;

impl<S: Subscriber> Layer<S> for QueueLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !QUEUE.admit(meta.level(), meta.target(), now_second()) {
            return;
        }
        let mut c = LineFields::default();
        event.record(&mut c);
        QUEUE.push(LogLine { level: *meta.level(), target: meta.target().to_string(), message: c.message, fields: c.fields });
    }
}

/// Called once per library load. A second global subscriber in the same
/// library image is refused by tracing; that is fine (the first one stays).
pub fn install() {
    let subscriber = tracing_subscriber::registry().with(QueueLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Up to `max` queued lines as `{Level, Target, Message, [{Field, Value}]}`,
/// plus how many were dropped since the last drain.
#[rustler::nif]
fn drain_logs(env: Env<'_>, max: usize) -> Term<'_> {
    let _timed = timing::timed(Nif::Admin);
    let (lines, dropped) = QUEUE.drain(max, now_second());
    let terms: Vec<Term> = lines
        .iter()
        .map(|l| {
            let fields: Vec<Term> = l
                .fields
                .iter()
                .map(|(k, v)| (encode::bin(env, k.as_bytes()), encode::bin(env, v.as_bytes())).encode(env))
                .collect();
            (
                rustler::Atom::from_str(env, l.level_name()).map(|a| a.encode(env)).unwrap_or_else(|_| 0.encode(env)),
                encode::bin(env, l.target.as_bytes()),
                encode::bin(env, l.message.as_bytes()),
                fields,
            )
                .encode(env)
        })
        .collect();
    (terms, dropped).encode(env)
}
