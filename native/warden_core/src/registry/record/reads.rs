//! What is read from a record without changing it: the operator API's
//! session view and the fields the listing filter looks at.

use ipnet::IpNet;

use super::*;
use crate::policy::Spellings;

impl Record {
    pub fn view(&self, st: &Store) -> Option<SessionView> {
        let state = self.state()?;
        let pending_generation = self.pending(st).map(|p| p.gen);
        let last_end = self.last_end_reason.map(|r| (r, self.last_end_at.get()));
        let common = |generation, peer, username: Option<&[u8]>, clean_session, protocol| SessionView {
            key: self.key(st),
            state,
            generation,
            peer,
            username: username.map(Box::from),
            clean_session,
            protocol,
            first_connect: self.first_connect.get(),
            last_connect: self.last_connect.get(),
            last_change: self.last_change.get(),
            connect_count: u64::from(self.connect_count),
            queue: None,
            conn: None,
            pending_generation,
            last_end,
        };
        if self.has_cur() {
            Some(SessionView {
                queue: self.queue(),
                conn: self.conn(),
                ..common(
                    self.gen,
                    self.peer(),
                    self.user(st),
                    self.has(CLEAN),
                    self.protocol(),
                )
            })
        } else {
            let p = self.pending(st)?;
            Some(SessionView {
                conn: Some(p.conn),
                ..common(p.gen, p.peer, self.pending_user(p, st), p.clean, p.protocol)
            })
        }
    }

    // The fields the list filter looks at, without building a view. Apart,
    // so that a network filter reads no bytes outside the record.

    /// Whether the peer is in `net`, as the policy's network rules match it.
    pub fn filter_peer_in(&self, st: &Store, net: &IpNet) -> bool {
        let peer = if self.has_cur() { self.peer_spellings() } else { self.pending(st).and_then(|p| p.peer).map(|p| Spellings::of(p.ip)) };
        peer.is_some_and(|p| p.in_net(net))
    }

    pub fn filter_user<'s>(&self, st: &'s Store) -> Option<&'s [u8]> {
        if self.has_cur() {
            self.user(st)
        } else {
            self.pending_user(self.pending(st)?, st)
        }
    }
}
