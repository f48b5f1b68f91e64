//! What the registry adds to the event stream (its hook events and one
//! event per ending, queued under the shard lock), and the endings the
//! plugin itself decides: an operator's kick, the credential lifetime.

use crate::events::{Detail, Event, EventKind, EventQueue};
use crate::types::{Millis, ProcId, SubscriberKey};

use super::record::{Record, Store};
use super::{EndReason, Ending, KeyRef, Registry};

/// A hook's own event: its kind, the process it came from, and the test its
/// outcome must pass (applied, not stale or duplicate).
pub(super) type HookEvent<R> = (EventKind, ProcId, fn(&R) -> bool);

/// What one registry call adds to the event stream besides its endings.
pub(super) struct Emit<R> {
    /// The hook's own event (registered, woke_up) and the process it came
    /// from, when its outcome passes the test.
    pub hook: Option<HookEvent<R>>,
}

impl<R> Emit<R> {
    pub const ENDINGS_ONLY: Emit<R> = Emit { hook: None };
}

impl Registry {
    /// The event queue the registry (and the auth path) feed.
    pub fn events(&self) -> &EventQueue {
        &self.events
    }

    /// Queue the events of one call: its endings, then the hook's own
    /// event. Under the shard lock, only when events are on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit<R>(&self, key: KeyRef<'_>, rec: &Record, st: &Store, r: &R, emit: &Emit<R>, endings: &[Ending], now: Millis) {
        for e in endings {
            self.events.push(ending_event(e, rec.successor_of(st, e.generation)));
        }
        if let Some((kind, proc, when)) = emit.hook {
            if when(r) {
                self.events.push(Event {
                    kind,
                    key: SubscriberKey::new(key.mountpoint, key.client_id),
                    session: rec.session_of(st, proc),
                    at: now,
                    peer: rec.current_peer(),
                    username: None,
                    detail: Detail::None,
                });
            }
        }
    }

    /// An operator kicked `key`'s current session (`generation`, or
    /// whichever is current): recorded as ending `Kicked` with who asked,
    /// in the history and the event stream. The record stays until the
    /// broker's offline/gone hook that the disconnect brings. False when
    /// the key has no such session.
    pub fn kick<'k>(&self, key: impl Into<KeyRef<'k>>, generation: Option<u64>, by: &str, now: Millis) -> bool {
        self.end_by_plugin(key.into(), generation, EndReason::Kicked, Some(by), now)
    }

    /// The broker cleaned up the queue of a session kicked with
    /// `do_cleanup` (it calls no hook then): the session is removed, its
    /// `kicked` ending already recorded. False when `generation` is not the
    /// key's current, kicked session (a client that came back since keeps
    /// its new session).
    pub fn kicked_and_cleaned<'k>(&self, key: impl Into<KeyRef<'k>>, generation: u64, now: Millis) -> bool {
        self.with_record(key.into(), now, Emit::ENDINGS_ONLY, |rec, _| rec.cleaned_up(generation)).0
    }

    /// The session outlived its user's `max_session_age`: like
    /// [`Registry::kick`], with the ending `ExpiredCredentials`.
    pub fn expire_credentials<'k>(&self, key: impl Into<KeyRef<'k>>, generation: Option<u64>, now: Millis) -> bool {
        self.end_by_plugin(key.into(), generation, EndReason::ExpiredCredentials, None, now)
    }

    fn end_by_plugin(&self, key: KeyRef<'_>, generation: Option<u64>, reason: EndReason, by: Option<&str>, now: Millis) -> bool {
        let h = self.hash_key(key);
        if self.shard_of_hash(h).inner.lock().find(h, key).is_none() {
            return false;
        }
        // carried, not written at once: `kicked_by` is added to the ending here
        self.with_record_in(key, None, now, Emit::ENDINGS_ONLY, false, |rec, cx| {
            let ended = rec.kick(cx, generation, reason);
            if ended {
                // the kick's ending is the last one (expired pending connects come before it)
                if let Some(e) = cx.endings.carried.last_mut() {
                    e.kicked_by = by.map(Box::from);
                }
            }
            ended
        })
        .0
    }
}

/// The event kind that records a session ending for `reason`.
pub fn ending_kind(reason: EndReason) -> EventKind {
    match reason {
        EndReason::TakenOver => EventKind::TakenOver,
        EndReason::Gone => EventKind::Gone,
        EndReason::Offline => EventKind::Offline,
        EndReason::Expired => EventKind::Expired,
        EndReason::Discarded => EventKind::Discarded,
        EndReason::Abandoned => EventKind::Abandoned,
        EndReason::Vanished => EventKind::Vanished,
        EndReason::Kicked => EventKind::Kicked,
        EndReason::ExpiredCredentials => EventKind::ExpiredCredentials,
    }
}

/// The event of a registry ending.
pub(super) fn ending_event(e: &Ending, by_session: Option<u64>) -> Event {
    Event {
        kind: ending_kind(e.reason),
        key: e.key.clone(),
        session: Some(e.generation),
        at: e.ended,
        peer: e.peer,
        username: e.username.clone(),
        detail: Detail::Ended {
            started: e.started,
            by_session: by_session.filter(|_| e.reason == EndReason::TakenOver),
            kicked_by: e.kicked_by.clone(),
        },
    }
}
