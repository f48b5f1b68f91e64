//! A record's pending connects: a list in the shard's table, newest first,
//! with the unclaimed wakeup kept on its head.

use super::*;

impl Record {
    /// Give the record's key bytes and pending connects back to the store:
    /// it is leaving the shard.
    pub fn release(&mut self, st: &mut Store) {
        while self.pending != NONE {
            let p = self.take_pending(st, self.pending);
            p.username.free(&mut st.bytes);
        }
        st.bytes.free(std::mem::replace(&mut self.kb, Bytes::EMPTY));
    }
    /// The newest pending connect.
    pub(super) fn pending<'s>(&self, st: &'s Store) -> Option<&'s Pending> {
        st.pending.get(self.pending)
    }
    /// Slots of the pending connects, newest first.
    pub(super) fn pending_slots(&self, st: &Store) -> ([u32; MAX_PENDING], usize) {
        let mut out = [NONE; MAX_PENDING];
        let mut n = 0;
        let mut at = self.pending;
        while let Some(p) = st.pending.get(at) {
            if n == MAX_PENDING {
                break;
            }
            out[n] = at;
            n += 1;
            at = p.next;
        }
        (out, n)
    }
    pub(super) fn find_pending(&self, st: &Store, conn: ProcId) -> Option<u32> {
        let (slots, n) = self.pending_slots(st);
        slots[..n].iter().copied().find(|&i| st.pending.get(i).is_some_and(|p| p.conn == conn))
    }
    /// The pending connect that registered last, if any registered.
    pub(super) fn latest_registered(&self, st: &Store) -> Option<u32> {
        let (slots, n) = self.pending_slots(st);
        slots[..n]
            .iter()
            .copied()
            .filter_map(|i| st.pending.get(i)?.registered.map(|order| (order, i)))
            .max()
            .map(|(_, i)| i)
    }
    /// A pending connect's username.
    pub(super) fn pending_user<'s>(&self, p: &Pending, st: &'s Store) -> Option<&'s [u8]> {
        match &p.username {
            PendingUser::Absent => None,
            PendingUser::Kept => self.kept_user(&st.bytes),
            PendingUser::Own(b) => Some(st.bytes.get(b)),
        }
    }
    /// How a new pending connect keeps `username`: as the record's own
    /// when it is the one kept after the key, else in a copy.
    pub(super) fn new_pending_user(&self, bytes: &mut BytePool, username: Option<&[u8]>) -> PendingUser {
        match username {
            None => PendingUser::Absent,
            Some(u) if self.kept_user(bytes) == Some(u) => PendingUser::Kept,
            Some(u) => PendingUser::Own(bytes.alloc(&[u])),
        }
    }
    /// Before the record keeps another name: the pending connects that
    /// share the old one get copies of it.
    pub(super) fn unshare_kept_user(&self, st: &mut Store) {
        let (slots, n) = self.pending_slots(st);
        let sharing = |st: &Store, i: u32| matches!(st.pending.get(i).map(|p| &p.username), Some(PendingUser::Kept));
        if !slots[..n].iter().any(|&i| sharing(st, i)) {
            return;
        }
        let name = self.kept_user(&st.bytes).map(<[u8]>::to_vec).unwrap_or_default();
        for &i in &slots[..n] {
            if sharing(st, i) {
                let own = PendingUser::Own(st.bytes.alloc(&[&name]));
                if let Some(p) = st.pending.get_mut(i) {
                    p.username = own;
                }
            }
        }
    }
    pub(super) fn woken(&self, st: &Store) -> Option<ProcId> {
        self.pending(st).and_then(|p| p.woken)
    }
    pub(super) fn set_woken(&mut self, st: &mut Store, q: Option<ProcId>) {
        if let Some(head) = st.pending.get_mut(self.pending) {
            head.woken = q;
        }
    }
    /// Unlink the pending connect in `slot` (its username is still the
    /// store's: the caller frees it). The head's woken queue stays with the
    /// list.
    pub(super) fn take_pending(&mut self, st: &mut Store, slot: u32) -> Pending {
        let (slots, n) = self.pending_slots(st);
        let at = slots[..n].iter().position(|&i| i == slot).expect("not a pending connect of this record");
        let mut p = st.pending.take(slot).expect("pending slot");
        if at == 0 {
            self.pending = p.next;
            if let Some(head) = st.pending.get_mut(self.pending) {
                head.woken = p.woken;
            }
        } else if let Some(prev) = st.pending.get_mut(slots[at - 1]) {
            prev.next = p.next;
        }
        p.next = NONE;
        p.woken = None;
        p
    }
    /// A new pending connect at the head of the list; the oldest gives way
    /// (`Abandoned`) when `MAX_PENDING` wait already.
    pub(super) fn push_pending(&mut self, cx: &mut EventContext<'_>, conn: ProcId, info: ConnectInfo<'_>, registered: bool) -> u64 {
        let (slots, n) = self.pending_slots(cx.st);
        if n == MAX_PENDING {
            self.abandon_pending(cx, slots[n - 1]);
        }
        let gen = cx.new_gen();
        let username = self.new_pending_user(&mut cx.st.bytes, info.username);
        let woken = self.woken(cx.st);
        self.set_woken(cx.st, None);
        self.pending = cx.st.pending.insert(Pending {
            gen,
            conn,
            created: cx.now,
            peer: info.peer,
            username,
            clean: info.clean_session,
            protocol: info.protocol,
            registered: registered.then_some(gen),
            next: self.pending,
            woken,
        });
        self.set_times_change(cx.now);
        gen
    }
}
