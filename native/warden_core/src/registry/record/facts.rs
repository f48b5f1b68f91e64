//! What the event stream reads from a record after a transition (session
//! numbers, peer), and the `kicked` ending an operator's kick records.

use super::*;

impl Record {
    /// The session number an event of process `proc` is about: the current
    /// session if `proc` is its connection or queue, else the pending
    /// connect of that connection; `None` for a wakeup no connect claimed yet.
    pub fn session_of(&self, st: &Store, proc: ProcId) -> Option<u64> {
        if self.has_cur() && (self.conn() == Some(proc) || self.queue() == Some(proc)) {
            return Some(self.gen);
        }
        let slot = self.find_pending(st, proc)?;
        st.pending.get(slot).map(|p| p.gen)
    }

    /// Peer of the current session (what the event of a registration or a
    /// wakeup shows).
    pub fn current_peer(&self) -> Option<Peer> {
        if self.has_cur() {
            self.peer()
        } else {
            None
        }
    }

    /// The session that replaces generation `ended`: the current one if it
    /// is newer, else the newest pending connect.
    pub fn successor_of(&self, st: &Store, ended: u64) -> Option<u64> {
        if self.has_cur() && self.gen > ended {
            return Some(self.gen);
        }
        self.pending(st).map(|p| p.gen).filter(|&g| g > ended)
    }

    /// The plugin disconnects the current session (generation `generation`,
    /// or whichever is current) for `reason` (`Kicked`,
    /// `ExpiredCredentials`): recorded as that ending; the session stays
    /// until the broker's own offline/gone hook for it, which follows the
    /// disconnect. False when there is no such session.
    pub fn kick(&mut self, cx: &mut EventContext<'_>, generation: Option<u64>, reason: EndReason) -> bool {
        if !self.has_cur() || generation.is_some_and(|g| g != self.gen) {
            return false;
        }
        self.end_cur(cx, reason);
        true
    }

    /// The broker removed the queue of kicked session `generation` at the
    /// plugin's request (`do_cleanup`): it stops the queue without a hook,
    /// online or offline, so the session goes here. The kick recorded its
    /// ending. False unless that session is current and was kicked.
    pub fn cleaned_up(&mut self, generation: u64) -> bool {
        if !self.has_cur() || self.gen != generation || self.last_end_reason != Some(EndReason::Kicked) {
            return false;
        }
        self.clear_cur();
        true
    }
}
