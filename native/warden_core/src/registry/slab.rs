//! Dense storage of a shard's records: fixed-size chunks, so growing never
//! moves records or doubles memory, and at most one chunk (plus one spare)
//! is partly empty. Slots are `u32` indexes; removal moves the last record
//! into the freed slot (the caller fixes that record's index entry).

const CHUNK_BITS: u32 = 8;
const CHUNK: usize = 1 << CHUNK_BITS;

pub(super) struct Slab<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Slab<T> {
    pub fn new() -> Slab<T> {
        Slab {
            chunks: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> u32 {
        self.len as u32
    }

    fn pos(i: u32) -> (usize, usize) {
        ((i >> CHUNK_BITS) as usize, i as usize & (CHUNK - 1))
    }

    pub fn get(&self, i: u32) -> &T {
        let (c, o) = Self::pos(i);
        &self.chunks[c][o]
    }

    pub fn get_mut(&mut self, i: u32) -> &mut T {
        let (c, o) = Self::pos(i);
        &mut self.chunks[c][o]
    }

    /// Append; returns the slot.
    pub fn push(&mut self, v: T) -> u32 {
        let i = u32::try_from(self.len).expect("more than 2^32 records in a shard");
        let c = self.len / CHUNK;
        if c == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[c].push(v);
        self.len += 1;
        i
    }

    /// Remove slot `i`, moving the last record into it. Returns the slot the
    /// moved record came from, if one moved.
    pub fn swap_remove(&mut self, i: u32) -> Option<u32> {
        let last = self.len - 1;
        let (lc, _) = Self::pos(last as u32);
        let moved = self.chunks[lc].pop().expect("swap_remove on an empty slab");
        self.len -= 1;
        let r = if (i as usize) < last {
            *self.get_mut(i) = moved;
            Some(last as u32)
        } else {
            drop(moved);
            None
        };
        // Keep one empty chunk as a spare against churn at a boundary.
        let needed = self.len.div_ceil(CHUNK);
        if self.chunks.len() > needed + 1 {
            self.chunks.truncate(needed + 1);
        }
        r
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub fn clear(&mut self) {
        self.chunks = Vec::new();
        self.len = 0;
    }

    /// Empty the slab but keep the first chunk (against churn at zero); the
    /// other chunks are returned, for the caller to drop outside its lock.
    pub fn clear_keeping_one(&mut self) -> Vec<Vec<T>> {
        let spare = self.chunks.split_off(self.chunks.len().min(1));
        self.chunks.iter_mut().for_each(Vec::clear);
        self.len = 0;
        spare
    }

    #[cfg(test)]
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}
