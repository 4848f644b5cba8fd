//! A flat table that generations share, whose next generation costs the writes that
//! make it (and those of the generations it follows), not a copy of the table.
//!
//! The tables a lookup reads (the LPM first levels and nodes, the identity
//! classifier's per-class and binding tables) stay one contiguous slice:
//! [`crate::chunked`] would share them in chunks, but a chunk pointer is one more
//! dependent load per read, which made lookups measurably slower. A generation's
//! table is an `Arc<[T]>` (with room to grow past `len`), shared by clones; the
//! first write to a shared table gives the writer a buffer of its own, and that
//! buffer is usually not a copy:
//!
//! - the tables of one lineage (a table and the clones and writes made from it)
//!   share a *pool* of retired buffers: a content that a write moves away from is
//!   retired into it, numbered, and stays there (at most [`DEPTH`] of them, of
//!   which at most [`FREE`] read by nothing else) after the generations that read
//!   it are dropped;
//! - each table keeps the writes that led to it, one segment per content it moved
//!   away from (at most [`DEPTH`] segments, and no more writes in all than an
//!   eighth of the table: a replay that long costs about what a copy does);
//! - a write to a shared table takes the newest retired buffer that nothing but the
//!   pool holds any more and that one of its segments starts from, replays the
//!   segments from there (the buffer now holds this content), and writes.
//!
//! So in a chain of generations where a reader holds a few of the latest (the
//! daemon: the workers' generation and eight retired ones kept to name flow
//! records), a change costs its own writes and the replay of the last few
//! changes', a few buffers take turns, and memory holds at most [`FREE`] buffers
//! beyond the generations alive. Otherwise (every retired buffer still read,
//! a log given up) the write copies the table, as [`Arc::make_mut`] would. A
//! content's number is its buffer's pool entry, and a buffer in the pool is never
//! written, so a replay starts only from exactly the content its writes were made
//! against.
//!
//! Reads never lock; the pool's lock is taken only by a write to a shared table
//! (control paths). The slow twin is a plain [`Vec`] (property test below: random
//! writes, pushes, clones, drops and snapshots, every table read back and compared).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Content numbers; 0 is "no number".
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

fn fresh_tag() -> u64 {
    NEXT_TAG.fetch_add(1, Ordering::Relaxed)
}

/// Retired buffers a lineage keeps (and segments of writes a table keeps): more than
/// the generations a reader holds at once (the daemon keeps the current one and
/// eight retired ones to name flow records), so that the oldest kept is free.
const DEPTH: usize = 12;

/// Retired buffers that nothing but the pool holds, kept for reuse.
const FREE: usize = 2;

/// Writes `(i, x)`: set entry `i`, or append when `i` is the length.
type Writes<T> = Vec<(u32, T)>;

/// The writes that turned the content numbered `from` into the next one.
#[derive(Debug)]
struct Segment<T> {
    from: u64,
    writes: Writes<T>,
}

/// A lineage's retired buffers, oldest first: content number, entries, length.
type Pool<T> = Vec<(u64, Arc<[T]>, usize)>;

/// A flat table of `T`; see the module doc.
pub(crate) struct Flat<T> {
    /// Entries `..len` are the table; the rest is room to grow (some earlier or
    /// pushed value, never read as an entry).
    buf: Arc<[T]>,
    len: usize,
    /// Earlier segments, oldest first: each turns its `from` into the next one's,
    /// the last into `base`.
    history: Vec<Arc<Segment<T>>>,
    /// The number of the content `log` turns into this one; 0 when there is none
    /// (and then no history either).
    base: u64,
    /// Writes since `base`.
    log: Writes<T>,
    pool: Arc<Mutex<Pool<T>>>,
}

impl<T: Clone> Clone for Flat<T> {
    fn clone(&self) -> Self {
        Flat {
            buf: Arc::clone(&self.buf),
            len: self.len,
            history: self.history.clone(),
            base: self.base,
            log: self.log.clone(),
            pool: Arc::clone(&self.pool),
        }
    }
}

impl<T> std::fmt::Debug for Flat<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flat")
            .field("len", &self.len)
            .field("capacity", &self.buf.len())
            .field("history", &self.history.len())
            .field("log", &self.log.len())
            .finish()
    }
}

impl<T: Copy> Default for Flat<T> {
    fn default() -> Self {
        Flat::from_vec(Vec::new())
    }
}

impl<T: Copy> std::ops::Deref for Flat<T> {
    type Target = [T];

    /// The table (what a `Vec` of the same entries would give).
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // `len <= buf.len()` always; `get` keeps reads free of a panic path.
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// `(i, x)` applied to `buf[..*len]`: set, or append when `i == *len`; `false` when
/// it fits neither (the writes are not of this content, or the buffer lacks room).
fn apply<T: Copy>(buf: &mut [T], len: &mut usize, (i, x): (u32, T)) -> bool {
    let i = i as usize;
    match i.cmp(len) {
        std::cmp::Ordering::Less => buf[i] = x,
        std::cmp::Ordering::Equal if i < buf.len() => {
            buf[i] = x;
            *len += 1;
        }
        _ => return false,
    }
    true
}

impl<T: Copy> Flat<T> {
    /// The entries of `v`, in a lineage of their own.
    pub(crate) fn from_vec(v: Vec<T>) -> Self {
        Flat {
            len: v.len(),
            buf: v.into(),
            history: Vec::new(),
            base: 0,
            log: Vec::new(),
            pool: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Entry `i` set to `x`; `false` (nothing changed) when `i >= len`.
    pub(crate) fn set(&mut self, i: usize, x: T) -> bool {
        if i >= self.len {
            return false;
        }
        self.writable(0, x)[i] = x;
        self.logged(i, x);
        true
    }

    /// Appends `x`.
    pub(crate) fn push(&mut self, x: T) {
        self.extend_fill(1, x);
    }

    /// Appends `n` copies of `x`.
    pub(crate) fn extend_fill(&mut self, n: usize, x: T) {
        let at = self.len;
        self.writable(n, x)[at..at + n].fill(x);
        self.len += n;
        for i in at..at + n {
            self.logged(i, x);
        }
    }

    /// Whether `self` and `o` read the same buffer.
    #[cfg(test)]
    pub(crate) fn shares_buffer(&self, o: &Flat<T>) -> bool {
        Arc::ptr_eq(&self.buf, &o.buf)
    }

    /// Bytes of the buffer (a clone shares it; the pool's retired buffers are the
    /// earlier generations').
    pub(crate) fn bytes(&self) -> usize {
        self.buf.len() * size_of::<T>()
    }

    /// Writes a replay may have to make: past an eighth of the table they cost about
    /// what a copy does.
    fn replay_cap(&self) -> usize {
        64.max(self.len / 8)
    }

    /// Records the write of `x` at `i` when this table can be replayed from a base.
    fn logged(&mut self, i: usize, x: T) {
        if self.base == 0 {
            return;
        }
        if i > u32::MAX as usize {
            self.forget();
            return;
        }
        self.log.push((i as u32, x));
        self.trim();
    }

    /// Drops the oldest segments while the writes kept exceed the cap, and everything
    /// when the open log alone does.
    fn trim(&mut self) {
        let cap = self.replay_cap();
        let mut total = self.log.len() + self.history.iter().map(|s| s.writes.len()).sum::<usize>();
        let mut drop = 0;
        while total > cap && drop < self.history.len() {
            total -= self.history[drop].writes.len();
            drop += 1;
        }
        self.history.drain(..drop);
        if total > cap {
            self.forget();
        }
    }

    /// No replay possible into this content any more.
    fn forget(&mut self) {
        self.base = 0;
        self.history = Vec::new();
        self.log = Vec::new();
    }

    /// The whole buffer, this table's own, with room for `extra` more entries (`fill`
    /// pads a grown buffer): written in place when no clone or pool shares it, else a
    /// retired buffer brought up to this content, else a copy.
    fn writable(&mut self, extra: usize, fill: T) -> &mut [T] {
        let need = self.len + extra;
        if Arc::get_mut(&mut self.buf).is_some_and(|b| b.len() >= need) {
            return Arc::get_mut(&mut self.buf).unwrap_or_default();
        }
        if Arc::get_mut(&mut self.buf).is_some() {
            // Ours, too small: a larger copy of the same content (the writes kept
            // still lead to it).
            self.buf = self.copy(need, fill);
            return Arc::get_mut(&mut self.buf).unwrap_or_default();
        }
        // Shared: this content retires into the pool (numbered), its open log becomes
        // a segment, and the newest retired buffer that only the pool holds and that
        // the segments lead from is brought up to this content and becomes ours.
        if self.base != 0 {
            let writes = std::mem::take(&mut self.log);
            self.history.push(Arc::new(Segment {
                from: self.base,
                writes,
            }));
            if self.history.len() > DEPTH {
                self.history.remove(0);
            }
        } else {
            self.forget();
        }
        let mut reused = None;
        // A content's number is the pool's entry for its buffer (while the pool holds
        // it, the buffer is not written, nor freed and its address reused).
        let mut tag = 0;
        if let Ok(mut pool) = self.pool.lock() {
            if let Some(k) = pool.iter().position(|(_, b, _)| Arc::ptr_eq(b, &self.buf)) {
                // Retired before by a clone of this content: one entry, its number.
                let e = pool.remove(k);
                tag = e.0;
                pool.push(e);
            } else {
                tag = fresh_tag();
                pool.push((tag, Arc::clone(&self.buf), self.len));
                if pool.len() > DEPTH {
                    pool.remove(0);
                }
            }
            // Buffers nothing reads any more beyond the newest [`FREE`] are dropped:
            // a chain of generations needs one (memory holds what the readers hold,
            // plus these).
            let mut free = 0;
            for at in (0..pool.len()).rev() {
                if Arc::strong_count(&pool[at].1) == 1 {
                    free += 1;
                    if free > FREE {
                        pool.remove(at);
                    }
                }
            }
            for (k, seg) in self.history.iter().enumerate().rev() {
                let Some(at) = pool.iter().position(|(t, _, _)| *t == seg.from) else {
                    continue;
                };
                let (_, b, n) = &mut pool[at];
                let mut n = *n;
                let Some(buf) = Arc::get_mut(b).filter(|buf| buf.len() >= need) else {
                    // Still read (or too small): an older one may be free.
                    continue;
                };
                let ok = self.history[k..]
                    .iter()
                    .flat_map(|s| &s.writes)
                    .all(|&w| apply(buf, &mut n, w));
                let (_, b, _) = pool.remove(at);
                if ok && n == self.len {
                    reused = Some(b);
                }
                break;
            }
        }
        if tag == 0 {
            tag = fresh_tag();
        }
        self.buf = match reused {
            Some(b) => b,
            None => self.copy(need, fill),
        };
        self.base = tag;
        Arc::get_mut(&mut self.buf).unwrap_or_default()
    }

    /// A copy of the table with room for `need` entries (a quarter more when it
    /// grows), padded with `fill`.
    fn copy(&self, need: usize, fill: T) -> Arc<[T]> {
        let cap = if need <= self.buf.len() {
            self.buf.len()
        } else {
            need.max(self.len + self.len / 4).max(64)
        };
        self.iter()
            .copied()
            .chain(std::iter::repeat_n(fill, cap - self.len))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Set(prop::sample::Index, u32),
        Push(u32),
        Fill(u8, u32),
        /// The live table becomes a clone of itself (the next generation); the old
        /// one is kept as a reader.
        Next,
        /// A kept reader is dropped (a worker moved on).
        Drop(prop::sample::Index),
        /// A clone kept to the end: later writes must not reach it.
        Snapshot,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<prop::sample::Index>(), any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
            2 => any::<u32>().prop_map(Op::Push),
            1 => (0u8..70, any::<u32>()).prop_map(|(n, v)| Op::Fill(n, v)),
            4 => Just(Op::Next),
            3 => any::<prop::sample::Index>().prop_map(Op::Drop),
            1 => Just(Op::Snapshot),
        ]
    }

    fn same(f: &Flat<u32>, v: &[u32]) -> Result<(), TestCaseError> {
        prop_assert_eq!(&f[..], v);
        prop_assert_eq!(f.len(), v.len());
        Ok(())
    }

    proptest! {
        /// Every table reads as a `Vec` given the same operations, whatever was
        /// recycled, and a clone taken before a write reads what it read then.
        #[test]
        fn agrees_with_vec(start in prop::collection::vec(any::<u32>(), 0..300), ops in prop::collection::vec(arb_op(), 0..120)) {
            let mut f = Flat::from_vec(start.clone());
            let mut v = start;
            let mut readers: std::collections::VecDeque<(Flat<u32>, Vec<u32>)> = Default::default();
            let mut snaps = Vec::new();
            for op in ops {
                match op {
                    Op::Set(i, x) => {
                        if v.is_empty() {
                            prop_assert!(!f.set(0, x));
                        } else {
                            let i = i.index(v.len());
                            prop_assert!(f.set(i, x));
                            v[i] = x;
                        }
                    }
                    Op::Push(x) => {
                        f.push(x);
                        v.push(x);
                    }
                    Op::Fill(n, x) => {
                        f.extend_fill(n.into(), x);
                        v.extend(std::iter::repeat_n(x, n.into()));
                    }
                    Op::Next => readers.push_back((f.clone(), v.clone())),
                    Op::Drop(i) => {
                        if !readers.is_empty() {
                            readers.remove(i.index(readers.len()));
                        }
                    }
                    Op::Snapshot => snaps.push((f.clone(), v.clone())),
                }
                same(&f, &v)?;
                for (r, rv) in &readers {
                    same(r, rv)?;
                }
            }
            for (s, sv) in &snaps {
                same(s, sv)?;
            }
        }
    }

    /// The daemon's pattern: generation `n + 1` made from `n` while the `keep`
    /// latest are read and older ones dropped; after a warm-up no write copies the
    /// table: a few buffers take turns.
    #[test]
    fn a_chain_of_generations_reuses_retired_buffers() {
        for keep in [1usize, 2, 9] {
            let mut live = Flat::from_vec(vec![0u32; 10_000]);
            let mut want = vec![0u32; 10_000];
            let mut readers: std::collections::VecDeque<(Flat<u32>, Vec<u32>)> = Default::default();
            let mut buffers = std::collections::HashSet::new();
            for g in 0..200u32 {
                readers.push_back((live.clone(), want.clone()));
                if readers.len() > keep {
                    readers.pop_front();
                }
                assert!(live.set((g as usize * 7) % 10_000, g + 1));
                want[(g as usize * 7) % 10_000] = g + 1;
                if g % 10 == 0 {
                    live.push(g);
                    want.push(g);
                }
                if g >= 50 {
                    buffers.insert(Arc::as_ptr(&live.buf) as *const u32 as usize);
                }
                for (r, w) in &readers {
                    assert_eq!(&r[..], &w[..]);
                }
            }
            assert!(
                buffers.len() <= keep + 1,
                "keep {keep}: {} buffers",
                buffers.len()
            );
            assert_eq!(&live[..], &want[..]);
        }
    }

    /// A spare still read (the previous generation alive) is not written: the write
    /// copies.
    #[test]
    fn a_spare_still_read_is_copied_not_reused() {
        let mut a = Flat::from_vec(vec![1u32, 2, 3]);
        let keep0 = a.clone();
        assert!(a.set(0, 10));
        let keep1 = a.clone();
        assert!(a.set(1, 20));
        assert!(a.set(2, 30));
        assert_eq!(
            (&keep0[..], &keep1[..], &a[..]),
            (&[1, 2, 3][..], &[10, 2, 3][..], &[10, 20, 30][..])
        );
    }
}
