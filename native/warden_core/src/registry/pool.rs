//! A shard's own storage for what its records keep outside themselves: the
//! key and username bytes ([`BytePool`]) and the pending connects
//! ([`Table`]).
//!
//! Why not the heap: glibc keeps small freed blocks in its fastbins, and
//! after a mass disconnect (hundreds of thousands of record keys freed) the
//! next large request consolidates all of them inside that one call. The
//! benchmark's stall audit measured calls of up to 17 ms of CPU on a normal
//! scheduler from this (docs/BENCHMARKS.md, "Stalls"). Here a freed block
//! goes on a free list of its size in the shard and is reused by the
//! shard's next allocation of that size. Memory goes back to malloc only
//! when the shard holds nothing, from the periodic sweep on a dirty
//! scheduler ([`BytePool::trim`]): freeing a shard's blocks from a hook
//! measured up to 3.7 ms (glibc returning them to the OS).
//!
//! Handles are plain indexes read with bounds checks: a stale handle can
//! read wrong bytes, never memory outside the pool. Every method runs under
//! the shard lock.

use super::slab::Slab;

/// "No block" in a free list, and no pending connect in a record.
pub(super) const NONE: u32 = u32::MAX;

/// Allocation granularity of small byte blocks.
const UNIT: usize = 8;
/// Units per block (16 KiB): 64 shards keep at most 1 MiB partly used.
const BLOCK_UNITS: u32 = 2048;
/// Byte strings up to this many units live in blocks; longer ones (client
/// ids and usernames can be up to 64 KiB) get their own allocation.
const SMALL_UNITS: usize = 64;
/// Marks a handle of a long byte string (an index into `BytePool::big`).
const BIG: u32 = 1 << 31;

/// Bytes held in a [`BytePool`]. Not `Clone`: each is freed exactly once,
/// through [`BytePool::free`]. Dropping one without freeing it only keeps its
/// space from reuse until the pool is emptied.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Bytes {
    /// First unit of a small block, or `BIG | index`.
    at: u32,
    len: u32,
}

impl Bytes {
    pub const EMPTY: Bytes = Bytes { at: NONE, len: 0 };

    pub fn len(&self) -> usize {
        self.len as usize
    }
}

/// Segregated free lists over 16 KiB blocks, one list per multiple of 8
/// bytes up to 512 bytes.
pub(super) struct BytePool {
    blocks: Vec<Box<[u8]>>,
    /// First unused unit of the last block.
    bump: u32,
    /// Head of each size's free list (index = units - 1). A free block's
    /// first 4 bytes hold the next block of its list.
    free: [u32; SMALL_UNITS],
    big: Vec<Option<Box<[u8]>>>,
    big_free: Vec<u32>,
    /// Allocations not yet freed: at 0, `trim` lets go of the memory.
    live: usize,
    /// Allocations made, for tests.
    #[cfg(test)]
    pub allocs: usize,
}

impl BytePool {
    pub fn new() -> BytePool {
        BytePool {
            blocks: Vec::new(),
            bump: 0,
            free: [NONE; SMALL_UNITS],
            big: Vec::new(),
            big_free: Vec::new(),
            live: 0,
            #[cfg(test)]
            allocs: 0,
        }
    }

    /// A copy of `parts`, one after the other.
    pub fn alloc(&mut self, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return Bytes::EMPTY;
        }
        let len32 = u32::try_from(len).expect("record bytes longer than 4 GiB");
        let units = len.div_ceil(UNIT);
        let at = if units <= SMALL_UNITS {
            self.alloc_small(units)
        } else {
            self.alloc_big(len)
        };
        self.live += 1;
        #[cfg(test)]
        {
            self.allocs += 1;
        }
        let b = Bytes { at, len: len32 };
        let dst = self.slice_mut(&b);
        let mut o = 0;
        for p in parts {
            dst[o..o + p.len()].copy_from_slice(p);
            o += p.len();
        }
        b
    }

    pub fn get(&self, b: &Bytes) -> &[u8] {
        let len = b.len as usize;
        if len == 0 {
            &[]
        } else if b.at & BIG != 0 {
            &self.big[(b.at & !BIG) as usize].as_deref().expect("freed bytes read")[..len]
        } else {
            let (block, off) = Self::place(b.at);
            &self.blocks[block][off..off + len]
        }
    }

    pub fn free(&mut self, b: Bytes) {
        if b.len == 0 {
            return;
        }
        if b.at & BIG != 0 {
            let i = b.at & !BIG;
            self.big[i as usize] = None;
            self.big_free.push(i);
        } else {
            self.push_free(b.at, (b.len as usize).div_ceil(UNIT));
        }
        self.live -= 1;
    }

    /// Bytes held from malloc (blocks and long strings), for tests.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.blocks.len() * BLOCK_UNITS as usize * UNIT + self.big.iter().flatten().map(|b| b.len()).sum::<usize>()
    }

    fn place(at: u32) -> (usize, usize) {
        ((at / BLOCK_UNITS) as usize, (at % BLOCK_UNITS) as usize * UNIT)
    }

    fn slice_mut(&mut self, b: &Bytes) -> &mut [u8] {
        let len = b.len as usize;
        if b.at & BIG != 0 {
            &mut self.big[(b.at & !BIG) as usize].as_deref_mut().expect("fresh long bytes")[..len]
        } else {
            let (block, off) = Self::place(b.at);
            &mut self.blocks[block][off..off + len]
        }
    }

    fn alloc_small(&mut self, units: usize) -> u32 {
        let head = self.free[units - 1];
        if head != NONE {
            let (block, off) = Self::place(head);
            let next = &self.blocks[block][off..off + 4];
            self.free[units - 1] = u32::from_le_bytes([next[0], next[1], next[2], next[3]]);
            return head;
        }
        let units = units as u32;
        if self.blocks.is_empty() || self.bump + units > BLOCK_UNITS {
            if let Some(last) = self.blocks.len().checked_sub(1) {
                // The full block's tail (shorter than this request) goes on
                // the free list of its own size.
                let rest = BLOCK_UNITS - self.bump;
                if rest > 0 {
                    self.push_free(last as u32 * BLOCK_UNITS + self.bump, rest as usize);
                }
            }
            assert!(self.blocks.len() < (BIG / BLOCK_UNITS) as usize, "byte pool of a shard over 16 GiB");
            self.blocks.push(vec![0u8; BLOCK_UNITS as usize * UNIT].into_boxed_slice());
            self.bump = 0;
        }
        let at = (self.blocks.len() as u32 - 1) * BLOCK_UNITS + self.bump;
        self.bump += units;
        at
    }

    fn alloc_big(&mut self, len: usize) -> u32 {
        let data = vec![0u8; len].into_boxed_slice();
        let i = match self.big_free.pop() {
            Some(i) => {
                self.big[i as usize] = Some(data);
                i
            }
            None => {
                self.big.push(Some(data));
                u32::try_from(self.big.len() - 1).ok().filter(|i| i & BIG == 0).expect("too many long byte strings in a shard")
            }
        };
        BIG | i
    }

    fn push_free(&mut self, at: u32, units: usize) {
        let next = self.free[units - 1];
        let (block, off) = Self::place(at);
        self.blocks[block][off..off + 4].copy_from_slice(&next.to_le_bytes());
        self.free[units - 1] = at;
    }

    /// If nothing is allocated: all blocks but one (kept against churn at
    /// zero), returned for the caller to drop after the shard lock.
    pub fn trim(&mut self) -> Vec<Box<[u8]>> {
        if self.live > 0 || self.blocks.len() <= 1 && self.big.is_empty() {
            return Vec::new();
        }
        let spare = self.blocks.split_off(self.blocks.len().min(1));
        self.bump = 0;
        self.free = [NONE; SMALL_UNITS];
        self.big = Vec::new();
        self.big_free = Vec::new();
        spare
    }
}

/// Slots for values of one type, in the chunks of a [`Slab`] (they never
/// move), with freed slots reused first. Indexes are `u32`; [`NONE`] is
/// never one.
pub(super) struct Table<T> {
    slots: Slab<Slot<T>>,
    /// First free slot, [`NONE`] if none.
    free: u32,
    live: u32,
}

pub(super) enum Slot<T> {
    Free(u32),
    Used(T),
}

impl<T> Table<T> {
    pub fn new() -> Table<T> {
        Table {
            slots: Slab::new(),
            free: NONE,
            live: 0,
        }
    }

    pub fn insert(&mut self, v: T) -> u32 {
        self.live += 1;
        if self.free != NONE {
            let i = self.free;
            match std::mem::replace(self.slots.get_mut(i), Slot::Used(v)) {
                Slot::Free(next) => self.free = next,
                Slot::Used(_) => unreachable!("a used slot on the free list"),
            }
            return i;
        }
        let i = self.slots.push(Slot::Used(v));
        assert!(i != NONE, "more than 2^32 - 1 slots in a table");
        i
    }

    pub fn get(&self, i: u32) -> Option<&T> {
        if i >= self.slots.len() {
            return None;
        }
        match self.slots.get(i) {
            Slot::Used(v) => Some(v),
            Slot::Free(_) => None,
        }
    }

    pub fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        if i >= self.slots.len() {
            return None;
        }
        match self.slots.get_mut(i) {
            Slot::Used(v) => Some(v),
            Slot::Free(_) => None,
        }
    }

    pub fn take(&mut self, i: u32) -> Option<T> {
        if i >= self.slots.len() {
            return None;
        }
        let slot = self.slots.get_mut(i);
        if let Slot::Free(_) = slot {
            return None;
        }
        let Slot::Used(v) = std::mem::replace(slot, Slot::Free(self.free)) else {
            unreachable!()
        };
        self.free = i;
        self.live -= 1;
        Some(v)
    }

    /// If the table is empty: all chunks but the first (kept against churn
    /// at zero), returned for the caller to drop after the shard lock.
    pub fn trim(&mut self) -> Vec<Vec<Slot<T>>> {
        if self.live > 0 || self.free == NONE {
            return Vec::new();
        }
        self.free = NONE;
        self.slots.clear_keeping_one()
    }

    #[cfg(test)]
    pub fn chunk_count(&self) -> usize {
        self.slots.chunk_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_reuse_freed_space_of_their_size() {
        let mut p = BytePool::new();
        let a = p.alloc(&[b"mp", b"client-1"]);
        let b = p.alloc(&[b"another client id, 29 bytes.."]);
        assert_eq!(p.get(&a), b"mpclient-1");
        assert_eq!(p.get(&b), b"another client id, 29 bytes..");
        let a_at = a.at;
        p.free(a);
        // Same size class (10 bytes -> 2 units): the freed block is reused.
        let c = p.alloc(&[b"0123456789"]);
        assert_eq!(c.at, a_at);
        assert_eq!(p.get(&c), b"0123456789");
        assert_eq!(p.get(&b), b"another client id, 29 bytes..");
        // Another size does not take it.
        p.free(c);
        let d = p.alloc(&[&[7u8; 40]]);
        assert_ne!(d.at, a_at);
        assert_eq!(p.get(&d), &[7u8; 40]);
    }

    #[test]
    fn empty_and_long_byte_strings() {
        let mut p = BytePool::new();
        let e = p.alloc(&[b"", b""]);
        assert_eq!(e, Bytes::EMPTY);
        assert_eq!(p.get(&e), b"");
        let long = vec![9u8; 70_000];
        let l = p.alloc(&[&long[..10], &long[10..]]);
        assert_eq!(p.get(&l), &long[..]);
        let s = p.alloc(&[b"short"]);
        p.free(l);
        let l2 = p.alloc(&[&[1u8; 600]]);
        assert_eq!(p.get(&l2), &[1u8; 600]);
        assert_eq!(p.get(&s), b"short");
        p.free(e);
        p.free(l2);
        p.free(s);
        drop(p.trim());
        assert_eq!(p.held(), BLOCK_UNITS as usize * UNIT, "one block kept, long strings freed");
    }

    #[test]
    fn many_blocks_every_size_then_all_freed() {
        let mut p = BytePool::new();
        let mut held = Vec::new();
        for i in 0..20_000usize {
            let len = 1 + i % 300;
            let fill = (i % 251) as u8;
            held.push((p.alloc(&[&vec![fill; len]]), fill, len));
        }
        // Free every other one, allocate again, check every live string.
        let mut kept = Vec::new();
        for (n, h) in held.into_iter().enumerate() {
            if n % 2 == 0 {
                p.free(h.0);
            } else {
                kept.push(h);
            }
        }
        for i in 0..10_000usize {
            let len = 1 + (i * 7) % 300;
            kept.push((p.alloc(&[&vec![0xAA; len]]), 0xAA, len));
        }
        for (b, fill, len) in &kept {
            assert_eq!(p.get(b), &vec![*fill; *len][..]);
        }
        assert!(p.held() > BLOCK_UNITS as usize * UNIT);
        let last = kept.pop().unwrap();
        for (b, _, _) in kept {
            p.free(b);
        }
        assert!(p.trim().is_empty(), "nothing trimmed while one string is live");
        assert_eq!(p.get(&last.0), &vec![last.1; last.2][..]);
        p.free(last.0);
        assert!(!p.trim().is_empty());
        assert_eq!(p.held(), BLOCK_UNITS as usize * UNIT);
        let again = p.alloc(&[b"after release"]);
        assert_eq!(p.get(&again), b"after release");
    }

    #[test]
    fn table_reuses_slots_and_trims_when_empty() {
        let mut t = Table::new();
        let ids: Vec<u32> = (0..1000u32).map(|v| t.insert(v)).collect();
        assert_eq!(t.chunk_count(), 1000usize.div_ceil(256));
        assert_eq!(t.take(ids[10]), Some(10));
        assert_eq!(t.take(ids[10]), None, "taken twice");
        assert_eq!(t.get(ids[10]), None);
        assert_eq!(t.insert(5000), ids[10], "freed slot reused first");
        assert_eq!(t.get(ids[10]), Some(&5000));
        assert_eq!(t.get(ids[999]), Some(&999));
        assert_eq!(t.get(NONE), None);
        for (n, &i) in ids.iter().enumerate() {
            let want = if n == 10 { 5000 } else { n as u32 };
            assert_eq!(t.take(i), Some(want));
            if n == 500 {
                assert!(t.trim().is_empty(), "nothing trimmed while slots are used");
            }
        }
        assert_eq!(t.chunk_count(), 1000usize.div_ceil(256), "kept until trimmed");
        assert_eq!(t.trim().len(), 1000usize.div_ceil(256) - 1);
        assert_eq!(t.chunk_count(), 1);
        assert_eq!(t.insert(1), 0, "numbering starts over");
    }
}
