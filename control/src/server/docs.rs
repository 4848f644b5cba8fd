//! The documents `get` serves, shared between generations: a sorted map kept in
//! chunks behind [`Arc`]s, so that the copy a change makes costs one pointer per
//! chunk plus a copy of the chunks it writes, not a copy of every document (at
//! thousands of pods that copy and the free of the replaced map were most of a pod
//! change's time in the daemon).
//!
//! The slow twin is a [`BTreeMap`]: the property test below applies random inserts,
//! removals and clones to both and compares lookups and ordered ranges.

use std::borrow::Borrow;
use std::sync::Arc;

/// Chunks are split when they reach this many entries.
const SPLIT_AT: usize = 128;

/// A sorted map of `K` to `V` in shared chunks (see the module doc).
#[derive(Clone, Debug)]
pub struct SharedMap<K, V> {
    /// Non-empty chunks, each sorted, every key of a chunk below every key of the
    /// next.
    chunks: Vec<Arc<Vec<(K, V)>>>,
    len: usize,
}

impl<K, V> Default for SharedMap<K, V> {
    fn default() -> Self {
        SharedMap {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Clone, V: Clone> SharedMap<K, V> {
    /// The map of `entries` (any order; a later entry of a key wins).
    pub fn from_entries(entries: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut v: Vec<(K, V)> = entries.into_iter().collect();
        // Stable: entries of one key keep their order, the last is kept.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut dedup: Vec<(K, V)> = Vec::with_capacity(v.len());
        for e in v {
            match dedup.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => dedup.push(e),
            }
        }
        let len = dedup.len();
        let mut chunks = Vec::new();
        let mut it = dedup.into_iter().peekable();
        while it.peek().is_some() {
            chunks.push(Arc::new(it.by_ref().take(SPLIT_AT / 2).collect()));
        }
        SharedMap { chunks, len }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk that holds `k` if anything does: the last whose first key is at
    /// most `k` (0 when `k` is below every key).
    fn chunk_of<Q: Ord + ?Sized>(&self, k: &Q) -> usize
    where
        K: Borrow<Q>,
    {
        self.chunks
            .partition_point(|c| c.first().is_some_and(|(f, _)| f.borrow() <= k))
            .saturating_sub(1)
    }

    /// The value of `k`.
    pub fn get<Q: Ord + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let c = self.chunks.get(self.chunk_of(k))?;
        c.binary_search_by(|(x, _)| x.borrow().cmp(k))
            .ok()
            .map(|i| &c[i].1)
    }

    /// Sets `k` to `v`; copies the chunk it lands in if a clone shares it.
    pub fn insert(&mut self, k: K, v: V) {
        if self.chunks.is_empty() {
            self.chunks.push(Arc::new(vec![(k, v)]));
            self.len = 1;
            return;
        }
        let ci = self.chunk_of(&k);
        let c = Arc::make_mut(&mut self.chunks[ci]);
        match c.binary_search_by(|(x, _)| x.cmp(&k)) {
            Ok(i) => c[i].1 = v,
            Err(i) => {
                c.insert(i, (k, v));
                self.len += 1;
                if c.len() >= SPLIT_AT {
                    let tail = c.split_off(c.len() / 2);
                    self.chunks.insert(ci + 1, Arc::new(tail));
                }
            }
        }
    }

    /// Removes `k`; copies its chunk if a clone shares it.
    pub fn remove<Q: Ord + ?Sized>(&mut self, k: &Q)
    where
        K: Borrow<Q>,
    {
        let ci = self.chunk_of(k);
        let Some(c) = self.chunks.get(ci) else {
            return;
        };
        let Ok(i) = c.binary_search_by(|(x, _)| x.borrow().cmp(k)) else {
            return;
        };
        let c = Arc::make_mut(&mut self.chunks[ci]);
        c.remove(i);
        self.len -= 1;
        if c.is_empty() {
            self.chunks.remove(ci);
        }
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .map(|(k, v)| (k, v))
    }

    /// The entries from the first key at least `lo`, in order.
    pub fn range_from<'a, Q: Ord + ?Sized>(
        &'a self,
        lo: &Q,
    ) -> impl Iterator<Item = (&'a K, &'a V)> + 'a
    where
        K: Borrow<Q>,
    {
        let ci = self.chunk_of(lo);
        let start = self
            .chunks
            .get(ci)
            .map_or(0, |c| c.partition_point(|(x, _)| x.borrow() < lo));
        self.chunks
            .iter()
            .skip(ci)
            .enumerate()
            .flat_map(move |(j, c)| c.iter().skip(if j == 0 { start } else { 0 }))
            .map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        /// Keep a clone of both; later writes must not reach it.
        Snapshot,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        // Keys from a small range so that removals and overwrites hit.
        prop_oneof![
            6 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u16..600).prop_map(Op::Remove),
            1 => Just(Op::Snapshot),
        ]
    }

    fn same(m: &SharedMap<u16, u32>, r: &BTreeMap<u16, u32>) -> Result<(), TestCaseError> {
        prop_assert_eq!(m.len(), r.len());
        let all: Vec<(u16, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(
            &all,
            &m.range_from(&0).map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
        );
        let want: Vec<(u16, u32)> = r.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(all, want);
        for k in (0u16..610).step_by(7) {
            prop_assert_eq!(m.get(&k), r.get(&k));
            let got: Vec<u16> = m.range_from(&k).map(|(k, _)| *k).take(5).collect();
            let want: Vec<u16> = r.range(k..).map(|(k, _)| *k).take(5).collect();
            prop_assert_eq!(got, want);
        }
        for c in &m.chunks {
            prop_assert!(!c.is_empty() && c.len() < SPLIT_AT);
        }
        Ok(())
    }

    proptest! {
        /// Every operation gives what it gives on a `BTreeMap`, and a clone taken
        /// before a write still reads what it read then.
        #[test]
        fn agrees_with_btreemap_and_clones_stay(
            init in prop::collection::vec((0u16..600, any::<u32>()), 0..300),
            ops in prop::collection::vec(arb_op(), 0..400),
        ) {
            let mut m = SharedMap::from_entries(init.iter().copied());
            let mut r: BTreeMap<u16, u32> = init.iter().copied().collect();
            same(&m, &r)?;
            let mut snaps = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        m.insert(k, v);
                        r.insert(k, v);
                    }
                    Op::Remove(k) => {
                        m.remove(&k);
                        r.remove(&k);
                    }
                    Op::Snapshot => snaps.push((m.clone(), r.clone())),
                }
            }
            same(&m, &r)?;
            for (m, r) in &snaps {
                same(m, r)?;
            }
        }
    }
}
