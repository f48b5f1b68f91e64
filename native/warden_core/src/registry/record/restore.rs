//! A record rebuilt from the broker's own state after the registry was
//! emptied (a plugin restart): the session the broker holds, with the queue
//! that will send its next events.

use super::*;

impl Record {
    /// Make the broker's session of this key current: `online` or offline
    /// (a persistent session kept with its queue). Only on a key the hooks
    /// have not touched since the start (an empty record): what a hook said
    /// is newer than the broker's answer read before it. Returns whether
    /// it was restored.
    pub fn restore(&mut self, cx: &mut EventContext<'_>, queue: ProcId, online: bool, info: Option<ConnectInfo<'_>>) -> bool {
        if !self.is_empty() {
            return false;
        }
        let gen = cx.new_gen();
        self.start(cx, NewSession {
            gen,
            conn: None,
            queue: Some(queue),
            peer: info.and_then(|i| i.peer),
            username: info.and_then(|i| i.username).map_or(UsernameSource::Absent, UsernameSource::Borrowed),
            online,
            // an online session's on_register, if it comes, completes it
            registered: false,
            // an offline queue is a persistent session; an online one's
            // flag is not in the broker's answer: taken as persistent too
            clean: info.is_some_and(|i| i.clean_session),
            protocol: info.map_or(Protocol::Mqtt3, |i| i.protocol),
        });
        true
    }
}
